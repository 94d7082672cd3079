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
    /// ISO-8859-1: every byte is the code point of the same number.
    Latin1,
    /// Windows-1252: Latin-1 with printable characters in 0x80..0x9F.
    Windows1252,
    /// ISO-8859-15: Latin-1 with eight code points replaced (the euro...).
    Latin9,
}

impl Charset {
    /// The charset called `name` (IANA names and the usual aliases, any
    /// case), if writ reads it.
    pub fn named(name: &str) -> Option<Charset> {
        let n = name.trim().to_ascii_lowercase().replace('_', "-");
        let charset = match n.as_str() {
            "utf-8" | "utf8" | "us-ascii" | "ascii" | "us" | "ansi-x3.4-1968" | "iso646-us"
            | "cp367" | "ibm367" | "csascii" => Charset::Utf8,
            "iso-8859-1" | "iso8859-1" | "iso-8859-1:1987" | "latin1" | "latin-1" | "l1"
            | "cp819" | "ibm819" | "iso-ir-100" | "csisolatin1" => Charset::Latin1,
            "windows-1252" | "cp1252" | "x-cp1252" => Charset::Windows1252,
            "iso-8859-15" | "iso8859-15" | "latin-9" | "latin9" | "csisolatin9" => Charset::Latin9,
            _ => return None,
        };
        Some(charset)
    }

    /// Are `bytes` valid text in this charset (as iconv sees it)?
    pub fn is_valid(self, bytes: &[u8]) -> bool {
        match self {
            Charset::Utf8 => std::str::from_utf8(bytes).is_ok(),
            Charset::Windows1252 => !bytes
                .iter()
                .any(|b| matches!(b, 0x81 | 0x8D | 0x8F | 0x90 | 0x9D)),
            Charset::Latin1 | Charset::Latin9 => true,
        }
    }

    /// `bytes` in this charset as (unnormalised) text.
    pub fn decode(self, bytes: &[u8], out: &mut String) {
        match self {
            Charset::Utf8 => valid_utf8(bytes, out),
            Charset::Latin1 => out.extend(bytes.iter().map(|&b| char::from(b))),
            Charset::Windows1252 => out.extend(bytes.iter().map(|&b| windows_1252(b))),
            Charset::Latin9 => out.extend(bytes.iter().map(|&b| latin9(b))),
        }
    }

    /// `bytes` in this charset, in decomposed titlecase form.
    pub fn fold(self, bytes: &[u8], out: &mut String) {
        match self {
            Charset::Utf8 => fold_utf8(bytes, out),
            _ => {
                let mut text = String::with_capacity(bytes.len() + bytes.len() / 4);
                self.decode(bytes, &mut text);
                fold_str(&text, out);
            }
        }
    }
}

fn windows_1252(b: u8) -> char {
    const HIGH: [u16; 32] = [
        0x20AC, 0x81, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
        0x2039, 0x0152, 0x8D, 0x017D, 0x8F, 0x90, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013,
        0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D, 0x017E, 0x0178,
    ];
    match b {
        0x80..=0x9F => HIGH
            .get(usize::from(b - 0x80))
            .and_then(|&c| char::from_u32(u32::from(c)))
            .unwrap_or(REPLACEMENT),
        _ => char::from(b),
    }
}

fn latin9(b: u8) -> char {
    let c = match b {
        0xA4 => 0x20AC,
        0xA6 => 0x0160,
        0xA8 => 0x0161,
        0xB4 => 0x017D,
        0xB8 => 0x017E,
        0xBC => 0x0152,
        0xBD => 0x0153,
        0xBE => 0x0178,
        _ => u32::from(b),
    };
    char::from_u32(c).unwrap_or(REPLACEMENT)
}

/// Is this charset name one Dovecot treats as UTF-8 itself (no
/// conversion)?
pub fn is_utf8(name: &str) -> bool {
    ["utf-8", "utf8", "us-ascii", "ascii"]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
}
