//! THREAD=REFERENCES (RFC 5256 §4) and THREAD=REFS over opened messages,
//! as Dovecot 2.3 builds them (`index-thread-links.c`,
//! `index-thread-finish.c`, `cmd-thread.c`), so that writ threads sealed
//! mail (by its opened header) as Dovecot threads the same mail in
//! plaintext:
//!
//! - Each message gives its first Message-ID (a fresh node when it has
//!   none, and when an earlier message had the same one), the IDs of its
//!   first References field, or else the first ID of its first
//!   In-Reply-To field ([`message_ids`], Dovecot's `message_id_get_next`).
//! - Messages are linked in UID order: each pair of consecutive
//!   references, parent first, when the child has no parent yet and the
//!   link makes no loop; then the message under its last reference (a
//!   parent set earlier by another message's References is dropped first).
//! - Dummies (IDs no matching message has) are skipped: a message hangs
//!   under its nearest real ancestor, else under the topmost dummy. A
//!   dummy root with one child gives way to it. Siblings and roots are
//!   ordered by date (sent, else INTERNALDATE), then UID; a dummy root by
//!   its oldest child.
//! - Roots with the same base subject are gathered (step 5: a dummy, or a
//!   root that is no reply, takes the others; otherwise a new dummy holds
//!   both), and the roots ordered again.
//! - THREAD=REFS ([`refs`], Dovecot's `sort_root_nodes_ref2`): the same
//!   links and steps (2) and (3), then no step (5): a dummy root stays
//!   (with a single child too: `(2 3)` or `(2)` then), and roots are ordered by the latest date of the messages of
//!   their thread, then the root's UID (a dummy counting as 0), then by
//!   the first appearance of the root's ID (Dovecot's node order over a
//!   fresh thread index of the whole mailbox: the only tie where writ may
//!   answer differently, for dummy roots whose latest messages share a
//!   second, when the search leaves out messages naming their IDs first).
//! - Written as Dovecot writes it: `(1 2 3)` for a chain, `(1 (2)(3))` for
//!   siblings, `((2)(3))` under a dummy.
//!
//! Nothing here recurses: links are checked by walking parent pointers,
//! the answer is written from an explicit stack.
//!
//! Caps (what a client is told when one is hit): at most
//! [`MAX_THREAD_MESSAGES`] matching messages per THREAD (more: tagged NO,
//! [`why::MESSAGES`]); the last [`MAX_REFERENCES`] IDs of a References
//! field are used (older ones are not linked: a thread can then split
//! where Dovecot would join it through missing ancestors); a link is not
//! made when the loop check walks more than [`MAX_DEPTH`] ancestors (the
//! message starts a thread of its own: only threads deeper than that can
//! differ from Dovecot's); a THREAD keeps at most [`MAX_THREAD_IDS`]
//! message IDs in all (more: tagged NO, [`why::IDS`]) and walks at most
//! [`MAX_STEPS`] parent pointers (more: tagged NO, [`why::STEPS`]). A
//! message ID is kept as the first 16 octets of its SHA-256 (so memory
//! does not grow with the length of IDs; two IDs that differ are taken
//! for one only if those collide), a base subject to
//! [`super::sort::MAX_SORT_STRING`] octets. Memory: about 16 octets per
//! ID (and 60 for its node), 600 per message at most: about 150 MB at
//! the caps, a few MB for a mailbox of 10,000 messages.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::num::NonZeroU32;

use super::search::sort_keys;
use super::sort::MAX_SORT_STRING;

/// Matching messages one THREAD=REFERENCES or REFS may thread.
pub const MAX_THREAD_MESSAGES: usize = 100_000;
/// IDs of a References field used (the last ones: nearest ancestors).
pub const MAX_REFERENCES: usize = 100;
/// Ancestors one loop check walks before the link is given up.
pub const MAX_DEPTH: usize = 1_000;
/// Parent pointers one THREAD walks in all.
pub const MAX_STEPS: u64 = 20_000_000;
/// Message IDs (Message-ID and references) one THREAD keeps in all.
pub const MAX_THREAD_IDS: usize = 1_000_000;

