//! The shared token cache: a lock-free hit, single flight, refresh ahead, double-checked
//! invalidation and backoff.
//!
//! # How a hit stays cheap
//!
//! The state every request reads is one `AtomicU64`: the generation of the usable token
//! (unique across the process) and two flag bits, or zero when there is no usable token.
//! A hit loads it, finds the token's header value in a small per-thread slot tagged with that
//! generation, and clones it: no lock, no await, no allocation, and (on a multi-thread runtime,
//! see below) no clock read. The clock is read
//! by a timer task per token instead: it sets the "refresh due" bit at the refresh point and
//! zeroes the state at the end of the token's usable life, so a token past that point is never
//! handed out, even when the refresh itself has stalled. If the timer's runtime goes away, the
//! timer's drop zeroes the state too, and lookups fall back to the slow path, which reads the
//! clock and re-arms a timer.
//!
//! A timer only fires while its runtime is driven. A multi-thread runtime drives its timers on
//! its own threads; a current-thread runtime only inside `block_on`, and it polls the
//! `block_on` future before the tasks its timers woke. So a token whose timer runs on a
//! runtime that is not a multi-thread one carries a "check the clock" bit in the state word,
//! and a hit on it compares the clock with the end of its usable life: a token past that
//! point is never handed out, even by sync code that calls `block_on` once per request. On a
//! multi-thread runtime the timer fires late only by the runtime's scheduling delay, which the
//! expiry margin (60 s, or a tenth of a short lifetime) absorbs many times over.
//!
//! Everything else (a miss, a refresh, an invalidation) takes a short `std::sync::Mutex` that
//! is never held across an await or user code.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::InvalidResponse;
use crate::policy::{CachePolicy, RetryPolicy};
use crate::source::{Scopes, Token, TokenSource};
use crate::stats::Counters;
use crate::{AccessToken, Error};

/// The "refresh due" bit of the state word; the generation sits above the flag bits.
const DUE: u64 = 1;
/// The "check the clock on a hit" bit of the state word: the token's timer runs on a runtime
/// that may not be driven between lookups.
const CLOCK: u64 = 2;
/// Where the generation starts in the state word.
const GEN_SHIFT: u32 = 2;

/// Process-wide source of token generations and cache ids (never zero).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// A token as the cache holds it.
pub(crate) struct Entry {
    pub(crate) gen: u64,
    pub(crate) token: AccessToken,
    /// `Bearer <token>`, marked sensitive.
    pub(crate) header: HeaderValue,
    pub(crate) refresh_at: Instant,
    pub(crate) use_until: Instant,
}

type FetchResult = Option<Result<Arc<Entry>, Error>>;

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
    /// The timer of the current token, and the generation it guards.
    timer: Option<tokio::task::AbortHandle>,
    armed_gen: u64,
}

/// One token cache: one scope set, one token source.
pub(crate) struct TokenCache {
    id: u64,
    state: AtomicU64,
    /// The id of the live timer task (zero: none). A timer ends the fast path only if it is
    /// still the live one, so replacing a timer never disturbs its successor.
    armed_timer: AtomicU64,
    current: ArcSwapOption<Entry>,
    slow: Mutex<Slow>,
    source: Arc<dyn TokenSource>,
    pub(crate) scopes: Scopes,
    policy: Arc<CachePolicy>,
    pub(crate) counters: Arc<Counters>,
    /// For tracing: the token endpoint's host, or "custom".
    pub(crate) endpoint_host: Arc<str>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("scopes", &self.scopes)
            .field("has_token", &(self.state.load(Ordering::Relaxed) != 0))
            .finish_non_exhaustive()
    }
}

// ----- the per-thread hit slots ---------------------------------------------------------------

const SLOTS: usize = 8;
/// Hits are counted per thread and added to the shared counter in batches, so the hot path
/// never writes a cache line another thread reads.
const HIT_BATCH: u64 = 64;

struct Slot {
    cache: u64,
    gen: u64,
    header: Option<HeaderValue>,
    /// The token's usable life, for hits that must read the clock (`CLOCK`).
    use_until: Option<Instant>,
    hits: u64,
    counters: Option<Arc<Counters>>,
}

impl Slot {
    const EMPTY: Slot = Slot {
        cache: 0,
        gen: 0,
        header: None,
        use_until: None,
        hits: 0,
        counters: None,
    };

