//! Lawful disclosure: open exactly the named messages for a case into a
//! bundle signed by the gateway's audit key, after the configured quorum
//! of approvers approved that exact request.
//!
//! ```text
//!  case + messages ──► Request ──► approvers sign it (approval)
//!                        │                 │
//!  stored messages ──────┴──► quorum::check ──► disclose ──► bundle (manifest::verify)
//! ```
//!
//! - [`Request`] (request.rs): the canonical form of "case REF, these
//!   messages in this order, on this gateway"; approvals sign its SHA-256.
//! - [`approval`]: approval keys (Ed25519, encrypted with the approver's
//!   passphrase) and approval files.
//! - [`quorum`]: M distinct known approvers approved this exact request.
//! - [`disclose`]: takes messages already read or fetched ([`Stored`]),
//!   checks they are the requested ones and sealed, opens each into the
//!   bundle, writes and signs the manifest. Fetching from the provider is
//!   not done here (the CLI hands over what it fetched).
//! - [`manifest`]: the bundle layout, the manifest, and [`verify`].
//!
//! Nothing outside the named messages is decrypted: only the [`Stored`]
//! messages handed in are opened, after each has been matched against the
//! request. A failure at any point (a message not sealed, not openable, a
//! write error) removes everything written so far; so does dropping the
//! [`Pending`] bundle without [`Pending::keep`], which the CLI calls only
//! once the disclosure is in the audit log. Errors name messages by their
//! position and source, never by content, and carry no key material.

pub mod approval;
pub mod manifest;
pub mod quorum;
mod request;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::audit::{self, AuditError, Purpose};
use crate::envelope::{self, EnvelopeError, header};
use crate::keys::KeyError;

pub use manifest::{Manifest, Verified, verify};
pub use request::{REQUEST_VERSION, Request, Wanted, check_case};

/// Errors of disclosure, approvals and bundles. None contains message
/// content, a passphrase or key material.
#[derive(Debug, thiserror::Error)]
pub enum DiscloseError {
    #[error("the case reference must be 1 to 200 characters, without control characters")]
    BadCase,
    #[error(
        "no message named: give --from-file EML..., or --account USER --mailbox NAME with --uid N or --message-id ID"
    )]
    NoMessages,
    #[error("message {again} is message {first} again: name each message once")]
    Repeated { first: usize, again: usize },
    #[error("{detail}")]
    BadRequest { detail: String },
    #[error(
        "the request is for case {request:?}, not {given:?} as given with --case: check that this is the request you mean to approve"
    )]
    CaseDiffers { request: String, given: String },

    #[error("approval {}: {detail}", .path.display())]
    BadApproval { path: PathBuf, detail: &'static str },
    #[error(
        "approval {} (signed as {claimed:?}) is by a key that is not an approver in [disclosure] of the config",
        .path.display()
    )]
    UnknownApprover { path: PathBuf, claimed: String },
    #[error(
        "approval {} by {approver} is for another request: {detail} (approvers must approve the request `writ disclose request` prints for exactly these arguments)",
        .path.display()
    )]
    WrongRequest {
        path: PathBuf,
        approver: String,
        detail: String,
    },
    #[error(
        "approval {} does not carry a valid signature by {approver}'s key: it was altered or forged",
        .path.display()
    )]
    BadSignature { path: PathBuf, approver: String },
    #[error(
        "quorum not met: {have} valid approval(s) from distinct approvers{names}, {need} required by [disclosure] quorum: {missing} missing{repeated}"
    )]
    QuorumMissing {
        have: usize,
        need: usize,
        missing: usize,
        names: String,
        repeated: String,
    },

    #[error("approver name: {0}")]
    BadName(String),
    #[error("{} exists: not overwriting it", .path.display())]
    Exists { path: PathBuf },
    #[error("wrong passphrase for approval key {}", .path.display())]
    WrongPassphrase { path: PathBuf },
    #[error("{} is not a writ approval key ({detail})", .path.display())]
    BadKey { path: PathBuf, detail: &'static str },

    #[error("{given} message(s) given for {requested} requested")]
    Count { given: usize, requested: usize },
    #[error("message {index} ({what}) is not the message requested as message {index}")]
    NotRequested { index: usize, what: String },
    /// A Message-ID request: the stored header carries the requested ID,
    /// the sealed message inside does not (the provider's copy altered,
    /// or another message given that ID outside its seal).
    #[error(
        "message {index} ({what}) carries the requested Message-ID outside its seal only; the sealed message is {found}: not disclosed (name the message by UID once the right one is found)"
    )]
    OtherInside {
        index: usize,
        what: String,
        found: String,
    },
    #[error(
        "message {index} ({what}) is not sealed: writ discloses sealed messages only (a plaintext message is at the provider as it is)"
    )]
    NotSealed { index: usize, what: String },
    #[error("message {index} ({what}) cannot be opened")]
    Open {
        index: usize,
        what: String,
        #[source]
        source: EnvelopeError,
    },

    #[error(
        "{} is not an empty directory: the bundle goes into a new or empty directory",
        .path.display()
    )]
    OutNotEmpty { path: PathBuf },
    /// A bundle file failed a check (or cannot be used).
    #[error("{}: {problem}", .path.display())]
    Bundle { path: PathBuf, problem: String },
    #[error("cannot access {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Key(#[from] KeyError),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DiscloseError + '_ {
    move |source| DiscloseError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Lowercase hex.
