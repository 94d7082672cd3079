//! The fuzz target's entry point on stable: random and mutated input from
//! both sides into a session rewriting FETCH over sealed mail must never
//! panic (`cargo +nightly fuzz run rewrite` explores further).

use proptest::prelude::*;

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
        let mut input = vec![0u8];
        for l in lines {
            input.extend_from_slice(l.as_bytes());
            input.extend_from_slice(b"\r\n");
        }
        writ::imap::fuzz::exercise(&input);
    }
}
