//! A streaming MIME scanner: fed M in chunks of any size, it builds the
//! [`Summary`] without ever holding more than one header block and one
//! short line.
//!
//! It follows RFC 2045/2046 the way IMAP servers do in practice (Dovecot's
//! message parser, `view::mime` for the fields): a line that starts with
//! `--boundary` of any open multipart is a delimiter (the longest such
//! boundary wins), the line break before a delimiter belongs to the
//! delimiter, a part without a blank line ends its header at the next
//! delimiter, and a message that ends early closes every open part at EOF.
//! Past [`Limits::max_depth`] a body is opaque content: the summary says
//! so, the payload is unaffected. Once [`Limits::max_parts`] entities are
//! recorded, no line is a delimiter any more and a message/rfc822 part is
//! opaque. A message/global part is a leaf, as IMAP servers show it.

use super::header::{self, text};
use super::summary::{
    Disposition, MAX_DEPTH, MAX_MIME_FIELDS, MAX_PARTS, Part, SUMMARY_VERSION, Summary,
};
use super::view::mime::{self, Structure};

/// Bounds on what the scanner keeps. The defaults match Dovecot's message
/// parser so the proxy and the provider agree on structure.
///
/// The scanner is iterative (an explicit stack of at most `max_depth`
/// frames) and never records more than `max_parts` entities. Both are
/// clamped to the readers' caps ([`MAX_DEPTH`], [`MAX_PARTS`]), so that a
/// writer never produces a summary that readers refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of entities (multiparts and embedded messages); M is
    /// depth 1. Default and maximum: 100.
    pub max_depth: usize,
    /// Entities recorded in one message (M included). Default and maximum:
    /// 10,000.
    pub max_parts: usize,
    /// Bytes of one header block kept for parsing and for the summary.
    pub max_header: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: MAX_DEPTH,
            max_parts: MAX_PARTS,
            max_header: 1024 * 1024,
        }
    }
}

/// Bytes of a body line kept: enough for any RFC 2046 delimiter
/// (`--`, 70 octets of boundary, `--`, transport padding).
const LINE_KEEP: usize = 1024;

#[derive(Debug)]
enum State {
    /// Reading the entity's header; `buf` holds it up to the cap.
    Header { buf: Vec<u8>, truncated: bool },
    /// In the body (for a multipart: preamble, parts, or epilogue).
    Body,
}

#[derive(Debug)]
struct Frame {
    part: Part,
    state: State,
    /// `--boundary` while this multipart's delimiters are live.
    delimiter: Option<Vec<u8>>,
    /// Counters at `body_offset`, to compute line counts at close.
    lf_at_body: u64,
    bare_at_body: u64,
    /// Keep the raw header in the summary (the message and embedded ones).
    keep_header: bool,
    /// Children default to message/rfc822 (inside multipart/digest).
    digest: bool,
    /// This entity is a body part of a multipart/digest.
    in_digest: bool,
}

impl Frame {
    fn new(header_offset: u64, keep_header: bool, parent_digest: bool) -> Frame {
        let (media_type, subtype) = if parent_digest {
            ("message", "rfc822")
        } else {
            ("text", "plain")
        };
        let mut part = Part::default();
        part.media_type = media_type.into();
        part.subtype = subtype.into();
        part.header_offset = header_offset;
        Frame {
            part,
            state: State::Header {
                buf: Vec::new(),
                truncated: false,
            },
            delimiter: None,
            lf_at_body: 0,
            bare_at_body: 0,
            keep_header,
            digest: false,
            in_digest: parent_digest,
        }
    }
}

/// The streaming scanner. Feed with [`Scanner::push`], finish with
/// [`Scanner::finish`].
#[derive(Debug)]
pub struct Scanner {
    limits: Limits,
    offset: u64,
    lf: u64,
    bare_lf: u64,
    /// The last two bytes seen, to tell CRLF from bare LF across chunks.
    tail: [u8; 2],
    line: Vec<u8>,
    line_len: u64,
    line_start: u64,
    line_start_lf: u64,
    line_start_bare: u64,
    /// Length of the previous line's line break (0 at the start).
    prev_eol: u64,
    /// The previous line was a delimiter line of the multipart at this
    /// index of the stack (to see whether a delimiter line directly follows
    /// another).
    prev_delimiter: Option<usize>,
    /// This line is a delimiter line of the multipart at this index.
    delimiter: Option<usize>,
    stack: Vec<Frame>,
    parts: usize,
    /// Octets of raw MIME fields the summary may still hold.
    mime_budget: usize,
    root: Option<Part>,
}

