//! `private_key_jwt` and `client_secret_jwt` on the wire: every assertion verified with
//! `jsonwebtoken`, a new one for every token request.

use std::collections::HashSet;
use std::time::Duration;

use client_credentials::{
    AssertionAudience, AuthMethod, ClientCredentials, ConfigError, JwsAlgorithm, RetryPolicy,
    SigningKey,
};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::verify::*;
use crate::support::token_body;

const CLIENT: &str = "billing-service";
const ISSUER: &str = "https://login.example.com/realms/acme";

async fn token_endpoint() -> MockServer {
    let auth = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("tok-1", 3600)))
        .mount(&auth)
        .await;
    auth
}

fn base(auth: &MockServer) -> client_credentials::ClientCredentialsBuilder {
    ClientCredentials::builder()
        .token_url(format!("{}/token", auth.uri()))
        .client_id(CLIENT)
}

/// The assertions of every token request `auth` received.
async fn assertions(auth: &MockServer) -> Vec<String> {
    let mut out = Vec::new();
    for request in auth.received_requests().await.unwrap() {
        let form = form(&request);
        assert_eq!(field(&form, "grant_type"), Some("client_credentials"));
        assert_eq!(field(&form, "client_id"), Some(CLIENT));
        assert_eq!(
            field(&form, "client_assertion_type"),
            Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        );
        assert!(field(&form, "client_secret").is_none());
        assert!(
            !request.headers.contains_key("authorization"),
            "no Basic with an assertion"
        );
        out.push(field(&form, "client_assertion").unwrap().to_owned());
    }
    out
}

#[tokio::test]
async fn private_key_jwt_with_every_algorithm_and_key_format() {
    let keys = [
        (
            JwsAlgorithm::Es256,
            SigningKey::from_pem(JwsAlgorithm::Es256, &key_file("ec_sec1.pem")).unwrap(),
        ),
        (
            JwsAlgorithm::EdDsa,
            SigningKey::from_jwk(&key_file("ed25519.jwk.json")).unwrap(),
        ),
        (
            JwsAlgorithm::Ps256,
            SigningKey::from_pem(JwsAlgorithm::Ps256, &key_file("rsa_pkcs1.pem")).unwrap(),
        ),
        (
            JwsAlgorithm::Rs256,
            SigningKey::from_pem(JwsAlgorithm::Rs256, &key_file("rsa_pkcs8.pem")).unwrap(),
        ),
        (
            JwsAlgorithm::Es256,
            SigningKey::generate(JwsAlgorithm::Es256).unwrap(),
        ),
    ];
    for (alg, key) in keys {
        let key = key.with_kid("key-2026");
        let auth = token_endpoint().await;
        let credentials = base(&auth)
            .issuer(ISSUER)
            .signing_key(key.clone())
            .build()
            .unwrap();
        assert_eq!(credentials.access_token().await.unwrap().secret(), "tok-1");

        let assertions = assertions(&auth).await;
        assert_eq!(assertions.len(), 1);
        let (header, claims) = verify_assertion(&assertions[0], Some(&key), None, CLIENT, ISSUER);
        assert_eq!(format!("{:?}", header.alg), alg.as_str(), "{alg}");
        assert_eq!(header.kid.as_deref(), Some("key-2026"));
        assert_eq!(claims["aud"], ISSUER, "the issuer, as one string");
        let (iat, exp) = (
            claims["iat"].as_i64().unwrap(),
            claims["exp"].as_i64().unwrap(),
        );
        assert_eq!(exp - iat, 60, "{alg}: a 60 s assertion");
        assert!((iat - now()).abs() <= 5, "{alg}: issued now");
        assert_eq!(claims["jti"].as_str().unwrap().len(), 22, "16 random bytes");
    }
}

