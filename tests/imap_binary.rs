//! BINARY (RFC 3516) through writ against Dovecot as the oracle: the same
//! messages stored plaintext at Dovecot and sealed through writ, every
//! BINARY, BINARY.PEEK (with partial ranges) and BINARY.SIZE answer
//! compared byte for byte, refusals (`NO [UNKNOWN-CTE]`, `NO [PARSE]`)
//! included; messages with NULs are APPENDed as literal8, through writ
//! for the sealed copy. Dovecot's own answers are the only expected
//! values.

mod common;

use common::imap_proxy::ImapProxy;
use common::{Imap, Response, provider};

const MULTI: &[u8] = b"From: a@example.test\r\nSubject: b64\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=xx\r\n\r\n--xx\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nCaf=C3=A9 soft=\r\nbreak\r\nline two=20\r\n--xx\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECA//+aGVsbG8K\r\nd29ybGQ=\r\n--xx\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=in\r\n\r\n--in\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naW5uZXIgdGV4dAo=\r\n--in\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: x-unknown\r\n\r\n<p>x</p>\r\n--in--\r\n--xx\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8g!!d29y bGQ=\r\nQUJD===\r\n--xx\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\nbare\nlf and caf\xc3\xa9\r\n--xx--\r\n";

const CONVERTED: &[u8] = b"From: a@example.test\r\nSubject: multi\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=xx\r\n\r\npreamble\r\n--xx\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: Quoted-Printable\r\n\r\nCaf=C3=A9\r\n--xx\r\nContent-Type: application/octet-stream\r\nContent-transfer-encoding:  BASE64 (comment)\r\n\r\nAAECA//+aGVsbG8K\r\n--xx\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Transfer-Encoding: base64\r\n\r\naW5uZXIgdGV4dAo=\r\n--xx\r\nContent-Type: text/plain\r\n\r\nplain 7bit\r\n--xx--\r\nepilogue\r\n";

fn single(cte: &str, body: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "From: a@example.test\r\nSubject: single\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
    )
    .into_bytes();
    m.extend_from_slice(body);
    m.extend_from_slice(b"\r\n");
    m
}

/// Messages any APPEND carries (no NUL).
fn plain_messages() -> Vec<Vec<u8>> {
    let mut v = vec![MULTI.to_vec(), CONVERTED.to_vec()];
    v.push(single("base64", b"aGVsbG8gd29ybGQK"));
    v.push(single("x-foo", b"hello"));
    // Decodes to NULs.
    v.push(single("base64", b"YQBiAGMK"));
    // Malformed base64 (Dovecot: NO [PARSE]) and one with spaces (fine).
    for b in [
        &b"QUJD==="[..],
        b"QUJD!",
        b"QU JD\r\nRA==",
        b"QQ==QkM=",
        b"QUJD-_",
    ] {
        v.push(single("base64", b));
    }
    v.push(single("quoted-printable", b"100%=ZZ off=\r\nx=4"));
    v
}

/// Messages with NUL bytes: APPENDed with a literal8.
fn nul_messages() -> Vec<Vec<u8>> {
    vec![
        b"From: a@example.test\r\nSubject: nul8\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: binary\r\n\r\na\0b\nc\r\n".to_vec(),
        b"From: a@example.test\r\nSubject: nul7\r\nContent-Type: text/plain\r\n\r\na\0b\nc\r\n".to_vec(),
        b"From: a@example.test\r\nSubject: nulmp\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\nContent-Transfer-Encoding: 8bit\r\n\r\na\0b\nc\r\n--q--\r\n".to_vec(),
    ]
}

fn append8(imap: &mut Imap, m: &[u8]) -> Response {
    let tag = imap.tag();
    imap.write_raw(format!("{tag} APPEND INBOX ~{{{}}}\r\n", m.len()).as_bytes())
        .unwrap();
    let go = imap.read_line().unwrap();
    assert!(go.text_only().starts_with('+'), "{go:?}");
    imap.write_raw(m).unwrap();
    imap.write_raw(b"\r\n").unwrap();
    imap.read_response(&tag).unwrap()
}

/// The response with tags and Dovecot's timings taken out.
fn normal(r: &Response) -> Vec<u8> {
    let mut raw = Vec::new();
    for l in &r.untagged {
        raw.extend(l.raw());
    }
    let tagged = r.tagged.raw();
    let at = tagged.iter().position(|&b| b == b' ').unwrap_or(0);
    let mut rest = String::from_utf8_lossy(&tagged[at..]).into_owned();
    if let Some(p) = rest.find(" (0.") {
        rest.truncate(p);
    }
    raw.extend(rest.trim_end().trim_end_matches('.').as_bytes());
    raw
}

