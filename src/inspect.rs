//! `anymesh check` and `anymesh routes`: load everything once, without
//! starting listeners, and report.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anymesh_adapter_etcd::{EtcdConfig, EtcdRegistry};
use anymesh_adapter_kubernetes::{ClusterRouting, KubernetesConfig};
use anymesh_core::catalog::CatalogState;
use anymesh_core::config::{ConfigSet, Diagnostic};
use anymesh_core::routes::compile::compile;
use anymesh_core::routes::{RequestInfo, RouteAction, RouteMiss, RouteTable};
use anymesh_core::{Change, Snapshot, SourceId, SourcedChange};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::mesh::load_routing;
use crate::settings::{RegistryKind, Settings};

const EXIT_CONFIG: u8 = 64;
/// A registry could not be reached (sysexits' EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: u8 = 69;

/// Whether loading reads live registries (etcd) too.
#[derive(Debug, Clone, Copy)]
pub enum Live {
    /// Leave them alone: settings are validated, nothing is contacted.
    Skip,
    /// List each once, giving up on one after this long.
    Contact(Duration),
}

/// Everything `check` and `routes` need, loaded once.
pub(crate) struct Loaded {
    pub(crate) snapshot: Snapshot,
    pub(crate) table: RouteTable,
    /// Problems, each already rendered as one line with its severity.
    pub(crate) errors: Vec<String>,
    /// Live registries that did not answer, one line each.
    unreachable: Vec<String>,
    warnings: Vec<String>,
    summary: Vec<String>,
}

fn sort(diags: Vec<Diagnostic>, loaded: &mut Loaded) {
    for d in diags {
        if d.is_error() {
            loaded.errors.push(d.to_string());
        } else {
            loaded.warnings.push(d.to_string());
        }
    }
}

