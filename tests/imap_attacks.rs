//! Attacks on the IMAP proxy found by a security review, each kept as a
//! regression test: by an unauthenticated outsider (same-tagged LOGIN,
//! large pre-login literals, not reading its answers), an ordinary
//! logged-in user (posing as another account to reach its cached
//! plaintext, commands pipelined behind a FETCH, a SEARCH with thousands
//! of keys, an expunge reported as VANISHED) and a busy mailbox (partial fetches and IDLE
//! with concurrent changes), against writ in front of a real Dovecot.
//!
//! Each test is named for what must hold, and failed on the code before
//! the fix it guards (its doc comment names the defect it found).

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::imap::Response;
use common::imap_proxy::ImapProxy;
use common::{FaultProxy, Faults, Imap, User, When, provider};

fn proxy(options: &str) -> ImapProxy {
    proxy_in_front_of(provider().imap_addr(), options)
}

fn proxy_in_front_of(upstream: SocketAddr, options: &str) -> ImapProxy {
    ImapProxy::start(
        &format!("{}timeout_secs = 30\n", ImapProxy::plain(upstream)),
        options,
    )
}

/// A raw connection to writ, its greeting read and returned.
fn raw(addr: SocketAddr, read_timeout: Duration) -> (TcpStream, BufReader<TcpStream>, String) {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(read_timeout)).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let greeting = read_line(&mut r);
    (s, r, greeting)
}

/// One line, or "" at EOF; a read timeout is reported as "<timeout>".
fn read_line(r: &mut impl BufRead) -> String {
    let mut line = Vec::new();
    match r.read_until(b'\n', &mut line) {
        Ok(_) => String::from_utf8_lossy(&line).into_owned(),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            "<timeout>".into()
        }
        Err(e) => panic!("read: {e}"),
    }
}

/// Reads lines until one starts with `prefix` (returned), EOF or timeout
/// (`None`); every line read is appended to `seen`.
fn read_until(r: &mut impl BufRead, prefix: &str, seen: &mut String) -> Option<String> {
    loop {
        let line = read_line(r);
        if line.is_empty() || line == "<timeout>" {
            seen.push_str(&line);
            return None;
        }
        seen.push_str(&line);
        if line.starts_with(prefix) {
            return Some(line);
        }
    }
}

/// An unauthenticated client pipelines `x CAPABILITY` and `x LOGIN` with
/// a wrong password, both tagged `x`: the provider's OK to CAPABILITY
/// could be taken for the LOGIN's. Returns once both are answered (the
/// LOGIN refused: BAD while the tag is in use, or NO from the provider).
fn fake_login(addr: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
    let (mut s, mut r, greeting) = raw(addr, Duration::from_secs(20));
    assert!(greeting.starts_with("* OK"), "{greeting}");
    s.write_all(b"x CAPABILITY\r\nx LOGIN nobody wrong-password\r\n")
        .unwrap();
    let mut seen = String::new();
    let answers: Vec<String> = (0..2)
        .map(|_| read_until(&mut r, "x ", &mut seen).unwrap_or_else(|| panic!("{seen}")))
        .collect();
    assert!(
        answers.iter().any(|a| a.starts_with("x OK")),
        "CAPABILITY answered: {seen}"
    );
    assert!(
        answers
            .iter()
            .any(|a| a.starts_with("x NO") || a.starts_with("x BAD")),
        "the LOGIN must fail: {seen}"
    );
    (s, r)
}

/// Defect: writ takes the provider's tagged OK of any command for the
/// outcome of a LOGIN in flight with the same tag
/// (`Session::track_status`), so a client that never logged in counts as
/// logged in: its pre-login slot is given back (`connection::serve`).
#[test]
fn a_failed_login_behind_a_same_tagged_command_keeps_its_prelogin_slot() {
    let proxy = proxy("max_prelogin_per_ip = 2\nlogin_timeout_secs = 60\n");
    let _held: Vec<_> = (0..2).map(|_| fake_login(proxy.imap)).collect();
    // Two clients from this address are not logged in: a third is refused.
    let (_s, _r, greeting) = raw(proxy.imap, Duration::from_secs(20));
    assert!(
        greeting.starts_with("* BYE [UNAVAILABLE]"),
        "a third pre-login connection from one address was accepted \
         (max_prelogin_per_ip = 2): {greeting}"
    );
}

