//! The state file of the last watch: `credentials-state.json` in `[settings.credentials]
//! state_dir`. `credentials`, `rotate` and the daemon write it after each watch; `plan` reads
//! it, so plan shows the recorded expiries without a Graph call or a token request.
//!
//! It holds what Graph answers about an app's credentials (keyIds, display names, hints are
//! not kept, expiries) and never a secret. Written atomically (temp file and rename), mode
//! 0600; a missing or unreadable file is "never watched", never an error.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

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
    /// Whether it is the one the job uses (certificates: not determined, false).
    pub in_use: bool,
}

/// The path of the state file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(crate::config::CredentialSettings::STATE_FILE)
}

/// Reads the state file; missing or unreadable: empty.
pub fn read(dir: &Path) -> State {
    let Ok(text) = std::fs::read_to_string(path(dir)) else {
        return State::default();
    };
    serde_json::from_str(&text).unwrap_or_default()
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
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
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
