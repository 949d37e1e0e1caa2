//! [`ClientCredentials`]: the shared handle the adapters and direct callers use.

use std::fmt;
use std::sync::Arc;

use http::HeaderValue;

use crate::cache::{Partitions, Shared};
use crate::config::builder::Custom;
use crate::config::url::Origin;
use crate::config::ClientCredentialsBuilder;
use crate::stats::Stats;
use crate::{AccessToken, Error, Scopes, TenantId, TokenSource};

/// OAuth 2.0 client credentials for the APIs a service calls: a token cache shared by every
/// clone, and the adapters that put its tokens on requests.
///
/// Cheap to clone (one `Arc`). Build it once with [`ClientCredentials::builder`] (or
/// [`from_env`](Self::from_env), or [`from_source`](Self::from_source) for a token source of
/// your own), then hand it to [`middleware`](Self::middleware) for `reqwest`,
/// [`layer`](Self::layer) for `tower`, or ask it for a token directly with
/// [`access_token`](Self::access_token).
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

impl AsRef<ClientCredentials> for ClientCredentials {
    fn as_ref(&self) -> &ClientCredentials {
        self
    }
}

pub(crate) struct Inner {
    pub(crate) partitions: Partitions,
    pub(crate) api: ApiPolicy,
    /// DPoP: the proof key and the nonces servers gave (shared with the token endpoint).
    #[cfg(feature = "jwt")]
    pub(crate) dpop: Option<Arc<crate::proof::Dpop>>,
}

/// What the adapters do with API requests and answers.
#[derive(Debug, Clone)]
pub(crate) struct ApiPolicy {
    pub(crate) tenant: Option<TenantId>,
    pub(crate) allowed_origins: Option<Vec<Origin>>,
    pub(crate) bare_401_rejects: bool,
}

impl fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cache = &self.inner.partitions.default;
        f.debug_struct("ClientCredentials")
            .field("endpoint", &cache.shared.endpoint)
            .field("scopes", &cache.scopes)
            .field("tenant_id", &self.inner.api.tenant)
            .field("cache", cache)
            .finish_non_exhaustive()
    }
}

impl ClientCredentials {
    /// A builder for tokens from a token endpoint; see [`ClientCredentialsBuilder`].
    pub fn builder() -> ClientCredentialsBuilder {
        ClientCredentialsBuilder::new()
    }

    /// A builder for tokens from your own [`TokenSource`] (a sidecar, a vault, a store in
    /// front of the endpoint). It has the cache and adapter settings only: the endpoint's
    /// (URL, id, secret, method) are the source's business.
    pub fn from_source(source: impl TokenSource) -> ClientCredentialsBuilder<Custom> {
        ClientCredentialsBuilder::with_source(source)
    }

    /// Builds from the `OAUTH_*` environment variables
    /// ([`ClientCredentialsBuilder::from_env`] lists them) with every other setting at its
    /// default.
    pub fn from_env() -> Result<Self, crate::ConfigError> {
        ClientCredentialsBuilder::from_env()?.build()
    }

