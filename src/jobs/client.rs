//! A small typed IMAP client for jobs: the commands a mailbox job sends,
//! as values (imap-types), framed by imap-next's client flow over the
//! provider connection the proxy uses too ([`crate::imap::upstream`]).
//!
//! Each call sends its command(s) and waits for the tagged answers, except
//! the `start_*`/`finish_*` pairs, which let a job put a FETCH and a
//! batch's APPENDs in one flight (the answers are matched by tag; FETCH
//! data by UID and section, and it stays until its FETCH is collected). A
//! provider that is busy (`NO [LIMIT]`, `[UNAVAILABLE]`), says BYE, or goes
//! away gives a [`ClientError`] whose [`ClientError::is_transient`] is
//! true: the job backs off, reconnects and resumes from its checkpoint.
//!
//! What the provider sends is kept only within written caps, so a hostile
//! or broken provider cannot grow a job's memory or hold it for ever:
//!
//! - Each response read is at most [`MAX_RESPONSE`] bytes (or the limit
//!   the connection was opened with).
//! - Untagged data is kept only where a command of writ's needs it
//!   (CAPABILITY, LIST, STATUS, SEARCH; EXISTS and RECENT as their latest
//!   value); everything else is dropped as it arrives. At most
//!   [`MAX_KEPT`] untagged responses, holding about [`MAX_KEPT_BYTES`],
//!   are kept for the commands in flight: past either is
//!   [`ClientError::TooManyResponses`], which ends the session.
//! - FETCH data is kept only for a UID a FETCH in flight asked for, in the
//!   section it asked for, and once: a second body for the same UID and
//!   section is [`ClientError::AnsweredTwice`] (the session ends; neither
//!   answer is used). Flags, dates and sizes sent apart from the body are
//!   merged into that UID's one record.
//! - A whole message (`BODY[]`) is handed on only if it is whole: `NIL`,
//!   empty, a partial answer (`BODY[]<n>`) or a length other than the
//!   message's `RFC822.SIZE` (always asked with it) makes it an
//!   [`Incomplete`] answer instead, which callers treat as that message's
//!   failure (the original is never touched on its strength).
//! - Tagged answers are kept only for tags writ sent and awaits.
//! - Every read, and every step of a write (some bytes out or in), has
//!   the provider timeout: a message larger than the timeout × the
//!   uplink's rate still goes out; every command also has an
//!   overall deadline of [`COMMAND_TIMEOUTS`] provider timeouts, counted
//!   again each time the provider completes something awaited (a tagged
//!   answer, a message body asked for): a provider that trickles bytes, or
//!   sends responses nobody awaits, cannot hold a job past it
//!   ([`ClientError::Deadline`]).
//! - Before `UID STORE \Deleted` (pipelined with its `UID EXPUNGE`), the
//!   mailbox's UIDVALIDITY must still be the one it was selected with:
//!   otherwise nothing is stored or expunged
//!   ([`ClientError::UidValidityChanged`]); one announced with the STORE's
//!   own answer stops the job after that EXPUNGE (a mid-session
//!   renumbering, which RFC 3501 gives servers no way to make: waiting
//!   for the STORE's answer first cost a tenth of a job's speed).

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::time::Duration;

use imap_next::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_next::imap_types::command::{Command, CommandBody};
use imap_next::imap_types::core::{AString, Tag, Vec1};
use imap_next::imap_types::datetime::DateTime;
use imap_next::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_next::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_next::imap_types::response::{
    Capability, Code, Data, Status, StatusBody, StatusKind, Tagged,
};
use imap_next::imap_types::search::SearchKey;
use imap_next::imap_types::secret::Secret;
use imap_next::imap_types::sequence::SequenceSet;
use imap_next::{Interrupt, Io, State, client};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout, timeout_at};

mod flight;
mod notify;

pub use flight::{FetchAnswer, Incomplete, PendingAppends, PendingFetch};
pub use notify::WATCH_MAX_RESPONSE;

use super::login::{Credentials, Secret as LoginSecret};
use crate::imap::upstream::{Target, Upstream, UpstreamError};
use crate::net::{ConnectError, Stream};

/// Longest response accepted (a whole message in a literal).
const MAX_RESPONSE: u32 = 256 * 1024 * 1024;

/// Untagged responses kept at most for the commands in flight (the one
/// kind that can legitimately be many is LIST: an account with more
/// mailboxes than this is refused).
pub const MAX_KEPT: usize = 100_000;