pub(crate) async fn load(config: &Path, live: Live) -> Result<Loaded, String> {
    let settings = Settings::load(config).map_err(|e| format!("{e:#}"))?;
    let mut loaded = Loaded {
        snapshot: Snapshot::default(),
        table: RouteTable::default(),
        errors: Vec::new(),
        unreachable: Vec::new(),
        warnings: Vec::new(),
        summary: Vec::new(),
    };
    let mut state = CatalogState::new(settings.registries.iter().map(|r| SourceId::new(&r.name)));
    // Istio resources read from clusters (`routing_from_cluster`).
    let mut cluster = ConfigSet::default();
    for r in &settings.registries {
        let source = SourceId::new(&r.name);
        match &r.kind {
            RegistryKind::File { path, .. } => match anymesh_adapter_file::load(path, &source) {
                Ok(view) => {
                    loaded.summary.push(format!(
                        "registry {} (file {}): {} services, {} endpoints",
                        r.name,
                        path.display(),
                        view.services.len(),
                        view.endpoints.len()
                    ));
                    // The registry's mapping rules, as the running proxy applies them.
                    let (change, problems) = r.mapping.apply(Change::Reset(view));
                    for p in problems {
                        loaded.warnings.push(format!("registry {}: {p}", r.name));
                    }
                    if let Some(change) = change {
                        state.apply(SourcedChange {
                            source,
                            change,
                            at: SystemTime::now(),
                        });
                    }
                }
                Err(e) => loaded.errors.push(format!("registry {}: {e}", r.name)),
            },
            RegistryKind::Etcd(cfg) => {
                let label = format!(
                    "registry {} (etcd {}, prefix {})",
                    r.name,
                    cfg.endpoints.join(","),
                    cfg.prefix
                );
                let Live::Contact(limit) = live else {
                    // Settings::load validated the config.
                    loaded
                        .summary
                        .push(format!("{label}: settings valid; not contacted"));
                    continue;
                };
                match list_etcd(&source, cfg, limit).await {
                    Ok(listing) => {
                        let services: std::collections::BTreeSet<_> =
                            listing.view.endpoints.iter().map(|e| &e.service).collect();
                        loaded.summary.push(format!(
                            "{label}: {} services, {} endpoints at revision {}",
                            services.len(),
                            listing.view.endpoints.len(),
                            listing.revision
                        ));
                        if let Some(p) = listing.problem {
                            loaded.warnings.push(format!("registry {}: {p}", r.name));
                        }
                        let (change, problems) = r.mapping.apply(Change::Reset(listing.view));
                        for p in problems {
                            loaded.warnings.push(format!("registry {}: {p}", r.name));
                        }
                        if let Some(change) = change {
                            state.apply(SourcedChange {
                                source,
                                change,
                                at: SystemTime::now(),
                            });
                        }
                    }
                    Err(e) => loaded
                        .unreachable
                        .push(format!("{label}: unreachable: {e}")),
                }
            }
            RegistryKind::Eureka(cfg) => {
                // Settings::load validated the config; check does not contact Eureka.
                loaded.summary.push(format!(
                    "registry {} (eureka {}): settings valid; not contacted by check",
                    r.name,
                    cfg.servers.join(",")
                ));
            }
            RegistryKind::Consul(cfg) => {
                // Settings::load validated the config; check does not contact Consul.
                let sources: Vec<String> = r.sources().iter().map(ToString::to_string).collect();
                loaded.summary.push(format!(
                    "registry {} (consul {}, sources {}): settings valid; not contacted by check",
                    r.name,
                    cfg.address,
                    sources.join(", ")
                ));
            }
            RegistryKind::Marathon(cfg) => {
                // Settings::load validated the config; check does not contact Marathon.
                loaded.summary.push(format!(
                    "registry {} (marathon {}): settings valid; not contacted by check",
                    r.name,
                    cfg.urls.join(",")
                ));
            }
            RegistryKind::Kubernetes(cfg) => {
                // Settings::load validated the config; check does not contact the API server.
                loaded.summary.push(format!(
                    "registry {} (kubernetes {}, namespaces {}): settings valid; not contacted by check",
                    r.name,
                    anymesh_adapter_kubernetes::describe(&cfg.connection),
                    if cfg.namespaces.is_empty() {
                        "all".to_string()
                    } else {
                        cfg.namespaces.join(",")
                    }
                ));
                if cfg.routing_from_cluster {
                    cluster_routing(&r.name, cfg, live, &mut cluster, &mut loaded).await;
                }
            }
        }
    }
    loaded.snapshot = state.snapshot(1);
    let (mut set, mut diags) = load_routing(&settings).map_err(|e| format!("{e:#}"))?;
    let rejected = |n: usize| {
        if n == 0 {
            String::new()
        } else {
            format!(" ({n} rejected)")
        }
    };
    loaded.summary.push(format!(
        "routing: {} VirtualServices{}, {} DestinationRules{} from {} files",
        set.virtual_services.len(),
        rejected(set.rejected.virtual_services.len()),
        set.destination_rules.len(),
        rejected(set.rejected.destination_rules.len()),
        settings.routing_files().map(|f| f.len()).unwrap_or(0)
    ));
    let security = set.peer_authentications.len()
        + set.authorization_policies.len()
        + set.request_authentications.len();
    let security_rejected = set.rejected.peer_authentications.len()
        + set.rejected.authorization_policies.len()
        + set.rejected.request_authentications.len();
    if security + security_rejected > 0 {
        loaded.summary.push(format!(
            "security: {} PeerAuthentications{}, {} AuthorizationPolicies{}, {} RequestAuthentications{}",
            set.peer_authentications.len(),
            rejected(set.rejected.peer_authentications.len()),
            set.authorization_policies.len(),
            rejected(set.rejected.authorization_policies.len()),
            set.request_authentications.len(),
            rejected(set.rejected.request_authentications.len()),
        ));
    }
    if !set.telemetries.is_empty() || !set.rejected.telemetries.is_empty() {
        loaded.summary.push(format!(
            "telemetry: {} Telemetries{}",
            set.telemetries.len(),
            rejected(set.rejected.telemetries.len())
        ));
    }
    if !cluster.is_empty() {
        // The checks across resources again, files and clusters together.
        set.merge(cluster);
        for d in set.retain_valid() {
            if !diags.contains(&d) {
                diags.push(d);
            }
        }
    }
    sort(diags, &mut loaded);
    let (table, diags) = compile(&loaded.snapshot, &set, 1);
    sort(diags, &mut loaded);
    loaded.table = table;
    Ok(loaded)
}

