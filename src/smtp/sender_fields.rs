//! Removes sender-written header fields that writ itself adds, from a
//! message as it is spooled, as most MTAs do before adding their own:
//!
//! - the content scanner's ([`SCANNER_FIELDS`]: `X-Spam`,
//!   `X-Spamd-Result`, `X-Spam-Action`), when the scanner runs;
//! - the DMARC quarantine mark (`X-DMARC-Quarantine`), and every
//!   `Authentication-Results` field whose authserv-id is writ's own
//!   (RFC 8601 §5: a forged one would otherwise stand next to, or instead
//!   of, writ's), when `[auth]` runs.
//!
//! On those paths the names are copied to the outer header, where a
//! sender's own "verdict" would stand next to writ's (or alone, when the
//! message goes unscanned or unverified) and mislead the provider's rules.
//!
//! Invariants: sans-IO and streaming (chunks in, chunks out; the state
//! between chunks is at most [`MAX_HELD`] bytes: of a field name with the
//! blanks and folds before its colon, or of an Authentication-Results
//! field being judged; a name of theirs still undecided past that is
//! removed);
//! only the header (up to the first empty line) is touched, and in it only
//! whole fields with those names, with their folded continuation lines;
//! every other byte passes unchanged and in order. A name is read as the
//! sealer reads it: up to the colon, over folded lines, its trailing
//! whitespace removed (`X-Spam : No`, `X-Spam<CRLF> : No` are `X-Spam`),
//! and compared case-insensitively. An Authentication-Results field whose authserv-id
//! cannot be read within [`MAX_HELD`] bytes is removed (it might claim
//! writ's). Linear in the message's size; no recursion (comments are
//! skipped with a depth counter).

use super::scanner::SCANNER_FIELDS;

/// Longest field name (without the blanks after it) held to decide (64
/// bytes, well past the longest name removed): a longer name is not one
/// of them and passes through.
const MAX_NAME: usize = 64;

/// Longest Authentication-Results field held to read its authserv-id
/// (8 KiB): one whose authserv-id has not ended by then is removed.
pub const MAX_HELD: usize = 8 * 1024;

/// The quarantine mark writ adds under `[auth] dmarc = "enforce"`.
pub const QUARANTINE_FIELD: &str = "x-dmarc-quarantine";

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// At the start of a header line.
    LineStart,
    /// After a CR at the start of a header line: the empty line that ends
    /// the header if an LF follows, else the first byte of a name (as the
    /// sealer reads it: `envelope::header::header_end`).
    LineStartCr,
    /// Reading a field name (held in `name`).
    Name,
    /// After a line end inside a field name: a fold (the name goes on)
    /// if a blank follows, else the name had no colon.
    NameFold,
    /// Inside a field that passes.
    Keep,
    /// Inside a field that is removed.
    Drop,
    /// Inside an Authentication-Results field, held in `held` until its
    /// authserv-id is known.
    Held,
    /// At the start of a line after a held field's line.
    HeldLineStart,
    /// Past the header: everything passes.
    Body,
}

/// Which sender fields are removed.
#[derive(Debug, Clone, Default)]
pub struct Removed {
    /// The scanner's verdict fields.
    pub scanner: bool,
    /// writ's authserv-id: its Authentication-Results fields and the
    /// quarantine mark are removed.
    pub authserv_id: Option<String>,
}

/// The streaming filter; one per message.
#[derive(Debug)]
pub struct SenderFieldFilter {
    removed: Removed,
    state: State,
    name: Vec<u8>,
    /// The length of `name` without its trailing whitespace.
    name_end: usize,
    held: Vec<u8>,
    /// The last field seen is removed (its continuation lines too).
    dropping: bool,
}

impl Default for SenderFieldFilter {
    /// Removes the scanner's fields only.
    fn default() -> Self {
        SenderFieldFilter::new(Removed {
            scanner: true,
            authserv_id: None,
        })
    }
}

/// A name without its trailing whitespace, as the sealer trims it
/// (`X-Spam\r: x` and `X-Spam\x0c: x` are `X-Spam` to it, so to this
/// filter).
fn trimmed(name: &[u8]) -> &[u8] {
    crate::envelope::header::trim_end(name)
}

