//! Issue 17: workload identity federation. The client authenticates with a JWT its platform
//! issued (a projected service-account token file, an environment variable, the GitHub Actions
//! token service), sent as the client assertion, against a token endpoint on loopback that
//! accepts the assertions it is told to and records each one it saw.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use client_credentials::{ClientCredentials, ClientSecret, Error, GitHubActionsToken};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::{failed_requests, write_atomically, ManualClock, TempDir};

const CLIENT_ID: &str = "federated-client";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const LIFETIME: u64 = 100;

/// An unsigned JWT for `sub`, expiring `exp_in` seconds from now (negative: in the past). The
/// token endpoint here checks which assertion it got, not signatures (`tests/interop` checks a
/// signed one against a certified server).
fn jwt(sub: &str, exp_in: i64) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64(serde_json::json!({"alg": "RS256", "kid": "cluster-key"})),
        b64(serde_json::json!({
            "iss": "https://oidc.cluster.example",
            "sub": sub,
            "aud": "https://auth.example.com",
            "exp": now + exp_in,
        }))
    )
}

/// A token endpoint that accepts the client assertions in `accepted` (and only with the
/// jwt-bearer type and the client id), records every assertion it got, and issues a new token
/// per accepted request.
#[derive(Clone, Default)]
struct Authority {
    accepted: Arc<Mutex<Vec<String>>>,
    seen: Arc<Mutex<Vec<String>>>,
    issued: Arc<AtomicUsize>,
}

impl Respond for Authority {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let form: Vec<(String, String)> =
            form_urlencoded::parse(&request.body).into_owned().collect();
        let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let assertion = field("client_assertion").unwrap_or_default();
        self.seen.lock().unwrap().push(assertion.clone());
        let ok = field("client_assertion_type").as_deref() == Some(JWT_BEARER)
            && field("client_id").as_deref() == Some(CLIENT_ID)
            && field("client_secret").is_none()
            && self.accepted.lock().unwrap().contains(&assertion);
        if ok {
            let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
            let token_type = if request.headers.contains_key("dpop") {
                "DPoP"
            } else {
                "Bearer"
            };
            ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": format!("tok-federated-{n}"),
                "token_type": token_type,
                "expires_in": LIFETIME,
            }))
        } else {
            ResponseTemplate::new(401).set_body_json(serde_json::json!({
                "error": "invalid_client",
                "error_description": "client assertion not accepted",
            }))
        }
    }
}

impl Authority {
    async fn start() -> (MockServer, Self) {
        let server = MockServer::start().await;
        let authority = Self::default();
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .respond_with(authority.clone())
            .mount(&server)
            .await;
        (server, authority)
    }

    fn accept(&self, assertion: &str) {
        self.accepted.lock().unwrap().push(assertion.to_owned());
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn api() -> MockServer {
    let api = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&api)
        .await;
    api
}

fn builder(auth: &MockServer) -> client_credentials::ClientCredentialsBuilder {
    ClientCredentials::builder()
        .token_url(format!("{}/oauth2/token", auth.uri()))
        .client_id(CLIENT_ID)
        .refresh_jitter(0.0)
}

/// The platform rewrites the token file while requests flow: the next token request sends the
/// new JWT, every request succeeds, and one token request is sent per token (single flight).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_assertion_file_rewritten_during_traffic_is_sent_at_the_next_fetch() {
    let _clock = ManualClock::hold();
    let dir = TempDir::new();
    let file = dir.file("oauth-token");
    let first = jwt("system:serviceaccount:payments:api", 3600);
    write_atomically(&file, &first);
    let (auth, authority) = Authority::start().await;
    authority.accept(&first);
    let api = api().await;
    let credentials = builder(&auth).client_assertion_file(&file).build().unwrap();
    assert_eq!(
        failed_requests(&credentials, &format!("{}/v1/members", api.uri()), 25).await,
        0
    );
    let second = jwt("system:serviceaccount:payments:api", 7200);
    authority.accept(&second);
    write_atomically(&file, &second);
    assert_eq!(
        failed_requests(&credentials, &format!("{}/v1/members", api.uri()), 25).await,
        0,
        "the token still good"
    );
    tokio::time::advance(Duration::from_secs(2 * LIFETIME)).await;
    assert_eq!(
        failed_requests(&credentials, &format!("{}/v1/members", api.uri()), 25).await,
        0
    );
    assert_eq!(
        authority.seen(),
        [first, second],
        "one fetch each, the new JWT"
    );
    let stats = credentials.stats();
    assert_eq!((stats.token_requests, stats.credentials_reloaded), (2, 1));
    crate::support::drop_servers((auth, api)).await;
}

