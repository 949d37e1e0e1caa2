//! End-to-end happy paths through both adapters.

use std::time::Duration;

use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::*;

#[tokio::test]
async fn reqwest_middleware_fetches_once_and_retries_after_invalid_token() {
    let auth = MockServer::start().await;
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("tok-1", 3600)))
        .up_to_n_times(1)
        .expect(1)
        .mount(&auth)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("tok-2", 3600)))
        .expect(1)
        .mount(&auth)
        .await;
    Mock::given(method("GET"))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(serde_json::json!({"error": "invalid_token"})),
        )
        .expect(1)
        .mount(&api)
        .await;
    Mock::given(method("GET"))
        .and(header("authorization", "Bearer tok-2"))
        .respond_with(ResponseTemplate::new(200).set_body_string("ok"))
        .expect(2)
        .mount(&api)
        .await;

    let credentials = builder(&auth).build().unwrap();
    let client = client(&credentials);
    let res = client
        .get(format!("{}/v1/wallets", api.uri()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "ok");
    let res = client
        .get(format!("{}/v1/wallets", api.uri()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let stats = credentials.stats();
    assert_eq!(stats.tokens_fetched, 2);
    assert_eq!(stats.replayed_requests, 1);
    assert_eq!(stats.forced_refreshes, 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn refresh_ahead_in_background_under_manual_clock() {
    let _clock = ManualClock::hold();
    let auth = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("tok-1", 100)))
        .up_to_n_times(1)
        .mount(&auth)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("tok-2", 100)))
        .mount(&auth)
        .await;
    let credentials = builder(&auth).refresh_jitter(0.0).build().unwrap();
    assert_eq!(credentials.access_token().await.unwrap().secret(), "tok-1");
    tokio::time::advance(Duration::from_secs(74)).await;
    assert_eq!(credentials.access_token().await.unwrap().secret(), "tok-1");
    tokio::time::advance(Duration::from_secs(2)).await;
    // Past the refresh point: lookups start the refresh and keep getting the old token until
    // the new one has arrived (real loopback IO, so poll for it).
    let seen_old = std::sync::atomic::AtomicUsize::new(0);
    eventually(|| async {
        let token = credentials.access_token().await.unwrap();
        if token.secret() == "tok-1" {
            seen_old.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        token.secret() == "tok-2"
    })
    .await;
    let seen_old = seen_old.into_inner();
    assert!(
        seen_old >= 1,
        "the old token kept flowing while the refresh ran"
    );
    assert_eq!(credentials.stats().tokens_fetched, 2);
    assert_eq!(credentials.access_token().await.unwrap().secret(), "tok-2");
    assert_eq!(credentials.stats().refreshes_ahead, 1);
}
