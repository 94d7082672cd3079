//! The keyring directory: loading its public part, init, rotate, passwd.
//!
//! Two kinds of keyring share this code: a passphrase keyring (keyring.toml
//! version 1: `master.age` + `epochs/<id>.age`) and an HSM keyring
//! (version 2: a `[token]` table + `epochs/<id>.hsm`, see `on_token.rs`).
//! keyring.toml says which one a directory holds; files of the other kind
//! (left by an interrupted `keys passwd --to-token`) are ignored.

use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use age::x25519::{Identity, Recipient};
use secrecy::{ExposeSecret, SecretString};

use super::atomic::{self, DirLock, Staged};
use super::token::TokenRef;
use super::unlock::{self, Unlocked};
use super::{Epoch, EpochState, KeyError, epoch_id};

pub(crate) const KEYRING_FILE: &str = "keyring.toml";
pub(super) const MASTER_FILE: &str = "master.age";
pub(super) const EPOCHS_DIR: &str = "epochs";
pub(crate) const ESCROW_FILE: &str = "escrow.txt";

/// keyring.toml of a passphrase keyring (unchanged since the first writ).
const FORMAT_VERSION: u32 = 1;
/// keyring.toml of an HSM keyring: a `[token]` table instead of
/// `master_recipient`. A writ that knows only version 1 refuses it by
/// name instead of looking for a master.age that is not there.
const TOKEN_FORMAT_VERSION: u32 = 2;

/// The public part of a keyring, as loaded from its directory. Holds no
/// secret: sealing works from this alone.
#[derive(Debug, Clone)]
pub struct Keyring {
    pub(super) dir: PathBuf,
    /// The master of a passphrase keyring; `None` for an HSM keyring.
    pub(super) master_recipient: Option<Recipient>,
    /// Set only while `passwd --new-master` is switching masters (see
    /// [`Keyring::passwd`]): the master being introduced.
    pub(super) next_master_recipient: Option<Recipient>,
    /// The token key of an HSM keyring; `None` for a passphrase keyring.
    pub(super) token: Option<TokenRef>,
    pub(super) epochs: Vec<Epoch>,
    pub(super) escrow: Option<Recipient>,
    /// keyring.toml records the escrow recipient (made or rewritten by a
    /// writ that writes the record).
    pub(super) escrow_recorded: bool,
}

/// keyring.toml as stored.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    master_recipient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_master_recipient: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<TokenTable>,
    /// The escrow recipient escrow.txt must name, once the keyring has
    /// escrow (written by `escrow init`, `keys init --escrow-recipient`
    /// and every later rewrite): a lost escrow.txt is then refused by
    /// name instead of new mail going unescrowed. Keyrings made before
    /// it have none until their next rewrite (`keys rotate`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    escrow_recipient: Option<String>,
    #[serde(default, rename = "epoch")]
    epochs: Vec<EpochEntry>,
}

/// `[token]` of an HSM keyring's keyring.toml.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenTable {
    module: PathBuf,
    token_label: String,
    key_label: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EpochEntry {
    id: String,
    recipient: String,
    created: String,
    state: EpochState,
}

impl Keyring {
    /// Loads the public part: keyring.toml and escrow.txt. Needs no
    /// passphrase and reads no private key.
    pub fn load(dir: &Path) -> Result<Keyring, KeyError> {
        let (mut keyring, recorded) = Keyring::load_file(dir)?;
        let path = dir.join(KEYRING_FILE);
        keyring.escrow = escrow_of(dir, &path, recorded.as_deref())?;
        keyring.escrow_recorded = recorded.is_some();
        Ok(keyring)
    }

    /// keyring.toml alone (escrow left out, escrow.txt not read), for
    /// checks that look only at the epochs (the audit log's beginning):
    /// a lost escrow.txt must not silence them.
    pub(crate) fn load_epochs(dir: &Path) -> Result<Keyring, KeyError> {
        Keyring::load_file(dir).map(|(keyring, _)| keyring)
    }

