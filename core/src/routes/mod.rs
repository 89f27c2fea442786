//! Compiled routing: the immutable [`RouteTable`] the proxy reads, and the
//! compiler that builds it from a catalog snapshot and Istio config.

pub mod compile;
pub mod policy;
pub mod table;

pub use policy::*;
pub use table::*;
