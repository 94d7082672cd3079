//! The SMTP session as a state machine, without sockets.
//!
//! The connection handler feeds it client command lines and the provider's
//! replies; it answers with [`Step`]s saying what to do next. Every rule of
//! the relay lives here and is tested without a network: command order,
//! authentication before mail on submission, recipient policy, the "one
//! class per transaction" rule, lockstep with the provider (MAIL and RCPT
//! are answered with the provider's own replies), and fail-closed data
//! handling: the message data is decoded by the session's
//! [`DataDecoder`] (end of data, dot-unstuffing, the size cap) and judged
//! by [`Session::message_received`], which closes the connection after a
//! bare-newline end of data (SMTP smuggling) or runaway data.
//!
//! Lockstep holds across resets: EHLO/HELO inside a transaction sends
//! RSET to the provider before answering, and STARTTLS is refused inside
//! one, so the provider never holds a transaction writ has forgotten. An
//! AUTH exchange ends at both ends together (an overlong response cancels
//! it at the provider with `*`). After [`MAX_ERRORS`] errors (writ's own
//! refusals of a command, and the provider's of a recipient or of
//! credentials) the session is closed with 421 4.7.0, so one session
//! cannot probe addresses or passwords at the provider without end.

use std::sync::Arc;

use crate::config::ListenerKind;
use crate::policy::{Class, Policy, Verdict};

use super::command::{self, Command, Param, ParseError};
use super::data::{DataDecoder, DataFlags};
use super::reply::Reply;

/// Fixed facts of one session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub kind: ListenerKind,
    pub hostname: String,
    pub max_message_size: u64,
    pub max_recipients: usize,
    /// A certificate is configured: STARTTLS can be offered.
    pub tls_available: bool,
}

/// What the connection handler does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send the reply; read the next command.
    Reply(Reply),
    /// Send the reply, then close the connection.
    Close(Reply),
    /// Send the reply, discard anything the client pipelined after
    /// STARTTLS, run the TLS handshake, then call [`Session::tls_started`].
    StartTls(Reply),
    /// Read the message and deliver it as [`Delivery`] says, then call
    /// [`Session::message_received`] and [`Session::delivered`]. For a
    /// sealed delivery, send the reply (354) and seal while reading; for a
    /// plaintext one, open DATA at the provider first (lockstep) and
    /// mirror its answer instead.
    ReadData(Reply, Delivery),
    /// Open the provider connection first when `open`, send `line` to it,
    /// then call [`Session::upstream_reply`]. `line` may hold credentials
    /// (AUTH): never log it.
    Upstream { open: bool, line: String },
}

/// How the received message goes to the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Sealed to the organisation's keys.
    SealForOrganisation,
    /// Sealed to these external recipients' keys.
    SealTo(Vec<age::x25519::Recipient>),
    /// As received.
    Plaintext,
}

/// Why the provider could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// Connecting, TLS, or the connection dropped: the provider is gone.
    Unavailable,
    /// Sealing failed: nothing was sent (fail closed).
    SealFailed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pending {
    None,
    Auth,
    Mail {
        from: String,
    },
    Rcpt {
        to: String,
        class: Class,
        key: Option<age::x25519::Recipient>,
    },
    Rset,
    /// An overlong SASL response: `*` sent to the provider to cancel.
    AuthCancel,
    /// EHLO/HELO in a transaction: RSET sent to the provider; the
    /// greeting reply follows whatever it answers.
    Greet(Reply),
}

#[derive(Debug, Clone)]
struct Transaction {
    /// The reverse-path of MAIL FROM (empty for `<>`).
    mail_from: String,
    recipients: usize,
    /// The forward-paths accepted, as `recipients` counts them.
    rcpt_to: Vec<String>,
    class: Option<Class>,
    keys: Vec<age::x25519::Recipient>,
}

