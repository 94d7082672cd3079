//! The disclosure request: what approvers sign and what `writ disclose`
//! checks their approvals against.
//!
//! A request names the case, the gateway (its audit public key, so an
//! approval for one gateway is worthless on another) and the exact ordered
//! list of messages. `writ disclose request` prints it from the same
//! arguments `writ disclose` takes; both build it with [`Request::new`], so
//! what the approver signs is exactly what disclose checks.
//!
//! # Canonical form
//!
//! The canonical bytes ([`Request::canonical`]) are the compact JSON
//! serde_json writes for [`Request`]: members in declaration order, no
//! whitespace, serde_json's string escaping. A request file is parsed and
//! serialized again before its hash is taken, so the file's own layout
//! (pretty-printed, re-indented) does not matter; its content does. An
//! approval signs the SHA-256 of these bytes.
//!
//! ```json
//! {"writ_disclosure_request":1,"case":"2026-AB-17","gateway":"<audit.pub, base64>",
//!  "messages":[{"kind":"file","name":"a.eml","sha256":"<of the stored message>"},
//!              {"kind":"uid","account":"ann@example.org","mailbox":"INBOX","uidvalidity":1714,"uid":42},
//!              {"kind":"message_id","account":"ann@example.org","mailbox":"INBOX","message_id":"<1@example.org>"}]}
//! ```
//!
//! A message given as a file is named by its file name *and the SHA-256 of
//! its bytes*: the approval covers that exact stored message, not whatever
//! file later carries the name. A provider message is named by account,
//! mailbox and UID or Message-ID (its bytes are not known before it is
//! fetched). A UID means a message only under the mailbox's UIDVALIDITY
//! (RFC 3501 2.3.1.1), so a UID reference carries it too and is refused
//! at fetch time if the mailbox's UIDVALIDITY is no longer that one (the
//! UIDs now name other messages: a new request is needed). On the command line UIDs come first, in the order given, then
//! Message-IDs, in the order given (clap keeps each option's order, not
//! the interleaving of two options).
//!
//! The same request approved once can be disclosed again with the same
//! approvals (same case, same messages); each run is a separate audit
//! record. A case that needs a second, different disclosure needs new
//! approvals.

use serde::{Deserialize, Serialize};

use super::{DiscloseError, sha256_hex};

/// The version member of a request.
pub const REQUEST_VERSION: u32 = 1;

/// Longest case reference accepted.
const MAX_CASE: usize = 200;

/// What is asked for: the case and the exact ordered list of messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Always [`REQUEST_VERSION`].
    pub writ_disclosure_request: u32,
    /// The case reference (court order, file number).
    pub case: String,
    /// The gateway's audit public key, base64.
    pub gateway: String,
    pub messages: Vec<Wanted>,
}

/// One requested message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Wanted {
    /// A stored message given as a file: its name (the last path
    /// component) and the SHA-256 (hex) of its bytes.
    File { name: String, sha256: String },
    /// A message at the provider, by UID under the mailbox's UIDVALIDITY.
    Uid {
        account: String,
        mailbox: String,
        uidvalidity: u32,
        uid: u32,
    },
    /// A message at the provider, by Message-ID (as in the header, with
    /// its angle brackets).
    MessageId {
        account: String,
        mailbox: String,
        message_id: String,
    },
}

impl std::fmt::Display for Wanted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wanted::File { name, sha256 } => write!(f, "file {name} (sha256 {sha256})"),
            Wanted::Uid {
                account,
                mailbox,
                uidvalidity,
                uid,
            } => write!(f, "{account} {mailbox} UIDVALIDITY {uidvalidity} UID {uid}"),
            Wanted::MessageId {
                account,
                mailbox,
                message_id,
            } => write!(f, "{account} {mailbox} Message-ID {message_id}"),
        }
    }
}

/// A case reference: 1 to 200 characters, no control characters, not only
/// spaces.
pub fn check_case(case: &str) -> Result<(), DiscloseError> {
    if case.trim().is_empty()
        || case.chars().count() > MAX_CASE
        || case.chars().any(char::is_control)
    {
        return Err(DiscloseError::BadCase);
    }
    Ok(())
}

fn printable(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(char::is_control)
}

impl Request {
    /// Builds and checks a request.
    pub fn new(
        case: &str,
        gateway_key: &[u8],
        messages: Vec<Wanted>,
    ) -> Result<Request, DiscloseError> {
        use base64::Engine as _;
        let request = Request {
            writ_disclosure_request: REQUEST_VERSION,
            case: case.to_string(),
            gateway: base64::engine::general_purpose::STANDARD.encode(gateway_key),
            messages,
        };
        request.check()?;
        Ok(request)
    }

    /// Parses a request file (any JSON layout) and checks it.
    pub fn parse(bytes: &[u8]) -> Result<Request, DiscloseError> {
        let request: Request =
            serde_json::from_slice(bytes).map_err(|e| DiscloseError::BadRequest {
                detail: format!("not a writ disclosure request ({})", e.classify_str()),
            })?;
        request.check()?;
        Ok(request)
    }

