//! `ClientCredentialsBuilder::discover`: OpenID Connect Discovery, the RFC 8414 fallback, the
//! choice of the authentication method, and a typed error naming the URL for every way a
//! document can be missing or unusable.

use std::time::Duration;

use client_credentials::{
    AuthMethod, ClientCredentials, ConfigError, DiscoveryError, InvalidDocument,
};
use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::*;

const OIDC: &str = "/.well-known/openid-configuration";
const RFC8414: &str = "/.well-known/oauth-authorization-server";

fn unconfigured() -> client_credentials::ClientCredentialsBuilder {
    ClientCredentials::builder()
        .client_id(CLIENT_ID)
        .client_secret(CLIENT_SECRET)
}

/// A metadata document for `issuer` whose token endpoint is `<issuer>/oauth2/token`.
fn document(issuer: &str, auth_methods: Option<&[&str]>) -> serde_json::Value {
    let mut doc = json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/oauth2/token"),
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "grant_types_supported": ["client_credentials"],
    });
    if let Some(methods) = auth_methods {
        doc["token_endpoint_auth_methods_supported"] = json!(methods);
    }
    doc
}

async fn mount_get(server: &MockServer, at: &str, response: ResponseTemplate, hits: u64) {
    Mock::given(method("GET"))
        .and(path(at))
        .respond_with(response)
        .expect(hits)
        .mount(server)
        .await;
}

/// The authentication method the last token request used, as seen on the wire.
async fn method_on_the_wire(server: &MockServer) -> AuthMethod {
    let requests = server.received_requests().await.unwrap();
    let token_request = requests
        .iter()
        .rev()
        .find(|r| r.method == wiremock::http::Method::POST)
        .expect("a token request");
    let form: Vec<(String, String)> = form_urlencoded::parse(&token_request.body)
        .into_owned()
        .collect();
    let in_form = form
        .iter()
        .any(|(k, v)| k == "client_secret" && v == CLIENT_SECRET);
    let basic = token_request
        .headers
        .get("authorization")
        .is_some_and(|v| v.to_str().unwrap().starts_with("Basic "));
    match (basic, in_form) {
        (true, false) => AuthMethod::ClientSecretBasic,
        (false, true) => AuthMethod::ClientSecretPost,
        other => panic!("ambiguous client authentication on the wire: {other:?}"),
    }
}

#[tokio::test]
async fn openid_configuration_gives_the_token_endpoint() {
    let server = MockServer::start().await;
    let issuer = server.uri();
    Mock::given(method("GET"))
        .and(path(OIDC))
        .and(header("accept", "application/json"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(document(&issuer, Some(&["client_secret_basic"]))),
        )
        .expect(1)
        .mount(&server)
        .await;
    mount_get(&server, RFC8414, ResponseTemplate::new(500), 0).await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("tok-discovered", 3600)))
        .expect(1)
        .mount(&server)
        .await;

    let credentials = unconfigured()
        .discover(&issuer)
        .await
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(
        credentials.access_token().await.unwrap().secret(),
        "tok-discovered"
    );
    assert_eq!(
        method_on_the_wire(&server).await,
        AuthMethod::ClientSecretBasic
    );
}

