//! The SMTP relay: a drop-in relay that seals mail for protected recipients
//! before the provider sees it.
//!
//! - [`command`], [`reply`], [`data`]: the protocol's pieces, pure.
//! - [`session`]: the session state machine, pure: every rule of the relay.
//! - `upstream`, `pool`, `connection`, `listener`: the thin tokio shell
//!   around it (`pool`: idle provider connections reused by relay sessions).
//! - [`scanner`]: the content scanner (rspamd's HTTP protocol), before sealing.
//! - [`inbound_auth`]: SPF, DKIM, DMARC and ARC verification before sealing
//!   (`[auth]`, relay listeners); [`arc_seal`]: writ's ARC set on the
//!   sealed message.
//! - [`fuzz`]: the DATA decoder's fuzz entry point.

pub mod arc_seal;
pub mod command;
pub mod connection;
pub mod data;
pub mod fuzz;
pub mod inbound_auth;
pub mod listener;
pub mod pool;
pub mod reply;
pub mod scanner;
pub mod sender_fields;
pub mod session;
pub mod upstream;
