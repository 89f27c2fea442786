//! Every payload in `adapters/testkit/fixtures/eureka` decodes, with its fields checked.

use anymesh_testkit::fixtures;

use super::*;

fn decode(rel: &str) -> Applications {
    let body = fixtures::read(&format!("eureka/{rel}"));
    match decode_applications(&body, None) {
        Ok(apps) => apps,
        Err(e) => panic!("{rel}: {e}"),
    }
}

fn only(apps: &Applications) -> &Instance {
    assert_eq!(apps.instances.len(), 1, "{apps:#?}");
    &apps.instances[0]
}

/// The same registry as written by Eureka 1.1 and after 1.2.2: one instance
/// as an object, `versions__delta` and port numbers as numbers or strings.
#[test]
fn single_instance_objects_before_and_after_1_2_2() {
    for rel in [
        "apps_single_instance_object_pre_v1.2.2.json",
        "apps_single_instance_object_post_v1.2.2.json",
    ] {
        let apps = decode(rel);
        assert_eq!(apps.version_delta.as_deref(), Some("1"), "{rel}");
        assert_eq!(apps.hashcode.as_deref(), Some("UP_24_"));
        assert!(apps.problems.is_empty());
        let i = only(&apps);
        assert_eq!(i.app, "TESTENG.METRICSD");
        // No instanceId: the id is the host name, as InstanceInfo.getId.
        assert_eq!(i.id, "192.168.40.94:7101");
        assert_eq!(i.ip_addr.as_deref(), Some("192.168.40.94"));
        assert_eq!(i.status, Status::Up);
        assert_eq!(
            i.overridden_status,
            Some(Status::Up),
            "lowercase overriddenstatus"
        );
        assert_eq!(i.port.number(), Ok(7101), "{rel}");
        assert!(i.port.enabled && i.secure_port.enabled);
        assert_eq!(i.secure_port.number(), Ok(7101));
        assert_eq!(i.action, Some(Action::Modified));
        assert_eq!(i.vip_address.as_deref(), Some("[]"));
        assert_eq!(
            i.metadata.get("base-uri").map(String::as_str),
            Some("https://192.168.40.94:7101")
        );
        assert_eq!(i.metadata.len(), 3);
        let lease = i.lease.as_ref().unwrap();
        assert_eq!(lease.renewal_interval_secs, Some(30));
        assert_eq!(lease.duration_secs, Some(90));
        assert_eq!(lease.registration_timestamp, Some(1402450388650));
        let dc = i.data_center.as_ref().unwrap();
        assert_eq!(dc.name.as_deref(), Some("MyOwn"));
        assert_eq!(
            dc.class.as_deref(),
            Some("com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo")
        );
    }
}

#[test]
fn one_app_with_an_instance_array() {
    let apps = decode("apps_one_app_two_instances.json");
    assert_eq!(apps.instances.len(), 2);
    let ids: Vec<&str> = apps.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["qa16gs.qa.somecompany.com:7100", "qa22gs:7100"]);
    assert!(apps.instances.iter().all(|i| i.app == "TESTENG.LSM"
        && i.port.number() == Ok(7100)
        && i.overridden_status == Some(Status::Unknown)
        && i.effective_status() == Status::Up
        && i.action == Some(Action::Added)));
    assert_eq!(
        apps.instances[1].ip_addr.as_deref(),
        Some("192.168.191.235")
    );
    assert_eq!(
        apps.instances[1].vip_address.as_deref(),
        Some("[test.lax1.qa22]")
    );
}

#[test]
fn object_and_array_in_one_document() {
    let apps = decode("apps_two_apps_object_and_array.json");
    let keys: Vec<String> = apps.instances.iter().map(Instance::key).collect();
    assert_eq!(
        keys,
        [
            "TESTENG.METRICSD/192.168.40.94:7101",
            "TESTENG.LSM/qa16gs.qa.somecompany.com:7100",
            "TESTENG.LSM/qa22gs:7100"
        ]
    );
}

