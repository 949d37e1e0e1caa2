//! Issue 10, against a real, certified authorization server: node `oidc-provider` 9.13.3
//! (pinned in `tests/servers/oidc-provider/package.json` and its lock file; the first test to
//! need it runs `npm ci` there when `node_modules` is missing), started by each test on a free
//! loopback port with its own clients.
//!
//! Tokens are fetched with `private_key_jwt` (ES256, EdDSA, PS256, RS256), `client_secret_jwt`,
//! DPoP with and without required nonces, and `self_signed_tls_client_auth` over HTTPS; the
//! issued JWT access token's `cnf` is checked against our key or certificate.
//!
//! A binary of its own: it starts external processes. When the server cannot be started (no
//! `node`, or `npm ci` failed), the tests fail if `CI` is set, and are skipped with a message
//! otherwise.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use client_credentials::{AuthMethod, ClientCredentials, JwsAlgorithm, SigningKey};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const SERVER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/servers/oidc-provider");

/// Installs the pinned server (`npm ci`) once per run when it is not installed yet; the error
/// says why it could not be.
fn install_server() -> Result<(), String> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            if PathBuf::from(SERVER_DIR)
                .join("node_modules/oidc-provider")
                .exists()
            {
                return Ok(());
            }
            eprintln!("installing the oidc-provider test server: npm ci in {SERVER_DIR}");
            let status = std::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(SERVER_DIR)
                .stdout(Stdio::null())
                .status()
                .map_err(|e| format!("`npm` could not be started: {e}"))?;
            if !status.success() {
                return Err(format!(
                    "`npm ci` in tests/servers/oidc-provider failed: {status}"
                ));
            }
            Ok(())
        })
        .clone()
}

