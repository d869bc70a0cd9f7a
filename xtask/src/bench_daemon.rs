//! `cargo xtask bench-daemon`: the daemon at scale, as issue 5 asks, measured rather than
//! asserted in a timed test.
//!
//! It starts the testkit Entra ID emulator (`testkit-server`, plain HTTP on 127.0.0.1) with
//! `--apps` registered apps (default 100) issuing tokens of 60 s, writes a config with `--jobs`
//! jobs (default 10,000) spread over those apps, each with one file target in a temporary
//! directory and `refresh_before = "20s"`, and runs `secret-sync daemon` on it for `--duration`
//! (default 3 minutes). Targets are `--format raw` (the default: the bare token, its expiry in a
//! sidecar `NAME.meta.json`, so two files per write) or `--format json` (one file).
//! Meanwhile, once a second, it reads the daemon's `/proc/PID/status` and `/proc/PID/stat`, and
//! stats every file that records a target's expiry (the sidecar, or the JSON document). A file
//! whose modification time changed is a write, and only its `expires_on` is read (the token is
//! never kept or printed); a write of a target that already held a token is a refresh, and it
//! was on time when it happened before that token expired. Its lag is how long after the
//! refresh point (the old expiry minus `refresh_before`) it came.
//!
//! Reported: peak RSS (VmHWM), CPU seconds (utime + stime) and their average share of one core,
//! over the whole run and after the first pass; token requests (the emulator's count, printed
//! when it stops) against the distinct credential sets; refreshes on time and their lag; the
//! most targets ever seen holding an expired token. The table goes to stdout, the figures with
//! the machine and the date to `target/bench/daemon.json`; docs/performance.md quotes them.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::bench::{command_text, machine, round2};
use crate::cargo;

