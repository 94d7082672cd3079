//! Sealing: M in, the sealed message (format v1) out, in one pass.
//!
//! The outer header carries only what the provider needs to route, thread
//! and file the message (`docs/FORMAT.md` section 5, revision 3): M's
//! fields named in [`OUTER_FIELDS`] (or [`OUTER_FIELD_PREFIXES`]) or in the
//! deployment's `[seal] outer_fields`, unless protected or malformed. Every
//! other field lives only inside the payload, whatever it carries.

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use super::detect::detect;
use super::feed::{Batches, ScanFeed};
use super::header::{self, RawField};
use super::payload::{Parallel, PayloadWriter, Plain};
use super::scan::{Limits, Scanner};
use super::sink::Sink;
use super::stream::BATCH;
use super::summary::Summary;
use super::witness::Witness;
use super::{EnvelopeError, PAYLOAD_TYPE, SEALED_PROTOCOL};

/// Header fields that never appear outside the seal (matched without case).
/// `Content-*` fields are protected by prefix.
pub const PROTECTED_FIELDS: &[&str] = &[
    "subject",
    "thread-topic",
    "keywords",
    "comments",
    "mime-version",
    "x-writ",
];

/// Header fields of M copied to the outer header (matched without case):
/// what the provider needs for routing, threading and mailing lists, and
/// what its filters and verdicts read. Fields named here still stay inside
/// when protected or malformed. A deployment adds names with
/// [`Sealer::allow_outside`] (`[seal] outer_fields`).
pub const OUTER_FIELDS: &[&str] = &[
    "from",
    "to",
    "cc",
    "bcc",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "reply-to",
    "sender",
    "return-path",
    "received",
    "delivered-to",
    "auto-submitted",
    "precedence",
    "dkim-signature",
    "authentication-results",
];

/// Prefixes of further outer fields: mailing list fields (RFC 2369, 2919)
/// and ARC sets (RFC 8617).
pub const OUTER_FIELD_PREFIXES: &[&str] = &["list-", "arc-"];

/// Longest header line copied to the outer header (RFC 5322 §2.1.1).
const MAX_OUTER_LINE: usize = 998;

const PREAMBLE: &str = "This message is sealed by writ. Read it through your organisation's writ IMAP proxy, or open it with `writ open`.";

/// How to seal: recipients and limits. Cheap to clone.
#[derive(Clone)]
pub struct Sealer {
    recipients: Vec<age::x25519::Recipient>,
    epoch: String,
    extra_protected: Vec<String>,
    extra_outer: Vec<String>,
    spill_threshold: usize,
    temp_dir: Option<PathBuf>,
    limits: Limits,
    parallel: Parallel,
    /// Epochs besides `epoch` whose sealed messages pass unchanged
    /// ([`Sealer::knowing`]).
    known: Arc<[String]>,
}

/// Longest summary JSON written: its armor (about 1.375 times as long)
/// stays within the readers' [`MAX_SUMMARY_PART`](super::open::MAX_SUMMARY_PART).
pub const MAX_SUMMARY_JSON: usize = 40 * 1024 * 1024;

const _: () = assert!(MAX_SUMMARY_JSON / 8 * 11 < super::open::MAX_SUMMARY_PART - 64 * 1024);

/// The summary and its JSON. Its strings are M's own, so a message can
/// make it many times its own size (a long Content-Description of control
/// octets, each written `\u00XX`, in every part): past
/// [`MAX_SUMMARY_JSON`] the summary is made lean ([`Summary::lean`]), so
/// that the sealed message stays readable; a lean one past it too (not
/// possible within the caps on parts and header: about 3 KiB of JSON per
/// entity and the message's own header) fails the seal.
fn summary_json(summary: Summary) -> Result<(Summary, Vec<u8>), EnvelopeError> {
    let encode =
        |s: &Summary| serde_json::to_vec(s).map_err(|e| EnvelopeError::Summary(e.to_string()));
    let json = encode(&summary)?;
    if json.len() <= MAX_SUMMARY_JSON {
        return Ok((summary, json));
    }
    let lean = summary.lean();
    let json = encode(&lean)?;
    if json.len() > MAX_SUMMARY_JSON {
        return Err(EnvelopeError::Summary(format!(
            "the message's structure needs a summary of {} bytes, over {MAX_SUMMARY_JSON}",
            json.len()
        )));
    }
    Ok((lean, json))
}

