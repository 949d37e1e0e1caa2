//! libFuzzer on `client_credentials_fuzz::retry_after` (its docs say what it checks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| client_credentials_fuzz::retry_after(data));
