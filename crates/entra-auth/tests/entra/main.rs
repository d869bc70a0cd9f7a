//! Integration tests of entra-auth against the testkit Entra ID emulator over real HTTP and
//! HTTPS on 127.0.0.1: one binary, one module per topic.

mod azure;
mod cache;
mod common;
mod credentials;
mod errors;
mod hostile;
mod hygiene;
mod managed_identity;
mod retries;
