//! `writ serve`: every configured service in one process: the SMTP relay's
//! listeners, the IMAP proxy's listeners, the sweep (`[sweep]`, on a
//! thread of its own: [`crate::sweep`]) and the admin endpoint.
//!
//! Start-up checks everything that can be checked before the first client
//! arrives (config, keyring, certificates, the provider's TLS settings,
//! ports) and fails with one line naming the problem. Once every socket is
//! bound, writ tells systemd `READY=1` (`Type=notify`; nothing without
//! `NOTIFY_SOCKET`). SIGTERM or SIGINT stops accepting; in-flight
//! transactions (and the sweep's batch in flight) get `serve.grace_secs`.
//! SIGHUP reloads the keyring (after `writ keys rotate`) without dropping
//! a session: see [`Reloader`].
//!
//! State: the only state `writ serve` writes is the sweep's checkpoints
//! (and, on `[state] backend = "postgres"`, its mailbox leases), which go
//! through the configured backend ([`crate::state::CheckpointBackend`]:
//! its settings are checked at start, a bad one fails start-up, but the
//! database is connected and migrated on the sweep's thread, retried with
//! backoff while it is down, so the relay and the proxy never wait for
//! it and need no database);
//! the IMAP cache stays local by design, and serve writes no audit
//! records (key events are recorded by the `writ keys` commands; a SIGHUP
//! reload only reads the keyring).

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{self, Health};
use crate::config::{
    Config, ImapListenerKind, ListenerKind, Network, SealConfig, UpstreamSecurity,
};
use crate::imap;
use crate::imap::session::SharedKeys;
use crate::keys::{KeyError, Keyring, LiveKeys, Unlocked};
use crate::net::ProxyProtocol;
use crate::policy::Policy;
use crate::smtp::connection::Shared;
use crate::smtp::listener::Listener;
use crate::smtp::pool::Pool;
use crate::smtp::session::SessionConfig;
use crate::smtp::upstream::{Target, Upstream};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "nothing to serve: the config has no [[smtp.listeners]], no [[imap.listeners]] and no \
         [sweep] enabled"
    )]
    Nothing,
    #[error("config: {0}")]
    Config(String),
    #[error("keyring: {0}")]
    Keys(#[from] crate::keys::KeyError),
    #[error("{0}")]
    Policy(#[from] crate::policy::PolicyError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("provider: {0}")]
    Provider(#[from] crate::smtp::upstream::UpstreamError),
    #[error("provider (IMAP): {0}")]
    ImapProvider(#[from] crate::imap::upstream::UpstreamError),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("signals: {0}")]
    Signals(std::io::Error),
    #[error("admin endpoint: {0}")]
    Admin(String),
    #[error("keyring reload: {0}")]
    Reload(String),
    #[error("sweep: {0}")]
    Sweep(String),
    #[error("state: {0}")]
    State(#[from] crate::state::StateError),
}

/// Unlocks the keyring again, from the same passphrase source as at start
/// (SIGHUP after `writ keys rotate`). Called on a blocking thread: scrypt.
pub type Unlock = Arc<dyn Fn() -> Result<Unlocked, KeyError> + Send + Sync>;

/// The IMAP proxy's unlocked keyring and how to unlock it again.
pub struct OpenKeys {
    pub live: Arc<LiveKeys>,
    pub unlock: Unlock,
}

/// What SIGHUP reloads: the keyring's new epochs join [`LiveKeys`] (every
/// session, those in progress included, opens them from then on), and
/// every IMAP session, those in progress included, seals the APPENDs it
/// takes from then on to the new active epoch (one that went on sealing to
/// the epoch it started with would store mail `keys retire` can make
/// unreadable). The sweep gets the new sealer and its own newly unlocked
/// keyring for its next mover run. The relay reads the keyring for each
/// message and needs nothing. A failed reload changes nothing.
struct Reloader {
    keys_dir: PathBuf,
    seal: SealConfig,
    keys: Option<OpenKeys>,
    imap: Vec<watch::Sender<Arc<imap::connection::Shared>>>,
    /// The sweep's keys (`None`: no sweep).
    sweep: Option<watch::Sender<Arc<crate::sweep::SweepKeys>>>,
}

impl Reloader {
    /// The IMAP cache (one, shared by every IMAP listener), if any.
    fn caches(&self) -> Vec<Arc<imap::cache::Cache>> {
        let mut caches: Vec<Arc<imap::cache::Cache>> = Vec::new();
        for tx in &self.imap {
            if let Some(c) = &tx.borrow().cache
                && !caches.iter().any(|k| Arc::ptr_eq(k, c))
            {
                caches.push(c.clone());
            }
        }
        caches
    }

    async fn reload(&self) -> Result<String, ServeError> {
        let keys_dir = self.keys_dir.clone();
        let seal = self.seal.clone();
        let unlock = self.keys.as_ref().map(|k| k.unlock.clone());
        let sweep_unlock = unlock.clone().filter(|_| self.sweep.is_some());
        let (active, sealer, unlocked, for_sweep) = tokio::task::spawn_blocking(move || {
            let keyring = Keyring::load(&keys_dir)?;
            let active = keyring.active()?.id.clone();
            let sealer = crate::keys::sealer(&keyring, &seal)?;
            let unlocked = unlock.map(|u| u()).transpose()?;
            // The sweep's own copy (the proxy's is consumed by LiveKeys).
            let for_sweep = sweep_unlock.map(|u| u()).transpose()?;
            Ok::<_, KeyError>((active, sealer, unlocked, for_sweep))
        })
        .await
        .map_err(|e| ServeError::Reload(e.to_string()))??;
        if let Some(u) = &for_sweep
            && !u.identities().any(|(id, _)| id == active)
        {
            return Err(ServeError::Reload(format!(
                "the active epoch {active} could not be unlocked"
            )));
        }
        let (Some(keys), Some(unlocked)) = (&self.keys, unlocked) else {
            return Ok(format!("active epoch {active}"));
        };
        if !unlocked.identities().any(|(id, _)| id == active) {
            return Err(ServeError::Reload(format!(
                "the active epoch {active} could not be unlocked"
            )));
        }
        let added = keys.live.add(unlocked);
        if !added.is_empty() {
            for cache in self.caches() {
                // Key derivation only (HKDF per epoch): no scrypt here.
                if let Err(e) = cache.keyring_grown(keys.live.as_ref()) {
                    tracing::warn!(error = %e, "cache keys not renewed: new epochs are not cached");
                }
            }
        }
        if let (Some(tx), Some(unlocked)) = (&self.sweep, for_sweep) {
            tx.send_replace(Arc::new(crate::sweep::SweepKeys {
                sealer: sealer.clone(),
                unlocked: Arc::new(unlocked),
            }));
        }
        for tx in &self.imap {
            tx.send_modify(|shared| {
                let mut next = (**shared).clone();
                next.sealer = sealer.clone();
                *shared = Arc::new(next);
            });
        }
        Ok(format!(
            "active epoch {active}, {} epoch(s) added ({})",
            added.len(),
            added.join(", ")
        ))
    }
}

/// The provider's IMAP (for the proxy and the sweep): `[provider.imap]`,
/// plaintext only to a loopback address.
async fn provider_imap(config: &Config) -> Result<imap::upstream::Target, ServeError> {
    let upstream = config
        .provider
        .imap
        .as_ref()
        .ok_or_else(|| ServeError::Config("[provider.imap] is missing".into()))?;
    if upstream.security == UpstreamSecurity::Plain
        && !crate::tls::resolve_is_loopback(&upstream.address).await?
    {
        return Err(ServeError::Config(format!(
            "provider.imap.address {} is not loopback: security = \"plain\" is refused",
            upstream.address
        )));
    }
    Ok(imap::upstream::Target::from_config(upstream)
        .map_err(imap::upstream::UpstreamError::from)?)
}

/// Tells the service manager (systemd `Type=notify`) what writ is doing;
/// nothing when `NOTIFY_SOCKET` is unset.
fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

/// `/healthz`: the keyring is readable with an active epoch, the IMAP
/// proxy holds that epoch's key (after `writ keys rotate` the relay seals
/// to the new epoch at once, and the proxy opens it only once a SIGHUP
/// reload succeeded), and the provider answers with a greeting.
struct RelayHealth {
    keys_dir: PathBuf,
    /// The IMAP proxy's unlocked epochs (`None`: no IMAP listeners).
    live: Option<Arc<LiveKeys>>,
    target: Option<Target>,
    imap: Option<imap::upstream::Target>,
}

impl Health for RelayHealth {
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            let keyring = Keyring::load(&self.keys_dir).map_err(|e| e.to_string())?;
            let active = keyring.active().map_err(|e| e.to_string())?;
            if let Some(live) = &self.live
                && !live.holds(&active.id)
            {
                return Err(format!(
                    "the IMAP proxy cannot open mail sealed to the active epoch {}: \
                     reload writ (SIGHUP) after `writ keys rotate`, and see its log if \
                     the reload failed",
                    active.id
                ));
            }
            if let Some(target) = &self.target {
                let up = Upstream::connect(target)
                    .await
                    .map_err(|e| format!("provider unreachable: {e}"))?;
                up.quit().await;
            }
            if let Some(target) = &self.imap {
                imap::upstream::Upstream::connect(target)
                    .await
                    .map_err(|e| format!("provider IMAP unreachable: {e}"))?;
            }
            Ok(())
        })
    }
}

/// Everything checked and bound, ready to run.
pub struct Server {
    listeners: Vec<Listener>,
    imap_listeners: Vec<imap::listener::Listener>,
    admin: Option<(TcpListener, Arc<dyn Health>, Option<ProxyProtocol>)>,
    /// Where each listener is bound (for logs and tests).
    pub addresses: Vec<(ListenerKind, SocketAddr)>,
    pub imap_addresses: Vec<(ImapListenerKind, SocketAddr)>,
    reloader: Reloader,
    sweep: Option<crate::sweep::Prepared>,
}

type SmtpParts = (Vec<Listener>, Vec<(ListenerKind, SocketAddr)>, Target);
type ImapParts = (
    Vec<imap::listener::Listener>,
    Vec<(ImapListenerKind, SocketAddr)>,
    imap::upstream::Target,
    Vec<watch::Sender<Arc<imap::connection::Shared>>>,
);

/// A listener's PROXY protocol settings (`None`: off).
fn proxy_protocol(config: &Config, from: &[String]) -> Result<Option<ProxyProtocol>, ServeError> {
    if let Some(p) = config.serve.problems().into_iter().next() {
        return Err(ServeError::Config(p));
    }
    let timeout = Duration::from_secs(config.serve.proxy_header_timeout_secs);
    ProxyProtocol::new(from, timeout).map_err(ServeError::Config)
}

fn label(kind: ListenerKind) -> &'static str {
    match kind {
        ListenerKind::Submission => "submission",
        ListenerKind::Submissions => "submissions",
        ListenerKind::Relay => "relay",
    }
}

