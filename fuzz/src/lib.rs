//! The fuzz targets' bodies: one function per parser of outside input, each panicking when the
//! parser breaks a property it promises. `fuzz_targets/*.rs` hand them to libFuzzer; the main
//! crate's `tests/fuzz_replay.rs` runs them over every file in `fuzz/corpus/<target>/` and
//! `fuzz/artifacts/<target>/` on the stable toolchain, so what a fuzzing run found stays found.
//!
//! Each body takes any bytes. Where a target needs several inputs, the first bytes choose them
//! (documented per body), so a corpus file is always a plain byte string.

use std::time::{Duration, SystemTime};

use client_credentials::challenge::{classify, parse_challenges, Rejection};
use client_credentials::fuzzing;
use client_credentials::{ConfigError, Error, JwsAlgorithm, SigningKey, TenantId};
use http::{HeaderMap, HeaderValue, StatusCode};

/// A target: the name of its binary and of its folders under `fuzz/`, and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: [Target; 8] = [
    ("token_response", token_response),
    ("www_authenticate", www_authenticate),
    ("dpop_nonce", dpop_nonce),
    ("metadata", metadata),
    ("retry_after", retry_after),
    ("fleet_value", fleet_value),
    ("signing_key", signing_key),
    ("tenant_id", tenant_id),
];

/// The token endpoint's answer (RFC 6749 §5.1 / §5.2): any status, any body, never a panic,
/// and a token only when it can be sent as a header. The first two bytes pick the status
/// (100..=999), the rest is the body.
pub fn token_response(data: &[u8]) {
    let (status, body) = match data {
        [hi, lo, body @ ..] => (100 + u16::from_be_bytes([*hi, *lo]) % 900, body),
        _ => (200, data),
    };
    let status = StatusCode::from_u16(status).expect("100..=999 is a valid status");
    match fuzzing::parse_token_response(status.as_u16(), body) {
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
            assert!(error.to_string().chars().count() < 1024);
        }
    }
}

/// An API's rejection: `WWW-Authenticate` challenges (RFC 9110 §11.6.1, RFC 6750 §3, RFC 9449
/// §7.1's `DPoP` scheme) and a JSON 401 body. Never a panic; the verdict follows the rule in
/// `client_credentials::challenge`'s docs whatever the input. Header text up to the first NUL,
/// the body after it.
pub fn www_authenticate(data: &[u8]) {
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
                assert!(matches!(
                    verdict,
                    Rejection::NotRejected | Rejection::TokenRejected
                ));
                assert_eq!(verdict, classify(status, &headers, None));
            }
            // A 401 always says something about the token.
            _ => assert_ne!(verdict, Rejection::NotRejected),
        }
    }
}

