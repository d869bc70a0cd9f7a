//! Test-only servers for secret-sync: an Entra ID emulator (token endpoint with client secrets,
//! certificate assertions and federated credentials; managed identity and GitHub Actions OIDC
//! endpoints), an Azure Key Vault emulator (secrets API with challenge auth), and the test credentials they need (a CA for
//! HTTPS, RSA client certificates, an OIDC issuer). Everything runs in-process on 127.0.0.1 with an
//! ephemeral port; dropping a server stops it.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use testkit::{AppRegistration, EntraEmulator, Fault};
//!
//! let entra = EntraEmulator::start().await?; // or start_tls() + ca_pem()
//! entra.register_app(AppRegistration::new("contoso", "app-1").with_secret("s3cret"));
//! entra.inject(Fault::TooManyRequests { retry_after_secs: Some(1) });
//!
//! let client = reqwest::Client::new();
//! let answer = client
//!     .post(entra.token_url("contoso"))
//!     .form(&[
//!         ("grant_type", "client_credentials"),
//!         ("client_id", "app-1"),
//!         ("client_secret", "s3cret"),
//!         ("scope", "https://vault.azure.net/.default"),
//!     ])
//!     .send()
//!     .await?;
//! assert_eq!(answer.status(), 429); // the injected fault; the next request succeeds
//! assert_eq!(entra.token_request_count(), 1);
//! # Ok(()) }
//! ```

mod cert;
mod der;
mod entra;
mod error;
mod fault;
mod keyvault;
mod oidc;
pub mod real;
mod server;
mod tls;

pub use cert::{
    AssertionAlgorithm, CertificateFiles, ClientAssertion, TestCertificate, ThumbprintHeader,
};
pub use entra::{
    AppRegistration, BearerError, EntraEmulator, FEDERATED_AUDIENCE, FederatedCredential,
    GithubOidc, IssuedToken, ManagedIdentity, RecordedRequest, ServerOptions, TokenOptions,
    TokenSource, TokenValidator,
};
pub use error::TestkitError;
pub use fault::Fault;
pub use keyvault::{
    KEY_VAULT_RESOURCE, KeyVaultEmulator, KeyVaultOptions, MAX_VALUE_BYTES, StoredSecret,
    VaultRequest,
};
pub use oidc::{GITHUB_ACTIONS_ISSUER, OidcClaims, OidcIssuer};
pub use tls::TestCa;
