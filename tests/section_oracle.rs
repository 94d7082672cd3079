//! Body sections computed by writ over an opened message equal what a real
//! IMAP server (Dovecot) sends for the same message stored in plaintext:
//! every message of `tests/corpus/sections/` (plus generated large ones),
//! every part number that exists and some that do not, with HEADER, TEXT,
//! MIME, HEADER.FIELDS and HEADER.FIELDS.NOT, `<partial>` ranges, and the
//! RFC822 items. Dovecot is the only source of expected values.

mod common;

use std::collections::BTreeSet;
use std::io::Cursor;
use std::num::NonZeroU32;

use age::x25519::Identity;
use common::corpus::eml_files;
use common::{Imap, Response, provider};
use imap_next::imap_types::core::{AString, Vec1};
use imap_next::imap_types::fetch::{Part as PartNumber, Section};
use writ::envelope::{Part, Sealer, Summary, header, read_summary};
use writ::imap::section::{header_section, partial, section_bytes};

/// The corpus, by file name, plus generated messages too large to keep as
/// files.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut out = eml_files("sections");
    assert!(out.len() >= 30, "corpus missing from tests/corpus/sections");

    // A large base64 attachment next to a text part, CRLF.
    let mut big = b"From: a@example.test\r\nSubject: large\r\nContent-Type: multipart/mixed; boundary=big\r\n\r\n--big\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n--big\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    for i in 0..6000u32 {
        big.extend_from_slice(format!("{:076}\r\n", u64::from(i) * 7919).as_bytes());
    }
    big.extend_from_slice(b"--big--\r\n");
    out.push(("generated-large-base64".into(), big));
    // A large text body with bare LFs (every line break converted).
    let mut lf = b"From: a@example.test\nSubject: large LF\n\n".to_vec();
    for i in 0..8000u32 {
        lf.extend_from_slice(format!("line {i} of a long bare-LF body\n").as_bytes());
    }
    out.push(("generated-large-bare-lf".into(), lf));
    out
}

/// `BODY.PEEK[<this>]`: the section as IMAP writes it.
fn render(section: Option<&Section<'_>>) -> String {
    fn number(p: &PartNumber) -> String {
        let v: &[NonZeroU32] = p.0.as_ref();
        v.iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(".")
    }
    fn prefixed(p: &Option<PartNumber>, what: &str) -> String {
        match p {
            Some(p) => format!("{}.{what}", number(p)),
            None => what.to_string(),
        }
    }
    fn list(names: &Vec1<AString<'_>>) -> String {
        let quoted: Vec<String> = names
            .as_ref()
            .iter()
            .map(|n| common::imap::quote(&String::from_utf8_lossy(n.as_ref())))
            .collect();
        format!("({})", quoted.join(" "))
    }
    match section {
        None => String::new(),
        Some(Section::Part(p)) => number(p),
        Some(Section::Mime(p)) => format!("{}.MIME", number(p)),
        Some(Section::Header(p)) => prefixed(p, "HEADER"),
        Some(Section::Text(p)) => prefixed(p, "TEXT"),
        Some(Section::HeaderFields(p, n)) => {
            format!("{} {}", prefixed(p, "HEADER.FIELDS"), list(n))
        }
        Some(Section::HeaderFieldsNot(p, n)) => {
            format!("{} {}", prefixed(p, "HEADER.FIELDS.NOT"), list(n))
        }
    }
}

fn names(list: &[String]) -> Vec1<AString<'static>> {
    let v: Vec<AString<'static>> = list
        .iter()
        .filter_map(|n| AString::try_from(n.clone()).ok())
        .collect();
    Vec1::try_from(v).expect("a non-empty name list")
}

