//! Writing a secret back: an arbitrary value (a client secret), not a token.
//!
//! [`SecretValue`] is what [`SecretStore::write_value`](crate::SecretStore::write_value) writes,
//! beside [`TokenPayload`](crate::TokenPayload) (whose invariant, a well-formed token, stays its
//! own). [`CredentialRecord`] is what secret-sync records beside a rotated secret (no secret in
//! it), and [`StoredValue`] is what [`SecretStore::read_stored`](crate::SecretStore::read_stored)
//! reads back: the value, its record and the metadata a conditional write needs.
//!
//! Where the record goes:
//! - for one `#field` of a JSON object: sibling fields of the same document, named
//!   `{field}_key_id`, `{field}_key_expires_on`, `{field}_previous_key_id`,
//!   `{field}_retire_previous_on`, `{field}_installation` ([`CredentialRecord::sibling_names`]),
//!   written with the value in one conditional write; every other field is kept;
//! - for a whole value: the backend's metadata (see each backend's module doc), with a mark of
//!   the value or version it describes where that metadata is not written atomically with the
//!   value, so a record left beside another value (written by hand, or a crash between the two
//!   writes) reads as no record.
//!
//! Times are RFC 3339 in UTC; one that does not parse or is outside the years 1 to 9999 reads as
//! no time. A record field that is `None` is removed from the store at the write.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::{BackendError, ErrorKind, SecretMetadata, parse_rfc3339, rfc3339, stored_time};

/// A secret value to write back (e.g. a client secret): non-empty text without control
/// characters. Built only through [`SecretValue::new`]; `Debug` redacts it. Not a
/// [`TokenPayload`](crate::TokenPayload): it carries no expiry or marker of its own.
#[derive(Clone)]
pub struct SecretValue(SecretString);

/// Why a [`SecretValue`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// The value is empty.
    #[error("the secret value is empty: refusing to write it")]
    Empty,
    /// The value contains control characters (a newline, NUL...), which some stores drop or
    /// cut at, so what was written would not read back the same.
    #[error("the secret value contains control characters: refusing to write it")]
    ControlCharacters,
}

impl SecretValue {
    /// A value to write; refuses an empty one and one with control characters.
    pub fn new(value: SecretString) -> Result<Self, ValueError> {
        let text = value.expose_secret();
        if text.is_empty() {
            return Err(ValueError::Empty);
        }
        if text.chars().any(char::is_control) {
            return Err(ValueError::ControlCharacters);
        }
        Ok(SecretValue(value))
    }

    /// The value.
    pub fn secret(&self) -> &SecretString {
        &self.0
    }

    /// The value's text.
    pub(crate) fn text(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue([REDACTED])")
    }
}

/// What secret-sync records beside a rotated secret. Holds no secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialRecord {
    /// The Graph `keyId` of the value stored.
    pub key_id: Option<String>,
    /// Its `endDateTime`.
    pub key_expires_on: Option<OffsetDateTime>,
    /// The `keyId` it replaced, still to be removed.
    pub previous_key_id: Option<String>,
    /// When to `removePassword` the previous key.
    pub retire_previous_on: Option<OffsetDateTime>,
    /// This installation's random id.
    pub installation: Option<String>,
}

/// The longest text a record field may hold (an AWS or Key Vault tag value holds 256).
pub const MAX_RECORD_TEXT_CHARS: usize = 256;

/// The record's field names, in the order they are written: the base of every backend's key.
pub(crate) const RECORD_FIELDS: [&str; 5] = [
    "key_id",
    "key_expires_on",
    "previous_key_id",
    "retire_previous_on",
    "installation",
];