impl Scanner {
    pub fn new(limits: Limits) -> Scanner {
        let limits = Limits {
            max_depth: limits.max_depth.clamp(1, MAX_DEPTH),
            max_parts: limits.max_parts.clamp(1, MAX_PARTS),
            ..limits
        };
        Scanner {
            limits,
            offset: 0,
            lf: 0,
            bare_lf: 0,
            tail: [0, 0],
            line: Vec::new(),
            line_len: 0,
            line_start: 0,
            line_start_lf: 0,
            line_start_bare: 0,
            prev_eol: 0,
            prev_delimiter: None,
            delimiter: None,
            stack: vec![Frame::new(0, true, false)],
            parts: 1,
            mime_budget: MAX_MIME_FIELDS,
            root: None,
        }
    }

    /// Feeds the next bytes of M.
    pub fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match memchr::memchr(b'\n', data) {
                Some(p) => {
                    self.take(&data[..=p]);
                    self.end_line();
                    data = &data[p + 1..];
                }
                None => {
                    self.take(data);
                    break;
                }
            }
        }
    }

    fn line_cap(&self) -> usize {
        match self.stack.last().map(|f| &f.state) {
            Some(State::Header { .. }) => self.limits.max_header.max(LINE_KEEP),
            _ => LINE_KEEP,
        }
    }

    fn take(&mut self, seg: &[u8]) {
        let room = self.line_cap().saturating_sub(self.line.len());
        let mut keep = seg.len().min(room);
        if let Some(State::Body) = self.stack.last().map(|f| &f.state) {
            // In a body only a line starting with "--" can matter (as a
            // delimiter): of any other, two bytes are enough to tell.
            let known = self.line.len().min(2);
            let more = (2 - known).min(seg.len());
            let mut start = [0u8; 2];
            start[..known].copy_from_slice(&self.line[..known]);
            start[known..known + more].copy_from_slice(&seg[..more]);
            if known + more == 2 && start != *b"--" {
                keep = keep.min(more);
            }
        }
        self.line.extend_from_slice(&seg[..keep]);
        self.line_len += seg.len() as u64;
        self.offset += seg.len() as u64;
        match seg {
            [.., a, b] => self.tail = [*a, *b],
            [b] => self.tail = [self.tail[1], *b],
            [] => {}
        }
    }

    fn end_line(&mut self) {
        let eol: u64 = if self.line_len >= 2 && self.tail[0] == b'\r' {
            2
        } else {
            1
        };
        self.lf += 1;
        if eol == 1 {
            self.bare_lf += 1;
        }
        let line = std::mem::take(&mut self.line);
        let complete = line.len() as u64 == self.line_len;
        self.process_line(&line, complete, eol);
        self.prev_delimiter = self.delimiter.take();
        self.line = line;
        self.line.clear();
        self.prev_eol = eol;
        self.line_len = 0;
        self.line_start = self.offset;
        self.line_start_lf = self.lf;
        self.line_start_bare = self.bare_lf;
    }

    /// Which open multipart (index into the stack) does this line delimit,
    /// and is it the close delimiter? As Dovecot's `boundary_find`: of the
    /// live boundaries that begin the line after `--`, the longest (the
    /// innermost among equals), stopping at one that is the whole line (or
    /// the whole line but a closing `--`).
    fn delimiter_of(&self, line: &[u8]) -> Option<(usize, bool)> {
        let rest = line.strip_prefix(b"--")?;
        let find = match rest.iter().position(|&b| b == b'\n') {
            Some(p) => rest[..p].strip_suffix(b"\r").unwrap_or(&rest[..p]),
            None => rest,
        };
        let trailing_dashes = find.len() > 2 && find.ends_with(b"--");
        let mut best: Option<(usize, usize)> = None;
        for (i, f) in self.stack.iter().enumerate().rev() {
            let Some(d) = &f.delimiter else { continue };
            let boundary = &d[2..];
            if find.starts_with(boundary) && best.is_none_or(|(_, len)| len < boundary.len()) {
                best = Some((i, boundary.len()));
                if boundary.len() == find.len()
                    || (trailing_dashes && boundary.len() + 2 == find.len())
                {
                    break;
                }
            }
        }
        let (i, len) = best?;
        Some((i, rest[len..].starts_with(b"--")))
    }

    fn process_line(&mut self, line: &[u8], complete: bool, eol: u64) {
        // With the entity count at its cap no line is a delimiter line any
        // more, close delimiters included: what follows belongs to the
        // entities open now (as in Dovecot, whose count is the same).
        let delimiter = if self.parts < self.limits.max_parts {
            self.delimiter_of(line)
        } else {
            None
        };
        if let Some((k, close)) = delimiter {
            // The previous line's break belongs to this delimiter.
            let delimiter_start = self.line_start;
            let end = delimiter_start.saturating_sub(self.prev_eol);
            let (end_lf, end_bare) = self.counters_before_break();
            // Where Dovecot departs from RFC 2046, an entity's body keeps
            // that line break (see `Part::imap_body_eol`): when a header
            // inside it runs up to this delimiter line, or when its last
            // line is a delimiter line of a multipart inside it (or its own).
            // Frames close innermost first, so "inside" is what closed
            // before.
            let mut header_end_inside = 0u64;
            while self.stack.len() > k + 1 {
                let Some(top) = self.stack.last() else { break };
                let (entity_end, header_end, in_body) = match top.state {
                    State::Header { .. } => (delimiter_start, delimiter_start, false),
                    State::Body => {
                        let body = top.part.body_offset;
                        (end.max(body), body, true)
                    }
                };
                let index = self.stack.len() - 1;
                let delimiter_line_inside = self.prev_delimiter.is_some_and(|j| j >= index);
                let keeps_break = header_end_inside > entity_end
                    || (delimiter_line_inside && in_body && entity_end == end);
                let extra = if keeps_break { self.prev_eol } else { 0 };
                self.close_top(end, end_lf, end_bare, delimiter_start, extra);
                header_end_inside = header_end_inside.max(header_end);
            }
            self.delimiter = Some(k);
            if close {
                if let Some(f) = self.stack.last_mut() {
                    f.delimiter = None;
                }
            } else {
                self.parts += 1;
                let digest = self.stack.last().is_some_and(|f| f.digest);
                self.stack.push(Frame::new(self.offset, false, digest));
            }
            return;
        }
        let is_blank = self.line_len == eol;
        let max_header = self.limits.max_header;
        let Some(top) = self.stack.last_mut() else {
            return;
        };
        let State::Header { buf, truncated } = &mut top.state else {
            return;
        };
        if !is_blank {
            if complete && buf.len() + line.len() <= max_header {
                buf.extend_from_slice(line);
            } else {
                *truncated = true;
            }
            return;
        }
        if buf.len() + line.len() <= max_header {
            buf.extend_from_slice(line);
        }
        let buf = std::mem::take(buf);
        let truncated = *truncated;
        let body_offset = self.offset;
        self.begin_body(buf, truncated, body_offset);
    }

    /// LF and bare-LF counts at the point just before the previous line's
    /// break (where a part ends when a delimiter follows).
    fn counters_before_break(&self) -> (u64, u64) {
        let lf = self
            .line_start_lf
            .saturating_sub(u64::from(self.prev_eol > 0));
        let bare = self
            .line_start_bare
            .saturating_sub(u64::from(self.prev_eol == 1));
        (lf, bare)
    }

    /// The top entity's header ended at `body_offset`: parse it and decide
    /// what its body is.
    fn begin_body(&mut self, buf: Vec<u8>, truncated: bool, body_offset: u64) {
        let depth = self.stack.len();
        let (lf, bare) = (self.lf, self.bare_lf);
        let Some(top) = self.stack.last_mut() else {
            return;
        };
        let structure = apply_header(&mut top.part, &buf, top.in_digest, &mut self.mime_budget);
        top.part.header_size = body_offset - top.part.header_offset;
        top.part.body_offset = body_offset;
        top.lf_at_body = lf;
        top.bare_at_body = bare;
        if top.keep_header {
            if truncated {
                top.part.header_truncated = true;
                top.part.mime = None;
            } else {
                top.part.header = Some(buf);
            }
        }
        top.state = State::Body;
        let deep_ok = depth < self.limits.max_depth;
        let count_ok = self.parts < self.limits.max_parts;
        if structure.multipart {
            match structure.boundary {
                Some(b) if deep_ok => {
                    let mut d = b"--".to_vec();
                    d.extend_from_slice(&b);
                    top.delimiter = Some(d);
                    top.digest = structure.digest;
                }
                Some(_) => top.part.opaque = true,
                None => {}
            }
        } else if structure.rfc822 {
            if deep_ok && count_ok {
                self.parts += 1;
                self.stack.push(Frame::new(body_offset, true, false));
            } else {
                top.part.opaque = true;
            }
        }
    }

    /// Closes the innermost open entity with its body ending at `end`.
    /// `next` is where the following content starts (for an entity still in
    /// its header, the header runs up to there). `imap_eol` is the line
    /// break after `end` that IMAP servers count in the body.
    fn close_top(&mut self, end: u64, end_lf: u64, end_bare: u64, next: u64, imap_eol: u64) {
        let Some(mut frame) = self.stack.pop() else {
            return;
        };
        if let State::Header { buf, truncated } = std::mem::replace(&mut frame.state, State::Body) {
            // No blank line before the end: all of it is header.
            apply_header(
                &mut frame.part,
                &buf,
                frame.in_digest,
                &mut self.mime_budget,
            );
            if truncated {
                frame.part.mime = None;
            }
            let header_end = next.max(frame.part.header_offset);
            frame.part.header_size = header_end - frame.part.header_offset;
            frame.part.body_offset = header_end;
            if frame.keep_header {
                if truncated {
                    frame.part.header_truncated = true;
                } else {
                    frame.part.header = Some(buf);
                }
            }
            frame.part.body_size = 0;
        } else {
            let end = end.max(frame.part.body_offset);
            frame.part.body_size = end - frame.part.body_offset;
            frame.part.body_lines = end_lf.saturating_sub(frame.lf_at_body);
            frame.part.body_bare_lf = end_bare.saturating_sub(frame.bare_at_body);
            frame.part.imap_body_eol = imap_eol;
        }
        match self.stack.last_mut() {
            Some(parent) => parent.part.parts.push(frame.part),
            None => self.root = Some(frame.part),
        }
    }

    /// Ends the input: every open entity ends at EOF.
    pub fn finish(mut self) -> Summary {
        if self.line_len > 0 {
            // A last line without a line break: it can still be a delimiter
            // line, or the last line of a header (which then has no blank
            // line); in a body it is content.
            let line = std::mem::take(&mut self.line);
            let complete = line.len() as u64 == self.line_len;
            self.process_line(&line, complete, 0);
        }
        let (end, lf, bare) = (self.offset, self.lf, self.bare_lf);
        while !self.stack.is_empty() {
            self.close_top(end, lf, bare, end, 0);
        }
        Summary {
            version: SUMMARY_VERSION,
            size: self.offset,
            bare_lf: self.bare_lf,
            root: self.root.unwrap_or_default(),
        }
    }
}

