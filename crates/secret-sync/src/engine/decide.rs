//! What a target needs, decided from its metadata alone (never its value).
//!
//! This is the one place that applies the rules "skip when fresh" and "never overwrite a secret
//! secret-sync did not write unless the target says `adopt = true`", so `run`, `run --dry-run`
//! and `plan` cannot disagree about them.

use std::time::Duration;

use entra_auth::MAX_TOKEN_LIFETIME;
use secret_backends::SecretMetadata;
use time::OffsetDateTime;

use super::MANAGED_BY;

/// The state of a target as read from its metadata, and so what a run does with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetState {
    /// The secret does not exist: a run creates it.
    Missing,
    /// secret-sync wrote it and its token stays valid longer than `refresh_before`: kept.
    Fresh { expires_on: OffsetDateTime },
    /// secret-sync wrote it and its token expires within `refresh_before` (or has expired).
    Expiring { expires_on: OffsetDateTime },
    /// secret-sync wrote it but no expiry was recorded: it is rewritten.
    NoExpiry,
    /// secret-sync wrote it but the recorded expiry is further ahead than any token lives
    /// ([`MAX_TOKEN_LIFETIME`]): edited by hand (a Key Vault `exp` set in the portal, a tag, a
    /// sidecar) or corrupt. It counts as unknown, so the target is rewritten.
    ImplausibleExpiry { recorded: OffsetDateTime },
    /// It exists without secret-sync's managed-by marker and the target does not say `adopt =
    /// true`: it is left alone and reported as a failure of that target.
    NotManaged { marker: Option<String> },
    /// It exists without the marker and the target says `adopt = true`: a run takes it over.
    Adopt { marker: Option<String> },
}

/// What a run does with one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Write the token, creating the secret.
    Create,
    /// Write the token over the current value.
    Update,
    /// Leave the target as it is: its token is fresh.
    Keep,
    /// Refuse to touch the target (not managed by secret-sync, no `adopt = true`).
    Refuse,
}

impl Action {
    /// Whether this action writes, and so needs a token.
    pub fn writes(self) -> bool {
        matches!(self, Action::Create | Action::Update)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Keep => "keep",
            Action::Refuse => "refuse",
        }
    }
}

impl TargetState {
    /// Classifies `metadata` (`None`: the secret does not exist) at `now`.
    pub fn classify(
        metadata: Option<&SecretMetadata>,
        adopt: bool,
        refresh_before: Duration,
        now: OffsetDateTime,
    ) -> TargetState {
        let Some(meta) = metadata else {
            return TargetState::Missing;
        };
        if meta.managed_by.as_deref() != Some(MANAGED_BY) {
            let marker = meta.managed_by.clone();
            return if adopt {
                TargetState::Adopt { marker }
            } else {
                TargetState::NotManaged { marker }
            };
        }
        match meta.expires_on {
            None => TargetState::NoExpiry,
            // No token lives that long: trusting it would keep an expired token "fresh" forever.
            Some(recorded) if recorded - now > MAX_TOKEN_LIFETIME => {
                TargetState::ImplausibleExpiry { recorded }
            }
            Some(expires_on) if expires_on - now > refresh_before => {
                TargetState::Fresh { expires_on }
            }
            Some(expires_on) => TargetState::Expiring { expires_on },
        }
    }

    /// What a run does with this target; `force` rewrites fresh targets too (never unmanaged ones).
    pub fn action(&self, force: bool) -> Action {
        match self {
            TargetState::Missing => Action::Create,
            TargetState::Fresh { .. } if !force => Action::Keep,
            TargetState::Fresh { .. }
            | TargetState::Expiring { .. }
            | TargetState::NoExpiry
            | TargetState::ImplausibleExpiry { .. }
            | TargetState::Adopt { .. } => Action::Update,
            TargetState::NotManaged { .. } => Action::Refuse,
        }
    }

    /// The expiry of the token the target holds now, when known.
    pub fn expires_on(&self) -> Option<OffsetDateTime> {
        match self {
            TargetState::Fresh { expires_on } | TargetState::Expiring { expires_on } => {
                Some(*expires_on)
            }
            _ => None,
        }
    }

