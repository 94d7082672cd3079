//! Key escrow: an X25519 identity every new message is also sealed to,
//! whose secret exists only as M-of-N Shamir shares held by custodians.
//!
//! `writ escrow init` makes the escrow identity, splits its 32-byte secret
//! key into N shares ([`shamir`]), encrypts each share file to one
//! custodian's age recipient (or passphrase), writes the public recipient to
//! `keys/escrow.txt` (which [`crate::keys::Keyring::seal_recipients`]
//! reads, so every seal from then on includes it) and forgets the secret.
//! Each share goes to a different custodian: `init` refuses a recipient or
//! a passphrase given twice (that one person would hold two shares, so a
//! quorum with fewer others, or alone, than the threshold says).
//! `writ escrow recover` decrypts M share files with the custodians'
//! identities and rebuilds the identity: it opens every message sealed
//! after escrow was set up, with no keyring at all.
//!
//! A share file is an age file (to one custodian) holding text:
//!
//! ```text
//! # writ escrow share 2 of 5: any 3 shares rebuild the escrow key
//! writ-escrow-share: 1
//! escrow: age1...        the escrow recipient (shares of two escrows never mix)
//! threshold: 3
//! shares: 5
//! index: 2
//! share: <64 hex digits>
//! ```

pub mod shamir;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::x25519::{Identity, Recipient};
use secrecy::ExposeSecret;
use zeroize::{Zeroize, Zeroizing};

use crate::keys::{KeyError, atomic};

/// The escrow recipient file in the keyring directory.
pub const ESCROW_FILE: &str = "escrow.txt";
const SHARE_VERSION: &str = "1";

