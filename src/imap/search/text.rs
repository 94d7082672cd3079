//! Text as Dovecot compares it: bytes in a charset made UTF-8, then
//! "decomposed titlecase" (`uni_utf8_to_decomposed_titlecase`): every
//! character mapped to its titlecase form and then one level of its
//! Unicode decomposition, canonical or compatibility (`é` → `E` + U+0301,
//! `ﬁ` → `fi`, NBSP → space, `½` → `1⁄2`, Hangul syllables → jamo). Search
//! strings and message text are both put in this form and compared as
//! bytes, so matching ignores case and matches `cafe` in `café`.
//!
//! The mapping is data: `fold.txt` lists every code point that Dovecot
//! 2.3's normalizer changes (Hangul syllables aside), as `cp:replacement`
//! or, for runs of code points mapped at a constant distance,
//! `first+count*step±delta` (hex code points, decimal counts). It was made
//! by calling that normalizer (libdovecot's
//! `uni_utf8_to_decomposed_titlecase`) on each code point.
//!
//! Charsets other than UTF-8 are single-byte ones whose upper halves
//! `charsets.txt` lists (`name alias...|` then 128 hex code points, `-`
//! where a byte is no character), made from Python's codecs, which agree
//! with the iconv Dovecot uses on these.

use std::collections::HashMap;
use std::sync::OnceLock;

/// What Dovecot writes for bytes that are not valid in their charset (one
/// per run of bad bytes: a replacement right after another is dropped).
const REPLACEMENT: char = '\u{FFFD}';

fn table() -> &'static HashMap<u32, Box<[char]>> {
    static TABLE: OnceLock<HashMap<u32, Box<[char]>>> = OnceLock::new();
    TABLE.get_or_init(|| parse_table(include_str!("fold.txt")))
}

fn parse_table(data: &str) -> HashMap<u32, Box<[char]>> {
    let mut map = HashMap::with_capacity(8192);
    let hex = |s: &str| u32::from_str_radix(s.trim(), 16).ok();
    for line in data.lines() {
        if let Some((cp, seq)) = line.split_once(':') {
            let Some(cp) = hex(cp) else { continue };
            let chars: Option<Vec<char>> = seq
                .split(' ')
                .map(|h| hex(h).and_then(char::from_u32))
                .collect();
            if let Some(chars) = chars {
                map.insert(cp, chars.into_boxed_slice());
            }
        } else if let Some((first, rest)) = line.split_once('+') {
            // first+count*step±delta
            let Some((count, rest)) = rest.split_once('*') else {
                continue;
            };
            let at = rest.find(['+', '-']).unwrap_or(rest.len());
            let (step, delta) = rest.split_at(at);
            let (Some(first), Ok(count), Ok(step), Ok(delta)) = (
                hex(first),
                count.parse::<u32>(),
                step.parse::<u32>(),
                delta.parse::<i64>(),
            ) else {
                continue;
            };
            for i in 0..count {
                let cp = first + i * step;
                let to = u32::try_from(i64::from(cp) + delta).ok();
                if let Some(c) = to.and_then(char::from_u32) {
                    map.insert(cp, Box::from([c]));
                }
            }
        }
    }
    map
}

/// Appends `c` in decomposed titlecase form.
fn push_folded(out: &mut String, c: char) {
    if c.is_ascii() {
        out.push(c.to_ascii_uppercase());
        return;
    }
    let cp = u32::from(c);
    if (0xAC00..=0xD7A3).contains(&cp) {
        // Hangul syllable: leading, vowel and (if any) trailing jamo.
        let s = cp - 0xAC00;
        let jamo = [0x1100 + s / (21 * 28), 0x1161 + (s % (21 * 28)) / 28];
        for j in jamo.into_iter().filter_map(char::from_u32) {
            out.push(j);
        }
        if s % 28 != 0
            && let Some(t) = char::from_u32(0x11A7 + s % 28)
        {
            out.push(t);
        }
        return;
    }
    match table().get(&cp) {
        Some(seq) => out.extend(seq.iter()),
        None => out.push(c),
    }
}

fn push_replacement(out: &mut String) {
    if !out.ends_with(REPLACEMENT) {
        out.push(REPLACEMENT);
    }
}

/// Appends UTF-8 `bytes` in decomposed titlecase form; each run of
/// invalid bytes becomes one U+FFFD.
pub fn fold_utf8(bytes: &[u8], out: &mut String) {
    for_each_utf8(bytes, |piece| match piece {
        Some(s) => fold_str(s, out),
        None => push_replacement(out),
    });
}

/// Appends `s` in decomposed titlecase form, runs of ASCII in one go.
fn fold_str(mut s: &str, out: &mut String) {
    out.reserve(s.len());
    while !s.is_empty() {
        let ascii = s.bytes().position(|b| !b.is_ascii()).unwrap_or(s.len());
        let (run, rest) = s.split_at(ascii);
        let start = out.len();
        out.push_str(run);
        out[start..].make_ascii_uppercase();
        let mut chars = rest.chars();
        match chars.next() {
            Some(c) => push_folded(out, c),
            None => break,
        }
        s = chars.as_str();
    }
}