#[test]
fn spring_server_compact_form() {
    let apps = decode("apps_full_spring_server_compact.json");
    assert_eq!(apps.hashcode.as_deref(), Some("UP_1_"));
    let i = only(&apps);
    assert_eq!(i.id, "DESKTOP-SR3A9FI:eurekaconsumer:9002");
    assert_eq!(i.app, "EUREKACONSUMER");
    assert_eq!(
        i.overridden_status,
        Some(Status::Unknown),
        "camel-case overriddenStatus"
    );
    assert_eq!(i.port.number(), Ok(9002));
    assert!(i.port.enabled);
    assert_eq!(i.secure_port.number(), Ok(443));
    assert!(!i.secure_port.enabled);
    assert_eq!(i.secure_vip_address.as_deref(), Some("eurekaconsumer"));
    assert_eq!(
        i.metadata,
        Labels::from([("management.port".into(), "9002".into())])
    );
    assert_eq!(
        i.lease.as_ref().unwrap().last_renewal_timestamp,
        Some(1606977221655)
    );
}

#[test]
fn single_application_document() {
    let apps = decode("app_single_GET_apps_APP_spring_server.json");
    assert_eq!(apps.hashcode, None);
    let i = only(&apps);
    assert_eq!(i.app, "MYMICROSERVICE2");
    assert_eq!(i.id, "10.8.30.55:myMicroservice2:338445840785870848");
    assert_eq!(i.port.number(), Ok(8080));
    assert!(i.secure_port.enabled);
    assert_eq!(i.secure_port.number(), Ok(8443));
    assert_eq!(i.vip_address.as_deref(), Some("MYMICROSERVICE2"));
}

#[test]
fn empty_map_metadata_and_no_overridden_status() {
    let apps = decode("apps_full_modern_emptymap_metadata.json");
    let i = only(&apps);
    assert!(i.metadata.is_empty(), "the @class marker is dropped");
    assert_eq!(i.overridden_status, None);
    assert_eq!(i.effective_status(), Status::Up);
    assert_eq!(i.id, "localhost:foo");
    // Steeltoe's server writes `renewalTimestamp`.
    assert_eq!(
        i.lease.as_ref().unwrap().last_renewal_timestamp,
        Some(1457716158319)
    );
}

#[test]
fn delta_document() {
    let apps = decode("apps_delta_modified.json");
    assert_eq!(apps.version_delta.as_deref(), Some("3"));
    assert_eq!(apps.hashcode.as_deref(), Some("UP_1_"));
    let i = only(&apps);
    assert_eq!(i.action, Some(Action::Modified));
    assert_eq!(i.key(), "FOO/localhost:foo");
    assert_eq!(i.port.number(), Ok(8080));
}

/// Minimal: no versions, no hashcode, no ports (Netflix's defaults apply).
#[test]
fn minimal_up_and_down() {
    let apps = decode("apps_mixed_up_down_minimal.json");
    assert_eq!(apps.version_delta, None);
    assert_eq!(apps.hashcode, None);
    let statuses: Vec<Status> = apps.instances.iter().map(|i| i.status).collect();
    assert_eq!(statuses, [Status::Up, Status::Down]);
    // The application's own name is the key, not the instance's `app`.
    assert_eq!(apps.instances[0].key(), "ignored/id1");
    assert_eq!(apps.instances[0].port.number(), Ok(7001));
    assert!(apps.instances[0].port.enabled);
    assert_eq!(apps.instances[0].secure_port.number(), Ok(7002));
    assert!(!apps.instances[0].secure_port.enabled);
}

