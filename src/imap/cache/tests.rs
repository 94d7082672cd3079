use std::collections::BTreeMap;

use super::keys::sha;
use super::*;
use crate::envelope::Detected;
use crate::keys::Unlocked;

const EPOCH: &str = "0123456789abcdef";
const OTHER_EPOCH: &str = "fedcba9876543210";

fn summary(size: u64) -> Summary {
    Summary {
        version: 1,
        size,
        bare_lf: 0,
        root: Default::default(),
    }
}

/// A keyring with these epochs, each with a fresh identity.
fn keyring(epochs: &[&str]) -> Unlocked {
    Unlocked::new(
        epochs
            .iter()
            .map(|e| (e.to_string(), age::x25519::Identity::generate()))
            .collect::<BTreeMap<_, _>>(),
    )
}

/// The same keyring with one more epoch (a rotation).
fn rotated(keys: &Unlocked, epoch: &str) -> Unlocked {
    let mut identities = keys.identities.clone();
    identities.insert(epoch.to_string(), age::x25519::Identity::generate());
    Unlocked::new(identities)
}

/// A message of epoch `epoch`, fetched with one and the same stored header.
fn ke(uid: u32, epoch: &str) -> MessageKey {
    let marker = Detected {
        version: 1,
        epoch: epoch.into(),
    };
    MessageKey::detected(uid, b"X-Writ: v=1; key=...\r\n\r\n", Some(&marker))
}

fn k(uid: u32) -> MessageKey {
    ke(uid, EPOCH)
}

fn mb(uidvalidity: u32) -> MailboxKey {
    MailboxKey {
        account: "alice".into(),
        mailbox: "INBOX".into(),
        uidvalidity,
    }
}

fn why() -> Undecryptable {
    Undecryptable {
        epoch: OTHER_EPOCH.into(),
        identities: 0,
        reason: "unknown_epoch".into(),
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn stores_reads_and_encrypts_at_rest() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring(&[EPOCH]);
    let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
    cache.selected(&mb(7));
    cache.put(
        &mb(7),
        k(3),
        &summary(42),
        Some(b"Subject: very secret\r\n\r\nbody"),
    );
    let (s, body) = cache.get(&mb(7), k(3)).expect("cached");
    assert_eq!(s.size, 42);
    assert_eq!(
        body.as_deref(),
        Some(&b"Subject: very secret\r\n\r\nbody"[..])
    );
    assert!(cache.get(&mb(7), k(4)).is_none());
    drop(cache);
    // Nothing on disk shows the plaintext, the names or a key.
    let secret = keys.identities[EPOCH].to_string();
    let secret = secrecy::ExposeSecret::expose_secret(&secret).to_owned();
    for entry in walk(dir.path()) {
        let bytes = fs::read(&entry).unwrap();
        for needle in [&b"very secret"[..], b"alice", b"INBOX", secret.as_bytes()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds {:?}",
                entry.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
}

#[test]
fn a_new_uidvalidity_drops_the_mailboxs_entries() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), 1 << 20, &keyring(&[EPOCH])).unwrap();
    cache.selected(&mb(7));
    cache.put(&mb(7), k(3), &summary(1), Some(b"x"));
    cache.selected(&mb(8));
    assert!(cache.get(&mb(7), k(3)).is_none());
    assert!(cache.get(&mb(8), k(3)).is_none());
    assert_eq!(cache.used(), 0);
    assert!(walk(&dir.path().join("bodies")).is_empty());
}

#[test]
fn undecryptable_messages_are_remembered_sealed_and_forgotten_with_their_uidvalidity() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), 1 << 20, &keyring(&[EPOCH])).unwrap();
    cache.selected(&mb(7));
    cache.put(&mb(7), k(3), &summary(1), Some(b"x"));
    cache.put_undecryptable(&mb(7), k(3), &why());
    assert_eq!(cache.undecryptable(&mb(7), k(3)), Some(why()));
    // It replaced the summary and the body; it is not one itself.
    assert!(cache.get(&mb(7), k(3)).is_none());
    assert!(walk(&dir.path().join("bodies")).is_empty());
    assert!(cache.undecryptable(&mb(7), k(4)).is_none());
    // Opening after all replaces it.
    cache.put(&mb(7), k(3), &summary(1), None);
    assert!(cache.undecryptable(&mb(7), k(3)).is_none());
    cache.put_undecryptable(&mb(7), k(3), &why());
    cache.selected(&mb(8));
    assert!(cache.undecryptable(&mb(7), k(3)).is_none());
    assert_eq!(cache.used(), 0);
}

