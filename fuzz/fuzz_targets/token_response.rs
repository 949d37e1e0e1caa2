//! The token endpoint's answer (RFC 6749 §5.1 / §5.2): any status, any body, never a panic, and
//! a token only when it can be sent as a header.
#![no_main]

use client_credentials::fuzzing::parse_token_response;
use client_credentials::Error;
use http::{HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first two bytes pick the status (100..=999), the rest is the body.
    let (status, body) = match data {
        [hi, lo, body @ ..] => (100 + u16::from_be_bytes([*hi, *lo]) % 900, body),
        _ => (200, data),
    };
    let status = StatusCode::from_u16(status).expect("100..=999 is a valid status");
    match parse_token_response(status.as_u16(), body) {
        Ok(token) => {
            assert!(status.is_success());
            let value = token.access_token.secret();
            assert!(!value.is_empty());
            assert!(HeaderValue::from_str(&format!("Bearer {value}")).is_ok());
        }
        Err(error) => {
            // Every failure is typed, and its message is bounded whatever the body.
            match &error {
                Error::InvalidResponse { .. } => assert!(status.is_success()),
                Error::OAuth { .. } | Error::Status { .. } => assert!(!status.is_success()),
                other => panic!("unexpected error kind: {other:?}"),
            }
            assert!(error.to_string().len() < 1024);
        }
    }
});