/// A `DPoP-Nonce` header (RFC 9449 §8): any bytes, never a panic, and a nonce is kept only when
/// it is `1*NQCHAR` of a bounded length, so it can go into a proof's JSON claims unescaped.
pub fn dpop_nonce(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    if let Some(nonce) = fuzzing::parse_dpop_nonce(&value) {
        assert!(!nonce.is_empty() && nonce.len() <= 1024);
        assert!(nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\'));
        let json = format!(r#"{{"nonce":"{nonce}"}}"#);
        let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
        assert_eq!(parsed["nonce"], nonce);
    }
}

/// Discovery's metadata document (OpenID Connect Discovery 1.0, RFC 8414): `issuer`,
/// `token_endpoint`, `token_endpoint_auth_methods_supported`, `mtls_endpoint_aliases` (RFC 8705)
/// and `dpop_signing_alg_values_supported` (RFC 9449). Any bytes, never a panic; only a JSON
/// object naming a token endpoint can be accepted. (`serde_json` does not check the UTF-8 of
/// the members it skips, so a document with invalid bytes in a member nobody reads is accepted:
/// the check reads the document with those bytes replaced, as its first run found.)
pub fn metadata(data: &[u8]) {
    if fuzzing::read_metadata(data) {
        let text = String::from_utf8_lossy(data);
        let value: serde_json::Value = serde_json::from_str(&text).expect("accepted JSON");
        assert!(value.get("token_endpoint").is_some_and(|v| v.is_string()));
    }
}

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date, never a panic. The first
/// eight bytes are the clock (seconds since the epoch, big-endian, up to the year 9999), the
/// rest is the header value. A delay is the number sent; a date is the time until it, zero
/// once past; anything else is no delay.
pub fn retry_after(data: &[u8]) {
    let (clock, value) = match data {
        [a, b, c, d, e, f, g, h, rest @ ..] => (
            u64::from_be_bytes([*a, *b, *c, *d, *e, *f, *g, *h]) % 253_402_300_800,
            rest,
        ),
        _ => (1_764_000_000, data),
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(clock);
    let Ok(header) = HeaderValue::from_bytes(value) else {
        return;
    };
    let parsed = fuzzing::parse_retry_after(&header, now);
    let text = header.to_str().ok().map(str::trim);
    match text.map(str::parse::<u64>) {
        Some(Ok(seconds)) => assert_eq!(parsed, Some(Duration::from_secs(seconds))),
        _ => {
            let date = text.and_then(|t| httpdate::parse_http_date(t).ok());
            assert_eq!(
                parsed,
                date.map(|at| at.duration_since(now).unwrap_or(Duration::ZERO))
            );
        }
    }
}

/// A fleet's stored value (`client_credentials`'s `fleet/codec.rs`): any bytes read from the
/// store, never a panic; what opens is a value sealed the same way (it seals back to a value
/// that opens to the same token). The first byte picks the codec (odd: encrypted with a fixed
/// key), the rest is the value, read under the store key `cc:fuzz`.
pub fn fleet_value(data: &[u8]) {
    let Some((&mode, value)) = data.split_first() else {
        return;
    };
    let encrypted = mode % 2 == 1;
    if let Some(stored) = fuzzing::fleet_open(encrypted, "cc:fuzz", value) {
        assert!(matches!(stored.scheme, "Bearer" | "DPoP"));
        let sealed = fuzzing::fleet_seal(encrypted, "cc:fuzz", &stored)
            .expect("an opened value seals again");
        assert_eq!(
            fuzzing::fleet_open(encrypted, "cc:fuzz", &sealed).as_ref(),
            Some(&stored)
        );
        // Bound to its store key: under another name it does not open, when encrypted.
        if encrypted {
            assert_eq!(fuzzing::fleet_open(encrypted, "cc:other", &sealed), None);
        }
    }
    // Round trip of a token made from the bytes (as text), whichever codec.
    let token = String::from_utf8_lossy(value).into_owned();
    let stored = fuzzing::Stored {
        token,
        scheme: if mode & 2 == 0 { "Bearer" } else { "DPoP" },
        scope: (mode & 4 != 0).then(|| "a b".to_owned()),
        jkt: (mode & 8 != 0).then(|| "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I".to_owned()),
        lifetime: Duration::from_millis(u64::from(mode) * 1_000),
        refresh_in: Duration::from_millis(u64::from(mode) * 750),
    };
    if let Some(sealed) = fuzzing::fleet_seal(encrypted, "cc:fuzz", &stored) {
        assert_eq!(
            fuzzing::fleet_open(encrypted, "cc:fuzz", &sealed),
            Some(stored)
        );
    }
}

/// Keys from PEM and JWK, and a certificate for a key (`SigningKey::from_pem`, `from_jwk`,
/// `with_certificate`): any text, never a panic; every refusal is `ConfigError::InvalidKey`
/// with a reason bounded in characters and without the input's secret parts (a JWK's `d`, a
/// PEM block's body); a key that loads has a thumbprint and keeps them out of `Debug`. (The first input this target found, a JWK `kty` of 200 three-byte characters,
/// broke a bound in bytes; why it was that long showed that escapes were not counted in the
/// 200-character cut, since fixed.)
pub fn signing_key(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    // What would be secret in the input: a JWK's `d`, the base64 body lines of a PEM block.
    let base64 = |s: &str| {
        s.len() >= 16
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
    };
    let mut secrets: Vec<String> = text.lines().map(str::trim).map(str::to_owned).collect();
    if let Ok(serde_json::Value::Object(jwk)) = serde_json::from_str(&text) {
        if let Some(d) = jwk.get("d").and_then(|d| d.as_str()) {
            secrets.push(d.to_owned());
        }
    }
    // Text that also stands elsewhere in the input (a `kty` copied from `d`) is not secret.
    secrets.retain(|s| base64(s) && text.matches(s.as_str()).count() == 1);
    let check = |result: Result<SigningKey, ConfigError>| match result {
        Ok(key) => {
            assert_eq!(key.thumbprint().len(), 43, "base64url of SHA-256");
            // The key id is the caller's to choose (and is shown): without it, no secret.
            let shown = format!("{:?}", key.with_kid(""));
            for secret in &secrets {
                assert!(!shown.contains(secret.as_str()), "{shown}");
            }
        }
        // The fixed words and at most two quoted values of 200 shown characters each.
        Err(ConfigError::InvalidKey(reason)) => {
            assert!(reason.chars().count() < 600, "{reason}");
            for secret in &secrets {
                assert!(!reason.contains(secret.as_str()), "{reason}");
            }
        }
        Err(other) => panic!("unexpected error: {other:?}"),
    };
    for alg in JwsAlgorithm::ALL {
        check(SigningKey::from_pem(alg, &text));
    }
    check(SigningKey::from_jwk(&text));
    let key = fixed_key();
    check(key.clone().with_certificate(&text));
}

/// One P-256 key for the certificate check (generating one per input would dominate the run).
fn fixed_key() -> &'static SigningKey {
    static KEY: std::sync::OnceLock<SigningKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        SigningKey::from_pem(
            JwsAlgorithm::Es256,
            include_str!("../../tests/keys/ec_pkcs8.pem"),
        )
        .expect("the test key loads")
    })
}

/// A tenant id (`TenantId::new`): any text, never a panic; accepted exactly when it is a
/// non-empty string of visible ASCII and spaces, and then kept as it is.
pub fn tenant_id(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let valid = !text.is_empty() && text.bytes().all(|b| b == b' ' || b.is_ascii_graphic());
    match TenantId::new(text) {
        Ok(tenant) => {
            assert!(valid, "{text:?}");
            assert_eq!(tenant.as_str(), text);
            assert_eq!(text.parse::<TenantId>().ok(), Some(tenant));
        }
        Err(error) => {
            assert!(!valid, "{text:?}");
            assert!(matches!(error, ConfigError::InvalidTenantId));
        }
    }
}
