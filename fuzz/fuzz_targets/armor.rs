#![no_main]

use libfuzzer_sys::fuzz_target;

// Part 1's body as fetched: transfer decoding, armor, age, the summary.
fuzz_target!(|data: &[u8]| writ::envelope::fuzz::armor(data));
