//! Error types.
//!
//! Every error names the token endpoint it came from (scheme, host, port and path: never a
//! query string or user info) and, for OAuth failures, the RFC 6749 §5.2 error code. No error
//! ever holds the client secret or a token, so `Display` and `Debug` are safe to log.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::text::shown;

/// A boxed error from a user-supplied [`TokenSource`](crate::TokenSource).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The RFC 6749 §5.2 `error` code of a failed token request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OAuthErrorCode {
    /// `invalid_request`: a parameter is missing, repeated or malformed.
    InvalidRequest,
    /// `invalid_client`: client authentication failed (wrong id or secret, wrong method).
    InvalidClient,
    /// `invalid_grant`: the grant is invalid, expired or revoked.
    InvalidGrant,
    /// `unauthorized_client`: this client may not use the client credentials grant.
    UnauthorizedClient,
    /// `unsupported_grant_type`: the server does not support the client credentials grant.
    UnsupportedGrantType,
    /// `invalid_scope`: a requested scope is invalid, unknown or beyond what the client may ask.
    InvalidScope,
    /// Any other code the server sent, kept verbatim.
    Other(Arc<str>),
}

impl OAuthErrorCode {
    /// Reads a code as it appears in the `error` field.
    pub fn parse(code: &str) -> Self {
        match code {
            "invalid_request" => Self::InvalidRequest,
            "invalid_client" => Self::InvalidClient,
            "invalid_grant" => Self::InvalidGrant,
            "unauthorized_client" => Self::UnauthorizedClient,
            "unsupported_grant_type" => Self::UnsupportedGrantType,
            "invalid_scope" => Self::InvalidScope,
            other => Self::Other(Arc::from(other)),
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::Other(code) => code,
        }
    }
}

impl fmt::Display for OAuthErrorCode {
    /// The code; a code the server made up is cut and escaped, so a hostile server cannot
    /// forge or flood log lines through it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", shown(self.as_str()))
    }
}

/// Why a token endpoint's successful-looking answer could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidResponse {
    /// The body is not JSON, or not the JSON object RFC 6749 §5.1 describes.
    NotJson,
    /// The body is JSON but has no `access_token` string.
    MissingAccessToken,
    /// `token_type` is not `Bearer` (compared without regard to case). Holds the type sent.
    UnsupportedTokenType(Arc<str>),
    /// The body is larger than the configured limit, in bytes.
    BodyTooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The access token contains characters that cannot be sent in an HTTP header, or is empty.
    TokenNotHeaderSafe,
    /// `expires_in` is present but neither a number nor a numeric string.
    InvalidExpiresIn,
    /// DPoP is required, and the server answered a token that is not DPoP-bound
    /// (`token_type` `Bearer`): it does not support DPoP for this client.
    NotDpopBound,
}

impl fmt::Display for InvalidResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotJson => f.write_str("the body is not a JSON object"),
            Self::MissingAccessToken => f.write_str("the body has no `access_token`"),
            Self::UnsupportedTokenType(t) => write!(f, "unsupported token_type `{}`", shown(t)),
            Self::BodyTooLarge { limit } => write!(f, "the body is larger than {limit} bytes"),
            Self::TokenNotHeaderSafe => {
                f.write_str("the access token is empty or not a valid HTTP header value")
            }
            Self::InvalidExpiresIn => f.write_str("`expires_in` is not a number"),
            Self::NotDpopBound => {
                f.write_str("the token is not DPoP-bound (token_type Bearer), and DPoP is required")
            }
        }
    }
}

