//! The Azure Key Vault emulator: the secrets API over HTTPS (a CA generated at run time or shared
//! with the Entra emulator), challenge authentication exactly as the service answers it, bearer
//! tokens checked against what the Entra emulator issued (audience, issuer tenant, lifetime),
//! the API versions the service knows, versions, attributes, soft delete with an asynchronous
//! recover and purge, Key Vault's name and size rules and error bodies, fault injection, and
//! hooks for tests to look inside the vault without going through HTTP.
//!
//! Routes (`api-version` required, one of [`API_VERSIONS`]; a trailing slash is tolerated as the
//! SDKs send it): `PUT|GET|PATCH /secrets/{name}[/{version}]`, `GET /secrets/{name}/versions`,
//! `GET /secrets`, `DELETE /secrets/{name}`, `GET|DELETE /deletedsecrets/{name}`,
//! `POST /deletedsecrets/{name}/recover`.
//!
//! What it enforces, and where each fact comes from (PROTOCOLS.md first):
//!
//! | behaviour | answer | source |
//! |---|---|---|
//! | no `Authorization` header | 401 `Unauthorized` `AKV10000: Request is missing a Bearer or PoP token.` + the challenge | PROTOCOLS.md "Challenge auth"; the message as the Azure SDK recordings show it |
//! | challenge | `WWW-Authenticate: Bearer authorization="{authority}/{tenant}", resource="{resource}"`, the resource of the vault's cloud ([`KeyVaultOptions::resource`]) | PROTOCOLS.md "Challenge auth", "National clouds" |
//! | a token for another resource | 401 `AKV10022: Invalid audience. Expected {resource}, found: {aud}.` | PROTOCOLS.md "Resource checks"; the text as the service sends it (users' transcripts) |
//! | a token of another tenant than [`KeyVaultOptions::tenant`] | 401 `AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{tenant}/, found https://sts.windows.net/{other}/.` | PROTOCOLS.md "Resource checks"; the text as users quote it |
//! | an expired token, or one the Entra emulator never issued | 401 `Unauthorized`, `Token validation failed: ...` | the service's own text for these is not in our sources: testkit's wording, no AKV code claimed |
//! | `api-version` missing, or not one of [`API_VERSIONS`] (or of [`KeyVaultOptions::api_versions`]) | 400 `BadParameter` `The specified version (x) is not recognized. Consider using the latest supported version (2025-07-01).` | PROTOCOLS.md "Resource checks"; the versions from the Key Vault REST reference and the SDKs' version enums (see [`API_VERSIONS`]) |
//! | recover a deleted secret | 200 at once, but for [`KeyVaultOptions::recovery_delay`] the secret is neither readable (404 `SecretNotFound`) nor writable (409 `Conflict`/`ObjectIsBeingRecovered`), nor listed as deleted | PROTOCOLS.md ("Recovery of a deleted secret finishes asynchronously"); the SDK pollers that wait on `GET /secrets/{name}` until it stops answering 404; `ObjectIsBeingRecovered` from the azure-sdk-for-net Key Vault changelog (4.5.0-beta.1) |
//! | creating a deleted-but-recoverable name | 409 `Conflict`/`ObjectIsDeletedButRecoverable` | PROTOCOLS.md "Soft delete" |
//! | name, value, content type and tag limits | 400 `BadParameter` | PROTOCOLS.md "Azure Key Vault secrets" |
//! | SecretBundle shape, 32-hex versions, Unix-second times | as recorded | PROTOCOLS.md; tests/fixtures/keyvault (real recordings) |

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::cert::unix_now;
use crate::entra::{BearerError, EntraEmulator, TokenValidator};
use crate::error::TestkitError;
use crate::fault::{Fault, FaultQueue};
use crate::server::{Handler, Reply, Request, RequestLog, ServerHandle};
use crate::tls::TestCa;

