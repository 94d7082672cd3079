//! TOML configuration and its validation.
//!
//! Every table denies unknown keys: a misspelt option must be an error, never
//! a silently ignored line, because a typo in `[seal]` could otherwise weaken
//! what gets protected. Errors name the file, the line and the key.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

mod auth;
mod disclosure;
mod imap;
mod jobs;
mod notify;
mod relay;
mod scanner;
pub use auth::{ArcConfig, AuthConfig, DmarcAction, parse_dns_server};
mod state;
mod sweep;
pub use disclosure::{ApproverConfig, DisclosureConfig, check_approver_name, parse_public_key};
pub use imap::{ImapConfig, ImapListenerConfig, ImapListenerKind};
pub use jobs::JobsConfig;
pub use notify::NotifyConfig;
pub use relay::{
    ExternalPolicy, ListenerConfig, ListenerKind, Network, ProviderConfig, ServeConfig, SmtpConfig,
    UpstreamConfig, UpstreamSecurity,
};
pub use scanner::{ScanFailure, ScannerConfig};
pub use state::{
    Backend, MAX_GATEWAY_NAME, MAX_LEASE_SECS, MAX_POOL_SIZE, MAX_TIMEOUT_SECS, MIN_LEASE_SECS,
    StateConfig, check_gateway_name,
};
pub use sweep::SweepConfig;

/// Where `writ` looks for its configuration when `--config` is not given.
pub const DEFAULT_PATH: &str = "config/writ.toml";

/// Default for [`SealConfig::spill_threshold`]: 8 MiB.
pub const DEFAULT_SPILL_THRESHOLD: u64 = 8 * 1024 * 1024;

/// Default for [`SealConfig::max_header_bytes`]: 1 MiB.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 1024 * 1024;

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub keys: KeysConfig,
    pub seal: SealConfig,
    pub log: LogConfig,
    /// `[audit]`: the audit log of key events.
    pub audit: AuditConfig,
    /// `[serve]`: what `writ serve` runs.
    pub serve: ServeConfig,
    /// `[smtp]`: the SMTP relay.
    pub smtp: SmtpConfig,
    /// `[imap]`: the IMAP proxy.
    pub imap: ImapConfig,
    /// `[provider]`: where the hosted provider is.
    pub provider: ProviderConfig,
    /// `[jobs]`: mailbox jobs at the provider.
    pub jobs: JobsConfig,
    /// `[disclosure]`: the approvals `writ disclose` needs.
    pub disclosure: DisclosureConfig,
    /// `[notify]`: mail about legal process (off by default).
    pub notify: NotifyConfig,
    /// `[scanner]`: spam and malware scanning before sealing (off by
    /// default).
    pub scanner: ScannerConfig,
    /// `[auth]`: SPF, DKIM, DMARC and ARC on relay listeners before
    /// sealing, ARC sealing after (off by default).
    pub auth: AuthConfig,
    /// `[sweep]`: sealing plaintext that reached the provider another
    /// way, in place (off by default).
    pub sweep: SweepConfig,
    /// `[state]`: where shared state lives (files, or PostgreSQL).
    pub state: StateConfig,
}

/// `[keys]`
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// The keyring directory (relative paths are relative to the working
    /// directory, like the `--keys` option that overrides it).
    pub dir: PathBuf,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            dir: PathBuf::from("keys"),
        }
    }
}

/// `[seal]`
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SealConfig {
    /// Recipients every sealed message is also encrypted to, besides the
    /// active epoch and the escrow key.
    /// At most [`MAX_EXTRA_RECIPIENTS`]: readers cap a message's age
    /// header (`envelope::MAX_AGE_HEADER`).
    #[serde(deserialize_with = "de_recipients")]
    pub extra_recipients: Vec<age::x25519::Recipient>,
    /// Header fields protected in addition to the built-in list.
    #[serde(deserialize_with = "de_field_names")]
    pub protected_fields: Vec<String>,
    /// Header fields copied to the stored (outer) header in addition to the
    /// built-in routing set (`envelope::OUTER_FIELDS`); every other field
    /// lives only inside the payload. Protected fields never go outside.
    #[serde(deserialize_with = "de_field_names")]
    pub outer_fields: Vec<String>,
    /// Ciphertext is kept in memory up to this many bytes, then spilled to a
    /// temp file.
    pub spill_threshold: u64,
    /// Where spilled ciphertext goes (the system temp dir if unset).
    pub temp_dir: Option<PathBuf>,
    /// Bytes of a header block kept for the outer header and the summary.
    /// A longer header is still sealed whole (the payload is byte-exact);
    /// fields past the cap stay inside only. 1 KiB ..= 4 MiB
    /// ([`MAX_HEADER_BYTES_RANGE`]): readers take a stored header of at
    /// most `envelope::open::MAX_STORED_HEADER` (8 MiB).
    #[serde(deserialize_with = "de_max_header_bytes")]
    pub max_header_bytes: u64,
}

