//! Shared integration-test harness. Use from a test binary with `mod common;`.
//!
//! - [`cli`]: `writ` as a command-line program in a temp working dir.
//! - [`corpus`]: the `.eml` messages under `tests/corpus/`.
//! - [`dns`]: dnsmasq on loopback serving SPF/DKIM/DMARC records; keys,
//!   `dkimsign` and `arcverify` (python3-dkim).
//! - [`files`]: copy and snapshot a file tree.
//! - [`haproxy`]: a real HAProxy in TCP mode in front of writ listeners.
//! - [`hsm`]: a SoftHSM2 token store of its own, with one token.
//! - [`provider()`]: a throwaway local mail provider (Postfix SMTP → LMTP →
//!   Dovecot IMAP) on loopback, one per test binary, started on first use
//!   and stopped when the test process exits. [`Provider::new_user`] gives
//!   each test its own mailbox, so tests can run in parallel.
//! - [`process`]: a child process with input on stdin, or output collected.
//! - [`python`]: Python scripts as clients (imaplib, smtplib, sockets).
//! - [`imap`]: a small IMAP client (literals, raw responses).
//! - [`imap_model`]: a model of what IMAP clients of one mailbox must see.
//! - [`imap_proxy`]: `writ serve` as the IMAP proxy (STARTTLS and implicit TLS).
//! - [`faults`]: a proxy in front of the provider's IMAP that throttles,
//!   says BYE, or drops the connection, by rule, and counts commands.
//! - [`hostile`]: a proxy in front of the provider's IMAP that rewrites
//!   commands and responses (a provider that lies, floods or trickles).
//! - [`smtp`]: a small SMTP client (every reply visible).
//! - [`jobs`]: `writ mailbox ...` and other commands on a provider mailbox.
//! - [`writ`]: `writ serve` as a child process (keyring, config, readiness).
//! - [`mail`]: unique markers; stored mail checked sealed and opened.
//! - [`mta`]: a second, minimal Postfix relaying everything to one relayhost.
//! - [`postgres`]: a throwaway PostgreSQL server (initdb in a temp dir, a
//!   free loopback port), one per test binary, a database per test.
//! - [`tls`]: a CA and a server certificate for loopback, made per run.
//!
//! Needs root and the Debian packages from `scripts/install-deps`.

// Each test binary uses a different part of the harness.
#![allow(dead_code, unused_imports)]

pub mod cli;
pub mod corpus;
pub mod dns;
pub mod faults;
pub mod files;
pub mod haproxy;
pub mod hostile;
pub mod hsm;
pub mod imap;
pub mod imap_model;
pub mod imap_proxy;
pub mod jobs;
pub mod mail;
pub mod mta;
pub mod postgres;
pub mod process;
pub mod provider;
pub mod python;
pub mod smtp;
pub mod tls;
pub mod writ;

pub use faults::{FaultProxy, Faults, When};
pub use imap::{Imap, Line, Response};
pub use provider::{DOMAIN, Master, Provider, User, provider};
pub use smtp::{Reply, Smtp};
