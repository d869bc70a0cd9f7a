//! The ways an application proves who it is, and the signed assertion for certificates.
//!
//! Everything secret here (client secret, private key, GitHub request token, App Service
//! identity header; the Azure Arc key is read per request in `client.rs`) is held in a redacting type from the moment it is read, and `Debug`
//! prints only non-secret facts (paths, variable names, thumbprints).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde::Serialize;
use sha1::Digest as _;
use time::OffsetDateTime;
use url::Url;

use crate::input::{Authority, ClientId, ConfigError, TenantId};

/// Default IMDS token endpoint of Azure VMs, VM scale sets and AKS nodes.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// Lifetime of a certificate client assertion, as MSAL uses.
const ASSERTION_LIFETIME_SECS: i64 = 600;

/// How the application authenticates to Entra ID.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A client secret (the secret's Value, not its Secret ID).
    ClientSecret(SecretString),
    /// A certificate registered on the app: a signed JWT client assertion is sent.
    Certificate(CertificateCredential),
    /// Workload identity federation: an external OIDC token is sent as the assertion.
    Federated(FederatedTokenSource),
    /// An Azure managed identity: the token comes from the platform's identity endpoint,
    /// not from the authority. The tenant and client id of [`AppCredential`] are not used.
    ManagedIdentity(ManagedIdentity),
}

impl From<ManagedIdentity> for Credential {
    fn from(identity: ManagedIdentity) -> Self {
        Credential::ManagedIdentity(identity)
    }
}

/// The JWS algorithm of certificate assertions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum AssertionAlgorithm {
    /// RSASSA-PSS with SHA-256 and header `x5t#S256` (current Entra ID docs and MSAL).
    #[default]
    Ps256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 and header `x5t` (SHA-1 thumbprint; older docs and SDKs).
    Rs256,
}

/// An X.509 certificate and its RSA private key, ready to sign client assertions.
#[derive(Clone)]
pub struct CertificateCredential {
    key: Arc<EncodingKey>,
    algorithm: AssertionAlgorithm,
    /// base64url SHA-256 of the DER certificate.
    x5t_s256: String,
    /// base64url SHA-1 of the DER certificate.
    x5t: String,
}

