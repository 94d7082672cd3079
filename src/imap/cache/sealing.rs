//! The cache's keys: what seals its values at rest, and why a restart can
//! read them again while a changed keyring cannot.
//!
//! - **Per epoch.** A message's summary and body are sealed under a key
//!   derived from the identity of the epoch the message names (HKDF, see
//!   [`crate::envelope::Keys::local_keys`]) and the cache's salt. After a
//!   restart the same keyring derives the same keys: the cache is warm. A
//!   keyring without that epoch cannot derive the key, so it is never
//!   served a plaintext it could not open itself; a rotation adds an epoch
//!   and leaves the others' entries readable.
//! - **Verdicts per keyring.** "This message did not open" holds only for
//!   the keyring that tried: verdicts are sealed under a key derived from
//!   every epoch key together, so any change of the keyring (a rotation,
//!   another keyring) makes them unreadable, and such messages are tried
//!   again.
//! - **A keyring grown while running** (SIGHUP after `keys rotate`): the
//!   keys are derived again with the same salt ([`CacheKeys::regrown`]):
//!   the new epoch gets its key, the others keep theirs, verdicts get a
//!   new key (so they are tried again, as after a restart). `keys passwd` changes the master key and passphrase, not the
//!   epochs: nothing changes for the cache.
//! - **The salt** (`key-salt`, 32 random bytes, not secret) is made with the
//!   cache: deleting the directory makes a new one, and keys nothing on
//!   disk was sealed with.
//! - **Keys that derive nothing** (a plain list of identities, in tests):
//!   one random key for the run, held in memory, as before; the cache is
//!   emptied at start.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use super::CacheError;
use crate::envelope::Keys;

/// The salt's file in the cache directory.
pub(super) const SALT_FILE: &str = "key-salt";
const SALT_LEN: usize = 32;

/// An epoch id as markers carry it (16 hex digits).
pub(super) type EpochName = [u8; 16];

/// The epoch id of a marker as the cache keys it; `None` for one that no
/// keyring could have (not 16 bytes).
pub(super) fn epoch_name(epoch: &str) -> Option<EpochName> {
    epoch.as_bytes().try_into().ok()
}

pub(super) struct CacheKeys {
    salt: [u8; SALT_LEN],
    epochs: HashMap<EpochName, LessSafeKey>,
    /// Keys that derive nothing: one random key for every epoch.
    ephemeral: Option<LessSafeKey>,
    verdicts: LessSafeKey,
    rng: SystemRandom,
}

fn aead_key(raw: &[u8; 32]) -> Result<LessSafeKey, CacheError> {
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, raw).map_err(|_| CacheError::Random)?;
    Ok(LessSafeKey::new(unbound))
}

impl CacheKeys {
    /// The keys for the cache in `dir` under `keys`. `Ok((keys, fresh))`:
    /// `fresh` when nothing already in `dir` can be read with them (a new
    /// salt, or keys that derive nothing), so the caller empties it.
    pub(super) fn for_dir(dir: &Path, keys: &dyn Keys) -> Result<(CacheKeys, bool), CacheError> {
        let rng = SystemRandom::new();
        let (salt, fresh) = salt(dir, &rng)?;
        let keys = CacheKeys::derive(salt, keys, rng)?;
        let fresh = fresh || keys.ephemeral.is_some();
        Ok((keys, fresh))
    }

    /// The keys for a keyring that grew (SIGHUP after a rotation): the same
    /// salt, so what the cache holds stays readable. Keys that derive
    /// nothing keep their one random key.
    pub(super) fn regrown(&self, keys: &dyn Keys) -> Result<Option<CacheKeys>, CacheError> {
        if self.ephemeral.is_some() {
            return Ok(None);
        }
        CacheKeys::derive(self.salt, keys, SystemRandom::new()).map(Some)
    }

