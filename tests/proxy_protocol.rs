//! The PROXY protocol behind a real HAProxy (Debian's, TCP mode, on
//! loopback): `writ serve` trusts HAProxy's address (127.0.0.1), clients
//! reach HAProxy from other loopback addresses (127.0.0.2, .3, .4, .5), and
//! writ must apply `allowed_networks` and the per-address limits to the
//! address HAProxy reports (v1 `send-proxy` and v2 `send-proxy-v2`), and
//! log it; IPv6 clients (headers written by hand) count by their /64. Hostile: garbage, oversized and slow headers from the trusted
//! address are closed without a greeting within the header timeout while
//! other sessions are served; a header from an address not configured is
//! refused.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::haproxy::Haproxy;
use common::mail::{DELIVERY_TIMEOUT, contains, message, unique};
use common::provider;
use common::tls::test_tls;
use common::writ::{Writ, WritConfig, free_port};

/// `serve.proxy_header_timeout_secs` in these tests.
const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a read may wait for writ in these tests.
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// A TCP connection from `source` (a loopback address) to `dst`.
fn connect_from(source: &str, dst: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let tcp = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::new(source.parse().unwrap(), 0))
            .unwrap();
        socket.connect(dst).await.unwrap()
    });
    let tcp = tcp.into_std().unwrap();
    tcp.set_nonblocking(false).unwrap();
    tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    tcp
}

/// The first line the server sends ("" if it closes first).
fn first_line(tcp: &TcpStream) -> String {
    let mut line = String::new();
    let _ = BufReader::new(tcp).read_line(&mut line);
    line
}

/// Everything until the server closes, and how long that took.
fn until_closed(mut tcp: TcpStream) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut all = Vec::new();
    let _ = tcp.read_to_end(&mut all);
    (all, start.elapsed())
}

fn proxied_listener(kind: &str, allowed: &[&str]) -> common::writ::ListenerSpec {
    common::writ::ListenerSpec {
        kind: kind.into(),
        port: None,
        allowed_networks: allowed.iter().map(|s| s.to_string()).collect(),
        proxy_protocol_from: vec!["127.0.0.1".into()],
    }
}

/// A relay listener taking PROXY headers from 127.0.0.1, for clients
/// 127.0.0.2 and 127.0.0.3, one session per client address.
fn relay_behind_haproxy() -> (Writ, Haproxy) {
    let p = provider();
    let mut cfg = WritConfig::relay(p.smtp_addr());
    cfg.listeners = vec![proxied_listener("relay", &["127.0.0.2", "127.0.0.3"])];
    cfg.serve_options
        .push(("proxy_header_timeout_secs".into(), "1".into()));
    let cfg = cfg.smtp("max_sessions_per_ip", "1");
    let writ = Writ::start(&cfg);
    let relay = writ.relay_addr();
    let haproxy = Haproxy::start(&[("v1", relay, "send-proxy"), ("v2", relay, "send-proxy-v2")]);
    (writ, haproxy)
}

/// One SMTP command and its (last) reply line.
fn command(tcp: &mut TcpStream, line: &str) -> String {
    tcp.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    let mut reader = BufReader::new(tcp.try_clone().unwrap());
    loop {
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        if reply.len() < 4 || reply.as_bytes()[3] != b'-' {
            return reply;
        }
    }
}

