//! [`KubernetesError`]: why reading the Kubernetes API failed.

/// One failed operation. Every one is reported to the catalog and retried
/// after a backoff; none ends the registry.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    /// The configuration is unusable.
    #[error("invalid kubernetes registry config: {message}")]
    Config { message: String },
    /// The connection settings (kubeconfig, service account) could not be
    /// loaded, or the client not built.
    #[error("kubernetes client setup failed ({what}): {message}")]
    Client { what: String, message: String },
    /// A list or watch of one resource failed.
    #[error("{resource}: {message}")]
    Watch { resource: String, message: String },
}
