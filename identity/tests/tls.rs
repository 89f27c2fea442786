//! Mesh mutual TLS with real rustls on both ends over 127.0.0.1: who is
//! accepted, who is refused and with which reason, resumption, rotation.

mod tls_pki;

use std::sync::Arc;

use anymesh_identity::tls::{
    check_peer, client_config, peer, peer_id, server_config, PeerError, TlsConfigs, TlsOptions,
    ALPN_H1, ALPN_H2,
};
use anymesh_identity::{Credentials, CredentialsError, Identity, SpiffeId, SvidError};
use rcgen::KeyUsagePurpose;
use rustls::version::{TLS12, TLS13};
use rustls::{HandshakeKind, ProtocolVersion};
use tls_pki::{anonymous_client, handshake, Ca, Spec};

const TD: &str = "cluster.local";

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::for_account(TD, ns, sa).expect("id")
}

#[tokio::test]
async fn both_sides_see_the_peer_identity_and_secure_naming_compares_exactly() {
    let ca = Ca::new(TD);
    let reviews = ca.svid("shop", "reviews").creds(&[&ca]);
    let product = ca.svid("shop", "productpage").creds(&[&ca]);
    let out = handshake(
        server_config(&reviews).expect("server"),
        client_config(&product, &[ALPN_H2]).expect("client"),
    )
    .await;
    let server = out.server.expect("server accepts");
    let client = out.client.expect("client connects");
    let (_, s) = server.get_ref();
    let (_, c) = client.get_ref();
    assert_eq!(peer(s), Ok(id("shop", "productpage")));
    assert_eq!(peer_id(c), Some(id("shop", "reviews")));
    assert_eq!(
        check_peer(c, &id("shop", "reviews")),
        Ok(id("shop", "reviews"))
    );
    assert_eq!(
        check_peer(c, &id("shop", "ratings")),
        Err(PeerError::Mismatch {
            expected: id("shop", "ratings"),
            found: id("shop", "reviews"),
        })
    );
    assert_eq!(s.alpn_protocol(), Some(ALPN_H2));
    assert_eq!(c.alpn_protocol(), Some(ALPN_H2));
    assert_eq!(c.protocol_version(), Some(ProtocolVersion::TLSv1_3));

    let out = handshake(
        server_config(&reviews).expect("server"),
        client_config(&product, &[ALPN_H1]).expect("client"),
    )
    .await;
    assert_eq!(
        out.client.expect("h1").get_ref().1.alpn_protocol(),
        Some(ALPN_H1)
    );
}

/// A certificate a peer presents and the reason it must be refused with.
struct Case {
    name: &'static str,
    leaf: tls_pki::Leaf,
    want: fn(&PeerError) -> bool,
}