    fn derive(
        salt: [u8; SALT_LEN],
        keys: &dyn Keys,
        rng: SystemRandom,
    ) -> Result<CacheKeys, CacheError> {
        let mut context = b"writ imap cache v1 ".to_vec();
        context.extend_from_slice(&salt);
        let mut local = keys.local_keys(&context);
        local.sort_by(|a, b| a.0.cmp(&b.0));
        let mut epochs = HashMap::new();
        let mut ring_ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ring_ctx.update(b"writ imap cache verdicts v1");
        for (id, key) in &local {
            ring_ctx.update(&(id.len() as u64).to_be_bytes());
            ring_ctx.update(id.as_bytes());
            ring_ctx.update(&key[..]);
            if let Some(name) = epoch_name(id) {
                epochs.insert(name, aead_key(key)?);
            }
        }
        let mut raw = zeroize::Zeroizing::new([0u8; 32]);
        let ephemeral = if local.is_empty() {
            rng.fill(&mut raw[..]).map_err(|_| CacheError::Random)?;
            let k = aead_key(&raw)?;
            rng.fill(&mut raw[..]).map_err(|_| CacheError::Random)?;
            Some(k)
        } else {
            raw.copy_from_slice(ring_ctx.finish().as_ref());
            None
        };
        let verdicts = aead_key(&raw)?;
        Ok(CacheKeys {
            salt,
            epochs,
            ephemeral,
            verdicts,
            rng,
        })
    }

    /// The key of a message of epoch `epoch`, if this keyring has it.
    fn for_epoch(&self, epoch: Option<EpochName>) -> Option<&LessSafeKey> {
        self.ephemeral.as_ref().or_else(|| self.epochs.get(&epoch?))
    }

    pub(super) fn seal_for(
        &self,
        epoch: Option<EpochName>,
        aad: &[u8],
        plain: &[u8],
    ) -> Option<Vec<u8>> {
        seal(&self.rng, self.for_epoch(epoch)?, aad, plain)
    }

    pub(super) fn open_for(
        &self,
        epoch: Option<EpochName>,
        aad: &[u8],
        sealed: &[u8],
    ) -> Option<Vec<u8>> {
        unseal(self.for_epoch(epoch)?, aad, sealed)
    }

    pub(super) fn seal_verdict(&self, aad: &[u8], plain: &[u8]) -> Option<Vec<u8>> {
        seal(&self.rng, &self.verdicts, aad, plain)
    }

    pub(super) fn open_verdict(&self, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        unseal(&self.verdicts, aad, sealed)
    }
}

/// The cache's salt, made (and `true`: the cache is new) when missing or
/// damaged.
fn salt(dir: &Path, rng: &SystemRandom) -> Result<([u8; SALT_LEN], bool), CacheError> {
    let path = dir.join(SALT_FILE);
    let at = |source| CacheError::Dir {
        path: path.clone(),
        source,
    };
    match fs::read(&path) {
        Ok(bytes) if bytes.len() == SALT_LEN => {
            let mut out = [0u8; SALT_LEN];
            out.copy_from_slice(&bytes);
            return Ok((out, false));
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(at(e)),
    }
    let mut out = [0u8; SALT_LEN];
    rng.fill(&mut out).map_err(|_| CacheError::Random)?;
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, out).map_err(at)?;
    fs::rename(&tmp, &path).map_err(at)?;
    Ok((out, true))
}

fn seal(rng: &SystemRandom, key: &LessSafeKey, aad: &[u8], plain: &[u8]) -> Option<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).ok()?;
    let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + CHACHA20_POLY1305.tag_len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    let (head, data) = out.split_at_mut(NONCE_LEN);
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), data)
        .ok()?;
    debug_assert_eq!(head, &nonce[..]);
    out.extend_from_slice(tag.as_ref());
    Some(out)
}

fn unseal(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let (nonce, data) = sealed.split_at_checked(NONCE_LEN)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut data = data.to_vec();
    let len = key
        .open_in_place(nonce, Aad::from(aad), &mut data)
        .ok()?
        .len();
    data.truncate(len);
    Some(data)
}