    /// Why: one line for people, e.g. "expires in 3m, within refresh_before (15m)". `lead` is
    /// how much earlier the caller renews (the daemon's lead, zero for `run`); it is named
    /// when not zero.
    pub fn reason(
        &self,
        force: bool,
        refresh_before: Duration,
        lead: Duration,
        now: OffsetDateTime,
    ) -> String {
        let window = if lead.is_zero() {
            format!(
                "refresh_before ({})",
                humantime::format_duration(refresh_before)
            )
        } else {
            format!(
                "refresh_before ({}) plus the daemon's lead ({})",
                humantime::format_duration(refresh_before),
                humantime::format_duration(lead)
            )
        };
        match self {
            TargetState::Missing => "the secret does not exist".to_owned(),
            TargetState::Fresh { expires_on } if force => format!(
                "--force: rewriting a token that is still fresh for {}",
                remaining(*expires_on, now)
            ),
            TargetState::Fresh { expires_on } => format!(
                "fresh: valid for {}, longer than {window}",
                remaining(*expires_on, now)
            ),
            TargetState::Expiring { expires_on } if *expires_on <= now => format!(
                "expired {} ago",
                humantime::format_duration(whole_seconds(now - *expires_on))
            ),
            TargetState::Expiring { expires_on } => format!(
                "expires in {}, within {window}",
                remaining(*expires_on, now)
            ),
            TargetState::NoExpiry => {
                "no expiry is recorded for the token it holds (none, or one for another token)"
                    .to_owned()
            }
            TargetState::ImplausibleExpiry { recorded } => format!(
                "the recorded expiry ({}) is more than {} ahead, longer than any Entra ID token \
                 lives, so it is not trusted (edited by hand or corrupt): the expiry counts as unknown",
                recorded
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_else(|_| recorded.to_string()),
                format_args!("{} hours", MAX_TOKEN_LIFETIME.as_secs() / 3600)
            ),
            TargetState::NotManaged { marker } => format!(
                "the secret exists and was not written by secret-sync ({}): it is left alone; \
                 set `adopt = true` on this target to let secret-sync overwrite it",
                describe_marker(marker.as_deref())
            ),
            TargetState::Adopt { marker } => format!(
                "adopt = true: taking over a secret not written by secret-sync ({})",
                describe_marker(marker.as_deref())
            ),
        }
    }
}

fn describe_marker(marker: Option<&str>) -> String {
    match marker {
        None => "no managed-by marker".to_owned(),
        Some(other) => format!("managed-by is {other:?}, not {MANAGED_BY:?}"),
    }
}

fn remaining(expires_on: OffsetDateTime, now: OffsetDateTime) -> String {
    humantime::format_duration(whole_seconds(expires_on - now)).to_string()
}

