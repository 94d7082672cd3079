//! The audit log: a tamper-evident, append-only record of key events
//! (init, rotate, passwd, escrow init and recovery) kept in the keyring
//! directory.
//!
//! ```text
//! keys/
//!   audit.log    one JSON record per line
//!   audit.head   the number of records and the SHA-256 of the last line, signed
//!   audit.key    the audit signing key (Ed25519, PKCS#8, base64), 0600
//!   audit.pub    its public key (base64): all `writ audit verify` needs
//! ```
//!
//! A record is one line:
//!
//! ```text
//! {"seq":1,"time":"2026-05-01T12:00:00Z","operator":"alice","action":"keys.init",
//!  "params":{...},"prev":"000...000","sig":"<base64 Ed25519 signature>"}
//! ```
//!
//! A record kept by the PostgreSQL state backend ([`crate::state`]) also
//! names the gateway that wrote it (`"gateway":"gw1"` after `operator`);
//! such a chain exported to files verifies here like any other.
//!
//! `seq` counts from 1 and equals the line number; `prev` is the SHA-256
//! (lowercase hex) of the previous line's bytes without its line end, 64
//! zeros for the first record. `sig` signs the exact bytes of the line with
//! the `"sig"` member removed (everything before `,"sig":"`, then `}`),
//! prefixed with the domain `writ audit record v1\n`. Signing exact bytes
//! needs no JSON canonicalisation: what was signed is what is stored.
//!
//! The chain makes an altered, deleted, inserted or reordered record
//! visible; the signature makes a rewritten chain visible to anyone without
//! the signing key. A cut at a record boundary leaves a valid chain, so
//! `audit.head` (rewritten, signed, after every append) names how many
//! records there must be and the hash of the last one. A last line cut
//! short that audit.head does not count is an append that never ended (a
//! crash, a full disk): the next append removes it, under the lock, and
//! records that it did ([`REPAIR`]); one audit.head counts is refused. A
//! write that fails is cut back off at once. Nothing is appended to a log
//! audit.head says was longer, or whose record it names last differs
//! (`head_agrees`): a cut log must not verify again once the next
//! record and head are signed over its end.
//!
//! A chain begins with the keyring's creation and nothing else: its first
//! record, and only its first, is one of [`GENESIS_ACTIONS`] (`keys.init`;
//! `audit.init` for a keyring made before the audit log; `audit.restart`
//! when an administrator knowingly starts over after losing the log), and
//! its `epoch` parameter names the keyring's oldest epoch. So deleting the
//! log (and its head) is visible: an empty or missing log beside a keyring
//! fails [`verify`], and [`append`] refuses to begin a chain with any other
//! record, so no key event silently starts a new one.
//!
//! The line-by-line checks live in `chain.rs` ([`ChainCheck`]), shared with
//! the PostgreSQL backend's verifier so both apply the same rules.
//!
//! The audit key also signs other statements of the gateway, each under its
//! own domain prefix ([`Purpose`], [`sign`], [`verify_signature`]): the
//! manifest of a disclosure bundle (`writ disclosure manifest v1\n`).
//!
//! # Why the audit key is not encrypted to the master key
//!
//! Every other private key in the keyring needs the passphrase. The audit
//! key does not: it is stored like an SSH host key, 0600 in the keyring
//! directory. Key events that need no passphrase must still be recorded:
//! `keys rotate` runs unattended, and `escrow recover` exists for the day
//! the passphrase is lost; a log that could only be written with the
//! passphrase would have gaps exactly there. What the signature then
//! protects against is anyone who can change the log but cannot read the
//! keyring directory (log copies, backups shipped elsewhere, a log host),
//! and verification needs only the public key. Someone who can read
//! `audit.key` could re-sign a rewritten log; against that, keep a copy of
//! `audit.pub` and of the head hash `writ audit verify` prints outside the
//! machine (e.g. in the case file), and verify with
//! `--public-key` and `--head`.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use zeroize::Zeroizing;

use crate::keys::{KeyError, atomic, now_rfc3339};

pub const LOG_FILE: &str = "audit.log";
pub const HEAD_FILE: &str = "audit.head";
/// What `audit import` renames the file log to once PostgreSQL holds its
/// records: the file chain is closed, and nothing appends to it again.
pub const IMPORTED_FILE: &str = "audit.log.imported";
pub const KEY_FILE: &str = "audit.key";
pub const PUBLIC_FILE: &str = "audit.pub";

