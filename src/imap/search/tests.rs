use std::num::NonZeroU32;

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_next::imap_types::command::CommandBody;
use proptest::prelude::*;

use super::*;

/// The criteria and charset of `SEARCH <args>`, parsed by imap-codec.
fn search(args: &str) -> Result<Search, SearchError> {
    let line = format!("A SEARCH {args}\r\n");
    let (_, cmd) = CommandCodec::default()
        .decode_static(line.as_bytes())
        .unwrap_or_else(|e| panic!("{args}: {e:?}"));
    let CommandBody::Search {
        charset, criteria, ..
    } = cmd.body
    else {
        panic!("not a SEARCH: {args}");
    };
    Search::new(criteria.as_ref(), charset.as_ref().map(|c| c.as_ref()))
}

fn candidate<'a>(m: &'a [u8], flags: &'a [Flag<'a>]) -> Candidate<'a> {
    Candidate {
        seq: NonZeroU32::new(3).unwrap(),
        uid: NonZeroU32::new(30).unwrap(),
        max_seq: 5,
        max_uid: 50,
        flags,
        recent: false,
        internal_date: None,
        size: u64::try_from(m.len()).unwrap(),
        modseq: Some(7),
        message: m,
        summary: None,
    }
}

fn hit(args: &str, m: &[u8]) -> bool {
    search(args).unwrap().matches(&candidate(m, &[]))
}

fn fold(s: &str) -> String {
    let mut out = String::new();
    text::fold_utf8(s.as_bytes(), &mut out);
    out
}

#[test]
fn folding_is_decomposed_titlecase() {
    assert_eq!(fold("café"), "CAFE\u{301}");
    assert_eq!(fold("ﬁle"), "fiLE");
    assert_eq!(fold("a\u{a0}b"), "A B");
    assert_eq!(fold("µ"), fold("μ"));
    assert_eq!(fold("ß"), "ß");
    assert_eq!(fold("…"), "...");
    assert_eq!(fold("한"), "\u{1112}\u{1161}\u{11ab}");
    let mut out = String::new();
    text::fold_utf8(b"a\xff\xfeb\xc3", &mut out);
    assert_eq!(out, "A\u{fffd}B\u{fffd}");
}

#[test]
fn strings_match_case_and_accent_insensitively() {
    let m = b"Subject: Caf\xc3\xa9 cr\xc3\xa8me\r\n\r\nNa\xc3\xafve text\r\n";
    assert!(hit("SUBJECT cafe", m));
    assert!(hit("SUBJECT CRE", m));
    assert!(hit("BODY NA", m));
    assert!(!hit("BODY naive", m), "the diaeresis sits between I and V");
    assert!(hit("TEXT \"subject: caf\"", m));
    assert!(!hit("BODY subject", m));
}

#[test]
fn encoded_words_are_decoded() {
    let mut out = String::new();
    mime::decode_header(
        b"=?utf-8?q?a?= =?utf-8?q?b?= x =?iso-8859-1?b?6Q==?=",
        &mut out,
    );
    assert_eq!(out, "AB X E\u{301}");
    out.clear();
    mime::decode_header(b"=?utf-8?q?broken =?x-unknown?q?abc?= tail", &mut out);
    assert_eq!(out, "=?UTF-8?Q?BROKEN abc TAIL");
    out.clear();
    mime::decode_header(b"  =?utf-8?q?lead?=", &mut out);
    assert_eq!(out, "LEAD");
}

#[test]
fn bodies_are_decoded_by_transfer_encoding_and_charset() {
    let qp = b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=E9t=E9 soft=\r\nbreak =ZZ\r\n";
    assert!(hit("BODY softbreak", qp));
    assert!(hit("BODY \"=zz\"", qp));
    assert!(!hit("BODY \"=E9\"", qp));
    let b64 = b"Content-Transfer-Encoding: base64\r\n\r\naGVsbG8gd29y\r\nbGQ=\r\nignored\r\n";
    assert!(hit("BODY \"hello world\"", b64));
    assert!(!hit("BODY ignored", b64));
    let unknown = b"Content-Transfer-Encoding: x-uuencode\r\n\r\nword\r\n";
    assert!(!hit("BODY word", unknown));
    assert!(hit("TEXT x-uuencode", unknown));
}

