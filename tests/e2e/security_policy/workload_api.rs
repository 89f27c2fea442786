//! The SPIFFE Workload API as a proxy's certificate source, end to end:
//! proxy B reads its SVID from the protocol-faithful fake agent
//! (`FakeWorkloadApi`, gRPC over a Unix socket), serves mutual TLS with it
//! to a caller's proxy, and presents the next SVID the agent pushes on new
//! connections.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anymesh_identity::tls::{client_config, ALPN_H1};
use anymesh_identity::workload_api::fake::{pb::X509Svid, FakeWorkloadApi};
use anymesh_identity::Credentials;
use http::StatusCode;
use rcgen::{
    CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use super::{caller, endpoint, start, workloads, Served};
use crate::harness::{eventually, TestMesh};
use crate::mtls::pki::Root;
use crate::mtls::stats;

const B: &str = "spiffe://cluster.local/ns/default/sa/b";

/// An X.509-SVID for `uri` signed by `root`, as the agent sends it: the
/// leaf's DER, its PKCS#8 key and the root's DER.
fn svid(root: &Root, uri: &str) -> X509Svid {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(uri.try_into().expect("uri"))];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.is_ca = IsCa::ExplicitNoCa;
    let cert = params.signed_by(&key, &root.issuer).expect("signed");
    let bundle = CertificateDer::from_pem_slice(root.pem.as_bytes()).expect("root der");
    X509Svid {
        spiffe_id: uri.to_string(),
        x509_svid: cert.der().to_vec(),
        x509_svid_key: key.serialize_der(),
        bundle: bundle.to_vec(),
        hint: String::new(),
    }
}

/// The leaf certificate B's inbound listener presents on a new mesh
/// connection for workload port `port` (a fresh client config: no session
/// resumption).
async fn served_leaf(b: &TestMesh, port: u16, client: &Credentials) -> Vec<u8> {
    let inbound = b.mesh.inbound.expect("inbound");
    let config = client_config(client, &[ALPN_H1]).expect("client config");
    let tcp = TcpStream::connect(inbound).await.expect("connect");
    let name = ServerName::try_from(anymesh_proxy::inbound::server_name_for_port(port))
        .expect("server name");
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(&config))
        .connect(name, tcp)
        .await
        .expect("mutual TLS with B");
    let certs = tls
        .get_ref()
        .1
        .peer_certificates()
        .expect("B's certificates");
    certs.first().expect("a leaf").to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_api_svid_serves_mutual_tls_and_a_pushed_rotation_is_used() {
    let root = Root::new("cluster.local");
    let app = anymesh::upstream::spawn("app").await.expect("app");
    let dir = tempfile::tempdir().expect("temp dir");
    let agent = FakeWorkloadApi::start(dir.path().join("agent.sock"))
        .await
        .expect("fake agent");
    let first = svid(&root, B);
    agent.set_svids(vec![first.clone()]);

    let served = [Served {
        name: "b",
        labels: "app: b",
        app: &app,
    }];
    let yaml = format!(
        "identity:\n  workload_api: {{socket: \"unix://{}\", first_wait: 5s}}\n{}",
        agent.socket().display(),
        workloads("default", "b", &served)
    );
    let b = start(dir, "services: []\n", "", &yaml).await;
    assert!(agent.accepted_calls() >= 1, "B asked the agent");
    let inbound = b.mesh.inbound.expect("inbound");
    let endpoints = [endpoint(&app, "app: b", Some((inbound, "default", "b")))];
    let a = caller(&root, "default", "a", "reviews", &endpoints, "").await;

    let (status, who, body) = a.get("reviews", "/", &[]).await;
    assert_eq!((status, who.as_str()), (StatusCode::OK, "app"), "{body}");
    assert!(
        stats(&b).mtls.load(Ordering::Relaxed) >= 1,
        "the hop was mutual TLS"
    );

    // A probe of B with the caller's own credentials.
    let probe_dir = tempfile::tempdir().expect("temp dir");
    root.write_svid(probe_dir.path(), "default", "probe", false);
    let read = |f: &str| std::fs::read(probe_dir.path().join(f)).expect("probe file");
    let probe = Credentials::from_pem(&read("cert.pem"), &read("key.pem"), &read("bundle.pem"))
        .expect("probe credentials");
    assert_eq!(
        served_leaf(&b, app.addr.port(), &probe).await,
        first.x509_svid,
        "B serves the agent's SVID"
    );

    let second = svid(&root, B);
    agent.set_svids(vec![second.clone()]);
    eventually("B serves the pushed SVID", || async {
        (served_leaf(&b, app.addr.port(), &probe).await == second.x509_svid).then_some(())
    })
    .await;
    for _ in 0..10 {
        let (status, who, body) = a.get("reviews", "/", &[]).await;
        assert_eq!(
            (status, who.as_str()),
            (StatusCode::OK, "app"),
            "after the rotation: {body}"
        );
    }
}