/// Reads a cluster's VirtualServices and DestinationRules once, within
/// the limit, into `cluster`; their findings go to `loaded`.
async fn cluster_routing(
    name: &str,
    cfg: &KubernetesConfig,
    live: Live,
    cluster: &mut ConfigSet,
    loaded: &mut Loaded,
) {
    let label = format!(
        "registry {name}: routing from the cluster (networking.istio.io/{})",
        cfg.istio_version
    );
    let Live::Contact(limit) = live else {
        loaded.summary.push(format!("{label}: not read"));
        return;
    };
    let read = async { ClusterRouting::new(name, cfg.clone())?.list_once().await };
    match tokio::time::timeout(limit, read).await {
        Ok(Ok(view)) => {
            let skipped = view.diagnostics.iter().filter(|d| d.is_error()).count();
            loaded.summary.push(format!(
                "{label}: {} VirtualServices, {} DestinationRules ({skipped} skipped)",
                view.set.virtual_services.len(),
                view.set.destination_rules.len(),
            ));
            sort(view.diagnostics, loaded);
            cluster.merge(view.set);
        }
        Ok(Err(e)) => loaded
            .unreachable
            .push(format!("{label}: unreachable: {e}")),
        Err(_) => loaded
            .unreachable
            .push(format!("{label}: unreachable: no answer within {limit:?}")),
    }
}

