//! Token sources that are not the token endpoint: the managed identity endpoints of Azure VMs
//! (IMDS), App Service / Container Apps and Azure Arc-enabled servers, and the GitHub Actions
//! OIDC request endpoint that hands out federated tokens minted by the emulator's GitHub issuer.
//!
//! What the managed identity endpoints enforce, and where each fact comes from (the shared
//! PROTOCOLS.md summarises them; "SDKs" are azure-identity for Python and MSAL.NET, read in their
//! public sources):
//!
//! | endpoint | fact | source |
//! |---|---|---|
//! | IMDS `GET /metadata/identity/oauth2/token` | `Metadata: true` required, else 400 "Required metadata header not specified" | Azure docs "How to use managed identities on a VM" (get a token using HTTP); SDKs send it |
//! | IMDS | `api-version` and `resource` required (400 otherwise); the SDKs send `2018-02-01` | same docs; MSAL.NET `ImdsManagedIdentitySource` |
//! | IMDS | `client_id` / `object_id` / `msi_res_id` select a user-assigned identity; another one is 400 "Identity not found" | same docs |
//! | IMDS | answer: `access_token`, `client_id`, string `expires_in`, `expires_on`, `ext_expires_in`, `not_before`, `resource`, `token_type` | same docs (sample response) |
//! | App Service `GET /msi/token` | `X-IDENTITY-HEADER` = `IDENTITY_HEADER` required; `api-version=2019-08-01` (the older `2017-09-01` took a `secret` header and is refused here) | Azure docs "Managed identities for App Service and Azure Functions" (REST endpoint reference); the statuses (400 missing, 401 wrong) are this emulator's |
//! | App Service | `client_id` / `principal_id` / `mi_res_id` select a user-assigned identity | same docs |
//! | App Service | answer of `2019-08-01`: `access_token`, `expires_on` (Unix seconds as a string), `resource`, `token_type`, `client_id`, and **no** `expires_in` | same docs (sample response) |
//! | IMDS, App Service, Arc | `resource` is the bare resource URI: one ending in `/.default` (a v2 scope) is refused with 400 and AADSTS500011 in the description, the code Entra gives a resource it cannot find | the docs name `resource`, not `scope`; the SDKs strip `/.default` before sending; the body is this emulator's, shaped like each host's other errors |
//! | Arc `GET /arc/metadata/identity/oauth2/token` | `Metadata: true` required; `api-version` `2019-11-01` (MSAL.NET, MSAL Java/Node) or `2020-06-01` (azure-identity Python); system-assigned only (a `client_id` / `object_id` / `msi_res_id` is 400: the SDKs refuse user-assigned identities on Arc) | Azure docs "Authenticate against Azure resources with Azure Arc-enabled servers"; MSAL.NET `AzureArcManagedIdentitySource`; azure-identity `azure_arc.py` |
//! | Arc | a request without `Authorization` gets 401 with `WWW-Authenticate: Basic realm=<path>`, the path of a new `<uuid>.key` file in the agent's token directory holding a secret; repeating the request with `Authorization: Basic <that secret>` gets the token (IMDS's answer shape); a wrong secret gets a fresh 401 challenge | same docs; the SDKs' challenge handling |
//!
//! On a real Arc machine `IDENTITY_ENDPOINT` is `http://localhost:40342/metadata/identity/oauth2/token`
//! and `IMDS_ENDPOINT` `http://localhost:40342`; here both live on the emulator's one server, Arc under
//! `/arc` so that it does not collide with IMDS ([`crate::EntraEmulator::arc_identity_endpoint`]). The
//! token directory is whatever [`ArcAgent::key_dir`] says (a temp dir in tests; the agent's is
//! `/var/opt/azcmagent/tokens` on Linux).

use std::path::PathBuf;

use http::StatusCode;
use secrecy::{ExposeSecret, SecretString};

