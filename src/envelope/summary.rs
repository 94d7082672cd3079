//! The summary: what the IMAP proxy needs to list a sealed message without
//! downloading its payload. It travels age-encrypted in part 1 as JSON;
//! `docs/FORMAT.md` is its normative schema.
//!
//! Invariants, because a summary is outside data (anyone can encrypt one to
//! the public epoch recipient):
//!
//! - Every [`Summary`] built from JSON has passed [`SummaryJson`]'s checks:
//!   version 1, at most [`MAX_PARTS`] entities nested at most [`MAX_DEPTH`]
//!   deep in pre-order, `size` at most [`MAX_MESSAGE_SIZE`], every offset,
//!   size and count consistent (inside the message, no overflow). The JSON
//!   itself is flat, so serde never recurses deeper than a few levels; the
//!   entity count is checked while the list is read, before it is built.
//! - Nothing walks the tree recursively: [`Part`]'s `Drop`, `Clone`,
//!   `PartialEq` and `Debug` are iterative, so even a tree built in code
//!   past the caps cannot overflow the stack.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Summary format version. Readers refuse summaries with a higher major
/// version; unknown fields are ignored (forward compatible additions).
pub const SUMMARY_VERSION: u32 = 1;

/// Deepest nesting of entities a summary may describe (M is depth 1): the
/// writer's cap (`docs/FORMAT.md` 12.5). The scanner never goes deeper and
/// readers refuse deeper summaries as malformed.
pub const MAX_DEPTH: usize = 100;

/// Most entities (M and embedded messages included) a summary may list:
/// the writer's cap. Readers stop reading the list at entity 10,001 and
/// refuse the summary as malformed.
pub const MAX_PARTS: usize = 10_000;

/// Octets of raw MIME fields ([`Part::mime`]) one summary holds at most,
/// all entities together: past it, later entities go without (readers
/// then use the parsed fields). Keeps the summary far below what readers
/// accept (64 MiB) whatever M's headers hold.
pub const MAX_MIME_FIELDS: usize = 1024 * 1024;

/// Largest message size (octets) a summary may state: 1 TiB, far above
/// any message writ accepts and low enough that every sum of offsets,
/// sizes and line counts (and IMAP's `size + bare_lf`) fits in a `u64`.
/// Readers refuse a larger `size` as malformed.
pub const MAX_MESSAGE_SIZE: u64 = 1 << 40;

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
///
/// `Clone`, `PartialEq`, `Debug` and `Drop` walk the tree with an explicit
/// list, never by recursion (see the module's invariants).
#[derive(Serialize, Deserialize, Default)]
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
    /// The entity's MIME fields (`Content-*` and `MIME-Version`) exactly
    /// as in M, octets and folding kept (base64 in JSON), so that a reader
    /// shows BODYSTRUCTURE as IMAP servers do, 8-bit octets and malformed
    /// fields included (`view::mime`). Written since `docs/FORMAT.md`
    /// revision 4 for every entity while the summary's budget
    /// ([`MAX_MIME_FIELDS`]) lasts; absent in older summaries, past the
    /// budget, and when the header passed the writer's cap.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "b64_opt")]
    pub mime: Option<Vec<u8>>,
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
    /// Takes the summary by value: opening a message makes it once, and
    /// shifting it needs no copy of its tree.
    pub fn with_prefix(self, prefix: &[u8]) -> Summary {
        let mut out = self;
        if prefix.is_empty() {
            return out;
        }
        // Offsets stay far below u64::MAX (MAX_MESSAGE_SIZE); saturating
        // all the same, for summaries built in code.
        let shift = prefix.len() as u64;
        out.size = out.size.saturating_add(shift);
        let bare = prefix
            .iter()
            .enumerate()
            .filter(|&(i, &b)| b == b'\n' && (i == 0 || prefix[i - 1] != b'\r'))
            .count() as u64;
        out.bare_lf = out.bare_lf.saturating_add(bare);
        out.root.header_size = out.root.header_size.saturating_add(shift);
        out.root.body_offset = out.root.body_offset.saturating_add(shift);
        if let Some(h) = &mut out.root.header {
            let mut joined = prefix.to_vec();
            joined.extend_from_slice(h);
            *h = joined;
        }
        if let Some(m) = &mut out.root.mime {
            // The prefix's own MIME fields, if a provider put any there,
            // come first, as they do in the header.
            let mut joined = super::view::mime::raw_mime_fields(prefix);
            joined.extend_from_slice(m);
            *m = joined;
        }
        // Iteratively: nesting is as deep as the message's.
        let mut stack: Vec<&mut Part> = out.root.parts.iter_mut().collect();
        while let Some(part) = stack.pop() {
            part.header_offset = part.header_offset.saturating_add(shift);
            part.body_offset = part.body_offset.saturating_add(shift);
            stack.extend(part.parts.iter_mut());
        }
        out
    }
}

