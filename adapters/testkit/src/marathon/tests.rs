//! The fake's bodies have the fixtures' shapes, and its event stream is real
//! SSE over HTTP (checked with a raw TCP client).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use crate::fixtures;

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

/// The keys of every app and every task in the Marathon fixtures.
fn fixture_keys() -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut app_keys, mut task_keys) = (BTreeSet::new(), BTreeSet::new());
    for f in [
        "apps_embed_tasks_multi_app_labels_marathon_lb.json",
        "apps_embed_tasks_marathon15_networks_marathon_lb.json",
        "apps_embed_tasks_staged_startedAt_null_docs.json",
    ] {
        for app in fixtures::json(&format!("marathon/{f}"))["apps"]
            .as_array()
            .unwrap()
        {
            app_keys.extend(keys(app));
            for t in app["tasks"].as_array().unwrap() {
                task_keys.extend(keys(t));
            }
        }
    }
    for f in [
        "tasks_list_docs.json",
        "tasks_list_healthcheckresults_docs.json",
    ] {
        for t in fixtures::json(&format!("marathon/{f}"))["tasks"]
            .as_array()
            .unwrap()
        {
            task_keys.extend(keys(t));
        }
    }
    (app_keys, task_keys)
}

fn sample() -> FakeApp {
    let mut app = FakeApp::new("/prod/shop/web")
        .with_label("version", "v1")
        .with_health_checks(1)
        .with_ports(&[(Some("http"), 10000, 8080), (None, 10001, 9090)]);
    let mut t =
        FakeTask::new("prod_shop_web.a1", "10.0.0.1", &[31000, 31001]).with_ip("172.17.0.2");
    t.health = vec![(true, 0)];
    app.tasks.insert(t.id.clone(), t);
    app.tasks.insert(
        "prod_shop_web.a2".into(),
        FakeTask::new("prod_shop_web.a2", "10.0.0.2", &[31002, 31003]).with_state("TASK_STAGING"),
    );
    app
}

#[tokio::test]
async fn apps_and_tasks_use_only_fields_the_fixtures_show() {
    let (app_keys, task_keys) = fixture_keys();
    let m = FakeMarathon::start().await;
    for shape in [Shape::Modern, Shape::Legacy] {
        m.set_shape(shape);
        for net in [
            FakeNetworking::Host,
            FakeNetworking::Bridge,
            FakeNetworking::Container,
        ] {
            m.add_app(sample().with_networking(net));
            let doc = m.apps_json();
            let app = &doc["apps"][0];
            let extra: Vec<_> = keys(app).difference(&app_keys).cloned().collect();
            assert!(
                extra.is_empty(),
                "{shape:?} {net:?}: app keys not in any fixture: {extra:?}"
            );
            for t in app["tasks"].as_array().unwrap() {
                let extra: Vec<_> = keys(t).difference(&task_keys).cloned().collect();
                assert!(
                    extra.is_empty(),
                    "{shape:?} {net:?}: task keys not in any fixture: {extra:?}"
                );
            }
            assert_eq!(app["tasksRunning"], 1);
            assert_eq!(app["tasksStaged"], 1);
            assert_eq!(app["tasksHealthy"], 1);
            let staged = &app["tasks"][1];
            assert_eq!(staged["startedAt"], Value::Null);
            assert_eq!(staged.get("state").is_some(), shape == Shape::Modern);
        }
    }
}

/// A raw HTTP/1.1 GET; returns the connection after the request is written.
async fn get(addr: SocketAddr, path: &str, headers: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: m\r\n{headers}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

/// Reads until `needle` has been seen (after `from`), within a deadline;
/// returns everything read so far.
async fn read_until(s: &mut TcpStream, buf: &mut Vec<u8>, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = String::from_utf8_lossy(buf).into_owned();
        if text.contains(needle) {
            return text;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("waited for {needle:?}; got {text:?}"))
            .unwrap();
        assert!(n > 0, "connection closed before {needle:?}; got {text:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn the_event_stream_is_server_sent_events_fed_by_state_changes() {
    let m = FakeMarathon::start().await;
    m.set_heartbeat(Duration::from_millis(50));
    m.add_app(FakeApp::new("/web").with_health_checks(1));
    let mut s = get(
        m.addr(),
        "/v2/events?event_type=status_update_event&event_type=health_status_changed_event&event_type=app_terminated_event",
        "Accept: text/event-stream\r\n",
    )
    .await;
    let mut buf = Vec::new();
    let head = read_until(&mut s, &mut buf, "event: event_stream_attached\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    read_until(&mut s, &mut buf, ": keep-alive\r\n").await;

    assert!(m.launch("/web", FakeTask::new("web.1", "10.0.0.1", &[31000])));
    let text = read_until(&mut s, &mut buf, "\"taskStatus\":\"TASK_RUNNING\"").await;
    assert!(
        text.contains("event: status_update_event\r\ndata: {"),
        "{text}"
    );
    assert!(m.set_health("/web", "web.1", false));
    read_until(&mut s, &mut buf, "event: health_status_changed_event").await;
    assert!(m.kill_task("/web", "web.1"));
    read_until(&mut s, &mut buf, "TASK_KILLED").await;
    assert!(m.remove_app("/web"));
    let text = read_until(&mut s, &mut buf, "event: app_terminated_event").await;
    assert!(!text.contains("deployment_"), "filtered out: {text}");

    // Muted changes publish nothing; a dropped stream closes the connection.
    m.mute_events(true);
    m.add_app(FakeApp::new("/quiet"));
    assert_eq!(m.open_streams(), 1);
    m.drop_streams();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    assert!(!String::from_utf8_lossy(&buf).contains("/quiet"));
    assert_eq!(m.counts().streams, 1);
}

#[tokio::test]
async fn requests_need_the_token_and_the_stream_needs_its_accept_header() {
    let m = FakeMarathon::start().await;
    let mut s = get(m.addr(), "/v2/events", "").await;
    let mut buf = Vec::new();
    read_until(&mut s, &mut buf, "HTTP/1.1 405").await;

    m.require_token(Some("t0k"));
    let mut s = get(m.addr(), "/v2/apps", "Authorization: token=wrong\r\n").await;
    let mut buf = Vec::new();
    let text = read_until(&mut s, &mut buf, "token is invalid").await;
    assert!(text.starts_with("HTTP/1.1 401"), "{text}");
    let mut s = get(
        m.addr(),
        "/v2/apps?embed=apps.tasks",
        "Authorization: token=t0k\r\n",
    )
    .await;
    let mut buf = Vec::new();
    read_until(&mut s, &mut buf, "{\"apps\":[]}").await;
    assert_eq!(m.counts().unauthorized, 1);

    m.fail_with(Some(503));
    let mut s = get(m.addr(), "/v2/apps", "Authorization: token=t0k\r\n").await;
    let mut buf = Vec::new();
    read_until(&mut s, &mut buf, "HTTP/1.1 503").await;
}
