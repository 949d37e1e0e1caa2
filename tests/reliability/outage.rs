//! An outage with no valid token: the request rate never becomes the token request rate.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use client_credentials::{AccessToken, ClientCredentials, Error};
use http::StatusCode;
use tokio::task::JoinSet;

use crate::harness::{raw_response, reply, settle, Backoff, RawServer};
use crate::support::*;

const OUTAGE: Duration = Duration::from_secs(30);
const STEP: Duration = Duration::from_millis(100);
const REQUESTS: usize = 10_000;
/// Two attempts per fetch; ceilings 0.5, 1, 2, 4, 4, ... s.
const BACKOFF: Backoff = Backoff {
    max_attempts: 2,
    initial: Duration::from_millis(500),
    max: Duration::from_secs(4),
};

type Call = Pin<Box<dyn Future<Output = Result<AccessToken, Error>> + Send>>;

fn call(credentials: &ClientCredentials) -> Call {
    let credentials = credentials.clone();
    Box::pin(async move { credentials.access_token().await })
}

/// Polls a call once: `Ready` means it was answered without waiting for anything.
async fn poll_once(call: &mut Call) -> Poll<Result<AccessToken, Error>> {
    std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await
}

/// 10,000 requests spread over a 30 s outage (paused clock, 100 ms steps). Each either gets
/// `BackingOff` on its first poll, without waiting for anything, or waits for the one fetch in
/// flight. The token endpoint sees at most one request at a time, and no more requests than the
/// backoff settings allow; once it is back, a token is obtained.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn ten_thousand_requests_during_a_30s_outage_cause_few_token_requests() {
    let _serial = crate::harness::shared().await;
    let _clock = ManualClock::hold();
    let up = Arc::new(AtomicBool::new(false));
    let server = RawServer::start({
        let up = Arc::clone(&up);
        move |_request, stream| {
            let up = up.load(Ordering::SeqCst);
            async move {
                // A few real milliseconds per answer, so overlapping token requests would show
                // in `max_in_flight`.
                tokio::time::sleep(Duration::from_millis(5)).await;
                let response = if up {
                    raw_response(
                        "200 OK",
                        &[("content-type", "application/json")],
                        br#"{"access_token":"after-outage","token_type":"Bearer","expires_in":3600}"#,
                    )
                } else {
                    raw_response("503 Service Unavailable", &[], b"")
                };
                reply(stream, &response).await;
            }
        }
    });
    let credentials = ClientCredentials::builder()
        .token_url(server.url("/oauth2/token"))
        .client_id(CLIENT_ID)
        .client_secret(CLIENT_SECRET)
        .retry_policy(BACKOFF.policy())
        .build()
        .unwrap();

    let steps = (OUTAGE.as_millis() / STEP.as_millis()) as usize;
    let mut at_once = 0;
    let mut waiting: JoinSet<Result<AccessToken, Error>> = JoinSet::new();
    for step in 0..steps {
        let n = (step + 1) * REQUESTS / steps - step * REQUESTS / steps;
        for _ in 0..n {
            let mut call = call(&credentials);
            match poll_once(&mut call).await {
                Poll::Ready(Err(Error::BackingOff { retry_in, last })) => {
                    at_once += 1;
                    assert!(retry_in <= BACKOFF.max, "{retry_in:?}");
                    assert!(
                        matches!(
                            *last,
                            Error::Status {
                                status: StatusCode::SERVICE_UNAVAILABLE,
                                ..
                            }
                        ),
                        "{last:?}"
                    );
                }
                Poll::Ready(other) => {
                    panic!("step {step}: only BackingOff may come at once, got {other:?}")
                }
                Poll::Pending => {
                    waiting.spawn(call);
                }
            }
        }
        settle().await;
        tokio::time::advance(STEP).await;
    }
    settle().await;
    let token_requests = server.hits();
    let waited_in_outage = waiting.len();
    up.store(true, Ordering::SeqCst);

    // After the outage: requests keep coming until one gets a token.
    let mut after = Duration::ZERO;
    while credentials.cached_access_token().is_none() {
        assert!(
            after < Duration::from_secs(20),
            "no token after the outage ended"
        );
        let mut call = call(&credentials);
        if poll_once(&mut call).await.is_pending() {
            waiting.spawn(call);
        }
        settle().await;
        tokio::time::advance(STEP).await;
        after += STEP;
    }
    assert_eq!(
        credentials.cached_access_token().unwrap().secret(),
        "after-outage"
    );
    assert_eq!(
        credentials.access_token().await.unwrap().secret(),
        "after-outage"
    );

    // Nobody hangs: every caller that waited got the outcome of the fetch it waited for.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !waiting.is_empty() {
        while let Some(result) = waiting.try_join_next() {
            match result.unwrap() {
                Ok(token) => assert_eq!(token.secret(), "after-outage"),
                Err(Error::Status { status, .. }) => {
                    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE)
                }
                Err(other) => panic!("a waiting caller got {other:?}"),
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} callers still waiting",
            waiting.len()
        );
        settle().await;
    }

    let most = BACKOFF.max_failed_fetches_within(OUTAGE) as usize * BACKOFF.max_attempts as usize;
    println!(
        "outage: {REQUESTS} requests in {OUTAGE:?}: {at_once} got BackingOff at once, {waited_in_outage} waited on a \
         fetch; {token_requests} token requests during the outage (bound {most}), at most {} in flight",
        server.max_in_flight.load(Ordering::SeqCst)
    );
    assert!(
        token_requests <= most,
        "{token_requests} token requests > bound {most}"
    );
    assert!(
        token_requests >= 2 * BACKOFF.max_attempts as usize,
        "fetches were not retried"
    );
    assert_eq!(
        server.max_in_flight.load(Ordering::SeqCst),
        1,
        "more than one token request in flight"
    );
    assert_eq!(at_once + waited_in_outage, REQUESTS);
}