/// A non-negative duration rounded down to whole seconds, for messages.
fn whole_seconds(d: time::Duration) -> Duration {
    Duration::from_secs(u64::try_from(d.whole_seconds()).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-24 06:00 UTC);
    const WINDOW: Duration = Duration::from_secs(15 * 60);

    fn managed(expires_on: Option<OffsetDateTime>) -> SecretMetadata {
        SecretMetadata {
            expires_on,
            managed_by: Some(MANAGED_BY.to_owned()),
            ..SecretMetadata::default()
        }
    }

    const LEAD: Duration = Duration::from_secs(3 * 60);

    fn classify(meta: Option<&SecretMetadata>, adopt: bool) -> TargetState {
        TargetState::classify(meta, adopt, WINDOW, NOW)
    }

    fn classify_within(meta: Option<&SecretMetadata>, within: Duration) -> TargetState {
        TargetState::classify(meta, false, within, NOW)
    }

    #[test]
    fn missing_is_created_even_without_force() {
        let state = classify(None, false);
        assert_eq!(state, TargetState::Missing);
        assert_eq!(state.action(false), Action::Create);
    }

    #[test]
    fn fresh_is_kept_unless_forced() {
        let expires_on = NOW + time::Duration::minutes(50);
        let state = classify(Some(&managed(Some(expires_on))), false);
        assert_eq!(state, TargetState::Fresh { expires_on });
        assert_eq!(state.action(false), Action::Keep);
        assert_eq!(state.action(true), Action::Update);
        assert_eq!(
            state.reason(false, WINDOW, Duration::ZERO, NOW),
            "fresh: valid for 50m, longer than refresh_before (15m)"
        );
    }

    #[test]
    fn within_refresh_before_or_expired_is_updated() {
        let soon = NOW + time::Duration::minutes(15);
        let state = classify(Some(&managed(Some(soon))), false);
        assert_eq!(state, TargetState::Expiring { expires_on: soon });
        assert_eq!(state.action(false), Action::Update);
        assert_eq!(
            state.reason(false, WINDOW, Duration::ZERO, NOW),
            "expires in 15m, within refresh_before (15m)"
        );
        let past = NOW - time::Duration::minutes(2);
        let state = classify(Some(&managed(Some(past))), false);
        assert_eq!(state.action(false), Action::Update);
        assert_eq!(
            state.reason(false, WINDOW, Duration::ZERO, NOW),
            "expired 2m ago"
        );
    }

    #[test]
    fn the_daemons_lead_is_named_in_the_reason() {
        let soon = NOW + time::Duration::minutes(17);
        let state = classify_within(Some(&managed(Some(soon))), WINDOW + LEAD);
        assert_eq!(state, TargetState::Expiring { expires_on: soon });
        assert_eq!(
            state.reason(false, WINDOW, LEAD, NOW),
            "expires in 17m, within refresh_before (15m) plus the daemon's lead (3m)"
        );
        // Without the lead the same token is fresh.
        let state = classify_within(Some(&managed(Some(soon))), WINDOW);
        assert_eq!(state.action(false), Action::Keep);
    }

    #[test]
    fn an_expiry_beyond_the_longest_token_lifetime_counts_as_unknown() {
        let recorded = NOW + time::Duration::days(365);
        let state = classify(Some(&managed(Some(recorded))), false);
        assert_eq!(state, TargetState::ImplausibleExpiry { recorded });
        assert_eq!(state.action(false), Action::Update);
        assert_eq!(state.expires_on(), None);
        assert_eq!(
            state.reason(false, WINDOW, Duration::ZERO, NOW),
            "the recorded expiry (2027-11-24T06:00:00Z) is more than 48 hours ahead, longer than \
             any Entra ID token lives, so it is not trusted (edited by hand or corrupt): the \
             expiry counts as unknown"
        );
        // The far edge of the year 9999 does not overflow either.
        let far = time::macros::datetime!(9999-12-31 23:59:59 UTC);
        let state = classify(Some(&managed(Some(far))), false);
        assert_eq!(state.action(false), Action::Update);
        // At the longest lifetime itself the token is still believed.
        let edge = NOW + MAX_TOKEN_LIFETIME;
        let state = classify(Some(&managed(Some(edge))), false);
        assert_eq!(state, TargetState::Fresh { expires_on: edge });
    }

    #[test]
    fn managed_without_expiry_is_updated() {
        let state = classify(Some(&managed(None)), false);
        assert_eq!(state, TargetState::NoExpiry);
        assert_eq!(state.action(false), Action::Update);
    }

    #[test]
    fn unmanaged_is_refused_even_with_force_unless_adopted() {
        let foreign = SecretMetadata {
            expires_on: Some(NOW + time::Duration::hours(5)),
            managed_by: Some("terraform".to_owned()),
            ..SecretMetadata::default()
        };
        let state = classify(Some(&foreign), false);
        assert_eq!(
            state,
            TargetState::NotManaged {
                marker: Some("terraform".to_owned())
            }
        );
        assert_eq!(state.action(true), Action::Refuse);
        let reason = state.reason(false, WINDOW, Duration::ZERO, NOW);
        assert!(
            reason.contains("adopt = true") && reason.contains("terraform"),
            "{reason}"
        );

        let state = classify(Some(&SecretMetadata::default()), true);
        assert_eq!(state, TargetState::Adopt { marker: None });
        assert_eq!(state.action(false), Action::Update);
    }
}
