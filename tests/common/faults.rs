//! Fault injection for the provider's IMAP: a loopback TCP proxy that
//! forwards a client's IMAP session to a server (normally
//! [`Provider::imap_addr`](super::Provider::imap_addr)) and, by rule,
//! answers, ends or breaks it instead:
//!
//! - [`Faults::throttle`]: the matching command is answered `<tag> NO
//!   [LIMIT] Too many requests` and not forwarded ([`Faults::answer`] for any
//!   other answer). An APPEND's literals are swallowed: after a
//!   synchronising literal `{n}` the NO goes out at once, with no `+`
//!   continuation, so the client does not send the literal (RFC 3501 7.5);
//!   a non-synchronising literal `{n+}` (LITERAL+) is read and dropped, then
//!   the NO is sent.
//! - [`Faults::bye`]: instead of the matching command, `* BYE [UNAVAILABLE]
//!   try later` and both connections closed.
//! - [`Faults::cut`]: the matching command is not forwarded and both
//!   connections are closed, without a word.
//! - [`Faults::lose_reply`]: the matching command is forwarded and done by
//!   the server, but its tagged reply is withheld and both connections are
//!   closed (the client cannot know whether it happened).
//! - [`Faults::cut_after_bytes`]: the selected connections are closed,
//!   without a word, once the client has sent N bytes on them (exactly those
//!   N bytes reach the server).
//! - [`Faults::uplink`]: a slow link toward the provider: the client's
//!   bytes are read at most N a second (answers come back at full speed).
//!   It paces, it does not synchronise: a link of that rate.
//! - [`Faults::hold`]: a provider that stalls: the matching command and
//!   everything the client sends after it on that connection are held back
//!   (the client hears nothing) until [`FaultProxy::release`], which, once
//!   the client has gone, hands the complete held commands to the server
//!   and waits for its answers: a pipelined APPEND stored after the client
//!   was killed or gave up. One hold per proxy; [`FaultProxy::wait_held`]
//!   says when it began.
//!
//! Rules select commands by name ([`Faults::throttle`]`("APPEND", ...)`;
//! `"UID FETCH"` is another name than `"FETCH"`; `"*"` is every command)
//! and [`When`]: the n-th matching command *through this proxy*, counted
//! over all its connections from 1, so a client that reconnects and retries
//! gets through. Each rule counts on its own; when several fire for one
//! command the first added wins. [`FaultProxy::count`] and
//! [`FaultProxy::events`] tell what the client sent, when, and what it got,
//! so tests can assert that it retried and backed off.
//!
//! Only plaintext IMAP is understood. After `STARTTLS` the proxy copies
//! bytes blindly (and injects nothing). AUTHENTICATE exchanges and IDLE's
//! `DONE` are forwarded, not taken for commands.
//!
//! ```ignore
//! let proxy = FaultProxy::start(p.imap_addr(), Faults::new().throttle("APPEND", When::Nth(1)));
//! // ... point the job at proxy.addr() (plain IMAP, loopback) ...
//! assert_eq!(proxy.count("APPEND"), 2);
//! ```

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// The answer of [`Faults::throttle`], after the tag.
pub const THROTTLED: &str = "NO [LIMIT] Too many requests";

/// What [`Faults::bye`] sends.
pub const BYE: &str = "* BYE [UNAVAILABLE] try later";

/// Which of the counted commands (or connections) a rule hits; counts start
/// at 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// Only the n-th.
    Nth(u32),
    /// The n-th, 2n-th, 3n-th, ...
    EveryNth(u32),
    /// The first k.
    FirstK(u32),
    /// All of them.
    Always,
}

impl When {
    fn hits(self, n: u32) -> bool {
        match self {
            When::Nth(k) => n == k,
            When::EveryNth(k) => k > 0 && n.is_multiple_of(k),
            When::FirstK(k) => n <= k,
            When::Always => true,
        }
    }
}

/// What the proxy did instead of simply forwarding a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answered `<tag> <text>` (e.g. [`THROTTLED`]), not forwarded.
    Answered(String),
    /// [`BYE`] sent, connections closed, not forwarded.
    Bye,
    /// Connections closed, not forwarded.
    Cut,
    /// Forwarded; the reply was withheld and the connections closed.
    LostReply,
    /// The connection's byte budget ran out during this command: it was
    /// forwarded up to there, then both connections were closed. (If it ran
    /// out between commands, or within a first line, the event has an empty
    /// tag and command and is not counted as a command.)
    CutAfterBytes,
    /// Held back with everything after it, until [`FaultProxy::release`].
    Held,
}

