//! The daemon's failed after-write actions on disk, so that a restart does not lose them:
//! `actions-pending.json` in `[settings.credentials] state_dir` (the config file's directory
//! by default), beside the credential state file.
//!
//! Without it, a daemon stopped or killed while an action was pending started again with the
//! targets fresh, so no pass wrote and nothing ran the action until the next refresh: a
//! consumer that missed its reload kept the old token past its expiry. Now the daemon writes
//! the file whenever a job's pending actions change (an action fails, or a pending one ran or
//! was superseded), removes it when none is left, and reads it at start: each entry whose job
//! still has an action at that key runs at the job's first pass as any pending action does
//! (the targets are fresh: no token request), until it succeeds or a newer write replaces it.
//!
//! An entry names the job, the action's config key and what the failed run was told (the
//! targets, their outcome and the token's expiry), never a token or a secret. Entries of jobs
//! a daemon does not run are kept as they are (another config in the same directory). The file is read
//! and written by the state-file rules (`crate::state_file`); an unusable one is ignored with a
//! warning, an entry whose job or action key the config no longer has is dropped with a note.

use std::path::Path;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tracing::{info, warn};

use super::{Actions, Context, Due, Pending, Written};

/// The file's name in the state directory.
pub const FILE: &str = "actions-pending.json";

#[derive(Debug, Serialize, Deserialize)]
struct PendingFile {
    version: u32,
    actions: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    job: String,
    /// The action's config key, e.g. `jobs.graph.actions[0]`.
    action: String,
    targets: Vec<Target>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Target {
    backend: String,
    name: String,
    /// `created` or `updated`.
    outcome: String,
    /// The written token's expiry (Unix seconds).
    expires_on: Option<i64>,
}

/// Writes `pending` to `dir`, keeping the entries of jobs that are not `ours` (another
/// daemon's config in the same directory), and removes the file when nothing is left; an error
/// says why it could not (the daemon warns and goes on).
pub fn save(dir: &Path, pending: &Pending, ours: &dyn Fn(&str) -> bool) -> Result<(), String> {
    let path = dir.join(FILE);
    let mut actions: Vec<Entry> = read(&path)
        .map(|file| file.actions)
        .unwrap_or_default()
        .into_iter()
        .filter(|entry| !ours(&entry.job))
        .collect();
    actions.extend(pending.values().flatten().map(|due| {
        Entry {
            job: due.context.job.clone(),
            action: due.action.key.clone(),
            targets: due
                .context
                .targets
                .iter()
                .map(|t| Target {
                    backend: t.backend.clone(),
                    name: t.name.clone(),
                    outcome: t.outcome.to_owned(),
                    expires_on: t.expires_on.map(OffsetDateTime::unix_timestamp),
                })
                .collect(),
        }
    }));
    if actions.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(format!("cannot remove {}: {err}", path.display()))
            }
            _ => Ok(()),
        };
    }
    actions.sort_by(|a, b| (&a.job, &a.action).cmp(&(&b.job, &b.action)));
    let file = PendingFile {
        version: 1,
        actions,
    };
    crate::state_file::write(dir, FILE, &file).map_err(|err| {
        format!(
            "cannot record the pending after-write actions in {} \
             (settings.credentials.state_dir): {err}",
            path.display()
        )
    })
}

/// The file at `path`: `None` when missing or unusable (with a warning saying why).
fn read(path: &Path) -> Option<PendingFile> {
    match crate::state_file::read(path, "a pending-actions file secret-sync wrote") {
        Ok(file) => file,
        Err(why) => {
            warn!(path = %path.display(),
                "the pending after-write actions file {} is ignored: {why}", path.display());
            None
        }
    }
}

/// The pending actions recorded in `dir` for the jobs that are `ours` that `actions` (the
/// loaded config's) still has, by job; empty when there is no file or it cannot be used (with a
/// warning).
pub fn load(dir: &Path, actions: &Actions, ours: &dyn Fn(&str) -> bool) -> Pending {
    let Some(file) = read(&dir.join(FILE)) else {
        return Pending::new();
    };
    let mut pending = Pending::new();
    for entry in file.actions.into_iter().filter(|entry| ours(&entry.job)) {
        let Some(action) = actions.action(&entry.job, &entry.action) else {
            info!(job = %entry.job, action = %entry.action,
                "a pending after-write action is dropped: the config has no such action any more");
            continue;
        };
        let targets: Vec<Written> = entry
            .targets
            .into_iter()
            .map(|t| Written {
                backend: t.backend,
                name: t.name,
                outcome: if t.outcome == "created" {
                    "created"
                } else {
                    "updated"
                },
                expires_on: t
                    .expires_on
                    .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok()),
            })
            .collect();
        info!(job = %entry.job, action = %entry.action,
            "a pending after-write action from before the restart runs at the job's first pass");
        pending.entry(entry.job.clone()).or_default().push(Due {
            action,
            context: Context::of(&entry.job, &targets),
        });
    }
    pending
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;

    use super::*;
    use crate::actions::JobActions;
    use crate::actions::tests::spec;

    /// The actions of a config whose job `g` has `jobs.g.actions[0]`.
    fn actions() -> Actions {
        let job = JobActions {
            job: vec![spec("jobs.g.actions[0]")],
            targets: Vec::new(),
        };
        Actions {
            jobs: BTreeMap::from([("g".to_owned(), Arc::new(job))]),
            secret_env: BTreeSet::new(),
            stores: crate::engine::source::Stores::new(),
            http: crate::clients::Clients::default(),
            stop: tokio::sync::watch::Sender::new(None),
        }
    }

    fn due(job: &str, key: &str) -> Due {
        let expires = OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap();
        let targets = [Written {
            backend: "local".to_owned(),
            name: format!("{job}.json"),
            outcome: "created",
            expires_on: Some(expires),
        }];
        Due {
            action: spec(key),
            context: Context::of(job, &targets),
        }
    }

    #[test]
    fn what_is_saved_is_loaded_and_another_daemons_entries_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let ours = |job: &str| job == "g";
        let theirs = |job: &str| job == "other";
        // Another daemon's pending action, then ours.
        let other = Pending::from([(
            "other".to_owned(),
            vec![due("other", "jobs.other.actions[0]")],
        )]);
        save(dir.path(), &other, &theirs).unwrap();
        let mine = Pending::from([("g".to_owned(), vec![due("g", "jobs.g.actions[0]")])]);
        save(dir.path(), &mine, &ours).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\"other\"") && text.contains("\"g\""),
            "{text}"
        );

        // Loaded as it was saved, only ours.
        assert_eq!(load(dir.path(), &actions(), &ours), mine);
        // A config without that action drops the entry.
        assert!(load(dir.path(), &actions(), &theirs).is_empty());

        // Nothing of ours pending: the other daemon's entry stays; none left: no file.
        save(dir.path(), &Pending::new(), &ours).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains("\"g\"") && text.contains("\"other\""),
            "{text}"
        );
        save(dir.path(), &Pending::new(), &theirs).unwrap();
        assert!(!path.exists());
        assert!(load(dir.path(), &actions(), &ours).is_empty());
    }

    #[test]
    fn an_unusable_file_is_ignored_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        std::fs::write(&path, "{ not json").unwrap();
        let ours = |job: &str| job == "g";
        assert!(load(dir.path(), &actions(), &ours).is_empty());
        let mine = Pending::from([("g".to_owned(), vec![due("g", "jobs.g.actions[0]")])]);
        save(dir.path(), &mine, &ours).unwrap();
        assert_eq!(load(dir.path(), &actions(), &ours), mine);
    }
}
