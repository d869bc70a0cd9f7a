//! The error type of token acquisition, and how Entra ID's refusals are classified.
//!
//! Callers need three things from a failure: whether trying again can help
//! ([`Error::is_retryable`]), the facts to quote to support (HTTP status, AADSTS codes, trace
//! and correlation ids), and a message telling a person what to fix. Classification uses the
//! HTTP status, the OAuth `error` and the AADSTS numbers only, never the description's wording.
//! No error ever carries a secret, an assertion or a token.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::input::ConfigError;

/// What kind of failure this is. More kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An input could not be used (bad key file, missing environment variable, ...).
    Config,
    /// The source of a federated assertion (token file, environment variable, GitHub Actions
    /// OIDC endpoint) could not provide one, or the Azure Arc agent's challenge named a key
    /// file that may not be read.
    CredentialSource,
    /// The endpoint could not be reached, or did not answer in time.
    Network,
    /// The service asked us to slow down (HTTP 429, AADSTS50196, AADSTS90055).
    Throttled,
    /// The service had a transient problem (5xx, `temporarily_unavailable`, transient AADSTS codes).
    ServiceUnavailable,
    /// Entra ID (or the managed identity endpoint) refused the request: see
    /// [`Error::aadsts_codes`] and [`Error::oauth_error`].
    Rejected,
    /// The service answered "success" with something that is not a usable token.
    InvalidResponse,
}

