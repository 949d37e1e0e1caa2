//! `client_secret_jwt` (RFC 7523 §2.2, OpenID Connect Core §9): the client proves it knows the
//! client secret with a JWT signed by HMAC (HS256) under that secret; the secret itself never
//! crosses the wire, and each assertion is good for one token request only.
//!
//! Two servers run inside this process on 127.0.0.1 (ephemeral ports): an authorization server
//! whose token endpoint verifies each client assertion as RFC 7523 §3 says (the HMAC with the
//! shared secret, `iss` = `sub` = the client id, `aud`, `exp`, a `jti` never seen before) and
//! answers 401 `invalid_client` otherwise, and an API that accepts only the tokens it issued. A
//! `reqwest` client with the middleware calls the API; every step is checked, and the example
//! exits non-zero when one is not what it should be.
//!
//! ```sh
//! cargo run --example client_secret_jwt --features jwt
//! ```
//!
//! The secret is made up for each run, and neither it, an assertion nor a token is printed. For
//! HS256 the secret should be at least 32 bytes (RFC 7518 §3.2).
//!
//! On a real server:
//!
//! - **Keycloak**: the client's *Credentials* tab, *Client Authenticator* "Signed JWT with
//!   Client Secret", signature algorithm HS256. Accepts the realm's issuer URL or its token
//!   endpoint as `aud`.
//! - **Okta**: `token_endpoint_auth_method` `client_secret_jwt` on the app (Apps API). Okta
//!   wants the token endpoint's URL as `aud`: `AssertionAudience::TokenEndpoint`.
//! - **Microsoft Entra ID**: no `client_secret_jwt`; send the secret (`client_secret_post`) or,
//!   better, use a certificate (`private_key_jwt`, see `examples/private_key_jwt.rs`).
//! - **Duende IdentityServer**: no built-in validator for it (a custom `ISecretValidator`);
//!   Duende recommends `private_key_jwt` instead.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use client_credentials::{AuthMethod, ClientCredentials, OAuthErrorCode};
use http::header::AUTHORIZATION;
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use jsonwebtoken::{Algorithm, DecodingKey};
use support::{
    authorization, bump, challenge, check, check_eq, get, json, lock, loopback, oauth_error,
    random_string, serve, token_answer, token_request, verify_client_assertion, Answer,
    CheckedAssertion, Error, JtiLog, RegisteredClient, Tokens,
};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let started = Instant::now();
    let client_id = "reporting-job";
    // Made up for this run: the example never holds a real secret. 48 letters and digits, about
    // 285 bits: more than HS256's 256.
    let client_secret = random_string(48);

    let (auth_listener, auth_addr) = loopback().await?;
    let issuer = format!("http://{auth_addr}");
    let token_url = format!("{issuer}/oauth2/token");
    let server = Arc::new(AuthorizationServer {
        issuer: issuer.clone(),
        token_url: token_url.clone(),
        // The server keeps the same secret: HMAC is symmetric.
        client: RegisteredClient {
            client_id: client_id.to_owned(),
            algorithm: Algorithm::HS256,
            key: DecodingKey::from_secret(client_secret.as_bytes()),
            kid: None,
        },
        secret: client_secret.clone(),
        secret_on_the_wire: AtomicBool::new(false),
        jtis: JtiLog::default(),
        tokens: Tokens::default(),
        accepted: Mutex::new(Vec::new()),
        refused: AtomicU64::new(0),
        api_requests: AtomicU64::new(0),
    });
    serve(auth_listener, {
        let server = Arc::clone(&server);
        move |req| token_endpoint(Arc::clone(&server), req)
    });
    let (api_listener, api_addr) = loopback().await?;
    serve(api_listener, {
        let server = Arc::clone(&server);
        move |req| protected_api(Arc::clone(&server), req)
    });
    let reports = format!("http://{api_addr}/v1/reports");
    println!("authorization server  {token_url} (issuer {issuer})");
    println!("protected API         {reports}");

    // Plain HTTP is accepted for the token URL because the host is loopback; any other host
    // must use HTTPS.
    let builder = ClientCredentials::builder()
        .token_url(&token_url)
        .client_id(client_id)
        .auth_method(AuthMethod::ClientSecretJwt)
        // The assertion's `aud` is the issuer by default, which Keycloak accepts. Okta wants
        // the token endpoint's URL instead:
        //     .assertion_audience(AssertionAudience::TokenEndpoint)
        .issuer(&issuer);
    let credentials = builder.clone().client_secret(client_secret).build()?;
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(credentials.middleware())
        .build();

    println!();
    println!("1. The first call fetches a token, authenticated by an HS256 assertion");
    let status = client.get(&reports).send().await?.status();
    println!("   GET /v1/reports -> {status}");
    let accepted = server.accepted();
    let first = accepted.first().ok_or("no assertion was accepted")?;
    println!(
        "   the token endpoint verified it: alg {:?} (HMAC with the shared secret), iss = sub = \
         {client_id}, aud = {} (the issuer), exp in {} s, jti never seen before",
        first.algorithm, first.audience, first.expires_in
    );
    check(status == StatusCode::OK, "the first call should succeed")?;
    check_eq("assertions accepted", accepted.len(), 1)?;
    check_eq("the assertion's alg", first.algorithm, Algorithm::HS256)?;
    check_eq(
        "the assertion's aud",
        first.audience.as_str(),
        issuer.as_str(),
    )?;

    println!();
    println!("2. The token is dropped; the next token request carries a new assertion");
    let token = credentials.access_token().await?;
    credentials.invalidate(&token);
    let status = client.get(&reports).send().await?.status();
    let renewed = credentials.access_token().await?;
    let accepted = server.accepted();
    let jti_changed = accepted.len() == 2 && accepted[0].jti != accepted[1].jti;
    println!(
        "   GET /v1/reports -> {status}, with a new token: {}",
        renewed != token
    );
    println!(
        "   assertions accepted: {}, the second with a new jti: {jti_changed}",
        accepted.len()
    );
    check(
        status == StatusCode::OK,
        "the call after the invalidation should succeed",
    )?;
    check(renewed != token, "a new token should have been fetched")?;
    check(jti_changed, "the second assertion should carry a new jti")?;

    println!();
    println!("3. An assertion signed with another secret is refused");
    let wrong = builder.client_secret(random_string(48)).build()?;
    let refused = wrong.access_token().await.err();
    if let Some(error) = &refused {
        println!("   -> {error}");
    }
    check(
        refused
            .as_ref()
            .and_then(|e| e.oauth_code())
            .is_some_and(|code| *code == OAuthErrorCode::InvalidClient),
        "a wrong secret should be refused with invalid_client",
    )?;

    println!();
    println!("4. Counts");
    let on_the_wire = server.secret_on_the_wire.load(Ordering::SeqCst);
    let stats = credentials.stats();
    println!(
        "   authorization server: {} assertions accepted, {} refused; the secret itself was \
         seen on the wire: {on_the_wire}",
        accepted.len(),
        get(&server.refused)
    );
    println!("   protected API: {} requests", get(&server.api_requests));
    println!(
        "   credentials.stats(): tokens fetched {}, token requests {}, token failures {}",
        stats.tokens_fetched, stats.token_requests, stats.token_failures
    );
    check(!on_the_wire, "the secret should never be sent")?;
    check_eq("assertions accepted in all", accepted.len(), 2)?;
    check_eq("assertions refused in all", get(&server.refused), 1)?;
    check_eq("API requests", get(&server.api_requests), 2)?;
    check_eq("tokens fetched", stats.tokens_fetched, 2)?;
    check_eq("token requests", stats.token_requests, 2)?;
    println!();
    println!("all checks passed in {} ms", started.elapsed().as_millis());
    Ok(())
}

