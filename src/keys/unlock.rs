//! Encrypting and decrypting the key files, and the unlocked identities.
//!
//! Both `master.age` and `epochs/<id>.age` hold an age identity file in the
//! format `age-keygen` writes (comments, then one `AGE-SECRET-KEY-1...`
//! line), so an administrator can recover any key with the reference `age`
//! CLI alone: `age -d keys/master.age > master.txt`, then
//! `age -d -i master.txt keys/epochs/<id>.age`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::str::FromStr;

use age::x25519::{Identity, Recipient};
use age::{DecryptError, Decryptor, Encryptor};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::{KeyError, MAX_WORK_FACTOR};
use crate::envelope::OpeningKey;

/// Every epoch identity of a keyring, by epoch id. Key material is zeroized
/// when this is dropped (age's identities and x25519-dalek's secrets
/// zeroize themselves).
pub struct Unlocked {
    pub(crate) identities: BTreeMap<String, Identity>,
    /// The same identities, for opening (their public keys computed once):
    /// always the same epochs as `identities`.
    opening: BTreeMap<String, OpeningKey>,
}

impl Unlocked {
    /// These identities, by epoch id.
    pub(crate) fn new(identities: BTreeMap<String, Identity>) -> Unlocked {
        let opening = identities
            .iter()
            .map(|(id, identity)| (id.clone(), OpeningKey::new(identity)))
            .collect();
        Unlocked {
            identities,
            opening,
        }
    }

    /// Adds (or replaces) the identity of epoch `id`.
    pub(crate) fn insert(&mut self, id: String, identity: Identity) {
        self.opening.insert(id.clone(), OpeningKey::new(&identity));
        self.identities.insert(id, identity);
    }

    /// The identity of one epoch, if the keyring has that epoch.
    pub fn identity(&self, epoch_id: &str) -> Option<&Identity> {
        self.identities.get(epoch_id)
    }

    /// All (epoch id, identity) pairs, ordered by epoch id.
    pub fn identities(&self) -> impl Iterator<Item = (&str, &Identity)> {
        self.identities.iter().map(|(id, i)| (id.as_str(), i))
    }
}

impl std::fmt::Debug for Unlocked {
    // Never print key material, even in a debug log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unlocked")
            .field("epochs", &self.identities.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The plaintext of a key file: comments for a human, then the identity.
pub(crate) fn identity_file_text(label: &str, identity: &Identity) -> Zeroizing<Vec<u8>> {
    let mut text = Zeroizing::new(Vec::new());
    text.extend_from_slice(
        format!("# {label}\n# public key: {}\n", identity.to_public()).as_bytes(),
    );
    text.extend_from_slice(identity.to_string().expose_secret().as_bytes());
    text.push(b'\n');
    text
}

/// Parses the identity out of a decrypted key file. The content is
/// authenticated, so anything unparseable means a file writ did not write.
pub(crate) fn parse_identity_file(path: &Path, text: &[u8]) -> Result<Identity, KeyError> {
    let damaged = || KeyError::Damaged {
        path: path.to_path_buf(),
    };
    let text = std::str::from_utf8(text).map_err(|_| damaged())?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(damaged)?;
    Identity::from_str(line).map_err(|_| damaged())
}

/// Encrypts `plaintext` (a key file) to X25519 recipients.
pub(crate) fn encrypt_to(
    path: &Path,
    recipients: &[&Recipient],
    plaintext: &[u8],
) -> Result<Vec<u8>, KeyError> {
    let encryptor =
        Encryptor::with_recipients(recipients.iter().map(|r| *r as &dyn age::Recipient))
            .map_err(|e| encrypt_error(path, e.to_string()))?;
    finish_encryption(path, encryptor, plaintext)
}

/// Encrypts `plaintext` with a passphrase (age scrypt). `work_factor` is
/// log2 of scrypt's N; `None` keeps age's default (about a second here).
pub(crate) fn encrypt_with_passphrase(
    path: &Path,
    passphrase: &SecretString,
    work_factor: Option<u8>,
    plaintext: &[u8],
) -> Result<Vec<u8>, KeyError> {
    let recipient = passphrase_recipient(passphrase, work_factor)?;
    let encryptor = Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
        .map_err(|e| encrypt_error(path, e.to_string()))?;
    finish_encryption(path, encryptor, plaintext)
}

/// The age scrypt recipient for a passphrase; `work_factor` (log2 of N)
/// is checked, `None` keeps age's default.
pub(crate) fn passphrase_recipient(
    passphrase: &SecretString,
    work_factor: Option<u8>,
) -> Result<age::scrypt::Recipient, KeyError> {
    let mut recipient = age::scrypt::Recipient::new(passphrase.clone());
    if let Some(n) = work_factor {
        check_work_factor(n)?;
        recipient.set_work_factor(n);
    }
    Ok(recipient)
}

/// The value of the `name: value` line in a decrypted key file's text
/// (escrow shares, approval keys), trimmed.
pub(crate) fn text_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .map(str::trim)
}

/// Encrypts `plaintext` to one recipient, ASCII-armored: for the files
/// people carry and mail around (escrow shares, approval keys).
pub(crate) fn encrypt_armored(
    path: &Path,
    recipient: &dyn age::Recipient,
    plaintext: &[u8],
) -> Result<Vec<u8>, KeyError> {
    let fail = |e: &dyn std::fmt::Display| encrypt_error(path, e.to_string());
    let encryptor = Encryptor::with_recipients(std::iter::once(recipient)).map_err(|e| fail(&e))?;
    let mut out = Vec::new();
    let armor = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)
        .map_err(|e| fail(&e))?;
    let mut writer = encryptor.wrap_output(armor).map_err(|e| fail(&e))?;
    writer
        .write_all(plaintext)
        .and_then(|()| writer.finish())
        .and_then(|armor| armor.finish())
        .map_err(|e| fail(&e))?;
    Ok(out)
}