fn bad_peers(ours: &Ca) -> Vec<Case> {
    let other = Ca::new("other.example");
    let rogue = Ca::new(TD);
    let stranger = Ca::named(TD, "a stranger");
    let uri = format!("spiffe://{TD}/ns/shop/sa/intruder");
    let mut no_san = Spec::svid(&uri);
    no_san.uris.clear();
    let mut two_sans = Spec::svid(&uri);
    two_sans
        .uris
        .push(format!("spiffe://{TD}/ns/shop/sa/other"));
    let mut ca_leaf = Spec::svid(&uri);
    ca_leaf.ca = true;
    ca_leaf.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
    ];
    let mut cert_sign = Spec::svid(&uri);
    cert_sign.key_usages.push(KeyUsagePurpose::KeyCertSign);
    let mut no_digital_signature = Spec::svid(&uri);
    no_digital_signature.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    vec![
        Case {
            name: "another trust domain, our CA",
            leaf: ours.leaf(Spec::svid("spiffe://other.example/ns/shop/sa/x")),
            want: |e| {
                matches!(e, PeerError::ForeignTrustDomain { id, trusted }
                    if id.trust_domain() == "other.example" && trusted == &[TD.to_string()])
                    && e.to_string().contains("trust domain other.example")
            },
        },
        Case {
            name: "another trust domain, its own CA",
            leaf: other.svid("shop", "x"),
            want: |e| matches!(e, PeerError::ForeignTrustDomain { id, .. } if id.trust_domain() == "other.example"),
        },
        Case {
            name: "expired",
            leaf: ours.leaf(Spec::svid(&uri).expired()),
            want: |e| {
                matches!(
                    e,
                    PeerError::Expired {
                        not_after: Some(978307200)
                    }
                )
            },
        },
        Case {
            name: "not yet valid",
            leaf: ours.leaf(Spec::svid(&uri).not_yet_valid()),
            want: |e| {
                matches!(
                    e,
                    PeerError::NotYetValid {
                        not_before: Some(_)
                    }
                )
            },
        },
        Case {
            name: "unknown CA",
            leaf: stranger.svid("shop", "intruder"),
            want: |e| *e == PeerError::UnknownCa,
        },
        Case {
            name: "unknown CA of the same name",
            leaf: rogue.svid("shop", "intruder"),
            want: |e| *e == PeerError::UnknownCa,
        },
        Case {
            name: "no URI SAN",
            leaf: ours.leaf(no_san),
            want: |e| *e == PeerError::Svid(SvidError::NoUriSan),
        },
        Case {
            name: "two URI SANs",
            leaf: ours.leaf(two_sans),
            want: |e| *e == PeerError::Svid(SvidError::SeveralUriSans(2)),
        },
        Case {
            name: "a CA certificate as leaf",
            leaf: ours.leaf(ca_leaf),
            want: |e| *e == PeerError::Svid(SvidError::CaCertificate),
        },
        Case {
            name: "keyCertSign on a leaf",
            leaf: ours.leaf(cert_sign),
            want: |e| matches!(e, PeerError::Svid(SvidError::KeyUsage(m)) if m.contains("keyCertSign")),
        },
        Case {
            name: "no digitalSignature",
            leaf: ours.leaf(no_digital_signature),
            want: |e| matches!(e, PeerError::Svid(SvidError::KeyUsage(m)) if m.contains("digitalSignature")),
        },
        Case {
            name: "not a SPIFFE ID",
            leaf: ours.leaf(Spec::svid("https://reviews.shop.example/")),
            want: |e| matches!(e, PeerError::Svid(SvidError::NotSpiffeId(_))),
        },
        Case {
            name: "a trust domain's own ID",
            leaf: ours.leaf(Spec::svid(&format!("spiffe://{TD}"))),
            want: |e| matches!(e, PeerError::Svid(SvidError::NoPath(_))),
        },
    ]
}

#[tokio::test]
async fn the_server_refuses_bad_clients_naming_the_reason() {
    let ours = Ca::new(TD);
    let server = server_config(&ours.svid("shop", "reviews").creds(&[&ours])).expect("server");
    for case in bad_peers(&ours) {
        let out = handshake(server.clone(), case.leaf.raw_client(&[&TLS13])).await;
        let err = out
            .server
            .err()
            .unwrap_or_else(|| panic!("{}: accepted", case.name));
        let reason = PeerError::from_io(&err).unwrap_or_else(|| panic!("{}: {err}", case.name));
        assert!((case.want)(&reason), "{}: {reason:?} ({reason})", case.name);
        // The client hears it was refused.
        let client_err = out
            .client
            .err()
            .unwrap_or_else(|| panic!("{}: client ok", case.name));
        assert!(
            matches!(
                PeerError::from_io(&client_err),
                Some(PeerError::RefusedByPeer(_))
            ),
            "{}: {client_err}",
            case.name
        );
    }
}