    #[cold]
    #[inline(never)]
    fn flush(&mut self) {
        if self.hits > 0 {
            if let Some(c) = &self.counters {
                c.cache_hits.fetch_add(self.hits, Ordering::Relaxed);
            }
            self.hits = 0;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.flush();
    }
}

thread_local! {
    static HIT_SLOTS: RefCell<[Slot; SLOTS]> = const { RefCell::new([Slot::EMPTY; SLOTS]) };
}

impl TokenCache {
    pub(crate) fn new(
        source: Arc<dyn TokenSource>,
        scopes: Scopes,
        policy: Arc<CachePolicy>,
        counters: Arc<Counters>,
        endpoint_host: Arc<str>,
    ) -> Self {
        Self {
            id: next_id(),
            state: AtomicU64::new(0),
            armed_timer: AtomicU64::new(0),
            current: ArcSwapOption::empty(),
            slow: Mutex::new(Slow::default()),
            source,
            scopes,
            policy,
            counters,
            endpoint_host,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slow> {
        // The lock is never held across user code or a panic point, so poisoning cannot leave
        // the state half-updated; recover rather than propagate.
        self.slow.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The hot path: the header of the current token if it is usable, without lock, await or
    /// allocation. Starts a background refresh when one is due.
    ///
    /// The common case (a token, no refresh due, this thread's slot already holds it) is kept
    /// to one atomic load, one thread-local access and the header clone; everything else is in
    /// [`cached_header_cold`](Self::cached_header_cold).
    #[inline]
    pub(crate) fn cached_header(self: &Arc<Self>) -> Option<HeaderValue> {
        let state = self.state.load(Ordering::Acquire);
        if state != 0 && state & DUE == 0 {
            let id = self.id;
            let gen = state >> GEN_SHIFT;
            let hit = HIT_SLOTS.try_with(|slots| {
                let mut slots = slots.try_borrow_mut().ok()?;
                let slot = &mut slots[(id % SLOTS as u64) as usize];
                if slot.cache != id || slot.gen != gen {
                    return None;
                }
                if state & CLOCK != 0 && slot.use_until.is_none_or(|t| Instant::now() >= t) {
                    return None;
                }
                slot.hits += 1;
                if slot.hits >= HIT_BATCH {
                    slot.flush();
                }
                slot.header.clone()
            });
            if let Ok(Some(header)) = hit {
                return Some(header);
            }
        }
        self.cached_header_cold(state)
    }

    /// Everything but the common hit: no token, a refresh due, a slot to fill, a clock check
    /// that failed, or no thread-local storage (thread teardown).
    #[cold]
    #[inline(never)]
    fn cached_header_cold(self: &Arc<Self>, state: u64) -> Option<HeaderValue> {
        if state == 0 {
            return None;
        }
        let gen = state >> GEN_SHIFT;
        let entry = self.current.load_full().filter(|e| e.gen == gen)?;
        if state & CLOCK != 0 && Instant::now() >= entry.use_until {
            return None; // the slow path reads the clock again and decides
        }
        let _ = HIT_SLOTS.try_with(|slots| {
            if let Ok(mut slots) = slots.try_borrow_mut() {
                let slot = &mut slots[(self.id % SLOTS as u64) as usize];
                if slot.cache != self.id || slot.gen != gen {
                    slot.flush();
                    if slot.cache != self.id {
                        slot.counters = Some(Arc::clone(&self.counters));
                    }
                    slot.cache = self.id;
                    slot.gen = gen;
                    slot.header = Some(entry.header.clone());
                    slot.use_until = Some(entry.use_until);
                }
                slot.hits += 1;
            }
        });
        if state & DUE != 0 {
            self.refresh_ahead();
        }
        Some(entry.header.clone())
    }

    /// A usable token, fetching one (once, however many callers ask) if needed.
    pub(crate) async fn header(self: &Arc<Self>) -> Result<HeaderValue, Error> {
        if let Some(h) = self.cached_header() {
            return Ok(h);
        }
        self.entry().await.map(|e| e.header.clone())
    }

    /// The slow path: a usable entry, or the result of the fetch in flight or started now.
    pub(crate) async fn entry(self: &Arc<Self>) -> Result<Arc<Entry>, Error> {
        let mut rx = {
            let mut slow = self.lock();
            let now = Instant::now();
            if let Some(entry) = self.usable(now) {
                if slow.armed_gen != entry.gen || self.armed_timer.load(Ordering::Acquire) == 0 {
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
                    self.counters.cache_misses.fetch_add(1, Ordering::Relaxed);
                    self.start_fetch(&mut slow, Reason::Demand)?
                }
            }
        };
        let result = match rx.wait_for(Option::is_some).await {
            Ok(done) => done.clone(),
            Err(_) => None,
        };
        result.unwrap_or(Err(Error::SourceAborted))
    }

    /// A direct read for callers outside the hot path (stats, blocking API): the current entry
    /// if it is still usable by the clock.
    pub(crate) fn usable(&self, now: Instant) -> Option<Arc<Entry>> {
        self.current
            .load_full()
            .filter(|entry| now < entry.use_until)
    }

    #[cold]
    fn refresh_ahead(self: &Arc<Self>) {
        // Outside a runtime no fetch can start: leave the "refresh due" bit to a caller inside
        // one, rather than clear it and lose the refresh until the token expires.
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let state = self.state.load(Ordering::Acquire);
        if state & DUE == 0
            || self
                .state
                .compare_exchange(state, state & !DUE, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return; // another caller took it
        }
        let mut slow = self.lock();
        if slow.inflight.is_some() || backing_off(&slow, Instant::now()).is_some() {
            // A failed fetch re-arms the timer for the end of its backoff.
            return;
        }
        self.counters
            .refreshes_ahead
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            endpoint_host = %self.endpoint_host,
            scopes = %self.scopes,
            "refreshing token ahead of expiry"
        );
        // A refresh that cannot start (no runtime) leaves the current token in use.
        let _ = self.start_fetch(&mut slow, Reason::Ahead);
    }

    /// Drops the current token if it is the one that was rejected, and starts one new fetch.
    ///
    /// Returns `false` when no new token will be fetched for this rejection (forced refreshes
    /// are limited to one per interval), `true` when one is coming or already came.
    pub(crate) fn invalidate(self: &Arc<Self>, rejected: &HeaderValue) -> bool {
        let mut slow = self.lock();
        match self.current.load().as_ref() {
            Some(entry) if entry.header == *rejected => {}
            // Already replaced (or being replaced): the caller simply asks for the token again.
            _ => return true,
        }
        let now = Instant::now();
        if let Some(last) = slow.last_forced {
            if now < last + self.policy.forced_refresh_interval {
                self.counters
                    .forced_refreshes_suppressed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    endpoint_host = %self.endpoint_host,
                    scopes = %self.scopes,
                    interval = ?self.policy.forced_refresh_interval,
                    "token rejected again soon after a forced refresh; not fetching another yet"
                );
                return false;
            }
        }
        slow.last_forced = Some(now);
        self.counters
            .forced_refreshes
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            endpoint_host = %self.endpoint_host,
            scopes = %self.scopes,
            "token rejected by the API; dropping it and fetching a new one"
        );
        self.current.store(None);
        self.state.store(0, Ordering::Release);
        self.disarm(&mut slow);
        if slow.inflight.is_none() && backing_off(&slow, now).is_none() {
            // No runtime: the next caller's slow path reports it.
            let _ = self.start_fetch(&mut slow, Reason::Forced);
        }
        true
    }

