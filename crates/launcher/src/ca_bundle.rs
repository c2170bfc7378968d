//! `GANTRY_ADDITIONAL_ROOT_CAS`: extra certificate authorities, in exactly
//! the seed's format: base64 of `{"caCertificates": ["<base64 PEM>", …]}`.

use base64::Engine;
use serde::Deserialize;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CaBundleError {
    #[error("not valid base64 ({0}); encode the JSON file with `base64 -w0 < ca-certs.json`")]
    Base64(String),
    #[error("the base64 decodes, but not to the JSON object {{\"caCertificates\": [...]}} ({0})")]
    Json(String),
    #[error("caCertificates[{index}] is not valid base64 ({reason}); each entry is a base64-encoded PEM certificate")]
    EntryBase64 { index: usize, reason: String },
    #[error("caCertificates[{index}] does not hold a PEM certificate (`-----BEGIN CERTIFICATE-----`)")]
    EntryNotPem { index: usize },
    #[error("the bundle holds no certificates")]
    Empty,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Bundle {
    ca_certificates: Vec<String>,
}

/// Decodes a bundle into its PEM certificates (an entry may hold a chain).
pub fn decode_ca_bundle(text: &str) -> Result<Vec<String>, CaBundleError> {
    let engine = base64::engine::general_purpose::STANDARD;
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let json = engine.decode(compact).map_err(|e| CaBundleError::Base64(e.to_string()))?;
    let bundle: Bundle = serde_json::from_slice(&json).map_err(|e| CaBundleError::Json(e.to_string()))?;
    if bundle.ca_certificates.is_empty() {
        return Err(CaBundleError::Empty);
    }
    let mut pems = Vec::new();
    for (index, entry) in bundle.ca_certificates.iter().enumerate() {
        let compact: String = entry.chars().filter(|c| !c.is_whitespace()).collect();
        let pem = engine
            .decode(compact)
            .map_err(|e| CaBundleError::EntryBase64 { index, reason: e.to_string() })?;
        let pem = String::from_utf8(pem).map_err(|_| CaBundleError::EntryNotPem { index })?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") || reqwest::Certificate::from_pem_bundle(pem.as_bytes()).is_err() {
            return Err(CaBundleError::EntryNotPem { index });
        }
        pems.push(pem);
    }
    Ok(pems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_broken_layer() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert!(matches!(decode_ca_bundle("%%%"), Err(CaBundleError::Base64(_))));
        assert!(matches!(decode_ca_bundle(&b64("{}")), Err(CaBundleError::Json(_))));
        assert_eq!(decode_ca_bundle(&b64(r#"{"caCertificates": []}"#)), Err(CaBundleError::Empty));
        let bad_entry = format!(r#"{{"caCertificates": ["{}", "%%"]}}"#, b64("x"));
        assert_eq!(decode_ca_bundle(&b64(&bad_entry)), Err(CaBundleError::EntryNotPem { index: 0 }));
    }
}