#[tokio::test]
async fn the_client_refuses_bad_servers_naming_the_reason() {
    let ours = Ca::new(TD);
    let client =
        client_config(&ours.svid("shop", "product").creds(&[&ours]), &[ALPN_H1]).expect("client");
    for case in bad_peers(&ours) {
        let out = handshake(case.leaf.raw_server(), client.clone()).await;
        let err = out
            .client
            .err()
            .unwrap_or_else(|| panic!("{}: connected", case.name));
        let reason = PeerError::from_io(&err).unwrap_or_else(|| panic!("{}: {err}", case.name));
        assert!((case.want)(&reason), "{}: {reason:?} ({reason})", case.name);
        assert!(out.server.is_err(), "{}: server ok", case.name);
    }
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let ca = Ca::new(TD);
    let server = server_config(&ca.svid("shop", "reviews").creds(&[&ca])).expect("server");
    let out = handshake(server, anonymous_client()).await;
    let err = out.server.expect_err("refused");
    assert_eq!(PeerError::from_io(&err), Some(PeerError::NoCertificate));
}

/// Mesh mTLS is TLS 1.3 only: the proxy's record layer speaks nothing else.
#[tokio::test]
async fn a_tls12_client_is_refused() {
    let ca = Ca::new(TD);
    let server = server_config(&ca.svid("shop", "reviews").creds(&[&ca])).expect("server");
    let out = handshake(server, ca.svid("shop", "old").raw_client(&[&TLS12])).await;
    let err = out.server.expect_err("refused");
    assert!(err.to_string().contains("Tls12NotOffered"), "{err}");
}

#[tokio::test]
async fn a_bundle_with_two_roots_accepts_peers_of_both() {
    let old = Ca::new(TD);
    let new = Ca::new(TD);
    let server = server_config(&old.svid("shop", "reviews").creds(&[&old, &new])).expect("server");
    for (name, ca) in [("old root", &old), ("new root", &new)] {
        let client = client_config(&ca.svid("shop", "product").creds(&[&old, &new]), &[ALPN_H1])
            .expect("client");
        let out = handshake(server.clone(), client).await;
        let s = out.server.unwrap_or_else(|e| panic!("{name}: {e}"));
        out.client.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(peer(s.get_ref().1), Ok(id("shop", "product")), "{name}");
    }
    // The same peer under the new root, against a bundle with the old root
    // only: refused.
    let old_only = server_config(&old.svid("shop", "reviews").creds(&[&old])).expect("server");
    let client = client_config(
        &new.svid("shop", "product").creds(&[&old, &new]),
        &[ALPN_H1],
    )
    .expect("client");
    let err = handshake(old_only, client)
        .await
        .server
        .expect_err("refused");
    assert_eq!(PeerError::from_io(&err), Some(PeerError::UnknownCa));
}

#[tokio::test]
async fn a_configured_set_of_trust_domains_admits_a_federated_peer() {
    let ours = Ca::new(TD);
    let theirs = Ca::new("partner.example");
    let both = TlsOptions {
        trust_domains: vec![TD.to_string(), "partner.example".to_string()],
    };
    let visitor = theirs.svid("pay", "gateway").creds(&[&ours, &theirs]);
    let client = TlsConfigs::build(Arc::new(visitor), &both)
        .expect("client")
        .client_h1;
    let leaf = ours.svid("shop", "reviews");

    let federated = Identity::with_options(both);
    federated
        .install(leaf.creds(&[&ours, &theirs]))
        .expect("install");
    let out = handshake(federated.tls().expect("tls").server.clone(), client.clone()).await;
    let s = out.server.expect("accepted");
    assert_eq!(
        peer(s.get_ref().1).map(|id| id.to_string()),
        Ok("spiffe://partner.example/ns/pay/sa/gateway".to_string())
    );

    // Same bundle, the default set (our own trust domain): refused.
    let own = Identity::new();
    own.install(leaf.creds(&[&ours, &theirs])).expect("install");
    let out = handshake(own.tls().expect("tls").server.clone(), client).await;
    let err = out.server.expect_err("refused");
    assert!(matches!(
        PeerError::from_io(&err),
        Some(PeerError::ForeignTrustDomain { id, .. }) if id.trust_domain() == "partner.example"
    ));
}

