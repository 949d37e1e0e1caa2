//! Calls a real API through `reqwest` with the client-credentials middleware, configured from
//! environment variables.
//!
//! ```sh
//! export OAUTH_TOKEN_URL=https://my-domain.auth.us-east-1.amazoncognito.com/oauth2/token
//! export OAUTH_CLIENT_ID=...            # from your provider
//! export OAUTH_CLIENT_SECRET=...        # from your secrets manager, never from code
//! export OAUTH_SCOPE="https://api.example.com/accounts.read"   # optional
//! export API_URL=https://api.example.com/v1/accounts
//! cargo run --example reqwest
//! ```
//!
//! Also read when set: `OAUTH_AUTH_METHOD` (`client_secret_basic` or `client_secret_post`),
//! `OAUTH_TENANT_ID` (sent as `X-Tenant-Id`), `OAUTH_AUDIENCE`, `OAUTH_RESOURCE`.

use std::process::ExitCode;

use client_credentials::ClientCredentials;

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
        .and_then(|raw| url::Url::parse(&raw).ok())
    else {
        eprintln!("API_URL is not a valid URL");
        return ExitCode::from(2);
    };
    let credentials = match ClientCredentials::from_env() {
        Ok(credentials) => credentials,
        Err(error) => {
            // A ConfigError never holds the secret.
            eprintln!("invalid configuration: {error}");
            return ExitCode::from(2);
        }
    };

    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(credentials.middleware())
        .build();
    // What is printed of the URL: no user info, no query.
    let shown = format!(
        "{}://{}{}{}",
        api_url.scheme(),
        api_url.host_str().unwrap_or(""),
        api_url.port().map(|p| format!(":{p}")).unwrap_or_default(),
        api_url.path()
    );
    match client.get(api_url).send().await {
        Ok(response) => {
            let status = response.status();
            println!("GET {shown} -> {status}");
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
            // Token errors arrive as `reqwest_middleware::Error::Middleware` holding a
            // `client_credentials::Error`; neither ever shows the secret or a token.
            eprintln!("GET {shown} failed: {error}");
            let mut source = std::error::Error::source(&error);
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
  API_URL=https://api.example.com/v1/accounts \\
  cargo run --example reqwest

optional: OAUTH_AUTH_METHOD (client_secret_basic | client_secret_post), OAUTH_TENANT_ID,
          OAUTH_AUDIENCE, OAUTH_RESOURCE"
}