const ITEMS: &[&str] = &[
    "BINARY.PEEK[]",
    "BINARY.PEEK[1]",
    "BINARY.PEEK[2]",
    "BINARY.PEEK[3]",
    "BINARY.PEEK[3.1]",
    "BINARY.PEEK[3.1.1]",
    "BINARY.PEEK[3.1.2]",
    "BINARY.PEEK[3.2]",
    "BINARY.PEEK[4]",
    "BINARY.PEEK[5]",
    "BINARY.PEEK[9]",
    "BINARY.PEEK[1]<1.2>",
    "BINARY.PEEK[2]<0.3>",
    "BINARY.PEEK[2]<5.3>",
    "BINARY.PEEK[2]<100.3>",
    "BINARY.PEEK[4]<0.1>",
    "BINARY.PEEK[5]<50.1>",
    "BINARY.SIZE[]",
    "BINARY.SIZE[1]",
    "BINARY.SIZE[2]",
    "BINARY.SIZE[3]",
    "BINARY.SIZE[3.1.1]",
    "BINARY.SIZE[4]",
    "BINARY.SIZE[9]",
    "BINARY.PEEK[1] BINARY.SIZE[2]",
    "BINARY.SIZE[1] BINARY.PEEK[1]",
    "BINARY.PEEK[] BINARY.PEEK[2] BINARY.PEEK[3] BINARY.PEEK[3.1] BINARY.SIZE[3] BINARY.SIZE[4]",
    "BODY.PEEK[]",
];

#[test]
fn binary_sections_of_sealed_mail_are_what_dovecot_sends_for_the_plaintext() {
    let p = provider();
    let proxy = ImapProxy::start(&ImapProxy::plain(p.imap_addr()), "");
    let plain = p.new_user("binary-plain");
    let sealed = p.new_user("binary-sealed");
    for m in plain_messages() {
        p.imap_append(&plain, "INBOX", &m);
        p.imap_append(&sealed, "INBOX", &proxy.seal(&m));
    }
    let mut direct = p.imap(&plain);
    let mut writ = Imap::login_to(proxy.imap, &sealed.name, &sealed.password);
    let caps = writ.command("CAPABILITY").expect_ok("CAPABILITY");
    assert!(caps.text().contains(" BINARY"), "{caps:?}");
    for m in nul_messages() {
        append8(&mut direct, &m).expect_ok("APPEND literal8 at Dovecot");
        // Through writ: sealed like any APPEND.
        append8(&mut writ, &m).expect_ok("APPEND literal8 through writ");
    }
    let count = plain_messages().len() + nul_messages().len();
    direct.select("INBOX").expect_ok("SELECT");
    writ.select("INBOX").expect_ok("SELECT");
    // Every message at the provider is sealed, NUL ones included.
    for stored in p.imap_fetch_all(&sealed, "INBOX") {
        assert!(!stored.contains(&0) && !stored.windows(5).any(|w| w == b"nul8\r"));
    }
    let mut compared = 0;
    for seq in 1..=count {
        for items in ITEMS {
            if seq > plain_messages().len() && items.starts_with("BODY") {
                // Dovecot stores a literal8 APPEND's binary parts as
                // base64; writ seals the message as it came (see the
                // report): only BINARY answers agree.
                compared += 1;
                continue;
            }
            let command = format!("FETCH {seq} ({items})");
            let want = normal(&direct.command(&command));
            let got = normal(&writ.command(&command));
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "{command}"
            );
            assert_eq!(got, want, "{command}");
            compared += 1;
        }
    }
    assert_eq!(compared, count * ITEMS.len());
    // A refusal ends the FETCH: no message after it is answered.
    for command in [
        "FETCH 1:5 (BINARY.PEEK[1])",
        "FETCH 1:5 (BINARY.SIZE[1])",
        "FETCH 3:8 (BINARY.PEEK[1])",
    ] {
        let want = normal(&direct.command(command));
        let got = normal(&writ.command(command));
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "{command}"
        );
    }
    // BINARY without PEEK sets \Seen, shown in FLAGS as Dovecot shows it.
    let command = "FETCH 3 (FLAGS BINARY[1])";
    let want = normal(&direct.command(command));
    let got = normal(&writ.command(command));
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want)
    );
    assert!(String::from_utf8_lossy(&got).contains("\\Seen"));
    direct.logout();
    writ.logout();
}

