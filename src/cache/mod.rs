//! The shared token cache: a lock-free hit, single flight, refresh ahead, never a token past
//! its usable life, compare-and-evict invalidation, and backoff. A file per job:
//!
//! | file | job | guarantees it enforces |
//! |---|---|---|
//! | [`hit`] | the hot path: the state word and the per-thread slots; marking a token accepted | **lock-free hit**: one atomic load, one thread-local slot, one header clone; no lock, await or allocation. Marking "accepted" is one relaxed load once the token is marked |
//! | [`flight`] | the slow path: one fetch in flight, waiters, invalidation and its limiter, the cooldown after failures | **one fetch** however many callers miss at once; **compare-and-evict**: a rejection drops the token only if it is still the one rejected (by generation); **revoked-again vs rejects-everything**: a token the API accepted is replaced at once, one it never accepted only after a backoff |
//! | [`fetch`] | one fetch: the source under the load timeout, retries with backoff | every source bounded by the **load timeout**; transient failures retried, others not |
//! | [`timer`] | a timer task per token | **refresh ahead**: marks the refresh due; **never past expiry**: ends the token's use at the end of its usable life, even when its refresh stalls |
//! | [`schedule`] | pure: when a token is refreshed and until when it is used | the lifetime rule (1 s to ten years) and saturating time arithmetic, once for every source |
//! | [`entry`] | a cached token and the credential handed to the adapters | every token enters through `Entry::new`; a token that cannot be a header value is refused |
//! | [`partitions`] | the cache per scope set | the configured scopes' cache plus a bounded, lock-free-to-read list of others |
//! | `fleet` (the `fleet` feature) | a fetch through the fleet's store | **fleet-wide single flight**: adopt a stored token, else fetch under the store's lock; compare-and-swap after a rejection; the store never fails a fetch |
//!
//! # How a hit stays cheap
//!
//! The state every request reads is one `AtomicU64`: the generation of the usable token
//! (unique across the process) and two flag bits, or zero when there is no usable token. A
//! hit loads it, finds the token's header value in a small per-thread slot tagged with that
//! generation, and clones it: no lock, no await, no allocation, and (on a multi-thread runtime,
//! see below) no clock read. The clock is read by a timer task per token instead: it sets the
//! "refresh due" bit at the refresh point and zeroes the state at the end of the token's usable
//! life, so a token past that point is never handed out, even when the refresh itself has
//! stalled. If the timer's runtime goes away, the timer's drop zeroes the state too, and
//! lookups fall back to the slow path, which reads the clock and re-arms a timer.
//!
//! A timer only fires while its runtime is driven. A multi-thread runtime drives its timers on
//! its own threads; a current-thread runtime only inside `block_on`, and it polls the
//! `block_on` future before the tasks its timers woke. So a token whose timer runs on a
//! runtime that is not a multi-thread one carries a "check the clock" bit in the state word,
//! and a hit on it compares the clock with the end of its usable life: a token past that point
//! is never handed out, even by sync code that calls `block_on` once per request. On a
//! multi-thread runtime the timer fires late only by the runtime's scheduling delay, which the
//! expiry margin (60 s, or a tenth of a short lifetime) absorbs many times over.
//!
//! Everything else (a miss, a refresh, an invalidation) takes a short `std::sync::Mutex` that
//! is never held across an await or user code.
//!
//! # Where tokens come in
//!
//! Every token enters through one path: [`fetch`] obtains it (from the [`TokenSource`], or,
//! with a fleet, from the store the fleet shares and the source behind it), [`entry`]
//! schedules it, [`flight`] publishes it and [`timer`] guards it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::policy::CachePolicy;
use crate::stats::Counters;
use crate::{Error, Scopes, TokenSource};

mod entry;
mod fetch;
#[cfg(feature = "fleet")]
mod fleet;
mod flight;
mod hit;
mod partitions;
pub(crate) mod schedule;
mod timer;

#[cfg(test)]
mod props;
#[cfg(test)]
mod testing;

pub(crate) use self::entry::{authorization_header, Credential, Entry};
pub(crate) use self::fetch::Obtained;
pub(crate) use self::flight::Invalidation;
pub(crate) use self::partitions::Partitions;

