//! A `DPoP-Nonce` header (RFC 9449 §8): any bytes, never a panic, and a nonce is kept only when
//! it is `1*NQCHAR` of a bounded length, so it can go into a proof's JSON claims unescaped.
#![no_main]

use client_credentials::fuzzing::parse_dpop_nonce;
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    if let Some(nonce) = parse_dpop_nonce(&value) {
        assert!(!nonce.is_empty() && nonce.len() <= 1024);
        assert!(nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\'));
        let json = format!(r#"{{"nonce":"{nonce}"}}"#);
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(parsed["nonce"], nonce);
    }
});
