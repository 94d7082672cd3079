//! ESEARCH (RFC 4731): the `RETURN (...)` options of SEARCH and UID
//! SEARCH, and the `* ESEARCH` response writ answers them with.
//!
//! imap-codec 2.0.0-alpha.10 parses neither: a `RETURN` after `SEARCH` is
//! a parse error to it, and imap-types has no ESEARCH response. So
//! [`take_return`] takes the options off the first line of a command
//! before imap-next parses it (the rest is a plain SEARCH, which it
//! parses), and [`esearch`] writes the response as IMAP text. The options
//! travel with the command through the parser, written into its tag
//! ([`TAG_MARK`]): nothing is kept aside by tag, so no number of
//! pipelined commands, and no tag used twice, can give a command another
//! one's options. The session takes them off the tag ([`untag`]) before
//! anything else sees the command; a client's own tag holding
//! [`TAG_MARK`] is refused (intake). A command imap-next answers itself
//! (BAD for a synchronising literal over `imap.max_literal_size`) has its
//! tag given back first, and the intake's own refusals use the tag it read
//! before the options went in. The options
//! are atoms and the response holds only the client's tag (a quoted
//! string: a tag has no `"` or `\`, but both are escaped anyway), numbers
//! and a sequence set, so nothing from a message ever reaches this text.
//!
//! Accepted options: MIN, MAX, ALL, COUNT, in any order, repeated or not;
//! `RETURN ()` means ALL (RFC 4731 §3.1); and SAVE (SEARCHRES, RFC 5182,
//! [`super::saved_result`]), on SORT too (the set saved, whatever its
//! order, as Dovecot). Anything else (PARTIAL, CONTEXT ...) leaves the
//! line as it is, and the parser answers BAD. At most
//! [`MAX_RETURN_OPTIONS`] options are read.
//!
//! SAVE alone returns nothing (no `* ESEARCH`, no `* SEARCH`: RFC 5182
//! §2.4); with MIN and/or MAX alone it saves just those; with ALL or
//! COUNT the whole result ([`ReturnOptions::saved`]).
//!
//! The response is written as Dovecot 2.3 writes it: `* ESEARCH (TAG
//! "t") [UID] [MIN n] [MAX n] [ALL set] [COUNT n]`; MIN, MAX and ALL are
//! left out when nothing matched; ALL is a set of ascending ranges.

use std::num::NonZeroU32;

/// Options one `RETURN (...)` may list (each a short atom).
pub const MAX_RETURN_OPTIONS: usize = 16;

/// What an ESEARCH asks to have returned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReturnOptions {
    pub min: bool,
    pub max: bool,
    pub all: bool,
    pub count: bool,
    /// SEARCHRES: the result is saved as `$`.
    pub save: bool,
}

impl ReturnOptions {
    /// Some `* ESEARCH` is answered (not for SAVE alone).
    pub fn answers(&self) -> bool {
        self.min || self.max || self.all || self.count
    }

    /// What of `ids` (ascending) SAVE keeps: with MIN and/or MAX alone
    /// just those, else all of them (RFC 5182 §2.4).
    pub fn saved(&self, ids: &[NonZeroU32]) -> Vec<NonZeroU32> {
        if self.all || self.count || !(self.min || self.max) {
            return ids.to_vec();
        }
        let mut out = Vec::new();
        if let (true, Some(&first)) = (self.min, ids.first()) {
            out.push(first);
        }
        if let (true, Some(&last)) = (self.max, ids.last())
            && out.last() != Some(&last)
        {
            out.push(last);
        }
        out
    }
}

/// What the intake appends to the tag of a command whose RETURN options it
/// took off, followed by the options as letters ([`untag`]).
pub const TAG_MARK: &str = "!writ-return.";

impl ReturnOptions {
    fn letters(&self) -> String {
        [
            (self.min, 'n'),
            (self.max, 'x'),
            (self.all, 'a'),
            (self.count, 'c'),
            (self.save, 's'),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, l)| *l)
        .collect()
    }
}

/// A tag the intake marked: the client's tag and the options it carries.
/// `None` for any other tag.
pub fn untag(tag: &str) -> Option<(&str, ReturnOptions)> {
    let at = tag.find(TAG_MARK)?;
    let mut opts = ReturnOptions::default();
    for l in tag[at + TAG_MARK.len()..].chars() {
        match l {
            'n' => opts.min = true,
            'x' => opts.max = true,
            'a' => opts.all = true,
            'c' => opts.count = true,
            's' => opts.save = true,
            _ => return None,
        }
    }
    Some((&tag[..at], opts))
}

