//! The state file of the last watch: `credentials-state.json` in `[settings.credentials]
//! state_dir`. `credentials`, `rotate` and the daemon write it after each watch; `plan` reads
//! it, so plan shows the recorded expiries without a Graph call or a token request.
//!
//! It holds what Graph answers about an app's credentials (keyIds, display names, hints are
//! not kept, expiries) and never a secret. Written atomically (a temp file created anew,
//! without following a symlink, then renamed over it), mode 0600. It is read as the crate reads
//! every file someone else could put in its place: `O_NOFOLLOW | O_NONBLOCK`, a regular file
//! (fstat), at most [`MAX_STATE_BYTES`], UTF-8 JSON; a symlink, FIFO, device, huge, non-UTF-8
//! or unparseable file is ignored with a warning (it reads as "never watched", and the next
//! watch replaces it), never followed, waited on or read whole. A missing file is "never
//! watched" without a warning.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rustix::fs::OFlags;
use serde::{Deserialize, Serialize};

/// The largest state file read: 1 MiB, the crate's limit for files it reads (a job's entry
/// takes a few hundred bytes per credential).
pub const MAX_STATE_BYTES: u64 = 1 << 20;

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub version: u32,
    /// By job name.
    pub jobs: BTreeMap<String, JobState>,
}

/// One job's last watch.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobState {
    /// When Graph was read (RFC 3339).
    pub watched_at: String,
    /// The app's client id.
    pub app: String,
    pub credentials: Vec<CredentialState>,
}

/// One credential of the app.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CredentialState {
    /// `password` or `certificate`.
    pub kind: String,
    pub key_id: String,
    pub display_name: Option<String>,
    /// RFC 3339, or none when Graph gave no end.
    pub expires_on: Option<String>,
    /// Whether it is the one the job uses (a certificate: the job's certificate, by thumbprint).
    pub in_use: bool,
}

/// The path of the state file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(crate::config::CredentialSettings::STATE_FILE)
}

/// Reads the state file; missing: empty; unusable (see the module doc): empty, with a warning.
pub fn read(dir: &Path) -> State {
    let path = path(dir);
    match read_checked(&path) {
        Ok(state) => state.unwrap_or_default(),
        Err(why) => {
            tracing::warn!(path = %path.display(),
                "the credential state file {} is ignored: {why}; the next watch replaces it",
                path.display());
            State::default()
        }
    }
}

/// The state file at `path`: `None` when missing, an error saying why it cannot be used.
fn read_checked(path: &Path) -> Result<Option<State>, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32)
        .open(path);
    let mut file = match file {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) if err.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err("it is a symbolic link, which is not followed".into());
        }
        Err(err) => return Err(format!("it cannot be opened ({err})")),
    };
    let meta = file
        .metadata()
        .map_err(|err| format!("it cannot be examined ({err})"))?;
    if !meta.is_file() {
        return Err("it is not a regular file (a FIFO, socket, device or directory)".into());
    }
    let too_big = || format!("it is larger than {} KiB", MAX_STATE_BYTES / 1024);
    if meta.len() > MAX_STATE_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    (&mut file)
        .take(MAX_STATE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("it cannot be read ({err})"))?;
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(too_big());
    }
    let text = String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_owned())?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|err| format!("it is not a state file secret-sync wrote ({err})"))
}

/// Records `job`'s watch, keeping the other jobs'.
pub fn record(dir: &Path, job: &str, watched: JobState) -> anyhow::Result<()> {
    let mut state = read(dir);
    state.version = 1;
    state.jobs.insert(job.to_owned(), watched);
    let text = serde_json::to_string_pretty(&state)?;
    let target = path(dir);
    let temp = dir.join(format!(
        ".{}.tmp-{}",
        crate::config::CredentialSettings::STATE_FILE,
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        // A temp file left by a killed run of the same pid, or anything put at its name, goes
        // (unlink removes a symlink itself, never its target); the new one is created anew
        // and never through a symlink.
        match std::fs::remove_file(&temp) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(OFlags::NOFOLLOW.bits() as i32)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(text.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&temp, &target)
    };
    write().with_context(|| {
        format!(
            "cannot record the watch in {} (settings.credentials.state_dir)",
            target.display()
        )
    })
}

/// What `plan` shows of the last watch of the jobs named `jobs` (every job when empty) of the
/// config at `config`: a text section and a JSON value. `None` when no selected job watches.
/// Reads the state file only: no Graph call, no token request.
pub fn for_plan(config: &Path, jobs: &[String]) -> Option<(String, serde_json::Value)> {
    let config = crate::config::load(config).ok()?;
    let watching: Vec<&str> = config
        .jobs
        .iter()
        .filter(|j| (jobs.is_empty() || jobs.contains(&j.name)) && j.lifecycle.uses_graph())
        .map(|j| j.name.as_str())
        .collect();
    if watching.is_empty() {
        return None;
    }
    let state = read(&config.settings.credentials.state_dir);
    let now = time::OffsetDateTime::now_utc();
    let mut text = String::from(
        "\nApp credentials (as recorded at the last watch; `secret-sync credentials` reads them again):\n",
    );
    let mut entries = Vec::new();
    for name in watching {
        let Some(job) = state.jobs.get(name) else {
            text.push_str(&format!("  {name}: never watched\n"));
            entries.push(serde_json::json!({"job": name, "watched_at": null, "credentials": []}));
            continue;
        };
        let mut shown = Vec::new();
        for c in &job.credentials {
            let end = c.expires_on.as_deref().and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            });
            let days = end.map(|end| super::days_left(end, now));
            if c.in_use || c.kind == "certificate" {
                text.push_str(&format!(
                    "  {name}: {} {} expires {} ({}){} (watched {})\n",
                    if c.kind == "password" {
                        "client secret"
                    } else {
                        "certificate"
                    },
                    c.key_id,
                    c.expires_on.as_deref().unwrap_or("never"),
                    days.map_or_else(|| "no end".to_owned(), |d| format!("{d} days left")),
                    if c.in_use { ", in use" } else { "" },
                    job.watched_at
                ));
            }
            shown.push(serde_json::json!({
                "kind": c.kind, "key_id": c.key_id, "display_name": c.display_name,
                "expires_on": c.expires_on, "days_left": days, "in_use": c.in_use,
            }));
        }
        if !job
            .credentials
            .iter()
            .any(|c| c.in_use || c.kind == "certificate")
        {
            text.push_str(&format!(
                "  {name}: {} password(s), the one in use not known (watched {})\n",
                job.credentials.len(),
                job.watched_at
            ));
        }
        entries.push(
            serde_json::json!({"job": name, "watched_at": job.watched_at, "credentials": shown}),
        );
    }
    Some((text, serde_json::Value::Array(entries)))
}
