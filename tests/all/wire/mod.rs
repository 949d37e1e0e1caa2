//! Integration tests of the token request on the wire, every way it can fail, the tenant
//! header and secret safety. Every test talks HTTP to `wiremock` servers (or a raw listener)
//! on 127.0.0.1.

mod common;

mod errors;
mod request;
mod retry;
mod secrecy;
mod tenant;
mod tls;
mod url;