/// An error getting a token.
///
/// Cheap to clone (every field is a number, an `Arc` or a small enum): while the token
/// endpoint is failing and backing off, every caller gets a clone of the last error instead of
/// a new token request.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The authorization server answered with an RFC 6749 §5.2 error.
    #[error("token endpoint {endpoint} refused the request: {code}{}", describe(.description))]
    OAuth {
        /// The token endpoint (without query).
        endpoint: Arc<str>,
        /// The HTTP status of the answer (usually 400 or 401).
        status: StatusCode,
        /// The `error` code.
        code: OAuthErrorCode,
        /// The `error_description`, if any.
        description: Option<Arc<str>>,
        /// The `error_uri`, if any.
        uri: Option<Arc<str>>,
    },
    /// The token endpoint answered with an HTTP status that carries no OAuth error.
    #[error("token endpoint {endpoint} answered HTTP {status}")]
    Status {
        /// The token endpoint (without query).
        endpoint: Arc<str>,
        /// The HTTP status.
        status: StatusCode,
        /// The `Retry-After` delay the server asked for, if any.
        retry_after: Option<Duration>,
    },
    /// The token endpoint answered with a redirect, which is never followed: it would carry
    /// the client credentials to another URL.
    #[error(
        "token endpoint {endpoint} answered with a redirect (HTTP {status}), which is not followed"
    )]
    Redirect {
        /// The token endpoint (without query).
        endpoint: Arc<str>,
        /// The redirect status.
        status: StatusCode,
    },
    /// The answer was a success status but its body could not be used.
    #[error("token endpoint {endpoint} sent an unusable answer: {kind}")]
    InvalidResponse {
        /// The token endpoint (without query).
        endpoint: Arc<str>,
        /// What was wrong with it.
        kind: InvalidResponse,
    },
    /// The token request did not complete within the configured
    /// [`request_timeout`](crate::ClientCredentialsBuilder::request_timeout), or a token source
    /// (the built-in endpoint's retries aside, any [`TokenSource`](crate::TokenSource)) did not
    /// produce a token within the [`load_timeout`](crate::ClientCredentialsBuilder::load_timeout).
    #[error("token endpoint {endpoint} did not answer within {timeout:?}")]
    Timeout {
        /// The token endpoint (without query).
        endpoint: Arc<str>,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// The connection failed (refused, reset, DNS, TLS) or the body could not be read.
    #[error("token endpoint {endpoint} could not be reached")]
    Transport {
        /// The token endpoint (without query).
        endpoint: Arc<str>,
        /// The underlying error (its URL removed).
        #[source]
        source: Arc<reqwest::Error>,
    },
    /// A user-supplied [`TokenSource`](crate::TokenSource) failed.
    #[error("token source failed")]
    Source(#[source] Arc<BoxError>),
    /// A user-supplied [`TokenSource`](crate::TokenSource) panicked, or its task was cancelled
    /// before it produced a token (the runtime shutting down, for example).
    #[error("token source panicked or was cancelled before it produced a token")]
    SourceAborted,
    /// A JWT (a client assertion or a DPoP proof) could not be signed. aws-lc-rs reports no
    /// reason; it does not happen with a key that loaded.
    #[error("a JWT could not be signed")]
    Signing,
    /// A DPoP proof names the request's URL (`htu`): a request without an absolute URL (a
    /// scheme and a host) cannot get one, so it is not sent.
    #[error("a DPoP proof needs the request's absolute URL (scheme and host)")]
    DpopUrl,
    /// The DPoP key was replaced while this request's token, bound to the old key, was being
    /// fetched: the request was not sent, and the token was dropped so the next request gets
    /// one bound to the new key.
    #[error("the DPoP key was replaced; the token bound to the old one was dropped")]
    DpopKeyReplaced,
    /// A credential read from a file, the environment or a provider cannot be sent: a client
    /// assertion whose `exp` has passed, or a value that is no JWT. No token request was sent.
    /// Names where the credential came from, never its value.
    #[error("{origin}: {reason}")]
    Credential {
        /// Where the credential came from (`client assertion file /var/run/...`).
        origin: Arc<str>,
        /// What is wrong with it.
        reason: Arc<str>,
    },
    /// The token request failed before: callers get that error until the backoff delay has
    /// passed, so an outage never turns the request rate into the token request rate.
    #[error("no token: backing off for {retry_in:?} after: {last}")]
    BackingOff {
        /// How long until the next token request may be sent.
        retry_in: Duration,
        /// The failure that started the backoff.
        #[source]
        last: Arc<Error>,
    },
}

fn describe(description: &Option<Arc<str>>) -> String {
    match description {
        // Server text: bounded and escaped so it cannot forge log lines.
        Some(d) => format!(" ({})", shown(d)),
        None => String::new(),
    }
}

impl Error {
    /// Wraps an error from a user-supplied token source (the constructor a
    /// [`TokenSource`](crate::TokenSource) uses to report its own failures).
    pub fn from_source(error: impl Into<BoxError>) -> Self {
        Self::Source(Arc::new(error.into()))
    }

    /// The RFC 6749 §5.2 code, when the server sent one (looking through
    /// [`BackingOff`](Self::BackingOff)).
    pub fn oauth_code(&self) -> Option<&OAuthErrorCode> {
        match self {
            Self::OAuth { code, .. } => Some(code),
            Self::BackingOff { last, .. } => last.oauth_code(),
            _ => None,
        }
    }

    /// Whether a new attempt may succeed: connection failures, timeouts, 429, 5xx (other than
    /// 501) and the failures of a custom source. OAuth client errors such as `invalid_client`
    /// are not transient: retrying them only adds load.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Transport { .. } | Self::Source(_) => true,
            Self::SourceAborted => true,
            Self::Status { status, .. } => {
                *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
                    || (status.is_server_error() && *status != StatusCode::NOT_IMPLEMENTED)
            }
            Self::OAuth { status, .. } => status.is_server_error(),
            Self::Redirect { .. }
            | Self::InvalidResponse { .. }
            | Self::BackingOff { .. }
            | Self::Signing
            | Self::DpopUrl
            | Self::Credential { .. } => false,
            Self::DpopKeyReplaced => true,
        }
    }

    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// An invalid configuration, reported by `build()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No token URL was configured.
    #[error("no token URL configured")]
    MissingTokenUrl,
    /// The token URL could not be parsed.
    #[error("invalid token URL: {0}")]
    InvalidTokenUrl(String),
    /// The token URL is plain HTTP on a host that is not loopback.
    #[error("token URL {0} is not HTTPS; plain HTTP is allowed only for loopback hosts (or with `danger_allow_insecure_http`)")]
    InsecureTokenUrl(String),
    /// The client id is missing or empty.
    #[error("client id is missing or empty")]
    MissingClientId,
    /// `aws_cognito` was given a domain prefix Cognito does not allow.
    #[error("invalid Cognito domain prefix `{0}`: only 1 to 63 lowercase letters, digits and inner hyphens")]
    InvalidCognitoDomainPrefix(String),
    /// `aws_cognito` was given something that is not an AWS region name.
    #[error("invalid AWS region `{0}`: expected a region name such as us-east-1")]
    InvalidAwsRegion(String),
    /// The HTTP client for the token request could not be built from the given
    /// `reqwest::ClientBuilder` (a TLS setting it could not load, for example).
    #[error("the HTTP client for the token request could not be built: {0}")]
    HttpClient(String),
    /// The authentication method needs a client secret and none was configured.
    #[error("client secret is missing (required by {0})")]
    MissingClientSecret(&'static str),
    /// The tenant id cannot be sent as an HTTP header value.
    #[error("tenant id is not a valid HTTP header value")]
    InvalidTenantId,
    /// A scope is empty or contains characters RFC 6749 §3.3 does not allow.
    #[error("invalid scope `{0}`")]
    InvalidScope(String),
    /// An environment variable holds a value that cannot be used.
    #[error("environment variable {name}: {reason}")]
    InvalidEnv {
        /// The variable's name.
        name: String,
        /// What is wrong with its value.
        reason: String,
    },
    /// An origin given to `allowed_origins` is not a URL with a scheme and host.
    #[error("invalid origin `{0}`")]
    InvalidOrigin(String),
    /// A signing key could not be used: not PEM or a JWK, not the kind of key its algorithm
    /// signs with, too small, or encrypted. The message says which; it never shows the key.
    #[error("invalid signing key: {0}")]
    InvalidKey(String),
    /// The authentication method needs a signing key (`private_key_jwt`) and none was given.
    #[error("{0} needs a signing key: set `signing_key`")]
    MissingSigningKey(&'static str),
    /// A client assertion's audience is the issuer by default, and no issuer is known: call
    /// `discover`, set `issuer`, or choose another `assertion_audience`.
    #[error("a client assertion's audience is the issuer: call `discover`, set `issuer`, or choose another `assertion_audience`")]
    MissingIssuer,
    /// Mutual TLS client authentication needs a client certificate, which only the HTTP
    /// client can present: set `http_client` with an `identity`.
    #[error("{0} needs a client certificate: set `http_client` with an `identity`")]
    MissingClientCertificate(&'static str),
    /// The authentication method or DPoP needs a cargo feature this build does not have.
    #[error("{0} needs the `{1}` cargo feature")]
    FeatureMissing(&'static str, &'static str),
    /// A fleet setting cannot be used: a store URL that does not parse, a namespace or
    /// encryption key that is not valid, no encryption key without the plaintext opt-out.
    /// The message says which; it never shows a password or a key.
    #[error("fleet: {0}")]
    InvalidFleet(String),
    /// A credential file (`client_secret_file`) cannot be used: the message names the file
    /// and why (missing, writable by every user, empty, ...); it never shows the content.
    #[error("credential file {0}")]
    CredentialFile(String),
    /// A setting is out of range; the message names it and its range.
    #[error("{0}")]
    OutOfRange(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_in_messages_is_bounded_and_escaped() {
        let e = Error::OAuth {
            endpoint: Arc::from("https://auth.example/token"),
            status: StatusCode::BAD_REQUEST,
            code: OAuthErrorCode::parse(&format!("evil\nFAKE LOG LINE{}", "x".repeat(10_000))),
            description: Some(Arc::from(format!("line1\r\nline2{}", "y".repeat(10_000)))),
            uri: None,
        };
        let msg = e.to_string();
        assert!(!msg.contains('\n') && !msg.contains('\r'), "{msg}");
        assert!(msg.len() < 600, "{}", msg.len());
        assert!(msg.contains("evil\\nFAKE"), "{msg}");
    }
}
