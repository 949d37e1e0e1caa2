//! The client secret and tokens never reach `Debug`, `Display`, errors or `tracing` output.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client_credentials::{
    AccessToken, AuthMethod, ClientCredentials, ClientSecret, ConfigError, Error, RequestOptions,
    RetryPolicy, Scopes, Token,
};
use http::StatusCode;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::common::*;
use crate::support::{client, token_body};

const SECRET: &str = "p@ss:w0rd+/% never-print-me";
/// Every rendering of the client secret that must never appear: raw, form-encoded, and inside
/// the Basic credentials (encoded per RFC 6749 §2.3.1 or raw).
fn secret_renderings() -> Vec<String> {
    let form: String = form_urlencoded::byte_serialize(SECRET.as_bytes()).collect();
    let id_form: String = form_urlencoded::byte_serialize(ODD_ID.as_bytes()).collect();
    vec![
        SECRET.to_owned(),
        "never-print-me".to_owned(),
        form.clone(),
        base64_pair(&id_form, &form),
        base64_pair(ODD_ID, SECRET),
        ODD_SECRET.to_owned(),
        ODD_SECRET_FORM.to_owned(),
        base64_pair(ODD_ID_FORM, ODD_SECRET_FORM),
    ]
}

fn forbidden() -> Vec<String> {
    let mut all = secret_renderings();
    all.push(TOKEN_PREFIX.to_owned());
    all
}

fn assert_clean(text: &str, what: &str) {
    let forbidden = forbidden();
    let refs: Vec<&str> = forbidden.iter().map(String::as_str).collect();
    assert_hides(text, &refs, what);
}

fn debug_both<T: std::fmt::Debug>(value: &T) -> String {
    format!("{value:?}\n{value:#?}")
}

