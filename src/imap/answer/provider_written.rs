//! ENVELOPE, BODY and BODYSTRUCTURE of a message writ does not open (a
//! plaintext one, or a sealed one shown as stored), passed on as the
//! provider wrote them: imap-codec reads them into imap-types and would
//! write them back in its own way (`"TEXT"` and `"MESSAGE" "RFC822"`
//! whatever the provider sent, where Dovecot writes a text type as the
//! message spells it and message/rfc822 in lowercase).
//!
//! The items are found in the raw bytes of the provider's FETCH response
//! (`* n FETCH (...)`, literals included), which imap-codec has already
//! parsed: the walk only needs to find where each item starts and ends.
//! One pass, no recursion (parentheses are counted); a literal is skipped
//! by its announced length, which the parse has checked. Anything the
//! walk does not understand gives nothing, and the typed item (the
//! parse's) is used instead.

use std::sync::Arc;

use imap_next::imap_types::fetch::MessageDataItemName;

use super::Item;

/// The structure items of one provider FETCH response, each its name, a
/// space and its value, octet for octet as the provider sent them.
#[derive(Debug, Default, Clone)]
pub struct ProviderWritten {
    envelope: Option<Arc<[u8]>>,
    body: Option<Arc<[u8]>>,
    body_structure: Option<Arc<[u8]>>,
}

impl ProviderWritten {
    /// The items found in `raw`, a FETCH response; none when `raw` is not
    /// one or does not walk.
    pub fn of(raw: &[u8]) -> ProviderWritten {
        walk(raw).unwrap_or_default()
    }

    /// The provider's own bytes for `name` (ENVELOPE, BODY or
    /// BODYSTRUCTURE), when its response carried it.
    pub fn item(&self, name: &MessageDataItemName<'_>) -> Option<Item> {
        let bytes = match name {
            MessageDataItemName::Envelope => &self.envelope,
            MessageDataItemName::Body => &self.body,
            MessageDataItemName::BodyStructure => &self.body_structure,
            _ => return None,
        };
        bytes.clone().map(Item::Written)
    }
}

/// Longest literal length announcement walked (`{` and up to this many
/// digits, a `+` and `}`).
const MAX_LENGTH_DIGITS: usize = 10;

fn walk(raw: &[u8]) -> Option<ProviderWritten> {
    let open = raw.iter().position(|&b| b == b'(')?;
    let head = raw[..open].to_ascii_uppercase();
    let number = head.strip_prefix(b"* ")?.strip_suffix(b" FETCH ")?;
    if number.is_empty() || !number.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut out = ProviderWritten::default();
    let mut i = open + 1;
    loop {
        let name_start = i;
        let name_end = name_end(raw, i)?;
        if name_end == name_start || raw.get(name_end) != Some(&b' ') {
            return None;
        }
        let end = value_end(raw, name_end + 1)?;
        let item: Arc<[u8]> = raw[name_start..end].into();
        let name = &raw[name_start..name_end];
        if name.eq_ignore_ascii_case(b"ENVELOPE") {
            out.envelope = Some(item);
        } else if name.eq_ignore_ascii_case(b"BODY") {
            out.body = Some(item);
        } else if name.eq_ignore_ascii_case(b"BODYSTRUCTURE") {
            out.body_structure = Some(item);
        }
        match raw.get(end)? {
            b' ' => i = end + 1,
            b')' => return Some(out),
            _ => return None,
        }
    }
}

/// Where an item's name starting at `i` ends: at the first space outside
/// its section's brackets (`BODY[HEADER.FIELDS (A B)]<0>`).
fn name_end(raw: &[u8], mut i: usize) -> Option<usize> {
    let mut brackets = 0usize;
    loop {
        match *raw.get(i)? {
            b'[' => brackets += 1,
            b']' => brackets = brackets.checked_sub(1)?,
            b'"' | b'{' if brackets > 0 => {
                i = string_end(raw, i)?;
                continue;
            }
            b'~' if brackets > 0 && raw.get(i + 1) == Some(&b'{') => {
                i = string_end(raw, i)?;
                continue;
            }
            b' ' if brackets == 0 => return Some(i),
            b'(' | b')' | b'\r' | b'\n' if brackets == 0 => return None,
            _ => {}
        }
        i += 1;
    }
}

