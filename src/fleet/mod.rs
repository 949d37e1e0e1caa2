//! One token for a whole fleet of processes: a [`TokenStore`] (Redis or Valkey with the
//! `redis` feature, or your own) behind the in-process cache, with single flight across
//! processes.
//!
//! The in-process cache does not change: a hit never touches the store. The store is asked
//! only when a process has no usable token, when the token's refresh is due, and after the API
//! rejected it:
//!
//! 1. **Read.** A usable token in the store is adopted with its true remaining lifetime (the
//!    store's time to live, so the processes' clocks never need to agree) and its original
//!    refresh point, so the fleet refreshes once, not once per process.
//! 2. **Lock.** Otherwise the process takes the store's lock for the token (`SET NX PX`),
//!    reads again, fetches from the token endpoint, stores the token, and releases the lock
//!    by compare-and-delete. Processes that find the lock taken poll (with jitter) for the new
//!    token; when the lock expires (its holder died) one of them takes it; past
//!    [`lock_wait`](Fleet::lock_wait) each fetches for itself.
//! 3. **Rejection.** After a rejection the stored token is evicted only if it is still the
//!    rejected one (compare-and-swap on its id), and only as the forced refresh limiter allows,
//!    fleet-wide: N processes that see the same rejected token cause one token request.
//!
//! **The store never fails a request.** Every call has its own timeout
//! ([`operation_timeout`](Fleet::operation_timeout)); building never connects; a store that is
//! down, slow, refuses a command or holds garbage means "fetch from the token endpoint, as
//! without a fleet, and store the token when possible". A circuit breaker stops asking a store
//! that keeps failing and tries it again later. Failures are counted in
//! [`Stats`](crate::Stats) and logged (at most once per ten seconds), never returned.
//!
//! **Keys and values cannot mix or leak.** The store key is a hash of everything that makes
//! tokens differ: the token URL, client id, authentication method and credential (a hash of the
//! secret, the signing key's thumbprint), extra parameters (`audience`, `resource`, ...), the
//! scopes, the DPoP key's thumbprint and your [`namespace`](Fleet::namespace). Values are
//! encrypted with AES-256-GCM under your [`EncryptionKey`], with the store key's name as
//! associated data, versioned and size-capped.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;

use crate::stats::Counters;
use crate::{ConfigError, Scopes};

mod breaker;
pub(crate) mod codec;
#[cfg(feature = "redis")]
mod redis;
mod store;

pub use self::codec::EncryptionKey;
#[cfg(feature = "redis")]
pub use self::redis::RedisStore;
pub use self::store::{Eviction, ForcedBackoff, StoreError, StoreKey, StoredToken, TokenStore};

pub(crate) use self::codec::Codec;

/// How long one store call may take before the process goes on without the store (250 ms).
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_millis(250);
/// How long the lock of a fetch lives unless released (5 s): a holder that dies costs the
/// fleet at most this long.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(5);
/// How long the circuit breaker stops asking a failing store, at first (5 s).
pub const DEFAULT_BREAKER_OPEN: Duration = Duration::from_secs(5);

/// A fleet-wide token cache: the store, how values are protected, and the timeouts. Given to
/// [`ClientCredentialsBuilder::fleet`](crate::ClientCredentialsBuilder::fleet).
///
/// ```
/// # #[cfg(feature = "redis")]
/// # fn main() -> Result<(), client_credentials::ConfigError> {
/// use client_credentials::{ClientCredentials, EncryptionKey, Fleet};
///
/// let key = EncryptionKey::from_base64("2026-12", "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=")?;
/// let credentials = ClientCredentials::builder()
///     .token_url("https://login.example.com/connect/token")
///     .client_id("billing-service")
///     .client_secret("from-your-secrets-manager")
///     .fleet(Fleet::redis("redis://redis.internal:6379")?.namespace("billing").encryption_key(key))
///     .build()?; // never connects: the first token request does
/// # let _ = credentials;
/// # Ok(())
/// # }
/// # #[cfg(not(feature = "redis"))]
/// # fn main() {}
/// ```
#[derive(Clone)]
pub struct Fleet {
    store: Arc<dyn TokenStore>,
    name: Arc<str>,
    namespace: Option<String>,
    key: Option<EncryptionKey>,
    old_keys: Vec<EncryptionKey>,
    plaintext: bool,
    operation_timeout: Duration,
    lock_ttl: Duration,
    lock_wait: Option<Duration>,
    breaker_open: Duration,
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("store", &self.name)
            .field("namespace", &self.namespace)
            .field("key", &self.key)
            .field("old_keys", &self.old_keys)
            .field("plaintext", &self.plaintext)
            .field("operation_timeout", &self.operation_timeout)
            .field("lock_ttl", &self.lock_ttl)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// A fleet on your own store. `name` is how logs name it (never a password).
    pub fn new(store: impl TokenStore, name: impl Into<String>) -> Self {
        Self {
            store: Arc::new(store),
            name: Arc::from(name.into()),
            namespace: None,
            key: None,
            old_keys: Vec::new(),
            plaintext: false,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            lock_ttl: DEFAULT_LOCK_TTL,
            lock_wait: None,
            breaker_open: DEFAULT_BREAKER_OPEN,
        }
    }

