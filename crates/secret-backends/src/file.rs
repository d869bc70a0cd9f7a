//! The file backend: tokens and credentials in files under one directory.
//!
//! For hosts where the consumer reads a file (a sidecar, a cron job, a local tool). Writes are
//! atomic and durable: each new file is created as a temporary file beside its target (with the
//! configured mode, `0600` unless set), written and fsynced, then renamed over the target, and
//! the directory is fsynced once after the renames, so a reader sees the old file or the new one,
//! never an empty or truncated one, and once a write returns `Ok` the new content survives a
//! crash. If anything fails, the temporary files that were not renamed yet are removed.
//!
//! A `raw` write prepares both temporary files (the token's and the sidecar's, see below) before
//! renaming either, renames the token first and the sidecar second, and fsyncs the directory
//! once for both; a `json` write renames one file, fsyncs the directory, then removes a stale
//! sidecar. A write that would store what is already there (same token, expiry and managed-by)
//! writes nothing and reports [`WriteOutcome::Unchanged`]: for `raw` the sidecar is read first
//! and the token file only when the sidecar already matches (expiry, managed-by and the token's
//! fingerprint); a sidecar that is missing or does not parse counts as different, so the write
//! repairs it.
//!
//! Names are relative paths inside `dir` (`graph.json`, `apps/graph-token`); absolute paths,
//! `..` and empty segments are refused, and so is a symlink anywhere on the path unless
//! `follow_symlinks` is set. Missing parent directories below `dir` are created with mode
//! `0700`; `dir` itself never is: a target's metadata read and a write fail when it does not
//! exist (most often a typo or a volume that is not mounted), saying to create it.
//!
//! Other users may be able to write in `dir` (an emptyDir shared with an app, `/run/...`), so
//! nothing here trusts what it finds there:
//! - Every operation goes through directory handles: `dir` is opened once, then each path
//!   component with `openat(O_DIRECTORY | O_NOFOLLOW)` relative to the previous one, and the
//!   file's reads, temporary files, renames and removals are relative to its parent's handle
//!   (`openat`, `mkdirat`, `renameat`, `unlinkat`). A component swapped for a symlink after the
//!   checks cannot redirect a write: the handle still names the directory that was checked.
//!   (`follow_symlinks = true` gives this up by design: the path is resolved by name.)
//! - Every read opens with `O_NOFOLLOW | O_NONBLOCK` (a FIFO cannot block the open), checks with
//!   `fstat` that it holds a regular file, and reads at most [`MAX_VALUE_BYTES`]: a FIFO, a
//!   device, a socket or a symlink where a target or a sidecar should be is a clear error, and
//!   a target that is not a regular file is never replaced. A sidecar is never followed, even
//!   with `follow_symlinks`: secret-sync writes it, always as a regular file.
//! - A sidecar exists only because secret-sync wrote it, so one that does not parse (torn,
//!   truncated, edited) counts as secret-sync's ([`SIDECAR_OWNER`]) with no expiry: the target is
//!   rewritten. A `json` file that does not parse carries no marker, so it is not taken for ours.
//! - A writer killed mid-write (kill -9, power loss) leaves its temporary files, each holding a
//!   token. The next write of a target removes this backend's temporary files for it (and its
//!   sidecar) that are older than `stale_temp_after` (default [`DEFAULT_STALE_TEMP_AFTER`], far
//!   longer than a write takes); [`FileStore::remove_stale_temp_files`] does the same for a
//!   target that is not written (the daemon calls it for every file target at start).
//!
//! Formats ([`Format`], chosen per write):
//! - `raw`: the file is the bare token; a sidecar `<name>.meta.json` holds
//!   `{"token_type","expires_on","expires_at","managed_by","token_sha256"}`, where `token_sha256`
//!   (the first 16 hex digits of the SHA-256 of the token) names the token the sidecar describes.
//!   A sidecar beside a token it does not describe (the token file was replaced by hand, or a
//!   crash kept one rename and lost the other) or without `token_sha256` (an older version's)
//!   gives no expiry, so the next run rewrites both; its managed-by still counts.
//! - `json`: the file is `{"access_token","token_type","expires_on","expires_at","managed_by"}`.
//!
//! A value written back ([`SecretStore::write_value`]): one `#field` of a JSON object file (the
//! record in sibling fields, the document rewritten pretty-printed with every other field), or
//! the whole file, its record in the sidecar (`key_id`, `key_expires_on`, `previous_key_id`,
//! `retire_previous_on`, `installation`, and [`VALUE_SHA256`] naming the value it describes),
//! renamed before the value. The file (and sidecar) is compared with what
//! [`SecretStore::read_stored`] read (its version is a fingerprint of them) when the write
//! starts and again right before the renames.
//!
//! Reading accepts any regular file up to [`MAX_VALUE_BYTES`]: the whole content (one trailing
//! newline removed), or with `#field` one field of a JSON object file, e.g. credentials in
//! `{"client_id": "...", "client_secret": "..."}`.
//!
//! ```
//! use secret_backends::{FileOptions, FileStore};
//! // [backends.local]
//! // kind = "file"
//! // dir = "/var/lib/secret-sync"
//! // mode = "0640"              # optional, default "0600"
//! // follow_symlinks = false    # optional
//! // stale_temp_after = "5m"    # optional
//! let options = FileOptions {
//!     mode: 0o640,
//!     ..FileOptions::new("/var/lib/secret-sync")
//! };
//! let store = FileStore::new("local", options);
//! ```

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::value::{check_size, fingerprint, parse_document, set_field};
use crate::{
    BackendError, CredentialRecord, ErrorKind, Format, SecretMetadata, SecretStore, SecretValue,
    StoredToken, StoredValue, TokenPayload, WriteOutcome, WritePrecondition, changed_since_read,
    expiry_from_map, pick_field, pick_from_map,
};

/// The suffix of the sidecar that holds the expiry of a raw token file.
pub const SIDECAR_SUFFIX: &str = ".meta.json";

/// The managed-by marker a sidecar that does not parse counts as: only secret-sync writes
/// sidecars, so a torn or edited one is still its own (with no expiry, so it is rewritten).
pub const SIDECAR_OWNER: &str = "secret-sync";

/// The largest file this backend writes or reads (a token, a sidecar, a credentials file).
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// How old a temporary file left by an interrupted write must be before a later write removes
/// it: far longer than any write takes, so a write in progress in another process keeps its own.
pub const DEFAULT_STALE_TEMP_AFTER: Duration = Duration::from_secs(5 * 60);

/// Options of the file backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOptions {
    /// The directory every name is relative to.
    pub dir: PathBuf,
    /// Permission bits of written files (default `0o600`).
    pub mode: u32,
    /// Follow a symlink at (or on the way to) the target (default `false`: refuse it).
    pub follow_symlinks: bool,
    /// A temporary file of this backend older than this is left over from an interrupted
    /// write, and is removed by the next write of its target (default
    /// [`DEFAULT_STALE_TEMP_AFTER`]).
    pub stale_temp_after: Duration,
}

impl FileOptions {
    /// Options for `dir` with the defaults: mode `0600`, symlinks refused, temporary files
    /// stale after [`DEFAULT_STALE_TEMP_AFTER`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileOptions {
            dir: dir.into(),
            mode: 0o600,
            follow_symlinks: false,
            stale_temp_after: DEFAULT_STALE_TEMP_AFTER,
        }
    }
}

/// A [`SecretStore`] over files in one directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    backend: String,
    options: FileOptions,
    /// The names that may be temporary files, per large directory, as last listed (see
    /// [`FileStore::temp_candidates`]).
    listings: Arc<Mutex<HashMap<PathBuf, Listing>>>,
}

/// A directory's names that may be temporary files (a `.` first, `.tmp-` in them), and when
/// they were listed.
#[derive(Debug)]
struct Listing {
    at: Instant,
    names: Arc<[String]>,
}

/// A directory with more entries than this is listed for stale temporary files at most once per
/// half of `stale_temp_after`, not at every write (issue 15: 100,000 targets in one directory
/// made every write list 200,000 names, and the first pass quadratic).
const LISTING_KEPT_FROM: usize = 256;

/// Where a name lives: a handle on the directory that holds it, reached from `dir` one
/// component at a time without following symlinks (unless allowed), and the file's name in it.
/// Every later open, create, rename and removal is relative to `parent`.
struct Entry {
    parent: OwnedFd,
    /// The path `parent` was reached by, for messages only.
    parent_path: PathBuf,
    file_name: String,
    /// Whether a regular file was there when inspected.
    exists: bool,
}

impl Entry {
    /// The path of `file` in the parent directory, for messages.
    fn path_of(&self, file: &str) -> PathBuf {
        self.parent_path.join(file)
    }

    fn path(&self) -> PathBuf {
        self.path_of(&self.file_name)
    }

    fn sidecar_name(&self) -> String {
        format!("{}{SIDECAR_SUFFIX}", self.file_name)
    }
}

/// Which file of a target a read is for: the messages differ.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Target,
    Sidecar,
}

impl FileStore {
    /// A store named `backend` (for messages) over `options.dir`. Nothing is touched until used.
    pub fn new(backend: impl Into<String>, options: FileOptions) -> Self {
        FileStore {
            backend: backend.into(),
            options,
            listings: Arc::default(),
        }
    }

    /// A store for the single file at absolute `path` (what a `file:///path#field` reference
    /// names): its directory is the file's parent, and the returned name is the file name.
    pub fn for_path(
        backend: impl Into<String>,
        path: &Path,
    ) -> Result<(FileStore, String), BackendError> {
        let backend = backend.into();
        let parts = path
            .parent()
            .zip(path.file_name().and_then(|n| n.to_str()))
            .filter(|_| path.is_absolute());
        let Some((dir, name)) = parts else {
            return Err(BackendError::new(
                ErrorKind::InvalidName,
                &backend,
                format!(
                    "{} is not an absolute path to a file: write it like /etc/secret-sync/graph.json",
                    path.display()
                ),
            ));
        };
        let store = FileStore::new(backend, FileOptions::new(dir));
        store.check_name(name)?;
        Ok((store, name.to_owned()))
    }

