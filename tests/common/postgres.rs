//! A throwaway PostgreSQL server (Debian's `postgresql`): `initdb` in a
//! temporary directory, listening on a free loopback port and on a unix
//! socket in that directory, with password (SCRAM) authentication over TCP
//! for the superuser `writ`.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, `initdb`
//! and `postgres` run as the `postgres` user (made by the Debian package;
//! else `nobody`) through `setpriv`, and the directory is handed to that
//! user. As a normal user they run as that user.
//!
//! The server is run by a small `sh` supervisor whose standard input is a
//! pipe held by [`Postgres`]: dropping it, or the test process exiting for
//! whatever reason, closes the pipe, and the supervisor stops the server
//! and removes the directory. [`postgres()`] is one server per test binary;
//! [`Postgres::new_database`] gives each test its own database.
//! [`Postgres::start_on`] starts a server of its own on a given port (a
//! database that comes up after writ did).
//!
//! The server also offers TLS with a certificate of a CA made for the run
//! ([`Postgres::ca_file`]), and the role [`TLS_ONLY_USER`] may log in over
//! TLS only: a connection that works as that role was encrypted.

use std::io::Read as _;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long initdb and start-up may take (initdb alone takes seconds on a
/// loaded machine).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The superuser's password (also in every [`Postgres::url`]).
pub const PASSWORD: &str = "pg-secret-7f3a9c";

/// A superuser (password [`PASSWORD`]) refused over plain TCP.
pub const TLS_ONLY_USER: &str = "tlsonly";

/// The supervisor: initdb, then the server in the background until stdin
/// closes; then a fast shutdown and the directory removed. `$run` runs a
/// command as the server's user.
const SUPERVISOR: &str = r#"
set -u
dir=$1; port=$2; bin=$3; user=$4
run() {
    if [ "$user" = "" ]; then "$@"; else setpriv --reuid="$user" --regid="$user" --clear-groups "$@"; fi
}
cleanup() { rm -rf "$dir"; }
trap cleanup EXIT
run "$bin/initdb" -D "$dir/data" -U writ --pwfile="$dir/pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 --no-sync -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
rm -f "$dir/pwfile"
# TLS, and the role tlsonly that may log in over TLS only (first match wins).
{ printf 'hostssl all tlsonly 127.0.0.1/32 scram-sha-256\nhost all tlsonly 127.0.0.1/32 reject\n'
  cat "$dir/data/pg_hba.conf"; } >"$dir/hba.new" && cat "$dir/hba.new" >"$dir/data/pg_hba.conf"
run "$bin/postgres" -D "$dir/data" -p "$port" -k "$dir" -c listen_addresses=127.0.0.1 \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 \
    -c ssl=on -c ssl_cert_file="$dir/server.crt" -c ssl_key_file="$dir/server.key" \
    >"$dir/server.log" 2>&1 &
pg=$!
echo "started $pg"
# Background jobs get /dev/null as stdin: this reads the harness's pipe.
cat >/dev/null
# Not a signal to $pg: that is a subshell, which ignores SIGINT in the
# background; pg_ctl signals the server itself (immediate: nothing to keep).
run "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || kill -KILL "$pg"
wait "$pg"
"#;

/// A PostgreSQL server for the tests; stopped and removed on drop.
pub struct Postgres {
    pub port: u16,
    pub dir: PathBuf,
    stdin: Option<ChildStdin>,
    child: Child,
    bin: PathBuf,
    next_db: AtomicU32,
    tls: super::tls::TestTls,
}

/// The server shared by all tests of this test binary, started on first
/// use.
pub fn postgres() -> &'static Postgres {
    static PG: OnceLock<Postgres> = OnceLock::new();
    PG.get_or_init(|| Postgres::start().unwrap_or_else(|e| panic!("PostgreSQL: {e}")))
}

