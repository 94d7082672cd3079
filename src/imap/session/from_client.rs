//! What the session does with each client event: a parsed command (the
//! session's rules, plans started, commands forwarded) and a command the
//! flow could not parse. Part of [`super::Session`]; its invariants are
//! stated in `session.rs`'s header.

use super::*;

impl Session {
    pub(super) fn on_client(&mut self, event: server::Event) {
        if let server::Event::GreetingSent { .. } | server::Event::ResponseSent { .. } = event {
            // A response written: it carries the whole response back (a
            // FETCH answer with its body), and nothing is left to do with
            // it. Never held behind a plan: that kept every answer of a
            // whole-folder FETCH until the FETCH ended.
            return;
        }
        if self.plan.is_some() {
            self.held.push_back(event);
            return;
        }
        let (event, returns) = match event {
            server::Event::CommandReceived { mut command } => {
                let returns = untag(&mut command);
                (server::Event::CommandReceived { command }, returns)
            }
            other => (other, None),
        };
        match event {
            server::Event::GreetingSent { .. } | server::Event::ResponseSent { .. } => {}
            server::Event::CommandReceived { command } if self.pending_compress.is_some() => {
                self.refuse(command.tag, StatusKind::Bad, AFTER_COMPRESS);
            }
            server::Event::CommandAuthenticateReceived {
                command_authenticate,
            } if self.pending_compress.is_some() => {
                let bad = tagged(command_authenticate.tag, StatusKind::Bad, AFTER_COMPRESS);
                let _ = self.server.authenticate_finish(bad);
            }
            server::Event::IdleCommandReceived { tag } if self.pending_compress.is_some() => {
                let _ = self
                    .server
                    .idle_reject(tagged(tag, StatusKind::Bad, AFTER_COMPRESS));
            }
            server::Event::CommandReceived { command } => {
                let taken = self.passthrough.take(&command);
                match (self.in_flight.refusal(&command.tag), taken) {
                    (Some(why), _) => {
                        // A message of a MULTIAPPEND: the command fails
                        // (its announcements are taken, the rest of it
                        // dropped), answered once.
                        let answered = self.multiappend.is_part(&command)
                            && self.multiappend.unparsed(command.tag.inner().as_bytes());
                        if !answered {
                            self.refuse(command.tag, StatusKind::Bad, why);
                        }
                    }
                    (None, passthrough::Taken::Line(line)) => self.forward_line(command.tag, line),
                    (None, passthrough::Taken::Refused) => {
                        self.refuse(command.tag, StatusKind::Bad, passthrough::TOO_MANY);
                    }
                    (None, passthrough::Taken::No) => self.with_saved(command, returns),
                }
            }
            server::Event::CommandAuthenticateReceived {
                command_authenticate,
            } => {
                let refusal = self
                    .in_flight
                    .refusal(&command_authenticate.tag)
                    .or_else(|| self.login_refusal());
                if let Some(why) = refusal {
                    let bad = tagged(command_authenticate.tag, StatusKind::Bad, why);
                    let _ = self.server.authenticate_finish(bad);
                } else if self.auth_allowed() {
                    let account = command_authenticate
                        .initial_response
                        .as_ref()
                        .and_then(|r| {
                            account::sasl_account(&command_authenticate.mechanism, r.declassify())
                        });
                    if command_authenticate.initial_response.is_none() {
                        self.pending_mechanism = Some(command_authenticate.mechanism.clone());
                    }
                    self.pending_login = Some((command_authenticate.tag.clone(), account));
                    self.forward(command_authenticate.into());
                } else {
                    let _ = self.server.authenticate_finish(Status::Tagged(Tagged {
                        tag: command_authenticate.tag,
                        body: StatusBody {
                            kind: StatusKind::No,
                            code: None,
                            text: text("Plaintext authentication disallowed: STARTTLS first"),
                        },
                    }));
                }
            }
            server::Event::AuthenticateDataReceived { authenticate_data } => {
                if let (Some(mechanism), AuthenticateData::Continue(data)) =
                    (self.pending_mechanism.take(), &authenticate_data)
                    && let Some((_, account)) = &mut self.pending_login
                {
                    *account = account::sasl_account(&mechanism, data.declassify());
                }
                if let Err(data) = self.provider.set_authenticate_data(authenticate_data) {
                    // The provider already ended the exchange; a cancel
                    // needs no answer, anything else is out of place.
                    if !matches!(data, AuthenticateData::Cancel) {
                        tracing::debug!("authentication data after the exchange ended");
                    }
                }
            }
            server::Event::IdleCommandReceived { tag } => {
                if let Some(why) = self.in_flight.refusal(&tag) {
                    let _ = self.server.idle_reject(tagged(tag, StatusKind::Bad, why));
                    return;
                }
                self.forward(Command {
                    tag,
                    body: CommandBody::Idle,
                });
            }
            server::Event::IdleDoneReceived => {
                let _ = self.provider.set_idle_done();
            }
        }
    }

