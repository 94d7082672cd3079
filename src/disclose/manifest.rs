//! The bundle's manifest, its signature, and checking a bundle.
//!
//! ```text
//! DIR/
//!   manifest.json        what is in the bundle (below)
//!   manifest.sig         the audit key's signature of manifest.json's bytes
//!   request.json         the request's canonical bytes (what approvers signed)
//!   approvals/1.json ... the approvals that counted, as given
//!   stored/0001.eml ...  each message as stored at the provider (or as given)
//!   plaintext/0001.eml   each message opened
//! ```
//!
//! `manifest.json` (pretty JSON):
//!
//! ```json
//! {"writ_disclosure_manifest":1,"case":"...","operator":"...","time":"RFC 3339",
//!  "gateway":"<audit public key, base64>",
//!  "request":{"file":"request.json","size":N,"sha256":"..."},
//!  "approvals":[{"approver":"legal","file":{"file":"approvals/1.json",...}}],
//!  "messages":[{"source":{"kind":"file","name":"a.eml"},
//!               "message_id":"<1@example.org>","epoch":"3f2a9c0d5e7b1a48",
//!               "stored":{"file":"stored/0001.eml","size":N,"sha256":"..."},
//!               "plaintext":{"file":"plaintext/0001.eml","size":N,"sha256":"..."}}]}
//! ```
//!
//! A provider source is `{"kind":"provider","account":...,"mailbox":...,
//! "uidvalidity":N,"uid":N}`. The SHA-256 of `request.json` is the request
//! digest the approvals sign.
//!
//! `manifest.sig` holds one base64 line (after `#` comments): an Ed25519
//! signature by the gateway's audit key over `writ disclosure manifest
//! v1\n` followed by the exact bytes of `manifest.json` (no JSON
//! canonicalisation: what was signed is what is stored).
//!
//! [`verify`] checks the signature (against a copy of the gateway's
//! `audit.pub` when given, else against the key the manifest names, which
//! proves integrity but not origin), then every listed file's size and
//! SHA-256 in manifest order, then that no other file or directory is
//! present (a directory must hold a listed file), then
//! that the request and approvals in the bundle agree with the manifest
//! and that no two approvals are signed with one key (one approver listed
//! under two names); it names the first file that fails, and reports each
//! approver with the key its approval is signed with.

use std::io::Read;
use std::path::{Component, Path};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::approval::Approval;
use super::{DiscloseError, Request, Wanted, io_err};
use crate::audit::{self, Purpose};

pub const MANIFEST_FILE: &str = "manifest.json";
pub const SIGNATURE_FILE: &str = "manifest.sig";
pub const REQUEST_FILE: &str = "request.json";
/// The version member of a manifest.
pub const MANIFEST_VERSION: u32 = 1;
/// Largest manifest read.
const MAX_MANIFEST: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`MANIFEST_VERSION`].
    pub writ_disclosure_manifest: u32,
    pub case: String,
    pub operator: String,
    /// RFC 3339, UTC.
    pub time: String,
    /// The audit public key that signs the manifest, base64.
    pub gateway: String,
    pub request: FileEntry,
    pub approvals: Vec<ApprovalEntry>,
    pub messages: Vec<MessageEntry>,
}

/// One file of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative to the bundle directory, `/`-separated.
    pub file: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalEntry {
    /// The approver's name in the gateway's config.
    pub approver: String,
    pub file: FileEntry,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageEntry {
    pub source: SourceEntry,
    /// The Message-ID of the opened message, if it has one.
    pub message_id: Option<String>,
    /// The epoch the message was sealed under.
    pub epoch: String,
    pub stored: FileEntry,
    pub plaintext: FileEntry,
}

/// Where a message came from, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceEntry {
    /// A file given to `writ disclose --from-file` (its name only).
    File { name: String },
    /// A message fetched from the provider.
    Provider {
        account: String,
        mailbox: String,
        uidvalidity: u32,
        uid: u32,
    },
}

impl std::fmt::Display for SourceEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceEntry::File { name } => write!(f, "{name}"),
            SourceEntry::Provider {
                account,
                mailbox,
                uidvalidity,
                uid,
            } => write!(f, "{account} {mailbox} UIDVALIDITY {uidvalidity} UID {uid}"),
        }
    }
}

