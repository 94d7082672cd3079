//! The proxy's sans-IO core: two imap-next flows, one facing the client
//! (`server`) and one facing the provider (`provider`), and the rules that
//! join them. Bytes go in with [`Session::client_input`] and
//! [`Session::provider_input`]; [`Session::advance`] runs both flows and
//! says what the I/O shell must do next; the bytes to write are taken with
//! [`Session::take_to_client`] and [`Session::take_to_provider`].
//!
//! Commands are forwarded with the client's own tags, so the provider's
//! tagged answers go back unchanged. A tagged answer is matched to its
//! command by tag alone, so no two commands at the provider share one: a
//! command whose tag is in flight (or is writ's own, `writ.`) is answered
//! BAD (see `in_flight`). A login is tied to its LOGIN or AUTHENTICATE
//! command: only one may be in flight, none after login (BAD, as Dovecot
//! answers), and the account writ keys its cache by is the one that
//! command named, once the provider's answer to it is OK.
//!
//! writ answers itself only what is about its own connection with the
//! client: STARTTLS (only before login, and not offered after it),
//! COMPRESS DEFLATE (only after login, BAD before; `NO [COMPRESSIONACTIVE]`
//! once active; answered OK only when no command is in progress, the
//! client read meanwhile not, and the I/O shell compresses from the byte
//! after that OK: [`Step::Compress`], [`super::compress`]),
//! LOGIN/AUTHENTICATE refused on an unencrypted connection, commands over
//! a cap of [`super::intake`] (the client's bytes pass those caps before
//! imap-next parses them), and ENABLE of nothing writ offers (ENABLE
//! passes on only CONDSTORE and QRESYNC), and THREAD REFS or any other
//! algorithm but ORDEREDSUBJECT and REFERENCES (BAD: withheld, see
//! [`super::capabilities`]). RETURN options of ESEARCH and
//! ESORT are taken off the command by [`super::intake`] before it is
//! parsed and handed to the plan with the command (`raw`: by tag);
//! responses imap-types has no form for (ESEARCH, THREAD) are written as
//! text in their place among the others (`raw`). An extended LIST
//! (LIST-EXTENDED, LIST-STATUS) is taken off by [`super::intake`] too and
//! goes to the provider as the client sent it, in the place of a NOOP
//! with its tag (`passthrough`); LIST and LSUB answers pass as the
//! provider wrote them (`list_raw`: imap-types re-spells attributes).
//!
//! While a plan (FETCH, SEARCH with content keys or RETURN options, SORT,
//! THREAD ORDEREDSUBJECT and REFERENCES) runs writ's own commands, what the
//! provider sends unasked passes on in order: the plans' commands are of
//! the client's command's kind (by sequence number or by UID), so the
//! provider sends only what it would send the client then, and numbers
//! messages as the client does. An EXPUNGE, or with QRESYNC a VANISHED
//! (by UID: [`super::sequence::Vanished`]), renumbers the plan's pending
//! answers; VANISHED (EARLIER) and the VANISHED of a UID EXPUNGE pass as
//! they are (no message content). A FETCH that answers none of the plan's
//! commands (a flag change elsewhere), and one during a SELECT (a QRESYNC
//! SELECT's changed messages), passes with FLAGS, MODSEQ and UID only. Once a
//! client command waits behind a plan, [`Session::wants_client_input`]
//! says no: the I/O shell stops reading the client until the plan ends.
//!
//! The session never waits and never does the heavy work itself: opening
//! sealed messages (summaries or whole), decoding BINARY sections,
//! holding messages against SEARCH criteria and the cache's reads and
//! writes for them are jobs the plans submit to the process-wide pool
//! ([`super::fetch::opening`], through [`super::opened`]). When one ends
//! the I/O shell is woken ([`Session::work_done`]) and calls
//! [`Session::advance`], which takes the results that are ready, in the
//! provider's order. While a plan has as many jobs outstanding as it may
//! ([`super::fetch::opening::in_flight`]), or a phase's end waits for
//! them, the session reads none of the provider's responses
//! ([`Session::wants_provider_input`] says no, and `advance` leaves what
//! was read in the provider flow), so the work held per session is bounded.

