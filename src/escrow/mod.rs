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
//! What `recover` trusts: a share file is encrypted to a custodian's
//! *public* recipient, so anyone can make one, naming any escrow key. The
//! rebuilt key is therefore checked against the keyring's own `escrow.txt`
//! when there is one, or the recipient `keyring.toml` records when
//! `escrow.txt` is gone ([`keyring_escrow`]): every share must name that
//! recipient and the rebuilt identity must be its. Only without either
//! (the keyring lost) is the recipient the shares name the reference, and
//! the caller says so. Given more shares than the threshold
//! that do not rebuild the key together, `recover` tries the
//! threshold-sized subsets (at most [`MAX_COMBINATIONS`]; past that it
//! asks for exactly the threshold), rebuilds from the one that matches and
//! most shares fit, and names the shares that do not fit it (damaged or
//! forged): a share fits exactly when adding it to that subset leaves the
//! key unchanged. When two such subsets tie with different misfits (a
//! share altered only in the four bits X25519 clamps, next to exactly the
//! threshold of good ones), it names them all as "one of these". One
//! altered share is never named wrongly; several custodians altering
//! theirs together in those bits can have a good share named instead. The
//! key is the escrow recipient's either way.
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
/// The most threshold-sized subsets `recover` tries to find the shares
/// that do not fit (10,000: about a second, an X25519 multiplication each).
pub const MAX_COMBINATIONS: u64 = 10_000;
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
    #[error(
        "the shares do not rebuild escrow key {escrow}: a share is damaged or forged; give one more custodian's share to find which"
    )]
    Mismatch { escrow: String },
    #[error(
        "no {threshold} of the {given} shares rebuild escrow key {escrow}: more than {} are damaged or forged; give other custodians' shares", .given - .threshold
    )]
    NoQuorum {
        escrow: String,
        given: usize,
        threshold: usize,
    },
    #[error(
        "the {given} shares do not rebuild escrow key {escrow} together, and finding which do not fit would take more than {MAX_COMBINATIONS} tries: give exactly {threshold} shares at a time"
    )]
    TooManyCombinations {
        escrow: String,
        given: usize,
        threshold: usize,
    },
    #[error(
        "share {} is for escrow key {claimed}, but {} holds {expected}: a forged share or another keyring's; leave it out, or give --keys the keyring it was made for", .path.display(), .escrow_file.display()
    )]
    NotKeyringEscrow {
        path: PathBuf,
        claimed: String,
        escrow_file: PathBuf,
        expected: String,
    },
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
    /// Why keyring.toml could not record the recipient, if it could not
    /// (escrow works all the same; the next rewrite records it).
    pub unrecorded: Option<crate::keys::KeyError>,
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
        // An error may come after the rename (the directory's fsync):
        // escrow.txt goes with the shares, never left naming a key whose
        // shares were removed.
        atomic::write_atomic(&escrow_path, text.as_bytes()).inspect_err(|_| {
            let _ = std::fs::remove_file(&escrow_path);
        })?;
        Ok(())
    })();
    if let Err(e) = result {
        for path in &written {
            let _ = std::fs::remove_file(path);
        }
        return Err(e);
    }
    // Recorded in keyring.toml last. Escrow is set up either way (the
    // shares and escrow.txt stay): a keyring.toml without the record
    // takes escrow.txt as it is and records it at its next rewrite, so a
    // failure here (or a crash before) is reported, not undone.
    let unrecorded = crate::keys::Keyring::record_escrow(keys_dir, &recipient).err();
    Ok(Created {
        recipient,
        share_files: written,
        unrecorded,
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
        .filter(|t| (1..=255).contains(t))
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

/// The keyring's escrow recipient, from `escrow.txt` in `keys_dir`:
/// what [`recover`] checks the rebuilt key against.
pub struct KeyringEscrow {
    pub path: PathBuf,
    pub recipient: Recipient,
}

/// Reads `keys_dir/escrow.txt`, or the recipient keyring.toml records
/// when escrow.txt is gone; `None` when neither names one (no keyring, or
/// one without escrow). A damaged escrow.txt is an error, not `None`, and
/// so is one naming another recipient than the record (a replaced file:
/// shares made for it are not to be trusted). A keyring.toml that cannot
/// be read is passed over (escrow.txt alone, as before the record): this
/// is the tool for the day the keyring is broken.
pub fn keyring_escrow(keys_dir: &Path) -> Result<Option<KeyringEscrow>, EscrowError> {
    let path = keys_dir.join(ESCROW_FILE);
    let file = crate::keys::read_escrow(&path)?;
    let recorded = crate::keys::recorded_escrow(keys_dir).ok().flatten();
    Ok(match (file, recorded) {
        (Some(named), Some(recorded)) if named != recorded => {
            return Err(crate::keys::KeyError::EscrowMismatch {
                path,
                named: named.to_string(),
                recorded: recorded.to_string(),
            }
            .into());
        }
        (Some(recipient), _) => Some(KeyringEscrow { path, recipient }),
        (None, Some(recipient)) => Some(KeyringEscrow {
            path: keys_dir.join(crate::keys::KEYRING_FILE),
            recipient,
        }),
        (None, None) => None,
    })
}

/// What [`recover`] rebuilt.
pub struct Recovered {
    pub identity: Identity,
    /// The numbers of the shares that fit the rebuilt key, in the order
    /// given (when `misfits_ambiguous`, those no misfit could be).
    pub used: Vec<u8>,
    /// The share files given that do not fit it (damaged or forged), with
    /// their numbers.
    pub misfits: Vec<(PathBuf, u8)>,
    /// Some of `misfits` do fit, but which cannot be told: the bad share
    /// differs only in bits the key ignores (see [`recover`]'s code).
    pub misfits_ambiguous: bool,
}

/// Rebuilds the escrow identity from share files, each decrypted with one
/// of `openers` (the custodians' identities or passphrases). Needs at
/// least the threshold the shares name. The result must be `expected`
/// (the keyring's escrow.txt) when given, else the recipient the shares
/// name; with more shares than the threshold, the shares that do not fit
/// are left out and named (see the module header).
pub fn recover(
    share_paths: &[PathBuf],
    openers: &Openers,
    expected: Option<&KeyringEscrow>,
) -> Result<Recovered, EscrowError> {
    if share_paths.is_empty() {
        return Err(EscrowError::NoShares);
    }
    let mut files: Vec<ShareFile> = Vec::new();
    for path in share_paths {
        let file = read_share(path, openers)?;
        if let Some(expected) = expected
            && file.escrow != expected.recipient.to_string()
        {
            return Err(EscrowError::NotKeyringEscrow {
                path: path.clone(),
                claimed: file.escrow,
                escrow_file: expected.path.clone(),
                expected: expected.recipient.to_string(),
            });
        }
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
    let target = Recipient::from_str(&escrow).map_err(|_| EscrowError::BadShare {
        path: share_paths[0].clone(),
        detail: "escrow is not an age recipient",
    })?;
    let combine = |set: &[usize]| {
        let shares: Vec<shamir::Share> = set.iter().map(|&i| files[i].share.clone()).collect();
        shamir::combine(&shares)
    };
    // The identity `set` rebuilds, if it is the target's.
    let rebuild = |set: &[usize]| -> Result<Option<Identity>, EscrowError> {
        let identity = identity_from_bytes(&combine(set)?).map_err(|_| EscrowError::Mismatch {
            escrow: escrow.clone(),
        })?;
        Ok((identity.to_public() == target).then_some(identity))
    };
    let all: Vec<usize> = (0..files.len()).collect();
    if let Some(identity) = rebuild(&all)? {
        return Ok(Recovered {
            identity,
            used: files.iter().map(|f| f.share.x).collect(),
            misfits: Vec::new(),
            misfits_ambiguous: false,
        });
    }
    if files.len() == threshold {
        return Err(EscrowError::Mismatch { escrow });
    }
    if binomial_above(files.len(), threshold, MAX_COMBINATIONS) {
        return Err(EscrowError::TooManyCombinations {
            escrow,
            given: files.len(),
            threshold,
        });
    }
    // Which shares fit the polynomial `set` determines: a share fits when
    // adding it leaves the key unchanged (its Lagrange weight at 0 is
    // never zero, so a wrong share moves the key).
    let fitting = |set: &[usize]| -> Result<Vec<bool>, EscrowError> {
        let key = combine(set)?;
        (0..files.len())
            .map(|i| {
                if set.contains(&i) {
                    return Ok(true);
                }
                let mut with = set.to_vec();
                with.push(i);
                Ok(*combine(&with)? == *key)
            })
            .collect()
    };
    // Of the subsets that rebuild the target, the ones most shares fit, not
    // the first: X25519 ignores four bits of the key (clamping), so a
    // subset holding a share damaged only there rebuilds the target too,
    // and every good share outside it would seem not to fit. With only
    // the threshold of good shares, such a subset ties with the good one
    // and which share is bad cannot be told (the key is right either way).
    let mut best: Option<(Identity, Vec<bool>)> = None;
    let mut best_count = 0;
    let mut ambiguous = false;
    let mut set: Vec<usize> = (0..threshold).collect();
    loop {
        if let Some(identity) = rebuild(&set)? {
            let fits = fitting(&set)?;
            let count = fits.iter().filter(|&&f| f).count();
            match &mut best {
                Some((_, all)) if count == best_count => {
                    if *all != fits {
                        ambiguous = true;
                        for (a, f) in all.iter_mut().zip(&fits) {
                            *a &= f;
                        }
                    }
                }
                Some(_) if count < best_count => {}
                _ => {
                    best = Some((identity, fits));
                    best_count = count;
                    ambiguous = false;
                }
            }
        }
        if !next_combination(&mut set, files.len()) {
            break;
        }
    }
    let Some((identity, fits)) = best else {
        return Err(EscrowError::NoQuorum {
            escrow,
            given: files.len(),
            threshold,
        });
    };
    let mut used = Vec::new();
    let mut misfits = Vec::new();
    for ((file, path), fits) in files.iter().zip(share_paths).zip(fits) {
        if fits {
            used.push(file.share.x);
        } else {
            misfits.push((path.clone(), file.share.x));
        }
    }
    Ok(Recovered {
        identity,
        used,
        misfits,
        misfits_ambiguous: ambiguous,
    })
}

/// Whether C(n, k) > `limit`.
fn binomial_above(n: usize, k: usize, limit: u64) -> bool {
    let k = k.min(n - k) as u128;
    let n = n as u128;
    let mut c: u128 = 1;
    for i in 0..k {
        // C(n, i + 1), exact; it grows with i up to k <= n / 2.
        c = c * (n - i) / (i + 1);
        if c > u128::from(limit) {
            return true;
        }
    }
    false
}

/// The next k-subset of 0..n in lexicographic order, in place; `false`
/// after the last.
fn next_combination(set: &mut [usize], n: usize) -> bool {
    let k = set.len();
    for i in (0..k).rev() {
        if set[i] < n - k + i {
            set[i] += 1;
            for j in i + 1..k {
                set[j] = set[j - 1] + 1;
            }
            return true;
        }
    }
    false
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

    /// A directory with a keyring (no escrow yet), work factor 10.
    fn keyring_dir() -> tempfile::TempDir {
        let keys = tempfile::tempdir().unwrap();
        crate::keys::Keyring::init(
            keys.path(),
            &secrecy::SecretString::from("p".to_string()),
            None,
            Some(10),
        )
        .unwrap();
        keys
    }

    #[test]
    fn a_record_that_fails_leaves_escrow_set_up_and_says_so() {
        // keyring.toml could not record the recipient (here: there is no
        // keyring.toml): escrow.txt and the shares stay, consistent with
        // each other, and the caller is told.
        let keys = tempfile::tempdir().unwrap();
        let out = keys.path().join("shares");
        let custodians: Vec<Custodian> = (0..2)
            .map(|_| Custodian::Recipient(Identity::generate().to_public()))
            .collect();
        let created = init(keys.path(), &out, 2, &custodians).unwrap();
        assert!(
            matches!(
                created.unrecorded,
                Some(crate::keys::KeyError::NoKeyring { .. })
            ),
            "{:?}",
            created.unrecorded
        );
        assert!(keys.path().join(ESCROW_FILE).exists());
        assert!(created.share_files.iter().all(|p| p.exists()));
    }

    #[test]
    fn recover_checks_against_the_record_when_escrow_txt_is_gone_or_replaced() {
        let keys = keyring_dir();
        let custodians: Vec<Custodian> = (0..2)
            .map(|_| Custodian::Recipient(Identity::generate().to_public()))
            .collect();
        let created = init(keys.path(), &keys.path().join("s"), 2, &custodians).unwrap();
        assert!(created.unrecorded.is_none());
        let escrow_txt = keys.path().join(ESCROW_FILE);
        let got = keyring_escrow(keys.path()).unwrap().unwrap();
        assert_eq!(
            (got.path, got.recipient),
            (escrow_txt.clone(), created.recipient.clone())
        );
        // Gone: the recipient keyring.toml records.
        std::fs::remove_file(&escrow_txt).unwrap();
        let got = keyring_escrow(keys.path()).unwrap().unwrap();
        assert_eq!(got.recipient, created.recipient);
        assert!(got.path.ends_with("keyring.toml"), "{}", got.path.display());
        // Replaced by another recipient: refused.
        let other = Identity::generate().to_public();
        std::fs::write(&escrow_txt, format!("{other}\n")).unwrap();
        assert!(keyring_escrow(keys.path()).is_err());
        // A keyring.toml that does not even parse (the day the keyring is
        // broken): escrow.txt alone, as before the record.
        std::fs::write(&escrow_txt, format!("{}\n", created.recipient)).unwrap();
        std::fs::write(keys.path().join("keyring.toml"), "version = [damaged").unwrap();
        let got = keyring_escrow(keys.path()).unwrap().unwrap();
        assert_eq!((got.path, got.recipient), (escrow_txt, created.recipient));
    }

    #[test]
    fn init_and_recover() {
        let keys = keyring_dir();
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
        // Recorded in keyring.toml: a lost escrow.txt is refused, not
        // taken for a keyring without escrow.
        let loaded = crate::keys::Keyring::load(keys.path()).unwrap();
        assert_eq!(loaded.escrow(), Some(&created.recipient));
        let toml = std::fs::read_to_string(keys.path().join("keyring.toml")).unwrap();
        assert!(toml.contains(&created.recipient.to_string()), "{toml}");
        assert!(matches!(
            init(keys.path(), &out, 2, &recipients),
            Err(EscrowError::AlreadyEscrowed { .. })
        ));

        let openers = Openers {
            identities: custodians.clone(),
            passphrases: Vec::new(),
        };
        let r = recover(&created.share_files[1..], &openers, None).unwrap();
        assert_eq!(r.identity.to_public(), created.recipient);
        assert_eq!(r.used, [2, 3]);
        let e = recover(&created.share_files[..1], &openers, None)
            .err()
            .unwrap();
        assert_eq!(
            e.to_string(),
            "1 distinct share(s) given, 2 needed to rebuild the escrow key: 1 missing"
        );
        let others = Openers {
            identities: custodians[1..].to_vec(),
            passphrases: Vec::new(),
        };
        let e = recover(&created.share_files[..1], &others, None)
            .err()
            .unwrap();
        assert!(matches!(e, EscrowError::NotForUs { .. }), "{e}");
    }

    #[test]
    fn misfit_hidden_by_clamping() {
        // A share damaged only in bits X25519 ignores (clamping) for the
        // first subset holding it: that subset rebuilds the escrow
        // recipient too; recover must still name that share, not the good
        // one outside the subset.
        let dir = tempfile::tempdir().unwrap();
        let custodian = Identity::generate();
        let to = Custodian::Recipient(custodian.to_public());
        let key = [0x42u8; 32];
        let recipient = identity_from_bytes(&key).unwrap().to_public();
        let shares = shamir::split(&key, 2, 4).unwrap();
        let rebuilds = |set: &[shamir::Share]| {
            identity_from_bytes(&shamir::combine(set).unwrap())
                .unwrap()
                .to_public()
                == recipient
        };
        let damaged = (1..=255u8)
            .map(|d| {
                let mut s = shares[0].clone();
                s.y[0] ^= d;
                s
            })
            .find(|s| {
                let mut all = shares.clone();
                all[0] = s.clone();
                rebuilds(&all[..2]) && !rebuilds(&all[..3]) && !rebuilds(&all)
            })
            .unwrap();
        let write = |share: &shamir::Share| {
            let path = dir.path().join(format!("share-{}.age", share.x));
            let text = format!(
                "writ-escrow-share: 1\nescrow: {recipient}\nthreshold: 2\nshares: 4\nindex: {}\nshare: {}\n",
                share.x,
                hex(&share.y).as_str()
            );
            std::fs::write(&path, encrypt_to(&path, &to, text.as_bytes()).unwrap()).unwrap();
            path
        };
        let openers = Openers {
            identities: vec![custodian],
            passphrases: Vec::new(),
        };
        // With one more good share, the damaged one is named.
        let paths = [&damaged, &shares[1], &shares[2], &shares[3]].map(write);
        let r = recover(&paths, &openers, None).unwrap();
        assert_eq!(r.identity.to_public(), recipient);
        assert_eq!(r.used, [2, 3, 4]);
        assert_eq!(r.misfits, [(paths[0].clone(), 1)]);
        assert!(!r.misfits_ambiguous);
        // With exactly the threshold of good ones, {1, 2} and {2, 3} both
        // rebuild the recipient: 1 or 3, which cannot be told.
        let r = recover(&paths[..3], &openers, None).unwrap();
        assert_eq!(r.identity.to_public(), recipient);
        assert_eq!(r.used, [2]);
        assert_eq!(r.misfits, [(paths[0].clone(), 1), (paths[2].clone(), 3)]);
        assert!(r.misfits_ambiguous);
    }

    #[test]
    fn combinations() {
        let mut set = vec![0, 1];
        let mut seen = vec![set.clone()];
        while next_combination(&mut set, 4) {
            seen.push(set.clone());
        }
        assert_eq!(
            seen,
            [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]].map(Vec::from)
        );
        assert!(!binomial_above(16, 8, 12_870));
        assert!(binomial_above(16, 8, 12_869));
        assert!(!binomial_above(5, 5, 1));
        assert!(binomial_above(255, 128, MAX_COMBINATIONS));
        assert!(!binomial_above(255, 1, 255));
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
