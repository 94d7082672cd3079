//! The content scanner: rspamd's HTTP protocol (`POST /checkv2` on its
//! normal worker) for the plaintext of a message before it is sealed.
//!
//! - [`Scanner::check`] sends the whole message (at most
//!   `scanner.max_message_bytes`, the caller's job) and reads rspamd's JSON
//!   reply, at most [`MAX_REPLY`] bytes; the whole exchange is bounded by
//!   `scanner.timeout_secs`. Anything else (refused connection, timeout,
//!   a status other than 200, an unknown action, a reply past the cap) is
//!   a [`ScanError`], which the caller turns into fail-closed or fail-open.
//! - [`verdict`] is pure: rspamd's action to what the client is told and
//!   which fields lead the sealed message. Texts to the client are writ's
//!   own (never the scanner's `smtp_message`); the fields writ adds carry
//!   only the action and scores, formatted by writ, never message content.
//!   Their names ([`SCANNER_FIELDS`]) are kept in the outer header so the
//!   provider's rules can act on them (the sender's own fields of those
//!   names are removed as the message is spooled: `super::sender_fields`);
//!   Subject stays sealed (a `rewrite subject` verdict is marked with
//!   `X-Spam: Yes` instead).

use std::net::IpAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::reply::Reply;
use crate::config::{ScanFailure, ScannerConfig};

/// Largest scanner reply read (64 KiB: rspamd's JSON verdict with its
/// symbols is a few KiB); past it, the scan has failed.
pub const MAX_REPLY: usize = 64 * 1024;

/// Header fields writ adds from a verdict, copied to the outer header.
pub const SCANNER_FIELDS: &[&str] = &["x-spam", "x-spamd-result", "x-spam-action"];

/// Why there is no verdict. Never carries message content.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("cannot reach the scanner at {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("scanner HTTP exchange failed: {0}")]
    Http(String),
    #[error("scanner answered HTTP {0}")]
    Status(u16),
    #[error("scanner reply is not rspamd's checkv2 JSON: {0}")]
    Reply(String),
    #[error("scanner reply larger than {MAX_REPLY} bytes")]
    TooLarge,
    #[error("scanner gave no verdict within {0} s (scanner.timeout_secs)")]
    Timeout(u64),
}

/// What to do with a scanned message.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Deliver, with these header fields (CRLF-terminated) leading it.
    Deliver { fields: Vec<u8>, flagged: bool },
    /// Refuse with this reply (5xx or 4xx); nothing is delivered.
    Refuse(Reply),
}

/// rspamd's checkv2 reply: the parts writ reads.
#[derive(Debug, serde::Deserialize)]
pub struct CheckReply {
    pub action: String,
    #[serde(default)]
    pub score: f64,
    #[serde(default)]
    pub required_score: f64,
}

/// The scanner's configuration, ready to use.
#[derive(Debug, Clone)]
pub struct Scanner {
    address: String,
    timeout: Duration,
    pub fail_open: bool,
    pub max_message: u64,
    pub submission: bool,
}

impl Scanner {
    /// `None` when `[scanner]` is off.
    pub fn from_config(cfg: &ScannerConfig) -> Option<Scanner> {
        cfg.enabled.then(|| Scanner {
            address: cfg.address.clone(),
            timeout: Duration::from_secs(cfg.timeout_secs.clamp(1, 300)),
            fail_open: cfg.on_failure == ScanFailure::Deliver,
            max_message: cfg.max_message_bytes,
            submission: cfg.submission,
        })
    }

    /// Sends `message` to rspamd and returns its verdict, all within
    /// `scanner.timeout_secs`. `envelope` is what rspamd would see from
    /// an MTA: the client's address, HELO, MAIL FROM and RCPT TO (rspamd's
    /// `Ip`, `Helo`, `From` and `Rcpt` headers, for its SPF, reputation and
    /// per-recipient rules).
    pub async fn check(
        &self,
        message: Vec<u8>,
        envelope: &ScanEnvelope<'_>,
    ) -> Result<Verdict, ScanError> {
        let secs = self.timeout.as_secs();
        let reply = tokio::time::timeout(self.timeout, self.exchange(message, envelope))
            .await
            .map_err(|_| ScanError::Timeout(secs))??;
        verdict(&reply)
    }

    async fn exchange(
        &self,
        message: Vec<u8>,
        envelope: &ScanEnvelope<'_>,
    ) -> Result<CheckReply, ScanError> {
        let tcp = TcpStream::connect(&self.address)
            .await
            .map_err(|e| ScanError::Connect(self.address.clone(), e))?;
        let _ = tcp.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| ScanError::Http(e.to_string()))?;
        // The connection is driven here and dropped with this future (the
        // caller's timeout), so nothing outlives the exchange.
        let mut request = hyper::Request::post("/checkv2")
            .header(hyper::header::HOST, self.address.as_str())
            .header(hyper::header::CONNECTION, "close")
            .header("Ip", envelope.client.to_string());
        for (name, value) in envelope.fields() {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(message)))
            .map_err(|e| ScanError::Http(e.to_string()))?;
        let exchange = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| ScanError::Http(e.to_string()))?;
            if response.status() != hyper::StatusCode::OK {
                return Err(ScanError::Status(response.status().as_u16()));
            }
            let body = Limited::new(response.into_body(), MAX_REPLY)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        ScanError::TooLarge
                    } else {
                        ScanError::Http(e.to_string())
                    }
                })?
                .to_bytes();
            serde_json::from_slice::<CheckReply>(&body).map_err(|e| ScanError::Reply(e.to_string()))
        };
        tokio::pin!(exchange);
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            r = &mut exchange => r,
            c = &mut conn => match c {
                // The connection ended; the exchange may still hold a
                // complete reply.
                Ok(()) => exchange.await,
                Err(e) => Err(ScanError::Http(e.to_string())),
            },
        }
    }
}

