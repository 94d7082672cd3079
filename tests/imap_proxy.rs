//! The IMAP proxy in front of a real Dovecot, with Python's imaplib (and raw
//! sockets where imaplib hides what is tested) as the client.
//!
//! This file covers the typed pass-through: what a client sees through writ
//! for plaintext mail must be what Dovecot itself says.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::imap_proxy::ImapProxy;
use common::python::{self, Paused};
use common::writ::free_port;
use common::{Provider, User, provider};

/// `imap.max_literal_size` of the test proxies.
const MAX_LITERAL: usize = 200_000;

/// writ's IMAP proxy in front of `upstream` (plain IMAP on loopback).
fn proxy(upstream: SocketAddr) -> ImapProxy {
    proxy_to(&ImapProxy::plain(upstream))
}

/// writ's IMAP proxy with `[provider.imap]` given as TOML lines.
fn proxy_to(provider_imap: &str) -> ImapProxy {
    ImapProxy::start(
        &format!("{provider_imap}timeout_secs = 10\n"),
        &format!("max_literal_size = {MAX_LITERAL}\n"),
    )
}

/// Messages of different shapes: single part, nested multipart with a
/// message/rfc822 inside and 8-bit text, header only.
const MESSAGES: [&[u8]; 3] = [
        b"From: Alice <alice@example.test>\r\nTo: Bob <bob@example.test>\r\nSubject: plain\r\nDate: Fri, 27 Nov 2026 08:00:00 +0000\r\nMessage-ID: <p1@example.test>\r\n\r\nHello Bob.\r\n",
        b"From: alice@example.test\r\nTo: bob@example.test, carol@example.test\r\nCc: \"Dee, D.\" <dee@example.test>\r\nSubject: =?utf-8?q?caf=C3=A9?= menu\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nFrom: x@example.test\r\nSubject: inner\r\n\r\ninner body\r\n--b1--\r\n",
        b"From: nobody@example.test\r\nSubject: no body\r\n",
];

/// A user with [`MESSAGES`] in plaintext in INBOX.
fn user_with_mail(p: &Provider, prefix: &str) -> User {
    let user = p.new_user(prefix);
    for m in MESSAGES {
        p.imap_append(&user, "INBOX", m);
    }
    user
}

const COMPARE: &str = r#"
import imaplib, re, ssl, sys
dport, wport, ca, user, pw = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=ca)
direct = imaplib.IMAP4('127.0.0.1', int(dport))
proxied = imaplib.IMAP4('127.0.0.1', int(wport))
proxied.starttls(ssl_context=ctx)
steps = [
    ('login', lambda c: c.login(user, pw)),
    ('select', lambda c: c.select('INBOX')),
    ('fetch', lambda c: c.fetch('1:*', '(UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE)')),
    ('fetch body', lambda c: c.fetch('1:*', '(BODY.PEEK[] BODY.PEEK[HEADER.FIELDS (Subject from)] BODY.PEEK[1] BODY.PEEK[TEXT]<2.5>)')),
    ('uid search', lambda c: c.uid('SEARCH', None, 'ALL')),
    ('search from', lambda c: c.search(None, 'FROM', 'alice')),
    ('list', lambda c: c.list()),
    ('status', lambda c: c.status('INBOX', '(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)')),
    ('store', lambda c: c.store('1', '+FLAGS', '(\\Flagged)')),
    ('fetch flags', lambda c: c.fetch('1:*', '(FLAGS)')),
    ('noop', lambda c: c.noop()),
]
# Two sessions on one mailbox: only the first to select sees \\Recent (RFC
# 3501 2.3.2), so it is no difference between the servers. Media types are
# compared as written (writ passes the provider's BODYSTRUCTURE on).
# Dovecot's status texts carry how long the command took ("(0.001 +
# 0.000 secs)", a third figure when it waited): not compared.
def normal(r):
    r = re.sub(r' \(\d+\.\d+( \+ \d+\.\d+)* secs\)', '', repr(r))
    return r.replace(' \\\\Recent', '').replace('\\\\Recent', '')
bad = 0
for name, step in steps:
    a = normal(step(direct))
    b = normal(step(proxied))
    if name == 'login':
        continue
    if a != b:
        bad += 1
        print('DIFFERENT', name)
        print('  dovecot:', a)
        print('  writ:   ', b)
    else:
        print('same', name, repr(b)[:200])
proxied.logout()
direct.logout()
sys.exit(1 if bad else 0)
"#;

#[test]
fn plaintext_mail_reads_the_same_through_writ_as_from_dovecot() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let user = user_with_mail(p, "same");
    let out = python::ok(
        COMPARE,
        proxy.script_args(Some(p.imap_addr()), proxy.imap, &[&user]),
    );
    assert!(out.contains("same fetch body"), "{out}");
}