/// Cloned by the shell to ask what the session would send next
/// (pipelining toward the provider); a clone shares nothing mutable.
#[derive(Clone)]
pub struct Session {
    cfg: SessionConfig,
    policy: Arc<Policy>,
    tls: bool,
    greeted: bool,
    authenticated: bool,
    upstream_open: bool,
    tx: Option<Transaction>,
    pending: Pending,
    /// Protocol errors so far (see [`MAX_ERRORS`]).
    errors: usize,
    /// The domain of the last EHLO/HELO (for SPF's HELO identity).
    helo: String,
}

/// Errors a session may make (unknown commands, syntax errors, commands
/// out of order, overlong lines: writ's own 500-504 and 530 replies;
/// recipients refused by writ's policy or by the provider; credentials
/// the provider refused), as Postfix's `smtpd_hard_error_limit`. The next
/// one is answered `421 4.7.0 Too many errors` and the connection closed:
/// a client cannot make writ answer junk, or the provider judge guessed
/// addresses and passwords, for ever. Messages delivered do not start the
/// count again (else a probe could deliver one now and then and go on);
/// a sender with that many refusals reconnects.
pub const MAX_ERRORS: usize = 20;

/// Longest line taken during an AUTH exchange (RFC 4954 §4: at least
/// 12,288 octets, for long tokens such as XOAUTH2's), or the configured
/// `max_line_length` if that is larger.
pub const MAX_SASL_LINE: usize = 12_288;

fn reply(code: u16, text: &str) -> Reply {
    Reply::new(code, text)
}

impl Session {
    pub fn new(cfg: SessionConfig, policy: Arc<Policy>, tls: bool) -> Session {
        Session {
            cfg,
            policy,
            tls,
            greeted: false,
            authenticated: false,
            upstream_open: false,
            tx: None,
            pending: Pending::None,
            errors: 0,
            helo: String::new(),
        }
    }

    /// Counts a protocol error answered with `r`: past [`MAX_ERRORS`],
    /// 421 and close instead.
    fn error(&mut self, r: Reply) -> Step {
        self.count_error().unwrap_or(Step::Reply(r))
    }

    /// Counts a protocol error; `Some` (421, close) past [`MAX_ERRORS`].
    fn count_error(&mut self) -> Option<Step> {
        if self.errors >= MAX_ERRORS {
            return Some(Step::Close(reply(
                421,
                "4.7.0 Too many errors; closing the connection",
            )));
        }
        self.errors += 1;
        None
    }

    /// A command line longer than `smtp.max_line_length` (dropped unread):
    /// 500 5.5.6, counted as a protocol error.
    pub fn line_too_long(&mut self) -> Step {
        self.error(reply(500, "5.5.6 Line too long"))
    }

    /// The greeting sent when the client connects.
    pub fn greeting(&self) -> Reply {
        reply(220, &format!("{} ESMTP writ", self.cfg.hostname))
    }

    fn needs_auth(&self) -> bool {
        self.cfg.kind != ListenerKind::Relay
    }

    fn offers_starttls(&self) -> bool {
        self.cfg.tls_available && !self.tls && self.cfg.kind != ListenerKind::Submissions
    }

    /// Has an AUTH exchange started and not finished? Then client lines are
    /// SASL responses for [`Session::auth_line`], not commands.
    pub fn in_auth(&self) -> bool {
        self.pending == Pending::Auth
    }

    /// The current transaction's SMTP identities for SPF: the EHLO/HELO
    /// domain and the MAIL FROM reverse-path (empty for `<>`).
    pub fn sender_identities(&self) -> (&str, &str) {
        (
            &self.helo,
            self.tx.as_ref().map_or("", |tx| tx.mail_from.as_str()),
        )
    }

    /// The forward-paths the provider accepted in the current transaction
    /// (at most `max_recipients`), for the content scanner.
    pub fn accepted_recipients(&self) -> &[String] {
        self.tx.as_ref().map_or(&[], |tx| tx.rcpt_to.as_slice())
    }