#[tokio::test]
async fn falls_back_to_rfc8414_inserting_the_well_known_segment_before_the_path() {
    // (issuer path, OpenID Connect URL tried first, RFC 8414 URL tried next)
    let cases = [
        ("", OIDC.to_owned(), RFC8414.to_owned()),
        ("/", OIDC.to_owned(), RFC8414.to_owned()),
        (
            "/tenant1",
            format!("/tenant1{OIDC}"),
            format!("{RFC8414}/tenant1"),
        ),
        (
            "/realms/acme/",
            format!("/realms/acme{OIDC}"),
            format!("{RFC8414}/realms/acme"),
        ),
    ];
    for (issuer_path, oidc_path, rfc_path) in cases {
        let server = MockServer::start().await;
        let issuer = format!("{}{issuer_path}", server.uri());
        let canonical = issuer.trim_end_matches('/');
        mount_get(&server, &oidc_path, ResponseTemplate::new(404), 1).await;
        mount_get(
            &server,
            &rfc_path,
            ResponseTemplate::new(200).set_body_json(document(canonical, None)),
            1,
        )
        .await;
        let token_path = format!("{}/oauth2/token", issuer_path.trim_end_matches('/'));
        Mock::given(method("POST"))
            .and(path(token_path.as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(token_body("tok-8414", 3600)))
            .expect(1)
            .mount(&server)
            .await;

        let credentials = unconfigured()
            .discover(&issuer)
            .await
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(
            credentials.access_token().await.unwrap().secret(),
            "tok-8414",
            "{issuer}"
        );
        // No `token_endpoint_auth_methods_supported`: the RFC 8414 default, client_secret_basic.
        assert_eq!(
            method_on_the_wire(&server).await,
            AuthMethod::ClientSecretBasic,
            "{issuer}"
        );
        server.verify().await;
    }
}

#[tokio::test]
async fn auth_method_comes_from_the_metadata_unless_set() {
    use AuthMethod::{ClientSecretBasic as Basic, ClientSecretPost as Post};
    // (offered by the server, set by the user, used on the wire; None: discovery fails)
    type Case = (
        Option<&'static [&'static str]>,
        Option<AuthMethod>,
        Option<AuthMethod>,
    );
    let cases: [Case; 7] = [
        (None, None, Some(Basic)),
        (
            Some(&["client_secret_post", "client_secret_basic"]),
            None,
            Some(Basic),
        ),
        (
            Some(&["private_key_jwt", "client_secret_post"]),
            None,
            Some(Post),
        ),
        (Some(&["client_secret_post"]), Some(Basic), Some(Basic)),
        (Some(&["private_key_jwt"]), Some(Post), Some(Post)),
        (Some(&["private_key_jwt", "tls_client_auth"]), None, None),
        (Some(&[]), None, None),
    ];
    for (offered, set, expected) in cases {
        let server = MockServer::start().await;
        let issuer = server.uri();
        mount_get(
            &server,
            OIDC,
            ResponseTemplate::new(200).set_body_json(document(&issuer, offered)),
            1,
        )
        .await;
        mount_token(&server, "tok", 3600).await;
        let mut builder = unconfigured();
        if let Some(method) = set {
            builder = builder.auth_method(method);
        }
        let result = builder.discover(&issuer).await;
        match expected {
            Some(method) => {
                let credentials = result.unwrap().build().unwrap();
                credentials.access_token().await.unwrap();
                assert_eq!(
                    method_on_the_wire(&server).await,
                    method,
                    "{offered:?} {set:?}"
                );
            }
            None => {
                let err = result.unwrap_err();
                assert!(
                    matches!(
                        &err,
                        DiscoveryError::InvalidDocument { kind: InvalidDocument::NoSupportedAuthMethod { offered: o }, .. }
                            if o.len() == offered.unwrap().len()
                    ),
                    "{offered:?}: {err:?}"
                );
                assert!(err.to_string().contains(OIDC), "{err}");
            }
        }
    }
}

type Check = fn(&DiscoveryError) -> bool;

