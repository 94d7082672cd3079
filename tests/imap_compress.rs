//! COMPRESS=DEFLATE (RFC 4978) on writ's side of the client connection,
//! against a real Dovecot that offers it too (scripts/provider loads
//! imap_zlib). The client is Python's zlib over a raw socket (imaplib has
//! no COMPRESS), and mbsync, which turns COMPRESS on when offered.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::imap_proxy::ImapProxy;
use common::python;
use common::{Provider, User, provider};

/// `imap.max_literal_size` of the test proxy: the bomb cap allows one
/// such command beyond 100 times the compressed input.
const MAX_LITERAL: usize = 200_000;

fn proxy(upstream: SocketAddr) -> ImapProxy {
    ImapProxy::start(
        &format!("{}timeout_secs = 10\n", ImapProxy::plain(upstream)),
        &format!("max_literal_size = {MAX_LITERAL}\n"),
    )
}

/// Single part, nested multipart with 8-bit text, and one larger than an
/// inflate step (64 KiB) so that responses span many compressed batches.
fn messages() -> Vec<Vec<u8>> {
    let mut big = b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: long\r\nDate: Fri, 27 Nov 2026 08:00:00 +0000\r\n\r\n".to_vec();
    for i in 0..3000 {
        big.extend_from_slice(format!("line {i} of a long report, hello again\r\n").as_bytes());
    }
    vec![
        b"From: Alice <alice@example.test>\r\nTo: Bob <bob@example.test>\r\nSubject: plain\r\nDate: Fri, 27 Nov 2026 08:00:00 +0000\r\nMessage-ID: <p1@example.test>\r\n\r\nHello Bob.\r\n".to_vec(),
        b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: =?utf-8?q?caf=C3=A9?= menu\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9 hello\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nFrom: x@example.test\r\nSubject: inner\r\n\r\ninner body\r\n--b1--\r\n".to_vec(),
        big,
    ]
}

/// A user with [`messages`] in plaintext, and one with them sealed.
fn users(p: &Provider, proxy: &ImapProxy, prefix: &str) -> (User, User) {
    let plain = p.new_user(&format!("{prefix}-plain"));
    let sealed = p.new_user(prefix);
    for m in messages() {
        p.imap_append(&plain, "INBOX", &m);
        p.imap_append(&sealed, "INBOX", &proxy.seal(&m));
    }
    (plain, sealed)
}

/// A raw IMAP client with COMPRESS (Python's zlib, raw DEFLATE).
const CLIENT: &str = r#"
import socket, ssl, re, zlib

