# The oracle of tests/imap_capabilities.rs: each command of the list runs
# straight at Dovecot (over the plaintext copies) and through writ (over
# the sealed copies); the untagged responses and the status word must be
# the same, byte for byte. imaplib makes the connections (STARTTLS, LOGIN,
# SELECT) and carries the commands; imaplib's own API also reads one
# ESEARCH answer, as a client program would.
import imaplib, re, ssl, sys

dport, wport, ca, puser, ppw, suser, spw, cmds_file = sys.argv[1:9]
commands = [c for c in open(cmds_file, encoding='utf-8').read().split('\n') if c]


class Conn:
    def __init__(self, imap):
        self.c = imap
        self.n = 0

    def response(self):
        line = self.c.readline()
        if not line:
            raise SystemExit('connection closed')
        buf = line
        while True:
            m = re.search(rb'\{(\d+)\}\r\n$', line)
            if not m:
                return buf
            buf += self.c.read(int(m.group(1)))
            line = self.c.readline()
            buf += line

    def cmd(self, text):
        self.n += 1
        tag = b'Q%d' % self.n
        self.c.send(tag + b' ' + text.encode() + b'\r\n')
        untagged = []
        while True:
            r = self.response()
            if r.startswith(tag + b' '):
                return r.split(b' ')[1].decode(), untagged
            untagged.append(r)


direct = imaplib.IMAP4('127.0.0.1', int(dport))
direct.login(puser, ppw)
proxied = imaplib.IMAP4('127.0.0.1', int(wport))
proxied.starttls(ssl_context=ssl.create_default_context(cafile=ca))
proxied.login(suser, spw)
for c in (direct, proxied):
    typ, _ = c.select('INBOX')
    assert typ == 'OK', typ

# imaplib's API: an ESEARCH through writ, read as imaplib files it.
typ, data = proxied.uid('SEARCH', 'RETURN', '(COUNT)', 'ALL')
assert typ == 'OK', (typ, data)
typ, esearch = proxied.response('ESEARCH')
assert esearch and esearch[-1] and b'COUNT' in esearch[-1], esearch
print('imaplib ESEARCH:', esearch[-1])

# A second client of each mailbox (straight at Dovecot, through writ),
# for the lines that change the mailbox while the first ones stay
# selected: `OTHER <command>` runs a command on both, `OTHER-APPEND
# <message>` (CRLF written as \r\n) appends a message on both (writ
# seals it).
others = None


def other_conns():
    global others
    if others is None:
        d2 = imaplib.IMAP4('127.0.0.1', int(dport))
        d2.login(puser, ppw)
        p2 = imaplib.IMAP4('127.0.0.1', int(wport))
        p2.starttls(ssl_context=ssl.create_default_context(cafile=ca))
        p2.login(suser, spw)
        for c in (d2, p2):
            typ, _ = c.select('INBOX')
            assert typ == 'OK', typ
        others = (d2, Conn(d2), p2, Conn(p2))
    return others


d, p = Conn(direct), Conn(proxied)
bad = 0
for command in commands:
    if command.startswith('OTHER-APPEND '):
        message = command[len('OTHER-APPEND '):].replace('\\r\\n', '\r\n').encode()
        d2, _, p2, _ = other_conns()
        for c in (d2, p2):
            typ, data = c.append('INBOX', None, None, message)
            assert typ == 'OK', (typ, data)
        print('appended by another client')
        continue
    if command.startswith('OTHER '):
        _, d2, _, p2 = other_conns()
        ds, _ = d2.cmd(command[len('OTHER '):])
        ps, _ = p2.cmd(command[len('OTHER '):])
        assert ds == ps == 'OK', (command, ds, ps)
        print('another client:', command)
        continue
    ds, du = d.cmd(command)
    ps, pu = p.cmd(command)
    if (ds, du) != (ps, pu):
        bad += 1
        print('DIFFER', command)
        print('  dovecot', ds, b''.join(du)[:1500])
        print('  writ   ', ps, b''.join(pu)[:1500])
    else:
        print('same', command, ds, b''.join(du)[:200])
print('ALL SAME' if bad == 0 else '%d DIFFER' % bad)
