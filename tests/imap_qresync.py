# The sessions of tests/imap_qresync.rs, run twice: straight at Dovecot
# over the plaintext copies, and through writ over the same messages
# sealed. Each prints a transcript (responses in order, normalised only
# where the two users must differ: UIDVALIDITY, and the free text after a
# status's code) that the other must match line for line, except around an
# expunge another session makes during a FETCH: there the responses are
# followed as a client follows them and the resulting view compared.
#
# argv: scenario, dovecot port, writ port, then the plaintext user and
# password, then the sealed user and password.
import re, socket, sys, zlib

scenario, dport, wport, puser, ppw, suser, spw = sys.argv[1:8]

NEW = (b'From: Carol <carol@example.test>\r\nTo: Bob <bob@example.test>\r\n'
       b'Subject: arrived while idle\r\nDate: Sat, 05 Dec 2026 10:00:00 +0000\r\n'
       b'Message-ID: <idle.%d@example.test>\r\n\r\nA new message, number %d, '
       b'with the word zebracrossing in its body.\r\n')


class C:
    """A raw IMAP client (imaplib has neither COMPRESS nor IDLE)."""

    def __init__(self, port):
        self.s = socket.create_connection(('127.0.0.1', int(port)), timeout=30)
        self.buf, self.z, self.n = b'', None, 0
        self.greeting = self.line()

    def recv(self):
        d = self.s.recv(65536)
        if not d:
            raise EOFError('connection closed')
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
        """(untagged responses, tagged status after the tag)."""
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

    def ok(self, text, literal=None):
        u, r = self.cmd(text, literal)
        assert r.startswith(b'OK'), (text, r, u)
        return u

    def login(self, user, pw):
        self.ok('LOGIN %s %s' % (user, pw))
        return self

    def compress(self):
        u, r = self.cmd('COMPRESS DEFLATE')
        assert r.startswith(b'OK'), r
        self.z = (zlib.compressobj(wbits=-15), zlib.decompressobj(wbits=-15))
        rest, self.buf = self.buf, b''
        self.buf = self.z[1].decompress(rest)

    def caps(self):
        u = self.ok('CAPABILITY')
        return set(b' '.join(u).decode().upper().split())


def status(r):
    """OK/NO/BAD and the response code, not the free text."""
    w = r.rstrip(b'\r\n').split(b' ')
    if w[1:2] and w[1].startswith(b'['):
        code = r[r.index(b'['):r.index(b']') + 1]
        if code.startswith(b'[CAPABILITY '):
            # writ's list is the provider's filtered (tests of their own).
            code = b'[CAPABILITY]'
        return w[0] + b' ' + code
    return w[0]


def nv(line, uidvalidity):
    """The user's UIDVALIDITY (and the one after it, which the scenarios
    use as a wrong one) by name: the two users' differ."""
    if uidvalidity:
        line = line.replace(b'%d' % (uidvalidity + 1), b'<UIDVALIDITY+1>')
        line = line.replace(b'%d' % uidvalidity, b'<UIDVALIDITY>')
    return line


def norm(line, uidvalidity):
    """A response as the comparison sees it."""
    line = nv(line.rstrip(b'\r\n'), uidvalidity)
    if line.upper().startswith(b'* CAPABILITY '):
        return b'* CAPABILITY'
    if re.match(rb'\* (OK|NO|BAD|BYE|PREAUTH)\b', line):
        return b'* ' + status(line[2:])
    return line


def by_number(untagged):
    """Runs of FETCH responses in message order: writ answers plaintext
    messages as the provider's answers come and sealed ones after opening
    them, and no RFC orders the responses of one FETCH."""
    out, run = [], []
    number = lambda r: int(re.match(rb'\* (\d+) FETCH ', r).group(1))
    for u in untagged + [None]:
        if u is not None and re.match(rb'\* \d+ FETCH ', u):
            run.append(u)
            continue
        out.extend(sorted(run, key=number))
        run = []
        if u is not None:
            out.append(u)
    return out


