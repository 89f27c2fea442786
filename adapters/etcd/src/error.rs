//! [`EtcdError`]: why connecting to, listing or watching etcd failed.

use std::path::PathBuf;
use std::time::Duration;

/// One failed operation. Every one is reported to the catalog and retried
/// after a backoff; none ends the registry.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The configuration is unusable.
    #[error("invalid etcd registry config: {message}")]
    Config { message: String },
    /// A TLS or password file could not be read.
    #[error("reading {what} {}: {source}", .path.display())]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The password's environment variable is not set (or not UTF-8).
    #[error("environment variable {name} (the etcd password) is not set")]
    PasswordEnv { name: String },
    /// Building the client or authenticating failed.
    #[error("connecting to etcd at {endpoints} failed: {source}")]
    ConnectFailed {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    /// The prefix get failed.
    #[error("listing etcd prefix `{prefix}` failed: {source}")]
    ListFailed {
        prefix: String,
        #[source]
        source: etcd_client::Error,
    },
    /// Creating or reading the watch failed.
    #[error("watching etcd prefix `{prefix}` failed: {source}")]
    WatchFailed {
        prefix: String,
        #[source]
        source: etcd_client::Error,
    },
    /// The watch stream ended, or etcd canceled the watch for a reason other
    /// than compaction.
    #[error("etcd ended the watch on prefix `{prefix}`{}", reason_suffix(.reason))]
    WatchEnded { prefix: String, reason: String },
    /// An operation took longer than its timeout.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        operation: &'static str,
        after: Duration,
    },
}

fn reason_suffix(reason: &str) -> String {
    match reason {
        "" => String::new(),
        r => format!(": {r}"),
    }
}

/// Whether an etcd error means "the revision asked for has been compacted"
/// (gRPC code 11 `OUT_OF_RANGE`, "etcdserver: mvcc: required revision has
/// been compacted").
pub fn is_compacted(code: i32, message: &str) -> bool {
    code == 11 && message.contains("required revision has been compacted")
}

impl EtcdError {
    /// Whether this is a read at a compacted revision (see [`is_compacted`]).
    pub fn is_compacted(&self) -> bool {
        match self {
            EtcdError::ListFailed { source, .. } | EtcdError::WatchFailed { source, .. } => {
                match source {
                    etcd_client::Error::GRpcStatus(s) => is_compacted(s.code() as i32, s.message()),
                    _ => false,
                }
            }
            _ => false,
        }
    }

    /// The message with every cause, for the catalog's status.
    pub fn chain(&self) -> String {
        anymesh_support::error_chain(self)
    }
}
