use std::time::{Duration, SystemTime};

use super::super::*;
use crate::model::{EndpointPort, Health, Labels, Locality, Provenance};

fn host(s: &str) -> Hostname {
    Hostname::new(s).unwrap()
}

fn ep(id: &str, svc: &str) -> Endpoint {
    Endpoint {
        service: host(svc),
        address: format!("10.0.0.{}", id.len()),
        ports: vec![EndpointPort {
            name: String::new(),
            number: 80,
        }],
        labels: Labels::new(),
        health: Health::Healthy,
        weight: 1,
        locality: Locality::default(),
        mesh: None,
        provenance: Provenance {
            source: SourceId::new("r"),
            native_id: id.into(),
            raw_labels: Labels::new(),
        },
    }
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
}

fn send(st: &mut CatalogState, when: u64, change: Change) -> bool {
    st.apply(SourcedChange {
        source: SourceId::new("r"),
        change,
        at: at(when),
    })
}

fn reset(ids: &[&str]) -> Change {
    Change::Reset(SourceView {
        services: vec![],
        endpoints: ids.iter().map(|i| ep(i, "web")).collect(),
    })
}

fn served(st: &CatalogState) -> Vec<String> {
    let snap = st.snapshot(1);
    let mut ids: Vec<String> = snap
        .service(&host("web"))
        .map(|s| {
            s.endpoints
                .iter()
                .map(|e| e.provenance.native_id.clone())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

fn guarded() -> CatalogState {
    CatalogState::new([SourceId::new("r")]).with_guard(
        &SourceId::new("r"),
        GuardSettings {
            max_removal_share: 0.5,
            grace: Duration::from_secs(60),
        },
    )
}

#[test]
fn without_the_guard_removals_apply_at_once() {
    let mut st = CatalogState::new([SourceId::new("r")]);
    send(&mut st, 0, reset(&["a", "bb", "ccc"]));
    send(&mut st, 1, reset(&[]));
    assert!(served(&st).is_empty());
}

#[test]
fn a_mass_removal_is_held_for_the_grace_period_then_applied() {
    let mut st = guarded();
    send(&mut st, 0, reset(&["a", "bb", "ccc"]));
    send(&mut st, 10, reset(&["a"]));
    assert_eq!(
        served(&st),
        ["a", "bb", "ccc"],
        "2 of 3 removed at once is held"
    );
    let info = st.source_info(&SourceId::new("r")).unwrap();
    assert_eq!(
        (info.endpoints, info.held_endpoints, info.held_since),
        (1, 2, Some(at(10)))
    );
    assert_eq!(st.next_guard_expiry(), Some(at(70)));
    assert!(!st.expire_guard(at(69)));
    assert_eq!(served(&st).len(), 3);
    assert!(st.expire_guard(at(70)));
    assert_eq!(served(&st), ["a"]);
    assert_eq!(st.next_guard_expiry(), None);
}

#[test]
fn an_empty_answer_after_data_is_held() {
    let mut st = guarded();
    send(&mut st, 0, reset(&["a", "bb"]));
    send(&mut st, 1, reset(&[]));
    assert_eq!(served(&st), ["a", "bb"]);
    // Repeating the empty answer does not restart the grace period.
    send(&mut st, 30, reset(&[]));
    assert_eq!(st.next_guard_expiry(), Some(at(61)));
}

#[test]
fn endpoints_given_back_within_the_grace_period_end_the_hold() {
    let mut st = guarded();
    send(&mut st, 0, reset(&["a", "bb", "ccc"]));
    send(&mut st, 1, reset(&[]));
    send(&mut st, 2, reset(&["a", "bb", "ccc"]));
    assert_eq!(
        st.source_info(&SourceId::new("r")).unwrap().held_endpoints,
        0
    );
    assert_eq!(st.next_guard_expiry(), None);
}

#[test]
fn gradual_removals_pass_but_emptying_a_service_is_held() {
    let mut st = guarded();
    send(&mut st, 0, reset(&["a", "bb", "ccc", "dddd"]));
    for (t, id) in [(1, "a"), (2, "bb"), (3, "ccc")] {
        let key = EndpointKey {
            source: SourceId::new("r"),
            native_id: Arc::from(id),
        };
        send(&mut st, t, Change::RemoveEndpoint(key));
    }
    assert_eq!(
        served(&st),
        ["dddd"],
        "25%, 33% and 50% removals are not mass removals"
    );
    let key = EndpointKey {
        source: SourceId::new("r"),
        native_id: Arc::from("dddd"),
    };
    send(&mut st, 4, Change::RemoveEndpoint(key));
    assert_eq!(served(&st), ["dddd"], "the last endpoint is held");
    send(&mut st, 5, Change::RemoveService(host("web")));
    assert_eq!(served(&st), ["dddd"]);
}

#[test]
fn source_view_includes_held_endpoints() {
    let mut st = guarded();
    send(&mut st, 0, reset(&["a", "bb"]));
    send(&mut st, 1, reset(&[]));
    let view = st.source_view(&SourceId::new("r")).unwrap();
    assert_eq!(view.endpoints.len(), 2);
}

#[tokio::test]
async fn run_releases_a_hold_when_its_grace_period_ends() {
    let src = SourceId::new("r");
    let state = CatalogState::new([src.clone()]).with_guard(
        &src,
        GuardSettings {
            max_removal_share: 0.5,
            grace: Duration::from_millis(300),
        },
    );
    let (tx, rx) = mpsc::channel(8);
    let (wtx, mut wrx) = watch::channel(Arc::new(Snapshot::default()));
    let task = tokio::spawn(run(state, rx, wtx));
    let now = SystemTime::now();
    tx.send(SourcedChange {
        source: src.clone(),
        change: reset(&["a", "bb"]),
        at: now,
    })
    .await
    .unwrap();
    tx.send(SourcedChange {
        source: src.clone(),
        change: reset(&[]),
        at: now,
    })
    .await
    .unwrap();
    let held = wrx
        .wait_for(|s| s.sources.first().is_some_and(|i| i.held_endpoints == 2))
        .await
        .unwrap()
        .clone();
    assert_eq!(held.service(&host("web")).unwrap().endpoints.len(), 2);
    let released = tokio::time::timeout(
        Duration::from_secs(10),
        wrx.wait_for(|s| s.service(&host("web")).is_none()),
    )
    .await
    .expect("the hold ends after its grace period")
    .unwrap()
    .clone();
    assert_eq!(released.sources[0].held_endpoints, 0);
    drop(tx);
    task.await.unwrap();
}
