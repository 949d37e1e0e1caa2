//! The [`TokenStore`] seam: where a fleet keeps its token, its lock and its limiter.

use std::fmt;
use std::time::Duration;

use crate::BoxFuture;

/// The names under which one token lives in a store: the token, the lock of the fetch that
/// replaces it, and the forced refresh limiter's state.
///
/// All three share one Redis Cluster hash tag (`{...}`), so they live in one hash slot and a
/// script may touch them together. Derived by the crate from everything that makes tokens
/// differ (see [`Fleet`](super::Fleet)); a store only uses them as given.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StoreKey {
    pub(crate) token: String,
    pub(crate) lock: String,
    pub(crate) limit: String,
}

impl StoreKey {
    /// The names for a hash tag such as `{cc:test}` (`{cc:test}:token`, `:lock`, `:limit`):
    /// for testing a store of your own. The crate derives its keys itself.
    pub fn from_tag(tag: &str) -> Self {
        Self {
            token: format!("{tag}:token"),
            lock: format!("{tag}:lock"),
            limit: format!("{tag}:limit"),
        }
    }

    /// Where the token is kept.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The lock of the fetch that replaces the token.
    pub fn lock(&self) -> &str {
        &self.lock
    }

    /// The state of the forced refresh limiter.
    pub fn limit(&self) -> &str {
        &self.limit
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.token)
    }
}

/// A token as a store keeps it: an id, an opaque (encrypted) value, and how long it has left.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredToken {
    /// Identifies this token among the ones stored under the key over time (random, chosen by
    /// the writer): compare-and-swap compares it.
    pub id: String,
    /// The token and its schedule, encrypted by the crate (or plain, when configured so). A
    /// store keeps the bytes as they are.
    pub value: Vec<u8>,
    /// How long the token has left, by the store's clock: on [`save`](TokenStore::save) the
    /// time to live to set, on [`load`](TokenStore::load) the time to live that remains.
    pub ttl: Duration,
}

impl fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredToken")
            .field("id", &self.id)
            .field("value_len", &self.value.len())
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// The forced refresh limiter's settings, passed to [`TokenStore::evict`]: replacements the API
/// never accepted wait `base`, doubling per replacement in a row, up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForcedBackoff {
    /// The wait after the first replacement the API never accepted.
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl ForcedBackoff {
    /// How long after the last forced refresh the next may evict a token the API never
    /// accepted, when `strikes` evictions ran since the API last accepted a token: zero for
    /// none, then `base`, doubling, up to `max`.
    pub fn wait(&self, strikes: u32) -> Duration {
        if strikes == 0 {
            return Duration::ZERO;
        }
        let factor = 2u32.saturating_pow(strikes.saturating_sub(1).min(20));
        self.base.saturating_mul(factor).min(self.max)
    }
}

/// What [`TokenStore::evict`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Eviction {
    /// The rejected token was the stored one and is gone: fetch its replacement (under the
    /// lock, as for a miss).
    Evicted,
    /// The stored token is another one (already replaced) or none: read it again.
    NotCurrent,
    /// The rejected token was a replacement the API never accepted, and the fleet's forced
    /// refresh backoff has not passed: keep it for this long.
    Limited(Duration),
}

/// A failure of the store (a timeout, a connection error, a refused command, a reply of the
/// wrong shape). Never shown to callers: the crate counts it, logs it (rate-limited) and
/// fetches without the store.
pub struct StoreError(Box<dyn std::error::Error + Send + Sync>);

impl StoreError {
    /// Wraps a store's own error.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }
}

impl fmt::Debug for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreError({})", self.0)
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Where a fleet of processes keeps one token per configuration, and coordinates who fetches
/// the next: [`RedisStore`](super::RedisStore) (the `redis` feature), or your own.
///
/// Each operation must be atomic on the store (a script, a transaction, a compare-and-set),
/// because many processes call them at once. The crate bounds every call with the fleet's
/// [`operation_timeout`](super::Fleet::operation_timeout) and treats any failure as "no store":
/// it fetches from the token endpoint itself, as without a fleet.
///
/// Time is the store's: a stored token's `ttl` counts down on the store's clock, so the
/// processes' clocks never need to agree.
pub trait TokenStore: Send + Sync + 'static {
    /// The token under `key.token()` with its remaining time to live, or `None`.
    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoredToken>, StoreError>>;

    /// Takes the lock `key.lock()` for `holder` for `ttl` if nobody holds it (`SET NX PX`).
    /// Returns whether `holder` now holds it.
    fn try_lock<'a>(
        &'a self,
        key: &'a StoreKey,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Releases the lock if `holder` still holds it (compare-and-delete): a lock that expired
    /// and was taken by another holder is left alone.
    fn unlock<'a>(
        &'a self,
        key: &'a StoreKey,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Stores `token` (with `token.ttl` as its time to live) if `holder` holds the lock, or, for
    /// a `holder` of `None`, if no token is stored. A new token starts not accepted. Returns
    /// whether it was stored.
    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        token: &'a StoredToken,
        holder: Option<&'a str>,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// The API rejected the token with id `id`: evicts it if it is still the stored one and the
    /// limiter allows (compare-and-swap on the id). A token marked
    /// [`accepted`](Self::accepted) is evicted at once; one never accepted only when
    /// `backoff.wait(strikes)` has passed since the last eviction, `strikes` being how many
    /// evictions ran since the API last accepted a token: evicting an accepted token sets it to
    /// one, evicting a never-accepted one adds one. So after an accepted token is evicted, the
    /// rejection of its replacement waits `backoff.base`: one rejection episode costs the fleet
    /// one token request at once. The store keeps `strikes` and the time of the last eviction
    /// under `key.limit()`.
    fn evict<'a>(
        &'a self,
        key: &'a StoreKey,
        id: &'a str,
        backoff: ForcedBackoff,
    ) -> BoxFuture<'a, Result<Eviction, StoreError>>;

    /// The API accepted the token with id `id`: marks it, if it is still the stored one.
    fn accepted<'a>(
        &'a self,
        key: &'a StoreKey,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

impl<T: TokenStore + ?Sized> TokenStore for std::sync::Arc<T> {
    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoredToken>, StoreError>> {
        (**self).load(key)
    }

    fn try_lock<'a>(
        &'a self,
        key: &'a StoreKey,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).try_lock(key, holder, ttl)
    }

    fn unlock<'a>(
        &'a self,
        key: &'a StoreKey,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).unlock(key, holder)
    }

    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        token: &'a StoredToken,
        holder: Option<&'a str>,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        (**self).save(key, token, holder)
    }

    fn evict<'a>(
        &'a self,
        key: &'a StoreKey,
        id: &'a str,
        backoff: ForcedBackoff,
    ) -> BoxFuture<'a, Result<Eviction, StoreError>> {
        (**self).evict(key, id, backoff)
    }

    fn accepted<'a>(
        &'a self,
        key: &'a StoreKey,
        id: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).accepted(key, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap_and_saturates() {
        let backoff = ForcedBackoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(30),
        };
        let waits: Vec<u64> = (0..8).map(|n| backoff.wait(n).as_secs()).collect();
        assert_eq!(waits, [0, 1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(backoff.wait(u32::MAX), Duration::from_secs(30));
    }
}
