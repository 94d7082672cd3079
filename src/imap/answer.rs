//! FETCH items of a sealed message, answered from what writ opened: the
//! summary alone for listing items (size, envelope, structure, top-level
//! header fields), the whole opened message for body sections.
//!
//! The message a client sees is the *opened* one: the provider's fields
//! above the marker, then M. Its summary is M's, shifted by that prefix
//! ([`Summary::with_prefix`]).
//!
//! ENVELOPE, BODY and BODYSTRUCTURE are [`Item::Written`]: the bytes
//! [`view`] writes (Dovecot's shape, media types in the case M gives them),
//! never parsed back into imap-types, so nothing is lost or re-cased on
//! the way and no nesting is refused. A response carrying one is written
//! whole by [`response`] and goes to the client raw, in its place among
//! the typed ones (`session::raw`). The writer walks the summary's tree
//! without recursion; its depth is the summary's cap
//! ([`MAX_DEPTH`](crate::envelope::summary::MAX_DEPTH), 100 entities: a
//! summary deeper than that does not open, and the message is shown as
//! stored).

use std::num::NonZeroU32;

use std::sync::Arc;

use imap_codec::ResponseCodec;
use imap_codec::encode::Encoder;
use imap_next::imap_types::core::{AString, IString, Literal, NString, Vec1};
use imap_next::imap_types::fetch::{MessageDataItem, MessageDataItemName, Section};
use imap_next::imap_types::response::{Data, Response};

mod provider_written;
pub use provider_written::ProviderWritten;

use super::section::binary::{Memo, Refusal};
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
            | MessageDataItemName::Binary { peek: false, .. }
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

/// One item of a FETCH response writ answers.
// A typed item is as large here as everywhere imap-types passes it by
// value; a response holds a handful.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A value imap-codec writes: sizes, body sections, and the
    /// provider's own items (UID, FLAGS, INTERNALDATE, MODSEQ).
    Typed(MessageDataItem<'static>),
    /// ENVELOPE, BODY or BODYSTRUCTURE as writ writes it ([`view`], shaped
    /// like Dovecot's and tested against it), or BINARY / BINARY.SIZE
    /// ([`binary`]: a literal8 or literal with its data): the item's name,
    /// a space and its value, octet for octet what goes to the client. Never parsed
    /// back into imap-types: imap-codec would change the media types' case
    /// and refuse structures nested deeper than its recursion limit.
    Written(Arc<[u8]>),
}

impl From<MessageDataItem<'static>> for Item {
    fn from(item: MessageDataItem<'static>) -> Item {
        Item::Typed(item)
    }
}

/// The FETCH response `* seq FETCH (items)` with its CRLF, the items in
/// the order given: typed ones as imap-codec writes them (literals
/// included), written ones as they are.
pub fn response(seq: NonZeroU32, items: Vec<Item>) -> Vec<u8> {
    let codec = ResponseCodec::default();
    let mut out = format!("* {seq} FETCH (").into_bytes();
    for (k, item) in items.into_iter().enumerate() {
        if k > 0 {
            out.push(b' ');
        }
        match item {
            Item::Written(bytes) => out.extend_from_slice(&bytes),
            Item::Typed(item) => {
                // imap-codec writes an item only inside a response: one
                // with this item alone, then its frame taken off.
                let one = Response::Data(Data::Fetch {
                    seq: NonZeroU32::MIN,
                    items: Vec1::from(item),
                });
                let wire = codec.encode(&one).dump();
                let inner = wire
                    .strip_prefix(ONE_ITEM_START)
                    .and_then(|w| w.strip_suffix(ONE_ITEM_END));
                debug_assert!(inner.is_some(), "imap-codec framed a FETCH otherwise");
                out.extend_from_slice(inner.unwrap_or_default());
            }
        }
    }
    out.extend_from_slice(ONE_ITEM_END);
    out
}

/// How imap-codec frames the one item of message 1's FETCH response.
const ONE_ITEM_START: &[u8] = b"* 1 FETCH (";
const ONE_ITEM_END: &[u8] = b")\r\n";

