//! The CA's state directory: its signers (a self-signed root, or an
//! intermediate under an operator's root), their rotation, and the join
//! tokens. See the `ca` module docs for the layout and the rotation steps.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{Issuer, KeyPair};
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::pem::{self, from_unix, rfc3339, unix};
use super::{issue, tokens, CaError};
use crate::spiffe::{check_trust_domain, SpiffeId};

const STATE_FILE: &str = "ca.json";

/// `ca.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StateFile {
    trust_domain: String,
    signers: Vec<SignerEntry>,
}

/// One signer in `ca.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SignerEntry {
    generation: u32,
    /// The signer's certificate, then any intermediates above it.
    cert: String,
    key: String,
    /// The root(s) it chains to; the same file as `cert` for a root.
    root: String,
    /// When it starts signing (Unix seconds).
    activate_at: u64,
    /// Dropped from the bundle by `retire`.
    #[serde(default)]
    retired: bool,
}

impl SignerEntry {
    fn self_signed(&self) -> bool {
        self.cert == self.root
    }
}

/// An intermediate an operator's PKI signed: its certificate file (the
/// intermediate first, then any certificates between it and the root), its
/// key file and the operator's root file.
#[derive(Debug, Clone)]
pub struct Intermediate {
    /// The intermediate's certificate, then any above it (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The operator's root certificate(s) (PEM): the trust bundle.
    pub root: PathBuf,
}

/// What `rotate` did.
#[derive(Debug)]
pub struct Rotation {
    /// The new signer's generation.
    pub generation: u32,
    /// When it starts signing leaves.
    pub activate_at: SystemTime,
}

/// A CA state directory.
#[derive(Debug, Clone)]
pub struct CaDir {
    dir: PathBuf,
}

impl CaDir {
    /// An existing CA state directory (made by `init_root` or
    /// `init_intermediate`).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, CaError> {
        let ca = Self { dir: dir.into() };
        ca.state()?;
        Ok(ca)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Makes a new CA in `dir` with a self-signed ECDSA P-256 root.
    pub fn init_root(dir: impl Into<PathBuf>, trust_domain: &str) -> Result<Self, CaError> {
        let ca = Self::prepare(dir.into(), trust_domain)?;
        let entry = ca.new_root(trust_domain, 1, SystemTime::now(), 0)?;
        ca.save(&StateFile {
            trust_domain: trust_domain.to_string(),
            signers: vec![entry],
        })?;
        Ok(ca)
    }

    /// Makes a new CA in `dir` that signs as an intermediate under an
    /// operator's root; its files are copied into `dir`.
    pub fn init_intermediate(
        dir: impl Into<PathBuf>,
        trust_domain: &str,
        intermediate: &Intermediate,
    ) -> Result<Self, CaError> {
        let ca = Self::prepare(dir.into(), trust_domain)?;
        let entry = ca.import(intermediate, 1, 0)?;
        ca.save(&StateFile {
            trust_domain: trust_domain.to_string(),
            signers: vec![entry],
        })?;
        Ok(ca)
    }

    fn prepare(dir: PathBuf, trust_domain: &str) -> Result<Self, CaError> {
        check_trust_domain(trust_domain)
            .map_err(|e| CaError::Invalid(format!("trust domain {trust_domain:?}: {e}")))?;
        pem::create_private_dir(&dir)?;
        let ca = Self { dir };
        let state = ca.dir.join(STATE_FILE);
        if state.exists() {
            return Err(CaError::Invalid(format!(
                "{}: a CA already exists here (its key would be lost)",
                state.display()
            )));
        }
        Ok(ca)
    }

    fn new_root(
        &self,
        trust_domain: &str,
        generation: u32,
        now: SystemTime,
        activate_at: u64,
    ) -> Result<SignerEntry, CaError> {
        let (cert, key) = issue::root(trust_domain, generation, now)?;
        let entry = SignerEntry {
            generation,
            cert: format!("signer-{generation}.pem"),
            key: format!("signer-{generation}.key"),
            root: format!("signer-{generation}.pem"),
            activate_at,
            retired: false,
        };
        pem::write_private(&self.dir.join(&entry.key), key.serialize_pem().as_bytes())?;
        pem::write_private(
            &self.dir.join(&entry.cert),
            pem::certs_pem(&[cert]).as_bytes(),
        )?;
        Ok(entry)
    }

