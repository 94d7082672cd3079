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
//! Charsets other than UTF-8 are of two kinds, read as the glibc iconv
//! that Dovecot converts with reads them:
//!
//! - Single-byte ones, listed in `charsets.txt` (`name alias...|` then
//!   how the upper half is read). Most are decoded by `mail-parser`'s
//!   decoder of that name (`|mail-parser`), whose table equals glibc's
//!   for them, undefined bytes (U+FFFD) included: ISO-8859-2 to -6, -8 to
//!   -10, -13 to -15, windows-1250 to -1258, KOI8-R, KOI8-U, IBM866.
//!   Own tables (128 hex code points, `-` where a byte is no character,
//!   made from Python's codecs, which agree with glibc on these) for the
//!   rest, where `mail-parser` reads other characters than glibc
//!   (test `mail_parser_differs_from_glibc_here`): ISO-8859-1 (it
//!   reads windows-1252), ISO-8859-7 (no €, ₯, ͺ of 2003), ISO-8859-11
//!   (no C1 controls, no NBSP), ISO-8859-16 (0xA5 and 0xAB swapped),
//!   windows-874 (C1 controls where glibc refuses the byte), macintosh
//!   (the table before Apple's 1998 changes: Δ for ∆, ¤ for €).
//! - The multibyte CJK ones of `cjk.txt`, decoded by `encoding_rs` (the
//!   WHATWG Encoding Standard) with glibc's names and glibc's differences
//!   put back; see [`Multibyte`]. Own code, not `mail-parser`'s decoders
//!   of these (`encoding_rs` with replacement): Dovecot restarts after
//!   a bad byte and reads some lone bytes as C1 controls, which needs
//!   `encoding_rs`'s errors; with `mail-parser`'s, the search oracle's
//!   Shift_JIS, ISO-2022-JP, EUC-KR and GB2312 messages match other
//!   searches than Dovecot's.

use std::collections::HashMap;
use std::sync::OnceLock;

use encoding_rs::{DecoderResult, Encoding};
use mail_parser::decoders::charsets::DecoderFnc;
use mail_parser::decoders::charsets::map::charset_decoder;

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
    /// A multibyte charset: the [`Multibyte`] of that index.
    Multi(usize),
}

/// A single-byte charset: its names and how its upper half is read.
struct Table {
    names: Vec<String>,
    high: High,
}

/// How a single-byte charset reads 0x80..0xFF.
enum High {
    /// `mail-parser`'s decoder, the same as glibc's for this charset
    /// (U+FFFD for a byte that is no character in it).
    MailParser(DecoderFnc),
    /// Own table, where `mail-parser`'s differs from glibc's: the
    /// character of each byte (`None`: not a character in it).
    Own(Vec<Option<char>>),
}

