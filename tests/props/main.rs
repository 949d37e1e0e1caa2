//! Property tests of the public parser that reads what APIs send: an API's 401
//! (`WWW-Authenticate` challenges, JSON body). It never panics, and every input gets a defined
//! outcome. (The token endpoint's parser, which is not public, has its property tests beside
//! it in `src/endpoint/response.rs`; the `fuzz/` crate runs both parsers under libFuzzer.)

use client_credentials::challenge::{classify, parse_challenges, Rejection, NEW_TOKEN_CANNOT_FIX};
use http::{HeaderMap, HeaderValue, StatusCode};
use proptest::prelude::*;

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

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

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
            // 400 and 403 are a rejection only through a challenge; the body is never read.
            StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST => {
                prop_assert!(matches!(verdict, Rejection::NotRejected | Rejection::TokenRejected));
                prop_assert_eq!(verdict.clone(), classify(status, &headers, None));
            }
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
            .filter(|c| c.scheme.eq_ignore_ascii_case("bearer") || c.scheme.eq_ignore_ascii_case("dpop"))
            .find_map(|c| c.params.iter().find(|(n, _)| n == "error").map(|(_, v)| v.clone()));
        let expected = match expected {
            Some(code) if code.eq_ignore_ascii_case("use_dpop_nonce") => Rejection::UseDpopNonce,
            Some(code) if NEW_TOKEN_CANNOT_FIX.iter().any(|c| c.eq_ignore_ascii_case(&code)) => {
                Rejection::Unfixable(code)
            }
            Some(_) => Rejection::TokenRejected,
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
            // An unquoted value must be a token, and not start with a single quote (which
            // servers use for quoting, and the parser reads so); otherwise quote it.
            let is_token = !value.is_empty()
                && !value.starts_with('\'')
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
