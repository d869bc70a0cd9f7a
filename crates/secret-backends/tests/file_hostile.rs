//! The file backend against a local user who can write in its `dir`: FIFOs, symlinks to
//! devices, huge files, torn sidecars, temporary files left by a killed writer, a path
//! component swapped for a symlink while writes go on, and timestamps out of range. Whatever
//! such a user puts there, every call ends quickly (a clear error, or a repair), reads a
//! bounded amount, and never writes outside `dir`.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use secrecy::ExposeSecret;
use secret_backends::WritePrecondition;
use secret_backends::conformance::{dir_entries, fixed_payload};
use secret_backends::{ErrorKind, FileOptions, FileStore, Format, SecretStore, TokenPayload};
use secret_backends::{SecretMetadata, WriteOutcome};
use time::macros::datetime;

const TOKEN: &str = "eyJ0eXAiOiJKV1QifQ.file-hostile.sig";
/// Longer than any of these calls takes when it does not hang.
const QUICK: Duration = Duration::from_secs(5);

fn store(dir: &Path) -> FileStore {
    FileStore::new("local", FileOptions::new(dir))
}

fn following(dir: &Path) -> FileStore {
    FileStore::new(
        "local",
        FileOptions {
            follow_symlinks: true,
            ..FileOptions::new(dir)
        },
    )
}

fn mkfifo(path: &Path) {
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        path,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
}

async fn quickly<T>(what: &str, call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(QUICK, call)
        .await
        .unwrap_or_else(|_| panic!("{what} still running after {QUICK:?}: it hangs"))
}

async fn metadata(store: &FileStore, name: &str) -> Result<Option<SecretMetadata>, String> {
    quickly("metadata", store.metadata(name))
        .await
        .map_err(|e| e.to_string())
}

async fn write(store: &FileStore, name: &str, p: &TokenPayload) -> Result<WriteOutcome, String> {
    quickly(
        "write",
        store.write(name, p, &WritePrecondition::unread(false)),
    )
    .await
    .map_err(|e| e.to_string())
}

