//! The client's bytes before imap-next parses them: the caps that must hold
//! before any parsing or re-encoding work is done on a command.
//!
//! [`Intake`] splits the client's stream the way imap-next's fragmentizer
//! does (lines, and literals announced by `{N}` / `{N+}` at a line's end)
//! and holds each line until its LF, so that a line is handed on only
//! once it is known to fit. Literal data is handed on as it comes (imap-next
//! checks each literal against `imap.max_literal_size` and answers BAD
//! itself to a synchronising literal that is too large).
//!
//! Caps, per command (a command is its lines and literals up to the line
//! that announces no literal):
//!
//! - [`MAX_COMMAND_TEXT`] octets of command text (everything but literal
//!   data), as Dovecot's default `imap_max_line_length`;
//! - [`MAX_LITERALS`] literals;
//! - [`MAX_SEQUENCE_ELEMENTS`] sequence-set elements (counted as the
//!   commas outside quoted strings: an upper bound, before parsing);
//! - a non-synchronising literal larger than `imap.max_literal_size`
//!   cannot be refused without losing the stream's framing: the command is
//!   answered BAD and the connection closed (RFC 7888 §4);
//! - before login, [`MAX_PRELOGIN_LITERAL`] octets of literal data in all
//!   (a password or SASL token fits; Dovecot's login process takes a few
//!   KiB): a synchronising literal over it is answered BAD (no
//!   continuation is sent), a non-synchronising one BAD and the connection
//!   closed. Pre-login, imap-next so never holds more than that plus the
//!   command text, whatever `imap.max_literal_size` says. The session
//!   lifts this cap with [`Intake::logged_in`] when a login succeeds;
//!   bytes pipelined behind the LOGIN and taken in before its OK are held
//!   to it.
//!
//! A command over a cap is answered with a tagged BAD naming the cap (an
//! untagged `* BAD` when no tag could be read) and is never parsed. If
//! nothing of it had reached imap-next yet (the cap was hit on its first
//! line) the rest of that line is skipped and the session goes on;
//! otherwise the connection is closed after the BAD, since imap-next holds
//! a half command that can never be completed.
//!
//! Work and memory are linear in the input and bounded by the caps: one
//! held line of at most [`MAX_COMMAND_TEXT`] octets.
//!
//! A `$` (SEARCHRES) where a set may stand is written as a set imap-codec
//! parses, at most [`super::saved_result::MAX_MARKS`] per command; the
//! client's own 4294967295:4294967295 standing alone there is refused
//! ([`super::saved_result`]). The RETURN options of SEARCH and SORT are
//! taken off the line and written into the command's tag
//! ([`super::search_return`]); a client's tag holding that mark is
//! refused.
//!
//! After login, an APPEND with several messages (MULTIAPPEND, RFC 3502)
//! is taken apart into one APPEND per message with the command's tag,
//! announced to the session by [`Event::AppendPart`], with caps of its own
//! on messages and octets per command ([`multiappend`]).
//!
//! Under COMPRESS=DEFLATE the intake sees the inflated bytes
//! ([`super::compress`] inflates them a step at a time), so every cap here
//! holds for them as for plain ones.
//!
//! After parsing, [`check`] caps what the parser bounds only by the line
//! length: the number of FETCH items ([`MAX_FETCH_ITEMS`]) and of SEARCH
//! (and SORT, THREAD) keys ([`MAX_SEARCH_KEYS`] in all, [`MAX_SEARCH_STRING_KEYS`] that
//! match strings against the message, which writ evaluates itself over
//! sealed mail: each such key is one more pass over every message). SEARCH
//! nesting is capped by imap-codec itself (9 levels; deeper is a parse
//! error, answered BAD); the keys are counted without recursion.

use imap_next::imap_types::command::{Command, CommandBody};
use imap_next::imap_types::fetch::MacroOrMessageDataItemNames;
use imap_next::imap_types::search::SearchKey;