/// Strips ASCII `word` followed by a space from the start of `s`, ignoring
/// case.
fn word<'a>(s: &'a [u8], w: &str) -> Option<&'a [u8]> {
    let n = w.len();
    (s.len() > n && s[..n].eq_ignore_ascii_case(w.as_bytes()) && s[n] == b' ').then(|| &s[n + 1..])
}

/// The first line of a command: when it is `tag [UID] SEARCH RETURN
/// (options) ...` (or SORT, for ESORT), the same line without ` RETURN
/// (options)` and with the options written into its tag ([`TAG_MARK`]),
/// and the options. `None`: no RETURN, or options writ does not answer
/// (the line then goes to the parser as it is).
pub fn take_return(line: &[u8]) -> Option<(Vec<u8>, ReturnOptions)> {
    let space = line.iter().position(|&b| b == b' ')?;
    let rest = &line[space + 1..];
    let rest = word(rest, "UID").unwrap_or(rest);
    let rest = word(rest, "SEARCH").or_else(|| word(rest, "SORT"))?;
    let keep = line.len() - rest.len();
    let after = word(rest, "RETURN")?;
    let inner = after.strip_prefix(b"(")?;
    let close = inner.iter().position(|&b| b == b')')?;
    let tail = inner[close + 1..].strip_prefix(b" ")?;
    let mut opts = ReturnOptions::default();
    let list = &inner[..close];
    let mut n = 0;
    if !list.is_empty() {
        for name in list.split(|&b| b == b' ') {
            n += 1;
            if n > MAX_RETURN_OPTIONS {
                return None;
            }
            match name.to_ascii_uppercase().as_slice() {
                b"MIN" => opts.min = true,
                b"MAX" => opts.max = true,
                b"ALL" => opts.all = true,
                b"COUNT" => opts.count = true,
                b"SAVE" => opts.save = true,
                _ => return None,
            }
        }
    }
    if opts == ReturnOptions::default() {
        opts.all = true;
    }
    let mut out = line[..space].to_vec();
    out.extend_from_slice(TAG_MARK.as_bytes());
    out.extend_from_slice(opts.letters().as_bytes());
    out.extend_from_slice(&line[space..keep]);
    out.extend_from_slice(tail);
    Some((out, opts))
}

