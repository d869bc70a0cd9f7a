//! The small JSON files the daemon and the lifecycle commands keep in `[settings.credentials]
//! state_dir`: `credentials-state.json` (credentials/state.rs) and `actions-pending.json`
//! (actions/pending.rs). Neither ever holds a secret.
//!
//! Written atomically: a temp file created anew (a file or symlink left at its name is
//! unlinked first, never followed), mode 0600, synced, then renamed over the old one. Read as
//! the crate reads every file someone else could put in its place: `O_NOFOLLOW | O_NONBLOCK`, a
//! regular file (fstat), at most [`MAX_BYTES`], UTF-8 JSON of the expected shape; anything else
//! is an error saying why (the callers ignore such a file with a warning), and a symlink, FIFO
//! or device is never followed, waited on or read whole.

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::OFlags;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest state file read: 1 MiB, the crate's limit for files it reads.
pub const MAX_BYTES: u64 = 1 << 20;

/// The file at `path` as `T`: `None` when it does not exist, an error saying why it cannot be
/// used (`what` names the file in it: "a state file secret-sync wrote").
pub fn read<T: DeserializeOwned>(path: &Path, what: &str) -> Result<Option<T>, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32)
        .open(path);
    let mut file = match file {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) if err.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err("it is a symbolic link, which is not followed".into());
        }
        Err(err) => return Err(format!("it cannot be opened ({err})")),
    };
    let meta = file
        .metadata()
        .map_err(|err| format!("it cannot be examined ({err})"))?;
    if !meta.is_file() {
        return Err("it is not a regular file (a FIFO, socket, device or directory)".into());
    }
    let too_big = || format!("it is larger than {} KiB", MAX_BYTES / 1024);
    if meta.len() > MAX_BYTES {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    (&mut file)
        .take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("it cannot be read ({err})"))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(too_big());
    }
    let text = String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_owned())?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|err| format!("it is not {what} ({err})"))
}

/// Replaces `dir/name` with `value` as pretty JSON, atomically (see the module doc).
pub fn write<T: Serialize>(dir: &Path, name: &str, value: &T) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    let target = dir.join(name);
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    // A temp file left by a killed run of the same pid, or anything put at its name, goes
    // (unlink removes a symlink itself, never its target); the new one is created anew and
    // never through a symlink.
    match std::fs::remove_file(&temp) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(OFlags::NOFOLLOW.bits() as i32)
        .mode(0o600)
        .open(&temp)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&temp, &target)
}
