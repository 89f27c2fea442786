//! The etcd adapter against a real etcd (Debian `etcd-server`, started by the testkit).

// Test helpers outside `#[test]` functions: a failed setup step fails the test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use anymesh_adapter_etcd::{EtcdConfig, EtcdRegistry};
use anymesh_core::config::GoDuration;
use anymesh_core::{Change, Labels, Registry, SourceId, SourceStatus};
use anymesh_testkit::contract::{self, ContractHarness, Observer};
use anymesh_testkit::{EtcdServer, TcpRelay};
use etcd_client::{Client, CompactionOptions, PutOptions};

const PREFIX: &str = "anymesh/services/";

/// Short timeouts and backoff so outages are noticed and healed quickly.
fn config(url: String) -> EtcdConfig {
    let mut c = EtcdConfig::new([url]).with_prefix(PREFIX);
    c.request_timeout = GoDuration(Duration::from_secs(1));
    c.dial_timeout = GoDuration(Duration::from_secs(1));
    c.keepalive = GoDuration(Duration::from_secs(1));
    c.backoff.initial = GoDuration(Duration::from_millis(50));
    c.backoff.max = GoDuration(Duration::from_millis(400));
    c
}

fn registry(url: String) -> Arc<dyn Registry> {
    Arc::new(EtcdRegistry::new(SourceId::new("etcd"), config(url)).unwrap())
}

/// The value `endpoints.Manager.AddEndpoint` writes: `json.Marshal(internal.Update)`.
fn go_value(addr: &str, labels: &Labels) -> String {
    let metadata = match labels.is_empty() {
        true => serde_json::Value::Null,
        false => serde_json::to_value(labels).unwrap(),
    };
    serde_json::json!({"Op": 0, "Addr": addr, "Metadata": metadata}).to_string()
}

fn key(service: &str, id: &str) -> String {
    format!("{PREFIX}{service}/{id}")
}

async fn put(client: &Client, service: &str, addr: &str, labels: &Labels) {
    let mut c = client.clone();
    c.put(key(service, addr), go_value(addr, labels), None)
        .await
        .unwrap();
}

// ---- the contract --------------------------------------------------------------

/// The adapter reaches etcd through a relay; an outage cuts the relay, so the
/// harness can still write to etcd while the adapter cannot read it.
struct Harness {
    _etcd: EtcdServer,
    relay: TcpRelay,
    client: Client,
}

impl ContractHarness for Harness {
    async fn start_registry(&self) -> Arc<dyn Registry> {
        registry(self.relay.url())
    }
    async fn add(&self, service: &str, id: &str, address: &str, port: u16, labels: &Labels) {
        let mut c = self.client.clone();
        let value = go_value(&format!("{address}:{port}"), labels);
        c.put(key(service, id), value, None).await.unwrap();
    }
    async fn remove(&self, service: &str, id: &str) {
        let mut c = self.client.clone();
        c.delete(key(service, id), None).await.unwrap();
    }
    async fn outage(&self) {
        self.relay.cut();
    }
    async fn recover(&self) {
        self.relay.restore();
    }
}

#[tokio::test]
async fn passes_the_adapter_contract() {
    let etcd = EtcdServer::start().await;
    let relay = TcpRelay::start(etcd.addr()).await;
    let client = etcd.client().await;
    let h = Harness {
        _etcd: etcd,
        relay,
        client,
    };
    contract::run(&h).await;
}

// ---- registration as etcd's Go endpoints manager does it -------------------------

