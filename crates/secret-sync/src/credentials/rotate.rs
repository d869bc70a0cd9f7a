//! Rotating a job's client secret, in the order that never leaves the job without a working
//! secret (issue 13 item 2, docs/credentials.md):
//!
//! 1. `addPassword` with an explicit end (`lifetime`) and a display name naming secret-sync,
//!    the job and this installation;
//! 2. poll the token endpoint with the new secret until it is accepted, at most
//!    `propagation_timeout` (Entra is eventually consistent: AADSTS7000215 meanwhile);
//! 3. write it back to the store the job reads it from, with the record (its keyId and
//!    expiry, the old keyId and when to retire it, the installation id), conditionally on the
//!    read that started the rotation;
//! 4. use it: from then on the job's token requests read the new secret;
//! 5. after `overlap`, `removePassword` the old keyId and clear it from the record.
//!
//! If 2 or 3 fails, the new keyId is removed and the old secret stays; the error says why. A
//! process killed at any step resumes from the record: a written-back secret's pending
//! retirement is done when due; a password added but never written back carries this
//! installation's id in its display name and is removed as an orphan once older than the
//! overlap ([`super::orphans`]). That id is in the record before any password carries it: a
//! first rotation writes the record with a new id (the value unchanged) before `addPassword`.

use std::time::Duration;

use anyhow::{Context, anyhow};
use entra_auth::graph::{GraphClient, NewPassword};
use secrecy::SecretString;
use secret_backends::{
    CredentialRecord, ErrorKind, SecretStore, SecretValue, StoredValue, WritePrecondition,
};
use time::OffsetDateTime;
use tracing::{info, warn};

use super::watch::Lifecycle;
use super::{
    Deadline, Decision, InUse, checked_later, decide, display_name, earlier, in_use, later,
    new_installation_id, orphans, protected,
};
use crate::cli::RotateArgs;
use crate::config::{JobSpec, RotationSpec};
use crate::engine::source;
use crate::failure::Failure;
use crate::output::rfc3339;

/// Who asks: the command rotates now; the daemon only when due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Command { dry_run: bool },
    Daemon,
}

impl Mode {
    fn dry_run(self) -> bool {
        matches!(self, Mode::Command { dry_run: true })
    }
}

/// What a rotation check did. Each line is for people; none holds a secret.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
    /// When the next step is due (a retirement), for the daemon's schedule.
    pub next_due: Option<OffsetDateTime>,
}

impl Report {
    fn say(&mut self, line: impl Into<String>) {
        let line = line.into();
        info!(target: crate::logging::LIFECYCLE, "{line}");
        self.lines.push(line);
    }
}

/// Everything a rotation works on, read at its start.
struct Rotation<'a> {
    lifecycle: &'a Lifecycle,
    job: &'a JobSpec,
    rotation: &'a RotationSpec,
    store: &'a dyn SecretStore,
    stored: StoredValue,
    graph: GraphClient,
    token: SecretString,
    object_id: String,
    app_id: String,
}

