//! Opening: a stored sealed message in, M out (preceded by the trace and
//! verdict fields the provider put above the marker: `detect.rs`'s
//! `kept_above_marker`; any other field there is dropped), streaming.
//!
//! The opener assumes nothing about layout that a provider may change: it
//! finds the marker by name, the boundary from the (possibly re-folded)
//! Content-Type, the parts by their content types, undoes any transfer
//! encoding, and reads the armor ignoring whitespace.
//!
//! What it trusts nothing about: the decrypted summary (anyone can encrypt
//! one to the public epoch recipient) is checked against the caps and for
//! consistency before use (`summary.rs`), and M must be exactly as long as
//! the summary says (`open` checks whenever part 1 precedes the payload),
//! so a message is either wholly readable or wholly undecryptable. Caps:
//! stored header 8 MiB ([`MAX_STORED_HEADER`]), container line 64 KiB,
//! summary part 64 MiB of armor ([`MAX_SUMMARY_PART`], for part 1 read
//! from the stored message or given alone), age header of either part
//! [`MAX_AGE_HEADER`] bytes in at most [`MAX_AGE_HEADER_LINES`] lines
//! (the age crate parses its header again from the start for each line
//! read: without the cap a forged header of a million short stanzas
//! would hold an opening thread for minutes).

use std::io::{self, BufRead, Read, Write};

use super::FORMAT_VERSION;
use super::armor::{Dearmor, TransferDecoder, TransferEncoding};
use super::detect::{Detected, parse_marker};
use super::header;
use super::summary::{SUMMARY_VERSION, Summary};
use super::{EnvelopeError, PAYLOAD_TYPE, SEALED_PROTOCOL};

/// Where the identities for an epoch come from (the unlocked keyring, an
/// escrow identity, a plain list in tests).
pub trait Keys {
    /// Identities that may open messages sealed under `epoch`. Empty when
    /// the epoch is unknown.
    fn identities(&self, epoch: &str) -> Vec<&dyn age::Identity>;

    /// One 32-byte key per epoch, derived from that epoch's identity and
    /// `context`, for writ's own local data (the IMAP cache): whoever holds
    /// the epoch's identity can remake it, nobody else. Empty (the default)
    /// when these keys cannot derive any.
    fn local_keys(&self, _context: &[u8]) -> Vec<(String, zeroize::Zeroizing<[u8; 32]>)> {
        Vec::new()
    }
}

/// Any identity in the list is tried, whatever the epoch.
impl Keys for [age::x25519::Identity] {
    fn identities(&self, _epoch: &str) -> Vec<&dyn age::Identity> {
        self.iter().map(|i| i as &dyn age::Identity).collect()
    }
}

impl Keys for Vec<age::x25519::Identity> {
    fn identities(&self, epoch: &str) -> Vec<&dyn age::Identity> {
        self.as_slice().identities(epoch)
    }
}

/// Any opening key in the list is tried, whatever the epoch.
impl Keys for [super::OpeningKey] {
    fn identities(&self, _epoch: &str) -> Vec<&dyn age::Identity> {
        self.iter().map(|i| i as &dyn age::Identity).collect()
    }
}

impl Keys for Vec<super::OpeningKey> {
    fn identities(&self, epoch: &str) -> Vec<&dyn age::Identity> {
        self.as_slice().identities(epoch)
    }
}

/// Longest stored header block read (providers add trace fields); past
/// it the message is "not sealed".
pub const MAX_STORED_HEADER: usize = 8 * 1024 * 1024;
/// Longest summary part read (armor, after transfer decoding); a longer
/// one is cut there and fails as damaged.
pub const MAX_SUMMARY_PART: usize = 64 * 1024 * 1024;

