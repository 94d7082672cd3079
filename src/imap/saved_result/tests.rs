use super::*;

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_codec::encode::Encoder;
use imap_next::imap_types::IntoStatic;

fn marked(lines: &[&str]) -> (Vec<String>, usize) {
    let mut m = Marker::default();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let mut line = l.as_bytes().to_vec();
        if i == 0 {
            m.first_line(&mut line).unwrap();
        } else {
            m.next_line(&mut line).unwrap();
        }
        out.push(String::from_utf8(line).unwrap());
    }
    let n = m.marks;
    m.end();
    (out, n)
}

#[test]
fn a_dollar_is_marked_only_where_a_set_may_stand() {
    let (l, n) = marked(&["a UID SEARCH $ SUBJECT $ OR ($) \"x $\" KEYWORD $x (UID $)\r\n"]);
    assert_eq!(
        l[0],
        "a UID SEARCH 4294967295:4294967295 SUBJECT 4294967295:4294967295 OR (4294967295:4294967295) \"x $\" KEYWORD $x (UID 4294967295:4294967295)\r\n"
    );
    assert_eq!(n, 4);
    // A criteria line after a literal is marked too; a string's `$` in a
    // quoted string never.
    let (l, n) = marked(&["b SEARCH BODY {3}\r\n", " $ HEADER \"$\" \"\\\" $\"\r\n"]);
    assert_eq!(l[1], " 4294967295:4294967295 HEADER \"$\" \"\\\" $\"\r\n");
    assert_eq!(n, 1);
    let (l, n) = marked(&["c FETCH $ (FLAGS)\r\n"]);
    assert_eq!(
        (l[0].as_str(), n),
        ("c FETCH 4294967295:4294967295 (FLAGS)\r\n", 1)
    );
    let (l, n) = marked(&["c uid store $ +FLAGS ($)\r\n"]);
    assert_eq!(
        (l[0].as_str(), n),
        ("c uid store 4294967295:4294967295 +FLAGS ($)\r\n", 1)
    );
    let (_, n) = marked(&["d UID EXPUNGE $\r\n"]);
    assert_eq!(n, 1);
    for untouched in [
        "d EXPUNGE $\r\n",
        "$ SEARCH ALL\r\n",
        "e STORE 1 +FLAGS ($)\r\n",
        "f SELECT $\r\n",
        "g FETCH $1 FLAGS\r\n",
        "h COPY 1 $\r\n",
    ] {
        let (l, n) = marked(&[untouched]);
        assert_eq!((l[0].as_str(), n), (untouched, 0));
    }
    // A later line of a command that is no search is never marked.
    let (l, n) = marked(&["i COPY 1 {1}\r\n", "$\r\n"]);
    assert_eq!((l[1].as_str(), n), ("$\r\n", 0));
}

#[test]
fn dollars_are_capped_per_command() {
    let mut m = Marker::default();
    let mut line = format!("a SEARCH {}\r\n", vec!["$"; MAX_MARKS].join(" ")).into_bytes();
    m.first_line(&mut line).unwrap();
    let mut more = b" $\r\n".to_vec();
    assert_eq!(m.next_line(&mut more), Err(why::MARKS));
}

fn parse(line: &str) -> Command<'static> {
    let (_, c) = CommandCodec::default().decode(line.as_bytes()).unwrap();
    c.into_static()
}

fn wire(c: &Command<'static>) -> String {
    String::from_utf8(CommandCodec::default().encode(c).dump()).unwrap()
}

/// The provider's tagged OK to `tag`.
fn ok_from(tag: &str) -> Status<'static> {
    Status::Tagged(Tagged {
        tag: Tag::unvalidated(tag.to_owned()),
        body: StatusBody {
            kind: StatusKind::Ok,
            code: None,
            text: imap_next::imap_types::core::Text::unvalidated("done"),
        },
    })
}

fn set(s: &str) -> SequenceSet {
    SequenceSet::try_from(s).unwrap()
}

#[test]
fn the_saved_result_is_put_in_every_place_of_a_search() {
    let mut c = parse(
        "a SEARCH OR 4294967295:4294967295 NOT (UID 4294967295:4294967295 SUBJECT 4294967295:4294967295) FLAGGED\r\n",
    );
    let saved = set("3:5,9");
    assert_eq!(place(&mut c, Some(&saved)), Ok(Placed::Ready));
    assert_eq!(
        wire(&c),
        "a SEARCH OR UID 3:5,9 NOT (UID 3:5,9 SUBJECT $) FLAGGED\r\n"
    );
    // Empty: matches nothing.
    let mut c = parse("a UID SEARCH 4294967295:4294967295 HEADER 4294967295:4294967295 x\r\n");
    assert_eq!(place(&mut c, None), Ok(Placed::Ready));
    assert_eq!(wire(&c), "a UID SEARCH NOT ALL HEADER $ x\r\n");
    let mut c = parse("a SORT (DATE) 4294967295:4294967295 KEYWORD 4294967295:4294967295\r\n");
    assert_eq!(place(&mut c, Some(&saved)), Ok(Placed::Ready));
    assert_eq!(wire(&c), "a SORT (DATE) $ KEYWORD $\r\n");
    // No `$`: as it came.
    let mut c = parse("a SEARCH 1:4 SUBJECT x\r\n");
    assert_eq!(place(&mut c, Some(&saved)), Ok(Placed::Untouched));
    assert_eq!(wire(&c), "a SEARCH 1:4 SUBJECT x\r\n");
}