#[derive(Debug, thiserror::Error)]
pub enum EscrowError {
    #[error("{} exists: this keyring already has an escrow recipient", .path.display())]
    AlreadyEscrowed { path: PathBuf },
    #[error("{} exists: not overwriting it", .path.display())]
    Exists { path: PathBuf },
    #[error("--shares {shares} but {custodians} --custodian given: one custodian per share")]
    CustodianCount { shares: usize, custodians: usize },
    #[error(
        "--custodian {position} repeats --custodian {first} ({what}): one custodian would hold {count} shares; give each share a different custodian"
    )]
    DuplicateCustodian {
        position: usize,
        first: usize,
        what: String,
        count: usize,
    },
    #[error(transparent)]
    Shamir(#[from] shamir::ShamirError),
    #[error("share {}: none of the given identities or passphrases opens it (not this custodian's share?)", .path.display())]
    NotForUs { path: PathBuf },
    #[error("share {}: not a writ escrow share ({detail})", .path.display())]
    BadShare { path: PathBuf, detail: &'static str },
    #[error("share {} belongs to another escrow key ({other}, not {escrow})", .path.display())]
    OtherEscrow {
        path: PathBuf,
        escrow: String,
        other: String,
    },
    #[error("share {} repeats share {index}", .path.display())]
    Repeated { path: PathBuf, index: u8 },
    #[error(
        "{given} distinct share(s) given, {threshold} needed to rebuild the escrow key: {missing} missing"
    )]
    TooFew {
        given: usize,
        threshold: usize,
        missing: usize,
    },
    #[error("the shares do not rebuild escrow key {escrow}: a share is damaged")]
    Mismatch { escrow: String },
    #[error("identity file {}: {detail}", .path.display())]
    IdentityFile { path: PathBuf, detail: &'static str },
    #[error("no --share given")]
    NoShares,
    #[error("cannot encrypt share {}: {detail}", .path.display())]
    Encrypt { path: PathBuf, detail: String },
    #[error("cannot access {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EscrowError + '_ {
    move |source| EscrowError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Who holds a share: an age recipient, or a passphrase (the share file
/// is then age scrypt-encrypted, like `age -p`).
pub enum Custodian {
    Recipient(Recipient),
    Passphrase(secrecy::SecretString),
}

impl Custodian {
    /// How the custodian is named in the share file and the audit log (a
    /// passphrase is never shown).
    pub fn describe(&self) -> String {
        match self {
            Custodian::Recipient(r) => r.to_string(),
            Custodian::Passphrase(_) => "passphrase".to_string(),
        }
    }
}

/// The secrets that open share files: custodians' identities and
/// passphrases.
#[derive(Default)]
pub struct Openers {
    pub identities: Vec<Identity>,
    pub passphrases: Vec<secrecy::SecretString>,
}

/// What [`init`] made.
#[derive(Debug)]
pub struct Created {
    pub recipient: Recipient,
    pub share_files: Vec<PathBuf>,
}

/// The age identity with the given 32-byte X25519 secret key.
fn identity_from_bytes(key: &[u8]) -> Result<Identity, EscrowError> {
    let hrp = bech32::Hrp::parse("AGE-SECRET-KEY-").map_err(|_| EscrowError::Mismatch {
        escrow: String::new(),
    })?;
    let encoded = Zeroizing::new(
        bech32::encode::<bech32::Bech32>(hrp, key)
            .map_err(|_| EscrowError::Mismatch {
                escrow: String::new(),
            })?
            .to_uppercase(),
    );
    Identity::from_str(&encoded).map_err(|_| EscrowError::Mismatch {
        escrow: String::new(),
    })
}

fn hex(bytes: &[u8]) -> Zeroizing<String> {
    let mut s = Zeroizing::new(String::with_capacity(bytes.len() * 2));
    for b in bytes {
        s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    s
}

fn unhex(s: &str) -> Option<Zeroizing<Vec<u8>>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Zeroizing::new(Vec::with_capacity(s.len() / 2));
    for pair in s.as_bytes().chunks(2) {
        out.push(digit(pair[0])? << 4 | digit(pair[1])?);
    }
    Some(out)
}

/// The share file names for `n` shares in `out_dir`.
pub fn share_path(out_dir: &Path, index: usize, n: usize) -> PathBuf {
    out_dir.join(format!("escrow-share-{index}-of-{n}.age"))
}

/// Sets up escrow for the keyring in `keys_dir`: a new escrow identity,
/// split `threshold`-of-`custodians.len()`, one share file per custodian
/// in `out_dir`, then `keys_dir/escrow.txt`. The secret is zeroized.
pub fn init(
    keys_dir: &Path,
    out_dir: &Path,
    threshold: usize,
    custodians: &[Custodian],
) -> Result<Created, EscrowError> {
    let n = custodians.len();
    let escrow_path = keys_dir.join(ESCROW_FILE);
    let _lock = atomic::DirLock::acquire(keys_dir)?;
    if escrow_path.exists() {
        return Err(EscrowError::AlreadyEscrowed { path: escrow_path });
    }
    // Check the parameters before making anything.
    if threshold < 1 || threshold > n || n > 255 {
        return Err(shamir::ShamirError::Parameters {
            threshold,
            shares: n,
        }
        .into());
    }
    check_distinct(custodians)?;
    let paths: Vec<PathBuf> = (1..=n).map(|i| share_path(out_dir, i, n)).collect();
    for path in &paths {
        if path.exists() {
            return Err(EscrowError::Exists { path: path.clone() });
        }
    }

    let mut key = Zeroizing::new([0u8; 32]);
    {
        use ring::rand::SecureRandom as _;
        ring::rand::SystemRandom::new()
            .fill(key.as_mut())
            .map_err(|_| shamir::ShamirError::Random)?;
    }
    let identity = identity_from_bytes(key.as_ref())?;
    let recipient = identity.to_public();
    drop(identity);
    let shares = shamir::split(key.as_ref(), threshold, n)?;
    key.zeroize();

    atomic::create_private_dir(out_dir)?;
    let mut written = Vec::new();
    let result = (|| {
        for ((share, custodian), path) in shares.iter().zip(custodians).zip(&paths) {
            let mut text = Zeroizing::new(format!(
                "# writ escrow share {} of {n}: any {threshold} shares rebuild the escrow key\n\
                 # custodian: {}\n\
                 writ-escrow-share: {SHARE_VERSION}\n\
                 escrow: {recipient}\n\
                 threshold: {threshold}\n\
                 shares: {n}\n\
                 index: {}\n\
                 share: ",
                share.x,
                custodian.describe(),
                share.x
            ));
            text.push_str(&hex(&share.y));
            text.push('\n');
            let ct = encrypt_to(path, custodian, text.as_bytes())?;
            atomic::write_atomic(path, &ct)?;
            written.push(path.clone());
        }
        let text = format!(
            "# escrow recipient: its secret is split {threshold}-of-{n} among custodians\n{recipient}\n"
        );
        atomic::write_atomic(&escrow_path, text.as_bytes())?;
        Ok(())
    })();
    if let Err(e) = result {
        for path in &written {
            let _ = std::fs::remove_file(path);
        }
        return Err(e);
    }
    Ok(Created {
        recipient,
        share_files: written,
    })
}

/// Refuses a custodian given twice (the same recipient, or the same
/// passphrase): that one person would hold several shares, and with them a
/// quorum with fewer others (or alone) than the threshold promises.
fn check_distinct(custodians: &[Custodian]) -> Result<(), EscrowError> {
    for (i, c) in custodians.iter().enumerate() {
        let same = |other: &Custodian| match (c, other) {
            (Custodian::Recipient(a), Custodian::Recipient(b)) => a == b,
            (Custodian::Passphrase(a), Custodian::Passphrase(b)) => {
                a.expose_secret() == b.expose_secret()
            }
            _ => false,
        };
        if let Some(first) = custodians[..i].iter().position(same) {
            return Err(EscrowError::DuplicateCustodian {
                position: i + 1,
                first: first + 1,
                what: match c {
                    Custodian::Recipient(r) => r.to_string(),
                    Custodian::Passphrase(_) => "the same passphrase".to_string(),
                },
                count: custodians.iter().filter(|o| same(o)).count(),
            });
        }
    }
    Ok(())
}

fn encrypt_to(path: &Path, to: &Custodian, plaintext: &[u8]) -> Result<Vec<u8>, EscrowError> {
    let scrypt;
    let recipient: &dyn age::Recipient = match to {
        Custodian::Recipient(r) => r,
        Custodian::Passphrase(p) => {
            scrypt = age::scrypt::Recipient::new(p.clone());
            &scrypt
        }
    };
    crate::keys::encrypt_armored(path, recipient, plaintext).map_err(|e| match e {
        KeyError::Encrypt { path, detail } => EscrowError::Encrypt { path, detail },
        other => other.into(),
    })
}

/// Reads age identity files (as `age-keygen` writes them: `#` comments and
/// `AGE-SECRET-KEY-1...` lines).
pub fn read_identities(paths: &[PathBuf]) -> Result<Vec<Identity>, EscrowError> {
    let mut identities = Vec::new();
    for path in paths {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io_err(path))?);
        let before = identities.len();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            identities.push(
                Identity::from_str(line).map_err(|_| EscrowError::IdentityFile {
                    path: path.clone(),
                    detail: "a line is not an age X25519 identity (AGE-SECRET-KEY-1...)",
                })?,
            );
        }
        if identities.len() == before {
            return Err(EscrowError::IdentityFile {
                path: path.clone(),
                detail: "holds no identity",
            });
        }
    }
    Ok(identities)
}

