//! Which token endpoint failures are retried within one fetch: 5xx and 429 are, OAuth errors
//! such as `invalid_client` are not.

use std::time::Duration;

use client_credentials::{Error, OAuthErrorCode, RetryPolicy};
use wiremock::matchers::{any, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::common::*;
use crate::support::{builder, client, token_body};

/// Three attempts with backoffs of a few milliseconds, so the test does not wait.
fn quick_retries(attempts: u32) -> RetryPolicy {
    RetryPolicy::default()
        .max_attempts(attempts)
        .initial_backoff(Duration::from_millis(1))
        .max_backoff(Duration::from_millis(4))
}

fn transient_answers() -> Vec<(&'static str, ResponseTemplate)> {
    vec![
        ("500", ResponseTemplate::new(500).set_body_string("oops")),
        ("503", ResponseTemplate::new(503)),
        ("429", ResponseTemplate::new(429)),
    ]
}

#[tokio::test]
async fn transient_failures_are_retried_until_a_token_comes() {
    for (name, failure) in transient_answers() {
        let auth = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .respond_with(failure)
            .up_to_n_times(2)
            .with_priority(1)
            .mount(&auth)
            .await;
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(token_body("tok-leak-third", 3600)),
            )
            .mount(&auth)
            .await;
        let credentials = builder(&auth)
            .retry_policy(quick_retries(3))
            .build()
            .unwrap();
        let token = credentials.access_token().await.unwrap();
        assert_eq!(token.secret(), "tok-leak-third", "{name}");
        assert_eq!(hits(&auth).await, 3, "{name}: two failures, then the token");
        let stats = credentials.stats();
        assert_eq!(stats.token_requests, 3, "{name}");
        assert_eq!(stats.token_failures, 2, "{name}");
        assert_eq!(stats.tokens_fetched, 1, "{name}");
    }
}

#[tokio::test]
async fn transient_failures_stop_after_max_attempts() {
    for (name, failure) in transient_answers() {
        let status = failure.clone();
        let auth = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .respond_with(status)
            .mount(&auth)
            .await;
        let api = MockServer::start().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(200))
            .expect(0)
            .mount(&api)
            .await;
        let credentials = builder(&auth)
            .retry_policy(quick_retries(3))
            .build()
            .unwrap();
        let result = client(&credentials)
            .get(format!("{}/v1/accounts", api.uri()))
            .send()
            .await;
        let Err(reqwest_middleware::Error::Middleware(e)) = result else {
            panic!("{name}: expected a middleware error, got {result:?}");
        };
        let typed = e
            .downcast_ref::<Error>()
            .expect("a client_credentials::Error");
        assert!(
            matches!(typed, Error::Status { status, .. } if status.as_str() == name),
            "{name}: {typed:?}"
        );
        assert_eq!(
            hits(&auth).await,
            3,
            "{name}: exactly max_attempts token requests"
        );
        assert_eq!(hits(&api).await, 0, "{name}");
    }
}

#[tokio::test]
async fn invalid_client_is_not_retried_and_callers_back_off() {
    let auth = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            serde_json::json!({"error": "invalid_client", "error_description": "bad secret"}),
        ))
        .mount(&auth)
        .await;
    let api = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&api)
        .await;
    let credentials = builder(&auth)
        .retry_policy(
            quick_retries(5)
                .max_backoff(Duration::from_secs(30))
                .initial_backoff(Duration::from_secs(10)),
        )
        .build()
        .unwrap();
    let first = credentials.access_token().await.unwrap_err();
    assert_eq!(first.oauth_code(), Some(&OAuthErrorCode::InvalidClient));
    assert!(matches!(first, Error::OAuth { .. }), "{first:?}");
    assert_eq!(hits(&auth).await, 1, "invalid_client is not retried");

    // The next callers get the same failure at once, without a new token request.
    let client = client(&credentials);
    for _ in 0..5 {
        let result = client
            .get(format!("{}/v1/accounts", api.uri()))
            .send()
            .await;
        let Err(reqwest_middleware::Error::Middleware(e)) = result else {
            panic!("expected a middleware error, got {result:?}");
        };
        let typed = e
            .downcast_ref::<Error>()
            .expect("a client_credentials::Error");
        assert!(matches!(typed, Error::BackingOff { .. }), "{typed:?}");
        assert_eq!(typed.oauth_code(), Some(&OAuthErrorCode::InvalidClient));
        let message = typed.to_string();
        assert!(message.contains("invalid_client"), "{message}");
        assert!(message.contains(&token_url(&auth)), "{message}");
        assert_hides(
            &everything_printed(typed),
            &[crate::support::CLIENT_SECRET],
            "backoff",
        );
    }
    assert_eq!(hits(&auth).await, 1, "backing off: no new token request");
    assert_eq!(hits(&api).await, 0);
}
