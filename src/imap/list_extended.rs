//! LIST-EXTENDED (RFC 5258) and LIST-STATUS (RFC 5819) through writ:
//! mailbox names, attributes and counts, no message content.
//!
//! imap-codec 2.0.0-alpha.10 parses neither the extended LIST command
//! (selection options, several patterns, RETURN options) nor the extended
//! data of its answers. So [`super::intake`] reads the first line of each
//! command with [`classify`]: an extended LIST is taken off the stream
//! there (a `NOOP` with its tag goes on to the parser in its place, so
//! the command keeps its place behind plans and held commands), and the
//! session sends the client's own line to the provider
//! ([`super::session`]'s pass-through path) and passes the provider's
//! `* LIST` / `* STATUS` answers imap-codec cannot parse on as they are.
//!
//! What passes is checked here, with an allowlist: the selection options
//! SUBSCRIBED, REMOTE, RECURSIVEMATCH and SPECIAL-USE; the return options
//! SUBSCRIBED, CHILDREN, SPECIAL-USE and STATUS with the items that count
//! messages or name the mailbox's state (MESSAGES, RECENT, UIDNEXT,
//! UIDVALIDITY, UNSEEN, DELETED, HIGHESTMODSEQ). SIZE and DELETED-STORAGE
//! are refused: the provider would count the sealed messages' octets.
//! Anything else is answered BAD, as RFC 5258 §3 has a server answer an
//! option it does not know. An extended LIST must fit one line (no
//! literals: a mailbox name with characters a quoted string cannot carry
//! is refused) and name at most [`MAX_PATTERNS`] patterns.
//!
//! Work is linear in the line (at most the intake's command-text cap) and
//! the scan keeps no stack: options nest one level at most (STATUS).

/// Mailbox patterns one extended LIST may name.
pub const MAX_PATTERNS: usize = 64;

/// What the client is told (tagged BAD) when an extended LIST is refused.
pub mod why {
    pub const SIZE: &str = "STATUS SIZE and DELETED-STORAGE are not offered through writ (the provider counts sealed octets)";
    pub const OPTION: &str = "LIST option not supported: selection SUBSCRIBED REMOTE RECURSIVEMATCH SPECIAL-USE, return SUBSCRIBED CHILDREN SPECIAL-USE STATUS";
    pub const STATUS_ITEM: &str = "STATUS item not supported in LIST RETURN";
    pub const LITERAL: &str =
        "LIST with options or several patterns takes no literals through writ: quote the names";
    pub const PATTERNS: &str = "Too many LIST patterns: at most 64";
    pub const SYNTAX: &str = "Malformed extended LIST";
}

const SELECTION: &[&str] = &["SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"];
const RETURN: &[&str] = &["SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"];
const STATUS_ITEMS: &[&str] = &[
    "MESSAGES",
    "RECENT",
    "UIDNEXT",
    "UIDVALIDITY",
    "UNSEEN",
    "DELETED",
    "HIGHESTMODSEQ",
];
const SIZES: &[&str] = &["SIZE", "DELETED-STORAGE"];

/// What the first line of a command is, as far as LIST goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// Not an extended LIST (plain LIST included): parsed as usual.
    Other,
    /// An extended LIST within the allowlist: pass the line on as it is.
    Extended,
    /// An extended LIST writ refuses (BAD with this text).
    Refused(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Open,
    Close,
    /// An atom or a quoted string (its raw bytes, quotes included).
    Word(&'a [u8]),
    /// A literal announcement `{N}` / `{N+}`.
    Literal,
}

/// Splits a line (without its CRLF) into tokens; `None` if malformed.
fn tokens(line: &[u8]) -> Option<Vec<Token<'_>>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b' ' => i += 1,
            b'(' => {
                out.push(Token::Open);
                i += 1;
            }
            b')' => {
                out.push(Token::Close);
                i += 1;
            }
            b'"' => {
                let start = i;
                i += 1;
                loop {
                    match line.get(i)? {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
                i += 1;
                out.push(Token::Word(line.get(start..i)?));
            }
            b'{' => {
                out.push(Token::Literal);
                i = line.len();
            }
            b if b < 0x20 || b == 0x7f => return None,
            _ => {
                let start = i;
                while i < line.len() && !matches!(line[i], b' ' | b'(' | b')' | b'"' | b'{') {
                    i += 1;
                }
                out.push(Token::Word(&line[start..i]));
            }
        }
    }
    Some(out)
}

