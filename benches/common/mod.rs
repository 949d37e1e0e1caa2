//! Shared pieces of the benches: a token source, the hand-written baselines, a loopback API,
//! and the helpers that turn timings into the figures the benches print.
#![allow(dead_code)] // each bench binary uses a part of this module

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use client_credentials::builder::Custom;
use client_credentials::{
    AccessToken, BoxFuture, ClientCredentials, ClientCredentialsBuilder, Error, Scopes, Token,
    TokenSource,
};
use http::HeaderValue;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// Whether the binary runs as a benchmark (`cargo bench` passes `--bench`) rather than as a
/// smoke test (`cargo test --benches`), where the timed harnesses run briefly and judge nothing.
pub fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// The header value a token becomes, built the way the cache builds it: `Bearer <token>` from
/// a `String`, marked sensitive, cloned once so later clones are a reference-count increment.
pub fn bearer(token: &str) -> HeaderValue {
    let mut header =
        HeaderValue::try_from(format!("Bearer {token}")).expect("a token is header-safe");
    header.set_sensitive(true);
    let _promote = header.clone();
    header
}

/// A token source that answers after `delay` (none: at once) with a new token each time,
/// announcing `lifetime`, counts its calls and notes when each fetch ran.
pub struct CountingSource {
    pub delay: Duration,
    pub lifetime: Duration,
    pub calls: Arc<AtomicU64>,
    /// (start, end) of every fetch.
    pub fetches: Arc<Mutex<Vec<(Instant, Instant)>>>,
}

impl CountingSource {
    pub fn new(delay: Duration, lifetime: Duration) -> (Self, Arc<AtomicU64>) {
        let calls = Arc::new(AtomicU64::new(0));
        let source = Self {
            delay,
            lifetime,
            calls: Arc::clone(&calls),
            fetches: Arc::default(),
        };
        (source, calls)
    }
}

impl TokenSource for CountingSource {
    fn fetch_token<'a>(&'a self, _scopes: &'a Scopes) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let started = Instant::now();
            if !self.delay.is_zero() {
                precise_sleep(self.delay).await;
            }
            self.fetches
                .lock()
                .expect("not poisoned")
                .push((started, Instant::now()));
            Ok(Token::new(
                AccessToken::new(format!("bench-token-{n}")),
                Some(self.lifetime),
            ))
        })
    }
}

/// Credentials over a [`CountingSource`], with the builder's other settings at their defaults.
pub fn credentials(delay: Duration, lifetime: Duration) -> (ClientCredentials, Arc<AtomicU64>) {
    credentials_with(delay, lifetime, |builder| builder)
}

/// Credentials over a [`CountingSource`], with some settings changed by `configure`.
pub fn credentials_with(
    delay: Duration,
    lifetime: Duration,
    configure: impl FnOnce(ClientCredentialsBuilder<Custom>) -> ClientCredentialsBuilder<Custom>,
) -> (ClientCredentials, Arc<AtomicU64>) {
    let (source, calls) = CountingSource::new(delay, lifetime);
    let builder = configure(ClientCredentials::from_source(source));
    (builder.build().expect("valid configuration"), calls)
}

/// Waits `duration` on a blocking-pool thread: `std::thread::sleep` keeps to about 1 ms where
/// a tokio timer of 1 ms, rounded to the timer wheel's tick, takes 1 to 3 ms. Used for every
/// "fetch" and writer period, ours and the baselines' alike.
pub async fn precise_sleep(duration: Duration) {
    tokio::task::spawn_blocking(move || std::thread::sleep(duration))
        .await
        .expect("sleep");
}

/// What the hand-written caches hold: the header value and when it stops being usable.
pub type Cached = (HeaderValue, Instant);

/// Hand-written cache 1: `tokio::sync::RwLock`, the pattern most services write.
pub struct RwLockCache(pub tokio::sync::RwLock<Option<Cached>>);

impl RwLockCache {
    pub fn new(value: Cached) -> Self {
        Self(tokio::sync::RwLock::new(Some(value)))
    }

    /// Read, check expiry, clone.
    pub async fn lookup(&self) -> Option<HeaderValue> {
        let guard = self.0.read().await;
        usable(guard.as_ref())
    }
}

/// Hand-written cache 2: the same with `std::sync::Mutex`.
pub struct MutexCache(pub Mutex<Option<Cached>>);

impl MutexCache {
    pub fn new(value: Cached) -> Self {
        Self(Mutex::new(Some(value)))
    }

    /// Lock, check expiry, clone.
    pub fn lookup(&self) -> Option<HeaderValue> {
        let guard = self.0.lock().expect("not poisoned");
        usable(guard.as_ref())
    }
}

/// Hand-written cache 3: `arc_swap::ArcSwap`, the best a careful user writes.
pub struct ArcSwapCache(pub ArcSwap<Cached>);

impl ArcSwapCache {
    pub fn new(value: Cached) -> Self {
        Self(ArcSwap::from_pointee(value))
    }

    /// Load, compare with `Instant::now()`, clone.
    pub fn lookup(&self) -> Option<HeaderValue> {
        let guard = self.0.load();
        usable(Some(&**guard))
    }
}

/// The hand-written check: the header if the value has not expired, by the clock.
#[inline]
pub fn usable(value: Option<&Cached>) -> Option<HeaderValue> {
    match value {
        Some((header, until)) if Instant::now() < *until => Some(header.clone()),
        _ => None,
    }
}

/// A loopback API on 127.0.0.1 answering every request `200 ok`, served on `runtime`.
pub fn serve_loopback(runtime: &tokio::runtime::Handle) -> SocketAddr {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local address");
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The median (ns) criterion estimated for `group/id` in this run, if this run measured it.
pub fn criterion_median_ns(group: &str, id: &str, run_started: SystemTime) -> Option<f64> {
    let path = criterion_home()
        .join(group)
        .join(id)
        .join("new")
        .join("estimates.json");
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if modified < run_started {
        return None; // left by an earlier run
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

/// Where criterion writes (the same order of preference as criterion itself).
fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("criterion")
}

/// `PASS` or `MISS` for a target.
pub fn verdict(met: bool) -> &'static str {
    if met {
        "PASS"
    } else {
        "MISS"
    }
}

/// Latency percentiles of a sorted sample.
pub struct Percentiles {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Percentiles {
    pub fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i]
        };
        Self {
            count: samples.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: *samples.last().expect("at least one sample"),
        }
    }
}

/// A duration in milliseconds with three decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// The median of a few measurements.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A counter shared by the threads of a harness.
pub fn counter() -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(0))
}
