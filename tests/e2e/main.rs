//! End-to-end tests: the wired mesh (in-process, or the real binary where a
//! process boundary matters) on loopback ports with real upstreams.

mod cli;
mod etcd;
mod eureka;
mod explain;
mod harness;
mod kubernetes;
mod reload;
mod routing;
mod transport;
mod wire;
