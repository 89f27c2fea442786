//! The live identity: the credentials in force now, swapped whole on
//! rotation, with a notification for whoever builds on them (the TLS
//! configs, `/ready`, metrics).

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

use crate::creds::Credentials;

/// The proxy's current credentials. Cheap to read on every new connection
/// (one atomic load); a source installs new ones on rotation.
#[derive(Debug)]
pub struct Identity {
    current: ArcSwapOption<Credentials>,
    /// Bumped on every install.
    version: watch::Sender<u64>,
}

impl Default for Identity {
    fn default() -> Self {
        Self::new()
    }
}

impl Identity {
    /// A handle with no credentials yet (the mesh is not ready for mTLS).
    pub fn new() -> Self {
        Self {
            current: ArcSwapOption::empty(),
            version: watch::channel(0).0,
        }
    }

    /// The credentials in force, if any were installed.
    pub fn current(&self) -> Option<Arc<Credentials>> {
        self.current.load_full()
    }

    /// Puts new credentials in force for every new connection.
    pub fn install(&self, creds: Credentials) {
        tracing::info!(
            id = %creds.id,
            not_after = ?creds.not_after,
            "identity: new certificate in force"
        );
        self.current.store(Some(Arc::new(creds)));
        self.version.send_modify(|v| *v += 1);
    }

    /// A receiver that changes on every install.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Whether credentials are in force and unexpired at `now`.
    pub fn valid_at(&self, now: SystemTime) -> bool {
        self.current
            .load()
            .as_ref()
            .is_some_and(|c| !c.expired_at(now))
    }
}