impl Rotation<'_> {
    fn name(&self) -> &str {
        &self.rotation.source.reference.name
    }

    fn field(&self) -> Option<&str> {
        self.rotation.source.reference.field.as_deref()
    }

    fn place(&self) -> String {
        format!(
            "backend {:?}, {}",
            self.rotation.source.backend, self.rotation.source.reference
        )
    }

    /// Writes `value` with `record` over what the rotation read.
    async fn write_back(
        &self,
        value: &SecretString,
        record: &CredentialRecord,
    ) -> anyhow::Result<()> {
        let value = SecretValue::new(value.clone()).map_err(|err| anyhow!("{err}"))?;
        let precondition = WritePrecondition::from_read(Some(self.stored.metadata.clone()), true);
        self.store
            .write_value(self.name(), self.field(), &value, record, &precondition)
            .await
            .with_context(|| format!("cannot write the client secret back to {}", self.place()))?;
        Ok(())
    }

    /// Records `installation` beside the secret before the first password that carries it is
    /// added: the same value, `record` with the id, written under the read's precondition.
    /// On a conflict the secret is read again: the same value and record with an id recorded
    /// meanwhile (another check of this installation) is used as it is; otherwise written
    /// again, a few times at most. A changed value or record ends the rotation, nothing added.
    /// Afterwards the rotation works on the new read (its precondition is the write-back's).
    /// Returns the id recorded.
    async fn record_installation(
        &mut self,
        record: &CredentialRecord,
        installation: &str,
    ) -> anyhow::Result<String> {
        let wanted = CredentialRecord {
            installation: Some(installation.to_owned()),
            ..record.clone()
        };
        let before = |what: &str| {
            format!(
                "{what} before adding a password (so that a password this rotation adds carries \
                 an id the next check reads, and is removed as an orphan if the rotation is \
                 lost); nothing was changed on the app"
            )
        };
        for _ in 0..3 {
            let value =
                SecretValue::new(self.stored.value.clone()).map_err(|err| anyhow!("{err}"))?;
            let precondition =
                WritePrecondition::from_read(Some(self.stored.metadata.clone()), true);
            match self
                .store
                .write_value(self.name(), self.field(), &value, &wanted, &precondition)
                .await
            {
                Ok(_) => {}
                Err(err) if err.kind() == ErrorKind::Conflict => {}
                Err(err) => {
                    return Err(anyhow::Error::new(err).context(before(&format!(
                        "cannot record this installation's id beside the secret in {}",
                        self.place()
                    ))));
                }
            }
            let fresh = self
                .store
                .read_stored(self.name(), self.field())
                .await
                .with_context(|| before("cannot read the job's client_secret again"))?;
            let fresh_record =
                sane_record(&self.job.name, fresh.record.clone(), &mut Report::default());
            let same_key = |a: &Option<String>, b: &Option<String>| match (a, b) {
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                (None, None) => true,
                _ => false,
            };
            {
                use secrecy::ExposeSecret;
                if fresh.value.expose_secret() != self.stored.value.expose_secret()
                    || !same_key(&fresh_record.key_id, &record.key_id)
                    || !same_key(&fresh_record.previous_key_id, &record.previous_key_id)
                {
                    return Err(anyhow!(
                        "{}",
                        before(&format!(
                            "the client secret or the record beside it in {} changed since this \
                             rotation read it (another rotation, or a change by hand): the \
                             rotation stops",
                            self.place()
                        ))
                    ));
                }
            }
            self.stored = fresh;
            if let Some(id) = fresh_record.installation {
                return Ok(id);
            }
        }
        Err(anyhow!(
            "{}",
            before(&format!(
                "the record beside the secret in {} keeps changing under this rotation \
                 (another writer): cannot record this installation's id",
                self.place()
            ))
        ))
    }

    async fn remove(&self, key_id: &str) -> anyhow::Result<()> {
        self.graph
            .remove_password(&self.token, &self.object_id, key_id)
            .await
            .with_context(|| format!("cannot remove the password {key_id} from the app"))
    }
}

