//! An external OpenID Connect issuer for workload identity federation tests: it mints RS256 tokens
//! (as GitHub Actions or a Kubernetes service-account issuer would) and lends its public key to the
//! Entra emulator, which checks federated assertions with it instead of fetching a JWKS.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use rcgen::KeyPair;

use crate::cert::unix_now;
use crate::error::TestkitError;

/// The issuer URL GitHub Actions puts in its OIDC tokens.
pub const GITHUB_ACTIONS_ISSUER: &str = "https://token.actions.githubusercontent.com";

/// An OIDC token issuer with its own RSA-2048 signing key.
pub struct OidcIssuer {
    issuer: String,
    kid: String,
    encoding_key: EncodingKey,
    decoding_key: DecodingKey,
}

impl std::fmt::Debug for OidcIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcIssuer")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The claims of a token to mint; start from [`OidcIssuer::claims`] and change what the test needs.
#[derive(Debug, Clone)]
pub struct OidcClaims {
    /// `iss` claim.
    pub issuer: String,
    /// `sub` claim, e.g. `repo:ORG/REPO:ref:refs/heads/main`.
    pub subject: String,
    /// `aud` claim, e.g. `api://AzureADTokenExchange`.
    pub audience: String,
    /// `iat` and `nbf`, Unix seconds.
    pub issued_at: u64,
    /// `exp`, Unix seconds.
    pub expires: u64,
}

impl OidcIssuer {
    /// A new issuer named `issuer` (the exact `iss` string, e.g. `https://oidc.example.test`).
    pub fn new(issuer: impl Into<String>) -> Result<OidcIssuer, TestkitError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)?;
        let encoding_key = EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes())
            .map_err(|e| TestkitError::KeyMaterial(e.to_string()))?;
        // rcgen's raw public key for RSA is the PKCS#1 RSAPublicKey DER.
        let decoding_key = DecodingKey::from_rsa_der(key.public_key_raw());
        Ok(OidcIssuer {
            issuer: issuer.into(),
            kid: uuid::Uuid::new_v4().simple().to_string(),
            encoding_key,
            decoding_key,
        })
    }

    /// The `iss` value of every token this issuer mints.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Default claims: this issuer, `subject`, `audience`, valid from now for 10 minutes.
    pub fn claims(&self, subject: &str, audience: &str) -> OidcClaims {
        let now = unix_now();
        OidcClaims {
            issuer: self.issuer.clone(),
            subject: subject.to_owned(),
            audience: audience.to_owned(),
            issued_at: now,
            expires: now + 600,
        }
    }

    /// A valid token for `subject` and `audience`.
    pub fn mint(&self, subject: &str, audience: &str) -> String {
        self.mint_with(&self.claims(subject, audience))
    }

    /// A token with exactly these claims, signed RS256 with this issuer's key.
    ///
    /// # Panics
    /// Never in practice: signing with a freshly generated RSA key cannot fail.
    pub fn mint_with(&self, claims: &OidcClaims) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        let body = serde_json::json!({
            "iss": claims.issuer,
            "sub": claims.subject,
            "aud": claims.audience,
            "iat": claims.issued_at,
            "nbf": claims.issued_at,
            "exp": claims.expires,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        jsonwebtoken::encode(&header, &body, &self.encoding_key)
            .expect("signing with a freshly generated RSA key cannot fail")
    }

    /// The public key that verifies this issuer's tokens.
    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.decoding_key
    }
}