    /// The options this store was built with.
    pub fn options(&self) -> &FileOptions {
        &self.options
    }

    /// Removes the temporary files that an interrupted write (kill -9, a crash, power loss)
    /// left beside target `name` and its sidecar, when older than `stale_temp_after`; returns
    /// how many. Every write of `name` does this first; this is for targets that are not
    /// written (they stay fresh), e.g. by the daemon at start. A missing directory is nothing
    /// to clean.
    pub async fn remove_stale_temp_files(&self, name: &str) -> Result<usize, BackendError> {
        let (store, name) = (self.clone(), name.to_owned());
        run_blocking(&self.backend, move || {
            Ok(match store.resolve_parent(&name, false)? {
                Some(entry) => store.remove_stale_temps(&name, &entry),
                None => 0,
            })
        })
        .await
    }

    fn error(&self, kind: ErrorKind, name: &str, message: impl Into<String>) -> BackendError {
        BackendError::new(kind, &self.backend, message).with_secret(name)
    }

    fn io_error(&self, name: &str, what: &str, path: &Path, err: io::Error) -> BackendError {
        let kind = match err.kind() {
            io::ErrorKind::NotFound => ErrorKind::NotFound,
            _ => ErrorKind::Io,
        };
        let advice = match err.kind() {
            io::ErrorKind::PermissionDenied => {
                ": check the permissions of the file and its directory"
            }
            io::ErrorKind::NotFound => ": check the path",
            _ => "",
        };
        self.error(
            kind,
            name,
            format!("cannot {what} {}{advice}", path.display()),
        )
        .with_source(err)
    }

    fn symlink_refused(&self, name: &str, path: &Path, role: Role) -> BackendError {
        let message = match role {
            Role::Target => format!(
                "{} is a symlink and this backend does not follow symlinks: \
                 replace it with a regular file or directory, or set follow_symlinks = true",
                path.display()
            ),
            Role::Sidecar => format!(
                "the sidecar {} is a symlink: secret-sync writes sidecars as regular files and \
                 never follows one; remove it, the next write recreates it",
                path.display()
            ),
        };
        self.error(ErrorKind::Conflict, name, message)
    }

    /// `path` holds something other than a regular file (a FIFO, a device, a socket, a
    /// directory): refused, because reading it could block or never end.
    fn not_regular(&self, name: &str, path: &Path, file_type: fs::FileType) -> BackendError {
        let what = if file_type.is_dir() {
            "directory"
        } else if file_type.is_fifo() {
            "FIFO"
        } else if file_type.is_socket() {
            "socket"
        } else if file_type.is_char_device() {
            "character device"
        } else if file_type.is_block_device() {
            "block device"
        } else {
            "special file"
        };
        let advice = if file_type.is_dir() {
            "choose another name"
        } else {
            "this backend reads and replaces only regular files; remove it or choose another name"
        };
        self.error(
            ErrorKind::Conflict,
            name,
            format!(
                "{} is a {what}, not a regular file: {advice}",
                path.display()
            ),
        )
    }

    /// Opens `dir` itself (following symlinks: the operator chose it). `dir` is never created:
    /// one that does not exist is most often a typo or a volume that is not mounted, which
    /// creating it would hide. When it does not exist: an error naming it if `required` (a
    /// write), else `None`.
    fn open_root(&self, name: &str, required: bool) -> Result<Option<OwnedFd>, BackendError> {
        let dir = &self.options.dir;
        match open_dir(rustix::fs::CWD, dir, true) {
            Ok(fd) => Ok(Some(fd)),
            Err(e) if e == Errno::NOENT && required => Err(self.missing_dir(name)),
            Err(e) if e == Errno::NOENT => Ok(None),
            Err(e) => Err(self.io_error(name, "open the directory", dir, e.into())),
        }
    }

    /// Fails unless `dir` exists: a target in a directory that does not exist cannot be
    /// written, so `plan` and `run` report it before any token is requested.
    fn require_dir(&self, name: &str) -> Result<(), BackendError> {
        self.open_root(name, true).map(drop)
    }

    fn missing_dir(&self, name: &str) -> BackendError {
        let dir = self.options.dir.display();
        self.error(
            ErrorKind::InvalidConfig,
            name,
            format!(
                "the backend's directory {dir} does not exist: create it (mkdir -p {dir}), or \
                 correct dir if it is a typo or a volume that is not mounted (secret-sync \
                 creates the directories below dir, never dir itself)"
            ),
        )
    }

    /// The directory that holds `name` and the file's name in it (`exists` not inspected yet).
    /// Without `follow_symlinks`, each directory on the way is opened relative to the previous
    /// one and never through a symlink; with `create_parents`, missing ones are created (mode
    /// `0700`). `None` when a directory on the way does not exist (and is not created).
    fn resolve_parent(
        &self,
        name: &str,
        create_parents: bool,
    ) -> Result<Option<Entry>, BackendError> {
        self.check_name(name)?;
        if self.options.follow_symlinks {
            return self.resolve_parent_following(name, create_parents);
        }
        let (parents, file_name) = match name.rsplit_once('/') {
            Some((parents, file_name)) => (Some(parents), file_name),
            None => (None, name),
        };
        let Some(mut parent) = self.open_root(name, create_parents)? else {
            return Ok(None);
        };
        let mut parent_path = self.options.dir.clone();
        for part in parents.into_iter().flat_map(|p| p.split('/')) {
            parent_path.push(part);
            let mut opened = open_dir(&parent, part, false);
            if create_parents && matches!(opened, Err(e) if e == Errno::NOENT) {
                match rustix::fs::mkdirat(&parent, part, Mode::from_raw_mode(0o700)) {
                    Ok(()) => {}
                    Err(e) if e == Errno::EXIST => {}
                    Err(e) => {
                        return Err(self.io_error(
                            name,
                            "create the directory",
                            &parent_path,
                            e.into(),
                        ));
                    }
                }
                opened = open_dir(&parent, part, false);
            }
            parent = match opened {
                Ok(fd) => fd,
                Err(e) if e == Errno::NOENT => return Ok(None),
                // O_NOFOLLOW on a symlink (ELOOP), or O_DIRECTORY on something else (ENOTDIR).
                Err(e) if e == Errno::LOOP || e == Errno::NOTDIR => {
                    return Err(match inspect(&parent, part) {
                        Ok(Some(t)) if t.is_symlink() => {
                            self.symlink_refused(name, &parent_path, Role::Target)
                        }
                        Ok(Some(t)) => self.not_a_directory(name, &parent_path, t),
                        _ => self.io_error(name, "open the directory", &parent_path, e.into()),
                    });
                }
                Err(e) => {
                    return Err(self.io_error(name, "open the directory", &parent_path, e.into()));
                }
            };
        }
        Ok(Some(Entry {
            parent,
            parent_path,
            file_name: file_name.to_owned(),
            exists: false,
        }))
    }

    fn not_a_directory(&self, name: &str, path: &Path, file_type: fs::FileType) -> BackendError {
        if file_type.is_dir() {
            // Only when it changed between the open and the inspection.
            return self.error(
                ErrorKind::Conflict,
                name,
                format!("{} changed while it was opened: try again", path.display()),
            );
        }
        self.error(
            ErrorKind::Conflict,
            name,
            format!(
                "{} is not a directory, but the name needs it to be one: choose another name",
                path.display()
            ),
        )
    }