/// Defect (same cause): the client that never logged in is no longer held
/// to the login timeout but to the idle timeout (at least 30 minutes,
/// renewed by every command).
#[test]
fn a_failed_login_behind_a_same_tagged_command_still_meets_the_login_timeout() {
    let proxy = proxy("login_timeout_secs = 5\n");
    let started = Instant::now();
    let (_s, mut r) = fake_login(proxy.imap);
    let mut seen = String::new();
    let bye = read_until(&mut r, "* BYE", &mut seen);
    assert!(
        bye.as_deref().is_some_and(|b| b.contains("Login timeout")),
        "not told BYE within {:?} with login_timeout_secs = 5: {seen:?}",
        started.elapsed()
    );
}

/// A user whose INBOX holds `messages` (sealed by the proxy's keyring).
fn user_with_sealed(proxy: &ImapProxy, prefix: &str, messages: &[Vec<u8>]) -> User {
    let p = provider();
    let user = p.new_user(prefix);
    for m in messages {
        p.imap_append(&user, "INBOX", &proxy.seal(m));
    }
    user
}

fn note(from: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: someone@example.test\r\nSubject: {subject}\r\n\
         Date: Sun, 06 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@example.test>\r\n\r\n\
         {body}\r\n"
    )
    .into_bytes()
}

/// The INBOX UIDVALIDITY of `user`, straight from Dovecot.
fn uidvalidity(user: &User) -> u32 {
    let mut imap = provider().imap(user);
    let r = imap
        .command("STATUS INBOX (UIDVALIDITY)")
        .expect_ok("STATUS");
    imap.logout();
    r.status_item("UIDVALIDITY").expect("UIDVALIDITY")
}

