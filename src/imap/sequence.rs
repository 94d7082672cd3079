//! Sequence sets writ builds for its own commands to the provider.
//!
//! imap-codec's encoder writes a set exactly as it is given (writ builds
//! imap-codec without `quirk_always_normalize_sequence_sets`, see
//! `vendor/imap-next/Cargo.toml`), so writ compacts the UID lists of its
//! own commands itself, in linear time: a FETCH over thousands of messages
//! must stay well under the provider's line limit (Dovecot: 64 KiB).
//!
//! And the UIDs of a provider's `* VANISHED` (RFC 7162 §3.2.10, the
//! form without EARLIER that stands for EXPUNGE once QRESYNC is enabled),
//! as [`Vanished`]: what a plan renumbers its pending answers by. Every
//! question it answers costs O(log ranges), whatever the ranges span, and
//! its size is that of the provider's response (capped by imap-next's
//! `max_response_size`).

use std::num::NonZeroU32;

use imap_next::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

/// `uids` as a set of ranges (`3:7,9`); `None` if `uids` is empty. The
/// input need not be sorted; duplicates are dropped.
pub fn compact(uids: &[NonZeroU32]) -> Option<SequenceSet> {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<Sequence> = Vec::new();
    let mut run: Option<(NonZeroU32, NonZeroU32)> = None;
    for uid in sorted {
        run = match run {
            Some((first, last)) if last.get().checked_add(1) == Some(uid.get()) => {
                Some((first, uid))
            }
            Some(done) => {
                out.push(sequence(done));
                Some((uid, uid))
            }
            None => Some((uid, uid)),
        };
    }
    out.extend(run.map(sequence));
    SequenceSet::try_from(out).ok()
}

fn sequence((first, last): (NonZeroU32, NonZeroU32)) -> Sequence {
    if first == last {
        Sequence::Single(SeqOrUid::Value(first))
    } else {
        Sequence::Range(SeqOrUid::Value(first), SeqOrUid::Value(last))
    }
}

/// The messages a `* VANISHED` (without EARLIER) reports expunged, by UID.
///
/// Sequence numbers follow UID order, so a message still there with UID
/// `u` moves down by the number of vanished UIDs below `u` ([`Self::below`]);
/// the RFC has the provider name only messages the client knows of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vanished {
    /// Disjoint, sorted, inclusive ranges.
    ranges: Vec<(u32, u32)>,
    /// For each range, how many UIDs the ranges before it hold.
    before: Vec<u64>,
}

impl Vanished {
    /// The UIDs of `set`; `*` (which a provider has no reason to send)
    /// stands for the largest UID.
    pub fn new(set: &SequenceSet) -> Vanished {
        let value = |v: &SeqOrUid| match v {
            SeqOrUid::Value(n) => n.get(),
            SeqOrUid::Asterisk => u32::MAX,
        };
        let mut ranges: Vec<(u32, u32)> = set
            .0
            .as_ref()
            .iter()
            .map(|s| match s {
                Sequence::Single(v) => (value(v), value(v)),
                Sequence::Range(a, b) => {
                    let (a, b) = (value(a), value(b));
                    (a.min(b), a.max(b))
                }
            })
            .collect();
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if u64::from(lo) <= u64::from(last.1) + 1 => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        let mut before = Vec::with_capacity(merged.len());
        let mut total = 0u64;
        for (lo, hi) in &merged {
            before.push(total);
            total += u64::from(hi - lo) + 1;
        }
        Vanished {
            ranges: merged,
            before,
        }
    }

    /// Is the message with this UID gone?
    pub fn contains(&self, uid: NonZeroU32) -> bool {
        let u = uid.get();
        let i = self.ranges.partition_point(|(_, hi)| *hi < u);
        self.ranges.get(i).is_some_and(|(lo, _)| *lo <= u)
    }

    /// How many vanished UIDs are below `uid`.
    pub fn below(&self, uid: NonZeroU32) -> u64 {
        let u = uid.get();
        let i = self.ranges.partition_point(|(lo, _)| *lo < u);
        match i.checked_sub(1) {
            None => 0,
            Some(j) => {
                let (lo, hi) = self.ranges[j];
                self.before[j] + u64::from(hi.min(u - 1) - lo) + 1
            }
        }
    }

    /// How many UIDs vanished.
    pub fn count(&self) -> u64 {
        match (self.ranges.last(), self.before.last()) {
            (Some((lo, hi)), Some(b)) => b + u64::from(hi - lo) + 1,
            _ => 0,
        }
    }

