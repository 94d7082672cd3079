//! `writ mailbox seal/reseal/verify` and `writ keys retire` against the
//! real provider (Dovecot): mail already stored is sealed in place, flags
//! and dates kept, nothing lost; old epochs are moved off and retired, and
//! never while mail needs them, whatever the provider's search says.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use common::hostile::{HostileProvider, Lies};
use common::jobs::{Jobs, PLAIN, mailbox_args};
use common::writ::{TestKeys, WRIT};
use common::{Imap, Provider, User, provider};

/// The arguments naming the mailbox a job works on.
const INBOX: &[&str] = &["--mailbox", "INBOX"];

/// A message with something in every part worth checking.
fn message(n: usize) -> Vec<u8> {
    format!(
        "From: sender{n}@example.org\r\nTo: user@example.test\r\nSubject: stored plaintext {n}\r\n\
         Message-ID: <stored-{n}@example.org>\r\nDate: Mon, 2 Mar 2026 10:00:{:02} +0000\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Body of message {n}, confidential.\r\n{}\r\n",
        n % 60,
        "x".repeat(n * 37 % 900)
    )
    .into_bytes()
}

/// Stores `message` with flags and an INTERNALDATE.
fn append(imap: &mut Imap, mailbox: &str, flags: &str, date: &str, message: &[u8]) -> u32 {
    let r = imap.command_with_literal(
        &format!("APPEND {mailbox} ({flags}) \"{date}\""),
        message,
        "",
    );
    assert!(r.is_ok(), "APPEND: {}", r.text());
    r.append_uid().expect("APPENDUID")
}

/// (flags, INTERNALDATE, opened bytes, sealed?) of one stored message.
type Stored = (String, String, Vec<u8>, bool);

/// (flags, INTERNALDATE, bytes) of every message, keyed by Message-ID
/// (opened when sealed). Flags are sorted, \Recent dropped.
fn contents(
    provider: &Provider,
    user: &User,
    mailbox: &str,
    keys: &TestKeys,
) -> BTreeMap<String, Vec<Stored>> {
    let mut imap = provider.imap(user);
    imap.select(mailbox).expect_ok("SELECT");
    let r = imap.command("UID FETCH 1:* (FLAGS INTERNALDATE BODY.PEEK[])");
    let mut out: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for line in &r.untagged {
        let line_text = line.text_only();
        if !line_text.contains(" FETCH (") {
            continue;
        }
        let Some(body) = line.literals.first().cloned() else {
            continue;
        };
        let line = line_text;
        let flags = between(&line, "FLAGS (", ")");
        let mut flags: Vec<&str> = flags
            .split_whitespace()
            .filter(|f| *f != "\\Recent")
            .collect();
        flags.sort_unstable();
        let date = between(&line, "INTERNALDATE \"", "\"");
        let sealed = writ::envelope::detect(&body).is_some();
        let opened = if sealed { keys.open(&body) } else { body };
        let id = String::from_utf8_lossy(
            &writ::envelope::header::first_value(&opened, "message-id").unwrap_or_default(),
        )
        .trim()
        .to_string();
        out.entry(id)
            .or_default()
            .push((flags.join(" "), date, opened, sealed));
    }
    imap.logout();
    out
}

fn between(s: &str, a: &str, b: &str) -> String {
    s.split_once(a)
        .and_then(|(_, rest)| rest.split_once(b))
        .map(|(x, _)| x.to_string())
        .unwrap_or_default()
}

