//! Inbound mail authentication (`[auth]`, relay listeners): SPF, DKIM,
//! DMARC and an ARC chain already on the message are verified with the
//! `mail-auth` crate on the plaintext *before* it is sealed (sealing
//! changes the body, so the provider can no longer verify the sender's
//! DKIM signature), and the outcome leads the message as an
//! `Authentication-Results` field of writ's authserv-id, which stays in the
//! outer header (FORMAT.md §5).
//!
//! - DNS goes to `[auth] dns_servers` (the system's resolvers when empty)
//!   through hickory: each query `dns_timeout_secs`, tried twice; the
//!   whole verification of a message, the wait for a verification slot
//!   included, `timeout_secs`. A stage that runs out of time is recorded
//!   `temperror` and the message delivered (a DMARC `temperror` is never
//!   refused).
//! - Caps on what a message makes writ do (hostile messages carry hundreds
//!   of signatures): the first [`MAX_DKIM_SIGNATURES`] DKIM-Signature
//!   fields (10) are verified, the rest are not looked at (recorded
//!   nowhere, as RFC 6376 §6.1 allows); a message with more than
//!   [`MAX_ARC_SETS`] ARC sets (16) has its chain recorded `arc=fail`
//!   without any lookup, and writ's own ARC set then seals `cv=fail`.
//!   Signatures with `l=` are not honoured (`neutral`). At most
//!   [`MAX_CONCURRENT`] (64) verifications run at once; each runs on a
//!   blocking thread (parsing and body hashing are CPU work over the whole
//!   message; its DNS waits are driven by the runtime's I/O), never on a
//!   runtime thread. Body hashes: at most 4 passes (canonicalisation ×
//!   hash algorithm).
//! - DMARC (`[auth] dmarc`): `off` (not evaluated), `monitor` (recorded),
//!   `enforce`: a failure under `p=reject` is refused `550 5.7.1` before
//!   anything reaches the provider; under `p=quarantine` the message is
//!   marked `X-DMARC-Quarantine: yes` (outer header). `pct=` is not
//!   sampled (every failing message is acted on); a passing ARC chain does
//!   not override the policy.
//! - Logs name results and domains, never message content.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mail_auth::common::headers::HeaderWriter;
use mail_auth::dmarc::Policy;
use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
};
use mail_auth::hickory_resolver::system_conf::read_system_conf;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput,
    DmarcResult, DnsError, Error, MessageAuthenticator, SpfOutput, SpfResult,
    dmarc::verify::DmarcParameters,
};
use tokio::sync::Semaphore;

use super::arc_seal::ArcSigner;
use super::reply::Reply;
use crate::config::{AuthConfig, DmarcAction, parse_dns_server};

/// DKIM-Signature fields verified per message (10); later ones are not.
pub const MAX_DKIM_SIGNATURES: usize = 10;
/// ARC sets verified per message (16); a longer chain is `arc=fail`
/// without lookups (RFC 8617 allows 50).
pub const MAX_ARC_SETS: usize = 16;
/// Verifications running at once (64); more wait, within `timeout_secs`.
pub const MAX_CONCURRENT: usize = 64;

/// What writ adds and does after verifying one message.
#[derive(Debug)]
pub struct Judgement {
    /// Fields to lead the message (CRLF-terminated): Authentication-Results,
    /// and `X-DMARC-Quarantine` when marked.
    pub fields: Vec<u8>,
    /// DMARC `p=reject` under `enforce`: refuse with this; nothing is
    /// delivered.
    pub refuse: Option<Reply>,
    /// What writ's ARC set needs; `None`: the message is not ARC-sealed.
    pub arc: Option<ArcInput>,
    /// For metrics and logs: the DMARC result word and the action.
    pub dmarc: &'static str,
    pub action: &'static str,
}

/// The verification's results as writ's ARC set records them.
#[derive(Debug)]
pub struct ArcInput {
    /// The ARC-Authentication-Results content (writ's authserv-id and
    /// results).
    pub results: AuthenticationResults<'static>,
    /// The incoming chain's validation (`None` when there was no chain).
    pub chain: DkimResult,
    /// The incoming chain had more sets than writ verifies: seal `cv=fail`
    /// is still possible, but the sets in the message are not used.
    pub chain_too_long: bool,
}

