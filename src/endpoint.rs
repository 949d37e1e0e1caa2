//! The token request (RFC 6749 §4.4) and the parsing of its answer (§5.1, §5.2).

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use http::StatusCode;
use serde::Deserialize;
use url::Url;

use crate::error::InvalidResponse;
use crate::source::{BoxFuture, Scopes, Token, TokenSource};
use crate::{AccessToken, ClientSecret, Error, OAuthErrorCode};

/// How the client proves its identity to the token endpoint (RFC 6749 §2.3, OpenID Connect
/// `token_endpoint_auth_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AuthMethod {
    /// `client_secret_basic`: `Authorization: Basic base64(id ":" secret)`, each part
    /// form-urlencoded first (RFC 6749 §2.3.1). The default: every server must support it.
    #[default]
    ClientSecretBasic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

impl AuthMethod {
    /// The method's registered name (`client_secret_basic`, `client_secret_post`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
        }
    }

    /// Reads a registered name; `None` for a method this crate does not implement.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "client_secret_basic" => Some(Self::ClientSecretBasic),
            "client_secret_post" => Some(Self::ClientSecretPost),
            _ => None,
        }
    }
}

/// The credentials and how they are presented. One value holds everything the token request
/// needs to authenticate the client, so new methods (`private_key_jwt`) are new variants here.
#[derive(Clone)]
pub(crate) enum ClientAuth {
    SecretBasic {
        client_id: String,
        secret: ClientSecret,
        form_encode: bool,
    },
    SecretPost {
        client_id: String,
        secret: ClientSecret,
    },
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::SecretBasic {
                client_id,
                form_encode,
                ..
            } => f
                .debug_struct("ClientSecretBasic")
                .field("client_id", client_id)
                .field("client_secret", &"[redacted]")
                .field("form_encode", form_encode)
                .finish(),
            Self::SecretPost { client_id, .. } => f
                .debug_struct("ClientSecretPost")
                .field("client_id", client_id)
                .field("client_secret", &"[redacted]")
                .finish(),
        }
    }
}

/// The most bytes of a token endpoint answer that are read, by default (64 KiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// How long one token request may take, connection to last byte, by default (10 s).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// An OAuth 2.0 token endpoint with the client's credentials: the built-in [`TokenSource`].
///
/// Built by [`ClientCredentialsBuilder::build`](crate::ClientCredentialsBuilder::build). Each
/// call to [`fetch_token`](TokenSource::fetch_token) sends exactly one `POST` with
/// `grant_type=client_credentials`; caching, single flight and retries are the cache's job.
/// Redirects are never followed: they would carry the credentials elsewhere.
#[derive(Clone)]
pub struct TokenEndpoint {
    client: reqwest::Client,
    url: Url,
    label: String,
    auth: ClientAuth,
    params: Vec<(String, String)>,
    max_response_bytes: usize,
    timeout: Duration,
}

impl fmt::Debug for TokenEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenEndpoint")
            .field("url", &self.label)
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
        url: Url,
        auth: ClientAuth,
        params: Vec<(String, String)>,
        max_response_bytes: usize,
        timeout: Duration,
    ) -> Result<Self, crate::ConfigError> {
        let client = no_redirect_client()
            .map_err(|e| crate::ConfigError::InvalidTokenUrl(e.without_url().to_string()))?;
        Ok(Self {
            client,
            label: endpoint_label(&url),
            url,
            auth,
            params,
            max_response_bytes,
            timeout,
        })
    }

    /// The token endpoint as shown in errors and logs: scheme, host, port and path.
    pub fn endpoint(&self) -> &str {
        &self.label
    }

    /// The host of the token endpoint.
    pub(crate) fn host(&self) -> &str {
        self.url.host_str().unwrap_or("")
    }

    fn form_and_auth(&self, scopes: &Scopes) -> (String, Option<HeaderValue>) {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        if !scopes.is_empty() {
            form.append_pair("scope", &scopes.to_string());
        }
        for (name, value) in &self.params {
            form.append_pair(name, value);
        }
        let header = match &self.auth {
            ClientAuth::SecretBasic {
                client_id,
                secret,
                form_encode,
            } => Some(basic_header(client_id, secret, *form_encode)),
            ClientAuth::SecretPost { client_id, secret } => {
                form.append_pair("client_id", client_id);
                form.append_pair("client_secret", secret.expose_secret());
                None
            }
        };
        (form.finish(), header)
    }

    async fn send(&self, scopes: &Scopes) -> Result<Token, Error> {
        let (form, authorization) = self.form_and_auth(scopes);
        let mut request = self
            .client
            .post(self.url.clone())
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form);
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value);
        }
        let mut response = request.send().await.map_err(|e| self.transport(e))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(Error::Redirect {
                endpoint: self.label.clone(),
                status,
            });
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
        let body = self.read_body(&mut response).await?;
        parse_token_response(&self.label, status, retry_after, &body)
    }

    async fn read_body(&self, response: &mut reqwest::Response) -> Result<Bytes, Error> {
        let limit = self.max_response_bytes;
        read_limited(response, limit).await.map_err(|e| match e {
            ReadError::TooLarge => Error::InvalidResponse {
                endpoint: self.label.clone(),
                kind: InvalidResponse::BodyTooLarge { limit },
            },
            ReadError::Transport(e) => self.transport(e),
        })
    }

    fn transport(&self, e: reqwest::Error) -> Error {
        Error::Transport {
            endpoint: self.label.clone(),
            source: std::sync::Arc::new(e.without_url()),
        }
    }
}