/// About the memory the kept untagged responses may hold at once (64 MiB:
/// a SEARCH naming 16 million UIDs, LIST of far more mailboxes than
/// [`MAX_KEPT`]); past it, [`ClientError::TooManyResponses`].
pub const MAX_KEPT_BYTES: usize = 64 * 1024 * 1024;

/// What a kept response holds, about: 4 bytes a UID, a mailbox name's
/// length, a few words for the rest.
fn kept_size(data: &Data<'_>) -> usize {
    const WORDS: usize = 64;
    match data {
        Data::Search(uids, _) => uids.len() * 4 + WORDS,
        Data::List { mailbox, .. } => format!("{mailbox:?}").len() + WORDS,
        Data::Capability(caps) => caps.as_ref().len() * WORDS,
        _ => WORDS,
    }
}

/// A command's overall deadline, in provider timeouts, counted again each
/// time the provider completes something awaited.
pub const COMMAND_TIMEOUTS: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Connect(#[from] UpstreamError),
    #[error("provider connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("the provider did not answer within {0} s")]
    Timeout(u64),
    #[error("the provider closed the connection")]
    Closed,
    #[error("the provider said BYE: {0}")]
    Bye(String),
    #[error("the provider sent a response writ cannot parse")]
    Malformed,
    #[error("login as {user} refused by the provider: {text}")]
    Login { user: String, text: String },
    #[error("{command} refused by the provider: {text}")]
    Refused {
        command: &'static str,
        /// `[LIMIT]`, `[UNAVAILABLE]`, ... as sent, if any.
        code: Option<String>,
        text: String,
    },
    #[error("invalid {0} for IMAP")]
    Invalid(&'static str),
    #[error(
        "the mailbox's UIDVALIDITY is {actual}, not {expected} as the request says: its UIDs \
         now name other messages; nothing was fetched (a new request with the current UIDs \
         and UIDVALIDITY is needed)"
    )]
    UidValidity { expected: u32, actual: u32 },
    #[error(
        "the provider changed the mailbox's UIDVALIDITY from {was} to {now} during the job (its \
         UIDs now name other messages): stopped that mailbox without marking or expunging \
         anything; run the job again"
    )]
    UidValidityChanged { was: u32, now: u32 },
    #[error(
        "the provider sent more than {0} untagged responses, or more than 64 MiB of them, to one \
         command (a provider fault or an attack): stopped that mailbox; check the provider \
         before running again"
    )]
    TooManyResponses(usize),
    #[error(
        "the provider answered UID {0} more than once in one FETCH (a provider fault or an \
         attack): stopped that mailbox without using either answer; check the provider before \
         running again"
    )]
    AnsweredTwice(u32),
    #[error(
        "the provider did not finish answering within {0} s (it kept the connection busy \
         without answering); on a slow link raise [provider.imap] timeout_secs"
    )]
    Deadline(u64),
    #[error(
        "the provider showed {scanned} message(s) of {mailbox} but says it holds {exists}, so \
         nothing can be proven about it; run again (if it repeats, the provider hides messages)"
    )]
    ScanShort {
        mailbox: String,
        scanned: usize,
        exists: u32,
    },
}

impl ClientError {
    /// Worth retrying after a pause: the provider is busy or went away,
    /// not a refusal that would repeat.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Io(_)
            | ClientError::Timeout(_)
            | ClientError::Deadline(_)
            | ClientError::ScanShort { .. }
            | ClientError::Closed
            | ClientError::Bye(_)
            | ClientError::Malformed => true,
            // A certificate the provider's CA did not sign will not sign
            // itself later (rustls reports it as invalid data); a handshake
            // cut short may go through next time.
            ClientError::Connect(UpstreamError::Connect(ConnectError::Tls(e))) => {
                e.kind() != std::io::ErrorKind::InvalidData
            }
            ClientError::Connect(e) => !matches!(
                e,
                UpstreamError::Connect(
                    ConnectError::PlainNotLoopback { .. } | ConnectError::Settings(_)
                )
            ),
            ClientError::Refused { code, .. } => code.as_deref().is_some_and(|c| {
                let c = c.to_ascii_uppercase();
                c.starts_with("LIMIT")
                    || c.starts_with("UNAVAILABLE")
                    || c.starts_with("INUSE")
                    || c.starts_with("SERVERBUG")
            }),
            ClientError::Login { .. }
            | ClientError::Invalid(_)
            | ClientError::UidValidity { .. }
            | ClientError::UidValidityChanged { .. }
            | ClientError::TooManyResponses(_)
            | ClientError::AnsweredTwice(_) => false,
        }
    }
}

