//! The model behind tests/imap_model.rs and tests/imap_model_parallel.rs:
//! four clients of one mailbox (two through writ, two straight at
//! Dovecot) and what each must see. [`Model::absorb`] checks one response
//! of one client, after every response:
//!
//! - its view (UIDs by sequence number) follows the EXPUNGE and EXISTS it
//!   received, and nothing else; an EXPUNGE names a message that is gone,
//!   and never arrives during a FETCH, STORE or SEARCH by sequence number
//!   (RFC 3501 §7.4.1);
//! - every FETCH names, under its number, the UID the view has there (or
//!   one that fits the order, for a message it learns of now), and the
//!   body of that UID: the plaintext through writ, the stored form
//!   straight from Dovecot;
//! - when the response is complete, the flags it was shown are the
//!   mailbox's (not in a parallel run, where the threads order changes).
//!
//! The seed is printed; `WRIT_TEST_SEED=<n>` replays a run, and
//! `WRIT_TEST_OPS=<n>` sets how many operations (default [`OPS`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;

use super::imap::{Line, Response};
use super::imap_proxy::ImapProxy;
use super::{Imap, Provider};

/// Operations in a default run: bounded by count (about 40 s in debug).
pub const OPS: usize = 5000;

/// xorshift64*: a seeded, reproducible stream; the test needs no more.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One message of INBOX, as the mailbox holds it.
pub struct Msg {
    pub plain: Vec<u8>,
    /// What Dovecot serves: the plaintext, or the sealed form (learnt at
    /// the first direct fetch when writ sealed it).
    pub stored: Option<Vec<u8>>,
    pub flags: BTreeSet<String>,
    /// Expunged or moved away.
    pub gone: bool,
}

/// A message whose body and subject carry words to search for.
pub fn message(n: usize) -> Vec<u8> {
    format!(
        "From: m{n}@example.test\r\nTo: box@example.test\r\nSubject: model {n} grp{g}\r\n\
         Date: Fri, 27 Nov 2026 08:00:00 +0000\r\nMessage-ID: <model{n}@example.test>\r\n\r\n\
         Body of model message {n}, in group word{g}.\r\n",
        g = n % 4
    )
    .into_bytes()
}

