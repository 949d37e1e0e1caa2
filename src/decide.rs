//! Every per-request decision, in one place that knows nothing of reqwest or tower: whether a
//! request gets a token, which one, which headers, whether the answer means the token was
//! rejected, and whether to send the request again.
//!
//! An adapter drives an [`Exchange`] through the same steps and only moves requests, responses
//! and bodies:
//!
//! 1. [`Exchange::begin`]: `None` means the request goes out untouched.
//! 2. [`Exchange::authorization_now`] (the lock-free hit), else await
//!    [`Exchange::authorization`] (a boxed future, built only on a miss).
//! 3. [`Exchange::apply`] puts the headers on the request; [`Exchange::wants_copy`] says
//!    whether to keep a copy for a replay.
//! 4. [`Exchange::inspect`] reads the answer's status and headers: pass it on, read the body
//!    first ([`Exchange::inspect_body`]), or replay.
//! 5. To replay, await [`Exchange::replacement`] (the rejected token dropped, the new one
//!    returned) and go back to step 3 with the copy; a second answer is only inspected for what
//!    it says about the token, and passed on.
// Without an adapter feature, only `RequestOptions`, `TenantId` and the tenant header are used.
#![cfg_attr(
    not(any(feature = "reqwest-middleware", feature = "tower")),
    allow(dead_code)
)]

use std::sync::Arc;

use http::header::{HeaderName, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use url::Url;

use crate::cache::{Credential, TokenCache};
use crate::challenge::{
    classify, classify_headers, is_grpc_unauthenticated, may_be_rejection, Rejection,
};
use crate::config::url::Origin;
use crate::{BoxFuture, ClientCredentials, ConfigError, Error, Scopes};

/// The `X-Tenant-Id` header.
pub const X_TENANT_ID: HeaderName = HeaderName::from_static("x-tenant-id");

/// A tenant id, sent as [`X_TENANT_ID`]: a valid, non-empty header value.
///
/// Both [`ClientCredentialsBuilder::tenant_id`](crate::ClientCredentialsBuilder::tenant_id) and
/// [`RequestOptions::tenant_id`] take one.
///
/// ```
/// use client_credentials::TenantId;
///
/// let acme: TenantId = "acme".parse()?;
/// assert_eq!(acme.as_str(), "acme");
/// assert!(TenantId::new("line\nbreak").is_err());
/// assert!(TenantId::new("").is_err());
/// let static_one = TenantId::from_static("acme");
/// assert_eq!(static_one, acme);
/// # Ok::<(), client_credentials::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantId(HeaderValue);

impl TenantId {
    /// A tenant id; [`ConfigError::InvalidTenantId`] unless it is a non-empty string of
    /// visible ASCII and spaces.
    pub fn new(tenant: impl AsRef<str>) -> Result<Self, ConfigError> {
        let tenant = tenant.as_ref();
        if tenant.is_empty() || !tenant.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
            return Err(ConfigError::InvalidTenantId);
        }
        HeaderValue::from_str(tenant)
            .map(Self)
            .map_err(|_| ConfigError::InvalidTenantId)
    }

    /// A tenant id known when compiling.
    ///
    /// # Panics
    ///
    /// If `tenant` is empty or not visible ASCII and spaces, like `HeaderValue::from_static`.
    pub const fn from_static(tenant: &'static str) -> Self {
        assert!(!tenant.is_empty(), "a tenant id must not be empty");
        Self(HeaderValue::from_static(tenant))
    }

    /// The tenant id.
    pub fn as_str(&self) -> &str {
        // Checked visible ASCII on construction.
        self.0.to_str().unwrap_or_default()
    }

    pub(crate) fn header(&self) -> &HeaderValue {
        &self.0
    }
}

impl std::str::FromStr for TenantId {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// Per-request settings for the adapters, carried in the request's extensions.
///
/// With reqwest-middleware: `client.get(url).with_extension(options)`. With tower: put it in
/// `http::Request::extensions_mut()`.
///
/// ```
/// use client_credentials::{RequestOptions, TenantId};
///
/// // A payment call: never sent twice, for one tenant, with a narrower scope.
/// let options = RequestOptions::new()
///     .no_replay()
///     .tenant_id(TenantId::from_static("acme"))
///     .scopes("payments.write");
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct RequestOptions {
    tenant_id: Option<TenantId>,
    unauthenticated: bool,
    no_replay: bool,
    scopes: Option<Scopes>,
}

impl RequestOptions {
    /// Options that change nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends this `X-Tenant-Id` instead of the configured one (default: the configured one).
    /// A header set on the request itself wins over both.
    pub fn tenant_id(mut self, tenant: TenantId) -> Self {
        self.tenant_id = Some(tenant);
        self
    }