/// Longest age header read before decryption (a header holds one stanza
/// per recipient, about 110 bytes each for X25519; writ seals to at most
/// 2 + `seal.extra_recipients`' cap of 64).
pub const MAX_AGE_HEADER: usize = 32 * 1024;
/// Most lines an age header may have (two per X25519 stanza).
pub const MAX_AGE_HEADER_LINES: usize = 512;

/// Reads the age header (up to and including its `---` line) within
/// [`MAX_AGE_HEADER`] and [`MAX_AGE_HEADER_LINES`], and gives it back
/// followed by the rest of `r`: what the age crate may then parse. Past
/// either cap, damaged. (An input that ends before its `---` is given
/// back as it is: age reports it.)
fn bounded_age_header<R: BufRead>(
    mut r: R,
) -> Result<io::Chain<io::Cursor<Vec<u8>>, R>, EnvelopeError> {
    let mut header = Vec::with_capacity(512);
    let mut lines = 0usize;
    loop {
        let room = (MAX_AGE_HEADER + 1).saturating_sub(header.len()) as u64;
        let start = header.len();
        let n = (&mut r)
            .take(room)
            .read_until(b'\n', &mut header)
            .map_err(|e| EnvelopeError::Damaged(e.to_string()))?;
        if n == 0 {
            break;
        }
        lines += 1;
        if header.len() > MAX_AGE_HEADER || lines > MAX_AGE_HEADER_LINES {
            return Err(EnvelopeError::Damaged(format!(
                "the age header is longer than {MAX_AGE_HEADER} bytes or \
                 {MAX_AGE_HEADER_LINES} lines"
            )));
        }
        if header[start..].starts_with(b"---") {
            break;
        }
    }
    Ok(io::Cursor::new(header).chain(r))
}

/// What [`open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub epoch: String,
    /// Octets written: prefix fields plus M.
    pub size: u64,
}

/// The stored header, split at the marker.
struct StoredHeader {
    /// Fields above `X-Writ`, verbatim.
    prefix: Vec<u8>,
    marker: Detected,
    boundary: Vec<u8>,
}

fn read_stored_header(input: &mut impl BufRead) -> Result<StoredHeader, EnvelopeError> {
    let mut block = Vec::new();
    loop {
        let n = read_line(input, &mut block, MAX_STORED_HEADER)?;
        if n == 0 {
            break;
        }
        let last = &block[block.len() - n..];
        if last == b"\r\n" || last == b"\n" {
            break;
        }
        if block.len() >= MAX_STORED_HEADER {
            return Err(EnvelopeError::NotSealed);
        }
    }
    let fields = header::fields(&block);
    let Some(pos) = fields.iter().position(|f| f.is("x-writ")) else {
        return Err(EnvelopeError::NotSealed);
    };
    let value = fields[pos].value();
    let marker = match parse_marker(&value) {
        Some(m) if m.version == FORMAT_VERSION => m,
        Some(m) => return Err(EnvelopeError::UnsupportedVersion(m.version.to_string())),
        None => {
            return Err(EnvelopeError::Damaged(
                "the X-Writ marker is malformed".into(),
            ));
        }
    };
    let prefix: Vec<u8> = fields[..pos]
        .iter()
        .filter(|f| super::detect::kept_above_marker(f))
        .flat_map(|f| f.raw.iter().copied())
        .collect();
    let ct = fields
        .iter()
        .find(|f| f.is("content-type"))
        .map(|f| header::parse_params(&f.value()))
        .ok_or_else(|| EnvelopeError::Damaged("the sealed message has no Content-Type".into()))?;
    let boundary = ct
        .param("boundary")
        .filter(|b| !b.is_empty())
        .ok_or_else(|| EnvelopeError::Damaged("the sealed message has no MIME boundary".into()))?;
    let mut delim = b"--".to_vec();
    delim.extend_from_slice(boundary.as_bytes());
    Ok(StoredHeader {
        prefix,
        marker,
        boundary: delim,
    })
}