/// A failure to obtain an access token. `Display` says what happened and what to do.
#[derive(Clone)]
pub struct Error {
    inner: Box<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    kind: ErrorKind,
    message: String,
    retryable: bool,
    status: Option<u16>,
    oauth_error: Option<String>,
    codes: Vec<u32>,
    description: Option<String>,
    trace_id: Option<String>,
    correlation_id: Option<String>,
    retry_after: Option<Duration>,
    attempts: u32,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let retryable = matches!(
            kind,
            ErrorKind::Network | ErrorKind::Throttled | ErrorKind::ServiceUnavailable
        );
        Self {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                retryable,
                status: None,
                oauth_error: None,
                codes: Vec::new(),
                description: None,
                trace_id: None,
                correlation_id: None,
                retry_after: None,
                attempts: 0,
                source: None,
            }),
        }
    }

    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.inner.source = Some(Arc::new(source));
        self
    }

    pub(crate) fn with_status(mut self, status: u16) -> Self {
        self.inner.status = Some(status);
        self
    }

    pub(crate) fn with_retryable(mut self, retryable: bool) -> Self {
        self.inner.retryable = retryable;
        self
    }

    pub(crate) fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.inner.retry_after = retry_after;
        self
    }

    pub(crate) fn with_attempts(mut self, attempts: u32) -> Self {
        self.inner.attempts = attempts;
        self
    }

    pub(crate) fn with_service_details(mut self, details: ServiceDetails) -> Self {
        self.inner.oauth_error = details.error;
        self.inner.codes = details.codes;
        self.inner.description = details.description;
        self.inner.trace_id = details.trace_id;
        self.inner.correlation_id = details.correlation_id;
        self
    }

    pub(crate) fn append_message(mut self, more: &str) -> Self {
        self.inner.message.push_str(more);
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// Whether trying again later may succeed (throttling, transient service or network
    /// trouble, AADSTS70021 shortly after a federated credential was created).
    pub fn is_retryable(&self) -> bool {
        self.inner.retryable
    }

    /// The AADSTS numbers, from `error_codes` or parsed from the description.
    pub fn aadsts_codes(&self) -> &[u32] {
        &self.inner.codes
    }

    /// The OAuth `error` field, e.g. `invalid_client`.
    pub fn oauth_error(&self) -> Option<&str> {
        self.inner.oauth_error.as_deref()
    }

    /// The HTTP status of the answer that failed, if there was one.
    pub fn http_status(&self) -> Option<u16> {
        self.inner.status
    }

    /// Entra ID's trace id: quote it to Microsoft support.
    pub fn trace_id(&self) -> Option<&str> {
        self.inner.trace_id.as_deref()
    }

    /// Entra ID's correlation id: quote it to Microsoft support.
    pub fn correlation_id(&self) -> Option<&str> {
        self.inner.correlation_id.as_deref()
    }

    /// How long the service asked us to wait (`Retry-After` and friends), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// How many requests were made before giving up (0 when none was sent).
    pub fn attempts(&self) -> u32 {
        self.inner.attempts
    }

    /// The actionable message alone, without the service details.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    fn render(&self) -> String {
        let i = &self.inner;
        let mut out = i.message.clone();
        let mut facts = Vec::new();
        if let Some(status) = i.status {
            facts.push(format!("HTTP {status}"));
        }
        if let Some(error) = &i.oauth_error {
            facts.push(error.clone());
        }
        facts.extend(i.codes.iter().map(|c| format!("AADSTS{c}")));
        if let Some(id) = &i.trace_id {
            facts.push(format!("trace id {id}"));
        }
        if let Some(id) = &i.correlation_id {
            facts.push(format!("correlation id {id}"));
        }
        if i.attempts > 1 {
            facts.push(format!("after {} attempts", i.attempts));
        }
        if !facts.is_empty() {
            out.push_str(&format!(" [{}]", facts.join("; ")));
        }
        if let Some(description) = &i.description {
            out.push_str(&format!(" (service said: {description})"));
        }
        out
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Inner holds no secret: messages and descriptions are redacted when built.
        let i = &self.inner;
        f.debug_struct("Error")
            .field("kind", &i.kind)
            .field("message", &i.message)
            .field("retryable", &i.retryable)
            .field("status", &i.status)
            .field("oauth_error", &i.oauth_error)
            .field("codes", &i.codes)
            .field("description", &i.description)
            .field("trace_id", &i.trace_id)
            .field("correlation_id", &i.correlation_id)
            .field("retry_after", &i.retry_after)
            .field("attempts", &i.attempts)
            .field("source", &i.source)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl From<ConfigError> for Error {
    fn from(err: ConfigError) -> Self {
        Error::new(ErrorKind::Config, err.to_string()).with_source(err)
    }
}

/// The fields of an Entra ID (or managed identity) error body, already sanitised.
#[derive(Debug, Clone, Default)]
pub(crate) struct ServiceDetails {
    pub error: Option<String>,
    pub codes: Vec<u32>,
    /// First line of `error_description`, shortened, with known secrets removed.
    pub description: Option<String>,
    pub trace_id: Option<String>,
    pub correlation_id: Option<String>,
}

/// Which credential a request used; some codes mean different things for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CredentialKind {
    Secret,
    Certificate,
    Federated,
    /// The Instance Metadata Service.
    Imds,
    /// The App Service / Container Apps identity endpoint.
    AppService,
    /// The Azure Arc agent's identity endpoint.
    AzureArc,
}

impl CredentialKind {
    /// The config word of the credential (`client_secret = ...`, `managed_identity = true`),
    /// as log fields show it; a managed identity names its endpoint after a colon.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Secret => "client_secret",
            CredentialKind::Certificate => "certificate",
            CredentialKind::Federated => "federated_token",
            CredentialKind::Imds => "managed_identity:imds",
            CredentialKind::AppService => "managed_identity:app_service",
            CredentialKind::AzureArc => "managed_identity:azure_arc",
        }
    }
}

/// What the request was about, for messages. Holds no secret.
#[derive(Debug, Clone)]
pub(crate) struct RequestFacts {
    pub credential: CredentialKind,
    pub tenant: String,
    pub client_id: String,
    pub scope: String,
    /// `iss`, `sub` and `aud` of a federated assertion, read without verification.
    pub assertion_claims: Option<AssertionClaims>,
}

/// Claims of an external assertion that identify it; none of them is secret.
#[derive(Debug, Clone, Default)]
pub(crate) struct AssertionClaims {
    pub issuer: Option<String>,
    pub subject: Option<String>,
    pub audience: Option<String>,
}