/// A mailbox after SELECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selected {
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub exists: u32,
}

/// What one FETCH returned for one message.
#[derive(Debug, Default)]
pub struct Fetched {
    pub uid: u32,
    pub flags: Vec<Flag<'static>>,
    pub internal_date: Option<DateTime>,
    /// `BODY[]` or `BODY[HEADER.FIELDS (...)]`, whichever was asked.
    pub body: Vec<u8>,
}

/// A message to APPEND.
pub struct Appending {
    pub flags: Vec<Flag<'static>>,
    pub date: Option<DateTime>,
    pub message: Vec<u8>,
}

/// What a command's tagged answer said, with the data that came before it.
struct Answer {
    data: Vec<Data<'static>>,
}

pub struct Client {
    flow: client::Client,
    stream: Stream,
    buf: Vec<u8>,
    timeout: Duration,
    capabilities: Vec<String>,
    next_tag: u32,
    /// Untagged data seen since the last command finished, of the kinds
    /// writ's commands need (at most [`MAX_KEPT`]).
    data: Vec<Data<'static>>,
    /// About the memory `data` holds ([`kept_size`]; at most
    /// [`MAX_KEPT_BYTES`]).
    kept_bytes: usize,
    /// UID FETCHes sent by `start_fetch` and not yet collected, in the
    /// order sent, with what arrived for them.
    fetches: Vec<flight::InFlight>,
    /// Tags sent and not yet collected: only their answers are kept.
    outstanding: HashSet<String>,
    /// Tagged answers by tag, as they arrive (pipelined commands).
    answers: HashMap<String, StatusBody<'static>>,
    /// Bumped each time something awaited completes (a tagged answer, a
    /// body asked for): it re-arms the command deadline.
    progress: u64,
    /// The latest UIDVALIDITY the provider announced, and the one the
    /// selected mailbox was selected with (0: none selected).
    uidvalidity: u32,
    selected_uidvalidity: u32,
    uidnext: u32,
}

impl Client {
    /// Connects, logs in and learns the capabilities.
    pub async fn login(target: &Target, credentials: &Credentials) -> Result<Client, ClientError> {
        Client::login_limited(target, credentials, MAX_RESPONSE).await
    }