/// The resource (audience) Key Vault tokens are issued for in the public cloud.
pub const KEY_VAULT_RESOURCE: &str = "https://vault.azure.net";
/// Key Vault's resource in Azure US Government (vaults under `*.vault.usgovcloudapi.net`).
pub const KEY_VAULT_RESOURCE_US_GOVERNMENT: &str = "https://vault.usgovcloudapi.net";
/// Key Vault's resource in Azure operated by 21Vianet (China; vaults under `*.vault.azure.cn`).
pub const KEY_VAULT_RESOURCE_CHINA: &str = "https://vault.azure.cn";
/// The `api-version`s the emulator accepts: the GA versions of the Key Vault data-plane REST API
/// (the REST reference's version list and the SDKs' service-version enums: 2015-06-01,
/// 2016-10-01, 7.0 to 7.6, and 2025-07-01, the default of azure_security_keyvault_secrets 1.x),
/// plus `7.4-preview.1`, which the real service answered in our recorded fixture
/// tests/fixtures/keyvault/get-missing-secret.json. Anything else is 400 `BadParameter`.
pub const API_VERSIONS: &[&str] = &[
    "2015-06-01",
    "2016-10-01",
    "7.0",
    "7.1",
    "7.2",
    "7.3",
    "7.4",
    "7.5",
    "7.6",
    "2025-07-01",
    "7.4-preview.1",
];
/// The latest version, named in the refusal of an unknown one.
const LATEST_API_VERSION: &str = "2025-07-01";
/// How long a recovery takes unless [`KeyVaultOptions::recovery_delay`] says otherwise.
pub const DEFAULT_RECOVERY_DELAY: Duration = Duration::from_millis(200);
/// Largest secret value Key Vault accepts, in bytes.
pub const MAX_VALUE_BYTES: usize = 25 * 1024;
const RECOVERY_LEVEL: &str = "CustomizedRecoverable+Purgeable";
const RECOVERABLE_DAYS: i64 = 7;
const MAX_TAGS: usize = 15;
const MAX_CONTENT_TYPE: usize = 255;
const MAX_TAG_LEN: usize = 256;

/// How the vault is served and what its challenge says.
#[derive(Debug, Clone)]
pub struct KeyVaultOptions {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// CA for the HTTPS certificate; `None` generates one (Key Vault is always HTTPS).
    pub ca: Option<Arc<TestCa>>,
    /// Tenant named in the `WWW-Authenticate` challenge.
    pub tenant: String,
    /// Authority host named in the challenge (`authorization="{authority}/{tenant}"`).
    pub authority: String,
    /// The vault's resource: the audience its tokens must carry, named in the challenge
    /// ([`KEY_VAULT_RESOURCE`], [`KEY_VAULT_RESOURCE_US_GOVERNMENT`], [`KEY_VAULT_RESOURCE_CHINA`]).
    pub resource: String,
    /// How long a recovered secret stays unreadable and unwritable ([`DEFAULT_RECOVERY_DELAY`]).
    pub recovery_delay: Duration,
    /// The `api-version`s this vault knows ([`API_VERSIONS`]); fewer emulate a service that
    /// does not offer the newest yet (a national cloud lagging behind, an Azure Stack Hub).
    pub api_versions: Vec<&'static str>,
}

impl KeyVaultOptions {
    /// A new CA, and the challenge of the real service: `https://login.windows.net/{tenant}`,
    /// resource `https://vault.azure.net`. Only tokens of `tenant` are accepted.
    pub fn new(tenant: impl Into<String>) -> KeyVaultOptions {
        KeyVaultOptions {
            port: 0,
            ca: None,
            tenant: tenant.into(),
            authority: "https://login.windows.net".to_owned(),
            resource: KEY_VAULT_RESOURCE.to_owned(),
            recovery_delay: DEFAULT_RECOVERY_DELAY,
            api_versions: API_VERSIONS.to_vec(),
        }
    }

    /// The Entra emulator's CA (when it serves HTTPS), and a challenge pointing at it.
    pub fn for_entra(entra: &EntraEmulator, tenant: impl Into<String>) -> KeyVaultOptions {
        KeyVaultOptions {
            ca: entra.ca(),
            authority: entra.base_url(),
            ..KeyVaultOptions::new(tenant)
        }
    }

    /// The same vault in another cloud: tokens for `resource`, which the challenge names.
    pub fn with_resource(mut self, resource: impl Into<String>) -> KeyVaultOptions {
        self.resource = resource.into();
        self
    }
}

/// One request the vault received (no bodies: they hold secret values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultRequest {
    /// HTTP method.
    pub method: String,
    /// URL path, e.g. `/secrets/graph-token`.
    pub path: String,
    /// Query parameters.
    pub query: BTreeMap<String, String>,
    /// Whether an `Authorization` header was sent.
    pub authorized: bool,
    /// Status answered; `None` while the request is being handled, when the connection was
    /// dropped on purpose, or when the client gave up before the answer.
    pub status: Option<u16>,
}

