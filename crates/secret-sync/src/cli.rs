//! The command line: every flag, its environment fallback and its help text, in one place.
//!
//! Only definitions live here; `lib.rs` (`secret_sync::main`) dispatches and the command modules do the work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit codes of the program as a whole (the man page's EXIT STATUS), documented in docs/cli.md.
/// Each command's `--help` shows only the codes that command can end with (below).
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success: every token is fresh or was updated
  1  at least one job, target, token request or after-write action failed
  2  usage or configuration error (bad flag, bad value, missing environment variable)";

/// `token`'s exit codes.
pub const TOKEN_EXIT_CODES_HELP: &str = "\
Exit codes:
  0  the token was printed
  1  the token request failed (refused, unreachable, an unusable answer)
  2  usage or configuration error (bad flag, bad value, missing environment variable)";

/// `run`'s exit codes: a missing variable is a usage error even though the other jobs ran.
pub const RUN_EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success: every token is fresh or was updated
  1  at least one job, target, token request or after-write action failed
  2  usage or configuration error, including a job that failed because an environment
     variable it names is not set (the other jobs still ran)";

/// `plan`'s exit codes.
pub const PLAN_EXIT_CODES_HELP: &str = "\
Exit codes:
  0  run would succeed on every target
  1  run would fail on at least one target (unreadable, or not managed without adopt = true)
  2  usage or configuration error, including a backend whose login names an environment
     variable that is not set";

/// `validate`'s exit codes: it runs nothing, so nothing can fail at run time.
pub const VALIDATE_EXIT_CODES_HELP: &str = "\
Exit codes:
  0  the config is valid
  2  the config has errors, or cannot be read";

#[derive(Debug, Parser)]
#[command(
    name = "secret-sync",
    version,
    about = "Keeps Microsoft Entra ID access tokens fresh wherever software reads its secrets.",
    after_help = EXIT_CODES_HELP,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Log format on stderr. The level comes from RUST_LOG (default: warn).
    #[arg(
        long,
        value_enum,
        global = true,
        default_value_t = LogFormat::Text,
        env = "SECRET_SYNC_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// For people (`token`: the bare token, nothing else; `run`, `plan`, `credentials`: a table).
    #[value(alias = "table")]
    Text,
    /// For programs.
    Json,
}

// Parsed once at start-up: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print an access token for scripts, like `az account get-access-token`.
    ///
    /// Exactly one credential must be given: a client secret (from an environment variable
    /// or a file), a certificate, a federated token (workload identity), or managed identity.
    /// The token goes to stdout and nothing else does; errors go to stderr.
    #[command(after_help = TOKEN_EXIT_CODES_HELP)]
    Token(TokenArgs),

    /// One pass: for each job, keep every target's token fresh.
    ///
    /// A job whose targets all hold a token valid for longer than `refresh_before` is skipped
    /// without reading its credentials or asking for a token. Otherwise one token is obtained
    /// and written to every target that needs it; a failing target does not stop the others.
    /// Prints a per-target summary on stdout (never a secret or token value); logs go to stderr.
    #[command(after_help = RUN_EXIT_CODES_HELP)]
    Run(RunArgs),

    /// Keep every job's targets fresh until stopped (the same as `run --watch`).
    ///
    /// Each job runs again shortly before its refresh point (its earliest token expiry minus
    /// `refresh_before`, with jitter), so targets always hold a token valid for at least
    /// `refresh_before`; a failed job backs off exponentially but retries
    /// well before its tokens expire. Jobs with the same credentials and scope share one token.
    /// SIGHUP reloads the config (a config that does not load keeps the running one); SIGTERM or
    /// SIGINT lets in-flight writes finish (at most 30 s) and exits 0. With `[settings] listen`,
    /// serves /healthz, /readyz and /metrics. Logs one info line per job pass (RUST_LOG=info).
    #[command(after_help = DAEMON_EXIT_CODES_HELP)]
    Daemon(DaemonArgs),

    /// What `run` would do to each target, and why, reading metadata only.
    ///
    /// Reads no credential, asks for no token and writes nothing. Exits 1 when `run` would fail
    /// on a target (unreadable, or not managed by secret-sync without `adopt = true`).
    #[command(after_help = PLAN_EXIT_CODES_HELP)]
    Plan(PlanArgs),

    /// Check a config file without running it: every mistake at once, each with its file,
    /// line, column and key.
    ///
    /// Reads no secret and contacts no server. Prints one OK line (jobs, targets, backends)
    /// and exits 0, or lists the errors on stderr and exits 2.
    #[command(after_help = VALIDATE_EXIT_CODES_HELP)]
    Validate(ValidateArgs),

    /// Show when each watched job's app credentials expire, read from Microsoft Graph.
    ///
    /// For jobs with `watch = true` (`[settings.credentials]` or `[jobs.NAME.credentials]`):
    /// the app registration's client secrets and certificates (never their key), their expiry,
    /// days left and which secret the job uses (the keyId recorded when secret-sync created it,
    /// else the one whose hint matches the secret's first three characters, else ambiguous).
    /// Records the result for `plan`. Needs a Graph permission: see docs/credentials.md.
    #[command(after_help = CREDENTIALS_EXIT_CODES_HELP)]
    Credentials(CredentialsArgs),

    /// Rotate a job's client secret now, without an outage.
    ///
    /// Adds a password through Microsoft Graph (explicit lifetime, a display name naming
    /// secret-sync, the job and this installation), waits until the token endpoint accepts it,
    /// writes it back to the store the job reads it from with a record of its keyId and the old
    /// keyId's retirement time, and removes the old keyId once the overlap has passed (this
    /// command run again, or the daemon, does that when due). On a failure the new keyId is
    /// removed and the old secret kept. With --dry-run, only reads and says what it would do.
    #[command(after_help = ROTATE_EXIT_CODES_HELP)]
    Rotate(RotateArgs),

    /// Print a JSON Schema of the config file, for editor completion and checks.
    Schema,

    /// Print a shell completion script on stdout.
    ///
    /// bash: `secret-sync completions bash > ~/.local/share/bash-completion/completions/secret-sync`;
    /// zsh: `secret-sync completions zsh > "${fpath[1]}/_secret-sync"`;
    /// fish: `secret-sync completions fish > ~/.config/fish/completions/secret-sync.fish`;
    /// PowerShell: `secret-sync completions powershell | Out-String | Invoke-Expression`;
    /// elvish: `eval (secret-sync completions elvish | slurp)`.
    Completions(CompletionsArgs),

    /// Print the man page (roff), or write one page per command into a directory.
    #[command(hide = true)]
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write secret-sync.1 and secret-sync-COMMAND.1 here instead of printing secret-sync.1.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
}