impl CertificateCredential {
    /// From PEM text: the certificate (first `CERTIFICATE` block of `cert_pem`) and an RSA
    /// private key (`PRIVATE KEY` or `RSA PRIVATE KEY` block of `key_pem`). The same PEM text,
    /// holding both, may be given twice.
    pub fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        algorithm: AssertionAlgorithm,
    ) -> Result<Self, ConfigError> {
        let der = certificate_der(cert_pem)?;
        let key = private_key(key_pem)?;
        let credential = Self {
            key: Arc::new(key),
            algorithm,
            x5t_s256: URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&der)),
            x5t: URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(&der)),
        };
        // Sign once now, so that a key jsonwebtoken cannot use is refused here, not per request.
        credential
            .assertion(
                "https://login.microsoftonline.com/check/oauth2/v2.0/token",
                "check",
            )
            .map_err(|e| {
                ConfigError::new(
                    "certificate private key",
                    None,
                    "cannot sign with this key",
                    "give an unencrypted RSA private key of at least 2048 bits in PEM",
                )
                .with_source(e)
            })?;
        Ok(credential)
    }

    /// From files: `key_path` may be the same file as `cert_path` when one PEM file holds both.
    pub fn from_files(
        cert_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
        algorithm: AssertionAlgorithm,
    ) -> Result<Self, ConfigError> {
        let cert_path = cert_path.as_ref();
        let key_path = key_path.as_ref();
        let read = |input: &'static str, path: &Path| {
            read_capped(path).map(SecretSlice::from).map_err(|e| {
                ConfigError::new(
                    input,
                    Some(&path.display().to_string()),
                    format!("cannot be read ({e})"),
                    "check the path and that this process may read the file",
                )
                .with_source(e)
            })
        };
        let cert = read("certificate file", cert_path)?;
        let key = read("private key file", key_path)?;
        Self::from_pem(cert.expose_secret(), key.expose_secret(), algorithm).map_err(|e| {
            let path = if e.input() == "certificate" {
                cert_path
            } else {
                key_path
            };
            ConfigError::new(
                if e.input() == "certificate" {
                    "certificate file"
                } else {
                    "private key file"
                },
                Some(&path.display().to_string()),
                e.problem(),
                e.fix(),
            )
            .with_source(e)
        })
    }

    /// The algorithm assertions are signed with.
    pub fn algorithm(&self) -> AssertionAlgorithm {
        self.algorithm
    }

    /// base64url SHA-256 thumbprint of the certificate (`x5t#S256`).
    pub fn thumbprint_sha256(&self) -> &str {
        &self.x5t_s256
    }

    /// base64url SHA-1 thumbprint of the certificate (`x5t`); Graph lists the same SHA-1 as a
    /// keyCredential's `customKeyIdentifier` (standard base64), see
    /// [`crate::graph::KeyCredential::is_of`].
    pub fn thumbprint_sha1(&self) -> &str {
        &self.x5t
    }

    /// A signed client assertion for `audience` (the token endpoint URL), valid for 600 s.
    pub(crate) fn assertion(
        &self,
        audience: &str,
        client_id: &str,
    ) -> Result<SecretString, jsonwebtoken::errors::Error> {
        let mut header = match self.algorithm {
            AssertionAlgorithm::Ps256 => {
                let mut h = Header::new(Algorithm::PS256);
                h.x5t_s256 = Some(self.x5t_s256.clone());
                h
            }
            AssertionAlgorithm::Rs256 => {
                let mut h = Header::new(Algorithm::RS256);
                h.x5t = Some(self.x5t.clone());
                h
            }
        };
        header.typ = Some("JWT".into());
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let claims = AssertionClaims {
            aud: audience,
            iss: client_id,
            sub: client_id,
            jti: uuid::Uuid::new_v4().to_string(),
            nbf: now,
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
        };
        jsonwebtoken::encode(&header, &claims, &self.key).map(SecretString::from)
    }
}

impl fmt::Debug for CertificateCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateCredential")
            .field("algorithm", &self.algorithm)
            .field("x5t#S256", &self.x5t_s256)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: i64,
    iat: i64,
    exp: i64,
}

