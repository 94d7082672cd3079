//! `writ audit ...` end to end: the binary in a temp dir, a real keyring.
//!
//! Every kind of tampering (a flipped byte, a deleted record, a reordered
//! pair, a truncated tail) must be detected by `writ audit verify` and
//! located: the error names the first bad line.

mod common;

use common::cli::Env;
use common::files::copy_dir;

impl Env {
    /// A keyring with four records: init, rotate (as alice), rotate, passwd.
    fn with_log() -> Env {
        let env = Env::new();
        env.init_keyring();
        env.ok(&["keys", "rotate", "--operator", "alice"]);
        env.ok(&["keys", "rotate"]);
        env.ok(&[
            "keys",
            "passwd",
            "--passphrase-file",
            "pw",
            "--new-passphrase-file",
            "pw2",
            "--work-factor",
            "10",
        ]);
        env
    }

    fn log(&self) -> Vec<u8> {
        std::fs::read(self.path("keys/audit.log")).unwrap()
    }

    fn lines(&self) -> Vec<Vec<u8>> {
        let log = self.log();
        assert!(log.ends_with(b"\n"));
        log[..log.len() - 1]
            .split(|&b| b == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    }

    fn write_lines(&self, lines: &[Vec<u8>]) {
        let mut bytes = lines.join(&b'\n');
        bytes.push(b'\n');
        std::fs::write(self.path("keys/audit.log"), bytes).unwrap();
    }

    /// A copy of this env (keyring included) to tamper with.
    fn copy(&self) -> Env {
        let env = Env::new();
        copy_dir(&self.path("keys"), &env.path("keys"));
        env
    }
}

#[test]
fn clean_log_verifies_and_shows() {
    let env = Env::with_log();
    let out = env.ok_text(&["audit", "verify"]);
    assert!(
        out.starts_with("keys/audit.log: 4 records, chain and signatures OK\nhead: 4:"),
        "{out}"
    );
    let head = out.lines().nth(1).unwrap().strip_prefix("head: ").unwrap();
    env.ok(&["audit", "verify", "--head", head]);
    // Checked against a copy of the public key kept elsewhere.
    std::fs::copy(env.path("keys/audit.pub"), env.path("pub-copy")).unwrap();
    env.ok(&["audit", "verify", "--public-key", "pub-copy"]);

    let json = env.ok_text(&["audit", "show", "--json"]);
    let records: serde_json::Value = serde_json::from_str(&json).unwrap();
    let records = records.as_array().unwrap();
    let actions: Vec<&str> = records
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["keys.init", "keys.rotate", "keys.rotate", "keys.passwd"]
    );
    let operators: Vec<&str> = records
        .iter()
        .map(|r| r["operator"].as_str().unwrap())
        .collect();
    assert_eq!(operators, ["tester", "alice", "tester", "tester"]);
    assert_eq!(records[0]["prev"], "0".repeat(64));
    assert_eq!(records[0]["seq"], 1);
    assert_eq!(records[3]["params"]["new_master"], false);
    let epochs: Vec<String> = env
        .ok_text(&["keys", "list"])
        .lines()
        .skip(1)
        .map(|l| l[2..18].to_string())
        .collect();
    assert_eq!(records[0]["params"]["epoch"], epochs[0].as_str());
    assert_eq!(records[2]["params"]["epoch"], epochs[2].as_str());
    assert_eq!(records[2]["params"]["previous"], epochs[1].as_str());
    // Nothing secret: no age secret key, no passphrase.
    let log = String::from_utf8(env.log()).unwrap();
    assert!(!log.contains("AGE-SECRET-KEY"));
    assert!(!log.contains("horse") && !log.contains("staple"));

    let text = env.ok_text(&["audit", "show"]);
    assert_eq!(text.lines().count(), 4);
    assert!(text.lines().nth(1).unwrap().contains("alice"), "{text}");
    assert!(text.contains("keys.passwd"));
}

