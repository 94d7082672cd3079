//! Exactly the named messages of one mailbox, as stored: for `writ
//! disclose`, which must not read more than the court order names.

use imap_next::imap_types::search::SearchKey;

use super::client::{Client, ClientError, FetchAnswer};
use super::login::Credentials;
use crate::imap::upstream::Target;

/// One message as the provider stores it.
#[derive(Debug)]
pub struct StoredMessage {
    pub uid: u32,
    pub bytes: Vec<u8>,
}

/// What [`fetch_named`] found.
#[derive(Debug)]
pub struct Named {
    pub uidvalidity: u32,
    /// In the order asked: UIDs first, then Message-IDs.
    pub messages: Vec<StoredMessage>,
    /// UIDs not in the mailbox or not answered whole, Message-IDs found no
    /// message or several.
    pub missing: Vec<String>,
}

/// Fetches the messages with the given UIDs and Message-IDs from
/// `mailbox` (EXAMINE: read-only, no flag changes, BODY.PEEK). A
/// Message-ID is found with the provider's `SEARCH HEADER Message-ID`,
/// then checked against the field itself (the search matches substrings);
/// one that matches several messages is reported, not guessed. UIDs are
/// fetched only if the mailbox's UIDVALIDITY is `uidvalidity` (the one
/// the request names them under); otherwise nothing is fetched.
pub async fn fetch_named(
    target: &Target,
    creds: &Credentials,
    mailbox: &str,
    uidvalidity: Option<u32>,
    uids: &[u32],
    message_ids: &[String],
) -> Result<Named, ClientError> {
    let mut client = Client::login(target, creds).await?;
    let selected = client.select(mailbox, true).await?;
    if let Some(expected) = uidvalidity
        && expected != selected.uidvalidity
    {
        client.logout().await;
        return Err(ClientError::UidValidity {
            expected,
            actual: selected.uidvalidity,
        });
    }
    let mut named = Named {
        uidvalidity: selected.uidvalidity,
        messages: Vec::new(),
        missing: Vec::new(),
    };
    for &uid in uids {
        let answer = client.uid_fetch(&[uid], &[]).await?;
        match whole(answer) {
            Ok(f) => named.messages.push(f),
            Err(why) => named.missing.push(format!("UID {uid}{why}")),
        }
    }
    for id in message_ids {
        let key = SearchKey::Header(
            "Message-ID"
                .try_into()
                .map_err(|_| ClientError::Invalid("search"))?,
            id.clone()
                .try_into()
                .map_err(|_| ClientError::Invalid("Message-ID"))?,
        );
        let hits = client.uid_search(vec![key]).await?;
        let mut exact = Vec::new();
        for f in client.uid_fetch(&hits, &["Message-ID"]).await?.messages {
            let value = crate::envelope::header::first_value(&f.body, "message-id")
                .map(|v| String::from_utf8_lossy(crate::envelope::header::trim(&v)).into_owned());
            if value.as_deref() == Some(id.trim()) {
                exact.push(f.uid);
            }
        }
        match exact.as_slice() {
            [uid] => match whole(client.uid_fetch(&[*uid], &[]).await?) {
                Ok(f) => named.messages.push(f),
                Err(why) => named.missing.push(format!("Message-ID {id}{why}")),
            },
            [] => named.missing.push(format!("Message-ID {id}")),
            more => named.missing.push(format!(
                "Message-ID {id} (matches {} messages: name them by UID)",
                more.len()
            )),
        }
    }
    client.logout().await;
    Ok(named)
}

/// The one message a single-UID FETCH answered whole; else what to say
/// after its name (nothing when it was not answered at all).
fn whole(mut answer: FetchAnswer) -> Result<StoredMessage, String> {
    if let Some(f) = answer.messages.pop() {
        return Ok(StoredMessage {
            uid: f.uid,
            bytes: f.body,
        });
    }
    Err(match answer.incomplete.pop() {
        Some(i) => format!(" (not whole: {})", i.why),
        None => String::new(),
    })
}
