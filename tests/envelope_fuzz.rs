//! The envelope's fuzz targets' entry points on stable, bounded by count
//! (`cargo +nightly fuzz run summary|sealed|armor` explores further):
//! generated summaries (deep nesting, huge numbers, broken trees), real
//! sealed messages mutated and cut short, and armor truncated or
//! re-encoded must never panic, overflow the stack or yield a summary past
//! the caps (`writ::envelope::fuzz` asserts that).
//!
//! The generator is seeded and deterministic (SplitMix64, a few lines:
//! a failure reproduces from its case number without a crate or a seed
//! file).

use writ::envelope::fuzz;
use writ::envelope::summary::{MAX_DEPTH, MAX_MESSAGE_SIZE, MAX_PARTS};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max as u64 + 1) as usize;
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// A number a hostile summary would hold.
    fn number(&mut self, size: u64) -> u64 {
        match self.below(10) {
            0 => u64::MAX,
            1 => u64::MAX - self.below(3),
            2 => MAX_MESSAGE_SIZE + self.below(2),
            3 => 1 << 63,
            4 => size,
            5 => size.saturating_add(1),
            6 => self.next(),
            _ => self.below(size.saturating_add(2)),
        }
    }
}

/// A summary's JSON: mostly well-formed trees with hostile numbers, some
/// chains around the depth cap, lists around the count cap, broken
/// parents, odd versions.
fn summary(rng: &mut Rng) -> Vec<u8> {
    let size = rng.below(5000);
    let count = match rng.below(20) {
        0 => MAX_DEPTH + rng.below(3) as usize - 1,
        1 => MAX_PARTS + rng.below(2) as usize,
        _ => 1 + rng.below(40) as usize,
    };
    let chain = rng.below(3) == 0;
    // Honest trees (pre-order, numbers inside M) reach every reader;
    // hostile ones test the checks.
    let honest = rng.below(2) == 0;
    let mut path: Vec<usize> = Vec::new();
    let mut parts = Vec::with_capacity(count);
    for i in 0..count {
        let parent = match (i, rng.below(25)) {
            (0, 0) if !honest => Some(0),
            (0, _) => None,
            (_, 0) if !honest => Some(rng.below(i as u64 + 2) as usize),
            _ if chain => Some(i - 1),
            _ if honest => Some(path[rng.below(path.len() as u64) as usize]),
            _ => Some(rng.below(i as u64) as usize),
        };
        if let Some(p) = parent
            && let Some(at) = path.iter().position(|&a| a == p)
        {
            path.truncate(at + 1);
        }
        path.push(i);
        let ty = *rng.pick(&["multipart", "message", "text", "MESSAGE", "", "x\u{0}y"]);
        let sub = *rng.pick(&["mixed", "rfc822", "global", "plain", "digest", "\u{e9}"]);
        let (ho, hs, bo, bs, lines) = if honest {
            // Children lie inside their parent, after their previous
            // sibling (FORMAT.md 12.1): the root spans any length, the
            // entities under it are empty.
            let bs = if i == 0 { rng.below(size + 1) } else { 0 };
            (0, 0, 0, bs, 0)
        } else {
            let ho = if rng.below(3) == 0 {
                rng.number(size)
            } else {
                rng.below(size + 1)
            };
            let hs = if rng.below(3) == 0 {
                rng.number(size)
            } else {
                rng.below(64)
            };
            let bo = if rng.below(4) == 0 {
                rng.number(size)
            } else {
                ho.wrapping_add(hs)
            };
            let bs = if rng.below(3) == 0 {
                rng.number(size)
            } else {
                rng.below(size + 1)
            };
            let lines = if rng.below(3) == 0 {
                rng.number(size)
            } else {
                rng.below(bs.saturating_add(1))
            };
            (ho, hs, bo, bs, lines)
        };
        let mut p = format!(
            "{{\"type\":{},\"subtype\":{},\"content_type_present\":{},\"params\":[[\"boundary\",\"b\"],[\"name*0*\",\"x\"]],\"header_offset\":{ho},\"header_size\":{hs},\"body_offset\":{bo},\"body_size\":{bs},\"body_lines\":{lines},\"body_bare_lf\":{}",
            serde_json::to_string(ty).unwrap(),
            serde_json::to_string(sub).unwrap(),
            rng.below(2) == 0,
            if honest {
                0
            } else {
                rng.below(lines.saturating_add(1))
            },
        );
        if rng.below(4) == 0 {
            p.push_str(",\"imap_body_eol\":");
            p.push_str(&rng.below(if honest { 3 } else { 4 }).to_string());
        }
        if rng.below(4) == 0 && !honest {
            let header = b"Subject: hi\r\nFrom: a@b.test\r\n\r\n";
            let cut = rng.below(header.len() as u64 + 1) as usize;
            let b64 = base64_of(&header[..cut]);
            p.push_str(&format!(",\"header\":\"{b64}\""));
        }
        if let Some(parent) = parent {
            p.push_str(&format!(",\"parent\":{parent}"));
        }
        p.push('}');
        parts.push(p);
    }
    let version = if honest {
        "1"
    } else {
        *rng.pick(&["1", "2", "0", "\"1\"", "null", "18446744073709551616"])
    };
    let hostile = |rng: &mut Rng| !honest && rng.below(4) == 0;
    let bare = if hostile(rng) {
        rng.number(size)
    } else {
        rng.below(size + 1)
    };
    let size = if hostile(rng) { rng.number(size) } else { size };
    format!(
        "{{\"version\":{version},\"size\":{size},\"bare_lf\":{bare},\"parts\":[{}]}}",
        parts.join(",")
    )
    .into_bytes()
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// `json` with a few octets changed, or cut short.
fn damaged(rng: &mut Rng, mut json: Vec<u8>) -> Vec<u8> {
    if json.is_empty() {
        return json;
    }
    if rng.below(2) == 0 {
        let cut = rng.below(json.len() as u64) as usize;
        json.truncate(cut);
    } else {
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(json.len() as u64) as usize;
            json[at] = *rng.pick(b"{}[],:\"0123456789-e.x\\");
        }
    }
    json
}

