//! The entry point of the SMTP DATA fuzz target (`fuzz/fuzz_targets/
//! smtp_data.rs`) and of the property test that runs the same code in CI
//! (`tests/smtp_fuzz.rs`): arbitrary client bytes into the DATA decoder.
//! Whatever comes in, the decoder must not panic, and:
//!
//! - how the bytes are split into reads changes nothing;
//! - a clean end of data is exactly `CRLF . CRLF` (or `. CRLF` first);
//!   any other end is flagged for closing the connection, or is the
//!   runaway cap;
//! - no more than twice the size limit is ever consumed, no more than the
//!   limit kept;
//! - a cleanly received message, dot-stuffed again for the provider,
//!   decodes to itself.

use super::data::{DataDecoder, DataFlags, DotStuffer};

/// Decodes `input` in reads of the given sizes (cycled); returns the
/// message, where the data ended, and the flags.
fn decode(input: &[u8], max: u64, reads: &[usize]) -> (Vec<u8>, Option<usize>, DataFlags) {
    let mut d = DataDecoder::new(max);
    let mut out = Vec::new();
    let mut at = 0;
    let mut sizes = reads.iter().copied().cycle();
    while at < input.len() {
        let n = sizes
            .next()
            .unwrap_or(input.len())
            .clamp(1, input.len() - at);
        if let Some(end) = d.feed(&input[at..at + n], &mut out) {
            return (out, Some(at + end), d.flags);
        }
        at += n;
    }
    (out, None, d.flags)
}

/// Runs one input: the first byte sets the size limit, the next three the
/// read sizes, the rest is what the client sends after the 354.
pub fn exercise(data: &[u8]) {
    let [limit, r1, r2, r3, input @ ..] = data else {
        return;
    };
    let max = u64::from(*limit) * 8;
    let (whole, end, flags) = decode(input, max, &[input.len().max(1)]);
    let reads = [usize::from(*r1), usize::from(*r2), usize::from(*r3)];
    let (chunked, chunked_end, chunked_flags) = decode(input, max, &reads);
    assert_eq!(
        (&whole, end, flags),
        (&chunked, chunked_end, chunked_flags),
        "reads of {reads:?} decode differently"
    );
    assert!(whole.len() as u64 <= max, "more kept than the limit");
    let Some(end) = end else {
        assert!(input.len() as u64 <= 2 * max, "runaway data not stopped");
        return;
    };
    assert!(end <= input.len());
    let consumed = &input[..end];
    if flags.runaway {
        assert_eq!(end as u64, 2 * max, "stopped at twice the limit");
        return;
    }
    let clean_end = consumed == b".\r\n" || consumed.ends_with(b"\r\n.\r\n");
    assert_eq!(
        clean_end,
        !flags.bare_newline_end,
        "{:?}: only CRLF.CRLF ends the data without closing",
        String::from_utf8_lossy(&consumed[end.saturating_sub(5)..])
    );
    if flags.acceptable() {
        let mut stuffer = DotStuffer::default();
        let mut wire = Vec::new();
        stuffer.stuff(&whole, &mut wire);
        stuffer.finish(&mut wire);
        let (again, again_end, again_flags) = decode(&wire, max.max(wire.len() as u64), &[]);
        assert_eq!(again_end, Some(wire.len()), "the re-stuffed message ends");
        assert_eq!(again, whole, "the re-stuffed message decodes to itself");
        assert!(again_flags.acceptable());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smuggling_shapes_hold_the_invariants() {
        for body in [
            &b"a\r\n.\r\nMAIL"[..],
            b"a\n.\nMAIL",
            b"a\n.\r\nMAIL",
            b"a\r\n.\nMAIL",
            b"a\r.\r\nb\r\n.\r\n",
            b".\r\n",
            b"..\r\n.\r\n",
        ] {
            for reads in [[1, 2, 3], [7, 1, 255], [0, 0, 0]] {
                let mut input = vec![255, reads[0], reads[1], reads[2]];
                input.extend_from_slice(body);
                exercise(&input);
            }
        }
        // A small limit: too large, then runaway.
        let mut input = vec![1, 3, 5, 7];
        input.extend_from_slice(&[b'x'; 100]);
        exercise(&input);
    }
}
