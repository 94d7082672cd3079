use super::*;

fn msg(n: u32, header: &str) -> Message {
    let n = NonZeroU32::new(n).unwrap();
    Message::new(header.as_bytes(), n, n, n, Some(0))
}

fn thread(list: &[(u32, &str)]) -> String {
    let mut m: Vec<Message> = list.iter().map(|(n, h)| msg(*n, h)).collect();
    String::from_utf8(references(&mut m).unwrap()).unwrap()
}

#[test]
fn message_ids_are_read_as_dovecot_reads_them() {
    let ids = |v: &str| -> Vec<String> {
        message_ids(v.as_bytes())
            .map(|i| String::from_utf8(i).unwrap())
            .collect()
    };
    assert_eq!(ids("<a@b> <c@d>"), ["a@b", "c@d"]);
    assert_eq!(ids(" junk <nohost> <x @ y\r\n >"), ["x@y"]);
    assert_eq!(ids("<a[1]@b>"), ["a[1]@b"]);
    assert_eq!(ids("<\"q\"@b> <c@d>"), ["c@d"]);
    assert_eq!(ids("<a@b"), Vec::<String>::new());
    assert_eq!(ids(""), Vec::<String>::new());
}

#[test]
fn replies_chain_and_siblings_order_by_date() {
    let out = thread(&[
        (
            1,
            "Message-ID: <1@x>\r\nDate: 1 Jan 2020 00:00 +0000\r\n\r\n",
        ),
        (
            2,
            "Message-ID: <2@x>\r\nReferences: <1@x>\r\nDate: 3 Jan 2020 00:00 +0000\r\n\r\n",
        ),
        (
            3,
            "Message-ID: <3@x>\r\nIn-Reply-To: <1@x>\r\nDate: 2 Jan 2020 00:00 +0000\r\n\r\n",
        ),
        (
            4,
            "Message-ID: <4@x>\r\nReferences: <1@x> <3@x>\r\nDate: 4 Jan 2020 00:00 +0000\r\n\r\n",
        ),
        (
            5,
            "Message-ID: <5@x>\r\nDate: 1 Jan 2019 00:00 +0000\r\n\r\n",
        ),
    ]);
    assert_eq!(out, "* THREAD (5)(1 (3 4)(2))\r\n");
}

#[test]
fn dummies_hold_orphans_and_give_way_to_an_only_child() {
    let out = thread(&[
        (
            1,
            "Message-ID: <1@x>\r\nReferences: <gone@x>\r\nDate: 2 Jan 2020 00:00 +0000\r\n\r\n",
        ),
        (
            2,
            "Message-ID: <2@x>\r\nReferences: <gone@x>\r\nDate: 1 Jan 2020 00:00 +0000\r\n\r\n",
        ),
        (
            3,
            "Message-ID: <3@x>\r\nReferences: <lost@x> <lost2@x>\r\nDate: 3 Jan 2020 00:00 +0000\r\n\r\n",
        ),
    ]);
    assert_eq!(out, "* THREAD ((2)(1))(3)\r\n");
}

#[test]
fn duplicate_ids_and_loops_do_not_hang_or_lose_messages() {
    let out = thread(&[
        (1, "Message-ID: <a@x>\r\nReferences: <b@x>\r\n\r\n"),
        (2, "Message-ID: <b@x>\r\nReferences: <a@x>\r\n\r\n"),
        (3, "Message-ID: <a@x>\r\nReferences: <a@x> <a@x>\r\n\r\n"),
        (4, "Message-ID: <c@x>\r\nReferences: <c@x>\r\n\r\n"),
    ]);
    // 2's link under 1 would close a loop (1 is under b): 2 stays a root
    // and 1 stays under it; 3 (a duplicate of a) hangs under the first a.
    assert_eq!(out, "* THREAD (2 1 3)(4)\r\n");
}

#[test]
fn roots_of_one_base_subject_are_gathered() {
    let out = thread(&[
        (
            1,
            "Message-ID: <1@x>\r\nSubject: Re: plans\r\nDate: 1 Jan 2020 00:00 +0000\r\n\r\n",
        ),
        (
            2,
            "Message-ID: <2@x>\r\nSubject: plans\r\nDate: 2 Jan 2020 00:00 +0000\r\n\r\n",
        ),
        (
            3,
            "Message-ID: <3@x>\r\nSubject: other\r\nDate: 3 Jan 2020 00:00 +0000\r\n\r\n",
        ),
        (
            4,
            "Message-ID: <4@x>\r\nSubject: other\r\nDate: 4 Jan 2020 00:00 +0000\r\n\r\n",
        ),
        (
            5,
            "Message-ID: <5@x>\r\nSubject: Fwd: plans\r\nDate: 5 Jan 2020 00:00 +0000\r\n\r\n",
        ),
    ]);
    // 2 (no reply) takes 1 and 5; 3 and 4 (neither a reply) share a dummy.
    assert_eq!(out, "* THREAD (2 (1)(5))((3)(4))\r\n");
}

