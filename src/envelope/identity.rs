//! The X25519 identity writ opens sealed messages with: the age crate's
//! `X25519` stanza unwrap, with the identity's public key computed once.
//!
//! Why not `age::x25519::Identity` itself: its `unwrap_stanza` derives the
//! identity's public key again for every stanza it tries (a base-point
//! multiplication and a field inversion), which was 7.6 % of writ's CPU
//! in a cold folder listing, where every message costs one unwrap
//! (BENCHMARKS.md, "Cold listing: where writ's CPU goes"). The public key
//! only goes into the HKDF salt, so it can be kept.
//!
//! What [`OpeningKey::unwrap_stanza`] does is exactly the age v1 X25519
//! recipient stanza (age-encryption.org/v1, C2SP), step for step as the
//! age crate 0.12 does it:
//!
//! - a stanza of another tag is not ours (`None`);
//! - exactly one argument, the ephemeral share, in unpadded standard
//!   base64 that decodes to 32 bytes, and a body of 32 bytes (the 16-byte
//!   file key and its tag): otherwise the header is invalid;
//! - the shared secret X25519(identity, share); an all-zero one (a share
//!   of small order) makes the header invalid;
//! - the wrapping key HKDF-SHA-256(salt = share || the identity's public
//!   key, info = "age-encryption.org/v1/X25519", ikm = shared secret);
//! - the body opened with ChaCha20-Poly1305 under that key, nonce zero, no
//!   associated data. A body that does not open is not ours (`None`):
//!   stanzas do not say whom they are for, so another stanza may be.
//!
//! HKDF and ChaCha20-Poly1305 are ring's (as writ's own stanzas in
//! `stream.rs`); ring has no agreement with a static private key, so the
//! agreement is curve25519-dalek's (as the age crate's, through
//! x25519-dalek), computed on the Edwards form ([`agree`]): the same
//! result as X25519's Montgomery ladder, a quarter less CPU where
//! curve25519-dalek's vector backend runs (AVX2), and the agreement is
//! most of what opening a summary costs.
//!
//! Invariants: the secret scalar and the file key live in zeroizing types
//! (`Zeroizing` buffers, age's `FileKey`); `Debug` prints the public key
//! only; nothing branches on the secret (only on the public share).

use age::DecryptError;
use age_core::format::{FILE_KEY_BYTES, FileKey, Stanza};
use age_core::secrecy::ExposeSecret;
use base64::Engine;
use base64::prelude::BASE64_STANDARD_NO_PAD;
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::traits::IsIdentity;
use ring::aead::{self, Aad, LessSafeKey, Nonce};
use ring::hkdf;
use zeroize::Zeroizing;

/// The stanza tag and the HKDF info of age's X25519 recipients.
const TAG: &str = "X25519";
const LABEL: &[u8] = b"age-encryption.org/v1/X25519";
/// The wrapped file key: 16 bytes and a 16-byte Poly1305 tag.
const WRAPPED_BYTES: usize = FILE_KEY_BYTES + 16;

/// An age X25519 identity with its public key kept.
#[derive(Clone)]
pub struct OpeningKey {
    /// The secret scalar as the identity encodes it (clamped when used).
    secret: Zeroizing<[u8; 32]>,
    public: MontgomeryPoint,
}

impl OpeningKey {
    /// The same identity as `identity`, for opening.
    pub fn new(identity: &age::x25519::Identity) -> OpeningKey {
        let secret = secret_bytes(identity);
        let public = MontgomeryPoint::mul_base_clamped(*secret);
        OpeningKey { secret, public }
    }

    /// The identity's public key (the 32 bytes of its `age1...`
    /// recipient).
    pub fn public_key(&self) -> &[u8; 32] {
        self.public.as_bytes()
    }
}

/// The 32 secret bytes of an `AGE-SECRET-KEY-1...` identity (bech32,
/// human-readable part `age-secret-key-`; the age crate gives the key
/// out only as that string).
fn secret_bytes(identity: &age::x25519::Identity) -> Zeroizing<[u8; 32]> {
    let text = identity.to_string();
    let mut out = Zeroizing::new([0u8; 32]);
    // An identity the age crate holds always encodes so; should it ever
    // not, the key is all zero and opens nothing (every stanza: `None`).
    if let Ok((hrp, data)) = bech32::decode(text.expose_secret()) {
        let data = Zeroizing::new(data);
        if hrp.as_str().eq_ignore_ascii_case("age-secret-key-") && data.len() == 32 {
            out.copy_from_slice(&data);
        }
    }
    out
}

