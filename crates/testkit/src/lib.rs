//! Test-only servers for secret-sync: an Entra ID emulator (token endpoint with client secrets,
//! certificate assertions and federated credentials; managed identity and GitHub Actions OIDC
//! endpoints), an Azure Key Vault emulator (secrets API with challenge auth), a hostile server, the test credentials
//! they need (a CA for HTTPS, RSA client certificates, an OIDC issuer), and [`real`] helpers that
//! start real moto and OpenBao servers. Everything runs on 127.0.0.1 with an ephemeral port;
//! dropping a server stops it.
//!
//! The pieces:
//! - [`EntraEmulator`]: `start()` (HTTP) / `start_tls()` (HTTPS, [`EntraEmulator::ca_pem`]),
//!   [`EntraEmulator::register_app`] with an [`AppRegistration`] (secrets, expired secrets,
//!   certificates, [`FederatedCredential`]s), [`EntraEmulator::register_resource`] for a
//!   custom API (Microsoft's own are [`KNOWN_RESOURCES`]), [`EntraEmulator::inject`] a [`Fault`],
//!   [`EntraEmulator::token_requests`] / [`EntraEmulator::token_request_count`] ([`RecordedRequest`],
//!   secrets redacted), [`EntraEmulator::set_token_options`] ([`TokenOptions`]),
//!   [`EntraEmulator::issued_tokens`] and [`EntraEmulator::validate_bearer`], managed identity
//!   ([`ManagedIdentity`], [`EntraEmulator::imds_endpoint`], [`EntraEmulator::identity_endpoint`],
//!   Azure Arc: [`ArcAgent`], [`EntraEmulator::arc_identity_endpoint`]; the facts these endpoints
//!   enforce, with their sources, are listed in the `entra::identity` module's doc) and
//!   GitHub OIDC ([`GithubOidc`], [`EntraEmulator::github_oidc_request_url`]).
//!   Microsoft Graph's app-credential calls on the same server ([`EntraEmulator::graph_endpoint`]:
//!   read an application, `addPassword`, `removePassword`), checking the bearer tokens the emulator
//!   issued for Graph and their `roles` ([`AppRegistration::with_graph_roles`],
//!   [`EntraEmulator::add_owner`]), with [`Password`]s, [`AppPolicy`],
//!   [`EntraEmulator::set_secret_propagation_delay`], [`EntraEmulator::inject_graph`] a [`Fault`]
//!   per [`GraphCall`], and [`EntraEmulator::application`] ([`GraphApplication`]) for tests; the
//!   facts it enforces, with their sources, are in the `entra::graph` module's doc.
//! - [`KeyVaultEmulator`]: started with the Entra emulator's [`TokenValidator`] and
//!   [`KeyVaultOptions`] (tenant, cloud resource, recovery delay); hooks [`KeyVaultEmulator::secret`],
//!   [`KeyVaultEmulator::requests`], [`KeyVaultEmulator::inject`], [`KeyVaultEmulator::deny_client`].
//!
//! As strict as the real services: every leniency is a bug that can reach users unseen. Each
//! module's doc lists what it enforces and where the fact comes from (PROTOCOLS.md
//! first; otherwise the vendors' docs, SDK sources and recordings). The facts enforced from
//! PROTOCOLS.md, in short:
//! - token endpoint (`entra::token`): the request shape and validation order, the AADSTS codes
//!   and statuses of each refusal, certificate assertion claims (PS256/RS256, `x5t#S256`/`x5t`,
//!   `aud` = token URL, `iss` = `sub` = client, `jti` once), federated credentials per issuer,
//!   audience (per cloud: [`FEDERATED_AUDIENCE`], [`FEDERATED_AUDIENCE_US_GOVERNMENT`],
//!   [`FEDERATED_AUDIENCE_CHINA`]) and case-sensitive subject, and a scope's resource must have a
//!   service principal (400 `invalid_resource` AADSTS500011 otherwise);
//! - managed identity (`entra::identity`): each host's request and answer shape;
//! - Key Vault (`keyvault`): the challenge naming the vault's tenant and its cloud's resource;
//!   401 `AKV10022` for a token of another audience and `AKV10032` for one of another tenant; 400
//!   `BadParameter` for an `api-version` not in [`API_VERSIONS`]; an asynchronous recovery
//!   ([`KeyVaultOptions::recovery_delay`]); the name, size and tag limits; soft delete's 409.
//! - [`HostileServer`]: a server that misbehaves on purpose ([`Behaviour`]: redirects, huge and
//!   slow bodies, hangs, canned absurd answers) and records every request ([`HostileRequest`]),
//!   for the hardening tests; its module doc has an example.
//! - [`TestCertificate`] (RSA-2048 self-signed + PKCS#8 key, thumbprints, files, [`ClientAssertion`]
//!   builder), [`OidcIssuer`] (mints RS256 tokens), [`TestCa`].
//! - The `testkit-server` binary serves the Entra emulator as a process (see its `--help`).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use testkit::{AppRegistration, EntraEmulator, Fault, KeyVaultEmulator, KeyVaultOptions};
//!
//! let entra = EntraEmulator::start_tls().await?;
//! entra.register_app(AppRegistration::new("contoso", "app-1").with_secret("s3cret"));
//! entra.inject(Fault::TooManyRequests { retry_after_secs: Some(1) });
//!
//! let ca = reqwest::Certificate::from_pem(entra.ca_pem().unwrap().as_bytes())?;
//! let client = reqwest::Client::builder().tls_certs_only([ca]).build()?;
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
//!
//! // A vault trusting the tokens above, served with the same CA.
//! let vault = KeyVaultEmulator::start(
//!     entra.token_validator(),
//!     KeyVaultOptions::for_entra(&entra, "contoso"),
//! )
//! .await?;
//! println!("{}", vault.vault_url());
//! # Ok(()) }
//! ```

mod cert;
mod der;
mod entra;
mod error;
mod fault;
mod hostile;
mod keyvault;
mod oidc;
pub mod real;
mod server;
mod tls;

pub use cert::{
    AssertionAlgorithm, CertificateFiles, ClientAssertion, TestCertificate, ThumbprintHeader,
};
pub use entra::{
    AppPolicy, AppRegistration, ArcAgent, BearerError, DEFAULT_PASSWORD_LIFETIME, EntraEmulator,
    FEDERATED_AUDIENCE, FEDERATED_AUDIENCE_CHINA, FEDERATED_AUDIENCE_US_GOVERNMENT,
    FederatedCredential, GithubOidc, GraphApplication, GraphCall, GraphCertificate, GraphPassword,
    IssuedToken, KNOWN_RESOURCES, ManagedIdentity, Password, RecordedRequest, ServerOptions,
    TOO_MANY_PASSWORDS_LIMIT, TokenOptions, TokenSource, TokenValidator,
};
pub use error::TestkitError;
pub use fault::Fault;
pub use hostile::{Behaviour, HostileRequest, HostileServer};
pub use keyvault::{
    API_VERSIONS, DEFAULT_RECOVERY_DELAY, KEY_VAULT_RESOURCE, KEY_VAULT_RESOURCE_CHINA,
    KEY_VAULT_RESOURCE_US_GOVERNMENT, KeyVaultEmulator, KeyVaultOptions, MAX_VALUE_BYTES,
    StoredSecret, VaultRequest,
};
pub use oidc::{GITHUB_ACTIONS_ISSUER, OidcClaims, OidcIssuer};
pub use tls::TestCa;