const RECORD_DOMAIN: &[u8] = b"writ audit record v1\n";
const HEAD_DOMAIN: &[u8] = b"writ audit head v1\n";
const SIG_MARK: &str = ",\"sig\":\"";
/// The actions a chain may begin with, and only begin with.
pub const GENESIS_ACTIONS: &[&str] = &["keys.init", "audit.init", "audit.restart"];
/// The action of a chain begun anew after the log was lost.
pub const RESTART: &str = "audit.restart";
/// The action recording that an append cut short was removed (its
/// `cut_bytes`), written before the next record.
pub const REPAIR: &str = "audit.repair";

/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// 1 for the first record; equals the line number.
    pub seq: u64,
    /// RFC 3339, UTC.
    pub time: String,
    pub operator: String,
    /// The gateway (writ process) that wrote the record: named on a chain
    /// shared by several gateways (the PostgreSQL state backend), absent
    /// from the keyring directory's own log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// e.g. `keys.init`, `keys.rotate`, `escrow.recover`.
    pub action: String,
    /// Public parameters only (epoch ids, recipients, counts): never a
    /// secret.
    pub params: BTreeMap<String, serde_json::Value>,
    /// SHA-256 (hex) of the previous line.
    pub prev: String,
    /// Base64 Ed25519 signature; empty while the record is being signed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sig: String,
}

/// audit.head as stored (plus `sig`, appended like a record's).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Head {
    records: u64,
    last: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    sig: String,
}

/// What a successful [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    /// SHA-256 (hex) of the last line, [`GENESIS`] for an empty log: note
    /// it outside the machine to detect a later rewrite.
    pub head: String,
    /// The chain was begun anew ([`RESTART`]): what came before is lost.
    pub restarted: bool,
}

/// Errors of the audit log. None ever contains key material.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(
        "{} is missing: this keyring has no audit key (made before the audit log? run `writ audit init`)",
        .path.display()
    )]
    NoKey { path: PathBuf },
    #[error("{} is damaged: {detail}", .path.display())]
    BadKey { path: PathBuf, detail: &'static str },
    #[error("{} does not hold the key of {} (replaced file?)", .key.display(), .public.display())]
    KeyMismatch { key: PathBuf, public: PathBuf },
    #[error(
        "an audit log already exists in {} (it belongs to an earlier keyring: move it away)",
        .dir.display()
    )]
    Exists { dir: PathBuf },
    #[error(
        "{} is missing or empty, but {} holds a keyring: the audit log was deleted; restore \
         audit.log and audit.head from a backup (if it is lost for good, `writ audit init \
         --new-chain` starts a new one that says so)",
        .path.display(), .dir.display()
    )]
    Missing { path: PathBuf, dir: PathBuf },
    #[error(
        "{} already holds records: {action} only begins a chain (check it with `writ audit verify`)",
        .path.display()
    )]
    NotABeginning { path: PathBuf, action: String },
    /// The log fails verification; `line` is the first bad line (1-based).
    #[error("{}: line {line}: {problem}", .path.display())]
    Broken {
        path: PathBuf,
        line: u64,
        problem: String,
    },
    #[error(
        "{} says this keyring's audit chain was imported into PostgreSQL: nothing is recorded \
         in the file log any more (use the config with [state] that names that database)",
        .imported.display()
    )]
    Imported { imported: PathBuf },
    /// audit.head is damaged, missing or does not match the log.
    #[error("{}: {problem}", .path.display())]
    BadHead { path: PathBuf, problem: String },
    #[error("{} holds {records} records ending in {actual}, not {expected} as given with --head", .path.display())]
    HeadDiffers {
        path: PathBuf,
        records: u64,
        actual: String,
        expected: String,
    },
    #[error("--since {0}: not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ)")]
    Since(String),
    #[error("cannot access {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    }
}

use crate::hash::sha256_hex;