impl std::fmt::Debug for OpeningKey {
    // Never the secret, even in a debug log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpeningKey")
            .field(
                "public",
                &BASE64_STANDARD_NO_PAD.encode(self.public.as_bytes()),
            )
            .finish_non_exhaustive()
    }
}

impl age::Identity for OpeningKey {
    fn unwrap_stanza(&self, stanza: &Stanza) -> Option<Result<FileKey, DecryptError>> {
        if stanza.tag != TAG {
            return None;
        }
        let share = match &stanza.args[..] {
            [arg] => match decode_share(arg) {
                Some(share) => share,
                None => return Some(Err(DecryptError::InvalidHeader)),
            },
            _ => return Some(Err(DecryptError::InvalidHeader)),
        };
        if stanza.body.len() != WRAPPED_BYTES {
            return Some(Err(DecryptError::InvalidHeader));
        }
        let shared = agree(&self.secret, share);
        if shared.is_identity() {
            return Some(Err(DecryptError::InvalidHeader));
        }
        let mut salt = [0u8; 64];
        salt[..32].copy_from_slice(&share);
        salt[32..].copy_from_slice(self.public.as_bytes());
        let key: aead::UnboundKey = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt)
            .extract(shared.as_bytes())
            .expand(&[LABEL], &aead::CHACHA20_POLY1305)
            .ok()?
            .into();
        let mut body = Zeroizing::new(stanza.body.clone());
        let opened = LessSafeKey::new(key)
            .open_in_place(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::empty(),
                &mut body,
            )
            .ok()?;
        // A body of the right length opened: the file key is its 16 bytes.
        let opened: &[u8; FILE_KEY_BYTES] = (&*opened).try_into().ok()?;
        Some(Ok(FileKey::init_with_mut(|k| k.copy_from_slice(opened))))
    }
}

/// X25519(secret, share): the u-coordinate of the share's point times the
/// clamped secret, exactly as X25519's Montgomery ladder gives it
/// (x25519-dalek's `diffie_hellman`: RFC 7748, any 32 bytes taken as u,
/// the top bit ignored, non-canonical values reduced).
///
/// A share on the curve (every honest one: it is a multiple of the base
/// point) is multiplied on the Edwards form, with curve25519-dalek's
/// constant-time variable-base multiplication, which uses the vector
/// backend where the CPU has one: the sign of the Edwards point chosen
/// does not change the result's u, and the clamped scalar is a multiple
/// of 8, so a torsion component vanishes as in the ladder (both give the
/// all-zero output for a point of small order). A share on the twist (or
/// u = -1), which no honest sender makes, goes through the ladder. The
/// branch is on the public share only; the secret bytes are copied by
/// value into curve25519-dalek, as x25519-dalek does.
fn agree(secret: &[u8; 32], share: [u8; 32]) -> MontgomeryPoint {
    let u = MontgomeryPoint(share);
    match u.to_edwards(0) {
        Some(point) => point.mul_clamped(*secret).to_montgomery(),
        None => u.mul_clamped(*secret),
    }
}

