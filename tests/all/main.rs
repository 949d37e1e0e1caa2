//! Integration tests: one binary, one module per area. Every test talks HTTP (or gRPC) to
//! servers on loopback (`wiremock`, or small in-process servers); time-dependent tests run on
//! tokio's paused clock.
//!
//! `tests/reliability` (faults, outages, the soak test, with a counting global allocator) and
//! `tests/props` (property tests) are binaries of their own, so the soak test's memory
//! measurement sees no other test's allocations.

mod support;

mod ecosystem;
#[cfg(feature = "jwt")]
mod jose;
mod retry;
mod smoke;
mod wire;