/// What a THREAD over a cap is told (tagged NO).
pub mod why {
    pub const MESSAGES: &str = "THREAD over more than 100000 messages: narrow the search criteria";
    pub const IDS: &str = "THREAD over more than 1000000 message IDs: narrow the search criteria";
    pub const STEPS: &str =
        "THREAD too costly (References chains too long or deep): narrow the search criteria";
}

/// What threading needs of one matching message.
#[derive(Debug, Clone)]
pub struct Message {
    pub uid: NonZeroU32,
    pub seq: NonZeroU32,
    /// What the answer names it by (sequence number, or UID).
    pub id: NonZeroU32,
    /// Sent date in seconds, else INTERNALDATE.
    date: i64,
    message_id: Option<Id>,
    references: Vec<Id>,
    /// Base subject and whether it was a reply or forward; `None`: no
    /// Subject field.
    subject: Option<(String, bool)>,
}

impl Message {
    /// `header` begins with the (opened) header; `internal` is
    /// INTERNALDATE in seconds since the epoch.
    pub fn new(
        header: &[u8],
        uid: NonZeroU32,
        seq: NonZeroU32,
        id: NonZeroU32,
        internal: Option<i64>,
    ) -> Message {
        let date = match sort_keys::sent(header) {
            0 => internal.unwrap_or(0),
            t => t,
        };
        let message_id = sort_keys::first_value(header, "Message-ID")
            .and_then(|v| message_ids(&v).next())
            .map(id_of);
        let mut references: Vec<Id> = Vec::new();
        if let Some(v) = sort_keys::first_value(header, "References") {
            let mut last: std::collections::VecDeque<Vec<u8>> = Default::default();
            for id in message_ids(&v) {
                if last.len() == MAX_REFERENCES {
                    last.pop_front();
                }
                last.push_back(id);
            }
            references = last.into_iter().map(id_of).collect();
        }
        if references.is_empty()
            && let Some(id) =
                sort_keys::first_value(header, "In-Reply-To").and_then(|v| message_ids(&v).next())
        {
            references.push(id_of(id));
        }
        let subject = sort_keys::first_value(header, "Subject").map(|v| {
            let (mut base, reply) = sort_keys::base_subject_flagged(&v);
            if base.len() > MAX_SORT_STRING {
                let mut end = MAX_SORT_STRING;
                while !base.is_char_boundary(end) {
                    end -= 1;
                }
                base.truncate(end);
            }
            (base, reply)
        });
        Message {
            uid,
            seq,
            id,
            date,
            message_id,
            references,
            subject,
        }
    }
}

/// A message ID as kept: the first 16 octets of its SHA-256.
type Id = [u8; 16];

fn id_of(id: Vec<u8>) -> Id {
    let digest = ring::digest::digest(&ring::digest::SHA256, &id);
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest.as_ref()[..16]);
    out
}

/// Which threading by references a THREAD asks for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// THREAD=REFERENCES (RFC 5256).
    #[default]
    References,
    /// THREAD=REFS (Dovecot's, draft-ietf-morg-inthread): the same
    /// links, no subject gathering, dummy roots kept, threads ordered by
    /// their latest message.
    Refs,
}

/// The messages of one THREAD as they arrive, within the caps.
#[derive(Debug, Default)]
pub struct Gathered {
    algorithm: Algorithm,
    messages: Vec<Message>,
    ids: usize,
    over: Option<&'static str>,
}

impl Gathered {
    pub fn new(algorithm: Algorithm) -> Gathered {
        Gathered {
            algorithm,
            ..Gathered::default()
        }
    }

    /// Keeps `m`, unless a cap is reached (then the THREAD answers NO).
    pub fn push(&mut self, m: Message) {
        if self.over.is_some() {
            return;
        }
        self.ids += m.references.len() + 1;
        if self.messages.len() == MAX_THREAD_MESSAGES {
            self.over = Some(why::MESSAGES);
        } else if self.ids > MAX_THREAD_IDS {
            self.over = Some(why::IDS);
        } else {
            self.messages.push(m);
        }
    }

