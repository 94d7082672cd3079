//! SEARCH through writ. A search that looks at message content (BODY,
//! TEXT, SUBJECT, HEADER, SENT*, LARGER ...: [`search::needs_content`])
//! cannot be answered by the provider over sealed mail, so writ answers it:
//!
//! 1. `FETCH * (UID)`: how many messages, and the highest UID (for `*` in
//!    sets). A failure here means an empty mailbox: nothing matches.
//! 2. `FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER])`:
//!    the marker tells sealed from plaintext; a sealed message whose opened
//!    form is in the cache is held against the criteria at once.
//! 3. When no key looks at bodies (BODY, TEXT: [`search::needs_body`]),
//!    the header is enough: plaintext messages are held against the
//!    criteria with the header the probe fetched, sealed ones with the
//!    header their summary holds (a cached summary, or `UID FETCH <the
//!    rest> (UID BODY.PEEK[1] BODY.PEEK[1.MIME])`: part 1 only). What that
//!    cannot answer (a header too long for the summary, a summary that
//!    does not open) goes on to step 4.
//! 4. `UID FETCH <the rest> (UID BODY.PEEK[])`: each message as it arrives
//!    is opened if sealed (and cached) and held against the criteria (the
//!    whole boolean tree, [`search::Search`]); only matching numbers are
//!    kept.
//! 5. `* SEARCH ...` and the tagged OK go to the client.
//!
//! Looking a message up in the cache, opening it (through
//! [`super::opened`], as FETCH does) and holding it against the criteria
//! are jobs on the process-wide pool ([`work`]), never done in the
//! session; a phase's tagged status waits for its jobs.
//!
//! Steps 3 and 4 name messages as the client's command does: by sequence
//! number for a SEARCH (the provider then holds back EXPUNGE during them,
//! as during the client's own: RFC 3501 §7.4.1), by UID for a UID SEARCH.
//! An EXPUNGE (or VANISHED) that reaches the client during a UID SEARCH
//! renumbers what is pending ([`SearchPlan::on_expunge`],
//! [`SearchPlan::on_vanished`]); a message another session
//! expunged (its sections NIL) matches nothing. A sealed message the cache
//! remembers as undecryptable is searched as stored.
//!
//! Searches without content keys go to the provider as they are, unless
//! they are ESEARCH (`RETURN (...)`, [`super::search_return`]): then writ
//! sends the plain SEARCH under its own tag (`writ.s5`) and answers
//! `* ESEARCH` from the provider's `* SEARCH` (its MODSEQ included). When
//! it returns only MIN and/or MAX and has a MODSEQ key, its MODSEQ is the
//! highest of the messages returned (RFC 7162 §3.1.5, as Dovecot): the
//! provider's SEARCH of just those (`writ.s6`) gives it.
//!
//! SORT and THREAD=ORDEREDSUBJECT ([`super::sort`]) run the same steps
//! whatever their keys (their sort values come from the message): each
//! matching message keeps its values (opened header, RFC822.SIZE as the
//! client sees it, INTERNALDATE), ordered at the end and answered `* SORT`,
//! `* ESEARCH` (ESORT) or `* THREAD` (written as text by writ).
//! THREAD=REFERENCES and THREAD=REFS ([`super::thread`]) run them too:
//! each matching message keeps its IDs, base subject and date, threaded
//! at the end (over
//! [`super::thread::MAX_THREAD_MESSAGES`] matching messages: tagged NO).

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use imap_next::imap_types::command::{Command, CommandBody};
use imap_next::imap_types::core::{Charset, Tag, Text, Vec1};
use imap_next::imap_types::datetime::DateTime;
use imap_next::imap_types::extensions::thread::ThreadingAlgorithm;
use imap_next::imap_types::fetch::{MessageDataItem, MessageDataItemName, Part, Section};
use imap_next::imap_types::flag::{Flag, FlagFetch};
use imap_next::imap_types::response::{Code, Status, StatusBody, StatusKind, Tagged};
use imap_next::imap_types::search::SearchKey;
use imap_next::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use std::sync::Arc;