/// Fills the MIME fields of `part` from its raw header block and says
/// what its structure is, as Dovecot's message parser decides it (type,
/// subtype and parameters too: `docs/FORMAT.md` 12.3). `in_digest`: the
/// entity is a body part of a multipart/digest. The raw MIME fields go
/// into the summary while `mime_budget` lasts.
fn apply_header(
    part: &mut Part,
    block: &[u8],
    in_digest: bool,
    mime_budget: &mut usize,
) -> Structure {
    for f in header::fields(block) {
        let Some(name) = f.name() else { continue };
        let lower = name.to_ascii_lowercase();
        let value = || f.value();
        match lower.as_slice() {
            b"content-transfer-encoding" if part.encoding.is_none() => {
                part.encoding = Some(text(&value()))
            }
            b"content-id" if part.id.is_none() => part.id = Some(text(&value())),
            b"content-description" if part.description.is_none() => {
                part.description = Some(text(&value()))
            }
            b"content-md5" if part.md5.is_none() => part.md5 = Some(text(&value())),
            b"content-location" if part.location.is_none() => part.location = Some(text(&value())),
            b"content-language" if part.language.is_none() => {
                let langs: Vec<String> = text(&value())
                    .split([',', ' ', '\t'])
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                part.language = Some(langs);
            }
            b"content-disposition" if part.disposition.is_none() => {
                let d = header::parse_params(&value());
                if !d.value.is_empty() {
                    part.disposition = Some(Disposition {
                        kind: d.value,
                        params: d.params,
                    });
                }
            }
            _ => {}
        }
    }
    let raw = mime::raw_mime_fields(block);
    if raw.len() <= *mime_budget {
        *mime_budget -= raw.len();
        part.mime = Some(raw);
    }
    let Some(ct_raw) = mime::content_type_value(block) else {
        // No Content-Type: the default, message/rfc822 inside a digest.
        return Structure {
            rfc822: in_digest,
            ..Structure::default()
        };
    };
    let ct = mime::content_type(&ct_raw);
    if ct.parsed {
        // Case is kept as written: IMAP servers report it that way.
        part.media_type = text(&ct.media_type);
        part.subtype = text(&ct.subtype);
        part.content_type_present = true;
        part.params = ct.params.iter().map(|(n, v)| (text(n), text(v))).collect();
    } else {
        // The unfolded value (line breaks removed, trimmed).
        let unfolded: Vec<u8> = ct_raw
            .iter()
            .copied()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect();
        let unfolded = header::trim(&unfolded);
        part.content_type_value = Some(text(prefix(unfolded, MAX_CONTENT_TYPE_VALUE)));
        // Neither text/plain nor message/rfc822 then, whatever the parent.
        part.media_type = "text".into();
        part.subtype = "plain".into();
    }
    mime::structure(&ct_raw)
}

