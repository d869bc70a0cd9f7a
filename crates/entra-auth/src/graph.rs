//! Microsoft Graph (v1.0), the three calls an app registration's own credential lifecycle needs:
//! read its `passwordCredentials` and `keyCredentials`, `addPassword`, `removePassword`.
//!
//! [`GraphClient`] knows no credential: the caller obtains an app-only bearer token for
//! [`Cloud::graph_scope`] (with [`crate::TokenClient`] or [`crate::TokenCache`]) and passes it to
//! each call. The rules of the rest of this crate apply:
//! - the endpoint is https, or plain http only on a loopback host (tests, emulators); no redirect
//!   is followed; a body is read chunk by chunk up to 1 MiB; the request timeout covers the body;
//! - the token and an added password's `secretText` are [`SecretString`]s from the moment they
//!   are read, and appear in no `Debug`, `Display`, error, log line or URL (the token travels only
//!   in the `Authorization` header, marked sensitive);
//! - reads send no `$select`: Graph returns a certificate's `key` (its public key) whenever
//!   `$select` names `keyCredentials` on a single application, and throttles such reads at 150
//!   requests a minute per tenant ("keyCredential resource type", v1.0); the default properties
//!   include `passwordCredentials` and `keyCredentials` with `key` null, all an expiry watch needs;
//! - every request carries a fresh `client-request-id` (UUID v4); errors and debug logs carry it
//!   and the answer's `request-id`, the ids Microsoft support asks for;
//! - 429, 503 and 504 are retried as [`RetryPolicy`] says, honouring `Retry-After` within the
//!   policy's total budget (a longer wait is not started: the error says so). `addPassword` is
//!   not retried when it may have taken effect (an answer that broke off, 504): it would add a
//!   second password;
//! - Graph's error bodies (`{"error":{"code","message","innerError":{..}}}`) are classified by
//!   status and `code` into a [`GraphErrorKind`]; the message says what to do, and quotes
//!   Graph's own message (which never holds a secret) shortened to one line.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};
use tracing::debug;
use url::Url;
use uuid::Uuid;

use crate::client::{BodyError, ClientOptions, build_http, causes, origin, read_capped};
use crate::input::{ClientId, Cloud, Scope, is_loopback};
use crate::retry::{RetryPolicy, retry_after};

/// Microsoft Graph's application (client) id, the same in every cloud.
pub const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";

/// The most characters of Graph's own `message` an error quotes.
const MAX_GRAPH_MESSAGE: usize = 300;

/// The most characters of an id (`code`, `request-id`) an error keeps.
const MAX_ID: usize = 100;

impl Cloud {
    /// The Microsoft Graph endpoint of this cloud: `https://graph.microsoft.com` (public, and
    /// custom authorities), `https://graph.microsoft.us` (US Government),
    /// `https://microsoftgraph.chinacloudapi.cn` (China).
    pub fn graph_endpoint(&self) -> Url {
        Url::parse(self.graph_base()).expect("the Graph hosts are valid URLs")
    }

    /// The client-credentials scope of this cloud's Graph: `{graph_endpoint}/.default`.
    pub fn graph_scope(&self) -> Scope {
        format!("{}/.default", self.graph_base())
            .parse()
            .expect("the Graph scopes are valid scopes")
    }

    fn graph_base(&self) -> &'static str {
        match self {
            Cloud::Public | Cloud::Custom => "https://graph.microsoft.com",
            Cloud::UsGovernment => "https://graph.microsoft.us",
            Cloud::China => "https://microsoftgraph.chinacloudapi.cn",
        }
    }
}

/// How a [`GraphClient`] talks HTTP; the same knobs as [`ClientOptions`] (and `From` it).
#[derive(Clone)]
pub struct GraphOptions {
    /// Timeout of every single request (connect to last body byte). Default 30 s.
    pub request_timeout: Duration,
    /// Retries of 429, 503 and 504 (and of network failures where a retry is safe).
    pub retry: RetryPolicy,
    /// `User-Agent` of every request.
    pub user_agent: String,
    /// Extra trusted root certificates in PEM, added to the platform's roots.
    pub extra_root_certificates: Vec<Vec<u8>>,
}

impl Default for GraphOptions {
    fn default() -> Self {
        ClientOptions::default().into()
    }
}

impl From<ClientOptions> for GraphOptions {
    fn from(options: ClientOptions) -> Self {
        Self {
            request_timeout: options.request_timeout,
            retry: options.retry,
            user_agent: options.user_agent,
            extra_root_certificates: options.extra_root_certificates,
        }
    }
}

impl GraphOptions {
    fn client_options(&self) -> ClientOptions {
        ClientOptions {
            request_timeout: self.request_timeout,
            retry: self.retry.clone(),
            user_agent: self.user_agent.clone(),
            extra_root_certificates: self.extra_root_certificates.clone(),
        }
    }
}

impl fmt::Debug for GraphOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphOptions")
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .field("user_agent", &self.user_agent)
            .field(
                "extra_root_certificates",
                &format_args!("{} PEM file(s)", self.extra_root_certificates.len()),
            )
            .finish()
    }
}

/// An application as Graph describes it (the fields secret-sync reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    /// The application object's id: what `addPassword`/`removePassword` take.
    pub id: String,
    /// The application (client) id.
    pub app_id: String,
    pub display_name: Option<String>,
    pub password_credentials: Vec<PasswordCredential>,
    pub key_credentials: Vec<KeyCredential>,
}

