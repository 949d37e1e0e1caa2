//! `cache_hit_contended`: two threads look up in a loop while a third task forces a refresh
//! every millisecond against a token source that answers after 1 ms. Lookups per second for us
//! and each hand-written baseline, in the same run.
//!
//! Target (issue 3): at least 2x the RwLock and Mutex baselines, and at least the ArcSwap one.
//!
//! A timed harness, not criterion's sampler (the figure is a throughput of threads running
//! together). Each implementation runs `ROUNDS` rounds of `ROUND` each, interleaved with the
//! others so that machine noise spreads over all of them; the median round is reported.
//!
//! The cycle is the same for everyone: the writer sleeps 1 ms, then refreshes with a 1 ms
//! "fetch", then sleeps again (both waits are `std::thread::sleep` on tokio's blocking pool:
//! a 1 ms tokio timer takes 1 to 3 ms).
//! - `ours_forced`: the writer calls `ClientCredentials::invalidate` on the current token
//!   after marking it accepted (so the limiter replaces it at once, every time), which drops it and starts one fetch from the 1 ms
//!   source, and awaits the new token. A reader whose `cached_authorization()` returns `None`
//!   (a miss: the token was dropped and is being replaced) waits for the fetch with
//!   `authorization()`, as the adapters do; the lookup it gets then counts as a successful
//!   lookup, and misses are reported apart (`waited/s`).
//! - `ours_ahead`: no writer; the cache refreshes ahead by itself: tokens of 1 s with
//!   `refresh_at(0.001)` and no jitter, so each token is due for refresh 1 ms after it lands
//!   (the cache's timer, on tokio's 1 ms timer wheel), and the 1 ms fetch runs in the
//!   background while the current token keeps being served. The same semantics as the
//!   ArcSwap baseline.
//! - RwLock (tokio) and Mutex (std): the writer takes the write lock (the mutex) and holds it
//!   for the 1 ms fetch, as a hand-written cache that fetches under its lock does; readers
//!   block meanwhile. The RwLock reader polls `read()` once and, if it would wait, blocks on
//!   `blocking_read()` (what an `.await` does on a thread).
//! - ArcSwap: the writer fetches outside, then stores; readers keep the old value meanwhile
//!   (which favours this baseline over `ours_forced`: it never makes a reader wait).

mod common;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client_credentials::ClientCredentials;
use common::{
    bearer, bench_mode, median, precise_sleep, verdict, ArcSwapCache, MutexCache, RwLockCache,
};
use futures_util::FutureExt as _;

const READERS: usize = 2;
/// Between two forced refreshes.
const PERIOD: Duration = Duration::from_millis(1);
/// How long the token source (and the baselines' fetch) takes to answer.
const FETCH: Duration = Duration::from_millis(1);
const LIFETIME: Duration = Duration::from_secs(3600);
/// The lifetime of `ours_ahead`'s tokens (the shortest the cache takes as announced).
const AHEAD_LIFETIME: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    OursForced,
    OursAhead,
    RwLock,
    Mutex,
    ArcSwap,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::OursForced,
        Kind::OursAhead,
        Kind::RwLock,
        Kind::Mutex,
        Kind::ArcSwap,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::OursForced => "ours_forced",
            Kind::OursAhead => "ours_ahead",
            Kind::RwLock => "rwlock_tokio",
            Kind::Mutex => "mutex_std",
            Kind::ArcSwap => "arc_swap",
        }
    }
}

/// What one round counted.
#[derive(Default, Clone, Copy)]
struct Round {
    /// Successful lookups (each returned a header value), waited ones included.
    lookups: u64,
    /// Lookups that had to wait for the writer (ours: a miss then `authorization()`; RwLock:
    /// `read()` not ready at once). Not known for the Mutex (it blocks inside `lock()`) and
    /// zero for ArcSwap.
    waited: u64,
    /// Refresh cycles the writer completed.
    refreshes: u64,
    elapsed: Duration,
}

/// Shared state of one round.
struct Shared {
    stop: AtomicBool,
    lookups: AtomicU64,
    waited: AtomicU64,
    refreshes: AtomicU64,
}

