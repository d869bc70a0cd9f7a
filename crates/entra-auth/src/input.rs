//! Validated inputs: authority, tenant, client id and scope.
//!
//! These exist so that a malformed value is refused once, where it is typed or read, with a
//! message saying what is wrong and what to do, instead of as an obscure AADSTS error after a
//! network round trip. Every other part of the crate takes these types, never bare strings.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use url::Url;
use uuid::Uuid;

/// A value given to this crate that cannot be used: which input, what is wrong, what to do.
///
/// The offending value is included only when it is not secret (ids, URLs, paths, scopes).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{input}{}: {problem}; {fix}", value_suffix(.value))]
pub struct ConfigError {
    input: &'static str,
    value: Option<String>,
    problem: String,
    fix: String,
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

fn value_suffix(value: &Option<String>) -> String {
    value
        .as_deref()
        .map(|v| format!(" {v:?}"))
        .unwrap_or_default()
}

impl ConfigError {
    pub(crate) fn new(
        input: &'static str,
        value: Option<&str>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            input,
            value: value.map(str::to_owned),
            problem: problem.into(),
            fix: fix.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Which input is wrong, e.g. `"tenant id"`.
    pub fn input(&self) -> &str {
        self.input
    }

    /// The offending value, when it is not a secret.
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }

    /// What is wrong with it.
    pub fn problem(&self) -> &str {
        &self.problem
    }

    /// What to do about it.
    pub fn fix(&self) -> &str {
        &self.fix
    }
}

/// Which Azure cloud an authority belongs to; decides the federated token audience (and, for
/// the callers that need them, which hosts the cloud's services have).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cloud {
    /// The Azure public cloud (`login.microsoftonline.com`).
    Public,
    /// Azure US Government (`login.microsoftonline.us`).
    UsGovernment,
    /// Azure operated by 21Vianet (`login.chinacloudapi.cn`).
    China,
    /// Another authority (an emulator, a private cloud): the public cloud's audience.
    Custom,
}

/// The Entra ID authority host, e.g. `https://login.microsoftonline.com`.
///
/// https only; plain http is accepted only for a loopback host (tests and emulators).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Authority {
    /// Base URL without a trailing slash, e.g. `https://login.microsoftonline.com`.
    base: String,
    cloud: Cloud,
}

impl Authority {
    /// Azure public cloud: `https://login.microsoftonline.com`.
    pub fn public() -> Self {
        Self {
            base: "https://login.microsoftonline.com".into(),
            cloud: Cloud::Public,
        }
    }

    /// Azure US Government: `https://login.microsoftonline.us`.
    pub fn us_government() -> Self {
        Self {
            base: "https://login.microsoftonline.us".into(),
            cloud: Cloud::UsGovernment,
        }
    }

    /// Azure operated by 21Vianet (China): `https://login.chinacloudapi.cn`.
    pub fn china() -> Self {
        Self {
            base: "https://login.chinacloudapi.cn".into(),
            cloud: Cloud::China,
        }
    }

