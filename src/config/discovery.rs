//! Building the configuration from an issuer URL: OpenID Connect Discovery 1.0 and RFC 8414
//! authorization server metadata.
//!
//! [`ClientCredentialsBuilder::discover`] reads the issuer's metadata document, takes its
//! `token_endpoint` and, unless the builder already has one, picks the client authentication
//! method from `token_endpoint_auth_methods_supported`.
//!
//! # Example
//!
//! ```no_run
//! use client_credentials::ClientCredentials;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let credentials = ClientCredentials::builder()
//!     .client_id(std::env::var("CLIENT_ID")?)
//!     .client_secret(std::env::var("CLIENT_SECRET")?)
//!     .scopes("idp_api")
//!     .discover("https://login.example.com")
//!     .await?
//!     .build()?;
//! # let _ = credentials;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::time::Duration;

use http::header::ACCEPT;
use http::StatusCode;
use serde::Deserialize;
use url::Url;

use super::url::check;
use crate::endpoint::{
    read_limited, ReadError, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_REQUEST_TIMEOUT,
};
use crate::text::{shown, unparsed_url_label, url_label as endpoint_label};
use crate::{AuthMethod, ClientCredentialsBuilder, ConfigError};

/// The OpenID Connect Discovery 1.0 well-known suffix.
const OPENID_CONFIGURATION: &str = ".well-known/openid-configuration";
/// The RFC 8414 well-known suffix.
const OAUTH_AUTHORIZATION_SERVER: &str = ".well-known/oauth-authorization-server";

/// Why [`ClientCredentialsBuilder::discover`] could not configure the token endpoint.
///
/// Every variant names the URL concerned (scheme, host, port and path). Discovery sends no
/// credentials, so no variant can hold a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The issuer is not an HTTPS URL (plain HTTP only on loopback hosts, as for the token
    /// URL), has a query or fragment, or is a metadata document URL instead of an issuer.
    #[error("invalid issuer `{issuer}`: {reason}")]
    InvalidIssuer {
        /// The issuer as given (without user info, query or fragment).
        issuer: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Neither well-known URL has a document: each answered a client error (404, typically).
    #[error("no authorization server metadata at {}", list_attempts(.tried))]
    NotFound {
        /// The URLs tried, in order, with the status each answered.
        tried: Vec<(String, StatusCode)>,
    },
    /// A well-known URL answered a status that is neither a success nor a client error
    /// (a 5xx, for example): discovery stops there rather than hide an outage.
    #[error("metadata URL {url} answered HTTP {status}")]
    Status {
        /// The metadata URL.
        url: String,
        /// The status it answered.
        status: StatusCode,
    },
    /// A well-known URL answered with a redirect, which is not followed.
    #[error("metadata URL {url} answered with a redirect (HTTP {status}), which is not followed")]
    Redirect {
        /// The metadata URL.
        url: String,
        /// The redirect status.
        status: StatusCode,
    },
    /// The document was found but cannot be used.
    #[error("metadata document at {url} is unusable: {kind}")]
    InvalidDocument {
        /// The metadata URL.
        url: String,
        /// What is wrong with the document.
        kind: InvalidDocument,
    },
    /// The metadata request did not complete within the builder's
    /// [`request_timeout`](ClientCredentialsBuilder::request_timeout).
    #[error("metadata URL {url} did not answer within {timeout:?}")]
    Timeout {
        /// The metadata URL.
        url: String,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// The builder's settings do not allow discovery: its
    /// [`http_client`](ClientCredentialsBuilder::http_client) could not be built.
    #[error(transparent)]
    Config(ConfigError),
    /// The connection failed (refused, reset, DNS, TLS) or the body could not be read.
    #[error("metadata URL {url} could not be reached")]
    Transport {
        /// The metadata URL.
        url: String,
        /// The underlying error (its URL removed).
        #[source]
        source: reqwest::Error,
    },
}

/// What is wrong with a metadata document (see [`DiscoveryError::InvalidDocument`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidDocument {
    /// The body is not a JSON object with the member types RFC 8414 §2 gives.
    NotJson,
    /// The body is larger than the builder's
    /// [`max_response_bytes`](ClientCredentialsBuilder::max_response_bytes).
    TooLarge {
        /// The limit that was exceeded, in bytes.
        limit: usize,
    },
    /// The document has no `token_endpoint`.
    MissingTokenEndpoint,
    /// `token_endpoint` is not a URL the token request may go to: not HTTPS (plain HTTP only on
    /// loopback hosts), no host, or user info in it.
    InvalidTokenEndpoint(ConfigError),
    /// The document's `issuer` is not the issuer it was fetched for (OpenID Connect Discovery
    /// §4.3, RFC 8414 §3.3: such a document must not be used).
    IssuerMismatch {
        /// The issuer discovery was asked for.
        expected: String,
        /// The issuer the document names.
        found: String,
    },
    /// `token_endpoint_auth_methods_supported` offers neither `client_secret_basic` nor
    /// `client_secret_post`, and the builder has no [`auth_method`](ClientCredentialsBuilder::auth_method).
    NoSupportedAuthMethod {
        /// The methods the server offers.
        offered: Vec<String>,
    },
}