    /// Message `seq` was expunged (reported during the THREAD): with
    /// `by_seq`, it goes and later numbers move down.
    pub fn on_expunge(&mut self, seq: NonZeroU32, by_seq: bool) {
        let down = |s: NonZeroU32| {
            if s > seq {
                NonZeroU32::new(s.get() - 1).unwrap_or(s)
            } else {
                s
            }
        };
        if by_seq {
            self.messages.retain(|m| m.seq != seq);
        }
        for m in &mut self.messages {
            if by_seq {
                m.id = down(m.id);
            }
            m.seq = down(m.seq);
        }
    }

    /// Messages `gone` vanished (QRESYNC's EXPUNGE, by UID): as
    /// [`Self::on_expunge`] for each.
    pub fn on_vanished(&mut self, gone: &super::sequence::Vanished, by_seq: bool) {
        self.messages.retain_mut(|m| {
            let Some(seq) = gone.renumbered(m.seq, m.uid) else {
                // A UID THREAD keeps naming it by its UID, as after EXPUNGE.
                return !by_seq;
            };
            if by_seq {
                m.id = seq;
            }
            m.seq = seq;
            true
        });
    }

    /// The `* THREAD` response, or what the client is told (a cap).
    pub fn answer(mut self) -> Result<Vec<u8>, &'static str> {
        match self.over {
            Some(why) => Err(why),
            None => match self.algorithm {
                Algorithm::References => references(&mut self.messages),
                Algorithm::Refs => refs(&mut self.messages),
            },
        }
    }
}

/// The message IDs of a Message-ID, References or In-Reply-To value, as
/// Dovecot's `message_id_get_next` reads them: `<...>` holding an `@`,
/// whitespace inside removed; one holding `"` or `(` is skipped
/// (Dovecot parses those with its RFC 822 tokenizer: the only IDs writ
/// reads differently).
pub fn message_ids(value: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        loop {
            let open = at + value.get(at..)?.iter().position(|&b| b == b'<')?;
            let start = open + 1;
            let mut p = start;
            let mut found_at = false;
            loop {
                match value.get(p) {
                    None | Some(0) => {
                        at = value.len();
                        return None;
                    }
                    Some(b'@') => found_at = true,
                    // Octets from `A` up (`[` too) pass, as in Dovecot.
                    Some(b'>' | b'"' | b'(') => break,
                    Some(_) => {}
                }
                p += 1;
            }
            if value[p] == b'>' {
                at = p + 1;
                if found_at {
                    return Some(
                        value[start..p]
                            .iter()
                            .copied()
                            .filter(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                            .collect(),
                    );
                }
            } else {
                at = start;
            }
        }
    })
}

const NONE: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Node {
    parent: u32,
    /// The message (index in the sorted list); `None`: a dummy.
    message: Option<u32>,
}

/// A thread root during steps (4) and (5).
#[derive(Debug, Clone)]
struct Root {
    node: u32,
    dummy: bool,
    ignore: bool,
    /// The message it is ordered by (itself, or a dummy's oldest child).
    first: u32,
    reply_or_forward: bool,
    /// Index of the root whose subject it joins.
    parent_root: Option<usize>,
}

struct Threader<'a> {
    messages: &'a [Message],
    nodes: Vec<Node>,
    children: Vec<Vec<u32>>,
    steps: u64,
}

/// The `* THREAD` response of THREAD=REFERENCES over `messages` (in any
/// order), ending in CRLF; `Err`: what to tell the client (a cap).
pub fn references(messages: &mut [Message]) -> Result<Vec<u8>, &'static str> {
    let mut t = Threader::linked(messages)?;
    let mut roots = t.roots();
    t.order_roots(&mut roots);
    t.gather_subjects(&mut roots);
    if t.merge_subjects(&mut roots) {
        t.order_roots(&mut roots);
    }
    Ok(t.write(&roots))
}

