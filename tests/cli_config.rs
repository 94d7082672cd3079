//! `writ check-config` and config errors, end to end.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use writ::config::Config;

const WRIT: &str = env!("CARGO_BIN_EXE_writ");

fn example_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/writ.toml")
}

/// A temp working dir with an initialized keyring in keys/.
fn setup() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("pw"), "pass\n").unwrap();
    let out = run(
        tmp.path(),
        &[
            "keys",
            "init",
            "--work-factor",
            "10",
            "--passphrase-file",
            "pw",
        ],
    );
    assert!(out.status.success());
    tmp
}

fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new(WRIT)
        .current_dir(dir)
        .env_remove("WRIT_PASSPHRASE_FILE")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Expects exit 1 and a single `writ: ` line; returns it.
fn fail(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(
        stderr.starts_with("writ: ") && stderr.lines().count() == 1,
        "{stderr:?}"
    );
    stderr.trim_end().to_string()
}

fn write_config(dir: &Path, text: &str) {
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::write(dir.join("config/writ.toml"), text).unwrap();
}

#[test]
fn example_config_loads_and_documents_the_defaults() {
    let config = Config::load(&example_config()).unwrap();
    assert_eq!(config, Config::default());

    let tmp = setup();
    let path = example_config();
    let out = run(
        tmp.path(),
        &["--config", path.to_str().unwrap(), "check-config"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("writ.toml OK"), "{stdout}");
    assert!(stdout.contains("keyring: keys OK, 1 epoch(s)"), "{stdout}");
}

#[test]
fn example_config_mentions_every_option() {
    let text = std::fs::read_to_string(example_config()).unwrap();
    for key in [
        "[keys]",
        "dir",
        "[seal]",
        "extra_recipients",
        "protected_fields",
        "spill_threshold",
        "temp_dir",
        "max_header_bytes",
        "[log]",
        "level",
        "[disclosure]",
        "quorum",
        "approvers",
    ] {
        assert!(
            text.contains(key),
            "config/writ.toml does not document {key}"
        );
    }
}

#[test]
fn missing_default_config_means_defaults() {
    let tmp = setup();
    let out = run(tmp.path(), &["check-config"]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("defaults (config/writ.toml not found)"),
        "{stdout}"
    );
}

#[test]
fn missing_explicit_config_is_an_error() {
    let tmp = setup();
    let e = fail(tmp.path(), &["--config", "nope.toml", "check-config"]);
    assert!(e.starts_with("writ: cannot read config nope.toml: "), "{e}");
    // Any command loads the config, so a bad one is never silently skipped.
    let e = fail(tmp.path(), &["keys", "list", "--config", "nope.toml"]);
    assert!(e.contains("nope.toml"), "{e}");
}

#[test]
fn unknown_key_names_key_and_line() {
    let tmp = setup();
    write_config(
        tmp.path(),
        "# comment\n[keys]\ndir = \"keys\"\n\n[seal]\nspill_treshold = 10\n",
    );
    let e = fail(tmp.path(), &["check-config"]);
    assert!(
        e.starts_with("writ: config/writ.toml: line 6, column 1: "),
        "{e}"
    );
    assert!(e.contains("unknown field `spill_treshold`"), "{e}");
    assert!(e.contains("(in `seal`)"), "{e}");

    write_config(tmp.path(), "[sael]\n");
    let e = fail(tmp.path(), &["check-config"]);
    assert!(e.contains("line 1") && e.contains("`sael`"), "{e}");
}

#[test]
fn wrong_type_names_key_and_line() {
    let tmp = setup();
    write_config(
        tmp.path(),
        "[seal]\nspill_threshold = 10\nmax_header_bytes = \"1 MiB\"\n",
    );
    let e = fail(tmp.path(), &["check-config"]);
    assert!(e.starts_with("writ: config/writ.toml: line 3, "), "{e}");
    assert!(e.contains("(key `seal.max_header_bytes`)"), "{e}");

    write_config(tmp.path(), "[log]\nlevel = 3\n");
    let e = fail(tmp.path(), &["check-config"]);
    assert!(e.contains("line 2") && e.contains("log.level"), "{e}");
}

#[test]
fn invalid_values_name_key_and_line() {
    let tmp = setup();
    write_config(
        tmp.path(),
        "[seal]\nextra_recipients = [\n  \"age1notarecipient\",\n]\n",
    );
    let e = fail(tmp.path(), &["check-config"]);
    assert!(
        e.contains("line 3") && e.contains("age1notarecipient"),
        "{e}"
    );
    assert!(e.contains("seal.extra_recipients"), "{e}");

    write_config(
        tmp.path(),
        "[seal]\nprotected_fields = [\"X-Ok\", \"Bad Name\"]\n",
    );
    let e = fail(tmp.path(), &["check-config"]);
    assert!(e.contains("line 2") && e.contains("`Bad Name`"), "{e}");
}

#[test]
fn extra_recipients_counted() {
    let tmp = setup();
    let r = age::x25519::Identity::generate().to_public();
    write_config(
        tmp.path(),
        &format!("[seal]\nextra_recipients = [\"{r}\"]\n"),
    );
    let out = run(tmp.path(), &["check-config"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("2 recipient(s): active epoch, 1 extra"),
        "{stdout}"
    );
}

#[test]
fn keys_dir_from_config_and_override() {
    let tmp = setup();
    std::fs::rename(tmp.path().join("keys"), tmp.path().join("vault")).unwrap();
    write_config(tmp.path(), "[keys]\ndir = \"vault\"\n");
    assert!(run(tmp.path(), &["keys", "list"]).status.success());
    // --keys wins over the config.
    let e = fail(tmp.path(), &["keys", "list", "--keys", "keys"]);
    assert_eq!(e, "writ: no keyring in keys/ (run `writ keys init`)");
}