impl fmt::Display for InvalidDocument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotJson => f.write_str("not a JSON object as RFC 8414 §2 describes"),
            Self::TooLarge { limit } => write!(f, "the body is larger than {limit} bytes"),
            Self::MissingTokenEndpoint => f.write_str("no `token_endpoint`"),
            Self::InvalidTokenEndpoint(e) => write!(f, "`token_endpoint`: {e}"),
            Self::IssuerMismatch { expected, found } => write!(
                f,
                "`issuer` is `{}`, not `{}`",
                shown(found),
                shown(expected)
            ),
            Self::NoSupportedAuthMethod { offered } => {
                let offered: Vec<&str> = offered.iter().take(8).map(String::as_str).collect();
                write!(
                    f,
                    "`token_endpoint_auth_methods_supported` offers no method this crate \
                     implements ({})",
                    shown(&offered.join(", "))
                )
            }
        }
    }
}

fn list_attempts(tried: &[(String, StatusCode)]) -> String {
    tried
        .iter()
        .map(|(url, status)| format!("{url} (HTTP {})", status.as_u16()))
        .collect::<Vec<_>>()
        .join(" nor ")
}

/// The members of the metadata document this crate uses (RFC 8414 §2).
#[derive(Deserialize)]
struct Metadata {
    issuer: Option<String>,
    token_endpoint: Option<String>,
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// RFC 8705 §5: the endpoints to use with mutual TLS.
    mtls_endpoint_aliases: Option<MtlsAliases>,
    /// RFC 9449 §5.1.
    dpop_signing_alg_values_supported: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct MtlsAliases {
    token_endpoint: Option<String>,
}

/// What a metadata document gives the builder.
struct Discovered {
    token_url: Url,
    method: AuthMethod,
    issuer: String,
    dpop_algs: Option<Vec<String>>,
}

/// The metadata parser on arbitrary bytes, for the fuzz target: never panics.
#[cfg(any(fuzzing, feature = "__fuzzing"))]
pub(crate) fn read_metadata_for_fuzzing(body: &[u8]) -> bool {
    let Ok(issuer) = Url::parse("https://auth.example") else {
        return false;
    };
    ClientCredentialsBuilder::new()
        .read_document(&issuer, "https://auth.example", body)
        .is_ok()
}

/// The metadata URLs for an issuer, in the order they are tried.
///
/// 1. OpenID Connect Discovery 1.0 §4: `/.well-known/openid-configuration` **appended** to
///    the issuer (`https://host/tenant` → `https://host/tenant/.well-known/openid-configuration`).
/// 2. RFC 8414 §3.1: `/.well-known/oauth-authorization-server` **inserted** between the host and
///    the issuer's path (`https://host/tenant` →
///    `https://host/.well-known/oauth-authorization-server/tenant`).
///
/// For an issuer without a path both are simply `https://host/.well-known/...`. A trailing `/`
/// on the issuer is ignored.
fn metadata_urls(issuer: &Url) -> [Url; 2] {
    let path = issuer.path().trim_end_matches('/');
    let mut oidc = issuer.clone();
    oidc.set_path(&format!("{path}/{OPENID_CONFIGURATION}"));
    let mut rfc8414 = issuer.clone();
    rfc8414.set_path(&format!("/{OAUTH_AUTHORIZATION_SERVER}{path}"));
    [oidc, rfc8414]
}

/// Parses and checks an issuer identifier.
fn parse_issuer(issuer: &str, allow_insecure_http: bool) -> Result<Url, DiscoveryError> {
    let invalid = |shown: String, reason: String| DiscoveryError::InvalidIssuer {
        issuer: shown,
        reason,
    };
    let url = Url::parse(issuer.trim())
        .map_err(|e| invalid(unparsed_url_label(issuer), e.to_string()))?;
    let shown = endpoint_label(&url);
    // An issuer has no query or fragment (RFC 8414 §2).
    check(&url, allow_insecure_http, true)
        .map_err(|problem| invalid(shown.clone(), problem.reason().to_owned()))?;
    if url.path().contains("/.well-known/") {
        return Err(invalid(
            shown,
            "this is a metadata document URL; pass the issuer (the part before `/.well-known/`)"
                .to_owned(),
        ));
    }
    Ok(url)
}

/// `issuer` values compared as RFC 8414 §3.3 asks, except that a trailing `/` is ignored
/// (servers differ on it and it names the same issuer).
fn same_issuer(expected: &Url, found: &str) -> bool {
    expected.as_str().trim_end_matches('/') == found.trim().trim_end_matches('/')
}

/// One metadata request's result, before the fallback decision.
enum Fetched {
    Document(bytes::Bytes),
    ClientError(StatusCode),
}

struct Fetcher {
    client: reqwest::Client,
    timeout: Duration,
    limit: usize,
}

impl Fetcher {
    async fn fetch(&self, url: &Url) -> Result<Fetched, DiscoveryError> {
        let shown = endpoint_label(url);
        let shown = shown.as_str();
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                DiscoveryError::Timeout {
                    url: shown.to_owned(),
                    timeout: self.timeout,
                }
            } else {
                DiscoveryError::Transport {
                    url: shown.to_owned(),
                    source: e.without_url(),
                }
            }
        };
        let mut response = self
            .client
            .get(url.clone())
            .timeout(self.timeout)
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if status.is_redirection() {
            return Err(DiscoveryError::Redirect {
                url: shown.to_owned(),
                status,
            });
        }
        if status.is_client_error() {
            return Ok(Fetched::ClientError(status));
        }
        if !status.is_success() {
            return Err(DiscoveryError::Status {
                url: shown.to_owned(),
                status,
            });
        }
        let body = read_limited(&mut response, self.limit)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge => DiscoveryError::InvalidDocument {
                    url: shown.to_owned(),
                    kind: InvalidDocument::TooLarge { limit: self.limit },
                },
                ReadError::Transport(e) => transport(e),
            })?;
        Ok(Fetched::Document(body))
    }
}

