//! `writ` as a command-line program, run in a temporary working directory
//! with real files: [`Env`].
//!
//! Every command runs with that directory as its working directory, no
//! `WRIT_PASSPHRASE_FILE` from the environment, `USER=tester` (the audit
//! log's operator) and stdin closed unless given. A failing command must
//! fail the way every writ error does: exit status 1, nothing on stdout and
//! exactly one `writ: ...` line on stderr ([`Env::fail`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::files::{Snapshot, snapshot};
use super::process::output_with_stdin;
use super::writ::WRIT;

/// `writ keys init` in keys/ with a low work factor and the passphrase
/// file `pw`: what [`Env::init_keyring`] runs.
pub const KEYS_INIT: &[&str] = &[
    "keys",
    "init",
    "--work-factor",
    "10",
    "--passphrase-file",
    "pw",
];

/// A temporary working directory with passphrase files `pw` (the keyring's,
/// see [`Env::init_keyring`]), `pw2` (another) and `bad` (a wrong one).
pub struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("pw"), "correct horse battery\n").unwrap();
        std::fs::write(tmp.path().join("pw2"), "staple\n").unwrap();
        std::fs::write(tmp.path().join("bad"), "wrong\n").unwrap();
        Env { tmp }
    }

    /// The working directory.
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// `rel` in the working directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// `writ ARGS` as every command here runs, not started yet.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(WRIT);
        command
            .current_dir(self.tmp.path())
            .env_remove("WRIT_PASSPHRASE_FILE")
            .env("USER", "tester")
            .args(args)
            .stdin(Stdio::null());
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs writ with `input` on stdin.
    pub fn run_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        output_with_stdin(&mut self.command(args), input).unwrap()
    }

    /// Runs writ and expects success.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> Output {
        succeeded(args, self.run(args))
    }

    /// Like [`Env::ok`], with `input` on stdin.
    #[track_caller]
    pub fn ok_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        succeeded(args, self.run_stdin(args, input))
    }

    /// Runs writ, expects success, returns stdout.
    #[track_caller]
    pub fn ok_text(&self, args: &[&str]) -> String {
        String::from_utf8(self.ok(args).stdout).unwrap()
    }

    /// Runs writ, expects failure with exit 1, nothing on stdout and one
    /// `writ: ...` line on stderr; returns that line.
    #[track_caller]
    pub fn fail(&self, args: &[&str]) -> String {
        failed(args, self.run(args))
    }

    /// Like [`Env::fail`], and checks that keys/ did not change.
    #[track_caller]
    pub fn fail_unchanged(&self, args: &[&str]) -> String {
        let before = self.snapshot();
        let err = self.fail(args);
        assert_eq!(before, self.snapshot(), "writ {args:?} changed keys/");
        err
    }

    /// Like [`Env::fail_unchanged`], with `input` on stdin.
    #[track_caller]
    pub fn fail_unchanged_stdin(&self, args: &[&str], input: &[u8]) -> String {
        let before = self.snapshot();
        let err = failed(args, self.run_stdin(args, input));
        assert_eq!(before, self.snapshot(), "writ {args:?} changed keys/");
        err
    }

    /// Runs [`KEYS_INIT`]; returns its output.
    #[track_caller]
    pub fn init_keyring(&self) -> String {
        self.ok_text(KEYS_INIT)
    }

    /// Every file and directory under keys/: content, mtime and mode.
    pub fn snapshot(&self) -> Snapshot {
        snapshot(&self.path("keys"))
    }
}

impl Default for Env {
    fn default() -> Self {
        Env::new()
    }
}

#[track_caller]
fn succeeded(args: &[&str], out: Output) -> Output {
    assert!(
        out.status.success(),
        "writ {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[track_caller]
fn failed(args: &[&str], out: Output) -> String {
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "writ {args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "writ {args:?} printed on stdout");
    assert!(
        stderr.starts_with("writ: ") && stderr.ends_with('\n') && stderr.lines().count() == 1,
        "writ {args:?}: not one error line: {stderr:?}"
    );
    stderr.trim_end().to_string()
}
