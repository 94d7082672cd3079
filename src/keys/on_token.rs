//! The HSM keyring: every epoch identity is encrypted on a PKCS#11 token by
//! an AES key that never leaves it (see `token.rs` for the mechanism).
//!
//! ```text
//! keys/
//!   keyring.toml      version = 2, [token] module, token_label, key_label; epochs
//!   epochs/<id>.hsm   the epoch's identity file, AES-GCM on the token
//! ```
//!
//! There is no master identity: unlocking, rotating and re-wrapping need the
//! token and its PIN; sealing still needs only keyring.toml. The unlocked
//! identities are the same [`Unlocked`] a passphrase keyring gives, so the
//! proxy, mailbox jobs, disclosure and `keys export-identity` work as
//! before; escrow never needed the keyring's secrets.
//!
//! Invariants: each `.hsm` file names the token key it was encrypted with,
//! so while `keys passwd --new-token-key` re-wraps (files first, then
//! keyring.toml) every state a crash leaves opens with the PIN. Moving a
//! keyring between a passphrase and a token writes every file of the new
//! kind first, then keyring.toml (the commit point: it says which kind the
//! directory is), then deletes the old kind's files.

use std::collections::BTreeMap;
use std::path::PathBuf;

use age::x25519::{Identity, Recipient};
use cryptoki::object::ObjectHandle;
use secrecy::{ExposeSecret, SecretString};

use super::atomic::{self, DirLock, Staged};
use super::keyring::{EPOCHS_DIR, MASTER_FILE, read_key_file};
use super::token::{self, Token, TokenRef};
use super::unlock::{self, Unlocked};
use super::{Epoch, EpochState, KeyError, Keyring};

impl Keyring {
    /// Creates an HSM keyring in `dir`: the AES key `at.key_label` on the
    /// token (generated there, sensitive and not extractable, unless a
    /// suitable key with that label exists) encrypts the first epoch. The
    /// token is opened before anything is written, so a wrong PIN or an
    /// absent token leaves no directory behind.
    pub fn init_on_token(
        dir: &std::path::Path,
        at: TokenRef,
        pin: &SecretString,
        escrow: Option<Recipient>,
    ) -> Result<Keyring, KeyError> {
        token::check_label("token label", &at.token_label)?;
        token::check_label("key label", &at.key_label)?;
        token::check_module(&at.module)?;
        if Keyring::exists(dir) {
            return Err(KeyError::AlreadyExists {
                dir: dir.to_path_buf(),
            });
        }
        let token = Token::open(&at, pin)?;
        let key = token.key_or_create(&at.key_label)?;
        let key_label = at.key_label.clone();
        Keyring::create(
            dir,
            escrow,
            None,
            Some(at),
            |keyring, epoch_key, written| {
                let epochs_dir = keyring.dir.join(EPOCHS_DIR);
                atomic::create_private_dir(&epochs_dir)?;
                written.push(epochs_dir);
                let epoch = &keyring.epochs[0];
                let path = keyring.epoch_path(&epoch.id);
                let bytes = seal_epoch_file(&token, &key_label, key, &epoch.id, epoch_key)?;
                atomic::write_atomic(&path, &bytes)?;
                written.push(path);
                Ok(())
            },
        )
    }

    /// Decrypts every epoch's identity on the token. One C_Login, then one
    /// C_Decrypt per epoch.
    pub fn unlock_on_token(&self, pin: &SecretString) -> Result<Unlocked, KeyError> {
        let token = Token::open(self.token_keyring()?, pin)?;
        self.unlock_epochs_on(&token)
    }

    /// Starts a new epoch (see [`Keyring::rotate`]); its identity is
    /// encrypted on the token, so this needs the PIN.
    pub fn rotate_on_token(&mut self, pin: &SecretString) -> Result<&Epoch, KeyError> {
        let at = self.token_keyring()?.clone();
        let token = Token::open(&at, pin)?;
        let key = token.key(&at.key_label)?;
        self.rotate_with(|fresh, _path, id, identity| {
            // keyring.toml changed kind or key since this value was loaded.
            if fresh.token.as_ref() != Some(&at) {
                return Err(KeyError::Busy {
                    dir: fresh.dir.clone(),
                });
            }
            seal_epoch_file(&token, &at.key_label, key, id, identity)
        })
    }