/// The latest version of a secret as the vault holds it. `Debug` never shows the value.
#[derive(Debug, Clone)]
pub struct StoredSecret {
    /// Name as first created.
    pub name: String,
    /// The value.
    pub value: SecretString,
    /// 32-hex version id.
    pub version: String,
    /// `contentType`.
    pub content_type: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// `attributes.enabled`.
    pub enabled: bool,
    /// `attributes.exp`, Unix seconds.
    pub expires: Option<i64>,
    /// `attributes.nbf`, Unix seconds.
    pub not_before: Option<i64>,
    /// `attributes.created`, Unix seconds.
    pub created: i64,
    /// `attributes.updated`, Unix seconds.
    pub updated: i64,
    /// How many versions exist.
    pub version_count: usize,
    /// Whether the secret is soft-deleted.
    pub deleted: bool,
    /// Whether the secret is being recovered (neither readable nor writable yet).
    pub recovering: bool,
}

#[derive(Debug, Clone)]
struct Version {
    id: String,
    value: SecretString,
    content_type: Option<String>,
    tags: BTreeMap<String, String>,
    enabled: bool,
    expires: Option<i64>,
    not_before: Option<i64>,
    created: i64,
    updated: i64,
}

#[derive(Debug)]
struct Entry {
    name: String,
    versions: Vec<Version>,
    deleted_at: Option<i64>,
    /// Set by a recover: until then the secret is neither live nor deleted.
    recovering_until: Option<Instant>,
}

impl Entry {
    fn latest(&self) -> Option<&Version> {
        self.versions.last()
    }

    fn recovering(&self) -> bool {
        self.recovering_until
            .is_some_and(|until| Instant::now() < until)
    }

    /// Neither deleted nor being recovered.
    fn live(&self) -> bool {
        self.deleted_at.is_none() && !self.recovering()
    }
}

#[derive(Debug, Default)]
struct VaultState {
    /// Keyed by lower-case name: Key Vault names are case-insensitive.
    secrets: BTreeMap<String, Entry>,
    faults: FaultQueue,
    requests: RequestLog<VaultRequest>,
    denied_clients: HashSet<String>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<VaultState>,
    validator: TokenValidator,
    challenge: String,
    tenant: String,
    resource: String,
    recovery_delay: Duration,
    api_versions: Vec<&'static str>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, VaultState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The running Key Vault emulator. Dropping it (or [`KeyVaultEmulator::shutdown`]) stops it.
#[derive(Debug)]
pub struct KeyVaultEmulator {
    server: ServerHandle,
    shared: Arc<Shared>,
    ca: Arc<TestCa>,
}

impl KeyVaultEmulator {
    /// Starts over HTTPS; bearer tokens are checked with `validator`
    /// (from [`EntraEmulator::token_validator`]).
    pub async fn start(
        validator: TokenValidator,
        options: KeyVaultOptions,
    ) -> Result<KeyVaultEmulator, TestkitError> {
        let ca = match options.ca {
            Some(ca) => ca,
            None => Arc::new(TestCa::generate()?),
        };
        let challenge = format!(
            "Bearer authorization=\"{}/{}\", resource=\"{}\"",
            options.authority.trim_end_matches('/'),
            options.tenant,
            options.resource
        );
        let shared = Arc::new(Shared {
            state: Mutex::new(VaultState::default()),
            validator,
            challenge,
            tenant: options.tenant,
            resource: options.resource,
            recovery_delay: options.recovery_delay,
            api_versions: options.api_versions,
        });
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config()?);
        let handler_shared = shared.clone();
        let handler: Handler = Arc::new(move |request| {
            let shared = handler_shared.clone();
            Box::pin(async move { handle(&shared, request).await })
        });
        let server = ServerHandle::start(options.port, Some(acceptor), handler).await?;
        Ok(KeyVaultEmulator { server, shared, ca })
    }

    /// `https://127.0.0.1:PORT`, the vault URL (no trailing slash).
    pub fn vault_url(&self) -> String {
        self.server.base_url()
    }

    /// The CA certificate (PEM) clients must trust.
    pub fn ca_pem(&self) -> String {
        self.ca.cert_pem().to_owned()
    }

