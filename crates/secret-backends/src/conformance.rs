//! The conformance suite every backend must pass against its real server.
//!
//! One set of checks, so that "not found", "unchanged", expiry round trips and error hygiene
//! mean the same thing for every backend. Each backend's test file builds a [`Harness`] for a
//! store pointed at a real server (or a temp dir) and calls the checks, one `#[tokio::test]`
//! per check, so a failure names the property that broke:
//!
//! ```text
//! #[tokio::test]
//! async fn missing_secret_is_not_found() {
//!     conformance::missing_secret_is_not_found(&harness()).await;
//! }
//! ```
//!
//! Checks panic with a message showing the expected and the actual value. Every error a check
//! sees is scanned: its `Display`, `Debug` and whole source chain must not contain a token
//! that was written (nor, for [`authentication_refused`], the refused credential).

use std::error::Error as _;
use std::sync::atomic::{AtomicU64, Ordering};

use secrecy::{ExposeSecret, SecretString};
use time::{Duration, OffsetDateTime};

use crate::{
    BackendError, ErrorKind, Format, SecretStore, TokenPayload, WriteOutcome, WritePrecondition,
};

/// The managed-by marker the suite writes.
pub const MANAGED_BY: &str = "secret-sync-conformance";

/// A store under test and what the suite needs to know about its backend.
pub struct Harness {
    /// The store, pointed at a real server (or a temp dir), with valid credentials.
    pub store: Box<dyn SecretStore>,
    /// Returns a name that does not exist yet in `store` (unique per call).
    pub fresh_name: Box<dyn Fn() -> String + Send + Sync>,
    /// The formats this backend can write.
    pub formats: Vec<Format>,
    /// Which field to read to get the token back after writing in a format (`None`: the whole
    /// value). [`default_read_back`] fits backends whose raw value is the bare token.
    pub read_back: fn(Format) -> Option<&'static str>,
    /// A name this backend must refuse.
    pub invalid_name: String,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("store", &self.store)
            .field("formats", &self.formats)
            .field("invalid_name", &self.invalid_name)
            .finish_non_exhaustive()
    }
}

/// Raw reads back the whole value, JSON the `access_token` field.
pub fn default_read_back(format: Format) -> Option<&'static str> {
    match format {
        Format::Raw => None,
        Format::Json => Some("access_token"),
    }
}

/// A token that is unique per call, shaped like a JWT.
pub fn unique_token() -> SecretString {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    SecretString::from(format!("eyJhbGciOiJub25lIn0.conformance-{nanos}-{n}.c2ln"))
}

/// A payload for `token` expiring `minutes` from now.
pub fn payload(token: &SecretString, minutes: i64, format: Format) -> TokenPayload {
    TokenPayload::new(
        token.clone(),
        "Bearer",
        OffsetDateTime::now_utc() + Duration::minutes(minutes),
        MANAGED_BY,
        format,
    )
    .expect("the suite builds valid payloads")
}

/// When [`fixed_payload`]'s payloads expire, so that a test can assert the stored expiry.
pub const FIXED_EXPIRY: OffsetDateTime = time::macros::datetime!(2026-11-24 06:00 UTC);

/// A payload for `token` expiring at [`FIXED_EXPIRY`], managed by `secret-sync` (the marker
/// the daemon writes, unlike [`payload`]'s [`MANAGED_BY`]).
pub fn fixed_payload(token: &str, format: Format) -> TokenPayload {
    TokenPayload::new(
        SecretString::from(token),
        "Bearer",
        FIXED_EXPIRY,
        "secret-sync",
        format,
    )
    .expect("the suite builds valid payloads")
}

