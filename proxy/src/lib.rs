//! anymesh-proxy: the data plane.
//!
//! The layers, from the network in (docs/architecture.md, "Life of a
//! request"):
//!
//! - transports: the HTTP/1.1 server (`h1`, with its codec) and the
//!   HTTP/2 server (`h2`) parse requests and encode responses; they hand
//!   each request to the forwarding layer through `service::Service` and
//!   import nothing from it;
//! - forwarding ([`Proxy`]): reads the [`router::Router`]'s current route
//!   table once and follows it: route match → weighted split → cluster →
//!   balancer → endpoint; failures are one `error::ProxyError`; the
//!   per-request hooks (`hooks`) are where resilience, policy and telemetry
//!   attach;
//! - the upstream client (`upstream`): pools, checkout, attempts and the
//!   decision to send one again.
//!
//! The internal modules are documented with `cargo doc
//! --document-private-items`; `scripts/module-cycles` checks that no two of
//! them import each other in a circle.
//!
//! [`server`] runs the accept loops; the admin listener ([`admin`]) serves
//! `/ready`, `/config`, `/metrics`.

pub mod admin;
pub mod balance;
mod body;
mod error;
mod forward;
mod h1;
mod h2;
pub mod health;
mod hooks;
mod hop;
pub mod inbound;
pub mod metrics;
mod mirror;
pub mod policy;
mod reply;
mod resilience;
mod rewind;
pub mod router;
pub mod server;
mod service;
mod stream;
pub mod telemetry;
mod upstream;

pub use forward::{Proxy, UpstreamSettings};
pub use metrics::Metrics;
pub use router::{Router, Routing};
