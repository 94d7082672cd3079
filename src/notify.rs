//! Notices about legal process, by mail through the provider (`[notify]`,
//! off by default): a disclosure request is waiting for its approvers, and
//! a disclosure has been carried out.
//!
//! Invariant: a notice names no secret and no mail. It goes to the
//! provider as plaintext (it is writ's own mail, not sealed), so it carries
//! only what identifies the event for someone who can check it at the
//! gateway: the SHA-256 of the bundle's manifest (it covers hashes of the
//! opened mail, which the provider cannot compute), the number of messages,
//! the quorum and the approvers' names, the operator. Not the request's
//! digest: it is an unsalted hash of things the provider knows or can guess
//! (case reference, account, mailbox, UIDs, the audit public key), so the
//! provider could confirm a guess of which messages are disclosed. Not the
//! case reference, not a Subject, Message-ID, account or mailbox, not a
//! passphrase or key. The recipients look the rest up with
//! `writ audit show` on the gateway.
//!
//! Sent with lettre's blocking SMTP client (the CLI is not async), over
//! `[provider.smtp]` with its security (`plain` only to loopback), its CA
//! file or else the system bundle, and its timeout for each step.

use std::path::Path;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{SmtpTransport, Transport};

use crate::config::{NotifyConfig, UpstreamConfig, UpstreamSecurity};

/// Why a notice was not sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("[notify] is enabled but {0}")]
    Config(String),
    #[error("cannot read {}: {detail}", path.display())]
    File {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error("provider.smtp.address {0} is not loopback: security = \"plain\" is refused")]
    PlainNotLoopback(String),
    #[error("the provider refused the notice or could not be reached: {0}")]
    Smtp(String),
}

/// What happened.
#[derive(Debug, Clone)]
pub enum Notice {
    /// `writ disclose request` printed a request for the approvers.
    RequestAwaitingApproval {
        quorum: usize,
        approvers: Vec<String>,
        operator: String,
    },
    /// `writ disclose` wrote a bundle (and its audit record).
    DisclosureCarriedOut {
        manifest_sha256: String,
        messages: usize,
        approvers: Vec<String>,
        operator: String,
    },
}

impl Notice {
    /// Subject and body: fixed text and the fields above only, in lines short
    /// enough (under 76 octets) to travel as 7bit text, hashes whole.
    pub fn text(&self) -> (String, String) {
        match self {
            Notice::RequestAwaitingApproval {
                quorum,
                approvers,
                operator,
            } => (
                "writ: a disclosure request awaits approval".to_string(),
                format!(
                    "A disclosure request was prepared on the writ gateway by {operator}.\r\n\
                     It needs {quorum} approval(s) from: {}.\r\n\
                     \r\n\
                     \r\n\
                     Get the request file from the administrator and approve it on your own\r\n\
                     machine with `writ approver approve` if you agree. This notice names no\r\n\
                     case, no message and no digest the provider could check a guess\r\n\
                     against; the gateway's audit log has the details.\r\n",
                    names(approvers)
                ),
            ),
            Notice::DisclosureCarriedOut {
                manifest_sha256,
                messages,
                approvers,
                operator,
            } => (
                format!(
                    "writ: a disclosure was carried out ({})",
                    short(manifest_sha256)
                ),
                format!(
                    "{operator} disclosed {messages} message(s) on the writ gateway.\r\n\
                     Approved by: {}.\r\n\
                     \r\n\
                     Manifest SHA-256:\r\n  {manifest_sha256}\r\n\
                     \r\n\
                     The bundle is signed by the gateway's audit key and recorded in its\r\n\
                     audit log (`writ audit show`). This notice names no case and no\r\n\
                     message.\r\n",
                    if approvers.is_empty() {
                        "nobody (quorum 0)".to_string()
                    } else {
                        approvers.join(", ")
                    }
                ),
            ),
        }
    }
}

fn short(sha: &str) -> &str {
    sha.get(..16).unwrap_or(sha)
}

fn names(approvers: &[String]) -> String {
    if approvers.is_empty() {
        "nobody".into()
    } else {
        approvers.join(", ")
    }
}

/// Sends `notice` to `[notify] to`; nothing when `[notify]` is off.
pub fn send(
    config: &NotifyConfig,
    provider: Option<&UpstreamConfig>,
    hostname: &str,
    notice: &Notice,
) -> Result<(), NotifyError> {
    if !config.enabled {
        return Ok(());
    }
    let provider =
        provider.ok_or_else(|| NotifyError::Config("[provider.smtp] is missing".into()))?;
    let message = build(config, notice)?;
    transport(config, provider, hostname)?
        .send(&message)
        .map_err(|e| NotifyError::Smtp(e.to_string()))?;
    Ok(())
}