#[test]
fn a_dollar_where_a_number_stands_does_not_parse() {
    for line in [
        "a SEARCH LARGER 4294967295:4294967295\r\n",
        "a SEARCH YOUNGER 4294967295:4294967295\r\n",
        "a SEARCH OR 1 MODSEQ 4294967295:4294967295\r\n",
    ] {
        assert!(
            CommandCodec::default().decode(line.as_bytes()).is_err(),
            "{line}"
        );
    }
    // The client's own largest numbers stay its own.
    let mut c = parse("a SEARCH LARGER 4294967295 UID 4294967295\r\n");
    assert_eq!(place(&mut c, Some(&set("1"))), Ok(Placed::Untouched));
}

#[test]
fn a_dollar_too_scattered_for_one_command_is_refused() {
    let scattered: Vec<String> = (1..=1001).map(|n| (n * 2).to_string()).collect();
    let saved = set(&scattered.join(","));
    let mut c = parse("a SEARCH 4294967295:4294967295\r\n");
    assert_eq!(place(&mut c, Some(&saved)), Ok(Placed::Ready));
    let mut c = parse("a SEARCH OR 4294967295:4294967295 NOT 4294967295:4294967295\r\n");
    assert_eq!(place(&mut c, Some(&saved)), Err(why::TOO_LARGE));
}

#[test]
fn a_command_over_a_set_takes_uids_or_asks_for_numbers() {
    let saved = set("4,7:8");
    let mut c = parse("a UID FETCH 4294967295:4294967295 (FLAGS)\r\n");
    assert_eq!(place(&mut c, Some(&saved)), Ok(Placed::Ready));
    assert_eq!(wire(&c), "a UID FETCH 4,7:8 FLAGS\r\n");
    let mut c = parse("a UID EXPUNGE 4294967295:4294967295\r\n");
    assert_eq!(place(&mut c, Some(&saved)), Ok(Placed::Ready));
    assert_eq!(wire(&c), "a UID EXPUNGE 4,7:8\r\n");
    let mut c = parse("a COPY 4294967295:4294967295 Archive\r\n");
    assert_eq!(place(&mut c, Some(&saved)), Ok(Placed::Resolve));
    // Empty: the provider's own (empty) `$` in its place.
    let mut c = parse("a UID MOVE 4294967295:4294967295 Archive\r\n");
    assert_eq!(place(&mut c, None), Ok(Placed::Empty));
    assert_eq!(
        with_provider_dollar(&c).unwrap(),
        b"a UID MOVE $ Archive\r\n"
    );
    let c = parse("a STORE 4294967295:4294967295 +FLAGS (\\Seen)\r\n");
    assert_eq!(
        with_provider_dollar(&c).unwrap(),
        b"a STORE $ +FLAGS (\\Seen)\r\n"
    );
    // A mailbox name that must go as a literal: no single line.
    let c = parse("a COPY 4294967295:4294967295 {3}\r\na\nb\r\n");
    assert_eq!(with_provider_dollar(&c), None);
}

#[test]
fn numbers_asked_for_go_into_the_command() {
    let command = parse("c7 STORE 4294967295:4294967295 +FLAGS (\\Seen)\r\n");
    let (mut plan, search) = Resolve::start(command, &set("10:12"));
    assert_eq!(wire(&search), "writ.r1 SEARCH UID 10:12\r\n");
    plan.on_search(
        [5, 3, 4]
            .iter()
            .map(|&n| NonZeroU32::new(n).unwrap())
            .collect(),
    );
    let other = ok_from("c6");
    assert!(plan.on_status(other).is_err(), "another command's answer");
    let ok = ok_from(RESOLVE_TAG);
    match plan.on_status(ok.clone()).unwrap().as_slice() {
        [Output::Resume(c)] => assert_eq!(wire(c), "c7 STORE 3:5 +FLAGS (\\Seen)\r\n"),
        _ => panic!("not resumed"),
    }
    // Every saved message gone meanwhile: the provider answers as for an
    // empty `$`.
    let (mut plan, _) = Resolve::start(
        parse("c8 FETCH 4294967295:4294967295 FLAGS\r\n"),
        &set("10"),
    );
    match plan.on_status(ok).unwrap().as_slice() {
        [Output::ToProviderLine(tag, line), Output::Over] => {
            assert_eq!(tag.as_ref(), "c8");
            assert_eq!(line, b"c8 FETCH $ FLAGS\r\n");
        }
        _ => panic!("not passed on"),
    }
}

#[test]
fn a_provider_answering_more_numbers_than_it_could_is_answered_no() {
    let (mut plan, _) = Resolve::start(
        parse("c9 FETCH 4294967295:4294967295 FLAGS\r\n"),
        &set("1:9"),
    );
    let many: Vec<NonZeroU32> = (1..=u32::try_from(super::super::search_plan::MAX_SEARCH_RESULTS)
        .unwrap())
        .map(|n| NonZeroU32::new(n).unwrap())
        .collect();
    plan.on_search(many);
    plan.on_search(vec![NonZeroU32::MIN]);
    let ok = ok_from(RESOLVE_TAG);
    match plan.on_status(ok).unwrap().as_slice() {
        [Output::Finish(Status::Tagged(t))] => {
            assert_eq!((t.tag.as_ref(), t.body.kind), ("c9", StatusKind::No));
        }
        _ => panic!("not refused"),
    }
}
