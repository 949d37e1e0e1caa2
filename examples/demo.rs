//! A self-contained tour of the crate, on this machine only.
//!
//! Two servers run inside this process on 127.0.0.1 (ephemeral ports): an OAuth 2.0
//! authorization server (`POST /oauth2/token`, client_secret_basic or client_secret_post) and a
//! protected API (`GET /v1/wallets`, `GET /v1/payouts`) that accepts only tokens the
//! authorization server issued and has not revoked. A `reqwest` client with the
//! client-credentials middleware then calls the API, and the demo prints what happened.
//!
//! ```sh
//! cargo run --example demo
//! ```
//!
//! The client secret is generated at random for each run. Neither it nor any token is printed.
//! Every figure shown is also checked: the demo exits non-zero when one is not what it should be.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use client_credentials::ClientCredentials;
use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// The lifetime of the tokens the embedded authorization server issues (Cognito's default).
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// The scopes the embedded authorization server knows.
const KNOWN_SCOPES: [&str; 2] = ["wallets.read", "payouts.write"];
/// How many calls the demo sends at once.
const CONCURRENT_CALLS: usize = 200;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let started = Instant::now();
    let client_id = "demo-service";
    // Made up for this run: the demo never holds a real secret.
    let client_secret = random_string(40);

    let backend = Arc::new(Backend::new(client_id, &client_secret));
    let auth_addr = serve({
        let backend = Arc::clone(&backend);
        move |req| token_endpoint(Arc::clone(&backend), req)
    })
    .await?;
    let api_addr = serve({
        let backend = Arc::clone(&backend);
        move |req| protected_api(Arc::clone(&backend), req)
    })
    .await?;
    println!("authorization server  http://{auth_addr}/oauth2/token");
    println!("protected API         http://{api_addr}/v1/wallets");

    // Plain HTTP is accepted for the token URL because the host is loopback; any other host
    // must use HTTPS.
    let builder = ClientCredentials::builder()
        .token_url(format!("http://{auth_addr}/oauth2/token"))
        .client_id(client_id)
        .client_secret(client_secret)
        .scopes("wallets.read");
    let credentials = builder.clone().build()?;
    let http = reqwest::Client::new();
    let client = reqwest_middleware::ClientBuilder::new(http.clone())
        .with(credentials.middleware())
        .build();
    let wallets = format!("http://{api_addr}/v1/wallets");

    println!();
    println!("1. The first call finds the cache empty and fetches a token");
    let response = client.get(&wallets).send().await?;
    let status = response.status();
    let body = response.text().await?;
    println!("   GET /v1/wallets -> {status} {body}");
    println!("   token requests: {}", backend.token_requests());
    check(status == StatusCode::OK, "the first call should succeed")?;
    check_eq(
        "token requests after the first call",
        backend.token_requests(),
        1,
    )?;

    println!();
    println!("2. {CONCURRENT_CALLS} concurrent calls");
    let before = backend.token_requests();
    let statuses = concurrent_gets(&client, &wallets, CONCURRENT_CALLS).await?;
    println!(
        "   warm cache: {} answered 200, new token requests: {}",
        count_ok(&statuses),
        backend.token_requests() - before
    );
    check_eq(
        "200s with a warm cache",
        count_ok(&statuses),
        CONCURRENT_CALLS as u64,
    )?;
    check_eq(
        "token requests with a warm cache",
        backend.token_requests() - before,
        0,
    )?;

    // A second instance of the service starting up: its cache is cold, and all its first
    // requests arrive together.
    let cold = builder.clone().build()?;
    let cold_client = reqwest_middleware::ClientBuilder::new(http.clone())
        .with(cold.middleware())
        .build();
    let before = backend.token_requests();
    let statuses = concurrent_gets(&cold_client, &wallets, CONCURRENT_CALLS).await?;
    let fetched = backend.token_requests() - before;
    println!(
        "   cold cache (a second instance starting): {} answered 200, new token requests: {fetched}",
        count_ok(&statuses)
    );
    check_eq(
        "200s with a cold cache",
        count_ok(&statuses),
        CONCURRENT_CALLS as u64,
    )?;
    check_eq(
        "token requests for concurrent calls on a cold cache",
        fetched,
        1,
    )?;

    println!();
    println!("3. The API revokes every token; the next call is replayed once with a new token");
    let revoked = backend.revoke_all();
    println!("   revoked {revoked} tokens");
    let (tokens_before, api_before) = (backend.token_requests(), backend.api_requests());
    let rejected_before = backend.invalid_token_answers();
    let response = client.get(&wallets).send().await?;
    let status = response.status();
    let (tokens, api, rejected) = (
        backend.token_requests() - tokens_before,
        backend.api_requests() - api_before,
        backend.invalid_token_answers() - rejected_before,
    );
    println!("   GET /v1/wallets -> {status}");
    println!("   behind it: {rejected} answer 401 invalid_token, {tokens} token request, {api} API requests");
    check(
        status == StatusCode::OK,
        "the call after the revocation should succeed",
    )?;
    check_eq("401 invalid_token answers", rejected, 1)?;
    check_eq("token requests after the revocation", tokens, 1)?;
    check_eq("API requests (the rejected one and its retry)", api, 2)?;

    println!();
    println!("4. A 403 is returned as it is: a new token would not help");
    let (tokens_before, api_before) = (backend.token_requests(), backend.api_requests());
    let response = client
        .get(format!("http://{api_addr}/v1/payouts"))
        .send()
        .await?;
    let status = response.status();
    let body = response.text().await?;
    let (tokens, api) = (
        backend.token_requests() - tokens_before,
        backend.api_requests() - api_before,
    );
    println!("   GET /v1/payouts -> {status} {body}");
    println!("   behind it: {tokens} token requests, {api} API request");
    check(
        status == StatusCode::FORBIDDEN,
        "the payouts call should be refused",
    )?;
    check(
        body.contains("insufficient_scope"),
        "the 403 body should reach the caller",
    )?;
    check_eq("token requests after a 403", tokens, 0)?;
    check_eq("API requests for a 403", api, 1)?;

    println!();
    println!("5. Counts");
    let expected_api = 1 + 2 * CONCURRENT_CALLS as u64 + 2 + 1;
    println!(
        "   authorization server: {} token requests",
        backend.token_requests()
    );
    println!(
        "   protected API: {} requests, {} answered 401 invalid_token",
        backend.api_requests(),
        backend.invalid_token_answers()
    );
    let stats = credentials.stats();
    println!(
        "   first instance:  tokens fetched {}, token requests {}, forced refreshes {}, replayed requests {}",
        stats.tokens_fetched, stats.token_requests, stats.forced_refreshes, stats.replayed_requests
    );
    let cold_stats = cold.stats();
    println!(
        "   second instance: tokens fetched {}, token requests {}, forced refreshes {}, replayed requests {}",
        cold_stats.tokens_fetched,
        cold_stats.token_requests,
        cold_stats.forced_refreshes,
        cold_stats.replayed_requests
    );
    check_eq("token requests in all", backend.token_requests(), 3)?;
    check_eq("API requests in all", backend.api_requests(), expected_api)?;
    check_eq("first instance: tokens fetched", stats.tokens_fetched, 2)?;
    check_eq(
        "first instance: forced refreshes",
        stats.forced_refreshes,
        1,
    )?;
    check_eq(
        "first instance: replayed requests",
        stats.replayed_requests,
        1,
    )?;
    check_eq(
        "second instance: tokens fetched",
        cold_stats.tokens_fetched,
        1,
    )?;
    println!();
    println!("all checks passed in {} ms", started.elapsed().as_millis());
    Ok(())
}

