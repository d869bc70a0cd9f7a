//! The bridge to the Azure SDK: `azure_core`'s `TokenCredential` over this crate's cache.
//!
//! The Azure Key Vault backend authenticates through this type, so there is one Entra stack
//! (one cache, one retry policy, one set of error messages) in the whole program.
//!
//! Two things travel across the bridge besides the token:
//! - **A refused token is replaced once.** The SDK keeps the token it got and asks the
//!   credential again only when it has none, when the token is within its refresh window (5
//!   minutes before expiry, `azure_core`'s `BearerTokenAuthorizationPolicy`), or after the
//!   service answered 401 to a request that carried it. So when the SDK asks again while the
//!   token this credential last gave it is still outside that window, the service refused it
//!   (revoked, another tenant's policy changed, a clock skew): the cached token is invalidated
//!   and a new one fetched, once. If the SDK asks again for that new token too, it is given the
//!   same one, and the SDK reports the service's second 401: a second refusal is final. After
//!   [`RENEW_AGAIN_AFTER`] a later refusal may renew again.
//! - **What kind of failure a token request was.** The SDK only knows `azure_core::Error`, and
//!   the Key Vault backend knows nothing of this crate, so [`to_azure_error`] says it in
//!   `azure_core`'s words: an error of kind `Credential` (the SDK does not retry it: this
//!   crate's client already did) whose source is an `azure_core::Error` of kind `Connection`
//!   (the token service was unreachable) or `HttpResponse` with the token service's status
//!   (429 when it throttled, 503 when it was unavailable, its own status when it refused), the
//!   AADSTS code as `error_code`, and a `Retry-After` header when the service asked to wait. The
//!   innermost source is this crate's [`Error`], whose message says what to do.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use azure_core::credentials::{self, TokenCredential, TokenRequestOptions};
use azure_core::error::ErrorKind as AzureErrorKind;
use azure_core::http::headers::{Headers, RETRY_AFTER};
use azure_core::http::{RawResponse, StatusCode};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::cache::TokenCache;
use crate::credential::AppCredential;
use crate::error::{Error, ErrorKind};
use crate::input::Scope;

/// The window before expiry in which `azure_core` asks for a new token on its own.
const SDK_REFRESH_WINDOW: time::Duration = time::Duration::minutes(5);

/// After a refused token was replaced, how long a refusal of the replacement stays final.
pub(crate) const RENEW_AGAIN_AFTER: Duration = Duration::from_secs(5 * 60);

/// An `azure_core::credentials::TokenCredential` backed by a shared [`TokenCache`].
///
/// The Azure SDK passes the scopes it needs, e.g. `["https://vault.azure.net/.default"]`;
/// exactly one `<resource>/.default` scope is accepted. Give each SDK client its own
/// credential (they are cheap; the cache is shared): a credential asked twice for a token it
/// already gave, and that is still fresh, takes it as refused (see the module doc).
#[derive(Clone)]
pub struct EntraTokenCredential {
    cache: Arc<TokenCache>,
    app: AppCredential,
    given: Arc<Mutex<HashMap<String, Given>>>,
}

/// The token last given for a scope: its SHA-256 (never the token itself), and when it
/// replaced a refused one.
#[derive(Debug, Clone, Copy)]
struct Given {
    digest: [u8; 32],
    renewed_at: Option<Instant>,
}

fn digest(token: &crate::AccessToken) -> [u8; 32] {
    Sha256::digest(token.secret().expose_secret().as_bytes()).into()
}

impl EntraTokenCredential {
    /// A credential for `app`, sharing `cache` with the rest of the program.
    pub fn new(cache: Arc<TokenCache>, app: AppCredential) -> Self {
        Self {
            cache,
            app,
            given: Arc::default(),
        }
    }

    /// The same, behind the `Arc<dyn TokenCredential>` the Azure SDK clients take.
    pub fn into_shared(self) -> Arc<dyn TokenCredential> {
        Arc::new(self)
    }

    /// The app this credential gets tokens for.
    pub fn app(&self) -> &AppCredential {
        &self.app
    }