/// Longest string a lean summary keeps of a type, subtype, encoding,
/// unparsed Content-Type or parameter (a boundary is at most 70 octets).
const LEAN_STRING: usize = 80;
/// Most Content-Type parameters a lean summary keeps per entity (the
/// first short ones: charset, boundary, name...).
const LEAN_PARAMS: usize = 3;

/// `s` cut to at most `max` octets, at a character boundary.
fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

impl Summary {
    /// The summary without what only BODYSTRUCTURE's text fields need:
    /// every entity's ID, description, MD5, location, languages, raw MIME
    /// fields and disposition parameters, the headers of embedded
    /// messages (marked cut), Content-Type parameters past the first
    /// three or longer than 80 octets, and types, subtypes, encodings and
    /// unparsed Content-Types cut to 80 octets (charsets and boundaries
    /// are short). At most about 3 KiB of JSON per entity, whatever M
    /// holds: within the cap on entities, a lean summary fits. Offsets, sizes and the message's own header stay: listings
    /// and searches still answer from it. For a message whose full
    /// summary would pass the readers' cap (`seal.rs`).
    pub fn lean(mut self) -> Summary {
        let short = |(n, v): &(String, String)| n.len() <= LEAN_STRING && v.len() <= LEAN_STRING;
        let mut stack: Vec<(&mut Part, bool)> = vec![(&mut self.root, true)];
        while let Some((p, root)) = stack.pop() {
            p.id = None;
            p.description = None;
            p.md5 = None;
            p.location = None;
            p.language = None;
            p.mime = None;
            cut(&mut p.media_type, LEAN_STRING);
            cut(&mut p.subtype, LEAN_STRING);
            if let Some(e) = &mut p.encoding {
                cut(e, LEAN_STRING);
            }
            if let Some(v) = &mut p.content_type_value {
                cut(v, LEAN_STRING);
            }
            p.params.retain(short);
            p.params.truncate(LEAN_PARAMS);
            if let Some(d) = &mut p.disposition {
                cut(&mut d.kind, LEAN_STRING);
                d.params.clear();
            }
            if !root && p.header.take().is_some() {
                p.header_truncated = true;
            }
            stack.extend(p.parts.iter_mut().map(|c| (c, false)));
        }
        self
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
            // embedded message's parts (a message/global part is a leaf to
            // IMAP servers, and so is a message/rfc822 part without one).
            if part.media_type.eq_ignore_ascii_case("message")
                && part.subtype.eq_ignore_ascii_case("rfc822")
                && let Some(inner) = part.parts.first()
            {
                part = inner;
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

/// Calls `$m!` with every field of [`Part`] but `parts`, so that the
/// iterative trait implementations below list them once (and a new field
/// that is not listed fails to compile in [`Part::shallow_clone`]).
macro_rules! shallow_fields {
    ($m:ident, $($arg:tt)*) => {
        $m!($($arg)*; media_type, subtype, content_type_present, content_type_value, params,
            id, description, encoding, md5, disposition, language, location,
            header_offset, header_size, body_offset, body_size, body_lines, body_bare_lf,
            header, mime, header_truncated, opaque, imap_body_eol, parent)
    };
}

impl Part {
    /// This entity without its children.
    fn shallow_clone(&self) -> Part {
        macro_rules! build {
            ($s:ident; $($f:ident),*) => {
                Part { $($f: $s.$f.clone(),)* parts: Vec::new() }
            };
        }
        shallow_fields!(build, self)
    }

    /// Are the fields of the two entities, children aside, equal?
    fn shallow_eq(&self, other: &Part) -> bool {
        macro_rules! eq {
            ($a:ident, $b:ident; $($f:ident),*) => {
                true $(&& $a.$f == $b.$f)*
            };
        }
        shallow_fields!(eq, self, other)
    }

    /// The tree in pre-order, each entity with its parent's index.
    fn preorder(&self) -> Vec<(&Part, Option<usize>)> {
        let mut out = Vec::new();
        let mut stack = vec![(self, None)];
        while let Some((part, parent)) = stack.pop() {
            let index = out.len();
            out.push((part, parent));
            for child in part.parts.iter().rev() {
                stack.push((child, Some(index)));
            }
        }
        out
    }
}

/// Builds a tree from entities in pre-order with their parents' indexes
/// (each smaller than the entity's own), without recursion.
fn assemble(nodes: Vec<(Part, Option<usize>)>) -> Option<Part> {
    let mut parents: Vec<Option<usize>> = Vec::with_capacity(nodes.len());
    let mut slots: Vec<Option<Part>> = Vec::with_capacity(nodes.len());
    for (part, parent) in nodes {
        parents.push(parent);
        slots.push(Some(part));
    }
    // Children have higher indexes than their parent: attach from the end,
    // so each node is complete when it is moved into its parent.
    for i in (1..slots.len()).rev() {
        let mut node = slots[i].take()?;
        let parent = parents[i].filter(|&p| p < i)?;
        node.parts.reverse();
        slots.get_mut(parent)?.as_mut()?.parts.push(node);
    }
    let mut root = slots.first_mut()?.take()?;
    root.parts.reverse();
    Some(root)
}

impl Drop for Part {
    /// Drops the subtree with a list, not by recursion: a tree as deep as
    /// memory allows must not overflow the stack when it goes.
    fn drop(&mut self) {
        if self.parts.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.parts);
        while let Some(mut part) = pending.pop() {
            pending.append(&mut part.parts);
            // `part` goes here, childless.
        }
    }
}

impl Clone for Part {
    fn clone(&self) -> Part {
        let nodes: Vec<(Part, Option<usize>)> = self
            .preorder()
            .into_iter()
            .map(|(p, parent)| (p.shallow_clone(), parent))
            .collect();
        // Pre-order with valid parents by construction.
        assemble(nodes).unwrap_or_default()
    }
}

impl PartialEq for Part {
    fn eq(&self, other: &Part) -> bool {
        let mut stack = vec![(self, other)];
        while let Some((a, b)) = stack.pop() {
            if !a.shallow_eq(b) || a.parts.len() != b.parts.len() {
                return false;
            }
            stack.extend(a.parts.iter().zip(&b.parts));
        }
        true
    }
}

impl Eq for Part {}

impl fmt::Debug for Part {
    /// The tree as its flat pre-order list (each entry with `parent`), as
    /// in JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Entry<'a>(&'a Part, Option<usize>);
        impl fmt::Debug for Entry<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let p = self.0;
                let mut d = f.debug_struct("Part");
                macro_rules! fields {
                    ($d:ident, $p:ident; $($name:ident),*) => {
                        $( $d.field(stringify!($name), &$p.$name); )*
                    };
                }
                shallow_fields!(fields, d, p);
                d.field("parent_index", &self.1).finish()
            }
        }
        f.debug_list()
            .entries(self.preorder().into_iter().map(|(p, i)| Entry(p, i)))
            .finish()
    }
}

