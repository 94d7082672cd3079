//! A provider that lies: a loopback TCP proxy in front of an IMAP server
//! (normally [`Provider::imap_addr`](super::Provider::imap_addr)) that
//! passes the session through, rewritten by the test's [`Lies`]:
//!
//! - [`Lies::command`]: each line the client sends outside a literal is
//!   replaced by what the function returns (a provider whose search misses
//!   a field: rewrite the criterion); literals pass as they are.
//! - [`Lies::response`]: each response of the server, one line with its
//!   literals, is replaced by what the function returns (any number of
//!   responses, or none: answer `BODY[] NIL`, answer a UID twice, announce a
//!   new UIDVALIDITY, offer another capability).
//! - [`Lies::trickle`]: a response (after rewriting) that the predicate
//!   picks is sent one byte at a time, `pause` apart: a provider that keeps
//!   the connection busy without ever finishing its answer in time.
//!
//! Only plaintext IMAP. The helpers below take apart a `FETCH` response
//! with a whole body (`BODY[] {n}` ending its first line), as Dovecot
//! sends it. Put a [`FaultProxy`](super::FaultProxy) in front to count
//! what the client sent.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::faults::read_response;
use super::imap::literal_announcement;

type Rewrite = Arc<dyn Fn(&[u8]) -> Vec<u8> + Send + Sync>;
type Pick = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// How a [`HostileProvider`] rewrites the session (none: a plain proxy).
#[derive(Clone, Default)]
pub struct Lies {
    command: Option<Rewrite>,
    response: Option<Rewrite>,
    trickle: Option<(Pick, Duration)>,
}

impl Lies {
    pub fn new() -> Lies {
        Lies::default()
    }

    /// Each client line outside a literal (with its CRLF) becomes `f(line)`.
    pub fn command(mut self, f: impl Fn(&[u8]) -> Vec<u8> + Send + Sync + 'static) -> Lies {
        self.command = Some(Arc::new(f));
        self
    }

    /// Each server response (a line with its literals, CRLF included)
    /// becomes `f(response)`.
    pub fn response(mut self, f: impl Fn(&[u8]) -> Vec<u8> + Send + Sync + 'static) -> Lies {
        self.response = Some(Arc::new(f));
        self
    }

    /// A response (as rewritten) for which `pick` is true goes out a byte
    /// at a time, `pause` apart.
    pub fn trickle(
        mut self,
        pick: impl Fn(&[u8]) -> bool + Send + Sync + 'static,
        pause: Duration,
    ) -> Lies {
        self.trickle = Some((Arc::new(pick), pause));
        self
    }
}

/// The proxy; it accepts connections until the test process ends.
pub struct HostileProvider {
    addr: SocketAddr,
}

impl HostileProvider {
    pub fn start(upstream: SocketAddr, lies: Lies) -> HostileProvider {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind hostile provider");
        let addr = listener.local_addr().expect("hostile provider address");
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let lies = lies.clone();
                thread::spawn(move || serve(client, upstream, lies));
            }
        });
        HostileProvider { addr }
    }

    /// Where clients connect (plaintext IMAP on 127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

fn serve(client: TcpStream, upstream: SocketAddr, lies: Lies) {
    let Ok(server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client_r), Ok(server_w), Ok(server_r)) =
        (client.try_clone(), server.try_clone(), server.try_clone())
    else {
        return;
    };
    {
        let lies = lies.clone();
        let client = client.try_clone();
        let server = server.try_clone();
        thread::spawn(move || {
            let _ = client_to_server(BufReader::new(client_r), server_w, &lies);
            if let (Ok(c), Ok(s)) = (client, server) {
                let _ = c.shutdown(Shutdown::Both);
                let _ = s.shutdown(Shutdown::Both);
            }
        });
    }
    let _ = server_to_client(BufReader::new(server_r), &client, &lies);
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
}

