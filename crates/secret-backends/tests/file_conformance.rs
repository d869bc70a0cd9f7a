//! The shared conformance suite, run against the file backend in a temp dir.
//!
//! The file backend has no server, so "unreachable", "authentication refused" and "throttling"
//! do not apply; "refused before any I/O" is checked against a store whose directory does not exist.

use std::sync::atomic::{AtomicU64, Ordering};

use secret_backends::conformance::{self, Harness};
use secret_backends::{FileOptions, FileStore, Format};

struct Fixture {
    harness: Harness,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let counter = AtomicU64::new(0);
    Fixture {
        harness: Harness {
            store: Box::new(FileStore::new("local", FileOptions::new(dir.path()))),
            fresh_name: Box::new(move || {
                format!("apps/token-{}", counter.fetch_add(1, Ordering::Relaxed))
            }),
            formats: vec![Format::Raw, Format::Json],
            read_back: conformance::default_read_back,
            invalid_name: "../outside".to_owned(),
        },
        _dir: dir,
    }
}

#[tokio::test]
async fn missing_secret_is_not_found() {
    conformance::missing_secret_is_not_found(&fixture().harness).await;
}

#[tokio::test]
async fn write_then_read_back() {
    conformance::write_then_read_back(&fixture().harness).await;
}

#[tokio::test]
async fn overwrite() {
    conformance::overwrite(&fixture().harness).await;
}

#[tokio::test]
async fn metadata_round_trip() {
    conformance::metadata_round_trip(&fixture().harness).await;
}

#[tokio::test]
async fn unchanged_write() {
    conformance::unchanged_write(&fixture().harness).await;
}

#[tokio::test]
async fn missing_field() {
    conformance::missing_field(&fixture().harness).await;
}

#[tokio::test]
async fn refused_before_any_io() {
    let f = fixture();
    let offline = FileStore::new(
        "local",
        FileOptions::new("/nonexistent/secret-sync-conformance"),
    );
    conformance::refused_before_network(&f.harness, &offline).await;
}

#[tokio::test]
async fn created_since_read_is_not_overwritten() {
    let f = fixture();
    let dir = f._dir.path().to_owned();
    conformance::created_since_read_is_not_overwritten(&f.harness, &|name| {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "someone else's value").unwrap();
    })
    .await;
}

/// Writes `text` as the file `name`, as someone editing it by hand would.
fn put_raw(dir: &std::path::Path) -> impl Fn(&str, &str) + '_ {
    move |name, text| {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
    }
}

#[tokio::test]
async fn value_round_trip() {
    conformance::value_round_trip(&fixture().harness).await;
}

#[tokio::test]
async fn field_keeps_other_fields() {
    let f = fixture();
    conformance::field_keeps_other_fields(&f.harness, &put_raw(f._dir.path())).await;
}

#[tokio::test]
async fn value_conflict_when_changed_since_read() {
    let f = fixture();
    conformance::value_conflict_when_changed_since_read(&f.harness, &put_raw(f._dir.path())).await;
}

#[tokio::test]
async fn value_never_echoed() {
    let f = fixture();
    conformance::value_never_echoed(&f.harness, &put_raw(f._dir.path())).await;
}

#[tokio::test]
async fn field_conflict_when_changed_since_read() {
    let f = fixture();
    conformance::field_conflict_when_changed_since_read(&f.harness, &put_raw(f._dir.path())).await;
}
