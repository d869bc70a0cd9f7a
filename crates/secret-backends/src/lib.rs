//! One trait for secret stores, and one module per backend.
//!
//! `secret-sync` reads client credentials from a secret store and writes access tokens to
//! secret stores. This crate hides each store behind [`SecretStore`]: read a value (or one
//! `#field` of a JSON value), read metadata without the value, and write a token with its
//! expiry and managed-by marker, reporting whether that created, updated or left the secret
//! unchanged. Each backend takes a typed options struct; this crate knows nothing of Entra ID
//! flows, config files or environment variables.
//!
//! The reference syntax users type (`vault://secret/apps/graph#client_secret`, ...) is in
//! [`mod@reference`]. With the `conformance` feature, the `conformance` module holds the test suite every
//! backend must pass against its real server.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub mod aws;
pub mod azure_kv;
mod error;
pub mod file;
mod http;
pub mod reference;
mod value;
pub mod vault;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;

pub use aws::{AwsOptions, AwsStore};
pub use azure_kv::{AzureKeyVaultOptions, AzureKeyVaultStore};
pub use error::{BackendError, ErrorKind};
pub use file::{FileOptions, FileStore};
pub use reference::{NameRef, ReferenceError, Scheme, SecretRef};
pub use value::{CredentialRecord, MAX_RECORD_TEXT_CHARS, SecretValue, StoredValue, ValueError};

/// A secret store: the one interface the sync engine uses for every backend.
///
/// Every method checks the name with [`SecretStore::check_name`] before any I/O, and
/// [`SecretStore::write`] checks the whole write with [`SecretStore::check_write`] first, so
/// bad input never reaches the server. No method ever puts a secret value in an error.
#[async_trait::async_trait]
pub trait SecretStore: Send + Sync + fmt::Debug {
    /// The configured name of this backend (e.g. `ops-vault`), used in messages.
    fn backend(&self) -> &str;

    /// Checks `name` against the backend's naming rules, without any network call.
    fn check_name(&self, name: &str) -> Result<(), BackendError>;

    /// The largest stored value, in bytes, this backend accepts.
    fn max_value_bytes(&self) -> usize;

    /// Checks a write (name and stored size) without any network call.
    fn check_write(&self, name: &str, payload: &TokenPayload) -> Result<(), BackendError> {
        self.check_name(name)?;
        let size = payload.encode().expose_secret().len();
        let limit = self.max_value_bytes();
        if size > limit {
            return Err(BackendError::new(
                ErrorKind::ValueTooLarge,
                self.backend(),
                format!(
                    "the value to write is {size} bytes, more than the {limit} bytes this backend accepts: \
                     request a smaller token (fewer roles/groups in its claims) or use another backend"
                ),
            )
            .with_secret(name));
        }
        Ok(())
    }

    /// Reads a secret: the whole value, or with `field` one field of a JSON object value.
    ///
    /// A missing secret is [`ErrorKind::NotFound`], never an empty string; a missing field is
    /// [`ErrorKind::FieldNotFound`].
    async fn read(&self, name: &str, field: Option<&str>) -> Result<SecretString, BackendError>;

    /// Reads what is known about a secret without its value; `None` when it does not exist.
    async fn metadata(&self, name: &str) -> Result<Option<SecretMetadata>, BackendError>;

    /// Writes a token, creating the secret when it is missing. When the stored token and expiry
    /// are already identical nothing is written and the outcome is [`WriteOutcome::Unchanged`].
    ///
    /// `precondition` says what the caller's metadata read saw and whether the target may take
    /// over a secret secret-sync did not write; the backend applies it as close to the write as
    /// its API allows (see [`WritePrecondition`]). A secret that someone else wrote since, and
    /// that the rule does not let this write take over, is left as it is and the error is
    /// [`ErrorKind::Conflict`].
    async fn write(
        &self,
        name: &str,
        payload: &TokenPayload,
        precondition: &WritePrecondition,
    ) -> Result<WriteOutcome, BackendError>;

