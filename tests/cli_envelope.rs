//! `writ seal` and `writ open` end to end, and interop with the reference
//! `age` CLI: the payload of a sealed message decrypts with `age -d` and an
//! identity exported by writ, or an `age-keygen` identity configured as an
//! extra recipient.

mod common;

use std::process::Command;

use common::cli::Env;
use common::process::output_with_stdin;
use common::writ::{age_decrypt, age_keygen, payload_armor};

const MESSAGE: &[u8] = b"From: ann@example.test\r\nTo: bob@example.test\r\nSubject: quarterly figures\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nRevenue is up. \xc3\xa9\r\nbare LF line\nlast line without break";

impl Env {
    /// A keyring and the message `m.eml`.
    fn with_message() -> Env {
        let env = Env::new();
        std::fs::write(env.path("m.eml"), MESSAGE).unwrap();
        env.init_keyring();
        env
    }

    fn epoch(&self) -> String {
        let list = self.ok_text(&["keys", "list"]);
        list.lines()
            .find(|l| l.starts_with('*'))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .to_string()
    }
}

#[test]
fn seal_and_open_round_trip_from_file_and_stdin() {
    let env = Env::with_message();
    let sealed = env.ok(&["seal", "m.eml"]).stdout;
    let text = String::from_utf8_lossy(&sealed);
    assert!(text.starts_with(&format!("X-Writ: v=1; key={}\r\n", env.epoch())));
    assert!(!text.contains("quarterly") && !text.contains("Revenue"));
    std::fs::write(env.path("sealed.eml"), &sealed).unwrap();
    let opened = env
        .ok(&["--passphrase-file", "pw", "open", "sealed.eml"])
        .stdout;
    assert_eq!(opened, MESSAGE);
    // stdin to stdout, and the global option after the subcommand.
    let sealed2 = env.ok_stdin(&["seal"], MESSAGE).stdout;
    let opened2 = env
        .ok_stdin(&["open", "--passphrase-file", "pw", "-"], &sealed2)
        .stdout;
    assert_eq!(opened2, MESSAGE);
    // Sealing again changes nothing.
    assert_eq!(env.ok_stdin(&["seal"], &sealed).stdout, sealed);
    // The summary is readable JSON with the size of M.
    let summary = env
        .ok(&["--passphrase-file", "pw", "open", "--summary", "sealed.eml"])
        .stdout;
    let v: serde_json::Value = serde_json::from_slice(&summary).unwrap();
    assert_eq!(v["size"], MESSAGE.len());
}

#[test]
fn payload_opens_with_the_reference_age_cli_and_an_exported_identity() {
    let env = Env::with_message();
    let epoch = env.epoch();
    let sealed = env.ok(&["seal", "m.eml"]).stdout;
    let identity = env
        .ok(&["--passphrase-file", "pw", "keys", "export-identity", &epoch])
        .stdout;
    std::fs::write(env.path("identity.txt"), &identity).unwrap();
    assert_eq!(
        age_decrypt(&env.path("identity.txt"), &payload_armor(&sealed)),
        MESSAGE
    );
}

#[test]
fn extra_recipient_from_age_keygen_opens_with_age() {
    let env = Env::with_message();
    let (kg, recipient) = age_keygen(env.dir(), "kg.txt");
    std::fs::write(
        env.path("writ.toml"),
        format!("[seal]\nextra_recipients = [\"{recipient}\"]\n"),
    )
    .unwrap();
    let sealed = env.ok(&["--config", "writ.toml", "seal", "m.eml"]).stdout;
    assert_eq!(age_decrypt(&kg, &payload_armor(&sealed)), MESSAGE);
    // Without the extra recipient, that identity cannot open it.
    let plain_sealed = env.ok(&["seal", "m.eml"]).stdout;
    let out = output_with_stdin(
        Command::new("age").args(["-d", "-i"]).arg(&kg),
        &payload_armor(&plain_sealed),
    )
    .unwrap();
    assert!(!out.status.success());
}

#[test]
fn open_with_the_wrong_passphrase_fails_cleanly() {
    let env = Env::with_message();
    let sealed = env.ok(&["seal", "m.eml"]).stdout;
    let err = env.fail_unchanged_stdin(&["--passphrase-file", "bad", "open"], &sealed);
    assert!(err.contains("passphrase"), "{err}");
}