    /// Sends this request without a token or tenant header (default: with).
    pub fn unauthenticated(mut self) -> Self {
        self.unauthenticated = true;
        self
    }

    /// Never sends this request a second time, even after the API rejected its token
    /// (default: replayed once with a new token). For calls with side effects that must not
    /// run twice.
    pub fn no_replay(mut self) -> Self {
        self.no_replay = true;
        self
    }

    /// Uses a token for these scopes instead of the configured ones (replaces them). Each scope
    /// set gets its own cache, with the same single flight and refresh (bounded by
    /// [`max_scope_sets`](crate::ClientCredentialsBuilder::max_scope_sets)).
    pub fn scopes(mut self, scopes: impl Into<Scopes>) -> Self {
        self.scopes = Some(scopes.into());
        self
    }
}

/// Where a request goes. Read only when a decision needs it (parsing a `Uri`'s authority costs
/// more than the whole cache hit).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    #[cfg_attr(not(feature = "reqwest-middleware"), allow(dead_code))]
    Url(&'a Url),
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    Uri(&'a Uri),
}

impl<'a> Target<'a> {
    /// A reqwest request's URL.
    #[cfg_attr(not(feature = "reqwest-middleware"), allow(dead_code))]
    pub(crate) fn url(url: &'a Url) -> Self {
        Self::Url(url)
    }

    /// An `http::Request`'s URI.
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn uri(uri: &'a Uri) -> Self {
        Self::Uri(uri)
    }

    fn origin(&self) -> Option<Origin> {
        match self {
            Self::Url(url) => Origin::from_parts(Some(url.scheme()), url.host_str(), url.port()),
            Self::Uri(uri) => Origin::from_parts(uri.scheme_str(), uri.host(), uri.port_u16()),
        }
    }

    /// The URL a DPoP proof names (`htu`).
    #[cfg(feature = "jwt")]
    fn htu(&self) -> Option<std::borrow::Cow<'_, str>> {
        match self {
            Self::Url(url) => crate::proof::htu_of_url(url),
            Self::Uri(uri) => crate::proof::htu_of_uri(uri),
        }
    }
}

/// What the decisions need of a request's headers, read in one pass (two map lookups cost as
/// much as the cache hit): whether it has an `Authorization` header of its own, and whether it
/// is a gRPC call.
#[inline]
fn read_headers(headers: &HeaderMap) -> (bool, bool) {
    // A walk over the names is a slice walk; `iter()` (names and values) costs three times as
    // much, so the content type's value is looked up only when there is one.
    let (mut authorization, mut content_type) = (false, false);
    for name in headers.keys() {
        if *name == AUTHORIZATION {
            authorization = true;
        } else if *name == CONTENT_TYPE {
            content_type = true;
        }
    }
    let grpc = content_type
        && headers
            .get(CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
    (authorization, grpc)
}

/// What the adapter does with an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Give it to the caller as it is.
    PassOn,
    /// The headers do not settle it: read up to
    /// [`MAX_INSPECTED_BODY`](crate::challenge::MAX_INSPECTED_BODY) bytes of the body and call
    /// [`Exchange::inspect_body`].
    ReadBody,
    /// The token was rejected and a new one may fix it: await [`Exchange::replacement`] and
    /// send the copy.
    Replay,
}

/// One request's way through the decisions (see the module docs for the steps).
///
/// `C` is how the exchange holds the credentials: borrowed by an adapter whose call borrows
/// them (reqwest-middleware), owned by one whose future must own them (tower).
pub(crate) struct Exchange<C> {
    credentials: C,
    /// The cache of the request's scope set, when not the configured one.
    other: Option<Arc<TokenCache>>,
    /// The request's own tenant, when its options name one (else the configured one).
    tenant: Option<HeaderValue>,
    may_replay: bool,
    /// A gRPC call: answered 200 with `grpc-status`, never replayed.
    grpc: bool,
    /// The generation of the token last sent.
    sent: u64,
    replayed: bool,
    /// A request with a DPoP-bound token: its origin (whose nonces it uses), the credential
    /// sent, and whether a replay keeps it (the API asked for a proof with its nonce).
    #[cfg(feature = "jwt")]
    dpop: Option<DpopRequest>,
}

#[cfg(feature = "jwt")]
struct DpopRequest {
    origin: Option<Origin>,
    sent: Credential,
    fresh_nonce: bool,
    same_token: bool,
}

impl<C: AsRef<ClientCredentials>> Exchange<C> {
    /// The decisions for one request; `None` when it goes out untouched: another origin
    /// than the allowed ones, an `Authorization` header of its own, or
    /// [`RequestOptions::unauthenticated`].
    #[inline]
    pub(crate) fn begin(
        credentials: C,
        target: Target<'_>,
        headers: &HeaderMap,
        options: Option<&RequestOptions>,
    ) -> Option<Self> {
        let (has_authorization, grpc) = read_headers(headers);
        if has_authorization {
            return None;
        }
        if let Some(allowed) = &credentials.as_ref().inner.api.allowed_origins {
            if !target.origin().is_some_and(|o| allowed.contains(&o)) {
                return None;
            }
        }
        let exchange = Self {
            credentials,
            other: None,
            tenant: None,
            // gRPC bodies are streams and gRPC answers 200 with a status of its own: never
            // replayed.
            may_replay: !grpc,
            grpc,
            sent: 0,
            replayed: false,
            #[cfg(feature = "jwt")]
            dpop: None,
        };
        match options {
            None => Some(exchange),
            Some(options) => exchange.with_options(options),
        }
    }

