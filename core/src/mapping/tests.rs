use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::*;
use crate::model::{EndpointPort, Provenance, SourceId};
use crate::registry::{ChangeSink, Registry, SourceStatus, SourceView};

fn m(yaml: &str) -> Mapping {
    let m: Mapping = serde_yaml_ng::from_str(yaml).unwrap();
    m.validate().unwrap();
    m
}

fn h(s: &str) -> Hostname {
    Hostname::new(s).unwrap()
}

fn labels(kv: &[(&str, &str)]) -> Labels {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ep(service: &str, id: &str, kv: &[(&str, &str)]) -> Endpoint {
    Endpoint {
        service: h(service),
        address: "10.0.0.1".into(),
        ports: vec![EndpointPort {
            name: String::new(),
            number: 80,
        }],
        labels: labels(kv),
        health: Default::default(),
        weight: 1,
        locality: Default::default(),
        mesh: None,
        provenance: Provenance {
            source: SourceId::new("etcd"),
            native_id: id.into(),
            raw_labels: Labels::new(),
        },
    }
}

fn svc(name: &str) -> Service {
    Service {
        hostname: h(name),
        aliases: vec![],
        ports: vec![],
    }
}

fn upsert(mapping: &Mapping, e: Endpoint) -> (Endpoint, Vec<MappingError>) {
    match mapping.apply(Change::UpsertEndpoint(e)) {
        (Some(Change::UpsertEndpoint(e)), p) => (e, p),
        other => panic!("expected an upsert, got {other:?}"),
    }
}

#[test]
fn hostname_rules_alone_and_combined() {
    let e = || ep("web.service.consul", "a", &[("namespace", "Prod")]);
    let strip = m("hostname: {strip_suffix: .Service.Consul}");
    assert_eq!(upsert(&strip, e()).0.service, h("web"));
    let affix = m("hostname: {prefix: edge-, suffix: .mesh}");
    assert_eq!(
        upsert(&affix, e()).0.service,
        h("edge-web.service.consul.mesh")
    );
    let all = m(
        r#"hostname: {strip_suffix: .service.consul, template: "{service}.{namespace}", suffix: .svc}"#,
    );
    assert_eq!(
        upsert(&all, e()).0.service,
        h("web.prod.svc"),
        "lower-cased"
    );
    let empty = m("hostname: {strip_suffix: web.service.consul}");
    assert!(matches!(
        empty.apply(Change::UpsertEndpoint(e())).0,
        Some(Change::RemoveEndpoint(_))
    ));
}

#[test]
fn label_rules() {
    let map = m(r#"
labels:
  key_value_tags: true
  tags: [{match: "^v[0-9]+$", key: version}]
  rename: {ver: version, dc: datacenter}
  drop: [internal-id]
  defaults: {zone: unknown, datacenter: dc0}
"#);
    let l = |kv: &[(&str, &str)]| map.map_labels(labels(kv));
    assert_eq!(l(&[("ver", "v2")])["version"], "v2");
    assert_eq!(l(&[("v2", "")])["version"], "v2");
    assert_eq!(l(&[("version=v2", "")])["version"], "v2");
    assert_eq!(
        l(&[("ver=v3", "")])["version"],
        "v3",
        "a k=v tag, then renamed"
    );
    assert_eq!(
        l(&[("beta", "")])["beta"],
        "",
        "an unmatched tag stays a tag"
    );
    assert_eq!(
        l(&[("version", "v1"), ("v2", "")])["version"],
        "v1",
        "explicit wins"
    );
    let out = l(&[("internal-id", "7"), ("zone", "a")]);
    assert_eq!(
        out,
        labels(&[("datacenter", "dc0"), ("zone", "a")]),
        "dropped, defaulted"
    );
    let off = m(r#"labels: {tags: [{match: "^v[0-9]+$", key: version}]}"#);
    assert_eq!(
        off.map_labels(labels(&[("a=b", "")])),
        labels(&[("a=b", "")])
    );
}

#[test]
fn raw_labels_are_preserved() {
    let map = m("labels: {rename: {ver: version}}");
    let (out, _) = upsert(&map, ep("web", "a", &[("ver", "v2")]));
    assert_eq!(out.labels, labels(&[("version", "v2")]));
    assert_eq!(out.provenance.raw_labels, labels(&[("ver", "v2")]));
    let mut given = ep("web", "a", &[("ver", "v2")]);
    given.provenance.raw_labels = labels(&[("Ver", "v2")]);
    assert_eq!(
        upsert(&map, given).0.provenance.raw_labels,
        labels(&[("Ver", "v2")])
    );
}

#[test]
fn validate_names_the_field() {
    let errs = |yaml: &str| -> Vec<String> {
        let m: Mapping = serde_yaml_ng::from_str(yaml).unwrap();
        m.validate()
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let e = errs(r#"hostname: {template: "{service"}"#);
    assert!(e[0].starts_with("mapping.hostname.template: "), "{e:?}");
    let e = errs(r#"hostname: {template: "{service} x"}"#);
    assert!(e[0].starts_with("mapping.hostname: "), "{e:?}");
    let e = errs(r#"aliases: ["{service}", "{}"]"#);
    assert!(e[0].starts_with("mapping.aliases[1]: "), "{e:?}");
    let e = errs(r#"labels: {tags: [{match: "v(", key: ""}]}"#);
    assert!(e[0].starts_with("mapping.labels.tags[0].match: "), "{e:?}");
    assert!(e[1].starts_with("mapping.labels.tags[0].key: "), "{e:?}");
    assert!(serde_yaml_ng::from_str::<Mapping>("labels: {lowercase: true}").is_err());
    assert!(Mapping::default().is_identity());
    assert!(!m("labels: {drop: [x]}").is_identity());
}

#[test]
fn missing_template_label_drops_and_reports() {
    let map = m(r#"hostname: {template: "{service}.{namespace}"}"#);
    let (out, problems) = map.apply(Change::UpsertEndpoint(ep("web", "a", &[])));
    assert!(matches!(out, Some(Change::RemoveEndpoint(k)) if &*k.native_id == "a"));
    assert_eq!(problems[0].item(), Some("endpoint etcd:a"));
    assert!(
        problems[0].to_string().contains("needs label `namespace`"),
        "{problems:?}"
    );
    let view = SourceView {
        services: vec![],
        endpoints: vec![
            ep("web", "a", &[]),
            ep("web", "b", &[("namespace", "prod")]),
        ],
    };
    let (Some(Change::Reset(v)), problems) = map.apply(Change::Reset(view)) else {
        panic!()
    };
    assert_eq!(v.endpoints.len(), 1);
    assert_eq!(v.endpoints[0].service, h("web.prod"));
    assert_eq!(problems.len(), 1);
}

#[test]
fn views_services_and_removals() {
    let map = m(r#"
hostname: {template: "{service}.{namespace}"}
aliases: ["{service}.{dc}"]
labels: {defaults: {namespace: default}}
"#);
    let mut declared = svc("web");
    declared.aliases = vec![h("www")];
    let view = SourceView {
        services: vec![declared, svc("idle")],
        endpoints: vec![
            ep("web", "a", &[("namespace", "a"), ("dc", "dc1")]),
            ep("web", "b", &[("namespace", "b"), ("dc", "dc2")]),
            ep("api", "c", &[("dc", "dc1")]),
        ],
    };
    let (Some(Change::Reset(v)), problems) = map.apply(Change::Reset(view)) else {
        panic!()
    };
    let names: Vec<(&str, Vec<&str>)> = v
        .services
        .iter()
        .map(|s| {
            (
                s.hostname.as_str(),
                s.aliases.iter().map(Hostname::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("api.default", vec!["api.dc1"]),
            ("idle.default", vec![]),
            ("web.a", vec!["www", "web.dc1"]),
            ("web.b", vec!["www", "web.dc2"]),
        ]
    );
    assert_eq!(
        problems.len(),
        1,
        "idle has no dc for its alias: {problems:?}"
    );
    assert_eq!(
        map.apply(Change::RemoveService(h("web"))).0,
        Some(Change::RemoveService(h("web.default")))
    );
    let key = ep("web", "a", &[]).key();
    assert_eq!(
        map.apply(Change::RemoveEndpoint(key.clone())).0,
        Some(Change::RemoveEndpoint(key))
    );
}

#[test]
fn forwarder_degrades_and_recovers() {
    let map = m(r#"hostname: {template: "{service}.{namespace}"}"#);
    let mut f = forward::Forwarder::new(Arc::new(map));
    let out = f.step(Change::Reset(SourceView {
        services: vec![],
        endpoints: vec![ep("web", "a", &[])],
    }));
    assert!(
        matches!(&out[..], [Change::Reset(v), Change::Status(SourceStatus::Degraded { message })]
        if v.endpoints.is_empty() && message.contains("endpoint etcd:a"))
    );
    let out = f.step(Change::Status(SourceStatus::Healthy));
    assert!(
        matches!(&out[..], [Change::Status(SourceStatus::Degraded { .. })]),
        "{out:?}"
    );
    let out = f.step(Change::UpsertEndpoint(ep(
        "web",
        "a",
        &[("namespace", "x")],
    )));
    assert!(
        matches!(&out[..], [Change::UpsertEndpoint(e), Change::Status(SourceStatus::Healthy)]
        if e.service == h("web.x")),
        "{out:?}"
    );
}

/// A registry that sends a scripted list of changes, then waits for the catalog to close.
struct Scripted(SourceId, Vec<Change>, bool);

#[async_trait]
impl Registry for Scripted {
    fn source(&self) -> &SourceId {
        &self.0
    }
    async fn run(&self, sink: ChangeSink) {
        for c in &self.1 {
            if sink.send(c.clone()).await.is_err() {
                return;
            }
        }
        if self.2 {
            sink.closed().await;
        }
    }
}

#[tokio::test]
async fn mapped_registry_end_to_end() {
    let map = Arc::new(m(r#"
hostname: {suffix: .prod}
aliases: ["{service}"]
labels: {rename: {ver: version}}
"#));
    let script = vec![
        Change::Reset(SourceView {
            services: vec![],
            endpoints: vec![ep("web", "a", &[("ver", "v1")])],
        }),
        Change::Status(SourceStatus::Healthy),
        Change::UpsertEndpoint(ep("api", "b", &[("ver", "v2")])),
        Change::RemoveService(h("web")),
    ];
    let inner: Arc<dyn Registry> = Arc::new(Scripted(SourceId::new("etcd"), script, false));
    let (tx, mut rx) = mpsc::channel(16);
    let wrapped = MappedRegistry::wrap(inner, map);
    let run = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        wrapped.run(ChangeSink::new(SourceId::new("etcd"), tx)),
    );
    run.await.expect("the wrapper stops when the adapter does");
    let mut got = Vec::new();
    while let Ok(c) = rx.try_recv() {
        assert_eq!(c.source.as_str(), "etcd");
        got.push(c.change);
    }
    let Change::Reset(v) = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(v.endpoints[0].service, h("web.prod"));
    assert_eq!(v.endpoints[0].labels, labels(&[("version", "v1")]));
    assert_eq!(
        v.services,
        vec![Service {
            hostname: h("web.prod"),
            aliases: vec![h("web")],
            ports: vec![]
        }]
    );
    assert_eq!(got[1], Change::Status(SourceStatus::Healthy));
    assert_eq!(
        got[2],
        Change::UpsertService(Service {
            hostname: h("api.prod"),
            aliases: vec![h("api")],
            ports: vec![]
        })
    );
    assert!(
        matches!(&got[3], Change::UpsertEndpoint(e) if e.service == h("api.prod") && e.labels["version"] == "v2")
    );
    assert_eq!(got[4], Change::RemoveService(h("web.prod")));
    assert_eq!(got.len(), 5);
}

#[tokio::test]
async fn mapped_registry_stops_when_the_catalog_closes() {
    let map = Arc::new(m("hostname: {suffix: .prod}"));
    let inner: Arc<dyn Registry> = Arc::new(Scripted(SourceId::new("etcd"), vec![], true));
    let (tx, rx) = mpsc::channel(1);
    let wrapped = MappedRegistry::wrap(inner, map);
    drop(rx);
    let run = wrapped.run(ChangeSink::new(SourceId::new("etcd"), tx));
    tokio::time::timeout(std::time::Duration::from_secs(5), run)
        .await
        .expect("the wrapper and the idle adapter stop");
}

#[test]
fn documented_examples() {
    let consul = m(r#"
hostname: {strip_suffix: .service.consul, suffix: .mesh}
aliases: ["{service}.service.consul"]
labels:
  key_value_tags: true
  tags: [{match: "^v[0-9]+$", key: version}]
"#);
    let tags = [("v2", ""), ("canary", ""), ("zone=us-east-1a", "")];
    let view = SourceView {
        services: vec![],
        endpoints: vec![ep("web.service.consul", "a", &tags)],
    };
    let (Some(Change::Reset(v)), p) = consul.apply(Change::Reset(view)) else {
        panic!()
    };
    assert!(p.is_empty());
    assert_eq!(v.services[0].hostname, h("web.mesh"));
    assert_eq!(v.services[0].aliases, [h("web.service.consul")]);
    let want = labels(&[("version", "v2"), ("canary", ""), ("zone", "us-east-1a")]);
    assert_eq!(v.endpoints[0].labels, want);

    let eureka = m(r#"
hostname: {template: "{service}.{namespace}"}
aliases: ["{service}"]
labels: {rename: {ver: version}, drop: [instanceId], defaults: {namespace: default}}
"#);
    let meta = [
        ("ver", "v2"),
        ("namespace", "Prod"),
        ("instanceId", "i-123"),
    ];
    let (e, _) = upsert(&eureka, ep("REVIEWS", "a", &meta));
    assert_eq!(e.service, h("reviews.prod"));
    assert_eq!(
        e.labels,
        labels(&[("version", "v2"), ("namespace", "Prod")])
    );
    assert_eq!(
        upsert(&eureka, ep("REVIEWS", "b", &[])).0.service,
        h("reviews.default")
    );
}