    /// Is a transaction open (MAIL accepted, not yet finished)? The
    /// handler lets it finish before shutting down.
    pub fn in_transaction(&self) -> bool {
        self.tx.is_some() || self.pending != Pending::None
    }

    /// Is the provider connection open (the handler sends QUIT at the end)?
    pub fn upstream_open(&self) -> bool {
        self.upstream_open
    }

    fn ehlo_reply(&self, domain: &str) -> Reply {
        let mut lines = vec![
            format!("{} greets {domain}", self.cfg.hostname),
            "PIPELINING".into(),
            format!("SIZE {}", self.cfg.max_message_size),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "DSN".into(),
        ];
        if self.offers_starttls() {
            lines.push("STARTTLS".into());
        }
        if self.needs_auth() && self.tls && !self.authenticated {
            lines.push("AUTH PLAIN LOGIN XOAUTH2".into());
        }
        Reply { code: 250, lines }
    }

    /// A client command line (without CRLF).
    pub fn command(&mut self, line: &[u8]) -> Step {
        match self.command_step(line) {
            Step::Reply(r) if matches!(r.code, 500..=504 | 530) => self.error(r),
            step => step,
        }
    }

    fn command_step(&mut self, line: &[u8]) -> Step {
        let cmd = match command::parse(line) {
            Ok(c) => c,
            Err(ParseError::Unknown) => {
                return Step::Reply(reply(500, "5.5.2 Command not recognized"));
            }
            Err(ParseError::Syntax(why)) => {
                return Step::Reply(reply(501, &format!("5.5.4 Syntax error: {why}")));
            }
        };
        match cmd {
            Command::Ehlo(domain) => {
                let r = self.ehlo_reply(&domain);
                self.helo = domain;
                self.greet(r)
            }
            Command::Helo(domain) => {
                let r = reply(250, &format!("{} greets {domain}", self.cfg.hostname));
                self.helo = domain;
                self.greet(r)
            }
            Command::StartTls => {
                if !self.offers_starttls() {
                    return Step::Reply(reply(502, "5.5.1 STARTTLS not available"));
                }
                if self.tx.is_some() {
                    // As Postfix: the provider's transaction would outlive
                    // ours (RFC 3207 §4.2 forgets it only at writ).
                    return Step::Reply(reply(
                        503,
                        "5.5.1 STARTTLS not allowed during a mail transaction",
                    ));
                }
                Step::StartTls(reply(220, "2.0.0 Ready to start TLS"))
            }
            Command::Auth { mechanism, initial } => self.auth(&mechanism, initial),
            Command::Mail { from, params } => self.mail(from, params),
            Command::Rcpt { to, params } => self.rcpt(to, params),
            Command::Data => self.data(),
            Command::Bdat => Step::Reply(reply(502, "5.5.1 BDAT not supported (no CHUNKING)")),
            Command::Rset => {
                if self.tx.is_some() && self.upstream_open {
                    self.tx = None;
                    self.pending = Pending::Rset;
                    return Step::Upstream {
                        open: false,
                        line: "RSET".into(),
                    };
                }
                self.tx = None;
                Step::Reply(reply(250, "2.0.0 OK"))
            }
            Command::Noop => Step::Reply(reply(250, "2.0.0 OK")),
            Command::Quit => Step::Close(reply(221, "2.0.0 Bye")),
            Command::Vrfy => Step::Reply(reply(
                252,
                "2.1.5 Cannot VRFY user, but will accept message",
            )),
            Command::Expn => Step::Reply(reply(502, "5.5.1 EXPN not supported")),
            Command::Help => Step::Reply(reply(214, "2.0.0 See RFC 5321")),
        }
    }