impl ClientCredentialsBuilder {
    /// Sets the token URL (and, unless one is set, the authentication method) from the
    /// issuer's authorization server metadata.
    ///
    /// # Which documents are read
    ///
    /// `GET <issuer>/.well-known/openid-configuration` (OpenID Connect Discovery 1.0). If that
    /// answers a client error (404, typically), `GET` the RFC 8414 URL: for an issuer without a
    /// path, `https://host/.well-known/oauth-authorization-server`; for an issuer with a path,
    /// RFC 8414 §3.1 **inserts** the well-known segment between host and path
    /// (`https://host/tenant` → `https://host/.well-known/oauth-authorization-server/tenant`),
    /// whereas OpenID Connect appends it (`https://host/tenant/.well-known/openid-configuration`).
    /// A trailing `/` on the issuer is ignored. Any other failure (5xx, redirect, timeout, an
    /// unusable document) stops discovery with that error: a broken document is not papered
    /// over by another one.
    ///
    /// # What is taken from the document
    ///
    /// - `token_endpoint` (required) becomes the [`token_url`](Self::token_url), replacing any
    ///   set before. It must pass the same rule as a token URL set by hand: HTTPS, plain HTTP
    ///   only on loopback hosts unless [`danger_allow_insecure_http`](Self::danger_allow_insecure_http).
    /// - `token_endpoint_auth_methods_supported` chooses the [`auth_method`](Self::auth_method)
    ///   when none was set: `client_secret_basic` if offered, else `client_secret_post`. When
    ///   the member is absent, both specifications default to `client_secret_basic`. A list
    ///   offering neither is an error, unless a method was set by hand (which is kept as it is).
    /// - `issuer`, if present, must name the issuer asked for (a trailing `/` aside), as both
    ///   specifications require; otherwise the document is refused.
    ///
    /// # Limits
    ///
    /// The same as the token request, taken from this builder, so set them before calling
    /// `discover`: the issuer must be HTTPS (loopback HTTP or
    /// [`danger_allow_insecure_http`](Self::danger_allow_insecure_http) aside), redirects are
    /// not followed, each document is read up to
    /// [`max_response_bytes`](Self::max_response_bytes) (default 64 KiB) and each request
    /// must complete within [`request_timeout`](Self::request_timeout) (default 10 s).
    /// Discovery happens once, here; the token URL is not re-read later.
    ///
    /// # Errors
    ///
    /// A [`DiscoveryError`] naming the URL concerned.
    ///
    /// # Example
    ///
    /// ```no_run
    /// use client_credentials::ClientCredentials;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let credentials = ClientCredentials::builder()
    ///     .client_id(std::env::var("CLIENT_ID")?)
    ///     .client_secret(std::env::var("CLIENT_SECRET")?)
    ///     .discover("https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbCdEf123")
    ///     .await?
    ///     .build()?;
    /// # let _ = credentials;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn discover(mut self, issuer: &str) -> Result<Self, DiscoveryError> {
        let issuer_text = issuer;
        let issuer = parse_issuer(issuer, self.source.allow_insecure_http)?;
        // Same client and rules as the token request: a redirect is never followed.
        let fetcher = Fetcher {
            client: self.source.client().map_err(DiscoveryError::Config)?,
            timeout: self
                .source
                .request_timeout
                .unwrap_or(DEFAULT_REQUEST_TIMEOUT),
            limit: self
                .source
                .max_response_bytes
                .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES),
        };
        let mut tried = Vec::new();
        for url in metadata_urls(&issuer) {
            let shown = endpoint_label(&url);
            tracing::debug!(url = %shown, "reading authorization server metadata");
            match fetcher.fetch(&url).await? {
                Fetched::ClientError(status) => tried.push((shown, status)),
                Fetched::Document(body) => {
                    let discovered =
                        self.read_document(&issuer, issuer_text, &body)
                            .map_err(|kind| DiscoveryError::InvalidDocument {
                                url: shown.clone(),
                                kind,
                            })?;
                    let Discovered {
                        token_url,
                        method,
                        issuer: issuer_id,
                        dpop_algs,
                    } = discovered;
                    tracing::debug!(
                        url = %shown,
                        token_endpoint = %endpoint_label(&token_url),
                        auth_method = method.as_str(),
                        "discovered the token endpoint"
                    );
                    self.source.token_url = Some(token_url.to_string());
                    self.source.auth_method = Some(method);
                    self.source.issuer.get_or_insert(issuer_id);
                    self.source.dpop_algs_offered = dpop_algs;
                    return Ok(self);
                }
            }
        }
        Err(DiscoveryError::NotFound { tried })
    }

    /// The token URL and the authentication method a document gives this builder.
    fn read_document(
        &self,
        issuer: &Url,
        issuer_text: &str,
        body: &[u8],
    ) -> Result<Discovered, InvalidDocument> {
        let metadata: Metadata =
            serde_json::from_slice(body).map_err(|_| InvalidDocument::NotJson)?;
        if let Some(found) = &metadata.issuer {
            if !same_issuer(issuer, found) {
                return Err(InvalidDocument::IssuerMismatch {
                    expected: endpoint_label(issuer),
                    found: found.clone(),
                });
            }
        }
        let method = match (
            self.source.auth_method,
            metadata.token_endpoint_auth_methods_supported,
        ) {
            (Some(chosen), _) => chosen,
            (None, offered) => choose_auth_method(offered.as_deref(), &self.source.candidates())
                .ok_or_else(|| InvalidDocument::NoSupportedAuthMethod {
                    offered: offered.unwrap_or_default(),
                })?,
        };
        // With mutual TLS, the token request goes to the mTLS alias when there is one.
        let mtls_alias = metadata
            .mtls_endpoint_aliases
            .and_then(|a| a.token_endpoint)
            .filter(|_| method.is_mutual_tls());
        let raw = mtls_alias
            .or(metadata.token_endpoint)
            .ok_or(InvalidDocument::MissingTokenEndpoint)?;
        let token_url = super::url::token_url(&raw, self.source.allow_insecure_http)
            .map_err(InvalidDocument::InvalidTokenEndpoint)?;
        Ok(Discovered {
            token_url,
            method,
            issuer: metadata
                .issuer
                .unwrap_or_else(|| issuer_text.trim().to_owned()),
            dpop_algs: metadata.dpop_signing_alg_values_supported,
        })
    }
}

