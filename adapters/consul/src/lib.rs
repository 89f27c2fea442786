//! anymesh-adapter-consul: service instances from Consul's catalog.
//!
//! [`ConsulRegistry`] reads `/v1/catalog/services` and
//! `/v1/health/service/<name>` of one datacenter, sends the catalog a full
//! [`Reset`](anymesh_core::Change::Reset), then follows both with blocking
//! queries (one long-poll for the catalog, one per followed service) and
//! streams upserts and removals. Which services are followed is decided by
//! the routing configuration's hosts ([`Interest`]), the configured list and
//! `watch_all`. [`Decoder`] turns one health entry into an endpoint on its
//! own, for tests and tools.
//!
//! The configuration reference and behaviour follow (from `docs/consul-registry.md`).
//!
#![doc = include_str!("../../../docs/consul-registry.md")]

pub mod api;
mod client;
mod config;
mod decode;
mod error;
mod interest;
mod registry;
mod state;

pub use client::{Answer, Client, INDEX_HEADER, TOKEN_HEADER};
pub use config::{AddressFrom, BackoffConfig, Consistency, ConsulConfig, TlsConfig, MAX_WAIT};
pub use decode::{Decoder, Instance, Sidecar, MESH_META, PORT_NAME_META, PROTOCOL_META};
pub use error::ConsulError;
pub use interest::Interest;
pub use registry::ConsulRegistry;
