//! What both adapters do with a request: whether it gets a token, which one, the headers, and
//! the 401 rule. The adapters only move requests and responses.
#![cfg_attr(
    not(any(feature = "reqwest-middleware", feature = "tower")),
    allow(dead_code)
)]

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::header::{HeaderName, AUTHORIZATION};
use http::{HeaderMap, HeaderValue};

use crate::cache::TokenCache;
use crate::challenge::Rejection;
use crate::source::Scopes;
use crate::{ClientCredentials, Error};

/// The `X-Tenant-Id` header.
pub const X_TENANT_ID: HeaderName = HeaderName::from_static("x-tenant-id");

/// Per-request settings for the adapters, carried in the request's extensions.
///
/// With reqwest-middleware: `client.get(url).with_extension(options)`. With tower: put it in
/// `http::Request::extensions_mut()`.
///
/// ```
/// use client_credentials::{RequestOptions, Scopes};
/// use http::HeaderValue;
///
/// // A payment call: never sent twice, for one tenant, with a narrower scope.
/// let options = RequestOptions::new()
///     .no_retry()
///     .tenant_id(HeaderValue::from_static("acme"))
///     .scopes(Scopes::new(["payments.write"]));
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct RequestOptions {
    pub(crate) tenant_id: Option<HeaderValue>,
    pub(crate) unauthenticated: bool,
    pub(crate) no_retry: bool,
    pub(crate) scopes: Option<Scopes>,
}

impl RequestOptions {
    /// Options that change nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends this `X-Tenant-Id` instead of the configured one (default: the configured one).
    pub fn tenant_id(mut self, tenant: HeaderValue) -> Self {
        self.tenant_id = Some(tenant);
        self
    }

    /// Sends this request without a token or tenant header (default: with).
    pub fn unauthenticated(mut self) -> Self {
        self.unauthenticated = true;
        self
    }

    /// Never sends this request a second time, even after a 401 `invalid_token` (default:
    /// retried once). For calls with side effects that must not run twice.
    pub fn no_retry(mut self) -> Self {
        self.no_retry = true;
        self
    }

    /// Uses a token for these scopes instead of the configured ones. Each scope set gets its
    /// own cache, with the same single flight and refresh (bounded by
    /// [`max_scope_sets`](crate::ClientCredentialsBuilder::max_scope_sets)).
    pub fn scopes(mut self, scopes: Scopes) -> Self {
        self.scopes = Some(scopes);
        self
    }
}

/// What happens to one request.
pub(crate) struct Plan {
    pub(crate) cache: Arc<TokenCache>,
    tenant: Option<HeaderValue>,
    /// Whether a 401 may lead to one retry.
    pub(crate) retry: bool,
    retry_bare_401: bool,
}

impl ClientCredentials {
    /// `None` when the request goes out untouched: another origin, an explicit
    /// `Authorization` header, or [`RequestOptions::unauthenticated`].
    pub(crate) fn plan(
        &self,
        scheme: Option<&str>,
        host: Option<&str>,
        port: Option<u16>,
        headers: &HeaderMap,
        options: Option<&RequestOptions>,
    ) -> Option<Plan> {
        if headers.contains_key(AUTHORIZATION)
            || options.is_some_and(|o| o.unauthenticated)
            || !self.applies_to(scheme, host, port)
        {
            return None;
        }
        let api = &self.inner.api;
        Some(Plan {
            cache: self.cache_for(options.and_then(|o| o.scopes.as_ref())),
            tenant: options
                .and_then(|o| o.tenant_id.clone())
                .or_else(|| api.tenant.clone()),
            retry: !options.is_some_and(|o| o.no_retry),
            retry_bare_401: api.retry_bare_401,
        })
    }
}

impl Plan {
    /// The `Authorization` value to send: a cache hit, or the result of the one fetch.
    pub(crate) async fn authorization(&self) -> Result<HeaderValue, Error> {
        self.cache.header().await
    }

    /// Puts the token (and the tenant, unless the caller set one) on a request.
    pub(crate) fn apply(&self, headers: &mut HeaderMap, authorization: HeaderValue) {
        headers.insert(AUTHORIZATION, authorization);
        if let Some(tenant) = &self.tenant {
            if !headers.contains_key(&X_TENANT_ID) {
                headers.insert(X_TENANT_ID, tenant.clone());
            }
        }
    }

    /// The token to send the rejected request again with, if this rejection is one a new
    /// token may fix and a new token can be had.
    pub(crate) async fn token_for_retry(
        &self,
        rejection: &Rejection,
        sent: &HeaderValue,
    ) -> Option<HeaderValue> {
        if !rejection.warrants_new_token(self.retry_bare_401) {
            return None;
        }
        self.replacement(sent).await
    }

    /// For a 401 that will not be retried (the body cannot be replayed, or the caller said no
    /// retry): if its headers say `invalid_token`, drop the token anyway so the next request
    /// gets a fresh one. The body is not read; the response goes to the caller untouched.
    pub(crate) fn forget_if_invalid(
        &self,
        status: http::StatusCode,
        headers: &HeaderMap,
        sent: &HeaderValue,
    ) {
        if crate::challenge::classify_headers(status, headers) == Some(Rejection::InvalidToken) {
            self.cache.invalidate(sent);
        }
    }

    /// After the API rejected `sent`: drops it (if still current) and returns the new token to
    /// retry with, or `None` when there is none to be had (the caller then gets the 401).
    async fn replacement(&self, sent: &HeaderValue) -> Option<HeaderValue> {
        if !self.cache.invalidate(sent) {
            return None;
        }
        match self.cache.entry().await {
            Ok(entry) if entry.header != *sent => {
                self.cache
                    .counters
                    .retried_requests
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    endpoint_host = %self.cache.endpoint_host,
                    "retrying the rejected request once with a new token"
                );
                Some(entry.header.clone())
            }
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(
                    endpoint_host = %self.cache.endpoint_host,
                    error = %error,
                    "no new token after a rejection; returning the 401"
                );
                None
            }
        }
    }
}

/// Classifies a 401 whose headers did not settle it by reading up to
/// [`MAX_INSPECTED_BODY`](crate::challenge::MAX_INSPECTED_BODY) bytes of its body, and returns a
/// body that plays back what was read, then the rest.
pub(crate) async fn classify_by_body<B>(
    parts: &http::response::Parts,
    body: B,
) -> (Rejection, crate::body::ResponseBody<B>)
where
    B: http_body::Body,
    B::Data: Into<bytes::Bytes>,
{
    let (data, body) = crate::body::read_prefix(body, crate::challenge::MAX_INSPECTED_BODY).await;
    let rejection = crate::challenge::classify(parts.status, &parts.headers, data.as_deref());
    (rejection, body)
}