/// The newest `/usr/lib/postgresql/N/bin`.
fn bin_dir() -> Result<PathBuf, String> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("/usr/lib/postgresql: {e} (run scripts/install-deps)"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no /usr/lib/postgresql/*/bin/initdb (run scripts/install-deps)".into())
}

/// Who runs the server: nobody else when we are not root; else the
/// `postgres` user, or `nobody`.
fn server_user() -> Option<(String, u32, u32)> {
    if rustix::process::geteuid().is_root() {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        for name in ["postgres", "nobody"] {
            if let Some(line) = passwd.lines().find(|l| l.starts_with(&format!("{name}:"))) {
                let fields: Vec<&str> = line.split(':').collect();
                let uid = fields.get(2).and_then(|u| u.parse().ok());
                let gid = fields.get(3).and_then(|g| g.parse().ok());
                if let (Some(uid), Some(gid)) = (uid, gid) {
                    return Some((name.to_string(), uid, gid));
                }
            }
        }
        panic!("running as root, but there is no postgres or nobody user to run PostgreSQL");
    }
    None
}

impl Postgres {
    /// initdb and start a new server on a free port (a few seconds).
    pub fn start() -> Result<Postgres, String> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("free port: {e}"))?
            .port();
        Postgres::start_on(port)
    }

    /// initdb and start a new server listening on 127.0.0.1:`port`.
    pub fn start_on(port: u16) -> Result<Postgres, String> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let bin = bin_dir()?;
        let dir = PathBuf::from(format!(
            "/tmp/writ-postgres.{}.{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::write(dir.join("pwfile"), format!("{PASSWORD}\n")).unwrap();
        let tls = super::tls::test_tls("writ test PostgreSQL CA");
        std::fs::copy(&tls.cert, dir.join("server.crt")).unwrap();
        std::fs::copy(&tls.key, dir.join("server.key")).unwrap();
        std::fs::set_permissions(
            dir.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let user = server_user();
        if let Some((_, uid, gid)) = &user {
            for name in ["", "pwfile", "server.crt", "server.key"] {
                let path = dir.join(name);
                std::os::unix::fs::chown(&path, Some(*uid), Some(*gid))
                    .map_err(|e| format!("chown {}: {e}", path.display()))?;
            }
        }
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg("writ-postgres")
            .arg(&dir)
            .arg(port.to_string())
            .arg(&bin)
            .arg(user.map(|u| u.0).unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run sh: {e}"))?;
        let stdin = child.stdin.take();
        let mut pg = Postgres {
            port,
            dir,
            stdin,
            child,
            bin,
            next_db: AtomicU32::new(1),
            tls,
        };
        pg.wait_ready()?;
        pg.psql(
            "postgres",
            &format!("CREATE ROLE {TLS_ONLY_USER} LOGIN SUPERUSER PASSWORD '{PASSWORD}'"),
        );
        Ok(pg)
    }

    /// Polls `pg_isready` until the server accepts connections.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!("the server exited ({status}): {err}{}", self.log()));
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("not ready after {START_TIMEOUT:?}{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        format!("\n--- server.log\n{log}")
    }

    /// A URL for `db` as `writ`, with the password.
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://writ:{PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    /// A URL for `db` as [`TLS_ONLY_USER`] with `sslmode=require`.
    pub fn tls_url(&self, db: &str) -> String {
        format!(
            "postgresql://{TLS_ONLY_USER}:{PASSWORD}@127.0.0.1:{}/{db}?sslmode=require",
            self.port
        )
    }

    /// The CA (PEM) that signed the server's certificate.
    pub fn ca_file(&self) -> &Path {
        &self.tls.ca
    }

    /// A URL for `db` as `writ` over the unix socket, without password
    /// (local connections are trusted).
    pub fn socket_url(&self, db: &str) -> String {
        format!(
            "host={} port={} user=writ dbname={db}",
            self.dir.display(),
            self.port
        )
    }

    /// `psql` as `writ` on `db`, SQL from the argument; panics on failure.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self.psql_output(db, sql);
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `psql` as `writ` on `db`, unchecked (tuples only, unaligned).
    pub fn psql_output(&self, db: &str, sql: &str) -> Output {
        Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "writ",
            ])
            .args(["-d", db, "-c", sql])
            .env("PGPASSWORD", PASSWORD)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// A new, empty database of its own for one test.
    pub fn new_database(&self, prefix: &str) -> String {
        let name = format!("{prefix}_{}", self.next_db.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// The directory the server's unix socket is in.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Postgres {
    /// Stops the server and waits until the supervisor removed the
    /// directory.
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