impl CredentialRecord {
    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        *self == CredentialRecord::default()
    }

    /// The names of the sibling fields that hold the record of `#field` in a JSON document:
    /// `{field}_key_id`, `{field}_key_expires_on`, `{field}_previous_key_id`,
    /// `{field}_retire_previous_on`, `{field}_installation`.
    pub fn sibling_names(field: &str) -> [String; 5] {
        RECORD_FIELDS.map(|base| format!("{field}_{base}"))
    }

    /// The record as `(base name, text)` pairs in [`RECORD_FIELDS`] order; `None` for a field
    /// not recorded. Times as RFC 3339.
    pub(crate) fn entries(&self) -> [(&'static str, Option<String>); 5] {
        let time = |t: &Option<OffsetDateTime>| t.map(rfc3339);
        [
            (RECORD_FIELDS[0], self.key_id.clone()),
            (RECORD_FIELDS[1], time(&self.key_expires_on)),
            (RECORD_FIELDS[2], self.previous_key_id.clone()),
            (RECORD_FIELDS[3], time(&self.retire_previous_on)),
            (RECORD_FIELDS[4], self.installation.clone()),
        ]
    }

    /// A record read back through `get` (base name to stored text). Empty text is no value; a
    /// time that does not parse is no time.
    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let text = |base: &str| get(base).filter(|s| !s.is_empty());
        let time = |base: &str| text(base).and_then(|s| parse_rfc3339(&s));
        CredentialRecord {
            key_id: text(RECORD_FIELDS[0]),
            key_expires_on: time(RECORD_FIELDS[1]),
            previous_key_id: text(RECORD_FIELDS[2]),
            retire_previous_on: time(RECORD_FIELDS[3]),
            installation: text(RECORD_FIELDS[4]),
        }
    }

    /// The record kept in sibling fields of `field` in `map`.
    pub(crate) fn from_siblings(
        map: &serde_json::Map<String, serde_json::Value>,
        field: &str,
    ) -> Self {
        Self::from_lookup(|base| {
            map.get(&format!("{field}_{base}"))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        })
    }

    /// Checks what every backend can store: each text at most [`MAX_RECORD_TEXT_CHARS`]
    /// characters without control characters, each time within the years 1 to 9999.
    pub(crate) fn check(&self, backend: &str, name: &str) -> Result<(), BackendError> {
        let refuse = |what: String| {
            Err(BackendError::new(ErrorKind::InvalidValue, backend, what).with_secret(name))
        };
        for (field, text) in [
            ("key_id", &self.key_id),
            ("previous_key_id", &self.previous_key_id),
            ("installation", &self.installation),
        ] {
            if let Some(text) = text
                && (text.chars().count() > MAX_RECORD_TEXT_CHARS
                    || text.chars().any(char::is_control))
            {
                return refuse(format!(
                    "the credential record's {field} is longer than {MAX_RECORD_TEXT_CHARS} \
                     characters or holds control characters, so it cannot be stored"
                ));
            }
        }
        for (field, time) in [
            ("key_expires_on", self.key_expires_on),
            ("retire_previous_on", self.retire_previous_on),
        ] {
            if let Some(t) = time
                && stored_time(t) != Some(t)
            {
                return refuse(format!(
                    "the credential record's {field} is not a whole second in the years 1 to \
                     9999 (UTC), so it cannot be stored"
                ));
            }
        }
        Ok(())
    }
}

/// A value read back with its record and the metadata a conditional write needs.
#[derive(Debug, Clone)]
pub struct StoredValue {
    /// The value (or the `#field` asked for).
    pub value: SecretString,
    /// What secret-sync recorded beside it; empty when nothing is (or the record found
    /// describes another value).
    pub record: CredentialRecord,
    /// What the store says of the secret; `version` is what
    /// [`WritePrecondition::from_read`](crate::WritePrecondition::from_read) needs for a
    /// conditional [`SecretStore::write_value`](crate::SecretStore::write_value) (for a store
    /// that keeps no versions, a fingerprint of what was read).
    pub metadata: SecretMetadata,
}

/// Sets `field` of `map` to `value` and its sibling fields to `record` (a field not recorded
/// is removed); every other field is kept.
pub(crate) fn set_field(
    map: &mut serde_json::Map<String, serde_json::Value>,
    field: &str,
    value: &SecretValue,
    record: &CredentialRecord,
) {
    map.insert(
        field.to_owned(),
        serde_json::Value::String(value.text().to_owned()),
    );
    for (base, text) in record.entries() {
        let key = format!("{field}_{base}");
        match text {
            Some(text) => {
                map.insert(key, serde_json::Value::String(text));
            }
            None => {
                map.remove(&key);
            }
        }
    }
}

/// Parses `text` as the JSON object a `#field` write modifies; errors name the field only.
pub(crate) fn parse_document(
    backend: &str,
    name: &str,
    text: &str,
    field: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, BackendError> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err(BackendError::new(
            ErrorKind::InvalidValue,
            backend,
            format!(
                "the value is not a JSON object, so field \"{field}\" cannot be written into it: \
                 store a JSON object or drop \"#{field}\" from the reference"
            ),
        )
        .with_secret(name)),
    }
}

