//! `HEADER.FIELDS (names)` and `HEADER.FIELDS.NOT (names)`: a header block
//! filtered field by field, the way Dovecot's header filter does it.
//!
//! Dovecot splits the header into lines at LF. A line continues the field
//! above it when it starts with a space or tab; a field's name is what comes
//! before the first colon with trailing spaces and tabs removed, or the
//! whole line when there is no colon. Names compare ASCII case-insensitively
//! (as C strings: a NUL ends the name). Kept lines are copied as they are,
//! each ended with CRLF; a last line without any line break stays without
//! one. The filter stops at the first empty line (the end of the header),
//! which it copies as CRLF, or at the end of the data.

/// Which fields a filter keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keep {
    /// `HEADER.FIELDS`: only the named fields.
    Named,
    /// `HEADER.FIELDS.NOT`: every field but the named ones.
    AllBut,
}

/// Filters the header at the start of `data` (which may run on past the
/// header: the filter stops at the first empty line).
///
/// `top`: this is `HEADER.FIELDS` of the message itself, which Dovecot
/// answers from its cache of header fields, adding a CRLF after them: when
/// the header has no empty line, that CRLF ends the output (as the empty
/// line, or as the line break of a last kept line that had none).
pub(super) fn filter(data: &[u8], names: &[&[u8]], keep: Keep, top: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pos = 0;
    // Does the current line continue the previous field?
    let mut continued = false;
    let mut prev_matched = false;
    let mut seen_eoh = false;
    while pos < data.len() {
        let rest = data.get(pos..).unwrap_or_default();
        let (line, newline, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(lf) => (rest.get(..lf).unwrap_or_default(), true, pos + lf + 1),
            None => (rest, false, data.len()),
        };
        // The content without its line break (LF or CRLF).
        let content = match line {
            [head @ .., b'\r'] if newline => head,
            _ => line,
        };
        if newline && content.is_empty() && !continued {
            seen_eoh = true;
            out.extend_from_slice(b"\r\n");
            break;
        }
        let matched = if continued {
            prev_matched
        } else {
            let name = field_name(content);
            names.iter().any(|n| n.eq_ignore_ascii_case(name))
        };
        prev_matched = matched;
        let wanted = match keep {
            Keep::Named => matched,
            Keep::AllBut => !matched,
        };
        if wanted {
            out.extend_from_slice(content);
            if newline {
                out.extend_from_slice(b"\r\n");
            }
        }
        continued = newline && matches!(data.get(next), Some(b' ' | b'\t'));
        pos = next;
    }
    if !seen_eoh && top {
        out.extend_from_slice(b"\r\n");
    }
    // IMAP literals carry no NUL: Dovecot sends 0x80 instead.
    for b in &mut out {
        if *b == 0 {
            *b = 0x80;
        }
    }
    out
}

/// The name a header line gives its field, as Dovecot's header parser sees
/// it: before the first colon, trailing spaces and tabs removed; the whole
/// line without a colon; cut at a NUL (names are compared as C strings).
fn field_name(line: &[u8]) -> &[u8] {
    let mut name = match line.iter().position(|&b| b == b':') {
        Some(colon) => {
            let mut n = line.get(..colon).unwrap_or_default();
            while let [head @ .., b' ' | b'\t'] = n {
                n = head;
            }
            n
        }
        None => line,
    };
    if let Some(nul) = name.iter().position(|&b| b == 0) {
        name = name.get(..nul).unwrap_or_default();
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(data: &[u8], names: &[&str]) -> Vec<u8> {
        let names: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
        filter(data, &names, Keep::Named, false)
    }

    fn all_but(data: &[u8], names: &[&str]) -> Vec<u8> {
        let names: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
        filter(data, &names, Keep::AllBut, false)
    }

    #[test]
    fn folded_and_duplicate_fields_are_kept_whole_and_in_order() {
        let h = b"From: a\r\n\tfolded\r\nsubject: one\r\nFROM: b\r\nX: y\r\n\r\nbody";
        assert_eq!(
            only(h, &["from"]),
            b"From: a\r\n\tfolded\r\nFROM: b\r\n\r\n".to_vec()
        );
        assert_eq!(
            all_but(h, &["From"]),
            b"subject: one\r\nX: y\r\n\r\n".to_vec()
        );
        assert_eq!(only(h, &["absent"]), b"\r\n".to_vec());
    }

    #[test]
    fn names_ignore_space_before_the_colon_and_lines_without_colon_are_names() {
        let h = b"Subject : a\nnocolon\n\tcont\nX:y\n";
        assert_eq!(only(h, &["subject"]), b"Subject : a\r\n".to_vec());
        assert_eq!(only(h, &["NOCOLON"]), b"nocolon\r\n\tcont\r\n".to_vec());
        assert_eq!(
            all_but(h, &["x"]),
            b"Subject : a\r\nnocolon\r\n\tcont\r\n".to_vec()
        );
    }

    #[test]
    fn a_whitespace_line_continues_and_does_not_end_the_header() {
        let h = b"A: 1\r\n \r\nB: 2\r\n\r\nC: 3\r\n";
        assert_eq!(only(h, &["a"]), b"A: 1\r\n \r\n\r\n".to_vec());
        assert_eq!(only(h, &["c"]), b"\r\n".to_vec());
    }

    #[test]
    fn missing_end_of_header() {
        let h = b"A: 1\r\nB: 2";
        assert_eq!(only(h, &["b"]), b"B: 2".to_vec());
        let names: [&[u8]; 1] = [b"b"];
        assert_eq!(filter(h, &names, Keep::Named, true), b"B: 2\r\n".to_vec());
        assert_eq!(
            filter(b"A: 1\n", &names, Keep::Named, true),
            b"\r\n".to_vec()
        );
        assert_eq!(
            filter(b"B: 1\n", &names, Keep::Named, true),
            b"B: 1\r\n\r\n".to_vec()
        );
        assert_eq!(filter(b"", &names, Keep::Named, true), b"\r\n".to_vec());
        assert_eq!(filter(b"", &names, Keep::AllBut, false), b"".to_vec());
    }

    #[test]
    fn nul_ends_a_name_and_is_sent_as_0x80() {
        let h = b"Sub\0ject: x\0y\r\n\r\n";
        assert_eq!(only(h, &["sub"]), b"Sub\x80ject: x\x80y\r\n\r\n".to_vec());
        assert_eq!(only(h, &["subject"]), b"\r\n".to_vec());
    }
}
