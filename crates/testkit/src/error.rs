//! The one error type of the testkit: starting a server or generating key material can fail, and
//! the test that asked for it should see why (port, certificate, key) rather than a panic deep inside.

use std::io;

/// Why a testkit server or test credential could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestkitError {
    /// Binding or reading the local listener failed.
    #[error("could not bind a test server on 127.0.0.1: {0} (is the port already taken?)")]
    Bind(#[source] io::Error),
    /// Generating or serialising a key or certificate failed.
    #[error("could not generate test key material: {0}")]
    KeyMaterial(String),
    /// A PEM or DER input given to the testkit could not be used.
    #[error("invalid certificate or key given to the testkit: {0}")]
    InvalidCertificate(String),
    /// Writing a generated file failed.
    #[error("could not write {path}: {source}")]
    Write {
        /// The file that could not be written.
        path: std::path::PathBuf,
        /// The underlying I/O error.
        #[source]
        source: io::Error,
    },
    /// The Key Vault emulator refused a write made through a test hook.
    #[error("the Key Vault emulator refused the write: {0}")]
    VaultRefused(String),
    /// Building the TLS configuration failed.
    #[error("could not build the TLS server configuration: {0}")]
    Tls(String),
}

impl From<rcgen::Error> for TestkitError {
    fn from(err: rcgen::Error) -> Self {
        TestkitError::KeyMaterial(err.to_string())
    }
}