/// AADSTS codes after which trying again can succeed.
const THROTTLING_CODES: [u32; 2] = [50196, 90055];
const TRANSIENT_CODES: [u32; 5] = [50033, 90006, 90024, 90033, 70021];

/// Classify a refusal and write the message a person needs.
pub(crate) fn service_error(
    status: u16,
    details: ServiceDetails,
    retry_after: Option<Duration>,
    facts: &RequestFacts,
) -> Error {
    let codes = &details.codes;
    let has = |code: u32| codes.contains(&code);
    let oauth = details.error.as_deref().unwrap_or("");

    // IMDS answers 404 while the identity is not ready yet and 410 while it is updating;
    // Microsoft's guidance is to retry both with backoff.
    let imds_not_ready = facts.credential == CredentialKind::Imds && matches!(status, 404 | 410);
    let kind = if status == 429 || codes.iter().any(|c| THROTTLING_CODES.contains(c)) {
        ErrorKind::Throttled
    } else if status >= 500
        || status == 408
        || imds_not_ready
        || oauth == "temporarily_unavailable"
        || codes
            .iter()
            .any(|c| TRANSIENT_CODES.contains(c) && *c != 70021)
    {
        ErrorKind::ServiceUnavailable
    } else {
        ErrorKind::Rejected
    };
    let retryable = kind != ErrorKind::Rejected || has(70021);
    let message = message_for(kind, status, codes, facts, &details);
    Error::new(kind, message)
        .with_status(status)
        .with_retryable(retryable)
        .with_retry_after(retry_after)
        .with_service_details(details)
}

fn message_for(
    kind: ErrorKind,
    status: u16,
    codes: &[u32],
    facts: &RequestFacts,
    details: &ServiceDetails,
) -> String {
    let RequestFacts {
        credential,
        tenant,
        client_id,
        scope,
        ..
    } = facts;
    let claim = |pick: fn(&AssertionClaims) -> &Option<String>| {
        facts
            .assertion_claims
            .as_ref()
            .and_then(|c| pick(c).clone())
            .map(|v| format!(" {v:?}"))
            .unwrap_or_default()
    };
    let mi = matches!(
        credential,
        CredentialKind::Imds | CredentialKind::AppService | CredentialKind::AzureArc
    );
    for code in codes {
        let text = match code {
            7000215 if *credential == CredentialKind::Certificate => format!(
                "Entra ID does not accept the client certificate of app {client_id}: upload this \
                 certificate (its public part) to the app registration, or use the certificate \
                 that is registered there"
            ),
            7000215 => format!(
                "the client secret of app {client_id} is wrong: use the secret's Value, not its \
                 Secret ID, and check that it belongs to this app"
            ),
            7000222 => format!(
                "the client secret of app {client_id} has expired: create a new client secret \
                 for the app registration and store its Value"
            ),
            7000218 => format!(
                "no client credential was sent for app {client_id}: configure a client secret, \
                 a certificate or a federated credential"
            ),
            700016 => format!(
                "application {client_id} was not found in tenant {tenant}: check the client id \
                 and the tenant id, and that the app is registered (or consented) in that tenant"
            ),
            90002 => format!(
                "tenant {tenant} was not found: check the tenant id (directory id GUID or a \
                 verified domain) and the authority (cloud)"
            ),
            70011 | 700022 | 700023 => format!(
                "the scope {scope:?} is not valid: use exactly one <resource>/.default, e.g. \
                 https://graph.microsoft.com/.default"
            ),
            500011 => format!(
                "the resource of scope {scope:?} was not found in tenant {tenant}: check the \
                 resource URI, and that the API's service principal exists in the tenant"
            ),
            700027 => format!(
                "the client assertion's signature is invalid: the certificate is not registered \
                 on app {client_id}; upload the certificate (public part) to the app registration"
            ),
            700024 => "the client assertion is outside its validity window: the federated token \
                 has expired or the local clock is wrong; get a fresh token and check the time"
                .to_owned(),
            700211 => format!(
                "no federated credential on app {client_id} matches the token's issuer{}: add a \
                 federated credential with exactly this issuer",
                claim(|c| &c.issuer)
            ),
            700212 => format!(
                "no federated credential on app {client_id} matches the token's audience{}: the \
                 token must be issued for api://AzureADTokenExchange (or the cloud's variant)",
                claim(|c| &c.audience)
            ),
            700213 => format!(
                "no federated credential on app {client_id} matches the token's subject{}: add a \
                 federated credential with exactly this subject (it is case-sensitive)",
                claim(|c| &c.subject)
            ),
            70021 => format!(
                "no federated credential on app {client_id} matches the token{}: a federated \
                 credential takes a few minutes to become usable after it is created; otherwise \
                 check its issuer, subject and audience",
                claim(|c| &c.subject)
            ),
            9001023 => "the client-credentials grant is not allowed on /common or /consumers: \
                 use the tenant id"
                .to_owned(),
            50196 | 90055 => {
                "Entra ID is throttling this client: too many requests; slow down".to_owned()
            }
            _ => continue,
        };
        return text;
    }
    match kind {
        ErrorKind::Throttled => "the token service is throttling requests (HTTP 429): wait and \
             try again, and request tokens less often"
            .to_owned(),
        ErrorKind::ServiceUnavailable => {
            format!("the token service had a transient problem (HTTP {status}): try again later")
        }
        _ if (300..400).contains(&status) => format!(
            "the token endpoint answered with a redirect (HTTP {status}): check the authority URL \
             (e.g. https://login.microsoftonline.com); a proxy or captive portal may be in the way"
        ),
        // Entra's own refusals carry AADSTS codes; a bare 404 means a wrong URL.
        _ if status == 404 && codes.is_empty() && !mi => format!(
            "nothing answers at the token endpoint for tenant {tenant} (HTTP 404): check the \
             authority URL (e.g. https://login.microsoftonline.com)"
        ),
        _ if mi => format!(
            "the managed identity endpoint refused the request for {scope:?}: check that a \
             managed identity is assigned to this resource (and the client id, for a \
             user-assigned identity), and that the resource URI is right"
        ),
        _ => format!(
            "Entra ID refused the token request for app {client_id} in tenant {tenant}{}",
            details
                .error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ),
    }
}