use imap_next::imap_types::auth::AuthenticateData;
use imap_next::imap_types::command::{Command, CommandBody};
use imap_next::imap_types::core::{Tag, Text};
use imap_next::imap_types::extensions::thread::ThreadingAlgorithm;
use imap_next::imap_types::response::{
    Bye, Code, Data, Greeting, GreetingKind, Status, StatusBody, StatusKind, Tagged,
};
use std::collections::VecDeque;
use std::sync::Arc;

use imap_next::{Interrupt, Io, State, client, server};

use super::account;
use super::append;
use super::cache::{Cache, MailboxKey};
use super::capabilities::Offer;
use super::fetch::opening::Runner;
use super::fetch::{CacheRef, FetchPlan, Output};
use super::intake::{self, Intake};
use super::search_plan::SearchPlan;
use super::search_return::ReturnOptions;
use super::sequence::Vanished;
use crate::admin::names;
use crate::envelope::{Keys, Sealer};
use in_flight::InFlight;
use plan::{Plan, unsolicited};

/// The keys that open sealed messages (the unlocked keyring).
pub type SharedKeys = Arc<dyn Keys + Send + Sync>;

/// What the connection is, as far as the session's rules care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// The client connection is TLS (implicit, or after STARTTLS).
    pub client_tls: bool,
    /// The client is on loopback (plaintext auth is harmless there).
    pub client_loopback: bool,
    /// The listener offers STARTTLS (kind `imap`).
    pub starttls_listener: bool,
    /// `imap.allow_plaintext_auth`.
    pub allow_plaintext_auth: bool,
    /// `imap.max_literal_size`.
    pub max_literal_size: u32,
}

/// What the I/O shell does after [`Session::advance`] (always after
/// writing out what there is to write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Read from whichever side has something.
    Wait,
    /// Upgrade the client connection to TLS now, then call
    /// [`Session::tls_started`]. Nothing more is read before the handshake.
    StartTls,
    /// Compress the client connection (raw DEFLATE both ways) from the
    /// next byte on, then call [`Session::compression_started`].
    Compress,
    /// Close both connections.
    Close,
}