/// Field names of a header block usable in a FETCH (printable ASCII, no
/// quote or backslash), in order, each once (compared case-insensitively).
fn field_names(block: &[u8]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for f in header::fields(block) {
        let Some(name) = f.name() else { continue };
        let ok = name
            .iter()
            .all(|&b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
        let name = String::from_utf8_lossy(name).into_owned();
        if ok && seen.insert(name.to_ascii_lowercase()) {
            out.push(name);
        }
    }
    out
}

/// `fRoM` for `From`: case must not matter.
fn swap_case(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_uppercase() {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect()
}

fn is_rfc822(p: &Part) -> bool {
    p.media_type.eq_ignore_ascii_case("message") && p.subtype.eq_ignore_ascii_case("rfc822")
}

/// Part numbers worth asking about: those the summary's structure suggests
/// (each addressable entity), their first two children and next sibling
/// (which may or may not exist), and every number up to 3.3.
fn part_numbers(root: &Part) -> Vec<Vec<u32>> {
    fn addressable(e: &Part) -> Vec<&Part> {
        if e.is_multipart() {
            e.parts.iter().collect()
        } else if e.is_message() {
            match e.parts.first() {
                Some(inner) if inner.is_multipart() => inner.parts.iter().collect(),
                Some(inner) => vec![inner],
                None => Vec::new(),
            }
        } else {
            Vec::new()
        }
    }
    fn walk(e: &Part, prefix: &[u32], out: &mut BTreeSet<Vec<u32>>) {
        for (i, child) in addressable(e).into_iter().enumerate() {
            let mut p = prefix.to_vec();
            p.push(u32::try_from(i + 1).unwrap());
            out.insert(p.clone());
            if out.len() < 80 {
                walk(child, &p, out);
            }
        }
    }
    let mut found = BTreeSet::new();
    found.insert(vec![1]);
    walk(root, &[], &mut found);
    let mut all = found.clone();
    for p in &found {
        for extra in [1, 2] {
            let mut q = p.clone();
            q.push(extra);
            all.insert(q);
        }
        let mut sibling = p.clone();
        if let Some(last) = sibling.last_mut() {
            *last += 1;
        }
        all.insert(sibling);
    }
    for a in 1..=3 {
        all.insert(vec![a]);
        for b in 1..=3 {
            all.insert(vec![a, b]);
        }
    }
    all.insert(vec![99]);
    all.insert(vec![1, 1, 1, 1]);
    all.into_iter().collect()
}

/// The sections to compare for one message (without partials).
fn sections(m: &[u8], summary: &Summary) -> Vec<Option<Section<'static>>> {
    let root_names = field_names(summary.root.header.as_deref().unwrap_or(m));
    let mut lists: Vec<Vec<String>> = vec![
        vec!["Subject".into()],
        vec!["FROM".into(), "to".into(), "X-Absent-Field".into()],
        vec!["content-TYPE".into(), "mime-version".into()],
        vec!["x-absent-field".into()],
        vec!["Received".into(), "received".into(), "x-lower".into()],
    ];
    if !root_names.is_empty() {
        lists.push(root_names.iter().map(|n| swap_case(n)).collect());
        lists.push(vec![root_names[0].clone()]);
        lists.push(vec![root_names[root_names.len() - 1].to_ascii_uppercase()]);
    }
    let mut out: Vec<Option<Section<'static>>> =
        vec![None, Some(Section::Header(None)), Some(Section::Text(None))];
    for l in &lists {
        out.push(Some(Section::HeaderFields(None, names(l))));
        out.push(Some(Section::HeaderFieldsNot(None, names(l))));
    }
    for path in part_numbers(&summary.root) {
        let v: Vec<NonZeroU32> = path.iter().filter_map(|&n| NonZeroU32::new(n)).collect();
        let number = PartNumber(Vec1::try_from(v).unwrap());
        out.push(Some(Section::Part(number.clone())));
        out.push(Some(Section::Mime(number.clone())));
        out.push(Some(Section::Header(Some(number.clone()))));
        out.push(Some(Section::Text(Some(number.clone()))));
        // Full name lists where there is an inner message header to filter,
        // one of each form elsewhere (they must be empty there).
        let inner = entity_is_message(&summary.root, &path);
        for l in lists.iter().take(if inner { lists.len() } else { 1 }) {
            out.push(Some(Section::HeaderFields(Some(number.clone()), names(l))));
            out.push(Some(Section::HeaderFieldsNot(
                Some(number.clone()),
                names(l),
            )));
        }
        if inner {
            let inner_names: Vec<String> = summary_inner_names(&summary.root, &path);
            if !inner_names.is_empty() {
                let swapped: Vec<String> = inner_names.iter().map(|n| swap_case(n)).collect();
                out.push(Some(Section::HeaderFields(
                    Some(number.clone()),
                    names(&swapped),
                )));
                out.push(Some(Section::HeaderFieldsNot(
                    Some(number.clone()),
                    names(&inner_names[..1]),
                )));
            }
        }
    }
    out
}

/// Roughly: does this number name a message/rfc822 entity (by the
/// summary's multipart children only; good enough to pick name lists).
fn entity_is_message(root: &Part, path: &[u32]) -> bool {
    lookup(root, path).is_some_and(is_rfc822)
}

fn summary_inner_names(root: &Part, path: &[u32]) -> Vec<String> {
    lookup(root, path)
        .and_then(|e| e.parts.first())
        .and_then(|inner| inner.header.as_deref())
        .map(field_names)
        .unwrap_or_default()
}

fn lookup<'a>(root: &'a Part, path: &[u32]) -> Option<&'a Part> {
    let mut part = root;
    for (i, &n) in path.iter().enumerate() {
        let more = i + 1 < path.len();
        let idx = usize::try_from(n).ok()?.checked_sub(1)?;
        if part.is_multipart() {
            part = part.parts.get(idx)?;
        } else if idx != 0 {
            return None;
        }
        if more && is_rfc822(part) {
            part = part.parts.first()?;
        }
    }
    Some(part)
}