impl Default for SealConfig {
    fn default() -> Self {
        SealConfig {
            extra_recipients: Vec::new(),
            protected_fields: Vec::new(),
            outer_fields: Vec::new(),
            spill_threshold: DEFAULT_SPILL_THRESHOLD,
            temp_dir: None,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        }
    }
}

/// `[audit]`
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Who is named as operator in audit records when `--operator` is not
    /// given (default: the login name, `$USER` or `$LOGNAME`).
    pub operator: Option<String>,
}

/// `[log]`
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: LogLevel,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Syntax, unknown key, wrong type or invalid value; `detail` carries the
    /// line, column and key.
    #[error("{}: {detail}", .path.display())]
    Invalid { path: PathBuf, detail: String },
}

impl Config {
    /// Loads and validates the config file at `path`; a missing file is an
    /// error.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &src)
    }

    /// Like [`Config::load`], but a file that does not exist means the
    /// defaults. Meant for the default path only: a path the user named
    /// explicitly must exist.
    pub fn load_or_default(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(src) => Config::parse(path, &src),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Config::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses config text; `path` only names the source in errors.
    pub fn parse(path: &Path, src: &str) -> Result<Config, ConfigError> {
        toml::from_str(src).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            detail: describe_toml_error(src, &e),
        })
    }
}

// Elements are validated one by one inside a visitor, while toml still
// knows the element's position, so that an error points at the bad
// element's line rather than at the start of the array.

/// One string, validated and converted by [`CheckStr::check`].
struct Checked<T>(T);

trait CheckStr: Sized {
    const EXPECTING: &'static str;
    fn check(s: &str) -> Result<Self, String>;
}

impl<'de, T: CheckStr> Deserialize<'de> for Checked<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<T: CheckStr> Visitor<'_> for V<T> {
            type Value = Checked<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(T::EXPECTING)
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Checked<T>, E> {
                T::check(s).map(Checked).map_err(E::custom)
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

impl CheckStr for age::x25519::Recipient {
    const EXPECTING: &'static str = "an age recipient string (age1...)";
    fn check(s: &str) -> Result<Self, String> {
        age::x25519::Recipient::from_str(s.trim())
            .map_err(|e| format!("`{s}` is not an age X25519 recipient (age1...): {e}"))
    }
}

/// A header field name, as given in `protected_fields`.
struct FieldName(String);

impl CheckStr for FieldName {
    const EXPECTING: &'static str = "a header field name string";
    fn check(s: &str) -> Result<Self, String> {
        if is_field_name(s) {
            Ok(FieldName(s.to_string()))
        } else {
            Err(format!(
                "`{s}` is not a header field name (printable ASCII, no colon or space)"
            ))
        }
    }
}

/// Most `[seal] extra_recipients`.
pub const MAX_EXTRA_RECIPIENTS: usize = 64;

/// What `[seal] max_header_bytes` may be.
pub const MAX_HEADER_BYTES_RANGE: std::ops::RangeInclusive<u64> = 1024..=4 * 1024 * 1024;

// Sealed headers stay readable: the outer header (at most
// max_header_bytes plus writ's fields) is within the readers' cap.
const _: () =
    assert!(*MAX_HEADER_BYTES_RANGE.end() * 2 <= crate::envelope::MAX_STORED_HEADER as u64);

fn de_recipients<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<age::x25519::Recipient>, D::Error> {
    let items = Vec::<Checked<age::x25519::Recipient>>::deserialize(d)?;
    if items.len() > MAX_EXTRA_RECIPIENTS {
        return Err(serde::de::Error::custom(format!(
            "{} recipients: at most {MAX_EXTRA_RECIPIENTS}",
            items.len()
        )));
    }
    Ok(items.into_iter().map(|i| i.0).collect())
}

fn de_max_header_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = u64::deserialize(d)?;
    if !MAX_HEADER_BYTES_RANGE.contains(&n) {
        return Err(serde::de::Error::custom(format!(
            "{n}: must be {}..={} bytes",
            MAX_HEADER_BYTES_RANGE.start(),
            MAX_HEADER_BYTES_RANGE.end()
        )));
    }
    Ok(n)
}

