//! Loading the credential-lifecycle keys: `[settings.credentials]`, `[jobs.NAME.credentials]`
//! and `[jobs.NAME.rotation]` (model in `config::lifecycle`, docs in docs/credentials.md).
//!
//! A child module of `load`, so it uses the same table walker and reports errors the same way
//! (`FILE:LINE:COLUMN: key.path: message`).

use super::{Loader, Tbl};
use crate::config::lifecycle::{
    CredentialSettings, GraphIdentity, JobLifecycle, RotationSpec, WatchSpec,
};
use crate::config::model::{CredentialSpec, EntraIdentity, SecretSource};

/// The keys of the lifecycle tables (part of `load::keys`).
pub mod keys {
    /// `[settings.credentials]`.
    pub const SETTINGS_CREDENTIALS: &[&str] = &[
        "watch",
        "warn_within",
        "auth",
        "graph_endpoint",
        "state_dir",
        "check_every",
    ];
    /// `[jobs.NAME.credentials]`: the job's own watch keys.
    pub const JOB_CREDENTIALS: &[&str] = &["watch", "warn_within", "auth", "graph_endpoint"];
    /// `[jobs.NAME.rotation]`.
    pub const ROTATION: &[&str] = &[
        "enabled",
        "rotate_within",
        "lifetime",
        "overlap",
        "propagation_timeout",
    ];
    /// `auth` methods of the Graph caller: the job itself, or an identity as a Key Vault `auth`.
    pub const GRAPH_AUTH_JOB: &str = "job";
}