#[tokio::test]
async fn a_new_assertion_for_every_token_request_retries_included() {
    let auth = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .mount(&auth)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("tok-1", 3600)))
        .mount(&auth)
        .await;
    let key = SigningKey::generate(JwsAlgorithm::EdDsa).unwrap();
    let credentials = base(&auth)
        .issuer(ISSUER)
        .signing_key(key.clone())
        .retry_policy(RetryPolicy::default().initial_backoff(Duration::from_millis(1)))
        .build()
        .unwrap();
    let token = credentials.access_token().await.unwrap();
    // And one more token request, after a rejection.
    assert!(credentials.invalidate(&token));
    credentials.access_token().await.unwrap();

    let assertions = assertions(&auth).await;
    assert_eq!(
        assertions.len(),
        4,
        "two failed attempts, the token, the replacement"
    );
    let jtis: HashSet<String> = assertions
        .iter()
        .map(|a| {
            verify_assertion(a, Some(&key), None, CLIENT, ISSUER).1["jti"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(jtis.len(), 4, "every request has its own jti");
}

#[tokio::test]
async fn the_audience_is_the_issuer_unless_chosen_otherwise() {
    let key = SigningKey::generate(JwsAlgorithm::Es256).unwrap();
    // No issuer known: refused at build time, not guessed.
    let auth = token_endpoint().await;
    let err = base(&auth).signing_key(key.clone()).build().unwrap_err();
    assert_eq!(err, ConfigError::MissingIssuer);

    let token_url = format!("{}/token", auth.uri());
    let cases = [
        (AssertionAudience::TokenEndpoint, token_url.clone()),
        (
            AssertionAudience::Custom("https://aud.example".into()),
            "https://aud.example".into(),
        ),
        (AssertionAudience::Issuer, ISSUER.to_owned()),
    ];
    for (choice, expected) in cases {
        let auth = token_endpoint().await;
        let credentials = base(&auth)
            .issuer(ISSUER)
            .signing_key(key.clone())
            .assertion_audience(choice.clone())
            .assertion_lifetime(Duration::from_secs(30))
            .build()
            .unwrap();
        credentials.access_token().await.unwrap();
        let expected = expected.replace(&token_url, &format!("{}/token", auth.uri()));
        let (_, claims) = verify_assertion(
            &assertions(&auth).await[0],
            Some(&key),
            None,
            CLIENT,
            &expected,
        );
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            30
        );
    }
}

/// The issuer comes from discovery, exactly as the document writes it.
#[tokio::test]
async fn discovery_gives_the_issuer_and_chooses_private_key_jwt() {
    let auth = token_endpoint().await;
    let issuer = auth.uri(); // no trailing slash, as oidc-provider writes it
    Mock::given(method("GET"))
        .and(path("/.well-known/openid-configuration"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "issuer": issuer,
            "token_endpoint": format!("{issuer}/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
        })))
        .mount(&auth)
        .await;
    let key = SigningKey::generate(JwsAlgorithm::Es256).unwrap();
    let credentials = ClientCredentials::builder()
        .client_id(CLIENT)
        .signing_key(key.clone())
        .discover(&issuer)
        .await
        .unwrap()
        .build()
        .unwrap();
    credentials.access_token().await.unwrap();
    let token_requests: Vec<String> = auth
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method == wiremock::http::Method::POST)
        .map(|r| field(&form(&r), "client_assertion").unwrap().to_owned())
        .collect();
    verify_assertion(&token_requests[0], Some(&key), None, CLIENT, &issuer);
}

#[tokio::test]
async fn client_secret_jwt_is_hs256_with_the_secret() {
    let auth = token_endpoint().await;
    let secret = "a-shared-secret-of-at-least-32-bytes!!";
    let credentials = base(&auth)
        .issuer(ISSUER)
        .client_secret(secret)
        .auth_method(AuthMethod::ClientSecretJwt)
        .build()
        .unwrap();
    credentials.access_token().await.unwrap();
    let assertions = assertions(&auth).await;
    let (header, _) = verify_assertion(&assertions[0], None, Some(secret), CLIENT, ISSUER);
    assert_eq!(format!("{:?}", header.alg), "HS256");
    assert!(header.kid.is_none());
    assert!(!assertions[0].contains(secret));
}