pub struct Session {
    ctx: Context,
    server: server::Server,
    provider: client::Client,
    to_client: Vec<u8>,
    to_provider: Vec<u8>,
    step: Step,
    /// The provider said BYE: its closing the connection is expected.
    provider_bye: bool,
    keys: SharedKeys,
    /// Seals APPENDed messages (public keys only).
    sealer: Sealer,
    /// A FETCH writ answers with commands of its own; while it runs, the
    /// client's further commands wait in `held` (in order).
    plan: Option<Plan>,
    held: VecDeque<server::Event>,
    cache: Option<Arc<Cache>>,
    /// The logged-in account, once the provider said OK.
    account: Option<String>,
    /// A LOGIN or AUTHENTICATE in flight: its tag and the account it names.
    pending_login: Option<(Tag<'static>, Option<String>)>,
    /// AUTHENTICATE without an initial response: the mechanism, until the
    /// client's first answer names the account.
    pending_mechanism: Option<imap_next::imap_types::auth::AuthMechanism<'static>>,
    /// A SELECT or EXAMINE in flight: tag, mailbox, UIDVALIDITY seen.
    pending_select: Option<(Tag<'static>, String, Option<u32>)>,
    selected: Option<MailboxKey>,
    /// Caps on the client's commands before imap-next parses them.
    intake: Intake,
    /// A LOGIN or AUTHENTICATE succeeded: STARTTLS is over, and the login
    /// timeout no longer applies (the idle timeout does).
    authenticated: bool,
    /// Tags of the commands at the provider (the client's and writ's).
    in_flight: InFlight,
    /// Responses imap-types has no form for: see [`raw`].
    raw: raw::RawResponses,
    /// `RETURN (...)` options [`intake`] took off SEARCH/SORT commands,
    /// by tag, until the command is parsed.
    returns: raw::PendingReturns,
    /// Extended LIST commands passed to the provider as the client sent
    /// them: see [`passthrough`].
    passthrough: passthrough::Passthrough,
    /// MULTIAPPEND messages announced by the intake: see [`multiappend`].
    multiappend: multiappend::MultiAppends,
    /// A COMPRESS DEFLATE waiting for the commands before it to finish.
    pending_compress: Option<Tag<'static>>,
    /// The client connection is compressed (COMPRESS=DEFLATE).
    compressed: bool,
    /// Where the plans' work runs ([`Runner::done`] wakes the I/O shell).
    runner: Runner,
}

/// Client commands parsed while a plan runs that wait in `held` before
/// writ stops reading the client (more may come out of what was already
/// read: at most one read's worth, and one command imap-next holds).
const MAX_HELD: usize = 1;

/// What a command sent after COMPRESS, before its answer, is told.
const AFTER_COMPRESS: &str = "Wait for the answer to COMPRESS before sending commands";

/// A tagged status of writ's own.
fn tagged(tag: Tag<'static>, kind: StatusKind, why: &'static str) -> Status<'static> {
    Status::Tagged(Tagged {
        tag,
        body: StatusBody {
            kind,
            code: None,
            text: text(why),
        },
    })
}

fn text(s: &'static str) -> Text<'static> {
    // Only called with fixed, valid texts (non-empty, no CR/LF, not "[").
    Text::unvalidated(s)
}

fn server_options(ctx: &Context) -> server::Options {
    let mut o = server::Options::default();
    o.max_literal_size = ctx.max_literal_size;
    o.max_command_size = ctx.max_literal_size.saturating_add(64 * 1024);
    // What a synchronising literal over the limit is answered (BAD).
    let _ = o.set_literal_reject_text(format!(
        "Literal too large: at most {} octets",
        ctx.max_literal_size
    ));
    // Clients in the wild send bare LF now and then; be lenient inbound.
    o.crlf_relaxed = true;
    o
}

fn new_server(ctx: &Context) -> server::Server {
    let greeting = Greeting {
        kind: GreetingKind::Ok,
        code: None,
        text: text("writ IMAP proxy ready"),
    };
    server::Server::new(server_options(ctx), greeting)
}

impl Session {
    /// A session whose provider connection is open and past its greeting.
    pub fn new(ctx: Context, keys: SharedKeys, sealer: Sealer) -> Session {
        let mut options = client::Options::default();
        // The greeting was read when connecting (and before STARTTLS).
        options.discard_greeting = true;
        options.crlf_relaxed = true;
        options.max_response_size = ctx.max_literal_size.saturating_mul(2).max(64 * 1024 * 1024);
        Session {
            server: new_server(&ctx),
            provider: client::Client::new(options),
            ctx,
            to_client: Vec::new(),
            to_provider: Vec::new(),
            step: Step::Wait,
            provider_bye: false,
            keys,
            sealer,
            plan: None,
            held: VecDeque::new(),
            cache: None,
            account: None,
            pending_login: None,
            pending_mechanism: None,
            pending_select: None,
            selected: None,
            intake: Intake::new(ctx.max_literal_size),
            authenticated: false,
            in_flight: InFlight::default(),
            raw: raw::RawResponses::default(),
            returns: raw::PendingReturns::default(),
            passthrough: passthrough::Passthrough::default(),
            multiappend: multiappend::MultiAppends::default(),
            pending_compress: None,
            compressed: false,
            runner: Runner::pool(),
        }
    }

    /// Runs the plans' work at once on the caller's thread, so a test
    /// (or the fuzz harness, [`super::fuzz`]) drives the session
    /// synchronously. Never in the proxy: it would hold the runtime.
    pub fn with_inline_work(mut self) -> Session {
        self.runner = Runner::inline();
        self
    }

    /// The plans' work goes through `runner` (tests).
    #[cfg(test)]
    pub(crate) fn with_runner(mut self, runner: Runner) -> Session {
        self.runner = runner;
        self
    }

    /// Notified when work the session submitted ends: the I/O shell then
    /// runs [`Session::advance`] again (while [`Session::working`]).
    pub fn work_done(&self) -> Arc<tokio::sync::Notify> {
        self.runner.done()
    }

    /// Work of the session's runs off it: wait for [`Session::work_done`]
    /// too.
    pub fn working(&self) -> bool {
        self.plan.as_ref().is_some_and(|p| p.working())
    }

    /// The session takes more of the provider's bytes: not while a plan
    /// waits for its work to be done (see the module's header).
    pub fn wants_provider_input(&self) -> bool {
        !self.plan_saturated()
    }

    fn plan_saturated(&self) -> bool {
        self.plan.as_ref().is_some_and(|p| p.saturated())
    }

    /// Opened messages are kept in `cache` (per account and mailbox).
    pub fn with_cache(mut self, cache: Option<Arc<Cache>>) -> Session {
        self.cache = cache;
        self
    }

    fn cache_ref(&self) -> Option<CacheRef> {
        Some(CacheRef {
            cache: self.cache.clone()?,
            mailbox: self.selected.clone()?,
        })
    }

    /// Follows logins and selections in the provider's tagged answers.
    fn track_status(&mut self, status: &Status<'static>) {
        match status {
            Status::Untagged(StatusBody {
                code: Some(Code::UidValidity(v)),
                ..
            }) => {
                if let Some((_, _, seen)) = &mut self.pending_select {
                    *seen = Some(v.get());
                }
            }
            Status::Tagged(Tagged { tag, body }) => {
                if !self.in_flight.answered(tag) {
                    tracing::debug!("a tagged answer from the provider to no command in flight");
                    return;
                }
                self.passthrough.answered(tag);
                let ok = body.kind == StatusKind::Ok;
                if self.pending_login.as_ref().is_some_and(|(t, _)| t == tag)
                    && let Some((_, account)) = self.pending_login.take()
                    && ok
                {
                    self.account = account;
                    self.authenticated = true;
                    self.intake.logged_in();
                }
                if self
                    .pending_select
                    .as_ref()
                    .is_some_and(|(t, _, _)| t == tag)
                    && let Some((_, mailbox, uidvalidity)) = self.pending_select.take()
                    && ok
                    && let (Some(account), Some(uidvalidity)) = (self.account.clone(), uidvalidity)
                {
                    let key = MailboxKey {
                        account,
                        mailbox,
                        uidvalidity,
                    };
                    if let Some(cache) = &self.cache {
                        cache.selected(&key);
                    }
                    self.selected = Some(key);
                }
            }
            _ => {}
        }
    }

    /// Bytes from the client. What is over a cap of [`intake`] is answered
    /// BAD here and never reaches the parser.
    pub fn client_input(&mut self, bytes: &[u8]) {
        for event in self.intake.push(bytes) {
            match event {
                intake::Event::Bytes(b) => self.server.enqueue_input(&b),
                intake::Event::Return { tag, options } => self.returns.push(tag, options),
                intake::Event::Passthrough { tag, line } => self.passthrough.push(tag, line),
                intake::Event::AppendPart { tag, next } => self.multiappend.announce(tag, next),
                intake::Event::Refused { tag, why, close } => {
                    tracing::info!(limit = why, "client command over a limit refused");
                    let tag = tag.and_then(|t| Tag::try_from(t).ok());
                    self.bad(tag, why);
                    if close {
                        self.bye("closing after a command over a limit");
                        self.step = Step::Close;
                        return;
                    }
                }
            }
        }
    }

    /// A LOGIN or AUTHENTICATE has succeeded.
    pub fn authenticated(&self) -> bool {
        self.authenticated
    }

    pub fn provider_input(&mut self, bytes: &[u8]) {
        self.passthrough.tee.push(bytes);
        self.provider.enqueue_input(bytes);
    }

    pub fn take_to_client(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.to_client)
    }

    pub fn take_to_provider(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.to_provider)
    }

