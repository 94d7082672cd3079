//! The FETCH plan's small pieces: which provider item answers which item
//! name, \Seen in FLAGS where Dovecot writes it, renumbering after an
//! EXPUNGE, the cache's memory of undecryptable messages, the items a
//! FETCH asks for as Dovecot reads them, those the probe leaves out, and
//! a speculative part 1 cut at its limit.

use std::num::NonZeroU32;

use imap_next::imap_types::core::{AString, Atom, Tag, Vec1};
use imap_next::imap_types::fetch::{MessageDataItem, MessageDataItemName, Section};
use imap_next::imap_types::flag::{Flag, FlagFetch};
use imap_next::imap_types::response::{Code, CodeOther, Status, StatusBody, StatusKind, Tagged};

use imap_next::imap_types::command::FetchModifier;

use super::CacheRef;
use crate::envelope::{self, Keys};
use crate::imap::answer::Item;
use crate::imap::cache::{MARKER_FIELDS, MessageKey, Undecryptable};
use crate::imap::section::binary::Refusal;

pub(in crate::imap) fn peek(section: Option<Section<'static>>) -> MessageDataItemName<'static> {
    MessageDataItemName::BodyExt {
        section,
        partial: None,
        peek: true,
    }
}

/// `BODY.PEEK[HEADER.FIELDS (X-Writ Content-Type)]`: what the probe asks
/// of every message to tell sealed from plaintext and key the cache
/// ([`MARKER_FIELDS`]).
pub(in crate::imap) fn marker_fields() -> MessageDataItemName<'static> {
    let names = MARKER_FIELDS.map(|n| AString::from(Atom::unvalidated(n)));
    peek(Some(Section::HeaderFields(
        None,
        Vec1::unvalidated(names.to_vec()),
    )))
}

/// Is `item` the provider's answer to [`marker_fields`] (what every
/// probe asks for), without making the item name?
pub(super) fn is_marker_fields(item: &MessageDataItem<'_>) -> bool {
    let MessageDataItem::BodyExt {
        section: Some(Section::HeaderFields(None, names)),
        origin: None,
        ..
    } = item
    else {
        return false;
    };
    names.as_ref().len() == MARKER_FIELDS.len()
        && names
            .as_ref()
            .iter()
            .zip(MARKER_FIELDS)
            .all(|(n, m)| n.as_ref().eq_ignore_ascii_case(m.as_bytes()))
}

pub(super) fn is_stored_header(item: &MessageDataItem<'_>) -> bool {
    matches!(
        item,
        MessageDataItem::BodyExt {
            section: Some(Section::Header(None)),
            origin: None,
            ..
        }
    )
}

pub(super) fn data_bytes(item: &MessageDataItem<'_>) -> Option<Vec<u8>> {
    match item {
        MessageDataItem::BodyExt { data, .. } => data.0.as_ref().map(|s| s.as_ref().to_vec()),
        _ => None,
    }
}

