use anymesh_core::{Health, SourceId};

use super::*;
use crate::config::EurekaConfig;
use crate::decode::decode_applications;

fn tr() -> Translator {
    Translator::new(
        SourceId::new("eureka"),
        &EurekaConfig::new(["http://e/eureka"]),
    )
}

fn inst(app: &str, id: &str, ip: &str, status: &str, action: &str) -> String {
    format!(
        r#"{{"instanceId":"{id}","app":"{app}","ipAddr":"{ip}","hostName":"{id}.local","status":"{status}",
            "port":{{"$":8080,"@enabled":"true"}},"vipAddress":"{vip}","metadata":{{"version":"v1"}},
            "actionType":"{action}"}}"#,
        vip = app.to_lowercase() + "-vip"
    )
}

fn doc(hash: &str, apps: &[(&str, Vec<String>)]) -> Applications {
    let apps: Vec<String> = apps
        .iter()
        .map(|(name, insts)| format!(r#"{{"name":"{name}","instance":[{}]}}"#, insts.join(",")))
        .collect();
    let body = format!(
        r#"{{"applications":{{"versions__delta":"1","apps__hashcode":"{hash}","application":[{}]}}}}"#,
        apps.join(",")
    );
    decode_applications(body.as_bytes(), None).unwrap()
}

fn synced() -> State {
    let full = doc(
        "DOWN_1_UP_1_",
        &[(
            "WEB",
            vec![
                inst("WEB", "w1", "10.0.0.1", "UP", "ADDED"),
                inst("WEB", "w2", "10.0.0.2", "DOWN", "ADDED"),
            ],
        )],
    );
    let (state, changes, next) = State::Empty.step(Input::Full(full), &tr());
    assert_eq!(next, Next::Poll);
    match &changes[..] {
        [Change::Reset(view), Change::Status(SourceStatus::Healthy)] => {
            assert_eq!(view.services.len(), 1);
            assert_eq!(view.services[0].hostname.as_str(), "web");
            assert_eq!(view.services[0].aliases[0].as_str(), "web-vip");
            let health: Vec<Health> = view.endpoints.iter().map(|e| e.health).collect();
            assert_eq!(
                health,
                [Health::Healthy, Health::Unhealthy],
                "DOWN is reported, not used"
            );
            assert_eq!(
                view.endpoints[1].provenance.raw_labels["eureka.status"],
                "DOWN"
            );
        }
        other => panic!("{other:?}"),
    }
    state
}

#[test]
fn a_delta_with_a_matching_hashcode_is_applied() {
    let delta = doc(
        "UP_4_",
        &[
            (
                "WEB",
                vec![
                    inst("WEB", "w2", "10.0.0.2", "UP", "MODIFIED"),
                    inst("WEB", "w3", "10.0.0.3", "UP", "ADDED"),
                ],
            ),
            ("API", vec![inst("API", "a1", "10.0.1.1", "UP", "ADDED")]),
        ],
    );
    let (state, changes, next) = synced().step(Input::Delta(delta), &tr());
    assert_eq!(next, Next::Poll);
    let kinds: Vec<String> = changes
        .iter()
        .map(|c| match c {
            Change::UpsertService(s) => format!("service {}", s.hostname),
            Change::UpsertEndpoint(e) => {
                format!("upsert {} {:?}", e.provenance.native_id, e.health)
            }
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "service api",
            "upsert API/a1 Healthy",
            "upsert WEB/w2 Healthy",
            "upsert WEB/w3 Healthy"
        ]
    );

    // DELETED removes the instance, and the application with its last one.
    let delta = doc(
        "UP_3_",
        &[("API", vec![inst("API", "a1", "10.0.1.1", "UP", "DELETED")])],
    );
    let (_, changes, next) = state.step(Input::Delta(delta), &tr());
    assert_eq!(next, Next::Poll);
    assert!(
        matches!(&changes[..], [Change::RemoveEndpoint(k), Change::RemoveService(h)]
            if &*k.native_id == "API/a1" && h.as_str() == "api"),
        "{changes:?}"
    );
}

#[test]
fn a_hashcode_mismatch_sends_nothing_and_asks_for_a_full_fetch() {
    let before = synced();
    // The server's registry has 3 UP instances; the delta lost one.
    let delta = doc(
        "UP_3_",
        &[("WEB", vec![inst("WEB", "w2", "10.0.0.2", "UP", "MODIFIED")])],
    );
    let (state, changes, next) = before.clone().step(Input::Delta(delta), &tr());
    assert!(changes.is_empty(), "{changes:?}");
    assert!(
        matches!(&next, Next::Refetch(r) if r.contains("\"UP_2_\"") && r.contains("\"UP_3_\"")),
        "{next:?}"
    );
    assert_eq!(state, before, "the mismatching delta is not kept");
    // A delta without a hashcode cannot be checked either.
    let mut delta = doc("", &[]);
    delta.hashcode = None;
    let (_, _, next) = before.step(Input::Delta(delta), &tr());
    assert!(matches!(next, Next::Refetch(_)));
}

#[test]
fn version_minus_one_and_an_empty_registry_are_fetched_in_full() {
    assert!(synced().wants_delta());
    let mut full = doc(
        "UP_1_",
        &[("WEB", vec![inst("WEB", "w1", "10.0.0.1", "UP", "ADDED")])],
    );
    full.version_delta = Some("-1".into());
    let (state, _, _) = State::Empty.step(Input::Full(full), &tr());
    assert!(!state.wants_delta());
    let (state, _, _) = State::Empty.step(Input::Full(doc("", &[])), &tr());
    assert!(!state.wants_delta());
}

#[test]
fn failures_keep_the_view_and_deltas_need_a_full_fetch_first() {
    let (state, changes, next) = synced().step(Input::Failed("down".into()), &tr());
    assert_eq!(state, State::Empty);
    assert_eq!(next, Next::Backoff);
    assert!(
        matches!(&changes[..], [Change::Status(SourceStatus::Error { message })] if message == "down")
    );
    let (state, changes, next) = state.step(Input::Delta(doc("", &[])), &tr());
    assert_eq!(state, State::Empty);
    assert!(changes.is_empty() && matches!(next, Next::Refetch(_)));
}

#[test]
fn instances_without_an_endpoint_degrade_the_source_and_still_count() {
    let full = doc(
        "UP_2_",
        &[
            ("WEB", vec![inst("WEB", "w1", "10.0.0.1", "UP", "ADDED")]),
            (
                "BAD NAME",
                vec![inst("BAD NAME", "b1", "10.0.0.9", "UP", "ADDED")],
            ),
        ],
    );
    let (state, changes, _) = State::Empty.step(Input::Full(full), &tr());
    match &changes[..] {
        [Change::Reset(view), Change::Status(SourceStatus::Degraded { message })] => {
            assert_eq!(view.endpoints.len(), 1);
            assert!(
                message.contains("BAD NAME/b1") && message.contains("application name"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    // The skipped instance still counts in the hashcode: this delta applies.
    let delta = doc(
        "UP_2_",
        &[("WEB", vec![inst("WEB", "w1", "10.0.0.5", "UP", "MODIFIED")])],
    );
    let (_, changes, next) = state.step(Input::Delta(delta), &tr());
    assert_eq!(next, Next::Poll);
    assert!(matches!(&changes[..], [Change::UpsertEndpoint(e)] if e.address == "10.0.0.5"));
}

#[test]
fn fixtures_translate_to_endpoints() {
    let body = anymesh_testkit::fixtures::read("eureka/apps_full_spring_server_compact.json");
    let full = decode_applications(&body, None).unwrap();
    let (_, changes, _) = State::Empty.step(Input::Full(full), &tr());
    let Change::Reset(view) = &changes[0] else {
        panic!("{changes:?}")
    };
    let ep = &view.endpoints[0];
    assert_eq!(ep.service.as_str(), "eurekaconsumer");
    assert_eq!(ep.authority(ep.ports[0].number), "10.8.30.55:9002");
    assert_eq!(ep.health, Health::Healthy);
    assert_eq!(ep.labels["management.port"], "9002");
    let raw = &ep.provenance.raw_labels;
    assert_eq!(raw["eureka.datacenter"], "MyOwn");
    assert_eq!(raw["eureka.lease.duration_secs"], "90");
    assert_eq!(raw["eureka.overriddenstatus"], "UNKNOWN");
    assert_eq!(
        ep.provenance.native_id,
        "EUREKACONSUMER/DESKTOP-SR3A9FI:eurekaconsumer:9002"
    );
    // The VIP equals the hostname: no alias.
    assert!(view.services[0].aliases.is_empty());

    // Host names with a port suffix, and a disabled port.
    let mut cfg = EurekaConfig::new(["http://e/eureka"]);
    cfg.address = crate::AddressField::HostName;
    cfg.port = crate::PortChoice::SecurePort;
    let t = Translator::new(SourceId::new("eureka"), &cfg);
    let body = anymesh_testkit::fixtures::read("eureka/apps_one_app_two_instances.json");
    let apps = decode_applications(&body, None).unwrap();
    let ep = t.endpoint(&apps.instances[1]).unwrap();
    assert_eq!((ep.address.as_str(), ep.ports[0].number), ("qa22gs", 7100));
    let body = anymesh_testkit::fixtures::read("eureka/apps_full_modern_emptymap_metadata.json");
    let apps = decode_applications(&body, None).unwrap();
    let ep = t.endpoint(&apps.instances[0]).unwrap();
    assert_eq!(ep.health, Health::Unhealthy, "securePort is disabled");
}
