//! The file backend under a hostile local user, through the built binary: whoever can write in
//! the backend's `dir` (an emptyDir shared with an app, `/run/...`) must not be able to hang a
//! run or the daemon, make it read without end, or redirect a token outside `dir`; kill -9 in
//! the middle of writes never leaves a torn target, and the next write (or the daemon's start)
//! removes the temporary files such a kill leaves. Torn sidecars are repaired by the next run;
//! a `json` target that does not parse is only taken over with `adopt = true`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{AppRegistration, EntraEmulator};

use crate::support::{Daemon, Run, issued_access_tokens, secret_sync};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0a1b2c3d-1111-2222-3333-444455556666";
const SECRET: &str = "Zq8~e2e.hardening.file.client.secret";
const GRAPH: &str = "https://graph.microsoft.com/.default";
/// Far longer than any of these runs takes when nothing hangs.
const QUICK: Duration = Duration::from_secs(20);

struct World {
    entra: EntraEmulator,
    dir: tempfile::TempDir,
}

impl World {
    async fn start() -> World {
        let entra = EntraEmulator::start().await.unwrap();
        entra.register_app(AppRegistration::new(TENANT, CLIENT).with_secret(SECRET));
        // tmpfs: the kill -9 and swap loops make many durable writes.
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        World { entra, dir }
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("secret-sync.toml")
    }