/// `ids` in their order as a set, a number that follows the previous
/// one by 1 extending its range (`1:3,7`, `5,3:4`), as Dovecot writes
/// its results (sorted ones included).
pub fn ranges(ids: &[NonZeroU32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < ids.len() {
        let first = ids[i].get();
        let mut last = first;
        while i + 1 < ids.len() && last.checked_add(1) == Some(ids[i + 1].get()) {
            i += 1;
            last = ids[i].get();
        }
        if !out.is_empty() {
            out.push(',');
        }
        if first == last {
            out.push_str(&first.to_string());
        } else {
            out.push_str(&format!("{first}:{last}"));
        }
        i += 1;
    }
    out
}

/// The tag as an IMAP quoted string.
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The `* ESEARCH` response for `ids` (message numbers, or UIDs if
/// `uid`) in result order (ascending for SEARCH, sort order for SORT:
/// MIN and MAX are the first and last of it, as in Dovecot), ending in
/// CRLF. `modseq`: the highest MODSEQ of the result, when the search had
/// a MODSEQ key (RFC 7162 §3.1.5).
pub fn esearch(
    tag: &str,
    uid: bool,
    opts: ReturnOptions,
    ids: &[NonZeroU32],
    modseq: Option<u64>,
) -> Vec<u8> {
    let mut out = format!("* ESEARCH (TAG {})", quoted(tag));
    if uid {
        out.push_str(" UID");
    }
    if let (Some(first), Some(last)) = (ids.first(), ids.last()) {
        if opts.min {
            out.push_str(&format!(" MIN {first}"));
        }
        if opts.max {
            out.push_str(&format!(" MAX {last}"));
        }
        if opts.all {
            out.push_str(" ALL ");
            out.push_str(&ranges(ids));
        }
    }
    if opts.count {
        out.push_str(&format!(" COUNT {}", ids.len()));
    }
    if let Some(m) = modseq {
        out.push_str(&format!(" MODSEQ {m}"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(v: &[u32]) -> Vec<NonZeroU32> {
        v.iter().map(|&n| NonZeroU32::new(n).unwrap()).collect()
    }

    #[test]
    fn return_options_are_taken_off_search_and_sort() {
        let (line, o) = take_return(b"a1 UID SEARCH RETURN (MIN count) UNSEEN\r\n").unwrap();
        assert_eq!(line, b"a1!writ-return.nc UID SEARCH UNSEEN\r\n");
        assert!(o.min && o.count && !o.max && !o.all);
        assert_eq!(untag("a1!writ-return.nc"), Some(("a1", o)));
        let (line, o) = take_return(b"t search return () CHARSET UTF-8 ALL\r\n").unwrap();
        assert_eq!(line, b"t!writ-return.a search CHARSET UTF-8 ALL\r\n");
        assert!(o.all);
        let (line, _) = take_return(b"t SORT RETURN (ALL) (DATE) UTF-8 ALL\r\n").unwrap();
        assert_eq!(line, b"t!writ-return.a SORT (DATE) UTF-8 ALL\r\n");
        assert_eq!(untag("t"), None);
        assert_eq!(untag("t!writ-return.q"), None);
    }

    #[test]
    fn what_writ_does_not_answer_is_left_to_the_parser() {
        for line in [
            &b"t SEARCH RETURN (PARTIAL 1:10) ALL\r\n"[..],
            b"t SEARCH RETURN (MIN ALL\r\n",
            b"t SEARCH RETURN (MIN)\r\n",
            b"t SEARCH SUBJECT RETURN\r\n",
            b"t FETCH RETURN (MIN) ALL\r\n",
            b"t SEARCH ALL\r\n",
        ] {
            assert_eq!(take_return(line), None, "{}", String::from_utf8_lossy(line));
        }
        let many = format!("t SEARCH RETURN ({}) ALL\r\n", vec!["MIN"; 17].join(" "));
        assert_eq!(take_return(many.as_bytes()), None);
    }

    #[test]
    fn save_is_taken_on_search_and_keeps_what_rfc_5182_says() {
        let (line, o) = take_return(b"a UID SEARCH RETURN (SAVE) FLAGGED\r\n").unwrap();
        assert_eq!(line, b"a!writ-return.s UID SEARCH FLAGGED\r\n");
        assert!(o.save && !o.answers(), "{o:?}");
        let ids = nz(&[2, 5, 9]);
        assert_eq!(o.saved(&ids), ids);
        let (_, o) = take_return(b"a SEARCH RETURN (save MIN) ALL\r\n").unwrap();
        assert!(o.answers());
        assert_eq!(o.saved(&ids), nz(&[2]));
        let (_, o) = take_return(b"a SEARCH RETURN (MAX SAVE MIN) ALL\r\n").unwrap();
        assert_eq!(o.saved(&ids), nz(&[2, 9]));
        assert_eq!(o.saved(&nz(&[4])), nz(&[4]));
        assert_eq!(o.saved(&[]), Vec::<NonZeroU32>::new());
        let (_, o) = take_return(b"a SEARCH RETURN (SAVE MIN COUNT) ALL\r\n").unwrap();
        assert_eq!(o.saved(&ids), ids);
    }

    #[test]
    fn esearch_is_written_as_dovecot_writes_it() {
        let all = ReturnOptions {
            min: true,
            max: true,
            all: true,
            count: true,
            save: false,
        };
        assert_eq!(
            esearch("a", true, all, &nz(&[1, 2, 3, 7, 9]), None),
            b"* ESEARCH (TAG \"a\") UID MIN 1 MAX 9 ALL 1:3,7,9 COUNT 5\r\n"
        );
        // A sorted result keeps its order.
        assert_eq!(
            esearch("a", false, all, &nz(&[5, 3, 4, 1]), Some(7)),
            b"* ESEARCH (TAG \"a\") MIN 5 MAX 1 ALL 5,3:4,1 COUNT 4 MODSEQ 7\r\n"
        );
        assert_eq!(
            esearch("a", false, all, &[], None),
            b"* ESEARCH (TAG \"a\") COUNT 0\r\n"
        );
        assert_eq!(quoted("x\"y\\"), "\"x\\\"y\\\\\"");
    }
}