#[tokio::test]
async fn debug_of_every_public_type_hides_secret_and_tokens() {
    let auth = MockServer::start().await;
    crate::support::mount_token(&auth, "tok-leak-debug-value", 3600).await;
    let builder = ClientCredentials::builder()
        .token_url(token_url(&auth))
        .client_id(ODD_ID)
        .client_secret(SECRET)
        .scopes("accounts.read")
        .param("audience", "https://api.example.com/")
        .tenant_id(client_credentials::TenantId::from_static("acme"));
    let shown = debug_both(&builder);
    assert!(shown.contains("ClientCredentialsBuilder"), "{shown}");
    assert_clean(&shown, "ClientCredentialsBuilder");
    // A secret from a file, and the previous one of a rotation window: the path is shown, no
    // secret.
    let dir = std::env::temp_dir().join(format!("cc-secrecy-debug-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("client-secret");
    std::fs::write(&file, SECRET).unwrap();
    let rotating = ClientCredentials::builder()
        .token_url(token_url(&auth))
        .client_id(ODD_ID)
        .client_secret_file(&file)
        .previous_client_secret(ODD_SECRET);
    let shown = debug_both(&rotating);
    assert!(shown.contains("client-secret"), "{shown}");
    assert_clean(&shown, "a builder with a secret file");
    let shown = debug_both(&rotating.build_token_endpoint().unwrap());
    assert!(
        shown.contains("file:") && shown.contains("previous"),
        "{shown}"
    );
    assert_clean(&shown, "a TokenEndpoint with a secret file");
    let _ = std::fs::remove_dir_all(&dir);
    // The built-in token source alone: where it sends, how it authenticates, the names of its
    // extra parameters (their values may be secrets too) and its limits.
    let endpoint = builder.build_token_endpoint().unwrap();
    let shown = debug_both(&endpoint);
    for part in [
        "TokenEndpoint",
        "127.0.0.1",
        "/oauth2/token",
        "\"audience\"",
        "max_response_bytes: 65536",
        "timeout: 10s",
    ] {
        assert!(shown.contains(part), "{part} in {shown}");
    }
    assert!(
        !shown.contains("api.example.com"),
        "a parameter's value: {shown}"
    );
    assert_clean(&shown, "TokenEndpoint");

    let mut printed: Vec<(&str, String)> = Vec::new();
    for auth_method in [AuthMethod::ClientSecretBasic, AuthMethod::ClientSecretPost] {
        let credentials = builder.clone().auth_method(auth_method).build().unwrap();
        printed.push(("ClientCredentials (cold)", debug_both(&credentials)));
        let token = credentials.access_token().await.unwrap();
        assert_eq!(token.secret(), "tok-leak-debug-value");
        // Now the cache holds a token: print everything that can reach it.
        printed.push(("ClientCredentials (warm)", debug_both(&credentials)));
        printed.push(("AccessToken", debug_both(&token)));
        printed.push((
            "cached_access_token",
            debug_both(&credentials.cached_access_token()),
        ));
        printed.push((
            "cached_authorization",
            debug_both(&credentials.cached_authorization()),
        ));
        printed.push((
            "authorization",
            debug_both(&credentials.authorization().await.unwrap()),
        ));
        printed.push((
            "Token",
            debug_both(&Token::new(token.clone(), Some(Duration::from_secs(60)))),
        ));
        printed.push(("Stats", debug_both(&credentials.stats())));
        printed.push((
            "ClientCredentialsMiddleware",
            debug_both(&credentials.middleware()),
        ));
        #[cfg(feature = "tower")]
        {
            #[derive(Debug, Clone)]
            struct Inner;
            let layer = credentials.layer();
            printed.push(("ClientCredentialsLayer", debug_both(&layer)));
            printed.push((
                "ClientCredentialsLayer<NoReplay>",
                debug_both(&credentials.layer().without_replay()),
            ));
            let service = tower::Layer::layer(&layer, Inner);
            printed.push(("ClientCredentialsService", debug_both(&service)));
        }
        let shown = debug_both(&credentials);
        assert!(
            shown.contains("127.0.0.1"),
            "the endpoint is shown: {shown}"
        );
    }
    let secret = ClientSecret::new(SECRET);
    assert_eq!(format!("{secret:?}"), "ClientSecret([redacted])");
    printed.push(("ClientSecret", debug_both(&secret)));
    let token = AccessToken::new("tok-leak-direct");
    assert_eq!(format!("{token:?}"), "AccessToken([redacted])");
    printed.push(("AccessToken::new", debug_both(&token)));
    printed.push((
        "Token::new",
        debug_both(&Token::new(AccessToken::new("tok-leak-in-token"), None)),
    ));
    printed.push((
        "RequestOptions",
        debug_both(
            &RequestOptions::new()
                .tenant_id(client_credentials::TenantId::from_static("acme"))
                .scopes(Scopes::new(["payments.write"]))
                .no_replay(),
        ),
    ));
    printed.push(("RetryPolicy", debug_both(&RetryPolicy::default())));
    printed.push(("AuthMethod", debug_both(&AuthMethod::ClientSecretPost)));

    // Errors: every variant that can be produced from outside, and their messages.
    let answers: Vec<(StatusCode, String)> = vec![
        (
            StatusCode::OK,
            r#"{"access_token":"tok-leak-mac","token_type":"mac"}"#.to_owned(),
        ),
        (
            StatusCode::OK,
            r#"{"access_token":"tok-leak-nl\n","token_type":"Bearer"}"#.to_owned(),
        ),
        (
            StatusCode::OK,
            r#"{"access_token":"tok-leak-exp","expires_in":"later"}"#.to_owned(),
        ),
        (StatusCode::OK, r#"{"token_type":"Bearer"}"#.to_owned()),
        (StatusCode::OK, "tok-leak-not-json".to_owned()),
        (
            StatusCode::BAD_REQUEST,
            r#"{"error":"invalid_client","error_description":"wrong secret"}"#.to_owned(),
        ),
        (StatusCode::SERVICE_UNAVAILABLE, "tok-leak-503".to_owned()),
    ];
    for (status, body) in &answers {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status.as_u16()).set_body_string(body))
            .mount(&server)
            .await;
        let error = ClientCredentials::builder()
            .token_url(token_url(&server))
            .client_id(ODD_ID)
            .client_secret(SECRET)
            .retry_policy(RetryPolicy::no_retry())
            .build()
            .unwrap()
            .access_token()
            .await
            .unwrap_err();
        printed.push(("Error (answered)", everything_printed(&error)));
    }
    let transport = ClientCredentials::builder()
        .token_url(refused_url())
        .client_id(ODD_ID)
        .client_secret(SECRET)
        .retry_policy(RetryPolicy::no_retry())
        .build()
        .unwrap();
    let error = transport.access_token().await.unwrap_err();
    assert!(matches!(error, Error::Transport { .. }), "{error:?}");
    printed.push(("Error::Transport", everything_printed(&error)));
    let again = transport.access_token().await.unwrap_err();
    assert!(matches!(again, Error::BackingOff { .. }), "{again:?}");
    printed.push(("Error::BackingOff", everything_printed(&again)));
    let source = Error::from_source(std::io::Error::other("vault unavailable"));
    printed.push(("Error::Source", everything_printed(&source)));
    for bad in [
        ClientCredentials::builder()
            .token_url("http://auth.example.com/token?client_secret=p@ss")
            .client_id(ODD_ID)
            .client_secret(SECRET)
            .build()
            .unwrap_err(),
        client_credentials::TenantId::new("bad\ntenant").unwrap_err(),
    ] {
        assert!(
            matches!(
                bad,
                ConfigError::InsecureTokenUrl(_) | ConfigError::InvalidTenantId
            ),
            "{bad:?}"
        );
        printed.push(("ConfigError", everything_printed(&bad)));
    }

    for (what, text) in &printed {
        assert!(!text.is_empty(), "{what}");
        assert_clean(text, what);
    }
}

/// A writer appending to a shared buffer, for the captured `tracing` output.
#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn trace_level_logs_never_hold_secret_or_tokens() {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let writer = Capture(Arc::clone(&buffer));
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::FULL)
        .with_writer(move || writer.clone())
        .finish();
    // Current-thread runtime: the spawned fetch tasks run on this thread, under this default.
    let _guard = tracing::subscriber::set_default(subscriber);
    // tracing-core caches each callsite's interest globally. With a single registered
    // dispatcher it computes the interest of a callsite first hit on *another* thread (another
    // test of this binary) from that thread's default, which has no subscriber: the callsite
    // is then disabled here too. A second registered dispatcher makes it ask every registered
    // one (ours included), and registering it rebuilds the cache of callsites seen so far.
    let _second_dispatcher = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());

    // 1. Success, then a 401 invalid_token answered by one re-fetch and one retry.
    let auth = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("tok-leak-first", 3600)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&auth)
        .await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body("tok-leak-second", 3600)))
        .mount(&auth)
        .await;
    let api = MockServer::start().await;
    Mock::given(header("authorization", "Bearer tok-leak-first"))
        .respond_with(ResponseTemplate::new(200))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&api)
        .await;
    Mock::given(header("authorization", "Bearer tok-leak-first"))
        .respond_with(
            ResponseTemplate::new(401)
                .insert_header("www-authenticate", r#"Bearer error="invalid_token""#),
        )
        .expect(1)
        .mount(&api)
        .await;
    Mock::given(header("authorization", "Bearer tok-leak-second"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&api)
        .await;
    let credentials = ClientCredentials::builder()
        .token_url(token_url(&auth))
        .client_id(ODD_ID)
        .client_secret(SECRET)
        .scopes("accounts.read")
        .param("audience", "https://api.example.com/")
        .tenant_id(client_credentials::TenantId::from_static("acme"))
        .build()
        .unwrap();
    let api_client = client(&credentials);
    let url = format!("{}/v1/accounts", api.uri());
    assert_eq!(api_client.get(&url).send().await.unwrap().status(), 200);
    assert_eq!(
        api_client
            .post(&url)
            .body("{\"a\":1}")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(credentials.stats().replayed_requests, 1);

    // 2. Token endpoint failures: an OAuth error (client_secret_post, so the secret is in the
    // form body) and a 500 retried twice.
    let failing = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_json(
            serde_json::json!({"error": "invalid_client", "error_description": "unknown client"}),
        ))
        .mount(&failing)
        .await;
    let post = ClientCredentials::builder()
        .token_url(token_url(&failing))
        .client_id(ODD_ID)
        .client_secret(ODD_SECRET)
        .auth_method(AuthMethod::ClientSecretPost)
        .build()
        .unwrap();
    let error = client(&post).get(&url).send().await.unwrap_err();
    assert!(
        error.to_string().contains("invalid_client")
            || format!("{error:?}").contains("InvalidClient")
    );
    let down = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_string("tok-leak-in-500-body"))
        .expect(3)
        .mount(&down)
        .await;
    let retried = ClientCredentials::builder()
        .token_url(token_url(&down))
        .client_id(ODD_ID)
        .client_secret(SECRET)
        .retry_policy(
            RetryPolicy::default()
                .max_attempts(3)
                .initial_backoff(Duration::from_millis(1))
                .max_backoff(Duration::from_millis(2)),
        )
        .build()
        .unwrap();
    assert!(retried.access_token().await.is_err());

    // 3. A malformed answer that carries a token.
    let malformed = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"access_token": "tok-leak-malformed", "token_type": "mac", "expires_in": 60}),
        ))
        .mount(&malformed)
        .await;
    let bad = ClientCredentials::builder()
        .token_url(token_url(&malformed))
        .client_id(ODD_ID)
        .client_secret(SECRET)
        .build()
        .unwrap();
    assert!(client(&bad).get(&url).send().await.is_err());

    // 4. A secret file (issue 17): refused, read again, rotated, refused again; then removed.
    let dir = std::env::temp_dir().join(format!("cc-secrecy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("client-secret");
    std::fs::write(&file, SECRET).unwrap();
    let from_file = ClientCredentials::builder()
        .token_url(token_url(&failing))
        .client_id(ODD_ID)
        .client_secret_file(&file)
        .previous_client_secret(format!("previous {SECRET}"))
        .auth_method(AuthMethod::ClientSecretPost)
        .build()
        .unwrap();
    std::fs::write(&file, format!("second {SECRET}")).unwrap();
    assert!(from_file.access_token().await.is_err());
    std::fs::remove_file(&file).unwrap();
    let from_file = ClientCredentials::builder()
        .token_url(token_url(&failing))
        .client_id(ODD_ID)
        .client_secret_file(&file)
        .build()
        .unwrap_err();
    assert_clean(
        &format!("{from_file} {from_file:?}"),
        "a credential file error",
    );
    let _ = std::fs::remove_dir_all(&dir);

    drop(_guard);
    let logs = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
    // The capture works and saw every path of the scenario.
    for expected in [
        "token_request",
        "token fetched",
        "token rejected by the API",
        "replaying the rejected request",
        "token request failed",
        "invalid_client",
        "unsupported token_type",
        "attempt=3",
        "the credential changed",
        "sending once more with another one",
    ] {
        assert!(
            logs.contains(expected),
            "the logs lack `{expected}`:\n{logs}"
        );
    }
    assert_clean(&logs, "tracing output");
}
