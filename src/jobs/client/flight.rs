//! Commands in flight together: a UID FETCH and a batch's APPENDs sent in
//! one write and collected later (`start_*` / `finish_*`), and the writer
//! that keeps reading while it writes so that neither side of a pipelined
//! exchange waits for the other for ever.
//!
//! Tagged answers are matched by tag. FETCH data is matched by UID and by
//! section (whole message, or header fields); while a FETCH started here is
//! not collected, FETCH data stays for it (`Client::take_data`), at most
//! what the provider sent in answer to commands writ sent.

use std::pin::Pin;
use std::task::Poll;

use imap_next::State;
use imap_next::imap_types::command::{Command, CommandBody};
use imap_next::imap_types::core::{AString, Literal, Tag, Vec1};
use imap_next::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_next::imap_types::fetch::{
    MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Section,
};
use imap_next::imap_types::flag::FlagFetch;
use imap_next::imap_types::response::{Code, Data, StatusKind};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, timeout_at};

use super::{
    Appending, Client, ClientError, Fetched, MAX_RESPONSE, mailbox_value, refusal, uid_set,
};

/// A `UID FETCH` sent and not yet answered ([`Client::start_fetch`]).
#[must_use = "its answer is collected with Client::finish_fetch"]
pub struct PendingFetch {
    tag: Tag<'static>,
    uids: std::collections::HashSet<u32>,
    /// Header fields were asked for, not the whole message.
    headers: bool,
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
    /// into the timeout). The whole write has the timeout, as one
    /// `write_all` had: past it, a [`ClientError::Timeout`].
    pub(super) async fn write_reading(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let deadline = Instant::now() + self.timeout;
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
            match timeout_at(deadline, step).await {
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
        let items = vec![
            MessageDataItemName::Uid,
            MessageDataItemName::Flags,
            MessageDataItemName::InternalDate,
            MessageDataItemName::BodyExt {
                section,
                partial: None,
                peek: true,
            },
        ];
        let tag = self.send(CommandBody::Fetch {
            sequence_set: set,
            macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(items),
            uid: true,
            modifiers: Vec::new(),
        });
        self.fetches_pending += 1;
        Ok(Some(PendingFetch {
            tag,
            uids: uids.iter().copied().collect(),
            headers,
        }))
    }

    /// Waits for a `UID FETCH` sent by [`Client::start_fetch`] and returns
    /// the messages it asked for. Data of other FETCHes still awaited stays
    /// for them: a message is this FETCH's when its UID is one it asked for
    /// and its body is the section it asked for (whole, or header fields).
    pub async fn finish_fetch(&mut self, p: PendingFetch) -> Result<Vec<Fetched>, ClientError> {
        let status = self.wait_for(p.tag.inner()).await?;
        self.fetches_pending = self.fetches_pending.saturating_sub(1);
        if status.kind != StatusKind::Ok {
            return Err(refusal("UID FETCH", &status));
        }
        let mut out: Vec<Fetched> = Vec::new();
        let mut rest = Vec::new();
        for d in std::mem::take(&mut self.data) {
            let Data::Fetch { items, seq } = d else {
                continue;
            };
            let mut f = Fetched::default();
            let mut body_section = None;
            let mut other = Vec::new();
            for item in items.into_iter() {
                match item {
                    MessageDataItem::Uid(u) => {
                        f.uid = u.get();
                        other.push(MessageDataItem::Uid(u));
                    }
                    MessageDataItem::Flags(flags) => {
                        f.flags = flags
                            .iter()
                            .filter_map(|x| match x {
                                FlagFetch::Flag(flag) => Some(flag.clone()),
                                FlagFetch::Recent => None,
                            })
                            .collect();
                        other.push(MessageDataItem::Flags(flags));
                    }
                    MessageDataItem::InternalDate(d) => {
                        f.internal_date = Some(d.clone());
                        other.push(MessageDataItem::InternalDate(d));
                    }
                    MessageDataItem::BodyExt {
                        section,
                        origin,
                        data,
                    } => {
                        body_section = Some(section.is_some());
                        f.body = data
                            .0
                            .as_ref()
                            .map(|b| b.as_ref().to_vec())
                            .unwrap_or_default();
                        other.push(MessageDataItem::BodyExt {
                            section,
                            origin,
                            data,
                        });
                    }
                    item => other.push(item),
                }
            }
            match body_section {
                // Unsolicited FETCH (flag changes by others) carry no body.
                None => {}
                Some(headers) if headers == p.headers && f.uid != 0 && p.uids.contains(&f.uid) => {
                    out.push(f)
                }
                // Another FETCH in flight asked for it.
                Some(_) if self.fetches_pending > 0 => {
                    if let Ok(items) = Vec1::try_from(other) {
                        rest.push(Data::Fetch { seq, items });
                    }
                }
                // No FETCH awaits it: unsolicited.
                Some(_) => {}
            }
        }
        self.data = rest;
        Ok(out)
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
