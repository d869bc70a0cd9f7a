//! After-write actions (issue 14): what runs when a job's token has been written, so that its
//! consumer picks it up (docs/configuration.md, "Actions"). The validated form and its loading.
//!
//! ```toml
//! [jobs.graph]
//! # ...
//! actions = [
//!   { exec = ["/usr/bin/systemctl", "restart", "graph-client.service"], timeout = "20s" },
//!   { signal = "HUP", pid_file = "/run/nginx.pid", process_name = "nginx" },
//!   { webhook = "https://hooks.example.com/token-rotated", signing_key = { env = "HOOK_KEY" } },
//! ]
//! targets = [{ to = "local", name = "graph.json", actions = [{ exec = ["/usr/local/bin/reload"] }] }]
//! ```
//!
//! A job's `actions` run once per pass in which at least one of its targets was created or
//! updated, after every target was tried; a target's `actions` run after that target's write.
//! Each action is exactly one of `exec`, `signal`, `webhook`.
//!
//! This is a child module of `load` (declared there), so it walks tables with the loader's own
//! helpers and reports errors the same way (`FILE:LINE:COLUMN: key.path: message`). Nothing
//! here holds a secret: a webhook's `signing_key` is a [`SecretSource`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::DeValue;
use url::Url;

use super::{Http, Loader, Tbl};
use crate::config::model::SecretSource;

/// The keys of an action table (part of `load::keys`).
pub mod keys {
    /// The keys that choose an action's kind: exactly one is given.
    pub const ACTION_KINDS: &[&str] = &["exec", "signal", "webhook"];
    /// `{ exec = [...] }`.
    pub const ACTION_EXEC: &[&str] = &["exec", "timeout"];
    /// `{ signal = "HUP", pid_file = ... }`.
    pub const ACTION_SIGNAL: &[&str] = &["signal", "pid_file", "process_name"];
    /// `{ webhook = "https://..." }`.
    pub const ACTION_WEBHOOK: &[&str] =
        &["webhook", "timeout", "signing_key", "attempts", "ca_file"];
    /// Every key an action table may hold (the union of the three kinds).
    pub const ACTION: &[&str] = &[
        "exec",
        "signal",
        "webhook",
        "timeout",
        "pid_file",
        "process_name",
        "signing_key",
        "attempts",
        "ca_file",
    ];
}

/// A job's or a target's `actions`, in the order of the file: one thin pointer, null when
/// there are none, so a job or target without actions costs 8 bytes and no allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
// A `Box<[T]>` would be a fat pointer: 16 bytes on every job and target of a 100,000-job config.
#[allow(clippy::box_collection)]
pub struct Actions(Option<Box<Vec<ActionSpec>>>);

impl Actions {
    fn new(actions: Vec<ActionSpec>) -> Actions {
        Actions((!actions.is_empty()).then(|| Box::new(actions)))
    }

    /// The actions, in file order (empty when there are none).
    pub fn as_slice(&self) -> &[ActionSpec] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

/// One after-write action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionSpec {
    /// Where it is in the file, e.g. `jobs.graph.actions[0]`: named in logs and reasons.
    pub key: String,
    pub kind: ActionKind,
}

/// What an action does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionKind {
    /// `exec = ["/abs/path", "arg", ...]`: run the command (no shell), wait at most `timeout`.
    Exec {
        /// The argument list; the first element is an absolute path.
        argv: Vec<String>,
        /// `timeout`, default [`ActionSpec::DEFAULT_EXEC_TIMEOUT`].
        timeout: Duration,
    },
    /// `signal = "HUP"`, `pid_file`, `process_name`: signal the process the pid file names.
    Signal {
        signal: SignalName,
        /// The pid file (its directory exists at load time).
        pid_file: PathBuf,
        /// `process_name`: the process's `/proc/PID/comm` must be this (against pid reuse).
        process_name: Option<String>,
    },
    /// `webhook = "https://..."`: POST a JSON document (no token) there.
    Webhook {
        /// https, or http to a loopback address.
        url: Url,
        /// `signing_key`: the HMAC-SHA256 key of the `X-Secret-Sync-Signature` header.
        signing_key: Option<SecretSource>,
        /// `timeout` of each attempt, default [`ActionSpec::DEFAULT_WEBHOOK_TIMEOUT`].
        timeout: Duration,
        /// `attempts` (1-10, default 3): tries, with backoff, on 5xx, 429, timeouts and
        /// connection errors.
        attempts: u32,
        /// `ca_file`: a PEM bundle of CA certificates trusted for the receiver beside the
        /// platform's (a receiver whose certificate a private CA signed). It exists at load time.
        ca_file: Option<PathBuf>,
    },
}

