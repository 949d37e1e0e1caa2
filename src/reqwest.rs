//! The `reqwest-middleware` adapter: moves requests and responses through an
//! [`Exchange`](crate::decide::Exchange), which makes every decision.

use http::Extensions;
use reqwest::ResponseBuilderExt as _;
use reqwest_middleware::{Middleware, Next};

use crate::body::ReadPrefix;
use crate::challenge::MAX_INSPECTED_BODY;
use crate::decide::{Exchange, RequestOptions, Target, Verdict};
use crate::ClientCredentials;

/// A [`reqwest_middleware::Middleware`] that puts a token on every request and replays it once
/// after the API rejected its token.
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
        let exchange = Exchange::begin(
            &self.credentials,
            Target::url(req.url()),
            req.headers(),
            extensions.get::<RequestOptions>(),
        );
        let Some(mut exchange) = exchange else {
            return next.run(req, extensions).await;
        };
        let credential = match exchange.authorization_now() {
            Some(credential) => credential,
            None => exchange
                .authorization()
                .await
                .map_err(reqwest_middleware::Error::middleware)?,
        };
        let proof = exchange
            .proof(&credential, req.method(), Target::url(req.url()))
            .map_err(reqwest_middleware::Error::middleware)?;
        exchange.apply(credential, proof, req.headers_mut());
        // `try_clone` is `None` for a streaming body: such a request is sent once.
        let copy = if exchange.wants_copy() {
            req.try_clone()
        } else {
            None
        };
        let response = next.clone().run(req, extensions).await?;
        let verdict = exchange.inspect(response.status(), response.headers(), copy.is_some());
        match (verdict, copy) {
            (Verdict::PassOn, _) | (_, None) => Ok(response),
            // Boxed: the rejection path's state (the body read, the replacement token, the
            // replay) stays out of the future every request allocates.
            (verdict, Some(copy)) => {
                Box::pin(after_rejection(
                    exchange, verdict, response, copy, extensions, next,
                ))
                .await
            }
        }
    }
}

/// After an answer that may be a rejection: reads its body if the headers do not settle it,
/// and replays the copy once with the new token, or gives the answer back as it came.
async fn after_rejection(
    mut exchange: Exchange<&ClientCredentials>,
    verdict: Verdict,
    response: reqwest::Response,
    mut copy: reqwest::Request,
    extensions: &mut Extensions,
    next: Next<'_>,
) -> reqwest_middleware::Result<reqwest::Response> {
    let (verdict, response) = match verdict {
        Verdict::ReadBody => read_and_inspect(&mut exchange, response).await,
        verdict => (verdict, response),
    };
    if verdict != Verdict::Replay {
        return Ok(response);
    }
    let Some(credential) = exchange.replacement().await else {
        return Ok(response);
    };
    let proof = match exchange.proof(&credential, copy.method(), Target::url(copy.url())) {
        Ok(proof) => proof,
        // No proof for the replay: the caller gets the answer as it came.
        Err(_) => return Ok(response),
    };
    drop(response);
    exchange.apply(credential, proof, copy.headers_mut());
    let response = next.run(copy, extensions).await?;
    exchange.inspect(response.status(), response.headers(), false);
    Ok(response)
}

/// Reads up to [`MAX_INSPECTED_BODY`] bytes of the body for [`Exchange::inspect_body`], and
/// gives back a response whose status, headers, URL and body are those received.
async fn read_and_inspect(
    exchange: &mut Exchange<&ClientCredentials>,
    response: reqwest::Response,
) -> (Verdict, reqwest::Response) {
    let url = response.url().clone();
    let (mut parts, body) = http::Response::<reqwest::Body>::from(response).into_parts();
    let mut reader = ReadPrefix::new(body, MAX_INSPECTED_BODY);
    let (data, replayed) = std::future::poll_fn(|cx| reader.poll(cx)).await;
    let verdict = exchange.inspect_body(parts.status, &parts.headers, data.as_deref());
    // `reqwest::Response::from` takes the URL from the extensions, where only
    // `ResponseBuilderExt::url` can put it.
    if let Ok(carrier) = http::Response::builder().url(url).body(()) {
        parts.extensions.extend(carrier.into_parts().0.extensions);
    }
    let rebuilt = http::Response::from_parts(parts, reqwest::Body::wrap(replayed));
    (verdict, reqwest::Response::from(rebuilt))
}