class C:
    def __init__(self, port, ca=None):
        s = socket.create_connection(('127.0.0.1', int(port)), timeout=30)
        if ca:
            s = ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname='localhost')
        self.s, self.buf, self.z, self.n = s, b'', None, 0
        self.greeting = self.line()
    def recv(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError
        self.buf += self.z[1].decompress(d) if self.z else d
    def line(self):
        while b'\r\n' not in self.buf:
            self.recv()
        i = self.buf.index(b'\r\n') + 2
        l, self.buf = self.buf[:i], self.buf[i:]
        return l
    def response(self):
        out = self.line()
        while True:
            m = re.search(rb'\{(\d+)\}\r\n$', out)
            if not m:
                return out
            n = int(m.group(1))
            while len(self.buf) < n:
                self.recv()
            out, self.buf = out + self.buf[:n], self.buf[n:]
            out += self.line()
    def send(self, b):
        if self.z:
            b = self.z[0].compress(b) + self.z[0].flush(zlib.Z_SYNC_FLUSH)
        self.s.sendall(b)
    def cmd(self, text, literal=None):
        self.n += 1
        tag = ('c%d' % self.n).encode()
        if literal is None:
            self.send(tag + b' ' + text.encode() + b'\r\n')
        else:
            self.send(tag + b' ' + text.encode() + b' {%d+}\r\n' % len(literal) + literal + b'\r\n')
        untagged = []
        while True:
            r = self.response()
            if r.startswith(tag + b' '):
                return untagged, r[len(tag) + 1:]
            untagged.append(r)
    def caps(self):
        u, r = self.cmd('CAPABILITY')
        assert r.startswith(b'OK'), r
        return set(b''.join(u).decode().upper().split())
    def compress(self):
        u, r = self.cmd('COMPRESS DEFLATE')
        if r.startswith(b'OK'):
            self.z = (zlib.compressobj(wbits=-15), zlib.decompressobj(wbits=-15))
            rest, self.buf = self.buf, b''
            self.buf = self.z[1].decompress(rest)
        return r
"#;

const COMPARE: &str = r#"
import sys
dport, wport, wsport, ca, duser, dpw, wuser, wpw = sys.argv[1:9]

def kind(r):
    # OK/NO/BAD and the response code, not the text.
    w = r.split(b' ')
    return b' '.join(w[:2]) if w[1:2] and w[1].startswith(b'[') else w[0]

def session(port, ca, user, pw, compress, writ):
    c = C(port, ca)
    assert 'COMPRESS=DEFLATE' not in c.caps()
    if compress:
        assert kind(c.cmd('COMPRESS DEFLATE')[1]) == b'BAD', 'COMPRESS before login'
    u, r = c.cmd('LOGIN %s %s' % (user, pw))
    assert r.startswith(b'OK'), r
    assert 'COMPRESS=DEFLATE' in c.caps()
    out = []
    if compress:
        # RFC 4978: BAD for an unknown argument (Dovecot says NO).
        gzip = kind(c.cmd('COMPRESS GZIP')[1])
        assert gzip == b'BAD' or not writ, gzip
        r = c.compress()
        assert r.startswith(b'OK'), r
        if writ:
            assert 'COMPRESS=DEFLATE' not in c.caps(), 'offered while active'
        out.append(kind(c.cmd('COMPRESS DEFLATE')[1]))
    u, r = c.cmd('SELECT INBOX')
    assert r.startswith(b'OK'), r
    for command in ['UID FETCH 1:* (RFC822.SIZE ENVELOPE BODYSTRUCTURE BODY.PEEK[])',
                    'FETCH 2 (BODY.PEEK[1] BODY.PEEK[TEXT]<5.40>)',
                    'UID SEARCH BODY hello', 'UID SEARCH TEXT report']:
        u, r = c.cmd(command)
        out.append((command, u, kind(r)))
    u, r = c.cmd('LOGOUT')
    return out

dovecot = session(dport, None, duser, dpw, True, False)
plain = session(wport, None, wuser, wpw, False, True)
compressed = session(wport, None, wuser, wpw, True, True)
tls = session(wsport, ca, wuser, wpw, True, True)
assert dovecot[0] == b'NO [COMPRESSIONACTIVE]', dovecot[0]
assert compressed == dovecot, (compressed, dovecot)
assert tls == dovecot
assert compressed[1:] == plain, 'compression changed an answer'
assert len(compressed[1][1]) == 3 and len(compressed[1][1][2]) > 100000
print('ok', len(repr(compressed)))
"#;

/// Through writ with COMPRESS (loopback plaintext and TLS), sealed mail
/// reads exactly as the same plaintext mail from Dovecot with COMPRESS,
/// and as through writ without it; a second COMPRESS is
/// `NO [COMPRESSIONACTIVE]` at both, another algorithm BAD (RFC 4978; Dovecot
/// says NO), and COMPRESS before login is BAD.
#[test]
fn compressed_sessions_read_sealed_mail_as_dovecot_reads_plaintext() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let (plain, sealed) = users(p, &proxy, "deflate");
    let script = format!("{CLIENT}{COMPARE}");
    let out = python::ok(
        &script,
        [
            p.imap_addr().port().to_string(),
            proxy.imap.port().to_string(),
            proxy.imaps.port().to_string(),
            proxy.tls.ca.display().to_string(),
            plain.name.clone(),
            plain.password.clone(),
            sealed.name.clone(),
            sealed.password.clone(),
        ],
    );
    assert!(out.starts_with("ok "), "{out}");
}

const APPEND: &str = r#"
import sys
wport, user, pw = sys.argv[1:4]
c = C(wport)
assert c.cmd('LOGIN %s %s' % (user, pw))[1].startswith(b'OK')
assert c.compress().startswith(b'OK')
body = b''.join(b'appended line %d, hello\r\n' % i for i in range(5000))
msg = b'From: me@example.test\r\nSubject: sent compressed\r\n\r\n' + body
u, r = c.cmd('APPEND INBOX', msg)
assert r.startswith(b'OK'), r
u, r = c.cmd('SELECT INBOX')
u, r = c.cmd('FETCH 1 (BODY.PEEK[])')
assert r.startswith(b'OK'), r
assert u[0].endswith(b'{%d}\r\n' % len(msg) + msg + b')\r\n'), u[0][:200]
# IDLE under compression: the continuation and the answer to DONE each
# arrive without anything more being sent (sync flush per batch).
c.send(b'i IDLE\r\n')
assert c.line().startswith(b'+ '), 'IDLE continuation held back'
c.send(b'DONE\r\n')
l = c.line()
assert l.startswith(b'i OK'), l
print('ok')
"#;

/// An APPEND larger than an inflate step, sent compressed, reaches the
/// provider sealed and reads back whole; IDLE works compressed.
#[test]
fn a_compressed_append_is_sealed_and_reads_back() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let user = p.new_user("deflate-append");
    let script = format!("{CLIENT}{APPEND}");
    python::ok(
        &script,
        [
            proxy.imap.port().to_string(),
            user.name.clone(),
            user.password.clone(),
        ],
    );
    let stored = p.imap_fetch_all(&user, "INBOX");
    assert_eq!(stored.len(), 1);
    let text = String::from_utf8_lossy(&stored[0]);
    assert!(text.contains("X-Writ: v=1"), "stored in plaintext");
    assert!(
        !text.contains("appended line"),
        "plaintext reached the provider"
    );
}

