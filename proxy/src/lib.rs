//! anymesh-proxy: the data plane.
//!
//! The outbound listener ([`server::serve_proxy`]) hands each request to
//! [`forward::Proxy`], which reads the [`router::Router`]'s current route table
//! once and follows it: route match → weighted split → cluster → balancer →
//! endpoint. The admin listener ([`admin`]) serves `/ready`, `/config`, `/metrics`.

pub mod admin;
pub mod balance;
pub mod body;
pub mod forward;
pub mod h1;
pub mod h2;
pub mod hop;
pub mod metrics;
pub mod pool;
pub mod reply;
pub mod router;
pub mod server;

pub use forward::{Proxy, UpstreamSettings};
pub use metrics::Metrics;
pub use router::{Router, Routing};