    /// The HSM counterpart of `keys passwd --new-master`: re-encrypts every
    /// epoch file under the token key `new_key_label` (created if the token
    /// has none by that label), then records it in keyring.toml for new
    /// epochs. The old key stays on the token; delete it once this is done
    /// (and backups of the old files are no longer wanted). Time
    /// proportional to the number of epochs.
    pub fn rewrap_on_token(&self, pin: &SecretString, new_key_label: &str) -> Result<(), KeyError> {
        token::check_label("key label", new_key_label)?;
        let _lock = DirLock::acquire(&self.dir)?;
        let mut fresh = Keyring::load(&self.dir)?;
        let token = Token::open(fresh.token_keyring()?, pin)?;
        let unlocked = fresh.unlock_epochs_on(&token)?;
        let key = token.key_or_create(new_key_label)?;
        let mut staged = Vec::new();
        for (epoch, identity) in fresh.live_epochs(&unlocked)? {
            let bytes = seal_epoch_file(&token, new_key_label, key, &epoch.id, identity)?;
            staged.push(atomic::stage(&fresh.epoch_path(&epoch.id), &bytes)?);
        }
        commit_all(staged, &fresh.dir.join(EPOCHS_DIR))?;
        if let Some(at) = fresh.token.as_mut() {
            at.key_label = new_key_label.to_string();
        }
        fresh.write_keyring_file()
    }

    /// Moves a passphrase keyring onto a token: every epoch identity is
    /// encrypted under `at`'s key, keyring.toml becomes an HSM keyring, then
    /// master.age and the `.age` epoch files are deleted. Backups taken
    /// before still open with the old passphrase.
    pub fn move_to_token(
        &self,
        passphrase: &SecretString,
        at: TokenRef,
        pin: &SecretString,
    ) -> Result<(), KeyError> {
        token::check_label("token label", &at.token_label)?;
        token::check_label("key label", &at.key_label)?;
        token::check_module(&at.module)?;
        let _lock = DirLock::acquire(&self.dir)?;
        let fresh = Keyring::load(&self.dir)?;
        let unlocked = fresh.unlock(passphrase)?;
        let token = Token::open(&at, pin)?;
        let key = token.key_or_create(&at.key_label)?;
        let mut moved = fresh.clone();
        moved.master_recipient = None;
        moved.next_master_recipient = None;
        moved.token = Some(at.clone());
        let mut staged = Vec::new();
        for (epoch, identity) in fresh.live_epochs(&unlocked)? {
            let bytes = seal_epoch_file(&token, &at.key_label, key, &epoch.id, identity)?;
            staged.push(atomic::stage(&moved.epoch_path(&epoch.id), &bytes)?);
        }
        commit_all(staged, &fresh.dir.join(EPOCHS_DIR))?;
        moved.write_keyring_file()?;
        let mut old: Vec<PathBuf> = fresh
            .epochs
            .iter()
            .map(|e| fresh.epoch_path(&e.id))
            .collect();
        old.push(fresh.dir.join(MASTER_FILE));
        remove_all(&old, &fresh.dir)
    }

    /// Moves an HSM keyring back to a passphrase: a new master identity,
    /// master.age sealed with `passphrase`, every epoch file re-encrypted to
    /// the master, keyring.toml becomes a passphrase keyring, then the
    /// `.hsm` files are deleted. The token key stays on the token.
    pub fn move_to_passphrase(
        &self,
        pin: &SecretString,
        passphrase: &SecretString,
        work_factor: Option<u8>,
    ) -> Result<(), KeyError> {
        if let Some(n) = work_factor {
            unlock::check_work_factor(n)?;
        }
        if passphrase.expose_secret().is_empty() {
            return Err(KeyError::Passphrase("empty passphrase refused"));
        }
        let _lock = DirLock::acquire(&self.dir)?;
        let fresh = Keyring::load(&self.dir)?;
        let token = Token::open(fresh.token_keyring()?, pin)?;
        let unlocked = fresh.unlock_epochs_on(&token)?;
        drop(token);
        let master = Identity::generate();
        let mut moved = fresh.clone();
        moved.master_recipient = Some(master.to_public());
        moved.token = None;
        let mut staged = Vec::new();
        for (epoch, identity) in fresh.live_epochs(&unlocked)? {
            let path = moved.epoch_path(&epoch.id);
            let text = unlock::identity_file_text(&format!("writ epoch {}", epoch.id), identity);
            let ct = unlock::encrypt_to(&path, &[&master.to_public()], &text)?;
            staged.push(atomic::stage(&path, &ct)?);
        }
        let master_path = fresh.dir.join(MASTER_FILE);
        let text = unlock::identity_file_text("writ master key", &master);
        let ct = unlock::encrypt_with_passphrase(&master_path, passphrase, work_factor, &text)?;
        staged.push(atomic::stage(&master_path, &ct)?);
        commit_all(staged, &fresh.dir.join(EPOCHS_DIR))?;
        atomic::sync_dir(&fresh.dir)?;
        moved.write_keyring_file()?;
        let old: Vec<PathBuf> = fresh
            .epochs
            .iter()
            .map(|e| fresh.epoch_path(&e.id))
            .collect();
        remove_all(&old, &fresh.dir)
    }

