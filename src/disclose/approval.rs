//! Approval keys and approvals.
//!
//! An approver's key is an Ed25519 key pair (ring) in a file encrypted
//! with the approver's passphrase (age scrypt, ASCII-armored), holding:
//!
//! ```text
//! # writ approval key of NAME
//! writ-approval-key: 1
//! name: NAME
//! public: <base64, 32 bytes>
//! key: <base64 PKCS#8>
//! ```
//!
//! `FILE.pub` beside it holds the public key (base64) for the gateway's
//! `[disclosure] approvers`. The key file also opens with the reference
//! CLI (`age -d FILE`).
//!
//! An approval is a small JSON file:
//!
//! ```json
//! {"writ_disclosure_approval":1,"approver":"legal","public_key":"<base64>",
//!  "case":"2026-AB-17","request_sha256":"<hex>","signature":"<base64>"}
//! ```
//!
//! `signature` is Ed25519 over `writ approval v1\n` followed by the 32
//! bytes of SHA-256 of the request's canonical bytes
//! ([`super::Request::canonical`]). Only the signature and the key count:
//! `approver` and `case` are copies for people reading the file, and the
//! name an approval counts under is the one the gateway's config gives its
//! key.

use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{DiscloseError, Request, io_err};
use crate::keys::atomic;

/// Prefix of every signed approval message.
pub const APPROVAL_DOMAIN: &[u8] = b"writ approval v1\n";
/// The version member of an approval file.
pub const APPROVAL_VERSION: u32 = 1;
const KEY_VERSION: &str = "1";
/// Largest approval or key file read.
const MAX_FILE: u64 = 64 * 1024;

/// An unlocked approval key. ring keeps the private key inside the pair;
/// the decrypted file text is zeroized as soon as the pair is built.
pub struct ApprovalKey {
    pub name: String,
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for ApprovalKey {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ApprovalKey {
    /// The 32-byte public key.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }
}

/// The public-key file beside an approval key file: `FILE.pub`.
pub fn public_path(key_file: &Path) -> PathBuf {
    let mut name = key_file.as_os_str().to_os_string();
    name.push(".pub");
    PathBuf::from(name)
}

/// Creates an approval key for `name` in `path` (encrypted with
/// `passphrase`; `work_factor` is scrypt's log2 N, `None` for age's
/// default) and its public key in `path.pub`, both 0600 and written
/// atomically. Refuses if either exists. Returns the public key.
pub fn create_key(
    path: &Path,
    name: &str,
    passphrase: &SecretString,
    work_factor: Option<u8>,
) -> Result<[u8; 32], DiscloseError> {
    crate::config::check_approver_name(name).map_err(DiscloseError::BadName)?;
    let pub_path = public_path(path);
    for p in [path, pub_path.as_path()] {
        if p.exists() {
            return Err(DiscloseError::Exists {
                path: p.to_path_buf(),
            });
        }
    }
    let bad = |detail: &'static str| DiscloseError::BadKey {
        path: path.to_path_buf(),
        detail,
    };
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| bad("no randomness"))?;
    let der = Zeroizing::new(pkcs8.as_ref().to_vec());
    let pair = Ed25519KeyPair::from_pkcs8(&der).map_err(|_| bad("generated key does not parse"))?;
    let mut public = [0u8; 32];
    public.copy_from_slice(pair.public_key().as_ref());
    let public_b64 = B64.encode(public);
    let mut text = Zeroizing::new(format!(
        "# writ approval key of {name}\nwrit-approval-key: {KEY_VERSION}\nname: {name}\npublic: {public_b64}\nkey: "
    ));
    text.push_str(&B64.encode(der.as_slice()));
    text.push('\n');
    let sealed = encrypt_with_passphrase(path, passphrase, work_factor, text.as_bytes())?;
    atomic::write_atomic(path, &sealed)?;
    let pub_text = format!(
        "# writ approval public key of {name} (Ed25519, base64): for [disclosure] approvers\n{public_b64}\n"
    );
    if let Err(e) = atomic::write_atomic(&pub_path, pub_text.as_bytes()) {
        let _ = std::fs::remove_file(path);
        return Err(e.into());
    }
    Ok(public)
}

