//! MULTIAPPEND (RFC 3502) taken apart before imap-codec, which parses one
//! message per APPEND.
//!
//! An APPEND whose mailbox is not a literal is watched: after each of its
//! message literals, the client's next line says whether the command ends
//! (an empty line) or another message follows (` [flags] [date] {N}`). For
//! another message, the intake hands imap-next the CRLF that ends the
//! message before it, then the line `<tag> APPEND INBOX` followed by the
//! client's own line, so each message reaches the session as an APPEND
//! of its own with the command's tag (imap-next sends the continuation
//! for a synchronising literal as for any APPEND). Before each such CRLF,
//! an [`super::Event::AppendPart`] tells the session what follows the
//! message: another one, the end of the command, or a refusal. The
//! session seals each message and sends the provider one MULTIAPPEND
//! (`session/multiappend.rs`); the mailbox is read from the first message
//! only (`INBOX` in the later lines is a placeholder).
//!
//! Caps, per command: [`MAX_MESSAGES`] messages, and `imap.max_literal_size`
//! octets of message data, each message and all of them together (so a
//! MULTIAPPEND holds no more in writ than the largest single APPEND: writ
//! keeps the sealed messages until the whole command can go on).
//! A message over a cap is refused with its command (tagged BAD, [`why`]):
//! the messages before it are dropped by the session and nothing is
//! appended; a synchronising literal gets no continuation, a
//! non-synchronising one is read and dropped, and the session goes on.
//! A line after a message that is neither empty nor a message is refused
//! the same way ([`why::SYNTAX`]) once the command has several messages.

/// Messages one MULTIAPPEND may carry.
pub const MAX_MESSAGES: usize = 1000;

/// What a MULTIAPPEND over a cap is told (tagged BAD).
pub mod why {
    pub const MESSAGES: &str = "Too many messages in one MULTIAPPEND: at most 1000";
    pub const OCTETS: &str =
        "MULTIAPPEND too large: its messages together exceed the literal size limit";
    pub const LITERAL: &str = "A message of this MULTIAPPEND is larger than the literal size limit";
    pub const SYNTAX: &str = "MULTIAPPEND: a message or the end of the command was expected";
}

/// What follows a message of a MULTIAPPEND.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Another message.
    More,
    /// The end of the command: send it on.
    Last,
    /// The command is refused (BAD with this text); nothing is appended.
    Refused(&'static str),
}

/// An APPEND being read.
#[derive(Debug)]
pub struct Append {
    /// Messages after the first.
    more: usize,
    /// Octets of message data so far.
    octets: u64,
}

impl Append {
    /// Watches the command whose first line is `line` if it is an APPEND
    /// whose mailbox is not a literal.
    pub fn starts(tag: &[u8], line: &[u8]) -> Option<Append> {
        let rest = line.get(tag.len() + 1..)?;
        let verb = rest.get(..7)?;
        if !verb.eq_ignore_ascii_case(b"APPEND ") || rest.get(7) == Some(&b'{') {
            return None;
        }
        Some(Append { more: 0, octets: 0 })
    }

    /// The first message's literal was announced.
    pub fn first_message(&mut self, length: u64) {
        self.octets = length;
    }
}

impl super::Intake {
    /// A complete line after a message literal of a watched APPEND.
    pub(super) fn append_line(&mut self) -> Result<(), &'static str> {
        self.quoted = false;
        self.escaped = false;
        let (Some(append), Some(tag)) = (self.append.as_mut(), self.tag.clone()) else {
            return Ok(());
        };
        let several = append.more > 0;
        let body = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body.is_empty() {
            if several {
                self.returned.push(super::Event::AppendPart {
                    tag,
                    next: Next::Last,
                });
            }
            self.end_command();
            return Ok(());
        }
        let announced = super::announcement(&self.line).filter(|_| body.starts_with(b" "));
        let Some((length, non_sync)) = announced else {
            if several {
                self.refuse_part(tag, why::SYNTAX, None);
            } else {
                // Not a MULTIAPPEND: imap-codec answers the APPEND.
                self.append = None;
                self.text += self.line.len();
            }
            return Ok(());
        };
        let over = if append.more + 2 > MAX_MESSAGES {
            Some(why::MESSAGES)
        } else if length > u64::from(self.max_literal_size) {
            Some(why::LITERAL)
        } else if append.octets.saturating_add(length) > u64::from(self.max_literal_size) {
            Some(why::OCTETS)
        } else {
            None
        };
        if let Some(why) = over {
            self.refuse_part(tag, why, non_sync.then_some(length));
            return Ok(());
        }
        append.more += 1;
        append.octets += length;
        self.text += self.line.len();
        self.returned.push(super::Event::AppendPart {
            tag: tag.clone(),
            next: Next::More,
        });
        let client_line = std::mem::take(&mut self.line);
        self.line = [&b"\r\n"[..], &tag, b" APPEND INBOX", &client_line].concat();
        // Each message is a command of its own for imap-next: the literal
        // count is per message here, [`MAX_MESSAGES`] caps them.
        self.literals = 1;
        self.literal_left = length;
        Ok(())
    }

    /// Refuses the command at the line after a message: the message before
    /// is ended for imap-next (the session drops it), the rest of the
    /// command is dropped (`drop` octets of a non-synchronising literal
    /// announced on the line, then its next lines).
    fn refuse_part(&mut self, tag: Vec<u8>, why: &'static str, drop: Option<u64>) {
        self.returned.push(super::Event::AppendPart {
            tag,
            next: Next::Refused(why),
        });
        self.line = b"\r\n".to_vec();
        self.end_command();
        if let Some(length) = drop {
            self.drop_left = length;
            self.skipping = true;
        }
    }
}

#[cfg(test)]
mod tests;
