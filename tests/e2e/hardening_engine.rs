//! Hardening of the engine, the config and the logs, through the built binary (issue 9 items
//! 2, 3, 7, 8, 9; issue 10 items 5 and 7): `RUST_LOG=trace` cannot make the SDKs print what
//! they send, a value read at run time is never echoed in an error, a stored expiry no token
//! can have is not trusted, a token that does not outlive `refresh_before` fails its targets,
//! `pass_timeout` ends a pass that a server holds, one secret cannot be two targets, and a
//! FIFO in place of a credential file cannot hang a run.

use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use serde_json::{Value, json};
use testkit::real::{Moto, OpenBao};
use testkit::{KeyVaultEmulator, TokenOptions};

use crate::support::{Run, TlsEntra, issued_access_tokens, now_unix, secret_sync};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0a1b2c3d-1111-2222-3333-444455556666";
const SECRET: &str = "Zq8~hardening.engine.client-secret";
const KV_CLIENT: &str = "5e6f7a8b-aaaa-bbbb-cccc-ddddeeeeffff";
const KV_SECRET: &str = "Kv9~hardening.engine.keyvault-writer";
const GRAPH: &str = "https://graph.microsoft.com/.default";
const AWS_KEY: &str = "AKIAHARDENINGENGINE1";
const AWS_SECRET_KEY: &str = "hardening/engine/aws/secret/access/key00";
const A_YEAR: i64 = 365 * 24 * 3600;

/// The Entra emulator (HTTPS) with the Graph app and the Key Vault writer, and a temp dir with
/// its CA, an `out/` dir for the file backend and the config.
struct Entra(TlsEntra);

impl std::ops::Deref for Entra {
    type Target = TlsEntra;

    fn deref(&self) -> &TlsEntra {
        &self.0
    }
}

impl Entra {
    async fn start() -> Entra {
        Entra(TlsEntra::start(&[(TENANT, CLIENT, SECRET), (TENANT, KV_CLIENT, KV_SECRET)]).await)
    }

    /// `[settings]` for this emulator, with `extra` lines, and the `local` file backend.
    fn settings(&self, extra: &str) -> String {
        format!(
            "[settings]\nauthority = \"{}\"\nca_file = \"{}\"\n{extra}\n\
             [backends.local]\nkind = \"file\"\ndir = \"{}\"\n\n",
            self.entra.base_url(),
            self.ca.display(),
            self.out().display()
        )
    }

    /// Every value that must never be printed: the client secrets, the AWS secret key, every
    /// token the emulator issued, and `more`.
    fn secrets(&self, more: &[&str]) -> Vec<String> {
        let mut all: Vec<String> = [SECRET, KV_SECRET, AWS_SECRET_KEY]
            .iter()
            .chain(more)
            .map(|s| (*s).to_owned())
            .collect();
        all.extend(issued_access_tokens(&self.entra));
        all
    }

    fn assert_no_leak(&self, run: &Run, more: &[&str]) {
        let secrets = self.secrets(more);
        run.assert_no_leak(&secrets.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

/// `jobs.graph` with the Graph app's secret from `APP_SECRET` and `targets`.
fn graph_job(targets: &str, extra: &str) -> String {
    format!(
        "[jobs.graph]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
         client_secret = {{ env = \"APP_SECRET\" }}\nscope = \"{GRAPH}\"\n{extra}\n\
         targets = [{targets}]\n"
    )
}

/// `secret-sync ARGS --config CONFIG` with the app secrets and `RUST_LOG=info`.
async fn run(config: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut all = vec![args[0], "--config", config];
    all.extend(&args[1..]);
    let mut vars = vec![
        ("APP_SECRET", SECRET),
        ("KV_SECRET", KV_SECRET),
        ("RUST_LOG", "info"),
    ];
    vars.extend(env);
    secret_sync(&all, &vars).await
}

/// The summary's entry for `backend:name`.
fn entry<'a>(doc: &'a Value, target: &str) -> &'a Value {
    doc["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            format!(
                "{}:{}",
                t["backend"].as_str().unwrap(),
                t["name"].as_str().unwrap()
            ) == target
        })
        .unwrap_or_else(|| panic!("no {target} in {doc:#}"))
}

/// The `error` of the JSON summary's entry for `backend:name`.
fn target_error(run: &Run, target: &str) -> String {
    entry(&run.json(), target)["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{target} has no error: {}", run.stdout))
        .to_owned()
}

