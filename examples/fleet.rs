//! Two instances of a service sharing one token through Redis or Valkey (the `redis` feature).
//!
//! An authorization server and an API run inside this process on 127.0.0.1; two
//! `ClientCredentials`, each as a separate process would build it, share their token through
//! the Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`):
//!
//! ```sh
//! redis-server --port 6379 --save '' &   # or any Redis / Valkey you have
//! cargo run --example fleet --features redis
//! ```
//!
//! Without a Redis the example still runs, and shows the other half of the design: both
//! instances go on without the store (each fetches its own token), and no request fails. It
//! checks what it prints and exits non-zero when a figure is wrong.
//!
//! In production: the same `EncryptionKey` (32 random bytes from your secret manager) and
//! `namespace` in every instance, a Redis user limited to the `{cc:*` keys, and `rediss://`.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use client_credentials::{ClientCredentials, EncryptionKey, Fleet};
use http::StatusCode;
use support::{
    authorization, check, check_eq, json, loopback, random_string, serve, token_answer,
    token_request, Error,
};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    // Made up for this run; a real fleet reads its key from a secret manager.
    let key = EncryptionKey::new("example", random_string(32).as_bytes())?;

    // The authorization server: a new token per request, counted.
    let token_requests = Arc::new(AtomicU64::new(0));
    let (auth, auth_addr) = loopback().await?;
    {
        let token_requests = Arc::clone(&token_requests);
        serve(auth, move |req| {
            let token_requests = Arc::clone(&token_requests);
            async move {
                if let Err(refusal) = token_request(req).await {
                    return refusal;
                }
                let n = token_requests.fetch_add(1, Ordering::SeqCst) + 1;
                token_answer(
                    &format!("fleet-example-{n}-{}", random_string(16)),
                    "Bearer",
                )
            }
        });
    }
    // The API: 200 for any Bearer token, saying which one (by number only).
    let (api, api_addr) = loopback().await?;
    serve(api, |req| async move {
        let token = authorization(req.headers(), "Bearer").unwrap_or("");
        let number = token.split('-').nth(2).unwrap_or("?").to_owned();
        json(
            StatusCode::OK,
            serde_json::json!({ "token_number": number }),
        )
    });
    println!("authorization server  http://{auth_addr}/token");
    println!("protected API         http://{api_addr}/v1/ledger");
    println!("store                 {redis_url}");

    // One namespace for both instances, new for each run.
    let namespace = format!("example-{}", random_string(8));
    let build = || -> Result<ClientCredentials, Error> {
        Ok(ClientCredentials::builder()
            .token_url(format!("http://{auth_addr}/token"))
            .client_id("ledger-service")
            .client_secret("example-secret")
            .fleet(
                Fleet::redis(&redis_url)?
                    .namespace(namespace.clone())
                    .encryption_key(key.clone()),
            )
            .build()?)
    };
    let first = build()?;
    let second = build()?;

    let call = |credentials: &ClientCredentials| {
        let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
            .with(credentials.middleware())
            .build();
        let url = format!("http://{api_addr}/v1/ledger");
        async move {
            let response = client.get(url).send().await?;
            let status = response.status();
            let body: serde_json::Value = serde_json::from_slice(&response.bytes().await?)?;
            Ok::<_, Error>((
                status,
                body["token_number"].as_str().unwrap_or("?").to_owned(),
            ))
        }
    };

    println!();
    println!("1. Instance A's first call");
    let (status, a_token) = call(&first).await?;
    println!("   GET /v1/ledger -> {status}, with token #{a_token}");
    check(status == StatusCode::OK, "instance A's call should succeed")?;
    // The token is written to the store in the background: give it a moment.
    tokio::time::sleep(Duration::from_millis(100)).await;

    println!();
    println!("2. Instance B's first call");
    let (status, b_token) = call(&second).await?;
    println!("   GET /v1/ledger -> {status}, with token #{b_token}");
    check(status == StatusCode::OK, "instance B's call should succeed")?;

    let (a, b) = (first.stats(), second.stats());
    println!();
    println!(
        "instance A: {} token request(s), {} adopted, {} store error(s)",
        a.token_requests, a.tokens_adopted, a.store_errors
    );
    println!(
        "instance B: {} token request(s), {} adopted, {} store error(s)",
        b.token_requests, b.tokens_adopted, b.store_errors
    );
    let requests = token_requests.load(Ordering::SeqCst);
    if a.store_errors + b.store_errors == 0 {
        println!("the store answered: one token for both ({requests} token request)");
        check_eq("token requests", requests, 1)?;
        check_eq("instance B's token", b_token.as_str(), a_token.as_str())?;
        check_eq("tokens adopted by B", b.tokens_adopted, 1)?;
    } else {
        println!(
            "no store at {redis_url}: each instance went on without it ({requests} token \
             requests, no failed call); start a Redis to see them share one"
        );
        check_eq("token requests", requests, 2)?;
    }
    println!("all checks passed");
    Ok(())
}
