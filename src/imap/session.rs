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
//! parsed, carried through the parser in the command's tag and taken off
//! it before anything else sees the command
//! ([`super::search_return::untag`]);
//! responses imap-types has no form for (ESEARCH, THREAD) are written as
//! text in their place among the others (`raw`). An extended LIST
//! (LIST-EXTENDED, LIST-STATUS) is taken off by [`super::intake`] too and
//! goes to the provider as the client sent it, in the place of a NOOP
//! with its tag (`passthrough`); LIST and LSUB answers pass as the
//! provider wrote them (`list_raw`: imap-types re-spells attributes).
//!
//! While a plan (FETCH, SEARCH with content keys or RETURN options, SORT,
//! THREAD ORDEREDSUBJECT and REFERENCES, a command by number over `$`:
//! [`super::saved_result`]) runs writ's own commands, what the
//! provider sends unasked passes on in order: the plans' commands are of
//! the client's command's kind (by sequence number or by UID), so the
//! provider sends only what it would send the client then, and numbers
//! messages as the client does. A plan that takes the provider's
//! `* SEARCH` (which names no command) starts only once every command
//! before it is answered (`searches`). An EXPUNGE, or with QRESYNC a VANISHED
//! (by UID: [`super::sequence::Vanished`]), renumbers the plan's pending
//! answers; VANISHED (EARLIER) and the VANISHED of a UID EXPUNGE pass as
//! they are (no message content). While a FETCH or SEARCH plan runs, a
//! FETCH that answers none of its commands (a flag change elsewhere)
//! passes with FLAGS, MODSEQ and UID only, as does one during a SELECT (a
//! QRESYNC SELECT's changed messages) whatever runs; other plans ask for
//! no FETCH data and let FETCH responses pass as they would with none
//! running (answers to a FETCH of UID, FLAGS, INTERNALDATE, MODSEQ, which
//! goes to the provider as it is). Once a
//! client command waits behind a plan, [`Session::wants_client_input`]
//! says no: the I/O shell stops reading the client until the plan ends.
//!
//! The session never waits and never does the heavy work itself: opening
//! sealed messages (summaries or whole), decoding BINARY sections,
//! holding messages against SEARCH criteria, the cache's reads and
//! writes for them, sealing an APPEND's message
//! ([`super::append::AppendPlan`], and each of a MULTIAPPEND's,
//! `multiappend`), and ordering or threading the result of a SORT or
//! THREAD (`search_plan::answer`) are jobs the plans submit to the
//! process-wide pool
//! ([`super::fetch::opening`], through [`super::opened`]). When one ends
//! the I/O shell is woken ([`Session::work_done`]) and calls
//! [`Session::advance`], which takes the results that are ready, in the
//! provider's order. While a plan has as many jobs outstanding as it may
//! ([`super::fetch::opening::in_flight`]), or a phase's end waits for
//! them, the session reads none of the provider's responses
//! ([`Session::wants_provider_input`] says no, and `advance` leaves what
//! was read in the provider flow), so the work held per session is bounded.
//!
//! Memory while a plan answers a whole folder, whatever its size: the
//! responses for the client wait in `to_client` until the I/O shell takes
//! them, and the provider's next response is taken only while they are
//! under [`CLIENT_OUTPUT_BYTES`] (each one's answers written out before
//! the next is taken), so a client that reads slowly holds the provider
//! back, not writ's memory. A response once written is dropped at once:
//! the client flow reports it sent with the whole response (a FETCH answer
//! and its body), which is never kept behind a plan with the client's
//! commands (`held`: commands only, at most [`MAX_HELD`]).

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
    /// The selected (or being selected) mailbox's message count as the
    /// provider last told it (EXISTS, less each EXPUNGE since: an upper
    /// bound, VANISHED not counted); `None` until its first EXISTS.
    exists: Option<u32>,
    /// Caps on the client's commands before imap-next parses them.
    intake: Intake,
    /// A LOGIN or AUTHENTICATE succeeded: STARTTLS is over, and the login
    /// timeout no longer applies (the idle timeout does).
    authenticated: bool,
    /// Tags of the commands at the provider (the client's and writ's).
    in_flight: InFlight,
    /// Responses imap-types has no form for: see [`raw`].
    raw: raw::RawResponses,
    /// FETCHes the provider answers itself, in flight (tags): a FETCH plan
    /// waits for them ([`Plan::Quiet`]).
    plain_fetches: VecDeque<Tag<'static>>,
    /// SEARCHRES: the saved result `$`, as UIDs (`None`: empty).
    saved: Option<imap_next::imap_types::sequence::SequenceSet>,
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
    /// `advance` left provider responses untaken: `to_client` reached
    /// [`CLIENT_OUTPUT_BYTES`] ([`Session::output_full`]).
    output_full: bool,
}

/// Client commands parsed while a plan runs that wait in `held` before
/// writ stops reading the client (more may come out of what was already
/// read: at most one read's worth, and one command imap-next holds).
const MAX_HELD: usize = 1;

