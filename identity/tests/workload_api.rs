//! The Workload API source against the fake SPIFFE Workload API server
//! (the real gRPC protocol over a Unix socket).

#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anymesh_identity::workload_api::fake::{pb, FakeWorkloadApi};
use anymesh_identity::workload_api::{WorkloadApiError, WorkloadApiSource};
use anymesh_identity::{Identity, SpiffeId};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use tokio::sync::watch;

const WEB: &str = "spiffe://example.org/ns/default/sa/web";

/// A root CA and an intermediate under it, issuing SVIDs.
struct Pki {
    root_der: Vec<u8>,
    intermediate: CertifiedIssuer<'static, KeyPair>,
}

/// One issued SVID: DER chain (leaf, intermediate) and PKCS#8 key.
struct Svid {
    leaf: Vec<u8>,
    intermediate: Vec<u8>,
    key: Vec<u8>,
}

impl Pki {
    fn new() -> Self {
        let ca = |name: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, name);
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            p
        };
        let root = CertifiedIssuer::self_signed(ca("root"), KeyPair::generate().unwrap()).unwrap();
        let intermediate =
            CertifiedIssuer::signed_by(ca("intermediate"), KeyPair::generate().unwrap(), &root)
                .unwrap();
        Self {
            root_der: root.der().to_vec(),
            intermediate,
        }
    }

    fn issue(&self, id: &str) -> Svid {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
        // The X.509-SVID specification wants basicConstraints cA=false on
        // a leaf (present, not just absent).
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let issuer: &Issuer<'_, KeyPair> = &self.intermediate;
        let leaf = p.signed_by(&key, issuer).unwrap();
        Svid {
            leaf: leaf.der().to_vec(),
            intermediate: self.intermediate.der().to_vec(),
            key: key.serialize_der(),
        }
    }

    /// The Workload API entry for `svid`: chain concatenated, leaf first.
    fn entry(&self, id: &str, svid: &Svid, hint: &str) -> pb::X509Svid {
        pb::X509Svid {
            spiffe_id: id.into(),
            x509_svid: [svid.leaf.as_slice(), &svid.intermediate].concat(),
            x509_svid_key: svid.key.clone(),
            bundle: self.root_der.clone(),
            hint: hint.into(),
        }
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    api: FakeWorkloadApi,
    pki: Pki,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let api = FakeWorkloadApi::start(&socket).await.unwrap();
    Setup {
        _dir: dir,
        socket,
        api,
        pki: Pki::new(),
    }
}