use super::fetch::opening::{InOrder, Pending, Runner, in_flight};
use super::fetch::{CacheRef, Output, peek, uid_of};
use super::search::{self, Search};
use super::search_return::{self, ReturnOptions};
use super::sequence::Vanished;
use super::session::SharedKeys;
use super::sort;
use super::thread;
use crate::envelope::{self, Keys};
use crate::imap::cache::MessageKey;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// An ESEARCH without content keys: the provider's SEARCH answers it.
    Provider,
    /// Then, when it returns only MIN and/or MAX and has a MODSEQ key: the
    /// provider's SEARCH of just those messages, for their MODSEQ.
    ReturnedModseq,
    Count,
    Probe,
    Summaries,
    Bodies,
    /// A SEARCH by sequence number with SAVE: the UIDs of the messages
    /// it saves ([`answer`]).
    SavedUids,
}

/// What the probe said about one message.
#[derive(Clone)]
struct Meta {
    seq: NonZeroU32,
    flags: Vec<Flag<'static>>,
    recent: bool,
    internal_date: Option<DateTime>,
    size: u64,
    /// Sealed: its marker, the fields the provider put above it, and its
    /// cache entry.
    sealed: Option<(envelope::Detected, Vec<u8>, MessageKey)>,
}

pub struct SearchPlan {
    client_tag: Tag<'static>,
    uid: bool,
    search: Arc<Search>,
    phase: Phase,
    max_seq: u32,
    max_uid: u32,
    /// Messages still to be searched, by UID.
    pending: BTreeMap<NonZeroU32, Meta>,
    found: Vec<NonZeroU32>,
    cache: Option<CacheRef>,
    /// No key looks past the header: summaries are enough.
    header_only: bool,
    /// ESEARCH: what to return (`* ESEARCH` instead of `* SEARCH`).
    returns: Option<ReturnOptions>,
    /// A SORT: its program, and the matching messages with their values.
    sort: Option<Arc<sort::Program>>,
    sorted: Vec<sort::Entry>,
    /// The provider's highest MODSEQ of the result (Phase::Provider).
    modseq: Option<u64>,
    /// Phase::Provider: the client's command, for the MODSEQ of the
    /// messages a MIN/MAX-only ESEARCH returns.
    provider_search: Option<Command<'static>>,
    /// THREAD=ORDEREDSUBJECT: `sort` holds its program.
    thread: bool,
    /// THREAD=REFERENCES: what threading needs of each matching message
    /// (within the caps of [`thread::Gathered`]).
    threads: Option<thread::Gathered>,
    /// The keyring and the runner the messages are opened and held
    /// against the criteria with, off the session; without them (unit
    /// tests) that runs at once on the caller's thread.
    keys: Option<(SharedKeys, Runner)>,
    /// Messages being looked up, opened or held against the criteria, in
    /// the order the provider sent them ([`work`]).
    work: InOrder<NonZeroU32, work::Verdict>,
    /// A phase's tagged status, held until its work is done.
    held_status: Option<Status<'static>>,
    /// The answer being ordered or threaded on the pool ([`answer`]).
    finishing: Option<Pending<answer::Answered>>,
    /// An EXPUNGE came while it was (sequence numbers in it are stale).
    finishing_stale: bool,
    /// SEARCH with SAVE by sequence number: what is saved ([`answer`]).
    saving: answer::Saving,
    /// The provider's `* SEARCH` answers went past [`MAX_SEARCH_RESULTS`].
    overflowed: bool,
    /// What `pending` has taken so far ([`meta_weight`]).
    pending_bytes: usize,
}

/// The threading by references a THREAD algorithm names (REFERENCES, or
/// Dovecot's REFS), if it is one.
pub fn by_references(algorithm: &ThreadingAlgorithm<'_>) -> Option<thread::Algorithm> {
    match algorithm {
        ThreadingAlgorithm::References => Some(thread::Algorithm::References),
        ThreadingAlgorithm::Other(other) if other.as_ref().eq_ignore_ascii_case("REFS") => {
            Some(thread::Algorithm::Refs)
        }
        _ => None,
    }
}
fn tagged(
    tag: Tag<'static>,
    kind: StatusKind,
    code: Option<Code<'static>>,
    text: &'static str,
) -> Status<'static> {
    Status::Tagged(Tagged {
        tag,
        body: StatusBody {
            kind,
            code,
            text: Text::unvalidated(text),
        },
    })
}

fn fetch_command(
    tag: &str,
    set: SequenceSet,
    uid: bool,
    items: Vec<MessageDataItemName<'static>>,
) -> Command<'static> {
    let tag = Tag::unvalidated(tag.to_owned());
    crate::imap::opened::fetch_command(tag, set, uid, items, Vec::new())
}