use super::{Shared, TokenSource, token};
use crate::cert::unix_now;
use crate::server::{Reply, Request};

/// The one `api-version` of the App Service identity endpoint the emulator serves.
const APP_SERVICE_API_VERSION: &str = "2019-08-01";

/// The Arc agent's `api-version`s the SDKs send (MSAL.NET/Java/Node; azure-identity Python).
const ARC_API_VERSIONS: [&str; 2] = ["2019-11-01", "2020-06-01"];

/// A managed identity served by the emulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedIdentity {
    /// Tenant the tokens are issued in.
    pub tenant: String,
    /// The identity's client id (`client_id` query parameter selects it).
    pub client_id: String,
    /// The identity's object (principal) id (`object_id` / `principal_id`).
    pub object_id: String,
    /// The identity's ARM resource id (`msi_res_id` / `mi_res_id`).
    pub resource_id: String,
    /// The value the App Service endpoint requires in `X-IDENTITY-HEADER` (`IDENTITY_HEADER`).
    pub identity_header: String,
    /// The Graph application roles its tokens for Microsoft Graph carry in `roles`.
    pub graph_roles: Vec<String>,
}

impl ManagedIdentity {
    /// An identity with `client_id`, a random object id and identity header, in `tenant`.
    pub fn new(tenant: impl Into<String>, client_id: impl Into<String>) -> ManagedIdentity {
        let client_id = client_id.into();
        ManagedIdentity {
            tenant: tenant.into(),
            resource_id: format!(
                "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/testkit/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{client_id}"
            ),
            client_id,
            object_id: uuid::Uuid::new_v4().to_string(),
            identity_header: uuid::Uuid::new_v4().to_string(),
            graph_roles: Vec::new(),
        }
    }

    /// The Graph application permissions (app roles) its Graph tokens carry, e.g.
    /// `Application.ReadWrite.All`.
    pub fn with_graph_roles(mut self, roles: &[&str]) -> ManagedIdentity {
        self.graph_roles = roles.iter().map(|role| (*role).to_owned()).collect();
        self
    }
}

/// The Azure Arc agent (HIMDS) the emulator plays: it writes a key file into `key_dir` for every
/// challenge and accepts the secret of any key file it wrote. Tokens are those of the
/// [`ManagedIdentity`] enabled on the emulator (Arc machines have a system-assigned identity only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArcAgent {
    /// The agent's token directory (`/var/opt/azcmagent/tokens` on a real Linux machine; a temp
    /// dir in tests). It must exist.
    pub key_dir: PathBuf,
}

impl ArcAgent {
    /// An agent writing its key files into `key_dir`.
    pub fn new(key_dir: impl Into<PathBuf>) -> ArcAgent {
        ArcAgent {
            key_dir: key_dir.into(),
        }
    }
}

/// The Arc agent's state: its directory and the secrets of the key files it wrote.
#[derive(Debug)]
pub(super) struct ArcState {
    agent: ArcAgent,
    keys: Vec<SecretString>,
}

impl ArcState {
    pub(super) fn new(agent: ArcAgent) -> ArcState {
        ArcState {
            agent,
            keys: Vec::new(),
        }
    }
}

/// The GitHub Actions OIDC endpoint's configuration.
#[derive(Debug, Clone)]
pub struct GithubOidc {
    /// `sub` of the minted tokens, e.g. `repo:ORG/REPO:ref:refs/heads/main`.
    pub subject: String,
    /// The bearer value the job must send (`ACTIONS_ID_TOKEN_REQUEST_TOKEN`).
    pub request_token: SecretString,
}

impl GithubOidc {
    /// Mint tokens for `subject` to callers presenting `request_token`.
    pub fn new(subject: impl Into<String>, request_token: impl Into<String>) -> GithubOidc {
        GithubOidc {
            subject: subject.into(),
            request_token: SecretString::from(request_token.into()),
        }
    }
}

