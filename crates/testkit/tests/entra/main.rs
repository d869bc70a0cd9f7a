//! The Entra emulator, driven over real HTTP(S) with reqwest: every validation rule, every fault,
//! the managed identity and GitHub endpoints, and replay of the recorded Entra answers. One test
//! binary, one module per topic.

mod certificate;
mod faults;
mod federated;
mod identity;
mod secret;
mod server_bin;
mod support;
mod tls;