fn certificate_der(cert_pem: &[u8]) -> Result<Vec<u8>, ConfigError> {
    let blocks = pem::parse_many(cert_pem).map_err(|e| {
        ConfigError::new(
            "certificate",
            None,
            "is not valid PEM",
            "give the certificate in PEM (-----BEGIN CERTIFICATE-----)",
        )
        .with_source(e)
    })?;
    blocks
        .into_iter()
        .find(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .ok_or_else(|| {
            ConfigError::new(
                "certificate",
                None,
                "contains no CERTIFICATE block",
                "give the certificate in PEM (-----BEGIN CERTIFICATE-----); a .pfx must be \
                 converted first (openssl pkcs12 -in cert.pfx -out cert.pem -nodes)",
            )
        })
}

fn private_key(key_pem: &[u8]) -> Result<EncodingKey, ConfigError> {
    const INPUT: &str = "private key";
    let blocks = pem::parse_many(key_pem).map_err(|e| {
        ConfigError::new(
            INPUT,
            None,
            "is not valid PEM",
            "give the RSA private key in PEM (-----BEGIN PRIVATE KEY-----)",
        )
        .with_source(e)
    })?;
    let tags: Vec<String> = blocks.iter().map(|b| b.tag().to_owned()).collect();
    let Some(block) = blocks
        .into_iter()
        .find(|b| matches!(b.tag(), "PRIVATE KEY" | "RSA PRIVATE KEY"))
    else {
        let fix = if tags.iter().any(|t| t == "ENCRYPTED PRIVATE KEY") {
            "the key is encrypted: decrypt it first (openssl pkey -in key.pem -out plain.pem)"
        } else if tags.iter().any(|t| t == "EC PRIVATE KEY") {
            "Entra ID certificate credentials use RSA keys: create an RSA certificate"
        } else {
            "give the RSA private key in PEM (-----BEGIN PRIVATE KEY----- or -----BEGIN RSA \
             PRIVATE KEY-----)"
        };
        return Err(ConfigError::new(
            INPUT,
            None,
            "contains no usable private key block",
            fix,
        ));
    };
    let single = SecretString::from(pem::encode(&block));
    EncodingKey::from_rsa_pem(single.expose_secret().as_bytes()).map_err(|e| {
        ConfigError::new(
            INPUT,
            None,
            "is not an RSA private key",
            "Entra ID certificate credentials use RSA keys (2048 bits or more)",
        )
        .with_source(e)
    })
}

/// The most of a credential file (certificate, key, federated token) this crate reads: such
/// files are a few KiB, so 1 MiB is generous; a larger one (or `/dev/zero`) is refused.
pub(crate) const MAX_CREDENTIAL_FILE: u64 = 1 << 20;

/// The error for a credential file past [`MAX_CREDENTIAL_FILE`].
pub(crate) fn file_too_large() -> std::io::Error {
    std::io::Error::other("it is larger than 1 MiB, which no credential file is")
}

/// The whole of `path`, refused past [`MAX_CREDENTIAL_FILE`] without reading further.
fn read_capped(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_CREDENTIAL_FILE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CREDENTIAL_FILE {
        return Err(file_too_large());
    }
    Ok(bytes)
}

/// Where the external OIDC token of workload identity federation comes from.
#[derive(Clone)]
pub enum FederatedTokenSource {
    /// A file holding the token, re-read on every acquisition (Kubernetes rotates it), e.g.
    /// `AZURE_FEDERATED_TOKEN_FILE`.
    File(PathBuf),
    /// The name of an environment variable holding the token, read on every acquisition.
    Env(String),
    /// GitHub Actions' OIDC endpoint (`ACTIONS_ID_TOKEN_REQUEST_URL` and `..._TOKEN`); the job
    /// needs `permissions: id-token: write`.
    GitHubActions {
        /// `ACTIONS_ID_TOKEN_REQUEST_URL`.
        request_url: Url,
        /// `ACTIONS_ID_TOKEN_REQUEST_TOKEN`.
        request_token: SecretString,
    },
}

impl FederatedTokenSource {
    /// `GitHubActions` from `ACTIONS_ID_TOKEN_REQUEST_URL` and `ACTIONS_ID_TOKEN_REQUEST_TOKEN`.
    pub fn github_actions_from_env() -> Result<Self, ConfigError> {
        const FIX: &str = "run inside a GitHub Actions job whose workflow grants \
                           `permissions: id-token: write`";
        let url = std::env::var("ACTIONS_ID_TOKEN_REQUEST_URL").map_err(|_| {
            ConfigError::new("ACTIONS_ID_TOKEN_REQUEST_URL", None, "is not set", FIX)
        })?;
        let token = std::env::var("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
            .map(SecretString::from)
            .map_err(|_| {
                ConfigError::new("ACTIONS_ID_TOKEN_REQUEST_TOKEN", None, "is not set", FIX)
            })?;
        if token.expose_secret().trim().is_empty() {
            return Err(ConfigError::new(
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
                None,
                "is empty",
                FIX,
            ));
        }
        let request_url = Url::parse(&url).map_err(|e| {
            ConfigError::new("ACTIONS_ID_TOKEN_REQUEST_URL", None, "is not a URL", FIX)
                .with_source(e)
        })?;
        check_github_request_url(&request_url)?;
        Ok(Self::GitHubActions {
            request_url,
            request_token: token,
        })
    }
}

/// The GitHub Actions request token is a bearer credential: it goes only over https, or plain
/// http to a loopback host (tests, local runners). Checked when the source is read from the
/// environment and again before every request, whoever built the source.
pub(crate) fn check_github_request_url(url: &Url) -> Result<(), ConfigError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if crate::input::is_loopback(url) => Ok(()),
        _ => Err(ConfigError::new(
            "ACTIONS_ID_TOKEN_REQUEST_URL",
            None,
            "is not an https URL (plain http is allowed only for 127.0.0.1, ::1 or localhost), \
             so the request token would be sent unprotected",
            "GitHub's request URL is https: check what set ACTIONS_ID_TOKEN_REQUEST_URL",
        )),
    }
}