/// Creates the audit key pair in `dir` (audit.key, audit.pub, 0600,
/// atomic). Refuses if either file exists. Returns the paths written.
pub fn create_key(dir: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let key_path = dir.join(KEY_FILE);
    let pub_path = dir.join(PUBLIC_FILE);
    for path in [&key_path, &pub_path] {
        if path.exists() {
            return Err(KeyError::Leftover { path: path.clone() }.into());
        }
    }
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| AuditError::BadKey {
        path: key_path.clone(),
        detail: "no randomness to generate the key",
    })?;
    let der = Zeroizing::new(pkcs8.as_ref().to_vec());
    let pair = Ed25519KeyPair::from_pkcs8(&der).map_err(|_| AuditError::BadKey {
        path: key_path.clone(),
        detail: "generated key does not parse",
    })?;
    let public = B64.encode(pair.public_key().as_ref());
    let mut text = Zeroizing::new(String::from(
        "# writ audit signing key (Ed25519, PKCS#8, base64): signs keys/audit.log\n",
    ));
    text.push_str(&B64.encode(der.as_slice()));
    text.push('\n');
    atomic::write_atomic(&key_path, text.as_bytes())?;
    let pub_text = format!("# writ audit public key (Ed25519, base64)\n{public}\n");
    if let Err(e) = atomic::write_atomic(&pub_path, pub_text.as_bytes()) {
        let _ = std::fs::remove_file(&key_path);
        return Err(e.into());
    }
    Ok(vec![key_path, pub_path])
}

/// The one non-comment line of a small text file.
fn key_line(path: &Path, text: &str) -> Result<String, AuditError> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    match (lines.next(), lines.next()) {
        (Some(l), None) => Ok(l.to_string()),
        _ => Err(AuditError::BadKey {
            path: path.to_path_buf(),
            detail: "expected one base64 line",
        }),
    }
}