    /// The client connection is now TLS. A fresh flow faces the client:
    /// whatever it sent before the handshake is gone with the old one (a
    /// command injected in the plaintext phase must not run), and the new
    /// flow's greeting is not sent: the client had one already.
    pub fn tls_started(&mut self) {
        self.ctx.client_tls = true;
        self.fresh_client_flow();
        self.step = Step::Wait;
    }

    /// The client connection is now compressed. As after STARTTLS, a fresh
    /// flow faces the client: what it sent after COMPRESS without waiting
    /// for the OK (RFC 4978 §3 forbids it) is dropped with the old one.
    /// The login stands (the intake keeps the post-login caps).
    pub fn compression_started(&mut self) {
        self.compressed = true;
        self.fresh_client_flow();
        if self.authenticated {
            self.intake.logged_in();
        }
        self.step = Step::Wait;
    }

    /// A new flow facing the client, its greeting not sent.
    fn fresh_client_flow(&mut self) {
        self.server = new_server(&self.ctx);
        self.intake = Intake::new(self.ctx.max_literal_size);
        self.returns = raw::PendingReturns::default();
        self.passthrough.client_reset();
        self.multiappend.client_reset();
        loop {
            match self.server.next() {
                Ok(server::Event::GreetingSent { .. }) => break,
                Err(Interrupt::Io(Io::Output(_))) => continue,
                _ => break,
            }
        }
    }