pub(crate) use crate::hash::{hex, sha256_hex};

/// Where a stored message came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file given on the command line.
    File { path: PathBuf },
    /// A message fetched from the provider.
    Provider {
        account: String,
        mailbox: String,
        uidvalidity: u32,
        uid: u32,
    },
}

impl Source {
    fn entry(&self) -> manifest::SourceEntry {
        match self {
            Source::File { path } => manifest::SourceEntry::File {
                name: file_name(path),
            },
            Source::Provider {
                account,
                mailbox,
                uidvalidity,
                uid,
            } => manifest::SourceEntry::Provider {
                account: account.clone(),
                mailbox: mailbox.clone(),
                uidvalidity: *uidvalidity,
                uid: *uid,
            },
        }
    }
}

/// A message as stored at the provider (or as given in a file), not yet
/// opened.
#[derive(Debug, Clone)]
pub struct Stored {
    pub source: Source,
    pub ciphertext: Vec<u8>,
}

/// The name a file is requested and recorded under: its last component.
pub fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The request entry for a message given as a file.
pub fn wanted_file(path: &Path, bytes: &[u8]) -> Wanted {
    Wanted::File {
        name: file_name(path),
        sha256: sha256_hex(bytes),
    }
}

/// The header block of a stored message (bounded).
fn header_block(bytes: &[u8]) -> &[u8] {
    let cap = &bytes[..bytes.len().min(8 * 1024 * 1024)];
    header::header_end(cap).map_or(cap, |end| &cap[..end])
}

fn message_id(block: &[u8]) -> Option<String> {
    header::first_value(block, "message-id")
        .map(|v| header::text(header::trim(&v)))
        .filter(|v| !v.is_empty())
}

/// Checks that `stored` are the requested messages, in order, and that
/// each is sealed; returns each one's epoch. Decrypts nothing: callers use
/// it to refuse before asking for the passphrase.
pub fn check_stored(request: &Request, stored: &[Stored]) -> Result<Vec<String>, DiscloseError> {
    if stored.len() != request.messages.len() {
        return Err(DiscloseError::Count {
            given: stored.len(),
            requested: request.messages.len(),
        });
    }
    let mut epochs = Vec::new();
    for (i, (wanted, s)) in request.messages.iter().zip(stored).enumerate() {
        let index = i + 1;
        let what = s.source.entry().to_string();
        let block = header_block(&s.ciphertext);
        let matches = match (wanted, &s.source) {
            (Wanted::File { name, sha256 }, Source::File { path }) => {
                *name == file_name(path) && *sha256 == sha256_hex(&s.ciphertext)
            }
            (
                Wanted::Uid {
                    account,
                    mailbox,
                    uidvalidity,
                    uid,
                },
                Source::Provider {
                    account: a,
                    mailbox: m,
                    uidvalidity: v,
                    uid: u,
                },
            ) => account == a && mailbox == m && uidvalidity == v && uid == u,
            (
                Wanted::MessageId {
                    account,
                    mailbox,
                    message_id: id,
                },
                Source::Provider {
                    account: a,
                    mailbox: m,
                    ..
                },
            ) => account == a && mailbox == m && message_id(block).as_deref() == Some(id.as_str()),
            _ => false,
        };
        if !matches {
            return Err(DiscloseError::NotRequested { index, what });
        }
        let detected = envelope::detect(block).ok_or(DiscloseError::NotSealed { index, what })?;
        epochs.push(detected.epoch);
    }
    Ok(epochs)
}

/// What [`disclose`] needs besides the messages and the keys.
pub struct Disclosure<'a> {
    pub request: &'a Request,
    /// The approvals that counted ([`quorum::check`]).
    pub approvals: &'a [quorum::Used],
    /// Who runs the disclosure (recorded in the manifest).
    pub operator: &'a str,
    /// The keyring directory: its audit key signs the manifest.
    pub keys_dir: &'a Path,
    /// The bundle directory: new, or empty.
    pub out: &'a Path,
}

