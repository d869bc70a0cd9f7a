//! The token endpoint: request validation in Entra's order, the three client credentials (secret,
//! certificate assertion, federated assertion), token minting, and how faults look on this server.
//!
//! Refusals (status, `error`, AADSTS code):
//!
//! | situation | answer |
//! |---|---|
//! | tenant `common` or `consumers` | 400 `invalid_request` 9001023 |
//! | unknown tenant | 400 `invalid_request` 90002 |
//! | GET instead of POST | 400 `invalid_request` 900561 |
//! | missing `grant_type`, `client_id` or `scope` | 400 `invalid_request` 900144 |
//! | `grant_type` other than `client_credentials` | 400 `unsupported_grant_type` 70003 |
//! | unknown client in the tenant | 400 `unauthorized_client` 700016 |
//! | several scopes, or an empty resource | 400 `invalid_scope` 70011 |
//! | scope without `/.default` | 400 `invalid_scope` 1002012 |
//! | no credential / both secret and assertion | 401 `invalid_client` 7000218 |
//! | wrong secret | 401 `invalid_client` 7000215 |
//! | expired secret | 401 `invalid_client` 7000222 |
//! | assertion that is not a JWT, or has no thumbprint | 400 `invalid_client` 7000215 "Invalid client certificate." |
//! | certificate not registered, bad signature, unsupported `alg` | 401 `invalid_client` 700027 |
//! | `iss`/`sub` not the client id | 401 `invalid_client` 700021 |
//! | `aud` not the token URL, `jti` missing or replayed | 401 `invalid_client` 50027 |
//! | assertion expired or not yet valid (5 min skew on `nbf`) | 400 `invalid_client` 700024 |
//! | federated: no credential for issuer / audience / subject | 400 `invalid_client` 700211 / 700212 / 700213 |
//! | federated: issuer not trusted by the emulator | 400 `invalid_client` 50166 |
//! | a resource neither in [`KNOWN_RESOURCES`] nor registered | 400 `invalid_resource` 500011 |
//!
//! The resource check comes after the client is authenticated, so a wrong secret is still
//! reported as a wrong secret whatever the scope.
//!
//! Where the facts come from: the request and error shapes, the AADSTS codes and their
//! classification are PROTOCOLS.md ("Entra ID, client credentials", "Resource
//! checks"); the 500011 text (`The resource principal named {resource} was not found in the
//! tenant named {tenant}. ...`, error `invalid_resource`) is Entra's as users quote it in bug
//! reports and tooling tests; the resource identifiers of Graph and Key Vault per cloud are
//! PROTOCOLS.md ("National clouds", "Microsoft Graph"); Azure Resource Manager's per cloud
//! (`management.azure.com`, `management.usgovcloudapi.net`, `management.chinacloudapi.cn`, and the
//! classic `management.core.windows.net`) are the clouds' `resourceManager` and
//! `activeDirectoryResourceId` endpoints as `az cloud show` lists them; the application ids are
//! Microsoft's first-party ids (Graph `00000003-0000-0000-c000-000000000000` in PROTOCOLS.md,
//! Key Vault `cfa8b339-82a2-471a-a3c9-0fc0be7a4093` (`7e7c393b-45d0-48b1-a35e-2905ddf8183c` in
//! US Government tenants, as the Key Vault storage-account-keys docs list them), ARM `797f4846-ba00-4fd7-ba43-dac1f8f63013`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use jsonwebtoken::{Algorithm, DecodingKey};
use secrecy::{ExposeSecret, SecretString};

use super::errors::{EntraRefusal, error_reply, refusal_reply, success_reply};
use super::{AppRegistration, EntraState, IssuedToken, Shared, TokenOptions, TokenSource};
use crate::cert::unix_now;
use crate::fault::Fault;
use crate::oidc::{GITHUB_ACTIONS_ISSUER, OidcIssuer};
use crate::server::{Reply, Request};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How far in the future an assertion's `nbf` may be (clock skew).
const NBF_SKEW_SECS: u64 = 300;

