//! The admin HTTP endpoint: `GET /healthz` and `GET /metrics`.
//!
//! Meant for a private interface (monitoring, the load balancer's probe):
//! it serves no mail data and takes no input beyond the request line.
//!
//! Caps: [`MAX_CONNECTIONS`] at once; at the cap the oldest connection
//! that has not sent a complete request head (idle, mid-head, or awaiting
//! its PROXY header) is closed to make room, so a flood cannot keep a
//! probe out, and a connection whose request is being answered (a probe
//! waiting for its health check) is never closed for room: when every
//! connection is answering, the new one is closed at once instead
//! ([`make_room`]); one health check at a time, shared by
//! every `/healthz` that arrives while it runs (a flood of probes costs the
//! provider one connection per check, not one per request; the check runs
//! on a task of its own, so a probe that goes away (its client gone)
//! does not cancel it for the others); a request head must arrive within
//! [`HEADER_READ_TIMEOUT`], and a kept-alive connection idle that long is
//! closed (hyper's header read timer covers both); hyper's own limits on
//! head size (about 400 KB) and header count answer 431/400; bodies are
//! never read. With `serve.admin_proxy_protocol_from`, only those load
//! balancers may connect and each connection starts with a PROXY header
//! (`net::proxy_header`, read inside the connection's task under its cap
//! and timeout: a slow one holds one of the [`MAX_CONNECTIONS`] at most).
//! Metric names live in [`names`] so the relay and the endpoint agree on
//! them.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

use crate::net::ProxyProtocol;

/// Metric names recorded by writ. Labels are listed with each.
pub mod names {
    /// Counter, label `listener`: SMTP sessions accepted.
    pub const SMTP_SESSIONS_TOTAL: &str = "writ_smtp_sessions_total";
    /// Gauge: SMTP sessions open right now.
    pub const SMTP_SESSIONS_ACTIVE: &str = "writ_smtp_sessions_active";
    /// Counter, labels `outcome` (sealed|relayed|refused) and `reason` (for refused): messages.
    pub const MESSAGES_TOTAL: &str = "writ_messages_total";
    /// Counter, label `outcome` (clean|flagged|reject|tempfail|failed|too-large):
    /// messages handed to the content scanner (`[scanner]`); `failed` counts
    /// both fail-closed and fail-open cases (label `delivered` true|false).
    pub const SCANNER_VERDICTS_TOTAL: &str = "writ_scanner_verdicts_total";
    /// Counter, labels `dmarc` (pass|fail|none|temperror|permerror|off|
    /// unverified) and `action` (deliver|quarantine|reject|too-large|timeout):
    /// messages verified by `[auth]` on relay listeners.
    pub const AUTH_VERDICTS_TOTAL: &str = "writ_auth_verdicts_total";
    /// Counter, label `outcome` (sealed|skipped|failed): ARC sets writ added
    /// to sealed messages (`[auth.arc]`).
    pub const ARC_SEALS_TOTAL: &str = "writ_arc_seals_total";
    /// Counter, label `outcome` (sealed|relayed|refused): message bytes as received from the client.
    pub const MESSAGE_BYTES_TOTAL: &str = "writ_message_bytes_total";
    /// Counter, label `class` (2xx|3xx|4xx|5xx|error): replies from the provider.
    pub const UPSTREAM_REPLIES_TOTAL: &str = "writ_upstream_replies_total";
    /// Counter, label `how` (new|reused): provider SMTP connections a
    /// session started using, opened for it or taken from the pool.
    pub const UPSTREAM_CONNECTIONS_TOTAL: &str = "writ_upstream_connections_total";
    /// Gauge: idle provider SMTP connections in the relay's pool.
    pub const UPSTREAM_IDLE: &str = "writ_upstream_idle_connections";
    /// Histogram, seconds: time to seal one message.
    pub const SEAL_SECONDS: &str = "writ_seal_seconds";
    /// Histogram, seconds: time waiting on the provider for one reply.
    pub const UPSTREAM_SECONDS: &str = "writ_upstream_seconds";
    /// Counter, label `reason`: sealed messages that could not be opened.
    pub const OPEN_FAILURES_TOTAL: &str = "writ_open_failures_total";
    /// Counter, label `listener`: IMAP sessions accepted.
    pub const IMAP_SESSIONS_TOTAL: &str = "writ_imap_sessions_total";
    /// Gauge: IMAP sessions open right now.
    pub const IMAP_SESSIONS_ACTIVE: &str = "writ_imap_sessions_active";
    /// Counter: sealed messages opened by the IMAP proxy (summary or whole).
    pub const IMAP_OPENED_TOTAL: &str = "writ_imap_opened_total";
    /// Counter: sealed messages the IMAP proxy answered from its cache.
    pub const IMAP_CACHE_HITS_TOTAL: &str = "writ_imap_cache_hits_total";
    /// Counter, label `listing` (`first`, `new_mail`): listings whose
    /// summaries the IMAP proxy asked for with its probe, before knowing
    /// which messages are sealed.
    pub const IMAP_LISTED_AHEAD_TOTAL: &str = "writ_imap_listed_ahead_total";
    pub const IMAP_CACHE_MEMORY_BYTES: &str = "writ_imap_cache_memory_bytes";
    /// Histogram, bytes: what the IMAP proxy writes to a client at once
    /// (all it composed since the client last drained its output).
    pub const IMAP_CLIENT_WRITE_BYTES: &str = "writ_imap_client_write_bytes";
    /// Counter, label `outcome` (sealed|refused): APPENDs through the proxy.
    pub const IMAP_APPENDS_TOTAL: &str = "writ_imap_appends_total";
    /// Counter, label `account`: plaintext messages the sweep found at the
    /// provider (`[sweep]`).
    pub const SWEEP_FOUND_TOTAL: &str = "writ_sweep_plaintext_found_total";
    /// Counter, label `account`: plaintext messages the sweep sealed in
    /// place.
    pub const SWEEP_SEALED_TOTAL: &str = "writ_sweep_sealed_total";
    /// Gauge, label `account`: seconds since the oldest plaintext message
    /// the sweep knows of and has not sealed yet reached the provider (its
    /// INTERNALDATE); 0 when there is none.
    pub const SWEEP_OLDEST_SECONDS: &str = "writ_sweep_oldest_plaintext_seconds";
    /// Counter, label `account`: sweep rounds completed.
    pub const SWEEP_ROUNDS_TOTAL: &str = "writ_sweep_rounds_total";
    /// Counter, label `account`: sweep rounds (or IDLE watches) that failed
    /// at the provider and were backed off, and mailboxes left in a round
    /// that swept the account's others (an error of that mailbox's own).
    pub const SWEEP_ERRORS_TOTAL: &str = "writ_sweep_errors_total";
    /// Gauge: 1 while the sweep runs; 0 while it waits for its checkpoint
    /// store (`[state]`: the database down at start) or once it stopped.
    pub const SWEEP_RUNNING: &str = "writ_sweep_running";
}

