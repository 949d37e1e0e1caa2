//! OAuth 2.0 client credentials (RFC 6749 §4.4) for the APIs a Rust service calls: one
//! middleware on the `reqwest` client, or one layer on the `tower` stack, and every request
//! carries a fresh `Authorization: Bearer` token.
//!
//! - **Cached and shared**: one cache for every clone; a hit takes no lock, no await, no
//!   allocation.
//! - **Refreshed ahead**: from 75% of the token's lifetime, in the background, so in steady
//!   state no request waits for the token endpoint; never used within 60 s of expiry (less for
//!   short-lived tokens).
//! - **Fetched once**: however many requests find the token missing at the same moment, one
//!   token request goes out.
//! - **Replayed once on `401 invalid_token`**: the rejected token is dropped, one new token is
//!   fetched (however many requests were rejected), and the request is sent again once.
//! - **Calm under failure**: transient token endpoint failures are retried with backoff;
//!   during an outage, callers get the error at once instead of each sending a token request.
//! - **Secret-safe**: the client secret and tokens never appear in `Debug`, `Display`, errors
//!   or logs.
//! - **One token per fleet** (`redis` feature): instances share the token through Redis or
//!   Valkey, with single flight across processes; Redis failing never fails a request.
//! - **Beyond shared secrets** (`jwt` feature): `private_key_jwt`, `client_secret_jwt`, mutual
//!   TLS, and DPoP-bound tokens with a fresh proof on every request.
//! - **Rotation without a restart, or no secret at all**: the secret or key read from a file
//!   (read again when it changes and when the server answers `invalid_client`) or a
//!   [`CredentialProvider`]; the previous one during a rotation window; workload identity
//!   federation with the platform's JWT as the client assertion (Kubernetes, AKS, GitHub
//!   Actions, SPIFFE).
//!
//! # Quickstart (reqwest)
//!
//! ```no_run
//! use client_credentials::ClientCredentials;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let credentials = ClientCredentials::builder()
//!     .token_url("https://my-domain.auth.us-east-1.amazoncognito.com/oauth2/token")
//!     .client_id(std::env::var("CLIENT_ID")?)
//!     .client_secret(std::env::var("CLIENT_SECRET")?)
//!     .scopes("https://api.example.com/accounts.read")
//!     .build()?;
//!
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(credentials.middleware())
//!     .build();
//! let accounts = client.get("https://api.example.com/v1/accounts").send().await?;
//! # let _ = accounts;
//! # Ok(())
//! # }
//! ```
//!
//! # Cargo features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `reqwest-middleware` | yes | [`ClientCredentialsMiddleware`] |
//! | `rustls` | yes | HTTPS for the token request through reqwest's rustls |
//! | `tower` | no | [`ClientCredentialsLayer`] and the [`tower`] module, for hyper, tonic and any `tower` stack |
//! | `fleet` | no | `Fleet` and the `TokenStore` seam: one token shared by a fleet of processes, encrypted at rest |
//! | `redis` | no | `fleet` with `RedisStore`: Redis or Valkey, standalone or Cluster, TLS, ACL users |
//! | `jwt` | no | `private_key_jwt` and `client_secret_jwt` client authentication, DPoP (RFC 9449): `SigningKey`, `JwsAlgorithm`, the builder's `signing_key`, `dpop`, `dpop_key` (aws-lc-rs, the crypto library rustls already builds) |
//!
//! Without `rustls`, enable a TLS feature on your own `reqwest` dependency (features unify).
//!
//! # Tracing
//!
//! Events and spans use stable field names: `endpoint`, `scopes`, `attempt`, `reason`
//! (`demand`, `refresh_ahead`, `forced`), `expires_in`, `outcome` (`ok`, `error`), `error`,
//! `retry_in`. Never a token or a secret.
//!
//! # Where things are
//!
//! | module | what it owns |
//! |---|---|
//! | `config` | the builder, environment variables, vendor recipes, discovery, the URL rules |
//! | `client_auth` | how the client proves who it is to the token endpoint |
//! | `jose` | keys, JWS signing, client assertions (`jwt` feature) |
//! | `proof` | DPoP proofs, the proof key and the nonces servers hand out (`jwt` feature) |
//! | `fleet` | the store a fleet shares, its encryption, breaker and Redis implementation (`fleet`, `redis` features) |
//! | `endpoint` | the token request and the parsing of its answer |
//! | `cache` | the shared token cache, a file per job (its module docs map each guarantee) |
//! | `decide` | every per-request decision, for both adapters |
//! | [`challenge`] | reading an API's rejection |
//! | `reqwest`, [`tower`] | the adapters: they move requests, responses and bodies only |
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]

