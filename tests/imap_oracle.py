# The oracle of tests/imap_oracle.rs: the same messages read through writ
# (sealed copies) and from Dovecot directly (plaintext copies) must give the
# same answers. imaplib makes the connections (STARTTLS, LOGIN, SELECT); the
# commands and their raw responses go over imaplib's send/readline/read so
# every byte of every response is compared, literals included.
import imaplib, re, ssl, sys, time

dport, wport, ca, puser, ppw, suser, spw, names_file = sys.argv[1:9]
names = open(names_file, encoding='utf-8').read().split('\n')[:-1]


class Lit:
    def __init__(self, data):
        self.data = data


class Conn:
    def __init__(self, imap):
        self.c = imap
        self.n = 0

    def response(self):
        """One response, literals inline."""
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

    def cmd(self, *chunks):
        """Sends a command (str chunks joined by spaces, Lit for a
        literal); returns (status word, untagged responses)."""
        self.n += 1
        tag = b'Q%d' % self.n
        untagged = []
        out = tag
        for ch in chunks:
            if isinstance(ch, Lit):
                self.c.send(out + b' {%d}\r\n' % len(ch.data))
                while True:
                    r = self.response()
                    if r.startswith(b'+'):
                        break
                    if r.startswith(tag + b' '):
                        return r.split(b' ')[1].decode(), untagged
                    untagged.append(r)
                out = ch.data
            else:
                out += b' ' + ch.encode()
        self.c.send(out + b'\r\n')
        while True:
            r = self.response()
            if r.startswith(tag + b' '):
                return r.split(b' ')[1].decode(), untagged
            untagged.append(r)


def parse(buf, i=0):
    """One value of an IMAP response at buf[i:]: list, bytes (string),
    None (NIL) or str (atom); returns (value, next index)."""
    while buf[i:i + 1] == b' ':
        i += 1
    c = buf[i:i + 1]
    if c == b'(':
        out = []
        i += 1
        while True:
            while buf[i:i + 1] == b' ':
                i += 1
            if buf[i:i + 1] == b')':
                return out, i + 1
            v, i = parse(buf, i)
            out.append(v)
    if c == b'"':
        i += 1
        s = bytearray()
        while buf[i:i + 1] != b'"':
            if buf[i:i + 1] == b'\\':
                i += 1
            s += buf[i:i + 1]
            i += 1
        return bytes(s), i + 1
    if c == b'{':
        j = buf.index(b'}', i)
        n = int(buf[i + 1:j].rstrip(b'+'))
        start = j + 3  # "}\r\n"
        return buf[start:start + n], start + n
    j = i
    while j < len(buf) and buf[j:j + 1] not in (b' ', b'(', b')', b'\r', b'\n'):
        if buf[j:j + 1] == b'[':
            j = buf.index(b']', j)
        j += 1
    atom = buf[i:j].decode('latin-1')
    if atom.upper() == 'NIL':
        return None, j
    return atom, j


def fetch_items(untagged):
    """{message number: {item name: [values]}} of the FETCH responses."""
    out = {}
    for r in untagged:
        m = re.match(rb'\* (\d+) FETCH ', r)
        if not m:
            continue
        v, _ = parse(r, m.end())
        d = out.setdefault(int(m.group(1)), {})
        for k in range(0, len(v) - 1, 2):
            d.setdefault(v[k], []).append(v[k + 1])
    return out


def normal(items):
    out = {}
    for k, vs in items.items():
        ku = k.upper()
        if ku == 'INTERNALDATE':
            # Two users' copies, appended at different moments; passed
            # through from the provider.
            continue
        if ku == 'FLAGS':
            # Only the first session to see a message gets \Recent (RFC
            # 3501 2.3.2): no difference between the servers.
            vs = [[f for f in v if f.lower() != '\\recent'] for v in vs]
        out[k] = vs
    return out