/// Rejects factors age would panic on or refuse to decrypt later.
pub(crate) fn check_work_factor(n: u8) -> Result<(), KeyError> {
    if (1..=MAX_WORK_FACTOR).contains(&n) {
        Ok(())
    } else {
        Err(KeyError::WorkFactor(n))
    }
}

fn finish_encryption(
    path: &Path,
    encryptor: Encryptor,
    plaintext: &[u8],
) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::new();
    let mut writer = encryptor
        .wrap_output(&mut out)
        .map_err(|e| encrypt_error(path, e.to_string()))?;
    writer
        .write_all(plaintext)
        .and_then(|()| writer.finish().map(drop))
        .map_err(|e| encrypt_error(path, e.to_string()))?;
    Ok(out)
}

fn encrypt_error(path: &Path, detail: String) -> KeyError {
    KeyError::Encrypt {
        path: path.to_path_buf(),
        detail,
    }
}

/// Decrypts `master.age` with the passphrase and returns the master identity.
pub(crate) fn decrypt_master(
    path: &Path,
    ciphertext: &[u8],
    passphrase: &SecretString,
) -> Result<Identity, KeyError> {
    let damaged = || KeyError::Damaged {
        path: path.to_path_buf(),
    };
    let decryptor = Decryptor::new_buffered(ciphertext).map_err(|_| damaged())?;
    if !decryptor.is_scrypt() {
        return Err(damaged());
    }
    let identity = age::scrypt::Identity::new(passphrase.clone());
    let reader = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|e| match e {
            // The scrypt stanza's AEAD fails: the key derived from the
            // passphrase is not the one that wrapped the file key.
            DecryptError::DecryptionFailed => KeyError::WrongPassphrase {
                path: path.to_path_buf(),
            },
            DecryptError::ExcessiveWork { required, .. } => KeyError::ExcessiveWork {
                path: path.to_path_buf(),
                required,
            },
            _ => damaged(),
        })?;
    let text = read_payload(path, reader)?;
    parse_identity_file(path, &text)
}

/// Decrypts an epoch file with the master identity and checks that it holds
/// the key of `expected` (the recipient keyring.toml lists for it).
pub(crate) fn decrypt_epoch(
    path: &Path,
    ciphertext: &[u8],
    master: &Identity,
    expected: &Recipient,
) -> Result<Identity, KeyError> {
    let damaged = || KeyError::Damaged {
        path: path.to_path_buf(),
    };
    let decryptor = Decryptor::new_buffered(ciphertext).map_err(|_| damaged())?;
    let reader = decryptor
        .decrypt(std::iter::once(master as &dyn age::Identity))
        .map_err(|e| match e {
            DecryptError::NoMatchingKeys => KeyError::WrongMaster {
                path: path.to_path_buf(),
            },
            _ => damaged(),
        })?;
    let text = read_payload(path, reader)?;
    let identity = parse_identity_file(path, &text)?;
    if identity.to_public() != *expected {
        return Err(KeyError::Swapped {
            path: path.to_path_buf(),
        });
    }
    Ok(identity)
}