/// A written bundle that is removed again when dropped, unless
/// [`Pending::keep`] is called (after the audit record is written). Until
/// then it lacks its signature file, so a bundle left behind by a process
/// killed before its disclosure was recorded never verifies.
#[derive(Debug)]
pub struct Pending {
    dir: PathBuf,
    created_dir: bool,
    files: Vec<PathBuf>,
    subdirs: Vec<PathBuf>,
    kept: bool,
    /// The signature file's bytes, written by [`Pending::keep`].
    signature: Vec<u8>,
    /// SHA-256 (hex) of manifest.json.
    pub manifest_sha256: String,
    /// SHA-256 (hex) of the request's canonical bytes.
    pub request_sha256: String,
    /// Number of messages disclosed.
    pub messages: usize,
    /// The audit public key (base64) that signed the manifest.
    pub gateway: String,
}

impl Pending {
    /// The bundle directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Signs and keeps the bundle: call once its disclosure is recorded.
    /// On an error the bundle is removed.
    pub fn keep(mut self) -> Result<(), DiscloseError> {
        let signature = std::mem::take(&mut self.signature);
        self.write(manifest::SIGNATURE_FILE, &signature)?;
        self.sync_dirs()?;
        self.kept = true;
        Ok(())
    }

    fn file(&mut self, rel: &str) -> Result<(File, PathBuf), DiscloseError> {
        let path = self.dir.join(rel);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        self.files.push(path.clone());
        Ok((file, path))
    }

    /// Writes a whole small file; returns its entry.
    fn write(&mut self, rel: &str, bytes: &[u8]) -> Result<manifest::FileEntry, DiscloseError> {
        let (mut file, path) = self.file(rel)?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(io_err(&path))?;
        Ok(manifest::FileEntry {
            file: rel.to_string(),
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
        })
    }

    fn subdir(&mut self, rel: &str) -> Result<(), DiscloseError> {
        let path = self.dir.join(rel);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(io_err(&path))?;
        self.subdirs.push(path);
        Ok(())
    }

