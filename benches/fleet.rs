//! `fleet`: what sharing one token through Redis buys and costs (issue 11).
//!
//! 1. **Token requests per token lifetime** for 1, 4 and 16 instances (separate
//!    `ClientCredentials`, as separate processes would be, in one process so the bench needs no
//!    helper binary) on one Redis, each sending a request to a loopback API every 10 ms for
//!    three lifetimes of 2 s tokens. Target: the same count however many instances (one
//!    process fetches at the start, then once per refresh point, at 75% of the lifetime less
//!    up to 5% of jitter: 5 token requests in 6 s of 2 s tokens, 1.67 per lifetime).
//! 2. **The first request of a new instance** (cold cache, a new connection to Redis): adopting
//!    the token from Redis against fetching it from the token endpoint (the store empty), with a
//!    loopback token endpoint answering at once and one answering in 100 ms (a hosted
//!    authorization server's usual latency). Criterion groups `fleet_first_request_*`.
//!
//! Needs `redis-server` on the PATH (`.ci/run` installs it); the bench starts its own on a free
//! loopback port. `CC_FLEET_SERVER=valkey-server` runs it against Valkey instead.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use client_credentials::{ClientCredentials, EncryptionKey, Fleet};
use common::{median, verdict};
use criterion::Criterion;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

const KEY: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

/// A `redis-server` on a free loopback port, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let binary = std::env::var("CC_FLEET_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&binary)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{binary} on the PATH (apt-get install {binary}): {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "{binary} did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn flush(&self) {
        let mut raw = redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("a connection");
        let _: () = redis::cmd("FLUSHALL").query(&mut raw).expect("FLUSHALL");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token endpoint issuing a new token per request after `delay_ms`, counting requests.
struct Endpoint {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    delay_ms: Arc<AtomicU64>,
    lifetime_secs: Arc<AtomicU64>,
}

impl Endpoint {
    fn start(runtime: &tokio::runtime::Handle) -> Self {
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicU64::new(0));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let lifetime_secs = Arc::new(AtomicU64::new(3600));
        let (r, d, l) = (
            Arc::clone(&requests),
            Arc::clone(&delay_ms),
            Arc::clone(&lifetime_secs),
        );
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (r, d, l) = (Arc::clone(&r), Arc::clone(&d), Arc::clone(&l));
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (r, d, l) = (Arc::clone(&r), Arc::clone(&d), Arc::clone(&l));
                        async move {
                            let _ = req.into_body().collect().await;
                            let n = r.fetch_add(1, Ordering::SeqCst);
                            let delay = d.load(Ordering::SeqCst);
                            if delay > 0 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            let body = format!(
                                r#"{{"access_token":"bench-{n}-{}","token_type":"Bearer","expires_in":{}}}"#,
                                fastrand::u64(..),
                                l.load(Ordering::SeqCst)
                            );
                            Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                                    .expect("response"),
                            )
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            requests,
            delay_ms,
            lifetime_secs,
        }
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

fn member(redis: &str, endpoint: &Endpoint) -> ClientCredentials {
    ClientCredentials::builder()
        .token_url(format!("http://{}/token", endpoint.addr))
        .client_id("bench")
        .client_secret("bench-secret")
        .fleet(
            Fleet::redis(redis)
                .expect("URL")
                .encryption_key(EncryptionKey::from_base64("bench", KEY).expect("key")),
        )
        .build()
        .expect("credentials")
}

/// Token requests for `instances` members over `lifetimes` token lifetimes.
fn requests_per_lifetime(
    runtime: &tokio::runtime::Runtime,
    redis: &Redis,
    endpoint: &Endpoint,
    api: SocketAddr,
    instances: usize,
    lifetime: Duration,
    lifetimes: u32,
) -> (f64, u64) {
    redis.flush();
    endpoint
        .lifetime_secs
        .store(lifetime.as_secs(), Ordering::SeqCst);
    let before = endpoint.requests();
    let url = format!("http://{api}/v1/accounts");
    runtime.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..instances {
            let member = member(&redis.url(), endpoint);
            let url = url.clone();
            set.spawn(async move {
                let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
                    .with(member.middleware())
                    .build();
                let started = Instant::now();
                let mut failed = 0u64;
                while started.elapsed() < lifetime * lifetimes {
                    match client.get(&url).send().await {
                        Ok(r) if r.status().is_success() => {}
                        _ => failed += 1,
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                failed
            });
        }
        let failed: u64 = set.join_all().await.into_iter().sum();
        assert_eq!(failed, 0, "no request may fail");
    });
    let requests = endpoint.requests() - before;
    (requests as f64 / f64::from(lifetimes), requests)
}

