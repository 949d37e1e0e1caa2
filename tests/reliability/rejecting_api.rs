//! An API that rejects every token must not turn requests into token requests.

use std::sync::atomic::{AtomicUsize, Ordering};
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

const INVALID_TOKEN: &str = r#"{"error":"invalid_token"}"#;

/// 1,000 requests through the middleware over 10 s of simulated time (10 every 100 ms) against
/// an API that answers every one `401 invalid_token`. With one forced refresh per 2 s at most,
/// the token endpoint sees at most the first fetch plus `floor(span / 2 s) + 1` forced ones,
/// and every caller gets the API's 401 as it was sent.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn always_401_api_causes_a_bounded_number_of_token_requests() {
    let _serial = crate::harness::shared().await;
    let _clock = ManualClock::hold();
    let auth = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(UniqueTokens {
            issued: AtomicUsize::new(0),
            prefix: "wrong-audience",
            expires_in: 3600,
        })
        .mount(&auth)
        .await;
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

    let interval = Duration::from_secs(2);
    let step = Duration::from_millis(100);
    let credentials = builder(&auth)
        .forced_refresh_interval(interval)
        .build()
        .unwrap();
    let client = client(&credentials);
    let url = format!("{}/v1/accounts", api.uri());

    let (steps, per_step) = (100, 10);
    let mut span = Duration::ZERO;
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
            span += step;
        }
    }

    let token_requests = hits(&auth).await;
    let forced_at_most = (span.as_millis() / interval.as_millis()) as usize + 1;
    let most = 1 + forced_at_most;
    let stats = credentials.stats();
    println!(
        "always-401 API: {} requests over {span:?}, {token_requests} token requests (bound {most}), \
         {} forced refreshes, {} suppressed",
        steps * per_step,
        stats.forced_refreshes,
        stats.forced_refreshes_suppressed
    );
    assert!(
        token_requests <= most,
        "{token_requests} token requests > {most}"
    );
    assert!(stats.forced_refreshes as usize <= forced_at_most);
    // The rule was exercised: tokens were forced out, and most rejections were not.
    assert!(token_requests >= 2, "no forced refresh happened");
    assert!(stats.forced_refreshes_suppressed > 0);
}