fn encrypt_with_passphrase(
    path: &Path,
    passphrase: &SecretString,
    work_factor: Option<u8>,
    plaintext: &[u8],
) -> Result<Vec<u8>, DiscloseError> {
    let recipient = crate::keys::passphrase_recipient(passphrase, work_factor)?;
    Ok(crate::keys::encrypt_armored(path, &recipient, plaintext)?)
}

/// Reads at most [`MAX_FILE`] bytes of a small file.
pub(crate) fn read_small(path: &Path) -> Result<Vec<u8>, DiscloseError> {
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(DiscloseError::Bundle {
            path: path.to_path_buf(),
            problem: format!("larger than {MAX_FILE} bytes: not a writ file"),
        });
    }
    Ok(bytes)
}

/// Decrypts an approval key file with the approver's passphrase.
pub fn load_key(path: &Path, passphrase: &SecretString) -> Result<ApprovalKey, DiscloseError> {
    let bad = |detail: &'static str| DiscloseError::BadKey {
        path: path.to_path_buf(),
        detail,
    };
    let bytes = read_small(path)?;
    let armored = age::armor::ArmoredReader::new(&bytes[..]);
    let decryptor = age::Decryptor::new(armored).map_err(|_| bad("not an age file"))?;
    if !decryptor.is_scrypt() {
        return Err(bad("not encrypted with a passphrase"));
    }
    let identity = age::scrypt::Identity::new(passphrase.clone());
    let mut reader = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::DecryptionFailed => DiscloseError::WrongPassphrase {
                path: path.to_path_buf(),
            },
            age::DecryptError::ExcessiveWork { required, .. } => {
                DiscloseError::Key(crate::keys::KeyError::ExcessiveWork {
                    path: path.to_path_buf(),
                    required,
                })
            }
            _ => bad("damaged"),
        })?;
    let mut text = Zeroizing::new(Vec::new());
    reader.read_to_end(&mut text).map_err(|_| bad("damaged"))?;
    let text = std::str::from_utf8(&text).map_err(|_| bad("not text"))?;
    let field = |name: &str| crate::keys::text_field(text, name);
    if field("writ-approval-key") != Some(KEY_VERSION) {
        return Err(bad("unknown version"));
    }
    let name = field("name").ok_or_else(|| bad("no name"))?.to_string();
    let public = field("public")
        .and_then(|p| B64.decode(p).ok())
        .ok_or_else(|| bad("no public key"))?;
    let der = Zeroizing::new(
        field("key")
            .and_then(|k| B64.decode(k).ok())
            .ok_or_else(|| bad("no key"))?,
    );
    let pair = Ed25519KeyPair::from_pkcs8(&der).map_err(|_| bad("not an Ed25519 key"))?;
    if pair.public_key().as_ref() != public.as_slice() {
        return Err(bad("its public key does not match its private key"));
    }
    Ok(ApprovalKey { name, pair })
}

/// An approval file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Always [`APPROVAL_VERSION`].
    pub writ_disclosure_approval: u32,
    /// The name in the approver's key file (informative).
    pub approver: String,
    /// The approver's public key, base64.
    pub public_key: String,
    /// The request's case (informative).
    pub case: String,
    /// SHA-256 (hex) of the request's canonical bytes.
    pub request_sha256: String,
    /// Base64 Ed25519 signature (see the module documentation).
    pub signature: String,
}

fn signed_message(digest: &[u8]) -> Vec<u8> {
    let mut msg = APPROVAL_DOMAIN.to_vec();
    msg.extend_from_slice(digest);
    msg
}

/// Signs `request` with `key`.
pub fn approve(key: &ApprovalKey, request: &Request) -> Approval {
    let signature = key.pair.sign(&signed_message(&request.digest()));
    Approval {
        writ_disclosure_approval: APPROVAL_VERSION,
        approver: key.name.clone(),
        public_key: B64.encode(key.public_key()),
        case: request.case.clone(),
        request_sha256: request.digest_hex(),
        signature: B64.encode(signature.as_ref()),
    }
}

/// Why an approval does not count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Not an approval file; the detail says what is wrong.
    Malformed(&'static str),
    /// For another request (the hash in the file differs).
    OtherRequest,
    /// The signature does not verify under the key the file names.
    BadSignature,
}

