//! The config file: its typed model ([`model`]), loading and validation.
//!
//! This is the only place in the workspace that knows the config format (ARCHITECTURE.md):
//! the library crates take typed options, and the engine takes a [`SyncConfig`].

pub mod model;

pub use model::*;