/// Bytes for the client the session holds before it takes no more of the
/// provider's responses ([`Session::wants_provider_input`]): a client that
/// reads slowly holds the provider back, not writ's memory. One response
/// may cross it (it is written whole).
pub const CLIENT_OUTPUT_BYTES: usize = 1024 * 1024;

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
            exists: None,
            intake: Intake::new(ctx.max_literal_size),
            authenticated: false,
            in_flight: InFlight::default(),
            raw: raw::RawResponses::default(),
            plain_fetches: VecDeque::new(),
            saved: None,
            passthrough: passthrough::Passthrough::default(),
            multiappend: multiappend::MultiAppends::default(),
            pending_compress: None,
            compressed: false,
            runner: Runner::pool(),
            output_full: false,
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

    /// A session over TLS from loopback, its greeting taken, its work
    /// going through `runner` (tests).
    #[cfg(test)]
    pub(crate) fn over_tls(runner: Runner) -> Session {
        let ctx = Context {
            client_tls: true,
            client_loopback: true,
            starttls_listener: false,
            allow_plaintext_auth: false,
            max_literal_size: 1024 * 1024,
        };
        let (_, sealer) = crate::imap::testing::keys();
        let keys: SharedKeys = Arc::new(Vec::<age::x25519::Identity>::new());
        let mut s = Session::new(ctx, keys, sealer).with_runner(runner);
        s.advance();
        s.take_to_client();
        s
    }

    /// Notified when work the session submitted ends: the I/O shell then
    /// runs [`Session::advance`] again (while [`Session::working`]).
    pub fn work_done(&self) -> Arc<tokio::sync::Notify> {
        self.runner.done()
    }

    /// Work of the session's runs off it: wait for [`Session::work_done`]
    /// too.
    pub fn working(&self) -> bool {
        self.plan.as_ref().is_some_and(|p| p.working()) || self.multiappend.running() > 0
    }

    /// Nothing is left to carry out: no work running, no command of the
    /// client's waiting or unanswered by the provider (the connection
    /// ends once so after the client closed its side).
    pub fn settled(&self) -> bool {
        !self.working() && self.held.is_empty() && self.in_flight.is_empty()
    }

    /// The session takes more of the provider's bytes: not while a plan
    /// waits for its work to be done (see the module's header).
    pub fn wants_provider_input(&self) -> bool {
        !self.plan_saturated() && self.to_client.len() < CLIENT_OUTPUT_BYTES
    }

    fn plan_saturated(&self) -> bool {
        self.plan.as_ref().is_some_and(|p| p.saturated())
    }

    /// Opened messages are kept in `cache` (per account and mailbox).
    /// Seals the APPENDs from now on with `sealer` (the keyring was
    /// reloaded: a session in progress follows the new active epoch, so
    /// that nothing it stores is sealed to an epoch `keys retire` may
    /// remove).
    pub fn set_sealer(&mut self, sealer: Sealer) {
        self.sealer = sealer;
    }

    pub fn with_cache(mut self, cache: Option<Arc<Cache>>) -> Session {
        self.cache = cache;
        self
    }

    fn cache_ref(&self) -> Option<CacheRef> {
        Some(CacheRef {
            cache: self.cache.clone()?,
            mailbox: self.selected.clone()?,
            messages: self.exists,
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
                // Answered in turn, almost always: the first one.
                if self.plain_fetches.front() == Some(tag) {
                    self.plain_fetches.pop_front();
                } else if !self.plain_fetches.is_empty() {
                    self.plain_fetches.retain(|t| t != tag);
                }
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
                        // Entries of an older UIDVALIDITY are dropped off
                        // the session (they are never hit meanwhile: the
                        // UIDVALIDITY is part of every entry's key).
                        let cache = Arc::clone(cache);
                        let selected = key.clone();
                        let ticket = cache.select_ticket();
                        drop(
                            self.runner
                                .spawn(move || cache.selected_in_order(&selected, ticket)),
                        );
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
        // Commands read before the switch (held behind a plan) were sent
        // in plaintext or uncompressed: never carried out in the new flow.
        self.held.clear();
        self.server = new_server(&self.ctx);
        self.intake = Intake::new(self.ctx.max_literal_size);
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
        self.output_full = false;
        loop {
            let mut progressed = false;
            // A MULTIAPPEND's sealing jobs that ended make room to read on.
            self.multiappend.poll_jobs();
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
                if self.to_client.len() >= CLIENT_OUTPUT_BYTES {
                    // Taken again once this is written.
                    self.output_full = true;
                    break;
                }
                match self.provider.next() {
                    Ok(event) => {
                        self.provider_sent(&event);
                        self.on_provider(event);
                        // What it gave the client is written out (the
                        // client flow, above) before the next one.
                        progressed = true;
                        break;
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

    /// `advance` stopped taking the provider's responses because the
    /// client's output reached [`CLIENT_OUTPUT_BYTES`]: once it is written,
    /// the I/O shell runs [`Session::advance`] again without waiting for
    /// input (what the provider sent is read already).
    pub fn output_full(&self) -> bool {
        self.output_full
    }

    /// The client may send more: no command waits behind a running plan
    /// (at most [`MAX_HELD`]). The I/O shell stops reading the client
    /// otherwise, so what a client pipelines behind a FETCH waits in its
    /// own socket, not in writ.
    pub fn wants_client_input(&self) -> bool {
        self.held.len() < MAX_HELD
            && self.pending_compress.is_none()
            && self.multiappend.running() < super::fetch::opening::in_flight()
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
                Output::Over => self.plan = None,
                Output::ToProviderLine(tag, line) => self.forward_line(tag, line),
                Output::Saved(set) => self.saved = set,
                Output::Resume(command) => {
                    self.plan = None;
                    self.on_command(command, None);
                }
            }
        }
        // Not past a command that ends the flow (STARTTLS, LOGOUT):
        // what was held behind it was read in the old flow and is dropped
        // with it ([`Session::fresh_client_flow`]).
        while self.plan.is_none() && self.step == Step::Wait {
            let Some(event) = self.held.pop_front() else {
                break;
            };
            self.on_client(event);
        }
    }
}

#[cfg(test)]
mod compress_tests;
mod from_client;
mod from_provider;
mod in_flight;
mod list_raw;
#[cfg(test)]
mod listing_tests;
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
mod saved_tests;
mod searches;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod work_tests;
