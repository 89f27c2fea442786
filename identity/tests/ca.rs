//! The built-in CA's server: a real `CaServer` on 127.0.0.1, real rustls,
//! state in temporary directories.

// Helpers outside #[test] functions unwrap too: a failure is a failed test.
#![allow(clippy::unwrap_used)]

mod ca_support;

use std::time::Duration;

use anymesh_identity::ca::{CaDir, Intermediate};
use ca_support::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

const DAY: Duration = Duration::from_secs(24 * 3600);

fn new_ca(dir: &tempfile::TempDir) -> CaDir {
    CaDir::init_root(dir.path().join("ca"), TD).unwrap()
}

#[tokio::test]
async fn join_issues_an_svid_for_exactly_the_tokens_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(&tmp);
    #[cfg(unix)]
    assert_eq!(mode(&tmp.path().join("ca/signer-1.key")), 0o600);
    let token = ca
        .mint_token(&id("reviews"), Duration::from_secs(3600))
        .unwrap();
    // Only the hash is stored.
    let stored = std::fs::read_dir(tmp.path().join("ca/tokens")).unwrap();
    for entry in stored {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        assert!(!text.contains(&token));
    }
    let server = serve(&ca, Duration::from_secs(3600)).await;
    let (key, csr) = csr();
    let answer = join(server.local_addr(), &bundle(&ca), &token, &csr)
        .await
        .unwrap();
    let chain = chain_of(&answer);
    assert_eq!(chain.len(), 1, "a root signs: the chain is the leaf alone");
    let leaf = view(&chain[0]);
    assert_eq!(leaf.uris, vec![id("reviews").to_string()]);
    assert_eq!(leaf.other_sans, 0);
    assert!(leaf.subject_empty);
    assert!(!leaf.is_ca);
    assert_eq!(leaf.key_usage, (true, false, false, false));
    assert_eq!(leaf.eku, (true, true));
    assert_eq!(
        leaf.spki,
        key.public_key_raw(),
        "the CSR's key is certified"
    );
    // One hour, plus the backdating for clock skew (at most a minute).
    assert!((3600..=3660).contains(&leaf.lifetime), "{}", leaf.lifetime);
    assert_eq!(certs(answer.1["bundle"].as_str().unwrap()), bundle(&ca));
    verifies(&chain, &bundle(&ca)).unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn a_replayed_token_is_refused_even_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(&tmp);
    let token = ca
        .mint_token(&id("reviews"), Duration::from_secs(3600))
        .unwrap();
    let server = serve(&ca, DAY).await;
    let roots = bundle(&ca);
    chain_of(
        &join(server.local_addr(), &roots, &token, &csr().1)
            .await
            .unwrap(),
    );
    let again = join(server.local_addr(), &roots, &token, &csr().1)
        .await
        .unwrap();
    assert_eq!(again.0, 403);
    assert!(
        again.1["error"].as_str().unwrap().contains("already used"),
        "{}",
        again.1
    );
    server.shutdown().await;

    // A new process on the same state directory.
    let ca = CaDir::open(tmp.path().join("ca")).unwrap();
    let server = serve(&ca, DAY).await;
    let again = join(server.local_addr(), &roots, &token, &csr().1)
        .await
        .unwrap();
    assert_eq!(again.0, 403);
    assert!(
        again.1["error"].as_str().unwrap().contains("already used"),
        "{}",
        again.1
    );
    let unknown = join(server.local_addr(), &roots, "made-up", &csr().1)
        .await
        .unwrap();
    assert_eq!(unknown.0, 403);
    assert!(
        unknown.1["error"].as_str().unwrap().contains("unknown"),
        "{}",
        unknown.1
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_expired_token_is_refused_and_a_bad_csr_does_not_spend_a_token() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(&tmp);
    let expired = ca.mint_token(&id("reviews"), Duration::ZERO).unwrap();
    let server = serve(&ca, DAY).await;
    let roots = bundle(&ca);
    let answer = join(server.local_addr(), &roots, &expired, &csr().1)
        .await
        .unwrap();
    assert_eq!(answer.0, 403);
    assert!(
        answer.1["error"].as_str().unwrap().contains("expired"),
        "{}",
        answer.1
    );

    // A CSR with another key type is refused with the reason; the token
    // stays good.
    let token = ca
        .mint_token(&id("reviews"), Duration::from_secs(60))
        .unwrap();
    for alg in [&rcgen::PKCS_ECDSA_P384_SHA384, &rcgen::PKCS_ED25519] {
        let (_, p384) = csr_with(Vec::new(), alg);
        let answer = join(server.local_addr(), &roots, &token, &p384)
            .await
            .unwrap();
        assert_eq!(answer.0, 400);
        assert!(
            answer.1["error"].as_str().unwrap().contains("P-256"),
            "{}",
            answer.1
        );
    }
    let garbage = join(server.local_addr(), &roots, &token, "not a csr")
        .await
        .unwrap();
    assert_eq!(garbage.0, 400);
    chain_of(
        &join(server.local_addr(), &roots, &token, &csr().1)
            .await
            .unwrap(),
    );
    // A token for another trust domain cannot be minted.
    let other = anymesh_identity::SpiffeId::parse("spiffe://other.org/ns/a/sa/b").unwrap();
    assert!(ca.mint_token(&other, DAY).is_err());
    server.shutdown().await;
}

