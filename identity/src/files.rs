//! Credentials from files an operator's PKI writes (certificate, key,
//! bundle), reloaded when they change.
//!
//! The files are polled: every few seconds all three are read through their
//! paths and fingerprinted (xxh3-128 of the contents). Polling by content
//! sees every way a PKI replaces files — in place, by atomic rename, by the
//! Kubernetes-style swap of a `..data` symlink — which file-system events
//! (inotify on a path whose target is renamed away) miss or double-report;
//! three small reads every few seconds cost nothing.
//!
//! ```text
//!   poll ─ unreadable ─────────────── warn (once per message), keep
//!        ─ same fingerprint as last ─ nothing
//!        ─ valid ─────────────────── install (unless equal to the one in force)
//!        ─ invalid, first time seen ─ debug (may be half-written), look again
//!        ─ invalid, seen twice ───── warn + Identity::report_error, keep
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use xxhash_rust::xxh3::xxh3_128;

use crate::creds::{Credentials, CredentialsError, Part};
use crate::live::Identity;
use crate::tls::TlsError;

/// How often [`FileSource::watch`] looks at the files when not told.
pub const DEFAULT_POLL: Duration = Duration::from_secs(5);

/// The largest file accepted (a chain or bundle of a few certificates is a
/// few kilobytes).
const MAX_FILE: u64 = 1 << 20;

/// Why the files cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: larger than {MAX_FILE} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: CredentialsError,
    },
    #[error("cannot build TLS configs: {0}")]
    Tls(#[from] TlsError),
}

/// The three files of the proxy's credentials, PEM: the certificate chain
/// (leaf first), the private key, and the trust bundle (one or more roots).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSource {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// The trust bundle: every root peers may chain to.
    pub bundle: PathBuf,
}

/// The contents of the three files at one read.
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    bundle: Vec<u8>,
}

impl Contents {
    fn fingerprint(&self) -> [u128; 3] {
        [
            xxh3_128(&self.cert),
            xxh3_128(&self.key),
            xxh3_128(&self.bundle),
        ]
    }
}

impl FileSource {
    /// The three paths.
    pub fn new(
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        bundle: impl Into<PathBuf>,
    ) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
            bundle: bundle.into(),
        }
    }

    /// Reads and checks the files now.
    pub fn load(&self) -> Result<Credentials, FileError> {
        self.parse(&self.read()?)
    }

    /// Loads the files and installs them in `identity` (at start).
    pub fn start(&self, identity: &Identity) -> Result<(), FileError> {
        identity.install(self.load()?)?;
        Ok(())
    }

    /// Looks at the files every `every` until `stop` turns true (or its
    /// sender is dropped), installing each new valid set in `identity`; an
    /// invalid set leaves the credentials in force and is logged and
    /// reported ([`Identity::last_error`]). Looks once at once, so a
    /// change made since [`FileSource::start`] is not missed.
    pub async fn watch(
        self,
        identity: Arc<Identity>,
        every: Duration,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut state = Watch::default();
        loop {
            if *stop.borrow() {
                return;
            }
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.read()).await {
                Ok(read) => self.step(&mut state, read, &identity),
                Err(e) => tracing::error!(error = %e, "files: reading task failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                changed = stop.changed() => if changed.is_err() { return },
            }
        }
    }

    /// One look at the files (see the module doc).
    fn step(&self, state: &mut Watch, read: Result<Contents, FileError>, identity: &Identity) {
        let contents = match read {
            Ok(c) => c,
            Err(e) => {
                let message = e.to_string();
                if state.unreadable.as_ref() != Some(&message) {
                    tracing::warn!(error = %message, "files: cannot read the credentials; the ones in force stay");
                    identity.report_error(&message);
                    state.unreadable = Some(message);
                    state.reported = true;
                }
                state.last = None;
                return;
            }
        };
        state.unreadable = None;
        let fingerprint = contents.fingerprint();
        if state.last == Some(fingerprint) {
            return;
        }
        match self.parse(&contents) {
            Ok(creds) => {
                state.last = Some(fingerprint);
                state.suspect = None;
                if identity.current().is_some_and(|c| same(&c, &creds)) {
                    // Back to the set in force (e.g. a bad write undone).
                    if std::mem::take(&mut state.reported) {
                        identity.clear_error();
                    }
                    return;
                }
                tracing::info!(id = %creds.id, cert = %self.cert.display(), "files: new credentials");
                // install logs and reports its own failure, and clears the
                // error on success.
                state.reported = identity.install(creds).is_err();
            }
            Err(e) if state.suspect == Some(fingerprint) => {
                tracing::warn!(error = %e, "files: the new credentials are invalid; the ones in force stay");
                identity.report_error(&e);
                state.reported = true;
                state.last = Some(fingerprint);
                state.suspect = None;
            }
            Err(e) => {
                tracing::debug!(error = %e, "files: invalid credentials (maybe half-written), looking again");
                state.suspect = Some(fingerprint);
            }
        }
    }

    fn read(&self) -> Result<Contents, FileError> {
        Ok(Contents {
            cert: read(&self.cert)?,
            key: read(&self.key)?,
            bundle: read(&self.bundle)?,
        })
    }

    fn parse(&self, c: &Contents) -> Result<Credentials, FileError> {
        Credentials::from_pem(&c.cert, &c.key, &c.bundle).map_err(|source| FileError::Invalid {
            path: match source.part() {
                Part::Chain => self.cert.clone(),
                Part::Key => self.key.clone(),
                Part::Bundle => self.bundle.clone(),
            },
            source,
        })
    }
}

/// What a watch remembers between looks.
#[derive(Default)]
struct Watch {
    /// The fingerprint of the last contents installed or reported invalid.
    last: Option<[u128; 3]>,
    /// Contents seen invalid once: reported if seen so again.
    suspect: Option<[u128; 3]>,
    /// The last read error reported, not to repeat it every poll.
    unreadable: Option<String>,
    /// Whether this watch reported the error the identity holds.
    reported: bool,
}

fn same(a: &Credentials, b: &Credentials) -> bool {
    a.chain == b.chain && a.bundle == b.bundle && a.key.secret_der() == b.key.secret_der()
}

fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|source| FileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut buf = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|source| FileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if buf.len() as u64 > MAX_FILE {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(buf)
}
