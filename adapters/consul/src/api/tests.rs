//! Every payload in `adapters/testkit/fixtures/consul` decodes, with its fields checked.

use anymesh_core::{Health, SourceId};
use anymesh_testkit::fixtures;

use super::*;
use crate::config::AddressFrom;
use crate::decode::Decoder;

fn read(name: &str) -> Vec<u8> {
    fixtures::read(&format!("consul/{name}"))
}

fn health(name: &str) -> Vec<ServiceEntry> {
    match health_service(&read(name)) {
        Ok(v) => v,
        Err(e) => panic!("{name}: {e}"),
    }
}

fn decoder() -> Decoder {
    Decoder::new(SourceId::new("consul"))
}

#[test]
fn every_fixture_file_is_covered() {
    fixtures::assert_each_named("consul", &[include_str!("tests.rs")]);
}

#[test]
fn health_service_current_shape() {
    let entries = health("health_service_docs_current.json");
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.node.node, "foobar");
    assert_eq!(e.node.datacenter.as_deref(), Some("dc1"));
    assert_eq!(e.node.meta["instance_type"], "t2.medium");
    assert_eq!(e.node.tagged_addresses["wan"], "10.1.10.12");
    assert_eq!(e.service.tags, ["primary"]);
    assert_eq!(e.service.meta["redis_version"], "4.0");
    // Lower-case `address`/`port` as the documentation writes them.
    assert_eq!(
        e.service.tagged_addresses["wan"],
        ServiceAddress {
            address: "198.18.1.2".into(),
            port: 80
        }
    );
    assert_eq!(e.service.weights.map(|w| w.passing), Some(10));
    assert_eq!(e.service.namespace.as_deref(), Some("default"));
    assert_eq!(e.checks.len(), 2);
    assert_eq!(e.checks[1].check_id, "serfHealth");
    assert_eq!(aggregate(&e.checks), Status::Passing);

    let ep = decoder().endpoint(e).unwrap();
    assert_eq!(ep.service.as_str(), "redis");
    assert_eq!(ep.address, "10.1.10.12");
    assert_eq!(ep.ports[0].number, 8000);
    assert_eq!(ep.health, Health::Healthy);
    assert_eq!(ep.weight, 10);
    assert_eq!(ep.provenance.native_id, "foobar/redis");
    assert_eq!(ep.labels["redis_version"], "4.0");
    assert_eq!(ep.labels["instance_type"], "t2.medium", "node meta");
    assert_eq!(ep.labels["primary"], "", "a tag is a label without a value");

    let wan = Decoder {
        address_from: AddressFrom::Wan,
        ..decoder()
    };
    let ep = wan.endpoint(e).unwrap();
    assert_eq!(
        (ep.address.as_str(), ep.ports[0].number),
        ("198.18.1.2", 80)
    );
    let lan6 = Decoder {
        address_from: AddressFrom::LanIpv6,
        ..decoder()
    };
    let ep = lan6.endpoint(e).unwrap();
    assert_eq!(
        ep.address, "10.1.10.12",
        "no lan_ipv6 anywhere: the default"
    );
}

#[test]
fn health_service_legacy_shape_with_null_tags() {
    let entries = health("health_service_docs_legacy_tags_null.json");
    let e = &entries[0];
    assert!(e.service.tags.is_empty());
    assert!(e.service.address.is_empty());
    assert!(e.service.meta.is_empty() && e.service.tagged_addresses.is_empty());
    assert_eq!(e.checks[0].service_id, "redis");
    assert!(e.checks[0].service_tags.is_empty());
    let ep = decoder().endpoint(e).unwrap();
    assert_eq!(ep.address, "10.1.10.12", "the node's address");
    assert!(ep.labels.is_empty());
}

#[test]
fn health_service_critical_service_check_is_unhealthy() {
    let entries = health("health_service_legacy_critical_service_check.json");
    let e = &entries[0];
    assert_eq!(e.checks[0].status, "critical");
    assert_eq!(e.checks[1].output, "Agent alive and reachable");
    assert_eq!(aggregate(&e.checks), Status::Critical);
    let ep = decoder().endpoint(e).unwrap();
    assert_eq!(ep.health, Health::Unhealthy);
    assert_eq!(
        (ep.address.as_str(), ep.ports[0].number),
        ("127.0.0.1", 4567)
    );
    assert_eq!(ep.service.as_str(), "example_failed");
}

