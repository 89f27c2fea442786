//! The live identity: the credentials in force now and the TLS configs
//! built from them, swapped whole on rotation, with a notification for
//! whoever builds on them (`/ready`, metrics) and the last error a source
//! met (kept so an operator can see why a rotation did not happen).

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use rustls::crypto::ring::Ticketer;
use rustls::server::ProducesTickets;
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;

use crate::creds::Credentials;
use crate::tls::{TlsConfigs, TlsError, TlsOptions};

/// The server's ticket keys, and the bundle they were made under.
type TicketKeys = (Vec<CertificateDer<'static>>, Arc<dyn ProducesTickets>);

/// The proxy's current credentials and TLS configs. Cheap to read on every
/// new connection (one atomic load); a source installs new ones on rotation.
pub struct Identity {
    current: ArcSwapOption<TlsConfigs>,
    options: TlsOptions,
    /// The server's ticket keys and the bundle they were made under: kept
    /// across rotations while the bundle stays the same, so clients resume
    /// sessions across our certificate's rotation; new keys when the bundle
    /// changes, so no session verified under a retired root resumes.
    tickets: Mutex<Option<TicketKeys>>,
    last_error: ArcSwapOption<String>,
    /// Bumped on every install.
    version: watch::Sender<u64>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field(
                "current",
                &self.current.load().as_ref().map(|t| &t.creds.id),
            )
            .field("options", &self.options)
            .field("last_error", &self.last_error.load())
            .finish_non_exhaustive()
    }
}

impl Default for Identity {
    fn default() -> Self {
        Self::new()
    }
}

impl Identity {
    /// A handle with no credentials yet (the mesh is not ready for mTLS),
    /// accepting peers of its own trust domain.
    pub fn new() -> Self {
        Self::with_options(TlsOptions::default())
    }

    /// A handle whose TLS configs accept the peers `options` say.
    pub fn with_options(options: TlsOptions) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            options,
            tickets: Mutex::new(None),
            last_error: ArcSwapOption::empty(),
            version: watch::channel(0).0,
        }
    }

    /// The credentials in force, if any were installed.
    pub fn current(&self) -> Option<Arc<Credentials>> {
        self.current.load().as_ref().map(|t| t.creds.clone())
    }

    /// The TLS configs of the credentials in force: what the inbound
    /// listener accepts with and upstream connections connect with.
    pub fn tls(&self) -> Option<Arc<TlsConfigs>> {
        self.current.load_full()
    }

    /// Puts new credentials in force for every new connection, building
    /// their TLS configs. If the configs cannot be built the credentials in
    /// force stay, the error is logged and kept ([`Identity::last_error`])
    /// and returned.
    pub fn install(&self, creds: Credentials) -> Result<(), TlsError> {
        let creds = Arc::new(creds);
        let built = {
            let mut tickets = self.tickets.lock();
            let ticketer = match tickets.as_ref() {
                Some((bundle, t)) if *bundle == creds.bundle => Ok(t.clone()),
                _ => Ticketer::new(),
            };
            ticketer.map_err(TlsError::from).and_then(|ticketer| {
                let configs =
                    TlsConfigs::build_with(creds.clone(), &self.options, ticketer.clone())?;
                *tickets = Some((creds.bundle.clone(), ticketer));
                Ok(configs)
            })
        };
        let configs = match built {
            Ok(configs) => configs,
            Err(e) => {
                tracing::error!(
                    id = %creds.id,
                    error = %e,
                    "identity: cannot build TLS configs from the new certificate; the previous one stays in force"
                );
                self.report_error(format_args!("new certificate for {}: {e}", creds.id));
                return Err(e);
            }
        };
        tracing::info!(
            id = %creds.id,
            not_after = ?creds.not_after,
            "identity: new certificate in force"
        );
        self.current.store(Some(Arc::new(configs)));
        self.last_error.store(None);
        self.version.send_modify(|v| *v += 1);
        Ok(())
    }

    /// Records why a source could not renew or reload the credentials (the
    /// ones in force stay); cleared by the next successful install.
    pub fn report_error(&self, error: impl fmt::Display) {
        self.last_error.store(Some(Arc::new(error.to_string())));
    }

    /// Forgets the last error: the source that reported it is well again
    /// without a new install (e.g. its files were restored).
    pub fn clear_error(&self) {
        self.last_error.store(None);
    }

    /// The last error a source reported since the last install, if any.
    pub fn last_error(&self) -> Option<Arc<String>> {
        self.last_error.load_full()
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
            .is_some_and(|t| !t.creds.expired_at(now))
    }
}
