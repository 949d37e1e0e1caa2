//! The builder: the cache and adapter settings every configuration has, and the token
//! endpoint's own (URL, credentials, method, HTTP client), which a custom source does not.
//!
//! [`ClientCredentialsBuilder`] is one type with a type parameter saying where tokens come
//! from: [`builder::Endpoint`](crate::builder::Endpoint) (the default, from
//! [`ClientCredentials::builder`]) or [`builder::Custom`](crate::builder::Custom) (from
//! [`ClientCredentials::from_source`]). A setter exists only where it has an effect.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::Shared;
use crate::credentials::{ApiPolicy, ClientCredentials};
use crate::endpoint::{TokenEndpoint, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_REQUEST_TIMEOUT};
use crate::policy::{CachePolicy, RetryPolicy, DEFAULT_LOAD_TIMEOUT};
use crate::stats::Counters;
use crate::{AuthMethod, ClientSecret, ConfigError, Scopes, TenantId, TokenSource};

pub(crate) mod auth;
pub(crate) mod discovery;
mod env;
pub(crate) mod url;
mod vendor;

pub use self::auth::{AssertionAudience, DEFAULT_ASSERTION_LIFETIME};
pub use self::env::DEFAULT_ENV_PREFIX;

/// How many scope sets get a cache of their own when requests ask for other scopes than the
/// configured ones, by default (16).
pub const DEFAULT_MAX_SCOPE_SETS: usize = 16;

/// The two kinds of [`ClientCredentialsBuilder`]: where tokens come from.
pub mod builder {
    use std::fmt;
    use std::sync::Arc;
    use std::time::Duration;

    use crate::{AuthMethod, ClientSecret, TokenSource};

    /// Tokens from a token endpoint: the settings of the built-in
    /// [`TokenEndpoint`](crate::TokenEndpoint). The default kind, made by
    /// [`ClientCredentials::builder`](crate::ClientCredentials::builder).
    #[derive(Clone, Default)]
    pub struct Endpoint {
        pub(crate) token_url: Option<String>,
        pub(crate) client_id: Option<String>,
        pub(crate) client_secret: Option<ClientSecret>,
        pub(crate) client_secret_file: Option<std::path::PathBuf>,
        pub(crate) client_secret_provider: Option<Arc<dyn crate::CredentialProvider>>,
        pub(crate) previous_client_secret: Option<ClientSecret>,
        pub(crate) credential_file_check_interval: Option<Duration>,
        pub(crate) client_assertion: Option<super::auth::AssertionChoice>,
        pub(crate) auth_method: Option<AuthMethod>,
        pub(crate) form_encode_basic: Option<bool>,
        pub(crate) params: Vec<(String, String)>,
        pub(crate) request_timeout: Option<Duration>,
        pub(crate) max_response_bytes: Option<usize>,
        pub(crate) allow_insecure_http: bool,
        /// Built when set; the error (reqwest's errors are not `Clone`) as text.
        pub(crate) http_client: Option<Result<reqwest::Client, String>>,
        pub(crate) issuer: Option<String>,
        pub(crate) assertion_audience: Option<super::AssertionAudience>,
        pub(crate) assertion_lifetime: Option<Duration>,
        #[cfg(feature = "jwt")]
        pub(crate) signing_key: Option<super::auth::KeyChoice>,
        #[cfg(feature = "jwt")]
        pub(crate) previous_signing_key: Option<crate::SigningKey>,
        #[cfg(feature = "jwt")]
        pub(crate) dpop: Option<super::auth::DpopChoice>,
        #[cfg(feature = "jwt")]
        pub(crate) dpop_required: Option<bool>,
        /// `dpop_signing_alg_values_supported`, when discovery read it.
        pub(crate) dpop_algs_offered: Option<Vec<String>>,
    }

