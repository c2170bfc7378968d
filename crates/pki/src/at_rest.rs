//! The control plane's own encryption at rest: what it stores and must read
//! back (Terraform state, and a second layer over what is sealed to pools),
//! encrypted so that a copy of the database alone reveals nothing.
//!
//! A [`SecretsKeyring`] holds one or more 256-bit keys. The first encrypts;
//! every key decrypts, which is what makes rotation possible: put the new key
//! first, keep the old one second, re-encrypt (`gantry secrets-key rotate`),
//! then drop the old one.
//!
//! AES-256-GCM with a random 96-bit nonce per value. The caller's `context`
//! (table, row) is bound as associated data, so a ciphertext copied to another
//! row does not decrypt. Layout: `GNTRYAR1` | 4-byte key ID | nonce | ciphertext
//! with its tag.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

const MAGIC: &[u8] = b"GNTRYAR1";
const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;

/// Names a key without revealing it: the first 4 bytes of a SHA-256 over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 4]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    #[error(
        "holds no key: write one base64 key per line (make one with `gantry secrets-key generate`)"
    )]
    Empty,
    #[error("line {line}: not base64; a key is 32 random bytes in base64 (make one with `gantry secrets-key generate`)")]
    NotBase64 { line: usize },
    #[error("line {line}: a key is 32 bytes, this one is {len}; make one with `gantry secrets-key generate`")]
    WrongLength { line: usize, len: usize },
    #[error("line {line}: the same key as line {first}")]
    Duplicate { line: usize, first: usize },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AtRestError {
    #[error("encrypted under key {0}, which is not in the secrets keyring: add that key (as a later line) and start again")]
    UnknownKey(KeyId),
    #[error("cannot decrypt: the value is corrupt or was moved from another row")]
    Corrupt,
}

struct AtRestKey {
    id: KeyId,
    cipher: Aes256Gcm,
    /// Kept only to derive keys for other purposes ([`SecretsKeyring::derive_keys`]).
    secret: [u8; KEY_BYTES],
}

/// The control plane's keys for data at rest; the first one encrypts.
pub struct SecretsKeyring {
    keys: Vec<AtRestKey>,
}

impl fmt::Debug for SecretsKeyring {
    // Never the key bytes: only their IDs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsKeyring")
            .field("keys", &self.ids())
            .finish()
    }
}

impl SecretsKeyring {
    /// Parses one base64 key per line, the first being the current one.
    /// Blank lines and `#` comments are ignored; commas also separate keys,
    /// so the keyring fits on one line in an environment variable.
    pub fn parse(text: &str) -> Result<SecretsKeyring, KeyringError> {
        let mut keys: Vec<(usize, AtRestKey)> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = line.split('#').next().unwrap_or("");
            for item in line.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let bytes = BASE64
                    .decode(item)
                    .map_err(|_| KeyringError::NotBase64 { line: line_no })?;
                if bytes.len() != KEY_BYTES {
                    return Err(KeyringError::WrongLength {
                        line: line_no,
                        len: bytes.len(),
                    });
                }
                let key = AtRestKey {
                    id: key_id(&bytes),
                    cipher: Aes256Gcm::new_from_slice(&bytes).expect("a 32-byte key"),
                    secret: bytes.as_slice().try_into().expect("a 32-byte key"),
                };
                if let Some((first, _)) = keys.iter().find(|(_, k)| k.id == key.id) {
                    return Err(KeyringError::Duplicate {
                        line: line_no,
                        first: *first,
                    });
                }
                keys.push((line_no, key));
            }
        }
        if keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        Ok(SecretsKeyring {
            keys: keys.into_iter().map(|(_, k)| k).collect(),
        })
    }

    /// A new random key, base64: one line of a keyring.
    pub fn generate_key() -> String {
        let mut bytes = [0u8; KEY_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        BASE64.encode(bytes)
    }

    /// The key new values are encrypted under.
    pub fn current(&self) -> KeyId {
        self.keys[0].id
    }

    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(|k| k.id).collect()
    }

    /// A 256-bit key for another purpose (named by `info`) derived from each
    /// key of the ring with HKDF-SHA256, the current key's first. Every
    /// replica sharing the keyring derives the same keys; a derived key never
    /// reveals the key it came from.
    pub fn derive_keys(&self, info: &str) -> Vec<[u8; KEY_BYTES]> {
        self.keys
            .iter()
            .map(|key| {
                let mut out = [0u8; KEY_BYTES];
                hkdf::Hkdf::<Sha256>::new(Some(b"gantry derived key v1"), &key.secret)
                    .expand(info.as_bytes(), &mut out)
                    .expect("32 bytes is a valid HKDF-SHA256 output length");
                out
            })
            .collect()
    }

    /// Encrypts `plaintext` under the current key, bound to `context`.
    pub fn encrypt(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = key
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM encrypts any input under 64 GiB");
        let mut out =
            Vec::with_capacity(MAGIC.len() + key.id.0.len() + NONCE_BYTES + ciphertext.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&key.id.0);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Decrypts a value made by [`SecretsKeyring::encrypt`] with the same context.
    pub fn decrypt(&self, context: &str, data: &[u8]) -> Result<Vec<u8>, AtRestError> {
        let id = key_id_of(data).ok_or(AtRestError::Corrupt)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or(AtRestError::UnknownKey(id))?;
        let rest = &data[MAGIC.len() + 4..];
        if rest.len() < NONCE_BYTES + TAG_BYTES {
            return Err(AtRestError::Corrupt);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_BYTES);
        key.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| AtRestError::Corrupt)
    }

    /// Whether `data` is encrypted, and under the current key.
    pub fn is_current(&self, data: &[u8]) -> bool {
        key_id_of(data) == Some(self.current())
    }
}

