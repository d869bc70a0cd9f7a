//! `cargo xtask bench daemon` (also `cargo xtask bench-daemon`): the daemon at scale, as issue 5
//! asks, measured rather than asserted in a timed test. `cargo xtask bench` runs it twice, with the
//! targets on tmpfs and on disk (see `bench::all`).
//!
//! It starts the testkit Entra ID emulator (`testkit-server`, plain HTTP on 127.0.0.1) with
//! `--apps` registered apps (default 100) issuing tokens of `--token-lifetime` (default 60 s),
//! writes a config with `--jobs` jobs (default 10,000) spread over those apps, each with one file
//! target in a temporary directory created in `--dir` and `refresh_before` of
//! `--refresh-before` (default 20 s), and runs `secret-sync daemon` on it for `--duration`
//! (default 3 minutes). `--scale` is issue 15's run instead: 100,000 jobs over 1,000 apps,
//! tokens of 10 minutes, `refresh_before` 3 minutes, 10 minutes, judged by that issue's goals.
//!
//! Before the timed run: one short daemon run per `--memory-steps` count (default 1; start, first
//! pass, 2 s, SIGTERM) for its peak RSS and its RSS after the first pass, the first being the
//! baseline of the per-job cost; with `--sigterm-probe` (on with `--scale`) one more start on the
//! run's config, SIGTERM once a quarter of its targets are written, timing the exit. During the
//! timed run a thread asks `/healthz` every 200 ms until the first pass ends, timing each answer. Targets are `--format raw` (the default: the bare token,
//! its expiry in a sidecar `NAME.meta.json`, so two files per write) or `--format json` (one file).
//! The filesystem of the targets' directory (the `/proc/mounts` entry with the longest mount point
//! that holds its canonical path) is recorded: fsync and rename cost differ a lot between tmpfs
//! and a disk.
//!
//! Meanwhile, once a second, it reads the daemon's `/proc/PID/status` and `/proc/PID/stat`, and
//! stats every file that records a target's expiry (the sidecar, or the JSON document). A file
//! whose modification time changed is a write, and only its `expires_on` (whole Unix seconds) is
//! read (the token is never kept or printed); a write of a target that already held a token with
//! another expiry is a refresh. As issue 5 defines it, a refresh is on time when it happened
//! before the old token's expiry minus `refresh_before`: here, when the new file's modification
//! time (nanoseconds) is at or before that refresh point. Its lead is how long before the refresh
//! point it came (negative: late). The daemon may refresh ahead of the refresh point, so leads are
//! expected to be positive. Each second it also counts the targets holding an expired token and
//! those holding one within `refresh_before` of its expiry (past its refresh point).
//!
//! Reported: peak RSS (VmHWM), RSS when `/healthz` first answers (config loaded, jobs built),
//! after the first pass and after it (steady: median and max), bytes per job above the baseline,
//! CPU seconds (utime + stime) and their average share of one core,
//! over the whole run and after the first pass; token requests (the emulator's count, printed
//! when it stops) against the distinct credential sets; refreshes on time, late, and their lead;
//! the most targets ever seen expired and past their refresh point. The table goes to stdout, the
//! figures with the machine and the date to `target/bench/daemon.json` (or `--out`);
//! docs/performance.md quotes them.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::bench::{command_text, machine, round2};
use crate::cargo;

pub(crate) const USAGE: &str = "\
usage: cargo xtask bench daemon [--jobs N] [--apps N] [--duration S] [--token-lifetime S]
                                [--refresh-before S] [--format F] [--dir DIR] [--out FILE]
                                [--rust-log L] [--memory-steps N,N] [--sigterm-probe] [--dev]
       cargo xtask bench daemon --scale [OPTIONS]
       (cargo xtask bench-daemon is the same)
Runs secret-sync daemon on a generated config against the testkit Entra ID emulator and prints
memory (peak and steady RSS, per job), CPU, token requests, on-time refreshes, /healthz answer
times during the first pass and the exit time after SIGTERM.
  --jobs N        jobs in the generated config, one file target each (default 10000)
  --apps N        distinct apps (credential sets) the jobs share (default 100)
  --duration S    how long the daemon runs, in seconds, or with a suffix: 90s, 3m (default 3m)
  --token-lifetime S  the lifetime of the emulator's tokens (default 60s)
  --refresh-before S  the config's refresh_before (default 20s)
  --format F      file target format: raw (token + sidecar, the default) or json (one file)
  --dir DIR       an existing directory in which the targets' temporary directory is created
                  (removed at the end); e.g. /dev/shm for tmpfs. Default: the system temp dir,
                  or target/bench/ when the temp dir is on tmpfs or ramfs (so: on disk); with
                  --scale /dev/shm when it is tmpfs. Its filesystem type and mount options are
                  printed and recorded
  --out FILE      where the JSON figures go (default target/bench/daemon.json, with --scale
                  target/bench/daemon-scale.json); the config and the daemon's log go to
                  target/bench/NAME/, NAME being FILE's name without .json
  --rust-log L    the daemon's RUST_LOG, e.g. info for one log line per job pass
                  (default: unset, so the binary's default, warn)
  --memory-steps N,N  before the run, one short daemon run per count (start, first pass, 2 s,
                  SIGTERM) for its peak and steady RSS; the per-job cost is counted from the
                  first (default 1; with --scale 1,10000)
  --sigterm-probe before the run, start the daemon once more on the same config and send
                  SIGTERM in the middle of its first pass (default: only with --scale)
  --scale         issue 15's run: 100000 jobs, 1000 apps, tokens of 10m, refresh_before 3m,
                  10 minutes, memory steps 1,10000, the SIGTERM probe, and its goals (peak RSS
                  under 100 MiB, first pass under 10 s, CPU after it under 5% of one core,
                  /healthz within 1 s and exit within 5 s of SIGTERM during the first pass);
                  the other options given after it override its values
  --dev           use the debug build instead of the release build";

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// Known only to the emulator started here; it protects nothing.
const CLIENT_SECRET: &str = "bench-daemon-client-secret";
const SCOPE: &str = "https://graph.microsoft.com/.default";
/// The token lifetime the emulator grants, and the config's `refresh_before`, by default.
const TOKEN_LIFETIME: Duration = Duration::from_secs(60);
const REFRESH_BEFORE: Duration = Duration::from_secs(20);
/// The daemon's longest lead ahead of the refresh point (its `scheduler::LEAD_MAX`).
const LEAD_MAX: Duration = Duration::from_secs(5 * 60);
/// Time between samples.
const TICK: Duration = Duration::from_secs(1);
/// How long the daemon gets to answer `/healthz`, and to exit after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(120);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// The issue's goals.
const RSS_GOAL_MIB: f64 = 100.0;
const CPU_GOAL_PERCENT: f64 = 10.0;
/// Issue 15's goals for the `--scale` run.
const SCALE_FIRST_PASS_GOAL: Duration = Duration::from_secs(10);
const SCALE_STEADY_CPU_GOAL_PERCENT: f64 = 5.0;
const HEALTHZ_GOAL: Duration = Duration::from_secs(1);
const SIGTERM_GOAL: Duration = Duration::from_secs(5);
/// How often `/healthz` is asked during the first pass, and how long an answer may take.
const HEALTHZ_EVERY: Duration = Duration::from_millis(200);
const HEALTHZ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    jobs: usize,
    apps: usize,
    duration: Duration,
    /// The emulator's token lifetime and the config's `refresh_before`.
    token_lifetime: Duration,
    refresh_before: Duration,
    /// Job counts of the short memory runs made first (the first is the baseline).
    memory_steps: Vec<usize>,
    /// Whether to send SIGTERM to a daemon in its first pass, before the run.
    sigterm_probe: bool,
    /// Issue 15's run and goals (`--scale`).
    scale: bool,
    /// `format = "json"` targets instead of raw ones.
    json: bool,
    /// The daemon's `RUST_LOG`, if set.
    rust_log: Option<String>,
    release: bool,
    /// Where the targets' temporary directory is created; `None`: [`default_dir`].
    pub(crate) dir: Option<PathBuf>,
    /// The JSON file; `None`: `target/bench/daemon.json`.
    pub(crate) out: Option<PathBuf>,
}