impl ActionSpec {
    /// The longest `timeout` an action may have: the daemon's SIGTERM grace
    /// (`daemon::SHUTDOWN_GRACE_MAX`), so stopping never abandons an action that could finish.
    pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(30);
    pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_WEBHOOK_ATTEMPTS: u32 = 3;

    /// `exec`, `signal` or `webhook` (the metrics' `kind` label).
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            ActionKind::Exec { .. } => "exec",
            ActionKind::Signal { .. } => "signal",
            ActionKind::Webhook { .. } => "webhook",
        }
    }

    /// A short description for summaries and logs: the command's path, the signal and pid
    /// file, the webhook's origin (never its query, which may carry a key).
    pub fn describe(&self) -> String {
        match &self.kind {
            ActionKind::Exec { argv, .. } => format!("exec {}", argv[0]),
            ActionKind::Signal {
                signal, pid_file, ..
            } => format!("signal {} to {}", signal.as_str(), pid_file.display()),
            ActionKind::Webhook { url, .. } => {
                format!(
                    "webhook {}{}",
                    url.origin().ascii_serialization(),
                    url.path()
                )
            }
        }
    }
}

/// The signals an action may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalName {
    Hup,
    Usr1,
    Usr2,
    Term,
    Int,
    Quit,
    Winch,
}

impl SignalName {
    pub const ALL: [SignalName; 7] = [
        SignalName::Hup,
        SignalName::Usr1,
        SignalName::Usr2,
        SignalName::Term,
        SignalName::Int,
        SignalName::Quit,
        SignalName::Winch,
    ];

    /// The name without `SIG`, as `kill -l` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            SignalName::Hup => "HUP",
            SignalName::Usr1 => "USR1",
            SignalName::Usr2 => "USR2",
            SignalName::Term => "TERM",
            SignalName::Int => "INT",
            SignalName::Quit => "QUIT",
            SignalName::Winch => "WINCH",
        }
    }

    /// `HUP`, `SIGHUP`, `hup`: one of [`SignalName::ALL`].
    fn parse(text: &str) -> Option<SignalName> {
        let upper = text.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        SignalName::ALL.into_iter().find(|s| s.as_str() == bare)
    }
}

/// Linux keeps at most 15 bytes of a process name in `/proc/PID/comm`.
const COMM_MAX: usize = 15;