/// Hostile: one FETCH asks for a 3 MB decoded attachment 16 times and its
/// size 16 times, on a sealed message; it is answered in full (each answer
/// the attachment's bytes, the NULs in it kept, as literal8) while another
/// session is served, and the FETCH after it in the same session too.
#[test]
fn many_binary_items_of_a_huge_section_are_answered_while_others_are_served() {
    use base64::Engine;
    let p = provider();
    let proxy = ImapProxy::start(&ImapProxy::plain(p.imap_addr()), "");
    let user = p.new_user("binary-hostile");
    let attachment: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    assert!(attachment.contains(&0));
    let encoded = base64::engine::general_purpose::STANDARD.encode(&attachment);
    let mut m = b"From: a@example.test\r\nSubject: huge\r\nContent-Type: multipart/mixed; boundary=h\r\n\r\n--h\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--h\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    for line in encoded.as_bytes().chunks(76) {
        m.extend_from_slice(line);
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b"--h--\r\n");
    p.imap_append(&user, "INBOX", &proxy.seal(&m));
    p.imap_append(
        &user,
        "INBOX",
        &proxy.seal(&single("base64", b"aGVsbG8gd29ybGQK")),
    );

    let items: Vec<String> = (0..16)
        .flat_map(|_| ["BINARY.PEEK[2]".to_string(), "BINARY.SIZE[2]".to_string()])
        .collect();
    let command = format!("FETCH 1 ({})", items.join(" "));
    let addr = proxy.imap;
    let (name, password) = (user.name.clone(), user.password.clone());
    let big = std::thread::spawn(move || {
        let mut a = Imap::login_to(addr, &name, &password);
        a.select("INBOX").expect_ok("SELECT");
        let r = a.command(&command).expect_ok("the big FETCH");
        let after = a
            .command("FETCH 2 (BINARY.PEEK[1])")
            .expect_ok("FETCH after");
        a.logout();
        (r, after)
    });
    // Another session is served meanwhile.
    let mut b = Imap::login_to(proxy.imap, &user.name, &user.password);
    b.select("INBOX").expect_ok("SELECT");
    for _ in 0..5 {
        let r = b
            .command("FETCH 2 (BINARY.PEEK[1] BINARY.SIZE[1])")
            .expect_ok("FETCH");
        assert_eq!(r.fetch_literals("BINARY[1] ~")[0].1, b"hello world\n");
        assert!(r.text().contains("BINARY.SIZE[1] 12"), "{r:?}");
    }
    b.logout();
    let (r, after) = big.join().expect("big FETCH");
    let answers = r.fetch_literals("BINARY[2] ~");
    assert_eq!(answers.len(), 16);
    for (_, bytes) in &answers {
        assert!(bytes == &attachment, "a decoded answer differs");
    }
    let text = r.text();
    assert_eq!(
        text.matches(&format!("BINARY[2] ~{{{}}}", attachment.len()))
            .count(),
        16
    );
    assert_eq!(
        text.matches(&format!("BINARY.SIZE[2] {}", attachment.len()))
            .count(),
        16
    );
    assert_eq!(after.fetch_literals("BINARY[1] ~")[0].1, b"hello world\n");
}

/// A plaintext message in the same mailbox: its BINARY items come from
/// the provider through writ as Dovecot sends them (a partial cut by writ
/// from the whole section, which imap-codec reads without its
/// `<origin>`), and equal the sealed copy's.
#[test]
fn binary_of_plaintext_mail_is_the_providers() {
    let p = provider();
    let proxy = ImapProxy::start(&ImapProxy::plain(p.imap_addr()), "");
    let user = p.new_user("binary-mixed");
    p.imap_append(&user, "INBOX", CONVERTED);
    p.imap_append(&user, "INBOX", &proxy.seal(CONVERTED));
    let mut direct = p.imap(&user);
    direct.select("INBOX").expect_ok("SELECT");
    let mut writ = Imap::login_to(proxy.imap, &user.name, &user.password);
    writ.select("INBOX").expect_ok("SELECT");
    for items in [
        "BINARY.PEEK[2]",
        "BINARY.PEEK[4]",
        "BINARY.SIZE[2]",
        "BINARY.PEEK[] BINARY.SIZE[3]",
        "BINARY.PEEK[2]<1.3>",
        "BINARY.PEEK[1]<0.100>",
        "BINARY.PEEK[1]<3.4>",
        "BINARY.PEEK[4]<2.5>",
        "BINARY.PEEK[]<0.100>",
        "BINARY.PEEK[]<40.30>",
        "BINARY.PEEK[2]<100.3>",
        "BINARY.PEEK[9]<0.3>",
        "BINARY.PEEK[3]<5.10>",
        "BINARY.PEEK[2] BINARY.PEEK[2]<1.3>",
        "BINARY.PEEK[2]<0.2> BINARY.PEEK[2]<2.2> BINARY.SIZE[2]",
        "BINARY.PEEK[1]<1.2> BODY.PEEK[1]<1.2> RFC822.SIZE",
    ] {
        let want = normal(&direct.command(&format!("FETCH 1 ({items})")));
        for seq in [1u32, 2] {
            let got = normal(&writ.command(&format!("FETCH {seq} ({items})")));
            let got = String::from_utf8_lossy(&got).replacen(&format!("* {seq} "), "* 1 ", 1);
            assert_eq!(
                got,
                String::from_utf8_lossy(&want),
                "message {seq}: {items}"
            );
        }
    }
}