/// One command the client sent through the proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The proxy's connection number, from 1.
    pub connection: u32,
    pub tag: String,
    /// Upper-case command name; `UID FETCH`, `UID STORE`, ... for UID
    /// commands.
    pub command: String,
    /// The command's first line as sent, without its line end (a
    /// literal's bytes are not in it).
    pub line: String,
    /// None: forwarded as it was.
    pub fault: Option<Fault>,
    /// When the command's first line arrived.
    pub at: Instant,
}

#[derive(Clone, Debug)]
enum Action {
    Answer(String),
    Bye,
    Cut,
    LoseReply,
    Hold,
}

#[derive(Clone, Debug)]
struct Rule {
    command: String,
    when: When,
    action: Action,
}

/// The rules of a [`FaultProxy`] (a builder; no rules: a plain proxy).
#[derive(Clone, Debug, Default)]
pub struct Faults {
    rules: Vec<Rule>,
    cuts: Vec<(u64, When)>,
    uplink: Option<u64>,
}

impl Faults {
    pub fn new() -> Faults {
        Faults::default()
    }

    /// Matching `command`s are answered `<tag> NO [LIMIT] Too many
    /// requests`, not forwarded (literals swallowed, see the module docs).
    pub fn throttle(self, command: &str, when: When) -> Faults {
        self.answer(command, when, THROTTLED)
    }

    /// Matching `command`s are answered `<tag> <response>` (e.g. `"NO
    /// [OVERQUOTA] Quota exceeded"`), not forwarded.
    pub fn answer(self, command: &str, when: When, response: &str) -> Faults {
        self.rule(command, when, Action::Answer(response.to_string()))
    }

    /// Instead of a matching command: [`BYE`], then both connections closed.
    pub fn bye(self, command: &str, when: When) -> Faults {
        self.rule(command, when, Action::Bye)
    }

    /// Instead of a matching command: both connections closed, no BYE.
    pub fn cut(self, command: &str, when: When) -> Faults {
        self.rule(command, when, Action::Cut)
    }

    /// A matching command is forwarded (the server does it), its tagged
    /// reply is not: both connections are closed when it arrives.
    pub fn lose_reply(self, command: &str, when: When) -> Faults {
        self.rule(command, when, Action::LoseReply)
    }

    /// The selected connections (numbered from 1 in order of arrival) are
    /// closed, no BYE, once the client has sent `bytes` bytes on them; the
    /// server gets exactly those bytes.
    pub fn cut_after_bytes(mut self, bytes: u64, connections: When) -> Faults {
        self.cuts.push((bytes, connections));
        self
    }

    /// Every connection's client bytes are read at most `bytes_per_second`
    /// (at most 1/20 s of them at a time): a slow uplink toward the
    /// provider.
    pub fn uplink(mut self, bytes_per_second: u64) -> Faults {
        self.uplink = Some(bytes_per_second.max(20));
        self
    }

    /// A matching command and everything after it on that connection are
    /// held back until [`FaultProxy::release`] (see the module docs).
    pub fn hold(self, command: &str, when: When) -> Faults {
        self.rule(command, when, Action::Hold)
    }

    fn rule(mut self, command: &str, when: When, action: Action) -> Faults {
        self.rules.push(Rule {
            command: command.to_ascii_uppercase(),
            when,
            action,
        });
        self
    }
}

struct Shared {
    faults: Faults,
    /// Per rule: matching commands seen.
    rule_counts: Vec<u32>,
    events: Vec<Event>,
    connections: u32,
    /// Both sockets of every connection, to close them when the proxy goes.
    open: Vec<(TcpStream, TcpStream)>,
    hold: HoldSignal,
}

/// The state of [`Faults::hold`], shared by the held connection and the
/// test.
#[derive(Default)]
struct Hold {
    /// A command is held.
    holding: bool,
    /// [`FaultProxy::release`] was called.
    released: bool,
    /// The server's tagged answers to the held commands, as sent.
    answers: Vec<String>,
    /// Every held command was answered, or the server went.
    done: bool,
}