    /// The saved result put in the place of the command's `$`s, then on
    /// as any command ([`crate::imap::saved_result`]).
    fn with_saved(&mut self, mut command: Command<'static>, returns: Option<ReturnOptions>) {
        use crate::imap::saved_result::{self, Placed};
        match saved_result::place(&mut command, self.saved.as_ref()) {
            Err(why) => self.refuse(command.tag, StatusKind::Bad, why),
            Ok(Placed::Untouched | Placed::Ready) => self.on_command(command, returns),
            Ok(Placed::Empty) => match saved_result::with_provider_dollar(&command) {
                // The provider's own `$` is empty: it answers as for
                // writ's (a destination that does not exist, a read-only
                // mailbox, no mailbox selected).
                Some(line) => self.forward_line(command.tag, line),
                None => {
                    let ok = saved_result::empty_ok(command.tag);
                    self.server.enqueue_status(ok);
                }
            },
            Ok(Placed::Resolve) => match self.saved.clone() {
                Some(saved) => self.start_resolve(command, saved),
                // `place` resolves only over a saved result.
                None => self.refuse(command.tag, StatusKind::Bad, saved_result::why::MIXED),
            },
        }
    }

    /// `returns`: the RETURN options intake took off this command.
    pub(super) fn on_command(&mut self, command: Command<'static>, returns: Option<ReturnOptions>) {
        if let Err(why) = intake::check(&command) {
            tracing::info!(limit = why, "client command over a limit refused");
            return self.bad(Some(command.tag), why);
        }
        match &command.body {
            CommandBody::StartTLS => {
                if self.authenticated {
                    // RFC 3501 §6.2.1: only in the not-authenticated state.
                    self.refuse(command.tag, StatusKind::Bad, "STARTTLS only before login");
                } else if self.ctx.client_tls {
                    self.refuse(command.tag, StatusKind::Bad, "TLS is already active");
                } else if !self.ctx.starttls_listener {
                    self.refuse(command.tag, StatusKind::Bad, "STARTTLS is not offered here");
                } else {
                    self.refuse(command.tag, StatusKind::Ok, "Begin TLS negotiation now");
                    self.drain_server_output();
                    self.step = Step::StartTls;
                }
            }
            CommandBody::Compress { .. } => {
                if !self.authenticated {
                    // RFC 4978 §3: in the authenticated and selected states.
                    self.refuse(command.tag, StatusKind::Bad, "COMPRESS only after login");
                } else if self.compressed {
                    self.server.enqueue_status(Status::Tagged(Tagged {
                        tag: command.tag,
                        body: StatusBody {
                            kind: StatusKind::No,
                            code: Some(Code::CompressionActive),
                            text: text("DEFLATE is already active"),
                        },
                    }));
                } else {
                    // Answered OK once the commands before it are done.
                    self.pending_compress = Some(command.tag);
                }
            }
            CommandBody::Login { .. } | CommandBody::Authenticate { .. }
                if let Some(why) = self.login_refusal() =>
            {
                self.refuse(command.tag, StatusKind::Bad, why);
            }
            CommandBody::Login { .. } if !self.auth_allowed() => {
                self.refuse(
                    command.tag,
                    StatusKind::No,
                    "Plaintext authentication disallowed: STARTTLS first",
                );
            }
            CommandBody::Login { username, .. } => {
                let name = String::from_utf8_lossy(username.as_ref()).into_owned();
                self.pending_login = Some((command.tag.clone(), Some(name)));
                self.forward(command);
            }
            CommandBody::Select { mailbox, .. } | CommandBody::Examine { mailbox, .. } => {
                // A SELECT deselects, whatever its outcome (RFC 3501 §6.3.1),
                // and empties `$` (RFC 5182 §2.1).
                self.selected = None;
                self.saved = None;
                self.exists = None;
                self.pending_select =
                    Some((command.tag.clone(), account::mailbox_name(mailbox), None));
                self.forward(command);
            }
            CommandBody::Enable { capabilities } => {
                match rewrite::offered_to_enable(capabilities) {
                    Some(capabilities) => self.forward(Command {
                        tag: command.tag,
                        body: CommandBody::Enable { capabilities },
                    }),
                    None if !self.authenticated => {
                        self.refuse(command.tag, StatusKind::Bad, "ENABLE only after login");
                    }
                    None => {
                        self.server.enqueue_data(Data::Enabled {
                            capabilities: Vec::new(),
                        });
                        self.refuse(command.tag, StatusKind::Ok, "Enabled");
                    }
                }
            }
            CommandBody::Close | CommandBody::Unselect | CommandBody::Logout => {
                self.selected = None;
                self.saved = None;
                self.forward(command);
            }
            CommandBody::Append { .. } if self.multiappend.is_part(&command) => {
                self.append_part(command);
            }
            CommandBody::Append { .. } => {
                // Sealed on the pool; what the client sends meanwhile
                // waits behind it.
                let plan = append::AppendPlan::start(command, &self.sealer, &self.runner);
                self.plan = Some(Plan::Append(plan));
                let out = self.plan.as_mut().map(Plan::poll).unwrap_or_default();
                self.apply(out);
            }
            CommandBody::Search { .. }
            | CommandBody::Sort { .. }
            | CommandBody::Thread {
                algorithm: ThreadingAlgorithm::OrderedSubject | ThreadingAlgorithm::References,
                ..
            } => self.start_search(command, returns),
            CommandBody::Thread {
                algorithm: ThreadingAlgorithm::Other(other),
                ..
            } if other.as_ref().eq_ignore_ascii_case("REFS") => {
                self.start_search(command, returns);
            }
            CommandBody::Thread {
                algorithm: ThreadingAlgorithm::Other(_),
                ..
            } => {
                // Others are withheld (see capabilities): the provider
                // would thread the sealed messages by their outer headers.
                self.refuse(
                    command.tag,
                    StatusKind::Bad,
                    "This THREAD algorithm is not offered through writ",
                );
            }
            CommandBody::Fetch { .. } => self.start_fetch(command),
            _ => {
                self.forward(command);
            }
        }
    }

