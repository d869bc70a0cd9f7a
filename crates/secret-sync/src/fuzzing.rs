//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, which nothing in the
//! workspace enables): the config loader, reached without making the `config` module public.

use std::path::Path;

/// Loads `text` as the content of `/fuzz/secret-sync.toml`, as `secret-sync validate` would,
/// with each environment variable holding its own name (so `authority = { env = "..." }` parses
/// text from the input too), and returns the errors' text (empty when the config
/// loaded). Loading contacts no server and reads no secret; it only checks whether `ca_file`s
/// exist, which under `/fuzz` they do not.
pub fn load_config(text: &str) -> String {
    match crate::config::load::parse(text, Path::new("/fuzz/secret-sync.toml"), &|var| {
        Some(var.to_owned())
    }) {
        Ok(_) => String::new(),
        Err(errors) => errors.to_string(),
    }
}
