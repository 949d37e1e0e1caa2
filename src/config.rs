//! The builder: endpoint, credentials, scopes, authentication method, margins, environment.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use url::Url;

use crate::credentials::{ApiPolicy, ClientCredentials, Origin};
use crate::endpoint::{
    ClientAuth, TokenEndpoint, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_REQUEST_TIMEOUT,
};
use crate::policy::{CachePolicy, RetryPolicy};
use crate::source::{Scopes, TokenSource};
use crate::{AuthMethod, ClientSecret, ConfigError};

/// The default prefix of the environment variables read by
/// [`ClientCredentialsBuilder::from_env`].
pub const DEFAULT_ENV_PREFIX: &str = "OAUTH_";
/// How many scope sets get a cache of their own when requests ask for other scopes than the
/// configured ones, by default (16).
pub const DEFAULT_MAX_SCOPE_SETS: usize = 16;

/// Builds a [`ClientCredentials`].
///
/// Every setter states its default. Nothing is checked until [`build`](Self::build), which
/// reports every invalid setting as a [`ConfigError`].
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use client_credentials::{AuthMethod, ClientCredentials};
///
/// let credentials = ClientCredentials::builder()
///     .token_url("https://my-domain.auth.eu-west-1.amazoncognito.com/oauth2/token")
///     .client_id("my-client")
///     .client_secret(std::env::var("CLIENT_SECRET").unwrap_or_default())
///     .scopes(["https://api.example.com/accounts.read"])
///     .auth_method(AuthMethod::ClientSecretPost)
///     .tenant_id("acme")
///     .request_timeout(Duration::from_secs(5))
///     .build()?;
/// # Ok::<(), client_credentials::ConfigError>(())
/// ```
#[derive(Clone, Default)]
#[must_use]
pub struct ClientCredentialsBuilder {
    pub(crate) token_url: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret: Option<ClientSecret>,
    pub(crate) auth_method: Option<AuthMethod>,
    pub(crate) form_encode_basic: Option<bool>,
    pub(crate) scopes: Vec<String>,
    pub(crate) params: Vec<(String, String)>,
    pub(crate) tenant_id: Option<String>,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) max_response_bytes: Option<usize>,
    pub(crate) allow_insecure_http: bool,
    pub(crate) policy: CachePolicy,
    pub(crate) retry_bare_401: Option<bool>,
    pub(crate) allowed_origins: Option<Vec<String>>,
    pub(crate) max_scope_sets: Option<usize>,
    pub(crate) source: Option<Arc<dyn TokenSource>>,
}

impl fmt::Debug for ClientCredentialsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCredentialsBuilder")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("auth_method", &self.auth_method)
            .field("scopes", &self.scopes)
            .field(
                "params",
                &self.params.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("tenant_id", &self.tenant_id)
            .field("custom_source", &self.source.is_some())
            .finish_non_exhaustive()
    }
}

