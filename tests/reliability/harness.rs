//! Helpers of the reliability tests: driving tokio's paused clock, a raw HTTP/1.1 server for
//! answers wiremock cannot give (endless chunked bodies, dropped connections, concurrency
//! counts), backoff arithmetic, and the lock that lets the soak test run alone.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wiremock::MockServer;

// ----- running alone ---------------------------------------------------------------------------

/// The soak test measures the live heap of the whole process, so it runs alone: it takes this
/// lock for writing, every other test of this binary for reading. (A tokio lock: tests hold it
/// across awaits.)
static SERIAL: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Taken by every async test but the soak test.
pub async fn shared() -> tokio::sync::RwLockReadGuard<'static, ()> {
    SERIAL.read().await
}

/// Taken by the synchronous tests.
pub fn shared_blocking() -> tokio::sync::RwLockReadGuard<'static, ()> {
    SERIAL.blocking_read()
}

/// Taken by the soak test.
pub async fn exclusive() -> tokio::sync::RwLockWriteGuard<'static, ()> {
    SERIAL.write().await
}

// ----- the paused clock ------------------------------------------------------------------------

/// Lets spawned tasks and loopback IO run without moving the (held) paused clock.
pub async fn settle() {
    for _ in 0..3 {
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(1));
    }
    tokio::task::yield_now().await;
}

/// Moves the paused clock forward by `total` in `step`s, settling after each step.
pub async fn advance_in_steps(total: Duration, step: Duration) {
    let mut done = Duration::ZERO;
    while done < total {
        let d = step.min(total - done);
        tokio::time::advance(d).await;
        settle().await;
        done += d;
    }
}

/// How many requests `server` has received (it must record them).
pub async fn hits(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .expect("request recording is on")
        .len()
}

/// Advances the paused clock in `step`s until `server` has received `n` requests, and returns
/// the simulated time that took (an upper bound of when the `n`-th request was sent). Panics
/// past `limit`.
pub async fn advance_until_hits(
    server: &MockServer,
    n: usize,
    step: Duration,
    limit: Duration,
) -> Duration {
    let mut waited = Duration::ZERO;
    loop {
        // Real loopback IO: give the request a few chances to arrive before moving the clock.
        for _ in 0..5 {
            if hits(server).await >= n {
                return waited;
            }
            settle().await;
        }
        assert!(
            waited < limit,
            "request {n} not sent within {limit:?} of simulated time"
        );
        tokio::time::advance(step).await;
        waited += step;
    }
}

// ----- backoff arithmetic ----------------------------------------------------------------------

/// The retry settings a test configures, mirrored so the test can compute its bounds from
/// them (`RetryPolicy`'s fields are private). The ceiling of the `n`-th backoff is
/// `initial * 2^(n-1)` capped at `max`; a jittered delay lies in `[ceiling/2, ceiling]`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn policy(&self) -> client_credentials::RetryPolicy {
        client_credentials::RetryPolicy::default()
            .max_attempts(self.max_attempts)
            .initial_backoff(self.initial)
            .max_backoff(self.max)
            .max_elapsed(Duration::from_secs(3600))
    }

    pub fn ceiling(&self, n: u32) -> Duration {
        self.initial
            .saturating_mul(2u32.saturating_pow(n.saturating_sub(1).min(20)))
            .min(self.max)
    }

    /// The shortest a fetch can last between its first attempt and its failure: the jitter's
    /// lower bound of each delay between attempts (the attempts themselves may take no time).
    pub fn shortest_fetch(&self) -> Duration {
        (1..self.max_attempts).map(|n| self.ceiling(n) / 2).sum()
    }

    /// The most fetches that can *start* within `window` when every fetch fails: fetch `k + 1`
    /// starts no earlier than the shortest fetch `k` plus the shortest cooldown after `k`
    /// consecutive failures (`ceiling(k) / 2`).
    pub fn max_failed_fetches_within(&self, window: Duration) -> u32 {
        let mut start = Duration::ZERO;
        let mut fetches = 0;
        while start <= window {
            fetches += 1;
            start += self.shortest_fetch() + self.ceiling(fetches) / 2;
        }
        fetches
    }
}

// ----- a raw HTTP/1.1 server -------------------------------------------------------------------

/// A bare HTTP/1.1 server on 127.0.0.1, on its own thread and runtime (so real time, whatever
/// the test's clock). It reads one request per connection (head and `Content-Length` body) and
/// hands the connection to the handler, which writes whatever it likes.
pub struct RawServer {
    pub addr: SocketAddr,
    /// Requests read.
    pub hits: Arc<AtomicUsize>,
    /// The most handlers running at once.
    pub max_in_flight: Arc<AtomicUsize>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl RawServer {
    pub fn start<H, Fut>(handler: H) -> Self
    where
        H: Fn(Vec<u8>, TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let handler = Arc::new(handler);
        let (h, f, m) = (hits.clone(), in_flight, max_in_flight.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let (mut stream, _) = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok(conn) => conn,
                            Err(_) => continue,
                        },
                        _ = &mut stopped => return,
                    };
                    let (handler, h, f, m) = (handler.clone(), h.clone(), f.clone(), m.clone());
                    tokio::spawn(async move {
                        let Some(request) = read_request(&mut stream).await else {
                            return;
                        };
                        h.fetch_add(1, Ordering::SeqCst);
                        let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                        m.fetch_max(now, Ordering::SeqCst);
                        handler(request, stream).await;
                        f.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            });
        });
        Self {
            addr,
            hits,
            max_in_flight,
            _stop: stop,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Reads a request head and its `Content-Length` body; `None` if the peer went away first.
async fn read_request(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(buf);
        }
    }
}

/// A complete response with `Connection: close`.
pub fn raw_response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Writes `response` and closes the connection.
pub async fn reply(mut stream: TcpStream, response: &[u8]) {
    let _ = stream.write_all(response).await;
    let _ = stream.shutdown().await;
}

/// A loopback port nobody listens on (bound, then released).
pub fn refused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