impl Loader<'_> {
    /// `[settings.credentials]`, if present.
    pub(super) fn credential_settings(
        &mut self,
        settings: &Tbl<'_, '_>,
    ) -> Option<CredentialSettings> {
        let table = self.sub_table(settings, "credentials")?;
        self.check_keys(&table, keys::SETTINGS_CREDENTIALS);
        let defaults = self.watch_keys(&table, &WatchSpec::default());
        let state_dir = self
            .path(&table, "state_dir")
            .unwrap_or_else(|| self.base_dir.clone());
        let check_every = self
            .duration(&table, "check_every")
            .unwrap_or(CredentialSettings::DEFAULT_CHECK_EVERY);
        Some(CredentialSettings {
            state_dir,
            check_every,
            defaults,
        })
    }

    /// The watch keys of `table`, each defaulting to `base`'s.
    fn watch_keys(&mut self, table: &Tbl<'_, '_>, base: &WatchSpec) -> WatchSpec {
        let mut spec = base.clone();
        if let Some(watch) = self.boolean(table, "watch") {
            spec.watch = watch;
        }
        if let Some(within) = self.duration(table, "warn_within") {
            spec.warn_within = within;
        }
        if table.has("auth")
            && let Some(graph) = self.graph_identity(table)
        {
            spec.graph = graph;
        }
        if table.has("graph_endpoint") {
            spec.graph_endpoint = self.url(
                table,
                "graph_endpoint",
                "",
                super::Http::LoopbackOnly(
                    "it would send a Graph token unencrypted: use https (plain http only for a \
                     local test server)",
                ),
            );
        }
        spec
    }

    /// `auth = { method = "job" }` or an identity written as a Key Vault backend's `auth`.
    fn graph_identity(&mut self, table: &Tbl<'_, '_>) -> Option<GraphIdentity> {
        let auth = self.sub_table(table, "auth")?;
        let (method, span) = self.required_string(
            &auth,
            "method",
            &format!(
                "who reads the app registration from Graph: \"{}\" (the job's own credential) or one of {}",
                keys::GRAPH_AUTH_JOB,
                super::keys::AZURE_AUTH_METHODS.join(", ")
            ),
        )?;
        if method == keys::GRAPH_AUTH_JOB {
            self.check_keys(&auth, &["method"]);
            return Some(GraphIdentity::Job);
        }
        if !super::keys::AZURE_AUTH_METHODS.contains(&method.as_str()) {
            let mut choices = vec![keys::GRAPH_AUTH_JOB];
            choices.extend(super::keys::AZURE_AUTH_METHODS);
            let message = super::unknown_choice("method", &method, &choices);
            self.error(&span, &auth.path_of("method"), message);
            return None;
        }
        self.azure_auth(table)
            .map(|identity| GraphIdentity::Other(Box::new(identity)))
    }

    /// `[jobs.NAME.credentials]` over `[settings.credentials]`, and `[jobs.NAME.rotation]`.
    /// `identity` is the job's (None when it has an error of its own, already reported).
    pub(super) fn job_lifecycle(
        &mut self,
        job: &Tbl<'_, '_>,
        identity: Option<&EntraIdentity>,
    ) -> Option<JobLifecycle> {
        let defaults = self.watch_defaults.clone();
        let own = self.sub_table(job, "credentials");
        let mut watch = match &own {
            Some(table) => {
                self.check_keys(table, keys::JOB_CREDENTIALS);
                self.watch_keys(table, &defaults)
            }
            None => defaults.clone(),
        };
        let readable = identity.is_none_or(|identity| {
            matches!(
                identity.credential,
                CredentialSpec::ClientSecret(_) | CredentialSpec::Certificate { .. }
            )
        });
        // Watching is for client secrets and certificates: other credentials have no
        // expiring secret of the app's own. Opted in for all jobs, such jobs are left out;
        // opted in by the job itself, it is a mistake.
        if watch.watch && !readable {
            match own
                .as_ref()
                .and_then(|t| t.get("watch").map(|(k, _)| (t, k)))
            {
                Some((table, key)) if table.has("watch") => {
                    let path = table.path_of("watch");
                    self.error(
                        &key.span(),
                        &path,
                        "the job's credential is not a client secret or a certificate, so the \
                         app has no secret of its own to watch: remove watch = true",
                    );
                    return None;
                }
                _ => watch.watch = false,
            }
        }
        let rotation = self.rotation(job, identity, &watch)?;
        Some(JobLifecycle { watch, rotation })
    }

    /// `[jobs.NAME.rotation]`; `Some(None)` when absent or `enabled = false`.
    fn rotation(
        &mut self,
        job: &Tbl<'_, '_>,
        identity: Option<&EntraIdentity>,
        watch: &WatchSpec,
    ) -> Option<Option<RotationSpec>> {
        let Some(table) = self.sub_table(job, "rotation") else {
            return Some(None);
        };
        self.check_keys(&table, keys::ROTATION);
        let enabled = self.boolean(&table, "enabled").unwrap_or(false);
        let rotate_within = self.duration(&table, "rotate_within");
        let lifetime = self.duration(&table, "lifetime");
        let overlap = self.duration(&table, "overlap");
        let propagation_timeout = self.duration(&table, "propagation_timeout");
        if !enabled {
            return Some(None);
        }
        let (enabled_key, _) = table.get("enabled")?;
        let at = enabled_key.span();
        let path = table.path_of("enabled");
        let identity = identity?;
        let source = match &identity.credential {
            CredentialSpec::ClientSecret(SecretSource::From(reference)) => reference.clone(),
            CredentialSpec::ClientSecret(SecretSource::Env(var)) => {
                self.error(
                    &at,
                    &path,
                    format!(
                        "the job's client_secret comes from the environment variable {var}, which \
                         secret-sync cannot write a new secret to: read it with \
                         client_secret = {{ from = \"BACKEND\", ref = \"...\" }} from a backend \
                         (a file backend works), or turn rotation off"
                    ),
                );
                return None;
            }
            CredentialSpec::ClientSecret(SecretSource::File(file)) => {
                self.error(
                    &at,
                    &path,
                    format!(
                        "the job's client_secret is the file {} given without a backend, which \
                         secret-sync does not write to: define a file backend over its \
                         directory and read it with client_secret = {{ from = \"BACKEND\", \
                         ref = \"NAME\" }}, or turn rotation off",
                        file.display()
                    ),
                );
                return None;
            }
            _ => {
                self.error(
                    &at,
                    &path,
                    "only a client secret can be rotated, and this job's credential is not one \
                     (certificates are watched, not rotated): remove [rotation] or use a \
                     client_secret read from a backend",
                );
                return None;
            }
        };
        if matches!(watch.graph, GraphIdentity::Job) && identity.tenant_id.is_none() {
            return None;
        }
        let spec = RotationSpec {
            source,
            rotate_within: rotate_within.unwrap_or(RotationSpec::DEFAULT_ROTATE_WITHIN),
            lifetime: lifetime.unwrap_or(RotationSpec::DEFAULT_LIFETIME),
            overlap: overlap.unwrap_or(RotationSpec::DEFAULT_OVERLAP),
            propagation_timeout: propagation_timeout
                .unwrap_or(RotationSpec::DEFAULT_PROPAGATION_TIMEOUT),
        };
        if spec.rotate_within >= spec.lifetime {
            self.error(
                &table.at,
                &table.path_of("rotate_within"),
                format!(
                    "rotate_within ({}) is not shorter than lifetime ({}): every new secret \
                     would be due for rotation at once; shorten rotate_within or lengthen lifetime",
                    crate::credentials::shown(spec.rotate_within),
                    crate::credentials::shown(spec.lifetime)
                ),
            );
            return None;
        }
        if spec.overlap >= spec.lifetime {
            self.error(
                &table.at,
                &table.path_of("overlap"),
                "overlap is not shorter than lifetime: the old secret would outlive the new one",
            );
            return None;
        }
        Some(Some(spec))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::SyncConfig;
    use crate::config::lifecycle::GraphIdentity;
    use crate::config::load::parse;

    const FILE: &str = "/etc/secret-sync/secret-sync.toml";

    fn load(text: &str) -> Result<SyncConfig, Vec<String>> {
        parse(text, Path::new(FILE), &|_| None).map_err(|errors| {
            errors
                .errors()
                .iter()
                .map(|e| {
                    let (line, column) = e.position.unwrap_or((0, 0));
                    format!("{line}:{column} {}: {}", e.key, e.message)
                })
                .collect()
        })
    }

    fn job(secret: &str, extra: &str) -> String {
        format!(
            r#"
[settings.credentials]
watch = true
warn_within = "20d"
state_dir = "state"

[backends.local]
kind = "file"
dir = "/var/lib/secret-sync"

[jobs.graph]
tenant_id = "72f988bf-86f1-41af-91ab-2d7cd011db47"
client_id = "00000000-0000-0000-0000-000000000001"
client_secret = {secret}
scope = "https://graph.microsoft.com/.default"
targets = [{{ to = "local", name = "graph-token" }}]
{extra}
"#
        )
    }

    #[test]
    fn settings_and_rotation_load_with_their_defaults() {
        let config = load(&job(
            r#"{ from = "local", ref = "creds.json#client_secret" }"#,
            "[jobs.graph.rotation]\nenabled = true\nlifetime = \"90d\"\noverlap = \"2h\"\n",
        ))
        .unwrap();
        let credentials = &config.settings.credentials;
        assert_eq!(credentials.state_dir, Path::new("/etc/secret-sync/state"));
        assert_eq!(credentials.check_every, Duration::from_secs(3600));
        let lifecycle = &config.jobs[0].lifecycle;
        assert!(lifecycle.watch.watch);
        assert_eq!(
            lifecycle.watch.warn_within,
            Duration::from_secs(20 * 86_400)
        );
        assert!(matches!(lifecycle.watch.graph, GraphIdentity::Job));
        let rotation = lifecycle.rotation.as_ref().unwrap();
        assert_eq!(rotation.source.backend, "local");
        assert_eq!(
            rotation.source.reference.field.as_deref(),
            Some("client_secret")
        );
        assert_eq!(rotation.lifetime, Duration::from_secs(90 * 86_400));
        assert_eq!(rotation.overlap, Duration::from_secs(7200));
        assert_eq!(rotation.rotate_within, Duration::from_secs(30 * 86_400));
    }

    #[test]
    fn a_job_may_read_graph_as_another_identity() {
        let config = load(&job(
            r#"{ env = "S" }"#,
            "[jobs.graph.credentials]\nauth = { method = \"managed-identity\" }\ngraph_endpoint = \"http://127.0.0.1:9\"\n",
        ))
        .unwrap();
        let watch = &config.jobs[0].lifecycle.watch;
        assert!(matches!(watch.graph, GraphIdentity::Other(_)));
        assert_eq!(
            watch.graph_endpoint.as_ref().unwrap().as_str(),
            "http://127.0.0.1:9/"
        );
    }

    #[test]
    fn rotation_is_refused_for_a_secret_no_store_holds() {
        let errors = load(&job(
            r#"{ env = "GRAPH_SECRET" }"#,
            "[jobs.graph.rotation]\nenabled = true\n",
        ))
        .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].starts_with("18:1 jobs.graph.rotation.enabled: "),
            "{errors:#?}"
        );
        assert!(
            errors[0].contains("environment variable GRAPH_SECRET"),
            "{errors:#?}"
        );
        let errors = load(&job(
            r#"{ file = "secret.txt" }"#,
            "[jobs.graph.rotation]\nenabled = true\n",
        ))
        .unwrap_err();
        assert!(
            errors[0].contains("/etc/secret-sync/secret.txt given without a backend"),
            "{errors:#?}"
        );
    }

    #[test]
    fn unknown_keys_bad_durations_and_methods_are_reported_together() {
        let errors = load(&job(
            r#"{ from = "local", ref = "s" }"#,
            "[jobs.graph.credentials]\nwach = true\nauth = { method = \"jobb\" }\n[jobs.graph.rotation]\nenabled = true\nlifetime = \"forever\"\nrotate_within = \"200d\"\n",
        ))
        .unwrap_err();
        let text = errors.join("\n");
        assert!(
            text.contains(
                "jobs.graph.credentials.wach: unknown key \"wach\"; did you mean \"watch\"?"
            ),
            "{text}"
        );
        assert!(
            text.contains("jobs.graph.credentials.auth.method: "),
            "{text}"
        );
        assert!(
            text.contains("jobs.graph.rotation.lifetime: \"forever\" is not a duration"),
            "{text}"
        );
        assert!(
            text.contains("rotate_within (200d) is not shorter than lifetime"),
            "{text}"
        );
    }

    #[test]
    fn watch_for_all_jobs_leaves_out_jobs_without_a_secret_of_their_own() {
        let text = job(r#"{ env = "S" }"#, "").replace(
            "client_secret = { env = \"S\" }",
            "federated_token_file = \"/var/run/token\"",
        );
        let config = load(&text).unwrap();
        assert!(!config.jobs[0].lifecycle.watch.watch);
    }
}
