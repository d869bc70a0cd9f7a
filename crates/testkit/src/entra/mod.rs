//! The Entra ID emulator: `POST /{tenant}/oauth2/v2.0/token` for client secrets, certificate
//! assertions and federated credentials, plus the managed identity (IMDS, App Service) and GitHub
//! Actions OIDC endpoints, all on one server. It answers with Entra's status codes, headers and
//! error bodies, records every request (secrets redacted), injects faults on demand, and remembers
//! the tokens it issued so the Key Vault emulator can check bearer tokens against them.
//!
//! Routes (all on [`EntraEmulator::base_url`]):
//!
//! | route | what |
//! |---|---|
//! | `POST /{tenant}/oauth2/v2.0/token` | client credentials: secret, certificate assertion, federated assertion |
//! | `GET /metadata/identity/oauth2/token` | IMDS managed identity ([`EntraEmulator::imds_endpoint`]) |
//! | `GET /msi/token` | App Service / Container Apps identity endpoint ([`EntraEmulator::identity_endpoint`]) |
//! | `GET /arc/metadata/identity/oauth2/token` | Azure Arc agent's identity endpoint, with its key-file challenge ([`EntraEmulator::arc_identity_endpoint`]) |
//! | `GET /token` | GitHub Actions OIDC request URL ([`EntraEmulator::github_oidc_request_url`]) |
//! | `GET`/`PATCH /v1.0/applications(appId='{appId}')` or `/v1.0/applications/{objectId}`, `POST .../addPassword`, `POST .../removePassword` | Microsoft Graph, an app's own credentials ([`EntraEmulator::graph_endpoint`]; the `graph` module lists what it enforces and why) |

mod errors;
mod graph;
mod identity;
mod token;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use jsonwebtoken::DecodingKey;
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

use crate::cert::TestCertificate;
use crate::error::TestkitError;
use crate::fault::{Fault, FaultQueue};
use crate::oidc::{GITHUB_ACTIONS_ISSUER, OidcIssuer};
use crate::server::{Handler, Reply, Request, RequestLog, ServerHandle};
use crate::tls::TestCa;

pub use graph::{
    AppPolicy, GraphApplication, GraphCall, GraphCertificate, GraphPassword,
    TOO_MANY_PASSWORDS_LIMIT,
};
pub use identity::{ArcAgent, GithubOidc, ManagedIdentity};
pub use token::KNOWN_RESOURCES;

/// The audience Entra expects in federated assertions (public cloud).
pub const FEDERATED_AUDIENCE: &str = "api://AzureADTokenExchange";
/// The audience Entra expects in federated assertions in Azure US Government (PROTOCOLS.md).
pub const FEDERATED_AUDIENCE_US_GOVERNMENT: &str = "api://AzureADTokenExchangeUSGov";
/// The audience Entra expects in federated assertions in Azure operated by 21Vianet (China,
/// PROTOCOLS.md).
pub const FEDERATED_AUDIENCE_CHINA: &str = "api://AzureADTokenExchangeChina";

/// Where and how a testkit server listens.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Serve HTTPS with a certificate from this CA; `None` serves plain HTTP.
    pub ca: Option<Arc<TestCa>>,
}

/// An app registration: tenant, client id, and the credentials Entra accepts for it. Its Graph
/// side ([`EntraEmulator::graph_endpoint`]): an object id, a display name, its passwords (client
/// secrets) and certificates as Graph lists them, and the Graph application roles its tokens carry.
#[derive(Debug, Clone)]
pub struct AppRegistration {
    tenant: String,
    client_id: String,
    object_id: String,
    display_name: String,
    passwords: Vec<Password>,
    certificates: Vec<RegisteredCertificate>,
    federated: Vec<FederatedCredential>,
    graph_roles: Vec<String>,
}

#[derive(Clone)]
struct RegisteredCertificate {
    sha1: String,
    sha256: String,
    key: DecodingKey,
    /// Graph's `keyId`.
    key_id: String,
    /// Graph's `customKeyIdentifier`: the SHA-1 thumbprint, standard base64.
    thumbprint: String,
    /// The DER, Graph's `key` (base64) when `$select`ed.
    der: Vec<u8>,
    start: OffsetDateTime,
    end: OffsetDateTime,
}

impl std::fmt::Debug for RegisteredCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisteredCertificate")
            .field("x5t#S256", &self.sha256)
            .field("key_id", &self.key_id)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

