//! BODY and BODYSTRUCTURE from the summary's MIME tree, shaped like
//! Dovecot's.
//!
//! The tree is outside data: it is walked with explicit lists, never by
//! recursion, so no nesting (even past the summary readers' cap of
//! [`MAX_DEPTH`]) can overflow the stack, and the work per entity is
//! bounded (by [`MAX_DEPTH`] steps where it looks below an entity).

use super::mime;
use super::*;
use crate::envelope::summary::MAX_DEPTH;

/// Parameters as Dovecot lists them: RFC 2231 continuations (`name*0`,
/// `name*1*`, ...) joined into one `name` (or `name*`, then with the
/// unencoded pieces' `%` escaped) after the other parameters, in name
/// order; pieces with a missing index are left as they are.
pub(super) fn merged_params(params: &[(String, String)]) -> Vec<(String, String)> {
    struct Piece<'a> {
        key: &'a str,
        value: &'a str,
        index: u32,
        extended: bool,
    }
    let mut out = Vec::new();
    let mut pieces: Vec<Piece<'_>> = Vec::new();
    // Dovecot's parser keeps the last index for a bare `name*`.
    let mut index = 0u32;
    for (key, value) in params {
        let Some(star) = key.find('*') else {
            out.push((key.clone(), value.clone()));
            continue;
        };
        let mut rest = &key[star..];
        if rest.len() > 1 {
            rest = &rest[1..];
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            index = rest.as_bytes()[..digits].iter().fold(0u32, |n, d| {
                n.wrapping_mul(10).wrapping_add(u32::from(d - b'0'))
            });
            rest = &rest[digits..];
        }
        let (extended, rest) = match rest.strip_prefix('*') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        if rest.is_empty() {
            pieces.push(Piece {
                key: &key[..star],
                value,
                index,
                extended,
            });
        } else {
            out.push((key.clone(), value.clone()));
        }
    }
    pieces.sort_by(|a, b| a.key.cmp(b.key).then(a.index.cmp(&b.index)));
    let mut i = 0;
    while i < pieces.len() {
        let mut j = i;
        let mut complete = true;
        let mut any_extended = false;
        let mut next_index = 0u32;
        while j < pieces.len() && pieces[j].key.eq_ignore_ascii_case(pieces[i].key) {
            complete &= pieces[j].index == next_index;
            any_extended |= pieces[j].extended;
            next_index = next_index.wrapping_add(1);
            j += 1;
        }
        let group = &pieces[i..j];
        if !complete {
            for p in group {
                let star = if p.extended { "*" } else { "" };
                out.push((format!("{}*{}{star}", p.key, p.index), p.value.to_owned()));
            }
        } else {
            let mut value = String::new();
            if any_extended && !group[0].extended {
                value.push_str("''");
            }
            for p in group {
                if any_extended && !p.extended {
                    value.push_str(&p.value.replace('%', "%25"));
                } else {
                    value.push_str(p.value);
                }
            }
            let star = if any_extended { "*" } else { "" };
            out.push((format!("{}{star}", group[0].key), value));
        }
        i = j;
    }
    out
}

/// The summary's parameters (strings) joined as Dovecot lists them, as
/// octets.
fn legacy_params(params: &[(String, String)]) -> Params {
    merged_params(params)
        .into_iter()
        .map(|(n, v)| (n.into_bytes(), v.into_bytes()))
        .collect()
}

type Params = Vec<(Vec<u8>, Vec<u8>)>;