    impl fmt::Debug for Endpoint {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Endpoint")
                .field("token_url", &self.token_url)
                .field("client_id", &self.client_id)
                .field("client_secret", &self.client_secret)
                .field("client_secret_file", &self.client_secret_file)
                .field(
                    "client_secret_provider",
                    &self.client_secret_provider.as_ref().map(|_| "[yours]"),
                )
                .field("previous_client_secret", &self.previous_client_secret)
                .field("client_assertion", &self.client_assertion)
                .field("auth_method", &self.auth_method)
                .field(
                    "params",
                    &self.params.iter().map(|(k, _)| k).collect::<Vec<_>>(),
                )
                .field("custom_http_client", &self.http_client.is_some())
                .field("issuer", &self.issuer)
                .finish_non_exhaustive()
        }
    }

    /// Tokens from a [`TokenSource`] of your own, made by
    /// [`ClientCredentials::from_source`](crate::ClientCredentials::from_source).
    #[derive(Clone)]
    pub struct Custom {
        pub(crate) source: Arc<dyn TokenSource>,
        pub(crate) name: Option<String>,
    }

    impl fmt::Debug for Custom {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Custom")
                .field("name", &self.name)
                .finish_non_exhaustive()
        }
    }
}

use self::builder::{Custom, Endpoint};

/// How errors and logs name a custom source that was given no name.
const CUSTOM_SOURCE_NAME: &str = "custom token source";

/// Builds a [`ClientCredentials`].
///
/// Every setter states its default. Nothing is checked until [`build`](Self::build), which
/// reports every invalid setting as a [`ConfigError`]; no setter is ignored.
///
/// The type parameter says where tokens come from: [`Endpoint`] (the default:
/// [`ClientCredentials::builder`]) has the token endpoint's settings as well as the cache's;
/// [`Custom`] ([`ClientCredentials::from_source`]) has the cache's only.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use client_credentials::{AuthMethod, ClientCredentials, TenantId};
///
/// let credentials = ClientCredentials::builder()
///     .token_url("https://my-domain.auth.eu-west-1.amazoncognito.com/oauth2/token")
///     .client_id("my-client")
///     .client_secret(std::env::var("CLIENT_SECRET").unwrap_or_default())
///     .scopes("https://api.example.com/accounts.read")
///     .auth_method(AuthMethod::ClientSecretPost)
///     .tenant_id(TenantId::from_static("acme"))
///     .request_timeout(Duration::from_secs(5))
///     .build()?;
/// # Ok::<(), client_credentials::ConfigError>(())
/// ```
#[derive(Clone)]
#[must_use]
pub struct ClientCredentialsBuilder<S = Endpoint> {
    common: Common,
    pub(crate) source: S,
}

/// The settings every kind of builder has.
#[derive(Clone)]
struct Common {
    scopes: Scopes,
    tenant: Option<TenantId>,
    policy: CachePolicy,
    load_timeout: Option<Duration>,
    bare_401_rejects: bool,
    allowed_origins: Option<Vec<String>>,
    max_scope_sets: usize,
    #[cfg(feature = "fleet")]
    fleet: Option<crate::fleet::Fleet>,
}

impl Default for Common {
    fn default() -> Self {
        Self {
            scopes: Scopes::default(),
            tenant: None,
            policy: CachePolicy::default(),
            load_timeout: None,
            bare_401_rejects: true,
            allowed_origins: None,
            max_scope_sets: DEFAULT_MAX_SCOPE_SETS,
            #[cfg(feature = "fleet")]
            fleet: None,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for ClientCredentialsBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentialsBuilder")
            .field("source", &self.source)
            .field("scopes", &self.common.scopes)
            .field("tenant_id", &self.common.tenant)
            .finish_non_exhaustive()
    }
}

impl Default for ClientCredentialsBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// The settings of the cache and the adapters, on every kind of builder.
impl<S> ClientCredentialsBuilder<S> {
    /// The scopes to request (default none: the `scope` parameter is then not sent and the
    /// server grants its default scopes). Replaces any set before. Sent space-separated, in
    /// order, without duplicates; `build()` refuses characters RFC 6749 §3.3 does not allow.
    /// Takes `"a b"`, `["a", "b"]` or a [`Scopes`], as
    /// [`RequestOptions::scopes`](crate::RequestOptions::scopes) does.
    pub fn scopes(mut self, scopes: impl Into<Scopes>) -> Self {
        self.common.scopes = scopes.into();
        self
    }