/// How long Graph's `addPassword` makes a password valid when the request names no end, and the
/// validity this emulator gives passwords registered without one: two years (PROTOCOLS.md).
pub const DEFAULT_PASSWORD_LIFETIME: Duration = Duration::from_secs(2 * 365 * 24 * 3600);

/// A client secret of an app registration, as Graph lists it in `passwordCredentials`: the
/// secret itself, a `keyId` (GUID), an optional display name, `hint` (the secret's first three
/// characters), start and end. `Debug` shows neither the secret nor its hint.
#[derive(Clone)]
pub struct Password {
    secret: SecretString,
    key_id: String,
    display_name: Option<String>,
    start: OffsetDateTime,
    end: OffsetDateTime,
    /// When `addPassword` created it (the propagation delay counts from there); `None` for a
    /// password registered with the app.
    added_at: Option<SystemTime>,
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Password")
            .field("key_id", &self.key_id)
            .field("display_name", &self.display_name)
            .field("start", &self.start)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl Password {
    /// `secret` with a random key id, no display name, valid from now for
    /// [`DEFAULT_PASSWORD_LIFETIME`].
    pub fn new(secret: impl Into<String>) -> Password {
        let now = OffsetDateTime::now_utc();
        Password {
            secret: SecretString::from(secret.into()),
            key_id: uuid::Uuid::new_v4().to_string(),
            display_name: None,
            start: now,
            end: now + DEFAULT_PASSWORD_LIFETIME,
            added_at: None,
        }
    }

    /// Its Graph `keyId` (a GUID).
    pub fn key_id(mut self, key_id: impl Into<String>) -> Password {
        self.key_id = key_id.into();
        self
    }

    /// Its Graph `displayName`.
    pub fn display_name(mut self, display_name: impl Into<String>) -> Password {
        self.display_name = Some(display_name.into());
        self
    }

    /// Its `startDateTime`.
    pub fn start(mut self, start: OffsetDateTime) -> Password {
        self.start = start;
        self
    }

    /// Its `endDateTime`: from then on the token endpoint refuses it with AADSTS7000222.
    pub fn end(mut self, end: OffsetDateTime) -> Password {
        self.end = end;
        self
    }

    /// The first three characters of the secret: Graph's `hint`.
    fn hint(&self) -> String {
        self.secret.expose_secret().chars().take(3).collect()
    }
}

impl AppRegistration {
    /// An app `client_id` in `tenant`, with no credential yet, a random object id, display name
    /// `testkit app {client_id}` and no Graph roles.
    pub fn new(tenant: impl Into<String>, client_id: impl Into<String>) -> AppRegistration {
        let client_id = client_id.into();
        AppRegistration {
            tenant: tenant.into(),
            display_name: format!("testkit app {client_id}"),
            client_id,
            object_id: uuid::Uuid::new_v4().to_string(),
            passwords: Vec::new(),
            certificates: Vec::new(),
            federated: Vec::new(),
            graph_roles: Vec::new(),
        }
    }

    /// Its Graph object id (`id`), instead of a generated GUID.
    pub fn with_object_id(mut self, object_id: impl Into<String>) -> AppRegistration {
        self.object_id = object_id.into();
        self
    }

    /// Its Graph `displayName`.
    pub fn with_display_name(mut self, display_name: impl Into<String>) -> AppRegistration {
        self.display_name = display_name.into();
        self
    }

    /// Accepts `secret` as a client secret: a [`Password`] valid from now for two years.
    pub fn with_secret(self, secret: impl Into<String>) -> AppRegistration {
        self.with_password(Password::new(secret))
    }

    /// Knows `secret` but it has expired: using it answers AADSTS7000222. A [`Password`] that
    /// ended a day ago.
    pub fn with_expired_secret(self, secret: impl Into<String>) -> AppRegistration {
        let now = OffsetDateTime::now_utc();
        self.with_password(
            Password::new(secret)
                .start(now - DEFAULT_PASSWORD_LIFETIME)
                .end(now - Duration::from_secs(24 * 3600)),
        )
    }

    /// Holds this password (client secret); the token endpoint accepts it until its end.
    pub fn with_password(mut self, password: Password) -> AppRegistration {
        self.passwords.push(password);
        self
    }