fn read_missing_as(path: &Path) -> Result<Zeroizing<String>, AuditError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(AuditError::NoKey {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Reads an audit public key file (audit.pub or a copy kept elsewhere).
pub fn read_public_key(path: &Path) -> Result<Vec<u8>, AuditError> {
    let text = read_missing_as(path)?;
    let line = key_line(path, &text)?;
    let bytes = B64.decode(line).map_err(|_| AuditError::BadKey {
        path: path.to_path_buf(),
        detail: "not base64",
    })?;
    if bytes.len() != 32 {
        return Err(AuditError::BadKey {
            path: path.to_path_buf(),
            detail: "not an Ed25519 public key (32 bytes)",
        });
    }
    Ok(bytes)
}

/// Loads the signing key and checks it against audit.pub.
pub(crate) fn load_key(dir: &Path) -> Result<Ed25519KeyPair, AuditError> {
    let key_path = dir.join(KEY_FILE);
    let pub_path = dir.join(PUBLIC_FILE);
    let text = read_missing_as(&key_path)?;
    let line = Zeroizing::new(key_line(&key_path, &text)?);
    let der = Zeroizing::new(
        B64.decode(line.as_bytes())
            .map_err(|_| AuditError::BadKey {
                path: key_path.clone(),
                detail: "not base64",
            })?,
    );
    let pair = Ed25519KeyPair::from_pkcs8(&der).map_err(|_| AuditError::BadKey {
        path: key_path.clone(),
        detail: "not an Ed25519 PKCS#8 key",
    })?;
    if pair.public_key().as_ref() != read_public_key(&pub_path)?.as_slice() {
        return Err(AuditError::KeyMismatch {
            key: key_path,
            public: pub_path,
        });
    }
    Ok(pair)
}

/// Whether `dir` has an audit key (audit.pub).
pub fn has_key(dir: &Path) -> bool {
    dir.join(PUBLIC_FILE).exists()
}

/// Checks that a record can be appended (key present and matching, log
/// not cut), without writing: lets a command refuse before it changes
/// anything.
/// A missing or empty log is refused: only a chain's first record
/// ([`GENESIS_ACTIONS`]) may be appended to it, and [`append`] does that.
pub fn check_writable(dir: &Path) -> Result<(), AuditError> {
    load_key(dir)?;
    not_imported(dir)?;
    let path = dir.join(LOG_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(&path)(e)),
    };
    // A last line cut short is removed by the next append.
    let whole = &bytes[..repairable(dir, &bytes)];
    let (count, _) = tail(&path, whole)?;
    head_agrees(dir, whole, count)?;
    if count == 0 {
        return Err(AuditError::Missing {
            path,
            dir: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// Refuses the file log of a keyring whose chain `audit import` moved to
/// PostgreSQL: a config without `[state]` would fork the chain there,
/// out of the auditors' sight.
fn not_imported(dir: &Path) -> Result<(), AuditError> {
    let imported = dir.join(IMPORTED_FILE);
    if imported.exists() {
        return Err(AuditError::Imported { imported });
    }
    Ok(())
}

/// The length of the log `bytes` of `dir` without a last line cut short
/// by an append that never ended (a crash or a full disk in the middle of
/// its write: its line end missing, and audit.head, written and signed
/// after each record, not counting it). A cut record audit.head counts
/// was complete once, and a head not signed by the audit key proves
/// nothing: then the whole length, and [`tail`] refuses it (`audit
/// verify` names it).
fn repairable(dir: &Path, bytes: &[u8]) -> usize {
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if whole == bytes.len() {
        return whole;
    }
    let complete = bytes[..whole].iter().filter(|&&b| b == b'\n').count() as u64;
    let noted = match signed_head(dir) {
        Some(head) => head.records,
        // Without a head signed by the audit key nothing tells a cut
        // record from an interrupted one, but for a log holding nothing
        // else (its first append, cut).
        None if complete == 0 => 0,
        None => return bytes.len(),
    };
    if noted <= complete {
        whole
    } else {
        bytes.len()
    }
}

/// Refuses to append to a log (`bytes`: its `count` complete records)
/// that audit.head says was longer, or whose record audit.head counts
/// last is not the one it names: a log cut at a record boundary (or
/// restored alone from a backup) would otherwise verify again once the
/// next record and head were signed over its end. audit.head may lag
/// the log (a crash between a record and its head); it must name one
/// of the log's records. A log of at most one record may lack its head
/// (a crash in the very first append).
fn head_agrees(dir: &Path, bytes: &[u8], count: u64) -> Result<(), AuditError> {
    let path = dir.join(HEAD_FILE);
    let bad = |problem: String| AuditError::BadHead {
        path: path.clone(),
        problem,
    };
    let Some(head) = signed_head(dir) else {
        if count <= 1 {
            return Ok(());
        }
        return Err(bad(format!(
            "missing, or not signed by the audit key, beside a log of {count} records: a cut \
             log cannot be told from a whole one, so nothing is appended; restore audit.log \
             and audit.head from a backup (`writ audit verify` says what is wrong)"
        )));
    };
    if head.records > count {
        return Err(bad(format!(
            "counts {} records, but audit.log holds {count}: the log was cut; nothing is \
             appended; restore audit.log from a backup",
            head.records
        )));
    }
    if head.records == 0 {
        return Ok(());
    }
    let named = bytes
        .split(|&b| b == b'\n')
        .nth((head.records - 1) as usize)
        .map(sha256_hex);
    if named.as_deref() != Some(head.last.as_str()) {
        return Err(bad(format!(
            "names record {} of audit.log by a hash the log's record {} does not have: the \
             log was altered; nothing is appended; restore it from a backup",
            head.records, head.records
        )));
    }
    Ok(())
}

/// audit.head of `dir`, if its signature is the audit key's (audit.pub).
fn signed_head(dir: &Path) -> Option<Head> {
    let text = std::fs::read_to_string(dir.join(HEAD_FILE)).ok()?;
    let public = read_public_key(&dir.join(PUBLIC_FILE)).ok()?;
    verified_head(text.trim_end_matches('\n'), &public)
}

/// A head line (audit.head's, or the PostgreSQL head row's `line`) if
/// `public` signed it.
fn verified_head(line: &str, public: &[u8]) -> Option<Head> {
    let (msg, sig) = split_signed(HEAD_DOMAIN, line)?;
    UnparsedPublicKey::new(&ED25519, public)
        .verify(&msg, &sig)
        .ok()?;
    serde_json::from_str(line).ok()
}

/// What a head line signed by `public` names: (records, hash of the
/// last record's line).
pub(crate) fn head_names(line: &str, public: &[u8]) -> Option<(u64, String)> {
    verified_head(line, public).map(|h| (h.records, h.last))
}

/// (number of lines, hash of the last one) of a log, refusing a cut last
/// line.
fn tail(path: &Path, bytes: &[u8]) -> Result<(u64, String), AuditError> {
    if bytes.is_empty() {
        return Ok((0, GENESIS.to_string()));
    }
    let count = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
    if !bytes.ends_with(b"\n") {
        return Err(AuditError::Broken {
            path: path.to_path_buf(),
            line: count + 1,
            problem: "cut short (no line end); nothing is appended to a damaged log (run `writ audit verify`)".into(),
        });
    }
    let body = &bytes[..bytes.len() - 1];
    let last = match body.iter().rposition(|&b| b == b'\n') {
        Some(i) => &body[i + 1..],
        None => body,
    };
    Ok((count, sha256_hex(last)))
}

/// Appends `{"...","sig":"..."}` to a JSON object serialized without sig.
fn signed_line(pair: &Ed25519KeyPair, domain: &[u8], unsigned: &str) -> String {
    let mut msg = domain.to_vec();
    msg.extend_from_slice(unsigned.as_bytes());
    let sig = B64.encode(pair.sign(&msg).as_ref());
    let open = &unsigned[..unsigned.len() - 1];
    format!("{open}{SIG_MARK}{sig}\"}}")
}

/// Splits a signed line into (signed message, signature), or None when it
/// has no well-formed `sig` member at the end.
fn split_signed(domain: &[u8], line: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let at = line.rfind(SIG_MARK)?;
    let sig = line[at + SIG_MARK.len()..].strip_suffix("\"}")?;
    let sig = B64.decode(sig).ok()?;
    let mut msg = domain.to_vec();
    msg.extend_from_slice(&line.as_bytes()[..at]);
    msg.push(b'}');
    Some((msg, sig))
}

/// What else the audit key signs, each under its own domain prefix, so a
/// signature made for one purpose is never valid for another (nor for a
/// record or the head).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `manifest.json` of a disclosure bundle (`writ disclosure manifest v1\n`).
    DisclosureManifest,
}

impl Purpose {
    fn domain(self) -> &'static [u8] {
        match self {
            Purpose::DisclosureManifest => b"writ disclosure manifest v1\n",
        }
    }
}

/// A detached signature by the audit key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// 64 bytes, Ed25519.
    pub signature: Vec<u8>,
    /// The audit public key (32 bytes) that made it.
    pub public_key: Vec<u8>,
}

/// Signs `bytes` for `purpose` with the audit key in `dir` (checked
/// against audit.pub first).
pub fn sign(dir: &Path, purpose: Purpose, bytes: &[u8]) -> Result<Signature, AuditError> {
    let pair = load_key(dir)?;
    let mut msg = purpose.domain().to_vec();
    msg.extend_from_slice(bytes);
    Ok(Signature {
        signature: pair.sign(&msg).as_ref().to_vec(),
        public_key: pair.public_key().as_ref().to_vec(),
    })
}

/// Whether `signature` is the audit key `public_key`'s signature of
/// `bytes` for `purpose`.
pub fn verify_signature(
    public_key: &[u8],
    purpose: Purpose,
    bytes: &[u8],
    signature: &[u8],
) -> bool {
    let mut msg = purpose.domain().to_vec();
    msg.extend_from_slice(bytes);
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(&msg, signature)
        .is_ok()
}

/// The audit public key of the keyring in `dir` (audit.pub).
pub fn public_key(dir: &Path) -> Result<Vec<u8>, AuditError> {
    read_public_key(&dir.join(PUBLIC_FILE))
}

/// Appends one signed record to the log in `dir` and updates audit.head.
/// `params` must hold no secret. A [`GENESIS_ACTIONS`] record only begins
/// a chain (the log is missing or empty); any other needs a chain to
/// continue: a deleted log is never silently started anew.
pub fn append(
    dir: &Path,
    operator: &str,
    action: &str,
    params: BTreeMap<String, serde_json::Value>,
) -> Result<Record, AuditError> {
    let pair = load_key(dir)?;
    not_imported(dir)?;
    let path = dir.join(LOG_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err(&path))?;
    // Serialises appends (and their head updates) between processes.
    file.lock().map_err(io_err(&path))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_err(&path))?;
    // An append cut short (its record never complete, its head never
    // written) is removed, under the lock, and the removal recorded: one
    // crash or full disk must not block every later key event.
    let whole = repairable(dir, &bytes);
    let cut = bytes.len() - whole;
    if cut > 0 {
        file.set_len(whole as u64)
            .and_then(|()| file.sync_data())
            .map_err(io_err(&path))?;
        bytes.truncate(whole);
        tracing::warn!(cut, "audit log: a record cut short was removed");
    }
    let (mut count, mut prev) = tail(&path, &bytes)?;
    head_agrees(dir, &bytes, count)?;
    if cut > 0 && count > 0 {
        let repair = Record {
            seq: count + 1,
            time: now_rfc3339(),
            operator: operator.to_string(),
            gateway: None,
            action: REPAIR.to_string(),
            params: self::params([("cut_bytes", (cut as u64).into())]),
            prev,
            sig: String::new(),
        };
        let (repair, hash) = write_record(&mut file, &path, &pair, repair, whole as u64)?;
        (count, prev) = (repair.seq, hash);
    }
    match check_begin(count, action) {
        Ok(()) => {}
        Err(Begin::Missing) => {
            return Err(AuditError::Missing {
                path,
                dir: dir.to_path_buf(),
            });
        }
        Err(Begin::NotABeginning) => {
            return Err(AuditError::NotABeginning {
                path,
                action: action.to_string(),
            });
        }
    }
    let record = Record {
        seq: count + 1,
        time: now_rfc3339(),
        operator: operator.to_string(),
        gateway: None,
        action: action.to_string(),
        params,
        prev,
        sig: String::new(),
    };
    let length = file.metadata().map_err(io_err(&path))?.len();
    let (record, hash) = write_record(&mut file, &path, &pair, record, length)?;
    write_head(dir, &pair, record.seq, &hash)?;
    Ok(record)
}

/// Signs `record` and appends it as one line to the log `file` (now
/// `length` octets long); a write that fails is cut back off. Returns it
/// signed, and the hash of its line (the next record's `prev`).
fn write_record(
    file: &mut std::fs::File,
    path: &Path,
    pair: &Ed25519KeyPair,
    mut record: Record,
    length: u64,
) -> Result<(Record, String), AuditError> {
    let line = sign_record(pair, &mut record);
    let mut out = line.clone().into_bytes();
    out.push(b'\n');
    if let Err(e) = file.write_all(&out).and_then(|()| file.sync_data()) {
        let _ = file.set_len(length).and_then(|()| file.sync_data());
        return Err(io_err(path)(e));
    }
    Ok((record, sha256_hex(line.as_bytes())))
}

/// Why a record may not be appended to a chain of `count` records.
pub(crate) enum Begin {
    /// The chain is empty and the record does not begin one.
    Missing,
    /// The record only begins a chain, and this one has records.
    NotABeginning,
}

/// A [`GENESIS_ACTIONS`] record only begins a chain; any other continues
/// one.
pub(crate) fn check_begin(count: u64, action: &str) -> Result<(), Begin> {
    match (count, GENESIS_ACTIONS.contains(&action)) {
        (0, false) => Err(Begin::Missing),
        (1.., true) => Err(Begin::NotABeginning),
        _ => Ok(()),
    }
}

/// Signs `record` (its `sig` is set) and returns its line, without line
/// end: the exact bytes the chain hashes and stores.
pub(crate) fn sign_record(pair: &Ed25519KeyPair, record: &mut Record) -> String {
    record.sig.clear();
    // A struct of strings, numbers and JSON values always serialises.
    let unsigned = serde_json::to_string(&*record).unwrap_or_default();
    let line = signed_line(pair, RECORD_DOMAIN, &unsigned);
    record.sig = line[line.rfind(SIG_MARK).unwrap_or(0) + SIG_MARK.len()..line.len() - 2].into();
    line
}

/// The signed head line (without line end) naming `records` records, the
/// last hashing to `last`.
pub(crate) fn head_line(pair: &Ed25519KeyPair, records: u64, last: &str) -> String {
    let head = Head {
        records,
        last: last.to_string(),
        sig: String::new(),
    };
    let unsigned = serde_json::to_string(&head).unwrap_or_default();
    signed_line(pair, HEAD_DOMAIN, &unsigned)
}

fn write_head(
    dir: &Path,
    pair: &Ed25519KeyPair,
    records: u64,
    last: &str,
) -> Result<(), AuditError> {
    let mut line = head_line(pair, records, last);
    line.push('\n');
    atomic::write_atomic(&dir.join(HEAD_FILE), line.as_bytes())?;
    Ok(())
}

/// Checks every line of the log in `dir`: signature, sequence number, hash
/// chain, then audit.head. `public_key`: a copy of audit.pub kept
/// elsewhere (default: the one in `dir`). Names the first bad line.
pub fn verify(dir: &Path, public_key: Option<&Path>) -> Result<Verified, AuditError> {
    not_imported(dir)?;
    let pub_path = public_key.map_or_else(|| dir.join(PUBLIC_FILE), Path::to_path_buf);
    let public = read_public_key(&pub_path)?;
    let path = dir.join(LOG_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let broken = |(line, problem): (u64, String)| AuditError::Broken {
        path: path.clone(),
        line,
        problem,
    };
    let mut chain = ChainCheck::new(dir, public);
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let (raw, cut) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let raw = &rest[..i];
                rest = &rest[i + 1..];
                (raw, false)
            }
            None => {
                let raw = rest;
                rest = &[];
                (raw, true)
            }
        };
        chain.line(raw, cut).map_err(broken)?;
    }
    let head_path = dir.join(HEAD_FILE);
    match std::fs::read_to_string(&head_path) {
        Ok(text) => chain.head(Some(text.trim_end_matches('\n'))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => chain.head(None),
        Err(e) => return Err(io_err(&head_path)(e)),
    }
    .map_err(|problem| match problem {
        HeadProblem::Bad(problem) => AuditError::BadHead {
            path: head_path.clone(),
            problem,
        },
        HeadProblem::TailCut(line, problem) => broken((line, problem)),
    })?;
    if chain.count == 0 && crate::keys::Keyring::exists(dir) {
        return Err(AuditError::Missing {
            path,
            dir: dir.to_path_buf(),
        });
    }
    Ok(chain.verified())
}