    /// Reads a value (or one `#field` of a JSON object value) with the [`CredentialRecord`]
    /// stored beside it and the metadata a conditional [`SecretStore::write_value`] needs
    /// (`metadata.version`: the backend's version, or for a store without versions a
    /// fingerprint of what was read). Missing is [`ErrorKind::NotFound`] (a missing field
    /// [`ErrorKind::FieldNotFound`]); a record that describes another value than the one
    /// stored (the value was replaced by hand since) reads as an empty record.
    async fn read_stored(
        &self,
        name: &str,
        field: Option<&str>,
    ) -> Result<StoredValue, BackendError>;

    /// Writes `value` (the whole secret, or with `field` one field of its JSON object,
    /// keeping every other field) with `record` (for a field: sibling fields of the same
    /// document, in the same write; for a whole value: the backend's metadata).
    ///
    /// `precondition` is [`WritePrecondition::from_read`] with what [`SecretStore::read_stored`]
    /// returned (`Some(metadata)`), or `from_read(None, ..)` to create a secret that must not
    /// exist yet, or [`WritePrecondition::unread`] to write whatever is there. A secret that
    /// changed since that read is left as it is and the error is [`ErrorKind::Conflict`]
    /// (how closely each backend can tell: see [`WritePrecondition::check_unchanged`]).
    /// The adopt rule does not apply: a written-back value carries no managed-by marker.
    /// A failed write leaves the old value in place, never an empty or partial one; nothing
    /// the value holds is ever in an error. [`WriteOutcome::Unchanged`] when value and record
    /// are already stored.
    async fn write_value(
        &self,
        name: &str,
        field: Option<&str>,
        value: &SecretValue,
        record: &CredentialRecord,
        precondition: &WritePrecondition,
    ) -> Result<WriteOutcome, BackendError>;

    /// Checks a value write without any network call: the name, the record, and for a whole
    /// value its size against [`SecretStore::max_value_bytes`] (a `#field` write checks the
    /// size of the whole document once it has read it).
    fn check_write_value(
        &self,
        name: &str,
        field: Option<&str>,
        value: &SecretValue,
        record: &CredentialRecord,
    ) -> Result<(), BackendError> {
        self.check_name(name)?;
        record.check(self.backend(), name)?;
        if let Some(field) = field
            && field.is_empty()
        {
            return Err(BackendError::new(
                ErrorKind::InvalidName,
                self.backend(),
                "the #field to write is empty: name the field, e.g. #client_secret",
            )
            .with_secret(name));
        }
        value::check_size(
            self.backend(),
            name,
            value.text().len(),
            self.max_value_bytes(),
        )
    }
}

/// What a write may go over: what the metadata read before it saw, and `adopt`.
///
/// The adopt rule is "never overwrite a secret whose managed-by marker is not the payload's
/// unless the target says `adopt = true`". The caller decides it from its metadata read; this
/// type carries that read into [`SecretStore::write`] so the backend can apply the rule again
/// against what is there at the moment it writes, and so a secret someone else wrote between
/// the read and the write is not overwritten. Backends apply it where their API can:
///
/// - Vault KV v2: check-and-set on the version (`cas = 0` when the read saw no secret), so the
///   store itself refuses a write over a version that came after the one checked; on a
///   mismatch the rule is applied to the new version.
/// - AWS Secrets Manager: `CreateSecret` when the read saw no secret (it fails with
///   `ResourceExistsException` if one appeared, and the rule is applied to what
///   `DescribeSecret` says now); an update is checked against the read itself, as
///   `PutSecretValue` has no precondition.
/// - Vault KV v1, Azure Key Vault, the file backend: no conditional write (or, for a file,
///   only for a create: `RENAME_NOREPLACE`), so the rule is applied to a read made right before
///   the write; a writer in between is not seen (docs/security.md).
///
/// What the read learned ([`WritePrecondition::seen`]: version, expiry, marker) also lets a
/// backend skip reads that would repeat it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WritePrecondition {
    seen: Seen,
    adopt: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// No metadata read was made before the write.
    NotRead,
    /// The read found no secret.
    Missing,
    /// The read found this.
    Present(SecretMetadata),
}

impl WritePrecondition {
    /// From the metadata read made before the write: `seen` is what
    /// [`SecretStore::metadata`] returned (`None`: no secret). `adopt`: the write may take over
    /// a secret without the payload's marker.
    pub fn from_read(seen: Option<SecretMetadata>, adopt: bool) -> Self {
        WritePrecondition {
            seen: match seen {
                Some(meta) => Seen::Present(meta),
                None => Seen::Missing,
            },
            adopt,
        }
    }