/// The bytes of the `BODY[<section>]` item, if present and not NIL (NIL:
/// another session expunged the message, which then matches nothing).
fn body_item(list: &[MessageDataItem<'_>], section: Option<&Section<'_>>) -> Option<Vec<u8>> {
    list.iter().find_map(|i| match i {
        MessageDataItem::BodyExt {
            section: s,
            origin: None,
            data,
        } if s.as_ref() == section => data.0.as_ref().map(|d| d.as_ref().to_vec()),
        _ => None,
    })
}

const COUNT_TAG: &str = "writ.s1";
const PROBE_TAG: &str = "writ.s2";
const BODIES_TAG: &str = "writ.s3";
const SUMMARIES_TAG: &str = "writ.s4";
const PROVIDER_TAG: &str = "writ.s5";
const RETURNED_MODSEQ_TAG: &str = "writ.s6";
const SAVED_UIDS_TAG: &str = "writ.s7";

/// Numbers the provider's `* SEARCH` answers may bring one plan, in all:
/// about what one answer of Dovecot's largest holds (its response is
/// capped at `max_response_size`, 64 MiB, about 11 octets a number). Past
/// it the command is answered NO: a hostile provider cannot grow writ's
/// memory without bound with `* SEARCH` lines.
pub const MAX_SEARCH_RESULTS: usize = 6_000_000;

/// What the client is told when a provider answered more than that.
pub const TOO_MANY_RESULTS: &str = "The provider answered more than writ keeps for one command";

/// `BODY[1]` or `BODY[1.MIME]`: the summary part of a sealed message.
fn part_one(mime: bool) -> Section<'static> {
    let one = Part(Vec1::from(NonZeroU32::MIN));
    if mime {
        Section::Mime(one)
    } else {
        Section::Part(one)
    }
}