#[test]
fn only_text_parts_are_searched() {
    let m = b"Content-Type: multipart/mixed; boundary=b\r\n\r\npreamble\r\n--b\r\nContent-Type: image/png\r\n\r\npicture\r\n--b\r\n\r\nwords\r\n--b--\r\nepilogue\r\n";
    assert!(hit("BODY words", m));
    for word in ["preamble", "picture", "epilogue"] {
        assert!(!hit(&format!("BODY {word}"), m), "{word}");
        assert!(!hit(&format!("TEXT {word}"), m), "{word}");
    }
    assert!(hit("TEXT image/png", m));
}

#[test]
fn addresses_are_rewritten_as_dovecot_writes_them() {
    assert_eq!(address::normalize(b"a@b.c"), b"<a@b.c>");
    assert_eq!(
        address::normalize(b"John   Smith <j@x.y>"),
        b"\"John Smith\" <j@x.y>"
    );
    assert_eq!(address::normalize(b"joe"), b"<joe@MISSING_DOMAIN>");
    assert_eq!(
        address::normalize(b"j@x.y (Joe Bloggs)"),
        b"\"Joe Bloggs\" <j@x.y>"
    );
    assert_eq!(
        address::normalize(b"Team: a@b.c, d@e.f;"),
        b"Team: <a@b.c>, <d@e.f>;"
    );
    assert_eq!(
        address::normalize(b"undisclosed-recipients:;"),
        b"undisclosed-recipients:;"
    );
    assert_eq!(address::normalize(b""), b"");
}

#[test]
fn sent_dates_are_read_as_dovecot_reads_them() {
    let day = |v: &str| date::sent_day(Some(v.as_bytes()));
    let d = |y, m, dd| date::days_from_civil(y, m, dd);
    assert_eq!(day("Mon, 15 Jan 2024 23:30:00 -0800"), d(2024, 1, 15));
    assert_eq!(day("(c) 15 Jan 2024 00:30 +0100 (CET)"), d(2024, 1, 15));
    assert_eq!(day("1 Feb 99 10:00 EST"), d(1999, 2, 1));
    assert_eq!(day("3 January 2024 8.05.09 PST"), d(2024, 1, 3));
    assert_eq!(day("Sun, 31 Dec 2023 23:59:60 +0000"), d(2023, 12, 31));
    for bad in [
        "garbage",
        "31 Feb 2021 10:00 +0000",
        "28 Feb 2021 25:10 GMT",
        "Mon 1 Jan 2024 10:00",
    ] {
        assert_eq!(day(bad), 0, "{bad}");
    }
    assert_eq!(date::sent_day(None), 0);
    // Before 1970 wraps as Dovecot's unsigned 32-bit cache does.
    assert_eq!(day("1 Jan 1960 12:00 +0000"), d(2096, 2, 6));
}

#[test]
fn date_keys() {
    let m = b"Date: Mon, 15 Jan 2024 23:30:00 -0800\r\n\r\n";
    assert!(hit("SENTON 15-Jan-2024", m));
    assert!(hit("SENTBEFORE 16-Jan-2024", m));
    assert!(hit("SENTSINCE 15-Jan-2024", m));
    assert!(!hit("SENTSINCE 16-Jan-2024", m));
    assert!(hit("SENTON 1-Jan-1970", b"Subject: no date\r\n\r\n"));
}

