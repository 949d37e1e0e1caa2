//! The 401 rule, each scenario through every adapter (`Adapter::all`): the reqwest middleware
//! and, with the `tower` feature, the tower layer in front of a `hyper_util` client. Assertion
//! messages name the adapter and the case.

use std::sync::Arc;
use std::time::Duration;

use client_credentials::{ClientCredentials, RequestOptions};
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::adapter::{Adapter, Payment, STREAMED};
use super::cases::*;
use crate::support::*;

/// Starts the token endpoint, answering `tokens` in turn and nothing more (see
/// [`mount_token_sequence`]), and the API.
async fn start(tokens: &[&str]) -> (MockServer, MockServer) {
    let (auth, api) = (MockServer::start().await, MockServer::start().await);
    mount_token_sequence(&auth, tokens).await;
    (auth, api)
}

/// Checks every mock's `.expect(n)` on both servers now, within the run it belongs to, then
/// drops them with a fresh cooperative budget (see `support::drop_servers`).
async fn verify(auth: MockServer, api: MockServer) {
    api.verify().await;
    auth.verify().await;
    crate::support::drop_servers((auth, api)).await;
}

/// Asserts how many tokens were re-fetched after a 401 and how many requests were retried.
fn assert_retries(credentials: &ClientCredentials, forced: u64, retried: u64, at: &str) {
    let stats = credentials.stats();
    assert_eq!(
        (stats.forced_refreshes, stats.replayed_requests),
        (forced, retried),
        "{at}"
    );
}

/// The tokens the token endpoint hands out when a 401 that is not retried arrives: a second one
/// only when the 401 still drops the token it rejected.
fn tokens_when_not_retried(case: InvalidToken) -> &'static [&'static str] {
    if case.dropped_when_not_retried() {
        &["tok-1", "tok-2"]
    } else {
        &["tok-1"]
    }
}

/// Asserts the token the next request gets: a new one only when the 401 dropped the old one.
async fn assert_next_token(credentials: &ClientCredentials, case: InvalidToken, at: &str) {
    let next = if case.dropped_when_not_retried() {
        "tok-2"
    } else {
        "tok-1"
    };
    assert_eq!(
        credentials.access_token().await.unwrap().secret(),
        next,
        "{at}"
    );
}

#[tokio::test]
async fn invalid_token_is_refetched_once_and_the_request_retried_once_with_its_body() {
    for &adapter in Adapter::all() {
        for case in InvalidToken::ALL {
            let at = format!("{adapter:?}, {case:?}");
            let (auth, api) = start(&["tok-1", "tok-2"]).await;
            Mock::given(method("POST"))
                .and(path(API_PATH))
                .and(bearer("tok-1"))
                .respond_with(case.response())
                .expect(1)
                .named(format!("{at}: the rejection"))
                .mount(&api)
                .await;
            Mock::given(method("POST"))
                .and(path(API_PATH))
                .and(bearer("tok-2"))
                .respond_with(ResponseTemplate::new(201).set_body_string("created"))
                .expect(1)
                .named(format!("{at}: the retry"))
                .mount(&api)
                .await;
            let credentials = builder(&auth).build().unwrap();

            let answer = adapter.send(&credentials, Payment::to(&api)).await;
            assert_eq!(answer.status, 201, "{at}");
            assert_eq!(&answer.body[..], b"created", "{at}");

            let received = api.received_requests().await.unwrap();
            assert_eq!(received.len(), 2, "{at}");
            assert_eq!(authorization(&received[0]), "Bearer tok-1", "{at}");
            assert_eq!(authorization(&received[1]), "Bearer tok-2", "{at}");
            for request in &received {
                assert_eq!(request.body, PAYMENT.as_bytes(), "{at}");
                assert_eq!(request.headers["content-type"], "application/json", "{at}");
            }
            assert_retries(&credentials, 1, 1, &at);
            verify(auth, api).await;
        }
    }
}