/// Which managed identity host answers: each has its own answer shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Host {
    /// IMDS, and the Arc agent, which answers like it.
    Imds,
    /// App Service / Container Apps, `api-version=2019-08-01`.
    AppService,
}

/// IMDS-style error: `{"error": "invalid_request", "error_description": ...}`.
fn imds_error(status: StatusCode, description: &str) -> Reply {
    imds_error_code(status, "invalid_request", description)
}

fn imds_error_code(status: StatusCode, error: &str, description: &str) -> Reply {
    Reply::json(
        status,
        &serde_json::json!({"error": error, "error_description": description}),
    )
}

/// The description of a refused `resource` that is a v2 scope (`.../.default`).
fn scope_as_resource(resource: &str) -> String {
    format!(
        "AADSTS500011: The resource principal named {resource} was not found in the tenant. \
         Managed identity endpoints take the resource URI itself (without /.default)."
    )
}

/// Whether the query names another identity than the configured one.
fn selects_other(
    identity: &ManagedIdentity,
    query: &std::collections::BTreeMap<String, String>,
    keys: [&str; 3],
) -> bool {
    let [client_key, object_key, resource_key] = keys;
    [
        (client_key, &identity.client_id),
        (object_key, &identity.object_id),
        (resource_key, &identity.resource_id),
    ]
    .iter()
    .any(|(key, expected)| query.get(*key).is_some_and(|value| value != *expected))
}

/// Issues a managed identity token and answers in `host`'s shape.
fn mi_token_body(
    shared: &Shared,
    identity: &ManagedIdentity,
    resource: &str,
    host: Host,
) -> serde_json::Value {
    let mut state = shared.lock();
    let lifetime = state.token_options.lifetime.as_secs();
    let token = token::issue(
        &mut state,
        &identity.tenant,
        &identity.client_id,
        resource.trim_end_matches('/'),
        TokenSource::ManagedIdentity,
    );
    mi_body(
        host,
        &identity.client_id,
        resource,
        token.expose_secret(),
        lifetime,
    )
}

/// A successful answer: IMDS sends string `expires_in`, `expires_on`, `ext_expires_in` and
/// `not_before`; App Service `2019-08-01` only `expires_on` (Unix seconds as a string).
fn mi_body(
    host: Host,
    client_id: &str,
    resource: &str,
    access_token: &str,
    lifetime: u64,
) -> serde_json::Value {
    let now = unix_now();
    match host {
        Host::Imds => serde_json::json!({
            "access_token": access_token,
            "client_id": client_id,
            "expires_in": lifetime.to_string(),
            "expires_on": (now + lifetime).to_string(),
            "ext_expires_in": lifetime.to_string(),
            "not_before": now.to_string(),
            "resource": resource,
            "token_type": "Bearer",
        }),
        Host::AppService => serde_json::json!({
            "access_token": access_token,
            "expires_on": (now + lifetime).to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": client_id,
        }),
    }
}

/// The IMDS token path.
pub(super) const IMDS_PATH: &str = "/metadata/identity/oauth2/token";
/// The App Service identity endpoint's path.
pub(super) const APP_SERVICE_PATH: &str = "/msi/token";
/// The Arc agent's token path on this emulator (`/metadata/...` under `/arc`).
pub(super) const ARC_PATH: &str = "/arc/metadata/identity/oauth2/token";

/// Whether `path` is one of the managed identity endpoints.
pub(super) fn is_identity_path(path: &str) -> bool {
    path == IMDS_PATH || path == APP_SERVICE_PATH || path == ARC_PATH
}

