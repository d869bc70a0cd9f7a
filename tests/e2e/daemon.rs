//! Daemon mode end to end: the built binary running `daemon` / `run --watch` as a process,
//! against the Entra emulator issuing short-lived tokens (20 s) and, for Vault logins that
//! expire while the daemon runs, real OpenBao. What operators rely on: targets are rewritten
//! before their tokens expire, again and again; jobs with the same credentials share one token
//! request; failures back off and recover; SIGHUP with a broken config keeps the running one
//! (and serving), a good one is picked up; SIGTERM/SIGINT exit 0 promptly; nothing secret is
//! ever logged.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use serde_json::{Value, json};
use testkit::real::OpenBao;
use testkit::{AppRegistration, EntraEmulator, Fault, TokenOptions};

use crate::support::{Daemon, http_get, issued_access_tokens, wait_until};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0a1b2c3d-1111-2222-3333-444455556666";
const SECRET: &str = "Zq8~e2e.daemon.client.secret-value";
const GRAPH: &str = "https://graph.microsoft.com/.default";
const LIFETIME: Duration = Duration::from_secs(20);
/// The configs' `refresh_before`.
const REFRESH_BEFORE: Duration = Duration::from_secs(10);

/// The Entra emulator issuing 20 s tokens, and a temp dir with the config and the file targets.
struct World {
    entra: EntraEmulator,
    dir: tempfile::TempDir,
}

impl World {
    async fn start() -> World {
        let entra = EntraEmulator::start().await.unwrap();
        entra.register_app(AppRegistration::new(TENANT, CLIENT).with_secret(SECRET));
        entra.set_token_options(TokenOptions {
            lifetime: LIFETIME,
            ..TokenOptions::default()
        });
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        World { entra, dir }
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("secret-sync.toml")
    }

    /// Settings (refresh_before 10 s, a listener on a free port) and the file backend.
    fn settings(&self) -> String {
        format!(
            "[settings]\nrefresh_before = \"10s\"\nconcurrency = 4\nauthority = \"{}\"\n\
             listen = \"127.0.0.1:0\"\n\n\
             [backends.local]\nkind = \"file\"\ndir = \"{}\"\n\n",
            self.entra.base_url(),
            self.out().display()
        )
    }

