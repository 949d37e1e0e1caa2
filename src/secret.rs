//! Secret newtypes: `Debug` never shows the value, and the memory is zeroized when the last
//! copy is dropped (through the `zeroize` crate).
//!
//! What stays outside this rule: the `Authorization` header values built for requests are
//! `http::HeaderValue`s (the `http` crate does not zeroize them), and whatever the HTTP client
//! copies into its buffers. SECURITY.md says so.

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

/// A shared, zeroized-on-drop string.
type SecretString = Arc<Zeroizing<String>>;

/// A client secret.
///
/// `Debug` prints `ClientSecret([redacted])`; there is no `Display`. Zeroized when the last
/// clone is dropped.
///
/// ```
/// use client_credentials::ClientSecret;
///
/// let secret = ClientSecret::new("s3cr3t");
/// assert_eq!(format!("{secret:?}"), "ClientSecret([redacted])");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(SecretString);

impl ClientSecret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(Arc::new(Zeroizing::new(secret.into())))
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
/// value is shared); the value is zeroized when the last clone is dropped.
///
/// ```
/// use client_credentials::AccessToken;
///
/// let token = AccessToken::new("eyJhbGciOi...");
/// assert_eq!(format!("{token:?}"), "AccessToken([redacted])");
/// assert_eq!(token.secret(), "eyJhbGciOi...");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(SecretString);

impl AccessToken {
    /// Wraps a token value.
    pub fn new(token: impl Into<String>) -> Self {
        Self(Arc::new(Zeroizing::new(token.into())))
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
