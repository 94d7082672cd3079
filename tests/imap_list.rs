//! LIST-EXTENDED and LIST-STATUS through writ (issue 11, item 2), held
//! to Dovecot as the oracle: two users with the same folders, the same
//! subscriptions and the same messages, sealed in one and plaintext in
//! the other; each extended LIST run through writ over the sealed copies
//! must give byte for byte what it gives straight at Dovecot over the
//! plaintext ones (`imap_capabilities.py`, over imaplib). Then what writ
//! refuses (STATUS SIZE, unknown options, literals, too many patterns),
//! and pipelined extended LISTs behind a FETCH that writ answers itself.

mod common;

use std::net::SocketAddr;

use common::imap::Imap;
use common::imap_proxy::ImapProxy;
use common::python;
use common::{Provider, User, provider};

const ORACLE: &str = include_str!("imap_capabilities.py");

fn proxy(upstream: SocketAddr) -> ImapProxy {
    ImapProxy::start(
        &format!("{}timeout_secs = 30\n", ImapProxy::plain(upstream)),
        "",
    )
}

/// Folders made for both users, with how many messages each holds (one
/// in three unseen) and whether it is subscribed.
const FOLDERS: &[(&str, usize, bool)] = &[
    ("INBOX", 5, true),
    ("Sent", 3, true),
    ("Drafts", 0, false),
    ("Archive", 2, false),
    ("Archive/2024", 4, true),
    ("Archive/2025", 1, false),
    ("Lists", 0, false),
    ("Lists/rust/announce", 2, true),
    ("Trash", 0, true),
];

fn message(folder: &str, i: usize) -> Vec<u8> {
    format!(
        "From: a@example.test\r\nTo: b@example.test\r\nSubject: {folder} {i}\r\n\
         Message-ID: <{i}.{}@example.test>\r\n\r\nbody {i} of {folder}\r\n",
        folder.replace('/', ".")
    )
    .into_bytes()
}

/// A user with [`FOLDERS`], sealed when `proxy` is given.
fn user_with_folders(p: &Provider, prefix: &str, proxy: Option<&ImapProxy>) -> User {
    let user = p.new_user(prefix);
    let mut imap = p.imap(&user);
    for &(folder, count, subscribed) in FOLDERS {
        if folder != "INBOX" {
            imap.command(&format!("CREATE \"{folder}\""))
                .expect_ok("CREATE");
        }
        if subscribed {
            imap.command(&format!("SUBSCRIBE \"{folder}\""))
                .expect_ok("SUBSCRIBE");
        }
        for i in 0..count {
            let m = message(folder, i);
            let stored = match proxy {
                Some(proxy) => proxy.seal(&m),
                None => m,
            };
            let flags = if i % 3 == 0 { "()" } else { "(\\Seen)" };
            imap.command_with_literal(&format!("APPEND \"{folder}\" {flags}"), &stored, "")
                .expect_ok("APPEND");
        }
    }
    imap.logout();
    user
}

fn oracle(proxy: &ImapProxy, plain: &User, sealed: &User, commands: &[&str]) -> String {
    let p = provider();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("commands");
    let list: String = commands.iter().map(|c| format!("{c}\n")).collect();
    std::fs::write(&file, list).expect("write commands");
    let out = python::ok(
        ORACLE,
        [
            proxy.script_args(Some(p.imap_addr()), proxy.imap, &[plain, sealed]),
            vec![file.display().to_string()],
        ]
        .concat(),
    );
    println!("{out}");
    assert!(out.contains("ALL SAME"), "{out}");
    out
}

#[test]
fn extended_list_and_list_status_answer_as_dovecot() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let plain = user_with_folders(p, "list-plain", None);
    let sealed = user_with_folders(p, "list-sealed", Some(&proxy));
    let mut imap = Imap::login_to(proxy.imap, &sealed.name, &sealed.password);
    let caps = imap.command("CAPABILITY").expect_ok("CAPABILITY").text();
    imap.logout();
    assert!(caps.contains(" LIST-EXTENDED"), "{caps}");
    assert!(caps.contains(" LIST-STATUS"), "{caps}");
    assert!(!caps.contains("STATUS=SIZE"), "{caps}");
    let out = oracle(
        &proxy,
        &plain,
        &sealed,
        &[
            // What Thunderbird and Apple Mail send.
            "LIST \"\" \"*\" RETURN (SPECIAL-USE SUBSCRIBED CHILDREN STATUS (MESSAGES UNSEEN))",
            "LIST (SUBSCRIBED) \"\" \"*\"",
            // CHILDINFO extended data: not parsed by imap-codec, passed raw.
            "LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"%\"",
            "LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"%\" RETURN (CHILDREN)",
            "LIST (SPECIAL-USE) \"\" \"*\"",
            "LIST (SPECIAL-USE) \"\" \"*\" RETURN (STATUS (MESSAGES))",
            "LIST \"\" (\"INBOX\" \"Archive/*\" \"Lists/%\")",
            "LIST () \"\" \"%\" RETURN ()",
            "list \"\" \"*\" return (status (messages recent uidnext unseen deleted))",
            "LIST \"Archive/\" \"%\" RETURN (STATUS (UIDNEXT MESSAGES) CHILDREN)",
            "LIST \"\" \"Nothing*\" RETURN (STATUS (MESSAGES))",
            "LIST (REMOTE) \"\" \"*\"",
            // Plain LIST, LSUB and STATUS still pass typed.
            "LIST \"\" \"*\"",
            "LSUB \"\" \"*\"",
            "STATUS \"Archive/2024\" (MESSAGES UNSEEN UIDNEXT)",
        ],
    );
    // The answers carried what they were asked for (not empty on both).
    assert!(out.contains("STATUS"), "{out}");
    assert!(out.contains("CHILDINFO"), "{out}");
}