impl super::builder::Endpoint {
    /// The methods discovery may choose from, best first, given the credentials set: a signing
    /// key or a client assertion means `private_key_jwt`; otherwise the secret methods. (Mutual TLS is never guessed:
    /// set it with `auth_method`.)
    fn candidates(&self) -> Vec<AuthMethod> {
        if self.client_assertion.is_some() {
            return vec![AuthMethod::PrivateKeyJwt];
        }
        #[cfg(feature = "jwt")]
        if self.signing_key.is_some() {
            return vec![AuthMethod::PrivateKeyJwt];
        }
        let mut methods = vec![AuthMethod::ClientSecretBasic, AuthMethod::ClientSecretPost];
        if cfg!(feature = "jwt") {
            methods.push(AuthMethod::ClientSecretJwt);
        }
        methods
    }
}

/// The first of `candidates` that the server offers; when it says nothing, the first
/// candidate (for secrets, `client_secret_basic`: the RFC 8414 §2 default).
fn choose_auth_method(offered: Option<&[String]>, candidates: &[AuthMethod]) -> Option<AuthMethod> {
    let Some(offered) = offered else {
        return candidates.first().copied();
    };
    candidates
        .iter()
        .copied()
        .find(|m| offered.iter().any(|o| o == m.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_urls_append_for_oidc_and_insert_for_rfc8414() {
        // (issuer, OpenID Connect URL, RFC 8414 URL)
        let cases = [
            (
                "https://auth.example.com",
                "https://auth.example.com/.well-known/openid-configuration",
                "https://auth.example.com/.well-known/oauth-authorization-server",
            ),
            (
                "https://auth.example.com/",
                "https://auth.example.com/.well-known/openid-configuration",
                "https://auth.example.com/.well-known/oauth-authorization-server",
            ),
            (
                "https://auth.example.com:8443/realms/acme",
                "https://auth.example.com:8443/realms/acme/.well-known/openid-configuration",
                "https://auth.example.com:8443/.well-known/oauth-authorization-server/realms/acme",
            ),
            (
                "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC/",
                "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC/.well-known/openid-configuration",
                "https://cognito-idp.us-east-1.amazonaws.com/.well-known/oauth-authorization-server/us-east-1_AbC",
            ),
        ];
        for (issuer, oidc, rfc8414) in cases {
            let [a, b] = metadata_urls(&Url::parse(issuer).unwrap());
            assert_eq!((a.as_str(), b.as_str()), (oidc, rfc8414), "{issuer}");
        }
    }

    #[test]
    fn auth_method_choice() {
        use AuthMethod::*;
        let list = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let secrets = [ClientSecretBasic, ClientSecretPost, ClientSecretJwt];
        let key = [PrivateKeyJwt];
        type Case<'a> = (Option<Vec<String>>, &'a [AuthMethod], Option<AuthMethod>);
        // (offered, candidates, chosen)
        let cases: Vec<Case<'_>> = vec![
            (None, &secrets, Some(ClientSecretBasic)),
            (
                Some(list(&["client_secret_post", "client_secret_basic"])),
                &secrets,
                Some(ClientSecretBasic),
            ),
            (
                Some(list(&["private_key_jwt", "client_secret_post"])),
                &secrets,
                Some(ClientSecretPost),
            ),
            (
                Some(list(&["client_secret_jwt"])),
                &secrets,
                Some(ClientSecretJwt),
            ),
            (
                Some(list(&["client_secret_basic"])),
                &secrets,
                Some(ClientSecretBasic),
            ),
            (
                Some(list(&["private_key_jwt", "tls_client_auth"])),
                &secrets,
                None,
            ),
            (
                Some(list(&["private_key_jwt", "tls_client_auth"])),
                &key,
                Some(PrivateKeyJwt),
            ),
            (Some(list(&["client_secret_basic"])), &key, None),
            (None, &key, Some(PrivateKeyJwt)),
            (Some(list(&[])), &secrets, None),
        ];
        for (offered, candidates, chosen) in cases {
            assert_eq!(
                choose_auth_method(offered.as_deref(), candidates),
                chosen,
                "{offered:?} {candidates:?}"
            );
        }
    }

    #[test]
    fn issuer_rules() {
        let ok = [
            "https://auth.example.com",
            "https://auth.example.com/realms/acme/",
            "http://127.0.0.1:8080",
            "http://localhost/tenant",
        ];
        for issuer in ok {
            assert!(parse_issuer(issuer, false).is_ok(), "{issuer}");
        }
        let bad = [
            "http://auth.example.com",
            "ftp://auth.example.com",
            "not a url",
            "https://auth.example.com/?tenant=a",
            "https://auth.example.com/#x",
            "https://auth.example.com/.well-known/openid-configuration",
            "https://user:pw@auth.example.com",
        ];
        for issuer in bad {
            let err = parse_issuer(issuer, false).unwrap_err();
            assert!(
                matches!(err, DiscoveryError::InvalidIssuer { .. }),
                "{issuer}: {err:?}"
            );
            assert!(!err.to_string().contains("pw"), "{err}");
        }
        assert!(parse_issuer("http://auth.example.com", true).is_ok());
    }

    #[test]
    fn issuer_comparison_ignores_only_a_trailing_slash() {
        let issuer = Url::parse("https://auth.example.com/realms/acme").unwrap();
        assert!(same_issuer(&issuer, "https://auth.example.com/realms/acme"));
        assert!(same_issuer(
            &issuer,
            "https://auth.example.com/realms/acme/"
        ));
        assert!(!same_issuer(
            &issuer,
            "https://evil.example.com/realms/acme"
        ));
        assert!(!same_issuer(
            &issuer,
            "https://auth.example.com/realms/other"
        ));
        let root = Url::parse("https://auth.example.com").unwrap();
        assert!(same_issuer(&root, "https://auth.example.com"));
    }
}