    /// No metadata read before the write: the backend applies the rule to what it finds.
    pub fn unread(adopt: bool) -> Self {
        WritePrecondition {
            seen: Seen::NotRead,
            adopt,
        }
    }

    /// Whether the write may take over a secret without the payload's marker.
    pub fn adopt(&self) -> bool {
        self.adopt
    }

    /// What the read saw: `None` when no read was made, `Some(None)` when it found no secret.
    pub fn seen(&self) -> Option<Option<&SecretMetadata>> {
        match &self.seen {
            Seen::NotRead => None,
            Seen::Missing => Some(None),
            Seen::Present(meta) => Some(Some(meta)),
        }
    }

    /// Whether the read found no secret (so the write is a create, and a backend that can
    /// create conditionally does).
    pub fn expects_missing(&self) -> bool {
        self.seen == Seen::Missing
    }

    /// Applies the adopt rule to `current`, what the store holds right before the write
    /// (`None`: no secret): a secret without `managed_by` as its marker is not overwritten
    /// unless `adopt`. The error is [`ErrorKind::Conflict`] and says whether the secret changed
    /// since the read.
    pub fn check(
        &self,
        backend: &str,
        name: &str,
        current: Option<&SecretMetadata>,
        managed_by: &str,
    ) -> Result<(), BackendError> {
        let Some(current) = current else {
            return Ok(());
        };
        if self.adopt || current.managed_by.as_deref() == Some(managed_by) {
            return Ok(());
        }
        let marker = match &current.managed_by {
            Some(marker) => format!("its managed-by marker is \"{marker}\""),
            None => "it has no managed-by marker".to_owned(),
        };
        let changed = match &self.seen {
            Seen::NotRead => false,
            Seen::Missing => true,
            Seen::Present(seen) => {
                seen.managed_by != current.managed_by
                    || (seen.version.is_some() && seen.version != current.version)
            }
        };
        let message = if changed {
            format!(
                "someone else wrote this secret since secret-sync read it ({marker}): it was not \
                 overwritten; if secret-sync should take it over, set adopt = true on the target, \
                 otherwise find the other writer (two writers of one secret overwrite each other)"
            )
        } else {
            format!(
                "this secret was not written by secret-sync ({marker}): it was not overwritten; \
                 set adopt = true on the target if secret-sync should take it over"
            )
        };
        Err(BackendError::new(ErrorKind::Conflict, backend, message).with_secret(name))
    }
}

impl WritePrecondition {
    /// For [`SecretStore::write_value`]: whether the secret changed since the read this
    /// precondition records. `current` is the version (or fingerprint) the store holds right
    /// before the write, `None` when there is no secret. No read: always `Ok`. A read that saw
    /// no secret: refused if one exists now. A read that saw a version: refused if the secret
    /// is gone or holds another version; a read without a version cannot be compared (use
    /// [`SecretStore::read_stored`]'s metadata, which always has one). The error is
    /// [`ErrorKind::Conflict`].
    pub fn check_unchanged(
        &self,
        backend: &str,
        name: &str,
        current: Option<Option<&str>>,
    ) -> Result<(), BackendError> {
        let changed = match (&self.seen, current) {
            (Seen::NotRead, _) => false,
            (Seen::Missing, current) => current.is_some(),
            (Seen::Present(_), None) => true,
            (Seen::Present(seen), Some(current)) => {
                seen.version.is_some() && seen.version.as_deref() != current
            }
        };
        if changed {
            return Err(changed_since_read(backend, name));
        }
        Ok(())
    }
}

/// The [`ErrorKind::Conflict`] of a value write over a secret that changed since it was read.
pub(crate) fn changed_since_read(backend: &str, name: &str) -> BackendError {
    BackendError::new(
        ErrorKind::Conflict,
        backend,
        "someone else changed this secret since secret-sync read it: it was not overwritten; \
         read it again and retry (or find the other writer)",
    )
    .with_secret(name)
}