const BOMB: &str = r#"
import sys, threading, zlib
wport, user, pw, expected = sys.argv[1:5]
other = C(wport)
assert other.cmd('LOGIN %s %s' % (user, pw))[1].startswith(b'OK')
assert other.compress().startswith(b'OK')
assert other.cmd('SELECT INBOX')[1].startswith(b'OK')

c = C(wport)
assert c.cmd('LOGIN %s %s' % (user, pw))[1].startswith(b'OK')
assert c.compress().startswith(b'OK')
# 1 GiB of one line, in about 1 MB: each MiB after a full flush compresses
# to the same bytes.
co = c.z[0]
block = b'A' * (1 << 20)
first = co.compress(b'x1 NOOP ' + block) + co.flush(zlib.Z_FULL_FLUSH)
again = co.compress(block) + co.flush(zlib.Z_FULL_FLUSH)
bomb = first + again * 1023
assert len(bomb) < 2 << 20, len(bomb)
def send():
    try:
        c.s.sendall(bomb)
    except OSError:
        pass
t = threading.Thread(target=send)
t.start()
lines = []
try:
    while True:
        lines.append(c.line())
except (EOFError, OSError):
    pass
t.join()
assert any(l.startswith(b'* BYE ') and b'expands too far' in l for l in lines), lines

# The other session is still served, and so is a new one.
u, r = other.cmd('UID FETCH 1 (BODY.PEEK[])')
assert r.startswith(b'OK') and u[0].endswith(expected.encode() + b')\r\n'), (u, r)
n = C(wport)
assert n.cmd('LOGIN %s %s' % (user, pw))[1].startswith(b'OK')
assert n.cmd('NOOP')[1].startswith(b'OK')
# A stream that is not DEFLATE at all: BYE, closed.
g = C(wport)
assert g.cmd('LOGIN %s %s' % (user, pw))[1].startswith(b'OK')
assert g.compress().startswith(b'OK')
g.s.sendall(b'\xff' * 64)
glines = []
try:
    while True:
        glines.append(g.line())
except (EOFError, OSError):
    pass
assert any(l.startswith(b'* BYE ') and b'Corrupt DEFLATE' in l for l in glines), glines
print('ok', len(bomb), lines)
"#;

/// A decompression bomb (about 1 MB inflating to 1 GiB) is cut off with
/// BYE once it expands past the cap; another compressed session and a new
/// one keep being served; a stream that is not DEFLATE is told BYE too.
#[test]
fn a_decompression_bomb_is_cut_off_and_others_are_served() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let user = p.new_user("deflate-bomb");
    let message = b"From: a@example.test\r\nSubject: kept\r\n\r\nstill here\r\n";
    p.imap_append(&user, "INBOX", &proxy.seal(message));
    let script = format!("{CLIENT}{BOMB}");
    let out = python::ok(
        &script,
        [
            proxy.imap.port().to_string(),
            user.name.clone(),
            user.password.clone(),
            "still here\r\n".to_string(),
        ],
    );
    assert!(out.starts_with("ok "), "{out}");
}

/// mbsync (isync) turns COMPRESS on when offered: through writ it does,
/// and pulls sealed mail as it pulls the plaintext from Dovecot.
#[test]
fn mbsync_syncs_compressed_through_writ() {
    let p = provider();
    let proxy = proxy(p.imap_addr());
    let (plain, sealed) = users(p, &proxy, "deflate-mbsync");
    let direct = tempfile::tempdir().expect("temp dir");
    mbsync(direct.path(), p.imap_addr(), &plain, None);
    let dir = tempfile::tempdir().expect("temp dir");
    let log = mbsync(dir.path(), proxy.imaps, &sealed, Some(&proxy.tls.ca));
    assert!(
        log.contains("COMPRESS DEFLATE") && log.contains("OK DEFLATE active"),
        "mbsync did not turn COMPRESS on through writ:\n{log}"
    );
    let expected = maildir_messages(&direct.path().join("mail/INBOX"));
    assert_eq!(expected.len(), messages().len());
    assert_eq!(maildir_messages(&dir.path().join("mail/INBOX")), expected);
}

/// Runs mbsync with its protocol dump on, syncing INBOX of `user` at
/// `server` into `dir`; returns the dump.
#[track_caller]
fn mbsync(
    dir: &std::path::Path,
    server: SocketAddr,
    user: &User,
    ca: Option<&std::path::Path>,
) -> String {
    let maildir = dir.join("mail");
    std::fs::create_dir_all(&maildir).expect("mkdir");
    let security = match ca {
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
             SyncState *\nSync Pull\n",
            port = server.port(),
            user = user.name,
            pw = user.password,
            mail = maildir.display(),
        ),
    )
    .expect("write mbsyncrc");
    let out = Command::new("mbsync")
        .arg("-Dn")
        .arg("-c")
        .arg(&rc)
        .arg("sync")
        .output()
        .expect("run mbsync");
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "mbsync failed: {log}");
    log
}

/// The messages of a Maildir folder, sorted, without mbsync's X-TUID.
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
