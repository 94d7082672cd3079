//! The admin endpoint over real sockets, with a hand-written HTTP/1.1
//! client so no HTTP client dependency is needed.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use writ::admin::{self, Health, names};

/// A health check with a fixed answer, optionally slow; says when a check
/// has started.
struct Fixed {
    answer: Result<(), String>,
    delay: Duration,
    started: Arc<Notify>,
}

impl Health for Fixed {
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            self.started.notify_one();
            tokio::time::sleep(self.delay).await;
            self.answer.clone()
        })
    }
}

/// A health check that fails with `reason` once the test opens its gate;
/// says when a check has started.
struct Gated {
    reason: String,
    started: Arc<Notify>,
    gate: Arc<Notify>,
}

impl Health for Gated {
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            self.started.notify_one();
            self.gate.notified().await;
            Err(self.reason.clone())
        })
    }
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    /// Notified when a health check starts.
    check_started: Arc<Notify>,
    task: JoinHandle<Result<(), admin::AdminError>>,
}

impl Server {
    async fn start(answer: Result<(), String>, delay: Duration) -> Server {
        let check_started = Arc::new(Notify::new());
        let health = Arc::new(Fixed {
            answer,
            delay,
            started: Arc::clone(&check_started),
        });
        Server::start_with(health, check_started).await
    }

    /// Serves `health`, which notifies `check_started` when a check starts.
    async fn start_with(health: Arc<dyn Health>, check_started: Arc<Notify>) -> Server {
        let handle = admin::install_metrics().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(admin::serve(listener, handle, health, async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            stop: Some(stop),
            check_started,
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
    }
}

/// Sends raw bytes, reads until the server closes; returns (status, head, body).
async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut bytes))
        .await
        .expect("response within the timeout")
        .unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, head.to_owned(), body.to_owned())
}

async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: writ\r\nConnection: close\r\n\r\n");
    raw(addr, req.as_bytes()).await
}