    /// A tenant id sent as `X-Tenant-Id` on every API request (default none: no header). The
    /// same type as [`RequestOptions::tenant_id`](crate::RequestOptions::tenant_id), which
    /// overrides it per request.
    pub fn tenant_id(mut self, tenant: TenantId) -> Self {
        self.common.tenant = Some(tenant);
        self
    }

    /// Start refreshing a token in the background at this fraction of its lifetime (default
    /// 0.75; `build()` refuses anything outside `0..=1`, NaN included). Requests keep using
    /// the current token meanwhile.
    pub fn refresh_at(mut self, fraction: f64) -> Self {
        self.common.policy.refresh_at = fraction;
        self
    }

    /// Up to this fraction of the lifetime is taken off the refresh point at random (default
    /// 0.05; 0 disables the jitter; `build()` refuses anything outside `0..=1`).
    pub fn refresh_jitter(mut self, fraction: f64) -> Self {
        self.common.policy.refresh_jitter = fraction;
        self
    }

    /// Never use a token this close to its expiry (default 60 s). The margin applied is at most
    /// a tenth of the token's lifetime, so a 60 s token is used for 54 s.
    pub fn expiry_margin(mut self, margin: Duration) -> Self {
        self.common.policy.expiry_margin = margin;
        self
    }

    /// The lifetime assumed when a token comes without one (default 5 minutes). Like every
    /// lifetime, it is raised to at least 1 s and lowered to at most ten years (see
    /// [`Token::new`](crate::Token::new)).
    pub fn default_lifetime(mut self, lifetime: Duration) -> Self {
        self.common.policy.default_lifetime = lifetime;
        self
    }

    /// How long the next forced refresh waits after the API rejected a replacement token it
    /// never accepted (default 1 s), doubling with each such rejection in a row up to
    /// [`forced_refresh_backoff_max`](Self::forced_refresh_backoff_max). A token the API
    /// accepted at least once is replaced at once when rejected, and an acceptance ends the
    /// backoff. A rejection inside the backoff is returned to the caller as is.
    pub fn forced_refresh_backoff(mut self, initial: Duration) -> Self {
        self.common.policy.forced_refresh_backoff = initial;
        self
    }

    /// The longest wait of the forced refresh backoff (default 30 s): against an API that
    /// rejects every token, at most one token request per this interval once the backoff has
    /// grown.
    pub fn forced_refresh_backoff_max(mut self, max: Duration) -> Self {
        self.common.policy.forced_refresh_backoff_max = max;
        self
    }

    /// How failed token requests are retried and backed off (default [`RetryPolicy::default`]).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.common.policy.retry = policy;
        self
    }

    /// How long one call of the token source may take before every caller waiting for it
    /// gets [`Error::Timeout`](crate::Error::Timeout), counted as a failed attempt (retried
    /// and backed off like any transient failure). Default 15 s; for the built-in endpoint, at
    /// least its [`request_timeout`](ClientCredentialsBuilder::request_timeout) plus 5 s, so the
    /// request's own timeout fires first. `build()` refuses zero.
    pub fn load_timeout(mut self, timeout: Duration) -> Self {
        self.common.load_timeout = Some(timeout);
        self
    }

    /// Whether a 401 with no error code at all (AWS API Gateway's `{"message":"Unauthorized"}`)
    /// counts as a rejected token: dropped, re-fetched and the request replayed once (default
    /// `true`).
    pub fn bare_401_rejects_token(mut self, rejects: bool) -> Self {
        self.common.bare_401_rejects = rejects;
        self
    }