class Side:
    """One run of a scenario: `a` and `b` connect here (for the sealed
    user: through writ, so that what `b` appends is sealed)."""

    def __init__(self, port, user, pw, writ):
        self.port, self.user, self.pw, self.writ = port, user, pw, writ
        self.out = []
        self.uidvalidity = None

    def conn(self):
        return C(self.port).login(self.user, self.pw)

    def note(self, who, text, untagged, tagged):
        self.out.append(nv(b'%s> %s' % (who.encode(), text.encode()), self.uidvalidity))
        for u in by_number(untagged):
            self.out.append(b'   ' + norm(u, self.uidvalidity))
        self.out.append(b'   = ' + nv(status(tagged), self.uidvalidity))

    def rec(self, c, who, text, literal=None):
        u, r = c.cmd(text, literal)
        for l in u:
            m = re.search(rb'\[UIDVALIDITY (\d+)\]', l)
            if m:
                self.uidvalidity = int(m.group(1))
        self.note(who, text, u, r)
        return u, r

    def settled(self, c, who, text):
        """A UID SEARCH, SORT or THREAD while another session expunges:
        Dovecot evaluates it on its view before the expunge is reported,
        writ over several commands of its own, during which the provider
        may report the flag change, so whether a message expunged
        meanwhile is in the answer (and whether the expunge is reported
        before the tagged status or at the next command) may differ. Both
        settle after a NOOP: the messages reported VANISHED by then, and
        the answer without them, must be the same.
        """
        u, r = c.cmd(text)
        u2, r2 = c.cmd('NOOP')
        assert r2.startswith(b'OK'), r2
        gone = set()
        for line in u + u2:
            m = re.match(rb'\* VANISHED ([0-9:,]+)', line)
            if m:
                for part in m.group(1).split(b','):
                    lo, _, hi = part.partition(b':')
                    gone |= set(range(int(lo), int(hi or lo) + 1))
        self.out.append(b'%s> %s (settled)' % (who.encode(), text.encode()))
        for line in u:
            m = re.match(rb'\* (SEARCH|SORT)((?: \d+)*)', line)
            if m:
                kept = [n for n in m.group(2).split() if int(n) not in gone]
                self.out.append(b'   * %s %s' % (m.group(1), b' '.join(kept)))
            elif line.startswith(b'* THREAD'):
                self.out.append(b'   ' + line.rstrip(b'\r\n'))
        self.out.append(b'   vanished %s' % str(sorted(gone)).encode())
        self.out.append(b'   = ' + r.split()[0])

    def follow(self, c, who, text, view):
        """A command during which another session's expunge may be
        reported: its FETCH responses are followed as a client follows
        them (each must name by its number the UID the client numbers so);
        the view (UID -> items) of what is still there is noted."""
        u, r = c.cmd(text)
        seen, vanished = {}, []
        for line in u:
            t = line.decode('utf-8', 'replace')
            m = re.match(r'\* VANISHED (\(EARLIER\) )?([0-9:,]+)', t)
            if m and not m.group(1):
                vanished.append(m.group(2))
                for part in m.group(2).split(','):
                    lo, _, hi = part.partition(':')
                    gone = set(range(int(lo), int(hi or lo) + 1))
                    view[:] = [x for x in view if x not in gone]
                continue
            m = re.match(r'\* (\d+) EXPUNGE', t)
            if m:
                del view[int(m.group(1)) - 1]
                continue
            m = re.match(r'\* (\d+) FETCH \(.*?UID (\d+)', t)
            if m:
                seq, uid = int(m.group(1)), int(m.group(2))
                assert seq <= len(view) and view[seq - 1] == uid, \
                    ('message %d answered with UID %d, which the client numbers %s' %
                     (seq, uid, view), t[:200])
                # A flag change another session made may come before or
                # after the answer (writ answers after its own commands).
                seen.setdefault(uid, []).append(
                    re.sub(rb'^\* \d+ FETCH ', b'* FETCH ', line.rstrip(b'\r\n')))
                continue
            self.out.append(b'   (other) ' + norm(line, self.uidvalidity))
        self.out.append(b'%s> %s (followed)' % (who.encode(), text.encode()))
        for uid in view:
            for line in sorted(seen.get(uid, [])):
                self.out.append(b'   ' + line)
        self.out.append(b'   vanished %s' % ','.join(sorted(vanished)).encode())
        self.out.append(b'   view %s' % str(view).encode())
        self.out.append(b'   = ' + status(r))

    def highest(self):
        for l in reversed(self.out):
            m = re.search(rb'HIGHESTMODSEQ (\d+)', l)
            if m:
                return int(m.group(1))
        raise AssertionError('no HIGHESTMODSEQ')