/// Where the config file is.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The config file (TOML).
    #[arg(
        long,
        short = 'c',
        env = "SECRET_SYNC_CONFIG",
        default_value = "secret-sync.toml",
        value_name = "FILE"
    )]
    pub config: PathBuf,
}

/// Exit codes of the daemon, in its `--help` and docs/cli.md.
pub const DAEMON_EXIT_CODES_HELP: &str = "\
Exit codes:
  0  stopped by SIGTERM or SIGINT
  2  the config did not load at start-up, or the listen address is taken";

#[derive(Debug, Args)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    /// Keep only this job fresh (repeat for several). Default: every job.
    #[arg(long = "job", value_name = "NAME")]
    pub jobs: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    /// Do not stop after one pass: keep the targets fresh until stopped, as `secret-sync daemon`.
    #[arg(long, conflicts_with_all = ["force", "dry_run", "output"])]
    pub watch: bool,

    /// Run only this job (repeat for several). Default: every job.
    #[arg(long = "job", value_name = "NAME")]
    pub jobs: Vec<String>,

    /// Rewrite tokens that are still fresh (never a secret secret-sync does not manage).
    #[arg(long)]
    pub force: bool,

    /// Read metadata only and report what would be written: no credential read, no token
    /// request, no write.
    #[arg(long)]
    pub dry_run: bool,

    /// Summary format on stdout.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// `credentials`' exit codes.
pub const CREDENTIALS_EXIT_CODES_HELP: &str = "\
Exit codes:
  0  every selected job's credentials were read
  1  at least one job's credentials could not be read (Graph refused, unreachable)
  2  usage or configuration error (no job watches its credentials, bad flag)";

/// `rotate`'s exit codes.
pub const ROTATE_EXIT_CODES_HELP: &str = "\
Exit codes:
  0  rotated, or nothing to do (a retirement not yet due), or the dry run's plan printed
  1  the rotation failed and was undone (the old secret is kept): see the message
  2  usage or configuration error (the job does not rotate, bad flag)";