/// `Subject` as `BODY[HEADER.FIELDS (SUBJECT)]` gives it.
pub fn subject_field(m: &[u8]) -> Vec<u8> {
    let end = m
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(m.len(), |p| p + 2);
    let header = &m[..end];
    let mut out = Vec::new();
    let mut lines = header.split_inclusive(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        if line.len() >= 8 && line[..8].eq_ignore_ascii_case(b"subject:") {
            out.extend_from_slice(line);
            while let Some(next) = lines.peek() {
                if next.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                    out.extend_from_slice(next);
                    lines.next();
                } else {
                    break;
                }
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Part {
    None,
    Whole,
    Subject,
}

/// What the checker needs to know of the command a response answers.
#[derive(Clone, Copy, Debug)]
pub struct Kind {
    /// FETCH, STORE or SEARCH by sequence number: no EXPUNGE allowed.
    pub by_seq: bool,
    /// The body item fetched.
    pub part: Part,
    /// A fetch without PEEK: answered messages become \Seen.
    pub sets_seen: bool,
}

pub const PLAIN: Kind = Kind {
    by_seq: false,
    part: Part::None,
    sets_seen: false,
};

pub struct Client {
    pub name: String,
    pub imap: Imap,
    pub via_writ: bool,
    /// UIDs by sequence number; `None` where EXISTS announced a message
    /// whose UID this client has not been told yet.
    pub view: Vec<Option<u32>>,
    /// The flags it was last shown, by UID.
    pub flags: BTreeMap<u32, BTreeSet<String>>,
}

pub struct Model {
    pub msgs: BTreeMap<u32, Msg>,
    pub log: Vec<String>,
    pub seed: u64,
    /// Clients run in parallel: flags are not checked (their order of
    /// changes is the threads'), and a body of a message not registered
    /// yet (its APPEND still answering) is checked at the end.
    pub parallel: bool,
    /// (UID, body, part, through writ) to check at the end.
    pub deferred: Vec<(u32, Vec<u8>, Part, bool)>,
}

pub fn fetch_seq(text: &str) -> Option<u32> {
    let rest = text.strip_prefix("* ")?;
    let (n, after) = rest.split_once(' ')?;
    after
        .to_ascii_uppercase()
        .starts_with("FETCH (")
        .then(|| n.parse().ok())?
}

pub fn word_after(text: &str, key: &str) -> Option<u32> {
    let upper = text.to_ascii_uppercase();
    let at = upper.find(key)? + key.len();
    upper[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

pub fn flags_of(text: &str) -> Option<BTreeSet<String>> {
    let at = text.find("FLAGS (")? + "FLAGS (".len();
    let list = text[at..].split(')').next()?;
    Some(
        list.split_whitespace()
            .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
            .map(str::to_owned)
            .collect(),
    )
}

pub fn untagged_number(text: &str, word: &str) -> Option<u32> {
    let rest = text.strip_prefix("* ")?;
    let (n, w) = rest.trim_end().split_once(' ')?;
    w.eq_ignore_ascii_case(word).then(|| n.parse().ok())?
}

impl Model {
    pub fn fail(&self, client: &Client, what: String, r: &Response) -> ! {
        let tail: Vec<&String> = self.log.iter().rev().take(15).collect();
        let mut log = String::new();
        for l in tail.iter().rev() {
            let _ = writeln!(log, "  {l}");
        }
        panic!(
            "seed {} (WRIT_TEST_SEED={} to replay), {}: {what}\nresponse:\n{}\nlast operations:\n{log}",
            self.seed,
            self.seed,
            client.name,
            r.text()
        );
    }

    /// Checks one response against the model and moves the client's view.
    /// Flags are checked when the response is complete: a FETCH may show a
    /// message's flags as the session last synchronised them, and the
    /// provider reports later changes at the end of the command.
    pub fn absorb(&mut self, client: &mut Client, r: &Response, kind: Kind) {
        for line in &r.untagged {
            self.absorb_line(client, line, r, kind);
        }
        let in_view: BTreeSet<u32> = client.view.iter().flatten().copied().collect();
        client.flags.retain(|u, _| in_view.contains(u));
        if self.parallel {
            return;
        }
        for (uid, flags) in &client.flags {
            let msg = &self.msgs[uid];
            if !msg.gone && *flags != msg.flags {
                self.fail(
                    client,
                    format!(
                        "UID {uid} left with flags {flags:?}, the mailbox has {:?}",
                        msg.flags
                    ),
                    r,
                );
            }
        }
    }

    fn absorb_line(&mut self, client: &mut Client, line: &Line, r: &Response, kind: Kind) {
        let text = line.text_only();
        if let Some(n) = untagged_number(&text, "EXPUNGE") {
            if kind.by_seq {
                self.fail(
                    client,
                    format!("EXPUNGE {n} during a command by sequence number"),
                    r,
                );
            }
            let i = n as usize;
            if i == 0 || i > client.view.len() {
                self.fail(
                    client,
                    format!("EXPUNGE {n} of a message it does not have"),
                    r,
                );
            }
            if let Some(uid) = client.view.remove(i - 1)
                && !self.msgs.get(&uid).is_some_and(|m| m.gone)
            {
                self.fail(
                    client,
                    format!("EXPUNGE {n} of UID {uid}, which is not gone"),
                    r,
                );
            }
        } else if let Some(n) = untagged_number(&text, "EXISTS") {
            let n = n as usize;
            if n < client.view.len() {
                self.fail(
                    client,
                    format!("EXISTS {n} below its {}", client.view.len()),
                    r,
                );
            }
            client.view.resize(n, None);
        } else if let Some(seq) = fetch_seq(&text) {
            self.absorb_fetch(client, seq, line, r, kind);
        }
    }

    fn absorb_fetch(
        &mut self,
        client: &mut Client,
        seq: u32,
        line: &Line,
        r: &Response,
        kind: Kind,
    ) {
        let text = line.text_only();
        let i = seq as usize;
        if i == 0 || i > client.view.len() {
            self.fail(
                client,
                format!("FETCH of message {seq}, beyond its view"),
                r,
            );
        }
        let Some(uid) = word_after(&text, "UID ") else {
            // Unsolicited flag changes without a UID: the view names it.
            if let (Some(Some(uid)), Some(flags)) = (client.view.get(i - 1), flags_of(&text)) {
                client.flags.insert(*uid, flags);
            }
            return;
        };
        match client.view[i - 1] {
            Some(known) if known != uid => self.fail(
                client,
                format!("message {seq} is UID {known}, answered as UID {uid}"),
                r,
            ),
            Some(_) => {}
            None => {
                let before = client.view[..i - 1]
                    .iter()
                    .flatten()
                    .max()
                    .copied()
                    .unwrap_or(0);
                let after = client.view[i..]
                    .iter()
                    .flatten()
                    .min()
                    .copied()
                    .unwrap_or(u32::MAX);
                if !(before < uid && uid < after) {
                    self.fail(
                        client,
                        format!("message {seq} named UID {uid} out of order"),
                        r,
                    );
                }
                client.view[i - 1] = Some(uid);
            }
        }
        if self.parallel && !self.msgs.contains_key(&uid) {
            if let Some(body) = line.literals.first() {
                self.deferred
                    .push((uid, body.clone(), kind.part, client.via_writ));
            }
            return;
        }
        let Some(msg) = self.msgs.get_mut(&uid) else {
            self.fail(client, format!("UID {uid} was never in the mailbox"), r);
        };
        if let Some(body) = line.literals.first() {
            if kind.sets_seen && !msg.gone {
                msg.flags.insert("\\Seen".into());
            }
            let source = if client.via_writ {
                Some(msg.plain.clone())
            } else {
                if msg.stored.is_none() && kind.part == Part::Whole {
                    msg.stored = Some(body.clone());
                }
                msg.stored.clone()
            };
            let expected = match (kind.part, source) {
                (Part::Whole, Some(m)) => Some(m),
                (Part::Subject, Some(m)) => Some(subject_field(&m)),
                _ => None,
            };
            if let Some(expected) = expected
                && expected != *body
            {
                self.fail(
                    client,
                    format!(
                        "message {seq} (UID {uid}) carries {:?}, not its own {:?}",
                        String::from_utf8_lossy(body),
                        String::from_utf8_lossy(&expected)
                    ),
                    r,
                );
            }
        }
        if let Some(flags) = flags_of(&text) {
            client.flags.insert(uid, flags);
        }
    }

    /// Live messages of the client's view, by sequence number.
    pub fn live(&self, client: &Client) -> Vec<(u32, u32)> {
        client
            .view
            .iter()
            .enumerate()
            .filter_map(|(i, u)| {
                let u = (*u)?;
                (!self.msgs.get(&u)?.gone).then_some((i as u32 + 1, u))
            })
            .collect()
    }
}

pub fn run(client: &mut Client, command: &str) -> Response {
    let r = client.imap.command(command);
    if std::env::var_os("WRIT_TEST_TRACE").is_some() {
        eprintln!("--- {} {command}\n{}", client.name, r.text());
    }
    r
}

pub fn search_result(r: &Response) -> Vec<u32> {
    r.untagged
        .iter()
        .find_map(|l| {
            let t = l.text_only();
            let rest = t.strip_prefix("* SEARCH")?;
            Some(
                rest.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect(),
            )
        })
        .unwrap_or_default()
}

/// The seed and operation count of a run (see the file's header).
pub fn seed_and_ops() -> (u64, usize) {
    let seed = std::env::var("WRIT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    let ops = std::env::var("WRIT_TEST_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(OPS);
    (seed, ops)
}

/// A mailbox of eight messages, sealed and plaintext in turn, the model
/// of it, and four clients that have selected it.
pub fn setup(p: &Provider, proxy: &ImapProxy, seed: u64, parallel: bool) -> (Model, Vec<Client>) {
    let user = p.new_user("model");
    let mut model = Model {
        msgs: BTreeMap::new(),
        log: Vec::new(),
        seed,
        parallel,
        deferred: Vec::new(),
    };
    for n in 1..=8 {
        let m = message(n);
        let stored = if n % 2 == 1 {
            proxy.seal(&m)
        } else {
            m.clone()
        };
        let uid = p.imap_append(&user, "INBOX", &stored);
        model.msgs.insert(
            uid,
            Msg {
                plain: m,
                stored: Some(stored),
                flags: BTreeSet::new(),
                gone: false,
            },
        );
    }
    let mut setup = p.imap(&user);
    setup.command("CREATE Other").expect_ok("CREATE");
    setup.logout();
    let addr = |via_writ: bool| -> SocketAddr { if via_writ { proxy.imap } else { p.imap_addr() } };
    let clients: Vec<Client> = [
        ("writ-a", true),
        ("writ-b", true),
        ("direct-c", false),
        ("direct-d", false),
    ]
    .into_iter()
    .map(|(name, via_writ)| {
        let mut imap = Imap::login_to(addr(via_writ), &user.name, &user.password);
        let r = imap.select("INBOX").expect_ok("SELECT");
        let mut c = Client {
            name: name.into(),
            imap,
            via_writ,
            view: Vec::new(),
            flags: BTreeMap::new(),
        };
        model.absorb(&mut c, &r, PLAIN);
        let r = c.imap.command("FETCH 1:* (UID FLAGS)").expect_ok("FETCH");
        model.absorb(
            &mut c,
            &r,
            Kind {
                by_seq: true,
                ..PLAIN
            },
        );
        c
    })
    .collect();
    (model, clients)
}

pub fn proxy_for(p: &Provider) -> ImapProxy {
    ImapProxy::start(
        &format!("{}timeout_secs = 30\n", ImapProxy::plain(p.imap_addr())),
        "",
    )
}

/// Every client catches up (NOOP) and lists the mailbox: each view is
/// then the mailbox's live messages.
pub fn catch_up(model: &mut Model, clients: &mut [Client]) {
    let seed = model.seed;
    let live: Vec<u32> = model
        .msgs
        .iter()
        .filter(|(_, m)| !m.gone)
        .map(|(u, _)| *u)
        .collect();
    for c in clients.iter_mut() {
        let r = c.imap.command("NOOP").expect_ok("NOOP");
        model.absorb(c, &r, PLAIN);
        if c.view.is_empty() {
            assert!(live.is_empty(), "seed {seed}: {} sees no message", c.name);
            continue;
        }
        let r = c.imap.command("FETCH 1:* (UID FLAGS)").expect_ok("FETCH");
        model.absorb(
            c,
            &r,
            Kind {
                by_seq: true,
                ..PLAIN
            },
        );
        let view: Vec<u32> = c
            .view
            .iter()
            .map(|u| u.expect("every UID learnt"))
            .collect();
        assert_eq!(
            view, live,
            "seed {seed}: {} ends with another mailbox",
            c.name
        );
    }
}