pub(in crate::imap) fn uid_of(items: &[MessageDataItem<'_>]) -> Option<NonZeroU32> {
    items.iter().find_map(|i| match i {
        MessageDataItem::Uid(u) => Some(*u),
        _ => None,
    })
}

/// Does the provider's item answer the wanted item name?
pub(super) fn answers(item: &MessageDataItem<'_>, name: &MessageDataItemName<'_>) -> bool {
    match (item, name) {
        (MessageDataItem::Uid(_), MessageDataItemName::Uid)
        | (MessageDataItem::Flags(_), MessageDataItemName::Flags)
        | (MessageDataItem::InternalDate(_), MessageDataItemName::InternalDate)
        | (MessageDataItem::Rfc822Size(_), MessageDataItemName::Rfc822Size)
        | (MessageDataItem::Envelope(_), MessageDataItemName::Envelope)
        | (MessageDataItem::Body(_), MessageDataItemName::Body)
        | (MessageDataItem::BodyStructure(_), MessageDataItemName::BodyStructure)
        | (MessageDataItem::Rfc822(_), MessageDataItemName::Rfc822)
        | (MessageDataItem::Rfc822Header(_), MessageDataItemName::Rfc822Header)
        | (MessageDataItem::Rfc822Text(_), MessageDataItemName::Rfc822Text) => true,
        (MessageDataItem::ModSeq(_), MessageDataItemName::ModSeq) => true,
        // A plaintext message's BINARY from the provider (imap-types keeps
        // no `<origin>`, so only whole sections are matched; a partial is
        // cut by `FetchPlan::plain_items`).
        (
            MessageDataItem::Binary { section, .. },
            MessageDataItemName::Binary {
                section: s,
                partial: None,
                ..
            },
        )
        | (
            MessageDataItem::BinarySize { section, .. },
            MessageDataItemName::BinarySize { section: s },
        ) => section == s,
        (
            MessageDataItem::BodyExt {
                section, origin, ..
            },
            MessageDataItemName::BodyExt {
                section: s,
                partial,
                ..
            },
        ) => same_section(section.as_ref(), s.as_ref()) && *origin == partial.map(|(o, _)| o),
        _ => false,
    }
}

/// Sections are equal when their field names differ only in case (servers
/// echo them upper case).
fn same_section(a: Option<&Section<'_>>, b: Option<&Section<'_>>) -> bool {
    let names_eq = |x: &Vec1<AString<'_>>, y: &Vec1<AString<'_>>| {
        x.as_ref().len() == y.as_ref().len()
            && x.as_ref()
                .iter()
                .zip(y.as_ref())
                .all(|(p, q)| p.as_ref().eq_ignore_ascii_case(q.as_ref()))
    };
    match (a, b) {
        (Some(Section::HeaderFields(p, x)), Some(Section::HeaderFields(q, y)))
        | (Some(Section::HeaderFieldsNot(p, x)), Some(Section::HeaderFieldsNot(q, y))) => {
            p == q && names_eq(x, y)
        }
        _ => a == b,
    }
}

/// Is the message remembered as undecryptable under the keys offered now for
/// `epoch`?
pub(in crate::imap) fn undecryptable_known(
    c: &CacheRef,
    msg: MessageKey,
    epoch: &str,
    keys: &(dyn Keys + Send + Sync),
) -> bool {
    c.cache
        .undecryptable(&c.mailbox, msg)
        .is_some_and(|why| why.epoch == epoch && why.identities == keys.identities(epoch).len())
}

/// Remembers that the message did not open. The stored message is in memory, so
/// every failure is the message's, except writing the output.
pub(in crate::imap) fn remember_undecryptable(
    cache: Option<&CacheRef>,
    msg: MessageKey,
    epoch: &str,
    keys: &(dyn Keys + Send + Sync),
    e: &envelope::EnvelopeError,
) {
    let Some(c) = cache else { return };
    if matches!(e, envelope::EnvelopeError::Output(_)) {
        return;
    }
    c.cache.put_undecryptable(
        &c.mailbox,
        msg,
        &Undecryptable {
            epoch: epoch.to_owned(),
            identities: keys.identities(epoch).len(),
            reason: e.reason().to_owned(),
        },
    );
}

/// The end of a FETCH one of whose items writ could not answer.
pub(super) fn incomplete(tag: Tag<'static>) -> Status<'static> {
    Status::Tagged(imap_next::imap_types::response::Tagged {
        tag,
        body: imap_next::imap_types::response::StatusBody {
            kind: StatusKind::No,
            code: None,
            text: imap_next::imap_types::core::Text::unvalidated(
                "writ could not answer every item asked for; see writ's log",
            ),
        },
    })
}

/// The end of a FETCH whose BINARY section did not decode, as Dovecot
/// ends it: `NO [UNKNOWN-CTE]` or `NO [PARSE]` with Dovecot's text.
pub(super) fn binary_refused(tag: Tag<'static>, refusal: Refusal) -> Status<'static> {
    use imap_next::imap_types::response::{Code, CodeOther, StatusBody, Tagged};
    let code = match refusal {
        Refusal::UnknownCte => Code::UnknownCte,
        Refusal::Invalid => Code::Other(CodeOther::unvalidated(refusal.code().as_bytes())),
    };
    let code = Some(code);
    Status::Tagged(Tagged {
        tag,
        body: StatusBody {
            kind: StatusKind::No,
            code,
            text: imap_next::imap_types::core::Text::unvalidated(refusal.text()),
        },
    })
}

/// Does `status` carry `[EXPUNGEISSUED]` (RFC 9051 §7.1: a message
/// asked for was expunged by another session)?
pub(super) fn is_expunge_issued(status: &Status<'_>) -> bool {
    let (Status::Tagged(Tagged { body, .. }) | Status::Untagged(body)) = status else {
        return false;
    };
    matches!(&body.code, Some(Code::Other(c)) if c.inner().eq_ignore_ascii_case(b"EXPUNGEISSUED"))
}

/// The probe's tagged OK turned into the one Dovecot ends a FETCH with
/// when it met a message already expunged: `OK [EXPUNGEISSUED] Some
/// messages were already expunged.` A `[HIGHESTMODSEQ n]` the probe's
/// OK carried goes before it as `* OK [HIGHESTMODSEQ n] Highest`, as
/// Dovecot sends it when its tagged reply has a code of its own. A
/// status other than OK, or one with another code, is kept.
pub(super) fn expunge_issued(probe: Status<'static>) -> (Status<'static>, Option<Vec<u8>>) {
    let Status::Tagged(Tagged { tag, body }) = &probe else {
        return (probe, None);
    };
    if body.kind != StatusKind::Ok {
        return (probe, None);
    }
    let highest = match &body.code {
        None => None,
        Some(Code::HighestModSeq(n)) => {
            Some(format!("* OK [HIGHESTMODSEQ {n}] Highest\r\n").into_bytes())
        }
        Some(_) => return (probe, None),
    };
    let reply = Status::Tagged(Tagged {
        tag: tag.clone(),
        body: StatusBody {
            kind: StatusKind::Ok,
            code: Some(Code::Other(CodeOther::unvalidated(&b"EXPUNGEISSUED"[..]))),
            text: imap_next::imap_types::core::Text::unvalidated(
                "Some messages were already expunged.",
            ),
        },
    });
    (reply, highest)
}

/// Message `seq` after message `gone` was expunged.
pub(super) fn renumbered(seq: NonZeroU32, gone: NonZeroU32) -> NonZeroU32 {
    if seq > gone {
        NonZeroU32::new(seq.get() - 1).unwrap_or(seq)
    } else {
        seq
    }
}

/// Is `item` a body section (or RFC822, RFC822.HEADER, RFC822.TEXT)?
pub(super) fn is_body_item(item: &MessageDataItem<'_>) -> bool {
    matches!(
        item,
        MessageDataItem::BodyExt { .. }
            | MessageDataItem::Binary { .. }
            | MessageDataItem::BinarySize { .. }
            | MessageDataItem::Rfc822(_)
            | MessageDataItem::Rfc822Header(_)
            | MessageDataItem::Rfc822Text(_)
    )
}

/// A body section the provider answered NIL (the message is gone).
pub(super) fn is_nil_section(item: &MessageDataItem<'_>) -> bool {
    matches!(item, MessageDataItem::BodyExt { data, .. } if data.0.is_none())
}

/// Is `item` one Dovecot writes before the others (a handler it
/// buffers): UID, FLAGS, INTERNALDATE, MODSEQ, RFC822.SIZE.
pub(super) fn is_buffered(item: &Item) -> bool {
    matches!(
        item,
        Item::Typed(
            MessageDataItem::Uid(_)
                | MessageDataItem::Flags(_)
                | MessageDataItem::InternalDate(_)
                | MessageDataItem::ModSeq(_)
                | MessageDataItem::Rfc822Size(_)
        )
    )
}

/// Does `name` ask for a body section (which may be asked for twice,
/// and is then answered twice, as Dovecot does)?
pub(super) fn is_section_name(name: &MessageDataItemName<'_>) -> bool {
    matches!(
        name,
        MessageDataItemName::BodyExt { .. }
            | MessageDataItemName::Binary { .. }
            | MessageDataItemName::BinarySize { .. }
    )
}

/// RFC 3501 §6.4.5: \Seen set by the fetch shows in FLAGS. Where Dovecot
/// puts it: in FLAGS if asked for, else after the items asked for (the
/// response's order then puts it last of the short ones, see `fetch`).
pub(super) fn show_seen(out: &mut Vec<Item>, probed: &[MessageDataItem<'static>]) {
    if let Some(Item::Typed(f)) = out
        .iter_mut()
        .find(|i| matches!(i, Item::Typed(MessageDataItem::Flags(_))))
    {
        *f = add_seen(f.clone(), true);
        return;
    }
    if let Some(f) = probed
        .iter()
        .find(|i| matches!(i, MessageDataItem::Flags(_)))
    {
        out.push(Item::Typed(add_seen(f.clone(), true)));
    }
}

/// A flag change another session made while the plan ran (an unsolicited
/// `FETCH (FLAGS ... MODSEQ ...)`, passed on to the client): `kept` (a
/// probed message's UID, FLAGS and wanted items) takes its FLAGS and
/// MODSEQ, so that the message's answer, sent after it, does not undo it.
/// True when something changed.
pub(super) fn take_changes(
    kept: &mut Vec<MessageDataItem<'static>>,
    changed: &[MessageDataItem<'static>],
) -> bool {
    let mut any = false;
    for item in changed {
        if !matches!(item, MessageDataItem::Flags(_) | MessageDataItem::ModSeq(_)) {
            continue;
        }
        let same =
            |k: &MessageDataItem<'_>| std::mem::discriminant(k) == std::mem::discriminant(item);
        match kept.iter_mut().find(|k| same(k)) {
            Some(k) => *k = item.clone(),
            None if matches!(item, MessageDataItem::Flags(_)) => kept.push(item.clone()),
            None => continue,
        }
        any = true;
    }
    any
}

/// An answer composed from copies of a probed message's items (on the
/// pool) made current: its FLAGS and MODSEQ as the message's `kept`
/// items hold them now. \Seen shown by the fetch itself stays.
pub(super) fn refresh(out: &mut [Item], kept: &[MessageDataItem<'static>]) {
    for item in out.iter_mut() {
        let Item::Typed(typed) = item else { continue };
        match (
            &*typed,
            kept.iter()
                .find(|k| std::mem::discriminant(*k) == std::mem::discriminant(&*typed)),
        ) {
            (MessageDataItem::Flags(old), Some(now @ MessageDataItem::Flags(_))) => {
                let shown_seen = old.contains(&FlagFetch::Flag(Flag::Seen));
                *typed = add_seen(now.clone(), shown_seen);
            }
            (MessageDataItem::ModSeq(_), Some(now @ MessageDataItem::ModSeq(_))) => {
                *typed = now.clone();
            }
            _ => {}
        }
    }
}

/// `FLAGS` with \Seen added when `seen`; any other item unchanged.
pub(super) fn add_seen(item: MessageDataItem<'static>, seen: bool) -> MessageDataItem<'static> {
    match item {
        MessageDataItem::Flags(mut f) if seen => {
            let s = FlagFetch::Flag(Flag::Seen);
            if !f.contains(&s) {
                // Where Dovecot writes it: after \Answered, \Flagged and
                // \Deleted, before \Draft, \Recent and keywords.
                let at = f
                    .iter()
                    .position(|x| {
                        !matches!(
                            x,
                            FlagFetch::Flag(Flag::Answered | Flag::Flagged | Flag::Deleted)
                        )
                    })
                    .unwrap_or(f.len());
                f.insert(at, s);
            }
            MessageDataItem::Flags(f)
        }
        other => other,
    }
}

/// Part 1 as much of it as a speculative command asks for (`limit`
/// octets): perhaps cut.
pub(super) fn part_one_cut(list: &[MessageDataItem<'_>], limit: u32) -> bool {
    list.iter().any(|i| match i {
        MessageDataItem::BodyExt {
            section: Some(Section::Part(p)),
            origin: Some(0),
            data,
        } if p.0.as_ref() == [NonZeroU32::MIN] => {
            data.0.as_ref().map_or(0, |d| d.as_ref().len()) >= limit as usize
        }
        _ => false,
    })
}

/// Is `item` one the probe leaves out, asked for in the plain phase for
/// the messages that are not answered from a summary: ENVELOPE, BODY and
/// BODYSTRUCTURE, which make the provider parse the stored message.
pub(super) fn deferred(item: &MessageDataItemName<'_>) -> bool {
    matches!(
        item,
        MessageDataItemName::Envelope
            | MessageDataItemName::Body
            | MessageDataItemName::BodyStructure
    )
}

/// Is `item` a top-level section of the whole stored header
/// (`BODY[HEADER]`, `BODY[HEADER.FIELDS.NOT (...)]`, `RFC822.HEADER`)?
/// The provider reads the message's file for it (named fields it answers
/// from its index), and for a sealed message writ answers it from the
/// summary: the probe leaves it out, and the plain phase asks for it for
/// plaintext messages only.
pub(super) fn whole_header(item: &MessageDataItemName<'_>) -> bool {
    matches!(
        item,
        MessageDataItemName::Rfc822Header
            | MessageDataItemName::BodyExt {
                section: Some(Section::Header(None) | Section::HeaderFieldsNot(None, _)),
                ..
            }
    )
}

/// Is `item` left out of the probe, asked for in the plain phase
/// ([`deferred`]; [`whole_header`] too when `header_later`)?
pub(super) fn after_probe(item: &MessageDataItemName<'_>, header_later: bool) -> bool {
    deferred(item) || (header_later && whole_header(item))
}

/// Is `item` the provider's answer to a [`deferred`] item?
pub(super) fn is_structure_item(item: &MessageDataItem<'_>) -> bool {
    matches!(
        item,
        MessageDataItem::Envelope(_) | MessageDataItem::Body(_) | MessageDataItem::BodyStructure(_)
    )
}

/// The items a FETCH asks for, as Dovecot reads them: each once (body
/// sections as often as named), a UID FETCH's UID first, MODSEQ added
/// by CHANGEDSINCE (RFC 7162 §3.1.4.1). Their order in each answer is
/// `fetch`'s.
pub(super) fn as_dovecot_parses(
    mut wanted: Vec<MessageDataItemName<'static>>,
    uid: bool,
    modifiers: &[FetchModifier],
) -> Vec<MessageDataItemName<'static>> {
    let mut named: Vec<MessageDataItemName<'static>> = Vec::new();
    wanted.retain(|n| {
        if is_section_name(n) || !named.contains(n) {
            named.push(n.clone());
            true
        } else {
            false
        }
    });
    if uid {
        // UID FETCH answers always carry the UID (RFC 3501 §6.4.8).
        wanted.retain(|n| *n != MessageDataItemName::Uid);
        wanted.insert(0, MessageDataItemName::Uid);
    }
    let changed_since = modifiers
        .iter()
        .any(|m| matches!(m, FetchModifier::ChangedSince(_)));
    if changed_since && !wanted.contains(&MessageDataItemName::ModSeq) {
        wanted.push(MessageDataItemName::ModSeq);
    }
    wanted
}
