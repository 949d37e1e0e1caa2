//! [`ClientCredentialsLayer`].

use tower_layer::Layer;

use super::replay::{CloneBody, NoReplay};
use super::ClientCredentialsService;
use crate::ClientCredentials;

/// A [`tower_layer::Layer`] that puts a token on every request of the service it wraps, and
/// replays it once after the API rejected its token.
///
/// It follows the same rules as the reqwest middleware (see
/// [`ClientCredentialsMiddleware`](crate::ClientCredentialsMiddleware)): both adapters drive
/// the same decisions. Whether a request can be sent a second time is the
/// [`ReplayPolicy`](super::ReplayPolicy)'s call: by default ([`CloneBody`]) requests whose body
/// type is `Clone` are replayed; [`without_replay`](Self::without_replay) makes a layer for any
/// body (a `tonic` channel, a streaming `hyper` body) that never replays.
///
/// The service's error is a [`BoxError`](crate::BoxError): the inner service's error, or the
/// [`Error`](crate::Error) that kept the request from being sent. Its response body is a
/// [`ResponseBody`](super::ResponseBody), which is the inner body unchanged. Its future is a
/// named state machine, [`ResponseFuture`](super::ResponseFuture), that allocates nothing of
/// its own on a cache hit; [`ClientCredentialsService`] lists the bounds and why each is there.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use client_credentials::ClientCredentials;
/// use http_body_util::Full;
/// use hyper_util::client::legacy::Client;
/// use hyper_util::rt::TokioExecutor;
/// use tower::ServiceBuilder;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let credentials = ClientCredentials::builder().token_url("https://auth.example/token")
/// #     .client_id("id").client_secret("secret").build()?;
/// let hyper_client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
/// let service = ServiceBuilder::new()
///     .layer(credentials.layer())
///     .service(hyper_client);
/// # let _ = service;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ClientCredentialsLayer<R = CloneBody> {
    credentials: ClientCredentials,
    replay: R,
}

impl ClientCredentialsLayer {
    /// A layer using these credentials' cache, replaying `Clone` bodies.
    pub fn new(credentials: ClientCredentials) -> Self {
        Self {
            credentials,
            replay: CloneBody,
        }
    }
}

impl<R> ClientCredentialsLayer<R> {
    /// The same layer, never replaying a request (any body type).
    pub fn without_replay(self) -> ClientCredentialsLayer<NoReplay> {
        self.replay_policy(NoReplay)
    }

    /// The same layer with another [`ReplayPolicy`](super::ReplayPolicy).
    pub fn replay_policy<P>(self, replay: P) -> ClientCredentialsLayer<P> {
        ClientCredentialsLayer {
            credentials: self.credentials,
            replay,
        }
    }
}

impl<S, R: Clone> Layer<S> for ClientCredentialsLayer<R> {
    type Service = ClientCredentialsService<S, R>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientCredentialsService::from_parts(inner, self.credentials.clone(), self.replay.clone())
    }
}

impl ClientCredentials {
    /// The `tower` adapter, sharing this cache.
    #[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
    pub fn layer(&self) -> ClientCredentialsLayer {
        ClientCredentialsLayer::new(self.clone())
    }
}
