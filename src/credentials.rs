//! [`ClientCredentials`]: the shared handle the adapters and direct callers use.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use http::HeaderValue;

use crate::cache::TokenCache;
use crate::config::ClientCredentialsBuilder;
use crate::policy::CachePolicy;
use crate::source::{Scopes, TokenSource};
use crate::stats::{Counters, Stats};
use crate::{AccessToken, Error};

/// OAuth 2.0 client credentials for the APIs a service calls: a token cache shared by every
/// clone, and the adapters that put its tokens on requests.
///
/// Cheap to clone (one `Arc`). Build it once with [`ClientCredentials::builder`] (or
/// [`from_env`](Self::from_env)), then hand it to
/// [`middleware`](Self::middleware) for `reqwest`, [`layer`](Self::layer) for `tower`, or ask
/// it for a token directly with [`access_token`](Self::access_token).
///
/// # Example
///
/// ```no_run
/// use client_credentials::ClientCredentials;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let credentials = ClientCredentials::from_env()?; // OAUTH_TOKEN_URL, OAUTH_CLIENT_ID, ...
/// let token = credentials.access_token().await?;
/// // e.g. a websocket handshake:
/// let header = format!("Bearer {}", token.secret());
/// # let _ = header;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ClientCredentials {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) default: Arc<TokenCache>,
    scoped: ScopedCaches,
    pub(crate) api: ApiPolicy,
    counters: Arc<Counters>,
    label: Option<String>,
}

/// What the adapters do with API requests and answers.
#[derive(Debug, Clone)]
pub(crate) struct ApiPolicy {
    pub(crate) tenant: Option<HeaderValue>,
    pub(crate) allowed_origins: Option<Vec<Origin>>,
    pub(crate) retry_bare_401: bool,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentials")
            .field(
                "endpoint",
                &self.inner.label.as_deref().unwrap_or("custom source"),
            )
            .field("scopes", &self.inner.default.scopes)
            .field("tenant_id", &self.inner.api.tenant)
            .field("cache", &self.inner.default)
            .finish_non_exhaustive()
    }
}

impl ClientCredentials {
    /// A builder; see [`ClientCredentialsBuilder`].
    pub fn builder() -> ClientCredentialsBuilder {
        ClientCredentialsBuilder::new()
    }

    /// Builds from the `OAUTH_*` environment variables
    /// ([`ClientCredentialsBuilder::from_env`] lists them) with every other setting at its
    /// default.
    pub fn from_env() -> Result<Self, crate::ConfigError> {
        ClientCredentialsBuilder::from_env()?.build()
    }

    pub(crate) fn new(
        source: Arc<dyn TokenSource>,
        scopes: Scopes,
        policy: Arc<CachePolicy>,
        api: ApiPolicy,
        endpoint_host: Arc<str>,
        label: Option<String>,
        max_scope_sets: usize,
    ) -> Self {
        let counters = Arc::new(Counters::default());
        let default = Arc::new(TokenCache::new(
            Arc::clone(&source),
            scopes,
            Arc::clone(&policy),
            Arc::clone(&counters),
            Arc::clone(&endpoint_host),
        ));
        Self {
            inner: Arc::new(Inner {
                default,
                scoped: ScopedCaches {
                    caches: ArcSwap::from_pointee(Vec::new()),
                    insert: Mutex::new(()),
                    max: max_scope_sets,
                    source,
                    policy,
                    endpoint_host,
                },
                api,
                counters,
                label,
            }),
        }
    }

    /// A usable access token for the configured scopes: the cached one, or a new one (fetched
    /// once however many callers ask at the same moment).
    ///
    /// For code that is not an HTTP middleware: a websocket handshake, a gRPC metadata map, a
    /// subprocess environment. The adapters call the same cache.
    pub async fn access_token(&self) -> Result<AccessToken, Error> {
        self.inner.default.access_token().await
    }

    /// The `Authorization` header value (`Bearer <token>`, marked sensitive) of the cached
    /// token, if it is usable now: the lookup the adapters make on every request. No lock, no
    /// await, no allocation, and no clock read when the token was fetched on a multi-thread
    /// runtime (on a current-thread one, which may not be driven between calls, a hit compares
    /// the clock with the token's expiry). Starts a background refresh when one is due.
    /// `None` means the caller should await [`authorization`](Self::authorization).
    #[inline]
    pub fn cached_authorization(&self) -> Option<HeaderValue> {
        self.inner.default.cached_header()
    }

    /// The `Authorization` header value for the configured scopes: a cache hit, or the result
    /// of the one fetch in flight.
    pub async fn authorization(&self) -> Result<HeaderValue, Error> {
        self.inner.default.header().await
    }

    /// Like [`access_token`](Self::access_token) for another scope set, which gets a cache of
    /// its own (see [`ClientCredentialsBuilder::max_scope_sets`]).
    pub async fn access_token_for(&self, scopes: &Scopes) -> Result<AccessToken, Error> {
        self.cache_for(Some(scopes)).access_token().await
    }