impl SearchPlan {
    /// For a SEARCH or UID SEARCH with content keys: the plan and its first
    /// command, or the status refusing it (an unknown charset, a string
    /// that is not text in its charset). `None`: not a content search (the
    /// provider answers it).
    ///
    /// With `returns` (an ESEARCH) there is always a plan: without content
    /// keys it asks the provider's SEARCH under writ's own tag and answers
    /// `* ESEARCH` from it.
    pub fn start(
        command: &Command<'static>,
        cache: Option<CacheRef>,
        returns: Option<ReturnOptions>,
    ) -> Option<Result<(SearchPlan, Command<'static>), Status<'static>>> {
        let (charset, criteria, uid, sort) = match &command.body {
            CommandBody::Search {
                charset,
                criteria,
                uid,
            } => (charset.clone(), criteria, uid, None),
            CommandBody::Sort {
                sort_criteria,
                charset,
                search_criteria,
                uid,
            } => match sort::Program::new(sort_criteria.as_ref()) {
                Ok(p) => (Some(charset.clone()), search_criteria, uid, Some(p)),
                Err(why) => {
                    return Some(Err(tagged(command.tag.clone(), StatusKind::Bad, None, why)));
                }
            },
            CommandBody::Thread {
                algorithm: ThreadingAlgorithm::OrderedSubject,
                charset,
                search_criteria,
                uid,
            } => (
                Some(charset.clone()),
                search_criteria,
                uid,
                Some(sort::Program::ordered_subject()),
            ),
            CommandBody::Thread {
                algorithm,
                charset,
                search_criteria,
                uid,
            } if by_references(algorithm).is_some() => {
                (Some(charset.clone()), search_criteria, uid, None)
            }
            _ => return None,
        };
        let thread = matches!(command.body, CommandBody::Thread { .. });
        let threads = match &command.body {
            CommandBody::Thread { algorithm, .. } => {
                by_references(algorithm).map(thread::Gathered::new)
            }
            _ => None,
        };
        // A SORT or THREAD always needs the messages: its keys look at them.
        if sort.is_none()
            && threads.is_none()
            && !criteria.as_ref().iter().any(search::needs_content)
        {
            let returns = returns?;
            let search = Command {
                tag: Tag::unvalidated(PROVIDER_TAG.to_owned()),
                body: command.body.clone(),
            };
            return Some(Ok((
                SearchPlan {
                    client_tag: command.tag.clone(),
                    uid: *uid,
                    search: Arc::new(Search::new(&[], None).ok()?),
                    phase: Phase::Provider,
                    max_seq: 0,
                    max_uid: 0,
                    pending: BTreeMap::new(),
                    found: Vec::new(),
                    cache,
                    header_only: true,
                    returns: Some(returns),
                    sort: None,
                    sorted: Vec::new(),
                    modseq: None,
                    provider_search: Some(search.clone()),
                    thread: false,
                    threads: None,
                    keys: None,
                    work: InOrder::new(in_flight()),
                    held_status: None,
                    finishing: None,
                    finishing_stale: false,
                    saving: answer::Saving::default(),
                    overflowed: false,
                    pending_bytes: 0,
                },
                search,
            )));
        }
        let charset = charset.as_ref().map(|c| match c {
            Charset::Atom(a) => a.as_ref().to_owned(),
            Charset::Quoted(q) => q.as_ref().to_owned(),
        });
        let search = match Search::new(criteria.as_ref(), charset.as_deref()) {
            Ok(s) => s,
            Err(search::SearchError::BadCharset) => {
                let utf8 = Charset::try_from("UTF-8").ok();
                return Some(Err(tagged(
                    command.tag.clone(),
                    StatusKind::No,
                    Some(Code::BadCharset {
                        allowed: utf8.into_iter().collect(),
                    }),
                    "writ does not search in this charset",
                )));
            }
            Err(_) => {
                return Some(Err(tagged(
                    command.tag.clone(),
                    StatusKind::Bad,
                    None,
                    "Invalid search string for its charset",
                )));
            }
        };
        let count = fetch_command(
            COUNT_TAG,
            SequenceSet::from(Sequence::Single(SeqOrUid::Asterisk)),
            false,
            vec![MessageDataItemName::Uid],
        );
        Some(Ok((
            SearchPlan {
                client_tag: command.tag.clone(),
                uid: *uid,
                search: Arc::new(search),
                phase: Phase::Count,
                max_seq: 0,
                max_uid: 0,
                pending: BTreeMap::new(),
                found: Vec::new(),
                cache,
                header_only: !criteria.as_ref().iter().any(search::needs_body),
                returns,
                sort: sort.map(Arc::new),
                sorted: Vec::new(),
                modseq: None,
                provider_search: None,
                thread,
                threads,
                keys: None,
                work: InOrder::new(in_flight()),
                held_status: None,
                finishing: None,
                finishing_stale: false,
                saving: answer::Saving::default(),
                overflowed: false,
                pending_bytes: 0,
            },
            count,
        )))
    }

    pub fn on_fetch(
        &mut self,
        seq: NonZeroU32,
        items: Vec1<MessageDataItem<'static>>,
        keys: &(dyn Keys + Send + Sync),
    ) -> Result<Vec<Output>, Vec1<MessageDataItem<'static>>> {
        let list = items.as_ref();
        let Some(uid) = uid_of(list) else {
            return Err(items);
        };
        match self.phase {
            Phase::SavedUids => self.saving.on_fetch(seq, items),
            // `FETCH * (UID)` answered: with UID alone, or with FLAGS or
            // MODSEQ folded in (a flag change the provider reports with
            // it; MODSEQ on every FETCH once CONDSTORE is enabled). Either
            // counts; what else it says goes on to the client.
            Phase::Count => {
                self.max_seq = self.max_seq.max(seq.get());
                self.max_uid = self.max_uid.max(uid.get());
                if list.len() == 1 {
                    Ok(Vec::new())
                } else {
                    Err(items)
                }
            }
            Phase::Probe => {
                let Some(header) = body_item(list, Some(&Section::Header(None))) else {
                    return Err(items);
                };
                let mut meta = meta(seq, list);
                let key = MessageKey::new(uid.get(), &header);
                let detected = envelope::detect(&header);
                meta.sealed = detected
                    .clone()
                    .map(|d| (d, envelope::stored_prefix(&header), key));
                let job = match (&meta.sealed, &self.cache) {
                    // Plaintext: its header is enough, or its body is
                    // fetched in the whole-message phase.
                    (None, _) if self.header_only => Some(self.judge_job(&meta, uid, header)),
                    (None, _) => None,
                    // Sealed: the cache may answer (or remember it as
                    // undecryptable: then it is searched as stored).
                    (Some(_), Some(_)) => Some(self.lookup_job(&meta, uid, header)),
                    (Some(_), None) => None,
                };
                // Flags of every message are kept until it is judged:
                // within a budget (a provider answering with endless
                // UIDs, or FLAGS of megabytes, ends the search NO).
                let weight = meta_weight(&meta);
                self.pending_bytes += weight;
                if self.pending_bytes > MAX_PENDING_BYTES || flags_weight(&meta) > MAX_MESSAGE_FLAGS
                {
                    self.overflowed = true;
                    return Ok(Vec::new());
                }
                self.pending.insert(uid, meta);
                if let Some(job) = job {
                    // A header, or a cache lookup: light.
                    self.submit(uid, 0, keys, job);
                }
                Ok(self.take_judged())
            }
            Phase::Summaries => {
                let Some(part1) = body_item(list, Some(&part_one(false))) else {
                    return Err(items);
                };
                let mime = body_item(list, Some(&part_one(true))).unwrap_or_default();
                let Some(meta) = self.pending.get(&uid) else {
                    return Err(items);
                };
                if meta.sealed.is_none() {
                    return Ok(Vec::new());
                }
                let job = self.summary_job(meta, uid, part1, mime);
                self.submit(uid, 0, keys, job);
                Ok(self.take_judged())
            }
            Phase::Bodies => {
                let Some(stored) = body_item(list, None) else {
                    return Err(items);
                };
                let Some(meta) = self.pending.get(&uid) else {
                    return Err(items);
                };
                let bytes = stored.len();
                let job = self.whole_job(meta, uid, stored);
                self.submit(uid, bytes, keys, job);
                Ok(self.take_judged())
            }
            _ => Err(items),
        }
    }