/// The `EmptyAccessToken` fault on a managed identity endpoint: its usual shape, an empty token.
pub(super) fn empty_token_reply(shared: &Shared, request: &Request) -> Reply {
    let (client_id, lifetime) = {
        let state = shared.lock();
        let client_id = state
            .managed_identity
            .as_ref()
            .map(|identity| identity.client_id.clone())
            .unwrap_or_default();
        (client_id, state.token_options.lifetime.as_secs())
    };
    let query = request.query_pairs();
    let resource = query.get("resource").map_or("", String::as_str);
    let host = if request.path == APP_SERVICE_PATH {
        Host::AppService
    } else {
        Host::Imds
    };
    Reply::json(
        StatusCode::OK,
        &mi_body(host, &client_id, resource, "", lifetime),
    )
}

/// The checks IMDS and the Arc agent share: GET, `Metadata: true`, `api-version`, `resource`
/// (not a v2 scope). Returns the query on success.
fn imds_request_checks(
    request: &Request,
) -> Result<std::collections::BTreeMap<String, String>, Box<Reply>> {
    if request.method != http::Method::GET {
        return Err(Box::new(imds_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Only GET is supported",
        )));
    }
    if request.header("metadata") != Some("true") {
        return Err(Box::new(imds_error(
            StatusCode::BAD_REQUEST,
            "Required metadata header not specified",
        )));
    }
    let query = request.query_pairs();
    if !query.contains_key("api-version") {
        return Err(Box::new(imds_error(
            StatusCode::BAD_REQUEST,
            "Required query variable 'api-version' is missing",
        )));
    }
    let Some(resource) = query.get("resource") else {
        return Err(Box::new(imds_error(
            StatusCode::BAD_REQUEST,
            "Required query variable 'resource' is missing",
        )));
    };
    if resource.trim_end_matches('/').ends_with("/.default") {
        return Err(Box::new(imds_error_code(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            &scope_as_resource(resource),
        )));
    }
    Ok(query)
}

/// `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=...` with `Metadata: true`.
pub(super) fn imds(shared: &Shared, request: &Request) -> Reply {
    let query = match imds_request_checks(request) {
        Ok(query) => query,
        Err(reply) => return *reply,
    };
    let resource = &query["resource"];
    let identity = shared.lock().managed_identity.clone();
    match identity {
        Some(identity)
            if !selects_other(&identity, &query, ["client_id", "object_id", "msi_res_id"]) =>
        {
            Reply::json(
                StatusCode::OK,
                &mi_token_body(shared, &identity, resource, Host::Imds),
            )
        }
        _ => imds_error(StatusCode::BAD_REQUEST, "Identity not found"),
    }
}

/// App Service style error body.
fn app_service_error(status: StatusCode, message: &str) -> Reply {
    Reply::json(
        status,
        &serde_json::json!({
            "statusCode": status.as_u16(),
            "message": message,
            "correlationId": uuid::Uuid::new_v4().to_string(),
        }),
    )
}

/// `GET /msi/token?api-version=2019-08-01&resource=...` with `X-IDENTITY-HEADER`.
pub(super) fn app_service(shared: &Shared, request: &Request) -> Reply {
    let Some(identity) = shared.lock().managed_identity.clone() else {
        return app_service_error(StatusCode::NOT_FOUND, "No managed identity is configured.");
    };
    match request.header("x-identity-header") {
        None => {
            return app_service_error(
                StatusCode::BAD_REQUEST,
                "The X-IDENTITY-HEADER header is required.",
            );
        }
        Some(value) if value != identity.identity_header => {
            return app_service_error(
                StatusCode::UNAUTHORIZED,
                "The X-IDENTITY-HEADER header does not match IDENTITY_HEADER.",
            );
        }
        Some(_) => {}
    }
    let query = request.query_pairs();
    if query.get("api-version").map(String::as_str) != Some(APP_SERVICE_API_VERSION) {
        return app_service_error(
            StatusCode::BAD_REQUEST,
            "The api-version query parameter must be 2019-08-01.",
        );
    }
    let Some(resource) = query.get("resource") else {
        return app_service_error(
            StatusCode::BAD_REQUEST,
            "The resource query parameter is required.",
        );
    };
    if resource.trim_end_matches('/').ends_with("/.default") {
        return app_service_error(StatusCode::BAD_REQUEST, &scope_as_resource(resource));
    }
    if selects_other(
        &identity,
        &query,
        ["client_id", "principal_id", "mi_res_id"],
    ) {
        return app_service_error(
            StatusCode::BAD_REQUEST,
            "No managed identity found for specified ClientId/ResourceId/PrincipalId.",
        );
    }
    Reply::json(
        StatusCode::OK,
        &mi_token_body(shared, &identity, resource, Host::AppService),
    )
}

