//! What the servers in these tests answer, shared by the tests of both adapters.

use wiremock::matchers::{header, method, path, HeaderExactMatcher};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::token_body;

pub const TOKEN_PATH: &str = "/oauth2/token";
pub const API_PATH: &str = "/v1/payments";
/// A header every API answer here carries, to check that headers reach the caller intact.
pub const REQUEST_ID: &str = "x-request-id";
pub const REQUEST_ID_VALUE: &str = "req-7f3a";
/// The JSON body of the POST requests that are retried.
pub const PAYMENT: &str = r#"{"amount":"12.50","currency":"EUR","reference":"inv-42"}"#;

/// Mounts a token endpoint that answers `tokens` in turn, each exactly once (verified when the
/// server drops), and fails the test on any further token request.
pub async fn mount_token_sequence(auth: &MockServer, tokens: &[&str]) {
    for token in tokens {
        Mock::given(method("POST"))
            .and(path(TOKEN_PATH))
            .respond_with(ResponseTemplate::new(200).set_body_json(token_body(token, 3600)))
            .up_to_n_times(1)
            .expect(1)
            .named(format!("token endpoint answering {token}"))
            .mount(auth)
            .await;
    }
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .named("token endpoint: one request too many")
        .mount(auth)
        .await;
}

/// Matches `Authorization: Bearer <token>`.
pub fn bearer(token: &str) -> HeaderExactMatcher {
    header("authorization", format!("Bearer {token}").as_str())
}

/// The `Authorization` header a server received, or "" when there was none.
pub fn authorization(request: &Request) -> &str {
    request
        .headers
        .get("authorization")
        .map_or("", |v| v.to_str().unwrap())
}

/// An API answering 200 with the `Authorization` header it received as its body.
pub struct EchoAuthorization;

impl Respond for EchoAuthorization {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        ResponseTemplate::new(200)
            .set_body_raw(authorization(request).as_bytes().to_vec(), "text/plain")
    }
}

/// The three ways an API says "this token is no good", each of which warrants one re-fetch and
/// one retry.
#[derive(Debug, Clone, Copy)]
pub enum InvalidToken {
    /// RFC 6750 §3: `WWW-Authenticate: Bearer error="invalid_token"` (the body says nothing).
    Header,
    /// Seed 000's API: `{"error":"invalid_token"}`.
    JsonBody,
    /// AWS API Gateway: `{"message":"Unauthorized"}`, no error code anywhere.
    Bare,
}

impl InvalidToken {
    pub const ALL: [InvalidToken; 3] = [Self::Header, Self::JsonBody, Self::Bare];

    /// The exact bytes of the 401's body.
    pub fn body(self) -> &'static [u8] {
        match self {
            Self::Header => b"token expired at 12:00\n",
            Self::JsonBody => {
                br#"{"error":"invalid_token","error_description":"The access token expired"}"#
            }
            Self::Bare => br#"{"message":"Unauthorized"}"#,
        }
    }

    /// Whether a 401 that is not retried still drops the token it rejected: only when the
    /// headers say so, as the body of a response passed on untouched is not read.
    pub fn dropped_when_not_retried(self) -> bool {
        matches!(self, Self::Header)
    }

    /// The 401 answer.
    pub fn response(self) -> ResponseTemplate {
        let template = ResponseTemplate::new(401).insert_header(REQUEST_ID, REQUEST_ID_VALUE);
        match self {
            Self::Header => template
                .insert_header(
                    "www-authenticate",
                    r#"Bearer realm="payments", error="invalid_token", error_description="The access token expired""#,
                )
                .set_body_raw(self.body(), "text/plain"),
            Self::JsonBody | Self::Bare => template.set_body_raw(self.body(), "application/json"),
        }
    }
}

/// Answers that say a new token cannot help: never replayed, and no token request.
#[derive(Debug)]
pub struct NotRetried {
    pub name: &'static str,
    pub status: u16,
    pub www_authenticate: Option<&'static str>,
    pub body: &'static [u8],
}

pub const NOT_RETRIED: &[NotRetried] = &[
    NotRetried {
        name: "403 insufficient_scope in the body",
        status: 403,
        www_authenticate: None,
        body: b"{\"error\": \"insufficient_scope\"}\n",
    },
    NotRetried {
        name: "403 insufficient_scope in the header",
        status: 403,
        www_authenticate: Some(
            r#"Bearer realm="payments", error="insufficient_scope", scope="payments.write""#,
        ),
        body: br#"{"error":"insufficient_scope","error_description":"payments.write required"}"#,
    },
    NotRetried {
        name: "401 insufficient_scope in the body",
        status: 401,
        www_authenticate: None,
        body: b"{\"error\": \"insufficient_scope\"}\n",
    },
    NotRetried {
        name: "401 invalid_request in the body, a Bearer challenge without a code",
        status: 401,
        www_authenticate: Some(r#"Bearer realm="payments""#),
        body: br#"{"error":"invalid_request"}"#,
    },
    NotRetried {
        name: "401 insufficient_user_authentication in the header (RFC 9470)",
        status: 401,
        www_authenticate: Some(
            r#"Bearer error="insufficient_user_authentication", acr_values="phr""#,
        ),
        body: b"",
    },
    NotRetried {
        name: "403 invalid_request in the header",
        status: 403,
        www_authenticate: Some(r#"Bearer error="invalid_request""#),
        body: b"{}",
    },
];

impl NotRetried {
    pub fn response(&self) -> ResponseTemplate {
        let mut template = ResponseTemplate::new(self.status)
            .insert_header(REQUEST_ID, REQUEST_ID_VALUE)
            .set_body_raw(self.body, "application/json");
        if let Some(challenge) = self.www_authenticate {
            template = template.insert_header("www-authenticate", challenge);
        }
        template
    }
}
