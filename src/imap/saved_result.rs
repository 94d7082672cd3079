//! SEARCHRES (RFC 5182): `SEARCH RETURN (SAVE)` keeps its result as `$`,
//! which later commands name in place of a sequence set.
//!
//! writ keeps `$` itself, in the session, as the UIDs of the saved
//! messages (compacted into ranges: [`super::sequence::compact`]), and
//! puts them in the place of `$` before a command goes anywhere: the
//! provider never sees a `$`, so writ's own evaluation of SEARCH over
//! sealed mail and the provider's of the rest name the same messages.
//! Kept by UID, a saved message another session expunges simply drops out
//! (RFC 5182 §2.1). `$` is empty at login and after SELECT, EXAMINE, CLOSE
//! and UNSELECT, and a SEARCH with SAVE that fails leaves it empty. A SAVE
//! search runs as a plan, so the commands behind it wait for it and find
//! its result (RFC 5182 §2.1's rule for pipelined commands).
//!
//! imap-codec 2.0.0-alpha.10 parses no `$`. So [`Marker`], run by the
//! intake over each line of a command before imap-next sees it, writes a
//! `$` that stands alone where a set may stand as the set [`SENTINEL`],
//! and counts them; once the command is parsed, [`place`] finds the
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
//!   `$` such a command is answered OK by writ (Dovecot does the same
//!   work: nothing), or BAD when no mailbox is selected. The `SEARCH UID`
//!   waits until the provider has answered the commands before it (the
//!   session's `Plan::Quiet`), so that its `* SEARCH` is its own.
//!
//! A command in which the sentinels found do not equal the `$`s marked
//! (a client that also wrote 4294967295 as an atom, or a `$` where a
//! number stands: `LARGER $`) is answered BAD. At most [`MAX_MARKS`]
//! `$`s per command. Work is linear in the command; the criteria tree is
//! walked with an explicit stack, never recursion.

use std::num::NonZeroU32;

use imap_next::imap_types::command::{Command, CommandBody};
use imap_next::imap_types::core::{AString, Atom, Charset, Tag, Vec1};
use imap_next::imap_types::response::{Status, StatusBody, StatusKind, Tagged};
use imap_next::imap_types::search::SearchKey;
use imap_next::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use super::fetch::Output;

/// What the intake writes in the place of a `$`: a set imap-codec parses.
pub const SENTINEL: &str = "4294967295";
/// `$`s one command may hold.
pub const MAX_MARKS: usize = 64;

/// Why a command with `$` is refused.
pub mod why {
    pub const MARKS: &str = "Too many $ in one command: at most 64";
    pub const MIXED: &str = "$ stands only where a sequence set may (and not beside 4294967295)";
    pub const UNSELECTED: &str = "No mailbox selected.";
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

    /// The command is over: how many `$`s it held.
    pub fn take(&mut self) -> usize {
        self.kind = None;
        std::mem::take(&mut self.marks)
    }

    fn mark(&mut self, line: &mut Vec<u8>, from: usize) -> Result<(), &'static str> {
        let at = match self.kind {
            Some(Kind::FirstSet) => dollar_at(line, from).into_iter().collect(),
            Some(Kind::Criteria) => dollars(line, from),
            None => Vec::new(),
        };
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

/// `$` standing alone at `at`.
fn dollar_at(line: &[u8], at: usize) -> Option<usize> {
    (line.get(at) == Some(&b'$') && ends_token(line.get(at + 1))).then_some(at)
}

/// Every `$` standing alone from `from` on, outside quoted strings.
fn dollars(line: &[u8], from: usize) -> Vec<usize> {
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
            b'$' if (i == from || matches!(line[i - 1], b' ' | b'('))
                && ends_token(line.get(i + 1)) =>
            {
                out.push(i)
            }
            _ => {}
        }
    }
    out
}

fn is_sentinel(set: &SequenceSet) -> bool {
    matches!(set.0.as_ref(), [Sequence::Single(SeqOrUid::Value(v))] if v.get() == u32::MAX)
}

fn sentinel_atom(s: &str) -> bool {
    s == SENTINEL
}

fn dollar_astring(s: &mut AString<'static>) -> bool {
    let AString::Atom(a) = s else {
        return false;
    };
    if !sentinel_atom(a.as_ref()) {
        return false;
    }
    match AString::try_from("$") {
        Ok(d) => *s = d,
        Err(_) => return false,
    }
    true
}

