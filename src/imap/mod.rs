//! The IMAP proxy: what a client sees of sealed mail.
//!
//! - [`capabilities`]: which of the provider's capabilities clients see.
//! - [`section`]: body sections (`BODY[...]<partial>`, `RFC822*`) of an
//!   opened message, answered as Dovecot answers them for the plaintext.
//! - [`session`]: the sans-IO core joining the client and provider flows.
//! - [`fetch`]: FETCH as a plan of provider commands, so that sealed
//!   messages are answered from what writ opens; [`answer`] computes the
//!   items of one sealed message; [`opened`] opens one sealed message for
//!   FETCH and SEARCH alike, as work off the session.
//! - [`intake`]: caps on the client's commands before they are parsed.
//! - [`saved_result`]: SEARCHRES, the `$` of a SEARCH with SAVE.
//! - [`sequence`]: the sequence sets of writ's own commands.
//! - [`upstream`]: the connection to the provider's IMAP server.
//! - [`compress`]: COMPRESS=DEFLATE on the client connection (RFC 4978).
//! - [`connection`] and [`listener`]: the tokio shells around them.

pub mod account;
pub mod answer;
pub mod append;
pub mod cache;
pub mod capabilities;
pub mod compress;
pub mod connection;
pub mod fetch;
#[doc(hidden)]
pub mod fuzz;
pub mod intake;
pub mod list_extended;
pub mod listener;
pub mod opened;
pub mod saved_result;
pub mod search;
pub mod search_plan;
pub mod search_return;
pub mod section;
pub mod sequence;
pub mod session;
pub mod sort;
#[cfg(test)]
mod testing;
pub mod thread;
pub mod upstream;
