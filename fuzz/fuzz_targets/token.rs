//! The pool token: whatever an operator pastes into GANTRY_TOKEN.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(token) = gantry_wire::token::PoolToken::decode(text) {
            // A decoded token round-trips.
            assert_eq!(gantry_wire::token::PoolToken::decode(&token.encode()).unwrap(), token);
        }
    }
});