def short(v, n=700):
    s = repr(v)
    return s if len(s) <= n else s[:n] + '... (%d chars)' % len(s)


direct = imaplib.IMAP4('127.0.0.1', int(dport))
direct.login(puser, ppw)
proxied = imaplib.IMAP4('127.0.0.1', int(wport))
proxied.starttls(ssl_context=ssl.create_default_context(cafile=ca))
proxied.login(suser, spw)
for c in (direct, proxied):
    typ, data = c.select('INBOX')
    assert typ == 'OK' and int(data[0]) == len(names), (typ, data, len(names))
D, W = Conn(direct), Conn(proxied)

bad = 0
compared = 0


# Differences listed on purpose, each with the clause that decides it and a
# check that writ gives the value it should. Every other difference fails.
KNOWN = [
    # Empty: writ answers as Dovecot does for every message of the corpus
    # (issue 11 item 4). An entry names the file, the items, and a check of
    # writ's value, with the RFC clause that says Dovecot is wrong.
]


def known(name, item, writ):
    for file, items, check in KNOWN:
        if name.endswith(file) and item.upper() in items and check(writ):
            print('KNOWN', name, item)
            return True
    return False


def differ(what, dovecot, writ):
    global bad
    bad += 1
    print('DIFFERENT', what)
    print('  dovecot:', short(dovecot))
    print('  writ:   ', short(writ))


def fetch_both(seq, items, label):
    """FETCH seq (items) on both; every item of every message compared.
    Returns Dovecot's items by message number."""
    global compared
    text = '%s %s' % (seq, items if isinstance(items, str) else '(%s)' % ' '.join(items))
    sd, ud = D.cmd('FETCH', text)
    sw, uw = W.cmd('FETCH', text)
    fd, fw = fetch_items(ud), fetch_items(uw)
    if sd == 'OK' and not fd:
        raise SystemExit('%s: no FETCH response from Dovecot to %s' % (label, text))
    if sd != sw:
        differ('%s: FETCH %s: status' % (label, text), sd, sw)
    for n in sorted(set(fd) | set(fw)):
        a, b = normal(fd.get(n, {})), normal(fw.get(n, {}))
        name = names[n - 1] if 0 < n <= len(names) else str(n)
        for k in sorted(set(a) | set(b)):
            compared += 1
            if a.get(k) != b.get(k) and not known(name, k, b.get(k)):
                differ('%s %s: %s' % (name, label, k), a.get(k), b.get(k))
        if list(a) != list(b):
            differ('%s %s: item order' % (name, label), list(a), list(b))
    return fd


def is_multipart(b):
    return isinstance(b, list) and bool(b) and isinstance(b[0], list)


def is_message(b):
    return (isinstance(b, list) and len(b) > 8 and isinstance(b[0], bytes)
            and b[0].lower() == b'message' and isinstance(b[1], bytes)
            and b[1].lower() in (b'rfc822', b'global'))


def part_numbers(top):
    """(number, is message/rfc822) of every addressable part of Dovecot's
    BODYSTRUCTURE (RFC 3501 6.4.5), and numbers that do not exist: the
    next sibling of each, a child of a leaf."""
    found = []

    def entity(b, num):
        found.append((num, is_message(b)))
        if is_message(b):
            inner = b[8]
            if is_multipart(inner):
                children(inner, num)
            elif isinstance(inner, list):
                entity(inner, num + [1])
        elif is_multipart(b):
            children(b, num)

    def children(b, num):
        for k, c in enumerate(b):
            if not isinstance(c, list):
                break
            entity(c, num + [k + 1])

    if is_multipart(top):
        children(top, [])
    else:
        entity(top, [1])
    out = [('.'.join(map(str, n)), m) for n, m in found]
    have = set(n for n, _ in out)
    extra = []
    for n, _ in found:
        sib = n[:-1] + [n[-1] + 1]
        for x in (sib, n + [1]):
            s = '.'.join(map(str, x))
            if s not in have and s not in extra:
                extra.append(s)
    return out + [(s, False) for s in extra[:6]]