/// The names in `dir`, sorted (for the file backend's tests: what a write left there).
pub fn dir_entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Asserts that nothing a user could see of `err` contains any of `secrets`.
pub fn assert_no_leak(err: &BackendError, secrets: &[&str]) {
    let mut seen = vec![err.to_string(), format!("{err:?}")];
    let mut source = err.source();
    while let Some(cause) = source {
        seen.push(cause.to_string());
        seen.push(format!("{cause:?}"));
        source = cause.source();
    }
    for secret in secrets {
        for text in &seen {
            assert!(
                !text.contains(secret),
                "an error leaks a secret value: {text}"
            );
        }
    }
}

fn assert_kind(err: &BackendError, expected: ErrorKind, what: &str) {
    assert_eq!(
        err.kind(),
        expected,
        "{what}: expected an error of kind {expected:?}, got {:?}: {err}",
        err.kind()
    );
}

async fn read_token(h: &Harness, name: &str, format: Format) -> String {
    let got = h
        .store
        .read(name, (h.read_back)(format))
        .await
        .unwrap_or_else(|e| panic!("reading back {name} ({format:?}) failed: {e}"));
    got.expose_secret().to_owned()
}

/// A secret that does not exist is `NotFound` on read (not an empty value) and `None` as metadata.
pub async fn missing_secret_is_not_found(h: &Harness) {
    let name = (h.fresh_name)();
    let err = h
        .store
        .read(&name, None)
        .await
        .expect_err("reading a missing secret must fail, not return a value");
    assert_kind(&err, ErrorKind::NotFound, "read of a missing secret");
    assert_eq!(
        err.secret(),
        Some(name.as_str()),
        "the error names the secret: {err}"
    );
    assert!(
        err.to_string().contains(&name),
        "the message names the secret: {err}"
    );
    let meta = h
        .store
        .metadata(&name)
        .await
        .expect("metadata of a missing secret");
    assert_eq!(meta, None, "metadata of a missing secret");
}

/// A write creates the secret and the token reads back, in every supported format.
pub async fn write_then_read_back(h: &Harness) {
    for &format in &h.formats {
        let name = (h.fresh_name)();
        let token = unique_token();
        let outcome = h
            .store
            .write(
                &name,
                &payload(&token, 60, format),
                &WritePrecondition::unread(false),
            )
            .await;
        let outcome = outcome.unwrap_or_else(|e| panic!("writing {name} ({format:?}) failed: {e}"));
        assert_eq!(
            outcome,
            WriteOutcome::Created,
            "first write of {name} ({format:?})"
        );
        assert_eq!(
            read_token(h, &name, format).await,
            token.expose_secret(),
            "token read back from {name} ({format:?})"
        );
    }
}

/// A second write with another token updates the secret; the new token and expiry read back.
pub async fn overwrite(h: &Harness) {
    for &format in &h.formats {
        let name = (h.fresh_name)();
        let first = unique_token();
        h.store
            .write(
                &name,
                &payload(&first, 30, format),
                &WritePrecondition::unread(false),
            )
            .await
            .expect("first write");
        let second = unique_token();
        let new = payload(&second, 90, format);
        let outcome = h
            .store
            .write(&name, &new, &WritePrecondition::unread(false))
            .await
            .expect("second write");
        assert_eq!(
            outcome,
            WriteOutcome::Updated,
            "overwrite of {name} ({format:?})"
        );
        assert_eq!(
            read_token(h, &name, format).await,
            second.expose_secret(),
            "token after overwrite"
        );
        let meta = h
            .store
            .metadata(&name)
            .await
            .expect("metadata")
            .expect("the secret exists");
        assert_eq!(
            meta.expires_on,
            Some(new.expires_on()),
            "expiry after overwrite ({format:?})"
        );
    }
}

/// Expiry and managed-by marker written with a token come back from `metadata` (no value read).
pub async fn metadata_round_trip(h: &Harness) {
    for &format in &h.formats {
        let name = (h.fresh_name)();
        let written = payload(&unique_token(), 75, format);
        h.store
            .write(&name, &written, &WritePrecondition::unread(false))
            .await
            .expect("write");
        let meta = h
            .store
            .metadata(&name)
            .await
            .expect("metadata")
            .unwrap_or_else(|| panic!("metadata of {name} is None right after writing it"));
        assert_eq!(
            meta.expires_on,
            Some(written.expires_on()),
            "expires_on ({format:?})"
        );
        assert_eq!(
            meta.managed_by.as_deref(),
            Some(MANAGED_BY),
            "managed_by ({format:?})"
        );
    }
}

