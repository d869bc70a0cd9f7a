//! Issue 13 through the binary: `credentials` (watch), `plan`'s recorded expiry, the daemon's
//! metric and warning, and `rotate` with every write-back store and its failure cases, against
//! the Entra emulator's Graph (testkit), real OpenBao and moto, and the Key Vault emulator.
//! Every test scans the output for the secrets (old and new) and the tokens issued.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::{Value, json};
use testkit::real::{Moto, OpenBao};
use testkit::{AppPolicy, AppRegistration, EntraEmulator, Password};
use time::OffsetDateTime;

use crate::support::{
    Daemon, Run, app_secrets_and_tokens, http_get, issued_access_tokens, secret_sync, wait_until,
};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0a1b2c3d-1313-4444-8888-444455556666";
const SECRET: &str = "Ab3~e2e.lifecycle.old.client-secret.value";
const KEY: &str = "11111111-2222-3333-4444-555555555555";
const OWNED_BY: &str = "Application.ReadWrite.OwnedBy";

/// An Entra emulator whose app holds `SECRET` (keyId `KEY`, ending in `days` days and an
/// hour), may manage its own credentials (OwnedBy and owner of itself), and a temp dir.
struct Fixture {
    entra: EntraEmulator,
    /// The CA of a TLS emulator (for Key Vault), in settings.ca_file.
    ca: Option<PathBuf>,
    dir: tempfile::TempDir,
    end: OffsetDateTime,
}

impl Fixture {
    async fn start(days: i64, roles: &[&str]) -> Fixture {
        Fixture::start_with(days, roles, false).await
    }

