//! `secret-sync completions SHELL`: a shell completion script generated from the clap
//! definitions in `cli.rs`, so completions can never drift from the real flags.

use std::io::Write;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};
use crate::failure::Failure;

/// Writes the completion script for `args.shell` to stdout.
pub fn run(args: CompletionsArgs) -> Result<(), Failure> {
    let mut script = Vec::new();
    let mut command = Cli::command();
    let name = command.get_name().to_owned();
    clap_complete::generate(args.shell, &mut command, name, &mut script);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&script)
        .and_then(|()| stdout.flush())
        .context("could not write the completion script to stdout")
        .map_err(Failure::failed)
}