fn client_to_server(
    mut reader: BufReader<TcpStream>,
    mut server: TcpStream,
    lies: &Lies,
) -> io::Result<()> {
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let literal = literal_announcement(&line);
        let line = match &lies.command {
            Some(f) => f(&line),
            None => line,
        };
        server.write_all(&line)?;
        if let Some(len) = literal {
            let copied = io::copy(&mut reader.by_ref().take(len as u64), &mut server)?;
            if copied < len as u64 {
                return Ok(());
            }
        }
    }
}

fn server_to_client(
    mut reader: BufReader<TcpStream>,
    mut client: &TcpStream,
    lies: &Lies,
) -> io::Result<()> {
    loop {
        let (response, whole) = read_response(&mut reader)?;
        if !whole {
            return client.write_all(&response);
        }
        let out = match &lies.response {
            Some(f) => f(&response),
            None => response,
        };
        match &lies.trickle {
            Some((pick, pause)) if pick(&out) => {
                for byte in out.chunks(1) {
                    client.write_all(byte)?;
                    thread::sleep(*pause);
                }
            }
            _ => client.write_all(&out)?,
        }
    }
}

/// Where the whole body of a FETCH response is: (start of `BODY[] {n}`,
/// start of the literal, end of the literal). `None` for any other
/// response.
fn whole_body_at(response: &[u8]) -> Option<(usize, usize, usize)> {
    if !response.starts_with(b"* ") {
        return None;
    }
    let line_end = response.iter().position(|&b| b == b'\n')? + 1;
    let len = literal_announcement(&response[..line_end])?;
    let line = &response[..line_end];
    let open = line.iter().rposition(|&b| b == b'{')?;
    let item = open.checked_sub(b"BODY[] ".len())?;
    if &line[item..open] != b"BODY[] " {
        return None;
    }
    let end = line_end + len;
    (end <= response.len()).then_some((item, line_end, end))
}

/// The message of a FETCH response with a whole body (`BODY[] {n}`).
pub fn whole_body(response: &[u8]) -> Option<&[u8]> {
    whole_body_at(response).map(|(_, start, end)| &response[start..end])
}

/// `response` with its `BODY[] {n}` item and literal replaced by `item`
/// (e.g. `b"BODY[] NIL"`); unchanged if it has no whole body.
pub fn replace_whole_body(response: &[u8], item: &[u8]) -> Vec<u8> {
    let Some((at, _, end)) = whole_body_at(response) else {
        return response.to_vec();
    };
    let mut out = response[..at].to_vec();
    out.extend_from_slice(item);
    out.extend_from_slice(&response[end..]);
    out
}

/// A `BODY[]` item with `bytes` as its literal (`origin`: `BODY[]<n>`).
pub fn body_item(origin: Option<u32>, bytes: &[u8]) -> Vec<u8> {
    let origin = origin.map(|o| format!("<{o}>")).unwrap_or_default();
    let mut item = format!("BODY[]{origin} {{{}}}\r\n", bytes.len()).into_bytes();
    item.extend_from_slice(bytes);
    item
}

/// `response` (a FETCH response) with its `UID n` made `UID uid`.
pub fn with_uid(response: &[u8], uid: u32) -> Vec<u8> {
    with_number(response, b"UID ", u64::from(uid))
}

/// `response` (a FETCH response) with its `RFC822.SIZE n` made `size`.
pub fn with_size(response: &[u8], size: u64) -> Vec<u8> {
    with_number(response, b"RFC822.SIZE ", size)
}

/// `response` with the number after the first `item` made `n`.
fn with_number(response: &[u8], item: &[u8], n: u64) -> Vec<u8> {
    let Some(at) = response.windows(item.len()).position(|w| w == item) else {
        return response.to_vec();
    };
    let from = at + item.len();
    let digits = response[from..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let mut out = response[..from].to_vec();
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(&response[from + digits..]);
    out
}

/// The UID a FETCH response names.
pub fn uid_of(response: &[u8]) -> Option<u32> {
    let at = response.windows(4).position(|w| w == b"UID ")?;
    let digits: String = response[at + 4..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .map(|&b| b as char)
        .collect();
    digits.parse().ok()
}