    /// Only requests to these origins get a token (default: every request). Each origin is
    /// `scheme://host[:port]`; the default port of the scheme is implied. A request to another
    /// origin goes out untouched, so a client shared between a partner API and anything else
    /// never sends the partner's token elsewhere. May be called more than once.
    pub fn allowed_origins<I, T>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.common
            .allowed_origins
            .get_or_insert_with(Vec::new)
            .extend(origins.into_iter().map(Into::into));
        self
    }

    /// How many scope sets other than the configured one get a cache of their own (default 16).
    /// Past the bound, the oldest such cache is dropped (its token is fetched again if asked
    /// for), so memory stays bounded whatever scopes requests ask for.
    pub fn max_scope_sets(mut self, max: usize) -> Self {
        self.common.max_scope_sets = max;
        self
    }

    /// Shares tokens with the other processes of a fleet through a store (Redis or Valkey with
    /// [`Fleet::redis`](crate::Fleet::redis), or your own [`TokenStore`](crate::TokenStore)):
    /// one token request per token lifetime for the whole fleet, and one per rejection. The
    /// in-process cache and its hit path do not change. See [`Fleet`](crate::Fleet).
    #[cfg(feature = "fleet")]
    #[cfg_attr(docsrs, doc(cfg(feature = "fleet")))]
    pub fn fleet(mut self, fleet: crate::fleet::Fleet) -> Self {
        self.common.fleet = Some(fleet);
        self
    }
}

