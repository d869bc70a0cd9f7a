//! `testkit-server`: the Entra ID emulator (and optionally the Key Vault emulator) as a standalone
//! process, for `cargo xtask demo`, `cargo xtask bench-daemon` and manual runs. It registers one
//! app (and any `--extra-client-id` with the same secret), prints one JSON line (base URL, token
//! URL, CA file, vault URL, ...) on stdout, and serves until Ctrl-C or SIGTERM; then it prints a
//! second JSON line, `{"token_requests": N}`, the number of token requests it received. The
//! Microsoft Graph routes are served too (`graph_endpoint`); `--graph-role` gives the registered
//! apps Graph roles and makes each an owner of itself, so it can rotate its own secret.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use testkit::{
    AppRegistration, EntraEmulator, GithubOidc, KeyVaultEmulator, KeyVaultOptions, ManagedIdentity,
    ServerOptions, TestCa, TokenOptions,
};

/// Serve the Entra ID emulator on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Serve HTTPS with a CA generated at start-up (see --ca-out).
    #[arg(long)]
    tls: bool,
    /// Write the CA certificate (PEM) to this file (needs --tls).
    #[arg(long)]
    ca_out: Option<PathBuf>,
    /// Tenant of the registered app.
    #[arg(long, env = "TESTKIT_TENANT")]
    tenant: String,
    /// Client id of the registered app.
    #[arg(long, env = "TESTKIT_CLIENT_ID")]
    client_id: String,
    /// Client secret of the registered app (prefer the environment variable).
    #[arg(long, env = "TESTKIT_CLIENT_SECRET", hide_env_values = true)]
    client_secret: String,
    /// Register one more app with this client id, in the same tenant and with the same secret
    /// (repeatable).
    #[arg(long)]
    extra_client_id: Vec<String>,
    /// A Graph application role (e.g. `Application.ReadWrite.OwnedBy`) in the registered apps'
    /// Graph tokens; each app is also made an owner of itself (repeatable).
    #[arg(long)]
    graph_role: Vec<String>,
    /// Lifetime of the tokens issued, in seconds (`expires_in`).
    #[arg(long, default_value_t = 3599)]
    token_lifetime_secs: u64,
    /// Also serve a managed identity with this client id (IMDS and App Service endpoints).
    #[arg(long)]
    managed_identity_client_id: Option<String>,
    /// Also serve the GitHub Actions OIDC endpoint minting tokens for this subject.
    #[arg(long, requires = "github_request_token")]
    github_subject: Option<String>,
    /// Also serve a Key Vault emulator (HTTPS with the same CA; needs --tls) trusting the tokens
    /// issued for `https://vault.azure.net/.default`.
    #[arg(long, requires = "tls")]
    key_vault: bool,
    /// The bearer token the GitHub OIDC endpoint requires.
    #[arg(long, env = "TESTKIT_GITHUB_REQUEST_TOKEN", hide_env_values = true)]
    github_request_token: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.ca_out.is_some() && !args.tls {
        bail!("--ca-out needs --tls: a plain HTTP server has no CA");
    }
    let ca = if args.tls {
        Some(Arc::new(
            TestCa::generate().context("generating the test CA")?,
        ))
    } else {
        None
    };
    if let (Some(ca), Some(path)) = (&ca, &args.ca_out) {
        ca.write_pem(path)?;
    }
    let entra = EntraEmulator::start_with(ServerOptions {
        port: args.port,
        ca,
    })
    .await
    .context("starting the Entra emulator")?;
    let graph_roles: Vec<&str> = args.graph_role.iter().map(String::as_str).collect();
    for client_id in std::iter::once(&args.client_id).chain(&args.extra_client_id) {
        entra.register_app(
            AppRegistration::new(&args.tenant, client_id)
                .with_secret(&args.client_secret)
                .with_graph_roles(&graph_roles),
        );
        if !graph_roles.is_empty() {
            entra.add_owner(client_id, client_id);
        }
    }
    entra.set_token_options(TokenOptions {
        lifetime: Duration::from_secs(args.token_lifetime_secs),
        ..TokenOptions::default()
    });
    let mut info = serde_json::json!({
        "base_url": entra.base_url(),
        "token_url": entra.token_url(&args.tenant),
        "tenant": args.tenant,
        "client_id": args.client_id,
        "ca_pem_path": args.ca_out,
        "graph_endpoint": entra.graph_endpoint(),
    });
    if let Some(client_id) = &args.managed_identity_client_id {
        let identity = ManagedIdentity::new(&args.tenant, client_id);
        info["imds_endpoint"] = entra.imds_endpoint().into();
        info["identity_endpoint"] = entra.identity_endpoint().into();
        info["identity_header"] = identity.identity_header.clone().into();
        entra.enable_managed_identity(identity);
    }
    if let (Some(subject), Some(token)) = (&args.github_subject, &args.github_request_token) {
        entra.enable_github_oidc(GithubOidc::new(subject, token));
        info["github_request_url"] = entra.github_oidc_request_url().into();
    }
    let vault = if args.key_vault {
        let options = KeyVaultOptions::for_entra(&entra, &args.tenant);
        let vault = KeyVaultEmulator::start(entra.token_validator(), options)
            .await
            .context("starting the Key Vault emulator")?;
        info["vault_url"] = vault.vault_url().into();
        Some(vault)
    } else {
        None
    };
    println!("{info}");
    wait_for_stop().await?;
    // The reader may have gone (it only wanted the first line): a closed stdout is no error here.
    let count = serde_json::json!({ "token_requests": entra.token_request_count() });
    let _ = writeln!(std::io::stdout(), "{count}");
    if let Some(vault) = vault {
        vault.shutdown().await;
    }
    entra.shutdown().await;
    Ok(())
}

async fn wait_for_stop() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}
