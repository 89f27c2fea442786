//! Every payload in `adapters/testkit/fixtures/marathon` decodes, with its fields
//! checked, and translates the way the fixtures README says it must.

use anymesh_core::{Health, SourceId};
use anymesh_testkit::fixtures;

use super::*;
use crate::config::MarathonConfig;
use crate::sse::SseParser;
use crate::translate::{task_state, Networking, Translator};

fn apps(rel: &str) -> AppList {
    let list = decode_apps(&fixtures::read(&format!("marathon/{rel}")))
        .unwrap_or_else(|e| panic!("{rel}: {e}"));
    assert!(list.problems.is_empty(), "{rel}: {:?}", list.problems);
    list
}

#[test]
fn every_fixture_file_is_decoded() {
    fixtures::assert_each_named("marathon", &[include_str!("tests.rs")]);
}

fn tr() -> Translator {
    Translator::new(SourceId::new("m"), &MarathonConfig::new(["http://m:8080"]))
}

#[test]
fn multi_app_labels_with_health_checks_bridge_networking_and_both_port_styles() {
    let list = apps("apps_embed_tasks_multi_app_labels_marathon_lb.json");
    assert_eq!(list.apps.len(), 2);
    let green = &list.apps[0];
    assert_eq!(green.id, "/nginx-green");
    assert_eq!(green.labels["HAPROXY_DEPLOYMENT_COLOUR"], "green");
    assert_eq!(green.labels.len(), 8);
    assert_eq!(green.port_definitions[0].port, 10000);
    assert_eq!(green.health_checks.len(), 1);
    assert_eq!(green.tasks.len(), 3);
    let t = &green.tasks[0];
    assert_eq!(t.id, "nginx-green.1883a887-c931-11e5-9836-026ee08d9f6f");
    assert_eq!(t.host.as_deref(), Some("10.0.6.25"));
    assert_eq!(t.ports, vec![16916]);
    assert_eq!(t.ip_addresses[0].ip_address, "172.17.1.72");
    assert!(t.health_check_results[0].alive);
    assert_eq!(t.state, None, "this Marathon writes no task state");
    let blue = &list.apps[1];
    assert_eq!(blue.ports, vec![10001], "legacy `ports`");
    assert!(blue.port_definitions.is_empty());
    let docker = blue.container.as_ref().unwrap().docker.as_ref().unwrap();
    assert_eq!(docker.network.as_deref(), Some("BRIDGE"));
    assert_eq!(docker.port_mappings[0].container_port, 8080);
    assert_eq!(docker.port_mappings[0].service_port, Some(10001));

    // Bridge networking: the agent and its host port; alive, started: eligible.
    let tr = tr();
    assert_eq!(tr.networking(green), Networking::Bridge);
    let ep = tr.endpoint(green, t).unwrap();
    assert_eq!(ep.service.as_str(), "nginx-green");
    assert_eq!(
        (ep.address.as_str(), ep.ports[0].number),
        ("10.0.6.25", 16916)
    );
    assert_eq!(ep.health, Health::Healthy);
    assert_eq!(ep.labels["HAPROXY_GROUP"], "external");
    assert_eq!(ep.provenance.raw_labels["marathon.health"], "1/1 alive");
    assert!(tr.service(blue).unwrap().ports.is_empty(), "no port names");
}

#[test]
fn marathon_15_networks_and_named_container_port_mappings() {
    let list = apps("apps_embed_tasks_marathon15_networks_marathon_lb.json");
    let app = &list.apps[0];
    assert_eq!(app.id, "/pywebserver");
    assert_eq!(app.networks[0].mode.as_deref(), Some("container/bridge"));
    let pm = &app.container.as_ref().unwrap().port_mappings[0];
    assert_eq!(
        (pm.container_port, pm.host_port, pm.service_port),
        (80, Some(0), Some(10101))
    );
    assert_eq!(pm.name.as_deref(), Some("test"));
    assert!(app.health_checks.is_empty());
    let t = &app.tasks[0];
    assert_eq!(t.state.as_deref(), Some("TASK_RUNNING"));
    assert_eq!(t.ports, vec![1565]);

    let tr = tr();
    assert_eq!(tr.networking(app), Networking::Bridge);
    let svc = tr.service(app).unwrap();
    assert_eq!(svc.ports.len(), 1);
    assert_eq!(
        (svc.ports[0].name.as_str(), svc.ports[0].number),
        ("test", 10101)
    );
    let ep = tr.endpoint(app, t).unwrap();
    assert_eq!(ep.address, "10.0.2.148");
    assert_eq!(
        (ep.ports[0].name.as_str(), ep.ports[0].number),
        ("test", 1565)
    );
    assert_eq!(
        ep.health,
        Health::Healthy,
        "no health checks: running counts"
    );

    // Forced container addressing: the task IP and the container port.
    let mut c = MarathonConfig::new(["http://m:8080"]);
    c.address = crate::config::AddressMode::Container;
    let ep = Translator::new(SourceId::new("m"), &c)
        .endpoint(app, t)
        .unwrap();
    assert_eq!(
        (ep.address.as_str(), ep.ports[0].number),
        ("172.17.0.2", 80)
    );
}