    /// [`FileStore::resolve_parent`] with `follow_symlinks`: the path is resolved by name,
    /// symlinks followed; a symlink at the target is resolved to its real file, so the write
    /// replaces that file (beside it) rather than the link.
    fn resolve_parent_following(
        &self,
        name: &str,
        create_parents: bool,
    ) -> Result<Option<Entry>, BackendError> {
        let path = self.options.dir.join(name);
        let parent_path = path.parent().unwrap_or(&self.options.dir);
        if create_parents {
            self.require_dir(name)?;
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent_path)
                .map_err(|e| self.io_error(name, "create the directory", parent_path, e))?;
        }
        let real = match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => fs::canonicalize(&path)
                .map_err(|e| self.io_error(name, "resolve the symlink", &path, e))?,
            _ => path.clone(),
        };
        let (Some(parent_path), Some(file_name)) =
            (real.parent(), real.file_name().and_then(|n| n.to_str()))
        else {
            return Err(self.error(
                ErrorKind::Conflict,
                name,
                format!(
                    "{} resolves to {}, which is not a file with a UTF-8 name",
                    path.display(),
                    real.display()
                ),
            ));
        };
        let parent = match open_dir(rustix::fs::CWD, parent_path, true) {
            Ok(fd) => fd,
            Err(e) if e == Errno::NOENT => return Ok(None),
            Err(e) => return Err(self.io_error(name, "open the directory", parent_path, e.into())),
        };
        Ok(Some(Entry {
            parent,
            parent_path: parent_path.to_owned(),
            file_name: file_name.to_owned(),
            exists: false,
        }))
    }

    /// [`FileStore::resolve_parent`], then the file itself inspected (without following it):
    /// missing, or a regular file; a symlink (unless followed, see above), a directory, a FIFO
    /// or a device is refused.
    fn resolve(&self, name: &str, create_parents: bool) -> Result<Option<Entry>, BackendError> {
        let Some(mut entry) = self.resolve_parent(name, create_parents)? else {
            return Ok(None);
        };
        let path = entry.path();
        entry.exists = match inspect(&entry.parent, &entry.file_name) {
            Ok(None) => false,
            Ok(Some(t)) if t.is_file() => true,
            Ok(Some(t)) if t.is_symlink() => {
                return Err(self.symlink_refused(name, &path, Role::Target));
            }
            Ok(Some(t)) => return Err(self.not_regular(name, &path, t)),
            Err(e) => return Err(self.io_error(name, "inspect", &path, e)),
        };
        Ok(Some(entry))
    }

    /// Reads `file` in `entry`'s directory: opened without following a symlink and without
    /// blocking (a FIFO would block an open for reading until a writer came), checked with
    /// `fstat` to be a regular file, and read up to [`MAX_VALUE_BYTES`]. `None` when missing.
    fn read_at(
        &self,
        name: &str,
        entry: &Entry,
        file: &str,
        role: Role,
    ) -> Result<Option<(Vec<u8>, fs::Metadata)>, BackendError> {
        let path = entry.path_of(file);
        let what = match role {
            Role::Target => "read",
            Role::Sidecar => "read the sidecar",
        };
        let flags =
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&entry.parent, file, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(e) if e == Errno::NOENT => return Ok(None),
            Err(e) if e == Errno::LOOP => return Err(self.symlink_refused(name, &path, role)),
            Err(e) => return Err(self.io_error(name, what, &path, e.into())),
        };
        let file = File::from(fd);
        let meta = file
            .metadata()
            .map_err(|e| self.io_error(name, what, &path, e))?;
        if !meta.file_type().is_file() {
            return Err(self.not_regular(name, &path, meta.file_type()));
        }
        let mut bytes = Vec::with_capacity(1024);
        // One byte more than the limit, to tell a file at the limit from a larger one.
        file.take(MAX_VALUE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.io_error(name, what, &path, e))?;
        if bytes.len() > MAX_VALUE_BYTES {
            return Err(self.error(
                ErrorKind::InvalidValue,
                name,
                format!(
                    "{} is larger than 1 MiB, the most this backend reads: \
                     a token or credentials file is far smaller; check what it holds",
                    path.display()
                ),
            ));
        }
        Ok(Some((bytes, meta)))
    }

    fn read_blocking(&self, name: &str, field: Option<&str>) -> Result<SecretString, BackendError> {
        let entry = self.resolve(name, false)?;
        let text = match &entry {
            Some(entry) if entry.exists => self.read_text(name, entry)?,
            _ => None,
        };
        let Some((text, _)) = text else {
            return Err(self.error(
                ErrorKind::NotFound,
                name,
                format!(
                    "{} does not exist: check the name and the directory",
                    self.options.dir.join(name).display()
                ),
            ));
        };
        pick_field(&self.backend, name, text, field)
    }

    /// The target's text with one trailing newline removed, and its metadata; `None` when the
    /// file does not exist.
    fn read_text(
        &self,
        name: &str,
        entry: &Entry,
    ) -> Result<Option<(SecretString, fs::Metadata)>, BackendError> {
        let Some((bytes, meta)) = self.read_at(name, entry, &entry.file_name, Role::Target)? else {
            return Ok(None);
        };
        let Ok(mut text) = String::from_utf8(bytes) else {
            return Err(self.error(
                ErrorKind::InvalidValue,
                name,
                format!(
                    "{} is not UTF-8 text: a secret file must hold text",
                    entry.path().display()
                ),
            ));
        };
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        Ok(Some((SecretString::from(text), meta)))
    }

    fn metadata_blocking(&self, name: &str) -> Result<Option<SecretMetadata>, BackendError> {
        self.check_name(name)?;
        self.require_dir(name)?;
        let Some(entry) = self.resolve(name, false)?.filter(|e| e.exists) else {
            return Ok(None);
        };
        self.metadata_of(name, &entry)
    }

    /// The metadata of `entry`'s file as it is now; `None` when there is none.
    fn metadata_of(
        &self,
        name: &str,
        entry: &Entry,
    ) -> Result<Option<SecretMetadata>, BackendError> {
        let Some((text, meta)) = self.read_text(name, entry)? else {
            return Ok(None);
        };
        // Checked: an mtime after year 9999 (tmpfs keeps one) is no updated time, not a panic.
        let updated_on = OffsetDateTime::from_unix_timestamp(meta.mtime()).ok();
        let (expires_on, managed_by) = match StoredToken::from_json_document(text.expose_secret()) {
            Some(doc) => (doc.expires_on, doc.managed_by),
            // The sidecar's expiry counts only when it names this token: one left beside another
            // token (replaced by hand, or half of an interrupted write) would call a stale token
            // fresh. Its managed-by still counts, so the target stays ours and is rewritten.
            // The token is compared as read (one trailing newline removed), as the write's
            // unchanged check compares it.
            None => match self.read_sidecar(name, entry)? {
                Some(meta) => {
                    let describes_token = meta.token_sha256.as_deref()
                        == Some(token_fingerprint(text.expose_secret()).as_str());
                    (meta.expires_on.filter(|_| describes_token), meta.managed_by)
                }
                None => (None, None),
            },
        };
        Ok(Some(SecretMetadata {
            expires_on,
            managed_by,
            version: None,
            updated_on,
        }))
    }

    /// The sidecar of a raw file; `None` when there is none. One that does not parse as a JSON
    /// object is [`SIDECAR_OWNER`]'s with no expiry (see the module doc).
    fn read_sidecar(
        &self,
        name: &str,
        entry: &Entry,
    ) -> Result<Option<SidecarFields>, BackendError> {
        let Some((bytes, _)) = self.read_at(name, entry, &entry.sidecar_name(), Role::Sidecar)?
        else {
            return Ok(None);
        };
        Ok(Some(match serde_json::from_slice(&bytes) {
            Ok(serde_json::Value::Object(map)) => SidecarFields::from_map(&map),
            _ => SidecarFields {
                expires_on: None,
                managed_by: Some(SIDECAR_OWNER.to_owned()),
                token_sha256: None,
            },
        }))
    }

    fn write_blocking(
        &self,
        name: &str,
        payload: &TokenPayload,
        precondition: &WritePrecondition,
    ) -> Result<WriteOutcome, BackendError> {
        self.check_write(name, payload)?;
        let Some(entry) = self.resolve(name, true)? else {
            return Err(self.error(
                ErrorKind::Io,
                name,
                format!(
                    "a directory on the way to {} disappeared while it was created: try again",
                    self.options.dir.join(name).display()
                ),
            ));
        };
        #[cfg(test)]
        pause::between_check_and_use(&self.options.dir);
        self.remove_stale_temps(name, &entry);
        if entry.exists && self.is_unchanged(name, &entry, payload)? {
            return Ok(WriteOutcome::Unchanged);
        }
        // The adopt rule, applied again to what is there right before the renames. A rename
        // replaces unconditionally, so a writer between this check and the rename is not seen;
        // only a create is closed: it renames with RENAME_NOREPLACE (see `replace_atomically`).
        // `true` when the file exists now.
        let recheck = || -> Result<bool, BackendError> {
            if precondition.adopt() {
                return Ok(true);
            }
            let current = self.metadata_of(name, &entry)?;
            precondition.check(&self.backend, name, current.as_ref(), payload.managed_by())?;
            Ok(current.is_some())
        };
        let content = payload.encode();
        let sidecar = entry.sidecar_name();
        match payload.format() {
            Format::Raw => {
                let meta = Sidecar {
                    token_type: payload.token_type(),
                    expires_on: payload.expires_on().unix_timestamp(),
                    expires_at: payload.expires_at_rfc3339(),
                    managed_by: payload.managed_by(),
                    token_sha256: token_fingerprint(payload.access_token().expose_secret()),
                };
                let meta = serde_json::to_string(&meta)
                    .expect("a struct of strings and integers serializes");
                // The token is renamed before the sidecar, then the directory is fsynced once.
                // Any state a reader or a crash can leave is safe, because the sidecar names the
                // token it describes (`token_sha256`) and a sidecar that does not name the token
                // beside it gives no expiry, so the next pass rewrites both: the new token with
                // the old sidecar (between the renames, or a crash after the first), and, on a
                // filesystem that may persist the renames out of order before the directory
                // fsync (ext4 without a journal), the old token with the new sidecar, which
                // without the fingerprint would have called the old token fresh until the new
                // token's expiry.
                self.replace_atomically(
                    name,
                    &entry,
                    &[
                        (&entry.file_name, content.expose_secret().as_bytes()),
                        (&sidecar, meta.as_bytes()),
                    ],
                    &recheck,
                )?;
            }
            Format::Json => {
                self.replace_atomically(
                    name,
                    &entry,
                    &[(&entry.file_name, content.expose_secret().as_bytes())],
                    &recheck,
                )?;
                match rustix::fs::unlinkat(&entry.parent, sidecar.as_str(), AtFlags::empty()) {
                    Ok(()) => {}
                    Err(e) if e == Errno::NOENT => {}
                    Err(e) => {
                        return Err(self.io_error(
                            name,
                            "remove the stale sidecar",
                            &entry.path_of(&sidecar),
                            e.into(),
                        ));
                    }
                }
            }
        }
        Ok(if entry.exists {
            WriteOutcome::Updated
        } else {
            WriteOutcome::Created
        })
    }

    /// The target's text and (for a whole value) its sidecar's bytes as they are now; `None`
    /// when the file does not exist.
    fn read_value_state(
        &self,
        name: &str,
        entry: &Entry,
        whole: bool,
    ) -> Result<Option<ValueState>, BackendError> {
        let Some((text, meta)) = self.read_text(name, entry)? else {
            return Ok(None);
        };
        let sidecar = if whole {
            self.read_at(name, entry, &entry.sidecar_name(), Role::Sidecar)?
                .map(|(bytes, _)| bytes)
        } else {
            None
        };
        // The version: a fingerprint of everything a value write replaces (the file, and for a
        // whole value its sidecar), so a change to either since the read is seen.
        let mut hashed = text.expose_secret().to_owned();
        if let Some(sidecar) = &sidecar {
            hashed.push('\0');
            hashed.push_str(&String::from_utf8_lossy(sidecar));
        }
        let version = format!("sha256:{}", fingerprint(&hashed));
        Ok(Some(ValueState {
            text,
            sidecar,
            version,
            updated_on: OffsetDateTime::from_unix_timestamp(meta.mtime()).ok(),
        }))
    }

    fn read_stored_blocking(
        &self,
        name: &str,
        field: Option<&str>,
    ) -> Result<StoredValue, BackendError> {
        let entry = self.resolve(name, false)?.filter(|e| e.exists);
        let state = match &entry {
            Some(entry) => self.read_value_state(name, entry, field.is_none())?,
            None => None,
        };
        let Some(state) = state else {
            return Err(self.error(
                ErrorKind::NotFound,
                name,
                format!(
                    "{} does not exist: check the name and the directory",
                    self.options.dir.join(name).display()
                ),
            ));
        };
        let metadata = SecretMetadata {
            version: Some(state.version.clone()),
            updated_on: state.updated_on,
            ..SecretMetadata::default()
        };
        let (value, record) = match field {
            Some(field) => {
                let map = parse_document(&self.backend, name, state.text.expose_secret(), field)?;
                let value = pick_from_map(&self.backend, name, &map, field)?;
                (value, CredentialRecord::from_siblings(&map, field))
            }
            None => {
                let record = state.sidecar_record();
                (state.text, record)
            }
        };
        Ok(StoredValue {
            value,
            record,
            metadata,
        })
    }

    fn write_value_blocking(
        &self,
        name: &str,
        field: Option<&str>,
        value: &SecretValue,
        record: &CredentialRecord,
        precondition: &WritePrecondition,
    ) -> Result<WriteOutcome, BackendError> {
        self.check_write_value(name, field, value, record)?;
        let Some(entry) = self.resolve(name, true)? else {
            return Err(self.error(
                ErrorKind::Io,
                name,
                format!(
                    "a directory on the way to {} disappeared while it was created: try again",
                    self.options.dir.join(name).display()
                ),
            ));
        };
        self.remove_stale_temps(name, &entry);
        let whole = field.is_none();
        let current = if entry.exists {
            self.read_value_state(name, &entry, whole)?
        } else {
            None
        };
        let current_version = current.as_ref().map(|c| c.version.clone());
        #[cfg(test)]
        pause::between_check_and_use(&self.options.dir);
        precondition.check_unchanged(
            &self.backend,
            name,
            current_version.as_ref().map(|v| Some(v.as_str())),
        )?;
        // Right before the renames: the file (and sidecar) must still be what was checked above.
        // A rename replaces unconditionally, so a writer between this check and the rename is
        // not seen (docs/backends.md); a create renames with RENAME_NOREPLACE.
        let recheck = || -> Result<bool, BackendError> {
            let now = self.read_value_state(name, &entry, whole)?;
            if now.as_ref().map(|n| &n.version) != current_version.as_ref() {
                return Err(changed_since_read(&self.backend, name));
            }
            Ok(now.is_some())
        };
        let outcome = if current.is_some() {
            WriteOutcome::Updated
        } else {
            WriteOutcome::Created
        };
        match field {
            Some(field) => {
                let mut map = match &current {
                    Some(current) => {
                        parse_document(&self.backend, name, current.text.expose_secret(), field)?
                    }
                    None => serde_json::Map::new(),
                };
                let before = map.clone();
                set_field(&mut map, field, value, record);
                if current.is_some() && map == before {
                    return Ok(WriteOutcome::Unchanged);
                }
                let mut document =
                    serde_json::to_string_pretty(&map).expect("a JSON map serializes");
                document.push('\n');
                check_size(&self.backend, name, document.len(), MAX_VALUE_BYTES)?;
                self.replace_atomically(
                    name,
                    &entry,
                    &[(&entry.file_name, document.as_bytes())],
                    &recheck,
                )?;
            }
            None => {
                if let Some(current) = &current
                    && current.text.expose_secret() == value.secret().expose_secret()
                    && current.sidecar_record() == *record
                {
                    return Ok(WriteOutcome::Unchanged);
                }
                let mut sidecar = serde_json::Map::new();
                for (base, text) in record.entries() {
                    if let Some(text) = text {
                        sidecar.insert(base.to_owned(), serde_json::Value::String(text));
                    }
                }
                sidecar.insert(
                    VALUE_SHA256.to_owned(),
                    serde_json::Value::String(fingerprint(value.secret().expose_secret())),
                );
                let sidecar = serde_json::Value::Object(sidecar).to_string();
                // The sidecar is renamed before the value, whose rename is the commit point: if
                // it fails (or a crash comes between the two), the old value stays beside a
                // sidecar that names another value, which reads as no record, never as a wrong
                // one; a failed write never reports the old value as replaced.
                let sidecar_name = entry.sidecar_name();
                self.replace_atomically(
                    name,
                    &entry,
                    &[
                        (&sidecar_name, sidecar.as_bytes()),
                        (&entry.file_name, value.secret().expose_secret().as_bytes()),
                    ],
                    &recheck,
                )?;
            }
        }
        Ok(outcome)
    }

    /// Whether the existing file (and for `raw` its sidecar) already stores `payload`.
    /// For `raw` the sidecar is read first: when its expiry, managed-by or token fingerprint
    /// differ (or it is missing or does not parse) the write is needed whatever the token file
    /// holds, so that file is only read when the sidecar matches. It is still read then: the
    /// fingerprint says the sidecar describes the payload's token, not that the token file
    /// holds it (it may have been replaced by hand, or lost its rename in a crash), and the
    /// engine may write the same token again (it is cached) precisely to repair that. A sidecar
    /// or target that is not a regular file is an error, as for a metadata read.
    fn is_unchanged(
        &self,
        name: &str,
        entry: &Entry,
        payload: &TokenPayload,
    ) -> Result<bool, BackendError> {
        let same_marker = |managed_by: Option<&str>| managed_by == Some(payload.managed_by());
        let same_token =
            |text: &SecretString| text.expose_secret() == payload.access_token().expose_secret();
        match payload.format() {
            Format::Json => Ok(self.read_text(name, entry)?.is_some_and(|(text, _)| {
                StoredToken::from_json_document(text.expose_secret()).is_some_and(|doc| {
                    doc.same_as(payload) && same_marker(doc.managed_by.as_deref())
                })
            })),
            Format::Raw => {
                let fingerprint = token_fingerprint(payload.access_token().expose_secret());
                let sidecar_matches = self.read_sidecar(name, entry)?.is_some_and(|meta| {
                    meta.expires_on == Some(payload.expires_on())
                        && same_marker(meta.managed_by.as_deref())
                        && meta.token_sha256.as_deref() == Some(fingerprint.as_str())
                });
                if !sidecar_matches {
                    return Ok(false);
                }
                Ok(self
                    .read_text(name, entry)?
                    .is_some_and(|(text, _)| same_token(&text)))
            }
        }
    }

    /// Replaces every `(file, content)` of `files` (all in `entry`'s directory) atomically and
    /// durably, in the order given: first each content goes to a new temporary file beside its
    /// file (created with the configured mode, which is set again in case the umask removed
    /// bits, written and fsynced), then each temporary file is renamed over its file, then the
    /// directory is fsynced once. All relative to the directory's handle. On failure the
    /// temporary files not renamed yet are removed; a file whose rename has not happened is
    /// untouched.
    ///
    /// `recheck` runs right before the renames (it applies the adopt rule and says whether the
    /// target file, `entry`'s own, exists). When it does not, its rename is `RENAME_NOREPLACE`, so a file
    /// created since is never replaced unchecked: the rename fails, `recheck` runs again on
    /// what appeared, and only if it allows the write is the file replaced.
    fn replace_atomically(
        &self,
        name: &str,
        entry: &Entry,
        files: &[(&str, &[u8])],
        recheck: &dyn Fn() -> Result<bool, BackendError>,
    ) -> Result<(), BackendError> {
        // Dropping a TempFile that was not renamed removes it, so `?` anywhere below cleans up.
        let mut temps = Vec::with_capacity(files.len());
        for (file, content) in files {
            temps.push(self.write_temp(name, entry, file, content)?);
        }
        let mut create_only = !recheck()?;
        for temp in &mut temps {
            let rename = |flags| {
                rustix::fs::renameat_with(
                    &entry.parent,
                    temp.name.as_str(),
                    &entry.parent,
                    temp.target,
                    flags,
                )
            };
            let renamed = if create_only && temp.target == entry.file_name {
                create_only = false;
                match rename(RenameFlags::NOREPLACE) {
                    // Created by someone since the check: the rule decides on what is there.
                    Err(e) if e == Errno::EXIST => {
                        recheck()?;
                        rename(RenameFlags::empty())
                    }
                    // A file system without RENAME_NOREPLACE: the window stays open.
                    Err(e) if e == Errno::INVAL || e == Errno::NOSYS || e == Errno::NOTSUP => {
                        rename(RenameFlags::empty())
                    }
                    other => other,
                }
            } else {
                rename(RenameFlags::empty())
            };
            renamed.map_err(|e| {
                self.io_error(
                    name,
                    "rename the temporary file onto",
                    &entry.path_of(temp.target),
                    e.into(),
                )
            })?;
            temp.renamed = true;
        }
        rustix::fs::fsync(&entry.parent)
            .map_err(|e| self.io_error(name, "fsync the directory", &entry.parent_path, e.into()))
    }

    /// Creates a new temporary file beside `target` (never through a symlink) with the
    /// configured mode, writes `content` and fsyncs it.
    fn write_temp<'a>(
        &self,
        name: &str,
        entry: &'a Entry,
        target: &'a str,
        content: &[u8],
    ) -> Result<TempFile<'a>, BackendError> {
        let temp_name = temp_name(target);
        let mode = Mode::from_raw_mode(self.options.mode);
        let flags = OFlags::WRONLY
            | OFlags::CREATE
            | OFlags::EXCL
            | OFlags::NOFOLLOW
            | OFlags::NOCTTY
            | OFlags::CLOEXEC;
        let fd =
            rustix::fs::openat(&entry.parent, temp_name.as_str(), flags, mode).map_err(|e| {
                self.io_error(
                    name,
                    "create a temporary file in",
                    &entry.parent_path,
                    e.into(),
                )
            })?;
        let temp = TempFile {
            parent: entry.parent.as_fd(),
            name: temp_name,
            target,
            renamed: false,
        };
        let temp_path = entry.path_of(&temp.name);
        let mut file = File::from(fd);
        rustix::fs::fchmod(&file, mode)
            .map_err(|e| self.io_error(name, "set the permissions of", &temp_path, e.into()))?;
        file.write_all(content)
            .and_then(|()| file.sync_all())
            .map_err(|e| self.io_error(name, "write", &temp_path, e))?;
        Ok(temp)
    }

    /// Removes the temporary files of `entry`'s file and of its sidecar that another process
    /// left (see [`is_temp_of`]) and that are older than `stale_temp_after`; returns how many.
    /// Best effort: what cannot be listed or removed is logged and left, the write goes on.
    fn remove_stale_temps(&self, name: &str, entry: &Entry) -> usize {
        let targets = [entry.file_name.clone(), entry.sidecar_name()];
        let Some(candidates) = self.temp_candidates(entry) else {
            return 0;
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for file in candidates.iter() {
            let file = file.as_str();
            if !targets.iter().any(|target| is_temp_of(file, target)) {
                continue;
            }
            // Its age from the file itself, opened without following or blocking.
            let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
            let Ok(fd) = rustix::fs::openat(&entry.parent, file, flags, Mode::empty()) else {
                continue;
            };
            let Ok(meta) = File::from(fd).metadata() else {
                continue;
            };
            let age = meta
                .modified()
                .ok()
                .and_then(|mtime| now.duration_since(mtime).ok())
                .unwrap_or(Duration::ZERO);
            if !meta.file_type().is_file() || age < self.options.stale_temp_after {
                continue;
            }
            match rustix::fs::unlinkat(&entry.parent, file, AtFlags::empty()) {
                Ok(()) => {
                    removed += 1;
                    tracing::info!(backend = %self.backend, secret = name,
                        file = %entry.path_of(file).display(),
                        "removed a temporary file left by an interrupted write");
                }
                Err(e) if e == Errno::NOENT => {}
                Err(e) => {
                    tracing::warn!(backend = %self.backend, secret = name,
                        file = %entry.path_of(file).display(), error = %e,
                        "cannot remove a temporary file left by an interrupted write");
                }
            }
        }
        removed
    }

    /// The names in `entry`'s directory that may be temporary files. A directory of more than
    /// [`LISTING_KEPT_FROM`] entries is listed again only when its last listing is older than
    /// half of `stale_temp_after`: a temporary file left after a listing is then found by a
    /// write at most that much later than by one that lists (it is removed only once older
    /// than `stale_temp_after` anyway). Every candidate is checked again (name, type, age)
    /// through the directory's handle before it is removed. `None`: the directory cannot be
    /// listed (logged).
    fn temp_candidates(&self, entry: &Entry) -> Option<Arc<[String]>> {
        let keep_for = self.options.stale_temp_after / 2;
        let mut listings = self.listings.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(listing) = listings.get(&entry.parent_path)
            && listing.at.elapsed() < keep_for
        {
            return Some(Arc::clone(&listing.names));
        }
        listings.remove(&entry.parent_path);
        drop(listings);
        let at = Instant::now();
        let dir = match rustix::fs::Dir::read_from(&entry.parent) {
            Ok(dir) => dir,
            Err(e) => {
                tracing::warn!(backend = %self.backend, dir = %entry.parent_path.display(),
                    error = %e, "cannot list the directory to remove stale temporary files");
                return None;
            }
        };
        let mut entries = 0;
        let mut names = Vec::new();
        for item in dir {
            let Ok(item) = item else { break };
            entries += 1;
            if let Ok(file) = item.file_name().to_str()
                && file.starts_with('.')
                && file.contains(".tmp-")
            {
                names.push(file.to_owned());
            }
        }
        let names: Arc<[String]> = names.into();
        if entries > LISTING_KEPT_FROM && !keep_for.is_zero() {
            let listing = Listing {
                at,
                names: Arc::clone(&names),
            };
            self.listings
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(entry.parent_path.clone(), listing);
        }
        Some(names)
    }
}