/// A client secret's description (never its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordCredential {
    /// The secret's id (a GUID): what `removePassword` takes.
    pub key_id: String,
    pub display_name: Option<String>,
    /// The first three characters of the secret.
    pub hint: Option<String>,
    /// `startDateTime`; `None` when absent or not a date this crate can represent.
    pub start: Option<OffsetDateTime>,
    /// `endDateTime`; `None` when absent or not a date this crate can represent.
    pub end: Option<OffsetDateTime>,
}

/// A certificate's description (never its key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCredential {
    pub key_id: String,
    pub display_name: Option<String>,
    pub start: Option<OffsetDateTime>,
    pub end: Option<OffsetDateTime>,
    /// `type`, e.g. `AsymmetricX509Cert`.
    pub kind: Option<String>,
    /// `usage`, e.g. `Verify`.
    pub usage: Option<String>,
    /// `customKeyIdentifier`: the certificate's SHA-1 thumbprint, base64.
    pub thumbprint: Option<String>,
}

impl KeyCredential {
    /// Whether this is `certificate`'s entry: its `customKeyIdentifier` is the base64 SHA-1
    /// thumbprint of the certificate (the bytes compared, so padding and the base64 alphabet do
    /// not matter). `false` without a `customKeyIdentifier` or with one that is not base64.
    pub fn is_of(&self, certificate: &crate::CertificateCredential) -> bool {
        use base64::Engine;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let Some(listed) = self.thumbprint.as_deref().map(str::trim) else {
            return false;
        };
        let listed = STANDARD
            .decode(listed)
            .or_else(|_| URL_SAFE_NO_PAD.decode(listed.trim_end_matches('=')));
        let ours = URL_SAFE_NO_PAD.decode(certificate.thumbprint_sha1());
        matches!((listed, ours), (Ok(listed), Ok(ours)) if listed.len() == 20 && listed == ours)
    }
}

/// What `addPassword` answered: the new credential and its value. `Debug` redacts the value.
pub struct NewPassword {
    pub credential: PasswordCredential,
    /// `secretText`: the new client secret.
    pub secret: SecretString,
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewPassword")
            .field("credential", &self.credential)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

/// What kind of Graph failure this is. More kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GraphErrorKind {
    /// An input could not be used (endpoint, object id, key id, token, lifetime); nothing was sent.
    Config,
    /// HTTP 401: Graph refused the access token (expired, for another audience, empty).
    Unauthorized,
    /// HTTP 403: the caller lacks the Graph permission (or, for writes, ownership of the app).
    Forbidden,
    /// HTTP 404: no such application (or credential).
    NotFound,
    /// HTTP 429: Graph is throttling the caller.
    Throttled,
    /// HTTP 400 from the tenant's app management policy, or a limit on the number of secrets.
    PolicyRefused,
    /// Another refusal (4xx).
    Rejected,
    /// 5xx: Graph had a problem; trying later may help.
    Transient,
    /// The answer is not what Graph answers (not JSON, wrong shape, too large, a redirect).
    Malformed,
    /// Graph could not be reached, or did not answer in time.
    Connection,
}

impl fmt::Display for GraphErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GraphErrorKind::Config => "unusable input",
            GraphErrorKind::Unauthorized => "access token refused",
            GraphErrorKind::Forbidden => "permission missing",
            GraphErrorKind::NotFound => "not found",
            GraphErrorKind::Throttled => "throttled",
            GraphErrorKind::PolicyRefused => "refused by policy",
            GraphErrorKind::Rejected => "refused",
            GraphErrorKind::Transient => "transient service problem",
            GraphErrorKind::Malformed => "malformed answer",
            GraphErrorKind::Connection => "connection failure",
        })
    }
}

/// A failed Graph call. `Display` says what happened and what to do, then the facts for
/// support (HTTP status, Graph's `code`, `request-id`, `client-request-id`, attempts) and
/// Graph's own message, shortened. It never carries the token or a secret.
#[derive(Clone)]
pub struct GraphError {
    inner: Box<ErrorInner>,
}