// ----- logs at RUST_LOG=trace -----

/// The crates whose logs must stop at `debug` (by the start of the target).
const CAPPED: &[&str] = &[
    "aws_smithy",
    "aws_sigv4",
    "aws_config",
    "aws_sdk",
    "aws_runtime",
    "hyper",
    "reqwest",
    "h2",
    "rustls",
    "tokio_rustls",
    "azure_",
    "typespec",
    "vaultrs",
    "rustify",
    "tower",
];

/// Checks every JSON log line of `stderr`: none at TRACE from a capped crate. Returns how many
/// DEBUG lines came from capped crates (they are not silenced, only capped).
fn assert_capped_at_debug(stderr: &str) -> usize {
    let mut lines = 0;
    let mut capped_debug = 0;
    for line in stderr.lines().filter(|l| l.starts_with('{')) {
        let event: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        lines += 1;
        let target = event["fields"]["log.target"]
            .as_str()
            .or(event["target"].as_str())
            .unwrap_or_default();
        if !CAPPED.iter().any(|c| target.starts_with(c)) {
            continue;
        }
        let level = event["level"].as_str().unwrap_or_default();
        assert_ne!(
            level, "TRACE",
            "a trace event from {target} got through: {line}"
        );
        if level == "DEBUG" {
            capped_debug += 1;
        }
    }
    assert!(lines > 0, "no JSON log line at RUST_LOG=trace:\n{stderr}");
    capped_debug
}

