//! Who is sealed, who is refused: the relay's decision per recipient.
//!
//! - A recipient in a protected domain: sealed to the organisation's keys.
//! - Any other recipient: what `smtp.external` says (plaintext, reject, or
//!   sealed to the recipient's own key from the directory).
//! - On a relay listener (MTAs, the MX path: no authentication), only
//!   protected recipients are accepted: writ is never an open relay.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::config::{ExternalPolicy, SmtpConfig};
use crate::smtp::command::domain_of;

/// The class of a recipient. One transaction holds one class only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Sealed to the organisation's keys.
    Protected,
    /// Relayed as sent.
    Plaintext,
    /// Sealed to the recipients' own keys from the directory.
    ExternalSealed,
}

/// The decision for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accept {
        class: Class,
        /// For `ExternalSealed`: the recipient's key.
        key: Option<age::x25519::Recipient>,
    },
    /// Refused: `550 5.7.1` with this reason.
    Refuse(&'static str),
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read directory {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("directory {}: {detail}", .path.display())]
    Invalid { path: PathBuf, detail: String },
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Exact domains, and suffixes (".example.org") for subdomains.
    protected: Vec<String>,
    external: ExternalPolicy,
    directory: HashMap<String, age::x25519::Recipient>,
}

impl Policy {
    pub fn from_config(cfg: &SmtpConfig) -> Result<Policy, PolicyError> {
        let directory = match &cfg.directory {
            Some(path) => load_directory(path)?,
            None => HashMap::new(),
        };
        Ok(Policy {
            protected: cfg
                .protected_domains
                .iter()
                .map(|d| d.trim().trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            external: cfg.external,
            directory,
        })
    }

    pub fn is_protected(&self, address: &str) -> bool {
        let Some(domain) = domain_of(address) else {
            return false;
        };
        self.protected.iter().any(|p| {
            if let Some(suffix) = p.strip_prefix('.') {
                domain.ends_with(&format!(".{suffix}"))
            } else {
                *p == domain
            }
        })
    }

    /// Decides for `address`. `relay_only` is set on relay listeners.
    pub fn classify(&self, address: &str, relay_only: bool) -> Verdict {
        if self.is_protected(address) {
            return Verdict::Accept {
                class: Class::Protected,
                key: None,
            };
        }
        if relay_only {
            return Verdict::Refuse("relaying denied: not a protected domain");
        }
        match self.external {
            ExternalPolicy::Plaintext => Verdict::Accept {
                class: Class::Plaintext,
                key: None,
            },
            ExternalPolicy::Reject => Verdict::Refuse("external recipients are refused by policy"),
            ExternalPolicy::Seal => match self.directory.get(&address.to_ascii_lowercase()) {
                Some(key) => Verdict::Accept {
                    class: Class::ExternalSealed,
                    key: Some(key.clone()),
                },
                None => Verdict::Refuse("no sealing key for this external recipient"),
            },
        }
    }
}

/// The directory file: a TOML table of address = "age1...".
fn load_directory(path: &Path) -> Result<HashMap<String, age::x25519::Recipient>, PolicyError> {
    let src = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let table: toml::Table = toml::from_str(&src).map_err(|e| PolicyError::Invalid {
        path: path.to_path_buf(),
        detail: e.message().to_string(),
    })?;
    let mut out = HashMap::new();
    for (address, value) in table {
        let invalid = |detail: String| PolicyError::Invalid {
            path: path.to_path_buf(),
            detail,
        };
        let Some(s) = value.as_str() else {
            return Err(invalid(format!(
                "`{address}`: expected an age1... recipient string"
            )));
        };
        let key = age::x25519::Recipient::from_str(s.trim())
            .map_err(|e| invalid(format!("`{address}`: not an age recipient ({e})")))?;
        if domain_of(&address).is_none() {
            return Err(invalid(format!("`{address}` is not an email address")));
        }
        out.insert(address.to_ascii_lowercase(), key);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(external: ExternalPolicy, directory: Option<PathBuf>) -> Policy {
        let cfg = SmtpConfig {
            protected_domains: vec!["example.org".into(), ".corp.example".into()],
            external,
            directory,
            ..SmtpConfig::default()
        };
        Policy::from_config(&cfg).unwrap()
    }

    #[test]
    fn protected_domains_and_subdomains() {
        let p = policy(ExternalPolicy::Plaintext, None);
        assert!(p.is_protected("a@Example.ORG"));
        assert!(p.is_protected("a@eu.corp.example"));
        assert!(!p.is_protected("a@corp.example.evil"));
        assert!(!p.is_protected("a@notexample.org"));
        assert!(!p.is_protected("no-at-sign"));
    }

    #[test]
    fn relay_listener_is_never_open() {
        let p = policy(ExternalPolicy::Plaintext, None);
        assert!(matches!(
            p.classify("x@gmail.example", true),
            Verdict::Refuse(_)
        ));
        assert!(matches!(
            p.classify("x@gmail.example", false),
            Verdict::Accept {
                class: Class::Plaintext,
                ..
            }
        ));
    }

    #[test]
    fn directory_seals_or_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let id = age::x25519::Identity::generate();
        let path = dir.path().join("directory.toml");
        std::fs::write(
            &path,
            format!("\"Bob@Partner.example\" = \"{}\"\n", id.to_public()),
        )
        .unwrap();
        let p = policy(ExternalPolicy::Seal, Some(path.clone()));
        assert!(matches!(
            p.classify("bob@partner.example", false),
            Verdict::Accept {
                class: Class::ExternalSealed,
                key: Some(_)
            }
        ));
        assert!(matches!(
            p.classify("eve@partner.example", false),
            Verdict::Refuse(_)
        ));
        for bad in [
            "x = 1",
            "\"a@b\" = \"age1nope\"",
            "\"nodomain\" = \"age1x\"",
            "[[[",
        ] {
            std::fs::write(&path, bad).unwrap();
            let cfg = SmtpConfig {
                external: ExternalPolicy::Seal,
                directory: Some(path.clone()),
                ..SmtpConfig::default()
            };
            let err = Policy::from_config(&cfg).unwrap_err().to_string();
            assert!(err.contains("directory.toml"), "{err}");
        }
    }
}