def idle_until(side, c, who, expect, act):
    """IDLE; `act()` runs (another session's changes); reads until every
    regex of `expect` has matched a response, then DONE. The responses
    are noted sorted (the provider may batch them in another order)."""
    c.n += 1
    tag = ('c%d' % c.n).encode()
    c.send(tag + b' IDLE\r\n')
    first = c.response()
    assert first.startswith(b'+'), first
    act()
    got, left = [], list(expect)
    while left:
        r = c.response()
        got.append(norm(r, side.uidvalidity))
        left = [e for e in left if not any(re.search(e, g) for g in got)]
    c.send(b'DONE\r\n')
    while True:
        r = c.response()
        if r.startswith(tag + b' '):
            break
        got.append(norm(r, side.uidvalidity))
    side.out.append(b'%s> IDLE' % who.encode())
    for g in sorted(got):
        side.out.append(b'   ' + g)
    side.out.append(b'   = ' + status(r[len(tag) + 1:]))


def deleted(c, uids):
    c.ok('UID STORE %s +FLAGS.SILENT (\\Deleted)' % uids)
    c.ok('UID EXPUNGE %s' % uids)


def qresync(side):
    a = side.conn()
    caps = a.caps()
    assert 'QRESYNC' in caps and 'CONDSTORE' in caps, caps
    side.rec(a, 'a', 'ENABLE QRESYNC')
    side.rec(a, 'a', 'SELECT INBOX')
    v, m0 = side.uidvalidity, side.highest()
    side.rec(a, 'a', 'UID FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE BODYSTRUCTURE)')
    side.rec(a, 'a', 'LOGOUT')
    # Offline: another client flags, expunges and appends.
    b = side.conn()
    side.rec(b, 'b', 'SELECT INBOX')
    side.rec(b, 'b', 'UID STORE 2 +FLAGS (\\Flagged)')
    side.rec(b, 'b', 'UID STORE 3,5 +FLAGS.SILENT (\\Deleted)')
    side.rec(b, 'b', 'UID EXPUNGE 3,5')
    side.rec(b, 'b', 'APPEND INBOX (\\Seen)', NEW % (1, 1))
    # The resync: QRESYNC SELECT, then the changes since.
    a = side.conn()
    side.rec(a, 'a', 'ENABLE QRESYNC')
    side.rec(a, 'a', 'SELECT INBOX (QRESYNC (%d %d 1:13))' % (v, m0))
    side.rec(a, 'a', 'UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)' % m0)
    side.rec(a, 'a', 'UID FETCH 1:* (UID FLAGS RFC822.SIZE ENVELOPE '
             'BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]) (CHANGEDSINCE %d VANISHED)' % m0)
    side.rec(a, 'a', 'FETCH 1:* (UID FLAGS BODYSTRUCTURE) (CHANGEDSINCE %d)' % m0)
    side.rec(a, 'a', 'EXAMINE INBOX (QRESYNC (%d %d 1:13 (1:4 1,2,4,6)))' % (v, m0))
    side.rec(a, 'a', 'SELECT INBOX (QRESYNC (%d 1))' % v)
    side.rec(a, 'a', 'SELECT INBOX (QRESYNC (%d %d))' % (v + 1, m0))
    side.rec(a, 'a', 'SELECT INBOX (QRESYNC (%d %d 1:20))' % (v, m0))
    # Another session expunges while `a` is selected: reported during
    # the UID FETCH writ answers with commands of its own.
    b.ok('UID STORE 6 +FLAGS (\\Answered)')
    deleted(b, '4,9')
    view = [1, 2, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    side.follow(a, 'a', 'UID FETCH 1:* (UID FLAGS BODY.PEEK[TEXT] ENVELOPE)', view)
    # And during IDLE: a new message, an expunge.
    idle_until(side, a, 'a', [rb'EXISTS', rb'VANISHED'],
               lambda: (b.ok('APPEND INBOX', NEW % (2, 2)), deleted(b, '7')))
    side.rec(a, 'a', 'UID FETCH 14:* (UID FLAGS ENVELOPE BODY.PEEK[TEXT])')
    # Expunges reported during a UID SEARCH, SORT and THREAD writ answers.
    deleted(b, '11')
    side.settled(a, 'a', 'UID SEARCH UNDELETED BODY the')
    deleted(b, '12')
    side.settled(a, 'a', 'UID SORT (SUBJECT SIZE) UTF-8 UNDELETED')
    b.ok('APPEND INBOX', NEW % (5, 5))
    side.rec(a, 'a', 'NOOP')
    deleted(b, '13')
    side.settled(a, 'a', 'UID THREAD REFERENCES UTF-8 BODY zebracrossing')
    # The client's own UID EXPUNGE.
    side.rec(a, 'a', 'UID STORE 8 +FLAGS.SILENT (\\Deleted)')
    side.rec(a, 'a', 'UID EXPUNGE 8')
    side.rec(a, 'a', 'UID SEARCH ALL')
    side.rec(a, 'a', 'LOGOUT')
    side.rec(b, 'b', 'LOGOUT')


def thunderbird(side):
    """What Thunderbird does: folder discovery (LIST with the special-use
    attributes), COMPRESS, ID, CONDSTORE with UID FETCH CHANGEDSINCE, then
    a QRESYNC resync after another client's changes, and IDLE."""
    a = C(side.port)
    caps = a.caps()
    u, r = a.cmd('LOGIN %s %s' % (side.user, side.pw))
    side.note('a', 'LOGIN', u, r)
    caps = a.caps()
    assert 'COMPRESS=DEFLATE' in caps and 'SPECIAL-USE' in caps, caps
    a.compress()
    side.rec(a, 'a', 'ID ("name" "Thunderbird" "version" "128.5.0")')
    side.rec(a, 'a', 'NAMESPACE')
    side.rec(a, 'a', 'LIST "" ""')
    side.rec(a, 'a', 'LIST "" "*"')
    side.rec(a, 'a', 'LSUB "" "*"')
    side.rec(a, 'a', 'ENABLE CONDSTORE')
    side.rec(a, 'a', 'SELECT INBOX (CONDSTORE)')
    v, m0 = side.uidvalidity, side.highest()
    side.rec(a, 'a', 'UID FETCH 1:* (FLAGS)')
    side.rec(a, 'a', 'UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS '
             '(From To Cc Bcc Subject Date Message-ID Priority X-Priority References '
             'Newsgroups In-Reply-To Content-Type Reply-To)])')
    side.rec(a, 'a', 'UID FETCH 4 (UID RFC822.SIZE BODY.PEEK[])')
    side.rec(a, 'a', 'STATUS Sent (UIDNEXT MESSAGES UNSEEN RECENT HIGHESTMODSEQ)')
    b = side.conn()
    side.rec(b, 'b', 'SELECT INBOX')
    b.ok('UID STORE 1,6 +FLAGS (\\Seen $Label1)')
    deleted(b, '2,10')
    # CONDSTORE resync of the open folder (NOOP brings the changes).
    side.rec(a, 'a', 'NOOP')
    side.rec(a, 'a', 'UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)' % m0)
    side.rec(a, 'a', 'LOGOUT')
    # Next start: QRESYNC resync.
    b.ok('UID STORE 11 +FLAGS (\\Flagged)')
    deleted(b, '12')
    a = side.conn()
    a.compress()
    side.rec(a, 'a', 'ENABLE QRESYNC')
    side.rec(a, 'a', 'SELECT INBOX (QRESYNC (%d %d 1:13))' % (v, m0))
    idle_until(side, a, 'a', [rb'EXISTS', rb'VANISHED'],
               lambda: (b.ok('APPEND INBOX', NEW % (3, 3)), deleted(b, '13')))
    side.rec(a, 'a', 'UID FETCH 14:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS '
             '(From Subject Date Message-ID)])')
    side.rec(a, 'a', 'UID FETCH 14 (UID RFC822.SIZE BODY.PEEK[])')
    side.rec(a, 'a', 'LOGOUT')
    side.rec(b, 'b', 'LOGOUT')


def apple(side):
    """Apple Mail's searches for what is not deleted."""
    a = side.conn()
    side.rec(a, 'a', 'SELECT INBOX')
    a.ok('UID STORE 3,7 +FLAGS.SILENT (\\Deleted)')
    for q in ['UID SEARCH 1:* NOT DELETED', 'UID SEARCH UNDELETED BODY the',
              'UID SEARCH UNDELETED BODY zebracrossing', 'UID SEARCH 1:* NOT DELETED BODY a',
              'UID SEARCH UNDELETED TEXT message', 'UID SEARCH 5:* UNDELETED SUBJECT e']:
        side.rec(a, 'a', q)
    a.ok('APPEND INBOX', NEW % (4, 4))
    side.rec(a, 'a', 'NOOP')
    side.rec(a, 'a', 'UID SEARCH UNDELETED BODY zebracrossing')
    side.rec(a, 'a', 'LOGOUT')


def hostile(side):
    """Malformed and huge QRESYNC parameters: each answered as Dovecot
    answers it (BAD for the malformed), and the session goes on."""
    a = side.conn()
    side.rec(a, 'a', 'SELECT INBOX (QRESYNC (1 1))')  # before ENABLE
    side.rec(a, 'a', 'ENABLE QRESYNC')
    side.rec(a, 'a', 'SELECT INBOX')
    v, m0 = side.uidvalidity, side.highest()
    for bad in ['UID FETCH 1:* (FLAGS) (VANISHED)',
                'FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)',
                'UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED VANISHED)']:
        side.rec(a, 'a', bad)
        side.rec(a, 'a', 'NOOP')
    # A zero UIDVALIDITY or MODSEQ is outside RFC 7162's grammar
    # (nz-number, a positive mod-sequence-value): writ's parser answers
    # BAD where Dovecot is lenient (OK). The one deliberate difference.
    for zero in ['UID FETCH 1:* (FLAGS) (CHANGEDSINCE 0 VANISHED)',
                 'SELECT INBOX (QRESYNC (0 1))', 'SELECT INBOX (QRESYNC (%d 0))' % v]:
        u, r = a.cmd(zero)
        assert r.split()[0] == (b'BAD' if side.writ else b'OK'), (zero, r)
    # Dovecot closes the selected mailbox before it reads a SELECT's
    # parameters (writ, answering BAD itself, does not): compared from
    # the authenticated state.
    side.rec(a, 'a', 'UNSELECT')
    for bad in ['SELECT INBOX (QRESYNC (%d))' % v, 'SELECT INBOX (QRESYNC)',
                'SELECT INBOX (QRESYNC (%d x))' % v,
                'SELECT INBOX (QRESYNC (%d %d 1:5 (1:2)))' % (v, m0),
                'SELECT INBOX (QRESYNC (%d %d 1:5 (1:2 3:4) extra))' % (v, m0),
                'EXAMINE INBOX (QRESYNC (%d %d 1:5 (1:2 3:4 5:6)))' % (v, m0),
                'SELECT INBOX (QRESYNC (%d 99999999999999999999999))' % v]:
        side.rec(a, 'a', bad)
        side.rec(a, 'a', 'NOOP')
    # Known UIDs as long as a command line may be (64 KiB), in ranges.
    parts, size, i = [], 0, 1
    while size < 60000:
        parts.append('%d:%d' % (i, i + 1))
        size += len(parts[-1]) + 1
        i += 3
    huge = ','.join(parts)
    side.rec(a, 'a', 'SELECT INBOX (QRESYNC (%d %d %s))' % (v, m0, huge))
    side.rec(a, 'a', 'UID FETCH 1:* (UID FLAGS) (CHANGEDSINCE %d VANISHED)' % m0)
    side.rec(a, 'a', 'LOGOUT')


def run(port, user, pw, writ):
    side = Side(port, user, pw, writ)
    {'qresync': qresync, 'thunderbird': thunderbird, 'apple': apple,
     'hostile': hostile}[scenario](side)
    return side.out


dovecot = run(dport, puser, ppw, False)
writ = run(wport, suser, spw, True)
same = True
for i in range(max(len(dovecot), len(writ))):
    d = dovecot[i] if i < len(dovecot) else b'<none>'
    w = writ[i] if i < len(writ) else b'<none>'
    mark = '  ' if d == w else '!!'
    if d != w:
        same = False
    at = 0
    if d != w:
        at = next((i for i in range(min(len(d), len(w))) if d[i] != w[i]), min(len(d), len(w)))
        at = max(0, at - 150)
    print(mark, 'dovecot:', ('...' if at else '') + d[at:at + 400].decode('utf-8', 'replace'))
    if d != w:
        print(mark, 'writ:   ', ('...' if at else '') + w[at:at + 400].decode('utf-8', 'replace'))
print('ALL SAME' if same else 'DIFFERENT')
