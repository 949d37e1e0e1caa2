//! The entry points for code that is not a middleware: `blocking_access_token()` (from a thread
//! without a runtime, and from `spawn_blocking` inside one) and `cached_access_token()`.

use std::time::Duration;

use client_credentials::ClientCredentials;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::*;

async fn mount_one_token(server: &MockServer, token: &str, expires_in: u64) {
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body(token, expires_in)))
        .expect(1)
        .mount(server)
        .await;
}

#[tokio::test]
async fn blocking_access_token_from_a_thread_without_a_runtime() {
    let auth = MockServer::start().await;
    mount_one_token(&auth, "tok-blocking", 3600).await;
    let credentials = builder(&auth).build().unwrap();

    let shared = credentials.clone();
    let (first, second, cached) = tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || {
            assert!(
                tokio::runtime::Handle::try_current().is_err(),
                "a plain thread"
            );
            assert!(shared.cached_access_token().is_none());
            let first = shared.blocking_access_token().unwrap();
            let second = shared.blocking_access_token().unwrap();
            (first, second, shared.cached_access_token())
        })
        .join()
        .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(first.secret(), "tok-blocking");
    assert_eq!(second, first);
    assert_eq!(cached, Some(first.clone()));
    // The async side shares the cache: no second token request (`expect(1)`).
    assert_eq!(credentials.access_token().await.unwrap(), first);
    assert_eq!(credentials.stats().token_requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_access_token_from_spawn_blocking_inside_a_runtime() {
    let auth = MockServer::start().await;
    mount_one_token(&auth, "tok-inside", 3600).await;
    let credentials = builder(&auth).build().unwrap();

    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let credentials: ClientCredentials = credentials.clone();
            tokio::task::spawn_blocking(move || {
                assert!(
                    tokio::runtime::Handle::try_current().is_ok(),
                    "inside the runtime"
                );
                credentials.blocking_access_token()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().secret(), "tok-inside");
    }
    // Four callers, one token request (`expect(1)`), and the cache serves the async side.
    assert_eq!(credentials.stats().token_requests, 1);
    assert_eq!(
        credentials.cached_access_token().unwrap().secret(),
        "tok-inside"
    );
    assert_eq!(
        credentials.access_token().await.unwrap().secret(),
        "tok-inside"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn cached_access_token_never_fetches() {
    let _clock = ManualClock::hold();
    let auth = MockServer::start().await;
    mount_one_token(&auth, "tok-cached", 100).await;
    let credentials = builder(&auth).refresh_jitter(0.0).build().unwrap();

    assert!(credentials.cached_access_token().is_none());
    assert_eq!(
        auth.received_requests().await.unwrap().len(),
        0,
        "asking the cache fetches nothing"
    );

    let token = credentials.access_token().await.unwrap();
    assert_eq!(credentials.cached_access_token(), Some(token));

    // A 100 s token is used for 90 s (the margin is a tenth of a short lifetime).
    tokio::time::advance(Duration::from_secs(89)).await;
    assert!(credentials.cached_access_token().is_some());
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(
        credentials.cached_access_token().is_none(),
        "an expired token is never handed out"
    );
    tokio::task::yield_now().await;
    assert_eq!(
        credentials.stats().token_requests,
        1,
        "and no fetch was started"
    );
}
