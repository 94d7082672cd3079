//! The organisation's sealer for relayed mail, made again only when the
//! keyring's files change.
//!
//! Every sealed message used to read and parse `keyring.toml` and
//! `escrow.txt` (about 60 µs of a relayed 20 KB message's CPU). Now each
//! message looks at the two files' metadata (two `stat` calls) and reuses
//! the sealer made from them while that is unchanged.
//!
//! Invariants:
//! - A `keys rotate` (or any other change of either file) takes effect for
//!   the next message, as before: the files are replaced by rename (a new
//!   inode) or rewritten (a new size, modification or change time, to the
//!   nanosecond), and either makes the stamp differ.
//! - Nothing that failed is kept: a keyring that cannot be read or parsed
//!   fails the message (451), and is read again for the next one.
//! - The stamp is taken before the files are read: a change racing the
//!   read makes the next message read them again.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use crate::config::SealConfig;
use crate::envelope::Sealer;
use crate::keys::{self, KeyError, Keyring};

/// What identifies one version of a file: `None` when it does not exist
/// (or cannot be looked at; then the load itself reports why).
type FileStamp = Option<(u64, u64, u64, i64, i64, i64, i64)>;

fn stamp(path: &Path) -> FileStamp {
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

/// The last sealer made and the stamps of the files it was made from.
#[derive(Default)]
pub struct OrgSealer {
    cached: Mutex<Option<([FileStamp; 2], Sealer)>>,
}

impl OrgSealer {
    /// The sealer for the keyring in `dir` with `seal`'s settings (the
    /// same `seal` on every call).
    pub fn get(&self, dir: &Path, seal: &SealConfig) -> Result<Sealer, KeyError> {
        let now = [
            stamp(&dir.join(keys::KEYRING_FILE)),
            stamp(&dir.join(keys::ESCROW_FILE)),
        ];
        if now[0].is_some() {
            let cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((stamps, sealer)) = cached.as_ref()
                && *stamps == now
            {
                return Ok(sealer.clone());
            }
        }
        let keyring = Keyring::load(dir)?;
        let sealer = keys::sealer(&keyring, seal)?;
        if now[0].is_some() {
            *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some((now, sealer.clone()));
        }
        Ok(sealer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_is_seen_by_the_next_message() {
        let dir = tempfile::tempdir().unwrap();
        let pass = secrecy::SecretString::from("org sealer test".to_string());
        Keyring::init(dir.path(), &pass, None, Some(10)).unwrap();
        let cache = OrgSealer::default();
        let seal = SealConfig::default();
        let first = cache.get(dir.path(), &seal).unwrap();
        assert_eq!(cache.get(dir.path(), &seal).unwrap().epoch(), first.epoch());
        let mut keyring = Keyring::load(dir.path()).unwrap();
        keyring.rotate().unwrap();
        let after = cache.get(dir.path(), &seal).unwrap();
        assert_ne!(
            after.epoch(),
            first.epoch(),
            "the cached sealer outlived a rotation"
        );
        assert_eq!(
            after.epoch(),
            Keyring::load(dir.path()).unwrap().active().unwrap().id
        );
    }
}
