//! SEARCHRES (RFC 5182): `SEARCH RETURN (SAVE)` keeps its result as `$`,
//! which later commands name in place of a sequence set.
//!
//! writ keeps `$` itself, in the session, as the UIDs of the saved
//! messages (compacted into ranges: [`super::sequence::compact`]), and
//! puts them in the place of `$` before a command goes anywhere: the
//! provider never sees the client's `$`, so writ's own evaluation of SEARCH over
//! sealed mail and the provider's of the rest name the same messages.
//! Kept by UID, a saved message another session expunges simply drops out
//! (RFC 5182 §2.1). `$` is empty at login and after SELECT, EXAMINE, CLOSE
//! and UNSELECT; a SEARCH with SAVE that fails (NO) leaves it empty, one
//! that does not parse (BAD) leaves it as it was, as Dovecot does. A SAVE
//! search runs as a plan, so the commands behind it wait for it and find
//! its result (RFC 5182 §2.1's rule for pipelined commands).
//!
//! imap-codec 2.0.0-alpha.10 parses no `$`. So [`Marker`], run by the
//! intake over each line of a command before imap-next sees it, writes a
//! `$` that stands alone where a set may stand as the set [`SENTINEL`]
//! (at most [`MAX_MARKS`]); once the command is parsed, [`place`] finds the
//! sentinels again and puts the saved result there:
//!
//! - in SEARCH, SORT and THREAD criteria every `$` token outside quoted
//!   strings is marked (a key `$` or `UID $` becomes `UID <saved>`, or
//!   `NOT ALL` when nothing is saved); one that parses as a string or
//!   keyword argument (`SUBJECT $`, `KEYWORD $`) or a charset is given
//!   back as `$`;
//! - in FETCH, STORE, COPY, MOVE (and their UID forms) and UID EXPUNGE
//!   only the first argument is. By UID the saved UIDs stand there; by
//!   sequence number the session first asks the provider which numbers
//!   they have now ([`Resolve`]: `SEARCH UID <saved>`; a SEARCH, so no
//!   EXPUNGE can come between its answer and the command). Over an empty
//!   `$` such a command goes to the provider with a `$` of its own
//!   ([`with_provider_dollar`]): writ never saves there, so the
//!   provider's is always empty and it answers as it answers an empty one
//!   (a destination that does not exist, no mailbox selected). The
//!   `SEARCH UID` waits until the provider has answered the commands before it (the
//!   session's `Plan::Quiet`), so that its `* SEARCH` is its own.
//!
//! The intake refuses the client's own 4294967295:4294967295 standing
//! alone where a `$` may stand, so every sentinel [`place`] finds is a
//! `$`; where a number stands (`LARGER $`) the sentinel does not parse,
//! and the command is answered BAD, as Dovecot answers it. At most [`MAX_MARKS`]
//! `$`s per command, [`MAX_RANGES`] ranges in a saved result and in all
//! the `$`s of one command. Work is linear in the command; the criteria
//! tree is walked with an explicit stack, never recursion.

use std::num::NonZeroU32;

use imap_next::imap_types::command::{Command, CommandBody};
use imap_next::imap_types::core::{AString, Atom, Charset, Tag, Vec1};
use imap_next::imap_types::response::{Status, StatusBody, StatusKind, Tagged};
use imap_next::imap_types::search::SearchKey;
use imap_next::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use super::fetch::Output;

/// What the intake writes in the place of a `$`: a set imap-codec parses
/// (kept as written: writ builds it without the quirk that normalises
/// sets) and a client has no reason to write (the range of the one UID
/// 4294967295). Where a number stands it does not parse (`LARGER $` is
/// BAD, as at Dovecot); where a string stands it is given back as `$`.
pub const SENTINEL: &str = "4294967295:4294967295";
/// `$`s one command may hold.
pub const MAX_MARKS: usize = 64;