impl Server {
    /// Validates the configuration and binds every socket. `keys` is the
    /// unlocked keyring, needed by the IMAP proxy (the relay seals with
    /// public keys only), and how to unlock it again on SIGHUP.
    pub async fn prepare(
        config: &Config,
        keys_dir: PathBuf,
        keys: Option<OpenKeys>,
    ) -> Result<Server, ServeError> {
        if config.smtp.listeners.is_empty()
            && config.imap.listeners.is_empty()
            && !config.sweep.enabled
        {
            return Err(ServeError::Nothing);
        }
        let (listeners, addresses, target) = if config.smtp.listeners.is_empty() {
            (Vec::new(), Vec::new(), None)
        } else {
            let (l, a, t) = Self::prepare_smtp(config, &keys_dir).await?;
            (l, a, Some(t))
        };
        let (imap_listeners, imap_addresses, imap_target, imap_shared) =
            if config.imap.listeners.is_empty() {
                (Vec::new(), Vec::new(), None, Vec::new())
            } else {
                let keys = keys.as_ref().ok_or_else(|| {
                    ServeError::Config(
                        "the IMAP proxy opens sealed mail: it needs the keyring passphrase".into(),
                    )
                })?;
                let shared_keys: SharedKeys = keys.live.clone();
                let (l, a, t, s) = Self::prepare_imap(config, &keys_dir, shared_keys).await?;
                (l, a, Some(t), s)
            };
        let (sweep, sweep_keys) = if config.sweep.enabled {
            let (s, k) = Self::prepare_sweep(config, &keys_dir, keys.as_ref()).await?;
            (Some(s), Some(k))
        } else {
            (None, None)
        };
        let admin = match config.serve.admin_listen {
            Some(address) => {
                let socket = TcpListener::bind(address)
                    .await
                    .map_err(|source| ServeError::Bind { address, source })?;
                let health: Arc<dyn Health> = Arc::new(RelayHealth {
                    keys_dir: keys_dir.clone(),
                    live: keys.as_ref().map(|k| k.live.clone()),
                    target,
                    imap: imap_target,
                });
                let proxy = proxy_protocol(config, &config.serve.admin_proxy_protocol_from)?;
                Some((socket, health, proxy))
            }
            None => None,
        };
        Ok(Server {
            listeners,
            imap_listeners,
            admin,
            addresses,
            imap_addresses,
            reloader: Reloader {
                keys_dir,
                seal: config.seal.clone(),
                keys,
                imap: imap_shared,
                sweep: sweep_keys,
            },
            sweep,
        })
    }