/// `name`, a space, then `value`.
fn written(name: &str, value: &[u8]) -> Item {
    let mut out = Vec::with_capacity(name.len() + 1 + value.len());
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(value);
    Item::Written(out.into())
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

/// `BINARY[...]` or `BINARY.SIZE[...]` of the opened message `m`, as
/// Dovecot writes them ([`section::binary`]): `None` for other items, the
/// refusal that ends the FETCH `NO [code]` when the section does not
/// decode. Written by writ: imap-types has no `<origin>` for BINARY.
/// `memo` keeps the message's decoded sections for the FETCH's other
/// items.
pub fn binary(
    item: &MessageDataItemName<'_>,
    summary: &Summary,
    m: &[u8],
    memo: &mut Memo,
) -> Option<Result<Item, Refusal>> {
    match item {
        MessageDataItemName::Binary {
            section, partial, ..
        } => Some(
            memo.section(m, summary, section)
                .map(|decoded| binary_item(section, *partial, &decoded.bytes, decoded.literal8)),
        ),
        MessageDataItemName::BinarySize { section } => {
            Some(memo.size(m, summary, section).map(|size| {
                let text = format!("BINARY.SIZE[{}] {size}", part_number(section));
                Item::Written(text.into_bytes().into())
            }))
        }
        _ => None,
    }
}

/// `1.2.3`, the part number of a BINARY section.
fn part_number(section: &[NonZeroU32]) -> String {
    let parts: Vec<String> = section.iter().map(|n| n.to_string()).collect();
    parts.join(".")
}

/// `BINARY[section]` (with `<origin>` for a partial) whose whole decoded
/// section is `all`, as Dovecot writes it: a literal8 when the whole is
/// one (`literal8`), else a literal; a partial takes its form from the
/// whole.
pub fn binary_item(
    section: &[NonZeroU32],
    partial: Option<(u32, NonZeroU32)>,
    all: &[u8],
    literal8: bool,
) -> Item {
    let mut name = format!("BINARY[{}]", part_number(section));
    let bytes = match partial {
        Some((origin, length)) => {
            name.push_str(&format!("<{origin}>"));
            match section::partial(SectionBytes::InM(0..all.len()), origin, length) {
                SectionBytes::InM(r) => all.get(r).unwrap_or_default(),
                SectionBytes::Owned(_) => &[],
            }
        }
        None => all,
    };
    let tilde = if literal8 { "~" } else { "" };
    let mut out = format!("{name} {tilde}{{{}}}\r\n", bytes.len()).into_bytes();
    out.extend_from_slice(bytes);
    Item::Written(out.into())
}

/// From the summary alone, when `m` is `None`; `None` when the item needs
/// what was not given.
pub fn answer(
    item: &MessageDataItemName<'static>,
    summary: &Summary,
    m: Option<&[u8]>,
) -> Option<Item> {
    let header_only = |section: Option<&Section<'_>>| -> Option<Vec<u8>> {
        match m {
            Some(m) => Some(section_of(m, summary, section, None)),
            None => section::header_section(summary, section),
        }
    };
    let typed =
        match item {
            MessageDataItemName::Rfc822Size => Some(MessageDataItem::Rfc822Size(
                u32::try_from(view::rfc822_size(summary)).unwrap_or(u32::MAX),
            )),
            MessageDataItemName::Envelope => {
                let header: &[u8] = match m {
                    Some(m) => {
                        let end = usize::try_from(summary.root.header_size).unwrap_or(m.len());
                        m.get(..end.min(m.len()))?
                    }
                    None => summary.root.header.as_deref()?,
                };
                return Some(written("ENVELOPE", &view::envelope_bytes(header)));
            }
            MessageDataItemName::BodyStructure => {
                let value = view::body_structure_bytes(&summary.root, true);
                return Some(written("BODYSTRUCTURE", &value));
            }
            MessageDataItemName::Body => {
                let value = view::body_structure_bytes(&summary.root, false);
                return Some(written("BODY", &value));
            }
            MessageDataItemName::Rfc822Header => {
                let header = header_only(Some(&Section::Header(None)))?;
                Some(MessageDataItem::Rfc822Header(nstring(header)))
            }
            MessageDataItemName::Rfc822 => Some(MessageDataItem::Rfc822(nstring(section_of(
                m?, summary, None, None,
            )))),
            MessageDataItemName::Rfc822Text => Some(MessageDataItem::Rfc822Text(nstring(
                section_of(m?, summary, Some(&Section::Text(None)), None),
            ))),
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
            MessageDataItemName::Binary { .. } | MessageDataItemName::BinarySize { .. } => {
                return binary(item, summary, m?, &mut Memo::default())?.ok();
            }
            _ => None,
        };
    typed.map(Item::Typed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::scan::{Limits, scan};

    fn written_of(
        item: MessageDataItemName<'static>,
        summary: &Summary,
        m: Option<&[u8]>,
    ) -> Vec<u8> {
        match answer(&item, summary, m) {
            Some(Item::Written(bytes)) => bytes.to_vec(),
            other => panic!("not written by writ: {other:?}"),
        }
    }

    #[test]
    fn header_octets_that_are_not_utf8_still_give_an_envelope() {
        let m = b"From: inv@example.com\r\nSubject: Invalid \xff\xfe UTF-8\r\nDate: Sun, 14 Jan 2024 10:00:00 +0000\r\n\r\nx\r\n";
        let summary = scan(m, Limits::default());
        for opened in [None, Some(&m[..])] {
            let env = written_of(MessageDataItemName::Envelope, &summary, opened);
            // The octets as they are, in a literal (as Dovecot sends them).
            let subject = b"{16}\r\nInvalid \xff\xfe UTF-8 ";
            assert!(
                env.starts_with(b"ENVELOPE (\"Sun, 14 Jan 2024 10:00:00 +0000\" ")
                    && env.windows(subject.len()).any(|w| w == subject),
                "{}",
                String::from_utf8_lossy(&env)
            );
        }
        let bs = written_of(MessageDataItemName::BodyStructure, &summary, None);
        assert!(bs.starts_with(b"BODYSTRUCTURE ("));
    }

    #[test]
    fn media_types_keep_the_case_writ_wrote_them_in() {
        let m = b"From: a@example.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>hi</p>\r\n--x\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--x--\r\n";
        let summary = scan(m, Limits::default());
        let expected = view::body_structure_bytes(&summary.root, true);
        let bs = written_of(MessageDataItemName::BodyStructure, &summary, None);
        // Exactly view's bytes (tested against Dovecot), not imap-codec's
        // re-encoding, which wrote "TEXT" and "MESSAGE" "RFC822".
        assert_eq!(bs, [&b"BODYSTRUCTURE "[..], &expected].concat());
        let text = String::from_utf8_lossy(&bs);
        assert!(text.contains("(\"text\" \"html\" "), "{text}");
        assert!(text.contains("(\"message\" \"rfc822\" "), "{text}");
        let body = written_of(MessageDataItemName::Body, &summary, None);
        assert!(body.starts_with(b"BODY ((\"text\" \"html\" "));
    }

    #[test]
    fn a_response_keeps_the_items_in_order_with_their_literals() {
        let m = b"Subject: s\r\nContent-Type: Text/Plain\r\n\r\nline\r\n";
        let summary = scan(m, Limits::default());
        let uid = NonZeroU32::new(42).unwrap();
        let items = vec![
            Item::Typed(MessageDataItem::Uid(uid)),
            answer(&MessageDataItemName::BodyStructure, &summary, Some(m)).unwrap(),
            answer(&MessageDataItemName::Rfc822Size, &summary, None).unwrap(),
            answer(
                &MessageDataItemName::BodyExt {
                    section: None,
                    partial: None,
                    peek: true,
                },
                &summary,
                Some(m),
            )
            .unwrap(),
        ];
        let wire = response(NonZeroU32::new(9).unwrap(), items);
        let mut expected = b"* 9 FETCH (UID 42 BODYSTRUCTURE ".to_vec();
        expected.extend(view::body_structure_bytes(&summary.root, true));
        expected.extend(format!(" RFC822.SIZE {} BODY[] {{{}}}\r\n", m.len(), m.len()).as_bytes());
        expected.extend_from_slice(m);
        expected.extend_from_slice(b")\r\n");
        assert_eq!(
            String::from_utf8_lossy(&wire),
            String::from_utf8_lossy(&expected)
        );
        assert_eq!(wire, expected);
    }
}
