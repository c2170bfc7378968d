//! GANTRY_ADDITIONAL_ROOT_CAS: base64 → JSON → base64 PEM certificates.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(pems) = gantry_pki::ca_bundle::decode(text) {
            let _ = gantry_pki::ca_bundle::summarize(&pems);
        }
    }
});
