//! The 401 rule through the reqwest middleware.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use client_credentials::RequestOptions;
use http_body::Frame;
use http_body_util::StreamBody;
use reqwest_middleware::ClientWithMiddleware;
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::cases::*;
use crate::support::*;

fn api_url(api: &MockServer) -> String {
    format!("{}{API_PATH}", api.uri())
}

/// POSTs the payment JSON through the middleware.
async fn post_payment(client: &ClientWithMiddleware, api: &MockServer) -> reqwest::Response {
    client
        .post(api_url(api))
        .header("content-type", "application/json")
        .body(PAYMENT)
        .send()
        .await
        .unwrap()
}

/// Asserts the caller got the API's answer as it was sent: status, header, URL and body bytes.
async fn assert_intact(
    response: reqwest::Response,
    status: u16,
    url: &str,
    body: &[u8],
    case: &str,
) {
    assert_eq!(response.status(), status, "{case}");
    assert_eq!(response.headers()[REQUEST_ID], REQUEST_ID_VALUE, "{case}");
    assert_eq!(response.url().as_str(), url, "{case}");
    assert_eq!(&response.bytes().await.unwrap()[..], body, "{case}");
}

#[tokio::test]
async fn invalid_token_is_refetched_once_and_the_request_retried_once_with_its_body() {
    for case in InvalidToken::ALL {
        let auth = MockServer::start().await;
        let api = MockServer::start().await;
        mount_token_sequence(&auth, &["tok-1", "tok-2"]).await;
        Mock::given(method("POST"))
            .and(path(API_PATH))
            .and(bearer("tok-1"))
            .respond_with(case.response())
            .expect(1)
            .named(format!("{case:?}: the rejection"))
            .mount(&api)
            .await;
        Mock::given(method("POST"))
            .and(path(API_PATH))
            .and(bearer("tok-2"))
            .respond_with(ResponseTemplate::new(201).set_body_string("created"))
            .expect(1)
            .named(format!("{case:?}: the retry"))
            .mount(&api)
            .await;
        let credentials = builder(&auth).build().unwrap();

        let response = post_payment(&client(&credentials), &api).await;
        assert_eq!(response.status(), 201, "{case:?}");
        assert_eq!(response.text().await.unwrap(), "created", "{case:?}");

        let received = api.received_requests().await.unwrap();
        assert_eq!(received.len(), 2, "{case:?}");
        assert_eq!(authorization(&received[0]), "Bearer tok-1", "{case:?}");
        assert_eq!(authorization(&received[1]), "Bearer tok-2", "{case:?}");
        for request in &received {
            assert_eq!(request.body, PAYMENT.as_bytes(), "{case:?}");
            assert_eq!(
                request.headers["content-type"], "application/json",
                "{case:?}"
            );
        }
        let stats = credentials.stats();
        assert_eq!(
            (stats.forced_refreshes, stats.retried_requests),
            (1, 1),
            "{case:?}"
        );
        api.verify().await;
        auth.verify().await;
    }
}

#[tokio::test]
async fn a_second_401_reaches_the_caller_intact_without_a_loop() {
    for case in InvalidToken::ALL {
        let auth = MockServer::start().await;
        let api = MockServer::start().await;
        mount_token_sequence(&auth, &["tok-1", "tok-2"]).await;
        Mock::given(method("POST"))
            .and(path(API_PATH))
            .respond_with(case.response())
            .expect(2)
            .named(format!("{case:?}: every token rejected"))
            .mount(&api)
            .await;
        let credentials = builder(&auth).build().unwrap();

        let response = post_payment(&client(&credentials), &api).await;
        assert_intact(
            response,
            401,
            &api_url(&api),
            case.body(),
            &format!("{case:?}"),
        )
        .await;

        let received = api.received_requests().await.unwrap();
        assert_eq!(received.len(), 2, "{case:?}");
        assert_eq!(authorization(&received[0]), "Bearer tok-1", "{case:?}");
        assert_eq!(authorization(&received[1]), "Bearer tok-2", "{case:?}");
        assert!(
            received.iter().all(|r| r.body == PAYMENT.as_bytes()),
            "{case:?}"
        );
        assert_eq!(auth.received_requests().await.unwrap().len(), 2, "{case:?}");
        api.verify().await;
        auth.verify().await;
    }
}

