//! Integration tests for the token cache and the 401 rule (issue 2), through both adapters.
//! Every test talks HTTP to `wiremock` servers on loopback; time-dependent tests use tokio's
//! paused clock.

pub mod adapter;
mod cache;
pub mod cases;
mod rule401;
mod shape_table;
mod shapes;