/// The key a value was encrypted under, or None when it is not an at-rest
/// ciphertext (a value written before encryption at rest existed).
pub fn key_id_of(data: &[u8]) -> Option<KeyId> {
    let rest = data.strip_prefix(MAGIC)?;
    let id: [u8; 4] = rest.get(..4)?.try_into().ok()?;
    Some(KeyId(id))
}

fn key_id(key: &[u8]) -> KeyId {
    let digest = Sha256::new()
        .chain_update(b"gantry at-rest key id\0")
        .chain_update(key)
        .finalize();
    KeyId(digest[..4].try_into().expect("4 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(lines: &[&str]) -> SecretsKeyring {
        SecretsKeyring::parse(&lines.join("\n")).unwrap()
    }

    #[test]
    fn derived_keys_differ_by_purpose_and_follow_the_ring() {
        let (a, b) = (
            SecretsKeyring::generate_key(),
            SecretsKeyring::generate_key(),
        );
        let ring = keyring(&[&a, &b]);
        let keys = ring.derive_keys("ui session");
        assert_eq!(keys.len(), 2);
        assert_ne!(keys[0], keys[1]);
        assert_ne!(keys[0], ring.derive_keys("another purpose")[0]);
        // Same keyring, same keys: what lets several replicas agree.
        assert_eq!(keyring(&[&a]).derive_keys("ui session")[0], keys[0]);
        assert_eq!(keyring(&[&b, &a]).derive_keys("ui session")[1], keys[0]);
    }

    #[test]
    fn round_trips_and_binds_the_context() {
        let key = SecretsKeyring::generate_key();
        let ring = keyring(&[&key]);
        let sealed = ring.encrypt("state/a/1", b"terraform state");
        assert!(!sealed
            .windows(b"terraform state".len())
            .any(|w| w == b"terraform state"));
        assert_eq!(
            ring.decrypt("state/a/1", &sealed).unwrap(),
            b"terraform state"
        );
        assert_eq!(
            ring.decrypt("state/b/1", &sealed),
            Err(AtRestError::Corrupt)
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(
            ring.decrypt("state/a/1", &tampered),
            Err(AtRestError::Corrupt)
        );
        assert_eq!(ring.decrypt("x", b"plain"), Err(AtRestError::Corrupt));
        assert_eq!(
            ring.decrypt("x", b"GNTRYAR1abcd"),
            Err(AtRestError::UnknownKey(key_id_of(b"GNTRYAR1abcd").unwrap()))
        );
    }

    #[test]
    fn rotation_old_keys_decrypt_only_the_first_encrypts() {
        let old = SecretsKeyring::generate_key();
        let new = SecretsKeyring::generate_key();
        let before = keyring(&[&old]).encrypt("c", b"v");
        let rotated = keyring(&[&new, "# the previous key", &old]);
        assert_eq!(rotated.decrypt("c", &before).unwrap(), b"v");
        assert!(!rotated.is_current(&before));
        let after = rotated.encrypt("c", b"v");
        assert!(rotated.is_current(&after));
        assert_eq!(key_id_of(&after), Some(keyring(&[&new]).current()));
        let err = keyring(&[&new]).decrypt("c", &before).unwrap_err();
        assert_eq!(err, AtRestError::UnknownKey(keyring(&[&old]).current()));
        assert!(err
            .to_string()
            .contains(&keyring(&[&old]).current().to_string()));
    }

    #[test]
    fn bad_keyrings_name_the_line_and_never_echo_the_key() {
        let key = SecretsKeyring::generate_key();
        assert_eq!(
            SecretsKeyring::parse("\n# nothing\n").unwrap_err(),
            KeyringError::Empty
        );
        assert_eq!(
            SecretsKeyring::parse(&format!("{key}\nnot*base64")).unwrap_err(),
            KeyringError::NotBase64 { line: 2 }
        );
        assert_eq!(
            SecretsKeyring::parse("c2hvcnQ=").unwrap_err(),
            KeyringError::WrongLength { line: 1, len: 5 }
        );
        assert_eq!(
            SecretsKeyring::parse(&format!("{key}\n\n{key}")).unwrap_err(),
            KeyringError::Duplicate { line: 3, first: 1 }
        );
        let two = SecretsKeyring::parse(&format!("{key}, {}", SecretsKeyring::generate_key()));
        assert_eq!(two.unwrap().ids().len(), 2);
        assert!(!format!("{:?}", keyring(&[&key])).contains(&key));
    }
}
