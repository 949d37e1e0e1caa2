//! The slow path: one fetch in flight however many callers miss, invalidation by
//! compare-and-evict, and the cooldown after failed fetches.
//!
//! The fetch runs in a task of its own and publishes its result on a `watch` channel every
//! waiter subscribes to: a caller that gives up does not cancel it for the others, and a
//! panicking source unwinds that task only (its guard records the failure).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

use super::fetch::Reason;
use super::schedule::later;
use super::{Entry, FetchResult, Slow, TokenCache};
use crate::Error;

/// What a rejection did to the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Invalidation {
    /// The rejected token was dropped and a new one is being fetched (or one already replaced
    /// it): the caller may ask for the token again.
    Replaced,
    /// No new token for this rejection yet: the rejected token was a replacement the API never
    /// accepted, and the forced refresh backoff has not passed (see the builder's
    /// `forced_refresh_backoff`). The caller gets the rejection as it is.
    Limited,
}

impl TokenCache {
    /// A usable entry, or the result of the fetch in flight or started now.
    pub(crate) async fn entry(self: &Arc<Self>) -> Result<Arc<Entry>, Error> {
        let mut rx = {
            let mut slow = self.lock();
            let now = Instant::now();
            if let Some(entry) = self.usable(now) {
                if !self.is_armed(&slow, &entry) {
                    // The timer's runtime went away (or none ran): re-arm on this one.
                    self.install(&mut slow, Arc::clone(&entry));
                }
                return Ok(entry);
            }
            match slow.inflight.clone() {
                Some(rx) => rx,
                None => {
                    if let Some(error) = backing_off(&slow, now) {
                        return Err(error);
                    }
                    self.counters().cache_misses.fetch_add(1, Ordering::Relaxed);
                    self.start_fetch(&mut slow, Reason::Demand, None)?
                }
            }
        };
        let result = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Error::SourceAborted)?;
        match result.as_ref() {
            Some(result) => result.clone(),
            None => Err(Error::SourceAborted),
        }
    }

    /// Starts the background refresh the timer marked due, unless a fetch is in flight or the
    /// cache is backing off.
    pub(super) fn refresh_ahead(self: &Arc<Self>) {
        if tokio::runtime::Handle::try_current().is_err() {
            // No runtime to fetch on: leave the due refresh to a lookup inside one.
            return;
        }
        if !self.take_due() {
            return; // another caller took it
        }
        let mut slow = self.lock();
        if slow.inflight.is_some() || backing_off(&slow, Instant::now()).is_some() {
            // A failed fetch re-arms the timer for the end of its backoff.
            return;
        }
        self.counters()
            .refreshes_ahead
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            endpoint = %self.shared.endpoint,
            scopes = %self.scopes,
            "refreshing token ahead of expiry"
        );
        // A refresh that cannot start (no runtime) leaves the current token in use.
        let current = self.current.load_full();
        let _ = self.start_fetch(&mut slow, Reason::Ahead, current);
    }

    /// The API rejected the token of generation `gen`: drops it if it is still the current
    /// one (compare-and-evict) and starts one new fetch.
    ///
    /// The limiter tells "revoked again" from "rejects everything": a token the API accepted
    /// at least once is replaced at once, however soon after the last forced refresh. A token it
    /// never accepted is replaced at once only when no forced refresh has run since the API last
    /// accepted a token (the first token of a cache whose API rejects it); otherwise (a
    /// replacement rejected straight away) it waits for the forced refresh backoff (1 s,
    /// doubling, up to a cap) after the last forced refresh. So one rejection episode costs one
    /// token request at once, however the API treats the replacement. Any acceptance ends the
    /// backoff.
    pub(crate) fn invalidate(self: &Arc<Self>, gen: u64) -> Invalidation {
        let mut slow = self.lock();
        let Some(entry) = self.current.load_full().filter(|e| e.gen == gen) else {
            // Already replaced (or being replaced): the caller simply asks for the token again.
            return Invalidation::Replaced;
        };
        let now = Instant::now();
        let accepted = entry.accepted.load(Ordering::Acquire);
        if !accepted {
            let wait = self.shared.policy.forced_refresh_wait(slow.strikes);
            if let Some(last) = slow.last_forced {
                if now < later(last, wait) {
                    self.counters()
                        .forced_refreshes_suppressed
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        endpoint = %self.shared.endpoint,
                        scopes = %self.scopes,
                        rejected_in_a_row = slow.strikes,
                        retry_in = ?(later(last, wait) - now),
                        "the API rejected a replacement token it never accepted; \
                         not fetching another yet"
                    );
                    return Invalidation::Limited;
                }
            }
        }
        // Forced refreshes since the API last accepted a token, this one included: after an
        // accepted token is replaced, a rejection of its replacement waits the first step.
        slow.strikes = if accepted { 0 } else { slow.strikes }.saturating_add(1);
        slow.last_forced = Some(now);
        self.counters()
            .forced_refreshes
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            endpoint = %self.shared.endpoint,
            scopes = %self.scopes,
            accepted_before = accepted,
            "token rejected by the API; dropping it and fetching a new one"
        );
        self.current.store(None);
        self.unpublish();
        self.disarm(&mut slow);
        if slow.inflight.is_none() && backing_off(&slow, now).is_none() {
            // No runtime: the next caller's slow path reports it.
            let _ = self.start_fetch(&mut slow, Reason::Forced, Some(entry));
        }
        Invalidation::Replaced
    }

    /// Drops the token of generation `gen`, if still current, without the limiter and without
    /// fetching: the next request fetches (a DPoP key was replaced, so the token is bound to a
    /// key the client no longer has).
    #[cfg(feature = "jwt")]
    pub(crate) fn drop_token(&self, gen: u64) {
        let mut slow = self.lock();
        if self.current.load().as_ref().is_some_and(|e| e.gen == gen) {
            self.current.store(None);
            self.unpublish();
            self.disarm(&mut slow);
        }
    }

    fn start_fetch(
        self: &Arc<Self>,
        slow: &mut Slow,
        reason: Reason,
        prior: Option<Arc<Entry>>,
    ) -> Result<watch::Receiver<FetchResult>, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::SourceAborted)?;
        let (tx, rx) = watch::channel(None);
        slow.inflight = Some(rx.clone());
        let cache = Arc::clone(self);
        runtime.spawn(async move {
            let guard = AbortGuard(Some(Arc::clone(&cache)));
            let outcome = cache.obtain(reason, prior).await;
            let result = cache.complete(outcome, reason);
            std::mem::forget(guard);
            tx.send_replace(Some(result));
        });
        Ok(rx)
    }

    fn complete(
        self: &Arc<Self>,
        outcome: Result<super::Obtained, Error>,
        reason: Reason,
    ) -> Result<Arc<Entry>, Error> {
        let mut slow = self.lock();
        slow.inflight = None;
        let result = outcome.and_then(|obtained| {
            Entry::obtained(obtained, &self.shared.policy, &self.shared.endpoint)
        });
        match result {
            Ok(entry) => {
                self.counters()
                    .tokens_fetched
                    .fetch_add(1, Ordering::Relaxed);
                slow.failures = 0;
                slow.retry_not_before = None;
                slow.last_error = None;
                self.install(&mut slow, Arc::clone(&entry));
                Ok(entry)
            }
            Err(error) => {
                self.record_failure(&mut slow, &error, reason);
                Err(error)
            }
        }
    }

    fn record_failure(self: &Arc<Self>, slow: &mut Slow, error: &Error, reason: Reason) {
        slow.failures = slow.failures.saturating_add(1);
        let cooldown = self
            .shared
            .policy
            .retry
            .cooldown(slow.failures, error.retry_after());
        let now = Instant::now();
        let until = later(now, cooldown);
        slow.retry_not_before = Some(until);
        slow.last_error = Some(error.clone());
        tracing::debug!(
            endpoint = %self.shared.endpoint,
            reason = reason.as_str(),
            failures = slow.failures,
            cooldown = ?cooldown,
            "token fetch failed; backing off"
        );
        // A refresh that failed while the current token is still usable is tried again when
        // the backoff ends (the timer sets the "refresh due" bit then).
        if let Some(entry) = self.usable(now) {
            let again = until.min(entry.use_until);
            self.arm(slow, &entry, again);
        }
    }
}

