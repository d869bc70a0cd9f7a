//! `secret-sync man`: man pages (roff) generated from the clap definitions in `cli.rs`, so
//! the manual says exactly what `--help` says. Hidden from `--help`; `cargo xtask man` calls it
//! to write `target/man/`.
//!
//! Besides what clap_mangen renders (synopsis, description, options, subcommands), every page
//! gets an EXIT STATUS section taken from [`EXIT_CODES_HELP`] and an ENVIRONMENT section listing
//! the environment variables its flags (and its subcommands' flags) fall back to.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

use crate::cli::{Cli, EXIT_CODES_HELP, ManArgs};
use crate::failure::Failure;

/// Prints the main page on stdout, or with `--out-dir` writes one page per command there.
pub fn run(args: ManArgs) -> Result<(), Failure> {
    match args.out_dir {
        None => print_page(),
        Some(dir) => write_pages(&dir),
    }
    .map_err(Failure::failed)
}

fn print_page() -> anyhow::Result<()> {
    let mut page = Vec::new();
    render(&root_command(), &mut page).context("could not render the man page")?;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&page)
        .and_then(|()| stdout.flush())
        .context("could not write the man page to stdout")
}

/// The command tree, built so subcommands carry their full names (`secret-sync-run`).
fn root_command() -> clap::Command {
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    command
}

/// Writes `secret-sync.1` and `secret-sync-<command>.1` for each visible subcommand into `dir`.
fn write_pages(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("could not create the directory {}", dir.display()))?;
    let root = root_command();
    let pages = std::iter::once(&root).chain(root.get_subcommands().filter(|c| !c.is_hide_set()));
    for command in pages {
        let man = Man::new(command.clone());
        let path = dir.join(man.get_filename());
        let mut page = Vec::new();
        render(command, &mut page).context("could not render a man page")?;
        std::fs::write(&path, page)
            .with_context(|| format!("could not write {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}

/// One page: clap_mangen's sections, then EXIT STATUS, ENVIRONMENT (when any flag has an
/// environment fallback) and VERSION.
fn render(command: &clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    // Every page's footer names the program, not the subcommand ("run 0.1.0").
    let man = Man::new(command.clone()).source(concat!("secret-sync ", env!("CARGO_PKG_VERSION")));
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    if command.get_arguments().any(|arg| !arg.is_hide_set()) {
        man.render_options_section(out)?;
    }
    if command.get_subcommands().any(|sub| !sub.is_hide_set()) {
        man.render_subcommands_section(out)?;
    }
    let mut roff = Roff::new();
    exit_status_section(&mut roff);
    environment_section(&mut roff, command);
    roff.to_writer(out)?;
    man.render_version_section(out)
}

/// The exit codes, from the same text `--help` shows.
fn exit_status_section(roff: &mut Roff) {
    roff.control("SH", ["EXIT STATUS"]);
    for line in EXIT_CODES_HELP.lines().skip(1) {
        let Some((code, meaning)) = line.trim().split_once(char::is_whitespace) else {
            continue;
        };
        roff.control("TP", []);
        roff.text([bold(code)]);
        roff.text([roman(meaning.trim())]);
    }
}

/// Every environment variable a flag of `command` (or of its subcommands) falls back to,
/// plus `RUST_LOG`, which the logger reads directly.
fn environment_section(roff: &mut Roff, command: &clap::Command) {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    collect_env(command, &mut vars);
    if vars.is_empty() {
        return;
    }
    vars.insert(
        "RUST_LOG".to_owned(),
        "Log level and filters for the logs on stderr (default: warn), e.g. info or entra_auth=debug.".to_owned(),
    );
    roff.control("SH", ["ENVIRONMENT"]);
    for (var, meaning) in vars {
        roff.control("TP", []);
        roff.text([bold(var)]);
        roff.text([roman(meaning)]);
    }
}

fn collect_env(command: &clap::Command, vars: &mut BTreeMap<String, String>) {
    for arg in command.get_arguments().filter(|arg| !arg.is_hide_set()) {
        if let Some(var) = arg.get_env() {
            let flag = arg
                .get_long()
                .map(|long| format!("--{long}"))
                .unwrap_or_default();
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            vars.entry(var.to_string_lossy().into_owned())
                .or_insert_with(|| format!("{help} (when {flag} is not given)"));
        }
    }
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        collect_env(sub, vars);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page_of(command: &clap::Command) -> String {
        let mut page = Vec::new();
        render(command, &mut page).unwrap();
        String::from_utf8(page).unwrap()
    }

    #[test]
    fn main_page_names_every_subcommand_exit_code_and_env_var() {
        let root = root_command();
        let page = page_of(&root);
        for sub in root.get_subcommands().filter(|sub| !sub.is_hide_set()) {
            let name = format!("secret\\-sync\\-{}(1)", sub.get_name());
            assert!(page.contains(&name), "{name} missing from:\n{page}");
        }
        assert!(page.contains(".SH \"EXIT STATUS\""), "page:\n{page}");
        for code in ["\\fB0\\fR", "\\fB1\\fR", "\\fB2\\fR"] {
            assert!(
                page.contains(code),
                "exit code {code} missing from:\n{page}"
            );
        }
        for var in ["SECRET_SYNC_LOG_FORMAT", "SECRET_SYNC_CONFIG", "RUST_LOG"] {
            assert!(page.contains(var), "{var} missing from:\n{page}");
        }
    }

    #[test]
    fn out_dir_gets_one_page_per_visible_command() {
        let dir = tempfile::tempdir().unwrap();
        write_pages(dir.path()).unwrap();
        let root = root_command();
        let mut expected: Vec<String> = root
            .get_subcommands()
            .filter(|sub| !sub.is_hide_set())
            .map(|sub| format!("secret-sync-{}.1", sub.get_name()))
            .collect();
        expected.push("secret-sync.1".to_owned());
        expected.sort();
        let mut written: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        written.sort();
        assert_eq!(written, expected);
        let run_page = std::fs::read_to_string(dir.path().join("secret-sync-run.1")).unwrap();
        assert!(run_page.contains("\\-\\-force"), "page:\n{run_page}");
        assert!(run_page.contains("EXIT STATUS"), "page:\n{run_page}");
    }
}