#[test]
fn sequence_sets_follow_dovecot() {
    // seq 3 of 5, uid 30 of 50
    for (args, want) in [
        ("3", true),
        ("1:2", false),
        ("4:2", true),
        ("*", false),
        ("3:*", true),
        ("6:*", false),
        ("*:6", false),
        ("UID 30", true),
        ("UID 40:*", false),
        ("UID 1:*", true),
        ("UID 60:*", false),
        ("NOT 1,2,4:*", true),
    ] {
        assert_eq!(hit(args, b""), want, "{args}");
    }
    let last = Candidate {
        seq: NonZeroU32::new(5).unwrap(),
        uid: NonZeroU32::new(50).unwrap(),
        ..candidate(b"", &[])
    };
    for (args, want) in [
        ("*", true),
        ("6:*", false),
        ("*:*", true),
        ("UID 60:*", true),
    ] {
        assert_eq!(search(args).unwrap().matches(&last), want, "{args}");
    }
}

#[test]
fn flags_and_the_boolean_tree() {
    let flags = [
        Flag::Seen,
        Flag::Keyword(imap_next::imap_types::core::Atom::try_from("$Label1").unwrap()),
    ];
    let c = Candidate {
        recent: true,
        ..candidate(b"Subject: x\r\n\r\n", &flags)
    };
    for (args, want) in [
        ("SEEN", true),
        ("UNSEEN", false),
        ("NEW", false),
        ("RECENT", true),
        ("OLD", false),
        ("KEYWORD $label1", true),
        ("UNKEYWORD $Label1", false),
        ("KEYWORD other", false),
        ("OR FLAGGED SEEN", true),
        ("NOT (SEEN RECENT)", false),
        ("(SEEN) (OR DELETED (NOT DRAFT))", true),
        ("MODSEQ 7", true),
        ("MODSEQ 8", false),
        ("LARGER 13", true),
        ("SMALLER 14", false),
        ("HEADER Subject \"\"", true),
        ("HEADER X-None \"\"", false),
        ("BODY \"\"", true),
    ] {
        assert_eq!(search(args).unwrap().matches(&c), want, "{args}");
    }
}

#[test]
fn charsets() {
    assert!(charset_supported("utf-8"));
    assert!(charset_supported("ISO-8859-1"));
    assert!(!charset_supported("x-unknown"));
    assert_eq!(
        search("CHARSET x-unknown ALL").err(),
        Some(SearchError::BadCharset)
    );
    let m = b"Content-Type: text/plain; charset=utf-8\r\n\r\ncaf\xc3\xa9\r\n";
    let line = b"A SEARCH CHARSET ISO-8859-1 BODY {4+}\r\ncaf\xe9\r\n";
    let (_, cmd) = CommandCodec::default().decode_static(line).unwrap();
    let CommandBody::Search {
        charset, criteria, ..
    } = cmd.body
    else {
        panic!("not a SEARCH");
    };
    let s = Search::new(criteria.as_ref(), charset.as_ref().map(|c| c.as_ref())).unwrap();
    assert!(s.matches(&candidate(m, &[])));
}

/// `SEARCH <before>{n+}<bytes>` (a literal: any bytes, ESC included).
fn search_lit(before: &str, bytes: &[u8]) -> Result<Search, SearchError> {
    let mut line = format!("A SEARCH {before}{{{}+}}\r\n", bytes.len()).into_bytes();
    line.extend_from_slice(bytes);
    line.extend_from_slice(b"\r\n");
    let (_, cmd) = CommandCodec::default()
        .decode_static(&line)
        .unwrap_or_else(|e| panic!("{before}: {e:?}"));
    let CommandBody::Search {
        charset, criteria, ..
    } = cmd.body
    else {
        panic!("not a SEARCH: {before}");
    };
    Search::new(criteria.as_ref(), charset.as_ref().map(|c| c.as_ref()))
}

/// `bytes` decoded from the charset called `name`.
fn decoded(name: &str, bytes: &[u8]) -> String {
    let cs = text::Charset::named(name).unwrap_or_else(|| panic!("{name} unknown"));
    let mut out = String::new();
    cs.decode(bytes, &mut out);
    out
}

