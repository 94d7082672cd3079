//! How a job logs in to the provider: a password (from a file or the
//! environment), an OAuth2 bearer token (XOAUTH2, from a file or a
//! command), optionally as an administrator through a master user
//! (Dovecot's `user*master`).
//!
//! A token command line often carries a client secret (an argument, or a
//! `NAME=value` before the program): errors, and so the CLI's message and
//! the sweep's log, name only its program ([`program_name`]). The command
//! runs without writ's secret variables ([`HIDDEN_FROM_TOKEN_COMMAND`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use secrecy::SecretString;
use zeroize::Zeroizing;

/// The environment variable a password may come from.
pub const PASSWORD_ENV: &str = "WRIT_PROVIDER_PASSWORD";

/// Removed from a token command's environment: the provider password, and
/// where the keyring's passphrase and the HSM's PIN are read from.
pub const HIDDEN_FROM_TOKEN_COMMAND: [&str; 3] =
    [PASSWORD_ENV, "WRIT_PASSPHRASE_FILE", "WRIT_PIN_FILE"];

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("cannot read the credential file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the credential file {0} is empty")]
    Empty(PathBuf),
    /// `program`: only the program's name ([`program_name`]), never the
    /// command line.
    #[error("the token command `{program} ...` failed: {why}")]
    Command { program: String, why: String },
    #[error(
        "no provider credentials: give --password-file, --oauth2-token-file or \
         --oauth2-token-command, or set {PASSWORD_ENV}"
    )]
    Missing,
    #[error("give only one of --password-file, --oauth2-token-file, --oauth2-token-command")]
    Conflict,
}

#[derive(Clone)]
pub enum Secret {
    Password(SecretString),
    Bearer(SecretString),
}

/// One account's login.
#[derive(Clone)]
pub struct Credentials {
    /// The account whose mail is worked on.
    pub user: String,
    /// Log in as this master user on `user`'s behalf (`user*master`).
    pub master: Option<String>,
    /// Between user and master (Dovecot's `auth_master_user_separator`).
    pub separator: String,
    pub secret: Secret,
}

impl Credentials {
    /// The name sent to the provider.
    pub fn login_name(&self) -> String {
        match &self.master {
            Some(m) => format!("{}{}{m}", self.user, self.separator),
            None => self.user.clone(),
        }
    }
}

/// Where the secret comes from; resolved per account (a token command
/// gets the account in `WRIT_ACCOUNT`).
#[derive(Debug, Clone, Default)]
pub struct SecretSource {
    pub password_file: Option<PathBuf>,
    pub oauth2_token_file: Option<PathBuf>,
    pub oauth2_token_command: Option<String>,
}

impl SecretSource {
    pub fn resolve(&self, account: &str) -> Result<Secret, LoginError> {
        let given = [
            self.password_file.is_some(),
            self.oauth2_token_file.is_some(),
            self.oauth2_token_command.is_some(),
        ];
        if given.iter().filter(|&&g| g).count() > 1 {
            return Err(LoginError::Conflict);
        }
        if let Some(path) = &self.password_file {
            return Ok(Secret::Password(read_secret_file(path)?));
        }
        if let Some(path) = &self.oauth2_token_file {
            return Ok(Secret::Bearer(read_secret_file(path)?));
        }
        if let Some(command) = &self.oauth2_token_command {
            return Ok(Secret::Bearer(run_token_command(command, account)?));
        }
        match std::env::var(PASSWORD_ENV) {
            Ok(pw) if !pw.is_empty() => Ok(Secret::Password(SecretString::from(pw))),
            _ => Err(LoginError::Missing),
        }
    }
}

/// The file's first line, without its line end.
fn read_secret_file(path: &Path) -> Result<SecretString, LoginError> {
    let text =
        Zeroizing::new(
            std::fs::read_to_string(path).map_err(|source| LoginError::Read {
                path: path.to_path_buf(),
                source,
            })?,
        );
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(LoginError::Empty(path.to_path_buf()));
    }
    Ok(SecretString::from(line.to_string()))
}

