//! Child processes: bytes on stdin, output collected while they run.

use std::io::{self, Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;

/// Runs `command` with `input` on its stdin and collects its output. The
/// input is written from a thread, so a large input cannot deadlock
/// against the child's output; a child that exits before reading all of it
/// is not an error here (its status and output tell what happened).
pub fn output_with_stdin(command: &mut Command, input: &[u8]) -> io::Result<Output> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_vec();
    let writer = thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output();
    let _ = writer.join();
    out
}

/// Collects the stdout and stderr of a running `child` (both piped), as
/// they come, into one buffer, for diagnostics.
pub fn collect_output(child: &mut Child) -> Arc<Mutex<Vec<u8>>> {
    let output = Arc::new(Mutex::new(Vec::new()));
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let output = Arc::clone(&output);
        thread::spawn(move || collect(pipe, &output));
    }
    output
}

fn collect(mut pipe: Box<dyn Read + Send>, output: &Mutex<Vec<u8>>) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = pipe.read(&mut buf) {
        if n == 0 {
            break;
        }
        output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(&buf[..n]);
    }
}