/// Latency buckets in seconds, shared by both histograms: from a small
/// message sealed in a millisecond to a large one (or a slow provider
/// answering DATA) taking minutes.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0,
];

/// Admin connections open at once. At the cap, the oldest connection not
/// answering a request is closed to make room for the new one: whoever
/// floods the endpoint with connections cannot keep the load balancer's
/// probe out (its connection is the newest), nor cut off a probe waiting
/// for its answer. When every connection is answering, the new one is
/// closed instead.
pub const MAX_CONNECTIONS: usize = 64;
/// A slow client must not hold a connection (and delay shutdown) by
/// trickling its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A probe that hangs is worse than one that fails: a health check that
/// takes longer than this is reported as unhealthy.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests get to finish after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Size buckets in bytes for [`names::IMAP_CLIENT_WRITE_BYTES`]: from one
/// short response to the largest answers a FETCH composes at once.
const WRITE_BUCKETS: &[f64] = &[
    4096.0, 65536.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0,
];

/// Histogram samples accumulate until drained; without the exporter's own
/// HTTP listener nobody drains them but us, so do it even if nobody scrapes.
const UPKEEP_PERIOD: Duration = Duration::from_secs(5);

/// Why the admin endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The Prometheus recorder could not be installed (typically: another
    /// global metrics recorder was installed first).
    #[error("cannot install the metrics recorder: {0}")]
    Metrics(String),
}

