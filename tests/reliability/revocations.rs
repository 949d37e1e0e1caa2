//! Issue 9: an API that revokes every token twice, one second apart (and then once more at
//! the same instant), while 32 tasks send requests. The old limiter (one forced refresh per 5 s) gave every caller rejected after the
//! second revocation the 401 until the interval ended; now a token the API accepted is replaced
//! at once however soon it is revoked again: zero 401s reach callers, one token request per
//! revocation. Tokio's paused clock, moved by hand (the second revocation comes one second
//! later on it); real loopback IO.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::task::JoinSet;

use crate::support::*;

/// The authorization server and the API: tokens `rev.<n>`; those numbered below
/// `revoked_below` are refused.
#[derive(Default)]
struct World {
    issued: AtomicU64,
    revoked_below: AtomicU64,
    answered: AtomicU64,
    rejected_by_api: AtomicU64,
}

impl World {
    fn revoke_all(&self) {
        self.revoked_below
            .store(self.issued.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    fn answer(&self, path: &str, headers: &HeaderMap) -> Response<Full<Bytes>> {
        if path == "/oauth2/token" {
            let n = self.issued.fetch_add(1, Ordering::SeqCst);
            let body = serde_json::json!({"access_token": format!("rev.{n}"), "token_type": "Bearer", "expires_in": 3600});
            return Response::new(Full::new(Bytes::from(body.to_string())));
        }
        let n = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer rev."))
            .and_then(|n| n.parse::<u64>().ok());
        if n.is_some_and(|n| n >= self.revoked_below.load(Ordering::SeqCst)) {
            return Response::new(Full::new(Bytes::from_static(b"ok")));
        }
        self.rejected_by_api.fetch_add(1, Ordering::SeqCst);
        Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(
                "www-authenticate",
                r#"Bearer error="invalid_token", error_description="revoked""#,
            )
            .body(Full::new(Bytes::new()))
            .unwrap()
    }
}

async fn serve(world: Arc<World>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let world = Arc::clone(&world);
            tokio::spawn(async move {
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let response = world.answer(request.uri().path(), request.headers());
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    url
}

/// Waits (real time, letting IO happen) until the API has answered `n` more requests.
async fn answered(world: &World, more: u64) {
    let target = world.answered.load(Ordering::SeqCst) + more;
    eventually(|| async { world.answered.load(Ordering::SeqCst) >= target }).await;
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn revocations_one_second_apart_and_back_to_back_under_load_give_no_401_to_callers() {
    let _serial = crate::harness::shared().await;
    let _clock = ManualClock::hold();
    let world = Arc::new(World::default());
    let url = serve(Arc::clone(&world)).await;
    // Every setting at its default.
    let credentials = client_credentials::ClientCredentials::builder()
        .token_url(format!("{url}/oauth2/token"))
        .client_id(CLIENT_ID)
        .client_secret(CLIENT_SECRET)
        .build()
        .unwrap();
    let client = client(&credentials);

    let stop = Arc::new(AtomicBool::new(false));
    let statuses = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut load = JoinSet::new();
    for task in 0..32 {
        let (client, url, stop, statuses, world) = (
            client.clone(),
            url.clone(),
            Arc::clone(&stop),
            Arc::clone(&statuses),
            Arc::clone(&world),
        );
        load.spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let request = if i % 2 == 0 {
                    client
                        .post(format!("{url}/v1/orders"))
                        .body(format!("order {task}.{i}"))
                } else {
                    client.get(format!("{url}/v1/orders/{task}.{i}"))
                };
                let status = request.send().await.unwrap().status();
                statuses.lock().unwrap().push(status);
                world.answered.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
        });
    }

    answered(&world, 300).await;
    world.revoke_all();
    answered(&world, 300).await;
    tokio::time::advance(Duration::from_secs(1)).await;
    world.revoke_all();
    answered(&world, 300).await;
    // And a third at the same instant: a limiter that waited any time at all after a forced
    // refresh (the old one waited 5 s; one that did not see the API accept the replacement
    // would wait 1 s) would pass 401s on here.
    world.revoke_all();
    answered(&world, 300).await;
    stop.store(true, Ordering::SeqCst);
    while let Some(done) = load.join_next().await {
        done.unwrap();
    }

    let statuses = statuses.lock().unwrap();
    let unauthorized = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let stats = credentials.stats();
    println!(
        "revocations 1 s apart and back to back: {} requests, {} rejected by the API and replayed, {} 401s \
         to callers, {} token requests",
        statuses.len(),
        world.rejected_by_api.load(Ordering::SeqCst),
        unauthorized,
        stats.token_requests
    );
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{unauthorized} 401s reached callers"
    );
    assert!(
        world.rejected_by_api.load(Ordering::SeqCst) > 0,
        "the revocations hit requests in flight"
    );
    assert_eq!(
        stats.token_requests, 4,
        "the first token and one per revocation"
    );
    assert_eq!(stats.forced_refreshes, 3);
    assert_eq!(stats.forced_refreshes_suppressed, 0);
}
