//! Issue 12: the cache driven with lifetimes across the whole `Duration` range (zero and
//! sub-millisecond included), under both runtime flavours: a token is served, refreshed when
//! due, and never used past its usable life.
//!
//! On a current-thread runtime with tokio's paused clock every case walks the token's whole
//! life, however long (ten years take no real time). A multi-thread runtime cannot pause the
//! clock: there every lifetime is served and scheduled without a panic, and a table of short
//! lifetimes walks through refresh and expiry in real time.

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::schedule::lifetime;
use super::testing::{cache_with, settle, Counting};
use super::TokenCache;
use crate::policy::{CachePolicy, DEFAULT_REFRESH_AT, DEFAULT_REFRESH_JITTER};

/// Lifetimes a source may announce: the edges and the whole range between.
fn lifetimes() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        Just(Duration::MAX),
        Just(Duration::from_secs(u64::MAX / 2)),
        Just(crate::MAX_LIFETIME),
        Just(crate::MAX_LIFETIME + Duration::from_nanos(1)),
        (0u64..1_000_000).prop_map(Duration::from_nanos),
        (1u64..10_000).prop_map(Duration::from_millis),
        (1u64..100 * 365 * 86_400).prop_map(Duration::from_secs),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

/// The token's usable life and its earliest and latest refresh points, as the rule gives them
/// (the jitter draw is random), counted from the request.
fn expected(announced: Duration) -> (Duration, Duration, Duration) {
    let policy = CachePolicy::default();
    let life = lifetime(&policy, Some(announced));
    let use_for = life - policy.expiry_margin.min(life / 10);
    let earliest = life
        .mul_f64(DEFAULT_REFRESH_AT - DEFAULT_REFRESH_JITTER)
        .min(use_for);
    let latest = life.mul_f64(DEFAULT_REFRESH_AT).min(use_for);
    (use_for, earliest, latest)
}

/// One token's whole life on a paused current-thread clock.
async fn walk(announced: Duration) -> Result<(), TestCaseError> {
    let (use_for, earliest, latest) = expected(announced);
    let step = Duration::from_millis(1);

    // Served.
    let (cache, source) = cache_with(Counting::new(announced));
    let start = Instant::now();
    let first = cache
        .entry()
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(first.use_until, start + use_for);
    prop_assert!(first.refresh_at >= start + earliest && first.refresh_at <= start + latest);
    prop_assert_eq!(cache.cached().map(|c| c.gen), Some(first.gen));

    // Not refreshed before its refresh point.
    if earliest > step {
        tokio::time::advance(earliest - step).await;
        settle().await;
        prop_assert_eq!(cache.cached().map(|c| c.gen), Some(first.gen));
        settle().await;
        prop_assert_eq!(source.calls(), 1, "refreshed before its refresh point");
    }

    // Refreshed once its refresh point has passed (tokio's timers fire on the next
    // millisecond): a lookup starts it, the next gets the new token.
    let now = Instant::now();
    if first.refresh_at + step > now {
        tokio::time::advance(first.refresh_at + step - now).await;
    }
    settle().await;
    let _ = cache.cached();
    settle().await;
    prop_assert_eq!(source.calls(), 2, "not refreshed when due");
    let second = cache
        .entry()
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_ne!(second.gen, first.gen);
    prop_assert_eq!(cache.cached().map(|c| c.gen), Some(second.gen));

    // Never used past its usable life, even when nothing looked it up in between.
    let (idle, _) = cache_with(Counting::new(announced));
    let fetched = idle
        .entry()
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    tokio::time::advance(fetched.use_until - Instant::now()).await;
    settle().await;
    let after = idle.cached().map(|c| c.gen);
    prop_assert_ne!(after, Some(fetched.gen), "used past its usable life");
    Ok(())
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn every_lifetime_is_served_refreshed_and_ended_on_a_current_thread_runtime(
        announced in lifetimes()
    ) {
        current_thread().block_on(walk(announced))?;
    }

    #[test]
    fn every_lifetime_is_served_and_scheduled_on_a_multi_thread_runtime(announced in lifetimes()) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (use_for, earliest, latest) = expected(announced);
            let (cache, source) = cache_with(Counting::new(announced));
            let start = Instant::now();
            let entry = cache.entry().await.map_err(|e| TestCaseError::fail(e.to_string()))?;
            let requested = entry.use_until - use_for;
            prop_assert!(requested >= start && requested <= Instant::now());
            prop_assert!(entry.refresh_at >= requested + earliest);
            prop_assert!(entry.refresh_at <= requested + latest);
            prop_assert_eq!(cache.cached().map(|c| c.gen), Some(entry.gen));
            prop_assert_eq!(source.calls(), 1);
            Ok(())
        })?;
    }
}

/// Short lifetimes (the clamp to 1 s included) walked through in real time on a multi-thread
/// runtime: refreshed when due, never used past their usable life.
#[test]
fn short_lifetimes_walk_through_refresh_and_expiry_on_a_multi_thread_runtime() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    for announced in [
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_millis(1500),
    ] {
        runtime.block_on(async {
            let (cache, source) = cache_with(Counting::new(announced));
            let first = cache.entry().await.unwrap();
            tokio::time::sleep_until(first.refresh_at).await;
            // The timer marked the refresh due: a lookup starts it in the background.
            wait_for(&cache, |c| {
                c.cached().is_some_and(|hit| hit.gen != first.gen)
            })
            .await;
            assert_eq!(source.calls(), 2, "{announced:?}");

            let (idle, _) = cache_with(Counting::new(announced));
            let fetched = idle.entry().await.unwrap();
            tokio::time::sleep_until(fetched.use_until).await;
            wait_for(&idle, |c| {
                c.cached().is_none_or(|hit| hit.gen != fetched.gen)
            })
            .await;
        });
    }
}

/// Polls `check` until it holds (at most a second of real time).
async fn wait_for(cache: &Arc<TokenCache>, check: impl Fn(&Arc<TokenCache>) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while !check(cache) {
        assert!(std::time::Instant::now() < deadline, "not within a second");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
