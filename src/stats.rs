//! Counters, and the [`Stats`] snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) tokens_fetched: AtomicU64,
    pub(crate) token_requests: AtomicU64,
    pub(crate) token_failures: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
    pub(crate) cache_misses: AtomicU64,
    pub(crate) refreshes_ahead: AtomicU64,
    pub(crate) forced_refreshes: AtomicU64,
    pub(crate) forced_refreshes_suppressed: AtomicU64,
    pub(crate) replayed_requests: AtomicU64,
    pub(crate) tokens_adopted: AtomicU64,
    pub(crate) store_writes: AtomicU64,
    pub(crate) store_errors: AtomicU64,
    pub(crate) store_calls_skipped: AtomicU64,
    pub(crate) credentials_reloaded: AtomicU64,
    pub(crate) credential_errors: AtomicU64,
}

/// A snapshot of what a [`ClientCredentials`](crate::ClientCredentials) has done, across all its
/// clones, adapters and scope sets.
///
/// Cheap: reading it loads a few atomics. `cache_hits` is counted per thread and published in
/// batches of 64 (and when a thread exits), so it may trail the true count by up to 63 hits per
/// thread; every other counter is exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Tokens obtained and cached.
    pub tokens_fetched: u64,
    /// Token requests sent (each attempt counts, retries included).
    pub token_requests: u64,
    /// Token requests that failed.
    pub token_failures: u64,
    /// Lookups served from the cache without waiting.
    pub cache_hits: u64,
    /// Lookups that found no usable token and started a fetch.
    pub cache_misses: u64,
    /// Background refreshes started ahead of expiry.
    pub refreshes_ahead: u64,
    /// Tokens dropped because the API rejected them, each followed by one new fetch.
    pub forced_refreshes: u64,
    /// Rejections that did not cause a new fetch because one had just been forced.
    pub forced_refreshes_suppressed: u64,
    /// API requests sent a second time (replayed) with a new token after the API rejected
    /// the first one's.
    pub replayed_requests: u64,
    /// Tokens taken from the fleet's store instead of fetched (the `fleet` feature).
    pub tokens_adopted: u64,
    /// Tokens this process wrote to the fleet's store.
    pub store_writes: u64,
    /// Store calls that failed or timed out (each followed by going on without the store).
    pub store_errors: u64,
    /// Store calls not made because the circuit breaker was open.
    pub store_calls_skipped: u64,
    /// New client secrets taken from a secret file or provider after the first (rotations).
    pub credentials_reloaded: u64,
    /// Reads of a secret file or calls of a secret provider that failed (each keeping the last
    /// good secret).
    pub credential_errors: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            tokens_fetched: get(&self.tokens_fetched),
            token_requests: get(&self.token_requests),
            token_failures: get(&self.token_failures),
            cache_hits: get(&self.cache_hits),
            cache_misses: get(&self.cache_misses),
            refreshes_ahead: get(&self.refreshes_ahead),
            forced_refreshes: get(&self.forced_refreshes),
            forced_refreshes_suppressed: get(&self.forced_refreshes_suppressed),
            replayed_requests: get(&self.replayed_requests),
            tokens_adopted: get(&self.tokens_adopted),
            store_writes: get(&self.store_writes),
            store_errors: get(&self.store_errors),
            store_calls_skipped: get(&self.store_calls_skipped),
            credentials_reloaded: get(&self.credentials_reloaded),
            credential_errors: get(&self.credential_errors),
        }
    }
}