/// Octets of an unparsable Content-Type value kept in the summary.
const MAX_CONTENT_TYPE_VALUE: usize = 1024;

/// At most `max` octets of `v`, not cutting a UTF-8 character in two when
/// `v` is UTF-8 (so that the text conversion stays the same).
fn prefix(v: &[u8], max: usize) -> &[u8] {
    if v.len() <= max {
        return v;
    }
    match std::str::from_utf8(v) {
        Ok(s) => {
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            &v[..end]
        }
        Err(_) => &v[..max],
    }
}

/// Scans a whole message held in memory (tests, small messages).
pub fn scan(m: &[u8], limits: Limits) -> Summary {
    let mut s = Scanner::new(limits);
    s.push(m);
    s.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body<'a>(m: &'a [u8], p: &Part) -> &'a [u8] {
        &m[p.body_offset as usize..(p.body_offset + p.body_size) as usize]
    }

    #[test]
    fn simple_message() {
        let m = b"Subject: hi\r\nTo: a@b\r\n\r\nline1\r\nline2\r\n";
        let s = scan(m, Limits::default());
        assert_eq!(s.size, m.len() as u64);
        assert_eq!(s.root.media_type, "text");
        assert!(!s.root.content_type_present);
        assert_eq!(body(m, &s.root), b"line1\r\nline2\r\n");
        assert_eq!(s.root.body_lines, 2);
        assert_eq!(s.root.header.as_deref(), Some(&m[..24]));
    }

    #[test]
    fn multipart_offsets_exclude_the_break_before_the_delimiter() {
        let m = b"Content-Type: multipart/mixed; boundary=XX\r\n\r\npre\r\n--XX\r\nContent-Type: text/plain\r\n\r\nA\r\n--XX\r\n\r\nB\r\n\r\n--XX--\r\nepi\r\n";
        let s = scan(m, Limits::default());
        assert_eq!(s.root.parts.len(), 2);
        assert_eq!(body(m, &s.root.parts[0]), b"A");
        assert_eq!(body(m, &s.root.parts[1]), b"B\r\n");
        assert_eq!(s.root.parts[1].body_lines, 1);
        assert_eq!(body(m, &s.root), &m[46..]);
    }

    #[test]
    fn chunking_does_not_change_the_summary() {
        let m = b"Content-Type: multipart/mixed; boundary=\"b\"\n\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nbody\n--b--\n";
        let whole = scan(m, Limits::default());
        for size in 1..8 {
            let mut s = Scanner::new(Limits::default());
            for c in m.chunks(size) {
                s.push(c);
            }
            assert_eq!(s.finish(), whole, "chunk size {size}");
        }
        let inner = &whole.root.parts[0].parts[0];
        assert_eq!(
            inner.header.as_deref(),
            Some(&b"Subject: inner\r\n\r\n"[..])
        );
    }

    #[test]
    fn last_header_line_without_line_break_is_in_the_header() {
        let m = b"Subject: x\r\nContent-Type: text/html";
        for size in [1, 3, m.len()] {
            let mut sc = Scanner::new(Limits::default());
            for c in m.chunks(size) {
                sc.push(c);
            }
            let s = sc.finish();
            assert_eq!(s.root.header.as_deref(), Some(&m[..]));
            assert_eq!(s.root.header_size, m.len() as u64);
            assert_eq!(s.root.subtype, "html");
            assert!(s.root.content_type_present);
        }
        // In a body part too, and a delimiter line stays a delimiter.
        let m = b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: image/png";
        let s = scan(m, Limits::default());
        assert_eq!(s.root.parts[0].media_type, "image");
        let m = b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nx\n--b--";
        let s = scan(m, Limits::default());
        assert_eq!(s.root.parts.len(), 1);
        assert_eq!(body(m, &s.root.parts[0]), b"x");
    }

    #[test]
    fn an_unparsable_content_type_is_kept() {
        let s = scan(b"Content-Type: text\r\n\r\nx", Limits::default());
        assert!(!s.root.content_type_present);
        assert_eq!(s.root.subtype, "plain");
        assert_eq!(s.root.content_type_value.as_deref(), Some("text"));
        let s = scan(b"Content-Type: text/html\r\n\r\nx", Limits::default());
        assert_eq!(s.root.content_type_value, None);
        let s = scan(b"Subject: none\r\n\r\nx", Limits::default());
        assert_eq!(s.root.content_type_value, None);
        // Long values are cut, between UTF-8 characters.
        let mut m = b"Content-Type: ".to_vec();
        m.extend_from_slice("\u{e9}".repeat(600).as_bytes());
        m.extend_from_slice(b"\r\n\r\n");
        let s = scan(&m, Limits::default());
        let v = s.root.content_type_value.clone().unwrap();
        assert_eq!(v.len(), 1024);
        assert!(v.chars().all(|c| c == '\u{e9}'));
    }

    #[test]
    fn imap_body_eol_marks_the_line_break_dovecot_keeps() {
        let eol = |m: &[u8], path: &[usize]| {
            let s = scan(m, Limits::default());
            let mut p = &s.root;
            for &i in path {
                p = &p.parts[i];
            }
            p.imap_body_eol
        };
        // A header inside the part, cut short by the delimiter line.
        let cut = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nX: inner\r\n--b--\r\n";
        assert_eq!(eol(cut, &[0]), 2);
        assert_eq!(eol(cut, &[0, 0]), 0);
        // A header ended by an empty line right before the delimiter line
        // (bare LF).
        let empty = b"Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: message/rfc822\n\nSubject: s\n\n--b\n\nlast\n--b--\n";
        assert_eq!(eol(empty, &[0]), 1);
        assert_eq!(eol(empty, &[1]), 0);
        // `--inner--` right before `--outer`: the inner multipart and the
        // message part around it keep the line break; the text part does
        // not.
        let close = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n--c\r\n\r\nx\r\n--c--\r\n--b--\r\n";
        assert_eq!(eol(close, &[0]), 2);
        assert_eq!(eol(close, &[0, 0]), 2);
        assert_eq!(eol(close, &[0, 0, 0]), 0);
        // A second `--c--` is epilogue, not a delimiter line; an empty
        // line or an epilogue line before `--b` is ordinary.
        for tail in [
            &b"--c--\r\n--c--\r\n"[..],
            b"--c--\r\n\r\n",
            b"--c--\r\nepi\r\n",
        ] {
            let mut m = close[..close.len() - 17].to_vec();
            m.extend_from_slice(tail);
            m.extend_from_slice(b"--b--\r\n");
            assert_eq!(eol(&m, &[0]), 0, "{}", String::from_utf8_lossy(&m));
            assert_eq!(eol(&m, &[0, 0]), 0);
        }
        // Nothing at the end of M.
        let eof = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nX: inner\r\n";
        assert_eq!(eol(eof, &[0]), 0);
    }

    #[test]
    fn depth_cap_makes_the_rest_opaque() {
        let mut m = Vec::new();
        for i in 0..300 {
            m.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n")
                    .as_bytes(),
            );
        }
        m.extend_from_slice(b"\r\ninnermost\r\n");
        let limits = Limits::default();
        let s = scan(&m, limits);
        let mut depth = 0;
        let mut p = &s.root;
        while let Some(c) = p.parts.first() {
            p = c;
            depth += 1;
        }
        assert!(depth < limits.max_depth);
        assert!(p.opaque);
        assert_eq!(s.size, m.len() as u64);
    }
}