    /// The provider closed its connection.
    pub fn provider_closed(&mut self) {
        if !self.provider_bye {
            self.bye("connection to the provider lost");
        }
        self.step = Step::Close;
    }

    /// The connection ends for `why` (a timeout): BYE, then close.
    pub fn close_with(&mut self, why: &'static str) {
        self.bye(why);
        self.step = Step::Close;
    }

    /// writ is shutting down.
    pub fn shutdown(&mut self) {
        self.bye("writ is shutting down, reconnect later");
        self.step = Step::Close;
    }

    fn bye(&mut self, why: &'static str) {
        let bye = Status::Bye(Bye {
            code: None,
            text: text(why),
        });
        self.server.enqueue_status(bye);
        // Run the flow so the BYE is in `to_client`.
        self.drain_server_output();
    }

    /// Runs the client flow until its queued responses are out (a response
    /// before the BYE must not stop the BYE from going out).
    fn drain_server_output(&mut self) {
        loop {
            match self.server.next() {
                Err(Interrupt::Io(Io::Output(b))) => self.output(&b),
                Ok(event @ server::Event::ResponseSent { .. }) => self.sent(&event),
                Ok(server::Event::GreetingSent { .. }) => {}
                _ => break,
            }
        }
    }

    fn auth_allowed(&self) -> bool {
        self.ctx.client_tls || self.ctx.client_loopback || self.ctx.allow_plaintext_auth
    }

    fn offer(&self) -> Offer {
        Offer {
            // Capabilities sent while a login is in flight (Dovecot sends
            // its post-login list untagged before the OK) are post-login.
            starttls: self.ctx.starttls_listener
                && !self.ctx.client_tls
                && !self.authenticated
                && self.pending_login.is_none(),
            login_disabled: !self.auth_allowed(),
            compress: (self.authenticated || self.pending_login.is_some())
                && !self.compressed
                && self.pending_compress.is_none(),
        }
    }

    /// Runs both flows until each needs more input (or the session must
    /// upgrade or close).
    pub fn advance(&mut self) -> Step {
        loop {
            let mut progressed = false;
            if self.step == Step::Wait && self.working_or_held() {
                // Work done off the session meanwhile.
                let out = self.plan.as_mut().map(|p| p.poll()).unwrap_or_default();
                progressed = !out.is_empty() || self.plan.is_none();
                self.apply(out);
            }
            if self.step == Step::Wait && self.to_client.is_empty() && self.has_more_output() {
                // The client drained what it had: the plan's next chunk
                // (a FETCH answered from the cache).
                let out = self.plan.as_mut().map(|p| p.more()).unwrap_or_default();
                self.apply(out);
                progressed = true;
            }
            while self.step == Step::Wait {
                match self.server.next() {
                    Ok(event) => {
                        self.sent(&event);
                        self.on_client(event)
                    }
                    Err(Interrupt::Io(Io::Output(b))) => self.output(&b),
                    Err(Interrupt::Io(Io::NeedMoreInput)) => break,
                    Err(Interrupt::Error(e)) => self.on_client_error(e),
                }
                progressed = true;
            }
            while self.step == Step::Wait && !self.plan_saturated() {
                match self.provider.next() {
                    Ok(event) => {
                        self.provider_sent(&event);
                        self.on_provider(event)
                    }
                    Err(Interrupt::Io(Io::Output(b))) => self.provider_output(&b),
                    Err(Interrupt::Io(Io::NeedMoreInput)) => break,
                    Err(Interrupt::Error(e)) => self.on_provider_error(e),
                }
                progressed = true;
            }
            if self.step == Step::Wait && self.compress_now() {
                return self.step;
            }
            if !progressed || self.step != Step::Wait {
                return self.step;
            }
        }
    }

