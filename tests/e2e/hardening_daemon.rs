//! Daemon hardening, through the built binary: deadlines and recovery (issue 9, items 7 and 11).
//! A pass that hangs (a token endpoint that accepts connections and never answers) cannot hold
//! a reload's drain beyond its `pass_timeout`, nor SIGTERM beyond it, and SIGTERM during a
//! reload still stops the daemon. After an outage of the token endpoint longer than the tokens'
//! life, the targets hold a fresh token again within about 30 s of the endpoint's return, with
//! one token request for the jobs that share the credentials.

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use serde_json::Value;
use testkit::{AppRegistration, EntraEmulator, Fault, TokenOptions};

use crate::support::{Daemon, issued_access_tokens, now_unix, wait_until};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0a1b2c3d-1111-2222-3333-444455556666";
const SECRET: &str = "Zq8~e2e.hardening.daemon.client-secret";
const GRAPH: &str = "https://graph.microsoft.com/.default";

/// A token endpoint that accepts every connection and never answers (the connections are held
/// open until the test ends, so the client sees neither an answer nor a close).
struct Silent {
    addr: std::net::SocketAddr,
}

impl Silent {
    fn start() -> Silent {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                let mut reader = stream.try_clone().unwrap();
                // Read what the client sends, answer nothing.
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
                });
                held.push(stream);
            }
        });
        Silent { addr }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A temp dir with the config and the `out/` directory of the file targets.
struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        Dir { dir }
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("secret-sync.toml")
    }

    /// `[settings]` with `extra` lines, and the file backend.
    fn settings(&self, authority: &str, extra: &str) -> String {
        format!(
            "[settings]\nrefresh_before = \"10s\"\nconcurrency = 4\nauthority = \"{authority}\"\n\
             {extra}\n\n[backends.local]\nkind = \"file\"\ndir = \"{}\"\n\n",
            self.out().display()
        )
    }

    /// A job writing the Graph token to the json file `NAME.json`, with `extra` lines.
    fn job(name: &str, extra: &str) -> String {
        format!(
            "[jobs.{name}]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
             client_secret = {{ env = \"APP_SECRET\" }}\nscope = \"{GRAPH}\"\n{extra}\n\
             targets = [{{ to = \"local\", name = \"{name}.json\", format = \"json\" }}]\n\n"
        )
    }

    fn write_config(&self, text: &str) {
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// The token and expiry (unix seconds) a json file target holds, if it exists.
    fn file_token(&self, name: &str) -> Option<(String, i64)> {
        let text = std::fs::read_to_string(self.out().join(name)).ok()?;
        let doc: Value = serde_json::from_str(&text).ok()?;
        let token = doc["access_token"].as_str()?.to_owned();
        Some((token, doc["expires_on"].as_i64()?))
    }

    fn spawn(&self) -> Daemon {
        Daemon::spawn(
            self.dir.path().join("daemon.log"),
            &self.config_path(),
            &["daemon"],
            &[("APP_SECRET", SECRET)],
        )
    }
}

fn assert_no_secret(output: &str, tokens: &[String]) {
    assert!(
        !output.contains(SECRET),
        "the client secret leaked:\n{output}"
    );
    for token in tokens {
        assert!(
            !output.contains(token.as_str()),
            "a token leaked:\n{output}"
        );
    }
}

/// Starts the daemon on a config whose one job's token request hangs, and returns it once
/// the pass is in flight, with the moment the pass started (at the latest).
async fn daemon_with_a_hanging_pass(dir: &Dir, config: &str) -> (Daemon, Instant) {
    dir.write_config(config);
    let daemon = dir.spawn();
    daemon
        .wait_for_output(
            "reading credentials and getting a token",
            Duration::from_secs(20),
        )
        .await;
    (daemon, Instant::now())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_reload_that_waits_for_a_hanging_pass_stops_the_daemon_within_the_pass_deadline()
 {
    let silent = Silent::start();
    let dir = Dir::new();
    // pass_timeout 8 s: well below the 30 s request timeout, the token client's 60 s retry
    // budget and the 30 s SIGTERM cap, so only the deadline can explain a prompt exit.
    let config = format!(
        "{}{}",
        dir.settings(&silent.url(), "pass_timeout = \"8s\""),
        Dir::job("stuck", "")
    );
    let (mut daemon, pass_started) = daemon_with_a_hanging_pass(&dir, &config).await;

    // SIGHUP: the reload waits for the pass in flight. SIGTERM meanwhile must be honoured.
    dir.write_config(&format!("{config}{}", Dir::job("second", "")));
    daemon.signal("HUP");
    daemon
        .wait_for_output("SIGHUP: reloading the config", Duration::from_secs(5))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(daemon.is_running(), "{}", daemon.output());
    let sent = Instant::now();
    daemon.signal("TERM");
    let code = daemon.exit_code(Duration::from_secs(40)).await;
    let since_start = pass_started.elapsed();
    let took = sent.elapsed();
    let output = daemon.output();
    assert_eq!(code, 0, "exit code; output:\n{output}");
    // The deadline is 8 s after the pass started, the daemon abandons it 2 s later: allow 4 s
    // more for a loaded machine. Without the deadline the drain would wait for the token
    // client (30 s per request) and then the 30 s grace.
    assert!(
        since_start < Duration::from_secs(14),
        "exited {since_start:?} after the hanging pass started (SIGTERM took {took:?}):\n{output}"
    );
    assert!(
        output.contains("SIGTERM during the reload: stopping"),
        "SIGTERM during the reload is said:\n{output}"
    );
    assert!(
        !output.contains("config reloaded"),
        "the reload was finished before stopping:\n{output}"
    );
    assert!(
        !dir.out().join("second.json").exists(),
        "a job of the new config ran"
    );
    assert_no_secret(&output, &[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_gives_a_hanging_pass_no_more_than_its_deadline() {
    let silent = Silent::start();
    let dir = Dir::new();
    // The job's own pass_timeout (6 s) overrides the settings' (5 min).
    let config = format!(
        "{}{}",
        dir.settings(&silent.url(), "pass_timeout = \"5m\""),
        Dir::job("stuck", "pass_timeout = \"6s\"")
    );
    let (daemon, pass_started) = daemon_with_a_hanging_pass(&dir, &config).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, took, output) = daemon.stop("TERM").await;
    assert_eq!(code, 0, "exit code; output:\n{output}");
    let since_start = pass_started.elapsed();
    assert!(
        since_start < Duration::from_secs(12),
        "exited {since_start:?} after the hanging pass started (SIGTERM took {took:?}); its \
         deadline was 6 s:\n{output}"
    );
    assert!(
        output.contains("waiting for the passes in flight to finish"),
        "{output}"
    );
    assert!(
        output.contains("jobs.stuck.pass_timeout"),
        "the failed pass names the deadline that ended it:\n{output}"
    );
    assert_no_secret(&output, &[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_waits_for_a_hanging_pass_no_longer_than_its_pass_timeout() {
    let silent = Silent::start();
    let entra = EntraEmulator::start().await.unwrap();
    entra.register_app(AppRegistration::new(TENANT, CLIENT).with_secret(SECRET));
    let dir = Dir::new();
    // Job "stuck" asks the silent endpoint; its pass_timeout (6 s) bounds the reload's drain.
    let settings = dir.settings(&entra.base_url(), "");
    let stuck = Dir::job(
        "stuck",
        &format!("authority = \"{}\"\npass_timeout = \"6s\"", silent.url()),
    );
    let (mut daemon, pass_started) =
        daemon_with_a_hanging_pass(&dir, &format!("{settings}{stuck}")).await;

    dir.write_config(&format!("{settings}{stuck}{}", Dir::job("second", "")));
    daemon.signal("HUP");
    let reloaded = wait_until(Duration::from_secs(30), || {
        daemon.output().contains("config reloaded")
    })
    .await;
    let since_start = pass_started.elapsed();
    let output = daemon.output();
    assert!(reloaded, "the reload never finished:\n{output}");
    assert!(
        since_start < Duration::from_secs(11),
        "the reload finished {since_start:?} after the hanging pass started; its deadline was \
         6 s:\n{output}"
    );
    assert!(
        output.contains("reload: waiting for the passes in flight"),
        "{output}"
    );
    // The new config runs: its new job writes its target.
    assert!(
        wait_until(Duration::from_secs(10), || dir
            .file_token("second.json")
            .is_some())
        .await,
        "the reloaded job never wrote:\n{}",
        daemon.output()
    );
    assert!(daemon.is_running());
    let issued: Vec<String> = issued_access_tokens(&entra);
    let (code, _, output) = daemon.stop("TERM").await;
    assert_eq!(code, 0, "exit code; output:\n{output}");
    assert_no_secret(&output, &issued);
}

#[tokio::test(flavor = "multi_thread")]
async fn after_an_outage_longer_than_the_token_life_targets_hold_a_fresh_token_within_35_s_of_the_return()
 {
    const LIFETIME: Duration = Duration::from_secs(30);
    const OUTAGE: Duration = Duration::from_secs(45);
    let entra = EntraEmulator::start().await.unwrap();
    entra.register_app(AppRegistration::new(TENANT, CLIENT).with_secret(SECRET));
    entra.set_token_options(TokenOptions {
        lifetime: LIFETIME,
        ..TokenOptions::default()
    });
    let dir = Dir::new();
    // Two jobs with the same credentials and scope: one token request serves both.
    dir.write_config(&format!(
        "{}{}{}",
        dir.settings(&entra.base_url(), ""),
        Dir::job("a", ""),
        Dir::job("b", "")
    ));
    let mut daemon = dir.spawn();
    let written = wait_until(Duration::from_secs(20), || {
        dir.file_token("a.json").is_some() && dir.file_token("b.json").is_some()
    })
    .await;
    assert!(
        written,
        "the targets were not written:\n{}",
        daemon.output()
    );
    let (first, first_expiry) = dir.file_token("a.json").unwrap();

    // The endpoint goes away: every connection is dropped without an answer, for longer than
    // the tokens live.
    entra.inject_times(Fault::DropConnection, 100_000);
    let outage_started = Instant::now();
    let mut requests_at = Vec::new();
    while outage_started.elapsed() < OUTAGE {
        let count = entra.token_request_count();
        while requests_at.len() < count {
            requests_at.push(outage_started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        now_unix() > first_expiry + 5,
        "the outage did not outlast the token"
    );
    assert!(
        dir.file_token("a.json").is_some_and(|(t, _)| t == first),
        "a new token was written during the outage:\n{}",
        daemon.output()
    );
    let issued_before = entra.issued_tokens().len();

    // Back, on the same port.
    entra.clear_faults();
    let back = Instant::now();
    let fresh = |name: &str| {
        dir.file_token(name)
            .is_some_and(|(t, exp)| t != first && exp > now_unix() + 10)
    };
    let recovered = wait_until(Duration::from_secs(40), || {
        fresh("a.json") && fresh("b.json")
    })
    .await;
    let recovery = back.elapsed();
    let output = daemon.output();
    assert!(
        recovered,
        "no fresh token within 40 s of the endpoint's return; token requests during the outage \
         at {requests_at:?}; output:\n{output}"
    );
    assert!(
        recovery <= Duration::from_secs(35),
        "the targets held an expired token for {recovery:?} after the endpoint was back; token \
         requests during the outage at {requests_at:?}; output:\n{output}"
    );
    assert!(daemon.is_running());
    eprintln!(
        "recovered {recovery:?} after the return; token requests during the outage at {requests_at:?}"
    );
    // One token for both jobs after the return.
    let issued = entra.issued_tokens();
    assert_eq!(
        issued.len() - issued_before,
        1,
        "tokens issued after the return, for two jobs with the same credentials; output:\n{output}"
    );
    assert_eq!(dir.file_token("a.json"), dir.file_token("b.json"));
    // While the tokens were expired, the job retried at least every 30 s (plus the time one
    // failing request with its retries takes).
    let gaps: Vec<Duration> = requests_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|gap| *gap <= Duration::from_secs(38)),
        "a gap between token requests during the outage was longer than 30 s plus one failing \
         request's retries: {requests_at:?}; output:\n{output}"
    );

    let tokens: Vec<String> = issued
        .into_iter()
        .map(|t| t.access_token.expose_secret().to_owned())
        .collect();
    let (code, _, output) = daemon.stop("TERM").await;
    assert_eq!(code, 0, "exit code; output:\n{output}");
    assert_no_secret(&output, &tokens);
}