#[test]
fn generated_summaries_never_panic() {
    let mut rng = Rng(0x5eed_0001);
    let mut accepted = 0;
    for _ in 0..300 {
        let json = summary(&mut rng);
        accepted += usize::from(fuzz::summary_json(&json));
        fuzz::summary_json(&damaged(&mut rng, json));
    }
    // The readers past the checks were reached, and the checks refused.
    assert!((60..240).contains(&accepted), "{accepted} of 300 accepted");
    // Deep JSON arrays and objects (serde_json stops at 128 levels).
    for depth in [127, 128, 129, 100_000] {
        let mut deep = b"{\"version\":1,\"size\":0,\"bare_lf\":0,\"parts\":".to_vec();
        deep.extend(std::iter::repeat_n(b'[', depth));
        deep.extend(std::iter::repeat_n(b']', depth));
        deep.push(b'}');
        fuzz::summary_json(&deep);
    }
}

#[test]
fn generated_summaries_sealed_to_the_public_recipient_never_panic() {
    let mut rng = Rng(0x5eed_0002);
    for _ in 0..12 {
        let json = summary(&mut rng);
        let m = rng.bytes(200);
        fuzz::sealed_summary(&json, &m);
    }
}

#[test]
fn mutated_and_truncated_sealed_messages_never_panic() {
    let mut rng = Rng(0x5eed_0003);
    for case in 0..120 {
        let mut input = vec![(case % 3) as u8];
        match case % 3 {
            // Arbitrary stored messages with a sealed-looking header.
            0 => {
                input.extend_from_slice(b"X-Writ: v=1; key=0123456789abcdef\r\nContent-Type: multipart/encrypted; protocol=\"application/vnd.writ.sealed\"; boundary=b\r\n\r\n--b\r\nContent-Type: application/vnd.writ.sealed\r\n\r\n-----BEGIN AGE ENCRYPTED FILE-----\r\n");
                input.extend(rng.bytes(300));
            }
            _ => input.extend(rng.bytes(60)),
        }
        fuzz::sealed(&input);
    }
}

#[test]
fn truncated_and_reencoded_armor_never_panics() {
    let mut rng = Rng(0x5eed_0004);
    let armor = fuzz::encrypt_armored(&fuzz::recipient(), b"{\"version\":1}");
    for case in 0..150u64 {
        let mut input = vec![(case % 4) as u8];
        match case % 5 {
            0 => input.extend_from_slice(&armor[..rng.below(armor.len() as u64) as usize]),
            1 => {
                let mut a = armor.clone();
                let at = rng.below(a.len() as u64) as usize;
                a[at] = *rng.pick(b"=-\r\n !A/+");
                input.extend(a);
            }
            2 => {
                input.extend_from_slice(b"-----BEGIN AGE ENCRYPTED FILE-----\n");
                let junk: Vec<u8> = rng.bytes(200);
                input.extend(base64_of(&junk).bytes());
                if rng.below(2) == 0 {
                    input.extend_from_slice(b"\n-----END AGE ENCRYPTED FILE-----\n");
                }
            }
            3 => input.extend(base64_of(&armor[..rng.below(armor.len() as u64) as usize]).bytes()),
            _ => input.extend(rng.bytes(400)),
        }
        fuzz::armor(&input);
    }
}