const CAPABILITIES: &str = r#"
import imaplib, ssl, sys
dport, wport, ca, user, pw = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=ca)
direct = imaplib.IMAP4('127.0.0.1', int(dport))
direct.login(user, pw)
dcaps = set(direct.capability()[1][0].decode().upper().split())
assert 'SORT' in dcaps and 'THREAD=REFERENCES' in dcaps, dcaps
c = imaplib.IMAP4('127.0.0.1', int(wport))
pre = set(c.capabilities)
assert 'STARTTLS' in pre, pre
assert 'SORT' not in pre and 'BINARY' not in pre, pre
c.starttls(ssl_context=ctx)
assert 'STARTTLS' not in c.capabilities, c.capabilities
c.login(user, pw)
post = set(c.capability()[1][0].decode().upper().split())
for hidden in ['STATUS=SIZE', 'NOTIFY', 'SEARCH=FUZZY', 'PREVIEW', 'STARTTLS']:
    assert hidden not in post, (hidden, post)
kept = ['IMAP4REV1', 'IDLE', 'UIDPLUS', 'MOVE', 'NAMESPACE', 'SPECIAL-USE', 'UNSELECT', 'CONDSTORE', 'ENABLE', 'ID', 'LITERAL+', 'CHILDREN', 'SORT', 'ESORT', 'ESEARCH', 'THREAD=REFERENCES', 'THREAD=REFS', 'THREAD=ORDEREDSUBJECT', 'SORT=DISPLAY', 'BINARY', 'COMPRESS=DEFLATE', 'LIST-EXTENDED', 'LIST-STATUS', 'MULTIAPPEND', 'SEARCHRES']
dpost = set(direct.capability()[1][0].decode().upper().split())
assert len([k for k in kept if k in dpost]) >= 8, dpost
for k in kept:
    assert (k in post) == (k in dpost), (k, post, dpost)
print('ok', sorted(post))
"#;

#[test]
fn capabilities_hide_what_cannot_be_kept_correct_over_sealed_mail() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let user = p.new_user("caps");
    python::ok(
        CAPABILITIES,
        proxy.script_args(Some(p.imap_addr()), proxy.imap, &[&user]),
    );
}

const INJECTION: &str = r#"
import socket, ssl, sys
wport, ca, user, pw = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
s = socket.create_connection(('127.0.0.1', int(wport)))
def line(sock):
    b = b''
    while not b.endswith(b'\n'):
        c = sock.recv(1)
        if not c:
            raise SystemExit('connection closed after %r' % b)
        b += c
    return b
assert line(s).startswith(b'* OK'), 'greeting'
# The LOGIN rides in the same packet as STARTTLS, in the clear.
s.sendall(('a STARTTLS\r\nb LOGIN %s %s\r\n' % (user, pw)).encode())
ok = line(s)
assert ok.startswith(b'a OK'), ok
t = ctx.wrap_socket(s, server_hostname='127.0.0.1')
t.sendall(b'c SELECT INBOX\r\n')
seen = []
while True:
    l = line(t)
    seen.append(l)
    if l.startswith(b'c '):
        break
assert not any(l.startswith(b'b ') for l in seen), seen
# Not logged in: the injected LOGIN never ran.
assert seen[-1].startswith(b'c NO') or seen[-1].startswith(b'c BAD'), seen
t.sendall(('d LOGIN %s %s\r\n' % (user, pw)).encode())
l = line(t)
while not l.startswith(b'd '):
    l = line(t)
assert l.startswith(b'd OK'), l
print('ok')
"#;

#[test]
fn commands_pipelined_behind_starttls_are_discarded() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let user = p.new_user("inject");
    python::ok(INJECTION, proxy.script_args(None, proxy.imap, &[&user]));
}

const IMAPS_AUTH: &str = r#"
import imaplib, ssl, sys
wport, ca, user, pw = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
c = imaplib.IMAP4_SSL('127.0.0.1', int(wport), ssl_context=ctx)
try:
    c.login(user, 'not-the-password')
    raise SystemExit('a wrong password was accepted')
except imaplib.IMAP4.error as e:
    print('refused:', e)
c.authenticate('PLAIN', lambda _: ('\0%s\0%s' % (user, pw)).encode())
typ, data = c.select('INBOX')
assert typ == 'OK', (typ, data)
c.logout()
print('ok')
"#;

#[test]
fn implicit_tls_with_authenticate_plain_and_a_wrong_password_refused() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let user = p.new_user("imaps");
    let out = python::ok(IMAPS_AUTH, proxy.script_args(None, proxy.imaps, &[&user]));
    assert!(out.contains("refused:"), "{out}");
}

/// writ greets on its own and connects to the provider at the client's
/// first command: prints the line that follows that command.
const FIRST_LINE: &str = r#"
import socket, sys
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
f = s.makefile('rb')
assert f.readline().startswith(b'* OK '), 'greeting'
s.sendall(b'a CAPABILITY\r\n')
print(f.readline().decode().strip())
"#;

#[test]
fn an_unreachable_provider_is_a_bye_not_a_hang() {
    // Nothing listens on this port.
    let down = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let proxy = proxy(down);
    let out = python::ok(FIRST_LINE, [proxy.imap.port().to_string()]);
    assert!(out.starts_with("* BYE [UNAVAILABLE]"), "{out}");
}