    /// The CA itself (to write it to a file).
    pub fn ca(&self) -> Arc<TestCa> {
        self.ca.clone()
    }

    /// The next request that passed authentication gets `fault` instead of its answer.
    pub fn inject(&self, fault: Fault) {
        self.inject_times(fault, 1);
    }

    /// The next `times` authenticated requests get `fault`.
    pub fn inject_times(&self, fault: Fault, times: usize) {
        self.shared.lock().faults.push(fault, times);
    }

    /// Requests from tokens of this client id answer 403 `ForbiddenByRbac`.
    pub fn deny_client(&self, client_id: &str) {
        self.shared
            .lock()
            .denied_clients
            .insert(client_id.to_owned());
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<VaultRequest> {
        self.shared.lock().requests.to_vec()
    }

    /// The latest version of `name` (soft-deleted ones too), without going through HTTP.
    pub fn secret(&self, name: &str) -> Option<StoredSecret> {
        let state = self.shared.lock();
        let entry = state.secrets.get(&name.to_ascii_lowercase())?;
        let latest = entry.latest()?;
        Some(StoredSecret {
            name: entry.name.clone(),
            value: latest.value.clone(),
            version: latest.id.clone(),
            content_type: latest.content_type.clone(),
            tags: latest.tags.clone(),
            enabled: latest.enabled,
            expires: latest.expires,
            not_before: latest.not_before,
            created: latest.created,
            updated: latest.updated,
            version_count: entry.versions.len(),
            deleted: entry.deleted_at.is_some(),
            recovering: entry.recovering(),
        })
    }

    /// How many versions `name` has (0 when it does not exist).
    pub fn version_count(&self, name: &str) -> usize {
        self.secret(name).map_or(0, |s| s.version_count)
    }

    /// Writes a new version of `name` with no content type, tags or expiry (e.g. a secret that
    /// secret-sync does not manage). Refuses what the HTTP API refuses.
    pub fn set_secret(&self, name: &str, value: &str) -> Result<(), TestkitError> {
        let body = json!({"value": value});
        let mut state = self.shared.lock();
        set_secret(&mut state, name, &body)
            .map(|_| ())
            .map_err(|refusal| TestkitError::VaultRefused(refusal.message))
    }

    /// Soft-deletes `name`; returns whether it existed (and was not already deleted).
    pub fn soft_delete(&self, name: &str) -> bool {
        let mut state = self.shared.lock();
        match state.secrets.get_mut(&name.to_ascii_lowercase()) {
            Some(entry) if entry.live() => {
                entry.deleted_at = Some(unix_now_i64());
                true
            }
            _ => false,
        }
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

fn unix_now_i64() -> i64 {
    i64::try_from(unix_now()).unwrap_or(i64::MAX)
}

/// A Key Vault error: status, `error.code`, message, optional `innererror.code`.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    inner: Option<&'static str>,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code,
            message: message.into(),
            inner: None,
        }
    }

    fn bad_parameter(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, "BadParameter", message)
    }

    fn not_found(name: &str) -> Refusal {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "SecretNotFound",
            format!(
                "A secret with (name/id) {name} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
            ),
        )
    }

    fn deleted_not_found(name: &str) -> Refusal {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "SecretNotFound",
            format!("Deleted Secret not found: {name}"),
        )
    }

    fn reply(&self) -> Reply {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(inner) = self.inner {
            error["innererror"] = json!({"code": inner});
        }
        Reply::json(self.status, &json!({"error": error}))
    }
}

async fn handle(shared: &Shared, request: Request) -> Reply {
    let id = shared.lock().requests.arrived(VaultRequest {
        method: request.method.to_string(),
        path: request.path.clone(),
        query: request.query_pairs(),
        authorized: request.headers.contains_key(http::header::AUTHORIZATION),
        status: None,
    });
    let reply = authenticate_and_route(shared, &request).await;
    let status = reply.status();
    shared
        .lock()
        .requests
        .complete(id, |recorded| recorded.status = status);
    reply
}

fn unauthorized(shared: &Shared, message: &str) -> Reply {
    Refusal::new(StatusCode::UNAUTHORIZED, "Unauthorized", message)
        .reply()
        .with_header("www-authenticate", &shared.challenge)
}

