//! The file backend's documents (`file.rs`), through `FileStore` as the engine uses it: the
//! token file (raw text or a JSON token document) and the sidecar of a raw token, as anyone
//! with access to the directory may have left them. Reading the metadata and the value never
//! panics and gives an expiry only in the years 1 to 9999; when the metadata could be read (as
//! the engine reads it before writing), writing a token over whatever is there works, after
//! which the metadata says exactly what was written and the same write again is `Unchanged`.
//!
//! Input: the token file's bytes, then optionally a NUL byte and the sidecar's bytes.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use secret_backends::file::SIDECAR_SUFFIX;
use secret_backends::{
    FileOptions, FileStore, Format, SecretStore, TokenPayload, WriteOutcome, WritePrecondition,
};
use time::macros::datetime;

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    sidecar: PathBuf,
    store: FileStore,
    runtime: tokio::runtime::Runtime,
}

const NAME: &str = "graph-token";

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // tmpfs where there is one: the target writes and fsyncs files on every input
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("a temporary directory");
        let path = dir.path().join(NAME);
        let sidecar = dir.path().join(format!("{NAME}{SIDECAR_SUFFIX}"));
        let store = FileStore::new("fuzz-files", FileOptions::new(dir.path()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime");
        Fixture {
            _dir: dir,
            path,
            sidecar,
            store,
            runtime,
        }
    })
}

fn in_range(t: time::OffsetDateTime) -> bool {
    (1..=9999).contains(&t.year())
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let (token_file, sidecar) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    std::fs::write(&f.path, token_file).expect("writing the token file");
    match sidecar {
        Some(bytes) => std::fs::write(&f.sidecar, bytes).expect("writing the sidecar"),
        None => match std::fs::remove_file(&f.sidecar) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("removing the sidecar: {e}"),
        },
    }

    let store = &f.store;
    f.runtime.block_on(async {
        let _ = store.read(NAME, None).await;
        let _ = store.read(NAME, Some("access_token")).await;
        // The engine writes only after reading the metadata: a file it cannot read (not UTF-8,
        // a sidecar that is not JSON) fails the target with a message saying what to repair.
        let Ok(meta) = store.metadata(NAME).await else {
            return;
        };
        let meta = meta.expect("the token file exists");
        assert!(
            meta.expires_on.is_none_or(in_range),
            "expiry {:?}",
            meta.expires_on
        );

        let format = if data.len() % 2 == 0 {
            Format::Raw
        } else {
            Format::Json
        };
        let payload = TokenPayload::new(
            SecretString::from("eyJ0eXAiOiJKV1QifQ.fuzz.token"),
            "Bearer",
            datetime!(2026-06-01 13:00:00 UTC),
            "secret-sync",
            format,
        )
        .expect("a valid payload");
        // adopt = true: whatever marker the input carries, the write may take it over
        let precondition = WritePrecondition::from_read(Some(meta), true);
        store
            .write(NAME, &payload, &precondition)
            .await
            .unwrap_or_else(|err| panic!("writing {format:?} over the input failed: {err}"));
        let meta = store
            .metadata(NAME)
            .await
            .expect("reading back what was written")
            .expect("the written token exists");
        assert_eq!(
            meta.expires_on,
            Some(payload.expires_on()),
            "{format:?}: expiry read back"
        );
        assert_eq!(
            meta.managed_by.as_deref(),
            Some("secret-sync"),
            "{format:?}: marker read back"
        );
        let precondition = WritePrecondition::from_read(Some(meta), false);
        let again = store
            .write(NAME, &payload, &precondition)
            .await
            .expect("the same write again");
        assert_eq!(
            again,
            WriteOutcome::Unchanged,
            "{format:?}: the same write again"
        );
    });
});