/// What [`Sealer::seal`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sealed {
    /// M was sealed; sizes of M and of the sealed message.
    Sealed {
        original: u64,
        sealed: u64,
        summary: Box<Summary>,
    },
    /// M was already a sealed message and was copied through unchanged.
    AlreadySealed { epoch: String, size: u64 },
}

impl Sealer {
    /// A sealer for the epoch `epoch` (its id), encrypting to `recipients`
    /// (the epoch's recipient first, then escrow and extra recipients).
    pub fn new(epoch: impl Into<String>, recipients: Vec<age::x25519::Recipient>) -> Sealer {
        Sealer {
            recipients,
            epoch: epoch.into(),
            extra_protected: Vec::new(),
            extra_outer: Vec::new(),
            spill_threshold: 8 * 1024 * 1024,
            temp_dir: None,
            limits: Limits::default(),
            parallel: Parallel::default(),
            known: Arc::from(Vec::new()),
        }
    }

    /// Messages already sealed under any of `epochs` (the keyring's) pass
    /// unchanged too, not only those of the sealer's own epoch. A message
    /// that looks sealed under an epoch the sealer does not know is sealed
    /// like any other: its marker and Content-Type are anyone's to write
    /// (an outside sender could otherwise get plaintext, or a forged
    /// verdict encrypted to a guessed recipient, past the relay's
    /// filters).
    pub fn knowing(mut self, epochs: impl IntoIterator<Item = String>) -> Sealer {
        self.known = epochs.into_iter().collect::<Vec<_>>().into();
        self
    }

    /// Does a message sealed under `epoch` pass unchanged (the sealer's
    /// own epoch or one it was told of with [`Sealer::knowing`])? One
    /// under any other epoch is plaintext to seal, whatever it looks like.
    pub fn knows(&self, epoch: &str) -> bool {
        self.passes(epoch)
    }

    fn passes(&self, epoch: &str) -> bool {
        epoch == self.epoch || self.known.iter().any(|k| k == epoch)
    }

    /// Further header fields to keep inside the seal only.
    pub fn protect(mut self, fields: impl IntoIterator<Item = String>) -> Sealer {
        self.extra_protected
            .extend(fields.into_iter().map(|f| f.to_ascii_lowercase()));
        self
    }

    /// Further header fields to copy to the outer header, besides
    /// [`OUTER_FIELDS`] (a deployment's `[seal] outer_fields`). Protected
    /// fields stay inside all the same.
    pub fn allow_outside(mut self, fields: impl IntoIterator<Item = String>) -> Sealer {
        self.extra_outer
            .extend(fields.into_iter().map(|f| f.to_ascii_lowercase()));
        self
    }

    /// Ciphertext beyond this many bytes waits in a temporary file.
    pub fn spill_threshold(mut self, bytes: usize) -> Sealer {
        self.spill_threshold = bytes;
        self
    }

    /// Directory for the ciphertext spill file (default: the system's).
    pub fn temp_dir(mut self, dir: Option<PathBuf>) -> Sealer {
        self.temp_dir = dir;
        self
    }

    /// Seal the payload on `threads` worker threads once M has passed
    /// `after` bytes (default: 1 MiB, one thread per core; `threads` 1
    /// keeps all work on the caller's thread). The output is the same age
    /// format either way.
    pub fn parallel(mut self, after: u64, threads: usize) -> Sealer {
        self.parallel = Parallel {
            after,
            threads: threads.max(1),
        };
        self
    }

