//! End-to-end tests: the wired mesh (in-process, or the real binary where a
//! process boundary matters) on loopback ports with real upstreams.

mod cli;
mod consul;
mod etcd;
mod eureka;
mod explain;
mod h2;
mod h2_conformance;
mod h2_half_close;
mod harness;
mod health;
mod inbound_abuse;
mod integration_kubernetes;
mod integration_vm;
mod kubernetes;
mod kubernetes_routing;
mod marathon;
mod mixed_registries;
mod mtls;
mod mtls_ca;
mod reload;
mod resilience;
mod routing;
mod security_policy;
mod telemetry;
mod three_platforms;
mod tls_origination;
mod transport;
mod wire;
