//! DPoP (RFC 9449) on the wire, through both adapters: proofs on the token request and on
//! every API request, verified with `jsonwebtoken`; the nonce flows of the token endpoint and
//! the API; replays with new proofs; the token's binding to the key.

use std::collections::HashSet;
use std::sync::Mutex;

use client_credentials::{
    ClientCredentials, Error, InvalidResponse, JwsAlgorithm, RequestOptions, SigningKey,
};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::verify::*;
use crate::retry::adapter::{api_url, Adapter, Payment};
use crate::retry::cases::{API_PATH, REQUEST_ID, REQUEST_ID_VALUE};
use crate::support::{CLIENT_ID, CLIENT_SECRET};

/// A DPoP-bound token answer.
fn dpop_token(token: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "access_token": token, "token_type": "DPoP", "expires_in": 3600
    }))
}

/// Mounts a token endpoint answering `tokens` in turn (DPoP-bound), each once.
async fn mount_dpop_tokens(auth: &MockServer, tokens: &[&str]) {
    for token in tokens {
        Mock::given(method("POST"))
            .and(path("/token"))
            .and(wiremock::matchers::header_exists("dpop"))
            .respond_with(dpop_token(token))
            .up_to_n_times(1)
            .expect(1)
            .mount(auth)
            .await;
    }
}

fn builder(auth: &MockServer) -> client_credentials::ClientCredentialsBuilder {
    ClientCredentials::builder()
        .token_url(format!("{}/token", auth.uri()))
        .client_id(CLIENT_ID)
        .client_secret(CLIENT_SECRET)
        .dpop()
}

/// The `DPoP` proof of a received request.
fn proof_of(request: &Request) -> String {
    request.headers["dpop"].to_str().unwrap().to_owned()
}

fn authorization(request: &Request) -> &str {
    request
        .headers
        .get("authorization")
        .map_or("", |v| v.to_str().unwrap())
}

#[tokio::test]
async fn the_token_request_proves_the_key_and_the_token_is_bound() {
    for alg in [
        JwsAlgorithm::Es256,
        JwsAlgorithm::EdDsa,
        JwsAlgorithm::Ps256,
    ] {
        let auth = MockServer::start().await;
        mount_dpop_tokens(&auth, &["tok-1"]).await;
        let credentials = builder(&auth).dpop_algorithm(alg).build().unwrap();
        assert_eq!(credentials.access_token().await.unwrap().secret(), "tok-1");

        let requests = auth.received_requests().await.unwrap();
        let (claims, jkt) = verify_proof(&proof_of(&requests[0]));
        assert_eq!(
            Some(jkt),
            credentials.dpop_thumbprint(),
            "{alg}: the key it proves"
        );
        assert_eq!(claims["htm"], "POST");
        assert_eq!(claims["htu"], format!("{}/token", auth.uri()));
        assert!((claims["iat"].as_i64().unwrap() - now()).abs() <= 5);
        assert!(claims.get("ath").is_none(), "no token yet: no ath");
        assert!(claims.get("nonce").is_none());
        assert_eq!(raw_part(&proof_of(&requests[0]), 0)["alg"], alg.as_str());
        auth.verify().await;
    }
}

/// A token endpoint that asks for its nonce once, then issues a DPoP-bound token to a proof
/// carrying it; records every proof and assertion.
struct NonceFirst {
    nonce: &'static str,
    seen: Mutex<Vec<Request>>,
}

impl Respond for NonceFirst {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.seen.lock().unwrap().push(request.clone());
        let (claims, _) = verify_proof(&proof_of(request));
        if claims.get("nonce").and_then(|n| n.as_str()) == Some(self.nonce) {
            dpop_token("tok-nonce")
        } else {
            ResponseTemplate::new(400)
                .insert_header("dpop-nonce", self.nonce)
                .set_body_json(serde_json::json!({"error": "use_dpop_nonce", "error_description": "nonce is required in the DPoP proof"}))
        }
    }
}

