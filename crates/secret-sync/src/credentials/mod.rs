//! The credential lifecycle (issue 13, docs/credentials.md): watching when an app's own client
//! secrets and certificates expire, and rotating the client secret a job reads from a store.
//!
//! - this file: the pure rules (which secret is in use, days left, whether to rotate, which
//!   forgotten passwords may go), tested without any server;
//! - `watch.rs`: reading the app from Microsoft Graph and the `credentials` command;
//! - `rotate.rs`: the rotation in its order (add, prove, write back, use, retire) and `rotate`;
//! - `state.rs`: the last watch on disk, which `plan` shows without a Graph call;
//! - `daemon.rs`: the daemon's periodic watch and rotation.
//!
//! Nothing here logs, prints or returns a secret or token: the only secret values handled are
//! the job's client secret (read from its store, compared by its first three characters with
//! Graph's `hint`) and a new secret from `addPassword` (written to the store, never shown).

pub mod daemon;
pub mod rotate;
pub mod state;
pub mod watch;

use std::future::Future;
use std::time::Duration;

use entra_auth::graph::PasswordCredential;
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use crate::config::JobSpec;

/// The deadline of one credential check of a job (a watch, a rotation check): the job's
/// `pass_timeout`, the same bound as its token pass, counted from the start of the check. Every
/// step runs under it (the store read, the Graph token, each Graph call, proving a new secret,
/// the write-back), so a Graph, token endpoint or store that drips or hangs cannot hold
/// `credentials`, `rotate` or the daemon's check longer. Only the undo of a password added in
/// a failed rotation gets [`Deadline::UNDO`] of its own after it.
#[derive(Debug, Clone)]
pub struct Deadline {
    at: tokio::time::Instant,
    limit: Duration,
    key: String,
}

impl Deadline {
    /// How long removing a just-added password may take once the rotation failed (or ran
    /// into its deadline): one Graph request timeout.
    pub const UNDO: Duration = Duration::from_secs(30);

    /// The deadline of a check of `job` starting now.
    pub fn of(job: &JobSpec) -> Deadline {
        Deadline::after(job.pass_timeout.limit, &job.pass_timeout.key)
    }

    /// A deadline `limit` from now, set by the config key `key` (for messages).
    pub fn after(limit: Duration, key: &str) -> Deadline {
        Deadline {
            at: tokio::time::Instant::now() + limit,
            limit,
            key: key.to_owned(),
        }
    }

    /// `step` under this deadline: its own result, or an error naming the deadline and its key.
    pub async fn run<T>(
        &self,
        step: &str,
        work: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        match tokio::time::timeout_at(self.at, work).await {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!(
                "{step}: did not finish within the job's deadline, {key} = \"{limit}\" (a \
                 credential check is bounded like the job's pass): Microsoft Graph, the token \
                 endpoint or the store answers too slowly or not at all; fix or replace it, or \
                 raise {key}",
                key = self.key,
                limit = humantime::format_duration(self.limit),
            )),
        }
    }
}

/// Which of the app's credentials the job's is: a password (client secret job) or a
/// certificate (certificate job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InUse {
    /// The keyId secret-sync recorded beside the secret when it created it.
    Recorded(String),
    /// The one password whose `hint` is the secret's first three characters.
    Hint(String),
    /// The one certificate whose `customKeyIdentifier` is the SHA-1 thumbprint of the job's
    /// certificate.
    Thumbprint(String),
    /// Several passwords share the hint (or none matches), or several certificates the
    /// thumbprint: cannot tell.
    Ambiguous,
    /// Nothing is known: the secret could not be read, or no certificate of the app is the
    /// job's.
    Unknown,
}

impl InUse {
    /// The keyId, when known.
    pub fn key_id(&self) -> Option<&str> {
        match self {
            InUse::Recorded(id) | InUse::Hint(id) | InUse::Thumbprint(id) => Some(id),
            _ => None,
        }
    }

    /// How it was found, for output.
    pub fn how(&self) -> &'static str {
        match self {
            InUse::Recorded(_) => "recorded",
            InUse::Hint(_) => "hint",
            InUse::Thumbprint(_) => "thumbprint",
            InUse::Ambiguous => "ambiguous",
            InUse::Unknown => "unknown",
        }
    }
}

