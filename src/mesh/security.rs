//! The proxy's identity (its certificate source running) and the inbound
//! listener's state: the local workload's ports with their
//! PeerAuthentication modes, and its RequestAuthentication and
//! AuthorizationPolicy, recomputed whenever the config changes.

use std::sync::Arc;

use anyhow::Context;
use anymesh_authn::{Authenticator, FetchSettings, JwksCache};
use anymesh_core::config::ConfigSet;
use anymesh_core::security::{SecurityOptions, SecurityPolicies, WorkloadRef};
use anymesh_identity::ca::client::{CaClient, CaClientConfig, JoinToken};
use anymesh_identity::files::FileSource;
use anymesh_identity::tls::TlsOptions;
use anymesh_identity::workload_api::WorkloadApiSource;
use anymesh_identity::Identity;
use anymesh_proxy::inbound::{table, Inbound, InboundPort, InboundPorts, InboundSettings};
use anymesh_proxy::policy::InboundPolicy;
use anymesh_proxy::server::ServerSettings;
use anymesh_proxy::Router;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::settings::{IdentitySource, Settings};

/// Starts the configured certificate source and returns the identity it
/// fills; `None` without an `identity` setting (no mutual TLS).
///
/// The proxy waits for its first certificate only as long as the source
/// says: the CA client installs a persisted certificate at once (serving
/// through a CA outage) and otherwise joins; a failure is logged loudly and
/// retried in the background while the proxy serves plaintext-only paths.
pub(super) async fn start_identity(
    settings: &Settings,
    tasks: &mut JoinSet<()>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Option<Arc<Identity>>> {
    let Some(source) = &settings.identity else {
        return Ok(None);
    };
    let identity = Arc::new(Identity::with_options(TlsOptions {
        trust_domains: std::iter::once(&settings.mesh.trust_domain)
            .chain(&settings.mesh.trust_domain_aliases)
            .cloned()
            .collect(),
    }));
    let own = settings.own_identity();
    match source {
        IdentitySource::Files {
            cert,
            key,
            bundle,
            reload_interval,
        } => {
            let files = FileSource::new(cert, key, bundle);
            files
                .start(&identity)
                .with_context(|| "identity: the certificate files cannot be used".to_string())?;
            tasks.spawn(files.watch(identity.clone(), *reload_interval, stop.clone()));
        }
        IdentitySource::Ca {
            url,
            bundle,
            token,
            token_file,
            state_dir,
        } => {
            let state_dir = state_dir
                .clone()
                .context("identity.ca.state_dir is required")?;
            let mut config = CaClientConfig::new(url.clone(), bundle.clone(), state_dir);
            config.identity = own.clone();
            // A token file is read only when a join is needed: a spent
            // token's file may be gone while the persisted certificate serves.
            config.token = match (token, token_file) {
                (Some(t), _) => Some(JoinToken::Value(t.trim().to_string())),
                (None, Some(f)) => Some(JoinToken::File(f.clone())),
                (None, None) => None,
            };
            let client = CaClient::new(config, identity.clone())
                .map_err(|e| anyhow::anyhow!("identity.ca: {e}"))?;
            if let Err(e) = client.bootstrap().await {
                tracing::error!(error = %e, "identity: no certificate from the CA yet; mutual TLS fails until one arrives (retrying)");
            }
            tasks.spawn(client.run(stop.clone()));
        }
        IdentitySource::WorkloadApi { socket, first_wait } => {
            let mut source = WorkloadApiSource::new(socket.as_deref())
                .map_err(|e| anyhow::anyhow!("identity.workload_api: {e}"))?;
            if let Some(id) = &own {
                source = source.with_spiffe_id(id.clone());
            }
            if let Err(e) = source.first(&identity, *first_wait).await {
                tracing::error!(error = %e, "identity: no SVID from the Workload API yet; mutual TLS fails until one arrives (retrying)");
            }
            tasks.spawn(source.run(identity.clone(), stop.clone()));
        }
    }
    if let (Some(own), Some(creds)) = (&own, identity.current()) {
        if &creds.id != own {
            tracing::warn!(certificate = %creds.id, workloads = %own, "identity: the certificate names another identity than the workloads' namespace and service account");
        }
    }
    Ok(Some(identity))
}

/// The CA certificates of `mesh.jwks_ca_file`, trusted for `jwksUri`
/// fetches besides the public roots; none without the setting.
fn jwks_roots(settings: &Settings) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let Some(file) = &settings.mesh.jwks_ca_file else {
        return Ok(Vec::new());
    };
    let at = || format!("mesh.jwks_ca_file: {}", file.display());
    let pem = std::fs::read(file).with_context(at)?;
    let roots = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{}: not PEM certificates: {e}", at()))?;
    if roots.is_empty() {
        anyhow::bail!("{}: no CERTIFICATE block", at());
    }
    Ok(roots)
}

