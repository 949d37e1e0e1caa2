//! Every way the token request can fail: each gives its typed [`Error`] from
//! `access_token()`, and through the reqwest middleware the API request is not sent and the
//! caller gets `reqwest_middleware::Error::Middleware` holding the same error.

use std::time::Duration;

use client_credentials::{ClientCredentials, Error, InvalidResponse, OAuthErrorCode, RetryPolicy};
use http::StatusCode;
use wiremock::matchers::{any, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::common::*;
use crate::support::{token_body, CLIENT_ID, CLIENT_SECRET};

/// What the token endpoint does.
enum Answer {
    /// A wiremock answer.
    Mock(ResponseTemplate),
    /// A raw server streaming this body chunked, without `Content-Length`.
    Chunked(String),
    /// Nothing listens on the port.
    Refused,
    /// A redirect with this status to another server's token endpoint.
    Redirect(u16),
}

type Check = Box<dyn Fn(&Error) -> bool>;

struct Case {
    name: String,
    answer: Answer,
    request_timeout: Option<Duration>,
    max_response_bytes: Option<usize>,
    check: Check,
    /// Substrings the message must contain, besides the endpoint.
    mentions: Vec<String>,
}

impl Case {
    fn new(
        name: impl Into<String>,
        answer: Answer,
        check: impl Fn(&Error) -> bool + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            answer,
            request_timeout: None,
            max_response_bytes: None,
            check: Box::new(check),
            mentions: Vec::new(),
        }
    }

    fn mentions(mut self, texts: &[&str]) -> Self {
        self.mentions.extend(texts.iter().map(|s| (*s).to_owned()));
        self
    }
}

fn json(status: u16, body: serde_json::Value) -> Answer {
    Answer::Mock(ResponseTemplate::new(status).set_body_json(body))
}

fn text(status: u16, body: &str) -> Answer {
    Answer::Mock(
        ResponseTemplate::new(status)
            .insert_header("content-type", "text/html")
            .set_body_string(body),
    )
}

fn invalid(kind: InvalidResponse) -> impl Fn(&Error) -> bool {
    move |e| matches!(e, Error::InvalidResponse { kind: k, .. } if *k == kind)
}

fn status(expected: u16, retry_after: Option<Duration>) -> impl Fn(&Error) -> bool {
    move |e| {
        matches!(e, Error::Status { status, retry_after: r, .. }
            if status.as_u16() == expected && *r == retry_after)
    }
}

