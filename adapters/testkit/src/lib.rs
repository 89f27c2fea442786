//! anymesh-testkit: test support shared by the adapters (dev-dependency only).
//!
//! - [`EtcdServer`]: the real `etcd` binary on free loopback ports with a
//!   temporary data directory, with `kill`/`restart` for outage tests.
//! - [`TcpRelay`]: a loopback TCP relay that can be cut and restored, to
//!   partition an adapter from a registry that stays up (and writable).
//! - [`contract`]: the adapter contract test every adapter passes.
//! - [`fixtures`]: loaders for the captured payloads in `../shared/fixtures`.
//!
//! Helpers panic with a message saying what is wrong: they only run in tests.

pub mod contract;
mod etcd;
pub mod fixtures;
mod pki;
mod relay;

pub use etcd::{EtcdServer, LaunchError};
pub use pki::{PkiError, TestPki};
pub use relay::TcpRelay;
