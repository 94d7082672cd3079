//! `[disclosure]`: how many approvals `writ disclose` needs, and whose.
//!
//! ```toml
//! [disclosure]
//! quorum = 2
//! approvers = [
//!   { name = "legal", public_key = "base64 Ed25519 key from `writ approver init`" },
//!   { name = "dpo",   public_key = "..." },
//!   { name = "board", public_key = "..." },
//! ]
//! ```
//!
//! The table is checked as a whole when the config is read: a quorum larger
//! than the number of approvers (disclosure could never be approved), two
//! approvers with one name or one key (one person would count twice) and a
//! key that is not an Ed25519 public key are errors naming the line.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;

use super::{CheckStr, Checked};

/// `[disclosure]`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawDisclosure")]
pub struct DisclosureConfig {
    /// Distinct approvers whose valid approvals `writ disclose` needs for
    /// the exact request; 0: no approval needed.
    pub quorum: usize,
    /// Who may approve: names are unique, keys are unique.
    pub approvers: Vec<ApproverConfig>,
}

/// One approver: the name shown in refusals, the manifest and the audit
/// log, and the public half of their approval key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApproverConfig {
    pub name: String,
    /// Ed25519 public key (32 bytes).
    pub public_key: [u8; 32],
}

impl DisclosureConfig {
    /// The approver holding `public_key`, if listed.
    pub fn approver(&self, public_key: &[u8]) -> Option<&ApproverConfig> {
        self.approvers
            .iter()
            .find(|a| a.public_key.as_slice() == public_key)
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDisclosure {
    quorum: usize,
    approvers: Vec<RawApprover>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApprover {
    name: Checked<ApproverName>,
    public_key: Checked<PublicKey>,
}

struct ApproverName(String);

impl CheckStr for ApproverName {
    const EXPECTING: &'static str = "an approver name string";
    fn check(s: &str) -> Result<Self, String> {
        check_approver_name(s).map(|()| ApproverName(s.to_string()))
    }
}

/// An approver name: 1 to 64 characters, no control characters, not only
/// spaces (it appears in refusals, manifests and audit records).
pub fn check_approver_name(s: &str) -> Result<(), String> {
    if s.trim().is_empty() || s.chars().count() > 64 || s.chars().any(char::is_control) {
        return Err(format!(
            "`{}` is not an approver name (1 to 64 characters, no control characters)",
            s.escape_default()
        ));
    }
    Ok(())
}

struct PublicKey([u8; 32]);

impl CheckStr for PublicKey {
    const EXPECTING: &'static str = "a base64 Ed25519 public key string";
    fn check(s: &str) -> Result<Self, String> {
        parse_public_key(s).map(PublicKey)
    }
}

/// An approval public key as `writ approver init` prints it: base64 of
/// the 32-byte Ed25519 key.
pub fn parse_public_key(s: &str) -> Result<[u8; 32], String> {
    B64.decode(s.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| {
            format!(
                "`{}` is not an approval public key (base64 of 32 bytes, as `writ approver init` prints it)",
                s.escape_default()
            )
        })
}

impl TryFrom<RawDisclosure> for DisclosureConfig {
    type Error = String;

    fn try_from(raw: RawDisclosure) -> Result<Self, String> {
        let approvers: Vec<ApproverConfig> = raw
            .approvers
            .into_iter()
            .map(|a| ApproverConfig {
                name: a.name.0.0,
                public_key: a.public_key.0.0,
            })
            .collect();
        for (i, a) in approvers.iter().enumerate() {
            for b in &approvers[..i] {
                if a.name == b.name {
                    return Err(format!(
                        "approver `{}` is listed twice: names must be unique",
                        a.name
                    ));
                }
                if a.public_key == b.public_key {
                    return Err(format!(
                        "approvers `{}` and `{}` have the same public key: each approver needs their own (`writ approver init`)",
                        b.name, a.name
                    ));
                }
            }
        }
        if raw.quorum > approvers.len() {
            return Err(format!(
                "quorum = {} but {} approver(s) listed: disclosure could never be approved (list more approvers or lower the quorum)",
                raw.quorum,
                approvers.len()
            ));
        }
        Ok(DisclosureConfig {
            quorum: raw.quorum,
            approvers,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::Config;

    fn parse(src: &str) -> Result<Config, String> {
        Config::parse(Path::new("c.toml"), src).map_err(|e| e.to_string())
    }

    fn key(byte: u8) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    }

    #[test]
    fn default_needs_no_approval() {
        let c = parse("").unwrap();
        assert_eq!(c.disclosure.quorum, 0);
        assert!(c.disclosure.approvers.is_empty());
        assert_eq!(parse("[disclosure]\n").unwrap().disclosure.quorum, 0);
    }

    #[test]
    fn quorum_and_approvers() {
        let c = parse(&format!(
            "[disclosure]\nquorum = 2\napprovers = [\n  {{ name = \"legal\", public_key = \"{}\" }},\n  {{ name = \"dpo\", public_key = \"{}\" }},\n]\n",
            key(1),
            key(2)
        ))
        .unwrap();
        assert_eq!(c.disclosure.quorum, 2);
        assert_eq!(c.disclosure.approvers[1].name, "dpo");
        assert_eq!(c.disclosure.approvers[1].public_key, [2; 32]);
        assert_eq!(c.disclosure.approver(&[1; 32]).unwrap().name, "legal");
        assert!(c.disclosure.approver(&[3; 32]).is_none());
    }

    #[test]
    fn quorum_above_approvers() {
        let e = parse(&format!(
            "[disclosure]\nquorum = 2\napprovers = [{{ name = \"a\", public_key = \"{}\" }}]\n",
            key(1)
        ))
        .unwrap_err();
        assert!(
            e.contains("quorum = 2 but 1 approver(s) listed") && e.contains("disclosure"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        let e = parse("[disclosure]\nquorum = 1\n").unwrap_err();
        assert!(e.contains("quorum = 1 but 0 approver(s)"), "{e}");
    }

    #[test]
    fn duplicates_refused() {
        let e = parse(&format!(
            "[disclosure]\napprovers = [{{ name = \"a\", public_key = \"{}\" }}, {{ name = \"a\", public_key = \"{}\" }}]\n",
            key(1),
            key(2)
        ))
        .unwrap_err();
        assert!(e.contains("approver `a` is listed twice"), "{e}");
        let e = parse(&format!(
            "[disclosure]\napprovers = [{{ name = \"a\", public_key = \"{}\" }}, {{ name = \"b\", public_key = \"{}\" }}]\n",
            key(1),
            key(1)
        ))
        .unwrap_err();
        assert!(
            e.contains("approvers `a` and `b` have the same public key"),
            "{e}"
        );
    }

    #[test]
    fn bad_entries_name_their_line() {
        let e = parse(
            "[disclosure]\nquorum = 1\napprovers = [\n  { name = \"a\", public_key = \"AAAA\" },\n]\n",
        )
        .unwrap_err();
        assert!(
            e.contains("line 4") && e.contains("not an approval public key"),
            "{e}"
        );
        assert!(e.contains("disclosure.approvers.0.public_key"), "{e}");
        let e = parse(&format!(
            "[disclosure]\napprovers = [{{ name = \"\", public_key = \"{}\" }}]\n",
            key(1)
        ))
        .unwrap_err();
        assert!(e.contains("not an approver name"), "{e}");
        let e = parse(&format!(
            "[disclosure]\napprovers = [{{ name = \"a\", public_key = \"{}\", extra = 1 }}]\n",
            key(1)
        ))
        .unwrap_err();
        assert!(e.contains("extra"), "{e}");
        let e = parse("[disclosure]\nquorom = 1\n").unwrap_err();
        assert!(e.contains("quorom") && e.contains("line 2"), "{e}");
        let e = parse("[disclosure]\nquorum = -1\n").unwrap_err();
        assert!(e.contains("disclosure.quorum"), "{e}");
    }
}
