//! tonic: a `Channel` wrapped with `credentials.layer().without_replay()` calls a
//! `tonic-health` server on loopback whose interceptor checks the bearer token. A gRPC
//! `UNAUTHENTICATED` drops the cached token, so the next call carries a fresh one.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use client_credentials::ClientCredentials;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tower::ServiceBuilder;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support::*;

/// What the resource server knows: the tokens it accepts, and every token it was shown.
#[derive(Default)]
struct Tokens {
    valid: HashSet<String>,
    seen: Vec<String>,
}

/// A token endpoint issuing `grpc-tok-<n>`, each one registered as valid with the gRPC server.
async fn mount_issuer(auth: &MockServer, tokens: Arc<Mutex<Tokens>>) {
    let n = std::sync::atomic::AtomicUsize::new(0);
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(move |_: &Request| {
            let n = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let token = format!("grpc-tok-{n}");
            tokens.lock().unwrap().valid.insert(token.clone());
            ResponseTemplate::new(200).set_body_json(token_body(&token, 3600))
        })
        .mount(auth)
        .await;
}

/// Starts a health server on 127.0.0.1 whose interceptor accepts only valid bearer tokens.
async fn start_health_server(tokens: Arc<Mutex<Tokens>>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let check_token = move |request: tonic::Request<()>| {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned)
            .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
        let mut tokens = tokens.lock().unwrap();
        tokens.seen.push(token.clone());
        if tokens.valid.contains(&token) {
            Ok(request)
        } else {
            Err(Status::unauthenticated("token revoked"))
        }
    };
    let service = InterceptedService::new(health, check_token);
    tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    addr
}

#[tokio::test]
async fn unauthenticated_drops_the_token_and_the_next_call_gets_a_fresh_one() {
    let tokens = Arc::new(Mutex::new(Tokens::default()));
    let auth = MockServer::start().await;
    mount_issuer(&auth, Arc::clone(&tokens)).await;
    let addr = start_health_server(Arc::clone(&tokens)).await;

    let credentials: ClientCredentials = builder(&auth).build().unwrap();
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    // gRPC bodies are streams: the layer never replays them.
    let service = ServiceBuilder::new()
        .layer(credentials.layer().without_replay())
        .service(channel);
    let mut health = HealthClient::new(service);
    let check = || HealthCheckRequest {
        service: String::new(),
    };

    // 1. The call carries the token and succeeds.
    let answer = health.check(check()).await.unwrap().into_inner();
    assert_eq!(answer.status(), ServingStatus::Serving);
    assert_eq!(credentials.stats().token_requests, 1);

    // 2. The server revokes it: the call fails with UNAUTHENTICATED (not replayed)...
    tokens.lock().unwrap().valid.remove("grpc-tok-1");
    let status = health.check(check()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(status.message(), "token revoked");
    // ... and the layer dropped the token it carried.
    assert_eq!(credentials.stats().forced_refreshes, 1);
    assert_eq!(credentials.stats().replayed_requests, 0);

    // 3. The next call gets a fresh token and succeeds.
    let answer = health.check(check()).await.unwrap().into_inner();
    assert_eq!(answer.status(), ServingStatus::Serving);
    assert_eq!(credentials.stats().token_requests, 2);
    assert_eq!(auth.received_requests().await.unwrap().len(), 2);
    assert_eq!(
        tokens.lock().unwrap().seen,
        ["grpc-tok-1", "grpc-tok-1", "grpc-tok-2"],
        "one call per check: the rejected call was not sent again"
    );

    // 4. Further calls reuse the fresh token.
    for _ in 0..3 {
        health.check(check()).await.unwrap();
    }
    assert_eq!(credentials.stats().token_requests, 2);
}

#[tokio::test]
async fn with_allowed_origins_the_client_must_name_its_origin() {
    // The layer sits outside the channel, which adds scheme and authority itself: a tonic
    // client built with `new` sends path-only URIs, so an `allowed_origins` list cannot match
    // them and no token is sent (fail closed). `with_origin` puts the origin on the URI.
    let tokens = Arc::new(Mutex::new(Tokens::default()));
    let auth = MockServer::start().await;
    mount_issuer(&auth, Arc::clone(&tokens)).await;
    let addr = start_health_server(Arc::clone(&tokens)).await;
    let origin = format!("http://{addr}");
    let credentials = builder(&auth)
        .allowed_origins([origin.as_str()])
        .build()
        .unwrap();
    let channel = Channel::from_shared(origin.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let service = ServiceBuilder::new()
        .layer(credentials.layer().without_replay())
        .service(channel);
    let check = || HealthCheckRequest {
        service: String::new(),
    };

    let status = HealthClient::new(service.clone())
        .check(check())
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unauthenticated, "missing bearer token")
    );
    assert_eq!(credentials.stats().token_requests, 0);

    let mut named = HealthClient::with_origin(service, origin.parse().unwrap());
    let answer = named.check(check()).await.unwrap().into_inner();
    assert_eq!(answer.status(), ServingStatus::Serving);
    assert_eq!(tokens.lock().unwrap().seen, ["grpc-tok-1"]);
}

