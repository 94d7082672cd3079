//! The oracle test of the IMAP proxy (issue 4, item 9): every message of
//! the corpus is stored sealed in one user's INBOX and in plaintext in
//! another's, in the same order; a client reading the sealed copies through
//! writ must get what a client reading the plaintext copies from Dovecot
//! directly gets: every FETCH item, every body section of every part, the
//! `<partial>` ranges, FLAGS after fetches that set \Seen, and a set of
//! SEARCH results. Dovecot is the only source of expected values.
//!
//! Also here: mutt, in batch mode, reading a sealed message through writ.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::corpus::{eml_files, has_lone_cr};
use common::imap_proxy::ImapProxy;
use common::python;
use common::{Imap, Provider, User, provider};

/// writ's IMAP proxy in front of the provider's plain IMAP on loopback.
fn proxy(upstream: SocketAddr) -> ImapProxy {
    ImapProxy::start(
        &format!("{}timeout_secs = 30\n", ImapProxy::plain(upstream)),
        "",
    )
}

/// About 2 MB: a text part, an HTML part and a base64 attachment of
/// pseudo-random bytes; one searchable word at the end of the text.
fn large_message() -> Vec<u8> {
    let mut m = b"From: Big Sender <big@example.test>\r\nTo: archive@example.test\r\n\
Subject: =?UTF-8?Q?Gro=C3=9Fe_Datei?= (large)\r\nDate: Fri, 14 Nov 2025 18:00:00 +0000\r\n\
Message-ID: <large.generated@example.test>\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"large-boundary\"\r\n\r\n\
--large-boundary\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        .to_vec();
    for i in 0..2000u32 {
        m.extend_from_slice(format!("Zeile {i}: Grüße aus der großen Datei.\r\n").as_bytes());
    }
    m.extend_from_slice(b"haystackneedle at the end of the text\r\n--large-boundary\r\n\
Content-Type: application/octet-stream; name=\"data.bin\"\r\n\
Content-Disposition: attachment; filename=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut line = Vec::with_capacity(78);
    while m.len() < 2_000_000 {
        line.clear();
        for _ in 0..76 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            line.push(B64[(x % 64) as usize]);
        }
        line.extend_from_slice(b"\r\n");
        m.extend_from_slice(&line);
    }
    m.extend_from_slice(b"--large-boundary--\r\n");
    m
}

/// The whole corpus: every message of `tests/corpus/sections/`,
/// `tests/corpus/imap/` and `tests/corpus/search/`, and a generated one of
/// about 2 MB.
///
/// Messages with a lone CR are left out: Dovecot's maildir turns a lone CR
/// into a line break when the message is saved, so the plaintext copy
/// Dovecot serves is not the message writ sealed, and the two could not be
/// compared.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = eml_files("sections")
        .into_iter()
        .chain(eml_files("imap"))
        .chain(eml_files("search"))
        .filter(|(_, m)| !has_lone_cr(m))
        .collect();
    assert!(out.len() >= 90, "corpus missing: {} messages", out.len());
    out.push(("generated/large-2mb".into(), large_message()));
    out
}

/// A user with `messages` in INBOX, in order: sealed to the proxy's
/// keyring when `proxy` is given, in plaintext otherwise.
fn user_with(
    p: &Provider,
    prefix: &str,
    messages: &[(String, Vec<u8>)],
    proxy: Option<&ImapProxy>,
) -> User {
    let user = p.new_user(prefix);
    for (name, m) in messages {
        match proxy {
            Some(proxy) => {
                let sealed = proxy.seal(m);
                assert!(
                    sealed.windows(8).any(|w| w == b"X-Writ: "),
                    "{name}: not sealed"
                );
                p.imap_append(&user, "INBOX", &sealed);
            }
            None => {
                p.imap_append(&user, "INBOX", m);
            }
        }
    }
    user
}

const ORACLE: &str = include_str!("imap_oracle.py");

#[test]
fn every_corpus_message_reads_through_writ_as_its_plaintext_reads_from_dovecot() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let messages = corpus();
    let plain = user_with(p, "ioracle-plain", &messages, None);
    let sealed = user_with(p, "ioracle-sealed", &messages, Some(&proxy));
    // What Dovecot serves of the plaintext copies is its view of them (line
    // breaks written as CRLF, NUL bytes as 0x80): that view is the oracle.
    assert_eq!(p.imap_fetch_all(&plain, "INBOX").len(), messages.len());
    let dir = tempfile::tempdir().expect("temp dir");
    let names = dir.path().join("names");
    let list: String = messages.iter().map(|(n, _)| format!("{n}\n")).collect();
    std::fs::write(&names, list).expect("write names");
    let out = python::ok(
        ORACLE,
        [
            proxy.script_args(Some(p.imap_addr()), proxy.imap, &[&plain, &sealed]),
            vec![names.display().to_string()],
        ]
        .concat(),
    );
    println!("{out}");
    assert!(out.contains("ALL SAME"), "{out}");
}

