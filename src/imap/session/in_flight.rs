//! The tags of commands at the provider: forwarded, not yet answered.
//!
//! Commands keep the client's own tags, and the provider's tagged answer is
//! matched to its command by tag alone: two commands in flight under one
//! tag would make one's answer pass for the other's (an OK to a NOOP taken
//! for a LOGIN's). So a client command whose tag is in flight is refused,
//! and so is one whose tag begins with [`RESERVED_PREFIX`], which writ's
//! own commands (FETCH and SEARCH plans) use.
//!
//! Memory: one entry per command at the provider; the provider answers in
//! turn and writ writes to it only as fast as it reads.

use std::collections::HashMap;

use imap_next::imap_types::core::Tag;

/// Tags writ's own commands use; clients may not.
pub const RESERVED_PREFIX: &str = "writ.";

/// What a client command whose tag is still in use is told (tagged BAD).
pub const TAG_IN_USE: &str = "Tag in use by a command in progress: use a new tag";
/// What a client command whose tag is writ's is told (tagged BAD).
pub const TAG_RESERVED: &str = "Tags beginning with writ. are reserved by the proxy";

#[derive(Debug, Default)]
pub struct InFlight {
    tags: HashMap<String, u32>,
}

impl InFlight {
    /// Why a client command with `tag` cannot go to the provider now.
    pub fn refusal(&self, tag: &Tag<'_>) -> Option<&'static str> {
        let t = tag.inner();
        if t.starts_with(RESERVED_PREFIX) {
            Some(TAG_RESERVED)
        } else if self.tags.contains_key(t) {
            Some(TAG_IN_USE)
        } else {
            None
        }
    }

    /// No command is at the provider.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// A command with `tag` went to the provider.
    pub fn sent(&mut self, tag: &Tag<'_>) {
        *self.tags.entry(tag.inner().to_owned()).or_default() += 1;
    }

    /// The provider answered `tag`. Returns whether a command with that
    /// tag was in flight (a tagged answer to nothing is ignored).
    pub fn answered(&mut self, tag: &Tag<'_>) -> bool {
        let Some(n) = self.tags.get_mut(tag.inner()) else {
            return false;
        };
        *n -= 1;
        if *n == 0 {
            self.tags.remove(tag.inner());
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_is_in_use_until_answered() {
        let mut f = InFlight::default();
        let x = Tag::try_from("x").unwrap();
        assert_eq!(f.refusal(&x), None);
        f.sent(&x);
        assert_eq!(f.refusal(&x), Some(TAG_IN_USE));
        assert!(f.answered(&x));
        assert_eq!(f.refusal(&x), None);
        assert!(!f.answered(&x));
        let w = Tag::try_from("writ.1").unwrap();
        assert_eq!(f.refusal(&w), Some(TAG_RESERVED));
    }
}