/// One decrypted share file.
struct ShareFile {
    escrow: String,
    threshold: usize,
    share: shamir::Share,
}

fn read_share(path: &Path, openers: &Openers) -> Result<ShareFile, EscrowError> {
    let bad = |detail: &'static str| EscrowError::BadShare {
        path: path.to_path_buf(),
        detail,
    };
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let armored = age::armor::ArmoredReader::new(&bytes[..]);
    let decryptor = age::Decryptor::new(armored).map_err(|_| bad("not an age file"))?;
    let not_for_us = || EscrowError::NotForUs {
        path: path.to_path_buf(),
    };
    let mut reader = if decryptor.is_scrypt() {
        // Each passphrase costs one scrypt run; age takes one scrypt
        // identity at a time, so a decryptor per passphrase.
        let mut found = None;
        for passphrase in &openers.passphrases {
            let identity = age::scrypt::Identity::new(passphrase.clone());
            let armored = age::armor::ArmoredReader::new(&bytes[..]);
            let decryptor = age::Decryptor::new(armored).map_err(|_| bad("not an age file"))?;
            match decryptor.decrypt(std::iter::once(&identity as &dyn age::Identity)) {
                Ok(reader) => {
                    found = Some(reader);
                    break;
                }
                Err(age::DecryptError::DecryptionFailed | age::DecryptError::NoMatchingKeys) => {}
                Err(_) => return Err(bad("damaged")),
            }
        }
        found.ok_or_else(not_for_us)?
    } else {
        decryptor
            .decrypt(openers.identities.iter().map(|i| i as &dyn age::Identity))
            .map_err(|e| match e {
                age::DecryptError::NoMatchingKeys => not_for_us(),
                _ => bad("damaged"),
            })?
    };
    let mut text = Zeroizing::new(Vec::new());
    reader.read_to_end(&mut text).map_err(|_| bad("damaged"))?;
    let text = std::str::from_utf8(&text).map_err(|_| bad("not text"))?;
    let field = |name: &str| crate::keys::text_field(text, name);
    if field("writ-escrow-share") != Some(SHARE_VERSION) {
        return Err(bad("unknown version"));
    }
    let escrow = field("escrow").ok_or_else(|| bad("no escrow line"))?;
    Recipient::from_str(escrow).map_err(|_| bad("escrow is not an age recipient"))?;
    let threshold: usize = field("threshold")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no threshold"))?;
    let x: u8 = field("index")
        .and_then(|s| s.parse().ok())
        .filter(|&x| x != 0)
        .ok_or_else(|| bad("no index"))?;
    let y = field("share")
        .and_then(unhex)
        .filter(|y| y.len() == 32)
        .ok_or_else(|| bad("no share"))?;
    Ok(ShareFile {
        escrow: escrow.to_string(),
        threshold,
        share: shamir::Share { x, y },
    })
}