#[test]
fn least_recently_used_entries_go_past_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), 20_000, &keyring(&[EPOCH])).unwrap();
    let body = vec![b'a'; 4_000];
    for uid in 1..=4 {
        cache.put(&mb(1), k(uid), &summary(uid.into()), Some(&body));
    }
    cache.commit();
    // Use 1 again: 2 is now the oldest.
    assert!(cache.get(&mb(1), k(1)).is_some());
    cache.put(&mb(1), k(5), &summary(5), Some(&body));
    cache.commit();
    assert!(cache.used() <= 20_000, "{}", cache.used());
    assert!(cache.get(&mb(1), k(2)).is_none(), "the oldest entry stayed");
    assert!(
        cache.get(&mb(1), k(1)).is_some(),
        "a recently used entry went"
    );
    assert!(cache.get(&mb(1), k(5)).is_some());
}

#[test]
fn a_damaged_body_is_a_miss_and_the_summary_still_reads() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), 1 << 20, &keyring(&[EPOCH])).unwrap();
    cache.put(&mb(1), k(1), &summary(1), Some(b"hello"));
    let f = walk(&dir.path().join("bodies")).pop().unwrap();
    let mut b = fs::read(&f).unwrap();
    let last = b.len() - 1;
    b[last] ^= 1;
    fs::write(&f, b).unwrap();
    let (_, body) = cache.get(&mb(1), k(1)).unwrap();
    assert!(body.is_none());
}

#[test]
fn a_restart_with_the_same_keyring_reads_what_the_last_run_stored() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring(&[EPOCH]);
    {
        let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
        cache.selected(&mb(7));
        cache.put(&mb(7), k(1), &summary(11), Some(b"hello"));
        cache.put_undecryptable(&mb(7), k(2), &why());
    }
    let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
    let (s, body) = cache.get(&mb(7), k(1)).expect("kept over the restart");
    assert_eq!(s.size, 11);
    assert_eq!(body.as_deref(), Some(&b"hello"[..]));
    assert_eq!(cache.undecryptable(&mb(7), k(2)), Some(why()));
    assert!(cache.used() > 0, "the bytes on disk are counted again");
    // Another message under the same UID (another stored header) misses.
    let other = MessageKey::detected(
        1,
        b"X-Writ: v=1; other\r\n\r\n",
        Some(&Detected {
            version: 1,
            epoch: EPOCH.into(),
        }),
    );
    assert!(cache.get(&mb(7), other).is_none());
}

#[test]
fn a_rotation_keeps_summaries_and_retries_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring(&[EPOCH]);
    {
        let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
        cache.put(&mb(7), k(1), &summary(11), Some(b"hello"));
        cache.put_undecryptable(&mb(7), k(2), &why());
    }
    let cache = Cache::open(dir.path(), 1 << 20, &rotated(&keys, OTHER_EPOCH)).unwrap();
    assert!(cache.get(&mb(7), k(1)).is_some_and(|(_, b)| b.is_some()));
    assert!(
        cache.undecryptable(&mb(7), k(2)).is_none(),
        "a verdict of the keyring before the rotation was served"
    );
}

#[test]
fn a_keyring_grown_while_running_caches_the_new_epoch_and_retries_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring(&[EPOCH]);
    let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
    cache.put(&mb(7), k(1), &summary(11), Some(b"hello"));
    cache.put_undecryptable(&mb(7), ke(2, OTHER_EPOCH), &why());
    assert_eq!(cache.undecryptable(&mb(7), ke(2, OTHER_EPOCH)), Some(why()));
    // Before the keyring grows, the new epoch's messages are not cached.
    cache.put(&mb(7), ke(3, OTHER_EPOCH), &summary(3), Some(b"new"));
    assert!(cache.summary(&mb(7), ke(3, OTHER_EPOCH)).is_none());

    // SIGHUP after a rotation: the same process, one more epoch.
    let grown = rotated(&keys, OTHER_EPOCH);
    cache.keyring_grown(&grown).unwrap();
    assert!(
        cache.get(&mb(7), k(1)).is_some_and(|(_, b)| b.is_some()),
        "what the old epoch opened stays cached"
    );
    assert!(
        cache.undecryptable(&mb(7), ke(2, OTHER_EPOCH)).is_none(),
        "a verdict of the keyring before it grew was served"
    );
    cache.put(&mb(7), ke(3, OTHER_EPOCH), &summary(3), Some(b"new"));
    assert_eq!(
        cache.body(&mb(7), ke(3, OTHER_EPOCH)).as_deref(),
        Some(&b"new"[..])
    );
    drop(cache);
    // A restart with the grown keyring reads all of it.
    let cache = Cache::open(dir.path(), 1 << 20, &grown).unwrap();
    assert!(cache.summary(&mb(7), ke(3, OTHER_EPOCH)).is_some());
    assert!(cache.summary(&mb(7), k(1)).is_some());
}

