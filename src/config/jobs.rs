//! `[jobs]`: mailbox jobs (`writ mailbox seal/reseal/verify`, `keys retire`).

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Where jobs keep their checkpoints (one file per account and
    /// mailbox). Deleting it is safe between runs, not during one: a
    /// crashed run's last batch is then not deduplicated. Unused with
    /// `[state] backend = "postgres"` (checkpoints in the database).
    pub dir: PathBuf,
    /// Mailboxes worked on at once, one provider connection each.
    pub parallel: usize,
    /// Messages per batch: fetched together, APPENDed pipelined (with
    /// LITERAL+), then verified and expunged together.
    pub batch: usize,
    /// How often a mailbox is retried after a transient provider failure
    /// (busy, BYE, connection lost), with exponential backoff.
    pub retries: u32,
    /// The first backoff pause, in milliseconds (doubled each retry, at
    /// most 60 s).
    pub backoff_ms: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            dir: PathBuf::from("jobs"),
            parallel: 2,
            batch: 25,
            retries: 8,
            backoff_ms: 500,
        }
    }
}

impl JobsConfig {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.parallel == 0 || self.parallel > 64 {
            p.push(format!(
                "[jobs] parallel = {}: must be 1..=64",
                self.parallel
            ));
        }
        if self.batch == 0 || self.batch > 1000 {
            p.push(format!("[jobs] batch = {}: must be 1..=1000", self.batch));
        }
        p
    }
}
