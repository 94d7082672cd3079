//! A small blocking SMTP client for tests, on `std::net::TcpStream`.
//!
//! Enough to submit mail to a real server (or writ's relay) and to look at
//! every reply along the way: EHLO, MAIL, RCPT, DATA with dot-stuffing, QUIT.
//! [`Client`] is the same on any connection: plain, after STARTTLS, or TLS
//! from the first byte (for writ's submission listeners).

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use super::imap::IO_TIMEOUT;

/// One (possibly multi-line) SMTP reply.
#[derive(Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The text of each line, without the code and separator.
    pub lines: Vec<String>,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// All lines joined by newlines.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.lines.join(" / "))
    }
}

/// One SMTP connection.
pub struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// The 220 greeting.
    pub greeting: Reply,
}

impl Smtp {
    /// Connects and reads the greeting.
    pub fn connect(addr: SocketAddr) -> io::Result<Smtp> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let writer = stream.try_clone()?;
        let mut smtp = Smtp {
            reader: BufReader::new(stream),
            writer,
            greeting: Reply {
                code: 0,
                lines: Vec::new(),
            },
        };
        smtp.greeting = smtp.read_reply()?;
        Ok(smtp)
    }

    /// Sends one command line (CRLF is added) and reads the reply.
    pub fn command(&mut self, line: &str) -> io::Result<Reply> {
        self.writer.write_all(format!("{line}\r\n").as_bytes())?;
        self.read_reply()
    }

    /// `MAIL FROM:<from>`, `RCPT TO:<to>` and `DATA`, expecting 250, 250
    /// and 354: the message goes next ([`Smtp::send_data`]).
    #[track_caller]
    pub fn begin_data(&mut self, from: &str, to: &str) {
        let mail = self.command(&format!("MAIL FROM:<{from}>")).unwrap();
        assert_eq!(mail.code, 250, "MAIL FROM:<{from}>: {mail:?}");
        let rcpt = self.command(&format!("RCPT TO:<{to}>")).unwrap();
        assert_eq!(rcpt.code, 250, "RCPT TO:<{to}>: {rcpt:?}");
        let data = self.command("DATA").unwrap();
        assert_eq!(data.code, 354, "DATA: {data:?}");
    }

    /// Sends the message body after a positive `DATA` reply: dot-stuffed,
    /// a CRLF added if the message does not end with a line ending, then
    /// `.`; returns the reply to the final dot.
    pub fn send_data(&mut self, message: &[u8]) -> io::Result<Reply> {
        let mut out = Vec::with_capacity(message.len() + 64);
        let mut at_line_start = true;
        for &b in message {
            if at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            at_line_start = b == b'\n';
        }
        if !at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.writer.write_all(&out)?;
        self.read_reply()
    }

    /// Writes raw bytes (no CRLF added, no dot-stuffing): for malformed
    /// input and pipelining.
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    /// Reads one reply.
    pub fn read_reply(&mut self) -> io::Result<Reply> {
        read_reply(&mut self.reader)
    }

    /// `QUIT`, ignoring errors.
    pub fn quit(mut self) {
        let _ = self.command("QUIT");
    }
}

/// Submits one message: EHLO, MAIL FROM, RCPT TO for each recipient, DATA.
///
/// `Ok` carries the reply to the final dot (a 2xx). `Err` carries the first
/// negative reply, whichever command it answered; I/O errors panic.
#[track_caller]
pub fn send(addr: SocketAddr, from: &str, to: &[&str], message: &[u8]) -> Result<Reply, Reply> {
    let mut smtp = Smtp::connect(addr).unwrap_or_else(|e| panic!("SMTP connect to {addr}: {e}"));
    if !smtp.greeting.is_positive() {
        return Err(smtp.greeting.clone());
    }
    let mut commands = vec![
        "EHLO client.test".to_string(),
        format!("MAIL FROM:<{from}>"),
    ];
    commands.extend(to.iter().map(|rcpt| format!("RCPT TO:<{rcpt}>")));
    commands.push("DATA".to_string());
    for line in commands {
        let reply = smtp
            .command(&line)
            .unwrap_or_else(|e| panic!("SMTP {line:?} to {addr}: {e}"));
        if !reply.is_positive() {
            return Err(reply);
        }
    }
    let reply = smtp
        .send_data(message)
        .unwrap_or_else(|e| panic!("SMTP message data to {addr}: {e}"));
    smtp.quit();
    if reply.is_positive() {
        Ok(reply)
    } else {
        Err(reply)
    }
}

/// Reads one (possibly multi-line) reply from `reader`.
pub fn read_reply<R: BufRead>(reader: &mut R) -> io::Result<Reply> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("connection closed; reply so far: {lines:?}"),
            ));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        let code = line
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| io::Error::other(format!("malformed SMTP reply line {line:?}")))?;
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line.get(4..).unwrap_or_default().to_string());
        if last {
            return Ok(Reply { code, lines });
        }
    }
}

