//! A real DNS server on loopback for mail authentication tests: Debian's
//! `dnsmasq` in the foreground, serving TXT records (SPF, DKIM, DMARC) of
//! test domains, answering NXDOMAIN for any other name under `.test`, and
//! logging every query to a file. Also: RSA keys made with `openssl`,
//! messages signed by `dkimsign` and ARC chains checked by `arcverify`'s
//! code (Debian `python3-dkim`, with its resolver pointed at this server).

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::output_with_stdin;
use super::writ::free_port;

pub struct Dns {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// A TXT value as dnsmasq takes it on its command line (where quotes
/// would be kept as part of the text): strings of at most 255 octets,
/// comma-separated; so the value itself has no comma.
fn txt_strings(value: &str) -> String {
    assert!(!value.contains(','), "a TXT value for dnsmasq has no comma");
    value
        .as_bytes()
        .chunks(255)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(",")
}

impl Dns {
    /// Starts dnsmasq with `records` (name, TXT value). Names under
    /// `forward` (`(domain, server)`) go to that server instead.
    pub fn start(records: &[(String, String)], forward: &[(&str, SocketAddr)]) -> Dns {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("queries.log");
        let mut cmd = Command::new("dnsmasq");
        cmd.args([
            "--no-daemon",
            &format!("--port={port}"),
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--local=/test/",
            "--log-queries",
            "--cache-size=0",
            &format!("--log-facility={}", log.display()),
            &format!("--pid-file={}", dir.path().join("pid").display()),
        ]);
        // As root (CI containers), dnsmasq would switch to a user it may
        // not find; stay root.
        let uid = Command::new("id").arg("-u").output().expect("id -u");
        if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
            cmd.arg("--user=root");
        }
        for (name, value) in records {
            cmd.arg(format!("--txt-record={name},{}", txt_strings(value)));
        }
        for (domain, server) in forward {
            cmd.arg(format!(
                "--server=/{domain}/{}#{}",
                server.ip(),
                server.port()
            ));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq is installed (scripts/install-deps)");
        let dns = Dns {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !dns.answers() {
            assert!(Instant::now() < deadline, "dnsmasq did not answer");
            std::thread::sleep(Duration::from_millis(50));
        }
        dns
    }

    /// One TXT query for `ready.test` answered (NXDOMAIN counts).
    fn answers(&self) -> bool {
        let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
            return false;
        };
        let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["ready", "test"] {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 16, 0, 1]);
        if sock.send_to(&q, self.addr).is_err() {
            return false;
        }
        let mut buf = [0u8; 512];
        matches!(sock.recv_from(&mut buf), Ok((n, _)) if n >= 12 && buf[..2] == [0x12, 0x34])
    }

    /// The query log so far.
    pub fn queries(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An RSA key (2048 bits, PKCS#8 PEM) written to `dir/name.pem`, and the
/// `p=` value of its DKIM key record.
pub fn rsa_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(format!("{name}.pem"));
    let st = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "rsa",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(st.success(), "openssl genpkey");
    let out = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&key)
        .output()
        .expect("openssl pkey");
    assert!(out.status.success(), "openssl pkey -pubout");
    use base64::Engine;
    let p = base64::engine::general_purpose::STANDARD.encode(&out.stdout);
    (key, p)
}

/// `message` signed by dkimpy's `dkimsign` (relaxed/relaxed).
pub fn dkim_sign(message: &[u8], selector: &str, domain: &str, key: &Path) -> Vec<u8> {
    let out = output_with_stdin(
        Command::new("dkimsign")
            .args([
                "--hcanon", "relaxed", "--bcanon", "relaxed", selector, domain,
            ])
            .arg(key),
        message,
    )
    .expect("dkimsign (python3-dkim) is installed");
    assert!(
        out.status.success(),
        "dkimsign: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// dkimpy's `arcverify` (its `main`, with the resolver pointed at `dns`)
/// on `message`: its one-line verdict, `arc verification: cv=pass ...`
/// (Python's bytes quoting, `cv=b'pass'`, removed).
pub fn arc_verify(message: &[u8], dns: &Dns) -> String {
    let script = format!(
        "import sys, dns.resolver\n\
         r = dns.resolver.Resolver(configure=False)\n\
         r.nameservers = ['{}']\n\
         r.port = {}\n\
         dns.resolver.default_resolver = r\n\
         from dkim import arcverify\n\
         arcverify.main()\n",
        dns.addr.ip(),
        dns.addr.port()
    );
    // Debian's python3 (python3-dkim), not another on PATH.
    let out = output_with_stdin(
        Command::new("/usr/bin/python3").args(["-c", &script]),
        message,
    )
    .expect("/usr/bin/python3");
    assert!(
        out.status.success(),
        "arcverify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .replace("cv=b'", "cv=")
        .replace("' ", " ")
}

/// `message` (which must carry an Authentication-Results field of
/// `srv_id`) ARC-sealed by dkimpy's `arcsign`: a set of `domain` prepended.
pub fn arc_sign(message: &[u8], selector: &str, domain: &str, key: &Path, srv_id: &str) -> Vec<u8> {
    let out = output_with_stdin(
        Command::new("arcsign")
            .args([selector, domain])
            .arg(key)
            .arg(srv_id),
        message,
    )
    .expect("arcsign (python3-dkim) is installed");
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "arcsign: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}
