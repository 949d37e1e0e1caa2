//! `X-Tenant-Id` (seed 001): on every API request exactly when a tenant is configured or asked
//! for, with the per-request option taking precedence.

use client_credentials::{RequestOptions, X_TENANT_ID};
use wiremock::matchers::{header, method};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support::{builder, client, mount_token};

fn tenants(request: &Request) -> Vec<String> {
    request
        .headers
        .get_all(&X_TENANT_ID)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

struct Case {
    name: &'static str,
    configured: Option<&'static str>,
    per_request: Option<&'static str>,
    expected: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "none configured",
        configured: None,
        per_request: None,
        expected: &[],
    },
    Case {
        name: "configured",
        configured: Some("acme"),
        per_request: None,
        expected: &["acme"],
    },
    Case {
        name: "per-request override of the configured tenant",
        configured: Some("acme"),
        per_request: Some("globex"),
        expected: &["globex"],
    },
    Case {
        name: "per-request tenant with none configured",
        configured: None,
        per_request: Some("initech"),
        expected: &["initech"],
    },
];

#[tokio::test]
async fn tenant_header_present_exactly_when_configured() {
    for case in CASES {
        let name = case.name;
        let auth = MockServer::start().await;
        mount_token(&auth, "tok-leak-tenant", 3600).await;
        let api = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200))
            .expect(2)
            .mount(&api)
            .await;
        let mut b = builder(&auth);
        if let Some(t) = case.configured {
            b = b.tenant_id(client_credentials::TenantId::from_static(t));
        }
        let credentials = b.build().unwrap();
        let client = client(&credentials);
        for _ in 0..2 {
            let mut request = client.get(format!("{}/v1/accounts", api.uri()));
            if let Some(t) = case.per_request {
                request = request.with_extension(
                    RequestOptions::new().tenant_id(client_credentials::TenantId::from_static(t)),
                );
            }
            assert_eq!(request.send().await.unwrap().status(), 200, "{name}");
        }
        let received = api.received_requests().await.unwrap();
        assert_eq!(received.len(), 2, "{name}");
        for request in &received {
            assert_eq!(tenants(request), case.expected, "{name}");
            assert_eq!(
                request.headers.get("authorization").unwrap(),
                "Bearer tok-leak-tenant",
                "{name}"
            );
        }
        // The tenant is an API header; the token request does not carry it.
        for request in auth.received_requests().await.unwrap() {
            assert!(
                tenants(&request).is_empty(),
                "{name}: token request carries X-Tenant-Id"
            );
        }
    }
}

#[tokio::test]
async fn per_request_override_does_not_stick() {
    let auth = MockServer::start().await;
    mount_token(&auth, "tok-leak-tenant", 3600).await;
    let api = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&api)
        .await;
    let credentials = builder(&auth)
        .tenant_id(client_credentials::TenantId::from_static("acme"))
        .build()
        .unwrap();
    let client = client(&credentials);
    let url = format!("{}/v1/accounts", api.uri());
    client
        .get(&url)
        .with_extension(
            RequestOptions::new().tenant_id(client_credentials::TenantId::from_static("globex")),
        )
        .send()
        .await
        .unwrap();
    client.get(&url).send().await.unwrap();
    let received = api.received_requests().await.unwrap();
    let seen: Vec<Vec<String>> = received.iter().map(tenants).collect();
    assert_eq!(seen, [vec!["globex".to_owned()], vec!["acme".to_owned()]]);
}

#[tokio::test]
async fn tenant_header_is_on_the_retried_request_too() {
    let auth = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(crate::support::token_body("tok-leak-old", 3600)),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&auth)
        .await;
    mount_token(&auth, "tok-leak-new", 3600).await;
    let api = MockServer::start().await;
    Mock::given(header("authorization", "Bearer tok-leak-old"))
        .respond_with(
            ResponseTemplate::new(401)
                .insert_header("www-authenticate", r#"Bearer error="invalid_token""#),
        )
        .expect(1)
        .mount(&api)
        .await;
    Mock::given(header("authorization", "Bearer tok-leak-new"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&api)
        .await;
    let credentials = builder(&auth)
        .tenant_id(client_credentials::TenantId::from_static("acme"))
        .build()
        .unwrap();
    let response = client(&credentials)
        .get(format!("{}/v1/accounts", api.uri()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let received = api.received_requests().await.unwrap();
    assert_eq!(received.len(), 2);
    for request in &received {
        assert_eq!(tenants(request), ["acme"]);
    }
}

#[test]
fn tenant_ids_read_back_what_they_were_made_from() {
    use client_credentials::TenantId;
    assert_eq!(TenantId::new("acme-01").unwrap().as_str(), "acme-01");
    assert_eq!(TenantId::from_static("globex").as_str(), "globex");
    assert_eq!("initech".parse::<TenantId>().unwrap().as_str(), "initech");
}