/// A streamed answer's status comes in its trailers (not a trailers-only answer): an inner
/// service answering a gRPC call with a data frame and then `grpc-status` trailers. `16`
/// (`UNAUTHENTICATED`) drops the token the call carried once the trailers are read, so the next
/// call gets a fresh one; `0` marks the token accepted, so a later rejection of it is replaced
/// at once (a never-accepted replacement would wait for the forced-refresh backoff).
#[tokio::test]
async fn unauthenticated_in_the_trailers_drops_the_token() {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::body::Frame;
    use tower::{Service, ServiceExt};

    let tokens = Arc::new(Mutex::new(Tokens::default()));
    let auth = MockServer::start().await;
    mount_issuer(&auth, Arc::clone(&tokens)).await;
    let credentials: ClientCredentials = builder(&auth).build().unwrap();
    // The grpc-status the next answer ends with, and the token each call carried.
    let status = Arc::new(Mutex::new("16"));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let inner = tower::service_fn({
        let (status, seen) = (Arc::clone(&status), Arc::clone(&seen));
        move |request: http::Request<Full<Bytes>>| {
            let token = request.headers()["authorization"].to_str().unwrap();
            seen.lock().unwrap().push(token.to_owned());
            let mut trailers = http::HeaderMap::new();
            trailers.insert(
                "grpc-status",
                http::HeaderValue::from_static(*status.lock().unwrap()),
            );
            let frames = vec![
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
                Ok(Frame::trailers(trailers)),
            ];
            let response = http::Response::builder()
                .header("content-type", "application/grpc")
                .body(StreamBody::new(futures_util::stream::iter(frames)))
                .unwrap();
            async move { Ok::<_, Infallible>(response) }
        }
    });
    let mut service = ServiceBuilder::new()
        .layer(credentials.layer().without_replay())
        .service(inner);
    // One call ending with `$status`: the answer, its body not read yet.
    macro_rules! call {
        ($status:expr) => {{
            *status.lock().unwrap() = $status;
            let request = http::Request::post("http://grpc.example/grpc.health.v1.Health/Check")
                .header("content-type", "application/grpc")
                .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
                .unwrap();
            service.ready().await.unwrap().call(request).await.unwrap()
        }};
    }

    // 1. UNAUTHENTICATED in the trailers: nothing happens before they are read...
    let response = call!("16");
    assert_eq!(credentials.stats().forced_refreshes, 0);
    let body = response.into_body().collect().await.unwrap();
    assert_eq!(
        body.trailers().unwrap()["grpc-status"],
        "16",
        "trailers passed on"
    );
    assert_eq!(body.to_bytes().len(), 5, "data passed on");
    // ... then the token is dropped.
    assert_eq!(credentials.stats().forced_refreshes, 1);

    // 2. The next call carries a new token, and its status 0 marks it accepted.
    call!("0").into_body().collect().await.unwrap();
    // 3. Revoked later: an accepted token is replaced at once, without a backoff.
    call!("16").into_body().collect().await.unwrap();
    call!("0").into_body().collect().await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        ["grpc-tok-1", "grpc-tok-2", "grpc-tok-2", "grpc-tok-3"].map(|t| format!("Bearer {t}"))
    );
    assert_eq!(credentials.stats().token_requests, 3);
    assert_eq!(credentials.stats().forced_refreshes, 2);
}