/// Reads a decrypted payload; a failure here is a cut or altered file (the
/// header already authenticated, so the passphrase or key was right).
fn read_payload(path: &Path, mut reader: impl Read) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let mut text = Zeroizing::new(Vec::new());
    reader
        .read_to_end(&mut text)
        .map_err(|_| KeyError::Damaged {
            path: path.to_path_buf(),
        })?;
    Ok(text)
}

/// The unlocked keyring opens sealed messages: the epoch named in the
/// message picks its identity, so opening costs one X25519 per stanza
/// however many epochs exist (and no derivation of its public key:
/// [`OpeningKey`]).
impl crate::envelope::Keys for Unlocked {
    fn identities(&self, epoch: &str) -> Vec<&dyn age::Identity> {
        self.opening
            .get(epoch)
            .map(|i| vec![i as &dyn age::Identity])
            .unwrap_or_default()
    }

    /// HKDF-SHA256 of each epoch's identity ([`local_key`]).
    fn local_keys(&self, context: &[u8]) -> Vec<(String, Zeroizing<[u8; 32]>)> {
        self.identities
            .iter()
            .filter_map(|(id, identity)| Some((id.clone(), local_key(id, identity, context)?)))
            .collect()
    }
}

/// A key for local use (the IMAP cache) derived from an epoch identity.
/// HKDF-SHA256: the salt is `context`, the input the epoch's secret key,
/// the info names the use and the epoch.
pub(crate) fn local_key(
    id: &str,
    identity: &Identity,
    context: &[u8],
) -> Option<Zeroizing<[u8; 32]>> {
    let secret = identity.to_string();
    let info = [&b"writ local key v1 "[..], id.as_bytes()].concat();
    let mut out = Zeroizing::new([0u8; 32]);
    let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, context)
        .extract(secret.expose_secret().as_bytes());
    // 32 bytes from SHA-256's HKDF: never refused.
    prk.expand(&[&info], ring::hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(&mut out[..]))
        .ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(s: &str) -> SecretString {
        SecretString::from(s)
    }

    #[test]
    fn master_roundtrip_and_errors() {
        let p = Path::new("k/master.age");
        let master = Identity::generate();
        let text = identity_file_text("writ master key", &master);
        let ct = encrypt_with_passphrase(p, &pass("pw"), Some(4), &text).unwrap();
        let back = decrypt_master(p, &ct, &pass("pw")).unwrap();
        assert_eq!(back.to_public(), master.to_public());
        assert!(matches!(
            decrypt_master(p, &ct, &pass("other")),
            Err(KeyError::WrongPassphrase { .. })
        ));
        for cut in [0, 10, ct.len() / 2, ct.len() - 1] {
            assert!(
                matches!(
                    decrypt_master(p, &ct[..cut], &pass("pw")),
                    Err(KeyError::Damaged { .. })
                ),
                "cut at {cut}"
            );
        }
        assert!(matches!(
            encrypt_with_passphrase(p, &pass("pw"), Some(0), &text),
            Err(KeyError::WorkFactor(0))
        ));
    }

    #[test]
    fn epoch_roundtrip_and_errors() {
        let p = Path::new("k/epochs/x.age");
        let master = Identity::generate();
        let epoch = Identity::generate();
        let other = Identity::generate();
        let text = identity_file_text("epoch", &epoch);
        let ct = encrypt_to(p, &[&master.to_public()], &text).unwrap();
        let back = decrypt_epoch(p, &ct, &master, &epoch.to_public()).unwrap();
        assert_eq!(back.to_public(), epoch.to_public());
        assert!(matches!(
            decrypt_epoch(p, &ct, &master, &other.to_public()),
            Err(KeyError::Swapped { .. })
        ));
        assert!(matches!(
            decrypt_epoch(p, &ct, &other, &epoch.to_public()),
            Err(KeyError::WrongMaster { .. })
        ));
        assert!(matches!(
            decrypt_epoch(p, &ct[..ct.len() - 3], &master, &epoch.to_public()),
            Err(KeyError::Damaged { .. })
        ));
        // A passphrase-encrypted file where an epoch file belongs.
        let scrypt = encrypt_with_passphrase(p, &pass("pw"), Some(4), &text).unwrap();
        assert!(decrypt_epoch(p, &scrypt, &master, &epoch.to_public()).is_err());
    }
}
