//! `cold_start`: 10,000 concurrent first requests for a token (`ClientCredentials::
//! authorization()`, the call the adapters make on a miss) on a cold cache: exactly one token
//! request (asserted), and the time to serve all of them compared with the same 10,000 on a
//! warm cache.
//!
//! A timed harness, not criterion's sampler: each round builds fresh credentials. The 10,000
//! tasks are spawned first and wait on a start gate; the time runs from opening the gate to the
//! last task served. The token source first waits until all 10,000 callers have asked (so each
//! one is a first request, none a hit that came late), then takes `FETCH` to answer; the time
//! it waited for the callers is printed too.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client_credentials::{BoxFuture, ClientCredentials, Error, Scopes, Token, TokenSource};
use common::{bench_mode, median, ms};

const CALLERS: usize = 10_000;
const FETCH: Duration = Duration::from_millis(20);

/// Answers `FETCH` after the last caller asked, counting its calls.
struct Source {
    calls: Arc<AtomicU64>,
    asked: Arc<AtomicU64>,
    /// Microseconds from the call to the last caller asking.
    waited_for_callers_us: Arc<AtomicU64>,
}

impl TokenSource for Source {
    fn fetch_token<'a>(&'a self, _scopes: &'a Scopes) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let called = Instant::now();
            while self.asked.load(Ordering::SeqCst) < CALLERS as u64 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            self.waited_for_callers_us
                .store(called.elapsed().as_micros() as u64, Ordering::SeqCst);
            tokio::time::sleep(FETCH).await;
            Ok(Token::new(
                client_credentials::AccessToken::new("cold-start-token"),
                Some(Duration::from_secs(3600)),
            ))
        })
    }
}

fn main() {
    let rounds = if bench_mode() { 7 } else { 1 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    let mut waited_for_callers = Vec::new();
    for _ in 0..rounds {
        let calls = common::counter();
        let asked = common::counter();
        let waited_for_callers_us = common::counter();
        let credentials = ClientCredentials::from_source(Source {
            calls: Arc::clone(&calls),
            asked: Arc::clone(&asked),
            waited_for_callers_us: Arc::clone(&waited_for_callers_us),
        })
        .build()
        .expect("valid configuration");

        cold.push(runtime.block_on(serve_all(&credentials, &asked)));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "exactly one token request");
        assert_eq!(
            credentials.stats().cache_misses,
            1,
            "one caller started the fetch"
        );
        waited_for_callers.push(Duration::from_micros(
            waited_for_callers_us.load(Ordering::SeqCst),
        ));

        warm.push(runtime.block_on(serve_all(&credentials, &asked)));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the warm round is all hits"
        );
    }

    let secs = |d: &Vec<Duration>| d.iter().map(Duration::as_secs_f64).collect::<Vec<_>>();
    let cold_median = Duration::from_secs_f64(median(&mut secs(&cold)));
    let warm_median = Duration::from_secs_f64(median(&mut secs(&warm)));
    let callers_median = Duration::from_secs_f64(median(&mut secs(&waited_for_callers)));
    println!();
    println!(
        "cold_start ({CALLERS} concurrent callers, token source {FETCH:?}, median of {rounds} rounds; \
         absolute times vary by machine)"
    );
    println!("  token requests per cold round: 1 (asserted in every round)");
    println!(
        "  cold cache: {} (of which the source waited {} for the last caller to ask, then {FETCH:?})",
        ms(cold_median),
        ms(callers_median)
    );
    println!("  warm cache: {}", ms(warm_median));
    println!(
        "  cold / warm = {:.2}x; cold - token source time - warm = {}",
        cold_median.as_secs_f64() / warm_median.as_secs_f64(),
        ms(cold_median
            .saturating_sub(FETCH)
            .saturating_sub(warm_median))
    );
}

/// Spawns `CALLERS` tasks held at a gate, opens it, and returns the time until all are served.
async fn serve_all(credentials: &ClientCredentials, asked: &Arc<AtomicU64>) -> Duration {
    asked.store(0, Ordering::SeqCst);
    let (open, gate) = tokio::sync::watch::channel(false);
    let ready = Arc::new(tokio::sync::Semaphore::new(0));
    let mut tasks = Vec::with_capacity(CALLERS);
    for _ in 0..CALLERS {
        let credentials = credentials.clone();
        let mut gate = gate.clone();
        let ready = Arc::clone(&ready);
        let asked = Arc::clone(asked);
        tasks.push(tokio::spawn(async move {
            ready.add_permits(1);
            gate.wait_for(|open| *open).await.expect("gate");
            asked.fetch_add(1, Ordering::SeqCst);
            credentials.authorization().await
        }));
    }
    // Every task waits at the gate before it opens.
    let _all = ready
        .acquire_many(CALLERS as u32)
        .await
        .expect("semaphore open");
    let started = Instant::now();
    open.send_replace(true);
    for task in tasks {
        task.await.expect("task").expect("a token");
    }
    started.elapsed()
}