/// Octets of command text (all but literal data) one command may have.
/// Dovecot's default `imap_max_line_length` is the same 64 KiB.
pub const MAX_COMMAND_TEXT: usize = 64 * 1024;
/// Literals one command may announce.
pub const MAX_LITERALS: usize = 128;
/// Sequence-set elements one command may have (all its sets together).
pub const MAX_SEQUENCE_ELEMENTS: usize = 16 * 1024;
/// Items one FETCH may name.
pub const MAX_FETCH_ITEMS: usize = 100;
/// Keys one SEARCH may have (AND, OR and NOT count as keys too).
pub const MAX_SEARCH_KEYS: usize = 256;
/// Keys one SEARCH may have that match a string against the message
/// (BODY, TEXT, HEADER, SUBJECT, FROM, TO, CC, BCC).
pub const MAX_SEARCH_STRING_KEYS: usize = 64;
/// Octets of literal data one command may carry before login.
pub const MAX_PRELOGIN_LITERAL: u64 = 64 * 1024;

/// What the client's bytes come to, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Bytes for imap-next.
    Bytes(Vec<u8>),
    /// The next APPEND command tagged `tag` is one message of a
    /// MULTIAPPEND (RFC 3502), ended by the CRLF that follows this event;
    /// `next` says what follows it ([`multiappend`]).
    AppendPart {
        tag: Vec<u8>,
        next: multiappend::Next,
    },
    /// A command over a cap: answer BAD with `tag` (untagged if `None`)
    /// and `why`; close the connection afterwards if `close`.
    Refused {
        tag: Option<Vec<u8>>,
        why: &'static str,
        close: bool,
    },
    /// The next command, tagged `tag`, is an extended LIST
    /// ([`super::list_extended`]): its line (CRLF-terminated, as the
    /// client sent it) goes to the provider as it is; a `NOOP` with its
    /// tag went on to imap-next in its place.
    Passthrough { tag: Vec<u8>, line: Vec<u8> },
}

/// Which cap a command hit: the text the client is told.
pub mod why {
    pub const TEXT: &str =
        "Command too long: at most 65536 octets of command text (literals aside)";
    pub const LITERALS: &str = "Too many literals in one command: at most 128";
    pub const ELEMENTS: &str = "Sequence set too large: at most 16384 elements in one command";
    pub const NONSYNC: &str =
        "Non-synchronising literal larger than the literal size limit: closing";
    pub const FETCH_ITEMS: &str = "Too many FETCH items: at most 100";
    pub const SEARCH_KEYS: &str = "Too many SEARCH keys: at most 256";
    pub const SEARCH_STRING_KEYS: &str =
        "Too many BODY/TEXT/HEADER/SUBJECT/FROM/TO/CC/BCC keys in one SEARCH: at most 64";
    pub const PRELOGIN_LITERAL: &str =
        "Literal too large before login: at most 65536 octets of literals per command";
    pub const RESERVED_TAG: &str = "Tags holding !writ-return. are reserved by the proxy";
    pub const PRELOGIN_NONSYNC: &str =
        "Non-synchronising literal too large before login (at most 65536 octets): closing";
}

#[derive(Debug, Default)]
pub struct Intake {
    max_literal_size: u32,
    /// The line being received (command text), up to its LF.
    line: Vec<u8>,
    /// Command text of the current command in lines already handed on.
    text: usize,
    literals: usize,
    commas: usize,
    /// Inside a quoted string (at the end of `line` or of the last line).
    quoted: bool,
    escaped: bool,
    /// The current command's tag, read from its first line.
    tag: Option<Vec<u8>>,
    /// Literal data still to hand on.
    literal_left: u64,
    /// Literal data of a refused command, still to drop.
    drop_left: u64,
    /// A refused first line: its bytes are dropped up to its LF. The tail
    /// is kept to see whether it announced a literal.
    skipping: bool,
    /// Something of the current command has reached imap-next.
    started: bool,
    /// Literal data the current command announced so far.
    literal_octets: u64,
    /// A login succeeded: [`MAX_PRELOGIN_LITERAL`] no longer applies.
    logged_in: bool,
    /// What the line just completed announces (an extended LIST, a
    /// MULTIAPPEND's message): handed on before its bytes.
    returned: Vec<Event>,
    /// The `$`s of the current command ([`super::saved_result`]).
    dollars: super::saved_result::Marker,
    /// Lines changed on their way (RETURN options moved into the tag, a
    /// `$` written as a set).
    rewritten: u64,
    /// The current command is an APPEND whose mailbox is not a literal:
    /// what is known of it as a MULTIAPPEND ([`multiappend`]).
    append: Option<multiappend::Append>,
}