/// Key Vault's message for a refused bearer token (see the module doc for the sources).
fn bearer_refusal(shared: &Shared, err: &BearerError) -> String {
    match err {
        BearerError::WrongAudience { actual, .. } => format!(
            "AKV10022: Invalid audience. Expected {}, found: {actual}.",
            shared.resource
        ),
        BearerError::WrongTenant { actual, .. } => format!(
            "AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{}/, found https://sts.windows.net/{actual}/.",
            shared.tenant
        ),
        BearerError::Expired => "Token validation failed: the token has expired.".to_owned(),
        _ => "Token validation failed: the token's signature could not be verified.".to_owned(),
    }
}

async fn authenticate_and_route(shared: &Shared, request: &Request) -> Reply {
    let Some(authorization) = request.header("authorization") else {
        return unauthorized(
            shared,
            "AKV10000: Request is missing a Bearer or PoP token.",
        );
    };
    let token = authorization
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(token) = token else {
        return unauthorized(
            shared,
            "AKV10001: The Authorization header is not a Bearer token.",
        );
    };
    let issued = match shared
        .validator
        .validate_in(token, &shared.tenant, &shared.resource)
    {
        Ok(issued) => issued,
        Err(err) => return unauthorized(shared, &bearer_refusal(shared, &err)),
    };
    let fault = {
        let mut state = shared.lock();
        if state.denied_clients.contains(&issued.client_id) {
            let mut refusal = Refusal::new(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid={}\r\nVault: testkit;location=local",
                    issued.client_id
                ),
            );
            refusal.inner = Some("ForbiddenByRbac");
            return refusal.reply();
        }
        state.faults.next()
    };
    match fault {
        None => route(shared, request),
        Some(Fault::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            route(shared, request)
        }
        Some(fault) => fault_reply(shared, request, fault),
    }
}

fn fault_reply(shared: &Shared, request: &Request, fault: Fault) -> Reply {
    match fault {
        Fault::TooManyRequests { retry_after_secs } => {
            let reply = Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Throttled",
                "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached",
            )
            .reply();
            match retry_after_secs {
                Some(secs) => reply.with_header("retry-after", &secs.to_string()),
                None => reply,
            }
        }
        Fault::ServerError { status } => Refusal::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "InternalServerError",
            "The service encountered an internal error. Please try again.",
        )
        .reply(),
        Fault::Delay(_) | Fault::EmptyAccessToken => route(shared, request),
        Fault::MalformedBody => Reply::raw(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<html><body>Service temporarily unavailable</body></html>",
        ),
        Fault::EntraError {
            status,
            error,
            code,
            message,
        } => Reply::json(
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            &json!({"error": {"code": error, "message": format!("AADSTS{code}: {message}")}}),
        ),
        Fault::Custom {
            status,
            content_type,
            body,
        } => Reply::raw(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &content_type,
            body,
        ),
        Fault::DropConnection => Reply::DropConnection,
    }
}

fn route(shared: &Shared, request: &Request) -> Reply {
    match request.query_pairs().get("api-version") {
        None => {
            return Refusal::bad_parameter("The api-version query parameter is missing.").reply();
        }
        Some(version) if !shared.api_versions.contains(&version.as_str()) => {
            let latest = if shared.api_versions.contains(&LATEST_API_VERSION) {
                LATEST_API_VERSION
            } else {
                shared
                    .api_versions
                    .last()
                    .copied()
                    .unwrap_or(LATEST_API_VERSION)
            };
            return Refusal::bad_parameter(format!(
                "The specified version ({version}) is not recognized. Consider using the latest supported version ({latest})."
            ))
            .reply();
        }
        Some(_) => {}
    }
    let vault = format!("https://{}", request.header("host").unwrap_or("127.0.0.1"));
    let segments: Vec<&str> = request
        .path
        .trim_start_matches('/')
        .trim_end_matches('/')
        .split('/')
        .collect();
    let body: Value = if request.body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&request.body) {
            Ok(body) => body,
            Err(err) => {
                return Refusal::bad_parameter(format!(
                    "The request body is not valid JSON: {err}"
                ))
                .reply();
            }
        }
    };
    let mut state = shared.lock();
    let state = &mut *state;
    let result = match (&request.method, segments.as_slice()) {
        (&Method::GET, ["secrets"]) => Ok(list_secrets(state, &vault)),
        (&Method::PUT, ["secrets", name]) => set_secret(state, name, &body)
            .map(|(entry, version)| bundle(&vault, entry, version, true)),
        (&Method::GET, ["secrets", name, "versions"]) => list_versions(state, &vault, name),
        (&Method::GET, ["secrets", name]) => get_secret(state, &vault, name, ""),
        (&Method::GET, ["secrets", name, version]) => get_secret(state, &vault, name, version),
        (&Method::PATCH, ["secrets", name]) => update_secret(state, &vault, name, "", &body),
        (&Method::PATCH, ["secrets", name, version]) => {
            update_secret(state, &vault, name, version, &body)
        }
        (&Method::DELETE, ["secrets", name]) => delete_secret(state, &vault, name),
        (&Method::GET, ["deletedsecrets", name]) => get_deleted(state, &vault, name),
        (&Method::DELETE, ["deletedsecrets", name]) => purge(state, name),
        (&Method::POST, ["deletedsecrets", name, "recover"]) => {
            recover(state, &vault, name, shared.recovery_delay)
        }
        _ => Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "The Key Vault emulator has no route {} {}",
                request.method, request.path
            ),
        )),
    };
    match result {
        Ok(Answer::Json(body)) => Reply::json(StatusCode::OK, &body),
        Ok(Answer::NoContent) => Reply::raw(
            StatusCode::NO_CONTENT,
            "application/json; charset=utf-8",
            "",
        ),
        Err(refusal) => refusal.reply(),
    }
}

