use std::time::Duration;

use anymesh_core::{Change, ChangeSink, SourceId};
use anymesh_testkit::EtcdServer;

use super::*;
use crate::state::Synced;

/// A watch that starts in compacted history is canceled by etcd with a
/// `compact_revision`: the watch ends in `Relist`, and none of the window's
/// events are applied (no silent gap, no half-applied history).
#[tokio::test]
async fn a_watch_started_in_compacted_history_ends_in_a_relist() {
    let etcd = EtcdServer::start().await;
    let mut client = etcd.client().await;
    let key = "services/web/10.0.0.1:80";
    client
        .put(
            key,
            r#"{"Op":0,"Addr":"10.0.0.1:80","Metadata":null}"#,
            None,
        )
        .await
        .unwrap();
    let start = client
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    client.delete(key, None).await.unwrap();
    client
        .put(
            key,
            r#"{"Op":0,"Addr":"10.0.0.2:80","Metadata":null}"#,
            None,
        )
        .await
        .unwrap();
    // Compacting at the latest revision removes the delete at start + 1.
    let now = client
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    assert!(now > start + 1);
    client.compact(now, None).await.unwrap();

    let registry = EtcdRegistry::new(SourceId::new("etcd"), EtcdConfig::new([etcd.url()])).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let sink = ChangeSink::new(SourceId::new("etcd"), tx);
    let mut state = State::Watching(Synced {
        revision: start,
        ..Synced::default()
    });
    let end = tokio::time::timeout(
        Duration::from_secs(10),
        registry.watch(&mut client, start + 1, &mut state, &sink),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(matches!(end, WatchEnd::Compacted));
    assert_eq!(state, State::Relist);
    drop(sink);
    let mut changes: Vec<Change> = Vec::new();
    while let Some(sc) = rx.recv().await {
        changes.push(sc.change);
    }
    assert_eq!(
        changes,
        vec![],
        "nothing from the compacted window is applied"
    );
}

/// A list at a compacted revision answers gRPC code 11; it is recognised.
#[tokio::test]
async fn a_read_at_a_compacted_revision_is_recognised() {
    let etcd = EtcdServer::start().await;
    let mut client = etcd.client().await;
    client.put("services/a/b", "x", None).await.unwrap();
    client.put("services/a/b", "y", None).await.unwrap();
    let now = client
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    client.compact(now, None).await.unwrap();
    let source = client
        .get(
            "services/",
            Some(GetOptions::new().with_prefix().with_revision(now - 1)),
        )
        .await
        .unwrap_err();
    let e = EtcdError::ListFailed {
        prefix: "services/".into(),
        source,
    };
    assert!(e.is_compacted(), "{}", e.chain());
}