async fn read(store: &FileStore, name: &str) -> Result<String, String> {
    quickly("read", store.read(name, None))
        .await
        .map(|v| v.expose_secret().to_owned())
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_sidecar_is_a_clear_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    write(&store, "t", &fixed_payload(TOKEN, Format::Raw))
        .await
        .unwrap();
    let sidecar = dir.path().join("t.meta.json");
    fs::remove_file(&sidecar).unwrap();
    mkfifo(&sidecar);
    let err = metadata(&store, "t").await.unwrap_err();
    assert!(
        err.contains("t.meta.json") && err.contains("not a regular file"),
        "{err}"
    );
    let err = write(&store, "t", &fixed_payload("other.token", Format::Raw))
        .await
        .unwrap_err();
    assert!(err.contains("not a regular file"), "{err}");
    assert_eq!(fs::read_to_string(dir.path().join("t")).unwrap(), TOKEN);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fifo_target_is_a_clear_error_not_a_hang_and_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let target = dir.path().join("t");
    mkfifo(&target);
    for err in [
        metadata(&store, "t").await.unwrap_err(),
        read(&store, "t").await.unwrap_err(),
        write(&store, "t", &fixed_payload(TOKEN, Format::Json))
            .await
            .unwrap_err(),
    ] {
        assert!(err.contains("is a FIFO, not a regular file"), "{err}");
        assert!(err.contains(&target.display().to_string()), "{err}");
    }
    use std::os::unix::fs::FileTypeExt;
    assert!(fs::symlink_metadata(&target).unwrap().file_type().is_fifo());
    assert_eq!(dir_entries(dir.path()), ["t"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_symlinked_to_dev_zero_is_refused_even_when_symlinks_are_followed() {
    let dir = tempfile::tempdir().unwrap();
    write(&store(dir.path()), "t", &fixed_payload(TOKEN, Format::Raw))
        .await
        .unwrap();
    let sidecar = dir.path().join("t.meta.json");
    fs::remove_file(&sidecar).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &sidecar).unwrap();
    for store in [store(dir.path()), following(dir.path())] {
        let err = metadata(&store, "t").await.unwrap_err();
        assert!(
            err.contains("t.meta.json") && err.contains("symlink"),
            "{err}"
        );
        let err = write(&store, "t", &fixed_payload("other.token", Format::Raw))
            .await
            .unwrap_err();
        assert!(err.contains("symlink"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_followed_symlink_to_a_device_is_refused_and_a_huge_file_is_not_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero")).unwrap();
    let err = read(&following(dir.path()), "zero").await.unwrap_err();
    assert!(err.contains("not a regular file"), "{err}");
    let err = read(&store(dir.path()), "zero").await.unwrap_err();
    assert!(err.contains("symlink"), "{err}");

    fs::write(dir.path().join("big"), vec![b'x'; 2 * 1024 * 1024]).unwrap();
    let err = quickly("read", store(dir.path()).read("big", None))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidValue, "{err}");
    assert!(err.to_string().contains("larger than 1 MiB"), "{err}");
}

#[tokio::test]
async fn a_torn_or_edited_sidecar_counts_as_ours_without_expiry_and_is_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let same = fixed_payload(TOKEN, Format::Raw);
    write(&store, "t", &same).await.unwrap();
    let sidecar = dir.path().join("t.meta.json");
    let whole = fs::read_to_string(&sidecar).unwrap();
    let half = &whole[..whole.len() / 2];
    for broken in ["", half, "not json", "[1, 2]", "\u{0}\u{1}"] {
        fs::write(&sidecar, broken).unwrap();
        let meta = store.metadata("t").await.unwrap().unwrap();
        assert_eq!(meta.expires_on, None, "{broken:?}");
        assert_eq!(
            meta.managed_by.as_deref(),
            Some("secret-sync"),
            "{broken:?}"
        );
        assert_eq!(
            write(&store, "t", &same).await.unwrap(),
            WriteOutcome::Updated,
            "{broken:?}"
        );
        assert_eq!(fs::read_to_string(&sidecar).unwrap(), whole, "{broken:?}");
    }
    // Bytes that are not UTF-8 in the sidecar: the same.
    fs::write(&sidecar, [0xff, 0xfe, b'{']).unwrap();
    let meta = store.metadata("t").await.unwrap().unwrap();
    assert_eq!(meta.managed_by.as_deref(), Some("secret-sync"));
}

#[tokio::test]
async fn an_unparseable_json_target_without_a_sidecar_is_not_taken_for_ours() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    fs::write(dir.path().join("t"), r#"{"access_token": "trunc"#).unwrap();
    let meta = store.metadata("t").await.unwrap().unwrap();
    assert_eq!((meta.expires_on, meta.managed_by), (None, None));
}

#[tokio::test]
async fn a_stored_expiry_out_of_range_is_an_unknown_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    fs::write(
        dir.path().join("t"),
        format!(
            r#"{{"access_token": "{TOKEN}", "expires_on": 1e300, "expires_at": "9999-12-31T23:59:59-23:59", "managed_by": "secret-sync"}}"#
        ),
    )
    .unwrap();
    let meta = store.metadata("t").await.unwrap().unwrap();
    assert_eq!(meta.expires_on, None);
    assert_eq!(meta.managed_by.as_deref(), Some("secret-sync"));
    assert_eq!(
        write(&store, "t", &fixed_payload(TOKEN, Format::Json))
            .await
            .unwrap(),
        WriteOutcome::Updated
    );
    let meta = store.metadata("t").await.unwrap().unwrap();
    assert_eq!(meta.expires_on, Some(datetime!(2026-11-24 06:00 UTC)));
}

#[tokio::test]
async fn an_mtime_after_year_9999_is_no_updated_time_and_no_panic() {
    // ext4 caps timestamps at 2446; tmpfs keeps 64-bit seconds.
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let store = store(dir.path());
    write(&store, "t", &fixed_payload(TOKEN, Format::Json))
        .await
        .unwrap();
    // Year 10000 and a bit.
    let far = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_800 + 86_400);
    fs::File::options()
        .write(true)
        .open(dir.path().join("t"))
        .unwrap()
        .set_modified(far)
        .unwrap();
    assert_eq!(
        fs::metadata(dir.path().join("t"))
            .unwrap()
            .modified()
            .unwrap(),
        far
    );
    let meta = store.metadata("t").await.unwrap().unwrap();
    assert_eq!(meta.updated_on, None);
    assert_eq!(meta.expires_on, Some(datetime!(2026-11-24 06:00 UTC)));
}

/// Temporary files as a writer killed with SIGKILL leaves them (another pid, another nonce).
fn leave_stale_temporary_files(dir: &Path) -> Vec<&'static str> {
    let stale = vec![".t.tmp-4242-0badf00d-0", ".t.meta.json.tmp-4242-0badf00d-1"];
    for name in &stale {
        fs::write(dir.join(name), "a token nobody manages").unwrap();
    }
    stale
}

