//! The HSM keyring's root: an AES-256 key on a PKCS#11 token (an HSM,
//! SoftHSM2 in tests) that encrypts each epoch identity and never leaves
//! the token.
//!
//! Mechanism: `CKM_AES_GCM`, C_Encrypt / C_Decrypt with a token key that is
//! `CKA_SENSITIVE` and not `CKA_EXTRACTABLE`, a fresh 96-bit IV per file
//! (from the host's CSPRNG; a handful of files per key, far below GCM's
//! 2^32 random-IV bound) and a 128-bit tag. The additional authenticated
//! data binds a file to its epoch (id and recipient), so a swapped or
//! altered file fails the tag. Why GCM and not AES key wrap (`CKM_AES_KEY_
//! WRAP_KWP`): key wrap in PKCS#11 wraps *token objects*; writ's epoch keys
//! are X25519 secrets that age uses in host memory, so wrapping them would
//! mean importing each one into the token and unwrapping it into an
//! extractable, non-sensitive object to read it back, which a hardened HSM
//! policy refuses. Plain AEAD encryption under a non-extractable key is what
//! SoftHSM2 and the common HSMs (Thales Luna, Entrust nShield, Utimaco,
//! YubiHSM 2, AWS CloudHSM) all offer for this use.
//!
//! Invariants: the PIN only goes to C_Login, is never formatted, logged or
//! put in an error; decrypted key text is held in [`Zeroizing`] buffers;
//! every PKCS#11 failure becomes a one-line [`KeyError`] that says what to
//! do. One [`Token`] (one C_Initialize of the module) is open at a time in
//! a process (a lock enforces it): callers open it, use it, drop it, and
//! dropping finalizes the module.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use secrecy::SecretString;
use zeroize::Zeroizing;

use super::KeyError;

/// GCM IV length in bytes (96 bits, the length GCM is defined for).
const IV_LEN: usize = 12;
/// GCM tag length in bits.
const TAG_BITS: u64 = 128;
/// The token key: AES-256.
const KEY_BYTES: u64 = 32;

/// Where the keyring's token key is: public, recorded in keyring.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRef {
    /// The vendor's PKCS#11 module (a shared library).
    pub module: PathBuf,
    /// The token's label (CKA_LABEL of the token, as `pkcs11-tool -L` shows).
    pub token_label: String,
    /// The label of the AES key new epoch files are encrypted with.
    pub key_label: String,
}

/// Only one [`Token`] is open in a process at a time: C_Initialize and
/// C_Finalize are per process, so a second one would be finalized under
/// the first.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A logged-in session on the keyring's token. Dropping it closes the
/// session and finalizes the module (cryptoki does not), so the next
/// [`Token::open`] sees the token afresh.
pub(crate) struct Token {
    /// `Some` until dropped.
    session: Option<Session>,
    module: Pkcs11,
    label: String,
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl Drop for Token {
    fn drop(&mut self) {
        drop(self.session.take());
        // Nothing to do about a failure here: the process goes on without
        // the token either way.
        let _ = self.module.clone().finalize();
    }
}

impl Token {
    /// Loads the module, finds the token by label and logs in with the PIN.
    /// A transient failure (see [`OPEN_ATTEMPTS`]) starts over with the
    /// module finalized and initialized again.
    pub(crate) fn open(at: &TokenRef, pin: &SecretString) -> Result<Token, KeyError> {
        let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let mut attempt = 1;
        loop {
            let module = load_module(&at.module)?;
            let failure = match find_and_login(&module, at, pin) {
                Ok(session) => {
                    return Ok(Token {
                        session: Some(session),
                        module,
                        label: at.token_label.clone(),
                        _one_at_a_time: guard,
                    });
                }
                Err(failure) => failure,
            };
            let _ = module.finalize();
            match failure {
                // SoftHSM2 lists a token whose file another process is
                // writing as absent until the next C_Initialize.
                Attempt::Transient(_) | Attempt::Final(KeyError::TokenAbsent { .. })
                    if attempt < OPEN_ATTEMPTS =>
                {
                    tracing::debug!(attempt, "token busy or not seen, trying again");
                    std::thread::sleep(OPEN_BACKOFF * 2u32.pow(attempt - 1));
                    attempt += 1;
                }
                Attempt::Transient(e) => return Err(token_error(&at.token_label, e)),
                Attempt::Final(e) => return Err(e),
            }
        }
    }