    /// The provider told the client that message `seq` is gone (during a
    /// UID SEARCH): numbers after it move down, the gone one is dropped.
    pub fn on_expunge(&mut self, seq: NonZeroU32) {
        if self.finishing.is_some() && !self.uid {
            self.finishing_stale = true;
        }
        let down = |s: NonZeroU32| {
            if s > seq {
                NonZeroU32::new(s.get() - 1).unwrap_or(s)
            } else {
                s
            }
        };
        self.pending.retain(|_, m| m.seq != seq);
        for m in self.pending.values_mut() {
            m.seq = down(m.seq);
        }
        if !self.uid {
            self.found.retain(|s| *s != seq);
            for s in &mut self.found {
                *s = down(*s);
            }
            self.sorted.retain(|e| e.seq != seq);
        }
        for e in &mut self.sorted {
            if !self.uid {
                e.id = down(e.id);
            }
            e.seq = down(e.seq);
        }
        if let Some(threads) = &mut self.threads {
            threads.on_expunge(seq, !self.uid);
        }
        self.max_seq = self.max_seq.saturating_sub(1);
    }

    /// The provider told the client that these messages are gone (`*
    /// VANISHED` with QRESYNC, during a UID SEARCH, SORT or THREAD): as
    /// [`Self::on_expunge`], by UID. Only UID commands see one (the
    /// provider holds it back during the others, as EXPUNGE), so what
    /// the answer names by UID stays.
    pub fn on_vanished(&mut self, gone: &Vanished) {
        if self.finishing.is_some() && !self.uid {
            self.finishing_stale = true;
        }
        self.pending
            .retain(|uid, m| gone.renumbered(m.seq, *uid).map(|s| m.seq = s).is_some());
        if self.uid {
            for e in &mut self.sorted {
                e.seq = gone.renumbered(e.seq, e.id).unwrap_or(e.seq);
            }
        }
        if let Some(threads) = &mut self.threads {
            threads.on_vanished(gone, !self.uid);
        }
        let count = u32::try_from(gone.count()).unwrap_or(u32::MAX);
        self.max_seq = self.max_seq.saturating_sub(count);
    }

    /// The provider's `* SEARCH` (an ESEARCH without content keys):
    /// `Err` gives it back when it answers no command of the plan.
    pub fn on_search(
        &mut self,
        found: Vec<NonZeroU32>,
        modseq: Option<u64>,
    ) -> Result<(), Vec<NonZeroU32>> {
        match self.phase {
            Phase::Provider
                if self.found.len().saturating_add(found.len()) > MAX_SEARCH_RESULTS =>
            {
                self.overflowed = true;
            }
            Phase::Provider => {
                self.found.extend(found);
                self.modseq = self.modseq.max(modseq);
            }
            // Only the MODSEQ of the messages returned counts.
            Phase::ReturnedModseq => self.modseq = modseq,
            _ => return Err(found),
        }
        Ok(())
    }

