#![no_main]

use libfuzzer_sys::fuzz_target;

// A stored message, as is or a real sealed one mutated or cut short:
// detection, opening, the summary, and their agreement.
fuzz_target!(|data: &[u8]| writ::envelope::fuzz::sealed(data));