/// A parameter list (`NIL` when empty), with RFC 2045's default charset
/// added for text.
fn params(out: &mut Vec<u8>, params: &[(Vec<u8>, Vec<u8>)], default_charset: bool) {
    if params.is_empty() && !default_charset {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    let mut first = true;
    let mut seen_charset = false;
    for (n, v) in params {
        if !first {
            out.push(b' ');
        }
        first = false;
        seen_charset |= n.eq_ignore_ascii_case(b"charset");
        istring(out, n);
        out.push(b' ');
        istring(out, v);
    }
    if default_charset && !seen_charset {
        if !first {
            out.push(b' ');
        }
        out.extend_from_slice(b"\"charset\" \"us-ascii\"");
    }
    out.push(b')');
}

/// A string that Dovecot writes without line breaks
/// (`imap_append_nstring_nolf`): each CR and LF removed, a space put in
/// where the next line does not start with whitespace.
fn nstring_nolf(out: &mut Vec<u8>, v: Option<&[u8]>) {
    let Some(v) = v else {
        out.extend_from_slice(b"NIL");
        return;
    };
    if !v.iter().any(|&b| b == b'\r' || b == b'\n') {
        istring(out, v);
        return;
    }
    let mut clean = Vec::with_capacity(v.len());
    for (i, &b) in v.iter().enumerate() {
        if b != b'\r' && b != b'\n' {
            clean.push(b);
        } else if !matches!(v.get(i + 1), None | Some(b' ' | b'\t' | b'\r' | b'\n')) {
            clean.push(b' ');
        }
    }
    istring(out, &clean);
}

/// An entity's MIME data as BODYSTRUCTURE shows it, in octets: from its
/// raw MIME fields ([`Part::mime`], exactly as Dovecot) or, for summaries
/// without them, from the summary's parsed fields.
struct Shown {
    media_type: Vec<u8>,
    subtype: Vec<u8>,
    /// Content-Type parameters, RFC 2231 pieces joined.
    params: Params,
    /// A text part (default charset, line count).
    text: bool,
    /// Shown as message/rfc822 with its embedded message.
    rfc822: bool,
    id: Option<Vec<u8>>,
    description: Option<Vec<u8>>,
    encoding: Option<Vec<u8>>,
    md5: Option<Vec<u8>>,
    disposition: Option<(Vec<u8>, Params)>,
    language: Option<Vec<Vec<u8>>>,
    location: Option<Vec<u8>>,
}

impl Shown {
    /// `in_multipart`: the entity is a body part of a multipart (MIME
    /// whatever its fields say); otherwise it is a message, whose MIME
    /// fields count only next to MIME-Version or Content-Type.
    fn of(part: &Part, in_multipart: bool) -> Shown {
        let mut shown = match &part.mime {
            Some(raw) => Shown::exact(part, raw, in_multipart),
            None => Shown::legacy(part),
        };
        if is_truncated(part) {
            // Dovecot's answer for an entity it stopped descending into.
            shown.media_type = b"application".to_vec();
            shown.subtype = b"octet-stream".to_vec();
            shown.text = false;
            shown.rfc822 = false;
        }
        shown
    }

    fn exact(part: &Part, raw: &[u8], in_multipart: bool) -> Shown {
        let d = mime::mime_data(raw, in_multipart);
        let rfc822 = is_rfc822(part);
        let ct_params = |ct: &mime::ContentType| mime::merge_parameters(ct.params.clone());
        let (media_type, subtype, params, text) = match &d.content_type {
            _ if rfc822 => (
                b"message".to_vec(),
                b"rfc822".to_vec(),
                d.content_type.as_ref().map(ct_params).unwrap_or_default(),
                false,
            ),
            None => (b"text".to_vec(), b"plain".to_vec(), Vec::new(), true),
            Some(ct) => (
                ct.media_type.clone(),
                ct.subtype.clone(),
                ct_params(ct),
                ct.media_type.eq_ignore_ascii_case(b"text"),
            ),
        };
        Shown {
            media_type,
            subtype,
            params,
            text,
            rfc822,
            id: d.id,
            description: d.description,
            encoding: d.encoding,
            md5: d.md5,
            disposition: d
                .disposition
                .map(|disp| (disp.kind, mime::merge_parameters(disp.params))),
            language: d.language,
            location: d.location,
        }
    }

    fn legacy(part: &Part) -> Shown {
        let (media_type, subtype, type_params) = match &part.content_type_value {
            Some(v) => dovecot_content_type(v.as_bytes()),
            // Words the summary's parser takes but Dovecot's does not
            // (`@`, `"`, ...): Dovecot shows an empty type.
            None if !is_mime_token(&part.media_type) || !is_mime_token(&part.subtype) => {
                (Vec::new(), Vec::new(), Vec::new())
            }
            None => (
                part.media_type.as_bytes().to_vec(),
                part.subtype.as_bytes().to_vec(),
                part.params.clone(),
            ),
        };
        let rfc822 = is_rfc822(part) && part.content_type_value.is_none();
        // Dovecot writes a message/rfc822 part's type in lowercase.
        let (media_type, subtype) = if rfc822 {
            (b"message".to_vec(), b"rfc822".to_vec())
        } else {
            (media_type, subtype)
        };
        let text = media_type.eq_ignore_ascii_case(b"text");
        let bytes = |v: &Option<String>| v.as_ref().map(|s| s.as_bytes().to_vec());
        Shown {
            media_type,
            subtype,
            params: legacy_params(&type_params),
            text,
            rfc822,
            id: bytes(&part.id),
            description: bytes(&part.description),
            encoding: part.encoding.as_deref().and_then(transfer_encoding),
            md5: bytes(&part.md5),
            disposition: part
                .disposition
                .as_ref()
                .map(|d| (mime_token(d.kind.as_bytes()), legacy_params(&d.params))),
            language: part
                .language
                .as_ref()
                .filter(|l| !l.is_empty())
                .map(|l| l.iter().map(|t| t.as_bytes().to_vec()).collect()),
            location: bytes(&part.location),
        }
    }
}

/// Did the writer stop descending into this multipart or message/rfc822
/// part (nesting or count cap, `Part::opaque`)? Dovecot, whose caps are
/// the same, then shows it as application/octet-stream.
fn is_truncated(part: &Part) -> bool {
    part.opaque && part.parts.is_empty() && (part.is_multipart() || is_rfc822(part))
}

fn extension(out: &mut Vec<u8>, shown: &Shown) {
    out.push(b' ');
    match &shown.disposition {
        Some((kind, p)) => {
            out.push(b'(');
            istring(out, kind);
            out.push(b' ');
            params(out, p, false);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    match &shown.language {
        Some(l) => {
            out.push(b'(');
            for (i, tag) in l.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                istring(out, tag);
            }
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    nstring_nolf(out, shown.location.as_deref());
}

/// The MIME token at the start of `v` (after whitespace and comments), as
/// Dovecot reads a Content-Transfer-Encoding or a disposition type.
fn mime_token(v: &[u8]) -> Vec<u8> {
    let mut lex = Lexer {
        data: v,
        pos: 0,
        last_comment: Vec::new(),
    };
    let _ = lex.skip_cfws();
    lex.mime_token().0
}

/// Is `v` one MIME token, as Dovecot reads a type or subtype?
fn is_mime_token(v: &str) -> bool {
    let mut lex = Lexer {
        data: v.as_bytes(),
        pos: 0,
        last_comment: Vec::new(),
    };
    let (token, more) = lex.mime_token();
    !token.is_empty() && more == Ok(false)
}

/// Type, subtype and parameters as Dovecot shows them for a Content-Type
/// value that the summary's parser found unusable (the summary then holds
/// the default type and `content_type_value`). Dovecot shows a value cut
/// short after its first word as that word (`text` is `"text" ""`),
/// anything else it cannot parse as `"" ""`, and neither with parameters.
fn dovecot_content_type(v: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<(String, String)>) {
    let failed = |t: Vec<u8>| (t, Vec::new(), Vec::new());
    let mut lex = Lexer {
        data: v,
        pos: 0,
        last_comment: Vec::new(),
    };
    if lex.skip_cfws() != Ok(true) {
        return failed(Vec::new());
    }
    let (t, more) = lex.mime_token();
    if more != Ok(true) || t.is_empty() {
        return failed(t);
    }
    if !lex.at(b'/') {
        return failed(Vec::new());
    }
    lex.pos += 1;
    if lex.skip_cfws() != Ok(true) {
        return failed(Vec::new());
    }
    let (sub, more) = lex.mime_token();
    if more.is_err() || sub.is_empty() || (lex.more() && !lex.at(b';')) {
        return failed(Vec::new());
    }
    // Dovecot's parser takes what the summary's did not (8-bit words):
    // the parameters as the summary's parser reads them.
    (t, sub, header::parse_params(v).params)
}

/// The transfer encoding Dovecot reports for a Content-Transfer-Encoding
/// value: one MIME token and nothing else but whitespace and comments;
/// `None` (shown as "7bit") otherwise.
fn transfer_encoding(v: &str) -> Option<Vec<u8>> {
    let mut lex = Lexer {
        data: v.as_bytes(),
        pos: 0,
        last_comment: Vec::new(),
    };
    let _ = lex.skip_cfws();
    let (token, more) = lex.mime_token();
    (!token.is_empty() && more == Ok(false)).then_some(token)
}

/// Does this entity encapsulate a message? Only message/rfc822: Dovecot
/// 2.3 shows message/global as a leaf.
fn is_rfc822(part: &Part) -> bool {
    part.media_type.eq_ignore_ascii_case("message") && part.subtype.eq_ignore_ascii_case("rfc822")
}

/// Does the body, as Dovecot delimits it, include the line break after
/// `body_offset + body_size`? The summary says so ([`Part::imap_body_eol`]);
/// a summary from before that field shows one of the two cases: a header
/// inside the entity (of its last part, that part's last part, ...) that
/// runs past the end of the body, up to the delimiter line.
fn keeps_break(part: &Part) -> bool {
    if part.imap_body_eol > 0 {
        return true;
    }
    let end = part.body_offset.saturating_add(part.body_size);
    let mut d = part;
    // At most MAX_DEPTH steps, the deepest a summary goes: the writer
    // calls this for every message/rfc822 part, so an unbounded walk over
    // a tree built in code past the cap would make it quadratic.
    for _ in 0..MAX_DEPTH {
        let Some(last) = d.parts.last() else { break };
        if last.header_offset.saturating_add(last.header_size) > end {
            return true;
        }
        d = last;
    }
    false
}

/// BODYSTRUCTURE (with extension data) or BODY (without) of a part (lossy
/// where strings are not UTF-8: see [`body_structure_bytes`]).
pub fn body_structure(part: &Part, extended: bool) -> String {
    String::from_utf8_lossy(&body_structure_bytes(part, extended)).into_owned()
}

/// BODYSTRUCTURE (with extension data) or BODY (without) of a message
/// whose root entity is `root`, as octets.
pub fn body_structure_bytes(root: &Part, extended: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if is_plain_7bit(root) {
        // Dovecot's shortcut for the commonest message, which writes the
        // type in lowercase whatever M says.
        out.extend_from_slice(b"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\"");
        let size = root.body_size.saturating_add(root.body_bare_lf);
        out.extend_from_slice(format!(" {size} {}", root.body_lines).as_bytes());
        if extended {
            out.extend_from_slice(b" NIL NIL NIL NIL");
        }
        out.push(b')');
        return out;
    }
    write_part(&mut out, root, extended);
    out
}

/// Is this message plain 7-bit text as Dovecot sees it: text/plain, no
/// parameter but `charset=us-ascii`, 7bit, and no other MIME field that
/// BODYSTRUCTURE shows?
fn is_plain_7bit(root: &Part) -> bool {
    if root.mime.is_none() {
        return is_plain_7bit_legacy(root);
    }
    let s = Shown::of(root, false);
    let params_ok = match &s.params[..] {
        [] => true,
        [(name, value)] => {
            name.eq_ignore_ascii_case(b"charset") && value.eq_ignore_ascii_case(b"us-ascii")
        }
        _ => false,
    };
    s.text
        && !root.is_multipart()
        && root.parts.is_empty()
        && s.subtype.eq_ignore_ascii_case(b"plain")
        && params_ok
        && s.id.is_none()
        && s.description.is_none()
        && s.encoding
            .as_ref()
            .is_none_or(|e| e.eq_ignore_ascii_case(b"7bit"))
        && s.md5.is_none()
        && s.disposition.is_none()
        && s.language.is_none()
        && s.location.is_none()
}

/// [`is_plain_7bit`] for a summary without raw MIME fields.
fn is_plain_7bit_legacy(root: &Part) -> bool {
    let params = merged_params(&root.params);
    let params_ok = match &params[..] {
        [] => true,
        [(name, value)] => {
            name.eq_ignore_ascii_case("charset") && value.eq_ignore_ascii_case("us-ascii")
        }
        _ => false,
    };
    let encoding_ok = match &root.encoding {
        None => true,
        Some(e) => transfer_encoding(e).is_none_or(|t| t.eq_ignore_ascii_case(b"7bit")),
    };
    root.media_type.eq_ignore_ascii_case("text")
        && root.subtype.eq_ignore_ascii_case("plain")
        && root.content_type_value.is_none()
        && root.parts.is_empty()
        && params_ok
        && encoding_ok
        && root.id.is_none()
        && root.description.is_none()
        && root.md5.is_none()
        && root.disposition.is_none()
        && root.language.as_ref().is_none_or(Vec::is_empty)
        && root.location.is_none()
}

/// What Dovecot writes for a multipart without parts (which MIME does not
/// allow): one empty text/plain part.
const EMPTY_BODY: &[u8] = b"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0)";
const EMPTY_BODYSTRUCTURE: &[u8] =
    b"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0 NIL NIL NIL NIL)";

/// What is left to write of an entity whose children are written first.
enum Step<'a> {
    /// The whole entity, from its opening parenthesis; `true` for a body
    /// part of a multipart.
    Enter(&'a Part, bool),
    /// A multipart's subtype and extension data, after its children.
    MultipartEnd(&'a Part, bool),
    /// A message/rfc822 part's line count and extension data, after its
    /// embedded message; `extra` is the line break Dovecot counts.
    MessageEnd(&'a Part, bool, u64),
}

/// Writes the entity `root` and everything below it. Iterative, with an
/// explicit list of steps (at most three per entity): the tree is outside
/// data and may be as deep as the summary allows.
fn write_part(out: &mut Vec<u8>, root: &Part, extended: bool) {
    let mut steps = vec![Step::Enter(root, false)];
    while let Some(step) = steps.pop() {
        match step {
            Step::Enter(part, in_multipart) => {
                out.push(b'(');
                if part.is_multipart() && !is_truncated(part) {
                    if part.parts.is_empty() {
                        out.extend_from_slice(if extended {
                            EMPTY_BODYSTRUCTURE
                        } else {
                            EMPTY_BODY
                        });
                    }
                    steps.push(Step::MultipartEnd(part, in_multipart));
                    steps.extend(part.parts.iter().rev().map(|p| Step::Enter(p, true)));
                    continue;
                }
                let shown = Shown::of(part, in_multipart);
                if let Some(next) = write_leaf_start(out, part, &shown, extended) {
                    steps.push(Step::MessageEnd(part, in_multipart, next.0));
                    steps.push(Step::Enter(next.1, false));
                    continue;
                }
                write_leaf_end(out, &shown, extended);
            }
            Step::MultipartEnd(part, in_multipart) => {
                let shown = Shown::of(part, in_multipart);
                out.push(b' ');
                if part.mime.is_some() {
                    istring(out, &shown.subtype);
                } else {
                    istring(out, part.subtype.as_bytes());
                }
                if extended {
                    out.push(b' ');
                    if part.mime.is_some() {
                        params(out, &shown.params, false);
                    } else {
                        params(out, &legacy_params(&part.params), false);
                    }
                    extension(out, &shown);
                }
                out.push(b')');
            }
            Step::MessageEnd(part, in_multipart, extra) => {
                out.extend_from_slice(
                    format!(" {}", part.body_lines.saturating_add(extra)).as_bytes(),
                );
                write_leaf_end(out, &Shown::of(part, in_multipart), extended);
            }
        }
    }
}

/// Writes a non-multipart entity up to its size (for a message/rfc822
/// part, up to where its embedded message goes). Returns the line break
/// Dovecot counts and the embedded message when that is to be written
/// next; `None` when only [`write_leaf_end`] is left.
fn write_leaf_start<'a>(
    out: &mut Vec<u8>,
    part: &'a Part,
    shown: &Shown,
    extended: bool,
) -> Option<(u64, &'a Part)> {
    istring(out, &shown.media_type);
    out.push(b' ');
    istring(out, &shown.subtype);
    out.push(b' ');
    params(out, &shown.params, shown.text);
    out.push(b' ');
    nstring_nolf(out, shown.id.as_deref());
    out.push(b' ');
    nstring_nolf(out, shown.description.as_deref());
    out.push(b' ');
    match &shown.encoding {
        Some(e) => istring(out, e),
        None => out.extend_from_slice(b"\"7bit\""),
    }
    let size = part.body_size.saturating_add(part.body_bare_lf);
    if shown.text {
        out.extend_from_slice(format!(" {size} {}", part.body_lines).as_bytes());
    } else if shown.rfc822 {
        // A line break Dovecot counts in the body is two octets (CRLF)
        // and one line, whatever it is in M.
        let extra = u64::from(keeps_break(part));
        out.extend_from_slice(format!(" {} ", size.saturating_add(2 * extra)).as_bytes());
        match part.parts.first() {
            Some(inner) => {
                out.extend_from_slice(&envelope_bytes(inner.header.as_deref().unwrap_or(b"")));
                out.push(b' ');
                return Some((extra, inner));
            }
            None => {
                // No embedded message in the summary (the part's header
                // ran up to a delimiter line, or a cap was reached): an
                // empty one, as Dovecot shows a message/rfc822 part without
                // content.
                out.extend_from_slice(&envelope_bytes(b""));
                out.push(b' ');
                out.extend_from_slice(if extended {
                    EMPTY_BODYSTRUCTURE
                } else {
                    EMPTY_BODY
                });
                out.extend_from_slice(
                    format!(" {}", part.body_lines.saturating_add(extra)).as_bytes(),
                );
            }
        }
    } else {
        out.extend_from_slice(format!(" {size}").as_bytes());
    }
    None
}

/// The extension data of a non-multipart entity and its closing
/// parenthesis.
fn write_leaf_end(out: &mut Vec<u8>, shown: &Shown, extended: bool) {
    if extended {
        out.push(b' ');
        nstring_nolf(out, shown.md5.as_deref());
        extension(out, shown);
    }
    out.push(b')');
}