/// What a backend knows about a stored secret, without its value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretMetadata {
    /// When the stored token expires, if the backend recorded it.
    pub expires_on: Option<OffsetDateTime>,
    /// The managed-by marker, if any (a secret without one was not written by secret-sync).
    pub managed_by: Option<String>,
    /// The backend's version id of the current value, if it keeps versions.
    pub version: Option<String>,
    /// When the value was last written, if the backend knows.
    pub updated_on: Option<OffsetDateTime>,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteOutcome {
    /// The secret did not exist and was created.
    Created,
    /// The secret existed and now holds the new token.
    Updated,
    /// The secret already held this token with this expiry; nothing was written.
    Unchanged,
}

impl fmt::Display for WriteOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WriteOutcome::Created => "created",
            WriteOutcome::Updated => "updated",
            WriteOutcome::Unchanged => "unchanged",
        })
    }
}

/// How a token is stored where a backend has the choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The bare token; expiry and managed-by go in the backend's metadata (tags, sidecar...).
    #[default]
    Raw,
    /// A JSON document: `access_token`, `token_type`, `expires_on` (Unix seconds),
    /// `expires_at` (RFC 3339) and `managed_by`.
    Json,
}

/// A token to write, with what is stored beside it.
///
/// Built only through [`TokenPayload::new`], which refuses an empty or malformed token, so a
/// backend never has to. `Debug` redacts the token.
#[derive(Debug, Clone)]
pub struct TokenPayload {
    access_token: SecretString,
    token_type: String,
    expires_on: OffsetDateTime,
    managed_by: String,
    format: Format,
}

/// Why a [`TokenPayload`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// The access token is empty.
    #[error("the access token is empty: refusing to write it")]
    EmptyToken,
    /// The access token contains whitespace or control characters.
    #[error(
        "the access token contains whitespace or control characters: refusing to write a malformed token"
    )]
    MalformedToken,
    /// The token type is empty.
    #[error("the token type is empty")]
    EmptyTokenType,
    /// The managed-by marker is empty.
    #[error("the managed-by marker is empty")]
    EmptyManagedBy,
    /// The expiry, in UTC, is outside the years 1 to 9999 that every backend can store.
    #[error("the token's expiry is outside the years 1 to 9999 and cannot be stored")]
    ExpiryOutOfRange,
}

impl TokenPayload {
    /// A token to write. `expires_on` is kept to the whole second (backends store Unix seconds).
    pub fn new(
        access_token: SecretString,
        token_type: impl Into<String>,
        expires_on: OffsetDateTime,
        managed_by: impl Into<String>,
        format: Format,
    ) -> Result<Self, PayloadError> {
        let token = access_token.expose_secret();
        if token.is_empty() {
            return Err(PayloadError::EmptyToken);
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(PayloadError::MalformedToken);
        }
        let token_type = token_type.into();
        if token_type.trim().is_empty() {
            return Err(PayloadError::EmptyTokenType);
        }
        let managed_by = managed_by.into();
        if managed_by.trim().is_empty() {
            return Err(PayloadError::EmptyManagedBy);
        }
        let Some(expires_on) = stored_time(expires_on) else {
            return Err(PayloadError::ExpiryOutOfRange);
        };
        Ok(TokenPayload {
            access_token,
            token_type,
            expires_on,
            managed_by,
            format,
        })
    }

    /// The access token.
    pub fn access_token(&self) -> &SecretString {
        &self.access_token
    }

    /// The token type, usually `Bearer`.
    pub fn token_type(&self) -> &str {
        &self.token_type
    }

    /// When the token expires (UTC, whole seconds).
    pub fn expires_on(&self) -> OffsetDateTime {
        self.expires_on
    }

    /// `expires_on` as RFC 3339, e.g. `2026-11-24T06:00:00Z`.
    pub fn expires_at_rfc3339(&self) -> String {
        rfc3339(self.expires_on)
    }

    /// The managed-by marker, e.g. `secret-sync`.
    pub fn managed_by(&self) -> &str {
        &self.managed_by
    }

    /// How the token is to be stored where the backend has the choice.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The value as stored in `format`: the bare token, or the JSON document.
    pub fn encode(&self) -> SecretString {
        match self.format {
            Format::Raw => self.access_token.clone(),
            Format::Json => self.json_document(),
        }
    }