/// What [`recover`] rebuilt.
pub struct Recovered {
    pub identity: Identity,
    /// The share numbers used.
    pub used: Vec<u8>,
}

/// Rebuilds the escrow identity from share files, each decrypted with one
/// of `openers` (the custodians' identities or passphrases). Needs at least the threshold the
/// shares name; checks the result against the escrow recipient they name.
pub fn recover(share_paths: &[PathBuf], openers: &Openers) -> Result<Recovered, EscrowError> {
    if share_paths.is_empty() {
        return Err(EscrowError::NoShares);
    }
    let mut files: Vec<ShareFile> = Vec::new();
    for path in share_paths {
        let file = read_share(path, openers)?;
        if let Some(first) = files.first() {
            if file.escrow != first.escrow {
                return Err(EscrowError::OtherEscrow {
                    path: path.clone(),
                    escrow: first.escrow.clone(),
                    other: file.escrow,
                });
            }
            if file.threshold != first.threshold {
                return Err(EscrowError::BadShare {
                    path: path.clone(),
                    detail: "its threshold differs from the other shares'",
                });
            }
        }
        if files.iter().any(|f| f.share.x == file.share.x) {
            return Err(EscrowError::Repeated {
                path: path.clone(),
                index: file.share.x,
            });
        }
        files.push(file);
    }
    let threshold = files[0].threshold;
    let escrow = files[0].escrow.clone();
    if files.len() < threshold {
        return Err(EscrowError::TooFew {
            given: files.len(),
            threshold,
            missing: threshold - files.len(),
        });
    }
    let shares: Vec<shamir::Share> = files.iter().map(|f| f.share.clone()).collect();
    let key = shamir::combine(&shares)?;
    let identity = identity_from_bytes(&key).map_err(|_| EscrowError::Mismatch {
        escrow: escrow.clone(),
    })?;
    if identity.to_public().to_string() != escrow {
        return Err(EscrowError::Mismatch { escrow });
    }
    Ok(Recovered {
        identity,
        used: shares.iter().map(|s| s.x).collect(),
    })
}

/// The identity file text `recover` writes (as `age-keygen` would).
pub fn identity_file_text(identity: &Identity) -> Zeroizing<String> {
    let mut text = Zeroizing::new(format!(
        "# writ escrow identity, rebuilt from shares\n# public key: {}\n",
        identity.to_public()
    ));
    text.push_str(identity.to_string().expose_secret());
    text.push('\n');
    text
}

/// Writes the rebuilt identity to `path` (0600, atomic), refusing to
/// overwrite a file.
pub fn write_identity(path: &Path, identity: &Identity) -> Result<(), EscrowError> {
    if path.exists() {
        return Err(EscrowError::Exists {
            path: path.to_path_buf(),
        });
    }
    atomic::write_atomic(path, identity_file_text(identity).as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_and_recover() {
        let keys = tempfile::tempdir().unwrap();
        let out = keys.path().join("shares");
        let custodians: Vec<Identity> = (0..3).map(|_| Identity::generate()).collect();
        let recipients: Vec<Custodian> = custodians
            .iter()
            .map(|i| Custodian::Recipient(i.to_public()))
            .collect();
        let created = init(keys.path(), &out, 2, &recipients).unwrap();
        assert_eq!(created.share_files.len(), 3);
        let escrow_txt = std::fs::read_to_string(keys.path().join(ESCROW_FILE)).unwrap();
        assert!(escrow_txt.contains(&created.recipient.to_string()));
        assert!(matches!(
            init(keys.path(), &out, 2, &recipients),
            Err(EscrowError::AlreadyEscrowed { .. })
        ));

        let openers = Openers {
            identities: custodians.clone(),
            passphrases: Vec::new(),
        };
        let r = recover(&created.share_files[1..], &openers).unwrap();
        assert_eq!(r.identity.to_public(), created.recipient);
        assert_eq!(r.used, [2, 3]);
        let e = recover(&created.share_files[..1], &openers).err().unwrap();
        assert_eq!(
            e.to_string(),
            "1 distinct share(s) given, 2 needed to rebuild the escrow key: 1 missing"
        );
        let others = Openers {
            identities: custodians[1..].to_vec(),
            passphrases: Vec::new(),
        };
        let e = recover(&created.share_files[..1], &others).err().unwrap();
        assert!(matches!(e, EscrowError::NotForUs { .. }), "{e}");
    }

    #[test]
    fn bytes_roundtrip() {
        let key = [7u8; 32];
        let id = identity_from_bytes(&key).unwrap();
        let (_, data) = bech32::decode(id.to_string().expose_secret()).unwrap();
        assert_eq!(data, key);
        assert_eq!(unhex(&hex(&key)).unwrap().as_slice(), key);
    }
}