#[test]
fn smtp_behind_haproxy_applies_allowed_networks_and_per_ip_limits_to_the_real_client() {
    let (writ, haproxy) = relay_behind_haproxy();
    let (v1, v2) = (haproxy.frontend("v1"), haproxy.frontend("v2"));

    // 127.0.0.2 through v1: allowed, greeted; it now holds its one slot.
    let held = connect_from("127.0.0.2", v1);
    let greeting = first_line(&held);
    assert!(greeting.starts_with("220 "), "{greeting}\n{}", writ.log());

    // The same client through v2: over its per-address limit, although
    // HAProxy's own address (127.0.0.1) is the same for every session.
    let second = connect_from("127.0.0.2", v2);
    let refused = first_line(&second);
    assert!(
        refused.starts_with("421 ") && refused.contains("your address"),
        "{refused}"
    );

    // Another client (127.0.0.3) is served through either version.
    let mut other = connect_from("127.0.0.3", v2);
    assert!(first_line(&other).starts_with("220 "));
    let through_v1 = connect_from("127.0.0.3", v1);
    let refused = first_line(&through_v1);
    assert!(
        refused.starts_with("421 "),
        "one slot per address: {refused}"
    );

    // 127.0.0.4 is not in allowed_networks: refused on both versions.
    for frontend in [v1, v2] {
        let denied = first_line(&connect_from("127.0.0.4", frontend));
        assert!(denied.starts_with("554 5.7.1"), "{denied}");
    }

    // The session behind HAProxy carries mail: the bytes after the header
    // are the client's, untouched.
    let user = provider().new_user("proxied");
    let marker = unique("proxied-body");
    let original = message(
        "sender@elsewhere.test",
        &user.address,
        "behind haproxy",
        &marker,
        &unique("proxied-id"),
    );
    assert!(command(&mut other, "EHLO client.test").starts_with("250 "));
    assert!(command(&mut other, "MAIL FROM:<sender@elsewhere.test>").starts_with("250 "));
    let rcpt = command(&mut other, &format!("RCPT TO:<{}>", user.address));
    assert!(rcpt.starts_with("250 "), "{rcpt}");
    assert!(command(&mut other, "DATA").starts_with("354 "));
    other.write_all(&original).unwrap();
    let done = command(&mut other, ".");
    assert!(done.starts_with("250 "), "{done}\n{}", writ.log());
    let stored = provider().wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    assert!(contains(&stored[0], b"X-Writ:"));
    assert!(!contains(&stored[0], marker.as_bytes()));
    command(&mut other, "QUIT");

    // The log names the clients HAProxy reported, not HAProxy.
    let log = writ.log();
    for client in [
        "client=127.0.0.2:",
        "client=127.0.0.3:",
        "client=127.0.0.4:",
    ] {
        assert!(
            log.contains(client),
            "{client} missing from the log:\n{log}"
        );
    }
    drop(held);
}

#[test]
fn ipv6_clients_are_counted_by_their_prefix() {
    let p = provider();
    // The balancer's v1 headers written by hand: clients writ cannot see
    // on loopback, where the only IPv6 address is ::1.
    let through = |writ: &Writ, client: &str| {
        let mut tcp = connect_from("127.0.0.1", writ.relay_addr());
        tcp.write_all(format!("PROXY TCP6 {client} ::1 40000 25\r\n").as_bytes())
            .unwrap();
        let line = first_line(&tcp);
        (tcp, line)
    };
    for (prefix, same_host) in [(Some("64"), "421 "), (None, "220 ")] {
        let mut cfg = WritConfig::relay(p.smtp_addr());
        cfg.listeners = vec![proxied_listener("relay", &["2001:db8::/32"])];
        let mut cfg = cfg.smtp("max_sessions_per_ip", "1");
        if let Some(prefix) = prefix {
            cfg = cfg.smtp("ipv6_prefix_per_ip", prefix);
        }
        let writ = Writ::start(&cfg);
        let (_held, held) = through(&writ, "2001:db8:1:2::1");
        assert!(held.starts_with("220 "), "{held}\n{}", writ.log());
        // Another address of the same /64: the same client when counted
        // by /64; another one by default (each address).
        let (_again, again) = through(&writ, "2001:db8:1:2:ffff::2");
        assert!(again.starts_with(same_host), "{prefix:?}: {again}");
        if same_host == "421 " {
            assert!(again.contains("your address"), "{again}");
        }
        // The next /64 is another client.
        let (_other, other) = through(&writ, "2001:db8:1:3::1");
        assert!(other.starts_with("220 "), "{other}");
    }
}