fn de_field_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let items = Vec::<Checked<FieldName>>::deserialize(d)?;
    Ok(items.into_iter().map(|i| i.0.0).collect())
}

/// RFC 5322 `field-name = 1*ftext`, ftext = %d33-57 / %d59-126.
fn is_field_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// Renders a toml error on one line: `line L, column C: <message> (key `a.b`)`.
///
/// toml's own Display is a multi-line snippet and, for a wrong type, does not
/// name the key; the key path is recovered from the error's byte span.
pub(crate) fn describe_toml_error(src: &str, err: &toml::de::Error) -> String {
    let message = err
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let Some(span) = err.span() else {
        return message;
    };
    let pos = span.start.min(src.len());
    let before = src.get(..pos).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    match key_at(src, pos) {
        Some(KeyAt::Value(key)) => format!("line {line}, column {column}: {message} (key `{key}`)"),
        Some(KeyAt::Table(table)) => {
            format!("line {line}, column {column}: {message} (in `{table}`)")
        }
        None => format!("line {line}, column {column}: {message}"),
    }
}

/// Where an error offset lies: in a key's value, or in a table but outside
/// any of its values (an unknown key there).
enum KeyAt {
    Value(String),
    Table(String),
}

/// The dotted key path whose value (or, for an unknown key, whose table)
/// contains byte offset `pos`.
fn key_at(src: &str, pos: usize) -> Option<KeyAt> {
    // A document that failed to deserialize may still be valid TOML; re-read
    // it as a tree of spanned values to map the offset back to a key.
    if let Ok(tree) = toml::from_str::<SpanTree>(src) {
        let mut path = Vec::new();
        let in_table = tree.find(pos, &mut path);
        if !path.is_empty() {
            let path = path.join(".");
            return Some(if in_table {
                KeyAt::Table(path)
            } else {
                KeyAt::Value(path)
            });
        }
    }
    // toml gives dotted-key tables no span, so the tree cannot be built;
    // fall back to the `key = ...` text on the error's line.
    let line_start = src.get(..pos)?.rfind('\n').map_or(0, |i| i + 1);
    let head = src.get(line_start..pos)?;
    let (key, _) = head.split_once('=')?;
    let key = key.trim();
    (!key.is_empty() && !key.starts_with('#')).then(|| KeyAt::Value(key.to_string()))
}

/// A TOML document as nested tables and arrays with byte spans.
enum SpanTree {
    Table(Vec<(String, toml::Spanned<SpanTree>)>),
    Array(Vec<toml::Spanned<SpanTree>>),
    Leaf,
}

impl SpanTree {
    /// Pushes the keys leading to the innermost node containing `pos`;
    /// returns whether that node is a table.
    fn find(&self, pos: usize, path: &mut Vec<String>) -> bool {
        match self {
            SpanTree::Table(entries) => {
                match entries.iter().find(|(_, v)| v.span().contains(&pos)) {
                    Some((k, v)) => {
                        path.push(k.clone());
                        v.get_ref().find(pos, path)
                    }
                    None => true,
                }
            }
            SpanTree::Array(items) => {
                let found = items
                    .iter()
                    .enumerate()
                    .find(|(_, v)| v.span().contains(&pos));
                match found {
                    Some((i, v)) => {
                        path.push(i.to_string());
                        v.get_ref().find(pos, path)
                    }
                    None => false,
                }
            }
            SpanTree::Leaf => false,
        }
    }
}

