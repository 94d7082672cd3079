//! The fuzz targets' entry points on stable: random and mutated input from
//! both sides into a session rewriting FETCH over sealed mail must never
//! panic (`cargo +nightly fuzz run rewrite` explores further), SEARCHRES
//! `$`s and RETURN options included; sequence
//! sets reach the provider as the client wrote them, and the intake caps
//! pass what is within them unchanged (`cargo +nightly fuzz run intake`).

use proptest::prelude::*;

/// `lines` as the client's bytes (mode 0 of the exercise), CRLF after each.
fn client_lines(lines: &[String]) -> Vec<u8> {
    let mut input = vec![0u8];
    for l in lines {
        input.extend_from_slice(l.as_bytes());
        input.extend_from_slice(b"\r\n");
    }
    input
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn client_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let mut input = vec![0u8];
        input.extend(data);
        writ::imap::fuzz::exercise(&input);
    }

    #[test]
    fn provider_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let mut input = vec![1u8];
        input.extend(data);
        writ::imap::fuzz::exercise(&input);
    }

    #[test]
    fn mutated_sealed_messages_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut input = vec![2u8];
        input.extend(data);
        writ::imap::fuzz::exercise(&input);
    }

    #[test]
    fn imap_like_client_lines_never_panic(
        lines in proptest::collection::vec(
            "[a-z0-9]{1,4} (FETCH|UID FETCH|SEARCH|APPEND|SELECT|LOGIN|STORE) [ -~]{0,60}",
            1..20,
        )
    ) {
        writ::imap::fuzz::exercise(&client_lines(&lines));
    }

    #[test]
    fn searchres_and_return_lines_never_panic(
        lines in proptest::collection::vec(
            "[a-z0-9!.]{1,6} (UID )?(SEARCH|SORT \\(DATE\\) UTF-8|FETCH|STORE|COPY|MOVE|EXPUNGE|THREAD REFS UTF-8) (RETURN \\((SAVE|MIN|MAX|ALL|COUNT| )*\\) )?(\\$|\\(|\\)|OR|NOT|UID|SUBJECT|KEYWORD|LARGER|CHARSET|4294967295:4294967295|4294967295|1:\\*|ALL|\"\\$\"|[ -~]{0,3}| )*",
            1..20,
        )
    ) {
        writ::imap::fuzz::exercise(&client_lines(&lines));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    #[test]
    fn sequence_sets_are_forwarded_as_written(data in proptest::collection::vec(any::<u8>(), 2..400)) {
        writ::imap::fuzz::sequence_sets(&data);
    }

    #[test]
    fn intake_passes_what_is_within_the_caps_unchanged(
        data in proptest::collection::vec(
            prop_oneof![
                Just(b'\n'), Just(b'\r'), Just(b'{'), Just(b'}'), Just(b'+'), Just(b'"'),
                Just(b','), Just(b'~'), Just(b' '), b'0'..=b'9', b'a'..=b'z',
            ],
            1..600,
        )
    ) {
        writ::imap::fuzz::intake(&data);
    }
}
