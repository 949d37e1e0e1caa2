//! Issue 10: signed client assertions (`private_key_jwt`, `client_secret_jwt`) and DPoP, on
//! the wire. Every assertion and proof is verified with an independent JOSE implementation
//! (the `jsonwebtoken` crate), not with this crate's code.

mod assertion;
mod dpop;
mod verify;