impl Manifest {
    /// The manifest file: pretty JSON, one line end.
    pub fn to_file(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Every file the manifest lists, request first, then approvals, then
    /// each message's stored and plaintext files.
    pub fn files(&self) -> Vec<&FileEntry> {
        let mut files = vec![&self.request];
        files.extend(self.approvals.iter().map(|a| &a.file));
        for m in &self.messages {
            files.push(&m.stored);
            files.push(&m.plaintext);
        }
        files
    }
}

/// The text of manifest.sig.
pub fn signature_file(signature: &audit::Signature) -> Vec<u8> {
    format!(
        "# writ disclosure manifest signature (Ed25519, base64) by audit key {}\n{}\n",
        B64.encode(&signature.public_key),
        B64.encode(&signature.signature)
    )
    .into_bytes()
}

/// What a successful [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub case: String,
    pub operator: String,
    pub time: String,
    pub messages: usize,
    /// Files checked, manifest.json and manifest.sig included.
    pub files: usize,
    /// The audit public key (base64) the signature verified under.
    pub gateway: String,
    /// Whether that key was given (`--public-key`) rather than taken from
    /// the manifest itself.
    pub key_given: bool,
    /// The approvers as the manifest names them, each with the public
    /// key (base64) its approval is signed with, which a verifier can
    /// hold against the approvers' published keys.
    pub approvers: Vec<(String, String)>,
}

fn bundle_err(dir: &Path, rel: &str, problem: impl Into<String>) -> DiscloseError {
    DiscloseError::Bundle {
        path: dir.join(rel),
        problem: problem.into(),
    }
}

/// Reads a bundle file, naming a missing one.
fn read_listed(dir: &Path, rel: &str, cap: u64) -> Result<Vec<u8>, DiscloseError> {
    let path = dir.join(rel);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(bundle_err(dir, rel, "missing"));
        }
        Err(e) => return Err(io_err(&path)(e)),
    };
    let mut bytes = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(&path))?;
    if bytes.len() as u64 > cap {
        return Err(bundle_err(dir, rel, "too large to be a writ file"));
    }
    Ok(bytes)
}

fn parse_signature(dir: &Path, text: &[u8]) -> Result<Vec<u8>, DiscloseError> {
    let damaged = || bundle_err(dir, SIGNATURE_FILE, "damaged: not a signature");
    let text = std::str::from_utf8(text).map_err(|_| damaged())?;
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return Err(damaged());
    };
    let sig = B64.decode(line).map_err(|_| damaged())?;
    if sig.len() != 64 {
        return Err(damaged());
    }
    Ok(sig)
}

fn parse_manifest(dir: &Path, bytes: &[u8]) -> Result<Manifest, DiscloseError> {
    let manifest: Manifest = serde_json::from_slice(bytes)
        .map_err(|_| bundle_err(dir, MANIFEST_FILE, "not a manifest (altered or damaged)"))?;
    if manifest.writ_disclosure_manifest != MANIFEST_VERSION {
        return Err(bundle_err(
            dir,
            MANIFEST_FILE,
            format!(
                "manifest version {} is not one this writ reads",
                manifest.writ_disclosure_manifest
            ),
        ));
    }
    Ok(manifest)
}

/// A listed file name must stay inside the bundle: relative, plain
/// components, not the manifest or its signature; and written the one
/// way the gateway writes names (`/` between non-empty components, no
/// `.`), so that no file can be listed twice under two spellings
/// (`stored/./0001.eml`, `stored//0001.eml`), each copy hashed again.
fn safe_name(name: &str) -> bool {
    let path = Path::new(name);
    !name.is_empty()
        && !name.contains('\\')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && path.components().all(|c| matches!(c, Component::Normal(_)))
        && name != MANIFEST_FILE
        && name != SIGNATURE_FILE
}

/// Most entries (files and directories) a bundle may hold: the walk stops
/// with an error past it, so a hostile directory tree costs bounded work.
const MAX_ENTRIES: usize = 1_000_000;

