//! The values SORT (RFC 5256) orders messages by, read from a message's
//! own header as Dovecot 2.3 reads them (`index-sort.c`,
//! `imap-base-subject.c`), so that writ sorts sealed mail (by its opened
//! header) as Dovecot sorts the same mail in plaintext:
//!
//! - SUBJECT: the base subject of the first Subject field: encoded-words
//!   decoded, in decomposed titlecase (so `Re:` is `RE:`), whitespace runs
//!   one space, then RFC 5256 §2.1's steps: trailing `(fwd)` and spaces,
//!   leading `re:`/`fw:`/`fwd:` with blobs (`[list]`), a leading blob when
//!   something is left, and `[fwd: ...]` wrappers, repeated.
//! - FROM, TO, CC: the local part of the first address of the first such
//!   field (encoded-words decoded), in decomposed titlecase; empty when
//!   there is none.
//! - DISPLAYFROM, DISPLAYTO (RFC 5957): the display name of the first
//!   address of the first such field (read from the raw field, then
//!   encoded-words decoded), else its `local@domain`, in decomposed
//!   titlecase; empty when there is none.
//! - DATE: the first Date field in UTC seconds (kept in 32 unsigned bits,
//!   as Dovecot's cache keeps it); 0 when missing or unreadable, and the
//!   caller then uses INTERNALDATE.
//!
//! Strings compare byte-wise (`strcmp`). All work is linear in the header.

use super::{address, date, mime, text};

/// The first `name` field of the header block at the start of `message`
/// (its raw value).
pub fn first_value(message: &[u8], name: &str) -> Option<Vec<u8>> {
    let end = crate::envelope::header::header_end(message).unwrap_or(message.len());
    mime::header_lines(message.get(..end).unwrap_or(message))
        .into_iter()
        .find(|l| !l.eoh && l.name.eq_ignore_ascii_case(name.as_bytes()))
        .map(|l| l.value)
}

/// SORT SUBJECT's value.
pub fn subject(message: &[u8]) -> String {
    first_value(message, "Subject")
        .map(|v| base_subject(&v))
        .unwrap_or_default()
}

/// SORT FROM/TO/CC's value (`field`: "From", "To", "Cc").
pub fn address(message: &[u8], field: &str) -> String {
    let Some(value) = first_value(message, field) else {
        return String::new();
    };
    let mut decoded = String::new();
    mime::decode_header(&value, &mut decoded);
    let mailbox = address::first_mailbox(decoded.as_bytes());
    let mut out = String::new();
    text::fold_utf8(&mailbox, &mut out);
    out
}

/// SORT DISPLAYFROM/DISPLAYTO's value (RFC 5957; `field`: "From",
/// "To"), as Dovecot reads it: the first address of the raw field, its
/// display name with encoded-words decoded, else `local@domain` (else the
/// local part, or a group's name); in decomposed titlecase; empty when
/// there is no such field or address.
pub fn display(message: &[u8], field: &str) -> String {
    let Some((name, mailbox)) =
        first_value(message, field).and_then(|v| address::first_display(&v))
    else {
        return String::new();
    };
    let mut out = String::new();
    mime::decode_header(&name, &mut out);
    if out.is_empty() {
        text::fold_utf8(&mailbox, &mut out);
    }
    out
}

/// SORT DATE's value, 0 when the Date field gives none.
pub fn sent(message: &[u8]) -> i64 {
    date::sent_time(first_value(message, "Date").as_deref())
}

/// The base subject (RFC 5256 §2.1) of a raw Subject value.
pub fn base_subject(raw: &[u8]) -> String {
    base_subject_flagged(raw).0
}

/// The base subject of a raw Subject value, and whether a reply or
/// forward mark was taken off it (`Re:`, `Fwd:`, `(fwd)`, `[fwd: ...]`):
/// THREAD=REFERENCES step (5) needs both.
pub fn base_subject_flagged(raw: &[u8]) -> (String, bool) {
    let mut reply_or_forward = false;
    let mut decoded = String::new();
    mime::decode_header(raw, &mut decoded);
    // (1) Whitespace (tabs, line breaks) runs become one space.
    let mut s: Vec<u8> = Vec::with_capacity(decoded.len());
    let mut last_lwsp = false;
    for &b in decoded.as_bytes() {
        if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
            if !last_lwsp {
                s.push(b' ');
            }
            last_lwsp = true;
        } else {
            s.push(b);
            last_lwsp = false;
        }
    }
    let mut start = 0;
    loop {
        reply_or_forward |= remove_trailers(&mut s, start);
        loop {
            // (3) and (4), until neither removes anything.
            let leader = remove_leader(&s, &mut start, &mut reply_or_forward);
            let blob = remove_blob_when_nonempty(&s, &mut start);
            if !(leader || blob) {
                break;
            }
        }
        // (6) `[fwd: ...]`, then again from (2).
        if !remove_fwd_wrapper(&mut s, &mut start) {
            break;
        }
        reply_or_forward = true;
    }
    // Only ASCII was cut: the rest is still UTF-8.
    let base = String::from_utf8_lossy(s.get(start..).unwrap_or_default()).into_owned();
    (base, reply_or_forward)
}