#[derive(Debug, Clone)]
struct ErrorInner {
    kind: GraphErrorKind,
    message: String,
    status: Option<u16>,
    code: Option<String>,
    graph_message: Option<String>,
    request_id: Option<String>,
    client_request_id: Option<String>,
    retry_after: Option<Duration>,
    retryable: bool,
    attempts: u32,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl GraphError {
    fn new(kind: GraphErrorKind, message: impl Into<String>) -> Self {
        Self {
            inner: Box::new(ErrorInner {
                kind,
                message: message.into(),
                status: None,
                code: None,
                graph_message: None,
                request_id: None,
                client_request_id: None,
                retry_after: None,
                retryable: false,
                attempts: 0,
                source: None,
            }),
        }
    }

    fn config(message: impl Into<String>) -> Self {
        Self::new(GraphErrorKind::Config, message)
    }

    fn with_status(mut self, status: u16) -> Self {
        self.inner.status = Some(status);
        self
    }

    fn with_ids(mut self, request_id: Option<String>, client_request_id: &str) -> Self {
        self.inner.request_id = request_id;
        self.inner.client_request_id = Some(client_request_id.to_owned());
        self
    }

    fn with_retryable(mut self, retryable: bool) -> Self {
        self.inner.retryable = retryable;
        self
    }

    fn with_attempts(mut self, attempts: u32) -> Self {
        self.inner.attempts = attempts;
        self
    }

    fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.inner.source = Some(Arc::new(source));
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> GraphErrorKind {
        self.inner.kind
    }

    /// The actionable message alone, without the facts and Graph's message.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The HTTP status of the answer that failed, if there was one.
    pub fn status(&self) -> Option<u16> {
        self.inner.status
    }

    /// Graph's `error.code`, e.g. `Authorization_RequestDenied`.
    pub fn code(&self) -> Option<&str> {
        self.inner.code.as_deref()
    }

    /// Graph's `error.message`: its first line, at most 300 characters.
    pub fn graph_message(&self) -> Option<&str> {
        self.inner.graph_message.as_deref()
    }

    /// The answer's `request-id` (header, else `innerError`): quote it to Microsoft support.
    pub fn request_id(&self) -> Option<&str> {
        self.inner.request_id.as_deref()
    }

    /// The `client-request-id` this crate sent with the failed request.
    pub fn client_request_id(&self) -> Option<&str> {
        self.inner.client_request_id.as_deref()
    }

    /// How long Graph asked to wait (`Retry-After`), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// Whether this client retries this failure (429, 503, 504, and network failures of
    /// calls that are safe to repeat); the caller may try again later.
    pub fn is_retryable(&self) -> bool {
        self.inner.retryable
    }

    /// How many requests were made before giving up (0 when none was sent).
    pub fn attempts(&self) -> u32 {
        self.inner.attempts
    }
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inner;
        f.write_str(&i.message)?;
        let mut facts = Vec::new();
        if let Some(status) = i.status {
            facts.push(format!("HTTP {status}"));
        }
        if let Some(code) = &i.code {
            facts.push(code.clone());
        }
        if let Some(id) = &i.request_id {
            facts.push(format!("request-id {id}"));
        }
        if let Some(id) = &i.client_request_id {
            facts.push(format!("client-request-id {id}"));
        }
        if i.attempts > 1 {
            facts.push(format!("after {} attempts", i.attempts));
        }
        if !facts.is_empty() {
            write!(f, " [{}]", facts.join("; "))?;
        }
        if let Some(message) = &i.graph_message {
            write!(f, " (Graph said: {message})")?;
        }
        Ok(())
    }
}

impl fmt::Debug for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Nothing in it is secret: Graph's message is redacted of the token when read.
        let i = &self.inner;
        f.debug_struct("GraphError")
            .field("kind", &i.kind)
            .field("message", &i.message)
            .field("status", &i.status)
            .field("code", &i.code)
            .field("graph_message", &i.graph_message)
            .field("request_id", &i.request_id)
            .field("client_request_id", &i.client_request_id)
            .field("retry_after", &i.retry_after)
            .field("retryable", &i.retryable)
            .field("attempts", &i.attempts)
            .field("source", &i.source)
            .finish()
    }
}

impl std::error::Error for GraphError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// The three calls; what each is about decides messages and whether a retry is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Read,
    AddPassword,
    RemovePassword,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Read => "read application",
            Call::AddPassword => "addPassword",
            Call::RemovePassword => "removePassword",
        }
    }

    fn writes(self) -> bool {
        self != Call::Read
    }
}

/// One call's target, for messages: the app id (reads) or object id (writes), and a key id.
struct Target<'a> {
    call: Call,
    app: &'a str,
    key_id: Option<&'a str>,
}

/// A successful answer: its status, body and `request-id`.
struct Answer {
    status: u16,
    body: Vec<u8>,
    request_id: Option<String>,
    client_request_id: String,
    /// Requests made for it, this one included.
    attempts: u32,
}

/// A Microsoft Graph client for an app registration's credentials. Cheap to clone (the
/// connection pool is shared); holds no token or secret.
#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    /// Scheme, host, port and path prefix, without a trailing slash.
    base: String,
    options: GraphOptions,
}