/// The Microsoft resources every tenant has a service principal for, so client credentials can
/// ask for `{resource}/.default` without [`super::EntraEmulator::register_resource`]: Microsoft
/// Graph, Azure Key Vault and Azure Resource Manager in the public, US Government and China
/// clouds, by application ID URI and by application id. Matching ignores ASCII case and trailing
/// slashes (`https://management.azure.com//.default` is ARM's documented form).
pub const KNOWN_RESOURCES: &[&str] = &[
    // Microsoft Graph: public, US Government (L4 and DoD), China.
    "https://graph.microsoft.com",
    "https://graph.microsoft.us",
    "https://dod-graph.microsoft.us",
    "https://microsoftgraph.chinacloudapi.cn",
    "00000003-0000-0000-c000-000000000000",
    // Azure Key Vault: public, US Government, China.
    "https://vault.azure.net",
    "https://vault.usgovcloudapi.net",
    "https://vault.azure.cn",
    "cfa8b339-82a2-471a-a3c9-0fc0be7a4093",
    "7e7c393b-45d0-48b1-a35e-2905ddf8183c",
    // Azure Resource Manager: public, US Government, China, and the classic identifier.
    "https://management.azure.com",
    "https://management.usgovcloudapi.net",
    "https://management.chinacloudapi.cn",
    "https://management.core.windows.net",
    "797f4846-ba00-4fd7-ba43-dac1f8f63013",
];

/// How resource identifiers are compared: ASCII case and trailing slashes do not count.
pub(super) fn normalize_resource_id(resource: &str) -> String {
    resource.trim_end_matches('/').to_ascii_lowercase()
}

/// 400 `invalid_resource` AADSTS500011 unless `resource` is known or registered.
fn check_resource(state: &EntraState, tenant: &str, resource: &str) -> Result<(), EntraRefusal> {
    let wanted = normalize_resource_id(resource);
    let known = KNOWN_RESOURCES
        .iter()
        .any(|known| normalize_resource_id(known) == wanted)
        || state.resources.contains(&wanted);
    if known {
        return Ok(());
    }
    Err(EntraRefusal::new(
        400,
        "invalid_resource",
        500011,
        format!(
            "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
        ),
    ))
}

/// The tenant of a `/{tenant}/oauth2/v2.0/token` path.
pub(super) fn tenant_of(path: &str) -> Option<&str> {
    let tenant = path.strip_prefix('/')?.strip_suffix("/oauth2/v2.0/token")?;
    (!tenant.is_empty() && !tenant.contains('/')).then_some(tenant)
}

/// What a successful request earned.
struct Grant {
    client_id: String,
    resource: String,
    source: TokenSource,
}

pub(super) fn token_endpoint(shared: &Shared, request: &Request, tenant: &str) -> Reply {
    let host = request.header("host").unwrap_or("127.0.0.1").to_owned();
    let endpoint = format!("{}://{host}{}", shared.scheme, request.path);
    let github_key = shared.github_issuer.get().map(OidcIssuer::decoding_key);
    let mut state = shared.lock();
    match check_request(&mut state, request, tenant, &endpoint, github_key) {
        Ok(grant) => {
            let token = issue(
                &mut state,
                tenant,
                &grant.client_id,
                &grant.resource,
                grant.source,
            );
            let body = success_body(&state.token_options, token.expose_secret());
            success_reply(request, &body)
        }
        Err(refusal) => refusal_reply(request, &refusal),
    }
}

fn form_of(request: &Request) -> BTreeMap<String, String> {
    let is_form = request
        .header("content-type")
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return BTreeMap::new();
    }
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(&request.body)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

fn missing(parameter: &str) -> EntraRefusal {
    EntraRefusal::new(
        400,
        "invalid_request",
        900144,
        format!("The request body must contain the following parameter: '{parameter}'."),
    )
}

