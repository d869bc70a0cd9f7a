//! The credential lifecycle (issue 13) under the hardening rules of issues 9 and 10, through the
//! binary: a Graph endpoint that redirects, sends a huge body, drips or hangs (testkit's
//! `HostileServer` as `graph_endpoint`); malformed `addPassword` answers (the Entra emulator's
//! Graph, its answers edited); absurd `endDateTime`s; a crafted or corrupted state file and
//! record; Graph's 429 with an absurd `Retry-After`. Every run is scanned for the client secrets
//! (old and new) and every token issued, and for a panic.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use serde_json::{Value, json};
use testkit::{
    AppRegistration, Behaviour, EntraEmulator, Fault, GraphCall, HostileServer, Password,
};
use time::OffsetDateTime;
use time::macros::datetime;

use crate::support::{Daemon, Run, app_secrets_and_tokens, http_get, secret_sync, wait_until};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0a1b2c3d-0909-4444-8888-444455556666";
const SECRET: &str = "Hg7~hardening.graph.old.client-secret.value";
const KEY: &str = "11111111-2222-3333-4444-555555555555";
const HAND: &str = "99999999-2222-3333-4444-555555555555";
const OWNED_BY: &str = "Application.ReadWrite.OwnedBy";
const GRAPH_RESOURCE: &str = "https://graph.microsoft.com";

/// How much longer than its deadline a run may take (process start, the config, slow CI).
const SLACK: Duration = Duration::from_secs(6);

/// An Entra emulator whose app holds `SECRET` (keyId `KEY`, ending in 10 days), may manage its
/// own credentials, and a temp dir with `creds/graph.json` holding the secret as
/// `#client_secret` beside another field.
struct Fixture {
    entra: EntraEmulator,
    dir: tempfile::TempDir,
}

impl Fixture {
    async fn start() -> Fixture {
        Fixture::with_passwords(vec![]).await
    }

    /// Also registers `extra` passwords on the app.
    async fn with_passwords(extra: Vec<Password>) -> Fixture {
        let entra = EntraEmulator::start().await.unwrap();
        let now = OffsetDateTime::now_utc();
        let mut app = AppRegistration::new(TENANT, CLIENT)
            .with_password(
                Password::new(SECRET)
                    .key_id(KEY)
                    .display_name("made by hand")
                    .start(now - time::Duration::days(170))
                    .end(now + time::Duration::days(10) + time::Duration::hours(1)),
            )
            .with_graph_roles(&[OWNED_BY]);
        for password in extra {
            app = app.with_password(password);
        }
        entra.register_app(app);
        entra.add_owner(CLIENT, CLIENT);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        std::fs::create_dir(dir.path().join("creds")).unwrap();
        let fx = Fixture { entra, dir };
        fx.write_creds(&json!({"client_secret": SECRET, "note": "kept"}));
        fx
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_creds(&self, doc: &Value) {
        std::fs::write(self.path("creds/graph.json"), doc.to_string()).unwrap();
    }

    fn creds(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.path("creds/graph.json")).unwrap())
            .unwrap()
    }

    /// A config with one job `graph` reading `#client_secret` from `creds/graph.json`,
    /// watching and rotating, Graph at `graph` (the emulator's when `None`), plus `settings`
    /// (lines of `[settings]`).
    fn config(&self, graph: Option<&str>, settings: &str) -> PathBuf {
        let text = format!(
            r#"[settings]
authority = "{authority}"
listen = "127.0.0.1:0"
{settings}

[settings.credentials]
watch = true
warn_within = "30d"
graph_endpoint = "{graph}"
state_dir = "{state}"
check_every = "1s"

[backends.out]
kind = "file"
dir = "{out}"

[backends.creds]
kind = "file"
dir = "{creds}"

[jobs.graph]
tenant_id = "{TENANT}"
client_id = "{CLIENT}"
client_secret = {{ from = "creds", ref = "graph.json#client_secret" }}
scope = "https://vault.azure.net/.default"
targets = [{{ to = "out", name = "graph-token" }}]

[jobs.graph.rotation]
enabled = true
lifetime = "90d"
overlap = "1h"
propagation_timeout = "20s"
"#,
            authority = self.entra.base_url(),
            graph = graph.map_or_else(|| self.entra.graph_endpoint(), str::to_owned),
            state = self.dir.path().display(),
            out = self.path("out").display(),
            creds = self.path("creds").display(),
        );
        let path = self.path("secret-sync.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Every secret the app holds or held, and every token issued: none may be printed.
    fn secrets(&self) -> Vec<String> {
        app_secrets_and_tokens(&self.entra, CLIENT, SECRET)
    }

    fn assert_no_leak(&self, run: &Run) {
        let secrets = self.secrets();
        let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
        run.assert_no_leak(&refs);
        assert!(
            !run.stderr.contains("panicked") && !run.stdout.contains("panicked"),
            "{}",
            run.stderr
        );
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

    async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let config = self.path("secret-sync.toml");
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", config.to_str().unwrap()]);
        let run = tokio::time::timeout(Duration::from_secs(120), secret_sync(&all, env))
            .await
            .unwrap_or_else(|_| panic!("secret-sync {args:?} still runs after 2 minutes"));
        self.assert_no_leak(&run);
        run
    }

    /// `run`, asserting it ends within `within`.
    async fn run_within(&self, args: &[&str], within: Duration) -> Run {
        let started = Instant::now();
        let run = self.run(args, &[]).await;
        assert!(
            started.elapsed() <= within,
            "secret-sync {args:?} took {:?}, more than {within:?}:\n{}",
            started.elapsed(),
            run.stderr
        );
        run
    }

    /// The secret of `creds/graph.json` is still the old one, the other field kept.
    fn assert_old_secret_kept(&self) {
        let creds = self.creds();
        assert_eq!(creds["client_secret"], SECRET, "{creds}");
        assert_eq!(creds["note"], "kept", "{creds}");
    }
}

/// The bearer tokens requests carried.
fn bearers(server: &HostileServer) -> Vec<String> {
    server
        .requests()
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_owned))
        .map(|h| h.strip_prefix("Bearer ").unwrap_or(&h).to_owned())
        .collect()
}

