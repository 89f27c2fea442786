use anymesh_core::model::{MeshProxy, DEFAULT_MESH_PORT};
use anymesh_core::SourceId;

use super::*;
use crate::api::{AgentService, ConnectProxy, HealthCheck, Node, CONNECT_PROXY};

fn entry(id: &str, port: u16, meta: &[(&str, &str)]) -> ServiceEntry {
    ServiceEntry {
        node: Node {
            node: "n1".into(),
            address: "10.0.0.1".into(),
            ..Node::default()
        },
        service: AgentService {
            id: id.into(),
            service: "web".into(),
            port,
            meta: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..AgentService::default()
        },
        checks: Vec::new(),
    }
}

/// The sidecar `connect.sidecar_service` registers for instance `fronts`
/// of `web` (same node; no address of its own: the node's).
fn sidecar(fronts: &str, port: u16) -> ServiceEntry {
    let mut e = entry(&format!("{fronts}-sidecar-proxy"), port, &[]);
    e.service.service = "web-sidecar-proxy".into();
    e.service.kind = CONNECT_PROXY.into();
    e.service.proxy = Some(ConnectProxy {
        destination_service_name: "web".into(),
        destination_service_id: fronts.into(),
        local_service_address: "127.0.0.1".into(),
        local_service_port: 80,
    });
    e
}

fn decode_as(name: &str, entries: &[ServiceEntry]) -> Followed {
    Followed::decode(&Decoder::new(SourceId::new("c")), name, 5, entries)
}

fn decode(entries: &[ServiceEntry]) -> Followed {
    decode_as("web", entries)
}

/// A state following `web` (and its sidecar service, if given).
fn synced(web: &[ServiceEntry], sidecars: Option<&[ServiceEntry]>) -> Synced {
    let mut s = Synced::default();
    s.services.insert("web".into(), decode(web));
    if let Some(sc) = sidecars {
        s.services.insert(
            "web-sidecar-proxy".into(),
            decode_as("web-sidecar-proxy", sc),
        );
    }
    s.join_all();
    s
}

fn kinds(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .map(|c| match c {
            Change::UpsertEndpoint(e) => format!("+{}", e.provenance.native_id),
            Change::RemoveEndpoint(k) => format!("-{}", k.native_id),
            Change::UpsertService(s) => format!("+service {}", s.hostname),
            Change::RemoveService(h) => format!("-service {h}"),
            other => format!("{other:?}"),
        })
        .collect()
}

fn mesh(s: &Synced, id: &str) -> Option<Option<MeshProxy>> {
    s.services["web"].endpoints.get(id).map(|e| e.mesh.clone())
}

#[test]
fn a_new_answer_is_a_diff() {
    let mut s = synced(&[entry("a", 80, &[]), entry("b", 80, &[])], None);
    let changes = s.apply("web", decode(&[entry("b", 81, &[]), entry("c", 80, &[])]));
    assert_eq!(kinds(&changes), ["-n1/a", "+n1/b", "+n1/c"]);
    assert!(s
        .apply("web", decode(&[entry("b", 81, &[]), entry("c", 80, &[])]))
        .is_empty());
    assert_eq!(kinds(&s.services["web"].removal()), ["-n1/b", "-n1/c"]);
}

#[test]
fn a_declaration_comes_and_goes_with_the_meta() {
    let mut s = synced(&[entry("a", 80, &[])], None);
    let changes = s.apply("web", decode(&[entry("a", 80, &[("protocol", "grpc")])]));
    assert_eq!(
        kinds(&changes),
        ["+service web", "+n1/a"],
        "labels changed too"
    );
    // Dropping the declaration removes the service's endpoints in the
    // catalog, so the remaining ones are sent again.
    let changes = s.apply("web", decode(&[entry("a", 80, &[]), entry("b", 80, &[])]));
    assert_eq!(kinds(&changes), ["-service web", "+n1/a", "+n1/b"]);
    assert_eq!(s.services["web"].endpoints.len(), 2);
}

#[test]
fn skipped_instances_make_a_degraded_status() {
    let s = synced(&[entry("a", 0, &[]), entry("b", 80, &[])], None);
    match s.status() {
        SourceStatus::Degraded { message } => {
            assert!(
                message.starts_with("1 consul instance skipped"),
                "{message}"
            );
            assert!(message.contains("n1/a: no port"), "{message}");
        }
        other => panic!("degraded expected, got {other:?}"),
    }
    assert_eq!(s.view().endpoints.len(), 1);
}

#[test]
fn a_connect_sidecar_gives_its_instance_a_mesh_proxy() {
    let s = synced(
        &[entry("a", 80, &[]), entry("b", 80, &[])],
        Some(&[sidecar("a", 21000)]),
    );
    // The identity: the Consul namespace (none: default) and the service
    // name as the service account.
    assert_eq!(
        mesh(&s, "n1/a"),
        Some(Some(MeshProxy::new(21000, None, Some("web".into()))))
    );
    assert_eq!(mesh(&s, "n1/b"), Some(None), "no sidecar: plaintext");
    let view = s.view();
    assert_eq!(
        view.endpoints.len(),
        2,
        "the proxy is no endpoint of its own"
    );
    assert!(view.services.is_empty());
    let a = &s.services["web"].endpoints["n1/a"];
    assert_eq!(a.provenance.raw_labels[SIDECAR_LABEL], "n1/a-sidecar-proxy");
    assert_eq!(s.status(), SourceStatus::Healthy);
}

