//! `writ seal` and `writ open`: one message, offline.

use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{Context as _, Result};
use writ::envelope::{self, EnvelopeError};
use writ::keys::{self, Keyring};

use super::{Context, out};

/// The message to read: a file, or stdin when none (or `-`) is given.
pub fn input(file: Option<&Path>) -> Result<Box<dyn BufRead>> {
    match file {
        Some(path) if path != Path::new("-") => {
            let f = std::fs::File::open(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            Ok(Box::new(BufReader::with_capacity(64 * 1024, f)))
        }
        _ => Ok(Box::new(BufReader::with_capacity(
            64 * 1024,
            std::io::stdin(),
        ))),
    }
}

pub fn seal(ctx: &Context, file: Option<&Path>) -> Result<()> {
    let keyring = Keyring::load(&ctx.keys_dir)?;
    let sealer = keys::sealer(&keyring, &ctx.config.seal)?;
    let input = input(file)?;
    let stdout = std::io::stdout().lock();
    let mut output = BufWriter::with_capacity(64 * 1024, stdout);
    sealer.seal(input, &mut output)?;
    output.flush()?;
    Ok(())
}

pub fn open(ctx: &Context, file: Option<&Path>, summary: bool) -> Result<()> {
    let keyring = Keyring::load(&ctx.keys_dir)?;
    let mut input = input(file)?;
    // Read the stored header first: an unknown epoch or a message that is
    // not sealed is reported before the passphrase is asked for.
    let head = peek_header(&mut input)?;
    let detected = envelope::detect(&head).ok_or(EnvelopeError::NotSealed)?;
    keyring
        .epoch(&detected.epoch)
        .map_err(|_| EnvelopeError::UnknownEpoch(detected.epoch.clone()))?;
    let unlocked = ctx.unlock(&keyring)?;
    let stored = std::io::Cursor::new(head).chain(input);
    if summary {
        let summary = envelope::read_summary(stored, &unlocked)?;
        let mut json = serde_json::to_string_pretty(&summary)?;
        json.push('\n');
        return out(&json);
    }
    let stdout = std::io::stdout().lock();
    let mut output = BufWriter::with_capacity(64 * 1024, stdout);
    envelope::open(stored, &unlocked, &mut output)?;
    output.flush()?;
    Ok(())
}

/// Reads the header block of the stored message (up to the blank line,
/// bounded), to be replayed in front of the rest.
pub fn peek_header(input: &mut Box<dyn BufRead>) -> Result<Vec<u8>> {
    let mut head = Vec::new();
    loop {
        let start = head.len();
        let n = (&mut *input)
            .take(1024 * 1024)
            .read_until(b'\n', &mut head)?;
        let line = &head[start..];
        if n == 0 || line == b"\r\n" || line == b"\n" || head.len() > 8 * 1024 * 1024 {
            return Ok(head);
        }
    }
}