    /// EHLO or HELO (answered `r`): it ends any transaction (RFC 5321
    /// §4.1.4), at the provider too: RSET there first, so that the
    /// provider does not hold the old MAIL and RCPTs (the next MAIL would
    /// be a nested one).
    fn greet(&mut self, r: Reply) -> Step {
        self.greeted = true;
        if self.tx.take().is_some() && self.upstream_open {
            self.pending = Pending::Greet(r);
            return Step::Upstream {
                open: false,
                line: "RSET".into(),
            };
        }
        Step::Reply(r)
    }

    fn auth(&mut self, mechanism: &str, initial: Option<String>) -> Step {
        if !self.greeted {
            return Step::Reply(reply(503, "5.5.1 Send EHLO first"));
        }
        if !self.needs_auth() {
            return Step::Reply(reply(502, "5.5.1 AUTH not available on this port"));
        }
        if !self.tls {
            return Step::Reply(reply(530, "5.7.0 Must issue a STARTTLS command first"));
        }
        if self.authenticated {
            return Step::Reply(reply(503, "5.5.1 Already authenticated"));
        }
        if self.tx.is_some() {
            return Step::Reply(reply(503, "5.5.1 AUTH not allowed during a transaction"));
        }
        if !matches!(mechanism, "PLAIN" | "LOGIN" | "XOAUTH2") {
            return Step::Reply(reply(504, "5.5.4 Unrecognized authentication type"));
        }
        self.pending = Pending::Auth;
        let line = match initial {
            Some(i) => format!("AUTH {mechanism} {i}"),
            None => format!("AUTH {mechanism}"),
        };
        Step::Upstream {
            open: !self.upstream_open,
            line,
        }
    }

    /// A client line during an AUTH exchange longer than the handler
    /// takes ([`MAX_SASL_LINE`], or `max_line_length` if larger): the
    /// exchange is cancelled at the provider (`*`, RFC 4954 §4) and the
    /// client told `500 5.5.6`; nothing of the line is forwarded, and the
    /// client's next line is a command again. Counted as a protocol error.
    pub fn auth_line_too_long(&mut self) -> Step {
        if let Some(close) = self.count_error() {
            return close;
        }
        self.pending = Pending::AuthCancel;
        Step::Upstream {
            open: false,
            line: "*".into(),
        }
    }

    /// A client line during an AUTH exchange (a SASL response, or `*`).
    pub fn auth_line(&mut self, line: &[u8]) -> Step {
        Step::Upstream {
            open: false,
            line: String::from_utf8_lossy(line).into_owned(),
        }
    }

    fn mail(&mut self, from: String, params: Vec<Param>) -> Step {
        if !self.greeted {
            return Step::Reply(reply(503, "5.5.1 Send EHLO first"));
        }
        if self.needs_auth() && !self.authenticated {
            return Step::Reply(reply(530, "5.7.0 Authentication required"));
        }
        if self.tx.is_some() {
            return Step::Reply(reply(503, "5.5.1 Nested MAIL command"));
        }
        if self.needs_auth() && !self.upstream_open {
            // The provider session the client's AUTH logged in is gone, and
            // writ keeps no credentials: a new one would be anonymous, and
            // the provider would refuse the recipients for good.
            return Step::Close(reply(
                421,
                "4.4.2 Connection to the mail provider lost; reconnect and authenticate again",
            ));
        }
        for p in &params {
            if p.key == "SIZE" {
                match p.value.as_deref().and_then(|v| v.parse::<u64>().ok()) {
                    Some(n) if n > self.cfg.max_message_size => {
                        return Step::Reply(reply(552, "5.3.4 Message size exceeds fixed limit"));
                    }
                    Some(_) => {}
                    None => return Step::Reply(reply(501, "5.5.4 Bad SIZE parameter")),
                }
            }
        }
        let mut line = format!("MAIL FROM:<{from}>");
        for p in &params {
            line.push(' ');
            line.push_str(&p.render());
        }
        self.pending = Pending::Mail { from };
        Step::Upstream {
            open: !self.upstream_open,
            line,
        }
    }