    /// A job syncing the Graph token of the one app into `targets` (TOML inline tables).
    fn job(name: &str, targets: &[&str]) -> String {
        format!(
            "[jobs.{name}]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
             client_secret = {{ env = \"APP_SECRET\" }}\nscope = \"{GRAPH}\"\n\
             targets = [{}]\n\n",
            targets.join(", ")
        )
    }

    fn file_target(name: &str) -> String {
        format!("{{ to = \"local\", name = \"{name}\", format = \"json\" }}")
    }

    fn write_config(&self, text: &str) {
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// The token a json file target holds, if it exists.
    fn file_token(&self, name: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.out().join(name)).ok()?;
        let doc: Value = serde_json::from_str(&text).ok()?;
        doc["access_token"].as_str().map(str::to_owned)
    }

    /// Every token the emulator issued, for leak scans.
    fn issued(&self) -> Vec<String> {
        issued_access_tokens(&self.entra)
    }

    fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut vars = vec![("APP_SECRET", SECRET)];
        vars.extend_from_slice(env);
        Daemon::spawn(
            self.dir.path().join("daemon.log"),
            &self.config_path(),
            args,
            &vars,
        )
    }
}

fn assert_no_leak(output: &str, secrets: &[String]) {
    assert!(
        !output.contains(SECRET),
        "the client secret leaked:\n{output}"
    );
    for secret in secrets {
        assert!(
            !output.contains(secret.as_str()),
            "a token leaked:\n{output}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_refreshes_short_lived_tokens_and_two_jobs_share_one_request_per_refresh() {
    let w = World::start().await;
    w.write_config(&format!(
        "{}{}{}",
        w.settings(),
        World::job("a", &[&World::file_target("a.json")]),
        World::job("b", &[&World::file_target("b.json")]),
    ));
    let daemon = w.spawn(&["run", "--watch"], &[]);

    // Watch both targets for 32 s: with 20 s tokens and refresh_before 10 s (lead 5 s), a
    // pass rewrites them 14.5-12.5 s before expiry, so about every 6 s.
    let started = Instant::now();
    let mut seen_a: Vec<String> = Vec::new();
    let mut seen_b: Vec<String> = Vec::new();
    let mut late = Vec::new();
    while started.elapsed() < Duration::from_secs(32) {
        for (name, seen) in [("a.json", &mut seen_a), ("b.json", &mut seen_b)] {
            if let Some(token) = w.file_token(name)
                && seen.last() != Some(&token)
            {
                seen.push(token);
            }
        }
        // refresh_before is a promise: every token a target holds stays valid for at least
        // that long, because the refresh comes before the refresh point.
        let deadline = std::time::SystemTime::now() + REFRESH_BEFORE;
        for token in w.entra.issued_tokens() {
            let held = [seen_a.last(), seen_b.last()]
                .into_iter()
                .flatten()
                .any(|t| t == token.access_token.expose_secret());
            if held && token.expires_at < deadline {
                late.push(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, took, output) = daemon.stop("TERM").await;
    code_is(0, code, &output);
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    // The last poll may have caught one file rewritten and not yet the other (a pass in
    // flight finishes before the daemon exits): read both once more now that it has stopped.
    for (name, seen) in [("a.json", &mut seen_a), ("b.json", &mut seen_b)] {
        if let Some(token) = w.file_token(name)
            && seen.last() != Some(&token)
        {
            seen.push(token);
        }
    }

    assert!(
        late.is_empty(),
        "a target held a token with less than refresh_before left at {late:?}"
    );
    assert!(
        seen_a.len() >= 3,
        "a.json was written {} time(s) in 32 s, expected at least 3 (start, ~6 s, ~12 s):\n{output}",
        seen_a.len()
    );
    // Coalescing: the two jobs' targets always got the same tokens, each from one request.
    // Each job has its own jitter, so SIGTERM may come between the two passes of one refresh:
    // then one target holds the newest token and the other one not yet (seen in CI).
    let common = seen_a.len().min(seen_b.len());
    assert!(
        seen_a.len().abs_diff(seen_b.len()) <= 1,
        "the targets were written {} and {} times",
        seen_a.len(),
        seen_b.len()
    );
    assert_eq!(
        seen_a[..common],
        seen_b[..common],
        "the jobs did not share their tokens"
    );
    let distinct: BTreeSet<&String> = seen_a.iter().chain(&seen_b).collect();
    assert_eq!(
        w.entra.token_request_count(),
        distinct.len(),
        "one token request per refresh for both jobs; output:\n{output}"
    );
    assert!(
        output.matches("job pass").count() >= 6,
        "one info line per job pass:\n{output}"
    );
    assert!(output.contains("next_in="), "{output}");
    assert_no_leak(&output, &w.issued());
}

fn code_is(expected: i32, code: i32, output: &str) {
    assert_eq!(code, expected, "exit code; output:\n{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_back_off_then_the_job_recovers() {
    let w = World::start().await;
    w.write_config(&format!(
        "{}{}",
        w.settings(),
        World::job("a", &[&World::file_target("a.json")])
    ));
    // Two refusals that are not retried inside one request, then normal answers.
    w.entra.inject_times(
        Fault::EntraError {
            status: 401,
            error: "invalid_client".to_owned(),
            code: 7_000_215,
            message: "Invalid client secret provided.".to_owned(),
        },
        2,
    );
    let started = Instant::now();
    let mut daemon = w.spawn(&["daemon"], &[]);
    let mut requests_at = Vec::new();
    let recovered = wait_until(Duration::from_secs(25), || {
        let count = w.entra.token_request_count();
        while requests_at.len() < count {
            requests_at.push(started.elapsed());
        }
        w.file_token("a.json").is_some()
    })
    .await;
    let output = daemon.output();
    assert!(recovered, "the job never recovered; output:\n{output}");
    assert!(daemon.is_running());
    assert_eq!(
        requests_at.len(),
        3,
        "two failures then one success: {requests_at:?}; output:\n{output}"
    );
    // Backoff: 2.5-5 s after the first failure, 5-10 s after the second.
    let first_wait = requests_at[1] - requests_at[0];
    let second_wait = requests_at[2] - requests_at[1];
    assert!(
        first_wait >= Duration::from_secs(2) && first_wait <= Duration::from_secs(6),
        "first backoff {first_wait:?}: requests at {requests_at:?}; output:\n{output}"
    );
    assert!(
        second_wait >= Duration::from_millis(4500) && second_wait <= Duration::from_secs(11),
        "second backoff {second_wait:?}: requests at {requests_at:?}; output:\n{output}"
    );
    assert_eq!(
        output.matches("job pass failed; backing off").count(),
        2,
        "{output}"
    );

    let (code, took, output) = daemon.stop("INT").await;
    code_is(0, code, &output);
    assert!(took < Duration::from_secs(5), "SIGINT took {took:?}");
    assert_no_leak(&output, &w.issued());
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_with_a_broken_config_keeps_the_running_one_and_a_good_one_is_picked_up() {
    let w = World::start().await;
    let good = format!(
        "{}{}",
        w.settings(),
        World::job("a", &[&World::file_target("a.json")])
    );
    w.write_config(&good);
    let mut daemon = w.spawn(&["daemon"], &[]);
    let addr = daemon.listen_addr().await;
    assert!(
        wait_until(Duration::from_secs(10), || w.file_token("a.json").is_some()).await,
        "a.json was not written; output:\n{}",
        daemon.output()
    );

    // A broken file: unknown key and a bad duration. The daemon keeps running and serving.
    w.write_config(&good.replace(
        "refresh_before = \"10s\"",
        "refresh_before = \"soon\"\ncolour = \"blue\"",
    ));
    daemon.signal("HUP");
    let output = daemon
        .wait_for_output("reload failed", Duration::from_secs(10))
        .await;
    assert!(
        output.contains("refresh_before"),
        "the config errors are logged:\n{output}"
    );
    assert!(
        output.contains("colour"),
        "every config error is logged:\n{output}"
    );
    assert!(
        daemon.is_running(),
        "the daemon died on a bad reload:\n{output}"
    );
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    let (status, _, body) = http_get(&addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    let (status, _, metrics) = http_get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("secret_sync_job_runs_total{job=\"a\",outcome=\"success\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("secret_sync_config_reloads_total{outcome=\"failure\"} 1"),
        "{metrics}"
    );

    // A good file with a second job: picked up, and the first job's token is not requested
    // again (it is fresh; the token cache outlives the reload).
    let requests = w.entra.token_request_count();
    w.write_config(&format!(
        "{good}{}",
        World::job("b", &[&World::file_target("b.json")])
    ));
    daemon.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(10), || w.file_token("b.json").is_some()).await,
        "the reloaded job b never ran; output:\n{}",
        daemon.output()
    );
    assert_eq!(
        w.file_token("b.json"),
        w.file_token("a.json"),
        "job b reuses the token job a got before the reload"
    );
    assert_eq!(w.entra.token_request_count(), requests);
    let (_, _, metrics) = http_get(&addr, "/metrics");
    assert!(
        metrics.contains("secret_sync_config_reloads_total{outcome=\"success\"} 1"),
        "{metrics}"
    );

    let (code, took, output) = daemon.stop("TERM").await;
    code_is(0, code, &output);
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    assert_no_leak(&output, &w.issued());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_pass_in_flight_finish_its_write_then_exits_0() {
    let w = World::start().await;
    w.write_config(&format!(
        "{}{}",
        w.settings(),
        World::job("a", &[&World::file_target("a.json")])
    ));
    // Entra ID answers the first token request after 3 s: the pass is in flight meanwhile.
    w.entra.inject(Fault::Delay(Duration::from_secs(3)));
    let daemon = w.spawn(&["daemon"], &[]);
    assert!(
        wait_until(Duration::from_secs(10), || w.entra.token_request_count()
            == 1)
        .await,
        "no token request; output:\n{}",
        daemon.output()
    );
    daemon
        .wait_for_output(
            "reading credentials and getting a token",
            Duration::from_secs(5),
        )
        .await;
    assert!(
        w.file_token("a.json").is_none(),
        "written before the answer came"
    );
    let (code, took, output) = daemon.stop("TERM").await;
    code_is(0, code, &output);
    assert!(
        w.file_token("a.json").is_some(),
        "the pass in flight did not finish its write:\n{output}"
    );
    assert!(
        took < Duration::from_secs(10),
        "SIGTERM with a pass in flight took {took:?}"
    );
    assert!(
        output.contains("waiting for the passes in flight"),
        "{output}"
    );
    assert_no_leak(&output, &w.issued());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_that_does_not_load_at_start_up_exits_2() {
    let w = World::start().await;
    w.write_config("[settings]\nrefresh_before = \"soon\"\n");
    let mut daemon = w.spawn(&["daemon"], &[]);
    let code = daemon.exit_code(Duration::from_secs(10)).await;
    let output = daemon.output();
    assert_eq!(code, 2, "{output}");
    assert!(output.contains("refresh_before"), "{output}");
}

/// Runs the daemon for 25 s with one job writing to OpenBao through `auth` (the TOML of the
/// backend's `auth`), and returns how many different tokens OpenBao got and the output.
async fn vault_daemon(bao: &OpenBao, auth: &str, env: &[(&str, &str)]) -> (usize, String) {
    let w = World::start().await;
    w.write_config(&format!(
        "{}[backends.bao]\nkind = \"vault\"\naddress = \"{}\"\nmount = \"secret\"\nkv_version = 2\n\
         auth = {auth}\n\n{}",
        w.settings(),
        bao.address(),
        World::job("a", &["{ to = \"bao\", name = \"tokens/a\" }"]),
    ));
    let mut daemon = w.spawn(&["daemon"], env);
    let read = || {
        let (status, text) = bao.api_raw("GET", "secret/data/tokens/a", None);
        let doc: Value = serde_json::from_str(&text).ok().filter(|_| status == 200)?;
        doc["data"]["data"]["access_token"]
            .as_str()
            .map(str::to_owned)
    };
    let mut seen: Vec<String> = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(25) {
        if let Some(token) = read()
            && seen.last() != Some(&token)
        {
            seen.push(token);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(daemon.is_running(), "{}", daemon.output());
    let (code, _, output) = daemon.stop("TERM").await;
    code_is(0, code, &output);
    let mut secrets = w.issued();
    secrets.push(bao.root_token().expose_secret().to_owned());
    secrets.extend(env.iter().map(|(_, v)| (*v).to_owned()));
    assert_no_leak(&output, &secrets);
    (seen.len(), output)
}

const WRITER: &str =
    "path \"secret/*\" { capabilities = [\"create\", \"read\", \"update\", \"list\"] }";

#[tokio::test(flavor = "multi_thread")]
async fn approle_logins_that_expire_between_passes_are_made_again() {
    let bao = OpenBao::start();
    bao.put_policy("writer", WRITER);
    let creds = bao.enable_approle("approle", "daemon", &["writer"]);
    // Every Vault token lives 3 s at most: each pass needs a new login.
    bao.api(
        "POST",
        "auth/approle/role/daemon",
        Some(json!({"token_policies": ["writer"], "token_ttl": "3s", "token_max_ttl": "3s"})),
    );
    let auth = format!(
        "{{ method = \"approle\", role_id = \"{}\", secret_id_env = \"BAO_SECRET_ID\" }}",
        creds.role_id
    );
    let (written, output) = vault_daemon(
        &bao,
        &auth,
        &[("BAO_SECRET_ID", creds.secret_id.expose_secret())],
    )
    .await;
    assert!(
        written >= 3,
        "OpenBao got {written} token(s) in 25 s, expected a rewrite every ~11 s:\n{output}"
    );
    assert!(!output.contains("failed"), "a pass failed:\n{output}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewable_vault_token_shorter_lived_than_the_time_between_passes_is_kept_alive() {
    let bao = OpenBao::start();
    bao.put_policy("writer", WRITER);
    // A 9 s token, renewable: passes come every ~11 s, so only the keep-alive reads between
    // them (every 2.5 s with refresh_before 10 s) keep it alive.
    let created = bao.api(
        "POST",
        "auth/token/create",
        Some(json!({"policies": ["writer"], "ttl": "9s", "renewable": true})),
    );
    let token = created["auth"]["client_token"].as_str().unwrap().to_owned();
    let (written, output) = vault_daemon(
        &bao,
        "{ method = \"token\", token_env = \"BAO_TOKEN\" }",
        &[("BAO_TOKEN", token.as_str())],
    )
    .await;
    assert!(
        written >= 3,
        "OpenBao got {written} token(s) in 25 s, expected a rewrite every ~11 s:\n{output}"
    );
    assert!(!output.contains("failed"), "a pass failed:\n{output}");
}