/// The file holds a JWT whose `exp` has passed (the platform stopped renewing it): a typed error
/// naming the file, and no token request at all.
#[tokio::test]
async fn an_expired_assertion_is_a_typed_error_and_no_request() {
    let dir = TempDir::new();
    let file = dir.file("expired-token");
    let expired = jwt("spiffe://cluster.example/ns/payments/sa/api", -120);
    write_atomically(&file, &expired);
    let (auth, authority) = Authority::start().await;
    let credentials = builder(&auth).client_assertion_file(&file).build().unwrap();
    let error = credentials.access_token().await.unwrap_err();
    let Error::Credential { origin, reason } = &error else {
        panic!("{error:?}");
    };
    assert!(origin.starts_with("client assertion file ") && origin.ends_with("expired-token"));
    assert!(reason.contains("expired"), "{reason}");
    assert!(!format!("{error} {error:?}").contains(&expired));
    assert!(authority.seen().is_empty(), "nothing sent");
}

/// The file removed: the last good JWT is sent while it is unexpired, the failure counted.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_removed_assertion_file_keeps_the_last_good_jwt() {
    let _clock = ManualClock::hold();
    let dir = TempDir::new();
    let file = dir.file("oauth-token");
    let only = jwt("system:serviceaccount:payments:api", 3600);
    write_atomically(&file, &only);
    let (auth, authority) = Authority::start().await;
    authority.accept(&only);
    let api = api().await;
    let credentials = builder(&auth).client_assertion_file(&file).build().unwrap();
    assert_eq!(
        failed_requests(&credentials, &format!("{}/v1/members", api.uri()), 5).await,
        0
    );
    std::fs::remove_file(&file).unwrap();
    tokio::time::advance(Duration::from_secs(2 * LIFETIME)).await;
    assert_eq!(
        failed_requests(&credentials, &format!("{}/v1/members", api.uri()), 5).await,
        0
    );
    assert_eq!(authority.seen(), [only.clone(), only]);
    assert_eq!(credentials.stats().credential_errors, 1);
    crate::support::drop_servers((auth, api)).await;
}

/// The token endpoint refuses the JWT sent (the issuer's keys rotated and the platform wrote a
/// new token, not yet looked at): the file is read at once and the request sent once more.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_refused_assertion_is_read_again_and_sent_once_more() {
    let _clock = ManualClock::hold();
    let dir = TempDir::new();
    let file = dir.file("oauth-token");
    let old = jwt("system:serviceaccount:payments:api", 3600);
    write_atomically(&file, &old);
    let (auth, authority) = Authority::start().await;
    let api = api().await;
    let credentials = builder(&auth)
        .client_assertion_file(&file)
        .credential_file_check_interval(Duration::from_secs(86_400))
        .build()
        .unwrap();
    let new = jwt("system:serviceaccount:payments:api", 7200);
    write_atomically(&file, &new);
    authority.accept(&new);
    assert_eq!(
        failed_requests(&credentials, &format!("{}/v1/members", api.uri()), 10).await,
        0
    );
    assert_eq!(authority.seen(), [old, new]);
    assert_eq!(credentials.stats().token_requests, 2);
    crate::support::drop_servers((auth, api)).await;
}

/// From an environment variable, read before every token request.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_assertion_from_the_environment_is_read_before_each_token_request() {
    let _clock = ManualClock::hold();
    let name = format!("CC_TEST_ASSERTION_{}", std::process::id());
    let first = jwt("repo:acme/payments:ref:refs/heads/main", 600);
    std::env::set_var(&name, &first);
    let (auth, authority) = Authority::start().await;
    authority.accept(&first);
    let api = api().await;
    let credentials = builder(&auth).client_assertion_env(&name).build().unwrap();
    assert_eq!(
        failed_requests(&credentials, &format!("{}/v1/members", api.uri()), 5).await,
        0
    );
    let second = jwt("repo:acme/payments:ref:refs/heads/main", 900);
    authority.accept(&second);
    std::env::set_var(&name, &second);
    tokio::time::advance(Duration::from_secs(2 * LIFETIME)).await;
    assert_eq!(
        failed_requests(&credentials, &format!("{}/v1/members", api.uri()), 5).await,
        0
    );
    assert_eq!(authority.seen(), [first, second]);
    std::env::remove_var(&name);
    let unset = builder(&auth)
        .client_assertion_env(&name)
        .build()
        .unwrap_err();
    assert!(unset.to_string().contains("not set"), "{unset}");
    crate::support::drop_servers((auth, api)).await;
}