/// The JSON shape of a [`Summary`]: entities in pre-order, each naming its
/// parent's index. A parent always precedes its children.
#[derive(Serialize, Deserialize)]
struct SummaryJson {
    version: u32,
    size: u64,
    bare_lf: u64,
    #[serde(deserialize_with = "capped_parts")]
    parts: Vec<Part>,
}

/// Reads the `parts` list, refusing it at entity [`MAX_PARTS`] + 1 before
/// reading further.
fn capped_parts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Part>, D::Error> {
    struct Capped;
    impl<'de> serde::de::Visitor<'de> for Capped {
        type Value = Vec<Part>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a list of at most {MAX_PARTS} parts")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<Part>, A::Error> {
            let mut parts = Vec::new();
            while let Some(part) = seq.next_element::<Part>()? {
                if parts.len() == MAX_PARTS {
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX_PARTS} parts (the writer's cap)"
                    )));
                }
                parts.push(part);
            }
            Ok(parts)
        }
    }
    d.deserialize_seq(Capped)
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

impl SummaryJson {
    /// Everything a reader checks before building the tree: the version,
    /// the caps, the pre-order and every number (no entity outside M, no
    /// sum that overflows, every child inside its parent's body and after
    /// its previous sibling).
    fn check(&self) -> Result<(), String> {
        if self.version != SUMMARY_VERSION {
            return Err(format!("unsupported summary version {}", self.version));
        }
        if self.size > MAX_MESSAGE_SIZE {
            return Err(format!(
                "size {} is over the cap of {MAX_MESSAGE_SIZE} octets",
                self.size
            ));
        }
        if self.bare_lf > self.size {
            return Err("more bare LFs than octets".into());
        }
        if self.parts.is_empty() {
            return Err("summary has no parts".into());
        }
        if self.parts.len() > MAX_PARTS {
            return Err(format!("more than {MAX_PARTS} parts (the writer's cap)"));
        }
        // The chain from the root to the previous entity: in pre-order an
        // entity's parent is on it, and its length is the entity's depth.
        let mut path: Vec<usize> = Vec::new();
        // Where the next child of each entity may start: its body's start,
        // then the end of its last child. Children lie inside their
        // parent's body, one after the other, so the bodies of all the
        // leaves together are at most M: whatever reads every entity (a
        // content SEARCH decodes each one) reads M at most once.
        let mut next_child: Vec<u64> = Vec::with_capacity(self.parts.len());
        for (i, part) in self.parts.iter().enumerate() {
            match (i, part.parent) {
                (0, None) => {}
                (0, Some(_)) => return Err("the first part must be the message itself".into()),
                (_, Some(p)) if p < i => {
                    while path.last().is_some_and(|&top| top != p) {
                        path.pop();
                    }
                    if path.is_empty() {
                        return Err(format!("part {i} is not in pre-order"));
                    }
                }
                _ => return Err(format!("part {i} has an invalid parent")),
            }
            path.push(i);
            if path.len() > MAX_DEPTH {
                return Err(format!(
                    "part {i} is nested deeper than {MAX_DEPTH} (the writer's cap)"
                ));
            }
            let parent = part.parent.map(|p| &self.parts[p]);
            part.check(i, self.size, parent)?;
            if let Some(p) = part.parent {
                if part.header_offset < next_child[p] {
                    return Err(format!("part {i} overlaps the part before it"));
                }
                // check() saw both sums fit. An embedded message's body may
                // keep the line break before the next boundary, which its
                // message/rfc822 part's body does not (as Dovecot counts
                // them): at most 2 octets past the parent's body.
                let end = part.body_offset + part.body_size;
                if end > self.parts[p].body_offset + self.parts[p].body_size + 2 {
                    return Err(format!("part {i} runs past the end of its parent's body"));
                }
                next_child[p] = end;
            }
            next_child.push(part.body_offset);
        }
        Ok(())
    }
}