/// Writing the token that is already stored writes nothing and says `Unchanged`.
pub async fn unchanged_write(h: &Harness) {
    for &format in &h.formats {
        let name = (h.fresh_name)();
        let written = payload(&unique_token(), 60, format);
        h.store
            .write(&name, &written, &WritePrecondition::unread(false))
            .await
            .expect("first write");
        let before = h
            .store
            .metadata(&name)
            .await
            .expect("metadata")
            .expect("exists");
        let outcome = h
            .store
            .write(&name, &written, &WritePrecondition::unread(false))
            .await
            .expect("second write");
        assert_eq!(
            outcome,
            WriteOutcome::Unchanged,
            "same token written twice ({format:?})"
        );
        let after = h
            .store
            .metadata(&name)
            .await
            .expect("metadata")
            .expect("exists");
        assert_eq!(
            after.version, before.version,
            "an unchanged write created a new version"
        );
    }
}

/// Asking for a field that is not in a JSON-shaped secret is `FieldNotFound` and leaks nothing.
pub async fn missing_field(h: &Harness) {
    let Some(&format) = h.formats.iter().find(|&&f| (h.read_back)(f).is_some()) else {
        return;
    };
    let name = (h.fresh_name)();
    let token = unique_token();
    h.store
        .write(
            &name,
            &payload(&token, 60, format),
            &WritePrecondition::unread(false),
        )
        .await
        .expect("write");
    let err = h
        .store
        .read(&name, Some("no_such_field"))
        .await
        .expect_err("a missing field must be an error");
    assert_kind(&err, ErrorKind::FieldNotFound, "read of a missing field");
    assert!(
        err.to_string().contains("no_such_field"),
        "the message names the field: {err}"
    );
    assert_no_leak(&err, &[token.expose_secret()]);
}

/// An invalid name and an oversized value are refused before any network call: `offline` is the
/// same backend pointed at a closed port (for a local backend, any store), so reaching the
/// network would give `Unreachable` instead.
pub async fn refused_before_network(h: &Harness, offline: &dyn SecretStore) {
    let name = (h.fresh_name)();
    let token = unique_token();
    for store in [h.store.as_ref(), offline] {
        let err = store
            .read(&h.invalid_name, None)
            .await
            .expect_err("read of an invalid name");
        assert_kind(&err, ErrorKind::InvalidName, "read of an invalid name");
        let err = store
            .metadata(&h.invalid_name)
            .await
            .expect_err("metadata of an invalid name");
        assert_kind(&err, ErrorKind::InvalidName, "metadata of an invalid name");
        let err = store
            .write(
                &h.invalid_name,
                &payload(&token, 60, h.formats[0]),
                &WritePrecondition::unread(false),
            )
            .await
            .expect_err("write to an invalid name");
        assert_kind(&err, ErrorKind::InvalidName, "write to an invalid name");

        let huge = SecretString::from("x".repeat(store.max_value_bytes() + 1));
        let err = store
            .write(
                &name,
                &payload(&huge, 60, Format::Raw),
                &WritePrecondition::unread(false),
            )
            .await
            .expect_err("an oversized write");
        assert_kind(&err, ErrorKind::ValueTooLarge, "an oversized write");
        assert_no_leak(&err, &[huge.expose_secret()]);
    }
    let meta = h.store.metadata(&name).await.expect("metadata");
    assert_eq!(meta, None, "a refused write must not create the secret");
}