    /// The Graph application permissions (app roles) its tokens for Microsoft Graph carry in
    /// `roles`, e.g. `Application.ReadWrite.OwnedBy`.
    pub fn with_graph_roles(mut self, roles: &[&str]) -> AppRegistration {
        self.graph_roles = roles.iter().map(|role| (*role).to_owned()).collect();
        self
    }

    /// Accepts assertions signed by this certificate's key. Graph lists it valid from now for
    /// a year.
    ///
    /// # Panics
    /// Never in practice: a [`TestCertificate`] always holds an RSA certificate.
    pub fn with_certificate(self, certificate: &TestCertificate) -> AppRegistration {
        let now = OffsetDateTime::now_utc();
        self.with_certificate_der(
            certificate.cert_der(),
            now,
            now + Duration::from_secs(365 * 24 * 3600),
        )
        .expect("a TestCertificate always holds an RSA certificate")
    }

    /// Like [`AppRegistration::with_certificate`], with the `endDateTime` Graph lists for it
    /// (the token endpoint does not check it).
    ///
    /// # Panics
    /// Never in practice: a [`TestCertificate`] always holds an RSA certificate.
    pub fn with_certificate_expiring(
        self,
        certificate: &TestCertificate,
        end: OffsetDateTime,
    ) -> AppRegistration {
        let start = (end - Duration::from_secs(365 * 24 * 3600)).min(OffsetDateTime::now_utc());
        self.with_certificate_der(certificate.cert_der(), start, end)
            .expect("a TestCertificate always holds an RSA certificate")
    }

    /// Accepts assertions signed by the key of this RSA certificate (PEM).
    pub fn with_certificate_pem(self, cert_pem: &str) -> Result<AppRegistration, TestkitError> {
        let parsed = pem::parse(cert_pem)
            .map_err(|e| TestkitError::InvalidCertificate(format!("not a PEM certificate: {e}")))?;
        let now = OffsetDateTime::now_utc();
        self.with_certificate_der(
            parsed.contents(),
            now,
            now + Duration::from_secs(365 * 24 * 3600),
        )
    }

    fn with_certificate_der(
        mut self,
        der: &[u8],
        start: OffsetDateTime,
        end: OffsetDateTime,
    ) -> Result<AppRegistration, TestkitError> {
        use base64::Engine;
        use sha1::Digest;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let public_key = crate::der::rsa_public_key_from_cert(der)?;
        self.certificates.push(RegisteredCertificate {
            sha1: b64.encode(sha1::Sha1::digest(der)),
            sha256: b64.encode(sha2::Sha256::digest(der)),
            key: DecodingKey::from_rsa_der(&public_key),
            key_id: uuid::Uuid::new_v4().to_string(),
            thumbprint: base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(der)),
            der: der.to_vec(),
            start,
            end,
        });
        Ok(self)
    }

    /// Accepts external tokens matching this federated identity credential.
    pub fn with_federated_credential(mut self, credential: FederatedCredential) -> AppRegistration {
        self.federated.push(credential);
        self
    }
}

/// A federated identity credential: which external tokens an app trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatedCredential {
    /// Exact `iss` of the external token.
    pub issuer: String,
    /// Exact (case-sensitive) `sub` of the external token.
    pub subject: String,
    /// Required `aud` of the external token.
    pub audience: String,
}

impl FederatedCredential {
    /// Trust tokens from `issuer` for `subject`, with audience `api://AzureADTokenExchange`.
    pub fn new(issuer: impl Into<String>, subject: impl Into<String>) -> FederatedCredential {
        FederatedCredential {
            issuer: issuer.into(),
            subject: subject.into(),
            audience: FEDERATED_AUDIENCE.to_owned(),
        }
    }

    /// Require another audience (e.g. `api://AzureADTokenExchangeUSGov`).
    pub fn with_audience(mut self, audience: impl Into<String>) -> FederatedCredential {
        self.audience = audience.into();
        self
    }
}

/// How successful token answers look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOptions {
    /// `expires_in` (Entra: 3599 for a typical token).
    pub lifetime: Duration,
    /// Send `expires_in` and `ext_expires_in` as strings (`"3599"`), as older endpoints do.
    pub expires_in_as_string: bool,
    /// Add `refresh_in` with this many seconds.
    pub refresh_in: Option<Duration>,
}

impl Default for TokenOptions {
    fn default() -> Self {
        TokenOptions {
            lifetime: Duration::from_secs(3599),
            expires_in_as_string: false,
            refresh_in: None,
        }
    }
}