    fn rcpt(&mut self, to: String, params: Vec<Param>) -> Step {
        let Some(tx) = &self.tx else {
            return Step::Reply(reply(503, "5.5.1 Need MAIL before RCPT"));
        };
        if tx.recipients >= self.cfg.max_recipients {
            return Step::Reply(reply(452, "4.5.3 Too many recipients"));
        }
        let relay_only = self.cfg.kind == ListenerKind::Relay;
        let (class, key) = match self.policy.classify(&to, relay_only) {
            Verdict::Refuse(why) => {
                return self.error(reply(550, &format!("5.7.1 <{to}>: {why}")));
            }
            Verdict::Accept { class, key } => (class, key),
        };
        if tx.class.is_some_and(|c| c != class) {
            // RFC 5321 clients send the rest in a new transaction.
            return Step::Reply(reply(
                452,
                "4.5.3 Recipient of another class: send it in a separate transaction",
            ));
        }
        let mut line = format!("RCPT TO:<{to}>");
        for p in &params {
            line.push(' ');
            line.push_str(&p.render());
        }
        self.pending = Pending::Rcpt { to, class, key };
        Step::Upstream { open: false, line }
    }

    fn data(&mut self) -> Step {
        let Some(tx) = &self.tx else {
            return Step::Reply(reply(503, "5.5.1 Need MAIL before DATA"));
        };
        if tx.recipients == 0 {
            return Step::Reply(reply(554, "5.5.1 No valid recipients"));
        }
        let delivery = match tx.class {
            Some(Class::Protected) | None => Delivery::SealForOrganisation,
            Some(Class::ExternalSealed) => Delivery::SealTo(tx.keys.clone()),
            Some(Class::Plaintext) => Delivery::Plaintext,
        };
        Step::ReadData(reply(354, "End data with <CR><LF>.<CR><LF>"), delivery)
    }

    /// The decoder for the message data of the transaction just started
    /// (after [`Step::ReadData`]): it keeps at most `max_message_size`
    /// octets.
    pub fn data_decoder(&self) -> DataDecoder {
        DataDecoder::new(self.cfg.max_message_size)
    }

    /// Would [`Session::message_received`] refuse a message with these
    /// flags? (The shell then stops the seal job early.)
    pub fn refuses(flags: &DataFlags) -> bool {
        !flags.acceptable()
    }

    /// The data phase is over (the end marker seen, or the decoder gave
    /// up). `Err` refuses the message with the step to run (after the
    /// handler has reset the provider's side: RSET, or dropping a
    /// connection that is inside DATA):
    ///
    /// - a bare-newline end (`LF . LF`, `LF . CRLF`, `CRLF . LF`: SMTP
    ///   smuggling): 554 5.6.0 and **close**, so that nothing after it is
    ///   read as a command;
    /// - more than twice `max_message_size` without an end: 552 5.3.4 and
    ///   close;
    /// - too large: 552 5.3.4; a bare LF anywhere else: 554 5.6.0; a NUL
    ///   (RFC 5321 §2.3.8): 554 5.6.0; the session goes on.
    ///
    /// 8-bit data sent without `BODY=8BITMIME` is accepted, as RFC 6152 §3
    /// allows and as Postfix and Exchange do: sealing turns the body into
    /// 7-bit armor, so the provider never receives undeclared 8-bit body
    /// content (unprotected header fields keep their bytes, as sent).
    pub fn message_received(&mut self, flags: DataFlags) -> Result<(), Step> {
        let refuse = if flags.bare_newline_end {
            Step::Close(reply(
                554,
                "5.6.0 Bare LF at the end of the message data: lines must end with CRLF \
                 (RFC 5321); closing the connection",
            ))
        } else if flags.runaway {
            Step::Close(reply(
                552,
                "5.3.4 Message size exceeds fixed limit; closing the connection",
            ))
        } else if flags.too_large {
            Step::Reply(reply(552, "5.3.4 Message size exceeds fixed limit"))
        } else if flags.bare_lf {
            Step::Reply(reply(
                554,
                "5.6.0 Bare LF in message: lines must end with CRLF (RFC 5321)",
            ))
        } else if flags.nul {
            Step::Reply(reply(554, "5.6.0 NUL octet in message (RFC 5321)"))
        } else if flags.bare_cr_dot {
            Step::Reply(reply(
                554,
                "5.6.0 Bare CR next to a line's dot in message: lines must end with CRLF (RFC 5321)",
            ))
        } else {
            return Ok(());
        };
        self.tx = None;
        Err(refuse)
    }