const USAGE: &str =
    "usage: cargo xtask bench-daemon [--jobs N] [--apps N] [--duration SECS] [--dev]
  --jobs N        jobs in the generated config, one file target each (default 10000)
  --apps N        distinct apps (credential sets) the jobs share (default 100)
  --duration S    how long the daemon runs, in seconds, or with a suffix: 90s, 3m (default 3m)
  --format F      file target format: raw (token + sidecar, the default) or json (one file)
  --rust-log L    the daemon's RUST_LOG, e.g. info for one log line per job pass
                  (default: unset, so the binary's default, warn)
  --dev           use the debug build instead of the release build";

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// Known only to the emulator started here; it protects nothing.
const CLIENT_SECRET: &str = "bench-daemon-client-secret";
const SCOPE: &str = "https://graph.microsoft.com/.default";
/// The token lifetime the emulator grants, and the config's `refresh_before`.
const TOKEN_LIFETIME: Duration = Duration::from_secs(60);
const REFRESH_BEFORE: Duration = Duration::from_secs(20);
/// Time between samples.
const TICK: Duration = Duration::from_secs(1);
/// How long the daemon gets to answer `/healthz`, and to exit after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// The issue's goals.
const RSS_GOAL_MIB: f64 = 100.0;
const CPU_GOAL_PERCENT: f64 = 10.0;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Options {
    jobs: usize,
    apps: usize,
    duration: Duration,
    /// `format = "json"` targets instead of raw ones.
    json: bool,
    /// The daemon's `RUST_LOG`, if set.
    rust_log: Option<String>,
    release: bool,
}

fn parse_args(args: &[String]) -> Result<Options> {
    let mut options = Options {
        jobs: 10_000,
        apps: 100,
        duration: Duration::from_secs(180),
        json: false,
        rust_log: None,
        release: true,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |what: &str| {
            args.next()
                .with_context(|| format!("{arg} needs {what}\n{USAGE}"))
        };
        match arg.as_str() {
            "--jobs" => options.jobs = positive(arg, value("a number")?)?,
            "--apps" => options.apps = positive(arg, value("a number")?)?,
            "--duration" => options.duration = duration(value("a duration")?)?,
            "--format" => {
                options.json = match value("raw or json")?.as_str() {
                    "raw" => false,
                    "json" => true,
                    other => bail!("--format {other}: give raw or json"),
                }
            }
            "--rust-log" => options.rust_log = Some(value("a level")?.clone()),
            "--dev" => options.release = false,
            other => bail!("unknown option `{other}`\n{USAGE}"),
        }
    }
    ensure!(
        options.apps <= options.jobs,
        "--apps {} is more than --jobs {}: every app needs a job",
        options.apps,
        options.jobs
    );
    Ok(options)
}

fn positive(flag: &str, text: &str) -> Result<usize> {
    text.parse()
        .ok()
        .filter(|n| *n > 0)
        .with_context(|| format!("{flag} {text}: give a whole number above 0"))
}

/// `180`, `180s` or `3m`.
fn duration(text: &str) -> Result<Duration> {
    let (number, unit) = match text.strip_suffix('m') {
        Some(minutes) => (minutes, 60),
        None => (text.strip_suffix('s').unwrap_or(text), 1),
    };
    number
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .map(|n| Duration::from_secs(n * unit))
        .with_context(|| format!("--duration {text}: give seconds (90, 90s) or minutes (3m)"))
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let options = parse_args(args)?;
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

    let work = root.join("target").join("bench").join("daemon");
    let out = std::env::temp_dir().join(format!("secret-sync-bench-daemon-{}", std::process::id()));
    for dir in [&work, &out] {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let result = measure(&options, &bin, &work, &out);
    let _ = fs::remove_dir_all(&out);
    let report = result?;

    print!("{}", report.table());
    let json = report.json(&options, profile)?;
    let path = root.join("target").join("bench").join("daemon.json");
    fs::write(&path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    println!("figures written to {}", path.display());
    Ok(())
}

/// Kills the child when dropped, unless it was stopped already.
struct Process {
    name: &'static str,
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// SIGTERM, then wait for the exit (at most [`STOP_TIMEOUT`]); how long it took.
    fn terminate(&mut self) -> Result<(std::process::ExitStatus, Duration)> {
        let started = Instant::now();
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("could not run kill")?;
        ensure!(sent.success(), "kill -TERM {} failed", self.name);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok((status, started.elapsed()));
            }
            ensure!(
                started.elapsed() < STOP_TIMEOUT,
                "{} did not exit within {STOP_TIMEOUT:?} of SIGTERM",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn measure(options: &Options, bin: &Path, work: &Path, out: &Path) -> Result<Report> {
    let (mut emulator, mut emulator_stdout, authority) = start_emulator(options, bin, work)?;
    let listen = format!("127.0.0.1:{}", free_port()?);
    let config = work.join("secret-sync.toml");
    fs::write(&config, config_text(options, &authority, &listen, out))
        .with_context(|| format!("writing {}", config.display()))?;

    eprintln!(
        "bench-daemon: {} jobs over {} apps, tokens of {TOKEN_LIFETIME:?}, refresh_before \
         {REFRESH_BEFORE:?}, for {:?}; daemon log in {}",
        options.jobs,
        options.apps,
        options.duration,
        work.join("daemon.log").display()
    );
    let log = fs::File::create(work.join("daemon.log"))?;
    let started = Instant::now();
    let mut daemon = Process {
        name: "secret-sync daemon",
        child: Command::new(bin.join("secret-sync"))
            .arg("daemon")
            .arg("--config")
            .arg(&config)
            .env("BENCH_CLIENT_SECRET", CLIENT_SECRET)
            .env_remove("SECRET_SYNC_CONFIG")
            .env_remove("RUST_LOG")
            .envs(options.rust_log.as_ref().map(|level| ("RUST_LOG", level)))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("could not start {}", bin.join("secret-sync").display()))?,
    };
    let pid = daemon.child.id();
    wait_healthy(&mut daemon, &listen)?;

    let ticks_per_second = clock_ticks()?;
    let mut targets = Targets::new(out, options);
    let mut samples = Samples::default();
    let deadline = started + options.duration;
    while Instant::now() < deadline {
        let tick = Instant::now();
        if let Some(status) = daemon.child.try_wait()? {
            bail!("the daemon exited ({status}) during the run; see its log");
        }
        let now = SystemTime::now();
        targets.scan()?;
        samples.rss_kib = samples.rss_kib.max(status_kib(pid, "VmRSS")?);
        let cpu = cpu_seconds(pid, ticks_per_second)?;
        if samples.first_pass.is_none() && targets.written() == options.jobs {
            samples.first_pass = Some((started.elapsed(), cpu));
            eprintln!(
                "bench-daemon: every target written after {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        if samples.first_pass.is_some() {
            samples.most_expired = samples.most_expired.max(targets.expired(now));
        }
        std::thread::sleep(TICK.saturating_sub(tick.elapsed()));
    }

    let elapsed = started.elapsed();
    let peak_rss_kib = status_kib(pid, "VmHWM")?;
    let cpu = cpu_seconds(pid, ticks_per_second)?;
    let metrics = curl(&format!("http://{listen}/metrics"))?;
    let ready = curl(&format!("http://{listen}/readyz"))?;
    let (status, stop_time) = daemon.terminate()?;
    ensure!(
        status.success(),
        "the daemon exited with {status} after SIGTERM; see its log"
    );
    let token_requests = emulator_count(&mut emulator, &mut emulator_stdout)?;

    let (first_pass_time, first_pass_cpu) = samples
        .first_pass
        .context("the first pass never wrote every target; see the daemon log")?;
    Ok(Report {
        jobs: options.jobs,
        apps: options.apps,
        elapsed,
        peak_rss_kib,
        cpu,
        first_pass_time,
        steady_cpu: cpu.since(first_pass_cpu),
        token_requests,
        metrics_token_requests: sum_series(&metrics, "secret_sync_token_requests_total", "success"),
        refreshes: targets.refreshes,
        most_expired: samples.most_expired,
        ready: ready.trim() == "ready",
        stop_time,
    })
}

/// The emulator with `apps` apps and 60 s tokens; its stdout (for the count at exit) and base URL.
fn start_emulator(
    options: &Options,
    bin: &Path,
    work: &Path,
) -> Result<(Process, BufReader<ChildStdout>, String)> {
    let server = bin.join("testkit-server");
    let mut command = Command::new(&server);
    command
        .args(["--tenant", TENANT, "--client-id", &client_id(0)])
        .args([
            "--token-lifetime-secs",
            &TOKEN_LIFETIME.as_secs().to_string(),
        ])
        .env("TESTKIT_CLIENT_SECRET", CLIENT_SECRET)
        .stdout(Stdio::piped())
        .stderr(fs::File::create(work.join("entra.log"))?);
    for app in 1..options.apps {
        command.args(["--extra-client-id", &client_id(app)]);
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("could not start {}", server.display()))?;
    let mut stdout = BufReader::new(child.stdout.take().context("the emulator's stdout")?);
    let process = Process {
        name: "testkit-server",
        child,
    };
    let mut line = String::new();
    stdout
        .read_line(&mut line)
        .context("reading the emulator's JSON line")?;
    let info: Value = serde_json::from_str(line.trim())
        .with_context(|| format!("the emulator printed {line:?}, not its JSON line"))?;
    let base = info["base_url"]
        .as_str()
        .context("the emulator's JSON line has no base_url")?
        .to_owned();
    Ok((process, stdout, base))
}

/// Stops the emulator and reads the token request count it prints at exit.
fn emulator_count(emulator: &mut Process, stdout: &mut BufReader<ChildStdout>) -> Result<u64> {
    emulator.terminate()?;
    let mut line = String::new();
    stdout
        .read_line(&mut line)
        .context("reading the emulator's count line")?;
    let count: Value = serde_json::from_str(line.trim())
        .with_context(|| format!("the emulator printed {line:?} at exit, not its count"))?;
    count["token_requests"]
        .as_u64()
        .with_context(|| format!("no token_requests in {count}"))
}

/// App `n`'s client id: a GUID that says what it is.
fn client_id(n: usize) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

fn job_name(n: usize) -> String {
    format!("job-{n:05}")
}

/// The config: `jobs` jobs, job `n` using app `n % apps`, each with one file target.
fn config_text(options: &Options, authority: &str, listen: &str, out: &Path) -> String {
    let mut text = format!(
        "# Written by `cargo xtask bench-daemon`: {} jobs over {} apps, file targets.\n\
         [settings]\nrefresh_before = \"{}s\"\nauthority = \"{authority}\"\nlisten = \"{listen}\"\n\n\
         [backends.out]\nkind = \"file\"\ndir = \"{}\"\n",
        options.jobs,
        options.apps,
        REFRESH_BEFORE.as_secs(),
        out.display(),
    );
    for n in 0..options.jobs {
        text.push_str(&format!(
            "\n[jobs.{job}]\ntenant_id = \"{TENANT}\"\nclient_id = \"{client}\"\n\
             client_secret = {{ env = \"BENCH_CLIENT_SECRET\" }}\nscope = \"{SCOPE}\"\n\
             targets = [{{ to = \"out\", name = \"{job}\"{format} }}]\n",
            job = job_name(n),
            client = client_id(n % options.apps),
            format = if options.json {
                ", format = \"json\""
            } else {
                ""
            },
        ));
    }
    text
}

/// Polls `/healthz` until it answers, failing early if the daemon exits.
fn wait_healthy(daemon: &mut Process, listen: &str) -> Result<()> {
    let started = Instant::now();
    let url = format!("http://{listen}/healthz");
    loop {
        if curl(&url).is_ok_and(|body| body.trim() == "ok") {
            return Ok(());
        }
        if let Some(status) = daemon.child.try_wait()? {
            bail!("the daemon exited ({status}) before {url} answered; see its log");
        }
        ensure!(
            started.elapsed() < START_TIMEOUT,
            "{url} did not answer within {START_TIMEOUT:?}; see the daemon log"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The body of a GET, whatever the status.
fn curl(url: &str) -> Result<String> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "30", url])
        .output()
        .context("could not run curl")?;
    ensure!(out.status.success(), "curl {url} failed ({})", out.status);
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The sum of `name`'s samples whose outcome is `outcome`, in Prometheus text.
fn sum_series(text: &str, name: &str, outcome: &str) -> u64 {
    let wanted = format!("outcome=\"{outcome}\"");
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")) && line.contains(&wanted))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

/// What the sampler keeps between ticks.
#[derive(Debug, Default)]
struct Samples {
    rss_kib: u64,
    /// When every target had been written once, and the CPU seconds used by then.
    first_pass: Option<(Duration, Cpu)>,
    most_expired: usize,
}

/// One target's last seen write.
#[derive(Debug, Clone, Copy)]
struct Seen {
    modified: SystemTime,
    expires_on: i64,
}

/// A write of a target that already held a token.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Refresh {
    /// Unix seconds (fractional) of the write.
    written: f64,
    /// The expiry of the token it replaced.
    previous_expiry: i64,
}

impl Refresh {
    fn on_time(self) -> bool {
        self.written < self.previous_expiry as f64
    }

    /// Seconds after the refresh point (the old expiry minus `refresh_before`).
    fn lag(self) -> f64 {
        self.written - (self.previous_expiry as f64 - REFRESH_BEFORE.as_secs_f64())
    }
}

/// The files holding the targets' expiries, as last seen.
struct Targets {
    files: Vec<PathBuf>,
    seen: HashMap<usize, Seen>,
    refreshes: Vec<Refresh>,
}

impl Targets {
    fn new(out: &Path, options: &Options) -> Self {
        let suffix = if options.json { "" } else { ".meta.json" };
        Targets {
            files: (0..options.jobs)
                .map(|n| out.join(format!("{}{suffix}", job_name(n))))
                .collect(),
            seen: HashMap::with_capacity(options.jobs),
            refreshes: Vec::new(),
        }
    }

    /// Stat every file; read the expiry of the ones written since the last scan.
    fn scan(&mut self) -> Result<()> {
        for (n, path) in self.files.iter().enumerate() {
            let modified = match fs::metadata(path) {
                Ok(meta) => meta.modified()?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("stat {}", path.display())),
            };
            if self.seen.get(&n).is_some_and(|s| s.modified == modified) {
                continue;
            }
            let text =
                fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let expires_on = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|doc| doc["expires_on"].as_i64())
                .with_context(|| format!("{} has no expires_on", path.display()))?;
            if let Some(previous) = self.seen.get(&n) {
                self.refreshes.push(Refresh {
                    written: unix(modified),
                    previous_expiry: previous.expires_on,
                });
            }
            self.seen.insert(
                n,
                Seen {
                    modified,
                    expires_on,
                },
            );
        }
        Ok(())
    }

    fn written(&self) -> usize {
        self.seen.len()
    }

    /// How many targets hold a token that has expired at `now`.
    fn expired(&self, now: SystemTime) -> usize {
        let now = unix(now);
        self.seen
            .values()
            .filter(|s| (s.expires_on as f64) <= now)
            .count()
    }
}

fn unix(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A `kB` field of `/proc/PID/status`.
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// CPU time used, in seconds: in the program (user) and in the kernel on its behalf (system:
/// for file targets mostly the fsyncs and renames of atomic writes).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Cpu {
    user: f64,
    system: f64,
}

impl Cpu {
    fn total(self) -> f64 {
        self.user + self.system
    }

    fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            user: self.user - earlier.user,
            system: self.system - earlier.system,
        }
    }
}

/// utime and stime of `/proc/PID/stat`.
fn cpu_seconds(pid: u32, ticks_per_second: f64) -> Result<Cpu> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let (utime, stime) = cpu_ticks(&stat)
        .with_context(|| format!("/proc/{pid}/stat has no utime/stime: {stat:?}"))?;
    Ok(Cpu {
        user: utime as f64 / ticks_per_second,
        system: stime as f64 / ticks_per_second,
    })
}

/// utime and stime from a `/proc/PID/stat` line: fields 14 and 15, counted after the `)` that
/// ends the command name (which may hold spaces).
fn cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field N is at index N - 3.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some((utime, stime))
}