#[test]
fn a_staged_task_with_null_started_at_is_visible_but_ineligible() {
    let list = apps("apps_embed_tasks_staged_startedAt_null_docs.json");
    let app = list.apps.iter().find(|a| a.id == "/ubuntu").unwrap();
    let docker = app.container.as_ref().unwrap().docker.as_ref().unwrap();
    assert_eq!(docker.network, None);
    assert!(docker.port_mappings.is_empty(), "`portMappings: null`");
    let t = &app.tasks[0];
    assert_eq!(t.started_at, None);
    assert_eq!(t.staged_at.as_deref(), Some("2014-10-10T05:36:08.178Z"));
    assert_eq!(task_state(t), "TASK_STAGING");
    let ep = tr().endpoint(app, t).unwrap();
    assert_eq!(ep.health, Health::Unhealthy);
    assert_eq!(
        ep.provenance.raw_labels["marathon.ineligible"],
        "task state TASK_STAGING"
    );
}

#[test]
fn a_single_app_document_with_health_check_results() {
    let list = apps("app_single_embed_tasks_healthchecks_docs.json");
    let app = &list.apps[0];
    assert_eq!(app.id, "/toggle");
    assert_eq!(app.instances, Some(2));
    assert_eq!(app.tasks.len(), 2);
    let r = &app.tasks[0].health_check_results[0];
    assert!(r.alive);
    assert_eq!(r.consecutive_failures, 0);
    assert_eq!(r.first_success.as_deref(), Some("2014-09-13T00:20:28.101Z"));
    assert_eq!(r.last_failure, None);
    let tr = tr();
    assert!(app.tasks.iter().all(|t| tr.ineligible(app, t).is_none()));

    // The same task with its health check failing is ineligible, and says why.
    let mut sick = app.tasks[0].clone();
    sick.health_check_results[0].alive = false;
    sick.health_check_results[0].consecutive_failures = 3;
    let why = tr.ineligible(app, &sick).unwrap();
    assert!(
        why.contains("health check 0 failing (3 consecutive failures)"),
        "{why}"
    );
    sick.health_check_results.clear();
    assert!(tr.ineligible(app, &sick).unwrap().contains("no result yet"));
}

#[test]
fn task_lists_decode() {
    let tasks = decode_tasks(&fixtures::read("marathon/tasks_list_docs.json")).unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[1].app_id.as_deref(), Some("/tools/docker/registry"));
    assert_eq!(tasks[1].service_ports, vec![5000]);
    assert_eq!(
        (tasks[0].region.as_deref(), tasks[0].zone.as_deref()),
        (Some("primary"), Some("a"))
    );
    let tasks = decode_tasks(&fixtures::read(
        "marathon/tasks_list_healthcheckresults_docs.json",
    ))
    .unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[0].ports, vec![31000]);
    assert_eq!(
        tasks[1].health_check_results[0].task_id.as_deref(),
        Some("bridged-webapp.ef0b5d91-4b4a-11e4-ae49-56847afe9799")
    );
    let tasks = decode_tasks(&fixtures::read("marathon/app_tasks_staging_docs.json")).unwrap();
    assert_eq!(tasks[0].state.as_deref(), Some("TASK_STAGING"));
    assert_eq!(
        task_state(&tasks[0]),
        "TASK_STAGING",
        "state wins over startedAt"
    );
}