    /// An authority base URL: scheme, host, optional port and optional path prefix.
    ///
    /// The well-known hosts are recognised (so the right federated audience is used); any
    /// other https host is a custom authority. `http` is accepted only for loopback hosts.
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        const INPUT: &str = "authority";
        // A value holding `@` may carry `user:password@` (even one too broken to parse):
        // never echoed, in any of the errors below.
        let shown = (!value.contains('@')).then_some(value);
        let err = |problem: &str, fix: &str| ConfigError::new(INPUT, shown, problem, fix);
        let url = Url::parse(value.trim()).map_err(|e| {
            err(
                "is not a URL",
                "give the authority host as a URL, e.g. https://login.microsoftonline.com",
            )
            .with_source(e)
        })?;
        let host = url
            .host_str()
            .ok_or_else(|| err("has no host", "e.g. https://login.microsoftonline.com"))?
            .to_ascii_lowercase();
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&url) => {}
            "http" => {
                return Err(err(
                    "uses plain http for a host that is not a loopback address",
                    "use https (plain http is only allowed for 127.0.0.1, ::1 or localhost, for tests)",
                ));
            }
            _ => return Err(err("is not an http(s) URL", "use an https:// URL")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(err(
                "contains user information (user:password@)",
                "remove it: Entra ID authorities take no login in the URL",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(err(
                "has a query or fragment",
                "give only scheme, host, port and optionally a path prefix",
            ));
        }
        let path = url.path().trim_end_matches('/');
        if path.contains("oauth2") || path.contains("/v2.0") {
            return Err(err(
                "looks like a full token endpoint URL",
                "give only the authority base URL (e.g. https://login.microsoftonline.com); \
                 the tenant id is a separate input",
            ));
        }
        // `https://login.microsoftonline.com/contoso.onmicrosoft.com`, as MSAL takes it: the
        // token URL would hold the tenant twice and Entra ID answers 404. A path prefix that is
        // not a tenant (an emulator's, a proxy's) stays allowed.
        if let Some(tenant) = path
            .rsplit('/')
            .next()
            .filter(|last| looks_like_tenant(last))
        {
            let mut without = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(&host));
            if let Some(port) = url.port() {
                without.push_str(&format!(":{port}"));
            }
            without.push_str(
                path.strip_suffix(tenant)
                    .unwrap_or(path)
                    .trim_end_matches('/'),
            );
            return Err(err(
                &format!("ends with the tenant \"{tenant}\""),
                &format!(
                    "give the authority without it, \"{without}\", and the tenant as the tenant id \
                     (tenant_id in a config file, --tenant-id or AZURE_TENANT_ID for the token \
                     command)"
                ),
            ));
        }
        let cloud = match host.as_str() {
            "login.microsoftonline.com" | "login.windows.net" => Cloud::Public,
            "login.microsoftonline.us" => Cloud::UsGovernment,
            "login.chinacloudapi.cn" | "login.partner.microsoftonline.cn" => Cloud::China,
            _ => Cloud::Custom,
        };
        let mut base = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(&host));
        if let Some(port) = url.port() {
            base.push_str(&format!(":{port}"));
        }
        base.push_str(path);
        Ok(Self { base, cloud })
    }

    /// The base URL, without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.base
    }

    /// The cloud this authority belongs to.
    pub fn cloud(&self) -> Cloud {
        self.cloud
    }

    /// The same base URL, taken as an authority of `cloud` (its federated audience): for an
    /// authority reached at another address than the cloud's own, such as a proxy or, in
    /// tests, an emulator on 127.0.0.1.
    pub fn in_cloud(mut self, cloud: Cloud) -> Self {
        self.cloud = cloud;
        self
    }

    /// `{base}/{tenant}/oauth2/v2.0/token`.
    pub fn token_endpoint(&self, tenant: &TenantId) -> Url {
        let url = format!("{}/{}/oauth2/v2.0/token", self.base, tenant.as_str());
        // Both parts were validated: the base is a parsed URL and the tenant a GUID or domain.
        Url::parse(&url).expect("a validated authority and tenant make a valid URL")
    }

    /// The audience an external (federated) token must carry for this cloud.
    ///
    /// Custom authorities (emulators, private clouds) use the public cloud's audience.
    pub fn federated_audience(&self) -> &'static str {
        match self.cloud {
            Cloud::Public | Cloud::Custom => "api://AzureADTokenExchange",
            Cloud::UsGovernment => "api://AzureADTokenExchangeUSGov",
            Cloud::China => "api://AzureADTokenExchangeChina",
        }
    }
}

impl Default for Authority {
    fn default() -> Self {
        Self::public()
    }
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Authority").field(&self.base).finish()
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.base)
    }
}