const LIMIT: usize = 1024;

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let codes = [
        ("invalid_request", OAuthErrorCode::InvalidRequest),
        ("invalid_client", OAuthErrorCode::InvalidClient),
        ("invalid_grant", OAuthErrorCode::InvalidGrant),
        ("unauthorized_client", OAuthErrorCode::UnauthorizedClient),
        (
            "unsupported_grant_type",
            OAuthErrorCode::UnsupportedGrantType,
        ),
        ("invalid_scope", OAuthErrorCode::InvalidScope),
        (
            "access_denied_by_policy",
            OAuthErrorCode::Other("access_denied_by_policy".into()),
        ),
    ];
    for (wire, code) in codes {
        for description in [None, Some("The request was refused by policy 42")] {
            let mut body = serde_json::json!({ "error": wire });
            if let Some(d) = description {
                body["error_description"] = d.into();
            }
            let expected = code.clone();
            let mut case = Case::new(
                format!("400 {wire} description={description:?}"),
                json(400, body),
                move |e| {
                    matches!(e, Error::OAuth { status, code, description: d, .. }
                        if *status == StatusCode::BAD_REQUEST
                            && *code == expected
                            && d.as_deref() == description)
                        && e.oauth_code() == Some(&expected)
                        && !e.is_transient()
                },
            )
            .mentions(&[wire]);
            if let Some(d) = description {
                case = case.mentions(&[d]);
            }
            cases.push(case);
        }
    }
    cases.push(
        Case::new(
            "401 invalid_client (Cognito)",
            json(401, serde_json::json!({"error": "invalid_client"})),
            |e| {
                matches!(e, Error::OAuth { status, code: OAuthErrorCode::InvalidClient, .. }
                    if *status == StatusCode::UNAUTHORIZED)
            },
        )
        .mentions(&["invalid_client"]),
    );
    cases.push(
        Case::new(
            "500",
            text(500, "<html>upstream exploded</html>"),
            status(500, None),
        )
        .mentions(&["500"]),
    );
    cases.push(
        Case::new(
            "500 with an OAuth body stays a status error",
            json(500, serde_json::json!({"error": "server_error"})),
            status(500, None),
        )
        .mentions(&["500"]),
    );
    cases.push(
        Case::new(
            "429 with Retry-After",
            Answer::Mock(ResponseTemplate::new(429).insert_header("retry-after", "7")),
            status(429, Some(Duration::from_secs(7))),
        )
        .mentions(&["429"]),
    );
    cases.push(
        Case::new(
            "400 not JSON",
            text(400, "<html>bad</html>"),
            status(400, None),
        )
        .mentions(&["400"]),
    );
    cases.push(
        Case::new(
            "400 empty",
            Answer::Mock(ResponseTemplate::new(400)),
            status(400, None),
        )
        .mentions(&["400"]),
    );
    cases.push(Case::new(
        "200 not JSON",
        text(200, "<html>login page tok-leak-html</html>"),
        invalid(InvalidResponse::NotJson),
    ));
    cases.push(Case::new(
        "200 empty body",
        Answer::Mock(ResponseTemplate::new(200)),
        invalid(InvalidResponse::NotJson),
    ));
    cases.push(Case::new(
        "200 JSON array",
        json(200, serde_json::json!(["tok-leak-array"])),
        invalid(InvalidResponse::NotJson),
    ));
    cases.push(Case::new(
        "200 without access_token",
        json(
            200,
            serde_json::json!({"token_type": "Bearer", "expires_in": 3600}),
        ),
        invalid(InvalidResponse::MissingAccessToken),
    ));
    cases.push(Case::new(
        "200 access_token not a string",
        json(
            200,
            serde_json::json!({"access_token": 12345, "token_type": "Bearer"}),
        ),
        invalid(InvalidResponse::MissingAccessToken),
    ));
    for token_type in ["mac", "DPoP", "N_A"] {
        cases.push(
            Case::new(
                format!("200 token_type {token_type}"),
                json(
                    200,
                    serde_json::json!({"access_token": "tok-leak-typed", "token_type": token_type, "expires_in": 3600}),
                ),
                invalid(InvalidResponse::UnsupportedTokenType(token_type.into())),
            )
            .mentions(&[token_type]),
        );
    }
    cases.push(Case::new(
        "200 token not a header value",
        json(
            200,
            serde_json::json!({"access_token": "tok-leak-\nnewline", "token_type": "Bearer"}),
        ),
        invalid(InvalidResponse::TokenNotHeaderSafe),
    ));
    cases.push(Case::new(
        "200 expires_in not a number",
        json(
            200,
            serde_json::json!({"access_token": "tok-leak-exp", "token_type": "Bearer", "expires_in": "soon"}),
        ),
        invalid(InvalidResponse::InvalidExpiresIn),
    ));
    let mut announced = Case::new(
        "oversized body announced by Content-Length",
        Answer::Mock(ResponseTemplate::new(200).set_body_raw(
            padded_token_body("tok-leak-big", 4 * LIMIT),
            "application/json",
        )),
        invalid(InvalidResponse::BodyTooLarge { limit: LIMIT }),
    )
    .mentions(&["1024"]);
    announced.max_response_bytes = Some(LIMIT);
    cases.push(announced);
    let mut streamed = Case::new(
        "oversized body streamed chunked",
        Answer::Chunked(padded_token_body("tok-leak-big", 64 * LIMIT)),
        invalid(InvalidResponse::BodyTooLarge { limit: LIMIT }),
    )
    .mentions(&["1024"]);
    streamed.max_response_bytes = Some(LIMIT);
    cases.push(streamed);
    let timeout = Duration::from_millis(300);
    let mut slow = Case::new(
        "slow endpoint past the request timeout",
        Answer::Mock(
            ResponseTemplate::new(200)
                .set_body_json(token_body("tok-leak-slow", 3600))
                .set_delay(Duration::from_secs(60)),
        ),
        move |e| {
            matches!(e, Error::Timeout { timeout: t, .. } if *t == timeout) && e.is_transient()
        },
    )
    .mentions(&["300ms"]);
    slow.request_timeout = Some(timeout);
    cases.push(slow);
    cases.push(Case::new("refused connection", Answer::Refused, |e| {
        matches!(e, Error::Transport { .. }) && e.is_transient()
    }));
    for code in [302, 307] {
        cases.push(
            Case::new(
                format!("redirect {code}"),
                Answer::Redirect(code),
                move |e| {
                    matches!(e, Error::Redirect { status, .. } if status.as_u16() == code)
                        && !e.is_transient()
                },
            )
            .mentions(&[code.to_string().as_str()]),
        );
    }
    cases
}

