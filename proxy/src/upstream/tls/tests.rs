//! The origination configs: files named in errors, reread when they
//! change; the server check: chain, server name, subjectAltNames.

use std::path::Path;

use anymesh_core::routes::TlsOrigination;
use rcgen::{
    BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType, PKCS_ECDSA_P256_SHA256,
};

use super::*;

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).expect("self-signed");
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A leaf with a DNS SAN and a URI SAN.
fn leaf(ca: &Ca) -> CertificateDer<'static> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::new(vec!["api.test".to_string()]).expect("params");
    params.subject_alt_names.push(SanType::URI(
        "spiffe://td/ns/a/sa/b".try_into().expect("uri"),
    ));
    params
        .signed_by(&key, &ca.issuer)
        .expect("signed")
        .der()
        .clone()
}

fn origination(settings: TlsOrigination, mutual: bool) -> Origination {
    Origination {
        mutual,
        settings,
        server_name: "api.test".into(),
        cluster: "outbound|443||api.test".into(),
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
}

#[test]
fn a_missing_or_unusable_file_is_named_in_the_error() {
    let dir = tempfile::tempdir().expect("dir");
    let configs = OriginationConfigs::default();
    let missing = dir.path().join("missing.pem");
    let o = origination(
        TlsOrigination {
            ca_certificates: Some(missing.clone()),
            ..TlsOrigination::default()
        },
        false,
    );
    let e = configs.config(&o, false).expect_err("missing CA file");
    assert!(
        e.contains("caCertificates") && e.contains(&*missing.to_string_lossy()),
        "{e}"
    );
    let garbage = dir.path().join("garbage.pem");
    write(&garbage, "not a certificate");
    let o = origination(
        TlsOrigination {
            ca_certificates: Some(garbage.clone()),
            ..TlsOrigination::default()
        },
        false,
    );
    let e = configs.config(&o, false).expect_err("garbage CA file");
    assert!(
        e.contains("no PEM certificate") && e.contains("garbage.pem"),
        "{e}"
    );
    // MUTUAL without a key; with a key file that holds no key.
    let ca_file = dir.path().join("ca.pem");
    write(&ca_file, &ca("test root").pem);
    let no_key = TlsOrigination {
        ca_certificates: Some(ca_file.clone()),
        client_certificate: Some(ca_file.clone()),
        ..TlsOrigination::default()
    };
    let e = configs
        .config(&origination(no_key.clone(), true), false)
        .expect_err("no key");
    assert!(e.contains("privateKey"), "{e}");
    let bad_key = TlsOrigination {
        private_key: Some(ca_file.clone()),
        ..no_key
    };
    let e = configs
        .config(&origination(bad_key, true), false)
        .expect_err("bad key");
    assert!(e.contains("privateKey") && e.contains("ca.pem"), "{e}");
}

#[test]
fn a_file_changed_on_disk_is_read_again_and_configs_are_shared_otherwise() {
    let dir = tempfile::tempdir().expect("dir");
    let ca_file = dir.path().join("ca.pem");
    write(&ca_file, &ca("test root").pem);
    let configs = OriginationConfigs::default();
    let o = origination(
        TlsOrigination {
            ca_certificates: Some(ca_file.clone()),
            ..TlsOrigination::default()
        },
        false,
    );
    let first = configs.config(&o, false).expect("config");
    let again = configs.config(&o, false).expect("config");
    assert!(
        Arc::ptr_eq(&first, &again),
        "cached while the file is unchanged"
    );
    assert_eq!(first.alpn_protocols, [b"http/1.1".to_vec()]);
    assert_eq!(
        configs.config(&o, true).expect("h2").alpn_protocols,
        [b"h2".to_vec()]
    );
    write(&ca_file, "broken now");
    let e = configs
        .config(&o, false)
        .expect_err("the broken file is read");
    assert!(e.contains("ca.pem"), "{e}");
    write(&ca_file, &ca("test root").pem);
    assert!(configs.config(&o, false).is_ok(), "repaired");
}

fn verifier(ca: &Ca, names: &[&str], insecure: bool) -> OriginVerifier {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).expect("pem"))
        .expect("root");
    OriginVerifier {
        roots: Arc::new(roots),
        names: names.iter().map(|n| SanName::of(n)).collect(),
        insecure,
        algs: provider().signature_verification_algorithms,
    }
}

fn verify(v: &OriginVerifier, cert: &CertificateDer<'_>, server_name: &str) -> Result<(), String> {
    let name = ServerName::try_from(server_name.to_string()).expect("name");
    v.verify_server_cert(cert, &[], &name, &[], UnixTime::now())
        .map(drop)
        // As the pool reports it.
        .map_err(|e| anymesh_identity::tls::PeerError::from_rustls(&e).to_string())
}

#[test]
fn the_server_is_verified_by_chain_and_by_name_or_subject_alt_names() {
    let (ca, other) = (ca("test root"), ca("other root"));
    let cert = leaf(&ca);
    // The server name, without subjectAltNames.
    assert_eq!(
        verify(&verifier(&ca, &[], false), &cert, "api.test"),
        Ok(())
    );
    let e = verify(&verifier(&ca, &[], false), &cert, "other.test").expect_err("wrong name");
    assert!(e.contains("not valid for name"), "{e}");
    // Another CA.
    let e = verify(&verifier(&other, &[], false), &cert, "api.test").expect_err("unknown CA");
    assert!(e.contains("signed by a CA not in"), "{e}");
    // subjectAltNames replace the server name: DNS or URI, any of them.
    for names in [&["api.test"][..], &["nope.test", "spiffe://td/ns/a/sa/b"]] {
        assert_eq!(
            verify(&verifier(&ca, names, false), &cert, "sni.only"),
            Ok(()),
            "{names:?}"
        );
    }
    let e = verify(
        &verifier(&ca, &["nope.test", "spiffe://td/ns/a/sa/c"], false),
        &cert,
        "api.test",
    )
    .expect_err("no name matches");
    assert!(e.contains("none of the subjectAltNames"), "{e}");
    // insecureSkipVerify: anything goes.
    assert_eq!(
        verify(&verifier(&other, &[], true), &cert, "x.test"),
        Ok(())
    );
}