    pub(crate) fn new(
        shared: Shared,
        scopes: Scopes,
        api: ApiPolicy,
        max_scope_sets: usize,
        #[cfg(feature = "jwt")] dpop: Option<Arc<crate::proof::Dpop>>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                partitions: Partitions::new(scopes, Arc::new(shared), max_scope_sets),
                api,
                #[cfg(feature = "jwt")]
                dpop,
            }),
        }
    }

    /// A usable access token for the configured scopes: the cached one, or a new one (fetched
    /// once however many callers ask at the same moment).
    ///
    /// For code that is not an HTTP middleware: a websocket handshake, a gRPC metadata map, a
    /// subprocess environment. The adapters call the same cache.
    pub async fn access_token(&self) -> Result<AccessToken, Error> {
        self.access_token_in(None).await
    }

    /// The `Authorization` header value (`Bearer <token>`, marked sensitive) of the cached
    /// token, if it is usable now: the lookup the adapters make on every request. No lock, no
    /// await, no allocation, and no clock read when the token was fetched on a multi-thread
    /// runtime (on a current-thread one, which may not be driven between calls, a hit compares
    /// the clock with the token's expiry). Starts a background refresh when one is due.
    /// `None` means the caller should await [`authorization`](Self::authorization).
    #[inline]
    pub fn cached_authorization(&self) -> Option<HeaderValue> {
        self.inner.partitions.default.cached().map(|c| c.header)
    }

    /// The `Authorization` header value for the configured scopes: a cache hit, or the result
    /// of the one fetch in flight.
    pub async fn authorization(&self) -> Result<HeaderValue, Error> {
        if let Some(header) = self.cached_authorization() {
            return Ok(header);
        }
        let cache = &self.inner.partitions.default;
        cache.entry().await.map(|e| e.header.clone())
    }

    /// Like [`access_token`](Self::access_token) for another scope set, which gets a cache of
    /// its own (see [`ClientCredentialsBuilder::max_scope_sets`]).
    pub async fn access_token_for(&self, scopes: &Scopes) -> Result<AccessToken, Error> {
        self.access_token_in(Some(scopes)).await
    }

    async fn access_token_in(&self, scopes: Option<&Scopes>) -> Result<AccessToken, Error> {
        let cache = self.inner.partitions.get(scopes);
        if let Some(entry) = cache
            .cached()
            .and_then(|hit| cache.current().filter(|e| e.gen == hit.gen))
        {
            return Ok(entry.token.clone());
        }
        cache.entry().await.map(|e| e.token.clone())
    }

    /// The cached token if it is usable now, without waiting or fetching. Never blocks; works
    /// outside any async runtime.
    pub fn cached_access_token(&self) -> Option<AccessToken> {
        self.inner
            .partitions
            .default
            .usable_now()
            .map(|e| e.token.clone())
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
                        .map_err(Error::from_source)?;
                    runtime.block_on(this.access_token())
                })
                .join()
                .unwrap_or(Err(Error::SourceAborted))
        })
    }

    /// Drops `token` from the cache if it is still the current one, and starts one new fetch,
    /// under the same limiter as the adapters (see
    /// [`forced_refresh_backoff`](ClientCredentialsBuilder::forced_refresh_backoff)). For code
    /// that saw the API reject a token outside the adapters. Returns whether a new token is
    /// coming (or already came).
    ///
    /// Code that also sees the API accept tokens should say so with
    /// [`accepted`](Self::accepted), so a later rejection of an accepted token is answered at
    /// once.
    pub fn invalidate(&self, token: &AccessToken) -> bool {
        let cache = &self.inner.partitions.default;
        match cache.current() {
            Some(entry) if entry.token == *token => {
                cache.invalidate(entry.gen) == crate::cache::Invalidation::Replaced
            }
            // Not the current token: already replaced.
            _ => true,
        }
    }

    /// The API accepted `token` (answered something that is not a token rejection): a later
    /// rejection of it is answered at once by a new token. For code outside the adapters, which
    /// mark this themselves. Cheap once a token is marked.
    pub fn accepted(&self, token: &AccessToken) {
        let cache = &self.inner.partitions.default;
        if let Some(entry) = cache.current().filter(|e| e.token == *token) {
            cache.mark_accepted(entry.gen);
        }
    }

    /// The headers a request your own code sends needs: `Authorization` (`Bearer <token>`, or
    /// `DPoP <token>` for a DPoP-bound token) and, for a DPoP-bound token, a `DPoP` proof made
    /// for `method` on `url` (with the nonce that origin gave last). For a websocket handshake,
    /// a gRPC call made by hand, any client without an adapter.
    ///
    /// Fails with the token's error, [`Error::DpopUrl`] for a URL without a scheme and a host,
    /// or [`Error::DpopKeyReplaced`] when the token was fetched with a DPoP key replaced since
    /// (it is dropped: the next call gets one bound to the new key).
    ///
    /// ```no_run
    /// # async fn run(credentials: client_credentials::ClientCredentials) -> Result<(), Box<dyn std::error::Error>> {
    /// let url = "https://api.example.com/v1/stream";
    /// let auth = credentials.request_authorization(&http::Method::GET, url).await?;
    /// let mut request = http::Request::get(url).body(())?;
    /// auth.apply_to(request.headers_mut());
    /// # Ok(()) }
    /// ```
    pub async fn request_authorization(
        &self,
        method: &http::Method,
        url: &str,
    ) -> Result<RequestAuthorization, Error> {
        let url = url::Url::parse(url).map_err(|_| Error::DpopUrl)?;
        let cache = &self.inner.partitions.default;
        let entry = cache.entry().await?;
        #[cfg(feature = "jwt")]
        if let (Some(dpop), crate::source::TokenType::Dpop) = (&self.inner.dpop, entry_type(&entry))
        {
            let htu = crate::proof::htu_of_url(&url).ok_or(Error::DpopUrl)?;
            let origin = crate::config::url::Origin::from_parts(
                Some(url.scheme()),
                url.host_str(),
                url.port(),
            );
            // A token fetched with a key replaced since cannot be proved with the new one: as
            // in the adapters, it is dropped and this call fails without a proof.
            if dpop.is_bound_elsewhere(&entry) {
                cache.drop_token(entry.gen);
                return Err(Error::DpopKeyReplaced);
            }
            let ath = match &entry.ath {
                Some(ath) => Arc::clone(ath),
                None => Arc::from(crate::proof::ath(entry.token.secret())),
            };
            let proof = dpop.proof(method, &htu, Some(&ath), origin.as_ref())?;
            return Ok(RequestAuthorization {
                authorization: entry.header.clone(),
                dpop: Some(proof),
            });
        }
        let _ = (method, url);
        Ok(RequestAuthorization {
            authorization: entry.header.clone(),
            dpop: None,
        })
    }

    /// Replaces the DPoP key (a rotation): tokens bound to the old key are dropped, and the
    /// next request fetches one bound to the new key. [`ConfigError::OutOfRange`](crate::ConfigError::OutOfRange) when DPoP is
    /// not configured; [`ConfigError::InvalidKey`](crate::ConfigError::InvalidKey) for an `RS256` key (DPoP proofs use ES256,
    /// EdDSA or PS256).
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn set_dpop_key(&self, key: crate::SigningKey) -> Result<(), crate::ConfigError> {
        let dpop = self
            .inner
            .dpop
            .as_ref()
            .ok_or(crate::ConfigError::OutOfRange(
                "set_dpop_key needs DPoP configured on the builder",
            ))?;
        if key.algorithm() == crate::JwsAlgorithm::Rs256 {
            return Err(crate::ConfigError::InvalidKey(
                "DPoP proofs are signed with ES256, EdDSA or PS256".to_owned(),
            ));
        }
        let jkt = dpop.set_key(key);
        for cache in self.inner.partitions.all() {
            if let Some(entry) = cache.current().filter(|e| dpop.is_bound_elsewhere(e)) {
                cache.drop_token(entry.gen);
            }
        }
        tracing::info!(thumbprint = %jkt, "DPoP key replaced; tokens bound to the old one dropped");
        Ok(())
    }

    /// The RFC 7638 thumbprint of the DPoP key (what the server puts in a bound token's
    /// `cnf.jkt`), when DPoP is configured.
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn dpop_thumbprint(&self) -> Option<String> {
        self.inner.dpop.as_ref().map(|d| d.thumbprint().to_string())
    }

    /// The DPoP key, when DPoP is configured.
    #[cfg(feature = "jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
    pub fn dpop_key(&self) -> Option<crate::SigningKey> {
        self.inner.dpop.as_ref().map(|d| d.key())
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.inner.partitions.default.shared.counters.snapshot()
    }
}

