//! Hostile and malformed answers: each a typed error or a correct reading, never a panic, a
//! stack overflow or unbounded memory.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client_credentials::challenge::{
    classify, parse_challenges, Challenge, Rejection, MAX_INSPECTED_BODY,
};
use client_credentials::{AccessToken, ClientCredentials, Error, InvalidResponse, RetryPolicy};
use http::{HeaderMap, HeaderValue, StatusCode};
use tokio::io::AsyncWriteExt;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::RawServer;
use crate::support::*;

fn kind(result: Result<impl std::fmt::Debug, Error>) -> InvalidResponse {
    match result {
        Err(Error::InvalidResponse { kind, .. }) => kind,
        other => panic!("expected InvalidResponse, got {other:?}"),
    }
}

async fn token_endpoint(body: Vec<u8>) -> MockServer {
    token_endpoint_answering(200, body).await
}

async fn token_endpoint_answering(status: u16, body: Vec<u8>) -> MockServer {
    let auth = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(status).set_body_raw(body, "application/json"))
        .mount(&auth)
        .await;
    auth
}

/// What a token endpoint answering `status` and `body` makes of a token request: the body
/// read whole (the limit raised to 16 MiB), the request not retried.
async fn answer_of(status: u16, body: &[u8]) -> Result<AccessToken, Error> {
    let auth = token_endpoint_answering(status, body.to_vec()).await;
    builder(&auth)
        .max_response_bytes(16 << 20)
        .retry_policy(RetryPolicy::no_retry())
        .build()
        .unwrap()
        .access_token()
        .await
}

#[tokio::test]
async fn token_that_is_not_a_header_value_is_a_typed_error_and_nothing_is_sent() {
    let _serial = crate::harness::shared().await;
    let tokens = [
        "abc\r\nX-Injected: 1",
        "abc\nSet-Cookie: x",
        "abc\rdef",
        "nul\u{0}byte",
        "bell\u{7}",
        "del\u{7f}",
        "esc\u{1b}[31m",
    ];
    for token in tokens {
        let body = serde_json::to_vec(&token_body(token, 3600)).unwrap();
        let auth = token_endpoint(body).await;
        let api = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200))
            .expect(0)
            .mount(&api)
            .await;
        let credentials = builder(&auth).build().unwrap();
        assert_eq!(
            kind(credentials.access_token().await),
            InvalidResponse::TokenNotHeaderSafe,
            "{token:?}"
        );
        // Through the middleware: the request is not sent at all.
        let credentials = builder(&auth).build().unwrap();
        let err = client(&credentials)
            .get(format!("{}/v1/x", api.uri()))
            .send()
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("not a valid HTTP header value"),
            "{err}"
        );
        assert!(!err.to_string().contains(token), "{err}");
    }
}

