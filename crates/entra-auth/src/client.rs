//! The HTTP side: one token acquisition, with timeouts and retries, for each credential kind.
//!
//! `TokenClient` always asks the service; caching and sharing requests is `TokenCache`'s job.
//! Requests: the client-credentials POST to the authority's token endpoint (secret,
//! certificate assertion or federated assertion), the GitHub Actions OIDC endpoint for a
//! federated assertion, and the managed identity endpoints (IMDS, App Service, Azure Arc).
//!
//! Two connection pools: one for the authority and the GitHub OIDC endpoint, which honours the
//! proxy variables (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`...), and one for the managed identity
//! endpoints, which never uses a proxy: they are local to the host (IMDS's link-local address,
//! App Service's and Arc's loopback ones), and a proxy would either fail to reach them or see the
//! identity header and Arc key.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use time::OffsetDateTime;
use tracing::{debug, info};

use crate::credential::{
    AppCredential, Credential, FederatedTokenSource, MAX_ARC_KEY_FILE, MAX_CREDENTIAL_FILE,
    ManagedIdentity, check_github_request_url, file_too_large,
};
use crate::error::{AssertionClaims, CredentialKind, Error, ErrorKind, RequestFacts, redact};
use crate::input::Scope;
use crate::retry::{RetryPolicy, retry_after};
use crate::token::{AccessToken, parse_response};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The `api-version` sent to the Azure Arc agent (MSAL.NET, Java and Node send it).
const ARC_API_VERSION: &str = "2019-11-01";

/// The most of an answer's body this crate reads from any server: token answers are a few KiB,
/// so 1 MiB is generous. A longer body is refused as soon as it passes the cap (or at once when
/// its `Content-Length` announces more), never held whole.
const MAX_BODY: usize = 1 << 20;

/// Which server an answer came from, for the messages about it.
#[derive(Debug, Clone, Copy)]
enum Server {
    Token,
    Imds,
    AppService,
    AzureArc,
    GithubOidc,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Token => "the token endpoint",
            Server::Imds => "the managed identity endpoint (IMDS)",
            Server::AppService => "the App Service managed identity endpoint",
            Server::AzureArc => "the Azure Arc managed identity endpoint",
            Server::GithubOidc => "the GitHub Actions OIDC endpoint",
        }
    }
}

/// How the client talks HTTP.
#[derive(Clone)]
pub struct ClientOptions {
    /// Timeout of every single request (connect to last body byte). Default 30 s.
    pub request_timeout: Duration,
    /// Retries of throttled, transient and network failures.
    pub retry: RetryPolicy,
    /// `User-Agent` of every request.
    pub user_agent: String,
    /// Extra trusted root certificates in PEM (private CAs, test servers), added to the
    /// platform's roots.
    pub extra_root_certificates: Vec<Vec<u8>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            user_agent: format!("entra-auth/{}", env!("CARGO_PKG_VERSION")),
            extra_root_certificates: Vec::new(),
        }
    }
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
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

/// Obtains access tokens from Entra ID or a managed identity endpoint; no caching.
///
/// Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct TokenClient {
    /// The authority and the GitHub OIDC endpoint: honours the proxy variables.
    http: reqwest::Client,
    /// The managed identity endpoints: never through a proxy.
    local: reqwest::Client,
    options: ClientOptions,
}