/// A store whose server is down answers `Unreachable` (retryable) for every operation, quickly.
pub async fn server_unreachable(h: &Harness, unreachable: &dyn SecretStore) {
    let name = (h.fresh_name)();
    let token = unique_token();
    let started = std::time::Instant::now();
    let errors = [
        unreachable
            .read(&name, None)
            .await
            .expect_err("read from a closed port"),
        unreachable
            .metadata(&name)
            .await
            .expect_err("metadata from a closed port"),
        unreachable
            .write(
                &name,
                &payload(&token, 60, h.formats[0]),
                &WritePrecondition::unread(false),
            )
            .await
            .expect_err("write to a closed port"),
    ];
    for err in &errors {
        assert_kind(
            err,
            ErrorKind::Unreachable,
            "an operation against a closed port",
        );
        assert!(err.is_retryable(), "unreachable must be retryable: {err}");
        assert_no_leak(err, &[token.expose_secret()]);
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "a closed port took {:?} to report",
        started.elapsed()
    );
}

/// A store with a wrong credential is refused with `Unauthorized` (or `Forbidden`), and the
/// message does not contain the credential. `credential` is the wrong secret the store holds.
pub async fn authentication_refused(h: &Harness, bad_auth: &dyn SecretStore, credential: &str) {
    let name = (h.fresh_name)();
    let token = unique_token();
    assert!(
        !format!("{bad_auth:?}").contains(credential),
        "the store's Debug shows its credential: {bad_auth:?}"
    );
    let errors = [
        bad_auth
            .read(&name, None)
            .await
            .expect_err("read with a bad credential"),
        bad_auth
            .metadata(&name)
            .await
            .expect_err("metadata with a bad credential"),
        bad_auth
            .write(
                &name,
                &payload(&token, 60, h.formats[0]),
                &WritePrecondition::unread(false),
            )
            .await
            .expect_err("write with a bad credential"),
    ];
    for err in &errors {
        assert!(
            matches!(err.kind(), ErrorKind::Unauthorized | ErrorKind::Forbidden),
            "expected Unauthorized or Forbidden, got {:?}: {err}",
            err.kind()
        );
        assert!(
            !err.is_retryable(),
            "a refused credential is not retryable: {err}"
        );
        assert_no_leak(err, &[credential, token.expose_secret()]);
    }
}

/// A write whose first attempts the server throttles still succeeds (the backend retried).
/// The caller arms its server's throttling for `store` before calling this.
pub async fn throttling_retried(h: &Harness, throttled: &dyn SecretStore) {
    let name = (h.fresh_name)();
    let token = unique_token();
    let format = h.formats[0];
    let outcome = throttled
        .write(
            &name,
            &payload(&token, 60, format),
            &WritePrecondition::unread(false),
        )
        .await
        .unwrap_or_else(|e| panic!("a throttled write was not retried to success: {e}"));
    assert_eq!(outcome, WriteOutcome::Created, "throttled write");
    assert_eq!(
        read_token(h, &name, format).await,
        token.expose_secret(),
        "token after throttling"
    );
}

