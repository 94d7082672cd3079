//! SEARCH over opened messages: a search key tree (RFC 3501 §6.4.4) held
//! against one message, answered as Dovecot (2.3) answers it for the same
//! message stored in plaintext. The provider cannot search sealed
//! content, so writ evaluates searches that look at the message itself;
//! [`needs_content`] tells which, [`needs_body`] whether the header is
//! enough. `tests/search_oracle.rs` holds writ to a real Dovecot over a
//! corpus of messages and some 540 searches.
//!
//! Use: [`Search::new`] prepares the criteria of one SEARCH command (an
//! unknown CHARSET is [`SearchError::BadCharset`], which the caller
//! answers `NO [BADCHARSET]`; a string that is not text in its charset is
//! [`SearchError::InvalidString`], answered `BAD`), [`Search::matches`]
//! holds it against each [`Candidate`]. [`matches`] does both for one
//! key, in UTF-8. Nothing here does I/O or panics on any message.
//!
//! How Dovecot searches, and so writ:
//!
//! - Strings compare as substrings after both sides are put in
//!   "decomposed titlecase" (see `text`): case is ignored over all of
//!   Unicode, and a character matches its decomposition, so `cafe` finds
//!   `café` (`CAFE` + U+0301), `nb sp` finds `nb` NBSP `sp` and `x2`
//!   finds `x²`; but `naive` does not find `naïve` (the accent sits
//!   between I and V), `ss` does not find `ß`, and `file` does not find
//!   `ﬁle` (its `fi` is not titlecased).
//! - SUBJECT, FROM, TO, CC, BCC and HEADER look at every field of that
//!   name in the message's own header (up to its first empty line; any
//!   of the fields may match), encoded-words decoded (whitespace between
//!   two of them dropped, broken ones left as written) and the value
//!   followed by CRLF. SUBJECT first makes each run of spaces and tabs
//!   one space (leading ones dropped). FROM, TO, CC and BCC match the
//!   addresses as Dovecot rewrites them (see `address`): `"Name"
//!   <box@domain>`, comments made names, `MISSING_DOMAIN` and the like
//!   for broken ones. An empty string matches any message that has the
//!   field.
//! - BODY and TEXT look at each MIME entity on its own (no match spans
//!   two): TEXT at every header of every entity (name, colon and value,
//!   values decoded, each line ending CRLF) and the bodies; BODY at the
//!   bodies alone. A body counts when its type is `text/*` or `message/*`
//!   (the last Content-Type field says; a broken one makes it no text)
//!   and its Content-Transfer-Encoding is one Dovecot knows (7bit, 8bit,
//!   binary, base64, quoted-printable; not, say, an empty one). base64 and
//!   quoted-printable are undone as Dovecot's decoders do (base64 stops
//!   for good at padding or at a byte outside its alphabet; broken QP
//!   escapes stay as written), the charset of the first Content-Type
//!   converted. Multipart preambles and epilogues are never searched; a
//!   message/global part is a leaf whose body is searched as it is. Line
//!   breaks of bodies are LF, as Dovecot stores messages by default
//!   (`mail_save_crlf = no`); only QP makes them CRLF. An empty BODY or
//!   TEXT string matches every message.
//! - SENTBEFORE, SENTON and SENTSINCE use the day of the first Date field
//!   as written (its time and zone disregarded, RFC 3501). Dovecot's
//!   date parser is strict about field ranges (31 February, hour 25: no
//!   date) but takes a leap second, two-digit years, comments and
//!   unknown zones; a missing or unreadable Date is 1 January 1970, so
//!   SENTBEFORE matches such messages. Dates before 1970 wrap past 2096
//!   (Dovecot keeps them in 32 unsigned bits). BEFORE, ON and SINCE use
//!   the day of INTERNALDATE in the zone the provider gives it in.
//!   YOUNGER n and OLDER n (WITHIN, RFC 5032) compare INTERNALDATE to
//!   the instant the command is prepared ([`Search::new`], as Dovecot
//!   takes its clock once per command), to the second: YOUNGER holds a
//!   message received at or after now - n, OLDER one received at or
//!   before it.
//! - LARGER and SMALLER compare RFC822.SIZE as the client sees it.
//! - In a UID set `*` is the highest UID and a range is `min:max`
//!   whichever way round it is written (RFC 3501), so `UID 500:*` holds
//!   the last message even if its UID is below 500. In a message
//!   sequence set Dovecot departs from that: `*` alone is the last
//!   message, but a range from `*` to a number past the last message is
//!   empty (`n:*` and `*:n`, `n` > number of messages). writ matches it.
//! - Keywords compare without regard to case.
//! - Charsets, for search strings (SEARCH CHARSET), bodies (the charset
//!   parameter) and encoded-words alike (`charset_supported`): UTF-8
//!   (US-ASCII is read as UTF-8, as Dovecot does), the common single-byte
//!   charsets, and the multibyte CJK ones: ISO-2022-JP, Shift_JIS and
//!   CP932 (Windows-31J), EUC-JP, EUC-KR and UHC (CP949), GB2312
//!   (EUC-CN), GBK, GB18030, Big5 and Big5-HKSCS, under the names glibc's
//!   iconv (which Dovecot converts with) knows them by. Dovecot converts
//!   whatever iconv knows; writ refuses other charsets as SEARCH CHARSET
//!   (`NO [BADCHARSET]`, as RFC 3501 allows) and reads text in them as
//!   UTF-8, as Dovecot reads text in a charset iconv does not know: so
//!   both read mail labelled `x-sjis` or `ks_c_5601-1987` (names glibc
//!   does not know) as UTF-8. Bytes that are not text in their charset
//!   are one U+FFFD per run; a search string with such bytes is `BAD`.
//!   The CJK text is decoded as the WHATWG Encoding Standard reads it,
//!   with the characters glibc reads differently put back (Shift_JIS `\`
//!   is `¥`, the JIS wave dash U+301C...; see `text`); where the WHATWG
//!   tables are wider than glibc's (GBK hanzi in GB2312, UHC hangul in
//!   EUC-KR, NEC/IBM symbols like `①` in Shift_JIS and ISO-2022-JP,
//!   HKSCS in Big5), writ reads characters that Dovecot turns into U+FFFD
//!   and takes search strings holding them, which Dovecot refuses (the
//!   oracle test checks both sides). A multibyte sequence cut off by the
//!   end of a body part is dropped; Dovecot carries it over to the next
//!   body it decodes, even in the next message it searches.
//!
//! Where Dovecot departs from RFC 3501 and writ does not: when two keys
//! of different kinds look at the same field (FROM and HEADER From,
//! SUBJECT and HEADER Subject), Dovecot holds the later key against the
//! field as the first rewrote it (`search_header_arg` reuses the decoded
//! block), so a message matching each key alone can fail both together.
//! RFC 3501 makes several keys the intersection of their matches; writ
//! answers that (the oracle test checks it against Dovecot's answers to
//! each key alone).

