//! A real HAProxy (Debian's) in TCP mode on loopback, in front of one or
//! more `writ serve` listeners, killed when dropped.
//!
//! A backend with several servers balances round robin, checks each
//! server every 200 ms (with a PROXY header when the servers expect one,
//! so a check is not a hostile connection to writ) and sends a new
//! connection to another server when one refuses it (`option redispatch`),
//! as an organisation's balancer in front of several gateways would.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::writ::free_port;

pub struct Haproxy {
    child: Child,
    _dir: tempfile::TempDir,
    frontends: Vec<(String, SocketAddr)>,
}

impl Haproxy {
    /// One frontend per (name, backend address, server option such as
    /// `send-proxy` or `send-proxy-v2`).
    pub fn start(routes: &[(&str, SocketAddr, &str)]) -> Haproxy {
        let balanced: Vec<(&str, Vec<SocketAddr>, &str)> = routes
            .iter()
            .map(|&(name, backend, option)| (name, vec![backend], option))
            .collect();
        Haproxy::start_balanced(&balanced)
    }

    /// One frontend per (name, servers, server option), balancing over
    /// the servers.
    pub fn start_balanced(routes: &[(&str, Vec<SocketAddr>, &str)]) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = String::from(
            "global\n    maxconn 512\n\
             defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n\
             \x20   timeout server 60s\n    retries 3\n    option redispatch\n",
        );
        let mut frontends = Vec::new();
        for (name, servers, option) in routes {
            let port = free_port();
            cfg.push_str(&format!(
                "frontend {name}\n    bind 127.0.0.1:{port}\n    default_backend {name}_b\n\
                 backend {name}_b\n    balance roundrobin\n"
            ));
            for (i, server) in servers.iter().enumerate() {
                let check = if servers.len() > 1 {
                    let proxy = if option.contains("send-proxy") {
                        " check-send-proxy"
                    } else {
                        ""
                    };
                    format!(" check inter 200ms fall 1 rise 2{proxy}")
                } else {
                    String::new()
                };
                cfg.push_str(&format!("    server g{i} {server} {option}{check}\n"));
            }
            frontends.push((name.to_string(), SocketAddr::from(([127, 0, 0, 1], port))));
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, &cfg).unwrap();
        let check = Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output();
        let check = check.expect("haproxy is installed (scripts/install-deps)");
        assert!(check.status.success(), "haproxy -c: {check:?}\n{cfg}");
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy");
        let h = Haproxy {
            child,
            _dir: dir,
            frontends,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        for (_, addr) in &h.frontends {
            while TcpStream::connect(addr).is_err() {
                assert!(Instant::now() < deadline, "haproxy did not bind {addr}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        h
    }

    pub fn frontend(&self, name: &str) -> SocketAddr {
        self.frontends.iter().find(|(n, _)| n == name).unwrap().1
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
