use super::*;
use crate::model::{EndpointPort, Health, Labels, Locality, Protocol, Provenance};

fn host(s: &str) -> Hostname {
    Hostname::new(s).unwrap()
}

fn ep(source: &str, id: &str, svc: &str, addr: &str, port: u16) -> Endpoint {
    Endpoint {
        service: host(svc),
        address: addr.into(),
        ports: vec![EndpointPort {
            name: String::new(),
            number: port,
        }],
        labels: Labels::new(),
        health: Health::Healthy,
        weight: 1,
        locality: Locality::default(),
        mesh: None,
        provenance: Provenance {
            source: SourceId::new(source),
            native_id: id.into(),
            raw_labels: Labels::new(),
        },
    }
}

fn svc(name: &str, alias: &str, port: u16) -> Service {
    Service {
        hostname: host(name),
        aliases: vec![host(alias)],
        ports: vec![ServicePort {
            name: "http".into(),
            number: port,
            protocol: Protocol::Http,
        }],
    }
}

fn change(source: &str, change: Change) -> SourcedChange {
    SourcedChange {
        source: SourceId::new(source),
        change,
        at: SystemTime::now(),
    }
}

fn reset(source: &str, services: Vec<Service>, endpoints: Vec<Endpoint>) -> SourcedChange {
    change(
        source,
        Change::Reset(SourceView {
            services,
            endpoints,
        }),
    )
}

#[test]
fn merges_sources_by_hostname_with_precedence() {
    let mut st = CatalogState::new([SourceId::new("a"), SourceId::new("b")]);
    assert!(st.apply(reset(
        "b",
        vec![svc("web", "web.b", 80)],
        vec![
            ep("b", "1", "web", "10.0.0.1", 8080),
            ep("b", "2", "web", "10.0.0.2", 8080)
        ]
    )));
    assert!(st.apply(reset(
        "a",
        vec![svc("web", "web.a", 81)],
        vec![ep("a", "x", "web", "10.0.0.1", 8080)]
    )));
    let snap = st.snapshot(1);
    let web = snap.service(&host("web")).unwrap();
    assert_eq!(web.sources, vec![SourceId::new("a"), SourceId::new("b")]);
    assert_eq!(
        web.endpoints.len(),
        2,
        "duplicate address+port is merged, not doubled"
    );
    assert_eq!(web.endpoints[0].provenance.source.as_str(), "a");
    assert_eq!(web.shadowed.len(), 1);
    assert_eq!(web.shadowed[0].by.source.as_str(), "a");
    assert_eq!(web.ports.len(), 2);
    assert!(snap.service(&host("web.b")).is_some());
    assert!(snap.service(&host("web.a")).is_some());
    assert!(snap.service(&host("nope")).is_none());
}

#[test]
fn error_keeps_last_good_view_marked_stale() {
    let mut st = CatalogState::new([SourceId::new("a")]);
    st.apply(reset(
        "a",
        vec![],
        vec![ep("a", "1", "web", "10.0.0.1", 80)],
    ));
    assert!(st.apply(change(
        "a",
        Change::Status(SourceStatus::Error {
            message: "boom".into()
        })
    )));
    let snap = st.snapshot(2);
    assert_eq!(snap.service(&host("web")).unwrap().endpoints.len(), 1);
    let info = &snap.sources[0];
    assert!(!info.connected);
    assert!(info.stale_since.is_some());
    assert_eq!(info.last_error.as_deref(), Some("boom"));
    // A repeated error changes nothing visible.
    assert!(!st.apply(change(
        "a",
        Change::Status(SourceStatus::Error {
            message: "boom".into()
        })
    )));
    // A successful relist clears staleness.
    st.apply(reset("a", vec![], vec![]));
    let snap = st.snapshot(3);
    assert!(snap.sources[0].stale_since.is_none());
    assert!(snap.services.is_empty());
}

#[test]
fn degraded_is_connected_and_current_with_its_problem_shown() {
    let mut st = CatalogState::new([SourceId::new("a")]);
    st.apply(reset(
        "a",
        vec![],
        vec![ep("a", "1", "web", "10.0.0.1", 80)],
    ));
    let degraded = SourceStatus::Degraded {
        message: "1 key skipped".into(),
    };
    assert!(st.apply(change("a", Change::Status(degraded))));
    let info = &st.snapshot(2).sources[0];
    assert!(info.connected);
    assert!(info.stale_since.is_none());
    assert_eq!(info.last_error.as_deref(), Some("1 key skipped"));
    st.apply(change("a", Change::Status(SourceStatus::Healthy)));
    assert!(st.snapshot(3).sources[0].last_error.is_none());
}

