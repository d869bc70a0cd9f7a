//! The one place where an error becomes an exit code and a message on stderr.
//!
//! Exit codes (also in `--help` and docs/cli.md): 0 success, 1 something failed at run time,
//! 2 usage or configuration error. A pass over targets (`run`, `plan`) that had a target fail
//! because an environment variable the config names is not set ends with 2 too (the user's
//! setup is incomplete), after every other job ran ([`Failure::of_pass`]).

use std::fmt;
use std::process::ExitCode;

use anyhow::anyhow;

/// Why a command did not succeed, and so which exit code it ends with.
#[derive(Debug)]
pub enum Failure {
    /// The user asked for something that cannot work as given (exit 2).
    Usage(anyhow::Error),
    /// The request was valid but failed (exit 1).
    Failed(anyhow::Error),
}

/// How many targets of a pass failed, and how many of those for a missing variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassFailures {
    pub failed: usize,
    pub missing_env: usize,
}

impl Failure {
    pub fn usage(err: impl Into<anyhow::Error>) -> Self {
        Self::Usage(err.into())
    }

    pub fn failed(err: impl Into<anyhow::Error>) -> Self {
        Self::Failed(err.into())
    }

    /// The end of a pass: success when no target failed; a usage error (exit 2) when one failed
    /// because an environment variable is not set; else a failure (exit 1). `what` says what
    /// failed, e.g. "2 of 3 target(s) failed".
    pub fn of_pass(counts: PassFailures, what: &str) -> Result<(), Failure> {
        if counts.failed == 0 {
            return Ok(());
        }
        if counts.missing_env > 0 {
            return Err(Failure::Usage(anyhow!(
                "{what}; {} of them because an environment variable the config names is not \
                 set: export it (see the summary for each error)",
                counts.missing_env
            )));
        }
        Err(Failure::Failed(anyhow!(
            "{what}: see the summary for each error"
        )))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_exits_2_when_a_variable_is_missing_else_1() {
        let counts = |failed, missing_env| PassFailures {
            failed,
            missing_env,
        };
        assert!(Failure::of_pass(counts(0, 0), "none").is_ok());
        let err = Failure::of_pass(counts(2, 0), "2 of 3 target(s) failed").unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert_eq!(
            err.to_string(),
            "2 of 3 target(s) failed: see the summary for each error"
        );
        let err = Failure::of_pass(counts(2, 1), "2 of 3 target(s) failed").unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string()
                .contains("1 of them because an environment variable")
        );
    }
}