/// Reads one line (up to and including LF) into `buf`, at most `cap` bytes
/// in total in `buf`. Returns bytes added.
fn read_line(input: &mut impl BufRead, buf: &mut Vec<u8>, cap: usize) -> io::Result<usize> {
    let start = buf.len();
    loop {
        let avail = input.fill_buf()?;
        if avail.is_empty() {
            break;
        }
        let room = cap.saturating_sub(buf.len());
        if room == 0 {
            break;
        }
        let take = avail.len().min(room);
        match memchr::memchr(b'\n', &avail[..take]) {
            Some(p) => {
                buf.extend_from_slice(&avail[..=p]);
                input.consume(p + 1);
                break;
            }
            None => {
                buf.extend_from_slice(&avail[..take]);
                input.consume(take);
            }
        }
    }
    Ok(buf.len() - start)
}

/// The kind of a part of the sealed message.
#[derive(Debug, PartialEq, Eq)]
enum PartKind {
    Summary,
    Payload,
    Other,
}

/// Reads part headers and bodies of the sealed container, line by line.
struct Parts<R: BufRead> {
    input: R,
    delimiter: Vec<u8>,
    line: Vec<u8>,
    /// The current line is a delimiter (start of a part), or the close.
    finished: bool,
}

const LINE_CAP: usize = 64 * 1024;
/// Bytes of part body gathered per read.
const BODY_CHUNK: usize = 32 * 1024;

impl<R: BufRead> Parts<R> {
    /// Skips to the next part; returns its kind and transfer encoding.
    fn next_part(&mut self) -> Result<Option<(PartKind, TransferEncoding)>, EnvelopeError> {
        // Skip to a delimiter line.
        loop {
            if self.finished {
                return Ok(None);
            }
            if self.line.starts_with(&self.delimiter) {
                if self.line[self.delimiter.len()..].starts_with(b"--") {
                    self.finished = true;
                    return Ok(None);
                }
                break;
            }
            self.line.clear();
            if read_line(&mut self.input, &mut self.line, LINE_CAP)? == 0 {
                self.finished = true;
                return Ok(None);
            }
        }
        // The part header.
        let mut block = Vec::new();
        loop {
            let n = read_line(&mut self.input, &mut block, MAX_STORED_HEADER)?;
            if n == 0 {
                break;
            }
            let last = &block[block.len() - n..];
            if last == b"\r\n" || last == b"\n" || block.len() >= MAX_STORED_HEADER {
                break;
            }
        }
        self.line.clear();
        let ct = header::first_value(&block, "content-type")
            .map(|v| header::parse_params(&v))
            .unwrap_or_default();
        let cte =
            header::first_value(&block, "content-transfer-encoding").map(|v| header::text(&v));
        let kind = if ct.value.eq_ignore_ascii_case(SEALED_PROTOCOL) {
            PartKind::Summary
        } else if ct.value.eq_ignore_ascii_case(PAYLOAD_TYPE)
            || ct.param("name") == Some("message.age")
        {
            PartKind::Payload
        } else {
            PartKind::Other
        };
        Ok(Some((kind, TransferEncoding::from_header(cte.as_deref()))))
    }