/// One rotation check of `job`: resume what the record says is pending, remove this
/// installation's orphans, and rotate (the command: now; the daemon: when due). Every step
/// runs within the job's deadline ([`Deadline`]); a password added before a failure (or the
/// deadline) is removed again within [`Deadline::UNDO`].
pub async fn check(lifecycle: &Lifecycle, job: &JobSpec, mode: Mode) -> anyhow::Result<Report> {
    let deadline = Deadline::of(job);
    let mut report = Report::default();
    let rotation = job.lifecycle.rotation.as_ref().ok_or_else(|| {
        anyhow!(
            "job {:?} does not rotate its client secret: set [jobs.{}.rotation] enabled = true",
            job.name,
            job.name
        )
    })?;
    let store = lifecycle
        .stores
        .get(&rotation.source.backend)
        .ok_or_else(|| anyhow!("backend {:?} is not set up", rotation.source.backend))?
        .as_ref();
    let graph = lifecycle.graph(job).await?;
    let (stored, token, application) = deadline
        .run("reading the job's secret and the app registration", async {
            let stored = store
                .read_stored(
                    &rotation.source.reference.name,
                    rotation.source.reference.field.as_deref(),
                )
                .await
                .context("cannot read the job's client_secret")?;
            let client_id = match &job.identity.client_id {
                Some(value) => source::read_value(value, &lifecycle.stores, "client_id").await?,
                None => return Err(anyhow!("the job has no client_id")),
            };
            let token = lifecycle.graph_token(job, Some(&stored.value)).await?;
            let application = graph
                .application(&token, &client_id)
                .await
                .context("cannot read the app registration from Microsoft Graph")?;
            Ok((stored, token, application))
        })
        .await?;
    let now = OffsetDateTime::now_utc();
    let record = sane_record(&job.name, stored.record.clone(), &mut report);
    let installation = record
        .installation
        .clone()
        .unwrap_or_else(new_installation_id);
    let used = in_use(
        &application.password_credentials,
        record.key_id.as_deref(),
        Some(&stored.value),
    );
    // Never removed by this check, whatever the record says (the secret in use).
    let guarded = protected(
        &application.password_credentials,
        record.key_id.as_deref(),
        &stored.value,
    );
    let is_guarded = |key: &str| guarded.iter().any(|g| g.eq_ignore_ascii_case(key));
    let mut ctx = Rotation {
        lifecycle,
        job,
        rotation,
        store,
        graph,
        token,
        object_id: application.id.clone(),
        app_id: application.app_id.clone(),
        stored,
    };
    let dry = mode.dry_run();

    // 1. A retirement the record says is pending: done when due, else waited for. A retirement
    // further ahead than `overlap` is none a rotation wrote (it writes now + overlap): the
    // record was edited or is corrupt, so it is not trusted: the old password stays (it is
    // not removed early, nor waited for until that time, which would stop rotation), and
    // the check goes on.
    let implausible = record
        .retire_previous_on
        .filter(|at| *at > later(now, rotation.overlap));
    if let (Some(previous), Some(at)) = (&record.previous_key_id, implausible) {
        warn!(job = %job.name, previous_key_id = %previous, retire_previous_on = %rfc3339(at),
            "the record's retirement time is further ahead than overlap: not trusted");
        report.say(format!(
            "job {}: the record beside the secret retires the old password {previous} at {}, further ahead than overlap ({}) from now, which no rotation writes (edited or corrupt): it is not trusted, and {previous} is not removed; remove it by hand once nothing uses it",
            job.name,
            rfc3339(at),
            super::shown(rotation.overlap)
        ));
    }
    if let Some(previous) = record.previous_key_id.clone()
        && implausible.is_none()
    {
        let present = application
            .password_credentials
            .iter()
            .any(|p| p.key_id.eq_ignore_ascii_case(&previous));
        let due = record.retire_previous_on.is_none_or(|at| at <= now);
        // The record names the secret in use as the one to retire (put back by hand without
        // clearing the record, or edited): it is kept, and the record cleared.
        let in_use_now = present && is_guarded(&previous);
        if present && !due && !in_use_now {
            let at = record.retire_previous_on.unwrap_or(now);
            report.next_due = Some(at);
            report.say(format!(
                "job {}: the old password {previous} is retired at {} (after the overlap); nothing else to do until then",
                job.name,
                rfc3339(at)
            ));
            return Ok(report);
        }
        if dry {
            report.say(format!(
                "job {}: would remove the old password {previous} (its overlap has passed) and clear it from the record in {}",
                job.name,
                ctx.place()
            ));
        } else {
            let cleared = CredentialRecord {
                previous_key_id: None,
                retire_previous_on: None,
                installation: Some(installation.clone()),
                ..record.clone()
            };
            deadline
                .run("removing the old password after the overlap", async {
                    if present && !in_use_now {
                        ctx.remove(&previous).await?;
                    }
                    let written = ctx.write_back(&ctx.stored.value, &cleared).await;
                    if present && !in_use_now {
                        written.context(
                            "the old password was removed, but the record beside the secret \
                             still names it",
                        )
                    } else {
                        written.context("cannot clear the old password from the record")
                    }
                })
                .await?;
            if in_use_now {
                warn!(job = %job.name, previous_key_id = %previous,
                    "the record names the secret in use as the old password to retire: kept");
                report.say(format!(
                    "job {}: the record names the password {previous} as the old one to retire, but it is the secret in use (its keyId is recorded as the secret stored, or its hint matches it): it is not removed, and the record no longer names it",
                    job.name
                ));
            } else {
                report.say(format!(
                    "job {}: removed the old password {previous} after the overlap",
                    job.name
                ));
            }
        }
        return Ok(report);
    }

    // 2. This installation's forgotten passwords (a rotation killed before its write-back).
    let mut keep: Vec<&str> = [
        used.key_id(),
        record.key_id.as_deref(),
        record.previous_key_id.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    keep.extend(guarded.iter().map(String::as_str));
    for orphan in orphans(
        &application.password_credentials,
        &installation,
        &keep,
        rotation.overlap,
        now,
    ) {
        if dry {
            report.say(format!(
                "job {}: would remove the password {} this installation created and no store records",
                job.name, orphan.key_id
            ));
        } else {
            deadline
                .run(
                    "removing a password this installation created",
                    ctx.remove(&orphan.key_id),
                )
                .await?;
            report.say(format!(
                "job {}: removed the password {} this installation created and no store records",
                job.name, orphan.key_id
            ));
        }
    }

    // 3. Rotate: the command now, the daemon when due.
    let end = used.key_id().and_then(|key| {
        application
            .password_credentials
            .iter()
            .find(|p| p.key_id.eq_ignore_ascii_case(key))
            .and_then(|p| p.end)
    });
    if mode == Mode::Daemon {
        match decide(&used, end, rotation.rotate_within, now) {
            Decision::NotDue { expires_on } => {
                report.next_due = Some(earlier(expires_on, rotation.rotate_within));
                return Ok(report);
            }
            Decision::Due { why } => info!(job = %job.name, "{why}: rotating"),
        }
    }
    let new_end = checked_later(now, rotation.lifetime)
        .map(whole_second)
        .ok_or_else(|| {
            anyhow!(
                "jobs.{}.rotation.lifetime ({}) ends past the year 9999, which no store or \
                 Graph can record: configure a lifetime the tenant's policy allows (e.g. 180d)",
                job.name,
                super::shown(rotation.lifetime)
            )
        })?;
    if dry {
        let name = display_name(&job.name, &installation);
        report.say(format!(
            "job {}: would add a password {name:?} to app {} ending {} (lifetime {}), wait until the token endpoint accepts it (at most {}), write it to {} with its keyId, then remove the old password {} after the overlap ({})",
            job.name,
            ctx.app_id,
            rfc3339(new_end),
            super::shown(rotation.lifetime),
            super::shown(rotation.propagation_timeout),
            ctx.place(),
            used.key_id().unwrap_or("(not known: the secret in use is ambiguous)"),
            super::shown(rotation.overlap),
        ));
        if record.installation.is_none() {
            report.say(format!(
                "job {}: would first record this installation's id ({installation}) beside the secret in {}, the secret unchanged",
                job.name,
                ctx.place()
            ));
        }
        return Ok(report);
    }
    // The installation id goes into the record before any password carries it: a rotation
    // lost after addPassword (killed, its undo failed) leaves a password whose display name
    // carries an id the next check reads, so it is removed as an orphan after the overlap.
    let installation = match record.installation.clone() {
        Some(id) => id,
        None => {
            deadline
                .run(
                    "recording this installation's id beside the secret",
                    ctx.record_installation(&record, &installation),
                )
                .await?
        }
    };
    let name = display_name(&job.name, &installation);
    let new = deadline
        .run(
            "adding a new client secret (a password Graph may have added in the meantime \
             carries this installation's id in its display name and is removed as an orphan \
             once older than the overlap)",
            async {
                ctx.graph
                    .add_password(&ctx.token, &ctx.object_id, &name, new_end)
                    .await
                    .map_err(|err| {
                        let changed = if err.status().is_some_and(|s| (400..500).contains(&s)) {
                            "nothing was changed".to_owned()
                        } else {
                            format!(
                                "if Graph added a password anyway, its display name {name:?} marks \
                             it: it is removed as this installation's orphan once older than the \
                             overlap ({}), by the daemon or the next `secret-sync rotate`",
                                super::shown(rotation.overlap)
                            )
                        };
                        anyhow::Error::new(err).context(format!(
                            "Microsoft Graph did not add a new client secret ({changed})"
                        ))
                    })
            },
        )
        .await?;
    let new_key = new.credential.key_id.clone();
    info!(job = %job.name, key_id = %new_key, "new password added; waiting until it is accepted");

    // Prove it, then write it back; undo on either failure.
    let result = deadline
        .run("proving the new secret and writing it back", async {
            identify(&new, new_end)?;
            prove(&ctx, &new).await?;
            let written = CredentialRecord {
                key_id: Some(new_key.clone()),
                key_expires_on: Some(new.credential.end.map_or(new_end, whole_second)),
                previous_key_id: used.key_id().map(str::to_owned),
                retire_previous_on: used
                    .key_id()
                    .map(|_| whole_second(later(OffsetDateTime::now_utc(), rotation.overlap))),
                installation: Some(installation.clone()),
            };
            ctx.write_back(&new.secret, &written).await?;
            Ok::<CredentialRecord, anyhow::Error>(written)
        })
        .await;
    let written = match result {
        Ok(written) => written,
        Err(err) => {
            let undo = Deadline::after(Deadline::UNDO, &job.pass_timeout.key)
                .run("removing the new password again", ctx.remove(&new_key))
                .await;
            let undo = match undo {
                Ok(()) => format!("the new password {new_key} was removed again"),
                Err(undo) => format!(
                    "the new password {new_key} could not be removed ({undo:#}): it is removed as \
                     this installation's orphan once older than the overlap ({}), by the daemon \
                     or the next `secret-sync rotate`; or remove it by hand now (az ad app \
                     credential delete --id {} --key-id {new_key})",
                    super::shown(rotation.overlap),
                    ctx.app_id
                ),
            };
            return Err(err.context(format!(
                "rotation of job {} failed; {undo}; the old secret is kept in {}",
                job.name,
                ctx.place()
            )));
        }
    };
    // 4. Use it: the cached token of the old secret is the old one's; the job's next token
    // request reads the new secret from the store (its cache key differs).
    report.say(format!(
        "job {}: rotated: the new password {new_key} (ending {}) is in {}",
        job.name,
        rfc3339(written.key_expires_on.unwrap_or(new_end)),
        ctx.place()
    ));
    match (&written.previous_key_id, written.retire_previous_on) {
        (Some(previous), Some(at)) => {
            report.next_due = Some(at);
            report.say(format!(
                "job {}: the old password {previous} stays valid for the overlap and is removed at {} (by the daemon, or `secret-sync rotate --job {}` run then)",
                job.name,
                rfc3339(at),
                job.name
            ));
        }
        _ => {
            warn!(job = %job.name, "the password the job used before is not known (ambiguous hint): it is not removed; remove it by hand");
            report.say(format!(
                "job {}: which password the job used before was {}: it is not removed; remove it by hand once nothing uses it",
                job.name,
                InUse::Ambiguous.how()
            ));
        }
    }
    Ok(report)
}

/// Whether `addPassword`'s answer describes the password asked for, so that its `secretText`
/// can be written back under its `keyId`: its end is the one asked for (within a day: Graph
/// echoes it), and its `hint`, when given, is the secret's first three characters. Otherwise
/// the rotation fails and the added keyId is removed again; nothing is written back. (A keyId
/// that is missing or not a GUID is refused by `GraphClient::add_password` already.)
fn identify(new: &NewPassword, asked: OffsetDateTime) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    let end = new.credential.end.ok_or_else(|| {
        anyhow!(
            "Graph's addPassword answer gives the new password {} no endDateTime that is a date \
             in the years 1 to 9999, so what was added is not what was asked for: the answer \
             is not used",
            new.credential.key_id
        )
    })?;
    if (end - asked).abs() > time::Duration::days(1) {
        return Err(anyhow!(
            "Graph's addPassword answer gives the new password {} the end {}, not the {} asked \
             for, so it does not describe the password asked for: the answer is not used",
            new.credential.key_id,
            rfc3339(end),
            rfc3339(asked)
        ));
    }
    let prefix: String = new.secret.expose_secret().chars().take(3).collect();
    if let Some(hint) = &new.credential.hint
        && *hint != prefix
    {
        return Err(anyhow!(
            "Graph's addPassword answer gives the new password {} a hint ({} characters) that is \
             not the first three characters of its secretText, so the secret cannot be told to \
             be that password's: the answer is not used",
            new.credential.key_id,
            hint.chars().count()
        ));
    }
    Ok(())
}