/// `[auth]`, ready to use.
pub struct InboundAuth {
    resolver: MessageAuthenticator,
    /// Leaked once per server start (the AuthenticationResults type
    /// borrows it for as long as a message's results live).
    authserv_id: &'static str,
    dmarc: DmarcAction,
    timeout: Duration,
    pub max_message: u64,
    permits: Arc<Semaphore>,
    pub arc: Option<Arc<ArcSigner>>,
}

/// The SMTP identities of the message being judged.
pub struct Identities {
    pub client: IpAddr,
    pub helo: String,
    pub mail_from: String,
}

/// Why `[auth]` cannot start. One line, saying the fix.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error("auth: cannot read the system's DNS configuration ({0}); set [auth] dns_servers")]
    SystemDns(String),
    #[error("auth.dns_servers: `{0}` is not ip or ip:port")]
    DnsServer(String),
    #[error(transparent)]
    Arc(#[from] super::arc_seal::ArcKeyError),
}

impl InboundAuth {
    /// `None` when `[auth]` is off. `hostname` is the default authserv-id;
    /// `keys_dir` anchors a relative `[auth.arc] key_file`.
    pub fn from_config(
        cfg: &AuthConfig,
        hostname: &str,
        keys_dir: &std::path::Path,
    ) -> Result<Option<InboundAuth>, AuthSetupError> {
        if !cfg.enabled {
            return Ok(None);
        }
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_secs(cfg.dns_timeout_secs.clamp(1, 30));
        opts.attempts = 2;
        let resolver = if cfg.dns_servers.is_empty() {
            // The system's servers, with writ's bounds on each query.
            let (config, mut system) =
                read_system_conf().map_err(|e| AuthSetupError::SystemDns(e.to_string()))?;
            system.timeout = opts.timeout;
            system.attempts = opts.attempts;
            MessageAuthenticator::new(config, system)
                .map_err(|e| AuthSetupError::SystemDns(e.to_string()))?
        } else {
            let mut servers = Vec::new();
            for s in &cfg.dns_servers {
                let addr: SocketAddr =
                    parse_dns_server(s).ok_or_else(|| AuthSetupError::DnsServer(s.clone()))?;
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                servers.push(NameServerConfig::new(addr.ip(), true, vec![udp, tcp]));
            }
            MessageAuthenticator::new(ResolverConfig::from_name_servers(servers), opts.clone())
                .map_err(|e| AuthSetupError::SystemDns(e.to_string()))?
        };
        let id = cfg
            .authserv_id
            .clone()
            .unwrap_or_else(|| hostname.to_string());
        let arc = if cfg.arc.enabled {
            Some(Arc::new(ArcSigner::from_config(&cfg.arc, keys_dir)?))
        } else {
            None
        };
        Ok(Some(InboundAuth {
            resolver,
            authserv_id: Box::leak(id.into_boxed_str()),
            dmarc: cfg.dmarc,
            timeout: Duration::from_secs(cfg.timeout_secs.clamp(1, 120)),
            max_message: cfg.max_message_bytes,
            permits: Arc::new(Semaphore::new(MAX_CONCURRENT)),
            arc,
        }))
    }

    pub fn authserv_id(&self) -> &str {
        self.authserv_id
    }

    /// The Authentication-Results field for a message that was not
    /// verified (`why`: a short reason, written as a comment).
    pub fn unverified(&self, why: &str) -> Vec<u8> {
        format!(
            "Authentication-Results: {}; none ({why})\r\n",
            self.authserv_id
        )
        .into_bytes()
    }

