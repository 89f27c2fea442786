use anymesh_core::{EndpointPort, Health, Labels, Locality, SourceId};

use super::*;
use crate::fixture;
use crate::state::{Input, Kv};

fn decoder(prefix: &str, default_port: Option<u16>) -> Decoder {
    Decoder::new(SourceId::new("etcd"), Layout::new(prefix), default_port)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn listed_kvs(name: &str) -> Vec<Kv> {
    match fixture::range(name) {
        Input::Listed { kvs, .. } => kvs,
        other => panic!("{other:?}"),
    }
}

/// Every value of the captured range, decoded as the fixture README documents.
#[test]
fn captured_range_values() {
    let d = decoder("foo/bar/", None);
    let kvs = listed_kvs("range_prefix_with_slash.json");
    let got: Vec<_> = kvs.iter().map(|kv| d.decode(&kv.key, &kv.value)).collect();
    let problem = |i: usize| got[i].clone().unwrap_err();

    // The etcdctl form from the etcd docs: no Op, Metadata a string.
    assert_eq!(
        problem(0).to_string(),
        "etcd key `foo/bar/my-service/1.2.3.4`: `Metadata` must be null or an object of \
         strings to map to labels, got a string"
    );
    let ep = got[1].clone().unwrap().unwrap();
    assert_eq!(ep.service.as_str(), "my-service");
    assert_eq!(ep.address, "10.0.0.1");
    assert_eq!(
        ep.ports,
        vec![EndpointPort {
            name: String::new(),
            number: 8080
        }]
    );
    assert!(ep.labels.is_empty());
    assert_eq!((ep.health, ep.weight), (Health::Healthy, 1));
    assert_eq!(ep.provenance.native_id, "foo/bar/my-service/10.0.0.1:8080");
    let ep = got[2].clone().unwrap().unwrap();
    let want = labels(&[("version", "v2"), ("zone", "zone-a")]);
    assert_eq!(
        (ep.labels.clone(), ep.provenance.raw_labels),
        (want.clone(), want)
    );
    assert_eq!(problem(3).key, "foo/bar/my-service/bad-value");
    assert!(matches!(problem(3).problem, Problem::NotJson(_)));
}

/// The Go package reads its target without the slash and also gets
/// `my-service-canary/...`; anymesh's layout keeps the two services apart,
/// whichever way the prefix is written.
#[test]
fn prefix_without_slash_never_mixes_services() {
    assert_eq!(Layout::new("foo/bar").prefix(), "foo/bar/");
    assert_eq!(Layout::new("foo/bar/").prefix(), "foo/bar/");
    assert_eq!(Layout::new("").prefix(), "");
    let d = decoder("foo/bar", None);
    let kvs = listed_kvs("range_prefix_without_slash_quirk.json");
    let services: Vec<String> = kvs
        .iter()
        .filter_map(|kv| d.decode(&kv.key, &kv.value).ok().flatten())
        .map(|e| format!("{} {}", e.service, e.address))
        .collect();
    assert_eq!(
        services,
        vec![
            "my-service-canary 10.0.0.9",
            "my-service 10.0.0.1",
            "my-service 10.0.0.2"
        ]
    );
    // A key that is not <prefix><service>/<instance>.
    let e = d.decode(b"foo/bar/lonely", b"{}").unwrap_err();
    assert_eq!(
        e.to_string(),
        "etcd key `foo/bar/lonely`: the key is not `foo/bar/<service>/<instance>`"
    );
    assert!(matches!(
        d.decode(b"foo/barista/x/y", b"{}").unwrap_err().problem,
        Problem::KeyLayout { .. }
    ));
}

#[test]
fn addresses_with_and_without_ports() {
    let ok = |addr: &str, port: Option<u16>| {
        let v = format!(r#"{{"Op":0,"Addr":"{addr}","Metadata":null}}"#);
        decoder("s/", port)
            .decode(b"s/web/x", v.as_bytes())
            .map(|e| e.map(|e| (e.address, e.ports[0].number)))
    };
    assert_eq!(ok("10.0.0.1:80", None), Ok(Some(("10.0.0.1".into(), 80))));
    assert_eq!(ok("[::1]:8443", None), Ok(Some(("::1".into(), 8443))));
    assert_eq!(
        ok("db.internal:5432", None),
        Ok(Some(("db.internal".into(), 5432)))
    );
    // `1.2.3.14` from the watch capture: no port.
    assert_eq!(
        ok("1.2.3.14", Some(443)),
        Ok(Some(("1.2.3.14".into(), 443)))
    );
    let err = |addr: &str| ok(addr, None).unwrap_err().to_string();
    assert_eq!(
        err("1.2.3.14"),
        "etcd key `s/web/x`: address `1.2.3.14` has no port (add `:port`, or set `default_port`)"
    );
    assert!(
        err("10.0.0.1:http").contains("the port is not a number in 1..=65535"),
        "{}",
        err("10.0.0.1:http")
    );
    assert!(err("10.0.0.1:0").contains("port 0"));
    assert!(err("[::1:80").contains("not a valid `[IPv6]:port`"));
    assert!(err("not an address:80").contains("the host is not an IP address or DNS name"));
}

#[test]
fn metadata_must_be_a_flat_string_map() {
    let d = decoder("s/", None);
    let e = d
        .decode(
            b"s/web/x",
            br#"{"Addr":"10.0.0.1:80","Metadata":{"zone":{"name":"a"}}}"#,
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "etcd key `s/web/x`: `Metadata.zone` must be a string to map to a label, got an object"
    );
    let e = d
        .decode(
            b"s/web/x",
            br#"{"Addr":"10.0.0.1:80","Metadata":{"weight":50}}"#,
        )
        .unwrap_err();
    assert!(
        e.to_string().contains("`Metadata.weight` must be a string"),
        "{e}"
    );
    // Op 1 (a delete written as a value) serves nothing; other ops are errors.
    assert_eq!(
        d.decode(b"s/web/x", br#"{"Op":1,"Addr":"10.0.0.1:80"}"#),
        Ok(None)
    );
    let e = d
        .decode(b"s/web/x", br#"{"Op":7,"Addr":"10.0.0.1:80"}"#)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("`Op` must be 0 (add) or 1 (delete), got 7"),
        "{e}"
    );
    let e = d.decode(b"s/web/x", br#"{"Addr":8080}"#).unwrap_err();
    assert!(
        e.to_string()
            .contains("`Addr` must be a string, got a number"),
        "{e}"
    );
}

#[test]
fn bad_values_name_the_key() {
    let d = decoder("s/", None);
    let msg = |v: &[u8]| d.decode(b"s/web/x", v).unwrap_err().to_string();
    assert!(msg(b"not-json").starts_with("etcd key `s/web/x`: the value is not JSON: "));
    assert_eq!(
        msg(b"[1]"),
        "etcd key `s/web/x`: the value is not a JSON object"
    );
    assert!(msg(b"{}").contains("neither `Addr`"));
    assert!(msg(br#"{"Addr":"a:1","address":"a"}"#).contains("both `Addr` and `address`"));
    let e = d
        .decode(b"s/Not A Host/x", br#"{"Addr":"a:1"}"#)
        .unwrap_err();
    assert!(matches!(e.problem, Problem::ServiceName(_)), "{e}");
    let e = d.decode(b"s/web/\xff", b"{}").unwrap_err();
    assert_eq!(e.problem, Problem::KeyNotUtf8);
}

#[test]
fn service_names_are_lower_cased() {
    let e = decoder("s/", None)
        .decode(b"s/Reviews/x", br#"{"Addr":"10.0.0.1:80"}"#)
        .unwrap()
        .unwrap();
    assert_eq!(e.service.as_str(), "reviews");
}

#[test]
fn native_format() {
    let d = decoder("s/", None);
    let e = d
        .decode(
            b"s/reviews/v2-a",
            br#"{"address":"10.0.0.1","ports":{"http":8080,"grpc":9090},"labels":{"version":"v2"},
                "health":"draining","weight":3,"locality":{"zone":"eu-1a"}}"#,
        )
        .unwrap()
        .unwrap();
    assert_eq!(e.address, "10.0.0.1");
    assert_eq!(
        e.ports,
        vec![
            EndpointPort {
                name: "grpc".into(),
                number: 9090
            },
            EndpointPort {
                name: "http".into(),
                number: 8080
            },
        ]
    );
    assert_eq!(e.labels, labels(&[("version", "v2")]));
    assert_eq!((e.health, e.weight), (Health::Draining, 3));
    assert_eq!(
        e.locality,
        Locality {
            zone: Some("eu-1a".into()),
            ..Locality::default()
        }
    );
    let e = d
        .decode(b"s/r/x", br#"{"address":"r.internal","port":80}"#)
        .unwrap()
        .unwrap();
    assert_eq!(
        (e.ports[0].name.as_str(), e.ports[0].number, e.weight),
        ("", 80, 1)
    );

    let msg = |v: &[u8]| d.decode(b"s/r/x", v).unwrap_err().to_string();
    assert_eq!(
        msg(br#"{"address":"10.0.0.1","port":80,"labels":{"zone":{"a":1}}}"#),
        "etcd key `s/r/x`: `labels.zone`: invalid type: map, expected a string"
    );
    assert!(msg(br#"{"address":"10.0.0.1","port":80,"colour":"red"}"#)
        .contains("unknown field `colour`"));
    assert!(msg(br#"{"address":"10.0.0.1"}"#).contains("needs `port` or `ports`"));
    assert!(msg(br#"{"address":"10.0.0.1","port":1,"ports":{"a":2}}"#)
        .contains("both `port` and `ports`"));
    assert!(msg(br#"{"address":"10.0.0.1","ports":{"http":0}}"#)
        .contains("`ports.http`: must be 1..=65535"));
    assert!(msg(br#"{"address":"10.0.0.1","port":70000}"#).contains("`port`"));
    assert!(msg(br#"{"address":"10.0.0.1:80","port":80}"#).contains("address `10.0.0.1:80`"));
    assert!(msg(br#"{"address":"10.0.0.1","port":80,"health":"sick"}"#).contains("`health`"));
}

#[test]
fn mesh_proxies_in_both_formats() {
    use anymesh_core::model::{MeshProxy, DEFAULT_MESH_PORT};
    let d = decoder("s/", None);
    let mesh = |v: &[u8]| d.decode(b"s/r/x", v).unwrap().unwrap().mesh;
    assert_eq!(mesh(br#"{"address":"10.0.0.1","port":80}"#), None);
    assert_eq!(
        mesh(br#"{"address":"10.0.0.1","port":80,"mesh":{}}"#),
        Some(MeshProxy::new(DEFAULT_MESH_PORT, None, None))
    );
    assert_eq!(
        mesh(
            br#"{"address":"10.0.0.1","port":80,
                 "mesh":{"port":15001,"namespace":"shop","service_account":"reviews"}}"#
        ),
        Some(MeshProxy::new(
            15001,
            Some("shop".into()),
            Some("reviews".into())
        ))
    );
    assert_eq!(
        mesh(br#"{"address":"10.0.0.1","port":80,"mesh":{"spiffe_id":"spiffe://td/x/y"}}"#),
        Some(MeshProxy {
            port: DEFAULT_MESH_PORT,
            spiffe_id: Some("spiffe://td/x/y".into()),
            ..MeshProxy::default()
        })
    );
    assert_eq!(
        mesh(br#"{"Addr":"10.0.0.1:80","Metadata":{"version":"v1"}}"#),
        None
    );
    let ep = d
        .decode(
            b"s/r/x",
            br#"{"Addr":"10.0.0.1:80","Metadata":{"anymesh.proxy-port":"15001",
                 "anymesh.namespace":"shop","anymesh.service-account":"reviews"}}"#,
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        ep.mesh,
        Some(MeshProxy::new(
            15001,
            Some("shop".into()),
            Some("reviews".into())
        ))
    );
    assert_eq!(ep.labels["anymesh.namespace"], "shop", "still labels too");
    assert_eq!(
        mesh(br#"{"Addr":"10.0.0.1:80","Metadata":{"anymesh.spiffe-id":"spiffe://td/w"}}"#),
        Some(MeshProxy {
            port: DEFAULT_MESH_PORT,
            spiffe_id: Some("spiffe://td/w".into()),
            ..MeshProxy::default()
        })
    );

    let msg = |v: &[u8]| d.decode(b"s/r/x", v).unwrap_err().to_string();
    for (value, want) in [
        (
            &br#"{"address":"10.0.0.1","port":80,"mesh":{"port":0}}"#[..],
            "etcd key `s/r/x`: `mesh.port`: must be 1..=65535, got 0",
        ),
        (
            br#"{"address":"10.0.0.1","port":80,"mesh":{"port":70000}}"#,
            "etcd key `s/r/x`: `mesh.port`: invalid value: integer `70000`, expected u16",
        ),
        (
            br#"{"address":"10.0.0.1","port":80,"mesh":{"namespace":"a/b"}}"#,
            "etcd key `s/r/x`: `mesh.namespace`: \"a/b\" may hold only letters, digits, '.', '-' and '_'",
        ),
        (
            br#"{"address":"10.0.0.1","port":80,"mesh":{"spiffe_id":"td/x"}}"#,
            "etcd key `s/r/x`: `mesh.spiffe_id`: \"td/x\" is not a SPIFFE ID: does not start with spiffe://",
        ),
        (
            br#"{"address":"10.0.0.1","port":80,"mesh":{"prot":1}}"#,
            "etcd key `s/r/x`: `mesh.prot`: unknown field `prot`, expected one of `port`, `namespace`, `service_account`, `spiffe_id`",
        ),
        (
            br#"{"Addr":"10.0.0.1:80","Metadata":{"anymesh.proxy-port":"abc"}}"#,
            "etcd key `s/r/x`: `Metadata.anymesh.proxy-port` \"abc\": not a port number 1..=65535",
        ),
    ] {
        assert_eq!(msg(value), want);
    }
}