impl Approval {
    /// Parses an approval file.
    pub fn parse(bytes: &[u8]) -> Result<Approval, Invalid> {
        let a: Approval = serde_json::from_slice(bytes)
            .map_err(|_| Invalid::Malformed("not a writ approval file"))?;
        if a.writ_disclosure_approval != APPROVAL_VERSION {
            return Err(Invalid::Malformed(
                "an approval version this writ does not read",
            ));
        }
        Ok(a)
    }

    /// The public key the file names (32 bytes), if well-formed.
    pub fn key(&self) -> Result<[u8; 32], Invalid> {
        B64.decode(&self.public_key)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .ok_or(Invalid::Malformed("its public key is not an Ed25519 key"))
    }

    /// Checks that this approval signs the request with SHA-256 `digest`
    /// under the key it names. Say which key that is with [`Approval::key`].
    pub fn check(&self, digest: &[u8; 32]) -> Result<(), Invalid> {
        let key = self.key()?;
        if self.request_sha256 != super::hex(digest) {
            return Err(Invalid::OtherRequest);
        }
        let signature = B64
            .decode(&self.signature)
            .map_err(|_| Invalid::BadSignature)?;
        UnparsedPublicKey::new(&ED25519, key)
            .verify(&signed_message(digest), &signature)
            .map_err(|_| Invalid::BadSignature)
    }

    /// The file: pretty JSON, one line end.
    pub fn to_file(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disclose::Wanted;
    use secrecy::SecretString;

    fn request(case: &str) -> Request {
        Request::new(
            case,
            &[9; 32],
            vec![Wanted::Uid {
                account: "a".into(),
                mailbox: "INBOX".into(),
                uidvalidity: 1,
                uid: 1,
            }],
        )
        .unwrap()
    }

    #[test]
    fn key_round_trip_and_approval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("legal.key");
        let pw = SecretString::from("pass phrase");
        let public = create_key(&path, "legal", &pw, Some(4)).unwrap();
        let pub_text = std::fs::read_to_string(public_path(&path)).unwrap();
        assert!(pub_text.contains(&B64.encode(public)));
        assert!(matches!(
            create_key(&path, "legal", &pw, Some(4)),
            Err(DiscloseError::Exists { .. })
        ));
        let e = load_key(&path, &SecretString::from("wrong")).unwrap_err();
        assert!(matches!(e, DiscloseError::WrongPassphrase { .. }), "{e}");
        let key = load_key(&path, &pw).unwrap();
        assert_eq!(key.public_key(), public);
        assert_eq!(key.name, "legal");
        assert!(!format!("{key:?}").contains("pair"));

        let r = request("c1");
        let a = approve(&key, &r);
        let parsed = Approval::parse(&a.to_file()).unwrap();
        assert_eq!(parsed.key().unwrap(), public);
        parsed.check(&r.digest()).unwrap();
        assert_eq!(
            parsed.check(&request("c2").digest()),
            Err(Invalid::OtherRequest)
        );
        // Pointing the hash at another request does not move the signature.
        let mut moved = parsed.clone();
        moved.request_sha256 = request("c2").digest_hex();
        assert_eq!(
            moved.check(&request("c2").digest()),
            Err(Invalid::BadSignature)
        );
        let mut forged = parsed.clone();
        forged.public_key = B64.encode([1u8; 32]);
        assert_eq!(forged.check(&r.digest()), Err(Invalid::BadSignature));
        assert!(Approval::parse(b"{}").is_err());
    }

    #[test]
    fn signature_is_domain_separated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let pw = SecretString::from("pw");
        create_key(&path, "k", &pw, Some(4)).unwrap();
        let key = load_key(&path, &pw).unwrap();
        let r = request("c");
        let a = approve(&key, &r);
        let sig = B64.decode(&a.signature).unwrap();
        // Not a signature of the bare digest.
        assert!(
            UnparsedPublicKey::new(&ED25519, key.public_key())
                .verify(&r.digest(), &sig)
                .is_err()
        );
    }

    #[test]
    fn bad_names_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pw = SecretString::from("pw");
        for name in ["", "a\nb", &"x".repeat(65)] {
            assert!(matches!(
                create_key(&dir.path().join("k"), name, &pw, Some(4)),
                Err(DiscloseError::BadName(_))
            ));
        }
        assert!(!dir.path().join("k").exists());
    }
}
