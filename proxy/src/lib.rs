//! anymesh-proxy: the data plane.

pub mod balance;
