//! [`ClientCredentialsService`].

use std::future::poll_fn;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tower_service::Service;

use super::replay::{CloneBody, ReplayPolicy};
use super::{ClientCredentialsLayer, ResponseFuture};
use crate::auth::{classify_by_body, RequestOptions};
use crate::body::{is_grpc_unauthenticated, GrpcWatch, ResponseBody};
use crate::challenge::classify_headers;
use crate::error::BoxError;
use crate::ClientCredentials;

/// The service made by [`ClientCredentialsLayer`]; see there.
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
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    R: ReplayPolicy<ReqBody>,
    ReqBody: Send + 'static,
    ResBody: http_body::Body + Send + 'static,
    ResBody::Data: Into<Bytes> + Send,
    ResBody::Error: Send,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The clone is not necessarily ready: keep the one that was polled ready for this call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(authorize_and_call(
            inner,
            self.credentials.clone(),
            self.replay.clone(),
            req,
        ))
    }
}

async fn authorize_and_call<S, R, ReqBody, ResBody>(
    mut inner: S,
    credentials: ClientCredentials,
    replay_policy: R,
    mut req: Request<ReqBody>,
) -> Result<Response<ResponseBody<ResBody>>, BoxError>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    R: ReplayPolicy<ReqBody>,
    ResBody: http_body::Body,
    ResBody::Data: Into<Bytes>,
{
    let uri = req.uri();
    let plan = credentials.plan(
        uri.scheme_str(),
        uri.host(),
        uri.port_u16(),
        req.headers(),
        req.extensions().get::<RequestOptions>(),
    );
    let Some(plan) = plan else {
        let response = inner.call(req).await.map_err(Into::into)?;
        return Ok(response.map(ResponseBody::plain));
    };
    let sent = plan.authorization().await?;
    plan.apply(req.headers_mut(), sent.clone());
    let is_grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(b"application/grpc"));
    let replay = if plan.retry && !is_grpc {
        replay_policy.replay(&req)
    } else {
        None
    };
    let response = inner.call(req).await.map_err(Into::into)?;

    if is_grpc {
        // gRPC answers 200 with `grpc-status`; a trailers-only rejection has it in the headers.
        // gRPC bodies are streams, so the call is not replayed; the next one gets a new token.
        if is_grpc_unauthenticated(response.headers()) {
            plan.cache.invalidate(&sent);
        }
        let watch = GrpcWatch {
            cache: plan.cache.clone(),
            sent,
        };
        return Ok(response.map(|body| ResponseBody::grpc(body, watch)));
    }
    if response.status() != StatusCode::UNAUTHORIZED {
        return Ok(response.map(ResponseBody::plain));
    }
    let Some(mut replay) = replay else {
        plan.forget_if_invalid(response.status(), response.headers(), &sent);
        return Ok(response.map(ResponseBody::plain));
    };
    let (rejection, response) = match classify_headers(response.status(), response.headers()) {
        Some(rejection) => (rejection, response.map(ResponseBody::plain)),
        None => {
            let (parts, body) = response.into_parts();
            let (rejection, body) = classify_by_body(&parts, body).await;
            (rejection, Response::from_parts(parts, body))
        }
    };
    let Some(new) = plan.token_for_retry(&rejection, &sent).await else {
        return Ok(response);
    };
    drop(response);
    plan.apply(replay.headers_mut(), new);
    poll_fn(|cx| inner.poll_ready(cx))
        .await
        .map_err(Into::into)?;
    let response = inner.call(replay).await.map_err(Into::into)?;
    Ok(response.map(ResponseBody::plain))
}
