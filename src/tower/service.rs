//! [`ClientCredentialsService`].

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::replay::{CloneBody, ReplayPolicy};
use super::{ClientCredentialsLayer, ResponseBody, ResponseFuture};
use crate::decide::{Exchange, RequestOptions, Target};
use crate::error::BoxError;
use crate::ClientCredentials;

/// The service made by [`ClientCredentialsLayer`]; see there.
///
/// # Bounds
///
/// Only what the behaviour needs:
///
/// - `S: Service<Request<ReqBody>, Response = Response<ResBody>>`, any request body and any
///   response body;
/// - `S: Clone`: the response future owns the service it calls, so it can call it a second
///   time for a replay (as tower's `Retry` does); `call` keeps the clone that was made ready
///   for it, as tower's docs advise;
/// - `S::Error: Into<BoxError>`: the service's error is a [`BoxError`], the inner error or the
///   [`Error`](crate::Error) that kept the request from being sent;
/// - `ResBody::Data: Into<Bytes>`: the body is [`ResponseBody`], which plays back the bytes of
///   an inspected 401 as `Bytes`;
/// - `R: ReplayPolicy<ReqBody>`: the policy that copies requests for a replay
///   ([`CloneBody`] needs `ReqBody: Clone`; [`NoReplay`](super::NoReplay) needs nothing).
///
/// No `Send` and no `'static`: the future is `Send` when the inner service, its future and the
/// bodies are.
#[derive(Debug, Clone)]
pub struct ClientCredentialsService<S, R = CloneBody> {
    inner: S,
    credentials: ClientCredentials,
    replay: R,
}

impl<S> ClientCredentialsService<S> {
    /// Wraps `inner`, replaying `Clone` bodies.
    pub fn new(inner: S, credentials: ClientCredentials) -> Self {
        Self::from_parts(inner, credentials, CloneBody)
    }

    /// A layer that makes this service.
    pub fn layer(credentials: ClientCredentials) -> ClientCredentialsLayer {
        ClientCredentialsLayer::new(credentials)
    }
}

impl<S, R> ClientCredentialsService<S, R> {
    pub(crate) fn from_parts(inner: S, credentials: ClientCredentials, replay: R) -> Self {
        Self {
            inner,
            credentials,
            replay,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, R, ReqBody, ResBody> Service<Request<ReqBody>> for ClientCredentialsService<S, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    R: ReplayPolicy<ReqBody>,
    ResBody: Body,
    ResBody::Data: Into<Bytes>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, ReqBody, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The clone is not necessarily ready: keep the one that was polled ready for this call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let exchange = Exchange::begin(
            self.credentials.clone(),
            Target::uri(request.uri()),
            request.headers(),
            request.extensions().get::<RequestOptions>(),
        );
        let Some(exchange) = exchange else {
            return ResponseFuture::untouched(inner, request);
        };
        let copy = if exchange.wants_copy() {
            self.replay.replay(&request)
        } else {
            None
        };
        ResponseFuture::authorized(inner, exchange, request, copy)
    }
}