/// One request the emulator received. Secret form fields (`client_secret`, `client_assertion`)
/// are replaced by `[REDACTED]`, so only their presence is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// URL path, e.g. `/contoso/oauth2/v2.0/token`.
    pub path: String,
    /// Query parameters.
    pub query: BTreeMap<String, String>,
    /// Form fields of the body, secrets redacted.
    pub form: BTreeMap<String, String>,
    /// A JSON body (Graph requests), with every `secretText` value replaced by `[REDACTED]`.
    pub json: Option<serde_json::Value>,
    /// Status answered; `None` while the request is being handled, when the connection was
    /// dropped on purpose, or when the client gave up before the answer (e.g. during a `Delay`).
    pub status: Option<u16>,
}

impl RecordedRequest {
    /// Whether this is a `POST /{tenant}/oauth2/v2.0/token`.
    pub fn is_token_request(&self) -> bool {
        self.method == "POST" && token::tenant_of(&self.path).is_some()
    }

    /// Whether this is a Microsoft Graph request (`/v1.0/...`).
    pub fn is_graph_request(&self) -> bool {
        graph::is_graph_path(&self.path)
    }
}

/// Which flow produced an issued token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenSource {
    /// Client secret.
    ClientSecret,
    /// Certificate client assertion.
    Certificate,
    /// Federated (workload identity) assertion.
    Federated,
    /// IMDS or App Service managed identity endpoint.
    ManagedIdentity,
}

/// A token the emulator issued. `Debug` never shows the token itself.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The bearer token.
    pub access_token: SecretString,
    /// Tenant it was issued in.
    pub tenant: String,
    /// Client (application) id it was issued to.
    pub client_id: String,
    /// Resource (audience), e.g. `https://vault.azure.net`, without `/.default`.
    pub resource: String,
    /// When it stops being valid.
    pub expires_at: SystemTime,
    /// Flow that produced it.
    pub source: TokenSource,
    /// The `roles` claim: the caller's Graph application roles in a token for Microsoft Graph
    /// ([`AppRegistration::with_graph_roles`], [`ManagedIdentity::with_graph_roles`]); empty for
    /// other resources.
    pub roles: Vec<String>,
}

/// Why a bearer token was refused by [`EntraEmulator::validate_bearer`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BearerError {
    /// The emulator never issued this token.
    #[error("the bearer token was not issued by this Entra emulator")]
    Unknown,
    /// The token was issued but has expired.
    #[error("the bearer token has expired")]
    Expired,
    /// The token is for another resource.
    #[error("the bearer token is for resource {actual}, not {expected}")]
    WrongAudience {
        /// The resource the caller wanted.
        expected: String,
        /// The resource the token was issued for.
        actual: String,
    },
    /// The token was issued in another tenant.
    #[error("the bearer token was issued in tenant {actual}, not {expected}")]
    WrongTenant {
        /// The tenant the caller trusts.
        expected: String,
        /// The tenant the token was issued in.
        actual: String,
    },
}

/// A cheap handle that checks bearer tokens against what an [`EntraEmulator`] issued; it keeps
/// working while the emulator runs (the Key Vault emulator holds one).
#[derive(Debug, Clone)]
pub struct TokenValidator {
    shared: Arc<Shared>,
}

impl TokenValidator {
    /// Accepts `token` if this emulator issued it in `tenant` (case-insensitive) for `resource`
    /// and it has not expired, checked in Key Vault's order: audience, issuer, lifetime.
    pub fn validate_in(
        &self,
        token: &str,
        tenant: &str,
        resource: &str,
    ) -> Result<IssuedToken, BearerError> {
        let issued = self.validate_audience(token, resource)?;
        if !issued.tenant.eq_ignore_ascii_case(tenant) {
            return Err(BearerError::WrongTenant {
                expected: tenant.to_owned(),
                actual: issued.tenant,
            });
        }
        if issued.expires_at <= SystemTime::now() {
            return Err(BearerError::Expired);
        }
        Ok(issued)
    }

    /// Accepts `token` if this emulator issued it (in any tenant) for `resource` and it has
    /// not expired.
    pub fn validate(&self, token: &str, resource: &str) -> Result<IssuedToken, BearerError> {
        let issued = self.validate_audience(token, resource)?;
        if issued.expires_at <= SystemTime::now() {
            return Err(BearerError::Expired);
        }
        Ok(issued)
    }