impl<'de> Deserialize<'de> for SpanTree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SpanTree;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any TOML value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<SpanTree, E> {
                Ok(SpanTree::Leaf)
            }
            fn visit_i64<E>(self, _: i64) -> Result<SpanTree, E> {
                Ok(SpanTree::Leaf)
            }
            fn visit_u64<E>(self, _: u64) -> Result<SpanTree, E> {
                Ok(SpanTree::Leaf)
            }
            fn visit_f64<E>(self, _: f64) -> Result<SpanTree, E> {
                Ok(SpanTree::Leaf)
            }
            fn visit_str<E>(self, _: &str) -> Result<SpanTree, E> {
                Ok(SpanTree::Leaf)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<SpanTree, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = a.next_element()? {
                    items.push(item);
                }
                Ok(SpanTree::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<SpanTree, A::Error> {
                let mut entries = Vec::new();
                while let Some(k) = a.next_key::<String>()? {
                    entries.push((k, a.next_value()?));
                }
                Ok(SpanTree::Table(entries))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(src: &str) -> Result<Config, String> {
        Config::parse(Path::new("c.toml"), src).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_is_default() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(Config::default().keys.dir, PathBuf::from("keys"));
        assert_eq!(Config::default().seal.spill_threshold, 8 << 20);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = parse("[seal]\nspill_threshold = 5\nspil_threshold = 6\n").unwrap_err();
        assert!(e.starts_with("c.toml: line 3, column 1:"), "{e}");
        assert!(
            e.contains("spil_threshold") && e.contains("(in `seal`)"),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn wrong_type_names_key_and_line() {
        let e = parse("\n[seal]\nspill_threshold = \"big\"\n").unwrap_err();
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("seal.spill_threshold"), "{e}");
        let e = parse("seal.max_header_bytes = true\n").unwrap_err();
        assert!(
            e.contains("line 1") && e.contains("seal.max_header_bytes"),
            "{e}"
        );
    }

    #[test]
    fn recipients_and_field_names_validated() {
        let r = age::x25519::Identity::generate().to_public().to_string();
        let c = parse(&format!(
            "[seal]\nextra_recipients = [\"{r}\"]\nprotected_fields = [\"X-Foo\"]\n"
        ))
        .unwrap();
        assert_eq!(c.seal.extra_recipients[0].to_string(), r);
        let e = parse("[seal]\nextra_recipients = [\n  \"age1nope\",\n]\n").unwrap_err();
        assert!(e.contains("line 3") && e.contains("age1nope"), "{e}");
        assert!(e.contains("seal.extra_recipients.0"), "{e}");
        let e = parse("[seal]\nprotected_fields = [\"X Foo:\"]\n").unwrap_err();
        assert!(
            e.contains("line 2") && e.contains("protected_fields"),
            "{e}"
        );
        let c = parse("[seal]\nouter_fields = [\"X-Loop\"]\n").unwrap();
        assert_eq!(c.seal.outer_fields, ["X-Loop"]);
        let e = parse("[seal]\nouter_fields = [\"X-Loop:\"]\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("outer_fields"), "{e}");
        let many = vec![format!("\"{r}\""); MAX_EXTRA_RECIPIENTS + 1].join(", ");
        let e = parse(&format!("[seal]\nextra_recipients = [{many}]\n")).unwrap_err();
        assert!(
            e.contains("at most 64") && e.contains("extra_recipients"),
            "{e}"
        );
        let many = vec![format!("\"{r}\""); MAX_EXTRA_RECIPIENTS].join(", ");
        parse(&format!("[seal]\nextra_recipients = [{many}]\n")).unwrap();
        for bad in [0, 1023, 4 * 1024 * 1024 + 1] {
            let e = parse(&format!("[seal]\nmax_header_bytes = {bad}\n")).unwrap_err();
            assert!(e.contains("must be 1024..=4194304 bytes"), "{e}");
        }
        for good in [1024, 1 << 20, 4 << 20] {
            let c = parse(&format!("[seal]\nmax_header_bytes = {good}\n")).unwrap();
            assert_eq!(c.seal.max_header_bytes, good);
        }
    }

    #[test]
    fn syntax_error_is_one_line() {
        let e = parse("[seal\n").unwrap_err();
        assert!(e.contains("line 1") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn log_level() {
        assert_eq!(
            parse("[log]\nlevel = \"debug\"\n").unwrap().log.level,
            LogLevel::Debug
        );
        assert!(
            parse("[log]\nlevel = \"loud\"\n")
                .unwrap_err()
                .contains("log.level")
        );
    }

    #[test]
    fn missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("none.toml");
        assert!(Config::load(&p).is_err());
        assert_eq!(Config::load_or_default(&p).unwrap(), Config::default());
    }
}