const RAW_SESSION: &str = r#"
import socket, ssl, sys
wport, ca, user, pw = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
t = ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(wport))), server_hostname='127.0.0.1')
f = t.makefile('rb')
def until(tag):
    lines = []
    while True:
        l = f.readline()
        if not l:
            raise SystemExit('closed after %r' % lines)
        lines.append(l)
        if l.startswith(tag + b' '):
            return lines
f.readline()
def cmd(tag, text):
    t.sendall(tag + b' ' + text + b'\r\n')
    return until(tag)
assert cmd(b'l', ('LOGIN %s %s' % (user, pw)).encode())[-1].startswith(b'l OK')
assert cmd(b's', b'SELECT INBOX')[-1].startswith(b's OK')
# Malformed commands: BAD, and the session goes on.
assert cmd(b'x1', b'FETCH 1 (BODY[HEADER.FIELDS ()])')[-1].startswith(b'x1 BAD')
assert cmd(b'x2', b'NOSUCHCOMMAND')[-1].startswith(b'x2 BAD')
assert cmd(b'x3', b'FETCH')[-1].startswith(b'x3 BAD')
assert cmd(b'n', b'NOOP')[-1].startswith(b'n OK')
# IDLE: new mail shows up while idling.
t.sendall(b'i IDLE\r\n')
assert f.readline().startswith(b'+'), 'no continuation for IDLE'
print('IDLING', flush=True)
sys.stdin.readline()
while True:
    l = f.readline()
    if l.endswith(b'EXISTS\r\n'):
        break
t.sendall(b'DONE\r\n')
assert until(b'i')[-1].startswith(b'i OK')
assert cmd(b'z', b'LOGOUT')[-1].startswith(b'z OK')
print('ok')
"#;

#[test]
fn bad_commands_get_bad_and_idle_sees_new_mail() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let user = p.new_user("idle");
    let session = Paused::start(
        RAW_SESSION,
        proxy.script_args(None, proxy.imaps, &[&user]),
        "IDLING",
    );
    // Mail arrives while the client idles through writ.
    p.imap_append(
        &user,
        "INBOX",
        b"From: a@example.test\r\nSubject: new\r\n\r\nnew\r\n",
    );
    let (status, rest) = session.finish();
    assert!(status.success() && rest.contains("ok"), "{status}: {rest}");
}

/// The same messages sealed to the proxy's keyring, in a user of their own.
fn user_with_sealed_mail(p: &Provider, proxy: &ImapProxy, prefix: &str) -> User {
    let user = p.new_user(prefix);
    for m in MESSAGES {
        let sealed = proxy.seal(m);
        assert!(
            !sealed.windows(5).any(|w| w == b"Hello"),
            "the body leaked into the sealed copy"
        );
        p.imap_append(&user, "INBOX", &sealed);
    }
    user
}

const SEALED_ORACLE: &str = r#"
import imaplib, re, ssl, sys
dport, wport, ca, puser, ppw, suser, spw = sys.argv[1:8]
ctx = ssl.create_default_context(cafile=ca)
direct = imaplib.IMAP4('127.0.0.1', int(dport))
direct.login(puser, ppw)
proxied = imaplib.IMAP4('127.0.0.1', int(wport))
proxied.starttls(ssl_context=ctx)
proxied.login(suser, spw)
def normal(r):
    s = repr(r).replace(' \\\\Recent', '').replace('\\\\Recent', '')
    # Two users' copies were appended a moment apart: INTERNALDATE (the
    # provider's own, passed through) may differ by a second.
    return re.sub(r'INTERNALDATE "[^"]*"', 'INTERNALDATE X', s)
steps = [
    ('select', lambda c: c.select('INBOX')),
    ('listing', lambda c: c.fetch('1:*', '(UID FLAGS RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY)')),
    ('macros', lambda c: c.fetch('1:*', 'ALL')),
    ('headers', lambda c: c.fetch('1:*', '(BODY.PEEK[HEADER] BODY.PEEK[HEADER.FIELDS (Subject FROM x-none)] BODY.PEEK[HEADER.FIELDS.NOT (subject)] RFC822.HEADER)')),
    ('whole', lambda c: c.fetch('1:*', '(BODY.PEEK[])')),
    ('sections', lambda c: c.fetch('1:*', '(BODY.PEEK[TEXT] BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[2] BODY.PEEK[2.HEADER] BODY.PEEK[2.TEXT] BODY.PEEK[2.1] BODY.PEEK[3])')),
    ('partials', lambda c: c.fetch('1:*', '(BODY.PEEK[]<0.20> BODY.PEEK[TEXT]<5.7> BODY.PEEK[HEADER]<10.10> BODY.PEEK[]<100000.5>)')),
    ('uid fetch', lambda c: c.uid('FETCH', '2:3', '(RFC822.SIZE BODY.PEEK[2.1])')),
    ('rfc822', lambda c: c.fetch('3', '(RFC822)')),
    ('seen set by a body fetch', lambda c: c.fetch('1', '(BODY[TEXT])')),
    ('flags after', lambda c: c.fetch('1:*', '(FLAGS)')),
    ('rfc822.text', lambda c: c.fetch('2', '(RFC822.TEXT)')),
    ('flags at the end', lambda c: c.fetch('1:*', '(FLAGS)')),
]
bad = 0
for name, step in steps:
    a = normal(step(direct))
    b = normal(step(proxied))
    if a != b:
        bad += 1
        print('DIFFERENT', name)
        print('  dovecot:', a[:3000])
        print('  writ:   ', b[:3000])
    else:
        print('same', name, b[:150])
