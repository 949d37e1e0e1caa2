//! libFuzzer on `client_credentials_fuzz::dpop_nonce` (its docs say what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| client_credentials_fuzz::dpop_nonce(data));