impl fmt::Debug for FederatedTokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Env(name) => f.debug_tuple("Env").field(name).finish(),
            Self::GitHubActions { request_url, .. } => f
                .debug_struct("GitHubActions")
                .field("request_url", &redacted_url(request_url))
                .field("request_token", &"[REDACTED]")
                .finish(),
        }
    }
}

/// A URL without its query (GitHub's request URL carries no secret, but keep logs short).
fn redacted_url(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.to_string()
}

/// Where the Azure Arc agent writes the key files of its challenges on Linux (on Windows:
/// `%ProgramData%\AzureConnectedMachineAgent\Tokens`). azure-identity and MSAL read a key file
/// only from this directory.
pub const ARC_TOKEN_DIR: &str = "/var/opt/azcmagent/tokens";

/// The largest Arc key file read, as azure-identity and MSAL allow: 4096 bytes.
pub(crate) const MAX_ARC_KEY_FILE: u64 = 4096;

/// An Azure managed identity endpoint.
///
/// Every managed identity endpoint is local to the host (a link-local or loopback address), so
/// its requests never go through a proxy (`HTTP_PROXY` and the like are ignored for them).
#[derive(Clone)]
pub enum ManagedIdentity {
    /// The Instance Metadata Service of VMs, scale sets and AKS nodes.
    Imds {
        /// Usually [`IMDS_ENDPOINT`].
        endpoint: Url,
        /// A user-assigned identity's client id; `None` for the system-assigned identity.
        client_id: Option<ClientId>,
    },
    /// App Service, Functions and Container Apps (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`).
    AppService {
        /// `IDENTITY_ENDPOINT`.
        endpoint: Url,
        /// `IDENTITY_HEADER`, sent as `X-IDENTITY-HEADER`.
        header: SecretString,
        /// A user-assigned identity's client id; `None` for the system-assigned identity.
        client_id: Option<ClientId>,
    },
    /// Azure Arc-enabled servers (`IDENTITY_ENDPOINT` with `IMDS_ENDPOINT`): the agent answers
    /// the first request with a challenge naming a key file, whose content authorises the
    /// second. Only the system-assigned identity exists there.
    AzureArc {
        /// `IDENTITY_ENDPOINT`, usually `http://localhost:40342/metadata/identity/oauth2/token`.
        endpoint: Url,
        /// The only directory a challenge's key file may be in: [`ARC_TOKEN_DIR`] on a real
        /// machine.
        key_dir: PathBuf,
    },
}

/// The variables that select a managed identity host, for messages.
const MI_VARS: &str = "IDENTITY_ENDPOINT, IDENTITY_HEADER, IMDS_ENDPOINT, MSI_ENDPOINT";

impl ManagedIdentity {
    /// The host's managed identity, detected from the environment as the Azure SDKs do
    /// ([`ManagedIdentity::from_vars`]), with Arc key files taken from [`ARC_TOKEN_DIR`].
    pub fn from_env(client_id: Option<ClientId>) -> Result<Self, ConfigError> {
        Self::from_env_with_arc_dir(client_id, Path::new(ARC_TOKEN_DIR))
    }

    /// [`ManagedIdentity::from_env`] with another directory for Arc key files.
    pub fn from_env_with_arc_dir(
        client_id: Option<ClientId>,
        arc_token_dir: &Path,
    ) -> Result<Self, ConfigError> {
        Self::from_vars(|name| std::env::var(name).ok(), client_id, arc_token_dir)
    }