#[test]
fn health_service_serf_only_with_empty_address() {
    let entries = health("health_service_serf_only_no_service_checks_empty_address.json");
    let e = &entries[0];
    assert_eq!(e.checks.len(), 1);
    assert_eq!(e.node.meta["rack_name"], "2304");
    assert_eq!(e.node.create_index, 1);
    assert_eq!(e.service.modify_index, 1);
    let ep = decoder().endpoint(e).unwrap();
    assert_eq!(ep.health, Health::Healthy);
    assert_eq!(ep.address, "1.1.1.1", "empty Service.Address: the node's");
    assert_eq!(ep.ports[0].number, 3341);
    assert_eq!(ep.labels["version"], "1.0.0");
    assert_eq!(ep.labels["environment"], "staging");
    assert_eq!(ep.labels["rack_name"], "2304");
    assert_eq!(ep.labels["tag1"], "");
    let lan = Decoder {
        address_from: AddressFrom::Lan,
        ..decoder()
    };
    let ep = lan.endpoint(e).unwrap();
    assert_eq!(
        (ep.address.as_str(), ep.ports[0].number),
        ("192.168.10.10", 3341),
        "the node's tagged address with the service's port"
    );
}

#[test]
fn health_service_unknown_is_empty() {
    assert!(health("health_service_unknown_service_empty.json").is_empty());
}

#[test]
fn agent_health_shapes() {
    let both: Vec<AgentServiceHealth> = serde_json::from_slice(&read(
        "agent_health_service_name_web_passing_and_critical.json",
    ))
    .unwrap();
    assert_eq!(both.len(), 2);
    assert_eq!(both[0].aggregated_status, "passing");
    assert!(both[0].checks.is_empty());
    assert_eq!(aggregate(&both[0].checks), Status::Passing);
    // Capitalised `Address`/`Port`, as the agent writes them.
    assert_eq!(
        both[1].service.tagged_addresses["wan"],
        ServiceAddress {
            address: "198.51.100.54".into(),
            port: 80
        }
    );
    assert_eq!(aggregate(&both[1].checks), Status::Critical);
    assert!(both[1].checks[0].output.contains("connection refused"));

    let one: AgentServiceHealth =
        serde_json::from_slice(&read("agent_health_service_id_web1_passing_no_checks.json"))
            .unwrap();
    assert_eq!(one.service.id, "web1");
    assert_eq!(one.service.datacenter.as_deref(), Some("dc1"));
    assert_eq!(one.service.tagged_addresses["lan"].port, 8000);
    let two: AgentServiceHealth =
        serde_json::from_slice(&read("agent_health_service_id_web2_critical.json")).unwrap();
    assert_eq!(two.aggregated_status, "critical");
    assert_eq!(two.checks[0].check_id, "service:web2");
    assert_eq!(two.checks[0].service_tags, ["rails"]);
}

