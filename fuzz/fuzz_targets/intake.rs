#![no_main]

use libfuzzer_sys::fuzz_target;

// The first byte picks the property: sequence sets forwarded as written,
// or the intake caps passing what is within them unchanged.
fuzz_target!(|data: &[u8]| {
    if let Some((&which, rest)) = data.split_first() {
        if which % 2 == 0 {
            writ::imap::fuzz::sequence_sets(rest);
        } else {
            writ::imap::fuzz::intake(rest);
        }
    }
});
