//! The relay's pool of idle provider connections, against the real
//! provider: client sessions share provider connections (counted by a TCP
//! proxy in front of the provider, not by timing), a connection the
//! provider closed while idle is never used for a message, the provider's
//! refusals on a pooled connection reach the client verbatim and leave the
//! connection usable, a provider connection cut mid-transaction loses
//! no message that was acknowledged, the pool keeps at most its size and
//! closes connections idle too long, and MAIL/RCPT are pipelined to the
//! provider with each reply still answering its own command.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use common::mail::{DELIVERY_TIMEOUT, contains, short_message as message, unique, wait_until};
use common::mta::{Mta, MtaConfig};
use common::writ::{TestKeys, Writ, WritConfig};
use common::{DOMAIN, Smtp, provider, smtp};

/// One connection through the proxy: both sockets, for closing it.
struct Link {
    writ: TcpStream,
    provider: TcpStream,
    open: Arc<AtomicBool>,
}

#[derive(Default)]
struct ProxyState {
    /// Connections accepted from writ, so far.
    connections: AtomicUsize,
    /// Command lines writ sent (not message data), with their connection.
    commands: Mutex<Vec<(usize, String)>>,
    /// The command lines of each read from writ that held any: what writ
    /// sent together, without waiting for a reply in between.
    reads: Mutex<Vec<Vec<String>>>,
    links: Mutex<Vec<Link>>,
    /// Cut the connection inside the n-th DATA (counted over all
    /// connections from 1), after this many bytes of message data.
    cut_in_data: Mutex<Option<(usize, usize)>>,
    datas: AtomicUsize,
}

/// A TCP proxy in front of the provider's SMTP that counts connections,
/// records writ's commands, and can close connections as the provider
/// would (idle timeout) or cut one mid-DATA (the provider dying).
struct Proxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
}

