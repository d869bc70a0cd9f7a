//! `exec`: run a command after a write.
//!
//! The argument list is run as given (the first element an absolute path; no shell, no PATH
//! search), in a process group of its own, with stdin `/dev/null` and the environment the
//! caller gives (the process's minus the config's secret sources, plus `SECRET_SYNC_*`). It
//! gets `timeout` (capped by the pass's deadline): past it the whole process group gets
//! SIGKILL, so a hanging command's children go too; so does it when the pass is abandoned
//! (the guard's drop). Its exit status is logged; its output (the first
//! [`OUTPUT_LOGGED`] bytes of each stream) only at debug level, since a command that prints
//! what it read would otherwise put a token in the log.

use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::task::JoinHandle;
use tracing::debug;

/// How much of each output stream is kept for the debug log.
pub const OUTPUT_LOGGED: usize = 16 * 1024;

/// How long the output readers get after the command exited (a background child may keep the
/// pipes open; its output is not waited for).
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// Kills a process group when dropped, unless disarmed.
struct GroupGuard(Option<Pid>);

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pid) = self.0.take() {
            // ESRCH: the group is gone already.
            let _ = kill_process_group(pid, Signal::KILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How long a command may run, and what set that (for the message when it is killed).
#[derive(Debug)]
pub struct Limit {
    pub time: Duration,
    /// e.g. `jobs.graph.actions[0].timeout`, or the pass's deadline.
    pub why: String,
}

/// Runs `argv` within `limit`; `Ok` with its exit status when it exits 0.
pub async fn run(
    argv: &[String],
    limit: Limit,
    env: &[(OsString, OsString)],
    key: &str,
) -> Result<String, String> {
    let timeout = limit.time;
    let command = &argv[0];
    let mut child = Command::new(command)
        .args(&argv[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| format!("cannot start {command}: {err}"))?;
    let mut guard = GroupGuard(
        child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(Pid::from_raw),
    );
    let stdout = child.stdout.take().map(capture);
    let stderr = child.stderr.take().map(capture);
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => status.map_err(|err| format!("cannot wait for {command}: {err}")),
        Err(_) => {
            guard.kill();
            let _ = child.wait().await;
            let shown = Duration::from_millis(u64::try_from(timeout.as_millis()).unwrap_or(0));
            Err(format!(
                "{command} did not finish within {} ({}) and was killed with its process group",
                humantime::format_duration(shown),
                limit.why
            ))
        }
    };
    // A command that exited leaves its background children alone; only a timeout kills them.
    if status.is_ok() {
        guard.0 = None;
    }
    let stdout = collect(stdout).await;
    let stderr = collect(stderr).await;
    debug!(action = %key, command = %command, stdout = %stdout, stderr = %stderr,
        "after-write command output");
    let status = status?;
    if status.success() {
        return Ok(format!("{command} exited with status 0"));
    }
    use std::os::unix::process::ExitStatusExt;
    Err(match (status.code(), status.signal()) {
        (Some(code), _) => format!(
            "{command} exited with status {code} (its output is logged at debug level: \
             RUST_LOG=secret_sync=debug)"
        ),
        (None, Some(signal)) => format!("{command} was killed by signal {signal}"),
        (None, None) => format!("{command} ended abnormally"),
    })
}

fn capture(stream: impl AsyncRead + Unpin + Send + 'static) -> JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        let mut kept = Vec::new();
        let mut stream = stream;
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = OUTPUT_LOGGED.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        kept
    })
}

async fn collect(reader: Option<JoinHandle<Vec<u8>>>) -> String {
    let Some(mut reader) = reader else {
        return String::new();
    };
    match tokio::time::timeout(OUTPUT_GRACE, &mut reader).await {
        Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        _ => {
            reader.abort();
            String::new()
        }
    }
}