/// What `/healthz` asks. The error is the reason shown to the prober: keep
/// it to one line and free of secrets.
pub trait Health: Send + Sync {
    /// Ok when writ can do its job (keyring unlocked, provider reachable).
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
}

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the process-wide Prometheus recorder and describes writ's
/// metrics. Idempotent: later calls return the same handle. Histogram
/// samples are drained by [`serve`]; without it, call
/// [`PrometheusHandle::run_upkeep`] periodically (or do not install).
pub fn install_metrics() -> Result<PrometheusHandle, AdminError> {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(names::SEAL_SECONDS.into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(names::UPSTREAM_SECONDS.into()),
                        LATENCY_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(names::IMAP_CLIENT_WRITE_BYTES.into()),
                        WRITE_BUCKETS,
                    )
                })
                .and_then(PrometheusBuilder::install_recorder)
                .map_err(|e| e.to_string())?;
            describe();
            Ok(handle)
        })
        .clone()
        .map_err(AdminError::Metrics)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        names::SMTP_SESSIONS_TOTAL,
        Unit::Count,
        "SMTP sessions accepted, by listener"
    );
    describe_gauge!(
        names::SMTP_SESSIONS_ACTIVE,
        Unit::Count,
        "SMTP sessions currently open"
    );
    describe_counter!(
        names::MESSAGES_TOTAL,
        Unit::Count,
        "Messages by outcome (sealed, relayed, refused) and refusal reason"
    );
    describe_counter!(
        names::MESSAGE_BYTES_TOTAL,
        Unit::Bytes,
        "Message bytes received from clients, by outcome"
    );
    describe_counter!(
        names::UPSTREAM_REPLIES_TOTAL,
        Unit::Count,
        "Provider replies by class (2xx, 3xx, 4xx, 5xx, error)"
    );
    describe_counter!(
        names::UPSTREAM_CONNECTIONS_TOTAL,
        Unit::Count,
        "Provider SMTP connections taken into use, opened (new) or from the pool (reused)"
    );
    describe_histogram!(
        names::SEAL_SECONDS,
        Unit::Seconds,
        "Time to seal one message"
    );
    describe_histogram!(
        names::UPSTREAM_SECONDS,
        Unit::Seconds,
        "Time waiting for one provider reply"
    );
    describe_counter!(
        names::OPEN_FAILURES_TOTAL,
        Unit::Count,
        "Sealed messages that could not be opened, by reason"
    );
    describe_counter!(
        names::IMAP_SESSIONS_TOTAL,
        Unit::Count,
        "IMAP sessions accepted, by listener"
    );
    describe_gauge!(
        names::UPSTREAM_IDLE,
        Unit::Count,
        "Idle provider SMTP connections in the relay's pool"
    );
    describe_gauge!(
        names::IMAP_SESSIONS_ACTIVE,
        Unit::Count,
        "IMAP sessions currently open"
    );
    describe_counter!(
        names::IMAP_OPENED_TOTAL,
        Unit::Count,
        "Sealed messages opened by the IMAP proxy"
    );
    describe_counter!(
        names::IMAP_CACHE_HITS_TOTAL,
        Unit::Count,
        "Sealed messages answered from the IMAP proxy's cache"
    );
    describe_counter!(
        names::IMAP_LISTED_AHEAD_TOTAL,
        Unit::Count,
        "IMAP listings whose summaries were asked for with the probe (first listing, new mail)"
    );
    describe_gauge!(
        names::IMAP_CACHE_MEMORY_BYTES,
        Unit::Bytes,
        "Opened summaries the IMAP proxy's cache holds in memory (by its weight; at most three quarters of imap.cache_memory_bytes)"
    );
    describe_histogram!(
        names::IMAP_CLIENT_WRITE_BYTES,
        Unit::Bytes,
        "Bytes the IMAP proxy wrote to a client at once"
    );
    describe_counter!(
        names::IMAP_APPENDS_TOTAL,
        Unit::Count,
        "APPENDs through the IMAP proxy, by outcome"
    );
    describe_counter!(
        names::SWEEP_FOUND_TOTAL,
        Unit::Count,
        "Plaintext messages the sweep found at the provider, by account"
    );
    describe_counter!(
        names::SWEEP_SEALED_TOTAL,
        Unit::Count,
        "Plaintext messages the sweep sealed in place, by account"
    );
    describe_gauge!(
        names::SWEEP_OLDEST_SECONDS,
        Unit::Seconds,
        "Age of the oldest plaintext message the sweep has not sealed yet, by account"
    );
    describe_counter!(
        names::SWEEP_ROUNDS_TOTAL,
        Unit::Count,
        "Sweep rounds completed, by account"
    );
    describe_counter!(
        names::SWEEP_ERRORS_TOTAL,
        Unit::Count,
        "Sweep rounds and IDLE watches that failed at the provider, and mailboxes left on an error of their own, by account"
    );
    describe_gauge!(
        names::SWEEP_RUNNING,
        Unit::Count,
        "1 while the sweep runs, 0 while it waits for its checkpoint store (the database) or after it stopped"
    );
}