impl Common {
    /// Checks every setting and builds the credentials over `source`.
    fn build(
        self,
        source: Arc<dyn TokenSource>,
        counters: Arc<Counters>,
        endpoint: Arc<str>,
        default_load_timeout: Duration,
        #[cfg(feature = "jwt")] dpop: Option<Arc<crate::proof::Dpop>>,
        #[cfg(feature = "fleet")] identity: crate::fleet::Identity,
    ) -> Result<ClientCredentials, ConfigError> {
        self.scopes.check()?;
        let mut policy = self.policy;
        policy.load_timeout = self.load_timeout.unwrap_or(default_load_timeout);
        policy.check()?;
        let allowed_origins = match self.allowed_origins {
            Some(list) => Some(
                list.iter()
                    .map(|o| {
                        url::Origin::parse(o).ok_or_else(|| {
                            ConfigError::InvalidOrigin(crate::text::shown(o).to_string())
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        #[cfg(feature = "fleet")]
        let fleet = match self.fleet {
            Some(fleet) => Some(fleet.into_runtime(
                &identity,
                Arc::clone(&counters),
                #[cfg(feature = "jwt")]
                dpop.clone(),
            )?),
            None => None,
        };
        let shared = Shared {
            source,
            policy,
            counters,
            endpoint,
            #[cfg(feature = "fleet")]
            fleet,
        };
        let api = ApiPolicy {
            tenant: self.tenant,
            allowed_origins,
            bare_401_rejects: self.bare_401_rejects,
        };
        Ok(ClientCredentials::new(
            shared,
            self.scopes,
            api,
            self.max_scope_sets,
            #[cfg(feature = "jwt")]
            dpop,
        ))
    }
}

/// The settings of the built-in token endpoint.
impl ClientCredentialsBuilder<Endpoint> {
    /// An empty builder (same as [`ClientCredentials::builder`]).
    pub fn new() -> Self {
        Self {
            common: Common::default(),
            source: Endpoint::default(),
        }
    }

    /// The token endpoint, e.g. `https://<domain>.auth.<region>.amazoncognito.com/oauth2/token`
    /// or `https://<host>/connect/token`. Required. Must be HTTPS; plain HTTP is accepted only
    /// for loopback hosts (`localhost`, `127.0.0.0/8`, `::1`) unless
    /// [`danger_allow_insecure_http`](Self::danger_allow_insecure_http).
    pub fn token_url(mut self, url: impl Into<String>) -> Self {
        self.source.token_url = Some(url.into());
        self
    }

    /// The client id. Required, non-empty.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.source.client_id = Some(id.into());
        self
    }

    /// The client secret. Required by the `client_secret_*` methods (or one of
    /// [`client_secret_file`](Self::client_secret_file) and
    /// [`client_secret_provider`](Self::client_secret_provider) instead).
    pub fn client_secret(mut self, secret: impl Into<ClientSecret>) -> Self {
        self.source.client_secret = Some(secret.into());
        self
    }

    /// The client secret, read from this file (a Kubernetes secret volume, a Vault agent
    /// template), and read again when it changes: so a rotated secret is used without a
    /// restart.
    ///
    /// - `build()` reads it, and fails with [`ConfigError::CredentialFile`] if it cannot be
    ///   used: missing, not a regular file, **writable by every user** (anyone could plant a
    ///   secret of their choosing), larger than 64 KiB, not UTF-8, or empty. One trailing line
    ///   break is removed (`echo` writes one); nothing else is trimmed.
    /// - Before a token request, the file's modification time and size are looked at, at most
    ///   once per [`credential_file_check_interval`](Self::credential_file_check_interval)
    ///   (1 s); it is read again when they changed, and a content that differs from the last
    ///   is the new secret. A cache hit never looks at it.
    /// - When the token endpoint answers `invalid_client`, the file is read again at once; if
    ///   it holds another secret, the token request is sent once more with it. A secret rotated
    ///   on disk and at the server at the same moment thus costs one extra token request and
    ///   no failed API request.
    /// - A read that fails (the file removed, emptied, made writable by everyone) keeps the
    ///   last good secret: logged as a warning, counted in
    ///   [`Stats::credential_errors`](crate::Stats::credential_errors); never an empty secret.
    ///
    /// Write the file atomically (a new file renamed into place, as Kubernetes and Vault agent
    /// do): a reader may otherwise see it half-written.
    pub fn client_secret_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.source.client_secret_file = Some(path.into());
        self
    }

    /// The client secret, asked of a [`CredentialProvider`](crate::CredentialProvider) of
    /// your own (a secret manager): when the first token request needs it, and again when the
    /// token endpoint answers `invalid_client`, before the token request is sent once more
    /// with a new value. A failure keeps the last good value (logged, counted in
    /// [`Stats::credential_errors`](crate::Stats::credential_errors)); with none yet, the token
    /// request fails with the provider's error. The
    /// [`load_timeout`](Self::load_timeout) bounds a provider that hangs.
    pub fn client_secret_provider(mut self, provider: impl crate::CredentialProvider) -> Self {
        self.source.client_secret_provider = Some(Arc::new(provider));
        self
    }

    /// The secret that was current before a rotation, during the window in which the
    /// authorization server may accept only one of the two: when the token endpoint answers
    /// `invalid_client` to the current secret (and no new one was read), the token request is
    /// sent once more with this one, and while it works it is sent first (one token request
    /// per fetch, not two), until the current secret changes or the server refuses it.
    pub fn previous_client_secret(mut self, secret: impl Into<ClientSecret>) -> Self {
        self.source.previous_client_secret = Some(secret.into());
        self
    }

    /// How often, at most, the [`client_secret_file`](Self::client_secret_file) is looked at
    /// for a change (default [`DEFAULT_FILE_CHECK_INTERVAL`](crate::DEFAULT_FILE_CHECK_INTERVAL),
    /// 1 s; zero looks before every token request). An `invalid_client` answer looks at once
    /// whatever the interval.
    pub fn credential_file_check_interval(mut self, interval: Duration) -> Self {
        self.source.credential_file_check_interval = Some(interval);
        self
    }

    /// How the client authenticates to the token endpoint (default
    /// [`AuthMethod::ClientSecretBasic`]).
    pub fn auth_method(mut self, method: AuthMethod) -> Self {
        self.source.auth_method = Some(method);
        self
    }

    /// Whether `client_secret_basic` form-urlencodes id and secret before joining them, as
    /// RFC 6749 §2.3.1 requires (default `true`). Turn it off only for a server known not to
    /// decode them, when the id or secret contains characters that encoding changes (anything
    /// but letters, digits and `-._*`); AWS Cognito and Duende IdentityServer decode them.
    ///
    /// Servers known to need `false`: the legacy Spring Security OAuth 2 authorization server
    /// (`spring-security-oauth2`, end of life), which Base64-decodes the header without the
    /// form-decoding step, and in-house servers built the same way (the symptom is
    /// `invalid_client` only for secrets with `+`, `/`, `=`, `%` or `~`). Spring Authorization
    /// Server, Gluu oxAuth and pyop decode as the RFC says. With such a server,
    /// [`AuthMethod::ClientSecretPost`] avoids the question altogether. `build()` refuses it
    /// with another method, where it would have no effect.
    pub fn form_encode_basic_credentials(mut self, encode: bool) -> Self {
        self.source.form_encode_basic = Some(encode);
        self
    }

    /// Adds an extra form parameter to the token request, such as `audience` or `resource`
    /// (RFC 8707). May be repeated, also with the same name. Default none.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.source.params.push((name.into(), value.into()));
        self
    }

    /// How long one token request may take, from connecting to the last byte (default 10 s;
    /// `build()` refuses zero).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.source.request_timeout = Some(timeout);
        self
    }

    /// The largest token endpoint answer read, in bytes (default 64 KiB; `build()` refuses
    /// zero). A larger answer, announced by `Content-Length` or streamed, is an error.
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.source.max_response_bytes = Some(limit);
        self
    }

    /// The HTTP client settings for the token request and discovery (default: reqwest's
    /// defaults): a proxy, extra root certificates (a corporate CA), a client certificate
    /// (`identity`), pool settings, your own DNS resolver.
    ///
    /// Whatever the builder says, the crate sets its own redirect policy (none: a redirect
    /// would carry the credentials to another URL) and its own timeout on each request
    /// ([`request_timeout`](Self::request_timeout)), so the guarantees of `SECURITY.md` hold. If
    /// the client cannot be built (a certificate it cannot load), `build()` and `discover()`
    /// report [`ConfigError::HttpClient`].
    ///
    /// ```no_run
    /// # fn run(ca_pem: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
    /// use client_credentials::ClientCredentials;
    ///
    /// let corporate_ca = reqwest::Certificate::from_pem(ca_pem)?;
    /// let credentials = ClientCredentials::builder()
    ///     .token_url("https://login.internal.example/oauth2/token")
    ///     .client_id("billing")
    ///     .client_secret(std::env::var("CLIENT_SECRET")?)
    ///     .http_client(reqwest::Client::builder().add_root_certificate(corporate_ca))
    ///     .build()?;
    /// # let _ = credentials;
    /// # Ok(()) }
    /// ```
    pub fn http_client(mut self, client: reqwest::ClientBuilder) -> Self {
        self.source.http_client = Some(
            crate::endpoint::http_client(Some(client)).map_err(|e| e.without_url().to_string()),
        );
        self
    }

    /// Accepts a plain-HTTP token URL on any host. The client secret then crosses the network
    /// in clear text: use only inside a trusted network you control.
    pub fn danger_allow_insecure_http(mut self, allow: bool) -> Self {
        self.source.allow_insecure_http = allow;
        self
    }

    /// Checks the configuration and builds the client. Cheap to clone; every clone, middleware
    /// and layer made from it shares one cache.
    pub fn build(self) -> Result<ClientCredentials, ConfigError> {
        let counters = Arc::new(Counters::default());
        let endpoint = self.source.token_endpoint(Arc::clone(&counters))?;
        #[cfg(feature = "jwt")]
        let dpop = self.source.dpop_state()?;
        #[cfg(feature = "jwt")]
        let endpoint = match &dpop {
            Some(dpop) => endpoint.with_dpop(Arc::clone(dpop)),
            None => endpoint,
        };
        let default_load_timeout = DEFAULT_LOAD_TIMEOUT.max(
            self.source
                .request_timeout()
                .saturating_add(Duration::from_secs(5)),
        );
        let name = Arc::clone(endpoint.endpoint_arc());
        #[cfg(feature = "fleet")]
        let identity = endpoint.fleet_identity();
        self.common.build(
            Arc::new(endpoint),
            counters,
            name,
            default_load_timeout,
            #[cfg(feature = "jwt")]
            dpop,
            #[cfg(feature = "fleet")]
            identity,
        )
    }

    /// Builds only the [`TokenEndpoint`] (the built-in [`TokenSource`]) from the endpoint
    /// settings: for a source of your own that wraps it. DPoP needs the whole
    /// [`ClientCredentials`] (its proofs go on API requests too), so it is refused here.
    pub fn build_token_endpoint(&self) -> Result<TokenEndpoint, ConfigError> {
        #[cfg(feature = "jwt")]
        if self.source.dpop.is_some() {
            return Err(ConfigError::OutOfRange(
                "dpop needs the ClientCredentials `build()` makes, not build_token_endpoint",
            ));
        }
        self.source.token_endpoint(Arc::default())
    }
}

impl Endpoint {
    fn request_timeout(&self) -> Duration {
        self.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT)
    }