/// Lists one etcd registry once, within `limit`.
async fn list_etcd(
    source: &SourceId,
    cfg: &EtcdConfig,
    limit: Duration,
) -> Result<anymesh_adapter_etcd::Listing, String> {
    let registry = EtcdRegistry::new(source.clone(), cfg.clone()).map_err(|e| e.chain())?;
    match tokio::time::timeout(limit, registry.list_once()).await {
        Ok(Ok(listing)) => Ok(listing),
        Ok(Err(e)) => Err(e.chain()),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

/// `anymesh check`: prints every problem; non-zero exit on any error (64),
/// or when a live registry is unreachable (69) unless `live` is [`Live::Skip`].
pub async fn check(config: &Path, live: Live) -> ExitCode {
    let loaded = match load(config, live).await {
        Ok(l) => l,
        Err(e) => {
            println!("error: {e}");
            println!("1 error");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for s in &loaded.summary {
        println!("{s}");
    }
    for e in loaded.errors.iter().chain(&loaded.unreachable) {
        println!("error: {e}");
    }
    for w in &loaded.warnings {
        println!("warning: {w}");
    }
    let errors = loaded.errors.len() + loaded.unreachable.len();
    println!(
        "{} error{}, {} warning{}",
        errors,
        if errors == 1 { "" } else { "s" },
        loaded.warnings.len(),
        if loaded.warnings.len() == 1 { "" } else { "s" },
    );
    if !loaded.errors.is_empty() {
        ExitCode::from(EXIT_CONFIG)
    } else if !loaded.unreachable.is_empty() {
        println!("(a registry is unreachable; `anymesh check --offline` validates without contacting registries)");
        ExitCode::from(EXIT_UNAVAILABLE)
    } else {
        ExitCode::SUCCESS
    }
}

/// `anymesh routes`: explains where one request would go.
pub async fn routes(
    config: &Path,
    host: &str,
    path: &str,
    method: &str,
    headers: &[String],
) -> ExitCode {
    let loaded = match load(config, Live::Skip).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("anymesh: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for e in &loaded.errors {
        eprintln!("error: {e}");
    }
    let mut map = HeaderMap::new();
    for h in headers {
        let parsed = h.split_once('=').and_then(|(k, v)| {
            Some((
                HeaderName::from_bytes(k.trim().as_bytes()).ok()?,
                HeaderValue::from_str(v).ok()?,
            ))
        });
        match parsed {
            Some((k, v)) => {
                map.append(k, v);
            }
            None => {
                eprintln!("anymesh: --header {h:?}: expected NAME=VALUE with a valid header name and value");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    let (path_only, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let info = RequestInfo {
        method,
        authority: host,
        path: path_only,
        query,
        headers: &map,
    };
    print!("{}", explain(&loaded.table, &info));
    ExitCode::SUCCESS
}

/// Renders the routing decision for one request.
pub fn explain(table: &RouteTable, req: &RequestInfo<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "request: {} {} host {:?}",
        req.method, req.path, req.authority
    );
    let hit = match table.route(req) {
        Ok(hit) => hit,
        Err(RouteMiss::NoVirtualHost) => {
            let _ = writeln!(
                out,
                "no route: no service or VirtualService has host {:?} (the proxy answers 404)",
                req.authority
            );
            return out;
        }
        Err(RouteMiss::NoRoute) => {
            let vh = table
                .virtual_host(req.authority)
                .map(|v| v.name.clone())
                .unwrap_or_default();
            let _ = writeln!(out, "virtual host: {vh}");
            let _ = writeln!(out, "no route matches (the proxy answers 404)");
            return out;
        }
    };
    let _ = writeln!(
        out,
        "virtual host: {} (domains: {})",
        hit.vhost.name,
        hit.vhost.domains.join(", ")
    );
    let _ = write!(out, "route: {}", hit.route.name);
    match hit.matched {
        Some(i) => {
            let m = &hit.route.matches[i];
            let _ = write!(
                out,
                " (match #{i}{})",
                m.name
                    .as_deref()
                    .map(|n| format!(" {n:?}"))
                    .unwrap_or_default()
            );
        }
        None => {
            let _ = write!(out, " (matches every request)");
        }
    }
    out.push('\n');
    for (i, r) in table
        .virtual_host(req.authority)
        .into_iter()
        .flat_map(|v| v.routes.iter())
        .enumerate()
    {
        if std::ptr::eq(r, hit.route) {
            break;
        }
        let _ = writeln!(
            out,
            "  skipped route #{i} {}: its matches do not apply",
            r.name
        );
    }
    if let Some(t) = hit.route.timeout {
        let _ = writeln!(out, "timeout: {t:?}");
    }
    match &hit.route.action {
        RouteAction::DirectResponse(d) => {
            let _ = writeln!(
                out,
                "direct response: {} {:?}",
                d.status,
                d.body.as_deref().unwrap_or("")
            );
        }
        RouteAction::Redirect(r) => {
            let _ = writeln!(
                out,
                "redirect {}: uri {:?} authority {:?} scheme {:?} port {:?}",
                r.code, r.uri, r.authority, r.scheme, r.port
            );
        }
        RouteAction::Forward(split) => {
            let _ = writeln!(out, "split:");
            for t in &split.targets {
                let c = &t.cluster;
                let pct = if split.total_weight == 0 {
                    0.0
                } else {
                    100.0 * f64::from(t.weight) / f64::from(split.total_weight)
                };
                let selector: Vec<String> =
                    c.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = writeln!(
                    out,
                    "  {pct:5.1}%  {}  service {} port {} ({}){}  lb {}",
                    c.name,
                    c.service,
                    c.port.number,
                    c.port.protocol,
                    c.subset
                        .as_deref()
                        .map(|s| format!("  subset {s} {{{}}}", selector.join(",")))
                        .unwrap_or_default(),
                    c.lb,
                );
                if c.endpoints.is_empty() {
                    let _ = writeln!(
                        out,
                        "          no eligible endpoint (the proxy answers 503)"
                    );
                }
                for e in &c.endpoints {
                    let labels: Vec<String> = e
                        .endpoint
                        .labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    let _ = writeln!(
                        out,
                        "          -> {}  weight {}  from {}  [{}]",
                        e.authority,
                        e.weight,
                        e.key,
                        labels.join(",")
                    );
                }
                for x in &c.excluded {
                    let _ = writeln!(
                        out,
                        "          x  {}  from {}: {}",
                        x.address, x.key, x.reason
                    );
                }
            }
        }
    }
    out
}