    /// An ESEARCH that returns only MIN and/or MAX, with a MODSEQ key,
    /// answers the highest MODSEQ of the messages it returns (RFC 7162
    /// §3.1.5; Dovecot does so), not of every match: the provider's SEARCH
    /// of just those messages (by number or UID, as the client's command)
    /// with the client's keys gives it. `None` when no such step is due.
    fn returned_modseq(&mut self) -> Option<Command<'static>> {
        let returns = self.returns?;
        if self.modseq.is_none() || returns.all || returns.count || !(returns.min || returns.max) {
            return None;
        }
        let mut command = self.provider_search.take()?;
        let (min, max) = (self.found.iter().min()?, self.found.iter().max()?);
        let mut returned = Vec::new();
        if returns.min {
            returned.push(Sequence::Single(SeqOrUid::Value(*min)));
        }
        if returns.max && !(returns.min && min == max) {
            returned.push(Sequence::Single(SeqOrUid::Value(*max)));
        }
        let set = SequenceSet(Vec1::try_from(returned).ok()?);
        let CommandBody::Search { criteria, .. } = &mut command.body else {
            return None;
        };
        let just = if self.uid {
            SearchKey::Uid(set)
        } else {
            SearchKey::SequenceSet(set)
        };
        let mut keys = vec![just];
        keys.extend(criteria.as_ref().iter().cloned());
        *criteria = Vec1::try_from(keys).ok()?;
        command.tag = Tag::unvalidated(RETURNED_MODSEQ_TAG.to_owned());
        Some(command)
    }

    pub fn on_status(&mut self, status: Status<'static>) -> Result<Vec<Output>, Status<'static>> {
        let Status::Tagged(t) = &status else {
            return Err(status);
        };
        let ours = [PROBE_TAG, SUMMARIES_TAG, BODIES_TAG].contains(&t.tag.as_ref());
        if ours && !self.work.is_empty() {
            // The phase's messages are answered first ([`Self::poll`]).
            self.held_status = Some(status);
            return Ok(Vec::new());
        }
        let ok = t.body.kind == StatusKind::Ok;
        match (self.phase, t.tag.as_ref()) {
            (Phase::Provider, PROVIDER_TAG) if ok && self.overflowed => {
                Ok(vec![Output::Finish(tagged(
                    self.client_tag.clone(),
                    StatusKind::No,
                    None,
                    TOO_MANY_RESULTS,
                ))])
            }
            (Phase::Provider, PROVIDER_TAG) if ok => match self.returned_modseq() {
                Some(command) => {
                    self.phase = Phase::ReturnedModseq;
                    Ok(vec![Output::ToProvider(command)])
                }
                None => Ok(self.finish()),
            },
            // A refusal of this one leaves the result's highest MODSEQ.
            (Phase::ReturnedModseq, RETURNED_MODSEQ_TAG) => Ok(self.finish()),
            (Phase::SavedUids, SAVED_UIDS_TAG) => Ok(self.saved_uids_answered(ok)),
            (Phase::Provider, PROVIDER_TAG) => {
                // The provider's refusal (BADCHARSET ...), as its own.
                let Status::Tagged(t) = status else {
                    return Ok(Vec::new());
                };
                Ok(vec![Output::Finish(Status::Tagged(Tagged {
                    tag: self.client_tag.clone(),
                    body: t.body,
                }))])
            }
            (Phase::Count, COUNT_TAG) => {
                if !ok || self.max_seq == 0 {
                    // No message: nothing matches.
                    return Ok(self.finish());
                }
                self.phase = Phase::Probe;
                let all = SequenceSet::from(Sequence::Range(
                    SeqOrUid::Value(NonZeroU32::MIN),
                    SeqOrUid::Asterisk,
                ));
                Ok(vec![Output::ToProvider(fetch_command(
                    PROBE_TAG,
                    all,
                    false,
                    vec![
                        MessageDataItemName::Uid,
                        MessageDataItemName::Flags,
                        MessageDataItemName::InternalDate,
                        MessageDataItemName::Rfc822Size,
                        peek(Some(Section::Header(None))),
                    ],
                ))])
            }
            (Phase::Probe, PROBE_TAG) if self.overflowed => Ok(vec![Output::Finish(tagged(
                self.client_tag.clone(),
                StatusKind::No,
                None,
                TOO_MANY_RESULTS,
            ))]),
            (Phase::Probe, PROBE_TAG) if ok && self.header_only => {
                Ok(self.next_fetch(Phase::Summaries))
            }
            (Phase::Probe, PROBE_TAG) | (Phase::Summaries, SUMMARIES_TAG) if ok => {
                Ok(self.next_fetch(Phase::Bodies))
            }
            (Phase::Bodies, BODIES_TAG) if ok => Ok(self.finish()),
            (Phase::Probe, PROBE_TAG)
            | (Phase::Summaries, SUMMARIES_TAG)
            | (Phase::Bodies, BODIES_TAG) => {
                tracing::warn!("the provider refused writ's FETCH for a SEARCH");
                Ok(vec![Output::Finish(tagged(
                    self.client_tag.clone(),
                    StatusKind::No,
                    None,
                    "SEARCH failed: the provider refused to list the messages",
                ))])
            }
            _ => Err(status),
        }
    }
}

