//! gRPC with tonic: a `tonic::transport::Channel` wrapped with the client-credentials layer.
//!
//! ```text
//! cargo run --example grpc --features tower
//! ```
//!
//! With no configuration, the example runs on its own on loopback: an in-process
//! `grpc.health.v1.Health` server whose interceptor checks bearer tokens, and an in-process
//! token source standing in for the authorization server. It shows a call with a token, the
//! server revoking that token (the call gets `UNAUTHENTICATED` and the layer drops the token),
//! and the next call carrying a fresh one.
//!
//! Against your own server, set `OAUTH_TOKEN_URL`, `OAUTH_CLIENT_ID`, `OAUTH_CLIENT_SECRET`
//! (and `OAUTH_SCOPE`, ...; see `ClientCredentialsBuilder::from_env`) and `GRPC_ENDPOINT`
//! (e.g. `http://127.0.0.1:50051`; an `https` endpoint needs one of tonic's TLS features in
//! your own build). The example then calls `Health/Check` there.
//!
//! Two things to know:
//! - gRPC bodies are streams, so the layer never replays a call: use
//!   `credentials.layer().without_replay()`. A call rejected with `UNAUTHENTICATED` is returned
//!   as it is; the token it carried is dropped, so the next call gets a fresh one.
//! - The layer sits outside the channel, which adds scheme and host itself: generated clients
//!   made with `new` send path-only URIs. With `allowed_origins`, build the client with
//!   `with_origin(service, origin)` so the layer sees the origin (otherwise no token is sent).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client_credentials::{
    AccessToken, BoxFuture, ClientCredentials, Error, Scopes, Token, TokenSource,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::Status;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tower::ServiceBuilder;

type Revocable = Arc<Mutex<HashSet<String>>>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match std::env::var("GRPC_ENDPOINT") {
        Ok(endpoint) => remote(&endpoint).await,
        Err(_) => local().await,
    }
}

/// Calls `Health/Check` on your server with tokens from your authorization server.
async fn remote(endpoint: &str) -> Result<(), Box<dyn std::error::Error>> {
    let credentials = ClientCredentials::from_env()?;
    let channel = Channel::from_shared(endpoint.to_owned())?.connect().await?;
    let service = ServiceBuilder::new()
        .layer(credentials.layer().without_replay())
        .service(channel);
    let mut health = HealthClient::with_origin(service, endpoint.parse()?);
    let answer = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    println!("{endpoint}: {:?}", answer.into_inner().status());
    println!("{:?}", credentials.stats());
    Ok(())
}

/// The self-contained demo on loopback.
async fn local() -> Result<(), Box<dyn std::error::Error>> {
    let valid: Revocable = Arc::default();
    let addr = start_health_server(Arc::clone(&valid)).await?;
    println!("health server on {addr} (set GRPC_ENDPOINT and OAUTH_* to call your own)");

    let credentials = ClientCredentials::from_source(LocalIssuer {
        issued: AtomicUsize::new(0),
        valid: Arc::clone(&valid),
    })
    .build()?;
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let service = ServiceBuilder::new()
        .layer(credentials.layer().without_replay())
        .service(channel);
    let mut health = HealthClient::new(service);
    let check = || HealthCheckRequest {
        service: String::new(),
    };

    let answer = health.check(check()).await?.into_inner();
    println!("1. check: {:?}", answer.status());

    let revoked = credentials.access_token().await?;
    valid
        .lock()
        .map_err(|_| "poisoned")?
        .remove(revoked.secret());
    println!("   the server revokes the token");

    match health.check(check()).await {
        Err(status) => println!("2. check: {:?} ({})", status.code(), status.message()),
        Ok(_) => return Err("the revoked token was accepted".into()),
    }

    let answer = health.check(check()).await?.into_inner();
    println!("3. check: {:?} with a fresh token", answer.status());
    let stats = credentials.stats();
    println!(
        "tokens fetched: {}, dropped after UNAUTHENTICATED: {}",
        stats.tokens_fetched, stats.forced_refreshes
    );
    Ok(())
}

/// Mints opaque tokens and tells the health server they are valid: a stand-in for an
/// authorization server, so the demo needs no credentials.
struct LocalIssuer {
    issued: AtomicUsize,
    valid: Revocable,
}

impl TokenSource for LocalIssuer {
    fn fetch_token<'a>(&'a self, _scopes: &'a Scopes) -> BoxFuture<'a, Result<Token, Error>> {
        Box::pin(async move {
            let n = self.issued.fetch_add(1, Ordering::Relaxed) + 1;
            let token = format!("demo-{n}-{:016x}", fastrand::u64(..));
            self.valid
                .lock()
                .map_err(|_| Error::from_source("token registry poisoned"))?
                .insert(token.clone());
            Ok(Token::new(
                AccessToken::new(token),
                Some(Duration::from_secs(3600)),
            ))
        })
    }
}

/// A `grpc.health.v1.Health` server on 127.0.0.1 that accepts only valid bearer tokens.
async fn start_health_server(valid: Revocable) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (_reporter, health) = tonic_health::server::health_reporter();
    let check_token = move |request: tonic::Request<()>| {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
        let known = valid
            .lock()
            .map_err(|_| Status::internal("token registry poisoned"))?
            .contains(token);
        if known {
            Ok(request)
        } else {
            Err(Status::unauthenticated("token revoked"))
        }
    };
    tokio::spawn(
        Server::builder()
            .add_service(InterceptedService::new(health, check_token))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    Ok(addr)
}