enum Answer {
    Json(Value),
    NoContent,
}

fn check_name(name: &str) -> Result<(), Refusal> {
    let valid = !name.is_empty()
        && name.len() <= 127
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(Refusal::bad_parameter(format!(
            "The request URI contains an invalid name: {name}. Secret names may only contain alphanumeric characters and dashes and must be between 1 and 127 characters long."
        )))
    }
}

fn live_entry<'a>(state: &'a mut VaultState, name: &str) -> Result<&'a mut Entry, Refusal> {
    check_name(name)?;
    state
        .secrets
        .get_mut(&name.to_ascii_lowercase())
        .filter(|entry| entry.live())
        .ok_or_else(|| Refusal::not_found(name))
}

fn attributes(version: &Version) -> Value {
    let mut attributes = json!({
        "enabled": version.enabled,
        "created": version.created,
        "updated": version.updated,
        "recoveryLevel": RECOVERY_LEVEL,
        "recoverableDays": RECOVERABLE_DAYS,
    });
    if let Some(nbf) = version.not_before {
        attributes["nbf"] = nbf.into();
    }
    if let Some(exp) = version.expires {
        attributes["exp"] = exp.into();
    }
    attributes
}

/// A SecretBundle (or SecretItem without the value): only the fields that are set, as the service does.
fn bundle(vault: &str, entry: &Entry, version: &Version, with_value: bool) -> Answer {
    Answer::Json(bundle_json(vault, entry, version, with_value))
}

fn bundle_json(vault: &str, entry: &Entry, version: &Version, with_value: bool) -> Value {
    let mut body = json!({
        "id": format!("{vault}/secrets/{}/{}", entry.name, version.id),
        "attributes": attributes(version),
    });
    if with_value {
        body["value"] = version.value.expose_secret().into();
    }
    if let Some(content_type) = &version.content_type {
        body["contentType"] = content_type.clone().into();
    }
    if !version.tags.is_empty() {
        body["tags"] = json!(version.tags);
    }
    body
}

/// contentType, attributes and tags from a PUT or PATCH body, checked like Key Vault does.
struct Properties {
    content_type: Option<Option<String>>,
    tags: Option<BTreeMap<String, String>>,
    enabled: Option<bool>,
    expires: Option<Option<i64>>,
    not_before: Option<Option<i64>>,
}

