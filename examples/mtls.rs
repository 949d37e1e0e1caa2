//! `tls_client_auth` (RFC 8705 §2.1): the client authenticates to the token endpoint with an
//! X.509 certificate in the TLS handshake, and gets a certificate-bound token (§3) that the API
//! accepts only over a connection presenting the same certificate.
//!
//! Everything runs inside this process on 127.0.0.1 (ephemeral ports). `rcgen` makes a private
//! CA, a server certificate for 127.0.0.1 and localhost, and client certificates. The
//! authorization server's token endpoint is HTTPS and requires a client certificate signed by
//! the CA (rustls' `WebPkiClientVerifier`): a connection without one fails in the handshake.
//! It then checks that the certificate's subject is the one registered for the `client_id`
//! (`tls_client_auth_subject_dn`), and binds the token to the certificate's SHA-256 thumbprint
//! (`cnf.x5t#S256`). The API, HTTPS with the same requirement, compares that thumbprint with
//! the certificate of each connection. Every step is checked, and the example exits non-zero
//! when one is not what it should be.
//!
//! ```sh
//! cargo run --example mtls
//! ```
//!
//! (The default features suffice: `reqwest-middleware`, and `rustls` for the client
//! certificate.) No private key or token is printed; certificate thumbprints are public. With
//! files, the identity is `reqwest::Identity::from_pem(&[cert_pem, key_pem].concat())`.
//!
//! On a real server:
//!
//! - **Keycloak**: the client's *Credentials* tab, *Client Authenticator* "X509 Certificate",
//!   *Subject DN* (a regular expression) `CN=payments-batch`; *Advanced*, "OAuth 2.0 Mutual TLS
//!   Certificate Bound Access Tokens Enabled". Keycloak must ask for client certificates
//!   (`https-client-auth=request` and a truststore), or read them from the TLS-terminating
//!   proxy.
//! - **Okta**: no `tls_client_auth` for OAuth apps; use `private_key_jwt`.
//! - **Microsoft Entra ID**: no RFC 8705 client authentication; a certificate is used through
//!   `private_key_jwt` (see `examples/private_key_jwt.rs`).
//! - **Duende IdentityServer**: `MutualTls.Enabled = true` and `AddMutualTlsSecretValidators()`;
//!   a client secret of type `X509CertificateName` (`CN=payments-batch`) or
//!   `X509CertificateThumbprint`. The token endpoint moves to an mTLS alias
//!   (`/connect/mtls/token`, or an `mtls.` host); `discover()` takes it from the metadata's
//!   `mtls_endpoint_aliases`.

mod support;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use client_credentials::{AuthMethod, ClientCredentials, OAuthErrorCode, RetryPolicy};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use support::{
    authorization, bump, challenge, check, check_eq, get, json, lock, loopback, oauth_error,
    serve_tls, sha256_b64url, token_answer, token_request, Answer, Error, Tokens,
};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

