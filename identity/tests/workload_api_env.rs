//! `SPIFFE_ENDPOINT_SOCKET` names the Workload API when the configuration
//! does not (its own test binary: it sets the process environment).

#![allow(clippy::unwrap_used)] // a failure is the test failing

use std::time::Duration;

use anymesh_identity::workload_api::fake::FakeWorkloadApi;
use anymesh_identity::workload_api::{WorkloadApiError, WorkloadApiSource, ENDPOINT_ENV};
use anymesh_identity::Identity;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

#[tokio::test]
async fn the_endpoint_comes_from_the_environment() {
    std::env::remove_var(ENDPOINT_ENV);
    assert!(matches!(
        WorkloadApiSource::new(None),
        Err(WorkloadApiError::NoEndpoint)
    ));

    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let api = FakeWorkloadApi::start(&socket).await.unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let id = "spiffe://example.org/ns/default/sa/web";
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let leaf = leaf.signed_by(&key, &ca).unwrap();
    api.set_svids(vec![anymesh_identity::workload_api::fake::pb::X509Svid {
        spiffe_id: id.into(),
        x509_svid: leaf.der().to_vec(),
        x509_svid_key: key.serialize_der(),
        bundle: ca.der().to_vec(),
        hint: String::new(),
    }]);

    std::env::set_var(ENDPOINT_ENV, format!("unix://{}", socket.display()));
    let source = WorkloadApiSource::new(None).unwrap();
    let identity = Identity::new();
    let creds = source
        .first(&identity, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(creds.id.as_str(), id);
    assert_eq!(creds.chain.len(), 1);
}
