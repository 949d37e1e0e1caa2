//! Cancellation and panics: a caller that gives up does not cancel the fetch others wait for,
//! and a panicking token source neither hangs callers nor poisons the cache.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client_credentials::{
    AccessToken, BoxFuture, ClientCredentials, Error, RetryPolicy, Scopes, Token, TokenSource,
};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{advance_until_hits, hits, settle};
use crate::support::*;

fn fetch(credentials: &ClientCredentials) -> tokio::task::JoinHandle<Result<String, Error>> {
    let credentials = credentials.clone();
    tokio::spawn(async move {
        credentials
            .access_token()
            .await
            .map(|t| t.secret().to_owned())
    })
}

/// A token endpoint that takes 500 ms of real time to answer.
async fn slow_endpoint() -> MockServer {
    let auth = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(token_body("slow-token", 3600))
                .set_delay(Duration::from_millis(500)),
        )
        .expect(1)
        .mount(&auth)
        .await;
    auth
}

/// Waits (real time, the clock held) until every task has finished.
async fn all_finish<T>(tasks: &[tokio::task::JoinHandle<T>]) {
    eventually(|| async { tasks.iter().all(|t| t.is_finished()) }).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn caller_that_times_out_does_not_cancel_the_fetch() {
    let _serial = crate::harness::shared().await;
    let _clock = ManualClock::hold();
    let auth = slow_endpoint().await;
    let credentials = builder(&auth).build().unwrap();

    // The first caller starts the fetch and gives up after 1 s (simulated).
    let first = {
        let credentials = credentials.clone();
        tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(1), credentials.access_token()).await
        })
    };
    advance_until_hits(&auth, 1, Duration::from_millis(10), Duration::from_secs(5)).await;
    let others = [fetch(&credentials), fetch(&credentials)];
    settle().await;
    tokio::time::advance(Duration::from_secs(1)).await;
    settle().await;
    assert!(
        first.await.unwrap().is_err(),
        "the first caller should have timed out"
    );

    // The fetch it started goes on; those waiting on it get its token.
    all_finish(&others).await;
    for other in others {
        assert_eq!(other.await.unwrap().unwrap(), "slow-token");
    }
    // A new caller gets the same token from the cache.
    assert_eq!(fetch(&credentials).await.unwrap().unwrap(), "slow-token");
    assert_eq!(hits(&auth).await, 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn aborted_caller_does_not_cancel_the_fetch() {
    let _serial = crate::harness::shared().await;
    let _clock = ManualClock::hold();
    let auth = slow_endpoint().await;
    let credentials = builder(&auth).build().unwrap();

    let first = fetch(&credentials);
    advance_until_hits(&auth, 1, Duration::from_millis(10), Duration::from_secs(5)).await;
    let waiting = fetch(&credentials);
    settle().await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());

    let late = fetch(&credentials);
    let tasks = [waiting, late];
    all_finish(&tasks).await;
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), "slow-token");
    }
    assert_eq!(hits(&auth).await, 1);
}

/// The same through the middleware: the API request that started the fetch is dropped while
/// the token endpoint is slow; other requests still go out with the token.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn dropped_middleware_request_does_not_cancel_the_fetch() {
    let _serial = crate::harness::shared().await;
    let _clock = ManualClock::hold();
    let auth = slow_endpoint().await;
    let api = MockServer::start().await;
    Mock::given(method("GET"))
        .and(wiremock::matchers::header(
            "authorization",
            "Bearer slow-token",
        ))
        .respond_with(ResponseTemplate::new(200))
        .expect(2)
        .mount(&api)
        .await;
    let credentials = builder(&auth).build().unwrap();
    let client = client(&credentials);
    let url = format!("{}/v1/items", api.uri());

    let first = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move { client.get(url).send().await })
    };
    advance_until_hits(&auth, 1, Duration::from_millis(10), Duration::from_secs(5)).await;
    let second = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move { client.get(url).send().await.map(|r| r.status()) })
    };
    settle().await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    let third = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move { client.get(url).send().await.map(|r| r.status()) })
    };
    let tasks = [second, third];
    all_finish(&tasks).await;
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), 200);
    }
    assert_eq!(hits(&auth).await, 1);
}

/// A token source that panics a given number of times, then works.
struct Panicking {
    panics_left: AtomicUsize,
    calls: AtomicUsize,
}

impl TokenSource for Panicking {
    fn fetch_token<'a>(&'a self, _scopes: &'a Scopes) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            // Let every caller subscribe to this fetch before it blows up.
            tokio::task::yield_now().await;
            if self
                .panics_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                panic!("token source exploded (a deliberate test panic)");
            }
            Ok(Token::new(
                AccessToken::new("after-the-panic"),
                Some(Duration::from_secs(3600)),
            ))
        })
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn panicking_source_yields_source_aborted_and_does_not_poison_the_cache() {
    let _serial = crate::harness::shared().await;
    let _clock = ManualClock::hold();
    let source = Arc::new(Panicking {
        panics_left: AtomicUsize::new(1),
        calls: AtomicUsize::new(0),
    });
    let cooldown_ceiling = Duration::from_secs(1);
    let credentials = ClientCredentials::from_source(Arc::clone(&source))
        .retry_policy(
            RetryPolicy::default()
                .initial_backoff(cooldown_ceiling)
                .max_backoff(cooldown_ceiling),
        )
        .build()
        .unwrap();

    // Three callers wait on the fetch that panics: each gets SourceAborted, none hangs.
    let callers = [
        fetch(&credentials),
        fetch(&credentials),
        fetch(&credentials),
    ];
    all_finish(&callers).await;
    for caller in callers {
        assert!(matches!(caller.await.unwrap(), Err(Error::SourceAborted)));
    }
    assert_eq!(source.calls.load(Ordering::SeqCst), 1);

    // Within the cooldown: the error at once, no new call to the source.
    match credentials.access_token().await {
        Err(Error::BackingOff { last, retry_in }) => {
            assert!(matches!(*last, Error::SourceAborted));
            assert!(retry_in <= cooldown_ceiling);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(source.calls.load(Ordering::SeqCst), 1);

    // After the cooldown the source is called again, and now it works.
    tokio::time::advance(cooldown_ceiling).await;
    assert_eq!(
        credentials.access_token().await.unwrap().secret(),
        "after-the-panic"
    );
    assert_eq!(source.calls.load(Ordering::SeqCst), 2);
    // And the cache serves it from then on.
    assert_eq!(
        credentials.access_token().await.unwrap().secret(),
        "after-the-panic"
    );
    assert_eq!(source.calls.load(Ordering::SeqCst), 2);
}