#[tokio::test]
async fn trace_logs_never_show_sdk_traces_or_a_secret_on_any_backend_or_the_token_command() {
    let e = Entra::start().await;
    let kv = e.key_vault(TENANT).await;
    let bao = OpenBao::start();
    bao.api(
        "POST",
        "secret/data/apps/graph",
        Some(json!({"data": {"client_id": CLIENT, "client_secret": SECRET}})),
    );
    let moto = Moto::start();
    let config = e.write_config(&format!(
        "{settings}\
         [backends.bao]\nkind = \"vault\"\naddress = \"{bao}\"\n\
         auth = {{ method = \"token\", token_env = \"BAO_TOKEN\" }}\n\n\
         [backends.aws]\nkind = \"aws-secrets-manager\"\nregion = \"eu-west-1\"\nendpoint_url = \"{moto}\"\n\n\
         [backends.kv]\nkind = \"azure-key-vault\"\nvault_url = \"{kv}\"\nca_file = \"{ca}\"\n\
         auth = {{ method = \"client-secret\", tenant_id = \"{TENANT}\", client_id = \"{KV_CLIENT}\", client_secret = {{ env = \"KV_SECRET\" }} }}\n\n\
         [jobs.graph]\ntenant_id = \"{TENANT}\"\n\
         client_id = {{ from = \"bao\", ref = \"apps/graph#client_id\" }}\n\
         client_secret = {{ from = \"bao\", ref = \"apps/graph#client_secret\" }}\n\
         scope = \"{GRAPH}\"\n\
         targets = [{{ to = \"local\", name = \"graph.json\", format = \"json\" }}, {{ to = \"bao\", name = \"tokens/graph\" }}, \
         {{ to = \"aws\", name = \"graph/token\" }}, {{ to = \"kv\", name = \"graph-token\" }}]\n",
        settings = e.settings(""),
        bao = bao.address(),
        moto = moto.endpoint_url(),
        kv = kv.vault_url(),
        ca = e.ca.display(),
    ));
    let bao_token = bao.root_token().expose_secret().to_owned();
    let env = [
        ("BAO_TOKEN", bao_token.as_str()),
        ("AWS_ACCESS_KEY_ID", AWS_KEY),
        ("AWS_SECRET_ACCESS_KEY", AWS_SECRET_KEY),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("RUST_LOG", "trace"),
    ];
    let synced = run(
        &config,
        &["run", "--log-format", "json", "--output", "json"],
        &env,
    )
    .await;
    synced.assert_code(0);
    let doc = synced.json();
    for target in [
        "local:graph.json",
        "bao:tokens/graph",
        "aws:graph/token",
        "kv:graph-token",
    ] {
        assert_eq!(
            entry(&doc, target)["outcome"],
            "created",
            "{target}: {doc:#}"
        );
    }
    let capped_debug = assert_capped_at_debug(&synced.stderr);
    assert!(
        capped_debug > 0,
        "the SDKs' debug events should still show at RUST_LOG=trace:\n{}",
        synced.stderr
    );
    e.assert_no_leak(&synced, &[&bao_token]);

    let token = secret_sync(
        &[
            "token",
            "--log-format",
            "json",
            "--tenant-id",
            TENANT,
            "--client-id",
            CLIENT,
            "--scope",
            GRAPH,
            "--authority",
            &e.entra.base_url(),
            "--ca-file",
            e.ca.to_str().unwrap(),
            "--client-secret-env",
            "APP_SECRET",
        ],
        &[("APP_SECRET", SECRET), ("RUST_LOG", "trace")],
    )
    .await;
    token.assert_code(0);
    assert_capped_at_debug(&token.stderr);
    // The token goes to stdout (that is the command's job), never to the log.
    let printed = token.stdout.trim().to_owned();
    assert!(!printed.is_empty());
    for secret in e.secrets(&[&bao_token]) {
        assert!(
            !token.stderr.contains(&secret),
            "a secret or token in the token command's log:\n{}",
            token.stderr
        );
    }
}

// ----- values read at run time are never echoed -----

#[tokio::test]
async fn a_ref_to_the_client_secret_for_client_id_never_prints_the_secret() {
    let e = Entra::start().await;
    let creds = e.dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(
        creds.join("app.json"),
        json!({"client_id": CLIENT, "client_secret": SECRET}).to_string(),
    )
    .unwrap();
    let targets = "{ to = \"local\", name = \"graph.json\", format = \"json\" }";
    let config = e.write_config(&format!(
        "{}[backends.creds]\nkind = \"file\"\ndir = \"{}\"\n\n\
         [jobs.graph]\ntenant_id = \"{TENANT}\"\n\
         client_id = {{ from = \"creds\", ref = \"app.json#client_secret\" }}\n\
         client_secret = {{ from = \"creds\", ref = \"app.json#client_secret\" }}\n\
         scope = \"{GRAPH}\"\ntargets = [{targets}]\n\n\
         [jobs.env]\ntenant_id = {{ env = \"APP_TENANT\" }}\nclient_id = \"{CLIENT}\"\n\
         client_secret = {{ env = \"APP_SECRET\" }}\nscope = \"api://other/.default\"\n\
         targets = [{{ to = \"local\", name = \"other.json\", format = \"json\" }}]\n",
        e.settings(""),
        creds.display()
    ));
    // The tenant id's variable holds the secret too, by the same kind of mistake.
    let env = [("APP_TENANT", SECRET)];
    for output in ["json", "text"] {
        let synced = run(&config, &["run", "--output", output], &env).await;
        synced.assert_code(1);
        e.assert_no_leak(&synced, &[]);
        let all = format!("{}{}", synced.stdout, synced.stderr);
        assert!(
            // (Quotes are escaped in JSON and in log fields.)
            all.contains("app.json#client_secret is not usable: the value is not a GUID"),
            "{all}"
        );
        assert!(
            all.contains("tenant_id read from environment variable APP_TENANT is not usable"),
            "{all}"
        );
        assert!(all.contains("the value is not shown"), "{all}");
    }
    assert_eq!(e.entra.token_request_count(), 0);
}

