//! Per-request control with `RequestOptions`, through both adapters: reqwest-middleware's
//! `with_extension` and `http::Request` extensions under the tower layer (a hyper-util client).
//! Every scenario runs once per adapter, against fresh servers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use client_credentials::{ClientCredentials, RequestOptions, Scopes};
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tower::{ServiceBuilder, ServiceExt};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support::*;

#[derive(Debug, Clone, Copy)]
enum Adapter {
    Reqwest,
    Tower,
}

const ADAPTERS: [Adapter; 2] = [Adapter::Reqwest, Adapter::Tower];

/// `GET url` through `adapter`, with `options` in the request's extensions.
async fn send(
    adapter: Adapter,
    credentials: &ClientCredentials,
    url: &str,
    options: Option<RequestOptions>,
) -> (StatusCode, String) {
    match adapter {
        Adapter::Reqwest => {
            let mut request = client(credentials).get(url);
            if let Some(options) = options {
                request = request.with_extension(options);
            }
            let response = request.send().await.unwrap();
            (response.status(), response.text().await.unwrap())
        }
        Adapter::Tower => {
            let hyper = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
            let service = ServiceBuilder::new()
                .layer(credentials.layer())
                .service(hyper);
            let mut request = http::Request::get(url)
                .body(Full::new(Bytes::new()))
                .unwrap();
            if let Some(options) = options {
                request.extensions_mut().insert(options);
            }
            let response = service.oneshot(request).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8(body.to_vec()).unwrap())
        }
    }
}

/// The `scope` of each token request the server received, in order.
async fn requested_scopes(auth: &MockServer) -> Vec<String> {
    auth.received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/oauth2/token")
        .map(|r| {
            form_urlencoded::parse(&r.body)
                .find(|(k, _)| k == "scope")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
        .collect()
}

/// A token endpoint answering `tok-<scope>-<n>` (n counts all token requests), so each
/// token says which scope set it was fetched for.
async fn mount_scoped_tokens(auth: &MockServer, delay: std::time::Duration) {
    let n = Arc::new(AtomicUsize::new(0));
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(move |req: &Request| {
            let scope = form_urlencoded::parse(&req.body)
                .find(|(k, _)| k == "scope")
                .map(|(_, v)| v.replace(' ', "+"))
                .unwrap_or_default();
            let n = n.fetch_add(1, Ordering::SeqCst) + 1;
            ResponseTemplate::new(200)
                .set_body_json(token_body(&format!("tok-{scope}-{n}"), 3600))
                .set_delay(delay)
        })
        .mount(auth)
        .await;
}

/// An API echoing the bearer token it received (or `none`).
async fn mount_echo_api(api: &MockServer) {
    Mock::given(method("GET"))
        .respond_with(|req: &Request| {
            let auth = req
                .headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().trim_start_matches("Bearer ").to_owned())
                .unwrap_or_else(|| "none".to_owned());
            ResponseTemplate::new(200).set_body_string(auth)
        })
        .mount(api)
        .await;
}

#[tokio::test]
async fn tenant_for_one_request_only() {
    for adapter in ADAPTERS {
        let auth = MockServer::start().await;
        let api = MockServer::start().await;
        mount_token(&auth, "tok", 3600).await;
        Mock::given(header("x-tenant-id", "acme"))
            .and(header("authorization", "Bearer tok"))
            .respond_with(ResponseTemplate::new(200).set_body_string("acme"))
            .expect(1)
            .mount(&api)
            .await;
        Mock::given(header("x-tenant-id", "default-tenant"))
            .and(header("authorization", "Bearer tok"))
            .respond_with(ResponseTemplate::new(200).set_body_string("default"))
            .expect(2)
            .mount(&api)
            .await;
        let credentials = builder(&auth)
            .tenant_id(client_credentials::TenantId::from_static("default-tenant"))
            .build()
            .unwrap();
        let url = format!("{}/v1/accounts", api.uri());

        let before = send(adapter, &credentials, &url, None).await;
        let options =
            RequestOptions::new().tenant_id(client_credentials::TenantId::from_static("acme"));
        let this_one = send(adapter, &credentials, &url, Some(options)).await;
        let after = send(adapter, &credentials, &url, None).await;
        assert_eq!(
            [before, this_one, after].map(|(s, b)| (s.as_u16(), b)),
            [
                (200, "default".to_owned()),
                (200, "acme".to_owned()),
                (200, "default".to_owned())
            ],
            "{adapter:?}"
        );
        api.verify().await;
    }
}

#[tokio::test]
async fn unauthenticated_request_gets_no_token_and_fetches_none() {
    for adapter in ADAPTERS {
        let auth = MockServer::start().await;
        let api = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(token_body("tok", 3600)))
            .expect(0)
            .mount(&auth)
            .await;
        mount_echo_api(&api).await;
        let credentials = builder(&auth)
            .tenant_id(client_credentials::TenantId::from_static("acme"))
            .build()
            .unwrap();
        let url = format!("{}/public/health", api.uri());

        let (status, seen) = send(
            adapter,
            &credentials,
            &url,
            Some(RequestOptions::new().unauthenticated()),
        )
        .await;
        assert_eq!(
            (status.as_u16(), seen.as_str()),
            (200, "none"),
            "{adapter:?}"
        );
        let requests = api.received_requests().await.unwrap();
        assert_eq!(requests.len(), 1);
        assert!(
            requests[0].headers.get("authorization").is_none(),
            "{adapter:?}"
        );
        assert!(
            requests[0].headers.get("x-tenant-id").is_none(),
            "{adapter:?}"
        );
        assert_eq!(credentials.stats().token_requests, 0, "{adapter:?}");
        auth.verify().await;
    }
}

