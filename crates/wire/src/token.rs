//! The pool token: what `gantry pool create` returns and the launcher reads
//! from `GANTRY_TOKEN`.
//!
//! It is base64 of a JSON document. It holds no private key: a leaked token
//! alone cannot register a worker, because registration also needs a
//! signature made with the pool's private key.

use base64::Engine;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolToken {
    /// The control plane's base URL, e.g. `https://gantry.example.com`.
    pub url: String,
    pub pool_id: String,
    /// The pool's secret credential; the server stores only its hash.
    pub credential: String,
    /// SHA-256 of the pool's public key, so the launcher can tell at start
    /// whether it was given the matching private key.
    pub key_fingerprint: String,
    /// The version of the server that issued the token.
    pub server_version: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is empty")]
    Empty,
    #[error("the token is not valid base64 ({0}); paste the whole token exactly as `gantry pool create` printed it")]
    Base64(String),
    #[error("the token decodes from base64 but is not a Gantry pool token ({0})")]
    Json(String),
    #[error("the token's `{0}` field is empty")]
    MissingField(&'static str),
}

impl PoolToken {
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).expect("a token always serialises");
        base64::engine::general_purpose::STANDARD.encode(json)
    }

    /// Decodes a token, accepting surrounding whitespace and either base64
    /// alphabet (tokens get pasted through many tools).
    pub fn decode(text: &str) -> Result<PoolToken, TokenError> {
        let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        if text.is_empty() {
            return Err(TokenError::Empty);
        }
        let bytes = decode_base64_lenient(&text).map_err(TokenError::Base64)?;
        let token: PoolToken =
            serde_json::from_slice(&bytes).map_err(|e| TokenError::Json(e.to_string()))?;
        for (name, value) in [
            ("url", &token.url),
            ("pool_id", &token.pool_id),
            ("credential", &token.credential),
            ("key_fingerprint", &token.key_fingerprint),
        ] {
            if value.trim().is_empty() {
                return Err(TokenError::MissingField(name));
            }
        }
        Ok(token)
    }
}

/// Standard or URL-safe alphabet, padded or not.
pub fn decode_base64_lenient(text: &str) -> Result<Vec<u8>, String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let text = text.trim();
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        if let Ok(bytes) = engine.decode(text) {
            return Ok(bytes);
        }
    }
    Err(STANDARD.decode(text).unwrap_err().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PoolToken {
        PoolToken {
            url: "https://gantry.example.com".into(),
            pool_id: "01J0POOL".into(),
            credential: "secret".into(),
            key_fingerprint: "ab".into(),
            server_version: "0.1.0".into(),
        }
    }

    #[test]
    fn round_trips_with_whitespace() {
        let encoded = format!("  {}\n", sample().encode());
        assert_eq!(PoolToken::decode(&encoded).unwrap(), sample());
    }

    #[test]
    fn names_the_broken_layer() {
        assert_eq!(PoolToken::decode(" "), Err(TokenError::Empty));
        assert!(matches!(
            PoolToken::decode("!!!"),
            Err(TokenError::Base64(_))
        ));
        assert!(matches!(
            PoolToken::decode("aGVsbG8="),
            Err(TokenError::Json(_))
        ));
        let mut t = sample();
        t.credential = String::new();
        assert_eq!(
            PoolToken::decode(&t.encode()),
            Err(TokenError::MissingField("credential"))
        );
    }
}
