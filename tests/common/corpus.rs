//! The message corpus under `tests/corpus/`.

use std::path::Path;

/// The `.eml` files of `tests/corpus/<sub>`, named `<sub>/<file name>`,
/// sorted by name.
pub fn eml_files(sub: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(sub);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| {
            let name = format!("{sub}/{}", p.file_name().expect("name").to_string_lossy());
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name, bytes)
        })
        .collect();
    out.sort();
    out
}

/// Whether `m` has a CR not followed by LF. Dovecot's maildir turns a lone
/// CR into a line break when it saves a message, so what Dovecot serves of
/// such a message is not the message itself.
pub fn has_lone_cr(m: &[u8]) -> bool {
    m.iter()
        .enumerate()
        .any(|(i, &b)| b == b'\r' && m.get(i + 1) != Some(&b'\n'))
}
