//! Which requests can be sent a second time.

use http::Request;

/// Decides whether a request can be sent again after the API rejected its token, by making
/// the copy to resend.
///
/// The copy is made before the first send, before the token is put on the request (so a
/// policy never sees a token). Returning `None` sends the request once; a rejection then
/// reaches the caller as it is. This follows tower's `retry::Policy::clone_request`.
pub trait ReplayPolicy<B> {
    /// A copy of `request` to send again, or `None`.
    fn replay(&self, request: &Request<B>) -> Option<Request<B>>;
}

/// Replays requests whose body is `Clone` (`Full<Bytes>`, `Empty<Bytes>`, `String`, `Bytes`,
/// ...): the default of [`ClientCredentialsLayer`](super::ClientCredentialsLayer). The copy is
/// `Request::clone`: the body's clone (a reference count for `Full<Bytes>`) and a copy of the
/// headers, which allocates.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneBody;

impl<B: Clone> ReplayPolicy<B> for CloneBody {
    fn replay(&self, request: &Request<B>) -> Option<Request<B>> {
        Some(request.clone())
    }
}

/// Never replays: for bodies that are streams (a `tonic` channel's gRPC bodies, a proxied
/// `hyper::body::Incoming`). A rejection is returned as it is, though the token it rejected
/// is still dropped so the next request gets a fresh one. Makes no copy, so nothing on the
/// request path allocates.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReplay;

impl<B> ReplayPolicy<B> for NoReplay {
    fn replay(&self, _request: &Request<B>) -> Option<Request<B>> {
        None
    }
}
