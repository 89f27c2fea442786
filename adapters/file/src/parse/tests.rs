use super::*;

use anymesh_core::Health;

fn p(text: &str) -> Result<SourceView, FileError> {
    parse(Path::new("services.yaml"), text, &SourceId::new("file"))
}

fn host(s: &str) -> Hostname {
    Hostname::new(s).unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const GOOD: &str = r#"
services:
  - name: Reviews
    aliases: [reviews.prod, reviews.default.svc.cluster.local.]
    ports:
      - name: http
        port: 9080
        protocol: http
      - name: grpc
        port: 9090
        protocol: grpc
    endpoints:
      - address: 127.0.0.1
        port: 19081
        labels: {version: v1, tier: "2"}
        health: draining
        weight: 3
        locality: {region: eu-west, zone: eu-west-1a, subzone: rack-7}
        id: reviews-v1-a
      - address: reviews-v2.internal
        ports: {grpc: 19090, http: 19082}
        health: unhealthy
  - name: ratings
    endpoints:
      - address: "::1"
        port: 8000
      - address: 10.0.0.2
        ports: {http: 8001}
  - name: empty
    ports: [{name: tcp, port: 5432, protocol: tcp}]
"#;

#[test]
fn good_file_with_every_field() {
    let view = p(GOOD).unwrap();
    let file = SourceId::new("file");
    let port = |name: &str, number| EndpointPort {
        name: name.into(),
        number,
    };
    let provenance = |id: &str, raw_labels| Provenance {
        source: file.clone(),
        native_id: id.into(),
        raw_labels,
    };
    let expected = SourceView {
        services: vec![
            Service {
                hostname: host("reviews"),
                aliases: vec![
                    host("reviews.prod"),
                    host("reviews.default.svc.cluster.local"),
                ],
                ports: vec![
                    ServicePort {
                        name: "http".into(),
                        number: 9080,
                        protocol: Protocol::Http,
                    },
                    ServicePort {
                        name: "grpc".into(),
                        number: 9090,
                        protocol: Protocol::Grpc,
                    },
                ],
            },
            Service {
                hostname: host("ratings"),
                aliases: vec![],
                ports: vec![ServicePort {
                    name: "http".into(),
                    number: 8000,
                    protocol: Protocol::Http,
                }],
            },
            Service {
                hostname: host("empty"),
                aliases: vec![],
                ports: vec![ServicePort {
                    name: "tcp".into(),
                    number: 5432,
                    protocol: Protocol::Tcp,
                }],
            },
        ],
        endpoints: vec![
            Endpoint {
                service: host("reviews"),
                address: "127.0.0.1".into(),
                ports: vec![port("", 19081)],
                labels: labels(&[("version", "v1"), ("tier", "2")]),
                health: Health::Draining,
                weight: 3,
                locality: Locality {
                    region: Some("eu-west".into()),
                    zone: Some("eu-west-1a".into()),
                    subzone: Some("rack-7".into()),
                },
                mesh: None,
                provenance: provenance("reviews-v1-a", labels(&[("version", "v1"), ("tier", "2")])),
            },
            Endpoint {
                service: host("reviews"),
                address: "reviews-v2.internal".into(),
                // In the service's port order, not the map's.
                ports: vec![port("http", 19082), port("grpc", 19090)],
                labels: Labels::new(),
                health: Health::Unhealthy,
                weight: 1,
                locality: Locality::default(),
                mesh: None,
                provenance: provenance("reviews/reviews-v2.internal:19082", Labels::new()),
            },
            Endpoint {
                service: host("ratings"),
                address: "::1".into(),
                ports: vec![port("", 8000)],
                labels: Labels::new(),
                health: Health::Healthy,
                weight: 1,
                locality: Locality::default(),
                mesh: None,
                provenance: provenance("ratings/[::1]:8000", Labels::new()),
            },
            Endpoint {
                service: host("ratings"),
                address: "10.0.0.2".into(),
                ports: vec![port("http", 8001)],
                labels: Labels::new(),
                health: Health::Healthy,
                weight: 1,
                locality: Locality::default(),
                mesh: None,
                provenance: provenance("ratings/10.0.0.2:8001", Labels::new()),
            },
        ],
    };
    assert_eq!(view, expected);
}

#[test]
fn empty_registry_and_default_port_from_map() {
    assert_eq!(p("services: []\n").unwrap(), SourceView::default());
    let view = p("services:\n  - name: a\n    endpoints:\n      - {address: h, ports: {http: 81}}\n      - {address: h, port: 82}\n").unwrap();
    assert_eq!(view.services[0].ports[0].number, 81);
    assert_eq!(view.endpoints.len(), 2);
    // A service with neither ports nor endpoints has no ports.
    let view = p("services: [{name: a}]").unwrap();
    assert!(view.services[0].ports.is_empty());
}

/// Every broken file, with the exact message an operator sees.
#[test]
fn bad_files_are_reported_with_position() {
    let ep = |extra: &str| {
        format!("services:\n  - name: a\n    endpoints:\n      - address: 1.2.3.4\n{extra}")
    };
    let cases: Vec<(String, &str)> = vec![
        // YAML syntax
        (
            "services:\n  - name: a\n   endpoints: []\n".into(),
            "services.yaml:3:4: did not find expected '-' indicator, while parsing a block collection at line 2 column 3",
        ),
        (
            "services: [\n".into(),
            "services.yaml:2:1: did not find expected node content, while parsing a flow node",
        ),
        (
            // The type error (a list, not a service) comes before the syntax
            // error; the syntax error is reported.
            "services: [[[\n".into(),
            "services.yaml:2:1: did not find expected node content, while parsing a flow node",
        ),
        (
            "services:\n\t- name: a\n".into(),
            "services.yaml:2:1: found character that cannot start any token, while scanning for the next token",
        ),
        // Shape and types
        ("".into(), "services.yaml:1:1: the file is empty; write `services: []` to declare no services"),
        (
            "servces: []\n".into(),
            "services.yaml:1:1: unknown field `servces`, expected `services`",
        ),
        (
            "services: {}\n".into(),
            "services.yaml:1:11: services: invalid type: map, expected a sequence",
        ),
        (
            "services: []\n---\nservices: []\n".into(),
            "services.yaml: deserializing from YAML containing more than one document is not supported",
        ),
        (
            ep("        prot: 7\n"),
            "services.yaml:5:9: services[0].endpoints[0]: unknown field `prot`, expected one of `address`, `port`, `ports`, `labels`, `health`, `weight`, `locality`, `id`, `mesh`",
        ),
        (
            ep("        port: 1\n        locality: {country: x}\n"),
            "services.yaml:6:20: services[0].endpoints[0].locality: unknown field `country`, expected one of `region`, `zone`, `subzone`",
        ),
        (
            ep("        port: 1\n        port: 2\n"),
            "services.yaml:4:9: services[0].endpoints[0]: duplicate field `port`",
        ),
        (
            ep("        port: \"80\"\n"),
            "services.yaml:5:15: services[0].endpoints[0].port: invalid type: string \"80\", expected a port number 1..=65535",
        ),
        (
            ep("        port: 1\n        health: sick\n"),
            "services.yaml:6:17: services[0].endpoints[0].health: unknown variant `sick`, expected one of `healthy`, `unhealthy`, `draining`",
        ),
        (
            "services:\n  - name: a\n    ports: [{name: http, port: 1, protocol: https}]\n".into(),
            "services.yaml:3:45: services[0].ports[0].protocol: unknown variant `https`, expected one of `http`, `http2`, `grpc`, `tcp`",
        ),
        // Single values
        (
            "services:\n  - name: a b\n".into(),
            "services.yaml:2:11: services[0].name: invalid hostname \"a b\": only letters, digits, '-', '_' and '.' are allowed",
        ),
        (
            "services:\n  - name: a\n    aliases: [b, c..d]\n".into(),
            "services.yaml:3:18: services[0].aliases[1]: invalid hostname \"c..d\": empty label",
        ),
        (
            ep("        port: 0\n"),
            "services.yaml:5:15: services[0].endpoints[0].port: must be 1..=65535, got 0",
        ),
        (
            ep("        port: 1\n        mesh: {port: 0}\n"),
            "services.yaml:6:22: services[0].endpoints[0].mesh.port: must be 1..=65535, got 0",
        ),
        (
            ep("        port: 1\n        mesh: {port: \"15006\"}\n"),
            "services.yaml:6:22: services[0].endpoints[0].mesh.port: invalid type: string \"15006\", expected a port number 1..=65535",
        ),
        (
            ep("        port: 1\n        mesh: {namespace: \"shop/x\"}\n"),
            "services.yaml:6:27: services[0].endpoints[0].mesh.namespace: \"shop/x\" may hold only letters, digits, '.', '-' and '_'",
        ),
        (
            ep("        port: 1\n        mesh: {service_account: \"\"}\n"),
            "services.yaml:6:33: services[0].endpoints[0].mesh.service_account: \"\" must not be empty",
        ),
        (
            ep("        port: 1\n        mesh: {spiffe_id: cluster.local/ns/a/sa/b}\n"),
            "services.yaml:6:27: services[0].endpoints[0].mesh.spiffe_id: \"cluster.local/ns/a/sa/b\" is not a SPIFFE ID: does not start with spiffe://",
        ),
        (
            ep("        port: 1\n        mesh: {prt: 1}\n"),
            "services.yaml:6:16: services[0].endpoints[0].mesh: unknown field `prt`, expected one of `port`, `namespace`, `service_account`, `spiffe_id`",
        ),
        (
            ep("        port: 70000\n"),
            "services.yaml:5:15: services[0].endpoints[0].port: must be 1..=65535, got 70000",
        ),
        (
            ep("        port: -1\n"),
            "services.yaml:5:15: services[0].endpoints[0].port: must be 1..=65535, got -1",
        ),
        (
            "services:\n  - name: a\n    ports: [{name: http, port: 65536}]\n".into(),
            "services.yaml:3:32: services[0].ports[0].port: must be 1..=65535, got 65536",
        ),
        (
            ep("        ports: {http: 0}\n"),
            "services.yaml:5:23: services[0].endpoints[0].ports.http: must be 1..=65535, got 0",
        ),
        (
            ep("        port: 1\n        weight: 0\n"),
            "services.yaml:6:17: services[0].endpoints[0].weight: must be 1..=4294967295, got 0",
        ),
        (
            "services:\n  - name: a\n    endpoints:\n      - address: \"[::1]\"\n        port: 1\n".into(),
            "services.yaml:4:18: services[0].endpoints[0].address: \"[::1]\" is not an IP address; write IPv6 addresses without brackets",
        ),
        (
            "services:\n  - name: a\n    endpoints:\n      - address: a/b\n        port: 1\n".into(),
            "services.yaml:4:18: services[0].endpoints[0].address: \"a/b\" is neither an IP address nor a DNS name: only letters, digits, '-', '_' and '.' are allowed",
        ),
        (
            ep("        port: 1\n        labels: {version: 2}\n"),
            "services.yaml:6:27: services[0].endpoints[0].labels.version: label values are strings; quote it: \"2\"",
        ),
        (
            ep("        port: 1\n        labels: {v: a, v: b}\n"),
            "services.yaml:6:17: services[0].endpoints[0].labels: duplicate key `v`",
        ),
        // Consistency
        (
            ep("        port: 1\n        ports: {http: 2}\n"),
            "services.yaml:4:9: services[0].endpoints[0]: has both `port` and `ports`; use one",
        ),
        (
            ep(""),
            "services.yaml:4:9: services[0].endpoints[0]: needs `port` or `ports`",
        ),
        (
            ep("        ports: {}\n"),
            "services.yaml:5:16: services[0].endpoints[0].ports: must name at least one port",
        ),
        (
            ep("        ports: {grpc: 2}\n"),
            "services.yaml:5:23: services[0].endpoints[0].ports.grpc: service `a` declares no port named `grpc` (declared: only the default `http`)",
        ),
        (
            "services:\n  - name: a\n    ports: [{name: http, port: 80}, {name: admin, port: 81}]\n    endpoints:\n      - address: h\n        ports: {http: 1, grpc: 2}\n".into(),
            "services.yaml:6:32: services[0].endpoints[0].ports.grpc: service `a` declares no port named `grpc` (declared: http, admin)",
        ),
        (
            "services:\n  - name: a\n    ports: []\n".into(),
            "services.yaml:3:12: services[0].ports: must declare at least one port (leave `ports` out for the default)",
        ),
        (
            "services:\n  - name: a\n    ports: [{name: http, port: 1}, {name: http, port: 2}]\n".into(),
            "services.yaml:3:43: services[0].ports[1].name: duplicate port name `http` (also ports[0])",
        ),
        (
            "services:\n  - name: a\n    ports: [{name: http, port: 1}, {name: b, port: 1}]\n".into(),
            "services.yaml:3:52: services[0].ports[1].port: duplicate port number 1 (also ports[0])",
        ),
        (
            "services:\n  - name: a\n    ports: [{name: \"\", port: 1}]\n".into(),
            "services.yaml:3:20: services[0].ports[0].name: must not be empty",
        ),
        (
            "services:\n  - name: a\n  - name: b\n  - name: A.\n".into(),
            "services.yaml:4:11: services[2].name: hostname `a` is already used by services[0].name",
        ),
        (
            "services:\n  - name: a\n  - name: b\n    aliases: [a]\n".into(),
            "services.yaml:4:15: services[1].aliases[0]: hostname `a` is already used by services[0].name",
        ),
        (
            "services:\n  - name: a\n    endpoints:\n      - {address: h, port: 1}\n      - {address: h, port: 1}\n".into(),
            "services.yaml:5:9: services[0].endpoints[1]: duplicate endpoint id `a/h:1`, also used by services[0].endpoints[0] (the default id; set `id` to tell them apart)",
        ),
        (
            "services:\n  - name: a\n    endpoints: [{address: h, port: 1, id: x}]\n  - name: b\n    endpoints: [{address: h, port: 1, id: x}]\n".into(),
            "services.yaml:5:43: services[1].endpoints[0].id: duplicate endpoint id `x`, also used by services[0].endpoints[0]",
        ),
        (
            ep("        port: 1\n        id: \"\"\n"),
            "services.yaml:6:13: services[0].endpoints[0].id: must not be empty",
        ),
    ];
    let mut failures = Vec::new();
    for (text, want) in &cases {
        match p(text) {
            Ok(view) => failures.push(format!("accepted:\n{text}\n  as {view:?}")),
            Err(e) if e.to_string() != *want => {
                failures.push(format!("file:\n{text}\n  want: {want}\n  got:  {e}"))
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn syntax_errors_are_typed_with_position() {
    match p("services:\n  - name: a\n   endpoints: []\n") {
        Err(FileError::Syntax { at, .. }) => assert_eq!(at, Position { line: 3, column: 4 }),
        other => panic!("want a syntax error, got {other:?}"),
    }
    match p("services:\n  - name: a\n    ports: [{name: http, port: 0}]\n") {
        Err(FileError::Invalid { at, .. }) => {
            assert_eq!(
                at,
                Some(Position {
                    line: 3,
                    column: 32
                })
            )
        }
        other => panic!("want an invalid-value error, got {other:?}"),
    }
}

#[test]
fn load_reports_io_problems() {
    let dir = tempfile::tempdir().unwrap();
    let file = SourceId::new("file");
    let missing = dir.path().join("missing.yaml");
    let err = load(&missing, &file).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}: cannot read: ", missing.display())),
        "{err}"
    );
    // A directory opens but cannot be read.
    let err = load(dir.path(), &file).unwrap_err();
    assert!(matches!(err, FileError::Read { .. }), "{err}");

    let bad = dir.path().join("latin1.yaml");
    std::fs::write(&bad, b"services:\n  - name: caf\xe9\n").unwrap();
    assert_eq!(
        load(&bad, &file).unwrap_err().to_string(),
        format!("{}:2:14: not valid UTF-8", bad.display())
    );

    let good = dir.path().join("good.yaml");
    std::fs::write(&good, GOOD).unwrap();
    assert_eq!(load(&good, &file).unwrap(), p(GOOD).unwrap());
}

#[test]
fn oversized_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(MAX_FILE_BYTES + 1).unwrap();
    let err = load(&big, &SourceId::new("file")).unwrap_err();
    assert!(matches!(err, FileError::TooLarge { .. }), "{err}");
}

/// Truncations and corruptions of a good file: all must be answered, none may panic.
#[test]
fn mangled_files_never_panic() {
    let ends: Vec<usize> = GOOD.char_indices().map(|(i, _)| i).collect();
    for &end in &ends {
        let _ = p(&GOOD[..end]);
    }
    for &at in ends.iter().step_by(3) {
        for c in [
            '\t', ':', '-', '[', '{', '"', '\'', '&', '*', '!', '\n', '0', '%', '|', '>', '?',
        ] {
            let mut text = GOOD.to_string();
            let next = text[at..].chars().next().map_or(0, char::len_utf8);
            text.replace_range(at..at + next, &c.to_string());
            let _ = p(&text);
        }
    }
    for text in [
        "services: *a",
        "services: &a [*a]",
        "a: &a [*a, *a]\nservices: []",
        "services: !!binary aGVsbG8=",
        "services: [!tag {name: a}]",
        "services:\n  - name: a\n    endpoints: [{address: h, port: 18446744073709551616}]",
        "services:\n  - <<: {name: a}\n",
        "? [a]\n: b\n",
        format!("services: {}", "[".repeat(100_000)).as_str(),
        format!("services: {}{}", "[".repeat(10_000), "]".repeat(10_000)).as_str(),
        format!("services:\n  - {}", "- ".repeat(10_000)).as_str(),
        "services:\n  - name: a\n    ports:\n      - {name: http, port: 1, protocol: !tcp x}\n",
    ] {
        let _ = p(text);
    }
}

#[test]
fn deep_nesting_is_rejected_quickly() {
    let t = std::time::Instant::now();
    let deep = format!("services: {}", "[".repeat(1_000_000));
    assert_eq!(
        p(&deep).unwrap_err().to_string(),
        "services.yaml:1:75: `[` and `{` nested more than 64 deep"
    );
    // Generous: the unguarded parser takes minutes on this.
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    // Brackets in comments and quoted strings do not count.
    let brackets = "[".repeat(100);
    let text = format!(
        "# {brackets}\nservices: # {brackets}\n  - name: a\n    endpoints:\n      - address: h\n        port: 1\n        labels: {{a: '{brackets}', b: \"\\\"{brackets}\"}}\n"
    );
    let view = p(&text).unwrap();
    assert_eq!(view.endpoints[0].labels["b"], format!("\"{brackets}"));
}

#[test]
fn mesh_proxies_are_read_with_their_defaults() {
    let view = p(r#"
services:
  - name: reviews
    endpoints:
      - {address: 10.0.0.1, port: 9080}
      - {address: 10.0.0.2, port: 9080, mesh: {}}
      - address: 10.0.0.3
        port: 9080
        mesh: {port: 15001, namespace: shop, service_account: reviews}
      - address: 10.0.0.4
        port: 9080
        mesh: {spiffe_id: "spiffe://example.org/workload/reviews"}
"#)
    .unwrap();
    let mesh: Vec<Option<MeshProxy>> = view.endpoints.into_iter().map(|e| e.mesh).collect();
    assert_eq!(
        mesh,
        [
            None,
            Some(MeshProxy::new(DEFAULT_MESH_PORT, None, None)),
            Some(MeshProxy::new(
                15001,
                Some("shop".into()),
                Some("reviews".into())
            )),
            Some(MeshProxy {
                port: DEFAULT_MESH_PORT,
                spiffe_id: Some("spiffe://example.org/workload/reviews".into()),
                ..MeshProxy::default()
            }),
        ]
    );
}

/// The example in docs/file-registry.md is a valid file.
#[test]
fn documented_example_parses() {
    let doc = include_str!("../../../../docs/file-registry.md");
    let start = doc.find("```yaml\n").unwrap() + "```yaml\n".len();
    let len = doc[start..].find("```").unwrap();
    let view = p(&doc[start..start + len]).unwrap();
    assert_eq!(view.services.len(), 1);
    assert_eq!(view.endpoints.len(), 2);
    assert_eq!(
        view.endpoints[1].provenance.native_id,
        "reviews/10.0.0.12:19081"
    );
    assert_eq!(
        view.endpoints[1].mesh,
        Some(MeshProxy::new(
            15006,
            Some("shop".into()),
            Some("reviews".into())
        ))
    );
}

/// The example of the doc's mesh proxy section is a valid file, with the
/// proxies it describes.
#[test]
fn documented_mesh_example_parses() {
    let doc = include_str!("../../../../docs/file-registry.md");
    let section = &doc[doc.find("### Mesh proxy (mTLS)").unwrap()..];
    let start = section.find("```yaml\n").unwrap() + "```yaml\n".len();
    let len = section[start..].find("```").unwrap();
    let view = p(&section[start..start + len]).unwrap();
    let mesh: Vec<_> = view.endpoints.iter().map(|e| e.mesh.clone()).collect();
    assert_eq!(
        mesh,
        [
            Some(MeshProxy::new(
                DEFAULT_MESH_PORT,
                Some("shop".into()),
                Some("reviews".into())
            )),
            Some(MeshProxy {
                port: 15001,
                spiffe_id: Some("spiffe://corp.example/vm/reviews-2".into()),
                ..MeshProxy::default()
            }),
            None,
        ]
    );
}
