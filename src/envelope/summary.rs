//! The summary: what the IMAP proxy needs to list a sealed message without
//! downloading its payload. It travels age-encrypted in part 1 as JSON;
//! `docs/FORMAT.md` is its normative schema.

use serde::{Deserialize, Serialize};

/// Summary format version. Readers refuse summaries with a higher major
/// version; unknown fields are ignored (forward compatible additions).
pub const SUMMARY_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "SummaryJson", try_from = "SummaryJson")]
pub struct Summary {
    /// Always [`SUMMARY_VERSION`] for format v1.
    pub version: u32,
    /// Octets of the original message M.
    pub size: u64,
    /// LF octets in M that are not preceded by CR. IMAP servers count each as
    /// two octets (CRLF) in RFC822.SIZE; `size + bare_lf` is that figure.
    pub bare_lf: u64,
    /// The MIME structure of M, rooted at M itself.
    pub root: Part,
}

/// One MIME entity of M: the message itself, a body part, or a message
/// embedded in a message/rfc822 part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Part {
    /// Media type as written; `text` when the entity has no usable
    /// Content-Type (`message` inside multipart/digest).
    #[serde(rename = "type")]
    pub media_type: String,
    /// Media subtype as written.
    pub subtype: String,
    /// Was there a Content-Type field that parsed? If not, type and subtype
    /// are the RFC 2045/2046 defaults.
    pub content_type_present: bool,
    /// The unfolded value of the entity's first Content-Type field (at most
    /// its first 1024 octets) when the field is there but does not parse
    /// (`content_type_present` is false); `None` otherwise. IMAP servers
    /// show such a type as written, or empty, where the summary has the
    /// default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type_value: Option<String>,
    /// Content-Type parameters in order: names as written, values unquoted.
    pub params: Vec<(String, String)>,
    /// Content-ID, unfolded, as written.
    pub id: Option<String>,
    /// Content-Description, unfolded, as written (encoded-words undecoded).
    pub description: Option<String>,
    /// Content-Transfer-Encoding as written, trimmed.
    pub encoding: Option<String>,
    /// Content-MD5 as written.
    pub md5: Option<String>,
    /// Content-Disposition: disposition type and parameters.
    pub disposition: Option<Disposition>,
    /// Content-Language tags.
    pub language: Option<Vec<String>>,
    /// Content-Location as written.
    pub location: Option<String>,
    /// Octet offset in M where this entity's header starts.
    pub header_offset: u64,
    /// Octets of the header including the blank line that ends it.
    pub header_size: u64,
    /// Octet offset in M where the body starts.
    pub body_offset: u64,
    /// Octets of the body (for a part inside a multipart, excluding the
    /// line break that belongs to the next boundary, per RFC 2046).
    pub body_size: u64,
    /// Lines in the body: LF count, plus one if the body does not end with LF
    /// and is not empty.
    pub body_lines: u64,
    /// LFs in the body not preceded by CR.
    pub body_bare_lf: u64,
    /// Raw header block (base64), for the message itself and for messages
    /// embedded in message/rfc822 parts, so ENVELOPE and BODY[HEADER] can
    /// be answered from the summary. Absent for other parts and when the
    /// header exceeded the sealer's cap (`header_truncated`).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "b64_opt")]
    pub header: Option<Vec<u8>>,
    /// The header was longer than the sealer's cap: only the payload holds it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub header_truncated: bool,
    /// The scanner stopped descending here (depth or part-count cap): the
    /// body was treated as opaque content.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub opaque: bool,
    /// Octets (1: LF, 2: CRLF) of the line break right after the body that
    /// IMAP servers (Dovecot) count in this entity's body although RFC 2046
    /// gives it to the delimiter line that follows; 0 otherwise. Set on an
    /// entity ended by a delimiter line when its last line is a delimiter
    /// line of its own or of a multipart inside it (`--inner--` right
    /// before `--outer`), or when a header inside it runs up to the
    /// delimiter line (a header cut short, or ended by an empty line right
    /// before the delimiter).
    /// Absent in summaries written before it existed (`docs/FORMAT.md`
    /// 12.4 says what readers do then).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub imap_body_eol: u64,
    /// Children: body parts of a multipart, or the one embedded message of
    /// a message/rfc822 part. In JSON the tree is a flat pre-order list
    /// with parent indexes (see [`SummaryJson`]), so that no reader needs
    /// recursion as deep as the message's nesting.
    #[serde(skip)]
    pub parts: Vec<Part>,
    /// Index of the parent entity in the JSON `parts` list (`null` for the
    /// message itself). Only meaningful while (de)serializing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<usize>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Disposition {
    /// Disposition type as written (`inline`, `attachment`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    pub params: Vec<(String, String)>,
}

