//! Faults at the token endpoint: which failures are retried, how many times, after how long.
//!
//! Paused clock, held (`ManualClock`): time moves only when a test advances it, so "the retry
//! did not happen before X" is exact, whatever the speed of the machine.

use std::time::{Duration, SystemTime};

use client_credentials::{ClientCredentials, Error, OAuthErrorCode, RetryPolicy};
use http::StatusCode;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{
    advance_in_steps, advance_until_hits, hits, refused_port, settle, Backoff, RawServer,
};
use crate::support::*;

const STEP: Duration = Duration::from_millis(5);
const LIMIT: Duration = Duration::from_secs(60);

/// Three attempts, 100 ms then 200 ms ceilings: delays in [50, 100] ms, then [100, 200] ms.
const BACKOFF: Backoff = Backoff {
    max_attempts: 3,
    initial: Duration::from_millis(100),
    max: Duration::from_millis(400),
};

fn token_mock(status: u16) -> Mock {
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(ResponseTemplate::new(status))
}

/// Spawns one token request and returns its handle.
fn fetch(credentials: &ClientCredentials) -> tokio::task::JoinHandle<Result<String, Error>> {
    let credentials = credentials.clone();
    tokio::spawn(async move {
        credentials
            .access_token()
            .await
            .map(|t| t.secret().to_owned())
    })
}

