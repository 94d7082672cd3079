//! Python 3 scripts as test clients (imaplib, smtplib, raw sockets):
//! `python3 -c SCRIPT ARGS...`.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};

use super::process::output_with_stdin;

fn command<I>(script: &str, args: I) -> Command
where
    I: IntoIterator,
    I::Item: AsRef<OsStr>,
{
    let mut c = Command::new("python3");
    c.arg("-c").arg(script).args(args);
    c
}

/// Runs `script` with `args`, stdin closed.
pub fn run<I>(script: &str, args: I) -> Output
where
    I: IntoIterator,
    I::Item: AsRef<OsStr>,
{
    command(script, args)
        .stdin(Stdio::null())
        .output()
        .expect("run python3")
}

/// Runs `script` with `args` and `input` on stdin.
pub fn run_with_input(script: &str, args: &[&str], input: &[u8]) -> Output {
    output_with_stdin(&mut command(script, args), input).expect("run python3")
}

/// Runs `script` with `args`; panics with its output unless it exits 0.
/// Returns stdout.
#[track_caller]
pub fn ok<I>(script: &str, args: I) -> String
where
    I: IntoIterator,
    I::Item: AsRef<OsStr>,
{
    succeeded(&run(script, args), String::new)
}

/// Expects `out` to be a successful run; returns its stdout. On failure
/// panics with stdout, stderr and then `context()` (writ's log, say).
#[track_caller]
pub fn succeeded(out: &Output, context: impl FnOnce() -> String) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        panic!(
            "python failed ({}):\n{stdout}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            context()
        );
    }
    stdout
}

/// A script that prints a line and waits for one on stdin: the test acts
/// while the script holds its session open, then lets it go on.
pub struct Paused {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Paused {
    /// Starts `script` and waits until it prints the line `ready`.
    #[track_caller]
    pub fn start<I>(script: &str, args: I, ready: &str) -> Paused
    where
        I: IntoIterator,
        I::Item: AsRef<OsStr>,
    {
        let mut child = command(script, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read");
        assert_eq!(line.trim(), ready, "the script stopped early");
        Paused { child, stdout }
    }

    /// Lets the script go on (a line on its stdin, then end of input);
    /// returns its exit status and the rest of its output.
    pub fn finish(mut self) -> (ExitStatus, String) {
        let mut stdin = self.child.stdin.take().expect("stdin");
        stdin.write_all(b"go\n").expect("write");
        drop(stdin);
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).expect("read");
        let status = self.child.wait().expect("wait");
        (status, rest)
    }
}

/// `bytes` as lowercase hex, for `bytes.fromhex` in a script.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
