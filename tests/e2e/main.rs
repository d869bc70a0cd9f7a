//! End-to-end tests: they run the built `secret-sync` binary, as a user or a CI job would,
//! against servers on 127.0.0.1 (the testkit emulators, a server replaying recorded Entra
//! traffic, and in later modules the real moto and OpenBao servers). One module per topic.

mod actions;
mod bench_baseline;
mod clouds;
mod config;
mod conventions;
mod credentials;
mod daemon;
mod docs;
mod first_hour;
mod hardening_backends;
mod hardening_daemon;
mod hardening_engine;
mod hardening_file;
mod hardening_graph;
mod hardening_token;
mod managed_identity;
mod metrics;
mod packaging;
mod readme;
mod run;
mod support;
mod tls_roots;
mod token;
mod token_emulator;
mod token_recorded;