/// Where the value starting at `i` ends: after its closing parenthesis,
/// quote or literal, or at the space or `)` after an atom or number.
fn value_end(raw: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 0usize;
    loop {
        match *raw.get(i)? {
            b'"' | b'{' => {
                i = string_end(raw, i)?;
                if depth == 0 {
                    return Some(i);
                }
                continue;
            }
            b'~' if raw.get(i + 1) == Some(&b'{') => {
                i = string_end(raw, i)?;
                if depth == 0 {
                    return Some(i);
                }
                continue;
            }
            b'(' => depth += 1,
            b')' if depth == 0 => return Some(i),
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            b' ' if depth == 0 => return Some(i),
            b'\r' | b'\n' => return None,
            _ => {}
        }
        i += 1;
    }
}

/// Where the quoted string or literal (`{n}`, `{n+}`, `~{n}`) starting at
/// `i` ends.
fn string_end(raw: &[u8], mut i: usize) -> Option<usize> {
    if raw[i] == b'"' {
        i += 1;
        loop {
            match *raw.get(i)? {
                b'\\' => i += 2,
                b'"' => return Some(i + 1),
                b'\r' | b'\n' => return None,
                _ => i += 1,
            }
        }
    }
    if raw[i] == b'~' {
        i += 1;
    }
    if raw.get(i) != Some(&b'{') {
        return None;
    }
    let digits_at = i + 1;
    let close = digits_at
        + raw
            .get(digits_at..)?
            .iter()
            .take(MAX_LENGTH_DIGITS + 2)
            .position(|&b| b == b'}')?;
    let digits = &raw[digits_at..close];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let length: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let data = match raw.get(close + 1..)? {
        [b'\r', b'\n', ..] => close + 3,
        [b'\n', ..] => close + 2,
        _ => return None,
    };
    let end = data.checked_add(length)?;
    (end <= raw.len()).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(raw: &[u8]) -> Vec<String> {
        let w = ProviderWritten::of(raw);
        [
            MessageDataItemName::Envelope,
            MessageDataItemName::Body,
            MessageDataItemName::BodyStructure,
        ]
        .iter()
        .filter_map(|n| match w.item(n) {
            Some(Item::Written(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
            _ => None,
        })
        .collect()
    }

    #[test]
    fn the_structure_items_are_found_as_written() {
        let raw = b"* 3 FETCH (UID 7 FLAGS (\\Seen) BODY[HEADER.FIELDS (A \"B C\")]<0> {4}\r\n)x\r\n BODYSTRUCTURE (\"Text\" \"PLAIN\" (\"name\" {3}\r\n(\")) NIL NIL \"7bit\" 3 1 NIL NIL NIL NIL) ENVELOPE (NIL \"a \\\" (b\" NIL NIL NIL NIL NIL NIL NIL NIL) BODY (\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 5 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) (\"text\" \"plain\" NIL NIL NIL \"7bit\" 0 0) 1))\r\n";
        assert_eq!(
            items(raw),
            [
                "ENVELOPE (NIL \"a \\\" (b\" NIL NIL NIL NIL NIL NIL NIL NIL)",
                "BODY (\"message\" \"rfc822\" NIL NIL NIL \"7bit\" 5 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) (\"text\" \"plain\" NIL NIL NIL \"7bit\" 0 0) 1)",
                "BODYSTRUCTURE (\"Text\" \"PLAIN\" (\"name\" {3}\r\n(\")) NIL NIL \"7bit\" 3 1 NIL NIL NIL NIL)",
            ]
        );
    }

    #[test]
    fn anything_else_gives_nothing() {
        for raw in [
            &b"* 3 EXISTS\r\n"[..],
            b"* 3 FETCH (BODYSTRUCTURE (\"text\" \"plain\"",
            b"* 3 FETCH (BODYSTRUCTURE (\"text\" {99}\r\nshort) UID 1)\r\n",
            b"* 3 FETCH (BODYSTRUCTURE (\"text\" {99999999999999999999}\r\n) UID 1)\r\n",
            b"* 3 FETCH (BODYSTRUCTURE (\"text)\r\n",
            b"* 3 FETCH (BODY[1 BODYSTRUCTURE (\"text\")\r\n",
            b"* x FETCH (BODYSTRUCTURE (\"text\"))\r\n",
        ] {
            assert!(items(raw).is_empty(), "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn deep_nesting_walks_without_recursion() {
        let mut raw = b"* 1 FETCH (BODY ".to_vec();
        raw.extend(std::iter::repeat_n(b'(', 100_000));
        raw.extend(std::iter::repeat_n(b')', 100_000));
        raw.extend_from_slice(b")\r\n");
        assert_eq!(items(&raw)[0].len(), 5 + 200_000);
    }
}