/// The `* THREAD` response of THREAD=REFS over `messages` (in any
/// order), ending in CRLF; `Err`: what to tell the client (a cap). As
/// Dovecot 2.3 (`sort_root_nodes_ref2`): steps (1) to (3) as REFERENCES,
/// then no subject gathering, and a dummy root stays (with one child
/// too); roots are ordered by the latest date (sent, else INTERNALDATE)
/// of the messages in their thread, then by the root's UID (0 for a
/// dummy), then by node creation (first appearance of the ID).
pub fn refs(messages: &mut [Message]) -> Result<Vec<u8>, &'static str> {
    let t = Threader::linked(messages)?;
    let mut roots: Vec<(Root, i64)> = t
        .roots()
        .into_iter()
        .filter(|r| !r.dummy || !t.children[r.node as usize].is_empty())
        .map(|r| {
            let latest = t.latest(r.node);
            (r, latest)
        })
        .collect();
    roots.sort_by_key(|(r, latest)| (*latest, t.message(r.node).map_or(0, |m| m.uid.get())));
    let roots: Vec<Root> = roots.into_iter().map(|(r, _)| r).collect();
    Ok(t.write(&roots))
}

impl<'a> Threader<'a> {
    /// Steps (1) to (3) of RFC 5256 REFERENCES, shared by REFERENCES and
    /// REFS: `messages` in UID order, linked by their IDs, shadows made.
    fn linked(messages: &'a mut [Message]) -> Result<Threader<'a>, &'static str> {
        if messages.len() > MAX_THREAD_MESSAGES {
            return Err(why::MESSAGES);
        }
        messages.sort_by_key(|m| m.uid);
        let mut t = Threader {
            nodes: Vec::with_capacity(messages.len()),
            messages,
            children: Vec::new(),
            steps: 0,
        };
        t.link_all()?;
        t.shadows();
        Ok(t)
    }
}