#[test]
fn every_documented_event_decodes() {
    let all = fixtures::json("marathon/event_bus_examples.json");
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 27);
    let mut kinds = Vec::new();
    for ev in all {
        let e = decode_event(None, &ev.to_string()).unwrap_or_else(|e| panic!("{ev}: {e}"));
        kinds.push(e);
    }
    assert!(kinds.contains(&Event::StatusUpdate {
        app_id: "/my-app".into(),
        task_id: "my-app_0-1396592784349".into(),
        status: "TASK_RUNNING".into()
    }));
    assert!(kinds.contains(&Event::HealthChanged {
        app_id: "/my-app".into(),
        id: "my-app.instance-c7c311a4-b669-11e6-a48f-0ea4f4b1778c".into(),
        alive: true
    }));
    assert!(kinds.contains(&Event::AppTerminated {
        app_id: "/my-app".into()
    }));
    assert!(kinds.contains(&Event::Attached));
    for k in [
        "api_post_event",
        "deployment_success",
        "deployment_step_success",
        "group_change_success",
    ] {
        assert!(
            kinds.contains(&Event::AppsChanged { kind: k.into() }),
            "{k}"
        );
    }
    assert!(kinds.contains(&Event::Other {
        kind: "framework_message_event".into()
    }));

    // Before 1.4 the task is named by `taskId`.
    let old = String::from_utf8(fixtures::read(
        "marathon/health_status_changed_event_pre1.4_taskId.json",
    ))
    .unwrap();
    assert_eq!(
        decode_event(Some("health_status_changed_event"), &old).unwrap(),
        Event::HealthChanged {
            app_id: "/my-app".into(),
            id: "my-app_0-1396592784349".into(),
            alive: true
        }
    );
    let e = decode_event(Some("status_update_event"), r#"{"appId":"/a"}"#).unwrap_err();
    assert!(e.contains("without `taskId`"), "{e}");
    assert!(decode_event(None, "{not json")
        .unwrap_err()
        .contains("not JSON"));
}

/// Parses a raw stream fixture, fed in small chunks, into decoded events.
fn stream(rel: &str) -> (Vec<Event>, u64) {
    let bytes = fixtures::read(&format!("marathon/{rel}"));
    let mut p = SseParser::default();
    let mut out = Vec::new();
    for c in bytes.chunks(5) {
        for ev in p.feed(c).unwrap() {
            out.push(decode_event(ev.name.as_deref(), &ev.data).unwrap());
        }
    }
    (out, p.heartbeats)
}

#[test]
fn raw_event_streams_parse_in_every_framing() {
    let (events, _) = stream("events_stream_docs.txt");
    assert_eq!(events.len(), 3);
    assert_eq!(events[0], Event::Attached);
    assert!(
        matches!(&events[1], Event::StatusUpdate { status, app_id, .. } if status == "TASK_FAILED" && app_id == "/foo")
    );
    assert!(matches!(&events[2], Event::StatusUpdate { status, .. } if status == "TASK_RUNNING"));

    let (events, _) = stream("events_stream_legacy_data_only.txt");
    assert_eq!(
        events,
        vec![
            Event::Attached,
            Event::AppsChanged {
                kind: "group_change_success".into()
            }
        ]
    );

    let (events, heartbeats) = stream("events_stream_crlf_heartbeat_reconstructed.txt");
    assert_eq!(events.len(), 6);
    assert!(matches!(
        &events[2],
        Event::HealthChanged { alive: true, .. }
    ));
    assert!(matches!(&events[4], Event::StatusUpdate { status, .. } if status == "TASK_FAILED"));
    assert_eq!(
        events[5],
        Event::AppTerminated {
            app_id: "/my-app".into()
        }
    );
    assert!(
        heartbeats >= 2,
        "bare CRLF heartbeats counted: {heartbeats}"
    );
}

#[test]
fn bad_documents_say_what_is_wrong() {
    assert!(decode_apps(b"<html>").unwrap_err().contains("not JSON"));
    assert!(decode_apps(b"{\"message\":\"x\"}")
        .unwrap_err()
        .contains("neither"));
    let list =
        decode_apps(br#"{"apps":[{"id":"/ok"},{"id":"/bad","tasks":[{"host":"h"}]},{"id":7}]}"#)
            .unwrap();
    assert_eq!(list.apps.len(), 1);
    assert_eq!(list.problems.len(), 2);
    assert!(
        list.problems[0].starts_with("apps[1] (\"/bad\")") && list.problems[0].contains("id"),
        "{:?}",
        list.problems
    );
}