    fn check(&self) -> Result<(), DiscloseError> {
        let bad = |detail: String| Err(DiscloseError::BadRequest { detail });
        if self.writ_disclosure_request != REQUEST_VERSION {
            return bad(format!(
                "request version {} is not one this writ reads",
                self.writ_disclosure_request
            ));
        }
        check_case(&self.case)?;
        if self.messages.is_empty() {
            return Err(DiscloseError::NoMessages);
        }
        for (i, m) in self.messages.iter().enumerate() {
            let ok = match m {
                Wanted::File { name, sha256 } => {
                    printable(name)
                        && sha256.len() == 64
                        && sha256
                            .bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                }
                Wanted::Uid {
                    account,
                    mailbox,
                    uidvalidity,
                    uid,
                } => printable(account) && printable(mailbox) && *uidvalidity > 0 && *uid > 0,
                Wanted::MessageId {
                    account,
                    mailbox,
                    message_id,
                } => printable(account) && printable(mailbox) && printable(message_id),
            };
            if !ok {
                return bad(format!(
                    "message {} is not a valid message reference",
                    i + 1
                ));
            }
            if let Some(j) = self.messages[..i].iter().position(|o| same(o, m)) {
                return Err(DiscloseError::Repeated {
                    first: j + 1,
                    again: i + 1,
                });
            }
        }
        Ok(())
    }

    /// The canonical bytes (see the module documentation).
    pub fn canonical(&self) -> Vec<u8> {
        // Serializing plain strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// SHA-256 of the canonical bytes: what an approval signs.
    pub fn digest(&self) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, &self.canonical());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    /// [`Request::digest`] in hex.
    pub fn digest_hex(&self) -> String {
        sha256_hex(&self.canonical())
    }

    /// The request as a file for the approvers: pretty JSON, one line end.
    pub fn to_file(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

/// Two references to the same message: the same file content, or the
/// same provider message named the same way.
fn same(a: &Wanted, b: &Wanted) -> bool {
    match (a, b) {
        (Wanted::File { sha256: x, .. }, Wanted::File { sha256: y, .. }) => x == y,
        _ => a == b,
    }
}

/// serde_json's error category, without the offending content.
trait Classify {
    fn classify_str(&self) -> &'static str;
}

impl Classify for serde_json::Error {
    fn classify_str(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "cannot read",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "unexpected members or values",
            serde_json::error::Category::Eof => "cut short",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, byte: u8) -> Wanted {
        Wanted::File {
            name: name.into(),
            sha256: sha256_hex(&[byte]),
        }
    }

    #[test]
    fn canonical_is_compact_and_ordered() {
        let r = Request::new(
            "case 1",
            &[7; 32],
            vec![
                file("a.eml", 1),
                Wanted::Uid {
                    account: "ann".into(),
                    mailbox: "INBOX".into(),
                    uidvalidity: 17,
                    uid: 4,
                },
                Wanted::MessageId {
                    account: "ann".into(),
                    mailbox: "INBOX".into(),
                    message_id: "<x@y>".into(),
                },
            ],
        )
        .unwrap();
        let text = String::from_utf8(r.canonical()).unwrap();
        assert!(
            text.starts_with(
                "{\"writ_disclosure_request\":1,\"case\":\"case 1\",\"gateway\":\"BwcH"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "{\"kind\":\"uid\",\"account\":\"ann\",\"mailbox\":\"INBOX\",\"uidvalidity\":17,\"uid\":4}"
            )
        );
        assert!(text.contains("\"kind\":\"message_id\""));
        // A re-indented file is the same request.
        let parsed = Request::parse(&r.to_file()).unwrap();
        assert_eq!(parsed.canonical(), r.canonical());
        assert_eq!(parsed.digest_hex(), r.digest_hex());
    }

    #[test]
    fn digest_depends_on_case_order_and_gateway() {
        let base = Request::new("c", &[1; 32], vec![file("a", 1), file("b", 2)]).unwrap();
        let other_case = Request::new("d", &[1; 32], vec![file("a", 1), file("b", 2)]).unwrap();
        let other_order = Request::new("c", &[1; 32], vec![file("b", 2), file("a", 1)]).unwrap();
        let other_gateway = Request::new("c", &[2; 32], vec![file("a", 1), file("b", 2)]).unwrap();
        let fewer = Request::new("c", &[1; 32], vec![file("a", 1)]).unwrap();
        for other in [other_case, other_order, other_gateway, fewer] {
            assert_ne!(base.digest(), other.digest());
        }
    }

    #[test]
    fn refusals() {
        assert!(matches!(
            Request::new("", &[1; 32], vec![file("a", 1)]),
            Err(DiscloseError::BadCase)
        ));
        assert!(matches!(
            Request::new("a\nb", &[1; 32], vec![file("a", 1)]),
            Err(DiscloseError::BadCase)
        ));
        assert!(matches!(
            Request::new("c", &[1; 32], vec![]),
            Err(DiscloseError::NoMessages)
        ));
        assert!(matches!(
            Request::new("c", &[1; 32], vec![file("a", 1), file("b", 1)]),
            Err(DiscloseError::Repeated { first: 1, again: 2 })
        ));
        for bad in [
            &b"{}"[..],
            b"not json",
            b"{\"writ_disclosure_request\":2,\"case\":\"c\",\"gateway\":\"\",\"messages\":[]}",
            b"{\"writ_disclosure_request\":1,\"case\":\"c\",\"gateway\":\"\",\"messages\":[{\"kind\":\"file\",\"name\":\"a\",\"sha256\":\"00\"}]}",
            b"{\"writ_disclosure_request\":1,\"case\":\"c\",\"gateway\":\"\",\"messages\":[{\"kind\":\"uid\",\"account\":\"a\",\"mailbox\":\"b\",\"uid\":1,\"x\":1}]}",
        ] {
            assert!(Request::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
