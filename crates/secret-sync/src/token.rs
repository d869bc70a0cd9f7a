//! `secret-sync token`: print an access token for scripts, like `az account get-access-token`.
//!
//! Turns the flags into `entra-auth` types (every mistake is a usage error, exit 2), asks Entra
//! ID once (with entra-auth's retries), and prints the bare token or a JSON object. Under GitHub
//! Actions it first prints the `::add-mask::` command so the token is masked in the job log.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, anyhow};
use entra_auth::{
    ARC_TOKEN_DIR, AccessToken, AppCredential, AssertionAlgorithm, Authority,
    CertificateCredential, ClientId, ClientOptions, Credential, FederatedTokenSource,
    ManagedIdentity, Scope, TenantId, TokenClient,
};
use secrecy::{ExposeSecret, SecretString};
use time::format_description::well_known::Rfc3339;

use crate::cli::{AssertionAlg, OutputFormat, TokenArgs};
use crate::failure::Failure;

pub async fn run(args: TokenArgs) -> Result<(), Failure> {
    let scope: Scope = args
        .scope
        .parse()
        .with_context(|| format!("--scope {:?} is not usable", args.scope))
        .map_err(Failure::usage)?;
    let authority = parse_authority(args.authority.as_deref()).map_err(Failure::usage)?;
    let app = app_credential(&args, authority).map_err(Failure::usage)?;

    let mut options = ClientOptions::default();
    if let Some(ca_file) = &args.ca_file {
        let pem = std::fs::read(ca_file)
            .with_context(|| format!("cannot read --ca-file {}", ca_file.display()))
            .map_err(Failure::usage)?;
        options.extra_root_certificates.push(pem);
    }
    let client = TokenClient::new(options)
        .context("cannot set up the HTTP client")
        .map_err(Failure::failed)?;
    let token = client
        .acquire(&app, &scope)
        .await
        .context("could not get an access token")
        .map_err(Failure::failed)?;

    print_token(&token, args.output, github_actions()).map_err(Failure::failed)
}

/// `public`, `usgov`, `china`, or an authority base URL.
fn parse_authority(value: Option<&str>) -> anyhow::Result<Authority> {
    let Some(value) = value else {
        return Ok(Authority::public());
    };
    match value.to_ascii_lowercase().as_str() {
        "public" | "azurepublic" | "azurepubliccloud" => Ok(Authority::public()),
        "usgov" | "azureusgovernment" | "azureusgovernmentcloud" => Ok(Authority::us_government()),
        "china" | "azurechina" | "azurechinacloud" => Ok(Authority::china()),
        // Not echoed when it may hold `user:password@` (entra-auth's error leaves it out too).
        _ if value.contains('@') => {
            Authority::parse(value).context("--authority (or AZURE_AUTHORITY_HOST) is not usable")
        }
        _ => Authority::parse(value).with_context(|| {
            format!("--authority (or AZURE_AUTHORITY_HOST) {value:?} is not usable")
        }),
    }
}

fn app_credential(args: &TokenArgs, authority: Authority) -> anyhow::Result<AppCredential> {
    let client_id: Option<ClientId> = args
        .client_id
        .as_deref()
        .map(|id| {
            id.parse()
                .with_context(|| format!("--client-id {id:?} is not usable"))
        })
        .transpose()?;
    let credential = credential(args, client_id.clone())?;

    if let Credential::ManagedIdentity(identity) = credential {
        return Ok(AppCredential::managed_identity(authority, identity));
    }
    let tenant: TenantId = args
        .tenant_id
        .as_deref()
        .ok_or_else(|| anyhow!("--tenant-id (or AZURE_TENANT_ID) is required"))?
        .parse()
        .context("--tenant-id is not usable")?;
    let client_id =
        client_id.ok_or_else(|| anyhow!("--client-id (or AZURE_CLIENT_ID) is required"))?;
    Ok(AppCredential {
        authority,
        tenant,
        client_id,
        credential,
    })
}

