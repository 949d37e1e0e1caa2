//! [`ResponseBody`]: the inner service's body, unchanged.

use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::Replayed;
use crate::decide::Rejector;

pin_project_lite::pin_project! {
    /// The response body of [`ClientCredentialsService`](super::ClientCredentialsService): the
    /// inner service's body, with the same frames, data and trailers.
    ///
    /// Two things happen behind it. For a 401 whose body was inspected, the bytes read are
    /// played back before the rest. For a gRPC response, a `grpc-status: 16`
    /// (`UNAUTHENTICATED`) in the trailers drops the cached token when it is the one the
    /// request carried, so the next call gets a fresh one.
    pub struct ResponseBody<B>
    where
        B: Body,
    {
        #[pin]
        inner: Inner<B>,
    }
}

pin_project_lite::pin_project! {
    #[project = InnerProj]
    enum Inner<B>
    where
        B: Body,
    {
        Plain { #[pin] body: B },
        Grpc { #[pin] body: B, watch: Rejector },
        Replayed { #[pin] body: Replayed<B> },
    }
}

impl<B: Body> ResponseBody<B> {
    pub(crate) fn plain(body: B) -> Self {
        Self {
            inner: Inner::Plain { body },
        }
    }

    pub(crate) fn grpc(body: B, watch: Rejector) -> Self {
        Self {
            inner: Inner::Grpc { body, watch },
        }
    }

    pub(crate) fn replayed(body: Replayed<B>) -> Self {
        Self {
            inner: Inner::Replayed { body },
        }
    }
}

impl<B: Body> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match &self.inner {
            Inner::Plain { .. } => "ResponseBody::Plain",
            Inner::Grpc { .. } => "ResponseBody::Grpc",
            Inner::Replayed { .. } => "ResponseBody::Replayed",
        })
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Data: Into<Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().inner.project() {
            InnerProj::Plain { body } => body
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map(|f| f.map_data(Into::into)))),
            InnerProj::Grpc { body, watch } => {
                let frame = ready!(body.poll_frame(cx));
                if let Some(Ok(frame)) = &frame {
                    if let Some(trailers) = frame.trailers_ref() {
                        watch.inspect_trailers(trailers);
                    }
                }
                Poll::Ready(frame.map(|f| f.map(|f| f.map_data(Into::into))))
            }
            InnerProj::Replayed { body } => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Plain { body } | Inner::Grpc { body, .. } => body.is_end_stream(),
            Inner::Replayed { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Plain { body } | Inner::Grpc { body, .. } => body.size_hint(),
            Inner::Replayed { body } => body.size_hint(),
        }
    }
}