    /// The sweep, checked: it seals with the active epoch and reads its
    /// copies back, so it needs the unlocked keyring (unlocked once more
    /// here, on a blocking thread: the proxy's keys are not shared).
    async fn prepare_sweep(
        config: &Config,
        keys_dir: &Path,
        keys: Option<&OpenKeys>,
    ) -> Result<
        (
            crate::sweep::Prepared,
            watch::Sender<Arc<crate::sweep::SweepKeys>>,
        ),
        ServeError,
    > {
        if let Some(p) = config
            .sweep
            .problems(&config.provider)
            .into_iter()
            .chain(config.jobs.problems())
            .next()
        {
            return Err(ServeError::Config(p));
        }
        let keys = keys.ok_or_else(|| {
            ServeError::Config(
                "the sweep reads its sealed copies back: it needs the keyring passphrase".into(),
            )
        })?;
        let target = provider_imap(config).await?;
        let keyring = Keyring::load(keys_dir)?;
        keyring.active()?;
        let sealer = crate::keys::sealer(&keyring, &config.seal)?;
        let unlock = keys.unlock.clone();
        let unlocked = tokio::task::spawn_blocking(move || unlock())
            .await
            .map_err(|e| ServeError::Sweep(e.to_string()))??;
        let (tx, rx) = watch::channel(Arc::new(crate::sweep::SweepKeys {
            sealer,
            unlocked: Arc::new(unlocked),
        }));
        // Checkpoints and leases: `[sweep] dir`, or the shared database.
        // Its settings are checked now; the database is connected on the
        // sweep's thread, so one that is down does not stop the listeners.
        let checkpoints = crate::state::CheckpointBackend::open(
            &config.state,
            &config.sweep.dir,
            &config.jobs.dir,
        )?;
        let sweep = crate::sweep::Prepared {
            config: config.sweep.clone(),
            target,
            keys: rx,
            checkpoints,
            jobs: config.jobs.clone(),
            grace: Duration::from_secs(config.serve.grace_secs),
        };
        Ok((sweep, tx))
    }