/// Known text in each multibyte charset: the charset, the bytes, the
/// text (checked with glibc's iconv).
const CJK: &[(&str, &[u8], &str)] = &[
    (
        "ISO-2022-JP",
        b"\x1b$B$3$s$K$A$O@$3&\x1b(B Hello",
        "こんにちは世界 Hello",
    ),
    ("Shift_JIS", b"\x93\xfa\x96\x7b\x8c\xea", "日本語"),
    (
        "Shift_JIS",
        b"\x82\xb1\x82\xf1\x82\xc9\x82\xbf\x82\xcd",
        "こんにちは",
    ),
    ("EUC-JP", b"\xc6\xfc\xcb\xdc\xb8\xec", "日本語"),
    ("GB2312", b"\xd6\xd0\xce\xc4", "中文"),
    ("EUC-CN", b"\xc4\xe3\xba\xc3", "你好"),
    ("GBK", b"\x81\x40", "丂"),
    ("GB18030", b"\xa8\xbc\xa2\xe3\x81\x30\x81\x30", "ḿ€\u{80}"),
    ("Big5", b"\xa4\xa4\xa4\xe5", "中文"),
    ("CP950", b"\xa7\x41\xa6\x6e", "你好"),
    ("EUC-KR", b"\xc7\xd1\xb1\xb9\xbe\xee", "한국어"),
    ("CP949", b"\x8c\x63", "똠"),
];

#[test]
fn cjk_charset_names_are_glibc_s() {
    for name in [
        "ISO-2022-JP",
        "iso-2022-jp",
        "csISO2022JP",
        "ISO2022JP",
        "ISO 2022 JP",
        "Shift_JIS",
        "shift-jis",
        "SJIS",
        "MS_Kanji",
        "csShiftJIS",
        "Windows-31J",
        "CP932",
        "EUC-JP",
        "eucJP",
        "ujis",
        "EUC-KR",
        "csEUCKR",
        "CP949",
        "UHC",
        "GB2312",
        "EUC-CN",
        "csGB2312",
        "CN-GB",
        "GBK",
        "CP936",
        "GB18030",
        "Big5",
        "BIG-5",
        "BIG-FIVE",
        "CN-BIG5",
        "CP950",
        "Big5-HKSCS",
        "Shift_JIS//TRANSLIT",
    ] {
        assert!(charset_supported(name), "{name}");
    }
    // WHATWG labels glibc does not know, and charsets writ does not read.
    for name in [
        "x-sjis",
        "shiftjis",
        "ks_c_5601-1987",
        "x-gbk",
        "iso_2022-jp",
        "ISO-2022-JP-2",
        "EUC-TW",
        "EUC-JP-MS",
    ] {
        assert!(!charset_supported(name), "{name}");
        assert_eq!(
            search(&format!("CHARSET {name} ALL")).err(),
            Some(SearchError::BadCharset),
            "{name}"
        );
    }
}

#[test]
fn cjk_known_vectors_decode() {
    for (cs, bytes, text) in CJK {
        assert_eq!(decoded(cs, bytes), *text, "{cs}");
        assert!(text::Charset::named(cs).unwrap().is_valid(bytes), "{cs}");
    }
}

#[test]
fn cjk_search_strings_find_utf8_text() {
    for (cs, bytes, text) in CJK {
        let m =
            format!("Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n[{text}]\r\n");
        let s = search_lit(&format!("CHARSET {cs} BODY "), bytes).unwrap();
        assert!(s.matches(&candidate(m.as_bytes(), &[])), "{cs}");
        let s = search_lit(&format!("CHARSET {cs} TEXT "), bytes).unwrap();
        assert!(s.matches(&candidate(m.as_bytes(), &[])), "{cs}");
        let other = b"Subject: x\r\n\r\nnothing here\r\n";
        assert!(!s.matches(&candidate(other, &[])), "{cs}");
    }
}