impl fmt::Debug for TokenClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenClient")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl TokenClient {
    /// A client with its own connection pool.
    pub fn new(options: ClientOptions) -> Result<Self, Error> {
        // The two pools differ only in their proxy rule.
        Ok(Self {
            http: build_http(&options, true)?,
            local: build_http(&options, false)?,
            options,
        })
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Ask for a new token for `scope`, retrying transient failures as the retry policy says.
    pub async fn acquire(&self, app: &AppCredential, scope: &Scope) -> Result<AccessToken, Error> {
        let mut facts = RequestFacts {
            credential: CredentialKind::Secret,
            tenant: app.tenant.to_string(),
            client_id: app.client_id.to_string(),
            scope: scope.to_string(),
            assertion_claims: None,
        };
        let result = match &app.credential {
            Credential::ClientSecret(secret) => {
                self.token_request(app, scope, &facts, || {
                    Ok(vec![("client_secret", secret.clone())])
                })
                .await
            }
            Credential::Certificate(cert) => {
                facts.credential = CredentialKind::Certificate;
                let audience = app.authority.token_endpoint(&app.tenant);
                self.token_request(app, scope, &facts, || {
                    // A fresh assertion (new jti, new time window) for every attempt.
                    let assertion = cert
                        .assertion(audience.as_str(), app.client_id.as_str())
                        .map_err(|e| {
                            Error::new(
                                ErrorKind::Config,
                                "cannot sign the client assertion with the certificate's key",
                            )
                            .with_source(e)
                        })?;
                    Ok(assertion_fields(assertion))
                })
                .await
            }
            Credential::Federated(source) => {
                facts.credential = CredentialKind::Federated;
                let assertion = self.federated_assertion(app, source, &facts).await?;
                facts.assertion_claims = Some(claims_of(&assertion));
                self.token_request(app, scope, &facts, || {
                    Ok(assertion_fields(assertion.clone()))
                })
                .await
            }
            Credential::ManagedIdentity(identity) => {
                facts.credential = match identity {
                    ManagedIdentity::Imds { .. } => CredentialKind::Imds,
                    ManagedIdentity::AppService { .. } => CredentialKind::AppService,
                    ManagedIdentity::AzureArc { .. } => CredentialKind::AzureArc,
                };
                // Managed identity endpoints take neither tenant nor app id.
                facts.tenant = "(managed identity)".into();
                facts.client_id = identity
                    .client_id()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| "(system-assigned)".into());
                self.managed_identity(identity, scope, &facts).await
            }
        };
        match &result {
            Ok(token) => info!(
                tenant = %facts.tenant, client_id = %facts.client_id, scope = %scope,
                credential = %facts.credential.as_str(), expires_on = %token.expires_at(),
                "access token acquired"
            ),
            // The error goes back to the caller, who reports it once; logging it here too
            // would print every failure twice.
            Err(err) => debug!(
                tenant = %facts.tenant, client_id = %facts.client_id, scope = %scope,
                credential = %facts.credential.as_str(), error = %err, "access token not acquired"
            ),
        }
        result
    }

    /// The client-credentials POST, with `credential_fields()` (called for every attempt)
    /// added to the form.
    async fn token_request(
        &self,
        app: &AppCredential,
        scope: &Scope,
        facts: &RequestFacts,
        credential_fields: impl Fn() -> Result<Vec<(&'static str, SecretString)>, Error>,
    ) -> Result<AccessToken, Error> {
        let url = app.authority.token_endpoint(&app.tenant);
        self.with_retries(facts, || {
            let fields = credential_fields();
            let url = url.clone();
            async move {
                let fields = fields?;
                let mut form: Vec<(&str, &str)> = vec![
                    ("grant_type", "client_credentials"),
                    ("client_id", facts.client_id.as_str()),
                    ("scope", scope.as_str()),
                ];
                form.extend(fields.iter().map(|(k, v)| (*k, v.expose_secret())));
                let sensitive: Vec<&str> = fields.iter().map(|(_, v)| v.expose_secret()).collect();
                let requested_at = OffsetDateTime::now_utc();
                let request = self.http.post(url).form(&form);
                self.send(request, Server::Token, requested_at, facts, &sensitive)
                    .await
            }
        })
        .await
    }

    async fn managed_identity(
        &self,
        identity: &ManagedIdentity,
        scope: &Scope,
        facts: &RequestFacts,
    ) -> Result<AccessToken, Error> {
        if let ManagedIdentity::AzureArc { endpoint, key_dir } = identity {
            return self
                .with_retries(facts, || self.arc_attempt(endpoint, key_dir, scope, facts))
                .await;
        }
        self.with_retries(facts, || async {
            let mut query = vec![("resource", scope.resource())];
            if let Some(id) = identity.client_id() {
                query.push(("client_id", id.as_str()));
            }
            let (request, server, sensitive) = match identity {
                ManagedIdentity::Imds { endpoint, .. } => {
                    query.push(("api-version", "2018-02-01"));
                    let request = self
                        .local
                        .get(endpoint.clone())
                        .query(&query)
                        .header("Metadata", "true");
                    (request, Server::Imds, None)
                }
                ManagedIdentity::AppService {
                    endpoint, header, ..
                } => {
                    query.push(("api-version", "2019-08-01"));
                    let request = self.local.get(endpoint.clone()).query(&query).header(
                        "X-IDENTITY-HEADER",
                        sensitive_header(header.expose_secret())?,
                    );
                    (request, Server::AppService, Some(header.expose_secret()))
                }
                ManagedIdentity::AzureArc { .. } => unreachable!("handled above"),
            };
            let requested_at = OffsetDateTime::now_utc();
            let sensitive: Vec<&str> = sensitive.into_iter().collect();
            self.send(request, server, requested_at, facts, &sensitive)
                .await
        })
        .await
    }

    /// One Azure Arc acquisition: the request, the agent's 401 challenge naming a key file in
    /// `key_dir`, and the request again with `Authorization: Basic <key>`.
    async fn arc_attempt(
        &self,
        endpoint: &url::Url,
        key_dir: &Path,
        scope: &Scope,
        facts: &RequestFacts,
    ) -> Result<AccessToken, Error> {
        let query = [
            ("api-version", ARC_API_VERSION),
            ("resource", scope.resource()),
        ];
        let request = || {
            self.local
                .get(endpoint.clone())
                .query(&query)
                .header("Metadata", "true")
        };
        let requested_at = OffsetDateTime::now_utc();
        let response = request().send().await.map_err(|e| self.network_error(&e))?;
        if response.status() != reqwest::StatusCode::UNAUTHORIZED {
            // No challenge: an error (or, from a lenient agent, a token) to read as it is.
            return self
                .parse_answer(response, Server::AzureArc, requested_at, facts, &[])
                .await;
        }
        let origin = origin(response.url());
        let realm = response
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|value| value.to_str().ok())
            .and_then(basic_realm)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidResponse,
                    format!(
                        "the Azure Arc managed identity endpoint {origin} answered HTTP 401                          without a `WWW-Authenticate: Basic realm=<key file>` challenge: check                          that IDENTITY_ENDPOINT points at the Azure Connected Machine agent"
                    ),
                )
                .with_status(401)
            })?;
        drop(response);
        let key = read_arc_key(key_dir, &realm, &origin).await?;
        let authorization = sensitive_header(&format!("Basic {}", key.expose_secret()))?;
        let requested_at = OffsetDateTime::now_utc();
        let response = request()
            .header(reqwest::header::AUTHORIZATION, authorization)
            .send()
            .await
            .map_err(|e| self.network_error(&e))?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            return Err(Error::new(
                ErrorKind::Rejected,
                format!(
                    "the Azure Arc managed identity endpoint {origin} refused the key of its own                      challenge ({}): check that this process runs as a user in the agent's                      himds group and that the agent is healthy (azcmagent show)",
                    realm.display()
                ),
            )
            .with_status(401));
        }
        self.parse_answer(
            response,
            Server::AzureArc,
            requested_at,
            facts,
            &[key.expose_secret()],
        )
        .await
    }

    /// Send one request and parse its answer as a token.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        server: Server,
        requested_at: OffsetDateTime,
        facts: &RequestFacts,
        sensitive: &[&str],
    ) -> Result<AccessToken, Error> {
        let response = request.send().await.map_err(|e| self.network_error(&e))?;
        self.parse_answer(response, server, requested_at, facts, sensitive)
            .await
    }

    /// Read `response` (bounded) and parse it as a token answer.
    async fn parse_answer(
        &self,
        response: reqwest::Response,
        server: Server,
        requested_at: OffsetDateTime,
        facts: &RequestFacts,
        sensitive: &[&str],
    ) -> Result<AccessToken, Error> {
        let status = response.status().as_u16();
        let wait = retry_after(response.headers());
        let body = self.read_body(response, server).await?;
        debug!(
            tenant = %facts.tenant, client_id = %facts.client_id, scope = %facts.scope,
            status, "token endpoint answered"
        );
        parse_response(status, &body, requested_at, wait, facts, sensitive)
    }

    /// The external token for workload identity federation, read fresh on every call.
    async fn federated_assertion(
        &self,
        app: &AppCredential,
        source: &FederatedTokenSource,
        facts: &RequestFacts,
    ) -> Result<SecretString, Error> {
        let source_error = |message: String| Error::new(ErrorKind::CredentialSource, message);
        let assertion = match source {
            FederatedTokenSource::File(path) => {
                let text = read_token_file(path).await.map_err(|e| {
                    source_error(format!(
                        "cannot read the federated token file {}: {e}; check that the service \
                         account token is projected there (AZURE_FEDERATED_TOKEN_FILE)",
                        path.display()
                    ))
                    .with_source(e)
                })?;
                SecretString::from(text.trim().to_owned())
            }
            FederatedTokenSource::Env(name) => {
                let text = std::env::var(name).map_err(|_| {
                    source_error(format!(
                        "environment variable {name} holding the federated token is not set \
                         (or not UTF-8)"
                    ))
                })?;
                SecretString::from(text.trim().to_owned())
            }
            FederatedTokenSource::GitHubActions {
                request_url,
                request_token,
            } => {
                self.github_oidc_token(
                    request_url,
                    request_token,
                    app.authority.federated_audience(),
                    facts,
                )
                .await?
            }
        };
        if assertion.expose_secret().is_empty() {
            return Err(source_error(format!(
                "the federated token from {} is empty",
                describe_source(source)
            )));
        }
        if assertion.expose_secret().split('.').count() != 3 {
            return Err(source_error(format!(
                "the federated token from {} is not a JWT (header.payload.signature)",
                describe_source(source)
            )));
        }
        Ok(assertion)
    }

    /// `GET {request_url}&audience=...` with `Authorization: bearer {request_token}`.
    async fn github_oidc_token(
        &self,
        request_url: &url::Url,
        request_token: &SecretString,
        audience: &str,
        facts: &RequestFacts,
    ) -> Result<SecretString, Error> {
        check_github_request_url(request_url)?;
        let mut url = request_url.clone();
        url.query_pairs_mut().append_pair("audience", audience);
        self.with_retries(facts, || {
            let url = url.clone();
            async move {
                let response = self
                    .http
                    .get(url)
                    .header(
                        reqwest::header::AUTHORIZATION,
                        format!("bearer {}", request_token.expose_secret()),
                    )
                    .header(reqwest::header::ACCEPT, "application/json")
                    .send()
                    .await
                    .map_err(|e| self.network_error(&e))?;
                let status = response.status().as_u16();
                let wait = retry_after(response.headers());
                let body = self.read_body(response, Server::GithubOidc).await?;
                debug!(status, "GitHub Actions OIDC endpoint answered");
                if !(200..300).contains(&status) {
                    let transient = status == 429 || status == 408 || status >= 500;
                    let message = if transient {
                        format!("the GitHub Actions OIDC endpoint is unavailable (HTTP {status}): try again later")
                    } else {
                        format!(
                            "the GitHub Actions OIDC endpoint refused the token request (HTTP \
                             {status}): the workflow needs `permissions: id-token: write`, and \
                             ACTIONS_ID_TOKEN_REQUEST_TOKEN must belong to this job"
                        )
                    };
                    return Err(Error::new(ErrorKind::CredentialSource, message)
                        .with_status(status)
                        .with_retryable(transient)
                        .with_retry_after(wait));
                }
                let value = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("value").and_then(Value::as_str).map(str::to_owned))
                    .ok_or_else(|| {
                        Error::new(
                            ErrorKind::CredentialSource,
                            format!(
                                "the GitHub Actions OIDC endpoint answered without a \"value\" \
                                 string ({} bytes)",
                                body.len()
                            ),
                        )
                        .with_status(status)
                    })?;
                Ok(SecretString::from(value))
            }
        })
        .await
    }

    /// Run `attempt` until it succeeds, fails for good, or the retry budget is spent.
    async fn with_retries<T, F, Fut>(
        &self,
        facts: &RequestFacts,
        mut attempt: F,
    ) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let policy = &self.options.retry;
        let start = tokio::time::Instant::now();
        let mut n = 0;
        loop {
            n += 1;
            let err = match attempt().await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            if !err.is_retryable() || n >= policy.max_attempts {
                return Err(err.with_attempts(n));
            }
            let remaining = policy.max_elapsed.saturating_sub(start.elapsed());
            let wait = match err.retry_after() {
                Some(asked) if asked > remaining => {
                    let note = format!(
                        "; the service asked to wait {} s, more than the {} s left of the \
                         retry budget, so no retry was made",
                        asked.as_secs_f64().ceil(),
                        remaining.as_secs()
                    );
                    return Err(err.with_attempts(n).append_message(&note));
                }
                Some(asked) => asked,
                None if remaining.is_zero() => return Err(err.with_attempts(n)),
                None => policy.backoff(n).min(remaining),
            };
            debug!(
                tenant = %facts.tenant, client_id = %facts.client_id, scope = %facts.scope,
                attempt = n, wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                status = ?err.http_status(), error = %err, "retrying token request"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// The body of `response`, read chunk by chunk and refused once it passes [`MAX_BODY`]
    /// (at once when `Content-Length` announces more). The request timeout covers this read
    /// too, so a server that drips its body is cut off like one that does not answer.
    async fn read_body(
        &self,
        mut response: reqwest::Response,
        server: Server,
    ) -> Result<Vec<u8>, Error> {
        let status = response.status().as_u16();
        let origin = origin(response.url());
        let too_large = || {
            Error::new(
                ErrorKind::InvalidResponse,
                format!(
                    "{} {origin} answered HTTP {status} with a body of more than 1 MiB, so it \
                     was not read further: no answer of that service is this large; check that \
                     the URL points at the right service and not at a proxy or another server",
                    server.name()
                ),
            )
            .with_status(status)
        };
        read_capped(&mut response).await.map_err(|e| match e {
            BodyError::TooLarge => too_large(),
            BodyError::Broken(e) => {
                let message = if e.is_timeout() {
                    format!(
                        "{} {origin} did not finish its answer within {} s (its body came too \
                         slowly): check network access to it, or raise the request timeout",
                        server.name(),
                        self.options.request_timeout.as_secs_f64()
                    )
                } else {
                    format!(
                        "the answer of {} {origin} broke off: {}; try again",
                        server.name(),
                        causes(&e)
                    )
                };
                Error::new(ErrorKind::Network, message).with_status(status)
            }
        })
    }

    fn network_error(&self, err: &reqwest::Error) -> Error {
        let message = if err.is_timeout() {
            format!(
                "no answer from {} within {} s: check network access to it, or raise the request timeout",
                endpoint_of(err),
                self.options.request_timeout.as_secs_f64()
            )
        } else {
            format!(
                "cannot reach {}: {}; check the URL, DNS, proxy and firewall",
                endpoint_of(err),
                causes(err)
            )
        };
        Error::new(ErrorKind::Network, message)
    }
}

/// Checks that each file of `options.extra_root_certificates` holds PEM certificates (the
/// client's TLS reads them itself: `platform_tls`); the error names the file by its number.
pub(crate) fn check_extra_roots(options: &ClientOptions) -> Result<(), Error> {
    for (i, pem) in options.extra_root_certificates.iter().enumerate() {
        let not_pem = || {
            Error::new(
                ErrorKind::Config,
                format!(
                    "extra root certificate #{} holds no PEM certificate: give CA \
                     certificates in PEM (-----BEGIN CERTIFICATE-----)",
                    i + 1
                ),
            )
        };
        let certs =
            reqwest::Certificate::from_pem_bundle(pem).map_err(|e| not_pem().with_source(e))?;
        if certs.is_empty() {
            return Err(not_pem());
        }
    }
    Ok(())
}

/// A connection pool as every client of this crate has one: rustls, `options`' timeout for a
/// whole request (connect to last body byte) and for connecting, its `User-Agent`, no redirect
/// ever followed, `options`' extra roots trusted beside the platform's (whose certificates are
/// read at the first TLS handshake: `platform_tls`); `proxied` says whether the proxy variables
/// apply.
pub(crate) fn build_http(options: &ClientOptions, proxied: bool) -> Result<reqwest::Client, Error> {
    check_extra_roots(options)?;
    let mut builder = reqwest::Client::builder()
        .timeout(options.request_timeout)
        .connect_timeout(options.request_timeout)
        .user_agent(options.user_agent.clone())
        .redirect(reqwest::redirect::Policy::none());
    if !proxied {
        builder = builder.no_proxy();
    }
    builder = platform_tls::platform_roots(builder, &options.extra_root_certificates)
        .map_err(|message| Error::new(ErrorKind::Config, message))?;
    builder.build().map_err(|e| {
        Error::new(
            ErrorKind::Config,
            format!("cannot set up the HTTPS client: {}", causes(&e)),
        )
        .with_source(e)
    })
}

/// Why [`read_capped`] stopped reading.
pub(crate) enum BodyError {
    /// The body passed [`MAX_BODY`] (or its `Content-Length` announced more).
    TooLarge,
    /// The body broke off or came too slowly for the request timeout.
    Broken(reqwest::Error),
}

/// The body of `response`, read chunk by chunk and refused once it passes [`MAX_BODY`] (at once
/// when `Content-Length` announces more), never held whole. The client's request timeout covers
/// this read too.
pub(crate) async fn read_capped(response: &mut reqwest::Response) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|len| len > MAX_BODY as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Broken)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The federated token file as text, refused past [`MAX_CREDENTIAL_FILE`] without reading
/// further (a projected token is about a KiB).
async fn read_token_file(path: &std::path::Path) -> std::io::Result<String> {
    use tokio::io::AsyncReadExt as _;
    let mut bytes = Vec::new();
    tokio::fs::File::open(path)
        .await?
        .take(MAX_CREDENTIAL_FILE + 1)
        .read_to_end(&mut bytes)
        .await?;
    if bytes.len() as u64 > MAX_CREDENTIAL_FILE {
        return Err(file_too_large());
    }
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "it is not UTF-8 text"))
}

