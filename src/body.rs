//! A response body that can give back what was read of it.
//!
//! To tell a 401's JSON `{"error": ...}` apart, the adapters read up to
//! [`MAX_INSPECTED_BODY`](crate::challenge::MAX_INSPECTED_BODY) bytes of it. When the response
//! then goes to the caller, those frames are played back first and the rest of the original
//! body follows, so the caller sees exactly the bytes the server sent (and the server's read
//! error, if there was one).
#![cfg_attr(
    not(any(feature = "reqwest-middleware", feature = "tower")),
    allow(dead_code)
)]

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderValue;
use http_body::{Body, Frame, SizeHint};

use crate::cache::TokenCache;

pin_project_lite::pin_project! {
    /// The response body of the [tower layer](crate::ClientCredentialsLayer): the inner
    /// service's body, unchanged.
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
        // Passed through as it is.
        Plain {
            #[pin]
            body: B,
            grpc: Option<Box<GrpcWatch>>,
        },
        // Frames already read, then the rest.
        Replayed {
            prefix: VecDeque<Frame<Bytes>>,
            error: Option<B::Error>,
            rest: Option<Pin<Box<B>>>,
        },
    }
}

impl<B: Body> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Plain { .. } => f.write_str("ResponseBody::Plain"),
            Inner::Replayed { prefix, .. } => f
                .debug_struct("ResponseBody::Replayed")
                .field("frames", &prefix.len())
                .finish_non_exhaustive(),
        }
    }
}

/// Watches gRPC trailers for `UNAUTHENTICATED`.
pub(crate) struct GrpcWatch {
    pub(crate) cache: Arc<TokenCache>,
    pub(crate) sent: HeaderValue,
}

#[cfg_attr(not(feature = "tower"), allow(dead_code))]
impl<B: Body> ResponseBody<B> {
    pub(crate) fn plain(body: B) -> Self {
        Self {
            inner: Inner::Plain { body, grpc: None },
        }
    }

    pub(crate) fn grpc(body: B, watch: GrpcWatch) -> Self {
        Self {
            inner: Inner::Plain {
                body,
                grpc: Some(Box::new(watch)),
            },
        }
    }

    fn replayed(
        prefix: VecDeque<Frame<Bytes>>,
        error: Option<B::Error>,
        rest: Option<Pin<Box<B>>>,
    ) -> Self {
        Self {
            inner: Inner::Replayed {
                prefix,
                error,
                rest,
            },
        }
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
            InnerProj::Plain { body, grpc } => {
                let frame = match body.poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => frame,
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                };
                if let (Some(watch), Some(trailers)) = (grpc.as_ref(), frame.trailers_ref()) {
                    if is_grpc_unauthenticated(trailers) {
                        tracing::info!("gRPC UNAUTHENTICATED in trailers; dropping the token");
                        watch.cache.invalidate(&watch.sent);
                    }
                }
                Poll::Ready(Some(Ok(frame.map_data(Into::into))))
            }
            InnerProj::Replayed {
                prefix,
                error,
                rest,
            } => {
                if let Some(frame) = prefix.pop_front() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                if let Some(e) = error.take() {
                    return Poll::Ready(Some(Err(e)));
                }
                let Some(body) = rest.as_mut() else {
                    return Poll::Ready(None);
                };
                match body.as_mut().poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        Poll::Ready(Some(Ok(frame.map_data(Into::into))))
                    }
                    Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                    Poll::Ready(None) => {
                        *rest = None;
                        Poll::Ready(None)
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Plain { body, .. } => body.is_end_stream(),
            Inner::Replayed {
                prefix,
                error,
                rest,
            } => {
                prefix.is_empty()
                    && error.is_none()
                    && rest.as_ref().is_none_or(|b| b.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Plain { body, .. } => body.size_hint(),
            Inner::Replayed { prefix, rest, .. } => {
                let buffered: u64 = prefix
                    .iter()
                    .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
                    .sum();
                let mut hint = rest
                    .as_ref()
                    .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint());
                hint.set_lower(hint.lower().saturating_add(buffered));
                if let Some(upper) = hint.upper() {
                    hint.set_upper(upper.saturating_add(buffered));
                }
                hint
            }
        }
    }
}