    /// The HTTP client: the user's, or reqwest's defaults, never following redirects.
    pub(crate) fn client(&self) -> Result<reqwest::Client, ConfigError> {
        match &self.http_client {
            Some(Ok(client)) => Ok(client.clone()),
            Some(Err(e)) => Err(ConfigError::HttpClient(e.clone())),
            None => crate::endpoint::http_client(None)
                .map_err(|e| ConfigError::HttpClient(e.without_url().to_string())),
        }
    }

    fn token_endpoint(&self, counters: Arc<Counters>) -> Result<TokenEndpoint, ConfigError> {
        let raw = self
            .token_url
            .as_deref()
            .ok_or(ConfigError::MissingTokenUrl)?;
        let url = url::token_url(raw, self.allow_insecure_http)?;
        let client_id = self
            .client_id
            .clone()
            .filter(|id| !id.is_empty())
            .ok_or(ConfigError::MissingClientId)?;
        let auth = self.client_auth(client_id, &url, &counters)?;
        let timeout = self.request_timeout();
        if timeout.is_zero() {
            return Err(ConfigError::OutOfRange(
                "request_timeout must be more than zero",
            ));
        }
        let max_response_bytes = self
            .max_response_bytes
            .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);
        if max_response_bytes == 0 {
            return Err(ConfigError::OutOfRange(
                "max_response_bytes must be more than zero",
            ));
        }
        Ok(TokenEndpoint::new(
            self.client()?,
            url,
            auth,
            self.params.clone(),
            max_response_bytes,
            timeout,
            counters,
        ))
    }
}