    /// The cached token if it is usable now, without waiting or fetching. Never blocks; works
    /// outside any async runtime.
    pub fn cached_access_token(&self) -> Option<AccessToken> {
        self.inner.default.try_access_token()
    }

    /// A usable access token, for synchronous code: the cached one, or one fetched on a
    /// short-lived runtime on a helper thread (so it also works when called from inside an
    /// async runtime, though it blocks that thread while it waits).
    ///
    /// ```no_run
    /// # fn run(credentials: client_credentials::ClientCredentials) -> Result<(), Box<dyn std::error::Error>> {
    /// let token = credentials.blocking_access_token()?;
    /// std::process::Command::new("partner-cli")
    ///     .env("PARTNER_TOKEN", token.secret())
    ///     .status()?;
    /// # Ok(()) }
    /// ```
    pub fn blocking_access_token(&self) -> Result<AccessToken, Error> {
        if let Some(token) = self.cached_access_token() {
            return Ok(token);
        }
        let this = self.clone();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(Error::source)?;
                    runtime.block_on(this.access_token())
                })
                .join()
                .unwrap_or(Err(Error::SourceAborted))
        })
    }

    /// Drops `token` from the cache if it is still the current one, and starts one new fetch
    /// (at most one per [forced refresh interval](ClientCredentialsBuilder::forced_refresh_interval)).
    /// For code that saw the API reject a token outside the adapters. Returns whether a new
    /// token is coming (or already came).
    pub fn invalidate(&self, token: &AccessToken) -> bool {
        let Ok(mut header) = HeaderValue::try_from(format!("Bearer {}", token.secret())) else {
            return false;
        };
        header.set_sensitive(true);
        self.inner.default.invalidate(&header)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot()
    }

    /// The cache for a request: the default one, or the one of the scopes it asks for.
    pub(crate) fn cache_for(&self, scopes: Option<&Scopes>) -> Arc<TokenCache> {
        match scopes {
            Some(s) if *s != self.inner.default.scopes => {
                self.inner.scoped.get(s, &self.inner.counters)
            }
            _ => Arc::clone(&self.inner.default),
        }
    }

    /// Whether requests to this URI get a token (the allowed-origins rule).
    pub(crate) fn applies_to(
        &self,
        scheme: Option<&str>,
        host: Option<&str>,
        port: Option<u16>,
    ) -> bool {
        match &self.inner.api.allowed_origins {
            None => true,
            Some(list) => {
                let Some(origin) = Origin::from_parts(scheme, host, port) else {
                    return false;
                };
                list.contains(&origin)
            }
        }
    }
}

/// The caches of scope sets other than the configured one: a copy-on-write list, so a lookup
/// takes no lock.
struct ScopedCaches {
    caches: ArcSwap<Vec<Arc<TokenCache>>>,
    insert: Mutex<()>,
    max: usize,
    source: Arc<dyn TokenSource>,
    policy: Arc<CachePolicy>,
    endpoint_host: Arc<str>,
}

impl ScopedCaches {
    fn get(&self, scopes: &Scopes, counters: &Arc<Counters>) -> Arc<TokenCache> {
        if let Some(found) = self.caches.load().iter().find(|c| c.scopes == *scopes) {
            return Arc::clone(found);
        }
        let _guard = self.insert.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.caches.load_full();
        if let Some(found) = current.iter().find(|c| c.scopes == *scopes) {
            return Arc::clone(found);
        }
        let cache = Arc::new(TokenCache::new(
            Arc::clone(&self.source),
            scopes.clone(),
            Arc::clone(&self.policy),
            Arc::clone(counters),
            Arc::clone(&self.endpoint_host),
        ));
        let mut next: Vec<Arc<TokenCache>> = current.iter().cloned().collect();
        if self.max == 0 {
            // No room: a cache used for this request only.
            return cache;
        }
        while next.len() >= self.max {
            let evicted = next.remove(0);
            tracing::debug!(scopes = %evicted.scopes, "scope-set cache bound reached; dropping the oldest");
        }
        next.push(Arc::clone(&cache));
        self.caches.store(Arc::new(next));
        cache
    }
}

/// A request origin: scheme, host and port (the scheme's default when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let url = url::Url::parse(s).ok()?;
        if !matches!(url.path(), "" | "/") || url.query().is_some() {
            return None;
        }
        Self::from_parts(Some(url.scheme()), url.host_str(), url.port())
    }

    pub(crate) fn from_parts(
        scheme: Option<&str>,
        host: Option<&str>,
        port: Option<u16>,
    ) -> Option<Self> {
        let scheme = scheme?.to_ascii_lowercase();
        let port = match (port, scheme.as_str()) {
            (Some(p), _) => p,
            (None, "https") => 443,
            (None, "http") => 80,
            _ => return None,
        };
        let host = host?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        Some(Self { scheme, host, port })
    }
}
