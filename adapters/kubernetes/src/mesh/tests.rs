use serde_json::json;

use super::*;

fn pod(v: serde_json::Value) -> PodInfo {
    PodInfo::from_pod(&serde_json::from_value::<Pod>(v).unwrap())
}

fn proxy(port: u16, ns: &str, sa: &str) -> Option<MeshProxy> {
    Some(MeshProxy::new(port, Some(ns.into()), Some(sa.into())))
}

#[test]
fn istios_label_or_the_inject_annotation_marks_a_sidecar() {
    let plain =
        pod(json!({"metadata": {"name": "a", "namespace": "shop", "labels": {"app": "a"}}}));
    assert_eq!(plain.mesh, Ok(None));
    assert_eq!(plain.labels["app"], "a");
    let istio = pod(json!({
        "metadata": {"name": "a", "namespace": "shop",
                     "labels": {"security.istio.io/tlsMode": "istio"}},
        "spec": {"serviceAccountName": "reviews", "containers": []},
    }));
    assert_eq!(istio.mesh, Ok(proxy(DEFAULT_MESH_PORT, "shop", "reviews")));
    let disabled = pod(json!({
        "metadata": {"name": "a", "namespace": "shop",
                     "labels": {"security.istio.io/tlsMode": "disabled"}},
    }));
    assert_eq!(disabled.mesh, Ok(None));
    // No service account named: `default`, as the admission controller sets.
    let injected = pod(json!({
        "metadata": {"name": "a", "namespace": "shop",
                     "annotations": {"anymesh.io/inject": "true", "anymesh.io/inbound-port": "15001"}},
    }));
    assert_eq!(injected.mesh, Ok(proxy(15001, "shop", "default")));
    // The deprecated `serviceAccount` when `serviceAccountName` is absent.
    let old = pod(json!({
        "metadata": {"name": "a", "namespace": "shop", "annotations": {"anymesh.io/inject": "True"}},
        "spec": {"serviceAccount": "legacy", "containers": []},
    }));
    assert_eq!(old.mesh, Ok(proxy(DEFAULT_MESH_PORT, "shop", "legacy")));
    let opted_out = pod(json!({
        "metadata": {"name": "a", "namespace": "shop",
                     "labels": {"security.istio.io/tlsMode": "istio"},
                     "annotations": {"anymesh.io/inject": "false"}},
    }));
    assert_eq!(opted_out.mesh, Ok(None));
    let spire = pod(json!({
        "metadata": {"name": "a", "namespace": "shop",
                     "annotations": {"anymesh.io/spiffe-id": "spiffe://corp.example/k8s/reviews"}},
        "spec": {"serviceAccountName": "reviews", "containers": []},
    }));
    assert_eq!(
        spire.mesh,
        Ok(Some(MeshProxy {
            spiffe_id: Some("spiffe://corp.example/k8s/reviews".into()),
            ..MeshProxy::new(
                DEFAULT_MESH_PORT,
                Some("shop".into()),
                Some("reviews".into())
            )
        }))
    );
}

#[test]
fn unusable_annotations_are_errors() {
    let mesh = |annotations: serde_json::Value| {
        pod(json!({"metadata": {"name": "a", "namespace": "shop", "annotations": annotations}}))
            .mesh
    };
    assert_eq!(
        mesh(json!({"anymesh.io/inject": "yes"})),
        Err(r#"annotation anymesh.io/inject "yes": must be "true" or "false""#.into())
    );
    assert_eq!(
        mesh(json!({"anymesh.io/inject": "true", "anymesh.io/inbound-port": "0"})),
        Err(r#"annotation anymesh.io/inbound-port "0": not a port number 1..=65535"#.into())
    );
    assert_eq!(
        mesh(json!({"anymesh.io/inbound-port": "envoy"})),
        Err(r#"annotation anymesh.io/inbound-port "envoy": not a port number 1..=65535"#.into())
    );
    assert_eq!(
        mesh(json!({"anymesh.io/spiffe-id": "cluster.local/ns/shop/sa/a"})),
        Err(r#"annotation anymesh.io/spiffe-id "cluster.local/ns/shop/sa/a": does not start with spiffe://"#.into())
    );
}
