//! `secret-sync`: the binary. It holds the command line, the glue and the mapping from
//! outcomes to exit codes; the work lives in the `entra-auth` and `secret-backends` crates.
//!
//! The binary's own code is in this package's library target (`src/lib.rs`, not an API):
//! this file is only the entry point.

fn main() -> std::process::ExitCode {
    secret_sync::main()
}
