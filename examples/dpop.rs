//! DPoP (RFC 9449): access tokens bound to a key the client holds. Every request carries a
//! fresh proof signed with that key, so a token that leaks (a log, a proxy) is useless without
//! the key.
//!
//! Two servers run inside this process on 127.0.0.1 (ephemeral ports). The authorization
//! server's token endpoint verifies the `DPoP` proof of each token request (`typ` `dpop+jwt`,
//! the public key in its header, the signature, `htm` POST, `htu` the token URL, a fresh `jti`,
//! a recent `iat`) and answers a `token_type: DPoP` token bound to the key's RFC 7638
//! thumbprint. The API wants `Authorization: DPoP <token>` with a proof for that very request
//! (`htm`, `htu`, `ath` = the token's SHA-256, the key the token is bound to) carrying the
//! API's nonce: its first answer is 401 `use_dpop_nonce` with a `DPoP-Nonce`, which the
//! middleware answers by itself, once, with a new proof. Every step is checked, and the example
//! exits non-zero when one is not what it should be.
//!
//! ```sh
//! cargo run --example dpop --features jwt
//! ```
//!
//! The DPoP key (ES256) is made at start-up; the client secret is made up for the run. No
//! secret, key, proof or token is printed; the key's thumbprint is public.
//!
//! On a real server:
//!
//! - **Keycloak** (26.4 and later): the client's *Settings*, *Capability config*, "Require DPoP
//!   bound tokens". The API verifies proofs itself, as this one does.
//! - **Okta**: the org feature "OAuth 2.0 Demonstrating Proof-of-Possession", then the app's
//!   "Require Demonstrating Proof of Possession (DPoP) header in token requests". Okta asks for
//!   a nonce at the token endpoint too: the crate retries that token request once with it.
//! - **Microsoft Entra ID**: does not issue RFC 9449 DPoP tokens.
//! - **Duende IdentityServer** (6.3 and later): `RequireDPoP = true` on the client; an ASP.NET
//!   API verifies proofs with `Duende.AspNetCore.Authentication.JwtBearer`, which can demand a
//!   server nonce as this API does.
//!
//! Keep the key across restarts with `.dpop_key(SigningKey::from_pem(..)?)`, so that tokens
//! bound to it stay usable, or pick another algorithm with
//! `.dpop_algorithm(JwsAlgorithm::EdDsa)`.

mod support;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine as _;
use client_credentials::{AuthMethod, ClientCredentials};
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use hyper::body::Incoming;
use jsonwebtoken::jwk::ThumbprintHash;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use support::{
    authorization, bump, challenge, check, check_eq, get, json, lock, loopback, now_secs,
    oauth_error, random_string, serve, sha256_b64url, token_answer, token_request, Answer, Error,
    JtiLog, Tokens,
};
use tokio::task::JoinSet;

/// The API's resource.
const LEDGER_PATH: &str = "/v1/ledger";
/// How many calls step 2 sends at once.
const CONCURRENT_CALLS: u64 = 20;
/// How far from now a proof's `iat` may be, in seconds.
const PROOF_MAX_AGE_SECS: u64 = 60;
/// The proof algorithms accepted: asymmetric ones only (never `none`, never an HMAC).
const PROOF_ALGORITHMS: [Algorithm; 3] = [Algorithm::ES256, Algorithm::EdDSA, Algorithm::PS256];
/// The `DPoP` request header (RFC 9449 §4.1).
const DPOP: HeaderName = HeaderName::from_static("dpop");
/// The `DPoP-Nonce` response header (RFC 9449 §8).
const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");