/// The ephemeral share: unpadded standard base64 of exactly 32 bytes (the
/// age crate's canonical check: decoding into 33 bytes of room must give
/// 32).
fn decode_share(arg: &str) -> Option<[u8; 32]> {
    let mut buf = [0u8; 33];
    match BASE64_STANDARD_NO_PAD.decode_slice(arg, &mut buf) {
        Ok(32) => buf[..32].try_into().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use age::Identity as _;

    use super::*;

    /// An age file of `plaintext` to `recipients`, by the age crate.
    fn encrypt(recipients: &[&age::x25519::Recipient], plaintext: &[u8]) -> Vec<u8> {
        let enc =
            age::Encryptor::with_recipients(recipients.iter().map(|r| *r as &dyn age::Recipient))
                .unwrap();
        let mut out = Vec::new();
        let mut w = enc.wrap_output(&mut out).unwrap();
        w.write_all(plaintext).unwrap();
        w.finish().unwrap();
        out
    }

    fn decrypt(file: &[u8], identity: &dyn age::Identity) -> Result<Vec<u8>, String> {
        let d = age::Decryptor::new_buffered(file).map_err(|e| e.to_string())?;
        let mut r = d
            .decrypt(std::iter::once(identity))
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        r.read_to_end(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }

    /// One X25519 stanza of the age crate's, for `recipient`.
    fn stanza(recipient: &age::x25519::Recipient) -> (FileKey, Stanza) {
        use age::Recipient as _;
        let file_key = FileKey::init_with_mut(|k| k.copy_from_slice(&[7; 16]));
        let (mut stanzas, _) = recipient.wrap_file_key(&file_key).unwrap();
        (file_key, stanzas.remove(0))
    }

    /// `Stanza` is not `Clone`.
    fn copy(s: &Stanza) -> Stanza {
        Stanza {
            tag: s.tag.clone(),
            args: s.args.clone(),
            body: s.body.clone(),
        }
    }

    #[test]
    fn it_opens_what_the_age_crate_encrypts_to_its_identity() {
        let identity = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        let key = OpeningKey::new(&identity);
        assert_eq!(
            bech32::encode::<bech32::Bech32>(bech32::Hrp::parse("age").unwrap(), key.public_key())
                .unwrap(),
            identity.to_public().to_string()
        );
        // Its stanza first, second, or alone.
        for recipients in [
            vec![&identity.to_public()],
            vec![&identity.to_public(), &other.to_public()],
            vec![&other.to_public(), &identity.to_public()],
        ] {
            let file = encrypt(&recipients, b"the summary");
            assert_eq!(decrypt(&file, &key).unwrap(), b"the summary");
        }
    }

    #[test]
    fn it_unwraps_the_same_file_key_the_age_crate_does() {
        let identity = age::x25519::Identity::generate();
        let (file_key, stanza) = stanza(&identity.to_public());
        let ours = OpeningKey::new(&identity).unwrap_stanza(&stanza);
        let theirs = identity.unwrap_stanza(&stanza);
        assert_eq!(
            ours.unwrap().unwrap().expose_secret(),
            file_key.expose_secret()
        );
        assert_eq!(
            theirs.unwrap().unwrap().expose_secret(),
            file_key.expose_secret()
        );
    }

    #[test]
    fn another_identitys_file_does_not_open() {
        let identity = age::x25519::Identity::generate();
        let other = age::x25519::Identity::generate();
        let file = encrypt(&[&other.to_public()], b"not yours");
        assert!(decrypt(&file, &OpeningKey::new(&identity)).is_err());
        let (_, stanza) = stanza(&other.to_public());
        assert!(OpeningKey::new(&identity).unwrap_stanza(&stanza).is_none());
    }

    #[test]
    fn a_share_of_small_order_is_an_invalid_header() {
        let identity = age::x25519::Identity::generate();
        let key = OpeningKey::new(&identity);
        let (_, mut stanza) = stanza(&identity.to_public());
        // The all-zero point, and the order-8 point of x = 1 (both give an
        // all-zero shared secret).
        let mut one = [0u8; 32];
        one[0] = 1;
        for share in [[0u8; 32], one] {
            stanza.args = vec![BASE64_STANDARD_NO_PAD.encode(share)];
            assert!(matches!(
                key.unwrap_stanza(&stanza),
                Some(Err(DecryptError::InvalidHeader))
            ));
            // As the age crate says.
            assert!(matches!(
                identity.unwrap_stanza(&stanza),
                Some(Err(DecryptError::InvalidHeader))
            ));
        }
    }

    #[test]
    fn a_tampered_stanza_or_body_does_not_open() {
        let identity = age::x25519::Identity::generate();
        let key = OpeningKey::new(&identity);
        let (_, good) = stanza(&identity.to_public());
        // The wrapped key altered: not ours.
        let mut s = copy(&good);
        s.body[3] ^= 1;
        assert!(key.unwrap_stanza(&s).is_none());
        // The share altered: another agreement, not ours.
        let mut s = copy(&good);
        let mut share = decode_share(&s.args[0]).unwrap();
        share[5] ^= 1;
        s.args = vec![BASE64_STANDARD_NO_PAD.encode(share)];
        assert!(key.unwrap_stanza(&s).is_none());
        // Malformed: invalid header, as the age crate says.
        for bad in [
            Stanza {
                args: vec![],
                ..copy(&good)
            },
            Stanza {
                args: vec![good.args[0].clone(), good.args[0].clone()],
                ..copy(&good)
            },
            Stanza {
                args: vec![format!("{}=", good.args[0])],
                ..copy(&good)
            },
            Stanza {
                args: vec![good.args[0][..42].to_owned()],
                ..copy(&good)
            },
            Stanza {
                body: good.body[..31].to_vec(),
                ..copy(&good)
            },
        ] {
            assert!(matches!(
                key.unwrap_stanza(&bad),
                Some(Err(DecryptError::InvalidHeader))
            ));
            assert!(matches!(
                identity.unwrap_stanza(&bad),
                Some(Err(DecryptError::InvalidHeader))
            ));
        }
        // Another tag: not an X25519 stanza at all.
        let s = Stanza {
            tag: "scrypt".into(),
            ..copy(&good)
        };
        assert!(key.unwrap_stanza(&s).is_none());
        // And a whole file with its payload altered fails as the age
        // crate's identity fails.
        let mut file = encrypt(&[&identity.to_public()], b"the summary, long enough");
        let last = file.len() - 20;
        file[last] ^= 1;
        assert!(decrypt(&file, &key).is_err());
        assert!(decrypt(&file, &identity).is_err());
    }

    /// 32 pseudo-random bytes (SHA-256 of a counter).
    fn bytes(i: u32) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, &i.to_be_bytes());
        d.as_ref().try_into().unwrap()
    }

    #[test]
    fn the_agreement_is_x25519s_for_every_kind_of_share() {
        use x25519_dalek::{PublicKey, StaticSecret};
        let mut shares: Vec<[u8; 32]> = (0..100).map(bytes).collect();
        // Honest shares: multiples of the base point.
        shares
            .extend((100..120).map(|i| *PublicKey::from(&StaticSecret::from(bytes(i))).as_bytes()));
        // Points of small order, u = -1, p, p + 1 and other non-canonical
        // encodings, the top bit set.
        let p_minus = |k: u8| {
            let mut b = [0xff; 32];
            b[31] = 0x7f;
            b[0] = 0xed - k;
            b
        };
        let mut one = [0u8; 32];
        one[0] = 1;
        let order8 = [
            0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f,
            0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16,
            0x5f, 0x49, 0xb8, 0x00,
        ];
        shares.extend([[0u8; 32], one, order8, p_minus(1), p_minus(0), [0xff; 32]]);
        let mut plus_one = p_minus(0);
        plus_one[0] += 1;
        shares.push(plus_one);
        let mut on_twist = 0;
        for (i, share) in shares.iter().enumerate() {
            let mut high = *share;
            high[31] |= 0x80;
            for secret in [bytes(10_000 + i as u32), [0xff; 32]] {
                let theirs = StaticSecret::from(secret).diffie_hellman(&PublicKey::from(*share));
                assert_eq!(agree(&secret, *share).0, *theirs.as_bytes(), "share {i}");
                assert_eq!(
                    agree(&secret, high).0,
                    *theirs.as_bytes(),
                    "share {i}, top bit"
                );
            }
            on_twist += usize::from(MontgomeryPoint(*share).to_edwards(0).is_none());
        }
        // Both paths were taken.
        assert!(on_twist > 20 && on_twist < shares.len() - 20, "{on_twist}");
    }

    #[test]
    fn debug_shows_no_secret() {
        let identity = age::x25519::Identity::generate();
        let shown = format!("{:?}", OpeningKey::new(&identity));
        let secret = identity.to_string();
        assert!(!shown.contains(&secret.expose_secret()[15..30]));
        assert!(
            shown.contains(&BASE64_STANDARD_NO_PAD.encode(OpeningKey::new(&identity).public_key()))
        );
    }
}