#[tokio::test]
async fn follows_registrations_deregistrations_and_transactions() {
    let etcd = EtcdServer::start().await;
    let client = etcd.client().await;
    let v2 = Labels::from([("version".into(), "v2".into())]);
    put(&client, "reviews", "10.0.0.1:8080", &Labels::new()).await;
    let mut obs = Observer::start(registry(etcd.url()));
    assert!(matches!(obs.next().await, Change::Reset(v) if v.endpoints.len() == 1));

    put(&client, "reviews", "10.0.0.2:8080", &v2).await;
    obs.until_endpoints("reviews", &[("10.0.0.1", 8080), ("10.0.0.2", 8080)])
        .await;
    let snap = obs.catalog().snapshot(0);
    let svc = snap.services.values().next().unwrap();
    let ep = svc
        .endpoints
        .iter()
        .find(|e| e.address == "10.0.0.2")
        .unwrap();
    assert_eq!(ep.labels, v2);
    assert_eq!(ep.provenance.native_id, key("reviews", "10.0.0.2:8080"));

    // Manager.Update: a delete and a put in one transaction, one revision.
    let mut c = client.clone();
    let txn = etcd_client::Txn::new().and_then([
        etcd_client::TxnOp::delete(key("reviews", "10.0.0.1:8080"), None),
        etcd_client::TxnOp::put(
            key("reviews", "10.0.0.3:8080"),
            go_value("10.0.0.3:8080", &Labels::new()),
            None,
        ),
    ]);
    c.txn(txn).await.unwrap();
    obs.until_endpoints("reviews", &[("10.0.0.2", 8080), ("10.0.0.3", 8080)])
        .await;

    // Deregistration (Manager.DeleteEndpoint) is a key delete.
    c.delete(key("reviews", "10.0.0.2:8080"), None)
        .await
        .unwrap();
    obs.until_endpoints("reviews", &[("10.0.0.3", 8080)]).await;

    // A bad value is reported by key and skipped; fixing it clears the error.
    c.put(key("reviews", "bad"), "not-json", None)
        .await
        .unwrap();
    let seen = obs
        .until("a degraded status naming the bad key", |ch, _| {
            matches!(ch, Change::Status(SourceStatus::Degraded { message })
                if message.contains("anymesh/services/reviews/bad") && message.contains("not JSON"))
        })
        .await;
    assert!(!seen.iter().any(|c| matches!(c, Change::Reset(_))));
    assert_eq!(obs.endpoints("reviews"), vec![("10.0.0.3".into(), 8080)]);
    // Reachable and current: a skipped key does not make the source stale.
    let info = obs.source_info();
    assert!(info.connected && info.stale_since.is_none(), "{info:?}");
    c.delete(key("reviews", "bad"), None).await.unwrap();
    obs.until("healthy again", |ch, _| {
        matches!(ch, Change::Status(SourceStatus::Healthy))
    })
    .await;
}

/// The mesh proxy fronting an endpoint, in both value formats, through a
/// real etcd; a value naming an unusable proxy is skipped and reported, and
/// changing only the mesh fields updates the endpoint.
#[tokio::test]
async fn mesh_proxies_from_both_value_formats() {
    use anymesh_core::model::{MeshProxy, DEFAULT_MESH_PORT};
    let etcd = EtcdServer::start().await;
    let mut c = etcd.client().await;
    let tagged = Labels::from([
        ("anymesh.namespace".into(), "shop".into()),
        ("anymesh.service-account".into(), "reviews".into()),
    ]);
    put(&c, "reviews", "10.0.0.1:8080", &tagged).await;
    c.put(
        key("reviews", "native"),
        r#"{"address":"10.0.0.2","port":8080,"mesh":{"port":15001,"spiffe_id":"spiffe://corp/reviews"}}"#,
        None,
    )
    .await
    .unwrap();
    c.put(
        key("reviews", "bad"),
        r#"{"address":"10.0.0.3","port":8080,"mesh":{"port":0}}"#,
        None,
    )
    .await
    .unwrap();
    let mut obs = Observer::start(registry(etcd.url()));
    obs.until("the bad mesh port reported", |ch, _| {
        matches!(ch, Change::Status(SourceStatus::Degraded { message })
            if message.contains("anymesh/services/reviews/bad") && message.contains("`mesh.port`: must be 1..=65535, got 0"))
    })
    .await;
    let mesh = |obs: &Observer, addr: &str| {
        let snap = obs.catalog().snapshot(0);
        let svc = snap.services.values().next().unwrap();
        svc.endpoints
            .iter()
            .find(|e| e.address == addr)
            .map(|e| e.mesh.clone())
    };
    assert_eq!(
        mesh(&obs, "10.0.0.1"),
        Some(Some(MeshProxy::new(
            DEFAULT_MESH_PORT,
            Some("shop".into()),
            Some("reviews".into())
        )))
    );
    assert_eq!(
        mesh(&obs, "10.0.0.2"),
        Some(Some(MeshProxy {
            port: 15001,
            spiffe_id: Some("spiffe://corp/reviews".into()),
            ..MeshProxy::default()
        }))
    );
    assert_eq!(
        mesh(&obs, "10.0.0.3"),
        None,
        "refused, not served in plaintext"
    );
    c.put(
        key("reviews", "bad"),
        r#"{"address":"10.0.0.3","port":8080,"mesh":{"port":15006}}"#,
        None,
    )
    .await
    .unwrap();
    obs.until("healthy again", |ch, _| {
        matches!(ch, Change::Status(SourceStatus::Healthy))
    })
    .await;
    assert_eq!(
        mesh(&obs, "10.0.0.3"),
        Some(Some(MeshProxy::new(DEFAULT_MESH_PORT, None, None)))
    );
}