fn main() {
    let (round, rounds) = if bench_mode() {
        (Duration::from_millis(600), 9)
    } else {
        (Duration::from_millis(100), 1)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");

    let mut results: Vec<(Kind, Vec<Round>)> = Kind::ALL.iter().map(|k| (*k, Vec::new())).collect();
    for _ in 0..rounds {
        for (kind, rounds) in &mut results {
            rounds.push(run(*kind, round, runtime.handle()));
        }
    }

    let rate = |r: &Round| r.lookups as f64 / r.elapsed.as_secs_f64();
    let summary: Vec<(Kind, f64, f64, f64, f64, f64)> = results
        .iter()
        .map(|(kind, rounds)| {
            let mut rates: Vec<f64> = rounds.iter().map(rate).collect();
            let mut waited: Vec<f64> = rounds
                .iter()
                .map(|r| r.waited as f64 / r.elapsed.as_secs_f64())
                .collect();
            let mut refreshes: Vec<f64> = rounds
                .iter()
                .map(|r| r.refreshes as f64 / r.elapsed.as_secs_f64())
                .collect();
            let lowest = rates.iter().copied().fold(f64::INFINITY, f64::min);
            let highest = rates.iter().copied().fold(0.0, f64::max);
            (
                *kind,
                median(&mut rates),
                lowest,
                highest,
                median(&mut waited),
                median(&mut refreshes),
            )
        })
        .collect();
    let rate_of = |k: Kind| summary.iter().find(|s| s.0 == k).map_or(f64::NAN, |s| s.1);
    let (forced, ahead) = (rate_of(Kind::OursForced), rate_of(Kind::OursAhead));

    println!();
    println!(
        "cache_hit_contended ({READERS} reader threads; refresh every {PERIOD:?} with a {FETCH:?} fetch; \
         median of {rounds} rounds of {round:?}; absolute figures vary by machine)"
    );
    println!(
        "  {:<14} {:>11} {:>25} {:>9} {:>12} {:>16} {:>16}",
        "cache",
        "lookups/s",
        "(lowest - highest round)",
        "waited/s",
        "refreshes/s",
        "ours_forced/this",
        "ours_ahead/this"
    );
    for (kind, lookups, lowest, highest, waited, refreshes) in &summary {
        let waited = match kind {
            Kind::Mutex => "n/a".to_owned(),
            _ => format!("{waited:.0}"),
        };
        println!(
            "  {:<14} {:>10.2}M {:>25} {:>9} {:>12.0} {:>15.2}x {:>15.2}x",
            kind.name(),
            lookups / 1e6,
            format!("({:.2}M - {:.2}M)", lowest / 1e6, highest / 1e6),
            waited,
            refreshes,
            forced / lookups,
            ahead / lookups
        );
    }
    if bench_mode() {
        for (ours, rate) in [(Kind::OursForced, forced), (Kind::OursAhead, ahead)] {
            for (kind, target) in [
                (Kind::RwLock, 2.0),
                (Kind::Mutex, 2.0),
                (Kind::ArcSwap, 1.0),
            ] {
                let r = rate / rate_of(kind);
                println!(
                    "  target {} >= {target}x {}: {r:.2}x -> {}",
                    ours.name(),
                    kind.name(),
                    verdict(r >= target)
                );
            }
        }
    }
}

fn run(kind: Kind, duration: Duration, runtime: &tokio::runtime::Handle) -> Round {
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        lookups: AtomicU64::new(0),
        waited: AtomicU64::new(0),
        refreshes: AtomicU64::new(0),
    });
    let valid = |n: u64| (bearer(&format!("baseline-{n}")), Instant::now() + LIFETIME);
    let (credentials, calls) = match kind {
        // Tokens of 1 s refreshed from 0.1% of their life: 1 ms after each lands.
        Kind::OursAhead => common::credentials_with(FETCH, AHEAD_LIFETIME, |builder| {
            builder
                .refresh_at(PERIOD.as_secs_f64() / AHEAD_LIFETIME.as_secs_f64())
                .refresh_jitter(0.0)
        }),
        _ => common::credentials(FETCH, LIFETIME),
    };
    runtime
        .block_on(credentials.access_token())
        .expect("the source answers");
    let rwlock = Arc::new(RwLockCache::new(valid(0)));
    let mutex = Arc::new(MutexCache::new(valid(0)));
    let arc_swap = Arc::new(ArcSwapCache::new(valid(0)));

    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..READERS {
            let shared = &shared;
            let (credentials, rwlock, mutex, arc_swap) = (&credentials, &rwlock, &mutex, &arc_swap);
            scope.spawn(move || {
                // Inside the runtime's context, as the adapters' callers are: a due refresh is
                // spawned on it.
                let _context = runtime.enter();
                let mut lookups = 0u64;
                let mut waited = 0u64;
                while !shared.stop.load(Ordering::Relaxed) {
                    let found = match kind {
                        Kind::OursForced | Kind::OursAhead => {
                            match credentials.cached_authorization() {
                                Some(header) => Some(header),
                                None => {
                                    waited += 1;
                                    runtime.block_on(credentials.authorization()).ok()
                                }
                            }
                        }
                        Kind::RwLock => match rwlock.lookup().now_or_never() {
                            Some(found) => found,
                            None => {
                                waited += 1;
                                let guard = rwlock.0.blocking_read();
                                guard.as_ref().map(|(header, _)| header.clone())
                            }
                        },
                        Kind::Mutex => mutex.lookup(),
                        Kind::ArcSwap => arc_swap.lookup(),
                    };
                    if black_box(found).is_some() {
                        lookups += 1;
                    }
                }
                shared.lookups.fetch_add(lookups, Ordering::Relaxed);
                shared.waited.fetch_add(waited, Ordering::Relaxed);
            });
        }
        // The third task: forces a refresh every PERIOD (for `ours_ahead`, the cache's own
        // refresh task plays that part).
        let writer = (kind != Kind::OursAhead).then(|| {
            let shared = &shared;
            let (credentials, rwlock, mutex, arc_swap) = (&credentials, &rwlock, &mutex, &arc_swap);
            scope.spawn(move || {
                runtime.block_on(writer(kind, shared, credentials, rwlock, mutex, arc_swap))
            })
        });
        std::thread::sleep(duration);
        shared.stop.store(true, Ordering::Relaxed);
        if let Some(writer) = writer {
            writer.join().expect("writer");
        }
    });
    let elapsed = started.elapsed();
    let fetched = calls.load(Ordering::SeqCst);
    match kind {
        // Every forced refresh was one token request: no stampede from the waiting readers.
        Kind::OursForced => assert_eq!(
            fetched,
            shared.refreshes.load(Ordering::Relaxed) + 1,
            "one token request per forced refresh (plus the warm-up)"
        ),
        Kind::OursAhead => {
            assert_eq!(
                credentials.stats().cache_misses,
                1,
                "only the warm-up missed"
            );
            shared
                .refreshes
                .store(credentials.stats().refreshes_ahead, Ordering::Relaxed);
        }
        _ => {}
    }
    Round {
        lookups: shared.lookups.load(Ordering::Relaxed),
        waited: shared.waited.load(Ordering::Relaxed),
        refreshes: shared.refreshes.load(Ordering::Relaxed),
        elapsed,
    }
}