    /// A fleet on Redis or Valkey at `url` (`redis://`, `rediss://` for TLS, with
    /// `user:password@` for an ACL user and `/db`). Never connects here. See [`RedisStore`]
    /// for Cluster and custom TLS.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn redis(url: &str) -> Result<Self, ConfigError> {
        let store = RedisStore::new(url)?;
        let name = store.name().to_owned();
        Ok(Self::new(store, name))
    }

    /// A prefix of your own in every store key (1 to 64 characters of `A-Z a-z 0-9 . _ - :`):
    /// one store for several environments or teams. Configurations that differ in anything
    /// else already get different keys.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The key that encrypts stored tokens (AES-256-GCM). Required, unless
    /// [`danger_store_plaintext`](Self::danger_store_plaintext).
    pub fn encryption_key(mut self, key: EncryptionKey) -> Self {
        self.key = Some(key);
        self
    }

    /// A key stored tokens may also be encrypted with: the previous key while a fleet rotates
    /// (deploy with the new key as [`encryption_key`](Self::encryption_key) and the old one
    /// here; once every process runs it, drop the old one). Repeatable.
    pub fn decryption_key(mut self, key: EncryptionKey) -> Self {
        self.old_keys.push(key);
        self
    }

    /// Stores tokens in plain text: anyone who can read the store can use them. Only for a
    /// store nobody else can read.
    pub fn danger_store_plaintext(mut self) -> Self {
        self.plaintext = true;
        self
    }

    /// How long one store call may take before the process goes on without the store
    /// (default 250 ms). A first request after a cold start waits at most about three of these
    /// for the store before it fetches for itself.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// How long the lock of a fetch lives unless its holder releases it (default 5 s; at least
    /// 100 ms). Make it longer than a token request usually takes.
    pub fn lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl;
        self
    }

    /// How long a process waits for another's fetch before it fetches for itself (default: the
    /// lock's time to live plus one second).
    pub fn lock_wait(mut self, wait: Duration) -> Self {
        self.lock_wait = Some(wait);
        self
    }

    /// How long the circuit breaker stops asking the store after three failures in a row, at
    /// first (default 5 s; doubling while it keeps failing, up to eight times this).
    pub fn circuit_breaker(mut self, open_for: Duration) -> Self {
        self.breaker_open = open_for;
        self
    }

    /// Checks the settings and makes the runtime state for one `ClientCredentials`.
    pub(crate) fn into_runtime(
        self,
        identity: &Identity,
        counters: Arc<Counters>,
        #[cfg(feature = "jwt")] dpop: Option<Arc<crate::proof::Dpop>>,
    ) -> Result<Arc<Runtime>, ConfigError> {
        let invalid = |m: &str| Err(ConfigError::InvalidFleet(m.to_owned()));
        if let Some(namespace) = &self.namespace {
            let ok = !namespace.is_empty()
                && namespace.len() <= 64
                && namespace
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
            if !ok {
                return invalid("a namespace is 1 to 64 characters of A-Z a-z 0-9 . _ - :");
            }
        }
        let codec = match (self.key, self.plaintext) {
            (Some(_), true) => {
                return invalid("set an encryption key or danger_store_plaintext, not both")
            }
            (None, false) => {
                return invalid(
                    "tokens are encrypted at rest: set an encryption key \
                     (or danger_store_plaintext for a store nobody else can read)",
                )
            }
            (None, true) => {
                if !self.old_keys.is_empty() {
                    return invalid("decryption keys need an encryption key");
                }
                Codec::Plaintext
            }
            (Some(key), false) => {
                let mut keys = vec![key];
                for old in self.old_keys {
                    if keys.iter().any(|k| k.id() == old.id()) {
                        return invalid("two encryption keys have the same id");
                    }
                    keys.push(old);
                }
                Codec::Encrypted(keys)
            }
        };
        if self.operation_timeout.is_zero() || self.operation_timeout > Duration::from_secs(60) {
            return invalid("operation_timeout must be from 1 ms to 60 s");
        }
        if self.lock_ttl < Duration::from_millis(100) || self.lock_ttl > Duration::from_secs(600) {
            return invalid("lock_ttl must be from 100 ms to 10 minutes");
        }
        let lock_wait = self
            .lock_wait
            .unwrap_or_else(|| self.lock_ttl.saturating_add(Duration::from_secs(1)));
        if lock_wait > Duration::from_secs(600) {
            return invalid("lock_wait must be at most 10 minutes");
        }
        if self.breaker_open.is_zero() || self.breaker_open > Duration::from_secs(3600) {
            return invalid("circuit_breaker must be from 1 ms to 1 hour");
        }
        let mut holder = [0u8; 8];
        aws_lc_rs::rand::fill(&mut holder)
            .map_err(|_| ConfigError::InvalidFleet("no random source".into()))?;
        Ok(Arc::new(Runtime {
            store: self.store,
            name: self.name,
            codec,
            base: identity.digest(self.namespace.as_deref()),
            namespace: self.namespace,
            operation_timeout: self.operation_timeout,
            lock_ttl: self.lock_ttl,
            lock_wait,
            breaker: breaker::Breaker::new(self.breaker_open),
            holder_prefix: hex(&holder),
            holders: AtomicU64::new(0),
            counters,
            #[cfg(feature = "jwt")]
            dpop,
        }))
    }
}