    /// The JSON document form (whatever `format` says), one line, keys in a fixed order.
    pub fn json_document(&self) -> SecretString {
        #[derive(Serialize)]
        struct Doc<'a> {
            access_token: &'a str,
            token_type: &'a str,
            expires_on: i64,
            expires_at: String,
            managed_by: &'a str,
        }
        let doc = Doc {
            access_token: self.access_token.expose_secret(),
            token_type: &self.token_type,
            expires_on: self.expires_on.unix_timestamp(),
            expires_at: self.expires_at_rfc3339(),
            managed_by: &self.managed_by,
        };
        SecretString::from(
            serde_json::to_string(&doc).expect("a struct of strings and integers serializes"),
        )
    }
}

/// A token document as read back from a store: the token and what was stored with it.
#[derive(Debug, Clone)]
pub struct StoredToken {
    /// The stored access token.
    pub access_token: SecretString,
    /// Expiry, from `expires_on` (Unix seconds, number or numeric string) or else `expires_at`.
    pub expires_on: Option<OffsetDateTime>,
    /// The managed-by marker, if present.
    pub managed_by: Option<String>,
}

impl StoredToken {
    /// Parses a token JSON document (see [`Format::Json`]); `None` when `text` is not a JSON
    /// object with a string `access_token`.
    pub fn from_json_document(text: &str) -> Option<StoredToken> {
        let serde_json::Value::Object(map) = serde_json::from_str(text).ok()? else {
            return None;
        };
        Self::from_map(&map)
    }

    /// Same as [`StoredToken::from_json_document`] for an already parsed map (e.g. a Vault KV map).
    pub fn from_map(map: &serde_json::Map<String, serde_json::Value>) -> Option<StoredToken> {
        let access_token = SecretString::from(map.get("access_token")?.as_str()?);
        Some(StoredToken {
            access_token,
            expires_on: expiry_from_map(map),
            managed_by: map
                .get("managed_by")
                .and_then(|v| v.as_str())
                .map(str::to_owned),
        })
    }

    /// Whether this stored token is the one `payload` would write (same token, same expiry).
    pub fn same_as(&self, payload: &TokenPayload) -> bool {
        self.access_token.expose_secret() == payload.access_token.expose_secret()
            && self.expires_on == Some(payload.expires_on)
    }
}

/// Reads an expiry from a map: `expires_on` as Unix seconds (number or numeric string), else
/// `expires_at` as RFC 3339. A value that is not a time, or a time outside the years 1 to 9999
/// in UTC (e.g. `9999-12-31T23:59:59-23:59`, which is in year 10000 in UTC), is no expiry:
/// the caller treats the target's expiry as unknown and refreshes it. Never panics.
pub fn expiry_from_map(map: &serde_json::Map<String, serde_json::Value>) -> Option<OffsetDateTime> {
    let unix = match map.get("expires_on") {
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    if let Some(t) = unix.and_then(unix_time) {
        return Some(t);
    }
    parse_rfc3339(map.get("expires_at")?.as_str()?)
}

/// `s` as an RFC 3339 time in UTC, whole seconds; `None` when it is not one or its UTC form is
/// outside the years 1 to 9999 (the range every backend stores and the time crate formats).
pub(crate) fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s.trim(), &Rfc3339)
        .ok()
        .and_then(stored_time)
}

/// Unix seconds as a time in UTC; `None` outside the years 1 to 9999.
pub(crate) fn unix_time(seconds: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(stored_time)
}

/// `t` in UTC truncated to the whole second, if that is within the years 1 to 9999; `None`
/// otherwise (an offset can carry a year-9999 time into year 10000, and year 0 or earlier
/// cannot be written as RFC 3339 by every backend). The one check every parsed time goes through.
pub(crate) fn stored_time(t: OffsetDateTime) -> Option<OffsetDateTime> {
    let utc = t
        .checked_to_offset(time::UtcOffset::UTC)?
        .truncate_to_second();
    (1..=9999).contains(&utc.year()).then_some(utc)
}

