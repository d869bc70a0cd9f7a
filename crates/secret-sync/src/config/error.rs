//! Config errors: each one names the file, line, column and key path, says what is wrong and
//! what to do, and they are reported together so a user fixes a file in one pass.
//!
//! Messages never contain a value that could be a secret: unknown keys and wrong types are
//! reported by key name and type only.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line and column; `None` for a problem with the file as a whole (unreadable).
    pub position: Option<(usize, usize)>,
    /// The key path, e.g. `jobs.graph.targets[1].to`; empty for the document itself.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// Every problem found in one config file, in file order. Displayed one per line as
/// `FILE:LINE:COLUMN: KEY: MESSAGE`, the form editors and terminals turn into links.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    file: PathBuf,
    errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub(crate) fn new(file: &Path, mut errors: Vec<ConfigError>) -> Self {
        errors.sort_by_key(|e| e.position);
        ConfigErrors {
            file: file.to_owned(),
            errors,
        }
    }

    /// The errors, in file order.
    pub fn errors(&self) -> &[ConfigError] {
        &self.errors
    }

    /// The config file they are in.
    pub fn file(&self) -> &Path {
        &self.file
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.errors.len();
        write!(
            f,
            "{} has {count} configuration {}:",
            self.file.display(),
            if count == 1 { "error" } else { "errors" }
        )?;
        for error in &self.errors {
            write!(f, "\n{}:", self.file.display())?;
            if let Some((line, column)) = error.position {
                write!(f, "{line}:{column}:")?;
            }
            if !error.key.is_empty() {
                write!(f, " {}:", one_line(&error.key))?;
            }
            write!(f, " {}", one_line(&error.message))?;
        }
        Ok(())
    }
}

/// `text` with its control characters escaped (`\n` as the two characters `\` `n`), so that a
/// key or value quoted from the file cannot add a line of its own to the output: every error is
/// exactly one `FILE:LINE:COLUMN: key: message` line, whatever the file holds.
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}