/// The client this example runs as, and the subject its certificate must have.
const CLIENT_ID: &str = "payments-batch";
const CLIENT_SUBJECT: &str = "CN=payments-batch";
/// Another client of the same CA.
const OTHER_CLIENT_ID: &str = "reporting-job";
const OTHER_SUBJECT: &str = "CN=reporting-job";
/// How many calls step 2 sends.
const CALLS: u64 = 5;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let started = Instant::now();

    let ca = Ca::new("Example Corp Issuing CA")?;
    let (server_cert, server_key) = ca.server_certificate(&["127.0.0.1", "localhost"])?;
    let client = ca.client_certificate(CLIENT_ID)?;
    let other = ca.client_certificate(OTHER_CLIENT_ID)?;
    let tls = ca.server_config(&server_cert, &server_key)?;
    // What a client trusts: this CA only.
    let ca_root = reqwest::Certificate::from_pem(ca.issuer.pem().as_bytes())?;

    let (auth_listener, auth_addr) = loopback().await?;
    let token_url = format!("https://{auth_addr}/oauth2/token");
    let server = Arc::new(AuthorizationServer {
        // Registration: each client id with the subject its certificate must carry.
        clients: HashMap::from([
            (CLIENT_ID.to_owned(), CLIENT_SUBJECT.to_owned()),
            (OTHER_CLIENT_ID.to_owned(), OTHER_SUBJECT.to_owned()),
        ]),
        tokens: Tokens::default(),
        bound_to: Mutex::new(Vec::new()),
        token_requests: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        api_ok: AtomicU64::new(0),
        api_refused: AtomicU64::new(0),
    });
    let auth_tls = serve_tls(auth_listener, Arc::clone(&tls), {
        let server = Arc::clone(&server);
        move |peer, req| token_endpoint(Arc::clone(&server), peer, req)
    });
    let (api_listener, api_addr) = loopback().await?;
    serve_tls(api_listener, tls, {
        let server = Arc::clone(&server);
        move |peer, req| protected_api(Arc::clone(&server), peer, req)
    });
    let statements = format!("https://{api_addr}/v1/statements");
    println!("authorization server  {token_url}");
    println!("protected API         {statements}");

    println!();
    println!("1. A private CA signs a server certificate and the client certificates");
    println!("   server: 127.0.0.1, localhost");
    println!(
        "   client: {CLIENT_SUBJECT}, x5t#S256 {}",
        client.thumbprint
    );

    // tls_client_auth: no client secret, the certificate is the credential. The same identity
    // goes on the token client and on the API client (certificate-bound tokens).
    let credentials = ClientCredentials::builder()
        .token_url(&token_url)
        .client_id(CLIENT_ID)
        .auth_method(AuthMethod::TlsClientAuth)
        .http_client(https_client(&ca_root, Some(client.identity()?)))
        .build()?;
    let api_client = reqwest_middleware::ClientBuilder::new(
        https_client(&ca_root, Some(client.identity()?)).build()?,
    )
    .with(credentials.middleware())
    .build();

    println!();
    println!("2. Calls with the client certificate: one token, bound to it");
    let mut ok = 0;
    for _ in 0..CALLS {
        if api_client.get(&statements).send().await?.status() == StatusCode::OK {
            ok += 1;
        }
    }
    let bound_to = lock(&server.bound_to).clone();
    println!("   GET /v1/statements x {CALLS} -> {ok} answered 200");
    println!(
        "   token endpoint: subject {CLIENT_SUBJECT} matched the registration; token bound to \
         the certificate's x5t#S256: {}",
        bound_to.first() == Some(&client.thumbprint)
    );
    println!(
        "   API: the certificate of each connection matched the token's binding ({} of {CALLS})",
        get(&server.api_ok)
    );
    check_eq("200 answers", ok, CALLS)?;
    check_eq("token requests", get(&server.token_requests), 1)?;
    check_eq(
        "the token's binding",
        bound_to.first(),
        Some(&client.thumbprint),
    )?;

    println!();
    println!("3. Without a client certificate, the token endpoint refuses the TLS handshake");
    let without = ClientCredentials::builder()
        .token_url(&token_url)
        .client_id(CLIENT_ID)
        .auth_method(AuthMethod::TlsClientAuth)
        .http_client(https_client(&ca_root, None))
        // A transport error is retried by default; fail at once here.
        .retry_policy(RetryPolicy::no_retry())
        .build()?;
    let (refused_before, requests_before) =
        (auth_tls.refused_handshakes(), get(&server.token_requests));
    let error = without.access_token().await.err();
    if let Some(error) = &error {
        println!("   -> {error} ({})", root_cause(error));
    }
    let refused = auth_tls.refused_handshakes() - refused_before;
    let got_through = get(&server.token_requests) - requests_before;
    println!("   handshakes refused: {refused}; token requests that got through: {got_through}");
    check(
        matches!(error, Some(client_credentials::Error::Transport { .. })),
        "a token request without a certificate should fail in the handshake",
    )?;
    check_eq("handshakes refused", refused, 1)?;
    check_eq("token requests that got through", got_through, 0)?;

    println!();
    println!("4. Another client's certificate (same CA) cannot get a token as {CLIENT_ID}");
    let impostor = ClientCredentials::builder()
        .token_url(&token_url)
        .client_id(CLIENT_ID)
        .auth_method(AuthMethod::TlsClientAuth)
        .http_client(https_client(&ca_root, Some(other.identity()?)))
        .build()?;
    let error = impostor.access_token().await.err();
    if let Some(error) = &error {
        println!("   -> {error}");
    }
    check(
        error
            .as_ref()
            .and_then(|e| e.oauth_code())
            .is_some_and(|code| *code == OAuthErrorCode::InvalidClient),
        "a certificate with another subject should be refused with invalid_client",
    )?;

    println!();
    println!("5. The token, stolen, is refused over a connection with another certificate");
    let token = credentials.access_token().await?;
    let thief = https_client(&ca_root, Some(other.identity()?)).build()?;
    let response = thief
        .get(&statements)
        .bearer_auth(token.secret())
        .send()
        .await?;
    let status = response.status();
    let body: serde_json::Value = serde_json::from_str(&response.text().await?)?;
    println!(
        "   GET /v1/statements with {OTHER_SUBJECT}'s certificate -> {status} {} ({})",
        body["error"].as_str().unwrap_or("-"),
        body["error_description"].as_str().unwrap_or("-")
    );
    check(
        status == StatusCode::UNAUTHORIZED && body["error"] == "invalid_token",
        "a token presented with another certificate should be refused",
    )?;

    println!();
    println!("6. Counts");
    let stats = credentials.stats();
    println!(
        "   authorization server: {} token requests, {} refused; handshakes refused: {}",
        get(&server.token_requests),
        get(&server.refused),
        auth_tls.refused_handshakes()
    );
    println!(
        "   protected API: {} answered 200, {} answered 401",
        get(&server.api_ok),
        get(&server.api_refused)
    );
    println!(
        "   credentials.stats(): tokens fetched {}, token requests {}",
        stats.tokens_fetched, stats.token_requests
    );
    check_eq("token requests in all", get(&server.token_requests), 2)?;
    check_eq("token requests refused", get(&server.refused), 1)?;
    check_eq("API 200 answers", get(&server.api_ok), CALLS)?;
    check_eq("API 401 answers", get(&server.api_refused), 1)?;
    check_eq("tokens fetched", stats.tokens_fetched, 1)?;
    check_eq("token requests", stats.token_requests, 1)?;
    println!();
    println!("all checks passed in {} ms", started.elapsed().as_millis());
    Ok(())
}