impl fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphClient")
            .field("endpoint", &self.base)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl GraphClient {
    /// A client of the Graph at `endpoint` (e.g. [`Cloud::graph_endpoint`]): https, or http only
    /// on a loopback host; no user information, query or fragment. No redirect is followed,
    /// answers are capped at 1 MiB, every request has `options.request_timeout`, and 429, 503
    /// and 504 are retried honouring `Retry-After` within `options.retry`.
    pub fn new(endpoint: Url, options: GraphOptions) -> Result<GraphClient, GraphError> {
        let shown = origin(&endpoint);
        let refuse = |problem: &str, fix: &str| {
            GraphError::config(format!("Graph endpoint {shown} {problem}: {fix}"))
        };
        match endpoint.scheme() {
            "https" => {}
            "http" if is_loopback(&endpoint) => {}
            "http" => {
                return Err(refuse(
                    "uses plain http for a host that is not a loopback address",
                    "use https (plain http is only allowed for 127.0.0.1, ::1 or localhost, \
                     for tests)",
                ));
            }
            _ => return Err(refuse("is not an http(s) URL", "use an https:// URL")),
        }
        if endpoint.host_str().is_none_or(str::is_empty) {
            return Err(refuse("has no host", "e.g. https://graph.microsoft.com"));
        }
        if !endpoint.username().is_empty() || endpoint.password().is_some() {
            return Err(refuse(
                "contains user information (user:password@)",
                "remove it: Graph takes a bearer token, never a login in the URL",
            ));
        }
        if endpoint.query().is_some() || endpoint.fragment().is_some() {
            return Err(refuse(
                "has a query or fragment",
                "give only scheme, host, port and optionally a path prefix",
            ));
        }
        let path = endpoint.path().trim_end_matches('/');
        if path.ends_with("/v1.0") || path.ends_with("/beta") {
            return Err(refuse(
                "ends with an API version",
                "give the endpoint without /v1.0, e.g. https://graph.microsoft.com",
            ));
        }
        let base = format!("{shown}{path}");
        let client_options = options.client_options();
        let http = build_http(&client_options, true)
            .map_err(|e| GraphError::config(e.message().to_owned()))?;
        Ok(Self {
            http,
            base,
            options,
        })
    }

    /// The endpoint this client talks to (scheme, host, port, path prefix).
    pub fn endpoint(&self) -> &str {
        &self.base
    }

    /// `GET /v1.0/applications(appId='{app_id}')`, without `$select`: the default properties
    /// carry both credential lists with each certificate's `key` null (see the module doc).
    pub async fn application(
        &self,
        token: &SecretString,
        app_id: &ClientId,
    ) -> Result<Application, GraphError> {
        let target = Target {
            call: Call::Read,
            app: app_id.as_str(),
            key_id: None,
        };
        let url = self.url(
            &format!("/v1.0/applications(appId='{}')", app_id.as_str()),
            None,
        )?;
        let answer = self
            .call(&target, token, reqwest::Method::GET, url, None)
            .await?;
        let malformed = |what: &str| malformed_answer(&target, &answer, what);
        let raw: RawApplication =
            serde_json::from_slice(&answer.body).map_err(|_| malformed("is not an application"))?;
        let application = raw.into_application().map_err(|what| malformed(&what))?;
        if !application.app_id.eq_ignore_ascii_case(app_id.as_str()) {
            return Err(malformed(&format!(
                "describes application {:?}, not the one asked for",
                application.app_id
            )));
        }
        debug!(
            app_id = %app_id, object_id = %application.id,
            passwords = application.password_credentials.len(),
            certificates = application.key_credentials.len(),
            request_id = answer.request_id.as_deref().unwrap_or(""),
            "Graph application read"
        );
        Ok(application)
    }

    /// `POST /v1.0/applications/{object_id}/addPassword` with `displayName`, `startDateTime`
    /// (now) and `endDateTime` (`end`) always sent: Graph's default lifetime (two years) is what
    /// tenant policies refuse. The answer's `secretText` is read straight into a
    /// [`SecretString`] and the answer's bytes are zeroed after parsing.
    pub async fn add_password(
        &self,
        token: &SecretString,
        object_id: &str,
        display_name: &str,
        end: OffsetDateTime,
    ) -> Result<NewPassword, GraphError> {
        let object_id = guid("application object id", object_id)?;
        let target = Target {
            call: Call::AddPassword,
            app: &object_id,
            key_id: None,
        };
        if display_name.trim().is_empty() || display_name.chars().any(char::is_control) {
            return Err(GraphError::config(
                "the display name of a new client secret must be non-empty text without \
                 control characters",
            ));
        }
        // Whole seconds, as the portal writes them (0 is always a valid nanosecond).
        let now = OffsetDateTime::now_utc();
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let end = end
            .checked_to_offset(UtcOffset::UTC)
            .and_then(|e| e.replace_nanosecond(0).ok())
            .filter(|e| *e > now)
            .ok_or_else(|| {
                GraphError::config(
                    "the end of a new client secret's lifetime must lie in the future: \
                     configure a positive lifetime",
                )
            })?;
        let format = |t: OffsetDateTime| {
            t.format(&Rfc3339).map_err(|_| {
                GraphError::config(
                    "the lifetime of a new client secret cannot be written as a date",
                )
            })
        };
        let body = serde_json::json!({
            "passwordCredential": {
                "displayName": display_name,
                "startDateTime": format(now)?,
                "endDateTime": format(end)?,
            }
        });
        let url = self.url(&format!("/v1.0/applications/{object_id}/addPassword"), None)?;
        let mut answer = self
            .call(
                &target,
                token,
                reqwest::Method::POST,
                url,
                Some(body.to_string().into_bytes()),
            )
            .await?;
        let parsed = serde_json::from_slice::<RawNewPassword>(&answer.body);
        secrecy::zeroize::Zeroize::zeroize(&mut answer.body);
        // The parser's error could quote the answer, which holds the secret: never shown.
        let malformed = |what: &str| malformed_answer(&target, &answer, what);
        let mut raw = parsed.map_err(|_| malformed("is not a passwordCredential"))?;
        let secret = raw
            .secret_text
            .take()
            .filter(|s| !s.expose_secret().is_empty())
            .ok_or_else(|| malformed("carries no secretText"))?;
        let mut credential = raw
            .credential()
            .into_credential()
            .map_err(|what| malformed(&what))?;
        // The keyId is what the caller records beside the secret and removes the password by:
        // an answer without a usable one describes no password the caller could identify.
        credential.key_id = Uuid::try_parse(credential.key_id.trim())
            .map(|id| id.hyphenated().to_string())
            .map_err(|_| {
                malformed(
                    "carries a keyId that is not a GUID, so the new password cannot be \
                     identified (its secretText is not used)",
                )
            })?;
        debug!(
            object_id = %object_id, key_id = %credential.key_id,
            request_id = answer.request_id.as_deref().unwrap_or(""),
            "Graph password added"
        );
        Ok(NewPassword { credential, secret })
    }

    /// `POST /v1.0/applications/{object_id}/removePassword` with `{"keyId": key_id}`; Graph
    /// answers 204.
    pub async fn remove_password(
        &self,
        token: &SecretString,
        object_id: &str,
        key_id: &str,
    ) -> Result<(), GraphError> {
        let object_id = guid("application object id", object_id)?;
        let key_id = guid("password key id", key_id)?;
        let target = Target {
            call: Call::RemovePassword,
            app: &object_id,
            key_id: Some(&key_id),
        };
        let url = self.url(
            &format!("/v1.0/applications/{object_id}/removePassword"),
            None,
        )?;
        let body = serde_json::json!({ "keyId": key_id });
        let answer = self
            .call(
                &target,
                token,
                reqwest::Method::POST,
                url,
                Some(body.to_string().into_bytes()),
            )
            .await?;
        debug!(
            object_id = %object_id, key_id = %key_id, status = answer.status,
            request_id = answer.request_id.as_deref().unwrap_or(""),
            "Graph password removed"
        );
        Ok(())
    }

    fn url(&self, path: &str, query: Option<&str>) -> Result<Url, GraphError> {
        let mut url = Url::parse(&format!("{}{path}", self.base))
            .map_err(|e| GraphError::config(format!("cannot build the Graph URL: {e}")))?;
        url.set_query(query);
        Ok(url)
    }

    /// Run one call until it succeeds, fails for good, or the retry budget is spent.
    async fn call(
        &self,
        target: &Target<'_>,
        token: &SecretString,
        method: reqwest::Method,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, GraphError> {
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
            .ok()
            .filter(|_| !token.expose_secret().trim().is_empty())
            .ok_or_else(|| {
                GraphError::config(
                    "the Graph access token is empty or holds characters an HTTP header cannot \
                     carry: pass the access_token of a token for the Graph scope",
                )
            })?;
        authorization.set_sensitive(true);
        let policy = &self.options.retry;
        let start = tokio::time::Instant::now();
        let mut n = 0;
        loop {
            n += 1;
            let err = match self
                .attempt(
                    target,
                    token,
                    &authorization,
                    &method,
                    &url,
                    body.as_deref(),
                )
                .await
            {
                Ok(answer) => {
                    return Ok(Answer {
                        attempts: n,
                        ..answer
                    });
                }
                Err(err) => err,
            };
            if !err.is_retryable() || n >= policy.max_attempts {
                return Err(err.with_attempts(n));
            }
            let remaining = policy.max_elapsed.saturating_sub(start.elapsed());
            let wait = match err.retry_after() {
                Some(asked) if asked > remaining => {
                    let mut err = err.with_attempts(n);
                    err.inner.message.push_str(&format!(
                        "; Graph asked to wait {} s, more than the {} s left of the retry \
                         budget, so no retry was made",
                        asked.as_secs_f64().ceil(),
                        remaining.as_secs()
                    ));
                    return Err(err);
                }
                Some(asked) => asked,
                None if remaining.is_zero() => return Err(err.with_attempts(n)),
                None => policy.backoff(n).min(remaining),
            };
            debug!(
                call = target.call.name(), attempt = n,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                status = ?err.status(), error = %err, "retrying Graph request"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// One request and its answer.
    async fn attempt(
        &self,
        target: &Target<'_>,
        token: &SecretString,
        authorization: &HeaderValue,
        method: &reqwest::Method,
        url: &Url,
        body: Option<&[u8]>,
    ) -> Result<Answer, GraphError> {
        let client_request_id = Uuid::new_v4().to_string();
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .header(AUTHORIZATION, authorization.clone())
            .header(ACCEPT, "application/json")
            .header("client-request-id", &client_request_id);
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_vec());
        }
        let connection_error = |e: reqwest::Error, received: bool| {
            // addPassword that may have reached Graph is not repeated (it would add a second
            // password); everything else, and a connection that never opened, is.
            let safe = match target.call {
                Call::Read | Call::RemovePassword => true,
                Call::AddPassword => e.is_connect() && !received,
            };
            let message = if e.is_timeout() {
                format!(
                    "Microsoft Graph at {} did not answer the {} request within {} s: check \
                     network access to it (proxy, firewall), or raise the request timeout",
                    self.base,
                    target.call.name(),
                    self.options.request_timeout.as_secs_f64()
                )
            } else {
                format!(
                    "cannot reach Microsoft Graph at {} for the {} request: {}; check the \
                     endpoint, DNS, proxy and firewall",
                    self.base,
                    target.call.name(),
                    causes(&e)
                )
            };
            GraphError::new(GraphErrorKind::Connection, message)
                .with_retryable(safe)
                .with_ids(None, &client_request_id)
        };
        let mut response = request
            .send()
            .await
            .map_err(|e| connection_error(e, false))?;
        let status = response.status().as_u16();
        let request_id = response
            .headers()
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .and_then(clean_id);
        let wait = retry_after(response.headers());
        let body = match read_capped(&mut response).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                return Err(GraphError::new(
                    GraphErrorKind::Malformed,
                    format!(
                        "Microsoft Graph at {} answered the {} request (HTTP {status}) with a \
                         body of more than 1 MiB, so it was not read further: no Graph answer \
                         of these calls is this large; check that the endpoint is Microsoft \
                         Graph and not a proxy or another server",
                        self.base,
                        target.call.name()
                    ),
                )
                .with_status(status)
                .with_ids(request_id, &client_request_id));
            }
            Err(BodyError::Broken(e)) => {
                return Err(connection_error(e, true)
                    .with_status(status)
                    .with_ids(request_id, &client_request_id));
            }
        };
        debug!(
            call = target.call.name(), status,
            request_id = request_id.as_deref().unwrap_or(""),
            client_request_id = %client_request_id, "Graph answered"
        );
        if (200..300).contains(&status) {
            return Ok(Answer {
                status,
                body,
                request_id,
                client_request_id,
                attempts: 1,
            });
        }
        let mut err = self.refusal(target, status, &body, token, &client_request_id, request_id);
        err.inner.retry_after = wait;
        Err(err)
    }

    /// A non-2xx answer, classified.
    fn refusal(
        &self,
        target: &Target<'_>,
        status: u16,
        body: &[u8],
        token: &SecretString,
        client_request_id: &str,
        request_id: Option<String>,
    ) -> GraphError {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let error = parsed.as_ref().and_then(|v| v.get("error"));
        let code = error
            .and_then(|e| e.get("code"))
            .and_then(Value::as_str)
            .and_then(clean_id);
        let graph_message = error
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str)
            .map(|m| shorten(m, token.expose_secret()))
            .filter(|m| !m.is_empty());
        let request_id = request_id.or_else(|| {
            error
                .and_then(|e| e.get("innerError"))
                .and_then(|i| i.get("request-id"))
                .and_then(Value::as_str)
                .and_then(clean_id)
        });
        let kind = classify(status, code.as_deref());
        let retryable =
            matches!(status, 429 | 503) || (status == 504 && target.call != Call::AddPassword);
        let mut err = GraphError::new(kind, self.advice(target, kind, status, code.as_deref()))
            .with_status(status)
            .with_retryable(retryable)
            .with_ids(request_id, client_request_id);
        err.inner.code = code;
        err.inner.graph_message = graph_message;
        err
    }

    /// What to do about a refusal.
    fn advice(
        &self,
        target: &Target<'_>,
        kind: GraphErrorKind,
        status: u16,
        code: Option<&str>,
    ) -> String {
        let Target { call, app, key_id } = *target;
        let subject = match call {
            Call::Read => format!("application {app} (appId)"),
            _ => format!("application object {app}"),
        };
        let key = key_id.map(|k| format!(" password {k}")).unwrap_or_default();
        match kind {
            GraphErrorKind::Unauthorized => format!(
                "Microsoft Graph refused the access token for the {} request of {subject}: it \
                 must be an unexpired app-only token for this cloud's Graph (scope \
                 <graph endpoint>/.default, e.g. https://graph.microsoft.com/.default) from \
                 the app's tenant",
                call.name()
            ),
            GraphErrorKind::Forbidden if call.writes() => format!(
                "the caller may not change the credentials of {subject}: grant its app the \
                 application permission Application.ReadWrite.OwnedBy (admin consent) and make \
                 its service principal an owner of the application (an admin does it once: POST \
                 /applications/{{id}}/owners/$ref), or grant Application.ReadWrite.All"
            ),
            GraphErrorKind::Forbidden => format!(
                "the caller may not read {subject}: grant its app the application permission \
                 Application.ReadWrite.OwnedBy (or Application.Read.All, or \
                 Application.ReadWrite.All) with admin consent"
            ),
            GraphErrorKind::NotFound => match call {
                Call::Read => format!(
                    "Microsoft Graph knows no {subject} in the token's tenant: check the client \
                     id, and that the Graph token comes from the app's own tenant"
                ),
                Call::AddPassword => format!(
                    "Microsoft Graph knows no {subject}: addPassword takes the application's \
                     object id (`id`), not its appId nor its service principal's id"
                ),
                Call::RemovePassword => format!(
                    "Microsoft Graph knows no {subject}{key}: check the object id and keyId \
                     (the password may already be removed)"
                ),
            },
            GraphErrorKind::PolicyRefused => match code {
                Some("CredentialInvalidLifetimeAsPerAppPolicy") => format!(
                    "the tenant's app management policy refuses a client secret of this \
                     lifetime on {subject}: configure a shorter lifetime (ask the tenant's \
                     admins for the policy's maximum)"
                ),
                Some("CredentialTypeNotAllowedAsPerAppPolicy") => format!(
                    "the tenant's app management policy does not allow client secrets on \
                     {subject}: a secret cannot be rotated there; use a certificate or a \
                     federated credential instead"
                ),
                _ => format!(
                    "{subject} holds as many client secrets as it may (apps that allow personal \
                     Microsoft accounts hold at most 2): remove a secret that is no longer used, \
                     then try again"
                ),
            },
            GraphErrorKind::Throttled => format!(
                "Microsoft Graph is throttling the {} requests (HTTP 429): try again later, and \
                 watch credentials less often",
                call.name()
            ),
            GraphErrorKind::Transient => format!(
                "Microsoft Graph had a problem answering the {} request of {subject} (HTTP \
                 {status}): try again later",
                call.name()
            ),
            _ if (300..400).contains(&status) => format!(
                "Microsoft Graph at {} answered the {} request with a redirect (HTTP {status}), \
                 which is not followed: give the Graph endpoint itself (e.g. \
                 https://graph.microsoft.com); a proxy or captive portal may be in the way",
                self.base,
                call.name()
            ),
            _ if code.is_none() => format!(
                "the {} request of {subject} was refused (HTTP {status}) without a Graph error \
                 body: check that {} is Microsoft Graph",
                call.name(),
                self.base
            ),
            _ => format!(
                "Microsoft Graph refused the {} request of {subject}{key} (HTTP {status})",
                call.name()
            ),
        }
    }
}

