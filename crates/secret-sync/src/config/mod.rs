//! The config file: its typed model ([`model`]), loading and validation ([`load`]), errors.
//!
//! This is the only place in the workspace that knows the config format (ARCHITECTURE.md):
//! the library crates take typed options, and the engine takes a [`SyncConfig`].

pub mod error;
pub mod lifecycle;
pub mod load;
pub mod model;
#[cfg(test)]
mod tests;

pub use lifecycle::*;
pub use load::load;
pub use model::*;
