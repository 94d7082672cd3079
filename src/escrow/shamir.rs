//! Shamir secret sharing over GF(2^8), byte by byte, for escrow shares:
//! the arithmetic is the `vsss-rs` crate's (`Gf256`), this file only
//! adapts it to writ's shares and errors.
//!
//! Why `vsss-rs` (checked 2026-12): it is maintained, audited, dual
//! MIT/Apache-2.0, builds on Rust 1.95 with a small tree (ff, subtle,
//! rand_core, zeroize), does its GF(2^8) arithmetic in constant time (no
//! tables indexed by secret bytes), draws coefficients uniformly over the
//! whole field, and uses the AES field (x^8 + x^4 + x^3 + x + 1, 0x11b),
//! the field writ's own implementation used: share files made before the
//! switch combine unchanged (a test below combines shares the old code
//! made). `sharks` (last release 2021, coefficients drawn from 1..=255) and
//! its fork `blahaj` use log/exp tables indexed by secret bytes and the
//! 0x11d field, which would have needed a new share format.
//!
//! What this file adds, and its invariants:
//!
//! - Share i holds f(i) for i = 1..=n (never x = 0, which is the secret);
//!   the share file stores x and the y bytes (see [`super`]).
//! - Threshold 1 (any one share opens) is a constant polynomial: each
//!   share is the secret. `vsss-rs` refuses thresholds below 2, so that
//!   case (and combining a single share) is handled here.
//! - Coefficients come from the system CSPRNG (ring's `SystemRandom`); if
//!   it fails at any point, the shares made are discarded and
//!   [`ShamirError::Random`] returned. Share bytes are zeroized when
//!   dropped.
//! - Any m shares determine f, and Lagrange interpolation at 0 gives s;
//!   m - 1 shares are consistent with every value of s, so they reveal
//!   nothing about it. Fewer shares than the threshold combine to a wrong
//!   secret, not an error: the caller checks the result.

use ring::rand::SecureRandom as _;
use vsss_rs::{Gf256, IdentifierGf256};
use zeroize::{Zeroize, Zeroizing};