    /// The managed identity host that the variables `var(NAME)` describe, in the order
    /// MSAL and azure-identity test them (an empty value counts as unset):
    /// 1. `IDENTITY_ENDPOINT` + `IDENTITY_HEADER`: App Service / Functions / Container Apps
    ///    (with `IDENTITY_SERVER_THUMBPRINT` too: Service Fabric, refused as unsupported);
    /// 2. `MSI_ENDPOINT` alone: Cloud Shell (or App Service's retired 2017-09-01 variables),
    ///    refused as unsupported;
    /// 3. `IDENTITY_ENDPOINT` + `IMDS_ENDPOINT`: Azure Arc (system-assigned only: a
    ///    `client_id` is refused);
    /// 4. none of these: IMDS, at `AZURE_POD_IDENTITY_AUTHORITY_HOST` when that is set (as
    ///    MSAL does), else at [`IMDS_ENDPOINT`].
    ///
    /// Where MSAL falls back to IMDS when a host's variables are only partly set
    /// (`IDENTITY_ENDPOINT` alone, `IDENTITY_HEADER` alone, `IMDS_ENDPOINT` alone), this is
    /// refused, naming what is missing: such a host is misconfigured, and IMDS would at best
    /// answer for another identity. An endpoint that is not an http(s) URL is refused too.
    pub fn from_vars(
        var: impl Fn(&str) -> Option<String>,
        client_id: Option<ClientId>,
        arc_token_dir: &Path,
    ) -> Result<Self, ConfigError> {
        let get = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        let identity_endpoint = get("IDENTITY_ENDPOINT");
        let identity_header = get("IDENTITY_HEADER");
        let imds_endpoint = get("IMDS_ENDPOINT");
        let unsupported = |input: &'static str, host: &str, fix: &str| {
            Err(ConfigError::new(
                input,
                None,
                format!("is set, so this host is {host}, whose managed identity is not supported"),
                fix.to_owned(),
            ))
        };
        match (&identity_endpoint, &identity_header) {
            (Some(endpoint), Some(header)) => {
                if get("IDENTITY_SERVER_THUMBPRINT").is_some() {
                    return unsupported(
                        "IDENTITY_SERVER_THUMBPRINT",
                        "a Service Fabric cluster",
                        "use a client secret, certificate or federated credential instead",
                    );
                }
                return Ok(Self::AppService {
                    endpoint: endpoint_url("IDENTITY_ENDPOINT", endpoint)?,
                    header: SecretString::from(header.clone()),
                    client_id,
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "IDENTITY_HEADER",
                    None,
                    "is set but IDENTITY_ENDPOINT is not: the App Service / Container Apps \
                     managed identity needs both",
                    format!(
                        "check the host's managed identity settings (variables {MI_VARS}); \
                         both are set by the platform when an identity is assigned"
                    ),
                ));
            }
            _ => {}
        }
        if identity_endpoint.is_none() && get("MSI_ENDPOINT").is_some() {
            return unsupported(
                "MSI_ENDPOINT",
                "Azure Cloud Shell (or an App Service with only the retired 2017-09-01 \
                 variables)",
                "on App Service, IDENTITY_ENDPOINT and IDENTITY_HEADER are set when an identity \
                 is assigned; elsewhere use a client secret, certificate or federated credential",
            );
        }
        match (&identity_endpoint, &imds_endpoint) {
            (Some(endpoint), Some(_)) => {
                if let Some(id) = client_id {
                    return Err(ConfigError::new(
                        "client id",
                        Some(id.as_str()),
                        "names a user-assigned identity, but Azure Arc-enabled servers have only \
                         their system-assigned identity",
                        "leave the client id out on an Arc-enabled server",
                    ));
                }
                return Ok(Self::AzureArc {
                    endpoint: endpoint_url("IDENTITY_ENDPOINT", endpoint)?,
                    key_dir: arc_token_dir.to_owned(),
                });
            }
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "IDENTITY_ENDPOINT",
                    None,
                    "is set without IDENTITY_HEADER (App Service, Functions, Container Apps) or \
                     IMDS_ENDPOINT (Azure Arc), so which managed identity host this is cannot be \
                     told",
                    format!(
                        "set the variables the platform documents (on App Service both \
                         IDENTITY_ENDPOINT and IDENTITY_HEADER, on Arc IDENTITY_ENDPOINT and \
                         IMDS_ENDPOINT), or unset IDENTITY_ENDPOINT on a VM to use IMDS \
                         (variables read: {MI_VARS})"
                    ),
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "IMDS_ENDPOINT",
                    None,
                    "is set but IDENTITY_ENDPOINT is not: the Azure Arc managed identity needs \
                     both",
                    "check the Azure Connected Machine agent (azcmagent show); it sets both \
                     for services it manages, e.g. IDENTITY_ENDPOINT=http://localhost:40342/\
                     metadata/identity/oauth2/token and IMDS_ENDPOINT=http://localhost:40342",
                ));
            }
            (None, None) => {}
        }
        let endpoint = match get("AZURE_POD_IDENTITY_AUTHORITY_HOST") {
            Some(host) => {
                let mut url = endpoint_url("AZURE_POD_IDENTITY_AUTHORITY_HOST", &host)?;
                url.set_path("/metadata/identity/oauth2/token");
                url.set_query(None);
                url
            }
            None => Url::parse(IMDS_ENDPOINT).expect("the IMDS address is a URL"),
        };
        Ok(Self::Imds {
            endpoint,
            client_id,
        })
    }

    /// The user-assigned identity's client id, if any.
    pub fn client_id(&self) -> Option<&ClientId> {
        match self {
            Self::Imds { client_id, .. } | Self::AppService { client_id, .. } => client_id.as_ref(),
            Self::AzureArc { .. } => None,
        }
    }

    /// The endpoint tokens are asked from.
    pub fn endpoint(&self) -> &Url {
        match self {
            Self::Imds { endpoint, .. }
            | Self::AppService { endpoint, .. }
            | Self::AzureArc { endpoint, .. } => endpoint,
        }
    }
}

