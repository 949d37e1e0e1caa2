//! Reliability and security (issue 4): faults at the token endpoint, outages, an API that
//! rejects every token, cancellation and panics, hostile answers, a soak test with revocations,
//! and where tokens and secrets may go. One binary; every test talks HTTP to servers on
//! loopback.

#[path = "../all/support.rs"]
mod support;

mod harness;

mod cancellation;
mod faults;
mod hostile;
mod outage;
mod refresh;
mod rejecting_api;
mod revocations;
mod security;
mod soak;

/// Counts live heap bytes, so the soak test can show memory does not grow.
#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);
