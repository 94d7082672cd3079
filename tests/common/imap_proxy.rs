//! `writ serve` as the IMAP proxy: [`ImapProxy`], an `imap` (STARTTLS)
//! and an `imaps` listener with a certificate of their own, in front of a
//! provider's IMAP.

use std::net::SocketAddr;

use super::provider::{User, provider};
use super::tls::{TestTls, test_tls};
use super::writ::{Writ, WritConfig, free_port};

pub struct ImapProxy {
    pub writ: Writ,
    /// The CA that signed the listeners' certificate.
    pub tls: TestTls,
    /// The `imap` listener (STARTTLS).
    pub imap: SocketAddr,
    /// The `imaps` listener (implicit TLS).
    pub imaps: SocketAddr,
}

impl ImapProxy {
    /// `[provider.imap]` lines for `upstream` in plain IMAP (on loopback).
    pub fn plain(upstream: SocketAddr) -> String {
        format!("address = \"{upstream}\"\nsecurity = \"plain\"\n")
    }

    /// Starts writ with `[provider.imap]` given as TOML lines, and
    /// `imap_options` (TOML lines) added to `[imap]`.
    pub fn start(provider_imap: &str, imap_options: &str) -> ImapProxy {
        ImapProxy::start_with_env(provider_imap, imap_options, &[])
    }

    /// As [`ImapProxy::start`], `writ serve` run with `env` added to its
    /// environment (e.g. `TOKIO_WORKER_THREADS`).
    pub fn start_with_env(
        provider_imap: &str,
        imap_options: &str,
        env: &[(&str, &str)],
    ) -> ImapProxy {
        ImapProxy::start_with(provider_imap, imap_options, env, None)
    }

    /// As [`ImapProxy::start`], `writ serve` allowed at most
    /// `max_open_files` descriptors (`RLIMIT_NOFILE`).
    pub fn start_with_open_files(
        provider_imap: &str,
        imap_options: &str,
        max_open_files: u64,
    ) -> ImapProxy {
        ImapProxy::start_with(provider_imap, imap_options, &[], Some(max_open_files))
    }

    fn start_with(
        provider_imap: &str,
        imap_options: &str,
        env: &[(&str, &str)],
        max_open_files: Option<u64>,
    ) -> ImapProxy {
        let tls = test_tls("writ IMAP test CA");
        let (imap, imaps) = (free_port(), free_port());
        let mut cfg = WritConfig::relay(provider().smtp_addr());
        cfg.listeners.clear();
        cfg.provider = None;
        cfg.extra_toml = format!(
            "[imap]\ntls_cert = {cert:?}\ntls_key = {key:?}\n{imap_options}\n\
             [[imap.listeners]]\nkind = \"imap\"\nlisten = \"127.0.0.1:{imap}\"\n\n\
             [[imap.listeners]]\nkind = \"imaps\"\nlisten = \"127.0.0.1:{imaps}\"\n\n\
             [provider.imap]\n{provider_imap}",
            cert = tls.cert.display().to_string(),
            key = tls.key.display().to_string(),
        );
        // Readiness: the admin endpoint answers only after every listener
        // is bound.
        cfg.unlock = true;
        cfg.serve_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        cfg.max_open_files = max_open_files;
        let writ = Writ::start(&cfg);
        ImapProxy {
            writ,
            tls,
            imap: SocketAddr::from(([127, 0, 0, 1], imap)),
            imaps: SocketAddr::from(([127, 0, 0, 1], imaps)),
        }
    }

    /// `message` sealed with the proxy's keyring.
    pub fn seal(&self, message: &[u8]) -> Vec<u8> {
        let keyring = ::writ::keys::Keyring::load(&self.writ.keys_dir).expect("keyring");
        let sealer =
            ::writ::keys::sealer(&keyring, &::writ::config::SealConfig::default()).expect("sealer");
        let mut sealed = Vec::new();
        sealer.seal(message, &mut sealed).expect("seal");
        sealed
    }

    /// The arguments a client script takes: the port of `direct` (the
    /// provider, for comparing) if given, the port of `listener` (one of
    /// the proxy's), the proxy's CA, then each user's name and password.
    pub fn script_args(
        &self,
        direct: Option<SocketAddr>,
        listener: SocketAddr,
        users: &[&User],
    ) -> Vec<String> {
        let mut args: Vec<String> = direct.iter().map(|d| d.port().to_string()).collect();
        args.push(listener.port().to_string());
        args.push(self.tls.ca.display().to_string());
        for user in users {
            args.push(user.name.clone());
            args.push(user.password.clone());
        }
        args
    }
}