#[tokio::test]
async fn a_csr_asking_for_other_names_gets_only_the_authenticated_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(&tmp);
    let token = ca.mint_token(&id("reviews"), DAY).unwrap();
    let server = serve(&ca, DAY).await;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(vec!["admin.example.org".to_string()]).unwrap();
    params.subject_alt_names.push(SanType::URI(
        "spiffe://example.org/ns/kube-system/sa/admin"
            .try_into()
            .unwrap(),
    ));
    params
        .subject_alt_names
        .push(SanType::IpAddress("10.0.0.1".parse().unwrap()));
    params
        .distinguished_name
        .push(DnType::CommonName, "root of all");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    // An extension nobody knows: ignored, not refused.
    params
        .custom_extensions
        .push(rcgen::CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 99999, 1],
            vec![5, 0],
        ));
    let greedy = params.serialize_request(&key).unwrap().pem().unwrap();
    let chain = chain_of(
        &join(server.local_addr(), &bundle(&ca), &token, &greedy)
            .await
            .unwrap(),
    );
    let leaf = view(&chain[0]);
    assert_eq!(leaf.uris, vec![id("reviews").to_string()]);
    assert_eq!(leaf.other_sans, 0);
    assert!(leaf.subject_empty);
    assert!(!leaf.is_ca);
    assert_eq!(leaf.key_usage, (true, false, false, false));
    server.shutdown().await;
}

/// Joins and returns the leaf chain and its key.
async fn joined(
    ca: &CaDir,
    addr: std::net::SocketAddr,
    sa: &str,
) -> (Vec<rustls_pki_types::CertificateDer<'static>>, KeyPair) {
    let token = ca.mint_token(&id(sa), DAY).unwrap();
    let (key, csr) = csr();
    let chain = chain_of(&join(addr, &bundle(ca), &token, &csr).await.unwrap());
    (chain, key)
}