    /// A plan has work off the session, or a status held for it.
    fn working_or_held(&self) -> bool {
        self.plan
            .as_ref()
            .is_some_and(|p| p.working() || p.saturated())
    }

    /// BAD with `tag`, or untagged without one.
    fn bad(&mut self, tag: Option<Tag<'static>>, why: &'static str) {
        let body = StatusBody {
            kind: StatusKind::Bad,
            code: None,
            text: text(why),
        };
        self.server.enqueue_status(match tag {
            Some(tag) => Status::Tagged(Tagged { tag, body }),
            None => Status::Untagged(body),
        });
    }

    /// SEARCH, SORT and THREAD: answered by writ over the opened messages
    /// ([`SearchPlan`]), or passed on when the plan needs no content.
    fn start_search(&mut self, command: Command<'static>, returns: Option<ReturnOptions>) {
        match SearchPlan::start(&command, self.cache_ref(), returns) {
            Some(Ok((plan, first))) => {
                let plan = plan.opening_with(Arc::clone(&self.keys), self.runner.clone());
                self.plan = Some(Plan::Search(Box::new(plan)));
                self.forward(first);
            }
            Some(Err(refusal)) => {
                self.server.enqueue_status(refusal);
            }
            None => {
                self.forward(command);
            }
        }
    }

    fn refuse(&mut self, tag: Tag<'static>, kind: StatusKind, why: &'static str) {
        self.server.enqueue_status(tagged(tag, kind, why));
    }

    /// Sends `command` to the provider; its tag is in flight until answered.
    fn forward(&mut self, command: Command<'static>) {
        self.in_flight.sent(&command.tag);
        self.provider.enqueue_command(command);
    }

