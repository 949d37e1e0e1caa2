//! The token request (RFC 6749 §4.4): the built-in [`TokenSource`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use http::HeaderMap;
use url::Url;

use crate::client_auth::{ClientAuth, TokenRequest};
use crate::{BoxFuture, Error, Scopes, Token, TokenSource};

mod response;

pub(crate) use self::response::{parse_token_response, read_limited, ReadError};

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
/// [`fetch_token`](TokenSource::fetch_token) sends exactly one `POST` with
/// `grant_type=client_credentials`, bounded by the request timeout; caching, single flight and
/// retries are the cache's job. Redirects are never followed: they would carry the credentials
/// elsewhere.
#[derive(Clone)]
pub struct TokenEndpoint {
    client: reqwest::Client,
    url: Url,
    endpoint: Arc<str>,
    auth: ClientAuth,
    params: Vec<(String, String)>,
    max_response_bytes: usize,
    timeout: Duration,
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
            .finish()
    }
}

impl TokenEndpoint {
    pub(crate) fn new(
        client: reqwest::Client,
        url: Url,
        auth: ClientAuth,
        params: Vec<(String, String)>,
        max_response_bytes: usize,
        timeout: Duration,
    ) -> Self {
        Self {
            client,
            endpoint: Arc::from(crate::text::url_label(&url)),
            url,
            auth,
            params,
            max_response_bytes,
            timeout,
        }
    }

    /// The token endpoint as errors and logs show it: scheme, host, port and path.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub(crate) fn endpoint_arc(&self) -> &Arc<str> {
        &self.endpoint
    }

    /// The form and headers of one token request for `scopes`, the client authenticated.
    fn request_parts(&self, scopes: &Scopes) -> (String, HeaderMap) {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        if !scopes.is_empty() {
            form.append_pair("scope", &scopes.to_string());
        }
        for (name, value) in &self.params {
            form.append_pair(name, value);
        }
        let mut headers = HeaderMap::new();
        self.auth.authenticate(TokenRequest {
            form: &mut form,
            headers: &mut headers,
        });
        (form.finish(), headers)
    }

    async fn send(&self, scopes: &Scopes) -> Result<Token, Error> {
        let (form, headers) = self.request_parts(scopes);
        let mut response = self
            .client
            .post(self.url.clone())
            .timeout(self.timeout)
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .headers(headers)
            .body(form)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(Error::Redirect {
                endpoint: Arc::clone(&self.endpoint),
                status,
            });
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| response::parse_retry_after(v, std::time::SystemTime::now()));
        let limit = self.max_response_bytes;
        let body = read_limited(&mut response, limit)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge => Error::InvalidResponse {
                    endpoint: Arc::clone(&self.endpoint),
                    kind: crate::InvalidResponse::BodyTooLarge { limit },
                },
                ReadError::Transport(e) => self.transport(e),
            })?;
        parse_token_response(&self.endpoint, status, retry_after, &body)
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