/// The rule of issue 13 item 1: the keyId recorded when secret-sync created the secret (if the
/// app still has it); otherwise the one password whose hint matches the secret's first three
/// characters when exactly one does; otherwise ambiguous.
pub fn in_use(
    passwords: &[PasswordCredential],
    recorded: Option<&str>,
    secret: Option<&SecretString>,
) -> InUse {
    if let Some(recorded) = recorded
        && passwords
            .iter()
            .any(|p| p.key_id.eq_ignore_ascii_case(recorded))
    {
        return InUse::Recorded(recorded.to_owned());
    }
    let Some(secret) = secret else {
        return InUse::Unknown;
    };
    let prefix: String = secret.expose_secret().chars().take(3).collect();
    let matching: Vec<&PasswordCredential> = passwords
        .iter()
        .filter(|p| p.hint.as_deref() == Some(prefix.as_str()))
        .collect();
    match matching.as_slice() {
        [one] => InUse::Hint(one.key_id.clone()),
        _ => InUse::Ambiguous,
    }
}

/// The certificate of the app that is the job's `certificate`: the one keyCredential whose
/// `customKeyIdentifier` is its SHA-1 thumbprint; ambiguous when several are, unknown when none.
pub fn certificate_in_use(
    certificates: &[entra_auth::graph::KeyCredential],
    certificate: &entra_auth::CertificateCredential,
) -> InUse {
    let matching: Vec<&entra_auth::graph::KeyCredential> = certificates
        .iter()
        .filter(|k| k.is_of(certificate))
        .collect();
    match matching.as_slice() {
        [one] => InUse::Thumbprint(one.key_id.clone()),
        [] => InUse::Unknown,
        _ => InUse::Ambiguous,
    }
}

/// Whole days from `now` to `end`, rounded down (negative once expired).
pub fn days_left(end: OffsetDateTime, now: OffsetDateTime) -> i64 {
    let seconds = (end - now).whole_seconds();
    seconds.div_euclid(86_400)
}

/// A duration for messages: whole days as `30d`, else humantime's form (`2h 30m`).
pub fn shown(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 86_400 && secs.is_multiple_of(86_400) && d.subsec_nanos() == 0 {
        format!("{}d", secs / 86_400)
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// `std` duration to `time` duration, saturating.
pub fn span(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

/// The latest time this crate handles (the end of the year 9999, UTC).
const LATEST: OffsetDateTime = time::macros::datetime!(9999-12-31 23:59:59 UTC);
/// The earliest (the start of the year 1, UTC).
const EARLIEST: OffsetDateTime = time::macros::datetime!(0001-01-01 00:00:00 UTC);

/// `at + d`, or `None` past the year 9999 (an absurd duration or date): never a panic.
pub fn checked_later(at: OffsetDateTime, d: Duration) -> Option<OffsetDateTime> {
    at.checked_add(span(d)).filter(|t| *t <= LATEST)
}

/// `at + d`, saturating at the end of the year 9999. Dates from Graph and the record are
/// parsed within the years 1 to 9999, but durations from the config are not bounded: every
/// computation on them goes through this or [`earlier`], so no value can make one panic.
pub fn later(at: OffsetDateTime, d: Duration) -> OffsetDateTime {
    checked_later(at, d).unwrap_or(LATEST)
}

/// `at - d`, saturating at the start of the year 1.
pub fn earlier(at: OffsetDateTime, d: Duration) -> OffsetDateTime {
    at.checked_sub(span(d))
        .filter(|t| *t >= EARLIEST)
        .unwrap_or(EARLIEST)
}

/// The keyIds a rotation check must never remove, whatever the record says: the keyId recorded
/// as the secret stored, and every password whose `hint` matches the stored secret's first
/// three characters (all of them when several do: any may be the one in use). So a record that
/// names the secret in use as the one to retire (a secret put back by hand without clearing the
/// record, an edited record) cannot make secret-sync remove the job's working secret.
pub fn protected(
    passwords: &[PasswordCredential],
    recorded: Option<&str>,
    secret: &SecretString,
) -> Vec<String> {
    let prefix: String = secret.expose_secret().chars().take(3).collect();
    recorded
        .map(str::to_owned)
        .into_iter()
        .chain(
            passwords
                .iter()
                .filter(|p| p.hint.as_deref() == Some(prefix.as_str()))
                .map(|p| p.key_id.clone()),
        )
        .collect()
}

/// The display name of a password secret-sync adds: names secret-sync, the job and the
/// installation, so people see who made it and [`orphans`] can tell its own.
pub fn display_name(job: &str, installation: &str) -> String {
    format!("secret-sync job={job} installation={installation}")
}

/// Whether `display_name` is one [`display_name`] made for `installation`.
pub fn is_ours(display_name: Option<&str>, installation: &str) -> bool {
    display_name.is_some_and(|name| {
        name.starts_with("secret-sync ")
            && name
                .split_whitespace()
                .any(|word| word == format!("installation={installation}"))
    })
}

/// A new installation id: random, recorded beside the secret at the first rotation.
pub fn new_installation_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_owned()
}

/// Passwords secret-sync created and lost track of (a rotation killed between `addPassword`
/// and the write-back, a failed clean-up): removed only when their display name carries this
/// installation's id, they are neither in use nor recorded (`keep`), and they are older than
/// `overlap`. Two installations sharing an app so never delete each other's secrets, and a
/// rotation in progress elsewhere in this installation has `overlap` to finish.
pub fn orphans<'a>(
    passwords: &'a [PasswordCredential],
    installation: &str,
    keep: &[&str],
    overlap: Duration,
    now: OffsetDateTime,
) -> Vec<&'a PasswordCredential> {
    passwords
        .iter()
        .filter(|p| is_ours(p.display_name.as_deref(), installation))
        .filter(|p| !keep.iter().any(|k| k.eq_ignore_ascii_case(&p.key_id)))
        .filter(|p| p.start.is_some_and(|start| later(start, overlap) <= now))
        .collect()
}

