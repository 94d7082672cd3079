//! What the sweep knows of one mailbox between rounds, without I/O: how
//! far it has looked (a UID high-water mark) and which plaintext messages
//! it found and has not sealed yet.
//!
//! Invariants:
//! - Only UIDs under the current UIDVALIDITY are kept: a new UIDVALIDITY
//!   forgets everything and the mailbox is looked at afresh.
//! - Each UID is looked at once (`next_uid` only grows): a round scans
//!   only what arrived since, at most `max_scan` UIDs.
//! - What is pending stays pending until a mover run has had it in its
//!   scope (sealed, gone, or left as it was and retried after a pause):
//!   the sweep never forgets plaintext it found.
//! - The ledger lives in memory. After a restart every mailbox is looked
//!   at from UID 1 once; the mover's checkpoint, not the ledger, is what
//!   makes a crash lose and duplicate nothing.

use std::collections::BTreeMap;
use std::time::Instant;

/// One plaintext message found and not sealed yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// When it reached the provider (seconds since the Unix epoch): its
    /// INTERNALDATE, or when the sweep first saw it if that is earlier or
    /// there is none.
    since: i64,
    /// Not tried again before this (after a run left it as it was).
    not_before: Option<Instant>,
}

/// One mailbox's ledger.
#[derive(Debug, Default)]
pub struct Ledger {
    uidvalidity: u32,
    /// The lowest UID not looked at yet.
    next_uid: u32,
    pending: BTreeMap<u32, Pending>,
}

impl Ledger {
    /// After SELECT/EXAMINE: a new UIDVALIDITY starts over.
    pub fn selected(&mut self, uidvalidity: u32) {
        if uidvalidity != self.uidvalidity {
            *self = Ledger {
                uidvalidity,
                next_uid: 1,
                pending: BTreeMap::new(),
            };
        }
    }

    /// Whether messages may have arrived since the last look (`uidnext`
    /// from SELECT; 0 when the provider did not say).
    pub fn has_new(&self, uidnext: u32) -> bool {
        uidnext == 0 || uidnext > self.next_uid
    }

    /// The lowest UID not looked at yet.
    pub fn next_uid(&self) -> u32 {
        self.next_uid.max(1)
    }

    /// Of `found` (ascending UIDs from a search from [`Ledger::next_uid`]
    /// on), those to look at this round: at most `max`.
    pub fn to_scan<'a>(&self, found: &'a [u32], max: usize) -> &'a [u32] {
        let start = found.partition_point(|&u| u < self.next_uid());
        let rest = &found[start..];
        &rest[..rest.len().min(max)]
    }

    /// Records a look at `looked_at` (ascending): `plaintext` are those
    /// found unsealed, with their INTERNALDATE. `complete`: nothing past
    /// them was left for later, so everything below `uidnext` was seen.
    /// Returns how many plaintext messages were new to the ledger.
    pub fn scanned(
        &mut self,
        looked_at: &[u32],
        plaintext: &[(u32, Option<i64>)],
        uidnext: u32,
        complete: bool,
        now: i64,
    ) -> u64 {
        let mut new = 0;
        for &(uid, date) in plaintext {
            if uid < self.next_uid() || self.pending.contains_key(&uid) {
                continue;
            }
            let since = date.map_or(now, |d| d.min(now));
            self.pending.insert(
                uid,
                Pending {
                    since,
                    not_before: None,
                },
            );
            new += 1;
        }
        if let Some(&last) = looked_at.last() {
            self.next_uid = self.next_uid().max(last.saturating_add(1));
        }
        if complete && uidnext > 0 {
            self.next_uid = self.next_uid().max(uidnext);
        }
        new
    }

    /// Plaintext UIDs to seal now, lowest first, at most `max`.
    pub fn work(&self, max: usize, now: Instant) -> Vec<u32> {
        self.pending
            .iter()
            .filter(|(_, p)| p.not_before.is_none_or(|t| t <= now))
            .map(|(&uid, _)| uid)
            .take(max)
            .collect()
    }

    /// A mover run had `uids` in its scope: they are sealed or gone,
    /// except `left` (left as they were), tried again from `retry_at`.
    pub fn done(&mut self, uids: &[u32], left: &[u32], retry_at: Instant) {
        for uid in uids {
            if left.contains(uid) {
                if let Some(p) = self.pending.get_mut(uid) {
                    p.not_before = Some(retry_at);
                }
            } else {
                self.pending.remove(uid);
            }
        }
    }

    /// Plaintext found and not sealed yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// When the oldest pending plaintext reached the provider (seconds
    /// since the Unix epoch).
    pub fn oldest(&self) -> Option<i64> {
        self.pending.values().map(|p| p.since).min()
    }

    /// Pending plaintext that reached the provider before `cutoff`.
    pub fn older_than(&self, cutoff: i64) -> usize {
        self.pending.values().filter(|p| p.since < cutoff).count()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn each_uid_is_looked_at_once_and_a_round_is_bounded() {
        let mut l = Ledger::default();
        l.selected(7);
        assert!(l.has_new(0) && l.has_new(2));
        let found: Vec<u32> = (1..=10).collect();
        let first = l.to_scan(&found, 4);
        assert_eq!(first, &[1, 2, 3, 4]);
        assert_eq!(l.scanned(first, &[(2, Some(100))], 11, false, 500), 1);
        assert_eq!(l.next_uid(), 5);
        let second = l.to_scan(&found, 100);
        assert_eq!(second, &[5, 6, 7, 8, 9, 10]);
        assert_eq!(l.scanned(second, &[(9, None)], 11, true, 500), 1);
        assert!(!l.has_new(11));
        assert!(l.has_new(12));
        // Seen again (a search result "n:*" includes the last UID): not new.
        assert_eq!(l.scanned(&[10], &[(9, None)], 11, true, 600), 0);
        assert_eq!(l.pending(), 2);
        assert_eq!(l.oldest(), Some(100));
        assert_eq!(l.older_than(200), 1);
    }

    #[test]
    fn work_is_bounded_and_what_was_left_waits() {
        let mut l = Ledger::default();
        l.selected(1);
        let plain: Vec<(u32, Option<i64>)> = (1..=5).map(|u| (u, Some(10))).collect();
        l.scanned(&[1, 2, 3, 4, 5], &plain, 6, true, 20);
        let now = Instant::now();
        assert_eq!(l.work(3, now), vec![1, 2, 3]);
        l.done(&[1, 2, 3], &[2], now + Duration::from_secs(60));
        assert_eq!(l.work(10, now), vec![4, 5]);
        assert_eq!(
            l.work(10, now + Duration::from_secs(61)),
            vec![2, 4, 5],
            "retried after the pause"
        );
        assert_eq!(l.pending(), 3);
    }

    #[test]
    fn a_new_uidvalidity_forgets_everything() {
        let mut l = Ledger::default();
        l.selected(1);
        l.scanned(&[1, 2], &[(1, None)], 3, true, 5);
        l.selected(1);
        assert_eq!(l.pending(), 1);
        l.selected(2);
        assert_eq!(l.pending(), 0);
        assert_eq!(l.next_uid(), 1);
        assert_eq!(l.oldest(), None);
    }

    #[test]
    fn a_date_in_the_future_counts_from_when_it_was_seen() {
        let mut l = Ledger::default();
        l.selected(1);
        l.scanned(&[1], &[(1, Some(10_000))], 2, true, 50);
        assert_eq!(l.oldest(), Some(50));
    }
}