type HoldSignal = Arc<(Mutex<Hold>, Condvar)>;

/// Waits on `signal` until `ready` holds or `timeout` passes; true if it
/// holds.
fn wait_for(signal: &HoldSignal, timeout: Duration, ready: impl Fn(&Hold) -> bool) -> bool {
    let (m, cv) = &**signal;
    let deadline = Instant::now().checked_add(timeout);
    let mut h = lock(m);
    while !ready(&h) {
        h = match deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return false;
                }
                cv.wait_timeout(h, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
            None => cv.wait(h).unwrap_or_else(|e| e.into_inner()),
        };
    }
    true
}

/// Changes the hold state and wakes its waiters.
fn update_hold(signal: &HoldSignal, change: impl FnOnce(&mut Hold)) {
    let (m, cv) = &**signal;
    change(&mut lock(m));
    cv.notify_all();
}

/// A running fault-injecting proxy; stops accepting and closes every
/// connection when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Listens on a free loopback port; each connection is forwarded to
    /// `upstream` under `faults`.
    pub fn start(upstream: SocketAddr, faults: Faults) -> FaultProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind fault proxy");
        let addr = listener.local_addr().expect("fault proxy address");
        let shared = Arc::new(Mutex::new(Shared {
            rule_counts: vec![0; faults.rules.len()],
            faults,
            events: Vec::new(),
            connections: 0,
            open: Vec::new(),
            hold: HoldSignal::default(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let shared = Arc::clone(&shared);
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let shared = Arc::clone(&shared);
                    thread::spawn(move || serve(client, upstream, shared));
                }
            });
        }
        FaultProxy { addr, shared, stop }
    }

    /// Where clients connect (plaintext IMAP on 127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many `command`s (e.g. `"APPEND"`, `"UID FETCH"`; `"*"`: all)
    /// the clients sent, faulted or not.
    pub fn count(&self, command: &str) -> usize {
        let command = command.to_ascii_uppercase();
        self.lock()
            .events
            .iter()
            .filter(|e| !e.command.is_empty() && (command == "*" || e.command == command))
            .count()
    }

    /// How many `command`s (`"*"`: all) were met with a fault.
    pub fn faulted(&self, command: &str) -> usize {
        let command = command.to_ascii_uppercase();
        self.lock()
            .events
            .iter()
            .filter(|e| e.fault.is_some() && (command == "*" || e.command == command))
            .count()
    }

    /// Every command so far, in order of arrival.
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u32 {
        self.lock().connections
    }

    /// Waits until a command is held ([`Faults::hold`]); false if none is
    /// within `timeout`.
    pub fn wait_held(&self, timeout: Duration) -> bool {
        let signal = self.lock().hold.clone();
        wait_for(&signal, timeout, |h| h.holding)
    }

    /// Lets the held commands through once the client has closed its
    /// connection, and waits (up to `timeout`) until the server has
    /// answered every complete one; returns its tagged answers (e.g. `J7 OK
    /// [APPENDUID 1 9] Append completed.`). Panics if they do not all come.
    pub fn release(&self, timeout: Duration) -> Vec<String> {
        let signal = self.lock().hold.clone();
        update_hold(&signal, |h| h.released = true);
        assert!(
            wait_for(&signal, timeout, |h| h.done),
            "the held commands were not all answered within {timeout:?}"
        );
        lock(&signal.0).answers.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        lock(&self.shared)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees `stop`.
        let _ = TcpStream::connect(self.addr);
        for (client, server) in self.lock().open.drain(..) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// State of one proxied connection shared by its two directions.
struct Conn {
    number: u32,
    shared: Arc<Mutex<Shared>>,
    client: TcpStream,
    server: TcpStream,
    /// Writes to the client, whole response lines at a time.
    to_client: Mutex<TcpStream>,
    state: Mutex<ConnState>,
}

#[derive(Default)]
struct ConnState {
    /// AUTHENTICATE or IDLE in progress: client lines are data until the
    /// server's tagged reply to this tag.
    continuation: Option<String>,
    /// A forwarded command waits for the server's `+` before its
    /// synchronising literal: true for `+`, false for a tagged refusal.
    literal_wait: Option<(String, mpsc::Sender<bool>)>,
    /// Tags whose tagged reply is withheld (and the connection closed).
    withhold: HashSet<String>,
    /// STARTTLS was sent: copy bytes blindly.
    raw: bool,
    /// Commands are held: a failed write to the (gone) client is ignored.
    holding: bool,
    /// Released held commands whose tagged answer has not come yet.
    held_tags: HashSet<String>,
}

impl Conn {
    fn close(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }

    fn reply(&self, line: &str) -> io::Result<()> {
        lock(&self.to_client).write_all(format!("{line}\r\n").as_bytes())
    }

    /// The byte budget ran out during `current` (tag, command, arrival), or
    /// between commands (None).
    fn mark_cut(&self, current: Option<(String, String, Instant)>) {
        let mut shared = lock(&self.shared);
        if let Some((tag, _, _)) = &current {
            let event = shared
                .events
                .iter_mut()
                .rev()
                .find(|e| e.connection == self.number && e.tag == *tag);
            if let Some(event) = event {
                event.fault = Some(Fault::CutAfterBytes);
                return;
            }
        }
        let (tag, command, at) =
            current.unwrap_or_else(|| (String::new(), String::new(), Instant::now()));
        shared.events.push(Event {
            connection: self.number,
            tag,
            command,
            line: String::new(),
            fault: Some(Fault::CutAfterBytes),
            at,
        });
    }

    fn record(&self, tag: &str, command: &str, line: &[u8], fault: Option<Fault>, at: Instant) {
        let line = String::from_utf8_lossy(line).trim_end().to_string();
        lock(&self.shared).events.push(Event {
            connection: self.number,
            tag: tag.to_string(),
            command: command.to_string(),
            line,
            fault,
            at,
        });
    }
}

fn serve(client: TcpStream, upstream: SocketAddr, shared: Arc<Mutex<Shared>>) {
    let Ok(server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let clones = (|| {
        Ok::<_, io::Error>((
            client.try_clone()?,
            server.try_clone()?,
            client.try_clone()?,
            server.try_clone()?,
            client.try_clone()?,
            server.try_clone()?,
        ))
    })();
    let Ok((client_w, server_r, client_r, server_w, client_keep, server_keep)) = clones else {
        return;
    };
    let (number, budget, uplink) = {
        let mut s = lock(&shared);
        s.connections += 1;
        let number = s.connections;
        s.open.push((client_keep, server_keep));
        let budget = s
            .faults
            .cuts
            .iter()
            .filter(|(_, when)| when.hits(number))
            .map(|(bytes, _)| *bytes)
            .min();
        (number, budget, s.faults.uplink)
    };
    let conn = Arc::new(Conn {
        number,
        shared,
        client,
        server,
        to_client: Mutex::new(client_w),
        state: Mutex::new(ConnState::default()),
    });
    {
        let conn = Arc::clone(&conn);
        thread::spawn(move || server_to_client(&conn, server_r));
    }
    let reader = BufReader::new(Budget {
        inner: client_r,
        left: budget,
        pace: uplink.map(|rate| Pace {
            rate,
            free_at: Instant::now(),
        }),
    });
    let _ = client_to_server(&conn, reader, server_w);
}

/// The client's bytes, limited to a budget: past it, reads fail with
/// [`BudgetSpent`].
struct Budget {
    inner: TcpStream,
    left: Option<u64>,
    pace: Option<Pace>,
}

/// [`Faults::uplink`]'s link: busy for `n / rate` seconds after each `n`
/// bytes read (an idle link saves up nothing).
struct Pace {
    rate: u64,
    free_at: Instant,
}

impl Pace {
    /// Waits until the link is free; at most 1/20 s of it may be read next.
    fn allowance(&self) -> usize {
        let now = Instant::now();
        if self.free_at > now {
            thread::sleep(self.free_at - now);
        }
        usize::try_from((self.rate / 20).max(1)).unwrap_or(usize::MAX)
    }

    /// `n` bytes went over the link.
    fn carried(&mut self, n: usize) {
        let busy = Duration::from_secs_f64(n as f64 / self.rate as f64);
        self.free_at = self.free_at.max(Instant::now()) + busy;
    }
}

#[derive(Debug)]
struct BudgetSpent;

impl std::fmt::Display for BudgetSpent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("byte budget spent")
    }
}