sys.exit(1 if bad else 0)
"#;

#[test]
fn sealed_mail_reads_through_writ_as_plaintext_reads_from_dovecot() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let plain = user_with_mail(p, "oracle-plain");
    let sealed = user_with_sealed_mail(p, &proxy, "oracle-sealed");
    // The provider holds ciphertext: no Subject, no body.
    for stored in p.imap_fetch_all(&sealed, "INBOX") {
        let text = String::from_utf8_lossy(&stored);
        assert!(text.contains("X-Writ: v=1"), "{text}");
        assert!(
            !text.contains("Hello Bob") && !text.contains("inner body"),
            "{text}"
        );
    }
    let out = python::ok(
        SEALED_ORACLE,
        proxy.script_args(Some(p.imap_addr()), proxy.imap, &[&plain, &sealed]),
    );
    assert!(out.contains("same flags at the end"), "{out}");
}

const APPEND: &str = r#"
import imaplib, ssl, sys, time
wport, ca, user, pw, max_literal = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=ca)
c = imaplib.IMAP4_SSL('127.0.0.1', int(wport), ssl_context=ctx)
c.login(user, pw)
m = b'From: me@example.test\r\nTo: you@example.test\r\nSubject: draft of the secret plan\r\n\r\nthe secret body\r\n'
typ, data = c.append('INBOX', '(\\Draft)', imaplib.Time2Internaldate(time.time()), m)
assert typ == 'OK' and b'APPENDUID' in data[0], (typ, data)
c.select('INBOX')
typ, data = c.fetch('1', '(FLAGS BODY.PEEK[])')
assert data[0][1] == m, data
assert b'\\Draft' in data[0][0], data
# Over the literal cap: refused, and the session goes on.
big = b'Subject: big\r\n\r\n' + b'x' * (int(max_literal) + 10)
try:
    c.append('INBOX', None, None, big)
    raise SystemExit('an oversized literal was accepted')
except imaplib.IMAP4.error as e:
    print('refused:', e)
assert c.noop()[0] == 'OK'
print('ok')
"#;

#[test]
fn append_through_writ_stores_sealed_and_reads_back_exact() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let user = p.new_user("append");
    let out = python::ok(
        APPEND,
        [
            proxy.script_args(None, proxy.imaps, &[&user]),
            vec![MAX_LITERAL.to_string()],
        ]
        .concat(),
    );
    assert!(out.contains("refused:"), "{out}");
    // What the provider holds is sealed: no Subject text, no body.
    let stored = p.imap_fetch_all(&user, "INBOX");
    assert_eq!(stored.len(), 1, "the oversized message was stored");
    let text = String::from_utf8_lossy(&stored[0]);
    assert!(text.contains("X-Writ: v=1"), "{text}");
    assert!(
        !text.contains("secret"),
        "plaintext reached the provider: {text}"
    );
    let opened = proxy.writ.test_keys().open(&stored[0]);
    assert!(opened.ends_with(b"the secret body\r\n"));
}

const APPEND_AND_CLOSE: &str = r#"
import socket, ssl, sys
wport, ca, user, pw = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
t = ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(wport))), server_hostname='127.0.0.1')
def line(s):
    b = b''
    while not b.endswith(b'\r\n'):
        c = s.recv(1)
        if not c:
            raise SystemExit('connection closed after %r' % b)
        b += c
    return b
assert line(t).startswith(b'* OK'), 'greeting'
t.sendall(('a LOGIN %s %s\r\n' % (user, pw)).encode())
l = line(t)
while not l.startswith(b'a '):
    l = line(t)
assert l.startswith(b'a OK'), l
m = b'From: alice@example.test\r\nSubject: last words\r\n\r\nsent, then gone\r\n'
t.sendall(b'b APPEND INBOX {%d+}\r\n' % len(m) + m + b'\r\n')
# Closes its side at once (TCP half-close), then still reads.
socket.socket.shutdown(t, socket.SHUT_WR)  # keeps TLS for reading
l = line(t)
while not l.startswith(b'b '):
    l = line(t)
assert l.startswith(b'b OK'), l
print('ok')
"#;

/// A client that sends an APPEND and closes its side at once (a script,
/// a phone losing its network) still gets its message stored: writ seals
/// it off the session, carries that out before it ends the connection,
/// and waits for the provider's answer, which a client that only
/// half-closed still reads.
#[test]
fn an_append_the_client_closed_after_is_still_stored() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let user = p.new_user("append-close");
    python::ok(
        APPEND_AND_CLOSE,
        proxy.script_args(None, proxy.imaps, &[&user]),
    );
    // The client had the provider's OK: it is stored.
    let stored = p.imap_fetch_all(&user, "INBOX");
    assert_eq!(stored.len(), 1, "the APPEND was lost");
    let opened = proxy.writ.test_keys().open(&stored[0]);
    assert!(opened.ends_with(b"sent, then gone\r\n"));
}