mod body;
mod cache;
pub mod challenge;
mod client_auth;
mod config;
mod credentials;
mod decide;
mod endpoint;
mod error;
mod federation;
#[cfg(feature = "fleet")]
mod fleet;
#[cfg(feature = "jwt")]
mod jose;
mod policy;
#[cfg(feature = "jwt")]
mod proof;
#[cfg(feature = "reqwest-middleware")]
mod reqwest;
mod rotation;
mod scopes;
mod secret;
mod source;
mod stats;
mod text;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;

pub use crate::client_auth::AuthMethod;
pub use crate::config::discovery::{DiscoveryError, InvalidDocument};
pub use crate::config::{
    builder, AssertionAudience, ClientCredentialsBuilder, DEFAULT_ASSERTION_LIFETIME,
    DEFAULT_ENV_PREFIX, DEFAULT_MAX_SCOPE_SETS,
};
pub use crate::credentials::{ClientCredentials, RequestAuthorization};
pub use crate::decide::{RequestOptions, TenantId, X_TENANT_ID};
pub use crate::endpoint::{TokenEndpoint, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_REQUEST_TIMEOUT};
pub use crate::error::{BoxError, ConfigError, Error, InvalidResponse, OAuthErrorCode};
pub use crate::federation::GitHubActionsToken;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use crate::fleet::RedisStore;
#[cfg(feature = "fleet")]
#[cfg_attr(docsrs, doc(cfg(feature = "fleet")))]
pub use crate::fleet::{
    EncryptionKey, Eviction, Fleet, ForcedBackoff, StoreError, StoreKey, StoredToken, TokenStore,
    DEFAULT_BREAKER_OPEN, DEFAULT_LOCK_TTL, DEFAULT_OPERATION_TIMEOUT,
};
#[cfg(feature = "jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "jwt")))]
pub use crate::jose::{JwsAlgorithm, SigningKey};
pub use crate::policy::{
    RetryPolicy, DEFAULT_EXPIRY_MARGIN, DEFAULT_FORCED_REFRESH_BACKOFF,
    DEFAULT_FORCED_REFRESH_BACKOFF_MAX, DEFAULT_LIFETIME, DEFAULT_LOAD_TIMEOUT, DEFAULT_REFRESH_AT,
    DEFAULT_REFRESH_JITTER, MAX_LIFETIME, MIN_LIFETIME,
};
#[cfg(feature = "reqwest-middleware")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest-middleware")))]
pub use crate::reqwest::ClientCredentialsMiddleware;
pub use crate::rotation::{CredentialProvider, DEFAULT_FILE_CHECK_INTERVAL};
pub use crate::scopes::Scopes;
pub use crate::secret::{AccessToken, ClientSecret};
pub use crate::source::{BoxFuture, Token, TokenSource, TokenType};
pub use crate::stats::Stats;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use crate::tower::ClientCredentialsLayer;

/// Entry points for the fuzz targets in `fuzz/` (built with `--cfg fuzzing`, which cargo-fuzz
/// sets, or the hidden `__fuzzing` feature, for the corpus replay in `tests/fuzz_replay.rs`):
/// not part of the API.
#[cfg(any(fuzzing, feature = "__fuzzing"))]
#[doc(hidden)]
pub mod fuzzing {
    use std::time::{Duration, SystemTime};

    /// The `Retry-After` parser (delay-seconds or an HTTP-date), at `now`.
    pub fn parse_retry_after(value: &http::HeaderValue, now: SystemTime) -> Option<Duration> {
        crate::endpoint::parse_retry_after(value, now)
    }

    /// A token as a fleet's stored value opens it: its value, lifetime and refresh point.
    #[cfg(feature = "fleet")]
    #[derive(Debug, PartialEq, Eq)]
    pub struct Stored {
        /// The token's value.
        pub token: String,
        /// `Bearer` or `DPoP`.
        pub scheme: &'static str,
        /// The scopes granted, if the server said.
        pub scope: Option<String>,
        /// For a DPoP-bound token, its key's thumbprint.
        pub jkt: Option<String>,
        /// The lifetime.
        pub lifetime: Duration,
        /// When to refresh it.
        pub refresh_in: Duration,
    }

    #[cfg(feature = "fleet")]
    fn codec(encrypted: bool) -> Option<crate::fleet::codec::Codec> {
        use crate::fleet::codec::Codec;
        Some(if encrypted {
            Codec::Encrypted(vec![crate::EncryptionKey::new("fuzz", &[7; 32]).ok()?])
        } else {
            Codec::Plaintext
        })
    }

    /// Opens a fleet's stored value read under the store key `name` (encrypted with the fuzz
    /// key, or the plaintext format).
    #[cfg(feature = "fleet")]
    pub fn fleet_open(encrypted: bool, name: &str, value: &[u8]) -> Option<Stored> {
        let opened = codec(encrypted)?.open(name, value)?;
        Some(Stored {
            token: opened.token.access_token.secret().to_owned(),
            scheme: opened.token.token_type.scheme(),
            scope: opened.token.scope.clone(),
            jkt: opened.token.dpop_jkt.as_deref().map(str::to_owned),
            lifetime: opened.lifetime,
            refresh_in: opened.refresh_in,
        })
    }