/// What a rotation check decides for a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The secret in use expires in more than `rotate_within`.
    NotDue { expires_on: OffsetDateTime },
    /// The secret in use expires within `rotate_within` (or has no end, or is unknown).
    Due { why: String },
}

/// Whether the secret in use (`end`: its endDateTime, `None` if unknown) is due for rotation.
pub fn decide(
    in_use: &InUse,
    end: Option<OffsetDateTime>,
    rotate_within: Duration,
    now: OffsetDateTime,
) -> Decision {
    match (in_use.key_id(), end) {
        (Some(_), Some(end)) if earlier(end, rotate_within) > now => {
            Decision::NotDue { expires_on: end }
        }
        (Some(_), Some(end)) => Decision::Due {
            why: format!(
                "the secret in use expires in {} day(s), within rotate_within ({})",
                days_left(end, now),
                shown(rotate_within)
            ),
        },
        (Some(_), None) => Decision::NotDue {
            expires_on: OffsetDateTime::from_unix_timestamp(253_402_300_799)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        },
        (None, _) => Decision::Due {
            why: format!(
                "which of the app's secrets the job uses is {} (no keyId recorded beside it, \
                 and the hint does not single one out)",
                in_use.how()
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn password(
        key: &str,
        hint: &str,
        name: Option<&str>,
        start: OffsetDateTime,
    ) -> PasswordCredential {
        PasswordCredential {
            key_id: key.to_owned(),
            display_name: name.map(str::to_owned),
            hint: Some(hint.to_owned()),
            start: Some(start),
            end: Some(start + time::Duration::days(180)),
        }
    }

    const T0: OffsetDateTime = datetime!(2026-01-01 00:00 UTC);

    #[test]
    fn the_recorded_key_id_wins_then_a_single_hint_else_ambiguous() {
        let secret = SecretString::from("abcdefgh".to_owned());
        let ps = vec![
            password("k1", "abc", None, T0),
            password("k2", "xyz", None, T0),
        ];
        assert_eq!(
            in_use(&ps, Some("k2"), Some(&secret)),
            InUse::Recorded("k2".into())
        );
        assert_eq!(
            in_use(&ps, Some("gone"), Some(&secret)),
            InUse::Hint("k1".into())
        );
        assert_eq!(in_use(&ps, None, Some(&secret)), InUse::Hint("k1".into()));
        let two = vec![
            password("k1", "abc", None, T0),
            password("k2", "abc", None, T0),
        ];
        assert_eq!(in_use(&two, None, Some(&secret)), InUse::Ambiguous);
        assert_eq!(
            in_use(&ps, None, Some(&SecretString::from("qqq".to_owned()))),
            InUse::Ambiguous
        );
        assert_eq!(in_use(&ps, None, None), InUse::Unknown);
    }

    #[test]
    fn days_left_round_down_and_go_negative() {
        assert_eq!(days_left(T0 + time::Duration::hours(10 * 24 + 5), T0), 10);
        assert_eq!(days_left(T0 + time::Duration::hours(23), T0), 0);
        assert_eq!(days_left(T0 - time::Duration::hours(1), T0), -1);
    }

    #[test]
    fn rotation_is_due_within_rotate_within_or_when_in_use_is_unknown() {
        let within = Duration::from_secs(30 * 86_400);
        let used = InUse::Hint("k".into());
        assert!(matches!(
            decide(&used, Some(T0 + time::Duration::days(31)), within, T0),
            Decision::NotDue { .. }
        ));
        assert!(matches!(
            decide(&used, Some(T0 + time::Duration::days(29)), within, T0),
            Decision::Due { .. }
        ));
        assert!(matches!(
            decide(&InUse::Ambiguous, None, within, T0),
            Decision::Due { .. }
        ));
    }

    #[test]
    fn time_arithmetic_on_absurd_durations_and_dates_saturates() {
        let forever = Duration::from_secs(u64::MAX);
        assert_eq!(later(T0, forever), LATEST);
        assert_eq!(checked_later(T0, forever), None);
        assert_eq!(earlier(T0, forever), EARLIEST);
        assert_eq!(later(LATEST, Duration::from_secs(1)), LATEST);
        assert_eq!(earlier(EARLIEST, Duration::from_secs(1)), EARLIEST);
        let used = InUse::Hint("k".into());
        assert!(matches!(
            decide(&used, Some(LATEST), forever, T0),
            Decision::Due { .. }
        ));
        assert!(matches!(
            decide(&used, Some(EARLIEST), Duration::from_secs(30 * 86_400), T0),
            Decision::Due { .. }
        ));
        assert!(matches!(
            decide(&used, Some(LATEST), Duration::from_secs(30 * 86_400), T0),
            Decision::NotDue { .. }
        ));
        let far = password("k", "abc", None, EARLIEST);
        assert!(orphans(&[far], "i", &[], forever, T0).is_empty());
    }

    #[test]
    fn the_recorded_key_and_every_hint_match_are_protected() {
        let secret = SecretString::from("abcdefgh".to_owned());
        let ps = vec![
            password("k1", "abc", None, T0),
            password("k2", "abc", None, T0),
            password("k3", "xyz", None, T0),
        ];
        assert_eq!(protected(&ps, Some("k9"), &secret), ["k9", "k1", "k2"]);
        assert_eq!(protected(&ps, None, &secret), ["k1", "k2"]);
    }

    #[test]
    fn only_this_installations_forgotten_old_passwords_are_orphans() {
        let ours = display_name("graph", "inst1");
        let theirs = display_name("graph", "inst2");
        let overlap = Duration::from_secs(3600);
        let now = T0 + time::Duration::hours(2);
        let ps = vec![
            password("old-ours", "aaa", Some(&ours), T0),
            password("in-use", "bbb", Some(&ours), T0),
            password("theirs", "ccc", Some(&theirs), T0),
            password("by-hand", "ddd", Some("made by hand"), T0),
            password(
                "young",
                "eee",
                Some(&ours),
                now - time::Duration::minutes(5),
            ),
        ];
        let found: Vec<&str> = orphans(&ps, "inst1", &["in-use"], overlap, now)
            .iter()
            .map(|p| p.key_id.as_str())
            .collect();
        assert_eq!(found, ["old-ours"]);
        assert!(!is_ours(
            Some("secret-sync job=x installation=inst10"),
            "inst1"
        ));
    }
}
