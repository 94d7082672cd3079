//! What a mailbox holds: plaintext, sealed per epoch, undecryptable
//! (`writ mailbox verify`); and where an epoch is still in use (`writ keys
//! retire` refuses while it is).
//!
//! Invariant: both read the header fields of every message the provider
//! shows; neither trusts the provider's search to say what is sealed under
//! which epoch. A whole message not answered whole is counted as
//! undecryptable ("not checked"), never as opening.

use std::collections::BTreeMap;

use super::client::{Client, ClientError};
use super::login::Credentials;
use super::scan;
use crate::envelope;
use crate::imap::upstream::Target;
use crate::keys::Unlocked;

/// Messages downloaded at once to check that they open.
const OPEN_BATCH: usize = 50;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Undecryptable {
    pub uid: u32,
    pub why: String,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Census {
    pub account: String,
    pub mailbox: String,
    pub plaintext: u64,
    /// Sealed messages that open, by epoch.
    pub sealed: BTreeMap<String, u64>,
    pub undecryptable: Vec<Undecryptable>,
}

/// Counts one mailbox. Every sealed message is downloaded and opened: a
/// message counts as sealed only if it opens (a damaged payload is found
/// here, not on the day someone needs it).
pub async fn census(
    target: &Target,
    creds: &Credentials,
    mailbox: &str,
    keys: &Unlocked,
) -> Result<Census, ClientError> {
    let mut client = Client::login(target, creds).await?;
    client.select(mailbox, true).await?;
    let seen = scan::scan_all(&mut client).await?;
    let mut census = Census {
        account: creds.user.clone(),
        mailbox: mailbox.to_string(),
        ..Census::default()
    };
    let mut to_open = Vec::new();
    for s in seen {
        match s.epoch {
            None => census.plaintext += 1,
            Some(epoch) if keys.identity(&epoch).is_none() => {
                census.undecryptable.push(Undecryptable {
                    uid: s.uid,
                    why: format!("sealed under epoch {epoch}, which this keyring cannot open"),
                })
            }
            Some(_) => to_open.push(s.uid),
        }
    }
    for chunk in to_open.chunks(OPEN_BATCH) {
        let answer = client.uid_fetch(chunk, &[]).await?;
        for f in answer.messages {
            match envelope::open(&f.body[..], keys, std::io::sink()) {
                Ok(opened) => *census.sealed.entry(opened.epoch).or_default() += 1,
                Err(e) => census.undecryptable.push(Undecryptable {
                    uid: f.uid,
                    why: e.to_string(),
                }),
            }
        }
        // Not checked, so not counted as opening.
        for i in answer.incomplete {
            census.undecryptable.push(Undecryptable {
                uid: i.uid,
                why: format!("not checked: {}", i.why),
            });
        }
    }
    client.logout().await;
    Ok(census)
}

/// Mailboxes of the account holding messages sealed under `epoch`, with
/// their counts, for `writ keys retire`, which deletes the epoch's key
/// when there are none. The header fields of every message of every
/// mailbox are read ([`scan::scan_all`], as [`census`] does), never the
/// provider's `SEARCH HEADER X-Writ`: a provider whose search misses
/// custom X- fields (full-text search backends, lagging indexes) would
/// otherwise have a key deleted that mail still needs. A mailbox whose
/// messages the provider does not all show (fewer than its EXISTS) is
/// [`ClientError::ScanShort`]: nothing can be proven about it.
pub async fn epoch_in_use(
    target: &Target,
    creds: &Credentials,
    epoch: &str,
) -> Result<Vec<(String, u64)>, ClientError> {
    let mut client = Client::login(target, creds).await?;
    let mut found = Vec::new();
    for mailbox in client.list().await? {
        let selected = client.select(&mailbox, true).await?;
        let seen = scan::scan_all(&mut client).await?;
        // A message whose header fields the provider did not give (NIL)
        // may be sealed under the epoch: as good as not shown.
        let shown = seen.iter().filter(|s| s.answered).count();
        if shown < selected.exists as usize {
            return Err(ClientError::ScanShort {
                mailbox,
                scanned: shown,
                exists: selected.exists,
            });
        }
        let n = seen
            .iter()
            .filter(|s| s.epoch.as_deref() == Some(epoch))
            .count() as u64;
        if n > 0 {
            found.push((mailbox, n));
        }
    }
    client.logout().await;
    Ok(found)
}