#[test]
fn hostile_proxy_headers_are_refused_within_the_timeout_while_others_are_served() {
    let (writ, haproxy) = relay_behind_haproxy();
    let relay = writ.relay_addr();

    // From the trusted address (127.0.0.1), straight to writ:
    // a slow header that never ends, garbage, an oversized v1 line, an
    // oversized v2 length, and no header at all.
    let mut slow = connect_from("127.0.0.1", relay);
    slow.write_all(b"PROXY TCP4 127.0.0.2 ").unwrap();
    let mut garbage = connect_from("127.0.0.1", relay);
    garbage.write_all(b"EHLO attacker.test\r\n").unwrap();
    let mut long = connect_from("127.0.0.1", relay);
    long.write_all(format!("PROXY TCP4 {}\r\n", "9".repeat(300)).as_bytes())
        .unwrap();
    let mut huge = connect_from("127.0.0.1", relay);
    huge.write_all(b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff")
        .unwrap();
    let silent = connect_from("127.0.0.1", relay);

    // Meanwhile a client behind HAProxy is greeted at once.
    let served = connect_from("127.0.0.2", haproxy.frontend("v2"));
    let greeting = first_line(&served);
    assert!(greeting.starts_with("220 "), "{greeting}");

    let started = Instant::now();
    let outcomes: Vec<(Vec<u8>, Duration)> = [slow, garbage, long, huge, silent]
        .into_iter()
        .map(until_closed)
        .collect();
    for (i, (bytes, _)) in outcomes.iter().enumerate() {
        assert!(
            bytes.is_empty(),
            "connection {i} got {:?} instead of being closed unanswered",
            String::from_utf8_lossy(bytes)
        );
    }
    // The slow and the silent one are closed by the header timeout, not by
    // the session's command timeout (minutes).
    assert!(
        started.elapsed() < HEADER_TIMEOUT + Duration::from_secs(4),
        "closed after {:?}",
        started.elapsed()
    );

    // A valid header from an address that is not a configured balancer is
    // refused before it is read.
    let mut spoofing = connect_from("127.0.0.9", relay);
    let _ = spoofing.write_all(b"PROXY TCP4 127.0.0.2 127.0.0.1 1234 25\r\n");
    let refused = first_line(&spoofing);
    assert!(refused.starts_with("554 5.7.1"), "{refused}");

    // And writ still serves.
    let again = first_line(&connect_from("127.0.0.3", haproxy.frontend("v1")));
    assert!(again.starts_with("220 "), "{again}");
    let log = writ.log();
    assert!(log.contains("PROXY header refused"), "{log}");
    assert!(log.contains("not a configured load balancer"), "{log}");
}

/// A TLS client over `tcp`, trusting `ca_der`; returns the first line.
fn tls_first_line(tcp: TcpStream, ca_der: &[u8]) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der.to_vec().into()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let stream = rustls::StreamOwned::new(conn, tcp);
    let mut line = String::new();
    let _ = BufReader::new(stream).read_line(&mut line);
    line
}

