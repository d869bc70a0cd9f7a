//! An in-memory token cache: serve a token until its refresh point, one request per key.
//!
//! Tokens are keyed by (authority, tenant, client id, scope, credential fingerprint), so a
//! rotated secret never gets the old secret's token. Concurrent callers for one key share a
//! single request (single flight). A failed refresh keeps serving the cached token while it
//! is still valid, as MSAL does, and does not retry on every call.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tracing::warn;

use crate::client::TokenClient;
use crate::credential::AppCredential;
use crate::error::Error;
use crate::input::Scope;
use crate::token::{AccessToken, saturating_add, saturating_sub};

/// After a failed refresh of a still-valid token, how long to keep serving it before asking
/// again (unless the service asked for a longer wait). Without a valid token, only the
/// service's own `Retry-After` holds further requests back, as MSAL does.
const FAILED_REFRESH_PAUSE: Duration = Duration::from_secs(30);

/// After a failed acquisition with no valid token left, how long callers share that failure
/// instead of asking again: long enough for the jobs of one retry round that run in batches
/// (more jobs than `concurrency`, each batch ending as soon as its token request failed) to
/// get one answer, and shorter than the daemon's shortest backoff (2.5 s), which stays in charge.
const FAILED_ACQUISITION_PAUSE: Duration = Duration::from_secs(2);

/// The longest `Retry-After` the cache honours by not asking again. Entra ID's throttling asks
/// for seconds to a few minutes; a longer wait (a broken or hostile server answering
/// `Retry-After: 300000000000`) would otherwise keep a daemon from ever asking again. The
/// request that got it already failed with its error; the cache asks again after this.
pub const MAX_HONOURED_RETRY_AFTER: Duration = Duration::from_secs(5 * 60);

/// Tokens of this lifetime or more are refreshed at half their lifetime.
const LONG_LIVED: time::Duration = time::Duration::hours(2);

/// When a cached token is refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshPolicy {
    /// Refresh at least this long before expiry. Default 5 minutes.
    pub refresh_before: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            refresh_before: Duration::from_secs(5 * 60),
        }
    }
}

impl RefreshPolicy {
    /// When `token` should be replaced: at the service's `refresh_in` when it sent one, at
    /// half the lifetime for tokens of 2 h or more, otherwise `refresh_before` before expiry;
    /// never later than `refresh_before` before expiry.
    pub fn refresh_at(&self, token: &AccessToken) -> OffsetDateTime {
        let latest = saturating_sub(token.expires_on(), self.refresh_before);
        let lifetime = token.expires_on() - token.obtained_at();
        let suggested = match token.refresh_on() {
            Some(at) => at,
            None if lifetime >= LONG_LIVED => token.obtained_at() + lifetime / 2,
            None => latest,
        };
        suggested.min(latest)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    authority: String,
    tenant: String,
    client_id: String,
    scope: String,
    fingerprint: String,
}

/// One cache entry. `current` can be read without waiting for a refresh in flight;
/// `state` is held by the one caller that refreshes. `flights` counts finished requests, so a
/// caller that waited for `state` can tell that a request ran meanwhile and share its outcome.
#[derive(Default)]
struct Slot {
    current: Mutex<Option<AccessToken>>,
    flights: AtomicU64,
    state: tokio::sync::Mutex<SlotState>,
}

impl Slot {
    fn current(&self) -> Option<AccessToken> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_current(&self, token: Option<AccessToken>) {
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = token;
    }
}

#[derive(Default)]
struct SlotState {
    last_error: Option<Error>,
    /// Do not ask again before this instant while serving a still-valid token.
    quiet_until: Option<OffsetDateTime>,
}

/// Caches tokens of a [`TokenClient`] and refreshes them before they expire.
pub struct TokenCache {
    client: TokenClient,
    policy: RefreshPolicy,
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries = self.slots.lock().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("TokenCache")
            .field("client", &self.client)
            .field("policy", &self.policy)
            .field("entries", &entries)
            .finish()
    }
}