    async fn start_with(days: i64, roles: &[&str], tls: bool) -> Fixture {
        let entra = if tls {
            EntraEmulator::start_tls().await.unwrap()
        } else {
            EntraEmulator::start().await.unwrap()
        };
        let now = OffsetDateTime::now_utc();
        let end = (now + time::Duration::days(days) + time::Duration::hours(1))
            .replace_nanosecond(0)
            .unwrap();
        entra.register_app(
            AppRegistration::new(TENANT, CLIENT)
                .with_password(
                    Password::new(SECRET)
                        .key_id(KEY)
                        .display_name("made by hand")
                        .start(now - time::Duration::days(170))
                        .end(end),
                )
                .with_graph_roles(roles),
        );
        entra.add_owner(CLIENT, CLIENT);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        let ca = tls.then(|| {
            let ca = dir.path().join("ca.pem");
            std::fs::write(&ca, entra.ca_pem().unwrap()).unwrap();
            ca
        });
        Fixture {
            entra,
            ca,
            dir,
            end,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A config with one job `graph` whose `client_secret` is `secret` (TOML), writing its
    /// token to `out/graph-token`, watching, plus `extra` (backends, rotation).
    fn config(&self, secret: &str, extra: &str) -> PathBuf {
        let text = format!(
            r#"[settings]
authority = "{authority}"
listen = "127.0.0.1:0"
{ca}
[settings.credentials]
watch = true
warn_within = "30d"
graph_endpoint = "{graph}"
state_dir = "{state}"
check_every = "1s"

[backends.out]
kind = "file"
dir = "{out}"

[jobs.graph]
tenant_id = "{TENANT}"
client_id = "{CLIENT}"
client_secret = {secret}
scope = "https://vault.azure.net/.default"
targets = [{{ to = "out", name = "graph-token" }}]
{extra}
"#,
            authority = self.entra.base_url(),
            ca = self
                .ca
                .as_ref()
                .map(|ca| format!("ca_file = \"{}\"\n", ca.display()))
                .unwrap_or_default(),
            graph = self.entra.graph_endpoint(),
            state = self.dir.path().display(),
            out = self.path("out").display(),
        );
        let path = self.path("secret-sync.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// What `creds/graph-secret` (the file source of [`file_source`]) holds, byte for byte.
    fn file_text(&self) -> String {
        std::fs::read_to_string(self.path("creds/graph-secret")).unwrap()
    }

    /// The secret `creds/graph-secret` holds (a write-back may end it with a newline).
    fn file_secret(&self) -> String {
        self.file_text().trim().to_owned()
    }

    /// Every secret the app holds or held, and every token issued: none may be printed.
    fn secrets(&self) -> Vec<String> {
        app_secrets_and_tokens(&self.entra, CLIENT, SECRET)
    }

    fn assert_no_leak(&self, run: &Run) {
        let secrets = self.secrets();
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        run.assert_no_leak(&refs);
    }

    fn key_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .entra
            .application(CLIENT)
            .unwrap()
            .passwords
            .iter()
            .map(|p| p.key_id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// The secret of the one password that is not `KEY`.
    fn new_password(&self) -> (String, String) {
        let app = self.entra.application(CLIENT).unwrap();
        let new: Vec<_> = app.passwords.iter().filter(|p| p.key_id != KEY).collect();
        assert_eq!(new.len(), 1, "one new password: {:?}", new);
        (
            new[0].key_id.clone(),
            new[0].secret.expose_secret().to_owned(),
        )
    }

    /// Stops `daemon` with SIGTERM: exit 0, and no secret or token in its output, which it
    /// returns as a `Run`.
    async fn stop_clean(&self, daemon: Daemon) -> Run {
        let (code, _, output) = daemon.stop("TERM").await;
        assert_eq!(code, 0, "{output}");
        let stopped = Run {
            code,
            stdout: output,
            stderr: String::new(),
        };
        self.assert_no_leak(&stopped);
        stopped
    }

    async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let config = self.path("secret-sync.toml");
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", config.to_str().unwrap()]);
        let run = secret_sync(&all, env).await;
        self.assert_no_leak(&run);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        run
    }
}

fn unix(at: OffsetDateTime) -> i64 {
    at.unix_timestamp()
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_shows_a_secret_expiring_in_10_days_in_credentials_plan_and_the_daemons_metric() {
    let fx = Fixture::start(10, &[OWNED_BY]).await;
    fx.config(r#"{ env = "GRAPH_SECRET" }"#, "");
    let env = [("GRAPH_SECRET", SECRET)];

    // Before any watch, plan says so, and asks Graph nothing.
    let plan = fx.run(&["plan"], &env).await;
    assert!(
        plan.stdout.contains("graph: never watched"),
        "{}",
        plan.stdout
    );
    assert!(fx.entra.graph_requests().is_empty());

    let table = fx.run(&["credentials"], &env).await;
    table.assert_code(0);
    let row = table
        .stdout
        .lines()
        .find(|l| l.contains(KEY))
        .unwrap_or_else(|| panic!("{}", table.stdout));
    for cell in [
        "graph",
        CLIENT,
        "password",
        "made by hand",
        " 10 ",
        "yes (hint)",
    ] {
        assert!(row.contains(cell), "{cell:?} in {row:?}");
    }
    assert!(table.stdout.starts_with("JOB"), "{}", table.stdout);
    assert!(
        table.stderr.contains("expires in 10 day(s)") && table.stderr.contains("warn_within 30d"),
        "a warning inside warn_within: {}",
        table.stderr
    );
    // The read never asks for `key`.
    for request in fx.entra.graph_requests() {
        let select = request.query.get("$select").cloned().unwrap_or_default();
        assert!(!select.split(',').any(|f| f == "key"), "{select}");
    }

    let json = fx
        .run(&["credentials", "--job", "graph", "--output", "json"], &env)
        .await;
    json.assert_code(0);
    let doc = json.json();
    assert_eq!(doc["version"], 1);
    let entry = &doc["credentials"][0];
    assert_eq!(entry["job"], "graph");
    assert_eq!(entry["app"], CLIENT);
    assert_eq!(entry["kind"], "password");
    assert_eq!(entry["key_id"], KEY);
    assert_eq!(entry["display_name"], "made by hand");
    assert_eq!(entry["days_left"], 10);
    assert_eq!(entry["in_use"], true);
    assert_eq!(entry["in_use_by"], "hint");
    let expires = OffsetDateTime::parse(
        entry["expires_on"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(unix(expires), unix(fx.end));

    // plan shows the recorded expiry, with no Graph call and no token request.
    let graph_calls = fx.entra.graph_requests().len();
    let tokens = issued_access_tokens(&fx.entra).len();
    let plan = fx.run(&["plan", "--output", "json"], &env).await;
    assert_eq!(
        fx.entra.graph_requests().len(),
        graph_calls,
        "plan called Graph"
    );
    assert_eq!(
        issued_access_tokens(&fx.entra).len(),
        tokens,
        "plan asked for a token"
    );
    let recorded = &plan.json()["credentials"][0];
    assert_eq!(recorded["job"], "graph");
    assert_eq!(recorded["credentials"][0]["key_id"], KEY);
    assert_eq!(recorded["credentials"][0]["in_use"], true);
    let plan = fx.run(&["plan"], &env).await;
    assert!(
        plan.stdout
            .contains(&format!("graph: client secret {KEY} expires"))
            && plan.stdout.contains("(10 days left), in use"),
        "{}",
        plan.stdout
    );

    // The daemon: the metric with the expiry per job and kind, and one warning.
    let mut daemon = Daemon::spawn(
        fx.path("daemon.log"),
        &fx.path("secret-sync.toml"),
        &["daemon"],
        &env,
    );
    let addr = daemon.listen_addr().await;
    let series = format!(
        "secret_sync_credential_expiry_timestamp_seconds{{job=\"graph\",kind=\"client_secret\"}} {}",
        unix(fx.end)
    );
    let mut metrics = String::new();
    let seen = wait_until(Duration::from_secs(20), || {
        metrics = http_get(&addr, "/metrics").2;
        metrics.contains(&series)
    })
    .await;
    assert!(seen, "{series} in:\n{metrics}\n{}", daemon.output());
    // Several checks (check_every = 1s), one warning.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let output = daemon.output();
    assert_eq!(
        output
            .matches("client secret in use expires within warn_within")
            .count(),
        1,
        "{output}"
    );
    assert!(daemon.is_running());
    fx.stop_clean(daemon).await;
    // The token job ran too.
    assert!(fx.path("out/graph-token").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_graph_permission_is_a_clear_error_and_token_jobs_are_unaffected() {
    let fx = Fixture::start(10, &[]).await;
    fx.config(r#"{ env = "GRAPH_SECRET" }"#, "");
    let env = [("GRAPH_SECRET", SECRET)];
    let run = fx.run(&["credentials"], &env).await;
    run.assert_code(1);
    assert!(run.stderr.contains("graph"), "{}", run.stderr);
    assert!(
        run.stderr.contains("Application.ReadWrite.OwnedBy") || run.stderr.contains("permission"),
        "names the permission: {}",
        run.stderr
    );
    // `run` does not need Graph at all.
    let run = fx.run(&["run"], &env).await;
    run.assert_code(0);
    // Neither does the daemon's token job.
    let daemon = Daemon::spawn(
        fx.path("daemon.log"),
        &fx.path("secret-sync.toml"),
        &["daemon"],
        &env,
    );
    let output = daemon
        .wait_for_output(
            "cannot watch the app's credentials",
            Duration::from_secs(20),
        )
        .await;
    assert!(
        output.contains("permission") || output.contains("OwnedBy"),
        "{output}"
    );
    fx.stop_clean(daemon).await;
}

// ----- rotation -----

/// A file backend `creds` holding the whole secret in `creds/graph-secret`.
fn file_source(fx: &Fixture) -> &'static str {
    std::fs::create_dir_all(fx.path("creds")).unwrap();
    std::fs::write(fx.path("creds/graph-secret"), SECRET).unwrap();
    let _ = fx;
    "[backends.creds]\nkind = \"file\"\ndir = \"creds\"\n"
}

fn rotation(overlap: &str) -> String {
    format!(
        "\n[jobs.graph.rotation]\nenabled = true\nlifetime = \"90d\"\noverlap = \"{overlap}\"\npropagation_timeout = \"30s\"\n"
    )
}

/// After a rotation: the token target holds a token from the new secret.
async fn token_still_refreshed(fx: &Fixture) {
    let run = fx.run(&["run", "--force"], &[]).await;
    run.assert_code(0);
    let last = fx.entra.issued_tokens().into_iter().last().unwrap();
    let written = std::fs::read_to_string(fx.path("out/graph-token")).unwrap();
    assert_eq!(written.trim(), last.access_token.expose_secret());
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_in_a_file_ends_with_the_old_key_removed_after_the_overlap() {
    let fx = Fixture::start(10, &[OWNED_BY]).await;
    let backends = file_source(&fx);
    fx.config(
        r#"{ from = "creds", ref = "graph-secret" }"#,
        &format!("{}{backends}", rotation("3s")),
    );
    // The dry run changes nothing.
    let dry = fx
        .run(&["rotate", "--job", "graph", "--dry-run"], &[])
        .await;
    dry.assert_code(0);
    assert!(
        dry.stdout.contains("would add a password"),
        "{}",
        dry.stdout
    );
    let writes: Vec<String> = fx
        .entra
        .graph_requests()
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| r.path.clone())
        .collect();
    assert!(writes.is_empty(), "the dry run changed the app: {writes:?}");
    assert_eq!(fx.key_ids(), [KEY]);
    assert_eq!(fx.file_text(), SECRET);

    let run = fx.run(&["rotate", "--job", "graph"], &[]).await;
    run.assert_code(0);
    let (new_key, new_secret) = fx.new_password();
    assert!(
        run.stdout
            .contains(&format!("rotated: the new password {new_key}")),
        "{}",
        run.stdout
    );
    assert_eq!(fx.file_secret(), new_secret);
    let app = fx.entra.application(CLIENT).unwrap();
    let added = app.passwords.iter().find(|p| p.key_id == new_key).unwrap();
    let name = added.display_name.clone().unwrap();
    assert!(
        name.starts_with("secret-sync job=graph installation="),
        "{name}"
    );
    assert!(
        (added.end - added.start - time::Duration::days(90)).abs() < time::Duration::minutes(1)
    );
    token_still_refreshed(&fx).await;
    // Within the overlap the old key stays.
    let run = fx.run(&["rotate", "--job", "graph"], &[]).await;
    run.assert_code(0);
    assert!(
        run.stdout
            .contains(&format!("the old password {KEY} is retired at")),
        "{}",
        run.stdout
    );
    assert_eq!(fx.key_ids().len(), 2);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let run = fx.run(&["rotate", "--job", "graph"], &[]).await;
    run.assert_code(0);
    assert!(
        run.stdout
            .contains(&format!("removed the old password {KEY}")),
        "{}",
        run.stdout
    );
    assert_eq!(fx.key_ids(), std::slice::from_ref(&new_key));
    token_still_refreshed(&fx).await;
    // The record now names the new key as the one in use.
    let json = fx.run(&["credentials", "--output", "json"], &[]).await;
    assert_eq!(json.json()["jobs"][0]["in_use"], "recorded");
    assert_eq!(json.json()["jobs"][0]["in_use_key_id"], new_key.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_secret_that_works_only_after_the_propagation_delay_is_waited_for() {
    let fx = Fixture::start(10, &[OWNED_BY]).await;
    let backends = file_source(&fx);
    fx.config(
        r#"{ from = "creds", ref = "graph-secret" }"#,
        &format!("{}{backends}", rotation("1h")),
    );
    fx.entra
        .set_secret_propagation_delay(Duration::from_secs(4));
    let started = std::time::Instant::now();
    let run = fx.run(&["rotate", "--job", "graph"], &[]).await;
    run.assert_code(0);
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "waited for the delay"
    );
    let (_, new_secret) = fx.new_password();
    assert_eq!(fx.file_secret(), new_secret);
    // Never longer than propagation_timeout: a delay past it undoes the rotation.
    let fx = Fixture::start(10, &[OWNED_BY]).await;
    let backends = file_source(&fx);
    fx.config(
        r#"{ from = "creds", ref = "graph-secret" }"#,
        &format!(
            "{}{backends}",
            rotation("1h").replace(
                "propagation_timeout = \"30s\"",
                "propagation_timeout = \"3s\""
            )
        ),
    );
    fx.entra
        .set_secret_propagation_delay(Duration::from_secs(60));
    let run = fx.run(&["rotate", "--job", "graph"], &[]).await;
    run.assert_code(1);
    assert!(run.stderr.contains("propagation_timeout"), "{}", run.stderr);
    assert!(run.stderr.contains("was removed again"), "{}", run.stderr);
    assert_eq!(fx.key_ids(), [KEY]);
    assert_eq!(fx.file_text(), SECRET);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_that_refuses_the_lifetime_changes_nothing() {
    let fx = Fixture::start(10, &[OWNED_BY]).await;
    let backends = file_source(&fx);
    fx.config(
        r#"{ from = "creds", ref = "graph-secret" }"#,
        &format!("{}{backends}", rotation("1h")),
    );
    fx.entra.set_app_policy(AppPolicy {
        max_password_lifetime: Some(Duration::from_secs(30 * 86_400)),
        passwords_allowed: true,
    });
    let run = fx.run(&["rotate", "--job", "graph"], &[]).await;
    run.assert_code(1);
    assert!(
        run.stderr.contains("did not add a new client secret"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("CredentialInvalidLifetimeAsPerAppPolicy")
            || run.stderr.contains("policy"),
        "{}",
        run.stderr
    );
    assert_eq!(fx.key_ids(), [KEY]);
    assert_eq!(fx.file_text(), SECRET);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_killed_after_the_write_back_removes_the_old_key_when_due_after_a_restart() {
    let fx = Fixture::start(10, &[OWNED_BY]).await;
    let backends = file_source(&fx);
    // rotate_within 30d: the secret (10 days left) is due, so the daemon rotates at once.
    fx.config(
        r#"{ from = "creds", ref = "graph-secret" }"#,
        &format!("{}{backends}", rotation("6s")),
    );
    let mut daemon = Daemon::spawn(
        fx.path("daemon.log"),
        &fx.path("secret-sync.toml"),
        &["daemon"],
        &[],
    );
    daemon
        .wait_for_output("rotated: the new password", Duration::from_secs(30))
        .await;
    daemon.signal("KILL");
    assert!(wait_until(Duration::from_secs(10), || !daemon.is_running()).await);
    let (new_key, new_secret) = fx.new_password();
    assert_eq!(fx.key_ids().len(), 2, "killed before the overlap ended");
    assert_eq!(fx.file_secret(), new_secret);
    let killed = Run {
        code: 0,
        stdout: daemon.output(),
        stderr: String::new(),
    };
    fx.assert_no_leak(&killed);

    let restarted = Daemon::spawn(
        fx.path("daemon2.log"),
        &fx.path("secret-sync.toml"),
        &["daemon"],
        &[],
    );
    let output = restarted
        .wait_for_output(
            &format!("removed the old password {KEY}"),
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(fx.key_ids(), [new_key]);
    assert!(
        !output.contains("rotated: the new password"),
        "no second rotation: {output}"
    );
    fx.stop_clean(restarted).await;
    token_still_refreshed(&fx).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_rotation_that_failed_is_retried_after_a_backoff_not_an_hour_later() {
    use testkit::{Fault, GraphCall};

    let fx = Fixture::start(10, &[OWNED_BY]).await;
    let backends = file_source(&fx);
    let config = fx.config(
        r#"{ from = "creds", ref = "graph-secret" }"#,
        &format!("{}{backends}", rotation("1h")),
    );
    // An hour between checks: only a retry after a backoff comes within the test's time.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("check_every = \"1s\"", "check_every = \"1h\"");
    std::fs::write(&config, text).unwrap();
    // Graph answers addPassword 503 as often as the client tries within one check (5 times).
    fx.entra.inject_graph_times(
        GraphCall::AddPassword,
        Fault::ServerError { status: 503 },
        5,
    );
    let daemon = Daemon::spawn(fx.path("daemon.log"), &config, &["daemon"], &[]);
    let output = daemon
        .wait_for_output("rotated: the new password", Duration::from_secs(45))
        .await;
    let failed = output
        .lines()
        .find(|l| l.contains("client secret rotation failed"))
        .unwrap_or_else(|| panic!("the first check did not fail:\n{output}"));
    assert!(
        failed.contains("retried after a backoff") && failed.contains("retry_in="),
        "{failed}"
    );
    let (new_key, new_secret) = fx.new_password();
    assert_eq!(fx.file_secret(), new_secret);
    assert_eq!(fx.key_ids().len(), 2, "the old key stays for the overlap");
    assert!(fx.key_ids().contains(&new_key));
    fx.stop_clean(daemon).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemons_checks_reuse_one_graph_connection() {
    let fx = Fixture::start(10, &[OWNED_BY]).await;
    fx.config(r#"{ env = "GRAPH_SECRET" }"#, "");
    let daemon = Daemon::spawn(
        fx.path("daemon.log"),
        &fx.path("secret-sync.toml"),
        &["daemon"],
        &[("GRAPH_SECRET", SECRET)],
    );
    // check_every = 1s: wait for five checks of the app.
    let checked = wait_until(Duration::from_secs(20), || {
        fx.entra.graph_requests().len() >= 5
    })
    .await;
    assert!(checked, "{}", daemon.output());
    fx.stop_clean(daemon).await;
    // The token client's two (its pools; the job's token and the Graph token) and one for
    // Graph. A new Graph client per check opened one per check: 7 here before.
    let connections = fx.entra.connections_accepted();
    assert!(
        connections <= 3,
        "{connections} connections for {} Graph requests",
        fx.entra.graph_requests().len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_refuses_rotation_of_a_secret_from_the_environment() {
    let fx = Fixture::start(10, &[OWNED_BY]).await;
    let config = fx.config(r#"{ env = "GRAPH_SECRET" }"#, &rotation("1h"));
    let run = secret_sync(&["validate", "--config", config.to_str().unwrap()], &[]).await;
    run.assert_code(2);
    assert!(
        run.stderr.contains("jobs.graph.rotation.enabled: the job's client_secret comes from the environment variable GRAPH_SECRET"),
        "{}",
        run.stderr
    );
}

// ----- OpenBao -----

/// OpenBao with `secret/apps/graph` holding the client secret beside other fields, and a
/// config reading `#client_secret` from it with `token` (a Vault token).
fn bao_source(fx: &Fixture, bao: &OpenBao, overlap: &str) {
    bao.api(
        "POST",
        "secret/data/apps/graph",
        Some(json!({"data": {"client_secret": SECRET, "tenant": TENANT, "note": "kept"}})),
    );
    fx.config(
        r#"{ from = "bao", ref = "apps/graph#client_secret" }"#,
        &format!(
            "{}[backends.bao]\nkind = \"vault\"\naddress = \"{}\"\nmount = \"secret\"\nkv_version = 2\nauth = {{ method = \"token\", token_env = \"BAO_TOKEN\" }}\n",
            rotation(overlap),
            bao.address()
        ),
    );
}

fn bao_data(bao: &OpenBao) -> Value {
    bao.api("GET", "secret/data/apps/graph", None)["data"]["data"].clone()
}

fn bao_token(bao: &OpenBao, policy: &str) -> String {
    bao.put_policy("p", policy);
    let created = bao.api(
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["p"], "ttl": "1h"})),
    );
    created["auth"]["client_token"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_a_json_field_in_openbao_keeps_the_other_fields_and_retires_the_old_key() {
    let fx = Fixture::start(10, &[OWNED_BY]).await;
    let bao = OpenBao::start();
    bao_source(&fx, &bao, "3s");
    let token = bao_token(
        &bao,
        "path \"secret/*\" { capabilities = [\"create\", \"read\", \"update\", \"list\"] }",
    );
    let env = [("BAO_TOKEN", token.as_str())];

    let run = fx.run(&["rotate", "--job", "graph"], &env).await;
    run.assert_code(0);
    let (new_key, new_secret) = fx.new_password();
    let data = bao_data(&bao);
    assert_eq!(data["client_secret"], new_secret.as_str());
    assert_eq!(data["tenant"], TENANT, "the other fields survive: {data}");
    assert_eq!(data["note"], "kept", "{data}");
    assert_eq!(data["client_secret_key_id"], new_key.as_str(), "{data}");
    assert_eq!(data["client_secret_previous_key_id"], KEY, "{data}");
    assert!(data["client_secret_installation"].is_string(), "{data}");
    token_still_refreshed_with(&fx, &env).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let run = fx.run(&["rotate", "--job", "graph"], &env).await;
    run.assert_code(0);
    assert_eq!(fx.key_ids(), std::slice::from_ref(&new_key));
    let data = bao_data(&bao);
    assert_eq!(data["client_secret"], new_secret.as_str());
    assert_eq!(data["note"], "kept");
    assert!(
        data.get("client_secret_previous_key_id")
            .is_none_or(|v| v.is_null() || v == ""),
        "{data}"
    );
    token_still_refreshed_with(&fx, &env).await;
    let root = bao.root_token().expose_secret().to_owned();
    let scan = Run {
        code: 0,
        stdout: run.stdout.clone(),
        stderr: run.stderr.clone(),
    };
    scan.assert_no_leak(&[root.as_str(), token.as_str()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_back_that_fails_removes_the_new_key_and_keeps_the_old_secret() {
    let fx = Fixture::start(10, &[OWNED_BY]).await;
    let bao = OpenBao::start();
    bao_source(&fx, &bao, "1h");
    // The Vault token may read the secret but not write it.
    let token = bao_token(
        &bao,
        "path \"secret/*\" { capabilities = [\"read\", \"list\"] }",
    );
    let env = [("BAO_TOKEN", token.as_str())];
    // A first rotation records this installation's id before addPassword: a store it cannot
    // write fails it there, the app untouched.
    let first = fx.run(&["rotate", "--job", "graph"], &env).await;
    first.assert_code(1);
    assert!(
        first
            .stderr
            .contains("cannot record this installation's id beside the secret")
            && first.stderr.contains("nothing was changed on the app"),
        "{}",
        first.stderr
    );
    assert!(
        !fx.entra
            .graph_requests()
            .iter()
            .any(|r| r.path.ends_with("/addPassword")),
        "no password added"
    );
    assert_eq!(bao_data(&bao)["client_secret"], SECRET);
    // With the id recorded (a rotation before), the write-back itself fails.
    let mut data = bao_data(&bao);
    data["client_secret_installation"] = json!("e2einstallation1");
    bao.api(
        "POST",
        "secret/data/apps/graph",
        Some(json!({ "data": data })),
    );
    let run = fx.run(&["rotate", "--job", "graph"], &env).await;
    run.assert_code(1);
    for needle in [
        "cannot write the client secret back",
        "was removed again",
        "the old secret is kept",
    ] {
        assert!(run.stderr.contains(needle), "{needle:?} in {}", run.stderr);
    }
    assert_eq!(fx.key_ids(), [KEY]);
    let data = bao_data(&bao);
    assert_eq!(data["client_secret"], SECRET);
    assert_eq!(data["note"], "kept");
    // The new key was added, then removed.
    let calls: Vec<String> = fx
        .entra
        .graph_requests()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert!(
        calls.iter().any(|p| p.ends_with("/addPassword")),
        "{calls:?}"
    );
    assert!(
        calls.iter().any(|p| p.ends_with("/removePassword")),
        "{calls:?}"
    );
    token_still_refreshed_with(&fx, &env).await;
    let scan = Run {
        code: 0,
        stdout: format!("{}{}", first.stdout, run.stdout),
        stderr: format!("{}{}", first.stderr, run.stderr),
    };
    scan.assert_no_leak(&[token.as_str()]);
}

async fn token_still_refreshed_with(fx: &Fixture, env: &[(&str, &str)]) {
    let run = fx.run(&["run", "--force"], env).await;
    run.assert_code(0);
    let last = fx.entra.issued_tokens().into_iter().last().unwrap();
    let written = std::fs::read_to_string(fx.path("out/graph-token")).unwrap();
    assert_eq!(written.trim(), last.access_token.expose_secret());
}

// ----- AWS Secrets Manager (moto) and the Key Vault emulator -----

const AWS_KEY: &str = "AKIAE2ELIFECYCLE0001";
const AWS_SECRET_KEY: &str = "e2e/lifecycle/aws/secret/access/key/000";

/// Runs `script` with `sm`, a boto3 Secrets Manager client on moto; returns its stdout.
fn boto3(moto: &Moto, script: &str) -> String {
    let prelude = format!(
        "import sys, json, boto3\n\
         sm = boto3.client('secretsmanager', endpoint_url='{}', region_name='eu-west-1', \
         aws_access_key_id='{AWS_KEY}', aws_secret_access_key='{AWS_SECRET_KEY}')\n",
        moto.endpoint_url()
    );
    let out = std::process::Command::new(testkit::real::python())
        .arg("-c")
        .arg(prelude + script)
        .output()
        .expect("the venv python runs");
    assert!(
        out.status.success(),
        "boto3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_a_whole_secret_in_aws_secrets_manager_records_it_in_tags_and_retires_the_old_key() {
    let fx = Fixture::start(10, &[OWNED_BY]).await;
    let moto = Moto::start();
    boto3(
        &moto,
        &format!("sm.create_secret(Name='apps/graph-secret', SecretString='{SECRET}')"),
    );
    fx.config(
        r#"{ from = "aws", ref = "apps/graph-secret" }"#,
        &format!(
            "{}[backends.aws]\nkind = \"aws-secrets-manager\"\nregion = \"eu-west-1\"\nendpoint_url = \"{}\"\n",
            rotation("3s"),
            moto.endpoint_url()
        ),
    );
    let home = fx.path("home");
    std::fs::create_dir(&home).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let imds = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let env = [
        ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.as_str()),
        ("HOME", home.to_str().unwrap()),
        ("AWS_ACCESS_KEY_ID", AWS_KEY),
        ("AWS_SECRET_ACCESS_KEY", AWS_SECRET_KEY),
    ];
    let run = fx.run(&["rotate", "--job", "graph"], &env).await;
    run.assert_code(0);
    let (new_key, new_secret) = fx.new_password();
    let value = boto3(
        &moto,
        "print(sm.get_secret_value(SecretId='apps/graph-secret', VersionStage='AWSCURRENT')['SecretString'])",
    );
    let versions = boto3(
        &moto,
        "print(json.dumps(sm.describe_secret(SecretId='apps/graph-secret').get('VersionIdsToStages', {})))",
    );
    assert!(
        value.trim() == new_secret,
        "AWSCURRENT is not the new secret; versions: {versions}; rotate said: {}",
        run.stdout
    );
    let tags = boto3(
        &moto,
        "print(json.dumps(sm.describe_secret(SecretId='apps/graph-secret').get('Tags', [])))",
    );
    assert!(
        tags.contains(&new_key),
        "the keyId is recorded in a tag: {tags}"
    );
    assert!(tags.contains(KEY), "the old keyId is recorded: {tags}");
    token_still_refreshed_with(&fx, &env).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let run = fx.run(&["rotate", "--job", "graph"], &env).await;
    run.assert_code(0);
    assert!(
        run.stdout
            .contains(&format!("removed the old password {KEY}")),
        "{}",
        run.stdout
    );
    assert_eq!(fx.key_ids(), [new_key]);
    token_still_refreshed_with(&fx, &env).await;
    Run {
        code: 0,
        stdout: run.stdout,
        stderr: run.stderr,
    }
    .assert_no_leak(&[AWS_SECRET_KEY]);
}

const KV_CLIENT: &str = "0a1b2c3d-1313-4444-8888-777788889999";
const KV_SECRET: &str = "Kv9~e2e.lifecycle.key-vault.writer.secret";

#[tokio::test(flavor = "multi_thread")]
async fn rotate_a_secret_in_the_key_vault_emulator_records_it_in_tags_and_retires_the_old_key() {
    let fx = Fixture::start_with(10, &[OWNED_BY], true).await;
    fx.entra
        .register_app(AppRegistration::new(TENANT, KV_CLIENT).with_secret(KV_SECRET));
    let kv = testkit::KeyVaultEmulator::start(
        fx.entra.token_validator(),
        testkit::KeyVaultOptions::for_entra(&fx.entra, TENANT),
    )
    .await
    .unwrap();
    kv.set_secret("graph-client-secret", SECRET).unwrap();
    fx.config(
        r#"{ from = "kv", ref = "graph-client-secret" }"#,
        &format!(
            "{}[backends.kv]\nkind = \"azure-key-vault\"\nvault_url = \"{}\"\nca_file = \"{}\"\n\
             auth = {{ method = \"client-secret\", tenant_id = \"{TENANT}\", client_id = \"{KV_CLIENT}\", client_secret = {{ env = \"KV_SECRET\" }} }}\n",
            rotation("3s"),
            kv.vault_url(),
            fx.ca.as_ref().unwrap().display()
        ),
    );
    let env = [("KV_SECRET", KV_SECRET)];
    let run = fx.run(&["rotate", "--job", "graph"], &env).await;
    run.assert_code(0);
    let (new_key, new_secret) = fx.new_password();
    let stored = kv.secret("graph-client-secret").unwrap();
    assert!(
        stored.value.expose_secret() == new_secret,
        "Key Vault holds the new secret"
    );
    let tags = format!("{:?}", stored.tags);
    assert!(
        tags.contains(&new_key),
        "the keyId is recorded in a tag: {tags}"
    );
    token_still_refreshed_with(&fx, &env).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let run = fx.run(&["rotate", "--job", "graph"], &env).await;
    run.assert_code(0);
    assert_eq!(fx.key_ids(), [new_key]);
    token_still_refreshed_with(&fx, &env).await;
    Run {
        code: 0,
        stdout: run.stdout,
        stderr: run.stderr,
    }
    .assert_no_leak(&[KV_SECRET]);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_this_installations_forgotten_passwords_older_than_the_overlap_are_removed() {
    const INSTALLATION: &str = "e2einstallation1";
    let fx = Fixture::start(10, &[OWNED_BY]).await;
    // Passwords left behind: this installation's (old, and one younger than the overlap),
    // another installation's, and one made by hand.
    let now = OffsetDateTime::now_utc();
    let old = now - time::Duration::hours(3);
    let lost = |key: &str, name: &str, start: OffsetDateTime| {
        Password::new(format!("Lo{key}~lost.password.secret.value"))
            .key_id(key)
            .display_name(name)
            .start(start)
            .end(now + time::Duration::days(90))
    };
    let ours = format!("secret-sync job=graph installation={INSTALLATION}");
    fx.entra.register_app(
        AppRegistration::new(TENANT, CLIENT)
            .with_password(
                Password::new(SECRET)
                    .key_id(KEY)
                    .start(now - time::Duration::days(170))
                    .end(fx.end),
            )
            .with_password(lost("aaaaaaaa-0000-0000-0000-000000000001", &ours, old))
            .with_password(lost(
                "aaaaaaaa-0000-0000-0000-000000000002",
                &ours,
                now - time::Duration::minutes(10),
            ))
            .with_password(lost(
                "aaaaaaaa-0000-0000-0000-000000000003",
                "secret-sync job=graph installation=someoneelse00001",
                old,
            ))
            .with_password(lost(
                "aaaaaaaa-0000-0000-0000-000000000004",
                "made by hand",
                old,
            ))
            .with_graph_roles(&[OWNED_BY]),
    );
    let bao = OpenBao::start();
    bao.api(
        "POST",
        "secret/data/apps/graph",
        Some(json!({"data": {
            "client_secret": SECRET,
            "client_secret_key_id": KEY,
            "client_secret_installation": INSTALLATION,
        }})),
    );
    fx.config(
        r#"{ from = "bao", ref = "apps/graph#client_secret" }"#,
        &format!(
            "{}[backends.bao]\nkind = \"vault\"\naddress = \"{}\"\nmount = \"secret\"\nkv_version = 2\nauth = {{ method = \"token\", token_env = \"BAO_TOKEN\" }}\n",
            rotation("1h"),
            bao.address()
        ),
    );
    let root = bao.root_token().expose_secret().to_owned();
    let env = [("BAO_TOKEN", root.as_str())];
    let run = fx
        .run(&["rotate", "--job", "graph", "--dry-run"], &env)
        .await;
    run.assert_code(0);
    assert!(
        run.stdout
            .contains("would remove the password aaaaaaaa-0000-0000-0000-000000000001"),
        "{}",
        run.stdout
    );
    assert_eq!(fx.key_ids().len(), 5, "the dry run removed nothing");
    let run = fx.run(&["rotate", "--job", "graph"], &env).await;
    run.assert_code(0);
    let ids = fx.key_ids();
    assert!(!ids.iter().any(|k| k.ends_with("000000000001")), "{ids:?}");
    for kept in ["000000000002", "000000000003", "000000000004"] {
        assert!(
            ids.iter().any(|k| k.ends_with(kept)),
            "{kept} kept: {ids:?}"
        );
    }
    assert!(
        ids.iter().any(|k| k == KEY),
        "the old secret stays for the overlap"
    );
    assert_eq!(bao_data(&bao)["client_secret_installation"], INSTALLATION);
    Run {
        code: 0,
        stdout: run.stdout,
        stderr: run.stderr,
    }
    .assert_no_leak(&[root.as_str()]);
}

const MI_CLIENT: &str = "0a1b2c3d-1313-4444-8888-aaaabbbbcccc";

#[tokio::test(flavor = "multi_thread")]
async fn a_managed_identity_holding_application_readwrite_all_reads_and_rotates_for_the_job() {
    // The job's own app has no Graph permission: only the managed identity can do it.
    let fx = Fixture::start(10, &[]).await;
    let identity = testkit::ManagedIdentity::new(TENANT, MI_CLIENT)
        .with_graph_roles(&["Application.ReadWrite.All"]);
    fx.entra.enable_managed_identity(identity);
    let backends = file_source(&fx);
    let config = fx.config(
        r#"{ from = "creds", ref = "graph-secret" }"#,
        &format!("{}{backends}", rotation("1h")),
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "check_every = \"1s\"\n",
        &format!(
            "check_every = \"1s\"\nauth = {{ method = \"managed-identity\", client_id = \"{MI_CLIENT}\" }}\n"
        ),
    );
    std::fs::write(&config, text).unwrap();
    let base = fx.entra.base_url();
    let env = [("AZURE_POD_IDENTITY_AUTHORITY_HOST", base.as_str())];
    let run = fx.run(&["credentials", "--output", "json"], &env).await;
    run.assert_code(0);
    assert_eq!(run.json()["credentials"][0]["key_id"], KEY);
    let run = fx.run(&["rotate", "--job", "graph"], &env).await;
    run.assert_code(0);
    let (_, new_secret) = fx.new_password();
    assert!(
        fx.file_secret() == new_secret,
        "the new secret is in the file"
    );
    token_still_refreshed(&fx).await;
}

/// Another installation's password on the same app, older than any overlap in these tests.
const THEIRS: &str = "bbbbbbbb-0000-0000-0000-000000000001";

#[tokio::test(flavor = "multi_thread")]
async fn a_first_rotation_killed_after_add_password_leaves_an_orphan_a_later_run_removes() {
    let fx = Fixture::start(10, &[OWNED_BY]).await;
    let now = OffsetDateTime::now_utc();
    fx.entra.register_app(
        AppRegistration::new(TENANT, CLIENT)
            .with_password(
                Password::new(SECRET)
                    .key_id(KEY)
                    .display_name("made by hand")
                    .start(now - time::Duration::days(170))
                    .end(fx.end),
            )
            .with_password(
                Password::new("Th3~another.installation.secret.value")
                    .key_id(THEIRS)
                    .display_name("secret-sync job=graph installation=someoneelse00001")
                    .start(now - time::Duration::hours(3))
                    .end(now + time::Duration::days(90)),
            )
            .with_graph_roles(&[OWNED_BY]),
    );
    let backends = file_source(&fx);
    let config = fx.config(
        r#"{ from = "creds", ref = "graph-secret" }"#,
        &format!("{}{backends}", rotation("3s")),
    );
    let sidecar = fx.path("creds/graph-secret.meta.json");
    // The dry run of a first rotation writes nothing, not even the installation id.
    let dry = fx
        .run(&["rotate", "--job", "graph", "--dry-run"], &[])
        .await;
    dry.assert_code(0);
    assert!(!sidecar.exists(), "the dry run wrote a record");
    assert_eq!(fx.file_text(), SECRET);

    // The first rotation, killed while it waits for the new secret to propagate.
    fx.entra
        .set_secret_propagation_delay(Duration::from_secs(120));
    let mut rotating = Daemon::spawn(
        fx.path("rotate.log"),
        &config,
        &["rotate", "--job", "graph"],
        &[],
    );
    rotating
        .wait_for_output(
            "new password added; waiting until it is accepted",
            Duration::from_secs(30),
        )
        .await;
    rotating.signal("KILL");
    assert!(wait_until(Duration::from_secs(10), || !rotating.is_running()).await);
    fx.assert_no_leak(&Run {
        code: 0,
        stdout: rotating.output(),
        stderr: String::new(),
    });
    let app = fx.entra.application(CLIENT).unwrap();
    let orphans: Vec<_> = app
        .passwords
        .iter()
        .filter(|p| p.key_id != KEY && p.key_id != THEIRS)
        .collect();
    assert_eq!(orphans.len(), 1, "{:?}", app.passwords);
    let orphan = orphans[0].key_id.clone();
    let name = orphans[0].display_name.clone().unwrap();
    let installation = name
        .split_whitespace()
        .find_map(|w| w.strip_prefix("installation="))
        .unwrap_or_else(|| panic!("{name}"))
        .to_owned();
    // The secret is the old one, and the id in the orphan's name is recorded beside it.
    assert_eq!(fx.file_secret(), SECRET);
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(&sidecar)
            .unwrap_or_else(|e| panic!("no record beside the secret before addPassword: {e}")),
    )
    .unwrap();
    assert_eq!(
        record["installation"].as_str(),
        Some(installation.as_str()),
        "{record}"
    );

    // After the overlap, the next run removes the orphan and no other password.
    fx.entra.set_secret_propagation_delay(Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let run = fx.run(&["rotate", "--job", "graph"], &[]).await;
    run.assert_code(0);
    assert!(
        run.stdout.contains(&format!(
            "removed the password {orphan} this installation created"
        )),
        "{}",
        run.stdout
    );
    let ids = fx.key_ids();
    assert!(!ids.contains(&orphan), "{ids:?}");
    assert!(
        ids.iter().any(|k| k == THEIRS),
        "the other installation's stays: {ids:?}"
    );
    assert!(
        ids.iter().any(|k| k == KEY),
        "the old secret stays for the overlap: {ids:?}"
    );
    assert_eq!(ids.len(), 3, "the old, theirs and the new one: {ids:?}");
    let app = fx.entra.application(CLIENT).unwrap();
    let new = app
        .passwords
        .iter()
        .find(|p| ![KEY, THEIRS].contains(&p.key_id.as_str()))
        .unwrap();
    assert_eq!(
        new.display_name.as_deref(),
        Some(name.as_str()),
        "the same installation id"
    );
    token_still_refreshed(&fx).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_job_shows_its_own_certificate_in_use_and_its_expiry_in_the_metric() {
    let fx = Fixture::start(10, &[OWNED_BY]).await;
    let ours = testkit::TestCertificate::generate("secret-sync-e2e-ours").unwrap();
    let other = testkit::TestCertificate::generate("secret-sync-e2e-other").unwrap();
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    // The other certificate expires first: "the earliest" would be the wrong one.
    let ours_end = now + time::Duration::days(40);
    let other_end = now + time::Duration::days(5);
    fx.entra.register_app(
        AppRegistration::new(TENANT, CLIENT)
            .with_certificate_expiring(&other, other_end)
            .with_certificate_expiring(&ours, ours_end)
            .with_graph_roles(&[OWNED_BY]),
    );
    let pem = fx.path("job.pem");
    std::fs::write(&pem, ours.combined_pem()).unwrap();
    let config = fx.config(r#""unused""#, "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        r#"client_secret = "unused""#,
        &format!("certificate = {{ file = \"{}\" }}", pem.display()),
    );
    std::fs::write(&config, text).unwrap();
    let app = fx.entra.application(CLIENT).unwrap();
    let key_of = |end: OffsetDateTime| {
        app.certificates
            .iter()
            .find(|c| c.end == end)
            .unwrap()
            .key_id
            .clone()
    };
    let (ours_key, other_key) = (key_of(ours_end), key_of(other_end));
    let key_line = ours.key_pem().lines().nth(1).unwrap().to_owned();

    let table = fx.run(&["credentials"], &[]).await;
    table.assert_code(0);
    table.assert_no_leak(&[key_line.as_str()]);
    let row = |key: &str| {
        table
            .stdout
            .lines()
            .find(|l| l.contains(key))
            .unwrap_or_else(|| panic!("{key} in {}", table.stdout))
            .to_owned()
    };
    assert!(
        row(&ours_key).contains("certificate") && row(&ours_key).ends_with("yes (thumbprint)"),
        "{}",
        table.stdout
    );
    assert!(row(&other_key).ends_with("no"), "{}", table.stdout);

    let json = fx.run(&["credentials", "--output", "json"], &[]).await;
    json.assert_code(0);
    let doc = json.json();
    let entry = |key: &str| {
        doc["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["key_id"] == key)
            .unwrap()
            .clone()
    };
    assert_eq!(entry(&ours_key)["in_use"], true, "{doc}");
    assert_eq!(entry(&ours_key)["in_use_by"], "thumbprint", "{doc}");
    assert_eq!(entry(&other_key)["in_use"], false, "{doc}");
    assert_eq!(doc["jobs"][0]["in_use"], "thumbprint", "{doc}");
    assert_eq!(doc["jobs"][0]["in_use_key_id"], ours_key.as_str(), "{doc}");

    // The state file, and plan from it.
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(fx.path("credentials-state.json")).unwrap())
            .unwrap();
    let recorded = state["jobs"]["graph"]["credentials"].as_array().unwrap();
    for c in recorded {
        assert_eq!(c["in_use"], c["key_id"] == ours_key.as_str(), "{state}");
    }
    let plan = fx.run(&["plan"], &[]).await;
    assert!(
        plan.stdout
            .lines()
            .any(|l| l.contains(&format!("certificate {ours_key} expires")) && l.contains("in use")),
        "{}",
        plan.stdout
    );

    // The daemon's metric is that certificate's expiry.
    let daemon = Daemon::spawn(fx.path("daemon.log"), &config, &["daemon"], &[]);
    let addr = daemon.listen_addr().await;
    let series = format!(
        "secret_sync_credential_expiry_timestamp_seconds{{job=\"graph\",kind=\"certificate\"}} {}",
        unix(ours_end)
    );
    let mut metrics = String::new();
    let seen = wait_until(Duration::from_secs(20), || {
        metrics = http_get(&addr, "/metrics").2;
        metrics.contains(&series)
    })
    .await;
    assert!(seen, "{series} in:\n{metrics}\n{}", daemon.output());
    let stopped = fx.stop_clean(daemon).await;
    stopped.assert_no_leak(&[key_line.as_str()]);
}