#[test]
fn another_keyring_reads_nothing_and_overwrites_what_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = Cache::open(dir.path(), 1 << 20, &keyring(&[EPOCH])).unwrap();
        cache.put(&mb(7), k(1), &summary(11), Some(b"hello"));
        cache.put_undecryptable(&mb(7), k(2), &why());
    }
    // Same epoch id, another identity: nothing reads.
    let cache = Cache::open(dir.path(), 1 << 20, &keyring(&[EPOCH])).unwrap();
    assert!(cache.summary(&mb(7), k(1)).is_none());
    assert!(cache.body(&mb(7), k(1)).is_none());
    assert!(cache.undecryptable(&mb(7), k(2)).is_none());
    cache.put(&mb(7), k(1), &summary(12), None);
    assert_eq!(cache.summary(&mb(7), k(1)).map(|s| s.size), Some(12));
    // A keyring without the message's epoch stores nothing for it.
    cache.put(&mb(7), ke(3, OTHER_EPOCH), &summary(1), None);
    assert!(cache.summary(&mb(7), ke(3, OTHER_EPOCH)).is_none());
}

#[test]
fn a_deleted_salt_or_directory_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring(&[EPOCH]);
    {
        let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
        cache.put(&mb(7), k(1), &summary(11), Some(b"hello"));
    }
    fs::remove_file(dir.path().join(sealing::SALT_FILE)).unwrap();
    {
        let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
        assert!(cache.get(&mb(7), k(1)).is_none());
        assert!(walk(&dir.path().join("bodies")).is_empty());
        assert_eq!(cache.used(), 0);
        cache.put(&mb(7), k(1), &summary(11), Some(b"hello"));
    }
    fs::remove_dir_all(dir.path()).unwrap();
    let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
    assert!(cache.get(&mb(7), k(1)).is_none());
}

#[test]
fn body_files_no_row_names_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring(&[EPOCH]);
    {
        let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
        cache.put(&mb(7), k(1), &summary(11), Some(b"hello"));
    }
    let bodies = dir.path().join("bodies");
    let [kept] = &walk(&bodies)[..] else {
        panic!("one body file: {:?}", walk(&bodies));
    };
    let name = kept.file_name().unwrap().to_str().unwrap().to_owned();
    // The flat layout of earlier versions, a crash's temporary file, and
    // a row's name in another fan directory than its own.
    let strays = [
        bodies.join("00ff"),
        kept.with_extension("tmp"),
        bodies
            .join(if name.ends_with("00") { "01" } else { "00" })
            .join(&name),
    ];
    for stray in &strays {
        fs::write(stray, b"left by a crash").unwrap();
    }
    let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
    for stray in &strays {
        assert!(!stray.exists(), "{} stayed", stray.display());
    }
    assert!(cache.body(&mb(7), k(1)).is_some());
    assert_eq!(walk(&bodies), std::slice::from_ref(kept));
}

/// After the upgrade from the flat layout, a row whose body file was
/// removed at start counts only its own bytes: the cache does not evict
/// for bytes no longer on disk.
#[test]
fn a_row_whose_body_file_is_gone_counts_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring(&[EPOCH]);
    let body = vec![b'a'; 50_000];
    let with_body = {
        let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
        cache.put(&mb(7), k(1), &summary(11), Some(&body));
        cache.commit();
        cache.used()
    };
    let bodies = dir.path().join("bodies");
    let [file] = &walk(&bodies)[..] else {
        panic!("one body file: {:?}", walk(&bodies));
    };
    // As an earlier version left it: directly under bodies/.
    fs::rename(file, bodies.join(file.file_name().unwrap())).unwrap();
    let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
    assert!(walk(&bodies).is_empty());
    assert!(cache.body(&mb(7), k(1)).is_none());
    assert!(cache.summary(&mb(7), k(1)).is_some());
    assert!(
        cache.used() < with_body - 50_000,
        "{} of {with_body}",
        cache.used()
    );
    assert!(cache.used() > 0);
    drop(cache);
    // Reopened as it is, it counts the same.
    let again = Cache::open(dir.path(), 1 << 20, &keys).unwrap().used();
    let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
    assert_eq!(cache.used(), again);
}