/// The authserv-id of an Authentication-Results field (`held`: name,
/// colon and value so far): `Some(id)` once it has ended, `None` if not
/// (yet). CFWS before it is skipped; comments nest (a depth counter).
fn authserv_id(held: &[u8]) -> Option<&[u8]> {
    let colon = held.iter().position(|&b| b == b':')?;
    let value = &held[colon + 1..];
    let mut i = 0;
    let mut depth = 0usize;
    while i < value.len() {
        let b = value[i];
        match b {
            b'(' => depth += 1,
            b')' if depth > 0 => depth -= 1,
            b'\\' if depth > 0 => i += 1,
            b' ' | b'\t' | b'\r' | b'\n' => {}
            _ if depth > 0 => {}
            _ => break,
        }
        i += 1;
    }
    let rest = value.get(i..)?;
    let quoted = rest.first() == Some(&b'"');
    let start = usize::from(quoted);
    let end = rest[start..].iter().position(|&b| {
        if quoted {
            b == b'"'
        } else {
            matches!(b, b';' | b' ' | b'\t' | b'\r' | b'\n' | b'(')
        }
    })?;
    Some(&rest[start..start + end])
}

impl SenderFieldFilter {
    pub fn new(removed: Removed) -> Self {
        SenderFieldFilter {
            removed,
            state: State::LineStart,
            name: Vec::with_capacity(MAX_NAME),
            name_end: 0,
            held: Vec::new(),
            dropping: false,
        }
    }

    fn removed_by_name(&self, name: &[u8]) -> bool {
        let name = trimmed(name);
        (self.removed.scanner
            && SCANNER_FIELDS
                .iter()
                .any(|f| f.as_bytes().eq_ignore_ascii_case(name)))
            || (self.removed.authserv_id.is_some()
                && QUARANTINE_FIELD.as_bytes().eq_ignore_ascii_case(name))
    }

    fn held_by_name(&self, name: &[u8]) -> bool {
        self.removed.authserv_id.is_some()
            && b"authentication-results".eq_ignore_ascii_case(trimmed(name))
    }

    /// Whether the held field claims writ's authserv-id (or cannot be
    /// read in time: removed too). `None`: not decided yet.
    fn held_claims_ours(&self, complete: bool) -> Option<bool> {
        let ours = self.removed.authserv_id.as_deref().unwrap_or_default();
        match authserv_id(&self.held) {
            Some(id) => Some(id.eq_ignore_ascii_case(ours.as_bytes())),
            None if complete || self.held.len() >= MAX_HELD => Some(true),
            None => None,
        }
    }

    /// Ends holding: the held bytes go out unless they claim writ's id.
    fn release_held(&mut self, out: &mut Vec<u8>, complete: bool) {
        let drop = self.held_claims_ours(complete).unwrap_or(true);
        if !drop {
            out.extend_from_slice(&self.held);
        }
        self.dropping = drop;
        self.held.clear();
    }

    /// One byte of a field name: at the colon, the field is kept, removed
    /// or held. The name is read as the sealer reads it
    /// (`envelope::header::RawField::name`): up to the colon, over folded
    /// lines, its trailing whitespace trimmed.
    fn name_byte(&mut self, b: u8, out: &mut Vec<u8>) {
        if b == b':' {
            self.dropping = self.removed_by_name(&self.name);
            if self.dropping {
                self.state = State::Drop;
            } else if self.held_by_name(&self.name) {
                self.held.clear();
                self.held.extend_from_slice(&self.name);
                self.held.push(b);
                self.state = State::Held;
            } else {
                out.extend_from_slice(&self.name);
                out.push(b);
                self.state = State::Keep;
            }
            self.name.clear();
            return;
        }
        self.push_name(b);
        if b == b'\n' {
            // The name may go on on a folded line.
            self.state = State::NameFold;
        } else if self.name_end > MAX_NAME {
            // Not a field of theirs (too long a name).
            self.release_name(out, State::Keep);
        } else if self.name.len() >= MAX_HELD {
            // A name of theirs, perhaps, after blanks or folds past what
            // is held: removed (it might be one); another passes.
            if self.removed_by_name(&self.name) || self.held_by_name(&self.name) {
                self.name.clear();
                self.dropping = true;
                self.state = State::Drop;
            } else {
                self.release_name(out, State::Keep);
            }
        }
    }