#[test]
fn catalog_shapes() {
    let services = catalog_services(&read("catalog_services_docs.json")).unwrap();
    assert_eq!(services.len(), 3);
    assert!(services["consul"].is_empty());
    assert_eq!(services["postgresql"], ["primary", "secondary"]);
    assert!(catalog_services(br#"{"a": null}"#).unwrap()["a"].is_empty());

    let flat: Vec<CatalogService> =
        serde_json::from_slice(&read("catalog_service_web_docs.json")).unwrap();
    let c = &flat[0];
    assert_eq!(c.service_id, "32a2a47f7992:nodea:5000");
    assert_eq!(
        (c.service_address.as_str(), c.service_port),
        ("172.17.0.3", 5000)
    );
    assert_eq!(c.node_meta["somekey"], "somevalue");
    assert_eq!(c.service_meta["web_meta_value"], "baz");
    assert_eq!(c.service_tagged_addresses["wan"].port, 512);
    assert_eq!(c.service_tags, ["prod"]);
    assert_eq!(c.create_index, 51);
}

#[test]
fn catalog_response_with_consistency_headers() {
    let text = String::from_utf8(read("catalog_services_http_response_headers_docs.txt")).unwrap();
    let (head, body) = text
        .split_once("\n\n{")
        .expect("headers, a blank line, a body");
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .map(str::trim)
    };
    assert_eq!(header("X-Consul-Effective-Consistency"), Some("leader"));
    assert_eq!(header("X-Consul-KnownLeader"), Some("true"));
    assert_eq!(header("X-Consul-LastContact"), Some("0"));
    let services = catalog_services(format!("{{{body}").as_bytes()).unwrap();
    assert_eq!(services.len(), 2);
    assert_eq!(services["postgresql"], ["primary", "secondary"]);
}

#[test]
fn maintenance_outranks_everything_and_unknown_counts_as_critical() {
    let check = |id: &str, status: &str| HealthCheck {
        check_id: id.into(),
        status: status.into(),
        ..HealthCheck::default()
    };
    let maint = check("_service_maintenance:web1", "critical");
    assert_eq!(
        aggregate(&[check("a", "passing"), maint]),
        Status::Maintenance
    );
    assert_eq!(
        aggregate(&[check(NODE_MAINTENANCE, "critical")]),
        Status::Maintenance
    );
    assert_eq!(
        aggregate(&[check("a", "warning"), check("b", "passing")]),
        Status::Warning
    );
    assert_eq!(aggregate(&[check("a", "bogus")]), Status::Critical);
    assert_eq!(aggregate(&[]), Status::Passing);
}

#[test]
fn bad_entries_are_named() {
    let mut e = health("health_service_docs_legacy_tags_null.json").remove(0);
    e.node.address.clear();
    let err = decoder().endpoint(&e).unwrap_err();
    assert!(
        err.contains("foobar/redis") && err.contains("address"),
        "{err}"
    );
    e.node.address = "10.0.0.1".into();
    e.service.port = 0;
    assert!(decoder().endpoint(&e).unwrap_err().contains("no port"));
    e.service.port = 1;
    e.service.service = "not a host".into();
    assert!(decoder()
        .endpoint(&e)
        .unwrap_err()
        .contains("mesh hostname"));
}

#[test]
fn warning_is_opt_in_and_uses_the_warning_weight() {
    let mut e = health("health_service_docs_current.json").remove(0);
    e.checks[0].status = "warning".into();
    assert_eq!(decoder().endpoint(&e).unwrap().health, Health::Unhealthy);
    let lenient = Decoder {
        include_warning: true,
        ..decoder()
    };
    let ep = lenient.endpoint(&e).unwrap();
    assert_eq!((ep.health, ep.weight), (Health::Healthy, 1));
}

#[test]
fn port_name_and_protocol_from_meta_declare_the_service() {
    let mut e = health("health_service_docs_current.json").remove(0);
    assert_eq!(decoder().service("redis", std::slice::from_ref(&e)).0, None);
    e.service.meta.insert("protocol".into(), "grpc".into());
    e.service.meta.insert("port_name".into(), "rpc".into());
    let (svc, problem) = decoder().service("redis", std::slice::from_ref(&e));
    let svc = svc.unwrap();
    assert!(problem.is_none());
    assert_eq!(svc.ports[0].name, "rpc");
    assert_eq!(svc.ports[0].number, 8000);
    assert_eq!(svc.ports[0].protocol, anymesh_core::Protocol::Grpc);
    assert_eq!(decoder().endpoint(&e).unwrap().ports[0].name, "rpc");
    e.service
        .meta
        .insert("protocol".into(), "carrier-pigeon".into());
    let (_, problem) = decoder().service("redis", std::slice::from_ref(&e));
    assert!(problem.unwrap().contains("carrier-pigeon"));
}

/// A Connect sidecar registration as the agent documents it: `Kind`,
/// its own `Port`, and `Proxy` naming the instance it fronts.
#[test]
fn a_connect_sidecar_registration_as_documented() {
    let svc: AgentService =
        serde_json::from_slice(&read("agent_service_web_sidecar_proxy_docs.json")).unwrap();
    assert_eq!(svc.kind, CONNECT_PROXY);
    assert_eq!((svc.id.as_str(), svc.port), ("web-sidecar-proxy", 18080));
    assert_eq!(svc.address, "", "the node's address");
    assert_eq!(
        svc.proxy,
        Some(ConnectProxy {
            destination_service_name: "web".into(),
            destination_service_id: "web".into(),
            local_service_address: "127.0.0.1".into(),
            local_service_port: 8080,
        })
    );
}

/// The sidecar as `health/service` lists it is no endpoint but the sidecar
/// of instance `web` on its node, on the node's address and its own port.
#[test]
fn a_sidecar_in_a_health_answer_fronts_its_instance() {
    let entries = health("health_service_web_sidecar_proxy_shaped.json");
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert!(Decoder::is_proxy(e));
    assert_eq!(e.checks.len(), 3);
    assert_eq!(aggregate(&e.checks), Status::Passing);
    let sc = decoder().sidecar(e).unwrap();
    assert_eq!(
        sc,
        crate::decode::Sidecar {
            proxy: "foobar/web-sidecar-proxy".into(),
            fronts: "foobar/web".into(),
            destination: "web".into(),
            address: "10.1.10.12".into(),
            port: 18080,
            unhealthy: false,
        }
    );
    // A typical service's entry (`Proxy: {}` included) is no sidecar.
    for name in [
        "health_service_docs_current.json",
        "health_service_serf_only_no_service_checks_empty_address.json",
    ] {
        for e in health(name) {
            assert!(
                !Decoder::is_proxy(&e) && decoder().sidecar(&e).is_none(),
                "{name}"
            );
        }
    }
}