async fn renew(
    addr: std::net::SocketAddr,
    roots: &[rustls_pki_types::CertificateDer<'static>],
    client: Option<(&[rustls_pki_types::CertificateDer<'static>], &KeyPair)>,
    csr: &str,
) -> Result<(u16, serde_json::Value), String> {
    request(
        addr,
        roots,
        client.map(|(chain, key)| (chain.to_vec(), key_der(key))),
        "POST",
        "/v1/renew",
        serde_json::json!({"csr": csr}),
    )
    .await
}

#[tokio::test]
async fn renewal_over_mutual_tls_keeps_the_identity_and_needs_this_cas_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(&tmp);
    let server = serve(&ca, DAY).await;
    let addr = server.local_addr();
    let roots = bundle(&ca);
    let (chain, key) = joined(&ca, addr, "reviews").await;

    // The CSR asks for another identity; the client certificate decides.
    let (new_key, csr) = csr_with(
        vec![SanType::URI(
            "spiffe://example.org/ns/shop/sa/payments"
                .try_into()
                .unwrap(),
        )],
        &rcgen::PKCS_ECDSA_P256_SHA256,
    );
    let renewed = chain_of(
        &renew(addr, &roots, Some((&chain, &key)), &csr)
            .await
            .unwrap(),
    );
    let leaf = view(&renewed[0]);
    assert_eq!(leaf.uris, vec![id("reviews").to_string()]);
    assert_eq!(leaf.spki, new_key.public_key_raw());
    assert_ne!(view(&chain[0]).spki, leaf.spki);

    // No client certificate: 401.
    let anonymous = renew(addr, &roots, None, &csr).await.unwrap();
    assert_eq!(anonymous.0, 401, "{}", anonymous.1);

    // A certificate of another CA (same trust domain, same identity): the
    // handshake refuses it.
    let tmp2 = tempfile::tempdir().unwrap();
    let other = new_ca(&tmp2);
    let other_server = serve(&other, DAY).await;
    let (foreign, foreign_key) = joined(&other, other_server.local_addr(), "reviews").await;
    let refused = renew(addr, &roots, Some((&foreign, &foreign_key)), &csr).await;
    assert!(refused.is_err(), "{refused:?}");
    other_server.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn root_rotation_overlaps_bundles_then_signs_with_the_new_root_then_retires_the_old() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(&tmp);
    let server = serve(&ca, DAY).await;
    let addr = server.local_addr();
    let old_roots = bundle(&ca);
    assert_eq!(old_roots.len(), 1);
    let (old_chain, old_key) = joined(&ca, addr, "reviews").await;

    // Rotate: both roots in the bundle, leaves still from the old root.
    let rotation = ca.rotate(Duration::from_secs(3600), None).unwrap();
    assert_eq!(rotation.generation, 2);
    assert!(
        ca.rotate(Duration::from_secs(3600), None).is_err(),
        "one rotation at a time"
    );
    let both = bundle(&ca);
    assert_eq!(both.len(), 2);
    assert!(both.contains(&old_roots[0]));
    let served = request(
        addr,
        &old_roots,
        None,
        "GET",
        "/v1/bundle",
        serde_json::Value::Null,
    )
    .await
    .unwrap();
    assert_eq!(certs(served.1["bundle"].as_str().unwrap()), both);
    let (during, _) = joined(&ca, addr, "ratings").await;
    assert_eq!(view(&during[0]).issuer, subject_of(&old_roots[0]));
    assert!(ca.retire().is_err(), "the new root is not active yet");

    // Activate: new leaves (and the server certificate) from the new root.
    ca.activate().unwrap();
    let new_root = both.iter().find(|r| **r != old_roots[0]).unwrap().clone();
    let (after, _) = joined(&ca, addr, "details").await;
    assert_eq!(view(&after[0]).issuer, subject_of(&new_root));
    verifies(&after, &both).unwrap();
    assert!(
        request(
            addr,
            &old_roots,
            None,
            "GET",
            "/v1/bundle",
            serde_json::Value::Null
        )
        .await
        .is_err(),
        "the server certificate now chains to the new root"
    );
    // A leaf of the old root still renews during the overlap, to the new root.
    let renewed = chain_of(
        &renew(addr, &both, Some((&old_chain, &old_key)), &csr().1)
            .await
            .unwrap(),
    );
    assert_eq!(view(&renewed[0]).issuer, subject_of(&new_root));

    // Retire: the old root leaves the bundle; its leaves no longer renew.
    assert_eq!(ca.retire().unwrap(), 1);
    assert_eq!(bundle(&ca), vec![new_root.clone()]);
    let refused = renew(addr, &both, Some((&old_chain, &old_key)), &csr().1).await;
    assert!(refused.is_err(), "{refused:?}");
    let (last, _) = joined(&ca, addr, "last").await;
    verifies(&last, &[new_root]).unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn an_overlap_activates_the_new_root_by_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(&tmp);
    let server = serve(&ca, DAY).await;
    let addr = server.local_addr();
    let old_root = bundle(&ca)[0].clone();
    ca.rotate(Duration::ZERO, None).unwrap();
    let new_root = bundle(&ca).into_iter().find(|r| *r != old_root).unwrap();
    let (leaf, _) = joined(&ca, addr, "reviews").await;
    assert_eq!(view(&leaf[0]).issuer, subject_of(&new_root));
    server.shutdown().await;
}

/// An operator's root and an intermediate it signed, in PEM files.
fn operator_pki(
    dir: &std::path::Path,
) -> (Intermediate, rustls_pki_types::CertificateDer<'static>) {
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut root_params = CertificateParams::default();
    root_params
        .distinguished_name
        .push(DnType::CommonName, "Operator Root");
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root = root_params.self_signed(&root_key).unwrap();
    let int_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut int_params = CertificateParams::default();
    int_params
        .distinguished_name
        .push(DnType::CommonName, "Operator Mesh Intermediate");
    int_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    int_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    int_params.use_authority_key_identifier_extension = true;
    let issuer = Issuer::new(root_params, &root_key);
    let int = int_params.signed_by(&int_key, &issuer).unwrap();
    std::fs::write(dir.join("root.pem"), root.pem()).unwrap();
    std::fs::write(dir.join("int.pem"), int.pem()).unwrap();
    std::fs::write(dir.join("int.key"), int_key.serialize_pem()).unwrap();
    (
        Intermediate {
            cert: dir.join("int.pem"),
            key: dir.join("int.key"),
            root: dir.join("root.pem"),
        },
        root.der().clone(),
    )
}

#[tokio::test]
async fn an_intermediate_ca_issues_leaves_that_verify_against_the_operators_root() {
    let tmp = tempfile::tempdir().unwrap();
    let (given, operator_root) = operator_pki(tmp.path());

    // A key that is not the intermediate's is refused.
    let wrong = Intermediate {
        key: tmp.path().join("wrong.key"),
        ..given.clone()
    };
    std::fs::write(
        &wrong.key,
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap()
            .serialize_pem(),
    )
    .unwrap();
    let err = CaDir::init_intermediate(tmp.path().join("bad"), TD, &wrong).unwrap_err();
    assert!(err.to_string().contains("not the key"), "{err}");

    let ca = CaDir::init_intermediate(tmp.path().join("ca"), TD, &given).unwrap();
    assert_eq!(
        bundle(&ca),
        vec![operator_root.clone()],
        "the bundle is the operator's root"
    );
    #[cfg(unix)]
    assert_eq!(mode(&tmp.path().join("ca/signer-1.key")), 0o600);
    let server = serve(&ca, DAY).await;
    let addr = server.local_addr();
    let (chain, key) = joined(&ca, addr, "reviews").await;
    assert_eq!(chain.len(), 2, "leaf, then the intermediate");
    assert_eq!(view(&chain[0]).issuer, "CN=Operator Mesh Intermediate");
    verifies(&chain, std::slice::from_ref(&operator_root)).unwrap();
    verifies(&chain[..1], std::slice::from_ref(&operator_root)).unwrap_err();

    // Renewal over mTLS works through the intermediate.
    let renewed = chain_of(
        &renew(
            addr,
            std::slice::from_ref(&operator_root),
            Some((&chain, &key)),
            &csr().1,
        )
        .await
        .unwrap(),
    );
    verifies(&renewed, std::slice::from_ref(&operator_root)).unwrap();
    assert_eq!(view(&renewed[0]).uris, vec![id("reviews").to_string()]);
    // A root rotation of an intermediate CA needs the new intermediate.
    assert!(ca.rotate(DAY, None).is_err());
    server.shutdown().await;
}