/// GitHub Actions: the job's token service on loopback (as `ACTIONS_ID_TOKEN_REQUEST_URL`
/// points to), asked with the request token and the audience; its JWT is the assertion.
#[tokio::test]
async fn the_github_actions_token_is_asked_for_the_audience_and_sent() {
    let service = MockServer::start().await;
    // As large as GitHub's (its tokens carry some thirty claims: over 1 KB).
    let oidc = jwt("repo:acme/payments:environment:production", 300);
    let oidc = {
        let mut parts: Vec<String> = oidc.split('.').map(str::to_owned).collect();
        let mut claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&parts[1])
                .unwrap(),
        )
        .unwrap();
        for claim in [
            "repository",
            "repository_owner",
            "workflow",
            "job_workflow_ref",
            "ref",
            "sha",
            "run_id",
            "run_attempt",
            "actor",
            "environment",
            "event_name",
            "ref_type",
        ] {
            claims[claim] =
                serde_json::json!(format!("{claim}-value-of-a-realistic-length-0123456789"));
        }
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
        parts.join(".")
    };
    assert!(oidc.len() > 1200, "{}", oidc.len());
    Mock::given(method("GET"))
        .and(path(
            "/_apis/distributedtask/hubs/Actions/plans/p/jobs/j/idtoken",
        ))
        .and(query_param("api-version", "2.0"))
        .and(query_param("audience", "https://auth.example.com"))
        .and(header("authorization", "bearer request-token-of-the-job"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({"count": 1, "value": oidc})),
        )
        .expect(2)
        .mount(&service)
        .await;
    let (auth, authority) = Authority::start().await;
    authority.accept(&oidc);
    let request_url = format!(
        "{}/_apis/distributedtask/hubs/Actions/plans/p/jobs/j/idtoken?api-version=2.0",
        service.uri()
    );
    let github = GitHubActionsToken::new(
        &request_url,
        ClientSecret::new("request-token-of-the-job"),
        "https://auth.example.com",
    )
    .unwrap();
    let credentials = builder(&auth)
        .client_assertion_provider(github)
        .build()
        .unwrap();
    let token = credentials.access_token().await.unwrap();
    assert_eq!(token.secret(), "tok-federated-1");
    assert_eq!(authority.seen(), [oidc]);
    // The same from the job's environment (these variables are this test's own).
    std::env::set_var("ACTIONS_ID_TOKEN_REQUEST_URL", &request_url);
    std::env::set_var("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "request-token-of-the-job");
    let from_env = builder(&auth)
        .github_actions_assertion("https://auth.example.com")
        .unwrap();
    let shown = format!("{from_env:?}");
    assert!(
        shown.contains("client_assertion: Some(Provider)"),
        "{shown}"
    );
    assert!(!shown.contains("request-token-of-the-job"), "{shown}");
    assert_eq!(
        from_env
            .build()
            .unwrap()
            .access_token()
            .await
            .unwrap()
            .secret(),
        "tok-federated-2"
    );
    std::env::remove_var("ACTIONS_ID_TOKEN_REQUEST_TOKEN");
    let missing = builder(&auth)
        .github_actions_assertion("https://auth.example.com")
        .unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("ACTIONS_ID_TOKEN_REQUEST_TOKEN"),
        "{missing}"
    );
    // A token service that fails: a typed source error, no token request.
    let broken = GitHubActionsToken::new(
        &format!("{}/nowhere?api-version=2.0", service.uri()),
        ClientSecret::new("request-token-of-the-job"),
        "https://auth.example.com",
    )
    .unwrap();
    let failing = builder(&auth)
        .client_assertion_provider(broken)
        .retry_policy(client_credentials::RetryPolicy::default().max_attempts(1))
        .build()
        .unwrap();
    let error = failing.access_token().await.unwrap_err();
    assert!(
        matches!(error, Error::Source(_)) && error.to_string().contains("token source failed"),
        "{error:?}"
    );
    assert_eq!(authority.seen().len(), 2);
}

