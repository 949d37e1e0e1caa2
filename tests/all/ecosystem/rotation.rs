//! Issue 17: client secrets that rotate without a restart. A secret file rewritten on disk
//! (renamed into place, as Kubernetes and Vault agent do), a provider of the user's own, and the
//! previous secret of a rotation window, against a token endpoint on loopback that accepts one
//! secret at a time and switches when told, and an API that accepts the tokens it issued.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use client_credentials::{
    BoxFuture, ClientCredentials, ClientSecret, ConfigError, CredentialProvider, Error,
};
use wiremock::matchers::{header_regex, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::support::{failed_requests, write_atomically, ManualClock, TempDir};

const CLIENT_ID: &str = "rotating-client";
/// Tokens live 100 s: used until 40 s before expiry (the 60 s margin, scaled down for short
/// lifetimes), so advancing 200 s always needs a new one.
const LIFETIME: u64 = 100;

/// A token endpoint that accepts one client secret (Basic) at a time and issues a new token per
/// request; every other secret gets `401 invalid_client`. Counts both.
#[derive(Clone)]
struct Authority {
    accepted: Arc<Mutex<String>>,
    issued: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

impl Respond for Authority {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let sent = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|b| String::from_utf8(b).ok());
        let expected = format!("{CLIENT_ID}:{}", self.accepted.lock().unwrap());
        if sent.as_deref() == Some(expected.as_str()) {
            let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
            ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "access_token": format!("tok-rotation-{n}"),
                "token_type": "Bearer",
                "expires_in": LIFETIME,
            }))
        } else {
            self.refused.fetch_add(1, Ordering::SeqCst);
            ResponseTemplate::new(401).set_body_json(serde_json::json!({
                "error": "invalid_client",
                "error_description": "client authentication failed",
            }))
        }
    }
}

impl Authority {
    async fn start(accepted: &str) -> (MockServer, Self) {
        let server = MockServer::start().await;
        let authority = Self {
            accepted: Arc::new(Mutex::new(accepted.to_owned())),
            issued: Arc::default(),
            refused: Arc::default(),
        };
        Mock::given(method("POST"))
            .and(path("/oauth2/token"))
            .respond_with(authority.clone())
            .mount(&server)
            .await;
        (server, authority)
    }

    fn accept(&self, secret: &str) {
        *self.accepted.lock().unwrap() = secret.to_owned();
    }

    /// (tokens issued, requests refused).
    fn counts(&self) -> (usize, usize) {
        (
            self.issued.load(Ordering::SeqCst),
            self.refused.load(Ordering::SeqCst),
        )
    }
}

/// An API that accepts this test's tokens.
async fn api() -> MockServer {
    let api = MockServer::start().await;
    Mock::given(header_regex(
        "authorization",
        "^Bearer tok-rotation-[0-9]+$",
    ))
    .respond_with(ResponseTemplate::new(200))
    .mount(&api)
    .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401))
        .with_priority(10)
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

/// The secret file is rewritten and the authorization server switched to the new secret at the
/// same moment, with a check interval longer than the test: the first token request after it
/// sends the old secret, is refused, reads the file again and is sent once more. One extra token
/// request, no failed API request. Then a rotation noticed by the regular look at the file
/// (interval passed) costs no extra request at all.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_secret_rotated_on_disk_and_at_the_server_costs_one_token_request_and_no_failure() {
    let _clock = ManualClock::hold();
    let dir = TempDir::new();
    let file = dir.file("client-secret");
    write_atomically(&file, "secret-one\n");
    let (auth, authority) = Authority::start("secret-one").await;
    let api = api().await;
    let credentials = builder(&auth)
        .client_secret_file(&file)
        .credential_file_check_interval(Duration::from_secs(3600))
        .build()
        .unwrap();

    assert_eq!(
        failed_requests(&credentials, &format!("{}/v1/accounts", api.uri()), 20).await,
        0
    );
    assert_eq!(authority.counts(), (1, 0));

    write_atomically(&file, "secret-two\n");
    authority.accept("secret-two");
    tokio::time::advance(Duration::from_secs(2 * LIFETIME)).await;
    assert_eq!(
        failed_requests(&credentials, &format!("{}/v1/accounts", api.uri()), 20).await,
        0,
        "no failed request"
    );
    assert_eq!(authority.counts(), (2, 1), "one refused, one more sent");
    let stats = credentials.stats();
    assert_eq!(stats.token_requests, 3);
    assert_eq!(
        (stats.credentials_reloaded, stats.credential_errors),
        (1, 0)
    );

    // Past the check interval, the rotation is read before the token request: none refused.
    tokio::time::advance(Duration::from_secs(3600)).await;
    write_atomically(&file, "secret-three");
    authority.accept("secret-three");
    tokio::time::advance(Duration::from_secs(2 * LIFETIME)).await;
    assert_eq!(
        failed_requests(&credentials, &format!("{}/v1/accounts", api.uri()), 20).await,
        0
    );
    assert_eq!(authority.counts(), (3, 1), "no extra request");
    assert_eq!(credentials.stats().credentials_reloaded, 2);
    crate::support::drop_servers((auth, api)).await;
}