// The Mutex baseline holds a std guard across the fetch on purpose: that is the hand-written
// cache being measured (it runs under `block_on` on its own thread, so the future need not be
// `Send`).
#[allow(clippy::await_holding_lock)]
async fn writer(
    kind: Kind,
    shared: &Shared,
    credentials: &ClientCredentials,
    rwlock: &RwLockCache,
    mutex: &MutexCache,
    arc_swap: &ArcSwapCache,
) {
    let mut n = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        precise_sleep(PERIOD).await;
        n += 1;
        let fresh = || (bearer(&format!("baseline-{n}")), Instant::now() + LIFETIME);
        match kind {
            Kind::OursAhead => return,
            Kind::OursForced => {
                let Some(token) = credentials.cached_access_token() else {
                    continue;
                };
                // The API accepted the token before it revoked it: the limiter replaces such a
                // token at once, however often.
                credentials.accepted(&token);
                assert!(
                    credentials.invalidate(&token),
                    "a token the API accepted is replaced at once"
                );
                credentials
                    .access_token()
                    .await
                    .expect("the source answers");
            }
            Kind::RwLock => {
                let mut guard = rwlock.0.write().await;
                precise_sleep(FETCH).await;
                *guard = Some(fresh());
            }
            Kind::Mutex => {
                let mut guard = mutex.0.lock().expect("not poisoned");
                precise_sleep(FETCH).await;
                *guard = Some(fresh());
            }
            Kind::ArcSwap => {
                precise_sleep(FETCH).await;
                arc_swap.0.store(Arc::new(fresh()));
            }
        }
        shared.refreshes.fetch_add(1, Ordering::Relaxed);
    }
}