    /// What a request's [`RequestOptions`] change; `None` when it goes out untouched.
    #[cold]
    fn with_options(mut self, options: &RequestOptions) -> Option<Self> {
        if options.unauthenticated {
            return None;
        }
        self.tenant = options.tenant_id.as_ref().map(|t| t.header().clone());
        self.other = options
            .scopes
            .as_ref()
            .and_then(|s| self.credentials.as_ref().inner.partitions.other(s));
        self.may_replay &= !options.no_replay;
        Some(self)
    }

    #[inline]
    fn cache(&self) -> &Arc<TokenCache> {
        match &self.other {
            Some(cache) => cache,
            None => &self.credentials.as_ref().inner.partitions.default,
        }
    }

    /// The cached token, if usable now: the lock-free hit.
    #[inline]
    pub(crate) fn authorization_now(&self) -> Option<Credential> {
        self.cache().cached()
    }

    /// A usable token: the one fetch in flight or started now. Boxed, so the future is only
    /// built (and allocated) on a miss.
    pub(crate) fn authorization(&self) -> BoxFuture<'static, Result<Credential, Error>> {
        let cache = Arc::clone(self.cache());
        Box::pin(async move { cache.entry().await.map(|e| e.credential()) })
    }

    /// The DPoP proof a request with `credential` needs, if its token is DPoP-bound: made for
    /// `method` on `target`, with the nonce its origin gave last. `None` for a Bearer token.
    /// Asked before [`apply`](Self::apply), for the first send and for a replay alike (a
    /// replay carries a new proof).
    #[inline]
    pub(crate) fn proof(
        &mut self,
        credential: &Credential,
        method: &Method,
        target: Target<'_>,
    ) -> Result<Option<HeaderValue>, Error> {
        #[cfg(feature = "jwt")]
        if let Some(dpop) = self.credentials.as_ref().inner.dpop.clone() {
            return self.dpop_proof(&dpop, credential, method, target);
        }
        let _ = (credential, method, target);
        Ok(None)
    }

