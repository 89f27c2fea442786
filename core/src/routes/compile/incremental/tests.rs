//! The incremental compiler against a full compile, over random catalog
//! changes and config switches.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::config::load_str;
use crate::routes::compile::compile;
use crate::testgen::{self, Rng};

/// Routing that refers across services: exact hosts, an alias, wildcards,
/// `*`, subsets, a destination port, hosts that name no service.
const MESH: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: to-b}
spec:
  hosts: [a, zzz]
  http:
  - match: [{headers: {x: {exact: "1"}}}]
    route: [{destination: {host: b, subset: v1}}]
  - route:
    - {destination: {host: b, subset: v2}, weight: 50}
    - {destination: {host: g, port: {number: 81}}, weight: 50}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: dot-x}
spec:
  hosts: ["*.x"]
  http:
  - route: [{destination: {host: c}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: everything}
spec:
  hosts: ["*"]
  http:
  - match: [{uri: {prefix: /f}}]
    route: [{destination: {host: f}}]
  - route: [{destination: {host: nothere}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b}
spec:
  host: b
  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: x}
spec:
  host: "*.x"
  subsets: [{name: v1, labels: {version: v1}}]
"#;

/// An alias as a VirtualService host and a DestinationRule host.
const ALIASES: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: g}
spec:
  hosts: [g, alias.x]
  http:
  - route:
    - {destination: {host: h, subset: v2}, weight: 30}
    - {destination: {host: a}, weight: 70}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: h}
spec:
  host: h
  subsets: [{name: v2, labels: {version: v2}}]
"#;

fn config(yaml: &str) -> Arc<ConfigSet> {
    let (set, diags) = load_str("routes.yaml", yaml);
    assert!(!crate::config::has_errors(&diags), "{diags:#?}");
    Arc::new(set)
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap()
}

/// What a request can find in a table, independent of slot positions.
#[derive(Debug, PartialEq)]
struct Reachable {
    domains: BTreeMap<String, serde_json::Value>,
    wildcards: Vec<(String, serde_json::Value)>,
    clusters: BTreeMap<String, serde_json::Value>,
    hosts: Vec<String>,
}

fn reachable(t: &RouteTable) -> Reachable {
    let vh = |i: usize| json(t.virtual_hosts[i].as_ref());
    // Slot invariants the proxy relies on.
    let mut used = BTreeSet::new();
    for (i, c) in t.clusters.iter().enumerate() {
        assert_eq!(c.index, i);
    }
    for h in &t.virtual_hosts {
        for r in &h.routes {
            if let RouteAction::Forward(split) = &r.action {
                for w in &split.targets {
                    assert!(Arc::ptr_eq(&t.clusters[w.cluster.index], &w.cluster));
                    used.insert(w.cluster.name.clone());
                }
            }
        }
    }
    let live: BTreeSet<String> = t
        .clusters
        .iter()
        .filter(|c| !c.name.is_empty())
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(used, live, "every live cluster is used, and only those");
    let mut hosts: Vec<String> = t
        .virtual_hosts
        .iter()
        .filter(|h| !h.name.is_empty())
        .map(|h| json(h.as_ref()).to_string())
        .collect();
    hosts.sort();
    Reachable {
        domains: t
            .exact
            .iter()
            .map(|(d, &i)| (d.to_string(), vh(i)))
            .collect(),
        wildcards: t
            .wildcards
            .iter()
            .map(|(s, i)| (s.clone(), vh(*i)))
            .collect(),
        clusters: t
            .clusters
            .iter()
            .filter(|c| !c.name.is_empty())
            .map(|c| {
                let mut v = json(c.as_ref());
                if let Some(o) = v.as_object_mut() {
                    o.remove("index");
                }
                (c.name.clone(), v)
            })
            .collect(),
        hosts,
    }
}