impl Loader<'_> {
    /// `actions` of a job or target table: empty when absent or empty, `None` after an error
    /// (reported).
    pub(super) fn actions(&mut self, table: &Tbl<'_, '_>) -> Option<Actions> {
        let Some((_, item)) = table.get("actions") else {
            return Some(Actions::default());
        };
        let path = table.path_of("actions");
        let DeValue::Array(items) = item.get_ref() else {
            self.wrong_type(
                item,
                &path,
                "an array of tables, e.g. actions = [{ exec = [\"/usr/bin/systemctl\", \"reload\", \"nginx\"] }]",
            );
            return None;
        };
        let mut actions = Vec::with_capacity(items.len());
        let mut ok = true;
        for (index, item) in items.iter().enumerate() {
            let action_path = format!("{path}[{index}]");
            match self
                .table(action_path, item.span(), item)
                .and_then(|table| self.action(&table))
            {
                Some(action) => actions.push(action),
                None => ok = false,
            }
        }
        ok.then(|| Actions::new(actions))
    }

    fn action(&mut self, table: &Tbl<'_, '_>) -> Option<ActionSpec> {
        let given: Vec<&str> = super::keys::ACTION_KINDS
            .iter()
            .copied()
            .filter(|k| table.has(k))
            .collect();
        let kind = match given.as_slice() {
            ["exec"] => {
                self.check_keys(table, super::keys::ACTION_EXEC);
                self.exec(table)
            }
            ["signal"] => {
                self.check_keys(table, super::keys::ACTION_SIGNAL);
                self.signal(table)
            }
            ["webhook"] => {
                self.check_keys(table, super::keys::ACTION_WEBHOOK);
                self.webhook(table)
            }
            [] => {
                self.check_keys(table, super::keys::ACTION);
                self.error(
                    &table.at,
                    &table.path,
                    "an action is one of exec = [\"/abs/path\", ...], signal = \"HUP\" or \
                     webhook = \"https://...\"",
                );
                None
            }
            _ => {
                self.check_keys(table, super::keys::ACTION);
                self.error(
                    &table.at,
                    &table.path,
                    format!(
                        "give one of exec, signal or webhook per action, not {}; write two actions",
                        given.join(" and ")
                    ),
                );
                None
            }
        }?;
        Some(ActionSpec {
            key: table.path.clone(),
            kind,
        })
    }

    /// `timeout`, at most [`ActionSpec::MAX_TIMEOUT`].
    fn action_timeout(&mut self, table: &Tbl<'_, '_>, default: Duration) -> Option<Duration> {
        if !table.has("timeout") {
            return Some(default);
        }
        let timeout = self.duration(table, "timeout")?;
        if timeout > ActionSpec::MAX_TIMEOUT {
            let (_, item) = table.get("timeout")?;
            self.error(
                &item.span(),
                &table.path_of("timeout"),
                format!(
                    "is longer than {}, the daemon's SIGTERM grace: an action must be able to \
                     finish while the daemon stops; give at most \"30s\" (a command that needs \
                     longer can start the work in the background and return)",
                    humantime::format_duration(ActionSpec::MAX_TIMEOUT)
                ),
            );
            return None;
        }
        Some(timeout)
    }

    fn exec(&mut self, table: &Tbl<'_, '_>) -> Option<ActionKind> {
        let (_, item) = table.get("exec")?;
        let path = table.path_of("exec");
        let expected =
            "an array of strings, e.g. exec = [\"/usr/bin/systemctl\", \"reload\", \"nginx\"]";
        let DeValue::Array(items) = item.get_ref() else {
            self.wrong_type(item, &path, expected);
            return None;
        };
        let mut argv = Vec::with_capacity(items.len());
        for (index, arg) in items.iter().enumerate() {
            match arg.get_ref() {
                DeValue::String(text) if text.contains('\0') => {
                    self.error(
                        &arg.span(),
                        &format!("{path}[{index}]"),
                        "contains a NUL character",
                    );
                    return None;
                }
                DeValue::String(text) => argv.push(text.to_string()),
                _ => {
                    self.wrong_type(arg, &format!("{path}[{index}]"), "a string");
                    return None;
                }
            }
        }
        let timeout = self.action_timeout(table, ActionSpec::DEFAULT_EXEC_TIMEOUT);
        let Some(command) = argv.first() else {
            self.error(
                &item.span(),
                &path,
                format!("is empty: give the command and its arguments, {expected}"),
            );
            return None;
        };
        if !Path::new(command).is_absolute() {
            let span = items[0].span();
            self.error(
                &span,
                &format!("{path}[0]"),
                format!(
                    "\"{command}\" is not an absolute path: the command is run without a shell \
                     and without a PATH search; write its full path (e.g. \"/usr/bin/{}\"), or \
                     [\"/bin/sh\", \"-c\", \"...\"] for a shell",
                    Path::new(command)
                        .file_name()
                        .map_or("command".into(), |n| n.to_string_lossy())
                ),
            );
            return None;
        }
        Some(ActionKind::Exec {
            argv,
            timeout: timeout?,
        })
    }

    fn signal(&mut self, table: &Tbl<'_, '_>) -> Option<ActionKind> {
        let signal = self.string(table, "signal").and_then(|(text, span)| {
            let parsed = SignalName::parse(&text);
            if parsed.is_none() {
                let names: Vec<&str> = SignalName::ALL.iter().map(|s| s.as_str()).collect();
                self.error(
                    &span,
                    &table.path_of("signal"),
                    format!(
                        "unknown signal \"{}\": use one of {}",
                        text.escape_debug(),
                        names.join(", ")
                    ),
                );
            }
            parsed
        });
        let pid_file = if table.has("pid_file") {
            self.string(table, "pid_file").and_then(|(text, span)| {
                let path = self.resolve(&text);
                let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
                match dir {
                    Some(dir) if dir.is_dir() => Some(path),
                    _ => {
                        self.error(
                            &span,
                            &table.path_of("pid_file"),
                            format!(
                                "the directory of {} does not exist (a relative path is taken \
                                 from the config file's directory): check the path, or that \
                                 the service's runtime directory is mounted here",
                                path.display()
                            ),
                        );
                        None
                    }
                }
            })
        } else {
            self.missing(
                table,
                "pid_file",
                "the file holding the process's pid, e.g. pid_file = \"/run/nginx.pid\"",
            );
            None
        };
        let process_name = self.string(table, "process_name").and_then(|(name, span)| {
            if name.len() <= COMM_MAX && !name.contains(['/', '\n', '\0']) {
                return Some(name);
            }
            self.error(
                &span,
                &table.path_of("process_name"),
                format!(
                    "\"{}\" cannot be a process name in /proc/PID/comm, which holds at most \
                     {COMM_MAX} bytes and no /: give the first {COMM_MAX} bytes of the program's \
                     name, as `ps -o comm` shows it",
                    name.escape_debug()
                ),
            );
            None
        });
        if table.has("process_name") && process_name.is_none() {
            return None;
        }
        Some(ActionKind::Signal {
            signal: signal?,
            pid_file: pid_file?,
            process_name,
        })
    }

    fn webhook(&mut self, table: &Tbl<'_, '_>) -> Option<ActionKind> {
        let url = self.url(
            table,
            "webhook",
            "",
            Http::LoopbackOnly(
                "the document and its signature would cross the network unencrypted; use https",
            ),
        );
        let signing_key = if table.has("signing_key") {
            let key = self.secret_source(table, "signing_key", true);
            key.as_ref()?;
            key
        } else {
            None
        };
        let timeout = self.action_timeout(table, ActionSpec::DEFAULT_WEBHOOK_TIMEOUT);
        let attempts = if table.has("attempts") {
            self.integer_in(table, "attempts", 1..=10)
                .map(|n| u32::try_from(n).unwrap_or(1))
        } else {
            Some(ActionSpec::DEFAULT_WEBHOOK_ATTEMPTS)
        };
        let ca_file = if table.has("ca_file") {
            let file = self.existing_file(table, "ca_file");
            file.as_ref()?;
            file
        } else {
            None
        };
        Some(ActionKind::Webhook {
            url: url?,
            signing_key,
            timeout: timeout?,
            attempts: attempts?,
            ca_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const JOB: &str = r#"
[backends.local]
kind = "file"
dir = "out"

[jobs.graph]
tenant_id = "72f988bf-86f1-41af-91ab-2d7cd011db47"
client_id = "00000000-0000-0000-0000-000000000001"
client_secret = { env = "SECRET" }
scope = "https://graph.microsoft.com/.default"
targets = [{ to = "local", name = "graph.json" }]
"#;

    fn load(actions: &str) -> Result<crate::config::SyncConfig, String> {
        let text = format!("{JOB}actions = [{actions}]\n");
        super::super::parse(&text, Path::new("/tmp/t.toml"), &|_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn each_kind_loads_with_its_defaults() {
        let config = load(
            r#"{ exec = ["/bin/true"] }, { signal = "sighup", pid_file = "/tmp/x.pid" },
               { webhook = "http://127.0.0.1:9/h", signing_key = { env = "K" } }"#,
        )
        .unwrap();
        let actions = config.jobs[0].actions.as_slice();
        assert_eq!(actions.len(), 3);
        assert_eq!(actions[0].key, "jobs.graph.actions[0]");
        assert_eq!(
            actions[0].kind,
            ActionKind::Exec {
                argv: vec!["/bin/true".into()],
                timeout: ActionSpec::DEFAULT_EXEC_TIMEOUT
            }
        );
        assert!(matches!(
            actions[1].kind,
            ActionKind::Signal {
                signal: SignalName::Hup,
                process_name: None,
                ..
            }
        ));
        assert!(matches!(
            &actions[2].kind,
            ActionKind::Webhook { attempts: 3, signing_key: Some(SecretSource::Env(k)), .. } if k == "K"
        ));
        // Without actions, nothing is allocated.
        let none = super::super::parse(JOB, Path::new("/tmp/t.toml"), &|_| None).unwrap();
        assert!(none.jobs[0].actions.is_empty() && none.jobs[0].targets[0].actions.is_empty());
        assert_eq!(std::mem::size_of::<Actions>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn mistakes_are_refused_and_a_literal_signing_key_is_never_echoed() {
        for (action, needle) in [
            (
                r#"{ signal = "KILL", pid_file = "/tmp/x.pid" }"#,
                "unknown signal \"KILL\"",
            ),
            (
                r#"{ signal = "HUP", pid_file = "/tmp/x.pid", process_name = "a-very-long-process-name" }"#,
                "at most 15 bytes",
            ),
            (
                r#"{ signal = "HUP" }"#,
                "missing: the file holding the process's pid",
            ),
            (
                r#"{ webhook = "https://h.example/x", attempts = 11 }"#,
                "11 is out of range",
            ),
            (r#"{ exec = [] }"#, "is empty"),
            (r#"{ exec = ["/bin/true", 3] }"#, "expected a string"),
            (r#"{ }"#, "an action is one of exec"),
            (
                r#"{ webhook = "https://h.example/x", signing_key = "hunter2-literal" }"#,
                "never written in the config file",
            ),
        ] {
            let err = load(action).expect_err(action);
            assert!(err.contains(needle), "{action}: {err}");
            assert!(!err.contains("hunter2-literal"), "{err}");
        }
    }
}