/// What tells one configuration's tokens from another's, gathered by the builder.
#[derive(Debug, Default)]
pub(crate) struct Identity(Vec<(&'static str, String)>);

impl Identity {
    pub(crate) fn push(&mut self, name: &'static str, value: impl Into<String>) {
        self.0.push((name, value.into()));
    }

    /// A hash of a secret, for the identity (never the secret itself).
    pub(crate) fn secret_hash(secret: &str) -> String {
        let mut hash = digest::Context::new(&digest::SHA256);
        hash.update(b"client-credentials fleet secret v1\0");
        hash.update(secret.as_bytes());
        hex(hash.finish().as_ref())
    }

    fn digest(&self, namespace: Option<&str>) -> [u8; 32] {
        let mut hash = digest::Context::new(&digest::SHA256);
        hash.update(b"client-credentials fleet identity v1\0");
        let mut field = |name: &str, value: &str| {
            // Length-prefixed, so no two different lists hash alike.
            for part in [name, value] {
                hash.update(&(part.len() as u64).to_le_bytes());
                hash.update(part.as_bytes());
            }
        };
        field("namespace", namespace.unwrap_or(""));
        let mut fields = self.0.clone();
        fields.sort();
        for (name, value) in &fields {
            field(name, value);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(hash.finish().as_ref());
        out
    }
}

/// What a stored token's store value holds besides the token, and where it is.
#[derive(Debug, Clone)]
pub(crate) struct FleetTag {
    pub(crate) key: StoreKey,
    pub(crate) id: Arc<str>,
}

/// What a read found.
pub(crate) enum Loaded {
    /// A stored token (not yet opened).
    Found(StoredToken),
    /// Nothing stored.
    Miss,
    /// The store could not be asked (down, slow, breaker open).
    Unavailable,
}

/// The fleet state of one `ClientCredentials`.
pub(crate) struct Runtime {
    store: Arc<dyn TokenStore>,
    name: Arc<str>,
    pub(crate) codec: Codec,
    base: [u8; 32],
    namespace: Option<String>,
    operation_timeout: Duration,
    pub(crate) lock_ttl: Duration,
    pub(crate) lock_wait: Duration,
    breaker: breaker::Breaker,
    holder_prefix: String,
    holders: AtomicU64,
    counters: Arc<Counters>,
    #[cfg(feature = "jwt")]
    dpop: Option<Arc<crate::proof::Dpop>>,
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("store", &self.name)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// The store key of the tokens for `scopes` (and the current DPoP key).
    pub(crate) fn key(&self, scopes: &Scopes) -> StoreKey {
        let mut hash = digest::Context::new(&digest::SHA256);
        hash.update(b"client-credentials fleet key v1\0");
        hash.update(&self.base);
        hash.update(scopes.canonical().as_bytes());
        hash.update(b"\0");
        if let Some(jkt) = self.dpop_thumbprint() {
            hash.update(jkt.as_bytes());
        }
        let id = hex(&hash.finish().as_ref()[..16]);
        let tag = match &self.namespace {
            Some(namespace) => format!("{{cc:{namespace}:{id}}}"),
            None => format!("{{cc:{id}}}"),
        };
        StoreKey::from_tag(&tag)
    }

    /// The thumbprint of the DPoP key tokens are bound to now, if DPoP is on.
    pub(crate) fn dpop_thumbprint(&self) -> Option<Arc<str>> {
        #[cfg(feature = "jwt")]
        if let Some(dpop) = &self.dpop {
            return Some(dpop.thumbprint());
        }
        None
    }

    /// A new lock holder id: this process's random prefix and a counter.
    pub(crate) fn holder(&self) -> String {
        let n = self.holders.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.holder_prefix)
    }

    /// A new token id: 128 random bits (or `None` without a random source).
    pub(crate) fn new_id() -> Option<Arc<str>> {
        let mut id = [0u8; 16];
        aws_lc_rs::rand::fill(&mut id).ok()?;
        Some(Arc::from(hex(&id)))
    }

    /// One store call, under the operation timeout and the circuit breaker: `None` when the
    /// store could not answer (counted and logged, never returned).
    async fn call<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Option<T> {
        if !self.breaker.allows() {
            self.counters
                .store_calls_skipped
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let error = match tokio::time::timeout(self.operation_timeout, call).await {
            Ok(Ok(value)) => {
                self.breaker.success();
                return Some(value);
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {:?}", self.operation_timeout),
        };
        self.counters.store_errors.fetch_add(1, Ordering::Relaxed);
        let opened = self.breaker.failure();
        if let Some(left_out) = self.breaker.may_log() {
            tracing::warn!(
                store = %self.name,
                op,
                error = %crate::text::shown(&error),
                breaker_open = opened,
                similar_warnings_left_out = left_out,
                "token store failed; going on without it"
            );
        }
        None
    }

    pub(crate) async fn load(&self, key: &StoreKey) -> Loaded {
        match self.call("load", self.store.load(key)).await {
            Some(Some(stored)) => Loaded::Found(stored),
            Some(None) => Loaded::Miss,
            None => Loaded::Unavailable,
        }
    }

    /// `Some(whether the lock was taken)`, or `None` when the store could not be asked.
    pub(crate) async fn try_lock(&self, key: &StoreKey, holder: &str) -> Option<bool> {
        self.call("try_lock", self.store.try_lock(key, holder, self.lock_ttl))
            .await
    }

    pub(crate) async fn unlock(&self, key: &StoreKey, holder: &str) {
        self.call("unlock", self.store.unlock(key, holder)).await;
    }

    /// Whether the token was stored.
    pub(crate) async fn save(
        &self,
        key: &StoreKey,
        token: &StoredToken,
        holder: Option<&str>,
    ) -> bool {
        let saved = self
            .call("save", self.store.save(key, token, holder))
            .await
            .unwrap_or(false);
        if saved {
            self.counters.store_writes.fetch_add(1, Ordering::Relaxed);
        }
        saved
    }

    pub(crate) async fn evict(
        &self,
        key: &StoreKey,
        id: &str,
        backoff: ForcedBackoff,
    ) -> Option<Eviction> {
        self.call("evict", self.store.evict(key, id, backoff)).await
    }

    /// Tells the store the API accepted the token `tag`, in the background.
    pub(crate) fn accepted(self: &Arc<Self>, tag: &FleetTag) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let fleet = Arc::clone(self);
        let tag = tag.clone();
        runtime.spawn(async move {
            fleet
                .call("accepted", fleet.store.accepted(&tag.key, &tag.id))
                .await;
        });
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(pairs: &[(&'static str, &str)]) -> Identity {
        let mut id = Identity::default();
        for (k, v) in pairs {
            id.push(k, *v);
        }
        id
    }

    #[test]
    fn anything_that_differs_gives_another_key() {
        let base = [
            ("token_url", "https://idp/token"),
            ("client_id", "a"),
            ("auth_method", "client_secret_basic"),
        ];
        let one = identity(&base).digest(None);
        assert_eq!(one, identity(&base).digest(None), "stable");
        let mut reordered = base;
        reordered.reverse();
        assert_eq!(
            one,
            identity(&reordered).digest(None),
            "order does not matter"
        );
        for i in 0..base.len() {
            let mut changed = base;
            changed[i].1 = "other";
            assert_ne!(one, identity(&changed).digest(None), "{:?}", changed[i]);
        }
        assert_ne!(one, identity(&base).digest(Some("prod")));
        let mut more = base.to_vec();
        more.push(("param", "audience=x"));
        assert_ne!(one, identity(&more).digest(None));
        // Length prefixes: moving a character from a name to a value changes the hash.
        assert_ne!(
            identity(&[("ab", "c")]).digest(None),
            identity(&[("a", "bc")]).digest(None)
        );
    }

    /// A store that is never reached: these tests check the settings only.
    struct Nowhere;

    impl TokenStore for Nowhere {
        fn load<'a>(
            &'a self,
            _: &'a StoreKey,
        ) -> crate::BoxFuture<'a, Result<Option<StoredToken>, StoreError>> {
            Box::pin(async { Err(StoreError::new("nowhere")) })
        }
        fn try_lock<'a>(
            &'a self,
            _: &'a StoreKey,
            _: &'a str,
            _: Duration,
        ) -> crate::BoxFuture<'a, Result<bool, StoreError>> {
            Box::pin(async { Err(StoreError::new("nowhere")) })
        }
        fn unlock<'a>(
            &'a self,
            _: &'a StoreKey,
            _: &'a str,
        ) -> crate::BoxFuture<'a, Result<(), StoreError>> {
            Box::pin(async { Err(StoreError::new("nowhere")) })
        }
        fn save<'a>(
            &'a self,
            _: &'a StoreKey,
            _: &'a StoredToken,
            _: Option<&'a str>,
        ) -> crate::BoxFuture<'a, Result<bool, StoreError>> {
            Box::pin(async { Err(StoreError::new("nowhere")) })
        }
        fn evict<'a>(
            &'a self,
            _: &'a StoreKey,
            _: &'a str,
            _: ForcedBackoff,
        ) -> crate::BoxFuture<'a, Result<Eviction, StoreError>> {
            Box::pin(async { Err(StoreError::new("nowhere")) })
        }
        fn accepted<'a>(
            &'a self,
            _: &'a StoreKey,
            _: &'a str,
        ) -> crate::BoxFuture<'a, Result<(), StoreError>> {
            Box::pin(async { Err(StoreError::new("nowhere")) })
        }
    }

    fn key(id: &str) -> EncryptionKey {
        EncryptionKey::new(id, &[9; 32]).unwrap()
    }

    fn runtime(fleet: Fleet) -> Result<Arc<Runtime>, ConfigError> {
        fleet.into_runtime(
            &Identity::default(),
            Arc::default(),
            #[cfg(feature = "jwt")]
            None,
        )
    }

    #[test]
    fn settings_are_checked() {
        let fleet = || Fleet::new(Nowhere, "nowhere");
        assert!(runtime(fleet().encryption_key(key("a"))).is_ok());
        assert!(runtime(fleet().danger_store_plaintext()).is_ok());
        let bad: [(&str, Fleet); 11] = [
            ("encryption key", fleet()),
            (
                "not both",
                fleet().encryption_key(key("a")).danger_store_plaintext(),
            ),
            (
                "need an encryption key",
                fleet().danger_store_plaintext().decryption_key(key("b")),
            ),
            (
                "same id",
                fleet().encryption_key(key("a")).decryption_key(key("a")),
            ),
            ("namespace", fleet().encryption_key(key("a")).namespace("")),
            (
                "namespace",
                fleet().encryption_key(key("a")).namespace("a{b}"),
            ),
            (
                "operation_timeout",
                fleet()
                    .encryption_key(key("a"))
                    .operation_timeout(Duration::ZERO),
            ),
            (
                "lock_ttl",
                fleet()
                    .encryption_key(key("a"))
                    .lock_ttl(Duration::from_millis(99)),
            ),
            (
                "lock_ttl",
                fleet()
                    .encryption_key(key("a"))
                    .lock_ttl(Duration::from_secs(601)),
            ),
            (
                "lock_wait",
                fleet()
                    .encryption_key(key("a"))
                    .lock_wait(Duration::from_secs(601)),
            ),
            (
                "circuit_breaker",
                fleet()
                    .encryption_key(key("a"))
                    .circuit_breaker(Duration::ZERO),
            ),
        ];
        for (reason, fleet) in bad {
            match runtime(fleet) {
                Err(ConfigError::InvalidFleet(why)) => assert!(why.contains(reason), "{why}"),
                other => panic!("{reason}: {other:?}"),
            }
        }
        // Rotation: the new key writes, both read.
        let rotated = runtime(
            fleet()
                .encryption_key(key("new"))
                .decryption_key(key("old")),
        )
        .unwrap();
        match &rotated.codec {
            Codec::Encrypted(keys) => {
                let ids: Vec<&str> = keys.iter().map(EncryptionKey::id).collect();
                assert_eq!(ids, ["new", "old"]);
            }
            Codec::Plaintext => panic!("encrypted"),
        }
    }

    #[test]
    fn keys_share_one_hash_tag_and_differ_by_scopes_and_namespace() {
        let plain = runtime(Fleet::new(Nowhere, "n").danger_store_plaintext()).unwrap();
        let named = runtime(
            Fleet::new(Nowhere, "n")
                .danger_store_plaintext()
                .namespace("prod"),
        )
        .unwrap();
        let a = plain.key(&Scopes::new(["a", "b"]));
        assert_eq!(
            a,
            plain.key(&Scopes::new(["b", "a"])),
            "scope order does not matter"
        );
        assert_ne!(a, plain.key(&Scopes::new(["a"])));
        let tag = a.token().strip_suffix(":token").unwrap();
        assert!(tag.starts_with("{cc:") && tag.ends_with('}') && tag.len() == "{cc:}".len() + 32);
        assert_eq!(a.lock(), format!("{tag}:lock"));
        assert_eq!(a.limit(), format!("{tag}:limit"));
        let n = named.key(&Scopes::new(["a", "b"]));
        assert!(n.token().starts_with("{cc:prod:"), "{n:?}");
        assert_ne!(
            &n.token()[9..],
            &a.token()[4..],
            "the namespace changes the hash too"
        );
    }

    #[cfg(feature = "redis")]
    #[test]
    fn a_redis_url_that_does_not_parse_is_a_config_error() {
        for url in ["http://x", "redis://[::1", "not a url"] {
            assert!(
                matches!(Fleet::redis(url), Err(ConfigError::InvalidFleet(_))),
                "{url}"
            );
        }
        let fleet = Fleet::redis("redis://user:pa55word@10.0.0.1:6380/2").unwrap();
        let shown = format!("{fleet:?}");
        assert!(
            shown.contains("10.0.0.1:6380") && !shown.contains("pa55word"),
            "{shown}"
        );
    }

    #[test]
    fn secrets_are_hashed_with_a_domain() {
        let hash = Identity::secret_hash("s3cret");
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains("s3cret"));
        assert_ne!(hash, Identity::secret_hash("s3cret2"));
    }
}
