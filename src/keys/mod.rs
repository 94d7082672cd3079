//! The keyring on disk: epochs, the master identity, unlock, rotate, passwd.
//!
//! ```text
//! keys/
//!   keyring.toml      public part: master recipient, epochs (id, recipient, created, state)
//!   master.age        master X25519 identity, encrypted with the passphrase (age scrypt)
//!   epochs/<id>.age   each epoch's X25519 identity, encrypted to the master recipient
//!   escrow.txt        escrow recipient (optional, public)
//!   (HSM keyring: no master.age; epochs/<id>.hsm, encrypted on a PKCS#11
//!   token by a key that never leaves it: see `on_token.rs`)
//!   audit.*           the audit log and its signing key (see crate::audit)
//! ```
//!
//! Sealing needs only [`Keyring::load`] and [`Keyring::seal_recipients`]: no
//! passphrase, no private key. Opening needs [`Keyring::unlock`], which runs
//! scrypt once (for `master.age`) and then one X25519 decryption per epoch.

pub(crate) mod atomic;
mod keyring;
mod live;
mod on_token;
mod passphrase;
mod token;
mod unlock;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use keyring::Keyring;
pub(crate) use keyring::now_rfc3339;
/// The keyring's public files (the relay watches them: `smtp::connection`).
pub(crate) use keyring::{ESCROW_FILE, KEYRING_FILE, read_escrow, recorded_escrow};
pub use live::LiveKeys;
pub use passphrase::{
    CREDENTIAL_NAME, PIN_CREDENTIAL_NAME, credential_passphrase_file, credential_pin_file,
    passphrase_from, pin_from, prompt_passphrase, read_passphrase_file, read_pin_file,
};
pub use token::TokenRef;
pub use unlock::Unlocked;
pub(crate) use unlock::{encrypt_armored, passphrase_recipient, text_field};

/// The sealer for new mail: the active epoch, the escrow recipient and the
/// configured extra recipients, with the configured limits; a message
/// already sealed under one of the keyring's epochs passes unchanged.
/// Needs only the keyring's public part.
pub fn sealer(
    keyring: &Keyring,
    seal: &crate::config::SealConfig,
) -> Result<crate::envelope::Sealer, KeyError> {
    let active = keyring.active()?;
    let mut recipients = keyring.seal_recipients()?;
    recipients.extend(seal.extra_recipients.iter().cloned());
    let known = keyring.epochs().iter().map(|e| e.id.clone());
    Ok(external_sealer(active.id.clone(), recipients, seal).knowing(known))
}

/// A sealer for other recipients (external recipients' own keys), with the
/// configured limits; `epoch` names the key in the X-Writ marker.
pub fn external_sealer(
    epoch: String,
    recipients: Vec<age::x25519::Recipient>,
    seal: &crate::config::SealConfig,
) -> crate::envelope::Sealer {
    let limits = crate::envelope::Limits {
        max_header: usize::try_from(seal.max_header_bytes).unwrap_or(usize::MAX),
        ..crate::envelope::Limits::default()
    };
    crate::envelope::Sealer::new(epoch, recipients)
        .protect(seal.protected_fields.iter().cloned())
        .allow_outside(seal.outer_fields.iter().cloned())
        .spill_threshold(usize::try_from(seal.spill_threshold).unwrap_or(usize::MAX))
        .temp_dir(seal.temp_dir.clone())
        .limits(limits)
}

/// Largest scrypt work factor (log2) `init` and `passwd` accept. age refuses
/// to decrypt files whose factor is far above what the machine does in about
/// a second, so a bigger value could make `master.age` unopenable.
pub const MAX_WORK_FACTOR: u8 = 22;

/// The epoch id: the first 16 lowercase hex digits of SHA-256 of the epoch's
/// `age1...` recipient string (see docs/FORMAT.md).
pub fn epoch_id(recipient: &age::x25519::Recipient) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, recipient.to_string().as_bytes());
    digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One key epoch, public part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch {
    pub id: String,
    pub recipient: age::x25519::Recipient,
    /// RFC 3339, UTC.
    pub created: String,
    pub state: EpochState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EpochState {
    /// New mail is sealed to this epoch. Exactly one epoch is active.
    Active,
    /// Kept to open mail sealed earlier.
    DecryptOnly,
    /// No longer expected to be needed; still listed and still unlocked so
    /// that nothing sealed to it becomes unreadable by accident.
    Retired,
}

impl fmt::Display for EpochState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EpochState::Active => "active",
            EpochState::DecryptOnly => "decrypt-only",
            EpochState::Retired => "retired",
        })
    }
}

