//! Extra certificate authorities, in exactly the seed's format: base64 of
//! `{"caCertificates": ["<base64 PEM>", …]}`. `GANTRY_ADDITIONAL_ROOT_CAS`
//! holds one; `gantry ca-bundle encode` makes one.

use base64::Engine;
use serde::{Deserialize, Serialize};
use x509_cert::Certificate;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CaBundleError {
    #[error("not valid base64 ({0}); encode the JSON file with `base64 -w0 < ca-certs.json`")]
    Base64(String),
    #[error("the base64 decodes, but not to the JSON object {{\"caCertificates\": [...]}} ({0})")]
    Json(String),
    #[error("caCertificates[{index}] is not valid base64 ({reason}); each entry is a base64-encoded PEM certificate")]
    EntryBase64 { index: usize, reason: String },
    #[error("caCertificates[{index}] does not hold a PEM certificate (`-----BEGIN CERTIFICATE-----`): {reason}")]
    EntryNotPem { index: usize, reason: String },
    #[error("the bundle holds no certificates")]
    Empty,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Bundle {
    ca_certificates: Vec<String>,
}

/// One certificate from a bundle, for display.
#[derive(Debug, Clone, Serialize)]
pub struct CertificateSummary {
    /// Which `caCertificates` entry it came from (an entry may hold a chain).
    pub entry: usize,
    pub subject: String,
    pub issuer: String,
    pub not_after: String,
}

/// The PEM certificates in a PEM text, in order.
pub fn pem_certificates(pem: &str) -> Result<Vec<String>, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut certs = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find(BEGIN) {
        let Some(end) = rest[start..].find(END) else {
            return Err("a certificate has no END line".into());
        };
        let block = &rest[start..start + end + END.len()];
        crate::decode_pem::<Certificate>(block.as_bytes()).map_err(|e| e.to_string())?;
        certs.push(format!("{block}\n"));
        rest = &rest[start + end + END.len()..];
    }
    if certs.is_empty() {
        return Err("no `-----BEGIN CERTIFICATE-----` block".into());
    }
    Ok(certs)
}

/// Decodes a bundle into its PEM entries (each may hold a chain), checking
/// every layer and naming the one at fault.
pub fn decode(text: &str) -> Result<Vec<String>, CaBundleError> {
    let engine = base64::engine::general_purpose::STANDARD;
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let json = engine
        .decode(compact)
        .map_err(|e| CaBundleError::Base64(e.to_string()))?;
    let bundle: Bundle =
        serde_json::from_slice(&json).map_err(|e| CaBundleError::Json(e.to_string()))?;
    if bundle.ca_certificates.is_empty() {
        return Err(CaBundleError::Empty);
    }
    let mut pems = Vec::new();
    for (index, entry) in bundle.ca_certificates.iter().enumerate() {
        let compact: String = entry.chars().filter(|c| !c.is_whitespace()).collect();
        let pem = engine
            .decode(compact)
            .map_err(|e| CaBundleError::EntryBase64 {
                index,
                reason: e.to_string(),
            })?;
        let pem = String::from_utf8(pem).map_err(|_| CaBundleError::EntryNotPem {
            index,
            reason: "not text".into(),
        })?;
        pem_certificates(&pem).map_err(|reason| CaBundleError::EntryNotPem { index, reason })?;
        pems.push(pem);
    }
    Ok(pems)
}

/// Encodes PEM files' contents into a bundle, one entry per input.
pub fn encode(pems: &[String]) -> Result<String, String> {
    for (index, pem) in pems.iter().enumerate() {
        pem_certificates(pem).map_err(|e| format!("input {}: {e}", index + 1))?;
    }
    let engine = base64::engine::general_purpose::STANDARD;
    let bundle = Bundle {
        ca_certificates: pems.iter().map(|p| engine.encode(p)).collect(),
    };
    Ok(engine.encode(serde_json::to_vec(&bundle).expect("a bundle serialises")))
}

/// What a decoded bundle holds, certificate by certificate.
pub fn summarize(pems: &[String]) -> Vec<CertificateSummary> {
    let mut out = Vec::new();
    for (entry, pem) in pems.iter().enumerate() {
        for block in pem_certificates(pem).unwrap_or_default() {
            if let Ok(cert) = crate::decode_pem::<Certificate>(block.as_bytes()) {
                let tbs = &cert.tbs_certificate;
                out.push(CertificateSummary {
                    entry,
                    subject: tbs.subject.to_string(),
                    issuer: tbs.issuer.to_string(),
                    not_after: tbs.validity.not_after.to_string(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn names_the_broken_layer() {
        assert!(matches!(decode("%%%"), Err(CaBundleError::Base64(_))));
        assert!(matches!(decode(&b64("{}")), Err(CaBundleError::Json(_))));
        assert_eq!(
            decode(&b64(r#"{"caCertificates": []}"#)),
            Err(CaBundleError::Empty)
        );
        let bad_entry = format!(r#"{{"caCertificates": ["{}", "%%"]}}"#, b64("x"));
        assert!(matches!(
            decode(&b64(&bad_entry)),
            Err(CaBundleError::EntryNotPem { index: 0, .. })
        ));
        // der's streaming PEM reader looped forever on a body cut inside a length.
        let cut = "-----BEGIN CERTIFICATE-----\nMIIE\n-----END CERTIFICATE-----\n";
        let cut_entry = format!(r#"{{"caCertificates": ["{}"]}}"#, b64(cut));
        assert!(matches!(
            decode(&b64(&cut_entry)),
            Err(CaBundleError::EntryNotPem { index: 0, .. })
        ));
        let bad_b64 = r#"{"caCertificates": ["%%"]}"#;
        assert!(matches!(
            decode(&b64(bad_b64)),
            Err(CaBundleError::EntryBase64 { index: 0, .. })
        ));
    }
}
