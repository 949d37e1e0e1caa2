//! An API that rejects every token must not turn requests into token requests.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::harness::hits;
use crate::support::*;

/// A token endpoint that issues a new token value each time.
pub struct UniqueTokens {
    pub issued: AtomicUsize,
    pub prefix: &'static str,
    pub expires_in: u64,
}

impl Respond for UniqueTokens {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.issued.fetch_add(1, Ordering::SeqCst);
        ResponseTemplate::new(200)
            .set_body_json(token_body(&format!("{}-{n}", self.prefix), self.expires_in))
    }
}

/// A token endpoint issuing `<prefix>-<n>`, a new value each time, for an hour.
async fn unique_token_endpoint(prefix: &'static str) -> MockServer {
    let auth = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(UniqueTokens {
            issued: AtomicUsize::new(0),
            prefix,
            expires_in: 3600,
        })
        .mount(&auth)
        .await;
    auth
}

const INVALID_TOKEN: &str = r#"{"error":"invalid_token"}"#;

/// An API that answers every request `401 invalid_token` for 30 s of simulated time (10
/// requests every 100 ms, 3,000 in all), at default settings. The first token is replaced at
/// once (it might have been a replacement fetched just before a revocation); every replacement
/// the API then rejects without ever accepting it waits for the forced refresh backoff: 1 s,
/// 2 s, 4 s, 8 s, 16 s after the previous forced refresh, capped at 30 s. The bound is computed
/// from those settings, and every caller gets the API's 401 as it was sent.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn always_401_api_causes_a_bounded_number_of_token_requests() {
    let _serial = crate::harness::shared().await;
    let _clock = ManualClock::hold();
    let auth = unique_token_endpoint("wrong-audience").await;
    let api = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(401)
                .insert_header(
                    "www-authenticate",
                    r#"Bearer realm="api", error="invalid_token""#,
                )
                .set_body_raw(INVALID_TOKEN, "application/json"),
        )
        .mount(&api)
        .await;

    let credentials = builder(&auth).build().unwrap();
    let client = client(&credentials);
    let url = format!("{}/v1/accounts", api.uri());

    let step = Duration::from_millis(100);
    let (steps, per_step) = (301, 10);
    let span = step * (steps - 1);
    for i in 0..steps {
        let mut calls = JoinSet::new();
        for _ in 0..per_step {
            let (client, url) = (client.clone(), url.clone());
            calls.spawn(async move {
                let res = client.get(url).send().await.unwrap();
                let challenge = res.headers().get("www-authenticate").cloned();
                (res.status(), challenge, res.text().await.unwrap())
            });
        }
        while let Some(done) = calls.join_next().await {
            let (status, challenge, body) = done.unwrap();
            assert_eq!(status, 401);
            assert_eq!(
                challenge.unwrap(),
                r#"Bearer realm="api", error="invalid_token""#
            );
            assert_eq!(body, INVALID_TOKEN);
        }
        if i + 1 < steps {
            tokio::time::advance(step).await;
        }
    }

    // The bound from the settings: forced refreshes at 0 s, then after waits of
    // DEFAULT_FORCED_REFRESH_BACKOFF doubling up to DEFAULT_FORCED_REFRESH_BACKOFF_MAX.
    let mut forced_at = vec![Duration::ZERO];
    let mut wait = client_credentials::DEFAULT_FORCED_REFRESH_BACKOFF;
    loop {
        let next = *forced_at.last().unwrap() + wait;
        if next > span {
            break;
        }
        forced_at.push(next);
        wait = (wait * 2).min(client_credentials::DEFAULT_FORCED_REFRESH_BACKOFF_MAX);
    }
    let bound = 1 + forced_at.len();
    let token_requests = hits(&auth).await;
    let stats = credentials.stats();
    println!(
        "always-401 API: {} requests over {span:?}, {token_requests} token requests (bound {bound}: \
         the first fetch and forced refreshes at {forced_at:?}), {} forced refreshes, {} suppressed",
        steps * per_step,
        stats.forced_refreshes,
        stats.forced_refreshes_suppressed
    );
    // Time only moves in 100 ms steps here, so every forced refresh happens exactly when its
    // backoff ends: the count is the bound, no more and no less.
    assert_eq!(token_requests, bound, "forced refreshes at {forced_at:?}");
    assert_eq!(stats.forced_refreshes as usize, forced_at.len());
    // The requests rejected with the token a forced refresh replaced (the ten of that step)
    // were each replayed once with the new token; every other rejection was passed on.
    assert_eq!(
        stats.replayed_requests as usize,
        per_step as usize * forced_at.len()
    );
    assert!(stats.forced_refreshes_suppressed > 0);
    crate::support::drop_servers((auth, api)).await;
}

