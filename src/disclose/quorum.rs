//! The quorum check: M distinct known approvers approved this exact
//! request. Pure: approval files in, the approvers who count out.
//!
//! Every approval given must be valid: one that is malformed, by a key
//! the config does not list, for another request, or with a signature that
//! does not verify makes disclose refuse (naming it) even when the others
//! would be enough: a bad approval is a mistake or an attempt, and either
//! must be looked at before anything is opened. An approver who approved
//! twice (the same file given twice, or two approvals by one key) counts
//! once. Approvals are checked the same way when the quorum is 0.

use std::path::PathBuf;

use super::approval::{Approval, Invalid};
use super::{DiscloseError, Request};
use crate::config::DisclosureConfig;

/// One approval file as given.
#[derive(Debug, Clone)]
pub struct Given {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

/// An approval that counts.
#[derive(Debug, Clone)]
pub struct Used {
    /// The approver's name in the config.
    pub name: String,
    /// The approval file, as given (copied into the bundle).
    pub given: Given,
}

/// Checks `approvals` against `request` and the config's quorum. Returns
/// the approvals that count, one per approver, in the order given.
pub fn check(
    config: &DisclosureConfig,
    request: &Request,
    approvals: &[Given],
) -> Result<Vec<Used>, DiscloseError> {
    let digest = request.digest();
    let mut used: Vec<Used> = Vec::new();
    let mut repeats: Vec<String> = Vec::new();
    for given in approvals {
        let path = given.path.clone();
        let approval = Approval::parse(&given.bytes).map_err(|e| DiscloseError::BadApproval {
            path: path.clone(),
            detail: match e {
                Invalid::Malformed(d) => d,
                _ => "not a writ approval file",
            },
        })?;
        let key = approval.key().map_err(|_| DiscloseError::BadApproval {
            path: path.clone(),
            detail: "its public key is not an Ed25519 key",
        })?;
        let Some(approver) = config.approver(&key) else {
            return Err(DiscloseError::UnknownApprover {
                path,
                claimed: approval.approver,
            });
        };
        match approval.check(&digest) {
            Ok(()) => {}
            Err(Invalid::OtherRequest) => {
                let detail = if approval.case != request.case {
                    format!(
                        "it approves case {:?}, not {:?}",
                        approval.case, request.case
                    )
                } else {
                    "it approves another list of messages (or another gateway) for this case"
                        .to_string()
                };
                return Err(DiscloseError::WrongRequest {
                    path,
                    approver: approver.name.clone(),
                    detail,
                });
            }
            Err(_) => {
                return Err(DiscloseError::BadSignature {
                    path,
                    approver: approver.name.clone(),
                });
            }
        }
        if used.iter().any(|u| u.name == approver.name) {
            repeats.push(format!(
                "{} repeats {}'s approval",
                path.display(),
                approver.name
            ));
            continue;
        }
        used.push(Used {
            name: approver.name.clone(),
            given: given.clone(),
        });
    }
    if used.len() < config.quorum {
        let names = if used.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                used.iter()
                    .map(|u| u.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let repeated = if repeats.is_empty() {
            String::new()
        } else {
            format!("; {} (an approver counts once)", repeats.join(", "))
        };
        return Err(DiscloseError::QuorumMissing {
            have: used.len(),
            need: config.quorum,
            missing: config.quorum - used.len(),
            names,
            repeated,
        });
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApproverConfig;
    use crate::disclose::Wanted;
    use crate::disclose::approval::{self, ApprovalKey};
    use secrecy::SecretString;

    struct Fixture {
        _dir: tempfile::TempDir,
        keys: Vec<ApprovalKey>,
        config: DisclosureConfig,
    }

    /// Three approvers a, b, c; `listed` of them in the config.
    fn fixture(quorum: usize, listed: usize) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let pw = SecretString::from("pw");
        let mut keys = Vec::new();
        let mut approvers = Vec::new();
        for name in ["a", "b", "c"] {
            let path = dir.path().join(name);
            let public = approval::create_key(&path, name, &pw, Some(2)).unwrap();
            keys.push(approval::load_key(&path, &pw).unwrap());
            approvers.push(ApproverConfig {
                name: format!("cfg-{name}"),
                public_key: public,
            });
        }
        approvers.truncate(listed);
        Fixture {
            _dir: dir,
            keys,
            config: DisclosureConfig { quorum, approvers },
        }
    }

    fn request(case: &str, uid: u32) -> Request {
        Request::new(
            case,
            &[1; 32],
            vec![Wanted::Uid {
                account: "x".into(),
                mailbox: "INBOX".into(),
                uidvalidity: 3,
                uid,
            }],
        )
        .unwrap()
    }

    fn given(name: &str, a: &Approval) -> Given {
        Given {
            path: PathBuf::from(name),
            bytes: a.to_file(),
        }
    }

    #[test]
    fn enough_distinct_approvals() {
        let f = fixture(2, 3);
        let r = request("c", 1);
        let a = approval::approve(&f.keys[0], &r);
        let c = approval::approve(&f.keys[2], &r);
        let used = check(&f.config, &r, &[given("a.json", &a), given("c.json", &c)]).unwrap();
        let names: Vec<&str> = used.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["cfg-a", "cfg-c"]);
        // Quorum 0: nothing needed.
        let f0 = fixture(0, 0);
        assert!(check(&f0.config, &r, &[]).unwrap().is_empty());
    }

    #[test]
    fn too_few_says_how_many_missing() {
        let f = fixture(3, 3);
        let r = request("c", 1);
        let a = approval::approve(&f.keys[0], &r);
        let e = check(&f.config, &r, &[given("a.json", &a)]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "quorum not met: 1 valid approval(s) from distinct approvers (cfg-a), 3 required by [disclosure] quorum: 2 missing"
        );
        let e = check(&f.config, &r, &[]).unwrap_err();
        assert!(
            e.to_string()
                .contains("0 valid approval(s) from distinct approvers, 3 required"),
            "{e}"
        );
    }

    #[test]
    fn reused_counts_once() {
        let f = fixture(2, 3);
        let r = request("c", 1);
        let a = approval::approve(&f.keys[0], &r);
        let e = check(&f.config, &r, &[given("a.json", &a), given("a2.json", &a)]).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("1 missing"), "{text}");
        assert!(text.contains("a2.json repeats cfg-a's approval"), "{text}");
    }

