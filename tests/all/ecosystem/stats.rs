//! `stats()` after a scenario whose every step is known: a failed then retried first fetch,
//! cache hits, a refresh ahead, a forced refresh after a 401 and the retried request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use client_credentials::RetryPolicy;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support::*;

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_counter_after_a_known_scenario() {
    let _clock = ManualClock::hold();
    let auth = MockServer::start().await;
    let api = MockServer::start().await;
    // Token endpoint: a 503, then tok-1, tok-2, tok-3 (each valid 100 s).
    let n = AtomicUsize::new(0);
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(move |_: &Request| match n.fetch_add(1, Ordering::SeqCst) {
            0 => ResponseTemplate::new(503),
            i => ResponseTemplate::new(200).set_body_json(token_body(&format!("tok-{i}"), 100)),
        })
        .expect(4)
        .mount(&auth)
        .await;
    Mock::given(method("GET"))
        .and(header("authorization", "Bearer tok-2"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(serde_json::json!({"error": "invalid_token"})),
        )
        .expect(1)
        .mount(&api)
        .await;
    Mock::given(method("GET"))
        .and(header("authorization", "Bearer tok-3"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&api)
        .await;
    let credentials = builder(&auth)
        .refresh_jitter(0.0)
        // No backoff delay, so the retry after the 503 needs no clock movement.
        .retry_policy(RetryPolicy::default().initial_backoff(Duration::ZERO))
        .build()
        .unwrap();
    let zero = credentials.stats();
    assert_eq!(zero, client_credentials::Stats::default());

    // 1. First token: a miss, two attempts (503, then tok-1).
    assert_eq!(credentials.access_token().await.unwrap().secret(), "tok-1");
    let s = credentials.stats();
    assert_eq!(
        (
            s.cache_misses,
            s.token_requests,
            s.token_failures,
            s.tokens_fetched
        ),
        (1, 2, 1, 1),
        "{s:?}"
    );

    // 2. 100 hits on this thread: published in batches of 64, so at least 64 show.
    for _ in 0..100 {
        assert!(credentials.cached_authorization().is_some());
    }
    let hits = credentials.stats().cache_hits;
    assert!((64..=101).contains(&hits), "{hits}");

    // 3. Past 75% of the lifetime: a lookup starts one refresh ahead (tok-2) in the background.
    tokio::time::advance(Duration::from_secs(76)).await;
    eventually(|| async {
        credentials.cached_authorization();
        credentials.stats().tokens_fetched == 2
    })
    .await;
    let s = credentials.stats();
    assert_eq!(
        (s.refreshes_ahead, s.token_requests, s.cache_misses),
        (1, 3, 1),
        "{s:?}"
    );

    // 4. The API rejects tok-2: one forced refresh (tok-3) and the request retried once.
    let res = client(&credentials)
        .get(format!("{}/v1/x", api.uri()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let s = credentials.stats();
    assert_eq!(s.tokens_fetched, 3, "{s:?}");
    assert_eq!(s.token_requests, 4, "{s:?}");
    assert_eq!(s.token_failures, 1, "{s:?}");
    assert_eq!(s.cache_misses, 1, "{s:?}");
    assert_eq!(s.refreshes_ahead, 1, "{s:?}");
    assert_eq!(s.forced_refreshes, 1, "{s:?}");
    assert_eq!(s.forced_refreshes_suppressed, 0, "{s:?}");
    assert_eq!(s.replayed_requests, 1, "{s:?}");
    assert!(s.cache_hits >= 64, "{s:?}");
}

/// Hits are published in batches of 64 per thread, and the rest when the thread exits: a
/// thread that made ten lookups and ended has all ten counted.
#[tokio::test]
async fn the_hits_of_a_thread_that_ended_are_all_counted() {
    let auth = MockServer::start().await;
    crate::support::mount_token(&auth, "tok-thread", 3600).await;
    let credentials = crate::support::builder(&auth).build().unwrap();
    credentials.access_token().await.unwrap();
    let before = credentials.stats().cache_hits;
    let on_thread = credentials.clone();
    std::thread::spawn(move || {
        for _ in 0..10 {
            assert!(on_thread.cached_authorization().is_some());
        }
    })
    .join()
    .unwrap();
    assert_eq!(credentials.stats().cache_hits - before, 10);
}