const FETCH_WHOLE: &str = r#"
import imaplib, ssl, sys
wport, ca, user, pw = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
c = imaplib.IMAP4_SSL('127.0.0.1', int(wport), ssl_context=ctx)
c.login(user, pw)
c.select('INBOX')
typ, data = c.fetch('1:*', '(RFC822.SIZE BODY.PEEK[])')
assert typ == 'OK', data
for item in data:
    if isinstance(item, tuple):
        sys.stdout.write(item[0].decode() + '\n')
        sys.stdout.buffer.write(item[1])
        sys.stdout.write('\n--end--\n')
"#;

#[test]
fn a_sealed_message_writ_cannot_open_is_shown_as_stored_and_counted() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let user = p.new_user("foreign");
    // Sealed to another organisation's keyring: writ has no key for it.
    let foreign = common::writ::TestKeys::new();
    let keyring = writ::keys::Keyring::load(&foreign.dir()).expect("keyring");
    let sealer =
        writ::keys::sealer(&keyring, &writ::config::SealConfig::default()).expect("sealer");
    let mut stored = Vec::new();
    sealer.seal(MESSAGES[0], &mut stored).expect("seal");
    p.imap_append(&user, "INBOX", &stored);
    p.imap_append(&user, "INBOX", MESSAGES[1]);
    let before = proxy
        .writ
        .metric("writ_open_failures_total", &[("reason", "unknown_epoch")]);
    let out = python::ok(FETCH_WHOLE, proxy.script_args(None, proxy.imaps, &[&user]));
    let stored_text = String::from_utf8_lossy(&stored).into_owned();
    assert!(
        out.contains(&format!("RFC822.SIZE {}", stored.len())),
        "the stored size is not shown: {out}"
    );
    assert!(
        out.contains(&stored_text),
        "the stored message is not shown as is"
    );
    assert!(
        out.contains("caf"),
        "the plaintext message is missing: {out}"
    );
    let after = proxy
        .writ
        .metric("writ_open_failures_total", &[("reason", "unknown_epoch")]);
    assert!(after >= before + 1.0, "not counted: {before} -> {after}");
}

const MAILBOX_COMMANDS: &str = r#"
import imaplib, re, ssl, sys
dport, wport, ca, duser, dpw, wuser, wpw = sys.argv[1:8]
ctx = ssl.create_default_context(cafile=ca)
direct = imaplib.IMAP4('127.0.0.1', int(dport))
direct.login(duser, dpw)
proxied = imaplib.IMAP4_SSL('127.0.0.1', int(wport), ssl_context=ctx)
proxied.login(wuser, wpw)
def normal(r):
    s = repr(r).replace(' \\\\Recent', '').replace('\\\\Recent', '')
    # Per-user values and server timings differ between the two users.
    s = re.sub(r'(COPYUID|APPENDUID|UIDVALIDITY) \d+', r'\1 N', s)
    s = re.sub(r' \(\d+\.\d+ \+ \d+\.\d+( \+ \d+\.\d+)? secs\)', '', s)
    return s.replace(duser, 'USER').replace(wuser, 'USER')
for name in ('ID', 'MOVE', 'UNSELECT', 'ENABLE'):
    imaplib.Commands.setdefault(name, ('AUTH', 'SELECTED'))
def cmd(c, name, *args):
    typ, data = c._simple_command(name, *args)
    return typ, data, c._untagged_response(typ, data, name)
steps = [
    ('create', lambda c: c.create('Work')),
    ('create nested', lambda c: c.create('Work/Sub')),
    ('list', lambda c: c.list()),
    ('subscribe', lambda c: c.subscribe('Work')),
    ('lsub', lambda c: c.lsub()),
    ('select', lambda c: c.select('INBOX')),
    ('copy', lambda c: c.copy('1:2', 'Work')),
    ('uid copy', lambda c: c.uid('COPY', '3', 'Work/Sub')),
    ('move', lambda c: cmd(c, 'MOVE', '3', 'Work')),
    ('store deleted', lambda c: c.store('1', '+FLAGS', '(\\Deleted)')),
    ('expunge', lambda c: c.expunge()),
    ('uid store', lambda c: c.uid('STORE', '2', '+FLAGS.SILENT', '(\\Deleted)')),
    ('uid expunge', lambda c: c.uid('EXPUNGE', '2')),
    ('search after', lambda c: c.uid('SEARCH', None, 'ALL')),
    ('rename', lambda c: c.rename('Work', 'Play')),
    ('status', lambda c: c.status('Play', '(MESSAGES RECENT UIDNEXT UNSEEN)')),
    ('examine', lambda c: c.select('Play', readonly=True)),
    ('fetch in examined', lambda c: c.fetch('1:*', '(FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])')),
    ('unselect', lambda c: cmd(c, 'UNSELECT')),
    ('select again', lambda c: c.select('Play')),
    ('check', lambda c: c.check()),
    ('close', lambda c: c.close()),
    ('namespace', lambda c: c.namespace()),
    ('id', lambda c: cmd(c, 'ID', 'NIL')),
    ('enable', lambda c: cmd(c, 'ENABLE', 'CONDSTORE')),
    ('unsubscribe', lambda c: c.unsubscribe('Work')),
    ('delete nested', lambda c: c.delete('Play/Sub')),
    ('delete', lambda c: c.delete('Play')),
    ('list at the end', lambda c: c.list()),
    ('noop', lambda c: c.noop()),
]
bad = 0
for name, step in steps:
    a = normal(step(direct))
    b = normal(step(proxied))
    if a != b:
        bad += 1
        print('DIFFERENT', name)
        print('  dovecot:', a[:2000])
        print('  writ:   ', b[:2000])
    else:
        print('same', name, b[:120])