#[tokio::test]
async fn the_next_write_of_a_target_removes_its_stale_temporary_files_and_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let eager = FileStore::new(
        "local",
        FileOptions {
            stale_temp_after: Duration::ZERO,
            ..FileOptions::new(dir.path())
        },
    );
    write(&eager, "t", &fixed_payload(TOKEN, Format::Raw))
        .await
        .unwrap();
    leave_stale_temporary_files(dir.path());
    // Not this backend's temporary files of `t`: another target's, and names that only look alike.
    let others = [
        ".other.tmp-4242-0badf00d-0",
        ".t.tmp-notours",
        ".t.tmp-5.tmp-x",
        "t.tmp-4242-0badf00d-0",
    ];
    for name in others {
        fs::write(dir.path().join(name), "x").unwrap();
    }
    // The default age keeps temporary files younger than a few minutes (a write in progress).
    write(
        &store(dir.path()),
        "t",
        &fixed_payload("other.token", Format::Raw),
    )
    .await
    .unwrap();
    assert!(dir.path().join(".t.tmp-4242-0badf00d-0").exists());

    write(&eager, "t", &fixed_payload(TOKEN, Format::Raw))
        .await
        .unwrap();
    let mut expected: Vec<String> = others.iter().map(|s| s.to_string()).collect();
    expected.extend(["t".to_owned(), "t.meta.json".to_owned()]);
    expected.sort();
    assert_eq!(dir_entries(dir.path()), expected);

    // An unchanged write cleans up too, and so does the sweep the daemon runs at start.
    leave_stale_temporary_files(dir.path());
    assert_eq!(
        write(&eager, "t", &fixed_payload(TOKEN, Format::Raw))
            .await
            .unwrap(),
        WriteOutcome::Unchanged
    );
    assert_eq!(dir_entries(dir.path()), expected);
    leave_stale_temporary_files(dir.path());
    assert_eq!(eager.remove_stale_temp_files("t").await.unwrap(), 2);
    assert_eq!(dir_entries(dir.path()), expected);
    assert_eq!(eager.remove_stale_temp_files("missing/t").await.unwrap(), 0);
}

/// In a directory of many targets, a write does not list the whole directory again for stale
/// temporary files while its last listing is younger than half of `stale_temp_after` (issue 15:
/// with 100,000 targets in one directory every write listed 200,000 names); in a small one it
/// does, as before.
#[tokio::test]
async fn a_large_directory_is_listed_for_stale_temporary_files_once_per_half_their_age() {
    let age = |path: &Path| {
        let file = fs::File::options().write(true).open(path).unwrap();
        file.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
    };
    for (targets, listed_again) in [(300, false), (10, true)] {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        for n in 0..targets {
            write(&store, &format!("t{n}"), &fixed_payload(TOKEN, Format::Raw))
                .await
                .unwrap();
        }
        // Left after the last listing, an hour old: stale by the default 5 minutes.
        let temp = dir.path().join(".t0.tmp-4242-0badf00d-0");
        fs::write(&temp, "a token nobody manages").unwrap();
        age(&temp);
        write(&store, "t0", &fixed_payload("other.token", Format::Raw))
            .await
            .unwrap();
        assert_eq!(temp.exists(), !listed_again, "{targets} targets");
        // A store that lists at once (as after half of stale_temp_after) removes it.
        let eager = FileStore::new(
            "local",
            FileOptions {
                stale_temp_after: Duration::ZERO,
                ..FileOptions::new(dir.path())
            },
        );
        write(&eager, "t0", &fixed_payload(TOKEN, Format::Raw))
            .await
            .unwrap();
        assert!(!temp.exists(), "{targets} targets");
    }
}

/// Swaps `dir/apps` for a symlink to `outside` and back (an atomic exchange, so `apps` is never
/// missing), as fast as it can, while writes go on: nothing may ever land outside `dir`. On
/// tmpfs, so that thousands of durable writes take little time.
#[tokio::test(flavor = "multi_thread")]
async fn a_path_component_swapped_for_a_symlink_in_a_loop_never_redirects_a_write() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let outside = tempfile::tempdir_in("/dev/shm").unwrap();
    let store = store(dir.path());
    write(&store, "apps/t", &fixed_payload("first.token", Format::Raw))
        .await
        .unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("apps.link")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (root, stop, count) = (dir.path().to_owned(), stop.clone(), swaps.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    root.join("apps"),
                    rustix::fs::CWD,
                    root.join("apps.link"),
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .unwrap();
                swaps += 1;
                count.store(swaps, Ordering::Relaxed);
                if swaps % 2 == 1 {
                    std::thread::yield_now();
                }
            }
            swaps
        })
    };
    // At least 2,000 writes, and on a loaded machine more, until the swapper has swapped often
    // enough and both outcomes were seen (bounded: 50,000 writes or 60 s).
    let (mut written, mut refused) = (0, 0);
    let started = std::time::Instant::now();
    for i in 0..50_000 {
        let enough =
            i >= 2000 && swaps.load(Ordering::Relaxed) > 1000 && written > 0 && refused > 0;
        if enough || started.elapsed() > std::time::Duration::from_secs(60) {
            break;
        }
        let token = format!("token.number.{i}");
        match store
            .write(
                "apps/t",
                &fixed_payload(&token, Format::Raw),
                &WritePrecondition::unread(false),
            )
            .await
        {
            Ok(_) => written += 1,
            Err(_) => refused += 1,
        }
        assert_eq!(
            dir_entries(outside.path()),
            Vec::<String>::new(),
            "write {i} landed outside dir"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 1000, "the swapper hardly ran: {swaps} swaps");
    assert!(
        written > 0 && refused > 0,
        "{written} written, {refused} refused"
    );
    assert_eq!(dir_entries(outside.path()), Vec::<String>::new());
}