/// A bare instance object (`GET /apps/<APP>/<ID>`), read through the
/// application reader: both overridden-status casings, the current one wins.
#[test]
fn both_overridden_status_casings() {
    let body = fixtures::read("eureka/instance_both_overriddenstatus_casings.json");
    let doc = format!(
        r#"{{"application":{{"name":"FOO","instance":{}}}}}"#,
        String::from_utf8_lossy(&body)
    );
    let apps = decode_applications(doc.as_bytes(), None).unwrap();
    let i = only(&apps);
    assert_eq!(i.status, Status::Up);
    assert_eq!(i.overridden_status, Some(Status::OutOfService));
    assert_eq!(i.effective_status(), Status::OutOfService);
    assert!(i.metadata.is_empty());
    assert_eq!(
        i.lease.as_ref().unwrap().eviction_timestamp,
        Some(1457715134123)
    );
    // Each casing alone is read too.
    let legacy = doc.replace(r#""overriddenStatus": "OUT_OF_SERVICE","#, "");
    let apps = decode_applications(legacy.as_bytes(), None).unwrap();
    assert_eq!(only(&apps).overridden_status, Some(Status::Down));
}

#[test]
fn xml_full_registry() {
    let apps = decode("apps_full_2apps_metadata.xml");
    assert_eq!(apps.hashcode.as_deref(), Some("UP_4_"));
    assert_eq!(apps.version_delta.as_deref(), Some("1"));
    assert_eq!(apps.instances.len(), 4);
    let c = &apps.instances[0];
    assert_eq!(
        c.key(),
        "CONFIG-SERVICE/config-service001.test.com:config-service:8080"
    );
    assert_eq!(c.port.number(), Ok(8080));
    assert!(c.port.enabled);
    assert!(!c.secure_port.enabled);
    assert_eq!(c.overridden_status, Some(Status::Unknown));
    assert_eq!(
        c.data_center.as_ref().unwrap().class.as_deref(),
        Some("com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo")
    );
    assert_eq!(c.lease.as_ref().unwrap().duration_secs, Some(90));
    let m = &apps.instances[2];
    assert_eq!(m.app, "META-SERVICE");
    assert_eq!(m.secure_port.number(), Ok(443));
    assert_eq!(m.secure_vip_address.as_deref(), Some("meta-service"));
    assert_eq!(
        m.metadata,
        Labels::from([
            ("management.port".into(), "8090".into()),
            ("project".into(), "meta-service".into())
        ])
    );
    assert_eq!(
        crate::reconcile_hashcode(apps.instances.iter().map(|i| &i.status)),
        "UP_4_"
    );
}

#[test]
fn xml_empty_registry() {
    let apps = decode("apps_empty_registry.xml");
    assert_eq!(apps.hashcode.as_deref(), Some(""));
    assert!(apps.instances.is_empty());
    assert_eq!(crate::reconcile_hashcode([]), "");
}

#[test]
fn xml_attributes_without_enabled_and_empty_metadata() {
    let body = br#"<applications><application><name>A</name><instance>
        <instanceId>a1</instanceId><ipAddr>10.0.0.1</ipAddr><status>UP</status>
        <port>8080</port><securePort>8443</securePort>
        <metadata class="java.util.Collections$EmptyMap"/></instance></application></applications>"#;
    let apps = decode_applications(body, Some("application/xml")).unwrap();
    let i = only(&apps);
    assert!(i.port.enabled, "a port without `enabled` is enabled");
    assert!(
        !i.secure_port.enabled,
        "a securePort without `enabled` is disabled"
    );
    assert!(i.metadata.is_empty());
}

#[test]
fn bad_documents_say_what_is_wrong() {
    let e = decode_applications(b"{\"applications\": ", None).unwrap_err();
    assert!(e.contains("not JSON"), "{e}");
    let e = decode_applications(b"{\"apps\": {}}", None).unwrap_err();
    assert!(
        e.contains("neither `applications` nor `application`"),
        "{e}"
    );
    let e = decode_applications(b"<applications><application>", None).unwrap_err();
    assert!(e.contains("XML"), "{e}");
    // One bad instance does not sink the others.
    let body = br#"{"applications":{"application":{"name":"A","instance":[
        {"instanceId":"a1","ipAddr":"10.0.0.1","status":"UP"}, 42, {"status":"UP"}]}}}"#;
    let apps = decode_applications(body, None).unwrap();
    assert_eq!(apps.instances.len(), 1);
    assert_eq!(apps.problems.len(), 2, "{:?}", apps.problems);
    assert!(
        apps.problems[0].contains("application A instance #2"),
        "{:?}",
        apps.problems
    );
    assert!(apps.problems[1].contains("no instanceId and no hostName"));
}