/// `value` of variable `input` as an http(s) URL; the value is not repeated (an endpoint may
/// carry a token in its query on some hosts).
fn endpoint_url(input: &'static str, value: &str) -> Result<Url, ConfigError> {
    match Url::parse(value.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(url),
        _ => Err(ConfigError::new(
            input,
            None,
            "is not an http(s) URL",
            "it is set by the platform: check what changed it",
        )),
    }
}

impl fmt::Debug for ManagedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Imds {
                endpoint,
                client_id,
            } => f
                .debug_struct("Imds")
                .field("endpoint", &endpoint.as_str())
                .field("client_id", client_id)
                .finish(),
            Self::AppService {
                endpoint,
                client_id,
                ..
            } => f
                .debug_struct("AppService")
                .field("endpoint", &endpoint.as_str())
                .field("header", &"[REDACTED]")
                .field("client_id", client_id)
                .finish(),
            Self::AzureArc { endpoint, key_dir } => f
                .debug_struct("AzureArc")
                .field("endpoint", &endpoint.as_str())
                .field("key_dir", key_dir)
                .finish(),
        }
    }
}

/// An application's identity: where to ask, which tenant and app, and how it proves itself.
///
/// For [`Credential::ManagedIdentity`] the token comes from the platform's identity endpoint:
/// `authority`, `tenant` and `client_id` are not sent (a user-assigned identity's client id
/// lives in [`ManagedIdentity`]). [`AppCredential::managed_identity`] fills them with the
/// nil GUID so that no one has to invent values.
#[derive(Debug, Clone)]
pub struct AppCredential {
    /// The Entra ID authority (cloud) to ask.
    pub authority: Authority,
    /// The tenant the app is registered in.
    pub tenant: TenantId,
    /// The app's (client) id.
    pub client_id: ClientId,
    /// How the app proves itself.
    pub credential: Credential,
}

impl AppCredential {
    /// An app authenticating with a managed identity; tenant and client id are placeholders
    /// (the nil GUID) because managed identity endpoints do not take them.
    pub fn managed_identity(authority: Authority, identity: ManagedIdentity) -> Self {
        let nil = uuid::Uuid::nil().hyphenated().to_string();
        Self {
            authority,
            tenant: nil.parse().expect("the nil GUID is a tenant id"),
            client_id: nil.parse().expect("the nil GUID is a client id"),
            credential: Credential::ManagedIdentity(identity),
        }
    }