sys.exit(1 if bad else 0)
"#;

#[test]
fn mailbox_commands_pass_through_as_dovecot_answers_them() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let direct = user_with_mail(p, "mbox-direct");
    let through = user_with_mail(p, "mbox-writ");
    let out = python::ok(
        MAILBOX_COMMANDS,
        proxy.script_args(Some(p.imap_addr()), proxy.imaps, &[&direct, &through]),
    );
    assert!(out.contains("same list at the end"), "{out}");
}

/// An mbsync (isync) configuration syncing INBOX of `user` at `server`
/// into a Maildir under `dir`; `tls`: implicit TLS verified with `ca`.
fn mbsync_rc(
    dir: &std::path::Path,
    server: SocketAddr,
    user: &User,
    tls: Option<&std::path::Path>,
) -> std::path::PathBuf {
    let maildir = dir.join("mail");
    std::fs::create_dir_all(&maildir).expect("mkdir");
    let security = match tls {
        // mbsync checks the certificate against the host name only.
        Some(ca) => format!(
            "Host localhost\nSSLType IMAPS\nCertificateFile {}\n",
            ca.display()
        ),
        None => "Host 127.0.0.1\nSSLType None\n".to_string(),
    };
    let rc = dir.join("mbsyncrc");
    std::fs::write(
        &rc,
        format!(
            "IMAPAccount acct\n{security}Port {port}\nUser {user}\nPass {pw}\n\n\
             IMAPStore far\nAccount acct\n\n\
             MaildirStore near\nPath {mail}/\nInbox {mail}/INBOX\nSubFolders Verbatim\n\n\
             Channel sync\nFar :far:\nNear :near:\nPatterns INBOX\nCreate Near\n\
             SyncState *\nSync All\n",
            port = server.port(),
            user = user.name,
            pw = user.password,
            mail = maildir.display(),
        ),
    )
    .expect("write mbsyncrc");
    rc
}

