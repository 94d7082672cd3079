//! Helpers for the sans-IO tests of the IMAP plans: commands and
//! responses from their wire form, a sealer with its key.
#![cfg(test)]

use std::num::NonZeroU32;

use imap_codec::decode::Decoder;
use imap_codec::encode::Encoder;
use imap_codec::{CommandCodec, ResponseCodec};
use imap_next::imap_types::command::Command;
use imap_next::imap_types::core::Vec1;
use imap_next::imap_types::fetch::MessageDataItem;
use imap_next::imap_types::response::Response;
use imap_next::imap_types::response::{Data, Status};

pub fn command(text: &str) -> Command<'static> {
    let (_, c) = CommandCodec::default()
        .decode_static(text.as_bytes())
        .expect("a valid command");
    c
}

pub fn wire(c: &Command<'_>) -> String {
    String::from_utf8_lossy(&CommandCodec::default().encode(c).dump()).into_owned()
}

pub fn response(bytes: &[u8]) -> Response<'static> {
    let (_, r) = ResponseCodec::default()
        .decode_static(bytes)
        .expect("a valid response");
    r
}

pub fn fetch_response(bytes: &[u8]) -> (NonZeroU32, Vec1<MessageDataItem<'static>>) {
    match response(bytes) {
        Response::Data(Data::Fetch { seq, items }) => (seq, items),
        other => panic!("not a FETCH: {other:?}"),
    }
}

pub fn status(text: &str) -> Status<'static> {
    match response(text.as_bytes()) {
        Response::Status(s) => s,
        other => panic!("not a status: {other:?}"),
    }
}

pub fn literal_item(name: &str, bytes: &[u8]) -> Vec<u8> {
    let mut v = format!("{name} {{{}}}\r\n", bytes.len()).into_bytes();
    v.extend_from_slice(bytes);
    v
}

pub fn keys() -> (Vec<age::x25519::Identity>, crate::envelope::Sealer) {
    let id = age::x25519::Identity::generate();
    let sealer = crate::envelope::Sealer::new("0123456789abcdef", vec![id.to_public()]);
    (vec![id], sealer)
}

pub const M: &[u8] = b"From: a@example.test\r\nSubject: secret\r\n\r\nbody text\r\n";

pub fn sealed(sealer: &crate::envelope::Sealer) -> Vec<u8> {
    let mut out = Vec::new();
    sealer.seal(M, &mut out).expect("seal");
    out
}

/// The marker fields of a stored message, as Dovecot answers
/// `BODY[HEADER.FIELDS (X-Writ Content-Type)]`: those fields, in the
/// order stored, and the blank line.
pub fn marker_of(stored: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in crate::envelope::header::fields(header_of(stored)) {
        if f.is("x-writ") || f.is("content-type") {
            out.extend_from_slice(f.raw);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The name Dovecot echoes for the probe's marker fields.
pub const MARKER: &str = "BODY[HEADER.FIELDS (X-WRIT CONTENT-TYPE)]";

pub fn header_of(message: &[u8]) -> &[u8] {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .expect("a header");
    &message[..end]
}

/// The provider's answer to the sealed phase's FETCH of message `seq`
/// (UID `uid`): its stored header (`header`: BODY[HEADER] included), part
/// 1's MIME header and part 1, cut from `stored` by its own MIME
/// structure, as the provider serves them.
pub fn part_one_answer(seq: u32, uid: u32, stored: &[u8], header: bool) -> Vec<u8> {
    let structure = crate::envelope::scan::scan(stored, Default::default());
    let p = &structure.root.parts[0];
    let slice = |off: u64, len: u64| &stored[off as usize..(off + len) as usize];
    let mut r = format!("* {seq} FETCH (UID {uid} ").into_bytes();
    if header {
        r.extend(literal_item("BODY[HEADER]", header_of(stored)));
        r.push(b' ');
    }
    r.extend(literal_item(
        "BODY[1.MIME]",
        slice(p.header_offset, p.header_size),
    ));
    r.push(b' ');
    r.extend(literal_item("BODY[1]", slice(p.body_offset, p.body_size)));
    r.extend_from_slice(b")\r\n");
    r
}
