//! Issue 8: on a cache hit, neither adapter allocates anything of its own.
//!
//! A binary of its own, with a counting global allocator (`stats_alloc` counts every
//! allocation and reallocation) and one test at a time (a lock), so the counts see nothing
//! else. Each adapter is measured
//! against the same stack with a one-line "insert a static `Authorization` header" instead of
//! ours, on requests built before the measurement (with room in their header maps, as real
//! requests have), answered by an inner service that allocates nothing: the difference is what
//! our adapter allocates per request.
//!
//! - tower: `ClientCredentialsLayer::without_replay()` (no copy kept) against tower-http's
//!   `SetRequestHeader`: **zero** allocations more. With the default `CloneBody` policy, the
//!   difference is exactly what `Request::clone` allocates for the copy kept for a replay.
//! - reqwest: our middleware on requests marked `RequestOptions::no_replay()` against a
//!   one-line middleware: **zero** allocations more (reqwest-middleware boxes every
//!   middleware's future, ours and the one-line one alike: one allocation each, of their own
//!   sizes). Without `no_replay`, the difference is exactly the allocations of
//!   `reqwest::Request::try_clone` for the copy.

use std::alloc::System;
use std::convert::Infallible;
use std::sync::Mutex;
use std::time::Duration;

use client_credentials::{
    AccessToken, BoxFuture, ClientCredentials, Error, RequestOptions, Scopes, Token, TokenSource,
};
use http::{HeaderMap, HeaderValue, Request, Response};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// One measurement at a time: the allocator counts every thread.
static SERIAL: Mutex<()> = Mutex::new(());

const REQUESTS: usize = 1_000;

/// A source that answers at once with a one-hour token.
struct Static;

impl TokenSource for Static {
    fn fetch_token<'a>(&'a self, _scopes: &'a Scopes) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(async {
            Ok(Token::new(
                AccessToken::new("alloc-test-token"),
                Some(Duration::from_secs(3600)),
            ))
        })
    }
}

/// Credentials with a warm cache, on a multi-thread runtime (the usual setting: a hit reads no
/// clock), and that runtime.
fn warm_credentials() -> (ClientCredentials, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let credentials = ClientCredentials::from_source(Static).build().unwrap();
    runtime.block_on(credentials.access_token()).unwrap();
    (credentials, runtime)
}

/// Allocations (and reallocations) made while `work` runs.
fn allocated_by(work: impl FnOnce()) -> usize {
    let region = Region::new(ALLOCATOR);
    work();
    let change = region.change();
    change.allocations + change.reallocations
}

/// A header map with room for a few more headers, as a real request's has.
fn roomy_headers() -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(16);
    headers.insert(
        http::header::ACCEPT,
        HeaderValue::from_static("application/json"),
    );
    headers
}

#[cfg(feature = "tower")]
mod tower_adapter {
    use super::*;
    use std::future::{ready, Ready};
    use tower::{Layer, Service, ServiceExt};

    type Empty = http_body_util::Empty<bytes::Bytes>;
    type Inner = tower::util::ServiceFn<
        fn(Request<&'static str>) -> Ready<Result<Response<Empty>, Infallible>>,
    >;

    fn inner() -> Inner {
        tower::service_fn(|_request: Request<&'static str>| ready(Ok(Response::new(Empty::new()))))
    }

    fn requests() -> Vec<Request<&'static str>> {
        (0..REQUESTS)
            .map(|_| {
                let mut request = Request::new("body");
                *request.uri_mut() = http::Uri::from_static("https://api.example.com/v1/accounts");
                *request.headers_mut() = roomy_headers();
                request
            })
            .collect()
    }

    /// Sends every request through `service`, one at a time, and checks each got a header.
    fn run<S, B>(
        runtime: &tokio::runtime::Runtime,
        service: S,
        requests: Vec<Request<&'static str>>,
    ) where
        S: Service<Request<&'static str>, Response = Response<B>> + Clone,
        S::Error: std::fmt::Debug,
    {
        runtime.block_on(async move {
            for request in requests {
                let response = service.clone().oneshot(request).await.unwrap();
                drop(response);
            }
        });
    }

    #[test]
    fn the_layer_allocates_nothing_of_its_own_on_a_hit() {
        let _serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (credentials, runtime) = warm_credentials();
        let ours = credentials.layer().without_replay().layer(inner());
        let baseline = tower_http::set_header::SetRequestHeaderLayer::overriding(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer static"),
        )
        .layer(inner());
        // Warm up both (thread-local slots, runtime internals).
        run(&runtime, ours.clone(), requests());
        run(&runtime, baseline.clone(), requests());

        for round in 0..3 {
            let (ours_requests, baseline_requests) = (requests(), requests());
            let ours_allocs = allocated_by(|| run(&runtime, ours.clone(), ours_requests));
            let baseline_allocs =
                allocated_by(|| run(&runtime, baseline.clone(), baseline_requests));
            println!("round {round}: ours {ours_allocs} allocations, baseline {baseline_allocs} for {REQUESTS} requests");
            assert_eq!(
                ours_allocs,
                baseline_allocs,
                "round {round}: the layer made {} allocations of its own over {REQUESTS} hits",
                ours_allocs as i64 - baseline_allocs as i64
            );
        }
        assert_eq!(
            credentials.stats().tokens_fetched,
            1,
            "every request was a hit"
        );
    }

    #[test]
    fn with_clone_body_the_only_extra_is_the_copy_kept_for_a_replay() {
        let _serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (credentials, runtime) = warm_credentials();
        let ours = credentials.layer().layer(inner());
        let baseline = tower_http::set_header::SetRequestHeaderLayer::overriding(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer static"),
        )
        .layer(inner());
        run(&runtime, ours.clone(), requests());
        let sample = requests();
        let copies = allocated_by(|| {
            for request in &sample {
                drop(std::hint::black_box(request.clone()));
            }
        });
        let (ours_requests, baseline_requests) = (requests(), requests());
        let ours_allocs = allocated_by(|| run(&runtime, ours, ours_requests));
        let baseline_allocs = allocated_by(|| run(&runtime, baseline, baseline_requests));
        println!("ours {ours_allocs} allocations, baseline {baseline_allocs}, {REQUESTS} copies {copies}");
        assert!(copies > 0, "a request copy allocates its header map");
        assert_eq!(ours_allocs - baseline_allocs, copies);
    }
}

#[cfg(feature = "reqwest-middleware")]
mod reqwest_adapter {
    use super::*;
    use http::Extensions;
    use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};

