//! The sealed-message format v1: seal, open, summary, detection.
//!
//! `docs/FORMAT.md` is the normative specification; this module is its
//! reference implementation. It is pure in the sense that matters: it reads
//! from a [`std::io::Read`], writes to a [`std::io::Write`], and owns no
//! sockets. The one file it may create is the unnamed spill file that holds
//! payload *ciphertext* while a large message streams through.
//!
//! ```text
//!   M ──► Sealer::seal ──► sealed message ──► open ──► M (byte for byte)
//!                                  └──► read_summary / open_summary ──► Summary
//! ```
//!
//! Everything a reader takes in is outside data: the stored message, the
//! armor, and the decrypted summary (the epoch recipient is public, so
//! anyone can encrypt one). Readers bound what they read, refuse summaries
//! past the writer's caps ([`summary::MAX_DEPTH`], [`summary::MAX_PARTS`],
//! [`summary::MAX_MESSAGE_SIZE`]) and never recurse over the entity tree.
//! `fuzz` holds the entry points that fuzz targets and tests run them on.

mod armor;
mod detect;
mod feed;
pub mod fuzz;
pub mod header;
mod identity;
mod open;
mod payload;
pub mod scan;
mod seal;
mod sink;
mod stream;
pub mod summary;
pub mod view;
mod witness;

pub use detect::{Detected, detect, stored_prefix};
pub use identity::OpeningKey;
pub use open::{
    Keys, MAX_AGE_HEADER, MAX_AGE_HEADER_LINES, MAX_STORED_HEADER, Opened, open, open_summary,
    open_summary_of, open_with_summary, read_summary,
};
pub use payload::{Workers, cores, worker_budget};
pub use scan::Limits;
pub use seal::{OUTER_FIELD_PREFIXES, OUTER_FIELDS, PROTECTED_FIELDS, Sealed, Sealer};
pub use summary::{Part, Summary};
pub use witness::Witness;

/// The format version this writ writes and reads (`X-Writ: v=1`).
pub const FORMAT_VERSION: u32 = 1;

/// The `protocol` of the outer multipart/encrypted and the type of part 1.
pub const SEALED_PROTOCOL: &str = "application/vnd.writ.sealed";
/// The type of part 2, the payload.
pub const PAYLOAD_TYPE: &str = "application/octet-stream";

/// Why sealing or opening failed. Messages name the problem and never
/// include key material or message content.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("no recipients to seal to (is the keyring initialised?)")]
    NoRecipients,
    #[error("cannot encrypt: {0}")]
    Encrypt(String),
    #[error("the message is not sealed (no X-Writ marker)")]
    NotSealed,
    #[error("sealed with format version {0}, which this writ does not read: upgrade writ")]
    UnsupportedVersion(String),
    #[error("sealed under epoch {0}, which is not in the keyring")]
    UnknownEpoch(String),
    #[error("none of the available keys opens this message")]
    NoMatchingKey,
    #[error("the sealed message is damaged: {0}")]
    Damaged(String),
    #[error("the summary is malformed: {0}")]
    Summary(String),
    #[error("cannot write the output: {0}")]
    Output(std::io::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl EnvelopeError {
    /// A short label for metrics (no message content, no key material).
    pub fn reason(&self) -> &'static str {
        match self {
            EnvelopeError::NoRecipients => "no_recipients",
            EnvelopeError::Encrypt(_) => "encrypt",
            EnvelopeError::NotSealed => "not_sealed",
            EnvelopeError::UnsupportedVersion(_) => "unsupported_version",
            EnvelopeError::UnknownEpoch(_) => "unknown_epoch",
            EnvelopeError::NoMatchingKey => "no_matching_key",
            EnvelopeError::Damaged(_) => "damaged",
            EnvelopeError::Summary(_) => "summary",
            EnvelopeError::Output(_) | EnvelopeError::Io(_) => "io",
        }
    }
}