    fn session(&self) -> Result<&Session, KeyError> {
        self.session.as_ref().ok_or_else(|| KeyError::Token {
            label: self.label.clone(),
            detail: "the session is closed".into(),
        })
    }

    /// The AES key labelled `label`, checked to be one that never leaves
    /// the token.
    pub(crate) fn key(&self, label: &str) -> Result<ObjectHandle, KeyError> {
        let found = self
            .session()?
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(|e| self.error(e))?;
        let key = match found.as_slice() {
            [] => {
                return Err(KeyError::TokenKey {
                    token: self.label.clone(),
                    key: label.to_string(),
                    detail: "no such key on the token (was it deleted, or is this another token?)"
                        .into(),
                });
            }
            [key] => *key,
            _ => {
                return Err(KeyError::TokenKey {
                    token: self.label.clone(),
                    key: label.to_string(),
                    detail: "more than one secret key has this label".into(),
                });
            }
        };
        self.check_key(key, label)?;
        Ok(key)
    }

    /// The key labelled `label`, generated on the token (AES-256,
    /// sensitive, never extractable) if there is none.
    pub(crate) fn key_or_create(&self, label: &str) -> Result<ObjectHandle, KeyError> {
        match self.key(label) {
            Err(KeyError::TokenKey { detail, .. }) if detail.starts_with("no such key") => {}
            other => return other,
        }
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(KEY_BYTES.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Label(label.as_bytes().to_vec()),
        ];
        self.session()?
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(|e| self.error(e))
    }

    fn check_key(&self, key: ObjectHandle, label: &str) -> Result<(), KeyError> {
        let attributes = self
            .session()?
            .get_attributes(
                key,
                &[
                    AttributeType::KeyType,
                    AttributeType::Extractable,
                    AttributeType::Sensitive,
                ],
            )
            .map_err(|e| self.error(e))?;
        key_refusal(&attributes).map_or(Ok(()), |detail| {
            Err(KeyError::TokenKey {
                token: self.label.clone(),
                key: label.to_string(),
                detail: detail.to_string(),
            })
        })
    }

