//! `cargo xtask bench run`: how fast one `secret-sync run` is, against local servers.
//! `cargo xtask bench` runs it and then the daemon bench twice ([`all`]).
//!
//! Issue 4 sets two goals, measured here rather than in a timed test (timings on a shared CI
//! machine make flaky tests):
//! - a cold `secret-sync run --force` (a new process, nothing cached) that refreshes one job
//!   with three targets (file, OpenBao, moto) is no slower than `bench/curl-sync.sh`, a minimal
//!   script making the same calls with curl in sequence; both are timed in the same loop,
//!   interleaved, and compared as a ratio of medians;
//! - a run where every target is fresh takes under 50 ms, with zero token requests and zero
//!   writes (checked on every fresh run: no "access token acquired" event in entra-auth's log,
//!   every target reported `fresh`, and the Vault version, the AWS version id and the file's
//!   content and modification time unchanged over all fresh runs).
//!
//! The servers are real and local: the testkit Entra ID emulator (`testkit-server`, plain HTTP
//! on 127.0.0.1), an OpenBao dev server and a moto server from the venv of `cargo xtask setup`.
//! Each measurement is repeated (`--iterations N`, default 10) after one warm-up, and reported as
//! median and p90. The table goes to stdout, the figures with the machine and the date to
//! `target/bench/run.json`.
//!
//! Setup calls to the servers are made with curl too, so this crate keeps its few dependencies.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::{bench_daemon, cargo, servers};

pub(crate) const USAGE: &str = "\
usage: cargo xtask bench run [--iterations N] [--dev]
Times a cold secret-sync run --force and a fresh run against local servers (Entra ID emulator,
OpenBao, moto), beside bench/curl-sync.sh; writes target/bench/run.json.
  --iterations N  timed runs of each measurement, after one warm-up (default 10)
  --dev           use the debug build instead of the release build";

pub(crate) const ALL_USAGE: &str = "\
usage: cargo xtask bench [--iterations N] [--jobs N] [--apps N] [--duration S] [--format F]
                         [--rust-log L] [--dev]
       cargo xtask bench run [OPTIONS]      the run bench only (bench run --help)
       cargo xtask bench daemon [OPTIONS]   one daemon bench only (bench daemon --help;
                                            cargo xtask bench-daemon is the same)

Without a subcommand, every benchmark in turn:
  1. run            secret-sync run beside a curl script        -> target/bench/run.json
  2. daemon tmpfs   the daemon bench with its targets in /dev/shm (tmpfs), 3 minutes
                                                                -> target/bench/daemon-tmpfs.json
                    (skipped, with a note, when /dev/shm is missing or not tmpfs)
  3. daemon disk    the daemon bench with its targets in a temp dir under target/bench/,
                    3 minutes                                   -> target/bench/daemon-disk.json
Both daemon benches use raw targets by default. Every part runs even when one before it failed;
the command then fails (non-zero) and names the parts that failed.
  --iterations N  for the run bench (default 10)
  --jobs N, --apps N, --duration S, --format F, --rust-log L
                  for both daemon benches (defaults 10000, 100, 3m, raw, unset)
  --dev           debug builds for all of them";

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0a1b2c3d-1111-2222-3333-444455556666";
/// Known only to the emulator started here; it protects nothing.
const CLIENT_SECRET: &str = "bench-client-secret-value";
const SCOPE: &str = "https://graph.microsoft.com/.default";
/// Root token of the throwaway OpenBao dev server started here.
const VAULT_TOKEN: &str = "bench-root-token";
/// moto accepts any SigV4-shaped credentials.
const AWS_KEY: &str = "AKIABENCH00000000001";
const AWS_SECRET_KEY: &str = "bench/aws/secret/access/key/0000000000";
const AWS_REGION: &str = "eu-west-1";
/// Where secret-sync writes, and where the curl script writes (apart, so neither sees the other).
const SYNC_NAME: &str = "bench/graph-token";
const CURL_NAME: &str = "bench/curl-token";
/// The goal for a run that has nothing to do.
const FRESH_GOAL: Duration = Duration::from_millis(50);
/// How long a server gets to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// What entra-auth logs (at info) for every token it obtains.
const TOKEN_EVENT: &str = "access token acquired";

struct Options {
    iterations: usize,
    release: bool,
}

