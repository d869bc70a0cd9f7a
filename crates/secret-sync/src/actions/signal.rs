//! `signal`: send a signal (e.g. `HUP`) to the process a pid file names.
//!
//! The pid file is read as the crate reads every file it is pointed at: opened with
//! `O_NOFOLLOW | O_NONBLOCK` (a symlink or a FIFO put in its place is refused, not followed or
//! waited on), checked to be a regular file, at most [`MAX_PID_FILE`] bytes, off the runtime
//! thread. The pid must be a live process (`kill(pid, 0)`), and when `process_name` is given its
//! `/proc/PID/comm` must be that name, so a pid file left behind by a process that died, its
//! pid since reused, gets an error, never a signal to a random process. Pid 1 is signalled
//! only with a `process_name` that matches.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::OFlags;
use rustix::io::Errno;
use rustix::process::{Pid, Signal, kill_process, test_kill_process};

use crate::config::SignalName;

/// The largest pid file read (a pid and a newline; some write a few more lines).
pub const MAX_PID_FILE: u64 = 4096;

fn signal_of(name: SignalName) -> Signal {
    match name {
        SignalName::Hup => Signal::HUP,
        SignalName::Usr1 => Signal::USR1,
        SignalName::Usr2 => Signal::USR2,
        SignalName::Term => Signal::TERM,
        SignalName::Int => Signal::INT,
        SignalName::Quit => Signal::QUIT,
        SignalName::Winch => Signal::WINCH,
    }
}

/// Reads the pid file and signals its process; `Ok` says which pid got which signal.
pub async fn send(
    signal: SignalName,
    pid_file: &Path,
    process_name: Option<&str>,
) -> Result<String, String> {
    let path = pid_file.to_owned();
    let text = tokio::task::spawn_blocking(move || read_pid_file(&path))
        .await
        .map_err(|_| "the pid file read was cancelled".to_owned())?
        .map_err(|problem| format!("pid file {}: {problem}", pid_file.display()))?;
    let stale = |why: String| {
        format!(
            "pid file {} is stale: {why}; no signal was sent (is the service running? does \
             pid_file name its current pid file?)",
            pid_file.display()
        )
    };
    let first = text.lines().next().unwrap_or("").trim();
    let raw: i32 = first.parse().map_err(|_| {
        format!(
            "pid file {} does not start with a process id (found {} bytes that are not a \
             number); no signal was sent",
            pid_file.display(),
            first.len()
        )
    })?;
    let Some(pid) = Pid::from_raw(raw).filter(|_| raw > 0) else {
        return Err(format!(
            "pid file {} holds {raw}, which is not a process id; no signal was sent",
            pid_file.display()
        ));
    };
    match test_kill_process(pid) {
        Ok(()) => {}
        Err(Errno::SRCH) => return Err(stale(format!("no process {raw} is running"))),
        Err(Errno::PERM) => {
            return Err(format!(
                "process {raw} (from {}) runs as another user: secret-sync may not signal it \
                 (run both as the same user, or use an exec action with the right privilege)",
                pid_file.display()
            ));
        }
        Err(err) => return Err(format!("cannot check process {raw}: {err}")),
    }
    match process_name {
        Some(expected) => {
            let comm = std::fs::read_to_string(PathBuf::from(format!("/proc/{raw}/comm")))
                .map_err(|err| {
                    format!("cannot read /proc/{raw}/comm to check process_name: {err}")
                })?;
            let comm = comm.trim_end_matches('\n');
            if comm != expected {
                return Err(stale(format!(
                    "process {raw} is \"{}\", not \"{expected}\" (process_name): its pid was \
                     reused",
                    comm.escape_debug()
                )));
            }
        }
        None if raw == 1 => {
            return Err(format!(
                "pid file {} names process 1 (init): set process_name to signal it",
                pid_file.display()
            ));
        }
        None => {}
    }
    kill_process(pid, signal_of(signal))
        .map_err(|err| format!("cannot send SIG{} to {raw}: {err}", signal.as_str()))?;
    Ok(format!("sent SIG{} to process {raw}", signal.as_str()))
}

fn read_pid_file(path: &Path) -> Result<String, String> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32)
        .open(path)
        .map_err(|err| match err.raw_os_error() {
            Some(code) if code == Errno::LOOP.raw_os_error() => {
                "is a symbolic link, which is not followed: name the file itself".to_owned()
            }
            _ if err.kind() == std::io::ErrorKind::NotFound => {
                "does not exist (is the service running?); no signal was sent".to_owned()
            }
            _ => format!("cannot be opened: {err}"),
        })?;
    let meta = file
        .metadata()
        .map_err(|err| format!("cannot stat: {err}"))?;
    if !meta.is_file() {
        return Err("is not a regular file".to_owned());
    }
    if meta.len() > MAX_PID_FILE {
        return Err(format!(
            "is larger than {MAX_PID_FILE} bytes: is it a pid file?"
        ));
    }
    let mut text = String::new();
    (&mut file)
        .take(MAX_PID_FILE)
        .read_to_string(&mut text)
        .map_err(|err| format!("cannot be read as text: {err}"))?;
    Ok(text)
}