impl std::error::Error for BudgetSpent {}

impl Read for Budget {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let buf = match &self.pace {
            Some(pace) => {
                let max = buf.len().min(pace.allowance());
                &mut buf[..max]
            }
            None => buf,
        };
        let n = self.read_within_budget(buf)?;
        if let Some(pace) = &mut self.pace {
            pace.carried(n);
        }
        Ok(n)
    }
}

impl Budget {
    fn read_within_budget(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(left) = self.left else {
            return self.inner.read(buf);
        };
        if left == 0 {
            return Err(io::Error::other(BudgetSpent));
        }
        let max = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.left = Some(left - n as u64);
        Ok(n)
    }
}

fn is_budget_spent(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<BudgetSpent>())
}

/// One server response from `reader`, a line with its literals:
/// `(bytes, true)`, or `(what came, false)` when the stream ended inside
/// it.
pub fn read_response(reader: &mut impl BufRead) -> io::Result<(Vec<u8>, bool)> {
    let mut response = Vec::new();
    loop {
        let start = response.len();
        let n = reader.read_until(b'\n', &mut response)?;
        if n == 0 || !response.ends_with(b"\n") {
            return Ok((response, false));
        }
        let Some((len, _)) = literal_at_end(&response[start..]) else {
            return Ok((response, true));
        };
        let before = response.len();
        reader.by_ref().take(len).read_to_end(&mut response)?;
        if ((response.len() - before) as u64) < len {
            return Ok((response, false));
        }
    }
}