/// The value of the one FETCH item starting with `label` (`BODY[`,
/// `RFC822.TEXT `, ...) in a response: a literal, a quoted string, or
/// `None` for NIL.
fn fetch_value(response: &Response, label: &str) -> Option<Vec<u8>> {
    let line = response
        .untagged
        .iter()
        .find(|l| l.text_only().contains(" FETCH ("))
        .unwrap_or_else(|| panic!("no FETCH in {response:?}"));
    for (i, text) in line.text.iter().enumerate() {
        let text = String::from_utf8_lossy(text);
        let Some(at) = text.find(label) else { continue };
        let rest = &text[at + label.len()..];
        // Skip the rest of the label: `...]`, an optional `<origin>`.
        let rest = match label.ends_with('[') {
            true => {
                let close = rest.find(']').expect("section label end");
                let r = &rest[close + 1..];
                match r.strip_prefix('<') {
                    Some(r) => &r[r.find('>').expect("partial origin end") + 1..],
                    None => r,
                }
            }
            false => rest,
        };
        let rest = rest.trim_start();
        if rest.starts_with('{') {
            return Some(line.literals[i].clone());
        }
        if rest.starts_with("NIL") {
            return None;
        }
        let quoted = rest.strip_prefix('"').expect("a quoted string");
        let mut out = Vec::new();
        let mut chars = quoted.bytes();
        while let Some(c) = chars.next() {
            match c {
                b'\\' => out.push(chars.next().expect("escaped char")),
                b'"' => return Some(out),
                c => out.push(c),
            }
        }
        panic!("unterminated quoted string in {response:?}");
    }
    panic!("no {label} item in {response:?}");
}

/// A message whose header has no empty line and whose last line has no
/// line break: Dovecot's answer to top-level HEADER.FIELDS then depends on
/// whether it has the fields in its cache of header fields (uncached, it
/// adds an empty line after that last line; cached, it does not). writ
/// answers as a Dovecot that has them cached, which it does once they have
/// been fetched: such sections are fetched twice, and the second answer
/// counts.
fn cache_sensitive(m: &[u8], section: Option<&Section<'_>>) -> bool {
    matches!(section, Some(Section::HeaderFields(None, _)))
        && header::header_end(m).is_none()
        && !m.ends_with(b"\n")
}

struct Oracle {
    imap: Imap,
}

impl Oracle {
    fn fetch(&mut self, uid: u32, item: &str, label: &str) -> Vec<u8> {
        let r = self
            .imap
            .command(&format!("UID FETCH {uid} ({item})"))
            .expect_ok(item);
        fetch_value(&r, label).unwrap_or_else(|| panic!("NIL for {item}"))
    }

    /// `item` of `m` (UID `uid`) as Dovecot sends it; fetched twice when
    /// the answer depends on Dovecot's cache (see [`cache_sensitive`]).
    fn section(
        &mut self,
        uid: u32,
        m: &[u8],
        section: Option<&Section<'_>>,
        item: &str,
    ) -> Vec<u8> {
        if cache_sensitive(m, section) {
            self.fetch(uid, item, "BODY[");
        }
        self.fetch(uid, item, "BODY[")
    }
}