#[test]
fn a_restored_view_is_served_stale_until_the_registry_lists() {
    let mut st = CatalogState::new([SourceId::new("a")]);
    let saved_at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
    let view = SourceView {
        services: vec![],
        endpoints: vec![ep("a", "1", "web", "10.0.0.1", 80)],
    };
    st.restore(&SourceId::new("a"), view, saved_at, SystemTime::now());
    let snap = st.snapshot(1);
    assert_eq!(snap.service(&host("web")).unwrap().endpoints.len(), 1);
    let info = &snap.sources[0];
    assert!(info.synced && !info.connected && info.stale_since.is_some());
    assert_eq!(info.restored_from, Some(saved_at));
    // The registry's error keeps it; its first list replaces it.
    st.apply(change(
        "a",
        Change::Status(SourceStatus::Error {
            message: "down".into(),
        }),
    ));
    assert_eq!(st.snapshot(2).sources[0].restored_from, Some(saved_at));
    st.apply(reset(
        "a",
        vec![],
        vec![ep("a", "2", "web", "10.0.0.2", 80)],
    ));
    let snap = st.snapshot(3);
    assert_eq!(snap.sources[0].restored_from, None);
    assert_eq!(
        snap.service(&host("web")).unwrap().endpoints[0].address,
        "10.0.0.2"
    );
}

#[test]
fn incremental_changes_and_harmless_unknown_remove() {
    let mut st = CatalogState::new([]);
    st.apply(reset("a", vec![svc("web", "w", 80)], vec![]));
    assert!(st.apply(change(
        "a",
        Change::UpsertEndpoint(ep("a", "1", "web", "10.0.0.1", 80))
    )));
    assert!(!st.apply(change(
        "a",
        Change::UpsertEndpoint(ep("a", "1", "web", "10.0.0.1", 80))
    )));
    let unknown = EndpointKey {
        source: SourceId::new("a"),
        native_id: Arc::from("zzz"),
    };
    assert!(!st.apply(change("a", Change::RemoveEndpoint(unknown))));
    assert_eq!(st.snapshot(1).services[&host("web")].endpoints.len(), 1);
    assert!(st.apply(change("a", Change::RemoveService(host("web")))));
    assert!(st.snapshot(2).services.is_empty());
}

#[test]
fn endpoints_without_service_get_implicit_port() {
    let mut st = CatalogState::new([]);
    st.apply(reset(
        "a",
        vec![],
        vec![ep("a", "1", "api", "10.0.0.1", 9000)],
    ));
    let snap = st.snapshot(1);
    let api = &snap.services[&host("api")];
    assert_eq!(
        api.ports,
        vec![ServicePort {
            name: "http".into(),
            number: 9000,
            protocol: Protocol::Http
        }]
    );
}

#[test]
fn a_hostname_beats_another_service_alias() {
    let mut st = CatalogState::new([SourceId::new("a")]);
    // `a` walks first alphabetically and claims `b`, which is a service.
    st.apply(reset(
        "a",
        vec![svc("a", "b", 80), svc("b", "bee", 80)],
        vec![],
    ));
    let snap = st.snapshot(1);
    assert_eq!(snap.service(&host("b")).unwrap().hostname, host("b"));
    assert!(!snap.aliases.contains_key(&host("b")));
    assert!(snap.services[&host("a")].aliases.is_empty());
    assert_eq!(
        snap.alias_conflicts,
        [AliasConflict {
            alias: host("b"),
            service: host("a"),
            source: SourceId::new("a"),
            loss: AliasLoss::IsHostname,
        }]
    );
    assert_eq!(
        snap.alias_conflicts[0].to_string(),
        "alias 'b' of service 'a' is ignored: 'b' is a service's hostname"
    );
}

