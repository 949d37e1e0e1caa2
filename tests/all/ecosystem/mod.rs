//! Ecosystem tests: discovery, vendor recipes, per-request control through both adapters,
//! tonic, the blocking entry point, `stats()`, rotating secrets and workload identity federation. One binary, one module per area; every test
//! talks HTTP (or gRPC) to servers on loopback.

mod basic_encoding;
mod blocking;
mod discovery;
mod federation;
#[cfg(feature = "tower")]
mod grpc;
#[cfg(feature = "tower")]
mod per_request;
mod rotation;
mod stats;
mod vendors;