/// The record as read, without what no rotation writes: a `key_id` or `previous_key_id` that
/// is not a GUID (Graph's keyIds are) and an `installation` that is not a short id. Such a
/// field (edited, corrupt, or crafted by whoever can write the store) is dropped with a line in
/// the report: it is never sent to Graph, never makes a removal, and the next write-back
/// replaces it with what this rotation knows (a field kept as read could not be written back
/// at all, e.g. one longer than a tag holds, and would stop every later check).
fn sane_record(job: &str, mut record: CredentialRecord, report: &mut Report) -> CredentialRecord {
    let mut dropped = Vec::new();
    for (field, value) in [
        ("key_id", &mut record.key_id),
        ("previous_key_id", &mut record.previous_key_id),
    ] {
        match value.as_deref().map(|v| uuid::Uuid::try_parse(v.trim())) {
            Some(Ok(id)) => *value = Some(id.hyphenated().to_string()),
            Some(Err(_)) => {
                *value = None;
                dropped.push(field);
            }
            None => {}
        }
    }
    if record.previous_key_id.is_none() {
        record.retire_previous_on = None;
    }
    if record.installation.as_deref().is_some_and(|id| {
        id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    }) {
        record.installation = None;
        dropped.push("installation");
    }
    if !dropped.is_empty() {
        warn!(job = %job, fields = ?dropped, "the record beside the secret holds fields no rotation writes: ignored");
        report.say(format!(
            "job {job}: the record beside the secret holds a {} that no rotation writes (not a GUID / not an installation id): it is ignored and replaced at the next write-back",
            dropped.join(", ")
        ));
    }
    record
}