/// Opens directory `path` relative to `at`, following a symlink only when `follow` says so.
fn open_dir(
    at: impl AsFd,
    path: impl rustix::path::Arg,
    follow: bool,
) -> rustix::io::Result<OwnedFd> {
    let mut flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    rustix::fs::openat(at, path, flags, Mode::empty())
}

/// The type of `file` in `dir`, not following a symlink; `None` when it does not exist.
/// Through an `O_PATH` handle, which opens nothing (a FIFO does not block it).
fn inspect(dir: &OwnedFd, file: &str) -> io::Result<Option<fs::FileType>> {
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(dir, file, flags, Mode::empty()) {
        Ok(fd) => Ok(Some(File::from(fd).metadata()?.file_type())),
        Err(e) if e == Errno::NOENT => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A temporary file created by this process for `target`; removed when dropped unless renamed.
struct TempFile<'a> {
    parent: BorrowedFd<'a>,
    name: String,
    target: &'a str,
    renamed: bool,
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = rustix::fs::unlinkat(self.parent, self.name.as_str(), AtFlags::empty());
        }
    }
}

/// This process's pid and a random per-process nonce, computed once.
fn process_tag() -> (u32, u32) {
    static PROCESS: OnceLock<(u32, u32)> = OnceLock::new();
    *PROCESS.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        // A new RandomState has new random keys: hashing nothing gives a random number.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        #[allow(clippy::cast_possible_truncation)]
        (std::process::id(), random as u32)
    })
}

