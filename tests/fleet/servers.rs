//! The servers of the fleet tests: `redis-server` processes this test starts (so it can kill,
//! pause and restart them), and an authorization server and an API in-process on loopback.
//! `CC_FLEET_SERVER=valkey-server` runs the same suite against Valkey (`.ci/run` runs both).

use std::collections::HashSet;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

// ----- redis-server ----------------------------------------------------------------------------

/// A `redis-server` process on a loopback port; killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

/// The server binary the suite runs against: `redis-server`, or what `CC_FLEET_SERVER` names
/// (`valkey-server`).
pub fn server_binary() -> String {
    std::env::var("CC_FLEET_SERVER").unwrap_or_else(|_| "redis-server".into())
}

/// A free loopback port (bound, then released: the server binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl RedisServer {
    /// Starts a server, or says why it cannot: under `CI` that fails the test, elsewhere the
    /// test is skipped (`None`).
    pub fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    /// A server on `port`.
    pub fn start_on(port: u16) -> Option<Self> {
        Self::start_at(port, &[])
    }

    /// A server with extra `redis-server` arguments (`--cluster-enabled`, TLS).
    pub fn start_with(extra: &[&str]) -> Option<Self> {
        Self::start_at(free_port(), extra)
    }

    fn start_at(port: u16, extra: &[&str]) -> Option<Self> {
        let dir = std::env::temp_dir().join(format!(
            "cc-fleet-redis-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut server = Self {
            child: None,
            port,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        match server.spawn() {
            Ok(()) => Some(server),
            Err(why) => {
                if std::env::var_os("CI").is_some() {
                    panic!("{} is required under CI: {why}", server_binary());
                }
                eprintln!(
                    "SKIPPED: {why} (install {}; under CI this fails)",
                    server_binary()
                );
                None
            }
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let mut args = vec![
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ];
        // `{port}` in an extra argument is the server's port (for `--tls-port`).
        let extra: Vec<String> = self
            .extra
            .iter()
            .map(|a| a.replace("{port}", &port))
            .collect();
        args.extend(extra.iter().map(String::as_str));
        let binary = server_binary();
        let mut child = Command::new(&binary)
            .args(&args)
            .current_dir(&self.dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("`{binary}` could not be started: {e}"))?;
        // Wait for "Ready to accept connections" (or the process's end).
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut ready = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !ready && line.contains("Ready to accept connections") {
                    ready = true;
                    let _ = tx.send(());
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(()) => {
                self.child = Some(child);
                Ok(())
            }
            Err(_) => {
                let _ = child.kill();
                Err(format!("{binary} did not become ready in 10 s"))
            }
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .expect("kill");
            assert!(status.success(), "kill {signal}");
        }
    }

    /// SIGKILL: gone at once, nothing saved.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (empty: it saves nothing).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("restart: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// SIGSTOP: the process stops answering but keeps its connections open.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// A command through `redis-cli` (for setting up and inspecting).
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// A raw client, to inspect and tamper with what is stored.
    pub fn raw(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("a raw connection")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.resume();
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ----- the authorization server and the API ---------------------------------------------------

/// An authorization server that issues a new token per request (counted), and an API that
/// accepts the tokens it issued until they are revoked, answering with the token it saw.
pub struct Servers {
    pub token_url: String,
    pub api_url: String,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    token_requests: AtomicUsize,
    lifetime_secs: AtomicU64,
    delay_ms: AtomicU64,
    issued: Mutex<Vec<String>>,
    revoked: Mutex<HashSet<String>>,
    reject_all: std::sync::atomic::AtomicBool,
    api_requests: AtomicUsize,
    api_401: AtomicUsize,
}

impl Servers {
    /// Tokens of `lifetime`, issued after `delay`.
    pub async fn start(lifetime: Duration, delay: Duration) -> Self {
        let state = Arc::new(State::default());
        state
            .lifetime_secs
            .store(lifetime.as_secs(), Ordering::SeqCst);
        state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
        let auth = serve(Arc::clone(&state), token_endpoint).await;
        let api = serve(Arc::clone(&state), protected_api).await;
        Self {
            token_url: format!("http://{auth}/token"),
            api_url: format!("http://{api}/v1/accounts"),
            state,
        }
    }

    pub fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    pub fn issued(&self) -> Vec<String> {
        self.state.issued.lock().unwrap().clone()
    }

    pub fn api_requests(&self) -> usize {
        self.state.api_requests.load(Ordering::SeqCst)
    }

    pub fn api_401s(&self) -> usize {
        self.state.api_401.load(Ordering::SeqCst)
    }

    /// Revokes every token issued so far.
    pub fn revoke_all(&self) {
        let issued = self.issued();
        self.state.revoked.lock().unwrap().extend(issued);
    }

    /// From now on the API rejects every token.
    pub fn reject_all(&self) {
        self.state.reject_all.store(true, Ordering::SeqCst);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

async fn serve(
    state: Arc<State>,
    handler: fn(Arc<State>, Request<hyper::body::Incoming>) -> Handler,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let state = Arc::clone(&state);
                    async move { Ok::<_, Infallible>(handler(state, req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

type Handler = std::pin::Pin<Box<dyn std::future::Future<Output = Response<Full<Bytes>>> + Send>>;

fn token_endpoint(state: Arc<State>, req: Request<hyper::body::Incoming>) -> Handler {
    Box::pin(async move {
        let _ = req.into_body().collect().await;
        let n = state.token_requests.fetch_add(1, Ordering::SeqCst) + 1;
        let delay = state.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let token = format!("fleet-token-{n}-{:016x}", fastrand::u64(..));
        state.issued.lock().unwrap().push(token.clone());
        let body = serde_json::json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": state.lifetime_secs.load(Ordering::SeqCst),
        });
        Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("response")
    })
}

fn protected_api(state: Arc<State>, req: Request<hyper::body::Incoming>) -> Handler {
    Box::pin(async move {
        state.api_requests.fetch_add(1, Ordering::SeqCst);
        let token = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let valid = token.as_ref().is_some_and(|t| {
            !state.reject_all.load(Ordering::SeqCst)
                && state.issued.lock().unwrap().contains(t)
                && !state.revoked.lock().unwrap().contains(t)
        });
        if let (true, Some(token)) = (valid, token) {
            return Response::new(Full::new(Bytes::from(token)));
        }
        state.api_401.fetch_add(1, Ordering::SeqCst);
        Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(
                "www-authenticate",
                r#"Bearer error="invalid_token", error_description="revoked""#,
            )
            .body(Full::new(Bytes::new()))
            .expect("response")
    })
}