/// Gives `user`'s INBOX this UIDVALIDITY (providers such as Gmail number
/// every account's INBOX alike; Dovecot numbers by creation time).
fn set_uidvalidity(user: &User, value: u32) {
    let out = provider().doveadm(&[
        "mailbox",
        "update",
        "-u",
        &user.name,
        "--uid-validity",
        &value.to_string(),
        "INBOX",
    ]);
    assert!(
        out.status.success(),
        "doveadm mailbox update: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(uidvalidity(user), value);
}

/// A logged-in attacker makes writ believe it is `victim`: a NOOP and a
/// LOGIN naming the victim, pipelined under one tag. The provider session
/// stays the attacker's.
fn pose_as(imap: &mut Imap, victim: &User) {
    imap.write_raw(format!("x NOOP\r\nx LOGIN {} not-the-password\r\n", victim.name).as_bytes())
        .unwrap();
    imap.read_response("x").expect("NOOP answered");
    imap.read_response("x").expect("LOGIN answered");
}

/// The body literal of `FETCH n (BODY.PEEK[])` through `imap`.
fn body_of(imap: &mut Imap, n: u32) -> Vec<u8> {
    let r = imap
        .command(&format!("FETCH {n} (BODY.PEEK[])"))
        .expect_ok("FETCH");
    let mut literals = r.fetch_literals("BODY[]");
    assert_eq!(literals.len(), 1, "{}", r.text());
    literals.remove(0).1
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Two users of one organisation whose INBOXes share a UIDVALIDITY, each
/// with sealed mail at UIDs 1 and 2.
fn two_users(proxy: &ImapProxy) -> (User, User) {
    let victim = user_with_sealed(
        proxy,
        "rv",
        &[
            note("hr@example.test", "salary", "VICTIM-SECRET-1"),
            note("hr@example.test", "review", "VICTIM-SECRET-2"),
        ],
    );
    let attacker = user_with_sealed(
        proxy,
        "ra",
        &[
            note("ra@example.test", "mine", "ATTACKER-OWN-1"),
            note("ceo@example.test", "urgent", "ATTACKER-FORGED-2"),
        ],
    );
    let v = uidvalidity(&victim);
    set_uidvalidity(&attacker, v);
    (victim, attacker)
}

/// Defect: the account the cache keys opened messages by is the one writ
/// believes logged in (`Session::track_status`): an attacker who poses as
/// another user reads that user's opened (decrypted) mail from the cache.
#[test]
fn a_user_cannot_read_another_users_cached_plaintext() {
    let proxy = proxy("");
    let (victim, attacker) = two_users(&proxy);
    // The victim reads its mail through writ: now in the cache.
    let mut v = Imap::login_to(proxy.imap, &victim.name, &victim.password);
    v.select("INBOX").expect_ok("SELECT");
    assert!(contains(&body_of(&mut v, 1), "VICTIM-SECRET-1"));
    v.logout();

    let mut a = Imap::login_to(proxy.imap, &attacker.name, &attacker.password);
    pose_as(&mut a, &victim);
    a.select("INBOX").expect_ok("SELECT");
    let got = body_of(&mut a, 1);
    assert!(
        !contains(&got, "VICTIM-SECRET"),
        "the attacker read the victim's decrypted message:\n{}",
        String::from_utf8_lossy(&got)
    );
    assert!(contains(&got, "ATTACKER-OWN-1"));
    a.logout();
}

/// Defect (same cause): what the attacker opens is cached under the
/// victim's name, and the victim is then shown the attacker's message in
/// place of its own.
#[test]
fn a_user_cannot_plant_messages_in_another_users_cache() {
    let proxy = proxy("");
    let (victim, attacker) = two_users(&proxy);
    let mut a = Imap::login_to(proxy.imap, &attacker.name, &attacker.password);
    pose_as(&mut a, &victim);
    a.select("INBOX").expect_ok("SELECT");
    assert!(contains(&body_of(&mut a, 2), "ATTACKER-FORGED-2"));
    a.logout();

    let mut v = Imap::login_to(proxy.imap, &victim.name, &victim.password);
    v.select("INBOX").expect_ok("SELECT");
    let got = body_of(&mut v, 2);
    assert!(
        contains(&got, "VICTIM-SECRET-2"),
        "the victim was shown another message in place of its own:\n{}",
        String::from_utf8_lossy(&got)
    );
    v.logout();
}

/// A message whose body names its number.
fn numbered(i: usize) -> Vec<u8> {
    note(
        "a@example.test",
        &format!("n{i}"),
        &format!("This is the body of message number {i}."),
    )
}

/// Follows a response as a client does: `* VANISHED uids` and `* N
/// EXPUNGE` take messages out of `view`; each FETCH with a body must carry,
/// under its number, the UID and body of the message the client numbers so.
fn follow(view: &mut Vec<u32>, r: &Response, bodies: &BTreeMap<u32, Vec<u8>>) {
    for line in &r.untagged {
        let t = line.text_only().to_ascii_uppercase();
        let words: Vec<&str> = t
            .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
            .filter(|w| !w.is_empty())
            .collect();
        match words.as_slice() {
            ["*", "VANISHED", set, ..] if *set != "EARLIER" => {
                for range in set.split(',') {
                    let (lo, hi) = range.split_once(':').unwrap_or((range, range));
                    let (lo, hi): (u32, u32) = (lo.parse().unwrap(), hi.parse().unwrap());
                    view.retain(|u| !(lo..=hi).contains(u));
                }
            }
            ["*", n, "EXPUNGE"] => {
                view.remove(n.parse::<usize>().unwrap() - 1);
            }
            ["*", n, "FETCH", rest @ ..] => {
                let seq: usize = n.parse().unwrap();
                let Some(body) = line.literals.first() else {
                    continue;
                };
                let uid: u32 = rest
                    .iter()
                    .skip_while(|w| **w != "UID")
                    .nth(1)
                    .and_then(|u| u.parse().ok())
                    .expect("a UID");
                assert_eq!(
                    view.get(seq - 1).copied(),
                    Some(uid),
                    "message {seq} answered with UID {uid}, which the client numbers \
                     otherwise:\n{}",
                    r.text()
                );
                assert_eq!(body, &bodies[&uid], "{}", r.text());
            }
            _ => {}
        }
    }
}

/// Defect: with QRESYNC enabled (ENABLE passed through writ although the
/// capability was not shown) the provider reports an expunge during a UID
/// FETCH as VANISHED, which writ passed on without renumbering what it
/// still had to answer (`Session::on_provider` renumbered on EXPUNGE
/// only): bodies then went out under numbers that name other messages.
/// First fixed by ENABLE passing on only CONDSTORE; now QRESYNC is offered
/// and a VANISHED renumbers the plan's pending answers by UID
/// (`sequence::Vanished`).
#[test]
fn an_expunge_reported_as_vanished_during_a_uid_fetch_keeps_numbers_right() {
    let p = provider();
    let proxy = proxy("");
    let user = p.new_user("rq");
    let mut bodies = BTreeMap::new();
    let mut view = Vec::new();
    for i in 1..=6 {
        let m = numbered(i);
        let stored = if i % 2 == 1 {
            proxy.seal(&m)
        } else {
            m.clone()
        };
        let uid = p.imap_append(&user, "INBOX", &stored);
        bodies.insert(uid, m);
        view.push(uid);
    }
    let mut a = Imap::login_to(proxy.imap, &user.name, &user.password);
    // QRESYNC is offered (Dovecot has it): expunges come as VANISHED.
    let r = a.command("ENABLE QRESYNC").expect_ok("ENABLE");
    assert!(
        r.text().to_ascii_uppercase().contains("ENABLED QRESYNC"),
        "QRESYNC not enabled: {}",
        r.text()
    );
    a.select("INBOX").expect_ok("SELECT");
    let mut b = p.imap(&user);
    b.select("INBOX").expect_ok("SELECT at Dovecot");
    b.command(&format!("UID STORE {} +FLAGS.SILENT (\\Deleted)", view[1]))
        .expect_ok("STORE");
    b.command("EXPUNGE").expect_ok("EXPUNGE");
    let f = a
        .command("UID FETCH 1:* (UID BODY.PEEK[])")
        .expect_ok("UID FETCH");
    follow(&mut view, &f, &bodies);
    let n = a.command("NOOP").expect_ok("NOOP");
    follow(&mut view, &n, &bodies);
    let all = a.command("FETCH 1:* (UID BODY.PEEK[])").expect_ok("FETCH");
    follow(&mut view, &all, &bodies);
    a.logout();
    b.logout();
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// Sends `chunks` of `each` octets on `s` (write timeout `patience`);
/// returns how many octets went out before writ stopped reading.
fn push(s: &mut TcpStream, head: &[u8], chunks: usize, each: usize, patience: Duration) -> usize {
    s.set_write_timeout(Some(patience)).unwrap();
    let mut sent = 0;
    if s.write_all(head).is_err() {
        return sent;
    }
    let block = vec![b'x'; 64 * 1024];
    for _ in 0..chunks {
        let mut left = each;
        while left > 0 {
            let n = left.min(block.len());
            if s.write_all(&block[..n]).is_err() {
                return sent;
            }
            sent += n;
            left -= n;
        }
    }
    sent
}

/// Defect: an unauthenticated client may send a literal up to
/// `imap.max_literal_size` (50 MiB by default) in its LOGIN, and writ
/// holds all of it (imap-next buffers the command) for the whole login
/// timeout: 10 such connections per address (Dovecot's own login process
/// takes at most a few KiB before login).
#[test]
fn unauthenticated_clients_cannot_make_writ_hold_large_literals() {
    let proxy = proxy("");
    let pid = proxy.writ.pid();
    let before = rss(pid);
    const EACH: usize = 40 * 1024 * 1024;
    let conns: Vec<_> = (0..4)
        .map(|_| {
            let addr = proxy.imap;
            thread::spawn(move || {
                let (mut s, r, greeting) = raw(addr, Duration::from_secs(20));
                assert!(greeting.starts_with("* OK"), "{greeting}");
                let head = format!("a LOGIN {{{EACH}+}}\r\n");
                let sent = push(&mut s, head.as_bytes(), 1, EACH, Duration::from_secs(5));
                (s, r, sent)
            })
        })
        .collect();
    let conns: Vec<_> = conns.into_iter().map(|t| t.join().unwrap()).collect();
    let grown = rss(pid).saturating_sub(before);
    let sent: usize = conns.iter().map(|c| c.2).sum();
    assert!(
        grown < 64 * 1024 * 1024,
        "four unauthenticated connections made writ grow by {} MiB ({} MiB sent)",
        grown >> 20,
        sent >> 20
    );
}

/// Defect: while writ answers a FETCH or SEARCH with commands of its own
/// (a plan), the client's further commands are parsed and queued without
/// limit (`Session::held`), and writ keeps reading: a logged-in user
/// grows writ's memory by as much as it sends for as long as the plan
/// runs (a large mailbox, a slow provider). Here the provider stalls on
/// the FETCH, and the client pipelines APPENDs with LITERAL+.
#[test]
fn commands_pipelined_behind_a_fetch_are_not_queued_without_limit() {
    let p = provider();
    let user = p.new_user("rh");
    p.imap_append(&user, "INBOX", &numbered(1));
    let upstream = FaultProxy::start(p.imap_addr(), Faults::new().hold("FETCH", When::Nth(1)));
    let proxy = proxy_in_front_of(upstream.addr(), "");
    let pid = proxy.writ.pid();
    let (mut sock, mut r, greeting) = raw(proxy.imap, Duration::from_secs(20));
    assert!(greeting.starts_with("* OK"), "{greeting}");
    let mut seen = String::new();
    sock.write_all(
        format!(
            "l LOGIN {} {}\r\ns SELECT INBOX\r\n",
            user.name, user.password
        )
        .as_bytes(),
    )
    .unwrap();
    read_until(&mut r, "s OK", &mut seen).unwrap_or_else(|| panic!("{seen}"));
    sock.write_all(b"f FETCH 1 (BODY[])\r\n").unwrap();
    assert!(
        upstream.wait_held(Duration::from_secs(10)),
        "the FETCH reached the provider"
    );
    let before = rss(pid);
    const EACH: usize = 1024 * 1024;
    let mut sent = 0;
    for i in 0..200 {
        let head = format!("p{i} APPEND INBOX {{{EACH}+}}\r\n");
        let n = push(&mut sock, head.as_bytes(), 1, EACH, Duration::from_secs(5));
        sent += n;
        if n < EACH || sock.write_all(b"\r\n").is_err() {
            break;
        }
    }
    let grown = rss(pid).saturating_sub(before);
    assert!(
        grown < 64 * 1024 * 1024,
        "{} MiB pipelined behind a FETCH made writ grow by {} MiB",
        sent >> 20,
        grown >> 20
    );
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kb * 1024
}

/// A sealed message anyone could send (the epoch recipient is public):
/// its summary is a multipart whose `children` text parts all claim the
/// same body, the whole message's. Every offset is inside the message and
/// after its parent's body start, so the summary's checks pass.
fn overlapping_parts(proxy: &ImapProxy, children: usize, body: usize) -> Vec<u8> {
    let header = "Content-Type: multipart/mixed; boundary=b\r\nSubject: overlap\r\n\r\n";
    let mut m = header.as_bytes().to_vec();
    m.extend(std::iter::repeat_n(b'a', body - 4));
    m.extend_from_slice(b"zq\r\n");
    let (h, size) = (header.len() as u64, m.len() as u64);
    let part = |parent: Option<usize>, ty: &str, sub: &str, ho: u64, hs: u64| {
        let parent = parent.map_or(String::new(), |p| format!(",\"parent\":{p}"));
        format!(
            "{{\"type\":\"{ty}\",\"subtype\":\"{sub}\",\"content_type_present\":true,\
             \"params\":[],\"header_offset\":{ho},\"header_size\":{hs},\"body_offset\":{},\
             \"body_size\":{},\"body_lines\":1,\"body_bare_lf\":0{parent}}}",
            ho + hs,
            size - ho - hs
        )
    };
    let mut parts = vec![part(None, "multipart", "mixed", 0, h)];
    parts.extend((0..children).map(|_| part(Some(0), "text", "plain", h, 0)));
    let json = format!(
        "{{\"version\":1,\"size\":{size},\"bare_lf\":0,\"parts\":[{}]}}",
        parts.join(",")
    );
    let keyring = ::writ::keys::Keyring::load(&proxy.writ.keys_dir).expect("keyring");
    let epoch = keyring.active().expect("an active epoch");
    ::writ::envelope::fuzz::forge(&epoch.recipient, 1, &epoch.id, json.as_bytes(), &m)
}

/// Defect: a summary's entities may overlap (each is checked to lie inside
/// the message and after its parent's body start, not inside its parent's
/// end nor apart from its siblings), and a content SEARCH makes one
/// decoded copy per entity (`search::mime::entity_texts`): one sealed
/// message of S octets with N entities costs N x S of memory, up to 10,000
/// x 50 MiB, so a message from anyone aborts writ at the recipient's next
/// BODY or TEXT search.
#[test]
fn a_sealed_message_with_overlapping_parts_cannot_multiply_search_memory() {
    let p = provider();
    let proxy = proxy("");
    let user = p.new_user("ro");
    p.imap_append(&user, "INBOX", &overlapping_parts(&proxy, 200, 512 * 1024));
    let pid = proxy.writ.pid();
    let mut a = Imap::login_to(proxy.imap, &user.name, &user.password);
    a.select("INBOX").expect_ok("SELECT");
    let before = peak(pid);
    let r = a.command("SEARCH BODY zq").expect_ok("SEARCH");
    let grown = peak(pid).saturating_sub(before);
    assert!(
        grown < 48 * 1024 * 1024,
        "one 512 KiB message made a SEARCH take {} MiB more ({})",
        grown >> 20,
        r.text().trim()
    );
    a.logout();
}

/// CPU time of a process (user + system), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    let after = stat.rsplit_once(')').expect("stat").1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Defect: a content SEARCH is evaluated on the runtime thread, key by key
/// over the whole message (`search::Ctx::find`), without a bound on the
/// work: ~8,000 BODY keys (64 KiB of command) over one large message keep
/// a worker busy for as long as that takes, and two such searches (one
/// per core) leave every other session waiting.
#[test]
fn a_search_with_many_keys_does_not_stall_other_sessions() {
    let p = provider();
    let proxy = proxy("");
    let attacker = p.new_user("rs");
    let mut big = b"From: a@example.test\r\nSubject: big\r\n\r\n".to_vec();
    for _ in 0..(16 * 1024 * 1024 / 64) {
        big.extend_from_slice(&[b'z'; 62]);
        big.extend_from_slice(b"\r\n");
    }
    big.extend_from_slice(b"zq\r\n");
    p.imap_append(&attacker, "INBOX", &big);
    let other = p.new_user("rso");
    p.imap_append(&other, "INBOX", &numbered(1));

    let mut search = b"s SEARCH".to_vec();
    while search.len() + 8 < 65_000 {
        search.extend_from_slice(b" BODY zq");
    }
    search.extend_from_slice(b"\r\n");
    let pid = proxy.writ.pid();
    let start_ticks = cpu_ticks(pid);
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let attacks: Vec<_> = (0..2)
        .map(|_| {
            let (mut s, mut r, _) = raw(proxy.imap, Duration::from_secs(600));
            let login = format!(
                "l LOGIN {} {}\r\nx SELECT INBOX\r\n",
                attacker.name, attacker.password
            );
            s.write_all(login.as_bytes()).unwrap();
            let mut seen = String::new();
            read_until(&mut r, "x OK", &mut seen).unwrap_or_else(|| panic!("{seen}"));
            s.write_all(&search).unwrap();
            let answered = answered.clone();
            // The SEARCH's answer, once there is one.
            thread::spawn(move || {
                let mut seen = String::new();
                let line = read_until(&mut r, "s ", &mut seen);
                answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                (s, line)
            })
        })
        .collect();
    // The searches are under way once writ has used two seconds of CPU
    // (unless both were answered already).
    let ticks = 2 * 100;
    let deadline = Instant::now() + Duration::from_secs(60);
    while cpu_ticks(pid) < start_ticks + ticks
        && answered.load(std::sync::atomic::Ordering::SeqCst) < 2
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    let (mut s, mut r, greeting) = raw(proxy.imap, Duration::from_secs(10));
    let mut seen = greeting.clone();
    let served = greeting.starts_with("* OK") && {
        let login = format!(
            "l LOGIN {} {}\r\ns SELECT INBOX\r\nf FETCH 1 (BODY.PEEK[])\r\n",
            other.name, other.password
        );
        s.write_all(login.as_bytes()).unwrap();
        read_until(&mut r, "f OK", &mut seen).is_some()
    };
    let took = started.elapsed();
    assert!(
        served && took < Duration::from_secs(5),
        "another user waited {took:?} for a login and one FETCH during two SEARCHes \
         (served: {served}): {seen:?}"
    );
    for attack in attacks {
        let (_s, line) = attack.join().unwrap();
        let line = line.unwrap_or_default();
        assert!(
            line.starts_with("s BAD") && line.contains("at most"),
            "a SEARCH over the key caps is refused naming the cap: {line:?}"
        );
    }
}

/// Defect: writ writes to the client without a time limit
/// (`connection::serve`, `write_all`), and the login deadline (like the
/// idle timeout) is only checked while waiting to read: a client that
/// pipelines commands and never reads their answers keeps its session,
/// its pre-login slot and a provider connection for good.
#[test]
fn a_client_that_stops_reading_still_meets_the_login_timeout() {
    let proxy = proxy("login_timeout_secs = 5\nmax_prelogin_per_ip = 1\n");
    let connected = Instant::now();
    let (mut s, _r, greeting) = raw(proxy.imap, Duration::from_secs(10));
    assert!(greeting.starts_with("* OK"), "{greeting}");
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    // Lines writ answers itself (BAD, unparseable): no provider involved.
    let burst = b"x\r\n".repeat(16 * 1024);
    let mut sent = 0usize;
    while sent < 64 * 1024 * 1024 && s.write_all(&burst).is_ok() {
        sent += burst.len();
    }
    // Once its login deadline has passed the client is gone, and its
    // address may connect again.
    let deadline = connected + Duration::from_secs(40);
    let mut last = String::new();
    while Instant::now() < deadline {
        let (_s2, _r2, line) = raw(proxy.imap, Duration::from_secs(5));
        if line.starts_with("* OK") {
            return;
        }
        last = line;
        thread::sleep(Duration::from_millis(500));
    }
    panic!(
        "a client that stopped reading ({} KiB of commands sent) still held its \
         pre-login slot {:?} after connecting (login_timeout_secs = 5): {last:?}",
        sent >> 10,
        connected.elapsed()
    );
}

/// Held up: partial fetches of a sealed message are what Dovecot answers
/// for the same plaintext (inside, across and past the end), and IDLE
/// passes another session's APPEND and EXPUNGE on and ends with DONE.
#[test]
fn partial_fetches_of_sealed_mail_and_idle_with_concurrent_changes() {
    let p = provider();
    let proxy = proxy("");
    let user = p.new_user("rp");
    let twin = p.new_user("rpt");
    let m = numbered(7);
    p.imap_append(&user, "INBOX", &proxy.seal(&m));
    p.imap_append(&twin, "INBOX", &m);
    let mut a = Imap::login_to(proxy.imap, &user.name, &user.password);
    a.select("INBOX").expect_ok("SELECT");
    let mut d = p.imap(&twin);
    d.select("INBOX").expect_ok("SELECT");
    for item in [
        "BODY.PEEK[]<0.10>",
        "BODY.PEEK[]<150.4294967295>",
        "BODY.PEEK[]<4294967295.1>",
        "BODY.PEEK[TEXT]<5.7>",
        "BODY.PEEK[HEADER.FIELDS (SUBJECT)]<2.3>",
        "BODY.PEEK[1]<0.1>",
    ] {
        let cmd = format!("FETCH 1 ({item})");
        let via = a.command(&cmd).expect_ok(&cmd).text();
        let direct = d.command(&cmd).expect_ok(&cmd).text();
        let untagged = |t: &str| {
            t.lines()
                .filter(|l| !l.starts_with('T'))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(untagged(&via), untagged(&direct), "{cmd}");
    }
    d.logout();

    let mut b = p.imap(&user);
    b.select("INBOX").expect_ok("SELECT at Dovecot");
    a.write_raw(b"i IDLE\r\n").unwrap();
    let line = a.read_line().expect("continuation");
    assert!(line.text_only().starts_with('+'), "{line:?}");
    p.imap_append(&user, "INBOX", &proxy.seal(&numbered(8)));
    b.command("STORE 1 +FLAGS.SILENT (\\Deleted)")
        .expect_ok("STORE");
    b.command("EXPUNGE").expect_ok("EXPUNGE");
    let mut saw = String::new();
    while !(saw.contains("EXPUNGE") && saw.contains("EXISTS")) {
        saw.push_str(&a.read_line().expect("IDLE updates").text_only());
    }
    a.write_raw(b"DONE\r\n").unwrap();
    a.read_response("i").expect("IDLE done").expect_ok("IDLE");
    let r = a.command("FETCH 1 (BODY.PEEK[])").expect_ok("FETCH");
    assert_eq!(r.fetch_literals("BODY[]")[0].1, numbered(8), "{}", r.text());
    a.logout();
    b.logout();
}
