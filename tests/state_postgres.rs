//! The PostgreSQL state backend against a real PostgreSQL (initdb in a
//! temp dir, tests/common/postgres.rs): schema migrations from empty and
//! the refusal of a newer schema, the audit chain shared by gateways
//! (concurrent appends from two gateways form one valid chain naming
//! both), tampering found by `writ audit verify`, the export checked by the
//! file verifier (and private: 0700 and 0600 under umask 022), the file
//! log imported, and no password in any output.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Command;

use common::cli::Env;
use common::files::copy_dir;
use common::postgres::{PASSWORD, postgres};
use common::writ::WRIT;

/// Writes config/writ.toml naming the database `db` through a URL file
/// (with the password) and this gateway's name.
fn use_postgres(env: &Env, db: &str, gateway: &str) {
    let pg = postgres();
    std::fs::write(env.path("db-url"), format!("{}\n", pg.url(db))).unwrap();
    std::fs::create_dir_all(env.path("config")).unwrap();
    std::fs::write(
        env.path("config/writ.toml"),
        format!(
            "[state]\nbackend = \"postgres\"\nurl_file = \"db-url\"\ngateway = \"{gateway}\"\n"
        ),
    )
    .unwrap();
}

/// An env with a keyring whose chain lives in a new database; returns it
/// and the database name.
fn env_on_postgres(gateway: &str) -> (Env, String) {
    let db = postgres().new_database("writ");
    let env = Env::new();
    use_postgres(&env, &db, gateway);
    env.init_keyring();
    (env, db)
}

fn records(env: &Env) -> Vec<serde_json::Value> {
    serde_json::from_str(&env.ok_text(&["audit", "show", "--json"])).unwrap()
}

#[test]
fn migrates_an_empty_database_and_keeps_the_chain_there() {
    let (env, db) = env_on_postgres("gw-a");
    let pg = postgres();
    assert_eq!(
        pg.psql(
            &db,
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM writ_schema"
        )
        .trim(),
        "1,2,3"
    );
    // The chain is in the database, not in the keyring directory.
    assert!(!env.path("keys/audit.log").exists());
    assert!(env.path("keys/audit.pub").exists());
    env.ok(&["keys", "rotate"]);
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM writ_audit_record")
            .trim(),
        "2"
    );
    let text = env.ok_text(&["audit", "verify"]);
    assert!(text.contains("PostgreSQL 127.0.0.1:"), "{text}");
    assert!(
        text.contains("2 records, chain and signatures OK"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
    let r = records(&env);
    assert_eq!(r[0]["action"], "keys.init");
    assert_eq!(r[1]["action"], "keys.rotate");
    assert!(r.iter().all(|r| r["gateway"] == "gw-a"), "{r:?}");
    // Migrating again (every command connects) changes nothing.
    env.ok(&["audit", "verify"]);
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM writ_schema").trim(), "3");
    // A database at version 1 (an older writ's) is brought to 3.
    pg.psql(
        &db,
        "DROP TABLE writ_disclosure_approval, writ_disclosure_request, writ_job_checkpoint, \
         writ_mailbox_lease; DELETE FROM writ_schema WHERE version >= 2",
    );
    env.ok(&["audit", "verify"]);
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM writ_disclosure_request")
            .trim(),
        "0"
    );
    assert_eq!(
        pg.psql(&db, "SELECT max(version) FROM writ_schema").trim(),
        "3"
    );
    // A second keyring cannot begin another chain in the same database.
    let other = Env::new();
    use_postgres(&other, &db, "gw-b");
    let e = other.fail(common::cli::KEYS_INIT);
    assert!(e.contains("already holds 2 records"), "{e}");
    assert!(!other.path("keys").exists(), "keys init went ahead");
}

