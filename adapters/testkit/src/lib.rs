//! anymesh-testkit: test support shared by the adapters (dev-dependency only).
//!
//! - [`EtcdServer`]: the real `etcd` binary on free loopback ports with a
//!   temporary data directory, with `kill`/`restart` for outage tests.
//! - [`FakeEureka`]: a protocol-faithful Eureka server (apps, delta,
//!   hashcode, register/cancel/status) that can fail, stall, restart empty
//!   and lie about its hashcode or lose a delta.
//! - [`FakeKube`]: a Kubernetes API server speaking list and watch
//!   (resourceVersion, chunked watch streams, bookmarks, 410 Gone in both
//!   forms) for Services, EndpointSlices and Pods, good enough for kube-rs.
//! - [`TcpRelay`]: a loopback TCP relay that can be cut and restored, to
//!   partition an adapter from a registry that stays up (and writable).
//! - [`contract`]: the adapter contract test every adapter passes.
//! - [`fixtures`]: loaders for the captured payloads in `../shared/fixtures`.
//!
//! Helpers panic with a message saying what is wrong: they only run in tests.

pub mod contract;
mod etcd;
pub mod eureka;
pub mod fixtures;
pub mod kubernetes;
mod relay;

pub use etcd::{EtcdServer, LaunchError};
pub use eureka::{FakeEureka, FakeInstance};
pub use kubernetes::FakeKube;
pub use relay::TcpRelay;