/// DPoP and the platform's assertion together: the proof on the token request, the token
/// bound, the assertion sent as it is.
#[cfg(feature = "jwt")]
#[tokio::test]
async fn dpop_works_with_a_federated_assertion() {
    let dir = TempDir::new();
    let file = dir.file("oauth-token");
    let assertion = jwt("system:serviceaccount:payments:api", 3600);
    write_atomically(&file, &assertion);
    let (auth, authority) = Authority::start().await;
    authority.accept(&assertion);
    let credentials = builder(&auth)
        .client_assertion_file(&file)
        .dpop()
        .build()
        .unwrap();
    let authorization = credentials
        .request_authorization(&http::Method::GET, "https://api.example.com/v1/members")
        .await
        .unwrap();
    assert_eq!(
        authorization.authorization.to_str().unwrap(),
        "DPoP tok-federated-1",
        "a DPoP-bound token"
    );
    assert!(authorization.dpop.is_some(), "a proof for the API request");
    assert_eq!(authority.seen(), [assertion]);
}

/// `build()` refuses what cannot go with a platform's assertion.
#[test]
fn settings_that_do_not_go_with_a_federated_assertion_are_refused() {
    let dir = TempDir::new();
    let file = dir.file("oauth-token");
    write_atomically(&file, &jwt("system:serviceaccount:a:b", 3600));
    let base = || {
        ClientCredentials::builder()
            .token_url("https://auth.example.com/oauth2/token")
            .client_id(CLIENT_ID)
            .client_assertion_file(&file)
    };
    let cases = [
        (base().client_secret("s"), "set only one of them"),
        (
            base().auth_method(client_credentials::AuthMethod::ClientSecretPost),
            "authenticate with private_key_jwt",
        ),
    ];
    for (builder, expected) in cases {
        let error = builder.build().unwrap_err().to_string();
        assert!(error.contains(expected), "{error}");
    }
    write_atomically(&file, "not a jwt at all");
    let error = base().build().unwrap_err().to_string();
    assert!(error.contains("not a JWT"), "{error}");
    assert!(!error.contains("at all"), "{error}");
    write_atomically(&file, &jwt("system:serviceaccount:a:b", 3600));
    assert!(base()
        .auth_method(client_credentials::AuthMethod::PrivateKeyJwt)
        .build()
        .is_ok());
}

/// Each way the GitHub Actions token service can fail is a source error that says which, and
/// no token request is sent.
#[tokio::test]
async fn each_failure_of_the_github_actions_token_service_is_named() {
    let service = MockServer::start().await;
    Mock::given(path("/no-value"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"count": 0})))
        .mount(&service)
        .await;
    Mock::given(path("/denied"))
        .respond_with(ResponseTemplate::new(403))
        .mount(&service)
        .await;
    let refused_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (auth, authority) = Authority::start().await;
    let cases = [
        (
            format!("{}/no-value?api-version=2.0", service.uri()),
            "request-token",
            "answer has no `value` string",
        ),
        (
            format!("{}/denied?api-version=2.0", service.uri()),
            "request-token",
            "answered HTTP 403",
        ),
        (
            format!("http://127.0.0.1:{refused_port}/x?api-version=2.0"),
            "request-token",
            "could not be reached",
        ),
        (
            format!("{}/no-value?api-version=2.0", service.uri()),
            "bad\nrequest-token",
            "request token is not a header value",
        ),
    ];
    for (url, request_token, expected) in cases {
        let provider = GitHubActionsToken::new(
            &url,
            ClientSecret::new(request_token),
            "https://auth.example.com",
        )
        .unwrap();
        let credentials = builder(&auth)
            .client_assertion_provider(provider)
            .retry_policy(client_credentials::RetryPolicy::default().max_attempts(1))
            .build()
            .unwrap();
        let error = credentials.access_token().await.unwrap_err();
        let cause = std::error::Error::source(&error)
            .map(|c| c.to_string())
            .unwrap_or_default();
        assert!(matches!(error, Error::Source(_)), "{error:?}");
        assert!(cause.contains(expected), "{expected}: {cause}");
        assert!(!cause.contains("request-token"), "{cause}");
    }
    assert!(authority.seen().is_empty(), "no token request");
}