#[track_caller]
fn mbsync(rc: &std::path::Path) {
    let out = Command::new("mbsync")
        .arg("-c")
        .arg(rc)
        .arg("sync")
        .output()
        .expect("run mbsync");
    assert!(
        out.status.success(),
        "mbsync failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The messages of a Maildir folder, sorted, without mbsync's own X-TUID
/// field (its marker for messages it propagated).
fn maildir_messages(folder: &std::path::Path) -> Vec<String> {
    let mut all = Vec::new();
    for sub in ["cur", "new"] {
        for entry in std::fs::read_dir(folder.join(sub)).expect("maildir") {
            let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
            let text = String::from_utf8_lossy(&bytes).replace("\r\n", "\n");
            let kept: Vec<&str> = text
                .split_inclusive('\n')
                .filter(|l| !l.starts_with("X-TUID: "))
                .collect();
            all.push(kept.concat());
        }
    }
    all.sort();
    all
}

/// mbsync (isync) with writ as its IMAP server: a real desktop-style sync
/// client pulls sealed mail into a Maildir exactly as it pulls the same
/// mail in plaintext from Dovecot, and pushes a new message up sealed.
#[test]
fn mbsync_pulls_sealed_mail_as_plaintext_and_pushes_new_mail_sealed() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let plain = user_with_mail(p, "mbsync-plain");
    let user = user_with_sealed_mail(p, &proxy, "mbsync");
    let direct = tempfile::tempdir().expect("temp dir");
    mbsync(&mbsync_rc(direct.path(), p.imap_addr(), &plain, None));
    let dir = tempfile::tempdir().expect("temp dir");
    let rc = mbsync_rc(dir.path(), proxy.imaps, &user, Some(&proxy.tls.ca));
    mbsync(&rc);
    let expected = maildir_messages(&direct.path().join("mail/INBOX"));
    assert!(
        expected.len() >= 2,
        "mbsync pulled too little from Dovecot: {expected:?}"
    );
    assert_eq!(
        maildir_messages(&dir.path().join("mail/INBOX")),
        expected,
        "mbsync through writ got other messages than from Dovecot"
    );

    // A message written locally goes up through writ, sealed.
    let new = b"From: me@example.test\nTo: you@example.test\nSubject: from the laptop\n\nwritten offline, kept secret\n";
    std::fs::write(dir.path().join("mail/INBOX/new/1.laptop:2,"), new).expect("write");
    mbsync(&rc);
    let stored = p.imap_fetch_all(&user, "INBOX");
    assert_eq!(
        stored.len(),
        MESSAGES.len() + 1,
        "the new message was not pushed"
    );
    let last = stored.last().expect("stored");
    let text = String::from_utf8_lossy(last);
    assert!(text.contains("X-Writ: v=1"), "pushed in plaintext: {text}");
    assert!(
        !text.contains("secret"),
        "plaintext reached the provider: {text}"
    );
    let opened = String::from_utf8_lossy(&proxy.writ.test_keys().open(last)).replace("\r\n", "\n");
    assert!(
        opened.ends_with("written offline, kept secret\n"),
        "{opened}"
    );
}

const SEARCH_BODY: &str = r#"
import imaplib, ssl, sys
wport, ca, user, pw = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
c = imaplib.IMAP4_SSL('127.0.0.1', int(wport), ssl_context=ctx)
c.login(user, pw)
c.select('INBOX')
typ, data = c.search(None, 'BODY', 'hello')
assert typ == 'OK', data
print(data[0].decode())
"#;

/// Files under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_message_read_twice_comes_from_the_encrypted_cache() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let user = user_with_sealed_mail(p, &proxy, "cache");
    let args = proxy.script_args(None, proxy.imaps, &[&user]);
    let hits = || proxy.writ.metric("writ_imap_cache_hits_total", &[]);
    let first = python::ok(FETCH_WHOLE, &args);
    assert_eq!(hits(), 0.0, "a hit before anything was cached");
    let second = python::ok(FETCH_WHOLE, &args);
    assert_eq!(first, second, "the cache answered differently");
    assert_eq!(hits(), MESSAGES.len() as f64, "not answered from the cache");
    assert!(second.contains("Hello Bob."), "{second}");
    // A content search over the cached messages downloads no body.
    let found = python::ok(SEARCH_BODY, &args);
    assert_eq!(found.trim(), "1", "{found}");
    assert_eq!(
        hits(),
        2.0 * MESSAGES.len() as f64,
        "the search did not use the cache: {}",
        proxy.writ.log()
    );
    // On disk: nothing readable.
    let cache = proxy.writ.dir().join("cache");
    let files = files_under(&cache);
    assert!(files.len() > MESSAGES.len(), "no cache files: {files:?}");
    for f in files {
        let bytes = std::fs::read(&f).expect("read");
        for needle in ["Hello Bob", "inner body", user.name.as_str(), "INBOX"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} holds {needle:?}",
                f.display()
            );
        }
    }
}

const SEARCH_ORACLE: &str = r#"
import imaplib, ssl, sys
dport, wport, ca, puser, ppw, suser, spw = sys.argv[1:8]
ctx = ssl.create_default_context(cafile=ca)
direct = imaplib.IMAP4('127.0.0.1', int(dport))
direct.login(puser, ppw)
proxied = imaplib.IMAP4_SSL('127.0.0.1', int(wport), ssl_context=ctx)
proxied.login(suser, spw)
for c in (direct, proxied):
    c.select('INBOX')
    c.store('2', '+FLAGS', '(\\Flagged)')
def literal_search(c, uid, charset, key, value):
    c.literal = value.encode()
    if uid:
        return c.uid('SEARCH', 'CHARSET', charset, key)
    return c.search(charset, key)
searches = [
    ('subject', lambda c: c.search(None, 'SUBJECT', 'plain')),
    ('subject encoded word', lambda c: c.search(None, 'SUBJECT', 'menu')),
    ('body', lambda c: c.search(None, 'BODY', 'Hello')),
    ('body case', lambda c: c.search(None, 'BODY', 'hELLo')),
    ('text in an inner message', lambda c: c.search(None, 'TEXT', '"inner body"')),
    ('from', lambda c: c.search(None, 'FROM', 'alice')),
    ('to', lambda c: c.search(None, 'TO', 'carol')),
    ('header cc', lambda c: c.search(None, 'HEADER', 'Cc', 'Dee')),
    ('header present', lambda c: c.search(None, 'HEADER', 'Message-ID', '""')),
    ('larger', lambda c: c.search(None, 'LARGER', '100')),
    ('smaller', lambda c: c.search(None, 'SMALLER', '100')),
    ('not body', lambda c: c.search(None, 'NOT', 'BODY', 'Hello')),
    ('or', lambda c: c.search(None, 'OR', 'SUBJECT', 'plain', 'BODY', 'inner')),
    ('and with flags', lambda c: c.search(None, 'FLAGGED', 'TEXT', 'alice')),
    ('sequence set', lambda c: c.search(None, '2:*', 'TEXT', 'example')),
    ('sentsince', lambda c: c.search(None, 'SENTSINCE', '1-Jan-2026')),
    ('sentbefore', lambda c: c.search(None, 'SENTBEFORE', '1-Jan-2026')),
    ('uid search', lambda c: c.uid('SEARCH', None, 'BODY', 'inner')),
    ('uid set', lambda c: c.uid('SEARCH', None, 'UID', '2:*', 'SUBJECT', 'no')),
    ('utf-8 body', lambda c: literal_search(c, False, 'UTF-8', 'BODY', 'CAFÉ')),
    ('no content key', lambda c: c.search(None, 'FLAGGED')),
    ('younger', lambda c: c.search(None, 'YOUNGER', '3600')),
    ('younger and body', lambda c: c.search(None, 'YOUNGER', '3600', 'BODY', 'Hello')),
    ('older and body', lambda c: c.search(None, 'OLDER', '3600', 'BODY', 'Hello')),
    ('older or body', lambda c: c.search(None, 'OR', 'OLDER', '3600', 'BODY', 'Hello')),
    ('all', lambda c: c.search(None, 'ALL')),
]
bad = 0
for name, step in searches:
    a = step(direct)
    b = step(proxied)
    if a != b:
        bad += 1
        print('DIFFERENT', name, '\n  dovecot:', a, '\n  writ:   ', b)
    else:
        print('same', name, b)
