//! The response future of [`ClientCredentialsService`](super::ClientCredentialsService): a
//! state machine over the [`Exchange`] decisions, in the style of tower's retry future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{response, Request, Response};
use http_body::Body;
use tower_service::Service;

use super::ResponseBody;
use crate::body::ReadPrefix;
use crate::cache::Credential;
use crate::challenge::MAX_INSPECTED_BODY;
use crate::decide::{Exchange, Target, Verdict};
use crate::error::BoxError;
use crate::{BoxFuture, ClientCredentials, Error};

pin_project_lite::pin_project! {
    /// The future returned by [`ClientCredentialsService`](super::ClientCredentialsService).
    ///
    /// A state machine: on a cache hit the inner service is called at once (no allocation of
    /// its own); on a miss it first awaits the token; after a rejection a new token may fix, it
    /// reads up to 16 KiB of the 401's body if the headers do not settle it, awaits the
    /// replacement token, waits for the inner service to be ready and calls it once more with
    /// the copy the [`ReplayPolicy`](super::ReplayPolicy) made.
    pub struct ResponseFuture<S, ReqBody, ResBody>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
        ResBody: Body,
    {
        #[pin]
        state: State<S::Future, ResBody>,
        inner: S,
        exchange: Option<Exchange<ClientCredentials>>,
        // The request waiting for its token (a miss) or for the inner service (a replay).
        request: Option<Request<ReqBody>>,
        // The copy kept for a replay.
        copy: Option<Request<ReqBody>>,
        // Why the request could not be sent (no DPoP proof for it).
        failure: Option<Error>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, ResBody>
    where
        ResBody: Body,
    {
        // A miss: the token is being fetched.
        Authorizing { token: BoxFuture<'static, Result<Credential, Error>> },
        // The inner service's call, the first or the replay.
        Calling { #[pin] future: F },
        // A 401 whose headers did not settle it: its body is being read.
        Reading { parts: Option<response::Parts>, reader: ReadPrefix<ResBody> },
        // A rejection: the replacement token is coming; the answer is kept in case none does.
        Replacing {
            token: BoxFuture<'static, Option<Credential>>,
            answer: Option<Response<ResponseBody<ResBody>>>,
        },
        // The replay waits for the inner service to be ready.
        Readying,
        // The request could not be made: the error is in `failure`.
        Failed,
        Done,
    }
}

/// Puts `credential`, and its DPoP proof when it has one, on `request`.
fn authorize<B>(
    exchange: &mut Exchange<ClientCredentials>,
    credential: Credential,
    request: Request<B>,
) -> Result<Request<B>, Error> {
    let (mut parts, body) = request.into_parts();
    let proof = exchange.proof(&credential, &parts.method, Target::uri(&parts.uri))?;
    exchange.apply(credential, proof, &mut parts.headers);
    Ok(Request::from_parts(parts, body))
}

impl<S, ReqBody, ResBody> ResponseFuture<S, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    /// A request that goes out untouched.
    pub(crate) fn untouched(mut inner: S, request: Request<ReqBody>) -> Self {
        let future = inner.call(request);
        Self {
            state: State::Calling { future },
            inner,
            exchange: None,
            request: None,
            copy: None,
            failure: None,
        }
    }

    /// A request with a token: called at once on a hit, after the token comes on a miss.
    pub(crate) fn authorized(
        mut inner: S,
        mut exchange: Exchange<ClientCredentials>,
        request: Request<ReqBody>,
        copy: Option<Request<ReqBody>>,
    ) -> Self {
        let mut failure = None;
        let (state, request) = match exchange.authorization_now() {
            Some(credential) => match authorize(&mut exchange, credential, request) {
                Ok(request) => {
                    let future = inner.call(request);
                    (State::Calling { future }, None)
                }
                Err(error) => {
                    failure = Some(error);
                    (State::Failed, None)
                }
            },
            None => (
                State::Authorizing {
                    token: exchange.authorization(),
                },
                Some(request),
            ),
        };
        Self {
            state,
            inner,
            exchange: Some(exchange),
            request,
            copy,
            failure,
        }
    }
}

/// The error of a future polled after it completed, or of a state that lost its request: a
/// bug, reported rather than panicking.
fn broken() -> BoxError {
    "client-credentials: response future polled after completion".into()
}

impl<S, ReqBody, ResBody> Future for ResponseFuture<S, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Body,
    ResBody::Data: Into<Bytes>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Authorizing { token } => {
                    let credential = match ready!(token.as_mut().poll(cx)) {
                        Ok(credential) => credential,
                        Err(error) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error.into()));
                        }
                    };
                    let (Some(exchange), Some(request)) =
                        (this.exchange.as_mut(), this.request.take())
                    else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(broken()));
                    };
                    let request = match authorize(exchange, credential, request) {
                        Ok(request) => request,
                        Err(error) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error.into()));
                        }
                    };
                    // The service was made ready for this call before the future was made.
                    let future = this.inner.call(request);
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => {
                    let result = ready!(future.poll(cx));
                    let response = match result {
                        Ok(response) => response,
                        Err(error) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error.into()));
                        }
                    };
                    let Some(exchange) = this.exchange.as_mut() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(response.map(ResponseBody::plain)));
                    };
                    if let Some(watch) = exchange.grpc_watch(response.headers()) {
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(response.map(|b| ResponseBody::grpc(b, watch))));
                    }
                    let has_copy = this.copy.is_some();
                    match exchange.inspect(response.status(), response.headers(), has_copy) {
                        Verdict::PassOn => {
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(response.map(ResponseBody::plain)));
                        }
                        Verdict::ReadBody => {
                            let (parts, body) = response.into_parts();
                            this.state.set(State::Reading {
                                parts: Some(parts),
                                reader: ReadPrefix::new(body, MAX_INSPECTED_BODY),
                            });
                        }
                        Verdict::Replay => {
                            let token = exchange.replacement();
                            this.state.set(State::Replacing {
                                token,
                                answer: Some(response.map(ResponseBody::plain)),
                            });
                        }
                    }
                }
                StateProj::Reading { parts, reader } => {
                    let (data, replayed) = ready!(reader.poll(cx));
                    let (Some(parts), Some(exchange)) = (parts.take(), this.exchange.as_mut())
                    else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(broken()));
                    };
                    let verdict =
                        exchange.inspect_body(parts.status, &parts.headers, data.as_deref());
                    let answer = Response::from_parts(parts, ResponseBody::replayed(replayed));
                    if verdict != Verdict::Replay {
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(answer));
                    }
                    let token = exchange.replacement();
                    this.state.set(State::Replacing {
                        token,
                        answer: Some(answer),
                    });
                }
                StateProj::Replacing { token, answer } => {
                    let replacement = ready!(token.as_mut().poll(cx));
                    let answer = answer.take();
                    let (Some(credential), Some(copy), Some(exchange)) =
                        (replacement, this.copy.take(), this.exchange.as_mut())
                    else {
                        // No new token: the caller gets the answer as it came.
                        this.state.set(State::Done);
                        return Poll::Ready(answer.ok_or_else(broken));
                    };
                    let Ok(copy) = authorize(exchange, credential, copy) else {
                        // No proof for the replay: the caller gets the answer as it came.
                        this.state.set(State::Done);
                        return Poll::Ready(answer.ok_or_else(broken));
                    };
                    drop(answer);
                    *this.request = Some(copy);
                    this.state.set(State::Readying);
                }
                StateProj::Readying => {
                    if let Err(error) = ready!(this.inner.poll_ready(cx)) {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(error.into()));
                    }
                    let Some(request) = this.request.take() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(broken()));
                    };
                    let future = this.inner.call(request);
                    this.state.set(State::Calling { future });
                }
                StateProj::Failed => {
                    let error = this.failure.take().map_or_else(broken, Into::into);
                    this.state.set(State::Done);
                    return Poll::Ready(Err(error));
                }
                StateProj::Done => return Poll::Ready(Err(broken())),
            }
        }
    }
}

impl<S, ReqBody, ResBody> fmt::Debug for ResponseFuture<S, ReqBody, ResBody>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Authorizing { .. } => "Authorizing",
            State::Calling { .. } => "Calling",
            State::Reading { .. } => "Reading",
            State::Replacing { .. } => "Replacing",
            State::Readying => "Readying",
            State::Failed => "Failed",
            State::Done => "Done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
