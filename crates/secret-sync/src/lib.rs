//! `secret-sync`'s code. The binary (`src/main.rs`) only calls [`main`]: this library target
//! exists so that the fuzz targets in `fuzz/` can reach the config loader (feature `fuzzing`,
//! module `fuzzing`). It is not an API: every module is private, and nothing here is published.

mod actions;
mod cli;
mod clients;
mod completions;
mod config;
mod credentials;
mod daemon;
mod engine;
mod failure;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod logging;
mod manpage;
mod output;
mod plan;
mod run;
mod schema;
mod state_file;
mod token;
mod validate;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// The whole program: parses the command line, runs the command, and returns its exit code.
pub fn main() -> ExitCode {
    // clap prints usage errors itself and exits with 2.
    let cli = Cli::parse();
    logging::init(cli.global.log_format);

    // The daemon waits on timers and I/O almost all the time: one thread spares it the
    // cross-thread wake-ups of a multi-threaded runtime (blocking file I/O still runs on
    // tokio's blocking pool).
    let daemon = match &cli.command {
        Command::Daemon(_) => true,
        Command::Run(args) => args.watch,
        _ => false,
    };
    let mut builder = if daemon {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: could not start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Token(args) => token::run(args).await,
            Command::Run(args) if args.watch => daemon::run(args.into()).await,
            Command::Run(args) => run::run(args).await,
            Command::Daemon(args) => daemon::run(args).await,
            Command::Plan(args) => plan::run(args).await,
            Command::Validate(args) => validate::run(args),
            Command::Credentials(args) => credentials::watch::run(args).await,
            Command::Rotate(args) => credentials::rotate::run(args).await,
            Command::Schema => schema::run(),
            Command::Completions(args) => completions::run(args),
            Command::Man(args) => manpage::run(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}
