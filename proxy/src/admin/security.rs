//! The security metrics, read when scraped: the proxy's certificate and
//! what became of its inbound listener's connections.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use crate::metrics::{counters, gauges};

/// The proxy's certificate and its inbound listener's connections, read
/// when scraped (under `anymesh_`):
///
/// - `identity_certificate_expiry_timestamp_seconds{id}`: when the
///   certificate in force expires (absent before the first one);
/// - `identity_certificate_valid{id}`: 1 while it is valid, else 0;
/// - `inbound_connections_total{result}`: what became of inbound
///   connections: `mtls`, `plaintext`, `passthrough`, or refused:
///   `refused_plaintext` (STRICT), `refused_tls` (handshake or peer
///   certificate refused), `refused_limit`, `refused_slow` (no opening or
///   handshake in time, or an oversized ClientHello), `refused_port`.
pub(super) struct SecurityCollector {
    identity: Option<Arc<anymesh_identity::Identity>>,
    inbound: Option<Arc<crate::inbound::Inbound>>,
}

impl SecurityCollector {
    pub(super) fn new(
        identity: Option<Arc<anymesh_identity::Identity>>,
        inbound: Option<Arc<crate::inbound::Inbound>>,
    ) -> Self {
        Self { identity, inbound }
    }
}

impl fmt::Debug for SecurityCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecurityCollector").finish_non_exhaustive()
    }
}

impl Collector for SecurityCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        if let Some(identity) = &self.identity {
            let now = std::time::SystemTime::now();
            let creds = identity.current();
            let id = creds.as_ref().map_or(String::new(), |c| c.id.to_string());
            if let Some(creds) = &creds {
                let at = creds
                    .not_after
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                gauges(
                    &mut encoder,
                    "identity_certificate_expiry_timestamp_seconds",
                    "When the proxy's certificate in force expires (Unix time), by SPIFFE ID",
                    &[([("id", id.as_str())], at)],
                )?;
            }
            gauges(
                &mut encoder,
                "identity_certificate_valid",
                "1 while the proxy holds a valid certificate for mutual TLS, by SPIFFE ID",
                &[([("id", id.as_str())], u64::from(identity.valid_at(now)))],
            )?;
        }
        if let Some(inbound) = &self.inbound {
            let s = &inbound.stats;
            let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            let rows = [
                ([("result", "mtls")], load(&s.mtls)),
                ([("result", "plaintext")], load(&s.plaintext)),
                ([("result", "passthrough")], load(&s.passthrough)),
                (
                    [("result", "refused_plaintext")],
                    load(&s.refused_plaintext),
                ),
                ([("result", "refused_tls")], load(&s.refused_tls)),
                ([("result", "refused_limit")], load(&s.refused_limit)),
                ([("result", "refused_slow")], load(&s.refused_slow)),
                ([("result", "refused_port")], load(&s.refused_port)),
            ];
            counters(
                &mut encoder,
                "inbound_connections",
                "Inbound connections by what became of them",
                &rows,
            )?;
        }
        Ok(())
    }
}
