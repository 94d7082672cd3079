//! Commands in flight together: a UID FETCH and a batch's APPENDs sent in
//! one write and collected later (`start_*` / `finish_*`), and the writer
//! that keeps reading while it writes so that neither side of a pipelined
//! exchange waits for the other for ever.
//!
//! Tagged answers are matched by tag. FETCH data is matched as it arrives
//! (`Client::file_fetch`) by UID and by section (whole message, or header
//! fields) to the FETCH in flight that asked for it, and kept there until
//! that FETCH is collected: one record per UID asked, one body each (a
//! second is [`ClientError::AnsweredTwice`]); data for UIDs or sections no
//! FETCH in flight asked for is dropped. A whole message is handed on only
//! if its answer is whole and as long as its `RFC822.SIZE`, asked with it
//! (a length that differs is asked for once more, and taken when the
//! second answer's size agrees and its bytes are the first's: Exchange's
//! sizes are estimates until a message is fetched); otherwise it is an
//! [`Incomplete`], never the message.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::task::Poll;

use imap_next::State;
use imap_next::imap_types::command::{Command, CommandBody};
use imap_next::imap_types::core::{AString, Literal, NString, Tag, Vec1};
use imap_next::imap_types::datetime::DateTime;
use imap_next::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_next::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Section,
};
use imap_next::imap_types::flag::{Flag, FlagFetch};
use imap_next::imap_types::response::{Code, StatusKind};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::timeout;

use super::{
    Appending, Client, ClientError, Fetched, MAX_RESPONSE, mailbox_value, refusal, uid_set,
};

/// A `UID FETCH` sent and not yet answered ([`Client::start_fetch`]).
#[must_use = "its answer is collected with Client::finish_fetch"]
pub struct PendingFetch {
    tag: Tag<'static>,
}

/// What a `UID FETCH` returned ([`Client::finish_fetch`]), by UID.
#[derive(Debug, Default)]
pub struct FetchAnswer {
    /// Answered whole (or, for header fields, answered).
    pub messages: Vec<Fetched>,
    /// Whole messages asked for that did not come whole: never to be used
    /// as the message.
    pub incomplete: Vec<Incomplete>,
}

/// A whole message the provider did not send whole, and how.
#[derive(Debug, Clone)]
pub struct Incomplete {
    pub uid: u32,
    pub why: String,
}

/// A `UID FETCH` in flight, on the client: what it asked, what came.
pub(super) struct InFlight {
    pub(super) tag: String,
    uids: HashSet<u32>,
    /// Header fields were asked for, not the whole message.
    headers: bool,
    /// At most one record per UID asked.
    got: HashMap<u32, Arrived>,
}

/// What arrived for one UID asked.
#[derive(Default, Clone)]
struct Arrived {
    flags: Option<Vec<Flag<'static>>>,
    internal_date: Option<DateTime>,
    size: Option<u32>,
    /// The body, or why it is not the whole of what was asked.
    body: Option<Result<Vec<u8>, &'static str>>,
}

impl Arrived {
    /// Takes what `other` says (the later response wins).
    fn merge(&mut self, other: Arrived) {
        if other.flags.is_some() {
            self.flags = other.flags;
        }
        if other.internal_date.is_some() {
            self.internal_date = other.internal_date;
        }
        if other.size.is_some() {
            self.size = other.size;
        }
    }
}

/// A body as answered: the bytes, unless the answer cannot be the whole
/// section asked for (`NIL`, a partial answer; for a whole message,
/// empty). Header fields a message lacks come as an empty header (the
/// empty line, or nothing); `NIL` says nothing of them (a sealed message's
/// marker could be hidden so: then `keys retire` would delete a key in
/// use), so it is no answer.
fn whole(
    headers: bool,
    origin: Option<u32>,
    data: NString<'static>,
) -> Result<Vec<u8>, &'static str> {
    if origin.is_some() {
        return Err("the provider sent only part of it (a BODY[]<n> answer)");
    }
    match data.0 {
        Some(bytes) if headers || !bytes.as_ref().is_empty() => Ok(bytes.as_ref().to_vec()),
        Some(_) => Err("the provider sent an empty body for it"),
        None if headers => Err("the provider answered NIL for its header fields"),
        None => Err("the provider answered BODY[] NIL for it"),
    }
}

