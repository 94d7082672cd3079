#![no_main]

use libfuzzer_sys::fuzz_target;

// The summary's JSON and its conversion into the tree, then every reader
// of a summary (BODYSTRUCTURE, sizes, sections, clone, round trip).
fuzz_target!(|data: &[u8]| {
    writ::envelope::fuzz::summary_json(data);
});
