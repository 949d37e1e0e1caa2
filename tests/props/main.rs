//! Property tests of the two parsers that read what servers send: the token endpoint's answer
//! and an API's 401 (`WWW-Authenticate` challenges, JSON body). Neither panics, and every input
//! gets a defined outcome. (The `fuzz/` crate runs the same parsers under libFuzzer.)

use std::time::Duration;

use client_credentials::challenge::{classify, parse_challenges, Rejection};
use client_credentials::{parse_token_response, Error, InvalidResponse, OAuthErrorCode};
use http::{HeaderMap, HeaderValue, StatusCode};
use proptest::prelude::*;

const EP: &str = "https://auth.example/oauth2/token";

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
    match parse_token_response(EP, status, retry_after, body) {
        Ok(token) => {
            prop_assert!(status.is_success());
            prop_assert!(header_safe(token.access_token.secret()));
        }
        Err(error) => {
            match &error {
                Error::InvalidResponse { endpoint, .. } => {
                    prop_assert!(status.is_success());
                    prop_assert_eq!(endpoint, EP);
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
        let result = parse_token_response(EP, StatusCode::OK, None, &body);
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
                        let expected = if secs > 0.0 { secs.min(10.0 * 365.0 * 86_400.0) } else { 0.0 };
                        prop_assert!((parsed.expires_in.unwrap().as_secs_f64() - expected).abs() < 1e-6);
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
        match parse_token_response(EP, status, None, &serde_json::to_vec(&body).unwrap()) {
            Err(error @ Error::OAuth { .. }) => {
                check_message(&error)?;
                let Error::OAuth { code: c, description: d, .. } = error else { unreachable!() };
                prop_assert_eq!(c.as_str(), code.as_str());
                prop_assert_eq!(c, OAuthErrorCode::parse(&code));
                prop_assert_eq!(d, description);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    #[test]
    fn parse_challenges_never_panics(header in ".{0,200}") {
        for challenge in parse_challenges(&header) {
            prop_assert!(!challenge.scheme.is_empty());
        }
    }

    #[test]
    fn parse_challenges_never_panics_on_header_like_text(header in r#"[A-Za-z =",\\\t]{0,120}"#) {
        let _ = parse_challenges(&header);
    }

    #[test]
    fn classify_never_panics_and_respects_the_status_rules(
        status in status(),
        header in prop::collection::vec(any::<u8>(), 0..120),
        body in proptest::option::of(prop::collection::vec(any::<u8>(), 0..200)),
    ) {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_bytes(&header) {
            headers.insert(http::header::WWW_AUTHENTICATE, value);
        }
        let verdict = classify(status, &headers, body.as_deref());
        match status {
            StatusCode::FORBIDDEN => prop_assert!(matches!(verdict, Rejection::Other(_))),
            StatusCode::UNAUTHORIZED => prop_assert_ne!(verdict, Rejection::NotRejected),
            _ => prop_assert_eq!(verdict, Rejection::NotRejected),
        }
    }

    /// Generated `Scheme k1="v1", k2=v2, ...` challenges, joined by commas, read back as written:
    /// scheme as sent, names lower-cased, quoted values unescaped.
    #[test]
    fn challenges_round_trip(challenges in prop::collection::vec(challenge(), 1..4)) {
        let header = challenges.iter().map(|c| c.text.as_str()).collect::<Vec<_>>().join(", ");
        let parsed = parse_challenges(&header);
        prop_assert_eq!(parsed.len(), challenges.len(), "{}", header);
        for (parsed, expected) in parsed.iter().zip(&challenges) {
            prop_assert_eq!(&parsed.scheme, &expected.scheme, "{}", header);
            prop_assert_eq!(&parsed.params, &expected.params, "{}", header);
        }
        // And the classifier finds the first Bearer `error`, in one header or split across
        // several.
        let expected = challenges
            .iter()
            .filter(|c| c.scheme.eq_ignore_ascii_case("bearer"))
            .find_map(|c| c.params.iter().find(|(n, _)| n == "error").map(|(_, v)| v.clone()));
        let expected = match expected {
            Some(code) if code == "invalid_token" => Rejection::InvalidToken,
            Some(code) => Rejection::Other(code),
            None => Rejection::NoErrorCode,
        };
        let mut one = HeaderMap::new();
        one.insert(http::header::WWW_AUTHENTICATE, HeaderValue::from_str(&header).unwrap());
        prop_assert_eq!(classify(StatusCode::UNAUTHORIZED, &one, None), expected.clone());
        let mut split = HeaderMap::new();
        for c in &challenges {
            split.append(http::header::WWW_AUTHENTICATE, HeaderValue::from_str(&c.text).unwrap());
        }
        prop_assert_eq!(classify(StatusCode::UNAUTHORIZED, &split, None), expected);
    }
}

#[derive(Debug, Clone)]
struct GeneratedChallenge {
    text: String,
    scheme: String,
    params: Vec<(String, String)>,
}

fn challenge() -> impl Strategy<Value = GeneratedChallenge> {
    let scheme = prop_oneof![
        Just("Bearer".to_owned()),
        Just("bearer".to_owned()),
        Just("Basic".to_owned()),
        "[A-Za-z][A-Za-z0-9-]{0,8}"
    ];
    let name = prop_oneof![
        Just("error".to_owned()),
        Just("realm".to_owned()),
        Just("Error".to_owned()),
        Just("error_description".to_owned()),
        "[A-Za-z][A-Za-z0-9_-]{0,8}",
    ];
    let value = prop_oneof![
        Just("invalid_token".to_owned()),
        Just("insufficient_scope".to_owned()),
        // Printable ASCII, quotes, backslashes, commas and '=' included.
        "[ -~]{0,16}",
    ];
    // (name, value, quoted, spaces around '=')
    let param = (name, value, any::<bool>(), any::<bool>());
    (scheme, prop::collection::vec(param, 0..4)).prop_map(|(scheme, params)| {
        let mut parts = Vec::new();
        let mut expected = Vec::new();
        for (name, value, quoted, spaced) in params {
            // An unquoted value must be a token; otherwise quote it.
            let is_token = !value.is_empty()
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+.^_`|~-".contains(c));
            let written = if quoted || !is_token {
                format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
            } else {
                value.clone()
            };
            let eq = if spaced { " = " } else { "=" };
            parts.push(format!("{name}{eq}{written}"));
            expected.push((name.to_ascii_lowercase(), value));
        }
        let text = if parts.is_empty() {
            scheme.clone()
        } else {
            format!("{scheme} {}", parts.join(", "))
        };
        GeneratedChallenge {
            text,
            scheme,
            params: expected,
        }
    })
}
