//! APPEND seals before the provider sees the message: drafts, sent copies
//! and imports go through here. A message that is already sealed is
//! passed on unchanged (sealing is idempotent); one that cannot be sealed
//! is refused (fail closed: nothing reaches the provider).

use imap_next::imap_types::command::{Command, CommandBody};
use imap_next::imap_types::core::{Literal, LiteralMode};
use imap_next::imap_types::extensions::binary::LiteralOrLiteral8;

use crate::envelope::{Sealed, Sealer};

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