fn dollar_atom(a: &mut Atom<'static>) -> bool {
    if !sentinel_atom(a.as_ref()) {
        return false;
    }
    match Atom::try_from("$") {
        Ok(d) => *a = d,
        Err(_) => return false,
    }
    true
}

fn dollar_charset(c: &mut Charset<'static>) -> bool {
    match c {
        Charset::Atom(a) => dollar_atom(a),
        Charset::Quoted(_) => false,
    }
}

/// What a command with `$` comes to once the saved result is in place.
#[derive(Debug, PartialEq, Eq)]
pub enum Placed {
    /// It goes on as any command.
    Ready,
    /// A FETCH, STORE, COPY, MOVE or UID EXPUNGE over an empty `$`: the
    /// session answers it itself.
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

/// `criteria` with every sentinel in place (explicit stack, post-order
/// rebuild), and how many sentinels it held.
fn place_in_criteria(
    criteria: Vec1<SearchKey<'static>>,
    saved: Option<&SequenceSet>,
) -> (Vec1<SearchKey<'static>>, usize) {
    enum Work {
        Visit(SearchKey<'static>),
        And(usize),
        Or,
        Not,
    }
    let mut found = 0;
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
                        found += 1;
                        key = dollar_key(saved);
                    }
                    SearchKey::Bcc(s)
                    | SearchKey::Body(s)
                    | SearchKey::Cc(s)
                    | SearchKey::From(s)
                    | SearchKey::Subject(s)
                    | SearchKey::Text(s)
                    | SearchKey::To(s) => found += usize::from(dollar_astring(s)),
                    SearchKey::Header(name, value) => {
                        found += usize::from(dollar_astring(name));
                        found += usize::from(dollar_astring(value));
                    }
                    SearchKey::Keyword(a) | SearchKey::Unkeyword(a) => {
                        found += usize::from(dollar_atom(a));
                    }
                    _ => {}
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
    (Vec1::unvalidated(done), found)
}

/// Puts the saved result (`saved`: UIDs; `None` when empty) in the place
/// of the `marks` sentinels the intake wrote into `command`. `selected`:
/// a mailbox is selected. `Err`: the BAD text.
pub fn place(
    command: &mut Command<'static>,
    marks: usize,
    saved: Option<&SequenceSet>,
    selected: bool,
) -> Result<Placed, &'static str> {
    let (found, first_set) = match &mut command.body {
        CommandBody::Search {
            charset, criteria, ..
        } => {
            let (c, n) = place_in_criteria(criteria.clone(), saved);
            *criteria = c;
            let n = n + charset
                .as_mut()
                .map_or(0, |c| usize::from(dollar_charset(c)));
            (n, None)
        }
        CommandBody::Sort {
            charset,
            search_criteria,
            ..
        }
        | CommandBody::Thread {
            charset,
            search_criteria,
            ..
        } => {
            let (c, n) = place_in_criteria(search_criteria.clone(), saved);
            *search_criteria = c;
            (n + usize::from(dollar_charset(charset)), None)
        }
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
        } => (
            usize::from(is_sentinel(sequence_set)),
            Some((sequence_set, *uid)),
        ),
        CommandBody::ExpungeUid { sequence_set } => (
            usize::from(is_sentinel(sequence_set)),
            Some((sequence_set, true)),
        ),
        _ => (0, None),
    };
    if found != marks {
        return Err(why::MIXED);
    }
    let Some((set, uid)) = first_set else {
        return Ok(Placed::Ready);
    };
    match saved {
        None if !selected => Err(why::UNSELECTED),
        None => Ok(Placed::Empty),
        Some(saved) if uid => {
            *set = saved.clone();
            Ok(Placed::Ready)
        }
        Some(_) => Ok(Placed::Resolve),
    }
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
            },
            search,
        )
    }

    /// The provider's `* SEARCH`.
    pub fn on_search(&mut self, found: Vec<NonZeroU32>) {
        self.numbers.extend(found);
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
        let Some(numbers) = super::sequence::compact(&self.numbers) else {
            return Ok(vec![Output::Finish(empty_ok(tag))]);
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