/// An HTTPS client that trusts only the private CA, presenting `identity` when given.
fn https_client(
    ca_root: &reqwest::Certificate,
    identity: Option<reqwest::Identity>,
) -> reqwest::ClientBuilder {
    // `tls_certs_only`: this CA and no other (`tls_certs_merge` would add it to the usual
    // roots, as a corporate CA usually is).
    let builder = reqwest::Client::builder().tls_certs_only([ca_root.clone()]);
    match identity {
        Some(identity) => builder.identity(identity),
        None => builder,
    }
}

/// The innermost error of a chain (here, what TLS said).
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

// ----- the PKI --------------------------------------------------------------------------------

/// A private CA.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A client certificate, its private key, and its thumbprint.
struct ClientCertificate {
    /// Certificate and PKCS #8 key, PEM: what `reqwest::Identity::from_pem` reads. Wiped when
    /// dropped.
    pem: Zeroizing<String>,
    /// `x5t#S256`: base64url(SHA-256(DER)), RFC 8705 §3.1.
    thumbprint: String,
}

impl ClientCertificate {
    fn identity(&self) -> Result<reqwest::Identity, reqwest::Error> {
        reqwest::Identity::from_pem(self.pem.as_bytes())
    }
}

impl Ca {
    fn new(name: &str) -> Result<Self, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Self { issuer })
    }

    /// A server certificate for `names` (DNS names or IP addresses), and its key.
    fn server_certificate(
        &self,
        names: &[&str],
    ) -> Result<(rcgen::Certificate, KeyPair), rcgen::Error> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "embedded servers");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert, key))
    }

    /// A client certificate whose subject is `CN=<common_name>`.
    fn client_certificate(&self, common_name: &str) -> Result<ClientCertificate, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ClientCertificate {
            pem: Zeroizing::new(format!("{}{}", cert.pem(), key.serialize_pem())),
            thumbprint: sha256_b64url(cert.der()),
        })
    }

    /// The servers' TLS settings: their certificate, and a client certificate signed by this
    /// CA required of every connection.
    fn server_config(
        &self,
        cert: &rcgen::Certificate,
        key: &KeyPair,
    ) -> Result<Arc<rustls::ServerConfig>, Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone())?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .build()?;
        let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert.der().clone()], key)?;
        Ok(Arc::new(config))
    }
}

