//! What the embedded servers of the client-authentication examples share: serving a hyper
//! service on an ephemeral loopback port (plain HTTP or TLS), reading a token request, JSON
//! answers, the tokens an authorization server issued, a `jti` replay log, the verification of
//! a client assertion (RFC 7523) with `jsonwebtoken`, and the checks that make an example exit
//! non-zero.
//!
//! Not an example of its own: cargo builds `examples/*.rs` and `examples/*/main.rs`, and each
//! example includes this file with `mod support;`.

// Each example uses a part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::CertificateDer;

/// What `main` returns: any error ends the example with a non-zero exit code.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// An embedded server's answer.
pub type Answer = Response<Full<Bytes>>;

/// The lifetime of the access tokens the embedded authorization servers issue.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// The largest request body an embedded server reads.
const MAX_BODY_BYTES: usize = 64 * 1024;

// ----- serving -------------------------------------------------------------------------------

/// A listener on 127.0.0.1 at a port the system picks, and its address: bound before the
/// server starts, so the server can know its own URL (its issuer, the `htu` of its requests).
pub async fn loopback() -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Serves `handler` over plain HTTP/1.1 on `listener`, in the background.
pub fn serve<F, Fut>(listener: TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Answer> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let stream = accept(&listener).await;
            tokio::spawn(serve_connection(TokioIo::new(stream), handler.clone()));
        }
    });
}

/// A TLS server started by [`serve_tls`].
#[derive(Debug, Clone, Default)]
pub struct TlsServer {
    refused: Arc<AtomicU64>,
}

impl TlsServer {
    /// Connections whose TLS handshake failed: no certificate where one is required, one the
    /// client verifier does not trust, a server certificate the client does not trust.
    pub fn refused_handshakes(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }
}

/// Serves `handler` over HTTPS (HTTP/1.1 over TLS with `config`) on `listener`, in the
/// background. The handler gets the client certificate the connection presented (already
/// verified by `config`'s client certificate verifier), if any, with each request.
pub fn serve_tls<F, Fut>(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    handler: F,
) -> TlsServer
where
    F: Fn(Option<CertificateDer<'static>>, Request<Incoming>) -> Fut
        + Clone
        + Send
        + Sync
        + 'static,
    Fut: Future<Output = Answer> + Send + 'static,
{
    let server = TlsServer::default();
    let refused = Arc::clone(&server.refused);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let stream = accept(&listener).await;
            let (acceptor, handler, refused) =
                (acceptor.clone(), handler.clone(), Arc::clone(&refused));
            tokio::spawn(async move {
                let tls = match acceptor.accept(stream).await {
                    Ok(tls) => tls,
                    Err(_) => {
                        refused.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                };
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .cloned();
                let handler = move |req| handler(peer.clone(), req);
                serve_connection(TokioIo::new(tls), handler).await;
            });
        }
    });
    server
}

async fn accept(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => return stream,
            // Out of file descriptors, say: wait a little rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn serve_connection<I, F, Fut>(io: I, handler: F)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Answer> + Send + 'static,
{
    let service = service_fn(move |req| {
        let answer = handler(req);
        async move { Ok::<_, Infallible>(answer.await) }
    });
    // A client closing its connection is not an error worth reporting here.
    let _ = http1::Builder::new().serve_connection(io, service).await;
}

// ----- requests and answers ------------------------------------------------------------------

/// The parameters of a token request, each given once.
#[derive(Debug)]
pub struct Form(HashMap<String, String>);

impl Form {
    /// A parameter's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Every parameter's value.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.0.values().map(String::as_str)
    }
}

/// Reads a client credentials token request (RFC 6749 §4.4.2): `POST`, an
/// `application/x-www-form-urlencoded` body of at most 64 KiB, `grant_type=client_credentials`,
/// no parameter twice (§3.2). Returns its headers and form, or the error to answer.
pub async fn token_request(req: Request<Incoming>) -> Result<(HeaderMap, Form), Answer> {
    if req.method() != Method::POST {
        return Err(oauth_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "the token endpoint takes POST",
        ));
    }
    let is_form = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let (parts, body) = req.into_parts();
    let Ok(body) = Limited::new(body, MAX_BODY_BYTES).collect().await else {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "unreadable body",
        ));
    };
    if !is_form {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be a form",
        ));
    }
    let mut form = HashMap::new();
    for (name, value) in form_urlencoded::parse(&body.to_bytes()).into_owned() {
        if form.insert(name, value).is_some() {
            return Err(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "a parameter is repeated",
            ));
        }
    }
    let form = Form(form);
    if form.get("grant_type") != Some("client_credentials") {
        return Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only client_credentials",
        ));
    }
    Ok((parts.headers, form))
}