/// The kind of a refusal, from the status and Graph's `code`.
fn classify(status: u16, code: Option<&str>) -> GraphErrorKind {
    match (status, code) {
        (429, _) => GraphErrorKind::Throttled,
        (500..=599, _) => GraphErrorKind::Transient,
        (401, _) => GraphErrorKind::Unauthorized,
        (403, _) => GraphErrorKind::Forbidden,
        (404, _) => GraphErrorKind::NotFound,
        (
            400,
            Some(
                "CredentialInvalidLifetimeAsPerAppPolicy"
                | "CredentialTypeNotAllowedAsPerAppPolicy"
                | "TooManyAppPasswords",
            ),
        ) => GraphErrorKind::PolicyRefused,
        (300..=399, _) => GraphErrorKind::Malformed,
        (_, None) if !(400..500).contains(&status) => GraphErrorKind::Malformed,
        _ => GraphErrorKind::Rejected,
    }
}

fn malformed_answer(target: &Target<'_>, answer: &Answer, what: &str) -> GraphError {
    GraphError::new(
        GraphErrorKind::Malformed,
        format!(
            "the answer of Microsoft Graph to the {} request of {} {what} ({} bytes): check \
             that the endpoint is Microsoft Graph",
            target.call.name(),
            target.app,
            answer.body.len()
        ),
    )
    .with_status(answer.status)
    .with_ids(answer.request_id.clone(), &answer.client_request_id)
    .with_attempts(answer.attempts)
}