#[test]
fn a_contested_alias_goes_by_source_precedence_then_hostname() {
    let mut st = CatalogState::new([SourceId::new("hi"), SourceId::new("lo")]);
    st.apply(reset(
        "lo",
        vec![svc("a", "x", 80), svc("c", "y", 80)],
        vec![],
    ));
    st.apply(reset(
        "hi",
        vec![svc("z", "x", 80), svc("d", "y", 80)],
        vec![],
    ));
    let snap = st.snapshot(1);
    // Different sources: the higher-precedence one wins, whatever the names.
    assert_eq!(snap.service(&host("x")).unwrap().hostname, host("z"));
    assert_eq!(snap.service(&host("y")).unwrap().hostname, host("d"));
    // Same source: the alphabetically first hostname.
    st.apply(reset(
        "lo",
        vec![svc("m", "w", 80), svc("k", "w", 80)],
        vec![],
    ));
    let snap = st.snapshot(2);
    assert_eq!(snap.service(&host("w")).unwrap().hostname, host("k"));
    assert!(snap.services[&host("m")].aliases.is_empty());
    let lines: Vec<String> = snap
        .alias_conflicts
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        lines,
        ["alias 'w' is claimed by services 'k' and 'm'; 'k' wins"]
    );
}

#[tokio::test]
async fn run_publishes_versioned_snapshots() {
    let (tx, rx) = mpsc::channel(16);
    let (wtx, mut wrx) = watch::channel(Arc::new(Snapshot::default()));
    let task = tokio::spawn(run(CatalogState::new([SourceId::new("a")]), rx, wtx));
    tx.send(reset(
        "a",
        vec![],
        vec![ep("a", "1", "web", "10.0.0.1", 80)],
    ))
    .await
    .unwrap();
    wrx.changed().await.unwrap();
    let snap = wrx.borrow_and_update().clone();
    assert_eq!(snap.version, 1);
    assert!(snap.all_synced());
    drop(tx);
    task.await.unwrap();
}

/// Everything a snapshot says, but its version and change log.
fn same_content(a: &Snapshot, b: &Snapshot) -> bool {
    a.services == b.services
        && a.aliases == b.aliases
        && a.alias_conflicts == b.alias_conflicts
        && a.sources == b.sources
}

#[test]
fn publish_equals_a_full_snapshot_after_random_changes() {
    use crate::testgen::{self, Rng};
    for seed in 0..200 {
        let mut rng = Rng::new(seed);
        let mut st = testgen::state();
        let start = SystemTime::now();
        let mut prev = st.publish(1);
        for v in 2..60u64 {
            let now = start + std::time::Duration::from_secs(v);
            for _ in 0..1 + rng.below(3) {
                st.apply(testgen::change(&mut rng, now));
            }
            if rng.chance(10) {
                // Past the grace period: holds end.
                st.expire_guard(now + std::time::Duration::from_secs(60));
            }
            let next = st.publish(v);
            let full = st.snapshot(v);
            assert!(same_content(&next, &full), "seed {seed}, version {v}");
            // Every service that differs from the last version is reported.
            match next.changed_since(prev.version) {
                Changed::Everything => {}
                Changed::Services(hosts) => {
                    let names: BTreeSet<&Hostname> =
                        prev.services.keys().chain(next.services.keys()).collect();
                    for h in names {
                        if prev.services.get(h) != next.services.get(h) {
                            assert!(
                                hosts.contains(h),
                                "seed {seed}, version {v}: {h} unreported"
                            );
                        }
                    }
                    assert_eq!(prev.aliases, next.aliases, "seed {seed}, version {v}");
                }
            }
            prev = next;
        }
    }
}

#[test]
fn publish_shares_unchanged_services_and_logs_what_changed() {
    let mut st = CatalogState::new([SourceId::new("a")]);
    st.apply(reset(
        "a",
        vec![],
        vec![
            ep("a", "1", "web", "10.0.0.1", 80),
            ep("a", "2", "api", "10.0.0.2", 80),
        ],
    ));
    let first = st.publish(1);
    st.apply(change(
        "a",
        Change::UpsertEndpoint(ep("a", "3", "web", "10.0.0.3", 80)),
    ));
    let second = st.publish(2);
    assert!(Arc::ptr_eq(
        &first.services[&host("api")],
        &second.services[&host("api")]
    ));
    assert_eq!(second.services[&host("web")].endpoints.len(), 2);
    assert_eq!(
        second.changed_since(1),
        Changed::Services(BTreeSet::from([host("web")]))
    );
    st.apply(change(
        "a",
        Change::RemoveEndpoint(ep("a", "2", "api", "10.0.0.2", 80).key()),
    ));
    let third = st.publish(3);
    assert!(!third.services.contains_key(&host("api")));
    assert_eq!(
        third.changed_since(1),
        Changed::Services(BTreeSet::from([host("api"), host("web")]))
    );
    // A version the log does not cover, or a snapshot without a log.
    assert_eq!(third.changed_since(0), Changed::Everything);
    assert_eq!(st.snapshot(4).changed_since(3), Changed::Everything);
}
