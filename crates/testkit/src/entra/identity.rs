//! Token sources that are not the token endpoint: the IMDS and App Service managed identity
//! endpoints (string `expires_in`/`expires_on`, as Azure sends them) and the GitHub Actions OIDC
//! request endpoint that hands out federated tokens minted by the emulator's GitHub issuer.

use http::StatusCode;
use secrecy::{ExposeSecret, SecretString};

use super::{Shared, TokenSource, token};
use crate::cert::unix_now;
use crate::server::{Reply, Request};

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

/// IMDS-style error: `{"error": "invalid_request", "error_description": ...}`.
fn imds_error(status: StatusCode, description: &str) -> Reply {
    Reply::json(
        status,
        &serde_json::json!({"error": "invalid_request", "error_description": description}),
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

/// Issues a managed identity token and answers Azure's string-typed fields.
fn mi_token_body(shared: &Shared, identity: &ManagedIdentity, resource: &str) -> serde_json::Value {
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
        &identity.client_id,
        resource,
        token.expose_secret(),
        lifetime,
    )
}

fn mi_body(
    client_id: &str,
    resource: &str,
    access_token: &str,
    lifetime: u64,
) -> serde_json::Value {
    let now = unix_now();
    serde_json::json!({
        "access_token": access_token,
        "client_id": client_id,
        "expires_in": lifetime.to_string(),
        "expires_on": (now + lifetime).to_string(),
        "ext_expires_in": lifetime.to_string(),
        "not_before": now.to_string(),
        "resource": resource,
        "token_type": "Bearer",
    })
}

/// Whether `path` is one of the managed identity endpoints.
pub(super) fn is_identity_path(path: &str) -> bool {
    path == "/metadata/identity/oauth2/token" || path == "/msi/token"
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
    Reply::json(StatusCode::OK, &mi_body(&client_id, resource, "", lifetime))
}

/// `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=...` with `Metadata: true`.
pub(super) fn imds(shared: &Shared, request: &Request) -> Reply {
    if request.method != http::Method::GET {
        return imds_error(StatusCode::METHOD_NOT_ALLOWED, "Only GET is supported");
    }
    if request.header("metadata") != Some("true") {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "Required metadata header not specified",
        );
    }
    let query = request.query_pairs();
    if !query.contains_key("api-version") {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "Required query variable 'api-version' is missing",
        );
    }
    let Some(resource) = query.get("resource") else {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "Required query variable 'resource' is missing",
        );
    };
    let identity = shared.lock().managed_identity.clone();
    match identity {
        Some(identity)
            if !selects_other(&identity, &query, ["client_id", "object_id", "msi_res_id"]) =>
        {
            Reply::json(StatusCode::OK, &mi_token_body(shared, &identity, resource))
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
    if query.get("api-version").map(String::as_str) != Some("2019-08-01") {
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
    Reply::json(StatusCode::OK, &mi_token_body(shared, &identity, resource))
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
