//! Client certificates for the Entra certificate-credential flow: an RSA-2048 self-signed
//! certificate with its PKCS#8 key (what an app registration holds and what a client signs with),
//! the thumbprints Entra matches (`x5t`, `x5t#S256`), files on disk, and a client-assertion
//! builder so tests can forge every kind of good and bad assertion.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{CertificateParams, DnType, KeyPair};
use sha1::Digest;

use crate::error::TestkitError;

/// An RSA-2048 self-signed certificate and its private key, both PEM.
pub struct TestCertificate {
    cert_pem: String,
    cert_der: Vec<u8>,
    key_pem: String,
    encoding_key: EncodingKey,
}

impl std::fmt::Debug for TestCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCertificate")
            .field("x5t#S256", &self.thumbprint_sha256())
            .finish_non_exhaustive()
    }
}

/// Where [`TestCertificate::write_to`] put the files.
#[derive(Debug, Clone)]
pub struct CertificateFiles {
    /// The certificate alone (`cert.pem`).
    pub cert: PathBuf,
    /// The PKCS#8 private key alone (`key.pem`).
    pub key: PathBuf,
    /// Key then certificate in one file (`combined.pem`), as Azure CLI and some SDKs take it.
    pub combined: PathBuf,
}

impl TestCertificate {
    /// Generates a new RSA-2048 key and a self-signed certificate with `common_name` as subject.
    pub fn generate(common_name: &str) -> Result<TestCertificate, TestkitError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        let encoding_key = EncodingKey::from_rsa_pem(key_pem.as_bytes())
            .map_err(|e| TestkitError::KeyMaterial(e.to_string()))?;
        Ok(TestCertificate {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem,
            encoding_key,
        })
    }

    /// The certificate (PEM), what an app registration holds.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The certificate (DER).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Key then certificate in one PEM text.
    pub fn combined_pem(&self) -> String {
        format!("{}{}", self.key_pem, self.cert_pem)
    }

    /// base64url SHA-1 of the DER certificate: the `x5t` header value.
    pub fn thumbprint_sha1(&self) -> String {
        URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(&self.cert_der))
    }

    /// base64url SHA-256 of the DER certificate: the `x5t#S256` header value.
    pub fn thumbprint_sha256(&self) -> String {
        URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(&self.cert_der))
    }

    /// Upper-case hex SHA-1, as the Azure portal shows a certificate's thumbprint.
    pub fn thumbprint_sha1_hex(&self) -> String {
        sha1::Sha1::digest(&self.cert_der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect()
    }

    /// Writes `cert.pem`, `key.pem` and `combined.pem` into `dir`.
    pub fn write_to(&self, dir: &Path) -> Result<CertificateFiles, TestkitError> {
        let files = CertificateFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            combined: dir.join("combined.pem"),
        };
        for (path, text) in [
            (&files.cert, self.cert_pem.clone()),
            (&files.key, self.key_pem.clone()),
            (&files.combined, self.combined_pem()),
        ] {
            std::fs::write(path, text).map_err(|source| TestkitError::Write {
                path: path.clone(),
                source,
            })?;
        }
        Ok(files)
    }

    /// A correct client assertion for `client_id` and the token endpoint `audience`
    /// (PS256, `x5t#S256`, valid for 10 minutes, fresh `jti`); change its fields to make it wrong.
    pub fn assertion(&self, client_id: &str, audience: &str) -> ClientAssertion {
        let now = unix_now();
        ClientAssertion {
            algorithm: AssertionAlgorithm::Ps256,
            thumbprint: ThumbprintHeader::Sha256,
            issuer: client_id.to_owned(),
            subject: client_id.to_owned(),
            audience: audience.to_owned(),
            not_before: Some(now),
            expires: Some(now + 600),
            jti: Some(uuid::Uuid::new_v4().to_string()),
        }
    }

    /// Signs `assertion` with this certificate's key.
    ///
    /// # Panics
    /// Never in practice: signing with a freshly generated RSA key cannot fail.
    pub fn sign(&self, assertion: &ClientAssertion) -> String {
        let mut header = Header::new(match assertion.algorithm {
            AssertionAlgorithm::Ps256 => Algorithm::PS256,
            AssertionAlgorithm::Rs256 => Algorithm::RS256,
        });
        match assertion.thumbprint {
            ThumbprintHeader::Sha256 => header.x5t_s256 = Some(self.thumbprint_sha256()),
            ThumbprintHeader::Sha1 => header.x5t = Some(self.thumbprint_sha1()),
            ThumbprintHeader::None => {}
        }
        let mut claims = serde_json::json!({
            "iss": assertion.issuer,
            "sub": assertion.subject,
            "aud": assertion.audience,
        });
        let optional = [
            ("nbf", assertion.not_before.map(serde_json::Value::from)),
            ("exp", assertion.expires.map(serde_json::Value::from)),
            ("jti", assertion.jti.clone().map(serde_json::Value::from)),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                claims[name] = value;
            }
        }
        jsonwebtoken::encode(&header, &claims, &self.encoding_key)
            .expect("signing with a freshly generated RSA key cannot fail")
    }
}

/// The signature algorithm of a client assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AssertionAlgorithm {
    /// RSASSA-PSS with SHA-256 (MSAL's default, with `x5t#S256`).
    Ps256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (older SDKs, with `x5t`).
    Rs256,
}

/// Which certificate thumbprint the assertion header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ThumbprintHeader {
    /// `x5t#S256`: base64url SHA-256.
    Sha256,
    /// `x5t`: base64url SHA-1.
    Sha1,
    /// No thumbprint at all (Entra cannot find the key).
    None,
}

/// The parts of a certificate client assertion, public so tests can break any one of them.
#[derive(Debug, Clone)]
pub struct ClientAssertion {
    /// Signature algorithm.
    pub algorithm: AssertionAlgorithm,
    /// Thumbprint header.
    pub thumbprint: ThumbprintHeader,
    /// `iss` claim (must be the client id).
    pub issuer: String,
    /// `sub` claim (must be the client id).
    pub subject: String,
    /// `aud` claim (must be the token endpoint URL).
    pub audience: String,
    /// `nbf` claim, Unix seconds.
    pub not_before: Option<u64>,
    /// `exp` claim, Unix seconds.
    pub expires: Option<u64>,
    /// `jti` claim.
    pub jti: Option<String>,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}
