//! `[sweep]`: the continuous sealing service of `writ serve` (off by
//! default). It seals plaintext that reached the provider without passing
//! through writ (webmail, phone apps, the provider's own Sent copies,
//! provider-internal deliveries) in place, with the mailbox-job engine.
//! What it does is in `crate::sweep`; here are its settings and their
//! checks.

use std::path::PathBuf;

use serde::Deserialize;

use super::relay::ProviderConfig;

/// Accounts one `writ serve` sweeps, at most.
pub const MAX_ACCOUNTS: usize = 10_000;

/// `[sweep]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SweepConfig {
    /// Off (the default): `writ serve` runs no sweep.
    pub enabled: bool,
    /// The provider accounts whose mailboxes are swept.
    pub accounts: Vec<String>,
    /// The mailboxes swept in each account; empty (the default): every
    /// selectable mailbox, listed again each round.
    pub mailboxes: Vec<String>,
    /// Mailboxes left alone, by name (INBOX in any case): what must stay
    /// readable to the provider and its apps.
    pub skip: Vec<String>,
    /// Mailboxes left alone by their special use (RFC 6154 LIST
    /// attributes), whatever their name.
    pub skip_special_use: Vec<String>,
    /// Mailboxes watched with IDLE (one provider connection each, per
    /// account) when the provider has no NOTIFY (RFC 5465; with it, one
    /// connection per account watches every mailbox): new mail there
    /// (EXISTS) wakes the sweep, so it is sealed within seconds. The
    /// others are polled every `poll_secs`.
    pub idle: Vec<String>,
    /// Seconds between two rounds over an account's mailboxes when nothing
    /// woke it earlier; also how long one IDLE lasts before it is renewed.
    pub poll_secs: u64,
    /// Seconds within which new plaintext is sealed, given a responsive
    /// provider: a round starts at least this often, and plaintext older
    /// than this is logged as overdue.
    pub bound_secs: u64,
    /// Messages sealed per mailbox per round, at most (the rest wait for
    /// the next round, which follows at once).
    pub max_per_round: usize,
    /// Messages looked at (two header fields each) per mailbox per round,
    /// at most.
    pub max_scan_per_round: usize,
    /// Where the sweep keeps its checkpoints (its own: a `writ mailbox
    /// seal` run keeps its own in `[jobs] dir`). Unused with `[state]
    /// backend = "postgres"`: the sweep and `writ mailbox seal` then share
    /// one checkpoint per mailbox in the database, under its lease.
    pub dir: PathBuf,
    /// The provider's first pause after a failure, in seconds; doubled
    /// per failure in a row, at most `max_backoff_secs`.
    pub backoff_secs: u64,
    pub max_backoff_secs: u64,
    /// Log in as this master user on each account's behalf (Dovecot:
    /// `account*master`); the password is the master's.
    pub master_user: Option<String>,
    /// What joins account and master user.
    pub master_separator: String,
    /// The password (of the master user, or of the account), first line
    /// of this file. Without any of the three credential settings, the
    /// `WRIT_PROVIDER_PASSWORD` environment variable.
    pub password_file: Option<PathBuf>,
    /// XOAUTH2 with the bearer token in this file.
    pub oauth2_token_file: Option<PathBuf>,
    /// XOAUTH2 with the bearer token printed by this command (run with
    /// `sh -c` for each login, the account in `WRIT_ACCOUNT`, writ's secret
    /// variables removed: `jobs::login::HIDDEN_FROM_TOKEN_COMMAND`; errors
    /// name only its program).
    pub oauth2_token_command: Option<String>,
    /// Without UIDPLUS at the provider, expunge with EXPUNGE (which also
    /// removes every other message marked \Deleted in that mailbox).
    pub allow_expunge_all: bool,
}

impl Default for SweepConfig {
    fn default() -> Self {
        SweepConfig {
            enabled: false,
            accounts: Vec::new(),
            mailboxes: Vec::new(),
            skip: vec!["Drafts".into()],
            skip_special_use: vec!["\\Drafts".into()],
            idle: vec!["INBOX".into()],
            poll_secs: 60,
            bound_secs: 300,
            max_per_round: 200,
            max_scan_per_round: 5000,
            dir: PathBuf::from("sweep"),
            backoff_secs: 5,
            max_backoff_secs: 300,
            master_user: None,
            master_separator: "*".into(),
            password_file: None,
            oauth2_token_file: None,
            oauth2_token_command: None,
            allow_expunge_all: false,
        }
    }
}