fn check_request(
    state: &mut EntraState,
    request: &Request,
    tenant: &str,
    endpoint: &str,
    github_key: Option<&DecodingKey>,
) -> Result<Grant, EntraRefusal> {
    let tenant_lower = tenant.to_ascii_lowercase();
    if tenant_lower == "common" || tenant_lower == "consumers" {
        return Err(EntraRefusal::new(
            400,
            "invalid_request",
            9001023,
            "The grant type isn't supported over the /common or /consumers endpoints. Please use the /organizations or tenant-specific endpoint.",
        ));
    }
    if !state.tenants.contains(&tenant_lower) {
        return Err(EntraRefusal::new(
            400,
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        ));
    }
    if request.method != http::Method::POST {
        return Err(EntraRefusal::new(
            400,
            "invalid_request",
            900561,
            format!(
                "The endpoint only accepts POST requests. Received a {} request.",
                request.method
            ),
        ));
    }
    let form = form_of(request);
    let grant_type = form
        .get("grant_type")
        .ok_or_else(|| missing("grant_type"))?;
    if grant_type != "client_credentials" {
        return Err(EntraRefusal::new(
            400,
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        ));
    }
    let client_id = form.get("client_id").ok_or_else(|| missing("client_id"))?;
    let app = state
        .apps
        .iter()
        .find(|app| app.tenant.eq_ignore_ascii_case(tenant) && &app.client_id == client_id)
        .cloned()
        .ok_or_else(|| {
            EntraRefusal::new(
                400,
                "unauthorized_client",
                700016,
                format!(
                    "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
                ),
            )
        })?;
    let scope = form.get("scope").ok_or_else(|| missing("scope"))?;
    let resource = resource_of(scope)?;
    let source = match (form.get("client_secret"), form.get("client_assertion")) {
        (Some(secret), None) => {
            check_secret(state, &app, secret)?;
            TokenSource::ClientSecret
        }
        (None, Some(assertion)) => {
            if form.get("client_assertion_type").map(String::as_str) != Some(ASSERTION_TYPE) {
                return Err(EntraRefusal::new(
                    400,
                    "invalid_request",
                    900144,
                    format!(
                        "The request body must contain the following parameter: 'client_assertion_type' with the value '{ASSERTION_TYPE}'."
                    ),
                ));
            }
            check_assertion(state, &app, assertion, endpoint, github_key)?
        }
        _ => {
            return Err(EntraRefusal::new(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
            ));
        }
    };
    check_resource(state, tenant, &resource)?;
    Ok(Grant {
        client_id: client_id.clone(),
        resource,
        source,
    })
}

/// `https://vault.azure.net/.default` -> `https://vault.azure.net`, refusing what Entra refuses.
fn resource_of(scope: &str) -> Result<String, EntraRefusal> {
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    let invalid = || {
        EntraRefusal::new(
            400,
            "invalid_scope",
            70011,
            format!(
                "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
            ),
        )
    };
    let [single] = scopes.as_slice() else {
        return Err(invalid());
    };
    let Some(resource) = single.strip_suffix("/.default") else {
        return Err(EntraRefusal::new(
            400,
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {single} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        ));
    };
    if resource.is_empty() {
        return Err(invalid());
    }
    Ok(resource.to_owned())
}

/// A secret is one of the app's passwords, past the propagation delay if Graph added it, and
/// before its end.
fn check_secret(
    state: &EntraState,
    app: &AppRegistration,
    secret: &str,
) -> Result<(), EntraRefusal> {
    let invalid = || {
        EntraRefusal::new(
            401,
            "invalid_client",
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                app.client_id
            ),
        )
    };
    let password = app
        .passwords
        .iter()
        .find(|p| p.secret.expose_secret() == secret)
        .ok_or_else(invalid)?;
    let delay = state.graph.propagation_delay;
    if let Some(added_at) = password.added_at
        && SystemTime::now() < added_at + delay
    {
        return Err(invalid());
    }
    if password.end <= time::OffsetDateTime::now_utc() {
        return Err(EntraRefusal::new(
            401,
            "invalid_client",
            7000222,
            format!(
                "The provided client secret keys for app '{}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds.",
                app.client_id
            ),
        ));
    }
    Ok(())
}