    /// Verifies `message` (handed back with the judgement), all within
    /// `timeout_secs`, on a blocking thread.
    pub async fn judge(
        self: &Arc<Self>,
        message: Vec<u8>,
        who: Identities,
    ) -> (Vec<u8>, Judgement) {
        let deadline = Instant::now() + self.timeout;
        let Ok(Ok(permit)) =
            tokio::time::timeout(self.timeout, self.permits.clone().acquire_owned()).await
        else {
            let judgement = self.timed_out();
            return (message, judgement);
        };
        let me = self.clone();
        let handle = tokio::runtime::Handle::current();
        let shared = Arc::new(message);
        let for_job = shared.clone();
        let job = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            handle.block_on(me.verify(&for_job, &who, deadline))
        });
        let judgement = job.await.unwrap_or_else(|_| self.timed_out());
        let message = Arc::try_unwrap(shared).unwrap_or_else(|m| (*m).clone());
        (message, judgement)
    }

    fn timed_out(&self) -> Judgement {
        Judgement {
            fields: format!(
                "Authentication-Results: {}; spf=temperror; dkim=temperror; dmarc=temperror (verification timed out)\r\n",
                self.authserv_id
            )
            .into_bytes(),
            refuse: None,
            arc: None,
            dmarc: "temperror",
            action: "timeout",
        }
    }

    /// The verification itself (CPU work here runs on the caller's
    /// blocking thread; DNS waits are bounded by `deadline`).
    async fn verify(&self, raw: &[u8], who: &Identities, deadline: Instant) -> Judgement {
        let Some(mut message) = AuthenticatedMessage::parse(raw) else {
            return Judgement {
                fields: self.unverified("no header"),
                refuse: None,
                arc: None,
                dmarc: "none",
                action: "deliver",
            };
        };
        cap_signatures(&mut message);
        let left = || deadline.saturating_duration_since(Instant::now());
        let helo = who.helo.as_str();
        let mail_from = who.mail_from.as_str();
        let spf_domain = mail_from.rsplit_once('@').map_or(helo, |(_, d)| d);

        let spf = tokio::time::timeout(
            left(),
            self.resolver.verify_spf(SpfParameters::verify(
                who.client,
                helo,
                self.authserv_id,
                mail_from,
            )),
        )
        .await
        .unwrap_or_else(|_| {
            SpfOutput::new(spf_domain.to_string()).with_result(SpfResult::TempError)
        });

        let dkim: Vec<DkimOutput<'_>> =
            match tokio::time::timeout(left(), self.resolver.verify_dkim(&message)).await {
                Ok(out) => out,
                Err(_) => message
                    .dkim_headers
                    .iter()
                    .map(|h| DkimOutput::temp_err(timed_out()).with_signature(&h.header))
                    .collect(),
            };

        let chain_too_long = message.as_headers.len() > MAX_ARC_SETS;
        let arc = self.arc_stage(&message, chain_too_long, left()).await;
        let dmarc = self
            .dmarc_stage(&message, &dkim, spf_domain, &spf, left())
            .await;
        let mut results = AuthenticationResults::new(self.authserv_id)
            .with_dkim_results(&dkim, message.from())
            .with_spf_mailfrom_result(&spf, who.client, mail_from, helo)
            .with_arc_result(&arc, who.client);
        if let Some(d) = &dmarc {
            results = results.with_dmarc_result(d);
        }
        let mut fields = results.to_header().into_bytes();
        let (word, action, refuse) = match &dmarc {
            None => ("off", "deliver", None),
            Some(d) => self.dmarc_action(d, &mut fields),
        };
        tracing::info!(
            spf = %spf.result(),
            dkim = dkim.iter().filter(|d| d.result() == &DkimResult::Pass).count(),
            dkim_signatures = dkim.len(),
            arc = ?arc.result(),
            dmarc = word,
            action,
            from_domain = dmarc.as_ref().map(|d| d.domain()).unwrap_or(""),
            "message authenticated"
        );
        let chain = arc.result().clone();
        Judgement {
            fields,
            refuse,
            arc: self.arc.as_ref().map(|_| ArcInput {
                results,
                chain,
                chain_too_long,
            }),
            dmarc: word,
            action,
        }
    }

    /// The incoming ARC chain, within `left`; a chain past [`MAX_ARC_SETS`]
    /// is `fail` without lookups.
    async fn arc_stage<'x>(
        &self,
        message: &'x AuthenticatedMessage<'x>,
        chain_too_long: bool,
        left: Duration,
    ) -> ArcOutput<'x> {
        if chain_too_long {
            return ArcOutput::default().with_result(DkimResult::Fail(Error::Arc(
                mail_auth::arc::ArcError::ChainTooLong,
            )));
        }
        match tokio::time::timeout(left, self.resolver.verify_arc(message)).await {
            Ok(out) => out,
            Err(_) => ArcOutput::default().with_result(DkimResult::TempError(timed_out())),
        }
    }

    /// DMARC (unless `off`), within `left`.
    async fn dmarc_stage<'x>(
        &self,
        message: &'x AuthenticatedMessage<'x>,
        dkim: &'x [DkimOutput<'x>],
        spf_domain: &'x str,
        spf: &'x SpfOutput,
        left: Duration,
    ) -> Option<DmarcOutput> {
        if self.dmarc == DmarcAction::Off {
            return None;
        }
        let out = tokio::time::timeout(
            left,
            self.resolver
                .verify_dmarc(DmarcParameters::new(message, dkim, spf_domain, spf)),
        )
        .await
        .unwrap_or_else(|_| {
            DmarcOutput::default()
                .with_spf_result(DmarcResult::TempError(timed_out()))
                .with_dkim_result(DmarcResult::TempError(timed_out()))
        });
        Some(out)
    }

    /// What `[auth] dmarc` does with a DMARC outcome; appends the
    /// quarantine mark to `fields` when marked.
    fn dmarc_action(
        &self,
        d: &DmarcOutput,
        fields: &mut Vec<u8>,
    ) -> (&'static str, &'static str, Option<Reply>) {
        let result = d.result();
        let word = match &result {
            DmarcResult::Pass => "pass",
            DmarcResult::Fail(_) => "fail",
            DmarcResult::TempError(_) => "temperror",
            DmarcResult::PermError(_) => "permerror",
            DmarcResult::None => "none",
        };
        if self.dmarc != DmarcAction::Enforce || !matches!(result, DmarcResult::Fail(_)) {
            return (word, "deliver", None);
        }
        match d.policy() {
            Policy::Reject => (
                word,
                "reject",
                Some(Reply::new(
                    550,
                    "5.7.1 Message rejected: it fails the DMARC policy (p=reject) of its From domain",
                )),
            ),
            Policy::Quarantine => {
                let domain: String = d
                    .domain()
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                    .take(253)
                    .collect();
                fields.extend_from_slice(
                    format!("X-DMARC-Quarantine: yes; header.from={domain}\r\n").as_bytes(),
                );
                (word, "quarantine", None)
            }
            Policy::None | Policy::Unspecified => (word, "deliver", None),
        }
    }
}

