//! MULTIAPPEND (RFC 3502) toward the provider: the messages the intake
//! took apart ([`crate::imap::intake::multiappend`]) reach the session as
//! APPENDs with the command's tag, announced in order by
//! [`crate::imap::intake::Event::AppendPart`]. Each is sealed exactly as a single
//! APPEND is ([`crate::imap::append::seal_append`]), off the session: a
//! job on the opening pool as it arrives, while the next is read; once the
//! last is in, the command is the session's plan ([`MultiAppendPlan`],
//! what the client sends after it waits) until every message is sealed.
//! Each is written with a
//! non-synchronising literal, and appended to the one command that goes
//! to the provider when the last message is in: the provider appends all
//! or none (RFC 3502 §3). It goes out as a passed line
//! ([`super::passthrough`]), so it keeps its place among writ's commands;
//! the provider's tagged answer (`[APPENDUID v a:b]`, `[TRYCREATE]`)
//! passes on as the provider wrote it.
//!
//! A message that cannot be sealed (or whose sealing job was lost), or a
//! command the intake refused, is answered once at its end (NO, BAD) and
//! nothing is sent: nothing is appended. A message imap-codec cannot parse is answered BAD by the
//! parse-error path; the rest of that command is then dropped unanswered.
//!
//! Memory: the sealed messages of the one command being read, bounded by
//! `imap.max_literal_size` octets of messages in all (sealing adds a few
//! percent) and [`crate::imap::intake::multiappend::MAX_MESSAGES`];
//! each plaintext is held by its job until sealed, then dropped. The announcements waiting for
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

use imap_next::imap_types::core::Tag;

use super::plan::Plan;
use super::{Session, tagged};
use crate::admin::names;
use crate::imap::append;
use crate::imap::fetch::Output;
use crate::imap::fetch::opening::Pending;
use crate::imap::intake::multiappend::Next;

/// What a MULTIAPPEND is told before writ has seen the provider offer it
/// (with LITERAL+) in a capability list (tagged BAD).
pub(super) const NOT_OFFERED: &str =
    "MULTIAPPEND is not offered: the provider lacks MULTIAPPEND or LITERAL+";

#[derive(Default)]
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
    /// Sealing jobs of commands that were refused or failed: their results
    /// are dropped, but they count until they end.
    orphans: Vec<Sealing>,
    /// Sealing jobs not ended yet, as of the last [`MultiAppends::poll_jobs`]
    /// (or started since): while `opening::in_flight` are, the session
    /// reads no more of the client ([`Session::wants_client_input`]), so
    /// one session never queues more than that on the shared pool.
    running: usize,
}

impl std::fmt::Debug for MultiAppends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiAppends")
            .field("announced", &self.announced.len())
            .field("reading", &self.current.as_ref().map(|r| r.sealing.len()))
            .field("running", &self.running)
            .finish()
    }
}

type SealResult = Result<Command<'static>, append::Refusal>;

/// One message's sealing job and, once it ended, its result (`None`:
/// the job was lost).
struct Sealing {
    pending: Pending<SealResult>,
    result: Option<Option<SealResult>>,
}

impl Sealing {
    /// Has it ended? Takes the result when it has.
    fn poll(&mut self) -> bool {
        if self.result.is_none() {
            self.result = self.pending.take();
        }
        self.result.is_some()
    }
}

struct Reading {
    tag: Vec<u8>,
    /// Each message read so far, being sealed on the pool, in order.
    sealing: Vec<Sealing>,
    /// A message was answered BAD already: the rest is dropped silently.
    failed: bool,
}

/// A MULTIAPPEND whose last message is in, its messages still being
/// sealed on the pool: once all are, the one command goes to the provider
/// (or `NO` to the client when one could not be sealed), and the plan is
/// over.
pub(crate) struct MultiAppendPlan {
    tag: Tag<'static>,
    sealing: Vec<Sealing>,
    done: bool,
}

impl MultiAppendPlan {
    pub(crate) fn working(&self) -> bool {
        !self.done
    }