/// An API that accepts tokens, then starts rejecting every token (a key rotation on its side
/// gone wrong). Issue 16: one rejection episode costs exactly one extra token request at once.
/// The accepted token's rejection replaces it at once and replays each rejected request once;
/// the replacement, rejected without ever being accepted, is not replaced for the first step of
/// the forced refresh backoff (1 s), however many requests it is rejected for meanwhile.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn one_rejection_episode_costs_one_extra_token_request() {
    /// Accepts every token while the flag is set, then rejects every one.
    struct Api(Arc<AtomicBool>);
    impl Respond for Api {
        fn respond(&self, _: &Request) -> ResponseTemplate {
            if self.0.load(Ordering::SeqCst) {
                ResponseTemplate::new(200).set_body_string("ok")
            } else {
                ResponseTemplate::new(401)
                    .insert_header("www-authenticate", r#"Bearer error="invalid_token""#)
                    .set_body_raw(INVALID_TOKEN, "application/json")
            }
        }
    }

    let _serial = crate::harness::shared().await;
    let _clock = ManualClock::hold();
    let auth = unique_token_endpoint("episode").await;
    let api = MockServer::start().await;
    let accepting = Arc::new(AtomicBool::new(true));
    Mock::given(method("GET"))
        .respond_with(Api(Arc::clone(&accepting)))
        .mount(&api)
        .await;

    let credentials = builder(&auth).build().unwrap();
    let client = client(&credentials);
    let url = format!("{}/v1/bookings", api.uri());
    let burst = |n: usize| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let mut calls = JoinSet::new();
            for _ in 0..n {
                let (client, url) = (client.clone(), url.clone());
                calls.spawn(async move { client.get(url).send().await.unwrap().status() });
            }
            let mut statuses = Vec::new();
            while let Some(done) = calls.join_next().await {
                statuses.push(done.unwrap().as_u16());
            }
            statuses
        }
    };

    assert!(burst(10).await.iter().all(|s| *s == 200));
    assert_eq!(hits(&auth).await, 1, "one token for the accepted traffic");

    // The API starts rejecting everything: ten requests rejected with the accepted token.
    accepting.store(false, Ordering::SeqCst);
    let statuses = burst(10).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert_eq!(hits(&auth).await, 2, "the accepted token replaced once");
    let after_replacement = credentials.stats();
    assert_eq!(after_replacement.forced_refreshes, 1);
    assert_eq!(
        after_replacement.replayed_requests, 10,
        "each replayed once"
    );

    // The replacement is rejected for 900 ms of traffic: no token request.
    for step in 1..=9 {
        tokio::time::advance(Duration::from_millis(100)).await;
        let statuses = burst(10).await;
        assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
        assert_eq!(
            hits(&auth).await,
            2,
            "{step}00 ms after the forced refresh: still the one extra token request"
        );
    }
    let stats = credentials.stats();
    assert_eq!(stats.forced_refreshes, 1);
    assert!(stats.forced_refreshes_suppressed >= 9, "{stats:?}");
    assert_eq!(
        stats.replayed_requests, 10,
        "replacement's rejections passed on"
    );

    // At the first step of the backoff (1 s after the forced refresh) the next one runs.
    tokio::time::advance(Duration::from_millis(100)).await;
    assert!(burst(10).await.iter().all(|s| *s == 401));
    assert_eq!(hits(&auth).await, 3, "the first backoff step has passed");
    assert_eq!(credentials.stats().forced_refreshes, 2);
    crate::support::drop_servers((auth, api)).await;
}
