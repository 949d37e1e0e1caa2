//! The vendor recipes against wiremock servers answering exactly as AWS Cognito and Duende
//! IdentityServer document (seeds 000 to 003). The real hosts are HTTPS, so the exchange runs
//! against a loopback server mounted at the vendor's path (URL construction is unit-tested in
//! `src/vendor.rs`).

use client_credentials::{AuthMethod, ClientCredentials, Error, OAuthErrorCode, RetryPolicy};
use http::StatusCode;
use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support::*;

const COGNITO_TOKEN: &str = "eyJraWQiOiJLTzZ.cognito.sig";
const ACCOUNTS_READ: &str = "https://api.example.com/accounts.read";
const ACCOUNTS_WRITE: &str = "https://api.example.com/accounts.write";

fn form(request: &Request) -> Vec<(String, String)> {
    form_urlencoded::parse(&request.body).into_owned().collect()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn token_requests(server: &MockServer) -> Vec<Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method == wiremock::http::Method::POST)
        .collect()
}

#[tokio::test]
async fn cognito_resource_server_scopes_and_an_answer_without_scope() {
    let cognito = MockServer::start().await;
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        // Exactly Cognito's answer: no `scope` field.
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            format!(
                r#"{{"access_token":"{COGNITO_TOKEN}","expires_in":3600,"token_type":"Bearer"}}"#
            ),
            "application/json;charset=UTF-8",
        ))
        .expect(1)
        .mount(&cognito)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/wallets"))
        .and(header(
            "authorization",
            format!("Bearer {COGNITO_TOKEN}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"wallets": []})))
        .expect(3)
        .mount(&api)
        .await;

    // The custom-domain recipe gives `<domain>/oauth2/token`: here, the loopback server.
    let credentials = ClientCredentials::builder()
        .aws_cognito_domain(&cognito.uri())
        .unwrap()
        .client_id(CLIENT_ID)
        .client_secret(CLIENT_SECRET)
        .scopes([ACCOUNTS_READ, ACCOUNTS_WRITE])
        .build()
        .unwrap();
    let client = client(&credentials);
    for _ in 0..3 {
        let res = client
            .get(format!("{}/v1/wallets", api.uri()))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }

    // One token for three calls: Cognito bills each token request.
    let requests = token_requests(&cognito).await;
    assert_eq!(requests.len(), 1);
    let form = form(&requests[0]);
    assert_eq!(field(&form, "grant_type"), Some("client_credentials"));
    assert_eq!(
        field(&form, "scope"),
        Some(format!("{ACCOUNTS_READ} {ACCOUNTS_WRITE}").as_str())
    );
    assert_eq!(credentials.stats().token_requests, 1);
}

#[tokio::test]
async fn cognito_errors_keep_their_oauth_code() {
    // (status, body, expected code; None: a plain status error)
    let cases: [(u16, &str, Option<OAuthErrorCode>); 6] = [
        (
            400,
            r#"{"error":"invalid_client"}"#,
            Some(OAuthErrorCode::InvalidClient),
        ),
        (
            401,
            r#"{"error":"invalid_client"}"#,
            Some(OAuthErrorCode::InvalidClient),
        ),
        (
            400,
            r#"{"error":"invalid_scope"}"#,
            Some(OAuthErrorCode::InvalidScope),
        ),
        (
            400,
            r#"{"error":"unauthorized_client"}"#,
            Some(OAuthErrorCode::UnauthorizedClient),
        ),
        (
            400,
            r#"{"error":"invalid_request"}"#,
            Some(OAuthErrorCode::InvalidRequest),
        ),
        (429, r#"{"message":"Too Many Requests"}"#, None),
    ];
    for (status, body, code) in cases {
        let cognito = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .respond_with(ResponseTemplate::new(status).set_body_raw(body, "application/json"))
            .expect(1)
            .mount(&cognito)
            .await;
        let credentials = ClientCredentials::builder()
            .aws_cognito_domain(&cognito.uri())
            .unwrap()
            .client_id(CLIENT_ID)
            .client_secret(CLIENT_SECRET)
            .scopes(ACCOUNTS_READ)
            .retry_policy(RetryPolicy::no_retry())
            .build()
            .unwrap();
        let err = credentials.access_token().await.unwrap_err();
        match &code {
            Some(code) => assert!(
                matches!(&err, Error::OAuth { code: c, status: s, description: None, .. } if c == code && s.as_u16() == status),
                "{body}: {err:?}"
            ),
            None => assert!(
                matches!(&err, Error::Status { status: s, .. } if *s == StatusCode::TOO_MANY_REQUESTS),
                "{body}: {err:?}"
            ),
        }
        let message = err.to_string();
        assert!(
            message.contains(&format!("{}/oauth2/token", cognito.uri())),
            "{message}"
        );
        if let Some(code) = code {
            assert!(message.contains(code.as_str()), "{message}");
        }
        assert!(!message.contains(CLIENT_SECRET) && !format!("{err:?}").contains(CLIENT_SECRET));
    }
}

#[tokio::test]
async fn duende_connect_token_with_idp_api_scope_and_tenant() {
    let duende = MockServer::start().await;
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/connect/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "duende-jwt",
            "expires_in": 3600,
            "token_type": "Bearer",
            "scope": "idp_api",
        })))
        .expect(1)
        .mount(&duende)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/members"))
        .and(header("authorization", "Bearer duende-jwt"))
        .and(header("x-tenant-id", "tenant-42"))
        .respond_with(ResponseTemplate::new(200).set_body_string("[]"))
        .expect(2)
        .mount(&api)
        .await;

    // Seed 001 sends the credentials in the form body.
    let credentials = ClientCredentials::builder()
        .duende(&duende.uri())
        .unwrap()
        .client_id(CLIENT_ID)
        .client_secret(CLIENT_SECRET)
        .auth_method(AuthMethod::ClientSecretPost)
        .scopes("idp_api")
        .tenant_id(client_credentials::TenantId::from_static("tenant-42"))
        .build()
        .unwrap();
    let client = client(&credentials);
    for _ in 0..2 {
        let res = client
            .get(format!("{}/api/members", api.uri()))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let requests = token_requests(&duende).await;
    assert_eq!(requests.len(), 1);
    let form = form(&requests[0]);
    assert_eq!(field(&form, "grant_type"), Some("client_credentials"));
    assert_eq!(field(&form, "scope"), Some("idp_api"));
    assert_eq!(field(&form, "client_id"), Some(CLIENT_ID));
    assert_eq!(field(&form, "client_secret"), Some(CLIENT_SECRET));
    assert!(requests[0].headers.get("authorization").is_none());
}