    /// The sequence number, after the expunges, of the message with this
    /// UID and number `seq` before them; `None` when it is gone.
    pub fn renumbered(&self, seq: NonZeroU32, uid: NonZeroU32) -> Option<NonZeroU32> {
        if self.contains(uid) {
            return None;
        }
        let down = u32::try_from(self.below(uid)).unwrap_or(u32::MAX);
        NonZeroU32::new(seq.get().saturating_sub(down)).or(Some(NonZeroU32::MIN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: u32) -> NonZeroU32 {
        NonZeroU32::new(v).unwrap()
    }

    fn wire(set: &SequenceSet) -> String {
        use imap_codec::encode::Encoder;
        use imap_next::imap_types::command::{Command, CommandBody};
        let c = Command::new(
            "a",
            CommandBody::ExpungeUid {
                sequence_set: set.clone(),
            },
        )
        .unwrap();
        String::from_utf8(imap_codec::CommandCodec::default().encode(&c).dump()).unwrap()
    }

    #[test]
    fn runs_become_ranges() {
        let set = compact(&[
            n(9),
            n(3),
            n(4),
            n(5),
            n(7),
            n(4),
            n(4294967294),
            n(4294967295),
        ]);
        assert_eq!(
            wire(&set.unwrap()),
            "a UID EXPUNGE 3:5,7,9,4294967294:4294967295\r\n"
        );
        assert!(compact(&[]).is_none());
    }

    #[test]
    fn many_uids_compact_in_linear_time() {
        let uids: Vec<NonZeroU32> = (1..=1_000_000).map(n).collect();
        assert_eq!(
            wire(&compact(&uids).unwrap()),
            "a UID EXPUNGE 1:1000000\r\n"
        );
    }

    fn vanished(ranges: &[(u32, u32)]) -> Vanished {
        let seqs: Vec<Sequence> = ranges
            .iter()
            .map(|(a, b)| sequence((n(*a), n(*b))))
            .collect();
        Vanished::new(&SequenceSet::try_from(seqs).unwrap())
    }

    #[test]
    fn vanished_uids_renumber_what_is_after_them() {
        // Overlapping and unsorted, as a careless provider might send.
        let v = vanished(&[(9, 12), (3, 3), (10, 15), (16, 16), (20, 20)]);
        assert_eq!(v.count(), 1 + 8 + 1);
        assert!(v.contains(n(3)) && v.contains(n(16)) && !v.contains(n(17)));
        assert_eq!(v.below(n(1)), 0);
        assert_eq!(v.below(n(3)), 0);
        assert_eq!(v.below(n(4)), 1);
        assert_eq!(v.below(n(12)), 1 + 3);
        assert_eq!(v.below(n(17)), 1 + 8);
        assert_eq!(v.below(n(21)), 10);
        // Messages 1..=22 with UIDs 1..=22: UID 17 was number 17, now 8.
        assert_eq!(v.renumbered(n(17), n(17)), Some(n(8)));
        assert_eq!(v.renumbered(n(2), n(2)), Some(n(2)));
        assert_eq!(v.renumbered(n(10), n(10)), None);
    }

    #[test]
    fn a_vanished_range_over_every_uid_costs_nothing_to_ask() {
        let v = vanished(&[(1, u32::MAX - 1)]);
        assert_eq!(v.count(), u64::from(u32::MAX - 1));
        assert_eq!(v.below(n(u32::MAX)), u64::from(u32::MAX - 1));
        assert_eq!(v.renumbered(n(5), n(u32::MAX)), Some(NonZeroU32::MIN));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]
        /// Against counting UIDs one by one, over a small UID range: each
        /// message still there moves down by the vanished ones below it.
        #[test]
        fn vanished_agrees_with_counting_one_by_one(
            ranges in proptest::collection::vec((1u32..120, 0u32..15), 1..12),
            mailbox in proptest::collection::btree_set(1u32..140, 1..60),
        ) {
            let ranges: Vec<(u32, u32)> = ranges.iter().map(|(a, l)| (*a, a + l)).collect();
            let v = vanished(&ranges);
            let gone = |u: u32| ranges.iter().any(|(a, b)| (*a..=*b).contains(&u));
            let all: std::collections::BTreeSet<u32> =
                ranges.iter().flat_map(|(a, b)| *a..=*b).collect();
            proptest::prop_assert_eq!(v.count(), all.len() as u64);
            // The RFC has the provider name only messages the client knows.
            let uids: Vec<u32> = mailbox.union(&all).copied().collect();
            let after: Vec<u32> = uids.iter().copied().filter(|u| !gone(*u)).collect();
            for (i, uid) in uids.iter().enumerate() {
                let seq = n(i as u32 + 1);
                let want = after.iter().position(|u| u == uid).map(|p| n(p as u32 + 1));
                proptest::prop_assert_eq!(v.renumbered(seq, n(*uid)), want);
                proptest::prop_assert_eq!(v.contains(n(*uid)), gone(*uid));
                proptest::prop_assert_eq!(
                    v.below(n(*uid)),
                    all.iter().filter(|g| **g < *uid).count() as u64
                );
            }
        }
    }
}