async fn concurrent_gets(
    client: &reqwest_middleware::ClientWithMiddleware,
    url: &str,
    n: usize,
) -> Result<Vec<StatusCode>, Error> {
    let mut calls = JoinSet::new();
    for _ in 0..n {
        let request = client.get(url);
        calls.spawn(async move { request.send().await.map(|r| r.status()) });
    }
    let mut statuses = Vec::with_capacity(n);
    while let Some(joined) = calls.join_next().await {
        statuses.push(joined??);
    }
    Ok(statuses)
}

fn count_ok(statuses: &[StatusCode]) -> u64 {
    statuses.iter().filter(|s| **s == StatusCode::OK).count() as u64
}

fn check(ok: bool, what: &str) -> Result<(), Error> {
    if ok {
        Ok(())
    } else {
        Err(format!("check failed: {what}").into())
    }
}

fn check_eq(what: &str, got: u64, expected: u64) -> Result<(), Error> {
    check(
        got == expected,
        &format!("{what}: expected {expected}, got {got}"),
    )
}

// ----- the embedded servers -------------------------------------------------------------------

/// What both embedded servers share: the tokens the authorization server issued (the API checks
/// them, as a resource server asks its authorization server), and the counts.
struct Backend {
    client_id: String,
    client_secret: String,
    tokens: Mutex<HashMap<String, Grant>>,
    token_requests: AtomicU64,
    api_requests: AtomicU64,
    invalid_token_answers: AtomicU64,
}

struct Grant {
    expires_at: Instant,
    scopes: Vec<String>,
}

impl Backend {
    fn new(client_id: &str, client_secret: &str) -> Self {
        Self {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            tokens: Mutex::new(HashMap::new()),
            token_requests: AtomicU64::new(0),
            api_requests: AtomicU64::new(0),
            invalid_token_answers: AtomicU64::new(0),
        }
    }

    fn tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, Grant>> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn issue(&self, scopes: Vec<String>) -> String {
        let token = random_string(32);
        let grant = Grant {
            expires_at: Instant::now() + TOKEN_LIFETIME,
            scopes,
        };
        self.tokens().insert(token.clone(), grant);
        token
    }