/// The single-byte charsets of `charsets.txt`: `name alias...|` and
/// `mail-parser` (its decoder for the first name) or 128 hex code points
/// or `-`.
fn tables() -> &'static [Table] {
    static TABLES: OnceLock<Vec<Table>> = OnceLock::new();
    TABLES.get_or_init(|| {
        include_str!("charsets.txt")
            .lines()
            .filter_map(|line| {
                let (names, high) = line.split_once('|')?;
                let high = if high == "mail-parser" {
                    High::MailParser(charset_decoder(names.split(' ').next()?.as_bytes())?)
                } else {
                    let high: Vec<Option<char>> = high
                        .split(' ')
                        .map(|h| u32::from_str_radix(h, 16).ok().and_then(char::from_u32))
                        .collect();
                    if high.len() != 128 {
                        return None;
                    }
                    High::Own(high)
                };
                Some(Table {
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

/// A multibyte charset, as glibc's iconv (and so Dovecot) reads it: one
/// line of `cjk.txt`, `NAME ALIAS...|label|from:to ...|lone bytes`.
///
/// - The names are those of one glibc converter module (its
///   `gconv-modules` aliases), compared as glibc's `iconv_open` compares
///   them ([`glibc_key`]): so `Shift_JIS`, `SJIS`, `MS_Kanji`, `GB2312`,
///   `EUC-CN`, `csISO2022JP`, `CP949` are known, but not the WHATWG-only
///   `x-sjis`, `ks_c_5601-1987`, `x-gbk` or `shiftjis`, which Dovecot
///   does not convert either (it refuses them as SEARCH CHARSET and reads
///   text labelled with them as UTF-8). Not read: ISO-2022-JP-2 and -3,
///   EUC-JP-MS, EUC-TW, ISO-2022-KR and -CN, JOHAB, the IBM code pages.
/// - `label` is the `encoding_rs` encoding that decodes them. Where
///   WHATWG reads a wider charset than glibc's module (`GB2312` as GBK,
///   `EUC-KR` as Windows-949 (UHC), `Shift_JIS` as Windows-31J, `Big5` as
///   Big5-HKSCS, ISO-2022-JP with the NEC row 13), writ keeps the wider
///   one: it decodes every sequence glibc decodes to the same character
///   (but for the remaps below), and the extra characters (GBK hanzi,
///   UHC hangul, NEC/IBM symbols like `①` and `㈱`) are the ones that
///   real mail labelled with the narrower name carries. Dovecot turns
///   them into U+FFFD (and then reads the next byte afresh), so writ
///   finds text there that Dovecot does not, and takes as valid search
///   strings some that Dovecot refuses as invalid.
/// - `from:to` (hex code points): characters that glibc decodes
///   differently from the same bytes, put back in glibc's form after
///   decoding (Shift_JIS `\` is `¥` and `~` is `‾`, the JIS wave dash is
///   U+301C, GB2312's middle dot U+30FB, the ETEN extensions of Big5 are
///   private-use characters...). The lists were made by decoding every
///   one- and two-byte sequence (EUC-JP's three-byte and GB18030's
///   four-byte ones too; for ISO-2022-JP every JIS X 0208 pair) with both
///   `encoding_rs` and glibc 2.41's iconv, taking for each character that
///   `encoding_rs` gives the shortest sequence that glibc also decodes.
/// - `lone bytes` (hex, ranges `a-b`): bytes that glibc reads alone as the
///   C1 control of that value where `encoding_rs` sees an error (0x80 in
///   Big5, 0x80..0x9F in EUC-KR and EUC-JP).
///
/// Not put back: GB18030 0xA3A0 is U+E5E5 to glibc (the ideographic space
/// U+3000 stays); glibc's `EUC-KR` has 0xA2E8 `㉾`; glibc's ISO-2022-JP
/// keeps an unknown escape sequence (and ESC ( I) as text and allows a
/// line break inside JIS X 0208 text, where `encoding_rs` sees an error.
///
/// Bytes that are not text become one U+FFFD per run, as Dovecot writes
/// them: decoding goes on at the byte after the first bad one, as Dovecot
/// restarts iconv there (ISO-2022-JP, which has state, goes on as
/// `encoding_rs` resynchronises). A sequence cut off by the end of the
/// text is dropped, as Dovecot drops it from an encoded-word (from a body
/// part Dovecot carries it over to the next body it decodes, even in the
/// next message it searches: a bug writ does not copy).
pub struct Multibyte {
    names: Vec<String>,
    encoding: &'static Encoding,
    remap: HashMap<char, char>,
    /// Bytes that glibc reads alone as the C1 control of that value.
    lone: Vec<u8>,
}

/// The multibyte charsets of `cjk.txt`.
fn multibytes() -> &'static [Multibyte] {
    static CJK: OnceLock<Vec<Multibyte>> = OnceLock::new();
    CJK.get_or_init(|| {
        include_str!("cjk.txt")
            .lines()
            .filter_map(|line| {
                let mut fields = line.split('|');
                let (names, label, remap) = (fields.next()?, fields.next()?, fields.next()?);
                let lone = fields.next().unwrap_or_default();
                let hex = |h: &str| u32::from_str_radix(h, 16).ok().and_then(char::from_u32);
                let byte = |h: &str| u8::from_str_radix(h, 16).ok();
                Some(Multibyte {
                    names: names.split(' ').map(glibc_key).collect(),
                    encoding: Encoding::for_label(label.as_bytes())?,
                    remap: remap
                        .split(' ')
                        .filter_map(|pair| {
                            let (from, to) = pair.split_once(':')?;
                            Some((hex(from)?, hex(to)?))
                        })
                        .collect(),
                    lone: lone
                        .split(' ')
                        .filter_map(|range| {
                            let (first, last) = range.split_once('-').unwrap_or((range, range));
                            Some(byte(first)?..=byte(last)?)
                        })
                        .flatten()
                        .collect(),
                })
            })
            .collect()
    })
}

/// A charset name as glibc's `iconv_open` looks it up: what comes before
/// a `/` (its `//TRANSLIT` and the like), upper case, of which only
/// letters, digits and `_-.,:` count (`ISO 2022 JP` is `ISO2022JP`, but
/// `Shift_JIS` is not `SHIFTJIS`).
fn glibc_key(name: &str) -> String {
    name.split('/')
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "_-.,:".contains(*c))
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

impl Multibyte {
    /// Appends `bytes` decoded as Dovecot decodes them (see [`Multibyte`]);
    /// whether they were all text (nothing replaced, nothing cut off).
    fn convert(&self, bytes: &[u8], out: &mut String) -> bool {
        let start = out.len();
        // Stateless charsets start afresh after a bad byte, as Dovecot
        // restarts iconv there; ISO-2022-JP keeps its shift state.
        let restart = self.encoding != encoding_rs::ISO_2022_JP;
        let mut decoder = self.encoding.new_decoder_without_bom_handling();
        let mut src = bytes;
        let mut clean = true;
        // Where the last U+FFFD ended: one per run of bad bytes.
        let mut replaced = None;
        loop {
            let room = decoder
                .max_utf8_buffer_length_without_replacement(src.len())
                .unwrap_or(src.len());
            out.reserve(room.max(16));
            // Not the last input: a sequence cut off at the end stays in
            // the decoder and is dropped, as Dovecot drops it.
            let (result, read) = decoder.decode_to_string_without_replacement(src, out, false);
            let rest = src.get(read..).unwrap_or_default();
            match result {
                DecoderResult::InputEmpty => break,
                DecoderResult::OutputFull => src = rest,
                DecoderResult::Malformed(bad, extra) if restart => {
                    let bad_start = read
                        .saturating_sub(usize::from(extra))
                        .saturating_sub(usize::from(bad));
                    match src.get(bad_start).and_then(|&b| self.lone(b)) {
                        Some(c) => out.push(c),
                        None => {
                            clean = false;
                            if replaced != Some(out.len()) {
                                out.push(REPLACEMENT);
                                replaced = Some(out.len());
                            }
                        }
                    }
                    src = src.get(bad_start + 1..).unwrap_or_default();
                    decoder = self.encoding.new_decoder_without_bom_handling();
                }
                DecoderResult::Malformed(..) => {
                    clean = false;
                    if replaced != Some(out.len()) {
                        out.push(REPLACEMENT);
                        replaced = Some(out.len());
                    }
                    src = rest;
                }
            }
        }
        let mut tail = String::with_capacity(16);
        if let (DecoderResult::Malformed(..), _) =
            decoder.decode_to_string_without_replacement(&[], &mut tail, true)
        {
            clean = false;
        }
        if !self.remap.is_empty() && out[start..].chars().any(|c| self.remap.contains_key(&c)) {
            let decoded: String = out[start..]
                .chars()
                .map(|c| self.remap.get(&c).copied().unwrap_or(c))
                .collect();
            out.truncate(start);
            out.push_str(&decoded);
        }
        clean
    }

    /// What glibc reads a byte as when it stands alone where `encoding_rs`
    /// sees an error: a C1 control (`EUC-JP`, `EUC-KR`, `Big5`).
    fn lone(&self, b: u8) -> Option<char> {
        self.lone.contains(&b).then(|| char::from(b))
    }
}

impl Charset {
    /// The charset called `name` (any case), if writ reads it: for UTF-8
    /// and the single-byte charsets, IANA names and the usual aliases,
    /// punctuation disregarded; for the multibyte ones, glibc's names
    /// ([`Multibyte`]).
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
        if let Some(i) = tables().iter().position(|t| t.names.contains(&key)) {
            return Some(Charset::Single(i));
        }
        let key = glibc_key(name);
        multibytes()
            .iter()
            .position(|m| m.names.contains(&key))
            .map(Charset::Multi)
    }

    fn multibyte(self) -> Option<&'static Multibyte> {
        match self {
            Charset::Multi(i) => multibytes().get(i),
            _ => None,
        }
    }

    fn high(self) -> Option<&'static High> {
        match self {
            Charset::Utf8 | Charset::Multi(_) => None,
            Charset::Single(i) => tables().get(i).map(|t| &t.high),
        }
    }

    /// Are `bytes` valid text in this charset (as iconv sees it)?
    pub fn is_valid(self, bytes: &[u8]) -> bool {
        match self {
            Charset::Utf8 => std::str::from_utf8(bytes).is_ok(),
            Charset::Single(_) => match self.high() {
                Some(High::MailParser(decode)) => !decode(bytes).contains(REPLACEMENT),
                Some(High::Own(high)) => bytes.iter().all(|&b| {
                    b < 0x80 || high.get(usize::from(b - 0x80)).is_some_and(Option::is_some)
                }),
                None => bytes.is_ascii(),
            },
            Charset::Multi(_) => self
                .multibyte()
                .is_some_and(|m| m.convert(bytes, &mut String::new())),
        }
    }

    /// `bytes` in this charset as (unnormalised) text; bytes that are no
    /// character in it become U+FFFD.
    pub fn decode(self, bytes: &[u8], out: &mut String) {
        match self {
            Charset::Utf8 => valid_utf8(bytes, out),
            Charset::Single(_) => match self.high() {
                Some(High::MailParser(decode)) => out.push_str(&decode(bytes)),
                Some(High::Own(high)) => out.extend(bytes.iter().map(|&b| {
                    match b {
                        0..0x80 => char::from(b),
                        _ => high
                            .get(usize::from(b - 0x80))
                            .copied()
                            .flatten()
                            .unwrap_or(REPLACEMENT),
                    }
                })),
                None => valid_utf8(bytes, out),
            },
            Charset::Multi(_) => match self.multibyte() {
                Some(m) => {
                    m.convert(bytes, out);
                }
                None => valid_utf8(bytes, out),
            },
        }
    }

    /// `bytes` in this charset, in decomposed titlecase form.
    pub fn fold(self, bytes: &[u8], out: &mut String) {
        match self {
            Charset::Utf8 => fold_utf8(bytes, out),
            Charset::Single(_) | Charset::Multi(_) => {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_charset_line_is_read() {
        let lines = include_str!("charsets.txt").lines().count();
        assert_eq!(tables().len(), lines, "a charsets.txt line did not load");
        let by_mail_parser = tables()
            .iter()
            .filter(|t| matches!(t.high, High::MailParser(_)))
            .count();
        assert_eq!(by_mail_parser, 23);
    }

    /// Each own table reads some byte otherwise than `mail-parser`'s
    /// decoder of that name (which would make writ's answers differ from
    /// Dovecot's there); when one no longer does, it can go.
    #[test]
    fn mail_parser_differs_from_glibc_here() {
        let decoded = |name: &str, b: u8| {
            let mut out = String::new();
            Charset::named(name).unwrap().decode(&[b], &mut out);
            out
        };
        let mail_parser = |name: &str, b: u8| charset_decoder(name.as_bytes()).unwrap()(&[b]);
        for (name, byte, glibc, theirs) in [
            ("iso-8859-1", 0x80, "\u{80}", "€"),
            ("iso-8859-7", 0xA4, "€", "\u{FFFD}"),
            ("iso-8859-11", 0xA0, "\u{A0}", "\u{FFFD}"),
            ("iso-8859-16", 0xA5, "„", "«"),
            ("windows-874", 0x81, "\u{FFFD}", "\u{81}"),
            ("macintosh", 0xDB, "€", "¤"),
        ] {
            assert_eq!(decoded(name, byte), glibc, "{name} {byte:02x}");
            assert_eq!(mail_parser(name, byte), theirs, "{name} {byte:02x}");
        }
        for (line, table) in include_str!("charsets.txt").lines().zip(tables()) {
            let High::Own(high) = &table.high else {
                continue;
            };
            let name = line.split([' ', '|']).next().unwrap();
            let theirs = charset_decoder(name.as_bytes()).unwrap();
            let differs = (0x80u8..=0xFF).any(|b| {
                let ours = high[usize::from(b - 0x80)].unwrap_or(REPLACEMENT);
                theirs(&[b]) != ours.to_string()
            });
            assert!(differs, "{name}: mail-parser reads it as glibc does");
        }
    }
}