#[tokio::test]
async fn body_announced_far_above_the_limit_is_refused_without_reading_it() {
    let _serial = crate::harness::shared().await;
    // A real 1 MiB body against a 1 KiB limit.
    let auth = token_endpoint(vec![b' '; 1 << 20]).await;
    let credentials = builder(&auth).max_response_bytes(1024).build().unwrap();
    assert_eq!(
        kind(credentials.access_token().await),
        InvalidResponse::BodyTooLarge { limit: 1024 }
    );

    // 100 GB announced, a few bytes sent, the connection kept open: refused on the headers,
    // without waiting for (or buffering) the body.
    let server = RawServer::start(|_request, mut stream| async move {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000000000\r\n\r\n{\"access_token\":\"";
        let _ = stream.write_all(head.as_bytes()).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let credentials = ClientCredentials::builder()
        .token_url(server.url("/oauth2/token"))
        .client_id(CLIENT_ID)
        .client_secret(CLIENT_SECRET)
        .request_timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    assert_eq!(
        kind(credentials.access_token().await),
        InvalidResponse::BodyTooLarge {
            limit: client_credentials::DEFAULT_MAX_RESPONSE_BYTES
        }
    );
}

/// The default limit (64 KiB, `DEFAULT_MAX_RESPONSE_BYTES`): a large real-world answer (an
/// Entra ID token with group claims runs to several KB) is read, an answer of exactly the limit
/// is read, and one byte more is refused.
#[tokio::test]
async fn the_default_limit_reads_large_tokens_and_refuses_one_byte_more() {
    let _serial = crate::harness::shared().await;
    use client_credentials::DEFAULT_MAX_RESPONSE_BYTES;
    assert_eq!(
        DEFAULT_MAX_RESPONSE_BYTES,
        64 * 1024,
        "the documented default"
    );
    // A 12 KB JWT-shaped token: three base64url parts.
    let large = format!(
        "eyJhbGciOiJSUzI1NiJ9.{}.{}",
        "eyJncm91cHMiOlsi".repeat(700),
        "c2lnbmF0dXJl".repeat(30)
    );
    assert!(large.len() > 11_000);
    let body = serde_json::to_vec(&token_body(&large, 3600)).unwrap();
    let credentials = builder(&token_endpoint(body).await).build().unwrap();
    assert_eq!(credentials.access_token().await.unwrap().secret(), large);

    // JSON padded with trailing whitespace to an exact size.
    let sized = |size: usize| {
        let mut body = serde_json::to_vec(&token_body("tok-at-the-limit", 3600)).unwrap();
        body.resize(size, b' ');
        body
    };
    let at_limit = sized(DEFAULT_MAX_RESPONSE_BYTES);
    let credentials = builder(&token_endpoint(at_limit).await).build().unwrap();
    assert_eq!(
        credentials.access_token().await.unwrap().secret(),
        "tok-at-the-limit"
    );
    let over = sized(DEFAULT_MAX_RESPONSE_BYTES + 1);
    let credentials = builder(&token_endpoint(over).await).build().unwrap();
    assert_eq!(
        kind(credentials.access_token().await),
        InvalidResponse::BodyTooLarge {
            limit: DEFAULT_MAX_RESPONSE_BYTES
        }
    );
}

/// A chunked answer without `Content-Length` that never ends: the client stops reading at the
/// limit and drops the connection, so the server's writes fail long before its own cap.
#[tokio::test]
async fn endless_chunked_body_stops_at_the_limit() {
    let _serial = crate::harness::shared().await;
    const SERVER_CAP: u64 = 1 << 30;
    let written = Arc::new(AtomicU64::new(0));
    let cut_off = Arc::new(AtomicBool::new(false));
    let server = RawServer::start({
        let (written, cut_off) = (Arc::clone(&written), Arc::clone(&cut_off));
        move |_request, mut stream| {
            let (written, cut_off) = (Arc::clone(&written), Arc::clone(&cut_off));
            async move {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let data = vec![b' '; 16 * 1024];
                let chunk = [
                    format!("{:x}\r\n", data.len()).into_bytes(),
                    data,
                    b"\r\n".to_vec(),
                ]
                .concat();
                while written.load(Ordering::SeqCst) < SERVER_CAP {
                    if stream.write_all(&chunk).await.is_err() {
                        cut_off.store(true, Ordering::SeqCst);
                        return;
                    }
                    written.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                }
            }
        }
    });
    let limit = 64 * 1024;
    let credentials = ClientCredentials::builder()
        .token_url(server.url("/oauth2/token"))
        .client_id(CLIENT_ID)
        .client_secret(CLIENT_SECRET)
        .max_response_bytes(limit)
        .request_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    assert_eq!(
        kind(credentials.access_token().await),
        InvalidResponse::BodyTooLarge { limit }
    );
    drop(credentials);
    eventually(|| async { cut_off.load(Ordering::SeqCst) }).await;
    let written = written.load(Ordering::SeqCst);
    println!("endless chunked body: the server wrote {written} bytes before the client hung up");
    // What the kernel's socket buffers take in, not what a 1 GiB stream would be.
    assert!(
        written < 64 << 20,
        "{written} bytes written: the client kept reading"
    );
}

#[tokio::test]
async fn deeply_nested_json_is_a_typed_error_without_stack_overflow() {
    let _serial = crate::harness::shared().await;
    let depth = 100_000;
    let arrays = "[".repeat(depth).into_bytes();
    let objects = r#"{"a":"#.repeat(depth).into_bytes();
    let in_unknown_field = [
        br#"{"access_token":"t","token_type":"Bearer","x":"#.to_vec(),
        "[".repeat(depth).into_bytes(),
    ]
    .concat();
    let in_token = [
        br#"{"access_token":"#.to_vec(),
        "[".repeat(depth).into_bytes(),
    ]
    .concat();

    // Over HTTP, with the limit raised so the parser sees it all.
    for body in [&arrays, &objects, &in_unknown_field, &in_token] {
        let auth = token_endpoint(body.clone()).await;
        let credentials = builder(&auth).max_response_bytes(1 << 20).build().unwrap();
        assert_eq!(
            kind(credentials.access_token().await),
            InvalidResponse::NotJson
        );
    }
    // On success and error statuses, ten times deeper.
    let deeper = "[".repeat(10 * depth).into_bytes();
    for body in [&arrays, &objects, &in_unknown_field, &in_token, &deeper] {
        assert_eq!(kind(answer_of(200, body).await), InvalidResponse::NotJson);
        assert!(matches!(
            answer_of(400, body).await,
            Err(Error::Status {
                status: StatusCode::BAD_REQUEST,
                ..
            })
        ));
    }
    // A 401 body, at the inspection limit and above it.
    let at_limit = "[".repeat(MAX_INSPECTED_BODY).into_bytes();
    for body in [&at_limit, &deeper] {
        assert_eq!(
            classify(StatusCode::UNAUTHORIZED, &HeaderMap::new(), Some(body)),
            Rejection::NoErrorCode
        );
    }
}

#[tokio::test]
async fn invalid_utf8_is_a_typed_error() {
    let _serial = crate::harness::shared().await;
    let bodies: [&[u8]; 3] = [
        b"\xff\xfe\xfd",
        b"{\"access_token\":\"ab\xffcd\",\"token_type\":\"Bearer\"}",
        b"{\"access_token\":\"abcd\",\"token_type\":\"Bear\xc3\x28\"}",
    ];
    for body in bodies {
        let auth = token_endpoint(body.to_vec()).await;
        let credentials = builder(&auth).build().unwrap();
        assert_eq!(
            kind(credentials.access_token().await),
            InvalidResponse::NotJson,
            "{body:?}"
        );
    }
    // An error answer that is not UTF-8 is still an error status, not a panic.
    assert!(matches!(
        answer_of(400, b"{\"error\":\"\xff\"}").await,
        Err(Error::Status { .. })
    ));
    // A 401 body that is not UTF-8 carries no code.
    assert_eq!(
        classify(
            StatusCode::UNAUTHORIZED,
            &HeaderMap::new(),
            Some(b"{\"error\":\"invalid_\xfftoken\"}")
        ),
        Rejection::NoErrorCode
    );
}

fn challenge(scheme: &str, params: &[(&str, &str)]) -> Challenge {
    Challenge {
        scheme: scheme.to_owned(),
        params: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

#[test]
fn www_authenticate_with_several_challenges_and_odd_quoting_is_read_correctly() {
    let _serial = crate::harness::shared_blocking();
    let cases: Vec<(&str, Vec<Challenge>)> = vec![
        // RFC 9110 §11.6.1's own example.
        (
            r#"Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple""#,
            vec![
                challenge(
                    "Newauth",
                    &[
                        ("realm", "apps"),
                        ("type", "1"),
                        ("title", r#"Login to "apps""#),
                    ],
                ),
                challenge("Basic", &[("realm", "simple")]),
            ],
        ),
        // Commas, equals signs and escapes inside quotes.
        (
            r#"Bearer realm="a, b=c, Basic x=y", error="invalid_token", error_description="say \"no\", \\ then stop""#,
            vec![challenge(
                "Bearer",
                &[
                    ("realm", "a, b=c, Basic x=y"),
                    ("error", "invalid_token"),
                    ("error_description", r#"say "no", \ then stop"#),
                ],
            )],
        ),
        // Odd spacing, empty list elements, mixed case names.
        (
            "  ,Basic   realm = \"x\" ,, ,  BEARER  Error = invalid_token ,Realm=api,  ",
            vec![
                challenge("Basic", &[("realm", "x")]),
                challenge("BEARER", &[("error", "invalid_token"), ("realm", "api")]),
            ],
        ),
        // Schemes without parameters.
        (
            "Negotiate, Bearer",
            vec![challenge("Negotiate", &[]), challenge("Bearer", &[])],
        ),
        // An empty quoted value.
        (
            r#"Bearer realm="", error="invalid_token""#,
            vec![challenge(
                "Bearer",
                &[("realm", ""), ("error", "invalid_token")],
            )],
        ),
        // An unterminated quoted string runs to the end.
        (
            r#"Bearer error="invalid_token"#,
            vec![challenge("Bearer", &[("error", "invalid_token")])],
        ),
    ];
    for (header, expected) in cases {
        assert_eq!(parse_challenges(header), expected, "{header}");
    }
}

#[test]
fn token68_reads_as_one_parameter_with_an_empty_name() {
    let _serial = crate::harness::shared_blocking();
    // RFC 9110 token68: `Basic dGVzdA==`. The crate documents it as a parameter with an empty
    // name, and the challenge after it must still be read.
    let parsed = parse_challenges(r#"Basic dGVzdA==, Bearer error="invalid_token""#);
    assert_eq!(
        parsed,
        vec![
            challenge("Basic", &[("", "dGVzdA==")]),
            challenge("Bearer", &[("error", "invalid_token")])
        ]
    );
    let parsed = parse_challenges("Negotiate YIIBhwYGKwYBBQUCoIIBezCCAXeg+/ABC=, Bearer");
    assert_eq!(
        parsed,
        vec![
            challenge("Negotiate", &[("", "YIIBhwYGKwYBBQUCoIIBezCCAXeg+/ABC=")]),
            challenge("Bearer", &[])
        ]
    );
}

#[test]
fn classify_reads_the_right_challenge_across_headers() {
    let _serial = crate::harness::shared_blocking();
    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        map
    }
    let un = StatusCode::UNAUTHORIZED;
    let cases: Vec<(HeaderMap, Option<&[u8]>, Rejection)> = vec![
        // Another scheme's `error` is not the Bearer one.
        (
            headers(&[br#"Basic error="invalid_token", Bearer realm="x""#]),
            None,
            Rejection::NoErrorCode,
        ),
        (
            headers(&[
                br#"Basic realm="a, b""#,
                br#"Bearer realm="x", error="invalid_token""#,
            ]),
            None,
            Rejection::TokenRejected,
        ),
        (
            headers(&[br#"Bearer realm="error=invalid_token""#]),
            None,
            Rejection::NoErrorCode,
        ),
        (
            headers(&[br#"Bearer error="insufficient_scope", scope="a b""#]),
            None,
            Rejection::Unfixable("insufficient_scope".into()),
        ),
        // A header that is not visible ASCII is skipped; the body then decides.
        (
            headers(&[b"Bearer error=\"invalid_token\", realm=\"\xe9\""]),
            Some(br#"{"error":"invalid_token"}"#),
            Rejection::TokenRejected,
        ),
        (
            headers(&[b"Bearer error=\"invalid_token\", realm=\"\xe9\""]),
            None,
            Rejection::NoErrorCode,
        ),
    ];
    for (headers, body, expected) in cases {
        assert_eq!(classify(un, &headers, body), expected, "{headers:?}");
    }
}

/// End to end: a 401 with two `WWW-Authenticate` headers, the Bearer one second, is read as
/// `invalid_token`, and the request is retried once with a new token.
#[tokio::test]
async fn middleware_reads_invalid_token_from_the_second_challenge_header() {
    let _serial = crate::harness::shared().await;
    let auth = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(crate::rejecting_api::UniqueTokens {
            issued: std::sync::atomic::AtomicUsize::new(0),
            prefix: "tok",
            expires_in: 3600,
        })
        .expect(2)
        .mount(&auth)
        .await;
    let api = MockServer::start().await;
    Mock::given(method("GET"))
        .and(wiremock::matchers::header("authorization", "Bearer tok-0"))
        .respond_with(
            ResponseTemplate::new(401)
                .append_header("www-authenticate", r#"Basic realm="a, b""#)
                .append_header(
                    "www-authenticate",
                    r#"Bearer realm="x", error="invalid_token""#,
                ),
        )
        .expect(1)
        .mount(&api)
        .await;
    Mock::given(method("GET"))
        .and(wiremock::matchers::header("authorization", "Bearer tok-1"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&api)
        .await;
    let credentials = builder(&auth).build().unwrap();
    let res = client(&credentials)
        .get(format!("{}/v1/x", api.uri()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}