fn is(word: &[u8], name: &str) -> bool {
    word.eq_ignore_ascii_case(name.as_bytes())
}

fn one_of(word: &[u8], names: &[&str]) -> bool {
    names.iter().any(|n| is(word, n))
}

/// Reads a complete first line (LF included): is it an extended LIST?
pub fn classify(line: &[u8]) -> Line {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // Cheap test first: "<tag> LIST ".
    let Some(sp) = line.iter().position(|&b| b == b' ') else {
        return Line::Other;
    };
    if !line
        .get(sp + 1..sp + 6)
        .is_some_and(|w| w.eq_ignore_ascii_case(b"LIST "))
    {
        return Line::Other;
    }
    let Some(toks) = tokens(&line[sp + 6..]) else {
        return Line::Other;
    };
    match extended(&toks) {
        Ok(false) => Line::Other,
        Ok(true) => Line::Extended,
        Err(why) => Line::Refused(why),
    }
}

/// `Ok(true)` for a valid extended LIST, `Ok(false)` for something else
/// (plain LIST, or malformed before anything extended was seen: left to
/// the parser), `Err` for an extended LIST writ refuses.
fn extended(toks: &[Token<'_>]) -> Result<bool, &'static str> {
    let mut it = toks.iter().copied().peekable();
    let mut ext = false;
    // Selection options.
    if it.peek() == Some(&Token::Open) {
        it.next();
        ext = true;
        loop {
            match it.next() {
                Some(Token::Close) => break,
                Some(Token::Word(w)) if one_of(w, SELECTION) => {}
                Some(Token::Word(_)) => return Err(why::OPTION),
                Some(Token::Literal) => return Err(why::LITERAL),
                _ => return Err(why::SYNTAX),
            }
        }
    }
    // Reference name.
    match it.next() {
        Some(Token::Word(_)) => {}
        Some(Token::Literal) if ext => return Err(why::LITERAL),
        _ if ext => return Err(why::SYNTAX),
        _ => return Ok(false),
    }
    // One pattern, or several in parentheses.
    match it.next() {
        Some(Token::Word(_)) => {}
        Some(Token::Open) => {
            ext = true;
            let mut n = 0;
            loop {
                match it.next() {
                    Some(Token::Close) if n > 0 => break,
                    Some(Token::Word(_)) => {
                        n += 1;
                        if n > MAX_PATTERNS {
                            return Err(why::PATTERNS);
                        }
                    }
                    Some(Token::Literal) => return Err(why::LITERAL),
                    _ => return Err(why::SYNTAX),
                }
            }
        }
        Some(Token::Literal) if ext => return Err(why::LITERAL),
        _ if ext => return Err(why::SYNTAX),
        _ => return Ok(false),
    }
    // Return options.
    match it.next() {
        None => return Ok(ext),
        Some(Token::Word(w)) if is(w, "RETURN") => {}
        Some(Token::Literal) if ext => return Err(why::LITERAL),
        _ if ext => return Err(why::SYNTAX),
        _ => return Ok(false),
    }
    if it.next() != Some(Token::Open) {
        return Err(why::SYNTAX);
    }
    loop {
        match it.next() {
            Some(Token::Close) => break,
            Some(Token::Word(w)) if is(w, "STATUS") => status_items(&mut it)?,
            Some(Token::Word(w)) if one_of(w, RETURN) => {}
            Some(Token::Word(_)) => return Err(why::OPTION),
            Some(Token::Literal) => return Err(why::LITERAL),
            _ => return Err(why::SYNTAX),
        }
    }
    match it.next() {
        None => Ok(true),
        Some(Token::Literal) => Err(why::LITERAL),
        Some(_) => Err(why::SYNTAX),
    }
}

/// The `(item ...)` after STATUS in the return options.
fn status_items<'a>(it: &mut impl Iterator<Item = Token<'a>>) -> Result<(), &'static str> {
    if it.next() != Some(Token::Open) {
        return Err(why::SYNTAX);
    }
    let mut n = 0;
    loop {
        match it.next() {
            Some(Token::Close) if n > 0 => return Ok(()),
            Some(Token::Word(w)) if one_of(w, STATUS_ITEMS) => n += 1,
            Some(Token::Word(w)) if one_of(w, SIZES) => return Err(why::SIZE),
            Some(Token::Word(_)) => return Err(why::STATUS_ITEM),
            _ => return Err(why::SYNTAX),
        }
    }
}

