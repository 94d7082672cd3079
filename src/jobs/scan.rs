//! What is in a mailbox, from the header fields that say whether a message
//! is sealed (`X-Writ`, `Content-Type`): nothing else is downloaded.

use imap_next::imap_types::search::SearchKey;
use imap_next::imap_types::sequence::SequenceSet;

use super::client::{Client, ClientError, Fetched};
use crate::envelope;

/// The fields [`envelope::detect`] needs.
pub const MARKER_FIELDS: &[&str] = &["X-Writ", "Content-Type"];

/// UIDs per header FETCH: keeps command lines short.
pub const CHUNK: usize = 500;

/// One message as the scan saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub uid: u32,
    /// INTERNALDATE, seconds since the epoch.
    pub internal_date: Option<i64>,
    /// The epoch it is sealed under; `None`: plaintext.
    pub epoch: Option<String>,
    /// The copy token in its marker (a mailbox job's copy), if sealed.
    pub copy: Option<String>,
    /// The provider gave its header fields. `false`: it answered NIL for
    /// them, which says nothing: taken for plaintext when sealing (the
    /// whole message is checked when fetched; an already sealed one is
    /// copied as it is), and as perhaps sealed when retiring a key.
    pub answered: bool,
}

pub fn seen(f: &Fetched) -> Seen {
    // HEADER.FIELDS answers end with the blank line; detect wants a
    // header block.
    let epoch = envelope::detect(&f.body).map(|d| d.epoch);
    Seen {
        uid: f.uid,
        internal_date: f.internal_date.as_ref().map(|d| d.as_ref().timestamp()),
        copy: epoch
            .as_ref()
            .and_then(|_| super::copies::token_of(&f.body)),
        epoch,
        answered: true,
    }
}

/// Header scan of the given UIDs, in chunks.
pub async fn scan(client: &mut Client, uids: &[u32]) -> Result<Vec<Seen>, ClientError> {
    let mut out = Vec::with_capacity(uids.len());
    for chunk in uids.chunks(CHUNK) {
        let fetched = client.uid_fetch(chunk, MARKER_FIELDS).await?;
        out.extend(fetched.messages.iter().map(seen));
        // NIL for its header fields: not left out (it would be taken for
        // sealed), but unknown.
        out.extend(fetched.incomplete.iter().map(|i| Seen {
            uid: i.uid,
            internal_date: None,
            epoch: None,
            copy: None,
            answered: false,
        }));
    }
    out.sort_by_key(|s| s.uid);
    Ok(out)
}

/// Every message of the selected mailbox.
pub async fn scan_all(client: &mut Client) -> Result<Vec<Seen>, ClientError> {
    let uids = client.uid_search(vec![SearchKey::All]).await?;
    scan(client, &uids).await
}

/// Messages with UID `from` or higher.
pub async fn scan_from(client: &mut Client, from: u32) -> Result<Vec<Seen>, ClientError> {
    let Ok(set) = SequenceSet::try_from(format!("{}:*", from.max(1)).as_str()) else {
        return Ok(Vec::new());
    };
    let uids = client.uid_search(vec![SearchKey::Uid(set)]).await?;
    // "n:*" always matches the highest UID, even below n (RFC 3501 §6.4.8).
    let uids: Vec<u32> = uids.into_iter().filter(|&u| u >= from).collect();
    scan(client, &uids).await
}

/// Messages the provider's own search finds sealed under `epoch`
/// (`HEADER X-Writ "key=<epoch>"`), confirmed from their header fields.
/// For finding work only (`writ mailbox reseal`): a search may miss
/// custom X- fields, so whether an epoch is still in use is never decided
/// from it ([`super::census::epoch_in_use`] reads every message's).
pub async fn sealed_under(client: &mut Client, epoch: &str) -> Result<Vec<Seen>, ClientError> {
    let key = SearchKey::Header(
        "X-Writ"
            .try_into()
            .map_err(|_| ClientError::Invalid("search"))?,
        format!("key={epoch}")
            .try_into()
            .map_err(|_| ClientError::Invalid("epoch"))?,
    );
    let uids = client.uid_search(vec![key]).await?;
    let found = scan(client, &uids).await?;
    Ok(found
        .into_iter()
        .filter(|s| s.epoch.as_deref() == Some(epoch))
        .collect())
}