    /// The scopes of a token that is known, unexpired and not revoked.
    fn scopes_of(&self, token: &str) -> Option<Vec<String>> {
        let tokens = self.tokens();
        let grant = tokens.get(token)?;
        (Instant::now() < grant.expires_at).then(|| grant.scopes.clone())
    }

    /// Revokes every token issued so far; returns how many there were.
    fn revoke_all(&self) -> usize {
        let mut tokens = self.tokens();
        let n = tokens.len();
        tokens.clear();
        n
    }

    fn authenticates(&self, id: &str, secret: &str) -> bool {
        id == self.client_id && secret == self.client_secret
    }

    fn token_requests(&self) -> u64 {
        self.token_requests.load(Ordering::SeqCst)
    }

    fn api_requests(&self) -> u64 {
        self.api_requests.load(Ordering::SeqCst)
    }

    fn invalid_token_answers(&self) -> u64 {
        self.invalid_token_answers.load(Ordering::SeqCst)
    }
}

/// `POST /oauth2/token`: the client credentials grant (RFC 6749 §4.4).
async fn token_endpoint(backend: Arc<Backend>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/oauth2/token" {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "not_found"}),
        );
    }
    if req.method() != Method::POST {
        return json(
            StatusCode::METHOD_NOT_ALLOWED,
            serde_json::json!({"error": "invalid_request"}),
        );
    }
    backend.token_requests.fetch_add(1, Ordering::SeqCst);
    let is_form = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let basic = basic_credentials(req.headers());
    let Ok(body) = req.into_body().collect().await else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    };
    if !is_form {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let form: HashMap<String, String> = form_urlencoded::parse(&body.to_bytes())
        .into_owned()
        .collect();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    // client_secret_basic, else client_secret_post.
    let credentials = basic.or_else(|| {
        Some((
            form.get("client_id")?.clone(),
            form.get("client_secret")?.clone(),
        ))
    });
    match credentials {
        Some((id, secret)) if backend.authenticates(&id, &secret) => {}
        _ => {
            let mut response = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                http::HeaderValue::from_static(r#"Basic realm="demo""#),
            );
            return response;
        }
    }
    let scopes: Vec<String> = form
        .get("scope")
        .map(|s| {
            s.split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if scopes.iter().any(|s| !KNOWN_SCOPES.contains(&s.as_str())) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_scope");
    }
    let scope = scopes.join(" ");
    let token = backend.issue(scopes);
    json(
        StatusCode::OK,
        serde_json::json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME.as_secs(),
            "scope": scope,
        }),
    )
}

/// The protected API, answering as an RFC 6750 resource server.
async fn protected_api(backend: Arc<Backend>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    backend.api_requests.fetch_add(1, Ordering::SeqCst);
    let needed = match (req.method(), req.uri().path()) {
        (&Method::GET, "/v1/wallets") => "wallets.read",
        (&Method::GET, "/v1/payouts") => "payouts.write",
        _ => {
            return json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "not_found"}),
            )
        }
    };
    let Some(token) = bearer_token(req.headers()) else {
        let mut response = json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "missing_bearer_token"}),
        );
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            http::HeaderValue::from_static(r#"Bearer realm="demo""#),
        );
        return response;
    };
    let Some(scopes) = backend.scopes_of(&token) else {
        backend.invalid_token_answers.fetch_add(1, Ordering::SeqCst);
        let mut response = json(
            StatusCode::UNAUTHORIZED,
            serde_json::json!({"error": "invalid_token"}),
        );
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            http::HeaderValue::from_static(r#"Bearer realm="demo", error="invalid_token""#),
        );
        return response;
    };
    if !scopes.iter().any(|s| s == needed) {
        let mut response = json(
            StatusCode::FORBIDDEN,
            serde_json::json!({"error": "insufficient_scope"}),
        );
        if let Ok(value) =
            format!(r#"Bearer realm="demo", error="insufficient_scope", scope="{needed}""#).parse()
        {
            response.headers_mut().insert(WWW_AUTHENTICATE, value);
        }
        return response;
    }
    json(
        StatusCode::OK,
        serde_json::json!({"wallets": [{"id": "w-1", "currency": "EUR"}, {"id": "w-2", "currency": "USD"}]}),
    )
}

/// The id and secret of `Authorization: Basic`, form-urldecoded (RFC 6749 §2.3.1).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id), form_decode(secret)))
}

fn form_decode(part: &str) -> String {
    // An encoded part holds no raw '=' or '&', so it parses as one key.
    form_urlencoded::parse(part.as_bytes())
        .next()
        .map(|(key, _)| key.into_owned())
        .unwrap_or_default()
}

fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

fn oauth_error(status: StatusCode, code: &str) -> Response<Full<Bytes>> {
    json(status, serde_json::json!({"error": code}))
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn random_string(len: usize) -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(len)
        .collect()
}

/// Serves `handler` over HTTP/1.1 on 127.0.0.1 at an ephemeral port, in the background.
async fn serve<F, Fut>(handler: F) -> std::io::Result<SocketAddr>
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let response = handler(req);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                // A client closing its connection is not an error worth reporting here.
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}
