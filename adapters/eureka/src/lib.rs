//! anymesh-adapter-eureka: endpoints from Netflix Eureka servers.
//!
//! [`EurekaRegistry`] fetches the whole registry (`GET {server}/apps`), sends
//! the catalog a full [`Reset`](anymesh_core::Change::Reset), then polls
//! `GET {server}/apps/delta` and applies its `ADDED` / `MODIFIED` / `DELETED`
//! instances. After every delta it computes the registry's reconcile hashcode
//! locally (`DOWN_1_UP_3_`) and compares it with the server's
//! `apps__hashcode`; a mismatch means a change was missed and triggers a full
//! fetch, as Netflix's own client does. [`decode_applications`] turns a
//! response body (either JSON shape servers emit, or XML) into instances on
//! its own, for tests and tools.
//!
//! The configuration and mapping reference follows (from `docs/eureka-registry.md`).
//!
#![doc = include_str!("../../../docs/eureka-registry.md")]

mod client;
mod config;
mod decode;
mod error;
mod hashcode;
mod registry;
mod state;
mod translate;
mod xml;

pub use config::{AddressField, AuthConfig, BackoffConfig, EurekaConfig, PortChoice};
pub use decode::{
    decode_applications, Action, Applications, DataCenter, Instance, Lease, PortInfo, Status,
};
pub use error::EurekaError;
pub use hashcode::reconcile_hashcode;
pub use registry::EurekaRegistry;
pub use translate::{Translator, MESH_METADATA};