/// A header value marked sensitive (left out of any debug output of the HTTP stack).
fn sensitive_header(value: &str) -> Result<reqwest::header::HeaderValue, Error> {
    let mut value = reqwest::header::HeaderValue::from_str(value).map_err(|_| {
        Error::new(
            ErrorKind::Config,
            "a managed identity secret (IDENTITY_HEADER or the Arc key) holds characters an \
             HTTP header cannot carry",
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// The path of `Basic realm=<path>` (quotes allowed), the Azure Arc agent's challenge.
fn basic_realm(challenge: &str) -> Option<PathBuf> {
    let (scheme, rest) = challenge.trim().split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let (name, value) = rest.trim().split_once('=')?;
    if !name.trim().eq_ignore_ascii_case("realm") {
        return None;
    }
    let value = value.trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    (!value.is_empty()).then(|| PathBuf::from(value))
}

/// Why the key file a challenge names may not be read, if it may not: it must sit directly in
/// `key_dir` (no `..`), be named `*.key`, be a regular file (no symlink, FIFO or device) and
/// hold at most [`MAX_ARC_KEY_FILE`] bytes, as azure-identity and MSAL require.
fn arc_key_refusal(key_dir: &Path, path: &Path) -> Option<String> {
    use std::path::Component;
    let plain = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !plain || path.parent() != Some(key_dir) {
        return Some(format!(
            "is not in the agent's token directory {}",
            key_dir.display()
        ));
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if name.len() <= ".key".len() || !name.ends_with(".key") {
        return Some("is not named *.key".into());
    }
    None
}

/// Checks the file the Arc agent's challenge named and reads its key (see [`arc_key_refusal`]).
async fn read_arc_key(key_dir: &Path, path: &Path, origin: &str) -> Result<SecretString, Error> {
    let refused = |why: String| {
        Error::new(
            ErrorKind::CredentialSource,
            format!(
                "the Azure Arc managed identity endpoint {origin} challenged with key file {}, \
                 which {why}, so it was not read: an Arc agent writes its key files into its \
                 token directory; check that IDENTITY_ENDPOINT points at the Azure Connected \
                 Machine agent (and the token directory, if it is not {})",
                path.display(),
                crate::credential::ARC_TOKEN_DIR,
            ),
        )
        .with_status(401)
    };
    if let Some(why) = arc_key_refusal(key_dir, path) {
        return Err(refused(why));
    }
    let owned = path.to_owned();
    let read = tokio::task::spawn_blocking(move || read_arc_key_file(&owned))
        .await
        .map_err(|e| refused(format!("could not be read ({e})")))?;
    match read {
        Ok(key) => Ok(key),
        Err(ArcKeyError::Refused(why)) => Err(refused(why)),
        Err(ArcKeyError::Io(e)) => Err(refused(format!(
            "could not be read ({e}); the key files are readable by the agent's himds group only"
        ))
        .with_source(e)),
    }
}

enum ArcKeyError {
    Refused(String),
    Io(std::io::Error),
}

/// The key in `path`: a regular file (checked before opening, so a FIFO cannot block the
/// read, and again on the open file) of at most [`MAX_ARC_KEY_FILE`] bytes of text.
fn read_arc_key_file(path: &Path) -> Result<SecretString, ArcKeyError> {
    use std::io::Read as _;
    let too_large = || {
        ArcKeyError::Refused(format!(
            "is larger than {MAX_ARC_KEY_FILE} bytes, which no Arc key file is"
        ))
    };
    let before = std::fs::symlink_metadata(path).map_err(ArcKeyError::Io)?;
    if !before.file_type().is_file() {
        return Err(ArcKeyError::Refused("is not a regular file".into()));
    }
    if before.len() > MAX_ARC_KEY_FILE {
        return Err(too_large());
    }
    let file = std::fs::File::open(path).map_err(ArcKeyError::Io)?;
    let after = file.metadata().map_err(ArcKeyError::Io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        if (before.dev(), before.ino()) != (after.dev(), after.ino()) {
            return Err(ArcKeyError::Refused(
                "was replaced while it was being opened".into(),
            ));
        }
    }
    if !after.file_type().is_file() {
        return Err(ArcKeyError::Refused("is not a regular file".into()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_ARC_KEY_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(ArcKeyError::Io)?;
    if bytes.len() as u64 > MAX_ARC_KEY_FILE {
        return Err(too_large());
    }
    let text =
        String::from_utf8(bytes).map_err(|_| ArcKeyError::Refused("does not hold text".into()))?;
    let key = SecretString::from(text.trim().to_owned());
    if key.expose_secret().is_empty() {
        return Err(ArcKeyError::Refused("is empty".into()));
    }
    Ok(key)
}

fn assertion_fields(assertion: SecretString) -> Vec<(&'static str, SecretString)> {
    vec![
        ("client_assertion_type", SecretString::from(ASSERTION_TYPE)),
        ("client_assertion", assertion),
    ]
}

/// Scheme, host and port of the URL an error is about (paths and queries left out).
fn endpoint_of(err: &reqwest::Error) -> String {
    err.url()
        .map(origin)
        .unwrap_or_else(|| "the endpoint".into())
}

/// `scheme://host[:port]` of a URL: no user information, path or query.
pub(crate) fn origin(url: &url::Url) -> String {
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{}{port}", url.scheme(), url.host_str().unwrap_or(""))
}

/// The chain of causes of an error, innermost last, without URLs.
pub(crate) fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = err.source();
    while let Some(e) = current {
        parts.push(e.to_string());
        current = e.source();
    }
    if parts.is_empty() {
        parts.push(err.to_string());
    }
    parts.join(": ")
}

fn describe_source(source: &FederatedTokenSource) -> String {
    match source {
        FederatedTokenSource::File(path) => format!("file {}", path.display()),
        FederatedTokenSource::Env(name) => format!("environment variable {name}"),
        FederatedTokenSource::GitHubActions { .. } => "the GitHub Actions OIDC endpoint".into(),
    }
}

/// `iss`, `sub` and `aud` of an external token, read without verifying it: they are not
/// secret and tell a person which federated credential the app needs.
fn claims_of(assertion: &SecretString) -> AssertionClaims {
    let payload = assertion
        .expose_secret()
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok())
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
    let Some(payload) = payload else {
        return AssertionClaims::default();
    };
    let text = |key: &str| match payload.get(key) {
        Some(Value::String(s)) => Some(redact(s, &[assertion.expose_secret()])),
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        ),
        _ => None,
    };
    AssertionClaims {
        issuer: text("iss"),
        subject: text("sub"),
        audience: text("aud"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_read_from_an_unverified_jwt() {
        let payload = URL_SAFE_NO_PAD.encode(
            br#"{"iss":"https://token.actions.githubusercontent.com","sub":"repo:o/r:ref:refs/heads/main","aud":["api://AzureADTokenExchange"]}"#,
        );
        let jwt = SecretString::from(format!("e30.{payload}.sig"));
        let claims = claims_of(&jwt);
        assert_eq!(
            claims.subject.as_deref(),
            Some("repo:o/r:ref:refs/heads/main")
        );
        assert_eq!(
            claims.audience.as_deref(),
            Some("api://AzureADTokenExchange")
        );
        let none = claims_of(&SecretString::from("not-a-jwt"));
        assert!(none.subject.is_none());
    }

    #[test]
    fn options_debug_does_not_dump_certificates() {
        let options = ClientOptions {
            extra_root_certificates: vec![b"-----BEGIN CERTIFICATE-----".to_vec()],
            ..ClientOptions::default()
        };
        let debug = format!("{options:?}");
        assert!(debug.contains("1 PEM file(s)"), "{debug}");
        assert!(!debug.contains("BEGIN"), "{debug}");
    }

    #[test]
    fn bad_extra_root_is_a_config_error() {
        let options = ClientOptions {
            extra_root_certificates: vec![b"garbage".to_vec()],
            ..ClientOptions::default()
        };
        let err = TokenClient::new(options).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(
            err.to_string().contains("#1 holds no PEM certificate"),
            "{err}"
        );
    }
}