// ----- stored expiries no token can have -----

#[tokio::test]
async fn a_stored_expiry_a_year_ahead_is_not_trusted_in_a_file_or_key_vault() {
    let e = Entra::start().await;
    let kv = e.key_vault(TENANT).await;
    let config = e.write_config(&format!(
        "{}[backends.kv]\nkind = \"azure-key-vault\"\nvault_url = \"{}\"\nca_file = \"{}\"\n\
         auth = {{ method = \"client-secret\", tenant_id = \"{TENANT}\", client_id = \"{KV_CLIENT}\", \
         client_secret = {{ env = \"KV_SECRET\" }} }}\n\n{}",
        e.settings(""),
        kv.vault_url(),
        e.ca.display(),
        graph_job(
            "{ to = \"local\", name = \"graph.json\", format = \"json\" }, { to = \"kv\", name = \"graph-token\" }",
            ""
        )
    ));
    let first = run(&config, &["run", "--output", "json"], &[]).await;
    first.assert_code(0);

    // Someone sets the expiry a year ahead: in the JSON document, and `exp` in the portal.
    let far = now_unix() + A_YEAR;
    let file = e.out().join("graph.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    doc["expires_on"] = far.into();
    doc["expires_at"] = time::OffsetDateTime::from_unix_timestamp(far)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
        .into();
    std::fs::write(&file, doc.to_string()).unwrap();
    set_key_vault_exp(&e, &kv, "graph-token", far).await;
    assert_eq!(kv.secret("graph-token").unwrap().expires, Some(far));

    let plan = run(&config, &["plan", "--output", "json"], &[]).await;
    plan.assert_code(0);
    let planned = plan.json();
    for target in ["local:graph.json", "kv:graph-token"] {
        let line = entry(&planned, target);
        assert_eq!(line["action"], "update", "{target}: {planned:#}");
        let reason = line["reason"].as_str().unwrap();
        assert!(
            reason.contains("is more than 48 hours ahead, longer than any Entra ID token lives"),
            "{target}: {reason}"
        );
    }

    let requests = e.entra.token_request_count();
    let second = run(&config, &["run", "--output", "json"], &[]).await;
    second.assert_code(0);
    let doc = second.json();
    for target in ["local:graph.json", "kv:graph-token"] {
        assert_eq!(
            entry(&doc, target)["outcome"],
            "updated",
            "{target}: {doc:#}"
        );
    }
    assert!(
        e.entra.token_request_count() > requests,
        "a new token was requested"
    );
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let expires_on = stored["expires_on"].as_i64().unwrap();
    assert!(expires_on < now_unix() + 2 * 3600, "{stored}");
    let exp = kv.secret("graph-token").unwrap().expires.unwrap();
    assert!(exp < now_unix() + 2 * 3600, "Key Vault exp {exp}");
    e.assert_no_leak(&second, &[]);
}

/// Sets `exp` of the latest version of `name` through the vault's HTTP API, as the portal
/// would, with the Key Vault token the emulator issued to secret-sync's writer.
async fn set_key_vault_exp(e: &Entra, kv: &KeyVaultEmulator, name: &str, exp: i64) {
    let bearer = e
        .entra
        .issued_tokens()
        .into_iter()
        .find(|t| t.client_id == KV_CLIENT)
        .expect("secret-sync logged in to Key Vault");
    let ca = reqwest::Certificate::from_pem(kv.ca_pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let answer = client
        .patch(format!(
            "{}/secrets/{name}?api-version=2025-07-01",
            kv.vault_url()
        ))
        .bearer_auth(bearer.access_token.expose_secret())
        .json(&json!({"attributes": {"exp": exp}}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "setting exp of {name}");
}

// ----- tokens that do not outlive refresh_before -----

#[tokio::test]
async fn a_token_shorter_lived_than_refresh_before_fails_its_target_and_says_what_to_change() {
    let e = Entra::start().await;
    e.entra.set_token_options(TokenOptions {
        lifetime: Duration::from_secs(120),
        ..TokenOptions::default()
    });
    let config = e.write_config(&format!(
        "{}{}",
        e.settings("refresh_before = \"15m\""),
        graph_job(
            "{ to = \"local\", name = \"graph.json\", format = \"json\" }",
            ""
        )
    ));
    let synced = run(&config, &["run", "--output", "json"], &[]).await;
    synced.assert_code(1);
    let doc = synced.json();
    let line = entry(&doc, "local:graph.json");
    assert_eq!(line["outcome"], "failed", "{doc:#}");
    let error = line["error"].as_str().unwrap();
    for part in [
        "written (created), but the token Entra ID issued is valid for only",
        "not longer than refresh_before (15m)",
        "lower refresh_before below the token lifetime, or ask for longer tokens",
    ] {
        assert!(error.contains(part), "{part:?} not in {error}");
    }
    // It was written all the same: it is newer than what the target held.
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(e.out().join("graph.json")).unwrap())
            .unwrap();
    assert!(stored["expires_on"].as_i64().unwrap() <= now_unix() + 120);
    e.assert_no_leak(&synced, &[]);
}

// ----- pass_timeout -----

/// A server on 127.0.0.1 that accepts connections and never answers; held until dropped.
struct Silent {
    addr: String,
    _thread: std::thread::JoinHandle<()>,
}

impl Silent {
    fn start() -> Silent {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => held.push(stream),
                    Err(_) => return,
                }
            }
        });
        Silent {
            addr,
            _thread: thread,
        }
    }
}

