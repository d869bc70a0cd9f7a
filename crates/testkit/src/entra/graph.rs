//! Microsoft Graph, just the part that manages an app registration's own credentials, served by
//! the Entra emulator's server (it shares the app registrations, the tokens it issued, and the
//! request log): read an application, `addPassword`, `removePassword`, and the refusal of a
//! `PATCH` of `passwordCredentials`.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1.0/applications(appId='{appId}')`, `GET /v1.0/applications/{objectId}` | 200, the application; `$select` honoured (only the selected properties) |
//! | `POST .../addPassword` (both addressings) | 200, the new `passwordCredential` with `secretText` |
//! | `POST .../removePassword` `{"keyId"}` | 204, no body |
//! | `PATCH /v1.0/applications/...` | 204 for `displayName`; 400 if the body names `passwordCredentials` |
//!
//! What it enforces, and where each fact comes from. "PROTOCOLS" is the shared PROTOCOLS.md,
//! section "Microsoft Graph: an app registration's own credentials"; "emulator's choice" marks
//! what no source pinned down.
//!
//! | fact | source |
//! |---|---|
//! | the routes, both addressings (`(appId='...')` and object id), the `passwordCredential` properties (`keyId`, `displayName`, `hint` = first 3 chars, `startDateTime`, `endDateTime`, `customKeyIdentifier`, `secretText` null on reads), addPassword's defaults (now, now + 2 years), `removePassword` answering 204 without a body | PROTOCOLS; Graph docs "application: addPassword", "application: removePassword", "passwordCredential resource type" (learn.microsoft.com) |
//! | `secretText` 16-64 characters; generated here as 40 characters `xxxNQ~` + 34, which includes a `~` and may include `.`, `-`, `_` (clients must URL-encode it) | "passwordCredential resource type" (16-64 characters); PROTOCOLS (~40 with a `~`) |
//! | `keyCredentials[]`: `keyId`, `displayName`, `startDateTime`, `endDateTime`, `type` `AsymmetricX509Cert`, `usage` `Verify`, `customKeyIdentifier` (base64 SHA-1 thumbprint), `key` | PROTOCOLS; Graph docs "keyCredential resource type" |
//! | `key` is the base64 DER only when `$select` names `keyCredentials` on a single application, null otherwise (also without `$select`); those reads are counted ([`crate::EntraEmulator::key_credential_selects`]) because Graph throttles them at 150 requests per minute per tenant | "keyCredential resource type" (v1.0: "Requires $select to retrieve; only available for single object requests ... otherwise, it's always null"); PROTOCOLS (throttle) |
//! | a `$select` naming an unknown property: 400 `BadRequest` "Could not find a property named '...' on type 'microsoft.graph.application'." | OData's message as Graph users quote it; emulator's choice of code |
//! | the error body `{"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}`, `date` as `2022-03-17T16:05:41` (no zone, no fraction), `request-id` header on every answer, `client-request-id` echoed | PROTOCOLS; the bodies quoted in microsoftgraph/microsoft-graph-docs#16208 and Azure/azure-cli#12946 |
//! | 401 `InvalidAuthenticationToken`: "Access token is empty." (no bearer token), "Access token validation failure. Invalid audience." (a token for another resource, or another cloud's Graph after [`crate::EntraEmulator::set_graph_resource`]), "Access token has expired or is not yet valid.", "Access token validation failure." (a token this emulator never issued) | PROTOCOLS; the invalid-audience body in microsoftgraph/microsoft-graph-docs#16208; the last text is the emulator's choice |
//! | the Graph resources: `https://graph.microsoft.com`, `https://graph.microsoft.us`, `https://dod-graph.microsoft.us`, `https://microsoftgraph.chinacloudapi.cn`, app id `00000003-0000-0000-c000-000000000000` | PROTOCOLS ("Token") |
//! | application permissions in the token's `roles`: reads need `Application.Read.All`, `Application.ReadWrite.OwnedBy`, `Application.ReadWrite.All`, `Directory.Read.All` or `Directory.ReadWrite.All`; addPassword/removePassword/PATCH need `Application.ReadWrite.All` or `Directory.ReadWrite.All`, or `Application.ReadWrite.OwnedBy` **and** the caller being an owner ([`crate::EntraEmulator::add_owner`]); else 403 `Authorization_RequestDenied` "Insufficient privileges to complete the operation." | PROTOCOLS; the permission tables of "application: addPassword" / "application: removePassword" (least privileged `Application.ReadWrite.OwnedBy`, higher `Application.ReadWrite.All`, `Directory.ReadWrite.All`) and "Get application" |
//! | the order: 401, then a read/write role at all (403), then the app in the token's tenant (404 `Request_ResourceNotFound`), then ownership (403), then the body | emulator's choice (Graph authenticates first; apps of another tenant are invisible) |
//! | unknown app: 404 `Request_ResourceNotFound` "Resource '{id}' does not exist or one of its queried reference-property objects are not present." | PROTOCOLS (code); the text is Graph's, quoted in Azure/azure-powershell#842 |
//! | an object id that is not a GUID: 400 `Request_BadRequest` "Invalid object identifier '{id}'." | emulator's choice, in Graph's style |
//! | `Content-Type` of a POST/PATCH other than `application/json`: 415 `UnsupportedMediaType` | PROTOCOLS (the header is required); status and code are the emulator's choice |
//! | app management policy: `passwordAddition` refused: 400 `CredentialTypeNotAllowedAsPerAppPolicy`; `passwordLifetime` exceeded (end - start): 400 `CredentialInvalidLifetimeAsPerAppPolicy` "Credential lifetime exceeds the max value allowed as per assigned policy {id}." | PROTOCOLS (codes); the lifetime text as KelvinTegelaar/CIPP-API#1970 quotes it; the passwordAddition text ("Password addition is not allowed as per assigned policy {id}.") is the emulator's, in the same style; the policy names from the `applicationAuthenticationMethodPolicy` docs (microsoftgraph/microsoft-graph-docs#15650) |
//! | an app for personal Microsoft accounts holds at most 2 passwords: 400 `TooManyAppPasswords` "Not allowed to add 3 passwords. You can only add a maximum of 2 passwords." with `details: [{"target":"passwordCredentials","code":"TooManyAppPasswords"}]` | PROTOCOLS (the limit); the body quoted in Azure/azure-cli#12946 (also microsoft/coe-starter-kit#3695) |
//! | `removePassword` of an unknown `keyId`: 404 `Request_ResourceNotFound` "No password credential found with keyId '{keyId}'." | not found in the docs or issues searched: emulator's choice (clients should treat it as "already removed") |
//! | `PATCH` naming `passwordCredentials`: 400 `Request_BadRequest` "New password credentials must be generated with service actions." | PROTOCOLS (the text; ansible-collections/azure#1372 quotes it as "... generated using service actions"); the code is the emulator's choice |
//! | 429 with `Retry-After` (seconds), body code `TooManyRequests`, 503 `serviceNotAvailable`, 504 `timeout`, other 5xx `generalException` (faults) | PROTOCOLS (429, Retry-After, 503/504); the codes are Graph's documented error codes (Graph docs "Microsoft Graph error responses and resource types") |
//! | a new password is refused by the token endpoint (AADSTS7000215) until the propagation delay has passed; a removed one is unknown (7000215); one past its end is expired (7000222) | PROTOCOLS ("Propagation"; "Entra ID, client credentials" for the codes) |
//! | times in answers: UTC, `Z`, seven fractional digits when not whole seconds (Graph's 100 ns ticks; stored times are truncated to them) | the sample answers of "application: addPassword" |

