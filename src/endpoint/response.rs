//! The answer of a token endpoint: a bounded read, `Retry-After`, and the parsing of RFC 6749
//! §5.1 success and §5.2 error bodies.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, StatusCode};
use serde::Deserialize;

use crate::error::InvalidResponse;
use crate::source::TokenType;
use crate::{AccessToken, Error, OAuthErrorCode, Token};

/// Why a bounded read stopped.
pub(crate) enum ReadError {
    TooLarge,
    Transport(reqwest::Error),
}

/// Reads a response body of at most `limit` bytes: a larger `Content-Length` is refused before
/// reading, and a body streamed without one is cut at the limit, so memory stays bounded.
pub(crate) async fn read_limited(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<Bytes, ReadError> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(ReadError::TooLarge);
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Parses `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date.
pub(crate) fn parse_retry_after(
    value: &HeaderValue,
    now: std::time::SystemTime,
) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[derive(Deserialize)]
struct SuccessBody {
    access_token: Option<serde_json::Value>,
    token_type: Option<serde_json::Value>,
    expires_in: Option<serde_json::Value>,
    scope: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    error_description: Option<String>,
    error_uri: Option<String>,
}

/// Parses a token endpoint's answer (RFC 6749 §5.1 success, §5.2 error).
///
/// The endpoint calls it with the body it read (at most the configured limit). Never panics:
/// every input yields a token or a typed [`Error`] (the fuzz target `token_response` checks).
///
pub(crate) fn parse_token_response(
    endpoint: &Arc<str>,
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<Token, Error> {
    let invalid = |kind| Error::InvalidResponse {
        endpoint: Arc::clone(endpoint),
        kind,
    };
    if !status.is_success() {
        // RFC 6749 §5.2 says 400 (or 401 for client authentication), but servers put OAuth
        // error bodies on other statuses too; a body with `error` is an OAuth error whatever
        // the status, except 429/5xx which stay status errors so they are retried.
        let transient = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
        if !transient {
            if let Ok(e) = serde_json::from_slice::<ErrorBody>(body) {
                return Err(Error::OAuth {
                    endpoint: Arc::clone(endpoint),
                    status,
                    code: OAuthErrorCode::parse(&e.error),
                    description: e.error_description.map(Arc::from),
                    uri: e.error_uri.map(Arc::from),
                });
            }
        }
        return Err(Error::Status {
            endpoint: Arc::clone(endpoint),
            status,
            retry_after,
        });
    }
    let parsed: SuccessBody =
        serde_json::from_slice(body).map_err(|_| invalid(InvalidResponse::NotJson))?;
    let access_token = match parsed.access_token {
        Some(serde_json::Value::String(token)) => token,
        _ => return Err(invalid(InvalidResponse::MissingAccessToken)),
    };
    let token_type = match parsed.token_type {
        Some(serde_json::Value::String(t)) if t.eq_ignore_ascii_case("bearer") => TokenType::Bearer,
        Some(serde_json::Value::String(t)) if t.eq_ignore_ascii_case("dpop") => TokenType::Dpop,
        Some(serde_json::Value::String(t)) => {
            return Err(invalid(InvalidResponse::UnsupportedTokenType(Arc::from(t))))
        }
        // RFC 6749 makes token_type REQUIRED; a server that omits it gets the benefit of the
        // doubt (the header we send is Bearer), anything else is refused.
        None | Some(serde_json::Value::Null) => TokenType::Bearer,
        Some(other) => {
            return Err(invalid(InvalidResponse::UnsupportedTokenType(Arc::from(
                other.to_string(),
            ))))
        }
    };
    let access_token = AccessToken::new(access_token);
    if crate::cache::authorization_header(token_type, &access_token).is_none() {
        return Err(invalid(InvalidResponse::TokenNotHeaderSafe));
    }
    let expires_in = match parsed.expires_in {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => Some(seconds(n.as_f64())),
        Some(serde_json::Value::String(s)) => match s.trim().parse::<f64>() {
            Ok(n) if n.is_finite() => Some(seconds(Some(n))),
            _ => return Err(invalid(InvalidResponse::InvalidExpiresIn)),
        },
        Some(_) => return Err(invalid(InvalidResponse::InvalidExpiresIn)),
    };
    let scope = match parsed.scope {
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    };
    Ok(Token {
        access_token,
        token_type,
        expires_in,
        scope,
        dpop_jkt: None,
    })
}

/// Seconds as a duration: negative and NaN are zero, too large for a `Duration` is
/// `Duration::MAX`. The cache applies the lifetime rule (1 s to ten years) to every source.
fn seconds(n: Option<f64>) -> Duration {
    match n {
        Some(n) if n > 0.0 => Duration::try_from_secs_f64(n).unwrap_or(Duration::MAX),
        _ => Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn ep() -> Arc<str> {
        Arc::from("https://auth.example/oauth2/token")
    }

    #[test]
    fn expires_in_shapes() {
        let cases: &[(&str, Option<Duration>)] = &[
            (
                r#"{"access_token":"a","token_type":"Bearer","expires_in":3600}"#,
                Some(Duration::from_secs(3600)),
            ),
            (
                r#"{"access_token":"a","token_type":"Bearer","expires_in":"3600"}"#,
                Some(Duration::from_secs(3600)),
            ),
            (
                r#"{"access_token":"a","token_type":"Bearer","expires_in":" 60 "}"#,
                Some(Duration::from_secs(60)),
            ),
            (
                r#"{"access_token":"a","token_type":"Bearer","expires_in":1.5}"#,
                Some(Duration::from_millis(1500)),
            ),
            (r#"{"access_token":"a","token_type":"Bearer"}"#, None),
            (
                r#"{"access_token":"a","token_type":"Bearer","expires_in":null}"#,
                None,
            ),
            (
                r#"{"access_token":"a","token_type":"Bearer","expires_in":0}"#,
                Some(Duration::ZERO),
            ),
            (
                r#"{"access_token":"a","token_type":"Bearer","expires_in":-5}"#,
                Some(Duration::ZERO),
            ),
            // Too large for a `Duration`: the most there is; the cache then applies its
            // ten-year rule (see `cache::schedule`).
            (
                r#"{"access_token":"a","token_type":"Bearer","expires_in":1e300}"#,
                Some(Duration::MAX),
            ),
            (
                r#"{"access_token":"a","token_type":"Bearer","expires_in":"1e30"}"#,
                Some(Duration::MAX),
            ),
        ];
        for (body, expected) in cases {
            let token = parse_token_response(&ep(), StatusCode::OK, None, body.as_bytes()).unwrap();
            assert_eq!(token.expires_in, *expected, "{body}");
        }
    }

    #[test]
    fn malformed_answers() {
        let cases: &[(&str, InvalidResponse)] = &[
            ("", InvalidResponse::NotJson),
            ("<html>", InvalidResponse::NotJson),
            ("[1,2]", InvalidResponse::NotJson),
            (
                r#"{"token_type":"Bearer"}"#,
                InvalidResponse::MissingAccessToken,
            ),
            (
                r#"{"access_token":7,"token_type":"Bearer"}"#,
                InvalidResponse::MissingAccessToken,
            ),
            (
                r#"{"access_token":"a","token_type":"mac"}"#,
                InvalidResponse::UnsupportedTokenType(Arc::from("mac")),
            ),
            (
                r#"{"access_token":"a","token_type":5}"#,
                InvalidResponse::UnsupportedTokenType(Arc::from("5")),
            ),
            (
                r#"{"access_token":"a\r\nx","token_type":"Bearer"}"#,
                InvalidResponse::TokenNotHeaderSafe,
            ),
            (
                r#"{"access_token":"","token_type":"Bearer"}"#,
                InvalidResponse::TokenNotHeaderSafe,
            ),
            (
                r#"{"access_token":"a","token_type":"Bearer","expires_in":"soon"}"#,
                InvalidResponse::InvalidExpiresIn,
            ),
            (
                r#"{"access_token":"a","token_type":"Bearer","expires_in":[1]}"#,
                InvalidResponse::InvalidExpiresIn,
            ),
        ];
        for (body, kind) in cases {
            match parse_token_response(&ep(), StatusCode::OK, None, body.as_bytes()) {
                Err(Error::InvalidResponse { kind: k, .. }) => assert_eq!(&k, kind, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn error_answers() {
        let err = parse_token_response(
            &ep(),
            StatusCode::BAD_REQUEST,
            None,
            br#"{"error":"invalid_scope","error_description":"bad","error_uri":"https://x"}"#,
        )
        .unwrap_err();
        match err {
            Error::OAuth {
                code,
                description,
                uri,
                status,
                ..
            } => {
                assert_eq!(code, OAuthErrorCode::InvalidScope);
                assert_eq!(description.as_deref(), Some("bad"));
                assert_eq!(uri.as_deref(), Some("https://x"));
                assert_eq!(status, StatusCode::BAD_REQUEST);
            }
            other => panic!("{other:?}"),
        }
        let err = parse_token_response(
            &ep(),
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(3)),
            br#"{"error":"temporarily_unavailable"}"#,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            Error::Status {
                status: StatusCode::SERVICE_UNAVAILABLE,
                retry_after: Some(_),
                ..
            }
        ));
        assert!(err.is_transient());
        let err = parse_token_response(&ep(), StatusCode::BAD_REQUEST, None, b"nope").unwrap_err();
        assert!(matches!(
            err,
            Error::Status {
                status: StatusCode::BAD_REQUEST,
                ..
            }
        ));
        assert!(!err.is_transient());
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("7"), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after(&HeaderValue::from_str(&date).unwrap(), now),
            Some(Duration::from_secs(30))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&HeaderValue::from_str(&past).unwrap(), now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("soon"), now),
            None
        );
        // Issue 12: the largest number of seconds parses (the cache caps it later).
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("18446744073709551615"), now),
            Some(Duration::from_secs(u64::MAX))
        );
    }
}

/// Property tests: the parser never panics, and every input gets the outcome RFC 6749 §5 and
/// the crate's rules give.
#[cfg(test)]
mod props {
    use std::sync::Arc;
    use std::time::Duration;

    use http::{HeaderValue, StatusCode};
    use proptest::prelude::*;

    use super::parse_token_response;
    use crate::{Error, InvalidResponse, OAuthErrorCode};

    fn ep() -> Arc<str> {
        Arc::from("https://auth.example/oauth2/token")
    }

    fn status() -> impl Strategy<Value = StatusCode> {
        prop_oneof![
            Just(StatusCode::OK),
            Just(StatusCode::BAD_REQUEST),
            Just(StatusCode::UNAUTHORIZED),
            Just(StatusCode::TOO_MANY_REQUESTS),
            Just(StatusCode::SERVICE_UNAVAILABLE),
            (100u16..=999).prop_map(|s| StatusCode::from_u16(s).unwrap()),
        ]
    }

    /// Whether `token` is what the crate may put in a header: non-empty, `Bearer <token>` valid.
    fn header_safe(token: &str) -> bool {
        !token.is_empty() && HeaderValue::from_str(&format!("Bearer {token}")).is_ok()
    }

    /// The outcome every input must have: a usable token on success, a typed error otherwise.
    fn check_outcome(
        status: StatusCode,
        retry_after: Option<Duration>,
        body: &[u8],
    ) -> Result<(), TestCaseError> {
        match parse_token_response(&ep(), status, retry_after, body) {
            Ok(token) => {
                prop_assert!(status.is_success());
                prop_assert!(header_safe(token.access_token.secret()));
            }
            Err(error) => {
                match &error {
                    Error::InvalidResponse { endpoint, .. } => {
                        prop_assert!(status.is_success());
                        prop_assert_eq!(&**endpoint, &*ep());
                    }
                    Error::OAuth { status: s, .. } => {
                        prop_assert!(!status.is_success());
                        prop_assert_eq!(*s, status);
                        // 429 and 5xx stay status errors, so they are retried.
                        prop_assert!(
                            status != StatusCode::TOO_MANY_REQUESTS && !status.is_server_error()
                        );
                    }
                    Error::Status {
                        status: s,
                        retry_after: r,
                        ..
                    } => {
                        prop_assert!(!status.is_success());
                        prop_assert_eq!(*s, status);
                        prop_assert_eq!(*r, retry_after);
                    }
                    other => prop_assert!(false, "unexpected error kind {:?}", other),
                }
                check_message(&error)?;
            }
        }
        Ok(())
    }

    /// Server text in an error message is cut and escaped: it cannot flood or forge log lines.
    fn check_message(error: &Error) -> Result<(), TestCaseError> {
        let message = error.to_string();
        prop_assert!(message.len() < 4096, "{} bytes", message.len());
        prop_assert!(!message.chars().any(char::is_control), "{:?}", message);
        Ok(())
    }

    /// A JSON value for a field: the shapes servers send, and the wrong ones.
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
            "[0-9 ]{0,6}".prop_map(Value::String),
            prop::collection::vec(any::<u8>().prop_map(Value::from), 0..3).prop_map(Value::Array),
        ]
    }

    /// A token value: mostly printable, sometimes with control characters, quotes or non-ASCII.
    fn token_value() -> impl Strategy<Value = String> {
        prop_oneof![
            "[A-Za-z0-9._~+/=-]{0,40}",
            "[ -~]{0,20}",
            ".{0,20}",
            "[a-z]{1,5}[\r\n\t\u{0}\u{7f}\u{1b}][a-z]{0,5}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        #[test]
        fn token_response_never_panics_on_arbitrary_bytes(
            status in status(),
            retry_after in proptest::option::of((0u64..100_000).prop_map(Duration::from_secs)),
            body in prop::collection::vec(any::<u8>(), 0..512),
        ) {
            check_outcome(status, retry_after, &body)?;
        }

        #[test]
        fn token_response_never_panics_on_json_like_text(
            status in status(),
            body in r#"[{}\[\]":,0-9a-z_ .eE+-]{0,200}"#,
        ) {
            check_outcome(status, None, body.as_bytes())?;
        }

        /// Success bodies with every field shape: the outcome is exactly the one RFC 6749 §5.1 and
        /// the crate's rules give.
        #[test]
        fn token_response_reads_structured_bodies_exactly(
            token in proptest::option::of(prop_oneof![token_value().prop_map(serde_json::Value::String), json_value()]),
            token_type in proptest::option::of(prop_oneof![
                Just(serde_json::Value::from("Bearer")),
                Just(serde_json::Value::from("bearer")),
                Just(serde_json::Value::from("BEARER")),
                json_value(),
            ]),
            expires_in in proptest::option::of(json_value()),
            extra in proptest::option::of(json_value()),
        ) {
            let mut object = serde_json::Map::new();
            for (name, value) in [("access_token", &token), ("token_type", &token_type), ("expires_in", &expires_in), ("extra", &extra)] {
                if let Some(value) = value {
                    object.insert(name.to_owned(), value.clone());
                }
            }
            let body = serde_json::to_vec(&object).unwrap();
            let result = parse_token_response(&ep(), StatusCode::OK, None, &body);
            let kind = |r: &Result<_, Error>| match r {
                Err(Error::InvalidResponse { kind, .. }) => Some(kind.clone()),
                _ => None,
            };
            match &token {
                Some(serde_json::Value::String(value)) => {
                    let type_ok = match &token_type {
                        None | Some(serde_json::Value::Null) => true,
                        Some(serde_json::Value::String(t)) => t.eq_ignore_ascii_case("bearer"),
                        Some(_) => false,
                    };
                    let expires_ok = match &expires_in {
                        None | Some(serde_json::Value::Null) | Some(serde_json::Value::Number(_)) => true,
                        Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().is_ok_and(f64::is_finite),
                        Some(_) => false,
                    };
                    if !type_ok {
                        prop_assert!(matches!(kind(&result), Some(InvalidResponse::UnsupportedTokenType(_))), "{:?}", result);
                    } else if !header_safe(value) {
                        prop_assert_eq!(kind(&result), Some(InvalidResponse::TokenNotHeaderSafe));
                    } else if !expires_ok {
                        prop_assert_eq!(kind(&result), Some(InvalidResponse::InvalidExpiresIn));
                    } else {
                        let parsed = result.unwrap();
                        prop_assert_eq!(parsed.access_token.secret(), value.as_str());
                        if let Some(serde_json::Value::Number(n)) = &expires_in {
                            let secs = n.as_f64().unwrap();
                            let expected = if secs > 0.0 {
                                Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
                            } else {
                                Duration::ZERO
                            };
                            prop_assert_eq!(parsed.expires_in, Some(expected));
                        }
                    }
                }
                _ => prop_assert_eq!(kind(&result), Some(InvalidResponse::MissingAccessToken)),
            }
        }

        /// Error bodies (RFC 6749 §5.2) on client-error statuses keep their code and description,
        /// whatever text they hold, and the error message stays a safe single line.
        #[test]
        fn oauth_error_bodies_keep_their_code(
            status in 400u16..=428,
            code in prop_oneof!["[a-z_]{1,24}", ".{1,400}", "[a-z]{0,5}[\r\n\t\u{0}\u{1b}\u{85}][a-z]{0,5}"],
            description in proptest::option::of(prop_oneof![".{0,400}", "[a-z]{0,5}[\r\n\u{1b}][a-z]{0,5}"]),
        ) {
            let status = StatusCode::from_u16(status).unwrap();
            let mut body = serde_json::json!({ "error": code });
            if let Some(d) = &description {
                body["error_description"] = serde_json::Value::from(d.as_str());
            }
            match parse_token_response(&ep(), status, None, &serde_json::to_vec(&body).unwrap()) {
                Err(error @ Error::OAuth { .. }) => {
                    check_message(&error)?;
                    let Error::OAuth { code: c, description: d, .. } = error else { unreachable!() };
                    prop_assert_eq!(c.as_str(), code.as_str());
                    prop_assert_eq!(c, OAuthErrorCode::parse(&code));
                    prop_assert_eq!(d.as_deref(), description.as_deref());
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }

    }
}
