//! Envelope encryption to a pool's key: what the control plane stores but
//! cannot read (a stack's secret variables, a run's workspace between plan
//! and apply). Only a worker holding the pool's private key opens it.
//!
//! A random AES-256-GCM key encrypts the data; RSA-OAEP (SHA-256) wraps that
//! key. Layout: `GNTRYENV1` | u16 BE wrapped-key length | wrapped key |
//! 12-byte nonce | ciphertext with its 16-byte tag.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use rsa::Oaep;
use sha2::Sha256;

use crate::{PoolPrivateKey, PoolPublicKey};

const MAGIC: &[u8] = b"GNTRYENV1";

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("not a Gantry envelope (bad header)")]
    Format,
    #[error("cannot encrypt: {0}")]
    Seal(String),
    #[error("cannot decrypt: the data was sealed to another pool's key (was the pool reset?) or it is corrupt")]
    Open,
}

/// Encrypts `plaintext` so that only the holder of `key`'s private half can read it.
pub fn seal(key: &PoolPublicKey, plaintext: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let mut rng = rand::thread_rng();
    let mut data_key = [0u8; 32];
    rng.fill_bytes(&mut data_key);
    let mut nonce = [0u8; 12];
    rng.fill_bytes(&mut nonce);
    let wrapped = key
        .rsa()
        .encrypt(&mut rng, Oaep::new::<Sha256>(), &data_key)
        .map_err(|e| EnvelopeError::Seal(e.to_string()))?;
    let cipher = Aes256Gcm::new_from_slice(&data_key).expect("a 32-byte key");
    let ciphertext = cipher
        .encrypt(Nonce::from_slice(&nonce), plaintext)
        .map_err(|e| EnvelopeError::Seal(e.to_string()))?;
    let mut out = Vec::with_capacity(MAGIC.len() + 2 + wrapped.len() + 12 + ciphertext.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(wrapped.len() as u16).to_be_bytes());
    out.extend_from_slice(&wrapped);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Decrypts an envelope made by [`seal`] for this key.
pub fn open(key: &PoolPrivateKey, sealed: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let rest = sealed.strip_prefix(MAGIC).ok_or(EnvelopeError::Format)?;
    if rest.len() < 2 {
        return Err(EnvelopeError::Format);
    }
    let wrapped_len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
    let rest = &rest[2..];
    if rest.len() < wrapped_len + 12 + 16 {
        return Err(EnvelopeError::Format);
    }
    let (wrapped, rest) = rest.split_at(wrapped_len);
    let (nonce, ciphertext) = rest.split_at(12);
    let data_key = key
        .rsa()
        .decrypt(Oaep::new::<Sha256>(), wrapped)
        .map_err(|_| EnvelopeError::Open)?;
    let cipher = Aes256Gcm::new_from_slice(&data_key).map_err(|_| EnvelopeError::Open)?;
    cipher
        .decrypt(Nonce::from_slice(nonce), ciphertext)
        .map_err(|_| EnvelopeError::Open)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PoolPrivateKey {
        crate::generate(2048, "t")
            .unwrap()
            .private_key_pem
            .parse()
            .unwrap()
    }

    #[test]
    fn seal_then_open_round_trips_and_other_keys_cannot_open() {
        let ours = key();
        let theirs = key();
        let sealed = seal(&ours.public_key(), b"terraform plan").unwrap();
        assert!(!sealed
            .windows(b"terraform plan".len())
            .any(|w| w == b"terraform plan"));
        assert_eq!(open(&ours, &sealed).unwrap(), b"terraform plan");
        assert!(matches!(open(&theirs, &sealed), Err(EnvelopeError::Open)));
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(open(&ours, &tampered).is_err());
        assert!(matches!(open(&ours, b"junk"), Err(EnvelopeError::Format)));
    }
}
