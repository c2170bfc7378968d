//! What the log [`Masker`](crate::logs::Masker) hides for one secret: the
//! value itself and the forms tools print it in (JSON-escaped, as
//! `terraform show -json` and Go's encoder write it; base64, as in a basic
//! auth header or `base64` output), and which secrets are too short to mask
//! safely.

use base64::Engine;

/// Values shorter than this are not masked at all: they would match
/// ordinary text everywhere, and hiding it would show where they are.
pub const MIN_MASKED: usize = 3;
/// Values shorter than this are masked, with a warning: they may still
/// match ordinary text, and are easy to guess.
pub const MIN_SAFE: usize = 8;
/// Shortest base64 fragment masked: shorter ones match ordinary text.
const MIN_BASE64_FRAGMENT: usize = 6;

/// Every form of `value` to mask (the value first), without duplicates;
/// empty when the value is too short to mask.
pub fn forms(value: &str) -> Vec<Vec<u8>> {
    if value.len() < MIN_MASKED {
        return Vec::new();
    }
    let mut forms = vec![value.as_bytes().to_vec()];
    let json = serde_json::to_string(value).expect("a string serialises");
    let json = &json[1..json.len() - 1];
    forms.push(json.as_bytes().to_vec());
    // Go's encoding/json (Terraform's) also escapes <, > and &.
    let go = json
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    forms.push(go.into_bytes());
    // A short value's encodings would match ordinary text.
    let engines = if value.len() >= MIN_SAFE {
        &[
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::URL_SAFE,
        ][..]
    } else {
        &[]
    };
    for engine in engines {
        // The whole encoding, padding included (`printf %s "$SECRET" | base64`)...
        forms.push(engine.encode(value).into_bytes());
        // ...and the part of it that does not depend on its neighbours, at
        // each of the three alignments the value can have inside a longer
        // encoded text (`user:secret` in a basic auth header).
        for offset in 0..3 {
            let fragment = base64_fragment(engine, value.as_bytes(), offset);
            if fragment.len() >= MIN_BASE64_FRAGMENT {
                forms.push(fragment);
            }
        }
    }
    let mut unique = Vec::with_capacity(forms.len());
    for form in forms {
        if !unique.contains(&form) {
            unique.push(form);
        }
    }
    unique
}

/// The base64 characters that encode only bits of `value` when it starts
/// `offset` bytes into the encoded data.
fn base64_fragment(
    engine: &base64::engine::GeneralPurpose,
    value: &[u8],
    offset: usize,
) -> Vec<u8> {
    let mut data = vec![0u8; offset];
    data.extend_from_slice(value);
    data.extend_from_slice(&[0, 0]);
    let encoded = engine.encode(&data).into_bytes();
    // Character j holds bits [6j, 6j + 6); the value's are [8 offset, 8 (offset + len)).
    let first = (8 * offset).div_ceil(6);
    let end = (8 * (offset + value.len())) / 6;
    encoded[first.min(end)..end].to_vec()
}

/// A warning for a secret too short to mask safely, naming it (never its
/// value); None when it is long enough, or empty (nothing to hide).
pub fn weakness(name: &str, value: &str) -> Option<String> {
    let length = value.len();
    if length == 0 || length >= MIN_SAFE {
        return None;
    }
    Some(if length < MIN_MASKED {
        format!(
            "warning: the secret {name} is only {length} character(s) long, too short to mask: \
             it is NOT masked in this log; use a longer value (at least {MIN_SAFE} characters)"
        )
    } else {
        format!(
            "warning: the secret {name} is only {length} characters long: it is masked, but may \
             match ordinary text and is easy to guess; use a longer value (at least {MIN_SAFE} characters)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(forms: &[Vec<u8>], form: &str) -> bool {
        forms.iter().any(|f| f == form.as_bytes())
    }

    #[test]
    fn json_escaped_forms() {
        let forms = forms(r#"pa"ss\word<&>"#);
        assert!(has(&forms, r#"pa"ss\word<&>"#));
        assert!(has(&forms, r#"pa\"ss\\word<&>"#));
        assert!(has(&forms, r#"pa\"ss\\word\u003c\u0026\u003e"#));
    }

    #[test]
    fn base64_forms_at_every_alignment() {
        let secret = "hunter2-very-secret";
        let forms = forms(secret);
        let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        assert!(has(&forms, &b64(secret)));
        // Inside a longer encoded text, whatever comes before and after.
        for prefix in ["", "u:", "us:", "usr:"] {
            let encoded = b64(&format!("{prefix}{secret}@host"));
            assert!(
                forms
                    .iter()
                    .skip(1)
                    .any(|f| encoded.as_bytes().windows(f.len()).any(|w| w == f)),
                "{prefix:?}: {encoded} holds no masked form"
            );
        }
    }

    #[test]
    fn short_values_are_warned_about_by_name() {
        assert!(forms("ab").is_empty());
        assert_eq!(forms("abc"), vec![b"abc".to_vec()]);
        let warning = weakness("DB_PIN", "Zq").unwrap();
        assert!(warning.contains("DB_PIN") && warning.contains("NOT masked"));
        assert!(!warning.contains("Zq"), "the value itself is never shown");
        let warning = weakness("API_KEY", "abc123").unwrap();
        assert!(warning.contains("API_KEY") && warning.contains("is masked"));
        assert_eq!(weakness("LONG", "long-enough"), None);
        assert_eq!(weakness("EMPTY", ""), None);
    }
}