/// Why a command with `$` is refused.
pub mod why {
    pub const MARKS: &str = "Too many $ in one command: at most 64";
    pub const MIXED: &str = "$ stands only where a sequence set or a string may";
    pub const RESERVED: &str =
        "4294967295:4294967295 standing alone is reserved by the proxy here (it stands for $)";
    pub const TOO_LARGE: &str =
        "$ is too scattered to stand here: at most 2000 ranges in one command";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// SEARCH, SORT, THREAD: every `$` token of the criteria.
    Criteria,
    /// FETCH, STORE, COPY, MOVE, UID EXPUNGE: the first argument.
    FirstSet,
}

/// The `$`s of the command being taken in, line by line.
#[derive(Debug, Default)]
pub struct Marker {
    kind: Option<Kind>,
    marks: usize,
}

impl Marker {
    /// The first line of a command (its RETURN options taken off).
    pub fn first_line(&mut self, line: &mut Vec<u8>) -> Result<(), &'static str> {
        self.marks = 0;
        self.kind = None;
        let Some((kind, from)) = classify(line) else {
            return Ok(());
        };
        self.kind = Some(kind);
        self.mark(line, from)
    }

    /// A later line of the same command (after a literal).
    pub fn next_line(&mut self, line: &mut Vec<u8>) -> Result<(), &'static str> {
        match self.kind {
            Some(Kind::Criteria) => self.mark(line, 0),
            _ => Ok(()),
        }
    }

    /// The command is over.
    pub fn end(&mut self) {
        self.kind = None;
        self.marks = 0;
    }

    fn mark(&mut self, line: &mut Vec<u8>, from: usize) -> Result<(), &'static str> {
        let tokens = match self.kind {
            Some(Kind::FirstSet) => standalone_at(line, from).into_iter().collect(),
            Some(Kind::Criteria) => standalone(line, from),
            None => Vec::new(),
        };
        let mut at = Vec::new();
        for (i, dollar) in tokens {
            if !dollar {
                // The client's own: it would be taken for a `$`.
                return Err(why::RESERVED);
            }
            at.push(i);
        }
        if at.is_empty() {
            return Ok(());
        }
        self.marks += at.len();
        if self.marks > MAX_MARKS {
            return Err(why::MARKS);
        }
        let mut out = Vec::with_capacity(line.len() + at.len() * SENTINEL.len());
        let mut last = 0;
        for i in at {
            out.extend_from_slice(&line[last..i]);
            out.extend_from_slice(SENTINEL.as_bytes());
            last = i + 1;
        }
        out.extend_from_slice(&line[last..]);
        *line = out;
        Ok(())
    }
}

/// Strips ASCII `w` and a space from the start of `s`, ignoring case.
fn word<'a>(s: &'a [u8], w: &str) -> Option<&'a [u8]> {
    let n = w.len();
    (s.len() > n && s[..n].eq_ignore_ascii_case(w.as_bytes()) && s[n] == b' ').then(|| &s[n + 1..])
}

/// `tag [UID] NAME ...`: which `$`s the command may hold, and where its
/// arguments start.
fn classify(line: &[u8]) -> Option<(Kind, usize)> {
    let space = line.iter().position(|&b| b == b' ')?;
    let rest = &line[space + 1..];
    let by_uid = word(rest, "UID");
    let named = by_uid.unwrap_or(rest);
    for (name, kind) in [
        ("SEARCH", Kind::Criteria),
        ("SORT", Kind::Criteria),
        ("THREAD", Kind::Criteria),
        ("FETCH", Kind::FirstSet),
        ("STORE", Kind::FirstSet),
        ("COPY", Kind::FirstSet),
        ("MOVE", Kind::FirstSet),
        ("EXPUNGE", Kind::FirstSet),
    ] {
        if name == "EXPUNGE" && by_uid.is_none() {
            continue;
        }
        if let Some(args) = word(named, name) {
            return Some((kind, line.len() - args.len()));
        }
    }
    None
}

