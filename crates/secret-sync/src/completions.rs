//! `secret-sync completions SHELL`: a shell completion script generated from the clap
//! definitions in `cli.rs`, so completions can never drift from the real flags.

use std::io::Write;

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, CompletionsArgs};
use crate::failure::Failure;

/// Writes the completion script for `args.shell` to stdout.
pub fn run(args: CompletionsArgs) -> Result<(), Failure> {
    let script = script(args.shell);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(script.as_bytes())
        .and_then(|()| stdout.flush())
        .context("could not write the completion script to stdout")
        .map_err(Failure::failed)
}

fn script(shell: Shell) -> String {
    let mut command = without_hidden_subcommands(Cli::command());
    let name = command.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, &name, &mut script);
    let script = String::from_utf8_lossy(&script).into_owned();
    match shell {
        Shell::Bash => fix_bash_hyphenated_name(&script, &name),
        Shell::Fish => script + &fish_positional_values(&command, &name),
        _ => script,
    }
}

/// `command` without its hidden subcommands (`man`, for xtask): clap_complete (4.6) offers
/// hidden subcommands like any other, and clap cannot remove one, so the command is rebuilt
/// from its parts (name, version, about, global arguments, the visible subcommands).
fn without_hidden_subcommands(command: clap::Command) -> clap::Command {
    // `Cli`'s name and version (clap keeps only `'static` strings without its `string` feature).
    debug_assert_eq!(command.get_name(), "secret-sync");
    let mut pruned = clap::Command::new("secret-sync")
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(true)
        .args(command.get_arguments().cloned())
        .subcommands(
            command
                .get_subcommands()
                .filter(|sub| !sub.is_hide_set())
                .cloned(),
        );
    if let Some(about) = command.get_about() {
        pruned = pruned.about(about.clone());
    }
    pruned
}

/// clap_complete's bash script (4.6) spells a subcommand's state `secret__sync__subcmd__run`
/// where it is computed but `secret__subcmd__sync__subcmd__run` in the `case` arms, so for a
/// binary with a hyphen in its name no subcommand flag would ever complete (clap issue 6421).
/// Spelling the arms like the computed state fixes it.
fn fix_bash_hyphenated_name(script: &str, name: &str) -> String {
    let wrong = format!("{}__subcmd__", name.replace('-', "__subcmd__"));
    let right = format!("{}__subcmd__", name.replace('-', "__"));
    script.replace(&wrong, &right)
}

/// clap_complete's fish script (4.6) offers no values for positional arguments, so
/// `secret-sync completions <TAB>` would list files. One `complete` line per subcommand
/// positional with fixed values (only `completions SHELL` today) adds them.
fn fish_positional_values(command: &clap::Command, name: &str) -> String {
    let condition = format!("__fish_{}_using_subcommand", name.replace('-', "_"));
    let mut lines = String::new();
    for sub in command.get_subcommands() {
        for arg in sub.get_positionals() {
            let possible = arg.get_possible_values();
            let values: Vec<&str> = possible
                .iter()
                .filter(|value| !value.is_hide_set())
                .map(|value| value.get_name())
                .collect();
            if !values.is_empty() {
                lines.push_str(&format!(
                    "complete -c {name} -n \"{condition} {}\" -f -a \"{}\"\n",
                    sub.get_name(),
                    values.join(" ")
                ));
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_shell_is_offered_the_hidden_man_command() {
        for shell in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::Elvish,
            Shell::PowerShell,
        ] {
            let script = script(shell);
            assert!(!script.contains("subcmd__man"), "{shell}: {script}");
            assert!(!script.contains("'man:"), "{shell}: {script}");
            assert!(!script.contains("-a \"man\""), "{shell}: {script}");
            assert!(
                !script.contains(" man ") && !script.contains(" man\""),
                "{shell}: {script}"
            );
            assert!(script.contains("validate"), "{shell}: {script}");
            assert!(script.contains("log-format"), "{shell}: {script}");
        }
    }

    #[test]
    fn bash_case_arms_match_the_computed_subcommand_state() {
        let script = script(Shell::Bash);
        assert!(
            script.contains("cmd=\"secret__sync__subcmd__run\""),
            "the state the script computes for `run` changed:\n{script}"
        );
        assert!(
            script.contains("\n        secret__sync__subcmd__run)"),
            "no case arm for the `run` state:\n{script}"
        );
        assert!(!script.contains("secret__subcmd__sync"), "{script}");
    }

    #[test]
    fn fish_offers_the_shells_after_completions() {
        let script = script(Shell::Fish);
        assert!(
            script.contains("function __fish_secret_sync_using_subcommand"),
            "the condition function's name changed:\n{script}"
        );
        assert!(
            script.ends_with(
                "complete -c secret-sync -n \"__fish_secret_sync_using_subcommand completions\" \
                 -f -a \"bash elvish fish powershell zsh\"\n"
            ),
            "{script}"
        );
    }
}