fn main() {
    let bench = common::bench_mode();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let redis = Redis::start();
    let endpoint = Endpoint::start(runtime.handle());
    let api = common::serve_loopback(runtime.handle());

    // 1. Token requests per lifetime.
    let (lifetime, lifetimes) = if bench {
        (Duration::from_secs(2), 3)
    } else {
        (Duration::from_secs(1), 1)
    };
    let mut rows = Vec::new();
    for instances in [1, 4, 16] {
        let (per_lifetime, total) = requests_per_lifetime(
            &runtime, &redis, &endpoint, api, instances, lifetime, lifetimes,
        );
        rows.push((instances, per_lifetime, total));
    }

    // 2. The first request of a new instance.
    endpoint.lifetime_secs.store(3600, Ordering::SeqCst);
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(if bench { 3 } else { 1 }))
        .sample_size(if bench { 30 } else { 10 })
        .configure_from_args();
    let mut firsts = Vec::new();
    for delay_ms in [0u64, 100] {
        endpoint.delay_ms.store(delay_ms, Ordering::SeqCst);
        let group_name = format!("fleet_first_request_endpoint_{delay_ms}ms");
        let mut group = criterion.benchmark_group(&group_name);
        let mut adopt_ns = Vec::new();
        let mut fetch_ns = Vec::new();
        group.bench_function("adopt_from_redis", |b| {
            b.iter_custom(|iters| {
                redis.flush();
                // One member stores a token; each timed member adopts it.
                runtime
                    .block_on(member(&redis.url(), &endpoint).access_token())
                    .expect("token");
                std::thread::sleep(Duration::from_millis(20));
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let fresh = member(&redis.url(), &endpoint);
                    let started = Instant::now();
                    runtime.block_on(fresh.access_token()).expect("token");
                    let took = started.elapsed();
                    assert_eq!(fresh.stats().tokens_adopted, 1, "adopted, not fetched");
                    adopt_ns.push(took.as_nanos() as f64);
                    total += took;
                }
                total
            })
        });
        group.bench_function("fetch_from_endpoint", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    redis.flush();
                    let fresh = member(&redis.url(), &endpoint);
                    let started = Instant::now();
                    runtime.block_on(fresh.access_token()).expect("token");
                    let took = started.elapsed();
                    assert_eq!(fresh.stats().token_requests, 1, "fetched");
                    fetch_ns.push(took.as_nanos() as f64);
                    total += took;
                }
                total
            })
        });
        group.finish();
        firsts.push((delay_ms, median(&mut adopt_ns), median(&mut fetch_ns)));
    }
    criterion.final_summary();

    println!();
    println!(
        "fleet: token requests per token lifetime ({lifetimes} lifetimes of {lifetime:?} tokens, \
         a request every 10 ms per instance)"
    );
    let single = rows[0].1;
    for (instances, per_lifetime, total) in &rows {
        println!(
            "  {instances:>2} instance(s): {per_lifetime:.2} per lifetime ({total} in all) -> {} \
             (target: the same as one instance, {single:.2}; without a fleet {:.2})",
            verdict(*per_lifetime <= single + 0.34),
            single * *instances as f64,
        );
    }
    println!("fleet: the first request of a new instance (medians)");
    for (delay_ms, adopt, fetch) in &firsts {
        println!(
            "  endpoint answering in {delay_ms} ms: adopt from Redis {:.3} ms, fetch from the \
             endpoint {:.3} ms ({:.1}x)",
            adopt / 1e6,
            fetch / 1e6,
            fetch / adopt
        );
    }
}