#[test]
fn settings_that_do_not_fit_the_method_are_refused() {
    let key = || SigningKey::generate(JwsAlgorithm::Es256).unwrap();
    let b = || {
        ClientCredentials::builder()
            .token_url("https://a.example/token")
            .client_id("id")
    };
    let cases: Vec<(&str, Result<ClientCredentials, ConfigError>)> = vec![
        (
            "key with basic",
            b().client_secret("s")
                .auth_method(AuthMethod::ClientSecretBasic)
                .signing_key(key())
                .build(),
        ),
        (
            "private_key_jwt without key",
            b().issuer(ISSUER)
                .auth_method(AuthMethod::PrivateKeyJwt)
                .build(),
        ),
        (
            "secret with private_key_jwt",
            b().issuer(ISSUER)
                .signing_key(key())
                .client_secret("s")
                .build(),
        ),
        (
            "client_secret_jwt without secret",
            b().issuer(ISSUER)
                .auth_method(AuthMethod::ClientSecretJwt)
                .build(),
        ),
        (
            "audience with basic",
            b().client_secret("s")
                .assertion_audience(AssertionAudience::TokenEndpoint)
                .build(),
        ),
        (
            "lifetime 0",
            b().issuer(ISSUER)
                .signing_key(key())
                .assertion_lifetime(Duration::ZERO)
                .build(),
        ),
        (
            "lifetime 1 h",
            b().issuer(ISSUER)
                .signing_key(key())
                .assertion_lifetime(Duration::from_secs(3600))
                .build(),
        ),
        (
            "mutual TLS without a client certificate",
            b().auth_method(AuthMethod::TlsClientAuth).build(),
        ),
    ];
    for (what, result) in cases {
        let err = result.err().unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(
            matches!(
                err,
                ConfigError::OutOfRange(_)
                    | ConfigError::MissingSigningKey(_)
                    | ConfigError::MissingClientSecret(_)
                    | ConfigError::MissingClientCertificate(_)
            ),
            "{what}: {err:?}"
        );
    }
}

/// The private key never shows in `Debug` of the builder, the credentials or the key.
#[test]
fn private_keys_never_reach_debug() {
    let jwk: serde_json::Value = serde_json::from_str(&key_file("ec.jwk.json")).unwrap();
    let d = jwk["d"].as_str().unwrap().to_owned();
    let key = SigningKey::from_jwk(&key_file("ec.jwk.json")).unwrap();
    let builder = ClientCredentials::builder()
        .token_url("https://a.example/token")
        .client_id("id")
        .issuer(ISSUER)
        .signing_key(key.clone())
        .dpop_key(key.clone());
    let credentials = builder.clone().build().unwrap();
    for shown in [
        format!("{key:?} {key:#?}"),
        format!("{builder:?} {builder:#?}"),
        format!("{credentials:?} {credentials:#?}"),
        key.public_jwk(),
    ] {
        assert!(!shown.contains(&d), "{shown}");
        assert!(!shown.contains("\"d\""), "{shown}");
    }
}

/// Entra ID's certificate credentials: the certificate's SHA-256 thumbprint as `x5t#S256`.
#[tokio::test]
async fn a_certificate_puts_its_thumbprint_in_the_header() {
    use sha2::Digest as _;
    for (alg, file) in [
        (JwsAlgorithm::Es256, "ec_pkcs8.pem"),
        (JwsAlgorithm::EdDsa, "ed25519_pkcs8.pem"),
        (JwsAlgorithm::Ps256, "rsa_pkcs8.pem"),
    ] {
        let pem = key_file(file);
        let pair = rcgen::KeyPair::from_pem(&pem).unwrap();
        let certificate = rcgen::CertificateParams::new(vec!["billing-service".to_owned()])
            .unwrap()
            .self_signed(&pair)
            .unwrap();
        let key = SigningKey::from_pem(alg, &pem)
            .unwrap()
            .with_certificate(&certificate.pem())
            .unwrap();
        let auth = token_endpoint().await;
        let credentials = base(&auth)
            .issuer(ISSUER)
            .signing_key(key.clone())
            .build()
            .unwrap();
        credentials.access_token().await.unwrap();
        let assertions = assertions(&auth).await;
        let (header, _) = verify_assertion(&assertions[0], Some(&key), None, CLIENT, ISSUER);
        let expected = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            sha2::Sha256::digest(certificate.der()),
        );
        assert_eq!(header.x5t_s256.as_deref(), Some(&*expected), "{alg}");
        assert!(
            format!("{key:?}").contains(&expected),
            "shown in Debug: it is public"
        );
    }

    // A certificate for another key, and what is not a certificate, are refused.
    let other = rcgen::KeyPair::generate().unwrap();
    let foreign = rcgen::CertificateParams::new(vec!["x".to_owned()])
        .unwrap()
        .self_signed(&other)
        .unwrap();
    let key = SigningKey::from_pem(JwsAlgorithm::Es256, &key_file("ec_pkcs8.pem")).unwrap();
    for (pem, reason) in [
        (foreign.pem(), "another key"),
        (key_file("ec_pkcs8.pem"), "not a certificate"),
        (
            "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n".to_owned(),
            "could not be read",
        ),
        ("no PEM here".to_owned(), "not a PEM block"),
    ] {
        match key.clone().with_certificate(&pem) {
            Err(ConfigError::InvalidKey(why)) => assert!(why.contains(reason), "{why}"),
            other => panic!("{reason}: {other:?}"),
        }
    }
}