    /// One job writing `targets` (TOML inline tables) through backend `local` over `out/`,
    /// whose temporary files are stale after a second.
    fn write_config(&self, targets: &[String]) {
        let text = format!(
            "[settings]\nrefresh_before = \"5m\"\nconcurrency = 8\nauthority = \"{}\"\n\n\
             [backends.local]\nkind = \"file\"\ndir = \"{}\"\nstale_temp_after = \"1s\"\n\n\
             [jobs.graph]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
             client_secret = {{ env = \"APP_SECRET\" }}\nscope = \"{GRAPH}\"\n\
             targets = [{}]\n",
            self.entra.base_url(),
            self.out().display(),
            targets.join(", ")
        );
        std::fs::write(self.config(), text).unwrap();
    }

    async fn run(&self, extra: &[&str]) -> Run {
        let config = self.config().display().to_string();
        let mut args = vec!["run", "--config", config.as_str()];
        args.extend_from_slice(extra);
        let run = secret_sync(&args, &[("APP_SECRET", SECRET)]).await;
        let secrets = self.secrets();
        run.assert_no_leak(&secrets.iter().map(String::as_str).collect::<Vec<_>>());
        run
    }

    /// Runs with a deadline: a run that hangs fails the test instead of holding it.
    async fn run_quickly(&self, extra: &[&str]) -> (Run, Duration) {
        let started = Instant::now();
        let run = tokio::time::timeout(QUICK, self.run(extra))
            .await
            .unwrap_or_else(|_| panic!("`run` still running after {QUICK:?}: it hangs"));
        (run, started.elapsed())
    }

    fn issued(&self) -> Vec<String> {
        issued_access_tokens(&self.entra)
    }

    fn secrets(&self) -> Vec<String> {
        let mut secrets = self.issued();
        secrets.push(SECRET.to_owned());
        secrets
    }

    fn spawn_daemon(&self) -> Daemon {
        Daemon::spawn(
            self.dir.path().join("daemon.log"),
            &self.config(),
            &["daemon"],
            &[("APP_SECRET", SECRET)],
        )
    }
}

fn target(name: &str, format: &str) -> String {
    format!("{{ to = \"local\", name = \"{name}\", format = \"{format}\" }}")
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

fn output(run: &Run) -> String {
    format!("{}\n{}", run.stdout, run.stderr)
}

/// The access token a json target holds.
fn json_token(path: &Path) -> Option<String> {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    doc["access_token"].as_str().map(str::to_owned)
}

/// Every file under `dir` (relative paths), recursively.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else {
                let path = entry.path();
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

/// A random number below `bound` (no rand crate here: a fresh RandomState is random).
fn random_below(bound: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    random % bound.max(1)
}

#[tokio::test]
async fn a_fifo_sidecar_or_target_fails_its_target_quickly_and_the_daemon_still_stops() {
    let world = World::start().await;
    let out = world.out();
    std::fs::write(out.join("raw-token"), "hand.placed\n").unwrap();
    mkfifo(&out.join("raw-token.meta.json"));
    mkfifo(&out.join("json-token"));
    world.write_config(&[
        target("raw-token", "raw"),
        target("json-token", "json"),
        target("ok-token", "json"),
    ]);
    let (run, took) = world.run_quickly(&[]).await;
    run.assert_code(1);
    let text = output(&run);
    assert!(
        text.contains("raw-token.meta.json is a FIFO, not a regular file"),
        "{text}"
    );
    assert!(
        text.contains("json-token is a FIFO, not a regular file"),
        "{text}"
    );
    assert!(took < Duration::from_secs(10), "the run took {took:?}");
    // The other target was written all the same.
    assert!(json_token(&out.join("ok-token")).is_some());

    let daemon = world.spawn_daemon();
    daemon
        .wait_for_output("FIFO, not a regular file", QUICK)
        .await;
    let (code, took, log) = daemon.stop("TERM").await;
    assert_eq!(code, 0, "{log}");
    assert!(
        took < Duration::from_secs(5),
        "SIGTERM took {took:?}:\n{log}"
    );
    for secret in world.secrets() {
        assert!(
            !log.contains(&secret),
            "a secret in the daemon's log:\n{log}"
        );
    }
}

#[tokio::test]
async fn a_sidecar_symlinked_to_dev_zero_fails_its_target_quickly() {
    let world = World::start().await;
    let out = world.out();
    std::fs::write(out.join("t"), "hand.placed\n").unwrap();
    std::os::unix::fs::symlink("/dev/zero", out.join("t.meta.json")).unwrap();
    world.write_config(&[target("t", "raw")]);
    let (run, took) = world.run_quickly(&[]).await;
    run.assert_code(1);
    let text = output(&run);
    assert!(
        text.contains("t.meta.json is a symlink") && text.contains("remove it"),
        "{text}"
    );
    assert!(took < Duration::from_secs(10), "the run took {took:?}");
}

#[tokio::test]
async fn a_torn_sidecar_is_repaired_by_the_next_run() {
    let world = World::start().await;
    let out = world.out();
    world.write_config(&[target("apps/t", "raw")]);
    world.run(&[]).await.assert_code(0);
    let sidecar = out.join("apps/t.meta.json");
    let whole = std::fs::read_to_string(&sidecar).unwrap();
    std::fs::write(&sidecar, &whole[..whole.len() / 2]).unwrap();

    let run = world.run(&[]).await;
    run.assert_code(0);
    assert!(run.stdout.contains("updated"), "{}", run.stdout);
    let repaired: Value = serde_json::from_str(&std::fs::read_to_string(&sidecar).unwrap())
        .expect("the next run rewrote the sidecar whole");
    let token = std::fs::read_to_string(out.join("apps/t")).unwrap();
    assert_eq!(world.issued().last(), Some(&token));
    assert!(repaired["expires_on"].as_i64().unwrap() > crate::support::now_unix());
    // And it is fresh again: the run after that writes nothing.
    let run = world.run(&[]).await;
    run.assert_code(0);
    assert_eq!(world.issued().len(), 2, "{}", run.stdout);
}

#[tokio::test]
async fn a_json_target_that_does_not_parse_is_left_alone_unless_adopted() {
    let world = World::start().await;
    let out = world.out();
    std::fs::write(out.join("t"), "{\"access_token\": \"trunc").unwrap();
    world.write_config(&[target("t", "json")]);
    let run = world.run(&[]).await;
    run.assert_code(1);
    let text = output(&run);
    assert!(
        text.contains("not written by secret-sync") && text.contains("adopt = true"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("t")).unwrap(),
        "{\"access_token\": \"trunc"
    );

    world.write_config(&[
        "{ to = \"local\", name = \"t\", format = \"json\", adopt = true }".to_owned(),
    ]);
    world.run(&[]).await.assert_code(0);
    assert_eq!(json_token(&out.join("t")), world.issued().last().cloned());
}

#[tokio::test]
async fn our_json_target_with_an_expiry_out_of_range_is_rewritten() {
    let world = World::start().await;
    let out = world.out();
    std::fs::write(
        out.join("t"),
        r#"{"access_token": "old.token.value", "token_type": "Bearer", "expires_at": "9999-12-31T23:59:59-23:59", "managed_by": "secret-sync"}"#,
    )
    .unwrap();
    world.write_config(&[target("t", "json")]);
    let run = world.run(&[]).await;
    run.assert_code(0);
    assert_eq!(json_token(&out.join("t")), world.issued().last().cloned());
    // Not a failure on every run: the next one finds it fresh.
    world.run(&[]).await.assert_code(0);
    assert_eq!(world.issued().len(), 1);
}

#[tokio::test]
async fn kill_9_during_writes_never_tears_a_target_and_the_next_write_removes_its_temporary_files()
{
    let world = World::start().await;
    let out = world.out();
    let names: Vec<(String, &str)> = (0..20)
        .map(|i| {
            let format = if i % 2 == 0 { "raw" } else { "json" };
            (format!("apps/t{i}"), format)
        })
        .collect();
    let targets: Vec<String> = names.iter().map(|(n, f)| target(n, f)).collect();
    world.write_config(&targets);
    let started = Instant::now();
    world.run(&[]).await.assert_code(0);
    let one_run = started.elapsed().as_millis() as u64;

    let config = world.config();
    for round in 0..12 {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_secret-sync"))
            .args(["run", "--force", "--config"])
            .arg(&config)
            .env_clear()
            .env("APP_SECRET", SECRET)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(random_below(one_run + 20))).await;
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        let issued = world.issued();
        for (name, format) in &names {
            let path = out.join(name);
            let token = match *format {
                "raw" => std::fs::read_to_string(&path).ok(),
                _ => json_token(&path),
            };
            assert!(
                token.as_ref().is_some_and(|t| issued.contains(t)),
                "round {round}: {name} holds neither the old nor the new token"
            );
        }
    }
    // What a writer killed before it could clean up leaves, beside a target and a sidecar.
    for stale in [
        ".t0.tmp-4242-0badf00d-0",
        ".t1.meta.json.tmp-4242-0badf00d-1",
    ] {
        std::fs::write(out.join("apps").join(stale), "a token nobody manages").unwrap();
    }
    // Older than the config's stale_temp_after.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    world.run(&["--force"]).await.assert_code(0);
    let left: Vec<String> = files_under(&out)
        .into_iter()
        .filter(|f| f.contains(".tmp-"))
        .collect();
    assert_eq!(
        left,
        Vec::<String>::new(),
        "temporary files left after a full run"
    );
}

#[tokio::test]
async fn the_daemon_removes_stale_temporary_files_of_fresh_targets_at_start() {
    let world = World::start().await;
    let out = world.out();
    world.write_config(&[target("t", "json")]);
    world.run(&[]).await.assert_code(0);
    let stale = out.join(".t.tmp-4242-0badf00d-0");
    std::fs::write(&stale, "a token nobody manages").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let daemon = world.spawn_daemon();
    daemon.wait_for_output("daemon started", QUICK).await;
    // The sweep runs in the background from the start (it must not delay the listener, the
    // first pass or a stop: issue 15), so it is done soon after, not before.
    let swept = tokio::time::timeout(QUICK, async {
        while stale.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let log = daemon.output();
    assert!(
        swept.is_ok(),
        "the stale temporary file is still there:\n{log}"
    );
    // The target was fresh: the sweep, not a write, removed it.
    assert_eq!(world.issued().len(), 1);
    let (code, _, log) = daemon.stop("TERM").await;
    assert_eq!(code, 0, "{log}");
}

/// `out/apps` is swapped for a symlink to a directory outside `out` and back (an atomic
/// exchange), as fast as a thread can, while runs rewrite ten targets under it: no file ever
/// appears outside.
#[tokio::test]
async fn a_path_component_swapped_for_a_symlink_while_runs_write_never_redirects_a_token() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let world = World::start().await;
    let out = world.out();
    let outside = tempfile::tempdir_in("/dev/shm").unwrap();
    let targets: Vec<String> = (0..10)
        .map(|i| target(&format!("apps/t{i}"), "raw"))
        .collect();
    world.write_config(&targets);
    world.run(&[]).await.assert_code(0);
    std::os::unix::fs::symlink(outside.path(), out.join("apps.link")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (out, stop) = (out.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    out.join("apps"),
                    rustix::fs::CWD,
                    out.join("apps.link"),
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .unwrap();
                swaps += 1;
                std::thread::yield_now();
            }
            swaps
        })
    };
    for round in 0..15 {
        let run = world.run(&["--force"]).await;
        assert!(run.code == 0 || run.code == 1, "{run:?}");
        let outside_files = files_under(outside.path());
        assert_eq!(
            outside_files,
            Vec::<String>::new(),
            "round {round}: a write landed outside dir"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 100, "the swapper hardly ran: {swaps}");
    assert_eq!(files_under(outside.path()), Vec::<String>::new());
}