#[tokio::test]
async fn an_expired_lease_removes_the_endpoint() {
    let etcd = EtcdServer::start().await;
    let mut client = etcd.client().await;
    let mut obs = Observer::start(registry(etcd.url()));
    obs.until("the initial Reset", |c, _| matches!(c, Change::Reset(_)))
        .await;
    // A 1 s lease and no keep-alive: an instance that crashed after registering.
    let lease = client.lease_grant(1, None).await.unwrap().id();
    let opts = PutOptions::new().with_lease(lease);
    client
        .put(
            key("ratings", "10.0.0.7:9080"),
            go_value("10.0.0.7:9080", &Labels::new()),
            Some(opts),
        )
        .await
        .unwrap();
    obs.until_endpoints("ratings", &[("10.0.0.7", 9080)]).await;
    let seen = obs.until_endpoints("ratings", &[]).await;
    assert!(
        seen.iter().any(|c| matches!(c, Change::RemoveEndpoint(k)
            if &*k.native_id == "anymesh/services/ratings/10.0.0.7:9080")),
        "the lease expiry arrives as a delete: {seen:?}"
    );
}

// ---- outages and compaction ------------------------------------------------------

#[tokio::test]
async fn etcd_restart_keeps_the_view_then_resets() {
    let mut etcd = EtcdServer::start().await;
    let client = etcd.client().await;
    put(&client, "web", "10.0.0.1:80", &Labels::new()).await;
    let mut obs = Observer::start(registry(etcd.url()));
    obs.until_endpoints("web", &[("10.0.0.1", 80)]).await;

    etcd.kill();
    let seen = obs
        .until("an error status", |c, _| {
            matches!(c, Change::Status(SourceStatus::Error { .. }))
        })
        .await;
    assert!(!seen.iter().any(|c| matches!(c, Change::Reset(_))));
    assert_eq!(obs.endpoints("web"), vec![("10.0.0.1".into(), 80)]);

    etcd.restart().await;
    let client = etcd.client().await;
    put(&client, "web", "10.0.0.2:80", &Labels::new()).await;
    obs.until_endpoints("web", &[("10.0.0.1", 80), ("10.0.0.2", 80)])
        .await;
    assert!(obs.is_running());
}