use std::time::{Duration, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{
    AppRegistration, DEFAULT_PASSWORD_LIFETIME, EntraState, IssuedToken, Password, Shared,
    token::normalize_resource_id,
};
use crate::fault::{Fault, FaultQueue};
use crate::server::{Reply, Request};

/// At most this many passwords on an app for personal Microsoft accounts
/// ([`crate::EntraEmulator::set_personal_account`]).
pub const TOO_MANY_PASSWORDS_LIMIT: usize = 2;

/// The resources whose tokens Graph accepts (any cloud unless
/// [`crate::EntraEmulator::set_graph_resource`] names one).
const GRAPH_RESOURCES: [&str; 5] = [
    "https://graph.microsoft.com",
    "https://graph.microsoft.us",
    "https://dod-graph.microsoft.us",
    "https://microsoftgraph.chinacloudapi.cn",
    "00000003-0000-0000-c000-000000000000",
];

const READ_ROLES: [&str; 5] = [
    "Application.Read.All",
    "Application.ReadWrite.OwnedBy",
    "Application.ReadWrite.All",
    "Directory.Read.All",
    "Directory.ReadWrite.All",
];
const WRITE_ALL_ROLES: [&str; 2] = ["Application.ReadWrite.All", "Directory.ReadWrite.All"];
const OWNED_BY_ROLE: &str = "Application.ReadWrite.OwnedBy";

/// The id the policy refusals name (a tenant's default app management policy has this id).
const POLICY_ID: &str = "00000000-0000-0000-0000-000000000000";

/// Which Graph call a fault is for ([`crate::EntraEmulator::inject_graph`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GraphCall {
    /// `GET /v1.0/applications...`
    Get,
    /// `POST .../addPassword`
    AddPassword,
    /// `POST .../removePassword`
    RemovePassword,
}

