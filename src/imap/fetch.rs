//! FETCH through writ, as a plan of provider commands.
//!
//! A client's FETCH can name items that only writ can answer for a sealed
//! message, and writ cannot know which messages are sealed before it has
//! looked. So:
//!
//! 1. **Probe** (with the client's own tag and sequence set): the items the
//!    provider answers cheaply (UID, FLAGS, INTERNALDATE, MODSEQ,
//!    RFC822.SIZE, named header fields, all with PEEK) plus the marker
//!    fields, `BODY.PEEK[HEADER.FIELDS (X-Writ Content-Type)]`
//!    ([`marker_fields`]), whatever else the client asked for: the marker
//!    tells sealed from plaintext, and the two fields key the cache
//!    ([`MessageKey`]). Not the whole stored header: Dovecot reads every
//!    message file for that, but answers header fields a client asks for
//!    repeatedly from its index cache, so a warm listing, and a warm
//!    FETCH of a body section, cost the provider no file read. A
//!    plaintext message that needs nothing more is answered at once.
//!    ENVELOPE, BODY, BODYSTRUCTURE and, where the cache holds sealed
//!    mail of the mailbox, the whole header (`BODY[HEADER]`,
//!    `HEADER.FIELDS.NOT`, `RFC822.HEADER`) are not asked for here
//!    ([`after_probe`]): writ answers them from the summary for sealed
//!    mail, and the provider's own (of the sealed container) would cost
//!    it a parse or file read for nothing; the plain phase asks for them
//!    for plaintext messages. (A mailbox the cache holds nothing of may
//!    be all plaintext: its probe keeps the whole header, so that none of
//!    its messages waits in memory for a second command.) A message another session expunged shows
//!    in the probe as long as the provider's index answers for it: a body
//!    section writ then cannot fetch (or one it never asked for, the
//!    expunge reported first) ends the command `OK [EXPUNGEISSUED]`, as
//!    the provider's own FETCH would.
//! 2. **Cached**: the sealed messages writ's cache knows are answered from
//!    it, a chunk at a time as the client drains its output
//!    ([`from_cache`]: at most [`CACHE_CHUNK_BYTES`] composed at once, and
//!    the message that crosses it), before any further command. Each
//!    chunk (the cache's index read, the entries' decryption, composing)
//!    is a job on the process-wide pool, never done in the session.
//! 3. **Sealed**: a FETCH of the stored header and part 1 (the summary)
//!    for the other sealed messages, or of the whole stored message when
//!    a body section was asked for; writ opens it and answers every item.
//!    A listing (no body section, nothing that sets \Seen) does not wait
//!    for the probe's end ([`FetchPlan::sealed_out`]): its sealed
//!    messages are looked up in the cache [`EARLY_BATCH`] at a time as the
//!    probe answers them, and those the cache cannot answer are fetched
//!    at once, pipelined behind the probe (at most [`MAX_PIPELINED`]
//!    commands out: the provider reads no further while its queue is
//!    full). The provider may run such commands side by side (Dovecot
//!    does when its output blocks), so answers are told apart by what
//!    they carry (the probe's always carry the marker fields), and the
//!    sealed phase ends when all its commands are answered, in whatever
//!    order their statuses come. A listing by UID (no modifier) of one
//!    range above the highest UID the cache has an entry for in that
//!    mailbox, or a FETCH has listed since (its new mail) is not even
//!    looked up: the summaries of the whole range are asked for right
//!    behind the probe, part 1 up to [`SPECULATIVE_PART_ONE`]
//!    ([`FetchPlan::take_speculative`]), which saves a round trip. So is
//!    the first listing since writ started of a mailbox the cache holds
//!    nothing of, which may be all plaintext: once per mailbox and start,
//!    only when the provider's last EXISTS there was at most
//!    [`FIRST_LISTING_MAX_MESSAGES`], part 1 up to
//!    [`FIRST_LISTING_PART_ONE`] (what a plaintext folder costs is
//!    bounded; its later listings ask for nothing ahead). Such an answer for a message the probe has not
//!    shown yet, or shows as plaintext, or cut at the limit, is dropped
//!    (the first is then fetched as any other), so nothing is answered
//!    that the probe did not list; a sealed message left unanswered when
//!    the sealed phase's commands are over is asked for whole once more.
//!    A flag change of another session's is never taken for an answer
//!    (it carries no stored header).
//!    The stored header gives the prefix (fields the provider put above
//!    the marker), which the cached summary then carries. Opening (summary
//!    or whole message, BINARY decoding and composing included, and the
//!    cache put) is a job on the process-wide pool ([`opening`], [`work`],
//!    through [`super::opened`]), never done in the session: at most
//!    [`opening::in_flight`] outstanding per plan for whole messages,
//!    [`opening::in_flight_summaries`] for summaries (the session reads no
//!    more provider responses meanwhile), answered in the order the
//!    provider sent them; the phase's tagged status is held until all
//!    are answered, then moves the plan on.
//! 4. **Plain**: a FETCH of the body sections and of ENVELOPE, BODY and
//!    BODYSTRUCTURE the client asked for, for the plaintext messages (and
//!    the sealed ones writ could not open: those are shown as stored).
//!    ENVELOPE, BODY and BODYSTRUCTURE go on as the provider wrote them
//!    ([`answer::ProviderWritten`], from the response's raw bytes), not
//!    as imap-codec writes them back; a partial BINARY is asked for whole
//!    (imap-codec reads no `<origin>` in a BINARY answer) and cut by writ.
//! 5. **Seen**: a fetch that sets \Seen had writ read with PEEK, so writ
//!    stores \Seen itself and reports it in FLAGS, where Dovecot puts it.
//!
//! Then the probe's tagged status goes to the client.
//!
//! Memory, whatever the folder: per message only what the probe found
//! ([`Probed`]: its UID, FLAGS and the provider's items the client asked
//! for, not the marker fields or stored header), until it is answered;
//! answers are composed at most [`opening::in_flight`] at a time from the
//! provider ([`work`]), or [`CACHE_CHUNK_BYTES`] from the cache, and the
//! session takes no more while its output for the client is full (see
//! `session.rs`).
//!
//! Invariants, for the client's view of the mailbox (RFC 3501 §7.4.1):
//!
//! - writ's own commands are of the client's command's kind: by sequence
//!   number for a FETCH (the provider then holds back EXPUNGE during them,
//!   as during the client's own), by UID for a UID FETCH. Every one asks
//!   for UID, and answers are matched by UID.
//! - An EXPUNGE (or, with QRESYNC, a VANISHED) that reaches the client
//!   during a UID FETCH renumbers what is still to be answered
//!   ([`FetchPlan::on_expunge`], [`FetchPlan::on_vanished`]); the
//!   expunged message is not answered after it.
//! - A message another session expunged (the provider answers its sections
//!   NIL) is answered as the provider answers for plaintext: its UID and
//!   FLAGS, body sections NIL, nothing read from the sealed message.
//!   The listing probe's marker fields may come from the provider's index
//!   even then; when writ's own FETCH meets the expunge afterwards
//!   (`OK [EXPUNGEISSUED]`), the client's FETCH ends as Dovecot's would:
//!   `OK [EXPUNGEISSUED]`, a HIGHESTMODSEQ of the probe's sent untagged.
//! - Responses that are not answers (a flag change by another session)
//!   are given back to the session, which passes only FLAGS, MODSEQ and UID.
//! - Each answer lists its items as Dovecot does: each item once (body
//!   sections as often as asked), a UID FETCH's UID first, the short
//!   items (UID, FLAGS, INTERNALDATE, MODSEQ, RFC822.SIZE) before the
//!   others, each group in the order asked; MODSEQ whenever CHANGEDSINCE
//!   was given.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use imap_next::imap_types::command::{Command, CommandBody};
use imap_next::imap_types::core::{NString, NString8, Tag, Vec1};
use imap_next::imap_types::fetch::{
    Macro, MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Part, Section,
};
use imap_next::imap_types::flag::{Flag, FlagFetch, StoreResponse, StoreType};
use imap_next::imap_types::response::{Data, Status, StatusKind};
use imap_next::imap_types::sequence::SequenceSet;

