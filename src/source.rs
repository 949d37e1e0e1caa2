//! Where tokens come from: the [`TokenSource`] seam, the [`Token`] it yields and [`Scopes`].

use std::fmt;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::{AccessToken, Error};

/// A boxed, `Send` future, as returned by [`TokenSource::fetch_token`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A token as a [`TokenSource`] hands it to the cache.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Token {
    /// The access token.
    pub access_token: AccessToken,
    /// The lifetime the server announced (`expires_in`), if it did. `None` means the cache uses
    /// its configured default lifetime.
    pub expires_in: Option<Duration>,
    /// The scopes the server says it granted (`scope`), if it said.
    pub scope: Option<String>,
}

impl Token {
    /// A token with the given lifetime (`None`: unknown).
    pub fn new(access_token: AccessToken, expires_in: Option<Duration>) -> Self {
        Self {
            access_token,
            expires_in,
            scope: None,
        }
    }
}

/// Anything that can produce access tokens: the built-in [`TokenEndpoint`](crate::TokenEndpoint),
/// or your own (a token from a sidecar, a vault, a fleet-wide store in front of the endpoint).
///
/// The cache calls it at most once at a time per scope set, in a task of its own (so a caller
/// that gives up does not cancel it), retries transient failures
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
/// let credentials = ClientCredentials::builder().token_source(FromVault).build()?;
/// assert_eq!(credentials.access_token().await?.secret(), "from-the-vault");
/// # Ok(())
/// # }
/// ```
pub trait TokenSource: Send + Sync + 'static {
    /// Fetches a new token for these scopes.
    fn fetch_token<'a>(&'a self, scopes: &'a Scopes) -> BoxFuture<'a, Result<Token, Error>>;
}

impl<T: TokenSource + ?Sized> TokenSource for Arc<T> {
    fn fetch_token<'a>(&'a self, scopes: &'a Scopes) -> BoxFuture<'a, Result<Token, Error>> {
        (**self).fetch_token(scopes)
    }
}

/// A set of OAuth scopes (RFC 6749 §3.3).
///
/// Kept in the order given (that is the order sent in `scope`), without duplicates; two sets
/// with the same scopes in another order are equal, so they share one cached token.
///
/// ```
/// use client_credentials::Scopes;
///
/// let a = Scopes::new(["accounts.read", "accounts.write"]);
/// let b: Scopes = "accounts.write accounts.read".parse().unwrap();
/// assert_eq!(a, b);
/// assert_eq!(a.to_string(), "accounts.read accounts.write");
/// ```
#[derive(Clone, Default)]
pub struct Scopes {
    list: Arc<[Box<str>]>,
    key: Arc<str>,
}

impl Scopes {
    /// A scope set from scope strings. Empty strings are dropped; scopes containing a space
    /// are split. Use [`Scopes::try_new`] to reject invalid characters.
    pub fn new<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list: Vec<Box<str>> = Vec::new();
        for scope in scopes {
            for part in scope.as_ref().split(' ').filter(|s| !s.is_empty()) {
                if !list.iter().any(|s| &**s == part) {
                    list.push(part.into());
                }
            }
        }
        let mut sorted: Vec<&str> = list.iter().map(|s| &**s).collect();
        sorted.sort_unstable();
        let key: Arc<str> = Arc::from(sorted.join(" "));
        Self {
            list: list.into(),
            key,
        }
    }

    /// Like [`Scopes::new`], but fails on a character RFC 6749 §3.3 does not allow in a scope
    /// (`%x21 / %x23-5B / %x5D-7E`: printable ASCII except `"` and `\`).
    pub fn try_new<I, S>(scopes: I) -> Result<Self, crate::ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let scopes = Self::new(scopes);
        for s in scopes.iter() {
            if !s
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
            {
                return Err(crate::ConfigError::InvalidScope(s.to_owned()));
            }
        }
        Ok(scopes)
    }

    /// Whether there are no scopes (the `scope` parameter is then not sent).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The scopes in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        self.list.iter().map(|s| &**s)
    }
}

impl fmt::Display for Scopes {
    /// The space-separated list, as sent in the `scope` parameter.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(s)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq for Scopes {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Scopes {}

impl Hash for Scopes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl std::str::FromStr for Scopes {
    type Err = crate::ConfigError;

    /// Parses a space-separated scope list, rejecting invalid characters.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::try_new(s.split(' '))
    }
}

impl<S: AsRef<str>> FromIterator<S> for Scopes {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        Self::new(iter)
    }
}
