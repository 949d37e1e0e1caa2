//! The token request (RFC 6749 §4.4): the built-in [`TokenSource`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use http::HeaderMap;
use url::Url;

use crate::client_auth::{ClientAuth, Presented, TokenRequest};
use crate::{BoxFuture, Error, OAuthErrorCode, Scopes, Token, TokenSource};

mod response;

pub(crate) use self::response::{parse_retry_after, parse_token_response, read_limited, ReadError};

/// The most bytes of a token endpoint answer that are read, by default (64 KiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// How long one token request may take, connection to last byte, by default (10 s).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP client for requests that carry or lead to credentials (the token request,
/// discovery), from the user's settings or reqwest's defaults: a redirect is never followed,
/// since it would send them to another URL. Timeouts are set on each request.
pub(crate) fn http_client(
    builder: Option<reqwest::ClientBuilder>,
) -> Result<reqwest::Client, reqwest::Error> {
    builder
        .unwrap_or_default()
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// An OAuth 2.0 token endpoint with the client's credentials: the built-in [`TokenSource`].
///
/// Built by [`ClientCredentialsBuilder::build`](crate::ClientCredentialsBuilder::build), or
/// alone by [`build_token_endpoint`](crate::ClientCredentialsBuilder::build_token_endpoint)
/// for a source of your own that wraps it. Each call to
/// [`fetch_token`](TokenSource::fetch_token) sends one `POST` with
/// `grant_type=client_credentials`, bounded by the request timeout, and at most one more: when
/// a DPoP server asks for its nonce, or when the server answers `invalid_client` and another
/// client secret is at hand (the secret file or provider gave a new one, or a
/// [`previous_client_secret`](crate::ClientCredentialsBuilder::previous_client_secret) is set).
/// Caching, single flight and the retries of transient failures are the cache's job.
/// Redirects are never followed: they would carry the credentials elsewhere.
#[derive(Clone)]
pub struct TokenEndpoint {
    client: reqwest::Client,
    url: Url,
    endpoint: Arc<str>,
    auth: ClientAuth,
    params: Vec<(String, String)>,
    max_response_bytes: usize,
    timeout: Duration,
    /// The second request of a `fetch_token` call is counted here (the cache counts the first).
    counters: Arc<crate::stats::Counters>,
    /// DPoP: a proof on every token request, and the token bound to its key.
    #[cfg(feature = "jwt")]
    dpop: Option<Arc<crate::proof::Dpop>>,
}

impl fmt::Debug for TokenEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenEndpoint")
            .field("endpoint", &self.endpoint)
            .field("auth", &self.auth)
            .field(
                "params",
                &self.params.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("max_response_bytes", &self.max_response_bytes)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl TokenEndpoint {
    /// What tells this endpoint's tokens from others' in a fleet's store: the URL, the client,
    /// how it authenticates (a hash of the secret, never the secret) and the extra parameters.
    #[cfg(feature = "fleet")]
    pub(crate) fn fleet_identity(&self) -> crate::fleet::Identity {
        let mut identity = crate::fleet::Identity::default();
        identity.push("token_url", self.url.as_str());
        self.auth.fleet_identity(&mut identity);
        for (name, value) in &self.params {
            identity.push("param", format!("{name}={value}"));
        }
        identity
    }

    pub(crate) fn new(
        client: reqwest::Client,
        url: Url,
        auth: ClientAuth,
        params: Vec<(String, String)>,
        max_response_bytes: usize,
        timeout: Duration,
        counters: Arc<crate::stats::Counters>,
    ) -> Self {
        Self {
            counters,
            client,
            endpoint: Arc::from(crate::text::url_label(&url)),
            url,
            auth,
            params,
            max_response_bytes,
            timeout,
            #[cfg(feature = "jwt")]
            dpop: None,
        }
    }

    /// The same endpoint proving possession of `dpop`'s key on every token request.
    #[cfg(feature = "jwt")]
    pub(crate) fn with_dpop(mut self, dpop: Arc<crate::proof::Dpop>) -> Self {
        self.dpop = Some(dpop);
        self
    }

    /// The token endpoint as errors and logs show it: scheme, host, port and path.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub(crate) fn endpoint_arc(&self) -> &Arc<str> {
        &self.endpoint
    }

    /// The form and headers of one token request for `scopes`, the client authenticated (with
    /// `secret`, for the methods that send one).
    fn request_parts(
        &self,
        scopes: &Scopes,
        presented: Option<&Presented>,
    ) -> Result<(String, HeaderMap), Error> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        if !scopes.is_empty() {
            form.append_pair("scope", &scopes.to_string());
        }
        for (name, value) in &self.params {
            form.append_pair(name, value);
        }
        let mut headers = HeaderMap::new();
        self.auth.authenticate(
            presented,
            TokenRequest {
                form: &mut form,
                headers: &mut headers,
            },
        )?;
        Ok((form.finish(), headers))
    }

    /// One token request, and one more with another client secret when the server answers
    /// `invalid_client` and there is another one (read again from the file or the provider, or
    /// the previous secret).
    async fn send(&self, scopes: &Scopes) -> Result<Token, Error> {
        let presented = self.auth.present().await?;
        match self.send_with(scopes, presented.as_ref()).await {
            Err(error) if matches!(error.oauth_code(), Some(OAuthErrorCode::InvalidClient)) => {
                let Some(refused) = &presented else {
                    return Err(error);
                };
                let Some(other) = self.auth.after_refusal(refused).await else {
                    return Err(error);
                };
                tracing::info!(endpoint = %self.endpoint, "the token endpoint refused the client secret (invalid_client); sending once more with another one");
                self.count_request();
                self.send_with(scopes, Some(&other)).await
            }
            result => result,
        }
    }

    /// The second request of one `fetch_token` call, in the counters.
    fn count_request(&self) {
        self.counters
            .token_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// One token request with `secret`; with DPoP, a second one when the server asks for its
    /// nonce.
    async fn send_with(
        &self,
        scopes: &Scopes,
        presented: Option<&Presented>,
    ) -> Result<Token, Error> {
        #[cfg(feature = "jwt")]
        if let Some(dpop) = &self.dpop {
            return self.send_with_dpop(scopes, presented, dpop).await;
        }
        let (form, headers) = self.request_parts(scopes, presented)?;
        let (result, _) = self.send_once(form, headers).await;
        result
    }

    /// With DPoP: a proof on the request (with the server's last nonce), and exactly one more
    /// request, with a new proof and a new client assertion, when the server answers
    /// `use_dpop_nonce` with a `DPoP-Nonce` (RFC 9449 §8). Checks the token is DPoP-bound.
    #[cfg(feature = "jwt")]
    async fn send_with_dpop(
        &self,
        scopes: &Scopes,
        presented: Option<&Presented>,
        dpop: &crate::proof::Dpop,
    ) -> Result<Token, Error> {
        let origin = crate::config::url::Origin::from_parts(
            Some(self.url.scheme()),
            self.url.host_str(),
            self.url.port(),
        );
        let htu = crate::proof::htu_of_url(&self.url).ok_or(Error::DpopUrl)?;
        let mut nonce_retried = false;
        loop {
            let (form, mut headers) = self.request_parts(scopes, presented)?;
            let jkt = dpop.thumbprint();
            headers.insert(
                crate::proof::DPOP,
                dpop.proof(&http::Method::POST, &htu, None, origin.as_ref())?,
            );
            let (result, answer) = self.send_once(form, headers).await;
            let fresh_nonce = match (&origin, &answer) {
                (Some(origin), Some(headers)) => dpop.remember_nonce(origin, headers),
                _ => false,
            };
            match result {
                Err(error)
                    if !nonce_retried
                        && fresh_nonce
                        && error
                            .oauth_code()
                            .is_some_and(|c| c.as_str() == "use_dpop_nonce") =>
                {
                    tracing::debug!(endpoint = %self.endpoint, "the token endpoint asked for a DPoP nonce; sending once more with it");
                    nonce_retried = true;
                    self.count_request();
                }
                Err(error) => return Err(error),
                Ok(mut token) => {
                    return match token.token_type {
                        crate::TokenType::Dpop => {
                            token.dpop_jkt = Some(jkt);
                            Ok(token)
                        }
                        _ if dpop.required => Err(Error::InvalidResponse {
                            endpoint: Arc::clone(&self.endpoint),
                            kind: crate::InvalidResponse::NotDpopBound,
                        }),
                        _ => {
                            tracing::warn!(endpoint = %self.endpoint, "the token endpoint answered a Bearer token to a DPoP request; using it as a Bearer token (DPoP is not required)");
                            Ok(token)
                        }
                    };
                }
            }
        }
    }

    /// Sends one token request and parses the answer; also gives back the answer's headers
    /// (for a `DPoP-Nonce`) when there was an answer.
    async fn send_once(
        &self,
        form: String,
        headers: HeaderMap,
    ) -> (Result<Token, Error>, Option<HeaderMap>) {
        let response = self
            .client
            .post(self.url.clone())
            .timeout(self.timeout)
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .headers(headers)
            .body(form)
            .send()
            .await;
        let mut response = match response {
            Ok(response) => response,
            Err(e) => return (Err(self.transport(e)), None),
        };
        let status = response.status();
        let answer_headers = response.headers().clone();
        if status.is_redirection() {
            let redirect = Error::Redirect {
                endpoint: Arc::clone(&self.endpoint),
                status,
            };
            return (Err(redirect), Some(answer_headers));
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
        let limit = self.max_response_bytes;
        let body = read_limited(&mut response, limit)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge => Error::InvalidResponse {
                    endpoint: Arc::clone(&self.endpoint),
                    kind: crate::InvalidResponse::BodyTooLarge { limit },
                },
                ReadError::Transport(e) => self.transport(e),
            });
        let result = body.and_then(|body| {
            let token = parse_token_response(&self.endpoint, status, retry_after, &body)?;
            // Without DPoP, a DPoP-bound token cannot be used (every request would need a
            // proof of a key this client does not have).
            if token.token_type != crate::TokenType::Bearer && !self.proves_possession() {
                return Err(Error::InvalidResponse {
                    endpoint: Arc::clone(&self.endpoint),
                    kind: crate::InvalidResponse::UnsupportedTokenType(Arc::from(
                        token.token_type.scheme(),
                    )),
                });
            }
            Ok(token)
        });
        (result, Some(answer_headers))
    }

    fn proves_possession(&self) -> bool {
        #[cfg(feature = "jwt")]
        return self.dpop.is_some();
        #[cfg(not(feature = "jwt"))]
        return false;
    }

    /// A transport failure: the request timeout, or anything else reqwest reports.
    fn transport(&self, e: reqwest::Error) -> Error {
        if e.is_timeout() {
            return Error::Timeout {
                endpoint: Arc::clone(&self.endpoint),
                timeout: self.timeout,
            };
        }
        Error::Transport {
            endpoint: Arc::clone(&self.endpoint),
            source: Arc::new(e.without_url()),
        }
    }
}

impl TokenSource for TokenEndpoint {
    fn fetch_token<'a>(&'a self, scopes: &'a Scopes) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(self.send(scopes))
    }
}