impl SearchPlan {
    /// The FETCH of `phase` for the messages still pending, or the answer
    /// when none are left.
    fn next_fetch(&mut self, phase: Phase) -> Vec<Output> {
        // By sequence number for a SEARCH, so that the provider holds back
        // EXPUNGE as it would during the client's own (RFC 3501 §7.4.1).
        let set: Vec<NonZeroU32> = if self.uid {
            self.pending.keys().copied().collect()
        } else {
            self.pending.values().map(|m| m.seq).collect()
        };
        let Some(set) = super::sequence::compact(&set) else {
            // Nothing left to download: all answered already.
            return self.finish();
        };
        self.phase = phase;
        let (tag, items) = match phase {
            Phase::Summaries => (
                SUMMARIES_TAG,
                vec![
                    MessageDataItemName::Uid,
                    peek(Some(part_one(false))),
                    peek(Some(part_one(true))),
                ],
            ),
            _ => (BODIES_TAG, vec![MessageDataItemName::Uid, peek(None)]),
        };
        vec![Output::ToProvider(fetch_command(tag, set, self.uid, items))]
    }
}

/// FLAGS, INTERNALDATE and RFC822.SIZE of a probe answer.
/// What the messages a search keeps until judged may weigh at once (their
/// flags and the fields the provider put above a sealed one's marker;
/// [`meta_weight`], given back as each is judged): about 1.5 million
/// messages of ordinary flags waiting.
const MAX_PENDING_BYTES: usize = 256 * 1024 * 1024;

/// Most a message's flags may weigh ([`meta_weight`]): Dovecot keeps
/// keywords of at most 50 octets; no real message has a thousand.
const MAX_MESSAGE_FLAGS: usize = 64 * 1024;

/// What keeping a message's [`Meta`] costs, roughly.
fn meta_weight(meta: &Meta) -> usize {
    160 + flags_weight(meta)
        + meta
            .sealed
            .as_ref()
            .map_or(0, |(_, prefix, _)| prefix.len())
}

/// What a message's flags weigh ([`MAX_MESSAGE_FLAGS`]).
fn flags_weight(meta: &Meta) -> usize {
    meta.flags
        .iter()
        .map(|f| match f {
            Flag::Keyword(k) => k.as_ref().len() + 24,
            other => other.to_string().len() + 24,
        })
        .sum::<usize>()
}

fn meta(seq: NonZeroU32, list: &[MessageDataItem<'static>]) -> Meta {
    let mut m = Meta {
        seq,
        flags: Vec::new(),
        recent: false,
        internal_date: None,
        size: 0,
        sealed: None,
    };
    for item in list {
        match item {
            MessageDataItem::Flags(f) => {
                for flag in f {
                    match flag {
                        FlagFetch::Flag(fl) => m.flags.push(fl.clone()),
                        FlagFetch::Recent => m.recent = true,
                    }
                }
            }
            MessageDataItem::InternalDate(d) => m.internal_date = Some(d.clone()),
            MessageDataItem::Rfc822Size(s) => m.size = u64::from(*s),
            _ => {}
        }
    }
    m
}

mod answer;
#[cfg(test)]
mod tests;
mod work;
