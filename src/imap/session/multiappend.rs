//! MULTIAPPEND (RFC 3502) toward the provider: the messages the intake
//! took apart ([`crate::imap::intake::multiappend`]) reach the session as
//! APPENDs with the command's tag, announced in order by
//! [`crate::imap::intake::Event::AppendPart`]. Each is sealed exactly as a single
//! APPEND is ([`crate::imap::append::seal_append`]), but on the session's
//! thread as it arrives (a single APPEND is sealed on the pool; moving
//! these too is left to do: at most `imap.max_literal_size` octets of
//! messages per command), written with a
//! non-synchronising literal, and appended to the one command that goes
//! to the provider when the last message is in: the provider appends all
//! or none (RFC 3502 §3). It goes out as a passed line
//! ([`super::passthrough`]), so it keeps its place among writ's commands;
//! the provider's tagged answer (`[APPENDUID v a:b]`, `[TRYCREATE]`)
//! passes on as the provider wrote it.
//!
//! A message that cannot be sealed, or a command the intake refused, is
//! answered once at its end (NO, BAD) and nothing is sent: nothing is
//! appended. A message imap-codec cannot parse is answered BAD by the
//! parse-error path; the rest of that command is then dropped unanswered.
//!
//! Memory: the sealed messages of the one command being read, bounded by
//! `imap.max_literal_size` octets of messages in all (sealing adds a few
//! percent) and [`crate::imap::intake::multiappend::MAX_MESSAGES`];
//! each plaintext is dropped once sealed. The announcements waiting for
//! their APPEND are at most one per message line of one read.
//!
//! The capability is offered only when the provider offers both
//! MULTIAPPEND and LITERAL+ ([`crate::imap::capabilities`]); a MULTIAPPEND
//! is sent on only once a capability list from the provider (greeting,
//! LOGIN's `[CAPABILITY]`, CAPABILITY) said so, and refused BAD
//! ([`NOT_OFFERED`]) before.

use std::collections::VecDeque;

use imap_codec::CommandCodec;
use imap_codec::encode::Encoder;
use imap_next::imap_types::command::{Command, CommandBody};
use imap_next::imap_types::core::LiteralMode;
use imap_next::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_next::imap_types::response::StatusKind;

use super::Session;
use crate::admin::names;
use crate::imap::append;
use crate::imap::intake::multiappend::Next;

/// What a MULTIAPPEND is told before writ has seen the provider offer it
/// (with LITERAL+) in a capability list (tagged BAD).
pub(super) const NOT_OFFERED: &str =
    "MULTIAPPEND is not offered: the provider lacks MULTIAPPEND or LITERAL+";

#[derive(Debug, Default)]
pub(super) struct MultiAppends {
    /// The provider's capabilities, as writ passed them on, included
    /// MULTIAPPEND (which writ passes only with LITERAL+). Until then a
    /// MULTIAPPEND is refused: its non-synchronising literals would
    /// desynchronise a provider without LITERAL+.
    pub(super) offered: std::cell::Cell<bool>,
    /// What follows each message announced by the intake, in order.
    announced: VecDeque<(Vec<u8>, Next)>,
    /// The command being read.
    current: Option<Reading>,
}

#[derive(Debug)]
struct Reading {
    tag: Vec<u8>,
    /// The command for the provider so far (without its final CRLF).
    bytes: Vec<u8>,
    /// Messages read so far.
    messages: usize,
    /// Why nothing will be sent (NO), once known.
    refusal: Option<append::Refusal>,
    /// A message was answered BAD already: the rest is dropped silently.
    failed: bool,
}

impl MultiAppends {
    pub(super) fn announce(&mut self, tag: Vec<u8>, next: Next) {
        self.announced.push_back((tag, next));
    }

    /// Is `command` a message of a MULTIAPPEND?
    pub(super) fn is_part(&self, command: &Command<'_>) -> bool {
        matches!(command.body, CommandBody::Append { .. })
            && self
                .announced
                .front()
                .is_some_and(|(t, _)| t.as_slice() == command.tag.inner().as_bytes())
    }