    fn sync_dirs(&self) -> Result<(), DiscloseError> {
        for dir in self.subdirs.iter().chain(std::iter::once(&self.dir)) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err(dir))?;
        }
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        for f in self.files.iter().rev() {
            let _ = std::fs::remove_file(f);
        }
        for d in self.subdirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
        if self.created_dir {
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

/// Refuses `out` as a bundle directory unless it is missing or an empty
/// directory (what [`disclose`] will take), changing nothing: checked
/// before the disclosure is recorded as begun.
pub fn check_out(out: &Path) -> Result<(), DiscloseError> {
    match std::fs::symlink_metadata(out) {
        Ok(meta) if meta.is_dir() => {
            let mut entries = std::fs::read_dir(out).map_err(io_err(out))?;
            match entries.next() {
                Some(_) => Err(DiscloseError::OutNotEmpty {
                    path: out.to_path_buf(),
                }),
                None => Ok(()),
            }
        }
        Ok(_) => Err(DiscloseError::OutNotEmpty {
            path: out.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(out)(e)),
    }
}

/// Makes `out` ready: created 0700 if missing, else it must be an empty
/// directory ([`check_out`]; set to 0700). Returns whether it was created.
fn prepare_out(out: &Path) -> Result<bool, DiscloseError> {
    check_out(out)?;
    if std::fs::symlink_metadata(out).is_ok() {
        std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(out))?;
        return Ok(false);
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(out)
        .map_err(io_err(out))?;
    Ok(true)
}

/// Passes bytes through to a file while hashing them and keeping the
/// header block (for the Message-ID).
struct Tee<W> {
    inner: W,
    ctx: ring::digest::Context,
    size: u64,
    head: Vec<u8>,
    head_done: bool,
}

const HEAD_CAP: usize = 1024 * 1024;

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write_all(buf)?;
        self.ctx.update(buf);
        self.size += buf.len() as u64;
        if !self.head_done {
            let room = HEAD_CAP - self.head.len();
            self.head.extend_from_slice(&buf[..buf.len().min(room)]);
            self.head_done =
                self.head.len() >= HEAD_CAP || header::header_end(&self.head).is_some();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Opens the `stored` messages (which must be the request's, in order)
/// with `keys` into the bundle directory `d.out`, writes the manifest and
/// its signature by the audit key (written by [`Pending::keep`]). The
/// result removes itself when dropped unless kept: record the disclosure,
/// then [`Pending::keep`].
pub fn disclose(
    d: &Disclosure,
    stored: &[Stored],
    keys: &(impl envelope::Keys + ?Sized),
) -> Result<Pending, DiscloseError> {
    let epochs = check_stored(d.request, stored)?;
    let gateway_key = audit::public_key(d.keys_dir)?;
    let request_bytes = d.request.canonical();
    let created_dir = prepare_out(d.out)?;
    let mut bundle = Pending {
        dir: d.out.to_path_buf(),
        created_dir,
        files: Vec::new(),
        subdirs: Vec::new(),
        kept: false,
        signature: Vec::new(),
        manifest_sha256: String::new(),
        request_sha256: d.request.digest_hex(),
        messages: stored.len(),
        gateway: String::new(),
    };
    let request = bundle.write(manifest::REQUEST_FILE, &request_bytes)?;

    let mut approvals = Vec::new();
    if !d.approvals.is_empty() {
        bundle.subdir("approvals")?;
    }
    for (i, used) in d.approvals.iter().enumerate() {
        let entry = bundle.write(&format!("approvals/{}.json", i + 1), &used.given.bytes)?;
        approvals.push(manifest::ApprovalEntry {
            approver: used.name.clone(),
            file: entry,
        });
    }

    bundle.subdir("stored")?;
    bundle.subdir("plaintext")?;
    let width = stored.len().to_string().len().max(4);
    let mut messages = Vec::new();
    for (i, (s, epoch)) in stored.iter().zip(epochs).enumerate() {
        let index = i + 1;
        let stored_entry = bundle.write(&format!("stored/{index:0width$}.eml"), &s.ciphertext)?;
        let rel = format!("plaintext/{index:0width$}.eml");
        let (file, path) = bundle.file(&rel)?;
        let mut tee = Tee {
            inner: io::BufWriter::with_capacity(64 * 1024, file),
            ctx: ring::digest::Context::new(&ring::digest::SHA256),
            size: 0,
            head: Vec::new(),
            head_done: false,
        };
        envelope::open(&s.ciphertext[..], keys, &mut tee).map_err(|e| match e {
            EnvelopeError::Output(source) => io_err(&path)(source),
            source => DiscloseError::Open {
                index,
                what: s.source.entry().to_string(),
                source,
            },
        })?;
        let Tee {
            inner,
            ctx,
            size,
            head,
            ..
        } = tee;
        inner
            .into_inner()
            .map_err(|e| io_err(&path)(e.into_error()))?
            .sync_all()
            .map_err(io_err(&path))?;
        let block = header::header_end(&head).map_or(&head[..], |end| &head[..end]);
        let opened_id = message_id(block);
        // By Message-ID: the ID the stored header shows is the provider's
        // to change; the sealed message must carry it itself.
        if let Some(Wanted::MessageId { message_id: id, .. }) = d.request.messages.get(i)
            && opened_id.as_deref() != Some(id.as_str())
        {
            return Err(DiscloseError::OtherInside {
                index,
                what: s.source.entry().to_string(),
                found: opened_id
                    .map_or_else(|| "without a Message-ID".to_string(), |m| format!("{m:?}")),
            });
        }
        messages.push(manifest::MessageEntry {
            source: s.source.entry(),
            message_id: opened_id,
            epoch,
            stored: stored_entry,
            plaintext: manifest::FileEntry {
                file: rel,
                size,
                sha256: hex(ctx.finish().as_ref()),
            },
        });
    }

    use base64::Engine as _;
    let gateway = base64::engine::general_purpose::STANDARD.encode(&gateway_key);
    let manifest = Manifest {
        writ_disclosure_manifest: manifest::MANIFEST_VERSION,
        case: d.request.case.clone(),
        operator: d.operator.to_string(),
        time: crate::keys::now_rfc3339(),
        gateway: gateway.clone(),
        request,
        approvals,
        messages,
    };
    let manifest_bytes = manifest.to_file();
    let signature = audit::sign(d.keys_dir, Purpose::DisclosureManifest, &manifest_bytes)?;
    if signature.public_key != gateway_key {
        // load_key checks audit.key against audit.pub; this cannot differ.
        return Err(AuditError::KeyMismatch {
            key: d.keys_dir.join(audit::KEY_FILE),
            public: d.keys_dir.join(audit::PUBLIC_FILE),
        }
        .into());
    }
    let entry = bundle.write(manifest::MANIFEST_FILE, &manifest_bytes)?;
    bundle.signature = manifest::signature_file(&signature);
    bundle.sync_dirs()?;
    bundle.manifest_sha256 = entry.sha256;
    bundle.gateway = gateway;
    Ok(bundle)
}

#[cfg(test)]
mod tests;