/// Each token that reached `server` is one the emulator issued for Microsoft Graph, and no
/// token for the job's own scope (Key Vault) got there.
fn only_graph_tokens_reached(fx: &Fixture, server: &HostileServer) {
    let sent = bearers(server);
    assert!(!sent.is_empty(), "no request carried a token");
    for token in &sent {
        fx.entra
            .validate_bearer(token, GRAPH_RESOURCE)
            .unwrap_or_else(|e| panic!("a token that is not a Graph token reached Graph: {e:?}"));
    }
    for issued in fx.entra.issued_tokens() {
        if !issued.resource.contains("graph") {
            let value = issued.access_token.expose_secret();
            assert!(
                !server.requests().iter().any(|r| r.mentions(value)),
                "the job's own token reached the Graph endpoint"
            );
        }
    }
}

// ----- a hostile Graph endpoint -----

#[tokio::test(flavor = "multi_thread")]
async fn a_graph_endpoint_that_redirects_gets_the_graph_token_only_and_its_target_gets_nothing() {
    let fx = Fixture::start().await;
    let elsewhere = HostileServer::start(Behaviour::json(200, &json!({})))
        .await
        .unwrap();
    for status in [301, 302, 307, 308] {
        let graph = HostileServer::start(Behaviour::redirect(
            status,
            &elsewhere.url("/v1.0/applications(appId='x')"),
        ))
        .await
        .unwrap();
        fx.config(Some(&graph.base_url()), "");
        for command in [&["credentials"][..], &["rotate", "--job", "graph"][..]] {
            let run = fx.run(command, &[]).await;
            run.assert_code(1);
            assert!(
                run.stderr.contains("redirect") && run.stderr.contains("not followed"),
                "{status} {command:?}: {}",
                run.stderr
            );
        }
        only_graph_tokens_reached(&fx, &graph);
        // Nothing was added anywhere, and the secret is untouched.
        assert!(graph.requests().iter().all(|r| r.method == "GET"));
    }
    assert!(
        elsewhere.requests().is_empty(),
        "the redirect target got {:?}",
        elsewhere.requests()
    );
    // The Graph token was asked for Graph's scope only.
    for request in fx.entra.token_requests() {
        assert_eq!(
            request.form.get("scope").map(String::as_str),
            Some("https://graph.microsoft.com/.default")
        );
    }
    assert_eq!(fx.key_ids(), [KEY]);
    fx.assert_old_secret_kept();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_graph_answer_is_cut_off_and_named() {
    let fx = Fixture::start().await;
    for behaviour in [
        Behaviour::huge_body(200, "application/json", 200 << 20),
        Behaviour::huge_body(200, "application/json", 200 << 20).without_content_length(),
    ] {
        let graph = HostileServer::start(behaviour).await.unwrap();
        fx.config(Some(&graph.base_url()), "pass_timeout = \"20s\"");
        for command in [&["credentials"][..], &["rotate", "--job", "graph"][..]] {
            let run = fx.run_within(command, Duration::from_secs(20)).await;
            run.assert_code(1);
            assert!(
                run.stderr.contains("more than 1 MiB") && run.stderr.contains(&graph.base_url()),
                "{command:?}: {}",
                run.stderr
            );
        }
        assert!(
            graph.body_bytes_sent() < 3 * (32 << 20),
            "the client read {} bytes",
            graph.body_bytes_sent()
        );
        only_graph_tokens_reached(&fx, &graph);
    }
    assert_eq!(fx.key_ids(), [KEY]);
    fx.assert_old_secret_kept();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_graph_that_drips_or_hangs_ends_credentials_and_rotate_at_the_pass_deadline() {
    let fx = Fixture::start().await;
    let app = json!({"id": "aaaaaaaa-0000-0000-0000-000000000001", "appId": CLIENT,
        "passwordCredentials": [], "keyCredentials": []})
    .to_string();
    for behaviour in [
        Behaviour::hang(),
        Behaviour::slow_drip(200, "application/json", app, Duration::from_secs(1)),
    ] {
        let graph = HostileServer::start(behaviour).await.unwrap();
        fx.config(Some(&graph.base_url()), "pass_timeout = \"3s\"");
        for command in [&["credentials"][..], &["rotate", "--job", "graph"][..]] {
            let run = fx.run_within(command, Duration::from_secs(3) + SLACK).await;
            run.assert_code(1);
            assert!(
                run.stderr.contains("settings.pass_timeout"),
                "names the deadline: {}",
                run.stderr
            );
        }
        only_graph_tokens_reached(&fx, &graph);
    }
    fx.assert_old_secret_kept();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_after_of_ten_thousand_years_from_graph_ends_at_once() {
    let fx = Fixture::start().await;
    fx.config(None, "");
    fx.entra.inject_graph_times(
        GraphCall::Get,
        Fault::TooManyRequests {
            retry_after_secs: Some(300_000_000_000),
        },
        10,
    );
    for command in [&["credentials"][..], &["rotate", "--job", "graph"][..]] {
        let run = fx.run_within(command, Duration::from_secs(10)).await;
        run.assert_code(1);
        assert!(
            run.stderr.contains("throttling") && run.stderr.contains("no retry was made"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(fx.key_ids(), [KEY]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_stops_promptly_on_sigterm_while_its_credential_check_hangs() {
    let fx = Fixture::start().await;
    let graph = HostileServer::start(Behaviour::hang()).await.unwrap();
    fx.config(Some(&graph.base_url()), "");
    let mut daemon = Daemon::spawn(
        fx.path("daemon.log"),
        &fx.path("secret-sync.toml"),
        &["daemon"],
        &[],
    );
    let addr = daemon.listen_addr().await;
    assert!(
        wait_until(Duration::from_secs(20), || graph.request_count() > 0).await,
        "{}",
        daemon.output()
    );
    // The token job is unaffected while the check hangs.
    assert!(
        wait_until(Duration::from_secs(20), || fx
            .path("out/graph-token")
            .exists())
        .await,
        "{}",
        daemon.output()
    );
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    assert!(daemon.is_running());
    let (code, took, output) = daemon.stop("TERM").await;
    assert_eq!(code, 0, "{output}");
    assert!(
        took < Duration::from_secs(5),
        "stopped after {took:?}: {output}"
    );
    fx.assert_no_leak(&Run {
        code,
        stdout: output,
        stderr: String::new(),
    });
}

// ----- the state file -----

/// Puts something in place of a file.
type Make<'a> = &'a dyn Fn(&std::path::Path);

/// `credentials-state.json` in the fixture's state dir.
fn state_file(fx: &Fixture) -> PathBuf {
    fx.path("credentials-state.json")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_huge_non_utf8_or_symlinked_state_file_is_ignored_with_a_warning_never_a_hang() {
    let fx = Fixture::start().await;
    fx.config(None, "");
    let elsewhere = fx.path("elsewhere.json");
    let recorded = json!({"version": 1, "jobs": {"graph": {"watched_at": "2026-01-01T00:00:00Z",
        "app": CLIENT, "credentials": [{"kind": "password", "key_id": HAND,
        "display_name": "planted", "expires_on": "2026-02-01T00:00:00Z", "in_use": true}]}}});
    std::fs::write(&elsewhere, recorded.to_string()).unwrap();
    let cases: [(&str, Make<'_>); 4] = [
        ("not a regular file", &|p| {
            let made = std::process::Command::new("mkfifo")
                .arg(p)
                .status()
                .unwrap();
            assert!(made.success());
        }),
        ("larger than 1024 KiB", &|p| {
            let padding = "x".repeat(2 << 20);
            std::fs::write(
                p,
                json!({"version": 1, "jobs": {}, "pad": padding}).to_string(),
            )
            .unwrap();
        }),
        ("not UTF-8", &|p| {
            std::fs::write(p, b"{\"version\": 1, \xff\xfe}").unwrap()
        }),
        ("symbolic link", &|p| {
            std::os::unix::fs::symlink(&elsewhere, p).unwrap()
        }),
    ];
    for (why, make) in cases {
        let _ = std::fs::remove_file(state_file(&fx));
        make(&state_file(&fx));
        // plan reads it only: it says "never watched", warns, and ends.
        let plan = fx.run_within(&["plan"], Duration::from_secs(15)).await;
        plan.assert_code(0);
        assert!(
            plan.stdout.contains("graph: never watched"),
            "{why}: {}",
            plan.stdout
        );
        assert!(
            plan.stderr.contains("credential state file") && plan.stderr.contains(why),
            "{why}: {}",
            plan.stderr
        );
        assert!(
            !plan.stdout.contains("planted"),
            "{why}: followed the symlink"
        );
        // credentials watches, and replaces it with a state file of its own.
        let run = fx
            .run_within(&["credentials"], Duration::from_secs(15))
            .await;
        run.assert_code(0);
        let meta = std::fs::symlink_metadata(state_file(&fx)).unwrap();
        assert!(meta.is_file(), "{why}: replaced by a regular file");
        let text = std::fs::read_to_string(state_file(&fx)).unwrap();
        assert!(
            text.contains(KEY) && !text.contains("planted"),
            "{why}: {text}"
        );
        let plan = fx.run(&["plan"], &[]).await;
        assert!(
            plan.stdout
                .contains(&format!("graph: client secret {KEY} expires")),
            "{why}: {}",
            plan.stdout
        );
    }
    // The symlink's target was never written.
    assert_eq!(
        std::fs::read_to_string(&elsewhere).unwrap(),
        recorded.to_string()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_whose_state_file_is_a_fifo_keeps_watching_and_stops_on_sigterm() {
    let fx = Fixture::start().await;
    fx.config(None, "");
    let made = std::process::Command::new("mkfifo")
        .arg(state_file(&fx))
        .status()
        .unwrap();
    assert!(made.success());
    let mut daemon = Daemon::spawn(
        fx.path("daemon.log"),
        &fx.path("secret-sync.toml"),
        &["daemon"],
        &[],
    );
    let addr = daemon.listen_addr().await;
    let series =
        "secret_sync_credential_expiry_timestamp_seconds{job=\"graph\",kind=\"client_secret\"}";
    let mut metrics = String::new();
    let seen = wait_until(Duration::from_secs(20), || {
        metrics = http_get(&addr, "/metrics").2;
        metrics.contains(series)
    })
    .await;
    assert!(seen, "{metrics}\n{}", daemon.output());
    assert!(daemon.is_running());
    let (code, took, output) = daemon.stop("TERM").await;
    assert_eq!(code, 0, "{output}");
    assert!(
        took < Duration::from_secs(5),
        "stopped after {took:?}: {output}"
    );
    fx.assert_no_leak(&Run {
        code,
        stdout: output,
        stderr: String::new(),
    });
}

// ----- addPassword answers -----

/// A rotation whose addPassword answer `edit` changed fails with `needle` on stderr, writes
/// nothing back, and leaves the app with the old password plus, when the answer could not name
/// the new one, that one (an orphan named by the display name).
async fn a_malformed_answer_is_refused(edit: fn(&mut Value), needle: &str, undone: bool) {
    let fx = Fixture::start().await;
    fx.config(None, "");
    fx.entra.edit_graph_answers(GraphCall::AddPassword, edit);
    let run = fx
        .run(&["rotate", "--job", "graph"], &[("RUST_LOG", "trace")])
        .await;
    run.assert_code(1);
    assert!(run.stderr.contains(needle), "{needle}: {}", run.stderr);
    fx.assert_old_secret_kept();
    let creds = fx.creds();
    assert!(creds.get("client_secret_key_id").is_none(), "{creds}");
    if undone {
        assert!(
            run.stderr.contains("was removed again"),
            "{needle}: {}",
            run.stderr
        );
        assert_eq!(fx.key_ids(), [KEY]);
    } else {
        // Its display name carries the id recorded beside the secret before addPassword.
        let installation = creds["client_secret_installation"].as_str().unwrap_or("");
        assert!(
            !installation.is_empty()
                && run.stderr.contains(&format!(
                    "secret-sync job=graph installation={installation}"
                ))
                && run.stderr.contains("removed as this installation's orphan"),
            "{needle}: {creds} {}",
            run.stderr
        );
        assert_eq!(fx.key_ids().len(), 2);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_add_password_answer_without_a_key_id_writes_nothing_back() {
    a_malformed_answer_is_refused(
        |v| {
            v.as_object_mut().unwrap().remove("keyId");
        },
        "has no keyId",
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_add_password_answer_whose_key_id_is_not_a_guid_writes_nothing_back() {
    a_malformed_answer_is_refused(
        |v| v["keyId"] = json!("../../../../etc/passwd"),
        "keyId that is not a GUID",
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_add_password_answer_with_an_absurd_end_is_undone() {
    for end in ["99999-01-01T00:00:00Z", "0001-01-01T00:00:00Z"] {
        let fx = Fixture::start().await;
        fx.config(None, "");
        fx.entra
            .edit_graph_answers(GraphCall::AddPassword, move |v| {
                v["endDateTime"] = json!(end)
            });
        let run = fx.run(&["rotate", "--job", "graph"], &[]).await;
        run.assert_code(1);
        assert!(
            run.stderr.contains("the answer is not used")
                && run.stderr.contains("was removed again"),
            "{end}: {}",
            run.stderr
        );
        fx.assert_old_secret_kept();
        assert_eq!(fx.key_ids(), [KEY]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_add_password_answer_whose_hint_does_not_match_its_secret_is_undone() {
    a_malformed_answer_is_refused(
        |v| v["hint"] = json!("abcdefghij"),
        "not the first three characters of its secretText",
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_at_trace_level_echoes_the_new_secret_nowhere() {
    let fx = Fixture::start().await;
    fx.config(None, "");
    let run = fx
        .run(&["rotate", "--job", "graph"], &[("RUST_LOG", "trace")])
        .await;
    run.assert_code(0);
    assert!(
        run.stderr.contains("TRACE") || run.stderr.contains("DEBUG"),
        "trace level on"
    );
    let json = fx
        .run(
            &["credentials", "--output", "json"],
            &[("RUST_LOG", "trace")],
        )
        .await;
    json.assert_code(0);
    let new: Vec<String> = fx
        .entra
        .application(CLIENT)
        .unwrap()
        .passwords
        .iter()
        .filter(|p| p.key_id != KEY)
        .map(|p| p.secret.expose_secret().to_owned())
        .collect();
    assert_eq!(new.len(), 1);
    // The state file, and the record beside the secret (only the secret field holds it).
    let state = std::fs::read_to_string(state_file(&fx)).unwrap();
    assert!(!state.contains(&new[0]) && !state.contains(SECRET));
    let mut creds = fx.creds();
    assert_eq!(creds["client_secret"], new[0].as_str());
    creds.as_object_mut().unwrap().remove("client_secret");
    let rest = creds.to_string();
    assert!(!rest.contains(&new[0]) && !rest.contains(SECRET), "{rest}");
}

// ----- crafted records and dates -----

/// `creds/graph.json` with the old secret and this record beside it.
fn crafted_record(fx: &Fixture, record: Value) {
    let mut doc = json!({"client_secret": SECRET, "note": "kept"});
    for (key, value) in record.as_object().unwrap() {
        doc[format!("client_secret_{key}")] = value.clone();
    }
    fx.write_creds(&doc);
}

fn hand_made() -> Password {
    let now = OffsetDateTime::now_utc();
    Password::new("Zz9~another.hand.made.secret.of.this.app")
        .key_id(HAND)
        .display_name("made by hand too")
        .start(now - time::Duration::days(30))
        .end(now + time::Duration::days(300))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_naming_the_secret_in_use_as_the_one_to_retire_never_removes_it() {
    let fx = Fixture::start().await;
    fx.config(None, "");
    // The old secret put back by hand, the record left as it was: it retires the one in use.
    crafted_record(
        &fx,
        json!({"key_id": HAND, "previous_key_id": KEY,
            "retire_previous_on": "2020-01-01T00:00:00Z", "installation": "0123456789abcdef"}),
    );
    let run = fx.run(&["rotate", "--job", "graph"], &[]).await;
    run.assert_code(0);
    assert!(
        run.stdout.contains("it is the secret in use") && run.stdout.contains("not removed"),
        "{}",
        run.stdout
    );
    assert_eq!(fx.key_ids(), [KEY], "the secret in use was removed");
    let creds = fx.creds();
    assert_eq!(creds["client_secret"], SECRET);
    assert!(
        creds.get("client_secret_previous_key_id").is_none(),
        "{creds}"
    );
    // The job still gets tokens with it.
    let run = fx.run(&["run"], &[]).await;
    run.assert_code(0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_record_retiring_a_key_the_app_lacks_or_absurdly_late_removes_nothing_else() {
    // A keyId the app does not have: nothing is removed, the record is cleared.
    let fx = Fixture::with_passwords(vec![hand_made()]).await;
    fx.config(None, "");
    crafted_record(
        &fx,
        json!({"key_id": "x".repeat(5000), "previous_key_id": "abababab-0000-0000-0000-000000000000",
            "retire_previous_on": "2020-01-01T00:00:00Z"}),
    );
    let run = fx.run(&["rotate", "--job", "graph"], &[]).await;
    run.assert_code(0);
    let mut expected = vec![KEY.to_owned(), HAND.to_owned()];
    expected.sort();
    assert_eq!(fx.key_ids(), expected);
    assert!(fx.creds().get("client_secret_previous_key_id").is_none());

    // A retirement in the year 9999: not trusted, the old key stays, and it does not stop
    // the rotation (the secret in use expires in 10 days).
    let fx = Fixture::with_passwords(vec![hand_made()]).await;
    fx.config(None, "");
    crafted_record(
        &fx,
        json!({"key_id": KEY, "previous_key_id": HAND,
            "retire_previous_on": "9999-12-31T23:59:59Z", "installation": "0123456789abcdef"}),
    );
    let mut daemon = Daemon::spawn(
        fx.path("daemon.log"),
        &fx.path("secret-sync.toml"),
        &["daemon"],
        &[],
    );
    let output = daemon
        .wait_for_output("rotated: the new password", Duration::from_secs(30))
        .await;
    assert!(output.contains("not trusted"), "{output}");
    assert!(daemon.is_running());
    let (code, _, output) = daemon.stop("TERM").await;
    assert_eq!(code, 0, "{output}");
    fx.assert_no_leak(&Run {
        code,
        stdout: output,
        stderr: String::new(),
    });
    let ids = fx.key_ids();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(ids.contains(&HAND.to_owned()) && ids.contains(&KEY.to_owned()));
    let creds = fx.creds();
    assert_eq!(creds["client_secret_previous_key_id"], KEY, "{creds}");
}

#[tokio::test(flavor = "multi_thread")]
async fn end_dates_in_the_year_9999_or_1_keep_output_metric_and_decision_sane() {
    let far = datetime!(9999-12-31 23:59:59 UTC);
    let past = datetime!(0001-01-01 00:00:00 UTC);
    let fx = Fixture::with_passwords(vec![
        Password::new("Qq1~long.ago.secret.of.this.app.value")
            .key_id(HAND)
            .display_name("ancient")
            .start(past)
            .end(past + time::Duration::days(1)),
    ])
    .await;
    // The secret in use ends in the year 9999.
    fx.entra.edit_graph_answers(GraphCall::Get, move |v| {
        for p in v["passwordCredentials"].as_array_mut().unwrap() {
            if p["keyId"] == KEY {
                p["endDateTime"] = json!("9999-12-31T23:59:59Z");
            }
        }
    });
    fx.config(None, "");
    let run = fx.run(&["credentials", "--output", "json"], &[]).await;
    run.assert_code(0);
    let doc = run.json();
    let row = |key: &str| {
        doc["credentials"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["key_id"] == key)
            .unwrap()
            .clone()
    };
    assert_eq!(row(KEY)["expires_on"], "9999-12-31T23:59:59Z");
    assert!(row(KEY)["days_left"].as_i64().unwrap() > 2_900_000);
    assert!(row(HAND)["days_left"].as_i64().unwrap() < -700_000);
    assert!(!run.stderr.contains("warning:"), "{}", run.stderr);
    // The daemon: the metric says it, and a secret valid until 9999 is not rotated.
    let mut daemon = Daemon::spawn(
        fx.path("daemon.log"),
        &fx.path("secret-sync.toml"),
        &["daemon"],
        &[],
    );
    let addr = daemon.listen_addr().await;
    let series = format!(
        "secret_sync_credential_expiry_timestamp_seconds{{job=\"graph\",kind=\"client_secret\"}} {}",
        far.unix_timestamp()
    );
    let mut metrics = String::new();
    let seen = wait_until(Duration::from_secs(20), || {
        metrics = http_get(&addr, "/metrics").2;
        metrics.contains(&series)
    })
    .await;
    assert!(seen, "{series} in:\n{metrics}\n{}", daemon.output());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(daemon.is_running());
    let (code, _, output) = daemon.stop("TERM").await;
    assert_eq!(code, 0, "{output}");
    assert!(!output.contains("rotated"), "{output}");
    fx.assert_no_leak(&Run {
        code,
        stdout: output,
        stderr: String::new(),
    });
    let mut expected = vec![KEY.to_owned(), HAND.to_owned()];
    expected.sort();
    assert_eq!(fx.key_ids(), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn durations_past_the_year_9999_are_a_clear_error_not_a_panic() {
    let fx = Fixture::start().await;
    let config = fx.config(None, "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            "lifetime = \"90d\"",
            "lifetime = \"20000years\"\nrotate_within = \"10000years\"",
        )
        .replace("warn_within = \"30d\"", "warn_within = \"50000years\"")
        .replace("check_every = \"1s\"", "check_every = \"50000years\"");
    std::fs::write(&config, text).unwrap();
    let run = fx.run(&["credentials"], &[]).await;
    run.assert_code(0);
    assert!(
        run.stderr.contains("warning:"),
        "inside warn_within: {}",
        run.stderr
    );
    let run = fx.run(&["rotate", "--job", "graph"], &[]).await;
    run.assert_code(1);
    assert!(run.stderr.contains("past the year 9999"), "{}", run.stderr);
    assert_eq!(fx.key_ids(), [KEY]);
    let mut daemon = Daemon::spawn(
        fx.path("daemon.log"),
        &fx.path("secret-sync.toml"),
        &["daemon"],
        &[],
    );
    let output = daemon
        .wait_for_output("past the year 9999", Duration::from_secs(20))
        .await;
    assert!(daemon.is_running(), "{output}");
    let (code, _, output) = daemon.stop("TERM").await;
    assert_eq!(code, 0, "{output}");
    assert!(!output.contains("panicked"), "{output}");
}