    fn validate_audience(&self, token: &str, resource: &str) -> Result<IssuedToken, BearerError> {
        let state = self.shared.lock();
        let issued = state
            .issued
            .iter()
            .find(|t| t.access_token.expose_secret() == token)
            .ok_or(BearerError::Unknown)?;
        if normalize_resource(&issued.resource) != normalize_resource(resource) {
            return Err(BearerError::WrongAudience {
                expected: resource.to_owned(),
                actual: issued.resource.clone(),
            });
        }
        Ok(issued.clone())
    }
}

fn normalize_resource(resource: &str) -> &str {
    resource.trim_end_matches('/')
}

#[derive(Debug, Default)]
pub(crate) struct EntraState {
    apps: Vec<AppRegistration>,
    tenants: Vec<String>,
    trusted_issuers: Vec<(String, DecodingKey)>,
    faults: FaultQueue,
    requests: RequestLog<RecordedRequest>,
    issued: Vec<IssuedToken>,
    used_jtis: HashSet<String>,
    token_options: TokenOptions,
    managed_identity: Option<ManagedIdentity>,
    arc: Option<identity::ArcState>,
    github: Option<GithubOidc>,
    /// Resources registered with [`EntraEmulator::register_resource`], normalised.
    resources: Vec<String>,
    /// Microsoft Graph's side: owners, policy, limits, faults.
    graph: graph::GraphState,
}

struct Shared {
    state: Mutex<EntraState>,
    /// Created on first use: generating its RSA key is the slowest part of a start.
    github_issuer: OnceLock<OidcIssuer>,
    scheme: &'static str,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The built-in GitHub Actions issuer.
    ///
    /// # Panics
    /// If RSA key generation fails, which does not happen on a working system.
    fn github_issuer(&self) -> &OidcIssuer {
        self.github_issuer.get_or_init(|| {
            OidcIssuer::new(GITHUB_ACTIONS_ISSUER).expect("generating the GitHub issuer's RSA key")
        })
    }

    /// Locks the state; a panic in another test thread does not make the state unusable.
    fn lock(&self) -> MutexGuard<'_, EntraState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The running Entra ID emulator. Dropping it (or [`EntraEmulator::shutdown`]) stops the server.
#[derive(Debug)]
pub struct EntraEmulator {
    server: ServerHandle,
    shared: Arc<Shared>,
    ca: Option<Arc<TestCa>>,
}

impl EntraEmulator {
    /// Starts over plain HTTP on an ephemeral port of 127.0.0.1.
    pub async fn start() -> Result<EntraEmulator, TestkitError> {
        EntraEmulator::start_with(ServerOptions::default()).await
    }

    /// Starts over HTTPS with a freshly generated CA ([`EntraEmulator::ca_pem`]).
    pub async fn start_tls() -> Result<EntraEmulator, TestkitError> {
        let ca = Arc::new(TestCa::generate()?);
        EntraEmulator::start_with(ServerOptions {
            port: 0,
            ca: Some(ca),
        })
        .await
    }