impl ClientCredentialsBuilder {
    /// An empty builder (same as [`ClientCredentials::builder`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder filled from environment variables named with the prefix `OAUTH_`:
    ///
    /// | variable | setting |
    /// |---|---|
    /// | `OAUTH_TOKEN_URL` | [`token_url`](Self::token_url) |
    /// | `OAUTH_CLIENT_ID` | [`client_id`](Self::client_id) |
    /// | `OAUTH_CLIENT_SECRET` | [`client_secret`](Self::client_secret) |
    /// | `OAUTH_SCOPE` | [`scopes`](Self::scopes), space-separated |
    /// | `OAUTH_AUTH_METHOD` | [`auth_method`](Self::auth_method): `client_secret_basic` or `client_secret_post` |
    /// | `OAUTH_TENANT_ID` | [`tenant_id`](Self::tenant_id) |
    /// | `OAUTH_AUDIENCE` | [`param`](Self::param)`("audience", ..)` |
    /// | `OAUTH_RESOURCE` | [`param`](Self::param)`("resource", ..)` (RFC 8707) |
    ///
    /// Unset variables leave the setting as it is; later setters override. Fails only on a
    /// variable that is set but not Unicode, or an unknown `OAUTH_AUTH_METHOD`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_prefixed(DEFAULT_ENV_PREFIX)
    }

    /// Like [`from_env`](Self::from_env) with another prefix (`PARTNER_` reads
    /// `PARTNER_TOKEN_URL`, ...), for services that talk to several partners.
    pub fn from_env_prefixed(prefix: &str) -> Result<Self, ConfigError> {
        Self::new().env_lookup(prefix, |name| match std::env::var(name) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(ConfigError::InvalidEnv {
                name: name.to_owned(),
                reason: "not valid Unicode".to_owned(),
            }),
        })
    }

    pub(crate) fn env_lookup(
        mut self,
        prefix: &str,
        lookup: impl Fn(&str) -> Result<Option<String>, ConfigError>,
    ) -> Result<Self, ConfigError> {
        let var = |suffix: &str| lookup(&format!("{prefix}{suffix}"));
        if let Some(v) = var("TOKEN_URL")? {
            self = self.token_url(v);
        }
        if let Some(v) = var("CLIENT_ID")? {
            self = self.client_id(v);
        }
        if let Some(v) = var("CLIENT_SECRET")? {
            self = self.client_secret(v);
        }
        if let Some(v) = var("SCOPE")? {
            self = self.scopes(v.split(' ').filter(|s| !s.is_empty()));
        }
        if let Some(v) = var("AUTH_METHOD")? {
            let method = AuthMethod::parse(v.trim()).ok_or_else(|| ConfigError::InvalidEnv {
                name: format!("{prefix}AUTH_METHOD"),
                reason: format!("`{v}` is not client_secret_basic or client_secret_post"),
            })?;
            self = self.auth_method(method);
        }
        if let Some(v) = var("TENANT_ID")? {
            self = self.tenant_id(v);
        }
        if let Some(v) = var("AUDIENCE")? {
            self = self.param("audience", v);
        }
        if let Some(v) = var("RESOURCE")? {
            self = self.param("resource", v);
        }
        Ok(self)
    }

    /// The token endpoint, e.g. `https://<domain>.auth.<region>.amazoncognito.com/oauth2/token`
    /// or `https://<host>/connect/token`. Required unless a [`token_source`](Self::token_source)
    /// is set. Must be HTTPS; plain HTTP is accepted only for loopback hosts (`localhost`,
    /// `127.0.0.0/8`, `::1`) unless [`danger_allow_insecure_http`](Self::danger_allow_insecure_http).
    pub fn token_url(mut self, url: impl Into<String>) -> Self {
        self.token_url = Some(url.into());
        self
    }

    /// The client id. Required (non-empty) unless a [`token_source`](Self::token_source) is set.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// The client secret. Required by both `client_secret_*` methods.
    pub fn client_secret(mut self, secret: impl Into<ClientSecret>) -> Self {
        self.client_secret = Some(secret.into());
        self
    }

    /// How the client authenticates to the token endpoint (default
    /// [`AuthMethod::ClientSecretBasic`]).
    pub fn auth_method(mut self, method: AuthMethod) -> Self {
        self.auth_method = Some(method);
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
    /// [`AuthMethod::ClientSecretPost`] avoids the question altogether.
    pub fn form_encode_basic_credentials(mut self, encode: bool) -> Self {
        self.form_encode_basic = Some(encode);
        self
    }

    /// Adds scopes to request (default none: the `scope` parameter is then not sent and the
    /// server grants its default scopes). Sent space-separated, in order, without duplicates.
    pub fn scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes.extend(scopes.into_iter().map(Into::into));
        self
    }

    /// Adds one scope (see [`scopes`](Self::scopes)).
    pub fn scope(self, scope: impl Into<String>) -> Self {
        self.scopes([scope])
    }

    /// Adds an extra form parameter to the token request, such as `audience` or `resource`
    /// (RFC 8707). May be repeated, also with the same name. Default none.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push((name.into(), value.into()));
        self
    }

    /// A tenant id sent as `X-Tenant-Id` on every API request (default none: no header).
    /// Must be a valid header value.
    pub fn tenant_id(mut self, tenant: impl Into<String>) -> Self {
        self.tenant_id = Some(tenant.into());
        self
    }

    /// How long one token request may take, from connecting to the last byte (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// The largest token endpoint answer read, in bytes (default 64 KiB). A larger answer,
    /// announced by `Content-Length` or streamed, is an error.
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = Some(limit);
        self
    }

    /// Start refreshing a token in the background at this fraction of its lifetime (default
    /// 0.75, clamped to `0..=1`). Requests keep using the current token meanwhile.
    pub fn refresh_at(mut self, fraction: f64) -> Self {
        self.policy.refresh_at = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            crate::policy::DEFAULT_REFRESH_AT
        };
        self
    }

    /// Up to this fraction of the lifetime is taken off the refresh point at random (default
    /// 0.05; 0 disables the jitter).
    pub fn refresh_jitter(mut self, fraction: f64) -> Self {
        self.policy.refresh_jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// Never use a token this close to its expiry (default 60 s). The margin applied is at most
    /// a tenth of the token's lifetime, so a 60 s token is used for 54 s.
    pub fn expiry_margin(mut self, margin: Duration) -> Self {
        self.policy.expiry_margin = margin;
        self
    }

    /// The lifetime assumed when the server sends no `expires_in` (default 5 minutes).
    /// Lifetimes under 1 s, including zero or negative `expires_in`, are raised to 1 s.
    pub fn default_lifetime(mut self, lifetime: Duration) -> Self {
        self.policy.default_lifetime = lifetime;
        self
    }

    /// At most one forced refresh (a token dropped because the API rejected it) per this
    /// interval (default 5 s). A rejection inside the interval is returned to the caller as is.
    pub fn forced_refresh_interval(mut self, interval: Duration) -> Self {
        self.policy.forced_refresh_interval = interval;
        self
    }

    /// How failed token requests are retried and backed off (default [`RetryPolicy::default`]).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy.retry = policy;
        self
    }

    /// Whether a 401 with no error code at all (AWS API Gateway's `{"message":"Unauthorized"}`)
    /// counts as a rejected token: dropped, re-fetched and retried once (default `true`).
    pub fn retry_on_bare_401(mut self, retry: bool) -> Self {
        self.retry_bare_401 = Some(retry);
        self
    }

    /// Only requests to these origins get a token (default: every request). Each origin is
    /// `scheme://host[:port]`; the default port of the scheme is implied. A request to another
    /// origin goes out untouched, so a client shared between a partner API and anything else
    /// never sends the partner's token elsewhere. May be called more than once.
    pub fn allowed_origins<I, S>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_origins
            .get_or_insert_with(Vec::new)
            .extend(origins.into_iter().map(Into::into));
        self
    }

    /// How many scope sets other than the configured one get a cache of their own (default 16).
    /// Past the bound, the oldest such cache is dropped (its token is fetched again if asked
    /// for), so memory stays bounded whatever scopes requests ask for.
    pub fn max_scope_sets(mut self, max: usize) -> Self {
        self.max_scope_sets = Some(max);
        self
    }

    /// Accepts a plain-HTTP token URL on any host. The client secret then crosses the network
    /// in clear text: use only inside a trusted network you control.
    pub fn danger_allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// Gets tokens from your own [`TokenSource`] instead of a token endpoint (the endpoint,
    /// id, secret, method and parameters are then not used). The cache, refresh, single flight,
    /// backoff and the adapters work the same.
    pub fn token_source(mut self, source: impl TokenSource) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Checks the configuration and builds the client. Cheap to clone; every clone, middleware
    /// and layer made from it shares one cache.
    pub fn build(self) -> Result<ClientCredentials, ConfigError> {
        let scopes = Scopes::try_new(&self.scopes)?;
        let tenant = match &self.tenant_id {
            Some(t) => {
                let mut value =
                    HeaderValue::from_str(t).map_err(|_| ConfigError::InvalidTenantId)?;
                if t.is_empty() {
                    return Err(ConfigError::InvalidTenantId);
                }
                value.set_sensitive(false);
                Some(value)
            }
            None => None,
        };
        let allowed_origins = match &self.allowed_origins {
            Some(list) => Some(
                list.iter()
                    .map(|o| Origin::parse(o).ok_or_else(|| ConfigError::InvalidOrigin(o.clone())))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            None => None,
        };
        if !(self.policy.refresh_at.is_finite()) {
            return Err(ConfigError::OutOfRange(
                "refresh_at must be a finite fraction",
            ));
        }
        let (source, host, label): (Arc<dyn TokenSource>, Arc<str>, Option<String>) =
            match self.source.clone() {
                Some(source) => (source, Arc::from("custom"), None),
                None => {
                    let endpoint = self.endpoint()?;
                    let host: Arc<str> = Arc::from(endpoint.host());
                    let label = endpoint.endpoint().to_owned();
                    (Arc::new(endpoint), host, Some(label))
                }
            };
        let api = ApiPolicy {
            tenant,
            allowed_origins,
            retry_bare_401: self.retry_bare_401.unwrap_or(true),
        };
        Ok(ClientCredentials::new(
            source,
            scopes,
            Arc::new(self.policy),
            api,
            host,
            label,
            self.max_scope_sets.unwrap_or(DEFAULT_MAX_SCOPE_SETS),
        ))
    }

    /// Builds only the [`TokenEndpoint`] (the built-in [`TokenSource`]) from the endpoint, id,
    /// secret, method and parameters: for a source of your own that wraps it, such as a token
    /// store shared by a fleet in front of the endpoint.
    pub fn build_token_endpoint(&self) -> Result<TokenEndpoint, ConfigError> {
        self.endpoint()
    }

    fn endpoint(&self) -> Result<TokenEndpoint, ConfigError> {
        let raw = self
            .token_url
            .as_deref()
            .ok_or(ConfigError::MissingTokenUrl)?;
        let url =
            Url::parse(raw.trim()).map_err(|e| ConfigError::InvalidTokenUrl(e.to_string()))?;
        check_token_url(&url, self.allow_insecure_http)?;
        let client_id = self
            .client_id
            .clone()
            .filter(|id| !id.is_empty())
            .ok_or(ConfigError::MissingClientId)?;
        let method = self.auth_method.unwrap_or_default();
        let secret = || {
            self.client_secret
                .clone()
                .ok_or(ConfigError::MissingClientSecret(method.as_str()))
        };
        let auth = match method {
            AuthMethod::ClientSecretBasic => ClientAuth::SecretBasic {
                client_id,
                secret: secret()?,
                form_encode: self.form_encode_basic.unwrap_or(true),
            },
            AuthMethod::ClientSecretPost => ClientAuth::SecretPost {
                client_id,
                secret: secret()?,
            },
        };
        TokenEndpoint::new(
            url,
            auth,
            self.params.clone(),
            self.max_response_bytes
                .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES),
            self.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT),
        )
    }
}