    fn start_fetch(
        self: &Arc<Self>,
        slow: &mut Slow,
        reason: Reason,
    ) -> Result<watch::Receiver<FetchResult>, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::SourceAborted)?;
        let (tx, rx) = watch::channel(None);
        slow.inflight = Some(rx.clone());
        let cache = Arc::clone(self);
        // The fetch runs in its own task: a caller that gives up does not cancel it, and a
        // panicking source unwinds this task only (the guard records the failure).
        runtime.spawn(async move {
            let guard = AbortGuard(Some(Arc::clone(&cache)));
            let outcome = cache.fetch_with_retries(reason).await;
            let result = cache.complete(outcome, reason);
            std::mem::forget(guard);
            tx.send_replace(Some(result));
        });
        Ok(rx)
    }

    async fn fetch_with_retries(&self, reason: Reason) -> Result<(Token, Instant), Error> {
        let retry: &RetryPolicy = &self.policy.retry;
        let first = Instant::now();
        let mut attempt: u32 = 1;
        loop {
            let started = Instant::now();
            self.counters.token_requests.fetch_add(1, Ordering::Relaxed);
            let span = tracing::debug_span!(
                "token_request",
                endpoint_host = %self.endpoint_host,
                scopes = %self.scopes,
                attempt,
                reason = reason.as_str(),
            );
            let result = tracing::Instrument::instrument(
                self.source.fetch_token(&self.scopes),
                span.clone(),
            )
            .await;
            match result {
                Ok(token) => {
                    tracing::debug!(
                        parent: &span,
                        expires_in = token.expires_in.map(|d| d.as_secs()),
                        outcome = "ok",
                        "token fetched"
                    );
                    return Ok((token, started));
                }
                Err(error) => {
                    self.counters.token_failures.fetch_add(1, Ordering::Relaxed);
                    let delay = retry.delay(attempt, error.retry_after());
                    let give_up = !error.is_transient()
                        || attempt >= retry.max_attempts
                        || first.elapsed() + delay > retry.max_elapsed;
                    tracing::warn!(
                        parent: &span,
                        outcome = "error",
                        error = %error,
                        retry_in = ?(!give_up).then_some(delay),
                        "token request failed"
                    );
                    if give_up {
                        return Err(error);
                    }
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    fn complete(
        self: &Arc<Self>,
        outcome: Result<(Token, Instant), Error>,
        reason: Reason,
    ) -> Result<Arc<Entry>, Error> {
        let mut slow = self.lock();
        slow.inflight = None;
        let result = outcome.and_then(|(token, started)| self.make_entry(token, started));
        match result {
            Ok(entry) => {
                self.counters.tokens_fetched.fetch_add(1, Ordering::Relaxed);
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
        let retry = &self.policy.retry;
        let mut cooldown = retry.cooldown(slow.failures);
        if let Some(after) = error.retry_after() {
            cooldown = cooldown.max(after.min(retry.retry_after_cap));
        }
        let now = Instant::now();
        slow.retry_not_before = Some(now + cooldown);
        slow.last_error = Some(error.clone());
        tracing::debug!(
            endpoint_host = %self.endpoint_host,
            reason = reason.as_str(),
            failures = slow.failures,
            cooldown = ?cooldown,
            "token fetch failed; backing off"
        );
        // A refresh that failed while the current token is still usable is tried again when
        // the backoff ends (the timer sets the "refresh due" bit then).
        if let Some(entry) = self.usable(now) {
            let again = (now + cooldown).min(entry.use_until);
            self.arm(slow, &entry, again);
        }
    }

    fn make_entry(&self, token: Token, started: Instant) -> Result<Arc<Entry>, Error> {
        let invalid = || Error::InvalidResponse {
            endpoint: self.endpoint_host.to_string(),
            kind: InvalidResponse::TokenNotHeaderSafe,
        };
        if token.access_token.secret().is_empty() {
            return Err(invalid());
        }
        let mut header = HeaderValue::try_from(format!("Bearer {}", token.access_token.secret()))
            .map_err(|_| invalid())?;
        header.set_sensitive(true);
        let (refresh_in, use_for) = schedule(&self.policy, token.expires_in, fastrand::f64());
        Ok(Arc::new(Entry {
            gen: next_id(),
            token: token.access_token,
            // Clone once so the shared byte buffer is promoted now, not on the first hit:
            // later clones are a reference-count increment.
            header: header.clone(),
            refresh_at: started + refresh_in,
            use_until: started + use_for,
        }))
    }

    /// Publishes an entry and arms its timer.
    fn install(self: &Arc<Self>, slow: &mut Slow, entry: Arc<Entry>) {
        self.current.store(Some(Arc::clone(&entry)));
        let now = Instant::now();
        let due = if now >= entry.refresh_at { DUE } else { 0 };
        self.state.store(
            entry.gen << GEN_SHIFT | clock_bit() | due,
            Ordering::Release,
        );
        self.arm(slow, &entry, entry.refresh_at);
    }

    /// (Re)starts the timer of `entry`: "refresh due" at `refresh_at`, unusable at `use_until`.
    fn arm(self: &Arc<Self>, slow: &mut Slow, entry: &Arc<Entry>, refresh_at: Instant) {
        self.disarm(slow);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to run a timer: leave the fast path off; the slow path reads the clock.
            self.state.store(0, Ordering::Release);
            return;
        };
        let cache = Arc::downgrade(self);
        let gen = entry.gen;
        let use_until = entry.use_until;
        let timer_id = next_id();
        slow.armed_gen = gen;
        self.armed_timer.store(timer_id, Ordering::Release);
        slow.timer = Some(
            runtime
                .spawn(async move {
                    let _disarm = Disarm {
                        cache: cache.clone(),
                        gen,
                        timer_id,
                    };
                    tokio::time::sleep_until(refresh_at).await;
                    if let Some(cache) = cache.upgrade() {
                        let _ =
                            cache
                                .state
                                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                                    (s >> GEN_SHIFT == gen).then_some(s | DUE)
                                });
                    }
                    tokio::time::sleep_until(use_until).await;
                    // Dropping `_disarm` ends the token's use.
                })
                .abort_handle(),
        );
    }

    /// Stops the current timer; the caller publishes the new state.
    fn disarm(&self, slow: &mut Slow) {
        self.armed_timer.store(0, Ordering::Release);
        slow.armed_gen = 0;
        if let Some(timer) = slow.timer.take() {
            timer.abort();
        }
    }

    /// A cached token value for callers outside the middleware.
    pub(crate) async fn access_token(self: &Arc<Self>) -> Result<AccessToken, Error> {
        if self.cached_header().is_some() {
            if let Some(entry) = self.current.load_full() {
                if self.state.load(Ordering::Acquire) >> GEN_SHIFT == entry.gen {
                    return Ok(entry.token.clone());
                }
            }
        }
        self.entry().await.map(|e| e.token.clone())
    }

    /// The current usable token, if any, without waiting or fetching.
    pub(crate) fn try_access_token(self: &Arc<Self>) -> Option<AccessToken> {
        self.usable(Instant::now()).map(|e| e.token.clone())
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

/// `CLOCK` unless the current runtime is a multi-thread one, which fires timers on time.
fn clock_bit() -> u64 {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => 0,
        _ => CLOCK,
    }
}

fn backing_off(slow: &Slow, now: Instant) -> Option<Error> {
    let until = slow.retry_not_before?;
    if now >= until {
        return None;
    }
    let last = slow.last_error.clone()?;
    Some(Error::BackingOff {
        retry_in: until - now,
        last: Box::new(last),
    })
}

#[derive(Debug, Clone, Copy)]
enum Reason {
    Demand,
    Ahead,
    Forced,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Demand => "demand",
            Reason::Ahead => "refresh_ahead",
            Reason::Forced => "forced",
        }
    }
}

/// Ends a token's fast-path use when its timer ends (at `use_until`, or when the runtime that
/// ran it shuts down), unless the timer was replaced meanwhile. Takes no lock: it may run
/// wherever the runtime drops the task.
struct Disarm {
    cache: Weak<TokenCache>,
    gen: u64,
    timer_id: u64,
}

impl Drop for Disarm {
    fn drop(&mut self) {
        let Some(cache) = self.cache.upgrade() else {
            return;
        };
        if cache
            .armed_timer
            .compare_exchange(self.timer_id, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return; // replaced by a newer timer, which now guards the state
        }
        let gen = self.gen;
        let _ = cache
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s >> GEN_SHIFT == gen).then_some(0)
            });
    }
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
                endpoint_host = %cache.endpoint_host,
                "token source panicked or its task was cancelled"
            );
            cache.record_failure(&mut slow, &Error::SourceAborted, Reason::Demand);
        }
    }
}

/// How long a token is used and when its refresh starts, from its announced lifetime.
pub(crate) fn schedule(
    policy: &CachePolicy,
    expires_in: Option<Duration>,
    jitter: f64,
) -> (Duration, Duration) {
    let lifetime = expires_in
        .unwrap_or(policy.default_lifetime)
        .max(policy.min_lifetime);
    // The margin shrinks for short lifetimes (a tenth of the lifetime at most), so a 60 s token
    // is still used for 54 s.
    let margin = policy.expiry_margin.min(lifetime / 10);
    let use_for = lifetime - margin;
    let fraction =
        (policy.refresh_at - policy.refresh_jitter * jitter.clamp(0.0, 1.0)).clamp(0.0, 1.0);
    let refresh_in = lifetime.mul_f64(fraction).min(use_for);
    (refresh_in, use_for)
}