impl Intake {
    pub fn new(max_literal_size: u32) -> Intake {
        Intake {
            max_literal_size,
            ..Intake::default()
        }
    }

    /// Lines the intake changed on their way so far.
    pub fn lines_rewritten(&self) -> u64 {
        self.rewritten
    }

    /// A login succeeded: literals up to `imap.max_literal_size` from now.
    pub fn logged_in(&mut self) {
        self.logged_in = true;
    }

    /// Splits `bytes` into what goes on to imap-next and what is refused.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<Event> {
        let mut out: Vec<Event> = Vec::new();
        let mut pass: Vec<u8> = Vec::new();
        while !bytes.is_empty() {
            if self.drop_left > 0 || self.literal_left > 0 {
                let left = self.drop_left.max(self.literal_left);
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                if self.literal_left > 0 {
                    pass.extend_from_slice(&bytes[..n]);
                    self.literal_left -= n as u64;
                } else {
                    self.drop_left -= n as u64;
                }
                bytes = &bytes[n..];
                continue;
            }
            let (chunk, complete) = match bytes.iter().position(|&b| b == b'\n') {
                Some(p) => (&bytes[..=p], true),
                None => (bytes, false),
            };
            bytes = &bytes[chunk.len()..];
            if self.skipping {
                self.line.extend_from_slice(chunk);
                self.line = tail(&self.line);
                if complete && let Some(closing) = self.finish_skip() {
                    flush(&mut out, &mut pass);
                    out.push(closing);
                    return out;
                }
                continue;
            }
            self.scan(chunk);
            self.line.extend_from_slice(chunk);
            let over = if self.text + self.line.len() > MAX_COMMAND_TEXT {
                Some(why::TEXT)
            } else if self.commas >= MAX_SEQUENCE_ELEMENTS {
                Some(why::ELEMENTS)
            } else if complete {
                self.end_of_line().err()
            } else {
                None
            };
            if let Some(why) = over {
                flush(&mut out, &mut pass);
                let close = self.refuse(why, &mut out);
                if !close
                    && complete
                    && let Some(closing) = self.finish_skip()
                {
                    out.push(closing);
                    return out;
                }
                if close {
                    return out;
                }
                continue;
            }
            if complete {
                if !self.returned.is_empty() {
                    flush(&mut out, &mut pass);
                    out.append(&mut self.returned);
                }
                pass.append(&mut self.line);
            }
        }
        flush(&mut out, &mut pass);
        out
    }

    /// Counts commas outside quoted strings in new command text.
    fn scan(&mut self, chunk: &[u8]) {
        for &b in chunk {
            if self.quoted {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.quoted = false;
                }
            } else if b == b'"' {
                self.quoted = true;
            } else if b == b',' {
                self.commas += 1;
            }
        }
    }

    /// A complete line within the length caps: is it the end of the
    /// command, or does it announce a literal?
    fn end_of_line(&mut self) -> Result<(), &'static str> {
        if self.started && self.append.is_some() {
            return self.append_line();
        }
        if self.started {
            let before = self.line.len();
            self.dollars.next_line(&mut self.line)?;
            if self.line.len() != before {
                self.rewritten += 1;
            }
        } else {
            self.tag = tag_of(&self.line);
            self.append = self
                .tag
                .as_deref()
                .filter(|_| self.logged_in)
                .and_then(|tag| multiappend::Append::starts(tag, &self.line));
            let first_word = self.line.split(|&b| b == b' ').next().unwrap_or_default();
            if first_word
                .windows(super::search_return::TAG_MARK.len())
                .any(|w| w == super::search_return::TAG_MARK.as_bytes())
            {
                return Err(why::RESERVED_TAG);
            }
            if self.tag.is_some()
                && let Some((line, _)) = super::search_return::take_return(&self.line)
            {
                // The options go on in the command's tag.
                self.line = line;
                self.rewritten += 1;
            }
            let before = self.line.len();
            self.dollars.first_line(&mut self.line)?;
            if self.line.len() != before {
                self.rewritten += 1;
            }
            if let Some(tag) = &self.tag {
                match super::list_extended::classify(&self.line) {
                    super::list_extended::Line::Other => {}
                    super::list_extended::Line::Refused(why) => return Err(why),
                    super::list_extended::Line::Extended => {
                        let mut line = self.line.clone();
                        while line.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
                            line.pop();
                        }
                        line.extend_from_slice(b"\r\n");
                        self.returned.push(Event::Passthrough {
                            tag: tag.clone(),
                            line,
                        });
                        self.line = [tag.as_slice(), b" NOOP\r\n"].concat();
                    }
                }
            }
        }
        // A quoted string cannot span lines.
        self.quoted = false;
        self.escaped = false;
        match announcement(&self.line) {
            None => {
                self.end_command();
                Ok(())
            }
            Some((length, non_sync)) => {
                if self.literals + 1 > MAX_LITERALS {
                    return Err(why::LITERALS);
                }
                let total = self.literal_octets.saturating_add(length);
                if !self.logged_in && total > MAX_PRELOGIN_LITERAL {
                    return Err(if non_sync {
                        why::PRELOGIN_NONSYNC
                    } else {
                        why::PRELOGIN_LITERAL
                    });
                }
                if length > u64::from(self.max_literal_size) {
                    if non_sync {
                        return Err(why::NONSYNC);
                    }
                    // imap-next answers BAD; the client sends no literal and
                    // the command is over. Under the client's own tag.
                    self.unmark_tag();
                    self.end_command();
                    return Ok(());
                }
                self.literals += 1;
                self.literal_octets = total;
                self.text += self.line.len();
                self.started = true;
                self.literal_left = length;
                if let Some(append) = &mut self.append {
                    append.first_message(length);
                }
                Ok(())
            }
        }
    }

    /// The line's tag as the client wrote it, RETURN options dropped:
    /// imap-next answers this command itself (BAD).
    fn unmark_tag(&mut self) {
        let Some(tag) = &self.tag else {
            return;
        };
        let Some(space) = self.line.iter().position(|&b| b == b' ') else {
            return;
        };
        if self.line[..space] != tag[..] {
            self.line = [&tag[..], &self.line[space..]].concat();
        }
    }

    fn end_command(&mut self) {
        self.text = 0;
        self.literals = 0;
        self.commas = 0;
        self.literal_octets = 0;
        self.tag = None;
        self.started = false;
        self.append = None;
        self.dollars.end();
    }

    /// The command whose line is in `line` is over a cap: its refusal goes
    /// to `out`. Returns whether the connection must close. If not, the
    /// rest of the line is dropped.
    fn refuse(&mut self, why: &'static str, out: &mut Vec<Event>) -> bool {
        // The tag read from the first line: the client's own, not the one
        // RETURN options were written into.
        let tag = if self.started {
            self.tag.take()
        } else {
            self.tag.take().or_else(|| tag_of(&self.line))
        };
        let close = self.started || why == why::NONSYNC || why == why::PRELOGIN_NONSYNC;
        out.push(Event::Refused { tag, why, close });
        // What the refused line announced (RETURN options) goes with it.
        self.returned.clear();
        self.line = tail(&self.line);
        self.end_command();
        self.quoted = false;
        self.escaped = false;
        self.skipping = !close;
        close
    }

    /// The LF of a dropped line. A synchronising literal announced there is
    /// never sent (the client got BAD, not a continuation); a
    /// non-synchronising one within the literal limit is dropped too; a
    /// larger one cannot be followed: `Some` refusal that closes.
    fn finish_skip(&mut self) -> Option<Event> {
        self.skipping = false;
        let announced = announcement(&self.line);
        self.line.clear();
        match announced {
            Some((length, true)) if length <= u64::from(self.max_literal_size) => {
                // The literal, then the rest of the command, are dropped.
                self.drop_left = length;
                self.skipping = true;
                None
            }
            Some((_, true)) => Some(Event::Refused {
                tag: None,
                why: why::NONSYNC,
                close: true,
            }),
            _ => None,
        }
    }
}

