//! Where the passphrase comes from: a file (`--passphrase-file`, or
//! `WRIT_PASSPHRASE_FILE`; for `writ serve` also the systemd credential
//! `$CREDENTIALS_DIRECTORY/passphrase`) or a no-echo prompt on the
//! terminal. Every copy is zeroized.
//!
//! The PIN of an HSM keyring's token comes the same ways, under its own
//! names: `--pin-file`, `WRIT_PIN_FILE`, the systemd credential `pin`, or
//! the prompt. It is never logged or put in an error either.

use std::path::Path;

use secrecy::{ExposeSecret, SecretString};
use zeroize::{Zeroize, Zeroizing};

use super::KeyError;

/// Reads a passphrase from a file. One trailing newline (`\n` or `\r\n`) is
/// stripped, as editors and `echo` add one; anything else is kept verbatim.
pub fn read_passphrase_file(path: &Path) -> Result<SecretString, KeyError> {
    read_secret_file(path, "passphrase", |path, detail| {
        KeyError::PassphraseFile { path, detail }
    })
}

/// Reads a token PIN from a file, by the rules of
/// [`read_passphrase_file`].
pub fn read_pin_file(path: &Path) -> Result<SecretString, KeyError> {
    read_secret_file(path, "PIN", |path, detail| KeyError::PinFile {
        path,
        detail,
    })
}

fn read_secret_file(
    path: &Path,
    what: &str,
    error: fn(std::path::PathBuf, String) -> KeyError,
) -> Result<SecretString, KeyError> {
    let fail = |detail: String| error(path.to_path_buf(), detail);
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| fail(e.to_string()))?);
    let text = std::str::from_utf8(&bytes).map_err(|_| fail("not UTF-8".into()))?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text);
    if text.is_empty() {
        return Err(fail(format!("empty {what} refused")));
    }
    Ok(SecretString::from(text))
}

/// Asks on the terminal without echo; with `confirm`, asks twice and
/// requires both answers to match (for a new passphrase).
pub fn prompt_passphrase(prompt: &str, confirm: bool) -> Result<SecretString, KeyError> {
    let first = prompt_once(prompt)?;
    if confirm {
        let second = prompt_once("Repeat it: ")?;
        if first.expose_secret() != second.expose_secret() {
            return Err(KeyError::Passphrase("the two passphrases differ"));
        }
    }
    Ok(first)
}

/// The name of the systemd credential holding the keyring passphrase
/// (`LoadCredential=passphrase:/etc/writ/passphrase` in the unit).
pub const CREDENTIAL_NAME: &str = "passphrase";

/// `$CREDENTIALS_DIRECTORY/passphrase` when systemd passed that credential
/// (`LoadCredential=`); `None` otherwise.
pub fn credential_passphrase_file() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    let path = Path::new(&dir).join(CREDENTIAL_NAME);
    path.is_file().then_some(path)
}

/// The file if one is given, else the prompt.
pub fn passphrase_from(
    file: Option<&Path>,
    prompt: &str,
    confirm: bool,
) -> Result<SecretString, KeyError> {
    match file {
        Some(path) => read_passphrase_file(path),
        None => prompt_passphrase(prompt, confirm),
    }
}

/// The name of the systemd credential holding the token PIN of an HSM
/// keyring (`LoadCredential=pin:/etc/writ/pin`).
pub const PIN_CREDENTIAL_NAME: &str = "pin";

/// `$CREDENTIALS_DIRECTORY/pin` when systemd passed that credential.
pub fn credential_pin_file() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    let path = Path::new(&dir).join(PIN_CREDENTIAL_NAME);
    path.is_file().then_some(path)
}

/// The token PIN: from the file if one is given, else asked on the
/// terminal without echo.
pub fn pin_from(file: Option<&Path>, prompt: &str) -> Result<SecretString, KeyError> {
    if let Some(path) = file {
        return read_pin_file(path);
    }
    let mut answer = rpassword::prompt_password(prompt).map_err(|_| {
        KeyError::Pin("no token PIN: no terminal to ask on (give --pin-file or set WRIT_PIN_FILE)")
    })?;
    let secret = SecretString::from(answer.as_str());
    answer.zeroize();
    if secret.expose_secret().is_empty() {
        return Err(KeyError::Pin("empty PIN refused"));
    }
    Ok(secret)
}

fn prompt_once(prompt: &str) -> Result<SecretString, KeyError> {
    let mut answer = rpassword::prompt_password(prompt).map_err(|_| {
        KeyError::Passphrase(
            "no passphrase: no terminal to ask on (give --passphrase-file or set WRIT_PASSPHRASE_FILE)",
        )
    })?;
    // Copy into the secret, then wipe the String: converting it in place
    // could reallocate and leave an unwiped copy behind.
    let secret = SecretString::from(answer.as_str());
    answer.zeroize();
    if secret.expose_secret().is_empty() {
        return Err(KeyError::Passphrase("empty passphrase refused"));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_rules() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        for (content, want) in [
            (&b"secret\n"[..], Some("secret")),
            (b"secret\r\n", Some("secret")),
            (b"secret", Some("secret")),
            (b"secret\n\n", Some("secret\n")),
            (b" sp ace \n", Some(" sp ace ")),
            (b"\n", None),
            (b"", None),
            (b"\xff\n", None),
        ] {
            std::fs::write(&p, content).unwrap();
            let got = read_passphrase_file(&p);
            match want {
                Some(w) => assert_eq!(got.unwrap().expose_secret(), w),
                None => assert!(got.is_err()),
            }
        }
        let e = read_passphrase_file(&dir.path().join("missing")).unwrap_err();
        assert!(e.to_string().starts_with("passphrase file "), "{e}");
    }
}
