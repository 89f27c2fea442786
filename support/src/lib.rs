//! anymesh-support: what the registry adapters (and the proxy) would
//! otherwise each write again. The model lives in `anymesh-core`; this crate
//! holds plumbing only, and depends on nothing beyond std.
//!
//! - [`SecretSource`]: a password or token from a file or an environment
//!   variable, with one trimming rule ([`trim_secret`]).
//! - [`has_credentials`] and [`check_http_url`]: a registry URL must not carry
//!   a user or password, which would end up in logs and status messages.
//! - [`error_chain`]: an error and its sources on one line, for status
//!   messages and logs.
//! - [`MeshKeys`] and the checks under it: a mesh proxy's port and identity
//!   as registry metadata carries them, each value checked one way.

mod chain;
mod mesh;
mod secret;
mod url;

pub use chain::error_chain;
pub use mesh::{check_mesh_name, check_spiffe_id, mesh_port, MeshFields, MeshKeys, MeshValueError};
pub use secret::{trim_secret, SecretError, SecretSource};
pub use url::{check_http_url, has_credentials, UrlProblem};