fn flush(out: &mut Vec<Event>, pass: &mut Vec<u8>) {
    if !pass.is_empty() {
        out.push(Event::Bytes(std::mem::take(pass)));
    }
}

/// The last octets of a line: enough to read a literal announcement.
fn tail(line: &[u8]) -> Vec<u8> {
    line[line.len().saturating_sub(16)..].to_vec()
}

/// The tag of a command line: its first word, if it is a valid tag.
fn tag_of(line: &[u8]) -> Option<Vec<u8>> {
    let end = line.iter().position(|&b| b == b' ')?;
    let tag = &line[..end];
    let valid = !tag.is_empty()
        && tag.len() <= 64
        && tag.iter().all(|&b| {
            b.is_ascii_graphic()
                && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b'+')
        });
    valid.then(|| tag.to_vec())
}

/// `{N}` or `{N+}` at the end of a complete line (before CRLF or LF), as
/// imap-next's fragmentizer reads it: `(N, non-synchronising)`.
fn announcement(line: &[u8]) -> Option<(u64, bool)> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_suffix(b"}")?;
    let (line, non_sync) = match line.strip_suffix(b"+") {
        Some(l) => (l, true),
        None => (line, false),
    };
    let open = line.iter().rposition(|&b| b == b'{')?;
    let digits = &line[open + 1..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((u64::from(n), non_sync))
}

