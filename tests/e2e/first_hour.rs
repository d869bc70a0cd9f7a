//! The first hour of a new user (issue 12): the mistakes people make that used to pass
//! `validate` and fail later, or fail with the wrong exit code, and the output they read or
//! parse. Each test runs the built binary where a user meets the problem: a file `dir` that
//! does not exist, a Vault path copied from the API, an authority holding the tenant, a missing
//! environment variable, `--output json`, `--help`, `--job` typos, completions.

use std::path::{Path, PathBuf};

use testkit::{AppRegistration, EntraEmulator};

use std::time::Duration;

use crate::support::{Daemon, Run, http_get, secret_sync, wait_until};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0a1b2c3d-1111-2222-3333-444455556666";
const SECRET: &str = "Zq8~e2e.first.hour.client-secret";
const GRAPH: &str = "https://graph.microsoft.com/.default";

/// The Entra emulator (plain http on 127.0.0.1) with one app, and a temp dir for the config.
struct Fixture {
    entra: EntraEmulator,
    dir: tempfile::TempDir,
}

impl Fixture {
    async fn start() -> Fixture {
        let entra = EntraEmulator::start().await.unwrap();
        entra.register_app(AppRegistration::new(TENANT, CLIENT).with_secret(SECRET));
        Fixture {
            entra,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `[settings]` with the emulator's authority, then `rest`; returns the config's path.
    fn config(&self, rest: &str) -> PathBuf {
        let path = self.path("secret-sync.toml");
        std::fs::write(
            &path,
            format!(
                "[settings]\nauthority = \"{}\"\n\n{rest}",
                self.entra.base_url()
            ),
        )
        .unwrap();
        path
    }

    /// A job `name` reading its client secret from `secret_env`, writing `targets`.
    fn job(name: &str, secret_env: &str, targets: &str) -> String {
        format!(
            "[jobs.{name}]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
             client_secret = {{ env = \"{secret_env}\" }}\nscope = \"{GRAPH}\"\n\
             targets = [{targets}]\n\n"
        )
    }
}

async fn run(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--config", config.to_str().unwrap()]);
    secret_sync(&all, env).await
}

// ----- item 4: a file backend whose dir does not exist -----

#[tokio::test]
async fn a_file_dir_that_does_not_exist_fails_plan_and_run_before_any_token_request() {
    let f = Fixture::start().await;
    std::fs::create_dir(f.path("tokens")).unwrap();
    let config = f.config(&format!(
        "[backends.typo]\nkind = \"file\"\ndir = \"tokenz\"\n\n\
         [backends.local]\nkind = \"file\"\ndir = \"tokens\"\n\n{}",
        Fixture::job(
            "graph",
            "GRAPH_SECRET",
            "{ to = \"typo\", name = \"graph-token\" }"
        ) + &Fixture::job(
            "nested",
            "GRAPH_SECRET",
            "{ to = \"local\", name = \"apps/graph/token\" }"
        )
    ));
    let env = [("GRAPH_SECRET", SECRET)];
    let missing = f.path("tokenz");

    let plan = run(&config, &["plan", "--job", "graph"], &env).await;
    plan.assert_code(1);
    assert!(
        plan.stdout.contains("error")
            && plan
                .stdout
                .contains(&format!("{} does not exist", missing.display()))
            && plan.stdout.contains("create it"),
        "plan: {}",
        plan.stdout
    );
    assert!(plan.stdout.contains("1 would fail"), "{}", plan.stdout);

    let run1 = run(&config, &["run"], &env).await;
    run1.assert_code(1);
    let line = run1
        .stdout
        .lines()
        .find(|l| l.contains("typo:graph-token"))
        .unwrap_or_else(|| panic!("no line for the target: {}", run1.stdout));
    assert!(
        line.contains("failed")
            && line.contains(&format!("{} does not exist", missing.display()))
            && line.contains("mkdir -p"),
        "{line}"
    );
    assert!(
        !missing.exists(),
        "dir was created: a typo must not be hidden"
    );
    // Only the nested job (dir exists) asked for a token; its subdirectories were created.
    assert_eq!(f.entra.token_request_count(), 1);
    assert!(
        f.path("tokens/apps/graph/token").is_file(),
        "{}",
        run1.stdout
    );
    run1.assert_no_leak(&[SECRET]);
}

// ----- item 5: a Vault path copied from the API -----

#[tokio::test]
async fn a_vault_target_name_with_the_mount_or_data_prefix_is_refused_with_the_right_name() {
    let f = Fixture::start().await;
    let vault = |name: &str, mount: &str, kv: &str| {
        format!(
            "[backends.{name}]\nkind = \"vault\"\naddress = \"http://127.0.0.1:8200\"\n\
             mount = \"{mount}\"\n{kv}auth = {{ method = \"token\", token_env = \"VAULT_TOKEN\" }}\n\n"
        )
    };
    let config = f.config(&format!(
        "{}{}{}{}",
        vault("v2", "secret", "kv_version = 2\n"),
        vault("v1", "kv/apps", "kv_version = 1\n"),
        vault("detect", "secret", ""),
        Fixture::job(
            "graph",
            "GRAPH_SECRET",
            "{ to = \"v2\", name = \"secret/data/apps/graph/token\" }, \
             { to = \"v2\", name = \"secret/metadata/apps/graph/meta\" }, \
             { to = \"v1\", name = \"kv/apps/graph/token\" }, \
             { to = \"detect\", name = \"secret/apps/graph/other\" }, \
             { to = \"v2\", name = \"apps/secret/data/fine\" }"
        )
    ));
    let out = run(&config, &["validate"], &[]).await;
    out.assert_code(2);
    for (index, right) in [
        (0, "\"apps/graph/token\""),
        (1, "\"apps/graph/meta\""),
        (2, "\"graph/token\""),
        (3, "\"apps/graph/other\""),
    ] {
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains(&format!("targets[{index}].name")))
            .unwrap_or_else(|| panic!("no error for targets[{index}]: {}", out.stderr));
        assert!(
            line.contains("starts with the mount") && line.contains(&format!("write {right}")),
            "{line}"
        );
    }
    assert!(!out.stderr.contains("targets[4]"), "{}", out.stderr);
    assert!(
        out.stderr.contains("4 configuration errors"),
        "{}",
        out.stderr
    );
}

// ----- item 6: an authority that holds the tenant -----

#[tokio::test]
async fn an_authority_ending_in_a_tenant_is_refused_naming_tenant_id() {
    let f = Fixture::start().await;
    for tenant in ["contoso.onmicrosoft.com", TENANT, "common", "organizations"] {
        let authority = format!("https://login.microsoftonline.com/{tenant}/");
        let path = f.path("authority.toml");
        std::fs::write(
            &path,
            format!(
                "[settings]\nauthority = \"{authority}\"\n\n[backends.local]\nkind = \"file\"\n\
                 dir = \".\"\n\n{}",
                Fixture::job("graph", "S", "{ to = \"local\", name = \"t\" }")
            ),
        )
        .unwrap();
        let out = run(&path, &["validate"], &[]).await;
        out.assert_code(2);
        assert!(
            out.stderr.contains("settings.authority")
                && out.stderr.contains("tenant_id")
                && out.stderr.contains("https://login.microsoftonline.com\""),
            "{tenant}: {}",
            out.stderr
        );
        let token = secret_sync(
            &[
                "token",
                "--scope",
                GRAPH,
                "--tenant-id",
                TENANT,
                "--client-id",
                CLIENT,
                "--client-secret-env",
                "S",
                "--authority",
                &authority,
            ],
            &[("S", SECRET)],
        )
        .await;
        token.assert_code(2);
        assert!(token.stderr.contains("tenant"), "{}", token.stderr);
    }
    // A path prefix that is not a tenant stays allowed.
    let config = f.config(&format!(
        "[backends.local]\nkind = \"file\"\ndir = \".\"\n\n[jobs.graph]\n\
         authority = \"{}/prefix\"\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
         client_secret = {{ env = \"S\" }}\nscope = \"{GRAPH}\"\n\
         targets = [{{ to = \"local\", name = \"t\" }}]\n",
        f.entra.base_url()
    ));
    run(&config, &["validate"], &[]).await.assert_code(0);
}

// ----- item 7: a missing environment variable is a usage error -----

#[tokio::test]
async fn a_missing_secret_variable_exits_2_and_the_other_jobs_still_run() {
    let f = Fixture::start().await;
    std::fs::create_dir(f.path("tokens")).unwrap();
    let config = f.config(&format!(
        "[backends.local]\nkind = \"file\"\ndir = \"tokens\"\n\n{}{}",
        Fixture::job("unset", "NOT_EXPORTED", "{ to = \"local\", name = \"a\" }"),
        Fixture::job("good", "GRAPH_SECRET", "{ to = \"local\", name = \"b\" }"),
    ));
    let env = [("GRAPH_SECRET", SECRET)];
    let out = run(&config, &["run"], &env).await;
    out.assert_code(2);
    assert!(
        f.path("tokens/b").is_file(),
        "the other job did not run: {}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("environment variable NOT_EXPORTED is not set"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("NOT_EXPORTED") || out.stderr.contains("environment variable"),
        "{}",
        out.stderr
    );
    out.assert_no_leak(&[SECRET]);

    // The same failure mixed with one of another kind (a wrong secret) is still exit 2; only
    // other kinds of failure are exit 1.
    std::fs::remove_file(f.path("tokens/b")).unwrap();
    let out = run(&config, &["run"], &[("GRAPH_SECRET", "wrong")]).await;
    out.assert_code(2);
    let out = run(
        &config,
        &["run", "--job", "good"],
        &[("GRAPH_SECRET", "wrong")],
    )
    .await;
    out.assert_code(1);

    // `token` agrees, and `run --help` says so.
    let token = secret_sync(
        &[
            "token",
            "--scope",
            GRAPH,
            "--tenant-id",
            TENANT,
            "--client-id",
            CLIENT,
            "--client-secret-env",
            "NOT_EXPORTED",
            "--authority",
            &f.entra.base_url(),
        ],
        &[],
    )
    .await;
    token.assert_code(2);
    let help = secret_sync(&["run", "--help"], &[]).await;
    help.assert_code(0);
    assert!(
        help.stdout.contains(
            "2  usage or configuration error, including a job that failed because an environment\n     \
             variable it names is not set"
        ),
        "{}",
        help.stdout
    );
}

// ----- item 11: run and plan --output json -----

#[tokio::test]
async fn json_output_is_versioned_with_every_count_and_a_reason_for_every_target() {
    let f = Fixture::start().await;
    std::fs::create_dir(f.path("tokens")).unwrap();
    let config = f.config(&format!(
        "[backends.local]\nkind = \"file\"\ndir = \"tokens\"\n\n\
         [backends.typo]\nkind = \"file\"\ndir = \"tokenz\"\n\n{}",
        Fixture::job(
            "graph",
            "GRAPH_SECRET",
            "{ to = \"local\", name = \"a\" }, { to = \"typo\", name = \"b\" }"
        ),
    ));
    let env = [("GRAPH_SECRET", SECRET)];
    let keys = [
        "created",
        "updated",
        "unchanged",
        "fresh",
        "skipped",
        "failed",
    ];

    let plan = run(&config, &["plan", "-o", "json"], &env).await;
    plan.assert_code(1);
    let doc = plan.json();
    assert_eq!(doc["version"], 1, "{doc}");
    for key in keys {
        assert!(doc["counts"][key].is_u64(), "plan counts lack {key}: {doc}");
    }
    assert_eq!(doc["counts"]["created"], 1, "{doc}");
    assert_eq!(doc["counts"]["failed"], 1, "{doc}");
    assert_eq!(doc["counts"]["fresh"], 0, "{doc}");

    let out = run(&config, &["run", "-o", "json"], &env).await;
    out.assert_code(1);
    let doc = out.json();
    assert_eq!(doc["version"], 1, "{doc}");
    for key in keys {
        assert!(doc["counts"][key].is_u64(), "run counts lack {key}: {doc}");
    }
    assert_eq!(doc["counts"]["created"], 1, "{doc}");
    assert_eq!(doc["counts"]["updated"], 0, "{doc}");
    let targets = doc["targets"].as_array().unwrap();
    for target in targets {
        assert!(target["reason"].is_string(), "no reason: {target}");
    }
    let failed = targets.iter().find(|t| t["outcome"] == "failed").unwrap();
    assert_eq!(failed["reason"], failed["error"], "{failed}");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{failed}"
    );
    out.assert_no_leak(&[SECRET]);

    // A config error under --output json is a JSON document on stdout too (and text on stderr).
    std::fs::write(&config, "[settings]\nrefresh_before = 5\n").unwrap();
    for command in ["run", "plan"] {
        let out = run(&config, &[command, "-o", "json"], &env).await;
        out.assert_code(2);
        let doc = out.json();
        assert_eq!(doc["version"], 1, "{doc}");
        assert_eq!(doc["ok"], false, "{doc}");
        assert_eq!(doc["error"]["kind"], "config", "{doc}");
        let errors = doc["error"]["errors"].as_array().unwrap();
        let first = errors
            .iter()
            .find(|e| e["key"] == "settings.refresh_before")
            .unwrap_or_else(|| panic!("no error for settings.refresh_before: {doc}"));
        assert_eq!(first["line"], 2, "{doc}");
        assert!(first["message"].is_string(), "{doc}");
        assert!(
            out.stderr.contains("settings.refresh_before"),
            "{}",
            out.stderr
        );
    }
}

// ----- item 13: help, did you mean, SECRET_SYNC_CONFIG, completions, Key Vault names -----

#[tokio::test]
async fn help_footers_job_typos_config_variable_completions_and_key_vault_names() {
    // validate and plan footers say only what they can do.
    let validate = secret_sync(&["validate", "--help"], &[]).await;
    assert!(
        !validate.stdout.contains("1  ") && validate.stdout.contains("2  "),
        "{}",
        validate.stdout
    );
    let schema = secret_sync(&["schema", "--help"], &[]).await;
    assert!(!schema.stdout.contains("1  "), "{}", schema.stdout);

    let f = Fixture::start().await;
    let config = f.config(&format!(
        "[backends.local]\nkind = \"file\"\ndir = \".\"\n\n{}",
        Fixture::job("graph", "S", "{ to = \"local\", name = \"t\" }")
    ));
    for command in ["run", "plan", "daemon"] {
        let out = run(&config, &[command, "--job", "grpah"], &[]).await;
        out.assert_code(2);
        assert!(
            out.stderr.contains("did you mean \"graph\"?"),
            "{command}: {}",
            out.stderr
        );
    }

    let missing = f.path("nope.toml");
    let out = secret_sync(
        &["validate"],
        &[("SECRET_SYNC_CONFIG", missing.to_str().unwrap())],
    )
    .await;
    out.assert_code(2);
    assert!(
        !out.stderr.contains("set SECRET_SYNC_CONFIG") && out.stderr.contains("SECRET_SYNC_CONFIG"),
        "{}",
        out.stderr
    );
    let out = secret_sync(&["validate", "--config", missing.to_str().unwrap()], &[]).await;
    assert!(!out.stderr.contains("SECRET_SYNC_CONFIG"), "{}", out.stderr);

    let bash = secret_sync(&["completions", "bash"], &[]).await;
    bash.assert_code(0);
    assert!(
        !bash.stdout.contains("secret__sync__man") && !bash.stdout.contains(" man "),
        "the hidden man command is offered"
    );
    assert!(bash.stdout.contains("validate"), "{}", bash.stdout);

    let kv = f.config(&format!(
        "[backends.kv]\nkind = \"azure-key-vault\"\nvault_url = \"https://contoso.vault.azure.net\"\n\
         auth = {{ method = \"managed-identity\" }}\n\n{}",
        Fixture::job("graph", "S", "{ to = \"kv\", name = \"graph_token\" }")
    ));
    let out = run(&kv, &["validate"], &[]).await;
    out.assert_code(2);
    assert!(out.stderr.contains("\"graph_token\""), "{}", out.stderr);
}

// ----- item 12: log fields people read -----

#[tokio::test]
async fn log_fields_show_times_in_rfc_3339_and_enums_as_config_words() {
    let f = Fixture::start().await;
    std::fs::create_dir(f.path("tokens")).unwrap();
    // refresh_before longer than the token: the engine's warning carries the token's expiry.
    let config = f.config(&format!(
        "[backends.local]\nkind = \"file\"\ndir = \"tokens\"\n\n{}",
        Fixture::job("graph", "GRAPH_SECRET", "{ to = \"local\", name = \"t\" }"),
    ));
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[settings]\n", "[settings]\nrefresh_before = \"3h\"\n");
    std::fs::write(&config, text).unwrap();
    let env = [("GRAPH_SECRET", SECRET), ("RUST_LOG", "info")];
    let out = run(&config, &["run"], &env).await;
    out.assert_code(1);
    let acquired = out
        .stderr
        .lines()
        .find(|l| l.contains("access token acquired"))
        .unwrap_or_else(|| panic!("no acquisition line: {}", out.stderr));
    assert!(acquired.contains("credential=client_secret"), "{acquired}");
    let rfc3339 = |line: &str| {
        let at = line.find("expires_on=").expect("an expires_on field") + "expires_on=".len();
        let value: String = line[at..]
            .chars()
            .take_while(|c| !c.is_whitespace())
            .collect();
        assert!(
            time::OffsetDateTime::parse(&value, &time::format_description::well_known::Rfc3339)
                .is_ok()
                && value.ends_with('Z'),
            "not RFC 3339: {value} in {line}"
        );
    };
    rfc3339(acquired);
    let short = out
        .stderr
        .lines()
        .find(|l| l.contains("does not last beyond refresh_before"))
        .unwrap_or_else(|| panic!("no short-token warning: {}", out.stderr));
    rfc3339(short);
    assert!(!out.stderr.contains("+00:00:00"), "{}", out.stderr);
    assert!(!out.stderr.contains("credential=Secret"), "{}", out.stderr);
    out.assert_no_leak(&[SECRET]);
}

// ----- items 7, 8, 10, 12: the daemon -----

/// A config with `listen = "127.0.0.1:0"` and `jobs`.
fn daemon_config(f: &Fixture, jobs: &str) -> PathBuf {
    std::fs::create_dir_all(f.path("tokens")).unwrap();
    let config = f.config(&format!(
        "[backends.local]\nkind = \"file\"\ndir = \"tokens\"\n\n{jobs}"
    ));
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[settings]\n", "[settings]\nlisten = \"127.0.0.1:0\"\n");
    std::fs::write(&config, text).unwrap();
    config
}

#[tokio::test]
async fn the_daemon_says_it_started_and_stopped_at_the_default_log_level() {
    let f = Fixture::start().await;
    let config = daemon_config(
        &f,
        &(Fixture::job("graph", "GRAPH_SECRET", "{ to = \"local\", name = \"a\" }")
            + &Fixture::job(
                "sharepoint",
                "GRAPH_SECRET",
                "{ to = \"local\", name = \"b\" }",
            )),
    );
    // No RUST_LOG: the default level, warn.
    let log = f.path("daemon.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_secret-sync"))
        .args(["daemon", "--config", config.to_str().unwrap()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GRAPH_SECRET", SECRET)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let started = wait_until(Duration::from_secs(20), || {
        read().contains("daemon started") && f.path("tokens/b").exists()
    })
    .await;
    assert!(started, "no start line at the default level:\n{}", read());
    let text = read();
    let line = text.lines().find(|l| l.contains("daemon started")).unwrap();
    assert!(
        line.contains(&format!("config={}", config.display()))
            && line.contains("jobs=2")
            && line.contains("listen=127.0.0.1:"),
        "{line}"
    );
    // Only that line: the passes' info lines stay below the default level.
    assert_eq!(text.lines().count(), 1, "{text}");

    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(40), child.wait())
        .await
        .expect("the daemon stops")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{}", read());
    let text = read();
    assert!(
        text.lines().last().unwrap().contains("daemon stopped"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(!text.contains(SECRET));
}

#[tokio::test]
async fn a_missing_variable_fails_the_job_in_readyz_and_is_no_token_request() {
    let f = Fixture::start().await;
    let config = daemon_config(
        &f,
        &(Fixture::job("unset", "NOT_EXPORTED", "{ to = \"local\", name = \"a\" }")
            + &Fixture::job("wrong", "WRONG_SECRET", "{ to = \"local\", name = \"b\" }")
            + &Fixture::job("good", "GRAPH_SECRET", "{ to = \"local\", name = \"c\" }")),
    );
    let daemon = Daemon::spawn(
        f.path("daemon.log"),
        &config,
        &["daemon"],
        &[("GRAPH_SECRET", SECRET), ("WRONG_SECRET", "not-the-secret")],
    );
    let addr = daemon.listen_addr().await;
    let mut metrics = String::new();
    let ran = wait_until(Duration::from_secs(20), || {
        metrics = http_get(&addr, "/metrics").2;
        ["unset", "wrong", "good"]
            .iter()
            .all(|job| metrics.contains(&format!("secret_sync_job_runs_total{{job=\"{job}\"")))
    })
    .await;
    assert!(ran, "the jobs never ran:\n{metrics}\n{}", daemon.output());
    assert!(
        metrics.contains("secret_sync_job_runs_total{job=\"unset\",outcome=\"failure\"}"),
        "{metrics}"
    );
    // No request was sent for the job without its variable; the refused one counts.
    assert!(
        !metrics.contains("secret_sync_token_requests_total{job=\"unset\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("secret_sync_token_requests_total{job=\"wrong\",outcome=\"failure\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("secret_sync_token_requests_total{job=\"good\",outcome=\"success\"} 1"),
        "{metrics}"
    );
    let (status, _, body) = http_get(&addr, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("unset (local:a: ")
            && body.contains("environment variable NOT_EXPORTED is not set"),
        "{body}"
    );
    assert!(
        !body.contains("not-the-secret") && !body.contains(SECRET),
        "{body}"
    );
    let (code, _, output) = daemon.stop("TERM").await;
    assert_eq!(code, 0, "{output}");
    assert!(!output.contains(SECRET) && !output.contains("not-the-secret"));
}

#[tokio::test]
async fn a_taken_listen_address_names_the_os_error_once() {
    let f = Fixture::start().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = daemon_config(
        &f,
        &Fixture::job("graph", "GRAPH_SECRET", "{ to = \"local\", name = \"a\" }"),
    );
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("127.0.0.1:0", &addr.to_string());
    std::fs::write(&config, text).unwrap();
    let out = run(&config, &["daemon"], &[("GRAPH_SECRET", SECRET)]).await;
    out.assert_code(2);
    assert!(
        out.stderr.contains(&format!("could not listen on {addr}")),
        "{}",
        out.stderr
    );
    assert_eq!(
        out.stderr.matches("os error").count(),
        1,
        "the OS error is repeated: {}",
        out.stderr
    );
}

// ----- item 9: an AWS backend without a region -----

#[tokio::test]
async fn an_aws_backend_without_a_region_prints_our_message_without_sdk_noise() {
    let f = Fixture::start().await;
    let config = f.config(&format!(
        "[backends.aws]\nkind = \"aws-secrets-manager\"\n\n{}",
        Fixture::job(
            "graph",
            "GRAPH_SECRET",
            "{ to = \"aws\", name = \"graph/token\" }"
        )
    ));
    // The instance metadata service the SDK probes for a region: a closed port on 127.0.0.1.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let imds = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let home = f.path("home");
    std::fs::create_dir(&home).unwrap();
    let env = [
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.as_str()),
        ("HOME", home.to_str().unwrap()),
        ("AWS_ACCESS_KEY_ID", "AKIAE2ETESTKEY000001"),
        (
            "AWS_SECRET_ACCESS_KEY",
            "e2e/aws/secret/access/key/value/0000000",
        ),
    ];
    for format in ["text", "json"] {
        let out = run(&config, &["plan", "--log-format", format], &env).await;
        out.assert_code(1);
        assert!(
            out.stdout.contains("no AWS region is configured"),
            "{}",
            out.stdout
        );
        assert!(
            !out.stderr.contains("aws_config") && !out.stderr.contains("IMDS"),
            "SDK noise on stderr: {}",
            out.stderr
        );
        assert_eq!(out.stderr.lines().count(), 2, "{}", out.stderr);
    }
}