    /// The current part's body as a reader that stops at the next delimiter.
    fn body(&mut self) -> PartBody<'_, R> {
        PartBody {
            parts: self,
            pending: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

struct PartBody<'a, R: BufRead> {
    parts: &'a mut Parts<R>,
    pending: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<R: BufRead> Read for PartBody<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.pending.len() {
            self.pending.clear();
            self.pos = 0;
            // Gather many lines per call: readers above work in large
            // chunks, and one armor line per read would make every layer
            // pay its per-call cost 60 bytes at a time.
            while !self.done && self.pending.len() < BODY_CHUNK {
                let p = &mut *self.parts;
                // Each line straight into `pending`, taken back out when it
                // is the delimiter.
                let start = self.pending.len();
                if read_line(&mut p.input, &mut self.pending, start + LINE_CAP)? == 0 {
                    p.finished = true;
                    self.done = true;
                } else if self.pending[start..].starts_with(&p.delimiter) {
                    // Leave the delimiter in `line` for next_part.
                    p.line.clear();
                    p.line.extend_from_slice(&self.pending[start..]);
                    self.pending.truncate(start);
                    self.done = true;
                }
            }
            if self.pending.is_empty() {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.pending.len() - self.pos);
        buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn decrypt_error(e: age::DecryptError) -> EnvelopeError {
    match e {
        age::DecryptError::NoMatchingKeys => EnvelopeError::NoMatchingKey,
        age::DecryptError::Io(e) => EnvelopeError::Damaged(e.to_string()),
        other => EnvelopeError::Damaged(format!("age: {other}")),
    }
}

/// Decrypts an armored age file read from `r` (whitespace-tolerant).
fn decrypt_into(
    r: impl Read,
    identities: &[&dyn age::Identity],
    out: &mut dyn Write,
) -> Result<u64, EnvelopeError> {
    let dearmored = io::BufReader::with_capacity(64 * 1024, Dearmor::new(r));
    let decryptor =
        age::Decryptor::new_buffered(bounded_age_header(dearmored)?).map_err(decrypt_error)?;
    let mut reader = decryptor
        .decrypt(identities.iter().copied())
        .map_err(decrypt_error)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(EnvelopeError::Damaged(format!(
                    "the payload is damaged or was tampered with ({e})"
                )));
            }
        };
        out.write_all(&buf[..n]).map_err(EnvelopeError::Output)?;
        total += n as u64;
    }
    Ok(total)
}

fn identities_for<'k>(
    keys: &'k (impl Keys + ?Sized),
    epoch: &str,
) -> Result<Vec<&'k dyn age::Identity>, EnvelopeError> {
    let ids = keys.identities(epoch);
    if ids.is_empty() {
        return Err(EnvelopeError::UnknownEpoch(epoch.to_owned()));
    }
    Ok(ids)
}

/// Reads the stored header and sets up the walk over the container's parts
/// with the identities for its epoch.
#[allow(clippy::type_complexity)]
fn container<R: BufRead>(
    mut input: R,
    keys: &(impl Keys + ?Sized),
) -> Result<(StoredHeader, Vec<&dyn age::Identity>, Parts<R>), EnvelopeError> {
    let mut head = read_stored_header(&mut input)?;
    let ids = identities_for(keys, &head.marker.epoch)?;
    let parts = Parts {
        input,
        delimiter: std::mem::take(&mut head.boundary),
        line: Vec::new(),
        finished: false,
    };
    Ok((head, ids, parts))
}

/// Opens a stored sealed message: writes the fields above the marker, then
/// M byte for byte. Output written before an error is authentic (age
/// authenticates every chunk) but may be incomplete; callers that must not
/// expose partial output write to a buffer or temp file first.
///
/// When the summary part precedes the payload (always, in messages writ
/// wrote), it is read and checked first, and M must be exactly its `size`
/// octets: a payload longer than the summary says fails as soon as it
/// passes that size, a shorter one at its end, both as damaged. A summary
/// that does not open or is malformed fails the same way, so a message is
/// either wholly readable (summary and payload agree) or undecryptable.
/// Without a summary part before the payload, M is opened unchecked; use
/// [`open_with_summary`] to require one.
pub fn open(
    input: impl BufRead,
    keys: &(impl Keys + ?Sized),
    output: impl Write,
) -> Result<Opened, EnvelopeError> {
    open_checked(input, keys, output, false).map(|(opened, _)| opened)
}

