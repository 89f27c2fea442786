//! anymesh-adapter-file: the file registry, the embedded default for bare VMs.
//!
//! A YAML file lists services and their endpoints; [`FileRegistry`] serves it
//! to the catalog and follows its changes. [`parse()`] and [`load`] turn a file
//! into a [`SourceView`](anymesh_core::SourceView) on their own, for
//! validation (`anymesh check`) and tests.
//!
//! The format reference follows (from `docs/file-registry.md`).
//!
#![doc = include_str!("../../../docs/file-registry.md")]

mod error;
mod parse;
mod watch;

pub use error::{FileError, Position};
pub use parse::{load, parse, MAX_FILE_BYTES};
pub use watch::{FileRegistry, DEBOUNCE, DEFAULT_POLL_INTERVAL, MIN_POLL_INTERVAL};