    /// Encrypts `plaintext` under `key`, bound to `aad`. Returns (IV,
    /// ciphertext with the tag appended).
    pub(crate) fn seal(
        &self,
        key: ObjectHandle,
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<([u8; IV_LEN], Vec<u8>), KeyError> {
        let mut iv = [0u8; IV_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut iv).map_err(
            |_| KeyError::Token {
                label: self.label.clone(),
                detail: "no randomness from the system for the IV".into(),
            },
        )?;
        let mut iv_param = iv;
        let params =
            GcmParams::new(&mut iv_param, aad, TAG_BITS.into()).map_err(|e| self.error(e))?;
        let ciphertext = self
            .session()?
            .encrypt(&Mechanism::AesGcm(params), key, plaintext)
            .map_err(|e| self.error(e))?;
        Ok((iv, ciphertext))
    }

    /// Decrypts what [`Token::seal`] wrote. `None`: the tag does not verify
    /// (another key, another epoch, or an altered file).
    pub(crate) fn open_sealed(
        &self,
        key: ObjectHandle,
        aad: &[u8],
        iv: &[u8],
        ciphertext: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, KeyError> {
        let mut iv = iv.to_vec();
        let params = GcmParams::new(&mut iv, aad, TAG_BITS.into()).map_err(|e| self.error(e))?;
        match self
            .session()?
            .decrypt(&Mechanism::AesGcm(params), key, ciphertext)
        {
            Ok(plaintext) => Ok(Some(Zeroizing::new(plaintext))),
            // SoftHSM2 reports a GCM tag that does not verify as
            // CKR_GENERAL_ERROR; the specification's codes are the others.
            Err(P11Error::Pkcs11(
                RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::DataInvalid
                | RvError::DataLenRange
                | RvError::GeneralError,
                _,
            )) => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    fn error(&self, e: P11Error) -> KeyError {
        token_error(&self.label, e)
    }
}

/// Why a token key's attributes (key type, CKA_EXTRACTABLE, CKA_SENSITIVE,
/// as the token answered) make it unfit, if they do. An attribute the
/// token did not return counts against the key: a key that might leave
/// the token is refused, never assumed to stay in it.
fn key_refusal(attributes: &[Attribute]) -> Option<&'static str> {
    const LEAVES: &str = "the key can leave the token (CKA_EXTRACTABLE or not CKA_SENSITIVE): \
                          use a new label and let writ create the key";
    let (mut aes, mut kept, mut sensitive) = (None, None, None);
    for attribute in attributes {
        match attribute {
            Attribute::KeyType(t) => aes = Some(*t == KeyType::AES),
            Attribute::Extractable(e) => kept = Some(!*e),
            Attribute::Sensitive(s) => sensitive = Some(*s),
            _ => {}
        }
    }
    match (aes, kept, sensitive) {
        (Some(false), _, _) => Some("not an AES key"),
        (None, _, _) => Some("the token does not say the key's type (CKA_KEY_TYPE)"),
        (_, Some(true), Some(true)) => None,
        _ => Some(LEAVES),
    }
}

/// How often [`Token::open`] tries to find the token and log in when the
/// module answers CKR_GENERAL_ERROR, which SoftHSM2's file store does to a
/// process reading the token while another one logs in (gateways sharing a
/// token, a `keys rotate` beside a reload), and which also makes it list
/// such a token as absent. Waits 20, 40, 80, 160, 320 ms between tries
/// (620 ms in all); then the error is reported.
const OPEN_ATTEMPTS: u32 = 6;
const OPEN_BACKOFF: std::time::Duration = std::time::Duration::from_millis(20);

/// A failed attempt at reaching the token: worth another try, or final.
enum Attempt {
    Transient(P11Error),
    Final(KeyError),
}

/// Loads and initializes the PKCS#11 module.
fn load_module(path: &Path) -> Result<Pkcs11, KeyError> {
    let module = Pkcs11::new(path).map_err(|e| KeyError::TokenModule {
        path: path.to_path_buf(),
        detail: module_error(&e),
    })?;
    match module.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(module),
        Err(e) => Err(KeyError::TokenModule {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }),
    }
}

/// Finds the token by label and logs in with the PIN.
fn find_and_login(module: &Pkcs11, at: &TokenRef, pin: &SecretString) -> Result<Session, Attempt> {
    let label = &at.token_label;
    let fail = |e: P11Error| match e {
        P11Error::Pkcs11(RvError::GeneralError, _) => Attempt::Transient(e),
        e => Attempt::Final(token_error(label, e)),
    };
    let mut found = Vec::new();
    for slot in module.get_slots_with_token().map_err(fail)? {
        let info = module.get_token_info(slot).map_err(fail)?;
        if info.label().trim_end() == label {
            found.push(slot);
        }
    }
    let slot = match found.as_slice() {
        [] => {
            return Err(Attempt::Final(KeyError::TokenAbsent {
                label: label.clone(),
                module: at.module.clone(),
            }));
        }
        [slot] => *slot,
        _ => {
            return Err(Attempt::Final(KeyError::Token {
                label: label.clone(),
                detail: "more than one token has this label (relabel one of them)".into(),
            }));
        }
    };
    let session = module.open_rw_session(slot).map_err(fail)?;
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(P11Error::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
            Err(Attempt::Final(KeyError::WrongPin {
                label: label.clone(),
            }))
        }
        Err(P11Error::Pkcs11(RvError::PinLocked, _)) => Err(Attempt::Final(KeyError::Token {
            label: label.clone(),
            detail: "the user PIN is locked after too many wrong tries (the security officer \
                     must unlock it)"
                .into(),
        })),
        Err(e) => Err(fail(e)),
    }
}

fn token_error(label: &str, e: P11Error) -> KeyError {
    let detail = match &e {
        P11Error::Pkcs11(RvError::TokenNotPresent | RvError::DeviceRemoved, _) => {
            "the token is not present (is the HSM connected?)".to_string()
        }
        P11Error::Pkcs11(rv, function) => format!("{function} failed: {}", short_rv(rv)),
        other => other.to_string(),
    };
    KeyError::Token {
        label: label.to_string(),
        detail,
    }
}

/// The PKCS#11 return value's name (CKR_...), not cryptoki's paragraph.
fn short_rv(rv: &RvError) -> String {
    format!("{rv:?}")
}

/// libloading's message names the file and the loader's reason on one line.
fn module_error(e: &P11Error) -> String {
    e.to_string().replace(['\r', '\n'], " ")
}

/// Is `path` a file a PKCS#11 module could be loaded from? Checked at
/// `keys init` so a typo is reported before anything is created.
pub(crate) fn check_module(path: &Path) -> Result<(), KeyError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(KeyError::TokenModule {
            path: path.to_path_buf(),
            detail: "no such file (give the vendor's PKCS#11 module, e.g. \
                     /usr/lib/softhsm/libsofthsm2.so)"
                .into(),
        })
    }
}

