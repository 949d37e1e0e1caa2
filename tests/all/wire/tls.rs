//! Issue 8: the HTTP client settings for the token request and discovery come from the user.
//! Real TLS on loopback, certificates made in the test with `rcgen`: a token endpoint whose
//! certificate is signed by a test CA works only when that CA is added, and one that requires a
//! client certificate works only when the identity is given. The crate's own rules hold over
//! the user's client: no redirect is followed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use client_credentials::{ClientCredentials, ConfigError, Error, RetryPolicy};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio::net::TcpListener;
use tokio_rustls::rustls;

/// A test CA and what it signs.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names` (DNS names or IP addresses) with `common_name`, and its key.
    fn sign(&self, names: &[&str], common_name: &str) -> (rcgen::Certificate, KeyPair) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert, key)
    }
}

/// A token endpoint over TLS on 127.0.0.1: answers a token to every request, or a redirect when
/// asked to. Records the common name of each client certificate it was shown.
struct TlsTokenEndpoint {
    url: String,
    clients_seen: Arc<Mutex<Vec<String>>>,
    requests: Arc<Mutex<usize>>,
}

impl TlsTokenEndpoint {
    /// `client_ca`: when set, a client certificate signed by it is required.
    async fn start(server_ca: &TestCa, client_ca: Option<&TestCa>, redirect: bool) -> Self {
        let (cert, key) = server_ca.sign(&["127.0.0.1", "localhost"], "token endpoint");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(ca.issuer.der().clone()).unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let config = builder
            .with_single_cert(vec![cert.der().clone()], key_der)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://127.0.0.1:{}/oauth2/token",
            listener.local_addr().unwrap().port()
        );
        let clients_seen = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(0));
        let (seen, count) = (Arc::clone(&clients_seen), Arc::clone(&requests));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let (seen, count) = (Arc::clone(&seen), Arc::clone(&count));
                tokio::spawn(async move {
                    // A failed handshake (unknown CA, no client certificate) just ends here.
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    if let Some(certs) = tls.get_ref().1.peer_certificates() {
                        let (_, parsed) =
                            x509_parser::parse_x509_certificate(certs[0].as_ref()).unwrap();
                        let cn = parsed
                            .subject()
                            .iter_common_name()
                            .next()
                            .and_then(|cn| cn.as_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        seen.lock().unwrap().push(cn);
                    }
                    let service = service_fn(move |_request| {
                        *count.lock().unwrap() += 1;
                        let response = if redirect {
                            http::Response::builder()
                                .status(307)
                                .header("location", "https://elsewhere.example/steal")
                                .body(Full::new(Bytes::new()))
                        } else {
                            http::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(
                                    br#"{"access_token":"over-tls","token_type":"Bearer","expires_in":3600}"#,
                                )))
                        };
                        async move { Ok::<_, std::convert::Infallible>(response.unwrap()) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            url,
            clients_seen,
            requests,
        }
    }

    fn requests(&self) -> usize {
        *self.requests.lock().unwrap()
    }
}

fn credentials(url: &str, client: Option<reqwest::ClientBuilder>) -> ClientCredentials {
    let mut builder = ClientCredentials::builder()
        .token_url(url)
        .client_id("tls-client")
        .client_secret("tls-secret")
        .request_timeout(Duration::from_secs(5))
        .retry_policy(RetryPolicy::no_retry());
    if let Some(client) = client {
        builder = builder.http_client(client);
    }
    builder.build().unwrap()
}

fn trusting(ca: &TestCa) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()])
}

#[tokio::test]
async fn a_private_ca_works_only_when_it_is_added() {
    let ca = TestCa::new("test CA");
    let endpoint = TlsTokenEndpoint::start(&ca, None, false).await;

    // The crate's default client does not know the test CA.
    let default = credentials(&endpoint.url, None);
    let err = default.access_token().await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert_eq!(
        endpoint.requests(),
        0,
        "no request crossed an untrusted connection"
    );

    // Another CA added: still refused.
    let other = TestCa::new("other CA");
    let wrong = credentials(&endpoint.url, Some(trusting(&other)));
    assert!(matches!(
        wrong.access_token().await.unwrap_err(),
        Error::Transport { .. }
    ));

    // The test CA added through the user's client settings: the token comes.
    let trusted = credentials(&endpoint.url, Some(trusting(&ca)));
    assert_eq!(trusted.access_token().await.unwrap().secret(), "over-tls");
    assert_eq!(endpoint.requests(), 1);
}