/// A connection a [`Client`] talks over.
pub trait Wire: io::Read + Write + Send {}
impl<T: io::Read + Write + Send> Wire for T {}

/// A rustls client config trusting only `ca_der`.
pub fn tls_client_config(ca_der: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(ca_der.to_vec()))
        .expect("add the test CA");
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

fn tls_over(tcp: TcpStream, ca_der: &[u8]) -> io::Result<Box<dyn Wire>> {
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").map_err(io::Error::other)?;
    let conn =
        rustls::ClientConnection::new(tls_client_config(ca_der), name).map_err(io::Error::other)?;
    Ok(Box::new(rustls::StreamOwned::new(conn, tcp)))
}

fn tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// An SMTP client over plain TCP or TLS; every reply visible.
pub struct Client {
    conn: BufReader<Box<dyn Wire>>,
    /// The socket of a plain connection, for a writer on another thread.
    plain: Option<TcpStream>,
    /// The 220 greeting.
    pub greeting: Reply,
}

impl Client {
    fn over(wire: Box<dyn Wire>) -> io::Result<Client> {
        let mut conn = BufReader::new(wire);
        let greeting = read_reply(&mut conn)?;
        Ok(Client {
            conn,
            plain: None,
            greeting,
        })
    }

    /// Plain TCP; the greeting read.
    pub fn plain(addr: SocketAddr) -> io::Result<Client> {
        let stream = tcp(addr)?;
        let mut c = Client::over(Box::new(stream.try_clone()?))?;
        c.plain = Some(stream);
        Ok(c)
    }

    /// A second handle for writing from another thread while this one
    /// reads (plain connections only).
    #[track_caller]
    pub fn try_clone_writer(&self) -> TcpStream {
        self.plain
            .as_ref()
            .expect("a plain connection")
            .try_clone()
            .expect("clone the socket")
    }

    /// TLS from the first byte (submissions), verified against `ca_der`.
    pub fn implicit_tls(addr: SocketAddr, ca_der: &[u8]) -> io::Result<Client> {
        Client::over(tls_over(tcp(addr)?, ca_der)?)
    }

    /// Plain TCP, EHLO, STARTTLS, then the TLS handshake (verified against
    /// `ca_der`); the next command should be EHLO again.
    pub fn starttls(addr: SocketAddr, ca_der: &[u8]) -> io::Result<Client> {
        Client::starttls_with(addr, ca_der, b"STARTTLS\r\n")
    }

    /// Like [`Client::starttls`], sending `starttls` (STARTTLS and maybe
    /// more, in one write) in its place: the server must answer with one
    /// 220 and nothing else before the handshake.
    pub fn starttls_with(addr: SocketAddr, ca_der: &[u8], starttls: &[u8]) -> io::Result<Client> {
        let stream = tcp(addr)?;
        let mut plain = Client::over(Box::new(stream.try_clone()?))?;
        let greeting = plain.greeting.clone();
        let ehlo = plain.command("EHLO client.test")?;
        if ehlo.code != 250 {
            return Err(io::Error::other(format!("EHLO: {ehlo:?}")));
        }
        plain.write_raw(starttls)?;
        let ready = plain.read_reply()?;
        if ready.code != 220 || !plain.conn.buffer().is_empty() {
            return Err(io::Error::other(format!(
                "STARTTLS: {ready:?}, then {:?}",
                String::from_utf8_lossy(plain.conn.buffer())
            )));
        }
        Ok(Client {
            conn: BufReader::new(tls_over(stream, ca_der)?),
            plain: None,
            greeting,
        })
    }

    /// Sends one command line (CRLF added) and reads the reply.
    pub fn command(&mut self, line: &str) -> io::Result<Reply> {
        self.write_raw(format!("{line}\r\n").as_bytes())?;
        self.read_reply()
    }

    /// Writes raw bytes (no CRLF, no dot-stuffing) and flushes.
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let w = self.conn.get_mut();
        w.write_all(bytes)?;
        w.flush()
    }

    pub fn read_reply(&mut self) -> io::Result<Reply> {
        read_reply(&mut self.conn)
    }

    /// The server has closed the connection: reading gives EOF (or a
    /// reset) without any more reply bytes.
    pub fn is_closed(&mut self) -> bool {
        let mut rest = Vec::new();
        match io::Read::read_to_end(&mut self.conn, &mut rest) {
            Ok(_) => rest.is_empty(),
            Err(e) => {
                matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::UnexpectedEof
                ) && rest.is_empty()
            }
        }
    }
}