/// [`verify`], then checks the head hash against one noted earlier
/// (`records` or more records, the record number `records` hashing to
/// `expected`). Used by `writ audit verify --head N:HASH`.
pub fn check_noted_head(dir: &Path, records: u64, expected: &str) -> Result<(), AuditError> {
    let path = dir.join(LOG_FILE);
    let bytes = std::fs::read(&path).unwrap_or_default();
    let line = bytes
        .split(|&b| b == b'\n')
        .nth(usize::try_from(records.saturating_sub(1)).unwrap_or(usize::MAX));
    let actual = match (records, line) {
        (0, _) => GENESIS.to_string(),
        (_, Some(l)) if !l.is_empty() => sha256_hex(l),
        _ => "nothing (the log is shorter)".to_string(),
    };
    if actual != expected.to_ascii_lowercase() {
        return Err(AuditError::HeadDiffers {
            path,
            records,
            actual,
            expected: expected.to_string(),
        });
    }
    Ok(())
}

/// Every record of the log, parsed but not verified (see [`verify`]).
pub fn read(dir: &Path) -> Result<Vec<Record>, AuditError> {
    let path = dir.join(LOG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(&path)(e)),
    };
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|_| AuditError::Broken {
                path: path.clone(),
                line: i as u64 + 1,
                problem: "not a record (run `writ audit verify`)".into(),
            })
        })
        .collect()
}