/// A token endpoint that accepts `private_key_jwt` assertions signed by one key at a time (the
/// public key registered for the client), verified with `jsonwebtoken`; counts refusals.
#[derive(Clone)]
struct KeyedAuthority {
    accepted: std::sync::Arc<std::sync::Mutex<String>>,
    refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl wiremock::Respond for KeyedAuthority {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let form = form(request);
        let assertion = field(&form, "client_assertion").unwrap_or_default();
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_str(&self.accepted.lock().unwrap()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        validation.set_audience(&[ISSUER]);
        let verified = jsonwebtoken::decode::<serde_json::Value>(
            assertion,
            &jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap(),
            &validation,
        );
        if verified.is_ok() {
            ResponseTemplate::new(200).set_body_json(token_body("tok-keyed", 3600))
        } else {
            self.refused
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            ResponseTemplate::new(401).set_body_json(serde_json::json!({"error": "invalid_client"}))
        }
    }
}

/// Issue 17: the signing key read from a file is rotated on disk and at the server at the same
/// moment: one refused assertion, the file read at once, one more signed with the new key.
/// Then the previous key bridges a window in which the server still knows only the old one.
#[tokio::test]
async fn a_signing_key_file_rotates_and_the_previous_key_bridges_the_window() {
    let old_pem = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/keys/ec_pkcs8.pem"
    ))
    .unwrap();
    let new_pem = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let public = |pem: &str| {
        SigningKey::from_pem(JwsAlgorithm::Es256, pem)
            .unwrap()
            .public_jwk()
    };
    let authority = KeyedAuthority {
        accepted: std::sync::Arc::new(std::sync::Mutex::new(public(&old_pem))),
        refused: Default::default(),
    };
    let auth = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(authority.clone())
        .mount(&auth)
        .await;
    let dir = crate::support::TempDir::new();
    let file = dir.file("signing-key.pem");
    crate::support::write_atomically(&file, &old_pem);
    let credentials = base(&auth)
        .issuer(ISSUER)
        .signing_key_file(JwsAlgorithm::Es256, &file)
        .credential_file_check_interval(Duration::from_secs(86_400))
        .build()
        .unwrap();
    let first = credentials.access_token().await.unwrap();
    crate::support::write_atomically(&file, &new_pem);
    *authority.accepted.lock().unwrap() = public(&new_pem);
    credentials.accepted(&first);
    assert!(credentials.invalidate(&first));
    credentials.access_token().await.unwrap();
    let refused = authority.refused.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(refused, 1, "one refused, then signed with the new key");
    assert_eq!(credentials.stats().token_requests, 3);
    assert_eq!(credentials.stats().credentials_reloaded, 1);

    // The rotation window: the new key is current, the server still has the old one.
    *authority.accepted.lock().unwrap() = public(&old_pem);
    let windowed = base(&auth)
        .issuer(ISSUER)
        .signing_key(SigningKey::from_pem(JwsAlgorithm::Es256, &new_pem).unwrap())
        .previous_signing_key(SigningKey::from_pem(JwsAlgorithm::Es256, &old_pem).unwrap())
        .build()
        .unwrap();
    let token = windowed.access_token().await.unwrap();
    windowed.accepted(&token);
    assert!(windowed.invalidate(&token));
    windowed.access_token().await.unwrap();
    assert_eq!(
        authority.refused.load(std::sync::atomic::Ordering::SeqCst),
        refused + 1,
        "the previous key is used first once it worked"
    );
    assert_eq!(windowed.stats().token_requests, 3);
    // A key file that no longer holds a key is refused at build, never shown.
    crate::support::write_atomically(
        &file,
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    );
    let error = base(&auth)
        .issuer(ISSUER)
        .signing_key_file(JwsAlgorithm::Es256, &file)
        .build()
        .unwrap_err();
    assert!(
        matches!(&error, ConfigError::CredentialFile(m) if m.contains("signing-key.pem")),
        "{error:?}"
    );
    assert!(!error.to_string().contains("bm90IGEga2V5"), "{error}");
}