#[test]
fn cjk_messages_are_decoded_from_their_charset() {
    use base64::Engine as _;
    for (cs, bytes, text) in CJK {
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        let q: String = bytes.iter().map(|b| format!("={b:02X}")).collect();
        let mut m = format!(
            "Subject: =?{cs}?B?{b64}?=\r\nX-Q: =?{cs}?Q?{q}?=\r\nContent-Type: text/plain; charset=\"{cs}\"\r\n\r\n"
        )
        .into_bytes();
        m.extend_from_slice(bytes);
        m.extend_from_slice(b"\r\n");
        let utf8 = |key: &str| search_lit(&format!("CHARSET UTF-8 {key} "), text.as_bytes());
        for key in ["BODY", "TEXT", "SUBJECT", "HEADER X-Q"] {
            assert!(
                utf8(key).unwrap().matches(&candidate(&m, &[])),
                "{cs} {key}"
            );
        }
        // In the message's own charset too.
        let own = search_lit(&format!("CHARSET {cs} BODY "), bytes).unwrap();
        assert!(own.matches(&candidate(&m, &[])), "{cs}");
        let own = search_lit(&format!("CHARSET {cs} SUBJECT "), bytes).unwrap();
        assert!(own.matches(&candidate(&m, &[])), "{cs}");
        // The same bytes read as UTF-8 hold no such text.
        let plain = [&b"Content-Type: text/plain\r\n\r\n"[..], bytes].concat();
        assert!(
            !utf8("BODY").unwrap().matches(&candidate(&plain, &[])),
            "{cs}"
        );
    }
}

#[test]
fn cjk_decoding_puts_glibc_s_characters_back() {
    // glibc's SJIS reads 0x5C as YEN SIGN and 0x7E as OVERLINE; its CP932
    // as ASCII.
    assert_eq!(decoded("Shift_JIS", b"C:\\x~"), "C:¥x‾");
    assert_eq!(decoded("CP932", b"C:\\x~"), "C:\\x~");
    // 0x5C as the trail byte of a pair is part of the pair.
    assert_eq!(decoded("Shift_JIS", b"\x95\x5c"), "表");
    // The JIS wave dash and minus sign, GB2312's middle dot and dash.
    assert_eq!(decoded("EUC-JP", b"\xa1\xc1\xa1\xdd"), "\u{301c}\u{2212}");
    assert_eq!(decoded("ISO-2022-JP", b"\x1b$B!A\x1b(B"), "\u{301c}");
    assert_eq!(decoded("GB2312", b"\xa1\xa4\xa1\xaa"), "\u{30fb}\u{2015}");
    assert_eq!(decoded("GBK", b"\xa1\xa4\xa1\xaa"), "\u{b7}\u{2014}");
    let m = b"Content-Type: text/plain; charset=shift_jis\r\n\r\nC:\\dir\r\n";
    assert!(
        search_lit("BODY ", "C:¥dir".as_bytes())
            .unwrap()
            .matches(&candidate(m, &[]))
    );
    assert!(!hit("BODY \"C:\\\\dir\"", m));
    // As a search charset too: `\` in Shift_JIS is `¥`.
    let m = "Content-Type: text/plain; charset=utf-8\r\n\r\n¥100\r\n".as_bytes();
    assert!(
        search_lit("CHARSET SHIFT_JIS BODY ", b"\\100")
            .unwrap()
            .matches(&candidate(m, &[]))
    );
}