#[tokio::test]
async fn pass_timeout_ends_a_run_held_by_a_token_endpoint_or_a_vault_that_never_answers() {
    let e = Entra::start().await;
    let silent = Silent::start();

    // The token endpoint never answers: [settings] pass_timeout ends the pass.
    let config = e.write_config(&format!(
        "[settings]\nauthority = \"http://{}\"\npass_timeout = \"3s\"\n\n\
         [backends.local]\nkind = \"file\"\ndir = \"{}\"\n\n{}",
        silent.addr,
        e.out().display(),
        graph_job(
            "{ to = \"local\", name = \"graph.json\", format = \"json\" }",
            ""
        )
    ));
    let started = Instant::now();
    let synced = run(&config, &["run", "--output", "json"], &[]).await;
    let took = started.elapsed();
    synced.assert_code(1);
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let error = target_error(&synced, "local:graph.json");
    assert!(
        error.contains("did not finish within its deadline, settings.pass_timeout = \"3s\"")
            && error.contains("raise settings.pass_timeout"),
        "{error}"
    );
    e.assert_no_leak(&synced, &[]);

    // A Vault holding the job's client secret never answers: the job's own pass_timeout.
    let vault_token = "hvs.hardening-engine-vault-token";
    let config = e.write_config(&format!(
        "{}[backends.vault]\nkind = \"vault\"\naddress = \"http://{}\"\nkv_version = 2\n\
         auth = {{ method = \"token\", token_env = \"VAULT_TOKEN\" }}\n\n\
         [jobs.graph]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
         client_secret = {{ from = \"vault\", ref = \"apps/graph#client_secret\" }}\n\
         scope = \"{GRAPH}\"\npass_timeout = \"2s\"\n\
         targets = [{{ to = \"local\", name = \"graph.json\", format = \"json\" }}]\n",
        e.settings(""),
        silent.addr
    ));
    let started = Instant::now();
    let synced = run(
        &config,
        &["run", "--output", "json"],
        &[("VAULT_TOKEN", vault_token)],
    )
    .await;
    let took = started.elapsed();
    synced.assert_code(1);
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let error = target_error(&synced, "local:graph.json");
    assert!(
        error.contains("jobs.graph.pass_timeout = \"2s\""),
        "{error}"
    );
    e.assert_no_leak(&synced, &[vault_token]);
}

// ----- one secret, two targets -----

#[tokio::test]
async fn validate_refuses_one_file_through_two_backends_and_key_vault_names_differing_in_case() {
    let dir = tempfile::tempdir().unwrap();
    let run_a = dir.path().join("run/a");
    std::fs::create_dir_all(run_a.join("sub")).unwrap();
    std::os::unix::fs::symlink(&run_a, dir.path().join("alias")).unwrap();
    let job = |name: &str, to: &str, target: &str| {
        format!(
            "[jobs.{name}]\nmanaged_identity = true\nscope = \"{GRAPH}\"\n\
             targets = [{{ to = \"{to}\", name = \"{target}\" }}]\n\n"
        )
    };
    let backends = format!(
        "[backends.a]\nkind = \"file\"\ndir = \"{a}\"\n\n\
         [backends.sub]\nkind = \"file\"\ndir = \"{a}/sub\"\n\n\
         [backends.alias]\nkind = \"file\"\ndir = \"{alias}\"\n\n\
         [backends.kv]\nkind = \"azure-key-vault\"\nvault_url = \"https://contoso.vault.azure.net\"\n\
         auth = {{ method = \"managed-identity\" }}\n\n",
        a = run_a.display(),
        alias = dir.path().join("alias").display(),
    );
    let config = dir.path().join("secret-sync.toml");
    let cases = [
        (
            job("one", "a", "sub/token"),
            job("two", "sub", "token"),
            "both are the file",
        ),
        (
            job("one", "a", "token"),
            job("two", "alias", "token"),
            "both are the file",
        ),
        (
            job("one", "kv", "graph-token"),
            job("two", "kv", "GRAPH-Token"),
            "Key Vault names are case-insensitive",
        ),
    ];
    for (first, second, why) in cases {
        std::fs::write(&config, format!("{backends}{first}{second}")).unwrap();
        let checked = secret_sync(&["validate", "--config", config.to_str().unwrap()], &[]).await;
        checked.assert_code(2);
        for part in [
            "jobs.two.targets[0].name",
            "the target jobs.one.targets[0]",
            why,
        ] {
            assert!(
                checked.stderr.contains(part),
                "{part:?} not in:\n{}",
                checked.stderr
            );
        }
    }
    // Nested dirs holding different files are fine.
    std::fs::write(
        &config,
        format!(
            "{backends}{}{}",
            job("one", "a", "sub/x"),
            job("two", "sub", "y")
        ),
    )
    .unwrap();
    secret_sync(&["validate", "--config", config.to_str().unwrap()], &[])
        .await
        .assert_code(0);
}

// ----- credential files -----

#[tokio::test]
async fn a_fifo_in_place_of_the_client_secret_file_fails_the_job_without_hanging() {
    let e = Entra::start().await;
    let fifo = e.dir.path().join("client-secret");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let config = e.write_config(&format!(
        "{}[jobs.graph]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
         client_secret = {{ file = \"{}\" }}\nscope = \"{GRAPH}\"\n\
         targets = [{{ to = \"local\", name = \"graph.json\", format = \"json\" }}]\n",
        e.settings("pass_timeout = \"30s\""),
        fifo.display()
    ));
    let started = Instant::now();
    let synced = run(&config, &["run", "--output", "json"], &[]).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    synced.assert_code(1);
    let error = target_error(&synced, "local:graph.json");
    assert!(
        error.contains(&format!(
            "client_secret: cannot read the file {}: it is not a regular file",
            fifo.display()
        )),
        "{error}"
    );
    assert_eq!(e.entra.token_request_count(), 0);
}