/// A GUID input in canonical lower-case hyphenated form, or a Config error naming `what`.
fn guid(what: &str, value: &str) -> Result<String, GraphError> {
    Uuid::try_parse(value.trim())
        .map(|id| id.hyphenated().to_string())
        .map_err(|e| {
            GraphError::config(format!(
                "the {what} {value:?} is not a GUID: give the id Graph reports \
                 (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
            ))
            .with_source(e)
        })
}

/// An id from the network kept only when it looks like one (letters, digits, `-_.`), at most
/// [`MAX_ID`] characters, so it can neither forge log lines nor carry anything else.
fn clean_id(value: &str) -> Option<String> {
    let value = value.trim();
    let ok = !value.is_empty()
        && value.len() <= MAX_ID
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    ok.then(|| value.to_owned())
}

/// Graph's message: its first line, control characters dropped, the token removed if echoed,
/// at most [`MAX_GRAPH_MESSAGE`] characters.
fn shorten(message: &str, token: &str) -> String {
    let line = message.lines().next().unwrap_or("");
    let line = if token.len() >= 4 {
        line.replace(token, "[REDACTED]")
    } else {
        line.to_owned()
    };
    let mut out: String = line
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_GRAPH_MESSAGE)
        .collect();
    if line.chars().filter(|c| !c.is_control()).count() > MAX_GRAPH_MESSAGE {
        out.push('…');
    }
    out.trim().to_owned()
}

