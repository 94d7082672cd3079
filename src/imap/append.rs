//! APPEND seals before the provider sees the message: drafts, sent copies
//! and imports go through here. A message that is already sealed is
//! passed on unchanged (sealing is idempotent); one that cannot be sealed
//! is refused (fail closed: nothing reaches the provider).
//!
//! A single APPEND is sealed off the session ([`AppendPlan`]): a job on
//! the opening pool, as opening is, so a large message (up to
//! `imap.max_literal_size`) never holds a runtime thread while it is
//! sealed. While it is sealed the APPEND is the session's plan: commands
//! the client sends after it wait behind it, and go to the provider after
//! the sealed APPEND, in the order the client sent them. A job that is
//! lost (it panicked) is answered NO as a seal that failed: nothing is
//! appended.

use imap_next::imap_types::command::{Command, CommandBody};
use imap_next::imap_types::core::{Literal, LiteralMode, Tag, Text};
use imap_next::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_next::imap_types::response::{Status, StatusBody, StatusKind, Tagged};

use crate::admin::names;
use crate::envelope::{Sealed, Sealer};
use crate::imap::fetch::Output;
use crate::imap::fetch::opening::{Pending, Runner};

/// An APPEND whose message is being sealed on the pool.
pub struct AppendPlan {
    tag: Tag<'static>,
    sealing: Pending<Result<Command<'static>, Refusal>>,
    done: bool,
}

impl AppendPlan {
    /// Starts sealing `command` (an APPEND) through `runner`.
    pub fn start(command: Command<'static>, sealer: &Sealer, runner: &Runner) -> AppendPlan {
        let tag = command.tag.clone();
        let sealer = sealer.clone();
        let bytes = message_len(&command);
        AppendPlan {
            tag,
            sealing: runner.spawn_sized(bytes, move || seal_append(command, &sealer)),
            done: false,
        }
    }

    /// The message is still being sealed.
    pub fn working(&self) -> bool {
        !self.done
    }

    /// Once sealed: the sealed APPEND for the provider (whose answer goes
    /// to the client as any command's), or NO for the client; and the
    /// plan is over either way. Nothing while the job runs.
    pub fn poll(&mut self) -> Vec<Output> {
        if self.done {
            return Vec::new();
        }
        let Some(sealed) = self.sealing.take() else {
            return Vec::new();
        };
        self.done = true;
        match sealed {
            Some(Ok(sealed)) => {
                metrics::counter!(names::IMAP_APPENDS_TOTAL, "outcome" => "sealed").increment(1);
                vec![Output::ToProvider(sealed), Output::Over]
            }
            refused => {
                metrics::counter!(names::IMAP_APPENDS_TOTAL, "outcome" => "refused").increment(1);
                let refusal = match refused {
                    Some(Err(refusal)) => refusal,
                    _ => {
                        tracing::warn!("APPEND refused: the sealing job was lost");
                        Refusal::SealFailed
                    }
                };
                let body = StatusBody {
                    kind: StatusKind::No,
                    code: None,
                    text: Text::unvalidated(refusal.text()),
                };
                vec![Output::Finish(Status::Tagged(Tagged {
                    tag: self.tag.clone(),
                    body,
                }))]
            }
        }
    }
}

/// Why an APPEND was not forwarded; the text goes to the client as NO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The seal failed (keys, temp space ...): try again later.
    SealFailed,
    /// The sealed message is not a valid IMAP literal (cannot happen for
    /// what the sealer writes; kept as a refusal rather than a panic).
    Unsendable,
}

impl Refusal {
    pub fn text(self) -> &'static str {
        match self {
            Refusal::SealFailed => "writ could not seal the message; nothing was stored",
            Refusal::Unsendable => "writ could not forward the sealed message; nothing was stored",
        }
    }
}

/// The size of an APPEND's message (0 for other commands): what sealing
/// it costs ([`Runner::spawn_sized`]).
pub fn message_len(command: &Command<'_>) -> usize {
    match &command.body {
        CommandBody::Append { message, .. } => match message {
            LiteralOrLiteral8::Literal(l) => l.data().len(),
            LiteralOrLiteral8::Literal8(l) => l.data.len(),
        },
        _ => 0,
    }
}

/// The APPEND with its message sealed; other commands unchanged.
pub fn seal_append(
    command: Command<'static>,
    sealer: &Sealer,
) -> Result<Command<'static>, Refusal> {
    let Command { tag, body } = command;
    let CommandBody::Append {
        mailbox,
        flags,
        date,
        message,
    } = body
    else {
        return Ok(Command { tag, body });
    };
    let (bytes, non_sync) = match &message {
        LiteralOrLiteral8::Literal(l) => (l.data(), l.mode() == LiteralMode::NonSync),
        LiteralOrLiteral8::Literal8(l) => (l.data.as_ref(), false),
    };
    let mut sealed = Vec::with_capacity(bytes.len() + bytes.len() / 3 + 4096);
    match sealer.seal(bytes, &mut sealed) {
        Ok(Sealed::Sealed { .. }) => {}
        Ok(Sealed::AlreadySealed { .. }) => {
            return Ok(Command {
                tag,
                body: CommandBody::Append {
                    mailbox,
                    flags,
                    date,
                    message,
                },
            });
        }
        Err(e) => {
            tracing::warn!(error = %e, "APPEND refused: cannot seal");
            return Err(Refusal::SealFailed);
        }
    }
    let literal = Literal::try_from(sealed).map_err(|_| Refusal::Unsendable)?;
    let literal = if non_sync {
        literal.into_non_sync()
    } else {
        literal
    };
    Ok(Command {
        tag,
        body: CommandBody::Append {
            mailbox,
            flags,
            date,
            message: LiteralOrLiteral8::Literal(literal),
        },
    })
}
