//! Reading the start of a rejection's body without losing it.
//!
//! To tell a 401's JSON `{"error": ...}` apart, the adapters read up to
//! [`MAX_INSPECTED_BODY`](crate::challenge::MAX_INSPECTED_BODY) bytes of it with
//! [`ReadPrefix`]. When the answer then goes to the caller, [`Replayed`] plays those frames
//! back first and the rest of the original body follows, so the caller sees exactly the bytes
//! the server sent (and the server's read error, if there was one).
#![cfg_attr(
    not(any(feature = "reqwest-middleware", feature = "tower")),
    allow(dead_code)
)]

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

/// Reads frames of a body until `limit` data bytes or its end (see [`ReadPrefix::poll`]).
/// Polled in place by the tower future, or through `poll_fn` by the reqwest adapter.
pub(crate) struct ReadPrefix<B: Body> {
    body: Option<Pin<Box<B>>>,
    frames: VecDeque<Frame<Bytes>>,
    data: BytesMut,
    limit: usize,
}

impl<B> ReadPrefix<B>
where
    B: Body,
    B::Data: Into<Bytes>,
{
    pub(crate) fn new(body: B, limit: usize) -> Self {
        Self {
            body: Some(Box::pin(body)),
            frames: VecDeque::new(),
            data: BytesMut::new(),
            limit,
        }
    }

    /// Ready with the data read (complete only if the body ended within the limit) and a body
    /// that plays everything back. Polling again after `Ready` yields an empty body.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<(Option<Bytes>, Replayed<B>)> {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready((None, Replayed::new(VecDeque::new(), None, None)));
        };
        let mut error = None;
        let mut ended = false;
        while self.data.len() <= self.limit {
            match ready!(body.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let frame = frame.map_data(Into::into);
                    if let Some(chunk) = frame.data_ref() {
                        self.data.extend_from_slice(chunk.chunk());
                    }
                    self.frames.push_back(frame);
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
        let complete = ended && self.data.len() <= self.limit;
        let rest = if ended { None } else { self.body.take() };
        self.body = None;
        let data = std::mem::take(&mut self.data).freeze();
        let frames = std::mem::take(&mut self.frames);
        Poll::Ready((complete.then_some(data), Replayed::new(frames, error, rest)))
    }
}

pin_project_lite::pin_project! {
    /// Frames already read, then the rest of the body (see the module docs).
    pub(crate) struct Replayed<B>
    where
        B: Body,
    {
        prefix: VecDeque<Frame<Bytes>>,
        error: Option<B::Error>,
        rest: Option<Pin<Box<B>>>,
    }
}

impl<B: Body> Replayed<B> {
    fn new(
        prefix: VecDeque<Frame<Bytes>>,
        error: Option<B::Error>,
        rest: Option<Pin<Box<B>>>,
    ) -> Self {
        Self {
            prefix,
            error,
            rest,
        }
    }
}

impl<B: Body> fmt::Debug for Replayed<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replayed")
            .field("frames", &self.prefix.len())
            .finish_non_exhaustive()
    }
}

impl<B> Body for Replayed<B>
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
        let this = self.project();
        if let Some(frame) = this.prefix.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(e) = this.error.take() {
            return Poll::Ready(Some(Err(e)));
        }
        let Some(body) = this.rest.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(body.as_mut().poll_frame(cx)) {
            Some(frame) => Poll::Ready(Some(frame.map(|f| f.map_data(Into::into)))),
            None => {
                *this.rest = None;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty()
            && self.error.is_none()
            && self.rest.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self
            .prefix
            .iter()
            .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
            .sum();
        let rest = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint());
        // The upper bound first: `set_lower` asserts it does not pass the upper one.
        let mut hint = SizeHint::new();
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(buffered));
        }
        hint.set_lower(rest.lower().saturating_add(buffered));
        hint
    }
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

    async fn read<B>(body: B, limit: usize) -> (Option<Bytes>, Replayed<B>)
    where
        B: Body,
        B::Data: Into<Bytes>,
    {
        let mut reader = ReadPrefix::new(body, limit);
        std::future::poll_fn(|cx| reader.poll(cx)).await
    }

    #[tokio::test]
    async fn short_body_is_read_whole_and_played_back() {
        let (data, replay) = read(
            stream(vec![Ok("{\"error\":"), Ok("\"invalid_token\"}")]),
            1024,
        )
        .await;
        assert_eq!(data.as_deref(), Some(&b"{\"error\":\"invalid_token\"}"[..]));
        assert_eq!(replay.size_hint().exact(), Some(25));
        let bytes = replay.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"{\"error\":\"invalid_token\"}");
    }

    #[tokio::test]
    async fn long_body_is_cut_but_nothing_is_lost() {
        let (data, replay) = read(stream(vec![Ok("aaaa"), Ok("bbbb"), Ok("cccc")]), 5).await;
        assert_eq!(data, None);
        assert!(!replay.is_end_stream());
        let bytes = replay.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"aaaabbbbcccc");
    }

    #[tokio::test]
    async fn a_body_exactly_at_the_limit_is_complete() {
        let (data, replay) = read(stream(vec![Ok("aaaa"), Ok("b")]), 5).await;
        assert_eq!(data.as_deref(), Some(&b"aaaab"[..]));
        assert_eq!(&replay.collect().await.unwrap().to_bytes()[..], b"aaaab");
    }

    #[tokio::test]
    async fn read_error_is_played_back() {
        let (data, replay) = read(
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
}