#[tokio::test]
async fn a_second_401_reaches_the_caller_intact_without_a_loop() {
    for &adapter in Adapter::all() {
        for case in InvalidToken::ALL {
            let at = format!("{adapter:?}, {case:?}");
            let (auth, api) = start(&["tok-1", "tok-2"]).await;
            Mock::given(method("POST"))
                .and(path(API_PATH))
                .respond_with(case.response())
                .expect(2)
                .named(format!("{at}: every token rejected"))
                .mount(&api)
                .await;
            let credentials = builder(&auth).build().unwrap();

            let answer = adapter.send(&credentials, Payment::to(&api)).await;
            answer.assert_intact(401, &api, case.body(), &format!("{case:?}"));

            let received = api.received_requests().await.unwrap();
            assert_eq!(received.len(), 2, "{at}");
            assert_eq!(authorization(&received[0]), "Bearer tok-1", "{at}");
            assert_eq!(authorization(&received[1]), "Bearer tok-2", "{at}");
            assert!(
                received.iter().all(|r| r.body == PAYMENT.as_bytes()),
                "{at}"
            );
            assert_eq!(auth.received_requests().await.unwrap().len(), 2, "{at}");
            verify(auth, api).await;
        }
    }
}

#[tokio::test]
async fn a_bare_401_is_returned_without_retry_when_bare_401_rejects_token_is_off() {
    for &adapter in Adapter::all() {
        let (auth, api) = start(&["tok-1"]).await;
        Mock::given(method("POST"))
            .and(path(API_PATH))
            .respond_with(InvalidToken::Bare.response())
            .expect(1)
            .named(format!("{adapter:?}: the only send"))
            .mount(&api)
            .await;
        let credentials = builder(&auth)
            .bare_401_rejects_token(false)
            .build()
            .unwrap();

        let answer = adapter.send(&credentials, Payment::to(&api)).await;
        answer.assert_intact(401, &api, InvalidToken::Bare.body(), "bare");
        assert_eq!(credentials.stats().replayed_requests, 0, "{adapter:?}");
        verify(auth, api).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_requests_rejected_with_the_same_token_cause_one_refetch() {
    const REJECTED: usize = 50;
    for &adapter in Adapter::all() {
        for case in [InvalidToken::JsonBody, InvalidToken::Header] {
            let at = format!("{adapter:?}, {case:?}");
            let (auth, api) = start(&["tok-1", "tok-2"]).await;
            // The rejections take 300 ms (real time), so all 50 requests are out with tok-1
            // before the first one comes back.
            Mock::given(method("POST"))
                .and(path(API_PATH))
                .and(bearer("tok-1"))
                .respond_with(case.response().set_delay(Duration::from_millis(300)))
                .expect(REJECTED as u64)
                .named(format!("{at}: the rejections"))
                .mount(&api)
                .await;
            Mock::given(method("POST"))
                .and(path(API_PATH))
                .and(bearer("tok-2"))
                .respond_with(ResponseTemplate::new(201))
                .expect(REJECTED as u64)
                .named(format!("{at}: the retries"))
                .mount(&api)
                .await;
            let credentials = builder(&auth).build().unwrap();
            assert_eq!(
                credentials.access_token().await.unwrap().secret(),
                "tok-1",
                "{at}"
            );
            let stack = adapter.stack(&credentials);

            let start = Arc::new(Barrier::new(REJECTED));
            let mut tasks = JoinSet::new();
            for _ in 0..REJECTED {
                let (stack, payment, start) =
                    (stack.clone(), Payment::to(&api), Arc::clone(&start));
                tasks.spawn(async move {
                    start.wait().await;
                    stack.send(payment).await.status
                });
            }
            while let Some(status) = tasks.join_next().await {
                assert_eq!(status.unwrap(), 201, "{at}");
            }

            assert_eq!(
                auth.received_requests().await.unwrap().len(),
                2,
                "{at}: one token, one re-fetch"
            );
            let received = api.received_requests().await.unwrap();
            let count = |token: &str| {
                received
                    .iter()
                    .filter(|r| authorization(r) == token)
                    .count()
            };
            assert_eq!(
                (count("Bearer tok-1"), count("Bearer tok-2")),
                (REJECTED, REJECTED),
                "{at}"
            );
            assert!(
                received.iter().all(|r| r.body == PAYMENT.as_bytes()),
                "{at}"
            );
            assert_retries(&credentials, 1, REJECTED as u64, &at);
            verify(auth, api).await;
        }
    }
}

#[tokio::test]
async fn rejections_a_new_token_cannot_fix_are_not_retried_and_reach_the_caller_intact() {
    for &adapter in Adapter::all() {
        for case in NOT_RETRIED {
            let at = format!("{adapter:?}, {}", case.name);
            let (auth, api) = start(&["tok-1"]).await;
            Mock::given(method("POST"))
                .and(path(API_PATH))
                .respond_with(case.response())
                .expect(1)
                .named(&at)
                .mount(&api)
                .await;
            let credentials = builder(&auth).build().unwrap();

            let answer = adapter.send(&credentials, Payment::to(&api)).await;
            answer.assert_intact(case.status, &api, case.body, case.name);
            let challenge = answer
                .headers
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap());
            assert_eq!(challenge, case.www_authenticate, "{at}");
            assert_retries(&credentials, 0, 0, &at);
            verify(auth, api).await;
        }
    }
}

#[tokio::test]
async fn a_body_that_cannot_be_replayed_answered_401_is_sent_once_and_the_401_returned_intact() {
    for &adapter in Adapter::all() {
        for case in InvalidToken::ALL {
            let at = format!("{adapter:?}, {case:?}");
            let (auth, api) = start(tokens_when_not_retried(case)).await;
            Mock::given(method("POST"))
                .and(path(API_PATH))
                .respond_with(case.response())
                .expect(1)
                .named(format!("{at}: the only send"))
                .mount(&api)
                .await;
            let credentials = builder(&auth).build().unwrap();

            let answer = adapter.send_non_replayable(&credentials, &api).await;
            answer.assert_intact(401, &api, case.body(), &format!("{case:?}"));

            let received = api.received_requests().await.unwrap();
            assert_eq!(received.len(), 1, "{at}");
            assert_eq!(received[0].body, STREAMED, "{at}");
            assert_eq!(authorization(&received[0]), "Bearer tok-1", "{at}");
            assert_eq!(credentials.stats().replayed_requests, 0, "{at}");
            // A header that says invalid_token still drops the token for the next request.
            assert_next_token(&credentials, case, &at).await;
            verify(auth, api).await;
        }
    }
}

#[tokio::test]
async fn a_request_with_its_own_authorization_header_is_sent_as_it_is() {
    for &adapter in Adapter::all() {
        for own in ["Bearer caller-token", "Basic dXNlcjpwYXNz"] {
            let at = format!("{adapter:?}, {own}");
            let auth = MockServer::start().await;
            let api = MockServer::start().await;
            Mock::given(method("POST"))
                .and(path(TOKEN_PATH))
                .respond_with(ResponseTemplate::new(200).set_body_json(token_body("tok-1", 3600)))
                .expect(0)
                .named(format!("{at}: no token request"))
                .mount(&auth)
                .await;
            // Even a 401 invalid_token is the caller's business: no fetch, no retry.
            Mock::given(method("POST"))
                .and(path(API_PATH))
                .and(header("authorization", own))
                .respond_with(InvalidToken::JsonBody.response())
                .expect(1)
                .named(&at)
                .mount(&api)
                .await;
            let credentials = builder(&auth)
                .tenant_id(client_credentials::TenantId::from_static("acme"))
                .build()
                .unwrap();

            let answer = adapter
                .send(&credentials, Payment::to(&api).authorization(own))
                .await;
            answer.assert_intact(401, &api, InvalidToken::JsonBody.body(), own);
            let received = api.received_requests().await.unwrap();
            assert_eq!(received.len(), 1, "{at}");
            assert_eq!(
                received[0].headers.get_all("authorization").iter().count(),
                1,
                "{at}"
            );
            assert!(
                received[0].headers.get("x-tenant-id").is_none(),
                "{at}: sent untouched"
            );
            assert_eq!(credentials.stats().token_requests, 0, "{at}");
            verify(auth, api).await;
        }
    }
}

#[tokio::test]
async fn request_options_no_retry_returns_the_401_as_it_is() {
    for &adapter in Adapter::all() {
        for case in InvalidToken::ALL {
            let at = format!("{adapter:?}, {case:?}");
            let (auth, api) = start(tokens_when_not_retried(case)).await;
            Mock::given(method("POST"))
                .and(path(API_PATH))
                .and(bearer("tok-1"))
                .respond_with(case.response())
                .expect(1)
                .named(format!("{at}: the only send"))
                .mount(&api)
                .await;
            let credentials = builder(&auth).build().unwrap();

            let payment = Payment::to(&api).options(RequestOptions::new().no_replay());
            let answer = adapter.send(&credentials, payment).await;
            answer.assert_intact(401, &api, case.body(), &format!("{case:?}"));
            assert_eq!(credentials.stats().replayed_requests, 0, "{at}");
            assert_next_token(&credentials, case, &at).await;
            verify(auth, api).await;
        }
    }
}
