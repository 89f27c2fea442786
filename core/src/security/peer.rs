//! PeerAuthentication resolved for a workload, as Istio composes it: the
//! workload's own policy (a selector that matches it, in its namespace)
//! over its namespace's policy (no selector) over the mesh-wide policy (no
//! selector, in the root namespace); `UNSET` inherits from the next level
//! up and the top defaults to PERMISSIVE. `portLevelMtls` of the workload
//! policy overrides per port (`UNSET` there inherits the workload's mode).
//! Among several candidates at one level Istio takes the oldest; anymesh,
//! which has no creation times, takes the first in file order.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::security::{PeerAuthentication, PeerMtlsMode};

/// How a workload's inbound port treats peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Only mesh mTLS is accepted.
    Strict,
    /// Mesh mTLS and plaintext are both accepted.
    Permissive,
    /// Plaintext only: mesh mTLS is not terminated.
    Disable,
}

impl MtlsMode {
    fn from_spec(m: PeerMtlsMode) -> Option<MtlsMode> {
        match m {
            PeerMtlsMode::Unset => None,
            PeerMtlsMode::Disable => Some(MtlsMode::Disable),
            PeerMtlsMode::Permissive => Some(MtlsMode::Permissive),
            PeerMtlsMode::Strict => Some(MtlsMode::Strict),
        }
    }
}

/// A workload's effective PeerAuthentication: the workload's own policy
/// over its namespace's over the mesh's; `UNSET` inherits; the top
/// defaults to PERMISSIVE; `portLevelMtls` of the workload policy overrides
/// per port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PeerPolicy {
    /// The mode of every port without its own.
    pub mode: MtlsMode,
    /// Per workload port.
    pub ports: BTreeMap<u16, MtlsMode>,
    /// `namespace/name` of the policies that took part (mesh, namespace,
    /// workload), for `explain`.
    pub from: Vec<String>,
}

impl Default for PeerPolicy {
    fn default() -> Self {
        PeerPolicy {
            mode: MtlsMode::Permissive,
            ports: BTreeMap::new(),
            from: Vec::new(),
        }
    }
}

impl PeerPolicy {
    /// The mode of one port (the port the workload's application listens on,
    /// as Istio's `portLevelMtls` keys are).
    pub fn mode(&self, port: u16) -> MtlsMode {
        self.ports.get(&port).copied().unwrap_or(self.mode)
    }

    /// Composes the three levels (each optional) as Istio does.
    pub(crate) fn compose(
        mesh: Option<(&str, &PeerAuthentication)>,
        namespace: Option<(&str, &PeerAuthentication)>,
        workload: Option<(&str, &PeerAuthentication)>,
    ) -> PeerPolicy {
        let mut out = PeerPolicy::default();
        for (id, pa) in [mesh, namespace, workload].into_iter().flatten() {
            out.from.push(id.to_string());
            if let Some(m) = pa.mtls.and_then(|m| MtlsMode::from_spec(m.mode)) {
                out.mode = m;
            }
        }
        if let Some((_, pa)) = workload {
            for (key, mtls) in &pa.port_level_mtls {
                if let Some(port) = key.port() {
                    let mode = MtlsMode::from_spec(mtls.mode).unwrap_or(out.mode);
                    out.ports.insert(port, mode);
                }
            }
        }
        out
    }
}