fn properties(body: &Value) -> Result<Properties, Refusal> {
    let content_type = match body.get("contentType") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::String(ct)) if ct.len() <= MAX_CONTENT_TYPE => Some(Some(ct.clone())),
        Some(_) => {
            return Err(Refusal::bad_parameter(format!(
                "contentType must be a string of at most {MAX_CONTENT_TYPE} characters."
            )));
        }
    };
    let tags = match body.get("tags") {
        None | Some(Value::Null) => None,
        Some(Value::Object(map)) => {
            if map.len() > MAX_TAGS {
                return Err(Refusal::bad_parameter(format!(
                    "A secret can have at most {MAX_TAGS} tags."
                )));
            }
            let mut tags = BTreeMap::new();
            for (key, value) in map {
                let Some(value) = value.as_str() else {
                    return Err(Refusal::bad_parameter(format!(
                        "Tag {key} must have a string value."
                    )));
                };
                if key.len() > MAX_TAG_LEN || value.len() > MAX_TAG_LEN {
                    return Err(Refusal::bad_parameter(format!(
                        "Tag names and values are at most {MAX_TAG_LEN} characters."
                    )));
                }
                tags.insert(key.clone(), value.to_owned());
            }
            Some(tags)
        }
        Some(_) => return Err(Refusal::bad_parameter("tags must be an object.")),
    };
    let attributes = body.get("attributes").unwrap_or(&Value::Null);
    let time = |name: &str| -> Result<Option<Option<i64>>, Refusal> {
        match attributes.get(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(value) => value.as_i64().map(|t| Some(Some(t))).ok_or_else(|| {
                Refusal::bad_parameter(format!("attributes.{name} must be Unix seconds."))
            }),
        }
    };
    let enabled = match attributes.get("enabled") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(enabled)) => Some(*enabled),
        Some(_) => {
            return Err(Refusal::bad_parameter(
                "attributes.enabled must be a boolean.",
            ));
        }
    };
    Ok(Properties {
        content_type,
        tags,
        enabled,
        expires: time("exp")?,
        not_before: time("nbf")?,
    })
}

fn set_secret<'a>(
    state: &'a mut VaultState,
    name: &str,
    body: &Value,
) -> Result<(&'a Entry, &'a Version), Refusal> {
    check_name(name)?;
    let Some(value) = body.get("value").and_then(Value::as_str) else {
        return Err(Refusal::bad_parameter(
            "The request body must contain a string 'value'.",
        ));
    };
    if value.len() > MAX_VALUE_BYTES {
        return Err(Refusal::bad_parameter(format!(
            "The secret value is {} bytes; Key Vault accepts at most {MAX_VALUE_BYTES} bytes (25 KB).",
            value.len()
        )));
    }
    let props = properties(body)?;
    let key = name.to_ascii_lowercase();
    if state
        .secrets
        .get(&key)
        .is_some_and(|e| e.deleted_at.is_some())
    {
        let mut refusal = Refusal::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged."
            ),
        );
        refusal.inner = Some("ObjectIsDeletedButRecoverable");
        return Err(refusal);
    }
    if state.secrets.get(&key).is_some_and(Entry::recovering) {
        let mut refusal = Refusal::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Secret {name} is currently being recovered. Retry the operation once the recovery has completed."
            ),
        );
        refusal.inner = Some("ObjectIsBeingRecovered");
        return Err(refusal);
    }
    let now = unix_now_i64();
    let entry = state.secrets.entry(key).or_insert_with(|| Entry {
        name: name.to_owned(),
        versions: Vec::new(),
        deleted_at: None,
        recovering_until: None,
    });
    entry.versions.push(Version {
        id: uuid::Uuid::new_v4().simple().to_string(),
        value: SecretString::from(value.to_owned()),
        content_type: props.content_type.flatten(),
        tags: props.tags.unwrap_or_default(),
        enabled: props.enabled.unwrap_or(true),
        expires: props.expires.flatten(),
        not_before: props.not_before.flatten(),
        created: now,
        updated: now,
    });
    let entry = &*entry;
    let version = entry.latest().ok_or_else(|| Refusal::not_found(name))?;
    Ok((entry, version))
}

fn find_version<'a>(entry: &'a Entry, name: &str, version: &str) -> Result<&'a Version, Refusal> {
    if version.is_empty() {
        entry.latest()
    } else {
        entry
            .versions
            .iter()
            .find(|v| v.id.eq_ignore_ascii_case(version))
    }
    .ok_or_else(|| Refusal::not_found(name))
}

fn get_secret(
    state: &mut VaultState,
    vault: &str,
    name: &str,
    version: &str,
) -> Result<Answer, Refusal> {
    let entry = live_entry(state, name)?;
    let found = find_version(entry, name, version)?;
    if !found.enabled {
        let mut refusal = Refusal::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Operation get is not allowed on a disabled secret.",
        );
        refusal.inner = Some("SecretDisabled");
        return Err(refusal);
    }
    Ok(bundle(vault, entry, found, true))
}

