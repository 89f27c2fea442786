//! anymesh's own certificate authority (`anymesh ca`): join tokens, CSR
//! signing over HTTPS, renewal over mutual TLS, and its client.
//!
//! # The CA's state directory
//!
//! Everything the CA knows lives in one directory (`--dir`), so it survives
//! restarts and several commands (`token`, `rotate`, a running `serve`) can
//! share it:
//!
//! | file | what |
//! |---|---|
//! | `ca.json` | the trust domain and the signers (generation, files, activation time, retired) |
//! | `signer-<n>.pem` | signer `n`'s certificate (then any intermediates above it) |
//! | `signer-<n>.key` | its private key (PEM, mode 0600) |
//! | `root-<n>.pem` | the root(s) signer `n` chains to; for a self-signed root, its own certificate |
//! | `tokens/<sha256>.json` | an unused join token: its identity and expiry, named by the token's hash |
//! | `tokens/used/<sha256>.json` | a used one (moved there atomically when redeemed: single use, across restarts) |
//!
//! The token itself is printed once by `anymesh ca token` and stored nowhere.
//!
//! # The HTTPS API (`anymesh ca serve`)
//!
//! HTTP/1.1 over TLS; the server certificate is issued by the CA itself for
//! the names given with `--san`, so clients verify it against the trust
//! bundle and the host name in the CA's URL. Bodies are JSON, at most 64 KiB.
//! Errors are `{"error": "<reason>"}` with 400 (malformed request or CSR),
//! 401 (renewal without a client certificate), 403 (a token refused), 404,
//! 405, 413 (body too large) or 500.
//!
//! - `POST /v1/join` `{"token": "...", "csr": "<PEM>"}` → `{"chain": "<PEM>",
//!   "bundle": "<PEM>"}`: the first certificate of a workload. The token
//!   names the identity; it is used up by this call.
//! - `POST /v1/renew` `{"csr": "<PEM>"}`, over mutual TLS with the current
//!   certificate (a valid, unexpired leaf of one of this CA's signers) →
//!   the same shape, for the identity of the client certificate.
//! - `GET /v1/bundle` → `{"bundle": "<PEM>"}`: the roots proxies must trust.
//!
//! The CA signs only the identity it authenticated (the token's, or the
//! client certificate's): everything a CSR asks for (subject, SANs, key
//! usages, extensions) is ignored; only its public key is used, and it must
//! be ECDSA P-256. A leaf carries one URI SAN (the SPIFFE ID), an empty
//! subject, `basicConstraints CA:false`, key usage `digitalSignature` (the
//! SPIFFE X.509-SVID specification requires it and forbids `keyCertSign`
//! and `cRLSign`; `keyEncipherment` is for RSA key transport, which an
//! ECDSA key never does), extended key usage `serverAuth` + `clientAuth`,
//! and a validity backdated by up to a minute for clock skew.
//!
//! # Root rotation
//!
//! Proxies fetch the bundle on every renewal (at about half of a leaf's
//! lifetime), so a new root must be in every proxy's bundle before any leaf
//! signed by it appears, and the old root must stay until no leaf signed by
//! it is left:
//!
//! 1. `anymesh ca rotate --dir D [--overlap 24h]`: a new root is made. From
//!    now on the bundle holds the old and the new root; leaves are still
//!    signed by the old one. (For an intermediate CA, give the new
//!    intermediate with `--cert`, `--key` and `--root`.)
//! 2. Wait for the overlap to pass: the new root then signs every new leaf
//!    (and the CA's own server certificate). `anymesh ca activate --dir D`
//!    ends the wait at once. The overlap must be longer than a leaf lifetime
//!    (`--leaf-ttl`, 24 h by default) times 0.6, so that every running proxy
//!    has renewed once and holds both roots; the default is 24 h.
//! 3. Wait at least one more leaf lifetime, so every leaf of the old root
//!    has been renewed or has expired; then `anymesh ca retire --dir D`
//!    drops the old root from the bundle. Proxies drop it at their next
//!    renewal.
//!
//! A running `anymesh ca serve` reads `ca.json` on every request, so the
//! steps need no restart. A proxy that joins later needs a bootstrap bundle
//! that holds the root in force (`anymesh ca bundle --dir D`).

mod authority;
pub mod client;
mod fetch;
mod issue;
mod pem;
mod server;
mod tokens;
mod wire;

use std::io;
use std::path::PathBuf;

pub use authority::{CaDir, Intermediate, Rotation};
pub use server::{CaServer, ServeOptions};

/// Why a CA operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file holds something the CA cannot use.
    #[error("{}: {detail}", path.display())]
    BadFile { path: PathBuf, detail: String },
    /// An argument or the CA's state does not allow the operation.
    #[error("{0}")]
    Invalid(String),
    /// The CA refused a request (a token, a CSR or a client certificate).
    #[error("refused: {0}")]
    Refused(String),
    /// Making a key or a certificate failed.
    #[error("signing: {0}")]
    Sign(#[from] rcgen::Error),
    /// TLS settings could not be built.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// The CA could not be reached, or its answer was not understood.
    #[error("CA at {url}: {detail}")]
    Unreachable { url: String, detail: String },
}

impl CaError {
    fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    fn bad_file(path: impl Into<PathBuf>, detail: impl std::fmt::Display) -> Self {
        Self::BadFile {
            path: path.into(),
            detail: detail.to_string(),
        }
    }
}
