//! Which requests can be sent a second time.

use http::Request;

/// Decides whether a request can be sent again after a 401, by making the copy to resend.
///
/// The copy is made before the first send. Returning `None` sends the request once; a 401 then
/// reaches the caller as it is. This follows tower's `retry::Policy::clone_request`.
pub trait ReplayPolicy<B>: Clone + Send + Sync + 'static {
    /// A copy of `request` to send again, or `None`.
    fn replay(&self, request: &Request<B>) -> Option<Request<B>>;
}

/// Replays requests whose body is `Clone` (`Full<Bytes>`, `Empty<Bytes>`, `String`, `Bytes`,
/// ...): the default of [`ClientCredentialsLayer`](super::ClientCredentialsLayer).
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneBody;

impl<B: Clone> ReplayPolicy<B> for CloneBody {
    fn replay(&self, request: &Request<B>) -> Option<Request<B>> {
        Some(request.clone())
    }
}

/// Never replays: for bodies that are streams (a `tonic` channel's gRPC bodies, a proxied
/// `hyper::body::Incoming`). A 401 is returned as it is, though the token it rejected is still
/// dropped so the next request gets a fresh one.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReplay;

impl<B> ReplayPolicy<B> for NoReplay {
    fn replay(&self, _request: &Request<B>) -> Option<Request<B>> {
        None
    }
}
