//! ARC sealing of the *sealed* message (`[auth.arc]`): after writ has
//! verified the plaintext (`inbound_auth`) and sealed it, it adds one ARC
//! set (RFC 8617: ARC-Seal, ARC-Message-Signature over the sealed message
//! as sent to the provider, ARC-Authentication-Results carrying writ's
//! verification results) with the `mail-auth` crate, so that a provider
//! told to trust writ as an ARC sealer (Microsoft 365's trusted ARC
//! sealers, Gmail) takes writ's results instead of failing the sender's
//! DKIM signature that sealing broke.
//!
//! - The set goes above the sealed message's first line (ARC sets are
//!   prepended; readers accept fields above the marker, FORMAT.md §5). The
//!   earlier sets of the message are in the outer header, unchanged
//!   (`ARC-*` are outer fields), so writ's set chains onto them: `i=` is
//!   one more, `cv=` is the chain's verification before sealing (`pass`,
//!   or `fail`; `none` for a first set).
//! - Not sealed (counted `skipped`): a message writ did not verify (too
//!   large, verification timed out), a chain past
//!   `inbound_auth::MAX_ARC_SETS` or with unreadable ARC fields, a chain
//!   whose last seal already says `cv=fail`.
//! - The signed fields are the sealed message's routing fields and writ's
//!   own [`SIGNED_FIELDS`]; the body hash covers the whole sealed body.
//!   Pure: runs on the seal job's blocking thread over the sealed message
//!   in memory (at most about 4/3 of `[auth] max_message_bytes`).
//! - The key is PKCS#8 PEM, RSA (SHA-256) or Ed25519, read once at start;
//!   errors never print key material.

use std::path::Path;

use mail_auth::arc::{ArcSealer, Set};
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::{Header, HeaderWriter};
use mail_auth::dkim::{Canonicalization, Done};
use mail_auth::{ArcOutput, AuthenticatedMessage, DkimResult};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;

use super::inbound_auth::ArcInput;
use crate::config::ArcConfig;

/// Fields of the sealed message that writ's ARC-Message-Signature signs.
pub const SIGNED_FIELDS: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Reply-To",
    "X-Writ",
    "MIME-Version",
    "Content-Type",
];

/// writ's ARC signing key and identity (`d=`, `s=`, signed fields).
pub enum ArcSigner {
    Rsa(ArcSealer<RsaKey<Sha256>, Done>),
    Ed25519(ArcSealer<Ed25519Key, Done>),
}

/// Why the ARC key cannot be used. One line, saying the fix.
#[derive(Debug, thiserror::Error)]
pub enum ArcKeyError {
    #[error("auth.arc.key_file {0}: cannot read a PKCS#8 PEM private key from it ({1})")]
    Read(String, String),
    #[error(
        "auth.arc.key_file {0}: not an RSA or Ed25519 PKCS#8 key (make one with `openssl genpkey -algorithm ed25519` or `-algorithm rsa -pkeyopt rsa_keygen_bits:2048`)"
    )]
    Kind(String),
}

/// Why a message could not be ARC-sealed.
#[derive(Debug, thiserror::Error)]
pub enum ArcSealError {
    #[error("the sealed message has no header")]
    NoHeader,
    #[error("the message's ARC chain cannot be extended: {0}")]
    Chain(&'static str),
    #[error("ARC signing failed: {0}")]
    Sign(String),
}

impl ArcSigner {
    pub fn from_config(cfg: &ArcConfig, keys_dir: &Path) -> Result<ArcSigner, ArcKeyError> {
        let path = if cfg.key_file.is_absolute() {
            cfg.key_file.clone()
        } else {
            keys_dir.join(&cfg.key_file)
        };
        let shown = path.display().to_string();
        let der = PrivateKeyDer::from_pem_file(&path)
            .map_err(|e| ArcKeyError::Read(shown.clone(), e.to_string()))?;
        let fields = SIGNED_FIELDS.iter().copied();
        let domain = cfg.domain.as_str();
        let selector = cfg.selector.as_str();
        let rsa = |k| {
            ArcSigner::Rsa(
                ArcSealer::from_key(k)
                    .domain(domain)
                    .selector(selector)
                    .headers(fields.clone())
                    .header_canonicalization(Canonicalization::Relaxed)
                    .body_canonicalization(Canonicalization::Relaxed),
            )
        };
        if let Ok(k) = RsaKey::<Sha256>::from_key_der(der.clone_key()) {
            return Ok(rsa(k));
        }
        let PrivateKeyDer::Pkcs8(pkcs8) = &der else {
            return Err(ArcKeyError::Kind(shown));
        };
        let k = Ed25519Key::from_pkcs8_maybe_unchecked_der(pkcs8.secret_pkcs8_der())
            .map_err(|_| ArcKeyError::Kind(shown))?;
        Ok(ArcSigner::Ed25519(
            ArcSealer::from_key(k)
                .domain(domain)
                .selector(selector)
                .headers(fields)
                .header_canonicalization(Canonicalization::Relaxed)
                .body_canonicalization(Canonicalization::Relaxed),
        ))
    }