/// APPENDs sent and not yet answered ([`Client::start_appends`]).
#[must_use = "their answers are collected with Client::finish_appends"]
pub struct PendingAppends {
    tags: Vec<Tag<'static>>,
}

impl Client {
    /// Writes `bytes` while reading what the provider sends meanwhile.
    ///
    /// With commands in flight the provider may be answering an earlier
    /// one (a FETCH of a whole batch) while writ still sends a later one
    /// (a batch's APPEND literals): were writ only writing, and the
    /// provider only writing until its answer is read, both would wait
    /// on full socket buffers for ever. What is read goes to the flow as
    /// input, at most [`MAX_RESPONSE`] bytes per write (then writ only
    /// writes, and a provider that neither reads nor stops sending runs
    /// into the timeout). The timeout is one of inactivity: each step
    /// (some bytes written or read) must come within it, so a message
    /// larger than the timeout × the uplink's rate still goes out; the
    /// whole write is bounded by the command's deadline
    /// ([`COMMAND_TIMEOUTS`](super::COMMAND_TIMEOUTS) timeouts), which its
    /// caller awaits it under. Past either, an error.
    pub(super) async fn write_reading(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let mut written = 0;
        let mut read = 0u64;
        while written < bytes.len() {
            let stream = &mut self.stream;
            let buf = &mut self.buf;
            let flow = &mut self.flow;
            let reading = read < u64::from(MAX_RESPONSE);
            let step = std::future::poll_fn(|cx| {
                match Pin::new(&mut *stream).poll_write(cx, &bytes[written..]) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(std::io::Error::from(
                            std::io::ErrorKind::WriteZero,
                        )));
                    }
                    Poll::Ready(Ok(n)) => {
                        written += n;
                        return Poll::Ready(Ok(()));
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
                if !reading {
                    return Poll::Pending;
                }
                let mut into = ReadBuf::new(&mut buf[..]);
                match Pin::new(&mut *stream).poll_read(cx, &mut into) {
                    Poll::Ready(Ok(())) if into.filled().is_empty() => {
                        Poll::Ready(Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)))
                    }
                    Poll::Ready(Ok(())) => {
                        read += into.filled().len() as u64;
                        flow.enqueue_input(into.filled());
                        Poll::Ready(Ok(()))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            });
            match timeout(self.timeout, step).await {
                Err(_) => return Err(ClientError::Timeout(self.timeout.as_secs())),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err(ClientError::Closed);
                }
                Ok(r) => r?,
            }
        }
        Ok(())
    }

    /// Sends the `UID FETCH` of [`Client::uid_fetch`] without waiting for
    /// its answer, so that other commands can follow it in the same flight
    /// ([`Client::finish_fetch`] collects it). `None`: no UID to fetch.
    pub fn start_fetch(
        &mut self,
        uids: &[u32],
        header_fields: &[&str],
    ) -> Result<Option<PendingFetch>, ClientError> {
        let Some(set) = uid_set(uids) else {
            return Ok(None);
        };
        let section = if header_fields.is_empty() {
            None
        } else {
            let names = header_fields
                .iter()
                .map(|f| AString::try_from(f.to_string()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| ClientError::Invalid("header field"))?;
            Some(Section::HeaderFields(
                None,
                Vec1::try_from(names).map_err(|_| ClientError::Invalid("header field"))?,
            ))
        };
        let headers = section.is_some();
        let mut items = vec![
            MessageDataItemName::Uid,
            MessageDataItemName::Flags,
            MessageDataItemName::InternalDate,
        ];
        if !headers {
            // What a whole message's length is checked against.
            items.push(MessageDataItemName::Rfc822Size);
        }
        items.push(MessageDataItemName::BodyExt {
            section,
            partial: None,
            peek: true,
        });
        let tag = self.send(CommandBody::Fetch {
            sequence_set: set,
            macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(items),
            uid: true,
            modifiers: Vec::new(),
        });
        self.fetches.push(InFlight {
            tag: tag.inner().to_string(),
            uids: uids.iter().copied().filter(|&u| u != 0).collect(),
            headers,
            got: HashMap::new(),
        });
        Ok(Some(PendingFetch { tag }))
    }

    /// Waits for a `UID FETCH` sent by [`Client::start_fetch`] and returns
    /// what it asked for, by UID: the messages answered whole (or their
    /// header fields), and the whole-message answers that were not whole
    /// ([`Incomplete`]: `NIL`, empty, partial, or not `RFC822.SIZE` long).
    /// A UID the provider did not answer with a body is in neither.
    ///
    /// A body whose length differs from its `RFC822.SIZE` (and is
    /// otherwise whole) is asked for once more: Exchange gives a message's
    /// stored size until its RFC 822 size is known, which fetching it
    /// makes it. The second answer is taken when it is as long as its
    /// `RFC822.SIZE` now says and holds exactly the first one's bytes.
    pub async fn finish_fetch(&mut self, p: PendingFetch) -> Result<FetchAnswer, ClientError> {
        let (mut answer, sized) = self.collect_fetch(p).await?;
        if sized.is_empty() {
            return Ok(answer);
        }
        let uids: Vec<u32> = sized.iter().map(|(i, _)| i.uid).collect();
        let again = match self.start_fetch(&uids, &[])? {
            Some(pending) => self.collect_fetch(pending).await?.0,
            None => FetchAnswer::default(),
        };
        let mut again: HashMap<u32, Fetched> =
            again.messages.into_iter().map(|f| (f.uid, f)).collect();
        for (incomplete, first) in sized {
            match again.remove(&incomplete.uid) {
                Some(f) if f.body == first => answer.messages.push(f),
                _ => answer.incomplete.push(incomplete),
            }
        }
        answer.messages.sort_unstable_by_key(|f| f.uid);
        Ok(answer)
    }

    /// [`Client::finish_fetch`]'s answer as it came, and apart the bodies
    /// whole but for their length against `RFC822.SIZE` (with what to say
    /// if they stay so).
    async fn collect_fetch(
        &mut self,
        p: PendingFetch,
    ) -> Result<(FetchAnswer, Vec<(Incomplete, Vec<u8>)>), ClientError> {
        let status = self.wait_for(p.tag.inner()).await;
        let state = match self.fetches.iter().position(|f| f.tag == p.tag.inner()) {
            Some(at) => self.fetches.remove(at),
            None => return Err(ClientError::Malformed),
        };
        let status = status?;
        if status.kind != StatusKind::Ok {
            return Err(refusal("UID FETCH", &status));
        }
        let mut got: Vec<(u32, Arrived)> = state.got.into_iter().collect();
        got.sort_unstable_by_key(|(uid, _)| *uid);
        let mut answer = FetchAnswer::default();
        let mut sized = Vec::new();
        for (uid, a) in got {
            let Some(body) = a.body else {
                continue;
            };
            let incomplete = |why: String| Incomplete { uid, why };
            let body = match body {
                Ok(body) => body,
                Err(why) => {
                    answer.incomplete.push(incomplete(why.to_string()));
                    continue;
                }
            };
            if !state.headers {
                match a.size {
                    None => {
                        answer.incomplete.push(incomplete(
                            "the provider did not give its RFC822.SIZE, so its body cannot be \
                             known whole"
                                .into(),
                        ));
                        continue;
                    }
                    Some(size) if size as usize != body.len() => {
                        let why = format!(
                            "the provider sent {} bytes of it but gives its RFC822.SIZE as {size}",
                            body.len()
                        );
                        sized.push((incomplete(why), body));
                        continue;
                    }
                    Some(_) => {}
                }
            }
            answer.messages.push(Fetched {
                uid,
                flags: a.flags.unwrap_or_default(),
                internal_date: a.internal_date,
                body,
            });
        }
        Ok((answer, sized))
    }

    /// Files the items of one untagged FETCH response: with the FETCH in
    /// flight that asked for its UID (and, for a body, its section), else
    /// nowhere. A body for a UID whose every asking FETCH already has one
    /// is [`ClientError::AnsweredTwice`].
    pub(super) fn file_fetch(
        &mut self,
        items: Vec<MessageDataItem<'static>>,
    ) -> Result<(), ClientError> {
        let mut uid = None;
        let mut meta = Arrived::default();
        let mut body = None;
        for item in items {
            match item {
                MessageDataItem::Uid(u) => uid = Some(u.get()),
                MessageDataItem::Flags(flags) => {
                    meta.flags = Some(
                        flags
                            .into_iter()
                            .filter_map(|x| match x {
                                FlagFetch::Flag(flag) => Some(flag),
                                FlagFetch::Recent => None,
                            })
                            .collect(),
                    )
                }
                MessageDataItem::InternalDate(d) => meta.internal_date = Some(d),
                MessageDataItem::Rfc822Size(n) => meta.size = Some(n),
                MessageDataItem::BodyExt {
                    section,
                    origin,
                    data,
                } => {
                    let headers = match section {
                        None => false,
                        Some(Section::HeaderFields(None, _)) => true,
                        // No FETCH of writ's asks for any other section.
                        Some(_) => continue,
                    };
                    body = Some((headers, whole(headers, origin, data)));
                }
                _ => {}
            }
        }
        // Without its UID, a response cannot be matched to anything asked.
        let Some(uid) = uid else {
            return Ok(());
        };
        let Some((headers, body)) = body else {
            // Flags, dates, sizes sent on their own: merged where asked.
            for f in self.fetches.iter_mut().filter(|f| f.uids.contains(&uid)) {
                f.got.entry(uid).or_default().merge(meta.clone());
            }
            return Ok(());
        };
        let mut asked = self
            .fetches
            .iter_mut()
            .filter(|f| f.headers == headers && f.uids.contains(&uid))
            .peekable();
        if asked.peek().is_none() {
            // Not asked for: nothing is kept.
            return Ok(());
        }
        let Some(f) = asked.find(|f| f.got.get(&uid).is_none_or(|a| a.body.is_none())) else {
            return Err(ClientError::AnsweredTwice(uid));
        };
        let a = f.got.entry(uid).or_default();
        a.merge(meta);
        a.body = Some(body);
        self.progress += 1;
        Ok(())
    }

    /// Sends the APPENDs of [`Client::append_many`] without waiting for
    /// their answers ([`Client::finish_appends`] collects them). The
    /// literals go out as the connection is driven by whatever is awaited
    /// next on it.
    pub fn start_appends(
        &mut self,
        mailbox: &str,
        messages: Vec<Appending>,
    ) -> Result<PendingAppends, ClientError> {
        let non_sync = self.has_capability("LITERAL+");
        let mut tags = Vec::with_capacity(messages.len());
        for m in messages {
            // A literal may hold any octet but NUL (RFC 3501 CHAR8), which
            // is all imap-types' validation checks, octet by octet: one
            // vectorised search says the same for a whole message.
            if memchr::memchr(0, &m.message).is_some() {
                return Err(ClientError::Invalid("message"));
            }
            let literal = if non_sync {
                Literal::unvalidated_non_sync(m.message)
            } else {
                Literal::unvalidated(m.message)
            };
            let tag = self.tag();
            self.flow.enqueue_command(Command {
                tag: tag.clone(),
                body: CommandBody::Append {
                    mailbox: mailbox_value(mailbox)?,
                    flags: m.flags,
                    date: m.date,
                    message: LiteralOrLiteral8::Literal(literal),
                },
            });
            tags.push(tag);
        }
        Ok(PendingAppends { tags })
    }

    /// The answers to APPENDs sent by [`Client::start_appends`], in order.
    pub async fn finish_appends(
        &mut self,
        p: PendingAppends,
    ) -> Result<Vec<Result<Option<u32>, ClientError>>, ClientError> {
        let mut results = Vec::with_capacity(p.tags.len());
        for tag in p.tags {
            let status = self.wait_for(tag.inner()).await?;
            results.push(if status.kind == StatusKind::Ok {
                Ok(match status.code {
                    Some(Code::AppendUid { uid, .. }) => Some(uid.get()),
                    _ => None,
                })
            } else {
                Err(refusal("APPEND", &status))
            });
        }
        // What APPEND says besides (EXISTS, RECENT) matters to no one here.
        self.take_data();
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_next::imap_types::core::{IString, Literal};

    fn literal(bytes: &[u8]) -> NString<'static> {
        NString(Some(IString::Literal(
            Literal::try_from(bytes.to_vec()).unwrap(),
        )))
    }

    #[test]
    fn only_a_whole_answer_is_a_whole_message() {
        assert_eq!(whole(false, None, literal(b"M")), Ok(b"M".to_vec()));
        for (origin, data) in [
            (None, NString(None)),
            (None, literal(b"")),
            (Some(0), literal(b"M")),
        ] {
            assert!(whole(false, origin, data).is_err());
        }
        // Header fields may be empty (a message without them); NIL is no
        // answer.
        assert!(whole(true, None, NString(None)).is_err());
        assert_eq!(whole(true, None, literal(b"")), Ok(Vec::new()));
        assert!(whole(true, Some(0), literal(b"X: 1\r\n")).is_err());
    }
}
