use anymesh_core::{Change, EndpointKey, SourceId, SourceStatus};

use super::*;
use crate::decode::{Decoder, Layout};
use crate::fixture;
use crate::registry::WatchMsg;

fn decoder(default_port: Option<u16>) -> Decoder {
    Decoder::new(SourceId::new("etcd"), Layout::new("foo/bar/"), default_port)
}

fn upserted(c: &Change) -> String {
    match c {
        Change::UpsertEndpoint(e) => format!("+{}:{}", e.address, e.ports[0].number),
        Change::RemoveEndpoint(k) => format!("-{}", k.native_id),
        Change::Reset(v) => format!("reset {}", v.endpoints.len()),
        Change::Status(SourceStatus::Healthy) => "healthy".into(),
        Change::Status(SourceStatus::Error { message }) => format!("error {message}"),
        Change::Status(SourceStatus::Degraded { message }) => format!("degraded {message}"),
        other => format!("{other:?}"),
    }
}

fn inputs(name: &str) -> Vec<Input> {
    fixture::watch(name)
        .into_iter()
        .filter_map(|m| match m {
            WatchMsg::Input(i) => Some(i),
            WatchMsg::Nothing => None,
            WatchMsg::Canceled(r) => panic!("canceled: {r}"),
        })
        .collect()
}

/// The captured list, then the captured watch: each response's changes, in order.
#[test]
fn captured_list_then_watch() {
    let d = decoder(Some(80));
    let (state, out) = State::Empty.step(fixture::range("range_prefix_with_slash.json"), &d);
    let out: Vec<String> = out.iter().map(upserted).collect();
    assert_eq!(out[0], "reset 2");
    assert!(
        out[1].starts_with("degraded 2 etcd keys skipped: etcd key `foo/bar/my-service/1.2.3.4`"),
        "{}",
        out[1]
    );
    assert!(out[1].contains("etcd key `foo/bar/my-service/bad-value`: the value is not JSON"));
    assert_eq!(
        state.watch_from(),
        Some(7),
        "watch from the list's revision + 1"
    );

    let frames = inputs("watch_stream.ndjson");
    assert_eq!(frames.len(), 5, "created frame carries nothing");
    let mut state = state;
    let mut per_frame = Vec::new();
    for input in frames {
        let (next, out) = state.step(input, &d);
        state = next;
        per_frame.push(out.iter().map(upserted).collect::<Vec<_>>());
    }
    assert_eq!(per_frame[0], vec!["+10.0.0.1:8080"]);
    assert_eq!(per_frame[1], vec!["+10.0.0.3:8080"]);
    // One txn, one response: the invalid 1.2.3.4 deleted, 1.2.3.14 added
    // (default port), and the status now names only bad-value.
    assert_eq!(per_frame[2][0], "+1.2.3.14:80");
    assert!(per_frame[2][1]
        .starts_with("degraded 1 etcd key skipped: etcd key `foo/bar/my-service/bad-value`"));
    assert_eq!(per_frame[3], vec!["-foo/bar/my-service/10.0.0.3:8080"]);
    // The lease revoke arrives as a plain delete.
    assert_eq!(per_frame[4], vec!["-foo/bar/my-service/10.0.0.2:8080"]);
    let State::Watching(synced) = &state else {
        panic!("{state:?}")
    };
    assert_eq!(synced.revision, 11);
    let ep = &synced.endpoints["foo/bar/my-service/10.0.0.1:8080"];
    assert_eq!(ep.labels.get("weight").map(String::as_str), Some("50"));

    // Folding the watch gives what a fresh list of the final store gives.
    let final_list = fixture::range("etcdctl_get_prefix_after_changes.json");
    let (relisted, _) = State::Empty.step(final_list, &d);
    let State::Watching(fresh) = relisted else {
        panic!()
    };
    assert_eq!(fresh.endpoints, synced.endpoints);
    assert_eq!(fresh.invalid, synced.invalid);
}