fn ends_token(b: Option<&u8>) -> bool {
    matches!(b, None | Some(b' ' | b')' | b'\r' | b'\n'))
}

/// A `$` (`true`) or [`SENTINEL`] (`false`) standing alone at `at`.
fn standalone_at(line: &[u8], at: usize) -> Option<(usize, bool)> {
    let rest = line.get(at..)?;
    if rest.first() == Some(&b'$') && ends_token(rest.get(1)) {
        return Some((at, true));
    }
    let n = SENTINEL.len();
    (rest.starts_with(SENTINEL.as_bytes()) && ends_token(rest.get(n))).then_some((at, false))
}

/// Every `$` or [`SENTINEL`] standing alone from `from` on, outside quoted
/// strings.
fn standalone(line: &[u8], from: usize) -> Vec<(usize, bool)> {
    let mut out = Vec::new();
    let (mut quoted, mut escaped) = (false, false);
    for i in from..line.len() {
        let b = line[i];
        if quoted {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = false;
            }
            continue;
        }
        match b {
            b'"' => quoted = true,
            b'$' | b'4' if i == from || matches!(line[i - 1], b' ' | b'(') => {
                out.extend(standalone_at(line, i));
            }
            _ => {}
        }
    }
    out
}

fn is_sentinel(set: &SequenceSet) -> bool {
    matches!(set.0.as_ref(),
        [Sequence::Range(SeqOrUid::Value(a), SeqOrUid::Value(b))]
            if a.get() == u32::MAX && b.get() == u32::MAX)
}

fn sentinel_atom(s: &str) -> bool {
    s == SENTINEL
}

/// `value` made `$` again when `is` (it holds the sentinel).
fn give_back<T: TryFrom<&'static str>>(value: &mut T, is: bool) -> bool {
    match T::try_from("$") {
        Ok(dollar) if is => {
            *value = dollar;
            true
        }
        _ => false,
    }
}

fn dollar_astring(s: &mut AString<'static>) -> bool {
    let is = sentinel_astring(s);
    give_back(s, is)
}

fn dollar_atom(a: &mut Atom<'static>) -> bool {
    let is = sentinel_atom(a.as_ref());
    give_back(a, is)
}

fn dollar_charset(c: &mut Charset<'static>) -> bool {
    match c {
        Charset::Atom(a) => dollar_atom(a),
        Charset::Quoted(_) => false,
    }
}

/// What a command comes to once the saved result is in place.
#[derive(Debug, PartialEq, Eq)]
pub enum Placed {
    /// It named no `$`.
    Untouched,
    /// It goes on as any command.
    Ready,
    /// A FETCH, STORE, COPY, MOVE or UID EXPUNGE over an empty `$`: it
    /// goes to the provider with a `$` of its own, which is always empty
    /// (writ never saves there): the provider answers it as it answers an
    /// empty `$` ([`with_provider_dollar`]).
    Empty,
    /// The same by sequence number over saved messages: their numbers are
    /// asked for first ([`Resolve`]).
    Resolve,
}

/// The search key that stands for `$`.
fn dollar_key(saved: Option<&SequenceSet>) -> SearchKey<'static> {
    match saved {
        Some(set) => SearchKey::Uid(set.clone()),
        None => SearchKey::Not(Box::new(SearchKey::All)),
    }
}