    /// Starts with explicit options (fixed port, a CA shared with the Key Vault emulator).
    pub async fn start_with(options: ServerOptions) -> Result<EntraEmulator, TestkitError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(EntraState::default()),
            github_issuer: OnceLock::new(),
            scheme: if options.ca.is_some() {
                "https"
            } else {
                "http"
            },
        });
        let acceptor = match &options.ca {
            Some(ca) => Some(tokio_rustls::TlsAcceptor::from(ca.server_config()?)),
            None => None,
        };
        let handler_shared = shared.clone();
        let handler: Handler = Arc::new(move |request| {
            let shared = handler_shared.clone();
            Box::pin(async move { handle(&shared, request).await })
        });
        let server = ServerHandle::start(options.port, acceptor, handler).await?;
        Ok(EntraEmulator {
            server,
            shared,
            ca: options.ca,
        })
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT` (no trailing slash): the authority host.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }

    /// `{base_url}/{tenant}/oauth2/v2.0/token`, also the `aud` a client assertion must carry.
    pub fn token_url(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.base_url())
    }

    /// The CA certificate (PEM) to trust, when serving HTTPS.
    pub fn ca_pem(&self) -> Option<String> {
        self.ca.as_ref().map(|ca| ca.cert_pem().to_owned())
    }

    /// The CA, when serving HTTPS (to start the Key Vault emulator with the same trust root).
    pub fn ca(&self) -> Option<Arc<TestCa>> {
        self.ca.clone()
    }

    /// Registers an app (its tenant becomes known too). A second registration of the same
    /// tenant and client id replaces the first.
    pub fn register_app(&self, app: AppRegistration) {
        let mut state = self.shared.lock();
        let tenant = app.tenant.to_ascii_lowercase();
        if !state.tenants.contains(&tenant) {
            state.tenants.push(tenant);
        }
        state.apps.retain(|existing| {
            !(existing.tenant.eq_ignore_ascii_case(&app.tenant)
                && existing.client_id == app.client_id)
        });
        state.apps.push(app);
    }

    /// Makes a tenant known without any app (unknown clients there answer AADSTS700016).
    pub fn add_tenant(&self, tenant: &str) {
        let mut state = self.shared.lock();
        let tenant = tenant.to_ascii_lowercase();
        if !state.tenants.contains(&tenant) {
            state.tenants.push(tenant);
        }
    }

    /// Makes a resource (an application ID URI such as `api://my-api`, or an application id)
    /// known in every tenant, so client credentials may ask for `{resource}/.default`. The
    /// Microsoft resources of [`KNOWN_RESOURCES`] are always known; any other resource is
    /// refused with 400 `invalid_resource` AADSTS500011, as Entra refuses a resource that has no
    /// service principal in the tenant.
    pub fn register_resource(&self, resource: &str) {
        let resource = token::normalize_resource_id(resource);
        let mut state = self.shared.lock();
        if !state.resources.contains(&resource) {
            state.resources.push(resource);
        }
    }

    /// Trusts tokens from `issuer` for federated credentials naming its issuer URL.
    pub fn trust_issuer(&self, issuer: &OidcIssuer) {
        self.shared
            .lock()
            .trusted_issuers
            .push((issuer.issuer().to_owned(), issuer.decoding_key().clone()));
    }

    /// The built-in GitHub Actions issuer (`https://token.actions.githubusercontent.com`),
    /// already trusted; it signs what the [`EntraEmulator::github_oidc_request_url`] endpoint hands out.
    pub fn github_issuer(&self) -> &OidcIssuer {
        self.shared.github_issuer()
    }

    /// Changes how later successful answers look (lifetime, string `expires_in`, `refresh_in`).
    pub fn set_token_options(&self, options: TokenOptions) {
        self.shared.lock().token_options = options;
    }

    /// The next request (to any route) gets `fault` instead of its normal answer.
    pub fn inject(&self, fault: Fault) {
        self.inject_times(fault, 1);
    }

    /// The next `times` requests get `fault`.
    pub fn inject_times(&self, fault: Fault, times: usize) {
        self.shared.lock().faults.push(fault, times);
    }

    /// Faults still waiting for a request (Graph's per-call faults included).
    pub fn pending_faults(&self) -> usize {
        let state = self.shared.lock();
        state.faults.len() + state.graph.pending()
    }

    /// Forgets every queued fault (Graph's per-call faults included).
    pub fn clear_faults(&self) {
        let mut state = self.shared.lock();
        state.faults.clear();
        state.graph.clear_faults();
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.to_vec()
    }

    /// The token endpoint requests received so far, in order.
    pub fn token_requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.is_token_request())
            .cloned()
            .collect()
    }

    /// How many token endpoint requests were received (faulted ones included).
    pub fn token_request_count(&self) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.is_token_request())
            .count()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Every token issued so far (token endpoint and managed identity).
    pub fn issued_tokens(&self) -> Vec<IssuedToken> {
        self.shared.lock().issued.clone()
    }

    /// Makes every token issued so far expired (later [`EntraEmulator::validate_bearer`] calls fail).
    pub fn expire_issued_tokens(&self) {
        let now = SystemTime::now();
        for token in &mut self.shared.lock().issued {
            token.expires_at = now;
        }
    }

    /// Accepts `token` if this emulator issued it for `resource` and it has not expired.
    pub fn validate_bearer(&self, token: &str, resource: &str) -> Result<IssuedToken, BearerError> {
        self.token_validator().validate(token, resource)
    }

    /// A handle for checking bearer tokens from elsewhere (the Key Vault emulator).
    pub fn token_validator(&self) -> TokenValidator {
        TokenValidator {
            shared: self.shared.clone(),
        }
    }

    /// Serves the managed identity endpoints for this identity.
    pub fn enable_managed_identity(&self, identity: ManagedIdentity) {
        self.shared.lock().managed_identity = Some(identity);
    }

    /// `{base_url}/metadata/identity/oauth2/token` (the IMDS token path).
    pub fn imds_endpoint(&self) -> String {
        format!("{}/metadata/identity/oauth2/token", self.base_url())
    }

    /// `{base_url}/msi/token`: the App Service / Container Apps `IDENTITY_ENDPOINT`.
    pub fn identity_endpoint(&self) -> String {
        format!("{}/msi/token", self.base_url())
    }

    /// Serves the Azure Arc agent's identity endpoint ([`EntraEmulator::arc_identity_endpoint`]):
    /// its key files go into `agent.key_dir`; its tokens are those of the identity given to
    /// [`EntraEmulator::enable_managed_identity`].
    pub fn enable_arc_agent(&self, agent: ArcAgent) {
        self.shared.lock().arc = Some(identity::ArcState::new(agent));
    }

    /// `{base_url}/arc/metadata/identity/oauth2/token`: the Arc machine's `IDENTITY_ENDPOINT`.
    pub fn arc_identity_endpoint(&self) -> String {
        format!("{}{}", self.base_url(), identity::ARC_PATH)
    }

    /// `{base_url}/arc`: the Arc machine's `IMDS_ENDPOINT` (clients only test that it is set).
    pub fn arc_imds_endpoint(&self) -> String {
        format!("{}/arc", self.base_url())
    }

    /// Serves the GitHub Actions OIDC endpoint with this configuration.
    pub fn enable_github_oidc(&self, github: GithubOidc) {
        self.shared.lock().github = Some(github);
    }

    /// `{base_url}/token?api-version=2.0`: the `ACTIONS_ID_TOKEN_REQUEST_URL` value (clients append
    /// `&audience=...`).
    pub fn github_oidc_request_url(&self) -> String {
        format!("{}/token?api-version=2.0", self.base_url())
    }

    /// `{base_url}`: where the Microsoft Graph routes (`/v1.0/applications...`) are served, the
    /// stand-in for `https://graph.microsoft.com` (and the national clouds' Graph hosts).
    pub fn graph_endpoint(&self) -> String {
        self.base_url()
    }

    /// Makes `owner_client_id` (an app or managed identity's client id) an owner of the app
    /// `app_client_id`: with `Application.ReadWrite.OwnedBy` it may then add and remove the
    /// app's passwords.
    pub fn add_owner(&self, app_client_id: &str, owner_client_id: &str) {
        let mut state = self.shared.lock();
        let pair = (app_client_id.to_owned(), owner_client_id.to_owned());
        if !state.graph.owners.contains(&pair) {
            state.graph.owners.push(pair);
        }
    }

    /// A password added through Graph's `addPassword` is refused by the token endpoint
    /// (AADSTS7000215) until `delay` has passed since it was added: Entra is eventually
    /// consistent. Default: no delay.
    pub fn set_secret_propagation_delay(&self, delay: Duration) {
        self.shared.lock().graph.propagation_delay = delay;
    }

    /// The tenant's app management policy, applied to every later `addPassword`.
    pub fn set_app_policy(&self, policy: AppPolicy) {
        self.shared.lock().graph.policy = policy;
    }

    /// Marks the app `client_id` as one for personal Microsoft accounts (or not): such an app
    /// holds at most [`TOO_MANY_PASSWORDS_LIMIT`] passwords, and a further `addPassword` gets 400
    /// `TooManyAppPasswords`.
    pub fn set_personal_account(&self, client_id: &str, personal: bool) {
        let mut state = self.shared.lock();
        state.graph.personal.retain(|id| id != client_id);
        if personal {
            state.graph.personal.push(client_id.to_owned());
        }
    }

    /// Only tokens for this Graph resource (e.g. `https://graph.microsoft.us`) are accepted by
    /// the Graph routes; by default a token for any cloud's Graph resource is.
    pub fn set_graph_resource(&self, resource: &str) {
        self.shared.lock().graph.resource = Some(resource.to_owned());
    }

    /// The next Graph request of kind `call` gets `fault` (shaped as Graph shapes it: a 429 has
    /// `Retry-After` and Graph's error body). Faults queued with [`EntraEmulator::inject`] come
    /// first.
    pub fn inject_graph(&self, call: GraphCall, fault: Fault) {
        self.inject_graph_times(call, fault, 1);
    }

    /// The next `times` Graph requests of kind `call` get `fault`.
    pub fn inject_graph_times(&self, call: GraphCall, fault: Fault, times: usize) {
        self.shared.lock().graph.push_fault(call, fault, times);
    }

    /// Every later successful answer of `call` (the application read, addPassword) is passed
    /// through `edit` before it is sent; the call itself takes effect as usual (addPassword still
    /// adds the password). For tests of a Graph, or a proxy in front of it, that answers
    /// something malformed. A second call replaces the edit of that call.
    pub fn edit_graph_answers(
        &self,
        call: GraphCall,
        edit: impl Fn(&mut serde_json::Value) + Send + Sync + 'static,
    ) {
        self.shared
            .lock()
            .graph
            .set_edit(call, std::sync::Arc::new(edit));
    }

    /// How many TCP connections the emulator has accepted, for every endpoint together: a
    /// client that keeps its connections opens one and sends many requests on it.
    pub fn connections_accepted(&self) -> usize {
        self.server.connections_accepted()
    }

    /// The Graph requests received so far, in order (`Authorization` is never recorded, a
    /// `secretText` in a body is redacted).
    pub fn graph_requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.is_graph_request())
            .cloned()
            .collect()
    }

    /// How many application reads named `keyCredentials` in `$select` (those return `key`, and
    /// Graph throttles them at 150 requests per minute and tenant).
    pub fn key_credential_selects(&self) -> usize {
        self.shared.lock().graph.key_selects
    }

    /// A snapshot of the app `client_id` as Graph sees it (the first registered with that
    /// client id, in any tenant), secrets included, for tests.
    pub fn application(&self, client_id: &str) -> Option<GraphApplication> {
        let state = self.shared.lock();
        let app = state.apps.iter().find(|app| app.client_id == client_id)?;
        Some(graph::snapshot(&state, app))
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

/// Fields whose values never go into the request log.
const SECRET_FIELDS: [&str; 2] = ["client_secret", "client_assertion"];

fn record(request: &Request) -> RecordedRequest {
    let is_json = request
        .header("content-type")
        .is_some_and(|ct| ct.starts_with("application/json"));
    // A JSON body is not a form: reading it as one would record its text (a `secretText`) verbatim.
    let form = if is_json {
        BTreeMap::new()
    } else {
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&request.body)
            .unwrap_or_default()
            .into_iter()
            .map(|(key, value)| {
                if SECRET_FIELDS.contains(&key.as_str()) {
                    (key, "[REDACTED]".to_owned())
                } else {
                    (key, value)
                }
            })
            .collect()
    };
    let json = is_json
        .then(|| serde_json::from_slice::<serde_json::Value>(&request.body).ok())
        .flatten()
        .map(graph::redacted);
    RecordedRequest {
        method: request.method.to_string(),
        path: request.path.clone(),
        query: request.query_pairs(),
        form,
        json,
        status: None,
    }
}