    /// keyring.toml parsed and checked, and the escrow recipient it
    /// records.
    fn load_file(dir: &Path) -> Result<(Keyring, Option<String>), KeyError> {
        let path = dir.join(KEYRING_FILE);
        let src = match std::fs::read_to_string(&path) {
            Ok(src) => src,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(KeyError::NoKeyring {
                    dir: dir.to_path_buf(),
                });
            }
            Err(e) => return Err(KeyError::io(&path, e)),
        };
        let file: KeyringFile = toml::from_str(&src).map_err(|e| KeyError::Invalid {
            path: path.clone(),
            detail: crate::config::describe_toml_error(&src, &e),
        })?;
        let recorded = file.escrow_recipient.clone();
        Ok((Keyring::from_file(dir, &path, file)?, recorded))
    }

    /// Records `escrow` in keyring.toml (its escrow.txt written first):
    /// for `escrow init`, which holds the keyring directory's lock.
    pub(crate) fn record_escrow(dir: &Path, escrow: &Recipient) -> Result<(), KeyError> {
        let mut keyring = Keyring::load(dir)?;
        keyring.escrow = Some(escrow.clone());
        keyring.write_keyring_file()
    }

    fn from_file(dir: &Path, path: &Path, mut file: KeyringFile) -> Result<Keyring, KeyError> {
        let invalid = |detail: String| KeyError::Invalid {
            path: path.to_path_buf(),
            detail,
        };
        let parse = |what: &str, s: &str| {
            Recipient::from_str(s)
                .map_err(|_| invalid(format!("{what} `{s}` is not an age X25519 recipient")))
        };
        let (master, token) = keyring_kind(
            file.version,
            file.master_recipient.take(),
            file.next_master_recipient.is_some(),
            file.token.take(),
        )
        .map_err(invalid)?;
        let master_recipient = master.map(|m| parse("master_recipient", &m)).transpose()?;
        let next_master_recipient = file
            .next_master_recipient
            .as_deref()
            .map(|s| parse("next_master_recipient", s))
            .transpose()?;
        let mut epochs: Vec<Epoch> = Vec::with_capacity(file.epochs.len());
        for entry in file.epochs {
            let recipient = parse(&format!("epoch {} recipient", entry.id), &entry.recipient)?;
            if epoch_id(&recipient) != entry.id {
                return Err(invalid(format!(
                    "epoch {} does not match its recipient (its id would be {})",
                    entry.id,
                    epoch_id(&recipient)
                )));
            }
            if epochs.iter().any(|e| e.id == entry.id) {
                return Err(invalid(format!("epoch {} is listed twice", entry.id)));
            }
            epochs.push(Epoch {
                id: entry.id,
                recipient,
                created: entry.created,
                state: entry.state,
            });
        }
        if epochs
            .iter()
            .filter(|e| e.state == EpochState::Active)
            .count()
            > 1
        {
            return Err(invalid(
                "more than one epoch is active (set all but one to decrypt-only)".into(),
            ));
        }
        Ok(Keyring {
            dir: dir.to_path_buf(),
            master_recipient,
            next_master_recipient,
            token,
            epochs,
            escrow: None,
            escrow_recorded: false,
        })
    }

    /// Creates a new keyring in `dir` (created 0700 if missing; other files
    /// already there, such as a README, are left alone): a master identity
    /// sealed with `passphrase`, and one active epoch. Refuses to touch an
    /// existing keyring. `work_factor` is scrypt's log2 N for master.age
    /// (`None`: age's default, about one second).
    pub fn init(
        dir: &Path,
        passphrase: &SecretString,
        escrow: Option<Recipient>,
        work_factor: Option<u8>,
    ) -> Result<Keyring, KeyError> {
        if let Some(n) = work_factor {
            unlock::check_work_factor(n)?;
        }
        if passphrase.expose_secret().is_empty() {
            return Err(KeyError::Passphrase("empty passphrase refused"));
        }
        let master = Identity::generate();
        Keyring::create(
            dir,
            escrow,
            Some(master.to_public()),
            None,
            |keyring, epoch_key, written| {
                keyring.write_passphrase_files(&master, epoch_key, passphrase, work_factor, written)
            },
        )
    }

    /// Creates the keyring directory with one active epoch: checks, then
    /// `write_secrets` writes the epoch file and whatever protects it, then
    /// escrow.txt, the audit key and keyring.toml. On failure everything
    /// written is removed again.
    pub(super) fn create(
        dir: &Path,
        escrow: Option<Recipient>,
        master_recipient: Option<Recipient>,
        token: Option<TokenRef>,
        write_secrets: impl FnOnce(&Keyring, &Identity, &mut Vec<PathBuf>) -> Result<(), KeyError>,
    ) -> Result<Keyring, KeyError> {
        let created_dir = !exists(dir)?;
        atomic::create_private_dir(dir)?;
        let _lock = DirLock::acquire(dir)?;
        if exists(&dir.join(KEYRING_FILE))? {
            return Err(KeyError::AlreadyExists {
                dir: dir.to_path_buf(),
            });
        }
        // Without keyring.toml nothing can have been sealed to these, but
        // they may still be someone's only copy of a key: never overwrite.
        for leftover in [
            MASTER_FILE,
            EPOCHS_DIR,
            ESCROW_FILE,
            crate::audit::KEY_FILE,
            crate::audit::PUBLIC_FILE,
            crate::audit::LOG_FILE,
            crate::audit::HEAD_FILE,
        ] {
            let path = dir.join(leftover);
            if exists(&path)? {
                return Err(KeyError::Leftover { path });
            }
        }

        let epoch_key = Identity::generate();
        let recipient = epoch_key.to_public();
        let keyring = Keyring {
            dir: dir.to_path_buf(),
            master_recipient,
            next_master_recipient: None,
            token,
            epochs: vec![Epoch {
                id: epoch_id(&recipient),
                recipient,
                created: now_rfc3339(),
                state: EpochState::Active,
            }],
            escrow_recorded: escrow.is_some(),
            escrow,
        };

        // keyring.toml is written last: it is what makes the directory a
        // keyring. On failure everything written so far is removed again.
        let mut written: Vec<PathBuf> = Vec::new();
        let result = write_secrets(&keyring, &epoch_key, &mut written)
            .and_then(|()| keyring.write_public_files(&mut written));
        if result.is_err() {
            for path in written.iter().rev() {
                // Best effort: the original error is the one to report.
                let _ = std::fs::remove_file(path).or_else(|_| std::fs::remove_dir(path));
            }
            if created_dir {
                let _ = std::fs::remove_dir(dir);
            }
        }
        result.map(|()| keyring)
    }

    fn write_passphrase_files(
        &self,
        master: &Identity,
        epoch_key: &Identity,
        passphrase: &SecretString,
        work_factor: Option<u8>,
        written: &mut Vec<PathBuf>,
    ) -> Result<(), KeyError> {
        let epochs_dir = self.dir.join(EPOCHS_DIR);
        atomic::create_private_dir(&epochs_dir)?;
        written.push(epochs_dir.clone());
        let epoch = &self.epochs[0];
        let path = self.epoch_path(&epoch.id);
        let text = unlock::identity_file_text(&format!("writ epoch {}", epoch.id), epoch_key);
        let ct = unlock::encrypt_to(&path, &[&master.to_public()], &text)?;
        atomic::write_atomic(&path, &ct)?;
        written.push(path);

        let path = self.dir.join(MASTER_FILE);
        let text = unlock::identity_file_text("writ master key", master);
        let ct = unlock::encrypt_with_passphrase(&path, passphrase, work_factor, &text)?;
        atomic::write_atomic(&path, &ct)?;
        written.push(path);
        Ok(())
    }

    /// escrow.txt, the audit key and, last, keyring.toml.
    fn write_public_files(&self, written: &mut Vec<PathBuf>) -> Result<(), KeyError> {
        if let Some(escrow) = &self.escrow {
            let path = self.dir.join(ESCROW_FILE);
            let text = format!("# escrow recipient: its secret is kept offline\n{escrow}\n");
            atomic::write_atomic(&path, text.as_bytes())?;
            written.push(path);
        }

        // The audit signing key (see crate::audit for why it is not
        // encrypted to the master).
        let audit_files = crate::audit::create_key(&self.dir).map_err(|e| match e {
            crate::audit::AuditError::Key(e) => e,
            other => KeyError::Encrypt {
                path: self.dir.join(crate::audit::KEY_FILE),
                detail: other.to_string(),
            },
        })?;
        written.extend(audit_files);

        written.push(self.dir.join(KEYRING_FILE));
        self.write_keyring_file()
    }

    /// Whether `dir` holds a keyring (a keyring.toml), without loading it:
    /// lets `init` refuse before asking for a passphrase.
    pub fn exists(dir: &Path) -> bool {
        dir.join(KEYRING_FILE).exists()
    }

    /// The keyring directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The active epoch: the one new mail is sealed to.
    pub fn active(&self) -> Result<&Epoch, KeyError> {
        self.epochs
            .iter()
            .find(|e| e.state == EpochState::Active)
            .ok_or_else(|| KeyError::NoActive {
                path: self.dir.join(KEYRING_FILE),
            })
    }

    /// Every epoch, oldest first.
    pub fn epochs(&self) -> &[Epoch] {
        &self.epochs
    }

    /// One epoch by id.
    pub fn epoch(&self, id: &str) -> Result<&Epoch, KeyError> {
        self.epochs
            .iter()
            .find(|e| e.id == id)
            .ok_or_else(|| KeyError::UnknownEpoch { id: id.to_string() })
    }

    /// The escrow recipient, if the keyring has one.
    pub fn escrow(&self) -> Option<&Recipient> {
        self.escrow.as_ref()
    }

    /// The keyring has escrow (escrow.txt) that keyring.toml does not
    /// record yet (a keyring made before the record): a lost escrow.txt
    /// would go unnoticed until its next rewrite records it.
    pub fn escrow_unrecorded(&self) -> bool {
        self.escrow.is_some() && !self.escrow_recorded
    }

    /// The master's public recipient (epoch files are encrypted to it);
    /// `None` for an HSM keyring, which has no master identity.
    pub fn master_recipient(&self) -> Option<&Recipient> {
        self.master_recipient.as_ref()
    }

    /// Where the token key of an HSM keyring is; `None` for a passphrase
    /// keyring.
    pub fn token(&self) -> Option<&TokenRef> {
        self.token.as_ref()
    }

    /// Refuses a passphrase operation on an HSM keyring.
    fn passphrase_keyring(&self) -> Result<&Recipient, KeyError> {
        match (&self.master_recipient, &self.token) {
            (Some(master), None) => Ok(master),
            (_, Some(token)) => Err(KeyError::OnToken {
                dir: self.dir.clone(),
                label: token.token_label.clone(),
            }),
            (None, None) => Err(KeyError::NotOnToken {
                dir: self.dir.clone(),
            }),
        }
    }

    /// Public recipients every new seal goes to: the active epoch + escrow
    /// (if any).
    pub fn seal_recipients(&self) -> Result<Vec<Recipient>, KeyError> {
        let mut recipients = vec![self.active()?.recipient.clone()];
        recipients.extend(self.escrow.clone());
        Ok(recipients)
    }

    /// Decrypts every epoch's identity. scrypt runs once, for master.age;
    /// each epoch file then costs one X25519 decryption. Each epoch file must
    /// hold the key keyring.toml lists for it. An HSM keyring is refused
    /// ([`KeyError::OnToken`]): it opens with [`Keyring::unlock_on_token`].
    pub fn unlock(&self, passphrase: &SecretString) -> Result<Unlocked, KeyError> {
        let master = self.unlock_master(passphrase)?;
        self.unlock_epochs(&master)
    }

    pub(super) fn unlock_master(&self, passphrase: &SecretString) -> Result<Identity, KeyError> {
        let expected = self.passphrase_keyring()?;
        let path = self.dir.join(MASTER_FILE);
        let ciphertext = read_key_file(&path)?;
        let master = unlock::decrypt_master(&path, &ciphertext, passphrase)?;
        let public = master.to_public();
        if public != *expected && Some(&public) != self.next_master_recipient.as_ref() {
            return Err(KeyError::MasterMismatch { path });
        }
        Ok(master)
    }

    fn unlock_epochs(&self, master: &Identity) -> Result<Unlocked, KeyError> {
        let mut unlocked = Unlocked::new(Default::default());
        // A retired epoch's identity file is gone: nothing is sealed to it.
        for epoch in self
            .epochs
            .iter()
            .filter(|e| e.state != EpochState::Retired)
        {
            let path = self.epoch_path(&epoch.id);
            let ciphertext = read_key_file(&path)?;
            let identity = unlock::decrypt_epoch(&path, &ciphertext, master, &epoch.recipient)?;
            unlocked.insert(epoch.id.clone(), identity);
        }
        Ok(unlocked)
    }

    /// Starts a new epoch: it becomes active, the previously active one
    /// becomes decrypt-only. Needs no passphrase: the new epoch's identity is
    /// encrypted to the master's public recipient. Constant time. An HSM
    /// keyring rotates with [`Keyring::rotate_on_token`] (needs the PIN).
    pub fn rotate(&mut self) -> Result<&Epoch, KeyError> {
        self.passphrase_keyring()?;
        self.rotate_with(|fresh, path, id, key| {
            let text = unlock::identity_file_text(&format!("writ epoch {id}"), key);
            let recipients = fresh.master_recipients()?;
            unlock::encrypt_to(path, &recipients, &text)
        })
    }

    /// Rotation, with `encrypt` making the new epoch file's bytes (from the
    /// keyring as on disk, the file's path, the epoch id and its key).
    pub(super) fn rotate_with(
        &mut self,
        encrypt: impl FnOnce(&Keyring, &Path, &str, &Identity) -> Result<Vec<u8>, KeyError>,
    ) -> Result<&Epoch, KeyError> {
        let _lock = DirLock::acquire(&self.dir)?;
        // Work on what is on disk now, not on what this value saw earlier.
        let mut fresh = Keyring::load(&self.dir)?;
        let (key, recipient, id) = loop {
            let key = Identity::generate();
            let recipient = key.to_public();
            let id = epoch_id(&recipient);
            // A 64-bit id collision is practically impossible; never let
            // one overwrite an existing epoch file all the same.
            if fresh.epoch(&id).is_err() && !exists(&fresh.epoch_path(&id))? {
                break (key, recipient, id);
            }
        };
        // The epoch file goes first: a crash before keyring.toml is written
        // leaves an unlisted file and the old keyring, both harmless.
        atomic::create_private_dir(&self.dir.join(EPOCHS_DIR))?;
        let path = fresh.epoch_path(&id);
        let ct = encrypt(&fresh, &path, &id, &key)?;
        atomic::write_atomic(&path, &ct)?;

        for epoch in &mut fresh.epochs {
            if epoch.state == EpochState::Active {
                epoch.state = EpochState::DecryptOnly;
            }
        }
        fresh.epochs.push(Epoch {
            id,
            recipient,
            created: now_rfc3339(),
            state: EpochState::Active,
        });
        fresh.write_keyring_file()?;
        *self = fresh;
        self.active()
    }

    /// Retires a decrypt-only epoch: keyring.toml marks it retired, then
    /// its identity file is deleted, so mail still sealed under it can no
    /// longer be opened by this keyring. The caller checks first that no
    /// such mail remains (`writ keys retire` asks the provider). The
    /// active epoch cannot be retired. Retiring twice is an error.
    pub fn retire(&mut self, id: &str) -> Result<(), KeyError> {
        let _lock = DirLock::acquire(&self.dir)?;
        let mut fresh = Keyring::load(&self.dir)?;
        let epoch = fresh
            .epochs
            .iter_mut()
            .find(|e| e.id == id)
            .ok_or_else(|| KeyError::UnknownEpoch { id: id.to_string() })?;
        match epoch.state {
            EpochState::Active => return Err(KeyError::RetireActive { id: id.to_string() }),
            EpochState::Retired => return Err(KeyError::AlreadyRetired { id: id.to_string() }),
            EpochState::DecryptOnly => epoch.state = EpochState::Retired,
        }
        // keyring.toml first: a crash between the two leaves a retired
        // epoch with a stray file, never a listed epoch without its key.
        fresh.write_keyring_file()?;
        let path = fresh.epoch_path(id);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(KeyError::io(&path, e)),
        }
        atomic::sync_dir(&self.dir.join(EPOCHS_DIR))?;
        *self = fresh;
        Ok(())
    }

    /// Changes the passphrase. By default only master.age is rewritten (one
    /// atomic rename). With `new_master`, a new master identity replaces the
    /// old one and every epoch file is re-encrypted to it; time is
    /// proportional to the number of epochs. `work_factor` as for `init`.
    /// Everything is verified with the old passphrase before anything is
    /// written.
    pub fn passwd(
        &self,
        old: &SecretString,
        new: &SecretString,
        new_master: bool,
        work_factor: Option<u8>,
    ) -> Result<(), KeyError> {
        if let Some(n) = work_factor {
            unlock::check_work_factor(n)?;
        }
        if new.expose_secret().is_empty() {
            return Err(KeyError::Passphrase("empty passphrase refused"));
        }
        self.passphrase_keyring()?;
        let _lock = DirLock::acquire(&self.dir)?;
        let fresh = Keyring::load(&self.dir)?;
        let master = fresh.unlock_master(old)?;
        if !new_master {
            let master_path = self.dir.join(MASTER_FILE);
            let text = unlock::identity_file_text("writ master key", &master);
            let ct = unlock::encrypt_with_passphrase(&master_path, new, work_factor, &text)?;
            return atomic::write_atomic(&master_path, &ct);
        }
        let unlocked = fresh.unlock_epochs(&master)?;
        fresh.switch_master(&master, &unlocked, new, work_factor, 5)
    }

    /// Replaces the master identity; see the steps below. `last_step` is 5
    /// except in tests, which stop early to check that every state a crash
    /// can leave behind still unlocks.
    pub(super) fn switch_master(
        mut self,
        master: &Identity,
        unlocked: &Unlocked,
        new: &SecretString,
        work_factor: Option<u8>,
        last_step: u8,
    ) -> Result<(), KeyError> {
        // Switching masters touches several files, which cannot be renamed
        // all at once. The order keeps every intermediate state openable
        // with exactly one passphrase, so a crash at any instant loses no
        // key:
        //   1. keyring.toml names the new master as `next_master_recipient`
        //      (rotate encrypts new epochs to both masters from here on);
        //   2. every epoch file is re-encrypted to BOTH masters;
        //   3. master.age is replaced (the commit point: old passphrase
        //      before it, new passphrase after it; unlock accepts either
        //      master keyring.toml names);
        //   4. keyring.toml names only the new master;
        //   5. every epoch file is re-encrypted to the new master only.
        // Within steps 2 and 5 all temp files are written and fsynced before
        // the first rename, so a failure while encrypting or writing renames
        // nothing. A crash may leave `.writ-*.tmp` files, which are safe to
        // delete; running `passwd --new-master` again completes a switch.
        let master_path = self.dir.join(MASTER_FILE);
        let current = master.to_public();
        let next_master = Identity::generate();
        let next = next_master.to_public();
        self.master_recipient = Some(current.clone());
        self.next_master_recipient = Some(next.clone());
        self.write_keyring_file()?;
        if last_step >= 2 {
            self.reencrypt_epochs(unlocked, &[&current, &next])?;
        }
        if last_step >= 3 {
            let text = unlock::identity_file_text("writ master key", &next_master);
            let ct = unlock::encrypt_with_passphrase(&master_path, new, work_factor, &text)?;
            atomic::write_atomic(&master_path, &ct)?;
        }
        if last_step >= 4 {
            self.master_recipient = Some(next.clone());
            self.next_master_recipient = None;
            self.write_keyring_file()?;
        }
        if last_step >= 5 {
            self.reencrypt_epochs(unlocked, &[&next])?;
        }
        Ok(())
    }

    fn reencrypt_epochs(&self, unlocked: &Unlocked, to: &[&Recipient]) -> Result<(), KeyError> {
        let mut staged: Vec<Staged> = Vec::with_capacity(self.epochs.len());
        for epoch in self
            .epochs
            .iter()
            .filter(|e| e.state != EpochState::Retired)
        {
            let path = self.epoch_path(&epoch.id);
            let identity = unlocked
                .identity(&epoch.id)
                .ok_or_else(|| KeyError::UnknownEpoch {
                    id: epoch.id.clone(),
                })?;
            let text = unlock::identity_file_text(&format!("writ epoch {}", epoch.id), identity);
            staged.push(atomic::stage(
                &path,
                &unlock::encrypt_to(&path, to, &text)?,
            )?);
        }
        for file in staged {
            file.commit()?;
        }
        atomic::sync_dir(&self.dir.join(EPOCHS_DIR))
    }

    /// Recipients a new epoch file is encrypted to: the master, plus the
    /// incoming master while `passwd --new-master` is under way.
    fn master_recipients(&self) -> Result<Vec<&Recipient>, KeyError> {
        let master = self.passphrase_keyring()?;
        Ok(std::iter::once(master)
            .chain(self.next_master_recipient.as_ref())
            .collect())
    }

    /// `epochs/<id>.age` (passphrase keyring) or `epochs/<id>.hsm` (HSM
    /// keyring).
    pub(super) fn epoch_path(&self, id: &str) -> PathBuf {
        let ext = if self.token.is_some() { "hsm" } else { "age" };
        self.dir.join(EPOCHS_DIR).join(format!("{id}.{ext}"))
    }

    pub(super) fn write_keyring_file(&self) -> Result<(), KeyError> {
        let path = self.dir.join(KEYRING_FILE);
        let file = KeyringFile {
            version: if self.token.is_some() {
                TOKEN_FORMAT_VERSION
            } else {
                FORMAT_VERSION
            },
            master_recipient: self.master_recipient.as_ref().map(|r| r.to_string()),
            next_master_recipient: self.next_master_recipient.as_ref().map(|r| r.to_string()),
            escrow_recipient: self.escrow.as_ref().map(|r| r.to_string()),
            token: self.token.as_ref().map(|t| TokenTable {
                module: t.module.clone(),
                token_label: t.token_label.clone(),
                key_label: t.key_label.clone(),
            }),
            epochs: self
                .epochs
                .iter()
                .map(|e| EpochEntry {
                    id: e.id.clone(),
                    recipient: e.recipient.to_string(),
                    created: e.created.clone(),
                    state: e.state,
                })
                .collect(),
        };
        let body = toml::to_string(&file).map_err(|e| KeyError::Invalid {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        let text = format!(
            "# writ keyring, public part. Written by `writ keys`; the only hand edit\n\
             # that makes sense is an epoch's state (active, decrypt-only, retired).\n\n{body}"
        );
        atomic::write_atomic(&path, text.as_bytes())
    }
}

/// Which kind of keyring a keyring.toml describes: a passphrase keyring
/// (version 1: its master recipient) or an HSM keyring (version 2: its
/// token). `Err`: what is wrong, for [`KeyError::Invalid`].
fn keyring_kind(
    version: u32,
    master: Option<String>,
    next_master: bool,
    token: Option<TokenTable>,
) -> Result<(Option<String>, Option<TokenRef>), String> {
    match (version, master, token) {
        (FORMAT_VERSION, Some(master), None) => Ok((Some(master), None)),
        (FORMAT_VERSION, None, _) => Err("master_recipient is missing".into()),
        (FORMAT_VERSION, Some(_), Some(_)) => {
            Err("version 1 is a passphrase keyring: a master_recipient and no [token] table".into())
        }
        (TOKEN_FORMAT_VERSION, None, Some(t)) if !next_master => {
            super::token::check_label("token_label", &t.token_label)
                .and_then(|()| super::token::check_label("key_label", &t.key_label))
                .map_err(|e| e.to_string())?;
            let token = TokenRef {
                module: t.module,
                token_label: t.token_label,
                key_label: t.key_label,
            };
            Ok((None, Some(token)))
        }
        (TOKEN_FORMAT_VERSION, _, _) => Err(
            "version 2 is an HSM keyring: a [token] table and no master_recipient or \
             next_master_recipient"
                .into(),
        ),
        (v, _, _) => Err(format!(
            "keyring version {v} is not supported (this writ reads versions {FORMAT_VERSION} \
             and {TOKEN_FORMAT_VERSION})"
        )),
    }
}

/// Reads a key file; a missing one is reported as such, not as an I/O error.
pub(super) fn read_key_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => KeyError::Missing {
            path: path.to_path_buf(),
        },
        _ => KeyError::io(path, e),
    })
}