/// The error callers without a token get while the cache backs off after failed fetches.
fn backing_off(slow: &Slow, now: Instant) -> Option<Error> {
    let until = slow.retry_not_before?;
    if now >= until {
        return None;
    }
    let last = slow.last_error.clone()?;
    Some(Error::BackingOff {
        retry_in: until - now,
        last: Arc::new(last),
    })
}

/// Clears the in-flight fetch if its task ends without completing (a panic in the source, or
/// the runtime shutting down), so later callers start a new fetch instead of waiting forever.
struct AbortGuard(Option<Arc<TokenCache>>);

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if let Some(cache) = self.0.take() {
            let mut slow = cache.lock();
            slow.inflight = None;
            tracing::error!(
                endpoint = %cache.shared.endpoint,
                "token source panicked or its task was cancelled"
            );
            cache.record_failure(&mut slow, &Error::SourceAborted, Reason::Demand);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing::{cache_with, cache_with_policy, settle, Counting, Scripted};
    use super::*;
    use crate::cache::hit::DUE;
    use crate::policy::{CachePolicy, RetryPolicy};

    /// Single flight: a thousand concurrent misses share one fetch.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_misses_share_one_fetch() {
        let (cache, source) = cache_with(Counting::slow(
            Duration::from_secs(3600),
            Duration::from_millis(50),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..1_000 {
            let cache = Arc::clone(&cache);
            tasks.spawn(async move { cache.entry().await.map(|e| e.gen) });
        }
        let mut gens = std::collections::HashSet::new();
        while let Some(gen) = tasks.join_next().await {
            gens.insert(gen.unwrap().unwrap());
        }
        assert_eq!(gens.len(), 1);
        assert_eq!(source.calls(), 1);
        assert_eq!(cache.shared.counters.snapshot().cache_misses, 1);
    }

    /// Compare-and-evict: a rejection of a token that was already replaced drops nothing.
    #[tokio::test(start_paused = true)]
    async fn only_the_current_token_is_evicted() {
        let (cache, source) = cache_with(Counting::new(Duration::from_secs(3600)));
        let first = cache.entry().await.unwrap();
        assert_eq!(cache.invalidate(first.gen), Invalidation::Replaced);
        let second = cache.entry().await.unwrap();
        assert_ne!(second.gen, first.gen);
        assert_eq!(source.calls(), 2);
        // The old token rejected again (a request that was in flight): nothing is dropped.
        assert_eq!(cache.invalidate(first.gen), Invalidation::Replaced);
        settle().await;
        assert_eq!(cache.entry().await.unwrap().gen, second.gen);
        assert_eq!(source.calls(), 2);
        assert_eq!(cache.shared.counters.snapshot().forced_refreshes, 1);
    }

    /// The limiter: tokens the API accepted are replaced at once however close the
    /// rejections come; replacements it never accepted wait 1, 2, 4 ... seconds after the last
    /// forced refresh (issue 16: not 0 first, which cost two token requests per episode); an
    /// acceptance starts the backoff again at its first step.
    #[tokio::test(start_paused = true)]
    async fn accepted_tokens_are_replaced_at_once_and_unaccepted_ones_back_off() {
        let (cache, source) = cache_with(Counting::new(Duration::from_secs(3600)));
        let next = |cache: &Arc<TokenCache>| {
            let cache = Arc::clone(cache);
            async move { cache.entry().await.unwrap() }
        };
        // Revoked again and again: each accepted token is replaced at once.
        for round in 0..5 {
            let token = next(&cache).await;
            cache.mark_accepted(token.gen);
            assert_eq!(
                cache.invalidate(token.gen),
                Invalidation::Replaced,
                "round {round}"
            );
        }
        settle().await;
        assert_eq!(source.calls(), 6, "one fetch per rejected token");
        // Rejects everything: the replacement of the last accepted token waits 1 s, then 2 s, 4 s.
        let limited_then_replaced = |token: Arc<Entry>, wait: Duration| {
            let cache = Arc::clone(&cache);
            async move {
                assert_eq!(
                    cache.invalidate(token.gen),
                    Invalidation::Limited,
                    "before {wait:?}"
                );
                tokio::time::advance(wait - Duration::from_millis(1)).await;
                assert_eq!(
                    cache.invalidate(token.gen),
                    Invalidation::Limited,
                    "just before {wait:?}"
                );
                tokio::time::advance(Duration::from_millis(1)).await;
                assert_eq!(
                    cache.invalidate(token.gen),
                    Invalidation::Replaced,
                    "after {wait:?}"
                );
            }
        };
        for wait in [1u64, 2, 4] {
            limited_then_replaced(next(&cache).await, Duration::from_secs(wait)).await;
        }
        // An acceptance ends the backoff: the accepted token is replaced at once, and its
        // replacement, never accepted, waits the first step again (1 s, not 8 s, not 0).
        let accepted = next(&cache).await;
        cache.mark_accepted(accepted.gen);
        assert_eq!(cache.invalidate(accepted.gen), Invalidation::Replaced);
        limited_then_replaced(next(&cache).await, Duration::from_secs(1)).await;
        settle().await;
        let stats = cache.shared.counters.snapshot();
        assert_eq!(stats.forced_refreshes, 10);
        assert_eq!(stats.forced_refreshes_suppressed, 8);
        assert_eq!(source.calls(), 11);
    }

    /// After a failed fetch, callers get the error at once until the cooldown passes; then one
    /// new fetch.
    #[tokio::test(start_paused = true)]
    async fn failures_back_off_then_one_fetch_tries_again() {
        let policy = CachePolicy {
            retry: RetryPolicy::no_retry()
                .initial_backoff(Duration::from_secs(1))
                .max_backoff(Duration::from_secs(1)),
            ..CachePolicy::default()
        };
        let source = Scripted::new(vec![Scripted::transient(), Scripted::ok("t")]);
        let (cache, source) = cache_with_policy(source, policy);
        assert!(cache.entry().await.is_err());
        match cache.entry().await {
            Err(Error::BackingOff { retry_in, last }) => {
                assert!(retry_in <= Duration::from_secs(1));
                assert!(last.is_transient());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(source.calls(), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(cache.entry().await.unwrap().token.secret(), "t");
        assert_eq!(source.calls(), 2);
    }

    /// Issue 12: a `Retry-After` of `u64::MAX` seconds (with an uncapped policy) backs off for
    /// at most ten years instead of overflowing the clock.
    #[tokio::test(start_paused = true)]
    async fn an_absurd_retry_after_saturates_the_cooldown() {
        struct Forever;
        impl crate::TokenSource for Forever {
            fn fetch_token<'a>(
                &'a self,
                _: &'a crate::Scopes,
            ) -> crate::BoxFuture<'a, Result<crate::Token, Error>> {
                Box::pin(async {
                    Err(Error::Status {
                        endpoint: Arc::from("test source"),
                        status: http::StatusCode::TOO_MANY_REQUESTS,
                        retry_after: Some(Duration::from_secs(u64::MAX)),
                    })
                })
            }
        }
        let policy = CachePolicy {
            retry: RetryPolicy::no_retry().retry_after_cap(Duration::MAX),
            ..CachePolicy::default()
        };
        let (cache, _) = cache_with_policy(Forever, policy);
        assert!(cache.entry().await.is_err());
        match cache.entry().await {
            Err(Error::BackingOff { retry_in, .. }) => {
                assert!(retry_in <= crate::MAX_LIFETIME, "{retry_in:?}");
                assert!(retry_in >= crate::MAX_LIFETIME - Duration::from_secs(1));
            }
            other => panic!("{other:?}"),
        }
    }

    /// Issue 12: a forced refresh backoff of `Duration::MAX` limits without overflowing.
    #[tokio::test(start_paused = true)]
    async fn an_absurd_forced_refresh_backoff_saturates() {
        let policy = CachePolicy {
            forced_refresh_backoff: Duration::MAX,
            forced_refresh_backoff_max: Duration::MAX,
            ..CachePolicy::default()
        };
        let (cache, source) = cache_with_policy(Counting::new(Duration::from_secs(3600)), policy);
        let first = cache.entry().await.unwrap();
        assert_eq!(cache.invalidate(first.gen), Invalidation::Replaced);
        let second = cache.entry().await.unwrap();
        assert_eq!(cache.invalidate(second.gen), Invalidation::Limited);
        assert_eq!(source.calls(), 2);
    }

    /// A source that panics fails its waiters with `SourceAborted` and does not leave the
    /// cache waiting forever.
    #[tokio::test(start_paused = true)]
    async fn a_panicking_source_fails_its_waiters_and_backs_off() {
        let policy = CachePolicy {
            retry: RetryPolicy::no_retry().initial_backoff(Duration::from_secs(1)),
            ..CachePolicy::default()
        };
        let source = Scripted::new(vec![Scripted::panic(), Scripted::ok("t")]);
        let (cache, _) = cache_with_policy(source, policy);
        assert!(matches!(cache.entry().await, Err(Error::SourceAborted)));
        assert!(matches!(cache.entry().await, Err(Error::BackingOff { .. })));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(cache.entry().await.is_ok());
    }

    /// The refresh the timer marked due runs in the background: hits keep getting the
    /// current token until the new one lands.
    #[tokio::test(start_paused = true)]
    async fn a_due_refresh_runs_in_the_background() {
        let (cache, source) = cache_with(Counting::slow(
            Duration::from_secs(100),
            Duration::from_secs(1),
        ));
        let first = cache.entry().await.unwrap();
        tokio::time::advance(Duration::from_secs(75)).await;
        settle().await;
        assert!(cache.is_due());
        let during = cache
            .cached()
            .expect("the current token while the refresh runs");
        assert_eq!(during.gen, first.gen);
        assert_eq!(cache.shared.counters.snapshot().refreshes_ahead, 1);
        // The first hit took the refresh and cleared the bit: later hits take the fast path
        // (not the cold path and its mutex) for as long as the refresh runs.
        assert!(!cache.is_due());
        for _ in 0..10 {
            assert_eq!(cache.cached().unwrap().gen, first.gen);
        }
        assert_eq!(cache.shared.counters.snapshot().refreshes_ahead, 1);
        settle().await; // the fetch task starts its one-second answer
        tokio::time::advance(Duration::from_secs(1)).await;
        settle().await;
        assert_ne!(cache.cached().unwrap().gen, first.gen);
        assert_eq!(source.calls(), 2);
    }

    /// A cache whose token's refresh ahead is in flight (a one-second answer): the cache, its
    /// source and the token being refreshed.
    async fn refresh_in_flight() -> (Arc<TokenCache>, Arc<Counting>, Arc<Entry>) {
        let (cache, source) = cache_with(Counting::slow(
            Duration::from_secs(100),
            Duration::from_secs(1),
        ));
        let first = cache.entry().await.unwrap();
        tokio::time::advance(Duration::from_secs(75)).await;
        settle().await;
        assert_eq!(
            cache.cached().map(|c| c.gen),
            Some(first.gen),
            "starts the refresh"
        );
        settle().await;
        assert_eq!(source.calls(), 2, "the refresh is in flight");
        (cache, source, first)
    }

    /// A cache backing off after its refresh ahead failed, its token still usable: the cache,
    /// its source, the token and the calls made so far.
    async fn backing_off_after_a_failed_refresh(
    ) -> (Arc<TokenCache>, Arc<Scripted>, Arc<Entry>, usize) {
        let (cache, source) = cache_with(Scripted::new(vec![
            Scripted::ok("tok-1"),
            Scripted::permanent(),
        ]));
        let first = cache.entry().await.unwrap();
        tokio::time::advance(Duration::from_secs(2700)).await;
        settle().await;
        assert!(cache.cached().is_some(), "starts the refresh, which fails");
        for _ in 0..10 {
            settle().await;
        }
        let calls = source.calls();
        assert!(calls >= 2, "{calls}");
        assert!(
            backing_off(&cache.lock(), Instant::now()).is_some(),
            "backing off"
        );
        (cache, source, first, calls)
    }

    /// The API rejects the token while its refresh ahead is in flight: the refresh's token is
    /// the replacement, and no second fetch starts beside it.
    #[tokio::test(start_paused = true)]
    async fn a_rejection_while_a_refresh_is_in_flight_starts_no_second_fetch() {
        let (cache, source, first) = refresh_in_flight().await;
        cache.mark_accepted(first.gen);
        assert!(matches!(
            cache.invalidate(first.gen),
            Invalidation::Replaced
        ));
        let next = cache.entry().await.unwrap();
        assert_ne!(next.gen, first.gen);
        assert_eq!(
            source.calls(),
            2,
            "no second fetch beside the one in flight"
        );
        assert_eq!(cache.shared.counters.snapshot().forced_refreshes, 1);
    }

    /// The API rejects a token while the cache backs off after failed refreshes: the token is
    /// dropped, and no token request is sent before the backoff ends.
    #[tokio::test(start_paused = true)]
    async fn a_rejection_during_a_backoff_sends_nothing_before_it_ends() {
        let (cache, source, first, calls) = backing_off_after_a_failed_refresh().await;
        cache.mark_accepted(first.gen);
        assert!(matches!(
            cache.invalidate(first.gen),
            Invalidation::Replaced
        ));
        settle().await;
        assert_eq!(source.calls(), calls, "nothing sent during the backoff");
    }

    /// The "refresh due" bit seen while a fetch is in flight (a timer of the same token firing
    /// again) starts no second fetch, and neither does it while the cache backs off.
    #[tokio::test(start_paused = true)]
    async fn a_due_bit_during_a_fetch_or_a_backoff_starts_nothing() {
        let (cache, source, first) = refresh_in_flight().await;
        cache.update_if_current(first.gen, |s| s | DUE);
        assert!(cache.cached().is_some());
        settle().await;
        assert_eq!(
            source.calls(),
            2,
            "no second fetch beside the one in flight"
        );
        assert_eq!(cache.shared.counters.snapshot().refreshes_ahead, 1);

        let (cache, source, first, calls) = backing_off_after_a_failed_refresh().await;
        cache.update_if_current(first.gen, |s| s | DUE);
        assert!(cache.cached().is_some());
        settle().await;
        assert_eq!(source.calls(), calls, "nothing sent during the backoff");
    }
}