    /// A command tagged `tag` could not be parsed: if it was a message of
    /// a MULTIAPPEND, the command fails. Returns whether it was answered
    /// already (a message before it failed).
    pub(super) fn unparsed(&mut self, tag: &[u8]) -> bool {
        let Some((_, next)) = self.announced.pop_front_if(|(t, _)| t == tag) else {
            return false;
        };
        let answered = self
            .current
            .as_ref()
            .is_some_and(|r| r.tag == tag && r.failed);
        self.current = match next {
            Next::More => Some(Reading {
                tag: tag.to_vec(),
                bytes: Vec::new(),
                messages: 0,
                refusal: None,
                failed: true,
            }),
            Next::Last | Next::Refused(_) => None,
        };
        answered
    }

    /// A fresh flow faces the client: what was announced on the old one goes.
    pub(super) fn client_reset(&mut self) {
        self.announced.clear();
        self.current = None;
    }
}

impl Session {
    /// One message of a MULTIAPPEND (`is_part` said so).
    pub(super) fn append_part(&mut self, command: Command<'static>) {
        let Some((tag, next)) = self.multiappend.announced.pop_front() else {
            return;
        };
        let mut reading = match self.multiappend.current.take() {
            Some(r) if r.tag == tag => r,
            _ => Reading {
                tag: tag.clone(),
                bytes: Vec::new(),
                messages: 0,
                refusal: None,
                failed: false,
            },
        };
        let command_tag = command.tag.clone();
        if !reading.failed && reading.refusal.is_none() {
            match append::seal_append(command, &self.sealer) {
                Ok(sealed) => push_message(&mut reading, sealed),
                Err(refusal) => {
                    reading.refusal = Some(refusal);
                    reading.bytes = Vec::new();
                }
            }
        }
        match next {
            Next::More => self.multiappend.current = Some(reading),
            Next::Refused(why) => {
                if !reading.failed {
                    tracing::info!(limit = why, "MULTIAPPEND over a limit refused");
                    self.refuse(command_tag, StatusKind::Bad, why);
                }
            }
            Next::Last if reading.failed => {}
            Next::Last if !self.multiappend.offered.get() => {
                self.refuse(command_tag, StatusKind::Bad, NOT_OFFERED);
            }
            Next::Last => match reading.refusal {
                Some(refusal) => {
                    metrics::counter!(names::IMAP_APPENDS_TOTAL, "outcome" => "refused")
                        .increment(reading.messages as u64 + 1);
                    self.refuse(command_tag, StatusKind::No, refusal.text());
                }
                None => {
                    metrics::counter!(names::IMAP_APPENDS_TOTAL, "outcome" => "sealed")
                        .increment(reading.messages as u64);
                    let mut bytes = reading.bytes;
                    bytes.extend_from_slice(b"\r\n");
                    self.forward_line(command_tag, bytes);
                }
            },
        }
    }
}

/// Adds the sealed APPEND `sealed` to the command being read: all of it
/// for the first message, from its flags on for the others (their
/// `<tag> APPEND INBOX` is the intake's placeholder).
fn push_message(reading: &mut Reading, sealed: Command<'static>) {
    let Command { tag, body } = sealed;
    let CommandBody::Append {
        mailbox,
        flags,
        date,
        message,
    } = body
    else {
        return;
    };
    let message = match message {
        LiteralOrLiteral8::Literal(l) => LiteralOrLiteral8::Literal(l.into_non_sync()),
        LiteralOrLiteral8::Literal8(mut l) => {
            l.mode = LiteralMode::NonSync;
            LiteralOrLiteral8::Literal8(l)
        }
    };
    let first = reading.messages == 0;
    let placeholder = [tag.inner().as_bytes(), b" APPEND INBOX"].concat();
    let encoded = CommandCodec::default()
        .encode(&Command {
            tag,
            body: CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            },
        })
        .dump();
    let encoded = encoded.strip_suffix(b"\r\n").unwrap_or(&encoded);
    let part = if first {
        Some(encoded)
    } else {
        encoded.strip_prefix(placeholder.as_slice())
    };
    match part {
        Some(part) => {
            reading.bytes.extend_from_slice(part);
            reading.messages += 1;
        }
        None => {
            // Cannot happen (the placeholder is written as read).
            reading.refusal = Some(append::Refusal::Unsendable);
            reading.bytes = Vec::new();
        }
    }
}