    /// Checks an operator's intermediate and copies it in.
    fn import(
        &self,
        given: &Intermediate,
        generation: u32,
        activate_at: u64,
    ) -> Result<SignerEntry, CaError> {
        let chain = pem::read_certs(&given.cert)?;
        let roots = pem::read_certs(&given.root)?;
        let key_pem = String::from_utf8(pem::read(&given.key)?)
            .map_err(|_| CaError::bad_file(&given.key, "not PEM text"))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::bad_file(&given.key, e))?;
        check_intermediate(&chain, &key, &roots, given)?;
        let entry = SignerEntry {
            generation,
            cert: format!("signer-{generation}.pem"),
            key: format!("signer-{generation}.key"),
            root: format!("root-{generation}.pem"),
            activate_at,
            retired: false,
        };
        pem::write_private(&self.dir.join(&entry.key), key.serialize_pem().as_bytes())?;
        pem::write_private(
            &self.dir.join(&entry.cert),
            pem::certs_pem(&chain).as_bytes(),
        )?;
        pem::write_private(
            &self.dir.join(&entry.root),
            pem::certs_pem(&roots).as_bytes(),
        )?;
        Ok(entry)
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    fn state(&self) -> Result<StateFile, CaError> {
        let path = self.state_path();
        let text = pem::read(&path)?;
        parse_state(&path, &text)
    }

    fn save(&self, state: &StateFile) -> Result<(), CaError> {
        let json = serde_json::to_vec_pretty(state)
            .map_err(|e| CaError::Invalid(format!("CA state: {e}")))?;
        pem::write_private(&self.state_path(), &json)
    }

    /// The trust domain the CA issues identities in.
    pub fn trust_domain(&self) -> Result<String, CaError> {
        Ok(self.state()?.trust_domain)
    }

    /// Mints a one-time join token for `id`, valid for `ttl`. The token is
    /// returned once and stored only as a hash.
    pub fn mint_token(&self, id: &SpiffeId, ttl: Duration) -> Result<String, CaError> {
        let state = self.state()?;
        if id.trust_domain() != state.trust_domain {
            return Err(CaError::Invalid(format!(
                "identity {id} is outside this CA's trust domain {}",
                state.trust_domain
            )));
        }
        tokens::mint(&self.dir, id, ttl, SystemTime::now())
    }

    /// Starts a root rotation: a new signer (a new self-signed root, or the
    /// given intermediate) whose root joins the bundle now and which signs
    /// leaves from `overlap` on (or from `activate`).
    pub fn rotate(
        &self,
        overlap: Duration,
        intermediate: Option<&Intermediate>,
    ) -> Result<Rotation, CaError> {
        let mut state = self.state()?;
        let now = SystemTime::now();
        let live = state.signers.iter().filter(|s| !s.retired).count();
        if live > 1 {
            return Err(CaError::Invalid(
                "a rotation is in progress: finish it (`anymesh ca activate`, then `anymesh ca retire`) first".into(),
            ));
        }
        let generation = state
            .signers
            .iter()
            .map(|s| s.generation)
            .max()
            .unwrap_or(0)
            + 1;
        let activate_at = unix(now + overlap);
        let entry = match intermediate {
            Some(given) => self.import(given, generation, activate_at)?,
            None => {
                if state.signers.iter().any(|s| !s.retired && !s.self_signed()) {
                    return Err(CaError::Invalid(
                        "this CA signs as an intermediate: give the new intermediate (--cert, --key, --root)".into(),
                    ));
                }
                self.new_root(&state.trust_domain, generation, now, activate_at)?
            }
        };
        state.signers.push(entry);
        self.save(&state)?;
        tracing::info!(
            generation,
            activate_at = %rfc3339(from_unix(activate_at)),
            "ca: rotation started; the bundle now holds the new root"
        );
        Ok(Rotation {
            generation,
            activate_at: from_unix(activate_at),
        })
    }