#[tokio::test]
async fn sessions_resume_and_keep_the_peer_identity_across_a_rotation() {
    let ca = Ca::new(TD);
    let server = Identity::new();
    server
        .install(ca.svid("shop", "reviews").creds(&[&ca]))
        .expect("install");
    let client = Identity::new();
    client
        .install(ca.svid("shop", "product").creds(&[&ca]))
        .expect("install");
    let client_h2 = client.tls().expect("client configs").client(true).clone();
    let mut kinds = Vec::new();
    for round in 0..3 {
        if round == 2 {
            // The server rotates its certificate (same bundle): the tickets it
            // issued before still resume.
            server
                .install(ca.svid("shop", "reviews").creds(&[&ca]))
                .expect("rotate");
        }
        let out = handshake(
            server.tls().expect("server").server.clone(),
            client_h2.clone(),
        )
        .await;
        let s = out.server.expect("accepted");
        let c = out.client.expect("connected");
        kinds.push(c.get_ref().1.handshake_kind());
        assert_eq!(
            peer(s.get_ref().1),
            Ok(id("shop", "product")),
            "round {round}"
        );
        assert_eq!(
            check_peer(c.get_ref().1, &id("shop", "reviews")),
            Ok(id("shop", "reviews")),
            "round {round}"
        );
    }
    assert_eq!(
        kinds,
        [
            Some(HandshakeKind::Full),
            Some(HandshakeKind::Resumed),
            Some(HandshakeKind::Resumed)
        ]
    );
}

#[tokio::test]
async fn an_install_whose_configs_cannot_be_built_keeps_the_previous_ones() {
    let ca = Ca::new(TD);
    let identity = Identity::new();
    let mut versions = identity.subscribe();
    identity
        .install(ca.svid("shop", "reviews").creds(&[&ca]))
        .expect("install");
    assert!(versions.has_changed().expect("sender alive"));
    versions.mark_unchanged();
    let before = identity.tls().expect("configs");
    assert_eq!(before.creds.id, id("shop", "reviews"));
    assert!(identity.last_error().is_none());

    // A bundle "certificate" that is no certificate: Credentials takes it
    // (it reads only the leaf), the TLS configs cannot be built.
    let leaf = ca.svid("shop", "ratings");
    let garbage = rustls::pki_types::CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
    let creds = Credentials::new(vec![leaf.der.clone()], leaf.key(), vec![garbage]).expect("creds");
    let err = identity
        .install(creds)
        .expect_err("configs cannot be built");
    assert!(err.to_string().contains("trust bundle"), "{err}");
    assert!(Arc::ptr_eq(&identity.tls().expect("configs"), &before));
    assert_eq!(identity.current().expect("creds").id, id("shop", "reviews"));
    assert!(!versions.has_changed().expect("sender alive"));
    let reported = identity.last_error().expect("the error is kept");
    assert!(
        reported.contains("ns/shop/sa/ratings") && reported.contains("trust bundle"),
        "{reported}"
    );
}

#[test]
fn credentials_refuse_a_key_of_another_certificate_and_non_svid_leaves() {
    let ca = Ca::new(TD);
    let a = ca.svid("shop", "a");
    let b = ca.svid("shop", "b");
    let err = Credentials::new(vec![a.der.clone()], b.key(), vec![ca.der.clone()])
        .expect_err("mismatched key");
    assert!(matches!(err, CredentialsError::KeyMismatch), "{err}");
    let err = Credentials::from_pem(a.pem.as_bytes(), b.key_pem.as_bytes(), ca.pem.as_bytes())
        .expect_err("mismatched key");
    assert!(matches!(err, CredentialsError::KeyMismatch), "{err}");

    for case in bad_peers(&ca) {
        let got = Credentials::new(
            vec![case.leaf.der.clone()],
            case.leaf.key(),
            vec![ca.der.clone()],
        );
        let svid = matches!(&got, Err(CredentialsError::NotSvid(_)));
        let time_or_ca = matches!(
            case.name,
            "expired"
                | "not yet valid"
                | "unknown CA"
                | "unknown CA of the same name"
                | "another trust domain, our CA"
                | "another trust domain, its own CA"
        );
        // Credentials check the leaf's form and key; validity, issuer and
        // trust domain are the verifier's business.
        assert_eq!(svid, !time_or_ca, "{}: {got:?}", case.name);
    }
}