impl TokenCache {
    /// An empty cache over `client`.
    pub fn new(client: TokenClient, policy: RefreshPolicy) -> Self {
        Self {
            client,
            policy,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The refresh policy in use (to schedule refreshes: [`RefreshPolicy::refresh_at`]).
    pub fn policy(&self) -> &RefreshPolicy {
        &self.policy
    }

    /// The client this cache asks.
    pub fn client(&self) -> &TokenClient {
        &self.client
    }

    /// A token for `app` and `scope`: the cached one while it is before its refresh point,
    /// otherwise a new one (one request shared by all concurrent callers). While one caller
    /// refreshes, the others get the cached token at once if it is still valid. If the
    /// refresh fails while the cached token is still valid, the cached token is returned.
    /// After the service asked to wait (`Retry-After`), calls made before the wait is over
    /// get the same error without a request; [`TokenCache::invalidate`] lifts that.
    pub async fn get(&self, app: &AppCredential, scope: &Scope) -> Result<AccessToken, Error> {
        self.get_with(app, scope, false).await
    }

    /// As [`TokenCache::get`], but while another caller refreshes, waits for that refresh
    /// instead of taking the cached token: for callers that need a token past its refresh
    /// point (a sync writing it to targets), not just a valid one. The cached token is still
    /// returned when the refresh fails while it is valid.
    pub async fn get_renewed(
        &self,
        app: &AppCredential,
        scope: &Scope,
    ) -> Result<AccessToken, Error> {
        self.get_with(app, scope, true).await
    }

    async fn get_with(
        &self,
        app: &AppCredential,
        scope: &Scope,
        wait_for_refresh: bool,
    ) -> Result<AccessToken, Error> {
        let slot = self.slot(app, scope);
        let now = OffsetDateTime::now_utc();
        let valid = |token: Option<AccessToken>, now| token.filter(|t| now < t.expires_on());
        if let Some(token) = slot.current()
            && now < self.policy.refresh_at(&token)
        {
            return Ok(token);
        }
        let seen = slot.flights.load(Ordering::Acquire);
        let mut state = match slot.state.try_lock() {
            Ok(state) => state,
            Err(_busy) => {
                // Another caller is refreshing: do not wait if the cached token still works
                // (unless the caller needs the new one).
                if !wait_for_refresh && let Some(token) = valid(slot.current(), now) {
                    return Ok(token);
                }
                slot.state.lock().await
            }
        };

        let now = OffsetDateTime::now_utc();
        let current = slot.current();
        if let Some(token) = &current
            && now < self.policy.refresh_at(token)
        {
            return Ok(token.clone());
        }
        // A request finished while we waited for the lock and it failed: share its outcome.
        if slot.flights.load(Ordering::Acquire) != seen
            && let Some(err) = &state.last_error
        {
            return valid(current, now).ok_or_else(|| err.clone());
        }
        // After a failure, do not ask again before the pause (or the service's Retry-After)
        // is over: serve the still-valid token, or repeat the failure.
        if state.quiet_until.is_some_and(|until| now < until) {
            if let Some(token) = valid(current.clone(), now) {
                return Ok(token);
            }
            if let Some(err) = &state.last_error {
                return Err(err.clone());
            }
        }

        let result = self.client.acquire(app, scope).await;
        slot.flights.fetch_add(1, Ordering::AcqRel);
        match result {
            Ok(token) => {
                slot.set_current(Some(token.clone()));
                state.last_error = None;
                state.quiet_until = None;
                Ok(token)
            }
            Err(err) => {
                let now = OffsetDateTime::now_utc();
                state.last_error = Some(err.clone());
                match valid(current, now) {
                    Some(token) => {
                        // Our own pause ends when the token expires; a wait the service
                        // asked for is honoured up to MAX_HONOURED_RETRY_AFTER.
                        let own_pause =
                            saturating_add(now, FAILED_REFRESH_PAUSE).min(token.expires_on());
                        // However absurd the wait asked for (`Retry-After: 300000000000`),
                        // never an overflow: at worst, the latest date there is.
                        let asked = saturating_add(now, honoured_wait(&err).unwrap_or_default());
                        state.quiet_until = Some(own_pause.max(asked));
                        warn!(
                            tenant = %app.tenant, client_id = %app.client_id, scope = %scope,
                            expires_on = %token.expires_at(), error = %err,
                            "token refresh failed; serving the cached token until it expires"
                        );
                        Ok(token)
                    }
                    None => {
                        slot.set_current(None);
                        // Callers arriving just after this failure (the next batch of jobs
                        // with these credentials) share it instead of each asking again.
                        let wait = honoured_wait(&err)
                            .unwrap_or_default()
                            .max(FAILED_ACQUISITION_PAUSE);
                        state.quiet_until = Some(saturating_add(now, wait));
                        Err(err)
                    }
                }
            }
        }
    }

    /// Forget the cached token for `app` and `scope` (e.g. after the service rejected it).
    pub async fn invalidate(&self, app: &AppCredential, scope: &Scope) {
        let slot = self.slot(app, scope);
        let mut state = slot.state.lock().await;
        *state = SlotState::default();
        slot.set_current(None);
    }

    fn slot(&self, app: &AppCredential, scope: &Scope) -> Arc<Slot> {
        let key = Key {
            authority: app.authority.as_str().to_owned(),
            tenant: app.tenant.to_string(),
            client_id: app.client_id.to_string(),
            scope: scope.to_string(),
            fingerprint: app.fingerprint(),
        };
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(slots.entry(key).or_default())
    }
}

/// The wait the service asked for, at most [`MAX_HONOURED_RETRY_AFTER`].
fn honoured_wait(err: &Error) -> Option<Duration> {
    err.retry_after()
        .map(|wait| wait.min(MAX_HONOURED_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use secrecy::SecretString;

    fn token(obtained: i64, lifetime: i64, refresh_in: Option<i64>) -> AccessToken {
        let at = OffsetDateTime::from_unix_timestamp(obtained).unwrap();
        AccessToken::obtained(
            SecretString::from("t"),
            at,
            at + time::Duration::seconds(lifetime),
            refresh_in.map(|r| at + time::Duration::seconds(r)),
        )
    }

    #[test]
    fn refresh_point_rules() {
        let p = RefreshPolicy::default();
        // One hour: 5 minutes before expiry.
        assert_eq!(p.refresh_at(&token(0, 3600, None)).unix_timestamp(), 3300);
        // 24 hours: half the lifetime.
        assert_eq!(p.refresh_at(&token(0, 86400, None)).unix_timestamp(), 43200);
        // refresh_in given: used.
        assert_eq!(
            p.refresh_at(&token(0, 3600, Some(1800))).unix_timestamp(),
            1800
        );
        // refresh_in later than refresh_before allows: capped.
        assert_eq!(
            p.refresh_at(&token(0, 3600, Some(3500))).unix_timestamp(),
            3300
        );
        // Shorter than refresh_before: refresh point already passed.
        assert_eq!(p.refresh_at(&token(0, 60, None)).unix_timestamp(), -240);
        // A refresh_before reaching past the earliest date: the earliest date, no overflow.
        let huge = RefreshPolicy {
            refresh_before: Duration::from_secs(u64::MAX),
        };
        assert_eq!(
            huge.refresh_at(&token(0, 60, None)),
            time::PrimitiveDateTime::MIN.assume_utc()
        );
    }

    #[test]
    fn an_absurd_retry_after_is_honoured_only_up_to_the_cap() {
        let asked = |secs: u64| {
            Error::new(ErrorKind::Throttled, "throttled")
                .with_retry_after(Some(Duration::from_secs(secs)))
        };
        assert_eq!(honoured_wait(&asked(7)), Some(Duration::from_secs(7)));
        assert_eq!(
            honoured_wait(&asked(300_000_000_000)),
            Some(MAX_HONOURED_RETRY_AFTER)
        );
        assert_eq!(
            honoured_wait(&Error::new(ErrorKind::Network, "reset")),
            None
        );
    }
}