/// The escrow recipient keyring.toml records, read without loading the
/// rest of the keyring (`None`: no keyring.toml, or no record): only
/// that field is looked at, so a keyring.toml damaged elsewhere still
/// gives it. For `escrow recover`, which checks shares against it even
/// when escrow.txt is gone.
pub(crate) fn recorded_escrow(dir: &Path) -> Result<Option<Recipient>, KeyError> {
    let path = dir.join(KEYRING_FILE);
    let src = match std::fs::read_to_string(&path) {
        Ok(src) => src,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(KeyError::io(&path, e)),
    };
    let invalid = |detail: String| KeyError::Invalid {
        path: path.clone(),
        detail,
    };
    let table: toml::Table =
        toml::from_str(&src).map_err(|e| invalid(crate::config::describe_toml_error(&src, &e)))?;
    match table.get("escrow_recipient") {
        None => Ok(None),
        Some(toml::Value::String(r)) => Recipient::from_str(r).map(Some).map_err(|_| {
            invalid(format!(
                "escrow_recipient `{r}` is not an age X25519 recipient"
            ))
        }),
        Some(_) => Err(invalid("escrow_recipient is not a string".to_string())),
    }
}

/// The keyring's escrow recipient: escrow.txt, which must name what
/// keyring.toml records (`recorded`) once it records one. A keyring.toml
/// without a record (made before it existed) takes escrow.txt as it is.
fn escrow_of(
    dir: &Path,
    keyring_toml: &Path,
    recorded: Option<&str>,
) -> Result<Option<Recipient>, KeyError> {
    let path = dir.join(ESCROW_FILE);
    let file = read_escrow(&path)?;
    let Some(recorded) = recorded else {
        return Ok(file);
    };
    let recorded = Recipient::from_str(recorded).map_err(|_| KeyError::Invalid {
        path: keyring_toml.to_path_buf(),
        detail: format!("escrow_recipient `{recorded}` is not an age X25519 recipient"),
    })?;
    match file {
        None => Err(KeyError::EscrowMissing {
            path,
            recorded: recorded.to_string(),
        }),
        Some(named) if named != recorded => Err(KeyError::EscrowMismatch {
            path,
            named: named.to_string(),
            recorded: recorded.to_string(),
        }),
        Some(named) => Ok(Some(named)),
    }
}

/// escrow.txt: one `age1...` line; blank lines and `#` comments allowed.
pub(crate) fn read_escrow(path: &Path) -> Result<Option<Recipient>, KeyError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(KeyError::io(path, e)),
    };
    let invalid = |detail: &str| KeyError::Invalid {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    };
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let line = lines.next().ok_or_else(|| invalid("holds no recipient"))?;
    if lines.next().is_some() {
        return Err(invalid("holds more than one recipient"));
    }
    Recipient::from_str(line)
        .map(Some)
        .map_err(|_| invalid("not an age X25519 recipient (age1...)"))
}

pub(super) fn exists(path: &Path) -> Result<bool, KeyError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(KeyError::io(path, e)),
    }
}

/// The current time as RFC 3339 UTC, e.g. `2026-05-01T12:00:00Z`.
pub(crate) fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm; avoids a date crate for one timestamp).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m as u32, d as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_000), (2024, 10, 4));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        let now = now_rfc3339();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.ends_with('Z'));
    }
}