#[test]
fn deep_chains_and_long_references_stay_bounded() {
    // A 10,000-deep chain: written without recursion.
    let n = 10_000u32;
    let mut list: Vec<Message> = (1..=n)
        .map(|i| {
            let h = if i == 1 {
                "Message-ID: <1@x>\r\n\r\n".to_owned()
            } else {
                format!("Message-ID: <{i}@x>\r\nIn-Reply-To: <{}@x>\r\n\r\n", i - 1)
            };
            msg(i, &h)
        })
        .collect();
    let out = String::from_utf8(references(&mut list).unwrap()).unwrap();
    // Links deeper than MAX_DEPTH are not made: a new thread starts.
    assert!(out.starts_with("* THREAD (1 2 3 "), "{}", &out[..40]);
    let threads = out.matches('(').count();
    assert_eq!(threads, (n as usize).div_ceil(MAX_DEPTH + 2));
    // A References field longer than the cap keeps its last IDs.
    let refs: String = (0..5_000).map(|i| format!("<r{i}@x> ")).collect();
    let m = msg(
        1,
        &format!("Message-ID: <m@x>\r\nReferences: {refs}\r\n\r\n"),
    );
    assert_eq!(m.references.len(), MAX_REFERENCES);
    assert_eq!(m.references[MAX_REFERENCES - 1], id_of(b"r4999@x".to_vec()));
}

#[test]
fn too_many_messages_or_ids_are_refused() {
    let mut g = Gathered::default();
    for i in 1..=(MAX_THREAD_MESSAGES as u32 + 1) {
        g.push(msg(i, "\r\n"));
    }
    assert_eq!(g.answer().unwrap_err(), why::MESSAGES);
    let refs: String = (0..MAX_REFERENCES).map(|i| format!("<r{i}@x> ")).collect();
    let m = msg(1, &format!("References: {refs}\r\n\r\n"));
    let mut g = Gathered::default();
    for _ in 0..=(MAX_THREAD_IDS / (MAX_REFERENCES + 1)) {
        g.push(m.clone());
    }
    assert_eq!(g.answer().unwrap_err(), why::IDS);
    let mut g = Gathered::default();
    g.push(m);
    assert!(g.answer().is_ok());
}

fn thread_refs(list: &[(u32, &str)]) -> String {
    let mut m: Vec<Message> = list.iter().map(|(n, h)| msg(*n, h)).collect();
    String::from_utf8(refs(&mut m).unwrap()).unwrap()
}

#[test]
fn refs_orders_threads_by_their_latest_message_without_subjects() {
    let list = [
        (
            1,
            "Message-ID: <1@x>\r\nSubject: plans\r\nDate: 1 Jan 2020 00:00 +0000\r\n\r\n",
        ),
        (
            2,
            "Message-ID: <2@x>\r\nSubject: Re: plans\r\nDate: 3 Jan 2020 00:00 +0000\r\n\r\n",
        ),
        (
            3,
            "Message-ID: <3@x>\r\nReferences: <1@x>\r\nDate: 5 Jan 2020 00:00 +0000\r\n\r\n",
        ),
        (
            4,
            "Message-ID: <4@x>\r\nReferences: <gone@x>\r\nDate: 4 Jan 2020 00:00 +0000\r\n\r\n",
        ),
        (
            5,
            "Message-ID: <5@x>\r\nReferences: <gone@x>\r\nDate: 2 Jan 2020 00:00 +0000\r\n\r\n",
        ),
    ];
    // REFERENCES: by the first message, 2 gathered under 1 by subject.
    assert_eq!(thread(&list), "* THREAD (1 (2)(3))((5)(4))\r\n");
    // REFS: by the latest message (2: Jan 3, gone: Jan 4, 1: Jan 5), no
    // subject gathering; children still by date.
    assert_eq!(thread_refs(&list), "* THREAD (2)((5)(4))(1 3)\r\n");
}

#[test]
fn refs_keeps_dummy_roots_and_breaks_ties_by_root_uid() {
    let list = [
        (
            1,
            "Message-ID: <1@x>\r\nDate: 1 Jan 2020 00:00 +0000\r\n\r\n",
        ),
        (
            2,
            "Message-ID: <2@x>\r\nReferences: <lost@x> <lost2@x>\r\nDate: 1 Jan 2020 00:00 +0000\r\n\r\n",
        ),
        (3, "Message-ID: <3@x>\r\nIn-Reply-To: <2@x>\r\n\r\n"),
    ];
    // 3 has no date: INTERNALDATE (0 here) is its date. The dummy `lost`
    // stays the root of 2 (ordered as UID 0: before 1, same date).
    assert_eq!(thread_refs(&list), "* THREAD (2 3)(1)\r\n");
    assert_eq!(thread(&list), "* THREAD (1)(2 3)\r\n");
    assert_eq!(thread_refs(&[]), "* THREAD \r\n");
}

#[test]
fn refs_over_a_deep_chain_stays_bounded() {
    let n = 5_000u32;
    let mut list: Vec<Message> = (1..=n)
        .map(|i| {
            msg(
                i,
                &format!("Message-ID: <{i}@x>\r\nIn-Reply-To: <{}@x>\r\n\r\n", i - 1),
            )
        })
        .collect();
    let out = String::from_utf8(refs(&mut list).unwrap()).unwrap();
    assert!(out.starts_with("* THREAD ("), "{}", &out[..40]);
    let mut numbers: Vec<u32> = out
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect();
    numbers.sort();
    assert_eq!(numbers, (1..=n).collect::<Vec<u32>>());
    let mut g = Gathered::new(Algorithm::Refs);
    g.push(msg(1, "Message-ID: <a@x>\r\n\r\n"));
    assert_eq!(g.answer().unwrap(), b"* THREAD (1)\r\n");
}