#[test]
fn open_under_an_unknown_epoch_names_it() {
    let env = Env::with_message();
    let other = Env::with_message();
    let sealed = other.ok(&["seal", "m.eml"]).stdout;
    let err = env.fail_unchanged_stdin(&["--passphrase-file", "pw", "open"], &sealed);
    assert!(
        err.contains(&other.epoch()) && err.contains("epoch"),
        "{err}"
    );
}

#[test]
fn open_of_damaged_armor_says_damaged() {
    let env = Env::with_message();
    let sealed = env.ok(&["seal", "m.eml"]).stdout;
    let mut text = String::from_utf8(sealed).unwrap();
    // Replace a run of base64 in the payload with characters armor never has.
    let at = text.rfind("-----END AGE").unwrap() - 40;
    text.replace_range(at..at + 4, "!!!!");
    let err = env.fail_unchanged_stdin(&["--passphrase-file", "pw", "open"], text.as_bytes());
    assert!(err.contains("damaged"), "{err}");
    // Truncated in the middle of the payload.
    let cut = &text.as_bytes()[..text.len() - 300];
    let err = env.fail_unchanged_stdin(&["--passphrase-file", "pw", "open"], cut);
    assert!(err.contains("damaged"), "{err}");
}

#[test]
fn open_of_a_plain_message_says_not_sealed() {
    let env = Env::with_message();
    let err = env.fail_unchanged(&["--passphrase-file", "pw", "open", "m.eml"]);
    assert!(err.contains("not sealed"), "{err}");
}

#[test]
fn seal_and_open_without_a_keyring_fail_cleanly() {
    let env = Env::with_message();
    let err = env.fail_unchanged(&["--keys", "nowhere", "seal", "m.eml"]);
    assert!(
        err.contains("no keyring") && err.contains("writ keys init"),
        "{err}"
    );
    let sealed = env.ok(&["seal", "m.eml"]).stdout;
    let err = env.fail_unchanged_stdin(
        &["--keys", "nowhere", "--passphrase-file", "pw", "open"],
        &sealed,
    );
    assert!(err.contains("no keyring"), "{err}");
    let err = env.fail_unchanged(&["seal", "missing.eml"]);
    assert!(err.contains("missing.eml"), "{err}");
}

/// A sealed message anyone can forge (the epoch recipient is public):
/// its summary nests multiparts `depth` deep, its payload is MESSAGE.
fn forged_deep(env: &Env, depth: usize) -> Vec<u8> {
    let keyring = writ::keys::Keyring::load(&env.path("keys")).unwrap();
    let active = keyring.active().unwrap();
    let parts: Vec<String> = (0..depth)
        .map(|i| {
            let parent = i.checked_sub(1).map_or(String::new(), |p| format!(",\"parent\":{p}"));
            format!("{{\"type\":\"multipart\",\"subtype\":\"mixed\",\"content_type_present\":true,\"params\":[],\"header_offset\":0,\"header_size\":0,\"body_offset\":0,\"body_size\":0,\"body_lines\":0,\"body_bare_lf\":0{parent}}}")
        })
        .collect();
    let json = format!(
        "{{\"version\":1,\"size\":{},\"bare_lf\":0,\"parts\":[{}]}}",
        MESSAGE.len(),
        parts.join(",")
    );
    writ::envelope::fuzz::forge(&active.recipient, 1, &active.id, json.as_bytes(), MESSAGE)
}

#[test]
fn open_refuses_a_forged_summary_nested_past_the_cap() {
    let env = Env::with_message();
    for depth in [101, 5_000] {
        let stored = forged_deep(&env, depth);
        // One error line and exit code 1 (not a crash), for the summary
        // and for the message: the whole message is undecryptable.
        let err =
            env.fail_unchanged_stdin(&["--passphrase-file", "pw", "open", "--summary"], &stored);
        assert!(err.contains("summary") && err.contains("cap"), "{err}");
        let err = env.fail_unchanged_stdin(&["--passphrase-file", "pw", "open"], &stored);
        assert!(err.contains("summary") && err.contains("cap"), "{err}");
    }
    // At the cap it opens.
    let stored = forged_deep(&env, 100);
    let out = env
        .ok_stdin(&["--passphrase-file", "pw", "open", "--summary"], &stored)
        .stdout;
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["parts"].as_array().unwrap().len(), 100);
}
