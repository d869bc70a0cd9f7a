//! Microsoft Entra ID access tokens for applications: the OAuth 2.0 client-credentials flow
//! with a client secret, a certificate, workload identity federation (Kubernetes, GitHub
//! Actions, any OIDC issuer), or an Azure managed identity.
//!
//! # Boundary
//! This crate knows HTTP and OAuth and nothing else: not backends, not config files, not the
//! environment (except the documented `*_from_env` helpers, which a caller chooses to call).
//! Inputs are validated types ([`TenantId`], [`ClientId`], [`Scope`], [`Authority`]) so bad
//! values are refused before any request, with a message saying what to do.
//!
//! # Pieces
//! - [`TokenClient`] asks the service, with a timeout on every request and retries
//!   (exponential backoff with full jitter, `Retry-After` honoured, bounded by attempts and time).
//! - [`TokenCache`] serves a token until its refresh point ([`RefreshPolicy::refresh_at`]),
//!   shares one request between concurrent callers, and keeps serving a still-valid token
//!   when a refresh fails.
//! - [`Error`] says whether a retry can help ([`Error::is_retryable`]), carries the AADSTS
//!   codes, trace and correlation ids, and a message naming the fix.
//! - [`EntraTokenCredential`] plugs the cache into the Azure SDK (`azure_core`).
//! - [`graph`]: Microsoft Graph's calls on an app registration's own credentials (read their
//!   expiries, `addPassword`, `removePassword`), with a bearer token the caller obtained.
//!
//! Secrets, assertions and tokens are `secrecy` types or redacting wrappers: no `Debug`,
//! `Display`, error or log line of this crate contains one.
//!
//! # Example
//! ```no_run
//! use entra_auth::{AppCredential, Authority, ClientOptions, Credential, RefreshPolicy,
//!     Scope, TokenCache, TokenClient};
//! use secrecy::{ExposeSecret, SecretString};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let app = AppCredential {
//!     authority: Authority::public(),
//!     tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47".parse()?,
//!     client_id: "00000000-0000-0000-0000-000000000001".parse()?,
//!     credential: Credential::ClientSecret(SecretString::from(std::env::var("CLIENT_SECRET")?)),
//! };
//! let scope: Scope = "https://graph.microsoft.com/.default".parse()?;
//! let cache = TokenCache::new(TokenClient::new(ClientOptions::default())?, RefreshPolicy::default());
//! let token = cache.get(&app, &scope).await?;
//! println!("valid until {}", token.expires_on());
//! let _header = format!("Bearer {}", token.secret().expose_secret());
//! # Ok(())
//! # }
//! ```

mod azure;
mod cache;
mod client;
mod credential;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod graph;
mod input;
mod retry;
mod token;

pub use azure::EntraTokenCredential;
pub use cache::{RefreshPolicy, TokenCache};
pub use client::{ClientOptions, TokenClient};
pub use credential::{
    ARC_TOKEN_DIR, AppCredential, AssertionAlgorithm, CertificateCredential, Credential,
    FederatedTokenSource, IMDS_ENDPOINT, ManagedIdentity,
};
pub use error::{Error, ErrorKind};
pub use graph::{GraphClient, GraphError, GraphErrorKind, GraphOptions};
pub use input::{Authority, ClientId, Cloud, ConfigError, Scope, TenantId};
pub use retry::RetryPolicy;
pub use token::{AccessToken, MAX_TOKEN_LIFETIME};
