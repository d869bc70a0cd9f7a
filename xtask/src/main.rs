//! Project tasks, run as `cargo xtask <task>` (the alias lives in `.cargo/config.toml`).
//!
//! - `setup`: create the Python venv with the pinned real test servers (moto, OpenBao).
//! - `ci`: everything CI checks: setup, `cargo fmt --check`, clippy with `-D warnings` (default
//!   features, then all features: `conformance`, `fuzzing`), the
//!   packaging lint, all tests, README's Install section (install.rs), the demo, every fuzz
//!   target for 30 s (fuzz.rs). With `CI` set it prints the free disk before each step and
//!   removes what a step built once no later step needs it (disk.rs).
//! - `install-check`: README's Install block, then its Use steps with the installed binary
//!   (install.rs; a step of `ci`).
//! - `lint`: the release packaging (Dockerfile, workflows, action.yml) checked with hadolint and
//!   check-jsonschema from the venv (lint.rs).
//! - `demo`: start the Entra ID emulator and run `secret-sync` against it, to see the tool work.
//! - `bench`: every benchmark (docs/performance.md): `bench run` (time `secret-sync run` against
//!   local servers, beside a curl script), then `bench daemon` (`secret-sync daemon` with 10,000
//!   jobs for 3 minutes: memory, CPU, token requests and on-time refreshes) twice, its targets on
//!   tmpfs and on disk. `bench run` and `bench daemon` run one alone; `bench-daemon` is an alias
//!   of `bench daemon`.
//! - `man`: write the man pages generated from the CLI definitions to `target/man/`.
//! - `fuzz`: run the cargo-fuzz targets in `fuzz/` on nightly (fuzz.rs; `ci` runs each for 30 s).
//!
//! This crate keeps few dependencies on purpose: it must build fast on a fresh machine.

mod bench;
mod bench_daemon;
mod demo;
mod disk;
mod fuzz;
mod install;
mod lint;
mod man;
mod servers;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  setup   create .venv with the pinned test servers (moto, OpenBao, boto3)
  ci      setup, then cargo fmt --check, clippy -D warnings, lint, every test, README's
          Install section (into target/install-check/), the demo, and every fuzz target for 30 s
  lint    check Dockerfile (hadolint), .github/workflows/ and the recipe workflow, and
          action.yml (check-jsonschema's GitHub schemas); tools from .venv
  install-check  run README's Install block (cargo install --debug into target/install-check/),
          then README's Use steps with the installed binary
  demo    start the Entra ID emulator and run secret-sync against it
  bench   every benchmark in turn, failing if any fails: bench run, then bench daemon with raw
          targets on tmpfs (/dev/shm) and on disk (under target/bench/), 3 minutes each; writes
          target/bench/run.json, daemon-tmpfs.json and daemon-disk.json (bench --help)
  bench run     time secret-sync run against local servers, beside a curl script
          (--iterations N, --dev); writes target/bench/run.json
  bench daemon  run secret-sync daemon with 10,000 jobs on 60 s tokens for 3 minutes
          (--jobs N, --apps N, --duration S, --format F, --dir DIR, --out FILE, --dev);
          writes target/bench/daemon.json (bench daemon --help)
  bench-daemon  the same as bench daemon
  man     write the man pages to target/man/
  fuzz    run every cargo-fuzz target in fuzz/ (nightly) for 300 s each, or the named ones
          (--seconds N, TARGET...); fails on a crash, printing the input (fuzz --help)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("ci") => ci(),
        Some("demo") => demo::run(&workspace_root()),
        Some("lint") => lint::run(&workspace_root()),
        Some("install-check") => install::check(&workspace_root()),
        Some("bench") => bench(&workspace_root(), &args[1..]),
        Some("bench-daemon") => bench_daemon_task(&workspace_root(), &args[1..]),
        Some("man") => man::run(&workspace_root()),
        Some("fuzz") if wants_help(&args[1..]) => print_usage(fuzz::USAGE),
        Some("fuzz") => fuzz::run(&workspace_root(), &args[1..]),
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => {
            eprint!("xtask: unknown task `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
        None => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: the parent of this crate's manifest directory.
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// `cargo xtask bench [run | daemon] [OPTIONS]`: every bench, or one.
fn bench(root: &Path, args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("run") if wants_help(&args[1..]) => print_usage(bench::USAGE),
        Some("run") => bench::run(root, &args[1..]),
        Some("daemon") => bench_daemon_task(root, &args[1..]),
        _ if wants_help(args) => print_usage(bench::ALL_USAGE),
        _ => bench::all(root, args),
    }
}

/// `cargo xtask bench daemon`, alias `cargo xtask bench-daemon`.
fn bench_daemon_task(root: &Path, args: &[String]) -> Result<()> {
    if wants_help(args) {
        return print_usage(bench_daemon::USAGE);
    }
    bench_daemon::run(root, args)
}

fn wants_help(args: &[String]) -> bool {
    args.iter()
        .any(|arg| matches!(arg.as_str(), "-h" | "--help"))
}

fn print_usage(usage: &str) -> Result<()> {
    println!("{usage}");
    Ok(())
}

fn setup() -> Result<()> {
    servers::install(&workspace_root())?;
    fuzz::install()
}

fn ci() -> Result<()> {
    let root = workspace_root();
    // With CI set: the free space before each step, and what a step built removed once no
    // later step reads it (disk.rs).
    let tidy = disk::Tidy::new(&root);
    tidy.before("setup");
    servers::install(&root)?;
    cargo(&root, &["fmt", "--all", "--check"])?;
    tidy.before("clippy");
    cargo(
        &root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    // Once more with every feature (`conformance`, `fuzzing`), so the code only the
    // conformance suites and the fuzz targets compile is held to the same lints.
    cargo(
        &root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    tidy.after_clippy()?;
    lint::run(&root)?;
    tidy.before("the tests");
    cargo(&root, &["test", "--workspace", "--all-targets", "--locked"])?;
    // Doc tests are not part of --all-targets.
    cargo(&root, &["test", "--workspace", "--doc", "--locked"])?;
    // After the tests, not beside them: the install build would starve their timing.
    tidy.before("the install check");
    install::check(&root)?;
    // README's first command must keep working on a fresh clone too.
    tidy.before("the demo");
    demo::run(&root)?;
    // Last: every fuzz target for a bounded time (nightly; its own target dir, fuzz/target).
    tidy.before_fuzz()?;
    tidy.before("the fuzz build");
    fuzz::install()?;
    fuzz::ci(&root)?;
    Ok(())
}

/// Runs `cargo ARGS` in the workspace root, failing when it fails.
pub(crate) fn cargo(root: &Path, args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    eprintln!("xtask: running cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(root)
        .env("SECRET_SYNC_VENV", root.join(".venv"))
        .status()
        .with_context(|| format!("could not start `{cargo}`"))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}