/// The credential of `Authorization: <scheme> <credential>` (the scheme compared without case).
pub fn authorization<'h>(headers: &'h HeaderMap, scheme: &str) -> Option<&'h str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (given, credential) = value.split_once(' ')?;
    given
        .eq_ignore_ascii_case(scheme)
        .then(|| credential.trim())
        .filter(|c| !c.is_empty())
}

/// A JSON answer.
pub fn json(status: StatusCode, body: Value) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from(body.to_string())));
    *answer.status_mut() = status;
    answer
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    answer
}

/// An RFC 6749 §5.2 error answer.
pub fn oauth_error(status: StatusCode, code: &str, description: &str) -> Answer {
    json(
        status,
        json!({"error": code, "error_description": description}),
    )
}

/// A token answer (RFC 6749 §5.1), never cached on the way.
pub fn token_answer(token: &str, token_type: &str) -> Answer {
    let mut answer = json(
        StatusCode::OK,
        json!({
            "access_token": token,
            "token_type": token_type,
            "expires_in": TOKEN_LIFETIME.as_secs(),
        }),
    );
    answer
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    answer
}

/// A resource server's refusal (RFC 6750 §3, RFC 9449 §7.1): `status` with
/// `WWW-Authenticate: <scheme> error="<code>", error_description="<description>"`.
pub fn challenge(status: StatusCode, scheme: &str, code: &str, description: &str) -> Answer {
    let mut answer = json(
        status,
        json!({"error": code, "error_description": description}),
    );
    // A quoted-string holds no bare `"` or `\`.
    let quoted = description.replace(['"', '\\'], "'");
    let value = format!(r#"{scheme} error="{code}", error_description="{quoted}""#);
    let value = HeaderValue::try_from(value)
        .unwrap_or_else(|_| HeaderValue::from_static(r#"Bearer error="invalid_token""#));
    answer.headers_mut().insert(WWW_AUTHENTICATE, value);
    answer
}

// ----- what an authorization server remembers ------------------------------------------------

/// The access tokens an authorization server issued, each with what it is bound to (nothing, a
/// DPoP key's thumbprint, a client certificate's): what its resource servers learn by token
/// introspection (RFC 7662) or from a JWT access token's `cnf` claim.
#[derive(Debug)]
pub struct Tokens<B> {
    issued: Mutex<HashMap<String, (B, Instant)>>,
}

impl<B> Default for Tokens<B> {
    fn default() -> Self {
        Self {
            issued: Mutex::new(HashMap::new()),
        }
    }
}

impl<B: Clone> Tokens<B> {
    /// A new opaque token bound to `binding`, valid for [`TOKEN_LIFETIME`].
    pub fn issue(&self, binding: B) -> String {
        let token = random_string(43);
        lock(&self.issued).insert(token.clone(), (binding, Instant::now() + TOKEN_LIFETIME));
        token
    }

    /// What `token` is bound to, if it was issued here and has not expired.
    pub fn binding(&self, token: &str) -> Option<B> {
        let issued = lock(&self.issued);
        let (binding, expires_at) = issued.get(token)?;
        (Instant::now() < *expires_at).then(|| binding.clone())
    }

    /// How many tokens were issued.
    pub fn count(&self) -> usize {
        lock(&self.issued).len()
    }
}

/// The `jti`s seen, each kept until its JWT expires: a JWT whose `jti` is still here is a replay
/// (RFC 7523 §3 item 7, RFC 9449 §11.1). Kept no longer, so the log does not grow forever.
#[derive(Debug, Default)]
pub struct JtiLog {
    seen: Mutex<HashMap<String, u64>>,
}

impl JtiLog {
    /// Whether `jti` is new (it is then remembered until `expires_at`, in Unix seconds).
    pub fn first_use(&self, jti: &str, expires_at: u64) -> bool {
        let now = now_secs();
        let mut seen = lock(&self.seen);
        seen.retain(|_, until| *until >= now);
        if seen.contains_key(jti) {
            return false;
        }
        seen.insert(jti.to_owned(), expires_at);
        true
    }
}

// ----- client assertions (RFC 7523) ----------------------------------------------------------

/// The `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The clock skew allowed on `exp`.
const CLOCK_SKEW_SECS: u64 = 5;

/// The longest an assertion may still be valid when it arrives: a leaked one is soon useless.
/// (Keycloak, for one, refuses assertions that live longer than its configured maximum.)
const MAX_ASSERTION_LIFETIME_SECS: u64 = 300;

/// A client registered for JWT client authentication: its id, and the key that verifies its
/// assertions (the public JWK for `private_key_jwt`, the shared secret for `client_secret_jwt`).
pub struct RegisteredClient {
    /// The client id.
    pub client_id: String,
    /// The only algorithm accepted: the server decides it, never the JWT's header.
    pub algorithm: Algorithm,
    /// The verification key.
    pub key: DecodingKey,
    /// The registered key id, if any: an assertion naming another key is refused.
    pub kid: Option<String>,
}

/// What a verified client assertion said.
#[derive(Debug, Clone)]
pub struct CheckedAssertion {
    /// The header's `alg`.
    pub algorithm: Algorithm,
    /// The `aud` (one string).
    pub audience: String,
    /// The `jti`, now used up.
    pub jti: String,
    /// Seconds until `exp`.
    pub expires_in: u64,
}

/// Authenticates the client of a token request by its JWT assertion, as RFC 7523 §3 (with
/// draft-ietf-oauth-rfc7523bis) tells an authorization server to: `client_assertion_type` is
/// jwt-bearer; the signature verifies with the registered key under the registered algorithm;
/// `iss` = `sub` = the client id (and the form's `client_id`, if sent); `aud` is one string
/// naming this server (one of `audiences`); `exp` is in the future but not far; the `jti` was
/// never seen. The error says which check failed.
pub fn verify_client_assertion(
    form: &Form,
    client: &RegisteredClient,
    audiences: &[&str],
    jtis: &JtiLog,
) -> Result<CheckedAssertion, String> {
    if form.get("client_assertion_type") != Some(JWT_BEARER) {
        return Err("client_assertion_type is not jwt-bearer".into());
    }
    let assertion = form
        .get("client_assertion")
        .ok_or("no client_assertion in the form")?;
    if form
        .get("client_id")
        .is_some_and(|id| id != client.client_id)
    {
        return Err("unknown client_id".into());
    }
    let header =
        jsonwebtoken::decode_header(assertion).map_err(|e| format!("not a signed JWT: {e}"))?;
    if header.alg != client.algorithm {
        return Err(format!(
            "alg {:?} is not the registered {:?}",
            header.alg, client.algorithm
        ));
    }
    if let (Some(kid), Some(registered)) = (&header.kid, &client.kid) {
        if kid != registered {
            return Err("the kid names a key that is not registered".into());
        }
    }
    let mut validation = Validation::new(client.algorithm);
    validation.set_issuer(&[&client.client_id]);
    validation.sub = Some(client.client_id.clone());
    validation.set_audience(audiences);
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.leeway = CLOCK_SKEW_SECS;
    let claims = jsonwebtoken::decode::<Value>(assertion, &client.key, &validation)
        .map_err(|e| format!("the assertion does not verify: {e}"))?
        .claims;
    // An array could name this server and another one too (the 2025 audience injection
    // attacks): one string only.
    let audience = claims["aud"]
        .as_str()
        .ok_or("aud must be one string, not an array")?
        .to_owned();
    let exp = claims["exp"].as_u64().ok_or("exp is not a number")?;
    let expires_in = exp.saturating_sub(now_secs());
    if expires_in > MAX_ASSERTION_LIFETIME_SECS {
        return Err("exp is too far in the future".into());
    }
    let jti = claims["jti"].as_str().ok_or("no jti")?.to_owned();
    if !jtis.first_use(&jti, exp + CLOCK_SKEW_SECS) {
        return Err("jti already used: a replayed assertion".into());
    }
    Ok(CheckedAssertion {
        algorithm: header.alg,
        audience,
        jti,
        expires_in,
    })
}

// ----- small things --------------------------------------------------------------------------

/// base64url (no padding) of the SHA-256 of `bytes`: a DPoP proof's `ath` (RFC 9449 §4.2), a
/// certificate's `x5t#S256` (RFC 8705 §3.1).
pub fn sha256_b64url(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(bytes))
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A made-up token, secret or nonce for this run (letters and digits). `fastrand` is fine for a
/// demo whose values never leave the process; a real server draws from a CSPRNG.
pub fn random_string(len: usize) -> String {
    std::iter::repeat_with(fastrand::alphanumeric)
        .take(len)
        .collect()
}

/// A count, read.
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::SeqCst)
}

/// A count, incremented.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::SeqCst);
}

/// The guard of a mutex, poisoned or not (a panicking handler must not stop the others).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `Err` naming the check when `ok` is false: the example then exits non-zero.
pub fn check(ok: bool, what: &str) -> Result<(), Error> {
    if ok {
        Ok(())
    } else {
        Err(format!("check failed: {what}").into())
    }
}

/// [`check`] that `got` is `expected`.
pub fn check_eq<T: PartialEq + std::fmt::Debug>(
    what: &str,
    got: T,
    expected: T,
) -> Result<(), Error> {
    check(
        got == expected,
        &format!("{what}: expected {expected:?}, got {got:?}"),
    )
}
