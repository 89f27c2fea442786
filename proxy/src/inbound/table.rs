//! The inbound route table: one virtual host per local workload port, its
//! one cluster the application on loopback. Built with the same compiler
//! as the outbound table, from a catalog of the local workload and one
//! VirtualService per port that turns retries off (the caller's proxy
//! retries; the inbound side never sends a request twice).

use std::time::SystemTime;

use anymesh_core::config::load_str;
use anymesh_core::model::{
    Endpoint, EndpointPort, Health, Hostname, Locality, Provenance, Service, ServicePort, SourceId,
};
use anymesh_core::registry::SourcedChange;
use anymesh_core::registry::{Change, SourceView};
use anymesh_core::routes::compile::compile;
use anymesh_core::routes::RouteTable;
use anymesh_core::{CatalogState, Diagnostic};

use super::InboundPort;

/// The virtual host (and cluster service) name of local workload port `port`.
pub fn route_key(port: u16) -> String {
    super::sniff::server_name_for_port(port)
}

/// Compiles the inbound route table for `ports`.
pub fn inbound_table(ports: &[InboundPort]) -> (RouteTable, Vec<Diagnostic>) {
    let source = SourceId::new("inbound");
    let mut services = Vec::new();
    let mut endpoints = Vec::new();
    let mut yaml = String::new();
    for p in ports {
        let Ok(host) = Hostname::new(&p.route_key) else {
            continue;
        };
        services.push(Service {
            hostname: host.clone(),
            aliases: Vec::new(),
            ports: vec![ServicePort {
                name: String::new(),
                number: p.port,
                protocol: p.protocol,
            }],
        });
        endpoints.push(Endpoint {
            service: host.clone(),
            address: p.app.ip().to_string(),
            ports: vec![EndpointPort {
                name: String::new(),
                number: p.app.port(),
            }],
            labels: Default::default(),
            health: Health::Healthy,
            weight: 1,
            locality: Locality::default(),
            mesh: None,
            provenance: Provenance {
                source: source.clone(),
                native_id: format!("app-{}", p.port),
                raw_labels: Default::default(),
            },
        });
        yaml.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: inbound-{port}, namespace: anymesh}}\nspec:\n  hosts: [\"{host}\"]\n  http:\n  - route: [{{destination: {{host: \"{host}\", port: {{number: {port}}}}}}}]\n    retries: {{attempts: 0}}\n---\n",
            port = p.port,
        ));
    }
    let mut state = CatalogState::new([source.clone()]);
    state.apply(SourcedChange {
        source,
        change: Change::Reset(SourceView {
            services,
            endpoints,
        }),
        at: SystemTime::now(),
    });
    let snapshot = state.snapshot(1);
    let (config, mut diags) = load_str("inbound", &yaml);
    let (table, more) = compile(&snapshot, &config, 1);
    diags.extend(more);
    (table, diags)
}
