//! Soak: an API and an authorization server on loopback, tokens that live 2 s, an API that
//! revokes every token at random moments, 20,000 requests (half of them POSTs with a body)
//! from 64 concurrent tasks. Real time, multi-thread runtime, bounded: it stops by itself.
//!
//! Every setting is at its default (issue 9). Revocations come every 300 to 700 ms, far more
//! often than once per forced refresh backoff, and every one must be answered by a new token
//! at once: the limiter replaces a token the API accepted at least once without waiting, and
//! backs off only for replacements the API never accepted. Single flight plus the
//! compare-and-evict invalidation keep it at about one token request per revocation.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use client_credentials::{ClientCredentials, DEFAULT_REFRESH_AT, DEFAULT_REFRESH_JITTER};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use reqwest_middleware::ClientWithMiddleware;
use tokio::task::JoinSet;

use crate::support::*;

const LIFETIME: Duration = Duration::from_secs(2);
const TASKS: usize = 64;
const WARM_UP: usize = 4_000;
const TOTAL: usize = 20_000;

/// What both servers share.
struct World {
    start: Instant,
    issued: AtomicU64,
    /// Tokens numbered below this are revoked.
    revoked_below: AtomicU64,
    revocations: AtomicU64,
    /// 401s the API sent.
    rejected: AtomicU64,
    /// POST bodies whose checksum did not match.
    bad_bodies: AtomicU64,
}

impl World {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
}

/// Issues `soak.<n>.<issued at, ms>` tokens that live 2 s.
fn auth_server(world: &World) -> Response<Full<Bytes>> {
    let n = world.issued.fetch_add(1, Ordering::SeqCst);
    let body = serde_json::json!({
        "access_token": format!("soak.{n}.{}", world.now_ms()),
        "token_type": "Bearer",
        "expires_in": LIFETIME.as_secs(),
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// Accepts a token if it is neither revoked nor older than its lifetime.
fn accepts(world: &World, headers: &HeaderMap) -> bool {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer soak."))
        .and_then(|rest| rest.split_once('.'))
        .and_then(|(n, at)| Some((n.parse::<u64>().ok()?, at.parse::<u64>().ok()?)));
    token.is_some_and(|(n, at)| {
        n >= world.revoked_below.load(Ordering::SeqCst)
            && world.now_ms() < at + LIFETIME.as_millis() as u64
    })
}

/// The API: 401 `invalid_token` for a revoked or expired token; for a POST, checks the body
/// against the checksum header and echoes the checksum it computed.
fn api_server(
    world: &World,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let respond = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .header("www-authenticate", r#"Bearer error="invalid_token""#)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    if !accepts(world, headers) {
        world.rejected.fetch_add(1, Ordering::SeqCst);
        return respond(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"invalid_token"}"#.to_owned(),
        );
    }
    if method == Method::POST {
        let sum = checksum(body);
        let announced = headers.get("x-body-checksum").and_then(|v| v.to_str().ok());
        if announced != Some(sum.as_str()) {
            world.bad_bodies.fetch_add(1, Ordering::SeqCst);
            return respond(StatusCode::UNPROCESSABLE_ENTITY, String::new());
        }
        return respond(StatusCode::OK, sum);
    }
    respond(StatusCode::OK, "ok".to_owned())
}

/// A hyper HTTP/1.1 server on 127.0.0.1 calling `handler` with each request's method, headers
/// and whole body. Keeps no record of the requests, so it does not grow with them.
async fn serve<F>(handler: F) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: Fn(&Method, &HeaderMap, &[u8]) -> Response<Full<Bytes>> + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let handler = Arc::clone(&handler);
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await?.to_bytes();
                        Ok::<_, hyper::Error>(handler(&parts.method, &parts.headers, &body))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, task)
}

/// FNV-1a, 64 bits, and the length, as hex.
fn checksum(body: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in body {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}-{}", body.len())
}

/// The body of request `i`: 1 to 4096 pseudo-random bytes.
fn body_of(i: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(i as u64);
    let len = rng.usize(1..=4096);
    (0..len).map(|_| rng.u8(..)).collect()
}

#[derive(Default)]
struct Outcome {
    requests: usize,
    unauthorized: usize,
    body_mismatch: usize,
    other_failures: Vec<String>,
}

/// Sends requests `range` from `TASKS` tasks, request `i` from task `i % TASKS`; even ones are
/// POSTs with a body.
async fn run(client: &ClientWithMiddleware, api: &str, range: std::ops::Range<usize>) -> Outcome {
    let mut tasks = JoinSet::new();
    for t in 0..TASKS {
        let (client, api, range) = (client.clone(), api.to_owned(), range.clone());
        tasks.spawn(async move {
            let mut outcome = Outcome::default();
            for i in range.filter(|i| i % TASKS == t) {
                outcome.requests += 1;
                let result = if i % 2 == 0 {
                    let body = body_of(i);
                    let sum = checksum(&body);
                    let res = client
                        .post(format!("{api}/v1/items"))
                        .header("x-body-checksum", sum.as_str())
                        .body(body)
                        .send()
                        .await;
                    res.map(|r| (r, Some(sum)))
                } else {
                    client
                        .get(format!("{api}/v1/items/{i}"))
                        .send()
                        .await
                        .map(|r| (r, None))
                };
                match result {
                    Ok((res, sum)) => {
                        let status = res.status();
                        let text = res.text().await.unwrap_or_default();
                        match (status.as_u16(), sum) {
                            (200, Some(sum)) if text == sum => {}
                            (200, None) if text == "ok" => {}
                            (200, _) | (422, _) => outcome.body_mismatch += 1,
                            (401, _) => outcome.unauthorized += 1,
                            (other, _) => outcome.other_failures.push(format!("{i}: HTTP {other}")),
                        }
                    }
                    Err(e) => outcome.other_failures.push(format!("{i}: {e}")),
                }
            }
            outcome
        });
    }
    let mut total = Outcome::default();
    while let Some(done) = tasks.join_next().await {
        let o = done.unwrap();
        total.requests += o.requests;
        total.unauthorized += o.unauthorized;
        total.body_mismatch += o.body_mismatch;
        total.other_failures.extend(o.other_failures);
    }
    total
}