#[tokio::test]
async fn duende_invalid_client_keeps_the_description() {
    let duende = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/connect/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_client",
            "error_description": "Invalid client credentials",
        })))
        .expect(1)
        .mount(&duende)
        .await;
    let credentials = ClientCredentials::builder()
        .duende(&duende.uri())
        .unwrap()
        .client_id(CLIENT_ID)
        .client_secret(CLIENT_SECRET)
        .scopes("idp_api")
        .build()
        .unwrap();
    let err = credentials.access_token().await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::OAuth { code: OAuthErrorCode::InvalidClient, status, description: Some(d), .. }
                if *status == StatusCode::BAD_REQUEST && &**d == "Invalid client credentials"
        ),
        "{err:?}"
    );
    assert_eq!(err.oauth_code(), Some(&OAuthErrorCode::InvalidClient));
    // Not transient: not retried, so exactly one token request (`expect(1)`).
    assert!(!err.is_transient());
    let message = err.to_string();
    assert!(
        message.contains("invalid_client") && message.contains("Invalid client credentials"),
        "{message}"
    );
    assert!(
        message.contains(&format!("{}/connect/token", duende.uri())),
        "{message}"
    );
    assert!(!message.contains(CLIENT_SECRET) && !format!("{err:?}").contains(CLIENT_SECRET));
}