#[test]
fn a_sidecar_answer_changes_the_endpoints_it_fronts() {
    let mut s = synced(&[entry("a", 80, &[])], Some(&[]));
    assert_eq!(mesh(&s, "n1/a"), Some(None));
    // The sidecar registers: its service's answer updates `web`'s endpoint.
    let changes = s.apply(
        "web-sidecar-proxy",
        decode_as("web-sidecar-proxy", &[sidecar("a", 21000)]),
    );
    assert_eq!(kinds(&changes), ["+n1/a"]);
    assert_eq!(mesh(&s, "n1/a").flatten().map(|m| m.port), Some(21000));
    // An unchanged sidecar answer changes nothing.
    assert!(s
        .apply(
            "web-sidecar-proxy",
            decode_as("web-sidecar-proxy", &[sidecar("a", 21000)])
        )
        .is_empty());
    // A new answer of `web` keeps the join.
    assert!(s.apply("web", decode(&[entry("a", 80, &[])])).is_empty());
    // Its sidecar failing its checks: every request goes through it.
    let mut failing = sidecar("a", 21000);
    failing.checks = vec![HealthCheck {
        check_id: "service:a-sidecar-proxy:1".into(),
        status: "critical".into(),
        ..HealthCheck::default()
    }];
    let changes = s.apply(
        "web-sidecar-proxy",
        decode_as("web-sidecar-proxy", &[failing]),
    );
    assert_eq!(kinds(&changes), ["+n1/a"]);
    assert_eq!(
        s.services["web"].endpoints["n1/a"].health,
        Health::Unhealthy
    );
    // The sidecar deregistered: plaintext again.
    let changes = s.apply("web-sidecar-proxy", decode_as("web-sidecar-proxy", &[]));
    assert_eq!(kinds(&changes), ["+n1/a"]);
    assert_eq!(mesh(&s, "n1/a"), Some(None));
    assert_eq!(s.services["web"].endpoints["n1/a"].health, Health::Healthy);
    // The sidecar service no longer followed takes its join with it.
    s.apply(
        "web-sidecar-proxy",
        decode_as("web-sidecar-proxy", &[sidecar("a", 21000)]),
    );
    let changes = s.remove("web-sidecar-proxy");
    assert_eq!(kinds(&changes), ["+n1/a"]);
    assert_eq!(mesh(&s, "n1/a"), Some(None));
}

#[test]
fn meta_keys_mark_a_proxy_and_override_the_sidecars_fields() {
    let s = synced(
        &[
            entry("a", 80, &[("anymesh-proxy-port", "15001")]),
            entry(
                "b",
                80,
                &[
                    ("anymesh-namespace", "shop"),
                    ("anymesh-service-account", "web-v2"),
                ],
            ),
            entry(
                "c",
                80,
                &[(
                    "anymesh-spiffe-id",
                    "spiffe://dc1.consul/ns/default/dc/dc1/svc/web",
                )],
            ),
        ],
        Some(&[sidecar("a", 21000), sidecar("b", 21001)]),
    );
    assert_eq!(
        mesh(&s, "n1/a"),
        Some(Some(MeshProxy::new(15001, None, Some("web".into())))),
        "the meta's port wins over the sidecar's"
    );
    assert_eq!(
        mesh(&s, "n1/b"),
        Some(Some(MeshProxy::new(
            21001,
            Some("shop".into()),
            Some("web-v2".into())
        )))
    );
    assert_eq!(
        mesh(&s, "n1/c"),
        Some(Some(MeshProxy {
            port: DEFAULT_MESH_PORT,
            service_account: Some("web".into()),
            spiffe_id: Some("spiffe://dc1.consul/ns/default/dc/dc1/svc/web".into()),
            ..MeshProxy::default()
        })),
        "meta alone, on the default port"
    );
}

#[test]
fn unusable_proxies_refuse_the_instance() {
    let mut elsewhere = sidecar("b", 21001);
    elsewhere.service.address = "10.0.0.9".into();
    let s = synced(
        &[
            entry("a", 80, &[("anymesh-proxy-port", "0")]),
            entry("b", 80, &[]),
            entry("c", 80, &[("anymesh-spiffe-id", "web")]),
        ],
        Some(&[elsewhere]),
    );
    assert!(s.services["web"].endpoints.is_empty(), "none in plaintext");
    let SourceStatus::Degraded { message } = s.status() else {
        panic!("degraded expected");
    };
    for want in [
        r#"instance n1/a: meta anymesh-proxy-port "0": not a port number 1..=65535"#,
        r#"instance n1/c: meta anymesh-spiffe-id "web": does not start with spiffe://"#,
        "instance n1/b: its Connect sidecar n1/b-sidecar-proxy listens on 10.0.0.9, not on \
         the instance's address 10.0.0.1",
    ] {
        assert!(message.contains(want), "{message}\n  wants {want}");
    }
}