pub(crate) fn parse_args(args: &[String]) -> Result<Options> {
    let scale = args.iter().any(|arg| arg == "--scale");
    let mut options = Options {
        jobs: 10_000,
        apps: 100,
        duration: Duration::from_secs(180),
        token_lifetime: TOKEN_LIFETIME,
        refresh_before: REFRESH_BEFORE,
        memory_steps: vec![1],
        sigterm_probe: false,
        scale,
        json: false,
        rust_log: None,
        release: true,
        dir: None,
        out: None,
    };
    if scale {
        options.jobs = 100_000;
        options.apps = 1_000;
        options.duration = Duration::from_secs(600);
        options.token_lifetime = Duration::from_secs(600);
        options.refresh_before = Duration::from_secs(180);
        options.memory_steps = vec![1, 10_000];
        options.sigterm_probe = true;
        options.dir = tmpfs_dir();
    }
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |what: &str| {
            args.next()
                .with_context(|| format!("{arg} needs {what}\n{USAGE}"))
        };
        match arg.as_str() {
            "--jobs" => options.jobs = positive(arg, value("a number")?)?,
            "--apps" => options.apps = positive(arg, value("a number")?)?,
            "--duration" => options.duration = duration(arg, value("a duration")?)?,
            "--token-lifetime" => options.token_lifetime = duration(arg, value("a duration")?)?,
            "--refresh-before" => options.refresh_before = duration(arg, value("a duration")?)?,
            "--memory-steps" => {
                options.memory_steps = value("job counts")?
                    .split(',')
                    .map(|n| positive(arg, n))
                    .collect::<Result<_>>()?;
            }
            "--sigterm-probe" => options.sigterm_probe = true,
            "--scale" => {}
            "--format" => {
                options.json = match value("raw or json")?.as_str() {
                    "raw" => false,
                    "json" => true,
                    other => bail!("--format {other}: give raw or json"),
                }
            }
            "--rust-log" => options.rust_log = Some(value("a level")?.clone()),
            "--dir" => options.dir = Some(PathBuf::from(value("a directory")?)),
            "--out" => {
                let file = PathBuf::from(value("a file")?);
                ensure!(
                    file.file_stem().is_some_and(|stem| !stem.is_empty()),
                    "--out {}: give a file name, e.g. target/bench/mine.json",
                    file.display()
                );
                options.out = Some(file);
            }
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
    ensure!(
        options.refresh_before + lead(options.refresh_before) < options.token_lifetime,
        "--refresh-before {:?} with the daemon's lead (half of it, at most 5 minutes) is not \
         below --token-lifetime {:?}: every pass would rewrite every target",
        options.refresh_before,
        options.token_lifetime
    );
    Ok(options)
}

fn positive(flag: &str, text: &str) -> Result<usize> {
    text.parse()
        .ok()
        .filter(|n| *n > 0)
        .with_context(|| format!("{flag} {text}: give a whole number above 0"))
}

/// The daemon's lead ahead of the refresh point: half of `refresh_before`, at most 5 minutes.
fn lead(refresh_before: Duration) -> Duration {
    (refresh_before / 2).min(LEAD_MAX)
}

/// `180`, `180s` or `3m`.
fn duration(flag: &str, text: &str) -> Result<Duration> {
    let (number, unit) = match text.strip_suffix('m') {
        Some(minutes) => (minutes, 60),
        None => (text.strip_suffix('s').unwrap_or(text), 1),
    };
    number
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .map(|n| Duration::from_secs(n * unit))
        .with_context(|| format!("{flag} {text}: give seconds (90, 90s) or minutes (3m)"))
}

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    run_with(root, &parse_args(args)?)
}

/// One daemon bench with these options: build, measure, print the table, write the JSON.
pub(crate) fn run_with(root: &Path, options: &Options) -> Result<()> {
    if let Some(dir) = &options.dir {
        ensure!(
            dir.is_dir(),
            "--dir {}: not an existing directory",
            dir.display()
        );
    }
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

    let bench = root.join("target").join("bench");
    let json_path = options.out.clone().unwrap_or_else(|| {
        bench.join(if options.scale {
            "daemon-scale.json"
        } else {
            "daemon.json"
        })
    });
    let name = json_path
        .file_stem()
        .map_or_else(|| "daemon".into(), |stem| stem.to_string_lossy());
    let work = bench.join(name.as_ref());
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    let dir = match &options.dir {
        // The config lives elsewhere and the daemon resolves the backend's dir from it, so
        // the target directory must be absolute.
        Some(dir) => {
            fs::canonicalize(dir).with_context(|| format!("resolving --dir {}", dir.display()))?
        }
        None => default_dir(root, &mounts)?,
    };
    let targets = dir.join(format!("secret-sync-bench-daemon-{}", std::process::id()));
    for dir in [&work, &targets] {
        let _ = fs::remove_dir_all(dir);
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let place = fs::canonicalize(&targets)
        .with_context(|| format!("resolving {}", targets.display()))
        .and_then(|canonical| {
            let mount = mount_of(&mounts, &canonical)
                .with_context(|| format!("no /proc/mounts entry holds {}", canonical.display()))?;
            Ok(Place {
                dir: canonical.parent().unwrap_or(&canonical).to_path_buf(),
                mount,
            })
        });
    let result = place.and_then(|place| {
        eprintln!(
            "bench-daemon: targets in {} ({} at {}, {})",
            targets.display(),
            place.mount.fstype,
            place.mount.point.display(),
            place.mount.options
        );
        measure(options, &bin, &work, &targets, place)
    });
    let _ = fs::remove_dir_all(&targets);
    let report = result?;

    print!("{}", report.table());
    let json = report.json(options, profile)?;
    if let Some(parent) = json_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(&json_path, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("figures written to {}", json_path.display());
    Ok(())
}

/// The system temp dir, unless it is on tmpfs or ramfs: then `target/bench/`, so that a bare
/// `bench daemon` measures a disk.
fn default_dir(root: &Path, mounts: &str) -> Result<PathBuf> {
    let temp = std::env::temp_dir();
    let in_memory = fs::canonicalize(&temp)
        .ok()
        .and_then(|canonical| mount_of(mounts, &canonical))
        .is_some_and(|mount| mount.in_memory());
    if !in_memory {
        return Ok(temp);
    }
    let bench = root.join("target").join("bench");
    fs::create_dir_all(&bench).with_context(|| format!("creating {}", bench.display()))?;
    eprintln!(
        "bench-daemon: {} is in memory; the targets go under {} instead",
        temp.display(),
        bench.display()
    );
    Ok(bench)
}

/// `/dev/shm` when it is a tmpfs mount, for the in-memory run of `cargo xtask bench`.
pub(crate) fn tmpfs_dir() -> Option<PathBuf> {
    let shm = Path::new("/dev/shm");
    let canonical = fs::canonicalize(shm).ok().filter(|p| p.is_dir())?;
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    (mount_of(&mounts, &canonical)?.fstype == "tmpfs").then(|| shm.to_path_buf())
}

/// The filesystem type of `dir`'s mount, if /proc/mounts says.
pub(crate) fn filesystem_of(dir: &Path) -> Option<String> {
    let canonical = fs::canonicalize(dir).ok()?;
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    Some(mount_of(&mounts, &canonical)?.fstype)
}

/// One line of `/proc/mounts`: where, what type, with which options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    point: PathBuf,
    fstype: String,
    options: String,
}

impl Mount {
    pub(crate) fn in_memory(&self) -> bool {
        matches!(self.fstype.as_str(), "tmpfs" | "ramfs")
    }
}

/// The mount holding `path` (canonical): the entry with the longest mount point that is a
/// prefix of it, by whole components; of equal ones the last listed (mounted over the others).
fn mount_of(mounts: &str, path: &Path) -> Option<Mount> {
    let mut best: Option<Mount> = None;
    for line in mounts.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_device), Some(point), Some(fstype), Some(options)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let point = PathBuf::from(unescape_mount(point));
        if !path.starts_with(&point) {
            continue;
        }
        let depth = point.components().count();
        if best
            .as_ref()
            .is_none_or(|b| depth >= b.point.components().count())
        {
            best = Some(Mount {
                point,
                fstype: fstype.to_owned(),
                options: options.to_owned(),
            });
        }
    }
    best
}