/// The tenant's app management policy as far as passwords go
/// ([`crate::EntraEmulator::set_app_policy`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPolicy {
    /// `passwordLifetime`: a new password whose end is further than this from its start is
    /// refused (400 `CredentialInvalidLifetimeAsPerAppPolicy`).
    pub max_password_lifetime: Option<Duration>,
    /// `false`: `passwordAddition` is restricted, every addPassword is refused (400
    /// `CredentialTypeNotAllowedAsPerAppPolicy`).
    pub passwords_allowed: bool,
}

impl Default for AppPolicy {
    /// No restriction.
    fn default() -> Self {
        AppPolicy {
            max_password_lifetime: None,
            passwords_allowed: true,
        }
    }
}

/// A snapshot of an app registration as Graph sees it ([`crate::EntraEmulator::application`]).
#[derive(Debug, Clone)]
pub struct GraphApplication {
    /// Graph's `id` (object id).
    pub object_id: String,
    /// `appId`: the client id.
    pub app_id: String,
    /// Tenant it is registered in.
    pub tenant: String,
    /// `displayName`.
    pub display_name: String,
    /// `passwordCredentials`, with their secrets.
    pub passwords: Vec<GraphPassword>,
    /// `keyCredentials`.
    pub certificates: Vec<GraphCertificate>,
    /// Client ids of its owners ([`crate::EntraEmulator::add_owner`]).
    pub owners: Vec<String>,
}

/// One password (client secret) of a [`GraphApplication`]. `Debug` redacts the secret.
#[derive(Debug, Clone)]
pub struct GraphPassword {
    /// `keyId`.
    pub key_id: String,
    /// `displayName`.
    pub display_name: Option<String>,
    /// `hint`: the first three characters of the secret.
    pub hint: String,
    /// `startDateTime`.
    pub start: OffsetDateTime,
    /// `endDateTime`.
    pub end: OffsetDateTime,
    /// The secret itself (`secretText` of the addPassword answer).
    pub secret: SecretString,
    /// When addPassword created it (`None`: registered with the app).
    pub added_at: Option<SystemTime>,
}

/// One certificate of a [`GraphApplication`] (`keyCredentials`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphCertificate {
    /// `keyId`.
    pub key_id: String,
    /// `displayName` (none here).
    pub display_name: Option<String>,
    /// `startDateTime`.
    pub start: OffsetDateTime,
    /// `endDateTime`.
    pub end: OffsetDateTime,
    /// `customKeyIdentifier`: the SHA-1 thumbprint, standard base64.
    pub thumbprint: String,
    /// `type`: `AsymmetricX509Cert`.
    pub kind: String,
    /// `usage`: `Verify`.
    pub usage: String,
}

/// Graph's side of the emulator state.
#[derive(Debug, Default)]
pub(super) struct GraphState {
    /// (app client id, owner client id).
    pub(super) owners: Vec<(String, String)>,
    pub(super) propagation_delay: Duration,
    pub(super) policy: AppPolicy,
    /// Client ids of apps for personal Microsoft accounts.
    pub(super) personal: Vec<String>,
    /// The one Graph resource accepted, if set.
    pub(super) resource: Option<String>,
    pub(super) key_selects: usize,
    faults: Vec<(GraphCall, FaultQueue)>,
    /// Edits of successful answers ([`crate::EntraEmulator::edit_graph_answers`]).
    edits: Vec<(GraphCall, AnswerEdit)>,
}

/// A change made to every successful answer of one call: Graph (or a proxy in front of it)
/// answering something malformed after doing the work.
#[derive(Clone)]
pub(super) struct AnswerEdit(std::sync::Arc<dyn Fn(&mut Value) + Send + Sync>);

impl std::fmt::Debug for AnswerEdit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnswerEdit")
    }
}

impl GraphState {
    pub(super) fn push_fault(&mut self, call: GraphCall, fault: Fault, times: usize) {
        if let Some((_, queue)) = self.faults.iter_mut().find(|(c, _)| *c == call) {
            queue.push(fault, times);
        } else {
            let mut queue = FaultQueue::default();
            queue.push(fault, times);
            self.faults.push((call, queue));
        }
    }

    pub(super) fn next_fault(&mut self, call: GraphCall) -> Option<Fault> {
        self.faults
            .iter_mut()
            .find(|(c, _)| *c == call)
            .and_then(|(_, queue)| queue.next())
    }

    pub(super) fn set_edit(
        &mut self,
        call: GraphCall,
        edit: std::sync::Arc<dyn Fn(&mut Value) + Send + Sync>,
    ) {
        self.edits.retain(|(c, _)| *c != call);
        self.edits.push((call, AnswerEdit(edit)));
    }

    fn edit(&self, call: GraphCall, answer: &mut Value) {
        if let Some((_, AnswerEdit(edit))) = self.edits.iter().find(|(c, _)| *c == call) {
            edit(answer);
        }
    }

    pub(super) fn pending(&self) -> usize {
        self.faults.iter().map(|(_, queue)| queue.len()).sum()
    }