/// The first line of an `epochs/<id>.hsm` file.
const EPOCH_MAGIC: &str = "writ-token-epoch: 1";
/// Longest token or key label accepted (token labels are 32 bytes in
/// PKCS#11; key labels are free, this keeps keyring.toml readable).
pub const MAX_LABEL: usize = 64;

/// Refuses labels that could not be written on one line of a key file.
pub(crate) fn check_label(what: &'static str, label: &str) -> Result<(), KeyError> {
    if label.is_empty()
        || label.len() > MAX_LABEL
        || label.chars().any(char::is_control)
        || label.trim() != label
    {
        return Err(KeyError::Label(what));
    }
    Ok(())
}

/// What binds an epoch file to its epoch: a file moved to another name, or
/// holding another epoch's key, fails the tag.
fn epoch_aad(id: &str, recipient: &age::x25519::Recipient) -> Vec<u8> {
    format!("writ epoch {id} {recipient}").into_bytes()
}

/// Encrypts an epoch's key file text on the token: the bytes of
/// `epochs/<id>.hsm`.
pub(crate) fn seal_epoch(
    token: &Token,
    key_label: &str,
    key: ObjectHandle,
    id: &str,
    recipient: &age::x25519::Recipient,
    text: &[u8],
) -> Result<Vec<u8>, KeyError> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (iv, ciphertext) = token.seal(key, &epoch_aad(id, recipient), text)?;
    Ok(format!(
        "{EPOCH_MAGIC}\nepoch: {id}\nkey: {key_label}\nmechanism: CKM_AES_GCM\niv: {}\nciphertext: {}\n",
        b64.encode(iv),
        b64.encode(ciphertext)
    )
    .into_bytes())
}

/// An `epochs/<id>.hsm` file, parsed.
pub(crate) struct SealedEpoch {
    /// The token key it was encrypted with (keys passwd can leave files
    /// under two keys for a moment; each file names its own).
    pub key_label: String,
    iv: Vec<u8>,
    ciphertext: Vec<u8>,
}