/// A JWT taken apart without checking anything yet.
struct ParsedJwt<'a> {
    header: jsonwebtoken::Header,
    claims: serde_json::Value,
    signing_input: &'a str,
    signature: &'a str,
}

fn parse_jwt(token: &str) -> Option<ParsedJwt<'_>> {
    let (signing_input, signature) = token.rsplit_once('.')?;
    let (_, claims_b64) = signing_input.split_once('.')?;
    let header = jsonwebtoken::decode_header(token).ok()?;
    let claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims_b64).ok()?).ok()?;
    Some(ParsedJwt {
        header,
        claims,
        signing_input,
        signature,
    })
}

impl ParsedJwt<'_> {
    fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(serde_json::Value::as_str)
    }

    fn claim_u64(&self, name: &str) -> Option<u64> {
        let value = self.claims.get(name)?;
        // Truncation of a fractional timestamp is what every JWT library does.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        value
            .as_u64()
            .or_else(|| value.as_f64().map(|f| f.max(0.0) as u64))
    }

    /// `aud` as a list (a string or an array of strings).
    fn audiences(&self) -> Vec<&str> {
        match self.claims.get("aud") {
            Some(serde_json::Value::String(aud)) => vec![aud.as_str()],
            Some(serde_json::Value::Array(list)) => {
                list.iter().filter_map(serde_json::Value::as_str).collect()
            }
            _ => Vec::new(),
        }
    }

    fn verify(&self, key: &DecodingKey) -> bool {
        matches!(self.header.alg, Algorithm::PS256 | Algorithm::RS256)
            && jsonwebtoken::crypto::verify(
                self.signature,
                self.signing_input.as_bytes(),
                key,
                self.header.alg,
            )
            .unwrap_or(false)
    }

    /// 700024 unless `exp` is in the future and `nbf` not beyond the skew.
    fn check_time_window(&self) -> Result<(), EntraRefusal> {
        let now = unix_now();
        let exp = self.claim_u64("exp").unwrap_or(0);
        let nbf = self.claim_u64("nbf").unwrap_or(0);
        if exp > now && nbf <= now + NBF_SKEW_SECS {
            return Ok(());
        }
        let at = |secs: u64| {
            time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(i64::MAX))
                .map(super::errors::entra_timestamp)
                .unwrap_or_else(|_| secs.to_string())
        };
        Err(EntraRefusal::new(
            400,
            "invalid_client",
            700024,
            format!(
                "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
                at(now),
                at(nbf),
                at(exp)
            ),
        ))
    }
}

fn invalid_certificate() -> EntraRefusal {
    EntraRefusal::new(
        400,
        "invalid_client",
        7000215,
        "Invalid client certificate.",
    )
}

fn bad_signature(reason: &str) -> EntraRefusal {
    EntraRefusal::new(
        401,
        "invalid_client",
        700027,
        format!("Client assertion failed signature validation. [Reason - {reason}]"),
    )
}

fn malformed(reason: &str) -> EntraRefusal {
    EntraRefusal::new(
        401,
        "invalid_client",
        50027,
        format!("JWT token is invalid or malformed. [Reason - {reason}]"),
    )
}

/// A certificate assertion names a thumbprint or says it comes from the client itself; anything
/// else is an external (federated) token.
fn check_assertion(
    state: &mut EntraState,
    app: &AppRegistration,
    assertion: &str,
    endpoint: &str,
    github_key: Option<&DecodingKey>,
) -> Result<TokenSource, EntraRefusal> {
    let jwt = parse_jwt(assertion).ok_or_else(invalid_certificate)?;
    let has_thumbprint = jwt.header.x5t.is_some() || jwt.header.x5t_s256.is_some();
    if has_thumbprint || jwt.claim_str("iss") == Some(app.client_id.as_str()) {
        check_certificate_assertion(state, app, &jwt, endpoint)?;
        Ok(TokenSource::Certificate)
    } else {
        check_federated_assertion(state, app, &jwt, github_key)?;
        Ok(TokenSource::Federated)
    }
}