/// A literal announced at the end of a line: `{n}`, `{n+}`, `~{n}`,
/// `~{n+}`; `(n, synchronising)`.
fn literal_at_end(line: &[u8]) -> Option<(u64, bool)> {
    let body = line
        .strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))?;
    let body = body.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    let digits = &body[open + 1..];
    let (digits, sync) = match digits.strip_suffix(b"+") {
        Some(d) => (d, false),
        None => (digits, true),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some((std::str::from_utf8(digits).ok()?.parse().ok()?, sync))
}

/// `(tag, command name)` of a command line.
fn parse_command(line: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(line);
    let mut words = text.split_whitespace();
    let tag = words.next().unwrap_or_default().to_string();
    let mut name = words.next().unwrap_or_default().to_ascii_uppercase();
    if name == "UID"
        && let Some(sub) = words.next()
    {
        name = format!("UID {}", sub.to_ascii_uppercase());
    }
    // "APPEND {5}" style names never happen; strip a literal marker anyway.
    if let Some(brace) = name.find('{') {
        name.truncate(brace);
    }
    (tag, name)
}

/// Decides what to do with a command; counts it for every rule naming it.
fn decide(conn: &Conn, command: &str) -> Option<Action> {
    let mut shared = lock(&conn.shared);
    let Shared {
        faults,
        rule_counts,
        ..
    } = &mut *shared;
    let mut chosen = None;
    for (rule, count) in faults.rules.iter().zip(rule_counts.iter_mut()) {
        if rule.command != "*" && rule.command != command {
            continue;
        }
        *count += 1;
        if chosen.is_none() && rule.when.hits(*count) {
            chosen = Some(rule.action.clone());
        }
    }
    chosen
}

