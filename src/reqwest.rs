//! The `reqwest-middleware` adapter.

use http::{Extensions, StatusCode};
use reqwest::ResponseBuilderExt as _;
use reqwest_middleware::{Middleware, Next};

use crate::auth::{classify_by_body, RequestOptions};
use crate::challenge::{classify_headers, Rejection};
use crate::ClientCredentials;

/// A [`reqwest_middleware::Middleware`] that puts a token on every request and retries once
/// after a 401 that a new token may fix.
///
/// - Adds `Authorization: Bearer <token>` (a sensitive header value) and, when configured,
///   `X-Tenant-Id`. A request that already has an `Authorization` header, or goes to an origin
///   outside [`allowed_origins`](crate::ClientCredentialsBuilder::allowed_origins), is sent
///   untouched.
/// - When no token can be had, the request is not sent: the caller gets
///   [`reqwest_middleware::Error::Middleware`] holding the [`Error`](crate::Error).
/// - On a 401 that says `invalid_token` (in `WWW-Authenticate` or a JSON body) or carries no
///   error code at all, drops the token (if still current), fetches one new token and sends the
///   request again once. Never on 403, never for other codes, never twice, never for a body
///   that cannot be cloned (a stream): the caller then gets the 401 as the server sent it.
///   Whatever was inspected reaches the caller with its status, headers, URL and body intact.
///
/// # Example
///
/// ```no_run
/// use client_credentials::ClientCredentials;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let credentials = ClientCredentials::from_env()?;
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     .with(credentials.middleware())
///     .build();
/// let wallets = client.get("https://api.example.com/v1/wallets").send().await?;
/// # let _ = wallets;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ClientCredentialsMiddleware {
    credentials: ClientCredentials,
}

impl ClientCredentialsMiddleware {
    /// A middleware using these credentials' cache.
    pub fn new(credentials: ClientCredentials) -> Self {
        Self { credentials }
    }

    /// The credentials this middleware uses.
    pub fn credentials(&self) -> &ClientCredentials {
        &self.credentials
    }
}

impl ClientCredentials {
    /// The `reqwest-middleware` adapter, sharing this cache.
    #[cfg_attr(docsrs, doc(cfg(feature = "reqwest-middleware")))]
    pub fn middleware(&self) -> ClientCredentialsMiddleware {
        ClientCredentialsMiddleware::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Middleware for ClientCredentialsMiddleware {
    async fn handle(
        &self,
        mut req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let url = req.url();
        let plan = self.credentials.plan(
            Some(url.scheme()),
            url.host_str(),
            url.port(),
            req.headers(),
            extensions.get::<RequestOptions>(),
        );
        let Some(plan) = plan else {
            return next.run(req, extensions).await;
        };
        let sent = plan
            .authorization()
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        plan.apply(req.headers_mut(), sent.clone());
        // `try_clone` is `None` for a streaming body: such a request is sent once.
        let replay = if plan.retry { req.try_clone() } else { None };
        let response = next.clone().run(req, extensions).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let Some(mut replay) = replay else {
            plan.forget_if_invalid(response.status(), response.headers(), &sent);
            return Ok(response);
        };
        let (rejection, response) = inspect(response).await;
        let Some(new) = plan.token_for_retry(&rejection, &sent).await else {
            return Ok(response);
        };
        drop(response);
        plan.apply(replay.headers_mut(), new);
        next.run(replay, extensions).await
    }
}

/// Classifies a 401, reading its body only when the headers do not settle it, and gives back
/// a response whose status, headers, URL and body are those received.
async fn inspect(response: reqwest::Response) -> (Rejection, reqwest::Response) {
    if let Some(rejection) = classify_headers(response.status(), response.headers()) {
        return (rejection, response);
    }
    let url = response.url().clone();
    let (mut parts, body) = http::Response::<reqwest::Body>::from(response).into_parts();
    let (rejection, replay) = classify_by_body(&parts, body).await;
    // `reqwest::Response::from` takes the URL from the extensions, where only
    // `ResponseBuilderExt::url` can put it.
    if let Ok(carrier) = http::Response::builder().url(url).body(()) {
        parts.extensions.extend(carrier.into_parts().0.extensions);
    }
    let rebuilt = http::Response::from_parts(parts, reqwest::Body::wrap(replay));
    (rejection, reqwest::Response::from(rebuilt))
}
