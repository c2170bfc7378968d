//! Worker pool keys.
//!
//! The user keeps the pool's private key; the control plane only ever sees
//! the CSR made from it. This crate does the four things that needs, all with
//! RustCrypto's audited RSA and X.509 code:
//!
//! - [`generate`]: a new RSA 4096 key and CSR (`gantry pool keygen`);
//! - [`PoolPublicKey::from_csr_pem`]: parse and verify a CSR (ours or openssl's);
//! - [`PoolPrivateKey::sign`]: the launcher's proof of possession;
//! - [`PoolPublicKey::verify`]: the server's check of that proof;
//! - [`envelope`]: data sealed to the pool's key (secrets, stored workspaces);
//! - [`at_rest`]: the control plane's own keyring for what it stores.

pub mod at_rest;
pub mod envelope;

pub mod ca_bundle;

use std::str::FromStr;

use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256, Sha384, Sha512};
use x509_cert::der::pem::PemLabel;
use x509_cert::der::{Decode, DecodeOwned, Encode, EncodePem};
use x509_cert::request::CertReq;

/// Pools use RSA keys of at least this size.
pub const MIN_RSA_BITS: usize = 2048;
/// What `gantry pool keygen` generates (the seed's `openssl req -newkey rsa:4096`).
pub const KEYGEN_RSA_BITS: usize = 4096;

const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_SHA256_WITH_RSA: &str = "1.2.840.113549.1.1.11";
const OID_SHA384_WITH_RSA: &str = "1.2.840.113549.1.1.12";
const OID_SHA512_WITH_RSA: &str = "1.2.840.113549.1.1.13";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("not a PEM certificate signing request ({0}); make one with `gantry pool keygen` or `openssl req -new -newkey rsa:4096 -nodes -keyout pool.key -out pool.csr`")]
    CsrNotPem(String),
    #[error("the CSR's key is not RSA; Gantry pools use RSA keys (rsa:4096)")]
    CsrNotRsa,
    #[error("the CSR's RSA key has {0} bits; use at least {MIN_RSA_BITS} (rsa:4096 recommended)")]
    KeyTooSmall(usize),
    #[error("the CSR is signed with an unsupported algorithm {0}; use SHA-256 with RSA (openssl's default)")]
    CsrAlgorithm(String),
    #[error("the CSR's signature does not verify: the file is corrupt or was edited")]
    CsrSignature,
    #[error("not a PEM private key ({0}); expected `-----BEGIN PRIVATE KEY-----` (PKCS#8) or `-----BEGIN RSA PRIVATE KEY-----` (PKCS#1)")]
    PrivateKeyNotPem(String),
    #[error("key generation failed: {0}")]
    Generate(String),
}

/// Decodes a PEM document (a CSR, a certificate) through DER, instead of
/// der 0.7's streaming `DecodePem::from_pem`, which spins forever on a body
/// that ends inside a length, such as `MIIE` (found by fuzz/fuzz_targets/csr.rs).
pub(crate) fn decode_pem<T: DecodeOwned + PemLabel>(pem: &[u8]) -> x509_cert::der::Result<T> {
    let (label, der) = x509_cert::der::pem::decode_vec(pem)?;
    T::validate_pem_label(label)?;
    T::from_der(&der)
}

/// The pool's public key, taken from its CSR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolPublicKey {
    key: RsaPublicKey,
}