/// Live heap bytes, once the runtime is idle.
async fn live_bytes() -> usize {
    tokio::time::sleep(Duration::from_millis(200)).await;
    crate::ALLOCATOR.allocated()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_revocations_20k_requests_64_tasks() {
    let _alone = crate::harness::exclusive().await;
    let world = Arc::new(World {
        start: Instant::now(),
        issued: AtomicU64::new(0),
        revoked_below: AtomicU64::new(0),
        revocations: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        bad_bodies: AtomicU64::new(0),
    });
    // Hyper servers, not wiremock: wiremock keeps every request it matched.
    let (auth, auth_server_task) = serve({
        let world = Arc::clone(&world);
        move |_, _, _| auth_server(&world)
    })
    .await;
    let (api, api_server_task) = serve({
        let world = Arc::clone(&world);
        move |method, headers, body| api_server(&world, method, headers, body)
    })
    .await;
    let api = format!("http://{api}");

    let credentials = ClientCredentials::builder()
        .token_url(format!("http://{auth}/oauth2/token"))
        .client_id(CLIENT_ID)
        .client_secret(CLIENT_SECRET)
        .build()
        .unwrap();
    let client = client(&credentials);

    // The API revokes every token issued so far every 300 to 700 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let revoker = tokio::spawn({
        let (world, stop) = (Arc::clone(&world), Arc::clone(&stop));
        async move {
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(fastrand::u64(300..=700))).await;
                world
                    .revoked_below
                    .store(world.issued.load(Ordering::SeqCst), Ordering::SeqCst);
                world.revocations.fetch_add(1, Ordering::SeqCst);
            }
        }
    });

    let started = Instant::now();
    let warm = run(&client, &api, 0..WARM_UP).await;
    let after_warm_up = live_bytes().await;
    let rest = run(&client, &api, WARM_UP..TOTAL).await;
    let at_end = live_bytes().await;
    // The measure is live: a 1 MiB allocation shows in it (the runtime is idle meanwhile).
    let probe = vec![1u8; 1 << 20];
    let with_probe = crate::ALLOCATOR.allocated();
    drop(probe);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    revoker.await.unwrap();
    auth_server_task.abort();
    api_server_task.abort();

    let requests = warm.requests + rest.requests;
    let unauthorized = warm.unauthorized + rest.unauthorized;
    let body_mismatch = warm.body_mismatch + rest.body_mismatch;
    let failures: Vec<_> = warm
        .other_failures
        .iter()
        .chain(&rest.other_failures)
        .take(5)
        .collect();
    let revocations = world.revocations.load(Ordering::SeqCst);
    let token_requests = world.issued.load(Ordering::SeqCst);
    let stats = credentials.stats();
    // A token is refreshed no earlier than (refresh_at - refresh_jitter) of its lifetime, so
    // timer-driven fetches number at most elapsed / that, plus the first. Each revocation
    // forces out the current token and at most one more that was being fetched as it
    // happened.
    let shortest_refresh = LIFETIME.mul_f64(DEFAULT_REFRESH_AT - DEFAULT_REFRESH_JITTER);
    let bound = 1
        + (elapsed.as_secs_f64() / shortest_refresh.as_secs_f64()).ceil() as u64
        + 2 * revocations;
    let growth = at_end as i64 - after_warm_up as i64;
    println!(
        "soak: {requests} requests ({} POST) from {TASKS} tasks in {elapsed:.2?}; {token_requests} token requests \
         (bound {bound}); {revocations} revocations; the API sent {} 401s, {} requests were retried; \
         0 401s reached callers: {}; live heap {after_warm_up} B after warm-up, {at_end} B at the end ({growth:+} B)",
        TOTAL / 2,
        world.rejected.load(Ordering::SeqCst),
        stats.replayed_requests,
        unauthorized == 0,
    );
    assert_eq!(requests, TOTAL);
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_eq!(unauthorized, 0, "401s reached the caller");
    assert_eq!(body_mismatch, 0, "POST bodies arrived altered");
    assert_eq!(world.bad_bodies.load(Ordering::SeqCst), 0);
    assert!(
        revocations >= 3,
        "the run was too short to revoke anything: {elapsed:?}"
    );
    assert!(
        world.rejected.load(Ordering::SeqCst) > 0,
        "no request ever met a revoked token"
    );
    assert!(
        token_requests <= bound,
        "{token_requests} token requests > bound {bound}"
    );
    assert!(
        with_probe >= at_end + (1 << 20) - (64 << 10),
        "the heap measure does not move"
    );
    // 16,000 requests after the warm-up: a leak of even 64 bytes a request would add 1 MiB.
    assert!(
        growth < 512 * 1024,
        "live heap grew by {growth} B over 16,000 requests"
    );
}