    pub fn limits(mut self, limits: Limits) -> Sealer {
        self.limits = limits;
        self
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    fn is_protected(&self, f: &RawField<'_>) -> bool {
        let Some(name) = f.name() else { return true };
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        name.starts_with("content-")
            || PROTECTED_FIELDS.contains(&name.as_str())
            || self.extra_protected.contains(&name)
    }

    /// Is this field one the provider needs (built in or configured)?
    fn is_outer(&self, f: &RawField<'_>) -> bool {
        let Some(name) = f.name() else { return false };
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        OUTER_FIELDS.contains(&name.as_str())
            || OUTER_FIELD_PREFIXES.iter().any(|p| name.starts_with(p))
            || self.extra_outer.contains(&name)
    }

    /// May this field be copied to the outer header? Only outer fields
    /// (routing, threading, lists), unprotected and well-formed, with bytes
    /// a provider will accept; the rest stays inside the payload, where
    /// every byte of M is anyway.
    fn goes_outside(&self, f: &RawField<'_>) -> bool {
        if !self.is_outer(f) || self.is_protected(f) {
            return false;
        }
        let raw = f.raw;
        if raw.contains(&0) {
            return false;
        }
        // Bare CR, or lines too long for SMTP.
        for line in raw.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.contains(&b'\r') || line.len() > MAX_OUTER_LINE {
                return false;
            }
        }
        true
    }

    /// Seals M, read from `input`, writing the sealed message to `output`.
    /// Memory use is bounded by M's header block plus fixed buffers; the
    /// ciphertext spills to a temporary file past the threshold.
    pub fn seal(&self, input: impl Read, output: impl Write) -> Result<Sealed, EnvelopeError> {
        self.seal_keeping(input, output, None)
    }

    /// Seals M as [`Sealer::seal`] does and keeps the new message's own
    /// file keys in a [`Witness`], which opens that message (and no other)
    /// without an X25519 agreement: for a caller that checks what it
    /// sealed before anything depends on it (mailbox jobs). The witness is
    /// empty when M was already sealed.
    pub fn seal_witnessed(
        &self,
        input: impl Read,
        output: impl Write,
    ) -> Result<(Sealed, Witness), EnvelopeError> {
        let mut witness = Witness::default();
        let sealed = self.seal_keeping(input, output, Some(&mut witness))?;
        Ok((sealed, witness))
    }

    fn seal_keeping(
        &self,
        mut input: impl Read,
        mut output: impl Write,
        mut witness: Option<&mut Witness>,
    ) -> Result<Sealed, EnvelopeError> {
        if self.recipients.is_empty() {
            return Err(EnvelopeError::NoRecipients);
        }
        // 1. Read M's header block (bounded) to decide and to copy fields.
        let mut head = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let (head_len, truncated) = loop {
            if let Some(end) = header::header_end(&head) {
                break (end, false);
            }
            if head.len() > self.limits.max_header {
                break (self.limits.max_header, true);
            }
            let n = read_some(&mut input, &mut chunk)?;
            if n == 0 {
                break (head.len(), false);
            }
            head.extend_from_slice(&chunk[..n]);
        };
        let head_len = head_len.min(head.len());

        // 2. Already sealed under an epoch this sealer knows: pass through
        // unchanged, never seal twice.
        if let Some(d) = detect(&head[..head_len]).filter(|d| self.passes(&d.epoch)) {
            output.write_all(&head)?;
            let rest = io::copy(&mut input, &mut output)?;
            return Ok(Sealed::AlreadySealed {
                epoch: d.epoch,
                size: head.len() as u64 + rest,
            });
        }

        // 3. Stream M, batch by batch, to the payload writer and the
        // scanner (both on other threads once M is large).
        let sink = Sink::new(self.spill_threshold, self.temp_dir.clone());
        let mut payload = PayloadWriter::new(&self.recipients, self.parallel, sink)?;
        if let (Some(w), Some(key)) = (witness.as_deref_mut(), payload.file_key()) {
            w.push(key);
        }
        let mut scanner = ScanFeed::new(Scanner::new(self.limits));
        let mut batches = Batches::default();
        let mut head_rest = &head[..];
        // The first batch is sized for a small message; the rest are whole.
        let mut expect = head.len() + 16 * 1024;
        loop {
            let mut batch = batches.take(expect);
            expect = BATCH;
            let from_head = head_rest.len().min(BATCH);
            batch.extend_from_slice(&head_rest[..from_head]);
            head_rest = &head_rest[from_head..];
            let batch = batches.fill(batch, &mut input)?;
            let full = batch.len() == BATCH;
            scanner.push(&batch, payload.is_large())?;
            payload.push(batch)?;
            if !full {
                break;
            }
        }
        let mut sink = payload.finish()?;
        let summary = scanner.finish()?;

        // 4. The summary, sealed to the same recipients; a lean one when
        // the whole would not fit the readers' cap.
        let (summary, json) = summary_json(summary)?;
        let sealed_summary = self.encrypt_small(&json, witness)?;

        // 5. Assemble, part 1 first.
        let mut counter = CountingWriter::new(&mut output);
        let boundary = new_boundary();
        let outer = self.outer_header(&head[..head_len], truncated, &boundary);
        counter.write_all(&outer)?;
        write!(
            counter,
            "{PREAMBLE}\r\n--{boundary}\r\nContent-Type: {SEALED_PROTOCOL}\r\n\r\nVersion: 1\r\nKey: {}\r\n\r\n",
            self.epoch
        )?;
        counter.write_all(&sealed_summary)?;
        write!(
            counter,
            "--{boundary}\r\nContent-Type: {PAYLOAD_TYPE}; name=\"message.age\"\r\nContent-Disposition: inline; filename=\"message.age\"\r\n\r\n"
        )?;
        sink.copy_to(&mut counter)?;
        write!(counter, "--{boundary}--\r\n")?;
        counter.flush()?;
        Ok(Sealed::Sealed {
            original: summary.size,
            sealed: counter.count,
            summary: Box::new(summary),
        })
    }