impl Proxy {
    fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState::default());
        let st = Arc::clone(&state);
        thread::spawn(move || {
            for writ in listener.incoming() {
                let Ok(writ) = writ else { continue };
                let Ok(provider) = TcpStream::connect(target) else {
                    continue;
                };
                let id = st.connections.fetch_add(1, Ordering::SeqCst) + 1;
                let open = Arc::new(AtomicBool::new(true));
                st.links.lock().unwrap().push(Link {
                    writ: writ.try_clone().unwrap(),
                    provider: provider.try_clone().unwrap(),
                    open: Arc::clone(&open),
                });
                let (w2, p2) = (writ.try_clone().unwrap(), provider.try_clone().unwrap());
                let st2 = Arc::clone(&st);
                thread::spawn(move || upstream_pump(id, writ, provider, &st2));
                thread::spawn(move || {
                    copy(p2, w2);
                    open.store(false, Ordering::SeqCst);
                });
            }
        });
        Proxy { addr, state }
    }

    fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    fn commands(&self) -> Vec<(usize, String)> {
        self.state.commands.lock().unwrap().clone()
    }

    /// Command lines writ sent that begin with `verb`, over all connections.
    fn count(&self, verb: &str) -> usize {
        self.commands()
            .iter()
            .filter(|(_, c)| c.to_ascii_uppercase().starts_with(verb))
            .count()
    }

    /// The provider ends every open connection as its idle timeout does:
    /// `421` (when `say`), then close.
    fn close_all(&self, say: Option<&str>) {
        for link in self.state.links.lock().unwrap().iter_mut() {
            if !link.open.load(Ordering::SeqCst) {
                continue;
            }
            if let Some(line) = say {
                let _ = link.writ.write_all(line.as_bytes());
            }
            let _ = link.provider.shutdown(Shutdown::Both);
            let _ = link.writ.shutdown(Shutdown::Both);
        }
    }

    fn reads(&self) -> Vec<Vec<String>> {
        self.state.reads.lock().unwrap().clone()
    }

    fn cut_in_data(&self, nth: usize, after_bytes: usize) {
        *self.state.cut_in_data.lock().unwrap() = Some((nth, after_bytes));
    }
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// writ → provider: forwards everything, records command lines, and cuts
/// both sides inside the chosen DATA.
fn upstream_pump(id: usize, mut writ: TcpStream, mut provider: TcpStream, st: &ProxyState) {
    let mut buf = [0u8; 16 * 1024];
    let mut line = Vec::new();
    // Inside DATA: message bytes, not commands (until a line ".").
    let mut in_data = false;
    // Message bytes still allowed before the cut, when this DATA is cut.
    let mut cut_budget: Option<usize> = None;
    loop {
        let n = match writ.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut together = Vec::new();
        for (i, &b) in buf[..n].iter().enumerate() {
            if let Some(budget) = cut_budget.as_mut() {
                if *budget == 0 {
                    let _ = provider.write_all(&buf[..i]);
                    let _ = provider.shutdown(Shutdown::Both);
                    let _ = writ.shutdown(Shutdown::Both);
                    return;
                }
                *budget -= 1;
            }
            line.push(b);
            if b != b'\n' {
                continue;
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            line.clear();
            if in_data {
                if text == "." {
                    in_data = false;
                }
                continue;
            }
            if text.eq_ignore_ascii_case("DATA") {
                // DATA is answered 354 before data follows; writ waits
                // for it, so the next bytes are the message.
                in_data = true;
                let nth = st.datas.fetch_add(1, Ordering::SeqCst) + 1;
                if let Some((k, after)) = *st.cut_in_data.lock().unwrap()
                    && k == nth
                {
                    cut_budget = Some(after);
                }
            }
            together.push(text.clone());
            st.commands.lock().unwrap().push((id, text));
        }
        if !together.is_empty() {
            st.reads.lock().unwrap().push(together);
        }
        if provider.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = provider.shutdown(Shutdown::Write);
}

/// writ relaying through `proxy` (plain SMTP, loopback).
fn writ_via(proxy: &Proxy, keys: &TestKeys) -> Writ {
    let mut cfg = WritConfig::relay(proxy.addr).keys(keys);
    cfg.provider.as_mut().unwrap().address = proxy.addr.to_string();
    Writ::start(&cfg)
}

/// One client session: one message, then QUIT. The reply to the final dot.
#[track_caller]
fn send_one(writ: &Writ, to: &str, marker: &str) -> smtp::Reply {
    let mut s = Smtp::connect(writ.relay_addr()).unwrap();
    assert_eq!(s.command("EHLO client.test").unwrap().code, 250);
    s.begin_data("sender@elsewhere.test", to);
    let r = s.send_data(&message(to, marker)).unwrap();
    s.quit();
    r
}

/// Every marker is in exactly one of the stored (sealed) messages, and
/// there are no others.
#[track_caller]
fn assert_each_once(keys: &TestKeys, stored: &[Vec<u8>], markers: &[String]) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for m in stored {
        let opened = keys.open(m);
        let hits: Vec<&String> = markers
            .iter()
            .filter(|k| contains(&opened, k.as_bytes()))
            .collect();
        assert_eq!(
            hits.len(),
            1,
            "a stored message carries {} of the markers:\n{}",
            hits.len(),
            String::from_utf8_lossy(&opened)
        );
        *seen.entry(hits[0].as_str()).or_default() += 1;
    }
    for k in markers {
        assert_eq!(seen.get(k.as_str()), Some(&1), "{k} stored once");
    }
    assert_eq!(stored.len(), markers.len());
}

#[test]
fn sequential_sessions_reuse_one_provider_connection() {
    let p = provider();
    let user = p.new_user("pool-seq");
    let proxy = Proxy::start(p.smtp_addr());
    let keys = TestKeys::new();
    let writ = writ_via(&proxy, &keys);
    let markers: Vec<String> = (0..6).map(|i| unique(&format!("seq-{i}"))).collect();
    for m in &markers {
        let r = send_one(&writ, &user.address, m);
        assert_eq!(r.code, 250, "{r:?}");
    }
    let stored = p.wait_for_messages(&user, "INBOX", markers.len(), DELIVERY_TIMEOUT);
    assert_each_once(&keys, &stored, &markers);
    assert_eq!(
        proxy.connections(),
        1,
        "six client sessions, one after another, one provider connection: {:?}",
        proxy.commands()
    );
    // Greeted once; one MAIL per message.
    assert_eq!(proxy.count("EHLO"), 1);
    assert_eq!(proxy.count("MAIL"), markers.len());
    assert_eq!(
        writ.metric("writ_upstream_connections_total", &[("how", "reused")]),
        5.0
    );
}

#[test]
fn concurrent_sessions_share_fewer_provider_connections_and_deliver_each_message_once() {
    const CLIENTS: usize = 8;
    const EACH: usize = 6;
    let p = provider();
    let user = p.new_user("pool-many");
    let proxy = Proxy::start(p.smtp_addr());
    let keys = TestKeys::new();
    let writ = Arc::new(writ_via(&proxy, &keys));
    let markers: Vec<String> = (0..CLIENTS * EACH)
        .map(|i| unique(&format!("many-{i}")))
        .collect();
    let threads: Vec<_> = markers
        .chunks(EACH)
        .map(|chunk| {
            let chunk = chunk.to_vec();
            let writ = Arc::clone(&writ);
            let to = user.address.clone();
            thread::spawn(move || {
                for m in &chunk {
                    let r = send_one(&writ, &to, m);
                    assert_eq!(r.code, 250, "{m}: {r:?}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stored = p.wait_for_messages(&user, "INBOX", markers.len(), DELIVERY_TIMEOUT);
    assert_each_once(&keys, &stored, &markers);
    // At most one provider connection per session running at once (the
    // pool holds up to 16, so none was closed for lack of room), against
    // one per session without the pool.
    let used = proxy.connections();
    assert!(
        used <= CLIENTS,
        "{} sessions, {CLIENTS} at a time, used {used} provider connections",
        markers.len()
    );
    assert_eq!(proxy.count("MAIL"), markers.len());
}

#[test]
fn idle_connection_the_provider_closed_is_not_used_for_a_message() {
    let p = provider();
    let user = p.new_user("pool-stale");
    let proxy = Proxy::start(p.smtp_addr());
    let keys = TestKeys::new();
    let writ = writ_via(&proxy, &keys);
    let mut markers = Vec::new();
    let first = unique("stale-0");
    assert_eq!(send_one(&writ, &user.address, &first).code, 250);
    markers.push(first);
    assert_eq!(proxy.connections(), 1);

    // The provider's idle timeout ends the pooled connection, with its
    // 421, then (the next round) without a word.
    for (round, say) in [
        Some("421 4.4.2 provider.test Error: timeout exceeded\r\n"),
        None,
    ]
    .into_iter()
    .enumerate()
    {
        proxy.close_all(say);
        let marker = unique(&format!("stale-{}", round + 1));
        let r = send_one(&writ, &user.address, &marker);
        assert_eq!(r.code, 250, "round {round}: {r:?}\n{}", writ.log());
        markers.push(marker);
        assert_eq!(
            proxy.connections(),
            round + 2,
            "the message went over a fresh connection"
        );
    }
    let stored = p.wait_for_messages(&user, "INBOX", markers.len(), DELIVERY_TIMEOUT);
    assert_each_once(&keys, &stored, &markers);
    // Each message's MAIL, RCPT and DATA went over one connection: the
    // one that was then alive.
    let mut per_conn: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (id, c) in proxy.commands() {
        per_conn.entry(id).or_default().push(c);
    }
    for (id, cmds) in &per_conn {
        let data = cmds.iter().filter(|c| *c == "DATA").count();
        assert_eq!(data, 1, "connection {id}: {cmds:?}");
    }
}

#[test]
fn provider_refusals_on_a_pooled_connection_reach_the_client_and_leave_it_consistent() {
    let p = provider();
    let alice = p.new_user("pool-refused-a");
    let bob = p.new_user("pool-refused-b");
    let nobody = format!("{}@{DOMAIN}", unique("nobody"));
    let why = unique("no-such-user");
    // A provider that knows its users and has a size limit: refuses
    // `nobody` at RCPT and a large message at the end of its data.
    let gate = Mta::start(&MtaConfig {
        reject: vec![(nobody.clone(), format!("550 5.1.1 {why}"))],
        main_cf: "message_size_limit = 40000\n".into(),
        ..MtaConfig::relaying_to(p.smtp_addr())
    });
    let proxy = Proxy::start(gate.smtp_addr());
    let keys = TestKeys::new();
    let writ = writ_via(&proxy, &keys);

    let m1 = unique("refused-1");
    assert_eq!(send_one(&writ, &alice.address, &m1).code, 250);

    // On the pooled connection: the RCPT refused with the provider's own
    // reply, the message refused at its end with the provider's 552.
    let mut s = Smtp::connect(writ.relay_addr()).unwrap();
    s.command("EHLO client.test").unwrap();
    assert_eq!(
        s.command("MAIL FROM:<sender@elsewhere.test>").unwrap().code,
        250
    );
    let refused = s.command(&format!("RCPT TO:<{nobody}>")).unwrap();
    assert_eq!(refused.code, 550, "{refused:?}");
    assert!(refused.text().contains(&why), "{refused:?}");
    assert_eq!(
        s.command(&format!("RCPT TO:<{}>", alice.address))
            .unwrap()
            .code,
        250
    );
    assert_eq!(s.command("DATA").unwrap().code, 354);
    let big = unique("too-big");
    let mut large = message(&alice.address, &big);
    large.extend(
        std::iter::repeat_n(b"0123456789abcdef0123456789abcdef\r\n".as_slice(), 2000).flatten(),
    );
    let r = s.send_data(&large).unwrap();
    assert_eq!(r.code, 552, "{r:?}");
    s.quit();

    // A session that leaves mid-transaction: writ resets the provider's
    // transaction before pooling the connection.
    let mut s = Smtp::connect(writ.relay_addr()).unwrap();
    s.command("EHLO client.test").unwrap();
    s.command("MAIL FROM:<sender@elsewhere.test>").unwrap();
    assert_eq!(
        s.command(&format!("RCPT TO:<{}>", bob.address))
            .unwrap()
            .code,
        250
    );
    drop(s);
    // Pooled once the provider said 250 to the RSET, not when it got it.
    wait_until("the RSET of the abandoned transaction", || {
        proxy.count("RSET") == 1 && writ.metric("writ_upstream_idle_connections", &[]) == 1.0
    });

    let m3 = unique("refused-3");
    let r = send_one(&writ, &bob.address, &m3);
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(
        proxy.connections(),
        1,
        "every session used the one provider connection: {:?}",
        proxy.commands()
    );
    let stored = p.wait_for_messages(&alice, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_each_once(&keys, &stored, &[m1]);
    let stored = p.wait_for_messages(&bob, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_each_once(&keys, &stored, &[m3]);
}

#[test]
fn provider_cut_mid_transaction_loses_nothing_acknowledged() {
    let p = provider();
    let user = p.new_user("pool-cut");
    let proxy = Proxy::start(p.smtp_addr());
    let keys = TestKeys::new();
    let writ = writ_via(&proxy, &keys);
    // The provider connection dies inside the second message's data.
    proxy.cut_in_data(2, 300);
    let mut acked = Vec::new();
    let mut failed = 0;
    for i in 0..4 {
        let marker = unique(&format!("cut-{i}"));
        let r = send_one(&writ, &user.address, &marker);
        if r.code == 250 {
            acked.push(marker);
        } else {
            assert_eq!(r.code, 451, "{r:?}");
            failed += 1;
        }
    }
    assert_eq!(failed, 1, "exactly the cut message failed");
    let stored = p.wait_for_messages(&user, "INBOX", acked.len(), DELIVERY_TIMEOUT);
    // Every acknowledged message once; the cut one nowhere (the provider
    // never had its end of data).
    assert_each_once(&keys, &stored, &acked);
    // The broken connection was not pooled: the messages after it went
    // over one new connection.
    assert_eq!(proxy.connections(), 2, "{:?}", proxy.commands());
}

#[test]
fn pipelined_mail_and_rcpts_go_to_the_provider_together_with_replies_one_to_one() {
    let p = provider();
    let alice = p.new_user("pipe-a");
    let bob = p.new_user("pipe-b");
    let nobody = format!("{}@{DOMAIN}", unique("nobody"));
    let why = unique("no-such-user");
    // A provider offering PIPELINING that refuses `nobody` at RCPT and a
    // sender without a domain at MAIL.
    let gate = Mta::start(&MtaConfig {
        reject: vec![(nobody.clone(), format!("550 5.1.1 {why}"))],
        main_cf: "smtpd_delay_reject = no\nsmtpd_sender_restrictions = reject_non_fqdn_sender\n"
            .into(),
        ..MtaConfig::relaying_to(p.smtp_addr())
    });
    let proxy = Proxy::start(gate.smtp_addr());
    let keys = TestKeys::new();
    let writ = writ_via(&proxy, &keys);
    let mut s = Smtp::connect(writ.relay_addr()).unwrap();
    assert_eq!(s.command("EHLO client.test").unwrap().code, 250);

    // The provider refuses the MAIL: the RCPT sent with it is answered
    // by writ (no transaction), DATA too, each with its own reply.
    s.write_raw(
        format!(
            "MAIL FROM:<sender@nodot>\r\nRCPT TO:<{}>\r\nDATA\r\n",
            alice.address
        )
        .as_bytes(),
    )
    .unwrap();
    let replies: Vec<smtp::Reply> = (0..3).map(|_| s.read_reply().unwrap()).collect();
    let codes: Vec<u16> = replies.iter().map(|r| r.code).collect();
    assert_eq!(codes, [504, 503, 503], "{replies:?}");
    assert!(
        replies[0].text().contains("need fully-qualified"),
        "{replies:?}"
    );

    // writ resets the provider after a refused MAIL before the connection
    // serves the next transaction: pooled only once the provider said 250
    // to the RSET (the proxy seeing the RSET is not yet that).
    wait_until("the reset after the refused MAIL", || {
        proxy.count("RSET") == 1 && writ.metric("writ_upstream_idle_connections", &[]) == 1.0
    });

    // MAIL and three RCPTs in one go (one in lower case, one twice: writ
    // renders its own lines), the provider's reply to each, in order, the
    // refused one with its own text.
    s.write_raw(
        format!(
            "MAIL FROM:<sender@elsewhere.test>\r\nRCPT TO:<{}>\r\nRCPT TO:<{nobody}>\r\n\
             rcpt to:<{}>\r\nRCPT TO:<{nobody}>\r\nDATA\r\n",
            alice.address, bob.address
        )
        .as_bytes(),
    )
    .unwrap();
    let replies: Vec<smtp::Reply> = (0..6).map(|_| s.read_reply().unwrap()).collect();
    let codes: Vec<u16> = replies.iter().map(|r| r.code).collect();
    assert_eq!(
        codes,
        [250, 250, 550, 250, 550, 354],
        "{replies:?} {:?}",
        proxy.reads()
    );
    assert!(replies[2].text().contains(&why), "{replies:?}");
    assert!(replies[4].text().contains(&why), "{replies:?}");
    let marker = unique("pipe");
    assert_eq!(
        s.send_data(&message(&alice.address, &marker)).unwrap().code,
        250
    );
    s.quit();

    // writ sent the MAIL and its RCPTs to the provider in one write, and
    // kept one provider connection in step throughout.
    let reads = proxy.reads();
    assert!(
        reads.iter().any(|r| r.len() == 5
            && r[0].starts_with("MAIL FROM:")
            && r[1..].iter().all(|l| l.starts_with("RCPT TO:"))),
        "MAIL and RCPTs not sent together: {reads:?}"
    );
    assert_eq!(proxy.connections(), 1, "{reads:?}");
    for user in [&alice, &bob] {
        let stored = p.wait_for_messages(user, "INBOX", 1, DELIVERY_TIMEOUT);
        assert_each_once(&keys, &stored, std::slice::from_ref(&marker));
    }
}

/// writ relaying through `proxy`, with these `[smtp]` settings.
fn writ_via_with(proxy: &Proxy, keys: &TestKeys, smtp: &[(&str, &str)]) -> Writ {
    let mut cfg = WritConfig::relay(proxy.addr).keys(keys);
    for (k, v) in smtp {
        cfg = cfg.smtp(k, v);
    }
    cfg.provider.as_mut().unwrap().address = proxy.addr.to_string();
    Writ::start(&cfg)
}

#[test]
fn the_pool_keeps_at_most_its_size() {
    let p = provider();
    let user = p.new_user("pool-size");
    let proxy = Proxy::start(p.smtp_addr());
    let keys = TestKeys::new();
    let writ = writ_via_with(&proxy, &keys, &[("provider_pool_size", "2")]);
    // Four sessions inside a transaction at once: four provider
    // connections.
    let mut sessions: Vec<Smtp> = (0..4)
        .map(|_| {
            let mut s = Smtp::connect(writ.relay_addr()).unwrap();
            s.command("EHLO client.test").unwrap();
            s.begin_data("sender@elsewhere.test", &user.address);
            s
        })
        .collect();
    assert_eq!(proxy.connections(), 4);
    let mut markers = Vec::new();
    for s in &mut sessions {
        let marker = unique("size");
        assert_eq!(
            s.send_data(&message(&user.address, &marker)).unwrap().code,
            250
        );
        markers.push(marker);
    }
    // Back between transactions: two are kept, two closed with QUIT.
    wait_until("two connections closed", || proxy.count("QUIT") == 2);
    // The next transactions use the two kept.
    for s in &mut sessions[..2] {
        let marker = unique("size-again");
        s.begin_data("sender@elsewhere.test", &user.address);
        assert_eq!(
            s.send_data(&message(&user.address, &marker)).unwrap().code,
            250
        );
        markers.push(marker);
    }
    assert_eq!(proxy.connections(), 4);
    assert_eq!(proxy.count("QUIT"), 2);
    for s in sessions {
        s.quit();
    }
    let stored = p.wait_for_messages(&user, "INBOX", markers.len(), DELIVERY_TIMEOUT);
    assert_each_once(&keys, &stored, &markers);
}

#[test]
fn the_pool_closes_connections_idle_too_long() {
    let p = provider();
    let user = p.new_user("pool-idle");
    let proxy = Proxy::start(p.smtp_addr());
    let keys = TestKeys::new();
    let writ = writ_via_with(&proxy, &keys, &[("provider_pool_idle_secs", "1")]);
    let first = unique("idle-0");
    assert_eq!(send_one(&writ, &user.address, &first).code, 250);
    // Closed (QUIT) by writ once idle past a second, not by the provider.
    wait_until("the idle connection closed", || proxy.count("QUIT") == 1);
    let second = unique("idle-1");
    assert_eq!(send_one(&writ, &user.address, &second).code, 250);
    assert_eq!(
        proxy.connections(),
        2,
        "a new connection after the idle one"
    );
    let stored = p.wait_for_messages(&user, "INBOX", 2, DELIVERY_TIMEOUT);
    assert_each_once(&keys, &stored, &[first, second]);
}

#[test]
fn a_refused_mail_leaves_no_provider_state_for_the_next_session() {
    // Postfix, after refusing `MAIL ... SIZE=` over its limit, refuses the
    // next MAIL on that connection too, SIZE or not, until RSET: the next
    // client must not inherit that.
    let p = provider();
    let user = p.new_user("pool-size-state");
    let gate = Mta::start(&MtaConfig {
        main_cf: "message_size_limit = 40000\n".into(),
        ..MtaConfig::relaying_to(p.smtp_addr())
    });
    let proxy = Proxy::start(gate.smtp_addr());
    let keys = TestKeys::new();
    let writ = writ_via(&proxy, &keys);
    let mut s = Smtp::connect(writ.relay_addr()).unwrap();
    s.command("EHLO client.test").unwrap();
    let r = s
        .command("MAIL FROM:<sender@elsewhere.test> SIZE=100000")
        .unwrap();
    assert_eq!(r.code, 552, "{r:?}");
    s.quit();
    wait_until("the reset before pooling", || proxy.count("RSET") == 1);
    // The RSET's 250 read and the connection back in the pool (the next
    // session must get this one, or the test proves nothing).
    wait_until("the connection pooled", || {
        writ.metric("writ_upstream_idle_connections", &[]) == 1.0
    });

    let marker = unique("after-size");
    let r = send_one(&writ, &user.address, &marker);
    assert_eq!(r.code, 250, "{r:?} {:?}", proxy.commands());
    assert_eq!(proxy.connections(), 1, "{:?}", proxy.commands());
    let stored = p.wait_for_messages(&user, "INBOX", 1, DELIVERY_TIMEOUT);
    assert_each_once(&keys, &stored, &[marker]);
}