    /// The outcome of delivering the message: the provider's final reply
    /// (mirrored to the client), or why there is none.
    pub fn delivered(&mut self, result: Result<Reply, UpstreamFailure>) -> Reply {
        self.tx = None;
        match result {
            Ok(r) => r,
            Err(UpstreamFailure::SealFailed) => {
                reply(451, "4.3.0 Could not seal the message; try again later")
            }
            Err(UpstreamFailure::Unavailable) => {
                self.upstream_open = false;
                reply(
                    451,
                    "4.4.2 Connection to the mail provider lost; try again later",
                )
            }
        }
    }

    /// The provider connection was closed by the handler (e.g. to abandon
    /// a DATA in progress).
    pub fn upstream_dropped(&mut self) {
        self.upstream_open = false;
    }

    /// The TLS handshake finished: forget everything from before it
    /// (RFC 3207 §4.2).
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.greeted = false;
        self.authenticated = false;
        self.tx = None;
    }

    /// The provider's answer to the last [`Step::Upstream`].
    pub fn upstream_reply(&mut self, result: Result<Reply, UpstreamFailure>) -> Step {
        let pending = std::mem::replace(&mut self.pending, Pending::None);
        let r = match result {
            Ok(r) => {
                self.upstream_open = true;
                r
            }
            Err(_) => {
                self.upstream_open = false;
                self.tx = None;
                if let Pending::Greet(r) = pending {
                    // No provider transaction is left: the next MAIL opens
                    // a new connection.
                    return Step::Reply(r);
                }
                return Step::Reply(reply(
                    451,
                    "4.4.1 The mail provider is unavailable; try again later",
                ));
            }
        };
        match pending {
            Pending::None => Step::Reply(r),
            Pending::Auth => {
                if r.code == 334 {
                    self.pending = Pending::Auth;
                } else if r.code == 235 {
                    self.authenticated = true;
                } else {
                    return self.error(r);
                }
                Step::Reply(r)
            }
            Pending::Mail { from } => {
                if r.is_positive() {
                    self.tx = Some(Transaction {
                        mail_from: from,
                        recipients: 0,
                        rcpt_to: Vec::new(),
                        class: None,
                        keys: Vec::new(),
                    });
                }
                Step::Reply(r)
            }
            Pending::Rcpt { to, class, key } => {
                if r.is_positive()
                    && let Some(tx) = &mut self.tx
                {
                    tx.recipients += 1;
                    tx.rcpt_to.push(to);
                    tx.class = Some(class);
                    tx.keys.extend(key);
                }
                if !r.is_positive() {
                    return self.error(r);
                }
                Step::Reply(r)
            }
            Pending::Rset => Step::Reply(r),
            Pending::AuthCancel => {
                if r.code == 334 || r.code == 235 {
                    // The provider did not end the exchange as asked:
                    // leave that connection (a later MAIL reconnects).
                    self.upstream_open = false;
                }
                Step::Reply(reply(
                    500,
                    "5.5.6 Authentication line too long; AUTH cancelled",
                ))
            }
            Pending::Greet(greeting) => {
                if !r.is_positive() {
                    // The provider kept its transaction: the next MAIL
                    // opens a new connection instead.
                    self.upstream_open = false;
                }
                Step::Reply(greeting)
            }
        }
    }
}

#[cfg(test)]
mod tests;
