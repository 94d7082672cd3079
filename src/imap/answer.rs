//! FETCH items of a sealed message, answered from what writ opened: the
//! summary alone for listing items (size, envelope, structure, top-level
//! header fields), the whole opened message for body sections.
//!
//! The message a client sees is the *opened* one: the provider's fields
//! above the marker, then M. Its summary is M's, shifted by that prefix
//! ([`Summary::with_prefix`]).

use std::num::NonZeroU32;

use imap_codec::ResponseCodec;
use imap_codec::decode::Decoder;
use imap_next::imap_types::core::{AString, IString, Literal, NString, Vec1};
use imap_next::imap_types::fetch::{MessageDataItem, MessageDataItemName, Section};
use imap_next::imap_types::response::{Data, Response};

use super::section::{self, SectionBytes};
use crate::envelope::Summary;
use crate::envelope::view;

/// What answering an item needs beyond the provider's own data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// The provider's value is the answer (UID, FLAGS, INTERNALDATE, MODSEQ).
    Provider,
    /// The summary (part 1) is enough.
    Summary,
    /// The whole opened message.
    Payload,
}

/// What `item` needs for a sealed message whose summary is `summary` (if
/// already known: a summary without the complete header sends header
/// items to the payload).
pub fn need(item: &MessageDataItemName<'_>, summary: Option<&Summary>) -> Need {
    let header_complete =
        summary.is_none_or(|s| s.root.header.is_some() && !s.root.header_truncated);
    match item {
        MessageDataItemName::Uid
        | MessageDataItemName::Flags
        | MessageDataItemName::InternalDate => Need::Provider,
        #[allow(unreachable_patterns)]
        MessageDataItemName::ModSeq => Need::Provider,
        MessageDataItemName::Rfc822Size
        | MessageDataItemName::Body
        | MessageDataItemName::BodyStructure => Need::Summary,
        MessageDataItemName::Envelope | MessageDataItemName::Rfc822Header => {
            if header_complete {
                Need::Summary
            } else {
                Need::Payload
            }
        }
        MessageDataItemName::BodyExt { section, .. } => match section {
            Some(Section::Header(None))
            | Some(Section::HeaderFields(None, _))
            | Some(Section::HeaderFieldsNot(None, _))
                if header_complete =>
            {
                Need::Summary
            }
            _ => Need::Payload,
        },
        _ => Need::Payload,
    }
}

/// Is `item` one that only the provider can answer?
pub fn from_provider(item: &MessageDataItemName<'_>) -> bool {
    need(item, None) == Need::Provider
}

/// Is `item` a body section that would set \Seen (not PEEK)?
pub fn sets_seen(item: &MessageDataItemName<'_>) -> bool {
    matches!(
        item,
        MessageDataItemName::BodyExt { peek: false, .. }
            | MessageDataItemName::Rfc822
            | MessageDataItemName::Rfc822Text
    )
}

/// Section data as an IMAP literal, always (as Dovecot sends it, even
/// when empty: clients treat both alike, and this keeps writ's answers
/// byte-identical to the provider's for plaintext).
fn nstring(bytes: Vec<u8>) -> NString<'static> {
    // Sections never carry NUL (section.rs makes them 0x80), so the
    // literal is valid; unvalidated only skips a second scan.
    NString(Some(IString::Literal(Literal::unvalidated(bytes))))
}

/// The section as the response names it: field names upper case, as
/// Dovecot echoes them.
pub(super) fn echoed(section: &Option<Section<'static>>) -> Option<Section<'static>> {
    let upper = |names: &Vec1<AString<'static>>| -> Vec1<AString<'static>> {
        let list: Vec<AString<'static>> = names
            .as_ref()
            .iter()
            .map(|n| {
                let up = String::from_utf8_lossy(n.as_ref()).to_ascii_uppercase();
                AString::try_from(up).unwrap_or_else(|_| n.clone())
            })
            .collect();
        Vec1::try_from(list).unwrap_or_else(|_| names.clone())
    };
    match section {
        Some(Section::HeaderFields(part, names)) => {
            Some(Section::HeaderFields(part.clone(), upper(names)))
        }
        Some(Section::HeaderFieldsNot(part, names)) => {
            Some(Section::HeaderFieldsNot(part.clone(), upper(names)))
        }
        other => other.clone(),
    }
}

/// ENVELOPE, BODY and BODYSTRUCTURE as typed values: view.rs writes them in
/// IMAP syntax (and is tested against Dovecot); imap-codec reads them back.
/// Bytes, not text: header values may hold octets that are not UTF-8,
/// which must reach the client as the provider would send them (a lossy
/// conversion would change the literals' lengths and break the parse).
fn decoded(item: &str, value: &[u8]) -> Option<MessageDataItem<'static>> {
    let mut line = format!("* 1 FETCH ({item} ").into_bytes();
    line.extend_from_slice(value);
    line.extend_from_slice(b")\r\n");
    let decoded = ResponseCodec::default().decode_static(&line);
    let Ok((_, response)) = decoded else {
        tracing::warn!(item, "writ's own {item} answer did not parse; left out");
        return None;
    };
    match response {
        Response::Data(Data::Fetch { items, .. }) => items.into_iter().next(),
        _ => None,
    }
}