/// What writ refuses is answered BAD with the reason, before the
/// provider sees it; the session goes on and another one is served.
#[test]
fn hostile_extended_lists_are_refused_and_sessions_go_on() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let user = user_with_folders(p, "list-hostile", Some(&proxy));
    let mut imap = Imap::login_to(proxy.imap, &user.name, &user.password);
    let mut other = Imap::login_to(proxy.imap, &user.name, &user.password);
    let many = format!("LIST \"\" ({})", vec!["\"x\""; 65].join(" "));
    for (command, why) in [
        // The provider would count the sealed messages' octets.
        (
            "LIST \"\" \"*\" RETURN (STATUS (MESSAGES SIZE))",
            "STATUS SIZE",
        ),
        (
            "LIST \"\" \"*\" RETURN (STATUS (DELETED-STORAGE))",
            "DELETED-STORAGE",
        ),
        ("LIST (X-UNKNOWN) \"\" \"*\"", "LIST option not supported"),
        (
            "LIST \"\" \"*\" RETURN (MYRIGHTS)",
            "LIST option not supported",
        ),
        ("LIST \"\" \"*\" RETURN (STATUS (X-BYTES))", "STATUS item"),
        ("LIST \"\" \"*\" RETURN (STATUS ()", "Malformed"),
        (many.as_str(), "at most 64"),
    ] {
        let r = imap.command(command);
        let text = r.text();
        assert!(
            text.contains(" BAD ") && text.contains(why),
            "{command}: {text}"
        );
        assert!(
            !text.contains("* LIST") && !text.contains("* STATUS"),
            "{text}"
        );
        let r = other
            .command("LIST \"\" \"Archive/%\" RETURN (STATUS (MESSAGES))")
            .expect_ok("other");
        assert!(
            r.text().contains("* STATUS Archive/2024 (MESSAGES 4)"),
            "{}",
            r.text()
        );
    }
    // A literal in an extended LIST: refused before a continuation (a
    // non-synchronising one is read and dropped); the session goes on.
    imap.write_raw(b"l1 LIST (SUBSCRIBED) {2+}\r\n\"\" \"*\"\r\n")
        .expect("write");
    let r = imap.read_response("l1").expect("answer");
    assert!(
        r.text().contains("l1 BAD") && r.text().contains("literal"),
        "{}",
        r.text()
    );
    let r = imap
        .command("LIST (SUBSCRIBED) \"\" \"Trash\"")
        .expect_ok("after the literal");
    assert!(r.text().contains("Trash"), "{}", r.text());
    imap.logout();
    other.logout();
}

/// Extended LISTs pipelined behind a FETCH writ answers itself (a plan of
/// its own commands), and among plain commands: each answered once, with
/// its own tag, with the data it asked for. (Dovecot runs pipelined
/// commands in parallel, so tagged answers need not come in order.)
#[test]
fn pipelined_extended_lists_are_each_answered_behind_a_plan() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let user = user_with_folders(p, "list-pipelined", Some(&proxy));
    let mut imap = Imap::login_to(proxy.imap, &user.name, &user.password);
    imap.select("INBOX").expect_ok("SELECT");
    const N: usize = 50;
    let mut batch = Vec::new();
    batch.extend_from_slice(b"f1 FETCH 1:* (BODY.PEEK[])\r\n");
    for i in 0..N {
        batch.extend_from_slice(
            format!(
                "x{i} LIST \"\" \"Archive/%\" RETURN (STATUS (MESSAGES))\r\n\
                 n{i} NOOP\r\n"
            )
            .as_bytes(),
        );
    }
    batch.extend_from_slice(b"s1 STATUS \"Sent\" (MESSAGES)\r\n");
    imap.write_raw(&batch).expect("write");
    let mut tagged = std::collections::BTreeMap::new();
    let mut untagged = Vec::new();
    while tagged.len() < 2 * N + 2 {
        let line = imap.read_line().expect("answer");
        let raw = String::from_utf8_lossy(&line.raw()).into_owned();
        if raw.starts_with("* ") {
            untagged.push(raw);
            continue;
        }
        let (tag, rest) = raw.split_once(' ').expect("tagged");
        assert!(rest.starts_with("OK "), "{raw}");
        assert!(
            tagged.insert(tag.to_owned(), rest.to_owned()).is_none(),
            "{tag} answered twice"
        );
    }
    for i in 0..N {
        assert!(tagged[&format!("x{i}")].contains("List"), "{tagged:?}");
        assert!(tagged[&format!("n{i}")].contains("NOOP"), "{tagged:?}");
    }
    let count = |s: &str| untagged.iter().filter(|l| l.starts_with(s)).count();
    assert_eq!(count("* STATUS Archive/2024 (MESSAGES 4)"), N);
    assert_eq!(count("* STATUS Archive/2025 (MESSAGES 1)"), N);
    assert_eq!(count("* LIST "), 2 * N);
    assert_eq!(count("* STATUS Sent (MESSAGES 3)"), 1);
    // The FETCH answered with the opened (plaintext) messages.
    let bodies: String = untagged
        .iter()
        .filter(|l| l.contains(" FETCH "))
        .cloned()
        .collect();
    assert!(bodies.contains("body 0 of INBOX"), "{bodies}");
    imap.logout();
}