/// Advances the clock until the task is done.
async fn finish<T>(task: tokio::task::JoinHandle<T>) -> T {
    let mut waited = Duration::ZERO;
    while !task.is_finished() {
        assert!(
            waited < LIMIT,
            "the fetch did not end within {LIMIT:?} of simulated time"
        );
        tokio::time::advance(STEP).await;
        settle().await;
        waited += STEP;
    }
    task.await.unwrap()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn transient_statuses_are_retried_with_growing_backoff_up_to_max_attempts() {
    let _serial = crate::harness::shared().await;
    let _clock = ManualClock::hold();
    for status in [500u16, 502, 503, 504, 429] {
        let auth = MockServer::start().await;
        token_mock(status).expect(3).mount(&auth).await;
        let credentials = builder(&auth)
            .retry_policy(BACKOFF.policy())
            .build()
            .unwrap();
        let task = fetch(&credentials);

        advance_until_hits(&auth, 1, STEP, LIMIT).await;
        // The first delay is at least ceiling(1)/2 = 50 ms: nothing before.
        tokio::time::advance(BACKOFF.ceiling(1) / 2 - Duration::from_millis(1)).await;
        settle().await;
        settle().await;
        assert_eq!(hits(&auth).await, 1, "{status}: retried before its backoff");
        advance_until_hits(&auth, 2, STEP, LIMIT).await;
        // The second delay is at least ceiling(2)/2 = 100 ms.
        tokio::time::advance(BACKOFF.ceiling(2) / 2 - Duration::from_millis(1)).await;
        settle().await;
        settle().await;
        assert_eq!(
            hits(&auth).await,
            2,
            "{status}: second retry before its backoff"
        );
        advance_until_hits(&auth, 3, STEP, LIMIT).await;

        let result = finish(task).await;
        match result {
            Err(Error::Status { status: s, .. }) => assert_eq!(s.as_u16(), status),
            other => panic!("{status}: {other:?}"),
        }
        // max_attempts reached: no fourth attempt, however long we wait.
        advance_in_steps(Duration::from_secs(2), Duration::from_millis(100)).await;
        assert_eq!(hits(&auth).await, 3, "{status}");
        assert_eq!(credentials.stats().token_requests, 3, "{status}");
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn connection_refused_is_retried_up_to_max_attempts() {
    let _serial = crate::harness::shared().await;
    let _clock = ManualClock::hold();
    let credentials = ClientCredentials::builder()
        .token_url(format!("http://127.0.0.1:{}/oauth2/token", refused_port()))
        .client_id(CLIENT_ID)
        .client_secret(CLIENT_SECRET)
        .retry_policy(BACKOFF.policy())
        .build()
        .unwrap();
    let result = finish(fetch(&credentials)).await;
    assert!(matches!(result, Err(Error::Transport { .. })), "{result:?}");
    let stats = credentials.stats();
    assert_eq!((stats.token_requests, stats.token_failures), (3, 3));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn connection_reset_is_retried_up_to_max_attempts() {
    let _serial = crate::harness::shared().await;
    let _clock = ManualClock::hold();
    // Reads the request, then drops the connection without a byte of answer.
    let server = RawServer::start(|_request, stream| async move { drop(stream) });
    let credentials = ClientCredentials::builder()
        .token_url(server.url("/oauth2/token"))
        .client_id(CLIENT_ID)
        .client_secret(CLIENT_SECRET)
        .retry_policy(BACKOFF.policy())
        .build()
        .unwrap();
    let result = finish(fetch(&credentials)).await;
    assert!(matches!(result, Err(Error::Transport { .. })), "{result:?}");
    assert_eq!(server.hits(), 3);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn timeout_is_retried_up_to_max_attempts() {
    let _serial = crate::harness::shared().await;
    let _clock = ManualClock::hold();
    let auth = MockServer::start().await;
    // Answers after a minute of real time: every attempt times out first (simulated 1 s).
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(token_body("late", 3600))
                .set_delay(Duration::from_secs(60)),
        )
        .expect(3)
        .mount(&auth)
        .await;
    let credentials = builder(&auth)
        .request_timeout(Duration::from_secs(1))
        .retry_policy(BACKOFF.policy())
        .build()
        .unwrap();
    let task = fetch(&credentials);
    advance_until_hits(&auth, 1, STEP, LIMIT).await;
    let result = finish(task).await;
    match result {
        Err(Error::Timeout { timeout, .. }) => assert_eq!(timeout, Duration::from_secs(1)),
        other => panic!("{other:?}"),
    }
    assert_eq!(hits(&auth).await, 3);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn oauth_client_errors_are_not_retried() {
    let _serial = crate::harness::shared().await;
    let _clock = ManualClock::hold();
    let cases = [
        (400, "invalid_client", OAuthErrorCode::InvalidClient),
        (401, "invalid_client", OAuthErrorCode::InvalidClient),
        (400, "invalid_scope", OAuthErrorCode::InvalidScope),
        (
            400,
            "unauthorized_client",
            OAuthErrorCode::UnauthorizedClient,
        ),
        (400, "invalid_request", OAuthErrorCode::InvalidRequest),
    ];
    for (status, code, expected) in cases {
        let auth = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(status).set_body_json(serde_json::json!({"error": code})),
            )
            .expect(1)
            .mount(&auth)
            .await;
        let credentials = builder(&auth)
            .retry_policy(RetryPolicy::default().max_attempts(5))
            .build()
            .unwrap();
        let result = finish(fetch(&credentials)).await;
        match result {
            Err(Error::OAuth {
                code, status: s, ..
            }) => {
                assert_eq!(code, expected);
                assert_eq!(s.as_u16(), status);
            }
            other => panic!("{status} {code}: {other:?}"),
        }
        advance_in_steps(Duration::from_secs(5), Duration::from_millis(250)).await;
        assert_eq!(hits(&auth).await, 1, "{status} {code} was retried");
    }
}

/// `Retry-After` replaces the backoff delay: the second attempt waits for it, not for the
/// (much shorter) backoff, and no longer than it, up to `retry_after_cap`.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn retry_after_is_honoured_in_seconds_and_http_date_up_to_the_cap() {
    let _serial = crate::harness::shared().await;
    let _clock = ManualClock::hold();
    let s = Duration::from_secs;
    // `None`: an HTTP-date 5 s ahead, written when the case runs. It has whole seconds, so the
    // delay is in (4, 5] s.
    // (status, Retry-After, cap, nothing before, second attempt by)
    let cases: Vec<(u16, Option<&str>, Duration, Duration, Duration)> = vec![
        (
            429,
            Some("2"),
            s(60),
            Duration::from_millis(1990),
            Duration::from_millis(2100),
        ),
        (
            503,
            Some("2"),
            s(60),
            Duration::from_millis(1990),
            Duration::from_millis(2100),
        ),
        (
            503,
            None,
            s(60),
            Duration::from_millis(3900),
            Duration::from_millis(5100),
        ),
        (
            429,
            None,
            s(60),
            Duration::from_millis(3900),
            Duration::from_millis(5100),
        ),
        (
            429,
            Some("600"),
            s(3),
            Duration::from_millis(2990),
            Duration::from_millis(3100),
        ),
        (
            503,
            Some("86400"),
            s(3),
            Duration::from_millis(2990),
            Duration::from_millis(3100),
        ),
    ];
    for (status, retry_after, cap, not_before, by) in cases {
        let retry_after = match retry_after {
            Some(seconds) => seconds.to_owned(),
            None => httpdate::fmt_http_date(SystemTime::now() + s(5)),
        };
        let auth = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(status).insert_header("retry-after", retry_after.as_str()),
            )
            .up_to_n_times(1)
            .mount(&auth)
            .await;
        mount_token(&auth, "after-retry-after", 3600).await;
        // Backoff alone would retry within 100 ms.
        let policy = BACKOFF.policy().retry_after_cap(cap);
        let credentials = builder(&auth).retry_policy(policy).build().unwrap();
        let task = fetch(&credentials);
        advance_until_hits(&auth, 1, STEP, LIMIT).await;

        advance_in_steps(not_before, Duration::from_millis(50)).await;
        assert_eq!(
            hits(&auth).await,
            1,
            "{status} {retry_after}: retried before Retry-After"
        );
        let more = advance_until_hits(&auth, 2, STEP, LIMIT).await;
        assert!(
            not_before + more <= by,
            "{status} {retry_after}: retried only after {:?}",
            not_before + more
        );
        assert_eq!(finish(task).await.unwrap(), "after-retry-after");
    }
}

/// `max_elapsed` bounds a fetch in time: with 2 s between attempts and 5 s in all, attempts go
/// out at 0, 2 and 4 s, and a fourth (at 6 s) would start too late.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn max_elapsed_bounds_the_attempts_of_one_fetch() {
    let _serial = crate::harness::shared().await;
    let _clock = ManualClock::hold();
    let auth = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", "2"))
        .expect(3)
        .mount(&auth)
        .await;
    let policy = RetryPolicy::default()
        .max_attempts(100)
        .max_elapsed(Duration::from_secs(5));
    let credentials = builder(&auth).retry_policy(policy).build().unwrap();
    let result = finish(fetch(&credentials)).await;
    assert!(
        matches!(result, Err(Error::Status { status: StatusCode::SERVICE_UNAVAILABLE, retry_after: Some(d), .. }) if d == Duration::from_secs(2)),
        "{result:?}"
    );
    advance_in_steps(Duration::from_secs(10), Duration::from_millis(500)).await;
    assert_eq!(hits(&auth).await, 3);
}
