//! The unlocked keyring of a running `writ serve`, which SIGHUP can grow
//! after `writ keys rotate` without stopping anything.
//!
//! Invariants: epochs are only ever added, never removed or replaced while
//! the server runs, so every session (those in progress included) keeps
//! opening what it could open before, and sees a new epoch as soon as a
//! reload adds it. That is why the identities live in an append-only
//! concurrent vector (`boxcar`): [`crate::envelope::Keys`] hands out
//! references to them, which stay valid however many reloads follow. A
//! reload that fails (wrong passphrase after `keys passwd`, unreadable
//! file) adds nothing and leaves the server as it was.
//!
//! Key material is zeroized when the server exits (age's identities zeroize
//! themselves on drop); none of it is ever logged.

use std::sync::Mutex;

use age::x25519::Identity;

use crate::envelope::OpeningKey;

use super::Unlocked;

/// Every epoch identity the server has unlocked so far.
pub struct LiveKeys {
    /// Each epoch's id, its identity, and the same identity for opening
    /// (its public key computed once: [`OpeningKey`]).
    epochs: boxcar::Vec<(String, Identity, OpeningKey)>,
    /// Serialises [`LiveKeys::add`] so that an epoch is added once.
    adding: Mutex<()>,
}

impl LiveKeys {
    pub fn new(unlocked: Unlocked) -> LiveKeys {
        let keys = LiveKeys {
            epochs: boxcar::Vec::new(),
            adding: Mutex::new(()),
        };
        keys.add(unlocked);
        keys
    }

    /// Adds the epochs of `unlocked` not held yet; returns their ids.
    pub fn add(&self, unlocked: Unlocked) -> Vec<String> {
        let _one_at_a_time = self.adding.lock().unwrap_or_else(|p| p.into_inner());
        let mut added = Vec::new();
        for (id, identity) in unlocked.identities {
            if !self.holds(&id) {
                added.push(id.clone());
                let opening = OpeningKey::new(&identity);
                self.epochs.push((id, identity, opening));
            }
        }
        added
    }

    /// Whether the epoch `id` is unlocked.
    pub fn holds(&self, id: &str) -> bool {
        self.epochs.iter().any(|(_, (held, _, _))| held == id)
    }

    /// How many epochs are unlocked.
    pub fn len(&self) -> usize {
        self.epochs.count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl crate::envelope::Keys for LiveKeys {
    fn identities(&self, epoch: &str) -> Vec<&dyn age::Identity> {
        self.epochs
            .iter()
            .filter(|(_, (id, _, _))| id == epoch)
            .map(|(_, (_, _, opening))| opening as &dyn age::Identity)
            .collect()
    }

    /// The same keys the unlocked keyring derives, for every epoch held
    /// (the IMAP cache takes them at start and again after a reload).
    fn local_keys(&self, context: &[u8]) -> Vec<(String, zeroize::Zeroizing<[u8; 32]>)> {
        self.epochs
            .iter()
            .filter_map(|(_, (id, identity, _))| {
                Some((id.clone(), super::unlock::local_key(id, identity, context)?))
            })
            .collect()
    }
}

impl std::fmt::Debug for LiveKeys {
    // Never print key material, even in a debug log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveKeys")
            .field("epochs", &self.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Keys;
    use std::collections::BTreeMap;

    fn unlocked(ids: &[&str]) -> (Unlocked, Vec<String>) {
        let mut identities = BTreeMap::new();
        let mut publics = Vec::new();
        for id in ids {
            let identity = Identity::generate();
            publics.push(identity.to_public().to_string());
            identities.insert(id.to_string(), identity);
        }
        (Unlocked::new(identities), publics)
    }

    #[test]
    fn a_reload_adds_new_epochs_and_keeps_the_old_ones() {
        let (first, _) = unlocked(&["a"]);
        let keys = LiveKeys::new(first);
        let before = keys.identities("a").len();
        // A reference taken before the reload stays valid after it.
        let held = keys.identities("a");
        let (second, _) = unlocked(&["a", "b"]);
        assert_eq!(keys.add(second), vec!["b".to_string()]);
        assert_eq!(held.len(), 1);
        assert_eq!(keys.identities("a").len(), before);
        assert_eq!(keys.identities("b").len(), 1);
        assert!(keys.identities("c").is_empty());
        assert_eq!(keys.len(), 2);
    }

    #[test]
    fn concurrent_reloads_add_each_epoch_once() {
        let keys = std::sync::Arc::new(LiveKeys::new(unlocked(&["a"]).0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let keys = keys.clone();
                std::thread::spawn(move || {
                    keys.add(unlocked(&["a", "b", "c"]).0);
                    assert!(!keys.identities("a").is_empty());
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(keys.len(), 3);
    }
}
