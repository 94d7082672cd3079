//! A second, minimal Postfix: an organisation's MTA that accepts mail from
//! loopback on its own SMTP port and sends everything to one relayhost
//! (`relayhost = [127.0.0.1]:PORT`), as a real MTA configured with writ as
//! its smart host does. It can also refuse chosen recipients at RCPT time
//! (an access map), which makes it a stand-in for a provider that knows its
//! users: put it in front of the harness provider.
//!
//! It runs under a small Python supervisor (a child subreaper, like
//! `scripts/provider`) whose standard input is a pipe held by this process:
//! when the test process exits, the pipe closes and Postfix is stopped.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::process::collect_output;
use super::smtp::Smtp;
use super::writ::free_port;

const START_TIMEOUT: Duration = Duration::from_secs(20);
const START_ATTEMPTS: usize = 3;

/// Starts Postfix (after creating its queue), keeps it running until
/// standard input closes, then stops it and reaps whatever it leaves.
const SUPERVISOR: &str = r#"
import ctypes, os, signal, subprocess, sys, threading, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
conf, queue, logpath = sys.argv[1:4]
log = open(logpath, "ab", buffering=0)
subprocess.run(["postfix", "-c", conf, "post-install", "create-missing"],
               stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=True)
open(os.path.join(queue, "quick-start"), "w").close()
master = subprocess.Popen(["postfix", "-c", conf, "start-fg"],
                          stdin=subprocess.DEVNULL, stdout=log, stderr=log)
stopping = False
def watch():
    master.wait()
    if not stopping:
        print("mta: postfix exited (status %s)" % master.returncode, file=sys.stderr, flush=True)
        os._exit(1)
threading.Thread(target=watch, daemon=True).start()
print("mta: started", file=sys.stderr, flush=True)
sys.stdin.buffer.read()
stopping = True
try:
    pid = int(open(os.path.join(queue, "pid/master.pid")).read().strip())
    os.kill(pid, signal.SIGTERM)
except Exception:
    pass
try:
    master.wait(timeout=10)
except Exception:
    master.kill()
deadline = time.time() + 10
while time.time() < deadline:
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        break
    if pid == 0:
        time.sleep(0.05)
"#;

/// What the MTA does.
#[derive(Clone, Debug)]
pub struct MtaConfig {
    /// Everything accepted goes here (`relayhost = [127.0.0.1]:PORT`).
    pub relayhost: SocketAddr,
    /// Recipients refused at RCPT, with the access-map action (e.g.
    /// `550 5.1.1 no such user here`).
    pub reject: Vec<(String, String)>,
    /// Listen on this port (`None`: a free one).
    pub port: Option<u16>,
    /// Opportunistic STARTTLS toward the relayhost
    /// (`smtp_tls_security_level = may`) instead of none.
    pub tls: bool,
    /// More `main.cf` lines (later settings override earlier ones).
    pub main_cf: String,
}

impl MtaConfig {
    pub fn relaying_to(relayhost: SocketAddr) -> MtaConfig {
        MtaConfig {
            relayhost,
            reject: Vec::new(),
            port: None,
            tls: false,
            main_cf: String::new(),
        }
    }
}