    #[test]
    fn unknown_wrong_and_forged_refused() {
        let f = fixture(1, 2);
        let r = request("c", 1);
        // c is not listed.
        let c = approval::approve(&f.keys[2], &r);
        let e = check(&f.config, &r, &[given("c.json", &c)]).unwrap_err();
        assert!(matches!(e, DiscloseError::UnknownApprover { .. }), "{e}");
        // Another case, then the same case with other messages.
        let other_case = approval::approve(&f.keys[0], &request("d", 1));
        let e = check(&f.config, &r, &[given("x.json", &other_case)]).unwrap_err();
        assert!(
            e.to_string().contains("it approves case \"d\", not \"c\""),
            "{e}"
        );
        let other_list = approval::approve(&f.keys[0], &request("c", 2));
        let e = check(&f.config, &r, &[given("x.json", &other_list)]).unwrap_err();
        assert!(e.to_string().contains("another list of messages"), "{e}");
        // A valid approval does not make a bad one acceptable.
        let good = approval::approve(&f.keys[1], &r);
        let mut forged = approval::approve(&f.keys[0], &r);
        forged.signature = good.signature.clone();
        let e = check(
            &f.config,
            &r,
            &[given("b.json", &good), given("f.json", &forged)],
        )
        .unwrap_err();
        assert!(matches!(e, DiscloseError::BadSignature { .. }), "{e}");
        let e = check(
            &f.config,
            &r,
            &[Given {
                path: "junk".into(),
                bytes: b"junk".to_vec(),
            }],
        )
        .unwrap_err();
        assert!(matches!(e, DiscloseError::BadApproval { .. }), "{e}");
    }
}