#[test]
fn captured_watch_with_prev_kv() {
    let d = decoder(None);
    let (mut state, _) = State::Empty.step(
        Input::Listed {
            revision: 11,
            kvs: vec![],
        },
        &d,
    );
    let mut out = Vec::new();
    for input in inputs("watch_stream_prev_kv.ndjson") {
        let (next, changes) = state.step(input, &d);
        state = next;
        out.extend(changes);
    }
    let canary: Vec<Option<String>> = out
        .iter()
        .map(|c| match c {
            Change::UpsertEndpoint(e) => e.labels.get("canary").cloned(),
            _ => None,
        })
        .collect();
    assert_eq!(
        canary,
        vec![Some("true".into()), Some("false".into()), None]
    );
    assert_eq!(
        out[2],
        Change::RemoveEndpoint(EndpointKey {
            source: SourceId::new("etcd"),
            native_id: "foo/bar/my-service/10.0.0.5:8080".into(),
        })
    );
}

/// `canceled` with `compact_revision`: relist, send nothing yet.
#[test]
fn captured_compaction_cancel_means_relist() {
    let msgs = fixture::watch("watch_compacted_canceled.ndjson");
    assert_eq!(
        msgs,
        vec![
            WatchMsg::Nothing,
            WatchMsg::Input(Input::Compacted {
                compact_revision: 13
            })
        ]
    );
    let d = decoder(None);
    let (state, _) = State::Empty.step(
        Input::Listed {
            revision: 6,
            kvs: vec![],
        },
        &d,
    );
    let (state, out) = state.step(
        Input::Compacted {
            compact_revision: 13,
        },
        &d,
    );
    assert_eq!((state, out), (State::Relist, vec![]));
}

#[test]
fn captured_compacted_range_error_is_recognised() {
    let body = anymesh_testkit::fixtures::json("etcd/range_at_compacted_revision_error.json");
    let (code, message) = anymesh_testkit::fixtures::etcd_gateway::error(&body);
    assert!(crate::is_compacted(code, &message));
    assert!(!crate::is_compacted(14, "etcdserver: request timed out"));
    assert!(!crate::is_compacted(
        11,
        "etcdserver: mvcc: required revision is a future revision"
    ));
}

#[test]
fn failures_keep_the_view_and_never_reset() {
    let d = decoder(None);
    let (state, _) = State::Empty.step(fixture::range("range_prefix_with_slash.json"), &d);
    let (state, out) = state.step(Input::Failed("connection refused".into()), &d);
    assert_eq!(
        out,
        vec![Change::Status(SourceStatus::Error {
            message: "connection refused".into()
        })]
    );
    assert_eq!(state, State::Empty);
    // Every failure is reported, and a stray event without a list changes nothing.
    let (state, out) = state.step(Input::Failed("connection refused".into()), &d);
    assert_eq!(out.len(), 1);
    let (state, out) = state.step(
        Input::Events {
            revision: 9,
            events: vec![],
        },
        &d,
    );
    assert_eq!((state, out), (State::Empty, vec![]));
}

#[test]
fn a_value_turning_bad_removes_the_endpoint_and_a_fix_restores_health() {
    let d = decoder(None);
    let kv = |v: &str| Kv {
        key: b"foo/bar/web/a".to_vec(),
        value: v.as_bytes().to_vec(),
    };
    let good = r#"{"Addr":"10.0.0.1:80"}"#;
    let (state, out) = State::Empty.step(
        Input::Listed {
            revision: 1,
            kvs: vec![kv(good)],
        },
        &d,
    );
    assert_eq!(
        out.iter().map(upserted).collect::<Vec<_>>(),
        vec!["reset 1", "healthy"]
    );
    let ev = |v: &str| Input::Events {
        revision: 2,
        events: vec![Event::Put(kv(v))],
    };
    let (state, out) = state.step(ev("{"), &d);
    let out: Vec<_> = out.iter().map(upserted).collect();
    assert_eq!(out[0], "-foo/bar/web/a");
    assert!(out[1].starts_with("degraded 1 etcd key skipped: etcd key `foo/bar/web/a`"));
    // The same bad value again: no new status.
    let (state, out) = state.step(ev("{"), &d);
    assert_eq!(out, vec![]);
    let (state, out) = state.step(ev(good), &d);
    assert_eq!(
        out.iter().map(upserted).collect::<Vec<_>>(),
        vec!["+10.0.0.1:80", "healthy"]
    );
    // An identical put (a re-registration) sends nothing.
    let (_, out) = state.step(ev(good), &d);
    assert_eq!(out, vec![]);
}