#[test]
fn malformed_cjk_text_is_replaced_as_dovecot_replaces_it() {
    let r = '\u{fffd}';
    for (cs, bytes, text) in [
        // A lead byte without its trail byte: one U+FFFD, then the next
        // byte read afresh.
        ("Shift_JIS", &b"a\x81\xff\xffb"[..], format!("a{r}b")),
        ("Shift_JIS", b"a\x81 b", format!("a{r} b")),
        ("EUC-KR", b"\xff\xfe\xc7\xd1", format!("{r}한")),
        ("EUC-JP", b"\xc6\x41\xb8\xec", format!("{r}A語")),
        ("GB2312", b"\xd6\xd0\xce \xa1 z", format!("中{r} {r} z")),
        ("Big5", b"\xff\xa4\xa4", format!("{r}中")),
        // ISO-2022-JP is 7-bit: 8-bit bytes are not text in it.
        ("ISO-2022-JP", b"\x1b$B\xc6\xfcF|\x1b(Bx", format!("{r}日x")),
        // A sequence cut off at the end is dropped.
        ("Shift_JIS", b"ab\x82", "ab".to_string()),
        ("GB2312", b"\xd6", String::new()),
        ("GB18030", b"\x81\x30\x81", String::new()),
        ("ISO-2022-JP", b"\x1b$BF|F", "日".to_string()),
    ] {
        assert_eq!(decoded(cs, bytes), text, "{cs} {bytes:x?}");
        assert!(!text::Charset::named(cs).unwrap().is_valid(bytes), "{cs}");
        let m = [
            format!("Content-Type: text/plain; charset={cs}\r\n\r\n").as_bytes(),
            bytes,
        ]
        .concat();
        let fffd = search_lit("BODY ", r.to_string().as_bytes()).unwrap();
        assert_eq!(fffd.matches(&candidate(&m, &[])), text.contains(r), "{cs}");
        // A string that is not text in its charset is refused (BAD).
        assert_eq!(
            search_lit(&format!("CHARSET {cs} BODY "), bytes).err(),
            Some(SearchError::InvalidString),
            "{cs}"
        );
        assert_eq!(
            search_lit(&format!("CHARSET {cs} HEADER X-A "), bytes).err(),
            Some(SearchError::InvalidString),
            "{cs}"
        );
    }
    // Bytes that glibc reads alone as C1 controls are text.
    assert_eq!(decoded("Big5", b"\x80\xa4\xa4"), "\u{80}中");
    assert_eq!(decoded("EUC-KR", b"\x81 \xc7\xd1"), "\u{81} 한");
    assert_eq!(decoded("EUC-JP", b"\x8d\xc6\xfc"), "\u{8d}日");
    assert!(search_lit("CHARSET Big5 BODY ", b"\x80").is_ok());
    // Encoded-words: each decoded on its own, a cut-off end dropped.
    let mut out = String::new();
    mime::decode_header(b"=?Shift_JIS?B?YmFkgQ==?= =?EUC-KR?Q?=C7=D1?=", &mut out);
    assert_eq!(out, format!("BAD{}", fold("한")));
}

#[test]
fn needs_content_tells_content_keys() {
    let key = |args: &str| {
        let line = format!("A SEARCH {args}\r\n");
        let (_, cmd) = CommandCodec::default()
            .decode_static(line.as_bytes())
            .unwrap();
        match cmd.body {
            CommandBody::Search { criteria, .. } => criteria.as_ref().iter().any(needs_content),
            _ => unreachable!(),
        }
    };
    for args in [
        "SEEN",
        "1:* UID 3",
        "NOT DELETED",
        "OR FLAGGED ON 1-Jan-2024",
    ] {
        assert!(!key(args), "{args}");
    }
    for args in [
        "BODY x",
        "NOT TEXT x",
        "OR SEEN SUBJECT x",
        "(FROM x)",
        "HEADER X-A b",
        "SENTON 1-Jan-2024",
        "LARGER 5",
        "SMALLER 5",
    ] {
        assert!(key(args), "{args}");
    }
}

#[test]
fn header_keys_need_only_the_header() {
    let m = b"Subject: Hello\r\nDate: Mon, 15 Jan 2024 10:00:00 +0000\r\n\r\nbody words\r\n";
    let header = &m[..m.len() - 12];
    for args in [
        "SUBJECT hello",
        "SENTON 15-Jan-2024",
        "NOT FROM x",
        "HEADER Date 2024",
    ] {
        let s = search(args).unwrap();
        let line = format!("A SEARCH {args}\r\n");
        let (_, cmd) = CommandCodec::default()
            .decode_static(line.as_bytes())
            .unwrap();
        let CommandBody::Search { criteria, .. } = cmd.body else {
            unreachable!()
        };
        assert!(!criteria.as_ref().iter().any(needs_body), "{args}");
        assert!(s.matches(&candidate(header, &[])), "{args}");
        assert!(s.matches(&candidate(m, &[])), "{args}");
    }
    assert!(needs_body(&SearchKey::Not(Box::new(SearchKey::Text(
        imap_next::imap_types::core::AString::try_from("x").unwrap()
    )))));
}