impl Part {
    /// One entity's numbers: inside M of `size` octets, after its parent's
    /// body start, consistent with each other.
    fn check(&self, i: usize, size: u64, parent: Option<&Part>) -> Result<(), String> {
        let bad = |what: &str| Err(format!("part {i}: {what}"));
        if self.header_offset.checked_add(self.header_size) != Some(self.body_offset) {
            return bad("the body does not start where the header ends");
        }
        match self.body_offset.checked_add(self.body_size) {
            Some(end) if end <= size => {}
            _ => return bad("the body runs past the end of the message"),
        }
        if self.body_lines > self.body_size || self.body_bare_lf > self.body_lines {
            return bad("more lines than octets in the body");
        }
        if self.imap_body_eol > 2 {
            return bad("imap_body_eol is not 0, 1 or 2");
        }
        if self
            .header
            .as_ref()
            .is_some_and(|h| h.len() as u64 > self.header_size)
        {
            return bad("the raw header is longer than header_size");
        }
        if self
            .mime
            .as_ref()
            .is_some_and(|h| h.len() as u64 > self.header_size)
        {
            return bad("the raw MIME fields are longer than header_size");
        }
        if parent.is_some_and(|p| self.header_offset < p.body_offset) {
            return bad("the part starts before its parent's body");
        }
        Ok(())
    }
}

impl TryFrom<SummaryJson> for Summary {
    type Error = String;

    fn try_from(j: SummaryJson) -> Result<Summary, String> {
        j.check()?;
        let nodes = j
            .parts
            .into_iter()
            .map(|mut p| {
                let parent = p.parent.take();
                (p, parent)
            })
            .collect();
        let root = assemble(nodes).ok_or("the summary's tree is malformed")?;
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
    fn a_prefix_joins_the_header_and_its_mime_fields() {
        let m = b"Content-Type: text/plain\r\n\r\nx\r\n";
        let s = scan(m, Limits::default()).with_prefix(b"Received: by x\r\nContent-ID: <p>\r\n");
        assert_eq!(
            s.root.mime.as_deref(),
            Some(&b"Content-ID: <p>\r\nContent-Type: text/plain\r\n"[..])
        );
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