    /// Makes the signer a rotation added sign from now on.
    pub fn activate(&self) -> Result<u32, CaError> {
        let mut state = self.state()?;
        let now = unix(SystemTime::now());
        let pending = state
            .signers
            .iter_mut()
            .filter(|s| !s.retired && s.activate_at > now)
            .max_by_key(|s| s.generation)
            .ok_or_else(|| CaError::Invalid("no rotation is waiting to be activated".into()))?;
        pending.activate_at = now;
        let generation = pending.generation;
        self.save(&state)?;
        tracing::info!(generation, "ca: new signer active");
        Ok(generation)
    }

    /// Ends a rotation: drops every signer older than the active one (and
    /// its root, from the bundle). Returns how many were dropped.
    pub fn retire(&self) -> Result<usize, CaError> {
        let mut state = self.state()?;
        let now = unix(SystemTime::now());
        if state
            .signers
            .iter()
            .any(|s| !s.retired && s.activate_at > now)
        {
            return Err(CaError::Invalid(
                "the new signer is not active yet: `anymesh ca activate` (or wait for the overlap) first".into(),
            ));
        }
        let newest = state
            .signers
            .iter()
            .filter(|s| !s.retired)
            .map(|s| s.generation)
            .max()
            .ok_or_else(|| CaError::Invalid("no signer left".into()))?;
        let mut dropped = 0;
        for s in state.signers.iter_mut() {
            if !s.retired && s.generation < newest {
                s.retired = true;
                dropped += 1;
            }
        }
        if dropped == 0 {
            return Err(CaError::Invalid("no old signer to retire".into()));
        }
        self.save(&state)?;
        tracing::info!(
            dropped,
            "ca: old signers retired; their roots leave the bundle"
        );
        Ok(dropped)
    }

    /// The trust bundle (PEM): the roots of every signer not retired.
    pub fn bundle_pem(&self) -> Result<String, CaError> {
        Ok(pem::certs_pem(&self.load()?.bundle()))
    }

    /// Reads the state and every live signer's files.
    pub(crate) fn load(&self) -> Result<Loaded, CaError> {
        let path = self.state_path();
        let text = pem::read(&path)?;
        self.load_from(&text)
    }

    /// The state file's bytes now (to notice changes).
    pub(crate) async fn state_bytes(&self) -> Result<Vec<u8>, CaError> {
        let path = self.state_path();
        tokio::fs::read(&path)
            .await
            .map_err(|e| CaError::io(path, e))
    }

    /// Parses `text` (the state file's content) and loads its signers.
    pub(crate) fn load_from(&self, text: &[u8]) -> Result<Loaded, CaError> {
        let state = parse_state(&self.state_path(), text)?;
        let mut signers = Vec::new();
        for entry in state.signers.iter().filter(|s| !s.retired) {
            signers.push(self.load_signer(entry)?);
        }
        Ok(Loaded {
            trust_domain: state.trust_domain,
            signers,
        })
    }

