//! Helpers of the wire tests: awkward credentials, form decoding, a form-body matcher, a raw
//! chunked-encoding server and a refused port.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::{Match, MockServer, Request};

/// A client id with every character RFC 6749 §2.3.1 encoding changes: `:` `+` `/` `%` space.
pub const ODD_ID: &str = "client:id+with/odd%chars here";
/// A client secret with the same characters.
pub const ODD_SECRET: &str = "se:cr+et/with%odd chars-never-leak";
/// `ODD_ID` as `application/x-www-form-urlencoded` writes it, encoded by hand.
pub const ODD_ID_FORM: &str = "client%3Aid%2Bwith%2Fodd%25chars+here";
/// `ODD_SECRET` as `application/x-www-form-urlencoded` writes it, encoded by hand.
pub const ODD_SECRET_FORM: &str = "se%3Acr%2Bet%2Fwith%25odd+chars-never-leak";

/// Every token value the tests serve starts with this, so one substring check covers them all.
pub const TOKEN_PREFIX: &str = "tok-leak-";

/// `<server>/oauth2/token`.
pub fn token_url(server: &MockServer) -> String {
    format!("{}/oauth2/token", server.uri())
}

/// The base64 of `id:secret`, as a Basic header carries it.
pub fn base64_pair(id: &str, secret: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
}

/// The decoded pairs of a form body, sorted (the order of form fields carries no meaning).
pub fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    pairs.sort();
    pairs
}

/// Owned, sorted pairs from string slices.
pub fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = list
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    v.sort();
    v
}

/// The one request `server` received (panics if it received another number).
pub async fn only_request(server: &MockServer) -> Request {
    let mut requests = server
        .received_requests()
        .await
        .expect("request recording is on");
    assert_eq!(
        requests.len(),
        1,
        "expected exactly one request, got {}",
        requests.len()
    );
    requests.remove(0)
}

/// How many requests `server` received.
pub async fn hits(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .expect("request recording is on")
        .len()
}

/// Matches a request whose decoded form body holds exactly these pairs (in any order).
pub struct FormBody(Vec<(String, String)>);

impl FormBody {
    pub fn exactly(list: &[(&str, &str)]) -> Self {
        Self(pairs(list))
    }
}

impl Match for FormBody {
    fn matches(&self, request: &Request) -> bool {
        form_pairs(&request.body) == self.0
    }
}

/// Asserts `text` contains none of `forbidden`.
pub fn assert_hides(text: &str, forbidden: &[&str], what: &str) {
    for needle in forbidden {
        assert!(!text.contains(needle), "{what} leaks {needle:?}:\n{text}");
    }
}

/// The Display, Debug (both forms) and whole `source()` chain of an error, for leak checks.
pub fn everything_printed(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = format!("{error}\n{error:?}\n{error:#?}\n");
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(&format!("{cause}\n{cause:?}\n"));
        source = cause.source();
    }
    out
}

/// A URL on 127.0.0.1 where nothing listens: a port taken from a listener that was then closed.
pub fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}/oauth2/token")
}

/// A token endpoint on a raw TCP listener that answers every request with `body` sent with
/// `Transfer-Encoding: chunked` (no `Content-Length`), in chunks of `chunk` bytes.
pub struct ChunkedServer {
    pub url: String,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ChunkedServer {
    pub async fn start(body: String, chunk: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&hits);
        let body = Arc::new(body.into_bytes());
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let body = Arc::clone(&body);
                let counted = Arc::clone(&counted);
                tokio::spawn(async move { serve_chunked(socket, &body, chunk, &counted).await });
            }
        });
        Self {
            url: format!("http://127.0.0.1:{port}/oauth2/token"),
            hits,
            task,
        }
    }

    /// Requests received (whole request read), so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for ChunkedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request (counted once read whole, before answering), answers it chunked. Write
/// errors are ignored: a client that stops reading at its limit closes the connection.
async fn serve_chunked(
    mut socket: tokio::net::TcpStream,
    body: &[u8],
    chunk: usize,
    hits: &AtomicUsize,
) {
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    let header_end = loop {
        if let Some(pos) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&request[..header_end]).to_ascii_lowercase();
    let content_length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while request.len() < header_end + content_length {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    if socket.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    for part in body.chunks(chunk) {
        let mut frame = format!("{:x}\r\n", part.len()).into_bytes();
        frame.extend_from_slice(part);
        frame.extend_from_slice(b"\r\n");
        if socket.write_all(&frame).await.is_err() {
            return;
        }
        let _ = socket.flush().await;
    }
    let _ = socket.write_all(b"0\r\n\r\n").await;
    let _ = socket.shutdown().await;
}

/// A valid token answer padded with an unknown field to at least `size` bytes.
pub fn padded_token_body(token: &str, size: usize) -> String {
    let base =
        serde_json::json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600});
    let mut value = base;
    let padding = "x".repeat(size);
    value["padding"] = serde_json::Value::String(padding);
    value.to_string()
}