impl FromStr for Authority {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// A directory (tenant): a GUID or a verified domain such as `contoso.onmicrosoft.com`.
///
/// `common`, `consumers` and `organizations` are refused: Entra ID does not allow the
/// client-credentials grant there (AADSTS9001023).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantId(String);

impl TenantId {
    /// The tenant as sent in the token URL (lower case).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TenantId {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const INPUT: &str = "tenant id";
        let value = s.trim().to_ascii_lowercase();
        if value.is_empty() {
            return Err(ConfigError::new(
                INPUT,
                None,
                "is empty",
                "give the directory (tenant) id GUID from the app registration's overview page",
            ));
        }
        if matches!(value.as_str(), "common" | "consumers" | "organizations") {
            return Err(ConfigError::new(
                INPUT,
                Some(s),
                "is a multi-tenant alias; Entra ID refuses client credentials there (AADSTS9001023)",
                "give the directory (tenant) id GUID or a verified domain of the tenant",
            ));
        }
        if parse_guid(&value).is_some() || is_domain(&value) {
            return Ok(Self(value));
        }
        Err(ConfigError::new(
            INPUT,
            Some(s),
            "is neither a GUID nor a domain name",
            "give the directory (tenant) id GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx) \
             or a verified domain such as contoso.onmicrosoft.com",
        ))
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An application (client) id: a GUID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId(String);

impl ClientId {
    /// The id in its canonical lower-case hyphenated form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ClientId {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let value = s.trim().to_ascii_lowercase();
        match parse_guid(&value) {
            Some(id) => Ok(Self(id)),
            None => Err(ConfigError::new(
                "client id",
                Some(s),
                "is not a GUID",
                "give the application (client) id GUID from the app registration's overview \
                 page (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx), not the app's name or object id URI",
            )),
        }
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client-credentials scope: exactly one resource followed by `/.default`,
/// e.g. `https://graph.microsoft.com/.default`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope(String);

impl Scope {
    /// The scope as sent to the token endpoint.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The resource: the scope without `/.default` (what managed identity endpoints expect).
    pub fn resource(&self) -> &str {
        self.0.strip_suffix("/.default").unwrap_or(&self.0)
    }
}

impl FromStr for Scope {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const INPUT: &str = "scope";
        let value = s.trim();
        if value.is_empty() {
            return Err(ConfigError::new(
                INPUT,
                None,
                "is empty",
                "give one resource followed by /.default, e.g. https://graph.microsoft.com/.default",
            ));
        }
        if value.split_whitespace().count() > 1 {
            return Err(ConfigError::new(
                INPUT,
                Some(s),
                "names more than one scope; the client-credentials grant takes exactly one",
                "request one token per resource, each with <resource>/.default",
            ));
        }
        let Some(resource) = value.strip_suffix("/.default") else {
            let fix = if value.contains("://")
                && !value.ends_with('/')
                && value.matches('/').count() > 2
            {
                "an app can only ask for the permissions granted to it (application permissions): \
                 use <resource>/.default, e.g. https://graph.microsoft.com/.default instead of \
                 https://graph.microsoft.com/User.Read"
                    .to_owned()
            } else {
                format!(
                    "append /.default to the resource: {}/.default",
                    value.trim_end_matches('/')
                )
            };
            return Err(ConfigError::new(
                INPUT,
                Some(s),
                "does not end with /.default (the client-credentials grant accepts only <resource>/.default)",
                fix,
            ));
        };
        if resource.is_empty() || resource.ends_with('/') {
            return Err(ConfigError::new(
                INPUT,
                Some(s),
                "has no resource before /.default",
                "e.g. https://graph.microsoft.com/.default or api://<app id>/.default",
            ));
        }
        Ok(Self(value.to_owned()))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The canonical hyphenated lower-case form of a GUID, or `None`.
fn parse_guid(value: &str) -> Option<String> {
    if value.len() != 36 {
        return None;
    }
    Uuid::try_parse(value)
        .ok()
        .map(|id| id.hyphenated().to_string())
}

/// Whether an authority's last path segment is a tenant: a GUID, a domain, or one of the
/// multi-tenant aliases.
fn looks_like_tenant(segment: &str) -> bool {
    let segment = segment.to_ascii_lowercase();
    matches!(segment.as_str(), "common" | "organizations" | "consumers")
        || parse_guid(&segment).is_some()
        || is_domain(&segment)
}

/// A DNS name with at least two labels: letters, digits and inner hyphens.
fn is_domain(value: &str) -> bool {
    let labels: Vec<&str> = value.split('.').collect();
    value.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_alphabetic()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUID: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

    #[test]
    fn an_authority_ending_in_a_tenant_is_refused_and_a_prefix_is_not() {
        for tenant in [
            "contoso.onmicrosoft.com",
            GUID,
            "common",
            "Organizations",
            "consumers",
        ] {
            for authority in [
                format!("https://login.microsoftonline.com/{tenant}"),
                format!("https://login.microsoftonline.com/{tenant}/"),
            ] {
                let err = Authority::parse(&authority).unwrap_err();
                assert!(
                    err.problem()
                        .contains(&format!("ends with the tenant \"{tenant}\"")),
                    "{err}"
                );
                assert!(
                    err.fix().contains("\"https://login.microsoftonline.com\"")
                        && err.fix().contains("tenant_id"),
                    "{err}"
                );
            }
        }
        let err = Authority::parse(&format!("http://127.0.0.1:8443/prefix/{GUID}")).unwrap_err();
        assert!(
            err.fix().contains("\"http://127.0.0.1:8443/prefix\""),
            "{err}"
        );
        for fine in [
            "http://127.0.0.1:8443/prefix",
            "https://login.example.com/entra/v1.0",
            "https://login.example.com/tenant",
        ] {
            Authority::parse(fine).unwrap_or_else(|e| panic!("{fine}: {e}"));
        }
    }

    #[test]
    fn an_authority_can_be_taken_as_another_clouds() {
        let emulator = Authority::parse("http://127.0.0.1:8443").unwrap();
        assert_eq!(emulator.cloud(), Cloud::Custom);
        let usgov = emulator.clone().in_cloud(Cloud::UsGovernment);
        assert_eq!(usgov.as_str(), "http://127.0.0.1:8443");
        assert_eq!(
            usgov.federated_audience(),
            "api://AzureADTokenExchangeUSGov"
        );
        assert_eq!(
            emulator.in_cloud(Cloud::China).federated_audience(),
            "api://AzureADTokenExchangeChina"
        );
        assert_eq!(Authority::china().cloud(), Cloud::China);
    }

    #[test]
    fn well_known_authorities_have_their_audiences() {
        assert_eq!(
            Authority::public().federated_audience(),
            "api://AzureADTokenExchange"
        );
        assert_eq!(
            Authority::us_government().federated_audience(),
            "api://AzureADTokenExchangeUSGov"
        );
        assert_eq!(
            Authority::china().federated_audience(),
            "api://AzureADTokenExchangeChina"
        );
        let parsed = Authority::parse("https://login.microsoftonline.us/").unwrap();
        assert_eq!(parsed, Authority::us_government());
        let parsed = Authority::parse("https://login.partner.microsoftonline.cn").unwrap();
        assert_eq!(
            parsed.federated_audience(),
            "api://AzureADTokenExchangeChina"
        );
    }

    #[test]
    fn token_endpoint_joins_base_and_tenant() {
        let tenant: TenantId = GUID.parse().unwrap();
        assert_eq!(
            Authority::public().token_endpoint(&tenant).as_str(),
            format!("https://login.microsoftonline.com/{GUID}/oauth2/v2.0/token")
        );
        let local = Authority::parse("http://127.0.0.1:8443/prefix/").unwrap();
        assert_eq!(
            local.token_endpoint(&tenant).as_str(),
            format!("http://127.0.0.1:8443/prefix/{GUID}/oauth2/v2.0/token")
        );
        assert_eq!(local.federated_audience(), "api://AzureADTokenExchange");
    }

    #[test]
    fn http_is_only_for_loopback() {
        for ok in [
            "http://127.0.0.1:1234",
            "http://[::1]:1234",
            "http://localhost:99",
            "https://login.example.com",
        ] {
            assert!(Authority::parse(ok).is_ok(), "{ok} should be accepted");
        }
        let err = Authority::parse("http://login.microsoftonline.com").unwrap_err();
        assert!(err.to_string().contains("use https"), "{err}");
        assert!(Authority::parse("ftp://127.0.0.1").is_err());
        assert!(Authority::parse("not a url").is_err());
        assert!(Authority::parse("https://u:p@login.example.com").is_err());
        let err = Authority::parse(&format!(
            "https://login.microsoftonline.com/{GUID}/oauth2/v2.0/token"
        ))
        .unwrap_err();
        assert!(
            err.to_string().contains("tenant id is a separate input"),
            "{err}"
        );
    }

    #[test]
    fn tenant_accepts_guid_and_domain() {
        let t: TenantId = GUID.to_uppercase().parse().unwrap();
        assert_eq!(t.as_str(), GUID);
        let t: TenantId = "Contoso.onmicrosoft.com".parse().unwrap();
        assert_eq!(t.as_str(), "contoso.onmicrosoft.com");
        for bad in [
            "",
            "contoso",
            "-x.com",
            "a..b",
            "{72f988bf-86f1-41af-91ab-2d7cd011db47}",
            "x/y.com",
        ] {
            assert!(
                bad.parse::<TenantId>().is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn tenant_refuses_multi_tenant_aliases_with_the_reason() {
        for alias in ["common", "Consumers", "organizations"] {
            let err = alias.parse::<TenantId>().unwrap_err();
            let text = err.to_string();
            assert!(text.contains("AADSTS9001023"), "{text}");
            assert!(text.contains("GUID"), "{text}");
            assert_eq!(err.input(), "tenant id");
        }
    }

    #[test]
    fn client_id_must_be_a_guid() {
        let c: ClientId = format!(" {} ", GUID.to_uppercase()).parse().unwrap();
        assert_eq!(c.as_str(), GUID);
        let err = "my-app".parse::<ClientId>().unwrap_err();
        assert!(err.to_string().contains("application (client) id"), "{err}");
        assert!(
            "72f988bf86f141af91ab2d7cd011db47"
                .parse::<ClientId>()
                .is_err()
        );
    }

    #[test]
    fn scope_needs_exactly_one_default_scope() {
        let s: Scope = "https://graph.microsoft.com/.default".parse().unwrap();
        assert_eq!(s.resource(), "https://graph.microsoft.com");
        let s: Scope = format!("api://{GUID}/.default").parse().unwrap();
        assert_eq!(s.resource(), format!("api://{GUID}"));

        let err = "https://graph.microsoft.com".parse::<Scope>().unwrap_err();
        assert!(
            err.fix().contains("https://graph.microsoft.com/.default"),
            "{err}"
        );
        let err = "https://graph.microsoft.com/User.Read"
            .parse::<Scope>()
            .unwrap_err();
        assert!(err.fix().contains("application permissions"), "{err}");
        let err = "https://a/.default https://b/.default"
            .parse::<Scope>()
            .unwrap_err();
        assert!(err.problem().contains("exactly one"), "{err}");
        assert!("/.default".parse::<Scope>().is_err());
        assert!("".parse::<Scope>().is_err());
    }
}
