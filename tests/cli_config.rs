//! `writ check-config` and config errors, end to end.

mod common;

use std::path::{Path, PathBuf};

use common::cli::Env;
use writ::config::Config;

fn example_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/writ.toml")
}

impl Env {
    /// A working dir with an initialized keyring in keys/.
    fn with_keyring() -> Env {
        let env = Env::new();
        env.init_keyring();
        env
    }

    fn write_config(&self, text: &str) {
        std::fs::create_dir_all(self.path("config")).unwrap();
        std::fs::write(self.path("config/writ.toml"), text).unwrap();
    }
}

#[test]
fn example_config_loads_and_documents_the_defaults() {
    let config = Config::load(&example_config()).unwrap();
    assert_eq!(config, Config::default());

    let env = Env::with_keyring();
    let path = example_config();
    let out = env.run(&["--config", path.to_str().unwrap(), "check-config"]);
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
    let env = Env::with_keyring();
    let out = env.run(&["check-config"]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("defaults (config/writ.toml not found)"),
        "{stdout}"
    );
}

#[test]
fn missing_explicit_config_is_an_error() {
    let env = Env::with_keyring();
    let e = env.fail(&["--config", "nope.toml", "check-config"]);
    assert!(e.starts_with("writ: cannot read config nope.toml: "), "{e}");
    // Any command loads the config, so a bad one is never silently skipped.
    let e = env.fail(&["keys", "list", "--config", "nope.toml"]);
    assert!(e.contains("nope.toml"), "{e}");
}

#[test]
fn unknown_key_names_key_and_line() {
    let env = Env::with_keyring();
    env.write_config("# comment\n[keys]\ndir = \"keys\"\n\n[seal]\nspill_treshold = 10\n");
    let e = env.fail(&["check-config"]);
    assert!(
        e.starts_with("writ: config/writ.toml: line 6, column 1: "),
        "{e}"
    );
    assert!(e.contains("unknown field `spill_treshold`"), "{e}");
    assert!(e.contains("(in `seal`)"), "{e}");

    env.write_config("[sael]\n");
    let e = env.fail(&["check-config"]);
    assert!(e.contains("line 1") && e.contains("`sael`"), "{e}");
}

#[test]
fn wrong_type_names_key_and_line() {
    let env = Env::with_keyring();
    env.write_config("[seal]\nspill_threshold = 10\nmax_header_bytes = \"1 MiB\"\n");
    let e = env.fail(&["check-config"]);
    assert!(e.starts_with("writ: config/writ.toml: line 3, "), "{e}");
    assert!(e.contains("(key `seal.max_header_bytes`)"), "{e}");

    env.write_config("[log]\nlevel = 3\n");
    let e = env.fail(&["check-config"]);
    assert!(e.contains("line 2") && e.contains("log.level"), "{e}");
}

#[test]
fn invalid_values_name_key_and_line() {
    let env = Env::with_keyring();
    env.write_config("[seal]\nextra_recipients = [\n  \"age1notarecipient\",\n]\n");
    let e = env.fail(&["check-config"]);
    assert!(
        e.contains("line 3") && e.contains("age1notarecipient"),
        "{e}"
    );
    assert!(e.contains("seal.extra_recipients"), "{e}");

    env.write_config("[seal]\nprotected_fields = [\"X-Ok\", \"Bad Name\"]\n");
    let e = env.fail(&["check-config"]);
    assert!(e.contains("line 2") && e.contains("`Bad Name`"), "{e}");
    env.write_config("[jobs]\nbatch = 0\nparallel = 100\n");
    let e = env.fail(&["check-config"]);
    assert!(
        e.contains("[jobs] batch = 0: must be 1..=1000")
            && e.contains("[jobs] parallel = 100: must be 1..=64"),
        "{e}"
    );
    env.write_config("[jobs]\nbatch = \"many\"\n");
    let e = env.fail(&["check-config"]);
    assert!(e.contains("line 2") && e.contains("jobs.batch"), "{e}");
}

#[test]
fn extra_recipients_counted() {
    let env = Env::with_keyring();
    let r = age::x25519::Identity::generate().to_public();
    env.write_config(&format!("[seal]\nextra_recipients = [\"{r}\"]\n"));
    let out = env.run(&["check-config"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("2 recipient(s): active epoch, 1 extra"),
        "{stdout}"
    );
}

#[test]
fn keys_dir_from_config_and_override() {
    let env = Env::with_keyring();
    std::fs::rename(env.path("keys"), env.path("vault")).unwrap();
    env.write_config("[keys]\ndir = \"vault\"\n");
    assert!(env.run(&["keys", "list"]).status.success());
    // --keys wins over the config.
    let e = env.fail(&["keys", "list", "--keys", "keys"]);
    assert_eq!(e, "writ: no keyring in keys/ (run `writ keys init`)");
}