struct State {
    handle: PrometheusHandle,
    health: Arc<dyn Health>,
    /// The health check running now, if one is: its outcome, once known.
    checking: std::sync::Mutex<Option<watch::Receiver<Option<Checked>>>>,
}

/// A health check's outcome (the error: the reason shown to the prober).
type Checked = Result<(), String>;

/// Marks the running health check over when dropped.
struct Over(Arc<State>);

impl Drop for Over {
    fn drop(&mut self) {
        *self.0.checking.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl State {
    fn new(handle: PrometheusHandle, health: Arc<dyn Health>) -> State {
        State {
            handle,
            health,
            checking: std::sync::Mutex::new(None),
        }
    }
}

/// The outcome of the health check running now, or of a new one when none
/// is: a call after another's answer always gets a check of its own (a
/// change made before it shows); calls that come while a check runs share
/// its outcome. The check runs on its own task, bounded by
/// [`HEALTH_TIMEOUT`].
async fn health_of(state: &Arc<State>) -> Result<(), String> {
    let mut outcome = {
        let mut checking = state.checking.lock().unwrap_or_else(|e| e.into_inner());
        match &*checking {
            Some(running) => running.clone(),
            None => {
                let (tx, rx) = watch::channel(None);
                *checking = Some(rx.clone());
                let state = Arc::clone(state);
                tokio::spawn(async move {
                    // Clears the slot however the check ends, a panic
                    // included (its callers are then told it failed).
                    let over = Over(Arc::clone(&state));
                    let result =
                        match tokio::time::timeout(HEALTH_TIMEOUT, state.health.check()).await {
                            Ok(result) => result,
                            Err(_) => Err("health check timed out".into()),
                        };
                    // Over before its outcome is told: a call after this
                    // point starts a check of its own.
                    drop(over);
                    tx.send_replace(Some(result));
                });
                rx
            }
        }
    };
    let told = outcome.wait_for(Option::is_some).await;
    match told.as_deref() {
        Ok(Some(result)) => result.clone(),
        _ => Err("health check failed".into()),
    }
}

/// A connection's phase, for [`make_room`]: no complete request head yet
/// (idle, mid-head, or awaiting its PROXY header).
const WAITING: u8 = 0;
/// A request's head arrived and its answer is being made.
const ANSWERING: u8 = 1;
/// Chosen to make room: it is being closed and answers nothing more.
const CLOSING: u8 = 2;

/// An open admin connection: its task and its phase.
struct Conn {
    task: AbortHandle,
    phase: Arc<AtomicU8>,
}

/// Marks a connection answering while it lives (the service future of one
/// request); waiting again once the answer is made. A connection already
/// chosen to make room stays closing.
struct Answering(Arc<AtomicU8>);

impl Answering {
    fn begin(phase: &Arc<AtomicU8>) -> Answering {
        let _ = phase.compare_exchange(WAITING, ANSWERING, Ordering::AcqRel, Ordering::Acquire);
        Answering(Arc::clone(phase))
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        let _ = self
            .0
            .compare_exchange(ANSWERING, WAITING, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// Makes room for one more connection in `open` (oldest first): forgets
/// the finished ones, then, at [`MAX_CONNECTIONS`], closes the oldest that
/// has not sent a complete request head. False when every connection is
/// answering a request: the new connection must be refused. A connection
/// is claimed for closing by one compare-and-swap, so one whose request
/// head arrives meanwhile is either answered or closed, never closed while
/// it answers.
fn make_room(open: &mut VecDeque<Conn>) -> bool {
    open.retain(|c| !c.task.is_finished());
    while open.len() >= MAX_CONNECTIONS {
        let victim = open.iter().position(|c| {
            c.phase
                .compare_exchange(WAITING, CLOSING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        });
        match victim.and_then(|i| open.remove(i)) {
            Some(conn) => conn.task.abort(),
            None => return false,
        }
    }
    true
}

/// Serves `/healthz` and `/metrics` on `listener` until `shutdown`
/// completes; then stops accepting, lets in-flight requests finish (up to
/// a grace period) and returns.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    health: Arc<dyn Health>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AdminError> {
    serve_behind(listener, handle, health, None, shutdown).await
}

/// [`serve`], with the PROXY protocol from the load balancers in `proxy`
/// (`serve.admin_proxy_protocol_from`): a connection from anywhere else is
/// closed at once, and one whose header is bad or late is closed unread.
pub async fn serve_behind(
    listener: TcpListener,
    handle: PrometheusHandle,
    health: Arc<dyn Health>,
    proxy: Option<ProxyProtocol>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AdminError> {
    let state = Arc::new(State::new(handle, health));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    // The connections in `conns`, oldest first.
    let mut open: VecDeque<Conn> = VecDeque::new();
    let mut upkeep = tokio::time::interval(UPKEEP_PERIOD);
    upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin endpoint listening");
    }

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = upkeep.tick() => state.handle.run_upkeep(),
            accepted = listener.accept() => {
                let (mut tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Usually out of file descriptors: back off rather
                        // than spin, and keep serving once it clears.
                        crate::net::accept::back_off("admin", &e).await;
                        continue;
                    }
                };
                if let Some(proxy) = &proxy
                    && !proxy.trusts(peer.ip())
                {
                    tracing::info!(%peer, "admin endpoint: not a configured load balancer");
                    continue;
                }
                // Reap finished connections so the set does not grow, then
                // make room at the cap by closing the oldest that is not
                // answering; if every one is, refuse this one.
                while conns.try_join_next().is_some() {}
                if !make_room(&mut open) {
                    tracing::debug!(
                        %peer,
                        "admin endpoint: connection cap reached, every connection answering: \
                         closing the new one"
                    );
                    drop(tcp);
                    continue;
                }
                let phase = Arc::new(AtomicU8::new(WAITING));
                let answering = Arc::clone(&phase);
                let state = Arc::clone(&state);
                let builder = builder.clone();
                let mut stop = stop_rx.clone();
                let proxy = proxy.clone();
                let handle = conns.spawn(async move {
                    let Some(peer) = crate::net::proxy_header::client_of(
                        proxy.as_ref(),
                        &mut tcp,
                        peer,
                        "admin",
                    )
                    .await
                    else {
                        return;
                    };
                    let service = service_fn(move |req| {
                        let state = Arc::clone(&state);
                        // hyper calls this once a request head is complete.
                        let answering = Answering::begin(&answering);
                        async move {
                            let response = route(&state, req).await;
                            drop(answering);
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let conn = builder.serve_connection(TokioIo::new(tcp), service);
                    tokio::pin!(conn);
                    let result = tokio::select! {
                        result = conn.as_mut() => result,
                        // The guard wait_for returns is not Send: drop it
                        // inside the branch future.
                        () = async { let _ = stop.wait_for(|stopping| *stopping).await; } => {
                            // Finishes a request in progress, then closes
                            // instead of waiting for the next one.
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    };
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "admin connection ended with an error");
                    }
                });
                open.push_back(Conn { task: handle, phase });
            }
        }
    }

    drop(listener);
    // send_replace, not send: it stores the value even if every connection
    // (every receiver) is already gone, and cannot fail.
    stop_tx.send_replace(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = conns.len(),
            "admin endpoint: connections still open after the grace period, closing them"
        );
    }
    // Dropping the set aborts whatever is left.
    Ok(())
}

async fn route(state: &Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path != "/healthz" && path != "/metrics" {
        return text(StatusCode::NOT_FOUND, "not found\n".into());
    }
    if req.method() != Method::GET {
        let mut resp = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return resp;
    }
    if path == "/metrics" {
        let mut resp = text(StatusCode::OK, state.handle.render());
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        return resp;
    }
    match health_of(state).await {
        Ok(()) => text(StatusCode::OK, "ok\n".into()),
        Err(reason) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", one_line(&reason)),
        ),
    }
}

/// The reason as one line: probes and log scrapers read the first line
/// only, and a multi-line error would be cut.
fn one_line(reason: &str) -> String {
    let line: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let line = line.trim();
    if line.is_empty() {
        "unhealthy".to_owned()
    } else {
        line.to_owned()
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A health check that panics the first time, then is healthy.
    struct PanicsOnce(AtomicUsize);

    impl Health for PanicsOnce {
        fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
            Box::pin(async move {
                if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("a health check fault");
                }
                Ok(())
            })
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_check_that_panics_fails_its_probes_and_the_next_probe_checks_again() {
        let handle = PrometheusBuilder::new().build_recorder().handle();
        let state = Arc::new(State::new(
            handle,
            Arc::new(PanicsOnce(AtomicUsize::new(0))),
        ));
        assert_eq!(health_of(&state).await, Err("health check failed".into()));
        assert_eq!(health_of(&state).await, Ok(()));
    }

    /// A health check that counts its runs and ends when told.
    struct Gated {
        runs: AtomicUsize,
        open: tokio::sync::Notify,
    }

    impl Health for Gated {
        fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
            Box::pin(async move {
                let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
                self.open.notified().await;
                Err(format!("run {run}"))
            })
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn probes_that_come_while_a_check_runs_share_it_and_a_later_one_checks_again() {
        let gated = Arc::new(Gated {
            runs: AtomicUsize::new(0),
            open: tokio::sync::Notify::new(),
        });
        let handle = PrometheusBuilder::new().build_recorder().handle();
        let state = Arc::new(State::new(handle, gated.clone()));
        // The probe whose check runs goes away (its client hung up): the
        // check goes on for the others.
        let first = tokio::spawn({
            let state = Arc::clone(&state);
            async move { health_of(&state).await }
        });
        while gated.runs.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let probes: Vec<_> = (0..10)
            .map(|_| {
                let state = Arc::clone(&state);
                tokio::spawn(async move { health_of(&state).await })
            })
            .collect();
        // Every probe runs to its wait (one thread: each spawned task
        // runs once per yield of this one).
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        first.abort();
        gated.open.notify_one();
        for probe in probes {
            assert_eq!(probe.await.unwrap(), Err("run 1".into()));
        }
        assert_eq!(gated.runs.load(Ordering::SeqCst), 1, "one check for all");
        // After the answer, a probe gets a check of its own.
        let later = tokio::spawn({
            let state = Arc::clone(&state);
            async move { health_of(&state).await }
        });
        while gated.runs.load(Ordering::SeqCst) == 1 {
            tokio::task::yield_now().await;
        }
        gated.open.notify_one();
        assert_eq!(later.await.unwrap(), Err("run 2".into()));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn room_is_made_by_closing_the_oldest_connection_not_answering() {
        let mut tasks = JoinSet::new();
        let mut open = VecDeque::new();
        let mut add = |open: &mut VecDeque<Conn>, phase: u8| {
            let phase = Arc::new(AtomicU8::new(phase));
            let task = tasks.spawn(std::future::pending::<()>());
            open.push_back(Conn {
                task,
                phase: Arc::clone(&phase),
            });
            phase
        };
        // The two oldest answer (probes waiting for a health check).
        let phases: Vec<_> = (0..MAX_CONNECTIONS)
            .map(|i| add(&mut open, if i < 2 { ANSWERING } else { WAITING }))
            .collect();
        assert!(make_room(&mut open));
        assert_eq!(open.len(), MAX_CONNECTIONS - 1);
        assert_eq!(phases[0].load(Ordering::SeqCst), ANSWERING);
        assert_eq!(phases[1].load(Ordering::SeqCst), ANSWERING);
        assert_eq!(
            phases[2].load(Ordering::SeqCst),
            CLOSING,
            "the oldest waiting"
        );
        assert!(!open.iter().any(|c| Arc::ptr_eq(&c.phase, &phases[2])));
        // Its request head arriving now does not make it answer.
        drop(Answering::begin(&phases[2]));
        assert_eq!(phases[2].load(Ordering::SeqCst), CLOSING);
        // An answer made: the connection may be closed for room again.
        let answering = Answering::begin(&phases[3]);
        assert_eq!(phases[3].load(Ordering::SeqCst), ANSWERING);
        drop(answering);
        assert_eq!(phases[3].load(Ordering::SeqCst), WAITING);

        // Every connection answering: nothing is closed, the new one is
        // refused.
        for c in &open {
            c.phase.store(ANSWERING, Ordering::SeqCst);
        }
        add(&mut open, ANSWERING);
        assert!(!make_room(&mut open));
        assert_eq!(open.len(), MAX_CONNECTIONS);
        assert!(
            open.iter()
                .all(|c| c.phase.load(Ordering::SeqCst) == ANSWERING)
        );
    }

    #[test]
    fn reasons_become_one_line() {
        assert_eq!(
            one_line("provider unreachable:\r\nconnection refused\n"),
            "provider unreachable:  connection refused"
        );
        assert_eq!(one_line(" \n "), "unhealthy");
        assert_eq!(one_line("keyring locked"), "keyring locked");
    }
}
