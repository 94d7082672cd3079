//! A small blocking SMTP client for tests, on `std::net::TcpStream`.
//!
//! Enough to submit mail to a real server (or writ's relay) and to look at
//! every reply along the way: EHLO, MAIL, RCPT, DATA with dot-stuffing, QUIT.

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};

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
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
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
