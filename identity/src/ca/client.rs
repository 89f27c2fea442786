//! The proxy's side of the built-in CA: joins once with a one-time token,
//! renews over mutual TLS at about half of each certificate's lifetime,
//! keeps the key, chain and bundle in its state directory, and installs
//! each new certificate into the proxy's [`Identity`].
//!
//! ```text
//!            bootstrap()                       run()
//!  persisted, unexpired ──► install ──► renew at 50 % ± 10 % of the lifetime
//!  otherwise ──► join with the token ─┘      │ failure: retry with backoff,
//!                                            │ logging the time left; the
//!                                            │ certificate in force stays
//!                                            ▼
//!                                  expired: join again if a new token was
//!                                  given, else say what the operator must do
//! ```
//!
//! The state directory holds `svid.pem` (the private key, then the chain:
//! one file, so key and certificate change together), `bundle.pem` and
//! `token-used` (the hash of the token already spent), each written
//! atomically with mode 0600.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::Method;
use rand::Rng;
use rcgen::{CertificateParams, KeyPair, SanType};
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;
use tokio::time::Instant;

use super::fetch::{self, CaUrl};
use super::pem::{self, rfc3339};
use super::{wire, CaError};
use crate::creds::Credentials;
use crate::live::Identity;
use crate::spiffe::SpiffeId;

const SVID_FILE: &str = "svid.pem";
const BUNDLE_FILE: &str = "bundle.pem";
const TOKEN_USED_FILE: &str = "token-used";

/// Where the join token comes from.
#[derive(Debug, Clone)]
pub enum JoinToken {
    /// The token itself.
    Value(String),
    /// A file holding it (re-read on every join, so a new token can be
    /// dropped in without a restart).
    File(PathBuf),
}

/// How a [`CaClient`] reaches its CA and keeps its state.
#[derive(Debug, Clone)]
pub struct CaClientConfig {
    /// `https://host:port` of `anymesh ca serve`.
    pub url: String,
    /// The bundle to trust the CA with before the first join (bootstrap
    /// trust); later the bundle the CA returns is trusted too.
    pub ca_bundle: PathBuf,
    /// The one-time join token, used when no usable certificate is
    /// persisted.
    pub token: Option<JoinToken>,
    /// Where the key, chain and bundle are kept.
    pub state_dir: PathBuf,
    /// The identity this proxy must have (from anymesh.yaml); a certificate
    /// for another identity is refused. `None`: whatever the token names.
    pub identity: Option<SpiffeId>,
    /// First delay after a failed attempt; doubles up to `retry_max`.
    pub retry_min: Duration,
    /// Longest delay between attempts.
    pub retry_max: Duration,
    /// Failures are logged at error level once less than this share of
    /// the certificate's lifetime is left.
    pub urgent_below: f64,
}

impl CaClientConfig {
    /// A configuration with the default retry timing (1 s doubling to 60 s;
    /// urgent under 25 % of the lifetime).
    pub fn new(url: impl Into<String>, ca_bundle: PathBuf, state_dir: PathBuf) -> Self {
        Self {
            url: url.into(),
            ca_bundle,
            token: None,
            state_dir,
            identity: None,
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            urgent_below: 0.25,
        }
    }
}

/// The client of `anymesh ca`: see the module docs.
#[derive(Debug)]
pub struct CaClient {
    config: CaClientConfig,
    url: CaUrl,
    identity: Arc<Identity>,
}

impl CaClient {
    /// A client installing into `identity`; checks the URL.
    pub fn new(config: CaClientConfig, identity: Arc<Identity>) -> Result<Self, CaError> {
        let url = CaUrl::parse(&config.url)?;
        if !(0.0..=1.0).contains(&config.urgent_below) {
            return Err(CaError::Invalid("urgent_below must be within 0..=1".into()));
        }
        Ok(Self {
            config,
            url,
            identity,
        })
    }

