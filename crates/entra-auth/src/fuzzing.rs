//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, which nothing in the
//! workspace enables): crate-private parsers, reached without making them public API.

use std::time::Duration;

use time::OffsetDateTime;

use crate::error::{CredentialKind, RequestFacts};
use crate::{AccessToken, Error};

/// The client secret the fuzz targets pass as sensitive: no error may contain it, whatever
/// the body says.
pub const SENSITIVE: &str = "fuzz-client-secret-Zq8~";

/// Parses a token endpoint's answer (`status`, `body`, a `Retry-After`) as `TokenClient` does
/// for the credential kind picked by `kind` (secret, certificate, federated, IMDS, App
/// Service), for a request sent at `requested_at`, with [`SENSITIVE`] as the secret.
pub fn parse_token_response(
    kind: u8,
    status: u16,
    body: &[u8],
    requested_at: OffsetDateTime,
    retry_after: Option<Duration>,
) -> Result<AccessToken, Error> {
    let credential = match kind % 5 {
        0 => CredentialKind::Secret,
        1 => CredentialKind::Certificate,
        2 => CredentialKind::Federated,
        3 => CredentialKind::Imds,
        _ => CredentialKind::AppService,
    };
    let facts = RequestFacts {
        credential,
        tenant: "contoso.onmicrosoft.com".to_owned(),
        client_id: "00000000-0000-0000-0000-000000000001".to_owned(),
        scope: "https://graph.microsoft.com/.default".to_owned(),
        assertion_claims: None,
    };
    crate::token::parse_response(
        status,
        body,
        requested_at,
        retry_after,
        &facts,
        &[SENSITIVE],
    )
}