/// Errors of the keyring. Each names the file concerned and, where there is
/// one, what to do; none ever contains key material or a passphrase.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no keyring in {} (run `writ keys init`)", slash(.dir))]
    NoKeyring { dir: PathBuf },
    #[error("keyring already exists in {}", slash(.dir))]
    AlreadyExists { dir: PathBuf },
    #[error(
        "{} exists but keyring.toml does not (an interrupted init?): move it away, then run `writ keys init`",
        .path.display()
    )]
    Leftover { path: PathBuf },
    #[error("wrong passphrase for {}", .path.display())]
    WrongPassphrase { path: PathBuf },
    /// keyring.toml or escrow.txt does not parse or is inconsistent.
    #[error("{}: {detail}", .path.display())]
    Invalid { path: PathBuf, detail: String },
    #[error("{} is truncated or damaged (restore it from a backup)", .path.display())]
    Damaged { path: PathBuf },
    #[error("{} is missing (restore it from a backup)", .path.display())]
    Missing { path: PathBuf },
    /// keyring.toml records escrow, escrow.txt is gone: sealing on would
    /// leave new mail unescrowed without anyone noticing.
    #[error(
        "{} is missing but keyring.toml records escrow to {recorded}: restore it (one line: {recorded}) before sealing more mail",
        .path.display()
    )]
    EscrowMissing { path: PathBuf, recorded: String },
    #[error(
        "{} names {named} but keyring.toml records escrow to {recorded} (a replaced escrow.txt?): restore the recorded one",
        .path.display()
    )]
    EscrowMismatch {
        path: PathBuf,
        named: String,
        recorded: String,
    },
    #[error("{} holds the key of another epoch (swapped file?)", .path.display())]
    Swapped { path: PathBuf },
    #[error("{} is not encrypted to this keyring's master key (file from another keyring?)", .path.display())]
    WrongMaster { path: PathBuf },
    #[error("{} holds a master key that keyring.toml does not name (file from another keyring?)", .path.display())]
    MasterMismatch { path: PathBuf },
    #[error("unknown epoch {id} (see `writ keys list`)")]
    UnknownEpoch { id: String },
    #[error(
        "epoch {id} is the active epoch: rotate first (`writ keys rotate`), reseal, then retire"
    )]
    RetireActive { id: String },
    #[error("epoch {id} is already retired")]
    AlreadyRetired { id: String },
    #[error("no active epoch in {} (run `writ keys rotate`)", .path.display())]
    NoActive { path: PathBuf },
    #[error(
        "{} needs scrypt work factor {required}, more than this machine accepts (open it on a faster machine and run `writ keys passwd --work-factor N`)",
        .path.display()
    )]
    ExcessiveWork { path: PathBuf, required: u8 },
    #[error("scrypt work factor {0} is out of range (1..={MAX_WORK_FACTOR})")]
    WorkFactor(u8),
    #[error("{} is busy: another `writ keys` command is changing it", slash(.dir))]
    Busy { dir: PathBuf },
    #[error("cannot access {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("passphrase file {}: {detail}", .path.display())]
    PassphraseFile { path: PathBuf, detail: String },
    #[error("{0}")]
    Passphrase(&'static str),
    #[error("cannot encrypt {}: {detail}", .path.display())]
    Encrypt { path: PathBuf, detail: String },
    #[error("PIN file {}: {detail}", .path.display())]
    PinFile { path: PathBuf, detail: String },
    #[error("{0}")]
    Pin(&'static str),
    #[error(
        "wrong PIN for token `{label}` (check the PIN file: --pin-file, WRIT_PIN_FILE or the systemd credential `pin`)"
    )]
    WrongPin { label: String },
    #[error(
        "no token labelled `{label}` in PKCS#11 module {} (is the HSM connected and the token initialised? `pkcs11-tool --module MODULE -L` lists them)",
        .module.display()
    )]
    TokenAbsent { label: String, module: PathBuf },
    #[error("token `{label}`: {detail}")]
    Token { label: String, detail: String },
    #[error("token `{token}`, key `{key}`: {detail}")]
    TokenKey {
        token: String,
        key: String,
        detail: String,
    },
    #[error("cannot load PKCS#11 module {}: {detail}", .path.display())]
    TokenModule { path: PathBuf, detail: String },
    #[error("{} does not open with its token key (file from another keyring, altered, or the key was replaced?)", .path.display())]
    TokenUnwrap { path: PathBuf },
    #[error(
        "the keyring in {} is kept on token `{label}`: it opens with the token PIN (--pin-file), not a passphrase",
        slash(.dir)
    )]
    OnToken { dir: PathBuf, label: String },
    #[error(
        "the keyring in {} is protected by a passphrase, not a token (to move it onto one: `writ keys passwd --to-token`)",
        slash(.dir)
    )]
    NotOnToken { dir: PathBuf },
    #[error("{0} must be 1 to 64 printable characters without surrounding spaces")]
    Label(&'static str),
}

impl KeyError {
    pub(crate) fn io(path: &Path, source: io::Error) -> KeyError {
        KeyError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A directory as `keys/`, so messages read as a place, not a file.
fn slash(dir: &Path) -> String {
    let s = dir.display().to_string();
    if s.ends_with('/') { s } else { format!("{s}/") }
}

#[cfg(test)]
mod tests;