/// Picks `field` out of a JSON object value, or returns the whole value when `field` is `None`.
///
/// A string field is returned as is, a number or boolean as its JSON text, an object or array
/// as compact JSON. Errors name the field, never the value.
pub fn pick_field(
    backend: &str,
    name: &str,
    value: SecretString,
    field: Option<&str>,
) -> Result<SecretString, BackendError> {
    let Some(field) = field else {
        return Ok(value);
    };
    let Ok(serde_json::Value::Object(map)) =
        serde_json::from_str::<serde_json::Value>(value.expose_secret())
    else {
        return Err(BackendError::new(
            ErrorKind::InvalidValue,
            backend,
            format!(
                "the value is not a JSON object, so field \"{field}\" cannot be picked from it: \
                 store a JSON object or drop \"#{field}\" from the reference"
            ),
        )
        .with_secret(name));
    };
    pick_from_map(backend, name, &map, field)
}

/// Picks `field` out of an already parsed map (e.g. a Vault KV map); see [`pick_field`].
pub fn pick_from_map(
    backend: &str,
    name: &str,
    map: &serde_json::Map<String, serde_json::Value>,
    field: &str,
) -> Result<SecretString, BackendError> {
    match map.get(field) {
        Some(serde_json::Value::String(s)) => Ok(SecretString::from(s.as_str())),
        Some(serde_json::Value::Null) | None => {
            let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
            keys.sort_unstable();
            Err(BackendError::new(
                ErrorKind::FieldNotFound,
                backend,
                format!(
                    "the secret has no field \"{field}\" (it has: {}): fix the \"#field\" part of the reference",
                    if keys.is_empty() { "no fields".to_owned() } else { keys.join(", ") }
                ),
            )
            .with_secret(name))
        }
        Some(other) => Ok(SecretString::from(other.to_string())),
    }
}

