//! The server certificate check of every HTTPS client secret-sync builds on reqwest (the token
//! and Graph clients of entra-auth, the Vault and Key Vault stores, after-write webhooks): the
//! platform's CA certificates through `rustls-platform-verifier`, as reqwest itself sets it up
//! (on Linux: `SSL_CERT_FILE`, `SSL_CERT_DIR`, else the distribution's bundle and directory),
//! plus a client's own extra roots (`ca_file`).
//!
//! What differs from reqwest's own setup is *when* the platform's certificates are read:
//! reqwest reads them whenever a client is built, every file of `/etc/ssl/certs` each time.
//! That was about 2 ms per client and three clients per `secret-sync run` (the token client's
//! two pools and a store), a quarter of a cold run (issue 15 item 3), even when every server
//! is plain HTTP on 127.0.0.1, where no certificate is ever checked. Here they are read at the
//! first TLS handshake, and once per process for all clients without extra roots (a failure
//! too: each handshake then fails with what to do). Everything else is rustls' and
//! the platform verifier's: the same crypto provider (aws-lc-rs), TLS 1.2 and 1.3, the same
//! checks of the chain, the name and the signatures.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error as TlsError, SignatureScheme};
use rustls_platform_verifier::Verifier;

/// Whether `err` or one of its causes is a TLS handshake this side refused, such as a server
/// certificate that no trusted root signed (`invalid peer certificate: UnknownIssuer`): a
/// refusal no retry changes. rustls reports it as an I/O error of kind `InvalidData`, which the
/// connector wraps in another I/O error (whose `source()` skips it, hence `get_ref`).
pub fn is_tls_refusal(err: &(dyn std::error::Error + 'static)) -> bool {
    fn invalid_data(err: &(dyn std::error::Error + 'static)) -> bool {
        err.downcast_ref::<std::io::Error>().is_some_and(|io| {
            io.kind() == std::io::ErrorKind::InvalidData
                || io.get_ref().is_some_and(|inner| invalid_data(inner))
        })
    }
    std::iter::successors(Some(err), |e| e.source()).any(invalid_data)
}

/// `builder` with TLS that trusts the platform's roots and the certificates of `extra_roots`
/// (PEM bundles), TLS 1.2 and 1.3, ALPN `h2` and `http/1.1` (as reqwest's default). An error
/// says which extra root cannot be used.
pub fn platform_roots(
    builder: reqwest::ClientBuilder,
    extra_roots: &[Vec<u8>],
) -> Result<reqwest::ClientBuilder, String> {
    let provider = provider();
    let verifier =
        if extra_roots.is_empty() {
            static SHARED: OnceLock<Arc<LazyPlatformVerifier>> = OnceLock::new();
            Arc::clone(SHARED.get_or_init(|| {
                Arc::new(LazyPlatformVerifier::new(Arc::clone(&provider), Vec::new()))
            }))
        } else {
            let mut extra = Vec::new();
            for (i, pem) in extra_roots.iter().enumerate() {
                let certs = CertificateDer::pem_slice_iter(pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("extra root certificate #{}: {e}", i + 1))?;
                extra.extend(certs);
            }
            // Checked now, as a client build checked them before: a malformed extra root is a
            // setup error, not a failed handshake later.
            let mut store = rustls::RootCertStore::empty();
            for cert in &extra {
                store
                    .add(cert.clone())
                    .map_err(|e| format!("an extra root certificate cannot be used: {e}"))?;
            }
            Arc::new(LazyPlatformVerifier::new(Arc::clone(&provider), extra))
        };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(builder.use_preconfigured_tls(config))
}

/// The process's default crypto provider, else aws-lc-rs (what reqwest picks too).
fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// The platform verifier, made at the first certificate check.
#[derive(Debug)]
struct LazyPlatformVerifier {
    provider: Arc<CryptoProvider>,
    extra: Vec<CertificateDer<'static>>,
    /// Made once: a host without CA certificates does not get them during a run, and each
    /// attempt would log the platform verifier's warnings again.
    verifier: OnceLock<Result<Verifier, TlsError>>,
}

impl LazyPlatformVerifier {
    fn new(provider: Arc<CryptoProvider>, extra: Vec<CertificateDer<'static>>) -> Self {
        LazyPlatformVerifier {
            provider,
            extra,
            verifier: OnceLock::new(),
        }
    }

    fn verifier(&self) -> Result<&Verifier, TlsError> {
        self.verifier
            .get_or_init(|| {
                Verifier::new_with_extra_roots(
                    self.extra.iter().cloned(),
                    Arc::clone(&self.provider),
                )
                .map_err(|err| {
                    TlsError::General(format!(
                        "no CA certificates could be read on this host ({err}): install the \
                             system's CA certificates (e.g. the ca-certificates package), point \
                             SSL_CERT_FILE at a PEM bundle, or give the server's CA as ca_file"
                    ))
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

impl ServerCertVerifier for LazyPlatformVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, TlsError> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    // The signatures need no roots: checked as the platform verifier checks them (WebPKI's
    // algorithms of the provider), without making it.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use testkit::{Behaviour, HostileServer};

    use super::{is_tls_refusal, platform_roots};

    fn client(extra: &[Vec<u8>]) -> reqwest::Client {
        platform_roots(reqwest::Client::builder(), extra)
            .unwrap()
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn an_extra_root_is_trusted_and_a_server_it_did_not_sign_is_refused() {
        let server = HostileServer::start_tls(Behaviour::json(200, &serde_json::json!({})))
            .await
            .unwrap();
        let ca = server.ca_pem().unwrap().as_bytes().to_vec();
        let answer = client(&[ca]).get(server.url("/x")).send().await.unwrap();
        assert_eq!(answer.status(), 200);

        // The platform's roots alone do not know the test CA: the handshake fails.
        let err = client(&[]).get(server.url("/x")).send().await.unwrap_err();
        let chain = format!("{err:?}");
        assert!(
            chain.contains("UnknownIssuer") || chain.contains("certificate"),
            "{chain}"
        );
        assert!(
            is_tls_refusal(&err),
            "not seen as a refused handshake: {chain}"
        );

        // Another CA's certificate as the extra root does not make it trusted either.
        let other = HostileServer::start_tls(Behaviour::json(200, &serde_json::json!({})))
            .await
            .unwrap();
        let other_ca = other.ca_pem().unwrap().as_bytes().to_vec();
        let err = client(&[other_ca]).get(server.url("/x")).send().await;
        assert!(err.is_err(), "a server signed by another CA was accepted");
    }

    #[tokio::test]
    async fn a_refused_connection_or_an_http_error_is_not_a_tls_refusal() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let err = client(&[])
            .get(format!("https://127.0.0.1:{port}/x"))
            .send()
            .await
            .unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        assert!(!is_tls_refusal(&err), "{err:?}");
        // A handshake that completed, then a 500: an answer, not a refusal.
        let server = HostileServer::start_tls(Behaviour::json(500, &serde_json::json!({})))
            .await
            .unwrap();
        let ca = server.ca_pem().unwrap().as_bytes().to_vec();
        let answer = client(&[ca]).get(server.url("/x")).send().await.unwrap();
        let err = answer.error_for_status().unwrap_err();
        assert!(!is_tls_refusal(&err), "{err:?}");
    }

    #[test]
    fn an_extra_root_that_is_not_a_certificate_is_refused_when_the_client_is_built() {
        let not_der = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec();
        let err = platform_roots(reqwest::Client::builder(), &[not_der]).unwrap_err();
        assert!(err.contains("extra root certificate"), "{err}");
        let not_pem = b"-----BEGIN CERTIFICATE-----\nnot base64 at all!\n".to_vec();
        assert!(platform_roots(reqwest::Client::builder(), &[not_pem]).is_err());
    }
}
