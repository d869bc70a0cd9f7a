//! The bridge to the Azure SDK: `azure_core`'s `TokenCredential` over this crate's cache.
//!
//! The Azure Key Vault backend authenticates through this type, so there is one Entra stack
//! (one cache, one retry policy, one set of error messages) in the whole program.

use std::fmt;
use std::sync::Arc;

use azure_core::credentials::{self, TokenCredential, TokenRequestOptions};
use secrecy::ExposeSecret;

use crate::cache::TokenCache;
use crate::credential::AppCredential;
use crate::input::Scope;

/// An `azure_core::credentials::TokenCredential` backed by a shared [`TokenCache`].
///
/// The Azure SDK passes the scopes it needs, e.g. `["https://vault.azure.net/.default"]`;
/// exactly one `<resource>/.default` scope is accepted.
#[derive(Clone)]
pub struct EntraTokenCredential {
    cache: Arc<TokenCache>,
    app: AppCredential,
}

impl EntraTokenCredential {
    /// A credential for `app`, sharing `cache` with the rest of the program.
    pub fn new(cache: Arc<TokenCache>, app: AppCredential) -> Self {
        Self { cache, app }
    }

    /// The same, behind the `Arc<dyn TokenCredential>` the Azure SDK clients take.
    pub fn into_shared(self) -> Arc<dyn TokenCredential> {
        Arc::new(self)
    }
}

impl fmt::Debug for EntraTokenCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntraTokenCredential")
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
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
                azure_core::error::ErrorKind::Credential,
                format!(
                    "entra-auth asks for one scope at a time, the Azure SDK asked for {}: {scopes:?}",
                    scopes.len()
                ),
            ));
        };
        let scope: Scope = scope
            .parse()
            .map_err(|e| azure_core::Error::new(azure_core::error::ErrorKind::Credential, e))?;
        let token = self
            .cache
            .get(&self.app, &scope)
            .await
            .map_err(|e| azure_core::Error::new(azure_core::error::ErrorKind::Credential, e))?;
        Ok(credentials::AccessToken::new(
            token.secret().expose_secret().to_owned(),
            token.expires_on(),
        ))
    }
}
