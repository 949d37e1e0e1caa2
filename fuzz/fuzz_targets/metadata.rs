//! Discovery's metadata document (OpenID Connect Discovery 1.0, RFC 8414): `issuer`,
//! `token_endpoint`, `token_endpoint_auth_methods_supported`, `mtls_endpoint_aliases` (RFC 8705)
//! and `dpop_signing_alg_values_supported` (RFC 9449). Any bytes, never a panic.
#![no_main]

use client_credentials::fuzzing::read_metadata;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let accepted = read_metadata(data);
    // Only a JSON object naming a token endpoint can be accepted.
    if accepted {
        let value: serde_json::Value = serde_json::from_slice(data).expect("accepted JSON");
        assert!(value.get("token_endpoint").is_some_and(|v| v.is_string()));
    }
});
