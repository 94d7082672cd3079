//! SEARCH through writ. A search that looks at message content (BODY,
//! TEXT, SUBJECT, HEADER, SENT*, LARGER ...: [`search::needs_content`])
//! cannot be answered by the provider over sealed mail, so writ answers it:
//!
//! 1. `FETCH * (UID)`: how many messages, and the highest UID (for `*` in
//!    sets). A failure here means an empty mailbox: nothing matches.
//! 2. `FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER])`:
//!    the marker tells sealed from plaintext; a sealed message whose opened
//!    form is in the cache is held against the criteria at once.
//! 3. `UID FETCH <the rest> (UID BODY.PEEK[])`: each message as it arrives
//!    is opened if sealed (and cached) and held against the criteria (the
//!    whole boolean tree, [`search::Search`]); only matching numbers are
//!    kept.
//! 4. `* SEARCH ...` and the tagged OK go to the client.
//!
//! Searches without content keys go to the provider as they are.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use imap_next::imap_types::command::{Command, CommandBody};
use imap_next::imap_types::core::{Charset, Tag, Text, Vec1};
use imap_next::imap_types::datetime::DateTime;
use imap_next::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Section,
};
use imap_next::imap_types::flag::{Flag, FlagFetch};
use imap_next::imap_types::response::{Code, Data, Status, StatusBody, StatusKind, Tagged};
use imap_next::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use super::fetch::{CacheRef, Output};
use super::search::{self, Candidate, Search};
use crate::admin::names;
use crate::envelope::{self, Keys, Summary};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Count,
    Probe,
    Bodies,
}

/// What the probe said about one message.
struct Meta {
    seq: NonZeroU32,
    flags: Vec<Flag<'static>>,
    recent: bool,
    internal_date: Option<DateTime>,
    size: u64,
}

pub struct SearchPlan {
    client_tag: Tag<'static>,
    uid: bool,
    search: Search,
    phase: Phase,
    max_seq: u32,
    max_uid: u32,
    /// Messages still to be searched, by UID.
    pending: BTreeMap<NonZeroU32, Meta>,
    found: Vec<NonZeroU32>,
    cache: Option<CacheRef>,
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
    Command {
        tag: Tag::unvalidated(tag.to_owned()),
        body: CommandBody::Fetch {
            sequence_set: set,
            macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(items),
            uid,
            modifiers: Vec::new(),
        },
    }
}