#[test]
fn keys_that_derive_nothing_start_empty_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<age::x25519::Identity> = vec![age::x25519::Identity::generate()];
    {
        let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
        cache.put(&mb(1), k(1), &summary(1), Some(b"hello"));
        assert!(cache.get(&mb(1), k(1)).is_some());
    }
    let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
    assert!(cache.get(&mb(1), k(1)).is_none());
    assert!(walk(&dir.path().join("bodies")).is_empty());
}

#[test]
fn lookup_answers_many_in_order_from_memory_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring(&[EPOCH]);
    {
        let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
        cache.put(&mb(7), k(1), &summary(1), None);
        cache.put_undecryptable(&mb(7), k(3), &why());
    }
    let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
    cache.put(&mb(7), k(2), &summary(2), None);
    let got = cache.lookup(&mb(7), &[k(1), k(2), k(3), k(4)]);
    assert!(matches!(got[0].as_deref(), Some(Known::Summary(s)) if s.tree().unwrap().size == 1));
    assert!(matches!(got[1].as_deref(), Some(Known::Summary(s)) if s.tree().unwrap().size == 2));
    assert!(matches!(got[2].as_deref(), Some(Known::Undecryptable(w)) if *w == why()));
    assert!(got[3].is_none());
}

/// A stored sealed header: `prefix` above the marker, the container's
/// media type with `boundary`.
fn stored_header(prefix: &str, boundary: &str) -> Vec<u8> {
    format!(
        "{prefix}X-Writ: v=1; key={EPOCH}\r\nFrom: a@example.test\r\n\
         Content-Type: multipart/encrypted;\r\n protocol=\"application/vnd.writ.sealed\";\r\n \
         boundary=\"{boundary}\"\r\nSubject: x\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn the_whole_header_and_its_marker_fields_alone_name_the_same_entry() {
    let whole = stored_header("Received: from a\r\n", "b0");
    // As the provider answers BODY[HEADER.FIELDS (X-Writ Content-Type)]:
    // here with bare LF and folded otherwise, which must not matter.
    let fields = format!(
        "X-Writ: v=1;\n key={EPOCH}\nContent-Type: multipart/encrypted; \
         protocol=\"application/vnd.writ.sealed\";\n boundary=\"b0\"\n\n"
    );
    let from_whole = MessageKey::new(3, &whole);
    assert_eq!(from_whole, MessageKey::new(3, fields.as_bytes()));
    // Another message: another random boundary, another entry.
    assert_ne!(from_whole, MessageKey::new(3, &stored_header("", "b1")));
    // The fields above the marker are not part of the key: under one
    // UIDVALIDITY and UID the stored message cannot change (the entry id
    // holds them, see the UIDVALIDITY test).
    assert_eq!(from_whole, MessageKey::new(3, &stored_header("", "b0")));

    let dir = tempfile::tempdir().unwrap();
    let keys = keyring(&[EPOCH]);
    let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
    cache.put(&mb(7), from_whole, &summary(11), None);
    let found = cache.summary(&mb(7), MessageKey::new(3, fields.as_bytes()));
    assert_eq!(found.map(|s| s.size), Some(11));
    assert!(
        cache
            .summary(&mb(7), MessageKey::new(3, &stored_header("", "b1")))
            .is_none()
    );
}

#[test]
fn an_entry_of_the_earlier_whole_header_key_is_a_miss() {
    // Before the marker-field key, the fingerprint was a SHA-256 of the
    // whole stored header under this label: such rows do not open.
    let header = stored_header("Received: from a\r\n", "b0");
    let mut old = MessageKey::new(3, &header);
    old.stored = sha(&[b"writ cache: stored header", &header]);
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring(&[EPOCH]);
    {
        let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
        cache.put(&mb(7), old, &summary(11), Some(b"hello"));
    }
    let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
    assert!(cache.get(&mb(7), old).is_some(), "the old row is there");
    let new = MessageKey::new(3, &header);
    assert!(cache.summary(&mb(7), new).is_none());
    assert!(cache.body(&mb(7), new).is_none());
    // Stored again under the new key, it is found.
    cache.put(&mb(7), new, &summary(12), None);
    assert_eq!(cache.summary(&mb(7), new).map(|s| s.size), Some(12));
}

/// `imap.cache_memory_bytes`: the summaries held in memory stay within
/// three quarters of it however many are stored, and those it dropped are
/// read from the index (a slower hit, never a miss).
#[test]
fn the_memory_bound_holds_and_what_it_drops_is_read_from_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring(&[EPOCH]);
    let bound = 1024 * 1024;
    let cache = Cache::open_bounded(dir.path(), 1 << 30, bound, &keys).unwrap();
    let mut big = summary(1);
    let header = b"Subject: x\r\n".repeat(200);
    big.root.header_size = header.len() as u64;
    big.root.header = Some(header);
    let n = 2000u32;
    big.root.body_offset = big.root.header_size;
    for uid in 1..=n {
        // A message of 100,000 octets and more, its header first.
        big.size = 100_000 + u64::from(uid);
        big.root.body_size = big.size - big.root.body_offset;
        cache.put(&mb(7), k(uid), &big, None);
    }
    assert!(
        cache.memory_used() <= bound / 4 * 3,
        "{} bytes of summaries in memory",
        cache.memory_used()
    );
    assert!(cache.memory_used() > 0);
    let keys: Vec<MessageKey> = (1..=n).map(k).collect();
    let all_there = |got: Vec<Option<Arc<Known>>>| {
        for (uid, known) in (1..=n).zip(&got) {
            assert!(
                matches!(known.as_deref(), Some(Known::Summary(s)) if s.tree().unwrap().size == 100_000 + u64::from(uid)),
                "UID {uid}"
            );
        }
    };
    // Rows still waiting for the index (the FETCH that stored them has
    // not ended) are found too, though memory dropped them.
    let (rows, batch) = (n as usize, WRITE_BATCH);
    assert!(rows % batch != 0, "some rows wait");
    all_there(cache.lookup(&mb(7), &keys));
    cache.commit();
    all_there(cache.lookup(&mb(7), &keys));
}

