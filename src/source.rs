//! Where tokens come from: the [`TokenSource`] seam and the [`Token`] it yields.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::{AccessToken, Error, Scopes};

/// A boxed, `Send` future, as returned by [`TokenSource::fetch_token`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a token is presented to the API (the token endpoint's `token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TokenType {
    /// `Authorization: Bearer <token>` (RFC 6750).
    #[default]
    Bearer,
    /// `Authorization: DPoP <token>` with a `DPoP` proof on every request (RFC 9449): a token
    /// bound to the client's DPoP key.
    Dpop,
}

impl TokenType {
    /// The scheme of the `Authorization` header (`Bearer`, `DPoP`).
    pub fn scheme(&self) -> &'static str {
        match self {
            Self::Bearer => "Bearer",
            Self::Dpop => "DPoP",
        }
    }
}

/// A token as a [`TokenSource`] hands it to the cache.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Token {
    /// The access token.
    pub access_token: AccessToken,
    /// How it is presented (`Bearer` unless the built-in endpoint got a DPoP-bound token).
    pub token_type: TokenType,
    /// The lifetime the server announced (`expires_in`), if it did. See [`Token::new`] for
    /// how the cache reads it.
    pub expires_in: Option<Duration>,
    /// The scopes the server says it granted (`scope`), if it said.
    pub scope: Option<String>,
    /// For a DPoP-bound token: the thumbprint of the key it is bound to.
    pub(crate) dpop_jkt: Option<Arc<str>>,
}

impl Token {
    /// A token with the given lifetime, counted from when the cache asked for it.
    ///
    /// How the cache reads the lifetime (one rule, applied to every source, the built-in
    /// token endpoint included):
    ///
    /// - `None` (unknown): the configured
    ///   [`default_lifetime`](crate::ClientCredentialsBuilder::default_lifetime) (5 minutes
    ///   unless set).
    /// - Below [`MIN_LIFETIME`](crate::MIN_LIFETIME) (1 s), zero included: raised to it, so a
    ///   source announcing `0` cannot turn every request into a token request.
    /// - Above [`MAX_LIFETIME`](crate::MAX_LIFETIME) (ten years), up to `Duration::MAX`:
    ///   lowered to it. A credential that never expires (a static key behind a custom source)
    ///   is thus used for ten years less the expiry margin, and refreshed ahead after 7.5.
    ///
    /// Nothing a source announces can make the cache panic or stop serving.
    pub fn new(access_token: AccessToken, expires_in: Option<Duration>) -> Self {
        Self {
            access_token,
            token_type: TokenType::Bearer,
            expires_in,
            scope: None,
            dpop_jkt: None,
        }
    }
}

/// Anything that can produce access tokens: the built-in [`TokenEndpoint`](crate::TokenEndpoint),
/// or your own (a token from a sidecar, a vault, a fleet-wide store in front of the endpoint).
///
/// The cache calls it at most once at a time per scope set, in a task of its own (so a caller
/// that gives up does not cancel it), gives each call at most the
/// [`load_timeout`](crate::ClientCredentialsBuilder::load_timeout), retries transient failures
/// ([`Error::is_transient`]) with backoff, and turns a panic into [`Error::SourceAborted`].
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use client_credentials::{AccessToken, BoxFuture, ClientCredentials, Error, Scopes, Token, TokenSource};
///
/// struct FromVault;
///
/// impl TokenSource for FromVault {
///     fn fetch_token<'a>(&'a self, _scopes: &'a Scopes) -> BoxFuture<'a, Result<Token, Error>> {
///         Box::pin(async {
///             Ok(Token::new(AccessToken::new("from-the-vault"), Some(Duration::from_secs(600))))
///         })
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let credentials = ClientCredentials::from_source(FromVault).build()?;
/// assert_eq!(credentials.access_token().await?.secret(), "from-the-vault");
/// # Ok(())
/// # }
/// ```
pub trait TokenSource: Send + Sync + 'static {
    /// Fetches a new token for these scopes. Failures of your own are
    /// [`Error::from_source`].
    fn fetch_token<'a>(&'a self, scopes: &'a Scopes) -> BoxFuture<'a, Result<Token, Error>>;
}

impl<T: TokenSource + ?Sized> TokenSource for Arc<T> {
    fn fetch_token<'a>(&'a self, scopes: &'a Scopes) -> BoxFuture<'a, Result<Token, Error>> {
        (**self).fetch_token(scopes)
    }
}
