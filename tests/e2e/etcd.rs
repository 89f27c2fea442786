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