/// One share: the x coordinate (1..=255) and f(x) for every secret byte.
#[derive(Clone, PartialEq, Eq)]
pub struct Share {
    pub x: u8,
    pub y: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Share {
    // Never print share bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Share")
            .field("x", &self.x)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShamirError {
    #[error("threshold {threshold} and share count {shares}: need 1 <= threshold <= shares <= 255")]
    Parameters { threshold: usize, shares: usize },
    #[error("no shares")]
    NoShares,
    #[error("share {0} is given twice")]
    Duplicate(u8),
    #[error("share number 0 is not a share")]
    ZeroX,
    #[error("shares of different lengths")]
    Length,
    #[error("no randomness available")]
    Random,
    #[error("secret sharing failed: {0}")]
    Sharing(String),
}

/// The system CSPRNG for `vsss-rs`. Its traits allow no failure: a failed
/// draw yields zeros and is remembered, and [`split`] then discards the
/// shares.
struct SystemRng {
    rng: ring::rand::SystemRandom,
    failed: bool,
}

impl rand_core::TryRng for SystemRng {
    type Error = core::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        if self.rng.fill(dst).is_err() {
            dst.fill(0);
            self.failed = true;
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for SystemRng {}

fn sharing(e: vsss_rs::Error) -> ShamirError {
    ShamirError::Sharing(format!("{e:?}"))
}

/// Splits `secret` into `shares` shares, any `threshold` of which rebuild
/// it. Coefficients from the system CSPRNG.
pub fn split(secret: &[u8], threshold: usize, shares: usize) -> Result<Vec<Share>, ShamirError> {
    if threshold < 1 || threshold > shares || shares > 255 {
        return Err(ShamirError::Parameters { threshold, shares });
    }
    if threshold == 1 || secret.is_empty() {
        // f(x) = s: every share is the secret.
        return Ok((1..=shares)
            .map(|x| Share {
                x: x as u8,
                y: Zeroizing::new(secret.to_vec()),
            })
            .collect());
    }
    let mut rng = SystemRng {
        rng: ring::rand::SystemRandom::new(),
        failed: false,
    };
    let ids = (1..=shares).map(|x| IdentifierGf256(Gf256(x as u8)));
    let made =
        Gf256::split_bytes_with_participant_ids_iter(threshold, shares, secret, &mut rng, ids)
            .map_err(sharing)?;
    let made: Vec<Zeroizing<Vec<u8>>> = made.into_iter().map(Zeroizing::new).collect();
    if rng.failed {
        return Err(ShamirError::Random);
    }
    let mut out = Vec::with_capacity(made.len());
    for (x, share) in (1..=shares).zip(&made) {
        // vsss-rs puts the identifier first, then f(x) per secret byte.
        if share.first() != Some(&(x as u8)) || share.len() != secret.len() + 1 {
            return Err(ShamirError::Sharing("unexpected share layout".into()));
        }
        out.push(Share {
            x: x as u8,
            y: Zeroizing::new(share[1..].to_vec()),
        });
    }
    Ok(out)
}

/// Rebuilds the secret from shares by Lagrange interpolation at 0. With
/// fewer shares than the threshold the result is a wrong secret, not an
/// error: the caller must know the threshold and check the result.
pub fn combine(shares: &[Share]) -> Result<Zeroizing<Vec<u8>>, ShamirError> {
    let first = shares.first().ok_or(ShamirError::NoShares)?;
    for (i, share) in shares.iter().enumerate() {
        if share.x == 0 {
            return Err(ShamirError::ZeroX);
        }
        if share.y.len() != first.y.len() {
            return Err(ShamirError::Length);
        }
        if shares[..i].iter().any(|s| s.x == share.x) {
            return Err(ShamirError::Duplicate(share.x));
        }
    }
    if shares.len() == 1 || first.y.is_empty() {
        // One point: the constant polynomial through it.
        return Ok(first.y.clone());
    }
    let mut points: Vec<Vec<u8>> = shares
        .iter()
        .map(|s| {
            let mut p = Vec::with_capacity(s.y.len() + 1);
            p.push(s.x);
            p.extend_from_slice(&s.y);
            p
        })
        .collect();
    let result = Gf256::combine_bytes(&points).map_err(sharing);
    for p in &mut points {
        p.zeroize();
    }
    Ok(Zeroizing::new(result?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn share(x: u8, y: &[u8]) -> Share {
        Share {
            x,
            y: Zeroizing::new(y.to_vec()),
        }
    }

    #[test]
    fn the_field_is_the_aes_field() {
        // FIPS-197 section 4.2: {57} . {83} = {c1}; {57} . {13} = {fe}.
        assert_eq!(Gf256(0x57) * Gf256(0x83), Gf256(0xc1));
        assert_eq!(Gf256(0x57) * Gf256(0x13), Gf256(0xfe));
        // FIPS-197 section 4.2.1: the inverse of {53} is {ca}.
        assert_eq!(Gf256(1) / Gf256(0x53), Gf256(0xca));
    }

    /// Shares worked out by hand for fixed polynomials.
    #[test]
    fn known_vectors() {
        // Threshold 2, f(x) = 0x42 + 0x01 x: f(1) = 0x43, f(2) = 0x40,
        // f(3) = 0x41.
        for pick in [[1, 2], [2, 3], [3, 1]] {
            let ys = [0x43, 0x40, 0x41];
            let chosen: Vec<Share> = pick
                .iter()
                .map(|&x| share(x, &[ys[x as usize - 1]]))
                .collect();
            assert_eq!(combine(&chosen).unwrap().as_slice(), [0x42]);
        }
        // Threshold 3, f(x) = 0x42 + 0x03 x + 0x02 x^2:
        //   f(1) = 0x42 ^ 0x03 ^ 0x02 = 0x43
        //   f(2) = 0x42 ^ (3.2 = 0x06) ^ (2.4 = 0x08) = 0x4c
        //   f(3) = 0x42 ^ (3.3 = 0x05) ^ (2.5 = 0x0a) = 0x4d
        //   f(4) = 0x42 ^ (3.4 = 0x0c) ^ (2.(4.4 = 0x10) = 0x20) = 0x6e
        let shares = [
            share(1, &[0x43]),
            share(2, &[0x4c]),
            share(3, &[0x4d]),
            share(4, &[0x6e]),
        ];
        for pick in [[0, 1, 2], [1, 2, 3], [0, 2, 3], [3, 0, 1]] {
            let chosen: Vec<Share> = pick.iter().map(|&i| shares[i].clone()).collect();
            assert_eq!(combine(&chosen).unwrap().as_slice(), [0x42]);
        }
        // Two shares (below the threshold) give a wrong value here.
        assert_ne!(combine(&shares[..2]).unwrap().as_slice(), [0x42]);
    }

    /// Shares made by writ's own GF(2^8) code before it used vsss-rs (a
    /// 3-of-5 split of a 32-byte secret): share files from then still
    /// open.
    #[test]
    fn shares_made_before_the_switch_still_combine() {
        let secret: Vec<u8> = (0u8..32)
            .map(|i| i.wrapping_mul(37).wrapping_add(11))
            .collect();
        let old = [
            "50e6d62824902f8dbf75c514e2b7cb016c2e5d8b3f064948e7a31a3947ece47f",
            "7fc5ea6d8c3a6923bd96fa1c114e98cade12c8c88fb10facbdbbec00b4bbf1c3",
            "2413693f376eafa031bb42aa341542fde9bc30895fa37fbad9b03bcbe46b743a",
            "c6d28eae5a60ae9436b9f5cc36e380abcbc651f86e7720f40a9ae9ea46d9688a",
            "9d040dfce1346817ba944d7a13b85a9cfc68a9b9be6550e26e913e211609ed73",
        ];
        let unhex = |h: &str| -> Vec<u8> {
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                .collect()
        };
        let shares: Vec<Share> = old
            .iter()
            .enumerate()
            .map(|(i, h)| share(i as u8 + 1, &unhex(h)))
            .collect();
        for pick in [[0, 1, 2], [4, 2, 0], [1, 3, 4], [3, 4, 1]] {
            let chosen: Vec<Share> = pick.iter().map(|&i| shares[i].clone()).collect();
            assert_eq!(combine(&chosen).unwrap().to_vec(), secret);
        }
        assert_ne!(combine(&shares[..2]).unwrap().to_vec(), secret);
    }

    #[test]
    fn errors() {
        assert!(split(b"s", 0, 3).is_err());
        assert!(split(b"s", 4, 3).is_err());
        assert!(split(b"s", 2, 256).is_err());
        let shares = split(b"secret", 2, 3).unwrap();
        assert_eq!(combine(&[]), Err(ShamirError::NoShares));
        assert_eq!(
            combine(&[shares[0].clone(), shares[0].clone()]),
            Err(ShamirError::Duplicate(1))
        );
        let mut short = shares[1].clone();
        short.y.pop();
        assert_eq!(
            combine(&[shares[0].clone(), short]),
            Err(ShamirError::Length)
        );
        assert_eq!(combine(&[share(0, b"x")]), Err(ShamirError::ZeroX));
        assert!(!format!("{:?}", shares[0]).contains("y"));
        // Shares are numbered 1..=n and differ from the secret.
        let xs: Vec<u8> = shares.iter().map(|s| s.x).collect();
        assert_eq!(xs, [1, 2, 3]);
        assert!(shares.iter().all(|s| s.y.as_slice() != b"secret"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any m of n shares rebuild the secret; m - 1 shares, as a
        /// combination, do not (with overwhelming probability for 32
        /// random bytes).
        #[test]
        fn any_threshold_subset(
            secret in proptest::collection::vec(any::<u8>(), 32),
            n in 1usize..=8,
            m_seed in 0usize..8,
            order in Just(()).prop_perturb(|_, mut rng| {
                let mut v: Vec<usize> = (0..8).collect();
                for i in (1..v.len()).rev() {
                    let j = (rng.next_u32() as usize) % (i + 1);
                    v.swap(i, j);
                }
                v
            }),
        ) {
            let m = m_seed % n + 1;
            let shares = split(&secret, m, n).unwrap();
            let picked: Vec<Share> = order
                .iter()
                .filter(|&&i| i < n)
                .take(m)
                .map(|&i| shares[i].clone())
                .collect();
            prop_assert_eq!(combine(&picked).unwrap().to_vec(), secret.clone());
            // Every share in addition still gives the secret.
            prop_assert_eq!(combine(&shares).unwrap().to_vec(), secret.clone());
            if m > 1 {
                prop_assert_ne!(combine(&picked[..m - 1]).unwrap().to_vec(), secret.clone());
            }
        }
    }
}
