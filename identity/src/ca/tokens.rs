//! One-time join tokens. A token is 256 random bits, printed once; the CA
//! keeps only its SHA-256 (as the file name), the identity it is bound to
//! and its expiry. Redeeming moves the file into `used/` with one rename,
//! so a token is used at most once even by concurrent requests, and stays
//! used across restarts.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};

use super::pem::{self, from_unix, rfc3339, unix};
use super::CaError;
use crate::spiffe::SpiffeId;

/// What the CA stores about a token.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    identity: String,
    created_at: u64,
    expires_at: u64,
}

/// A token that passed its checks and can be used up.
#[derive(Debug)]
pub(crate) struct Valid {
    pub id: SpiffeId,
    hash: String,
}

fn tokens_dir(ca_dir: &Path) -> PathBuf {
    ca_dir.join("tokens")
}

fn used_dir(ca_dir: &Path) -> PathBuf {
    tokens_dir(ca_dir).join("used")
}

/// The hex SHA-256 of a token: the name of its record.
fn hash(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Mints a token for `id`, valid for `ttl` from `now`, and records it.
pub(crate) fn mint(
    ca_dir: &Path,
    id: &SpiffeId,
    ttl: Duration,
    now: SystemTime,
) -> Result<String, CaError> {
    let mut raw = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| CaError::Invalid("no randomness from the operating system".into()))?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let record = Record {
        identity: id.to_string(),
        created_at: unix(now),
        expires_at: unix(now + ttl),
    };
    pem::create_private_dir(&used_dir(ca_dir))?;
    let path = tokens_dir(ca_dir).join(format!("{}.json", hash(&token)));
    let json = serde_json::to_vec_pretty(&record)
        .map_err(|e| CaError::Invalid(format!("token record: {e}")))?;
    pem::write_private(&path, &json)?;
    Ok(token)
}

/// Checks a presented token without using it up: known, unused, unexpired,
/// and bound to an identity of `trust_domain`.
pub(crate) fn check(
    ca_dir: &Path,
    token: &str,
    trust_domain: &str,
    now: SystemTime,
) -> Result<Valid, CaError> {
    let hash = hash(token.trim());
    let path = tokens_dir(ca_dir).join(format!("{hash}.json"));
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let used = used_dir(ca_dir).join(format!("{hash}.json"));
            return Err(CaError::Refused(if used.exists() {
                "join token already used (a token is good for one join)".into()
            } else {
                "unknown join token".into()
            }));
        }
        Err(e) => return Err(CaError::io(path, e)),
    };
    let record: Record = serde_json::from_slice(&text).map_err(|e| CaError::bad_file(&path, e))?;
    let expires = from_unix(record.expires_at);
    if now >= expires {
        return Err(CaError::Refused(format!(
            "join token for {} expired at {}",
            record.identity,
            rfc3339(expires)
        )));
    }
    let id = SpiffeId::parse(&record.identity).map_err(|e| CaError::bad_file(&path, e))?;
    if id.trust_domain() != trust_domain {
        return Err(CaError::Refused(format!(
            "join token for {id} is outside this CA's trust domain {trust_domain}"
        )));
    }
    Ok(Valid { id, hash })
}

/// Uses a checked token up; fails if another request used it first.
pub(crate) fn consume(ca_dir: &Path, token: &Valid) -> Result<(), CaError> {
    let from = tokens_dir(ca_dir).join(format!("{}.json", token.hash));
    let to = used_dir(ca_dir).join(format!("{}.json", token.hash));
    match fs::rename(&from, &to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(CaError::Refused(
            "join token already used (a token is good for one join)".into(),
        )),
        Err(e) => Err(CaError::io(from, e)),
    }
}