fn peek(section: Option<Section<'static>>) -> MessageDataItemName<'static> {
    MessageDataItemName::BodyExt {
        section,
        partial: None,
        peek: true,
    }
}

/// The bytes of the `BODY[<section>]` item, if present.
fn body_item(list: &[MessageDataItem<'_>], section: Option<&Section<'_>>) -> Option<Vec<u8>> {
    list.iter().find_map(|i| match i {
        MessageDataItem::BodyExt {
            section: s,
            origin: None,
            data,
        } if s.as_ref() == section => Some(
            data.0
                .as_ref()
                .map(|d| d.as_ref().to_vec())
                .unwrap_or_default(),
        ),
        _ => None,
    })
}

fn uid_of(list: &[MessageDataItem<'_>]) -> Option<NonZeroU32> {
    list.iter().find_map(|i| match i {
        MessageDataItem::Uid(u) => Some(*u),
        _ => None,
    })
}

const COUNT_TAG: &str = "writ.s1";
const PROBE_TAG: &str = "writ.s2";
const BODIES_TAG: &str = "writ.s3";

impl SearchPlan {
    /// For a SEARCH or UID SEARCH with content keys: the plan and its first
    /// command, or the status refusing it (an unknown charset, a string
    /// that is not text in its charset). `None`: not a content search (the
    /// provider answers it).
    pub fn start(
        command: &Command<'static>,
        cache: Option<CacheRef>,
    ) -> Option<Result<(SearchPlan, Command<'static>), Status<'static>>> {
        let CommandBody::Search {
            charset,
            criteria,
            uid,
        } = &command.body
        else {
            return None;
        };
        if !criteria.as_ref().iter().any(search::needs_content) {
            return None;
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
                search,
                phase: Phase::Count,
                max_seq: 0,
                max_uid: 0,
                pending: BTreeMap::new(),
                found: Vec::new(),
                cache,
            },
            count,
        )))
    }

    fn finish(&mut self) -> Vec<Output> {
        let mut found = std::mem::take(&mut self.found);
        found.sort();
        vec![
            Output::ToClient(Data::Search(found, None)),
            Output::Finish(tagged(
                self.client_tag.clone(),
                StatusKind::Ok,
                None,
                "SEARCH completed (by writ)",
            )),
        ]
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
            Phase::Count if list.len() == 1 => {
                self.max_seq = self.max_seq.max(seq.get());
                self.max_uid = self.max_uid.max(uid.get());
                Ok(Vec::new())
            }
            Phase::Probe => {
                let Some(header) = body_item(list, Some(&Section::Header(None))) else {
                    return Err(items);
                };
                let meta = meta(seq, list);
                if envelope::detect(&header).is_some()
                    && let Some(c) = &self.cache
                    && let Some((summary, Some(opened))) = c.cache.get(&c.mailbox, uid.get())
                {
                    metrics::counter!(names::IMAP_CACHE_HITS_TOTAL).increment(1);
                    let size = envelope::view::rfc822_size(&summary);
                    self.consider(uid, &meta, size, &opened, Some(&summary));
                } else {
                    self.pending.insert(uid, meta);
                }
                Ok(Vec::new())
            }
            Phase::Bodies => {
                let Some(stored) = body_item(list, None) else {
                    return Err(items);
                };
                let Some(meta) = self.pending.remove(&uid) else {
                    return Err(items);
                };
                self.open_and_consider(uid, &meta, &stored, keys);
                Ok(Vec::new())
            }
            _ => Err(items),
        }
    }

    fn open_and_consider(
        &mut self,
        uid: NonZeroU32,
        meta: &Meta,
        stored: &[u8],
        keys: &(dyn Keys + Send + Sync),
    ) {
        // Header parsing stops at the blank line; the cap bounds the scan
        // of a message without one.
        let head = &stored[..stored.len().min(8 * 1024 * 1024)];
        if envelope::detect(head).is_none() {
            self.consider(uid, meta, meta.size, stored, None);
            return;
        }
        let mut opened = Vec::with_capacity(stored.len());
        let summary = envelope::open(stored, keys, &mut opened).and_then(|_| {
            envelope::read_summary(stored, keys)
                .map(|s| s.with_prefix(&envelope::stored_prefix(head)))
        });
        match summary {
            Ok(summary) => {
                if let Some(c) = &self.cache {
                    c.cache.put(&c.mailbox, uid.get(), &summary, Some(&opened));
                }
                let size = envelope::view::rfc822_size(&summary);
                self.consider(uid, meta, size, &opened, Some(&summary));
            }
            Err(e) => {
                // Searched as stored, like it is shown.
                metrics::counter!(names::OPEN_FAILURES_TOTAL, "reason" => e.reason()).increment(1);
                self.consider(uid, meta, meta.size, stored, None);
            }
        }
    }

    /// Holds one message against the criteria.
    fn consider(
        &mut self,
        uid: NonZeroU32,
        meta: &Meta,
        size: u64,
        message: &[u8],
        summary: Option<&Summary>,
    ) {
        let candidate = Candidate {
            seq: meta.seq,
            uid,
            max_seq: self.max_seq,
            max_uid: self.max_uid,
            flags: &meta.flags,
            recent: meta.recent,
            internal_date: meta.internal_date.as_ref(),
            size,
            modseq: None,
            message,
            summary,
        };
        if self.search.matches(&candidate) {
            self.found.push(if self.uid { uid } else { meta.seq });
        }
    }

    pub fn on_status(&mut self, status: Status<'static>) -> Result<Vec<Output>, Status<'static>> {
        let Status::Tagged(t) = &status else {
            return Err(status);
        };
        let ok = t.body.kind == StatusKind::Ok;
        match (self.phase, t.tag.as_ref()) {
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
            (Phase::Probe, PROBE_TAG) if ok => {
                let uids: Vec<NonZeroU32> = self.pending.keys().copied().collect();
                let Ok(set) = SequenceSet::try_from(&uids[..]) else {
                    // Nothing left to download: all answered from the cache.
                    return Ok(self.finish());
                };
                self.phase = Phase::Bodies;
                Ok(vec![Output::ToProvider(fetch_command(
                    BODIES_TAG,
                    set,
                    true,
                    vec![MessageDataItemName::Uid, peek(None)],
                ))])
            }
            (Phase::Bodies, BODIES_TAG) if ok => Ok(self.finish()),
            (Phase::Probe, PROBE_TAG) | (Phase::Bodies, BODIES_TAG) => {
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

/// FLAGS, INTERNALDATE and RFC822.SIZE of a probe answer.
fn meta(seq: NonZeroU32, list: &[MessageDataItem<'static>]) -> Meta {
    let mut m = Meta {
        seq,
        flags: Vec::new(),
        recent: false,
        internal_date: None,
        size: 0,
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