/// The file removed (or emptied, or made writable by everyone) keeps the last good secret:
/// requests go on, the failure is counted; when the file is back, its secret is taken.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_removed_or_broken_file_keeps_the_last_good_secret() {
    let _clock = ManualClock::hold();
    let dir = TempDir::new();
    let file = dir.file("client-secret");
    write_atomically(&file, "secret-one");
    let (auth, authority) = Authority::start("secret-one").await;
    let api = api().await;
    let credentials = builder(&auth).client_secret_file(&file).build().unwrap();
    assert_eq!(
        failed_requests(&credentials, &format!("{}/v1/accounts", api.uri()), 5).await,
        0
    );

    std::fs::remove_file(&file).unwrap();
    tokio::time::advance(Duration::from_secs(2 * LIFETIME)).await;
    assert_eq!(
        failed_requests(&credentials, &format!("{}/v1/accounts", api.uri()), 5).await,
        0,
        "last good secret"
    );
    assert_eq!(credentials.stats().credential_errors, 1);

    write_atomically(&file, "");
    tokio::time::advance(Duration::from_secs(2 * LIFETIME)).await;
    assert_eq!(
        failed_requests(&credentials, &format!("{}/v1/accounts", api.uri()), 5).await,
        0,
        "an empty file is no secret"
    );
    assert_eq!(credentials.stats().credential_errors, 2);
    assert_eq!(authority.counts(), (3, 0), "never an empty secret sent");

    write_atomically(&file, "secret-two");
    authority.accept("secret-two");
    tokio::time::advance(Duration::from_secs(2 * LIFETIME)).await;
    assert_eq!(
        failed_requests(&credentials, &format!("{}/v1/accounts", api.uri()), 5).await,
        0
    );
    assert_eq!(authority.counts(), (4, 0));
    assert_eq!(credentials.stats().credentials_reloaded, 1);
    crate::support::drop_servers((auth, api)).await;
}

/// During a rotation window: the current secret is not yet known to the server, the previous
/// one is. The first fetch costs two token requests, the next ones one (the previous secret is
/// sent first while it works); when the server moves to the current secret, one refusal, and
/// then the current secret again.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_previous_secret_bridges_a_rotation_window() {
    let _clock = ManualClock::hold();
    let (auth, authority) = Authority::start("secret-old").await;
    let api = api().await;
    let credentials = builder(&auth)
        .client_secret("secret-new")
        .previous_client_secret("secret-old")
        .build()
        .unwrap();
    assert_eq!(
        failed_requests(&credentials, &format!("{}/v1/accounts", api.uri()), 10).await,
        0
    );
    assert_eq!(authority.counts(), (1, 1));
    tokio::time::advance(Duration::from_secs(2 * LIFETIME)).await;
    assert_eq!(
        failed_requests(&credentials, &format!("{}/v1/accounts", api.uri()), 10).await,
        0
    );
    assert_eq!(authority.counts(), (2, 1), "the previous secret sent first");

    authority.accept("secret-new");
    tokio::time::advance(Duration::from_secs(2 * LIFETIME)).await;
    assert_eq!(
        failed_requests(&credentials, &format!("{}/v1/accounts", api.uri()), 10).await,
        0
    );
    assert_eq!(authority.counts(), (3, 2));
    tokio::time::advance(Duration::from_secs(2 * LIFETIME)).await;
    assert_eq!(
        failed_requests(&credentials, &format!("{}/v1/accounts", api.uri()), 10).await,
        0
    );
    assert_eq!(
        authority.counts(),
        (4, 2),
        "the current secret sent first again"
    );
    assert_eq!(credentials.stats().token_requests, 6);

    // Neither secret accepted: the refusal reaches the caller, after one more try only.
    authority.accept("secret-unknown");
    tokio::time::advance(Duration::from_secs(2 * LIFETIME)).await;
    let error = credentials.access_token().await.unwrap_err();
    assert_eq!(
        error.oauth_code().map(|c| c.as_str()),
        Some("invalid_client"),
        "{error}"
    );
    assert_eq!(authority.counts(), (4, 4));
    crate::support::drop_servers((auth, api)).await;
}

/// A provider of the user's own: asked for the first token request, not again while the secret
/// works, again after `invalid_client`.
struct Vault {
    secret: Arc<Mutex<String>>,
    calls: Arc<AtomicUsize>,
}