/// /proc/mounts writes space, tab, newline and backslash in paths as octal escapes (`\040`).
fn unescape_mount(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            let digits = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(digits, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where the targets were: the directory they were created in and its mount.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Place {
    dir: PathBuf,
    mount: Mount,
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

/// The short runs first (memory steps, the SIGTERM probe), then the timed run.
fn measure(options: &Options, bin: &Path, work: &Path, out: &Path, place: Place) -> Result<Report> {
    let mut steps = Vec::new();
    for &jobs in &options.memory_steps {
        let step = memory_step(options, bin, work, out, jobs)?;
        eprintln!(
            "bench-daemon: memory step {jobs} jobs: VmHWM {:.1} MiB (at listen {:.1}), VmRSS after \
             the first pass {:.1} MiB, first pass {:.1} s",
            mib(step.hwm_kib),
            mib(step.listen_hwm_kib),
            mib(step.rss_kib),
            step.first_pass.as_secs_f64()
        );
        steps.push(step);
    }
    let probe = if options.sigterm_probe {
        let probe = sigterm_probe(options, bin, work, out)?;
        eprintln!(
            "bench-daemon: SIGTERM after {} of {} targets of the first pass: exit 0 in {:.2} s",
            probe.written_at_signal,
            options.jobs,
            probe.exit_time.as_secs_f64()
        );
        Some(probe)
    } else {
        None
    };
    let mut report = timed_run(options, bin, work, out, place)?;
    report.steps = steps;
    report.probe = probe;
    Ok(report)
}

/// A generated config for `options` in `work`, its emulator and the daemon on it, the targets
/// going to `out`; the daemon's output goes to `work/daemon.log`.
struct Daemon {
    emulator: Process,
    emulator_stdout: BufReader<ChildStdout>,
    daemon: Process,
    pid: u32,
    listen: String,
    started: Instant,
}

fn start(options: &Options, bin: &Path, work: &Path, out: &Path) -> Result<Daemon> {
    for dir in [work, out] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let (emulator, emulator_stdout, authority) = start_emulator(options, bin, work)?;
    let listen = format!("127.0.0.1:{}", free_port()?);
    let config = work.join("secret-sync.toml");
    fs::write(&config, config_text(options, &authority, &listen, out))
        .with_context(|| format!("writing {}", config.display()))?;
    let log = fs::File::create(work.join("daemon.log"))?;
    let started = Instant::now();
    let daemon = Process {
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
    Ok(Daemon {
        emulator,
        emulator_stdout,
        daemon,
        pid,
        listen,
        started,
    })
}

/// The job count's own run: start, wait for the first pass, 2 s more, SIGTERM. Its peak RSS
/// and the RSS after the first pass.
fn memory_step(
    options: &Options,
    bin: &Path,
    work: &Path,
    out: &Path,
    jobs: usize,
) -> Result<MemoryStep> {
    let step = Options {
        jobs,
        apps: options.apps.min(jobs),
        ..options.clone()
    };
    let (work, out) = (
        work.join(format!("memory-{jobs}")),
        out.join(format!("memory-{jobs}")),
    );
    let mut run = start(&step, bin, &work, &out)?;
    wait_healthy(&mut run.daemon, &run.listen)?;
    let listen_rss_kib = status_kib(run.pid, "VmRSS")?;
    let listen_hwm_kib = status_kib(run.pid, "VmHWM")?;
    let first_pass = wait_written(&mut run, &out, &step, jobs)?;
    std::thread::sleep(Duration::from_secs(2));
    let rss_kib = status_kib(run.pid, "VmRSS")?;
    let hwm_kib = status_kib(run.pid, "VmHWM")?;
    let (status, _) = run.daemon.terminate()?;
    ensure!(
        status.success(),
        "memory step {jobs}: the daemon exited with {status} after SIGTERM; see {}",
        work.join("daemon.log").display()
    );
    let _ = run.emulator.terminate();
    let _ = fs::remove_dir_all(&out);
    Ok(MemoryStep {
        jobs,
        first_pass,
        listen_rss_kib,
        listen_hwm_kib,
        rss_kib,
        hwm_kib,
    })
}

/// Waits until `count` targets are written (counted in the directory), failing if the daemon
/// exits or it takes over [`START_TIMEOUT`]; the time since the daemon started.
fn wait_written(run: &mut Daemon, out: &Path, options: &Options, count: usize) -> Result<Duration> {
    loop {
        if written_in(out, options.json)? >= count {
            return Ok(run.started.elapsed());
        }
        if let Some(status) = run.daemon.child.try_wait()? {
            bail!("the daemon exited ({status}) before its first pass ended; see its log");
        }
        ensure!(
            run.started.elapsed() < START_TIMEOUT,
            "the first pass did not write {count} targets within {START_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How many targets the directory holds (their expiry files; temporary files start with `.`).
fn written_in(dir: &Path, json: bool) -> Result<usize> {
    let mut count = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        let expiry_file = if json {
            !name.contains('.')
        } else {
            name.ends_with(".meta.json")
        };
        if name.starts_with("job-") && expiry_file {
            count += 1;
        }
    }
    Ok(count)
}

/// The daemon on the run's config, in a directory of its own, with SIGTERM sent once a quarter
/// of the targets are written: how long it takes to exit in the middle of its first pass.
fn sigterm_probe(options: &Options, bin: &Path, work: &Path, out: &Path) -> Result<Probe> {
    let (work, out) = (work.join("sigterm-probe"), out.join("sigterm-probe"));
    let mut run = start(options, bin, &work, &out)?;
    wait_healthy(&mut run.daemon, &run.listen)?;
    wait_written(&mut run, &out, options, options.jobs.div_ceil(4))?;
    let written_at_signal = written_in(&out, options.json)?;
    let (status, exit_time) = run.daemon.terminate()?;
    ensure!(
        status.success(),
        "the daemon exited with {status} after SIGTERM in its first pass; see {}",
        work.join("daemon.log").display()
    );
    let _ = run.emulator.terminate();
    let _ = fs::remove_dir_all(&out);
    Ok(Probe {
        written_at_signal,
        exit_time,
    })
}

/// Asks `/healthz` every [`HEALTHZ_EVERY`] until stopped, timing each answer.
struct HealthProbe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<HealthTimes>,
}

/// `/healthz` answer times (from the first answer on) and the requests that got none.
#[derive(Debug, Clone, Default, PartialEq)]
struct HealthTimes {
    answers: Vec<Duration>,
    failures: usize,
}

impl HealthTimes {
    fn max(&self) -> Duration {
        self.answers.iter().copied().max().unwrap_or_default()
    }

    fn median(&self) -> Duration {
        let mut sorted = self.answers.clone();
        sorted.sort_unstable();
        sorted.get(sorted.len() / 2).copied().unwrap_or_default()
    }
}

impl HealthProbe {
    fn start(listen: &str) -> Result<HealthProbe> {
        let addr: std::net::SocketAddr = listen.parse()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut times = HealthTimes::default();
            while !stopped.load(Ordering::Relaxed) {
                let asked = Instant::now();
                match healthz(addr) {
                    Ok(()) => times.answers.push(asked.elapsed()),
                    // Before the listener is up, the connection is refused.
                    Err(_) if times.answers.is_empty() => {}
                    Err(_) => times.failures += 1,
                }
                std::thread::sleep(HEALTHZ_EVERY.saturating_sub(asked.elapsed()));
            }
            times
        });
        Ok(HealthProbe { stop, thread })
    }

    fn finish(self) -> HealthTimes {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// One `GET /healthz` over a new connection; an error unless it answers 200 within
/// [`HEALTHZ_TIMEOUT`].
fn healthz(addr: std::net::SocketAddr) -> Result<()> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, HEALTHZ_TIMEOUT)?;
    stream.set_read_timeout(Some(HEALTHZ_TIMEOUT))?;
    stream.set_write_timeout(Some(HEALTHZ_TIMEOUT))?;
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    ensure!(answer.starts_with(b"HTTP/1.1 200"), "not 200");
    Ok(())
}

fn timed_run(
    options: &Options,
    bin: &Path,
    work: &Path,
    out: &Path,
    place: Place,
) -> Result<Report> {
    eprintln!(
        "bench-daemon: {} jobs over {} apps, tokens of {:?}, refresh_before {:?}, for {:?}; \
         daemon log in {}",
        options.jobs,
        options.apps,
        options.token_lifetime,
        options.refresh_before,
        options.duration,
        work.join("daemon.log").display()
    );
    let mut run = start(options, bin, work, out)?;
    let pid = run.pid;
    let health = HealthProbe::start(&run.listen)?;
    wait_healthy(&mut run.daemon, &run.listen)?;
    let at_listen = (status_kib(pid, "VmRSS")?, status_kib(pid, "VmHWM")?);
    let mut health = Some(health);
    let mut healthz = HealthTimes::default();

    let ticks_per_second = clock_ticks()?;
    let mut targets = Targets::new(out, options);
    let mut samples = Samples::default();
    let started = run.started;
    let deadline = started + options.duration;
    while Instant::now() < deadline {
        let tick = Instant::now();
        if let Some(status) = run.daemon.child.try_wait()? {
            bail!("the daemon exited ({status}) during the run; see its log");
        }
        targets.scan()?;
        // After the scan, so a file read early in it may since have been refreshed: the
        // counts below can only err on the high side.
        let now = unix_ns(SystemTime::now());
        let rss = status_kib(pid, "VmRSS")?;
        samples.rss_kib = samples.rss_kib.max(rss);
        let cpu = cpu_seconds(pid, ticks_per_second)?;
        if samples.first_pass.is_some() {
            samples.steady_rss_kib.push(rss);
        } else if targets.written() == options.jobs {
            samples.first_pass = Some((started.elapsed(), cpu));
            samples.after_first_pass = (rss, status_kib(pid, "VmHWM")?);
            if let Some(probe) = health.take() {
                healthz = probe.finish();
            }
            eprintln!(
                "bench-daemon: every target written after {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
        let (expired, due) = targets.expired_and_due(now);
        samples.most_expired = samples.most_expired.max(expired);
        samples.most_due = samples.most_due.max(due);
        std::thread::sleep(TICK.saturating_sub(tick.elapsed()));
    }
    if let Some(probe) = health.take() {
        healthz = probe.finish();
    }

    let elapsed = started.elapsed();
    let peak_rss_kib = status_kib(pid, "VmHWM")?;
    let end_rss_kib = status_kib(pid, "VmRSS")?;
    let cpu = cpu_seconds(pid, ticks_per_second)?;
    let metrics = curl(&format!("http://{}/metrics", run.listen))?;
    let ready = curl(&format!("http://{}/readyz", run.listen))?;
    let (status, stop_time) = run.daemon.terminate()?;
    ensure!(
        status.success(),
        "the daemon exited with {status} after SIGTERM; see its log"
    );
    let token_requests = emulator_count(&mut run.emulator, &mut run.emulator_stdout)?;

    let (first_pass_time, first_pass_cpu) = samples
        .first_pass
        .context("the first pass never wrote every target; see the daemon log")?;
    Ok(Report {
        jobs: options.jobs,
        apps: options.apps,
        token_lifetime: options.token_lifetime,
        refresh_before: options.refresh_before,
        scale: options.scale,
        elapsed,
        peak_rss_kib,
        memory: Memory {
            at_listen,
            after_first_pass: samples.after_first_pass,
            steady_kib: samples.steady_rss_kib,
            end_rss_kib,
        },
        steps: Vec::new(),
        healthz,
        probe: None,
        cpu,
        first_pass_time,
        steady_cpu: cpu.since(first_pass_cpu),
        token_requests,
        metrics_token_requests: sum_series(&metrics, "secret_sync_token_requests_total", "success"),
        refreshes: targets.refreshes,
        most_expired: samples.most_expired,
        most_due: samples.most_due,
        rewrites: targets.rewrites,
        place,
        ready: ready.trim() == "ready",
        stop_time,
    })
}

/// One memory step: a daemon with `jobs` jobs until 2 s after its first pass.
#[derive(Debug, Clone, Copy, PartialEq)]
struct MemoryStep {
    jobs: usize,
    first_pass: Duration,
    /// When `/healthz` first answered (the config loaded, the stores and jobs built).
    listen_rss_kib: u64,
    listen_hwm_kib: u64,
    /// 2 s after the first pass.
    rss_kib: u64,
    hwm_kib: u64,
}

/// SIGTERM in the middle of the first pass.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Probe {
    written_at_signal: usize,
    exit_time: Duration,
}

/// The timed run's RSS readings, KiB: (VmRSS, VmHWM) when `/healthz` first answered and when
/// the first pass was seen complete; VmRSS once a second after it, and at the end.
#[derive(Debug, Clone, Default, PartialEq)]
struct Memory {
    at_listen: (u64, u64),
    after_first_pass: (u64, u64),
    steady_kib: Vec<u64>,
    end_rss_kib: u64,
}

impl Memory {
    /// The median of the readings after the first pass (the end reading when there are none).
    fn steady_median_kib(&self) -> u64 {
        let mut sorted = self.steady_kib.clone();
        sorted.sort_unstable();
        sorted
            .get(sorted.len() / 2)
            .copied()
            .unwrap_or(self.end_rss_kib)
    }

    fn steady_max_kib(&self) -> u64 {
        self.steady_kib
            .iter()
            .copied()
            .max()
            .unwrap_or(self.end_rss_kib)
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// `600 s` as `10m`, `20 s` as `20s`.
fn humantime(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// The emulator with `apps` apps and 60 s tokens; its stdout (for the count at exit) and base URL.
fn start_emulator(
    options: &Options,
    bin: &Path,
    work: &Path,
) -> Result<(Process, BufReader<ChildStdout>, String)> {
    let lifetime = options.token_lifetime.as_secs().to_string();
    let server = bin.join("testkit-server");
    let mut command = Command::new(&server);
    command
        .args(["--tenant", TENANT, "--client-id", &client_id(0)])
        .args(["--token-lifetime-secs", &lifetime])
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
        options.refresh_before.as_secs(),
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
    /// (VmRSS, VmHWM) when the first pass was seen complete.
    after_first_pass: (u64, u64),
    /// VmRSS at each tick after the first pass.
    steady_rss_kib: Vec<u64>,
    /// When every target had been written once, and the CPU seconds used by then.
    first_pass: Option<(Duration, Cpu)>,
    /// The most targets seen at one tick holding an expired token.
    most_expired: usize,
    /// The most targets seen at one tick holding a token within `refresh_before` of its
    /// expiry (at or past its refresh point, not expired yet).
    most_due: usize,
}

/// One target's last seen write.
#[derive(Debug, Clone, Copy)]
struct Seen {
    modified: SystemTime,
    expires_on: i64,
}

/// A write of a target that already held a token with another expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refresh {
    /// The new file's modification time, nanoseconds since the Unix epoch.
    written_ns: i64,
    /// The expiry of the token it replaced, Unix seconds.
    previous_expiry: i64,
}

impl Refresh {
    fn lead_ns(self, refresh_before: Duration) -> i64 {
        lead_ns(self.written_ns, self.previous_expiry, refresh_before)
    }

    fn on_time(self, refresh_before: Duration) -> bool {
        self.lead_ns(refresh_before) >= 0
    }
}

/// How long before the refresh point of the token it replaced (its expiry minus
/// `refresh_before`) a write came, in nanoseconds: 0 or more is on time as issue 5 defines it
/// (before expiry minus `refresh_before`), negative is late.
fn lead_ns(written_ns: i64, previous_expiry: i64, refresh_before: Duration) -> i64 {
    let refresh_point_ns =
        previous_expiry * 1_000_000_000 - i64::try_from(refresh_before.as_nanos()).unwrap_or(0);
    refresh_point_ns - written_ns
}

/// The files holding the targets' expiries, as last seen.
struct Targets {
    files: Vec<PathBuf>,
    refresh_before: Duration,
    seen: HashMap<usize, Seen>,
    refreshes: Vec<Refresh>,
    /// Writes that kept the expiry the target held (the same token written again).
    rewrites: usize,
}

impl Targets {
    fn new(out: &Path, options: &Options) -> Self {
        let suffix = if options.json { "" } else { ".meta.json" };
        Targets {
            files: (0..options.jobs)
                .map(|n| out.join(format!("{}{suffix}", job_name(n))))
                .collect(),
            refresh_before: options.refresh_before,
            seen: HashMap::with_capacity(options.jobs),
            refreshes: Vec::new(),
            rewrites: 0,
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
            match self.seen.get(&n) {
                Some(previous) if previous.expires_on == expires_on => self.rewrites += 1,
                Some(previous) => self.refreshes.push(Refresh {
                    written_ns: unix_ns(modified),
                    previous_expiry: previous.expires_on,
                }),
                None => {}
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

    /// At `now` (Unix nanoseconds): how many targets hold an expired token, and how many one
    /// within `refresh_before` of its expiry.
    fn expired_and_due(&self, now: i64) -> (usize, usize) {
        let expiries = self.seen.values().map(|s| s.expires_on);
        expired_and_due(expiries, now, self.refresh_before)
    }
}

/// Of these expiries (Unix seconds), how many have passed at `now` (Unix nanoseconds), and how
/// many are still ahead but at most `refresh_before` away.
fn expired_and_due(
    expiries: impl Iterator<Item = i64>,
    now: i64,
    refresh_before: Duration,
) -> (usize, usize) {
    let refresh_before = i64::try_from(refresh_before.as_nanos()).unwrap_or(i64::MAX);
    expiries.fold((0, 0), |(expired, due), expiry| {
        let left = expiry * 1_000_000_000 - now;
        if left <= 0 {
            (expired + 1, due)
        } else if left <= refresh_before {
            (expired, due + 1)
        } else {
            (expired, due)
        }
    })
}

/// Nanoseconds since the Unix epoch (0 before it).
fn unix_ns(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
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

/// Rounded to three decimals (milliseconds, for seconds).
fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The figures of one run.
#[derive(Debug)]
struct Report {
    jobs: usize,
    apps: usize,
    token_lifetime: Duration,
    refresh_before: Duration,
    /// Judged by issue 15's goals (`--scale`).
    scale: bool,
    elapsed: Duration,
    peak_rss_kib: u64,
    memory: Memory,
    /// The memory steps made before the run; the first is the baseline of the per-job cost.
    steps: Vec<MemoryStep>,
    /// `/healthz` from the daemon's start to the end of its first pass.
    healthz: HealthTimes,
    probe: Option<Probe>,
    cpu: Cpu,
    first_pass_time: Duration,
    steady_cpu: Cpu,
    token_requests: u64,
    metrics_token_requests: u64,
    refreshes: Vec<Refresh>,
    /// Writes that kept the expiry the target held.
    rewrites: usize,
    most_expired: usize,
    most_due: usize,
    place: Place,
    ready: bool,
    stop_time: Duration,
}

impl Report {
    fn peak_rss_mib(&self) -> f64 {
        mib(self.peak_rss_kib)
    }

    fn cpu_percent(&self) -> f64 {
        100.0 * self.cpu.total() / self.elapsed.as_secs_f64()
    }

    fn steady_cpu_percent(&self) -> f64 {
        let steady = self.elapsed.saturating_sub(self.first_pass_time);
        100.0 * self.steady_cpu.total() / steady.as_secs_f64().max(1.0)
    }

    fn on_time(&self) -> usize {
        let refresh_before = self.refresh_before;
        self.refreshes
            .iter()
            .filter(|r| r.on_time(refresh_before))
            .count()
    }

    fn late(&self) -> usize {
        self.refreshes.len() - self.on_time()
    }

    fn on_time_percent(&self) -> f64 {
        if self.refreshes.is_empty() {
            return 0.0;
        }
        100.0 * self.on_time() as f64 / self.refreshes.len() as f64
    }

    /// Lead before the refresh point at the given quantile (nearest rank, from the smallest:
    /// 0.01 is p1, 0 the minimum), seconds; negative is late.
    fn lead(&self, quantile: f64) -> f64 {
        let mut leads: Vec<i64> = self
            .refreshes
            .iter()
            .map(|r| r.lead_ns(self.refresh_before))
            .collect();
        if leads.is_empty() {
            return 0.0;
        }
        leads.sort_unstable();
        let rank = ((quantile * leads.len() as f64).ceil() as usize).clamp(1, leads.len());
        leads[rank - 1] as f64 / 1e9
    }

    /// The fewest requests that keep every credential set fresh for the run: one at start,
    /// then one per `lifetime - refresh_before`.
    fn ideal_requests(&self) -> u64 {
        self.requests_per_cycle(self.token_lifetime - self.refresh_before)
    }

    /// The fewest for a daemon that renews a lead of `refresh_before / 2` (at most 5 minutes)
    /// ahead of the refresh point (as secret-sync's daemon does, so that a refresh is never
    /// late): one at start, then one per `lifetime - refresh_before - lead + 1 s`.
    fn ideal_requests_with_lead(&self) -> u64 {
        // The first of an app's jobs fires 1 s (the daemon's slack) into the lead window and
        // renews the token the others then share.
        self.requests_per_cycle(
            self.token_lifetime - self.refresh_before - lead(self.refresh_before)
                + Duration::from_secs(1),
        )
    }

    /// The baseline of the per-job cost: the first memory step, if it has fewer jobs.
    fn baseline(&self) -> Option<&MemoryStep> {
        self.steps.first().filter(|step| step.jobs < self.jobs)
    }

    /// Bytes per job above `base` (KiB) for `jobs` jobs at `kib`, from the baseline's `jobs`.
    fn per_job(&self, kib: u64, jobs: usize, base: impl Fn(&MemoryStep) -> u64) -> Option<f64> {
        let baseline = self.baseline().filter(|b| b.jobs < jobs)?;
        Some((kib as f64 - base(baseline) as f64) * 1024.0 / (jobs - baseline.jobs) as f64)
    }

    /// Peak and steady bytes per job of the run.
    fn peak_per_job(&self) -> Option<f64> {
        self.per_job(self.peak_rss_kib, self.jobs, |b| b.hwm_kib)
    }

    fn steady_per_job(&self) -> Option<f64> {
        self.per_job(self.memory.steady_median_kib(), self.jobs, |b| b.rss_kib)
    }

    fn requests_per_cycle(&self, cycle: Duration) -> u64 {
        let per_set = 1 + (self.elapsed.as_secs_f64() / cycle.as_secs_f64()).floor() as u64;
        self.apps as u64 * per_set
    }

    fn goals(&self) -> Vec<(&'static str, bool)> {
        let on_time = !self.refreshes.is_empty() && self.on_time() == self.refreshes.len();
        let rss = self.peak_rss_mib() < RSS_GOAL_MIB;
        if !self.scale {
            return vec![
                ("100% of refreshes on time", on_time),
                ("peak RSS under 100 MB", rss),
                (
                    "CPU under 10% of one core",
                    self.cpu_percent() < CPU_GOAL_PERCENT,
                ),
            ];
        }
        vec![
            ("100% of refreshes on time", on_time),
            ("peak RSS (VmHWM) under 100 MiB", rss),
            (
                "first pass under 10 s",
                self.first_pass_time < SCALE_FIRST_PASS_GOAL,
            ),
            (
                "CPU after the first pass under 5% of one core",
                self.steady_cpu_percent() < SCALE_STEADY_CPU_GOAL_PERCENT,
            ),
            (
                "/healthz within 1 s during the first pass",
                !self.healthz.answers.is_empty()
                    && self.healthz.failures == 0
                    && self.healthz.max() < HEALTHZ_GOAL,
            ),
            (
                "exit within 5 s of SIGTERM during the first pass",
                self.probe.is_some_and(|p| p.exit_time < SIGTERM_GOAL),
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
                "targets' directory in",
                format!(
                    "{}: {} at {} ({})",
                    self.place.dir.display(),
                    self.place.mount.fstype,
                    self.place.mount.point.display(),
                    self.place.mount.options
                ),
            ),
            (
                "token lifetime / refresh_before",
                format!(
                    "{} / {}",
                    humantime(self.token_lifetime),
                    humantime(self.refresh_before)
                ),
            ),
            (
                "peak RSS (VmHWM)",
                format!("{:.1} MiB", self.peak_rss_mib()),
            ),
            (
                "RSS / VmHWM when /healthz first answered",
                format!(
                    "{:.1} / {:.1} MiB (config loaded, jobs built)",
                    mib(self.memory.at_listen.0),
                    mib(self.memory.at_listen.1)
                ),
            ),
            (
                "RSS / VmHWM after the first pass",
                format!(
                    "{:.1} / {:.1} MiB",
                    mib(self.memory.after_first_pass.0),
                    mib(self.memory.after_first_pass.1)
                ),
            ),
            (
                "steady RSS after the first pass, median / max",
                format!(
                    "{:.1} / {:.1} MiB (at the end {:.1})",
                    mib(self.memory.steady_median_kib()),
                    mib(self.memory.steady_max_kib()),
                    mib(self.memory.end_rss_kib)
                ),
            ),
            (
                "memory steps, jobs: VmHWM / RSS after pass",
                self.steps
                    .iter()
                    .map(|step| {
                        format!(
                            "{}: {:.1} / {:.1} MiB",
                            step.jobs,
                            mib(step.hwm_kib),
                            mib(step.rss_kib)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            (
                "per job above the baseline: peak / steady",
                match (self.peak_per_job(), self.steady_per_job(), self.baseline()) {
                    (Some(peak), Some(steady), Some(base)) => format!(
                        "{peak:.0} / {steady:.0} bytes (baseline: {} job(s))",
                        base.jobs
                    ),
                    _ => "no baseline (--memory-steps)".to_owned(),
                },
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
                "  - with the daemon's lead (refresh_before/2)",
                format!("{}", self.ideal_requests_with_lead()),
            ),
            ("refreshes seen", self.refreshes.len().to_string()),
            (
                "on time: at/before expiry - refresh_before",
                format!(
                    "{} of {} ({:.2}%); late: {}",
                    self.on_time(),
                    self.refreshes.len(),
                    self.on_time_percent(),
                    self.late()
                ),
            ),
            (
                "lead before refresh point p50 / p1 / min",
                format!(
                    "{:.3} / {:.3} / {:.3} s",
                    self.lead(0.5),
                    self.lead(0.01),
                    self.lead(0.0)
                ),
            ),
            (
                "rewrites of the same token (not refreshes)",
                self.rewrites.to_string(),
            ),
            (
                "most targets holding an expired token",
                self.most_expired.to_string(),
            ),
            (
                "most targets within refresh_before of expiry",
                self.most_due.to_string(),
            ),
            (
                "/readyz at the end",
                if self.ready { "ready" } else { "NOT ready" }.to_owned(),
            ),
            (
                "exit after SIGTERM",
                format!("0 in {:.2} s", self.stop_time.as_secs_f64()),
            ),
            (
                "/healthz during the first pass: n, median / max",
                format!(
                    "{}, {:.3} / {:.3} s; no answer: {}",
                    self.healthz.answers.len(),
                    self.healthz.median().as_secs_f64(),
                    self.healthz.max().as_secs_f64(),
                    self.healthz.failures
                ),
            ),
            (
                "SIGTERM during the first pass",
                match self.probe {
                    Some(probe) => format!(
                        "0 in {:.2} s ({} of {} targets written)",
                        probe.exit_time.as_secs_f64(),
                        probe.written_at_signal,
                        self.jobs
                    ),
                    None => "not probed (--sigterm-probe)".to_owned(),
                },
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
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|step| {
                json!({
                    "jobs": step.jobs,
                    "first_pass_s": round2(step.first_pass.as_secs_f64()),
                    "rss_at_listen_mib": round2(mib(step.listen_rss_kib)),
                    "hwm_at_listen_mib": round2(mib(step.listen_hwm_kib)),
                    "rss_after_first_pass_mib": round2(mib(step.rss_kib)),
                    "hwm_mib": round2(mib(step.hwm_kib)),
                })
            })
            .collect();
        let memory = json!({
            "rss_at_listen_mib": round2(mib(self.memory.at_listen.0)),
            "hwm_at_listen_mib": round2(mib(self.memory.at_listen.1)),
            "rss_after_first_pass_mib": round2(mib(self.memory.after_first_pass.0)),
            "hwm_after_first_pass_mib": round2(mib(self.memory.after_first_pass.1)),
            "steady_rss_median_mib": round2(mib(self.memory.steady_median_kib())),
            "steady_rss_max_mib": round2(mib(self.memory.steady_max_kib())),
            "rss_at_end_mib": round2(mib(self.memory.end_rss_kib)),
            "peak_bytes_per_job": self.peak_per_job().map(f64::round),
            "steady_bytes_per_job": self.steady_per_job().map(f64::round),
            "steps": steps,
        });
        let healthz = json!({
            "answers": self.healthz.answers.len(),
            "median_s": round3(self.healthz.median().as_secs_f64()),
            "max_s": round3(self.healthz.max().as_secs_f64()),
            "no_answer": self.healthz.failures,
        });
        let sigterm: Option<Value> = self.probe.map(|probe| {
            json!({
                "targets_written_at_signal": probe.written_at_signal,
                "exit_s": round2(probe.exit_time.as_secs_f64()),
            })
        });
        let mut doc = json!({
            "date": command_text("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"])?,
            "machine": machine()?,
            "build_profile": profile,
            "jobs": self.jobs,
            "credential_sets": self.apps,
            "target_format": if options.json { "json" } else { "raw (token + sidecar)" },
            "target_dir": {
                "path": self.place.dir.display().to_string(),
                "filesystem": self.place.mount.fstype,
                "mount_point": self.place.mount.point.display().to_string(),
                "mount_options": self.place.mount.options,
            },
            "rust_log": options.rust_log,
            "token_lifetime_s": self.token_lifetime.as_secs(),
            "refresh_before_s": self.refresh_before.as_secs(),
            "scale": self.scale,
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
            "token_requests_fewest_with_lead": self.ideal_requests_with_lead(),
            "on_time_means": "the new file's modification time is at or before the replaced token's expiry minus refresh_before",
            "refreshes": self.refreshes.len(),
            "refreshes_on_time": self.on_time(),
            "refreshes_late": self.late(),
            "refreshes_on_time_percent": round2(self.on_time_percent()),
            "lead_before_refresh_point_s": {
                "p50": round3(self.lead(0.5)),
                "p1": round3(self.lead(0.01)),
                "min": round3(self.lead(0.0)),
            },
            "rewrites_same_token": self.rewrites,
            "most_targets_expired_at_once": self.most_expired,
            "most_targets_within_refresh_before_of_expiry_at_once": self.most_due,
            "ready_at_end": self.ready,
            "sigterm_exit_s": round2(self.stop_time.as_secs_f64()),

        });
        let more = json!({
            "memory": memory,
            "healthz_during_first_pass": healthz,
            "sigterm_during_first_pass": sigterm,
            "goals": self.goals().iter().map(|(goal, met)| ((*goal).to_owned(), json!(met))).collect::<serde_json::Map<_, _>>(),
        });
        if let (Value::Object(doc), Value::Object(more)) = (&mut doc, more) {
            doc.extend(more);
        }
        Ok(doc)
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
                token_lifetime: Duration::from_secs(60),
                refresh_before: Duration::from_secs(20),
                memory_steps: vec![1],
                sigterm_probe: false,
                scale: false,
                json: false,
                rust_log: None,
                release: true,
                dir: None,
                out: None,
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
            "--dir",
            "/dev/shm",
            "--out",
            "target/bench/mine.json",
            "--dev",
        ]))
        .unwrap();
        assert_eq!(o.dir.as_deref(), Some(Path::new("/dev/shm")));
        assert_eq!(o.out.as_deref(), Some(Path::new("target/bench/mine.json")));
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
        assert!(err(&["--dir"]).contains("--dir needs a directory"));
        assert!(err(&["--out", ".."]).contains("give a file name"));
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

    const SECOND: i64 = 1_000_000_000;

    #[test]
    fn a_refresh_is_on_time_at_or_before_the_old_expiry_minus_refresh_before() {
        let rb = Duration::from_secs(20);
        // Old token expires at 1,020 s: its refresh point is 1,000 s.
        assert_eq!(lead_ns(995 * SECOND, 1_020, rb), 5 * SECOND, "ahead of it");
        assert_eq!(
            lead_ns(1_000 * SECOND, 1_020, rb),
            0,
            "right at it: on time"
        );
        // 1 ns after the refresh point, though long before the expiry: late.
        assert_eq!(lead_ns(1_000 * SECOND + 1, 1_020, rb), -1);
        assert_eq!(lead_ns(1_019 * SECOND, 1_020, rb), -19 * SECOND);
        let at = |written_ns| Refresh {
            written_ns,
            previous_expiry: 1_020,
        };
        assert!(at(1_000 * SECOND).on_time(rb));
        assert!(at(999 * SECOND + 999_999_999).on_time(rb));
        assert!(!at(1_000 * SECOND + 1).on_time(rb));
        assert!(!at(1_021 * SECOND).on_time(rb), "after the expiry itself");
        assert!(
            at(1_000 * SECOND + 1).on_time(Duration::from_secs(19)),
            "a shorter refresh_before moves the refresh point"
        );
        // Nanoseconds are kept at today's epoch values (an f64 would round them).
        let now = 1_790_000_000;
        assert_eq!(lead_ns(now * SECOND - 1, now + 20, rb), 1);
    }

    #[test]
    fn expired_and_due_are_counted_at_nanoseconds() {
        let rb = Duration::from_secs(20);
        let now = 1_000 * SECOND;
        // expired: 999, 1000 (expiring now); due: 1001, 1020; fresh: 1021, 1060.
        let expiries = [999, 1_000, 1_001, 1_020, 1_021, 1_060];
        assert_eq!(expired_and_due(expiries.into_iter(), now, rb), (2, 2));
        assert_eq!(expired_and_due([].into_iter(), now, rb), (0, 0));
        assert_eq!(
            expired_and_due([1_020].into_iter(), now - 1, rb),
            (0, 0),
            "1 ns before its refresh point"
        );
    }

    const MOUNTS: &str = "\
/dev/vda / ext4 rw,relatime,discard 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /dev/shm tmpfs rw,relatime,size=24684084k 0 0
/dev/vdb /work/main/target xfs rw,noatime 0 0
tmpfs /work/main/target/bench tmpfs rw,size=1g 0 0
/dev/vdc /work/main/target/bench xfs rw 0 0
/dev/vdd /mnt/with\\040space ext4 ro 0 0
";

    #[test]
    fn the_mount_of_a_path_is_the_longest_mount_point_holding_it() {
        let of = |path: &str| mount_of(MOUNTS, Path::new(path)).unwrap();
        let shm = of("/dev/shm/secret-sync-bench-daemon-7");
        assert_eq!(
            (
                shm.point.as_path(),
                shm.fstype.as_str(),
                shm.options.as_str()
            ),
            (Path::new("/dev/shm"), "tmpfs", "rw,relatime,size=24684084k")
        );
        assert!(shm.in_memory());
        assert_eq!(of("/tmp/x").fstype, "ext4");
        assert!(!of("/tmp/x").in_memory());
        assert_eq!(of("/dev/shmx").fstype, "ext4", "whole components only");
        assert_eq!(of("/work/main/target/release").fstype, "xfs");
        // Two mounts on one point: the last one listed is on top.
        let bench = of("/work/main/target/bench/x");
        assert_eq!(
            (bench.fstype.as_str(), bench.options.as_str()),
            ("xfs", "rw")
        );
        assert_eq!(of("/mnt/with space/d").point, Path::new("/mnt/with space"));
        assert_eq!(mount_of("", Path::new("/tmp")), None);
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
            token_lifetime: Duration::from_secs(60),
            refresh_before: Duration::from_secs(20),
            scale: false,
            elapsed: Duration::from_secs(100),
            peak_rss_kib: 50 * 1024,
            memory: Memory {
                at_listen: (20 * 1024, 21 * 1024),
                after_first_pass: (40 * 1024, 45 * 1024),
                steady_kib: vec![30 * 1024, 31 * 1024, 35 * 1024],
                end_rss_kib: 32 * 1024,
            },
            steps: vec![MemoryStep {
                jobs: 1,
                first_pass: Duration::from_millis(100),
                listen_rss_kib: 9 * 1024,
                listen_hwm_kib: 9 * 1024,
                rss_kib: 10 * 1024,
                hwm_kib: 11 * 1024,
            }],
            healthz: HealthTimes {
                answers: vec![Duration::from_millis(2), Duration::from_millis(1_500)],
                failures: 0,
            },
            probe: None,
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
                // refresh point 5 s: 2 s, 1 s and 0.5 s ahead of it
                Refresh {
                    written_ns: 3 * SECOND,
                    previous_expiry: 25,
                },
                Refresh {
                    written_ns: 4 * SECOND,
                    previous_expiry: 25,
                },
                Refresh {
                    written_ns: 4 * SECOND + SECOND / 2,
                    previous_expiry: 25,
                },
            ],
            rewrites: 0,
            most_expired: 0,
            most_due: 3,
            place: Place {
                dir: PathBuf::from("/dev/shm"),
                mount: mount_of(MOUNTS, Path::new("/dev/shm/b")).unwrap(),
            },
            ready: true,
            stop_time: Duration::from_millis(50),
        };
        assert_eq!(report.cpu_percent(), 5.0);
        assert_eq!(report.steady_cpu_percent(), 5.0);
        // one request at start, then one per 40 s: 1 + 2 per app
        assert_eq!(report.ideal_requests(), 6);
        assert_eq!(
            (report.lead(0.5), report.lead(0.01), report.lead(0.0)),
            (1.0, 0.5, 0.5)
        );
        assert!(
            report.goals().iter().all(|(_, met)| *met),
            "{:?}",
            report.goals()
        );
        let table = report.table();
        assert!(
            table.contains("3 of 3 (100.00%); late: 0") && !table.contains("NOT met"),
            "{table}"
        );
        assert!(table.contains("1.000 / 0.500 / 0.500 s"), "{table}");
        assert!(
            table.contains("/dev/shm: tmpfs at /dev/shm (rw,relatime,size=24684084k)"),
            "{table}"
        );
        assert!(table.contains("user 1.0 s, system 4.0 s"), "{table}");

        // One refresh 1 ms after the refresh point: late, and the goal is missed.
        let late = Report {
            refreshes: [
                report.refreshes.clone(),
                vec![Refresh {
                    written_ns: 5 * SECOND + SECOND / 1000,
                    previous_expiry: 25,
                }],
            ]
            .concat(),
            ..report
        };
        assert_eq!((late.on_time(), late.late()), (3, 1));
        assert_eq!(late.on_time_percent(), 75.0);
        assert_eq!(late.lead(0.0), -0.001);
        assert!(!late.goals()[0].1, "{:?}", late.goals());
        let table = late.table();
        assert!(table.contains("3 of 4 (75.00%); late: 1"), "{table}");
        assert!(table.contains("NOT met"), "{table}");
    }

    #[test]
    fn memory_per_job_is_counted_from_the_baseline_and_scale_has_its_own_goals() {
        let report = Report {
            jobs: 11,
            apps: 1,
            token_lifetime: Duration::from_secs(600),
            refresh_before: Duration::from_secs(180),
            scale: true,
            elapsed: Duration::from_secs(600),
            peak_rss_kib: 30 * 1024,
            memory: Memory {
                at_listen: (12 * 1024, 12 * 1024),
                after_first_pass: (20 * 1024, 30 * 1024),
                steady_kib: vec![19 * 1024, 21 * 1024, 20 * 1024],
                end_rss_kib: 20 * 1024,
            },
            steps: vec![MemoryStep {
                jobs: 1,
                first_pass: Duration::from_millis(100),
                listen_rss_kib: 9 * 1024,
                listen_hwm_kib: 9 * 1024,
                rss_kib: 10 * 1024,
                hwm_kib: 20 * 1024,
            }],
            healthz: HealthTimes {
                answers: vec![Duration::from_millis(3), Duration::from_millis(40)],
                failures: 0,
            },
            probe: Some(Probe {
                written_at_signal: 3,
                exit_time: Duration::from_millis(300),
            }),
            cpu: Cpu {
                user: 10.0,
                system: 10.0,
            },
            first_pass_time: Duration::from_secs(9),
            steady_cpu: Cpu {
                user: 5.0,
                system: 10.0,
            },
            token_requests: 2,
            metrics_token_requests: 2,
            refreshes: vec![Refresh {
                written_ns: 100 * SECOND,
                previous_expiry: 600,
            }],
            rewrites: 0,
            most_expired: 0,
            most_due: 0,
            place: Place {
                dir: PathBuf::from("/dev/shm"),
                mount: mount_of(MOUNTS, Path::new("/dev/shm/b")).unwrap(),
            },
            ready: true,
            stop_time: Duration::from_millis(50),
        };
        // 10 MiB over 10 jobs above the baseline's peak; steady: median 20 MiB against 10.
        assert_eq!(report.peak_per_job(), Some(1_048_576.0));
        assert_eq!(report.steady_per_job(), Some(1_048_576.0));
        assert_eq!(report.goals().len(), 6);
        assert!(
            report.goals().iter().all(|(_, met)| *met),
            "{:?}",
            report.goals()
        );
        let table = report.table();
        assert!(
            table.contains("1048576 / 1048576 bytes (baseline: 1 job(s))"),
            "{table}"
        );
        assert!(
            table.contains("0 in 0.30 s (3 of 11 targets written)"),
            "{table}"
        );
        assert!(
            table.contains("2, 0.040 / 0.040 s; no answer: 0"),
            "{table}"
        );
        assert!(table.contains("10m / 3m"), "{table}");

        let slow = Report {
            healthz: HealthTimes {
                answers: vec![Duration::from_millis(1_200)],
                failures: 0,
            },
            probe: None,
            first_pass_time: Duration::from_secs(10),
            ..report
        };
        let missed: Vec<&str> = slow
            .goals()
            .into_iter()
            .filter(|(_, met)| !met)
            .map(|(goal, _)| goal)
            .collect();
        assert_eq!(
            missed,
            [
                "first pass under 10 s",
                "/healthz within 1 s during the first pass",
                "exit within 5 s of SIGTERM during the first pass"
            ]
        );
        assert_eq!(slow.table().matches("NOT met").count(), 3);
    }

    #[test]
    fn scale_sets_the_issue_15_run_and_later_options_override_it() {
        let o = parse_args(&args(&["--scale", "--duration", "2m"])).unwrap();
        assert_eq!(
            (
                o.jobs,
                o.apps,
                o.token_lifetime,
                o.refresh_before,
                o.duration
            ),
            (
                100_000,
                1_000,
                Duration::from_secs(600),
                Duration::from_secs(180),
                Duration::from_secs(120)
            )
        );
        assert!(o.scale && o.sigterm_probe);
        assert_eq!(o.memory_steps, [1, 10_000]);
        let o = parse_args(&args(&[
            "--token-lifetime",
            "10m",
            "--refresh-before",
            "3m",
            "--memory-steps",
            "1,500",
            "--sigterm-probe",
        ]))
        .unwrap();
        assert_eq!(
            (
                o.token_lifetime,
                o.refresh_before,
                o.memory_steps.as_slice()
            ),
            (
                Duration::from_secs(600),
                Duration::from_secs(180),
                &[1, 500][..]
            )
        );
        assert!(o.sigterm_probe && !o.scale);
        let err = |a: &[&str]| parse_args(&args(a)).unwrap_err().to_string();
        assert!(err(&["--refresh-before", "40s"]).contains("is not below --token-lifetime"));
        assert!(err(&["--token-lifetime", "soon"]).contains("--token-lifetime soon"));
        assert!(err(&["--memory-steps", "1,0"]).contains("above 0"));
    }
}