    #[cfg(feature = "jwt")]
    #[cold]
    fn dpop_proof(
        &mut self,
        dpop: &crate::proof::Dpop,
        credential: &Credential,
        method: &Method,
        target: Target<'_>,
    ) -> Result<Option<HeaderValue>, Error> {
        let Some(token) = credential.header.as_bytes().strip_prefix(b"DPoP ") else {
            return Ok(None); // a Bearer token (DPoP not required, and not granted)
        };
        // A token bound to a key that was replaced since (its fetch raced the replacement)
        // cannot be proved: drop it so the next request gets one bound to the current key.
        let cache = self.cache();
        let entry = cache.current().filter(|e| e.gen == credential.gen);
        if let Some(entry) = entry.as_ref().filter(|e| dpop.is_bound_elsewhere(e)) {
            cache.drop_token(entry.gen);
            return Err(Error::DpopKeyReplaced);
        }
        // The token's hash, computed once per token; hashed here only for a token the cache
        // replaced while this request was being authorized.
        let ath = match entry.as_ref().and_then(|e| e.ath.clone()) {
            Some(ath) => ath,
            None => Arc::from(crate::proof::ath(
                std::str::from_utf8(token).map_err(|_| Error::Signing)?,
            )),
        };
        let htu = target.htu().ok_or(Error::DpopUrl)?;
        let origin = target.origin();
        let proof = dpop.proof(method, &htu, Some(&ath), origin.as_ref())?;
        self.dpop = Some(DpopRequest {
            origin,
            sent: credential.clone(),
            fresh_nonce: false,
            same_token: false,
        });
        Ok(Some(proof))
    }

    /// Puts the token, its DPoP proof if it has one, and the tenant (unless the request has
    /// one) on a request.
    pub(crate) fn apply(
        &mut self,
        credential: Credential,
        proof: Option<HeaderValue>,
        headers: &mut HeaderMap,
    ) {
        self.sent = credential.gen;
        headers.insert(AUTHORIZATION, credential.header);
        #[cfg(feature = "jwt")]
        if let Some(proof) = proof {
            headers.insert(crate::proof::DPOP, proof);
        }
        #[cfg(not(feature = "jwt"))]
        let _ = proof;
        let configured = &self.credentials.as_ref().inner.api.tenant;
        if let Some(tenant) = self
            .tenant
            .as_ref()
            .or(configured.as_ref().map(TenantId::header))
        {
            if !headers.contains_key(&X_TENANT_ID) {
                headers.insert(X_TENANT_ID, tenant.clone());
            }
        }
    }

    /// Whether to keep a copy of the request for a replay (asked before sending it).
    pub(crate) fn wants_copy(&self) -> bool {
        self.may_replay && !self.replayed
    }

    /// What an answer's status and headers say. `has_copy`: whether the adapter could send
    /// the request again. Every answer that is not a token rejection marks the token accepted
    /// (one relaxed load once it is marked).
    #[inline]
    pub(crate) fn inspect(
        &mut self,
        status: StatusCode,
        headers: &HeaderMap,
        has_copy: bool,
    ) -> Verdict {
        #[cfg(feature = "jwt")]
        if self.dpop.is_some() {
            self.remember_nonce(headers);
        }
        if !may_be_rejection(status) {
            self.cache().mark_accepted(self.sent);
            return Verdict::PassOn;
        }
        let can_replay = has_copy && !self.replayed;
        match classify_headers(status, headers) {
            Some(rejection) => self.decide(&rejection, can_replay),
            // A 401 whose challenges carry no code: the body decides, if it can be read (a
            // request that cannot be replayed passes its answer on untouched).
            None if can_replay => Verdict::ReadBody,
            None => Verdict::PassOn,
        }
    }

    /// What an answer says once its body (up to the inspected limit; `None` if longer or
    /// unreadable) is known. Only after [`Verdict::ReadBody`].
    pub(crate) fn inspect_body(
        &mut self,
        status: StatusCode,
        headers: &HeaderMap,
        body: Option<&[u8]>,
    ) -> Verdict {
        self.decide(&classify(status, headers, body), true)
    }

    /// A `DPoP-Nonce` on an answer to a DPoP request: remembered for its origin (whether or
    /// not the request is replayed).
    #[cfg(feature = "jwt")]
    #[cold]
    fn remember_nonce(&mut self, headers: &HeaderMap) {
        let Some(dpop) = self.credentials.as_ref().inner.dpop.clone() else {
            return;
        };
        let Some(request) = &mut self.dpop else {
            return;
        };
        if let Some(origin) = &request.origin {
            request.fresh_nonce = dpop.remember_nonce(origin, headers);
        }
    }

