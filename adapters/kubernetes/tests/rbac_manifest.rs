//! `integration/kubernetes/rbac.yaml` deserializes into k8s-openapi types
//! and grants exactly what the registry reads: get, list and watch on
//! Services, Pods, Nodes, EndpointSlices and Istio's routing resources.

// A failed setup step fails the test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::Deserialize;

fn manifest() -> Vec<serde_yaml_ng::Value> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../integration/kubernetes/rbac.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde_yaml_ng::Value::deserialize(doc).unwrap())
        .collect()
}

fn of_kind<T: serde::de::DeserializeOwned>(docs: &[serde_yaml_ng::Value], kind: &str) -> T {
    let doc = docs
        .iter()
        .find(|d| d.get("kind").and_then(|k| k.as_str()) == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} in rbac.yaml"));
    serde_yaml_ng::from_value(doc.clone()).unwrap_or_else(|e| panic!("{kind}: {e}"))
}

#[test]
fn the_rbac_manifest_is_valid_and_least_privilege() {
    let docs = manifest();
    assert_eq!(
        docs.len(),
        3,
        "a ServiceAccount, a ClusterRole and its binding"
    );
    let sa: ServiceAccount = of_kind(&docs, "ServiceAccount");
    let role: ClusterRole = of_kind(&docs, "ClusterRole");
    let binding: ClusterRoleBinding = of_kind(&docs, "ClusterRoleBinding");

    let mut granted = BTreeSet::new();
    for rule in role.rules.clone().unwrap() {
        let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
        assert_eq!(
            verbs,
            BTreeSet::from(["get", "list", "watch"]),
            "read-only: {rule:?}"
        );
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for group in rule.api_groups.clone().unwrap() {
            for resource in rule.resources.clone().unwrap() {
                assert!(
                    !group.contains('*') && !resource.contains('*'),
                    "no wildcards"
                );
                granted.insert((group.clone(), resource));
            }
        }
    }
    let want: BTreeSet<(String, String)> = [
        ("", "services"),
        ("", "pods"),
        ("", "nodes"),
        ("discovery.k8s.io", "endpointslices"),
        ("networking.istio.io", "virtualservices"),
        ("networking.istio.io", "destinationrules"),
    ]
    .into_iter()
    .map(|(g, r)| (g.to_string(), r.to_string()))
    .collect();
    assert_eq!(granted, want);

    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(
        Some(binding.role_ref.name.as_str()),
        role.metadata.name.as_deref()
    );
    let subjects = binding.subjects.unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    assert_eq!(Some(&subjects[0].name), sa.metadata.name.as_ref());
    assert_eq!(subjects[0].namespace, sa.metadata.namespace);
}