#[tokio::main]
async fn main() -> Result<(), Error> {
    let started = Instant::now();
    let client_id = "ledger-sync";
    // Made up for this run: the example never holds a real secret.
    let client_secret = random_string(40);

    let (auth_listener, auth_addr) = loopback().await?;
    let token_url = format!("http://{auth_addr}/oauth2/token");
    let server = Arc::new(AuthorizationServer {
        token_url: token_url.clone(),
        client_id: client_id.to_owned(),
        client_secret: client_secret.clone(),
        jtis: JtiLog::default(),
        tokens: Tokens::default(),
        bound_to: Mutex::new(Vec::new()),
        token_requests: AtomicU64::new(0),
    });
    serve(auth_listener, {
        let server = Arc::clone(&server);
        move |req| token_endpoint(Arc::clone(&server), req)
    });
    let (api_listener, api_addr) = loopback().await?;
    let api = Arc::new(Api {
        server: Arc::clone(&server),
        htu: format!("http://{api_addr}{LEDGER_PATH}"),
        nonce: random_string(22),
        jtis: JtiLog::default(),
        ok: AtomicU64::new(0),
        nonce_challenges: AtomicU64::new(0),
        refused: AtomicU64::new(0),
    });
    serve(api_listener, {
        let api = Arc::clone(&api);
        move |req| protected_api(Arc::clone(&api), req)
    });
    // The query is not part of a proof's `htu`.
    let ledger = format!("http://{api_addr}{LEDGER_PATH}?currency=EUR");
    println!("authorization server  {token_url}");
    println!("protected API         {ledger}");

    // Plain HTTP is accepted for the token URL because the host is loopback; any other host
    // must use HTTPS.
    let credentials = ClientCredentials::builder()
        .token_url(&token_url)
        .client_id(client_id)
        .client_secret(client_secret)
        // DPoP works with any client authentication; the form is the shortest to check here.
        .auth_method(AuthMethod::ClientSecretPost)
        // An ES256 key made now. Tokens must come back `token_type: DPoP`: a server that
        // answers a Bearer token fails the token request (see `dpop_required`).
        .dpop()
        .build()?;
    let thumbprint = credentials
        .dpop_thumbprint()
        .ok_or("DPoP should be configured")?;
    println!("DPoP key              ES256, RFC 7638 thumbprint {thumbprint}");
    let http = reqwest::Client::new();
    let client = reqwest_middleware::ClientBuilder::new(http.clone())
        .with(credentials.middleware())
        .build();

    println!();
    println!("1. The first call: a DPoP-bound token, then the API's nonce");
    let status = client.get(&ledger).send().await?.status();
    let bound_to = lock(&server.bound_to).clone();
    println!("   GET {LEDGER_PATH}?currency=EUR -> {status}");
    println!(
        "   token endpoint: proof verified (htm POST, htu the token URL), token_type DPoP, bound \
         to the key's thumbprint: {}",
        bound_to.first() == Some(&thumbprint)
    );
    println!(
        "   API: 401 use_dpop_nonce (with a DPoP-Nonce) x {}, then 200 x {} to a new proof \
         carrying the nonce; the caller saw only the 200",
        get(&api.nonce_challenges),
        get(&api.ok)
    );
    check(status == StatusCode::OK, "the first call should succeed")?;
    check_eq("token requests", get(&server.token_requests), 1)?;
    check_eq("the token's binding", bound_to.first(), Some(&thumbprint))?;
    check_eq("401 use_dpop_nonce answers", get(&api.nonce_challenges), 1)?;
    check_eq("200 answers", get(&api.ok), 1)?;

    println!();
    println!("2. {CONCURRENT_CALLS} concurrent calls: each with a new proof, all with the nonce");
    let mut calls = JoinSet::new();
    for _ in 0..CONCURRENT_CALLS {
        let request = client.get(&ledger);
        calls.spawn(async move { request.send().await.map(|r| r.status()) });
    }
    let mut ok = 0;
    while let Some(joined) = calls.join_next().await {
        if joined?? == StatusCode::OK {
            ok += 1;
        }
    }
    println!(
        "   {ok} answered 200; new 401 use_dpop_nonce: {}, new token requests: {}",
        get(&api.nonce_challenges) - 1,
        get(&server.token_requests) - 1
    );
    check_eq("200s among the concurrent calls", ok, CONCURRENT_CALLS)?;
    check_eq("401 use_dpop_nonce answers", get(&api.nonce_challenges), 1)?;
    check_eq("token requests", get(&server.token_requests), 1)?;

    println!();
    println!("3. The token without the key is useless");
    let token = credentials.access_token().await?;
    let without_proof = http
        .get(&ledger)
        .header(AUTHORIZATION, format!("DPoP {}", token.secret()))
        .send()
        .await?;
    let (status, code) = answer_of(without_proof).await?;
    println!("   as DPoP without a proof -> {status} {code}");
    check(
        status == StatusCode::UNAUTHORIZED && code == "invalid_dpop_proof",
        "a token without a proof should be refused",
    )?;
    let as_bearer = http.get(&ledger).bearer_auth(token.secret()).send().await?;
    let (status, code) = answer_of(as_bearer).await?;
    println!("   as a Bearer token       -> {status} {code}");
    check(
        status == StatusCode::UNAUTHORIZED && code == "invalid_token",
        "a DPoP-bound token sent as Bearer should be refused",
    )?;

    println!();
    println!("4. Code without the middleware: request_authorization() makes both headers");
    let auth = credentials
        .request_authorization(&Method::GET, &ledger)
        .await?;
    let mut headers = HeaderMap::new();
    auth.apply_to(&mut headers);
    let status = http
        .get(&ledger)
        .headers(headers.clone())
        .send()
        .await?
        .status();
    println!("   GET with Authorization and DPoP -> {status}");
    check(
        status == StatusCode::OK,
        "request_authorization's headers should be accepted",
    )?;
    let (status, code) = answer_of(http.get(&ledger).headers(headers).send().await?).await?;
    println!("   the same proof sent again      -> {status} {code} (its jti was used)");
    check(
        status == StatusCode::UNAUTHORIZED && code == "invalid_dpop_proof",
        "a replayed proof should be refused",
    )?;

    println!();
    println!("5. Counts");
    let stats = credentials.stats();
    println!(
        "   authorization server: token requests {}",
        get(&server.token_requests)
    );
    println!(
        "   protected API: {} answered 200, {} answered 401 use_dpop_nonce, {} refused (steps 3 \
         and 4)",
        get(&api.ok),
        get(&api.nonce_challenges),
        get(&api.refused)
    );
    println!(
        "   credentials.stats(): tokens fetched {}, token requests {}, replayed requests {}, \
         forced refreshes {}",
        stats.tokens_fetched, stats.token_requests, stats.replayed_requests, stats.forced_refreshes
    );
    check_eq("200 answers in all", get(&api.ok), 1 + CONCURRENT_CALLS + 1)?;
    check_eq("refusals in all", get(&api.refused), 3)?;
    check_eq("tokens fetched", stats.tokens_fetched, 1)?;
    check_eq("token requests", stats.token_requests, 1)?;
    check_eq(
        "replayed requests (the nonce retry)",
        stats.replayed_requests,
        1,
    )?;
    check_eq("forced refreshes", stats.forced_refreshes, 0)?;
    println!();
    println!("all checks passed in {} ms", started.elapsed().as_millis());
    Ok(())
}

