//! How the cache names mailboxes and messages: SHA-256 of account,
//! mailbox, UIDVALIDITY and UID (no name is written), and a message's
//! fingerprint of its marker fields, bound into every sealed value. Part
//! of [`super::Cache`]; the invariants are stated in `cache.rs`'s header.

use super::sealing::{EpochName, epoch_name};
use crate::envelope::Detected;

/// Which mailbox, as the cache keys it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxKey {
    pub account: String,
    pub mailbox: String,
    pub uidvalidity: u32,
}

pub(super) fn sha(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        // Length-prefixed: ("a","bc") and ("ab","c") differ.
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

impl MailboxKey {
    pub(super) fn reference(&self) -> [u8; 16] {
        let h = sha(&[self.account.as_bytes(), self.mailbox.as_bytes()]);
        let mut out = [0u8; 16];
        out.copy_from_slice(&h[..16]);
        out
    }

    pub(super) fn id(&self, uidvalidity: u32) -> [u8; 16] {
        let h = sha(&[
            self.account.as_bytes(),
            self.mailbox.as_bytes(),
            &uidvalidity.to_be_bytes(),
        ]);
        let mut out = [0u8; 16];
        out.copy_from_slice(&h[..16]);
        out
    }

    pub(super) fn entry(&self, uid: u32) -> [u8; 20] {
        let mut out = [0u8; 20];
        out[..16].copy_from_slice(&self.id(self.uidvalidity));
        out[16..].copy_from_slice(&uid.to_be_bytes());
        out
    }
}

/// Which message, as the cache keys it: its UID in the mailbox, a
/// fingerprint of its marker fields ([`MARKER_FIELDS`]: `X-Writ`, which
/// names the epoch, and `Content-Type`, which holds the sealed message's
/// random MIME boundary), and the epoch its marker names. The
/// fingerprint is bound into every sealed value, so an entry is only
/// ever read back for the message it was made from: a session whose
/// account or mailbox were mistaken (another user's mailbox with the
/// same UIDVALIDITY) finds nothing.
///
/// The fingerprint is of the marker fields alone, not of the whole
/// stored header, so that a listing's probe can ask the provider for
/// just those fields (`BODY.PEEK[HEADER.FIELDS (X-Writ Content-Type)]`),
/// which the provider answers from its own index, and SEARCH (which
/// reads the whole header) finds the same entries. What else the stored
/// header holds (the prefix a provider put above the marker) cannot
/// change under one UIDVALIDITY and UID, which the entry id holds: IMAP
/// messages are immutable. Entries of the earlier scheme (a fingerprint
/// of the whole header) do not open with these keys: they are misses,
/// and are replaced when the message is stored again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageKey {
    pub uid: u32,
    pub(super) stored: [u8; 32],
    pub(super) epoch: Option<EpochName>,
}

/// The stored header fields a [`MessageKey`] is made of, as a FETCH names
/// them: the marker and the sealed container's media type.
pub const MARKER_FIELDS: [&str; 2] = ["X-Writ", "Content-Type"];

impl MessageKey {
    /// `stored_header`: the message's header block as the provider stores
    /// it (`BODY[HEADER]`), or only its [`MARKER_FIELDS`]
    /// (`BODY[HEADER.FIELDS (X-Writ Content-Type)]`): both give the same
    /// key. Its marker is read for the epoch.
    pub fn new(uid: u32, stored_header: &[u8]) -> MessageKey {
        let detected = crate::envelope::detect(stored_header);
        MessageKey::detected(uid, stored_header, detected.as_ref())
    }

    /// [`MessageKey::new`] with the marker already read.
    pub fn detected(uid: u32, stored_header: &[u8], marker: Option<&Detected>) -> MessageKey {
        // Each marker field by its lower-case name and unfolded value, in
        // the order stored: the whole header and the provider's answer for
        // these fields alone agree even where one is refolded or has other
        // line endings.
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        // v3: opened messages keep only trace and verdict fields from
        // above the marker; entries made before are misses.
        ctx.update(b"writ cache: marker fields v3");
        for field in crate::envelope::header::fields(stored_header) {
            let Some(name) = MARKER_FIELDS.iter().find(|n| field.is(n)) else {
                continue;
            };
            let value = field.value();
            for part in [name.to_ascii_lowercase().as_bytes(), &value[..]] {
                ctx.update(&(part.len() as u64).to_be_bytes());
                ctx.update(part);
            }
        }
        let mut stored = [0u8; 32];
        stored.copy_from_slice(ctx.finish().as_ref());
        MessageKey {
            uid,
            stored,
            epoch: marker.and_then(|d| epoch_name(&d.epoch)),
        }
    }

    pub(super) fn aad(&self, entry: &[u8], what: &[u8]) -> Vec<u8> {
        [entry, &self.stored[..], what].concat()
    }
}