// ----- the embedded servers -------------------------------------------------------------------

/// The authorization server, and what its API learns from it (the tokens it issued).
struct AuthorizationServer {
    issuer: String,
    token_url: String,
    client: RegisteredClient,
    /// The shared secret, here only to check that it is never sent.
    secret: String,
    secret_on_the_wire: AtomicBool,
    jtis: JtiLog,
    tokens: Tokens<()>,
    accepted: Mutex<Vec<CheckedAssertion>>,
    refused: AtomicU64,
    api_requests: AtomicU64,
}

impl AuthorizationServer {
    fn accepted(&self) -> Vec<CheckedAssertion> {
        lock(&self.accepted).clone()
    }
}

/// `POST /oauth2/token`: the client credentials grant, the client authenticated by its
/// assertion.
async fn token_endpoint(server: Arc<AuthorizationServer>, req: Request<Incoming>) -> Answer {
    if req.uri().path() != "/oauth2/token" {
        return oauth_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
    }
    let (headers, form) = match token_request(req).await {
        Ok(request) => request,
        Err(answer) => return answer,
    };
    // No `Authorization: Basic`, no `client_secret` in the form: only the assertion.
    if headers.contains_key(AUTHORIZATION) || form.values().any(|v| v.contains(&server.secret)) {
        server.secret_on_the_wire.store(true, Ordering::SeqCst);
    }
    // Both names of this server are accepted as `aud`, as Keycloak does: the issuer
    // (draft-ietf-oauth-rfc7523bis) and the token endpoint's URL (RFC 7523, OpenID Connect).
    let audiences = [server.issuer.as_str(), server.token_url.as_str()];
    match verify_client_assertion(&form, &server.client, &audiences, &server.jtis) {
        Ok(checked) => {
            lock(&server.accepted).push(checked);
            token_answer(&server.tokens.issue(()), "Bearer")
        }
        Err(reason) => {
            bump(&server.refused);
            oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", &reason)
        }
    }
}

/// `GET /v1/reports`: answers a Bearer token the authorization server issued.
async fn protected_api(server: Arc<AuthorizationServer>, req: Request<Incoming>) -> Answer {
    bump(&server.api_requests);
    if (req.method(), req.uri().path()) != (&Method::GET, "/v1/reports") {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "not_found"}),
        );
    }
    match authorization(req.headers(), "Bearer") {
        Some(token) if server.tokens.binding(token).is_some() => json(
            StatusCode::OK,
            serde_json::json!({"reports": [{"id": "r-7", "period": "2025-Q4"}]}),
        ),
        _ => challenge(
            StatusCode::UNAUTHORIZED,
            "Bearer",
            "invalid_token",
            "unknown or expired token",
        ),
    }
}