impl PoolPublicKey {
    /// Parses a PEM CSR and checks its self-signature, so a CSR whose key
    /// was swapped is refused.
    pub fn from_csr_pem(pem: &str) -> Result<PoolPublicKey, PkiError> {
        let csr = decode_pem::<CertReq>(pem.trim().as_bytes())
            .map_err(|e| PkiError::CsrNotPem(e.to_string()))?;
        let spki = &csr.info.public_key;
        if spki.algorithm.oid.to_string() != OID_RSA_ENCRYPTION {
            return Err(PkiError::CsrNotRsa);
        }
        let spki_der = spki
            .to_der()
            .map_err(|e| PkiError::CsrNotPem(e.to_string()))?;
        let key = RsaPublicKey::from_public_key_der(&spki_der).map_err(|_| PkiError::CsrNotRsa)?;
        let bits = key.size() * 8;
        if bits < MIN_RSA_BITS {
            return Err(PkiError::KeyTooSmall(bits));
        }
        let signed = csr
            .info
            .to_der()
            .map_err(|e| PkiError::CsrNotPem(e.to_string()))?;
        let signature =
            Signature::try_from(csr.signature.raw_bytes()).map_err(|_| PkiError::CsrSignature)?;
        let algorithm = csr.algorithm.oid.to_string();
        let verified = match algorithm.as_str() {
            OID_SHA256_WITH_RSA => {
                VerifyingKey::<Sha256>::new(key.clone()).verify(&signed, &signature)
            }
            OID_SHA384_WITH_RSA => {
                VerifyingKey::<Sha384>::new(key.clone()).verify(&signed, &signature)
            }
            OID_SHA512_WITH_RSA => {
                VerifyingKey::<Sha512>::new(key.clone()).verify(&signed, &signature)
            }
            other => return Err(PkiError::CsrAlgorithm(other.to_string())),
        };
        verified.map_err(|_| PkiError::CsrSignature)?;
        Ok(PoolPublicKey { key })
    }

    /// From the SubjectPublicKeyInfo PEM the server stores.
    pub fn from_public_key_pem(pem: &str) -> Result<PoolPublicKey, PkiError> {
        let key = RsaPublicKey::from_public_key_pem(pem)
            .map_err(|e| PkiError::CsrNotPem(e.to_string()))?;
        Ok(PoolPublicKey { key })
    }

    pub fn to_public_key_pem(&self) -> String {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .expect("an RSA public key always encodes")
    }

    /// SHA-256 of the SubjectPublicKeyInfo DER, lower-case hex.
    pub fn fingerprint(&self) -> String {
        let der = self
            .key
            .to_public_key_der()
            .expect("an RSA public key always encodes");
        hex::encode(Sha256::digest(der.as_bytes()))
    }

    /// Checks a registration signature (RSA PKCS#1 v1.5, SHA-256).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = Signature::try_from(signature) else {
            return false;
        };
        VerifyingKey::<Sha256>::new(self.key.clone())
            .verify(message, &signature)
            .is_ok()
    }

    pub fn rsa(&self) -> &RsaPublicKey {
        &self.key
    }
}

/// The pool's private key, as the launcher holds it.
#[derive(Clone)]
pub struct PoolPrivateKey {
    key: RsaPrivateKey,
}

impl std::fmt::Debug for PoolPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolPrivateKey(<redacted>)")
    }
}

impl FromStr for PoolPrivateKey {
    type Err = PkiError;

    /// Accepts PKCS#8 (`BEGIN PRIVATE KEY`, what openssl writes today) and
    /// PKCS#1 (`BEGIN RSA PRIVATE KEY`, older openssl).
    fn from_str(pem: &str) -> Result<PoolPrivateKey, PkiError> {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        let pem = pem.trim();
        let key = RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|first| RsaPrivateKey::from_pkcs1_pem(pem).map_err(|_| first))
            .map_err(|e| PkiError::PrivateKeyNotPem(e.to_string()))?;
        Ok(PoolPrivateKey { key })
    }
}

impl PoolPrivateKey {
    pub fn public_key(&self) -> PoolPublicKey {
        PoolPublicKey {
            key: self.key.to_public_key(),
        }
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        SigningKey::<Sha256>::new(self.key.clone())
            .sign(message)
            .to_vec()
    }

    pub fn rsa(&self) -> &RsaPrivateKey {
        &self.key
    }
}

/// A freshly generated key and its CSR, both PEM.
pub struct GeneratedKey {
    /// PKCS#8 PEM. Written to `pool.key`; never sent anywhere.
    pub private_key_pem: String,
    pub csr_pem: String,
}

