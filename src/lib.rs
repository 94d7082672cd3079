//! writ: a mail gateway that seals every message before a hosted provider
//! stores it.
//!
//! The crate is organised as rooms, each owning its types:
//!
//! - [`envelope`]: the sealed-message format v1 (seal, open, summary,
//!   detection). Pure: no sockets, no files of its own beyond the ciphertext
//!   spill it is handed.
//! - [`keys`]: the keyring on disk: epochs, the master identity, unlock,
//!   rotate, passwd.
//! - [`config`]: the TOML configuration and its validation.
//! - [`policy`]: who is sealed, who is refused.
//! - [`serve`]: `writ serve`, every configured service in one process.
//! - [`smtp`]: the SMTP relay (a pure session state machine, a tokio shell).
//! - [`imap`]: the IMAP proxy (sans-IO session, FETCH/SEARCH/APPEND rewriting).
//! - [`jobs`]: bulk mailbox work over IMAP: seal existing mail, reseal, verify.
//! - [`net`]: what [`smtp`] and [`imap`] share below their protocols: the
//!   TCP-or-TLS stream, and the provider endpoint (connect, implicit TLS,
//!   plain to loopback only, the handshake after STARTTLS).
//! - [`tls`]: rustls acceptors and connectors, PEM loading, plaintext policy.
//! - [`audit`]: the tamper-evident audit log of key events.
//! - [`escrow`]: the escrow identity split M-of-N among custodians (Shamir).
//! - [`hash`]: SHA-256 in hex, as content is named in logs and manifests.
//! - [`disclose`]: lawful disclosure: requests, approval keys and the
//!   M-of-N approval quorum, the signed bundle of exactly the named
//!   messages, and its verification.
//! - [`admin`]: the admin HTTP endpoint (`/healthz`, `/metrics`) and metric names.
#![forbid(unsafe_code)]
// No unwrap/expect outside tests: a panic on outside data is a crash of
// every session of the process (errors carry one line instead).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod admin;
pub mod audit;
pub mod config;
pub mod disclose;
pub mod envelope;
pub mod escrow;
pub mod hash;
pub mod imap;
pub mod jobs;
pub mod keys;
pub mod net;
pub mod notify;
pub mod policy;
pub mod serve;
pub mod smtp;
pub mod state;
pub mod sweep;
pub mod tls;

/// An error and its causes on one line, joined by ": " (line breaks made
/// spaces): what the CLI prints and logs carry. A cause the text before it
/// already ends with (a variant that writes its source into its own text,
/// as `state: {0}` does) is not said twice.
pub fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut said: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(cause) = next {
        let text = cause.to_string().replace(['\r', '\n'], " ");
        if !said.last().is_some_and(|last| last.ends_with(&text)) {
            said.push(text);
        }
        next = cause.source();
    }
    said.join(": ")
}