fn source(socket: &std::path::Path) -> WorkloadApiSource {
    WorkloadApiSource::new(Some(socket.to_str().unwrap()))
        .unwrap()
        .with_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

/// Polls `cond` until it holds; fails the test after 10 s.
async fn eventually<F: Future<Output = bool>>(what: &str, mut cond: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn leaf_in_force(identity: &Identity) -> Option<Vec<u8>> {
    identity.current().map(|c| c.chain[0].to_vec())
}

#[tokio::test]
async fn fetches_the_svid_splitting_its_chain() {
    let s = setup().await;
    let svid = s.pki.issue(WEB);
    s.api.set_svids(vec![s.pki.entry(WEB, &svid, "")]);
    let identity = Identity::new();

    let creds = source(&s.socket)
        .first(&identity, Duration::from_secs(10))
        .await
        .unwrap();

    assert_eq!(creds.id.as_str(), WEB);
    let chain: Vec<&[u8]> = creds.chain.iter().map(|c| c.as_ref()).collect();
    assert_eq!(chain, [svid.leaf.as_slice(), &svid.intermediate]);
    assert_eq!(creds.key.secret_der(), svid.key.as_slice());
    let bundle: Vec<&[u8]> = creds.bundle.iter().map(|c| c.as_ref()).collect();
    assert_eq!(bundle, [s.pki.root_der.as_slice()]);
    assert_eq!(leaf_in_force(&identity), Some(svid.leaf.clone()));
    assert_eq!(s.api.accepted_calls(), 1);
    assert_eq!(s.api.refused_calls(), 0);
}

#[tokio::test]
async fn the_configured_id_or_hint_picks_the_svid() {
    let s = setup().await;
    let api_id = "spiffe://example.org/ns/default/sa/api";
    let web = s.pki.issue(WEB);
    let api = s.pki.issue(api_id);
    s.api.set_svids(vec![
        s.pki.entry(WEB, &web, "internal"),
        s.pki.entry(api_id, &api, "external"),
    ]);

    let identity = Identity::new();
    let by_hint = source(&s.socket).with_hint("external");
    let creds = by_hint.first(&identity, Duration::from_secs(10)).await;
    assert_eq!(creds.unwrap().id.as_str(), api_id);

    let identity = Identity::new();
    let by_id = source(&s.socket).with_spiffe_id(SpiffeId::parse(WEB).unwrap());
    let creds = by_id.first(&identity, Duration::from_secs(10)).await;
    assert_eq!(creds.unwrap().id.as_str(), WEB);

    let identity = Identity::new();
    let missing = source(&s.socket).with_hint("nowhere");
    let err = missing
        .first(&identity, Duration::from_millis(1500))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("hint \"nowhere\""), "{err}");
    assert!(identity.current().is_none());
}

#[tokio::test]
async fn a_rotation_pushed_by_the_agent_reaches_the_identity() {
    let s = setup().await;
    let first = s.pki.issue(WEB);
    s.api.set_svids(vec![s.pki.entry(WEB, &first, "")]);
    let identity = Arc::new(Identity::new());
    let versions = identity.subscribe();
    let src = source(&s.socket);
    src.first(&identity, Duration::from_secs(10)).await.unwrap();
    let (stop_tx, stop) = watch::channel(false);
    let run = tokio::spawn(src.run(identity.clone(), stop));
    eventually("the run's stream opens", || async {
        s.api.open_streams() == 1 && s.api.accepted_calls() == 2
    })
    .await;

    let second = s.pki.issue(WEB);
    s.api.set_svids(vec![s.pki.entry(WEB, &second, "")]);
    eventually("the rotated certificate is in force", || async {
        leaf_in_force(&identity) == Some(second.leaf.clone())
    })
    .await;
    // The run's stream resent the first SVID: not installed twice.
    assert_eq!(*versions.borrow(), 2);

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("run stops")
        .unwrap();
}

#[tokio::test]
async fn the_agent_restarting_keeps_the_certificate_then_the_next_one_arrives() {
    let s = setup().await;
    let before = s.pki.issue(WEB);
    s.api.set_svids(vec![s.pki.entry(WEB, &before, "")]);
    let identity = Arc::new(Identity::new());
    let src = source(&s.socket);
    src.first(&identity, Duration::from_secs(10)).await.unwrap();
    let (_stop_tx, stop) = watch::channel(false);
    tokio::spawn(src.run(identity.clone(), stop));
    eventually("the run's stream opens", || async {
        s.api.open_streams() == 1
    })
    .await;

    s.api.stop().await;
    assert_eq!(leaf_in_force(&identity), Some(before.leaf.clone()));
    assert!(identity.valid_at(std::time::SystemTime::now()));

    let restarted = FakeWorkloadApi::start(&s.socket).await.unwrap();
    let after = s.pki.issue(WEB);
    restarted.set_svids(vec![s.pki.entry(WEB, &after, "")]);
    eventually("the restarted agent's SVID is in force", || async {
        leaf_in_force(&identity) == Some(after.leaf.clone())
    })
    .await;
    assert!(restarted.accepted_calls() >= 1);
}

#[tokio::test]
async fn closed_streams_are_opened_again() {
    let s = setup().await;
    let first = s.pki.issue(WEB);
    s.api.set_svids(vec![s.pki.entry(WEB, &first, "")]);
    let identity = Arc::new(Identity::new());
    let (_stop_tx, stop) = watch::channel(false);
    tokio::spawn(source(&s.socket).run(identity.clone(), stop));
    eventually("the first SVID is in force", || async {
        leaf_in_force(&identity) == Some(first.leaf.clone())
    })
    .await;
    let calls = s.api.accepted_calls();

    s.api.close_streams();
    eventually("a new stream", || async {
        s.api.accepted_calls() > calls && s.api.open_streams() == 1
    })
    .await;
    let second = s.pki.issue(WEB);
    s.api.set_svids(vec![s.pki.entry(WEB, &second, "")]);
    eventually("the next SVID is in force", || async {
        leaf_in_force(&identity) == Some(second.leaf.clone())
    })
    .await;
}

#[tokio::test]
async fn an_invalid_svid_keeps_the_previous_credentials() {
    let s = setup().await;
    let good = s.pki.issue(WEB);
    s.api.set_svids(vec![s.pki.entry(WEB, &good, "")]);
    let identity = Arc::new(Identity::new());
    let versions = identity.subscribe();
    let src = source(&s.socket);
    src.first(&identity, Duration::from_secs(10)).await.unwrap();
    let (_stop_tx, stop) = watch::channel(false);
    tokio::spawn(src.run(identity.clone(), stop));
    eventually("the run's stream opens", || async {
        s.api.open_streams() == 1
    })
    .await;

    let other = s.pki.issue(WEB);
    let garbage = pb::X509Svid {
        x509_svid: b"not a certificate".to_vec(),
        ..s.pki.entry(WEB, &good, "")
    };
    // A real certificate with another certificate's key.
    let wrong_key = pb::X509Svid {
        x509_svid_key: other.key.clone(),
        ..s.pki.entry(WEB, &good, "")
    };
    let no_bundle = pb::X509Svid {
        bundle: Vec::new(),
        ..s.pki.entry(WEB, &other, "")
    };
    for bad in [garbage, wrong_key, no_bundle] {
        let sent = s.api.sent_responses();
        s.api.set_svids(vec![bad]);
        eventually("the bad response goes out", || async {
            s.api.sent_responses() > sent
        })
        .await;
    }
    let next = s.pki.issue(WEB);
    s.api.set_svids(vec![s.pki.entry(WEB, &next, "")]);
    eventually("the next good SVID is in force", || async {
        leaf_in_force(&identity) == Some(next.leaf.clone())
    })
    .await;
    // Nothing was installed between the first and the last good SVID, and
    // the stream was never dropped for a bad response.
    assert_eq!(*versions.borrow(), 2);
    assert_eq!(s.api.accepted_calls(), 2);
}

#[tokio::test]
async fn first_says_why_when_no_svid_is_usable() {
    let s = setup().await;
    let identity = Identity::new();
    // No identity issued: SPIRE's PermissionDenied.
    let err = source(&s.socket)
        .first(&identity, Duration::from_millis(1500))
        .await
        .unwrap_err();
    assert!(matches!(err, WorkloadApiError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("no identity issued"), "{err}");

    let good = s.pki.issue(WEB);
    s.api.set_svids(vec![pb::X509Svid {
        x509_svid: b"garbage".to_vec(),
        ..s.pki.entry(WEB, &good, "")
    }]);
    let err = source(&s.socket)
        .first(&identity, Duration::from_millis(1500))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(identity.current().is_none());

    let nobody = s._dir.path().join("nobody.sock");
    let err = source(&nobody)
        .first(&identity, Duration::from_millis(1000))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("connecting"), "{err}");
}

#[test]
fn endpoints_are_checked_at_construction() {
    assert!(WorkloadApiSource::new(Some("/run/spire/agent.sock")).is_ok());
    assert!(WorkloadApiSource::new(Some("unix:///run/spire/agent.sock")).is_ok());
    assert!(WorkloadApiSource::new(Some("unix:/run/spire/agent.sock")).is_ok());
    let err = WorkloadApiSource::new(Some("agent.sock")).unwrap_err();
    assert!(err.to_string().contains("absolute"), "{err}");
    let err = WorkloadApiSource::new(Some("http://x/y")).unwrap_err();
    assert!(err.to_string().contains("http://x/y"), "{err}");
}

/// One raw gRPC call on the fake (no client library), with the given
/// `workload.spiffe.io` values; returns grpc-status and grpc-message.
async fn raw_call(socket: &std::path::Path, header: &[&str]) -> (String, String) {
    let stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::post("http://localhost/SpiffeWorkloadAPI/FetchX509SVID")
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for value in header {
        req = req.header("workload.spiffe.io", *value);
    }
    // One empty X509SVIDRequest: uncompressed, length 0.
    let req = req
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), http::StatusCode::OK);
    let mut headers = resp.headers().clone();
    if !headers.contains_key("grpc-status") {
        let collected = resp.into_body().collect().await.unwrap();
        headers = collected.trailers().cloned().unwrap_or_default();
    }
    let get = |k: &str| {
        headers
            .get(k)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    (get("grpc-status"), get("grpc-message"))
}

#[tokio::test]
async fn calls_without_the_security_header_are_refused() {
    let s = setup().await;
    let missing = raw_call(&s.socket, &[]).await;
    assert_eq!(missing.0, "3", "InvalidArgument");
    assert_eq!(
        percent_decode(&missing.1),
        "security header missing from request"
    );
    let wrong = raw_call(&s.socket, &["false"]).await;
    assert_eq!(wrong.0, "3");
    let twice = raw_call(&s.socket, &["true", "true"]).await;
    assert_eq!(twice.0, "3");
    assert_eq!(s.api.refused_calls(), 3);

    // With the header, the call gets through to the (empty) workload's
    // answer: PermissionDenied.
    let ok = raw_call(&s.socket, &["true"]).await;
    assert_eq!(ok.0, "7", "PermissionDenied");
    assert_eq!(percent_decode(&ok.1), "no identity issued");
    assert_eq!(s.api.accepted_calls(), 1);
}

/// gRPC percent-encodes grpc-message.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}