#[tokio::test]
async fn metrics_show_counters_and_histograms() {
    let server = Server::start(Ok(()), Duration::ZERO).await;
    metrics::counter!(names::MESSAGES_TOTAL, "outcome" => "refused", "reason" => "admin-test")
        .increment(3);
    metrics::histogram!(names::SEAL_SECONDS).record(0.003);

    let (status, head, body) = request(server.addr, "GET", "/metrics").await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        body.contains(r#"writ_messages_total{outcome="refused",reason="admin-test"} 3"#),
        "{body}"
    );
    assert!(body.contains("# HELP writ_messages_total"), "{body}");
    assert!(
        body.contains("# TYPE writ_seal_seconds histogram"),
        "{body}"
    );
    assert!(
        body.contains(r#"writ_seal_seconds_bucket{le="0.005"}"#),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn install_metrics_is_idempotent() {
    let a = admin::install_metrics().unwrap();
    let b = admin::install_metrics().unwrap();
    metrics::counter!(names::OPEN_FAILURES_TOTAL, "test" => "idempotent").increment(1);
    assert!(
        a.render()
            .contains(r#"writ_open_failures_total{test="idempotent"} 1"#)
    );
    assert!(
        b.render()
            .contains(r#"writ_open_failures_total{test="idempotent"} 1"#)
    );
}

#[tokio::test]
async fn healthz_ok() {
    let server = Server::start(Ok(()), Duration::ZERO).await;
    let (status, _, body) = request(server.addr, "GET", "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    server.stop().await;
}

#[tokio::test]
async fn healthz_unhealthy_gives_the_reason() {
    let reason = "provider unreachable: 127.0.0.1:2525: connection refused";
    let server = Server::start(Err(reason.to_owned()), Duration::ZERO).await;
    let (status, _, body) = request(server.addr, "GET", "/healthz").await;
    assert_eq!(status, 503);
    assert_eq!(body, format!("{reason}\n"));
    server.stop().await;
}

#[tokio::test]
async fn unknown_path_and_wrong_method() {
    let server = Server::start(Ok(()), Duration::ZERO).await;
    let (status, _, _) = request(server.addr, "GET", "/").await;
    assert_eq!(status, 404);
    let (status, _, _) = request(server.addr, "GET", "/metrics/extra").await;
    assert_eq!(status, 404);
    let (status, head, _) = request(server.addr, "POST", "/metrics").await;
    assert_eq!(status, 405);
    assert!(head.to_ascii_lowercase().contains("allow: get"), "{head}");
    let (status, _, _) = request(server.addr, "DELETE", "/healthz").await;
    assert_eq!(status, 405);
    // A query string does not change the route.
    let (status, _, _) = request(server.addr, "GET", "/healthz?verbose=1").await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn malformed_request_gets_400_and_the_server_keeps_serving() {
    let server = Server::start(Ok(()), Duration::ZERO).await;
    let (status, _, _) = raw(server.addr, b"\x00\x01 garbage\r\n\r\n").await;
    assert_eq!(status, 400);
    let (status, _, _) = raw(server.addr, b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n").await;
    assert_eq!(status, 400);
    let (status, _, body) = request(server.addr, "GET", "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    server.stop().await;
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let server = Server::start(Ok(()), Duration::ZERO).await;
    let req = "GET /healthz HTTP/1.1\r\nHost: writ\r\n\r\n\
               GET /nope HTTP/1.1\r\nHost: writ\r\nConnection: close\r\n\r\n";
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut bytes))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("HTTP/1.1 404 Not Found\r\n"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish_then_stops_accepting() {
    let server = Server::start(Ok(()), Duration::from_millis(500)).await;
    let addr = server.addr;
    let in_flight = tokio::spawn(request(addr, "GET", "/healthz"));
    // Shut down once the request has reached the (slow) health check.
    server.check_started.notified().await;
    server.stop().await;
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections() {
    let server = Server::start(Ok(()), Duration::ZERO).await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: writ\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // The connection is now idle and kept alive; shutdown must not wait
    // for the grace period because of it.
    let started = std::time::Instant::now();
    server.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the idle connection is closed");
}

/// Reads until the server closes the connection (or the bound passes):
/// true when it closed.
async fn closed_within(tcp: &mut TcpStream, bound: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(bound, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn slow_and_idle_clients_are_closed_and_the_probe_is_served_meanwhile() {
    let server = Server::start(Ok(()), Duration::ZERO).await;
    // Half the attackers trickle a request head that never ends, half
    // finish one request and then sit on the kept-alive connection.
    let mut slow = Vec::new();
    let mut idle = Vec::new();
    for i in 0..300 {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        if i % 2 == 0 {
            tcp.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: a")
                .await
                .unwrap();
            slow.push(tcp);
        } else {
            tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: writ\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 512];
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
            idle.push(tcp);
        }
    }
    // The prober still gets its answer while all of them are open.
    let (status, _, body) = tokio::time::timeout(
        Duration::from_secs(5),
        request(server.addr, "GET", "/healthz"),
    )
    .await
    .expect("the probe is answered while 300 connections are held");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // Nobody holds a connection for long: the server closes both kinds
    // (header read timeout, keep-alive idle timeout), with a wide margin.
    for tcp in slow.iter_mut().chain(idle.iter_mut()) {
        assert!(
            closed_within(tcp, Duration::from_secs(30)).await,
            "a slow or idle admin connection was left open"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn more_connections_than_the_cap_evict_the_oldest_so_a_probe_gets_in() {
    let server = Server::start(Ok(()), Duration::ZERO).await;
    let mut held = Vec::new();
    for _ in 0..admin::MAX_CONNECTIONS + 20 {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: a")
            .await
            .unwrap();
        held.push(tcp);
    }
    let (status, _, body) = tokio::time::timeout(
        Duration::from_secs(5),
        request(server.addr, "GET", "/healthz"),
    )
    .await
    .expect("the probe is answered past the connection cap");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // The first ones were closed to make room, before any timeout.
    assert!(closed_within(&mut held[0], Duration::from_secs(5)).await);
    server.stop().await;
}

#[tokio::test]
async fn a_flood_past_the_cap_never_closes_a_probe_waiting_for_its_check() {
    let started = Arc::new(Notify::new());
    let gate = Arc::new(Notify::new());
    let reason = "provider unreachable: 127.0.0.1:2525: no greeting";
    let health = Arc::new(Gated {
        reason: reason.to_owned(),
        started: Arc::clone(&started),
        gate: Arc::clone(&gate),
    });
    let server = Server::start_with(health, started.clone()).await;
    // The load balancer's probe: its request is in, its check runs.
    let probe = tokio::spawn(request(server.addr, "GET", "/healthz"));
    started.notified().await;
    // A flood of idle connections past the cap: the probe's connection is
    // the oldest.
    let extra = 20;
    let mut flood = Vec::new();
    for _ in 0..admin::MAX_CONNECTIONS + extra {
        flood.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // The oldest flood connections were closed to make room (one per
    // connection past the cap, the probe's counting as one of the cap).
    for tcp in &mut flood[..extra] {
        assert!(
            closed_within(tcp, Duration::from_secs(5)).await,
            "an old idle connection was kept past the cap"
        );
    }
    // The check answers: the probe gets it.
    gate.notify_one();
    let (status, _, body) = tokio::time::timeout(Duration::from_secs(5), probe)
        .await
        .expect("the probe is answered")
        .unwrap();
    assert_eq!((status, body), (503, format!("{reason}\n")));
    // The newest flood connection is still open and served.
    let newest = flood.last_mut().unwrap();
    newest
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: writ\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), newest.read_to_end(&mut bytes))
        .await
        .unwrap()
        .unwrap();
    assert!(bytes.starts_with(b"HTTP/1.1 200"), "{bytes:?}");
    server.stop().await;
}