fn check_certificate_assertion(
    state: &mut EntraState,
    app: &AppRegistration,
    jwt: &ParsedJwt<'_>,
    endpoint: &str,
) -> Result<(), EntraRefusal> {
    let certificate = match (&jwt.header.x5t_s256, &jwt.header.x5t) {
        (Some(sha256), _) => app.certificates.iter().find(|c| &c.sha256 == sha256),
        (None, Some(sha1)) => app.certificates.iter().find(|c| &c.sha1 == sha1),
        (None, None) => return Err(invalid_certificate()),
    };
    let Some(certificate) = certificate else {
        let thumbprint = jwt.header.x5t_s256.as_ref().or(jwt.header.x5t.as_ref());
        return Err(bad_signature(&format!(
            "The key was not found., Thumbprint of key used by client: '{}', Please visit the Azure Portal to see configured keys for app Id '{}'.",
            thumbprint.map(String::as_str).unwrap_or_default(),
            app.client_id
        )));
    };
    if !matches!(jwt.header.alg, Algorithm::PS256 | Algorithm::RS256) {
        return Err(bad_signature(&format!(
            "The algorithm '{:?}' is not supported; sign with PS256 or RS256.",
            jwt.header.alg
        )));
    }
    if !jwt.verify(&certificate.key) {
        return Err(bad_signature(
            "The provided signature value did not match the expected signature value.",
        ));
    }
    let client_id = app.client_id.as_str();
    if jwt.claim_str("iss") != Some(client_id) || jwt.claim_str("sub") != Some(client_id) {
        return Err(EntraRefusal::new(
            401,
            "invalid_client",
            700021,
            "Client assertion application identifier doesn't match 'client_id' parameter. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .",
        ));
    }
    let audiences = jwt.audiences();
    if audiences.as_slice() != [endpoint] {
        return Err(malformed(&format!(
            "The 'aud' claim {audiences:?} is not the token endpoint '{endpoint}'."
        )));
    }
    jwt.check_time_window()?;
    let jti = jwt
        .claim_str("jti")
        .ok_or_else(|| malformed("The 'jti' claim is missing."))?;
    if !state.used_jtis.insert(jti.to_owned()) {
        return Err(malformed(
            "The 'jti' claim was already used by an earlier assertion (replay).",
        ));
    }
    Ok(())
}

fn no_federated_match(code: u32, what: &str, value: &str) -> EntraRefusal {
    EntraRefusal::new(
        400,
        "invalid_client",
        code,
        format!(
            "No matching federated identity record found for presented assertion {what} '{value}'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion. https://learn.microsoft.com/entra/workload-id/workload-identity-federation"
        ),
    )
}

fn check_federated_assertion(
    state: &EntraState,
    app: &AppRegistration,
    jwt: &ParsedJwt<'_>,
    github_key: Option<&DecodingKey>,
) -> Result<(), EntraRefusal> {
    let issuer = jwt.claim_str("iss").unwrap_or_default();
    let for_issuer: Vec<_> = app
        .federated
        .iter()
        .filter(|f| f.issuer == issuer)
        .collect();
    if for_issuer.is_empty() {
        return Err(no_federated_match(700211, "issuer", issuer));
    }
    let key = state
        .trusted_issuers
        .iter()
        .rev()
        .find(|(name, _)| name == issuer)
        .map(|(_, key)| key)
        .or(github_key.filter(|_| issuer == GITHUB_ACTIONS_ISSUER))
        .ok_or_else(|| {
            EntraRefusal::new(
                400,
                "invalid_client",
                50166,
                format!(
                    "Request to External OIDC endpoint failed. The issuer '{issuer}' is not trusted by the testkit emulator: call trust_issuer first."
                ),
            )
        })?;
    if !jwt.verify(key) {
        return Err(bad_signature(
            "The provided signature value did not match the expected signature value.",
        ));
    }
    jwt.check_time_window()?;
    let audiences = jwt.audiences();
    let for_audience: Vec<_> = for_issuer
        .into_iter()
        .filter(|f| audiences.contains(&f.audience.as_str()))
        .collect();
    if for_audience.is_empty() {
        return Err(no_federated_match(700212, "audience", &audiences.join(" ")));
    }
    let subject = jwt.claim_str("sub").unwrap_or_default();
    if !for_audience.iter().any(|f| f.subject == subject) {
        return Err(no_federated_match(700213, "subject", subject));
    }
    Ok(())
}