#[test]
fn refuses_a_newer_schema() {
    let (env, db) = env_on_postgres("gw-a");
    let pg = postgres();
    pg.psql(
        &db,
        "INSERT INTO writ_schema (version, writ) VALUES (99, 'a future writ')",
    );
    let e = env.fail(&["audit", "verify"]);
    assert!(
        e.contains(&format!(
            "schema version 99, newer than this writ knows ({})",
            writ::state::SCHEMA_VERSION
        )),
        "{e}"
    );
    assert!(e.contains("upgrade writ"), "{e}");
    let e = env.fail(&["keys", "rotate"]);
    assert!(e.contains("newer than this writ knows"), "{e}");
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM writ_audit_record")
            .trim(),
        "1"
    );
}

/// Two gateways (their own pools, their own names) append at once: the
/// appends are serialised into one chain that verifies and names both.
#[test]
fn two_gateways_append_to_one_chain_at_once() {
    const EACH: u64 = 25;
    let (env, db) = env_on_postgres("gw-a");
    let pg = postgres();
    let keys = env.path("keys");
    let config = |gateway: &str| {
        let mut c = writ::config::StateConfig {
            backend: writ::config::Backend::Postgres,
            gateway: Some(gateway.to_string()),
            url_file: Some(env.path("db-url")),
            ..Default::default()
        };
        c.pool_size = 2;
        c
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for gateway in ["gw-a", "gw-b"] {
            let log = std::sync::Arc::new(
                writ::state::AuditLog::open(&config(gateway), &keys)
                    .await
                    .unwrap(),
            );
            // Two writers per gateway: more appenders than connections.
            for writer in 0..2 {
                let log = log.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..EACH / 2 + u64::from(writer == 0) * (EACH % 2) {
                        let params = writ::audit::params([("n", i.into())]);
                        log.append("tester", "test.append", params).await.unwrap();
                    }
                }));
            }
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
    let text = env.ok_text(&["audit", "verify"]);
    let total = 1 + 2 * EACH;
    assert!(
        text.contains(&format!("{total} records, chain and signatures OK")),
        "{text}"
    );
    let r = records(&env);
    let seqs: Vec<u64> = r.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    let gateways: BTreeSet<&str> = r.iter().map(|r| r["gateway"].as_str().unwrap()).collect();
    assert_eq!(gateways, BTreeSet::from(["gw-a", "gw-b"]));
    for gateway in ["gw-a", "gw-b"] {
        let n = pg.psql(
            &db,
            &format!("SELECT count(*) FROM writ_audit_record WHERE gateway = '{gateway}'"),
        );
        let expected = EACH + u64::from(gateway == "gw-a");
        assert_eq!(n.trim(), expected.to_string(), "{gateway}");
    }
}

