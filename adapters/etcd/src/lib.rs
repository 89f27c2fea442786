//! anymesh-adapter-etcd: endpoints from an etcd v3 key prefix.
//!
//! [`EtcdRegistry`] lists `<prefix>` at a revision, sends the catalog a full
//! [`Reset`](anymesh_core::Change::Reset), then watches from the next
//! revision and streams upserts and removes. Keys and values follow etcd's own
//! `go.etcd.io/etcd/client/v3/naming/endpoints`, so services that already
//! register through etcd's endpoints manager are found as they are; an
//! anymesh-native value with ports, labels and health is accepted too.
//! [`Decoder`] turns one key and value into an endpoint on its own, for tests
//! and tools.
//!
//! The format and configuration reference follows (from `docs/etcd-registry.md`).
//!
#![doc = include_str!("../../../docs/etcd-registry.md")]

mod config;
mod decode;
mod error;
#[cfg(test)]
mod fixture;
mod registry;
mod state;

pub use config::{AuthConfig, BackoffConfig, EtcdConfig, TlsConfig};
pub use decode::{DecodeError, Decoder, Layout, Problem, MESH_METADATA};
pub use error::{is_compacted, EtcdError};
pub use registry::{EtcdRegistry, Listing};