/// Appends UTF-8 `bytes` unchanged but for invalid bytes (U+FFFD), as
/// Dovecot keeps text of an encoded-word in a charset it does not know.
pub fn valid_utf8(bytes: &[u8], out: &mut String) {
    for_each_utf8(bytes, |piece| match piece {
        Some(s) => out.push_str(s),
        None => push_replacement(out),
    });
}

/// Calls `f` with each valid run of `bytes` and `None` for each invalid
/// sequence.
fn for_each_utf8(mut bytes: &[u8], mut f: impl FnMut(Option<&str>)) {
    while !bytes.is_empty() {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                f(Some(s));
                return;
            }
            Err(e) => {
                let (good, rest) = bytes.split_at(e.valid_up_to());
                if let Ok(s) = std::str::from_utf8(good) {
                    f(Some(s));
                }
                f(None);
                let bad = e.error_len().unwrap_or(rest.len()).max(1);
                bytes = rest.get(bad..).unwrap_or_default();
            }
        }
    }
}

/// A charset writ can read text in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// UTF-8 and its subset US-ASCII.
    Utf8,
    /// A single-byte charset: ASCII below 0x80, the `charsets.txt` table
    /// of that index above.
    Single(usize),
}

/// A single-byte charset: its names and what 0x80..0xFF are (`None`:
/// not a character in it).
struct Table {
    names: Vec<String>,
    high: Vec<Option<char>>,
}

/// The single-byte charsets of `charsets.txt` (made from Python's
/// codecs): `name alias...|` and 128 hex code points or `-`.
fn tables() -> &'static [Table] {
    static TABLES: OnceLock<Vec<Table>> = OnceLock::new();
    TABLES.get_or_init(|| {
        include_str!("charsets.txt")
            .lines()
            .filter_map(|line| {
                let (names, high) = line.split_once('|')?;
                let high: Vec<Option<char>> = high
                    .split(' ')
                    .map(|h| u32::from_str_radix(h, 16).ok().and_then(char::from_u32))
                    .collect();
                (high.len() == 128).then(|| Table {
                    names: names.split(' ').map(name_key).collect(),
                    high,
                })
            })
            .collect()
    })
}

/// A charset name without case and punctuation (`ISO_8859-2` is
/// `iso88592`).
fn name_key(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

impl Charset {
    /// The charset called `name` (IANA names and the usual aliases, any
    /// case), if writ reads it.
    pub fn named(name: &str) -> Option<Charset> {
        let key = name_key(name);
        const UTF8: [&str; 9] = [
            "utf8",
            "usascii",
            "ascii",
            "us",
            "ansix341968",
            "iso646us",
            "cp367",
            "ibm367",
            "csascii",
        ];
        if UTF8.contains(&key.as_str()) {
            return Some(Charset::Utf8);
        }
        tables()
            .iter()
            .position(|t| t.names.contains(&key))
            .map(Charset::Single)
    }

    fn high(self) -> &'static [Option<char>] {
        match self {
            Charset::Utf8 => &[],
            Charset::Single(i) => tables().get(i).map_or(&[], |t| t.high.as_slice()),
        }
    }

    /// Are `bytes` valid text in this charset (as iconv sees it)?
    pub fn is_valid(self, bytes: &[u8]) -> bool {
        match self {
            Charset::Utf8 => std::str::from_utf8(bytes).is_ok(),
            Charset::Single(_) => {
                let high = self.high();
                bytes.iter().all(|&b| {
                    b < 0x80 || high.get(usize::from(b - 0x80)).is_some_and(Option::is_some)
                })
            }
        }
    }

    /// `bytes` in this charset as (unnormalised) text; bytes that are no
    /// character in it become U+FFFD.
    pub fn decode(self, bytes: &[u8], out: &mut String) {
        match self {
            Charset::Utf8 => valid_utf8(bytes, out),
            Charset::Single(_) => {
                let high = self.high();
                out.extend(bytes.iter().map(|&b| {
                    match b {
                        0..0x80 => char::from(b),
                        _ => high
                            .get(usize::from(b - 0x80))
                            .copied()
                            .flatten()
                            .unwrap_or(REPLACEMENT),
                    }
                }));
            }
        }
    }

    /// `bytes` in this charset, in decomposed titlecase form.
    pub fn fold(self, bytes: &[u8], out: &mut String) {
        match self {
            Charset::Utf8 => fold_utf8(bytes, out),
            Charset::Single(_) => {
                let mut text = String::with_capacity(bytes.len() + bytes.len() / 4);
                self.decode(bytes, &mut text);
                fold_str(&text, out);
            }
        }
    }
}

/// Is this charset name one Dovecot treats as UTF-8 itself (no
/// conversion)?
pub fn is_utf8(name: &str) -> bool {
    ["utf-8", "utf8", "us-ascii", "ascii"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
}
