//! The two ways a request reaches the API in these tests: through the reqwest middleware, or
//! through the tower layer in front of a `hyper_util` client. Each 401 scenario is written once
//! and runs through every adapter in [`Adapter::all`].

use bytes::Bytes;
use client_credentials::{ClientCredentials, RequestOptions};
use futures_util::stream::{self, Iter};
use http::{HeaderMap, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use reqwest_middleware::ClientWithMiddleware;
use url::Url;
use wiremock::MockServer;

use super::cases::{API_PATH, PAYMENT, REQUEST_ID, REQUEST_ID_VALUE};
use crate::support::client;

/// The body [`Adapter::send_non_replayable`] streams, as the API receives it.
pub const STREAMED: &[u8] = br#"{"amount":"12.50"}"#;

/// An adapter of the crate, and the HTTP client behind it.
#[derive(Debug, Clone, Copy)]
pub enum Adapter {
    /// `ClientCredentials::middleware` in a `reqwest_middleware` client.
    Reqwest,
    /// `ClientCredentials::layer` in front of a `hyper_util` client.
    #[cfg(feature = "tower")]
    Tower,
}

impl Adapter {
    /// Every adapter the enabled features build.
    pub fn all() -> &'static [Adapter] {
        &[
            Adapter::Reqwest,
            #[cfg(feature = "tower")]
            Adapter::Tower,
        ]
    }

    /// The client (reqwest) or service stack (tower) that authorizes with `credentials`.
    pub fn stack(self, credentials: &ClientCredentials) -> Stack {
        match self {
            Adapter::Reqwest => Stack::Reqwest(client(credentials)),
            #[cfg(feature = "tower")]
            Adapter::Tower => Stack::Tower(Box::new(tower_stack::replayable(credentials))),
        }
    }

    /// Sends `payment` through a new [`Adapter::stack`] for `credentials`.
    pub async fn send(self, credentials: &ClientCredentials, payment: Payment) -> Answer {
        self.stack(credentials).send(payment).await
    }

    /// POSTs [`STREAMED`] to the API as a stream, a body the adapter cannot replay: for reqwest
    /// a `Body::wrap`ped stream (the request's `try_clone` gives `None`, which this asserts),
    /// for tower a layer `without_replay` over a client of boxed bodies.
    pub async fn send_non_replayable(
        self,
        credentials: &ClientCredentials,
        api: &MockServer,
    ) -> Answer {
        match self {
            Adapter::Reqwest => {
                let client = client(credentials);
                let request = client
                    .post(api_url(api))
                    .body(reqwest::Body::wrap(streaming_body()))
                    .build()
                    .unwrap();
                assert!(
                    request.try_clone().is_none(),
                    "{self:?}: the body must not be replayable"
                );
                Answer::from_reqwest(client.execute(request).await.unwrap()).await
            }
            #[cfg(feature = "tower")]
            Adapter::Tower => tower_stack::send_non_replayable(credentials, api).await,
        }
    }
}

/// What [`Adapter::stack`] builds; clones share one connection pool, as the clients do.
#[derive(Clone)]
pub enum Stack {
    Reqwest(ClientWithMiddleware),
    #[cfg(feature = "tower")]
    Tower(Box<tower_stack::Replayable>),
}

impl Stack {
    /// Sends `payment` and collects the answer.
    pub async fn send(&self, payment: Payment) -> Answer {
        match self {
            Stack::Reqwest(client) => {
                let mut request = client
                    .post(&payment.url)
                    .header("content-type", "application/json")
                    .body(PAYMENT);
                if let Some(own) = payment.authorization {
                    request = request.header("authorization", own);
                }
                if let Some(options) = payment.options {
                    request = request.with_extension(options);
                }
                Answer::from_reqwest(request.send().await.unwrap()).await
            }
            #[cfg(feature = "tower")]
            Stack::Tower(service) => tower_stack::send(service.as_ref().clone(), payment).await,
        }
    }
}

/// The scenarios' request: a POST of the [`PAYMENT`] JSON (a replayable body) to the API, with
/// what a scenario adds to it.
#[derive(Debug, Clone)]
pub struct Payment {
    url: String,
    authorization: Option<&'static str>,
    options: Option<RequestOptions>,
}

impl Payment {
    /// The payment POST to `api`'s [`API_PATH`].
    pub fn to(api: &MockServer) -> Self {
        Self {
            url: api_url(api),
            authorization: None,
            options: None,
        }
    }

    /// With the caller's own `Authorization` header.
    pub fn authorization(mut self, value: &'static str) -> Self {
        self.authorization = Some(value);
        self
    }