/// The token endpoint of one case, and where a redirect would lead.
struct Target {
    url: String,
    server: Option<MockServer>,
    chunked: Option<ChunkedServer>,
    redirected_to: Option<MockServer>,
}

impl Target {
    async fn start(answer: &Answer) -> Self {
        match answer {
            Answer::Mock(template) => {
                let server = MockServer::start().await;
                Mock::given(method("POST"))
                    .and(path("/oauth2/token"))
                    .respond_with(template.clone())
                    .mount(&server)
                    .await;
                Self {
                    url: token_url(&server),
                    server: Some(server),
                    chunked: None,
                    redirected_to: None,
                }
            }
            Answer::Chunked(body) => {
                let chunked = ChunkedServer::start(body.clone(), 256).await;
                Self {
                    url: chunked.url.clone(),
                    server: None,
                    chunked: Some(chunked),
                    redirected_to: None,
                }
            }
            Answer::Refused => Self {
                url: refused_url(),
                server: None,
                chunked: None,
                redirected_to: None,
            },
            Answer::Redirect(code) => {
                let elsewhere = MockServer::start().await;
                Mock::given(any())
                    .respond_with(
                        ResponseTemplate::new(200)
                            .set_body_json(token_body("tok-leak-elsewhere", 3600)),
                    )
                    .expect(0)
                    .named("the redirect target (must never see the credentials)")
                    .mount(&elsewhere)
                    .await;
                let server = MockServer::start().await;
                Mock::given(method("POST"))
                    .and(path("/oauth2/token"))
                    .respond_with(
                        ResponseTemplate::new(*code)
                            .insert_header("location", token_url(&elsewhere)),
                    )
                    .mount(&server)
                    .await;
                Self {
                    url: token_url(&server),
                    server: Some(server),
                    chunked: None,
                    redirected_to: Some(elsewhere),
                }
            }
        }
    }

    /// Token requests received (refused: none can be).
    async fn hits(&self) -> usize {
        match (&self.server, &self.chunked) {
            (Some(server), _) => hits(server).await,
            (None, Some(chunked)) => chunked.hits(),
            (None, None) => 0,
        }
    }
}

fn credentials(case: &Case, url: &str) -> ClientCredentials {
    let mut builder = ClientCredentials::builder()
        .token_url(url)
        .client_id(CLIENT_ID)
        .client_secret(CLIENT_SECRET)
        .retry_policy(RetryPolicy::no_retry());
    if let Some(timeout) = case.request_timeout {
        builder = builder.request_timeout(timeout);
    }
    if let Some(limit) = case.max_response_bytes {
        builder = builder.max_response_bytes(limit);
    }
    builder.build().unwrap()
}

