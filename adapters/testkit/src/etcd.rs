//! [`EtcdServer`]: a real etcd for tests.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use crate::pki::TestPki;

/// How long etcd may take to answer after it was started.
const READY_DEADLINE: Duration = Duration::from_secs(20);

/// The package that provides `etcd` on Debian.
const PACKAGE: &str = "etcd-server";

/// Why etcd could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("the etcd binary was not found on PATH or at /usr/bin/etcd: install the Debian package `{PACKAGE}` (scripts/test installs it)")]
    NotInstalled,
    #[error("starting {}: {source}", .binary.display())]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("etcd did not become ready within {READY_DEADLINE:?}; its log:\n{log}")]
    NotReady { log: String },
    #[error("etcd exited during startup ({status}); its log:\n{log}")]
    Exited { status: String, log: String },
    #[error("{0}")]
    Pki(#[from] crate::pki::PkiError),
    #[error("reading {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A single-member etcd on `127.0.0.1`, stopped (and its data removed) on drop.
///
/// [`start_tls`](Self::start_tls) serves clients over TLS only and requires a
/// client certificate (`--client-cert-auth`), with certificates from a
/// [`TestPki`] made for the occasion.
#[derive(Debug)]
pub struct EtcdServer {
    binary: PathBuf,
    data: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
    tls: Option<TestPki>,
}

impl EtcdServer {
    /// Starts etcd and waits until it answers; panics with the reason (naming
    /// the package to install when etcd is missing).
    pub async fn start() -> Self {
        match Self::try_start().await {
            Ok(s) => s,
            Err(e) => panic!("cannot start etcd for this test: {e}"),
        }
    }

    /// Starts etcd and waits until it answers.
    pub async fn try_start() -> Result<Self, LaunchError> {
        Self::launch(false).await
    }

    /// Starts etcd serving clients over TLS with client certificates
    /// required; panics with the reason.
    pub async fn start_tls() -> Self {
        match Self::launch(true).await {
            Ok(s) => s,
            Err(e) => panic!("cannot start etcd with TLS for this test: {e}"),
        }
    }

    async fn launch(tls: bool) -> Result<Self, LaunchError> {
        let binary = find_etcd().ok_or(LaunchError::NotInstalled)?;
        let data = tempfile::Builder::new().prefix("anymesh-etcd-").tempdir()?;
        let tls = if tls {
            let dir = data.path().join("pki");
            std::fs::create_dir(&dir)?;
            Some(TestPki::generate(&dir)?)
        } else {
            None
        };
        let mut server = Self {
            binary,
            data,
            client_port: free_port()?,
            peer_port: free_port()?,
            child: None,
            tls,
        };
        server.spawn_and_wait().await?;
        Ok(server)
    }

    /// The client URL, e.g. `http://127.0.0.1:40123` (`https://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// The certificates, when started with TLS.
    pub fn tls(&self) -> Option<&TestPki> {
        self.tls.as_ref()
    }

    /// How a client connects: with the CA and the client certificate under TLS.
    fn connect_options(&self) -> Result<etcd_client::ConnectOptions, LaunchError> {
        let options = etcd_client::ConnectOptions::new();
        let Some(pki) = &self.tls else {
            return Ok(options);
        };
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| LaunchError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read(&pki.ca)?))
            .identity(etcd_client::Identity::from_pem(
                read(&pki.client_cert)?,
                read(&pki.client_key)?,
            ));
        Ok(options.with_tls(tls))
    }

    /// The client address.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    /// A client connected to this server (with the client certificate under TLS).
    pub async fn client(&self) -> etcd_client::Client {
        let options = match self.connect_options() {
            Ok(o) => o,
            Err(e) => panic!("client options for the test etcd: {e}"),
        };
        match etcd_client::Client::connect([self.url()], Some(options)).await {
            Ok(c) => c,
            Err(e) => panic!("connecting to the test etcd at {}: {e}", self.url()),
        }
    }

    /// Kills etcd at once (SIGKILL), as a crash or a network outage would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data directory; panics if it
    /// does not come back.
    pub async fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.spawn_and_wait().await {
            panic!("restarting etcd for this test: {e}");
        }
    }

    fn log_path(&self) -> PathBuf {
        self.data.path().join("etcd.log")
    }

    async fn spawn_and_wait(&mut self) -> Result<(), LaunchError> {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut command = Command::new(&self.binary);
        if let Some(pki) = &self.tls {
            command
                .arg(format!("--cert-file={}", pki.server_cert.display()))
                .arg(format!("--key-file={}", pki.server_key.display()))
                .arg(format!("--trusted-ca-file={}", pki.ca.display()))
                .arg("--client-cert-auth");
        }
        let child = command
            .arg("--name=anymesh-test")
            .arg(format!(
                "--data-dir={}",
                self.data.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={}", self.url()))
            .arg(format!("--advertise-client-urls={}", self.url()))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=anymesh-test={peer}"))
            .arg("--logger=zap")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|source| LaunchError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        self.child = Some(child);
        self.wait_ready().await
    }

    /// Polls with a real request until etcd answers, it exits, or the deadline passes.
    async fn wait_ready(&mut self) -> Result<(), LaunchError> {
        let deadline = Instant::now() + READY_DEADLINE;
        let options = self
            .connect_options()?
            .with_connect_timeout(Duration::from_millis(500))
            .with_timeout(Duration::from_millis(500));
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    return Err(LaunchError::Exited {
                        status: status.to_string(),
                        log: read_log(&self.log_path()),
                    });
                }
            }
            let answered = async {
                let mut c = etcd_client::Client::connect([self.url()], Some(options.clone()))
                    .await
                    .ok()?;
                c.get("anymesh-testkit-ready", None).await.ok()
            };
            if tokio::time::timeout(Duration::from_secs(1), answered)
                .await
                .ok()
                .flatten()
                .is_some()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(LaunchError::NotReady {
                    log: read_log(&self.log_path()),
                });
            }
            // Pacing between polls, not synchronisation: the deadline decides.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn find_etcd() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("etcd"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let fallback = Path::new("/usr/bin/etcd");
        fallback.is_file().then(|| fallback.to_path_buf())
    })
}

/// A port the kernel just handed out on 127.0.0.1 (free, barring a race).
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn read_log(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