/// Mints a JWT-shaped opaque token with a random part, and remembers it.
pub(super) fn issue(
    state: &mut EntraState,
    tenant: &str,
    client_id: &str,
    resource: &str,
    source: TokenSource,
) -> SecretString {
    let lifetime = state.token_options.lifetime;
    let now = unix_now();
    let roles = if super::graph::is_graph_resource(resource) {
        super::graph::roles_of(state, tenant, client_id)
    } else {
        Vec::new()
    };
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": "testkit"});
    let mut claims = serde_json::json!({
        "aud": resource,
        "iss": format!("https://sts.windows.net/{tenant}/"),
        "iat": now,
        "nbf": now,
        "exp": now + lifetime.as_secs(),
        "appid": client_id,
        "tid": tenant,
        "uti": URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>()),
        "ver": "1.0",
        "idtyp": "app",
    });
    if !roles.is_empty() {
        claims["roles"] = serde_json::json!(roles);
    }
    let token = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    );
    let token = SecretString::from(token);
    state.issued.push(IssuedToken {
        access_token: token.clone(),
        tenant: tenant.to_owned(),
        client_id: client_id.to_owned(),
        resource: resource.to_owned(),
        expires_at: SystemTime::now() + lifetime,
        source,
        roles,
    });
    token
}

/// A seconds value as a JSON number, or as a string when the options say so.
fn seconds(options: &TokenOptions, value: Duration) -> serde_json::Value {
    if options.expires_in_as_string {
        serde_json::Value::from(value.as_secs().to_string())
    } else {
        serde_json::Value::from(value.as_secs())
    }
}

fn success_body(options: &TokenOptions, access_token: &str) -> serde_json::Value {
    let mut body = serde_json::json!({
        "token_type": "Bearer",
        "expires_in": seconds(options, options.lifetime),
        "ext_expires_in": seconds(options, options.lifetime),
        "access_token": access_token,
    });
    if let Some(refresh_in) = options.refresh_in {
        body["refresh_in"] = seconds(options, refresh_in);
    }
    body
}

/// What a fault looks like on the Entra server.
pub(super) fn fault_reply(shared: &Shared, request: &Request, fault: Fault) -> Reply {
    match fault {
        Fault::TooManyRequests { retry_after_secs } => {
            let reply = error_reply(
                request,
                429,
                "temporarily_unavailable",
                90055,
                "The request was throttled because there are too many incoming requests. Retry after the time given in the Retry-After header.",
            );
            match retry_after_secs {
                Some(secs) => reply.with_header("retry-after", &secs.to_string()),
                None => reply,
            }
        }
        Fault::ServerError { status } => error_reply(
            request,
            status,
            "temporarily_unavailable",
            90033,
            "A transient error has occurred. Please try again.",
        ),
        Fault::Delay(_) => super::route(shared, request),
        Fault::MalformedBody => Reply::raw(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<html><body>Service temporarily unavailable</body></html>",
        ),
        Fault::EmptyAccessToken if super::identity::is_identity_path(&request.path) => {
            super::identity::empty_token_reply(shared, request)
        }
        Fault::EmptyAccessToken => {
            let options = shared.lock().token_options.clone();
            success_reply(request, &success_body(&options, ""))
        }
        Fault::EntraError {
            status,
            error,
            code,
            message,
        } => error_reply(request, status, &error, code, &message),
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