fn list_versions(state: &mut VaultState, vault: &str, name: &str) -> Result<Answer, Refusal> {
    let entry = live_entry(state, name)?;
    let items: Vec<Value> = entry
        .versions
        .iter()
        .map(|version| bundle_json(vault, entry, version, false))
        .collect();
    Ok(Answer::Json(json!({"value": items, "nextLink": null})))
}

fn list_secrets(state: &VaultState, vault: &str) -> Answer {
    let items: Vec<Value> = state
        .secrets
        .values()
        .filter(|entry| entry.live())
        .filter_map(|entry| {
            let latest = entry.latest()?;
            let mut item = bundle_json(vault, entry, latest, false);
            item["id"] = format!("{vault}/secrets/{}", entry.name).into();
            Some(item)
        })
        .collect();
    Answer::Json(json!({"value": items, "nextLink": null}))
}

fn update_secret(
    state: &mut VaultState,
    vault: &str,
    name: &str,
    version: &str,
    body: &Value,
) -> Result<Answer, Refusal> {
    let props = properties(body)?;
    let entry = live_entry(state, name)?;
    let index = if version.is_empty() {
        entry.versions.len().checked_sub(1)
    } else {
        entry
            .versions
            .iter()
            .position(|v| v.id.eq_ignore_ascii_case(version))
    }
    .ok_or_else(|| Refusal::not_found(name))?;
    let target = &mut entry.versions[index];
    if let Some(content_type) = props.content_type {
        target.content_type = content_type;
    }
    if let Some(tags) = props.tags {
        target.tags = tags;
    }
    if let Some(enabled) = props.enabled {
        target.enabled = enabled;
    }
    if let Some(expires) = props.expires {
        target.expires = expires;
    }
    if let Some(not_before) = props.not_before {
        target.not_before = not_before;
    }
    target.updated = unix_now_i64();
    Ok(bundle(vault, entry, &entry.versions[index], false))
}

fn deleted_bundle(vault: &str, entry: &Entry, deleted_at: i64) -> Result<Answer, Refusal> {
    let latest = entry
        .latest()
        .ok_or_else(|| Refusal::not_found(&entry.name))?;
    let mut body = bundle_json(vault, entry, latest, false);
    body["recoveryId"] = format!("{vault}/deletedsecrets/{}", entry.name).into();
    body["deletedDate"] = deleted_at.into();
    body["scheduledPurgeDate"] = (deleted_at + RECOVERABLE_DAYS * 86_400).into();
    Ok(Answer::Json(body))
}

fn delete_secret(state: &mut VaultState, vault: &str, name: &str) -> Result<Answer, Refusal> {
    let entry = live_entry(state, name)?;
    let now = unix_now_i64();
    entry.deleted_at = Some(now);
    deleted_bundle(vault, entry, now)
}

fn deleted_entry<'a>(
    state: &'a mut VaultState,
    name: &str,
) -> Result<(&'a mut Entry, i64), Refusal> {
    check_name(name)?;
    let entry = state
        .secrets
        .get_mut(&name.to_ascii_lowercase())
        .ok_or_else(|| Refusal::deleted_not_found(name))?;
    let deleted_at = entry
        .deleted_at
        .ok_or_else(|| Refusal::deleted_not_found(name))?;
    Ok((entry, deleted_at))
}

fn get_deleted(state: &mut VaultState, vault: &str, name: &str) -> Result<Answer, Refusal> {
    let (entry, deleted_at) = deleted_entry(state, name)?;
    deleted_bundle(vault, entry, deleted_at)
}

/// Answers at once; the secret comes back only after `delay`, as the service recovers
/// asynchronously.
fn recover(
    state: &mut VaultState,
    vault: &str,
    name: &str,
    delay: Duration,
) -> Result<Answer, Refusal> {
    let (entry, _) = deleted_entry(state, name)?;
    entry.deleted_at = None;
    entry.recovering_until = Some(Instant::now() + delay);
    let latest = entry.latest().ok_or_else(|| Refusal::not_found(name))?;
    Ok(bundle(vault, entry, latest, false))
}

fn purge(state: &mut VaultState, name: &str) -> Result<Answer, Refusal> {
    deleted_entry(state, name)?;
    state.secrets.remove(&name.to_ascii_lowercase());
    Ok(Answer::NoContent)
}