use std::sync::Arc;

use super::answer::{self, Item, Need};
use super::cache::{Cache, MailboxKey, MessageKey};
use super::section::binary::Refusal;
use super::sequence::Vanished;
use super::session::SharedKeys;
use crate::envelope::{self, Detected, Keys};

/// What the session does with the plan's results.
#[derive(Debug)]
pub enum Output {
    ToClient(Data<'static>),
    /// A complete untagged response written by the plan as IMAP text
    /// ending in CRLF: one imap-types has no form for (ESEARCH, THREAD),
    /// or a FETCH response carrying writ's own ENVELOPE, BODY or
    /// BODYSTRUCTURE ([`answer::response`]).
    ToClientRaw(Vec<u8>),
    ToProvider(Command<'static>),
    /// The plan is over: this tagged status goes to the client.
    Finish(Status<'static>),
    /// The plan is over and says nothing more: the provider answers the
    /// command it sent last (a sealed APPEND).
    Over,
    /// A command for the provider written by the plan, whole with its
    /// CRLF, under the client's tag (a sealed MULTIAPPEND, which
    /// imap-types cannot write as one command).
    ToProviderLine(Tag<'static>, Vec<u8>),
    /// A SEARCH with SAVE succeeded: its result (UIDs; `None`: empty) is
    /// `$` from now on ([`super::saved_result`]).
    Saved(Option<SequenceSet>),
    /// The plan is over and the client's command, now without `$`, goes
    /// on as if just received ([`super::saved_result::Resolve`]).
    Resume(Command<'static>),
}

/// The cache and the selected mailbox's key in it.
#[derive(Clone)]
pub struct CacheRef {
    pub cache: Arc<Cache>,
    pub mailbox: MailboxKey,
    /// The mailbox's message count as the provider last told it (at
    /// most: expunges may have lowered it), if it did.
    pub messages: Option<u32>,
}

/// One message as the probe found it, kept until it is answered: the
/// plan's only state per message of the folder (a few hundred bytes: the
/// probe's answer without the marker fields or stored header).
struct Probed {
    seq: NonZeroU32,
    items: Vec<MessageDataItem<'static>>,
    sealed: Option<Detected>,
    /// Stored fields above the marker: read in the sealed phase (the
    /// probe asks only for the marker fields), where the message is opened.
    prefix: Vec<u8>,
    seen: bool,
    /// Its cache entry: the UID and the marker fields it was fetched with.
    key: MessageKey,
    /// How many identities the keyring offers for its epoch (sealed only).
    offered: usize,
}

/// What the probed messages waiting for their answers may weigh in all
/// ([`Probed::weight`]: about 260 bytes each plus their flags): past it
/// a message is left unanswered and the command ends NO. A provider
/// answering a probe with endless distinct UIDs, or FLAGS of megabytes,
/// cannot grow a session without bound.
const MAX_PROBED_BYTES: usize = 256 * 1024 * 1024;
/// Longest FLAGS (keywords and all) kept for a message: a longer one is
/// no answer writ takes.
const MAX_FLAGS_BYTES: usize = 64 * 1024;

/// The bytes of a FLAGS item's flags, roughly as written.
fn flags_bytes(items: &[MessageDataItem<'_>]) -> usize {
    items
        .iter()
        .map(|i| match i {
            MessageDataItem::Flags(f) => f
                .iter()
                .map(|f| match f {
                    FlagFetch::Flag(Flag::Keyword(k)) => k.as_ref().len() + 1,
                    FlagFetch::Flag(f @ Flag::Extension(_)) => f.to_string().len() + 1,
                    _ => 10,
                })
                .sum(),
            _ => 0,
        })
        .sum()
}

impl Probed {
    /// What keeping it costs, roughly: its fixed part, its flags and any
    /// section the probe read that the client asked for.
    fn weight(&self) -> usize {
        let sections: usize = self
            .items
            .iter()
            .map(|i| match i {
                MessageDataItem::BodyExt { data, .. } => {
                    data.0.as_ref().map_or(0, |d| d.as_ref().len())
                }
                _ => 0,
            })
            .sum();
        256 + flags_bytes(&self.items) + sections + self.prefix.len()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Probe,
    /// Sealed messages answered from the cache, a chunk at a time as the
    /// client drains its output ([`FetchPlan::more`]); only a listing's
    /// pipelined commands ([`FetchPlan::sealed_out`]) are in flight. Then the
    /// rest are fetched (`payload`: whole).
    Cached {
        payload: bool,
    },
    /// writ's FETCH commands for the sealed messages the cache did not
    /// answer ([`FetchPlan::sealed_out`]: the phase ends with the last of
    /// them answered, whichever it is).
    Sealed {
        payload: bool,
    },
    Plain(Tag<'static>),
    Seen(Tag<'static>),
}

pub struct FetchPlan {
    client_tag: Tag<'static>,
    /// The client's command is a UID FETCH. writ's own commands are of the
    /// same kind: by sequence number for a FETCH, so that the provider
    /// holds back EXPUNGE during them as it would during the client's
    /// (RFC 3501 §7.4.1), by UID for a UID FETCH.
    uid: bool,
    wanted: Vec<MessageDataItemName<'static>>,
    /// The whole header ([`whole_header`]) is left out of the probe, for
    /// the plain phase: the cache holds sealed mail of this mailbox.
    header_later: bool,
    /// One of writ's own FETCH commands ended `OK [EXPUNGEISSUED]`: a
    /// message another session expunged was found only after the probe
    /// (whose marker fields the provider answers from its index). The
    /// client's FETCH ends so, as the provider's own would.
    expunge_issued: bool,
    probed: BTreeMap<NonZeroU32, Probed>,
    /// What `probed` weighs ([`Probed::weight`]), within
    /// [`MAX_PROBED_BYTES`].
    probed_bytes: usize,
    phase: Phase,
    probe_status: Option<Status<'static>>,
    /// Messages writ must mark \Seen (it read them with PEEK): UID →
    /// sequence number.
    mark_seen: BTreeMap<NonZeroU32, NonZeroU32>,
    /// Sealed messages whose summary lacked the header: fetch the payload.
    refetch: Vec<NonZeroU32>,
    /// Answers ready without a further command.
    pending_out: Vec<Output>,
    /// Sealed messages still to look up in the cache, in UID order
    /// ([`Phase::Cached`]).
    cached: std::collections::VecDeque<NonZeroU32>,
    /// Sealed messages the cache could not answer: fetched from the
    /// provider after it.
    uncached: Vec<NonZeroU32>,
    /// The chunk of answers being composed from the cache off the
    /// session ([`from_cache`]), one at most.
    from_cache: Option<from_cache::Chunk>,
    next_tag: u32,
    cache: Option<CacheRef>,
    /// An item the client asked for could not be answered: the command
    /// ends NO, never OK with the item missing.
    incomplete: std::cell::Cell<bool>,
    /// A BINARY section did not decode: the command ends NO with its code
    /// (`NO [UNKNOWN-CTE]`, `NO [PARSE]`), as Dovecot ends it.
    refused: std::cell::Cell<Option<Refusal>>,
    /// ENVELOPE, BODY and BODYSTRUCTURE of the plain phase's response
    /// being handled, as the provider wrote them
    /// ([`FetchPlan::provider_response`]).
    provider_written: Option<answer::ProviderWritten>,
    /// The keyring and the runner, for opening messages on the pool
    /// ([`opening`]); without them (unit tests) they open on the
    /// caller's thread.
    keys: Option<(SharedKeys, Runner)>,
    /// Messages being opened, in the order the provider sent them.
    opening: InOrder<NonZeroU32, work::Opened>,
    /// A listing: sealed messages are looked up and fetched while the
    /// probe is still answered (see the header, 3).
    pipelined: bool,
    /// Tags of the sealed phase's FETCH commands in flight, those sent
    /// while the probe was answered included; the phase ends when the
    /// last of them is answered, whichever it is.
    sealed_out: std::collections::VecDeque<Tag<'static>>,
    /// The probe failed while pipelined commands were out: its status
    /// ends the plan once they are answered.
    probe_failed: bool,
    /// The sealed phase's commands are all answered, but messages are
    /// still being opened: the plan moves on once they are answered
    /// ([`FetchPlan::poll`]); meanwhile it reads no further answers.
    drain_then_next: bool,
    /// Summaries to open, submitted together ([`FetchPlan::submit_summary`]).
    batch: Vec<(NonZeroU32, work::Job)>,
    /// The UID range whose summaries were asked for with the probe (no
    /// entry of the cache is that high; see the header, 3).
    speculated: Option<(u32, u32)>,
    /// The octets of part 1 that command asked for.
    speculated_part_one: u32,
    /// The range of a listing that may have its summaries asked for with
    /// the probe, until the session asks ([`FetchPlan::take_speculative`]).
    speculable: Option<SequenceSet>,
    /// Messages of the range whose speculative answer was dropped (it came
    /// before the probe's): fetched as any other.
    unspeculated: std::collections::HashSet<NonZeroU32>,
    /// The sealed messages left unanswered were asked for once more.
    retried: bool,
    /// The highest UID the probe listed: once the FETCH is over, the cache
    /// learns that it has seen the mailbox up to there
    /// ([`crate::imap::cache::Cache::listed_up_to`]), plaintext messages
    /// included, which make no entry.
    highest_listed: u32,
}

/// Sealed messages looked up in the cache, and fetched from the provider,
/// per pipelined step while a listing's probe is answered.
pub(super) const EARLY_BATCH: usize = 64;

/// Pipelined commands of the sealed phase in flight at most (with the
/// probe, Dovecot's queue of four).
pub(super) const MAX_PIPELINED: usize = 3;

/// UIDs whose speculative answer was dropped that a plan remembers, at
/// most ([`FetchPlan::unspeculated`]).
pub(super) const MAX_UNSPECULATED: usize = 100_000;

/// Octets of part 1 a speculative command asks for (`BODY.PEEK[1]<0.n>`):
/// a summary is a few KiB, a plaintext message's part 1 its whole text,
/// which writ drops. One cut there is asked for whole later.
pub(super) const SPECULATIVE_PART_ONE: u32 = 64 * 1024;

/// Octets of part 1 a mailbox's first listing asks for with its probe
/// ([`phases::speculation`]): a summary is 2 to 10 KiB (the stored header
/// and the MIME structure, armored); the folder may be all plaintext.
pub(super) const FIRST_LISTING_PART_ONE: u32 = 16 * 1024;

/// Messages a mailbox the cache holds nothing of has at most (by its last
/// EXISTS) for its first listing to ask for summaries with the probe: the
/// round trip saved matters in a small folder, and what the provider
/// sends for nothing if the folder is plaintext stays under about
/// 2,000 × (its header + 16 KiB), once per folder and start of writ.
pub(super) const FIRST_LISTING_MAX_MESSAGES: u32 = 2_000;

impl FetchPlan {
    /// A plan for a client's FETCH or UID FETCH; `None` for other commands
    /// and for a FETCH of items only the provider has (UID, FLAGS,
    /// INTERNALDATE, MODSEQ), which goes to it as it is. The returned
    /// command (the probe) goes to the provider.
    pub fn start(
        command: &Command<'static>,
        cache: Option<CacheRef>,
    ) -> Option<(FetchPlan, Command<'static>)> {
        let CommandBody::Fetch {
            sequence_set,
            macro_or_item_names,
            uid,
            modifiers,
        } = &command.body
        else {
            return None;
        };
        let wanted = match macro_or_item_names {
            MacroOrMessageDataItemNames::Macro(m) => {
                let mut v = vec![
                    MessageDataItemName::Flags,
                    MessageDataItemName::InternalDate,
                    MessageDataItemName::Rfc822Size,
                ];
                if matches!(m, Macro::All | Macro::Full) {
                    v.push(MessageDataItemName::Envelope);
                }
                if matches!(m, Macro::Full) {
                    v.push(MessageDataItemName::Body);
                }
                v
            }
            MacroOrMessageDataItemNames::MessageDataItemNames(v) => v.clone(),
        };
        let wanted = as_dovecot_parses(wanted, *uid, modifiers);
        if wanted.iter().all(answer::from_provider) {
            // UID, FLAGS, INTERNALDATE, MODSEQ: the same for sealed and
            // plaintext mail. The provider answers it as the client asked
            // (a flag sync, CHANGEDSINCE and VANISHED included), without a
            // probe for the marker fields.
            return None;
        }
        // Not when the fetch sets \Seen: the messages writ must mark are
        // those left when the probe is over ([`FetchPlan::start_sealed`]).
        let pipelined = !wanted
            .iter()
            .any(|i| answer::need(i, None) == Need::Payload)
            && wanted
                .iter()
                .any(|i| answer::need(i, None) != Need::Provider)
            && !wanted.iter().any(answer::sets_seen);
        // The marker fields, whatever the client asked for: the provider
        // answers them from its index, and a FETCH of a body section that
        // writ's cache answers then costs the provider no file read. A
        // message another session expunged may show only later (NIL in
        // the sealed or plain phase: answered as gone, or `OK
        // [EXPUNGEISSUED]`), or not at all when the cache answers it.
        let marker = marker_fields();
        // The whole header is left to the plain phase only where writ's
        // cache holds sealed mail of this mailbox: a mailbox it holds
        // nothing of may be all plaintext, whose messages the probe then
        // answers at once (none waits, in memory, for a second command).
        let header_later = cache
            .as_ref()
            .is_some_and(|c| c.cache.highest_uid(&c.mailbox).is_some());
        let later = |i: &MessageDataItemName<'_>| after_probe(i, header_later);
        // Header sections go with PEEK: which messages the fetch marks
        // \Seen is writ's to report (FLAGS), so writ stores it itself.
        // ENVELOPE, BODY, BODYSTRUCTURE and (see above) the whole header
        // are left out: for a sealed message writ answers them from the
        // summary, and the provider's (of the sealed container) would
        // cost it a parse or read of the stored message for nothing.
        // Plaintext messages get them in the plain phase ([`after_probe`]).
        let mut probe: Vec<MessageDataItemName<'static>> = wanted
            .iter()
            .filter(|i| answer::need(i, None) != Need::Payload && !later(i))
            .map(|i| match i {
                MessageDataItemName::BodyExt {
                    section, partial, ..
                } => MessageDataItemName::BodyExt {
                    section: section.clone(),
                    partial: *partial,
                    peek: true,
                },
                other => other.clone(),
            })
            .collect();
        for extra in [
            MessageDataItemName::Uid,
            MessageDataItemName::Flags,
            marker.clone(),
        ] {
            if !probe.contains(&extra) {
                probe.push(extra);
            }
        }
        let probe = crate::imap::opened::fetch_command(
            command.tag.clone(),
            sequence_set.clone(),
            *uid,
            probe,
            modifiers.clone(),
        );
        // One range by UID, no modifier: CHANGEDSINCE lists only some
        // messages of the range, VANISHED would be answered twice.
        let speculable =
            (pipelined && *uid && modifiers.is_empty() && sequence_set.0.as_ref().len() == 1)
                .then(|| sequence_set.clone());
        Some((
            FetchPlan {
                client_tag: command.tag.clone(),
                uid: *uid,
                wanted,
                header_later,
                expunge_issued: false,
                probed: BTreeMap::new(),
                probed_bytes: 0,
                phase: Phase::Probe,
                probe_status: None,
                mark_seen: BTreeMap::new(),
                refetch: Vec::new(),
                pending_out: Vec::new(),
                cached: std::collections::VecDeque::new(),
                uncached: Vec::new(),
                from_cache: None,
                next_tag: 0,
                cache,
                incomplete: std::cell::Cell::new(false),
                refused: std::cell::Cell::new(None),
                keys: None,
                // The most any phase keeps outstanding (see `saturated`).
                opening: InOrder::new(opening::in_flight_summaries()),
                provider_written: None,
                pipelined,
                sealed_out: std::collections::VecDeque::new(),
                probe_failed: false,
                drain_then_next: false,
                batch: Vec::new(),
                speculated: None,
                speculated_part_one: 0,
                speculable,
                unspeculated: std::collections::HashSet::new(),
                retried: false,
                highest_listed: 0,
            },
            probe,
        ))
    }

    /// Opens sealed messages with `keys` through `runner` (the
    /// process-wide pool), while the provider sends the next ones.
    pub fn opening_with(mut self, keys: SharedKeys, runner: Runner) -> FetchPlan {
        self.keys = Some((keys, runner));
        self
    }

    fn writ_tag(&mut self) -> Tag<'static> {
        self.next_tag += 1;
        Tag::unvalidated(format!("writ.{}", self.next_tag))
    }

    fn needs_payload(&self) -> bool {
        self.wanted
            .iter()
            .any(|i| answer::need(i, None) == Need::Payload)
    }

    /// Does a plaintext message need a FETCH after the probe: a body
    /// section, or an item left out of the probe ([`after_probe`])?
    fn needs_plain_fetch(&self) -> bool {
        self.wanted
            .iter()
            .any(|i| answer::need(i, None) == Need::Payload || self.after_probe(i))
    }

    /// Is `item` one the probe left out ([`after_probe`])?
    fn after_probe(&self, item: &MessageDataItemName<'_>) -> bool {
        after_probe(item, self.header_later)
    }

    fn needs_summary(&self) -> bool {
        self.wanted
            .iter()
            .any(|i| answer::need(i, None) != Need::Provider)
    }

    fn wants_seen(&self) -> bool {
        self.wanted.iter().any(answer::sets_seen)
    }

    /// The provider's items the client asked for, in the client's order.
    fn provider_items(
        &self,
        items: &[MessageDataItem<'static>],
        only_provider: bool,
    ) -> Vec<MessageDataItem<'static>> {
        self.wanted
            .iter()
            .filter(|n| !only_provider || answer::from_provider(n))
            .filter_map(|n| items.iter().find(|i| answers(i, n)).cloned())
            .collect()
    }

    /// The provider's items for a plaintext message, in the client's
    /// order; ENVELOPE, BODY and BODYSTRUCTURE as the provider wrote them
    /// (`written`) when they were found; a partial BINARY cut by writ from
    /// the whole section the plain phase asked for, in the whole's form
    /// (literal8 or not), as Dovecot answers it.
    fn plain_items(
        &self,
        items: &[MessageDataItem<'static>],
        written: &answer::ProviderWritten,
    ) -> Vec<Item> {
        self.wanted
            .iter()
            .filter_map(|n| match n {
                n if deferred(n) => written.item(n).or_else(|| {
                    items
                        .iter()
                        .find(|i| answers(i, n))
                        .cloned()
                        .map(Item::Typed)
                }),
                MessageDataItemName::Binary {
                    section,
                    partial: Some(partial),
                    ..
                } => items.iter().find_map(|i| match i {
                    MessageDataItem::Binary { section: s, value } if s == section => {
                        Some(binary_cut(section, *partial, value))
                    }
                    _ => None,
                }),
                n => items
                    .iter()
                    .find(|i| answers(i, n))
                    .cloned()
                    .map(Item::Typed),
            })
            .collect()
    }

    /// The answer for a message another session expunged: the provider's
    /// own items (UID, FLAGS ...), body sections NIL, as Dovecot answers
    /// for plaintext. Nothing writ would have to read from the message.
    fn gone_items(&self, items: &[MessageDataItem<'static>]) -> Vec<MessageDataItem<'static>> {
        let nil = || NString(None);
        self.wanted
            .iter()
            .filter_map(|n| match n {
                n if answer::from_provider(n) => items.iter().find(|i| answers(i, n)).cloned(),
                MessageDataItemName::BodyExt {
                    section, partial, ..
                } => Some(MessageDataItem::BodyExt {
                    section: answer::echoed(section),
                    origin: partial.map(|(o, _)| o),
                    data: nil(),
                }),
                MessageDataItemName::Rfc822 => Some(MessageDataItem::Rfc822(nil())),
                MessageDataItemName::Rfc822Header => Some(MessageDataItem::Rfc822Header(nil())),
                MessageDataItemName::Rfc822Text => Some(MessageDataItem::Rfc822Text(nil())),
                _ => None,
            })
            .collect()
    }

    /// The provider told the client (and so writ) that message `seq` is
    /// gone (RFC 3501 §7.4.1: allowed during a UID FETCH). Messages after
    /// it move down one; the gone one is not answered any more: its number
    /// now names another message.
    pub fn on_expunge(&mut self, seq: NonZeroU32) {
        let before = self.probed.len();
        self.probed.retain(|_, p| p.seq != seq);
        self.gone_unread(before);
        for p in self.probed.values_mut() {
            p.seq = renumbered(p.seq, seq);
        }
        self.recount();
        self.mark_seen.retain(|_, s| *s != seq);
        for s in self.mark_seen.values_mut() {
            *s = renumbered(*s, seq);
        }
    }

    /// The provider told the client (and so writ) that these messages are
    /// gone (`* VANISHED`, QRESYNC's EXPUNGE): as [`Self::on_expunge`],
    /// by UID.
    pub fn on_vanished(&mut self, gone: &Vanished) {
        let before = self.probed.len();
        self.probed
            .retain(|uid, p| gone.renumbered(p.seq, *uid).map(|s| p.seq = s).is_some());
        self.gone_unread(before);
        self.recount();
        self.mark_seen
            .retain(|uid, seq| gone.renumbered(*seq, *uid).map(|s| *seq = s).is_some());
    }

    /// Messages the probe listed went (`before`: how many were waiting)
    /// before a body section or the whole header of theirs was read: the
    /// provider, asked for them straight, would have found their files
    /// gone and ended the command `OK [EXPUNGEISSUED]`, so the client's
    /// ends so. (The probe's marker fields the provider answers from its
    /// index whether the file is there or not; a whole header the probe
    /// asked for itself, the provider's own status reports.)
    fn gone_unread(&mut self, before: usize) {
        // The whole header counts where the probe left it out: in the
        // probe, the provider read it (and said so itself).
        let reads_file =
            self.needs_payload() || (self.header_later && self.wanted.iter().any(whole_header));
        if self.probed.len() < before && reads_file {
            self.expunge_issued = true;
        }
    }

    /// The provider sent a FETCH response writ could not read: a message
    /// goes unanswered, so the command ends NO.
    pub fn unanswered(&self) {
        self.incomplete.set(true);
    }

    /// The raw bytes of the provider's FETCH response that
    /// [`FetchPlan::on_fetch`] gets next: in the plain phase its
    /// ENVELOPE, BODY and BODYSTRUCTURE go to the client as the provider
    /// wrote them, not as imap-codec writes them back (media types' case).
    pub fn provider_response(&mut self, raw: &[u8]) {
        self.provider_written = (matches!(self.phase, Phase::Plain(_))
            && self.wanted.iter().any(deferred))
        .then(|| answer::ProviderWritten::of(raw));
    }

    /// A FETCH response of the provider. `Err` gives it back when it does
    /// not belong to this plan (it goes to the client as it is: a flag
    /// change by another session, which the message's own answer, if not
    /// sent yet, then carries too).
    pub fn on_fetch(
        &mut self,
        seq: NonZeroU32,
        items: Vec1<MessageDataItem<'static>>,
        keys: &(dyn Keys + Send + Sync),
    ) -> Result<Vec<Output>, Vec1<MessageDataItem<'static>>> {
        let answered = self.on_fetch_of_plan(seq, items, keys);
        if let Err(passed) = &answered {
            self.note_change(seq, passed.as_ref());
        }
        answered
    }

    /// Keeps a probed message until it is answered; false (and the command
    /// ends NO) when its flags are too long or the plan holds too much.
    fn keep_probed(&mut self, uid: NonZeroU32, probed: Probed) -> bool {
        let weight = probed.weight();
        if flags_bytes(&probed.items) > MAX_FLAGS_BYTES
            || self.probed_bytes + weight > MAX_PROBED_BYTES
        {
            tracing::warn!(
                "a FETCH's probe answers weigh more than writ keeps: a message goes unanswered"
            );
            self.incomplete.set(true);
            return false;
        }
        self.probed_bytes += weight;
        if let Some(old) = self.probed.insert(uid, probed) {
            self.probed_bytes = self.probed_bytes.saturating_sub(old.weight());
        }
        true
    }

    /// A probed message answered (or gone): no longer kept.
    fn forget(&mut self, uid: &NonZeroU32) -> Option<Probed> {
        let gone = self.probed.remove(uid)?;
        self.probed_bytes = self.probed_bytes.saturating_sub(gone.weight());
        Some(gone)
    }

    /// `probed_bytes` again, after messages were dropped in bulk.
    fn recount(&mut self) {
        self.probed_bytes = self.probed.values().map(Probed::weight).sum();
    }

    /// A flag change passed on to the client: the probed message it names
    /// (by UID, else by number) keeps its FLAGS and MODSEQ for its answer.
    fn note_change(&mut self, seq: NonZeroU32, list: &[MessageDataItem<'static>]) {
        let probed = match uid_of(list) {
            Some(uid) => self.probed.get_mut(&uid),
            None => self.probed.values_mut().find(|p| p.seq == seq),
        };
        if flags_bytes(list) > MAX_FLAGS_BYTES {
            return;
        }
        if let Some(p) = probed {
            let before = p.weight();
            if !take_changes(&mut p.items, list) {
                return;
            }
            let after = p.weight();
            p.seen = p.items.iter().any(|i| {
                matches!(i, MessageDataItem::Flags(f) if f.contains(&FlagFetch::Flag(Flag::Seen)))
            });
            self.probed_bytes = (self.probed_bytes + after).saturating_sub(before);
        }
    }

    fn on_fetch_of_plan(
        &mut self,
        seq: NonZeroU32,
        items: Vec1<MessageDataItem<'static>>,
        keys: &(dyn Keys + Send + Sync),
    ) -> Result<Vec<Output>, Vec1<MessageDataItem<'static>>> {
        let list = items.as_ref();
        let written = self.provider_written.take().unwrap_or_default();
        let phase = match self.phase.clone() {
            // A pipelined command's answer (the stored header without the
            // marker fields the probe's always carry), whatever the phase.
            Phase::Probe | Phase::Cached { .. }
                if self.pipelined
                    && list.iter().any(is_stored_header)
                    && !list.iter().any(is_marker_fields) =>
            {
                Phase::Sealed { payload: false }
            }
            phase => phase,
        };
        match phase {
            Phase::Probe => self.probe_answered(seq, items, keys),
            Phase::Sealed { .. } if self.probe_failed => {
                // After the probe failed nothing more is answered: a
                // pipelined command's answer is dropped (another
                // session's flag change goes on as ever).
                if list.iter().any(is_stored_header) {
                    Ok(Vec::new())
                } else {
                    Err(items)
                }
            }
            Phase::Sealed { payload, .. } => self.sealed_answered(items, keys, payload),
            Phase::Plain(_) => self.plain_answered(items, &written),
            Phase::Cached { .. } | Phase::Seen(_) => Err(items),
        }
    }

    /// A tagged status from the provider; `Err` gives it back when it does
    /// not end a command of this plan.
    pub fn on_status(&mut self, status: Status<'static>) -> Result<Vec<Output>, Status<'static>> {
        let Status::Tagged(tagged) = &status else {
            return Err(status);
        };
        let ok = tagged.body.kind == StatusKind::Ok;
        // A command's answers are over: the summaries queued go now.
        self.flush_batch();
        if let Some(at) = self.sealed_out.iter().position(|t| *t == tagged.tag) {
            // A command of the sealed phase is over (pipelined or not, in
            // any order): the phase ends with the last.
            self.sealed_out.remove(at);
            if !ok {
                tracing::warn!(status = ?tagged.body.text, "a command writ sent for a FETCH failed");
            }
            if is_expunge_issued(&status) {
                self.expunge_issued = true;
            }
            if !matches!(self.phase, Phase::Sealed { .. }) {
                // Room for the next pipelined command.
                return Ok(self.early_fetch());
            }
            if !self.sealed_out.is_empty() {
                return Ok(Vec::new());
            }
            return Ok(self.phase_over());
        }
        match self.phase.clone() {
            Phase::Probe if tagged.tag == self.client_tag => {
                if !ok {
                    if !self.sealed_out.is_empty() {
                        // Pipelined commands are out: their answers are
                        // taken (and dropped) before the plan ends.
                        self.probe_failed = true;
                        self.probed.clear();
                        self.probed_bytes = 0;
                        self.mark_seen.clear();
                        self.cached.clear();
                        self.uncached.clear();
                        self.refetch.clear();
                        self.from_cache = None;
                        self.probe_status = Some(status);
                        self.phase = Phase::Sealed { payload: false };
                        return Ok(Vec::new());
                    }
                    return Ok(vec![Output::Finish(status)]);
                }
                self.probe_status = Some(status);
                Ok(self.next_phase())
            }
            Phase::Plain(tag) | Phase::Seen(tag) if tagged.tag == tag => {
                if !ok {
                    tracing::warn!(status = ?tagged.body.text, "a command writ sent for a FETCH failed");
                }
                if !matches!(self.phase, Phase::Seen(_)) && is_expunge_issued(&status) {
                    self.expunge_issued = true;
                }
                Ok(self.phase_over())
            }
            _ => Err(status),
        }
    }

    /// The phase's commands are all answered: the next phase, once every
    /// message still being opened is answered ([`FetchPlan::poll`]).
    fn phase_over(&mut self) -> Vec<Output> {
        if !self.opening.is_empty() {
            self.drain_then_next = true;
            return Vec::new();
        }
        self.next_phase()
    }
}

/// A FETCH response, unless there is nothing to say: typed when every
/// item is, else written whole ([`answer::response`]) and queued raw.
///
/// The items go in Dovecot's order: the short ones it buffers (UID,
/// FLAGS, INTERNALDATE, MODSEQ, RFC822.SIZE) first, then the others
/// (ENVELOPE, BODY, BODYSTRUCTURE, sections), each group in the order
/// they were asked for.
fn fetch(seq: NonZeroU32, items: Vec<Item>) -> Option<Output> {
    if items.is_empty() {
        return None;
    }
    let (mut items, rest): (Vec<Item>, Vec<Item>) = items.into_iter().partition(is_buffered);
    items.extend(rest);
    if items.iter().any(|i| matches!(i, Item::Written(_))) {
        return Some(Output::ToClientRaw(answer::response(seq, items)));
    }
    let items: Vec<MessageDataItem<'static>> = items
        .into_iter()
        .filter_map(|i| match i {
            Item::Typed(i) => Some(i),
            Item::Written(_) => None,
        })
        .collect();
    Vec1::try_from(items)
        .ok()
        .map(|items| Output::ToClient(Data::Fetch { seq, items }))
}

/// `BINARY[section]<origin>` cut from the provider's whole `value`.
fn binary_cut(section: &[NonZeroU32], partial: (u32, NonZeroU32), value: &NString8<'_>) -> Item {
    match value {
        NString8::Literal8(l) => answer::binary_item(section, Some(partial), &l.data, true),
        NString8::NString(NString(Some(s))) => {
            answer::binary_item(section, Some(partial), s.as_ref(), false)
        }
        NString8::NString(NString(None)) => {
            let numbers: Vec<String> = section.iter().map(|n| n.to_string()).collect();
            let text = format!("BINARY[{}]<{}> NIL", numbers.join("."), partial.0);
            Item::Written(text.into_bytes().into())
        }
    }
}

fn typed(items: Vec<MessageDataItem<'static>>) -> Vec<Item> {
    items.into_iter().map(Item::Typed).collect()
}

mod answers;
mod from_cache;
mod items;
pub(crate) mod opening;
mod phases;
mod work;
pub use from_cache::CACHE_CHUNK_BYTES;
#[cfg(test)]
mod cache_tests;
#[cfg(test)]
mod speculative_tests;
#[cfg(test)]
mod tests;

use opening::{InOrder, Runner};

use items::{
    after_probe, answers, as_dovecot_parses, binary_refused, data_bytes, deferred, expunge_issued,
    incomplete, is_body_item, is_buffered, is_expunge_issued, is_marker_fields, is_nil_section,
    is_stored_header, is_structure_item, part_one_cut, renumbered, show_seen, take_changes,
    whole_header,
};
pub(super) use items::{marker_fields, peek, remember_undecryptable, uid_of, undecryptable_known};