impl Threader<'_> {
    /// The latest date of the messages of the thread under `root` (the
    /// root too when it is a message), walked from an explicit stack.
    fn latest(&self, root: u32) -> i64 {
        // Dovecot starts from 0 (dates are never negative here).
        let mut latest = 0;
        let mut stack = vec![root];
        while let Some(n) = stack.pop() {
            if let Some(m) = self.message(n) {
                latest = latest.max(m.date);
            }
            if let Some(c) = self.children.get(n as usize) {
                stack.extend_from_slice(c);
            }
        }
        latest
    }

    fn node_for(&mut self, ids: &mut HashMap<Id, u32>, id: &Id) -> u32 {
        match ids.get(id) {
            Some(&n) => n,
            None => {
                let n = self.new_node(None);
                ids.insert(*id, n);
                n
            }
        }
    }

    fn new_node(&mut self, message: Option<u32>) -> u32 {
        let n = u32::try_from(self.nodes.len()).unwrap_or(NONE - 1);
        self.nodes.push(Node {
            parent: NONE,
            message,
        });
        n
    }

    /// Step (1): links, message by message in UID order.
    fn link_all(&mut self) -> Result<(), &'static str> {
        let mut ids: HashMap<Id, u32> = HashMap::new();
        for (i, m) in self.messages.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(NONE - 1);
            let node = match &m.message_id {
                Some(id) => match ids.entry(*id) {
                    MapEntry::Occupied(e) => {
                        let n = *e.get();
                        if self.nodes[n as usize].message.is_none() {
                            self.nodes[n as usize].message = Some(i);
                            n
                        } else {
                            // A duplicate Message-ID: the first keeps it.
                            self.new_node(Some(i))
                        }
                    }
                    MapEntry::Vacant(e) => {
                        let n = u32::try_from(self.nodes.len()).unwrap_or(NONE - 1);
                        e.insert(n);
                        self.nodes.push(Node {
                            parent: NONE,
                            message: Some(i),
                        });
                        n
                    }
                },
                None => self.new_node(Some(i)),
            };
            let mut parent = NONE;
            for r in &m.references {
                let r = self.node_for(&mut ids, r);
                if parent != NONE {
                    self.link(parent, r)?;
                }
                parent = r;
            }
            let own = &mut self.nodes[node as usize];
            if own.parent != parent && own.parent != NONE {
                own.parent = NONE;
            }
            if parent != NONE {
                self.link(parent, node)?;
            }
        }
        Ok(())
    }

    /// `child` under `parent`, unless it has a parent already or the link
    /// would make a loop (or the check walks past [`MAX_DEPTH`]).
    fn link(&mut self, parent: u32, child: u32) -> Result<(), &'static str> {
        if self.nodes[child as usize].parent != NONE {
            // The same link, or a conflicting one: the first is kept.
            return Ok(());
        }
        let mut at = parent;
        let mut walked = 0;
        loop {
            if at == child {
                return Ok(());
            }
            let up = self.nodes[at as usize].parent;
            if up == NONE {
                break;
            }
            walked += 1;
            if walked > MAX_DEPTH {
                self.spend(walked)?;
                return Ok(());
            }
            at = up;
        }
        self.spend(walked)?;
        self.nodes[child as usize].parent = parent;
        Ok(())
    }

    fn spend(&mut self, steps: usize) -> Result<(), &'static str> {
        self.steps += steps as u64;
        if self.steps > MAX_STEPS {
            return Err(why::STEPS);
        }
        Ok(())
    }

    /// Steps (2) and (3): each message under its nearest real ancestor,
    /// else under its topmost dummy (`children`, by node).
    fn shadows(&mut self) {
        let count = self.nodes.len();
        self.children = vec![Vec::new(); count];
        // For a dummy with a parent: where its real descendants hang.
        let mut hang: Vec<u32> = vec![NONE; count];
        let mut path: Vec<u32> = Vec::new();
        for n in 0..count {
            let node = &self.nodes[n];
            if node.parent == NONE || node.message.is_none() {
                continue;
            }
            let mut at = node.parent;
            path.clear();
            let target = loop {
                let a = &self.nodes[at as usize];
                if a.message.is_some() || a.parent == NONE {
                    break at;
                }
                if hang[at as usize] != NONE {
                    break hang[at as usize];
                }
                path.push(at);
                at = a.parent;
            };
            for &p in &path {
                hang[p as usize] = target;
            }
            self.children[target as usize].push(n as u32);
        }
    }

    fn message(&self, node: u32) -> Option<&Message> {
        let m = self.nodes.get(node as usize)?.message?;
        self.messages.get(m as usize)
    }

    /// Ordering key of a real node: date, then UID.
    fn key(&self, node: u32) -> (i64, u32) {
        self.message(node).map_or((0, 0), |m| (m.date, m.uid.get()))
    }

    fn sorted_children(&self, node: u32) -> Vec<u32> {
        let mut c = self
            .children
            .get(node as usize)
            .cloned()
            .unwrap_or_default();
        c.sort_by_key(|&n| self.key(n));
        c
    }

    fn roots(&self) -> Vec<Root> {
        (0..self.nodes.len())
            .filter(|&n| self.nodes[n].parent == NONE)
            .map(|n| Root {
                node: n as u32,
                dummy: self.nodes[n].message.is_none(),
                ignore: false,
                first: n as u32,
                reply_or_forward: false,
                parent_root: None,
            })
            .collect()
    }

    /// Step (4): a childless dummy goes, a dummy with one child gives way
    /// to it, the rest are ordered by their (oldest) message.
    fn order_roots(&self, roots: &mut Vec<Root>) {
        for r in roots.iter_mut().filter(|r| !r.ignore) {
            if !r.dummy {
                r.first = r.node;
                continue;
            }
            let children = self.sorted_children(r.node);
            match children.as_slice() {
                [] => r.ignore = true,
                [only] => {
                    r.node = *only;
                    r.first = *only;
                    r.dummy = false;
                }
                [oldest, ..] => r.first = *oldest,
            }
        }
        roots.retain(|r| !r.ignore);
        roots.sort_by_key(|r| self.key(r.first));
    }

    /// Step (5)(B): the subject table.
    fn gather_subjects(&self, roots: &mut [Root]) {
        let mut table: HashMap<&str, usize> = HashMap::new();
        for i in 0..roots.len() {
            let Some((base, reply)) = self
                .message(roots[i].first)
                .and_then(|m| m.subject.as_ref())
            else {
                continue;
            };
            if base.is_empty() {
                continue;
            }
            match table.get(base.as_str()) {
                None => {
                    table.insert(base, i);
                }
                Some(&h) => {
                    if !roots[h].dummy && (roots[i].dummy || (roots[h].reply_or_forward && !reply))
                    {
                        roots[h].parent_root = Some(i);
                        table.insert(base, i);
                    } else {
                        roots[i].parent_root = Some(h);
                    }
                }
            }
            roots[i].reply_or_forward = *reply;
        }
    }

    /// Step (5)(C): roots of one subject merged. Whether any was.
    fn merge_subjects(&mut self, roots: &mut Vec<Root>) -> bool {
        let count = roots.len();
        let mut changed = false;
        for i in 0..count {
            if roots[i].parent_root.is_none() || roots[i].ignore {
                continue;
            }
            changed = true;
            // The top of the subject's chain (at most a few links: an
            // entry of the table is replaced at most twice).
            let mut top = i;
            while let Some(p) = roots[top].parent_root {
                top = p;
            }
            if roots[i].dummy {
                let moved = std::mem::take(&mut self.children[roots[i].node as usize]);
                self.children[roots[top].node as usize].extend(moved);
                roots[i].ignore = true;
            } else if roots[top].dummy
                || (roots[i].reply_or_forward && !roots[top].reply_or_forward)
            {
                let child = roots[i].node;
                self.children[roots[top].node as usize].push(child);
                roots[i].ignore = true;
            } else {
                let dummy = self.new_node(None);
                self.children.push(vec![roots[top].node, roots[i].node]);
                roots[top].parent_root = Some(roots.len());
                roots[top].ignore = true;
                roots[i].ignore = true;
                roots.push(Root {
                    node: dummy,
                    dummy: true,
                    ignore: false,
                    first: dummy,
                    reply_or_forward: false,
                    parent_root: None,
                });
            }
        }
        changed
    }

    fn number(&self, node: u32) -> u32 {
        self.message(node).map_or(0, |m| m.id.get())
    }

    /// The answer, as Dovecot's `imap_thread_write` lays it out, from an
    /// explicit stack.
    fn write(&self, roots: &[Root]) -> Vec<u8> {
        enum Step<'s> {
            Text(&'s str),
            Number(u32),
            List(Vec<u32>, bool),
        }
        let mut out = String::from("* THREAD ");
        let top: Vec<u32> = roots.iter().filter(|r| !r.ignore).map(|r| r.node).collect();
        let mut stack = vec![Step::List(top, true)];
        while let Some(step) = stack.pop() {
            match step {
                Step::Text(t) => out.push_str(t),
                Step::Number(n) => out.push_str(&n.to_string()),
                Step::List(list, root) => {
                    let mut steps: Vec<Step<'_>> = Vec::new();
                    if let ([only], false) = (list.as_slice(), root) {
                        steps.push(Step::Number(self.number(*only)));
                        let children = self.sorted_children(*only);
                        if !children.is_empty() {
                            steps.push(Step::Text(" "));
                            steps.push(Step::List(children, false));
                        }
                    } else {
                        for &n in &list {
                            let children = self.sorted_children(n);
                            steps.push(Step::Text("("));
                            if children.is_empty() {
                                steps.push(Step::Number(self.number(n)));
                            } else {
                                if self.message(n).is_some() {
                                    steps.push(Step::Number(self.number(n)));
                                    steps.push(Step::Text(" "));
                                }
                                steps.push(Step::List(children, false));
                            }
                            steps.push(Step::Text(")"));
                        }
                    }
                    stack.extend(steps.into_iter().rev());
                }
            }
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

#[cfg(test)]
mod tests;