fn parse_args(args: &[String]) -> Result<Options> {
    let mut options = Options {
        iterations: 10,
        release: true,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--iterations" => {
                let n = args.next().context("--iterations needs a number")?;
                options.iterations =
                    n.parse().ok().filter(|n| *n > 0).with_context(|| {
                        format!("--iterations {n}: give a whole number above 0")
                    })?;
            }
            "--dev" => options.release = false,
            other => bail!("unknown option `{other}`\n{USAGE}"),
        }
    }
    Ok(options)
}

/// `cargo xtask bench` with no subcommand: the run bench, then the daemon bench on tmpfs and on
/// disk. Every part runs; the result names the ones that failed.
pub fn all(root: &Path, args: &[String]) -> Result<()> {
    let (run_args, daemon_args) = split_all_args(args)?;
    // Both parsed before anything runs: a typo should not cost minutes.
    let run_options = parse_args(&run_args)?;
    let daemon_options = bench_daemon::parse_args(&daemon_args)?;
    let bench = root.join("target").join("bench");
    let mut parts: Vec<(&str, Part)> = Vec::new();

    println!("== bench 1 of 3: run ==");
    parts.push(("run", Part::from(run_with(root, &run_options))));

    println!("\n== bench 2 of 3: daemon, targets on tmpfs ==");
    let tmpfs = match bench_daemon::tmpfs_dir() {
        Some(dir) => Part::from(bench_daemon::run_with(
            root,
            &placed(&daemon_options, dir, bench.join("daemon-tmpfs.json")),
        )),
        None => Part::Skipped("/dev/shm is missing or not a tmpfs mount".to_owned()),
    };
    if let Part::Skipped(why) = &tmpfs {
        println!("skipped: {why}");
    }
    parts.push(("daemon tmpfs", tmpfs));

    println!("\n== bench 3 of 3: daemon, targets on disk ==");
    let disk = fs::create_dir_all(&bench)
        .with_context(|| format!("creating {}", bench.display()))
        .and_then(|()| {
            if let Some(fstype) = bench_daemon::filesystem_of(&bench)
                .filter(|fstype| matches!(fstype.as_str(), "tmpfs" | "ramfs"))
            {
                eprintln!(
                    "bench: warning: {} is on {fstype}, not a disk; measuring it anyway",
                    bench.display()
                );
            }
            bench_daemon::run_with(
                root,
                &placed(
                    &daemon_options,
                    bench.clone(),
                    bench.join("daemon-disk.json"),
                ),
            )
        });
    parts.push(("daemon disk", Part::from(disk)));

    println!("\n== bench: summary ==");
    let mut failed = Vec::new();
    for (name, part) in &parts {
        match part {
            Part::Done => println!("{name:<13} done"),
            Part::Skipped(why) => println!("{name:<13} skipped: {why}"),
            Part::Failed(err) => {
                println!("{name:<13} FAILED: {err:#}");
                failed.push(*name);
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of the {} benchmarks failed: {} (errors above)",
            failed.len(),
            parts.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// The daemon bench's options with the targets in `dir` and the figures in `out`.
fn placed(options: &bench_daemon::Options, dir: PathBuf, out: PathBuf) -> bench_daemon::Options {
    let mut options = options.clone();
    options.dir = Some(dir);
    options.out = Some(out);
    options
}

/// How one part of [`all`] went.
#[derive(Debug)]
enum Part {
    Done,
    Skipped(String),
    Failed(anyhow::Error),
}

impl From<Result<()>> for Part {
    fn from(result: Result<()>) -> Self {
        match result {
            Ok(()) => Part::Done,
            Err(err) => {
                eprintln!("bench: this part failed: {err:#}");
                Part::Failed(err)
            }
        }
    }
}

/// The options of `cargo xtask bench` split into the run bench's and the daemon bench's;
/// `--dev` goes to both. `--dir` and `--out` are the parts' own.
fn split_all_args(args: &[String]) -> Result<(Vec<String>, Vec<String>)> {
    let (mut run, mut daemon) = (Vec::new(), Vec::new());
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let to = match arg.as_str() {
            "--dev" => {
                run.push(arg.clone());
                daemon.push(arg.clone());
                continue;
            }
            "--iterations" => &mut run,
            "--jobs" | "--apps" | "--duration" | "--format" | "--rust-log" => &mut daemon,
            "--dir" | "--out" => bail!(
                "{arg}: `cargo xtask bench` sets it for each daemon bench; \
                 use `cargo xtask bench daemon {arg} ...` for one run\n{ALL_USAGE}"
            ),
            other => bail!("unknown option `{other}`\n{ALL_USAGE}"),
        };
        to.push(arg.clone());
        // The value, if any: the part's own parser says when it is missing.
        to.extend(args.next().cloned());
    }
    Ok((run, daemon))
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    run_with(root, &parse_args(args)?)
}

fn run_with(root: &Path, options: &Options) -> Result<()> {
    check_curl()?;
    servers::install(root)?;
    let profile = if options.release { "release" } else { "debug" };
    let mut build = vec![
        "build",
        "--quiet",
        "--package",
        "secret-sync",
        "--package",
        "testkit",
        "--bins",
    ];
    if options.release {
        build.push("--release");
    }
    cargo(root, &build)?;
    let bin = root.join("target").join(profile);

    let work = root.join("target").join("bench");
    let _ = fs::remove_dir_all(work.join("out"));
    fs::create_dir_all(work.join("out")).with_context(|| format!("creating {}", work.display()))?;
    let world = World::start(root, &bin, &work)?;
    world.prepare()?;

    let n = options.iterations;
    eprintln!("bench: {n} iterations of each measurement ({profile} build), after one warm-up");
    let mut cold = Vec::with_capacity(n);
    let mut curl = Vec::with_capacity(n);
    for i in 0..=n {
        let sync_time = world.cold_run()?;
        let curl_time = world.curl_script(root)?;
        if i > 0 {
            cold.push(sync_time);
            curl.push(curl_time);
        }
    }
    let before = world.versions()?;
    let mut fresh = Vec::with_capacity(n);
    for i in 0..=n {
        let time = world.fresh_run()?;
        if i > 0 {
            fresh.push(time);
        }
    }
    let after = world.versions()?;
    ensure!(
        before == after,
        "a fresh run wrote something: versions before {before} and after {after}"
    );

    let report = Report {
        cold: Stats::of(&cold),
        curl: Stats::of(&curl),
        fresh: Stats::of(&fresh),
    };
    print!("{}", report.table());
    let json = report.json(profile, n, &before)?;
    let path = work.join("run.json");
    fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    println!("figures written to {}", path.display());
    Ok(())
}

/// curl must sign AWS requests itself (`--aws-sigv4`, curl 7.75).
fn check_curl() -> Result<()> {
    let out = Command::new("curl")
        .arg("--version")
        .output()
        .context("curl is needed for the baseline script: install curl 7.75 or newer")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(1).unwrap_or_default();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    ensure!(
        (major, minor) >= (7, 75),
        "curl {version} has no --aws-sigv4: install curl 7.75 or newer"
    );
    Ok(())
}

/// The servers and where everything is; children are killed when it drops.
struct World {
    secret_sync: PathBuf,
    config: PathBuf,
    home: PathBuf,
    out_file: PathBuf,
    token_url: String,
    vault: String,
    moto: String,
    children: Vec<Child>,
}

impl Drop for World {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl World {
    fn start(root: &Path, bin: &Path, work: &Path) -> Result<World> {
        let venv_bin = std::env::var_os("SECRET_SYNC_VENV")
            .filter(|v| !v.is_empty())
            .map_or_else(|| root.join(".venv"), PathBuf::from)
            .join("bin");
        let home = work.join("home");
        fs::create_dir_all(&home)?;
        let mut world = World {
            secret_sync: bin.join("secret-sync"),
            config: work.join("secret-sync.toml"),
            home,
            out_file: work.join("out").join("curl-token.json"),
            token_url: String::new(),
            vault: String::new(),
            moto: String::new(),
            children: Vec::new(),
        };

        let server = bin.join("testkit-server");
        let mut entra = Command::new(&server)
            .args(["--tenant", TENANT, "--client-id", CLIENT])
            .env("TESTKIT_CLIENT_SECRET", CLIENT_SECRET)
            .stdout(Stdio::piped())
            .stderr(log_file(work, "entra.log")?)
            .spawn()
            .with_context(|| format!("could not start {}", server.display()))?;
        let stdout = entra.stdout.take().context("the emulator's stdout")?;
        world.children.push(entra);
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the emulator's JSON line")?;
        let info: Value = serde_json::from_str(line.trim())
            .with_context(|| format!("the emulator printed {line:?}, not its JSON line"))?;
        world.token_url = info["token_url"]
            .as_str()
            .context("the emulator's JSON line has no token_url")?
            .to_owned();
        let entra_base = info["base_url"].as_str().context("no base_url")?.to_owned();

        let bao_port = free_port_pair()?;
        world.vault = format!("http://127.0.0.1:{bao_port}");
        let bao = Command::new(venv_bin.join("bao"))
            .args([
                "server",
                "-dev",
                "-dev-no-store-token",
                &format!("-dev-root-token-id={VAULT_TOKEN}"),
                &format!("-dev-listen-address=127.0.0.1:{bao_port}"),
            ])
            .env("HOME", &world.home)
            .env_remove("BAO_ADDR")
            .env_remove("VAULT_ADDR")
            .stdout(log_file(work, "bao.log")?)
            .stderr(log_file(work, "bao.log")?)
            .spawn()
            .context("could not start bao: run `cargo xtask setup`")?;
        world.children.push(bao);

        let moto_port = free_port()?;
        world.moto = format!("http://127.0.0.1:{moto_port}");
        let moto = Command::new(venv_bin.join("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &moto_port.to_string()])
            .env("HOME", &world.home)
            .stdout(log_file(work, "moto.log")?)
            .stderr(log_file(work, "moto.log")?)
            .spawn()
            .context("could not start moto_server: run `cargo xtask setup`")?;
        world.children.push(moto);

        world.wait_ready(&format!("{}/v1/sys/health", world.vault), work, "bao.log")?;
        world.wait_ready(&format!("{}/moto-api/", world.moto), work, "moto.log")?;

        let config = format!(
            "# Written by `cargo xtask bench`: one job, three targets, servers on 127.0.0.1.\n\
             [settings]\nrefresh_before = \"15m\"\nauthority = \"{entra_base}\"\n\n\
             [backends.local]\nkind = \"file\"\ndir = \"{out}\"\n\n\
             [backends.bao]\nkind = \"vault\"\naddress = \"{vault}\"\nmount = \"secret\"\nkv_version = 2\n\
             auth = {{ method = \"token\", token_env = \"BAO_TOKEN\" }}\n\n\
             [backends.aws]\nkind = \"aws-secrets-manager\"\nregion = \"{AWS_REGION}\"\nendpoint_url = \"{moto}\"\n\n\
             [jobs.graph]\ntenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT}\"\n\
             client_secret = {{ env = \"BENCH_CLIENT_SECRET\" }}\nscope = \"{SCOPE}\"\n\
             targets = [\n\
             \x20 {{ to = \"local\", name = \"graph-token.json\", format = \"json\" }},\n\
             \x20 {{ to = \"bao\", name = \"{SYNC_NAME}\" }},\n\
             \x20 {{ to = \"aws\", name = \"{SYNC_NAME}\" }},\n\
             ]\n",
            out = work.join("out").display(),
            vault = world.vault,
            moto = world.moto,
        );
        fs::write(&world.config, config)
            .with_context(|| format!("writing {}", world.config.display()))?;
        Ok(world)
    }

    /// Polls `url` until it answers 200, failing early when a server has exited.
    fn wait_ready(&mut self, url: &str, work: &Path, log: &str) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ok = Command::new("curl")
                .args(["-sf", "-o", "/dev/null", url])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            for child in &mut self.children {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "a server exited ({status}) before {url} answered; see {}",
                        work.join(log).display()
                    );
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{url} did not answer within {START_TIMEOUT:?}; see {}",
                    work.join(log).display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The secret the curl script overwrites must exist; secret-sync creates its own.
    fn prepare(&self) -> Result<()> {
        self.aws(
            "CreateSecret",
            &json!({"Name": CURL_NAME, "SecretString": "not a token yet"}),
        )?;
        Ok(())
    }

    /// One cold `secret-sync run --force`: every target rewritten, one token request.
    fn cold_run(&self) -> Result<Duration> {
        let (time, report, token_requests) = self.secret_sync(&["--force"])?;
        let outcomes = outcomes(&report)?;
        ensure!(
            outcomes.iter().all(|o| o == "created" || o == "updated") && outcomes.len() == 3,
            "run --force should rewrite all three targets, got {outcomes:?}: {report}"
        );
        ensure!(
            token_requests == 1,
            "run --force made {token_requests} token requests, expected 1"
        );
        Ok(time)
    }

    /// One run with every target fresh: nothing read, requested or written.
    fn fresh_run(&self) -> Result<Duration> {
        let (time, report, token_requests) = self.secret_sync(&[])?;
        let outcomes = outcomes(&report)?;
        ensure!(
            outcomes.iter().all(|o| o == "fresh") && outcomes.len() == 3,
            "every target should be fresh, got {outcomes:?}: {report}"
        );
        ensure!(
            token_requests == 0,
            "a fresh run made {token_requests} token requests"
        );
        Ok(time)
    }

    /// Times `secret-sync run --output json EXTRA`; returns the summary and the number of
    /// tokens entra-auth obtained.
    fn secret_sync(&self, extra: &[&str]) -> Result<(Duration, Value, usize)> {
        let mut cmd = Command::new(&self.secret_sync);
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config)
            .args(["--output", "json"])
            .args(extra)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("RUST_LOG", "entra_auth=info")
            .env("BENCH_CLIENT_SECRET", CLIENT_SECRET)
            .env("BAO_TOKEN", VAULT_TOKEN)
            .env("AWS_ACCESS_KEY_ID", AWS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET_KEY)
            .env("AWS_EC2_METADATA_DISABLED", "true");
        let (time, out) = timed(&mut cmd)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success(),
            "secret-sync run {} failed ({}): {}{stderr}",
            extra.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        let report: Value =
            serde_json::from_slice(&out.stdout).context("secret-sync printed no JSON summary")?;
        let token_requests = stderr.lines().filter(|l| l.contains(TOKEN_EVENT)).count();
        Ok((time, report, token_requests))
    }

    /// One run of the curl baseline.
    fn curl_script(&self, root: &Path) -> Result<Duration> {
        let script = root.join("bench").join("curl-sync.sh");
        let mut cmd = Command::new("bash");
        cmd.arg(&script)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("ENTRA_TOKEN_URL", &self.token_url)
            .env("CLIENT_ID", CLIENT)
            .env("CLIENT_SECRET", CLIENT_SECRET)
            .env("SCOPE", SCOPE)
            .env("VAULT_ADDR", &self.vault)
            .env("VAULT_TOKEN", VAULT_TOKEN)
            .env("VAULT_MOUNT", "secret")
            .env("VAULT_NAME", CURL_NAME)
            .env("AWS_ENDPOINT", &self.moto)
            .env("AWS_REGION", AWS_REGION)
            .env("AWS_ACCESS_KEY_ID", AWS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET_KEY)
            .env("AWS_SECRET_ID", CURL_NAME)
            .env("OUT_FILE", &self.out_file);
        let (time, out) = timed(&mut cmd)?;
        ensure!(
            out.status.success(),
            "{} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(time)
    }

    /// What each of secret-sync's targets holds, by version: any write changes it.
    fn versions(&self) -> Result<Value> {
        let vault = self.vault_get(&format!("secret/metadata/{SYNC_NAME}"))?;
        let aws = self.aws("DescribeSecret", &json!({"SecretId": SYNC_NAME}))?;
        let current = aws["VersionIdsToStages"]
            .as_object()
            .and_then(|versions| {
                versions.iter().find(|(_, stages)| {
                    stages
                        .as_array()
                        .is_some_and(|s| s.iter().any(|s| s == "AWSCURRENT"))
                })
            })
            .map(|(id, _)| id.clone())
            .context("DescribeSecret shows no AWSCURRENT version")?;
        let file = self.out_file.with_file_name("graph-token.json");
        let meta = fs::metadata(&file).with_context(|| format!("reading {}", file.display()))?;
        let modified = meta
            .modified()?
            .duration_since(SystemTime::UNIX_EPOCH)?
            .as_nanos()
            .to_string();
        Ok(json!({
            "vault_version": vault["data"]["current_version"],
            "aws_version_id": current,
            "file_modified_ns": modified,
            "file_len": meta.len(),
        }))
    }

    fn vault_get(&self, path: &str) -> Result<Value> {
        let url = format!("{}/v1/{path}", self.vault);
        let header = format!("X-Vault-Token: {VAULT_TOKEN}");
        curl_json(&["-H", &header, &url], None)
    }

    /// One AWS Secrets Manager call to moto, signed by curl.
    fn aws(&self, operation: &str, body: &Value) -> Result<Value> {
        let sigv4 = format!("aws:amz:{AWS_REGION}:secretsmanager");
        let user = format!("{AWS_KEY}:{AWS_SECRET_KEY}");
        let target = format!("X-Amz-Target: secretsmanager.{operation}");
        let endpoint = format!("{}/", self.moto);
        curl_json(
            &[
                "--aws-sigv4",
                &sigv4,
                "--user",
                &user,
                "-H",
                &target,
                "-H",
                "Content-Type: application/x-amz-json-1.1",
                "--data-binary",
                "@-",
                &endpoint,
            ],
            Some(&body.to_string()),
        )
    }
}

/// Runs `curl -sS --fail-with-body ARGS` (with `stdin`), parsing the answer as JSON.
fn curl_json(args: &[&str], stdin: Option<&str>) -> Result<Value> {
    let mut child = Command::new("curl")
        .args(["-sS", "--fail-with-body"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("could not run curl")?;
    let mut input = child.stdin.take().context("curl's stdin")?;
    input.write_all(stdin.unwrap_or_default().as_bytes())?;
    drop(input);
    let out = child.wait_with_output()?;
    let url = args.last().copied().unwrap_or_default();
    ensure!(
        out.status.success(),
        "curl {url} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).with_context(|| format!("curl {url} answered non-JSON"))
}

fn timed(cmd: &mut Command) -> Result<(Duration, Output)> {
    let start = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("could not run {:?}", cmd.get_program()))?;
    Ok((start.elapsed(), out))
}

fn outcomes(report: &Value) -> Result<Vec<String>> {
    let targets = report["targets"]
        .as_array()
        .context("the summary has no targets")?;
    Ok(targets
        .iter()
        .map(|t| t["outcome"].as_str().unwrap_or_default().to_owned())
        .collect())
}

fn log_file(work: &Path, name: &str) -> Result<fs::File> {
    let path = work.join(name);
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A port whose successor is free too: `bao server -dev` also listens on PORT+1.
fn free_port_pair() -> Result<u16> {
    for _ in 0..20 {
        let port = free_port()?;
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    bail!("found no two free neighbouring ports on 127.0.0.1")
}

/// Median and p90 (nearest rank) of some timings, in milliseconds.
#[derive(Debug, Clone, PartialEq)]
struct Stats {
    samples_ms: Vec<f64>,
    median_ms: f64,
    p90_ms: f64,
}

impl Stats {
    fn of(samples: &[Duration]) -> Stats {
        let samples_ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        let mut sorted = samples_ms.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median_ms = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        let p90_ms = sorted[(n * 9).div_ceil(10) - 1];
        Stats {
            samples_ms,
            median_ms,
            p90_ms,
        }
    }

    fn json(&self) -> Value {
        json!({
            "median_ms": round2(self.median_ms),
            "p90_ms": round2(self.p90_ms),
            "samples_ms": self.samples_ms.iter().copied().map(round2).collect::<Vec<_>>(),
        })
    }
}

/// Rounded to two decimals, for reports.
pub(crate) fn round2(ms: f64) -> f64 {
    (ms * 100.0).round() / 100.0
}

struct Report {
    cold: Stats,
    curl: Stats,
    fresh: Stats,
}

impl Report {
    /// secret-sync's cold run over the curl script, by medians: <= 1 meets the goal.
    fn ratio(&self) -> f64 {
        self.cold.median_ms / self.curl.median_ms
    }

    fn table(&self) -> String {
        let row = |name: &str, s: &Stats, goal: &str| {
            format!(
                "{name:<52} {:>9.1} {:>9.1}  {goal}\n",
                s.median_ms, s.p90_ms
            )
        };
        let ratio = self.ratio();
        let fresh_ok = self.fresh.median_ms < FRESH_GOAL.as_secs_f64() * 1000.0;
        let mut out = format!(
            "\n{:<52} {:>9} {:>9}  goal\n",
            "measurement (ms)", "median", "p90"
        );
        out += &row("cold run --force, 3 targets (secret-sync)", &self.cold, "");
        out += &row(
            "same calls, curl in sequence (bench/curl-sync.sh)",
            &self.curl,
            "",
        );
        out += &format!(
            "{:<52} {:>9.2} {:>9}  <= 1.00: {}\n",
            "ratio secret-sync / curl (medians)",
            ratio,
            "",
            if ratio <= 1.0 { "met" } else { "NOT met" }
        );
        out += &row(
            "fresh run: 0 token requests, 0 writes",
            &self.fresh,
            if fresh_ok {
                "< 50: met"
            } else {
                "< 50: NOT met"
            },
        );
        out
    }

    fn json(&self, profile: &str, iterations: usize, versions: &Value) -> Result<Value> {
        Ok(json!({
            "date": command_text("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])?,
            "commit": command_text("git", &["describe", "--always", "--dirty"])?,
            "machine": machine()?,
            "build_profile": profile,
            "iterations": iterations,
            "targets": ["file", "vault (OpenBao dev server)", "aws-secrets-manager (moto)"],
            "cold_run_force": self.cold.json(),
            "curl_script": self.curl.json(),
            "ratio_cold_over_curl_median": round2(self.ratio()),
            "fresh_run": self.fresh.json(),
            "fresh_run_checks": {
                "token_requests": 0,
                "writes": 0,
                "versions_unchanged": versions,
            },
            "goals": {
                "cold_no_slower_than_curl": self.ratio() <= 1.0,
                "fresh_under_50ms": self.fresh.median_ms < FRESH_GOAL.as_secs_f64() * 1000.0,
            },
        }))
    }
}

/// `nproc`, the CPU model and the memory, from /proc.
pub(crate) fn machine() -> Result<Value> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown", |(_, m)| m.trim())
        .to_owned();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0);
    Ok(json!({
        "nproc": command_text("nproc", &[])?.parse::<u32>().unwrap_or(0),
        "cpu_model": model,
        "memory_gib": round2(mem_kib as f64 / 1024.0 / 1024.0),
        "kernel": command_text("uname", &["-sr"])?,
    }))
}

pub(crate) fn command_text(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("could not run {program}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    #[test]
    fn median_and_p90_by_nearest_rank() {
        let stats = Stats::of(&ms(&[10, 1, 9, 2, 8, 3, 7, 4, 6, 5]));
        assert_eq!(stats.median_ms, 5.5);
        assert_eq!(stats.p90_ms, 9.0);
        let odd = Stats::of(&ms(&[30, 10, 20]));
        assert_eq!(odd.median_ms, 20.0);
        assert_eq!(odd.p90_ms, 30.0);
        let one = Stats::of(&ms(&[7]));
        assert_eq!((one.median_ms, one.p90_ms), (7.0, 7.0));
    }

    #[test]
    fn options_parse_and_refuse_nonsense() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let o = parse_args(&args(&["--iterations", "3", "--dev"])).unwrap();
        assert_eq!((o.iterations, o.release), (3, false));
        let o = parse_args(&[]).unwrap();
        assert_eq!((o.iterations, o.release), (10, true));
        let err = parse_args(&args(&["--iterations", "0"])).err().unwrap();
        assert!(err.to_string().contains("above 0"), "{err}");
        let err = parse_args(&args(&["--fast"])).err().unwrap();
        assert!(err.to_string().contains("--fast"), "{err}");
    }

    #[test]
    fn bench_options_go_to_the_parts_they_belong_to() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let (run, daemon) = split_all_args(&args(&[
            "--iterations",
            "3",
            "--duration",
            "60s",
            "--jobs",
            "500",
            "--dev",
            "--format",
            "json",
        ]))
        .unwrap();
        assert_eq!(run, args(&["--iterations", "3", "--dev"]));
        assert_eq!(
            daemon,
            args(&[
                "--duration",
                "60s",
                "--jobs",
                "500",
                "--dev",
                "--format",
                "json"
            ])
        );
        assert_eq!(split_all_args(&[]).unwrap(), (vec![], vec![]));
        // A missing value is left for the part's parser to name.
        let (_, daemon) = split_all_args(&args(&["--apps"])).unwrap();
        let err = bench_daemon::parse_args(&daemon).unwrap_err().to_string();
        assert!(err.contains("--apps needs a number"), "{err}");
        let err = split_all_args(&args(&["--dir", "/dev/shm"])).unwrap_err();
        assert!(err.to_string().contains("bench daemon --dir"), "{err}");
        let err = split_all_args(&args(&["--fast"])).unwrap_err();
        assert!(err.to_string().contains("unknown option `--fast`"), "{err}");
    }

    #[test]
    fn ratio_compares_medians() {
        let report = Report {
            cold: Stats::of(&ms(&[20, 30, 40])),
            curl: Stats::of(&ms(&[60, 60, 60])),
            fresh: Stats::of(&ms(&[5, 6, 7])),
        };
        assert_eq!(report.ratio(), 0.5);
        let table = report.table();
        assert!(table.contains("0.50") && table.contains("met"), "{table}");
        assert!(!table.contains("NOT met"), "{table}");
    }
}