def field_names(header):
    """Field names of a header block usable as atoms, each once."""
    out = []
    for line in header.split(b'\n'):
        m = re.match(rb'([!-9;-~]+):', line)
        if not m or line[:1] in (b' ', b'\t'):
            continue
        n = m.group(1).decode('latin-1')
        if re.search(r'[(){}"\\%*\]]', n) or n.lower() in [x.lower() for x in out]:
            continue
        out.append(n)
    return out


def chunks(items, n=12):
    for k in range(0, len(items), n):
        yield items[k:k + n]


# Listing items, and the macros.
listing = fetch_both('1:*', ['UID', 'FLAGS', 'RFC822.SIZE', 'INTERNALDATE', 'ENVELOPE', 'BODY', 'BODYSTRUCTURE'], 'listing')
fetch_both('1:*', 'ALL', 'macro ALL')
fetch_both('1:*', 'FULL', 'macro FULL')
headers = fetch_both('1:*', ['BODY.PEEK[HEADER]'], 'header')
# writ's written items among typed ones, literals included, in the
# client's order (MODSEQ asked for before any flag changed, so both
# mailboxes number the same appends alike).
fetch_both('1:*', ['BODYSTRUCTURE', 'MODSEQ', 'UID', 'BODY.PEEK[]<0.40>', 'ENVELOPE',
                   'FLAGS', 'BODY', 'RFC822.SIZE'], 'mixed order')
# A real client's own parse: imaplib's FETCH of the listing items.
for items in ('(ENVELOPE BODYSTRUCTURE)', '(UID BODY ENVELOPE RFC822.SIZE)'):
    a_, b_ = direct.fetch('1:*', items), proxied.fetch('1:*', items)
    compared += 1
    if a_ != b_:
        differ('imaplib fetch 1:* ' + items, a_, b_)

sizes = []
started = time.time()
for n in range(1, len(names) + 1):
    t0 = time.time()
    label = 'message'
    size = int(listing[n]['RFC822.SIZE'][0])
    sizes.append(size)
    structure = listing[n]['BODYSTRUCTURE'][0]
    fields = field_names(headers[n]['BODY[HEADER]'][0] or b'')
    swapped = [f.swapcase() for f in fields]
    items = ['RFC822.HEADER', 'BODY.PEEK[TEXT]', 'BODY.PEEK[]',
             'BODY.PEEK[HEADER.FIELDS (X-Absent-Field)]',
             'BODY.PEEK[HEADER.FIELDS (subject FROM To cC dAtE Message-ID content-TYPE X-Absent)]',
             'BODY.PEEK[HEADER.FIELDS.NOT (X-Absent-Field)]',
             'BODY.PEEK[HEADER.FIELDS.NOT (Subject from RECEIVED)]',
             'BODY.PEEK[]<0.10>', 'BODY.PEEK[]<7.100>', 'BODY.PEEK[]<%d.10>' % (size + 5),
             'BODY.PEEK[]<%d.10>' % max(size - 3, 0), 'BODY.PEEK[]<%d.1>' % size,
             'BODY.PEEK[TEXT]<3.50>', 'BODY.PEEK[HEADER]<10.10>']
    if swapped:
        items.append('BODY.PEEK[HEADER.FIELDS (%s X-Absent-Field)]' % ' '.join(swapped))
        items.append('BODY.PEEK[HEADER.FIELDS.NOT (%s)]' % ' '.join(swapped[:2]))
        items.append('BODY.PEEK[HEADER.FIELDS (%s)]' % swapped[-1])
    for group in chunks(items):
        got = fetch_both(str(n), group, 'whole')
        if 'BODY.PEEK[]' in group:
            # The parser's own check: the whole message is RFC822.SIZE long.
            assert len(got[n]['BODY[]'][0]) == size, (names[n - 1], size)
    parts = []
    for num, message in part_numbers(structure):
        parts += ['BODY.PEEK[%s]' % num, 'BODY.PEEK[%s.MIME]' % num,
                  'BODY.PEEK[%s]<0.10>' % num, 'BODY.PEEK[%s]<7.100>' % num]
        if message:
            parts += ['BODY.PEEK[%s.HEADER]' % num, 'BODY.PEEK[%s.TEXT]' % num,
                      'BODY.PEEK[%s.HEADER.FIELDS (SUBJECT from X-Absent)]' % num,
                      'BODY.PEEK[%s.HEADER.FIELDS.NOT (Subject)]' % num,
                      'BODY.PEEK[%s.TEXT]<2.20>' % num, 'BODY.PEEK[%s.HEADER]<5.1000>' % num]
    for group in chunks(parts):
        fetch_both(str(n), group, 'parts')
    fetch_both('%d' % n, ['UID', 'BODY.PEEK[1]', 'RFC822.SIZE'], 'single')
    W.cmd('NOOP')
    D.cmd('NOOP')
    print('%.2fs %s: %d parts' % (time.time() - t0, names[n - 1], len(parts)))