#[test]
fn a_given_summary_is_used() {
    let m = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\ninside\r\n--b--\r\n";
    let summary = scan(m, Limits::default());
    let c = Candidate {
        summary: Some(&summary),
        ..candidate(m, &[])
    };
    assert!(search("BODY inside").unwrap().matches(&c));
}

proptest! {
    #[test]
    fn malformed_messages_never_panic(
        m in proptest::collection::vec(prop_oneof![
            Just(b'\n'), Just(b'\r'), Just(b'='), Just(b'?'), Just(b':'), Just(b'-'),
            Just(b' '), Just(b'('), Just(b'"'), Just(b'<'), Just(b'@'), any::<u8>(),
        ], 0..400),
        prefix in prop_oneof![
            Just(&b""[..]),
            Just(&b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"[..]),
            Just(&b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"[..]),
            Just(&b"Content-Transfer-Encoding: base64\r\nContent-Type: text/plain; charset=windows-1252\r\n\r\n"[..]),
            Just(&b"From: =?utf-8?b?"[..]),
            Just(&b"Content-Type: text/plain; charset=ISO-2022-JP\r\n\r\n\x1b$B"[..]),
            Just(&b"Content-Type: text/plain; charset=Shift_JIS\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"[..]),
            Just(&b"Content-Type: text/plain; charset=GB18030\r\n\r\n\x81\x30"[..]),
            Just(&b"Subject: =?EUC-KR?Q?=C7"[..]),
            Just(&b"Date: Mon, 3"[..]),
        ],
    ) {
        let mut msg = prefix.to_vec();
        msg.extend_from_slice(&m);
        let s = search(
            "OR OR TEXT a BODY \"= ?\" OR FROM x OR TO \"<\" OR SUBJECT q OR HEADER Date 1 SENTON 1-Jan-2024",
        )
        .unwrap();
        let _ = s.matches(&candidate(&msg, &[]));
    }
}

#[test]
fn younger_and_older_compare_internaldate_to_the_second() {
    let parse = |args: &str, now: i64| {
        let line = format!("A SEARCH {args}\r\n");
        let (_, cmd) = CommandCodec::default()
            .decode_static(line.as_bytes())
            .unwrap();
        let CommandBody::Search { criteria, .. } = cmd.body else {
            panic!("not a SEARCH");
        };
        Search::at(criteria.as_ref(), None, now).unwrap()
    };
    // 2024-01-01 00:00:00 UTC, written in another zone.
    let (_, response) = imap_codec::ResponseCodec::default()
        .decode_static(b"* 1 FETCH (INTERNALDATE \"01-Jan-2024 01:00:00 +0100\")\r\n")
        .unwrap();
    let imap_next::imap_types::response::Response::Data(
        imap_next::imap_types::response::Data::Fetch { items, .. },
    ) = response
    else {
        panic!("not a FETCH");
    };
    let Some(imap_next::imap_types::fetch::MessageDataItem::InternalDate(date)) =
        items.as_ref().first().cloned()
    else {
        panic!("no INTERNALDATE");
    };
    let received = 1_704_067_200;
    let m = b"Subject: x\r\n\r\nbody\r\n";
    let with_date = Candidate {
        internal_date: Some(&date),
        ..candidate(m, &[])
    };
    let without = candidate(m, &[]);
    let now = received + 100;
    for (args, hit_with) in [
        ("YOUNGER 100", true),
        ("YOUNGER 99", false),
        ("OLDER 100", true),
        ("OLDER 101", false),
        ("OLDER 99", true),
        ("NOT YOUNGER 99", true),
        ("YOUNGER 100 BODY body", true),
        ("YOUNGER 100 BODY nothing", false),
    ] {
        assert_eq!(parse(args, now).matches(&with_date), hit_with, "{args}");
    }
    // No INTERNALDATE: neither holds.
    assert!(!parse("YOUNGER 100", now).matches(&without));
    assert!(!parse("OLDER 100", now).matches(&without));
}