    /// The rule applied: a rejection a new token may fix is replayed when possible, or at
    /// least drops the token; anything else marks the token accepted.
    fn decide(&mut self, rejection: &Rejection, can_replay: bool) -> Verdict {
        let bare_401_rejects = self.bare_401_rejects();
        if rejection.accepts_token(bare_401_rejects) {
            self.cache().mark_accepted(self.sent);
        }
        #[cfg(feature = "jwt")]
        if *rejection == Rejection::UseDpopNonce {
            // The same token, a new proof with the nonce the answer gave: once.
            return match &mut self.dpop {
                Some(request) if can_replay && request.fresh_nonce => {
                    request.same_token = true;
                    Verdict::Replay
                }
                _ => Verdict::PassOn,
            };
        }
        if !rejection.warrants_new_token(bare_401_rejects) {
            return Verdict::PassOn;
        }
        if can_replay {
            return Verdict::Replay;
        }
        // Not replayed (a body that cannot be copied, `no_replay`, or already the second
        // send): the token is still dropped so the next request gets a fresh one.
        self.reject_sent();
        Verdict::PassOn
    }

    /// After [`Verdict::Replay`]: drops the rejected token (if still current) and returns the
    /// token to send the copy with, or `None` when there is none to be had (the caller then
    /// gets the answer as it is).
    pub(crate) fn replacement(&mut self) -> BoxFuture<'static, Option<Credential>> {
        self.replayed = true;
        let cache = Arc::clone(self.cache());
        let sent = self.sent;
        #[cfg(feature = "jwt")]
        if let Some(request) = self.dpop.as_ref().filter(|r| r.same_token) {
            let same = request.sent.clone();
            cache
                .shared
                .counters
                .replayed_requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(
                endpoint = %cache.shared.endpoint,
                "replaying once with the same token and a DPoP proof carrying the API's nonce"
            );
            return Box::pin(std::future::ready(Some(same)));
        }
        Box::pin(async move {
            if cache.invalidate(sent) == crate::cache::Invalidation::Limited {
                return None;
            }
            match cache.entry().await {
                Ok(entry) if entry.gen != sent => {
                    cache
                        .shared
                        .counters
                        .replayed_requests
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!(
                        endpoint = %cache.shared.endpoint,
                        "replaying the rejected request once with a new token"
                    );
                    Some(entry.credential())
                }
                Ok(_) => None,
                Err(error) => {
                    tracing::warn!(
                        endpoint = %cache.shared.endpoint,
                        error = %error,
                        "no new token after a rejection; returning the answer as it is"
                    );
                    None
                }
            }
        })
    }

    /// The token sent was rejected without a replay (gRPC's `UNAUTHENTICATED`, or a 401 that
    /// is passed on): drop it if still current.
    pub(crate) fn reject_sent(&self) {
        let _ = self.cache().invalidate(self.sent);
    }

    /// For a gRPC call (never replayed: its body is a stream): `None` for other requests;
    /// otherwise drops the token when the headers carry `UNAUTHENTICATED` (a trailers-only
    /// answer), and returns the watch for the trailers.
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    pub(crate) fn grpc_watch(&self, headers: &HeaderMap) -> Option<Rejector> {
        if !self.grpc {
            return None;
        }
        if is_grpc_unauthenticated(headers) {
            self.reject_sent();
        }
        Some(Rejector {
            cache: Arc::clone(self.cache()),
            gen: self.sent,
        })
    }

    fn bare_401_rejects(&self) -> bool {
        self.credentials.as_ref().inner.api.bare_401_rejects
    }
}

/// Watches what comes after an answer's headers (gRPC trailers) for a rejection of the token
/// the request carried (see [`Exchange::grpc_watch`]).
#[cfg_attr(not(feature = "tower"), allow(dead_code))]
pub(crate) struct Rejector {
    cache: Arc<TokenCache>,
    gen: u64,
}

#[cfg_attr(not(feature = "tower"), allow(dead_code))]
impl Rejector {
    /// `grpc-status: 16` in the trailers drops the token, if still current; any other status
    /// marks it accepted.
    pub(crate) fn inspect_trailers(&self, trailers: &HeaderMap) {
        if is_grpc_unauthenticated(trailers) {
            tracing::info!(
                endpoint = %self.cache.shared.endpoint,
                "gRPC UNAUTHENTICATED in trailers; dropping the token"
            );
            let _ = self.cache.invalidate(self.gen);
        } else if trailers.contains_key("grpc-status") {
            self.cache.mark_accepted(self.gen);
        }
    }
}