/// Reads frames of `body` until `limit` data bytes or its end, and returns the data read
/// (complete only if the body ended within the limit) and a body that plays everything back.
pub(crate) async fn read_prefix<B>(body: B, limit: usize) -> (Option<Bytes>, ResponseBody<B>)
where
    B: Body,
    B::Data: Into<Bytes>,
{
    let mut body = Box::pin(body);
    let mut prefix = VecDeque::new();
    let mut data = BytesMut::new();
    let mut error = None;
    let mut ended = false;
    while data.len() <= limit {
        match std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            Some(Ok(frame)) => {
                let frame = frame.map_data(Into::into);
                if let Some(chunk) = frame.data_ref() {
                    data.extend_from_slice(chunk.chunk());
                }
                prefix.push_back(frame);
            }
            Some(Err(e)) => {
                error = Some(e);
                break;
            }
            None => {
                ended = true;
                break;
            }
        }
    }
    let complete = ended && data.len() <= limit;
    let replay = ResponseBody::replayed(prefix, error, if ended { None } else { Some(body) });
    (complete.then(|| data.freeze()), replay)
}

/// `grpc-status: 16` in a header map (trailers, or the headers of a trailers-only response).
pub(crate) fn is_grpc_unauthenticated(headers: &http::HeaderMap) -> bool {
    headers
        .get("grpc-status")
        .is_some_and(|v| v.as_bytes() == b"16")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn stream(
        chunks: Vec<Result<&'static str, std::io::Error>>,
    ) -> impl Body<Data = Bytes, Error = std::io::Error> {
        StreamBody::new(futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| c.map(|s| Frame::data(Bytes::from_static(s.as_bytes())))),
        ))
    }

    #[tokio::test]
    async fn short_body_is_read_whole_and_played_back() {
        let (data, replay) = read_prefix(
            stream(vec![Ok("{\"error\":"), Ok("\"invalid_token\"}")]),
            1024,
        )
        .await;
        assert_eq!(data.as_deref(), Some(&b"{\"error\":\"invalid_token\"}"[..]));
        let bytes = replay.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"{\"error\":\"invalid_token\"}");
    }

    #[tokio::test]
    async fn long_body_is_cut_but_nothing_is_lost() {
        let (data, replay) = read_prefix(stream(vec![Ok("aaaa"), Ok("bbbb"), Ok("cccc")]), 5).await;
        assert_eq!(data, None);
        let bytes = replay.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"aaaabbbbcccc");
    }

    #[tokio::test]
    async fn read_error_is_played_back() {
        let (data, replay) = read_prefix(
            stream(vec![Ok("ab"), Err(std::io::Error::other("reset"))]),
            1024,
        )
        .await;
        assert_eq!(data, None);
        let mut replay = Box::pin(replay);
        let first = replay.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "ab");
        let err = replay.frame().await.unwrap().unwrap_err();
        assert_eq!(err.to_string(), "reset");
    }

    /// A token source handing out `tok-1`, `tok-2`, ...
    struct Counting(std::sync::atomic::AtomicUsize);

    impl crate::TokenSource for Counting {
        fn fetch_token<'a>(
            &'a self,
            _scopes: &'a crate::Scopes,
        ) -> crate::BoxFuture<'a, Result<crate::Token, crate::Error>> {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            Box::pin(async move {
                Ok(crate::Token::new(
                    crate::AccessToken::new(format!("tok-{n}")),
                    Some(std::time::Duration::from_secs(3600)),
                ))
            })
        }
    }

    /// gRPC sends `grpc-status` in trailers after the messages: UNAUTHENTICATED there drops the
    /// token the request carried, any other status does not.
    #[tokio::test]
    async fn grpc_unauthenticated_in_trailers_drops_the_token_it_rejected() {
        let credentials = crate::ClientCredentials::builder()
            .token_source(Counting(Default::default()))
            .build()
            .unwrap();
        let cache = Arc::clone(&credentials.inner.default);
        for (status, dropped) in [("0", false), ("7", false), ("16", true)] {
            let sent = cache.header().await.unwrap();
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static(status));
            let frames: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
                Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\0"))),
                Ok(Frame::trailers(trailers)),
            ];
            let body = ResponseBody::grpc(
                StreamBody::new(futures_util::stream::iter(frames)),
                GrpcWatch {
                    cache: Arc::clone(&cache),
                    sent: sent.clone(),
                },
            );
            let collected = body.collect().await.unwrap();
            assert_eq!(
                collected.trailers().and_then(|t| t.get("grpc-status")),
                Some(&HeaderValue::from_static(status)),
                "the trailers reach the caller"
            );
            let now = cache.header().await.unwrap();
            assert_eq!(now != sent, dropped, "grpc-status {status}");
        }
        assert_eq!(credentials.stats().forced_refreshes, 1);
        assert_eq!(credentials.stats().tokens_fetched, 2);
    }
}