fn build(config: &NotifyConfig, notice: &Notice) -> Result<Message, NotifyError> {
    let mailbox = |s: &str| {
        s.parse::<Mailbox>()
            .map_err(|_| NotifyError::Config(format!("`{s}` is not a mail address")))
    };
    let (subject, body) = notice.text();
    let mut builder = Message::builder()
        .from(mailbox(&config.from)?)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN);
    if config.to.is_empty() {
        return Err(NotifyError::Config("notify.to is empty".into()));
    }
    for to in &config.to {
        builder = builder.to(mailbox(to)?);
    }
    builder
        .body(body)
        .map_err(|e| NotifyError::Config(e.to_string()))
}

fn transport(
    config: &NotifyConfig,
    provider: &UpstreamConfig,
    hostname: &str,
) -> Result<SmtpTransport, NotifyError> {
    let host = provider.host().to_string();
    let port = provider
        .address
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .ok_or_else(|| {
            NotifyError::Config(format!(
                "provider.smtp.address {} has no port",
                provider.address
            ))
        })?;
    let tls = match provider.security {
        UpstreamSecurity::Plain => {
            if !resolves_to_loopback(&provider.address) {
                return Err(NotifyError::PlainNotLoopback(provider.address.clone()));
            }
            Tls::None
        }
        UpstreamSecurity::Starttls => Tls::Required(parameters(provider, &host)?),
        UpstreamSecurity::Implicit => Tls::Wrapper(parameters(provider, &host)?),
    };
    let timeout = Duration::from_secs(provider.timeout_secs.max(1));
    let mut builder = SmtpTransport::builder_dangerous(host)
        .port(port)
        .tls(tls)
        .timeout(Some(timeout))
        .hello_name(lettre::transport::smtp::extension::ClientId::Domain(
            hostname.to_string(),
        ));
    if let (Some(login), Some(file)) = (&config.login, &config.password_file) {
        let password = crate::keys::read_passphrase_file(file).map_err(|e| NotifyError::File {
            path: file.clone(),
            detail: e.to_string(),
        })?;
        use secrecy::ExposeSecret;
        builder = builder.credentials(Credentials::new(
            login.clone(),
            password.expose_secret().to_string(),
        ));
    }
    Ok(builder.build())
}

/// The provider's certificate is checked against its `ca_file` only, or
/// else the system bundle (as `tls::connector` does).
fn parameters(provider: &UpstreamConfig, host: &str) -> Result<TlsParameters, NotifyError> {
    let path = provider
        .ca_file
        .as_deref()
        .unwrap_or(Path::new(crate::tls::SYSTEM_CA_BUNDLE));
    let pem = std::fs::read(path).map_err(|e| NotifyError::File {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let roots = Certificate::from_pem(&pem).map_err(|e| NotifyError::File {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let name = provider
        .server_name
        .clone()
        .unwrap_or_else(|| host.to_string());
    TlsParameters::builder(name)
        .certificate_store(CertificateStore::None)
        .add_root_certificate(roots)
        .build_rustls()
        .map_err(|e| NotifyError::Smtp(e.to_string()))
}

fn resolves_to_loopback(address: &str) -> bool {
    use std::net::ToSocketAddrs;
    match address.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_carry_hashes_and_names_only() {
        let n = Notice::DisclosureCarriedOut {
            manifest_sha256: "cd".repeat(32),
            messages: 3,
            approvers: vec!["legal".into(), "dpo".into()],
            operator: "alice".into(),
        };
        let (subject, body) = n.text();
        assert!(subject.contains("cdcdcdcdcdcdcdcd"));
        assert!(body.contains("3 message(s)") && body.contains("legal, dpo"));
        let r = Notice::RequestAwaitingApproval {
            quorum: 2,
            approvers: vec!["legal".into()],
            operator: "alice".into(),
        };
        assert!(r.text().1.contains("2 approval(s) from: legal"));
    }

    #[test]
    fn off_sends_nothing_and_plain_needs_loopback() {
        let off = NotifyConfig::default();
        let n = Notice::RequestAwaitingApproval {
            quorum: 0,
            approvers: Vec::new(),
            operator: String::new(),
        };
        assert!(send(&off, None, "writ.test", &n).is_ok());
        assert!(resolves_to_loopback("127.0.0.1:25"));
        assert!(!resolves_to_loopback("192.0.2.1:25"));
    }
}
