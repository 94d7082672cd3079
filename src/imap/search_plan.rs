//! SEARCH through writ. A search that looks at message content (BODY,
//! TEXT, SUBJECT, HEADER, SENT*, LARGER ...: [`search::needs_content`]) cannot
//! be answered by the provider over sealed mail, so writ answers it:
//!
//! 1. `FETCH * (UID)`: how many messages, and the highest UID (for `*` in
//!    sets). A failure here means an empty mailbox: nothing matches.
//! 2. `FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])`: each
//!    message as it arrives is opened if sealed and held against the
//!    criteria (the whole boolean tree, [`search::Search`]); only the
//!    numbers that match are kept.
//! 3. `* SEARCH ...` and the tagged OK go to the client.
//!
//! Searches without content keys go to the provider as they are.

use std::num::NonZeroU32;

use imap_next::imap_types::command::{Command, CommandBody};
use imap_next::imap_types::core::{Charset, Tag, Text, Vec1};
use imap_next::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName,
};
use imap_next::imap_types::flag::{Flag, FlagFetch};
use imap_next::imap_types::response::{Code, Data, Status, StatusBody, StatusKind, Tagged};
use imap_next::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use super::fetch::Output;
use super::search::{self, Candidate, Search};
use crate::admin::names;
use crate::envelope::{self, Keys};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Count,
    Scan,
}

pub struct SearchPlan {
    client_tag: Tag<'static>,
    uid: bool,
    search: Search,
    phase: Phase,
    max_seq: u32,
    max_uid: u32,
    found: Vec<NonZeroU32>,
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
    items: Vec<MessageDataItemName<'static>>,
) -> Command<'static> {
    Command {
        tag: Tag::unvalidated(tag.to_owned()),
        body: CommandBody::Fetch {
            sequence_set: set,
            macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(items),
            uid: false,
            modifiers: Vec::new(),
        },
    }
}

const COUNT_TAG: &str = "writ.s1";
const SCAN_TAG: &str = "writ.s2";

impl SearchPlan {
    /// For a SEARCH or UID SEARCH with content keys: the plan and its first
    /// command, or the status refusing it (an unknown charset). `None`:
    /// not a content search (the provider answers it).
    pub fn start(
        command: &Command<'static>,
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
            Err(_) => {
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
        };
        let count = fetch_command(
            COUNT_TAG,
            SequenceSet::from(Sequence::Single(SeqOrUid::Asterisk)),
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
                found: Vec::new(),
            },
            count,
        )))
    }

    fn finish(&mut self) -> Vec<Output> {
        let found = std::mem::take(&mut self.found);
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
        let uid = list.iter().find_map(|i| match i {
            MessageDataItem::Uid(u) => Some(*u),
            _ => None,
        });
        let body = list.iter().find_map(|i| match i {
            MessageDataItem::BodyExt {
                section: None,
                origin: None,
                data,
            } => Some(
                data.0
                    .as_ref()
                    .map(|d| d.as_ref().to_vec())
                    .unwrap_or_default(),
            ),
            _ => None,
        });
        match (self.phase, uid, body) {
            (Phase::Count, Some(uid), None) if list.len() == 1 => {
                self.max_seq = self.max_seq.max(seq.get());
                self.max_uid = self.max_uid.max(uid.get());
                Ok(Vec::new())
            }
            (Phase::Scan, Some(uid), Some(stored)) => {
                self.consider(seq, uid, list, &stored, keys);
                Ok(Vec::new())
            }
            _ => Err(items),
        }
    }

    /// Holds one message against the criteria.
    fn consider(
        &mut self,
        seq: NonZeroU32,
        uid: NonZeroU32,
        list: &[MessageDataItem<'static>],
        stored: &[u8],
        keys: &(dyn Keys + Send + Sync),
    ) {
        let mut flags: Vec<Flag<'static>> = Vec::new();
        let mut recent = false;
        let mut internal_date = None;
        let mut size = 0u64;
        for item in list {
            match item {
                MessageDataItem::Flags(f) => {
                    for flag in f {
                        match flag {
                            FlagFetch::Flag(fl) => flags.push(fl.clone()),
                            FlagFetch::Recent => recent = true,
                        }
                    }
                }
                MessageDataItem::InternalDate(d) => internal_date = Some(d.clone()),
                MessageDataItem::Rfc822Size(s) => size = u64::from(*s),
                _ => {}
            }
        }
        // Header parsing stops at the blank line; the cap bounds the scan
        // of a message without one.
        let head = &stored[..stored.len().min(8 * 1024 * 1024)];
        let opened;
        let mut summary = None;
        let message: &[u8] = if envelope::detect(head).is_some() {
            let mut out = Vec::with_capacity(stored.len());
            match envelope::open(stored, keys, &mut out) {
                Ok(_) => {
                    summary = envelope::read_summary(stored, keys)
                        .ok()
                        .map(|s| s.with_prefix(&envelope::stored_prefix(head)));
                    if let Some(s) = &summary {
                        size = crate::envelope::view::rfc822_size(s);
                    }
                    opened = out;
                    &opened
                }
                Err(e) => {
                    // Searched as stored, like it is shown.
                    metrics::counter!(names::OPEN_FAILURES_TOTAL, "reason" => e.reason())
                        .increment(1);
                    stored
                }
            }
        } else {
            stored
        };
        let candidate = Candidate {
            seq,
            uid,
            max_seq: self.max_seq,
            max_uid: self.max_uid,
            flags: &flags,
            recent,
            internal_date: internal_date.as_ref(),
            size,
            modseq: None,
            message,
            summary: summary.as_ref(),
        };
        if self.search.matches(&candidate) {
            self.found.push(if self.uid { uid } else { seq });
        }
    }

    pub fn on_status(&mut self, status: Status<'static>) -> Result<Vec<Output>, Status<'static>> {
        let Status::Tagged(t) = &status else {
            return Err(status);
        };
        match (self.phase, t.tag.as_ref()) {
            (Phase::Count, COUNT_TAG) => {
                if t.body.kind != StatusKind::Ok || self.max_seq == 0 {
                    // No message: nothing matches.
                    return Ok(self.finish());
                }
                self.phase = Phase::Scan;
                let all = SequenceSet::from(Sequence::Range(
                    SeqOrUid::Value(NonZeroU32::MIN),
                    SeqOrUid::Asterisk,
                ));
                Ok(vec![Output::ToProvider(fetch_command(
                    SCAN_TAG,
                    all,
                    vec![
                        MessageDataItemName::Uid,
                        MessageDataItemName::Flags,
                        MessageDataItemName::InternalDate,
                        MessageDataItemName::Rfc822Size,
                        MessageDataItemName::BodyExt {
                            section: None,
                            partial: None,
                            peek: true,
                        },
                    ],
                ))])
            }
            (Phase::Scan, SCAN_TAG) => {
                if t.body.kind != StatusKind::Ok {
                    tracing::warn!("the provider refused writ's FETCH for a SEARCH");
                    return Ok(vec![Output::Finish(tagged(
                        self.client_tag.clone(),
                        StatusKind::No,
                        None,
                        "SEARCH failed: the provider refused to list the messages",
                    ))]);
                }
                self.found.sort();
                Ok(self.finish())
            }
            _ => Err(status),
        }
    }
}