impl TokenSource for TokenEndpoint {
    fn fetch_token<'a>(&'a self, scopes: &'a Scopes) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(async move {
            match tokio::time::timeout(self.timeout, self.send(scopes)).await {
                Ok(result) => result,
                Err(_) => Err(Error::Timeout {
                    endpoint: self.label.clone(),
                    timeout: self.timeout,
                }),
            }
        })
    }
}

/// The client for requests that carry or lead to credentials (the token request, discovery):
/// a redirect is never followed, since it would send them to another URL.
pub(crate) fn no_redirect_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// Why a bounded read stopped.
pub(crate) enum ReadError {
    TooLarge,
    Transport(reqwest::Error),
}

/// Reads a response body of at most `limit` bytes: a larger `Content-Length` is refused before
/// reading, and a body streamed without one is cut at the limit, so memory stays bounded.
pub(crate) async fn read_limited(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<Bytes, ReadError> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(ReadError::TooLarge);
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))`, marked sensitive.
fn basic_header(client_id: &str, secret: &ClientSecret, form_encode: bool) -> HeaderValue {
    let credentials = if form_encode {
        // RFC 6749 §2.3.1: id and secret are encoded with application/x-www-form-urlencoded
        // before they are joined, so a ':' in the id cannot be misread as the separator.
        format!(
            "{}:{}",
            form_urlencoded::byte_serialize(client_id.as_bytes()).collect::<String>(),
            form_urlencoded::byte_serialize(secret.expose_secret().as_bytes()).collect::<String>()
        )
    } else {
        format!("{}:{}", client_id, secret.expose_secret())
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
        // Base64 output and the "Basic " prefix are always visible ASCII.
        .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    value.set_sensitive(true);
    value
}

/// Scheme, host, port and path of a URL: what errors and logs may show.
pub(crate) fn endpoint_label(url: &Url) -> String {
    let mut label = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        label.push_str(&format!(":{port}"));
    }
    label.push_str(url.path());
    label
}

/// Parses `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date.
pub(crate) fn parse_retry_after(
    value: &HeaderValue,
    now: std::time::SystemTime,
) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[derive(Deserialize)]
struct SuccessBody {
    access_token: Option<serde_json::Value>,
    token_type: Option<serde_json::Value>,
    expires_in: Option<serde_json::Value>,
    scope: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    error_description: Option<String>,
    error_uri: Option<String>,
}