/// Checks a `--since` value and returns it as a prefix comparable with
/// record times: `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ`.
pub fn parse_since(s: &str) -> Result<String, AuditError> {
    let ok = |pattern: &str| {
        s.len() == pattern.len()
            && s.bytes().zip(pattern.bytes()).all(|(c, p)| match p {
                b'9' => c.is_ascii_digit(),
                _ => c == p,
            })
    };
    if ok("9999-99-99") || ok("9999-99-99T99:99:99Z") {
        let month: u32 = s[5..7].parse().unwrap_or(0);
        let day: u32 = s[8..10].parse().unwrap_or(0);
        if (1..=12).contains(&month) && (1..=31).contains(&day) {
            return Ok(s.to_string());
        }
    }
    Err(AuditError::Since(s.to_string()))
}

/// Whether a record is at or after `since` (from [`parse_since`]).
pub fn is_since(record: &Record, since: &str) -> bool {
    record.time.as_str() >= since
}

/// The operator name: the option, else the config, else the login name
/// from the environment, else `unknown`.
pub fn operator(option: Option<&str>, config: Option<&str>) -> String {
    option
        .or(config)
        .map(str::to_string)
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect()
        })
        .unwrap_or_else(|| "unknown".to_string())
}

/// Builds a params map from pairs.
pub fn params<const N: usize>(
    pairs: [(&str, serde_json::Value); N],
) -> BTreeMap<String, serde_json::Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

mod chain;
pub(crate) use chain::{ChainCheck, HeadProblem};

#[cfg(test)]
mod tests;
