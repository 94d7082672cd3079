//! SMTP commands as the client sends them (RFC 5321 §4.1), parsed from one
//! line without its CRLF. Parameters of MAIL and RCPT are kept verbatim so
//! that they reach the provider exactly as the client wrote them (DSN's
//! RET, ENVID, NOTIFY, ORCPT; SMTPUTF8; BODY).

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    StartTls,
    /// AUTH mechanism [initial-response]
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
    Mail {
        /// The reverse path without angle brackets (empty for `<>`).
        from: String,
        params: Vec<Param>,
    },
    Rcpt {
        to: String,
        params: Vec<Param>,
    },
    Data,
    Bdat,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
}

/// An ESMTP parameter `KEY[=VALUE]`, key upper-cased, value verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub key: String,
    pub value: Option<String>,
}

impl Param {
    pub fn render(&self) -> String {
        match &self.value {
            Some(v) => format!("{}={v}", self.key),
            None => self.key.clone(),
        }
    }
}

/// Why a line is not a command we accept; each maps to a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Unknown verb: 500 5.5.2.
    Unknown,
    /// Known verb, bad arguments: 501 5.5.4 with this explanation.
    Syntax(&'static str),
}

/// Parses one command line (without CRLF).
pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let Ok(line) = std::str::from_utf8(line) else {
        // RFC 6531 allows UTF-8 in addresses, which is valid UTF-8; other
        // bytes cannot form a command.
        return Err(ParseError::Syntax("command is not valid UTF-8"));
    };
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let no_args = |c: Command| {
        if rest.trim().is_empty() {
            Ok(c)
        } else {
            Err(ParseError::Syntax("this command takes no arguments"))
        }
    };
    match verb.to_ascii_uppercase().as_str() {
        "EHLO" => domain_arg(rest).map(Command::Ehlo),
        "HELO" => domain_arg(rest).map(Command::Helo),
        "STARTTLS" => no_args(Command::StartTls),
        "AUTH" => {
            let mut words = rest.split_ascii_whitespace();
            let mechanism = words
                .next()
                .ok_or(ParseError::Syntax("AUTH needs a mechanism"))?
                .to_ascii_uppercase();
            let initial = words.next().map(str::to_owned);
            if words.next().is_some() {
                return Err(ParseError::Syntax(
                    "AUTH takes a mechanism and one response",
                ));
            }
            Ok(Command::Auth { mechanism, initial })
        }
        "MAIL" => {
            let (from, params) = path_arg(rest, "FROM:")?;
            Ok(Command::Mail { from, params })
        }
        "RCPT" => {
            let (to, params) = path_arg(rest, "TO:")?;
            if to.is_empty() {
                return Err(ParseError::Syntax("empty recipient"));
            }
            Ok(Command::Rcpt { to, params })
        }
        "DATA" => no_args(Command::Data),
        "BDAT" => Ok(Command::Bdat),
        "RSET" => no_args(Command::Rset),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_args(Command::Quit),
        "VRFY" => Ok(Command::Vrfy),
        "EXPN" => Ok(Command::Expn),
        "HELP" => Ok(Command::Help),
        _ => Err(ParseError::Unknown),
    }
}

fn domain_arg(rest: &str) -> Result<String, ParseError> {
    let d = rest.trim();
    if d.is_empty() || d.contains(char::is_whitespace) {
        return Err(ParseError::Syntax("expected a domain or address literal"));
    }
    Ok(d.to_owned())
}

/// `FROM:<path> params` / `TO:<path> params`. Tolerates a space after the
/// colon (common) but requires the angle brackets (RFC 5321).
fn path_arg(rest: &str, prefix: &str) -> Result<(String, Vec<Param>), ParseError> {
    let head = rest.get(..prefix.len()).unwrap_or("");
    if !head.eq_ignore_ascii_case(prefix) {
        return Err(ParseError::Syntax(if prefix == "FROM:" {
            "expected MAIL FROM:<address>"
        } else {
            "expected RCPT TO:<address>"
        }));
    }
    let rest = rest[prefix.len()..].trim_start();
    let Some(inner) = rest.strip_prefix('<') else {
        return Err(ParseError::Syntax("the address must be in angle brackets"));
    };
    let Some(close) = inner.find('>') else {
        return Err(ParseError::Syntax("missing '>' after the address"));
    };
    let path = &inner[..close];
    if path.contains(char::is_whitespace) || path.contains('<') {
        return Err(ParseError::Syntax("malformed address"));
    }
    // Drop an obsolete source route (@a,@b:user@host).
    let path = match path.split_once(':') {
        Some((route, addr)) if route.starts_with('@') => addr,
        _ => path,
    };
    if !path.is_empty() && !valid_mailbox(path) {
        return Err(ParseError::Syntax("malformed address"));
    }
    let mut params = Vec::new();
    for word in inner[close + 1..].split_ascii_whitespace() {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v.to_owned())),
            None => (word, None),
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(ParseError::Syntax("malformed parameter"));
        }
        params.push(Param {
            key: key.to_ascii_uppercase(),
            value,
        });
    }
    Ok((path.to_owned(), params))
}

/// `local@domain` with a non-empty domain; local part may be quoted.
fn valid_mailbox(path: &str) -> bool {
    match path.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains(['"', '\\', ','])
                && path.chars().all(|c| !c.is_control())
        }
        None => false,
    }
}

/// The domain of an address, lower-cased (ASCII) for policy decisions.
pub fn domain_of(address: &str) -> Option<String> {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
        .filter(|d| !d.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_and_rcpt_keep_params_verbatim() {
        let c =
            parse(b"MAIL FROM:<a@b.example> SIZE=100 RET=HDRS ENVID=QQ314159 smtputf8").unwrap();
        let Command::Mail { from, params } = c else {
            panic!()
        };
        assert_eq!(from, "a@b.example");
        let rendered: Vec<String> = params.iter().map(Param::render).collect();
        assert_eq!(
            rendered,
            ["SIZE=100", "RET=HDRS", "ENVID=QQ314159", "SMTPUTF8"]
        );
        let c = parse(b"rcpt to: <x@y> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y").unwrap();
        assert!(
            matches!(c, Command::Rcpt { ref to, ref params } if to == "x@y" && params.len() == 2)
        );
        assert_eq!(
            parse(b"MAIL FROM:<>").unwrap(),
            Command::Mail {
                from: String::new(),
                params: vec![]
            }
        );
        assert!(
            matches!(parse(b"RCPT TO:<@relay:u@h>").unwrap(), Command::Rcpt { to, .. } if to == "u@h")
        );
    }

    #[test]
    fn malformed_commands() {
        for bad in [
            &b"MAIL FROM:a@b"[..],
            b"MAIL TO:<a@b>",
            b"MAIL FROM:<a@b",
            b"RCPT TO:<>",
            b"RCPT TO:<no-domain>",
            b"RCPT TO:<a@b> =x",
            b"EHLO",
            b"DATA now",
            b"AUTH",
            b"MAIL FROM:<\xff@b>",
        ] {
            assert!(
                matches!(parse(bad), Err(ParseError::Syntax(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse(b"XYZZY"), Err(ParseError::Unknown));
        assert_eq!(parse(b""), Err(ParseError::Unknown));
    }

    #[test]
    fn domains() {
        assert_eq!(domain_of("A@Example.ORG."), Some("example.org".into()));
        assert_eq!(domain_of("nodomain"), None);
    }
}