/// SELECTs recorded off the session may run in any order: one of an older
/// UIDVALIDITY that runs last does not drop the newer one's entries.
#[test]
fn a_select_recorded_late_does_not_undo_a_later_one() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring(&[EPOCH]);
    let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
    let first = cache.select_ticket();
    let second = cache.select_ticket();
    cache.selected_in_order(&mb(7), first);
    cache.put(&mb(7), k(2), &summary(2), None);
    cache.commit();
    // In order: the new UIDVALIDITY drops the old one's entries.
    cache.selected_in_order(&mb(8), second);
    assert!(cache.summary(&mb(7), k(2)).is_none());
    cache.put(&mb(8), k(1), &summary(1), None);
    cache.commit();
    // The first SELECT's record once more, late (a pool thread that ran
    // it after the second's): skipped.
    cache.selected_in_order(&mb(7), first);
    assert!(
        cache.summary(&mb(8), k(1)).is_some(),
        "the newer entries were dropped"
    );
}

#[test]
fn the_highest_uid_stored_is_known_per_mailbox_and_over_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring(&[EPOCH]);
    {
        let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
        assert_eq!(cache.highest_uid(&mb(7)), None);
        cache.put(&mb(7), k(9), &summary(11), None);
        cache.put(&mb(7), k(3), &summary(11), None);
        assert_eq!(cache.highest_uid(&mb(7)), Some(9));
        // A verdict counts: it is an entry too.
        cache.put_undecryptable(&mb(7), k(12), &why());
        assert_eq!(cache.highest_uid(&mb(7)), Some(12));
        // Another UIDVALIDITY is another mailbox.
        assert_eq!(cache.highest_uid(&mb(8)), None);
    }
    let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
    assert_eq!(cache.highest_uid(&mb(7)), Some(12), "read from the index");
}

#[test]
fn a_listing_raises_the_highest_uid_only_of_a_mailbox_with_entries() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring(&[EPOCH]);
    let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
    // Nothing of it here: it may be all plaintext.
    cache.listed_up_to(&mb(7), 50);
    assert_eq!(cache.highest_uid(&mb(7)), None);
    cache.put(&mb(7), k(9), &summary(11), None);
    cache.listed_up_to(&mb(7), 50);
    assert_eq!(cache.highest_uid(&mb(7)), Some(50));
    // Never lowered.
    cache.listed_up_to(&mb(7), 20);
    assert_eq!(cache.highest_uid(&mb(7)), Some(50));
}

