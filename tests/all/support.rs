//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use client_credentials::{ClientCredentials, ClientCredentialsBuilder};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

pub const CLIENT_ID: &str = "test-client";
pub const CLIENT_SECRET: &str = "s3cr3t-value-that-must-never-leak";

/// A builder pointed at `server`'s `/oauth2/token`, with the test credentials.
pub fn builder(server: &MockServer) -> ClientCredentialsBuilder {
    ClientCredentials::builder()
        .token_url(format!("{}/oauth2/token", server.uri()))
        .client_id(CLIENT_ID)
        .client_secret(CLIENT_SECRET)
}

/// A Cognito-shaped success body.
pub fn token_body(token: &str, expires_in: u64) -> serde_json::Value {
    serde_json::json!({"access_token": token, "expires_in": expires_in, "token_type": "Bearer"})
}

/// Mounts a token endpoint answering `token` with `expires_in`.
pub async fn mount_token(server: &MockServer, token: &str, expires_in: u64) {
    Mock::given(method("POST"))
        .and(path("/oauth2/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(token_body(token, expires_in)))
        .mount(server)
        .await;
}

/// A reqwest-middleware client with the credentials' middleware.
pub fn client(credentials: &ClientCredentials) -> reqwest_middleware::ClientWithMiddleware {
    reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(credentials.middleware())
        .build()
}

/// Keeps tokio's paused clock from auto-advancing while it lives.
///
/// With a paused clock, tokio jumps to the next timer whenever the runtime would otherwise
/// wait, including while it waits for real loopback IO, which would fire token timers at
/// random. A pending `spawn_blocking` task inhibits that on a current-thread runtime, so tests
/// hold one and move time only with `tokio::time::advance`.
pub struct ManualClock {
    stop: Option<std::sync::mpsc::Sender<()>>,
}

impl ManualClock {
    /// Pauses the clock (if not yet paused) and stops auto-advance. Current-thread runtime only.
    pub fn hold() -> Self {
        if tokio::time::Instant::now().elapsed() == Duration::ZERO {
            // Already paused (start_paused): nothing to do.
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        tokio::task::spawn_blocking(move || {
            let _ = rx.recv();
        });
        Self { stop: Some(tx) }
    }
}

impl Drop for ManualClock {
    fn drop(&mut self) {
        self.stop.take();
    }
}

/// Polls `check` (yielding to the runtime and letting loopback IO happen in between) until it
/// returns true; panics after 5 s of real time. For background work under a held paused clock.
pub async fn eventually<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if check().await {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "condition not reached within 5 s"
        );
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Drops wiremock servers with a fresh cooperative budget.
///
/// A `MockServer` checks its expectations in `Drop` by blocking (with `futures`' executor) on a
/// tokio `RwLock`. Tokio's sync primitives take part in its cooperative scheduling: in a task
/// whose budget is spent (a long run of awaits that were all ready, such as a thousand
/// `join_next` calls on finished tasks), the lock answers "not yet" and wakes the caller, and
/// since the blocked task never yields back to tokio, the budget never refills and the drop
/// spins forever. Yielding once first refills it.
#[allow(dead_code)] // not every binary that includes this module uses it
pub async fn drop_servers<T>(servers: T) {
    tokio::task::yield_now().await;
    drop(servers);
}

/// `n` concurrent GET requests to `url` through the middleware; returns how many failed (an
/// error, or a status other than 200).
pub async fn failed_requests(credentials: &ClientCredentials, url: &str, n: usize) -> usize {
    let client = client(credentials);
    futures_util::future::join_all((0..n).map(|_| client.get(url).send()))
        .await
        .into_iter()
        .filter(|r| !matches!(r, Ok(response) if response.status() == 200))
        .count()
}

/// A directory of files for one test (credential files), removed when dropped.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "cc-it-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn file(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes beside and renames into place: atomic, as Kubernetes, the kubelet and Vault agent
/// write.
pub fn write_atomically(path: &std::path::Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}
