//! Sequence sets writ builds for its own commands to the provider.
//!
//! imap-codec's encoder writes a set exactly as it is given (writ builds
//! imap-codec without `quirk_always_normalize_sequence_sets`, see
//! `vendor/imap-next/Cargo.toml`), so writ compacts the UID lists of its
//! own commands itself, in linear time: a FETCH over thousands of messages
//! must stay well under the provider's line limit (Dovecot: 64 KiB).

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
}
