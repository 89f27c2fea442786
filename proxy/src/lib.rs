//! anymesh-proxy: the data plane.
//!
//! The layers, from the network in (docs/architecture.md, "Life of a
//! request"):
//!
//! - transports: the HTTP/1.1 server ([`h1`], with its codec) and the
//!   HTTP/2 server ([`h2`]) parse requests and encode responses; they hand
//!   each request to the forwarding layer through [`service::Service`] and
//!   import nothing from it;
//! - forwarding ([`forward::Proxy`]): reads the [`router::Router`]'s current
//!   route table once and follows it: route match → weighted split →
//!   cluster → balancer → endpoint; failures are one [`error::ProxyError`];
//! - the upstream client ([`upstream`]): pools, checkout, attempts and the
//!   decision to send one again.
//!
//! [`server`] runs the accept loops; the admin listener ([`admin`]) serves
//! `/ready`, `/config`, `/metrics`.

pub mod admin;
pub mod balance;
pub mod body;
pub mod error;
pub mod forward;
pub mod h1;
pub mod h2;
pub mod hooks;
pub mod hop;
pub mod metrics;
pub mod reply;
pub mod router;
pub mod server;
pub mod service;
pub mod upstream;

pub use forward::{Proxy, UpstreamSettings};
pub use metrics::Metrics;
pub use router::{Router, Routing};