    pub(super) fn clear_faults(&mut self) {
        self.faults.clear();
    }
}

/// Whether `path` is a Graph route (`/v1.0/...`).
pub(super) fn is_graph_path(path: &str) -> bool {
    path.starts_with("/v1.0/")
}

/// Whether `resource` is one of the clouds' Microsoft Graph.
pub(super) fn is_graph_resource(resource: &str) -> bool {
    let resource = normalize_resource_id(resource);
    GRAPH_RESOURCES
        .iter()
        .any(|graph| normalize_resource_id(graph) == resource)
}

/// The Graph roles of the caller `client_id` in `tenant`: an app's, else the managed identity's.
pub(super) fn roles_of(state: &EntraState, tenant: &str, client_id: &str) -> Vec<String> {
    if let Some(app) = state
        .apps
        .iter()
        .find(|app| app.tenant.eq_ignore_ascii_case(tenant) && app.client_id == client_id)
    {
        return app.graph_roles.clone();
    }
    state
        .managed_identity
        .as_ref()
        .filter(|identity| identity.client_id == client_id)
        .map(|identity| identity.graph_roles.clone())
        .unwrap_or_default()
}

/// `value` with every `secretText` replaced by `[REDACTED]`, at any depth.
pub(super) fn redacted(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| {
                    if key.eq_ignore_ascii_case("secretText") {
                        (key, Value::from("[REDACTED]"))
                    } else {
                        (key, redacted(value))
                    }
                })
                .collect(),
        ),
        Value::Array(list) => Value::Array(list.into_iter().map(redacted).collect()),
        other => other,
    }
}

pub(super) fn snapshot(state: &EntraState, app: &AppRegistration) -> GraphApplication {
    GraphApplication {
        object_id: app.object_id.clone(),
        app_id: app.client_id.clone(),
        tenant: app.tenant.clone(),
        display_name: app.display_name.clone(),
        passwords: app
            .passwords
            .iter()
            .map(|p| GraphPassword {
                key_id: p.key_id.clone(),
                display_name: p.display_name.clone(),
                hint: p.hint(),
                start: p.start,
                end: p.end,
                secret: p.secret.clone(),
                added_at: p.added_at,
            })
            .collect(),
        certificates: app
            .certificates
            .iter()
            .map(|c| GraphCertificate {
                key_id: c.key_id.clone(),
                display_name: None,
                start: c.start,
                end: c.end,
                thumbprint: c.thumbprint.clone(),
                kind: "AsymmetricX509Cert".to_owned(),
                usage: "Verify".to_owned(),
            })
            .collect(),
        owners: state
            .graph
            .owners
            .iter()
            .filter(|(owned, _)| *owned == app.client_id)
            .map(|(_, owner)| owner.clone())
            .collect(),
    }
}

/// How the app is addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    AppId(String),
    ObjectId(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Entity,
    AddPassword,
    RemovePassword,
}

/// A refusal in Graph's shape.
#[derive(Debug)]
struct GraphRefusal {
    status: u16,
    code: &'static str,
    message: String,
    details: Option<Value>,
}