#[tokio::test]
async fn use_dpop_nonce_at_the_token_endpoint_gets_one_retry_with_a_new_proof_and_assertion() {
    let auth = MockServer::start().await;
    let responder = std::sync::Arc::new(NonceFirst {
        nonce: "srv-nonce-1",
        seen: Mutex::default(),
    });
    struct Shared(std::sync::Arc<NonceFirst>);
    impl Respond for Shared {
        fn respond(&self, request: &Request) -> ResponseTemplate {
            self.0.respond(request)
        }
    }
    Mock::given(method("POST"))
        .respond_with(Shared(std::sync::Arc::clone(&responder)))
        .mount(&auth)
        .await;
    let key = SigningKey::generate(JwsAlgorithm::Es256).unwrap();
    let credentials = ClientCredentials::builder()
        .token_url(format!("{}/token", auth.uri()))
        .client_id(CLIENT_ID)
        .issuer("https://issuer.example")
        .signing_key(key.clone())
        .dpop()
        .build()
        .unwrap();
    assert_eq!(
        credentials.access_token().await.unwrap().secret(),
        "tok-nonce"
    );

    let seen = responder.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "exactly one retry");
    let proofs: Vec<_> = seen.iter().map(|r| verify_proof(&proof_of(r)).0).collect();
    assert!(proofs[0].get("nonce").is_none());
    assert_eq!(proofs[1]["nonce"], "srv-nonce-1");
    assert_ne!(proofs[0]["jti"], proofs[1]["jti"], "a new proof");
    let jtis: HashSet<String> = seen
        .iter()
        .map(|r| {
            let form = form(r);
            let assertion = field(&form, "client_assertion").unwrap().to_owned();
            verify_assertion(
                &assertion,
                Some(&key),
                None,
                CLIENT_ID,
                "https://issuer.example",
            )
            .1["jti"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(jtis.len(), 2, "a new client assertion for the retry");
    // The nonce is remembered: the next token request carries it from the start.
    let token = credentials.access_token().await.unwrap();
    credentials.invalidate(&token);
    credentials.access_token().await.unwrap();
    let seen = responder.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert_eq!(verify_proof(&proof_of(&seen[2])).0["nonce"], "srv-nonce-1");
}

#[tokio::test]
async fn a_server_that_keeps_asking_for_a_nonce_gets_one_retry_only() {
    let auth = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(400)
                .insert_header("dpop-nonce", "always-another")
                .set_body_json(serde_json::json!({"error": "use_dpop_nonce"})),
        )
        .expect(2)
        .mount(&auth)
        .await;
    let credentials = builder(&auth)
        .retry_policy(client_credentials::RetryPolicy::no_retry())
        .build()
        .unwrap();
    let err = credentials.access_token().await.unwrap_err();
    assert_eq!(err.oauth_code().map(|c| c.as_str()), Some("use_dpop_nonce"));
    auth.verify().await;
}

#[tokio::test]
async fn a_bearer_token_is_an_error_when_dpop_is_required_and_used_as_bearer_otherwise() {
    let auth = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(crate::support::token_body("plain", 3600)),
        )
        .mount(&auth)
        .await;
    let required = builder(&auth).build().unwrap();
    match required.access_token().await {
        Err(Error::InvalidResponse {
            kind: InvalidResponse::NotDpopBound,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let api = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer plain"))
        .respond_with(ResponseTemplate::new(200))
        .expect(2)
        .mount(&api)
        .await;
    let optional = builder(&auth).dpop_required(false).build().unwrap();
    for &adapter in Adapter::all() {
        assert_eq!(adapter.send(&optional, Payment::to(&api)).await.status, 200);
    }
    let received = api.received_requests().await.unwrap();
    assert!(
        received.iter().all(|r| !r.headers.contains_key("dpop")),
        "no proof for a Bearer token"
    );
    api.verify().await;

    // Without DPoP, a DPoP-bound token cannot be used.
    let dpop_only = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(dpop_token("bound"))
        .mount(&dpop_only)
        .await;
    let no_dpop = ClientCredentials::builder()
        .token_url(format!("{}/token", dpop_only.uri()))
        .client_id(CLIENT_ID)
        .client_secret(CLIENT_SECRET)
        .build()
        .unwrap();
    match no_dpop.access_token().await {
        Err(Error::InvalidResponse {
            kind: InvalidResponse::UnsupportedTokenType(t),
            ..
        }) => {
            assert_eq!(&*t, "DPoP")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn every_api_request_carries_the_token_and_a_fresh_proof_through_both_adapters() {
    for &adapter in Adapter::all() {
        let (auth, api) = (MockServer::start().await, MockServer::start().await);
        mount_dpop_tokens(&auth, &["tok-1"]).await;
        Mock::given(method("POST"))
            .and(path(API_PATH))
            .and(header("authorization", "DPoP tok-1"))
            .respond_with(ResponseTemplate::new(201))
            .expect(3)
            .mount(&api)
            .await;
        let credentials = builder(&auth).build().unwrap();
        let mut jtis = HashSet::new();
        for _ in 0..3 {
            assert_eq!(
                adapter.send(&credentials, Payment::to(&api)).await.status,
                201,
                "{adapter:?}"
            );
        }
        for request in api.received_requests().await.unwrap() {
            let (claims, jkt) = verify_proof(&proof_of(&request));
            assert_eq!(Some(jkt), credentials.dpop_thumbprint());
            assert_eq!(claims["htm"], "POST");
            assert_eq!(claims["htu"], api_url(&api), "{adapter:?}");
            assert_eq!(claims["ath"], ath("tok-1"));
            assert!(
                jtis.insert(claims["jti"].as_str().unwrap().to_owned()),
                "a new jti"
            );
        }
        api.verify().await;
        auth.verify().await;
    }
}

/// `htu` is the URL without its query and fragment.
#[tokio::test]
async fn the_proof_names_the_url_without_its_query() {
    let (auth, api) = (MockServer::start().await, MockServer::start().await);
    mount_dpop_tokens(&auth, &["tok-1"]).await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&api)
        .await;
    let credentials = builder(&auth).build().unwrap();
    let client = crate::support::client(&credentials);
    client
        .get(format!("{}/v1/items/7?expand=all&page=2#frag", api.uri()))
        .send()
        .await
        .unwrap();
    let request = &api.received_requests().await.unwrap()[0];
    let (claims, _) = verify_proof(&proof_of(request));
    assert_eq!(claims["htu"], format!("{}/v1/items/7", api.uri()));
    assert_eq!(claims["htm"], "GET");
}

/// The API answers its first request `401` with a DPoP nonce challenge.
struct ApiWantsNonce {
    nonce: &'static str,
}

impl Respond for ApiWantsNonce {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let (claims, _) = verify_proof(&proof_of(request));
        if claims.get("nonce").and_then(|n| n.as_str()) == Some(self.nonce) {
            ResponseTemplate::new(201).insert_header(REQUEST_ID, REQUEST_ID_VALUE)
        } else {
            ResponseTemplate::new(401)
                .insert_header(REQUEST_ID, REQUEST_ID_VALUE)
                .insert_header("www-authenticate", r#"DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof""#)
                .insert_header("dpop-nonce", self.nonce)
        }
    }
}

#[tokio::test]
async fn the_apis_nonce_challenge_is_replayed_once_with_the_same_token_and_a_new_proof() {
    for &adapter in Adapter::all() {
        let (auth, api) = (MockServer::start().await, MockServer::start().await);
        mount_dpop_tokens(&auth, &["tok-1"]).await;
        Mock::given(method("POST"))
            .respond_with(ApiWantsNonce {
                nonce: "api-nonce-7",
            })
            .mount(&api)
            .await;
        let credentials = builder(&auth).build().unwrap();
        let answer = adapter.send(&credentials, Payment::to(&api)).await;
        assert_eq!(answer.status, 201, "{adapter:?}");
        let received = api.received_requests().await.unwrap();
        assert_eq!(received.len(), 2, "{adapter:?}: one replay");
        assert_eq!(authorization(&received[1]), "DPoP tok-1", "the same token");
        let first = verify_proof(&proof_of(&received[0])).0;
        let second = verify_proof(&proof_of(&received[1])).0;
        assert_ne!(first["jti"], second["jti"], "a new proof");
        assert_eq!(second["nonce"], "api-nonce-7");
        // The nonce is kept for the API's origin: the next request carries it at once.
        assert_eq!(
            adapter.send(&credentials, Payment::to(&api)).await.status,
            201
        );
        assert_eq!(api.received_requests().await.unwrap().len(), 3);
        let stats = credentials.stats();
        assert_eq!(
            (
                stats.token_requests,
                stats.forced_refreshes,
                stats.replayed_requests
            ),
            (1, 0, 1)
        );
        auth.verify().await;
    }
}

#[tokio::test]
async fn a_request_that_cannot_be_replayed_still_records_the_apis_nonce() {
    for &adapter in Adapter::all() {
        let (auth, api) = (MockServer::start().await, MockServer::start().await);
        mount_dpop_tokens(&auth, &["tok-1"]).await;
        Mock::given(method("POST"))
            .respond_with(ApiWantsNonce {
                nonce: "api-nonce-8",
            })
            .mount(&api)
            .await;
        let credentials = builder(&auth).build().unwrap();
        let answer = adapter
            .send(
                &credentials,
                Payment::to(&api).options(RequestOptions::new().no_replay()),
            )
            .await;
        assert_eq!(answer.status, 401, "{adapter:?}: passed on");
        assert_eq!(
            adapter.send(&credentials, Payment::to(&api)).await.status,
            201,
            "{adapter:?}"
        );
        let received = api.received_requests().await.unwrap();
        assert_eq!(received.len(), 2);
        assert_eq!(
            verify_proof(&proof_of(&received[1])).0["nonce"],
            "api-nonce-8"
        );
    }
}

#[tokio::test]
async fn invalid_token_in_a_dpop_challenge_gets_a_new_token_and_invalid_dpop_proof_does_not() {
    for &adapter in Adapter::all() {
        // invalid_token: the rule as for Bearer.
        let (auth, api) = (MockServer::start().await, MockServer::start().await);
        mount_dpop_tokens(&auth, &["tok-1", "tok-2"]).await;
        Mock::given(method("POST"))
            .and(header("authorization", "DPoP tok-1"))
            .respond_with(ResponseTemplate::new(401).insert_header(
                "www-authenticate",
                r#"DPoP algs="ES256", error="invalid_token""#,
            ))
            .expect(1)
            .mount(&api)
            .await;
        Mock::given(method("POST"))
            .and(header("authorization", "DPoP tok-2"))
            .respond_with(ResponseTemplate::new(201))
            .expect(1)
            .mount(&api)
            .await;
        let credentials = builder(&auth).build().unwrap();
        assert_eq!(
            adapter.send(&credentials, Payment::to(&api)).await.status,
            201,
            "{adapter:?}"
        );
        let received = api.received_requests().await.unwrap();
        assert_eq!(
            verify_proof(&proof_of(&received[1])).0["ath"],
            ath("tok-2"),
            "a proof for the new token"
        );
        api.verify().await;
        auth.verify().await;

        // invalid_dpop_proof: no new token, passed on.
        let (auth, api) = (MockServer::start().await, MockServer::start().await);
        mount_dpop_tokens(&auth, &["tok-1"]).await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(401)
                    .insert_header(REQUEST_ID, REQUEST_ID_VALUE)
                    .insert_header("www-authenticate", r#"DPoP error="invalid_dpop_proof""#),
            )
            .expect(1)
            .mount(&api)
            .await;
        let credentials = builder(&auth).build().unwrap();
        assert_eq!(
            adapter.send(&credentials, Payment::to(&api)).await.status,
            401
        );
        assert_eq!(credentials.stats().token_requests, 1);
        api.verify().await;
    }
}

#[tokio::test]
async fn replacing_the_key_drops_tokens_bound_to_the_old_one() {
    let (auth, api) = (MockServer::start().await, MockServer::start().await);
    mount_dpop_tokens(&auth, &["tok-old", "tok-new"]).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201))
        .mount(&api)
        .await;
    let credentials = builder(&auth).build().unwrap();
    let old = credentials.dpop_thumbprint().unwrap();
    assert_eq!(
        Adapter::Reqwest
            .send(&credentials, Payment::to(&api))
            .await
            .status,
        201
    );
    let new_key = SigningKey::generate(JwsAlgorithm::EdDsa).unwrap();
    credentials.set_dpop_key(new_key.clone()).unwrap();
    assert_eq!(
        credentials.dpop_thumbprint().as_deref(),
        Some(new_key.thumbprint())
    );
    assert_ne!(old, new_key.thumbprint());
    assert_eq!(
        Adapter::Reqwest
            .send(&credentials, Payment::to(&api))
            .await
            .status,
        201
    );
    let received = api.received_requests().await.unwrap();
    assert_eq!(
        authorization(&received[1]),
        "DPoP tok-new",
        "a token bound to the new key"
    );
    assert_eq!(
        verify_proof(&proof_of(&received[1])).1,
        new_key.thumbprint()
    );
    let token_requests = auth.received_requests().await.unwrap();
    assert_eq!(
        verify_proof(&proof_of(&token_requests[1])).1,
        new_key.thumbprint()
    );
    assert!(credentials
        .set_dpop_key(SigningKey::generate(JwsAlgorithm::Rs256).unwrap())
        .is_err());
    auth.verify().await;
}

#[tokio::test]
async fn code_without_an_adapter_gets_the_headers_for_a_method_and_url() {
    let auth = MockServer::start().await;
    mount_dpop_tokens(&auth, &["tok-1"]).await;
    let credentials = builder(&auth).build().unwrap();
    let url = "https://stream.example.com/v1/events?since=5";
    let headers = credentials
        .request_authorization(&http::Method::GET, url)
        .await
        .unwrap();
    assert_eq!(headers.authorization, "DPoP tok-1");
    let (claims, jkt) = verify_proof(headers.dpop.as_ref().unwrap().to_str().unwrap());
    assert_eq!(claims["htu"], "https://stream.example.com/v1/events");
    assert_eq!(claims["htm"], "GET");
    assert_eq!(claims["ath"], ath("tok-1"));
    assert_eq!(Some(jkt), credentials.dpop_thumbprint());
    let mut map = http::HeaderMap::new();
    headers.apply_to(&mut map);
    assert_eq!(map.len(), 2);
    assert!(!format!("{headers:?}").contains("tok-1"));
    // A Bearer configuration: no proof.
    let bearer_auth = MockServer::start().await;
    crate::support::mount_token(&bearer_auth, "plain", 3600).await;
    let bearer = crate::support::builder(&bearer_auth).build().unwrap();
    let headers = bearer
        .request_authorization(&http::Method::GET, url)
        .await
        .unwrap();
    assert_eq!(headers.authorization, "Bearer plain");
    assert!(headers.dpop.is_none());
}

/// A `use_dpop_nonce` challenge without a usable `DPoP-Nonce` gives nothing to prove with: the
/// answer is passed on as it is, not replayed with the same proof.
#[tokio::test]
async fn a_nonce_challenge_without_a_nonce_is_passed_on() {
    for &adapter in Adapter::all() {
        let (auth, api) = (MockServer::start().await, MockServer::start().await);
        mount_dpop_tokens(&auth, &["tok-1"]).await;
        let credentials = builder(&auth).build().unwrap();
        for nonce in [None, Some("not a nonce")] {
            let mut answer = ResponseTemplate::new(401)
                .insert_header(REQUEST_ID, REQUEST_ID_VALUE)
                .insert_header("www-authenticate", r#"DPoP error="use_dpop_nonce""#);
            if let Some(nonce) = nonce {
                answer = answer.insert_header("dpop-nonce", nonce);
            }
            api.reset().await;
            Mock::given(method("POST"))
                .respond_with(answer)
                .mount(&api)
                .await;
            let answer = adapter.send(&credentials, Payment::to(&api)).await;
            assert_eq!(answer.status, 401, "{adapter:?} {nonce:?}: passed on");
            assert_eq!(answer.headers[REQUEST_ID], REQUEST_ID_VALUE);
            assert_eq!(
                api.received_requests().await.unwrap().len(),
                1,
                "{adapter:?} {nonce:?}: not replayed"
            );
            assert_eq!(credentials.stats().replayed_requests, 0);
        }
    }
}

/// The key replaced while a token was being fetched with the old one (the token endpoint is
/// slow): that token is bound to the old key and cannot be proved with the new one. The request
/// waiting for it is not sent and fails with `DpopKeyReplaced`, through the middleware and
/// through `request_authorization` alike; the token is dropped, and the next request gets one
/// bound to the new key.
#[tokio::test]
async fn a_key_replaced_while_its_token_was_being_fetched_fails_that_request_only() {
    for through_middleware in [true, false] {
        let (auth, api) = (MockServer::start().await, MockServer::start().await);
        Mock::given(method("POST"))
            .and(path("/token"))
            .respond_with(dpop_token("tok-old").set_delay(std::time::Duration::from_millis(400)))
            .up_to_n_times(1)
            .expect(1)
            .mount(&auth)
            .await;
        mount_dpop_tokens(&auth, &["tok-new"]).await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&api)
            .await;
        let credentials = builder(&auth).build().unwrap();
        let url = format!("{}/v1/items", api.uri());
        let send = {
            let (credentials, url) = (credentials.clone(), url.clone());
            move || async move {
                if through_middleware {
                    match crate::support::client(&credentials).get(&url).send().await {
                        Ok(response) => Ok(response.status().as_u16()),
                        Err(reqwest_middleware::Error::Middleware(e)) => {
                            Err(e.downcast::<Error>().expect("a client_credentials::Error"))
                        }
                        Err(e) => panic!("not a middleware error: {e:?}"),
                    }
                } else {
                    credentials
                        .request_authorization(&http::Method::GET, &url)
                        .await
                        .map(|h| {
                            assert_eq!(h.authorization, "DPoP tok-new");
                            200
                        })
                }
            }
        };
        let first = tokio::spawn(send.clone()());
        // Replace the key once the token request (with the old key's proof) has arrived.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while auth.received_requests().await.unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "no token request");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let old = credentials.dpop_thumbprint().unwrap();
        let new_key = SigningKey::generate(JwsAlgorithm::Es256).unwrap();
        credentials.set_dpop_key(new_key.clone()).unwrap();
        let first = first.await.unwrap();
        assert!(
            matches!(first, Err(Error::DpopKeyReplaced)),
            "middleware {through_middleware}: {first:?}"
        );
        assert!(
            api.received_requests().await.unwrap().is_empty(),
            "not sent"
        );
        assert_eq!(
            send().await.unwrap(),
            200,
            "middleware {through_middleware}"
        );
        let token_requests = auth.received_requests().await.unwrap();
        assert_eq!(verify_proof(&proof_of(&token_requests[0])).1, old);
        assert_eq!(
            verify_proof(&proof_of(&token_requests[1])).1,
            new_key.thumbprint()
        );
        if through_middleware {
            let sent = api.received_requests().await.unwrap();
            assert_eq!(sent.len(), 1);
            assert_eq!(authorization(&sent[0]), "DPoP tok-new");
            assert_eq!(verify_proof(&proof_of(&sent[0])).1, new_key.thumbprint());
        }
        auth.verify().await;
    }
}
