//! The token cache through real HTTP: single flight on a cold cache, refresh ahead in the
//! background, and never a token past its usable life.

use std::sync::Arc;
use std::time::Duration;

use client_credentials::RetryPolicy;
use reqwest_middleware::ClientWithMiddleware;
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::cases::{
    authorization, bearer, mount_token_sequence, EchoAuthorization, API_PATH, TOKEN_PATH,
};
use crate::support::*;

const CONCURRENT: usize = 1000;

/// A token endpoint that takes 200 ms (real time) to answer `tok-1`, and must be asked once.
async fn mount_slow_single_token(auth: &MockServer) {
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(token_body("tok-1", 3600))
                .set_delay(Duration::from_millis(200)),
        )
        .expect(1)
        .named("the one token request")
        .mount(auth)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_on_a_cold_cache_send_one_token_request() {
    let auth = MockServer::start().await;
    let api = MockServer::start().await;
    mount_slow_single_token(&auth).await;
    Mock::given(method("GET"))
        .and(path(API_PATH))
        .and(bearer("tok-1"))
        .respond_with(ResponseTemplate::new(200))
        .expect(CONCURRENT as u64)
        .mount(&api)
        .await;
    let credentials = builder(&auth).build().unwrap();
    let client = client(&credentials);
    let url = format!("{}{API_PATH}", api.uri());

    // Released together, so every request finds the cache cold while the token request is
    // still in flight.
    let start = Arc::new(Barrier::new(CONCURRENT));
    let mut tasks = JoinSet::new();
    for _ in 0..CONCURRENT {
        let (client, url, start) = (client.clone(), url.clone(), Arc::clone(&start));
        tasks.spawn(async move {
            start.wait().await;
            client.get(url).send().await.map(|r| r.status())
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap().unwrap(), 200);
    }

    let received = api.received_requests().await.unwrap();
    assert_eq!(received.len(), CONCURRENT);
    let with_token = received
        .iter()
        .filter(|r| authorization(r) == "Bearer tok-1")
        .count();
    assert_eq!(with_token, CONCURRENT);
    assert_eq!(auth.received_requests().await.unwrap().len(), 1);
    let stats = credentials.stats();
    assert_eq!(
        (
            stats.token_requests,
            stats.tokens_fetched,
            stats.cache_misses
        ),
        (1, 1, 1)
    );
    crate::support::drop_servers((auth, api)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_access_token_calls_on_a_cold_cache_send_one_token_request() {
    let auth = MockServer::start().await;
    mount_slow_single_token(&auth).await;
    let credentials = builder(&auth).build().unwrap();

    let start = Arc::new(Barrier::new(CONCURRENT));
    let mut tasks = JoinSet::new();
    for _ in 0..CONCURRENT {
        let (credentials, start) = (credentials.clone(), Arc::clone(&start));
        tasks.spawn(async move {
            start.wait().await;
            credentials.access_token().await
        });
    }
    let mut tokens = 0;
    while let Some(token) = tasks.join_next().await {
        assert_eq!(token.unwrap().unwrap().secret(), "tok-1");
        tokens += 1;
    }
    assert_eq!(tokens, CONCURRENT);
    assert_eq!(auth.received_requests().await.unwrap().len(), 1);
    assert_eq!(credentials.stats().tokens_fetched, 1);
    crate::support::drop_servers(auth).await;
}

/// An API that echoes the `Authorization` header it received.
async fn echo_api() -> MockServer {
    let api = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(API_PATH))
        .respond_with(EchoAuthorization)
        .mount(&api)
        .await;
    api
}

/// Sends one API request through the middleware; the `Authorization` header the API received.
async fn call(client: &ClientWithMiddleware, api: &MockServer) -> String {
    let response = client
        .get(format!("{}{API_PATH}", api.uri()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// Moves the paused clock to `at` after the test started, then lets the runtime run its due
/// timers, as it would have while that much real time passed.
async fn advance_to(start: tokio::time::Instant, at: Duration) {
    jump_to(start, at).await;
    // On a current-thread runtime the test body is polled before spawned tasks: yield so the
    // cache's timer tasks (woken by the jump) run, and the ones they arm in turn.
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

/// Moves the paused clock to `at` after the test started, without letting anything else run:
/// time that passed while the runtime was not driven.
async fn jump_to(start: tokio::time::Instant, at: Duration) {
    let target = start + at;
    let now = tokio::time::Instant::now();
    assert!(target >= now, "time only moves forward");
    tokio::time::advance(target - now).await;
}

async fn token_requests(auth: &MockServer) -> usize {
    auth.received_requests().await.unwrap().len()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn past_the_refresh_point_the_new_token_is_fetched_in_the_background() {
    let _clock = ManualClock::hold();
    let start = tokio::time::Instant::now();
    let auth = MockServer::start().await;
    let api = echo_api().await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("tok-1", 3600)))
        .up_to_n_times(1)
        .expect(1)
        .mount(&auth)
        .await;
    // The refresh takes 300 ms of real time (the paused clock does not move meanwhile).
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(token_body("tok-2", 3600))
                .set_delay(Duration::from_millis(300)),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&auth)
        .await;
    let credentials = builder(&auth).refresh_jitter(0.0).build().unwrap();
    let client = client(&credentials);

    // Before the refresh point (75% of 3600 s = 2700 s): the cached token, no token request.
    assert_eq!(call(&client, &api).await, "Bearer tok-1");
    for at in [1, 600, 1800, 2699] {
        advance_to(start, Duration::from_secs(at)).await;
        assert_eq!(call(&client, &api).await, "Bearer tok-1", "at {at} s");
        assert_eq!(token_requests(&auth).await, 1, "at {at} s");
    }
    assert_eq!(credentials.stats().refreshes_ahead, 0);

    // Past it: the first request starts the refresh and goes out at once with the old token
    // (had it waited for the refresh, it would carry tok-2).
    advance_to(start, Duration::from_secs(2701)).await;
    assert_eq!(call(&client, &api).await, "Bearer tok-1");
    assert_eq!(credentials.stats().refreshes_ahead, 1);
    // Requests keep flowing with the old token until the new one has arrived, then use it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let sent = call(&client, &api).await;
        if sent == "Bearer tok-2" {
            break;
        }
        assert_eq!(sent, "Bearer tok-1");
        assert!(
            std::time::Instant::now() < deadline,
            "the refresh never completed"
        );
        tokio::task::yield_now().await;
    }
    // One refresh, however many requests saw it due.
    assert_eq!(token_requests(&auth).await, 2);
    let stats = credentials.stats();
    assert_eq!(
        (
            stats.refreshes_ahead,
            stats.tokens_fetched,
            stats.cache_misses
        ),
        (1, 2, 1)
    );
    // The old token's usable life ends at 3540 s; the new one (fetched at 2701 s) is used.
    advance_to(start, Duration::from_secs(3541)).await;
    assert_eq!(call(&client, &api).await, "Bearer tok-2");
    assert_eq!(token_requests(&auth).await, 2);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn past_its_usable_life_the_old_token_is_never_sent_even_when_the_refresh_fails() {
    let _clock = ManualClock::hold();
    let start = tokio::time::Instant::now();
    let auth = MockServer::start().await;
    let api = echo_api().await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("tok-1", 3600)))
        .up_to_n_times(1)
        .expect(1)
        .mount(&auth)
        .await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(ResponseTemplate::new(500))
        .mount(&auth)
        .await;
    let credentials = builder(&auth)
        .refresh_jitter(0.0)
        .retry_policy(RetryPolicy::no_retry())
        .build()
        .unwrap();
    let client = client(&credentials);

    assert_eq!(call(&client, &api).await, "Bearer tok-1");
    // Past the refresh point the refresh fails; the still-usable token keeps being sent.
    advance_to(start, Duration::from_secs(2701)).await;
    assert_eq!(call(&client, &api).await, "Bearer tok-1");
    eventually(|| async { credentials.stats().token_failures >= 1 }).await;
    assert_eq!(call(&client, &api).await, "Bearer tok-1");
    // The last second of its usable life (3600 s - 60 s margin = 3540 s).
    advance_to(start, Duration::from_secs(3539)).await;
    assert_eq!(call(&client, &api).await, "Bearer tok-1");
    let sent_before = api.received_requests().await.unwrap().len();

    // Past it: the request is not sent with the old token; the caller gets the token error.
    // The clock jumps with no turn of the runtime in between, so the cache's timer has not run
    // yet: the guarantee must not depend on it (a runtime that is not driven between calls, as
    // with `Runtime::block_on` per call, is in exactly this state).
    jump_to(start, Duration::from_secs(3541)).await;
    let error = client
        .get(format!("{}{API_PATH}", api.uri()))
        .send()
        .await
        .unwrap_err();
    let reqwest_middleware::Error::Middleware(error) = error else {
        panic!("expected the token error, got {error:?}");
    };
    let error = error
        .downcast_ref::<client_credentials::Error>()
        .expect("a client_credentials::Error");
    assert!(
        matches!(
            error,
            client_credentials::Error::Status { status, .. } if *status == 500
        ) || matches!(error, client_credentials::Error::BackingOff { .. }),
        "{error:?}"
    );
    assert_eq!(
        api.received_requests().await.unwrap().len(),
        sent_before,
        "no request went out"
    );
    assert!(credentials.cached_access_token().is_none());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_sixty_second_token_is_used_until_its_shrunken_margin() {
    // Cases: (refresh_at, seconds at which tok-1 is still sent, first second it is not).
    // With `refresh_at(1.0)` nothing is refreshed ahead, so only the margin decides: a tenth
    // of 60 s, not the default 60 s, so the token is used for 54 s. With the default 0.75 the
    // refresh starts at 45 s and tok-1 is still sent (without waiting) at 50 s.
    let cases: &[(Option<f64>, &[u64], u64)] =
        &[(Some(1.0), &[0, 30, 50, 53], 55), (None, &[0, 44, 50], 55)];
    for &(refresh_at, used_at, replaced_at) in cases {
        let _clock = ManualClock::hold();
        let start = tokio::time::Instant::now();
        let auth = MockServer::start().await;
        let api = echo_api().await;
        for token in ["tok-1", "tok-2"] {
            Mock::given(method("POST"))
                .and(path(TOKEN_PATH))
                .respond_with(ResponseTemplate::new(200).set_body_json(token_body(token, 60)))
                .up_to_n_times(1)
                .expect(1)
                .mount(&auth)
                .await;
        }
        let mut b = builder(&auth).refresh_jitter(0.0);
        if let Some(fraction) = refresh_at {
            b = b.refresh_at(fraction);
        }
        let credentials = b.build().unwrap();
        let client = client(&credentials);
        for &at in used_at {
            advance_to(start, Duration::from_secs(at)).await;
            assert_eq!(
                call(&client, &api).await,
                "Bearer tok-1",
                "{refresh_at:?} at {at} s"
            );
            if refresh_at.is_some() {
                assert_eq!(token_requests(&auth).await, 1, "at {at} s");
            }
        }
        if refresh_at.is_none() {
            // The refresh started at 50 s has run in the background.
            eventually(|| async { credentials.stats().tokens_fetched == 2 }).await;
        }
        advance_to(start, Duration::from_secs(replaced_at)).await;
        assert_eq!(
            call(&client, &api).await,
            "Bearer tok-2",
            "{refresh_at:?} at {replaced_at} s"
        );
        assert_eq!(token_requests(&auth).await, 2);
        auth.verify().await;
    }
}

/// Sync code that keeps a current-thread runtime and calls `block_on` once per request:
/// between calls nothing drives the runtime, so the cache's timers cannot run, and `block_on`
/// polls its future before the tasks a timer wakes.
#[test]
fn a_runtime_not_driven_between_calls_never_sends_an_expired_token() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let _clock = {
        let _entered = runtime.enter();
        ManualClock::hold()
    };
    let (auth, api, credentials) = runtime.block_on(async {
        let auth = MockServer::start().await;
        for token in ["tok-1", "tok-2"] {
            Mock::given(method("POST"))
                .and(path(TOKEN_PATH))
                .respond_with(ResponseTemplate::new(200).set_body_json(token_body(token, 3600)))
                .up_to_n_times(1)
                .expect(1)
                .mount(&auth)
                .await;
        }
        let credentials = builder(&auth).build().unwrap();
        (auth, echo_api().await, credentials)
    });
    let client = client(&credentials);

    assert_eq!(runtime.block_on(call(&client, &api)), "Bearer tok-1");
    runtime.block_on(tokio::time::advance(Duration::from_secs(1800)));
    assert_eq!(runtime.block_on(call(&client, &api)), "Bearer tok-1");
    // Past the usable life (3540 s), with the runtime idle all along.
    runtime.block_on(tokio::time::advance(Duration::from_secs(1741)));
    assert_eq!(runtime.block_on(call(&client, &api)), "Bearer tok-2");
    runtime.block_on(async move {
        auth.verify().await;
        drop((auth, api));
    });
}

/// Answers the first token request, then stalls: every later token request waits until the
/// test ends. The stalled answer is real HTTP (a wiremock delay), so the refresh is in flight,
/// not failed.
async fn mount_then_stall(auth: &MockServer, first: &str, expires_in: u64) {
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body(first, expires_in)))
        .up_to_n_times(1)
        .mount(auth)
        .await;
    Mock::given(method("POST"))
        .and(path(TOKEN_PATH))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(token_body("never-arrives", expires_in))
                .set_delay(Duration::from_secs(600)),
        )
        .mount(auth)
        .await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_stalled_refresh_never_lets_a_token_past_its_usable_life_out() {
    let _clock = ManualClock::hold();
    let auth = MockServer::start().await;
    mount_then_stall(&auth, "tok-1", 3600).await;
    let credentials = builder(&auth)
        .refresh_jitter(0.0)
        .request_timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    assert_eq!(credentials.authorization().await.unwrap(), "Bearer tok-1");

    // Past the refresh point: the refresh starts and stalls; the old token keeps flowing.
    advance_to(start, Duration::from_secs(2701)).await;
    assert_eq!(credentials.cached_authorization().unwrap(), "Bearer tok-1");
    eventually(|| async { token_requests(&auth).await == 2 }).await;
    advance_to(start, Duration::from_secs(3539)).await;
    assert_eq!(credentials.cached_authorization().unwrap(), "Bearer tok-1");
    assert_eq!(credentials.cached_access_token().unwrap().secret(), "tok-1");

    // Past the usable life (3600 s - 60 s), with the refresh still hanging: the hot path and
    // the direct accessors no longer hand out tok-1, and a caller waits for the stalled fetch
    // instead of getting the old token.
    advance_to(start, Duration::from_secs(3541)).await;
    assert_eq!(credentials.cached_authorization(), None);
    assert!(credentials.cached_access_token().is_none());
    let waiter = tokio::spawn({
        let credentials = credentials.clone();
        async move { credentials.authorization().await }
    });
    for _ in 0..50 {
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        !waiter.is_finished(),
        "no token may be handed out while the refresh stalls"
    );
    waiter.abort();
    assert_eq!(
        token_requests(&auth).await,
        2,
        "the stalled fetch is still the only one"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_lookup_outside_the_runtime_leaves_the_due_refresh_to_one_inside_it() {
    let _clock = ManualClock::hold();
    let auth = MockServer::start().await;
    mount_token_sequence(&auth, &["tok-1", "tok-2"]).await;
    let credentials = builder(&auth).refresh_jitter(0.0).build().unwrap();
    let start = tokio::time::Instant::now();
    assert_eq!(credentials.authorization().await.unwrap(), "Bearer tok-1");
    advance_to(start, Duration::from_secs(2701)).await;

    // A thread with no runtime sees the refresh is due but cannot start it: it still gets the
    // current token and must not swallow the refresh.
    let outside = credentials.clone();
    let seen = std::thread::spawn(move || outside.cached_authorization())
        .join()
        .unwrap();
    assert_eq!(seen.unwrap(), "Bearer tok-1");
    assert_eq!(credentials.stats().refreshes_ahead, 0);

    // The next lookup inside the runtime starts it.
    assert_eq!(credentials.authorization().await.unwrap(), "Bearer tok-1");
    assert_eq!(credentials.stats().refreshes_ahead, 1);
    eventually(|| async { credentials.authorization().await.unwrap() == "Bearer tok-2" }).await;
}

/// Issue 12, as reported: a custom source for a credential that does not expire announces
/// `Duration::MAX` (or half of `u64::MAX` seconds). Every request through both adapters gets
/// the token, the source is asked once, and nothing backs off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_announcing_a_never_ending_lifetime_serves_every_request() {
    use super::adapter::{Adapter, Payment};
    use client_credentials::{AccessToken, BoxFuture, ClientCredentials, Error, Scopes, Token};

    struct NeverExpires(Duration, std::sync::atomic::AtomicUsize);
    impl client_credentials::TokenSource for NeverExpires {
        fn fetch_token<'a>(&'a self, _: &'a Scopes) -> BoxFuture<'a, Result<Token, Error>> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(
                async move { Ok(Token::new(AccessToken::new("static-api-key"), Some(self.0))) },
            )
        }
    }

    for lifetime in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
        let api = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(API_PATH))
            .and(bearer("static-api-key"))
            .respond_with(ResponseTemplate::new(201))
            .mount(&api)
            .await;
        let source = Arc::new(NeverExpires(lifetime, Default::default()));
        let credentials = ClientCredentials::from_source(Arc::clone(&source))
            .build()
            .unwrap();
        for &adapter in Adapter::all() {
            for _ in 0..3 {
                let answer = adapter.send(&credentials, Payment::to(&api)).await;
                assert_eq!(answer.status, 201, "{adapter:?} {lifetime:?}");
            }
        }
        assert_eq!(
            source.1.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "{lifetime:?}"
        );
        let stats = credentials.stats();
        assert_eq!(
            (stats.tokens_fetched, stats.token_failures),
            (1, 0),
            "{lifetime:?}"
        );
    }
}