/// Is `bytes` (a response the parser refused) an untagged LIST or STATUS,
/// which an extended LIST in flight may be answered with?
pub fn is_list_answer(bytes: &[u8]) -> bool {
    let Some(rest) = bytes.strip_prefix(b"* ") else {
        return false;
    };
    let word = rest.get(..7).unwrap_or(rest);
    (word.len() >= 5 && word[..5].eq_ignore_ascii_case(b"LIST "))
        || (word.len() == 7 && word.eq_ignore_ascii_case(b"STATUS "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Line {
        classify(format!("{s}\r\n").as_bytes())
    }

    #[test]
    fn plain_list_is_left_to_the_parser() {
        assert_eq!(c("a LIST \"\" \"*\""), Line::Other);
        assert_eq!(c("a list \"\" %"), Line::Other);
        assert_eq!(c("a LIST \"\" {5}"), Line::Other);
        assert_eq!(c("a LSUB \"\" (\"*\")"), Line::Other);
        assert_eq!(c("a LIST"), Line::Other);
        assert_eq!(c("a LIST \"\" \"*\" junk"), Line::Other);
        assert_eq!(c("a NOOP"), Line::Other);
    }

    #[test]
    fn extended_forms_pass() {
        for ok in [
            "a LIST \"\" \"*\" RETURN (SPECIAL-USE SUBSCRIBED CHILDREN STATUS (MESSAGES UNSEEN))",
            "a LIST (SUBSCRIBED RECURSIVEMATCH) \"\" %",
            "a LIST () \"\" (\"INBOX\" \"Sent\" %)",
            "a list \"\" * return ()",
            "a LIST (special-use) \"\" \"*\" RETURN (STATUS (UIDNEXT UIDVALIDITY HIGHESTMODSEQ DELETED RECENT))",
            "a LIST \"\" \"a\\\"b\" RETURN (CHILDREN)",
        ] {
            assert_eq!(c(ok), Line::Extended, "{ok}");
        }
    }

    #[test]
    fn sizes_unknown_options_literals_and_junk_are_refused() {
        let cases = [
            ("a LIST \"\" * RETURN (STATUS (MESSAGES SIZE))", why::SIZE),
            ("a LIST \"\" * RETURN (STATUS (DELETED-STORAGE))", why::SIZE),
            ("a LIST \"\" * RETURN (STATUS (X-FOO))", why::STATUS_ITEM),
            ("a LIST \"\" * RETURN (MYRIGHTS)", why::OPTION),
            ("a LIST (X-UNKNOWN) \"\" *", why::OPTION),
            ("a LIST (SUBSCRIBED) \"\" {5}", why::LITERAL),
            ("a LIST \"\" (\"a\" {5}", why::LITERAL),
            ("a LIST \"\" * RETURN (STATUS ())", why::SYNTAX),
            ("a LIST \"\" * RETURN (STATUS (MESSAGES)", why::SYNTAX),
            ("a LIST \"\" * RETURN (CHILDREN) extra", why::SYNTAX),
            ("a LIST \"\" ()", why::SYNTAX),
            ("a LIST \"\" * RETURN CHILDREN", why::SYNTAX),
        ];
        for (line, why) in cases {
            assert_eq!(c(line), Line::Refused(why), "{line}");
        }
        let many = format!("a LIST \"\" ({})", vec!["x"; MAX_PATTERNS + 1].join(" "));
        assert_eq!(c(&many), Line::Refused(why::PATTERNS));
        let most = format!("a LIST \"\" ({})", vec!["x"; MAX_PATTERNS].join(" "));
        assert_eq!(c(&most), Line::Extended);
    }

    #[test]
    fn list_answers_are_recognised() {
        assert!(is_list_answer(
            b"* LIST (\\HasChildren) \".\" a (\"CHILDINFO\" (\"SUBSCRIBED\"))\r\n"
        ));
        assert!(is_list_answer(b"* status INBOX (MESSAGES 1)\r\n"));
        assert!(!is_list_answer(b"* 1 FETCH (BODY[] {3}\r\nabc)\r\n"));
        assert!(!is_list_answer(b"* LSUB () \".\" a\r\n"));
        assert!(!is_list_answer(b"a OK LIST done\r\n"));
    }
}