/// An ISO 8601 date-time as Graph writes it (`2026-11-24T06:00:00Z`, with fractional seconds,
/// with an offset, or without one meaning UTC), in UTC. `None` for anything else, including
/// dates outside the years 1-9999 in UTC: never a panic.
pub(crate) fn parse_graph_date(text: &str) -> Option<OffsetDateTime> {
    let text = text.trim();
    if text.len() > 64 {
        return None;
    }
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return at.checked_to_offset(UtcOffset::UTC);
    }
    let local = format_description!(
        version = 2,
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    PrimitiveDateTime::parse(text, &local)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

/// A JSON value kept when it is a string, else `None` (a field of the wrong type does not
/// make the whole answer unreadable).
fn lenient_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => Some(s),
        _ => None,
    })
}

fn secret_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(SecretString::from))
}

fn lenient_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawApplication {
    #[serde(default, deserialize_with = "lenient_text")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient_text")]
    app_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_text")]
    display_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_list")]
    password_credentials: Vec<RawPassword>,
    #[serde(default, deserialize_with = "lenient_list")]
    key_credentials: Vec<RawKey>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPassword {
    #[serde(default, deserialize_with = "lenient_text")]
    key_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_text")]
    display_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_text")]
    hint: Option<String>,
    #[serde(default, deserialize_with = "lenient_text")]
    start_date_time: Option<String>,
    #[serde(default, deserialize_with = "lenient_text")]
    end_date_time: Option<String>,
}

/// addPassword's answer: a passwordCredential with `secretText`, read without buffering (no
/// `flatten`), so the secret goes from the answer straight into a `SecretString`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNewPassword {
    #[serde(default, deserialize_with = "lenient_text")]
    key_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_text")]
    display_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_text")]
    hint: Option<String>,
    #[serde(default, deserialize_with = "lenient_text")]
    start_date_time: Option<String>,
    #[serde(default, deserialize_with = "lenient_text")]
    end_date_time: Option<String>,
    #[serde(default, deserialize_with = "secret_text")]
    secret_text: Option<SecretString>,
}