/// `map` as compact JSON with its keys sorted: the one form a value's fingerprint is taken of,
/// whatever order the store or the writer kept.
pub(crate) fn canonical_json(map: &serde_json::Map<String, serde_json::Value>) -> String {
    let sorted: std::collections::BTreeMap<&String, &serde_json::Value> = map.iter().collect();
    serde_json::to_string(&sorted).expect("a JSON map serializes")
}

/// The first 16 lowercase hex digits (64 bits) of the SHA-256 of `text`: enough to tell two
/// values apart, far too little to say anything usable about one.
pub(crate) fn fingerprint(text: &str) -> String {
    use std::fmt::Write as _;
    let digest = Sha256::digest(text.as_bytes());
    let mut hex = String::with_capacity(16);
    for byte in &digest[..8] {
        write!(hex, "{byte:02x}").expect("writing to a String cannot fail");
    }
    hex
}

/// The size check of a value write: the stored text (the whole value, or the document with the
/// field set) against `limit`. The message gives sizes only.
pub(crate) fn check_size(
    backend: &str,
    name: &str,
    size: usize,
    limit: usize,
) -> Result<(), BackendError> {
    if size > limit {
        return Err(BackendError::new(
            ErrorKind::ValueTooLarge,
            backend,
            format!(
                "the value to write is {size} bytes, more than the {limit} bytes this backend \
                 accepts: store a smaller value (or fewer other fields beside it)"
            ),
        )
        .with_secret(name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn value_refuses_empty_and_control_characters_and_debug_redacts() {
        assert_eq!(
            SecretValue::new(SecretString::from("")).unwrap_err(),
            ValueError::Empty
        );
        assert_eq!(
            SecretValue::new(SecretString::from("abc\ndef")).unwrap_err(),
            ValueError::ControlCharacters
        );
        let value = SecretValue::new(SecretString::from("Zx8Q~s3cr3t.value_-")).unwrap();
        assert!(!format!("{value:?}").contains("s3cr3t"), "{value:?}");
        assert_eq!(value.secret().expose_secret(), "Zx8Q~s3cr3t.value_-");
    }

    #[test]
    fn siblings_round_trip_and_none_removes() {
        let record = CredentialRecord {
            key_id: Some("k-new".into()),
            key_expires_on: Some(datetime!(2027-05-01 00:00 UTC)),
            previous_key_id: Some("k-old".into()),
            retire_previous_on: Some(datetime!(2026-12-02 12:00 UTC)),
            installation: Some("inst-1".into()),
        };
        let mut map = serde_json::json!({"client_id": "app", "client_secret": "old",
            "client_secret_previous_key_id": "stale"})
        .as_object()
        .unwrap()
        .clone();
        let value = SecretValue::new(SecretString::from("new")).unwrap();
        set_field(&mut map, "client_secret", &value, &record);
        assert_eq!(map["client_id"], "app");
        assert_eq!(map["client_secret"], "new");
        assert_eq!(map["client_secret_key_expires_on"], "2027-05-01T00:00:00Z");
        assert_eq!(
            CredentialRecord::from_siblings(&map, "client_secret"),
            record
        );
        let partial = CredentialRecord {
            key_id: Some("k-new".into()),
            ..CredentialRecord::default()
        };
        set_field(&mut map, "client_secret", &value, &partial);
        assert!(!map.contains_key("client_secret_previous_key_id"));
        assert_eq!(
            CredentialRecord::from_siblings(&map, "client_secret"),
            partial
        );
        assert_eq!(
            CredentialRecord::sibling_names("s")[3],
            "s_retire_previous_on"
        );
    }

    #[test]
    fn record_check_refuses_what_no_backend_stores() {
        let long = CredentialRecord {
            key_id: Some("k".repeat(MAX_RECORD_TEXT_CHARS + 1)),
            ..CredentialRecord::default()
        };
        assert_eq!(
            long.check("b", "n").unwrap_err().kind(),
            ErrorKind::InvalidValue
        );
        let far = CredentialRecord {
            key_expires_on: Some(datetime!(9999-12-31 23:59:59 -23:59)),
            ..CredentialRecord::default()
        };
        assert!(far.check("b", "n").is_err());
        assert!(CredentialRecord::default().check("b", "n").is_ok());
    }
}
