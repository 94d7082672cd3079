//! A sealed message's own file keys, kept for the one caller that asks
//! ([`super::Sealer::seal_witnessed`]): they open exactly that message
//! with no X25519 agreement, so a mailbox job can prove that every copy it
//! makes opens to its original before the original may be expunged, for
//! the price of a decryption.
//!
//! Invariants:
//! - The keys live only in the age crate's zeroizing `FileKey`; nothing
//!   here formats, logs or writes them (`Debug` prints how many there are).
//! - A witness answers only the stanzas writ wrote for that message: an
//!   X25519 stanza whose ephemeral share is the one recorded when its age
//!   file was made. Any other age file gets no key from it, so it cannot
//!   vouch for a message it did not see sealed.

use age_core::format::{FileKey, Stanza};
use age_core::secrecy::ExposeSecret;

use super::open::Keys;

/// The file key of one age file and the ephemeral share of its first
/// X25519 stanza (the base64 argument, as written).
pub(super) struct FileKeyOf {
    pub share: String,
    pub key: FileKey,
}

impl FileKeyOf {
    /// A second copy of the key (the age file keeps its own).
    pub fn new(share: String, key: &FileKey) -> FileKeyOf {
        FileKeyOf {
            share,
            key: copy(key),
        }
    }
}

fn copy(key: &FileKey) -> FileKey {
    FileKey::init_with_mut(|k| k.copy_from_slice(key.expose_secret()))
}

/// The file keys of one sealed message (summary and payload).
#[derive(Default)]
pub struct Witness {
    files: Vec<FileKeyOf>,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Witness({} file keys)", self.files.len())
    }
}

impl Witness {
    pub(super) fn push(&mut self, file: FileKeyOf) {
        self.files.push(file);
    }
}

impl age::Identity for Witness {
    fn unwrap_stanza(&self, stanza: &Stanza) -> Option<Result<FileKey, age::DecryptError>> {
        if stanza.tag != "X25519" {
            return None;
        }
        let share = stanza.args.first()?;
        self.files
            .iter()
            .find(|f| &f.share == share)
            .map(|f| Ok(copy(&f.key)))
    }
}

/// Opens only the message it was made for, whatever its epoch.
impl Keys for Witness {
    fn identities(&self, _epoch: &str) -> Vec<&dyn age::Identity> {
        vec![self]
    }
}

#[cfg(test)]
mod tests {
    use super::super::{EnvelopeError, Sealed, Sealer, open};

    fn sealer() -> Sealer {
        let id = age::x25519::Identity::generate();
        Sealer::new("0123456789abcdef", vec![id.to_public()])
    }

    fn message(n: usize) -> Vec<u8> {
        let mut m = format!("From: a@example.test\r\nSubject: {n}\r\n\r\n").into_bytes();
        m.extend(std::iter::repeat_n(b'x', n));
        m.extend_from_slice(b"\r\n");
        m
    }

    #[test]
    fn a_witness_opens_its_own_message_small_and_large() {
        let sealer = sealer();
        for n in [0, 1000, 3 * 64 * 1024 + 5] {
            let m = message(n);
            let mut sealed = Vec::new();
            let (done, witness) = sealer.seal_witnessed(&m[..], &mut sealed).unwrap();
            assert!(matches!(done, Sealed::Sealed { .. }));
            let mut opened = Vec::new();
            open(&sealed[..], &witness, &mut opened).unwrap();
            assert_eq!(opened, m);
        }
    }

    #[test]
    fn a_witness_opens_no_other_message() {
        let sealer = sealer();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let (_, witness_a) = sealer.seal_witnessed(&message(10)[..], &mut a).unwrap();
        sealer.seal(&message(10)[..], &mut b).unwrap();
        let err = open(&b[..], &witness_a, &mut Vec::new()).unwrap_err();
        assert!(matches!(err, EnvelopeError::NoMatchingKey), "{err:?}");
    }

    #[test]
    fn a_witness_does_not_vouch_for_changed_bytes() {
        let sealer = sealer();
        let m = message(5000);
        let mut sealed = Vec::new();
        let (_, witness) = sealer.seal_witnessed(&m[..], &mut sealed).unwrap();
        // One base64 character in the middle of the payload's armor.
        let at = sealed.len() - 2000;
        sealed[at] = if sealed[at] == b'A' { b'B' } else { b'A' };
        let mut opened = Vec::new();
        assert!(open(&sealed[..], &witness, &mut opened).is_err());
    }

    #[test]
    fn debug_shows_no_key() {
        let sealer = sealer();
        let (_, witness) = sealer
            .seal_witnessed(&message(1)[..], &mut Vec::new())
            .unwrap();
        assert_eq!(format!("{witness:?}"), "Witness(2 file keys)");
    }
}