/// The status of an answer and the `error` of its JSON body.
async fn answer_of(response: reqwest::Response) -> Result<(StatusCode, String), Error> {
    let status = response.status();
    let body: Value = serde_json::from_str(&response.text().await?)?;
    Ok((status, body["error"].as_str().unwrap_or("-").to_owned()))
}

// ----- the embedded servers -------------------------------------------------------------------

/// The authorization server: its client, and the tokens it bound to DPoP keys.
struct AuthorizationServer {
    token_url: String,
    client_id: String,
    client_secret: String,
    jtis: JtiLog,
    /// Each token with the thumbprint of the key it is bound to (a JWT access token would
    /// carry it as `cnf.jkt`).
    tokens: Tokens<String>,
    bound_to: Mutex<Vec<String>>,
    token_requests: AtomicU64,
}

/// `POST /oauth2/token`: the client credentials grant with a DPoP proof (RFC 9449 §5).
async fn token_endpoint(server: Arc<AuthorizationServer>, req: Request<Incoming>) -> Answer {
    if req.uri().path() != "/oauth2/token" {
        return oauth_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
    }
    let (headers, form) = match token_request(req).await {
        Ok(request) => request,
        Err(answer) => return answer,
    };
    bump(&server.token_requests);
    // client_secret_post (a real server keeps a hash, compared in constant time).
    if form.get("client_id") != Some(server.client_id.as_str())
        || form.get("client_secret") != Some(server.client_secret.as_str())
    {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client");
    }
    // No `ath` at the token endpoint: there is no token yet.
    let proof = match verify_proof(
        &headers,
        &Method::POST,
        &server.token_url,
        None,
        &server.jtis,
    ) {
        Ok(proof) => proof,
        Err(reason) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_dpop_proof", &reason),
    };
    let token = server.tokens.issue(proof.jkt.clone());
    lock(&server.bound_to).push(proof.jkt);
    token_answer(&token, "DPoP")
}

/// The API, and what it counts.
struct Api {
    server: Arc<AuthorizationServer>,
    /// The `htu` of its resource: scheme, host, port and path, no query.
    htu: String,
    /// The nonce proofs must carry (a real server changes it now and then).
    nonce: String,
    jtis: JtiLog,
    ok: AtomicU64,
    nonce_challenges: AtomicU64,
    refused: AtomicU64,
}