fn clock_ticks() -> Result<f64> {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("could not run getconf CLK_TCK")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("getconf CLK_TCK did not print a number")
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The figures of one run.
#[derive(Debug)]
struct Report {
    jobs: usize,
    apps: usize,
    elapsed: Duration,
    peak_rss_kib: u64,
    cpu: Cpu,
    first_pass_time: Duration,
    steady_cpu: Cpu,
    token_requests: u64,
    metrics_token_requests: u64,
    refreshes: Vec<Refresh>,
    most_expired: usize,
    ready: bool,
    stop_time: Duration,
}

impl Report {
    fn peak_rss_mib(&self) -> f64 {
        self.peak_rss_kib as f64 / 1024.0
    }

    fn cpu_percent(&self) -> f64 {
        100.0 * self.cpu.total() / self.elapsed.as_secs_f64()
    }

    fn steady_cpu_percent(&self) -> f64 {
        let steady = self.elapsed.saturating_sub(self.first_pass_time);
        100.0 * self.steady_cpu.total() / steady.as_secs_f64().max(1.0)
    }

    fn on_time(&self) -> usize {
        self.refreshes.iter().filter(|r| r.on_time()).count()
    }

    fn on_time_percent(&self) -> f64 {
        if self.refreshes.is_empty() {
            return 0.0;
        }
        100.0 * self.on_time() as f64 / self.refreshes.len() as f64
    }

    /// Lag after the refresh point at the given quantile (nearest rank), seconds.
    fn lag(&self, quantile: f64) -> f64 {
        let mut lags: Vec<f64> = self.refreshes.iter().map(|r| r.lag()).collect();
        if lags.is_empty() {
            return 0.0;
        }
        lags.sort_by(f64::total_cmp);
        let rank = ((quantile * lags.len() as f64).ceil() as usize).clamp(1, lags.len());
        lags[rank - 1]
    }

    /// The fewest requests that keep every credential set fresh for the run: one at start,
    /// then one per `lifetime - refresh_before`.
    fn ideal_requests(&self) -> u64 {
        let cycle = (TOKEN_LIFETIME - REFRESH_BEFORE).as_secs_f64();
        let per_set = 1 + (self.elapsed.as_secs_f64() / cycle).floor() as u64;
        self.apps as u64 * per_set
    }

    fn goals(&self) -> [(&'static str, bool); 3] {
        [
            (
                "100% of refreshes on time",
                !self.refreshes.is_empty() && self.on_time() == self.refreshes.len(),
            ),
            ("peak RSS under 100 MB", self.peak_rss_mib() < RSS_GOAL_MIB),
            (
                "CPU under 10% of one core",
                self.cpu_percent() < CPU_GOAL_PERCENT,
            ),
        ]
    }

    fn table(&self) -> String {
        let mut rows = vec![
            (
                "jobs / apps (credential sets)",
                format!("{} / {}", self.jobs, self.apps),
            ),
            ("run time", format!("{:.0} s", self.elapsed.as_secs_f64())),
            (
                "peak RSS (VmHWM)",
                format!("{:.1} MiB", self.peak_rss_mib()),
            ),
            (
                "CPU, whole run",
                format!(
                    "{:.1} s ({:.1}% of one core; user {:.1} s, system {:.1} s)",
                    self.cpu.total(),
                    self.cpu_percent(),
                    self.cpu.user,
                    self.cpu.system
                ),
            ),
            (
                "CPU, after the first pass",
                format!(
                    "{:.1} s ({:.1}% of one core; user {:.1} s, system {:.1} s)",
                    self.steady_cpu.total(),
                    self.steady_cpu_percent(),
                    self.steady_cpu.user,
                    self.steady_cpu.system
                ),
            ),
            (
                "first pass (every target written)",
                format!("{:.1} s", self.first_pass_time.as_secs_f64()),
            ),
            (
                "token requests (emulator / metrics)",
                format!("{} / {}", self.token_requests, self.metrics_token_requests),
            ),
            (
                "token requests, fewest possible",
                format!("{}", self.ideal_requests()),
            ),
            (
                "refreshes on time",
                format!(
                    "{} of {} ({:.2}%)",
                    self.on_time(),
                    self.refreshes.len(),
                    self.on_time_percent()
                ),
            ),
            (
                "lag after refresh point p50 / p99 / max",
                format!(
                    "{:.1} / {:.1} / {:.1} s",
                    self.lag(0.5),
                    self.lag(0.99),
                    self.lag(1.0)
                ),
            ),
            (
                "most targets holding an expired token",
                self.most_expired.to_string(),
            ),
            (
                "/readyz at the end",
                if self.ready { "ready" } else { "NOT ready" }.to_owned(),
            ),
            (
                "exit after SIGTERM",
                format!("0 in {:.2} s", self.stop_time.as_secs_f64()),
            ),
        ];
        for (goal, met) in self.goals() {
            rows.push((goal, if met { "met" } else { "NOT met" }.to_owned()));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(k, v)| format!("{k:<width$}  {v}\n"))
            .collect()
    }

    fn json(&self, options: &Options, profile: &str) -> Result<Value> {
        Ok(json!({
            "date": command_text("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])?,
            "machine": machine()?,
            "build_profile": profile,
            "jobs": self.jobs,
            "credential_sets": self.apps,
            "target_format": if options.json { "json" } else { "raw (token + sidecar)" },
            "rust_log": options.rust_log,
            "token_lifetime_s": TOKEN_LIFETIME.as_secs(),
            "refresh_before_s": REFRESH_BEFORE.as_secs(),
            "requested_duration_s": options.duration.as_secs(),
            "run_time_s": round2(self.elapsed.as_secs_f64()),
            "peak_rss_mib": round2(self.peak_rss_mib()),
            "cpu_seconds": round2(self.cpu.total()),
            "cpu_user_seconds": round2(self.cpu.user),
            "cpu_system_seconds": round2(self.cpu.system),
            "cpu_percent_of_one_core": round2(self.cpu_percent()),
            "first_pass_s": round2(self.first_pass_time.as_secs_f64()),
            "cpu_seconds_after_first_pass": round2(self.steady_cpu.total()),
            "cpu_user_seconds_after_first_pass": round2(self.steady_cpu.user),
            "cpu_system_seconds_after_first_pass": round2(self.steady_cpu.system),
            "cpu_percent_after_first_pass": round2(self.steady_cpu_percent()),
            "token_requests": self.token_requests,
            "token_requests_in_metrics": self.metrics_token_requests,
            "token_requests_fewest_possible": self.ideal_requests(),
            "refreshes": self.refreshes.len(),
            "refreshes_on_time": self.on_time(),
            "refreshes_on_time_percent": round2(self.on_time_percent()),
            "lag_after_refresh_point_s": {
                "p50": round2(self.lag(0.5)),
                "p99": round2(self.lag(0.99)),
                "max": round2(self.lag(1.0)),
            },
            "most_targets_expired_at_once": self.most_expired,
            "ready_at_end": self.ready,
            "sigterm_exit_s": round2(self.stop_time.as_secs_f64()),
            "goals": self.goals().iter().map(|(goal, met)| ((*goal).to_owned(), json!(met))).collect::<serde_json::Map<_, _>>(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options_have_the_issue_defaults_and_refuse_nonsense() {
        let defaults = parse_args(&[]).unwrap();
        assert_eq!(
            defaults,
            Options {
                jobs: 10_000,
                apps: 100,
                duration: Duration::from_secs(180),
                json: false,
                rust_log: None,
                release: true
            }
        );
        let o = parse_args(&args(&[
            "--jobs",
            "50",
            "--apps",
            "5",
            "--duration",
            "90s",
            "--format",
            "json",
            "--rust-log",
            "info",
            "--dev",
        ]))
        .unwrap();
        assert_eq!(
            (o.jobs, o.apps, o.duration, o.json, o.release),
            (50, 5, Duration::from_secs(90), true, false)
        );
        assert_eq!(o.rust_log.as_deref(), Some("info"));
        assert_eq!(
            parse_args(&args(&["--duration", "4m"])).unwrap().duration,
            Duration::from_secs(240)
        );
        let err = |a: &[&str]| parse_args(&args(a)).unwrap_err().to_string();
        assert!(err(&["--jobs", "0"]).contains("above 0"));
        assert!(err(&["--duration", "soon"]).contains("--duration soon"));
        assert!(err(&["--jobs", "3", "--apps", "4"]).contains("every app needs a job"));
        assert!(err(&["--apps"]).contains("--apps needs a number"));
        assert!(err(&["--fast"]).contains("unknown option `--fast`"));
        assert!(err(&["--format", "yaml"]).contains("give raw or json"));
    }

    #[test]
    fn the_config_spreads_jobs_over_the_apps() {
        let options = Options {
            jobs: 4,
            apps: 2,
            ..parse_args(&[]).unwrap()
        };
        let text = config_text(
            &options,
            "http://127.0.0.1:1",
            "127.0.0.1:2",
            Path::new("/o"),
        );
        assert_eq!(text.matches("[jobs.").count(), 4, "{text}");
        assert_eq!(text.matches(&client_id(0)).count(), 2, "{text}");
        assert_eq!(text.matches(&client_id(1)).count(), 2, "{text}");
        assert!(text.contains("refresh_before = \"20s\""), "{text}");
        assert!(text.contains("listen = \"127.0.0.1:2\""), "{text}");
        assert!(
            text.contains("targets = [{ to = \"out\", name = \"job-00003\" }]"),
            "{text}"
        );
        assert!(
            !text.contains(CLIENT_SECRET),
            "the secret comes from the environment"
        );
        assert!(!text.contains("format ="), "raw by default: {text}");
        let json = Options {
            json: true,
            ..options
        };
        let text = config_text(&json, "http://127.0.0.1:1", "127.0.0.1:2", Path::new("/o"));
        assert_eq!(text.matches("format = \"json\" }]").count(), 4, "{text}");
    }

    #[test]
    fn cpu_ticks_skip_a_command_name_with_spaces() {
        let stat = "4242 (secret sync) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(cpu_ticks(stat), Some((250, 75)));
        assert_eq!(cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn a_refresh_is_on_time_before_the_old_expiry_and_its_lag_counts_from_the_refresh_point() {
        let early = Refresh {
            written: 1_000.5,
            previous_expiry: 1_020,
        };
        assert!(early.on_time());
        assert_eq!(early.lag(), 0.5);
        let late = Refresh {
            written: 1_021.0,
            previous_expiry: 1_020,
        };
        assert!(!late.on_time());
        assert_eq!(late.lag(), 21.0);
    }

    #[test]
    fn metrics_are_summed_by_outcome() {
        let text = "# TYPE secret_sync_token_requests_total counter\n\
            secret_sync_token_requests_total{job=\"a\",outcome=\"success\"} 3\n\
            secret_sync_token_requests_total{job=\"b\",outcome=\"success\"} 4\n\
            secret_sync_token_requests_total{job=\"b\",outcome=\"failure\"} 9\n\
            secret_sync_job_runs_total{job=\"b\",outcome=\"success\"} 100\n";
        assert_eq!(
            sum_series(text, "secret_sync_token_requests_total", "success"),
            7
        );
    }

    #[test]
    fn the_report_judges_the_goals() {
        let report = Report {
            jobs: 10,
            apps: 2,
            elapsed: Duration::from_secs(100),
            peak_rss_kib: 50 * 1024,
            cpu: Cpu {
                user: 1.0,
                system: 4.0,
            },
            first_pass_time: Duration::from_secs(10),
            steady_cpu: Cpu {
                user: 0.5,
                system: 4.0,
            },
            token_requests: 8,
            metrics_token_requests: 8,
            refreshes: vec![
                Refresh {
                    written: 10.0,
                    previous_expiry: 25,
                },
                Refresh {
                    written: 12.0,
                    previous_expiry: 25,
                },
            ],
            most_expired: 0,
            ready: true,
            stop_time: Duration::from_millis(50),
        };
        assert_eq!(report.cpu_percent(), 5.0);
        assert_eq!(report.steady_cpu_percent(), 5.0);
        // one request at start, then one per 40 s: 1 + 2 per app
        assert_eq!(report.ideal_requests(), 6);
        assert_eq!((report.lag(0.5), report.lag(1.0)), (5.0, 7.0));
        assert!(
            report.goals().iter().all(|(_, met)| *met),
            "{:?}",
            report.goals()
        );
        let table = report.table();
        assert!(
            table.contains("2 of 2 (100.00%)") && !table.contains("NOT met"),
            "{table}"
        );
        assert!(table.contains("user 1.0 s, system 4.0 s"), "{table}");
    }
}