impl GraphRefusal {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> GraphRefusal {
        GraphRefusal {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }
}

fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| path.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        if let Some(byte) = escaped {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn segment_not_found(segment: &str) -> GraphRefusal {
    GraphRefusal::new(
        400,
        "BadRequest",
        format!("Resource not found for the segment '{segment}'."),
    )
}

fn parse_route(path: &str) -> Result<(Target, Action), GraphRefusal> {
    let path = percent_decode(path);
    let rest = path.strip_prefix("/v1.0/").unwrap_or_default();
    let (target, rest) = if let Some(after) = rest.strip_prefix("applications(appId='") {
        let (app_id, rest) = after
            .split_once("')")
            .ok_or_else(|| segment_not_found("applications"))?;
        (Target::AppId(app_id.to_owned()), rest)
    } else if let Some(after) = rest.strip_prefix("applications/") {
        let (id, rest) = after.find('/').map_or((after, ""), |at| after.split_at(at));
        if uuid::Uuid::parse_str(id).is_err() {
            return Err(GraphRefusal::new(
                400,
                "Request_BadRequest",
                format!("Invalid object identifier '{id}'."),
            ));
        }
        (Target::ObjectId(id.to_owned()), rest)
    } else {
        let segment = rest.split(['/', '(']).next().unwrap_or_default();
        return Err(segment_not_found(segment));
    };
    let action = match rest.trim_start_matches('/') {
        "" => Action::Entity,
        action
            if action.eq_ignore_ascii_case("addPassword")
                || action.eq_ignore_ascii_case("microsoft.graph.addPassword") =>
        {
            Action::AddPassword
        }
        action
            if action.eq_ignore_ascii_case("removePassword")
                || action.eq_ignore_ascii_case("microsoft.graph.removePassword") =>
        {
            Action::RemovePassword
        }
        other => return Err(segment_not_found(other)),
    };
    Ok((target, action))
}

/// Which [`GraphCall`] a request is, for fault injection.
pub(super) fn call_of(request: &Request) -> Option<GraphCall> {
    if !is_graph_path(&request.path) {
        return None;
    }
    let (_, action) = parse_route(&request.path).ok()?;
    match (action, &request.method) {
        (Action::Entity, &http::Method::GET) => Some(GraphCall::Get),
        (Action::AddPassword, &http::Method::POST) => Some(GraphCall::AddPassword),
        (Action::RemovePassword, &http::Method::POST) => Some(GraphCall::RemovePassword),
        _ => None,
    }
}

/// `2022-03-17T16:05:41`: the `innerError.date` format.
fn inner_date(at: OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// A time as Graph writes it: UTC, `Z`, 7 fractional digits unless whole seconds.
fn graph_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let base = inner_date(at);
    let ticks = at.nanosecond() / 100;
    if ticks == 0 {
        format!("{base}Z")
    } else {
        format!("{base}.{ticks:07}Z")
    }
}

/// Graph keeps times in 100 ns ticks.
fn to_ticks(at: OffsetDateTime) -> OffsetDateTime {
    let nanos = at.nanosecond() / 100 * 100;
    at.replace_nanosecond(nanos).unwrap_or(at)
}

/// The ids an answer carries: a fresh `request-id`, and the caller's `client-request-id` (or the
/// request id when it sent none).
fn ids(request: &Request) -> (String, String) {
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_request_id = request
        .header("client-request-id")
        .map_or_else(|| request_id.clone(), str::to_owned);
    (request_id, client_request_id)
}

fn with_ids(reply: Reply, request_id: &str, client_request_id: &str) -> Reply {
    reply
        .with_header("request-id", request_id)
        .with_header("client-request-id", client_request_id)
        .with_header("cache-control", "no-cache")
}

fn error_reply(request: &Request, refusal: &GraphRefusal) -> Reply {
    let (request_id, client_request_id) = ids(request);
    let mut error = json!({
        "code": refusal.code,
        "message": refusal.message,
        "innerError": {
            "date": inner_date(OffsetDateTime::now_utc()),
            "request-id": request_id,
            "client-request-id": client_request_id,
        },
    });
    if let Some(details) = &refusal.details {
        error["details"] = details.clone();
    }
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::BAD_REQUEST);
    with_ids(
        Reply::raw(
            status,
            "application/json",
            json!({ "error": error }).to_string(),
        ),
        &request_id,
        &client_request_id,
    )
}

fn success_reply(request: &Request, body: &Value) -> Reply {
    let (request_id, client_request_id) = ids(request);
    with_ids(
        Reply::raw(
            StatusCode::OK,
            "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8",
            body.to_string(),
        ),
        &request_id,
        &client_request_id,
    )
}

fn no_content_reply(request: &Request) -> Reply {
    let (request_id, client_request_id) = ids(request);
    let mut response = http::Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    with_ids(Reply::Response(response), &request_id, &client_request_id)
}

fn unauthenticated(message: &str) -> GraphRefusal {
    GraphRefusal::new(401, "InvalidAuthenticationToken", message)
}

fn insufficient_privileges() -> GraphRefusal {
    GraphRefusal::new(
        403,
        "Authorization_RequestDenied",
        "Insufficient privileges to complete the operation.",
    )
}

/// The bearer token: one this emulator issued for Graph (the configured cloud's, if set), unexpired.
fn authenticate(state: &EntraState, request: &Request) -> Result<IssuedToken, GraphRefusal> {
    let token = request
        .header("authorization")
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .unwrap_or_default();
    if token.is_empty() {
        return Err(unauthenticated("Access token is empty."));
    }
    let issued = state
        .issued
        .iter()
        .find(|t| t.access_token.expose_secret() == token)
        .ok_or_else(|| unauthenticated("Access token validation failure."))?;
    let audience_ok = match &state.graph.resource {
        Some(resource) => {
            normalize_resource_id(resource) == normalize_resource_id(&issued.resource)
        }
        None => is_graph_resource(&issued.resource),
    };
    if !audience_ok {
        return Err(unauthenticated(
            "Access token validation failure. Invalid audience.",
        ));
    }
    if issued.expires_at <= SystemTime::now() {
        return Err(unauthenticated(
            "Access token has expired or is not yet valid.",
        ));
    }
    Ok(issued.clone())
}

/// The answer to a Graph route.
pub(super) fn graph(shared: &Shared, request: &Request) -> Reply {
    let host = request.header("host").unwrap_or("127.0.0.1").to_owned();
    let base = format!("{}://{host}/v1.0", shared.scheme);
    let mut state = shared.lock();
    match serve(&mut state, request, &base) {
        Ok(reply) => reply,
        Err(refusal) => error_reply(request, &refusal),
    }
}

fn has_role(caller: &IssuedToken, roles: &[&str]) -> bool {
    caller
        .roles
        .iter()
        .any(|role| roles.contains(&role.as_str()))
}

fn find_app(state: &EntraState, tenant: &str, target: &Target) -> Result<usize, GraphRefusal> {
    state
        .apps
        .iter()
        .position(|app| {
            app.tenant.eq_ignore_ascii_case(tenant)
                && match target {
                    Target::AppId(app_id) => &app.client_id == app_id,
                    Target::ObjectId(id) => app.object_id.eq_ignore_ascii_case(id),
                }
        })
        .ok_or_else(|| {
            let id = match target {
                Target::AppId(id) | Target::ObjectId(id) => id,
            };
            GraphRefusal::new(
                404,
                "Request_ResourceNotFound",
                format!(
                    "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
                ),
            )
        })
}

fn serve(state: &mut EntraState, request: &Request, base: &str) -> Result<Reply, GraphRefusal> {
    let (target, action) = parse_route(&request.path)?;
    let method = request.method.clone();
    let allowed = matches!(
        (action, &method),
        (Action::Entity, &http::Method::GET | &http::Method::PATCH)
            | (
                Action::AddPassword | Action::RemovePassword,
                &http::Method::POST
            )
    );
    if !allowed {
        return Err(GraphRefusal::new(
            405,
            "Request_BadRequest",
            format!(
                "The HTTP method '{method}' is not allowed here (the testkit Graph emulator serves GET/PATCH of an application and POST of addPassword/removePassword)."
            ),
        ));
    }
    let caller = authenticate(state, request)?;
    if method == http::Method::GET {
        if !has_role(&caller, &READ_ROLES) {
            return Err(insufficient_privileges());
        }
        let index = find_app(state, &caller.tenant, &target)?;
        return read(state, request, index, base);
    }
    let write_all = has_role(&caller, &WRITE_ALL_ROLES);
    let owned_by = has_role(&caller, &[OWNED_BY_ROLE]);
    if !write_all && !owned_by {
        return Err(insufficient_privileges());
    }
    let index = find_app(state, &caller.tenant, &target)?;
    let app_client_id = state.apps[index].client_id.clone();
    let is_owner = state
        .graph
        .owners
        .iter()
        .any(|(app, owner)| *app == app_client_id && *owner == caller.client_id);
    if !write_all && !is_owner {
        return Err(insufficient_privileges());
    }
    let body = json_body(request)?;
    match action {
        Action::AddPassword => add_password(state, request, index, &body, base),
        Action::RemovePassword => remove_password(state, request, index, &body),
        Action::Entity => patch(state, request, index, &body),
    }
}

/// The body of a POST/PATCH: `application/json`, a JSON object.
fn json_body(request: &Request) -> Result<Map<String, Value>, GraphRefusal> {
    let content_type = request.header("content-type").unwrap_or_default();
    let is_json = content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(GraphRefusal::new(
            415,
            "UnsupportedMediaType",
            format!("The content type '{content_type}' is not supported; send application/json."),
        ));
    }
    match serde_json::from_slice::<Value>(&request.body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(GraphRefusal::new(
            400,
            "BadRequest",
            "Empty Payload. JSON content expected.",
        )),
    }
}