fn client_to_server(
    conn: &Conn,
    mut reader: BufReader<Budget>,
    mut server: TcpStream,
) -> io::Result<()> {
    // The event of the command being read, for a budget cut.
    let mut current: Option<(String, String, Instant)> = None;
    let result = (|| -> io::Result<()> {
        loop {
            if lock(&conn.state).raw {
                io::copy(&mut reader, &mut server)?;
                let _ = server.shutdown(Shutdown::Write);
                return Ok(());
            }
            let mut line = Vec::new();
            let read = reader.read_until(b'\n', &mut line);
            if let Err(e) = read {
                server.write_all(&line)?;
                return Err(e);
            }
            if line.is_empty() {
                // The client is done: let the server see the end.
                let _ = server.shutdown(Shutdown::Write);
                return Ok(());
            }
            let continuation = lock(&conn.state).continuation.is_some();
            if continuation || !line.ends_with(b"\n") {
                server.write_all(&line)?;
                continue;
            }
            let at = Instant::now();
            let (tag, command) = parse_command(&line);
            current = Some((tag.clone(), command.clone(), at));
            let action = decide(conn, &command);
            let fault = match &action {
                None => None,
                Some(Action::Answer(text)) => Some(Fault::Answered(text.clone())),
                Some(Action::Bye) => Some(Fault::Bye),
                Some(Action::Cut) => Some(Fault::Cut),
                Some(Action::LoseReply) => Some(Fault::LostReply),
                Some(Action::Hold) => Some(Fault::Held),
            };
            match action {
                None => {
                    match command.as_str() {
                        "AUTHENTICATE" | "IDLE" => {
                            lock(&conn.state).continuation = Some(tag.clone());
                        }
                        "STARTTLS" => lock(&conn.state).raw = true,
                        _ => {}
                    }
                    conn.record(&tag, &command, &line, None, at);
                    forward_command(conn, &mut reader, &mut server, &tag, line)?;
                }
                Some(Action::LoseReply) => {
                    lock(&conn.state).withhold.insert(tag.clone());
                    conn.record(&tag, &command, &line, fault, at);
                    forward_command(conn, &mut reader, &mut server, &tag, line)?;
                }
                Some(Action::Answer(text)) => {
                    conn.record(&tag, &command, &line, fault, at);
                    swallow_command(&mut reader, line)?;
                    conn.reply(&format!("{tag} {text}"))?;
                }
                Some(Action::Bye) => {
                    conn.record(&tag, &command, &line, fault, at);
                    let _ = conn.reply(BYE);
                    conn.close();
                    return Ok(());
                }
                Some(Action::Cut) => {
                    conn.record(&tag, &command, &line, fault, at);
                    conn.close();
                    return Ok(());
                }
                Some(Action::Hold) => {
                    conn.record(&tag, &command, &line, fault, at);
                    current = None;
                    return hold(conn, &mut reader, &mut server, line);
                }
            }
            current = None;
        }
    })();
    if let Err(e) = &result {
        if is_budget_spent(e) {
            conn.mark_cut(current);
        }
        conn.close();
    }
    result
}

/// [`Faults::hold`]: keeps `line` and everything after it until the client
/// has gone and the test releases them, then sends the complete commands
/// among them to the server, whose answers `server_to_client` collects.
fn hold(
    conn: &Conn,
    reader: &mut BufReader<Budget>,
    server: &mut TcpStream,
    line: Vec<u8>,
) -> io::Result<()> {
    let signal = lock(&conn.shared).hold.clone();
    lock(&conn.state).holding = true;
    update_hold(&signal, |h| h.holding = true);
    let mut held = line;
    // Until the client closes (or its connection breaks): the bytes read
    // so far stay in `held` either way.
    let _ = reader.read_to_end(&mut held);
    let (tags, complete) = complete_commands(&held);
    wait_for(&signal, Duration::MAX, |h| h.released);
    if tags.is_empty() {
        update_hold(&signal, |h| h.done = true);
        return Ok(());
    }
    lock(&conn.state).held_tags = tags.into_iter().collect();
    server.write_all(&held[..complete])
}

/// The tags of the complete commands (with all their literals) at the
/// start of `bytes`, and where they end.
fn complete_commands(bytes: &[u8]) -> (Vec<String>, usize) {
    let mut tags = Vec::new();
    let mut end = 0;
    let next_line = |at: usize| {
        bytes[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| at + p + 1)
    };
    'commands: while let Some(mut line_end) = next_line(end) {
        let (tag, _) = parse_command(&bytes[end..line_end]);
        let mut line_start = end;
        while let Some((len, _)) = literal_at_end(&bytes[line_start..line_end]) {
            let literal_end = line_end + len as usize;
            if literal_end > bytes.len() {
                break 'commands;
            }
            line_start = literal_end;
            match next_line(literal_end) {
                Some(e) => line_end = e,
                None => break 'commands,
            }
        }
        tags.push(tag);
        end = line_end;
    }
    (tags, end)
}