/// Opens a stored sealed message as [`open`] does, and returns its summary
/// too (with the stored prefix not yet applied: see
/// [`Summary::with_prefix`]). The summary part must precede the payload,
/// and M's length must equal the summary's `size`; otherwise the message is
/// damaged ([`EnvelopeError::Damaged`]). This is the one call for a reader
/// that shows both (the IMAP proxy's whole-message fetch): what it lists
/// and what it serves can never disagree on the size.
pub fn open_with_summary(
    input: impl BufRead,
    keys: &(impl Keys + ?Sized),
    output: impl Write,
) -> Result<(Opened, Summary), EnvelopeError> {
    let (opened, summary) = open_checked(input, keys, output, true)?;
    let summary = summary.ok_or_else(|| {
        EnvelopeError::Damaged("the sealed message has no summary before its payload".into())
    })?;
    Ok((opened, summary))
}

fn open_checked(
    input: impl BufRead,
    keys: &(impl Keys + ?Sized),
    mut output: impl Write,
    require_summary: bool,
) -> Result<(Opened, Option<Summary>), EnvelopeError> {
    let (head, ids, mut parts) = container(input, keys)?;
    let mut summary = None;
    while let Some((kind, enc)) = parts.next_part()? {
        match kind {
            PartKind::Summary if summary.is_none() => {
                let body = TransferDecoder::new(parts.body(), enc);
                summary = Some(summary_from(body.take(MAX_SUMMARY_PART as u64), &ids)?);
                continue;
            }
            PartKind::Payload => {}
            _ => continue,
        }
        if require_summary && summary.is_none() {
            return Err(EnvelopeError::Damaged(
                "the sealed message has no summary before its payload".into(),
            ));
        }
        output
            .write_all(&head.prefix)
            .map_err(EnvelopeError::Output)?;
        let body = TransferDecoder::new(parts.body(), enc);
        let expected = summary.as_ref().map(|s: &Summary| s.size);
        let mut sized = SizedOutput {
            inner: &mut output,
            expected,
            written: 0,
            past: None,
        };
        let decrypted = decrypt_into(body, &ids, &mut sized);
        if let (Some(got), Some(want)) = (sized.past, expected) {
            return Err(size_mismatch(got, want));
        }
        let n = decrypted?;
        if let Some(want) = expected
            && n != want
        {
            return Err(size_mismatch(n, want));
        }
        output.flush().map_err(EnvelopeError::Output)?;
        return Ok((
            Opened {
                epoch: head.marker.epoch,
                size: head.prefix.len() as u64 + n,
            },
            summary,
        ));
    }
    Err(EnvelopeError::Damaged(
        "the sealed message has no payload part".into(),
    ))
}

fn size_mismatch(got: u64, want: u64) -> EnvelopeError {
    let how = if got > want { "longer" } else { "shorter" };
    EnvelopeError::Damaged(format!(
        "the payload is {how} than its summary says ({want} octets): tampered with"
    ))
}

/// The output of a payload whose length the summary gives: refuses octets
/// past it, before they are written.
struct SizedOutput<W: Write> {
    inner: W,
    expected: Option<u64>,
    written: u64,
    /// Set to the length reached when a write would have passed
    /// `expected`.
    past: Option<u64>,
}