    /// Age-encrypts a small value (the summary) in memory, armored, CRLF:
    /// the same age file the payload is (writ's own writer, on this
    /// thread), not the age crate's `Encryptor`, which costs more for the
    /// same bytes (its RustCrypto cipher and line-at-a-time armor).
    fn encrypt_small(
        &self,
        data: &[u8],
        witness: Option<&mut Witness>,
    ) -> Result<Vec<u8>, EnvelopeError> {
        let inline = Parallel {
            after: u64::MAX,
            threads: 1,
        };
        let armored = data.len() / 48 * 66 + 1024;
        let mut w = PayloadWriter::new(&self.recipients, inline, Vec::with_capacity(armored))?;
        if let (Some(witness), Some(key)) = (witness, w.file_key()) {
            witness.push(key);
        }
        for piece in data.chunks(BATCH) {
            w.push(Arc::new(Plain::new(piece.to_vec())))?;
        }
        Ok(w.finish()?)
    }

    /// The sealed message's header: marker, M's outer fields verbatim
    /// (line endings made CRLF), the placeholder Subject, the MIME fields.
    fn outer_header(&self, head: &[u8], truncated: bool, boundary: &str) -> Vec<u8> {
        let mut out = format!("X-Writ: v=1; key={}\r\n", self.epoch).into_bytes();
        let mut fields = header::fields(head);
        if truncated {
            // The last field may continue past the cap: leave it inside.
            fields.pop();
        }
        let mut had_subject = false;
        for f in &fields {
            had_subject |= f.is("subject");
            if self.goes_outside(f) {
                push_crlf(&mut out, f.raw);
            }
        }
        if had_subject {
            out.extend_from_slice(b"Subject: [...]\r\n");
        }
        out.extend_from_slice(
            format!(
                "MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"{SEALED_PROTOCOL}\";\r\n boundary=\"{boundary}\"\r\n\r\n"
            )
            .as_bytes(),
        );
        out
    }
}

/// Appends a field with every line ending turned into CRLF, and a final
/// CRLF if the field had none (header without a blank line).
fn push_crlf(out: &mut Vec<u8>, raw: &[u8]) {
    for line in raw.split_inclusive(|&b| b == b'\n') {
        let body = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line);
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
    }
}

fn read_some(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match input.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// A boundary that cannot occur in armor or in the fixed text around it.
fn new_boundary() -> String {
    let rng = ring::rand::SystemRandom::new();
    let bytes: [u8; 16] = ring::rand::generate(&rng)
        .map(|r| r.expose())
        .unwrap_or_else(|_| {
            // The system RNG failing is not plausible; a boundary needs only
            // to be absent from the message, and armor never contains '='
            // after '-', so a fixed fallback is still correct.
            [0x5a; 16]
        });
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("=_writ_{hex}")
}

struct CountingWriter<W: Write> {
    inner: W,
    count: u64,
}

impl<W: Write> CountingWriter<W> {
    fn new(inner: W) -> Self {
        CountingWriter { inner, count: 0 }
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