/// `GET /v1/ledger`: a DPoP-bound token with a valid proof carrying the API's nonce (RFC 9449
/// §7 and §9).
async fn protected_api(api: Arc<Api>, req: Request<Incoming>) -> Answer {
    if (req.method(), req.uri().path()) != (&Method::GET, LEDGER_PATH) {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "not_found"}),
        );
    }
    let refuse = |code: &str, reason: &str| {
        bump(&api.refused);
        challenge(StatusCode::UNAUTHORIZED, "DPoP", code, reason)
    };
    let Some(token) = authorization(req.headers(), "DPoP") else {
        return refuse("invalid_token", "a DPoP-bound token is required");
    };
    let Some(jkt) = api.server.tokens.binding(token) else {
        return refuse("invalid_token", "unknown or expired token");
    };
    let proof = match verify_proof(
        req.headers(),
        &Method::GET,
        &api.htu,
        Some(token),
        &api.jtis,
    ) {
        Ok(proof) => proof,
        Err(reason) => return refuse("invalid_dpop_proof", &reason),
    };
    if proof.jkt != jkt {
        return refuse(
            "invalid_dpop_proof",
            "the proof is signed by another key than the one the token is bound to",
        );
    }
    if proof.nonce.as_deref() != Some(api.nonce.as_str()) {
        bump(&api.nonce_challenges);
        let mut answer = challenge(
            StatusCode::UNAUTHORIZED,
            "DPoP",
            "use_dpop_nonce",
            "Resource server requires nonce in DPoP proof",
        );
        if let Ok(nonce) = HeaderValue::from_str(&api.nonce) {
            answer.headers_mut().insert(DPOP_NONCE, nonce);
        }
        return answer;
    }
    bump(&api.ok);
    json(
        StatusCode::OK,
        serde_json::json!({"entries": [{"id": "e-1", "amount": "-42.00", "currency": "EUR"}]}),
    )
}

/// What a verified proof says.
struct Proof {
    /// The RFC 7638 thumbprint of the key that signed it.
    jkt: String,
    nonce: Option<String>,
}

/// Verifies a request's DPoP proof as RFC 9449 §4.3 lists: one `DPoP` header; a JWS with `typ`
/// `dpop+jwt`, an asymmetric `alg` and a public `jwk`; the signature verifies with that key;
/// `htm` and `htu` are the request's; `iat` is within a minute of now; the `jti` was never seen;
/// for a resource request, `ath` is the hash of the token presented with it. The error says
/// which check failed.
fn verify_proof(
    headers: &HeaderMap,
    htm: &Method,
    htu: &str,
    token: Option<&str>,
    jtis: &JtiLog,
) -> Result<Proof, String> {
    let mut proofs = headers.get_all(DPOP).iter();
    let (Some(proof), None) = (proofs.next(), proofs.next()) else {
        return Err("exactly one DPoP header is required".into());
    };
    let proof = proof.to_str().map_err(|_| "the DPoP header is not text")?;
    let header = jsonwebtoken::decode_header(proof).map_err(|e| format!("not a JWS: {e}"))?;
    if header.typ.as_deref() != Some("dpop+jwt") {
        return Err("typ is not dpop+jwt".into());
    }
    if !PROOF_ALGORITHMS.contains(&header.alg) {
        return Err(format!("alg {:?} is not accepted", header.alg));
    }
    let jwk = header.jwk.ok_or("no jwk in the header")?;
    if raw_header(proof)?["jwk"].get("d").is_some() {
        return Err("the jwk holds a private key".into());
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable jwk: {e}"))?;
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.set_required_spec_claims::<&str>(&[]);
    let claims = jsonwebtoken::decode::<Value>(proof, &key, &validation)
        .map_err(|e| format!("the proof does not verify: {e}"))?
        .claims;
    if claims["htm"] != htm.as_str() {
        return Err("htm is not the method of the request".into());
    }
    if claims["htu"] != htu {
        return Err("htu is not the URL of the request".into());
    }
    let iat = claims["iat"].as_u64().ok_or("no iat")?;
    if now_secs().abs_diff(iat) > PROOF_MAX_AGE_SECS {
        return Err("iat is not recent".into());
    }
    if let Some(token) = token {
        if claims["ath"] != sha256_b64url(token.as_bytes()) {
            return Err("ath is not the hash of the token".into());
        }
    }
    let jti = claims["jti"].as_str().ok_or("no jti")?;
    if !jtis.first_use(jti, iat + PROOF_MAX_AGE_SECS) {
        return Err("jti already used: a replayed proof".into());
    }
    Ok(Proof {
        // The key verified the signature, so it is a usable public key.
        jkt: jwk.thumbprint(ThumbprintHash::SHA256),
        nonce: claims["nonce"].as_str().map(str::to_owned),
    })
}

/// A JWS's header as JSON, as sent (to look for members the parsed header drops).
fn raw_header(jws: &str) -> Result<Value, String> {
    let encoded = jws.split('.').next().unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| "the header is not base64url")?;
    serde_json::from_slice(&bytes).map_err(|_| "the header is not JSON".into())
}
