//! The model test of tests/imap_model.rs with its four clients in
//! threads of their own, all at once: views, sequence numbers, EXPUNGE
//! placement and bodies are checked as in the sequential run (flags are
//! not: their order is the threads'). `WRIT_TEST_SEED` and
//! `WRIT_TEST_OPS` as there (this run does half the operations).

mod common;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::imap_model::*;
use common::imap_proxy::ImapProxy;
use common::provider;

/// One random operation of one client in the parallel run: the model is
/// locked to decide and to check, never while a command is out.
fn parallel_step(
    model: &Mutex<Model>,
    client: &mut Client,
    rng: &mut Rng,
    proxy: &ImapProxy,
    next_msg: &AtomicUsize,
) {
    let live = model.lock().unwrap().live(client);
    let pick = |rng: &mut Rng| live.get(rng.below(live.len())).copied();
    let by_seq = Kind {
        by_seq: true,
        ..PLAIN
    };
    let (command, kind) = match rng.below(100) {
        0..=29 if !client.view.is_empty() => {
            let len = client.view.len();
            let from = rng.below(len) + 1;
            let to = (from + rng.below(4)).min(len);
            let (items, part, sets_seen) = match rng.below(4) {
                0 => ("(UID FLAGS BODY[])", Part::Whole, true),
                1 => (
                    "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
                    Part::Subject,
                    false,
                ),
                _ => ("(UID FLAGS BODY.PEEK[])", Part::Whole, false),
            };
            let kind = Kind {
                by_seq: true,
                part,
                sets_seen,
            };
            (format!("FETCH {from}:{to} {items}"), kind)
        }
        30..=39 => match pick(rng) {
            Some((_, uid)) => (
                format!("UID FETCH {uid} (UID FLAGS BODY.PEEK[])"),
                Kind {
                    part: Part::Whole,
                    ..PLAIN
                },
            ),
            None => ("NOOP".into(), PLAIN),
        },
        40..=54 => match pick(rng) {
            Some((seq, uid)) => {
                let flag = ["\\Flagged", "\\Answered", "$Label1"][rng.below(3)];
                let sign = ['+', '-'][rng.below(2)];
                if rng.below(2) == 0 {
                    (format!("STORE {seq} {sign}FLAGS ({flag})"), by_seq)
                } else {
                    (format!("UID STORE {uid} {sign}FLAGS ({flag})"), PLAIN)
                }
            }
            None => ("NOOP".into(), PLAIN),
        },
        55..=60 | 73..=76 => match pick(rng) {
            Some((_, uid)) => {
                model
                    .lock()
                    .unwrap()
                    .msgs
                    .get_mut(&uid)
                    .expect("known")
                    .gone = true;
                if rng.below(2) == 0 {
                    (format!("UID MOVE {uid} Other"), PLAIN)
                } else {
                    let r = client
                        .imap
                        .command(&format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)"));
                    let mut m = model.lock().unwrap();
                    if !r.is_ok() {
                        m.fail(client, "STORE \\Deleted failed".into(), &r);
                    }
                    m.absorb(client, &r, PLAIN);
                    ("EXPUNGE".into(), PLAIN)
                }
            }
            None => ("NOOP".into(), PLAIN),
        },
        61..=72 => {
            let n = next_msg.fetch_add(1, Ordering::Relaxed) + 1;
            let m = message(n);
            let stored = if !client.via_writ && rng.below(2) == 0 {
                proxy.seal(&m)
            } else {
                m.clone()
            };
            let r = client.imap.append("INBOX", &stored);
            let mut model = model.lock().unwrap();
            model
                .log
                .push(format!("{} APPEND message {n}", client.name));
            let Some(uid) = r.append_uid().filter(|_| r.is_ok()) else {
                model.fail(client, "APPEND failed".into(), &r);
            };
            let known = (!client.via_writ).then_some(stored);
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
        77..=86 if client.via_writ => {
            let g = rng.below(4);
            let by_uid = rng.below(2) == 0;
            let command = format!("{}SEARCH BODY word{g}", if by_uid { "UID " } else { "" });
            let before = client.view.clone();
            let r = client.imap.command(&command);
            let mut model = model.lock().unwrap();
            model.log.push(format!("{} {command}", client.name));
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
            for (i, u) in before.iter().enumerate() {
                let Some(m) = u.and_then(|u| model.msgs.get(&u)) else {
                    continue;
                };
                let id = if by_uid { u.unwrap_or(0) } else { i as u32 + 1 };
                let hit = found.contains(&id);
                let matches = m.plain.windows(word.len()).any(|w| w == word.as_bytes());
                if (hit && !matches) || (!hit && matches && !m.gone) {
                    model.fail(client, format!("{command}: UID {u:?} found {hit}"), &r);
                }
            }
            return;
        }
        _ => ("NOOP".into(), PLAIN),
    };
    let r = client.imap.command(&command);
    let mut model = model.lock().unwrap();
    model.log.push(format!("{} {command}", client.name));
    // A STORE by number of a message expunged meanwhile: NO, as Dovecot
    // says for plaintext.
    let expunged = r.tagged.text_only().contains("EXPUNGEISSUED");
    let allowed = r.is_ok() || (command.starts_with("STORE") && expunged);
    if !allowed {
        model.fail(client, format!("{command} failed"), &r);
    }
    model.absorb(client, &r, kind);
}

/// The same clients, each in a thread of its own, all at once: views,
/// sequence numbers, EXPUNGE placement and bodies are checked as in the
/// sequential run (flags are not: their order is the threads').
#[test]
fn parallel_sessions_through_writ_and_at_dovecot_keep_numbers_and_bodies_right() {
    let (seed, ops) = seed_and_ops();
    let ops = ops / 2;
    eprintln!(
        "imap model, parallel: seed {seed} (WRIT_TEST_SEED={seed} replays), {ops} operations"
    );
    let p = provider();
    let proxy = proxy_for(p);
    let (model, clients) = setup(p, &proxy, seed, true);
    let model = Mutex::new(model);
    let next_msg = AtomicUsize::new(8);
    let share = ops / clients.len();
    let mut clients: Vec<Client> = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(i, mut client)| {
                let (model, proxy, next_msg) = (&model, &proxy, &next_msg);
                s.spawn(move || {
                    let mut rng =
                        Rng((seed ^ 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(i as u64 + 1)) | 1);
                    for _ in 0..share {
                        parallel_step(model, &mut client, &mut rng, proxy, next_msg);
                    }
                    client
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a client thread failed"))
            .collect()
    });
    let mut model = model.into_inner().unwrap();
    catch_up(&mut model, &mut clients);
    for (uid, body, part, via_writ) in std::mem::take(&mut model.deferred) {
        let msg = &model.msgs[&uid];
        let source = if via_writ {
            Some(&msg.plain)
        } else {
            msg.stored.as_ref()
        };
        if let Some(m) = source {
            let expected = match part {
                Part::Subject => subject_field(m),
                _ => m.clone(),
            };
            assert_eq!(
                expected, body,
                "seed {seed}: UID {uid} carried another body"
            );
        }
    }
    for c in clients {
        c.imap.logout();
    }
}