/// The SMTP envelope of a scanned message, as rspamd's protocol takes it.
#[derive(Debug, Clone, Copy)]
pub struct ScanEnvelope<'a> {
    pub client: IpAddr,
    /// The EHLO/HELO domain (empty if none).
    pub helo: &'a str,
    /// The MAIL FROM reverse-path (empty for `<>`).
    pub mail_from: &'a str,
    /// The forward-paths the provider accepted.
    pub rcpt_to: &'a [String],
}

impl ScanEnvelope<'_> {
    /// `Helo`, `From` and one `Rcpt` per recipient, each only when it is
    /// a valid HTTP field value (an address with a control character is
    /// left out rather than sent mangled; a UTF-8 address goes as its
    /// bytes).
    fn fields(&self) -> Vec<(&'static str, hyper::header::HeaderValue)> {
        let mut out = Vec::new();
        let mut add = |name: &'static str, value: &str| {
            if value.is_empty() {
                return;
            }
            if let Ok(v) = hyper::header::HeaderValue::from_bytes(value.as_bytes()) {
                out.push((name, v));
            }
        };
        add("Helo", self.helo);
        add("From", self.mail_from);
        for rcpt in self.rcpt_to {
            add("Rcpt", rcpt);
        }
        out
    }
}

/// rspamd's action to what happens to the message (rspamd's actions:
/// `reject`, `soft reject`, `greylist`, `rewrite subject`, `add header`,
/// `no action`). An unknown action is an error, not a pass.
pub fn verdict(reply: &CheckReply) -> Result<Verdict, ScanError> {
    let (flagged, action) = match reply.action.as_str() {
        "reject" => {
            return Ok(Verdict::Refuse(Reply::new(
                554,
                "5.7.1 Message rejected by the content scanner",
            )));
        }
        "soft reject" | "greylist" => {
            return Ok(Verdict::Refuse(Reply::new(
                451,
                "4.7.1 Message deferred by the content scanner; try again later",
            )));
        }
        "rewrite subject" => (true, "rewrite subject"),
        "add header" => (true, "add header"),
        "no action" => (false, "no action"),
        other => {
            return Err(ScanError::Reply(format!(
                "unknown action {:?}",
                other.chars().take(40).collect::<String>()
            )));
        }
    };
    if !reply.score.is_finite() || !reply.required_score.is_finite() {
        return Err(ScanError::Reply("score is not a number".into()));
    }
    let mut fields = String::new();
    if flagged {
        fields.push_str("X-Spam: Yes\r\n");
    }
    fields.push_str(&format!(
        "X-Spamd-Result: default: {} [{:.2} / {:.2}]\r\nX-Spam-Action: {action}\r\n",
        if flagged { "True" } else { "False" },
        reply.score.clamp(-1e6, 1e6),
        reply.required_score.clamp(-1e6, 1e6),
    ));
    Ok(Verdict::Deliver {
        fields: fields.into_bytes(),
        flagged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(action: &str, score: f64) -> CheckReply {
        CheckReply {
            action: action.into(),
            score,
            required_score: 15.0,
        }
    }

    #[test]
    fn actions_map_to_replies_and_fields() {
        match verdict(&reply("reject", 20.0)).unwrap() {
            Verdict::Refuse(r) => assert_eq!(r.code, 554),
            v => panic!("{v:?}"),
        }
        for a in ["soft reject", "greylist"] {
            match verdict(&reply(a, 5.0)).unwrap() {
                Verdict::Refuse(r) => assert_eq!(r.code, 451),
                v => panic!("{v:?}"),
            }
        }
        let Verdict::Deliver { fields, flagged } = verdict(&reply("add header", 6.5)).unwrap()
        else {
            panic!()
        };
        assert!(flagged);
        assert_eq!(
            String::from_utf8(fields).unwrap(),
            "X-Spam: Yes\r\nX-Spamd-Result: default: True [6.50 / 15.00]\r\nX-Spam-Action: add header\r\n"
        );
        let Verdict::Deliver { fields, flagged } = verdict(&reply("no action", 0.0)).unwrap()
        else {
            panic!()
        };
        assert!(!flagged);
        assert!(!String::from_utf8(fields).unwrap().contains("X-Spam: Yes"));
    }

    #[test]
    fn the_envelope_goes_as_rspamd_headers_and_unsendable_values_are_left_out() {
        let rcpts = vec![
            "a@example.test".to_string(),
            "b\r\nX-Evil: 1@example.test".to_string(),
            "c@example.test".to_string(),
        ];
        let e = ScanEnvelope {
            client: "192.0.2.1".parse().unwrap(),
            helo: "mx.sender.test",
            mail_from: "",
            rcpt_to: &rcpts,
        };
        let fields: Vec<(&str, String)> = e
            .fields()
            .into_iter()
            .map(|(n, v)| (n, v.to_str().unwrap().to_string()))
            .collect();
        assert_eq!(
            fields,
            [
                ("Helo", "mx.sender.test".to_string()),
                ("Rcpt", "a@example.test".to_string()),
                ("Rcpt", "c@example.test".to_string()),
            ]
        );
    }

    #[test]
    fn unknown_action_or_bad_score_is_a_failure_not_a_pass() {
        assert!(verdict(&reply("accept\r\nX-Evil: 1", 0.0)).is_err());
        assert!(verdict(&reply("no action", f64::NAN)).is_err());
    }
}
