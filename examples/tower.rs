//! Calls a real API through a `hyper_util` client wrapped with the client-credentials tower
//! layer, configured from environment variables.
//!
//! ```sh
//! export OAUTH_TOKEN_URL=https://my-domain.auth.us-east-1.amazoncognito.com/oauth2/token
//! export OAUTH_CLIENT_ID=...            # from your provider
//! export OAUTH_CLIENT_SECRET=...        # from your secrets manager, never from code
//! export OAUTH_SCOPE="https://api.example.com/accounts.read"   # optional
//! export API_URL=http://accounts.internal:8080/v1/accounts
//! cargo run --example tower --features tower
//! ```
//!
//! The token request goes through a `reqwest` client of the crate's, so an HTTPS token URL works
//! as it is. The API call goes through the hyper client built here with
//! `Client::builder(..).build_http()`, which speaks plain HTTP only, so this example accepts
//! only an `http://` `API_URL` (a service inside your network, a sidecar). For HTTPS, build the
//! client with a TLS connector instead, for example with the `hyper-rustls` crate:
//!
//! ```text
//! let https = hyper_rustls::HttpsConnectorBuilder::new()
//!     .with_native_roots()?
//!     .https_only()
//!     .enable_http1()
//!     .build();
//! let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(https);
//! ```
//!
//! and wrap it with the same layer.

use std::process::ExitCode;

use bytes::Bytes;
use client_credentials::ClientCredentials;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, ServiceExt};

const REQUIRED: [&str; 4] = [
    "OAUTH_TOKEN_URL",
    "OAUTH_CLIENT_ID",
    "OAUTH_CLIENT_SECRET",
    "API_URL",
];

#[tokio::main]
async fn main() -> ExitCode {
    let missing: Vec<&str> = REQUIRED
        .into_iter()
        .filter(|name| std::env::var_os(name).is_none())
        .collect();
    if !missing.is_empty() {
        eprintln!("missing environment variables: {}", missing.join(", "));
        eprintln!();
        eprintln!("{}", usage());
        return ExitCode::from(2);
    }
    let Some(api_url) = std::env::var("API_URL")
        .ok()
        .and_then(|raw| raw.parse::<http::Uri>().ok())
    else {
        eprintln!("API_URL is not a valid URI");
        return ExitCode::from(2);
    };
    if api_url.scheme_str() != Some("http") {
        eprintln!(
            "API_URL must be http:// in this example: its hyper client has no TLS connector \
             (see the comment at the top of examples/tower.rs for HTTPS)"
        );
        return ExitCode::from(2);
    }
    let credentials = match ClientCredentials::from_env() {
        Ok(credentials) => credentials,
        Err(error) => {
            // A ConfigError never holds the secret.
            eprintln!("invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };

    // `Full<Bytes>` is `Clone`, so a request rejected with 401 invalid_token can be sent again
    // once with a new token.
    let hyper_client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let service = ServiceBuilder::new()
        .layer(credentials.layer())
        .service(hyper_client);

    // What is printed of the URI: no user info, no query.
    let shown = format!(
        "http://{}{}{}",
        api_url.host().unwrap_or(""),
        api_url
            .port_u16()
            .map(|p| format!(":{p}"))
            .unwrap_or_default(),
        api_url.path()
    );
    let request = match http::Request::get(api_url).body(Full::new(Bytes::new())) {
        Ok(request) => request,
        Err(error) => {
            eprintln!("cannot build the request: {error}");
            return ExitCode::from(2);
        }
    };
    match service.oneshot(request).await {
        Ok(response) => {
            let status = response.status();
            let length = match response.into_body().collect().await {
                Ok(body) => body.to_bytes().len().to_string(),
                Err(error) => format!("unreadable ({error})"),
            };
            println!("GET {shown} -> {status}, body: {length} bytes");
            let stats = credentials.stats();
            println!(
                "token requests: {}, tokens fetched: {}, replayed requests: {}",
                stats.token_requests, stats.tokens_fetched, stats.replayed_requests
            );
            if status.is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            // The inner client's error, or the `client_credentials::Error` that kept the
            // request from being sent; neither ever shows the secret or a token.
            eprintln!("GET {shown} failed: {error}");
            let mut source = error.source();
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn usage() -> &'static str {
    "usage:
  OAUTH_TOKEN_URL=https://<domain>.auth.<region>.amazoncognito.com/oauth2/token \\
  OAUTH_CLIENT_ID=<client id> \\
  OAUTH_CLIENT_SECRET=<client secret> \\
  OAUTH_SCOPE=\"<scope> <scope>\" \\
  API_URL=http://<host>:<port>/<path> \\
  cargo run --example tower --features tower

optional: OAUTH_AUTH_METHOD (client_secret_basic | client_secret_post), OAUTH_TENANT_ID,
          OAUTH_AUDIENCE, OAUTH_RESOURCE"
}
