//! Issue 9: every shape of `shape_table` through the rule and through both adapters.

use client_credentials::challenge::{classify, MAX_INSPECTED_BODY};
use http::{HeaderMap, HeaderValue, StatusCode};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::adapter::{Adapter, Payment};
use super::cases::{bearer, mount_token_sequence, API_PATH, REQUEST_ID, REQUEST_ID_VALUE};
use super::shape_table::{shapes, Shape};
use crate::support::*;

impl Shape {
    fn name(&self) -> String {
        format!("{}: {}", self.server, self.case)
    }

    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in self.www_authenticate {
            headers.append(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static(value),
            );
        }
        headers
    }

    /// Whether the adapters drop the token and replay (a 401 with no code counts, the default).
    fn replays(&self) -> bool {
        self.verdict.warrants_new_token(true)
    }

    fn response(&self) -> ResponseTemplate {
        let mut template =
            ResponseTemplate::new(self.status).insert_header(REQUEST_ID, REQUEST_ID_VALUE);
        for value in self.www_authenticate {
            template = template.append_header("www-authenticate", *value);
        }
        match self.content_type {
            Some(content_type) => template.set_body_raw(self.body, content_type),
            None => template.set_body_bytes(self.body),
        }
    }
}

#[test]
fn each_shape_gets_its_verdict_from_the_rule() {
    let all = shapes();
    assert!(all.len() >= 80, "{}", all.len());
    for shape in &all {
        let status = StatusCode::from_u16(shape.status).unwrap();
        assert!(shape.body.len() <= MAX_INSPECTED_BODY);
        assert_eq!(
            classify(status, &shape.headers(), Some(shape.body)),
            shape.verdict,
            "{} (source: {})",
            shape.name(),
            shape.source
        );
        assert!(
            !shape.source.is_empty(),
            "{}: every shape names its source",
            shape.name()
        );
    }
    // Every server the issue names is in the table.
    for server in [
        "Spring Security",
        "Spring Boot",
        "ASP.NET Core",
        "express-oauth2-jwt-bearer",
        "NestJS",
        "Fastify",
        "hapi",
        "FastAPI",
        "DRF + simplejwt",
        "Flask-JWT-Extended",
        "AWS API Gateway REST API",
        "AWS API Gateway HTTP API",
        "Kong",
        "Azure API Management",
        "Envoy",
        "Google APIs",
        "Microsoft Graph",
        "Salesforce",
        "GitHub",
        "Okta",
    ] {
        assert!(
            all.iter().any(|s| s.server.contains(server)),
            "{server} is missing"
        );
    }
}

/// End to end, each shape through every adapter: a token rejection is recovered with exactly
/// one token request and one replay carrying the new token; anything else reaches the caller
/// intact (status, headers, body) with no token request and no replay.
#[tokio::test]
async fn each_shape_is_recovered_or_passed_on_through_both_adapters() {
    for shape in shapes() {
        for &adapter in Adapter::all() {
            let at = format!("{adapter:?}, {}", shape.name());
            let (auth, api) = (MockServer::start().await, MockServer::start().await);
            let tokens: &[&str] = if shape.replays() {
                &["tok-1", "tok-2"]
            } else {
                &["tok-1"]
            };
            mount_token_sequence(&auth, tokens).await;
            Mock::given(method("POST"))
                .and(path(API_PATH))
                .and(bearer("tok-1"))
                .respond_with(shape.response())
                .expect(1)
                .named(format!("{at}: the rejection"))
                .mount(&api)
                .await;
            Mock::given(method("POST"))
                .and(path(API_PATH))
                .and(bearer("tok-2"))
                .respond_with(ResponseTemplate::new(201).set_body_string("created"))
                .expect(u64::from(shape.replays()))
                .named(format!("{at}: the replay"))
                .mount(&api)
                .await;
            let credentials = builder(&auth).build().unwrap();

            let answer = adapter.send(&credentials, Payment::to(&api)).await;
            let stats = credentials.stats();
            if shape.replays() {
                assert_eq!(answer.status, 201, "{at}");
                assert_eq!(&answer.body[..], b"created", "{at}");
                assert_eq!(
                    (
                        stats.token_requests,
                        stats.forced_refreshes,
                        stats.replayed_requests
                    ),
                    (2, 1, 1),
                    "{at}: one token request and one replay"
                );
            } else {
                answer.assert_intact(shape.status, &api, shape.body, &at);
                let challenges: Vec<&str> = answer
                    .headers
                    .get_all("www-authenticate")
                    .iter()
                    .map(|v| v.to_str().unwrap())
                    .collect();
                assert_eq!(challenges, shape.www_authenticate, "{at}");
                assert_eq!(
                    (
                        stats.token_requests,
                        stats.forced_refreshes,
                        stats.replayed_requests
                    ),
                    (1, 0, 0),
                    "{at}: no token request, no replay"
                );
            }
            api.verify().await;
            auth.verify().await;
        }
    }
}