/// Changes and a compaction while the adapter is cut off: the relist on
/// reconnect leaves no stale endpoint.
#[tokio::test]
async fn compaction_while_disconnected_relists_without_stale_endpoints() {
    let etcd = EtcdServer::start().await;
    let relay = TcpRelay::start(etcd.addr()).await;
    let mut client = etcd.client().await;
    put(&client, "web", "10.0.0.1:80", &Labels::new()).await;
    put(&client, "web", "10.0.0.2:80", &Labels::new()).await;
    let mut obs = Observer::start(registry(relay.url()));
    obs.until_endpoints("web", &[("10.0.0.1", 80), ("10.0.0.2", 80)])
        .await;

    relay.cut();
    obs.until("an error status", |c, _| {
        matches!(c, Change::Status(SourceStatus::Error { .. }))
    })
    .await;
    client
        .delete(key("web", "10.0.0.1:80"), None)
        .await
        .unwrap();
    put(&client, "web", "10.0.0.3:80", &Labels::new()).await;
    let rev = client
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    client
        .compact(rev, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap();

    relay.restore();
    let seen = obs
        .until("a Reset after the partition", |c, _| {
            matches!(c, Change::Reset(_))
        })
        .await;
    assert_eq!(
        obs.endpoints("web"),
        vec![("10.0.0.2".into(), 80), ("10.0.0.3".into(), 80)],
        "no stale endpoint may survive: {seen:?}"
    );
}

// ---- authentication ----------------------------------------------------------------

/// User/password auth with the password in a file: the right one lists, a
/// wrong one is reported (without the password) and never resets the view.
#[tokio::test]
async fn authenticates_with_a_password_file() {
    let etcd = EtcdServer::start().await;
    let mut admin = etcd.client().await;
    put(&admin, "web", "10.0.0.1:80", &Labels::new()).await;
    admin.user_add("root", "s3cret-pw", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let with_password = |pw: &str| {
        let path = dir.path().join(format!("pw-{pw}"));
        std::fs::write(&path, format!("{pw}\n")).unwrap();
        let mut c = config(etcd.url());
        c.auth = Some(anymesh_adapter_etcd::AuthConfig {
            user: "root".into(),
            password_file: Some(path),
            password_env: None,
        });
        Arc::new(EtcdRegistry::new(SourceId::new("etcd"), c).unwrap()) as Arc<dyn Registry>
    };

    let mut obs = Observer::start(with_password("s3cret-pw"));
    obs.until_endpoints("web", &[("10.0.0.1", 80)]).await;

    let mut obs = Observer::start(with_password("wrong-pw"));
    match obs.next().await {
        Change::Status(SourceStatus::Error { message }) => {
            assert!(message.contains("connecting to etcd"), "{message}");
            assert!(
                !message.contains("wrong-pw"),
                "the password leaked: {message}"
            );
        }
        other => panic!("a wrong password must be an error status, got {other:?}"),
    }
    assert!(obs.is_running());
}

// ---- TLS -----------------------------------------------------------------------------

/// The adapter's settings for the TLS etcd: `ca` as the trusted CA, and the
/// client certificate when `client_cert`.
fn tls_config(etcd: &EtcdServer, ca: &std::path::Path, client_cert: bool) -> EtcdConfig {
    let pki = etcd.tls().unwrap();
    let mut c = config(etcd.url());
    c.tls = Some(anymesh_adapter_etcd::TlsConfig {
        ca_file: Some(ca.to_path_buf()),
        cert_file: client_cert.then(|| pki.client_cert.clone()),
        key_file: client_cert.then(|| pki.client_key.clone()),
        server_name: None,
    });
    c
}

/// etcd with `--client-cert-auth` and https only: the adapter lists and
/// watches with the CA and a client certificate.
#[tokio::test]
async fn lists_and_watches_over_tls_with_a_client_certificate() {
    let etcd = EtcdServer::start_tls().await;
    assert!(etcd.url().starts_with("https://"), "{}", etcd.url());
    let admin = etcd.client().await;
    put(&admin, "web", "10.0.0.1:80", &Labels::new()).await;
    let pki = etcd.tls().unwrap().clone();
    let registry =
        EtcdRegistry::new(SourceId::new("etcd"), tls_config(&etcd, &pki.ca, true)).unwrap();

    let listing = registry.list_once().await.unwrap();
    assert_eq!(listing.view.endpoints.len(), 1);
    assert_eq!(listing.view.endpoints[0].address, "10.0.0.1");

    let mut obs = Observer::start(Arc::new(registry));
    obs.until_endpoints("web", &[("10.0.0.1", 80)]).await;
    put(&admin, "web", "10.0.0.2:80", &Labels::new()).await;
    obs.until_endpoints("web", &[("10.0.0.1", 80), ("10.0.0.2", 80)])
        .await;
}

/// A CA that did not sign etcd's certificate, no client certificate, or
/// plain http: each is an error that says what failed, and the registry
/// keeps running (reporting the error) rather than giving up.
#[tokio::test]
async fn a_wrong_ca_or_no_client_certificate_is_a_clear_error() {
    let etcd = EtcdServer::start_tls().await;
    let pki = etcd.tls().unwrap().clone();
    let list = |c: EtcdConfig| async move {
        let registry = EtcdRegistry::new(SourceId::new("etcd"), c).unwrap();
        match registry.list_once().await {
            Ok(l) => panic!(
                "listed {} endpoints where it must fail",
                l.view.endpoints.len()
            ),
            Err(e) => e.chain(),
        }
    };

    let wrong_ca = list(tls_config(&etcd, &pki.other_ca, true)).await;
    assert!(
        wrong_ca.contains(&etcd.url()) || wrong_ca.contains("etcd prefix"),
        "{wrong_ca}"
    );
    assert!(
        wrong_ca.to_lowercase().contains("certificate"),
        "{wrong_ca}"
    );

    let no_client_cert = list(tls_config(&etcd, &pki.ca, false)).await;
    assert!(no_client_cert.contains("etcd"), "{no_client_cert}");

    let mut plain = config(etcd.url().replace("https://", "http://"));
    plain.request_timeout = GoDuration(Duration::from_secs(1));
    let plain = list(plain).await;
    assert!(plain.contains("etcd"), "{plain}");

    // The running registry reports the wrong CA as its status, and keeps trying.
    let registry = EtcdRegistry::new(
        SourceId::new("etcd"),
        tls_config(&etcd, &pki.other_ca, true),
    )
    .unwrap();
    let mut obs = Observer::start(Arc::new(registry));
    match obs.next().await {
        Change::Status(SourceStatus::Error { message }) => {
            assert!(message.to_lowercase().contains("certificate"), "{message}")
        }
        other => panic!("a wrong CA must be an error status, got {other:?}"),
    }
    assert!(obs.is_running());
}

// ---- large prefixes ------------------------------------------------------------------

/// A prefix holding more than the client's 4 MiB message limit is listed in
/// pages at one revision, completely, and keys just outside it stay out.
#[tokio::test]
async fn lists_a_prefix_larger_than_one_message() {
    use etcd_client::{Txn, TxnOp};
    let etcd = EtcdServer::start().await;
    let mut client = etcd.client().await;
    // About 1.2 KiB per value: 4,000 keys are some 5 MiB.
    let padding = "x".repeat(1200);
    let keys: Vec<(String, String)> = (0..4000)
        .map(|i| {
            let addr = format!("10.0.{}.{}:80", i / 250, i % 250);
            let value = serde_json::json!({"Op": 0, "Addr": addr, "Metadata": {"pad": padding}});
            (key(&format!("svc-{}", i % 40), &addr), value.to_string())
        })
        .collect();
    for chunk in keys.chunks(100) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None))
            .collect();
        client.txn(Txn::new().and_then(ops)).await.unwrap();
    }
    // Neighbours of the prefix that must not be listed.
    client.put("anymesh/services", "x", None).await.unwrap();
    client
        .put("anymesh/services0/a/1.2.3.4:80", "x", None)
        .await
        .unwrap();

    let registry = EtcdRegistry::new(SourceId::new("etcd"), config(etcd.url())).unwrap();
    let listing = registry.list_once().await.unwrap();
    assert_eq!(listing.view.endpoints.len(), 4000);
    assert_eq!(listing.problem, None);
    let services: std::collections::BTreeSet<_> = listing
        .view
        .endpoints
        .iter()
        .map(|e| e.service.to_string())
        .collect();
    assert_eq!(services.len(), 40);
}
