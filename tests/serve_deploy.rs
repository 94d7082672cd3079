//! `writ serve` as a service: SIGHUP reloads the keyring after
//! `writ keys rotate` without dropping sessions (and `/healthz` fails while
//! the IMAP proxy lacks the active epoch), readiness reaches a
//! `NOTIFY_SOCKET` only once every listener accepts connections, and the
//! systemd unit in `dist/` passes `systemd-analyze verify`.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::mail::{DELIVERY_TIMEOUT, contains, message, unique};
use common::smtp::send;
use common::writ::{WRIT, Writ, WritConfig, free_port};
use common::{Imap, provider};

/// The active epoch of the keyring in `dir`.
fn active_epoch(dir: &std::path::Path) -> String {
    let keyring = writ::keys::Keyring::load(dir).unwrap();
    keyring.active().unwrap().id.clone()
}

/// `key=<epoch>` of a stored sealed message.
fn sealed_to(stored: &[u8]) -> String {
    let text = String::from_utf8_lossy(stored);
    let line = text
        .lines()
        .find(|l| l.starts_with("X-Writ:"))
        .unwrap_or_else(|| panic!("not sealed:\n{text}"));
    line.split("key=").nth(1).unwrap().trim().to_string()
}

/// Waits until the log has `needle` `n` times.
#[track_caller]
fn wait_log(writ: &Writ, needle: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while writ.log().matches(needle).count() < n {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{}",
            writ.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The relay and an IMAP listener on `imap_port` in front of `p`, with the
/// admin endpoint and the passphrase (the IMAP proxy unlocks); the
/// certificate's files live as long as the [`common::tls::TestTls`].
fn relay_and_imap(p: &common::Provider, imap_port: u16) -> (WritConfig, common::tls::TestTls) {
    let mut cfg = WritConfig::relay(p.smtp_addr());
    cfg.unlock = true;
    cfg.extra_toml = format!(
        "[imap]\n\n[[imap.listeners]]\nkind = \"imap\"\nlisten = \"127.0.0.1:{imap_port}\"\n\n\
         [provider.imap]\naddress = \"{}\"\nsecurity = \"plain\"\n",
        p.imap_addr()
    );
    // The IMAP listeners need a certificate for STARTTLS.
    let tls = common::tls::test_tls("writ reload test CA");
    cfg.extra_toml = cfg.extra_toml.replace(
        "[imap]\n",
        &format!(
            "[imap]\ntls_cert = {:?}\ntls_key = {:?}\n",
            tls.cert.display().to_string(),
            tls.key.display().to_string()
        ),
    );
    (cfg, tls)
}

/// SIGHUP to `writ serve`.
fn hup(writ: &Writ) {
    let status = Command::new("kill")
        .args(["-HUP", &writ.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// `writ keys rotate` on the keyring of `writ`.
fn rotate(writ: &Writ) {
    let keys = writ.test_keys();
    let rotate = Command::new(WRIT)
        .env_remove("WRIT_PASSPHRASE_FILE")
        .arg("--keys")
        .arg(keys.dir())
        .arg("--passphrase-file")
        .arg(keys.passphrase_file())
        .args(["keys", "rotate"])
        .output()
        .unwrap();
    assert!(rotate.status.success(), "{rotate:?}");
}

#[test]
fn sighup_after_keys_rotate_seals_to_the_new_epoch_without_dropping_sessions() {
    let p = provider();
    let user = p.new_user("reload");
    let imap_port = free_port();
    let (cfg, _tls) = relay_and_imap(p, imap_port);
    let writ = Writ::start(&cfg);
    let keys = writ.test_keys();
    let imap_addr = SocketAddr::from(([127, 0, 0, 1], imap_port));
    let first_epoch = active_epoch(&keys.dir());

    // Before the rotation: a message sealed to the first epoch, read in an
    // IMAP session that stays open across the reload.
    let before = unique("before-rotate");
    let m1 = message(
        "a@elsewhere.test",
        &user.address,
        "one",
        &before,
        &unique("id1"),
    );
    send(writ.relay_addr(), "a@elsewhere.test", &[&user.address], &m1).unwrap();
    let stored = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_eq!(sealed_to(&stored[0]), first_epoch);
    let mut session = Imap::login_to(imap_addr, &user.name, &user.password);
    session.select("INBOX").expect_ok("SELECT");
    let seen = session.fetch_all();
    assert!(contains(&seen[0].1, before.as_bytes()));

    // Rotate, then SIGHUP.
    rotate(&writ);
    let second_epoch = active_epoch(&keys.dir());
    assert_ne!(first_epoch, second_epoch);
    let hup = Command::new("kill")
        .args(["-HUP", &writ.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_log(&writ, "SIGHUP: keyring reloaded", 1);
    assert!(
        writ.log().contains(&second_epoch),
        "the reload names the new epoch:\n{}",
        writ.log()
    );

    // New mail through the relay is sealed to the new epoch.
    let after = unique("after-rotate");
    let m2 = message(
        "a@elsewhere.test",
        &user.address,
        "two",
        &after,
        &unique("id2"),
    );
    send(writ.relay_addr(), "a@elsewhere.test", &[&user.address], &m2).unwrap();
    let stored = p.wait_for_messages(&user, "INBOX", 2, DELIVERY_TIMEOUT);
    assert_eq!(sealed_to(&stored[1]), second_epoch);

    // The session opened before the reload is still there and opens both:
    // the old epoch's message and the new one's.
    session.command("NOOP").expect_ok("NOOP after SIGHUP");
    let seen = session.fetch_all();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(contains(&seen[0].1, before.as_bytes()));
    assert!(
        contains(&seen[1].1, after.as_bytes()),
        "a session in progress opens mail sealed to the new epoch:\n{}",
        String::from_utf8_lossy(&seen[1].1)
    );

    // A session started after the reload seals its APPENDs to the new epoch.
    let appended = unique("appended");
    let m3 = message(
        "a@elsewhere.test",
        &user.address,
        "three",
        &appended,
        &unique("id3"),
    );
    let mut fresh = Imap::login_to(imap_addr, &user.name, &user.password);
    fresh.append("INBOX", &m3).expect_ok("APPEND");
    let stored = p.imap_fetch_all(&user, "INBOX");
    assert_eq!(stored.len(), 3);
    assert_eq!(sealed_to(&stored[2]), second_epoch);
    assert!(!contains(&stored[2], appended.as_bytes()));
    fresh.select("INBOX").expect_ok("SELECT");
    assert!(contains(&fresh.fetch_all()[2].1, appended.as_bytes()));

    // So does the session that started before it: sealing to the epoch it
    // started with would leave its APPENDs unreadable once `keys retire`
    // removed that epoch.
    let appended_late = unique("appended-late");
    let m4 = message(
        "a@elsewhere.test",
        &user.address,
        "four",
        &appended_late,
        &unique("id4"),
    );
    session
        .append("INBOX", &m4)
        .expect_ok("APPEND in the older session");
    let stored = p.imap_fetch_all(&user, "INBOX");
    assert_eq!(stored.len(), 4);
    assert_eq!(
        sealed_to(&stored[3]),
        second_epoch,
        "a session in progress seals to the reloaded active epoch"
    );
    assert!(!contains(&stored[3], appended_late.as_bytes()));

    // A reload that cannot unlock (the passphrase file is gone) keeps the
    // keys in use, and the server keeps serving.
    std::fs::remove_file(keys.passphrase_file()).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &writ.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_log(&writ, "SIGHUP: keyring not reloaded", 1);
    session
        .command("NOOP")
        .expect_ok("NOOP after a failed reload");
    assert!(contains(&session.fetch_all()[1].1, after.as_bytes()));
    // Nothing secret reaches the log.
    assert!(!writ.log().contains(common::writ::PASSPHRASE));
}

#[test]
fn healthz_fails_while_the_imap_proxy_lacks_the_active_epoch() {
    let p = provider();
    let (cfg, _tls) = relay_and_imap(p, free_port());
    let writ = Writ::start(&cfg);
    let (status, body) = writ.healthz();
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    // After `keys rotate` the relay seals to the new epoch, which the IMAP
    // proxy cannot open until a reload: the probe must say so.
    rotate(&writ);
    let active = active_epoch(&writ.test_keys().dir());
    let (status, body) = writ.healthz();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(&active) && body.contains("SIGHUP"), "{body}");

    // A reload that fails (the passphrase file is gone) leaves it failing.
    let passphrase = std::fs::read(writ.test_keys().passphrase_file()).unwrap();
    std::fs::remove_file(writ.test_keys().passphrase_file()).unwrap();
    hup(&writ);
    wait_log(&writ, "SIGHUP: keyring not reloaded", 1);
    assert_eq!(writ.healthz().0, 503);

    // A reload that succeeds mends it.
    std::fs::write(writ.test_keys().passphrase_file(), passphrase).unwrap();
    hup(&writ);
    wait_log(&writ, "SIGHUP: keyring reloaded", 1);
    let (status, body) = writ.healthz();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert!(!writ.log().contains(common::writ::PASSPHRASE));
}

/// `writ serve` with `NOTIFY_SOCKET` pointing at a datagram socket the test
/// binds; killed when dropped.
struct Notified {
    child: std::process::Child,
    socket: std::os::unix::net::UnixDatagram,
    _dir: tempfile::TempDir,
}

impl Notified {
    fn start(cfg: &WritConfig, ports: &[u16], admin: u16, keys: &common::writ::TestKeys) -> Self {
        Notified::start_with(cfg, ports, admin, keys, &[])
    }

    /// With extra environment variables; stderr goes to `log` in its
    /// directory.
    fn start_with(
        cfg: &WritConfig,
        ports: &[u16],
        admin: u16,
        keys: &common::writ::TestKeys,
        env: &[(&str, &std::path::Path)],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let config = dir.path().join("writ.toml");
        std::fs::write(&config, cfg.render(ports, Some(admin), &keys.dir())).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(WRIT)
            .env_remove("WRIT_PASSPHRASE_FILE")
            .env_remove("CREDENTIALS_DIRECTORY")
            .envs(env.iter().copied())
            .env("NOTIFY_SOCKET", &path)
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Notified {
            child,
            socket,
            _dir: dir,
        }
    }

    /// The next notification, as text (`None` on timeout).
    fn next(&self) -> Option<String> {
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("log")).unwrap_or_default()
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([name, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Notified {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A provider address for tests that relay nothing.
fn unused_provider() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9))
}

#[test]
fn ready_is_notified_once_every_listener_accepts_and_reload_and_stop_are_announced() {
    let keys = common::writ::TestKeys::new();
    // Nothing is relayed: the provider is never contacted.
    let cfg = WritConfig::relay(unused_provider()).listener("relay", &["127.0.0.1"]);
    let ports = [free_port(), free_port()];
    let admin = free_port();
    let writ = Notified::start(&cfg, &ports, admin, &keys);

    let first = writ.next().expect("a notification within 30 s");
    assert!(first.lines().any(|l| l == "READY=1"), "{first:?}");
    // At READY=1 every listener takes connections: none is still binding.
    for port in ports.iter().chain([&admin]) {
        std::net::TcpStream::connect(("127.0.0.1", *port))
            .unwrap_or_else(|e| panic!("port {port} not accepting at READY=1: {e}"));
    }

    writ.signal("-HUP");
    let reloading = writ.next().expect("RELOADING=1 after SIGHUP");
    assert!(
        reloading.lines().any(|l| l == "RELOADING=1"),
        "{reloading:?}"
    );
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    let ready = writ.next().expect("READY=1 after the reload");
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");

    writ.signal("-TERM");
    let stopping = writ.next().expect("STOPPING=1 after SIGTERM");
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
}

#[test]
fn ready_is_never_notified_when_a_listener_cannot_bind() {
    let keys = common::writ::TestKeys::new();
    // Nothing is relayed: the provider is never contacted.
    let cfg = WritConfig::relay(unused_provider()).listener("relay", &["127.0.0.1"]);
    // The second listener's port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ports = [free_port(), taken.local_addr().unwrap().port()];
    let mut writ = Notified::start(&cfg, &ports, free_port(), &keys);
    let status = writ.child.wait().unwrap();
    assert!(!status.success());
    writ.socket.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    match writ.socket.recv(&mut buf) {
        Ok(n) => panic!(
            "notified although a listener could not bind: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
    }
}

#[test]
fn the_passphrase_comes_from_the_systemd_credential_at_start_and_on_reload() {
    let keys = common::writ::TestKeys::new();
    let tls = common::tls::test_tls("writ credential test CA");
    let mut cfg = WritConfig::relay(unused_provider());
    cfg.listeners.clear();
    let imap = free_port();
    cfg.extra_toml = format!(
        "[imap]\ntls_cert = {:?}\ntls_key = {:?}\n\n\
         [[imap.listeners]]\nkind = \"imap\"\nlisten = \"127.0.0.1:{imap}\"\n\n\
         [provider.imap]\naddress = \"127.0.0.1:9\"\nsecurity = \"plain\"\n",
        tls.cert.display().to_string(),
        tls.key.display().to_string(),
    );
    // What LoadCredential=passphrase:... gives the service.
    let credentials = tempfile::tempdir().unwrap();
    std::fs::copy(
        keys.passphrase_file(),
        credentials.path().join("passphrase"),
    )
    .unwrap();

    // Without the credential (and no file, no terminal) the IMAP proxy
    // cannot unlock: writ does not start.
    let mut without = Notified::start(&cfg, &[], free_port(), &keys);
    assert!(!without.child.wait().unwrap().success());

    let writ = Notified::start_with(
        &cfg,
        &[],
        free_port(),
        &keys,
        &[("CREDENTIALS_DIRECTORY", credentials.path())],
    );
    let ready = writ.next().expect("READY=1 with the credential");
    assert!(
        ready.lines().any(|l| l == "READY=1"),
        "{ready:?}\n{}",
        writ.log()
    );
    writ.signal("-HUP");
    for _ in 0..2 {
        writ.next().expect("RELOADING=1, then READY=1");
    }
    let log = writ.log();
    assert!(log.contains("SIGHUP: keyring reloaded"), "{log}");
    assert!(!log.contains(common::writ::PASSPHRASE), "{log}");
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/dist/writ.service")).unwrap();
    for needed in [
        "Type=notify",
        "ExecStart=/usr/local/bin/writ --config /etc/writ/writ.toml serve",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "LoadCredential=passphrase:",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "User=writ",
        "ReadWritePaths=/var/lib/writ",
    ] {
        assert!(unit.contains(needed), "dist/writ.service lacks {needed}");
    }
    // systemd-analyze checks that ExecStart's program exists: point it at
    // the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("writ.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/writ", WRIT)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd) is installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // An unknown or malformed setting is only a warning: none is allowed.
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}