/// `t` as RFC 3339 in UTC. Times outside the years 1 to 9999 in UTC (which [`stored_time`]
/// keeps out of every payload and parsed expiry) are written as Unix seconds instead of
/// panicking.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.checked_to_offset(time::UtcOffset::UTC)
        .and_then(|utc| utc.format(&Rfc3339).ok())
        .unwrap_or_else(|| t.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const TOKEN: &str = "eyJ0eXAiOiJKV1QifQ.payload.sig";

    fn payload(format: Format) -> TokenPayload {
        TokenPayload::new(
            SecretString::from(TOKEN),
            "Bearer",
            datetime!(2026-11-24 06:00:00.75 UTC),
            "secret-sync",
            format,
        )
        .unwrap()
    }

    #[test]
    fn payload_refuses_empty_and_malformed_tokens() {
        let at = datetime!(2026-11-24 06:00 UTC);
        let make = |t: &str| {
            TokenPayload::new(
                SecretString::from(t),
                "Bearer",
                at,
                "secret-sync",
                Format::Raw,
            )
        };
        assert_eq!(make("").unwrap_err(), PayloadError::EmptyToken);
        assert_eq!(make("abc def").unwrap_err(), PayloadError::MalformedToken);
        assert_eq!(make("abc\n").unwrap_err(), PayloadError::MalformedToken);
        let empty_type =
            TokenPayload::new(SecretString::from("t"), " ", at, "secret-sync", Format::Raw);
        assert_eq!(empty_type.unwrap_err(), PayloadError::EmptyTokenType);
    }

    #[test]
    fn payload_debug_and_json_shape() {
        let p = payload(Format::Json);
        assert!(
            !format!("{p:?}").contains(TOKEN),
            "Debug leaks the token: {p:?}"
        );
        assert_eq!(p.expires_on(), datetime!(2026-11-24 06:00:00 UTC));
        let doc: serde_json::Value = serde_json::from_str(p.encode().expose_secret()).unwrap();
        assert_eq!(
            doc,
            serde_json::json!({
                "access_token": TOKEN,
                "token_type": "Bearer",
                "expires_on": 1_795_500_000_i64,
                "expires_at": "2026-11-24T06:00:00Z",
                "managed_by": "secret-sync",
            })
        );
        assert_eq!(payload(Format::Raw).encode().expose_secret(), TOKEN);
    }

    #[test]
    fn stored_token_round_trips_and_compares() {
        let p = payload(Format::Json);
        let stored = StoredToken::from_json_document(p.json_document().expose_secret()).unwrap();
        assert_eq!(stored.expires_on, Some(p.expires_on()));
        assert_eq!(stored.managed_by.as_deref(), Some("secret-sync"));
        assert!(stored.same_as(&p));
        let later = TokenPayload::new(
            SecretString::from(TOKEN),
            "Bearer",
            datetime!(2026-11-24 07:00 UTC),
            "secret-sync",
            Format::Json,
        )
        .unwrap();
        assert!(!stored.same_as(&later));
        assert!(StoredToken::from_json_document("not json").is_none());
        assert!(StoredToken::from_json_document(r#"{"token":"x"}"#).is_none());
    }

    #[test]
    fn expiry_accepts_string_seconds_and_rfc3339() {
        let map = |v: serde_json::Value| v.as_object().unwrap().clone();
        let at = Some(datetime!(2026-11-24 06:00 UTC));
        assert_eq!(
            expiry_from_map(&map(serde_json::json!({"expires_on": "1795500000"}))),
            at
        );
        assert_eq!(
            expiry_from_map(&map(
                serde_json::json!({"expires_at": "2026-11-24T07:00:00+01:00"})
            )),
            at
        );
        assert_eq!(
            expiry_from_map(&map(serde_json::json!({"expires_on": "soon"}))),
            None
        );
    }

    #[test]
    fn out_of_range_expiries_are_unknown_never_a_panic() {
        let map = |v: serde_json::Value| v.as_object().unwrap().clone();
        for stored in [
            // year 9999 in its offset, year 10000 in UTC
            serde_json::json!({"expires_at": "9999-12-31T23:59:59-23:59"}),
            serde_json::json!({"expires_at": "0000-01-01T00:00:00+23:59"}),
            serde_json::json!({"expires_on": "253402300800"}),
            serde_json::json!({"expires_on": i64::MAX}),
            serde_json::json!({"expires_on": i64::MIN, "expires_at": "99999-01-01T00:00:00Z"}),
            serde_json::json!({"expires_on": 1e300}),
        ] {
            assert_eq!(expiry_from_map(&map(stored.clone())), None, "{stored}");
        }
        // the last second every backend can store is still a time
        assert_eq!(
            expiry_from_map(&map(
                serde_json::json!({"expires_at": "9999-12-31T23:59:59Z"})
            )),
            Some(datetime!(9999-12-31 23:59:59 UTC))
        );
        assert_eq!(
            rfc3339(datetime!(9999-12-31 23:59:59 -23:59)),
            "253402387139",
            "a time UTC cannot hold is written as Unix seconds, not a panic"
        );
    }

    #[test]
    fn payload_refuses_an_expiry_no_backend_can_store() {
        let made = TokenPayload::new(
            SecretString::from(TOKEN),
            "Bearer",
            datetime!(9999-12-31 23:59:59 -23:59),
            "secret-sync",
            Format::Json,
        );
        assert_eq!(made.unwrap_err(), PayloadError::ExpiryOutOfRange);
    }

    #[test]
    fn pick_field_cases() {
        let value = || SecretString::from(r#"{"client_secret":"s3cr3t-value","n":5,"empty":""}"#);
        let got = pick_field("v", "apps/graph", value(), Some("client_secret")).unwrap();
        assert_eq!(got.expose_secret(), "s3cr3t-value");
        assert_eq!(
            pick_field("v", "a", value(), Some("n"))
                .unwrap()
                .expose_secret(),
            "5"
        );
        assert_eq!(
            pick_field("v", "a", value(), Some("empty"))
                .unwrap()
                .expose_secret(),
            ""
        );
        assert_eq!(
            pick_field("v", "a", value(), None).unwrap().expose_secret(),
            value().expose_secret()
        );

        let missing = pick_field("v", "apps/graph", value(), Some("client_id")).unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::FieldNotFound);
        let text = missing.to_string();
        assert!(
            text.contains("client_id") && text.contains("client_secret, empty, n"),
            "{text}"
        );
        assert!(
            !text.contains("s3cr3t-value"),
            "error leaks the value: {text}"
        );

        let not_json =
            pick_field("v", "a", SecretString::from("s3cr3t-value"), Some("x")).unwrap_err();
        assert_eq!(not_json.kind(), ErrorKind::InvalidValue);
        assert!(!format!("{not_json} {not_json:?}").contains("s3cr3t-value"));
    }
}