const PROPERTIES: [&str; 7] = [
    "id",
    "appId",
    "displayName",
    "passwordCredentials",
    "keyCredentials",
    "signInAudience",
    "createdDateTime",
];

fn read(
    state: &mut EntraState,
    request: &Request,
    index: usize,
    base: &str,
) -> Result<Reply, GraphRefusal> {
    let query = request.query_pairs();
    let selected: Vec<&str> = match query.get("$select") {
        Some(select) => {
            let mut selected = Vec::new();
            for name in select.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let property = PROPERTIES
                    .iter()
                    .find(|p| p.eq_ignore_ascii_case(name))
                    .ok_or_else(|| {
                        GraphRefusal::new(
                            400,
                            "BadRequest",
                            format!(
                                "Could not find a property named '{name}' on type 'microsoft.graph.application'."
                            ),
                        )
                    })?;
                if !selected.contains(property) {
                    selected.push(*property);
                }
            }
            selected
        }
        None => PROPERTIES.to_vec(),
    };
    let with_key = query.contains_key("$select") && selected.contains(&"keyCredentials");
    if with_key {
        state.graph.key_selects += 1;
    }
    let app = &state.apps[index];
    let context = if query.contains_key("$select") {
        format!(
            "{base}/$metadata#applications({})/$entity",
            selected.join(",")
        )
    } else {
        format!("{base}/$metadata#applications/$entity")
    };
    let mut body = Map::new();
    body.insert("@odata.context".to_owned(), Value::from(context));
    for property in &selected {
        let value = match *property {
            "id" => Value::from(app.object_id.clone()),
            "appId" => Value::from(app.client_id.clone()),
            "displayName" => Value::from(app.display_name.clone()),
            "signInAudience" => Value::from(if state.graph.personal.contains(&app.client_id) {
                "AzureADandPersonalMicrosoftAccount"
            } else {
                "AzureADMyOrg"
            }),
            "createdDateTime" => Value::Null,
            "passwordCredentials" => app
                .passwords
                .iter()
                .map(|p| password_json(p, false))
                .collect(),
            "keyCredentials" => app
                .certificates
                .iter()
                .map(|c| {
                    json!({
                        "customKeyIdentifier": c.thumbprint,
                        "displayName": null,
                        "endDateTime": graph_time(c.end),
                        "key": if with_key {
                            Value::from(base64::engine::general_purpose::STANDARD.encode(&c.der))
                        } else {
                            Value::Null
                        },
                        "keyId": c.key_id,
                        "startDateTime": graph_time(c.start),
                        "type": "AsymmetricX509Cert",
                        "usage": "Verify",
                    })
                })
                .collect(),
            _ => Value::Null,
        };
        body.insert((*property).to_owned(), value);
    }
    let mut body = Value::Object(body);
    state.graph.edit(GraphCall::Get, &mut body);
    Ok(success_reply(request, &body))
}