/// Forwards a command whose first line is `line`, with its literals: a
/// synchronising literal only once the server has said `+`.
fn forward_command(
    conn: &Conn,
    reader: &mut BufReader<Budget>,
    server: &mut TcpStream,
    tag: &str,
    mut line: Vec<u8>,
) -> io::Result<()> {
    loop {
        let literal = literal_at_end(&line);
        let go = match literal {
            Some((_, true)) => {
                let (tx, rx) = mpsc::channel();
                lock(&conn.state).literal_wait = Some((tag.to_string(), tx));
                server.write_all(&line)?;
                // Refused (tagged NO/BAD) or the server went: the client
                // will not send the literal.
                rx.recv().unwrap_or(false)
            }
            _ => {
                server.write_all(&line)?;
                true
            }
        };
        let Some((len, _)) = literal else {
            return Ok(());
        };
        if !go {
            return Ok(());
        }
        copy_exact(reader, server, len)?;
        line = Vec::new();
        let read = reader.read_until(b'\n', &mut line);
        if let Err(e) = read {
            server.write_all(&line)?;
            return Err(e);
        }
        if !line.ends_with(b"\n") {
            server.write_all(&line)?;
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "client closed mid-command",
            ));
        }
    }
}

/// Reads and drops a command whose first line is `line`, up to where the
/// client waits: its end, or a synchronising literal (never sent, as the
/// answer is not `+`).
fn swallow_command(reader: &mut BufReader<Budget>, mut line: Vec<u8>) -> io::Result<()> {
    loop {
        match literal_at_end(&line) {
            None | Some((_, true)) => return Ok(()),
            Some((len, false)) => {
                io::copy(&mut reader.by_ref().take(len), &mut io::sink())?;
                line = Vec::new();
                reader.read_until(b'\n', &mut line)?;
                if !line.ends_with(b"\n") {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "client closed mid-command",
                    ));
                }
            }
        }
    }
}

fn copy_exact(reader: &mut BufReader<Budget>, server: &mut TcpStream, len: u64) -> io::Result<()> {
    let copied = io::copy(&mut reader.by_ref().take(len), server)?;
    if copied < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "client closed mid-literal",
        ));
    }
    Ok(())
}

/// Forwards the server's responses whole lines (with their literals) at a
/// time, so that injected answers never land inside one.
fn server_to_client(conn: &Conn, server: TcpStream) {
    let mut reader = BufReader::new(server);
    let result = (|| -> io::Result<()> {
        loop {
            let (response, whole) = read_response(&mut reader)?;
            if !whole {
                if !response.is_empty() {
                    lock(&conn.to_client).write_all(&response)?;
                }
                return Ok(());
            }
            let (tag, _) = parse_command(&response);
            let mut to_raw = false;
            {
                let mut state = lock(&conn.state);
                if state.held_tags.remove(&tag) {
                    let answer = String::from_utf8_lossy(&response).trim_end().to_string();
                    let all = state.held_tags.is_empty();
                    drop(state);
                    let signal = lock(&conn.shared).hold.clone();
                    update_hold(&signal, |h| {
                        h.answers.push(answer);
                        h.done = all;
                    });
                    if all {
                        conn.close();
                        return Ok(());
                    }
                    continue;
                }
                if tag == "+" {
                    if let Some((_, tx)) = state.literal_wait.take() {
                        let _ = tx.send(true);
                    }
                } else if tag != "*" {
                    if state.literal_wait.as_ref().is_some_and(|(t, _)| *t == tag)
                        && let Some((_, tx)) = state.literal_wait.take()
                    {
                        let _ = tx.send(false);
                    }
                    if state.continuation.as_deref() == Some(tag.as_str()) {
                        state.continuation = None;
                    }
                    if state.withhold.remove(&tag) {
                        drop(state);
                        conn.close();
                        return Ok(());
                    }
                    to_raw = state.raw;
                }
            }
            let written = lock(&conn.to_client).write_all(&response);
            if written.is_err() && lock(&conn.state).holding {
                // The client is gone; the held commands are not.
                continue;
            }
            written?;
            if to_raw {
                let mut client = lock(&conn.to_client).try_clone()?;
                io::copy(&mut reader, &mut client)?;
                return Ok(());
            }
        }
    })();
    let _ = result;
    // Whatever ended this direction: a waiting literal will not come, and
    // the session is over.
    lock(&conn.state).literal_wait = None;
    if !lock(&conn.state).held_tags.is_empty() {
        let signal = lock(&conn.shared).hold.clone();
        update_hold(&signal, |h| h.done = true);
    }
    conn.close();
}