/// A fresh temporary file name beside `target`: `.<target>.tmp-<pid>-<nonce>-<counter>`.
/// The counter makes names unique within the process; the random per-process nonce keeps them
/// unique across processes that reuse a pid (a container's daemon is always pid 1, and a temp
/// file left by one that was killed mid-write must not make the next one's writes fail), or
/// that share a directory from different pid namespaces.
fn temp_name(target: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let (pid, nonce) = process_tag();
    format!(
        ".{target}.tmp-{pid}-{nonce:08x}-{}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether `file` is a temporary file [`temp_name`] made for `target` in another process (this
/// process's own are removed when their write ends, and may be in progress now).
fn is_temp_of(file: &str, target: &str) -> bool {
    let Some(tag) = file
        .strip_prefix('.')
        .and_then(|f| f.strip_prefix(target))
        .and_then(|f| f.strip_prefix(".tmp-"))
    else {
        return false;
    };
    let mut parts = tag.split('-');
    let (Some(pid), Some(nonce), Some(counter), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let well_formed = digits(pid)
        && digits(counter)
        && nonce.len() == 8
        && nonce.bytes().all(|b| b.is_ascii_hexdigit());
    let (own_pid, own_nonce) = process_tag();
    well_formed
        && (pid, nonce)
            != (
                own_pid.to_string().as_str(),
                format!("{own_nonce:08x}").as_str(),
            )
}

/// The sidecar field of a whole value written back that names the value its record describes
/// (the first 16 hex digits of its SHA-256, as `token_sha256` for a token).
pub const VALUE_SHA256: &str = "value_sha256";

/// A value's file as read before a value write: its text, for a whole value its sidecar, and
/// the version (fingerprint) a conditional write compares.
struct ValueState {
    text: SecretString,
    sidecar: Option<Vec<u8>>,
    version: String,
    updated_on: Option<OffsetDateTime>,
}

impl ValueState {
    /// The record in the sidecar, if the sidecar describes this value; else an empty record.
    fn sidecar_record(&self) -> CredentialRecord {
        let Some(Ok(serde_json::Value::Object(map))) = self
            .sidecar
            .as_deref()
            .map(serde_json::from_slice::<serde_json::Value>)
        else {
            return CredentialRecord::default();
        };
        let describes = map.get(VALUE_SHA256).and_then(|v| v.as_str())
            == Some(fingerprint(self.text.expose_secret()).as_str());
        if !describes {
            return CredentialRecord::default();
        }
        CredentialRecord::from_lookup(|base| {
            map.get(base).and_then(|v| v.as_str()).map(str::to_owned)
        })
    }
}

/// What the sidecar of a raw token file holds.
#[derive(Serialize)]
struct Sidecar<'a> {
    token_type: &'a str,
    expires_on: i64,
    expires_at: String,
    managed_by: &'a str,
    /// [`token_fingerprint`] of the token this sidecar describes, so that a sidecar left beside
    /// another token (replaced by hand, or one rename of an interrupted write lost) is not
    /// taken for that token's. Not a leak: 64 bits of a SHA-256 of a token that is itself
    /// unguessable (hundreds of random-looking bits) neither reveal nor help to guess it.
    token_sha256: String,
}

/// The fields of a sidecar that are read back (any may be missing).
struct SidecarFields {
    expires_on: Option<OffsetDateTime>,
    managed_by: Option<String>,
    token_sha256: Option<String>,
}

impl SidecarFields {
    fn from_map(map: &serde_json::Map<String, serde_json::Value>) -> Self {
        let text = |key: &str| map.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        SidecarFields {
            expires_on: expiry_from_map(map),
            managed_by: text("managed_by"),
            token_sha256: text("token_sha256"),
        }
    }
}

/// The first 16 lowercase hex digits (64 bits) of the SHA-256 of `token`: enough to tell two
/// tokens apart, far too little to say anything usable about one.
fn token_fingerprint(token: &str) -> String {
    use std::fmt::Write as _;
    let digest = Sha256::digest(token.as_bytes());
    let mut hex = String::with_capacity(16);
    for byte in &digest[..8] {
        write!(hex, "{byte:02x}").expect("writing to a String cannot fail");
    }
    hex
}

/// The file backend's naming rule, without a store (e.g. to validate a config):
/// what [`SecretStore::check_name`] of a [`FileStore`] named `backend` checks.
pub fn check_name(backend: &str, name: &str) -> Result<(), BackendError> {
    let refuse = |why: &str| {
        Err(BackendError::new(
            ErrorKind::InvalidName,
            backend,
            format!("{why}: use a relative path inside the backend's directory, e.g. \"graph.json\" or \"apps/graph-token\""),
        )
        .with_secret(name))
    };
    if name.is_empty() {
        return refuse("the name is empty");
    }
    if name.len() > 1024 {
        return refuse("the name is longer than 1024 bytes");
    }
    if name.chars().any(|c| c.is_control()) {
        return refuse("the name contains control characters");
    }
    if name.starts_with('/') {
        return refuse("the name is an absolute path");
    }
    if name.split('/').any(|part| part.is_empty()) {
        return refuse("the name has an empty path segment");
    }
    if name.split('/').any(|part| part == "." || part == "..") {
        return refuse("the name contains \".\" or \"..\"");
    }
    if name.ends_with(SIDECAR_SUFFIX) {
        return refuse("names ending in \".meta.json\" are reserved for sidecar files");
    }
    Ok(())
}

#[async_trait::async_trait]
impl SecretStore for FileStore {
    fn backend(&self) -> &str {
        &self.backend
    }

    fn check_name(&self, name: &str) -> Result<(), BackendError> {
        check_name(&self.backend, name)
    }

    fn max_value_bytes(&self) -> usize {
        MAX_VALUE_BYTES
    }

    async fn read(&self, name: &str, field: Option<&str>) -> Result<SecretString, BackendError> {
        let (store, name, field) = (self.clone(), name.to_owned(), field.map(str::to_owned));
        run_blocking(&self.backend, move || {
            store.read_blocking(&name, field.as_deref())
        })
        .await
    }

    async fn metadata(&self, name: &str) -> Result<Option<SecretMetadata>, BackendError> {
        let (store, name) = (self.clone(), name.to_owned());
        run_blocking(&self.backend, move || store.metadata_blocking(&name)).await
    }

    async fn write(
        &self,
        name: &str,
        payload: &TokenPayload,
        precondition: &WritePrecondition,
    ) -> Result<WriteOutcome, BackendError> {
        let (store, name, payload) = (self.clone(), name.to_owned(), payload.clone());
        let precondition = precondition.clone();
        run_blocking(&self.backend, move || {
            store.write_blocking(&name, &payload, &precondition)
        })
        .await
    }

    async fn read_stored(
        &self,
        name: &str,
        field: Option<&str>,
    ) -> Result<StoredValue, BackendError> {
        let (store, name, field) = (self.clone(), name.to_owned(), field.map(str::to_owned));
        run_blocking(&self.backend, move || {
            store.read_stored_blocking(&name, field.as_deref())
        })
        .await
    }

    async fn write_value(
        &self,
        name: &str,
        field: Option<&str>,
        value: &SecretValue,
        record: &CredentialRecord,
        precondition: &WritePrecondition,
    ) -> Result<WriteOutcome, BackendError> {
        let (store, name, field) = (self.clone(), name.to_owned(), field.map(str::to_owned));
        let (value, record, precondition) = (value.clone(), record.clone(), precondition.clone());
        run_blocking(&self.backend, move || {
            store.write_value_blocking(&name, field.as_deref(), &value, &record, &precondition)
        })
        .await
    }
}

/// Runs blocking file-system work off the async runtime.
async fn run_blocking<T: Send + 'static>(
    backend: &str,
    work: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| {
            Err(BackendError::new(
                ErrorKind::Io,
                backend,
                "the file operation was cancelled or panicked",
            )
            .with_source(join))
        })
}