/// `at` without its fraction of a second (records store whole seconds).
fn whole_second(at: OffsetDateTime) -> OffsetDateTime {
    at.replace_nanosecond(0).unwrap_or(at)
}

/// Polls the token endpoint with the new secret until it is accepted, backing off from 1 s to
/// 10 s, at most `propagation_timeout`. Only "not (yet) a valid secret" (AADSTS7000215) is
/// waited out; any other refusal ends the rotation.
async fn prove(ctx: &Rotation<'_>, new: &NewPassword) -> anyhow::Result<()> {
    let app = ctx.lifecycle.job_app(ctx.job, Some(&new.secret)).await?;
    let client = ctx.lifecycle.cache.client();
    let started = tokio::time::Instant::now();
    let deadline = started + ctx.rotation.propagation_timeout;
    let mut wait = Duration::from_secs(1);
    loop {
        match client.acquire(&app, &ctx.job.scope).await {
            Ok(_) => {
                info!(job = %ctx.job.name, after_ms = started.elapsed().as_millis() as u64, "the new secret is accepted");
                return Ok(());
            }
            Err(err) if err.aadsts_codes().contains(&7_000_215) => {
                let now = tokio::time::Instant::now();
                if now + wait > deadline {
                    return Err(anyhow!(
                        "the token endpoint still refused the new secret after {} \
                         (propagation_timeout; last answer: {err}): Entra may be slow to \
                         propagate it; raise propagation_timeout",
                        super::shown(ctx.rotation.propagation_timeout)
                    ));
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
            Err(err) => {
                return Err(
                    anyhow::Error::new(err).context("the token endpoint refused the new secret")
                );
            }
        }
    }
}

/// `secret-sync rotate --job NAME [--dry-run]`.
pub async fn run(args: RotateArgs) -> Result<(), Failure> {
    let jobs = vec![args.job.clone()];
    let lifecycle = Lifecycle::load(&args.config, &jobs).await?;
    let job = lifecycle
        .config
        .job(&args.job)
        .ok_or_else(|| Failure::usage(anyhow!("no job {:?}", args.job)))?;
    if job.lifecycle.rotation.is_none() {
        return Err(Failure::usage(anyhow!(
            "job {:?} does not rotate its client secret: add [jobs.{}.rotation] with enabled = true \
             (its client_secret must be read from a backend)",
            job.name,
            job.name
        )));
    }
    let report = check(
        &lifecycle,
        job,
        Mode::Command {
            dry_run: args.dry_run,
        },
    )
    .await
    .map_err(Failure::failed)?;
    let mut text = report.lines.join("\n");
    if text.is_empty() {
        text = format!("job {}: nothing to do", job.name);
    }
    crate::output::print(&format!("{text}\n")).map_err(Failure::failed)
}