/// Plaintext mail in a mailbox writ serves (mail from before writ, or
/// sealed mail writ cannot open): its ENVELOPE, BODY and BODYSTRUCTURE
/// reach the client as Dovecot wrote them, octet for octet (media types in
/// Dovecot's case: imap-codec, which reads them, would write `"TEXT"` and
/// `"MESSAGE" "RFC822"` back), alone and next to a body section.
#[test]
fn plaintext_mail_lists_through_writ_as_dovecot_lists_it() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    // 96-deep-mixed is nested past imap-codec's BODYSTRUCTURE parse limit:
    // writ ends such a FETCH NO (tests/imap_sealed_edges.rs).
    let messages: Vec<(String, Vec<u8>)> = eml_files("sections")
        .into_iter()
        .chain(eml_files("imap"))
        .filter(|(n, m)| !has_lone_cr(m) && !n.contains("96-deep-mixed"))
        .collect();
    assert!(messages.len() >= 100, "corpus missing");
    let user = user_with(p, "ioracle-plainwrit", &messages, None);
    let mut direct = p.imap(&user);
    direct.select("INBOX").expect_ok("SELECT at Dovecot");
    let mut writ = Imap::login_to(proxy.imap, &user.name, &user.password);
    writ.select("INBOX").expect_ok("SELECT through writ");
    let mut differences = Vec::new();
    for items in [
        "ENVELOPE BODY BODYSTRUCTURE",
        "BODYSTRUCTURE BODY.PEEK[1] ENVELOPE",
    ] {
        let command = format!("FETCH 1:* ({items})");
        let want = direct.command(&command).expect_ok("FETCH at Dovecot");
        let got = writ.command(&command).expect_ok("FETCH through writ");
        assert_eq!(want.untagged.len(), messages.len(), "{command}");
        assert_eq!(got.untagged.len(), messages.len(), "{command}");
        for (((name, _), w), g) in messages.iter().zip(&want.untagged).zip(&got.untagged) {
            if w.raw() != g.raw() {
                differences.push(format!(
                    "{name} ({items})\n  dovecot: {}\n  writ:    {}",
                    String::from_utf8_lossy(&w.raw()),
                    String::from_utf8_lossy(&g.raw())
                ));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "{} differences:\n{}",
        differences.len(),
        differences.join("\n")
    );
    direct.logout();
    writ.logout();
}

/// Runs `mutt` under a pseudo-terminal (it wants one for its screen) with
/// `args`; its screen output is read and dropped. Kills it after `deadline`.
const PTY_RUN: &str = r#"
import os, pty, select, signal, sys, time
deadline = time.time() + float(sys.argv[1])
pid, fd = pty.fork()
if pid == 0:
    os.environ['TERM'] = 'xterm'
    os.execvp(sys.argv[2], sys.argv[2:])
screen = b''
status = None
while status is None:
    if time.time() > deadline:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        sys.stdout.write('TIMEOUT\n' + screen[-3000:].decode('utf-8', 'replace'))
        sys.exit(2)
    r, _, _ = select.select([fd], [], [], 0.2)
    if r:
        try:
            screen += os.read(fd, 65536)
        except OSError:
            pass
    done, st = os.waitpid(pid, os.WNOHANG)
    if done:
        status = st
sys.stdout.write(screen[-3000:].decode('utf-8', 'replace'))
sys.exit(os.waitstatus_to_exitcode(status))
"#;

/// A muttrc for `user` at writ's implicit-TLS listener, the certificate
/// checked against the test CA; nothing cached, nothing asked.
fn muttrc(dir: &Path, proxy: &ImapProxy, user: &User) -> std::path::PathBuf {
    let rc = dir.join("muttrc");
    std::fs::write(
        &rc,
        format!(
            "set ssl_ca_certificates_file=\"{ca}\"\nset certificate_file=\"{dir}/certs\"\n\
             set imap_user=\"{user}\"\nset imap_pass=\"{pw}\"\nset ssl_force_tls=yes\n\
             set folder=\"imaps://localhost:{port}/\"\nset spoolfile=\"+INBOX\"\n\
             set pipe_decode=no\nset wait_key=no\nset quit=yes\nset move=no\n\
             set confirmappend=no\nset mark_old=no\nset imap_passive=no\n\
             set tmpdir=\"{dir}\"\nset mailcap_path=\"{dir}/mailcap\"\n\
             set sort=date-sent\n",
            ca = proxy.tls.ca.display(),
            dir = dir.display(),
            user = user.name,
            pw = user.password,
            port = proxy.imaps.port(),
        ),
    )
    .expect("write muttrc");
    rc
}

/// mutt, in batch mode, reads a sealed message through writ: the message
/// it pipes out (raw, `pipe_decode=no`) is the plaintext, as mutt gets it
/// from Dovecot for the plaintext copy.
#[test]
fn mutt_reads_a_sealed_message_through_writ() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let message = eml_files("imap")
        .into_iter()
        .find(|(n, _)| n.contains("02-mixed-attachments"))
        .expect("corpus message");
    let user = user_with(
        p,
        "mutt-sealed",
        std::slice::from_ref(&message),
        Some(&proxy),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let rc = muttrc(dir.path(), &proxy, &user);
    let piped = dir.path().join("piped.eml");
    let push = format!(
        "push \"<pipe-message>cat > {}<enter><quit>\"",
        piped.display()
    );
    let started = Instant::now();
    let out = Command::new("python3")
        .arg("-c")
        .arg(PTY_RUN)
        .arg("60")
        .args(["mutt", "-n", "-F"])
        .arg(&rc)
        .args(["-e", &push, "-f"])
        .arg(format!("imaps://localhost:{}/INBOX", proxy.imaps.port()))
        .stdin(Stdio::null())
        .output()
        .expect("run mutt");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mutt failed ({}) after {:?}:\n{screen}\n{}",
        out.status,
        started.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
    let got = std::fs::read(&piped).unwrap_or_else(|e| panic!("nothing piped ({e}):\n{screen}"));
    let lf = |b: &[u8]| String::from_utf8_lossy(b).replace("\r\n", "\n");
    assert_eq!(lf(&got), lf(&message.1), "mutt read another message");
}