/// The Arc agent's challenge: a new key file in its directory, named in the realm.
fn arc_challenge(state: &mut ArcState) -> Reply {
    let secret = uuid::Uuid::new_v4().simple().to_string();
    let path = state
        .agent
        .key_dir
        .join(format!("{}.key", uuid::Uuid::new_v4()));
    if let Err(e) = std::fs::write(&path, &secret) {
        return imds_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!(
                "the emulated Arc agent cannot write its key file {}: {e}",
                path.display()
            ),
        );
    }
    state.keys.push(SecretString::from(secret));
    imds_error_code(
        StatusCode::UNAUTHORIZED,
        "unauthorized_client",
        "Basic authorization with the key file named in WWW-Authenticate is required",
    )
    .with_header(
        "www-authenticate",
        &format!("Basic realm={}", path.display()),
    )
}

/// `GET /arc/metadata/identity/oauth2/token?api-version=2019-11-01&resource=...` with
/// `Metadata: true`: the challenge, then the token for `Authorization: Basic <key file content>`.
pub(super) fn arc(shared: &Shared, request: &Request) -> Reply {
    let query = match imds_request_checks(request) {
        Ok(query) => query,
        Err(reply) => return *reply,
    };
    if !ARC_API_VERSIONS.contains(&query["api-version"].as_str()) {
        return imds_error(
            StatusCode::BAD_REQUEST,
            &format!(
                "Invalid api-version {:?}: this agent serves {}",
                query["api-version"],
                ARC_API_VERSIONS.join(", ")
            ),
        );
    }
    if ["client_id", "object_id", "msi_res_id"]
        .iter()
        .any(|key| query.contains_key(*key))
    {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "Azure Arc-enabled servers have a system-assigned identity only",
        );
    }
    let mut state = shared.lock();
    let identity = state.managed_identity.clone();
    let Some(arc) = state.arc.as_mut() else {
        return imds_error(StatusCode::NOT_FOUND, "The Arc agent is not enabled");
    };
    let presented = request
        .header("authorization")
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, secret)| secret.trim());
    let accepted =
        presented.is_some_and(|secret| arc.keys.iter().any(|key| key.expose_secret() == secret));
    if !accepted {
        return arc_challenge(arc);
    }
    drop(state);
    match identity {
        Some(identity) => Reply::json(
            StatusCode::OK,
            &mi_token_body(shared, &identity, &query["resource"], Host::Imds),
        ),
        None => imds_error(StatusCode::BAD_REQUEST, "Identity not found"),
    }
}

/// `GET /token?api-version=2.0&audience=...` with `Authorization: bearer <request token>`.
pub(super) fn github(shared: &Shared, request: &Request) -> Reply {
    let Some(github) = shared.lock().github.clone() else {
        return Reply::json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"message": "The GitHub OIDC endpoint is not enabled: call enable_github_oidc."}),
        );
    };
    let presented = request
        .header("authorization")
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    if presented != Some(github.request_token.expose_secret()) {
        return Reply::json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({"message": "Bad credentials: send Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN."}),
        );
    }
    let query = request.query_pairs();
    let audience = query
        .get("audience")
        .map_or("https://github.com", String::as_str);
    let value = shared.github_issuer().mint(&github.subject, audience);
    Reply::json(StatusCode::OK, &serde_json::json!({"value": value}))
}