/// HTTPS, or plain HTTP to a loopback host (or with the explicit opt-in). No user info: it
/// would be sent to the server and shown nowhere else.
pub(crate) fn check_token_url(url: &Url, allow_insecure_http: bool) -> Result<(), ConfigError> {
    let shown = crate::endpoint::endpoint_label(url);
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::InvalidTokenUrl(format!("{shown}: no host")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::InvalidTokenUrl(format!(
            "{shown}: credentials in the URL are not allowed"
        )));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_insecure_http || is_loopback(url) => Ok(()),
        "http" => Err(ConfigError::InsecureTokenUrl(shown)),
        other => Err(ConfigError::InvalidTokenUrl(format!(
            "{shown}: unsupported scheme `{other}`"
        ))),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(b: ClientCredentialsBuilder) -> Result<ClientCredentials, ConfigError> {
        b.build()
    }

    fn base(url: &str) -> ClientCredentialsBuilder {
        ClientCredentials::builder()
            .token_url(url)
            .client_id("id")
            .client_secret("secret")
    }

    #[test]
    fn token_url_rules() {
        let ok = [
            "https://auth.example.com/oauth2/token",
            "http://127.0.0.1:8080/token",
            "http://127.1.2.3/token",
            "http://localhost/token",
            "http://[::1]:9000/token",
        ];
        for url in ok {
            assert!(build(base(url)).is_ok(), "{url}");
        }
        type Check = fn(&ConfigError) -> bool;
        let bad: &[(&str, Check)] = &[
            ("http://auth.example.com/token", |e| {
                matches!(e, ConfigError::InsecureTokenUrl(_))
            }),
            ("http://10.0.0.1/token", |e| {
                matches!(e, ConfigError::InsecureTokenUrl(_))
            }),
            ("http://localhost.evil.com/token", |e| {
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
            let err = build(base(url)).unwrap_err();
            assert!(check(&err), "{url}: {err:?}");
            assert!(!err.to_string().contains("pw"), "{err}");
        }
        assert!(
            build(base("http://auth.example.com/token").danger_allow_insecure_http(true)).is_ok()
        );
    }

    #[test]
    fn required_fields_and_values() {
        let missing_url = ClientCredentials::builder()
            .client_id("id")
            .client_secret("s");
        assert_eq!(
            build(missing_url).unwrap_err(),
            ConfigError::MissingTokenUrl
        );
        let empty_id = base("https://a.example/t").client_id("");
        assert_eq!(build(empty_id).unwrap_err(), ConfigError::MissingClientId);
        let no_secret = ClientCredentials::builder()
            .token_url("https://a.example/t")
            .client_id("id");
        assert_eq!(
            build(no_secret).unwrap_err(),
            ConfigError::MissingClientSecret("client_secret_basic")
        );
        for tenant in ["bad\nvalue", "", "tab\u{7f}"] {
            assert_eq!(
                build(base("https://a.example/t").tenant_id(tenant)).unwrap_err(),
                ConfigError::InvalidTenantId,
                "{tenant:?}"
            );
        }
        assert!(matches!(
            build(base("https://a.example/t").scope("a\"b")).unwrap_err(),
            ConfigError::InvalidScope(_)
        ));
        assert!(matches!(
            build(base("https://a.example/t").allowed_origins(["nope"])).unwrap_err(),
            ConfigError::InvalidOrigin(_)
        ));
    }

    #[test]
    fn environment_variables() {
        let vars = [
            ("P_TOKEN_URL", "https://auth.example/token"),
            ("P_CLIENT_ID", "the-id"),
            ("P_CLIENT_SECRET", "the-secret"),
            ("P_SCOPE", "a  b"),
            ("P_AUTH_METHOD", "client_secret_post"),
            ("P_TENANT_ID", "acme"),
            ("P_AUDIENCE", "https://api"),
            ("P_RESOURCE", "https://res"),
        ];
        let lookup = |name: &str| {
            Ok(vars
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned()))
        };
        let b = ClientCredentialsBuilder::new()
            .env_lookup("P_", lookup)
            .unwrap();
        assert_eq!(b.token_url.as_deref(), Some("https://auth.example/token"));
        assert_eq!(b.client_id.as_deref(), Some("the-id"));
        assert_eq!(
            b.client_secret.as_ref().map(|s| s.expose_secret()),
            Some("the-secret")
        );
        assert_eq!(b.scopes, ["a", "b"]);
        assert_eq!(b.auth_method, Some(AuthMethod::ClientSecretPost));
        assert_eq!(b.tenant_id.as_deref(), Some("acme"));
        assert_eq!(
            b.params,
            [
                ("audience".to_owned(), "https://api".to_owned()),
                ("resource".to_owned(), "https://res".to_owned())
            ]
        );
        assert!(!format!("{b:?}").contains("the-secret"));
        assert!(b.build().is_ok());

        let bad = ClientCredentialsBuilder::new()
            .env_lookup("P_", |n| {
                Ok((n == "P_AUTH_METHOD").then(|| "private_key_jwt".to_owned()))
            })
            .unwrap_err();
        assert!(matches!(bad, ConfigError::InvalidEnv { ref name, .. } if name == "P_AUTH_METHOD"));
    }
}
