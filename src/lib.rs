//! The anymesh binary's library side: settings, wiring and the commands, so
//! end-to-end tests can run the same code in-process.

pub mod ca;
pub mod cluster_routing;
pub mod demo;
pub mod explain;
pub mod inspect;
pub mod mesh;
pub mod persist;
pub mod settings;
pub mod source_metrics;
pub mod upstream;
