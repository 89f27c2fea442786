//! Credentials from files an operator's PKI writes (certificate, key,
//! bundle), reloaded when they change.