/// Does any key of `criteria` hold the sentinel? Explicit stack.
fn holds_sentinel(criteria: &[SearchKey<'_>]) -> bool {
    let mut stack: Vec<&SearchKey<'_>> = criteria.iter().collect();
    while let Some(key) = stack.pop() {
        let found = match key {
            SearchKey::And(inner) => {
                stack.extend(inner.as_ref());
                false
            }
            SearchKey::Or(a, b) => {
                stack.extend([a.as_ref(), b.as_ref()]);
                false
            }
            SearchKey::Not(k) => {
                stack.push(k.as_ref());
                false
            }
            SearchKey::SequenceSet(set) | SearchKey::Uid(set) => is_sentinel(set),
            SearchKey::Bcc(s)
            | SearchKey::Body(s)
            | SearchKey::Cc(s)
            | SearchKey::From(s)
            | SearchKey::Subject(s)
            | SearchKey::Text(s)
            | SearchKey::To(s) => sentinel_astring(s),
            SearchKey::Header(name, value) => sentinel_astring(name) || sentinel_astring(value),
            SearchKey::Keyword(a) | SearchKey::Unkeyword(a) => sentinel_atom(a.as_ref()),
            _ => false,
        };
        if found {
            return true;
        }
    }
    false
}

fn sentinel_astring(s: &AString<'_>) -> bool {
    matches!(s, AString::Atom(a) if sentinel_atom(a.as_ref()))
}

/// `criteria` with every sentinel in place (explicit stack, post-order
/// rebuild). `Err`: a sentinel left where no `$` may be put.
fn place_in_criteria(
    criteria: Vec1<SearchKey<'static>>,
    saved: Option<&SequenceSet>,
) -> Result<Vec1<SearchKey<'static>>, &'static str> {
    enum Work {
        Visit(SearchKey<'static>),
        And(usize),
        Or,
        Not,
    }
    let mut work: Vec<Work> = criteria
        .into_inner()
        .into_iter()
        .rev()
        .map(Work::Visit)
        .collect();
    let mut done: Vec<SearchKey<'static>> = Vec::new();
    while let Some(w) = work.pop() {
        match w {
            Work::Visit(SearchKey::And(inner)) => {
                let inner = inner.into_inner();
                work.push(Work::And(inner.len()));
                work.extend(inner.into_iter().rev().map(Work::Visit));
            }
            Work::Visit(SearchKey::Or(a, b)) => {
                work.push(Work::Or);
                work.push(Work::Visit(*b));
                work.push(Work::Visit(*a));
            }
            Work::Visit(SearchKey::Not(k)) => {
                work.push(Work::Not);
                work.push(Work::Visit(*k));
            }
            Work::Visit(mut key) => {
                match &mut key {
                    SearchKey::SequenceSet(set) | SearchKey::Uid(set) if is_sentinel(set) => {
                        key = dollar_key(saved);
                    }
                    SearchKey::Bcc(s)
                    | SearchKey::Body(s)
                    | SearchKey::Cc(s)
                    | SearchKey::From(s)
                    | SearchKey::Subject(s)
                    | SearchKey::Text(s)
                    | SearchKey::To(s) => {
                        dollar_astring(s);
                    }
                    SearchKey::Header(name, value) => {
                        dollar_astring(name);
                        dollar_astring(value);
                    }
                    SearchKey::Keyword(a) | SearchKey::Unkeyword(a) => {
                        dollar_atom(a);
                    }
                    _ => {}
                }
                if holds_sentinel(std::slice::from_ref(&key)) {
                    return Err(why::MIXED);
                }
                done.push(key);
            }
            Work::And(n) => {
                let children = done.split_off(done.len().saturating_sub(n));
                done.push(SearchKey::And(Vec1::unvalidated(children)));
            }
            Work::Or => {
                let (Some(b), Some(a)) = (done.pop(), done.pop()) else {
                    continue;
                };
                done.push(SearchKey::Or(Box::new(a), Box::new(b)));
            }
            Work::Not => {
                if let Some(k) = done.pop() {
                    done.push(SearchKey::Not(Box::new(k)));
                }
            }
        }
    }
    Ok(Vec1::unvalidated(done))
}

/// Ranges a saved result may have, and `$`s in one command may put in
/// place together: the command must stay well under the provider's line
/// limit (Dovecot: 64 KiB; a range is at most 22 octets).
pub const MAX_RANGES: usize = 2_000;

/// How many ranges `set` has.
pub fn ranges(set: &SequenceSet) -> usize {
    set.0.as_ref().len()
}

/// Puts the saved result (`saved`: UIDs; `None` when empty) in the place
/// of the sentinels the intake wrote into `command` for its `$`s (the
/// intake refuses a client's own, so each one found is a `$`). `Err`: the
/// BAD text.
pub fn place(
    command: &mut Command<'static>,
    saved: Option<&SequenceSet>,
) -> Result<Placed, &'static str> {
    match &mut command.body {
        CommandBody::Search {
            charset, criteria, ..
        } => place_in_search(charset.as_mut(), criteria, saved),
        CommandBody::Sort {
            charset,
            search_criteria,
            ..
        }
        | CommandBody::Thread {
            charset,
            search_criteria,
            ..
        } => place_in_search(Some(charset), search_criteria, saved),
        CommandBody::Fetch {
            sequence_set, uid, ..
        }
        | CommandBody::Store {
            sequence_set, uid, ..
        }
        | CommandBody::Copy {
            sequence_set, uid, ..
        }
        | CommandBody::Move {
            sequence_set, uid, ..
        } => Ok(place_set(sequence_set, *uid, saved)),
        CommandBody::ExpungeUid { sequence_set } => Ok(place_set(sequence_set, true, saved)),
        _ => Ok(Placed::Untouched),
    }
}

/// The criteria (and charset) of a SEARCH, SORT or THREAD.
fn place_in_search(
    charset: Option<&mut Charset<'static>>,
    criteria: &mut Vec1<SearchKey<'static>>,
    saved: Option<&SequenceSet>,
) -> Result<Placed, &'static str> {
    let in_charset = charset.is_some_and(dollar_charset);
    if !holds_sentinel(criteria.as_ref()) {
        return Ok(if in_charset {
            Placed::Ready
        } else {
            Placed::Untouched
        });
    }
    let placed = place_in_criteria(criteria.clone(), saved)?;
    let dollars = count_dollar_keys(placed.as_ref(), saved);
    if dollars.saturating_mul(saved.map_or(1, ranges)) > MAX_RANGES {
        return Err(why::TOO_LARGE);
    }
    *criteria = placed;
    Ok(Placed::Ready)
}

