//! After-write actions (issue 14) through the built binary: a consumer is told that a new
//! token is in the store by a command (`exec`), a signal to a process named by a pid file, or
//! a signed webhook. What users rely on: the token never reaches the action (its environment,
//! arguments, stdin and the webhook body are scanned for it), an action runs only after a pass
//! that wrote, a job's action once for all its targets, a failed action fails the run (exit 1)
//! with the target still updated and, in the daemon, is retried without a second token
//! request; a hanging command is killed with its children; a stale pid file gets no signal;
//! `validate` refuses the mistakes with file, line and key.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{AppRegistration, EntraEmulator, TokenOptions};

use crate::support::{
    Daemon, RecordingServer, Run, http_get, issued_access_tokens, secret_sync, wait_until,
};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0a1b2c3d-1111-2222-3333-444455556666";
const SECRET: &str = "Zq8~e2e.actions.client.secret-value";
const GRAPH: &str = "https://graph.microsoft.com/.default";

/// The Entra emulator and a temp dir with the config, an `out/` dir for the file backend and
/// whatever the actions record.
struct World {
    entra: EntraEmulator,
    dir: tempfile::TempDir,
}

impl World {
    async fn start() -> World {
        let entra = EntraEmulator::start().await.unwrap();
        entra.register_app(AppRegistration::new(TENANT, CLIENT).with_secret(SECRET));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        World { entra, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `path(name)` as a TOML string's contents.
    fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn config_path(&self) -> PathBuf {
        self.path("secret-sync.toml")
    }

    /// Settings, the file backend `local` and `[jobs.graph]` with `targets` and `job_extra`
    /// (more keys of the job, e.g. its `actions`).
    fn write_config(&self, targets: &[&str], job_extra: &str) {
        self.write_config_with("", targets, job_extra);
    }

    /// [`World::write_config`] with more `[settings]` keys.
    fn write_config_with(&self, settings: &str, targets: &[&str], job_extra: &str) {
        let text = format!(
            "[settings]\n{settings}authority = \"{}\"\nlisten = \"127.0.0.1:0\"\n\n\
             [backends.local]\nkind = \"file\"\ndir = \"{}\"\n\n\
             [jobs.graph]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
             client_secret = {{ env = \"APP_SECRET\" }}\nscope = \"{GRAPH}\"\n\
             targets = [{}]\n{job_extra}\n",
            self.entra.base_url(),
            self.p("out"),
            targets.join(", ")
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// Writes an executable helper script and returns its path.
    fn script(&self, name: &str, body: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        path.display().to_string()
    }

    async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let config = self.config_path().display().to_string();
        let mut all = args.to_vec();
        all.extend(["--config", config.as_str()]);
        let mut vars = vec![("APP_SECRET", SECRET)];
        vars.extend_from_slice(env);
        secret_sync(&all, &vars).await
    }

    fn issued(&self) -> Vec<String> {
        issued_access_tokens(&self.entra)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// Panics if the client secret or any issued token is in `text`.
    fn assert_clean(&self, what: &str, text: &str) {
        assert!(
            !text.contains(SECRET),
            "the client secret is in {what}:\n{text}"
        );
        for token in self.issued() {
            assert!(!text.contains(&token), "a token is in {what}:\n{text}");
        }
    }
}

fn file_target(name: &str) -> String {
    format!("{{ to = \"local\", name = \"{name}\", format = \"json\" }}")
}

/// The `actions` line of a job running one command.
fn exec_action(argv: &[&str], extra: &str) -> String {
    let argv: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
    format!("actions = [{{ exec = [{}]{extra} }}]", argv.join(", "))
}

/// Whether `pid` is a running process (a zombie counts as gone).
fn alive(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exec_gets_its_variables_never_the_token_or_a_secret_source() {
    let w = World::start().await;
    let record = w.script(
        "record.sh",
        "env > \"$1/env.txt\"\ncat > \"$1/stdin.txt\"\nprintf '%s\\n' \"$@\" > \"$1/argv.txt\"\n\
         echo \"the command's own output for $SECRET_SYNC_JOB\"\n",
    );
    let dir = w.dir.path().display().to_string();
    // A Vault backend no target uses: its token variable is still a secret source.
    w.write_config(
        &[&file_target("a.json"), &file_target("b.json")],
        &format!(
            "{}\n\n[backends.vault]\nkind = \"vault\"\naddress = \"http://127.0.0.1:1\"\n\
             auth = {{ method = \"token\", token_env = \"VAULT_TOKEN_FOR_TEST\" }}\n",
            exec_action(&["/bin/sh", &record, &dir], "")
        ),
    );
    let env = [
        ("VAULT_TOKEN_FOR_TEST", "hvs.e2e-actions-vault-token"),
        ("KEPT_FOR_THE_COMMAND", "kept-value"),
        ("SECRET_SYNC_JOB", "inherited-and-replaced"),
    ];
    let run = w.run(&["run"], &env).await;
    run.assert_code(0);
    assert!(
        run.stdout.contains("exec /bin/sh (jobs.graph.actions[0])")
            && run.stdout.contains("1 action(s): 1 ok"),
        "{}",
        run.stdout
    );

    let recorded = w.read("env.txt");
    let vars: Vec<&str> = recorded.lines().collect();
    let expires = {
        let doc: Value = serde_json::from_str(&w.read("out/a.json")).unwrap();
        doc["expires_on"].clone()
    };
    for expected in [
        "SECRET_SYNC_JOB=graph",
        "SECRET_SYNC_ACTION=jobs.graph.actions[0]",
        "SECRET_SYNC_TARGETS=local:a.json local:b.json",
        "SECRET_SYNC_BACKENDS=local",
        "KEPT_FOR_THE_COMMAND=kept-value",
    ] {
        assert!(vars.contains(&expected), "{expected} not in:\n{recorded}");
    }
    let expires_var = vars
        .iter()
        .find_map(|v| v.strip_prefix("SECRET_SYNC_EXPIRES_ON="))
        .unwrap_or_else(|| panic!("no SECRET_SYNC_EXPIRES_ON in:\n{recorded}"));
    let parsed =
        time::OffsetDateTime::parse(expires_var, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("SECRET_SYNC_EXPIRES_ON={expires_var}: {e}"));
    assert_eq!(Some(parsed.unix_timestamp()), expires.as_i64(), "{expires}");
    for gone in ["APP_SECRET=", "VAULT_TOKEN_FOR_TEST="] {
        assert!(
            !vars.iter().any(|v| v.starts_with(gone)),
            "{gone} was passed on:\n{recorded}"
        );
    }
    assert!(
        !recorded.contains("hvs.e2e-actions-vault-token"),
        "{recorded}"
    );
    assert_eq!(w.read("stdin.txt"), "", "stdin is /dev/null");
    assert_eq!(w.read("argv.txt"), format!("{dir}\n"));
    assert_eq!(w.issued().len(), 1);
    for (what, text) in [
        ("the environment", recorded.as_str()),
        ("argv", &w.read("argv.txt")),
        ("stdout", &run.stdout),
        ("stderr", &run.stderr),
    ] {
        w.assert_clean(what, text);
    }
    // Its output only at debug level.
    assert!(
        !run.stderr.contains("the command's own output"),
        "{}",
        run.stderr
    );
    let debug = w
        .run(&["run", "--force"], &[("RUST_LOG", "secret_sync=debug")])
        .await;
    debug.assert_code(0);
    assert!(
        debug.stderr.contains("the command's own output for graph"),
        "{}",
        debug.stderr
    );
    w.assert_clean("the debug log", &debug.stderr);
    w.assert_clean("the second environment", &w.read("env.txt"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_exec_fails_the_run_after_the_write_and_the_daemon_retries_it_without_a_new_token()
 {
    let w = World::start().await;
    w.write_config(
        &[&file_target("graph.json")],
        &exec_action(&["/bin/sh", "-c", "echo failing >&2; exit 3"], ""),
    );
    let run = w.run(&["run"], &[]).await;
    run.assert_code(1);
    assert!(
        run.stdout.contains("created")
            && run.stdout.contains("failed")
            && run.stdout.contains("exited with status 3")
            && run
                .stdout
                .contains("the write itself succeeded (local:graph.json (created))"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("1 after-write action(s) failed (the writes themselves succeeded)"),
        "{}",
        run.stderr
    );
    let written: Value = serde_json::from_str(&w.read("out/graph.json")).unwrap();
    assert_eq!(
        written["access_token"].as_str(),
        w.issued().first().map(String::as_str),
        "the target holds the token"
    );
    // `run` has no memory: the next run finds the target fresh and runs nothing.
    let json = w.run(&["run", "--output", "json"], &[]).await;
    json.assert_code(0);
    let doc = json.json();
    assert_eq!(doc["actions"], serde_json::json!([]), "{doc}");
    assert_eq!(w.entra.token_request_count(), 1);

    // The daemon: the action fails once, then succeeds at the retry, which finds the target
    // fresh and requests no token.
    std::fs::remove_file(w.path("out/graph.json")).unwrap();
    let counter = w.script(
        "flaky.sh",
        "n=$(cat \"$1/count\" 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > \"$1/count\"\n\
         [ $n -ge 2 ]\n",
    );
    let dir = w.dir.path().display().to_string();
    w.write_config(
        &[&file_target("graph.json")],
        &exec_action(&["/bin/sh", &counter, &dir], ""),
    );
    let daemon = Daemon::spawn(
        w.path("daemon.log"),
        &w.config_path(),
        &["daemon"],
        &[("APP_SECRET", SECRET)],
    );
    let addr = daemon.listen_addr().await;
    let retried = wait_until(Duration::from_secs(30), || w.read("count").trim() == "2").await;
    assert!(retried, "no retry; log:\n{}", daemon.output());
    daemon
        // The retry pass's own line, logged once its action was counted.
        .wait_for_output("outcome=\"ok\" written=0", Duration::from_secs(10))
        .await;
    assert_eq!(
        w.entra.token_request_count(),
        2,
        "one token for the earlier run, one for the daemon's first pass, none for the retry"
    );
    let (_, _, metrics) = http_get(&addr, "/metrics");
    for sample in [
        "secret_sync_actions_total{job=\"graph\",kind=\"exec\",outcome=\"failure\"} 1",
        "secret_sync_actions_total{job=\"graph\",kind=\"exec\",outcome=\"success\"} 1",
    ] {
        assert!(metrics.contains(sample), "{sample} not in:\n{metrics}");
    }
    // No third run once it succeeded (the next passes find the target fresh).
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(w.read("count").trim(), "2");
    let (code, _, output) = daemon.stop("TERM").await;
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("after-write action failed; the write itself succeeded"));
    w.assert_clean("the daemon's log", &output);
    w.assert_clean("the run's output", &format!("{}{}", run.stdout, run.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_command_is_killed_with_its_children_at_its_timeout() {
    let w = World::start().await;
    let hang = w.script(
        "hang.sh",
        "sleep 300 &\necho $! > \"$1/child.pid\"\necho $$ > \"$1/parent.pid\"\nwait\n",
    );
    let dir = w.dir.path().display().to_string();
    w.write_config(
        &[&file_target("graph.json")],
        &exec_action(&["/bin/sh", &hang, &dir], ", timeout = \"2s\""),
    );
    let started = Instant::now();
    let run = w.run(&["run"], &[]).await;
    let took = started.elapsed();
    run.assert_code(1);
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(
        run.stdout
            .contains("did not finish within 2s (jobs.graph.actions[0].timeout) and was killed with its process group"),
        "{}",
        run.stdout
    );
    assert!(w.path("out/graph.json").exists(), "the write happened");
    for pid_file in ["parent.pid", "child.pid"] {
        let pid = w.read(pid_file).trim().to_owned();
        assert!(!pid.is_empty(), "{pid_file} was not written");
        let gone = wait_until(Duration::from_secs(5), || !alive(&pid)).await;
        assert!(gone, "process {pid} ({pid_file}) is still running");
    }
}

/// A shell process that counts the SIGHUPs it gets in `DIR/hups` and writes its pid to
/// `DIR/app.pid`; killed when dropped.
struct HupCounter(std::process::Child);

impl HupCounter {
    async fn start(w: &World) -> HupCounter {
        // A shell cannot trap a signal that was ignored when it started (POSIX `trap`), and it
        // inherits this process's dispositions: under `nohup` it would count nothing.
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let ignored = status
            .lines()
            .find_map(|line| line.strip_prefix("SigIgn:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .unwrap_or(0);
        assert!(
            ignored & 1 == 0,
            "SIGHUP is ignored in this test process (started under nohup?): the counter shell \
             could not trap it; run the tests without nohup"
        );
        let script = w.script(
            "counter.sh",
            "n=0\ntrap 'n=$((n+1)); echo $n > \"$1/hups\"' HUP\necho $$ > \"$1/app.pid\"\n\
             while :; do sleep 0.1; done\n",
        );
        let child = std::process::Command::new("/bin/sh")
            .arg(&script)
            .arg(w.dir.path())
            .spawn()
            .unwrap();
        let started = wait_until(Duration::from_secs(5), || !w.read("app.pid").is_empty()).await;
        assert!(started, "the counter did not start");
        HupCounter(child)
    }
}

impl Drop for HupCounter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn hups(w: &World, expected: &str) {
    // A trap runs once the counter's `sleep 0.1` ends.
    let seen = wait_until(Duration::from_secs(3), || w.read("hups").trim() == expected).await;
    assert!(
        seen,
        "expected {expected} SIGHUP(s), counted {:?}",
        w.read("hups")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_goes_once_per_pass_that_wrote_and_never_for_a_fresh_one() {
    let w = World::start().await;
    let _counter = HupCounter::start(&w).await;
    w.write_config(
        &[&file_target("a.json"), &file_target("b.json")],
        &format!(
            "actions = [{{ signal = \"HUP\", pid_file = \"{}\", process_name = \"sh\" }}]",
            w.p("app.pid")
        ),
    );
    let plan = w.run(&["plan"], &[]).await;
    plan.assert_code(0);
    assert!(
        plan.stdout.contains("signal HUP to ")
            && plan
                .stdout
                .contains("would run after writing local:a.json (create), local:b.json (create)"),
        "{}",
        plan.stdout
    );
    let dry = w.run(&["run", "--dry-run", "--output", "json"], &[]).await;
    dry.assert_code(0);
    assert_eq!(
        dry.json()["actions"][0]["outcome"],
        "would run",
        "{}",
        dry.stdout
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.read("hups"), "", "plan and --dry-run send nothing");

    let first = w.run(&["run"], &[]).await;
    first.assert_code(0);
    assert!(
        first.stdout.contains("sent SIGHUP to process"),
        "{}",
        first.stdout
    );
    hups(&w, "1").await;
    let fresh = w.run(&["run"], &[]).await;
    fresh.assert_code(0);
    assert!(!fresh.stdout.contains("action(s)"), "{}", fresh.stdout);
    tokio::time::sleep(Duration::from_millis(500)).await;
    hups(&w, "1").await;
    let forced = w.run(&["run", "--force"], &[]).await;
    forced.assert_code(0);
    hups(&w, "2").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_pid_file_gets_an_error_and_no_process_a_signal() {
    let w = World::start().await;
    // A pid that no process has any more.
    let mut exited = std::process::Command::new("/bin/true").spawn().unwrap();
    let dead = exited.id();
    exited.wait().unwrap();
    std::fs::write(w.path("dead.pid"), format!("{dead}\n")).unwrap();
    // A live process that is not the one named: a reused pid.
    let mut other = std::process::Command::new("/usr/bin/sleep")
        .arg("30")
        .spawn()
        .unwrap();
    std::fs::write(w.path("reused.pid"), format!("{}\n", other.id())).unwrap();
    w.write_config(
        &[&file_target("graph.json")],
        &format!(
            "actions = [{{ signal = \"HUP\", pid_file = \"{}\" }}, \
             {{ signal = \"HUP\", pid_file = \"{}\", process_name = \"nginx\" }}]",
            w.p("dead.pid"),
            w.p("reused.pid")
        ),
    );
    let run = w.run(&["run"], &[]).await;
    run.assert_code(1);
    assert!(
        run.stdout
            .contains(&format!("no process {dead} is running; no signal was sent")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!(
            "process {} is \"sleep\", not \"nginx\" (process_name): its pid was reused",
            other.id()
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("2 action(s): 2 failed"),
        "{}",
        run.stdout
    );
    // SIGHUP would have ended `sleep`.
    assert!(
        other.try_wait().unwrap().is_none(),
        "the other process got a signal"
    );
    let _ = other.kill();
    let _ = other.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_is_signed_carries_no_token_and_is_retried_after_503s() {
    let w = World::start().await;
    let server = RecordingServer::start(&[503, 503, 204]).await;
    w.write_config(
        &[&file_target("a.json"), &file_target("b.json")],
        &format!(
            "actions = [{{ webhook = \"{}\", signing_key = {{ env = \"HOOK_KEY\" }}, attempts = 4 }}]",
            server.url("/hooks/token?source=e2e")
        ),
    );
    let key = "e2e-webhook-hmac-key";
    let run = w.run(&["run"], &[("HOOK_KEY", key)]).await;
    run.assert_code(0);
    assert!(
        run.stdout.contains("answered 204 (attempt 3)"),
        "{}",
        run.stdout
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 3, "{requests:#?}");
    let body = requests[0].body.clone();
    for request in &requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/hooks/token?source=e2e");
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.body, body, "every attempt sends the same document");
        let hmac = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.as_bytes()),
            &request.body,
        );
        let hex: String = hmac.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            request.header("x-secret-sync-signature"),
            Some(format!("sha256={hex}").as_str())
        );
    }
    let doc: Value = serde_json::from_slice(&body).unwrap();
    let written: Value = serde_json::from_str(&w.read("out/a.json")).unwrap();
    assert_eq!(doc["job"], "graph");
    assert_eq!(doc["event"], "token-written");
    assert_eq!(doc["action"], "jobs.graph.actions[0]");
    assert_eq!(doc["expires_on"], written["expires_on"], "{doc}");
    assert_eq!(
        doc["targets"],
        serde_json::json!([
            { "backend": "local", "name": "a.json", "outcome": "created" },
            { "backend": "local", "name": "b.json", "outcome": "created" },
        ])
    );
    let text = String::from_utf8_lossy(&body).into_owned();
    w.assert_clean("the webhook body", &text);
    assert!(!text.contains(key), "{text}");
    for request in &requests {
        let headers = format!("{:?}", request.headers);
        w.assert_clean("the webhook's headers", &headers);
    }
    run.assert_no_leak(&[key, SECRET]);

    // Without the key, a 4xx is not retried.
    let refusing = RecordingServer::start(&[401]).await;
    w.write_config(
        &[&file_target("a.json")],
        &format!(
            "actions = [{{ webhook = \"{}\", signing_key = {{ env = \"HOOK_KEY\" }} }}]",
            refusing.url("/hook")
        ),
    );
    let run = w.run(&["run", "--force"], &[("HOOK_KEY", key)]).await;
    run.assert_code(1);
    assert!(
        run.stdout.contains("answered 401; not retried"),
        "{}",
        run.stdout
    );
    assert_eq!(refusing.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_action_runs_once_for_its_three_targets_and_a_target_action_for_its_own() {
    let w = World::start().await;
    let log = w.p("ran.log");
    let append = format!("echo \"$SECRET_SYNC_ACTION $SECRET_SYNC_TARGETS\" >> {log}");
    let target_action = format!(
        "{{ to = \"local\", name = \"c.json\", format = \"json\", actions = [{{ exec = [\"/bin/sh\", \"-c\", {append:?}] }}] }}"
    );
    w.write_config(
        &[
            &file_target("a.json"),
            &file_target("b.json"),
            &target_action,
        ],
        &exec_action(&["/bin/sh", "-c", &append], ""),
    );
    let run = w.run(&["run"], &[]).await;
    run.assert_code(0);
    assert_eq!(
        w.read("ran.log"),
        "jobs.graph.actions[0] local:a.json local:b.json local:c.json\n\
         jobs.graph.targets[2].actions[0] local:c.json\n",
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("2 action(s): 2 ok"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_refuses_action_mistakes_with_file_line_and_key() {
    let w = World::start().await;
    w.write_config(
        &[&file_target("a.json")],
        "actions = [\n\
         { exec = [\"systemctl\", \"reload\", \"nginx\"] },\n\
         { signal = \"HUP\", pid_file = \"/nonexistent-dir/nginx.pid\" },\n\
         { webhook = \"http://hooks.example.com/rotated\" },\n\
         { exec = [\"/bin/true\"], shell = true },\n\
         { exec = [\"/bin/true\"], timeout = \"5m\" },\n\
         { signal = \"HUP\", pid_file = \"/run/x.pid\", webhook = \"https://h.example.com\" },\n\
         ]",
    );
    let config = w.config_path().display().to_string();
    let run = secret_sync(&["validate", "--config", &config], &[]).await;
    run.assert_code(2);
    let lines: Vec<&str> = run.stderr.lines().collect();
    for (line, key, needle) in [
        (
            16,
            "jobs.graph.actions[0].exec[0]",
            "\"systemctl\" is not an absolute path",
        ),
        (
            17,
            "jobs.graph.actions[1].pid_file",
            "the directory of /nonexistent-dir/nginx.pid does not exist",
        ),
        (
            18,
            "jobs.graph.actions[2].webhook",
            "plain http for a host that is not a loopback address",
        ),
        (19, "jobs.graph.actions[3].shell", "unknown key \"shell\""),
        (20, "jobs.graph.actions[4].timeout", "is longer than 30s"),
        (
            21,
            "jobs.graph.actions[5]",
            "give one of exec, signal or webhook per action, not signal and webhook",
        ),
    ] {
        let prefix = format!("{config}:{line}:");
        assert!(
            lines.iter().any(|l| l.contains(&prefix)
                && l.contains(&format!(" {key}: "))
                && l.contains(needle)),
            "no {prefix}..{key}: {needle} in:\n{}",
            run.stderr
        );
    }
    // Each kind written right validates (the pid file's directory exists, it need not).
    w.write_config(
        &[&file_target("a.json")],
        &format!(
            "actions = [{{ exec = [\"/usr/bin/systemctl\", \"reload\", \"nginx\"], timeout = \"20s\" }}, \
             {{ signal = \"SIGHUP\", pid_file = \"{}\", process_name = \"nginx\" }}, \
             {{ webhook = \"https://hooks.example.com/rotated\", signing_key = {{ file = \"hook.key\" }} }}]",
            w.p("nginx.pid")
        ),
    );
    let run = secret_sync(&["validate", "--config", &config], &[]).await;
    run.assert_code(0);
}

/// The receiver docs/recipes.md shows ("A webhook receiver that checks the signature").
fn documented_receiver() -> String {
    let page = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/recipes.md"),
    )
    .unwrap();
    let section = page
        .split_once("### A webhook receiver that checks the signature")
        .expect("docs/recipes.md has the receiver section")
        .1;
    let code = section
        .split_once("```python\n")
        .expect("the section has a python block")
        .1;
    code.split_once("```").unwrap().0.to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_documented_receiver_accepts_a_signed_delivery_and_refuses_a_wrong_key() {
    let w = World::start().await;
    let script = w.path("receiver.py");
    std::fs::write(&script, documented_receiver()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let key = "e2e-documented-receiver-key";
    let log = std::fs::File::create(w.path("receiver.log")).unwrap();
    let mut receiver = std::process::Command::new("python3")
        .arg("-u")
        .arg(&script)
        .env("PORT", port.to_string())
        .env("WEBHOOK_KEY", key)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("python3 runs");
    let listening = wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    assert!(
        listening,
        "the receiver did not start: {}",
        w.read("receiver.log")
    );
    w.write_config(
        &[&file_target("graph.json")],
        &format!(
            "actions = [{{ webhook = \"http://127.0.0.1:{port}/hooks/token-rotated\", \
             signing_key = {{ env = \"HOOK_KEY\" }}, attempts = 1 }}]"
        ),
    );
    let run = w.run(&["run"], &[("HOOK_KEY", key)]).await;
    run.assert_code(0);
    assert!(run.stdout.contains("answered 204"), "{}", run.stdout);
    let printed = wait_until(Duration::from_secs(5), || {
        w.read("receiver.log").contains("new token for graph")
    })
    .await;
    assert!(printed, "{}", w.read("receiver.log"));
    let wrong = w
        .run(&["run", "--force"], &[("HOOK_KEY", "not-the-receiver-key")])
        .await;
    wrong.assert_code(1);
    assert!(
        wrong.stdout.contains("answered 401; not retried"),
        "{}",
        wrong.stdout
    );
    let _ = receiver.kill();
    let _ = receiver.wait();
    w.assert_clean("the receiver's log", &w.read("receiver.log"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_signals_once_per_pass_that_wrote_and_not_for_a_fresh_pass() {
    let w = World::start().await;
    // 20 s tokens, refresh_before 10 s: the daemon rewrites the targets about every 6 s.
    w.entra.set_token_options(TokenOptions {
        lifetime: Duration::from_secs(20),
        ..TokenOptions::default()
    });
    let _counter = HupCounter::start(&w).await;
    w.write_config_with(
        "refresh_before = \"10s\"\n",
        &[&file_target("a.json"), &file_target("b.json")],
        &format!(
            "actions = [{{ signal = \"HUP\", pid_file = \"{}\", process_name = \"sh\" }}]",
            w.p("app.pid")
        ),
    );
    let daemon = Daemon::spawn(
        w.path("daemon.log"),
        &w.config_path(),
        &["daemon"],
        &[("APP_SECRET", SECRET)],
    );
    // Wait for the third pass that wrote.
    let three = wait_until(Duration::from_secs(40), || {
        w.entra.token_request_count() >= 3
    })
    .await;
    assert!(three, "fewer than 3 writes; log:\n{}", daemon.output());
    // A reload runs every job at once: a fresh pass, which signals nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = w.entra.token_request_count();
    daemon.signal("HUP");
    daemon
        .wait_for_output("config reloaded", Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (code, _, output) = daemon.stop("TERM").await;
    assert_eq!(code, 0, "{output}");
    // Every pass that wrote asked for one token and sent one SIGHUP for both targets.
    let writes = w.entra.token_request_count();
    assert!(writes >= before, "{writes} {before}");
    hups(&w, &writes.to_string()).await;
    let sent = output.matches("sent SIGHUP to process").count();
    assert_eq!(sent, writes, "one SIGHUP per pass that wrote:\n{output}");
    w.assert_clean("the daemon's log", &output);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_action_ends_by_the_pass_deadline_whatever_its_own_timeout() {
    let w = World::start().await;
    w.write_config(
        &[&file_target("graph.json")],
        &format!(
            "pass_timeout = \"3s\"\n{}",
            exec_action(&["/usr/bin/sleep", "300"], ", timeout = \"30s\"")
        ),
    );
    let started = Instant::now();
    let run = w.run(&["run"], &[]).await;
    let took = started.elapsed();
    run.assert_code(1);
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert!(
        run.stdout.contains(
            "(what was left of the pass's deadline, jobs.graph.pass_timeout = \"3s\") and was killed"
        ),
        "{}",
        run.stdout
    );
    assert!(w.path("out/graph.json").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_retries_after_a_timeout_follows_no_redirect_and_reads_its_key_from_a_backend() {
    use testkit::{Behaviour, HostileServer};
    let w = World::start().await;
    let server = HostileServer::start(Behaviour::answer(200, "text/plain", "ok"))
        .await
        .unwrap();
    server.once("/hook", Behaviour::hang());
    // The key is a secret in a file backend of its own, read `from` it.
    std::fs::create_dir(w.path("keys")).unwrap();
    let key = "e2e-key-from-a-backend";
    std::fs::write(w.path("keys/hook-key"), key).unwrap();
    let keys = format!(
        "\n[backends.keys]\nkind = \"file\"\ndir = \"{}\"\n",
        w.p("keys")
    );
    w.write_config(
        &[&file_target("graph.json")],
        &format!(
            "actions = [{{ webhook = \"{}\", timeout = \"1s\", signing_key = {{ from = \"keys\", ref = \"hook-key\" }} }}]\n{keys}",
            server.url("/hook")
        ),
    );
    let run = w.run(&["run"], &[]).await;
    run.assert_code(0);
    assert!(
        run.stdout.contains("answered 200 (attempt 2)"),
        "{}",
        run.stdout
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 2, "a hung attempt, then one answered");
    let hmac = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.as_bytes()),
        &requests[1].body,
    );
    let hex: String = hmac.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        requests[1].header("x-secret-sync-signature"),
        Some(format!("sha256={hex}").as_str())
    );
    run.assert_no_leak(&[key]);

    // A redirect is a failure: the signed document goes only where the config says.
    server.on(
        "/moved",
        Behaviour::redirect(307, &server.url("/elsewhere")),
    );
    w.write_config(
        &[&file_target("graph.json")],
        &format!("actions = [{{ webhook = \"{}\" }}]", server.url("/moved")),
    );
    let run = w.run(&["run", "--force"], &[]).await;
    run.assert_code(1);
    assert!(
        run.stdout
            .contains("answered 307 (a redirect, which is not followed"),
        "{}",
        run.stdout
    );
    assert!(
        !server.requests().iter().any(|r| r.path == "/elsewhere"),
        "the redirect was followed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_jobs_actions_run_one_after_another_in_file_order() {
    let w = World::start().await;
    let log = w.p("order.log");
    let step = w.script(
        "step.sh",
        &format!("echo \"start $1\" >> {log}\nsleep 0.3\necho \"end $1\" >> {log}\n"),
    );
    let target = format!(
        "{{ to = \"local\", name = \"t.json\", format = \"json\", actions = [{{ exec = [\"/bin/sh\", \"{step}\", \"target\"] }}] }}"
    );
    w.write_config(
        &[&file_target("a.json"), &target],
        &format!(
            "actions = [{{ exec = [\"/bin/sh\", \"{step}\", \"first\"] }}, {{ exec = [\"/bin/sh\", \"{step}\", \"second\"] }}]"
        ),
    );
    let run = w.run(&["run"], &[]).await;
    run.assert_code(0);
    assert_eq!(
        w.read("order.log"),
        "start first\nend first\nstart second\nend second\nstart target\nend target\n",
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_keeps_a_failed_action_pending_unless_it_changed_the_action() {
    let w = World::start().await;
    let dir = w.dir.path().display().to_string();
    let failing = w.script(
        "failing.sh",
        "n=$(cat \"$1/failing.count\" 2>/dev/null || echo 0)\necho $((n+1)) > \"$1/failing.count\"\nexit 1\n",
    );
    let other = w.script("other.sh", "echo ran >> \"$1/other.log\"\n");
    w.write_config(
        &[&file_target("graph.json")],
        &exec_action(&["/bin/sh", &failing, &dir], ""),
    );
    let daemon = Daemon::spawn(
        w.path("daemon.log"),
        &w.config_path(),
        &["daemon"],
        &[("APP_SECRET", SECRET)],
    );
    let failed = wait_until(Duration::from_secs(20), || {
        w.read("failing.count").trim() == "1"
    })
    .await;
    assert!(failed, "the action did not run; log:\n{}", daemon.output());
    // A reload with the same action keeps it pending: the reload's pass (the target is fresh)
    // reruns it at once, before its backoff (at least 2.5 s) would.
    daemon.signal("HUP");
    let rerun = wait_until(Duration::from_secs(2), || {
        w.read("failing.count").trim() == "2"
    })
    .await;
    assert!(
        rerun,
        "not rerun after the reload; log:\n{}",
        daemon.output()
    );
    // Replace the action before its next retry.
    w.write_config(
        &[&file_target("graph.json")],
        &exec_action(&["/bin/sh", &other, &dir], ""),
    );
    daemon.signal("HUP");
    let reloads = wait_until(Duration::from_secs(10), || {
        daemon.output().matches("config reloaded").count() == 2
    })
    .await;
    assert!(reloads, "{}", daemon.output());
    // Past any backoff: the old action is not retried, the new one did not run (no write).
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (code, _, output) = daemon.stop("TERM").await;
    assert_eq!(code, 0, "{output}");
    assert_eq!(w.read("failing.count").trim(), "2", "{output}");
    assert_eq!(w.read("other.log"), "", "{output}");
    assert_eq!(w.entra.token_request_count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_action_pending_when_the_daemon_was_killed_runs_after_the_restart() {
    let w = World::start().await;
    let dir = w.dir.path().display().to_string();
    // Fails while `broken` exists; then records its run and what it was told.
    let reload = w.script(
        "reload.sh",
        "if [ -e \"$1/broken\" ]; then exit 1; fi\n\
         echo \"$SECRET_SYNC_TARGETS $SECRET_SYNC_EXPIRES_ON\" >> \"$1/reloaded.log\"\n",
    );
    std::fs::write(w.path("broken"), "").unwrap();
    w.write_config(
        &[&file_target("graph.json")],
        &exec_action(&["/bin/sh", &reload, &dir], ""),
    );
    let env = [("APP_SECRET", SECRET)];
    let pending_file = w.path("actions-pending.json");
    let mut daemon = Daemon::spawn(w.path("daemon.log"), &w.config_path(), &["daemon"], &env);
    // The failed action is recorded on disk as soon as its pass ends.
    let recorded = wait_until(Duration::from_secs(20), || pending_file.exists()).await;
    assert!(recorded, "no pending file; log:\n{}", daemon.output());
    daemon.signal("KILL");
    assert!(wait_until(Duration::from_secs(10), || !daemon.is_running()).await);
    let text = std::fs::read_to_string(&pending_file).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["actions"][0]["job"], "graph", "{text}");
    assert_eq!(
        doc["actions"][0]["action"], "jobs.graph.actions[0]",
        "{text}"
    );
    assert_eq!(
        doc["actions"][0]["targets"][0]["name"], "graph.json",
        "{text}"
    );
    w.assert_clean("the pending actions file", &text);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&pending_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(w.read("reloaded.log"), "");

    // The cause fixed, a new daemon: the target is fresh, so no pass writes, and the action
    // runs anyway, once, told what the lost run was told; then nothing is pending.
    std::fs::remove_file(w.path("broken")).unwrap();
    let written: Value = serde_json::from_str(&w.read("out/graph.json")).unwrap();
    let daemon = Daemon::spawn(w.path("daemon2.log"), &w.config_path(), &["daemon"], &env);
    let ran = wait_until(Duration::from_secs(20), || {
        !w.read("reloaded.log").is_empty()
    })
    .await;
    assert!(
        ran,
        "the pending action did not run; log:\n{}",
        daemon.output()
    );
    let gone = wait_until(Duration::from_secs(5), || !pending_file.exists()).await;
    let (code, _, output) = daemon.stop("TERM").await;
    assert_eq!(code, 0, "{output}");
    assert!(
        gone,
        "the pending file stayed after the action ran:\n{output}"
    );
    let line = w.read("reloaded.log");
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.starts_with("local:graph.json "), "{line}");
    let told = line.trim_end().rsplit(' ').next().unwrap();
    let told = time::OffsetDateTime::parse(told, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("SECRET_SYNC_EXPIRES_ON {told}: {e}"));
    assert_eq!(
        Some(told.unix_timestamp()),
        written["expires_on"].as_i64(),
        "{line}"
    );
    assert_eq!(
        w.entra.token_request_count(),
        1,
        "no new token for the rerun"
    );
    w.assert_clean("the daemon's log", &output);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_as_the_pending_actions_file_is_ignored_with_a_warning_not_waited_on() {
    let w = World::start().await;
    let made = std::process::Command::new("mkfifo")
        .arg(w.path("actions-pending.json"))
        .status()
        .unwrap();
    assert!(made.success());
    let marker = w.path("ran.log").display().to_string();
    w.write_config(
        &[&file_target("graph.json")],
        &exec_action(&["/bin/sh", "-c", &format!("echo ran >> {marker}")], ""),
    );
    let daemon = Daemon::spawn(
        w.path("daemon.log"),
        &w.config_path(),
        &["daemon"],
        &[("APP_SECRET", SECRET)],
    );
    let ran = wait_until(Duration::from_secs(20), || w.read("ran.log") == "ran\n").await;
    let (code, took, output) = daemon.stop("TERM").await;
    assert!(ran, "the first pass's action did not run:\n{output}");
    assert_eq!(code, 0, "{output}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        output.contains("the pending after-write actions file")
            && output.contains("is ignored: it is not a regular file"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_webhook_fails_after_its_attempts_and_its_query_is_never_shown() {
    let w = World::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    w.write_config(
        &[&file_target("graph.json")],
        &format!(
            "actions = [{{ webhook = \"http://127.0.0.1:{port}/hook?code=query-held-key\", attempts = 2 }}]"
        ),
    );
    let run = w.run(&["run"], &[("RUST_LOG", "secret_sync=debug")]).await;
    run.assert_code(1);
    assert!(
        run.stdout
            .contains(&format!("cannot connect to http://127.0.0.1:{port}/hook: "))
            && run.stdout.contains("(after 2 attempt(s) within"),
        "{}",
        run.stdout
    );
    run.assert_no_leak(&["query-held-key"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_to_a_private_ca_fails_at_once_naming_ca_file_and_is_delivered_with_it() {
    use testkit::{Behaviour, HostileServer};

    let w = World::start().await;
    let server = HostileServer::start_tls(Behaviour::answer(204, "text/plain", ""))
        .await
        .unwrap();
    let hook = server.url("/hooks/token");
    // The platform's roots do not know the receiver's CA: refused at the first attempt (of 5),
    // without a retry, saying what to do.
    w.write_config(
        &[&file_target("graph.json")],
        &format!("actions = [{{ webhook = \"{hook}\", attempts = 5 }}]"),
    );
    let started = Instant::now();
    let run = w.run(&["run"], &[]).await;
    run.assert_code(1);
    assert!(
        run.stdout.contains("its TLS certificate was refused")
            && run.stdout.contains("not retried")
            && run.stdout.contains("ca_file"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("attempt(s)"),
        "a refused certificate was retried:\n{}",
        run.stdout
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        server.request_count(),
        0,
        "no request got past the handshake"
    );

    // With the CA as the action's ca_file (relative to the config's directory) it is delivered.
    server.write_ca_pem(&w.path("hooks-ca.pem")).unwrap();
    w.write_config(
        &[&file_target("graph.json")],
        &format!("actions = [{{ webhook = \"{hook}\", ca_file = \"hooks-ca.pem\" }}]"),
    );
    let run = w.run(&["run", "--force"], &[]).await;
    run.assert_code(0);
    assert!(
        run.stdout.contains("answered 204 (attempt 1)"),
        "{}",
        run.stdout
    );
    assert_eq!(server.request_count(), 1);
    assert_eq!(server.requests()[0].path, "/hooks/token");

    // A ca_file that does not exist is a config error naming the key; an exec has none.
    w.write_config(
        &[&file_target("graph.json")],
        &format!(
            "actions = [{{ webhook = \"{hook}\", ca_file = \"missing-ca.pem\" }},\n\
             {{ exec = [\"/bin/true\"], ca_file = \"hooks-ca.pem\" }}]"
        ),
    );
    let run = w.run(&["validate"], &[]).await;
    run.assert_code(2);
    assert!(
        run.stderr.contains("jobs.graph.actions[0].ca_file")
            && run.stderr.contains("missing-ca.pem does not exist"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("jobs.graph.actions[1].ca_file"),
        "{}",
        run.stderr
    );
}

/// A script `DIR/NAME` whose run `/bin/sh SCRIPT DIR LABEL` records its pid in `DIR/LABEL.pid`
/// and its child's (a `sleep 300`) in `DIR/LABEL.child.pid`, then waits for the child.
fn hanging_script(w: &World) -> String {
    w.script(
        "hang.sh",
        "sleep 300 &\necho $! > \"$1/$2.child.pid.tmp\"\nmv \"$1/$2.child.pid.tmp\" \"$1/$2.child.pid\"\n\
         echo $$ > \"$1/$2.pid.tmp\"\nmv \"$1/$2.pid.tmp\" \"$1/$2.pid\"\nwait\n",
    )
}

/// The after-write action lines of a daemon's log, and that none of them says `ok`.
fn assert_no_action_ok(output: &str, key: &str) {
    for line in output.lines().filter(|l| l.contains(key)) {
        assert!(
            !line.contains("outcome=\"ok\""),
            "{key} is reported as a success:\n{line}\n{output}"
        );
    }
}

/// Issue 14: an action's time is capped by the SIGTERM grace. The first action started before
/// SIGTERM gets its whole own timeout; the second starts after it and would run 30 s, longer
/// than what is left of the grace: it is cut off when the grace ends, killed with its child,
/// logged as cut off by the stop (not as a success), and the daemon exits 0 within the grace.
/// A third action, due after the cut-off, does not run.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_cuts_off_a_running_command_with_its_child_at_the_end_of_the_grace() {
    let w = World::start().await;
    let hang = hanging_script(&w);
    let dir = w.dir.path().display().to_string();
    let argv = |label: &str| {
        [&hang, dir.as_str(), label]
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    w.write_config(
        &[&file_target("graph.json")],
        &format!(
            "actions = [{{ exec = [\"/bin/sh\", {}], timeout = \"3s\" }}, \
             {{ exec = [\"/bin/sh\", {}], timeout = \"30s\" }}, \
             {{ exec = [\"/bin/sh\", {}] }}]",
            argv("first"),
            argv("second"),
            argv("third")
        ),
    );
    let daemon = Daemon::spawn(
        w.path("daemon.log"),
        &w.config_path(),
        &["daemon"],
        &[("APP_SECRET", SECRET)],
    );
    let running = wait_until(Duration::from_secs(20), || w.path("first.pid").exists()).await;
    assert!(
        running,
        "the first action did not start:\n{}",
        daemon.output()
    );
    let (code, took, output) = daemon.stop("TERM").await;
    assert_eq!(code, 0, "SIGTERM exits 0:\n{output}");
    assert!(
        took < Duration::from_millis(30_500),
        "the daemon took {took:?} after SIGTERM (grace 30 s):\n{output}"
    );
    assert!(
        took > Duration::from_secs(20),
        "the second action did not get what was left of the grace ({took:?}):\n{output}"
    );
    assert!(
        output.contains("did not finish within 3s (jobs.graph.actions[0].timeout)"),
        "{output}"
    );
    let cut = output
        .lines()
        .find(|l| l.contains("jobs.graph.actions[1]") && l.contains("cut off by the daemon's stop"))
        .unwrap_or_else(|| panic!("the second action is not logged as cut off:\n{output}"));
    assert!(cut.contains("outcome=\"failed\""), "{cut}");
    assert_no_action_ok(&output, "jobs.graph.actions[");
    // The third has no grace left: not run at all.
    assert!(
        output.lines().any(|l| l.contains("jobs.graph.actions[2]")
            && l.contains("not run: the daemon was stopping")),
        "{output}"
    );
    assert!(!w.path("third.pid").exists(), "the third action ran");
    assert!(!output.contains("abandoned"), "{output}");
    for label in ["first", "second"] {
        for pid_file in [format!("{label}.pid"), format!("{label}.child.pid")] {
            let pid = w.read(&pid_file).trim().to_owned();
            assert!(!pid.is_empty(), "{pid_file} was not written:\n{output}");
            let gone = wait_until(Duration::from_secs(5), || !alive(&pid)).await;
            assert!(gone, "process {pid} ({pid_file}) is still running");
        }
    }
    w.assert_clean("the daemon's log", &output);
}

/// The same bound for a webhook: one that starts after SIGTERM and whose server never answers
/// is cut off when the grace ends (its 30 s timeout would end later), not reported as a
/// success, and the daemon exits 0 within the grace.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_cuts_off_a_hanging_webhook_delivery_at_the_end_of_the_grace() {
    use testkit::{Behaviour, HostileServer};
    let w = World::start().await;
    let server = HostileServer::start(Behaviour::hang()).await.unwrap();
    let step = w.script("step.sh", "echo $$ > \"$1/step.pid\"\nsleep 2\n");
    let dir = w.dir.path().display().to_string();
    w.write_config(
        &[&file_target("graph.json")],
        &format!(
            "actions = [{{ exec = [\"/bin/sh\", {step:?}, {dir:?}] }}, \
             {{ webhook = \"{}\", timeout = \"30s\", attempts = 2 }}]",
            server.url("/hook")
        ),
    );
    let daemon = Daemon::spawn(
        w.path("daemon.log"),
        &w.config_path(),
        &["daemon"],
        &[("APP_SECRET", SECRET)],
    );
    let running = wait_until(Duration::from_secs(20), || w.path("step.pid").exists()).await;
    assert!(
        running,
        "the first action did not start:\n{}",
        daemon.output()
    );
    let started = Instant::now();
    daemon.signal("TERM");
    // The webhook is delivered after SIGTERM, and its server holds it.
    let delivering = wait_until(Duration::from_secs(10), || server.request_count() == 1).await;
    assert!(delivering, "the webhook was not sent:\n{}", daemon.output());
    let mut daemon = daemon;
    let code = daemon.exit_code(Duration::from_secs(40)).await;
    let took = started.elapsed();
    let output = daemon.output();
    assert_eq!(code, 0, "SIGTERM exits 0:\n{output}");
    assert!(
        took < Duration::from_millis(30_500),
        "the daemon took {took:?} after SIGTERM (grace 30 s):\n{output}"
    );
    let cut = output
        .lines()
        .find(|l| l.contains("jobs.graph.actions[1]") && l.contains("cut off by the daemon's stop"))
        .unwrap_or_else(|| panic!("the webhook is not logged as cut off:\n{output}"));
    assert!(cut.contains("outcome=\"failed\""), "{cut}");
    assert_no_action_ok(&output, "jobs.graph.actions[1]");
    assert!(!output.contains("answered"), "{output}");
    assert_eq!(
        server.request_count(),
        1,
        "no second attempt after the cut-off"
    );
    assert!(!output.contains("abandoned"), "{output}");
    w.assert_clean("the daemon's log", &output);
    // The cut-off webhook stays pending on disk, for the next start (the exec ran).
    let pending = w.read("actions-pending.json");
    let doc: Value = serde_json::from_str(&pending).unwrap_or_else(|e| panic!("{e}: {pending}"));
    let keys: Vec<&str> = doc["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["jobs.graph.actions[1]"], "{pending}");
}