/// The settings of a custom source.
impl ClientCredentialsBuilder<Custom> {
    pub(crate) fn with_source(source: impl TokenSource) -> Self {
        Self {
            common: Common::default(),
            source: Custom {
                source: Arc::new(source),
                name: None,
            },
        }
    }

    /// How errors and logs name the source, in the place of a token endpoint's URL (default
    /// `custom token source`). Never put a secret in it.
    pub fn source_name(mut self, name: impl Into<String>) -> Self {
        self.source.name = Some(name.into());
        self
    }

    /// Checks the configuration and builds the client. Cheap to clone; every clone, middleware
    /// and layer made from it shares one cache.
    pub fn build(self) -> Result<ClientCredentials, ConfigError> {
        let name: Arc<str> = Arc::from(self.source.name.as_deref().unwrap_or(CUSTOM_SOURCE_NAME));
        #[cfg(feature = "fleet")]
        let identity = {
            let mut identity = crate::fleet::Identity::default();
            identity.push("source", &*name);
            identity
        };
        self.common.build(
            self.source.source,
            Arc::default(),
            name,
            DEFAULT_LOAD_TIMEOUT,
            #[cfg(feature = "jwt")]
            None,
            #[cfg(feature = "fleet")]
            identity,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(url: &str) -> ClientCredentialsBuilder {
        ClientCredentials::builder()
            .token_url(url)
            .client_id("id")
            .client_secret("secret")
    }

    #[test]
    fn token_url_rules() {
        for url in [
            "https://auth.example.com/oauth2/token",
            "http://127.0.0.1:8080/token",
            "http://localhost/token",
        ] {
            assert!(base(url).build().is_ok(), "{url}");
        }
        type Check = fn(&ConfigError) -> bool;
        let bad: &[(&str, Check)] = &[
            ("http://auth.example.com/token", |e| {
                matches!(e, ConfigError::InsecureTokenUrl(_))
            }),
            ("ftp://auth.example.com/token", |e| {
                matches!(e, ConfigError::InvalidTokenUrl(_))
            }),
            ("not a url", |e| {
                matches!(e, ConfigError::InvalidTokenUrl(_))
            }),
            ("https://user:pw@auth.example.com/token", |e| {
                matches!(e, ConfigError::InvalidTokenUrl(_))
            }),
        ];
        for (url, check) in bad {
            let err = base(url).build().unwrap_err();
            assert!(check(&err), "{url}: {err:?}");
            assert!(!err.to_string().contains("pw"), "{err}");
        }
        assert!(base("http://auth.example.com/token")
            .danger_allow_insecure_http(true)
            .build()
            .is_ok());
    }

    #[test]
    fn required_fields_and_values() {
        let missing_url = ClientCredentials::builder()
            .client_id("id")
            .client_secret("s");
        assert_eq!(
            missing_url.build().unwrap_err(),
            ConfigError::MissingTokenUrl
        );
        let empty_id = base("https://a.example/t").client_id("");
        assert_eq!(empty_id.build().unwrap_err(), ConfigError::MissingClientId);
        let no_secret = ClientCredentials::builder()
            .token_url("https://a.example/t")
            .client_id("id");
        assert_eq!(
            no_secret.build().unwrap_err(),
            ConfigError::MissingClientSecret("client_secret_basic")
        );
        assert!(matches!(
            base("https://a.example/t")
                .scopes("a\"b")
                .build()
                .unwrap_err(),
            ConfigError::InvalidScope(_)
        ));
        assert!(matches!(
            base("https://a.example/t")
                .allowed_origins(["nope"])
                .build()
                .unwrap_err(),
            ConfigError::InvalidOrigin(_)
        ));
    }

    /// Issue 8: every setting is checked in `build()`, with a reachable error naming it.
    #[test]
    fn every_range_is_checked_in_build() {
        let cases: Vec<(&str, ClientCredentialsBuilder)> = vec![
            (
                "refresh_at",
                base("https://a.example/t").refresh_at(f64::NAN),
            ),
            ("refresh_at", base("https://a.example/t").refresh_at(1.01)),
            (
                "refresh_jitter",
                base("https://a.example/t").refresh_jitter(-0.5),
            ),
            (
                "load_timeout",
                base("https://a.example/t").load_timeout(Duration::ZERO),
            ),
            (
                "request_timeout",
                base("https://a.example/t").request_timeout(Duration::ZERO),
            ),
            (
                "max_response_bytes",
                base("https://a.example/t").max_response_bytes(0),
            ),
            (
                "max_attempts",
                base("https://a.example/t").retry_policy(RetryPolicy::default().max_attempts(0)),
            ),
            (
                "form_encode_basic_credentials",
                base("https://a.example/t")
                    .auth_method(AuthMethod::ClientSecretPost)
                    .form_encode_basic_credentials(false),
            ),
        ];
        for (setting, builder) in cases {
            match builder.build() {
                Err(ConfigError::OutOfRange(message)) => {
                    assert!(message.contains(setting), "{setting}: {message}")
                }
                other => panic!("{setting}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_load_timeout_follows_a_long_request_timeout() {
        let load = |b: ClientCredentialsBuilder| {
            b.build()
                .unwrap()
                .inner
                .partitions
                .default
                .shared
                .policy
                .load_timeout
        };
        assert_eq!(load(base("https://a.example/t")), DEFAULT_LOAD_TIMEOUT);
        assert_eq!(
            load(base("https://a.example/t").request_timeout(Duration::from_secs(30))),
            Duration::from_secs(35)
        );
        assert_eq!(
            load(base("https://a.example/t").load_timeout(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn a_custom_source_is_named_in_errors_and_logs() {
        struct Never;
        impl TokenSource for Never {
            fn fetch_token<'a>(
                &'a self,
                _: &'a Scopes,
            ) -> crate::BoxFuture<'a, Result<crate::Token, crate::Error>> {
                Box::pin(std::future::pending())
            }
        }
        let named = ClientCredentials::from_source(Never)
            .source_name("vault")
            .build()
            .unwrap();
        assert_eq!(&*named.inner.partitions.default.shared.endpoint, "vault");
        let unnamed = ClientCredentials::from_source(Never).build().unwrap();
        assert_eq!(
            &*unnamed.inner.partitions.default.shared.endpoint,
            CUSTOM_SOURCE_NAME
        );
    }
}