#[test]
fn seal_replaces_every_plaintext_message_keeping_flags_and_dates() {
    let p = provider();
    let user = p.new_user("seal");
    let jobs = Jobs::new(p.imap_addr());
    let mut imap = p.imap(&user);
    imap.command("CREATE Archive/2025").expect_ok("CREATE");
    let flag_sets = [
        "",
        "\\Seen",
        "\\Seen \\Flagged",
        "\\Answered $Label1",
        "\\Draft",
    ];
    let mut originals = BTreeMap::new();
    for n in 0..23 {
        let mailbox = if n % 3 == 0 { "Archive/2025" } else { "INBOX" };
        let flags = flag_sets[n % flag_sets.len()];
        let date = format!("{:02}-Feb-2026 0{}:1{}:00 +0100", n % 28 + 1, n % 10, n % 6);
        let m = message(n);
        append(&mut imap, mailbox, flags, &date, &m);
        originals.insert(format!("<stored-{n}@example.org>"), (mailbox, m));
    }
    // One message already sealed (by the relay, say) must be left alone.
    let mut presealed = Vec::new();
    let keyring = writ::keys::Keyring::load(&jobs.keys.dir()).unwrap();
    writ::keys::sealer(&keyring, &Default::default())
        .unwrap()
        .seal(&message(99)[..], &mut presealed)
        .unwrap();
    let presealed_uid = append(
        &mut imap,
        "INBOX",
        "\\Seen",
        "01-Jan-2026 00:00:00 +0000",
        &presealed,
    );
    imap.logout();
    let before_inbox = contents(p, &user, "INBOX", &jobs.keys);
    let before_archive = contents(p, &user, "Archive/2025", &jobs.keys);

    // --dry-run only counts.
    let text = jobs.ok(jobs.job(&user, "seal", &["--all", "--dry-run"]));
    assert!(
        text.contains("INBOX: 15 message(s) would be sealed"),
        "{text}"
    );
    assert!(
        text.contains("Archive/2025: 8 message(s) would be sealed"),
        "{text}"
    );
    assert_eq!(contents(p, &user, "INBOX", &jobs.keys), before_inbox);

    let text = jobs.ok(jobs.job(&user, "seal", &["--all", "--batch", "4"]));
    assert!(text.contains("INBOX: 15 sealed"), "{text}");
    assert!(text.contains("Archive/2025: 8 sealed"), "{text}");

    // Every message is now sealed; opened, each is its original, once,
    // with the same flags and INTERNALDATE.
    let after_inbox = contents(p, &user, "INBOX", &jobs.keys);
    let after_archive = contents(p, &user, "Archive/2025", &jobs.keys);
    for (before, after) in [
        (&before_inbox, &after_inbox),
        (&before_archive, &after_archive),
    ] {
        assert_eq!(before.len(), after.len());
        for (id, was) in before {
            let now = &after[id];
            assert_eq!(now.len(), 1, "{id} present once");
            assert_eq!(now[0].0, was[0].0, "{id}: flags");
            assert_eq!(now[0].1, was[0].1, "{id}: INTERNALDATE");
            assert_eq!(now[0].2, was[0].2, "{id}: bytes");
            assert!(now[0].3, "{id} is sealed now");
        }
    }
    for (id, (mailbox, m)) in &originals {
        let set = if *mailbox == "INBOX" {
            &after_inbox
        } else {
            &after_archive
        };
        assert_eq!(&set[id][0].2, m, "{id} opens to the original");
    }
    // The provider holds no plaintext body any more.
    for stored in p.imap_fetch_all(&user, "INBOX") {
        assert!(!String::from_utf8_lossy(&stored).contains("confidential"));
    }
    // The message that was sealed already kept its UID: not touched.
    let r = p.imap_command(&user, "INBOX", &format!("UID FETCH {presealed_uid} (UID)"));
    assert!(
        r.text().contains(&format!("UID {presealed_uid}")),
        "{}",
        r.text()
    );

    // A second run finds nothing to do.
    let text = jobs.ok(jobs.job(&user, "seal", &["--all"]));
    assert!(text.contains("INBOX: 0 sealed"), "{text}");

    // verify: all sealed under the active epoch, nothing undecryptable.
    let text = jobs.ok(jobs.job(&user, "verify", &["--all"]));
    let active = keyring.active().unwrap().id.clone();
    assert!(
        text.contains(&format!(
            "INBOX: 0 plaintext, sealed: 16 under {active}, 0 undecryptable"
        )),
        "{text}"
    );
}

