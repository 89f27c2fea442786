//! [`SecretSource`]: a password or token from a file or an environment
//! variable, trimmed by one rule, [`trim_secret`].

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Where a secret comes from.
///
/// Secrets are read again each time they are needed ([`read`](Self::read)),
/// so a rotated file or variable is picked up without a restart. The file is
/// read with `std::fs`: it is a small local file (a Kubernetes secret volume
/// is tmpfs), read once per request to the registry, as kube-rs reads its
/// token file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource<'a> {
    /// The contents of this file.
    File(&'a Path),
    /// The value of this environment variable.
    Env(&'a str),
}

/// Why a secret could not be read. The secret itself is never part of it.
#[derive(Debug)]
pub enum SecretError {
    /// The file could not be read, or does not hold UTF-8 text.
    ReadFile { path: PathBuf, source: io::Error },
    /// The environment variable is not set, or not UTF-8.
    EnvNotSet { name: String },
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::ReadFile { path, source } => {
                write!(f, "reading {}: {source}", path.display())
            }
            SecretError::EnvNotSet { name } => {
                write!(f, "environment variable {name} is not set")
            }
        }
    }
}

impl std::error::Error for SecretError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SecretError::ReadFile { source, .. } => Some(source),
            SecretError::EnvNotSet { .. } => None,
        }
    }
}

/// The one trimming rule, for files and variables alike: trailing whitespace
/// goes (the newline `echo` and editors add to a file, a stray `\r`,
/// spaces), leading whitespace stays. A secret never ends in whitespace in
/// practice, while a file almost always does; a leading space, on the other
/// hand, could be part of a password, so it is not guessed away.
pub fn trim_secret(raw: &str) -> &str {
    raw.trim_end()
}

impl<'a> SecretSource<'a> {
    /// The file if one is configured, else the variable; `None` when neither
    /// is (a configuration holding both is refused by its `validate`).
    pub fn from_options(file: Option<&'a Path>, env: Option<&'a str>) -> Option<Self> {
        match (file, env) {
            (Some(path), _) => Some(SecretSource::File(path)),
            (None, Some(name)) => Some(SecretSource::Env(name)),
            (None, None) => None,
        }
    }

    /// Reads the secret now, trimmed by [`trim_secret`]. It may be empty.
    pub fn read(self) -> Result<String, SecretError> {
        match self {
            SecretSource::File(path) => {
                let read_err = |source| SecretError::ReadFile {
                    path: path.to_path_buf(),
                    source,
                };
                let bytes = std::fs::read(path).map_err(read_err)?;
                let text = String::from_utf8(bytes).map_err(|_| {
                    read_err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the file does not hold UTF-8 text",
                    ))
                })?;
                Ok(trim_secret(&text).to_string())
            }
            SecretSource::Env(name) => match std::env::var(name) {
                Ok(value) => Ok(trim_secret(&value).to_string()),
                Err(_) => Err(SecretError::EnvNotSet {
                    name: name.to_string(),
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests;
