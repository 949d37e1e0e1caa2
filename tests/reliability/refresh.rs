//! A failing background refresh never fails a request while the token is still valid.

use std::time::Duration;

use futures_util::FutureExt as _;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{hits, settle, Backoff};
use crate::support::*;

/// Two attempts per fetch, ceilings 1, 2, 4, 4, ... s.
const BACKOFF: Backoff = Backoff {
    max_attempts: 2,
    initial: Duration::from_secs(1),
    max: Duration::from_secs(4),
};
const STEP: Duration = Duration::from_millis(100);
const REQUESTS_PER_STEP: usize = 5;

/// Fires `REQUESTS_PER_STEP` requests, each of which must get a token on its first poll (no
/// waiting), and returns the token they got.
fn requests_get_a_token_at_once(
    credentials: &client_credentials::ClientCredentials,
    at: Duration,
) -> String {
    let mut seen = None;
    for _ in 0..REQUESTS_PER_STEP {
        let token = credentials
            .access_token()
            .now_or_never()
            .unwrap_or_else(|| panic!("a request waited at {at:?}"))
            .unwrap_or_else(|e| panic!("a request failed at {at:?}: {e}"));
        seen = Some(token.secret().to_owned());
    }
    seen.unwrap()
}

/// Token lifetime 1000 s: refresh from 750 s, usable until 940 s. The endpoint fails from the
/// first refresh on for 60 s, then recovers. Every request in that time gets the current token
/// at once; the refresh is tried again and again, each time after a backoff, and the number of
/// token requests stays within what the backoff allows.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn failing_refresh_keeps_the_valid_token_and_is_retried_with_backoff() {
    let _serial = crate::harness::shared().await;
    let _clock = ManualClock::hold();
    let auth = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("tok-1", 1000)))
        .up_to_n_times(1)
        .mount(&auth)
        .await;
    let outage = Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount_as_scoped(&auth)
        .await;
    let credentials = builder(&auth)
        .refresh_jitter(0.0)
        .retry_policy(BACKOFF.policy())
        .build()
        .unwrap();
    assert_eq!(credentials.access_token().await.unwrap().secret(), "tok-1");
    assert_eq!(hits(&auth).await, 1);

    tokio::time::advance(Duration::from_secs(749)).await;
    settle().await;
    let window = Duration::from_secs(60);
    let mut at = Duration::ZERO;
    let mut requests = 0;
    while at <= window {
        assert_eq!(requests_get_a_token_at_once(&credentials, at), "tok-1");
        requests += REQUESTS_PER_STEP;
        settle().await;
        tokio::time::advance(STEP).await;
        at += STEP;
    }
    settle().await;
    let token_requests = hits(&auth).await - 1;

    // Upper bound: every failed fetch makes `max_attempts` attempts, and fetches are spaced by
    // at least the shortest fetch plus the shortest cooldown.
    let most = BACKOFF.max_failed_fetches_within(window) as usize * BACKOFF.max_attempts as usize;
    // Lower bound: fetch k+1 starts at the latest after the longest fetch (the full ceilings),
    // the longest cooldown (ceiling(k)), and a generous 2 s for the next request and the IO
    // (loopback IO may span a few clock steps on a busy machine).
    let slack = Duration::from_secs(2);
    let mut least_fetches = 0;
    let mut start = Duration::ZERO;
    while start + slack <= window {
        least_fetches += 1;
        let longest_fetch: Duration = (1..BACKOFF.max_attempts).map(|n| BACKOFF.ceiling(n)).sum();
        start += longest_fetch + BACKOFF.ceiling(least_fetches) + slack;
    }
    println!(
        "failing refresh: {requests} requests over {window:?}, {token_requests} token requests (between {} and {most})",
        least_fetches * BACKOFF.max_attempts
    );
    assert!(
        token_requests <= most,
        "{token_requests} token requests > {most}"
    );
    assert!(
        token_requests >= (least_fetches * BACKOFF.max_attempts) as usize,
        "the refresh was not retried enough: {token_requests} token requests"
    );
    assert!(credentials.stats().token_failures as usize >= token_requests);

    // The endpoint recovers: the next retry gets a new token, still without failing a request.
    drop(outage);
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("tok-2", 1000)))
        .mount(&auth)
        .await;
    let mut recovered = Duration::ZERO;
    loop {
        if requests_get_a_token_at_once(&credentials, window + recovered) == "tok-2" {
            break;
        }
        assert!(
            recovered < Duration::from_secs(15),
            "no new token after the endpoint recovered"
        );
        settle().await;
        tokio::time::advance(STEP).await;
        recovered += STEP;
    }
    assert_eq!(credentials.stats().tokens_fetched, 2);
}