mod address;
mod date;
pub(in crate::imap) mod mime;
mod rfc822;
pub mod sort_keys;
mod text;

use std::cell::OnceCell;
use std::num::NonZeroU32;

use imap_next::imap_types::datetime::{DateTime, NaiveDate};
use imap_next::imap_types::flag::Flag;
use imap_next::imap_types::search::SearchKey;
use imap_next::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use crate::envelope::scan::{Limits, scan};
use crate::envelope::{Summary, header};
use text::Charset;

/// One message of the selected mailbox, as a SEARCH sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Its message sequence number.
    pub seq: NonZeroU32,
    pub uid: NonZeroU32,
    /// Messages in the mailbox (`*` in a sequence set).
    pub max_seq: u32,
    /// The highest UID in the mailbox (`*` in a UID set).
    pub max_uid: u32,
    /// Its flags, as FETCH FLAGS gives them (without \Recent).
    pub flags: &'a [Flag<'a>],
    /// Has it the \Recent flag in this session?
    pub recent: bool,
    /// INTERNALDATE, from the provider.
    pub internal_date: Option<&'a DateTime>,
    /// RFC822.SIZE as the client sees it.
    pub size: u64,
    /// MODSEQ (CONDSTORE), when known.
    pub modseq: Option<u64>,
    /// The message as the client sees it (the opened message; its header
    /// alone, through the empty line, when no key [`needs_body`]).
    pub message: &'a [u8],
    /// Its structure, if the caller has it (computed otherwise).
    pub summary: Option<&'a Summary>,
}