impl CredentialProvider for Vault {
    fn credential(&self) -> BoxFuture<'_, Result<ClientSecret, Error>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let secret = self.secret.lock().unwrap().clone();
        Box::pin(async move { Ok(ClientSecret::new(secret)) })
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_provider_is_asked_again_when_the_server_refuses_its_secret() {
    let _clock = ManualClock::hold();
    let (auth, authority) = Authority::start("secret-one").await;
    let api = api().await;
    let secret = Arc::new(Mutex::new("secret-one".to_owned()));
    let calls = Arc::new(AtomicUsize::new(0));
    let credentials = builder(&auth)
        .client_secret_provider(Vault {
            secret: Arc::clone(&secret),
            calls: Arc::clone(&calls),
        })
        .build()
        .unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "not asked before it is needed"
    );
    assert_eq!(
        failed_requests(&credentials, &format!("{}/v1/accounts", api.uri()), 10).await,
        0
    );
    tokio::time::advance(Duration::from_secs(2 * LIFETIME)).await;
    assert_eq!(
        failed_requests(&credentials, &format!("{}/v1/accounts", api.uri()), 10).await,
        0
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(authority.counts(), (2, 0));

    *secret.lock().unwrap() = "secret-two".to_owned();
    authority.accept("secret-two");
    tokio::time::advance(Duration::from_secs(2 * LIFETIME)).await;
    assert_eq!(
        failed_requests(&credentials, &format!("{}/v1/accounts", api.uri()), 10).await,
        0
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(authority.counts(), (3, 1));
    assert_eq!(credentials.stats().credentials_reloaded, 1);
    crate::support::drop_servers((auth, api)).await;
}

/// A provider that never answers: the load timeout ends each attempt with a typed error (a
/// timeout is transient, so the retry policy's attempts each wait it out), and no token request
/// is sent.
struct Hangs;

impl CredentialProvider for Hangs {
    fn credential(&self) -> BoxFuture<'_, Result<ClientSecret, Error>> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_provider_that_hangs_is_bounded_by_the_load_timeout() {
    let (auth, authority) = Authority::start("secret-one").await;
    let credentials = builder(&auth)
        .client_secret_provider(Hangs)
        .load_timeout(Duration::from_secs(5))
        .retry_policy(client_credentials::RetryPolicy::default().max_attempts(2))
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let error = credentials.access_token().await.unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    let waited = started.elapsed();
    // Two attempts of 5 s, and the backoff between them (at most 1 s after the first).
    assert!(
        (Duration::from_secs(10)..=Duration::from_secs(11)).contains(&waited),
        "{waited:?}"
    );
    assert_eq!(authority.counts(), (0, 0));
}

/// What `build()` refuses: a missing or world-writable file (named, never shown), two ways of
/// giving one secret, a check interval without a file, a previous secret with a method that
/// sends none.
#[test]
fn unusable_secret_settings_are_refused_at_build() {
    let dir = TempDir::new();
    let base = || {
        ClientCredentials::builder()
            .token_url("https://auth.example.com/oauth2/token")
            .client_id(CLIENT_ID)
    };
    let missing = base()
        .client_secret_file(dir.file("absent"))
        .build()
        .unwrap_err();
    assert!(
        matches!(&missing, ConfigError::CredentialFile(m) if m.contains("absent: entity not found")),
        "{missing:?}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let file = dir.file("open-to-all");
        write_atomically(&file, "secret-planted-by-anyone");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let error = base().client_secret_file(&file).build().unwrap_err();
        let text = format!("{error} {error:?}");
        assert!(text.contains("writable by every user"), "{text}");
        assert!(!text.contains("planted"), "{text}");
    }
    let file = dir.file("fine");
    write_atomically(&file, "secret-fine");
    let both = base()
        .client_secret("a")
        .client_secret_file(&file)
        .build()
        .unwrap_err();
    assert!(both.to_string().contains("set one"), "{both}");
    let interval = base()
        .client_secret("a")
        .credential_file_check_interval(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(
        interval.to_string().contains(
            "applies to client_secret_file, client_assertion_file and signing_key_file only"
        ),
        "{interval}"
    );
    let previous = base()
        .auth_method(client_credentials::AuthMethod::TlsClientAuth)
        .http_client(reqwest::Client::builder())
        .previous_client_secret("old")
        .build()
        .unwrap_err();
    assert!(
        previous
            .to_string()
            .contains("previous_client_secret apply to"),
        "{previous}"
    );
    let built = base().client_secret_file(&file).build().unwrap();
    let debug = format!("{built:?}");
    assert!(!debug.contains("secret-fine"), "{debug}");
}