/// Two `writ` processes, one per gateway (each with its copy of the
/// keyring directory), rotate at the same time: one chain naming both.
#[test]
fn two_gateway_processes_record_into_one_chain() {
    let (a, db) = env_on_postgres("gw-a");
    let b = Env::new();
    copy_dir(&a.path("keys"), &b.path("keys"));
    use_postgres(&b, &db, "gw-b");
    let children: Vec<_> = [&a, &b]
        .into_iter()
        .map(|env| {
            env.command(&["audit", "init", "--new-chain"])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // The chain has records: neither may begin another.
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("holds records"));
    }
    // Each gateway rotates its own copy, both at once, twice.
    for _ in 0..2 {
        let rotations: Vec<_> = [&a, &b]
            .into_iter()
            .map(|env| {
                env.command(&["keys", "rotate"])
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut child in rotations {
            assert!(child.wait().unwrap().success());
        }
    }
    let text = b.ok_text(&["audit", "verify"]);
    assert!(
        text.contains("5 records, chain and signatures OK"),
        "{text}"
    );
    let gateways: Vec<String> = records(&a)
        .iter()
        .map(|r| r["gateway"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(gateways.iter().filter(|g| *g == "gw-a").count(), 3);
    assert_eq!(gateways.iter().filter(|g| *g == "gw-b").count(), 2);
}

#[test]
fn verify_finds_a_tampered_row() {
    let (env, db) = env_on_postgres("gw-a");
    env.ok(&["keys", "rotate", "--operator", "alice"]);
    env.ok(&["keys", "rotate"]);
    let pg = postgres();
    let good = env.ok_text(&["audit", "verify"]);
    let head = good.lines().find_map(|l| l.strip_prefix("head: ")).unwrap();
    // An altered record.
    pg.psql(
        &db,
        "UPDATE writ_audit_record SET line = replace(line, 'alice', 'mallory') WHERE seq = 2",
    );
    let e = env.fail(&["audit", "verify"]);
    assert!(e.contains("record 2: signature does not match"), "{e}");
    pg.psql(
        &db,
        "UPDATE writ_audit_record SET line = replace(line, 'mallory', 'alice') WHERE seq = 2",
    );
    env.ok(&["audit", "verify", "--head", head]);
    // The gateway column changed (the signed record still says gw-a).
    pg.psql(
        &db,
        "UPDATE writ_audit_record SET gateway = 'gw-x' WHERE seq = 3",
    );
    let e = env.fail(&["audit", "verify"]);
    assert!(e.contains("record 3: the row's gateway differs"), "{e}");
    pg.psql(
        &db,
        "UPDATE writ_audit_record SET gateway = 'gw-a' WHERE seq = 3",
    );
    // A deleted record in the middle.
    let saved = pg.psql(&db, "SELECT line FROM writ_audit_record WHERE seq = 2");
    pg.psql(&db, "DELETE FROM writ_audit_record WHERE seq = 2");
    let e = env.fail(&["audit", "verify"]);
    assert!(e.contains("record 2: holds record 3"), "{e}");
    // The tail cut, head row left: the head names a missing record.
    pg.psql(&db, "DELETE FROM writ_audit_record WHERE seq >= 2");
    let e = env.fail(&["audit", "verify"]);
    assert!(e.contains("record 2: missing"), "{e}");
    assert!(!saved.is_empty());
    // The head row's columns rewritten to match the cut (its signed line
    // cannot be): nothing is signed over the cut, which so never
    // verifies again.
    pg.psql(
        &db,
        "UPDATE writ_audit_head SET records = 1, last = (SELECT encode(sha256(convert_to(line, 'UTF8')), 'hex') FROM writ_audit_record WHERE seq = 1)",
    );
    let e = env.fail(&["keys", "rotate"]);
    assert!(e.contains("does not end where its signed head says"), "{e}");
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM writ_audit_record")
            .trim(),
        "1"
    );
    // Everything deleted, the head too: a keyring without its chain.
    pg.psql(
        &db,
        "DELETE FROM writ_audit_record; UPDATE writ_audit_head SET records = 0, line = NULL",
    );
    let e = env.fail(&["audit", "verify"]);
    assert!(
        e.contains("the audit chain in PostgreSQL") && e.contains("is empty"),
        "{e}"
    );
    let e = env.fail(&["keys", "rotate"]);
    assert!(e.contains("is empty"), "{e}");
    // A noted head from before still catches the rewrite.
    let e = env.fail(&["audit", "verify", "--head", head]);
    assert!(e.contains("is empty"), "{e}");
}

#[test]
fn export_verifies_with_the_file_verifier() {
    let (env, db) = env_on_postgres("gw-a");
    env.ok(&["keys", "rotate"]);
    let verified = env.ok_text(&["audit", "verify"]);
    let head = verified.lines().find(|l| l.starts_with("head: ")).unwrap();
    let text = env.ok_text(&["audit", "export", "--out", "exported"]);
    assert!(text.contains("exported 2 records"), "{text}");
    assert!(text.contains(head), "{text}\n{verified}");
    // The file backend's verifier, in a directory without a database.
    let auditor = Env::new();
    copy_dir(&env.path("exported"), &auditor.path("keys"));
    let text = auditor.ok_text(&["audit", "verify"]);
    assert!(
        text.contains("keys/audit.log: 2 records, chain and signatures OK"),
        "{text}"
    );
    assert!(text.contains(head), "{text}");
    let v = writ::audit::verify(&env.path("exported"), None).unwrap();
    assert_eq!(v.records, 2);
    // An existing directory is not overwritten.
    let e = env.fail(&["audit", "export", "--out", "exported"]);
    assert!(e.contains("exists"), "{e}");
    // A tampered chain is not exported.
    postgres().psql(
        &db,
        "UPDATE writ_audit_record SET line = replace(line, 'keys.rotate', 'keys.rotatE')",
    );
    let e = env.fail(&["audit", "export", "--out", "tampered"]);
    assert!(e.contains("record 2: signature does not match"), "{e}");
    assert!(!env.path("tampered").exists());
}

#[test]
fn the_export_is_private_whatever_the_umask() {
    let (env, _db) = env_on_postgres("gw-a");
    env.ok(&["keys", "rotate"]);
    // Under umask 022 a plain create gives 0755 and 0644.
    let out = Command::new("sh")
        .arg("-c")
        .arg("umask 022 && exec \"$0\" \"$@\"")
        .arg(WRIT)
        .args(["audit", "export", "--out", "exported"])
        .current_dir(env.dir())
        .env_remove("WRIT_PASSPHRASE_FILE")
        .env("USER", "tester")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = |rel: &str| {
        let mode = std::fs::metadata(env.path(rel)).unwrap().mode();
        format!("{:o}", mode & 0o777)
    };
    assert_eq!(mode("exported"), "700", "the directory");
    for file in ["audit.log", "audit.head", "audit.pub"] {
        assert_eq!(mode(&format!("exported/{file}")), "600", "{file}");
    }
}

#[test]
fn import_moves_the_file_log_into_the_shared_chain() {
    let env = Env::new();
    env.init_keyring();
    env.ok(&["keys", "rotate"]);
    let before = env.ok_text(&["audit", "verify"]);
    let head = before.lines().find(|l| l.starts_with("head: ")).unwrap();
    let db = postgres().new_database("writ");
    use_postgres(&env, &db, "gw-a");
    // An empty chain beside a keyring: nothing is recorded until imported.
    let e = env.fail(&["keys", "rotate"]);
    assert!(e.contains("writ audit import"), "{e}");
    let text = env.ok_text(&["audit", "import"]);
    assert!(text.contains("imported 2 records"), "{text}");
    assert!(text.contains(head), "{text}");
    env.ok(&["keys", "rotate"]);
    let text = env.ok_text(&["audit", "verify"]);
    assert!(
        text.contains("3 records, chain and signatures OK"),
        "{text}"
    );
    let r = records(&env);
    assert_eq!(r[0]["gateway"], serde_json::Value::Null);
    assert_eq!(r[2]["gateway"], "gw-a");
    let e = env.fail(&["audit", "import"]);
    assert!(e.contains("already holds 3 records"), "{e}");
    // The file log is closed: a config without [state] cannot fork the
    // chain there, out of the auditors' sight.
    assert!(!env.path("keys/audit.log").exists());
    assert!(env.path("keys/audit.log.imported").exists());
    std::fs::write(env.path("config/writ.toml"), "").unwrap();
    let e = env.fail(&["keys", "rotate"]);
    assert!(
        e.contains(
            "audit.log.imported says this keyring's audit chain was imported into PostgreSQL"
        ),
        "{e}"
    );
    assert!(!env.path("keys/audit.log").exists());
}

/// The password reaches no output, whatever fails; the config file cannot
/// hold it; a systemd credential can.
#[test]
fn the_password_stays_out_of_config_and_errors() {
    let pg = postgres();
    let db = pg.new_database("writ");
    let env = Env::new();
    std::fs::create_dir_all(env.path("config")).unwrap();
    let config = |text: &str| std::fs::write(env.path("config/writ.toml"), text).unwrap();
    config(&format!(
        "[state]\nbackend = \"postgres\"\nurl = \"{}\"\n",
        pg.url(&db)
    ));
    let e = env.fail(&["audit", "verify"]);
    assert!(
        e.contains("holds a password") && !e.contains(PASSWORD),
        "{e}"
    );
    // A wrong password, from a URL file.
    let wrong = pg.url(&db).replace(PASSWORD, "not-the-password-41");
    std::fs::write(env.path("db-url"), &wrong).unwrap();
    config("[state]\nbackend = \"postgres\"\nurl_file = \"db-url\"\n");
    let e = env.fail(&["audit", "verify"]);
    assert!(e.contains("password authentication failed"), "{e}");
    assert!(
        !e.contains("not-the-password-41") && !e.contains(PASSWORD),
        "{e}"
    );
    // Garbage in the URL file is not echoed.
    std::fs::write(
        env.path("db-url"),
        format!("postgresql://w:{PASSWORD}@h:port/x"),
    )
    .unwrap();
    let e = env.fail(&["audit", "verify"]);
    assert!(
        e.contains("not a connection URL") && !e.contains(PASSWORD),
        "{e}"
    );
    // A systemd credential.
    config("[state]\nbackend = \"postgres\"\nurl_credential = \"writ-db\"\n");
    let e = env.fail(&["audit", "verify"]);
    assert!(e.contains("CREDENTIALS_DIRECTORY is not set"), "{e}");
    std::fs::create_dir(env.path("creds")).unwrap();
    std::fs::write(env.path("creds/writ-db"), pg.url(&db)).unwrap();
    let out = env
        .command(common::cli::KEYS_INIT)
        .env("CREDENTIALS_DIRECTORY", env.path("creds"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        pg.psql(&db, "SELECT count(*) FROM writ_audit_record")
            .trim(),
        "1"
    );
    // Over the unix socket, without password at all (trusted locally).
    config(&format!(
        "[state]\nbackend = \"postgres\"\nurl = \"{}\"\n",
        pg.socket_url(&db)
    ));
    let text = env.ok_text(&["audit", "verify"]);
    assert!(
        text.contains("1 records, chain and signatures OK"),
        "{text}"
    );
    assert!(
        text.contains(&pg.socket_dir().display().to_string()),
        "{text}"
    );
    assert!(!Path::new(&env.path("keys/audit.log")).exists());
}

/// Approver `name` (key `name.key`, passphrase file `name.pw`) made in
/// `env`; returns the public key line.
fn approver(env: &Env, name: &str) -> String {
    std::fs::write(env.path(&format!("{name}.pw")), format!("{name} secret\n")).unwrap();
    let (key, pw) = (format!("{name}.key"), format!("{name}.pw"));
    env.ok(&[
        "approver",
        "init",
        "--out",
        &key,
        "--name",
        name,
        "--work-factor",
        "10",
        "--passphrase-file",
        &pw,
    ]);
    let public = std::fs::read_to_string(env.path(&format!("{key}.pub"))).unwrap();
    public.lines().last().unwrap().to_string()
}

/// Gateways a and b sharing database `db`, quorum 2 of legal and dpo
/// (board is not an approver); on a: a sealed message s1.eml, the request
/// for case C-1 (stored), and approvals legal/dpo/board.approval of it,
/// copied to b.
struct TwoGateways {
    a: Env,
    b: Env,
    db: String,
    /// The request as `writ disclose request` printed it.
    request: Vec<u8>,
}

fn two_gateways_with_a_request() -> TwoGateways {
    let (a, db) = env_on_postgres("gw-a");
    let pg = postgres();
    let keys: Vec<String> = ["legal", "dpo", "board"]
        .iter()
        .map(|n| approver(&a, n))
        .collect();
    let config = |env: &Env, gateway: &str| {
        std::fs::write(
            env.path("config/writ.toml"),
            format!(
                "[state]\nbackend = \"postgres\"\nurl_file = \"db-url\"\ngateway = \"{gateway}\"\n\
                 [disclosure]\nquorum = 2\napprovers = [\n  {{ name = \"legal\", public_key = \"{}\" }},\n  \
                 {{ name = \"dpo\", public_key = \"{}\" }},\n]\n",
                keys[0], keys[1]
            ),
        )
        .unwrap();
    };
    config(&a, "gw-a");
    std::fs::write(
        a.path("m1.eml"),
        "From: ann@example.org\r\nSubject: s\r\n\r\nbody\r\n",
    )
    .unwrap();
    let sealed = a.ok(&["seal", "m1.eml"]).stdout;
    std::fs::write(a.path("s1.eml"), &sealed).unwrap();
    let request = a.ok(&[
        "disclose",
        "request",
        "--case",
        "C-1",
        "--from-file",
        "s1.eml",
    ]);
    std::fs::write(a.path("req.json"), &request.stdout).unwrap();
    assert!(String::from_utf8_lossy(&request.stderr).contains("stored in PostgreSQL"));
    assert_eq!(
        pg.psql(&db, "SELECT case_ref FROM writ_disclosure_request")
            .trim(),
        "C-1"
    );
    for name in ["legal", "dpo", "board"] {
        a.ok(&[
            "approver",
            "approve",
            "--key",
            &format!("{name}.key"),
            "--case",
            "C-1",
            "--request",
            "req.json",
            "--out",
            &format!("{name}.approval"),
            "--passphrase-file",
            &format!("{name}.pw"),
        ]);
    }
    // Gateway b: its copy of the keyring, the same database.
    let b = Env::new();
    copy_dir(&a.path("keys"), &b.path("keys"));
    std::fs::create_dir(b.path("config")).unwrap();
    std::fs::copy(a.path("db-url"), b.path("db-url")).unwrap();
    config(&b, "gw-b");
    for file in ["s1.eml", "legal.approval", "dpo.approval", "board.approval"] {
        std::fs::copy(a.path(file), b.path(file)).unwrap();
    }
    TwoGateways {
        a,
        b,
        db,
        request: request.stdout,
    }
}

/// `writ disclose approval FILE` on each env at once.
fn submit_at_once(envs: [&Env; 2], file: &str) -> Vec<std::process::Output> {
    let children: Vec<_> = envs
        .into_iter()
        .map(|env| {
            env.command(&["disclose", "approval", file])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

/// A request made on one gateway is approved into the database and
/// disclosed on another without approval files; the quorum still holds,
/// and approvals that do not belong are refused.
#[test]
fn disclosure_approved_in_the_database_is_made_on_another_gateway() {
    let TwoGateways { a, b, db, request } = two_gateways_with_a_request();
    let pg = postgres();
    let disclose = [
        "disclose",
        "--case",
        "C-1",
        "--out",
        "bundle",
        "--passphrase-file",
        "pw",
        "--from-file",
        "s1.eml",
    ];
    // The same approval handed in on both gateways at once: stored once.
    let outputs = submit_at_once([&a, &b], "legal.approval");
    let stored: Vec<_> = outputs.iter().filter(|o| o.status.success()).collect();
    assert_eq!(stored.len(), 1, "{outputs:?}");
    let text = String::from_utf8_lossy(&stored[0].stdout);
    assert!(text.contains("legal approves case \"C-1\""), "{text}");
    let refused = outputs.iter().find(|o| !o.status.success()).unwrap();
    let e = String::from_utf8_lossy(&refused.stderr);
    assert!(e.contains("legal already approved this request"), "{e}");
    // One approval stored, quorum 2: refused, nothing disclosed.
    let e = b.fail(&disclose);
    assert!(e.contains("legal"), "{e}");
    assert!(!b.path("bundle").exists());
    // Refused: again, not an approver of the config, garbage.
    let e = b.fail(&["disclose", "approval", "legal.approval"]);
    assert!(e.contains("legal already approved this request"), "{e}");
    let e = b.fail(&["disclose", "approval", "board.approval"]);
    assert!(e.contains("not an approver"), "{e}");
    std::fs::write(b.path("junk.approval"), "{}").unwrap();
    let e = b.fail(&["disclose", "approval", "junk.approval"]);
    assert!(e.contains("not a writ approval file"), "{e}");
    // An approval of a request never stored here.
    let mut other = request.clone();
    let at = other.windows(3).position(|w| w == b"C-1").unwrap();
    other[at + 2] = b'2';
    std::fs::write(a.path("req2.json"), &other).unwrap();
    a.ok(&[
        "approver",
        "approve",
        "--key",
        "dpo.key",
        "--case",
        "C-2",
        "--request",
        "req2.json",
        "--out",
        "dpo2.approval",
        "--passphrase-file",
        "dpo.pw",
    ]);
    std::fs::copy(a.path("dpo2.approval"), b.path("dpo2.approval")).unwrap();
    let e = b.fail(&["disclose", "approval", "dpo2.approval"]);
    assert!(e.contains("which is not stored here"), "{e}");
    // The second approval, submitted on gateway a: b discloses.
    a.ok(&["disclose", "approval", "dpo.approval"]);
    let text = b.ok_text(&disclose);
    assert!(text.contains("disclosed 1 message(s)"), "{text}");
    assert!(b.path("bundle/approvals/2.json").exists());
    let records = records(&b);
    let last = records.last().unwrap();
    assert_eq!(last["action"], "disclose");
    assert_eq!(last["gateway"], "gw-b");
    assert_eq!(
        pg.psql(
            &db,
            "SELECT count(*), count(*) FILTER (WHERE gateway = 'gw-a') FROM writ_disclosure_approval"
        )
        .trim(),
        // dpo's was handed in on gw-a, legal's on whichever came first.
        if outputs[0].status.success() {
            "2|2"
        } else {
            "2|1"
        }
    );
}

/// `sslmode=require`: TLS verified against ca_file (the role used may log
/// in over TLS only); a server certificate from another CA is refused;
/// without sslmode=require writ does not use TLS.
#[test]
fn tls_when_required_and_verified() {
    let pg = postgres();
    let db = pg.new_database("writ");
    let env = Env::new();
    std::fs::create_dir_all(env.path("config")).unwrap();
    std::fs::write(env.path("db-url"), pg.tls_url(&db)).unwrap();
    let ca = pg.ca_file().display().to_string();
    let config = |extra: &str| {
        std::fs::write(
            env.path("config/writ.toml"),
            format!("[state]\nbackend = \"postgres\"\nurl_file = \"db-url\"\n{extra}"),
        )
        .unwrap()
    };
    // Not the server's CA: the system roots.
    config("");
    let e = env.fail(&["audit", "verify"]);
    assert!(
        e.contains("cannot use PostgreSQL") && e.contains("certificate"),
        "{e}"
    );
    assert!(!e.contains(common::postgres::PASSWORD), "{e}");
    config(&format!("ca_file = \"{ca}\"\n"));
    env.init_keyring();
    let text = env.ok_text(&["audit", "verify"]);
    assert!(
        text.contains("1 records, chain and signatures OK"),
        "{text}"
    );
    // The same role without sslmode=require: plain, so refused by the
    // server (proving the connection above was TLS).
    std::fs::write(
        env.path("db-url"),
        pg.tls_url(&db).replace("?sslmode=require", ""),
    )
    .unwrap();
    let e = env.fail(&["audit", "verify"]);
    assert!(
        e.contains("no encryption") || e.contains("pg_hba.conf"),
        "{e}"
    );
}