/// How a cached entry's token is presented.
#[cfg(feature = "jwt")]
fn entry_type(entry: &crate::cache::Entry) -> crate::source::TokenType {
    if entry.header.as_bytes().starts_with(b"DPoP ") {
        crate::source::TokenType::Dpop
    } else {
        crate::source::TokenType::Bearer
    }
}

/// The headers of a request sent by your own code (see
/// [`ClientCredentials::request_authorization`]). `Debug` hides their values.
#[derive(Clone)]
#[non_exhaustive]
pub struct RequestAuthorization {
    /// `Bearer <token>` or `DPoP <token>`, marked sensitive.
    pub authorization: HeaderValue,
    /// The `DPoP` proof, for a DPoP-bound token.
    pub dpop: Option<HeaderValue>,
}

impl RequestAuthorization {
    /// Puts both headers on a request's header map.
    pub fn apply_to(&self, headers: &mut http::HeaderMap) {
        headers.insert(http::header::AUTHORIZATION, self.authorization.clone());
        if let Some(proof) = &self.dpop {
            headers.insert(http::HeaderName::from_static("dpop"), proof.clone());
        }
    }
}

impl fmt::Debug for RequestAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestAuthorization")
            .field("authorization", &"[redacted]")
            .field("dpop", &self.dpop.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}
