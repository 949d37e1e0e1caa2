//! Secret newtypes whose `Debug` never shows the value.

use std::fmt;
use std::sync::Arc;

/// A client secret.
///
/// `Debug` prints `ClientSecret([redacted])`; there is no `Display`.
///
/// ```
/// use client_credentials::ClientSecret;
///
/// let secret = ClientSecret::new("s3cr3t");
/// assert_eq!(format!("{secret:?}"), "ClientSecret([redacted])");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(Arc<str>);

impl ClientSecret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(Arc::from(secret.into()))
    }

    /// The raw secret.
    ///
    /// # Security Warning
    ///
    /// Do not log or print the value. It is exposed only to build the token request.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret([redacted])")
    }
}

impl From<String> for ClientSecret {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

impl From<&str> for ClientSecret {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

/// An access token issued by the authorization server.
///
/// `Debug` prints `AccessToken([redacted])`; there is no `Display`. Cloning is cheap (the
/// value is shared).
///
/// ```
/// use client_credentials::AccessToken;
///
/// let token = AccessToken::new("eyJhbGciOi...");
/// assert_eq!(format!("{token:?}"), "AccessToken([redacted])");
/// assert_eq!(token.secret(), "eyJhbGciOi...");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(Arc<str>);

impl AccessToken {
    /// Wraps a token value.
    pub fn new(token: impl Into<String>) -> Self {
        Self(Arc::from(token.into()))
    }

    /// The raw token value, for code that is not an HTTP middleware (a websocket handshake,
    /// a subprocess environment).
    ///
    /// # Security Warning
    ///
    /// Do not log or print the value: anyone who sees it can call the API until it expires.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken([redacted])")
    }
}