/// A running oidc-provider; stopped when dropped (its stdin closes, and it is killed).
struct OidcProvider {
    issuer: String,
    _child: Child,
    _dir: TempDir,
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "cc-interop-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(contents.as_bytes())
            .unwrap();
        path.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl OidcProvider {
    /// Starts a server with `clients` and extra environment; `None` (after saying why) when
    /// it cannot be started outside CI. Under `CI`, a missing server fails the test.
    async fn start(clients: Value, env: &[(&str, String)]) -> Option<Self> {
        let missing = |why: String| {
            if std::env::var_os("CI").is_some() {
                panic!("the oidc-provider test server is required under CI: {why}");
            }
            eprintln!("SKIPPED: {why} (under CI this fails)");
            None
        };
        if let Err(why) = install_server() {
            return missing(why);
        }
        let dir = TempDir::new();
        let clients_file = dir.write("clients.json", &clients.to_string());
        let mut command = Command::new("node");
        command
            .arg("server.mjs")
            .current_dir(SERVER_DIR)
            .env("CLIENTS_FILE", clients_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => return missing(format!("`node` could not be started: {e}")),
        };
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        let read = tokio::time::timeout(
            Duration::from_secs(30),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await;
        let issuer = match read {
            Ok(Ok(_)) if line.starts_with("READY ") => line["READY ".len()..].trim().to_owned(),
            other => panic!("oidc-provider did not start: {other:?} {line:?} (see stderr)"),
        };
        Some(Self {
            issuer,
            _child: child,
            _dir: dir,
        })
    }
}

/// The claims of a JWT access token (its signature is the server's business here).
fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT access token");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

fn public_jwk(key: &SigningKey) -> Value {
    serde_json::from_str(&key.public_jwk()).unwrap()
}

#[tokio::test]
async fn private_key_jwt_with_every_algorithm() {
    let keys: Vec<(JwsAlgorithm, SigningKey)> = [
        JwsAlgorithm::Es256,
        JwsAlgorithm::EdDsa,
        JwsAlgorithm::Ps256,
        JwsAlgorithm::Rs256,
    ]
    .into_iter()
    .map(|alg| {
        (
            alg,
            SigningKey::generate(alg)
                .unwrap()
                .with_kid(format!("k-{alg}")),
        )
    })
    .collect();
    let clients: Vec<Value> = keys
        .iter()
        .map(|(alg, key)| {
            json!({
                "client_id": format!("pk-{alg}"),
                "token_endpoint_auth_method": "private_key_jwt",
                "token_endpoint_auth_signing_alg": alg.as_str(),
                "jwks": {"keys": [public_jwk(key)]},
                "scope": "api:read",
            })
        })
        .collect();
    let Some(server) = OidcProvider::start(Value::Array(clients), &[]).await else {
        return;
    };
    for (alg, key) in keys {
        let credentials = ClientCredentials::builder()
            .client_id(format!("pk-{alg}"))
            .signing_key(key)
            .scopes("api:read")
            .discover(&server.issuer)
            .await
            .unwrap()
            .build()
            .unwrap();
        let token = credentials
            .access_token()
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        let claims = jwt_claims(token.secret());
        assert_eq!(claims["client_id"], format!("pk-{alg}"), "{alg}");
        assert_eq!(claims["iss"], server.issuer);
        assert_eq!(claims["scope"], "api:read");
        // A second token: a new assertion (the server refuses a jti it has seen).
        assert!(credentials.invalidate(&token));
        credentials
            .access_token()
            .await
            .unwrap_or_else(|e| panic!("{alg}, again: {e}"));
    }
}

#[tokio::test]
async fn client_secret_jwt() {
    let secret = "an-interop-secret-of-more-than-32-bytes";
    let clients = json!([{
        "client_id": "hs",
        "client_secret": secret,
        "token_endpoint_auth_method": "client_secret_jwt",
        "token_endpoint_auth_signing_alg": "HS256",
    }]);
    let Some(server) = OidcProvider::start(clients, &[]).await else {
        return;
    };
    let credentials = ClientCredentials::builder()
        .client_id("hs")
        .client_secret(secret)
        .auth_method(AuthMethod::ClientSecretJwt)
        .discover(&server.issuer)
        .await
        .unwrap()
        .build()
        .unwrap();
    let token = credentials.access_token().await.unwrap();
    assert_eq!(jwt_claims(token.secret())["client_id"], "hs");
}

/// DPoP with every proof algorithm, and nonces off, optional and required: the token is
/// DPoP-bound and its `cnf.jkt` is our key's thumbprint.
#[tokio::test]
async fn dpop_bound_tokens_with_and_without_required_nonces() {
    for nonce in ["off", "optional", "required"] {
        let keys: Vec<SigningKey> = [
            JwsAlgorithm::Es256,
            JwsAlgorithm::EdDsa,
            JwsAlgorithm::Ps256,
        ]
        .into_iter()
        .map(|alg| SigningKey::generate(alg).unwrap())
        .collect();
        let client_key = SigningKey::generate(JwsAlgorithm::Es256).unwrap();
        let clients = json!([{
            "client_id": "dpop",
            "token_endpoint_auth_method": "private_key_jwt",
            "jwks": {"keys": [public_jwk(&client_key)]},
            "dpop_bound_access_tokens": true,
        }]);
        let Some(server) = OidcProvider::start(clients, &[("DPOP_NONCE", nonce.to_owned())]).await
        else {
            return;
        };
        for key in keys {
            let alg = key.algorithm();
            let credentials = ClientCredentials::builder()
                .client_id("dpop")
                .signing_key(client_key.clone())
                .dpop_key(key.clone())
                .discover(&server.issuer)
                .await
                .unwrap()
                .build()
                .unwrap();
            let token = credentials
                .access_token()
                .await
                .unwrap_or_else(|e| panic!("nonce {nonce}, {alg}: {e}"));
            let claims = jwt_claims(token.secret());
            assert_eq!(
                claims["cnf"]["jkt"],
                key.thumbprint(),
                "nonce {nonce}, {alg}"
            );
            // The nonce retry happens inside one token request attempt.
            assert_eq!(
                credentials.stats().token_failures,
                0,
                "nonce {nonce}, {alg}"
            );
            let headers = credentials
                .request_authorization(&http::Method::GET, "https://api.example.test/items")
                .await
                .unwrap();
            assert!(headers.authorization.to_str().unwrap().starts_with("DPoP "));
            assert!(headers.dpop.is_some());
        }
    }
}

/// A DPoP key generated at start-up takes an algorithm the server's metadata offers.
#[tokio::test]
async fn a_generated_dpop_key_follows_the_servers_algorithms() {
    let client_key = SigningKey::generate(JwsAlgorithm::Es256).unwrap();
    let clients = json!([{
        "client_id": "dpop-gen",
        "token_endpoint_auth_method": "private_key_jwt",
        "jwks": {"keys": [public_jwk(&client_key)]},
        "dpop_bound_access_tokens": true,
    }]);
    let Some(server) = OidcProvider::start(clients, &[]).await else {
        return;
    };
    let credentials = ClientCredentials::builder()
        .client_id("dpop-gen")
        .signing_key(client_key)
        .dpop()
        .discover(&server.issuer)
        .await
        .unwrap()
        .build()
        .unwrap();
    let token = credentials.access_token().await.unwrap();
    assert_eq!(
        jwt_claims(token.secret())["cnf"]["jkt"],
        credentials.dpop_thumbprint().unwrap()
    );
    assert_eq!(
        credentials.dpop_key().unwrap().algorithm(),
        JwsAlgorithm::Es256
    );
}

/// `self_signed_tls_client_auth` over HTTPS: the client certificate is the HTTP client's; the
/// token is bound to it (`cnf["x5t#S256"]`).
#[tokio::test]
async fn self_signed_tls_client_auth_over_https() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    // The server's certificate, from a test CA.
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "interop CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    // The client's self-signed certificate, registered by its x5c.
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(vec!["billing.example".to_owned()]).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "billing-service");
    let client_cert = client_params.self_signed(&client_key).unwrap();
    let client_signing =
        SigningKey::from_pem(JwsAlgorithm::Es256, &client_key.serialize_pem()).unwrap();
    let mut jwk = public_jwk(&client_signing);
    jwk["x5c"] = json!([base64::engine::general_purpose::STANDARD.encode(client_cert.der())]);
    let clients = json!([{
        "client_id": "mtls",
        "token_endpoint_auth_method": "self_signed_tls_client_auth",
        "jwks": {"keys": [jwk]},
        "tls_client_certificate_bound_access_tokens": true,
    }]);
    let dir = TempDir::new();
    let env = [
        ("TLS_CERT", dir.write("server.pem", &server_cert.pem())),
        (
            "TLS_KEY",
            dir.write("server.key", &server_key.serialize_pem()),
        ),
    ];
    let Some(server) = OidcProvider::start(clients, &env).await else {
        return;
    };
    assert!(server.issuer.starts_with("https://127.0.0.1:"));
    let http = || {
        let identity = reqwest::Identity::from_pem(
            format!("{}{}", client_cert.pem(), client_key.serialize_pem()).as_bytes(),
        )
        .unwrap();
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()])
            .identity(identity)
    };
    let credentials = ClientCredentials::builder()
        .client_id("mtls")
        .auth_method(AuthMethod::SelfSignedTlsClientAuth)
        .http_client(http())
        .discover(&server.issuer)
        .await
        .unwrap()
        .build()
        .unwrap();
    let token = credentials.access_token().await.unwrap();
    let expected = {
        use sha2::Digest as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(client_cert.der()))
    };
    assert_eq!(jwt_claims(token.secret())["cnf"]["x5t#S256"], expected);

    // Without the certificate the server refuses the client.
    let no_cert = ClientCredentials::builder()
        .client_id("mtls")
        .auth_method(AuthMethod::SelfSignedTlsClientAuth)
        .http_client(
            reqwest::Client::builder()
                .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()]),
        )
        .retry_policy(client_credentials::RetryPolicy::no_retry())
        .discover(&server.issuer)
        .await
        .unwrap()
        .build()
        .unwrap();
    let err = no_cert.access_token().await.unwrap_err();
    assert_eq!(
        err.oauth_code().map(|c| c.as_str()),
        Some("invalid_client"),
        "{err}"
    );
}