    /// [`Client::login`] for a connection that reads no response longer
    /// than `max_response` bytes (a longer one is
    /// [`ClientError::Malformed`]).
    pub async fn login_limited(
        target: &Target,
        credentials: &Credentials,
        max_response: u32,
    ) -> Result<Client, ClientError> {
        let up = Upstream::connect(target).await?;
        let mut options = client::Options::default();
        options.discard_greeting = true;
        options.crlf_relaxed = true;
        options.max_response_size = max_response.min(MAX_RESPONSE);
        let mut flow = client::Client::new(options);
        flow.enqueue_input(&up.pending);
        let mut c = Client {
            flow,
            stream: up.stream,
            buf: vec![0; 64 * 1024],
            timeout: target.timeout,
            capabilities: Vec::new(),
            next_tag: 1,
            data: Vec::new(),
            kept_bytes: 0,
            fetches: Vec::new(),
            outstanding: HashSet::new(),
            answers: HashMap::new(),
            progress: 0,
            uidvalidity: 0,
            selected_uidvalidity: 0,
            uidnext: 0,
        };
        c.refresh_capabilities().await?;
        c.authenticate(credentials).await?;
        // Capabilities may change after login.
        c.refresh_capabilities().await?;
        Ok(c)
    }

    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities
            .iter()
            .any(|c| c.eq_ignore_ascii_case(name))
    }

    async fn refresh_capabilities(&mut self) -> Result<(), ClientError> {
        let a = self.run("CAPABILITY", CommandBody::Capability).await?;
        for d in a.data {
            if let Data::Capability(caps) = d {
                self.capabilities = caps.as_ref().iter().map(capability_name).collect();
            }
        }
        Ok(())
    }

    async fn authenticate(&mut self, creds: &Credentials) -> Result<(), ClientError> {
        let user = creds.login_name();
        let refused = |text: String| ClientError::Login {
            user: user.clone(),
            text,
        };
        match &creds.secret {
            LoginSecret::Password(pw) if !self.has_capability("LOGINDISABLED") => {
                let username = AString::try_from(user.clone())
                    .map_err(|_| ClientError::Invalid("user name"))?;
                let password =
                    AString::try_from(secrecy::ExposeSecret::expose_secret(pw).to_string())
                        .map_err(|_| ClientError::Invalid("password"))?;
                let body = CommandBody::Login {
                    username,
                    password: Secret::new(password),
                };
                match self.run("LOGIN", body).await {
                    Ok(_) => Ok(()),
                    Err(ClientError::Refused { text, .. }) => Err(refused(text)),
                    Err(e) => Err(e),
                }
            }
            secret => {
                let (mechanism, response) = match secret {
                    LoginSecret::Password(pw) => (
                        AuthMechanism::Plain,
                        format!("\0{user}\0{}", secrecy::ExposeSecret::expose_secret(pw)),
                    ),
                    LoginSecret::Bearer(token) => (
                        AuthMechanism::XOAuth2,
                        format!(
                            "user={user}\x01auth=Bearer {}\x01\x01",
                            secrecy::ExposeSecret::expose_secret(token)
                        ),
                    ),
                };
                let response = zeroize::Zeroizing::new(response.into_bytes());
                let sasl_ir = self.has_capability("SASL-IR");
                let body = CommandBody::Authenticate {
                    mechanism,
                    initial_response: sasl_ir
                        .then(|| Secret::new(std::borrow::Cow::Owned(response.to_vec()))),
                };
                match self.authenticate_flow(body, &response).await {
                    Ok(()) => Ok(()),
                    Err(ClientError::Refused { text, .. }) => Err(refused(text)),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// AUTHENTICATE: the initial response goes with the command (SASL-IR)
    /// or after the server's continuation; an error challenge (XOAUTH2
    /// sends one before NO) is answered with an empty response.
    async fn authenticate_flow(
        &mut self,
        body: CommandBody<'static>,
        response: &[u8],
    ) -> Result<(), ClientError> {
        let tag = self.tag();
        self.flow.enqueue_command(Command {
            tag: tag.clone(),
            body,
        });
        let mut sent_response = false;
        let deadline = Instant::now() + self.command_limit();
        loop {
            match self.event_by(deadline).await? {
                client::Event::AuthenticateContinuationRequestReceived { .. } => {
                    let data = if sent_response {
                        AuthenticateData::r#continue(Vec::new())
                    } else {
                        sent_response = true;
                        AuthenticateData::r#continue(response.to_vec())
                    };
                    let _ = self.flow.set_authenticate_data(data);
                }
                client::Event::AuthenticateStatusReceived { status, .. } => {
                    self.outstanding.remove(tag.inner());
                    return match status {
                        Status::Tagged(Tagged { body, .. }) if body.kind == StatusKind::Ok => {
                            Ok(())
                        }
                        Status::Tagged(Tagged { body, .. }) => Err(refusal("AUTHENTICATE", &body)),
                        Status::Bye(b) => Err(ClientError::Bye(b.text.to_string())),
                        Status::Untagged(_) => Err(ClientError::Malformed),
                    };
                }
                other => self.note(other)?,
            }
        }
    }

    /// A new tag; its tagged answer will be kept until collected.
    fn tag(&mut self) -> Tag<'static> {
        let t = format!("J{}", self.next_tag);
        self.next_tag += 1;
        self.outstanding.insert(t.clone());
        // "J<digits>" is always a valid tag.
        Tag::unvalidated(t)
    }

    /// A command's overall deadline from now ([`COMMAND_TIMEOUTS`]).
    fn command_limit(&self) -> Duration {
        self.timeout.saturating_mul(COMMAND_TIMEOUTS)
    }

    /// The next event, or [`ClientError::Deadline`] once `deadline` has
    /// passed. The session is not usable after that error.
    async fn event_by(&mut self, deadline: Instant) -> Result<client::Event, ClientError> {
        let limit = self.command_limit().as_secs();
        match timeout_at(deadline, self.event()).await {
            Ok(event) => event,
            Err(_) => Err(ClientError::Deadline(limit)),
        }
    }

    /// Sends one command and waits for its tagged answer; a NO or BAD is
    /// an error.
    async fn run(
        &mut self,
        name: &'static str,
        body: CommandBody<'static>,
    ) -> Result<Answer, ClientError> {
        let tag = self.send(body);
        let status = self.wait_for(tag.inner()).await?;
        let data = self.take_data();
        if status.kind != StatusKind::Ok {
            return Err(refusal(name, &status));
        }
        Ok(Answer { data })
    }

    /// Waits for the tagged answer to `tag`, within the command deadline
    /// (counted again whenever something awaited completes).
    async fn wait_for(&mut self, tag: &str) -> Result<StatusBody<'static>, ClientError> {
        let limit = self.command_limit();
        let mut deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.answers.remove(tag) {
                self.outstanding.remove(tag);
                return Ok(status);
            }
            let progress = self.progress;
            let event = self.event_by(deadline).await?;
            self.note(event)?;
            if self.progress != progress {
                deadline = Instant::now() + limit;
            }
        }
    }

    /// Files an event: data writ needs is kept (within the caps of the
    /// module header), tagged answers to writ's tags kept by tag.
    fn note(&mut self, event: client::Event) -> Result<(), ClientError> {
        match event {
            client::Event::DataReceived { data } => self.keep(data)?,
            client::Event::StatusReceived { status } => match status {
                Status::Tagged(Tagged { tag, body }) => {
                    // An answer to a tag writ did not send (or already
                    // collected) answers nothing, and only the first
                    // answer to a tag counts.
                    if self.outstanding.contains(tag.inner())
                        && !self.answers.contains_key(tag.inner())
                    {
                        self.answers.insert(tag.inner().to_string(), body);
                        self.progress += 1;
                    }
                }
                Status::Bye(b) => return Err(ClientError::Bye(b.text.to_string())),
                Status::Untagged(body) => match body.code {
                    Some(Code::UidValidity(v)) => self.uidvalidity = v.get(),
                    Some(Code::UidNext(n)) => self.uidnext = n.get(),
                    _ => {}
                },
            },
            // A literal refused before it was sent: that is the command's
            // answer.
            client::Event::CommandRejected {
                command,
                status: Status::Tagged(Tagged { body, .. }),
                ..
            } => {
                self.answers.insert(command.tag.inner().to_string(), body);
                self.progress += 1;
            }
            _ => {}
        }
        Ok(())
    }

    /// Keeps untagged data that a command of writ's needs; FETCH data goes
    /// to the FETCH in flight that asked for it ([`flight`]).
    fn keep(&mut self, data: Data<'static>) -> Result<(), ClientError> {
        match data {
            Data::Fetch { items, .. } => return self.file_fetch(items.into_iter().collect()),
            // Only the latest count matters.
            Data::Exists(_) | Data::Recent(_) => {
                let same =
                    |d: &Data<'_>| std::mem::discriminant(d) == std::mem::discriminant(&data);
                if let Some(at) = self.data.iter().position(same) {
                    self.data[at] = data;
                    return Ok(());
                }
            }
            Data::Capability(_) | Data::List { .. } | Data::Status { .. } | Data::Search(..) => {}
            // EXPUNGE, FLAGS, ... : nothing here asks for them.
            _ => return Ok(()),
        }
        self.kept_bytes += kept_size(&data);
        if self.data.len() >= MAX_KEPT || self.kept_bytes > MAX_KEPT_BYTES {
            return Err(ClientError::TooManyResponses(MAX_KEPT));
        }
        self.data.push(data);
        Ok(())
    }

    /// Refuses to go on when the provider announced a UIDVALIDITY other
    /// than the one the mailbox was selected with.
    fn check_uidvalidity(&self) -> Result<(), ClientError> {
        if self.selected_uidvalidity != 0 && self.uidvalidity != self.selected_uidvalidity {
            return Err(ClientError::UidValidityChanged {
                was: self.selected_uidvalidity,
                now: self.uidvalidity,
            });
        }
        Ok(())
    }

    /// The provider's next event before `deadline`; `None` once it has
    /// passed. Reads are cancel-safe: a read cut short by the deadline
    /// loses nothing (the caller must not be writing meanwhile).
    async fn event_before(
        &mut self,
        deadline: tokio::time::Instant,
    ) -> Result<Option<client::Event>, ClientError> {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let usual = self.timeout;
        self.timeout = left;
        let event = self.event().await;
        self.timeout = usual;
        match event {
            Ok(e) => Ok(Some(e)),
            Err(ClientError::Timeout(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The next event of the flow, reading and writing as needed.
    async fn event(&mut self) -> Result<client::Event, ClientError> {
        loop {
            match self.flow.next() {
                Ok(event) => return Ok(event),
                Err(Interrupt::Io(Io::Output(bytes))) => self.write_reading(&bytes).await?,
                Err(Interrupt::Io(Io::NeedMoreInput)) => {
                    let _ = self.stream.flush().await;
                    let n = timeout(self.timeout, self.stream.read(&mut self.buf))
                        .await
                        .map_err(|_| ClientError::Timeout(self.timeout.as_secs()))??;
                    if n == 0 {
                        return Err(ClientError::Closed);
                    }
                    self.flow.enqueue_input(&self.buf[..n]);
                }
                Err(Interrupt::Error(_)) => return Err(ClientError::Malformed),
            }
        }
    }

    /// Every mailbox name the account has (LIST "" "*"), minus those that
    /// cannot be selected.
    pub async fn list(&mut self) -> Result<Vec<String>, ClientError> {
        Ok(self
            .list_with_attributes()
            .await?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }

    pub async fn select(
        &mut self,
        mailbox: &str,
        read_only: bool,
    ) -> Result<Selected, ClientError> {
        let mailbox = mailbox_value(mailbox)?;
        let body = if read_only {
            CommandBody::Examine {
                mailbox,
                parameters: Vec::new(),
            }
        } else {
            CommandBody::Select {
                mailbox,
                parameters: Vec::new(),
            }
        };
        self.uidvalidity = 0;
        self.selected_uidvalidity = 0;
        self.uidnext = 0;
        let a = self
            .run(if read_only { "EXAMINE" } else { "SELECT" }, body)
            .await?;
        let mut exists = 0;
        for d in &a.data {
            if let Data::Exists(n) = d {
                exists = *n;
            }
        }
        if self.uidvalidity == 0 {
            // RFC 3501 requires UIDVALIDITY; without it UIDs mean nothing.
            return Err(ClientError::Refused {
                command: "SELECT",
                code: None,
                text: "the provider sent no UIDVALIDITY".into(),
            });
        }
        self.selected_uidvalidity = self.uidvalidity;
        Ok(Selected {
            uidvalidity: self.uidvalidity,
            uidnext: self.uidnext,
            exists,
        })
    }

    /// `UID SEARCH` with the given keys ANDed; the UIDs found, ascending.
    pub async fn uid_search(
        &mut self,
        keys: Vec<SearchKey<'static>>,
    ) -> Result<Vec<u32>, ClientError> {
        let criteria = Vec1::try_from(keys).map_err(|_| ClientError::Invalid("search"))?;
        let a = self
            .run(
                "UID SEARCH",
                CommandBody::Search {
                    charset: None,
                    criteria,
                    uid: true,
                },
            )
            .await?;
        let mut uids: Vec<u32> = a
            .data
            .into_iter()
            .filter_map(|d| match d {
                Data::Search(found, ..) => Some(found),
                _ => None,
            })
            .flatten()
            .map(NonZeroU32::get)
            .collect();
        uids.sort_unstable();
        uids.dedup();
        Ok(uids)
    }

    /// `UID FETCH uids (UID FLAGS INTERNALDATE BODY.PEEK[section])`, with
    /// `RFC822.SIZE` for a whole message: `header_fields` empty means the
    /// whole message. See [`Client::finish_fetch`].
    pub async fn uid_fetch(
        &mut self,
        uids: &[u32],
        header_fields: &[&str],
    ) -> Result<FetchAnswer, ClientError> {
        match self.start_fetch(uids, header_fields)? {
            Some(pending) => self.finish_fetch(pending).await,
            None => Ok(FetchAnswer::default()),
        }
    }

    /// APPENDs every message to `mailbox`, pipelined when the provider
    /// offers LITERAL+ (one round trip for the batch). Returns, in order,
    /// each message's new UID (APPENDUID) or why it was refused.
    pub async fn append_many(
        &mut self,
        mailbox: &str,
        messages: Vec<Appending>,
    ) -> Result<Vec<Result<Option<u32>, ClientError>>, ClientError> {
        let pending = self.start_appends(mailbox, messages)?;
        self.finish_appends(pending).await
    }

    /// Sets \Deleted on `uids` and expunges exactly those (UID EXPUNGE,
    /// RFC 4315); with `expunge_all`, a plain EXPUNGE instead (which also
    /// removes anything else marked \Deleted). Neither is sent unless the
    /// mailbox's UIDVALIDITY is still the one it was selected with
    /// ([`ClientError::UidValidityChanged`]; looked at again after both
    /// answers, to stop what follows).
    pub async fn delete(&mut self, uids: &[u32], expunge_all: bool) -> Result<(), ClientError> {
        let Some(set) = uid_set(uids) else {
            return Ok(());
        };
        self.check_uidvalidity()?;
        // Pipelined: one round trip (each batch's, on the job's critical
        // path). A UIDVALIDITY announced with the STORE's own answer is
        // seen after the EXPUNGE was sent: a provider that renumbers a
        // mailbox in the middle of a session (RFC 3501 gives no way to;
        // servers close the session) can at most have writ expunge what
        // the UIDs named then, as the provider can do itself; writ stops
        // at its next command.
        let store = self.send(CommandBody::Store {
            sequence_set: set.clone(),
            kind: StoreType::Add,
            response: StoreResponse::Silent,
            flags: vec![Flag::Deleted],
            uid: true,
            modifiers: Vec::new(),
        });
        let (name, body) = if expunge_all {
            ("EXPUNGE", CommandBody::Expunge)
        } else {
            ("UID EXPUNGE", CommandBody::ExpungeUid { sequence_set: set })
        };
        let expunge = self.send(body);
        let stored = self.wait_for(store.inner()).await?;
        let expunged = self.wait_for(expunge.inner()).await?;
        self.take_data();
        for (command, status) in [("UID STORE", stored), (name, expunged)] {
            if status.kind != StatusKind::Ok {
                return Err(refusal(command, &status));
            }
        }
        self.check_uidvalidity()
    }

    /// Which of `uids` the mailbox still holds (`UID SEARCH UID set`).
    pub async fn still_present(&mut self, uids: &[u32]) -> Result<Vec<u32>, ClientError> {
        let Some(set) = uid_set(uids) else {
            return Ok(Vec::new());
        };
        let found = self.uid_search(vec![SearchKey::Uid(set)]).await?;
        // A UID set's `*` or range may name UIDs beyond `uids`.
        Ok(found.into_iter().filter(|u| uids.contains(u)).collect())
    }

    /// The untagged data kept so far (FETCH data is never here: it stays
    /// with the FETCH that asked for it).
    fn take_data(&mut self) -> Vec<Data<'static>> {
        self.kept_bytes = 0;
        std::mem::take(&mut self.data)
    }

    /// Enqueues a command; its answer is awaited with `wait_for`.
    fn send(&mut self, body: CommandBody<'static>) -> Tag<'static> {
        let tag = self.tag();
        self.flow.enqueue_command(Command {
            tag: tag.clone(),
            body,
        });
        tag
    }

    /// Every selectable mailbox with its LIST attributes as sent
    /// (`\Drafts`, `\Sent`, ... where the provider names special uses,
    /// RFC 6154), for the sweep, which leaves some of them alone.
    pub async fn list_with_attributes(
        &mut self,
    ) -> Result<Vec<(String, Vec<String>)>, ClientError> {
        let a = self
            .run(
                "LIST",
                CommandBody::List {
                    reference: Mailbox::try_from("")
                        .map_err(|_| ClientError::Invalid("mailbox"))?,
                    mailbox_wildcard: ListMailbox::try_from("*")
                        .map_err(|_| ClientError::Invalid("mailbox"))?,
                },
            )
            .await?;
        let mut out = Vec::new();
        for d in a.data {
            if let Data::List { items, mailbox, .. } = d {
                let attributes: Vec<String> = items.iter().map(|i| i.to_string()).collect();
                let noselect = attributes.iter().any(|a| {
                    a.eq_ignore_ascii_case("\\noselect") || a.eq_ignore_ascii_case("\\nonexistent")
                });
                if !noselect {
                    out.push((mailbox_name(&mailbox), attributes));
                }
            }
        }
        Ok(out)
    }

    /// IDLE (RFC 2177) in the selected mailbox until the provider reports
    /// new messages (EXISTS, RECENT; flag changes and expunges are not
    /// news) or `wait` has passed, then DONE and its tagged answer (under
    /// the usual timeout). True when new messages were reported. Waits at
    /// most `wait` plus one provider timeout.
    pub async fn idle(&mut self, wait: Duration) -> Result<bool, ClientError> {
        let tag = self.send(CommandBody::Idle);
        let accepted_by = Instant::now() + self.command_limit();
        loop {
            match self.event_by(accepted_by).await? {
                client::Event::IdleAccepted { .. } => break,
                client::Event::IdleRejected { status, .. } => {
                    return Err(match status {
                        Status::Tagged(Tagged { body, .. }) => refusal("IDLE", &body),
                        Status::Bye(b) => ClientError::Bye(b.text.to_string()),
                        Status::Untagged(_) => ClientError::Malformed,
                    });
                }
                other => self.note(other)?,
            }
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut changed = false;
        while !changed {
            // Nothing is written while idling.
            match self.event_before(deadline).await? {
                None => break,
                Some(client::Event::DataReceived { data }) => {
                    changed = matches!(data, Data::Exists(_) | Data::Recent(_));
                }
                Some(other) => self.note(other)?,
            }
        }
        self.flow.set_idle_done();
        let status = self.wait_for(tag.inner()).await?;
        // New mail announced before IDLE was accepted or after DONE (its
        // EXISTS comes with the tagged OK) counts too: dropping it would
        // leave the mail waiting for the next poll.
        changed |= self
            .data
            .iter()
            .any(|d| matches!(d, Data::Exists(_) | Data::Recent(_)));
        self.data.clear();
        self.kept_bytes = 0;
        if status.kind != StatusKind::Ok {
            return Err(refusal("IDLE", &status));
        }
        Ok(changed)
    }

    /// LOGOUT, best effort: the job is done either way.
    pub async fn logout(mut self) {
        let _ = timeout(
            Duration::from_secs(5),
            self.run("LOGOUT", CommandBody::Logout),
        )
        .await;
    }
}

fn uid_set(uids: &[u32]) -> Option<SequenceSet> {
    let uids: Vec<NonZeroU32> = uids.iter().filter_map(|&u| NonZeroU32::new(u)).collect();
    SequenceSet::try_from(uids.as_slice()).ok()
}

fn capability_name(c: &Capability<'_>) -> String {
    c.to_string()
}

fn mailbox_value(name: &str) -> Result<Mailbox<'static>, ClientError> {
    Mailbox::try_from(name.to_string()).map_err(|_| ClientError::Invalid("mailbox name"))
}

fn mailbox_name(m: &Mailbox<'_>) -> String {
    match m {
        Mailbox::Inbox => "INBOX".to_string(),
        Mailbox::Other(o) => String::from_utf8_lossy(o.as_ref()).into_owned(),
    }
}

fn refusal(command: &'static str, status: &StatusBody<'_>) -> ClientError {
    ClientError::Refused {
        command,
        code: status.code.as_ref().map(code_text),
        text: status.text.to_string(),
    }
}

fn code_text(code: &Code<'_>) -> String {
    match code {
        Code::Other(o) => String::from_utf8_lossy(o.inner()).into_owned(),
        other => format!("{other:?}").to_ascii_uppercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(code: Option<&str>) -> ClientError {
        ClientError::Refused {
            command: "APPEND",
            code: code.map(str::to_string),
            text: "no".into(),
        }
    }

    #[test]
    fn busy_and_gone_providers_are_transient_refusals_are_not() {
        for e in [
            refused(Some("LIMIT")),
            refused(Some("UNAVAILABLE")),
            refused(Some("INUSE")),
            ClientError::Bye("later".into()),
            ClientError::Closed,
            ClientError::Timeout(5),
            ClientError::Malformed,
        ] {
            assert!(e.is_transient(), "{e:?}");
        }
        for e in [
            refused(None),
            refused(Some("OVERQUOTA")),
            refused(Some("TOOBIG")),
            ClientError::Login {
                user: "a".into(),
                text: "no".into(),
            },
            ClientError::Invalid("mailbox name"),
        ] {
            assert!(!e.is_transient(), "{e:?}");
        }
    }

    #[test]
    fn uid_sets_skip_zero_and_empty_is_none() {
        assert!(uid_set(&[]).is_none());
        assert!(uid_set(&[0]).is_none());
        assert!(uid_set(&[3, 1, 2]).is_some());
    }

    #[test]
    fn codes_are_named_as_sent() {
        let code = Code::Other(imap_next::imap_types::response::CodeOther::unvalidated(
            &b"LIMIT"[..],
        ));
        assert_eq!(code_text(&code), "LIMIT");
        assert_eq!(code_text(&Code::OverQuota), "OVERQUOTA");
    }
}