/// The inbound listener's shared state, and the router of its table.
pub(super) struct InboundState {
    pub inbound: Arc<Inbound>,
    pub router: Arc<Router>,
}

/// Builds the inbound state for the local workloads and keeps its modes
/// and policies current with the config; `None` without workloads.
pub(super) fn start_inbound(
    settings: &Settings,
    identity: Option<Arc<Identity>>,
    mut config: watch::Receiver<Arc<ConfigSet>>,
    tasks: &mut JoinSet<()>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Option<InboundState>> {
    if settings.workloads.is_empty() {
        return Ok(None);
    }
    let listener = &settings.inbound;
    let inbound_settings = InboundSettings {
        handshake_timeout: listener.handshake_timeout,
        max_connections: listener.max_connections,
        server: ServerSettings {
            header_read_timeout: listener.header_read_timeout,
            idle_timeout: listener.idle_timeout,
        },
    };
    let local = LocalWorkloads::new(settings);
    let policies = SecurityPolicies::compile_with(&config.borrow_and_update(), &local.options);
    let ports = local.ports(&policies);
    let (table, diags) = table::inbound_table(&ports.ports);
    for d in diags.iter().filter(|d| d.is_error()) {
        tracing::error!(diagnostic = %d, "inbound route table");
    }
    let router = Arc::new(Router::new());
    router.install(Arc::new(table), true);
    let identity = identity.unwrap_or_else(|| Arc::new(Identity::new()));
    let inbound = Arc::new(Inbound::new(ports, identity, inbound_settings));
    let fetch = FetchSettings {
        extra_roots: jwks_roots(settings)?,
        ..FetchSettings::default()
    };
    let jwks = JwksCache::new(fetch).context("JWKS fetching")?;
    let refresh = jwks.spawn();
    let mut until = stop.clone();
    tasks.spawn(async move {
        let _ = until.wait_for(|s| *s).await;
        refresh.abort();
    });
    inbound.set_policy(local.policy(&policies, &jwks));
    let (state, mut stop) = (inbound.clone(), stop.clone());
    tasks.spawn(async move {
        loop {
            tokio::select! {
                changed = config.changed() => if changed.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
            let set = config.borrow_and_update().clone();
            let policies = SecurityPolicies::compile_with(&set, &local.options);
            state.set_ports(local.ports(&policies));
            state.set_policy(local.policy(&policies, &jwks));
            tracing::info!("inbound: security policies updated");
        }
    });
    Ok(Some(InboundState { inbound, router }))
}

/// The local workloads as security policies select them.
struct LocalWorkloads {
    workloads: Vec<crate::settings::Workload>,
    /// The root namespace and trust domains policies are compiled with.
    options: SecurityOptions,
}

impl LocalWorkloads {
    fn new(settings: &Settings) -> Self {
        Self {
            workloads: settings.workloads.clone(),
            options: SecurityOptions {
                root_namespace: settings.mesh.root_namespace.clone(),
                trust_domain: settings.mesh.trust_domain.clone(),
                trust_domain_aliases: settings.mesh.trust_domain_aliases.clone(),
            },
        }
    }

    /// Every workload port with its PeerAuthentication mode.
    fn ports(&self, policies: &SecurityPolicies) -> InboundPorts {
        let mut ports = Vec::new();
        for w in &self.workloads {
            let r = WorkloadRef {
                namespace: &w.namespace,
                labels: &w.labels,
            };
            for p in &w.ports {
                ports.push(InboundPort {
                    port: p.port,
                    app: p.app(),
                    mode: policies.mtls_mode(&r, p.port),
                    protocol: p.protocol,
                    route_key: Arc::from(table::route_key(p.port)),
                    cluster: Arc::from(format!("inbound|{}||", p.port)),
                });
            }
        }
        InboundPorts { ports }
    }

    /// The authorization and request authentication of the (first)
    /// workload: one proxy, one workload's policies.
    fn policy(&self, policies: &SecurityPolicies, jwks: &JwksCache) -> InboundPolicy {
        let Some(w) = self.workloads.first() else {
            return InboundPolicy::default();
        };
        let r = WorkloadRef {
            namespace: &w.namespace,
            labels: &w.labels,
        };
        let rules = policies.jwt_rules(&r);
        let authn = if rules.is_empty() {
            None
        } else {
            match Authenticator::new(rules, jwks) {
                Ok(a) => Some(a),
                Err(e) => {
                    // Fail closed: a token cannot be checked, so none is accepted.
                    tracing::error!(error = %e, "RequestAuthentication cannot be used; tokens are refused");
                    Authenticator::new(Vec::new(), jwks).ok()
                }
            }
        };
        InboundPolicy {
            authz: policies.authorization(&r),
            authn,
        }
    }
}