    fn load_signer(&self, entry: &SignerEntry) -> Result<Signer, CaError> {
        let cert_path = self.dir.join(&entry.cert);
        let key_path = self.dir.join(&entry.key);
        let mut chain = pem::read_certs(&cert_path)?;
        let roots = pem::read_certs(&self.dir.join(&entry.root))?;
        let key_pem = String::from_utf8(pem::read(&key_path)?)
            .map_err(|_| CaError::bad_file(&key_path, "not PEM text"))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::bad_file(&key_path, e))?;
        let cert = chain.remove(0);
        let issuer =
            Issuer::from_ca_cert_der(&cert, key).map_err(|e| CaError::bad_file(&cert_path, e))?;
        let above = if entry.self_signed() {
            Vec::new()
        } else {
            let mut above = vec![cert.clone()];
            above.extend(chain);
            above
        };
        Ok(Signer {
            generation: entry.generation,
            issuer,
            cert,
            above,
            roots,
            activate_at: from_unix(entry.activate_at),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

fn parse_state(path: &Path, text: &[u8]) -> Result<StateFile, CaError> {
    let state: StateFile = serde_json::from_slice(text).map_err(|e| CaError::bad_file(path, e))?;
    if state.signers.is_empty() {
        return Err(CaError::bad_file(path, "no signers"));
    }
    for s in &state.signers {
        for name in [&s.cert, &s.key, &s.root] {
            if name.contains('/') || name.contains('\\') || name.starts_with('.') {
                return Err(CaError::bad_file(
                    path,
                    format!(
                        "signer {}: file name {name:?} must be inside the CA directory",
                        s.generation
                    ),
                ));
            }
        }
    }
    Ok(state)
}

/// Checks an operator's intermediate: a CA certificate, whose key is the
/// given key, chaining (through the rest of its file) to one of the roots.
fn check_intermediate(
    chain: &[CertificateDer<'_>],
    key: &KeyPair,
    roots: &[CertificateDer<'_>],
    given: &Intermediate,
) -> Result<(), CaError> {
    let Some(first) = chain.first() else {
        return Err(CaError::bad_file(&given.cert, "no certificate"));
    };
    let (_, cert) =
        X509Certificate::from_der(first).map_err(|e| CaError::bad_file(&given.cert, e))?;
    if !cert.is_ca() {
        return Err(CaError::bad_file(
            &given.cert,
            "not a CA certificate (basicConstraints CA:true is needed to sign leaves)",
        ));
    }
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(CaError::bad_file(
            &given.key,
            format!("not the key of the certificate in {}", given.cert.display()),
        ));
    }
    // Each certificate is signed by the next; the last by a root.
    let mut parsed = Vec::new();
    for der in chain {
        let (_, c) =
            X509Certificate::from_der(der).map_err(|e| CaError::bad_file(&given.cert, e))?;
        parsed.push(c);
    }
    for pair in parsed.windows(2) {
        pair[0]
            .verify_signature(Some(pair[1].public_key()))
            .map_err(|_| CaError::bad_file(&given.cert, "the chain is out of order or broken"))?;
    }
    let last = parsed.last().unwrap_or(&cert);
    let mut chained = false;
    for der in roots {
        let (_, root) =
            X509Certificate::from_der(der).map_err(|e| CaError::bad_file(&given.root, e))?;
        if last.issuer() == root.subject() && last.verify_signature(Some(root.public_key())).is_ok()
        {
            chained = true;
        }
    }
    if !chained {
        return Err(CaError::bad_file(
            &given.cert,
            format!("not signed by a root in {}", given.root.display()),
        ));
    }
    Ok(())
}

/// A CA's signers as loaded at one moment.
pub(crate) struct Loaded {
    pub trust_domain: String,
    /// The signers not retired, oldest first.
    pub signers: Vec<Signer>,
}

/// One signer, ready to sign.
pub(crate) struct Signer {
    pub generation: u32,
    pub issuer: Issuer<'static, KeyPair>,
    /// The signer's own certificate.
    pub cert: CertificateDer<'static>,
    /// What is sent after a leaf: nothing for a root; the intermediate and
    /// those above it otherwise.
    pub above: Vec<CertificateDer<'static>>,
    pub roots: Vec<CertificateDer<'static>>,
    pub activate_at: SystemTime,
}

impl Loaded {
    /// The signer in force at `now`: the newest one activated.
    pub(crate) fn active(&self, now: SystemTime) -> Option<&Signer> {
        self.signers
            .iter()
            .filter(|s| s.activate_at <= now)
            .max_by_key(|s| s.generation)
    }

    /// The roots of every live signer, each once.
    pub(crate) fn bundle(&self) -> Vec<CertificateDer<'static>> {
        let mut out: Vec<CertificateDer<'static>> = Vec::new();
        for root in self.signers.iter().flat_map(|s| &s.roots) {
            if !out.contains(root) {
                out.push(root.clone());
            }
        }
        out
    }

    /// The certificates a renewing client's leaf must be signed by: the
    /// live signers themselves (not the operator's root, which may sign
    /// for others).
    pub(crate) fn signer_certs(&self) -> Vec<CertificateDer<'static>> {
        self.signers.iter().map(|s| s.cert.clone()).collect()
    }
}