#[test]
fn show_since_filters() {
    let env = Env::with_log();
    let all = env.ok_text(&["audit", "show", "--json"]);
    let records: Vec<serde_json::Value> = serde_json::from_str(&all).unwrap();
    let first = records[0]["time"].as_str().unwrap().to_string();
    let day = &first[..10];
    let since_day: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok_text(&["audit", "show", "--json", "--since", day])).unwrap();
    assert_eq!(since_day.len(), 4);
    let none: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok_text(&["audit", "show", "--json", "--since", "2999-01-01"]))
            .unwrap();
    assert!(none.is_empty());
    assert_eq!(env.ok_text(&["audit", "show", "--since", "2999-01-01"]), "");
    // A time just after the last record's: nothing; equal: that record on.
    let last = records[3]["time"].as_str().unwrap();
    let from_last: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok_text(&["audit", "show", "--json", "--since", last])).unwrap();
    assert!(!from_last.is_empty() && from_last.len() <= 4);
    assert!(
        from_last
            .iter()
            .all(|r| r["time"].as_str().unwrap() >= last)
    );
    let e = env.fail(&["audit", "show", "--since", "yesterday"]);
    assert!(e.contains("--since yesterday: not a date"), "{e}");
}

#[test]
fn flipped_byte_is_located() {
    let base = Env::with_log();
    // In each record in turn, flip a byte of the content and of the
    // signature.
    for line in 0..4 {
        for pick in [10usize, 40] {
            let env = base.copy();
            let mut lines = env.lines();
            let len = lines[line].len();
            let at = if pick == 40 { len - 10 } else { pick };
            lines[line][at] ^= 0x01;
            env.write_lines(&lines);
            let e = env.fail(&["audit", "verify"]);
            assert!(
                e.starts_with(&format!("writ: keys/audit.log: line {}: ", line + 1)),
                "{e}"
            );
        }
    }
    // An altered operator name: a signature failure on that line.
    let env = base.copy();
    let log = String::from_utf8(env.log()).unwrap();
    std::fs::write(
        env.path("keys/audit.log"),
        log.replacen("\"alice\"", "\"alicf\"", 1),
    )
    .unwrap();
    let e = env.fail(&["audit", "verify"]);
    assert!(
        e.contains("line 2: signature does not match: the record was altered"),
        "{e}"
    );
}

#[test]
fn deleted_record_is_located() {
    let base = Env::with_log();
    for gone in 0..3 {
        let env = base.copy();
        let mut lines = env.lines();
        lines.remove(gone);
        env.write_lines(&lines);
        let e = env.fail(&["audit", "verify"]);
        assert!(
            e.contains(&format!(
                "line {}: holds record {} where record {} belongs",
                gone + 1,
                gone + 2,
                gone + 1
            )),
            "{e}"
        );
    }
}

#[test]
fn reordered_pair_is_located() {
    let base = Env::with_log();
    for first in 0..3 {
        let env = base.copy();
        let mut lines = env.lines();
        lines.swap(first, first + 1);
        env.write_lines(&lines);
        let e = env.fail(&["audit", "verify"]);
        assert!(
            e.contains(&format!("line {}: ", first + 1)) && e.contains("reordered"),
            "{e}"
        );
    }
}