/// Remove every occurrence of the given sensitive values from a text from the network.
pub(crate) fn redact(text: &str, sensitive: &[&str]) -> String {
    let mut out = text.to_owned();
    for value in sensitive.iter().filter(|v| v.len() >= 4) {
        out = out.replace(value, "[REDACTED]");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(credential: CredentialKind) -> RequestFacts {
        RequestFacts {
            credential,
            tenant: "contoso.onmicrosoft.com".into(),
            client_id: "11111111-2222-3333-4444-555555555555".into(),
            scope: "https://graph.microsoft.com/.default".into(),
            assertion_claims: Some(AssertionClaims {
                issuer: Some("https://token.actions.githubusercontent.com".into()),
                subject: Some("repo:org/repo:ref:refs/heads/main".into()),
                audience: Some("api://AzureADTokenExchange".into()),
            }),
        }
    }

    fn refusal(status: u16, error: &str, codes: &[u32]) -> Error {
        let details = ServiceDetails {
            error: Some(error.into()),
            codes: codes.to_vec(),
            ..ServiceDetails::default()
        };
        service_error(status, details, None, &facts(CredentialKind::Secret))
    }

    #[test]
    fn retryable_and_permanent_classes() {
        let retryable: &[(u16, &str, &[u32])] = &[
            (429, "", &[]),
            (500, "", &[]),
            (503, "", &[]),
            (400, "temporarily_unavailable", &[]),
            (400, "invalid_request", &[50196]),
            (400, "invalid_request", &[90055]),
            (400, "invalid_request", &[50033]),
            (400, "invalid_request", &[90006]),
            (400, "invalid_request", &[90024]),
            (400, "invalid_request", &[90033]),
            (400, "invalid_client", &[70021]),
        ];
        for (status, error, codes) in retryable {
            let err = refusal(*status, error, codes);
            assert!(err.is_retryable(), "{status} {error} {codes:?}: {err}");
        }
        let permanent: &[u32] = &[
            7000215, 7000222, 7000218, 700016, 90002, 70011, 700022, 700023, 500011, 700027,
            700024, 700211, 700212, 700213, 9001023,
        ];
        for code in permanent {
            let err = refusal(400, "invalid_client", &[*code]);
            assert!(!err.is_retryable(), "{code}: {err}");
            assert_eq!(err.kind(), ErrorKind::Rejected, "{code}");
            assert_eq!(err.aadsts_codes(), &[*code]);
        }
        assert_eq!(refusal(429, "", &[]).kind(), ErrorKind::Throttled);
        assert_eq!(refusal(400, "x", &[50196]).kind(), ErrorKind::Throttled);
        assert_eq!(refusal(502, "", &[]).kind(), ErrorKind::ServiceUnavailable);
    }

    #[test]
    fn messages_say_what_to_do() {
        let cases: &[(u32, &str)] = &[
            (7000215, "use the secret's Value, not its Secret ID"),
            (7000222, "create a new client secret"),
            (700016, "check the client id and the tenant id"),
            (90002, "tenant contoso.onmicrosoft.com was not found"),
            (70011, "<resource>/.default"),
            (700027, "certificate is not registered"),
            (700213, "\"repo:org/repo:ref:refs/heads/main\""),
            (700211, "https://token.actions.githubusercontent.com"),
            (9001023, "use the tenant id"),
        ];
        for (code, expected) in cases {
            let text = refusal(400, "invalid_client", &[*code]).to_string();
            assert!(
                text.contains(expected),
                "AADSTS{code}: {text:?} lacks {expected:?}"
            );
            assert!(text.contains(&format!("AADSTS{code}")), "{text}");
        }
    }

    #[test]
    fn imds_not_ready_is_retryable_but_app_service_404_is_not() {
        for status in [404, 410] {
            let err = service_error(
                status,
                ServiceDetails::default(),
                None,
                &facts(CredentialKind::Imds),
            );
            assert!(err.is_retryable(), "IMDS {status}: {err}");
        }
        let err = service_error(
            404,
            ServiceDetails::default(),
            None,
            &facts(CredentialKind::AppService),
        );
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().contains("managed identity"), "{err}");
    }

    #[test]
    fn wrong_authority_urls_are_named() {
        let facts = facts(CredentialKind::Secret);
        let err = service_error(404, ServiceDetails::default(), None, &facts);
        assert!(err.to_string().contains("check the authority URL"), "{err}");
        assert!(!err.is_retryable());
        let err = service_error(302, ServiceDetails::default(), None, &facts);
        assert!(err.to_string().contains("redirect"), "{err}");
    }

    #[test]
    fn certificate_refusal_is_not_called_a_wrong_secret() {
        let details = ServiceDetails {
            error: Some("invalid_client".into()),
            codes: vec![7000215],
            ..ServiceDetails::default()
        };
        let err = service_error(400, details, None, &facts(CredentialKind::Certificate));
        assert!(err.to_string().contains("client certificate"), "{err}");
    }

    #[test]
    fn display_carries_ids_for_support() {
        let details = ServiceDetails {
            error: Some("invalid_client".into()),
            codes: vec![7000215],
            description: Some("AADSTS7000215: Invalid client secret provided.".into()),
            trace_id: Some("trace-1".into()),
            correlation_id: Some("corr-1".into()),
        };
        let err = service_error(401, details, None, &facts(CredentialKind::Secret));
        let text = err.to_string();
        for part in [
            "HTTP 401",
            "invalid_client",
            "trace id trace-1",
            "correlation id corr-1",
        ] {
            assert!(text.contains(part), "{text} lacks {part}");
        }
        assert_eq!(err.http_status(), Some(401));
        assert_eq!(err.trace_id(), Some("trace-1"));
        assert_eq!(err.correlation_id(), Some("corr-1"));
    }

    #[test]
    fn redact_removes_sensitive_values() {
        assert_eq!(
            redact("secret s3cr3t-value echoed", &["s3cr3t-value"]),
            "secret [REDACTED] echoed"
        );
    }
}