    /// With per-request options (a request extension for tower, a middleware extension for
    /// reqwest).
    pub fn options(mut self, options: RequestOptions) -> Self {
        self.options = Some(options);
        self
    }
}

/// What the caller got, whichever the adapter.
#[derive(Debug)]
pub struct Answer {
    pub adapter: Adapter,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// `reqwest::Response::url`; tower's `http::Response` has no URL.
    pub url: Option<Url>,
}

impl Answer {
    async fn from_reqwest(response: reqwest::Response) -> Self {
        let (status, headers) = (response.status(), response.headers().clone());
        let url = Some(response.url().clone());
        Self {
            adapter: Adapter::Reqwest,
            status,
            headers,
            body: response.bytes().await.unwrap(),
            url,
        }
    }

    /// Asserts the API's answer reached the caller as it was sent: status, the
    /// [`REQUEST_ID`] header, the body bytes and, for reqwest, the URL.
    pub fn assert_intact(&self, status: u16, api: &MockServer, body: &[u8], case: &str) {
        let adapter = self.adapter;
        assert_eq!(self.status, status, "{adapter:?}, {case}");
        assert_eq!(
            self.headers[REQUEST_ID], REQUEST_ID_VALUE,
            "{adapter:?}, {case}"
        );
        match adapter {
            Adapter::Reqwest => assert_eq!(
                self.url.as_ref().map(Url::as_str),
                Some(api_url(api).as_str()),
                "{adapter:?}, {case}"
            ),
            #[cfg(feature = "tower")]
            Adapter::Tower => {}
        }
        assert_eq!(&self.body[..], body, "{adapter:?}, {case}");
    }
}

pub fn api_url(api: &MockServer) -> String {
    format!("{}{API_PATH}", api.uri())
}

type Frames = Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>;

/// [`STREAMED`] in two frames: a body that is a stream, not bytes in memory.
fn streaming_body() -> StreamBody<Frames> {
    let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = ["{\"amount\":", "\"12.50\"}"]
        .into_iter()
        .map(|chunk| Ok(Frame::data(Bytes::from_static(chunk.as_bytes()))))
        .collect();
    StreamBody::new(stream::iter(frames))
}

/// The tower side: the layer in front of a plain `hyper_util` client.
#[cfg(feature = "tower")]
mod tower_stack {
    use bytes::Bytes;
    use client_credentials::tower::{ClientCredentialsService, ResponseBody};
    use client_credentials::{BoxError, ClientCredentials};
    use http::{Request, Response};
    use http_body_util::combinators::BoxBody;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tower::{Service, ServiceBuilder, ServiceExt};
    use wiremock::MockServer;

    use super::{api_url, streaming_body, Adapter, Answer, Payment, PAYMENT};

    type Hyper<B> = Client<HttpConnector, B>;

    /// The layer over a client of `Full` (so `Clone`, replayable) bodies.
    pub type Replayable = ClientCredentialsService<Hyper<Full<Bytes>>>;

    type Streaming = BoxBody<Bytes, std::io::Error>;

    pub fn replayable(credentials: &ClientCredentials) -> Replayable {
        ServiceBuilder::new()
            .layer(credentials.layer())
            .service(Client::builder(TokioExecutor::new()).build_http())
    }

    pub async fn send(service: Replayable, payment: Payment) -> Answer {
        let mut request = Request::post(payment.url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(PAYMENT.as_bytes())))
            .unwrap();
        if let Some(own) = payment.authorization {
            request
                .headers_mut()
                .insert("authorization", own.parse().unwrap());
        }
        if let Some(options) = payment.options {
            request.extensions_mut().insert(options);
        }
        collect(service, request).await
    }

    pub async fn send_non_replayable(credentials: &ClientCredentials, api: &MockServer) -> Answer {
        let service = ServiceBuilder::new()
            .layer(credentials.layer().without_replay())
            .service(Client::builder(TokioExecutor::new()).build_http::<Streaming>());
        let request = Request::post(api_url(api))
            .body(streaming_body().boxed())
            .unwrap();
        collect(service, request).await
    }

    /// Sends `request` through `service` and collects the answer.
    async fn collect<S, B>(service: S, request: Request<B>) -> Answer
    where
        S: Service<Request<B>, Response = Response<ResponseBody<Incoming>>, Error = BoxError>,
    {
        let (parts, body) = service.oneshot(request).await.unwrap().into_parts();
        Answer {
            adapter: Adapter::Tower,
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
            url: None,
        }
    }
}
