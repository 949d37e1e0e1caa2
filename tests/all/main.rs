//! Integration tests: one binary, one module per area. Every test talks HTTP to `wiremock`
//! servers on loopback.

mod support;

mod smoke;