/// Generates an RSA key of `bits` and a CSR with subject `CN=<common_name>`.
pub fn generate(bits: usize, common_name: &str) -> Result<GeneratedKey, PkiError> {
    use x509_cert::builder::{Builder, RequestBuilder};
    use x509_cert::name::Name;

    let mut rng = rand::thread_rng();
    let key = RsaPrivateKey::new(&mut rng, bits).map_err(|e| PkiError::Generate(e.to_string()))?;
    let private_key_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| PkiError::Generate(e.to_string()))?
        .to_string();
    let cn: String = common_name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '))
        .collect();
    let subject = Name::from_str(&format!(
        "CN={}",
        if cn.is_empty() { "gantry-pool" } else { &cn }
    ))
    .map_err(|e| PkiError::Generate(e.to_string()))?;
    let signer = SigningKey::<Sha256>::new(key);
    let builder =
        RequestBuilder::new(subject, &signer).map_err(|e| PkiError::Generate(e.to_string()))?;
    let csr = builder
        .build::<Signature>()
        .map_err(|e| PkiError::Generate(e.to_string()))?;
    let csr_pem = csr
        .to_pem(LineEnding::LF)
        .map_err(|e| PkiError::Generate(e.to_string()))?;
    // A round trip through our own parser guarantees the server accepts it.
    PoolPublicKey::from_csr_pem(&csr_pem)?;
    let _ = CertReq::from_der(
        &csr.to_der()
            .map_err(|e| PkiError::Generate(e.to_string()))?,
    );
    Ok(GeneratedKey {
        private_key_pem,
        csr_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_csr_verifies_and_signatures_check() {
        let generated = generate(2048, "test pool").unwrap();
        let public = PoolPublicKey::from_csr_pem(&generated.csr_pem).unwrap();
        let private: PoolPrivateKey = generated.private_key_pem.parse().unwrap();
        assert_eq!(private.public_key().fingerprint(), public.fingerprint());

        let signature = private.sign(b"hello");
        assert!(public.verify(b"hello", &signature));
        assert!(!public.verify(b"hellO", &signature));
        assert!(!public.verify(b"hello", b"short"));

        let reparsed = PoolPublicKey::from_public_key_pem(&public.to_public_key_pem()).unwrap();
        assert_eq!(reparsed, public);
    }

    #[test]
    fn a_tampered_csr_is_refused() {
        let generated = generate(2048, "pool").unwrap();
        let other = generate(2048, "other").unwrap();
        // Graft the other key into the first request: the signature no longer matches.
        let mut csr = decode_pem::<CertReq>(generated.csr_pem.as_bytes()).unwrap();
        let other_csr = decode_pem::<CertReq>(other.csr_pem.as_bytes()).unwrap();
        csr.info.public_key = other_csr.info.public_key;
        let pem = csr.to_pem(LineEnding::LF).unwrap();
        assert!(matches!(
            PoolPublicKey::from_csr_pem(&pem),
            Err(PkiError::CsrSignature)
        ));
    }

    #[test]
    fn a_pem_body_cut_inside_a_length_is_refused() {
        // Kept in fuzz/regressions/csr/: der's streaming PEM reader looped forever on it.
        let pem =
            "-----BEGIN CERTIFICATE REQUEST-----\nMIIE\r\n-----END CERTIFICATE REQUEST-----\n";
        assert!(matches!(
            PoolPublicKey::from_csr_pem(pem),
            Err(PkiError::CsrNotPem(_))
        ));
    }

    #[test]
    fn garbage_is_named() {
        assert!(matches!(
            PoolPublicKey::from_csr_pem("hello"),
            Err(PkiError::CsrNotPem(_))
        ));
        assert!(matches!(
            "hello".parse::<PoolPrivateKey>(),
            Err(PkiError::PrivateKeyNotPem(_))
        ));
    }
}