/// The program a shell command line runs, for errors: its first word after
/// any `NAME=value` assignments, unquoted; never its arguments.
pub fn program_name(command: &str) -> &str {
    let assignment = |word: &str| {
        word.split_once('=').is_some_and(|(name, _)| {
            name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    };
    command
        .split_whitespace()
        .find(|word| !assignment(word))
        .map(|word| word.trim_matches(['\'', '"']))
        .filter(|word| !word.is_empty())
        .unwrap_or("sh")
}

fn run_token_command(command: &str, account: &str) -> Result<SecretString, LoginError> {
    let fail = |why: String| LoginError::Command {
        program: program_name(command).to_string(),
        why,
    };
    let mut sh = Command::new("sh");
    for name in HIDDEN_FROM_TOKEN_COMMAND {
        sh.env_remove(name);
    }
    let out = sh
        .arg("-c")
        .arg(command)
        .env("WRIT_ACCOUNT", account)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| fail(e.to_string()))?;
    let stdout = Zeroizing::new(out.stdout);
    if !out.status.success() {
        return Err(fail(out.status.to_string()));
    }
    let text = std::str::from_utf8(&stdout).map_err(|_| fail("output is not UTF-8".into()))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(fail("it printed no token".into()));
    }
    Ok(SecretString::from(token.to_string()))
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn expose(s: &Secret) -> (&'static str, String) {
        match s {
            Secret::Password(p) => ("password", p.expose_secret().to_string()),
            Secret::Bearer(t) => ("bearer", t.expose_secret().to_string()),
        }
    }

    #[test]
    fn a_file_gives_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\nignored\n").unwrap();
        let src = SecretSource {
            password_file: Some(f.clone()),
            ..Default::default()
        };
        assert_eq!(
            expose(&src.resolve("a").unwrap()),
            ("password", "s3cret".into())
        );
        let src = SecretSource {
            oauth2_token_file: Some(f),
            ..Default::default()
        };
        assert_eq!(
            expose(&src.resolve("a").unwrap()),
            ("bearer", "s3cret".into())
        );
    }

    #[test]
    fn empty_missing_and_conflicting_sources_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let src = SecretSource {
            password_file: Some(empty),
            ..Default::default()
        };
        assert!(matches!(src.resolve("a"), Err(LoginError::Empty(_))));
        let src = SecretSource {
            password_file: Some(dir.path().join("absent")),
            ..Default::default()
        };
        let e = src.resolve("a").err().unwrap();
        assert!(e.to_string().contains("absent"), "{e}");
        let src = SecretSource {
            password_file: Some(dir.path().join("x")),
            oauth2_token_command: Some("true".into()),
            ..Default::default()
        };
        assert!(matches!(src.resolve("a"), Err(LoginError::Conflict)));
    }

    #[test]
    fn a_token_command_gets_the_account_and_its_failures_are_named() {
        let src = SecretSource {
            oauth2_token_command: Some("printf 'tok-%s\\n' \"$WRIT_ACCOUNT\"".into()),
            ..Default::default()
        };
        assert_eq!(
            expose(&src.resolve("bob").unwrap()),
            ("bearer", "tok-bob".into())
        );
        for (cmd, named, why) in [
            ("exit 4", "`exit ...`", "exit status: 4"),
            ("true", "`true ...`", "printed no token"),
        ] {
            let src = SecretSource {
                oauth2_token_command: Some(cmd.into()),
                ..Default::default()
            };
            let e = src.resolve("bob").err().unwrap().to_string();
            assert!(e.contains(why) && e.contains(named), "{e}");
        }
    }

    #[test]
    fn a_failed_token_command_is_named_by_its_program_only() {
        for (cmd, program) in [
            ("false --client-secret hunter2", "false"),
            ("CLIENT_SECRET=hunter2 false", "false"),
            ("A=1 B_2=hunter2 '/bin/false' hunter2", "/bin/false"),
        ] {
            let src = SecretSource {
                oauth2_token_command: Some(cmd.into()),
                ..Default::default()
            };
            let e = src.resolve("bob").err().unwrap().to_string();
            assert!(e.contains(&format!("`{program} ...`")), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        assert_eq!(program_name("  "), "sh");
        assert_eq!(program_name("get-token --secret=x=y"), "get-token");
    }

    #[test]
    fn master_login_name() {
        let c = Credentials {
            user: "alice".into(),
            master: Some("admin".into()),
            separator: "*".into(),
            secret: Secret::Password(SecretString::from("x".to_string())),
        };
        assert_eq!(c.login_name(), "alice*admin");
        let c = Credentials { master: None, ..c };
        assert_eq!(c.login_name(), "alice");
    }
}
