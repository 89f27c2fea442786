//! Every payload in `adapters/testkit/fixtures/kubernetes` decodes into the
//! k8s-openapi / kube types the adapter reads, with its fields asserted,
//! and translates as the fixtures README's semantics say.

use anymesh_testkit::fixtures;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::WatchEvent;
use serde_json::json;

use super::*;
use crate::config::Connection;

fn decode<T: serde::de::DeserializeOwned>(rel: &str) -> T {
    serde_json::from_value(fixtures::json(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn every_fixture_file_is_decoded() {
    fixtures::assert_each_named("kubernetes", &[include_str!("tests.rs")]);
}

fn translator(form: HostnameForm) -> Translator {
    let mut c = KubernetesConfig::new(Connection::Infer);
    c.hostname = form;
    Translator::new(SourceId::new("k8s"), &c)
}

fn host(s: &str) -> Hostname {
    Hostname::new(s).unwrap()
}

#[test]
fn the_terminating_and_ready_slice_from_the_docs() {
    let s: EndpointSlice = decode("kubernetes/endpointslice_terminating_and_ready_docs.json");
    assert_eq!(s.address_type, "IPv4");
    assert_eq!(s.endpoints.len(), 2);
    let (a, b) = (&s.endpoints[0], &s.endpoints[1]);
    assert_eq!(a.addresses, vec!["10.12.1.201"]);
    let c = a.conditions.clone().unwrap();
    assert_eq!(
        (c.ready, c.serving, c.terminating),
        (Some(false), Some(true), Some(true))
    );
    assert_eq!(
        a.node_name.as_deref(),
        Some("gke-main-default-pool-dca1511c-d17b")
    );
    assert_eq!(a.zone.as_deref(), Some("us-central1-c"));
    let r = a.target_ref.clone().unwrap();
    assert_eq!(
        (r.kind.as_deref(), r.name.as_deref()),
        (Some("Pod"), Some("nginx-deployment-7768647bf9-b4b9s"))
    );
    assert!(
        s.ports.is_none() && s.metadata.name.is_none(),
        "the docs show neither"
    );
    // Terminating but serving: draining. Ready: healthy.
    assert_eq!(health(a), Health::Draining);
    assert_eq!(health(b), Health::Healthy);
}

#[test]
fn the_docs_slice_translates_once_joined_to_a_service() {
    let mut v = fixtures::json("kubernetes/endpointslice_terminating_and_ready_docs.json");
    v["metadata"] = json!({"name": "nginx-abc", "namespace": "default",
                           "labels": {SERVICE_NAME_LABEL: "nginx"}});
    v["ports"] = json!([{"name": "http", "port": 80, "protocol": "TCP"}]);
    let slice: EndpointSlice = serde_json::from_value(v).unwrap();
    let svc: KService = serde_json::from_value(json!({
        "metadata": {"name": "nginx", "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 80}]},
    }))
    .unwrap();
    let labels = Labels::from([("version".to_string(), "v7".to_string())]);
    let info = PodInfo {
        labels: labels.clone(),
        mesh: Ok(None),
    };
    let objects = Objects {
        services: vec![&svc],
        slices: vec![&slice],
        pods: HashMap::from([(("default", "nginx-deployment-7768647bf9-rkxlw"), &info)]),
        ..Objects::default()
    };
    let d = translator(HostnameForm::Fqdn).derive(&objects);
    let s = &d.services[&host("nginx.default.svc.cluster.local")];
    assert_eq!(
        s.aliases,
        vec![
            host("nginx"),
            host("nginx.default"),
            host("nginx.default.svc")
        ]
    );
    let old = &d.endpoints["default/nginx/10.12.1.201"];
    let new = &d.endpoints["default/nginx/10.12.1.202"];
    assert_eq!(old.health, Health::Draining);
    assert_eq!(new.health, Health::Healthy);
    assert_eq!(new.labels, labels, "labels from the targetRef pod");
    assert!(old.labels.is_empty(), "its pod is not known");
    assert_eq!(new.locality.zone.as_deref(), Some("us-central1-c"));
    assert_eq!(old.provenance.raw_labels["k8s.terminating"], "true");
    assert_eq!(
        old.provenance.raw_labels["k8s.node"],
        "gke-main-default-pool-dca1511c-d17b"
    );
    assert!(d.invalid.is_empty(), "{:?}", d.invalid);
}

#[test]
fn the_fuzzed_endpointslice_decodes_every_field() {
    let s: EndpointSlice = decode("kubernetes/endpointslice_roundtrip_allfields_fuzzed.json");
    assert_eq!(s.metadata.name.as_deref(), Some("nameValue"));
    assert_eq!(
        s.metadata.resource_version.as_deref(),
        Some("resourceVersionValue")
    );
    assert_eq!(s.address_type, "addressTypeValue");
    let e = &s.endpoints[0];
    assert_eq!(e.addresses, vec!["addressesValue"]);
    let c = e.conditions.clone().unwrap();
    assert_eq!(
        (c.ready, c.serving, c.terminating),
        (Some(true), Some(true), Some(true))
    );
    assert_eq!(e.hostname.as_deref(), Some("hostnameValue"));
    assert_eq!(e.zone.as_deref(), Some("zoneValue"));
    let hints = e.hints.clone().unwrap();
    assert_eq!(hints.for_zones.unwrap()[0].name, "nameValue");
    assert_eq!(
        e.deprecated_topology.clone().unwrap()["deprecatedTopologyKey"],
        "deprecatedTopologyValue"
    );
    let p = &s.ports.clone().unwrap()[0];
    assert_eq!(
        (p.name.as_deref(), p.port, p.app_protocol.as_deref()),
        (Some("nameValue"), Some(3), Some("appProtocolValue"))
    );
    // Ready but terminating is not ready (KEP-1672): serving, so draining.
    assert_eq!(health(e), Health::Draining);
}

#[test]
fn the_fuzzed_service_decodes_and_a_non_tcp_port_is_left_out() {
    let s: KService = decode("kubernetes/service_roundtrip_allfields_fuzzed.json");
    assert_eq!(s.metadata.namespace.as_deref(), Some("namespaceValue"));
    let spec = s.spec.clone().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("typeValue"));
    assert_eq!(spec.external_name.as_deref(), Some("externalNameValue"));
    let port = &spec.ports.clone().unwrap()[0];
    assert_eq!(
        port.target_port,
        Some(IntOrString::String("targetPortValue".into()))
    );
    assert_eq!((port.port, port.node_port), (3, Some(5)));
    assert_eq!(port.protocol.as_deref(), Some("protocolValue"));
    let objects = Objects {
        services: vec![&s],
        ..Objects::default()
    };
    let d = translator(HostnameForm::Namespaced).derive(&objects);
    let svc = &d.services[&host("namevalue.namespacevalue")];
    assert!(
        svc.ports.is_empty(),
        "protocolValue is not TCP: {:?}",
        svc.ports
    );
}

#[test]
fn the_fuzzed_pod_decodes_with_its_labels_and_ips() {
    let p: Pod = decode("kubernetes/pod_roundtrip_allfields_fuzzed.json");
    assert_eq!(
        p.metadata.labels.clone().unwrap()["labelsKey"],
        "labelsValue"
    );
    let status = p.status.clone().unwrap();
    assert_eq!(status.pod_ip.as_deref(), Some("podIPValue"));
    assert_eq!(status.pod_ips.unwrap()[0].ip, "ipValue");
    assert!(p.metadata.deletion_timestamp.is_some());
    // What the adapter's metadata watch reads of it.
    let meta: kube::core::PartialObjectMeta<Pod> = serde_json::from_value(fixtures::json(
        "kubernetes/pod_roundtrip_allfields_fuzzed.json",
    ))
    .unwrap();
    assert_eq!(meta.metadata.labels.unwrap()["labelsKey"], "labelsValue");
}

#[test]
fn watch_frames_decode_as_bookmark_and_expired_error() {
    let frames = fixtures::ndjson("kubernetes/watch_bookmark_docs.ndjson");
    assert_eq!(frames.len(), 1);
    match serde_json::from_value::<WatchEvent<Pod>>(frames[0].clone()).unwrap() {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, "12746"),
        other => panic!("expected a bookmark, got {other:?}"),
    }
    let frames = fixtures::ndjson("kubernetes/watch_error_410_expired.ndjson");
    match serde_json::from_value::<WatchEvent<EndpointSlice>>(frames[0].clone()).unwrap() {
        WatchEvent::Error(e) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
            assert!(e.message.starts_with("too old resource version"));
        }
        other => panic!("expected an error frame, got {other:?}"),
    }
}

#[test]
fn the_expired_continue_status_decodes_with_its_fresh_token() {
    let s: Status = decode("kubernetes/list_continue_expired_410_status.json");
    assert_eq!(s.code, Some(410));
    assert_eq!(s.reason.as_deref(), Some("Expired"));
    assert_eq!(
        s.metadata.continue_.as_deref(),
        Some("<NEW_CONTINUE_TOKEN>")
    );
}

#[test]
fn protocols_from_app_protocol_then_the_name_prefix() {
    let t = translator(HostnameForm::Fqdn);
    assert_eq!(t.protocol("grpc-api", None), Protocol::Grpc);
    assert_eq!(t.protocol("http2-x", None), Protocol::Http2);
    assert_eq!(t.protocol("tcp-db", None), Protocol::Tcp);
    assert_eq!(t.protocol("https", None), Protocol::Tcp);
    assert_eq!(t.protocol("web", None), Protocol::Http, "the default");
    assert_eq!(
        t.protocol("http-web", Some("kubernetes.io/h2c")),
        Protocol::Http2
    );
    assert_eq!(t.protocol("tcp-x", Some("grpc")), Protocol::Grpc);
    assert_eq!(
        t.protocol("grpc-x", Some("custom.io/thing")),
        Protocol::Grpc,
        "unknown appProtocol: the name"
    );
}

#[test]
fn conditions_nil_semantics() {
    let ep = |c: serde_json::Value| -> KEndpoint {
        serde_json::from_value(json!({"addresses": ["10.0.0.1"], "conditions": c})).unwrap()
    };
    assert_eq!(
        health(&ep(json!({}))),
        Health::Healthy,
        "ready nil is ready"
    );
    assert_eq!(
        health(&ep(json!({"ready": false}))),
        Health::Unhealthy,
        "serving nil defers to ready"
    );
    assert_eq!(
        health(&ep(json!({"ready": false, "serving": true}))),
        Health::Unhealthy,
        "not terminating"
    );
    assert_eq!(
        health(&ep(json!({"ready": false, "terminating": true}))),
        Health::Unhealthy
    );
    assert_eq!(
        health(&ep(
            json!({"ready": false, "serving": true, "terminating": true})
        )),
        Health::Draining
    );
}

#[test]
fn headless_and_same_named_services_across_namespaces() {
    let svc = |ns: &str| -> KService {
        serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": ns},
            "spec": {"clusterIP": "None", "ports": [{"name": "tcp-pg", "port": 5432}]},
        }))
        .unwrap()
    };
    let slice = |ns: &str, ip: &str| -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "db-1", "namespace": ns, "labels": {SERVICE_NAME_LABEL: "db"}},
            "addressType": "IPv4",
            "ports": [{"name": "tcp-pg", "port": 5432}],
            "endpoints": [{"addresses": [ip]}],
        }))
        .unwrap()
    };
    let (a, b) = (svc("a"), svc("b"));
    let (sa, sb) = (slice("a", "10.0.0.1"), slice("b", "10.0.0.2"));
    let objects = Objects {
        services: vec![&a, &b],
        slices: vec![&sa, &sb],
        ..Objects::default()
    };
    let d = translator(HostnameForm::Name).derive(&objects);
    assert_eq!(d.services.len(), 1, "one mesh service `db`");
    let s = &d.services[&host("db")];
    assert_eq!(s.ports[0].protocol, Protocol::Tcp);
    assert_eq!(
        s.aliases.len(),
        6,
        "both namespaces' names: {:?}",
        s.aliases
    );
    assert_eq!(d.endpoints.len(), 2);
    assert!(d
        .endpoints
        .values()
        .all(|e| e.health == Health::Healthy && e.service == host("db")));
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn node_labels_give_region_and_zone_with_the_beta_fallback() {
    let ga = NodeTopology::from_labels(&labels(&[
        (REGION_LABEL, "us-central1"),
        (ZONE_LABEL, "us-central1-c"),
        (BETA_REGION_LABEL, "old-region"),
        (BETA_ZONE_LABEL, "old-zone"),
    ]));
    assert_eq!(ga.region.as_deref(), Some("us-central1"), "GA label wins");
    assert_eq!(ga.zone.as_deref(), Some("us-central1-c"));
    let beta = NodeTopology::from_labels(&labels(&[
        (BETA_REGION_LABEL, "eu-west-1"),
        (BETA_ZONE_LABEL, "eu-west-1b"),
    ]));
    assert_eq!(
        (beta.region.as_deref(), beta.zone.as_deref()),
        (Some("eu-west-1"), Some("eu-west-1b"))
    );
    let mixed = NodeTopology::from_labels(&labels(&[
        (REGION_LABEL, ""),
        (BETA_REGION_LABEL, "eu-west-1"),
        ("kubernetes.io/hostname", "n1"),
    ]));
    assert_eq!(
        mixed.region.as_deref(),
        Some("eu-west-1"),
        "empty is absent"
    );
    assert_eq!(mixed.zone, None);
    assert_eq!(
        NodeTopology::from_labels(&Labels::new()),
        NodeTopology::default()
    );
}