/// Process-wide source of token generations, cache ids and timer ids (never zero).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// What every partition of one `ClientCredentials` shares.
pub(crate) struct Shared {
    pub(crate) source: Arc<dyn TokenSource>,
    pub(crate) policy: CachePolicy,
    pub(crate) counters: Arc<Counters>,
    /// The token endpoint as errors and logs show it (or the custom source's name).
    pub(crate) endpoint: Arc<str>,
    /// The store a fleet shares tokens through, if any.
    #[cfg(feature = "fleet")]
    pub(crate) fleet: Option<Arc<crate::fleet::Runtime>>,
}

type FetchResult = Option<Result<Arc<Entry>, Error>>;

/// The state behind the mutex: the slow path's, the backoff's and the timer's.
#[derive(Default)]
struct Slow {
    /// The fetch in flight, if any: every waiter subscribes to it (single flight).
    inflight: Option<watch::Receiver<FetchResult>>,
    /// Consecutive failed fetches.
    failures: u32,
    /// While set and in the future, callers without a token get `last_error` at once.
    retry_not_before: Option<Instant>,
    last_error: Option<Error>,
    /// When the last forced refresh (after a rejection) started.
    last_forced: Option<Instant>,
    /// Forced refreshes since the API last accepted a token (the rejection of an accepted token
    /// counts its own refresh as the first; an acceptance resets it to zero): the forced
    /// refresh for a never-accepted token waits `CachePolicy::forced_refresh_wait(strikes)`.
    strikes: u32,
    /// The timer of the current token, and the generation it guards.
    timer: Option<tokio::task::AbortHandle>,
    armed_gen: u64,
}

/// One token cache: one scope set, one token source.
pub(crate) struct TokenCache {
    id: u64,
    /// The hit path's state word (see [`hit`]).
    state: AtomicU64,
    /// The id of the live timer task (zero: none). A timer ends the fast path only if it is
    /// still the live one, so replacing a timer never disturbs its successor.
    armed_timer: AtomicU64,
    current: ArcSwapOption<Entry>,
    slow: Mutex<Slow>,
    pub(crate) scopes: Scopes,
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("scopes", &self.scopes)
            .field("has_token", &(self.state.load(Ordering::Relaxed) != 0))
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    pub(crate) fn new(scopes: Scopes, shared: Arc<Shared>) -> Self {
        Self {
            id: next_id(),
            state: AtomicU64::new(0),
            armed_timer: AtomicU64::new(0),
            current: ArcSwapOption::empty(),
            slow: Mutex::new(Slow::default()),
            scopes,
            shared,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slow> {
        // The lock is never held across user code or a panic point, so poisoning cannot leave
        // the state half-updated; recover rather than propagate.
        self.slow.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// The current entry if it is usable at `now`.
    fn usable(&self, now: Instant) -> Option<Arc<Entry>> {
        self.current.load_full().filter(|e| now < e.use_until)
    }

    /// The current token if it is usable now, without waiting or fetching.
    pub(crate) fn usable_now(&self) -> Option<Arc<Entry>> {
        self.usable(Instant::now())
    }

    /// The current entry, usable or not (for comparing a caller's token with it).
    pub(crate) fn current(&self) -> Option<Arc<Entry>> {
        self.current.load_full()
    }
}

impl Drop for TokenCache {
    fn drop(&mut self) {
        let slow = self.slow.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(timer) = slow.timer.take() {
            timer.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::testing::{cache_with, manual_entry, Counting};
    use super::*;

    /// `Debug` names the scopes and whether a token is held, never the token.
    #[tokio::test(start_paused = true)]
    async fn debug_says_whether_a_token_is_held() {
        let (cache, _source) = cache_with(Counting::new(Duration::from_secs(3600)));
        let empty = format!("{cache:?}");
        assert!(
            empty.starts_with("TokenCache { scopes: ") && empty.contains("has_token: false"),
            "{empty}"
        );
        cache.entry().await.unwrap();
        let held = format!("{cache:?}");
        assert!(held.contains("has_token: true"), "{held}");
        assert!(!held.contains("tok-1"), "{held}");
    }

    /// A token is usable until, not at, the end of its use.
    #[tokio::test(start_paused = true)]
    async fn a_token_is_not_usable_at_the_end_of_its_use() {
        let (cache, _source) = cache_with(Counting::new(Duration::from_secs(3600)));
        let now = Instant::now();
        let entry = manual_entry(now + Duration::from_secs(5), now + Duration::from_secs(10));
        cache.current.store(Some(Arc::clone(&entry)));
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(cache.usable_now().is_some());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(cache.usable_now().is_none(), "at use_until");
        assert!(cache.current().is_some(), "still the current entry");
    }
}
