//! `secret-sync validate`: load and check a config file without running it.
//!
//! Reports every mistake at once (exit 2), or one line saying what the file defines (exit 0).
//! It reads no secret and contacts no server: only the file itself, the existence of its CA
//! files, and the variables an `authority = { env = "VAR" }` names.

use crate::cli::ValidateArgs;
use crate::config;
use crate::failure::Failure;

pub fn run(args: ValidateArgs) -> Result<(), Failure> {
    let path = &args.config.config;
    let config = config::load(path).map_err(Failure::usage)?;
    println!(
        "{}: OK: {}, {}, {}",
        path.display(),
        count(config.jobs.len(), "job"),
        count(config.target_count(), "target"),
        count(config.backends.len(), "backend"),
    );
    Ok(())
}

fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}