/// The bytes of a section of the opened message `m` (summary `summary`,
/// already shifted by the prefix), with the partial applied.
fn section_of(
    m: &[u8],
    summary: &Summary,
    section: Option<&Section<'_>>,
    partial: Option<(u32, NonZeroU32)>,
) -> Vec<u8> {
    let bytes = section::section_bytes(m, summary, section);
    let bytes = match partial {
        Some((origin, length)) => section::partial(bytes, origin, length),
        None => bytes,
    };
    bytes.into_vec(m)
}

/// From the summary alone, when `m` is `None`; `None` when the item needs
/// what was not given.
pub fn answer(
    item: &MessageDataItemName<'static>,
    summary: &Summary,
    m: Option<&[u8]>,
) -> Option<MessageDataItem<'static>> {
    let header_only = |section: Option<&Section<'_>>| -> Option<Vec<u8>> {
        match m {
            Some(m) => Some(section_of(m, summary, section, None)),
            None => section::header_section(summary, section),
        }
    };
    match item {
        MessageDataItemName::Rfc822Size => Some(MessageDataItem::Rfc822Size(
            u32::try_from(view::rfc822_size(summary)).unwrap_or(u32::MAX),
        )),
        MessageDataItemName::Envelope => {
            let header = match m {
                Some(m) => {
                    let end = usize::try_from(summary.root.header_size).unwrap_or(m.len());
                    m.get(..end.min(m.len()))?.to_vec()
                }
                None => summary.root.header.clone()?,
            };
            decoded("ENVELOPE", &view::envelope_bytes(&header))
        }
        MessageDataItemName::BodyStructure => decoded(
            "BODYSTRUCTURE",
            &view::body_structure_bytes(&summary.root, true),
        ),
        MessageDataItemName::Body => {
            decoded("BODY", &view::body_structure_bytes(&summary.root, false))
        }
        MessageDataItemName::Rfc822Header => {
            let header = header_only(Some(&Section::Header(None)))?;
            Some(MessageDataItem::Rfc822Header(nstring(header)))
        }
        MessageDataItemName::Rfc822 => Some(MessageDataItem::Rfc822(nstring(section_of(
            m?, summary, None, None,
        )))),
        MessageDataItemName::Rfc822Text => Some(MessageDataItem::Rfc822Text(nstring(section_of(
            m?,
            summary,
            Some(&Section::Text(None)),
            None,
        )))),
        MessageDataItemName::BodyExt {
            section, partial, ..
        } => {
            let data = match (m, partial) {
                (Some(m), _) => section_of(m, summary, section.as_ref(), *partial),
                (None, None) => section::header_section(summary, section.as_ref())?,
                (None, Some((origin, length))) => {
                    let whole = section::header_section(summary, section.as_ref())?;
                    section::partial(SectionBytes::Owned(whole), *origin, *length).into_vec(&[])
                }
            };
            Some(MessageDataItem::BodyExt {
                section: echoed(section),
                origin: partial.map(|(o, _)| o),
                data: nstring(data),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::scan::{Limits, scan};

    #[test]
    fn header_octets_that_are_not_utf8_still_give_an_envelope() {
        let m = b"From: inv@example.com\r\nSubject: Invalid \xff\xfe UTF-8\r\nDate: Sun, 14 Jan 2024 10:00:00 +0000\r\n\r\nx\r\n";
        let summary = scan(m, Limits::default());
        for opened in [None, Some(&m[..])] {
            let item = answer(&MessageDataItemName::Envelope, &summary, opened);
            let Some(MessageDataItem::Envelope(env)) = item else {
                panic!("no ENVELOPE: {item:?}")
            };
            let subject = env.subject.0.as_ref().map(|s| s.as_ref().to_vec());
            assert_eq!(subject.as_deref(), Some(&b"Invalid \xff\xfe UTF-8"[..]));
        }
        assert!(matches!(
            answer(&MessageDataItemName::BodyStructure, &summary, None),
            Some(MessageDataItem::BodyStructure(_))
        ));
    }
}