/// A test-only pause point between the checks of a write (the path resolved, symlinks refused)
/// and its use (the temporary files created and renamed): a test registers a hook for its `dir`
/// that swaps a path component, to show the write does not follow the swap. Not in any build
/// but this crate's unit tests.
#[cfg(test)]
mod pause {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    type Hook = Box<dyn FnOnce() + Send>;
    static HOOKS: Mutex<Vec<(PathBuf, Hook)>> = Mutex::new(Vec::new());

    /// Runs `hook` once, in the next write under `dir`, between its checks and their use.
    pub(super) fn once(dir: &Path, hook: impl FnOnce() + Send + 'static) {
        HOOKS.lock().unwrap().push((dir.to_owned(), Box::new(hook)));
    }

    pub(super) fn between_check_and_use(dir: &Path) {
        let hook = {
            let mut hooks = HOOKS.lock().unwrap();
            let at = hooks.iter().position(|(d, _)| d == dir);
            at.map(|i| hooks.remove(i).1)
        };
        if let Some(hook) = hook {
            hook();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{dir_entries, fixed_payload};
    use std::os::unix::fs::{PermissionsExt, symlink};
    use time::macros::datetime;

    const TOKEN: &str = "eyJ0eXAiOiJKV1QifQ.file-test.sig";

    fn store(dir: &Path) -> FileStore {
        FileStore::new("local", FileOptions::new(dir))
    }

    /// Writes `payload` under `name` with no read before it.
    async fn write_unread(
        store: &FileStore,
        name: &str,
        payload: &TokenPayload,
    ) -> Result<WriteOutcome, BackendError> {
        store
            .write(name, payload, &WritePrecondition::unread(false))
            .await
    }

    /// Someone rewrites the file after the value write read it (and checked the precondition
    /// against that read): the comparison right before the rename sees it, the write fails with
    /// Conflict, and their file (and no temporary file) is what is left.
    #[tokio::test]
    async fn a_value_write_rechecks_the_file_right_before_the_rename() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let name = "creds.json";
        let path = dir.path().join(name);
        fs::write(&path, r#"{"client_secret":"old","client_id":"app"}"#).unwrap();
        let read = store
            .read_stored(name, Some("client_secret"))
            .await
            .unwrap();
        let precondition = WritePrecondition::from_read(Some(read.metadata.clone()), true);
        let theirs = r#"{"client_secret":"theirs","client_id":"app"}"#;
        let swapped = path.clone();
        // the write's own read is made before this hook runs
        let hook_dir = dir.path().to_owned();
        let write = {
            let store = store.clone();
            let precondition = precondition.clone();
            async move {
                let value = SecretValue::new(SecretString::from("mine-new")).unwrap();
                store
                    .write_value(
                        name,
                        Some("client_secret"),
                        &value,
                        &CredentialRecord::default(),
                        &precondition,
                    )
                    .await
            }
        };
        pause::once(&hook_dir, move || fs::write(&swapped, theirs).unwrap());
        let err = write.await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert!(!format!("{err} {err:?}").contains("mine-new"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), theirs);
        assert_eq!(dir_entries(dir.path()), vec![name.to_owned()]);

        // a whole value: the sidecar (renamed first) names the value it describes
        let whole = "whole-secret";
        fs::write(dir.path().join(whole), "old-value").unwrap();
        let read = store.read_stored(whole, None).await.unwrap();
        assert!(read.record.is_empty());
        let record = CredentialRecord {
            key_id: Some("k1".into()),
            ..CredentialRecord::default()
        };
        let value = SecretValue::new(SecretString::from("new-value")).unwrap();
        let outcome = store
            .write_value(
                whole,
                None,
                &value,
                &record,
                &WritePrecondition::from_read(Some(read.metadata), true),
            )
            .await
            .unwrap();
        assert_eq!(outcome, WriteOutcome::Updated);
        let sidecar: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(dir.path().join("whole-secret.meta.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(sidecar["key_id"], "k1");
        assert_eq!(sidecar[VALUE_SHA256], fingerprint("new-value"));
        assert_eq!(mode_of(&dir.path().join(whole)), 0o600);
        // the value replaced by hand: the record no longer describes it
        fs::write(dir.path().join(whole), "by-hand").unwrap();
        let read = store.read_stored(whole, None).await.unwrap();
        assert!(read.record.is_empty(), "{:?}", read.record);
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn a_dir_that_does_not_exist_is_never_created_and_is_named() {
        let parent = tempfile::tempdir().unwrap();
        let missing = parent.path().join("tokenz");
        for follow_symlinks in [false, true] {
            let store = FileStore::new(
                "local",
                FileOptions {
                    follow_symlinks,
                    ..FileOptions::new(&missing)
                },
            );
            let expected = format!("{} does not exist: create it", missing.display());
            let err = store.metadata("apps/graph-token").await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig);
            assert!(err.to_string().contains(&expected), "{err}");
            let err = write_unread(
                &store,
                "apps/graph-token",
                &fixed_payload(TOKEN, Format::Raw),
            )
            .await
            .unwrap_err();
            assert!(err.to_string().contains(&expected), "{err}");
            assert!(!missing.exists(), "dir was created");
            // Nothing to sweep in a directory that does not exist.
            assert_eq!(store.remove_stale_temp_files("t").await.unwrap(), 0);
        }
    }

    #[tokio::test]
    async fn raw_write_keeps_expiry_in_a_sidecar_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let outcome = write_unread(
            &store,
            "apps/graph-token",
            &fixed_payload(TOKEN, Format::Raw),
        )
        .await
        .unwrap();
        assert_eq!(outcome, WriteOutcome::Created);
        let path = dir.path().join("apps/graph-token");
        assert_eq!(fs::read_to_string(&path).unwrap(), TOKEN);
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(mode_of(&dir.path().join("apps")), 0o700);
        let sidecar: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(dir.path().join("apps/graph-token.meta.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(sidecar["expires_at"], "2026-11-24T06:00:00Z");
        assert!(
            !sidecar.to_string().contains(TOKEN),
            "the sidecar holds the token: {sidecar}"
        );
        let meta = store.metadata("apps/graph-token").await.unwrap().unwrap();
        assert_eq!(meta.expires_on, Some(datetime!(2026-11-24 06:00 UTC)));
        assert_eq!(meta.managed_by.as_deref(), Some("secret-sync"));
        assert!(meta.updated_on.is_some());
    }

    #[tokio::test]
    async fn json_write_then_switch_to_raw_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        write_unread(&store, "t", &fixed_payload(TOKEN, Format::Raw))
            .await
            .unwrap();
        assert_eq!(
            write_unread(&store, "t", &fixed_payload(TOKEN, Format::Json))
                .await
                .unwrap(),
            WriteOutcome::Updated
        );
        assert!(
            !dir.path().join("t.meta.json").exists(),
            "stale sidecar left behind"
        );
        let doc: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.path().join("t")).unwrap()).unwrap();
        assert_eq!(doc["access_token"], TOKEN);
        assert_eq!(doc["expires_on"], 1_795_500_000_i64);
        assert_eq!(
            store
                .read("t", Some("access_token"))
                .await
                .unwrap()
                .expose_secret(),
            TOKEN
        );
        assert_eq!(
            write_unread(&store, "t", &fixed_payload(TOKEN, Format::Json))
                .await
                .unwrap(),
            WriteOutcome::Unchanged
        );
    }

    #[tokio::test]
    async fn no_temporary_files_are_left_and_custom_mode_is_applied() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(
            "local",
            FileOptions {
                mode: 0o640,
                ..FileOptions::new(dir.path())
            },
        );
        write_unread(&store, "a", &fixed_payload(TOKEN, Format::Raw))
            .await
            .unwrap();
        write_unread(
            &store,
            "a",
            &fixed_payload("other.token.value", Format::Raw),
        )
        .await
        .unwrap();
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "a.meta.json"]);
        assert_eq!(mode_of(&dir.path().join("a")), 0o640);
        assert_eq!(mode_of(&dir.path().join("a.meta.json")), 0o640);
    }

    #[tokio::test]
    async fn reads_credentials_files_written_by_people() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("id"), "client-id-value\n").unwrap();
        fs::write(
            dir.path().join("graph.json"),
            r#"{"client_id": "cid", "client_secret": "s3cr3t-value"}"#,
        )
        .unwrap();
        let store = store(dir.path());
        assert_eq!(
            store.read("id", None).await.unwrap().expose_secret(),
            "client-id-value"
        );
        assert_eq!(
            store
                .read("graph.json", Some("client_secret"))
                .await
                .unwrap()
                .expose_secret(),
            "s3cr3t-value"
        );
        let missing = store.read("graph.json", Some("tenant")).await.unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::FieldNotFound);
        assert!(!missing.to_string().contains("s3cr3t-value"));
        let meta = store.metadata("graph.json").await.unwrap().unwrap();
        assert_eq!((meta.expires_on, meta.managed_by), (None, None));
    }

    #[tokio::test]
    async fn symlinks_are_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let real = outside.path().join("real-token");
        fs::write(&real, "old").unwrap();
        symlink(&real, dir.path().join("link")).unwrap();
        symlink(outside.path(), dir.path().join("linkdir")).unwrap();

        let strict = store(dir.path());
        for name in ["link", "linkdir/x"] {
            let err = write_unread(&strict, name, &fixed_payload(TOKEN, Format::Raw))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
            assert!(err.to_string().contains("follow_symlinks = true"), "{err}");
        }
        assert_eq!(fs::read_to_string(&real).unwrap(), "old");
        assert!(!outside.path().join("x").exists());

        let relaxed = FileStore::new(
            "local",
            FileOptions {
                follow_symlinks: true,
                ..FileOptions::new(dir.path())
            },
        );
        relaxed
            .write(
                "link",
                &fixed_payload(TOKEN, Format::Raw),
                &WritePrecondition::unread(true),
            )
            .await
            .unwrap();
        assert!(
            fs::symlink_metadata(dir.path().join("link"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&real).unwrap(), TOKEN);
        assert_eq!(
            relaxed.read("link", None).await.unwrap().expose_secret(),
            TOKEN
        );
    }

    #[tokio::test]
    async fn a_path_component_swapped_for_a_symlink_after_the_checks_does_not_redirect_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        write_unread(&store, "apps/t", &fixed_payload("old.token", Format::Raw))
            .await
            .unwrap();
        // Between the checks and the writes, `apps` becomes a symlink to a directory outside.
        let (root, away) = (dir.path().to_owned(), outside.path().to_owned());
        pause::once(dir.path(), move || {
            fs::rename(root.join("apps"), root.join("apps.moved")).unwrap();
            symlink(&away, root.join("apps")).unwrap();
        });
        let result = write_unread(&store, "apps/t", &fixed_payload(TOKEN, Format::Raw)).await;
        assert_eq!(
            dir_entries(outside.path()),
            Vec::<String>::new(),
            "the write followed the swapped symlink out of dir ({result:?})"
        );
        // The write went to the directory it had checked, wherever that now is inside dir.
        result.unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("apps.moved/t")).unwrap(),
            TOKEN
        );
        assert_eq!(
            dir_entries(&dir.path().join("apps.moved")),
            ["t", "t.meta.json"]
        );
    }

    #[test]
    fn temporary_names_carry_pid_and_a_per_process_nonce_and_never_repeat() {
        let names: Vec<String> = (0..3).map(|_| temp_name("graph-token")).collect();
        let prefix = format!(".graph-token.tmp-{}-", std::process::id());
        let mut nonces = std::collections::BTreeSet::new();
        for name in &names {
            let rest = name
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{name}"));
            let (nonce, counter) = rest.split_once('-').unwrap_or_else(|| panic!("{name}"));
            assert_eq!(nonce.len(), 8, "{name}");
            assert!(nonce.chars().all(|c| c.is_ascii_hexdigit()), "{name}");
            assert!(counter.parse::<u64>().is_ok(), "{name}");
            nonces.insert(nonce.to_owned());
        }
        assert_eq!(nonces.len(), 1, "one nonce per process: {names:?}");
        let distinct: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(distinct.len(), 3, "{names:?}");
    }

    #[test]
    fn names_must_stay_inside_the_directory() {
        let store = store(Path::new("/nonexistent"));
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/./b",
            "a/",
            "t.meta.json",
            "a\0b",
        ] {
            let err = store.check_name(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidName, "{bad:?}");
            assert!(err.to_string().contains("relative path"), "{err}");
        }
        for good in ["graph.json", "apps/graph-token", ".hidden", "a..b"] {
            store.check_name(good).unwrap();
        }
    }

    #[tokio::test]
    async fn a_file_reference_becomes_a_store_and_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.json");
        fs::write(&path, r#"{"client_secret": "s"}"#).unwrap();
        let (store, name) = FileStore::for_path("file", &path).unwrap();
        assert_eq!(name, "graph.json");
        assert_eq!(store.options().dir, dir.path());
        assert_eq!(
            store
                .read(&name, Some("client_secret"))
                .await
                .unwrap()
                .expose_secret(),
            "s"
        );
        for bad in ["relative/graph.json", "/", "/etc/.."] {
            let err = FileStore::for_path("file", Path::new(bad)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidName, "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn missing_file_is_not_found_and_a_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        let store = store(dir.path());
        assert_eq!(
            store.read("nope", None).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
        assert!(store.metadata("nope").await.unwrap().is_none());
        let err = write_unread(&store, "sub", &fixed_payload(TOKEN, Format::Raw))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }

    fn payload_expiring(token: &str, expires_on: OffsetDateTime, managed_by: &str) -> TokenPayload {
        TokenPayload::new(
            SecretString::from(token),
            "Bearer",
            expires_on,
            managed_by,
            Format::Raw,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn raw_rewrite_replaces_token_and_sidecar_with_the_configured_mode() {
        let dir = tempfile::tempdir().unwrap();
        // 0o666 is narrowed by any usual umask at creation: the mode is set again after open.
        let store = FileStore::new(
            "local",
            FileOptions {
                mode: 0o666,
                ..FileOptions::new(dir.path())
            },
        );
        let first = datetime!(2026-11-24 06:00 UTC);
        let second = datetime!(2026-11-24 07:00 UTC);
        store
            .write(
                "t",
                &payload_expiring("old.token", first, "secret-sync"),
                &WritePrecondition::unread(false),
            )
            .await
            .unwrap();
        let outcome = store
            .write(
                "t",
                &payload_expiring("new.token", second, "secret-sync"),
                &WritePrecondition::unread(false),
            )
            .await
            .unwrap();
        assert_eq!(outcome, WriteOutcome::Updated);
        assert_eq!(dir_entries(dir.path()), ["t", "t.meta.json"]);
        assert_eq!(
            fs::read_to_string(dir.path().join("t")).unwrap(),
            "new.token"
        );
        assert_eq!(mode_of(&dir.path().join("t")), 0o666);
        assert_eq!(mode_of(&dir.path().join("t.meta.json")), 0o666);
        let meta = store.metadata("t").await.unwrap().unwrap();
        assert_eq!(meta.expires_on, Some(second));
        assert_eq!(
            store
                .write(
                    "t",
                    &payload_expiring("new.token", second, "secret-sync"),
                    &WritePrecondition::unread(false)
                )
                .await
                .unwrap(),
            WriteOutcome::Unchanged
        );
    }

    #[tokio::test]
    async fn a_raw_token_is_unchanged_only_when_its_sidecar_matches_too() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let expiry = datetime!(2026-11-24 06:00 UTC);
        let sidecar = dir.path().join("t.meta.json");
        let same = payload_expiring(TOKEN, expiry, "secret-sync");
        write_unread(&store, "t", &same).await.unwrap();
        let written = fs::read_to_string(&sidecar).unwrap();

        // The sidecar matches but the token differs: the token is read and the write happens.
        let other_token = payload_expiring("other.token", expiry, "secret-sync");
        assert_eq!(
            write_unread(&store, "t", &other_token).await.unwrap(),
            WriteOutcome::Updated
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("t")).unwrap(),
            "other.token"
        );
        write_unread(&store, "t", &same).await.unwrap();

        // Same token, but the sidecar is missing, is not JSON, differs in expiry or marker,
        // names another token, or names none (an older version's sidecar).
        let fingerprint = token_fingerprint(TOKEN);
        let later = format!(
            r#"{{"expires_on": 1795503600, "managed_by": "secret-sync", "token_sha256": "{fingerprint}"}}"#
        );
        let foreign = format!(
            r#"{{"expires_on": 1795500000, "managed_by": "someone-else", "token_sha256": "{fingerprint}"}}"#
        );
        let other = r#"{"expires_on": 1795500000, "managed_by": "secret-sync", "token_sha256": "0123456789abcdef"}"#;
        let old_format = r#"{"expires_on": 1795500000, "managed_by": "secret-sync"}"#;
        for broken in [
            None,
            Some("not json"),
            Some(later.as_str()),
            Some(foreign.as_str()),
            Some(other),
            Some(old_format),
        ] {
            match broken {
                None => fs::remove_file(&sidecar).unwrap(),
                Some(text) => fs::write(&sidecar, text).unwrap(),
            }
            // adopt: a foreign sidecar's marker would refuse the write otherwise
            assert_eq!(
                store
                    .write("t", &same, &WritePrecondition::unread(true))
                    .await
                    .unwrap(),
                WriteOutcome::Updated,
                "{broken:?}"
            );
            assert_eq!(fs::read_to_string(&sidecar).unwrap(), written, "{broken:?}");
            assert_eq!(fs::read_to_string(dir.path().join("t")).unwrap(), TOKEN);
            assert_eq!(dir_entries(dir.path()), ["t", "t.meta.json"]);
        }
        assert_eq!(
            write_unread(&store, "t", &same).await.unwrap(),
            WriteOutcome::Unchanged
        );
    }

    #[tokio::test]
    async fn a_failed_sidecar_rename_leaves_the_renamed_token_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        store
            .write(
                "t",
                &payload_expiring("old.token", datetime!(2026-11-24 06:00 UTC), "secret-sync"),
                &WritePrecondition::unread(false),
            )
            .await
            .unwrap();
        // A directory where the sidecar goes makes its rename fail (permissions would not: root).
        // With the token file gone the write reads no sidecar (a directory there would be an
        // error before any write, as for a metadata read) and goes straight to the renames.
        let sidecar = dir.path().join("t.meta.json");
        fs::remove_file(&sidecar).unwrap();
        fs::remove_file(dir.path().join("t")).unwrap();
        fs::create_dir(&sidecar).unwrap();
        fs::write(sidecar.join("keep"), "x").unwrap();
        let err = store
            .write(
                "t",
                &payload_expiring("new.token", datetime!(2026-11-24 07:00 UTC), "secret-sync"),
                &WritePrecondition::unread(false),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io, "{err}");
        assert!(err.to_string().contains("rename"), "{err}");
        assert!(!err.to_string().contains("new.token"), "{err}");
        assert!(!format!("{err:?}").contains("new.token"));
        // The token was renamed first, complete; the sidecar's temporary file is gone.
        assert_eq!(
            fs::read_to_string(dir.path().join("t")).unwrap(),
            "new.token"
        );
        assert_eq!(dir_entries(dir.path()), ["t", "t.meta.json"]);
        assert!(sidecar.is_dir());
    }

    #[tokio::test]
    async fn a_failure_before_the_renames_leaves_the_old_token_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        // A name whose token temporary file fits in NAME_MAX (255 bytes) but whose sidecar's
        // temporary file does not: creating the second temporary file fails.
        let name = "n".repeat(228);
        let target = dir.path().join(&name);
        let token_temp = temp_name(&name);
        let sidecar_temp = temp_name(&format!("{name}{SIDECAR_SUFFIX}"));
        assert!(token_temp.len() <= 255, "{token_temp:?}");
        assert!(sidecar_temp.len() > 255, "{sidecar_temp:?}");
        fs::write(&target, "old.token\n").unwrap();
        let err = write_unread(&store, &name, &fixed_payload("new.token", Format::Raw))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Io, "{err}");
        assert!(err.to_string().contains("temporary file"), "{err}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "old.token\n");
        assert_eq!(dir_entries(dir.path()), [name]);
    }

    /// The first 16 hex digits of the SHA-256 of `token`, computed here independently of the
    /// code under test.
    fn expected_fingerprint(token: &str) -> String {
        let hex: String = Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        hex[..16].to_owned()
    }

    fn sidecar_of(dir: &Path, name: &str) -> serde_json::Value {
        let text = fs::read_to_string(dir.join(format!("{name}.meta.json"))).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// Target `t` in `dir` has a sidecar that does not describe its token: its metadata has no
    /// expiry but is still secret-sync's, and writing `payload` replaces the token file and
    /// records the payload's expiry again.
    async fn assert_repaired_by_the_next_write(
        store: &FileStore,
        dir: &Path,
        payload: &TokenPayload,
    ) {
        let meta = store.metadata("t").await.unwrap().unwrap();
        assert_eq!(
            meta.expires_on, None,
            "a sidecar of another token gave an expiry"
        );
        assert_eq!(meta.managed_by.as_deref(), Some("secret-sync"));
        assert_eq!(
            write_unread(store, "t", payload).await.unwrap(),
            WriteOutcome::Updated
        );
        assert_eq!(
            fs::read_to_string(dir.join("t")).unwrap(),
            payload.access_token().expose_secret()
        );
        let meta = store.metadata("t").await.unwrap().unwrap();
        assert_eq!(meta.expires_on, Some(payload.expires_on()));
    }

    #[tokio::test]
    async fn the_sidecar_names_its_token_by_a_sha256_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        write_unread(&store, "t", &fixed_payload(TOKEN, Format::Raw))
            .await
            .unwrap();
        let sidecar = sidecar_of(dir.path(), "t");
        let expected = expected_fingerprint(TOKEN);
        assert_eq!(expected.len(), 16);
        assert_eq!(sidecar["token_sha256"], expected.as_str(), "{sidecar}");
        assert_eq!(
            sidecar.as_object().unwrap().len(),
            5,
            "token_type, expires_on, expires_at, managed_by, token_sha256: {sidecar}"
        );
        write_unread(&store, "t", &fixed_payload("other.token", Format::Raw))
            .await
            .unwrap();
        assert_eq!(
            sidecar_of(dir.path(), "t")["token_sha256"],
            expected_fingerprint("other.token").as_str()
        );
    }

    #[tokio::test]
    async fn a_token_replaced_by_hand_has_no_expiry_but_stays_ours_and_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let same = fixed_payload(TOKEN, Format::Raw);
        write_unread(&store, "t", &same).await.unwrap();
        fs::write(dir.path().join("t"), "hand.placed.token\n").unwrap();
        // The sidecar still names the payload's token, but the file does not hold it: the same
        // token written again (as a cached token would be) repairs the file.
        assert_repaired_by_the_next_write(&store, dir.path(), &same).await;
    }

    #[tokio::test]
    async fn a_sidecar_of_an_older_version_gives_no_expiry_and_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let same = fixed_payload(TOKEN, Format::Raw);
        write_unread(&store, "t", &same).await.unwrap();
        let mut sidecar = sidecar_of(dir.path(), "t");
        sidecar.as_object_mut().unwrap().remove("token_sha256");
        fs::write(dir.path().join("t.meta.json"), sidecar.to_string()).unwrap();
        assert_repaired_by_the_next_write(&store, dir.path(), &same).await;
        assert_eq!(
            sidecar_of(dir.path(), "t")["token_sha256"],
            expected_fingerprint(TOKEN).as_str()
        );
    }

    #[tokio::test]
    async fn the_same_token_with_its_sidecar_is_unchanged_and_nothing_is_touched() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let same = fixed_payload(TOKEN, Format::Raw);
        write_unread(&store, "t", &same).await.unwrap();
        // An old mtime: a rewrite within the filesystem's timestamp tick would not show.
        let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
        let stamp = |path: &Path| {
            let meta = fs::metadata(path).unwrap();
            (meta.ino(), meta.modified().unwrap())
        };
        let token = dir.path().join("t");
        let sidecar = dir.path().join("t.meta.json");
        for path in [&token, &sidecar] {
            File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        let before = (stamp(&token), stamp(&sidecar));
        assert_eq!(before.0.1, old);
        assert_eq!(
            write_unread(&store, "t", &same).await.unwrap(),
            WriteOutcome::Unchanged
        );
        assert_eq!((stamp(&token), stamp(&sidecar)), before);
        assert_eq!(dir_entries(dir.path()), ["t", "t.meta.json"]);
    }

    #[tokio::test]
    async fn an_old_token_beside_a_newer_tokens_sidecar_has_no_expiry() {
        // What a crash can leave on a filesystem that persisted the sidecar's rename but not
        // the token's: token A with the sidecar written for token B, which expires later.
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let first = datetime!(2026-11-24 06:00 UTC);
        let later = datetime!(2026-11-24 07:00 UTC);
        store
            .write(
                "t",
                &payload_expiring("token.a", first, "secret-sync"),
                &WritePrecondition::unread(false),
            )
            .await
            .unwrap();
        let newer = payload_expiring("token.b", later, "secret-sync");
        FileStore::new("local", FileOptions::new(other.path()))
            .write("t", &newer, &WritePrecondition::unread(false))
            .await
            .unwrap();
        fs::copy(
            other.path().join("t.meta.json"),
            dir.path().join("t.meta.json"),
        )
        .unwrap();
        assert_eq!(
            sidecar_of(dir.path(), "t")["expires_on"],
            later.unix_timestamp()
        );
        // Token A is not taken for token B; the next pass writes token B (again).
        assert_repaired_by_the_next_write(&store, dir.path(), &newer).await;
    }
}