/// A secret someone else creates between the metadata read and the write is not overwritten.
///
/// The race, made deterministic: the suite reads the metadata (no secret), then
/// `create_as_other(name)` creates the secret through another client (the raw API, without
/// secret-sync's marker), then the suite writes with the precondition of its read. The write
/// fails with `Conflict`, saying so and naming `adopt`, and the other writer's value is intact.
/// The same write with `adopt` set takes the secret over.
pub async fn created_since_read_is_not_overwritten(h: &Harness, create_as_other: &dyn Fn(&str)) {
    let name = (h.fresh_name)();
    let format = h.formats[0];
    let token = unique_token();
    let seen = h
        .store
        .metadata(&name)
        .await
        .expect("metadata before the write");
    assert_eq!(seen, None, "a fresh name exists already");
    create_as_other(&name);
    let theirs = h
        .store
        .read(&name, None)
        .await
        .expect("reading what the other writer created");
    let err = h
        .store
        .write(
            &name,
            &payload(&token, 60, format),
            &WritePrecondition::from_read(seen.clone(), false),
        )
        .await
        .expect_err("a write over a secret someone else created since the read must fail");
    assert_kind(
        &err,
        ErrorKind::Conflict,
        "a write over a secret created since the read",
    );
    let text = err.to_string();
    assert!(
        text.contains("someone else wrote this secret since secret-sync read it")
            && text.contains("adopt = true"),
        "the error says what happened and what to do: {text}"
    );
    assert_no_leak(&err, &[token.expose_secret(), theirs.expose_secret()]);
    let after = h
        .store
        .read(&name, None)
        .await
        .expect("reading the secret after the refused write");
    assert_eq!(
        after.expose_secret(),
        theirs.expose_secret(),
        "the other writer's value was overwritten"
    );

    let adopted = h
        .store
        .write(
            &name,
            &payload(&token, 60, format),
            &WritePrecondition::from_read(seen, true),
        )
        .await
        .unwrap_or_else(|e| panic!("with adopt, the write takes the secret over: {e}"));
    assert_eq!(
        adopted,
        WriteOutcome::Updated,
        "an adopted secret is updated"
    );
    assert_eq!(
        read_token(h, &name, format).await,
        token.expose_secret(),
        "token after adopting"
    );
}

/// The checks that need only the store itself (not the offline/bad-auth/throttled variants).
pub async fn run_basic(h: &Harness) {
    missing_secret_is_not_found(h).await;
    write_then_read_back(h).await;
    overwrite(h).await;
    metadata_round_trip(h).await;
    unchanged_write(h).await;
    missing_field(h).await;
}

// ---- Writing a value back (SecretStore::read_stored / write_value) ----
//
// `put_raw(name, text)` writes `text` as the whole secret through another client (the raw API,
// as someone editing the secret by hand would), creating it or adding a version. `text` is
// always a JSON object, which every backend can hold as a whole value (Vault as its KV map).

/// A value that is unique per call, shaped like an Entra client secret.
pub fn unique_secret() -> String {
    let token = unique_token();
    let tail = token
        .expose_secret()
        .rsplit('.')
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    format!("Zq8~{tail}")
}

/// A whole value every backend can store (a JSON object: Vault stores a KV map) holding a
/// fresh [`unique_secret`], and that secret.
fn whole_value() -> (crate::SecretValue, String) {
    let secret = unique_secret();
    let text = serde_json::json!({ "secret": secret }).to_string();
    (
        crate::SecretValue::new(SecretString::from(text)).expect("a valid value"),
        secret,
    )
}

fn value(text: &str) -> crate::SecretValue {
    crate::SecretValue::new(SecretString::from(text)).expect("a valid value")
}

/// A record with every field set, unique per call.
pub fn full_record() -> crate::CredentialRecord {
    let n = unique_secret();
    crate::CredentialRecord {
        key_id: Some(format!("key-{n}")),
        key_expires_on: Some(FIXED_EXPIRY),
        previous_key_id: Some("0f1e2d3c-0000-4000-8000-000000000001".to_owned()),
        retire_previous_on: Some(FIXED_EXPIRY - Duration::days(100)),
        installation: Some("inst-7f3a".to_owned()),
    }
}

async fn stored(h: &Harness, name: &str, field: Option<&str>) -> crate::StoredValue {
    h.store
        .read_stored(name, field)
        .await
        .unwrap_or_else(|e| panic!("read_stored of {name} ({field:?}) failed: {e}"))
}

fn after_read(stored: &crate::StoredValue) -> WritePrecondition {
    assert!(
        stored.metadata.version.is_some(),
        "read_stored gives a version (or fingerprint) for a conditional write: {:?}",
        stored.metadata
    );
    WritePrecondition::from_read(Some(stored.metadata.clone()), true)
}