/// What a well-known URL answers: status, body (`{issuer}` is replaced by the issuer) and a
/// `Location` header for redirects.
struct Answer(u16, String, Option<&'static str>);

impl Answer {
    fn status(status: u16) -> Self {
        Self(status, String::new(), None)
    }

    fn ok(body: impl Into<String>) -> Self {
        Self(200, body.into(), None)
    }

    fn render(&self, issuer: &str) -> ResponseTemplate {
        let mut t =
            ResponseTemplate::new(self.0).set_body_string(self.1.replace("{issuer}", issuer));
        if let Some(location) = self.2 {
            t = t.insert_header("location", location);
        }
        t
    }
}

#[tokio::test]
async fn missing_or_malformed_documents_are_typed_errors_naming_the_url() {
    let big = "x".repeat(70 * 1024);
    // Each case: what the two well-known URLs answer (`None`: must not be asked), the error,
    // and which URL the message must name.
    let cases: Vec<(&str, Answer, Option<Answer>, Check, &str)> = vec![
        (
            "both missing",
            Answer::status(404),
            Some(Answer::status(404)),
            |e| matches!(e, DiscoveryError::NotFound { tried } if tried.len() == 2 && tried.iter().all(|(_, s)| *s == 404)),
            RFC8414,
        ),
        (
            "not JSON",
            Answer::ok("<html>login</html>"),
            None,
            |e| {
                matches!(
                    e,
                    DiscoveryError::InvalidDocument {
                        kind: InvalidDocument::NotJson,
                        ..
                    }
                )
            },
            OIDC,
        ),
        (
            "a JSON array",
            Answer::ok("[]"),
            None,
            |e| {
                matches!(
                    e,
                    DiscoveryError::InvalidDocument {
                        kind: InvalidDocument::NotJson,
                        ..
                    }
                )
            },
            OIDC,
        ),
        (
            "token_endpoint of the wrong type",
            Answer::ok(r#"{"token_endpoint": 42}"#),
            None,
            |e| {
                matches!(
                    e,
                    DiscoveryError::InvalidDocument {
                        kind: InvalidDocument::NotJson,
                        ..
                    }
                )
            },
            OIDC,
        ),
        (
            "no token_endpoint",
            Answer::ok(r#"{"issuer": "{issuer}", "jwks_uri": "{issuer}/jwks"}"#),
            None,
            |e| {
                matches!(
                    e,
                    DiscoveryError::InvalidDocument {
                        kind: InvalidDocument::MissingTokenEndpoint,
                        ..
                    }
                )
            },
            OIDC,
        ),
        (
            "insecure token_endpoint",
            Answer::ok(
                r#"{"issuer": "{issuer}", "token_endpoint": "http://auth.example.com/oauth2/token"}"#,
            ),
            None,
            |e| {
                matches!(
                    e,
                    DiscoveryError::InvalidDocument {
                        kind: InvalidDocument::InvalidTokenEndpoint(ConfigError::InsecureTokenUrl(
                            _
                        )),
                        ..
                    }
                )
            },
            OIDC,
        ),
        (
            "token_endpoint not a URL",
            Answer::ok(r#"{"token_endpoint": "/oauth2/token"}"#),
            None,
            |e| {
                matches!(
                    e,
                    DiscoveryError::InvalidDocument {
                        kind: InvalidDocument::InvalidTokenEndpoint(ConfigError::InvalidTokenUrl(
                            _
                        )),
                        ..
                    }
                )
            },
            OIDC,
        ),
        (
            "another issuer's document",
            Answer::ok(
                r#"{"issuer": "https://evil.example.com", "token_endpoint": "https://evil.example.com/token"}"#,
            ),
            None,
            |e| {
                matches!(
                    e,
                    DiscoveryError::InvalidDocument {
                        kind: InvalidDocument::IssuerMismatch { .. },
                        ..
                    }
                )
            },
            OIDC,
        ),
        (
            "larger than the limit",
            Answer::ok(format!(
                r#"{{"issuer": "{{issuer}}", "token_endpoint": "{{issuer}}/t", "pad": "{big}"}}"#
            )),
            None,
            |e| {
                matches!(
                    e,
                    DiscoveryError::InvalidDocument { kind: InvalidDocument::TooLarge { limit }, .. }
                        if *limit == client_credentials::DEFAULT_MAX_RESPONSE_BYTES
                )
            },
            OIDC,
        ),
        (
            "server error: no fallback",
            Answer::status(503),
            None,
            |e| matches!(e, DiscoveryError::Status { status, .. } if *status == 503),
            OIDC,
        ),
        (
            "redirect: not followed",
            Answer(302, String::new(), Some("/elsewhere")),
            None,
            |e| matches!(e, DiscoveryError::Redirect { status, .. } if *status == 302),
            OIDC,
        ),
        (
            "fallback document malformed",
            Answer::status(404),
            Some(Answer::ok("garbage")),
            |e| {
                matches!(
                    e,
                    DiscoveryError::InvalidDocument {
                        kind: InvalidDocument::NotJson,
                        ..
                    }
                )
            },
            RFC8414,
        ),
    ];
    for (name, oidc, rfc8414, check, named) in cases {
        let server = MockServer::start().await;
        let issuer = server.uri();
        mount_get(&server, OIDC, oidc.render(&issuer), 1).await;
        match rfc8414 {
            Some(answer) => mount_get(&server, RFC8414, answer.render(&issuer), 1).await,
            None => mount_get(&server, RFC8414, ResponseTemplate::new(200), 0).await,
        }
        // Nothing else may be asked: no redirect target, no token request.
        Mock::given(wiremock::matchers::path_regex(
            "^/(elsewhere|oauth2/token|t)$",
        ))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;

        let err = unconfigured().discover(&issuer).await.unwrap_err();
        assert!(check(&err), "{name}: {err:?}");
        let message = err.to_string();
        assert!(
            message.contains(&format!("{issuer}{named}")),
            "{name}: {message}"
        );
        assert!(!message.contains(CLIENT_SECRET) && !format!("{err:?}").contains(CLIENT_SECRET));
        server.verify().await;
    }
}

#[tokio::test]
async fn an_insecure_issuer_is_refused_before_any_request() {
    for issuer in [
        "http://auth.example.com",
        "https://auth.example.com/?x=1",
        "auth.example.com",
    ] {
        let err = unconfigured().discover(issuer).await.unwrap_err();
        assert!(
            matches!(err, DiscoveryError::InvalidIssuer { .. }),
            "{issuer}: {err:?}"
        );
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_slow_document_times_out() {
    let _clock = ManualClock::hold();
    let server = MockServer::start().await;
    let issuer = server.uri();
    mount_get(
        &server,
        OIDC,
        ResponseTemplate::new(200)
            .set_body_json(document(&issuer, None))
            .set_delay(Duration::from_secs(30)),
        1,
    )
    .await;
    let discovery = tokio::spawn({
        let issuer = issuer.clone();
        async move {
            unconfigured()
                .request_timeout(Duration::from_secs(2))
                .discover(&issuer)
                .await
        }
    });
    eventually(|| async { !server.received_requests().await.unwrap().is_empty() }).await;
    tokio::time::advance(Duration::from_secs(3)).await;
    let err = discovery.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, DiscoveryError::Timeout { url, timeout } if url.ends_with(OIDC) && *timeout == Duration::from_secs(2)),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&format!("{issuer}{OIDC}")),
        "{err}"
    );
}