    /// Why a LOGIN or AUTHENTICATE cannot start now (answered BAD, as
    /// Dovecot answers a second one).
    fn login_refusal(&self) -> Option<&'static str> {
        if self.authenticated {
            Some("Already logged in")
        } else if self.pending_login.is_some() {
            Some("A login is already in progress")
        } else {
            None
        }
    }

    /// The plan has answers to compose once the client has drained its
    /// output: the I/O shell writes what it has and runs
    /// [`Session::advance`] again without waiting for input.
    pub fn has_more_output(&self) -> bool {
        self.plan.as_ref().is_some_and(|p| p.has_more())
    }

    /// The client may send more: no command waits behind a running plan
    /// (at most [`MAX_HELD`]). The I/O shell stops reading the client
    /// otherwise, so what a client pipelines behind a FETCH waits in its
    /// own socket, not in writ.
    pub fn wants_client_input(&self) -> bool {
        self.held.len() < MAX_HELD && self.pending_compress.is_none()
    }

    /// A COMPRESS waits until nothing is in progress (the answers to the
    /// commands before it go out uncompressed, as the client expects);
    /// then its OK is the last uncompressed line. Returns whether the
    /// session now waits for the I/O shell to compress.
    fn compress_now(&mut self) -> bool {
        if self.plan.is_some() || !self.held.is_empty() || !self.in_flight.is_empty() {
            return false;
        }
        let Some(tag) = self.pending_compress.take() else {
            return false;
        };
        self.refuse(tag, StatusKind::Ok, "DEFLATE active");
        self.drain_server_output();
        self.step = Step::Compress;
        true
    }

    fn on_client(&mut self, event: server::Event) {
        if self.plan.is_some() {
            self.held.push_back(event);
            return;
        }
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
                let returns = self.returns.take(&command.tag);
                let taken = self.passthrough.take(&command);
                match (self.in_flight.refusal(&command.tag), taken) {
                    (Some(why), _) => self.refuse(command.tag, StatusKind::Bad, why),
                    (None, passthrough::Taken::Line(line)) => self.forward_line(command.tag, line),
                    (None, passthrough::Taken::Refused) => {
                        self.refuse(command.tag, StatusKind::Bad, passthrough::TOO_MANY);
                    }
                    (None, passthrough::Taken::No) => self.on_command(command, returns),
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

    /// `returns`: the RETURN options intake took off this command.
    fn on_command(&mut self, command: Command<'static>, returns: Option<ReturnOptions>) {
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
                // A SELECT deselects, whatever its outcome (RFC 3501 §6.3.1).
                self.selected = None;
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
                self.forward(command);
            }
            CommandBody::Append { .. } if self.multiappend.is_part(&command) => {
                self.append_part(command);
            }
            CommandBody::Append { .. } => {
                let tag = command.tag.clone();
                match append::seal_append(command, &self.sealer) {
                    Ok(sealed) => {
                        metrics::counter!(names::IMAP_APPENDS_TOTAL, "outcome" => "sealed")
                            .increment(1);
                        self.forward(sealed);
                    }
                    Err(refusal) => {
                        metrics::counter!(names::IMAP_APPENDS_TOTAL, "outcome" => "refused")
                            .increment(1);
                        self.refuse(tag, StatusKind::No, refusal.text());
                    }
                }
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
            CommandBody::Fetch { .. } => match FetchPlan::start(&command, self.cache_ref()) {
                Some((plan, probe)) => {
                    let plan = plan.opening_with(Arc::clone(&self.keys), self.runner.clone());
                    self.plan = Some(Plan::Fetch(Box::new(plan)));
                    self.forward(probe);
                }
                None => {
                    self.forward(command);
                }
            },
            _ => {
                self.forward(command);
            }
        }
    }

    /// Carries out what the FETCH plan decided.
    fn apply(&mut self, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::ToClient(data) => {
                    self.server.enqueue_data(data);
                }
                Output::ToClientRaw(bytes) => self.enqueue_raw(bytes),
                Output::ToProvider(command) => {
                    self.forward(command);
                }
                Output::Finish(status) => {
                    let status = self.rewrite_status(status);
                    self.server.enqueue_status(status);
                    self.plan = None;
                }
            }
        }
        while self.plan.is_none() {
            let Some(event) = self.held.pop_front() else {
                break;
            };
            self.on_client(event);
        }
    }

    /// A client command the flow could not parse: BAD with its tag when
    /// one can be read, and the session goes on.
    fn on_client_error(&mut self, e: server::Error) {
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
        if let Some(t) = bytes.split(|&b| b == b' ').next() {
            self.returns.forget(t);
            if self.multiappend.unparsed(t) {
                return;
            }
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
        let tag = bytes
            .split(|&b| b == b' ')
            .next()
            .and_then(|t| Tag::try_from(t.to_vec()).ok());
        self.bad(tag, why);
    }

    fn on_provider(&mut self, event: client::Event) {
        match event {
            client::Event::GreetingReceived { .. }
            | client::Event::CommandSent { .. }
            | client::Event::AuthenticateStarted { .. }
            | client::Event::IdleCommandSent { .. }
            | client::Event::IdleDoneSent { .. } => {}
            client::Event::CommandRejected { status, .. } => {
                self.track_status(&status);
                self.server.enqueue_status(status);
            }
            client::Event::AuthenticateContinuationRequestReceived {
                continuation_request,
                ..
            } => {
                let _ = self.server.authenticate_continue(continuation_request);
            }
            client::Event::AuthenticateStatusReceived { status, .. } => {
                self.pending_mechanism = None;
                self.track_status(&status);
                let status = self.rewrite_status(status);
                if let Err(status) = self.server.authenticate_finish(status) {
                    self.server.enqueue_status(status);
                }
            }
            client::Event::IdleAccepted {
                continuation_request,
                ..
            } => {
                let _ = self.server.idle_accept(continuation_request);
            }
            client::Event::IdleRejected { status, .. } => {
                self.track_status(&status);
                let status = self.rewrite_status(status);
                if let Err(status) = self.server.idle_reject(status) {
                    self.server.enqueue_status(status);
                }
            }
            client::Event::DataReceived { data } => {
                // While a plan runs, the provider answers writ's commands,
                // which are of the client's command's kind (by sequence
                // number or by UID): what it sends unasked (EXISTS, flag
                // changes, and EXPUNGE or VANISHED during UID commands
                // only) is what it would send the client, and it numbers
                // messages as the client does, so it passes on, in order.
                // VANISHED (EARLIER) renumbers nothing: it answers a
                // SELECT's or UID FETCH's QRESYNC/VANISHED parameter.
                let data = match (data, self.plan.as_mut()) {
                    (Data::Fetch { seq, items }, Some(plan)) => {
                        if let Plan::Fetch(fetch) = plan {
                            fetch.provider_response(self.provider.last_response_bytes());
                        }
                        match plan.on_fetch(seq, items, self.keys.as_ref()) {
                            Ok(outputs) => return self.apply(outputs),
                            Err(items) => match unsolicited(items) {
                                Some(items) => Data::Fetch { seq, items },
                                None => return,
                            },
                        }
                    }
                    (Data::Search(found, modseq), Some(plan)) => {
                        match plan.on_search(found, modseq.map(|m| m.get())) {
                            Ok(()) => return,
                            Err(found) => Data::Search(found, modseq),
                        }
                    }
                    (Data::Expunge(seq), Some(plan)) => {
                        plan.on_expunge(seq);
                        Data::Expunge(seq)
                    }
                    (
                        Data::Vanished {
                            earlier: false,
                            known_uids,
                        },
                        Some(plan),
                    ) => {
                        plan.on_vanished(&Vanished::new(&known_uids));
                        Data::Vanished {
                            earlier: false,
                            known_uids,
                        }
                    }
                    // A QRESYNC SELECT's changed messages: only what names
                    // a flag change passes (the provider sends nothing
                    // else there; a guard against sealed items).
                    (Data::Fetch { seq, items }, None) if self.pending_select.is_some() => {
                        match unsolicited(items) {
                            Some(items) => Data::Fetch { seq, items },
                            None => return,
                        }
                    }
                    (data, _) => data,
                };
                if let Some(bytes) = self.list_as_written(&data) {
                    return self.enqueue_raw(bytes);
                }
                let data = self.rewrite_data(data);
                self.server.enqueue_data(data);
            }
            client::Event::StatusReceived { status } => {
                if matches!(status, Status::Bye(_)) {
                    self.provider_bye = true;
                }
                self.track_status(&status);
                let status = match self.plan.as_mut() {
                    Some(plan) => match plan.on_status(status) {
                        Ok(outputs) => return self.apply(outputs),
                        Err(status) => status,
                    },
                    None => status,
                };
                let status = self.rewrite_status(status);
                self.server.enqueue_status(status);
            }
            client::Event::ContinuationRequestReceived {
                continuation_request,
            } => {
                self.server
                    .enqueue_continuation_request(continuation_request);
            }
        }
    }

    /// A provider response writ cannot parse cannot be passed on typed:
    /// the client is told BYE rather than left waiting for an answer.
    /// Except a FETCH response during a FETCH plan (imap-codec refuses a
    /// plaintext message's BODYSTRUCTURE nested past its limit): that
    /// message goes unanswered, the FETCH ends NO, the session goes on.
    fn on_provider_error(&mut self, e: client::Error) {
        if let client::Error::MalformedMessage { discarded_bytes } = &e
            && self.pass_answer(discarded_bytes.declassify())
        {
            return;
        }
        if let client::Error::MalformedMessage { discarded_bytes } = &e
            && is_fetch_response(discarded_bytes.declassify())
            && let Some(Plan::Fetch(plan)) = self.plan.as_mut()
        {
            tracing::warn!("a FETCH response from the provider did not parse; the FETCH ends NO");
            plan.unanswered();
            return;
        }
        tracing::warn!(error = %e, "unparseable response from the provider");
        self.bye("unparseable response from the provider");
        self.step = Step::Close;
    }
}

/// Is `bytes` an untagged FETCH response (`* n FETCH ...`)?
fn is_fetch_response(bytes: &[u8]) -> bool {
    let Some(rest) = bytes.strip_prefix(b"* ") else {
        return false;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0
        && rest
            .get(digits..digits + 7)
            .is_some_and(|w| w.eq_ignore_ascii_case(b" FETCH "))
}

#[cfg(test)]
mod compress_tests;
mod in_flight;
mod list_raw;
mod multiappend;
#[cfg(test)]
mod multiappend_tests;
mod passthrough;
#[cfg(test)]
mod passthrough_tests;
mod plan;
mod raw;
mod rewrite;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod work_tests;
