//! Logging through `tracing` on stderr: text for people, JSON for log collectors.
//! The level comes from `RUST_LOG` and defaults to `warn`, so a script sees nothing but errors.
//!
//! Whatever `RUST_LOG` says, the SDKs and HTTP clients underneath (the AWS SDK, hyper, reqwest,
//! h2, rustls, azure_core, vaultrs, tower) log at `debug` at most ([`capped`]): at `trace` some
//! of them print requests, headers or bodies, which carry Vault tokens, bearer tokens and the
//! tokens secret-sync writes. That holds by construction, not because today's versions of those
//! crates happen to print nothing secret at `trace`.

use std::io::IsTerminal;

use tracing::{Level, Metadata};
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::cli::LogFormat;

/// Crates whose events and spans are capped at `debug`, by crate name (the first segment of the
/// target): exact names.
const CAPPED_CRATES: &[&str] = &[
    "reqwest",
    "h2",
    "http",
    "rustls",
    "vaultrs",
    "rustify",
    "tower",
    "tower_http",
    "webpki",
    "ureq",
];

/// Families of crates capped at `debug`, by the start of the crate name: `aws_smithy_runtime`,
/// `aws_sigv4`, `aws_config`, `aws_sdk_secretsmanager`, `hyper`, `hyper_util`,
/// `hyper_rustls`, `azure_core`, `azure_security_keyvault_secrets`, `typespec_client_core`
/// (under azure_core), `tokio_rustls`, `rustls_*`.
const CAPPED_PREFIXES: &[&str] = &[
    "aws_",
    "hyper",
    "azure_",
    "typespec",
    "tokio_rustls",
    "rustls_",
];

/// Whether `target` (a `tracing` target, or a `log` record's target) belongs to a capped crate.
pub fn capped(target: &str) -> bool {
    let krate = target.split("::").next().unwrap_or(target);
    CAPPED_CRATES.contains(&krate) || CAPPED_PREFIXES.iter().any(|p| krate.starts_with(p))
}

/// Whether an event or span passes the cap: anything but `trace` from a capped crate.
fn within_cap(metadata: &Metadata<'_>) -> bool {
    *metadata.level() < Level::TRACE || !capped(metadata.target())
}

/// The target of the daemon's start and stop lines: shown at `info` by default (without
/// `RUST_LOG`), so that a daemon at the default level still says it started, with what, and
/// that it stopped. `RUST_LOG` replaces the default, this too.
pub const LIFECYCLE: &str = "secret_sync::lifecycle";

/// SDK targets whose warnings secret-sync's own message replaces, kept to `error` unless
/// `RUST_LOG` names them: off EC2, the AWS SDK's region and credential providers warn once per
/// IMDS attempt (three lines with the whole HTTP answer) before the backend's own "no AWS region
/// is configured: set `region`..." error says what to do.
const QUIETED: &[&str] = &["aws_config::imds"];

/// The filter: `RUST_LOG` (else `warn` and the [`LIFECYCLE`] lines at `info`), with the
/// [`QUIETED`] targets at `error` unless `RUST_LOG` mentions them.
fn filter(rust_log: Option<&str>) -> EnvFilter {
    let mut filter = rust_log
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new(format!("warn,{LIFECYCLE}=info")));
    for target in QUIETED {
        let krate = target.split("::").next().unwrap_or(target);
        if !rust_log.is_some_and(|directives| directives.contains(krate)) {
            filter = filter.add_directive(
                format!("{target}=error")
                    .parse()
                    .expect("a valid directive"),
            );
        }
    }
    filter
}

pub fn init(format: LogFormat) {
    let rust_log = std::env::var(EnvFilter::DEFAULT_ENV).ok();
    let filter = filter(rust_log.as_deref());
    // Colours only for a person at a terminal, never in captured logs.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(filter_fn(within_cap));
    // A second init (only possible in tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => registry.with(layer).try_init(),
        LogFormat::Json => registry.with(layer.json()).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aws_imds_probe_warnings_are_quiet_unless_rust_log_names_aws_config() {
        for (rust_log, quiet) in [
            (None, true),
            (Some("info"), true),
            (Some("debug,aws_config=debug"), false),
        ] {
            let text = filter(rust_log).to_string();
            assert_eq!(
                text.contains("aws_config::imds=error"),
                quiet,
                "{rust_log:?}: {text}"
            );
        }
        assert!(
            filter(None)
                .to_string()
                .contains("secret_sync::lifecycle=info")
        );
    }

    #[test]
    fn the_sdks_and_http_clients_are_capped_and_our_crates_are_not() {
        for target in [
            "aws_smithy_runtime::client::orchestrator",
            "aws_smithy_runtime_api",
            "aws_sigv4::http_request::sign",
            "aws_config::meta::region",
            "hyper",
            "hyper_util::client::legacy::pool",
            "reqwest::connect",
            "h2::codec::framed_write",
            "rustls::client::hs",
            "azure_core::http::policies",
            "typespec_client_core::http",
            "vaultrs::client",
            "rustify::endpoint",
            "tower::buffer",
        ] {
            assert!(capped(target), "{target} should be capped at debug");
        }
        for target in [
            "secret_sync::engine",
            "secret_backends::vault",
            "entra_auth::cache",
            "tokio::runtime",
            "httparse_like_but_ours",
        ] {
            assert!(!capped(target), "{target} should follow RUST_LOG");
        }
    }
}
