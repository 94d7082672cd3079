//! What an IMAP server says about a message, computed from its summary
//! alone: RFC822.SIZE, ENVELOPE and BODYSTRUCTURE (RFC 3501 §7.4.2).
//!
//! The output is IMAP syntax, shaped like Dovecot's (the provider the tests
//! use as an oracle, `tests/summary_oracle.rs`):
//!
//! - Sizes count line breaks as CRLF; text parts get a default `charset`; a
//!   missing transfer encoding is "7bit".
//! - Strings are quoted unless they hold CR, LF, 8-bit octets or more than
//!   four `"` and `\`: those are literals. The Subject and display names
//!   are cleaned up "for humans": whitespace runs (SP, HTAB, CR, LF) become
//!   one space, leading and trailing whitespace goes, and a string that
//!   needed any of that, or holds `"`, `\` or 8-bit octets, is a literal.
//! - ENVELOPE reads header fields as Dovecot does: a field's name is what
//!   precedes the first colon of its first line, trailing SP and HTAB
//!   removed (`Subject :` is a Subject); its value skips the whitespace
//!   after the colon (only one octet of it when the line holds nothing
//!   else) and keeps folding line breaks, which Date, In-Reply-To and
//!   Message-ID then drop and the Subject turns into a space (a folded
//!   Subject is thus a literal). Of the Date, Subject, In-Reply-To and
//!   Message-ID fields the *last* one counts; the address fields (From,
//!   Sender, Reply-To, To, Cc, Bcc) all count, their addresses joined in
//!   order, each value parsed as Dovecot's `message-address.c` parses it
//!   (`MISSING_MAILBOX`, `MISSING_DOMAIN`, display names from comments,
//!   loose dots). A NUL octet becomes U+FFFD. Sender and Reply-To default
//!   to From when they give no address.
//! - BODYSTRUCTURE: only message/rfc822 encapsulates (Dovecot 2.3 treats
//!   message/global as a leaf, whatever the summary holds below it); a
//!   multipart without parts is shown with one empty text/plain part, and
//!   a message/rfc822 part without an embedded message in the summary with
//!   an empty one; the transfer encoding and the disposition type are read
//!   as MIME tokens; RFC 2231 continuations are joined; a message that is
//!   plain 7-bit text gets Dovecot's canned, lowercase answer; the body of
//!   a message/rfc822 part includes the line break that Dovecot counts in
//!   it next to a delimiter line ([`Part::imap_body_eol`]; for a summary
//!   written before that field existed, the part of it that the structure
//!   shows).
//!
//! - BODYSTRUCTURE's MIME fields come from the entity's raw MIME fields
//!   when the summary keeps them ([`Part::mime`], `docs/FORMAT.md`
//!   revision 4), read exactly as Dovecot reads them ([`mime`]: 8-bit
//!   octets as in M, malformed parameters dropped where Dovecot drops
//!   them); otherwise from the summary's parsed fields, as described
//!   above. A multipart or message/rfc822 part the writer's caps stopped
//!   at is application/octet-stream, as Dovecot (same caps) shows it.
//!
//! The `*_bytes` functions give the exact octets (8-bit header octets
//! pass through as they are in M); the `String` forms are the same, lossy
//! where those octets are not UTF-8.

use super::header;
use super::summary::{Part, Summary};

/// RFC822.SIZE: octets of the message with every bare LF counted as CRLF.
/// (Saturating: a summary read from JSON has `bare_lf <= size <=`
/// [`MAX_MESSAGE_SIZE`](super::summary::MAX_MESSAGE_SIZE), so the sum
/// never overflows; one built in code cannot make it panic either.)
pub fn rfc822_size(summary: &Summary) -> u64 {
    summary.size.saturating_add(summary.bare_lf)
}

/// The most `"` and `\\` a quoted string may hold; more make a literal
/// (Dovecot's choice: past that, a literal is shorter).
const QUOTED_MAX_ESCAPES: usize = 4;

fn literal(out: &mut Vec<u8>, v: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", v.len()).as_bytes());
    out.extend_from_slice(v);
}

/// An IMAP string as Dovecot writes one: quoted when it can be, a literal
/// otherwise.
fn istring(out: &mut Vec<u8>, v: &[u8]) {
    let escapes = v.iter().filter(|&&b| b == b'"' || b == b'\\').count();
    let needs_literal = escapes > QUOTED_MAX_ESCAPES
        || v.iter()
            .any(|&b| b == 0 || b == b'\r' || b == b'\n' || b >= 0x80);
    if needs_literal {
        literal(out, v);
        return;
    }
    out.push(b'"');
    for &b in v {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

fn nstring(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) => istring(out, v),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// A string for people to read (Subject, display names), as Dovecot
/// writes it: whitespace runs become one space and the ends are trimmed;
/// unless nothing needed changing (and nothing needs escaping), the result
/// is a literal.
fn human(out: &mut Vec<u8>, v: &[u8]) {
    let mut clean = Vec::with_capacity(v.len());
    let mut modified = false;
    let mut last_space = true;
    for &b in v {
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => {
                if b != b' ' || last_space {
                    modified = true;
                }
                if !last_space {
                    clean.push(b' ');
                }
                last_space = true;
            }
            0 => {
                modified = true;
                clean.push(0x80);
                last_space = false;
            }
            _ => {
                if b == b'"' || b == b'\\' || b >= 0x80 {
                    modified = true;
                }
                clean.push(b);
                last_space = false;
            }
        }
    }
    if last_space && clean.last() == Some(&b' ') {
        clean.pop();
        modified = true;
    }
    if !modified {
        out.push(b'"');
        out.extend_from_slice(v);
        out.push(b'"');
    } else if clean.is_empty() {
        out.extend_from_slice(b"\"\"");
    } else {
        literal(out, &clean);
    }
}

mod body_structure;
mod envelope;
mod lexer;
pub(crate) mod mime;
#[cfg(test)]
mod tests;

pub use body_structure::{body_structure, body_structure_bytes};
pub use envelope::{envelope, envelope_bytes};
use lexer::{Lexer, Step};