fn credential(token_args: &TokenArgs, client_id: Option<ClientId>) -> anyhow::Result<Credential> {
    let args = &token_args.credential;
    if let Some(var) = &args.client_secret_env {
        return Ok(Credential::ClientSecret(secret_from_env(
            var,
            "--client-secret-env",
        )?));
    }
    if let Some(path) = &args.client_secret_file {
        return Ok(Credential::ClientSecret(secret_from_file(path)?));
    }
    if let Some(cert) = &args.certificate {
        let alg = match token_args.assertion_alg {
            AssertionAlg::Ps256 => AssertionAlgorithm::Ps256,
            AssertionAlg::Rs256 => AssertionAlgorithm::Rs256,
        };
        let key = token_args.certificate_key.as_deref().unwrap_or(cert);
        let certificate = CertificateCredential::from_files(cert, key, alg)
            .with_context(|| format!("--certificate {} is not usable", cert.display()))?;
        return Ok(Credential::Certificate(certificate));
    }
    if let Some(path) = &args.federated_token_file {
        return Ok(Credential::Federated(FederatedTokenSource::File(
            path.clone(),
        )));
    }
    if args.workload_identity {
        let path = std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").ok_or_else(|| {
            anyhow!(
                "--workload-identity needs AZURE_FEDERATED_TOKEN_FILE; is workload identity \
                 enabled for this pod or service account?"
            )
        })?;
        return Ok(Credential::Federated(FederatedTokenSource::File(
            path.into(),
        )));
    }
    if let Some(var) = &args.federated_token_env {
        if std::env::var_os(var).is_none() {
            return Err(anyhow!(
                "environment variable {var} (named by --federated-token-env) is not set"
            ));
        }
        return Ok(Credential::Federated(FederatedTokenSource::Env(
            var.clone(),
        )));
    }
    if args.github_oidc {
        let source = FederatedTokenSource::github_actions_from_env().context(
            "--github-oidc works inside a GitHub Actions job with `permissions: id-token: write`",
        )?;
        return Ok(Credential::Federated(source));
    }
    if args.managed_identity {
        let arc_token_dir = match &token_args.arc_token_dir {
            Some(dir) => std::path::absolute(dir)
                .with_context(|| format!("--arc-token-dir {} is not usable", dir.display()))?,
            None => ARC_TOKEN_DIR.into(),
        };
        let identity = ManagedIdentity::from_env_with_arc_dir(client_id, &arc_token_dir)
            .context("--managed-identity cannot tell which managed identity this host has")?;
        return Ok(Credential::ManagedIdentity(identity));
    }
    // clap's required group makes this unreachable from the command line.
    Err(anyhow!("no credential given"))
}

fn secret_from_env(var: &str, flag: &str) -> anyhow::Result<SecretString> {
    let value = std::env::var(var)
        .map_err(|_| anyhow!("environment variable {var} (named by {flag}) is not set"))?;
    let value = SecretString::from(value);
    if value.expose_secret().trim().is_empty() {
        return Err(anyhow!(
            "environment variable {var} (named by {flag}) is empty"
        ));
    }
    Ok(value)
}

fn secret_from_file(path: &Path) -> anyhow::Result<SecretString> {
    let raw = SecretString::from(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read --client-secret-file {}", path.display()))?,
    );
    let trimmed = raw.expose_secret().trim_end_matches(['\r', '\n']);
    if trimmed.trim().is_empty() {
        return Err(anyhow!("--client-secret-file {} is empty", path.display()));
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

fn github_actions() -> bool {
    std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true")
}

fn print_token(token: &AccessToken, output: OutputFormat, mask: bool) -> anyhow::Result<()> {
    let secret = token.secret().expose_secret();
    let mut out = std::io::stdout().lock();
    if mask {
        // GitHub Actions reads workflow commands from stdout and masks the value in the log.
        writeln!(out, "::add-mask::{secret}")?;
    }
    match output {
        OutputFormat::Text => writeln!(out, "{secret}")?,
        OutputFormat::Json => {
            // Whole seconds, so both fields name the same instant.
            let expires_on = token.expires_on().replace_nanosecond(0)?;
            let json = serde_json::json!({
                "access_token": secret,
                "token_type": token.token_type(),
                "expires_on": expires_on.unix_timestamp(),
                "expires_at": expires_on.format(&Rfc3339)?,
            });
            writeln!(out, "{json}")?;
        }
    }
    out.flush()?;
    Ok(())
}
