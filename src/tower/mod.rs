//! The `tower` adapter: [`ClientCredentialsLayer`] and the [`ClientCredentialsService`] it
//! makes, whose [`ResponseFuture`] is a state machine over the same decisions as the reqwest
//! middleware.

mod body;
mod future;
mod layer;
mod replay;
mod service;

pub use self::body::ResponseBody;
pub use self::future::ResponseFuture;
pub use self::layer::ClientCredentialsLayer;
pub use self::replay::{CloneBody, NoReplay, ReplayPolicy};
pub use self::service::ClientCredentialsService;
