//! Where tokens and the client secret may go: only to allowed origins, never through a
//! redirect.

use client_credentials::Error;
use http::StatusCode;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::hits;
use crate::support::*;

/// A client shared between the partner API and anything else: only requests to the allowed
/// origins get a token (and the tenant header); the rest go out untouched and never cause a
/// token request.
#[tokio::test]
async fn only_allowed_origins_get_a_token() {
    let _serial = crate::harness::shared().await;
    let auth = MockServer::start().await;
    mount_token(&auth, "partner-token", 3600).await;
    let partner = MockServer::start().await;
    Mock::given(method("GET"))
        .and(header("authorization", "Bearer partner-token"))
        .and(header("x-tenant-id", "acme"))
        .respond_with(ResponseTemplate::new(200))
        .expect(2)
        .mount(&partner)
        .await;
    let elsewhere = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&elsewhere)
        .await;

    let partner_port = partner.address().port();
    let credentials = builder(&auth)
        .tenant_id(client_credentials::TenantId::from_static("acme"))
        .allowed_origins([
            "https://api.partner.example".to_owned(),
            format!("http://127.0.0.1:{partner_port}"),
        ])
        .build()
        .unwrap();
    let client = client(&credentials);

    // Another origin first: untouched, and no token is fetched for it.
    let other_origins = [
        format!("{}/collect", elsewhere.uri()),
        // Same host, same scheme, another port.
        format!(
            "http://127.0.0.1:{}/collect?port",
            elsewhere.address().port()
        ),
        // Same port, another host spelling: origins compare hosts as written.
        format!("http://localhost:{partner_port}/v1/accounts"),
    ];
    for url in &other_origins {
        let res = client.get(url).send().await.unwrap();
        // `localhost:<partner port>` reaches the partner mock without a token: 404 there.
        assert!(
            res.status() == 200 || res.status() == 404,
            "{url}: {}",
            res.status()
        );
    }
    assert_eq!(
        hits(&auth).await,
        0,
        "a token was fetched for another origin"
    );

    // The partner: token and tenant.
    let res = client
        .get(format!("{}/v1/accounts", partner.uri()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Other origins again, with a token in the cache: still untouched.
    for url in &other_origins {
        client.get(url).send().await.unwrap();
    }
    let res = client
        .get(format!("{}/v1/accounts", partner.uri()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(hits(&auth).await, 1);

    let requests = elsewhere.received_requests().await.unwrap();
    assert_eq!(requests.len(), 4);
    let to_partner_port = partner.received_requests().await.unwrap();
    // Two authorized partner calls, and the two `localhost` ones that got no token.
    assert_eq!(to_partner_port.len(), 4);
    let host = |r: &wiremock::Request| r.headers.get("host").unwrap().to_str().unwrap().to_owned();
    let untouched: Vec<_> = to_partner_port
        .iter()
        .filter(|r| host(r).starts_with("localhost:"))
        .collect();
    assert_eq!(untouched.len(), 2);
    for request in requests.iter().chain(untouched) {
        assert!(
            !request.headers.contains_key("authorization"),
            "{}",
            host(request)
        );
        assert!(
            !request.headers.contains_key("x-tenant-id"),
            "{}",
            host(request)
        );
    }
}

/// The token request never follows a redirect, whatever its kind: the other server (which would
/// get the client credentials) receives nothing, and the caller gets a typed error.
#[tokio::test]
async fn token_request_never_follows_redirects() {
    let _serial = crate::harness::shared().await;
    for status in [301u16, 302, 303, 307, 308] {
        let auth = MockServer::start().await;
        let thief = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(token_body("stolen", 3600)))
            .expect(0)
            .mount(&thief)
            .await;
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .respond_with(
                ResponseTemplate::new(status)
                    .insert_header("location", format!("{}/oauth2/token", thief.uri()).as_str()),
            )
            .expect(1)
            .mount(&auth)
            .await;
        let credentials = builder(&auth).build().unwrap();
        match credentials.access_token().await {
            Err(Error::Redirect { status: s, .. }) => {
                assert_eq!(s, StatusCode::from_u16(status).unwrap())
            }
            other => panic!("{status}: {other:?}"),
        }
        let err = credentials.access_token().await.unwrap_err();
        assert!(!format!("{err} {err:?}").contains(CLIENT_SECRET));
        assert_eq!(hits(&thief).await, 0, "{status}: the redirect was followed");
        // The configured endpoint got the secret (Basic), once: redirects are not retried.
        let received = auth.received_requests().await.unwrap();
        assert_eq!(received.len(), 1, "{status}");
        assert!(received[0]
            .headers
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("Basic "));
    }
}