#[test]
fn reseal_moves_an_old_epoch_then_retire_is_allowed() {
    let p = provider();
    let user = p.new_user("reseal");
    let jobs = Jobs::new(p.imap_addr());
    let keyring = writ::keys::Keyring::load(&jobs.keys.dir()).unwrap();
    let old = keyring.active().unwrap().id.clone();
    let sealer = writ::keys::sealer(&keyring, &Default::default()).unwrap();
    let mut imap = p.imap(&user);
    let mut originals = BTreeMap::new();
    for n in 0..9 {
        let mut sealed = Vec::new();
        sealer.seal(&message(n)[..], &mut sealed).unwrap();
        // A provider field above the marker, as delivery adds.
        let mut stored = format!("Received: from mx by provider; {n}\r\n").into_bytes();
        stored.extend_from_slice(&sealed);
        append(
            &mut imap,
            "INBOX",
            "\\Seen",
            "05-Mar-2026 12:00:00 +0000",
            &stored,
        );
        originals.insert(n, stored);
    }
    // Plaintext is not this job's business.
    append(
        &mut imap,
        "INBOX",
        "",
        "05-Mar-2026 12:00:00 +0000",
        &message(50),
    );
    imap.logout();

    // Retiring the active epoch, or one still in use, is refused.
    let out = jobs.run_as(&user, &["keys", "retire", &old]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("active"), "{err}");

    jobs.ok(jobs.run(&["keys", "rotate"]));
    let out = jobs.run_as(&user, &["keys", "retire", &old]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("INBOX: 9"),
        "names the mailbox and count: {err}"
    );

    let text = jobs.ok(jobs.job(
        &user,
        "reseal",
        &["--from-epoch", &old, "--mailbox", "INBOX"],
    ));
    assert!(text.contains("INBOX: 9 resealed"), "{text}");
    let keyring = writ::keys::Keyring::load(&jobs.keys.dir()).unwrap();
    let new = keyring.active().unwrap().id.clone();
    assert_ne!(new, old);
    let stored = p.imap_fetch_all(&user, "INBOX");
    let mut resealed = 0;
    let unlocked = keyring
        .unlock(&secrecy::SecretString::from(
            common::writ::PASSPHRASE.to_string(),
        ))
        .unwrap();
    for s in &stored {
        if let Some(d) =
            writ::envelope::detect(&s[..writ::envelope::header::header_end(s).unwrap()])
        {
            assert_eq!(d.epoch, new);
            // The Received field stays above the marker, as stored.
            assert!(s.starts_with(b"Received: from mx by provider; "));
            let mut opened = Vec::new();
            writ::envelope::open(&s[..], &unlocked, &mut opened).unwrap();
            let n: usize = String::from_utf8_lossy(&opened[31..33])
                .trim_end_matches('\r')
                .trim()
                .parse()
                .unwrap();
            let mut expect = format!("Received: from mx by provider; {n}\r\n").into_bytes();
            expect.extend_from_slice(&message(n));
            assert_eq!(opened, expect);
            resealed += 1;
        }
    }
    assert_eq!(resealed, 9);
    assert_eq!(stored.len(), 10);

    let text = jobs.ok(jobs.run_as(&user, &["keys", "retire", &old]));
    assert!(text.contains("retired"), "{text}");
    let list = jobs.ok(jobs.run(&["keys", "list"]));
    assert!(
        list.lines()
            .any(|l| l.contains(&old) && l.contains("retired")),
        "{list}"
    );
    assert!(!jobs.keys.dir().join(format!("epochs/{old}.age")).exists());
    let audit = jobs.ok(jobs.run(&["audit", "show"]));
    assert!(
        audit
            .lines()
            .any(|l| l.contains("keys.retire") && l.contains(&old)),
        "{audit}"
    );
    jobs.ok(jobs.run(&["audit", "verify"]));
    // Retiring again is refused.
    let out = jobs.run_as(&user, &["keys", "retire", &old]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already retired"));
    // The keyring still unlocks and opens everything at the provider.
    let text = jobs.ok(jobs.job(&user, "verify", &["--mailbox", "INBOX", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v[0]["plaintext"], 1);
    assert_eq!(v[0]["sealed"][&new], 9);
}

#[test]
fn verify_counts_undecryptable_messages_and_fails() {
    let p = provider();
    let user = p.new_user("verify");
    let jobs = Jobs::new(p.imap_addr());
    let other = TestKeys::new();
    let keyring = writ::keys::Keyring::load(&other.dir()).unwrap();
    let mut foreign = Vec::new();
    writ::keys::sealer(&keyring, &Default::default())
        .unwrap()
        .seal(&message(1)[..], &mut foreign)
        .unwrap();
    p.imap_append(&user, "INBOX", &foreign);
    p.imap_append(&user, "INBOX", &message(2));
    let out = jobs.job(&user, "verify", &["--mailbox", "INBOX", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["plaintext"], 1);
    assert_eq!(v[0]["undecryptable"].as_array().unwrap().len(), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 message(s) cannot be opened"));
}

#[test]
fn bad_credentials_and_missing_settings_are_clear_errors() {
    let p = provider();
    let user = p.new_user("creds");
    let jobs = Jobs::new(p.imap_addr());
    let bad = jobs.path("bad");
    std::fs::write(&bad, "wrong\n").unwrap();
    let out = jobs.run(&mailbox_args(
        "seal",
        &user.name,
        &["--password-file", &bad.display().to_string()],
        INBOX,
    ));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("login as {} refused", user.name)),
        "{err}"
    );
    assert!(!err.contains("wrong"), "no password in errors: {err}");

    let out = jobs.run(&mailbox_args("seal", &user.name, &[], INBOX));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no provider credentials"));
    let out = jobs.run(&["mailbox", "seal", "--account", &user.name]);
    assert!(!out.status.success(), "a mailbox or --all is required");
}

#[test]
fn an_administrator_seals_a_users_mailbox_through_the_master_user() {
    let p = provider();
    let user = p.new_user("mastered");
    let jobs = Jobs::new(p.imap_addr());
    p.imap_append(&user, "INBOX", &message(7));
    let master = p.master();
    let pw = master.password_file.display().to_string();
    let text = jobs.ok(jobs.run(&mailbox_args(
        "seal",
        &user.name,
        &["--master-user", &master.name, "--password-file", &pw],
        INBOX,
    )));
    assert!(text.contains("INBOX: 1 sealed"), "{text}");
    let stored = p.imap_fetch_all(&user, "INBOX");
    assert_eq!(stored.len(), 1);
    assert_eq!(jobs.keys.open(&stored[0]), message(7));

    // The user's own password is not the master's.
    let own = jobs.password_file(&user).display().to_string();
    let out = jobs.run(&mailbox_args(
        "verify",
        &user.name,
        &["--master-user", &master.name, "--password-file", &own],
        INBOX,
    ));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("login as {}*{} refused", user.name, master.name)),
        "{err}"
    );
}

#[test]
fn xoauth2_tokens_come_from_a_file_or_a_command() {
    let p = provider();
    let user = p.new_user("oauth");
    let jobs = Jobs::new(p.imap_addr());
    p.imap_append(&user, "INBOX", &message(3));
    let token_file = jobs.path("token");
    std::fs::write(&token_file, format!("{}\n", p.oauth2_token(&user))).unwrap();
    let tf = token_file.display().to_string();
    let text = jobs.ok(jobs.run(&mailbox_args(
        "verify",
        &user.name,
        &["--oauth2-token-file", &tf],
        INBOX,
    )));
    assert!(text.contains("INBOX: 1 plaintext"), "{text}");

    // A command prints the token; it learns the account from WRIT_ACCOUNT.
    let script = jobs.path("token.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$WRIT_ACCOUNT\" = {} ] || exit 3\ncat {}\n",
            user.name,
            token_file.display()
        ),
    )
    .unwrap();
    let cmd = format!("sh {}", script.display());
    let text = jobs.ok(jobs.run(&mailbox_args(
        "seal",
        &user.name,
        &["--oauth2-token-command", &cmd],
        INBOX,
    )));
    assert!(text.contains("INBOX: 1 sealed"), "{text}");

    // An expired token is refused; a failing command is named.
    std::fs::write(&token_file, p.oauth2_expired_token(&user)).unwrap();
    let out = jobs.run(&mailbox_args(
        "verify",
        &user.name,
        &["--oauth2-token-file", &tf],
        INBOX,
    ));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused"));
    let out = jobs.run(&mailbox_args(
        "verify",
        "someone-else",
        &["--oauth2-token-command", &cmd],
        INBOX,
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("token command") && err.contains("exit status"),
        "{err}"
    );
    // Two credential sources at once are refused.
    let pw = jobs.password_file(&user).display().to_string();
    let out = jobs.run(&mailbox_args(
        "verify",
        &user.name,
        &["--oauth2-token-file", &tf, "--password-file", &pw],
        INBOX,
    ));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only one of"));
}

#[test]
fn a_token_command_gets_no_writ_secrets_and_its_failure_names_only_the_program() {
    let p = provider();
    let user = p.new_user("oauthsecret");
    let jobs = Jobs::new(p.imap_addr());
    // Says on its stderr (passed through) which of writ's secrets it got.
    let script = jobs.path("token.sh");
    std::fs::write(
        &script,
        "#!/bin/sh
echo \"password=${WRIT_PROVIDER_PASSWORD:-unset} \
         passphrase=${WRIT_PASSPHRASE_FILE:-unset} pin=${WRIT_PIN_FILE:-unset}\" >&2
exit 3
",
    )
    .unwrap();
    let cmd = format!(
        "CLIENT_SECRET=env-hunter2 sh {} --client-secret arg-hunter2",
        script.display()
    );
    let passphrase = jobs.keys.passphrase_file();
    let out = jobs
        .command(&mailbox_args(
            "verify",
            &user.name,
            &["--oauth2-token-command", &cmd],
            INBOX,
        ))
        .env("WRIT_PROVIDER_PASSWORD", "pw-hunter2")
        .env("WRIT_PASSPHRASE_FILE", &passphrase)
        .env("WRIT_PIN_FILE", jobs.path("pin"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("password=unset passphrase=unset pin=unset"),
        "{err}"
    );
    assert!(err.contains("the token command `sh ...` failed"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn a_password_from_the_environment_works_and_never_shows_in_output() {
    let p = provider();
    let user = p.new_user("envpw");
    let jobs = Jobs::new(p.imap_addr());
    p.imap_append(&user, "INBOX", &message(4));
    let out = jobs
        .command(&mailbox_args("seal", &user.name, &[], INBOX))
        .env("WRIT_PROVIDER_PASSWORD", &user.password)
        .output()
        .unwrap();
    let text = jobs.ok(out);
    assert!(text.contains("INBOX: 1 sealed"), "{text}");
    let out = jobs
        .command(&mailbox_args("seal", &user.name, &[], INBOX))
        .env("WRIT_PROVIDER_PASSWORD", "not-the-password")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("refused") && !all.contains("not-the-password"),
        "{all}"
    );
}

#[test]
fn jobs_reach_the_provider_over_implicit_tls_and_starttls_checking_its_certificate() {
    let p = provider();
    let user = p.new_user("tls");
    p.imap_append(&user, "INBOX", &message(5));
    let ca = p.ca_file().display().to_string();
    let implicit = Jobs::with_provider(
        p.imaps_addr(),
        &format!("security = \"implicit\"\nca_file = {ca:?}\nserver_name = \"localhost\""),
    );
    let text = implicit.ok(implicit.job(&user, "verify", INBOX));
    assert!(text.contains("INBOX: 1 plaintext"), "{text}");
    let starttls = Jobs::with_provider(
        p.imap_addr(),
        &format!("security = \"starttls\"\nca_file = {ca:?}\nserver_name = \"localhost\""),
    );
    let text = starttls.ok(starttls.job(&user, "seal", INBOX));
    assert!(text.contains("INBOX: 1 sealed"), "{text}");
    // Without the provider's CA the certificate is refused: nothing done.
    let untrusted = Jobs::with_provider(
        p.imaps_addr(),
        "security = \"implicit\"\nserver_name = \"localhost\"",
    );
    let out = untrusted.job(&user, "verify", INBOX);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS"), "{err}");
    assert!(
        !err.contains("retrying"),
        "a bad certificate is not retried: {err}"
    );
}

#[test]
fn on_a_terminal_progress_is_a_bar_in_logs_it_is_lines() {
    let p = provider();
    let user = p.new_user("progress");
    for n in 0..30 {
        p.imap_append(&user, "INBOX", &message(n));
    }
    let jobs = Jobs::new(p.imap_addr());
    let pw = jobs.password_file(&user).display().to_string();
    // Under a pseudo-terminal (script(1), from bsdutils): the bar with
    // count, rate and ETA.
    let writ_line = format!(
        "{WRIT} --config {} --passphrase-file {} mailbox seal --account {} --password-file {pw} \
         --mailbox INBOX --batch 5",
        jobs.config().display(),
        jobs.keys.passphrase_file().display(),
        user.name
    );
    let out = Command::new("script")
        .args(["-qefc", &writ_line, "/dev/null"])
        .env_remove("WRIT_PASSPHRASE_FILE")
        .env("TERM", "xterm")
        .current_dir(jobs.dir())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tty}");
    assert!(tty.contains("INBOX: 30 sealed"), "{tty}");
    assert!(tty.contains("/30"), "a bar with a count: {tty}");
    assert!(tty.contains("ETA"), "{tty}");
    // In a log (stderr not a terminal): a closing line with count and rate.
    for n in 30..40 {
        p.imap_append(&user, "INBOX", &message(n));
    }
    let out = jobs.job(&user, "seal", INBOX);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.lines()
            .any(|l| l.starts_with("writ: sealed 10/10 messages (") && l.contains("/s")),
        "{log}"
    );
    assert!(!log.contains('\u{1b}'), "no terminal codes in logs: {log}");
}

/// `from` replaced by `to` in `bytes`, everywhere.
fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(at) = rest.windows(from.len()).position(|w| w == from) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(to);
        rest = &rest[at + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

#[test]
fn retire_reads_every_message_and_refuses_whatever_the_providers_search_says() {
    let p = provider();
    let user = p.new_user("retiresearch");
    let jobs = Jobs::new(p.imap_addr());
    let keyring = writ::keys::Keyring::load(&jobs.keys.dir()).unwrap();
    let old = keyring.active().unwrap().id.clone();
    let sealer = writ::keys::sealer(&keyring, &Default::default()).unwrap();
    for (n, mailbox) in [(1, "INBOX"), (2, "INBOX"), (3, "Archive")] {
        let mut sealed = Vec::new();
        sealer.seal(&message(n)[..], &mut sealed).unwrap();
        p.imap_append(&user, mailbox, &sealed);
    }
    p.imap_append(&user, "INBOX", &message(4));
    jobs.ok(jobs.run(&["keys", "rotate"]));
    let epoch_file = jobs.keys.dir().join(format!("epochs/{old}.age"));

    // A provider whose search misses the X-Writ field (a full-text index
    // without custom fields): its search finds nothing under the epoch...
    let blind = HostileProvider::start(
        p.imap_addr(),
        Lies::new().command(|line| replace(line, b"HEADER X-Writ ", b"HEADER X-Not-Indexed ")),
    );
    jobs.configure(
        blind.addr(),
        &format!("{PLAIN}\ntimeout_secs = 20"),
        Some("backoff_ms = 20\nretries = 1"),
    );
    let text = jobs.ok(jobs.job(
        &user,
        "reseal",
        &["--from-epoch", &old, "--all", "--dry-run"],
    ));
    assert!(
        text.contains("INBOX: 0 message(s) would be resealed"),
        "{text}"
    );
    // ...and retire still refuses, naming every mailbox and count.
    let out = jobs.run_as(&user, &["keys", "retire", &old]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("still in use") && err.contains("INBOX: 2") && err.contains("Archive: 1"),
        "{err}"
    );
    assert!(epoch_file.exists(), "the key is kept");

    // A provider that shows fewer messages than a mailbox holds: nothing
    // can be proven, so nothing is retired.
    let hiding = HostileProvider::start(
        p.imap_addr(),
        Lies::new().response(|r| {
            if r.starts_with(b"* SEARCH") {
                b"* SEARCH\r\n".to_vec()
            } else {
                r.to_vec()
            }
        }),
    );
    jobs.configure(
        hiding.addr(),
        &format!("{PLAIN}\ntimeout_secs = 20"),
        Some("backoff_ms = 20\nretries = 1"),
    );
    let out = jobs.run_as(&user, &["keys", "retire", &old]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("showed 0 message(s) of") && err.contains("says it holds"),
        "{err}"
    );
    assert!(epoch_file.exists(), "the key is kept");

    // A provider that answers NIL for a sealed message's header fields
    // (its marker hidden): not a message without them; nothing retired.
    let nil = HostileProvider::start(
        p.imap_addr(),
        Lies::new().response(|r| header_fields_nil(r, b"X-Writ:")),
    );
    jobs.configure(
        nil.addr(),
        &format!("{PLAIN}\ntimeout_secs = 20"),
        Some("backoff_ms = 20\nretries = 1"),
    );
    let out = jobs.run_as(&user, &["keys", "retire", &old]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("says it holds"), "{err}");
    assert!(epoch_file.exists(), "the key is kept");
}

/// A provider that answers NIL for plaintext messages' header fields
/// (RFC 3501 allows NIL there): unknown is not taken for sealed; the
/// messages are sealed, each once.
#[test]
fn messages_whose_header_fields_come_back_nil_are_sealed_not_skipped() {
    let p = provider();
    let user = p.new_user("nilheaders");
    for n in 1..=3 {
        p.imap_append(&user, "INBOX", &message(n));
    }
    let nil = HostileProvider::start(
        p.imap_addr(),
        Lies::new().response(|r| header_fields_nil(r, b"Content-Type: text/plain")),
    );
    let jobs = Jobs::new(nil.addr());
    let text = jobs.ok(jobs.job(&user, "seal", &["--mailbox", "INBOX"]));
    assert!(text.contains("INBOX: 3 sealed"), "{text}");
    let stored = p.imap_fetch_all(&user, "INBOX");
    assert_eq!(stored.len(), 3);
    let mut opened: Vec<Vec<u8>> = stored.iter().map(|s| jobs.keys.open(s)).collect();
    opened.sort();
    let mut want: Vec<Vec<u8>> = (1..=3).map(message).collect();
    want.sort();
    assert_eq!(opened, want);
}

/// A FETCH response whose `BODY[HEADER.FIELDS (...)]` literal holds
/// `field`, with that literal answered `NIL` instead.
fn header_fields_nil(response: &[u8], field: &[u8]) -> Vec<u8> {
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let Some(item) = find(response, b"BODY[HEADER.FIELDS") else {
        return response.to_vec();
    };
    let Some(open) = find(&response[item..], b"] {").map(|o| item + o + 2) else {
        return response.to_vec();
    };
    let Some(close) = find(&response[open..], b"}\r\n").map(|c| open + c) else {
        return response.to_vec();
    };
    let Some(n) = std::str::from_utf8(&response[open + 1..close])
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return response.to_vec();
    };
    let start = close + 3;
    let Some(literal) = response.get(start..start + n) else {
        return response.to_vec();
    };
    if find(literal, field).is_none() {
        return response.to_vec();
    }
    [&response[..open], b"NIL", &response[start + n..]].concat()
}

#[test]
fn on_gmail_all_mailboxes_are_refused_and_a_named_one_is_sealed() {
    let p = provider();
    let user = p.new_user("gmail");
    p.imap_append(&user, "INBOX", &message(8));
    // The provider offers Gmail's extension, as Gmail does.
    let gmail = HostileProvider::start(
        p.imap_addr(),
        Lies::new().response(|r| {
            if r.starts_with(b"* CAPABILITY ") {
                replace(r, b"\r\n", b" X-GM-EXT-1\r\n")
            } else {
                r.to_vec()
            }
        }),
    );
    let jobs = Jobs::new(gmail.addr());
    let out = jobs.job(&user, "seal", &["--all"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("X-GM-EXT-1") && err.contains("--mailbox \"[Gmail]/All Mail\""),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert_eq!(p.imap_fetch_all(&user, "INBOX"), vec![message(8)]);
    // Counting is harmless, and a mailbox named is the administrator's call.
    let text = jobs.ok(jobs.job(&user, "seal", &["--all", "--dry-run"]));
    assert!(
        text.contains("INBOX: 1 message(s) would be sealed"),
        "{text}"
    );
    let text = jobs.ok(jobs.job(&user, "seal", INBOX));
    assert!(text.contains("INBOX: 1 sealed"), "{text}");
}

/// A plaintext message someone wrote writ's marker and sealed
/// Content-Type on, under an epoch that is not the keyring's: `mailbox
/// seal` seals it like any other (it was taken for sealed and left as
/// plaintext for good); one sealed by this keyring is left alone.
#[test]
fn a_forged_marker_of_an_unknown_epoch_is_sealed_not_skipped() {
    let p = provider();
    let user = p.new_user("forgedmarker");
    let forged =
        b"From: a@elsewhere.test\r\nSubject: forged\r\nX-Writ: v=1; key=0123456789abcdef\r\n\
        MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; \
        protocol=\"application/vnd.writ.sealed\"; boundary=b\r\n\r\n--b\r\n\
        Content-Type: text/plain\r\n\r\nplaintext under a forged marker\r\n--b--\r\n"
            .to_vec();
    p.imap_append(&user, "INBOX", &forged);
    p.imap_append(&user, "INBOX", &message(1));
    let jobs = Jobs::new(p.imap_addr());
    let text = jobs.ok(jobs.job(&user, "seal", INBOX));
    assert!(text.contains("INBOX: 2 sealed"), "{text}");
    let stored = p.imap_fetch_all(&user, "INBOX");
    assert_eq!(stored.len(), 2);
    let mut opened: Vec<Vec<u8>> = stored.iter().map(|s| jobs.keys.open(s)).collect();
    opened.sort();
    let mut want = vec![forged, message(1)];
    want.sort();
    assert_eq!(opened, want);
    // Run again: everything is sealed by this keyring now, nothing moves.
    let text = jobs.ok(jobs.job(&user, "seal", INBOX));
    assert!(text.contains("INBOX: 0 sealed"), "{text}");
}