impl RawNewPassword {
    fn credential(&mut self) -> RawPassword {
        RawPassword {
            key_id: self.key_id.take(),
            display_name: self.display_name.take(),
            hint: self.hint.take(),
            start_date_time: self.start_date_time.take(),
            end_date_time: self.end_date_time.take(),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawKey {
    #[serde(default, deserialize_with = "lenient_text")]
    key_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_text")]
    display_name: Option<String>,
    #[serde(default, deserialize_with = "lenient_text")]
    start_date_time: Option<String>,
    #[serde(default, deserialize_with = "lenient_text")]
    end_date_time: Option<String>,
    #[serde(default, rename = "type", deserialize_with = "lenient_text")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "lenient_text")]
    usage: Option<String>,
    #[serde(default, deserialize_with = "lenient_text")]
    custom_key_identifier: Option<String>,
}

fn required(value: Option<String>, what: &str) -> Result<String, String> {
    value
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| format!("has no {what}"))
}

fn date(value: Option<String>) -> Option<OffsetDateTime> {
    value.as_deref().and_then(parse_graph_date)
}

impl RawApplication {
    fn into_application(self) -> Result<Application, String> {
        Ok(Application {
            id: required(self.id, "id")?,
            app_id: required(self.app_id, "appId")?,
            display_name: self.display_name,
            password_credentials: self
                .password_credentials
                .into_iter()
                .map(RawPassword::into_credential)
                .collect::<Result<_, _>>()?,
            key_credentials: self
                .key_credentials
                .into_iter()
                .map(RawKey::into_credential)
                .collect::<Result<_, _>>()?,
        })
    }
}

impl RawPassword {
    fn into_credential(self) -> Result<PasswordCredential, String> {
        Ok(PasswordCredential {
            key_id: required(self.key_id, "keyId in a passwordCredential")?,
            display_name: self.display_name,
            hint: self.hint,
            start: date(self.start_date_time),
            end: date(self.end_date_time),
        })
    }
}

impl RawKey {
    fn into_credential(self) -> Result<KeyCredential, String> {
        Ok(KeyCredential {
            key_id: required(self.key_id, "keyId in a keyCredential")?,
            display_name: self.display_name,
            start: date(self.start_date_time),
            end: date(self.end_date_time),
            kind: self.kind,
            usage: self.usage,
            thumbprint: self.custom_key_identifier,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn graph_dates_parse_robustly() {
        let cases: &[(&str, Option<OffsetDateTime>)] = &[
            (
                "2026-11-24T06:00:00Z",
                Some(datetime!(2026-11-24 06:00:00 UTC)),
            ),
            (
                "2026-11-24T06:00:00.1234567Z",
                Some(datetime!(2026-11-24 06:00:00.1234567 UTC)),
            ),
            (
                "2026-11-24T06:00:00.5+02:00",
                Some(datetime!(2026-11-24 04:00:00.5 UTC)),
            ),
            (
                "2022-04-15T17:18:50",
                Some(datetime!(2022-04-15 17:18:50 UTC)),
            ),
            (
                "2022-04-15T17:18:50.25",
                Some(datetime!(2022-04-15 17:18:50.25 UTC)),
            ),
            (
                "9999-12-31T23:59:59Z",
                Some(datetime!(9999-12-31 23:59:59 UTC)),
            ),
            // In UTC this is the year 10000, which OffsetDateTime cannot hold.
            ("9999-12-31T23:30:00-01:00", None),
            ("10000-01-01T00:00:00Z", None),
            ("2026-02-30T00:00:00Z", None),
            ("2026-11-24", None),
            ("", None),
            ("soon", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_graph_date(text), *expected, "{text:?}");
        }
        assert_eq!(parse_graph_date(&"9".repeat(100_000)), None);
    }

    #[test]
    fn graph_endpoints_and_scopes_per_cloud() {
        let cases = [
            (Cloud::Public, "https://graph.microsoft.com"),
            (Cloud::Custom, "https://graph.microsoft.com"),
            (Cloud::UsGovernment, "https://graph.microsoft.us"),
            (Cloud::China, "https://microsoftgraph.chinacloudapi.cn"),
        ];
        for (cloud, base) in cases {
            assert_eq!(cloud.graph_endpoint().as_str(), format!("{base}/"));
            assert_eq!(cloud.graph_scope().as_str(), format!("{base}/.default"));
            assert_eq!(cloud.graph_scope().resource(), base);
        }
    }

    #[test]
    fn classification_by_status_and_code() {
        use GraphErrorKind::*;
        let cases: &[(u16, Option<&str>, GraphErrorKind)] = &[
            (401, Some("InvalidAuthenticationToken"), Unauthorized),
            (403, Some("Authorization_RequestDenied"), Forbidden),
            (404, Some("Request_ResourceNotFound"), NotFound),
            (429, Some("TooManyRequests"), Throttled),
            (
                400,
                Some("CredentialInvalidLifetimeAsPerAppPolicy"),
                PolicyRefused,
            ),
            (
                400,
                Some("CredentialTypeNotAllowedAsPerAppPolicy"),
                PolicyRefused,
            ),
            (400, Some("TooManyAppPasswords"), PolicyRefused),
            (400, Some("Request_BadRequest"), Rejected),
            (400, None, Rejected),
            (503, None, Transient),
            (504, Some("GatewayTimeout"), Transient),
            (302, None, Malformed),
            (101, None, Malformed),
        ];
        for (status, code, kind) in cases {
            assert_eq!(classify(*status, *code), *kind, "{status} {code:?}");
        }
    }

    #[test]
    fn graph_messages_are_one_short_line_without_the_token() {
        let token = "eyJ0eXAiOiJKV1Q.token.value";
        let text = format!("bad token {token}\nsecond line");
        assert_eq!(shorten(&text, token), "bad token [REDACTED]");
        let long = "x".repeat(10_000);
        assert_eq!(shorten(&long, token).chars().count(), MAX_GRAPH_MESSAGE + 1);
        assert_eq!(shorten("a\u{1b}[31mb", token), "a[31mb");
        assert_eq!(clean_id("abc-123"), Some("abc-123".into()));
        assert_eq!(clean_id("abc\r\nx"), None);
        assert_eq!(clean_id(&"a".repeat(MAX_ID + 1)), None);
    }
}