#[tokio::test]
async fn a_bare_401_is_returned_without_retry_when_retry_on_bare_401_is_off() {
    let auth = MockServer::start().await;
    let api = MockServer::start().await;
    mount_token_sequence(&auth, &["tok-1"]).await;
    Mock::given(method("POST"))
        .and(path(API_PATH))
        .respond_with(InvalidToken::Bare.response())
        .expect(1)
        .mount(&api)
        .await;
    let credentials = builder(&auth).retry_on_bare_401(false).build().unwrap();

    let response = post_payment(&client(&credentials), &api).await;
    assert_intact(
        response,
        401,
        &api_url(&api),
        InvalidToken::Bare.body(),
        "bare",
    )
    .await;
    assert_eq!(credentials.stats().retried_requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_requests_rejected_with_the_same_token_cause_one_refetch() {
    const REJECTED: usize = 50;
    let auth = MockServer::start().await;
    let api = MockServer::start().await;
    mount_token_sequence(&auth, &["tok-1", "tok-2"]).await;
    // The rejections take 300 ms (real time), so all 50 requests are out with tok-1 before the
    // first one comes back.
    Mock::given(method("POST"))
        .and(path(API_PATH))
        .and(bearer("tok-1"))
        .respond_with(
            InvalidToken::JsonBody
                .response()
                .set_delay(Duration::from_millis(300)),
        )
        .expect(REJECTED as u64)
        .mount(&api)
        .await;
    Mock::given(method("POST"))
        .and(path(API_PATH))
        .and(bearer("tok-2"))
        .respond_with(ResponseTemplate::new(201))
        .expect(REJECTED as u64)
        .mount(&api)
        .await;
    let credentials = builder(&auth).build().unwrap();
    assert_eq!(credentials.access_token().await.unwrap().secret(), "tok-1");
    let client = client(&credentials);

    let start = Arc::new(Barrier::new(REJECTED));
    let mut tasks = JoinSet::new();
    for _ in 0..REJECTED {
        let (client, url, start) = (client.clone(), api_url(&api), Arc::clone(&start));
        tasks.spawn(async move {
            start.wait().await;
            let response = client.post(url).body(PAYMENT).send().await.unwrap();
            response.status()
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 201);
    }

    assert_eq!(
        auth.received_requests().await.unwrap().len(),
        2,
        "one token, one re-fetch"
    );
    let received = api.received_requests().await.unwrap();
    let count = |token: &str| {
        received
            .iter()
            .filter(|r| authorization(r) == token)
            .count()
    };
    assert_eq!(
        (count("Bearer tok-1"), count("Bearer tok-2")),
        (REJECTED, REJECTED)
    );
    assert!(received.iter().all(|r| r.body == PAYMENT.as_bytes()));
    let stats = credentials.stats();
    assert_eq!(
        (stats.forced_refreshes, stats.retried_requests),
        (1, REJECTED as u64)
    );
}

#[tokio::test]
async fn rejections_a_new_token_cannot_fix_are_not_retried_and_reach_the_caller_intact() {
    for case in NOT_RETRIED {
        let auth = MockServer::start().await;
        let api = MockServer::start().await;
        mount_token_sequence(&auth, &["tok-1"]).await;
        Mock::given(method("POST"))
            .and(path(API_PATH))
            .respond_with(case.response())
            .expect(1)
            .named(case.name)
            .mount(&api)
            .await;
        let credentials = builder(&auth).build().unwrap();

        let response = post_payment(&client(&credentials), &api).await;
        let challenge = response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(challenge.as_deref(), case.www_authenticate, "{}", case.name);
        assert_intact(response, case.status, &api_url(&api), case.body, case.name).await;
        let stats = credentials.stats();
        assert_eq!(
            (stats.forced_refreshes, stats.retried_requests),
            (0, 0),
            "{}",
            case.name
        );
        api.verify().await;
        auth.verify().await;
    }
}

/// A request body that is a stream: `reqwest::Request::try_clone` gives `None` for it.
fn streaming_body() -> reqwest::Body {
    let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = ["{\"amount\":", "\"12.50\"}"]
        .into_iter()
        .map(|chunk| Ok(Frame::data(Bytes::from_static(chunk.as_bytes()))))
        .collect();
    reqwest::Body::wrap(StreamBody::new(futures_util::stream::iter(frames)))
}

#[tokio::test]
async fn a_streaming_body_answered_401_is_sent_once_and_the_401_returned_intact() {
    for case in InvalidToken::ALL {
        let auth = MockServer::start().await;
        let api = MockServer::start().await;
        let dropped = case.dropped_when_not_retried();
        mount_token_sequence(
            &auth,
            if dropped {
                &["tok-1", "tok-2"]
            } else {
                &["tok-1"]
            },
        )
        .await;
        Mock::given(method("POST"))
            .and(path(API_PATH))
            .respond_with(case.response())
            .expect(1)
            .named(format!("{case:?}: the only send"))
            .mount(&api)
            .await;
        let credentials = builder(&auth).build().unwrap();
        let client = client(&credentials);

        let request = client
            .post(api_url(&api))
            .body(streaming_body())
            .build()
            .unwrap();
        assert!(
            request.try_clone().is_none(),
            "the body must not be replayable"
        );
        let response = client.execute(request).await.unwrap();
        assert_intact(
            response,
            401,
            &api_url(&api),
            case.body(),
            &format!("{case:?}"),
        )
        .await;

        let received = api.received_requests().await.unwrap();
        assert_eq!(received.len(), 1, "{case:?}");
        assert_eq!(received[0].body, br#"{"amount":"12.50"}"#, "{case:?}");
        assert_eq!(authorization(&received[0]), "Bearer tok-1", "{case:?}");
        assert_eq!(credentials.stats().retried_requests, 0, "{case:?}");
        // A header that says invalid_token still drops the token for the next request.
        let next = if dropped { "tok-2" } else { "tok-1" };
        assert_eq!(
            credentials.access_token().await.unwrap().secret(),
            next,
            "{case:?}"
        );
        api.verify().await;
        auth.verify().await;
    }
}

#[tokio::test]
async fn a_request_with_its_own_authorization_header_is_sent_as_it_is() {
    for own in ["Bearer caller-token", "Basic dXNlcjpwYXNz"] {
        let auth = MockServer::start().await;
        let api = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(TOKEN_PATH))
            .respond_with(ResponseTemplate::new(200).set_body_json(token_body("tok-1", 3600)))
            .expect(0)
            .named("no token request")
            .mount(&auth)
            .await;
        // Even a 401 invalid_token is the caller's business: no fetch, no retry.
        Mock::given(method("POST"))
            .and(path(API_PATH))
            .and(header("authorization", own))
            .respond_with(InvalidToken::JsonBody.response())
            .expect(1)
            .named(own)
            .mount(&api)
            .await;
        let credentials = builder(&auth).tenant_id("acme").build().unwrap();

        let response = client(&credentials)
            .post(api_url(&api))
            .header("authorization", own)
            .body(PAYMENT)
            .send()
            .await
            .unwrap();
        assert_intact(
            response,
            401,
            &api_url(&api),
            InvalidToken::JsonBody.body(),
            own,
        )
        .await;
        let received = api.received_requests().await.unwrap();
        assert_eq!(received.len(), 1, "{own}");
        assert_eq!(
            received[0].headers.get_all("authorization").iter().count(),
            1,
            "{own}"
        );
        assert!(
            received[0].headers.get("x-tenant-id").is_none(),
            "{own}: sent untouched"
        );
        assert_eq!(credentials.stats().token_requests, 0, "{own}");
        api.verify().await;
        auth.verify().await;
    }
}

#[tokio::test]
async fn request_options_no_retry_returns_the_401_as_it_is() {
    for case in InvalidToken::ALL {
        let auth = MockServer::start().await;
        let api = MockServer::start().await;
        let dropped = case.dropped_when_not_retried();
        mount_token_sequence(
            &auth,
            if dropped {
                &["tok-1", "tok-2"]
            } else {
                &["tok-1"]
            },
        )
        .await;
        Mock::given(method("POST"))
            .and(path(API_PATH))
            .and(bearer("tok-1"))
            .respond_with(case.response())
            .expect(1)
            .named(format!("{case:?}: the only send"))
            .mount(&api)
            .await;
        let credentials = builder(&auth).build().unwrap();

        let response = client(&credentials)
            .post(api_url(&api))
            .body(PAYMENT)
            .with_extension(RequestOptions::new().no_retry())
            .send()
            .await
            .unwrap();
        assert_intact(
            response,
            401,
            &api_url(&api),
            case.body(),
            &format!("{case:?}"),
        )
        .await;
        assert_eq!(credentials.stats().retried_requests, 0, "{case:?}");
        let next = if dropped { "tok-2" } else { "tok-1" };
        assert_eq!(
            credentials.access_token().await.unwrap().secret(),
            next,
            "{case:?}"
        );
        api.verify().await;
        auth.verify().await;
    }
}