/// Why a search cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SearchError {
    /// `NO [BADCHARSET]`: writ does not read this charset.
    #[error("unknown charset")]
    BadCharset,
    /// `BAD`: a search string is not valid in its charset (Dovecot:
    /// "Invalid search key").
    #[error("invalid search key")]
    InvalidString,
}

/// Does writ read search strings in this charset (`SEARCH CHARSET
/// <name>`)? UTF-8 (and US-ASCII); the single-byte charsets ISO-8859-1
/// to -16, Windows-1250 to -1258, KOI8-R, KOI8-U, IBM866, Windows-874 and
/// Macintosh; and the multibyte ISO-2022-JP, Shift_JIS, CP932, EUC-JP,
/// EUC-KR, UHC (CP949), GB2312 (EUC-CN), GBK, GB18030, Big5 and
/// Big5-HKSCS, under glibc's names and aliases for them (`Shift_JIS`,
/// `SJIS`, `MS_Kanji`, `csISO2022JP`, `EUC-CN`, `CP936`, `BIG-5`...; not
/// `x-sjis` or `ks_c_5601-1987`, which glibc, and so Dovecot, does not
/// know either). Message text in the same charsets is read as such.
pub fn charset_supported(name: &str) -> bool {
    Charset::named(name).is_some()
}

/// Does `key` look at the message or its size (so that the provider
/// cannot answer it over sealed messages)?
pub fn needs_content(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(needs_content),
        SearchKey::Or(a, b) => needs_content(a) || needs_content(b),
        SearchKey::Not(k) => needs_content(k),
        SearchKey::Body(_)
        | SearchKey::Text(_)
        | SearchKey::Subject(_)
        | SearchKey::From(_)
        | SearchKey::To(_)
        | SearchKey::Cc(_)
        | SearchKey::Bcc(_)
        | SearchKey::Header(..)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_)
        | SearchKey::Larger(_)
        | SearchKey::Smaller(_) => true,
        _ => false,
    }
}

/// Does `key` look at message bodies (BODY, TEXT)? If not, the
/// [`Candidate::message`] may be the header alone (through its empty
/// line), as a summary holds it.
pub fn needs_body(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(needs_body),
        SearchKey::Or(a, b) => needs_body(a) || needs_body(b),
        SearchKey::Not(k) => needs_body(k),
        SearchKey::Body(_) | SearchKey::Text(_) => true,
        _ => false,
    }
}

