//! Shamir secret sharing over GF(2^8), byte by byte.
//!
//! Written here rather than taken from a crate: split and combine are about
//! sixty lines, easy to read in full and to check against hand-computed
//! vectors (below), while the Shamir crates on crates.io are small,
//! single-author and mostly unmaintained, and each pulls in its own share
//! encoding. What matters for safety is small enough to audit here:
//!
//! - The field is GF(2^8) with the AES polynomial x^8 + x^4 + x^3 + x + 1
//!   (0x11b); multiplication is a constant-time shift-and-add (no lookup
//!   tables indexed by secret bytes, so no cache-timing leak), inversion is
//!   a^254.
//! - Each secret byte s gets its own random polynomial
//!   f(x) = s + a1 x + ... + a(m-1) x^(m-1); share i holds f(i) for
//!   i = 1..=n (never x = 0, which is the secret). The coefficients come
//!   from the system's CSPRNG and are zeroized after use.
//! - Any m shares determine f, and Lagrange interpolation at 0 gives s;
//!   m - 1 shares are consistent with every value of s, so they reveal
//!   nothing about it.

use zeroize::Zeroizing;

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
}

/// Multiplication in GF(2^8) mod 0x11b, in constant time.
pub fn gf_mul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    for _ in 0..8 {
        p ^= a & 0u8.wrapping_sub(b & 1);
        let carry = 0u8.wrapping_sub(a >> 7);
        a = (a << 1) ^ (carry & 0x1b);
        b >>= 1;
    }
    p
}

/// Multiplicative inverse (a^254); 0 maps to 0.
pub fn gf_inv(a: u8) -> u8 {
    // a^254 = a^(2+4+8+16+32+64+128)
    let mut result = 1u8;
    let mut square = a;
    for _ in 0..7 {
        square = gf_mul(square, square);
        result = gf_mul(result, square);
    }
    result
}

/// f(x) for coefficients (constant first), by Horner's rule.
fn eval(coefficients: &[u8], x: u8) -> u8 {
    coefficients
        .iter()
        .rev()
        .fold(0u8, |acc, &c| gf_mul(acc, x) ^ c)
}

/// Splits `secret` into `shares` shares, any `threshold` of which rebuild
/// it. Coefficients from the system CSPRNG.
pub fn split(secret: &[u8], threshold: usize, shares: usize) -> Result<Vec<Share>, ShamirError> {
    use ring::rand::SecureRandom as _;
    let rng = ring::rand::SystemRandom::new();
    split_with(secret, threshold, shares, |buf| {
        rng.fill(buf).map_err(|_| ShamirError::Random)
    })
}

/// [`split`] with the coefficients a1..a(m-1) of each byte's polynomial
/// taken from `fill` (tests pass fixed ones).
pub fn split_with(
    secret: &[u8],
    threshold: usize,
    shares: usize,
    mut fill: impl FnMut(&mut [u8]) -> Result<(), ShamirError>,
) -> Result<Vec<Share>, ShamirError> {
    if threshold < 1 || threshold > shares || shares > 255 {
        return Err(ShamirError::Parameters { threshold, shares });
    }
    let mut out: Vec<Share> = (1..=shares)
        .map(|x| Share {
            x: x as u8,
            y: Zeroizing::new(Vec::with_capacity(secret.len())),
        })
        .collect();
    let mut coefficients = Zeroizing::new(vec![0u8; threshold]);
    for &s in secret {
        coefficients[0] = s;
        fill(&mut coefficients[1..])?;
        for share in &mut out {
            share.y.push(eval(&coefficients, share.x));
        }
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
    // Lagrange basis at 0: l_i = prod_{j != i} x_j / (x_j - x_i); in
    // characteristic 2, subtraction is xor.
    let basis: Vec<u8> = shares
        .iter()
        .map(|si| {
            shares
                .iter()
                .filter(|sj| sj.x != si.x)
                .fold(1u8, |acc, sj| {
                    gf_mul(acc, gf_mul(sj.x, gf_inv(sj.x ^ si.x)))
                })
        })
        .collect();
    let mut secret = Zeroizing::new(vec![0u8; first.y.len()]);
    for (share, &l) in shares.iter().zip(&basis) {
        for (s, &y) in secret.iter_mut().zip(share.y.iter()) {
            *s ^= gf_mul(l, y);
        }
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn field_known_values() {
        // FIPS-197 section 4.2: {57} . {83} = {c1}; {57} . {13} = {fe}.
        assert_eq!(gf_mul(0x57, 0x83), 0xc1);
        assert_eq!(gf_mul(0x57, 0x13), 0xfe);
        // FIPS-197 section 4.2.1: the inverse of {53} is {ca}.
        assert_eq!(gf_inv(0x53), 0xca);
        assert_eq!(gf_inv(0), 0);
        for a in 1..=255u8 {
            assert_eq!(gf_mul(a, gf_inv(a)), 1, "{a:#x}");
            assert_eq!(gf_mul(a, 1), a);
            assert_eq!(gf_mul(a, 0), 0);
        }
    }

    /// Shares worked out by hand for fixed polynomials.
    #[test]
    fn known_vectors() {
        // Threshold 2, f(x) = 0x42 + 0x01 x: f(1) = 0x43, f(2) = 0x40,
        // f(3) = 0x41.
        let shares = split_with(&[0x42], 2, 3, |c| {
            c.fill(0x01);
            Ok(())
        })
        .unwrap();
        let ys: Vec<u8> = shares.iter().map(|s| s.y[0]).collect();
        assert_eq!(ys, [0x43, 0x40, 0x41]);

        // Threshold 3, f(x) = 0x42 + 0x03 x + 0x02 x^2:
        //   f(1) = 0x42 ^ 0x03 ^ 0x02 = 0x43
        //   f(2) = 0x42 ^ (3.2 = 0x06) ^ (2.4 = 0x08) = 0x4c
        //   f(3) = 0x42 ^ (3.3 = 0x05) ^ (2.5 = 0x0a) = 0x4d
        //   f(4) = 0x42 ^ (3.4 = 0x0c) ^ (2.(4.4 = 0x10) = 0x20) = 0x6e
        let mut coefficients = [0x03u8, 0x02].into_iter().cycle();
        let shares = split_with(&[0x42], 3, 4, |c| {
            for b in c.iter_mut() {
                *b = coefficients.next().unwrap();
            }
            Ok(())
        })
        .unwrap();
        let ys: Vec<u8> = shares.iter().map(|s| s.y[0]).collect();
        assert_eq!(ys, [0x43, 0x4c, 0x4d, 0x6e]);
        for pick in [[0, 1, 2], [1, 2, 3], [0, 2, 3], [3, 0, 1]] {
            let chosen: Vec<Share> = pick.iter().map(|&i| shares[i].clone()).collect();
            assert_eq!(combine(&chosen).unwrap().as_slice(), [0x42]);
        }
        // Two shares (below the threshold) give a wrong value here.
        assert_ne!(combine(&shares[..2]).unwrap().as_slice(), [0x42]);

        // Combining by hand: shares (1, 0x43) and (2, 0x40) of the first
        // polynomial: l1 = 2/(2^1) = 2/3, l2 = 1/(1^2) = 1/3, and
        // 2/3 . 0x43 ^ 1/3 . 0x40 = 0x42.
        let a = Share {
            x: 1,
            y: Zeroizing::new(vec![0x43]),
        };
        let b = Share {
            x: 2,
            y: Zeroizing::new(vec![0x40]),
        };
        assert_eq!(combine(&[a, b]).unwrap().as_slice(), [0x42]);
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
        assert!(!format!("{:?}", shares[0]).contains("y"));
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