impl SweepConfig {
    /// Checks what serde cannot: a list of one-line problems, empty if none
    /// (or if the sweep is off).
    pub fn problems(&self, provider: &ProviderConfig) -> Vec<String> {
        let mut p = Vec::new();
        if !self.enabled {
            return p;
        }
        if provider.imap.is_none() {
            p.push("sweep.enabled needs [provider.imap] (the sweep works over IMAP)".into());
        }
        if self.accounts.is_empty() {
            p.push("sweep.accounts must name at least one account".into());
        }
        if self.accounts.len() > MAX_ACCOUNTS {
            p.push(format!(
                "sweep.accounts names {} accounts: at most {MAX_ACCOUNTS}",
                self.accounts.len()
            ));
        }
        if self.accounts.iter().any(|a| a.trim().is_empty()) {
            p.push("sweep.accounts: an account name is empty".into());
        }
        if self.poll_secs == 0 || self.poll_secs > 1740 {
            p.push(format!(
                "sweep.poll_secs = {}: must be 1..=1740 (an IDLE lasts at most 29 minutes)",
                self.poll_secs
            ));
        }
        if self.bound_secs < self.poll_secs {
            p.push(format!(
                "sweep.bound_secs = {} is shorter than sweep.poll_secs = {}: a polled mailbox \
                 could not keep it",
                self.bound_secs, self.poll_secs
            ));
        }
        if self.max_per_round == 0 || self.max_per_round > 10_000 {
            p.push(format!(
                "sweep.max_per_round = {}: must be 1..=10000",
                self.max_per_round
            ));
        }
        if self.max_scan_per_round < self.max_per_round || self.max_scan_per_round > 100_000 {
            p.push(format!(
                "sweep.max_scan_per_round = {}: must be max_per_round..=100000",
                self.max_scan_per_round
            ));
        }
        if self.idle.len() > 16 {
            p.push(format!(
                "sweep.idle names {} mailboxes: at most 16 (one connection each per account)",
                self.idle.len()
            ));
        }
        if self.backoff_secs == 0 || self.max_backoff_secs < self.backoff_secs {
            p.push("sweep.backoff_secs must be at least 1 and at most max_backoff_secs".into());
        }
        let given = [
            self.password_file.is_some(),
            self.oauth2_token_file.is_some(),
            self.oauth2_token_command.is_some(),
        ];
        if given.iter().filter(|&&g| g).count() > 1 {
            p.push(
                "sweep: give only one of password_file, oauth2_token_file, oauth2_token_command"
                    .into(),
            );
        }
        p
    }

    /// Whether `mailbox` (with its LIST attributes) is left alone.
    pub fn skips(&self, mailbox: &str, attributes: &[String]) -> bool {
        let named = self.skip.iter().any(|s| {
            s == mailbox
                || (s.eq_ignore_ascii_case("INBOX") && mailbox.eq_ignore_ascii_case("INBOX"))
        });
        named
            || attributes.iter().any(|a| {
                self.skip_special_use
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(a))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> SweepConfig {
        SweepConfig {
            enabled: true,
            accounts: vec!["alice".into()],
            ..SweepConfig::default()
        }
    }

    #[test]
    fn off_has_no_problems_on_needs_provider_and_accounts() {
        let none = ProviderConfig::default();
        assert!(SweepConfig::default().problems(&none).is_empty());
        let p = SweepConfig {
            accounts: Vec::new(),
            ..on()
        }
        .problems(&none);
        assert!(p.iter().any(|p| p.contains("[provider.imap]")), "{p:?}");
        assert!(p.iter().any(|p| p.contains("sweep.accounts")), "{p:?}");
    }

    #[test]
    fn bounds_and_credentials_are_checked() {
        let none = ProviderConfig::default();
        let p = SweepConfig {
            poll_secs: 600,
            bound_secs: 60,
            max_per_round: 0,
            password_file: Some("a".into()),
            oauth2_token_command: Some("b".into()),
            ..on()
        }
        .problems(&none);
        for want in ["bound_secs", "max_per_round", "only one of"] {
            assert!(p.iter().any(|p| p.contains(want)), "{want}: {p:?}");
        }
    }

    #[test]
    fn drafts_are_skipped_by_name_and_by_special_use() {
        let c = on();
        assert!(c.skips("Drafts", &[]));
        assert!(c.skips("Entwürfe", &["\\HasNoChildren".into(), "\\Drafts".into()]));
        assert!(!c.skips("INBOX", &[]));
        assert!(!c.skips("Sent", &["\\Sent".into()]));
        let c = SweepConfig {
            skip: vec!["inbox".into()],
            ..on()
        };
        assert!(c.skips("INBOX", &[]));
    }
}
