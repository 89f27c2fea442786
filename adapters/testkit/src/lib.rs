//! anymesh-testkit: test support shared by the adapters (dev-dependency only).
//!
//! - [`EtcdServer`]: the real `etcd` binary on free loopback ports with a
//!   temporary data directory, with `kill`/`restart` for outage tests.
//! - [`FakeEureka`]: a protocol-faithful Eureka server (apps, delta,
//!   hashcode, register/cancel/status) that can fail, stall, restart empty
//!   and lie about its hashcode or lose a delta.
//! - [`FakeMarathon`]: a Marathon server (apps with tasks, the `/v2/events`
//!   server-sent event stream fed by state changes) that can kill tasks,
//!   fail health checks, drop its streams, fail, stall and require a token.
//! - [`FakeKube`]: a Kubernetes API server speaking list and watch
//!   (resourceVersion, chunked watch streams, bookmarks, 410 Gone in both
//!   forms) for Services, EndpointSlices and Pods, good enough for kube-rs.
//! - [`TcpRelay`]: a loopback TCP relay that can be cut and restored, to
//!   partition an adapter from a registry that stays up (and writable).
//! - [`FakeConsul`]: a Consul agent's HTTP API with state, blocking queries,
//!   ACLs and failure controls (see [`consul`]).
//! - [`TestPki`]: a throw-away CA, server and client certificates for TLS tests.
//! - [`contract`]: the adapter contract test every adapter passes.
//! - [`fixtures`]: the captured registry payloads in this crate's `fixtures/`
//!   directory (origins in its README), their loaders, and the check that
//!   each is decoded by a test.
//! - [`wait`]: polling until a condition holds, with a deadline.
//! - [`chaos`]: [`ChaosUpstream`], a test upstream that fails on command
//!   (statuses, hangs, resets, kills), and steady load through a proxy.
//! - [`bytes`]: byte streams cut into pieces or damaged, for generated tests.
//!
//! Helpers panic with a message saying what is wrong: they only run in tests.

pub mod bytes;
pub mod chaos;
pub mod consul;
pub mod contract;
mod etcd;
pub mod eureka;
pub mod fixtures;
pub mod kubernetes;
pub mod marathon;
mod pki;
mod relay;
pub mod wait;

pub use chaos::ChaosUpstream;
pub use consul::FakeConsul;
pub use etcd::{EtcdServer, LaunchError};
pub use eureka::{FakeEureka, FakeInstance};
pub use kubernetes::FakeKube;
pub use marathon::{FakeApp, FakeMarathon, FakeTask};
pub use pki::{PkiError, TestPki};
pub use relay::TcpRelay;