/// The error a stage that ran out of time records (`temperror`).
fn timed_out() -> Error {
    Error::Dns(DnsError::Resolver("timed out".into()))
}

/// Applies the signature caps to a parsed message: the first
/// [`MAX_DKIM_SIGNATURES`] DKIM signatures (malformed ones included) are
/// kept; a chain past [`MAX_ARC_SETS`] is dropped from the parse (it is
/// judged `fail` without lookups).
fn cap_signatures(message: &mut AuthenticatedMessage<'_>) {
    message.dkim_headers.truncate(MAX_DKIM_SIGNATURES);
    let room = MAX_DKIM_SIGNATURES.saturating_sub(message.dkim_headers.len());
    let mut dkim_errors = 0;
    message.errors.retain(|e| {
        if matches!(e.header, Error::Dkim(_) | Error::ParseError) {
            dkim_errors += 1;
            dkim_errors <= room
        } else {
            true
        }
    });
    if message.as_headers.len() > MAX_ARC_SETS {
        message.ams_headers.clear();
        message.aar_headers.clear();
        message.as_headers.truncate(MAX_ARC_SETS + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_bound_what_a_message_makes_writ_verify() {
        let mut raw = Vec::new();
        for i in 0..300 {
            raw.extend_from_slice(
                format!("DKIM-Signature: v=1; a=rsa-sha256; d=d{i}.example; s=s; h=from; bh=AAAA; b=AAAA\r\n").as_bytes(),
            );
            raw.extend_from_slice(format!("DKIM-Signature: v=1; garbage{i}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"From: a@example.com\r\n\r\nbody\r\n");
        let mut m = AuthenticatedMessage::parse(&raw).unwrap();
        assert!(m.dkim_headers.len() + m.errors.len() >= 300);
        cap_signatures(&mut m);
        let dkim_errors = m
            .errors
            .iter()
            .filter(|e| matches!(e.header, Error::Dkim(_) | Error::ParseError))
            .count();
        assert!(m.dkim_headers.len() + dkim_errors <= MAX_DKIM_SIGNATURES);
    }
}