#[test]
fn truncated_tail_is_located() {
    let base = Env::with_log();
    // Cut inside the last record.
    let env = base.copy();
    let log = env.log();
    std::fs::write(env.path("keys/audit.log"), &log[..log.len() - 20]).unwrap();
    let e = env.fail(&["audit", "verify"]);
    assert!(e.contains("line 4: cut short"), "{e}");
    // Nothing more is appended to it.
    let e = env.fail(&["keys", "rotate"]);
    assert!(e.contains("line 4: cut short"), "{e}");

    // Only the line end missing.
    let env = base.copy();
    std::fs::write(env.path("keys/audit.log"), &log[..log.len() - 1]).unwrap();
    let e = env.fail(&["audit", "verify"]);
    assert!(e.contains("line 4: cut short"), "{e}");

    // Whole records cut off: audit.head knows how many there were.
    for keep in [3, 1, 0] {
        let env = base.copy();
        let lines = env.lines();
        if keep == 0 {
            std::fs::write(env.path("keys/audit.log"), b"").unwrap();
        } else {
            env.write_lines(&lines[..keep]);
        }
        let e = env.fail(&["audit", "verify"]);
        assert!(
            e.contains(&format!(
                "line {}: missing: the log ends after {keep} records but audit.head says 4",
                keep + 1
            )),
            "{e}"
        );
        // Nothing is signed over the cut: the next key event is refused
        // and leaves the log as it was, so it never verifies again.
        if keep > 0 {
            let before = std::fs::read(env.path("keys/audit.log")).unwrap();
            let e = env.fail(&["keys", "rotate"]);
            assert!(
                e.contains(&format!(
                    "counts 4 records, but audit.log holds {keep}: the log was cut"
                )),
                "{e}"
            );
            assert_eq!(std::fs::read(env.path("keys/audit.log")).unwrap(), before);
            env.fail(&["audit", "verify"]);
        }
    }
    // The last record altered: not the one audit.head names, so nothing
    // is chained onto it.
    let env = base.copy();
    let mut lines = env.lines();
    let last = lines.last_mut().unwrap();
    let at = last.iter().position(|&b| b.is_ascii_digit()).unwrap();
    last[at] = if last[at] == b'9' { b'8' } else { last[at] + 1 };
    env.write_lines(&lines);
    let e = env.fail(&["keys", "rotate"]);
    assert!(
        e.contains("names record 4 of audit.log by a hash the log's record 4 does not have"),
        "{e}"
    );
    // The log deleted altogether.
    let env = base.copy();
    std::fs::remove_file(env.path("keys/audit.log")).unwrap();
    let e = env.fail(&["audit", "verify"]);
    assert!(e.contains("line 1: missing"), "{e}");
    // The head deleted too: the cut is visible only against a head noted
    // elsewhere.
    let env = base.copy();
    let head = env.ok_text(&["audit", "verify"]);
    let head = head.lines().nth(1).unwrap().strip_prefix("head: ").unwrap();
    let lines = env.lines();
    env.write_lines(&lines[..3]);
    std::fs::remove_file(env.path("keys/audit.head")).unwrap();
    let e = env.fail(&["audit", "verify"]);
    assert!(e.contains("audit.head: missing"), "{e}");
    let e = env.fail(&["audit", "verify", "--head", head]);
    assert!(e.contains("audit.head: missing"), "{e}");
}

#[test]
fn a_deleted_log_is_an_error_and_no_key_event_starts_a_new_one() {
    let base = Env::with_log();
    for empty in [false, true] {
        let env = base.copy();
        std::fs::remove_file(env.path("keys/audit.head")).unwrap();
        if empty {
            std::fs::write(env.path("keys/audit.log"), b"").unwrap();
        } else {
            std::fs::remove_file(env.path("keys/audit.log")).unwrap();
        }
        let e = env.fail(&["audit", "verify"]);
        assert!(
            e.contains("audit.log is missing or empty, but keys holds a keyring")
                && e.contains("restore audit.log and audit.head from a backup"),
            "{e}"
        );
        // No key event begins a new chain on its own.
        let e = env.fail_unchanged(&["keys", "rotate"]);
        assert!(e.contains("the audit log was deleted"), "{e}");
        let e = env.fail_unchanged(&["audit", "init"]);
        assert!(e.contains("already has an audit key"), "{e}");
        // Knowingly: a new chain that says so.
        env.ok(&["audit", "init", "--new-chain", "--operator", "frank"]);
        env.ok(&["keys", "rotate"]);
        let out = env.ok_text(&["audit", "verify"]);
        assert!(
            out.contains(": 2 records, chain and signatures OK") && out.contains("begun anew"),
            "{out}"
        );
        let json = env.ok_text(&["audit", "show", "--json"]);
        let records: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
        assert_eq!(records[0]["action"], "audit.restart");
        assert_eq!(records[0]["operator"], "frank");
        // Only a lost log is begun anew.
        let e = env.fail_unchanged(&["audit", "init", "--new-chain"]);
        assert!(e.contains("holds records"), "{e}");
    }
}

#[test]
fn rewritten_log_fails_against_kept_public_key() {
    let base = Env::with_log();
    std::fs::copy(base.path("keys/audit.pub"), base.path("kept.pub")).unwrap();
    // A second keyring's log and keys put in place of the first's: it
    // verifies on its own, but not against the public key kept elsewhere.
    let other = Env::with_log();
    for f in ["audit.log", "audit.head", "audit.key", "audit.pub"] {
        std::fs::copy(
            other.path(&format!("keys/{f}")),
            base.path(&format!("keys/{f}")),
        )
        .unwrap();
    }
    // It does not verify on its own either: its first record is the
    // creation of another keyring.
    let e = base.fail(&["audit", "verify"]);
    assert!(
        e.contains("line 1: begins the log of another keyring"),
        "{e}"
    );
    let kept = base.path("kept.pub");
    let e = base.fail(&["audit", "verify", "--public-key", kept.to_str().unwrap()]);
    assert!(e.contains("line 1: signature does not match"), "{e}");
}

