//! The SMTP DATA fuzz target's entry point on stable: random and
//! smuggling-shaped client bytes into the DATA decoder must hold its
//! invariants (`writ::smtp::fuzz`; `cargo +nightly fuzz run smtp_data`
//! explores further).

use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_hold_the_invariants(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        writ::smtp::fuzz::exercise(&data);
    }

    /// Lines from an alphabet of the bytes that matter: dots, CR, LF.
    #[test]
    fn line_ending_soup_holds_the_invariants(
        head in proptest::collection::vec(any::<u8>(), 4),
        body in proptest::collection::vec(
            prop_oneof![
                Just(&b"\r\n"[..]), Just(&b"\n"[..]), Just(&b"\r"[..]), Just(&b"."[..]),
                Just(&b"x"[..]), Just(&b"\r\n.\r\n"[..]), Just(&b"\0"[..]),
            ],
            0..200,
        ),
    ) {
        let mut input = head;
        for piece in body {
            input.extend_from_slice(piece);
        }
        writ::smtp::fuzz::exercise(&input);
    }
}
