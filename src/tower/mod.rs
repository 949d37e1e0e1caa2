//! The `tower` adapter: [`ClientCredentialsLayer`] and the [`ClientCredentialsService`] it
//! makes.

mod future;
mod layer;
mod replay;
mod service;

pub use self::future::ResponseFuture;
pub use self::layer::ClientCredentialsLayer;
pub use self::replay::{CloneBody, NoReplay, ReplayPolicy};
pub use self::service::ClientCredentialsService;