/// A running MTA; stopped when dropped.
pub struct Mta {
    /// Postfix smtpd on 127.0.0.1: accepts mail for any domain from loopback.
    pub smtp_port: u16,
    /// The instance directory (config, queue, `postfix.log`).
    pub dir: PathBuf,
    /// The banner's instance name, also the `myhostname` suffix.
    pub instance: String,
    _tmp: tempfile::TempDir,
    stdin: Option<ChildStdin>,
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Mta {
    #[track_caller]
    pub fn start(cfg: &MtaConfig) -> Mta {
        let mut failures = String::new();
        for attempt in 1..=START_ATTEMPTS {
            match Mta::try_start(cfg) {
                Ok(m) => return m,
                Err(e) => {
                    let _ = writeln!(failures, "--- attempt {attempt}:\n{e}");
                }
            }
        }
        panic!("could not start the test MTA (Postfix):\n{failures}");
    }

    fn try_start(cfg: &MtaConfig) -> Result<Mta, String> {
        // Under /tmp: Postfix processes run as `postfix` and must reach it.
        let tmp = tempfile::Builder::new()
            .prefix("writ-mta.")
            .tempdir_in("/tmp")
            .map_err(|e| e.to_string())?;
        let dir = tmp.path().to_path_buf();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let instance = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("mta")
            .replace('.', "-");
        let port = cfg.port.unwrap_or_else(free_port);
        let conf = dir.join("conf");
        let queue = dir.join("queue");
        let data = dir.join("data");
        for d in [&conf, &queue, &data] {
            std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
        }
        let chown = Command::new("chown")
            .arg("postfix")
            .arg(&data)
            .status()
            .map_err(|e| e.to_string())?;
        if !chown.success() {
            return Err("chown postfix of the data directory failed".into());
        }
        let mut access = String::new();
        for (address, action) in &cfg.reject {
            let _ = writeln!(access, "{address} {action}");
        }
        std::fs::write(conf.join("recipient_access"), access).map_err(|e| e.to_string())?;
        let main_cf = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {queue}\n\
             data_directory = {data}\n\
             mail_owner = postfix\n\
             setgid_group = postdrop\n\
             maillog_file = /dev/stdout\n\
             myhostname = {instance}.mta.test\n\
             mydomain = mta.test\n\
             inet_interfaces = 127.0.0.1\n\
             inet_protocols = ipv4\n\
             mynetworks = 127.0.0.0/8\n\
             mydestination =\n\
             local_recipient_maps =\n\
             alias_maps =\n\
             alias_database =\n\
             relay_domains =\n\
             relayhost = [127.0.0.1]:{relay_port}\n\
             smtpd_relay_restrictions = permit_mynetworks, reject\n\
             smtpd_recipient_restrictions = check_recipient_access texthash:{conf}/recipient_access\n\
             smtp_tls_security_level = {tls}\n\
             smtp_tls_loglevel = 1\n\
             local_header_rewrite_clients =\n\
             disable_mime_output_conversion = yes\n\
             message_size_limit = 0\n\
             smtpd_error_sleep_time = 0\n\
             queue_run_delay = 1s\n\
             minimal_backoff_time = 1s\n\
             maximal_backoff_time = 2s\n\
             biff = no\n\
             smtpd_banner = $myhostname ESMTP writ test MTA {instance}\n",
            queue = queue.display(),
            data = data.display(),
            conf = conf.display(),
            relay_port = cfg.relayhost.port(),
            tls = if cfg.tls { "may" } else { "none" },
        );
        if cfg.relayhost.ip() != Ipv4Addr::LOCALHOST {
            return Err("the MTA relays to loopback only".into());
        }
        let master_cf = format!(
            "127.0.0.1:{port} inet n - n - - smtpd\n\
             pickup     unix  n - n 60    1 pickup\n\
             cleanup    unix  n - n -     0 cleanup\n\
             qmgr       unix  n - n 300   1 qmgr\n\
             rewrite    unix  - - n -     - trivial-rewrite\n\
             bounce     unix  - - n -     0 bounce\n\
             defer      unix  - - n -     0 bounce\n\
             trace      unix  - - n -     0 bounce\n\
             verify     unix  - - n -     1 verify\n\
             flush      unix  n - n 1000? 0 flush\n\
             proxymap   unix  - - n -     - proxymap\n\
             proxywrite unix  - - n -     1 proxymap\n\
             showq      unix  n - n -     - showq\n\
             error      unix  - - n -     - error\n\
             retry      unix  - - n -     - error\n\
             discard    unix  - - n -     - discard\n\
             tlsmgr     unix  - - n 1000? 1 tlsmgr\n\
             smtp       unix  - - n -     - smtp\n\
             relay      unix  - - n -     - smtp\n\
             anvil      unix  - - n -     1 anvil\n\
             scache     unix  - - n -     1 scache\n\
             postlog    unix-dgram n - n - 1 postlogd\n"
        );
        let main_cf = format!("{main_cf}{}\n", cfg.main_cf);
        std::fs::write(conf.join("main.cf"), main_cf).map_err(|e| e.to_string())?;
        std::fs::write(conf.join("master.cf"), master_cf).map_err(|e| e.to_string())?;
        // Postfix waits until its config files look settled (mtime in the
        // past): backdate them.
        let touched = Command::new("touch")
            .args(["-d", "-1 minute"])
            .arg(conf.join("main.cf"))
            .arg(conf.join("master.cf"))
            .status()
            .map_err(|e| e.to_string())?;
        if !touched.success() {
            return Err("touch -d failed".into());
        }
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(SUPERVISOR)
            .arg(&conf)
            .arg(&queue)
            .arg(dir.join("postfix.log"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run python3: {e}"))?;
        let output = collect_output(&mut child);
        let mut mta = Mta {
            smtp_port: port,
            dir,
            instance,
            _tmp: tmp,
            stdin: child.stdin.take(),
            child,
            output,
        };
        match mta.wait_ready() {
            Ok(()) => Ok(mta),
            Err(e) => Err(format!("{e}\n{}", mta.diagnostics())),
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("the MTA supervisor exited early ({status})"));
            }
            let last = match Smtp::connect(self.smtp_addr()) {
                Ok(s) if s.greeting.code == 220 && s.greeting.text().contains(&self.instance) => {
                    s.quit();
                    return Ok(());
                }
                Ok(s) => format!("greeting {:?}", s.greeting),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "MTA not ready after {START_TIMEOUT:?}; last check: {last}"
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn smtp_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.smtp_port))
    }

    /// The tail of the Postfix log and the supervisor's output.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        let log = std::fs::read(self.dir.join("postfix.log")).unwrap_or_default();
        let log = String::from_utf8_lossy(&log);
        let lines: Vec<&str> = log.lines().collect();
        let _ = writeln!(out, "--- tail of the MTA's postfix.log");
        for l in &lines[lines.len().saturating_sub(40)..] {
            let _ = writeln!(out, "{l}");
        }
        let sup = self.output.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "--- MTA supervisor output");
        out.push_str(&String::from_utf8_lossy(&sup));
        out
    }
}

impl Drop for Mta {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