    /// Seals `stored` as a fleet writes it under the store key `name`.
    #[cfg(feature = "fleet")]
    pub fn fleet_seal(encrypted: bool, name: &str, stored: &Stored) -> Option<Vec<u8>> {
        let mut token = crate::Token::new(
            crate::AccessToken::new(stored.token.clone()),
            Some(stored.lifetime),
        );
        token.scope = stored.scope.clone();
        token.dpop_jkt = stored.jkt.as_deref().map(std::sync::Arc::from);
        if stored.scheme == "DPoP" {
            token.token_type = crate::TokenType::Dpop;
        }
        codec(encrypted)?.seal(name, &token, stored.lifetime, stored.refresh_in)
    }

    /// The token endpoint's answer parser.
    pub fn parse_token_response(status: u16, body: &[u8]) -> Result<crate::Token, crate::Error> {
        let status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
        crate::endpoint::parse_token_response(
            &std::sync::Arc::from("https://auth.example/token"),
            status,
            None,
            body,
        )
    }

    /// The `DPoP-Nonce` header's parser.
    #[cfg(feature = "jwt")]
    pub fn parse_dpop_nonce(value: &http::HeaderValue) -> Option<&str> {
        crate::proof::parse_nonce(value)
    }

    /// The authorization server metadata parser (discovery).
    pub fn read_metadata(body: &[u8]) -> bool {
        crate::config::discovery::read_metadata_for_fuzzing(body)
    }
}

/// The adapters' per-request token lookup, for `benches/cache_hit.rs`: not part of the API.
#[cfg(feature = "__bench")]
#[doc(hidden)]
pub mod __bench {
    use http::{Extensions, HeaderMap, HeaderValue, Uri};

    use crate::decide::{Exchange, RequestOptions, Target};
    use crate::ClientCredentials;

    /// An exchange made for one request, as the tower service holds it.
    pub struct Prepared(Exchange<ClientCredentials>);

    impl std::fmt::Debug for Prepared {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Prepared")
        }
    }

    impl Prepared {
        /// The exchange the tower service makes for a request to `uri` with `headers`.
        pub fn new(
            credentials: &ClientCredentials,
            uri: &Uri,
            headers: &HeaderMap,
        ) -> Option<Self> {
            Exchange::begin(credentials.clone(), Target::uri(uri), headers, None).map(Self)
        }

        /// The token lookup both adapters make on their exchange: the hit, no future built.
        pub fn lookup(&self) -> Option<HeaderValue> {
            self.0.authorization_now().map(|c| c.header)
        }
    }

    /// What the reqwest middleware does per request to reach a cached token:
    /// `Exchange::begin` (borrowing the credentials), then the hit.
    pub fn reqwest_lookup(
        credentials: &ClientCredentials,
        url: &url::Url,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Option<HeaderValue> {
        let exchange = Exchange::begin(
            credentials,
            Target::url(url),
            headers,
            extensions.get::<RequestOptions>(),
        )?;
        exchange.authorization_now().map(|c| c.header)
    }

    /// DPoP proofs as the adapters make them, for `benches/dpop.rs`.
    #[cfg(feature = "jwt")]
    #[derive(Debug)]
    pub struct DpopProofs(crate::proof::Dpop);

    #[cfg(feature = "jwt")]
    impl DpopProofs {
        /// Proofs signed with `key`.
        pub fn new(key: crate::SigningKey) -> Self {
            Self(crate::proof::Dpop::new(key, true))
        }

        /// One proof for `method` on `htu` for a token whose hash is `ath`: what every DPoP
        /// request costs (the token's hash is computed once per token, and kept).
        pub fn proof(&self, method: &http::Method, htu: &str, ath: &str) -> HeaderValue {
            self.0
                .proof(method, htu, Some(ath), None)
                .unwrap_or_else(|_| HeaderValue::from_static(""))
        }

        /// A token's hash, as proofs carry it (`ath`).
        pub fn ath(token: &str) -> String {
            crate::proof::ath(token)
        }
    }

    /// What the tower service does per request to reach a cached token: `Exchange::begin`
    /// (owning a clone of the credentials, as its future must), then the hit.
    pub fn tower_lookup(
        credentials: &ClientCredentials,
        uri: &Uri,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Option<HeaderValue> {
        let exchange = Exchange::begin(
            credentials.clone(),
            Target::uri(uri),
            headers,
            extensions.get::<RequestOptions>(),
        )?;
        exchange.authorization_now().map(|c| c.header)
    }
}

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