#[test]
fn a_mailbox_the_cache_holds_nothing_of_has_one_first_listing_per_start() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keyring(&[EPOCH]);
    {
        let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
        assert!(cache.first_listing(&mb(7)), "claimed");
        assert!(!cache.first_listing(&mb(7)), "once");
        // Its listing's end (all plaintext, or empty): still nothing
        // known of it, and not claimed again.
        for uid in [30, 0] {
            cache.listed_up_to(&mb(7), uid);
            assert_eq!(cache.highest_uid(&mb(7)), None);
            assert!(!cache.first_listing(&mb(7)));
        }
        // A mailbox with an entry has no first listing.
        cache.put(&mb(8), k(3), &summary(11), None);
        assert!(!cache.first_listing(&mb(8)));
    }
    // A restart: what was only listed (no entry) has a first listing
    // again; what has an entry has not.
    let cache = Cache::open(dir.path(), 1 << 20, &keys).unwrap();
    assert!(cache.first_listing(&mb(7)));
    assert!(!cache.first_listing(&mb(8)));
}

#[test]
fn a_cache_another_writ_holds_is_refused_not_wiped() {
    // A second `writ serve` on the same cache_dir (a manual run beside the
    // service): redb finds the index open; the cache in use keeps its
    // entries (it used to be taken for damaged and deleted).
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path(), 1 << 20, &keyring(&[EPOCH])).unwrap();
    cache.selected(&mb(7));
    cache.put(&mb(7), k(3), &summary(1), Some(b"x"));
    cache.flush();
    let e = Cache::open(dir.path(), 1 << 20, &keyring(&[EPOCH]))
        .err()
        .expect("in use");
    assert!(matches!(e, CacheError::InUse { .. }), "{e}");
    assert!(e.to_string().contains("another writ is using it"), "{e}");
    assert!(dir.path().join("index.redb").exists());
    assert!(
        !walk(&dir.path().join("bodies")).is_empty(),
        "its bodies stay"
    );
    assert!(cache.get(&mb(7), k(3)).is_some(), "still served");
}

/// The environment variable that makes the test below its own child.
const FULL_DISK_CHILD: &str = "WRIT_CACHE_FULL_DISK_CHILD";

#[test]
fn a_cache_whose_index_cannot_be_written_stops_storing_and_leaves_no_bodies() {
    // A real write failure: the test runs itself again as a child that
    // ignores SIGXFSZ, and that child lowers its own file-size limit
    // (RLIMIT_FSIZE, with prlimit) once its index exists, so that the
    // index's growth fails with EFBIG as a full disk fails writes. redb
    // then refuses every later write; the cache must stop writing bodies
    // the index will never count (they piled up until the disk was full).
    if let Ok(dir) = std::env::var(FULL_DISK_CHILD) {
        return full_disk_child(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; exec \"$0\" --exact \"$1\" --nocapture --test-threads 1")
        .arg(&exe)
        .arg("imap::cache::tests::a_cache_whose_index_cannot_be_written_stops_storing_and_leaves_no_bodies")
        .env(FULL_DISK_CHILD, dir.path())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("full-disk child done"), "{text}");
}

fn full_disk_child(dir: &Path) {
    let cache = Cache::open(dir, 1 << 30, &keyring(&[EPOCH])).unwrap();
    cache.selected(&mb(7));
    for uid in 1..=3 {
        cache.put(&mb(7), k(uid), &summary(1), Some(&[7u8; 4096]));
    }
    cache.flush();
    let index = fs::metadata(dir.join("index.redb")).unwrap().len();
    let limit = index + 256 * 1024;
    let set = std::process::Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--fsize={limit}:{limit}"))
        .status()
        .unwrap();
    assert!(set.success(), "prlimit");
    let bodies = |dir: &Path| -> u64 {
        walk(&dir.join("bodies"))
            .iter()
            .map(|p| fs::metadata(p).map_or(0, |m| m.len()))
            .sum()
    };
    // Far more than the limit lets the index take.
    for uid in 4..=3000 {
        cache.put(&mb(7), k(uid), &summary(1), Some(&[7u8; 4096]));
    }
    cache.flush();
    let grown = fs::metadata(dir.join("index.redb")).unwrap().len();
    assert!(grown <= limit, "the limit held: {grown} > {limit}");
    // What is on disk is what the index counts: no body left behind by a
    // batch the index refused, none written after.
    let on_disk = bodies(dir);
    assert!(
        on_disk <= cache.used(),
        "bodies on disk {on_disk} > counted {}",
        cache.used()
    );
    assert!(on_disk < 2000 * 4096, "the index stopped early: {on_disk}");
    println!("full-disk child done");
}