// ----- the embedded servers -------------------------------------------------------------------

/// The authorization server, and what its API learns from it (the tokens it issued).
struct AuthorizationServer {
    /// Client id → the subject its certificate must have (`tls_client_auth_subject_dn`).
    clients: HashMap<String, String>,
    /// Each token with the `x5t#S256` of the certificate it is bound to (a JWT access token
    /// would carry it as `cnf.x5t#S256`; introspection answers it).
    tokens: Tokens<String>,
    bound_to: Mutex<Vec<String>>,
    token_requests: AtomicU64,
    refused: AtomicU64,
    api_ok: AtomicU64,
    api_refused: AtomicU64,
}

/// `POST /oauth2/token` over mutual TLS: the client is the certificate's subject (RFC 8705
/// §2.1).
async fn token_endpoint(
    server: Arc<AuthorizationServer>,
    peer: Option<CertificateDer<'static>>,
    req: Request<Incoming>,
) -> Answer {
    if req.uri().path() != "/oauth2/token" {
        return oauth_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
    }
    let form = match token_request(req).await {
        Ok((_, form)) => form,
        Err(answer) => return answer,
    };
    bump(&server.token_requests);
    let refuse = |reason: &str| {
        bump(&server.refused);
        oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", reason)
    };
    // The TLS settings require a certificate signed by the CA: here it is always present.
    let Some(certificate) = peer else {
        return refuse("no client certificate");
    };
    let Some(registered) = form.get("client_id").and_then(|id| server.clients.get(id)) else {
        return refuse("unknown client_id");
    };
    if subject_of(&certificate).as_ref() != Some(registered) {
        return refuse("the certificate subject is not the one registered for the client");
    }
    let thumbprint = sha256_b64url(certificate.as_ref());
    let token = server.tokens.issue(thumbprint.clone());
    lock(&server.bound_to).push(thumbprint);
    // Certificate-bound tokens are still `Bearer` tokens (RFC 8705 §3).
    token_answer(&token, "Bearer")
}

/// `GET /v1/statements`: a token bound to the certificate of this very connection (RFC 8705
/// §3).
async fn protected_api(
    server: Arc<AuthorizationServer>,
    peer: Option<CertificateDer<'static>>,
    req: Request<Incoming>,
) -> Answer {
    if (req.method(), req.uri().path()) != (&Method::GET, "/v1/statements") {
        return json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "not_found"}),
        );
    }
    let refuse = |reason: &str| {
        bump(&server.api_refused);
        challenge(StatusCode::UNAUTHORIZED, "Bearer", "invalid_token", reason)
    };
    let Some(token) = authorization(req.headers(), "Bearer") else {
        return refuse("a token is required");
    };
    let Some(bound_to) = server.tokens.binding(token) else {
        return refuse("unknown or expired token");
    };
    let presented = peer.map(|certificate| sha256_b64url(certificate.as_ref()));
    if presented.as_ref() != Some(&bound_to) {
        return refuse("the token is bound to another certificate");
    }
    bump(&server.api_ok);
    json(
        StatusCode::OK,
        serde_json::json!({"statements": [{"id": "st-2025-12", "balance": "1024.00"}]}),
    )
}

/// A certificate's subject, as `CN=...` (in the certificate's order).
fn subject_of(certificate: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    Some(parsed.subject().to_string())
}