/// The first argument of a FETCH, STORE, COPY, MOVE or UID EXPUNGE.
fn place_set(set: &mut SequenceSet, uid: bool, saved: Option<&SequenceSet>) -> Placed {
    if !is_sentinel(set) {
        return Placed::Untouched;
    }
    match saved {
        None => Placed::Empty,
        Some(saved) if uid => {
            *set = saved.clone();
            Placed::Ready
        }
        Some(_) => Placed::Resolve,
    }
}

/// How many keys of `criteria` stand for `$` (each one a copy of the
/// saved set). Explicit stack.
fn count_dollar_keys(criteria: &[SearchKey<'_>], saved: Option<&SequenceSet>) -> usize {
    let Some(saved) = saved else {
        return 0;
    };
    let mut stack: Vec<&SearchKey<'_>> = criteria.iter().collect();
    let mut n = 0;
    while let Some(key) = stack.pop() {
        match key {
            SearchKey::And(inner) => stack.extend(inner.as_ref()),
            SearchKey::Or(a, b) => stack.extend([a.as_ref(), b.as_ref()]),
            SearchKey::Not(k) => stack.push(k.as_ref()),
            SearchKey::Uid(set) if set == saved => n += 1,
            _ => {}
        }
    }
    n
}

/// `command` (whose first argument is the sentinel) as the line that goes
/// to the provider with `$` there, ending in CRLF; `None` when it holds a
/// literal (it cannot go as one line).
pub fn with_provider_dollar(command: &Command<'static>) -> Option<Vec<u8>> {
    use imap_codec::CommandCodec;
    use imap_codec::encode::Encoder;
    let line = CommandCodec::default().encode(command).dump();
    if line.windows(3).any(|w| w == b"}\r\n") {
        return None;
    }
    let (_, from) = classify(&line)?;
    let (at, false) = standalone_at(&line, from)? else {
        return None;
    };
    let mut out = line[..at].to_vec();
    out.push(b'$');
    out.extend_from_slice(&line[at + SENTINEL.len()..]);
    Some(out)
}

/// The tagged OK writ answers a command over an empty `$` with.
pub fn empty_ok(tag: Tag<'static>) -> Status<'static> {
    Status::Tagged(Tagged {
        tag,
        body: StatusBody {
            kind: StatusKind::Ok,
            code: None,
            text: imap_next::imap_types::core::Text::unvalidated("Completed: $ names no message"),
        },
    })
}

const RESOLVE_TAG: &str = "writ.r1";

/// A command by sequence number over `$`: the provider's `SEARCH UID
/// <saved>` gives the saved messages' numbers, then the command goes on
/// with them ([`Output::Resume`]).
pub struct Resolve {
    command: Command<'static>,
    numbers: Vec<NonZeroU32>,
    /// More numbers came than [`super::search_plan::MAX_SEARCH_RESULTS`].
    overflowed: bool,
}

impl Resolve {
    /// The plan and its command for the provider.
    pub fn start(command: Command<'static>, saved: &SequenceSet) -> (Resolve, Command<'static>) {
        let search = Command {
            tag: Tag::unvalidated(RESOLVE_TAG.to_owned()),
            body: CommandBody::Search {
                charset: None,
                criteria: Vec1::from(SearchKey::Uid(saved.clone())),
                uid: false,
            },
        };
        (
            Resolve {
                command,
                numbers: Vec::new(),
                overflowed: false,
            },
            search,
        )
    }

    /// The provider's `* SEARCH`.
    pub fn on_search(&mut self, found: Vec<NonZeroU32>) {
        if self.numbers.len().saturating_add(found.len()) > super::search_plan::MAX_SEARCH_RESULTS {
            self.overflowed = true;
        } else {
            self.numbers.extend(found);
        }
    }

    /// The provider's tagged answer: `Err` if it is not to writ's SEARCH.
    pub fn on_status(&mut self, status: Status<'static>) -> Result<Vec<Output>, Status<'static>> {
        let Status::Tagged(t) = &status else {
            return Err(status);
        };
        if t.tag.as_ref() != RESOLVE_TAG {
            return Err(status);
        }
        let Status::Tagged(t) = status else {
            return Ok(Vec::new());
        };
        let tag = self.command.tag.clone();
        if t.body.kind != StatusKind::Ok {
            return Ok(vec![Output::Finish(Status::Tagged(Tagged {
                tag,
                body: t.body,
            }))]);
        }
        if self.overflowed {
            return Ok(vec![Output::Finish(Status::Tagged(Tagged {
                tag,
                body: StatusBody {
                    kind: StatusKind::No,
                    code: None,
                    text: imap_next::imap_types::core::Text::unvalidated(
                        super::search_plan::TOO_MANY_RESULTS,
                    ),
                },
            }))]);
        }
        let Some(numbers) = super::sequence::compact(&self.numbers) else {
            // Every saved message gone: the provider answers as for an
            // empty `$`.
            return Ok(match with_provider_dollar(&self.command) {
                Some(line) => vec![Output::ToProviderLine(tag, line), Output::Over],
                None => vec![Output::Finish(empty_ok(tag))],
            });
        };
        let mut command = self.command.clone();
        if let CommandBody::Fetch { sequence_set, .. }
        | CommandBody::Store { sequence_set, .. }
        | CommandBody::Copy { sequence_set, .. }
        | CommandBody::Move { sequence_set, .. } = &mut command.body
        {
            *sequence_set = numbers;
        }
        Ok(vec![Output::Resume(command)])
    }
}

#[cfg(test)]
mod tests;
