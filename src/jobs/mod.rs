//! Bulk work on the mail already stored at the provider, over IMAP:
//! seal what is still plaintext, reseal what an old epoch sealed, count
//! what is there.
//!
//! - [`client`]: a small typed IMAP client (imap-next's client flow).
//! - [`login`]: passwords, OAuth2 tokens, master users.
//! - [`fetch`]: exactly the named messages, for disclosure.
//! - [`scan`]: what a mailbox holds, from two header fields per message.
//! - [`mover`]: seal and reseal in place, batch by batch, never losing a
//!   message; [`checkpoint`] makes it resumable (files, or the shared
//!   database with a lease per mailbox so one run at a time works on it
//!   across gateways), [`retry`] patient, [`copies`] tells its copies
//!   apart (a token in the marker), `book` keeps a resolve's accounts;
//!   its sealing and opening run off the runtime (`sealing`).

mod book;
pub mod census;
pub mod checkpoint;
pub mod client;
pub mod copies;
pub mod fetch;
pub mod login;
pub mod mover;
pub mod retry;
pub mod scan;
mod sealing;