/// Everything under `dir`, relative and `/`-separated: `(files,
/// directories)`. Anything that is neither a regular file nor a directory
/// is an error. Walks with a work list, not recursion.
fn walk(dir: &Path) -> Result<(Vec<String>, Vec<String>), DiscloseError> {
    let mut files = Vec::new();
    let mut dirs: Vec<String> = Vec::new();
    let mut todo: Vec<std::path::PathBuf> = vec![std::path::PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let here = dir.join(&rel);
        let entries = std::fs::read_dir(&here).map_err(io_err(&here))?;
        for entry in entries {
            let entry = entry.map_err(io_err(&here))?;
            let rel = rel.join(entry.file_name());
            let name = rel.to_string_lossy().replace('\\', "/");
            let kind = entry.file_type().map_err(io_err(&entry.path()))?;
            if files.len() + dirs.len() >= MAX_ENTRIES {
                return Err(bundle_err(
                    dir,
                    &name,
                    format!("the bundle holds more than {MAX_ENTRIES} entries"),
                ));
            }
            if kind.is_dir() {
                dirs.push(name);
                todo.push(rel);
            } else if kind.is_file() {
                files.push(name);
            } else {
                return Err(bundle_err(
                    dir,
                    &name,
                    "not a regular file (a link or device was put into the bundle)",
                ));
            }
        }
    }
    files.sort();
    dirs.sort();
    Ok((files, dirs))
}

/// SHA-256 (hex) and size of a file, streamed.
pub(crate) fn hash_file(path: &Path) -> Result<(String, u64), DiscloseError> {
    let mut file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        size += n as u64;
    }
    Ok((super::hex(ctx.finish().as_ref()), size))
}

