//! anymesh-adapter-marathon: endpoints from the tasks of Marathon apps
//! (Mesos).
//!
//! [`MarathonRegistry`] opens Marathon's `GET /v2/events` server-sent event
//! stream, reads every app with its tasks (`GET /v2/apps?embed=apps.tasks`),
//! sends the catalog a full [`Reset`](anymesh_core::Change::Reset), then
//! re-reads the apps on every relevant event and sends the differences. When
//! the stream is lost it reconnects with a capped, jittered backoff and
//! resyncs in full. [`decode_apps`], [`decode_tasks`] and [`decode_event`]
//! read Marathon's payloads on their own, for tests and tools.
//!
//! The configuration and mapping reference follows (from `docs/marathon-registry.md`).
//!
#![doc = include_str!("../../../docs/marathon-registry.md")]

mod client;
mod config;
mod decode;
mod error;
mod registry;
mod sse;
mod state;
mod translate;

pub use client::EVENT_TYPES;
pub use config::{AddressMode, AuthConfig, BackoffConfig, HostnameStyle, MarathonConfig};
pub use decode::{
    decode_apps, decode_event, decode_tasks, App, AppList, Container, Docker, Event,
    HealthCheckResult, Network, PortDefinition, PortMapping, Task, TaskIp, TERMINAL_STATES,
};
pub use error::MarathonError;
pub use registry::MarathonRegistry;
pub use sse::{SseEvent, SseParser};
pub use translate::{
    task_state, Networking, PortSpec, Translator, MESH_LABELS, PROXY_PORT_LABEL, SKIP_LABEL,
};