impl Summary {
    /// The summary of `prefix` followed by M (what opening a stored message
    /// yields when the provider put `prefix` above the marker): the prefix
    /// joins the message's header and every offset moves by its length.
    pub fn with_prefix(&self, prefix: &[u8]) -> Summary {
        let mut out = self.clone();
        if prefix.is_empty() {
            return out;
        }
        let shift = prefix.len() as u64;
        out.size += shift;
        let bare = prefix
            .iter()
            .enumerate()
            .filter(|&(i, &b)| b == b'\n' && (i == 0 || prefix[i - 1] != b'\r'))
            .count() as u64;
        out.bare_lf += bare;
        out.root.header_size += shift;
        out.root.body_offset += shift;
        if let Some(h) = &mut out.root.header {
            let mut joined = prefix.to_vec();
            joined.extend_from_slice(h);
            *h = joined;
        }
        // Iteratively: nesting is as deep as the message's.
        let mut stack: Vec<&mut Part> = out.root.parts.iter_mut().collect();
        while let Some(part) = stack.pop() {
            part.header_offset += shift;
            part.body_offset += shift;
            stack.extend(part.parts.iter_mut());
        }
        out
    }
}

impl Part {
    pub fn is_multipart(&self) -> bool {
        self.media_type.eq_ignore_ascii_case("multipart")
    }

    pub fn is_message(&self) -> bool {
        self.media_type.eq_ignore_ascii_case("message")
            && (self.subtype.eq_ignore_ascii_case("rfc822")
                || self.subtype.eq_ignore_ascii_case("global"))
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The part at an IMAP section path (`[1, 2]` is section `1.2`). Numbers
    /// count from 1; a message/rfc822 part's numbers address the parts of the
    /// embedded message, as RFC 3501 says.
    pub fn section(&self, path: &[u32]) -> Option<&Part> {
        let mut part = self;
        for &n in path {
            let idx = usize::try_from(n).ok()?.checked_sub(1)?;
            // Section numbers of a message/rfc822 part address the
            // embedded message's parts.
            if part.is_message() {
                part = part.parts.first()?;
            }
            if part.is_multipart() {
                part = part.parts.get(idx)?;
            } else if idx == 0 {
                // A non-multipart has exactly one part, itself.
            } else {
                return None;
            }
        }
        Some(part)
    }
}

/// The JSON shape of a [`Summary`]: entities in pre-order, each naming its
/// parent's index. A parent always precedes its children.
#[derive(Serialize, Deserialize)]
struct SummaryJson {
    version: u32,
    size: u64,
    bare_lf: u64,
    parts: Vec<Part>,
}

impl From<Summary> for SummaryJson {
    fn from(s: Summary) -> SummaryJson {
        let mut parts = Vec::new();
        // Iterative pre-order walk: (node, parent index).
        let mut stack = vec![(s.root, None)];
        while let Some((mut part, parent)) = stack.pop() {
            let index = parts.len();
            let children = std::mem::take(&mut part.parts);
            part.parent = parent;
            parts.push(part);
            for child in children.into_iter().rev() {
                stack.push((child, Some(index)));
            }
        }
        SummaryJson {
            version: s.version,
            size: s.size,
            bare_lf: s.bare_lf,
            parts,
        }
    }
}

impl TryFrom<SummaryJson> for Summary {
    type Error = String;

    fn try_from(j: SummaryJson) -> Result<Summary, String> {
        let mut nodes: Vec<Option<Part>> = j.parts.into_iter().map(Some).collect();
        if nodes.is_empty() {
            return Err("summary has no parts".into());
        }
        // Children have higher indexes than their parent: attach from the
        // end, so each node is complete when it is moved into its parent.
        for i in (1..nodes.len()).rev() {
            let Some(mut node) = nodes[i].take() else {
                return Err(format!("part {i} appears twice"));
            };
            let parent = match node.parent {
                Some(p) if p < i => p,
                _ => return Err(format!("part {i} has an invalid parent")),
            };
            node.parts.reverse();
            node.parent = None;
            match nodes.get_mut(parent).and_then(Option::as_mut) {
                Some(p) => p.parts.push(node),
                None => return Err(format!("part {i} has an invalid parent")),
            }
        }
        let mut root = nodes[0].take().ok_or("summary has no root")?;
        if root.parent.is_some() {
            return Err("the first part must be the message itself".into());
        }
        root.parts.reverse();
        Ok(Summary {
            version: j.version,
            size: j.size,
            bare_lf: j.bare_lf,
            root,
        })
    }
}

/// Serde helper: `Option<Vec<u8>>` as an optional standard base64 string.
mod b64_opt {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_str(&STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        match s {
            None => Ok(None),
            Some(s) => STANDARD
                .decode(s.as_bytes())
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::scan::{Limits, scan};

    #[test]
    fn json_round_trip_keeps_the_tree() {
        let m = b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b\r\n\r\ny\r\n--b--\r\n--a\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\nz\r\n--a--\r\n";
        let s = scan(m, Limits::default());
        assert_eq!(s.root.parts.len(), 2);
        assert_eq!(s.root.parts[0].parts.len(), 2);
        let json = serde_json::to_string(&s).unwrap();
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn malformed_trees_are_errors() {
        for bad in [
            r#"{"version":1,"size":0,"bare_lf":0,"parts":[]}"#,
            r#"{"version":1,"size":0,"bare_lf":0,"parts":[{"type":"text","subtype":"plain","content_type_present":false,"params":[],"id":null,"description":null,"encoding":null,"md5":null,"disposition":null,"language":null,"location":null,"header_offset":0,"header_size":0,"body_offset":0,"body_size":0,"body_lines":0,"body_bare_lf":0,"parent":0}]}"#,
        ] {
            assert!(serde_json::from_str::<Summary>(bad).is_err(), "{bad}");
        }
    }
}