/// (2) Trailing spaces and `(FWD)`, not reaching before `start`;
/// whether a `(FWD)` went.
fn remove_trailers(s: &mut Vec<u8>, start: usize) -> bool {
    let mut forward = false;
    let mut size = s.len();
    while size > start {
        if s[size - 1] == b' ' {
            size -= 1;
        } else if size >= start + 5 && &s[size - 5..size] == b"(FWD)" {
            size -= 5;
            forward = true;
        } else {
            break;
        }
    }
    s.truncate(size);
    forward
}

/// A blob (`[...]`, no `[` or `]` inside, and one space after it) at the
/// start of `s`: its length.
fn blob(s: &[u8]) -> Option<usize> {
    if s.first() != Some(&b'[') {
        return None;
    }
    let close = 1 + s[1..].iter().position(|&b| b == b'[' || b == b']')?;
    if s[close] != b']' {
        return None;
    }
    let mut end = close + 1;
    if s.get(end) == Some(&b' ') {
        end += 1;
    }
    Some(end)
}

/// (3) A leading space, or blobs then `RE`/`FWD`/`FW`, a space, a blob
/// and `:`. Returns whether something was removed; `reply_or_forward`
/// is set when a `re`/`fw`/`fwd` leader went.
fn remove_leader(s: &[u8], start: &mut usize, reply_or_forward: &mut bool) -> bool {
    let mut ret = false;
    let mut at = *start;
    if s.get(at) == Some(&b' ') {
        at += 1;
        *start = at;
        ret = true;
    }
    let origin = at;
    while s.get(at) == Some(&b'[') {
        match blob(&s[at..]) {
            Some(n) => at += n,
            None => return ret,
        }
    }
    let rest = &s[at..];
    if rest.starts_with(b"RE") {
        at += 2;
    } else if rest.starts_with(b"FWD") {
        at += 3;
    } else if rest.starts_with(b"FW") {
        at += 2;
    } else {
        return ret;
    }
    if s.get(at) == Some(&b' ') {
        at += 1;
    }
    if s.get(at) == Some(&b'[') {
        match blob(&s[at..]) {
            Some(n) => at += n,
            None => return ret,
        }
    }
    if s.get(at) != Some(&b':') {
        return ret;
    }
    at += 1;
    *start += at - origin;
    *reply_or_forward = true;
    true
}

/// (4) A leading blob, when text follows it.
fn remove_blob_when_nonempty(s: &[u8], start: &mut usize) -> bool {
    match blob(&s[*start..]) {
        Some(n) if *start + n < s.len() => {
            *start += n;
            true
        }
        _ => false,
    }
}

/// (6) `[FWD:` ... `]` around the rest.
fn remove_fwd_wrapper(s: &mut Vec<u8>, start: &mut usize) -> bool {
    if !s[*start..].starts_with(b"[FWD:") || s.last() != Some(&b']') {
        return false;
    }
    s.pop();
    *start = (*start + 5).min(s.len());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_subjects_follow_rfc_5256() {
        for (raw, base) in [
            ("Re: hello", "HELLO"),
            ("RE: [list] Fwd: hello (fwd)", "HELLO"),
            ("[list] hello", "HELLO"),
            ("[list]", "[LIST]"),
            ("[Fwd: Re: hello]", "HELLO"),
            ("re:re:  re :x", "X"),
            ("Fw[blob]: x", "X"),
            ("  spaced \t out  ", "SPACED OUT"),
            ("=?UTF-8?Q?R=C3=A9:_caf=C3=A9?=", "RE\u{301}: CAFE\u{301}"),
            ("", ""),
            ("(fwd)", ""),
            ("[", "["),
        ] {
            assert_eq!(base_subject(raw.as_bytes()), base, "{raw:?}");
        }
    }

    #[test]
    fn addresses_sort_by_the_first_local_part() {
        let m = b"From: \"Zed\" <alice@example.com>, bob@example.com\r\nCc: =?UTF-8?Q?J=C3=B6rg?= <j@x>\r\n\r\nbody";
        assert_eq!(address(m, "From"), "ALICE");
        assert_eq!(address(m, "Cc"), "J");
        assert_eq!(address(m, "To"), "");
        assert_eq!(sent(m), 0);
        assert_eq!(display(m, "From"), "ZED");
        assert_eq!(display(m, "Cc"), "JO\u{308}RG");
        assert_eq!(display(m, "To"), "");
        for (field, value) in [
            ("From: Bob <b@x>", "BOB"),
            ("From: \"\" <b@x>", "B@X"),
            ("From: b@x (Comment Name)", "COMMENT NAME"),
            ("From: b@x", "B@X"),
            ("From: undisclosed-recipients:;", "UNDISCLOSED-RECIPIENTS"),
            ("From: \"Last, First\" <f@x>, o@x", "LAST, FIRST"),
            ("From: =?UTF-8?Q?=C3=89mile?= <e@x>", "E\u{301}MILE"),
            ("From: <>", "MISSING_MAILBOX@MISSING_DOMAIN"),
            ("From: ", ""),
        ] {
            let m = format!("{field}\r\n\r\n");
            assert_eq!(display(m.as_bytes(), "From"), value, "{field}");
        }
        assert_eq!(
            sent(b"Date: Thu, 1 Jan 1970 01:00:00 +0100\r\n\r\n"),
            0,
            "the epoch itself counts as no date, as in Dovecot"
        );
        assert_eq!(
            sent(b"Date: Fri, 2 Jan 1970 00:00:00 +0000\r\n\r\n"),
            86_400
        );
    }
}
