//! The validated form of the credential-lifecycle keys (issue 13): `[settings.credentials]`,
//! `[jobs.NAME.credentials]` and `[jobs.NAME.rotation]` (docs/credentials.md).
//!
//! Watching reads the app registration's `passwordCredentials` and `keyCredentials` from
//! Microsoft Graph; rotating adds a password, proves it works, writes it back to the store the
//! job reads its `client_secret` from, and removes the old one after an overlap. Both are
//! opt-in because they need a Graph permission. Nothing here holds a secret.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::model::{BackendRef, EntraIdentity};

/// `[settings.credentials]`: what every job shares, and the defaults of jobs.
#[derive(Debug, Clone)]
pub struct CredentialSettings {
    /// `state_dir`: where the last watch is recorded (`credentials-state.json`), so that `plan`
    /// shows it without a Graph call. Default: the config file's directory.
    pub state_dir: PathBuf,
    /// `check_every`: how often the daemon watches (and rotates when due). Default 1 hour.
    pub check_every: Duration,
    /// The keys of `[settings.credentials]` that jobs inherit (`watch` among them).
    pub defaults: WatchSpec,
}

impl CredentialSettings {
    /// Default of [`CredentialSettings::check_every`].
    pub const DEFAULT_CHECK_EVERY: Duration = Duration::from_secs(3600);
    /// Default of [`WatchSpec::warn_within`]: 30 days.
    pub const DEFAULT_WARN_WITHIN: Duration = Duration::from_secs(30 * 86_400);
    /// The state file's name inside `state_dir`.
    pub const STATE_FILE: &'static str = "credentials-state.json";
}

/// The watch keys, as `[settings.credentials]` gives them or a job overrides them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchSpec {
    /// `watch` (default false): read the app's credential expiries from Graph.
    pub watch: bool,
    /// `warn_within` (default 30 days): a credential in use expiring within this is warned about.
    pub warn_within: Duration,
    /// `auth`: who reads (and, for rotation, writes) the app registration.
    pub graph: GraphIdentity,
    /// `graph_endpoint`: Graph's base URL; `None`: the cloud's (`Cloud::graph_endpoint`).
    pub graph_endpoint: Option<Url>,
}

impl Default for WatchSpec {
    fn default() -> Self {
        WatchSpec {
            watch: false,
            warn_within: CredentialSettings::DEFAULT_WARN_WITHIN,
            graph: GraphIdentity::Job,
            graph_endpoint: None,
        }
    }
}

/// Whose Graph token reads and changes the app registration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GraphIdentity {
    /// `auth = { method = "job" }` (default): the job's own app and credential.
    Job,
    /// `auth = { method = "managed-identity" | "client-secret" | ... }`, as a Key Vault
    /// backend's `auth`: another identity, e.g. one holding `Application.ReadWrite.All`.
    Other(Box<EntraIdentity>),
}

/// `[jobs.NAME.rotation]`: rotate the job's client secret before it expires.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RotationSpec {
    /// Where the job's `client_secret` is read from, and so where the new one is written:
    /// always a configured backend (validated).
    pub source: BackendRef,
    /// `rotate_within` (default 30 days): rotate when the secret in use expires within this.
    pub rotate_within: Duration,
    /// `lifetime` (default 180 days): the new secret's lifetime, sent explicitly.
    pub lifetime: Duration,
    /// `overlap` (default 24 hours): how long the old secret stays valid after the new one is
    /// written, for consumers of the old one.
    pub overlap: Duration,
    /// `propagation_timeout` (default 3 minutes): how long the new secret may take to work.
    pub propagation_timeout: Duration,
}

impl RotationSpec {
    pub const DEFAULT_ROTATE_WITHIN: Duration = Duration::from_secs(30 * 86_400);
    pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(180 * 86_400);
    pub const DEFAULT_OVERLAP: Duration = Duration::from_secs(86_400);
    pub const DEFAULT_PROPAGATION_TIMEOUT: Duration = Duration::from_secs(180);
}

/// A job's lifecycle settings: its own `[jobs.NAME.credentials]` over `[settings.credentials]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct JobLifecycle {
    /// The watch keys in effect for the job.
    pub watch: WatchSpec,
    /// `[jobs.NAME.rotation]` with `enabled = true`.
    pub rotation: Option<RotationSpec>,
}

impl JobLifecycle {
    /// Whether Graph is read for this job at all (watch or rotation).
    pub fn uses_graph(&self) -> bool {
        self.watch.watch || self.rotation.is_some()
    }
}