    /// Puts a certificate in force before the proxy serves: the persisted
    /// one if it is still valid (even with the CA down), else one from a
    /// join with the token. On error the proxy may still start and leave
    /// the retries to [`CaClient::run`].
    pub async fn bootstrap(&self) -> Result<(), CaError> {
        match self.load_persisted() {
            Ok(Some(creds)) if !creds.expired_at(SystemTime::now()) => {
                tracing::info!(
                    id = %creds.id,
                    not_after = %rfc3339(creds.not_after),
                    "ca client: installed the persisted certificate"
                );
                match self.identity.install(creds) {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        tracing::warn!(error = %e, "ca client: persisted certificate unusable; joining again")
                    }
                }
            }
            Ok(Some(creds)) => tracing::warn!(
                id = %creds.id,
                not_after = %rfc3339(creds.not_after),
                "ca client: the persisted certificate has expired; joining again"
            ),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "ca client: persisted certificate unusable; joining again")
            }
        }
        self.join().await
    }

    /// Renews before each expiry until `stop` turns true. Never returns an
    /// error: failures are logged and retried with backoff while the
    /// certificate in force keeps serving.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut failures: u32 = 0;
        let mut next = self.next_renewal();
        loop {
            if *stop.borrow() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                changed = stop.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    continue;
                }
            }
            match self.refresh().await {
                Ok(()) => {
                    failures = 0;
                    next = self.next_renewal();
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let delay = self.backoff(failures);
                    self.log_failure(&e, delay);
                    next = Instant::now() + delay;
                }
            }
        }
    }

    /// One attempt now: a renewal if a valid certificate is in force, else
    /// a join.
    async fn refresh(&self) -> Result<(), CaError> {
        match self.identity.current() {
            Some(creds) if !creds.expired_at(SystemTime::now()) => self.renew(&creds).await,
            _ => self.join().await,
        }
    }

    /// When to renew the certificate in force: 50 % of its lifetime ± 10 %.
    fn next_renewal(&self) -> Instant {
        let Some(creds) = self.identity.current() else {
            return Instant::now();
        };
        let life = creds.lifetime().as_secs_f64();
        let jitter = rand::rng().random_range(-0.1..=0.1);
        let at = creds.not_before + Duration::from_secs_f64(life * (0.5 + jitter));
        let wait = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        Instant::now() + wait
    }

    fn backoff(&self, failures: u32) -> Duration {
        let exp = self
            .config
            .retry_min
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16));
        let capped = exp.min(self.config.retry_max);
        capped.mul_f64(rand::rng().random_range(0.8..=1.2))
    }

    fn log_failure(&self, e: &CaError, retry_in: Duration) {
        let now = SystemTime::now();
        match self.identity.current() {
            Some(creds) if !creds.expired_at(now) => {
                let left = creds.not_after.duration_since(now).unwrap_or_default();
                let share = left.as_secs_f64() / creds.lifetime().as_secs_f64().max(1.0);
                let expires = rfc3339(creds.not_after);
                if share < self.config.urgent_below {
                    tracing::error!(
                        id = %creds.id,
                        error = %e,
                        left_secs = left.as_secs(),
                        retry_in_ms = retry_in.as_millis() as u64,
                        "ca client: renewal failed; serving with persisted certificate, CA unreachable, expires at {expires}: the certificate expires SOON"
                    );
                } else {
                    tracing::warn!(
                        id = %creds.id,
                        error = %e,
                        left_secs = left.as_secs(),
                        retry_in_ms = retry_in.as_millis() as u64,
                        "ca client: renewal failed; serving with persisted certificate, CA unreachable, expires at {expires}"
                    );
                }
            }
            _ => tracing::error!(
                error = %e,
                retry_in_ms = retry_in.as_millis() as u64,
                "ca client: no valid certificate: the mesh cannot serve mutual TLS"
            ),
        }
    }

    /// The roots to trust the CA with: the bundle in force (or persisted),
    /// and the bootstrap bundle.
    fn ca_roots(&self) -> Result<Vec<CertificateDer<'static>>, CaError> {
        let mut roots = match self.identity.current() {
            Some(creds) => creds.bundle.clone(),
            None => {
                let path = self.config.state_dir.join(BUNDLE_FILE);
                if path.exists() {
                    pem::read_certs(&path)?
                } else {
                    Vec::new()
                }
            }
        };
        match pem::read_certs(&self.config.ca_bundle) {
            Ok(boot) => {
                for root in boot {
                    if !roots.contains(&root) {
                        roots.push(root);
                    }
                }
            }
            Err(e) if roots.is_empty() => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "ca client: bootstrap bundle unreadable; using the bundle in force")
            }
        }
        Ok(roots)
    }

    fn read_token(&self) -> Result<String, CaError> {
        let token = match &self.config.token {
            Some(JoinToken::Value(t)) => t.clone(),
            Some(JoinToken::File(path)) => String::from_utf8(pem::read(path)?)
                .map_err(|_| CaError::bad_file(path, "not text"))?,
            None => String::new(),
        };
        let token = token.trim().to_string();
        if token.is_empty() {
            return Err(CaError::Invalid(format!(
                "no valid certificate and no join token: {}",
                self.operator_action()
            )));
        }
        Ok(token)
    }

    fn operator_action(&self) -> String {
        let id = self.config.identity.as_ref().map_or_else(
            || "spiffe://<trust domain>/ns/<namespace>/sa/<account>".to_string(),
            |i| i.to_string(),
        );
        let given = match &self.config.token {
            Some(JoinToken::File(p)) => {
                format!("write it to {} (read on the next attempt)", p.display())
            }
            _ => {
                "give it to this proxy (the CA client's token or token file) and restart it".into()
            }
        };
        format!("mint a new join token on the CA host with `anymesh ca token --dir <CA dir> --identity {id} --ttl 1h` and {given}")
    }

    /// First issuance: a new key, a CSR, the join token.
    async fn join(&self) -> Result<(), CaError> {
        let token = self.read_token()?;
        let hash = token_hash(&token);
        let used = std::fs::read_to_string(self.config.state_dir.join(TOKEN_USED_FILE))
            .unwrap_or_default();
        if used.trim() == hash {
            return Err(CaError::Invalid(format!(
                "the join token was already used by this proxy and no valid certificate is left: {}",
                self.operator_action()
            )));
        }
        let roots = self.ca_roots()?;
        let (key, csr) = self.new_csr()?;
        let body = serde_json::to_vec(&wire::JoinRequest { token, csr })
            .map_err(|e| CaError::Invalid(format!("join request: {e}")))?;
        let answer: Result<wire::Issued, CaError> = fetch::call(
            &self.url,
            &roots,
            None,
            Method::POST,
            "/v1/join",
            Some(body),
        )
        .await;
        let issued = match answer {
            Ok(a) => a,
            Err(CaError::Refused(reason)) => {
                return Err(CaError::Refused(format!(
                    "the CA refused to join: {reason}; {}",
                    self.operator_action()
                )))
            }
            Err(e) => return Err(e),
        };
        // Spent, whatever happens next.
        pem::create_private_dir(&self.config.state_dir)?;
        pem::write_private(
            &self.config.state_dir.join(TOKEN_USED_FILE),
            hash.as_bytes(),
        )?;
        self.accept(key, issued, None)
    }

    /// Renewal over mutual TLS with the certificate in force.
    async fn renew(&self, creds: &Credentials) -> Result<(), CaError> {
        let mut roots = self.ca_roots()?;
        for root in &creds.bundle {
            if !roots.contains(root) {
                roots.push(root.clone());
            }
        }
        let (key, csr) = self.new_csr()?;
        let body = serde_json::to_vec(&wire::RenewRequest { csr })
            .map_err(|e| CaError::Invalid(format!("renew request: {e}")))?;
        let client_cert = Some((creds.chain.clone(), creds.key.clone_key()));
        let issued: wire::Issued = fetch::call(
            &self.url,
            &roots,
            client_cert,
            Method::POST,
            "/v1/renew",
            Some(body),
        )
        .await?;
        self.accept(key, issued, Some(&creds.id))
    }

    fn new_csr(&self) -> Result<(KeyPair, String), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        if let Some(id) = &self.config.identity {
            // Informative only: the CA signs the identity it authenticated.
            if let Ok(uri) = id.as_str().try_into() {
                params.subject_alt_names = vec![SanType::URI(uri)];
            }
        }
        let csr = params.serialize_request(&key)?.pem()?;
        Ok((key, csr))
    }

    /// Checks what the CA issued, persists it and puts it in force.
    fn accept(
        &self,
        key: KeyPair,
        issued: wire::Issued,
        renewing: Option<&SpiffeId>,
    ) -> Result<(), CaError> {
        let key_pem = key.serialize_pem();
        let creds = Credentials::from_pem(
            issued.chain.as_bytes(),
            key_pem.as_bytes(),
            issued.bundle.as_bytes(),
        )
        .map_err(|e| self.bad_answer(format!("issued certificate: {e}")))?;
        if let Some(want) = self.config.identity.as_ref().or(renewing) {
            if &creds.id != want {
                return Err(
                    self.bad_answer(format!("issued a certificate for {}, not {want}", creds.id))
                );
            }
        }
        pem::create_private_dir(&self.config.state_dir)?;
        let svid = format!("{key_pem}{}", issued.chain);
        pem::write_private(&self.config.state_dir.join(SVID_FILE), svid.as_bytes())?;
        pem::write_private(
            &self.config.state_dir.join(BUNDLE_FILE),
            issued.bundle.as_bytes(),
        )?;
        tracing::info!(
            id = %creds.id,
            not_after = %rfc3339(creds.not_after),
            bundle_roots = creds.bundle.len(),
            "ca client: certificate {}", if renewing.is_some() { "renewed" } else { "issued after join" }
        );
        self.identity
            .install(creds)
            .map_err(|e| self.bad_answer(format!("issued certificate: {e}")))
    }

    fn bad_answer(&self, detail: impl std::fmt::Display) -> CaError {
        CaError::Unreachable {
            url: self.url.as_str().to_string(),
            detail: detail.to_string(),
        }
    }

    /// The persisted credentials, if any.
    fn load_persisted(&self) -> Result<Option<Credentials>, CaError> {
        let svid_path = self.config.state_dir.join(SVID_FILE);
        if !svid_path.exists() {
            return Ok(None);
        }
        let svid = pem::read(&svid_path)?;
        let bundle_path = self.config.state_dir.join(BUNDLE_FILE);
        let bundle = pem::read(&bundle_path)?;
        let creds = Credentials::from_pem(&svid, &svid, &bundle)
            .map_err(|e| CaError::bad_file(&svid_path, e))?;
        if let Some(want) = &self.config.identity {
            if &creds.id != want {
                return Err(CaError::bad_file(
                    &svid_path,
                    format!("a certificate for {}, but this proxy is {want}", creds.id),
                ));
            }
        }
        Ok(Some(creds))
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.config.state_dir
    }
}

fn token_hash(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