    /// A non-reversible hash identifying this app and credential, for cache keys: the same
    /// inputs give the same value in every process. It is a SHA-256 over the authority,
    /// tenant, client id and credential material (the secret itself for a client secret, the
    /// certificate thumbprint, the federated source's path/variable/URL, the managed identity
    /// endpoint and client id), shortened to 32 hex digits; it never contains the secret.
    pub fn fingerprint(&self) -> String {
        let mut h = sha2::Sha256::new();
        let mut field = |label: &str, value: &[u8]| {
            h.update(label.as_bytes());
            h.update((value.len() as u64).to_be_bytes());
            h.update(value);
        };
        field("authority", self.authority.as_str().as_bytes());
        match &self.credential {
            Credential::ManagedIdentity(identity) => {
                let (kind, endpoint) = match identity {
                    ManagedIdentity::Imds { endpoint, .. } => ("imds", endpoint),
                    ManagedIdentity::AppService { endpoint, .. } => ("app-service", endpoint),
                    ManagedIdentity::AzureArc { endpoint, .. } => ("azure-arc", endpoint),
                };
                field("managed-identity", kind.as_bytes());
                field("endpoint", endpoint.as_str().as_bytes());
                let id = identity.client_id().map(ClientId::as_str).unwrap_or("");
                field("identity-client-id", id.as_bytes());
            }
            other => {
                field("tenant", self.tenant.as_str().as_bytes());
                field("client-id", self.client_id.as_str().as_bytes());
                match other {
                    Credential::ClientSecret(secret) => {
                        field("secret", secret.expose_secret().as_bytes());
                    }
                    Credential::Certificate(cert) => {
                        field("certificate", cert.x5t_s256.as_bytes());
                        field("algorithm", format!("{:?}", cert.algorithm).as_bytes());
                    }
                    Credential::Federated(FederatedTokenSource::File(path)) => {
                        field("federated-file", path.to_string_lossy().as_bytes());
                    }
                    Credential::Federated(FederatedTokenSource::Env(name)) => {
                        field("federated-env", name.as_bytes());
                    }
                    Credential::Federated(FederatedTokenSource::GitHubActions {
                        request_url,
                        ..
                    }) => {
                        field("federated-github", request_url.as_str().as_bytes());
                    }
                    Credential::ManagedIdentity(_) => unreachable!("handled above"),
                }
            }
        }
        let digest = h.finalize();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    /// A self-signed RSA certificate and key made at test time.
    pub(crate) fn test_certificate() -> (String, String, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)
            .expect("rcgen can make RSA keys with aws-lc-rs");
        let cert = rcgen::CertificateParams::new(vec!["app.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn app(credential: Credential) -> AppCredential {
        AppCredential {
            authority: Authority::public(),
            tenant: "contoso.onmicrosoft.com".parse().unwrap(),
            client_id: "11111111-2222-3333-4444-555555555555".parse().unwrap(),
            credential,
        }
    }

    #[test]
    fn ps256_assertion_has_the_required_header_and_claims() {
        let (cert_pem, key_pem, der) = test_certificate();
        let cred = CertificateCredential::from_pem(
            cert_pem.as_bytes(),
            key_pem.as_bytes(),
            AssertionAlgorithm::Ps256,
        )
        .unwrap();
        let aud = "https://login.microsoftonline.com/t/oauth2/v2.0/token";
        let jwt = cred.assertion(aud, "client-1").unwrap();
        let header = jsonwebtoken::decode_header(jwt.expose_secret()).unwrap();
        assert_eq!(header.alg, Algorithm::PS256);
        assert_eq!(
            header.x5t_s256.as_deref(),
            Some(URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&der)).as_str())
        );
        assert_eq!(header.x5t, None);

        let public = rcgen_public_key_pem(&key_pem);
        let mut validation = Validation::new(Algorithm::PS256);
        validation.set_audience(&[aud]);
        validation.set_issuer(&["client-1"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            jwt.expose_secret(),
            &DecodingKey::from_rsa_pem(public.as_bytes()).unwrap(),
            &validation,
        )
        .unwrap();
        let c = data.claims;
        assert_eq!(c["sub"], "client-1");
        assert_eq!(c["exp"].as_i64().unwrap() - c["nbf"].as_i64().unwrap(), 600);
        assert!(uuid::Uuid::parse_str(c["jti"].as_str().unwrap()).is_ok());
        let second = cred.assertion(aud, "client-1").unwrap();
        let jti2 =
            jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(second.expose_secret())
                .unwrap()
                .claims["jti"]
                .clone();
        assert_ne!(c["jti"], jti2, "every assertion needs a fresh jti");
    }

    fn rcgen_public_key_pem(key_pem: &str) -> String {
        let key = rcgen::KeyPair::from_pem(key_pem).unwrap();
        key.public_key_pem()
    }

    #[test]
    fn rs256_assertion_uses_sha1_thumbprint() {
        let (cert_pem, key_pem, der) = test_certificate();
        let combined = format!("{cert_pem}{key_pem}");
        let cred = CertificateCredential::from_pem(
            combined.as_bytes(),
            combined.as_bytes(),
            AssertionAlgorithm::Rs256,
        )
        .unwrap();
        let jwt = cred
            .assertion("https://a/t/oauth2/v2.0/token", "c")
            .unwrap();
        let header = jsonwebtoken::decode_header(jwt.expose_secret()).unwrap();
        assert_eq!(header.alg, Algorithm::RS256);
        assert_eq!(
            header.x5t.as_deref(),
            Some(URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(&der)).as_str())
        );
        assert_eq!(header.x5t_s256, None);
    }

