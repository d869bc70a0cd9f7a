//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, which nothing in the
//! workspace enables): the crate-private parsers of what the backends read back from a
//! server, reached without making them public API. Each returns what the backend would
//! keep, so a target can check it (e.g. that a stored time is in the years 1 to 9999).

use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::SecretMetadata;

/// An RFC 3339 time as the backends read one: Vault's `created_time`, `expires_at` in
/// custom_metadata, sidecars and JSON documents, Key Vault's `expires-at` tag.
pub fn rfc3339_time(text: &str) -> Option<OffsetDateTime> {
    crate::parse_rfc3339(text)
}

/// Unix seconds as the backends read them: `expires_on` in a sidecar, a JSON document or
/// Vault custom_metadata, AWS's `expires-on` tag and `LastChangedDate`.
pub fn unix_time(seconds: i64) -> Option<OffsetDateTime> {
    crate::unix_time(seconds)
}

/// A time as the backends write it (RFC 3339 in UTC), for round-trip checks.
pub fn format_rfc3339(t: OffsetDateTime) -> String {
    crate::rfc3339(t)
}

/// How long after now the Vault backend renews a token whose lease is `lease_s` seconds
/// (`lease_duration` of a login or a token lookup); `None` for no renewal.
pub fn vault_renewal_wait(lease_s: u64) -> Option<Duration> {
    let at = crate::vault::refresh_at(lease_s)?;
    // measured from after the call: at most the real wait, never more
    Some(at.saturating_duration_since(Instant::now()))
}

/// What the Key Vault backend keeps of a secret bundle the service answered (`body` is the
/// JSON of a `GET /secrets/{name}`): its native `exp` (`None` if the body is not a secret
/// bundle) and the metadata built from its attributes and tags.
pub fn key_vault_secret(body: &[u8]) -> Option<(Option<OffsetDateTime>, SecretMetadata)> {
    let secret: azure_security_keyvault_secrets::models::Secret =
        serde_json::from_slice(body).ok()?;
    let current = crate::azure_kv::Current::from(secret);
    Some((current.expires, current.metadata))
}