#[test]
fn head_mismatch_after_rewrite() {
    let env = Env::with_log();
    let out = env.ok_text(&["audit", "verify"]);
    let head = out.lines().nth(1).unwrap().strip_prefix("head: ").unwrap();
    let (n, hash) = head.split_once(':').unwrap();
    let other = format!("{n}:{}", "ab".repeat(32));
    let e = env.fail(&["audit", "verify", "--head", &other]);
    assert!(e.contains("holds 4 records ending in"), "{e}");
    assert!(e.contains(hash), "{e}");
    let e = env.fail(&["audit", "verify", "--head", "junk"]);
    assert!(e.contains("--head: expected N:HASH"), "{e}");
}

#[test]
fn key_events_refused_without_audit_key() {
    let env = Env::with_log();
    std::fs::remove_file(env.path("keys/audit.key")).unwrap();
    let list = env.ok_text(&["keys", "list"]);
    let e = env.fail(&["keys", "rotate"]);
    assert!(
        e.contains("keys/audit.key is missing: this keyring has no audit key"),
        "{e}"
    );
    assert_eq!(env.ok_text(&["keys", "list"]), list, "rotate went ahead");
    // verify needs only the public key.
    env.ok(&["audit", "verify"]);

    // A keyring made before the audit log: `audit init` adds the key.
    for f in ["audit.log", "audit.head", "audit.pub"] {
        std::fs::remove_file(env.path(&format!("keys/{f}"))).unwrap();
    }
    let e = env.fail(&["audit", "verify"]);
    assert!(e.contains("audit.pub is missing"), "{e}");
    env.ok(&["audit", "init", "--operator", "bob"]);
    env.ok(&["keys", "rotate"]);
    let out = env.ok_text(&["audit", "verify"]);
    assert!(out.contains(": 2 records"), "{out}");
    let show = env.ok_text(&["audit", "show"]);
    assert!(
        show.contains("audit.init") && show.contains("bob"),
        "{show}"
    );
    let e = env.fail(&["audit", "init"]);
    assert!(e.contains("already has an audit key"), "{e}");
}

#[test]
fn operator_from_config() {
    let env = Env::new();
    std::fs::write(env.path("writ.toml"), "[audit]\noperator = \"carol\"\n").unwrap();
    env.ok_text(&[
        "keys",
        "init",
        "--config",
        "writ.toml",
        "--work-factor",
        "10",
        "--passphrase-file",
        "pw",
    ]);
    env.ok_text(&[
        "keys",
        "rotate",
        "--config",
        "writ.toml",
        "--operator",
        "dave",
    ]);
    let json = env.ok_text(&["audit", "show", "--json"]);
    let records: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert_eq!(records[0]["operator"], "carol");
    assert_eq!(records[1]["operator"], "dave");
}

#[test]
fn export_identity_is_recorded() {
    let env = Env::with_log();
    let epoch = env
        .ok_text(&["keys", "list"])
        .lines()
        .nth(1)
        .map(|l| l[2..18].to_string())
        .unwrap();
    let key = env.ok_text(&[
        "keys",
        "export-identity",
        &epoch,
        "--passphrase-file",
        "pw2",
        "--operator",
        "erin",
    ]);
    assert!(key.starts_with("AGE-SECRET-KEY-1"));
    let json = env.ok_text(&["audit", "show", "--json"]);
    let records: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let last = records.last().unwrap();
    assert_eq!(last["action"], "keys.export-identity");
    assert_eq!(last["operator"], "erin");
    assert_eq!(last["params"]["epoch"], epoch.as_str());
    assert_eq!(last["params"].as_object().unwrap().len(), 1);
    assert!(
        !String::from_utf8(env.log())
            .unwrap()
            .contains("AGE-SECRET-KEY")
    );
    env.ok(&["audit", "verify"]);

    // A wrong passphrase exports nothing and records nothing.
    env.fail(&["keys", "export-identity", &epoch, "--passphrase-file", "pw"]);
    assert_eq!(env.lines().len(), records.len());

    // No audit key: refused, before the passphrase is asked for.
    std::fs::remove_file(env.path("keys/audit.key")).unwrap();
    let e = env.fail(&["keys", "export-identity", &epoch]);
    assert!(e.contains("audit.key is missing"), "{e}");
}