#[test]
fn imap_and_implicit_tls_listeners_behind_haproxy_count_the_real_client() {
    let p = provider();
    let tls = test_tls("writ PROXY test CA");
    let (imap, imaps) = (free_port(), free_port());
    let mut cfg = WritConfig::relay(p.smtp_addr());
    cfg.listeners = vec![proxied_listener("submissions", &[])];
    cfg.tls_cert = Some(tls.cert.clone());
    cfg.tls_key = Some(tls.key.clone());
    cfg.serve_options
        .push(("proxy_header_timeout_secs".into(), "1".into()));
    cfg.unlock = true;
    cfg.extra_toml = format!(
        "[imap]\ntls_cert = {cert:?}\ntls_key = {key:?}\nmax_sessions_per_ip = 1\n\n\
         [[imap.listeners]]\nkind = \"imap\"\nlisten = \"127.0.0.1:{imap}\"\n\
         proxy_protocol_from = [\"127.0.0.1\"]\n\n\
         [[imap.listeners]]\nkind = \"imaps\"\nlisten = \"127.0.0.1:{imaps}\"\n\
         proxy_protocol_from = [\"127.0.0.1\"]\n\n\
         [provider.imap]\naddress = \"{upstream}\"\nsecurity = \"plain\"\n",
        cert = tls.cert.display().to_string(),
        key = tls.key.display().to_string(),
        upstream = p.imap_addr(),
    );
    let writ = Writ::start(&cfg);
    let imap = SocketAddr::from(([127, 0, 0, 1], imap));
    let imaps = SocketAddr::from(([127, 0, 0, 1], imaps));
    let haproxy = Haproxy::start(&[
        ("imap_v1", imap, "send-proxy"),
        ("imaps_v2", imaps, "send-proxy-v2"),
        ("submissions_v1", writ.addr("submissions"), "send-proxy"),
    ]);

    // IMAP (STARTTLS listener): one session per client address.
    let held = connect_from("127.0.0.2", haproxy.frontend("imap_v1"));
    let greeting = first_line(&held);
    assert!(greeting.starts_with("* OK"), "{greeting}\n{}", writ.log());
    let over = first_line(&connect_from("127.0.0.2", haproxy.frontend("imap_v1")));
    assert!(
        over.starts_with("* BYE") && over.contains("your address"),
        "{over}"
    );
    let other = first_line(&connect_from("127.0.0.3", haproxy.frontend("imap_v1")));
    assert!(other.starts_with("* OK"), "{other}");

    // Implicit TLS: the header comes before the ClientHello, which must
    // reach the TLS handshake intact; 127.0.0.2's slot is shared by both
    // IMAP listeners, 127.0.0.4 is free.
    let tcp = connect_from("127.0.0.4", haproxy.frontend("imaps_v2"));
    let greeting = tls_first_line(tcp, &tls.ca_der);
    assert!(greeting.starts_with("* OK"), "{greeting}\n{}", writ.log());

    // SMTP submissions (implicit TLS) through v1.
    let tcp = connect_from("127.0.0.5", haproxy.frontend("submissions_v1"));
    let greeting = tls_first_line(tcp, &tls.ca_der);
    assert!(greeting.starts_with("220 "), "{greeting}\n{}", writ.log());

    let log = writ.log();
    for client in [
        "client=127.0.0.2:",
        "client=127.0.0.4:",
        "client=127.0.0.5:",
    ] {
        assert!(
            log.contains(client),
            "{client} missing from the log:\n{log}"
        );
    }
    drop(held);
}

/// `/healthz` always healthy.
struct Healthy;

impl writ::admin::Health for Healthy {
    fn check(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async { Ok(()) })
    }
}

/// One HTTP/1.0 GET over `tcp`; the whole answer ("" if closed unanswered).
fn get(mut tcp: TcpStream, path: &str) -> String {
    let _ = tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: writ\r\n\r\n").as_bytes());
    String::from_utf8_lossy(&until_closed(tcp).0).into_owned()
}

#[test]
fn the_admin_endpoint_behind_haproxy_takes_only_the_balancers_headers() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let handle = writ::admin::install_metrics().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let admin = listener.local_addr().unwrap();
    let proxy = writ::net::ProxyProtocol::new(&["127.0.0.1".into()], HEADER_TIMEOUT)
        .unwrap()
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = rt.spawn(writ::admin::serve_behind(
        listener,
        handle,
        Arc::new(Healthy),
        Some(proxy),
        async {
            let _ = stopped.await;
        },
    ));
    let haproxy = Haproxy::start(&[
        ("admin_v1", admin, "send-proxy"),
        ("admin_v2", admin, "send-proxy-v2"),
    ]);
    for frontend in ["admin_v1", "admin_v2"] {
        let answer = get(
            connect_from("127.0.0.2", haproxy.frontend(frontend)),
            "/healthz",
        );
        assert!(
            answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
            "{answer}"
        );
    }
    // Straight from the balancer's address without a header: no answer,
    // closed by the header timeout.
    let (bytes, took) = {
        let mut tcp = connect_from("127.0.0.1", admin);
        tcp.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        until_closed(tcp)
    };
    assert!(bytes.is_empty(), "{}", String::from_utf8_lossy(&bytes));
    assert!(took < HEADER_TIMEOUT + Duration::from_secs(4), "{took:?}");
    // From an address that is not a balancer, even with a valid header.
    let mut tcp = connect_from("127.0.0.9", admin);
    let _ = tcp.write_all(b"PROXY TCP4 127.0.0.2 127.0.0.1 1 2\r\n");
    assert_eq!(get(tcp, "/healthz"), "");
    let _ = stop.send(());
    rt.block_on(task).unwrap().unwrap();
}