print('%.1fs for the FETCH comparisons' % (time.time() - started))
started = time.time()

# UID FETCH over a range.
for text in ('2:5 (RFC822.SIZE BODY.PEEK[1] BODY.PEEK[HEADER.FIELDS (SUBJECT)])',
             '2:5 (BODYSTRUCTURE FLAGS UID ENVELOPE RFC822.SIZE UID FLAGS)'):
    sd, ud = D.cmd('UID FETCH', text)
    sw, uw = W.cmd('UID FETCH', text)
    a_, b_ = [{n: normal(v) for n, v in fetch_items(u).items()} for u in (ud, uw)]
    compared += 1
    # Items in order (dicts keep it).
    a_, b_ = [{n: list(v.items()) for n, v in x.items()} for x in (a_, b_)]
    if (sd, a_) != (sw, b_):
        differ('UID FETCH ' + text, (sd, a_), (sw, b_))

# Fetches that set \Seen (RFC 3501 6.4.5: BODY[...] and RFC822, RFC822.TEXT;
# the server then sends the new FLAGS), then the flags of every message.
for n in range(1, len(names) + 1):
    item = ['BODY[TEXT]', 'RFC822', 'RFC822.TEXT', 'RFC822.HEADER', 'BODY[1]'][n % 5]
    fetch_both(str(n), [item], 'fetch that sets \\Seen')
fetch_both('1:*', ['FLAGS'], 'flags after')
fetch_both('1:*', ['RFC822', 'RFC822.TEXT', 'FLAGS'], 'rfc822 of every message')