#[tokio::test]
async fn no_retry_returns_the_401_and_sends_the_request_once() {
    let rejection = json!({"error": "invalid_token"});
    for adapter in ADAPTERS {
        let auth = MockServer::start().await;
        let api = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(token_body("tok-1", 3600)))
            .up_to_n_times(1)
            .mount(&auth)
            .await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(token_body("tok-2", 3600)))
            .mount(&auth)
            .await;
        Mock::given(header("authorization", "Bearer tok-1"))
            .respond_with(ResponseTemplate::new(401).set_body_json(&rejection))
            .mount(&api)
            .await;
        Mock::given(header("authorization", "Bearer tok-2"))
            .respond_with(ResponseTemplate::new(200).set_body_string("paid"))
            .mount(&api)
            .await;
        let credentials = builder(&auth).build().unwrap();
        let url = format!("{}/v1/payments", api.uri());

        let (status, body) = send(
            adapter,
            &credentials,
            &url,
            Some(RequestOptions::new().no_replay()),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{adapter:?}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            rejection,
            "{adapter:?}"
        );
        assert_eq!(
            api.received_requests().await.unwrap().len(),
            1,
            "{adapter:?}: sent once"
        );
        assert_eq!(credentials.stats().replayed_requests, 0, "{adapter:?}");

        // Only that request: the next one is retried once with a new token as usual.
        let (status, body) = send(adapter, &credentials, &url, None).await;
        assert_eq!(
            (status.as_u16(), body.as_str()),
            (200, "paid"),
            "{adapter:?}"
        );
        assert_eq!(
            api.received_requests().await.unwrap().len(),
            3,
            "{adapter:?}"
        );
        assert_eq!(credentials.stats().replayed_requests, 1, "{adapter:?}");
    }
}