/// Issue 17, workload identity federation verified for real: the "cluster issuer" is this test,
/// which signs the workload's JWTs (ES256) and serves its keys on loopback; oidc-provider knows
/// the client by that `jwks_uri` only, fetches the keys and checks each assertion's signature,
/// `aud`, `iss`/`sub` and `jti`. The client holds no secret and no key: it reads the JWT the
/// platform wrote to a file.
#[tokio::test]
async fn a_federated_assertion_from_a_file_is_verified_by_the_server() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let pem = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/keys/ec_pkcs8.pem"
    ))
    .unwrap();
    let issuer_key = SigningKey::from_pem(JwsAlgorithm::Es256, &pem)
        .unwrap()
        .with_kid("cluster-key-1");
    let jwks = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/openid/v1/jwks"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"keys": [public_jwk(&issuer_key)]})),
        )
        .mount(&jwks)
        .await;
    let client = json!({
        "client_id": "workload-payments",
        "token_endpoint_auth_method": "private_key_jwt",
        "token_endpoint_auth_signing_alg": "ES256",
        "jwks_uri": format!("{}/openid/v1/jwks", jwks.uri()),
        "scope": "api:read",
    });
    let Some(server) =
        OidcProvider::start(json!([client]), &[("ALLOW_LOOPBACK_FETCH", "1".to_owned())]).await
    else {
        return;
    };
    // What the platform does: sign a short-lived JWT for the workload and write it to a file.
    let encoding = jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
    let sign = |jti: &str| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("cluster-key-1".to_owned());
        jsonwebtoken::encode(
            &header,
            &json!({
                "iss": "workload-payments",
                "sub": "workload-payments",
                "aud": server.issuer,
                "iat": now,
                "exp": now + 300,
                "jti": jti,
            }),
            &encoding,
        )
        .unwrap()
    };
    let dir = TempDir::new();
    let file = dir.write("token", &sign("projected-1"));
    let credentials = ClientCredentials::builder()
        .client_id("workload-payments")
        .client_assertion_file(&file)
        .scopes("api:read")
        .discover(&server.issuer)
        .await
        .unwrap()
        .build()
        .unwrap();
    // Ten callers at once: one token request, verified by the server.
    let tokens = futures_util::future::join_all((0..10).map(|_| credentials.access_token())).await;
    let first = tokens[0].as_ref().unwrap().clone();
    assert!(tokens.iter().all(|t| t.as_ref().unwrap() == &first));
    let claims = jwt_claims(first.secret());
    assert_eq!(claims["client_id"], "workload-payments");
    assert_eq!(claims["iss"], server.issuer);
    assert!(
        !jwks.received_requests().await.unwrap().is_empty(),
        "the server fetched the issuer's keys"
    );

    // The platform writes a new JWT (the kubelet renews projected tokens): the next fetch sends
    // it, and the server takes it.
    let renewed = sign("projected-2");
    std::fs::write(&file, &renewed).unwrap();
    tokio::time::sleep(client_credentials::DEFAULT_FILE_CHECK_INTERVAL).await;
    assert!(credentials.invalidate(&first));
    let second = credentials.access_token().await.unwrap();
    assert_ne!(second, first);
    assert_eq!(credentials.stats().credentials_reloaded, 1);

    // The same JWT a second time: the server refuses a `jti` it has seen (invalid_client); the
    // file is read again at once, holds nothing new, so the refusal is the caller's answer.
    // (The API accepted the second token first: a token dropped right after a forced refresh
    // whose replacement was never accepted waits out the forced-refresh backoff.)
    credentials.accepted(&second);
    assert!(credentials.invalidate(&second));
    let refused = credentials.access_token().await.unwrap_err();
    assert_eq!(
        refused.oauth_code().map(|c| c.as_str()),
        Some("invalid_client"),
        "{refused}"
    );
    assert!(!refused.to_string().contains(&renewed));
}