    fn given(&self) -> std::sync::MutexGuard<'_, HashMap<String, Given>> {
        self.given
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A token for `scope`, replacing it once when the SDK asks again for the one it holds.
    async fn token(&self, scope: &Scope) -> Result<crate::AccessToken, Error> {
        let token = self.cache.get(&self.app, scope).await?;
        let key = scope.to_string();
        let fresh = token.expires_on() > OffsetDateTime::now_utc() + SDK_REFRESH_WINDOW;
        let asked_again = self
            .given()
            .get(&key)
            .copied()
            .filter(|given| fresh && given.digest == digest(&token));
        let Some(given) = asked_again else {
            self.given().insert(
                key,
                Given {
                    digest: digest(&token),
                    renewed_at: None,
                },
            );
            return Ok(token);
        };
        if given
            .renewed_at
            .is_some_and(|at| at.elapsed() < RENEW_AGAIN_AFTER)
        {
            // The replacement was refused too: the SDK reports that refusal.
            return Ok(token);
        }
        tracing::info!(
            tenant = %self.app.tenant, client_id = %self.app.client_id, scope = %scope,
            "the service refused the access token: fetching a new one"
        );
        self.cache.invalidate(&self.app, scope).await;
        let renewed = self.cache.get(&self.app, scope).await?;
        self.given().insert(
            key,
            Given {
                digest: digest(&renewed),
                renewed_at: Some(Instant::now()),
            },
        );
        Ok(renewed)
    }
}

impl fmt::Debug for EntraTokenCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntraTokenCredential")
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

/// `err` in `azure_core`'s words, keeping what kind of failure it was (see the module doc).
pub(crate) fn to_azure_error(err: Error) -> azure_core::Error {
    let status = match err.kind() {
        ErrorKind::Throttled => Some(StatusCode::TooManyRequests),
        ErrorKind::ServiceUnavailable => Some(
            err.http_status()
                .map(StatusCode::from)
                .filter(|s| u16::from(*s) >= 500 || u16::from(*s) == 408)
                .unwrap_or(StatusCode::ServiceUnavailable),
        ),
        // A refusal Entra says may pass (AADSTS70021 just after a federated credential was
        // created) is told as unavailable, so it is retried.
        ErrorKind::Rejected if err.is_retryable() => Some(StatusCode::ServiceUnavailable),
        ErrorKind::Rejected => Some(
            err.http_status()
                .map(StatusCode::from)
                .unwrap_or(StatusCode::BadRequest),
        ),
        ErrorKind::Network => {
            let inner = azure_core::Error::new(AzureErrorKind::Connection, err);
            return azure_core::Error::new(AzureErrorKind::Credential, inner);
        }
        _ => None,
    };
    let Some(status) = status else {
        return azure_core::Error::new(AzureErrorKind::Credential, err);
    };
    let mut headers = Headers::new();
    if let Some(wait) = err.retry_after() {
        headers.insert(RETRY_AFTER, wait.as_secs().to_string());
    }
    let error_code = err
        .aadsts_codes()
        .first()
        .map(|code| format!("AADSTS{code}"))
        .or_else(|| err.oauth_error().map(str::to_owned));
    let inner = azure_core::Error::new(
        AzureErrorKind::HttpResponse {
            status,
            error_code,
            raw_response: Some(Box::new(RawResponse::from_bytes(status, headers, ""))),
        },
        err,
    );
    azure_core::Error::new(AzureErrorKind::Credential, inner)
}

#[async_trait::async_trait]
impl TokenCredential for EntraTokenCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<credentials::AccessToken> {
        let [scope] = scopes else {
            return Err(azure_core::Error::with_message(
                AzureErrorKind::Credential,
                format!(
                    "entra-auth asks for one scope at a time, the Azure SDK asked for {}: {scopes:?}",
                    scopes.len()
                ),
            ));
        };
        let scope: Scope = scope
            .parse()
            .map_err(|e| azure_core::Error::new(AzureErrorKind::Credential, e))?;
        let token = self.token(&scope).await.map_err(to_azure_error)?;
        Ok(credentials::AccessToken::new(
            token.secret().expose_secret().to_owned(),
            token.expires_on(),
        ))
    }
}