    /// Holds one more byte of a name, and where the name ends without
    /// its trailing whitespace (kept as it grows: no rescan per byte).
    fn push_name(&mut self, b: u8) {
        if self.name.is_empty() {
            self.name_end = 0;
        }
        self.name.push(b);
        if !b.is_ascii_whitespace() {
            self.name_end = self.name.len();
        }
    }

    /// The name held so far goes out as it is (not a field of theirs);
    /// then `next`.
    fn release_name(&mut self, out: &mut Vec<u8>, next: State) {
        out.extend_from_slice(&self.name);
        self.name.clear();
        self.dropping = false;
        self.state = next;
    }

    /// Appends to `out` what of `chunk` is kept.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut i = 0;
        while i < chunk.len() {
            let b = chunk[i];
            match self.state {
                State::Body => {
                    out.extend_from_slice(&chunk[i..]);
                    return;
                }
                State::LineStart => match b {
                    b' ' | b'\t' => {
                        if self.dropping {
                            self.state = State::Drop;
                        } else {
                            out.push(b);
                            self.state = State::Keep;
                        }
                    }
                    b'\n' => {
                        // The empty line: the header ends.
                        out.push(b);
                        self.state = State::Body;
                    }
                    b'\r' => self.state = State::LineStartCr,
                    _ => {
                        self.name.clear();
                        self.push_name(b);
                        self.state = State::Name;
                    }
                },
                State::LineStartCr => {
                    if b == b'\n' {
                        out.extend_from_slice(b"\r\n");
                        self.state = State::Body;
                    } else {
                        // A lone CR: the header goes on (a field whose
                        // name starts with it, which no removed one does).
                        self.name.clear();
                        self.push_name(b'\r');
                        self.state = State::Name;
                        continue;
                    }
                }
                State::Name => self.name_byte(b, out),
                State::NameFold => {
                    if b == b' ' || b == b'\t' {
                        self.state = State::Name;
                        self.name_byte(b, out);
                    } else {
                        // No colon: not a field of theirs. This byte
                        // starts the next line.
                        self.release_name(out, State::LineStart);
                        continue;
                    }
                }
                State::Held => {
                    self.held.push(b);
                    if b == b'\n' {
                        self.state = State::HeldLineStart;
                    } else if self.held.len() >= MAX_HELD {
                        // Judged on its first MAX_HELD bytes (once: the
                        // work stays linear); the rest follows the
                        // decision without being held.
                        self.release_held(out, false);
                        self.state = if self.dropping {
                            State::Drop
                        } else {
                            State::Keep
                        };
                    }
                }
                State::HeldLineStart => {
                    if b == b' ' || b == b'\t' {
                        self.state = State::Held;
                        continue;
                    }
                    // The held field is complete; this byte starts the
                    // next line.
                    self.release_held(out, true);
                    self.state = State::LineStart;
                    continue;
                }
                State::Keep => {
                    out.push(b);
                    if b == b'\n' {
                        self.state = State::LineStart;
                    }
                }
                State::Drop => {
                    if b == b'\n' {
                        self.state = State::LineStart;
                    }
                }
            }
            i += 1;
        }
    }

    /// The end of the message: whatever is still held (a name with no
    /// colon before the data ended) goes out; a held Authentication-Results
    /// field is judged as it stands.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        match self.state {
            State::Name | State::NameFold => {
                out.extend_from_slice(&self.name);
                self.name.clear();
            }
            State::Held | State::HeldLineStart => self.release_held(out, true),
            State::LineStartCr => out.push(b'\r'),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter_in_chunks(msg: &[u8], size: usize) -> Vec<u8> {
        let mut f = SenderFieldFilter::default();
        let mut out = Vec::new();
        for c in msg.chunks(size) {
            f.push(c, &mut out);
        }
        f.finish(&mut out);
        out
    }

    #[test]
    fn scanner_fields_and_their_folds_are_removed_from_the_header_only() {
        let msg = b"X-Spam-Action: no action\r\nFrom: a@b\r\nX-SPAMD-RESULT: default: False\r\n [0 / 15]\r\n\tmore\r\nx-spam : No\r\nSubject: s\r\n folded\r\nX-Spam-Flag: YES\r\n\r\nX-Spam: body line\r\n";
        let want =
            b"From: a@b\r\nSubject: s\r\n folded\r\nX-Spam-Flag: YES\r\n\r\nX-Spam: body line\r\n";
        for size in [1, 2, 3, 7, 64, msg.len()] {
            assert_eq!(
                String::from_utf8_lossy(&filter_in_chunks(msg, size)),
                String::from_utf8_lossy(want),
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn other_bytes_pass_unchanged() {
        let long_name = format!("{}: v\r\n", "X".repeat(200));
        for msg in [
            &b"From: a\r\n\r\nbody"[..],
            b"no header at all\r\n\r\nX-Spam: Yes\r\n",
            b"From: a\nX-Spam-Action: x\n\nbody\n",
            b"",
            b"Subject",
            long_name.as_bytes(),
        ] {
            let out = filter_in_chunks(msg, 5);
            let expected: &[u8] = if msg.starts_with(b"From: a\n") {
                b"From: a\n\nbody\n"
            } else {
                msg
            };
            assert_eq!(out, expected, "{}", String::from_utf8_lossy(msg));
        }
    }

    /// `msg` through a filter removing writ's (`mx.writ.test`)
    /// Authentication-Results, and the scanner's fields if `scanner`, fed
    /// in chunks of `size`.
    fn filtered(scanner: bool, msg: &[u8], size: usize) -> Vec<u8> {
        let mut f = SenderFieldFilter::new(Removed {
            scanner,
            authserv_id: Some("mx.writ.test".into()),
        });
        let mut out = Vec::new();
        for c in msg.chunks(size) {
            f.push(c, &mut out);
        }
        f.finish(&mut out);
        out
    }

    fn auth_filter(msg: &[u8], size: usize) -> Vec<u8> {
        filtered(false, msg, size)
    }

    #[test]
    fn authentication_results_of_writs_id_are_removed_others_kept() {
        let msg = b"Authentication-Results: mx.writ.test; dkim=pass\r\n\
Authentication-Results: other.example;\r\n\tspf=pass\r\n\
authentication-results : (c (nested) x) MX.Writ.Test\r\n (more); dkim=pass\r\n\
Authentication-Results: \"mx.writ.test\"; spf=pass\r\n\
Authentication-Results: mx.writ.test.evil; x=y\r\n\
X-DMARC-Quarantine: no\r\n\
X-Spam: kept when the scanner is off\r\n\
Authentication-Results: mx.writ.test\r\n\
\r\n\
Authentication-Results: mx.writ.test; body line\r\n";
        let want = b"Authentication-Results: other.example;\r\n\tspf=pass\r\n\
Authentication-Results: mx.writ.test.evil; x=y\r\n\
X-Spam: kept when the scanner is off\r\n\
\r\n\
Authentication-Results: mx.writ.test; body line\r\n";
        for size in [1, 2, 5, 17, msg.len()] {
            assert_eq!(
                String::from_utf8_lossy(&auth_filter(msg, size)),
                String::from_utf8_lossy(want),
                "chunks of {size}"
            );
        }
    }

    fn both_filter(msg: &[u8], size: usize) -> Vec<u8> {
        filtered(true, msg, size)
    }

    /// The fields of `msg`'s header as the sealer reads them: name, value.
    fn sealer_fields(msg: &[u8]) -> Vec<(String, String)> {
        use crate::envelope::header;
        let end = header::header_end(msg).unwrap_or(msg.len());
        header::fields(&msg[..end])
            .iter()
            .filter_map(|f| {
                let name = String::from_utf8_lossy(f.name()?).to_ascii_lowercase();
                Some((name, String::from_utf8_lossy(&f.value()).into_owned()))
            })
            .collect()
    }

    #[test]
    fn a_lone_cr_or_odd_blanks_do_not_end_the_filter_before_the_sealer() {
        // A line starting with a lone CR does not end the header for the
        // sealer, nor now for the filter; names with a CR or a form feed
        // before the colon are the same names to both.
        let msg = b"From: a@x.example\r\n\rX: y\r\n\
Authentication-Results: mx.writ.test; dmarc=pass\r\n\
X-Spam-Action: no action\r\n\
X-Spam-Action\r: no action\r\n\
X-Spam\x0c: no\r\n\
\r\nbody\r\n";
        let want = b"From: a@x.example\r\n\rX: y\r\n\r\nbody\r\n";
        for size in [1, 2, 3, 9, msg.len()] {
            assert_eq!(
                String::from_utf8_lossy(&both_filter(msg, size)),
                String::from_utf8_lossy(want),
                "chunks of {size}"
            );
        }
        // Blanks past the name's cap, and a fold, before the colon: the
        // sealer still reads the names.
        let msg = format!(
            "From: a@x\r\nAuthentication-Results{}: mx.writ.test; dmarc=pass\r\n\
             X-Spam-Action\r\n : no action\r\nX-Spam{}: yes\r\nNo-Colon\r\nX: y\r\n\r\nb\r\n",
            " ".repeat(60),
            "\t".repeat(MAX_HELD + 5),
        );
        let want = "From: a@x\r\nNo-Colon\r\nX: y\r\n\r\nb\r\n";
        for size in [1, 7, msg.len()] {
            assert_eq!(
                String::from_utf8_lossy(&both_filter(msg.as_bytes(), size)),
                want,
                "chunks of {size}"
            );
        }
        // The empty line as CR LF right after a CR-ended piece, and a CR
        // as the message's last byte, pass as they are.
        assert_eq!(both_filter(b"A: b\r\n\r\n", 1), b"A: b\r\n\r\n");
        assert_eq!(both_filter(b"A: b\r\n\r", 1), b"A: b\r\n\r");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// Whatever the header's line endings and blanks, the sealer finds
        /// none of the removed fields in what the filter lets through.
        #[test]
        fn the_sealer_never_reads_a_removed_field_the_filter_passed(
            lines in proptest::collection::vec(
                (0usize..7, 0usize..9, 0usize..4, proptest::bool::ANY), 1..12),
            size in 1usize..20,
        ) {
            const NAMES: [&str; 7] = [
                "From", "X-Spam-Action", "x-spamd-result", "Authentication-Results",
                "X-DMARC-Quarantine", "Subject", "X-Spam",
            ];
            let long = " ".repeat(MAX_NAME + 10);
            let longer = "\t".repeat(MAX_HELD + 1);
            let blanks: [&str; 9] = ["", " ", "\r", "\x0c", "\t", " \r", "\r\n ", &long, &longer];
            const ENDS: [&str; 4] = ["\r\n", "\n", "\r\n\r", "\r\n\r\r\n"];
            let mut msg = Vec::new();
            for (name, blank, end, folded) in lines {
                msg.extend(format!("{}{}: mx.writ.test; v", NAMES[name], blanks[blank]).bytes());
                if folded {
                    msg.extend(b"\r\n\tmore");
                }
                msg.extend(ENDS[end].bytes());
            }
            msg.extend(b"\r\nbody\r\n");
            let out = both_filter(&msg, size);
            for (name, value) in sealer_fields(&out) {
                let removed = ["x-spam-action", "x-spamd-result", "x-dmarc-quarantine", "x-spam"]
                    .contains(&name.as_str())
                    || (name == "authentication-results" && value.starts_with("mx.writ.test"));
                proptest::prop_assert!(!removed, "{name}: {value} in {:?}", String::from_utf8_lossy(&out));
            }
        }
    }

    #[test]
    fn an_authserv_id_hidden_past_the_hold_cap_is_removed_in_linear_work() {
        let mut msg = b"Authentication-Results: ".to_vec();
        msg.extend(std::iter::repeat_n(b'(', MAX_HELD * 4));
        msg.extend_from_slice(b" mx.writ.test; dkim=pass\r\nFrom: a@b\r\n\r\nbody\r\n");
        assert_eq!(auth_filter(&msg, 4096), b"From: a@b\r\n\r\nbody\r\n");
        let mut msg = b"Authentication-Results: other.example; ".to_vec();
        msg.extend(std::iter::repeat_n(b'x', MAX_HELD * 4));
        msg.extend_from_slice(b"\r\nFrom: a@b\r\n\r\n");
        assert_eq!(
            auth_filter(&msg, 4096),
            msg,
            "a long field of another id stays whole"
        );
    }
}
