//! `[notify]`: mail about legal process, off by default. writ tells the
//! listed people when a disclosure request waits for approvers and when a
//! disclosure has been carried out, by mail through the provider's SMTP
//! server (`[provider.smtp]`). The notices carry no secret and no message
//! content (see `crate::notify`).

use std::path::PathBuf;

use serde::Deserialize;

use super::relay::ProviderConfig;

/// `[notify]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Off (the default): nothing is sent.
    pub enabled: bool,
    /// The sender address of the notices.
    pub from: String,
    /// Who is told: the approvers, the data protection officer, ...
    pub to: Vec<String>,
    /// SMTP AUTH login at the provider; unset: no AUTH (a provider that
    /// accepts writ's address, or the local test provider).
    pub login: Option<String>,
    /// File holding the password for `login` (one trailing newline is
    /// stripped); required with `login`.
    pub password_file: Option<PathBuf>,
}

impl NotifyConfig {
    /// Checks what serde cannot: a list of one-line problems, empty if none.
    pub fn problems(&self, provider: &ProviderConfig) -> Vec<String> {
        let mut out = Vec::new();
        if !self.enabled {
            return out;
        }
        if provider.smtp.is_none() {
            out.push("notify.enabled needs [provider.smtp] (notices go through it)".into());
        }
        if self.from.parse::<lettre::message::Mailbox>().is_err() {
            out.push(format!(
                "notify.from: `{}` is not a mail address",
                self.from
            ));
        }
        if self.to.is_empty() {
            out.push("notify.to must name at least one address".into());
        }
        for to in &self.to {
            if to.parse::<lettre::message::Mailbox>().is_err() {
                out.push(format!("notify.to: `{to}` is not a mail address"));
            }
        }
        if self.login.is_some() != self.password_file.is_some() {
            out.push("notify.login and notify.password_file go together".into());
        }
        out
    }
}