async fn handle(shared: &Shared, request: Request) -> Reply {
    let (id, fault) = {
        let mut state = shared.lock();
        let id = state.requests.arrived(record(&request));
        let fault = state
            .faults
            .next()
            .or_else(|| graph::call_of(&request).and_then(|call| state.graph.next_fault(call)));
        (id, fault)
    };
    let reply = match fault {
        None => route(shared, &request),
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            route(shared, &request)
        }
        Some(fault) if graph::is_graph_path(&request.path) => {
            graph::fault_reply(shared, &request, fault)
        }
        Some(fault) => token::fault_reply(shared, &request, fault),
    };
    let status = reply.status();
    shared
        .lock()
        .requests
        .complete(id, |recorded| recorded.status = status);
    reply
}

fn route(shared: &Shared, request: &Request) -> Reply {
    if let Some(tenant) = token::tenant_of(&request.path) {
        return token::token_endpoint(shared, request, tenant);
    }
    if graph::is_graph_path(&request.path) {
        return graph::graph(shared, request);
    }
    match request.path.as_str() {
        "/metadata/identity/oauth2/token" => identity::imds(shared, request),
        "/msi/token" => identity::app_service(shared, request),
        identity::ARC_PATH => identity::arc(shared, request),
        "/token" => identity::github(shared, request),
        _ => Reply::json(
            http::StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "not_found", "error_description": format!("the Entra emulator has no route {}", request.path)}),
        ),
    }
}