    /// The command for the provider (or the client's NO) once every
    /// message is sealed; nothing before.
    pub(crate) fn poll(&mut self) -> Vec<Output> {
        if self.done {
            return Vec::new();
        }
        let mut ended = true;
        for sealing in &mut self.sealing {
            ended &= sealing.poll();
        }
        if !ended {
            return Vec::new();
        }
        self.done = true;
        let mut reading = Building {
            bytes: Vec::new(),
            messages: 0,
            refusal: None,
        };
        for sealed in self.sealing.drain(..).filter_map(|s| s.result) {
            match sealed {
                Some(Ok(command)) => push_message(&mut reading, command),
                Some(Err(refusal)) => reading.refusal = Some(refusal),
                None => {
                    tracing::warn!("MULTIAPPEND refused: a sealing job was lost");
                    reading.refusal = Some(append::Refusal::SealFailed);
                }
            }
            if reading.refusal.is_some() {
                break;
            }
        }
        match reading.refusal {
            Some(refusal) => {
                // The messages up to the one that failed, as before.
                metrics::counter!(names::IMAP_APPENDS_TOTAL, "outcome" => "refused")
                    .increment(reading.messages as u64 + 1);
                vec![Output::Finish(tagged(
                    self.tag.clone(),
                    StatusKind::No,
                    refusal.text(),
                ))]
            }
            None => {
                metrics::counter!(names::IMAP_APPENDS_TOTAL, "outcome" => "sealed")
                    .increment(reading.messages as u64);
                let mut bytes = reading.bytes;
                bytes.extend_from_slice(b"\r\n");
                vec![
                    Output::ToProviderLine(self.tag.clone(), bytes),
                    Output::Over,
                ]
            }
        }
    }
}

/// The command for the provider being written from the sealed messages.
struct Building {
    /// So far, without its final CRLF.
    bytes: Vec<u8>,
    messages: usize,
    /// Why nothing will be sent (NO).
    refusal: Option<append::Refusal>,
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
        if let Some(old) = self.current.take() {
            self.orphans.extend(old.sealing);
        }
        self.current = match next {
            Next::More => Some(Reading {
                tag: tag.to_vec(),
                sealing: Vec::new(),
                failed: true,
            }),
            Next::Last | Next::Refused(_) => None,
        };
        answered
    }

    /// A fresh flow faces the client: what was announced on the old one goes.
    pub(super) fn client_reset(&mut self) {
        self.announced.clear();
        if let Some(old) = self.current.take() {
            self.orphans.extend(old.sealing);
        }
    }

    /// Takes what the sealing jobs of the command being read and of the
    /// dropped ones have done; drops ended orphans. Returns how many run.
    pub(super) fn poll_jobs(&mut self) -> usize {
        self.orphans.retain_mut(|s| !s.poll());
        let reading = self.current.as_mut().map_or(0, |r| {
            r.sealing
                .iter_mut()
                .map(|s| !s.poll())
                .filter(|&running| running)
                .count()
        });
        self.running = self.orphans.len() + reading;
        self.running
    }

    /// Sealing jobs running, as of the last [`MultiAppends::poll_jobs`].
    pub(super) fn running(&self) -> usize {
        self.running
    }
}

impl Session {
    /// One message of a MULTIAPPEND (`is_part` said so): sealed on the
    /// pool while the next one is read; at the last one the command
    /// becomes the session's plan until all are sealed.
    pub(super) fn append_part(&mut self, command: Command<'static>) {
        let Some((tag, next)) = self.multiappend.announced.pop_front() else {
            return;
        };
        let mut reading = match self.multiappend.current.take() {
            Some(r) if r.tag == tag => r,
            _ => Reading {
                tag: tag.clone(),
                sealing: Vec::new(),
                failed: false,
            },
        };
        let command_tag = command.tag.clone();
        // Nothing is sealed for a command that will be refused anyway.
        let refused = matches!(next, Next::Refused(_)) || !self.multiappend.offered.get();
        if !reading.failed && !refused {
            let sealer = self.sealer.clone();
            let bytes = append::message_len(&command);
            reading.sealing.push(Sealing {
                pending: self
                    .runner
                    .spawn_sized(bytes, move || append::seal_append(command, &sealer)),
                result: None,
            });
            self.multiappend.running += 1;
        }
        match next {
            Next::More => self.multiappend.current = Some(reading),
            Next::Refused(why) => {
                if !reading.failed {
                    tracing::info!(limit = why, "MULTIAPPEND over a limit refused");
                    self.refuse(command_tag, StatusKind::Bad, why);
                }
                self.multiappend.orphans.extend(reading.sealing);
            }
            Next::Last if reading.failed => {
                self.multiappend.orphans.extend(reading.sealing);
            }
            Next::Last if !self.multiappend.offered.get() => {
                self.refuse(command_tag, StatusKind::Bad, NOT_OFFERED);
                self.multiappend.orphans.extend(reading.sealing);
            }
            Next::Last => {
                self.plan = Some(Plan::MultiAppend(MultiAppendPlan {
                    tag: command_tag,
                    sealing: reading.sealing,
                    done: false,
                }));
                let out = self.plan.as_mut().map(Plan::poll).unwrap_or_default();
                self.apply(out);
            }
        }
    }
}

/// Adds the sealed APPEND `sealed` to the command being read: all of it
/// for the first message, from its flags on for the others (their
/// `<tag> APPEND INBOX` is the intake's placeholder).
fn push_message(reading: &mut Building, sealed: Command<'static>) {
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