    /// The token of an HSM keyring, or the error saying it is not one.
    fn token_keyring(&self) -> Result<&TokenRef, KeyError> {
        self.token.as_ref().ok_or_else(|| KeyError::NotOnToken {
            dir: self.dir.clone(),
        })
    }

    fn unlock_epochs_on(&self, token: &Token) -> Result<Unlocked, KeyError> {
        let mut keys: BTreeMap<String, ObjectHandle> = BTreeMap::new();
        let mut unlocked = Unlocked::new(Default::default());
        // A retired epoch's identity file is gone: nothing is sealed to it.
        for epoch in self
            .epochs
            .iter()
            .filter(|e| e.state != EpochState::Retired)
        {
            let path = self.epoch_path(&epoch.id);
            let bytes = read_key_file(&path)?;
            let sealed = token::parse_epoch(&path, &bytes)?;
            let key = match keys.get(&sealed.key_label) {
                Some(key) => *key,
                None => {
                    let key = token.key(&sealed.key_label)?;
                    keys.insert(sealed.key_label.clone(), key);
                    key
                }
            };
            let text = token::open_epoch(token, key, &sealed, &epoch.id, &epoch.recipient)?
                .ok_or_else(|| KeyError::TokenUnwrap { path: path.clone() })?;
            let identity = unlock::parse_identity_file(&path, &text)?;
            if identity.to_public() != epoch.recipient {
                return Err(KeyError::Swapped { path });
            }
            unlocked.insert(epoch.id.clone(), identity);
        }
        Ok(unlocked)
    }

    /// The epochs with a key file, each with its unlocked identity.
    fn live_epochs<'a>(
        &'a self,
        unlocked: &'a Unlocked,
    ) -> Result<Vec<(&'a Epoch, &'a Identity)>, KeyError> {
        self.epochs
            .iter()
            .filter(|e| e.state != EpochState::Retired)
            .map(|e| {
                let identity = unlocked
                    .identity(&e.id)
                    .ok_or_else(|| KeyError::UnknownEpoch { id: e.id.clone() })?;
                Ok((e, identity))
            })
            .collect()
    }
}

/// The bytes of `epochs/<id>.hsm` for one epoch.
fn seal_epoch_file(
    token: &Token,
    key_label: &str,
    key: ObjectHandle,
    id: &str,
    identity: &Identity,
) -> Result<Vec<u8>, KeyError> {
    let text = unlock::identity_file_text(&format!("writ epoch {id}"), identity);
    token::seal_epoch(token, key_label, key, id, &identity.to_public(), &text)
}

/// Renames every staged file into place (all were written and fsynced
/// first, so a failure before this renames nothing), then syncs `dir`.
fn commit_all(staged: Vec<Staged>, dir: &std::path::Path) -> Result<(), KeyError> {
    for file in staged {
        file.commit()?;
    }
    atomic::sync_dir(dir)
}

/// Deletes the files of the keyring kind just left; a missing one is fine.
fn remove_all(paths: &[PathBuf], dir: &std::path::Path) -> Result<(), KeyError> {
    for path in paths {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(KeyError::io(path, e)),
        }
    }
    atomic::sync_dir(&dir.join(EPOCHS_DIR))?;
    atomic::sync_dir(dir)
}