/// Parses `epochs/<id>.hsm`; anything else is [`KeyError::Damaged`].
pub(crate) fn parse_epoch(path: &Path, bytes: &[u8]) -> Result<SealedEpoch, KeyError> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let damaged = || KeyError::Damaged {
        path: path.to_path_buf(),
    };
    let text = std::str::from_utf8(bytes).map_err(|_| damaged())?;
    let mut lines = text.lines();
    if lines.next() != Some(EPOCH_MAGIC) {
        return Err(damaged());
    }
    let field = |name: &str| super::text_field(text, name).ok_or_else(damaged);
    if field("mechanism")? != "CKM_AES_GCM" {
        return Err(damaged());
    }
    let iv = b64.decode(field("iv")?).map_err(|_| damaged())?;
    let ciphertext = b64.decode(field("ciphertext")?).map_err(|_| damaged())?;
    if iv.len() != IV_LEN || ciphertext.len() < (TAG_BITS / 8) as usize {
        return Err(damaged());
    }
    Ok(SealedEpoch {
        key_label: field("key")?.to_string(),
        iv,
        ciphertext,
    })
}

/// Decrypts an epoch file on the token. `None`: the tag fails (the file
/// belongs to another epoch or keyring, or was altered).
pub(crate) fn open_epoch(
    token: &Token,
    key: ObjectHandle,
    sealed: &SealedEpoch,
    id: &str,
    recipient: &age::x25519::Recipient,
) -> Result<Option<Zeroizing<Vec<u8>>>, KeyError> {
    token.open_sealed(
        key,
        &epoch_aad(id, recipient),
        &sealed.iv,
        &sealed.ciphertext,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_fit_only_when_the_token_says_it_stays_there() {
        use Attribute::{Extractable, KeyType as Type, Sensitive};
        let kept = [Type(KeyType::AES), Extractable(false), Sensitive(true)];
        assert_eq!(key_refusal(&kept), None);
        // Said to leave, or not said at all: refused.
        for attributes in [
            vec![Type(KeyType::AES), Extractable(true), Sensitive(true)],
            vec![Type(KeyType::AES), Extractable(false), Sensitive(false)],
            vec![Type(KeyType::AES), Sensitive(true)],
            vec![Type(KeyType::AES), Extractable(false)],
            vec![Type(KeyType::AES)],
        ] {
            assert!(
                key_refusal(&attributes).is_some_and(|r| r.contains("can leave the token")),
                "{attributes:?}"
            );
        }
        assert_eq!(
            key_refusal(&[Type(KeyType::DES3), Extractable(false), Sensitive(true)]),
            Some("not an AES key")
        );
        assert!(key_refusal(&[Extractable(false), Sensitive(true)]).is_some());
    }

    #[test]
    fn labels() {
        for good in ["writ", "writ keyring 2", "ä-key"] {
            assert!(check_label("key label", good).is_ok(), "{good}");
        }
        let long = "x".repeat(MAX_LABEL + 1);
        for bad in ["", " lead", "trail ", "new\nline", "tab\t", long.as_str()] {
            assert!(check_label("key label", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn epoch_file_parsing() {
        let p = Path::new("k/epochs/x.hsm");
        let good = format!(
            "{EPOCH_MAGIC}\nepoch: x\nkey: writ-keyring\nmechanism: CKM_AES_GCM\n\
             iv: AAAAAAAAAAAAAAAA\nciphertext: {}\n",
            "A".repeat(24)
        );
        let sealed = parse_epoch(p, good.as_bytes()).unwrap();
        assert_eq!(sealed.key_label, "writ-keyring");
        assert_eq!(sealed.iv.len(), IV_LEN);
        for bad in [
            good.replace(EPOCH_MAGIC, "writ-token-epoch: 2"),
            good.replace("CKM_AES_GCM", "CKM_AES_CBC"),
            good.replace("iv: AAAAAAAAAAAAAAAA", "iv: AAAA"),
            good.replace(&"A".repeat(24), "AAAA"),
            good.replace("ciphertext: ", "ciphertext: !"),
            good.replace("key: writ-keyring\n", ""),
            String::new(),
        ] {
            assert!(
                matches!(
                    parse_epoch(p, bad.as_bytes()),
                    Err(KeyError::Damaged { .. })
                ),
                "{bad}"
            );
        }
        assert!(parse_epoch(p, b"\xff\xfe").is_err());
    }
}