/// Checks the bundle in `dir` (see the module documentation).
/// `public_key`: the gateway's audit public key from a trusted copy.
pub fn verify(dir: &Path, public_key: Option<&[u8]>) -> Result<Verified, DiscloseError> {
    if !dir.is_dir() {
        return Err(DiscloseError::Bundle {
            path: dir.to_path_buf(),
            problem: "not a directory".into(),
        });
    }
    let manifest_bytes = read_listed(dir, MANIFEST_FILE, MAX_MANIFEST)?;
    let signature = parse_signature(dir, &read_listed(dir, SIGNATURE_FILE, 4096)?)?;
    let (key, key_given, parsed) = match public_key {
        Some(k) => (k.to_vec(), true, None),
        None => {
            let m = parse_manifest(dir, &manifest_bytes)?;
            let k = B64.decode(&m.gateway).map_err(|_| {
                bundle_err(
                    dir,
                    MANIFEST_FILE,
                    "names no valid gateway key (altered or damaged)",
                )
            })?;
            (k, false, Some(m))
        }
    };
    if !audit::verify_signature(
        &key,
        Purpose::DisclosureManifest,
        &manifest_bytes,
        &signature,
    ) {
        return Err(bundle_err(
            dir,
            MANIFEST_FILE,
            format!(
                "the signature in {SIGNATURE_FILE} does not match: {MANIFEST_FILE} or {SIGNATURE_FILE} was altered{}",
                if key_given {
                    ", or another key than the one given signed them"
                } else {
                    ""
                }
            ),
        ));
    }
    let manifest = match parsed {
        Some(m) => m,
        None => parse_manifest(dir, &manifest_bytes)?,
    };
    let gateway = B64.encode(&key);
    if manifest.gateway != gateway {
        return Err(bundle_err(
            dir,
            MANIFEST_FILE,
            "signed by the given key but names another gateway key",
        ));
    }

    // Every listed file, in manifest order.
    let listed = manifest.files();
    let mut names: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for entry in &listed {
        if !safe_name(&entry.file) || names.contains(entry.file.as_str()) {
            return Err(bundle_err(
                dir,
                MANIFEST_FILE,
                format!(
                    "lists {:?}, which is not a file name inside the bundle",
                    entry.file
                ),
            ));
        }
        names.insert(&entry.file);
    }
    for entry in &listed {
        let path = dir.join(&entry.file);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => return Err(bundle_err(dir, &entry.file, "not a regular file")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(bundle_err(
                    dir,
                    &entry.file,
                    "missing: the manifest lists it (deleted or renamed)",
                ));
            }
            Err(e) => return Err(io_err(&path)(e)),
        }
        let (sha256, size) = hash_file(&path)?;
        if sha256 != entry.sha256 || size != entry.size {
            return Err(bundle_err(
                dir,
                &entry.file,
                "altered: its SHA-256 differs from the manifest's",
            ));
        }
    }

    // Nothing else: no other file, and no directory but those that hold
    // listed files.
    let (present, present_dirs) = walk(dir)?;
    if let Some(extra) = present.iter().find(|p| {
        p.as_str() != MANIFEST_FILE && p.as_str() != SIGNATURE_FILE && !names.contains(&p.as_str())
    }) {
        return Err(bundle_err(
            dir,
            extra,
            "not in the manifest (added after the bundle was signed)",
        ));
    }
    let holding: std::collections::HashSet<&str> = names
        .iter()
        .flat_map(|n| n.match_indices('/').map(move |(i, _)| &n[..i]))
        .collect();
    if let Some(extra) = present_dirs.iter().find(|d| !holding.contains(d.as_str())) {
        return Err(bundle_err(
            dir,
            extra,
            "a directory not in the manifest (added after the bundle was signed)",
        ));
    }

    // The request and approvals agree with the manifest.
    let request_bytes = read_listed(dir, &manifest.request.file, MAX_MANIFEST)?;
    let request = Request::parse(&request_bytes)
        .map_err(|e| bundle_err(dir, &manifest.request.file, e.to_string()))?;
    let wanted_match = request.messages.len() == manifest.messages.len()
        && request
            .messages
            .iter()
            .zip(&manifest.messages)
            .all(|(w, m)| match (w, &m.source) {
                (Wanted::File { sha256, .. }, SourceEntry::File { .. }) => {
                    *sha256 == m.stored.sha256
                }
                (
                    Wanted::Uid {
                        account,
                        mailbox,
                        uidvalidity,
                        uid,
                    },
                    SourceEntry::Provider {
                        account: a,
                        mailbox: b,
                        uidvalidity: v,
                        uid: u,
                    },
                ) => account == a && mailbox == b && uidvalidity == v && uid == u,
                // The opened message's own Message-ID is the one asked for.
                (
                    Wanted::MessageId {
                        account,
                        mailbox,
                        message_id,
                    },
                    SourceEntry::Provider {
                        account: a,
                        mailbox: b,
                        ..
                    },
                ) => account == a && mailbox == b && m.message_id.as_ref() == Some(message_id),
                _ => false,
            });
    if request.case != manifest.case || request.gateway != manifest.gateway || !wanted_match {
        return Err(bundle_err(
            dir,
            &manifest.request.file,
            "does not request the case and messages the manifest lists",
        ));
    }
    let digest = request.digest();
    // Each approval valid, and each by a key of its own: the manifest
    // names the approvers, but only distinct keys make distinct people
    // (one key under two names would count one approver twice).
    let mut approvers: Vec<(String, String)> = Vec::new();
    let mut by_key: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for a in &manifest.approvals {
        let bytes = read_listed(dir, &a.file.file, MAX_MANIFEST)?;
        let Some(approval) = Approval::parse(&bytes)
            .ok()
            .filter(|approval| approval.check(&digest).is_ok())
        else {
            return Err(bundle_err(
                dir,
                &a.file.file,
                format!("not a valid approval of {REQUEST_FILE}"),
            ));
        };
        if let Some(&i) = by_key.get(&approval.public_key) {
            return Err(bundle_err(
                dir,
                &a.file.file,
                format!(
                    "is by the same approval key as {} (one approver listed as {:?} and {:?})",
                    manifest.approvals[i].file.file, manifest.approvals[i].approver, a.approver
                ),
            ));
        }
        by_key.insert(approval.public_key.clone(), approvers.len());
        approvers.push((a.approver.clone(), approval.public_key));
    }

    Ok(Verified {
        case: manifest.case.clone(),
        operator: manifest.operator.clone(),
        time: manifest.time.clone(),
        messages: manifest.messages.len(),
        files: listed.len() + 2,
        gateway,
        key_given,
        approvers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside() {
        for ok in ["request.json", "stored/0001.eml", "a b.eml"] {
            assert!(safe_name(ok), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "/etc/passwd",
            "a/../../b",
            "./a",
            "manifest.json",
            "manifest.sig",
            "a\\b",
            // Other spellings of a name the gateway writes once.
            "stored/./0001.eml",
            "stored//0001.eml",
            "stored/0001.eml/",
        ] {
            assert!(!safe_name(bad), "{bad}");
        }
    }

    #[test]
    fn signature_file_parses_back() {
        let dir = Path::new("b");
        let sig = audit::Signature {
            signature: vec![5; 64],
            public_key: vec![6; 32],
        };
        assert_eq!(
            parse_signature(dir, &signature_file(&sig)).unwrap(),
            vec![5; 64]
        );
        assert!(parse_signature(dir, b"# c\n").is_err());
        assert!(parse_signature(dir, b"AAAA\n").is_err());
        assert!(parse_signature(dir, b"\xff").is_err());
    }
}
