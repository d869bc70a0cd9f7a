//! The testkit emulators, driven over real HTTP(S) with reqwest: every Entra validation rule,
//! every fault, the managed identity and GitHub endpoints, the Key Vault secrets API, and replay of
//! the recorded service answers. One test binary, one module per topic.

mod certificate;
mod faults;
mod federated;
mod fixtures;
mod graph;
mod hostile;
mod identity;
mod keyvault;
mod secret;
mod server_bin;
mod support;
mod tls;
