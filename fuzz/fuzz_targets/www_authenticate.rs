//! An API's rejection: `WWW-Authenticate` challenges (RFC 9110 §11.6.1, RFC 6750 §3, RFC 9449
//! §7.1's `DPoP` scheme) and a JSON 401 body. Never a panic; the verdict follows the rule in
//! `client_credentials::challenge`'s docs whatever the input.
#![no_main]

use client_credentials::challenge::{classify, parse_challenges, Rejection};
use http::{HeaderMap, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Header text up to the first NUL, body after it.
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (header, body) = (&data[..split], data.get(split + 1..).unwrap_or(&[]));

    if let Ok(text) = std::str::from_utf8(header) {
        for challenge in parse_challenges(text) {
            assert!(!challenge.scheme.is_empty());
            for (name, _) in &challenge.params {
                assert_eq!(name, &name.to_ascii_lowercase());
            }
        }
    }

    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(header) {
        headers.insert(http::header::WWW_AUTHENTICATE, value);
    }
    for status in [
        StatusCode::UNAUTHORIZED,
        StatusCode::FORBIDDEN,
        StatusCode::BAD_REQUEST,
        StatusCode::OK,
    ] {
        let verdict = classify(status, &headers, Some(body));
        match status {
            StatusCode::OK => assert_eq!(verdict, Rejection::NotRejected),
            // A 400 or 403 is a rejection only when a challenge says `invalid_token`, and the
            // body is never read for it.
            StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST => {
                assert!(matches!(verdict, Rejection::NotRejected | Rejection::TokenRejected));
                assert_eq!(verdict, classify(status, &headers, None));
            }
            // A 401 always says something about the token.
            _ => assert_ne!(verdict, Rejection::NotRejected),
        }
    }
});
