//! `private_key_jwt` (RFC 7523 §2.2, OpenID Connect Core §9): the client proves who it is with a
//! JWT it signs with its private key; the authorization server holds only the public key, so
//! there is no shared secret to leak.
//!
//! Two servers run inside this process on 127.0.0.1 (ephemeral ports): an authorization server
//! whose token endpoint verifies each client assertion as RFC 7523 §3 says (the signature
//! against the registered public JWK, `iss` = `sub` = the client id, `aud`, `exp`, a `jti` never
//! seen before) and answers 401 `invalid_client` otherwise, and an API that accepts only the
//! tokens it issued. A `reqwest` client with the middleware calls the API; every step is
//! checked, and the example exits non-zero when one is not what it should be.
//!
//! ```sh
//! cargo run --example private_key_jwt --features jwt
//! ```
//!
//! The key is made at start-up and nothing secret (key, assertion, token) is printed. A real
//! service loads its key, and registers the public half once:
//!
//! ```rust,ignore
//! // PKCS #8, SEC 1 (EC) or PKCS #1 (RSA) PEM:
//! let key = SigningKey::from_pem(JwsAlgorithm::Es256, &std::fs::read_to_string("client.key")?)?;
//! // or a private JWK, whose `alg` and `kid` are kept:
//! let key = SigningKey::from_jwk(&std::env::var("CLIENT_PRIVATE_JWK")?)?;
//! println!("{}", key.public_jwk()); // what to register
//! ```
//!
//! On a real server:
//!
//! - **Keycloak**: the client's *Credentials* tab, *Client Authenticator* "Signed JWT", the
//!   signature algorithm ES256; its *Keys* tab, import the public JWK (or give a JWKS URL).
//!   Accepts the realm's issuer URL or its token endpoint as `aud`.
//! - **Okta**: the app's *Client authentication* "Public key / Private key", add the public JWK.
//!   Okta wants the token endpoint's URL as `aud`: `AssertionAudience::TokenEndpoint`, and the
//!   `kid` when the app has several keys.
//! - **Microsoft Entra ID**: upload an X.509 certificate under *Certificates & secrets*. The key
//!   is RSA (`JwsAlgorithm::Ps256`), the assertion carries the certificate's `x5t#S256`
//!   (`SigningKey::with_certificate`), and `aud` is the token endpoint's URL
//!   (`AssertionAudience::TokenEndpoint`).
//! - **Duende IdentityServer**: a client secret of type `JsonWebKey` holding the public JWK.
//!   Accepts the issuer; with `StrictClientAssertionAudienceValidation` it accepts only the
//!   issuer, and wants `typ: client-authentication+jwt`, which this crate sends.

