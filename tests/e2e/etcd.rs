//! The etcd registry end to end: a real etcd, keys written the way etcd's Go
//! naming/endpoints manager writes them, traffic through the proxy.

use anymesh_testkit::EtcdServer;

use crate::harness::*;

fn value(port: u16, version: &str) -> String {
    format!(r#"{{"Op":0,"Addr":"127.0.0.1:{port}","Metadata":{{"version":"{version}"}}}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_registered_in_etcd_receive_traffic_and_follow_changes() {
    let etcd = EtcdServer::start().await;
    let mut client = etcd.client().await;
    let ups = upstreams(&["e1", "e2"]).await;
    let key = |i: usize| format!("services/web/127.0.0.1:{}", ups[i].addr.port());
    client
        .put(key(0), value(ups[0].addr.port(), "v1"), None)
        .await
        .expect("put e1");

    let registries = format!(
        "[{{name: etcd, type: etcd, endpoints: ['{}'], prefix: services/}}]",
        etcd.url()
    );
    let mesh = TestMesh::start_with_registries(&registries, "").await;
    assert_eq!(mesh.count("web", 10, &[]).await.get("e1"), Some(&10));

    // A new registration reaches routing through the watch.
    client
        .put(key(1), value(ups[1].addr.port(), "v2"), None)
        .await
        .expect("put e2");
    eventually("traffic on e2", || async {
        (mesh.get("web", "/", &[]).await.1 == "e2").then_some(())
    })
    .await;

    // Deregistration: e1 stops receiving traffic.
    client.delete(key(0), None).await.expect("delete e1");
    eventually("e1 gone from routing", || async {
        let r = mesh.mesh.router.current();
        let port = format!(":{}", ups[0].addr.port());
        (!r.table
            .clusters
            .iter()
            .any(|c| c.endpoints.iter().any(|e| e.authority.ends_with(&port))))
        .then_some(())
    })
    .await;
    assert_eq!(mesh.count("web", 10, &[]).await.get("e2"), Some(&10));

    // Provenance names the etcd key.
    let (_, cfg) = mesh.admin("/config").await;
    assert!(cfg.contains(&key(1)), "{cfg}");
}

/// The outage story: etcd dies under load (no request fails), the proxy
/// restarts while etcd is still down (it serves its saved view), etcd comes
/// back with changed content (the proxy converges to it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_an_etcd_outage_and_a_restart_during_it() {
    let mut etcd = EtcdServer::start().await;
    let ups = upstreams(&["e1", "e2"]).await;
    let key = |i: usize| format!("services/web/127.0.0.1:{}", ups[i].addr.port());
    {
        let mut client = etcd.client().await;
        for (i, up) in ups.iter().enumerate() {
            client
                .put(key(i), value(up.addr.port(), "v1"), None)
                .await
                .expect("put");
        }
    }
    let state = tempfile::tempdir().expect("state dir");
    let registries = format!(
        "[{{name: etcd, type: etcd, endpoints: ['{}'], prefix: services/, backoff: {{initial: 50ms, max: 200ms}}}}]",
        etcd.url()
    );
    let extra = format!("state_dir: '{}'\n", state.path().display());
    let mesh = TestMesh::start_with_settings(&registries, "", &extra).await;
    eventually("both endpoints served", || async {
        let c = mesh.count("web", 20, &[]).await;
        (c.len() == 2).then_some(())
    })
    .await;
    eventually("the view is saved", || async {
        state.path().join("etcd.json").exists().then_some(())
    })
    .await;

    // etcd dies under steady load: no request fails, the last good view serves.
    let load = Load::start(&mesh, "web");
    eventually("load running", || async {
        (load.seen("e1") + load.seen("e2") > 50).then_some(())
    })
    .await;
    etcd.kill();
    eventually("the source is marked stale", || async {
        let snap = mesh.mesh.catalog.borrow().clone();
        snap.sources[0].stale_since.map(|_| ())
    })
    .await;
    load.next_epoch();
    eventually("load continues during the outage", || async {
        (load.seen("e1") + load.seen("e2") > 200).then_some(())
    })
    .await;
    let (sent, failed) = load.finish().await;
    eprintln!(
        "etcd outage under load: {sent} requests sent, {} failed",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {sent} requests failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );

    // Restart the proxy while etcd is still down: it serves the saved view.
    let TestMesh { mesh: old, .. } = mesh;
    old.shutdown().await;
    let mesh = TestMesh::start_with_settings(&registries, "", &extra).await;
    let counts = mesh.count("web", 40, &[]).await;
    assert_eq!(counts.len(), 2, "served from the saved view: {counts:?}");
    let snap = mesh.mesh.catalog.borrow().clone();
    assert!(
        snap.sources[0].restored_from.is_some(),
        "/config says the view is a restored one"
    );
    assert!(!snap.sources[0].connected);

    // etcd returns; e1 was deregistered meanwhile: the proxy converges.
    etcd.restart().await;
    etcd.client()
        .await
        .delete(key(0), None)
        .await
        .expect("delete e1");
    eventually("only e2 left", || async {
        let c = mesh.count("web", 10, &[]).await;
        (c.get("e2") == Some(&10)).then_some(())
    })
    .await;
    let snap = mesh.mesh.catalog.borrow().clone();
    assert!(snap.sources[0].connected && snap.sources[0].stale_since.is_none());
    assert!(snap.sources[0].restored_from.is_none());
}