#[test]
fn locality_zone_from_the_slice_wins_and_region_comes_from_the_node() {
    let node = NodeTopology {
        region: Some("us-central1".into()),
        zone: Some("us-central1-a".into()),
    };
    let l = locality(Some("us-central1-c"), Some(&node));
    assert_eq!(l.region.as_deref(), Some("us-central1"));
    assert_eq!(l.zone.as_deref(), Some("us-central1-c"), "the slice's zone");
    let l = locality(None, Some(&node));
    assert_eq!(l.zone.as_deref(), Some("us-central1-a"), "the node's zone");
    let l = locality(Some(""), Some(&node));
    assert_eq!(l.zone.as_deref(), Some("us-central1-a"), "empty is absent");
    let l = locality(Some("us-central1-c"), None);
    assert_eq!(
        (l.region, l.zone.as_deref(), l.subzone),
        (None, Some("us-central1-c"), None),
        "unknown node: the slice's zone only"
    );
}

#[test]
fn the_docs_slice_takes_its_region_from_the_endpoints_node() {
    let mut v = fixtures::json("kubernetes/endpointslice_terminating_and_ready_docs.json");
    v["metadata"] = json!({"name": "nginx-abc", "namespace": "default",
                           "labels": {SERVICE_NAME_LABEL: "nginx"}});
    v["ports"] = json!([{"name": "http", "port": 80, "protocol": "TCP"}]);
    // Both endpoints share a node in the docs; the second moves to another
    // node and loses its own zone, so that node's zone applies.
    v["endpoints"][1].as_object_mut().unwrap().remove("zone");
    v["endpoints"][1]["nodeName"] = json!("gke-main-default-pool-dca1511c-x2zq");
    let slice: EndpointSlice = serde_json::from_value(v).unwrap();
    let svc: KService = serde_json::from_value(json!({
        "metadata": {"name": "nginx", "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 80}]},
    }))
    .unwrap();
    let node_of = |i: usize| slice.endpoints[i].node_name.clone().unwrap();
    let (n0, n1) = (node_of(0), node_of(1));
    let t0 = NodeTopology::from_labels(&labels(&[
        (REGION_LABEL, "us-central1"),
        (ZONE_LABEL, "us-central1-f"),
    ]));
    let t1 = NodeTopology::from_labels(&labels(&[
        (BETA_REGION_LABEL, "us-central1"),
        (BETA_ZONE_LABEL, "us-central1-b"),
    ]));
    let mut objects = Objects {
        services: vec![&svc],
        slices: vec![&slice],
        nodes: HashMap::from([(n0.as_str(), &t0), (n1.as_str(), &t1)]),
        ..Objects::default()
    };
    let t = translator(HostnameForm::Fqdn);
    let d = t.derive(&objects);
    let a = &d.endpoints["default/nginx/10.12.1.201"].locality;
    let b = &d.endpoints["default/nginx/10.12.1.202"].locality;
    assert_eq!(
        (a.region.as_deref(), a.zone.as_deref()),
        (Some("us-central1"), Some("us-central1-c")),
        "the slice's zone over its node's"
    );
    assert_eq!(
        (b.region.as_deref(), b.zone.as_deref()),
        (Some("us-central1"), Some("us-central1-b")),
        "no slice zone: the node's (beta labels)"
    );
    // Nodes unknown (not read, or not yet listed): the slice's zone only.
    objects.nodes.clear();
    let d = t.derive(&objects);
    let a = &d.endpoints["default/nginx/10.12.1.201"].locality;
    let b = &d.endpoints["default/nginx/10.12.1.202"].locality;
    assert_eq!(
        (a.region.as_deref(), a.zone.as_deref()),
        (None, Some("us-central1-c"))
    );
    assert_eq!(*b, Locality::default());
}

#[test]
fn the_shaped_node_list_gives_topology_with_the_beta_fallback() {
    use k8s_openapi::api::core::v1::Node;
    let list: kube::core::ObjectList<Node> =
        decode("kubernetes/nodelist_topology_labels_shaped.json");
    assert_eq!(list.metadata.resource_version.as_deref(), Some("4521"));
    let got: Vec<(String, NodeTopology)> = list
        .items
        .iter()
        .map(|n| {
            (
                n.metadata.name.clone().unwrap(),
                NodeTopology::from_labels(&n.metadata.labels.clone().unwrap_or_default()),
            )
        })
        .collect();
    let topo = |r: Option<&str>, z: Option<&str>| NodeTopology {
        region: r.map(str::to_string),
        zone: z.map(str::to_string),
    };
    assert_eq!(
        got,
        vec![
            (
                "gke-main-default-pool-dca1511c-d17b".to_string(),
                topo(Some("us-central1"), Some("us-central1-c"))
            ),
            (
                "node-beta-labels-only".to_string(),
                topo(Some("us-central1"), Some("us-central1-f"))
            ),
            ("node-without-topology".to_string(), NodeTopology::default()),
        ]
    );
}

/// The pods of a slice's endpoints give them their mesh proxy; an endpoint
/// whose pod's annotations cannot be used is left out and reported.
#[test]
fn pods_give_endpoints_their_mesh_proxy() {
    use anymesh_core::model::{MeshProxy, DEFAULT_MESH_PORT};
    let svc: KService = serde_json::from_value(json!({
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {"ports": [{"name": "http", "port": 9080}]},
    }))
    .unwrap();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "reviews-x", "namespace": "shop",
                     "labels": {SERVICE_NAME_LABEL: "reviews"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 9080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.1.0.1"], "targetRef": {"kind": "Pod", "namespace": "shop", "name": "r1"}},
            {"addresses": ["10.1.0.2"], "targetRef": {"kind": "Pod", "namespace": "shop", "name": "r2"}},
            {"addresses": ["10.1.0.3"], "targetRef": {"kind": "Pod", "namespace": "shop", "name": "r3"}},
            {"addresses": ["10.1.0.4"]},
        ],
    }))
    .unwrap();
    let pod = |name: &str, labels: serde_json::Value, annotations: serde_json::Value| {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop", "labels": labels, "annotations": annotations},
            "spec": {"serviceAccountName": "bookinfo-reviews", "containers": []},
        }))
        .unwrap();
        PodInfo::from_pod(&p)
    };
    let r1 = pod(
        "r1",
        json!({"security.istio.io/tlsMode": "istio"}),
        json!({}),
    );
    let r2 = pod("r2", json!({}), json!({}));
    let r3 = pod("r3", json!({}), json!({"anymesh.io/inbound-port": "99999"}));
    let objects = Objects {
        services: vec![&svc],
        slices: vec![&slice],
        pods: HashMap::from([
            (("shop", "r1"), &r1),
            (("shop", "r2"), &r2),
            (("shop", "r3"), &r3),
        ]),
        ..Objects::default()
    };
    let d = translator(HostnameForm::Fqdn).derive(&objects);
    assert_eq!(
        d.endpoints["shop/reviews/10.1.0.1"].mesh,
        Some(MeshProxy::new(
            DEFAULT_MESH_PORT,
            Some("shop".into()),
            Some("bookinfo-reviews".into())
        ))
    );
    assert_eq!(d.endpoints["shop/reviews/10.1.0.2"].mesh, None);
    assert_eq!(
        d.endpoints["shop/reviews/10.1.0.4"].mesh, None,
        "no pod known"
    );
    assert!(!d.endpoints.contains_key("shop/reviews/10.1.0.3"));
    assert_eq!(
        d.invalid["endpointslice shop/reviews-x endpoint 2"],
        "endpointslice shop/reviews-x: endpoint 10.1.0.3 of pod shop/r3: annotation \
         anymesh.io/inbound-port \"99999\": not a port number 1..=65535"
    );
}