    /// Answers every request itself, without the network: the end of the chain.
    struct Answer;

    #[async_trait::async_trait]
    impl Middleware for Answer {
        async fn handle(
            &self,
            request: reqwest::Request,
            _extensions: &mut Extensions,
            _next: Next<'_>,
        ) -> reqwest_middleware::Result<reqwest::Response> {
            assert!(request.headers().contains_key(http::header::AUTHORIZATION));
            Ok(reqwest::Response::from(Response::new(reqwest::Body::from(
                "",
            ))))
        }
    }

    /// The one-line baseline: insert a static header.
    struct StaticHeader;

    #[async_trait::async_trait]
    impl Middleware for StaticHeader {
        async fn handle(
            &self,
            mut request: reqwest::Request,
            extensions: &mut Extensions,
            next: Next<'_>,
        ) -> reqwest_middleware::Result<reqwest::Response> {
            request.headers_mut().insert(
                http::header::AUTHORIZATION,
                HeaderValue::from_static("Bearer static"),
            );
            next.run(request, extensions).await
        }
    }

    fn client(first: impl Middleware) -> ClientWithMiddleware {
        ClientBuilder::new(reqwest::Client::new())
            .with(first)
            .with(Answer)
            .build()
    }

    fn requests(client: &ClientWithMiddleware) -> Vec<reqwest::Request> {
        (0..REQUESTS)
            .map(|_| {
                let mut request = client
                    .post("https://api.example.com/v1/payments")
                    .body("{}")
                    .build()
                    .unwrap();
                *request.headers_mut() = roomy_headers();
                request
            })
            .collect()
    }

    fn run(
        runtime: &tokio::runtime::Runtime,
        client: &ClientWithMiddleware,
        requests: Vec<reqwest::Request>,
        options: Option<RequestOptions>,
    ) {
        runtime.block_on(async {
            for request in requests {
                let mut extensions = Extensions::new();
                if let Some(options) = &options {
                    extensions.insert(options.clone());
                }
                let response = client
                    .execute_with_extensions(request, &mut extensions)
                    .await
                    .unwrap();
                drop(response);
            }
        });
    }

    #[test]
    fn the_middleware_allocates_nothing_of_its_own_on_a_hit() {
        let _serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (credentials, runtime) = warm_credentials();
        let ours = client(credentials.middleware());
        let baseline = client(StaticHeader);
        // Both arms carry the same extension (inserting it allocates the extensions map).
        let options = || Some(RequestOptions::new().no_replay());
        run(&runtime, &ours, requests(&ours), options());
        run(&runtime, &baseline, requests(&baseline), options());
        for round in 0..3 {
            let (ours_requests, baseline_requests) = (requests(&ours), requests(&baseline));
            let ours_allocs = allocated_by(|| run(&runtime, &ours, ours_requests, options()));
            let baseline_allocs =
                allocated_by(|| run(&runtime, &baseline, baseline_requests, options()));
            println!("round {round}: ours {ours_allocs} allocations, baseline {baseline_allocs} for {REQUESTS} requests");
            assert_eq!(
                ours_allocs,
                baseline_allocs,
                "round {round}: the middleware made {} allocations of its own over {REQUESTS} hits",
                ours_allocs as i64 - baseline_allocs as i64
            );
        }
        assert_eq!(
            credentials.stats().tokens_fetched,
            1,
            "every request was a hit"
        );
    }

    #[test]
    fn replayable_requests_cost_exactly_their_copy() {
        let _serial = SERIAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (credentials, runtime) = warm_credentials();
        let ours = client(credentials.middleware());
        let baseline = client(StaticHeader);
        let options = || Some(RequestOptions::new());
        run(&runtime, &ours, requests(&ours), options());
        let sample = requests(&ours);
        let copies = allocated_by(|| {
            for request in &sample {
                drop(std::hint::black_box(request.try_clone()));
            }
        });
        let (ours_requests, baseline_requests) = (requests(&ours), requests(&baseline));
        let ours_allocs = allocated_by(|| run(&runtime, &ours, ours_requests, options()));
        let baseline_allocs =
            allocated_by(|| run(&runtime, &baseline, baseline_requests, options()));
        println!("ours {ours_allocs} allocations, baseline {baseline_allocs}, {REQUESTS} copies {copies}");
        assert!(copies > 0);
        assert_eq!(ours_allocs - baseline_allocs, copies);
    }
}
