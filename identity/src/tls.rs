//! Mutual TLS between proxies: rustls configs built from [`crate::Credentials`],
//! SPIFFE peer verification and the peer identity of a finished handshake.