for c in (direct, proxied):
    c.literal = 'x'.encode()
    typ, data = c.search('KOI8-X', 'BODY')
    if typ != 'NO' or b'BADCHARSET' not in data[0]:
        bad += 1
        print('an unknown charset was not refused:', typ, data)
    else:
        print('badcharset:', data)
sys.exit(1 if bad else 0)
"#;

#[test]
fn content_searches_over_sealed_mail_match_dovecots_over_the_plaintext() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let plain = user_with_mail(p, "search-plain");
    let sealed = user_with_sealed_mail(p, &proxy, "search-sealed");
    let out = python::ok(
        SEARCH_ORACLE,
        proxy.script_args(Some(p.imap_addr()), proxy.imaps, &[&plain, &sealed]),
    );
    // The provider alone would find nothing: the sealed copies hide it.
    assert!(out.contains("same body ('OK', [b'1'])"), "{out}");
    // WITHIN with a content key: writ compares INTERNALDATE itself.
    assert!(
        out.contains("same younger and body ('OK', [b'1'])"),
        "{out}"
    );
    assert!(out.contains("same older and body ('OK', [b''])"), "{out}");
    assert!(out.contains("badcharset:"), "{out}");
}

const READ_ONE: &str = r#"
import imaplib, ssl, sys
wport, ca, user, pw = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
c = imaplib.IMAP4_SSL('127.0.0.1', int(wport), ssl_context=ctx)
typ, data = c.login(user, pw)
c.select('INBOX')
typ, data = c.fetch('1', '(BODY.PEEK[])')
sys.stdout.buffer.write(data[0][1])
"#;

#[test]
fn the_provider_is_reached_over_implicit_tls_or_starttls_and_verified() {
    let p = provider();
    let ca = p.ca_file();
    for provider_imap in [
        format!(
            "address = \"{}\"\nsecurity = \"implicit\"\nca_file = {:?}\n",
            p.imaps_addr(),
            ca.display().to_string()
        ),
        format!(
            "address = \"{}\"\nsecurity = \"starttls\"\nca_file = {:?}\n",
            p.imap_addr(),
            ca.display().to_string()
        ),
    ] {
        let proxy = proxy_to(&provider_imap);
        let user = user_with_sealed_mail(p, &proxy, "upstream-tls");
        let out = python::ok(READ_ONE, proxy.script_args(None, proxy.imaps, &[&user]));
        assert_eq!(out.as_bytes(), MESSAGES[0], "through {provider_imap}");
    }
    // Without the provider's CA, its certificate is not trusted: no session.
    let proxy = proxy_to(&format!(
        "address = \"{}\"\nsecurity = \"implicit\"\n",
        p.imaps_addr()
    ));
    let out = python::ok(FIRST_LINE, [proxy.imap.port().to_string()]);
    assert!(out.starts_with("* BYE [UNAVAILABLE]"), "{out}");
}

const WAIT_FOR_BYE: &str = r#"
import socket, ssl, sys
wport, ca, user, pw = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=ca)
t = ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(wport))), server_hostname='127.0.0.1')
f = t.makefile('rb')
f.readline()
t.sendall(('l LOGIN %s %s\r\n' % (user, pw)).encode())
assert f.readline().startswith(b'l OK')
t.sendall(b's SELECT INBOX\r\n')
while not f.readline().startswith(b's OK'):
    pass
print('READY', flush=True)
sys.stdin.readline()
# The provider is gone: writ says BYE and closes, nothing hangs.
t.sendall(b'n NOOP\r\n')
rest = f.read()
print(rest.decode(errors='replace'))
"#;

#[test]
fn a_provider_that_goes_away_gives_the_client_bye() {
    let p = common::Provider::start();
    let proxy = proxy(p.imap_addr());
    let user = p.new_user("gone");
    let session = Paused::start(
        WAIT_FOR_BYE,
        proxy.script_args(None, proxy.imaps, &[&user]),
        "READY",
    );
    // Dropping the provider stops Dovecot and waits for it.
    drop(p);
    let (status, rest) = session.finish();
    assert!(status.success(), "{rest}");
    assert!(rest.contains("* BYE"), "no BYE: {rest}");
}