/// A whole value and its record: created (with a read that saw nothing), read back, replaced
/// after a read, and written again unchanged.
pub async fn value_round_trip(h: &Harness) {
    let name = (h.fresh_name)();
    let (first, _) = whole_value();
    let record = full_record();
    let outcome = h
        .store
        .write_value(
            &name,
            None,
            &first,
            &record,
            &WritePrecondition::from_read(None, true),
        )
        .await
        .unwrap_or_else(|e| panic!("creating {name} with a value failed: {e}"));
    assert_eq!(
        outcome,
        WriteOutcome::Created,
        "first value write of {name}"
    );
    let read = stored(h, &name, None).await;
    assert_eq!(
        read.value.expose_secret(),
        first.secret().expose_secret(),
        "value read back"
    );
    assert_eq!(read.record, record, "record read back");

    let (second, _) = whole_value();
    let next = crate::CredentialRecord {
        previous_key_id: record.key_id.clone(),
        installation: None,
        ..full_record()
    };
    let outcome = h
        .store
        .write_value(&name, None, &second, &next, &after_read(&read))
        .await
        .unwrap_or_else(|e| panic!("replacing the value of {name} after a read failed: {e}"));
    assert_eq!(
        outcome,
        WriteOutcome::Updated,
        "second value write of {name}"
    );
    let read = stored(h, &name, None).await;
    assert_eq!(
        read.value.expose_secret(),
        second.secret().expose_secret(),
        "value after update"
    );
    assert_eq!(
        read.record, next,
        "record after update (a field set to None is removed)"
    );
    assert_eq!(
        h.store
            .read(&name, None)
            .await
            .expect("read")
            .expose_secret(),
        second.secret().expose_secret(),
        "read sees the value read_stored sees"
    );

    let outcome = h
        .store
        .write_value(&name, None, &second, &next, &after_read(&read))
        .await
        .expect("writing the stored value again");
    assert_eq!(
        outcome,
        WriteOutcome::Unchanged,
        "the same value and record written again"
    );
    let again = stored(h, &name, None).await;
    assert_eq!(
        again.metadata.version, read.metadata.version,
        "an unchanged write made a version"
    );
}

/// One `#field` of a JSON document: the other fields survive, the record is stored in sibling
/// fields of the same document and read back.
pub async fn field_keeps_other_fields(h: &Harness, put_raw: &dyn Fn(&str, &str)) {
    let name = (h.fresh_name)();
    let old = unique_secret();
    put_raw(
        &name,
        &serde_json::json!({"client_id": "00000000-aaaa-4bbb-8ccc-000000000001",
            "client_secret": old, "tenant": "contoso"})
        .to_string(),
    );
    let read = stored(h, &name, Some("client_secret")).await;
    assert_eq!(read.value.expose_secret(), old, "the field read back");
    assert!(read.record.is_empty(), "no record yet: {:?}", read.record);
    let new = unique_secret();
    let record = full_record();
    let outcome = h
        .store
        .write_value(
            &name,
            Some("client_secret"),
            &value(&new),
            &record,
            &after_read(&read),
        )
        .await
        .unwrap_or_else(|e| panic!("writing #client_secret of {name} failed: {e}"));
    assert_eq!(
        outcome,
        WriteOutcome::Updated,
        "a field write into an existing document"
    );
    let whole = h
        .store
        .read(&name, None)
        .await
        .expect("reading the whole document");
    let doc: serde_json::Value =
        serde_json::from_str(whole.expose_secret()).expect("the document is still JSON");
    assert_eq!(
        doc["client_id"], "00000000-aaaa-4bbb-8ccc-000000000001",
        "client_id kept"
    );
    assert_eq!(doc["tenant"], "contoso", "tenant kept");
    assert_eq!(doc["client_secret"], new.as_str(), "client_secret written");
    let names = crate::CredentialRecord::sibling_names("client_secret");
    assert_eq!(
        doc[&names[0]],
        record.key_id.clone().unwrap().as_str(),
        "{}",
        names[0]
    );
    assert_eq!(doc[&names[1]], "2026-11-24T06:00:00Z", "{}", names[1]);
    assert_eq!(doc[&names[4]], "inst-7f3a", "{}", names[4]);
    let read = stored(h, &name, Some("client_secret")).await;
    assert_eq!(read.value.expose_secret(), new, "the field after the write");
    assert_eq!(read.record, record, "the record from the sibling fields");
    let unchanged = h
        .store
        .write_value(
            &name,
            Some("client_secret"),
            &value(&new),
            &record,
            &after_read(&read),
        )
        .await
        .expect("writing the same field again");
    assert_eq!(
        unchanged,
        WriteOutcome::Unchanged,
        "the same field and record written again"
    );
}