fn assert_message(case: &Case, error: &Error, endpoint: &str) {
    let name = &case.name;
    let message = error.to_string();
    assert!(
        message.contains(endpoint),
        "{name}: `{message}` names the endpoint {endpoint}"
    );
    for text in &case.mentions {
        assert!(
            message.contains(text.as_str()),
            "{name}: `{message}` mentions `{text}`"
        );
    }
    assert_hides(
        &everything_printed(error),
        &[
            CLIENT_SECRET,
            &base64_pair(CLIENT_ID, CLIENT_SECRET),
            TOKEN_PREFIX,
        ],
        name,
    );
}

#[tokio::test]
async fn each_failure_is_typed_directly_and_through_the_middleware() {
    for case in cases() {
        let name = &case.name;
        let target = Target::start(&case.answer).await;

        // Directly.
        let direct = credentials(&case, &target.url)
            .access_token()
            .await
            .expect_err(name);
        assert!((case.check)(&direct), "{name}: got {direct:?}");
        assert_message(&case, &direct, &target.url);

        // Through the middleware, with fresh credentials (so no backoff from the first run):
        // the API never sees the request, the caller gets the same typed error.
        let api = MockServer::start().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(200))
            .expect(0)
            .named("the API (must not be called without a token)")
            .mount(&api)
            .await;
        let via = credentials(&case, &target.url);
        let result = crate::support::client(&via)
            .post(format!("{}/v1/payments", api.uri()))
            .body("{\"amount\":1}")
            .send()
            .await;
        let outer = match result {
            Err(e) => e,
            Ok(response) => panic!("{name}: the request was sent: {}", response.status()),
        };
        assert_hides(
            &format!("{outer}\n{outer:?}"),
            &[CLIENT_SECRET, TOKEN_PREFIX],
            name,
        );
        let reqwest_middleware::Error::Middleware(inner) = outer else {
            panic!("{name}: not a middleware error: {outer:?}");
        };
        let typed = inner
            .downcast_ref::<Error>()
            .unwrap_or_else(|| panic!("{name}: not a client_credentials::Error: {inner:?}"));
        assert!(
            (case.check)(typed),
            "{name}: through the middleware got {typed:?}"
        );
        assert_eq!(typed.to_string(), direct.to_string(), "{name}");
        assert_message(&case, typed, &target.url);

        assert!(
            hits(&api).await == 0,
            "{name}: the API received a request without a token"
        );
        let expected_hits = if matches!(case.answer, Answer::Refused) {
            0
        } else {
            2
        };
        assert_eq!(
            target.hits().await,
            expected_hits,
            "{name}: one token request per credentials, no retry"
        );
        if let Some(elsewhere) = &target.redirected_to {
            assert_eq!(
                hits(elsewhere).await,
                0,
                "{name}: the redirect was followed"
            );
        }
    }
}

#[tokio::test]
async fn oversized_body_controls_succeed_under_a_larger_limit() {
    // The same answers as the oversized cases, with room for them: they are valid tokens, so
    // only the limit made those cases fail.
    let body = padded_token_body("tok-leak-big", 4 * LIMIT);
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
        .mount(&server)
        .await;
    let chunked = ChunkedServer::start(padded_token_body("tok-leak-big", 64 * LIMIT), 256).await;
    for url in [token_url(&server), chunked.url.clone()] {
        let credentials = ClientCredentials::builder()
            .token_url(&url)
            .client_id(CLIENT_ID)
            .client_secret(CLIENT_SECRET)
            .max_response_bytes(128 * LIMIT)
            .build()
            .unwrap();
        let token = credentials.access_token().await.unwrap();
        assert_eq!(token.secret(), "tok-leak-big", "{url}");
    }
    assert_eq!(chunked.hits(), 1);
}
