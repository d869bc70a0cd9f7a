//! The one place where an error becomes an exit code and a message on stderr.
//!
//! Exit codes (also in `--help` and docs/cli.md): 0 success, 1 something failed at run time,
//! 2 usage or configuration error.

use std::fmt;
use std::process::ExitCode;

/// Why a command did not succeed, and so which exit code it ends with.
#[derive(Debug)]
pub enum Failure {
    /// The user asked for something that cannot work as given (exit 2).
    Usage(anyhow::Error),
    /// The request was valid but failed (exit 1).
    Failed(anyhow::Error),
}

impl Failure {
    pub fn usage(err: impl Into<anyhow::Error>) -> Self {
        Self::Usage(err.into())
    }

    pub fn failed(err: impl Into<anyhow::Error>) -> Self {
        Self::Failed(err.into())
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::Failed(_) => 1,
        }
    }

    /// Prints the error with its cause chain on stderr and returns the exit code.
    pub fn report(self) -> ExitCode {
        eprintln!("error: {self}");
        ExitCode::from(self.exit_code())
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (Self::Usage(err) | Self::Failed(err)) = self;
        write!(f, "{err:#}")
    }
}
