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
//! - **Retried once on `401 invalid_token`**: the rejected token is dropped, one new token is
//!   fetched (however many requests were rejected), and the request is sent again once.
//! - **Calm under failure**: transient token endpoint failures are retried with backoff;
//!   during an outage, callers get the error at once instead of each sending a token request.
//! - **Secret-safe**: the client secret and tokens never appear in `Debug`, `Display`, errors
//!   or logs.
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
//!     .scope("https://api.example.com/accounts.read")
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
//! | `tower` | no | [`ClientCredentialsLayer`], for hyper, tonic and any `tower` stack |
//!
//! Without `rustls`, enable a TLS feature on your own `reqwest` dependency (features unify).
//!
//! # Tracing
//!
//! Events and spans use stable field names: `endpoint_host`, `scopes`, `attempt`, `reason`
//! (`demand`, `refresh_ahead`, `forced`), `expires_in`, `outcome` (`ok`, `error`), `error`,
//! `retry_in`. Never a token or a secret.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]

mod auth;
mod body;
mod cache;
pub mod challenge;
mod config;
mod credentials;
mod discovery;
mod endpoint;
mod error;
mod policy;
#[cfg(feature = "reqwest-middleware")]
mod reqwest;
mod secret;
mod source;
mod stats;
#[cfg(feature = "tower")]
pub mod tower;
mod vendor;

pub use crate::auth::{RequestOptions, X_TENANT_ID};
pub use crate::body::ResponseBody;
pub use crate::config::{ClientCredentialsBuilder, DEFAULT_ENV_PREFIX, DEFAULT_MAX_SCOPE_SETS};
pub use crate::credentials::ClientCredentials;
pub use crate::discovery::{DiscoveryError, InvalidDocument};
pub use crate::endpoint::{
    parse_token_response, AuthMethod, TokenEndpoint, DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_REQUEST_TIMEOUT,
};
pub use crate::error::{BoxError, ConfigError, Error, InvalidResponse, OAuthErrorCode};
pub use crate::policy::{
    RetryPolicy, DEFAULT_EXPIRY_MARGIN, DEFAULT_FORCED_REFRESH_INTERVAL, DEFAULT_LIFETIME,
    DEFAULT_REFRESH_AT, DEFAULT_REFRESH_JITTER, MIN_LIFETIME,
};
#[cfg(feature = "reqwest-middleware")]
pub use crate::reqwest::ClientCredentialsMiddleware;
pub use crate::secret::{AccessToken, ClientSecret};
pub use crate::source::{BoxFuture, Scopes, Token, TokenSource};
pub use crate::stats::Stats;
#[cfg(feature = "tower")]
pub use crate::tower::{ClientCredentialsLayer, ClientCredentialsService};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
