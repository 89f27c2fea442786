//! The fixtures and the fake side by side: every file in
//! `adapters/testkit/fixtures/eureka` is decoded by the adapter's public decoder (a
//! new file cannot slip in untested), and the fake Eureka server writes the
//! instance objects those captures show, in both of its dialects.

// Test helpers outside `#[test]` functions: a failed setup step fails the test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use anymesh_adapter_eureka::{decode_applications, Status};
use anymesh_testkit::eureka::Shape;
use anymesh_testkit::{fixtures, FakeEureka, FakeInstance};
use serde_json::Value;

/// Every fixture, with the number of instances it holds.
const FIXTURES: &[(&str, usize)] = &[
    ("app_single_GET_apps_APP_spring_server.json", 1),
    ("apps_delta_modified.json", 1),
    ("apps_empty_registry.xml", 0),
    ("apps_full_2apps_metadata.xml", 4),
    ("apps_full_modern_emptymap_metadata.json", 1),
    ("apps_full_spring_server_compact.json", 1),
    ("apps_mixed_up_down_minimal.json", 2),
    ("apps_one_app_two_instances.json", 2),
    ("apps_single_instance_object_post_v1.2.2.json", 1),
    ("apps_single_instance_object_pre_v1.2.2.json", 1),
    ("apps_two_apps_object_and_array.json", 3),
    // A bare instance object: decoded inside an application document.
    ("instance_both_overriddenstatus_casings.json", 1),
];

#[test]
fn every_fixture_file_decodes() {
    let files = fixtures::files("eureka");
    let listed: Vec<&str> = FIXTURES.iter().map(|(f, _)| *f).collect();
    assert_eq!(files, listed, "a fixture is not decoded here");
    for (file, instances) in FIXTURES {
        let mut body = fixtures::read(&format!("eureka/{file}"));
        if file.starts_with("instance_") {
            body = format!(
                r#"{{"application":{{"name":"FOO","instance":{}}}}}"#,
                String::from_utf8_lossy(&body)
            )
            .into_bytes();
        }
        let apps = decode_applications(&body, None).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(apps.instances.len(), *instances, "{file}: {apps:#?}");
        for i in &apps.instances {
            assert!(!i.app.is_empty(), "{file}: an instance without its app");
            assert_ne!(i.status, Status::Unknown, "{file}: {i:#?}");
        }
    }
}

async fn get(url: String) -> Value {
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    resp.json().await.unwrap()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

/// The first instance of the first application, whether either is an
/// array or a lone object.
fn first_instance(doc: &Value) -> &Value {
    let apps = &doc["applications"]["application"];
    let app = if apps.is_array() { &apps[0] } else { apps };
    let inst = &app["instance"];
    if inst.is_array() {
        &inst[0]
    } else {
        inst
    }
}

#[tokio::test]
async fn the_fake_writes_the_captured_instance_shapes() {
    let e = FakeEureka::start().await;
    e.register(FakeInstance::new("web", "w1", "10.0.0.1", 8080).with_metadata("k", "v"));

    // A current Spring Cloud server: exactly the fields of the capture,
    // ports as numbers, the override camel-cased, timestamps as strings.
    let spring = fixtures::json("eureka/apps_full_spring_server_compact.json");
    let served = get(format!("{}/apps", e.url())).await;
    let (want, got) = (first_instance(&spring), first_instance(&served));
    assert_eq!(keys(got), keys(want), "modern instance fields");
    assert!(served["applications"]["application"][0]["instance"].is_array());
    assert!(got["port"]["$"].is_number() && want["port"]["$"].is_number());
    assert_eq!(got["port"]["@enabled"], "true");
    assert!(got["lastDirtyTimestamp"].is_string() && want["lastDirtyTimestamp"].is_string());
    assert!(served["applications"]["versions__delta"].is_string());
    assert!(decode_applications(served.to_string().as_bytes(), None).is_ok());

    // Eureka 1.1: a lone application and instance as objects, numbers as
    // strings, the lower-case `overriddenstatus`; every field of the capture.
    e.set_shape(Shape::Legacy);
    let old = fixtures::json("eureka/apps_single_instance_object_pre_v1.2.2.json");
    let served = get(format!("{}/apps", e.url())).await;
    let (want, got) = (first_instance(&old), first_instance(&served));
    let missing: Vec<String> = keys(want).difference(&keys(got)).cloned().collect();
    assert!(
        missing.is_empty(),
        "legacy fields the fake omits: {missing:?}"
    );
    assert!(served["applications"]["application"][0]["instance"].is_object());
    assert!(got["port"]["$"].is_string() && want["port"]["$"].is_string());
    assert!(got.get("overriddenstatus").is_some() && got.get("overriddenStatus").is_none());
    assert!(served["applications"]["versions__delta"].is_number());
    let apps = decode_applications(served.to_string().as_bytes(), None).unwrap();
    assert_eq!(apps.instances.len(), 1);
    assert_eq!(apps.instances[0].port.number().unwrap(), 8080);

    // Empty metadata as the modern capture writes it.
    let modern = fixtures::json("eureka/apps_full_modern_emptymap_metadata.json");
    e.set_shape(Shape::Modern);
    e.register(FakeInstance::new("api", "a1", "10.0.0.2", 9090));
    let served = get(format!("{}/apps/API", e.url())).await;
    let got = &served["application"]["instance"][0];
    assert_eq!(got["metadata"], first_instance(&modern)["metadata"]);
}