#[test]
fn incremental_equals_a_full_compile_after_random_changes() {
    let configs = [
        config(""),
        config(MESH),
        config(ALIASES),
        config(&format!("{MESH}---{ALIASES}")),
    ];
    let (mut passes, mut incremental) = (0, 0);
    for seed in 0..80 {
        let mut rng = Rng::new(seed);
        let mut state = testgen::state();
        let mut inc = IncrementalCompiler::new();
        let mut cfg = configs[rng.below(configs.len())].clone();
        let start = SystemTime::now();
        for v in 1..50u64 {
            let now = start + Duration::from_secs(v);
            for _ in 0..1 + rng.below(3) {
                state.apply(testgen::change(&mut rng, now));
            }
            if rng.chance(10) {
                state.expire_guard(now + Duration::from_secs(60));
            }
            if rng.chance(8) {
                cfg = configs[rng.below(configs.len())].clone();
            }
            let snap = state.publish(v);
            let (t1, d1) = inc.compile(&snap, &cfg, v);
            let (t2, d2) = compile(&snap, &cfg, v);
            let (r1, r2) = (reachable(&t1), reachable(&t2));
            if r1 != r2 {
                let keys = |r: &Reachable| r.domains.keys().cloned().collect::<Vec<_>>();
                let names = |r: &Reachable| r.clusters.keys().cloned().collect::<Vec<_>>();
                panic!(
                    "seed {seed}, version {v}: domains {:?} vs {:?}; clusters {:?} vs {:?}; \
                     same domains {}, wildcards {}, clusters {}, hosts {}",
                    keys(&r1),
                    keys(&r2),
                    names(&r1),
                    names(&r2),
                    r1.domains == r2.domains,
                    r1.wildcards == r2.wildcards,
                    r1.clusters == r2.clusters,
                    r1.hosts == r2.hosts,
                );
            }
            assert_eq!(d1, d2, "seed {seed}, version {v}");
            assert_eq!((t1.version, t1.catalog_version), (v, v));
            passes += 1;
            incremental += usize::from(inc.last_pass().is_some_and(|p| !p.full));
        }
    }
    // The incremental path is the one mostly taken.
    assert!(incremental * 2 > passes, "{incremental} of {passes}");
}

#[test]
fn one_endpoint_change_recompiles_one_service() {
    let source = crate::model::SourceId::new("one");
    let mut state = crate::catalog::CatalogState::new([source.clone()]);
    let mut rng = Rng::new(7);
    let endpoints: Vec<_> = (0..40)
        .map(|i| {
            let mut e = testgen::endpoint(&mut rng, "one");
            e.service = Hostname::new(&format!("s{i}")).unwrap();
            e.provenance.native_id = format!("id-{i}");
            e
        })
        .collect();
    state.apply(crate::registry::SourcedChange {
        source: source.clone(),
        change: crate::registry::Change::Reset(crate::registry::SourceView {
            services: Vec::new(),
            endpoints: endpoints.clone(),
        }),
        at: SystemTime::now(),
    });
    let cfg = config("");
    let mut inc = IncrementalCompiler::new();
    let (first, _) = inc.compile(&state.publish(1), &cfg, 1);
    assert_eq!(inc.last_pass().map(|p| (p.full, p.units)), Some((true, 41)));

    let mut moved = endpoints[3].clone();
    moved.address = "10.9.9.9".into();
    state.apply(crate::registry::SourcedChange {
        source,
        change: crate::registry::Change::UpsertEndpoint(moved),
        at: SystemTime::now(),
    });
    let (second, _) = inc.compile(&state.publish(2), &cfg, 2);
    assert_eq!(inc.last_pass().map(|p| (p.full, p.units)), Some((false, 1)));
    // Everything else is the previous table's, shared.
    let changed: Vec<usize> = (0..first.virtual_hosts.len())
        .filter(|&i| !Arc::ptr_eq(&first.virtual_hosts[i], &second.virtual_hosts[i]))
        .collect();
    assert_eq!(changed.len(), 1);
    assert_eq!(second.virtual_hosts[changed[0]].name, "s3");
    let rebuilt = (0..first.clusters.len())
        .filter(|&i| !Arc::ptr_eq(&first.clusters[i], &second.clusters[i]))
        .count();
    assert_eq!(rebuilt, 1);
}
