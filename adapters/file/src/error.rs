//! [`FileError`]: why a registry file could not be turned into a view.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A 1-based line and column in the registry file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line number, starting at 1.
    pub line: usize,
    /// Column number, starting at 1.
    pub column: usize,
}

impl Position {
    /// The position just after `prefix`, counting columns in characters.
    pub(crate) fn after(prefix: &str) -> Self {
        let line = prefix.matches('\n').count() + 1;
        let last_line = prefix.rsplit('\n').next().unwrap_or(prefix);
        Self {
            line,
            column: last_line.chars().count() + 1,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Why a registry file was rejected. The whole file is rejected: a file
/// registry never serves half a file.
///
/// `Display` starts with the file path, then the position when one is known,
/// compiler style: `services.yaml:9:15: services[1].endpoints[0].port: must be
/// 1..=65535, got 0`.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be opened or read (missing, a directory, no permission).
    #[error("{}: cannot read: {source}", .path.display())]
    Read {
        /// The file as given to [`load`](crate::load).
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// The file is larger than [`MAX_FILE_BYTES`](crate::MAX_FILE_BYTES).
    #[error("{}: larger than the {limit}-byte limit", .path.display())]
    TooLarge {
        /// The file as given to [`load`](crate::load).
        path: PathBuf,
        /// The limit that was exceeded, in bytes.
        limit: u64,
    },

    /// The file is not well-formed YAML (or not UTF-8).
    #[error("{}:{at}: {message}", .path.display())]
    Syntax {
        /// The file, as named in messages.
        path: PathBuf,
        /// Where the parser gave up.
        at: Position,
        /// What the parser expected.
        message: String,
    },

    /// The file is YAML but does not describe a valid set of services: a wrong
    /// type, an unknown key, an invalid value or an inconsistency. `message`
    /// starts with the field path (`services[1].endpoints[0].port: ...`).
    #[error("{}{}: {message}", .path.display(), OptPosition(.at))]
    Invalid {
        /// The file, as named in messages.
        path: PathBuf,
        /// Where the offending value starts, when it could be found.
        at: Option<Position>,
        /// The field path and what is wrong with it.
        message: String,
    },
}

/// Formats `:line:column` or nothing.
struct OptPosition<'a>(&'a Option<Position>);

impl fmt::Display for OptPosition<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(at) => write!(f, ":{at}"),
            None => Ok(()),
        }
    }
}