/// Caps checked on a parsed command: `Err` with the text of its BAD.
pub fn check(command: &Command<'_>) -> Result<(), &'static str> {
    if let CommandBody::Fetch {
        macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(items),
        ..
    } = &command.body
        && items.len() > MAX_FETCH_ITEMS
    {
        return Err(why::FETCH_ITEMS);
    }
    match &command.body {
        CommandBody::Search { criteria, .. }
        | CommandBody::Sort {
            search_criteria: criteria,
            ..
        }
        | CommandBody::Thread {
            search_criteria: criteria,
            ..
        } => search_keys_within_caps(criteria.as_ref())?,
        _ => {}
    }
    Ok(())
}

/// Counts the keys of a SEARCH (with an explicit stack, stopping at the
/// first cap exceeded).
fn search_keys_within_caps(criteria: &[SearchKey<'_>]) -> Result<(), &'static str> {
    let mut stack: Vec<&SearchKey<'_>> = criteria.iter().collect();
    let (mut keys, mut strings) = (0usize, 0usize);
    while let Some(key) = stack.pop() {
        keys += 1;
        if keys > MAX_SEARCH_KEYS {
            return Err(why::SEARCH_KEYS);
        }
        match key {
            SearchKey::And(inner) => stack.extend(inner.as_ref().iter()),
            SearchKey::Or(a, b) => stack.extend([a.as_ref(), b.as_ref()]),
            SearchKey::Not(k) => stack.push(k.as_ref()),
            SearchKey::Body(_)
            | SearchKey::Text(_)
            | SearchKey::Header(..)
            | SearchKey::Subject(_)
            | SearchKey::From(_)
            | SearchKey::To(_)
            | SearchKey::Cc(_)
            | SearchKey::Bcc(_) => {
                strings += 1;
                if strings > MAX_SEARCH_STRING_KEYS {
                    return Err(why::SEARCH_STRING_KEYS);
                }
            }
            _ => {}
        }
        if stack.len() > MAX_SEARCH_KEYS {
            return Err(why::SEARCH_KEYS);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

pub mod multiappend;