# SEARCH: content keys writ evaluates over the opened messages.
srt = sorted(sizes)
median = srt[len(srt) // 2]
searches = [
    ['BODY', 'the'], ['BODY', 'The'], ['BODY', 'invited'], ['BODY', 'VCALENDAR'],
    ['BODY', '"METHOD:REQUEST"'], ['BODY', '"soft line break"'], ['BODY', '"1 + 1 = 2"'],
    ['BODY', 'haystackneedle'], ['BODY', '"Zeile 1999"'], ['BODY', 'boundary'],
    ['BODY', '"Content-Type"'], ['BODY', 'pgp'], ['BODY', 'csv'], ['BODY', '""'],
    ['TEXT', 'example.test'], ['TEXT', '"project plan"'], ['TEXT', 'Subject'],
    ['TEXT', 'attachment'], ['TEXT', 'Notification'],
    ['SUBJECT', 'invoice'], ['SUBJECT', 're'], ['SUBJECT', 'fwd'], ['SUBJECT', '""'],
    ['SUBJECT', 'large'], ['SUBJECT', 'invitation'],
    ['FROM', 'alice'], ['FROM', 'example.test'], ['FROM', 'mailer-daemon'], ['FROM', 'Weekly'],
    ['TO', 'bob'], ['TO', 'team'], ['CC', 'nunez'], ['BCC', 'x'],
    ['HEADER', 'Content-Type', 'multipart'], ['HEADER', 'Content-Type', 'text/plain'],
    ['HEADER', 'X-Absent-Field', '""'], ['HEADER', 'Message-ID', '""'],
    ['HEADER', 'MIME-Version', '1.0'], ['HEADER', 'Received', 'by'],
    ['HEADER', 'List-Unsubscribe', 'mailto'],
    ['LARGER', str(median)], ['SMALLER', str(median)], ['LARGER', str(srt[0])],
    ['SMALLER', str(srt[-1])], ['LARGER', '1000000'], ['SMALLER', str(srt[1] + 1)],
    ['NOT', 'BODY', 'the'], ['NOT', 'SUBJECT', 're'],
    ['OR', 'SUBJECT', 'invoice', 'BODY', 'VCALENDAR'],
    ['NOT', 'OR', 'FROM', 'alice', 'TO', 'bob'],
    ['OR', 'LARGER', str(median), 'TEXT', 'example'],
    ['10:30', 'BODY', 'a'], ['1,3,5:9', 'TEXT', 'e'],
    ['SEEN', 'BODY', 'the'], ['ALL'],
]
for s in sizes[:8]:
    searches.append(['LARGER', str(s)])
    searches.append(['SMALLER', str(s)])
uid_searches = [['BODY', 'the'], ['UID', '5:*', 'TEXT', 'example'], ['SUBJECT', 'fwd'],
                ['OR', 'BODY', 'invited', 'HEADER', 'Content-Type', 'calendar']]
charset_searches = [['BODY', 'Zürich'], ['SUBJECT', 'café'], ['TEXT', '会議'],
                    ['FROM', 'Jürgen'], ['BODY', 'Grüße'], ['SUBJECT', 'résumé'],
                    ['BODY', 'Chère'], ['TEXT', 'ЗДРАВСТВУЙТЕ'], ['SUBJECT', '予定'],
                    ['BODY', '😀 emoji'], ['TO', 'Björk'], ['HEADER', 'Keywords', 'réunion']]


def search_result(untagged):
    out = []
    for r in untagged:
        if r.upper().startswith(b'* SEARCH'):
            out += [int(x) for x in r[8:].split()]
    return sorted(out)


def search_both(label, *chunks_):
    global compared
    t0 = time.time()
    sd, ud = D.cmd(*chunks_)
    t1 = time.time()
    sw, uw = W.cmd(*chunks_)
    t2 = time.time()
    label += ' (dovecot %.2fs, writ %.2fs)' % (t1 - t0, t2 - t1)
    a, b = (sd, search_result(ud)), (sw, search_result(uw))
    compared += 1
    if a != b:
        differ('search %s' % label, a, b)
    else:
        print('same search', label, a)


for s in searches:
    search_both(' '.join(s), 'SEARCH', *s)
for s in uid_searches:
    search_both('UID ' + ' '.join(s), 'UID', 'SEARCH', *s)
for s in charset_searches:
    search_both('CHARSET UTF-8 ' + ' '.join(s), 'SEARCH', 'CHARSET', 'UTF-8', *s[:-1],
                Lit(s[-1].encode('utf-8')))
    search_both('UID CHARSET UTF-8 ' + ' '.join(s), 'UID', 'SEARCH', 'CHARSET', 'UTF-8',
                *s[:-1], Lit(s[-1].encode('utf-8')))

print('%.1fs for the rest' % (time.time() - started))
print('compared', compared, 'items over', len(names), 'messages;', bad, 'differences')
if bad == 0:
    print('ALL SAME')
sys.exit(1 if bad else 0)