fn password_json(password: &Password, with_secret: bool) -> Value {
    json!({
        "customKeyIdentifier": null,
        "displayName": password.display_name,
        "endDateTime": graph_time(password.end),
        "hint": password.hint(),
        "keyId": password.key_id,
        "secretText": if with_secret {
            Value::from(password.secret.expose_secret())
        } else {
            Value::Null
        },
        "startDateTime": graph_time(password.start),
    })
}

fn bad_request(message: impl Into<String>) -> GraphRefusal {
    GraphRefusal::new(400, "Request_BadRequest", message)
}

fn time_field(
    credential: &Map<String, Value>,
    name: &str,
) -> Result<Option<OffsetDateTime>, GraphRefusal> {
    match credential.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => OffsetDateTime::parse(text, &Rfc3339)
            .map(|at| Some(to_ticks(at.to_offset(time::UtcOffset::UTC))))
            .map_err(|_| {
                GraphRefusal::new(
                    400,
                    "BadRequest",
                    format!("Cannot convert the literal '{text}' to the expected type 'Edm.DateTimeOffset'."),
                )
            }),
        Some(other) => Err(GraphRefusal::new(
            400,
            "BadRequest",
            format!("Cannot convert the literal '{other}' to the expected type 'Edm.DateTimeOffset'."),
        )),
    }
}

/// A new secret: 40 characters, `xxxNQ~` then 34 more, like Entra's.
fn new_secret() -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const TAIL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.~";
    let mut rng = rand::rng();
    let mut secret = String::with_capacity(40);
    for _ in 0..3 {
        secret.push(char::from(ALNUM[rng.random_range(0..ALNUM.len())]));
    }
    secret.push(char::from(b'0' + rng.random_range(0..10u8)));
    secret.push_str("Q~");
    for _ in 0..34 {
        secret.push(char::from(TAIL[rng.random_range(0..TAIL.len())]));
    }
    secret
}

fn add_password(
    state: &mut EntraState,
    request: &Request,
    index: usize,
    body: &Map<String, Value>,
    base: &str,
) -> Result<Reply, GraphRefusal> {
    let empty = Map::new();
    let credential = match body.get("passwordCredential") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(credential)) => credential,
        Some(_) => return Err(bad_request("passwordCredential must be an object.")),
    };
    let display_name = match credential.get("displayName") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name.clone()),
        Some(_) => return Err(bad_request("displayName must be a string.")),
    };
    let now = to_ticks(OffsetDateTime::now_utc());
    let start = time_field(credential, "startDateTime")?.unwrap_or(now);
    let end = time_field(credential, "endDateTime")?.unwrap_or(start + DEFAULT_PASSWORD_LIFETIME);
    if end <= start {
        return Err(bad_request(
            "The password credential's endDateTime must be after its startDateTime.",
        ));
    }
    let policy = state.graph.policy.clone();
    if !policy.passwords_allowed {
        return Err(GraphRefusal::new(
            400,
            "CredentialTypeNotAllowedAsPerAppPolicy",
            format!("Password addition is not allowed as per assigned policy {POLICY_ID}."),
        ));
    }
    if let Some(max) = policy.max_password_lifetime
        && end - start > max
    {
        return Err(GraphRefusal::new(
            400,
            "CredentialInvalidLifetimeAsPerAppPolicy",
            format!(
                "Credential lifetime exceeds the max value allowed as per assigned policy {POLICY_ID}."
            ),
        ));
    }
    let app = &state.apps[index];
    let count = app.passwords.len();
    if state.graph.personal.contains(&app.client_id) && count >= TOO_MANY_PASSWORDS_LIMIT {
        let mut refusal = GraphRefusal::new(
            400,
            "TooManyAppPasswords",
            format!(
                "Not allowed to add {} passwords. You can only add a maximum of {TOO_MANY_PASSWORDS_LIMIT} passwords.",
                count + 1
            ),
        );
        refusal.details =
            Some(json!([{"target": "passwordCredentials", "code": "TooManyAppPasswords"}]));
        return Err(refusal);
    }
    let password = Password {
        secret: SecretString::from(new_secret()),
        key_id: uuid::Uuid::new_v4().to_string(),
        display_name,
        start,
        end,
        added_at: Some(SystemTime::now()),
    };
    let mut answer = password_json(&password, true);
    answer["@odata.context"] = Value::from(format!(
        "{base}/$metadata#microsoft.graph.passwordCredential"
    ));
    state.apps[index].passwords.push(password);
    state.graph.edit(GraphCall::AddPassword, &mut answer);
    Ok(success_reply(request, &answer))
}

