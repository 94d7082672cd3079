//! Is a stored message sealed, and under which epoch? From its header alone.

use super::header;
use super::{EnvelopeError, FORMAT_VERSION, SEALED_PROTOCOL};

/// What the header of a sealed message says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// Format version from `X-Writ: v=...`.
    pub version: u32,
    /// The epoch id from `key=...`.
    pub epoch: String,
}

impl Detected {
    /// Does this writ read the marker's format version? Anything but
    /// [`FORMAT_VERSION`] is refused as unsupported: the whole message is
    /// then undecryptable (`docs/FORMAT.md` section 15), its summary
    /// included.
    pub fn supported(&self) -> Result<(), EnvelopeError> {
        if self.version == FORMAT_VERSION {
            Ok(())
        } else {
            Err(EnvelopeError::UnsupportedVersion(self.version.to_string()))
        }
    }
}

/// Parses `v=1; key=0123456789abcdef` (whitespace and order tolerated).
pub fn parse_marker(value: &[u8]) -> Option<Detected> {
    let text = std::str::from_utf8(value).ok()?;
    let mut version = None;
    let mut epoch = None;
    for item in text.split(';') {
        let Some((k, v)) = item.split_once('=') else {
            continue;
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "v" => version = v.trim().parse::<u32>().ok(),
            "key" => {
                let v = v.trim();
                if v.len() == 16 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
                    epoch = Some(v.to_ascii_lowercase());
                }
            }
            _ => {}
        }
    }
    Some(Detected {
        version: version?,
        epoch: epoch?,
    })
}

/// Detects a sealed message from its header block (the stored message's
/// header, possibly with provider fields above the marker). A message is
/// sealed when it carries a well-formed `X-Writ` marker *and* its
/// Content-Type is multipart/encrypted with writ's protocol: a stray
/// marker alone never makes writ pass plaintext through unsealed.
pub fn detect(header_block: &[u8]) -> Option<Detected> {
    let fields = header::fields(header_block);
    let marker = fields.iter().find(|f| f.is("x-writ"))?;
    let detected = parse_marker(&marker.value())?;
    let ct = fields.iter().find(|f| f.is("content-type"))?;
    let ct = header::parse_params(&ct.value());
    let sealed_type = ct.value.eq_ignore_ascii_case("multipart/encrypted")
        && ct
            .param("protocol")
            .is_some_and(|p| p.eq_ignore_ascii_case(SEALED_PROTOCOL))
        && ct.param("boundary").is_some();
    sealed_type.then_some(detected)
}

/// Fields a provider puts above the marker that opening keeps: trace and
/// verdict fields (and `X-` fields, which providers use for theirs).
const PREFIX_FIELDS: &[&str] = &[
    "received",
    "return-path",
    "delivered-to",
    "x-original-to",
    "envelope-to",
    "authentication-results",
    "received-spf",
    "dkim-signature",
];
/// Name prefixes of fields kept above the marker (see [`PREFIX_FIELDS`]).
const PREFIX_FIELD_PREFIXES: &[&str] = &["arc-", "x-"];

/// Does opening keep this field from above the marker? Only trace and
/// verdict fields: the provider is not trusted, and anything else there
/// (a Reply-To, a From, a Content-Type that would come before M's own)
/// would change what the client reads as the sealed message, whose body
/// it would be shown with (its replies sent where the provider said).
pub(crate) fn kept_above_marker(field: &header::RawField<'_>) -> bool {
    field.name().is_some_and(|name| {
        PREFIX_FIELDS
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f.as_bytes()))
            || PREFIX_FIELD_PREFIXES
                .iter()
                .any(|p| name.len() > p.len() && name[..p.len()].eq_ignore_ascii_case(p.as_bytes()))
    })
}

/// The trace and verdict fields a provider put above the marker, verbatim
/// ([`kept_above_marker`]): what opening puts before M (empty when the
/// marker is the first field).
pub fn stored_prefix(header_block: &[u8]) -> Vec<u8> {
    let fields = header::fields(header_block);
    fields
        .iter()
        .take_while(|f| !f.is("x-writ"))
        .filter(|f| kept_above_marker(f))
        .flat_map(|f| f.raw.iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_alone_is_not_enough() {
        let h = b"X-Writ: v=1; key=0123456789abcdef\r\nSubject: plain\r\n\r\n";
        assert_eq!(detect(h), None);
    }

    #[test]
    fn refolded_header_is_detected() {
        let h = b"Received: x\r\nX-Writ: v=1;\r\n key=0123456789ABCDEF\r\nContent-Type: multipart/encrypted;\r\n\tprotocol=\"application/vnd.writ.sealed\";\r\n boundary=\"b\"\r\n\r\n";
        let d = detect(h).unwrap();
        assert_eq!(d.epoch, "0123456789abcdef");
        assert_eq!(d.version, 1);
    }

    #[test]
    fn malformed_markers() {
        for v in [
            &b"v=1"[..],
            b"key=0123",
            b"v=x; key=0123456789abcdef",
            b"\xff\xfe",
            b"",
        ] {
            assert_eq!(parse_marker(v), None);
        }
    }
}