    /// The SMTP relay's listeners, checked and bound.
    async fn prepare_smtp(config: &Config, keys_dir: &Path) -> Result<SmtpParts, ServeError> {
        let keys_dir = keys_dir.to_path_buf();
        let smtp = &config.smtp;
        if let Some(p) = smtp.problems(&config.provider).into_iter().next() {
            return Err(ServeError::Config(p));
        }
        // The relay seals with public keys only; the keyring must exist and
        // have an active epoch now, not at the first message.
        let keyring = Keyring::load(&keys_dir)?;
        keyring.active()?;
        let policy = Arc::new(Policy::from_config(smtp)?);
        let acceptor = match (&smtp.tls_cert, &smtp.tls_key) {
            (Some(c), Some(k)) => Some(crate::tls::acceptor(c, k)?),
            _ => None,
        };
        let upstream_cfg = config
            .provider
            .smtp
            .as_ref()
            .ok_or_else(|| ServeError::Config("[provider.smtp] is missing".into()))?;
        if upstream_cfg.security == UpstreamSecurity::Plain
            && !crate::tls::resolve_is_loopback(&upstream_cfg.address).await?
        {
            return Err(ServeError::Config(format!(
                "provider.smtp.address {} is not loopback: security = \"plain\" is refused",
                upstream_cfg.address
            )));
        }
        let target = Target::from_config(upstream_cfg, &smtp.hostname)?;
        // One pool of idle provider connections for every relay listener.
        let pool = (smtp.provider_pool_size > 0).then(|| {
            Pool::start(
                smtp.provider_pool_size,
                Duration::from_secs(smtp.provider_pool_idle_secs.max(1)),
            )
        });
        if let Some(p) = config.scanner.problems().into_iter().next() {
            return Err(ServeError::Config(p));
        }
        let scanner = crate::smtp::scanner::Scanner::from_config(&config.scanner).map(Arc::new);
        if let Some(p) = config.auth.problems().into_iter().next() {
            return Err(ServeError::Config(p));
        }
        let auth = crate::smtp::inbound_auth::InboundAuth::from_config(
            &config.auth,
            &smtp.hostname,
            &keys_dir,
        )
        .map_err(|e| ServeError::Config(e.to_string()))?
        .map(Arc::new);
        let mut listeners = Vec::new();
        let mut addresses = Vec::new();
        // The limits count the sessions of all SMTP listeners together.
        let sessions = Arc::new(tokio::sync::Semaphore::new(smtp.max_sessions));
        let per_ip = crate::net::PerIp::new(smtp.ipv6_prefix_per_ip);
        for l in &smtp.listeners {
            let socket = TcpListener::bind(l.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    address: l.listen,
                    source,
                })?;
            let bound = socket.local_addr().unwrap_or(l.listen);
            addresses.push((l.kind, bound));
            let allowed = l
                .allowed_networks
                .iter()
                .map(|n| Network::parse(n).map_err(ServeError::Config))
                .collect::<Result<Vec<_>, _>>()?;
            let shared = Arc::new(Shared {
                session: SessionConfig {
                    kind: l.kind,
                    hostname: smtp.hostname.clone(),
                    max_message_size: smtp.max_message_size,
                    max_recipients: smtp.max_recipients,
                    tls_available: acceptor.is_some(),
                },
                policy: policy.clone(),
                target: target.clone(),
                acceptor: acceptor.clone(),
                keys_dir: keys_dir.clone(),
                org_sealer: Default::default(),
                seal: config.seal.clone(),
                max_line_length: smtp.max_line_length,
                command_timeout: Duration::from_secs(smtp.command_timeout_secs.max(1)),
                data_timeout: Duration::from_secs(smtp.data_timeout_secs.max(1)),
                data_max: Duration::from_secs(smtp.data_max_secs.max(1)),
                provider_keepalive: Duration::from_secs(smtp.provider_keepalive_secs.max(1)),
                listener: label(l.kind),
                pool: pool.clone().filter(|_| l.kind == ListenerKind::Relay),
                scanner: scanner
                    .as_ref()
                    .filter(|s| l.kind == ListenerKind::Relay || s.submission)
                    .cloned(),
                // Inbound authentication: the MX path only (relay listeners).
                auth: auth
                    .as_ref()
                    .filter(|_| l.kind == ListenerKind::Relay)
                    .cloned(),
            });
            listeners.push(Listener {
                socket,
                shared,
                implicit_tls: l.kind == ListenerKind::Submissions,
                allowed,
                proxy: proxy_protocol(config, &l.proxy_protocol_from)?,
                sessions: sessions.clone(),
                max_per_ip: smtp.max_sessions_per_ip,
                per_ip: per_ip.clone(),
                grace: Duration::from_secs(config.serve.grace_secs),
            });
        }
        Ok((listeners, addresses, target))
    }

    /// The IMAP proxy's listeners, checked and bound.
    async fn prepare_imap(
        config: &Config,
        keys_dir: &Path,
        keys: SharedKeys,
    ) -> Result<ImapParts, ServeError> {
        let imap = &config.imap;
        if let Some(p) = imap.problems(&config.provider).into_iter().next() {
            return Err(ServeError::Config(p));
        }
        // Opening sealed mail needs the keyring; it must exist now.
        let keyring = Keyring::load(keys_dir)?;
        keyring.active()?;
        let sealer = crate::keys::sealer(&keyring, &config.seal)?;
        let (Some(cert), Some(key)) = (&imap.tls_cert, &imap.tls_key) else {
            return Err(ServeError::Config(
                "imap.tls_cert and imap.tls_key are required".into(),
            ));
        };
        let acceptor = crate::tls::acceptor(cert, key)?;
        let target = provider_imap(config).await?;
        // A cache that cannot be opened (in use by another writ, its
        // directory unwritable, the disk full) is a cache lost: the proxy
        // and the relay are served without it, and the log says why.
        let cache = if imap.cache {
            match imap::cache::Cache::open_bounded(
                &imap.cache_dir,
                imap.cache_max_bytes,
                imap.cache_memory_bytes,
                keys.as_ref(),
            ) {
                Ok(cache) => Some(Arc::new(cache)),
                Err(e) => {
                    tracing::error!(error = %e, "IMAP cache not used: every folder is opened anew");
                    None
                }
            }
        } else {
            None
        };
        let mut listeners = Vec::new();
        let mut addresses = Vec::new();
        let mut senders = Vec::new();
        // The limits count the sessions of all IMAP listeners together.
        let sessions = Arc::new(tokio::sync::Semaphore::new(imap.max_sessions));
        let (per_ip, prelogin) = (
            crate::net::PerIp::new(imap.ipv6_prefix_per_ip),
            crate::net::PerIp::new(imap.ipv6_prefix_per_ip),
        );
        for l in &imap.listeners {
            let socket = TcpListener::bind(l.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    address: l.listen,
                    source,
                })?;
            addresses.push((l.kind, socket.local_addr().unwrap_or(l.listen)));
            let shared = Arc::new(imap::connection::Shared {
                target: target.clone(),
                acceptor: acceptor.clone(),
                starttls_listener: l.kind == ImapListenerKind::Imap,
                allow_plaintext_auth: imap.allow_plaintext_auth,
                max_literal_size: imap.max_literal_size,
                login_timeout: Duration::from_secs(imap.login_timeout_secs),
                idle_timeout: Duration::from_secs(imap.idle_timeout_secs),
                listener: match l.kind {
                    ImapListenerKind::Imap => "imap",
                    ImapListenerKind::Imaps => "imaps",
                },
                keys: keys.clone(),
                sealer: sealer.clone(),
                cache: cache.clone(),
            });
            let (tx, shared) = watch::channel(shared);
            senders.push(tx);
            listeners.push(imap::listener::Listener {
                socket,
                shared,
                implicit_tls: l.kind == ImapListenerKind::Imaps,
                sessions: sessions.clone(),
                max_sessions_per_ip: imap.max_sessions_per_ip,
                max_prelogin_per_ip: imap.max_prelogin_per_ip,
                per_ip: per_ip.clone(),
                prelogin: prelogin.clone(),
                proxy: proxy_protocol(config, &l.proxy_protocol_from)?,
                grace: Duration::from_secs(config.serve.grace_secs),
            });
        }
        Ok((listeners, addresses, target, senders))
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully.
    pub async fn run(self) -> Result<(), ServeError> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signals)?;
        let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Signals)?;
        let mut hup = signal(SignalKind::hangup()).map_err(ServeError::Signals)?;
        let (tx, rx) = watch::channel(false);
        let handle = admin::install_metrics().map_err(|e| ServeError::Admin(e.to_string()))?;
        let mut tasks = tokio::task::JoinSet::new();
        for (kind, addr) in &self.addresses {
            tracing::info!(listener = label(*kind), %addr, "SMTP listener ready");
        }
        for (kind, addr) in &self.imap_addresses {
            tracing::info!(listener = ?kind, %addr, "IMAP listener ready");
        }
        for l in self.listeners {
            tasks.spawn(l.run(rx.clone()));
        }
        for l in self.imap_listeners {
            tasks.spawn(l.run(rx.clone()));
        }
        if let Some(sweep) = self.sweep {
            let finished = sweep
                .start(rx.clone())
                .map_err(|e| ServeError::Sweep(format!("cannot start its thread: {e}")))?;
            tasks.spawn(async move {
                let _ = finished.await;
            });
        }
        if let Some((socket, health, proxy)) = self.admin {
            let mut arx = rx.clone();
            if let Ok(addr) = socket.local_addr() {
                tracing::info!(%addr, "admin endpoint ready");
            }
            tasks.spawn(async move {
                let stop = async move {
                    let _ = arx.changed().await;
                };
                if let Err(e) = admin::serve_behind(socket, handle, health, proxy, stop).await {
                    tracing::error!(error = %e, "admin endpoint failed");
                }
            });
        }
        // Every socket was bound (and listening) in `prepare`: connections
        // are accepted from here on.
        notify(&[sd_notify::NotifyState::Ready]);
        loop {
            tokio::select! {
                _ = term.recv() => {
                    tracing::info!("SIGTERM: shutting down");
                    break;
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT: shutting down");
                    break;
                }
                _ = hup.recv() => {
                    let mut reloading = vec![sd_notify::NotifyState::Reloading];
                    reloading.extend(sd_notify::NotifyState::monotonic_usec_now().ok());
                    notify(&reloading);
                    match self.reloader.reload().await {
                        Ok(what) => tracing::info!(keyring = %what, "SIGHUP: keyring reloaded"),
                        Err(e) => tracing::error!(
                            error = %e,
                            "SIGHUP: keyring not reloaded; the keys in use are kept"
                        ),
                    }
                    notify(&[sd_notify::NotifyState::Ready]);
                }
            }
        }
        notify(&[sd_notify::NotifyState::Stopping]);
        let _ = tx.send(true);
        while tasks.join_next().await.is_some() {}
        // The IMAP cache's rows still in memory go to its index now: a job
        // of the opening pool may hold the cache when the process exits,
        // and then its drop (which flushes too) never runs.
        let caches = self.reloader.caches();
        let _ = tokio::task::spawn_blocking(move || caches.iter().for_each(|c| c.flush())).await;
        tracing::info!("stopped");
        Ok(())
    }
}