/// A whole value changed by someone else since the read is not overwritten (`Conflict`, the
/// other writer's value intact); nor is a secret that appeared since a read that saw none. A
/// record left beside a value someone else wrote reads as no record.
pub async fn value_conflict_when_changed_since_read(h: &Harness, put_raw: &dyn Fn(&str, &str)) {
    // whole value
    let name = (h.fresh_name)();
    let (first, _) = whole_value();
    h.store
        .write_value(
            &name,
            None,
            &first,
            &full_record(),
            &WritePrecondition::unread(true),
        )
        .await
        .expect("first value write");
    let read = stored(h, &name, None).await;
    let theirs = serde_json::json!({ "secret": unique_secret() }).to_string();
    put_raw(&name, &theirs);
    let (mine, mine_secret) = whole_value();
    let err = h
        .store
        .write_value(&name, None, &mine, &full_record(), &after_read(&read))
        .await
        .expect_err("a value write over a secret changed since the read must fail");
    assert_kind(
        &err,
        ErrorKind::Conflict,
        "a value write over a secret changed since the read",
    );
    assert!(
        err.to_string()
            .contains("changed this secret since secret-sync read it"),
        "the error says what happened: {err}"
    );
    assert_no_leak(&err, &[&mine_secret, &theirs]);
    let now = stored(h, &name, None).await;
    assert_eq!(
        now.value.expose_secret(),
        theirs,
        "the other writer's value was overwritten"
    );
    assert!(
        now.record.is_empty(),
        "the record of the value that was replaced reads as the new value's: {:?}",
        now.record
    );

    // a create after a read that saw nothing
    let name = (h.fresh_name)();
    let seen = h.store.metadata(&name).await.expect("metadata");
    assert_eq!(seen, None, "a fresh name exists already");
    let theirs = serde_json::json!({ "secret": unique_secret() }).to_string();
    put_raw(&name, &theirs);
    let (mine, mine_secret) = whole_value();
    let err = h
        .store
        .write_value(
            &name,
            None,
            &mine,
            &full_record(),
            &WritePrecondition::from_read(seen, true),
        )
        .await
        .expect_err("a create over a secret that appeared since the read must fail");
    assert_kind(
        &err,
        ErrorKind::Conflict,
        "a create over a secret that appeared since the read",
    );
    assert_no_leak(&err, &[&mine_secret, &theirs]);
    assert_eq!(
        h.store
            .read(&name, None)
            .await
            .expect("read")
            .expose_secret(),
        theirs,
        "the secret that appeared was overwritten"
    );
}

/// A JSON document changed by someone else since the read is not overwritten by a `#field`
/// write (`Conflict`, the other writer's document intact).
pub async fn field_conflict_when_changed_since_read(h: &Harness, put_raw: &dyn Fn(&str, &str)) {
    let name = (h.fresh_name)();
    put_raw(
        &name,
        &serde_json::json!({"client_secret": unique_secret(), "x": "1"}).to_string(),
    );
    let read = stored(h, &name, Some("client_secret")).await;
    let theirs = serde_json::json!({"client_secret": unique_secret(), "x": "2"}).to_string();
    put_raw(&name, &theirs);
    let mine = unique_secret();
    let err = h
        .store
        .write_value(
            &name,
            Some("client_secret"),
            &value(&mine),
            &full_record(),
            &after_read(&read),
        )
        .await
        .expect_err("a field write over a document changed since the read must fail");
    assert_kind(
        &err,
        ErrorKind::Conflict,
        "a field write over a document changed since the read",
    );
    assert_no_leak(&err, &[&mine, &theirs]);
    let doc: serde_json::Value = serde_json::from_str(
        h.store
            .read(&name, None)
            .await
            .expect("read")
            .expose_secret(),
    )
    .unwrap();
    let expected: serde_json::Value = serde_json::from_str(&theirs).unwrap();
    assert_eq!(doc, expected, "the other writer's document was changed");
}