fn show(b: &[u8]) -> String {
    const MAX: usize = 400;
    let s = String::from_utf8_lossy(&b[..b.len().min(MAX)]).into_owned();
    if b.len() > MAX {
        format!("{s:?}... ({} bytes)", b.len())
    } else {
        format!("{s:?}")
    }
}

#[test]
fn sections_are_what_dovecot_sends_for_the_plaintext() {
    let p = provider();
    let user = p.new_user("sections");
    let id = Identity::generate();
    let sealer = Sealer::new("0123456789abcdef", vec![id.to_public()]);
    let ids = vec![id];
    let corpus = corpus();

    // All messages first, so that no fetch influences how Dovecot stores
    // (and caches) a later one.
    let uids: Vec<u32> = corpus
        .iter()
        .map(|(_, m)| p.imap_append(&user, "INBOX", m))
        .collect();
    let mut imap = p.imap(&user);
    imap.select("INBOX").expect_ok("select");
    let mut oracle = Oracle { imap };

    let mut compared = 0usize;
    let mut from_summary = 0usize;
    let mut failures = Vec::new();
    for ((name, m), uid) in corpus.iter().zip(uids) {
        let mut sealed = Vec::new();
        sealer.seal(&m[..], &mut sealed).expect("seal");
        let summary = read_summary(Cursor::new(&sealed), &ids).expect("summary");

        let mut check = |spec: String, dovecot: Vec<u8>, writ: Vec<u8>| {
            compared += 1;
            if dovecot != writ {
                failures.push(format!(
                    "{name} {spec}\n  dovecot: {}\n  writ:    {}",
                    show(&dovecot),
                    show(&writ)
                ));
            }
        };

        for section in sections(m, &summary) {
            let spec = render(section.as_ref());
            let item = format!("BODY.PEEK[{spec}]");
            let dovecot = oracle.section(uid, m, section.as_ref(), &item);
            let ours = section_bytes(m, &summary, section.as_ref());
            let full = ours.clone().into_vec(m);
            // Partials where the section has content, and one past the end
            // of every section (the empty string).
            let n = u32::try_from(dovecot.len()).unwrap();
            let mut ranges = vec![(n, 1), (n + 10, 5)];
            if n > 0 {
                ranges.extend([(0, 1), (0, n), (1, n + 5), (n / 2, 7), (n - 1, 1)]);
                ranges.push((0, u32::MAX));
            }
            let big_or_numbered = matches!(
                section,
                None | Some(Section::Text(None) | Section::Header(None) | Section::Part(_))
            );
            if !big_or_numbered {
                ranges.truncate(if n > 0 { 4 } else { 1 });
            }
            // The listing path: the message's own header from the summary
            // alone, when the summary holds all of it.
            if let Some(h) = header_section(&summary, section.as_ref()) {
                from_summary += 1;
                check(format!("{item} from the summary"), dovecot.clone(), h);
            }
            check(item.clone(), dovecot, full);
            for (origin, length) in ranges {
                let length = NonZeroU32::new(length).unwrap();
                let item = format!("BODY.PEEK[{spec}]<{origin}.{length}>");
                let dovecot = oracle.section(uid, m, section.as_ref(), &item);
                let writ = partial(ours.clone(), origin, length).into_vec(m);
                check(item, dovecot, writ);
            }
        }

        // The RFC822 items are sections too.
        for (item, label, section) in [
            (
                "RFC822.HEADER",
                "RFC822.HEADER ",
                Some(Section::Header(None)),
            ),
            ("RFC822.TEXT", "RFC822.TEXT ", Some(Section::Text(None))),
            ("RFC822", "RFC822 ", None),
        ] {
            let dovecot = oracle.fetch(uid, item, label);
            let writ = section_bytes(m, &summary, section.as_ref()).into_vec(m);
            check(item.to_string(), dovecot, writ);
        }
    }
    eprintln!(
        "{compared} sections of {} messages compared with Dovecot's \
         ({from_summary} header sections from the summary alone)",
        corpus.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {compared} sections differ from Dovecot's:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(compared > 5000, "only {compared} sections compared");
    assert!(
        from_summary > 300,
        "only {from_summary} header sections answered from the summary"
    );
}