fn remove_password(
    state: &mut EntraState,
    request: &Request,
    index: usize,
    body: &Map<String, Value>,
) -> Result<Reply, GraphRefusal> {
    let key_id = match body.get("keyId") {
        Some(Value::String(key_id)) => key_id.clone(),
        None | Some(Value::Null) => {
            return Err(bad_request("The request body must contain 'keyId'."));
        }
        Some(other) => {
            return Err(bad_request(format!(
                "Invalid keyId {other}: a GUID string is required."
            )));
        }
    };
    if uuid::Uuid::parse_str(&key_id).is_err() {
        return Err(bad_request(format!(
            "Invalid keyId '{key_id}': a GUID is required."
        )));
    }
    let passwords = &mut state.apps[index].passwords;
    let before = passwords.len();
    passwords.retain(|p| !p.key_id.eq_ignore_ascii_case(&key_id));
    if passwords.len() == before {
        return Err(GraphRefusal::new(
            404,
            "Request_ResourceNotFound",
            format!("No password credential found with keyId '{key_id}'."),
        ));
    }
    Ok(no_content_reply(request))
}

fn patch(
    state: &mut EntraState,
    request: &Request,
    index: usize,
    body: &Map<String, Value>,
) -> Result<Reply, GraphRefusal> {
    if body
        .keys()
        .any(|key| key.eq_ignore_ascii_case("passwordCredentials"))
    {
        return Err(bad_request(
            "New password credentials must be generated with service actions.",
        ));
    }
    if let Some(unsupported) = body
        .keys()
        .find(|key| !key.eq_ignore_ascii_case("displayName"))
    {
        return Err(bad_request(format!(
            "The testkit Graph emulator does not update '{unsupported}'."
        )));
    }
    if let Some(Value::String(name)) = body.get("displayName") {
        state.apps[index].display_name = name.clone();
    }
    Ok(no_content_reply(request))
}

/// What a fault looks like on a Graph route.
pub(super) fn fault_reply(shared: &Shared, request: &Request, fault: Fault) -> Reply {
    match fault {
        Fault::TooManyRequests { retry_after_secs } => {
            let reply = error_reply(
                request,
                &GraphRefusal::new(429, "TooManyRequests", "Please retry again later."),
            );
            match retry_after_secs {
                Some(secs) => reply.with_header("retry-after", &secs.to_string()),
                None => reply,
            }
        }
        Fault::ServerError { status } => {
            let (code, message) = match status {
                503 => (
                    "serviceNotAvailable",
                    "The service is temporarily unavailable for maintenance or is overloaded. You may repeat the request after a delay.",
                ),
                504 => (
                    "timeout",
                    "The server, while acting as a proxy, did not receive a timely response from the upstream server it needed to access in attempting to complete the request.",
                ),
                _ => ("generalException", "An unspecified error has occurred."),
            };
            error_reply(request, &GraphRefusal::new(status, code, message))
        }
        Fault::EntraError {
            status,
            error,
            message,
            ..
        } => {
            let (request_id, client_request_id) = ids(request);
            let body = json!({"error": {"code": error, "message": message, "innerError": {
                "date": inner_date(OffsetDateTime::now_utc()),
                "request-id": request_id,
                "client-request-id": client_request_id,
            }}});
            with_ids(
                Reply::raw(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                    "application/json",
                    body.to_string(),
                ),
                &request_id,
                &client_request_id,
            )
        }
        Fault::MalformedBody => Reply::raw(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<html><body>Service temporarily unavailable</body></html>",
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
        Fault::Delay(_) | Fault::EmptyAccessToken => graph(shared, request),
    }
}
