//! A model test of the IMAP proxy under concurrent sessions: four clients
//! on one mailbox at once, two through writ and two straight at Dovecot,
//! run seeded random SELECT, FETCH, STORE, EXPUNGE, APPEND, MOVE, SEARCH
//! and NOOP over a mix of sealed and plaintext mail. Their commands
//! interleave one at a time, so each session's view falls behind the
//! others' changes exactly as with real clients, and the model
//! (tests/common/imap_model.rs) says what each must see, flags included;
//! SEARCH must find exactly the live messages of its view that match
//! (gone ones may or may not match).
//!
//! The seed is printed; `WRIT_TEST_SEED=<n>` replays a run, and
//! `WRIT_TEST_OPS=<n>` sets how many operations.

mod common;

use std::collections::BTreeSet;

use common::imap_model::*;
use common::imap_proxy::ImapProxy;
use common::provider;

/// One random operation by one random client.
fn step(
    model: &mut Model,
    clients: &mut [Client],
    rng: &mut Rng,
    proxy: &ImapProxy,
    next_msg: &mut usize,
) {
    let c = rng.below(clients.len());
    let client = &mut clients[c];
    let live = model.live(client);
    let pick = |rng: &mut Rng| live.get(rng.below(live.len())).copied();
    let roll = rng.below(100);
    let (command, kind): (String, Kind) = match roll {
        0..=24 => {
            let len = client.view.len();
            if len == 0 {
                ("NOOP".into(), PLAIN)
            } else {
                let from = rng.below(len) + 1;
                let to = (from + rng.below(4)).min(len);
                let (items, part, sets_seen) = match rng.below(4) {
                    0 => ("(UID FLAGS BODY[])", Part::Whole, true),
                    1 => (
                        "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)] FLAGS)",
                        Part::Subject,
                        false,
                    ),
                    _ => ("(UID FLAGS BODY.PEEK[])", Part::Whole, false),
                };
                (
                    format!("FETCH {from}:{to} {items}"),
                    Kind {
                        by_seq: true,
                        part,
                        sets_seen,
                    },
                )
            }
        }
        25..=34 => match pick(rng) {
            Some((_, uid)) => (
                format!("UID FETCH {uid} (UID FLAGS BODY.PEEK[])"),
                Kind {
                    by_seq: false,
                    part: Part::Whole,
                    sets_seen: false,
                },
            ),
            None => ("NOOP".into(), PLAIN),
        },
        35..=49 => match pick(rng) {
            Some((seq, uid)) => {
                let flag = ["\\Flagged", "\\Answered", "$Label1"][rng.below(3)];
                let add = rng.below(2) == 0;
                let msg = model.msgs.get_mut(&uid).expect("known");
                if add {
                    msg.flags.insert(flag.into());
                } else {
                    msg.flags.remove(flag);
                }
                let sign = if add { '+' } else { '-' };
                if rng.below(2) == 0 {
                    (
                        format!("STORE {seq} {sign}FLAGS ({flag})"),
                        Kind {
                            by_seq: true,
                            ..PLAIN
                        },
                    )
                } else {
                    (format!("UID STORE {uid} {sign}FLAGS ({flag})"), PLAIN)
                }
            }
            None => ("NOOP".into(), PLAIN),
        },
        50..=55 => match pick(rng) {
            Some((_, uid)) => {
                // Gone from here on: the EXPUNGE follows at once.
                let msg = model.msgs.get_mut(&uid).expect("known");
                msg.flags.insert("\\Deleted".into());
                msg.gone = true;
                let command = format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)");
                model.log.push(format!("{} {command}", client.name));
                let r = run(client, &command);
                if !r.is_ok() {
                    model.fail(client, "STORE \\Deleted failed".into(), &r);
                }
                model.absorb(client, &r, PLAIN);
                ("EXPUNGE".into(), PLAIN)
            }
            None => ("NOOP".into(), PLAIN),
        },
        56..=65 => {
            *next_msg += 1;
            let m = message(*next_msg);
            let seal = !client.via_writ && rng.below(2) == 0;
            let stored = if seal { proxy.seal(&m) } else { m.clone() };
            let r = client.imap.append("INBOX", &stored);
            model
                .log
                .push(format!("{} APPEND message {}", client.name, *next_msg));
            let Some(uid) = r.append_uid().filter(|_| r.is_ok()) else {
                model.fail(client, "APPEND failed".into(), &r);
            };
            let known = if client.via_writ && !seal {
                None
            } else {
                Some(stored)
            };
            model.msgs.insert(
                uid,
                Msg {
                    plain: m,
                    stored: known,
                    flags: BTreeSet::new(),
                    gone: false,
                },
            );
            model.absorb(client, &r, PLAIN);
            return;
        }
        66..=69 => match pick(rng) {
            Some((_, uid)) => {
                model.msgs.get_mut(&uid).expect("known").gone = true;
                (format!("UID MOVE {uid} Other"), PLAIN)
            }
            None => ("NOOP".into(), PLAIN),
        },
        70..=81 => {
            let g = rng.below(4);
            let by_uid = rng.below(2) == 0;
            let (key, content) = if client.via_writ && rng.below(3) != 0 {
                (format!("BODY word{g}"), true)
            } else {
                ("FLAGGED".to_owned(), false)
            };
            let command = if by_uid {
                format!("UID SEARCH {key}")
            } else {
                format!("SEARCH {key}")
            };
            let before = client.view.clone();
            // The provider searches flags as this session last
            // synchronised them (the changes follow the answer).
            let shown = client.flags.clone();
            model.log.push(format!("{} {command}", client.name));
            let r = run(client, &command);
            if !r.is_ok() {
                model.fail(client, format!("{command} failed"), &r);
            }
            let kind = Kind {
                by_seq: !by_uid,
                ..PLAIN
            };
            model.absorb(client, &r, kind);
            let found: BTreeSet<u32> = search_result(&r).into_iter().collect();
            let word = format!("word{g}");
            // (may match, must match)
            let matches = |u: u32, m: &Msg| {
                if content {
                    let yes = m.plain.windows(word.len()).any(|w| w == word.as_bytes());
                    (yes, yes)
                } else {
                    let now = m.flags.contains("\\Flagged");
                    let then = shown.get(&u).map(|f| f.contains("\\Flagged"));
                    (now || then.unwrap_or(true), now && then.unwrap_or(false))
                }
            };
            for (i, u) in before.iter().enumerate() {
                let Some(u) = u else { continue };
                let m = &model.msgs[u];
                let id = if by_uid { *u } else { i as u32 + 1 };
                let hit = found.contains(&id);
                let (may, must) = matches(*u, m);
                if (hit && !may) || (!hit && must && !m.gone) {
                    model.fail(client, format!("{command}: UID {u} found {hit}"), &r);
                }
            }
            return;
        }
        82..=89 => ("NOOP".into(), PLAIN),
        _ => {
            let r = run(client, "SELECT INBOX");
            model.log.push(format!("{} SELECT INBOX", client.name));
            if !r.is_ok() {
                model.fail(client, "SELECT failed".into(), &r);
            }
            client.view.clear();
            client.flags.clear();
            model.absorb(client, &r, PLAIN);
            if client.view.is_empty() {
                // `1:*` of an empty mailbox is BAD.
                ("NOOP".into(), PLAIN)
            } else {
                (
                    "FETCH 1:* (UID FLAGS)".into(),
                    Kind {
                        by_seq: true,
                        ..PLAIN
                    },
                )
            }
        }
    };
    model.log.push(format!("{} {command}", client.name));
    let r = run(client, &command);
    if !r.is_ok() {
        model.fail(client, format!("{command} failed"), &r);
    }
    model.absorb(client, &r, kind);
}

#[test]
fn concurrent_sessions_through_writ_and_at_dovecot_see_what_the_model_says() {
    let (seed, ops) = seed_and_ops();
    eprintln!("imap model: seed {seed} (WRIT_TEST_SEED={seed} replays), {ops} operations");
    let p = provider();
    let proxy = proxy_for(p);
    let (mut model, mut clients) = setup(p, &proxy, seed, false);
    let mut next_msg = 8;
    let mut rng = Rng(seed);
    for _ in 0..ops {
        step(&mut model, &mut clients, &mut rng, &proxy, &mut next_msg);
    }
    catch_up(&mut model, &mut clients);
    for c in clients {
        c.imap.logout();
    }
}