/// No error of a value write or read carries the value: an oversized value, a field write into
/// a value that is not a JSON object, a missing field, an unusable record.
pub async fn value_never_echoed(h: &Harness, put_raw: &dyn Fn(&str, &str)) {
    let name = (h.fresh_name)();
    let secret = unique_secret();
    let huge = format!("{secret}{}", "x".repeat(h.store.max_value_bytes() + 1));
    let err = h
        .store
        .write_value(
            &name,
            None,
            &value(&huge),
            &full_record(),
            &WritePrecondition::unread(true),
        )
        .await
        .expect_err("an oversized value");
    assert_kind(&err, ErrorKind::ValueTooLarge, "an oversized value");
    assert_no_leak(&err, &[&secret]);
    assert_eq!(
        h.store.metadata(&name).await.expect("metadata"),
        None,
        "a refused write created it"
    );

    let stored_secret = unique_secret();
    put_raw(
        &name,
        &serde_json::json!({"client_secret": stored_secret}).to_string(),
    );
    let err = h
        .store
        .read_stored(&name, Some("no_such_field"))
        .await
        .expect_err("a missing field");
    assert_kind(
        &err,
        ErrorKind::FieldNotFound,
        "read_stored of a missing field",
    );
    assert_no_leak(&err, &[&stored_secret]);

    let read = stored(h, &name, Some("client_secret")).await;
    let bad = crate::CredentialRecord {
        key_id: Some(format!("{secret}\n")),
        ..crate::CredentialRecord::default()
    };
    let err = h
        .store
        .write_value(
            &name,
            Some("client_secret"),
            &value(&secret),
            &bad,
            &after_read(&read),
        )
        .await
        .expect_err("a record with a control character");
    assert_kind(
        &err,
        ErrorKind::InvalidValue,
        "a record that cannot be stored",
    );
    assert_no_leak(&err, &[&secret, &stored_secret]);

    // a field of a value that is not a JSON object (a backend that stores only key/value
    // maps refuses such a whole value instead)
    let name = (h.fresh_name)();
    let plain = unique_secret();
    let none = crate::CredentialRecord::default();
    match h
        .store
        .write_value(
            &name,
            None,
            &value(&plain),
            &none,
            &WritePrecondition::unread(true),
        )
        .await
    {
        Ok(_) => {
            let err = h
                .store
                .write_value(
                    &name,
                    Some("client_secret"),
                    &value(&secret),
                    &none,
                    &WritePrecondition::unread(true),
                )
                .await
                .expect_err("a field write into a value that is not a JSON object");
            assert_kind(
                &err,
                ErrorKind::InvalidValue,
                "a field write into a plain value",
            );
            assert_no_leak(&err, &[&secret, &plain]);
            assert_eq!(
                h.store
                    .read(&name, None)
                    .await
                    .expect("read")
                    .expose_secret(),
                plain,
                "a refused field write changed the value"
            );
        }
        Err(err) => {
            assert!(
                matches!(
                    err.kind(),
                    ErrorKind::InvalidValue | ErrorKind::InvalidConfig
                ),
                "a whole value a map store cannot hold: expected InvalidValue or InvalidConfig, \
                 got {:?}: {err}",
                err.kind()
            );
            assert_no_leak(&err, &[&plain]);
        }
    }
}
