//! When the platform's CA certificates are read (issue 15 item 3, crates/platform-tls): at
//! the first TLS handshake, not whenever a client is built. Before, every `secret-sync run`
//! read all of `/etc/ssl/certs` three times (2 ms each) even with every server on plain HTTP,
//! and a host without CA certificates could not reach a plain-HTTP authority at all.
//!
//! `SSL_CERT_FILE` and `SSL_CERT_DIR` pointing nowhere stand for a host without CA
//! certificates: rustls-native-certs reads only those when they are set.

use testkit::{AppRegistration, EntraEmulator};

use crate::support::{self, secret_sync};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "0a1b2c3d-1111-2222-3333-444455556666";
const SECRET: &str = "Zq8~tls-roots.client.secret-value";

/// `secret-sync token` with the client secret from `APP_SECRET`.
fn token_args(authority: &str) -> Vec<&str> {
    let mut args = support::token_args(TENANT, CLIENT, authority);
    args.extend(["--client-secret-env", "APP_SECRET"]);
    args
}

#[tokio::test]
async fn a_plain_http_authority_needs_no_ca_certificates() {
    let entra = EntraEmulator::start().await.unwrap();
    entra.register_app(AppRegistration::new(TENANT, CLIENT).with_secret(SECRET));
    let dir = tempfile::tempdir().unwrap();
    let nowhere = dir.path().join("no-such-file");
    let nowhere = nowhere.to_str().unwrap();
    let base = entra.base_url();
    let args = token_args(&base);
    let run = secret_sync(
        &args,
        &[
            ("APP_SECRET", SECRET),
            ("SSL_CERT_FILE", nowhere),
            ("SSL_CERT_DIR", nowhere),
        ],
    )
    .await;
    run.assert_code(0);
    run.assert_no_leak(&[SECRET]);
    assert!(run.stdout.trim().len() > 20, "a token on stdout");
}

#[tokio::test]
async fn over_https_the_platform_certificates_are_read_at_the_first_handshake() {
    let entra = EntraEmulator::start_tls().await.unwrap();
    entra.register_app(AppRegistration::new(TENANT, CLIENT).with_secret(SECRET));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, entra.ca_pem().unwrap()).unwrap();
    let nowhere = dir.path().join("no-such-file");
    let base = entra.base_url();
    let args = token_args(&base);

    // SSL_CERT_FILE names the emulator's CA: honoured, so the token comes.
    let run = secret_sync(
        &args,
        &[
            ("APP_SECRET", SECRET),
            ("SSL_CERT_FILE", ca.to_str().unwrap()),
            ("SSL_CERT_DIR", nowhere.to_str().unwrap()),
        ],
    )
    .await;
    run.assert_code(0);
    run.assert_no_leak(&[SECRET]);

    // No CA certificates at all: the request fails, and says why.
    let run = secret_sync(
        &args,
        &[
            ("APP_SECRET", SECRET),
            ("SSL_CERT_FILE", nowhere.to_str().unwrap()),
            ("SSL_CERT_DIR", nowhere.to_str().unwrap()),
        ],
    )
    .await;
    assert_ne!(run.code, 0, "{}", run.stderr);
    run.assert_no_leak(&[SECRET]);
    assert!(
        run.stderr
            .contains("no CA certificates could be read on this host")
            && run.stderr.contains("ca-certificates"),
        "the error says no CA certificate was found: {}",
        run.stderr
    );
}
