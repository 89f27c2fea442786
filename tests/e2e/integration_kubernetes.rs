//! `integration/kubernetes/`: the sidecar and per-node manifests and the CRDs
//! deserialize into k8s-openapi types, run the proxy with the configuration
//! they mount, and that configuration (and its routing) is valid for anymesh.

use std::path::{Path, PathBuf};

use anymesh::settings::{RegistryKind, Settings};
use anymesh_core::config;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize;

fn manifest(name: &str) -> Vec<serde_yaml_ng::Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("integration/kubernetes")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| serde_yaml_ng::Value::deserialize(doc).expect("a YAML document"))
        .collect()
}

fn all_of<T: serde::de::DeserializeOwned>(docs: &[serde_yaml_ng::Value], kind: &str) -> Vec<T> {
    docs.iter()
        .filter(|d| d.get("kind").and_then(|k| k.as_str()) == Some(kind))
        .map(|d| serde_yaml_ng::from_value(d.clone()).unwrap_or_else(|e| panic!("{kind}: {e}")))
        .collect()
}

fn config_map<'a>(maps: &'a [ConfigMap], name: &str) -> &'a ConfigMap {
    maps.iter()
        .find(|m| m.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no ConfigMap {name}"))
}

/// Checks a pod that runs anymesh: its container, the ConfigMaps it mounts,
/// and that the mounted anymesh.yaml and routing files are valid.
fn check_pod(spec: &PodSpec, maps: &[ConfigMap], routing: &[ConfigMap]) -> Container {
    assert_eq!(
        spec.service_account_name.as_deref(),
        Some("anymesh"),
        "the account of rbac.yaml"
    );
    let proxy = spec
        .containers
        .iter()
        .find(|c| c.name == "anymesh")
        .expect("an anymesh container")
        .clone();
    assert_eq!(
        proxy.args.as_deref(),
        Some(
            &[
                "proxy".to_string(),
                "-c".into(),
                "/etc/anymesh/anymesh.yaml".into()
            ][..]
        )
    );
    let security = proxy.security_context.clone().expect("a security context");
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(security.read_only_root_filesystem, Some(true));
    let mounts = proxy.volume_mounts.clone().unwrap_or_default();
    let volumes = spec.volumes.clone().unwrap_or_default();
    let map_of = |mount_path: &str| {
        let m = mounts
            .iter()
            .find(|m| m.mount_path == mount_path)
            .unwrap_or_else(|| panic!("nothing mounted at {mount_path}"));
        let v = volumes
            .iter()
            .find(|v| v.name == m.name)
            .unwrap_or_else(|| panic!("no volume {}", m.name));
        v.config_map.as_ref().map(|c| c.name.clone())
    };
    // The configuration the proxy reads.
    let settings_map = map_of("/etc/anymesh/anymesh.yaml").expect("config from a ConfigMap");
    let text = config_map(maps, &settings_map)
        .data
        .as_ref()
        .and_then(|d| d.get("anymesh.yaml"))
        .expect("anymesh.yaml in the ConfigMap");
    let settings = Settings::parse(Path::new("/etc/anymesh/anymesh.yaml"), text)
        .unwrap_or_else(|e| panic!("{settings_map}: {e:#}"));
    assert!(
        settings
            .registries
            .iter()
            .any(|r| matches!(r.kind, RegistryKind::Kubernetes(_))),
        "a kubernetes registry"
    );
    assert_eq!(settings.routing, [PathBuf::from("/etc/anymesh/routing")]);
    assert!(map_of("/var/lib/anymesh").is_none(), "state on an emptyDir");
    // The routing it mounts is valid Istio YAML for anymesh.
    let routing_map = map_of("/etc/anymesh/routing").expect("routing from a ConfigMap");
    let files = config_map(routing, &routing_map)
        .data
        .clone()
        .expect("routing files");
    let dir = tempfile::tempdir().expect("temp dir");
    let paths: Vec<PathBuf> = files
        .iter()
        .map(|(name, text)| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write routing file");
            p
        })
        .collect();
    let (set, diagnostics) = config::load_files(&paths);
    assert!(!config::has_errors(&diagnostics), "{diagnostics:?}");
    assert!(!set.virtual_services.is_empty() && !set.destination_rules.is_empty());
    proxy
}

#[test]
fn sidecar_manifest_runs_anymesh_beside_the_app() {
    let docs = manifest("sidecar.yaml");
    let maps: Vec<ConfigMap> = all_of(&docs, "ConfigMap");
    let deployments: Vec<Deployment> = all_of(&docs, "Deployment");
    assert_eq!(deployments.len(), 1);
    let spec = deployments[0]
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("pod spec");
    assert_eq!(spec.containers.len(), 2, "the app and its sidecar");
    let app = spec
        .containers
        .iter()
        .find(|c| c.name == "app")
        .expect("app");
    let proxy_env = app.env.clone().unwrap_or_default();
    assert!(proxy_env
        .iter()
        .any(|e| e.name == "http_proxy" && e.value.as_deref() == Some("http://127.0.0.1:15001")));
    let proxy = check_pod(&spec, &maps, &maps);
    let probe = proxy.readiness_probe.expect("readiness probe");
    assert_eq!(
        probe.http_get.and_then(|g| g.path).as_deref(),
        Some("/ready")
    );
}

#[test]
fn per_node_manifest_runs_one_proxy_per_node() {
    let docs = manifest("per-node.yaml");
    let maps: Vec<ConfigMap> = all_of(&docs, "ConfigMap");
    // The routing ConfigMap is the sidecar manifest's.
    let routing: Vec<ConfigMap> = all_of(&manifest("sidecar.yaml"), "ConfigMap");
    let sets: Vec<DaemonSet> = all_of(&docs, "DaemonSet");
    assert_eq!(sets.len(), 1);
    let spec = sets[0]
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("pod spec");
    assert_eq!(spec.host_network, Some(true));
    let proxy = check_pod(&spec, &maps, &routing);
    let ports = proxy.ports.unwrap_or_default();
    assert!(ports
        .iter()
        .any(|p| p.container_port == 15001 && p.host_port == Some(15001)));
}

#[test]
fn crds_define_the_istio_routing_resources() {
    let docs = manifest("crds.yaml");
    let crds: Vec<CustomResourceDefinition> = all_of(&docs, "CustomResourceDefinition");
    let mut kinds: Vec<String> = crds.iter().map(|c| c.spec.names.kind.clone()).collect();
    kinds.sort();
    assert_eq!(kinds, ["DestinationRule", "VirtualService"]);
    for crd in &crds {
        assert_eq!(crd.spec.group, "networking.istio.io");
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some(format!("{}.networking.istio.io", crd.spec.names.plural).as_str())
        );
        let served: Vec<&str> = crd
            .spec
            .versions
            .iter()
            .filter(|v| v.served)
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(
            served,
            ["v1", "v1beta1", "v1alpha3"],
            "the versions anymesh parses"
        );
        let stored: Vec<&str> = crd
            .spec
            .versions
            .iter()
            .filter(|v| v.storage)
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(stored, ["v1"]);
    }
}