#[derive(Debug, Args)]
pub struct CredentialsArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    /// Only this job (repeat for several). Default: every job that watches its credentials.
    #[arg(long = "job", value_name = "NAME")]
    pub jobs: Vec<String>,

    /// Output format on stdout.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    /// The job whose client secret to rotate (it needs [jobs.NAME.rotation] enabled = true).
    #[arg(long, value_name = "NAME")]
    pub job: String,

    /// Read the app and the stored secret and say what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub config: ConfigArgs,

    /// Plan only this job (repeat for several). Default: every job.
    #[arg(long = "job", value_name = "NAME")]
    pub jobs: Vec<String>,

    /// Plan what `run --force` would do.
    #[arg(long)]
    pub force: bool,

    /// Plan format on stdout.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Directory (tenant) ID: a GUID or a verified domain such as contoso.onmicrosoft.com.
    #[arg(long, env = "AZURE_TENANT_ID", value_name = "TENANT")]
    pub tenant_id: Option<String>,

    /// Application (client) ID of the app registration, or of a user-assigned managed identity.
    #[arg(long, env = "AZURE_CLIENT_ID", value_name = "GUID")]
    pub client_id: Option<String>,

    /// The one resource to get a token for, ending in /.default (e.g. https://graph.microsoft.com/.default).
    #[arg(long, value_name = "SCOPE")]
    pub scope: String,

    /// Authority: `public` (default), `usgov`, `china`, or the base URL of an authority
    /// (https; http only for a loopback address). The tool appends /{tenant}/oauth2/v2.0/token.
    #[arg(long, env = "AZURE_AUTHORITY_HOST", value_name = "URL")]
    pub authority: Option<String>,

    #[command(flatten)]
    pub credential: CredentialArgs,

    /// Private key (PEM, PKCS#8) of --certificate when it is not in the same file.
    #[arg(long, value_name = "FILE", requires = "certificate")]
    pub certificate_key: Option<PathBuf>,

    /// Client assertion signature for --certificate: ps256 (x5t#S256, current Entra docs) or rs256 (x5t).
    #[arg(long, value_enum, default_value_t = AssertionAlg::Ps256, requires = "certificate")]
    pub assertion_alg: AssertionAlg,

    /// With --managed-identity on an Azure Arc-enabled server: the directory the agent writes
    /// its key files into (default /var/opt/azcmagent/tokens). A challenge naming a file
    /// elsewhere is refused.
    #[arg(long, value_name = "DIR", requires = "managed_identity")]
    pub arc_token_dir: Option<PathBuf>,

    /// Extra CA certificate (PEM) to trust, for a private authority or a TLS-intercepting proxy.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// What to print: the bare token (text) or a JSON object with its expiry.
    #[arg(long, short = 'o', value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// The credential flags; exactly one kind must be chosen.
#[derive(Debug, Args)]
#[group(id = "credential", required = true, multiple = false)]
pub struct CredentialArgs {
    /// Name of the environment variable that holds the client secret (its Value, not its ID).
    #[arg(long, value_name = "VAR", group = "credential")]
    pub client_secret_env: Option<String>,

    /// File whose content is the client secret (a trailing newline is ignored).
    #[arg(long, value_name = "FILE", group = "credential")]
    pub client_secret_file: Option<PathBuf>,

    /// Certificate registered on the app (PEM). It may also hold the private key.
    #[arg(long, value_name = "FILE", group = "credential")]
    pub certificate: Option<PathBuf>,

    /// Federated (OIDC) token file, for workload identity federation. Re-read on every request.
    #[arg(long, value_name = "FILE", group = "credential")]
    pub federated_token_file: Option<PathBuf>,

    /// Workload identity as Azure sets it up (AKS and others): the federated token file named by
    /// AZURE_FEDERATED_TOKEN_FILE, with AZURE_TENANT_ID and AZURE_CLIENT_ID.
    #[arg(long, group = "credential")]
    pub workload_identity: bool,

    /// Name of the environment variable that holds a federated (OIDC) token.
    #[arg(long, value_name = "VAR", group = "credential")]
    pub federated_token_env: Option<String>,

    /// Get the federated token from GitHub Actions' OIDC endpoint
    /// (needs `permissions: id-token: write` in the workflow).
    #[arg(long, group = "credential")]
    pub github_oidc: bool,

    /// Use the managed identity of the Azure host (IMDS; App Service, Functions and Container
    /// Apps; Azure Arc-enabled servers), detected from IDENTITY_ENDPOINT, IDENTITY_HEADER and
    /// IMDS_ENDPOINT as the Azure SDKs do. With --client-id, a user-assigned identity.
    #[arg(long, group = "credential")]
    pub managed_identity: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AssertionAlg {
    Ps256,
    Rs256,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn watch_refuses_the_one_pass_flags() {
        for flag in ["--force", "--dry-run", "--output=json"] {
            let err = Cli::try_parse_from(["secret-sync", "run", "--watch", flag]).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{flag}: {err}"
            );
        }
        let cli = Cli::try_parse_from(["secret-sync", "run", "--watch", "--job", "a"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Run(RunArgs { watch: true, .. })
        ));
        let cli = Cli::try_parse_from(["secret-sync", "daemon", "-c", "x.toml"]).unwrap();
        assert!(matches!(cli.command, Command::Daemon(_)));
    }

    #[test]
    fn each_command_documents_only_the_exit_codes_it_can_end_with() {
        let help = |name: &str| {
            Cli::command()
                .find_subcommand_mut(name)
                .unwrap()
                .render_long_help()
                .to_string()
        };
        let validate = help("validate");
        assert!(
            validate.contains("  2  the config has errors"),
            "{validate}"
        );
        assert!(
            !validate.contains("  1  "),
            "validate cannot exit 1: {validate}"
        );
        for name in ["token", "run", "plan"] {
            let text = help(name);
            for code in ["  0  ", "  1  ", "  2  "] {
                assert!(text.contains(code), "{name} lacks {code}: {text}");
            }
        }
    }

    #[test]
    fn help_documents_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit codes:"), "help was: {help}");
        assert!(
            help.contains("2  usage or configuration error"),
            "help was: {help}"
        );
    }
}