    /// A client command the flow could not parse: BAD with its tag when
    /// one can be read, and the session goes on.
    pub(super) fn on_client_error(&mut self, e: server::Error) {
        let (discarded, why) = match e {
            server::Error::ExpectedCrlfGotLf { discarded_bytes }
            | server::Error::MalformedMessage { discarded_bytes } => (
                discarded_bytes,
                "Unparseable command (or SEARCH nested deeper than 9)",
            ),
            server::Error::CommandTooLong { discarded_bytes } => (
                discarded_bytes,
                "Command too long: its literals exceed the literal size limit",
            ),
            // The flow already answered BAD with the command's tag.
            server::Error::LiteralTooLong { .. } => return,
        };
        let bytes: &[u8] = discarded.declassify();
        // A tag the intake marked with RETURN options: the client's own.
        // (A SAVE that does not parse leaves `$` as it was, as Dovecot.)
        let first = bytes.split(|&b| b == b' ').next().unwrap_or_default();
        let first = match std::str::from_utf8(first)
            .ok()
            .and_then(crate::imap::search_return::untag)
        {
            Some((tag, _)) => tag.as_bytes(),
            None => first,
        };
        if self.multiappend.unparsed(first) {
            return;
        }
        // imap-codec parses only COMPRESS DEFLATE (RFC 4978: BAD for an
        // unknown argument).
        let why = if bytes
            .split(|&b| b == b' ')
            .nth(1)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"COMPRESS"))
        {
            "Unknown compression algorithm: only DEFLATE is offered"
        } else {
            why
        };
        let tag = Tag::try_from(first.to_vec()).ok();
        self.bad(tag, why);
    }
}

/// The RETURN options the intake wrote into the command's tag, taken off
/// it ([`crate::imap::search_return::untag`]); they count only on the
/// commands the intake takes them from (SEARCH and SORT).
fn untag(command: &mut Command<'static>) -> Option<ReturnOptions> {
    let (tag, returns) = crate::imap::search_return::untag(command.tag.inner())?;
    command.tag = Tag::try_from(tag.to_owned()).ok()?;
    match command.body {
        CommandBody::Search { .. } | CommandBody::Sort { .. } => Some(returns),
        _ => None,
    }
}