impl<W: Write> Write for SizedOutput<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let after = self.written.saturating_add(buf.len() as u64);
        if let Some(want) = self.expected
            && after > want
        {
            self.past = Some(after);
            return Err(io::Error::other(
                "the payload is longer than its summary says",
            ));
        }
        let n = self.inner.write(buf)?;
        self.written = self.written.saturating_add(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads the summary from a stored sealed message, consuming input only up
/// to the end of part 1: the payload need not be downloaded.
pub fn read_summary(
    input: impl BufRead,
    keys: &(impl Keys + ?Sized),
) -> Result<Summary, EnvelopeError> {
    let (_, ids, mut parts) = container(input, keys)?;
    while let Some((kind, enc)) = parts.next_part()? {
        if kind == PartKind::Summary {
            let body = TransferDecoder::new(parts.body(), enc);
            return summary_from(body.take(MAX_SUMMARY_PART as u64), &ids);
        }
    }
    Err(EnvelopeError::Damaged(
        "the sealed message has no summary part".into(),
    ))
}

/// Opens the summary from part 1's body alone (as fetched with BODY[1]),
/// undoing `transfer_encoding` (its Content-Transfer-Encoding, if any),
/// for a message whose marker was detected as `marker`. A marker of a
/// format version other than [`FORMAT_VERSION`] is refused as unsupported
/// before anything is decrypted, exactly as [`open`] refuses it: a message
/// is never listed from its summary and served as ciphertext.
pub fn open_summary_of(
    part1: &[u8],
    transfer_encoding: Option<&str>,
    marker: &Detected,
    keys: &(impl Keys + ?Sized),
) -> Result<Summary, EnvelopeError> {
    marker.supported()?;
    open_summary(part1, transfer_encoding, &marker.epoch, keys)
}

/// Opens the summary from part 1's body alone (as fetched with BODY[1]),
/// undoing `transfer_encoding` (its Content-Transfer-Encoding, if any).
/// This does not know the marker's format version: callers check it first
/// ([`Detected::supported`]), or call [`open_summary_of`].
pub fn open_summary(
    part1: &[u8],
    transfer_encoding: Option<&str>,
    epoch: &str,
    keys: &(impl Keys + ?Sized),
) -> Result<Summary, EnvelopeError> {
    let ids = identities_for(keys, epoch)?;
    let body = TransferDecoder::new(part1, TransferEncoding::from_header(transfer_encoding));
    summary_from(body.take(MAX_SUMMARY_PART as u64), &ids)
}

/// The summary's version alone, read first so that a summary of another
/// version is refused as such, whatever the rest of it holds.
#[derive(serde::Deserialize)]
struct VersionOnly {
    version: Option<serde_json::Value>,
}

/// Decrypts and reads a summary. Its JSON is flat (serde recurses a few
/// levels at most, and serde_json stops at 128); [`Summary`]'s conversion
/// checks the caps and numbers before building the tree (see
/// `summary.rs`).
fn summary_from(body: impl Read, ids: &[&dyn age::Identity]) -> Result<Summary, EnvelopeError> {
    // A summary is a few KiB: small buffers, no copy loop (the payload's
    // 64 KiB ones cost more to allocate and clear than the summary takes
    // to decrypt).
    let dearmored = io::BufReader::with_capacity(SUMMARY_BUFFER, Dearmor::new(body));
    let decryptor =
        age::Decryptor::new_buffered(bounded_age_header(dearmored)?).map_err(decrypt_error)?;
    let mut reader = decryptor
        .decrypt(ids.iter().copied())
        .map_err(decrypt_error)?;
    let mut json = Vec::with_capacity(SUMMARY_BUFFER);
    reader.read_to_end(&mut json).map_err(|e| {
        EnvelopeError::Damaged(format!("the payload is damaged or was tampered with ({e})"))
    })?;
    // Parsed once; only a summary that does not parse is read again for
    // its version, so that one of another version is refused as such.
    match serde_json::from_slice::<Summary>(&json) {
        Ok(summary) => Ok(summary),
        Err(e) => {
            let head: VersionOnly =
                serde_json::from_slice(&json).map_err(|e| EnvelopeError::Summary(e.to_string()))?;
            match head.version.as_ref().and_then(serde_json::Value::as_u64) {
                Some(v) if v == u64::from(SUMMARY_VERSION) => {
                    Err(EnvelopeError::Summary(e.to_string()))
                }
                Some(v) => Err(EnvelopeError::UnsupportedVersion(format!("summary {v}"))),
                None => Err(EnvelopeError::UnsupportedVersion(
                    "summary without a version number".into(),
                )),
            }
        }
    }
}

/// Buffer sizes for reading a summary.
const SUMMARY_BUFFER: usize = 8 * 1024;