/// Parses a token endpoint's answer (RFC 6749 §5.1 success, §5.2 error).
///
/// Public so it can be fuzzed and reused; the endpoint calls it with the body it read (at most
/// the configured limit). Never panics: every input yields a token or a typed [`Error`].
///
/// ```
/// use client_credentials::{parse_token_response, Error};
/// use http::StatusCode;
///
/// let token = parse_token_response(
///     "https://auth.example/oauth2/token",
///     StatusCode::OK,
///     None,
///     br#"{"access_token":"eyJ...","expires_in":"3600","token_type":"bearer"}"#,
/// )
/// .unwrap();
/// assert_eq!(token.expires_in, Some(std::time::Duration::from_secs(3600)));
///
/// let err = parse_token_response(
///     "https://auth.example/oauth2/token",
///     StatusCode::BAD_REQUEST,
///     None,
///     br#"{"error":"invalid_client"}"#,
/// )
/// .unwrap_err();
/// assert_eq!(err.oauth_code().map(|c| c.as_str()), Some("invalid_client"));
/// ```
pub fn parse_token_response(
    endpoint: &str,
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<Token, Error> {
    let invalid = |kind| Error::InvalidResponse {
        endpoint: endpoint.to_owned(),
        kind,
    };
    if !status.is_success() {
        // RFC 6749 §5.2 says 400 (or 401 for client authentication), but servers put OAuth
        // error bodies on other statuses too; a body with `error` is an OAuth error whatever
        // the status, except 429/5xx which stay status errors so they are retried.
        let transient = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
        if !transient {
            if let Ok(e) = serde_json::from_slice::<ErrorBody>(body) {
                return Err(Error::OAuth {
                    endpoint: endpoint.to_owned(),
                    status,
                    code: OAuthErrorCode::parse(&e.error),
                    description: e.error_description,
                    uri: e.error_uri,
                });
            }
        }
        return Err(Error::Status {
            endpoint: endpoint.to_owned(),
            status,
            retry_after,
        });
    }
    let parsed: SuccessBody =
        serde_json::from_slice(body).map_err(|_| invalid(InvalidResponse::NotJson))?;
    let access_token = match parsed.access_token {
        Some(serde_json::Value::String(token)) => token,
        _ => return Err(invalid(InvalidResponse::MissingAccessToken)),
    };
    match parsed.token_type {
        Some(serde_json::Value::String(t)) if t.eq_ignore_ascii_case("bearer") => {}
        Some(serde_json::Value::String(t)) => {
            return Err(invalid(InvalidResponse::UnsupportedTokenType(t)))
        }
        // RFC 6749 makes token_type REQUIRED; a server that omits it gets the benefit of the
        // doubt (the header we send is Bearer either way), anything else is refused.
        None | Some(serde_json::Value::Null) => {}
        Some(other) => {
            return Err(invalid(InvalidResponse::UnsupportedTokenType(
                other.to_string(),
            )))
        }
    }
    if access_token.is_empty() || HeaderValue::from_str(&format!("Bearer {access_token}")).is_err()
    {
        return Err(invalid(InvalidResponse::TokenNotHeaderSafe));
    }
    let expires_in = match parsed.expires_in {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => Some(seconds(n.as_f64())),
        Some(serde_json::Value::String(s)) => match s.trim().parse::<f64>() {
            Ok(n) if n.is_finite() => Some(seconds(Some(n))),
            _ => return Err(invalid(InvalidResponse::InvalidExpiresIn)),
        },
        Some(_) => return Err(invalid(InvalidResponse::InvalidExpiresIn)),
    };
    let scope = match parsed.scope {
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    };
    Ok(Token {
        access_token: AccessToken::new(access_token),
        expires_in,
        scope,
    })
}

/// Seconds as a duration; negative, NaN and absurd values are clamped (zero, or ten years).
fn seconds(n: Option<f64>) -> Duration {
    const TEN_YEARS: f64 = 10.0 * 365.0 * 86_400.0;
    match n {
        Some(n) if n > 0.0 => Duration::from_secs_f64(n.min(TEN_YEARS)),
        _ => Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    const EP: &str = "https://auth.example/oauth2/token";

    #[test]
    fn expires_in_shapes() {
        let cases: &[(&str, Option<Duration>)] = &[
            (
                r#"{"access_token":"a","token_type":"Bearer","expires_in":3600}"#,
                Some(Duration::from_secs(3600)),
            ),
            (
                r#"{"access_token":"a","token_type":"Bearer","expires_in":"3600"}"#,
                Some(Duration::from_secs(3600)),
            ),
            (
                r#"{"access_token":"a","token_type":"Bearer","expires_in":" 60 "}"#,
                Some(Duration::from_secs(60)),
            ),
            (
                r#"{"access_token":"a","token_type":"Bearer","expires_in":1.5}"#,
                Some(Duration::from_millis(1500)),
            ),
            (r#"{"access_token":"a","token_type":"Bearer"}"#, None),
            (
                r#"{"access_token":"a","token_type":"Bearer","expires_in":null}"#,
                None,
            ),
            (
                r#"{"access_token":"a","token_type":"Bearer","expires_in":0}"#,
                Some(Duration::ZERO),
            ),
            (
                r#"{"access_token":"a","token_type":"Bearer","expires_in":-5}"#,
                Some(Duration::ZERO),
            ),
            (
                r#"{"access_token":"a","token_type":"Bearer","expires_in":1e300}"#,
                Some(Duration::from_secs(315_360_000)),
            ),
        ];
        for (body, expected) in cases {
            let token = parse_token_response(EP, StatusCode::OK, None, body.as_bytes()).unwrap();
            assert_eq!(token.expires_in, *expected, "{body}");
        }
    }

    #[test]
    fn malformed_answers() {
        let cases: &[(&str, InvalidResponse)] = &[
            ("", InvalidResponse::NotJson),
            ("<html>", InvalidResponse::NotJson),
            ("[1,2]", InvalidResponse::NotJson),
            (
                r#"{"token_type":"Bearer"}"#,
                InvalidResponse::MissingAccessToken,
            ),
            (
                r#"{"access_token":7,"token_type":"Bearer"}"#,
                InvalidResponse::MissingAccessToken,
            ),
            (
                r#"{"access_token":"a","token_type":"mac"}"#,
                InvalidResponse::UnsupportedTokenType("mac".into()),
            ),
            (
                r#"{"access_token":"a","token_type":5}"#,
                InvalidResponse::UnsupportedTokenType("5".into()),
            ),
            (
                r#"{"access_token":"a\r\nx","token_type":"Bearer"}"#,
                InvalidResponse::TokenNotHeaderSafe,
            ),
            (
                r#"{"access_token":"","token_type":"Bearer"}"#,
                InvalidResponse::TokenNotHeaderSafe,
            ),
            (
                r#"{"access_token":"a","token_type":"Bearer","expires_in":"soon"}"#,
                InvalidResponse::InvalidExpiresIn,
            ),
            (
                r#"{"access_token":"a","token_type":"Bearer","expires_in":[1]}"#,
                InvalidResponse::InvalidExpiresIn,
            ),
        ];
        for (body, kind) in cases {
            match parse_token_response(EP, StatusCode::OK, None, body.as_bytes()) {
                Err(Error::InvalidResponse { kind: k, .. }) => assert_eq!(&k, kind, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn error_answers() {
        let err = parse_token_response(
            EP,
            StatusCode::BAD_REQUEST,
            None,
            br#"{"error":"invalid_scope","error_description":"bad","error_uri":"https://x"}"#,
        )
        .unwrap_err();
        match err {
            Error::OAuth {
                code,
                description,
                uri,
                status,
                ..
            } => {
                assert_eq!(code, OAuthErrorCode::InvalidScope);
                assert_eq!(description.as_deref(), Some("bad"));
                assert_eq!(uri.as_deref(), Some("https://x"));
                assert_eq!(status, StatusCode::BAD_REQUEST);
            }
            other => panic!("{other:?}"),
        }
        let err = parse_token_response(
            EP,
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(3)),
            br#"{"error":"temporarily_unavailable"}"#,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            Error::Status {
                status: StatusCode::SERVICE_UNAVAILABLE,
                retry_after: Some(_),
                ..
            }
        ));
        assert!(err.is_transient());
        let err = parse_token_response(EP, StatusCode::BAD_REQUEST, None, b"nope").unwrap_err();
        assert!(matches!(
            err,
            Error::Status {
                status: StatusCode::BAD_REQUEST,
                ..
            }
        ));
        assert!(!err.is_transient());
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("7"), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after(&HeaderValue::from_str(&date).unwrap(), now),
            Some(Duration::from_secs(30))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&HeaderValue::from_str(&past).unwrap(), now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("soon"), now),
            None
        );
    }

    #[test]
    fn basic_header_encodes_per_rfc6749() {
        let secret = ClientSecret::new("p@ss:w/rd+%");
        let value = basic_header("id:1 x", &secret, true);
        assert!(value.is_sensitive());
        let encoded = value.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(decoded, b"id%3A1+x:p%40ss%3Aw%2Frd%2B%25");
        let raw = basic_header("id", &secret, false);
        let encoded = raw.to_str().unwrap().strip_prefix("Basic ").unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .unwrap(),
            b"id:p@ss:w/rd+%"
        );
    }
}