#[tokio::test]
async fn a_client_certificate_is_presented_only_when_the_identity_is_given() {
    let server_ca = TestCa::new("server CA");
    let client_ca = TestCa::new("client CA");
    let endpoint = TlsTokenEndpoint::start(&server_ca, Some(&client_ca), false).await;

    let without = credentials(&endpoint.url, Some(trusting(&server_ca)));
    let err = without.access_token().await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert_eq!(endpoint.requests(), 0);

    // An identity from an unknown CA is refused too.
    let stranger = TestCa::new("stranger CA");
    let (cert, key) = stranger.sign(&["client.example"], "stranger");
    let identity =
        reqwest::Identity::from_pem(format!("{}{}", cert.pem(), key.serialize_pem()).as_bytes())
            .unwrap();
    let refused = credentials(&endpoint.url, Some(trusting(&server_ca).identity(identity)));
    assert!(matches!(
        refused.access_token().await.unwrap_err(),
        Error::Transport { .. }
    ));
    assert_eq!(endpoint.requests(), 0);

    let (cert, key) = client_ca.sign(&["billing.example"], "billing-service");
    let identity =
        reqwest::Identity::from_pem(format!("{}{}", cert.pem(), key.serialize_pem()).as_bytes())
            .unwrap();
    let with = credentials(&endpoint.url, Some(trusting(&server_ca).identity(identity)));
    assert_eq!(with.access_token().await.unwrap().secret(), "over-tls");
    assert_eq!(endpoint.requests(), 1);
    assert!(
        endpoint
            .clients_seen
            .lock()
            .unwrap()
            .contains(&"billing-service".to_owned()),
        "the server saw the client's certificate"
    );
}

#[tokio::test]
async fn the_users_client_never_follows_a_redirect() {
    let ca = TestCa::new("test CA");
    let endpoint = TlsTokenEndpoint::start(&ca, None, true).await;
    // A user client asking for redirects to be followed: the crate's policy wins.
    let client = trusting(&ca).redirect(reqwest::redirect::Policy::limited(5));
    let err = credentials(&endpoint.url, Some(client))
        .access_token()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Redirect { .. }), "{err:?}");
    assert_eq!(endpoint.requests(), 1);
}

#[tokio::test]
async fn discovery_uses_the_users_client_too() {
    let ca = TestCa::new("test CA");
    let endpoint = TlsTokenEndpoint::start(&ca, None, false).await;
    let issuer = endpoint.url.trim_end_matches("/oauth2/token").to_owned();
    // The endpoint answers the same JSON to every path: not a metadata document, but it proves
    // the TLS connection (and so the CA) was the user's.
    let err = ClientCredentials::builder()
        .client_id("id")
        .client_secret("s")
        .http_client(trusting(&ca))
        .discover(&issuer)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            client_credentials::DiscoveryError::InvalidDocument { .. }
        ),
        "{err:?}"
    );
    let untrusted = ClientCredentials::builder()
        .client_id("id")
        .client_secret("s")
        .discover(&issuer)
        .await
        .unwrap_err();
    assert!(
        matches!(
            untrusted,
            client_credentials::DiscoveryError::Transport { .. }
        ),
        "{untrusted:?}"
    );
}

#[test]
fn a_client_that_cannot_be_built_is_a_config_error() {
    // reqwest refuses a TLS version range rustls cannot speak when the client is built.
    let broken = reqwest::Client::builder().max_tls_version(reqwest::tls::Version::TLS_1_0);
    let err = ClientCredentials::builder()
        .token_url("https://auth.example.com/oauth2/token")
        .client_id("id")
        .client_secret("s")
        .http_client(broken)
        .build()
        .unwrap_err();
    assert!(matches!(err, ConfigError::HttpClient(_)), "{err:?}");
}