/// Does the message match `key` (search strings in UTF-8)?
pub fn matches(key: &SearchKey<'_>, c: &Candidate<'_>) -> bool {
    Search::new(std::slice::from_ref(key), None).is_ok_and(|s| s.matches(c))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Before,
    On,
    Since,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    /// HEADER: the value as it is.
    Plain,
    /// FROM, TO, CC, BCC: the addresses rewritten.
    Address,
    /// SUBJECT: whitespace runs made one space.
    Compress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SystemFlag {
    Answered,
    Deleted,
    Draft,
    Flagged,
    Seen,
}

/// A search string made ready: `None` for the empty string.
type Needle = Option<String>;

#[derive(Debug, Clone)]
enum Node {
    And(Vec<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    All,
    Seq(Vec<(SeqOrUid, SeqOrUid)>),
    Uid(Vec<(SeqOrUid, SeqOrUid)>),
    Flag(SystemFlag),
    Keyword(String),
    Recent,
    Internal(Cmp, i64),
    /// INTERNALDATE at or after this instant (seconds since the epoch).
    ReceivedSince(i64),
    /// INTERNALDATE at or before this instant.
    ReceivedBy(i64),
    Sent(Cmp, i64),
    Larger(u64),
    Smaller(u64),
    Field(FieldKind, String, Needle),
    Body(Needle),
    Text(Needle),
    ModSeq(u64),
    Never,
}

/// The criteria of one SEARCH command, ready to be held against messages.
#[derive(Debug, Clone)]
pub struct Search {
    root: Node,
}

impl Search {
    /// Prepares `criteria` (all of which must match) with search strings
    /// in `charset` (UTF-8 when `None`); YOUNGER and OLDER count from now.
    pub fn new(criteria: &[SearchKey<'_>], charset: Option<&str>) -> Result<Search, SearchError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Search::at(criteria, charset, now)
    }

    /// [`Search::new`], YOUNGER and OLDER counting from `now` (seconds
    /// since the epoch).
    pub fn at(
        criteria: &[SearchKey<'_>],
        charset: Option<&str>,
        now: i64,
    ) -> Result<Search, SearchError> {
        let charset = match charset {
            None => Charset::Utf8,
            Some(name) => Charset::named(name).ok_or(SearchError::BadCharset)?,
        };
        let nodes = criteria
            .iter()
            .map(|k| node(k, charset, now))
            .collect::<Result<_, _>>()?;
        Ok(Search {
            root: Node::And(nodes),
        })
    }

    /// Does the message match?
    pub fn matches(&self, c: &Candidate<'_>) -> bool {
        let ctx = Ctx {
            c,
            summary: OnceCell::new(),
            header: OnceCell::new(),
            texts: OnceCell::new(),
            bodies: OnceCell::new(),
        };
        ctx.eval(&self.root)
    }
}

fn needle(s: &[u8], charset: Charset) -> Result<Needle, SearchError> {
    if !charset.is_valid(s) {
        return Err(SearchError::InvalidString);
    }
    if s.is_empty() {
        return Ok(None);
    }
    let mut out = String::new();
    charset.fold(s, &mut out);
    Ok(Some(out))
}

fn day(d: &NaiveDate) -> i64 {
    date::day_of_rendering(&d.as_ref().to_string()).unwrap_or(0)
}

fn ranges(set: &SequenceSet) -> Vec<(SeqOrUid, SeqOrUid)> {
    set.0
        .as_ref()
        .iter()
        .map(|s| match s {
            Sequence::Single(v) => (*v, *v),
            Sequence::Range(a, b) => (*a, *b),
        })
        .collect()
}

fn node(key: &SearchKey<'_>, cs: Charset, now: i64) -> Result<Node, SearchError> {
    let field = |kind, name: &str, s: &[u8]| -> Result<Node, SearchError> {
        Ok(Node::Field(kind, name.to_string(), needle(s, cs)?))
    };
    let node = match key {
        SearchKey::And(keys) => Node::And(
            keys.as_ref()
                .iter()
                .map(|k| node(k, cs, now))
                .collect::<Result<_, _>>()?,
        ),
        SearchKey::Or(a, b) => Node::Or(Box::new(node(a, cs, now)?), Box::new(node(b, cs, now)?)),
        SearchKey::Not(k) => Node::Not(Box::new(node(k, cs, now)?)),
        SearchKey::All => Node::All,
        SearchKey::SequenceSet(set) => Node::Seq(ranges(set)),
        SearchKey::Uid(set) => Node::Uid(ranges(set)),
        SearchKey::Answered => Node::Flag(SystemFlag::Answered),
        SearchKey::Deleted => Node::Flag(SystemFlag::Deleted),
        SearchKey::Draft => Node::Flag(SystemFlag::Draft),
        SearchKey::Flagged => Node::Flag(SystemFlag::Flagged),
        SearchKey::Seen => Node::Flag(SystemFlag::Seen),
        SearchKey::Unanswered => Node::Not(Box::new(Node::Flag(SystemFlag::Answered))),
        SearchKey::Undeleted => Node::Not(Box::new(Node::Flag(SystemFlag::Deleted))),
        SearchKey::Undraft => Node::Not(Box::new(Node::Flag(SystemFlag::Draft))),
        SearchKey::Unflagged => Node::Not(Box::new(Node::Flag(SystemFlag::Flagged))),
        SearchKey::Unseen => Node::Not(Box::new(Node::Flag(SystemFlag::Seen))),
        SearchKey::Keyword(k) => Node::Keyword(k.as_ref().to_string()),
        SearchKey::Unkeyword(k) => Node::Not(Box::new(Node::Keyword(k.as_ref().to_string()))),
        SearchKey::Recent => Node::Recent,
        SearchKey::New => Node::And(vec![
            Node::Recent,
            Node::Not(Box::new(Node::Flag(SystemFlag::Seen))),
        ]),
        SearchKey::Old => Node::Not(Box::new(Node::Recent)),
        SearchKey::Before(d) => Node::Internal(Cmp::Before, day(d)),
        SearchKey::On(d) => Node::Internal(Cmp::On, day(d)),
        SearchKey::Since(d) => Node::Internal(Cmp::Since, day(d)),
        SearchKey::Younger(n) => Node::ReceivedSince(now - i64::from(n.get())),
        SearchKey::Older(n) => Node::ReceivedBy(now - i64::from(n.get())),
        SearchKey::SentBefore(d) => Node::Sent(Cmp::Before, day(d)),
        SearchKey::SentOn(d) => Node::Sent(Cmp::On, day(d)),
        SearchKey::SentSince(d) => Node::Sent(Cmp::Since, day(d)),
        SearchKey::Larger(n) => Node::Larger(u64::from(*n)),
        SearchKey::Smaller(n) => Node::Smaller(u64::from(*n)),
        SearchKey::Subject(s) => field(FieldKind::Compress, "Subject", s.as_ref())?,
        SearchKey::From(s) => field(FieldKind::Address, "From", s.as_ref())?,
        SearchKey::To(s) => field(FieldKind::Address, "To", s.as_ref())?,
        SearchKey::Cc(s) => field(FieldKind::Address, "Cc", s.as_ref())?,
        SearchKey::Bcc(s) => field(FieldKind::Address, "Bcc", s.as_ref())?,
        SearchKey::Header(name, s) => {
            if !cs.is_valid(name.as_ref()) {
                return Err(SearchError::InvalidString);
            }
            let mut text = String::new();
            cs.decode(name.as_ref(), &mut text);
            Node::Field(FieldKind::Plain, text, needle(s.as_ref(), cs)?)
        }
        SearchKey::Body(s) => Node::Body(needle(s.as_ref(), cs)?),
        SearchKey::Text(s) => Node::Text(needle(s.as_ref(), cs)?),
        SearchKey::ModSequence { modseq, .. } => Node::ModSeq(*modseq),
        #[allow(unreachable_patterns)]
        _ => Node::Never,
    };
    Ok(node)
}

/// What evaluating a tree over one message has worked out so far.
struct Ctx<'c> {
    c: &'c Candidate<'c>,
    summary: OnceCell<Option<Summary>>,
    header: OnceCell<Vec<mime::Line<'c>>>,
    texts: OnceCell<Vec<String>>,
    bodies: OnceCell<Vec<String>>,
}

fn in_set(set: &[(SeqOrUid, SeqOrUid)], n: u32, max: u32) -> bool {
    let v = |x: &SeqOrUid| match x {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => max,
    };
    set.iter().any(|(a, b)| {
        let (a, b) = (v(a), v(b));
        (a.min(b)..=a.max(b)).contains(&n)
    })
}

/// A message sequence set as Dovecot reads it: `*` alone is the last
/// message, but a range from `*` to a number beyond the last message is
/// empty (RFC 3501 would make `n:*` hold the last message whatever `n`).
fn in_seq_set(set: &[(SeqOrUid, SeqOrUid)], n: u32, max: u32) -> bool {
    set.iter().any(|range| match range {
        (SeqOrUid::Value(a), SeqOrUid::Value(b)) => {
            (a.get().min(b.get())..=a.get().max(b.get())).contains(&n)
        }
        (SeqOrUid::Value(v), SeqOrUid::Asterisk) | (SeqOrUid::Asterisk, SeqOrUid::Value(v)) => {
            (v.get()..=max).contains(&n)
        }
        (SeqOrUid::Asterisk, SeqOrUid::Asterisk) => n == max,
    })
}

fn compare(cmp: Cmp, day: i64, wanted: i64) -> bool {
    match cmp {
        Cmp::Before => day < wanted,
        Cmp::On => day == wanted,
        Cmp::Since => day >= wanted,
    }
}

/// SUBJECT's whitespace: each run of spaces and tabs one space, leading
/// ones dropped.
fn compress_lwsp(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut prev = true;
    for &c in v {
        if c == b' ' || c == b'\t' {
            if !prev {
                out.push(b' ');
            }
            prev = true;
        } else {
            out.push(c);
            prev = false;
        }
    }
    out
}

impl<'c> Ctx<'c> {
    fn eval(&self, n: &Node) -> bool {
        let c = self.c;
        match n {
            Node::And(v) => v.iter().all(|n| self.eval(n)),
            Node::Or(a, b) => self.eval(a) || self.eval(b),
            Node::Not(k) => !self.eval(k),
            Node::All => true,
            Node::Never => false,
            Node::Seq(set) => in_seq_set(set, c.seq.get(), c.max_seq),
            Node::Uid(set) => in_set(set, c.uid.get(), c.max_uid),
            Node::Flag(f) => c.flags.iter().any(|x| {
                matches!(
                    (f, x),
                    (SystemFlag::Answered, Flag::Answered)
                        | (SystemFlag::Deleted, Flag::Deleted)
                        | (SystemFlag::Draft, Flag::Draft)
                        | (SystemFlag::Flagged, Flag::Flagged)
                        | (SystemFlag::Seen, Flag::Seen)
                )
            }),
            Node::Keyword(k) => c.flags.iter().any(|x| match x {
                Flag::Keyword(a) => a.as_ref().eq_ignore_ascii_case(k),
                _ => false,
            }),
            Node::Recent => c.recent,
            Node::Internal(cmp, d) => c
                .internal_date
                .and_then(|t| date::day_of_rendering(&t.as_ref().to_string()))
                .is_some_and(|day| compare(*cmp, day, *d)),
            Node::ReceivedSince(t) => c
                .internal_date
                .is_some_and(|d| d.as_ref().timestamp() >= *t),
            Node::ReceivedBy(t) => c
                .internal_date
                .is_some_and(|d| d.as_ref().timestamp() <= *t),
            Node::Sent(cmp, d) => {
                let value = self
                    .header()
                    .iter()
                    .find(|l| !l.eoh && l.name.eq_ignore_ascii_case(b"Date"))
                    .map(|l| l.value.as_slice());
                compare(*cmp, date::sent_day(value), *d)
            }
            Node::Larger(n) => c.size > *n,
            Node::Smaller(n) => c.size < *n,
            Node::ModSeq(n) => c.modseq.is_some_and(|m| m >= *n),
            Node::Field(kind, name, needle) => self.field(*kind, name, needle.as_deref()),
            Node::Body(needle) => self.find(&self.bodies, false, needle.as_deref()),
            Node::Text(needle) => self.find(&self.texts, true, needle.as_deref()),
        }
    }

    fn summary(&self) -> Option<&Summary> {
        self.summary
            .get_or_init(|| match self.c.summary {
                Some(_) => None,
                None => Some(scan(self.c.message, Limits::default())),
            })
            .as_ref()
            .or(self.c.summary)
    }

    /// The fields of the message's own header (up to the first empty
    /// line, as Dovecot's header parser reads it).
    fn header(&self) -> &[mime::Line<'c>] {
        self.header.get_or_init(|| {
            let m = self.c.message;
            let end = header::header_end(m).unwrap_or(m.len());
            mime::header_lines(m.get(..end).unwrap_or(m))
        })
    }

    fn field(&self, kind: FieldKind, name: &str, needle: Option<&str>) -> bool {
        let mut fields = self
            .header()
            .iter()
            .filter(|l| !l.eoh && l.name.eq_ignore_ascii_case(name.as_bytes()));
        let Some(needle) = needle else {
            return fields.next().is_some();
        };
        fields.any(|l| {
            let value = match kind {
                FieldKind::Plain => l.value.clone(),
                FieldKind::Address => address::normalize(&l.value),
                FieldKind::Compress => compress_lwsp(&l.value),
            };
            let mut hay = String::new();
            mime::decode_header(&value, &mut hay);
            if l.newline {
                hay.push_str("\r\n");
            }
            hay.contains(needle)
        })
    }

    fn find(&self, cell: &OnceCell<Vec<String>>, headers: bool, needle: Option<&str>) -> bool {
        let Some(needle) = needle else {
            return true;
        };
        let Some(summary) = self.summary() else {
            return false;
        };
        cell.get_or_init(|| mime::entity_texts(self.c.message, &summary.root, headers))
            .iter()
            .any(|t| t.contains(needle))
    }
}

#[cfg(test)]
mod tests;