    #[test]
    fn unusable_pem_is_explained() {
        let (cert_pem, key_pem, _) = test_certificate();
        let err = CertificateCredential::from_pem(
            b"nothing",
            key_pem.as_bytes(),
            AssertionAlgorithm::Ps256,
        )
        .unwrap_err();
        assert!(err.to_string().contains("CERTIFICATE"), "{err}");
        let err = CertificateCredential::from_pem(
            cert_pem.as_bytes(),
            cert_pem.as_bytes(),
            AssertionAlgorithm::Ps256,
        )
        .unwrap_err();
        assert!(err.to_string().contains("no usable private key"), "{err}");
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let err = CertificateCredential::from_pem(
            cert_pem.as_bytes(),
            encrypted.as_bytes(),
            AssertionAlgorithm::Ps256,
        )
        .unwrap_err();
        assert!(err.to_string().contains("decrypt"), "{err}");
    }

    #[test]
    fn from_files_names_the_unreadable_path() {
        let err = CertificateCredential::from_files(
            "/nonexistent/c.pem",
            "/nonexistent/k.pem",
            AssertionAlgorithm::Ps256,
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/c.pem"), "{err}");
    }

    #[test]
    fn fingerprint_identifies_without_revealing() {
        let secret = "s3cr3t-Value~with.chars";
        let a = app(Credential::ClientSecret(secret.into()));
        let b = app(Credential::ClientSecret("another-secret-value".into()));
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 32);
        assert!(!a.fingerprint().contains(secret));
        let mi = AppCredential::managed_identity(
            Authority::public(),
            ManagedIdentity::Imds {
                endpoint: Url::parse(IMDS_ENDPOINT).unwrap(),
                client_id: None,
            },
        );
        assert_ne!(mi.fingerprint(), a.fingerprint());
    }

    #[test]
    fn debug_never_prints_secrets() {
        let secret = "s3cr3t-Value~with.chars";
        let (cert_pem, key_pem, _) = test_certificate();
        let cert = CertificateCredential::from_pem(
            cert_pem.as_bytes(),
            key_pem.as_bytes(),
            AssertionAlgorithm::Ps256,
        )
        .unwrap();
        let apps = [
            app(Credential::ClientSecret(secret.into())),
            app(Credential::Certificate(cert)),
            app(Credential::Federated(FederatedTokenSource::GitHubActions {
                request_url: Url::parse("https://gh.example/token?x=1").unwrap(),
                request_token: secret.into(),
            })),
            app(Credential::ManagedIdentity(ManagedIdentity::AppService {
                endpoint: Url::parse("http://127.0.0.1:1/msi").unwrap(),
                header: secret.into(),
                client_id: None,
            })),
        ];
        let key_body: String = key_pem.lines().nth(1).unwrap().to_owned();
        for app in apps {
            let debug = format!("{app:?}");
            assert!(!debug.contains(secret), "{debug}");
            assert!(!debug.contains(&key_body), "{debug}");
        }
    }
}
