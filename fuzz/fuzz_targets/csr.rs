//! The CSR a user uploads with `gantry pool create`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = gantry_pki::PoolPublicKey::from_csr_pem(text);
    }
});