    /// The ARC set (three CRLF-terminated fields) to put above `sealed`.
    pub fn seal(&self, sealed: &[u8], input: &ArcInput) -> Result<Vec<u8>, ArcSealError> {
        if input.chain_too_long {
            return Err(ArcSealError::Chain("more ARC sets than writ verifies"));
        }
        let message = AuthenticatedMessage::parse(sealed).ok_or(ArcSealError::NoHeader)?;
        if message.has_arc_errors {
            return Err(ArcSealError::Chain("unreadable ARC fields"));
        }
        let mut chain = ArcOutput::default().with_result(input.chain.clone());
        if input.chain != DkimResult::None {
            for ((seal, signature), results) in message
                .as_headers
                .iter()
                .zip(&message.ams_headers)
                .zip(&message.aar_headers)
            {
                chain = chain.with_set(Set {
                    signature: Header::new(signature.name, signature.value, &signature.header),
                    seal: Header::new(seal.name, seal.value, &seal.header),
                    results: Header::new(results.name, results.value, &results.header),
                });
            }
        } else if !message.as_headers.is_empty() {
            return Err(ArcSealError::Chain("ARC fields that were not verified"));
        }
        if !chain.can_be_sealed() {
            return Err(ArcSealError::Chain("the last seal says cv=fail"));
        }
        let set = match self {
            ArcSigner::Rsa(sealer) => sealer.seal(&message, &input.results, &chain),
            ArcSigner::Ed25519(sealer) => sealer.seal(&message, &input.results, &chain),
        }
        .map_err(|e| ArcSealError::Sign(e.to_string()))?;
        Ok(set.to_header().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use mail_auth::AuthenticationResults;

    fn ed25519_signer(dir: &Path) -> ArcSigner {
        let pkcs8 =
            ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                .unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
        );
        std::fs::write(dir.join("arc.pem"), pem).unwrap();
        let cfg = ArcConfig {
            enabled: true,
            domain: "sealer.test".into(),
            selector: "s1".into(),
            key_file: "arc.pem".into(),
        };
        ArcSigner::from_config(&cfg, dir).unwrap()
    }

    fn input(chain: DkimResult, chain_too_long: bool) -> ArcInput {
        ArcInput {
            results: AuthenticationResults::new("mx.writ.test"),
            chain,
            chain_too_long,
        }
    }

    const SEALED: &[u8] = b"X-Writ: v=1; key=00\r\nFrom: a@b.test\r\nTo: c@d.test\r\nSubject: [...]\r\nMIME-Version: 1.0\r\n\r\nbody\r\n";

    #[test]
    fn an_ed25519_key_from_the_keys_directory_seals_a_first_set() {
        let dir = tempfile::tempdir().unwrap();
        let signer = ed25519_signer(dir.path());
        let set = String::from_utf8(
            signer
                .seal(SEALED, &input(DkimResult::None, false))
                .unwrap(),
        )
        .unwrap();
        assert!(set.starts_with("ARC-Seal: i=1; a=ed25519-sha256;"), "{set}");
        for want in [
            "cv=none",
            "d=sealer.test",
            "s=s1",
            "ARC-Message-Signature: i=1;",
            "ARC-Authentication-Results: i=1; mx.writ.test",
        ] {
            assert!(set.contains(want), "{want} in {set}");
        }
        assert!(set.ends_with("\r\n"), "{set:?}");
    }

    #[test]
    fn chains_that_cannot_be_extended_are_not_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let signer = ed25519_signer(dir.path());
        assert!(matches!(
            signer.seal(SEALED, &input(DkimResult::None, true)),
            Err(ArcSealError::Chain(_))
        ));
        // ARC fields the verification did not look at: not chained onto.
        let mut with_set = b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=x.test; s=s; b=AAAA\r\nARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/relaxed; d=x.test; s=s; h=from; bh=AAAA; b=AAAA\r\nARC-Authentication-Results: i=1; x.test; dkim=pass\r\n".to_vec();
        with_set.extend_from_slice(SEALED);
        assert!(matches!(
            signer.seal(&with_set, &input(DkimResult::None, false)),
            Err(ArcSealError::Chain(_))
        ));
    }
}