mod support;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use client_credentials::{
    AssertionAudience, ClientCredentials, JwsAlgorithm, OAuthErrorCode, SigningKey,
};
use http::header::CONTENT_TYPE;
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use support::{
    authorization, bump, challenge, check, check_eq, get, json, lock, loopback, oauth_error, serve,
    token_answer, token_request, verify_client_assertion, Answer, CheckedAssertion, Error, JtiLog,
    RegisteredClient, Tokens, JWT_BEARER,
};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let started = Instant::now();
    let client_id = "payments-batch";

    // Made at start-up for this run; see the header for loading one from PEM or a JWK.
    let key = SigningKey::generate(JwsAlgorithm::Es256)?.with_kid("payments-batch-1");

    let (auth_listener, auth_addr) = loopback().await?;
    let issuer = format!("http://{auth_addr}");
    let token_url = format!("{issuer}/oauth2/token");
    // Registration: the server keeps the public JWK, nothing else.
    let public_jwk: Jwk = serde_json::from_str(&key.public_jwk())?;
    let server = Arc::new(AuthorizationServer {
        issuer: issuer.clone(),
        token_url: token_url.clone(),
        client: RegisteredClient {
            client_id: client_id.to_owned(),
            algorithm: Algorithm::ES256,
            key: DecodingKey::from_jwk(&public_jwk)?,
            kid: key.kid().map(str::to_owned),
        },
        jtis: JtiLog::default(),
        tokens: Tokens::default(),
        accepted: Mutex::new(Vec::new()),
        refused: AtomicU64::new(0),
        last_assertion: Mutex::new(None),
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
    let payouts = format!("http://{api_addr}/v1/payouts");
    println!("authorization server  {token_url} (issuer {issuer})");
    println!("protected API         {payouts}");

    println!();
    println!("1. The client's key pair is made; the server registers its public JWK");
    println!(
        "   client {client_id}: {} key, kid {}, thumbprint {}",
        key.algorithm(),
        key.kid().unwrap_or("-"),
        key.thumbprint()
    );

    // Plain HTTP is accepted for the token URL because the host is loopback; any other host
    // must use HTTPS.
    let credentials = ClientCredentials::builder()
        .token_url(&token_url)
        .client_id(client_id)
        // With a signing key, the method is private_key_jwt: no client secret.
        .signing_key(key.clone())
        // The assertion's `aud` is the issuer by default, which Keycloak and Duende accept.
        // Okta and Entra ID want the token endpoint's URL instead:
        //     .assertion_audience(AssertionAudience::TokenEndpoint)
        .issuer(&issuer)
        .build()?;
    let http = reqwest::Client::new();
    let client = reqwest_middleware::ClientBuilder::new(http.clone())
        .with(credentials.middleware())
        .build();

    println!();
    println!("2. The first call fetches a token, authenticated by a signed assertion");
    let status = client.get(&payouts).send().await?.status();
    println!("   GET /v1/payouts -> {status}");
    let accepted = server.accepted();
    let first = accepted.first().ok_or("no assertion was accepted")?;
    println!(
        "   the token endpoint verified it: alg {:?}, iss = sub = {client_id}, aud = {} (the \
         issuer), exp in {} s, jti never seen before",
        first.algorithm, first.audience, first.expires_in
    );
    check(status == StatusCode::OK, "the first call should succeed")?;
    check_eq("assertions accepted", accepted.len(), 1)?;
    check_eq(
        "the assertion's aud",
        first.audience.as_str(),
        issuer.as_str(),
    )?;

    println!();
    println!("3. The token is dropped; the next token request carries a new assertion");
    let token = credentials.access_token().await?;
    credentials.invalidate(&token);
    let status = client.get(&payouts).send().await?.status();
    let renewed = credentials.access_token().await?;
    let accepted = server.accepted();
    let jti_changed = accepted.len() == 2 && accepted[0].jti != accepted[1].jti;
    println!(
        "   GET /v1/payouts -> {status}, with a new token: {}",
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
    println!("4. An assertion captured on the way and sent again is refused");
    let captured = lock(&server.last_assertion)
        .clone()
        .ok_or("no assertion was kept")?;
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "client_credentials")
        .append_pair("client_id", client_id)
        .append_pair("client_assertion_type", JWT_BEARER)
        .append_pair("client_assertion", &captured)
        .finish();
    let response = http
        .post(&token_url)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await?;
    let status = response.status();
    let body: serde_json::Value = serde_json::from_str(&response.text().await?)?;
    println!(
        "   POST /oauth2/token with it -> {status} {} ({})",
        body["error"].as_str().unwrap_or("-"),
        body["error_description"].as_str().unwrap_or("-")
    );
    check(
        status == StatusCode::UNAUTHORIZED && body["error"] == "invalid_client",
        "a replayed assertion should be refused with invalid_client",
    )?;

    println!();
    println!("5. An assertion signed by a key the server does not know is refused");
    let stranger = ClientCredentials::builder()
        .token_url(&token_url)
        .client_id(client_id)
        .signing_key(SigningKey::generate(JwsAlgorithm::Es256)?)
        .issuer(&issuer)
        .build()?;
    let refused = stranger.access_token().await.err();
    if let Some(error) = &refused {
        println!("   -> {error}");
    }
    check(
        refused
            .as_ref()
            .and_then(|e| e.oauth_code())
            .is_some_and(|code| *code == OAuthErrorCode::InvalidClient),
        "an unregistered key should be refused with invalid_client",
    )?;

    println!();
    println!("6. aud = the token endpoint's URL (what Okta and Entra ID want) is accepted too");
    let token_endpoint_audience = ClientCredentials::builder()
        .token_url(&token_url)
        .client_id(client_id)
        .signing_key(key)
        .assertion_audience(AssertionAudience::TokenEndpoint)
        .build()?;
    token_endpoint_audience.access_token().await?;
    let accepted = server.accepted();
    let last = accepted.last().ok_or("no assertion was accepted")?;
    println!("   token issued; the assertion's aud was {}", last.audience);
    check_eq(
        "the assertion's aud",
        last.audience.as_str(),
        token_url.as_str(),
    )?;

    println!();
    println!("7. Counts");
    let stats = credentials.stats();
    println!(
        "   authorization server: {} assertions accepted, {} refused; {} tokens issued",
        accepted.len(),
        get(&server.refused),
        server.tokens.count()
    );
    println!("   protected API: {} requests", get(&server.api_requests));
    println!(
        "   credentials.stats(): tokens fetched {}, token requests {}, token failures {}",
        stats.tokens_fetched, stats.token_requests, stats.token_failures
    );
    check_eq("assertions accepted in all", accepted.len(), 3)?;
    check_eq("assertions refused in all", get(&server.refused), 2)?;
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
    jtis: JtiLog,
    tokens: Tokens<()>,
    accepted: Mutex<Vec<CheckedAssertion>>,
    refused: AtomicU64,
    /// The last assertion accepted, kept only so that step 4 can replay it, as someone who
    /// captured it would.
    last_assertion: Mutex<Option<String>>,
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
    let form = match token_request(req).await {
        Ok((_, form)) => form,
        Err(answer) => return answer,
    };
    // Both names of this server are accepted as `aud`, as Keycloak does: the issuer
    // (draft-ietf-oauth-rfc7523bis) and the token endpoint's URL (RFC 7523, OpenID Connect).
    let audiences = [server.issuer.as_str(), server.token_url.as_str()];
    match verify_client_assertion(&form, &server.client, &audiences, &server.jtis) {
        Ok(checked) => {
            lock(&server.accepted).push(checked);
            *lock(&server.last_assertion) = form.get("client_assertion").map(str::to_owned);
            token_answer(&server.tokens.issue(()), "Bearer")
        }
        Err(reason) => {
            bump(&server.refused);
            oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", &reason)
        }
    }
}

/// `GET /v1/payouts`: answers a Bearer token the authorization server issued.
async fn protected_api(server: Arc<AuthorizationServer>, req: Request<Incoming>) -> Answer {
    bump(&server.api_requests);
    if (req.method(), req.uri().path()) != (&Method::GET, "/v1/payouts") {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "not_found"}),
        );
    }
    match authorization(req.headers(), "Bearer") {
        Some(token) if server.tokens.binding(token).is_some() => json(
            StatusCode::OK,
            serde_json::json!({"payouts": [{"id": "po-1", "amount": "120.00", "currency": "EUR"}]}),
        ),
        _ => challenge(
            StatusCode::UNAUTHORIZED,
            "Bearer",
            "invalid_token",
            "unknown or expired token",
        ),
    }
}