#[tokio::test]
async fn other_scopes_get_a_token_of_their_own() {
    for adapter in ADAPTERS {
        let auth = MockServer::start().await;
        let api = MockServer::start().await;
        mount_scoped_tokens(&auth, std::time::Duration::ZERO).await;
        mount_echo_api(&api).await;
        let credentials = builder(&auth).scopes("accounts.read").build().unwrap();
        let url = format!("{}/v1/accounts", api.uri());
        let write =
            || Some(RequestOptions::new().scopes(Scopes::new(["accounts.write", "accounts.read"])));

        let (_, default) = send(adapter, &credentials, &url, None).await;
        let (_, scoped) = send(adapter, &credentials, &url, write()).await;
        let (_, scoped_again) = send(adapter, &credentials, &url, write()).await;
        let (_, default_again) = send(adapter, &credentials, &url, None).await;
        assert_eq!(default, "tok-accounts.read-1", "{adapter:?}");
        assert_eq!(scoped, "tok-accounts.write+accounts.read-2", "{adapter:?}");
        assert_eq!(scoped_again, scoped, "{adapter:?}: cached per scope set");
        assert_eq!(
            default_again, default,
            "{adapter:?}: the default token is untouched"
        );
        assert_eq!(
            requested_scopes(&auth).await,
            ["accounts.read", "accounts.write accounts.read"],
            "{adapter:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_scope_set_is_fetched_once_however_many_requests_ask() {
    for adapter in ADAPTERS {
        let auth = MockServer::start().await;
        let api = MockServer::start().await;
        // A slow answer, so all requests are waiting while the one fetch is in flight.
        mount_scoped_tokens(&auth, std::time::Duration::from_millis(200)).await;
        mount_echo_api(&api).await;
        let credentials = builder(&auth).scopes("accounts.read").build().unwrap();
        let url = format!("{}/v1/programs", api.uri());
        let options = RequestOptions::new().scopes(Scopes::new(["programs.read"]));

        let answers = futures_util::future::join_all(
            (0..20).map(|_| send(adapter, &credentials, &url, Some(options.clone()))),
        )
        .await;
        for (status, token) in &answers {
            assert_eq!(
                (status.as_u16(), token.as_str()),
                (200, "tok-programs.read-1"),
                "{adapter:?}"
            );
        }
        assert_eq!(
            requested_scopes(&auth).await,
            ["programs.read"],
            "{adapter:?}"
        );
        assert_eq!(credentials.stats().cache_misses, 1, "{adapter:?}");
    }
}

#[tokio::test]
async fn scope_set_caches_are_bounded_and_the_oldest_is_dropped() {
    for adapter in ADAPTERS {
        let auth = MockServer::start().await;
        let api = MockServer::start().await;
        mount_scoped_tokens(&auth, std::time::Duration::ZERO).await;
        mount_echo_api(&api).await;
        let credentials = builder(&auth)
            .scopes("base")
            .max_scope_sets(2)
            .build()
            .unwrap();
        let url = format!("{}/v1/x", api.uri());
        let with = |s: &str| Some(RequestOptions::new().scopes(Scopes::new([s])));

        let (_, a1) = send(adapter, &credentials, &url, with("a")).await;
        let (_, b1) = send(adapter, &credentials, &url, with("b")).await;
        assert_eq!(
            send(adapter, &credentials, &url, with("a")).await.1,
            a1,
            "{adapter:?}: a cached"
        );
        // A third set: past the bound of 2, the oldest (a) is dropped.
        let (_, c1) = send(adapter, &credentials, &url, with("c")).await;
        assert_eq!(
            send(adapter, &credentials, &url, with("b")).await.1,
            b1,
            "{adapter:?}: b kept"
        );
        assert_eq!(
            send(adapter, &credentials, &url, with("c")).await.1,
            c1,
            "{adapter:?}: c kept"
        );
        let (_, a2) = send(adapter, &credentials, &url, with("a")).await;
        assert_ne!(
            a2, a1,
            "{adapter:?}: a was evicted, so a new token is fetched"
        );
        assert_eq!(
            requested_scopes(&auth).await,
            ["a", "b", "c", "a"],
            "{adapter:?}"
        );

        // Whatever scopes requests ask for, only the last 2 sets stay cached: after 30 more
        // sets, the two newest are hits and an older one is fetched again.
        for i in 0..30 {
            send(adapter, &credentials, &url, with(&format!("s{i}"))).await;
        }
        let fetched = requested_scopes(&auth).await.len();
        send(adapter, &credentials, &url, with("s29")).await;
        send(adapter, &credentials, &url, with("s28")).await;
        assert_eq!(
            requested_scopes(&auth).await.len(),
            fetched,
            "{adapter:?}: newest two cached"
        );
        send(adapter, &credentials, &url, with("s0")).await;
        assert_eq!(
            requested_scopes(&auth).await.len(),
            fetched + 1,
            "{adapter:?}: s0 was dropped"
        );
        // The configured scope set has its own cache, outside the bound.
        assert_eq!(
            send(adapter, &credentials, &url, None).await.1,
            "tok-base-".to_owned() + &(fetched + 2).to_string()
        );
        let before = requested_scopes(&auth).await.len();
        for i in 0..5 {
            send(adapter, &credentials, &url, with(&format!("t{i}"))).await;
        }
        send(adapter, &credentials, &url, None).await;
        assert_eq!(
            requested_scopes(&auth).await.len(),
            before + 5,
            "{adapter:?}: default never evicted"
        );
    }
}
