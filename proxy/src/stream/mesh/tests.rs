//! The record layer against rustls's own buffered connections as the peer:
//! bytes either way under every split of the socket's stream, gathered
//! writes, key updates from either side, tickets kept and resumed,
//! close_notify and a cut, and damaged or hostile records (an error that
//! says what, never a panic, and no read succeeds after it).

use std::sync::Arc;

use anymesh_identity::tls::{TlsConfigs, TlsOptions};
use anymesh_identity::Credentials;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::*;

/// The configs of two proxies, `a` (client) and `b` (server), under one root.
struct Pki {
    a: TlsConfigs,
    b: TlsConfigs,
}

fn pki() -> Pki {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let root = params.self_signed(&key).expect("root");
    let issuer = Issuer::new(params, key);
    let configs = |sa: &str| {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        let uri = format!("spiffe://cluster.local/ns/default/sa/{sa}");
        params.subject_alt_names = vec![SanType::URI(uri.try_into().expect("uri"))];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.is_ca = IsCa::ExplicitNoCa;
        let cert = params.signed_by(&key, &issuer).expect("leaf");
        let creds = Credentials::from_pem(
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
            root.pem().as_bytes(),
        )
        .expect("credentials");
        TlsConfigs::build(Arc::new(creds), &TlsOptions::default()).expect("configs")
    };
    Pki {
        a: configs("a"),
        b: configs("b"),
    }
}

fn name() -> ServerName<'static> {
    ServerName::try_from("inbound-8080.anymesh").expect("name")
}

/// What the test can make the relay do to the client's bytes.
enum Tamper {
    /// Send these bytes to the server now, after all forwarded so far.
    Inject(Vec<u8>),
    /// Flip the last byte of the next chunk from the client.
    FlipNext,
    /// Forward the first `n` bytes of the next chunk from the client, then
    /// close both ways.
    CutNext(usize),
}

/// A TCP relay between a client and a server that forwards in chunks of
/// random sizes (seeded), with TCP_NODELAY, so reads see records split at
/// every place; the client's direction can be tampered with.
async fn relay(
    server: std::net::SocketAddr,
    seed: u64,
) -> (std::net::SocketAddr, mpsc::UnboundedSender<Tamper>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.expect("accept");
        let upstream = TcpStream::connect(server).await.expect("connect");
        client.set_nodelay(true).expect("nodelay");
        upstream.set_nodelay(true).expect("nodelay");
        let (mut cr, mut cw) = client.into_split();
        let (mut ur, mut uw) = upstream.into_split();
        let back = tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed);
            let mut buf = vec![0u8; 8192];
            loop {
                let n = match ur.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if chop(&mut cw, &buf[..n], &mut rng).await.is_err() {
                    break;
                }
            }
            let _ = cw.shutdown().await;
        });
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut buf = vec![0u8; 8192];
        let mut flip = false;
        let mut cut = None;
        loop {
            tokio::select! {
                // Tampering first: it was asked for before what follows.
                biased;
                Some(t) = rx.recv() => match t {
                    Tamper::Inject(bytes) => {
                        if uw.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                    Tamper::FlipNext => flip = true,
                    Tamper::CutNext(n) => cut = Some(n),
                },
                r = cr.read(&mut buf) => {
                    let n = match r {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if std::mem::take(&mut flip) {
                        buf[n - 1] ^= 0x01;
                    }
                    if let Some(keep) = cut.take() {
                        let _ = uw.write_all(&buf[..n.min(keep)]).await;
                        back.abort();
                        return;
                    }
                    if chop(&mut uw, &buf[..n], &mut rng).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = uw.shutdown().await;
        let _ = back.await;
    });
    (addr, tx)
}

async fn chop(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    mut bytes: &[u8],
    rng: &mut SmallRng,
) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = rng.random_range(1..=bytes.len().min(1500));
        w.write_all(&bytes[..n]).await?;
        bytes = &bytes[n..];
        tokio::task::yield_now().await;
    }
    Ok(())
}

/// Our server behind a relay, a rustls (tokio-rustls) client in front.
async fn our_server_and_rustls_client(
    pki: &Pki,
    seed: u64,
) -> (
    MeshTls,
    tokio_rustls::client::TlsStream<TcpStream>,
    mpsc::UnboundedSender<Tamper>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (addr, tamper) = relay(listener.local_addr().expect("addr"), seed).await;
    let server_config = pki.b.server.clone();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        accept(tcp, &[], server_config, |s| {
            s.alpn_protocol().map(<[u8]>::to_vec)
        })
        .await
        .expect("handshake")
    });
    let connector = tokio_rustls::TlsConnector::from(pki.a.client(false).clone());
    let client = connector
        .connect(name(), TcpStream::connect(addr).await.expect("connect"))
        .await
        .expect("client handshake");
    let (server, alpn) = server.await.expect("server task");
    assert_eq!(alpn.as_deref(), Some(anymesh_identity::tls::ALPN_H1));
    (server, client, tamper)
}

fn random_bytes(rng: &mut SmallRng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.random()).collect()
}

/// Writes `data` from our side in writes of random sizes, some gathered
/// from several slices.
async fn write_ours(tls: &mut MeshTls, data: &[u8], rng: &mut SmallRng) {
    let mut at = 0;
    while at < data.len() {
        let n = rng.random_range(1..=(data.len() - at).min(70_000));
        let chunk = &data[at..at + n];
        if rng.random_bool(0.5) && n > 2 {
            // Two slices (and an empty one between): small ones share a record.
            let cut = rng.random_range(1..n);
            let mut done = 0;
            while done < n {
                let rest: Vec<io::IoSlice<'_>> = if done < cut {
                    vec![
                        io::IoSlice::new(&chunk[done..cut]),
                        io::IoSlice::new(&[]),
                        io::IoSlice::new(&chunk[cut..]),
                    ]
                } else {
                    vec![io::IoSlice::new(&chunk[done..])]
                };
                done += poll_fn(|cx| Pin::new(&mut *tls).poll_write_vectored(cx, &rest))
                    .await
                    .expect("gathered write");
            }
        } else {
            tls.write_all(chunk).await.expect("write");
        }
        at += n;
    }
    tls.flush().await.expect("flush");
}

#[tokio::test]
async fn bytes_cross_both_ways_under_every_split_and_gathered_writes() {
    let pki = pki();
    for seed in 0..6u64 {
        let (mut server, client, _tamper) = our_server_and_rustls_client(&pki, seed).await;
        let mut rng = SmallRng::seed_from_u64(seed);
        let up = random_bytes(&mut rng, 200_000 + seed as usize * 977);
        let down = random_bytes(&mut rng, 150_000 + seed as usize * 1_303);
        let (mut cr, mut cw) = tokio::io::split(client);
        let up2 = up.clone();
        let writer = tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(seed + 100);
            let mut at = 0;
            while at < up2.len() {
                let n = rng.random_range(1..=(up2.len() - at).min(40_000));
                cw.write_all(&up2[at..at + n]).await.expect("client write");
                at += n;
            }
            cw.flush().await.expect("client flush");
            cw
        });
        let down2 = down.clone();
        let reader = tokio::spawn(async move {
            let mut got = vec![0u8; down2.len()];
            cr.read_exact(&mut got).await.expect("client read");
            assert!(
                got == down2,
                "seed {seed}: the client read other bytes than were sent"
            );
            cr
        });
        let mut got = vec![0u8; up.len()];
        let mut at = 0;
        while at < got.len() {
            // Reads of random sizes from our side.
            let end = (at + rng.random_range(1..=20_000)).min(got.len());
            let n = server.read(&mut got[at..end]).await.expect("server read");
            assert!(n > 0, "seed {seed}: early end");
            at += n;
        }
        assert!(
            got == up,
            "seed {seed}: our server read other bytes than were sent"
        );
        write_ours(&mut server, &down, &mut rng).await;
        let _ = writer.await.expect("writer");
        let _ = reader.await.expect("reader");
    }
}

#[tokio::test]
async fn our_client_keeps_the_tickets_and_the_next_connection_resumes() {
    let pki = pki();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(pki.b.server.clone());
    let server = tokio::spawn(async move {
        let mut kinds = Vec::new();
        for _ in 0..2 {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut tls = acceptor.accept(tcp).await.expect("server handshake");
            kinds.push(tls.get_ref().1.handshake_kind());
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.expect("read");
            tls.write_all(b"pong").await.expect("write");
            tls.flush().await.expect("flush");
            // Our client's close_notify ends the stream cleanly.
            let mut rest = Vec::new();
            tls.read_to_end(&mut rest).await.expect("clean end");
            assert!(rest.is_empty());
        }
        kinds
    });
    for _ in 0..2 {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let (mut tls, peer) = connect(tcp, pki.a.client(false).clone(), name(), |s| {
            anymesh_identity::tls::peer_id(s)
        })
        .await
        .expect("handshake");
        assert_eq!(
            peer.map(|p| p.to_string()).as_deref(),
            Some("spiffe://cluster.local/ns/default/sa/b")
        );
        tls.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        // The server's tickets come before its answer.
        tls.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"pong");
        tls.shutdown().await.expect("close_notify");
    }
    let kinds = server.await.expect("server");
    assert_eq!(
        kinds,
        [
            Some(rustls::HandshakeKind::Full),
            Some(rustls::HandshakeKind::Resumed)
        ]
    );
}

#[tokio::test]
async fn key_updates_from_either_side_keep_the_stream() {
    let pki = pki();
    let (mut server, mut client, _tamper) = our_server_and_rustls_client(&pki, 7).await;
    // Ours updates its sending key every 3 records; rustls follows.
    server.update_key_after(3);
    let mut rng = SmallRng::seed_from_u64(7);
    for round in 0..12 {
        let down = random_bytes(&mut rng, 1 + round * 5_000);
        write_ours(&mut server, &down, &mut rng).await;
        let mut got = vec![0u8; down.len()];
        client.read_exact(&mut got).await.expect("client read");
        assert!(got == down, "round {round}");
        server.update_key_after(3);
        // rustls asks for an update (update_requested): ours updates its
        // receiving key and answers with its own.
        client.get_mut().1.refresh_traffic_keys().expect("refresh");
        let up = random_bytes(&mut rng, 1 + round * 3_000);
        client.write_all(&up).await.expect("client write");
        client.flush().await.expect("client flush");
        let mut got = vec![0u8; up.len()];
        server.read_exact(&mut got).await.expect("server read");
        assert!(got == up, "round {round}");
    }
}

#[tokio::test]
async fn close_notify_is_the_end_either_way_and_a_cut_record_is_an_error() {
    let pki = pki();
    // rustls closes: ours reads the end.
    let (mut server, mut client, _t) = our_server_and_rustls_client(&pki, 1).await;
    client.write_all(b"last words").await.expect("write");
    client.shutdown().await.expect("shutdown");
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.expect("a clean end");
    assert_eq!(got, b"last words");
    // Ours closes: rustls reads a clean end (no "closed without close_notify").
    server.write_all(b"bye").await.expect("write");
    server.shutdown().await.expect("shutdown");
    let mut got = Vec::new();
    client
        .read_to_end(&mut got)
        .await
        .expect("a clean end at the client");
    assert_eq!(got, b"bye");

    // The socket ends inside a record: an error, not a short read.
    let (mut server, mut client, tamper) = our_server_and_rustls_client(&pki, 2).await;
    tamper.send(Tamper::CutNext(30)).expect("tamper");
    client.write_all(&[7u8; 100]).await.expect("write");
    client.flush().await.expect("flush");
    let e = server.read_to_end(&mut Vec::new()).await.expect_err("cut");
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
    assert!(e.to_string().contains("inside a TLS record"), "{e}");
}

/// After one clean exchange (every handshake byte has passed the relay),
/// `bytes` reach our server as they are; the read fails with a message
/// containing `says`, and so does every later read.
async fn hostile(pki: &Pki, seed: u64, bytes: Vec<u8>, says: &str) {
    let (mut server, mut client, tamper) = our_server_and_rustls_client(pki, seed).await;
    client.write_all(b"hello").await.expect("write");
    client.flush().await.expect("flush");
    let mut got = [0u8; 5];
    server.read_exact(&mut got).await.expect("read");
    tamper.send(Tamper::Inject(bytes)).expect("tamper");
    let e = server
        .read(&mut [0u8; 64])
        .await
        .expect_err("hostile bytes are an error");
    assert!(e.to_string().contains(says), "{says:?} not in {e}");
    let again = server.read(&mut [0u8; 64]).await.expect_err("still failed");
    assert!(again.to_string().contains("failed earlier"), "{again}");
}

#[tokio::test]
async fn damaged_and_hostile_records_fail_the_read_with_a_reason() {
    let pki = pki();
    // A flipped bit in a real record.
    let (mut server, mut client, tamper) = our_server_and_rustls_client(&pki, 3).await;
    tamper.send(Tamper::FlipNext).expect("tamper");
    client.write_all(b"payload").await.expect("write");
    client.flush().await.expect("flush");
    let e = server
        .read(&mut [0u8; 64])
        .await
        .expect_err("a damaged record");
    assert!(e.to_string().contains("bad record MAC"), "{e}");

    hostile(&pki, 4, vec![22, 3, 3, 0, 4, 1, 2, 3, 4], "content type 22").await;
    hostile(&pki, 5, vec![23, 3, 1, 0, 20], "version 3.1").await;
    hostile(&pki, 6, vec![23, 3, 3, 0x41, 0x01], "record overflow").await;
    hostile(&pki, 7, vec![23, 3, 3, 0, 3, 1, 2, 3], "too short").await;
    let mut garbage = vec![23, 3, 3, 0, 40];
    garbage.extend([0x55u8; 40]);
    hostile(&pki, 8, garbage, "bad record MAC").await;
}

#[tokio::test]
async fn random_bytes_after_the_handshake_are_an_error_and_never_a_panic() {
    let pki = pki();
    let mut rng = SmallRng::seed_from_u64(42);
    for seed in 0..24u64 {
        let len = rng.random_range(1..400);
        let mut bytes = random_bytes(&mut rng, len);
        // Half of them look like a protected record's header.
        if seed % 2 == 0 && bytes.len() > 5 {
            let len = (bytes.len() - 5) as u16;
            bytes[..5].copy_from_slice(&[23, 3, 3, (len >> 8) as u8, len as u8]);
        }
        let (mut server, mut client, tamper) = our_server_and_rustls_client(&pki, 100 + seed).await;
        client.write_all(b"x").await.expect("write");
        client.flush().await.expect("flush");
        server.read_exact(&mut [0u8; 1]).await.expect("read");
        tamper.send(Tamper::Inject(bytes)).expect("tamper");
        drop(client);
        // Whatever the bytes, the read ends in an error (an incomplete
        // record and then the cut counts too) and nothing panics.
        let r = server.read_to_end(&mut Vec::new()).await;
        assert!(
            r.is_err(),
            "seed {seed}: random bytes were read as data: {r:?}"
        );
    }
}

/// A refused handshake tells the peer why: rustls's alert goes out before
/// the connection closes (here our client refuses a server of another CA,
/// and the rustls server reads the alert).
#[tokio::test]
async fn a_refused_handshake_sends_the_alert() {
    let ours = pki();
    let theirs = pki();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(theirs.b.server.clone());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        acceptor.accept(tcp).await.map(drop)
    });
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let ours_refused = connect(tcp, ours.a.client(false).clone(), name(), |_| ())
        .await
        .map(drop)
        .expect_err("another CA's server is refused");
    let theirs_saw = server
        .await
        .expect("server task")
        .expect_err("the server's handshake fails");
    assert!(
        theirs_saw.to_string().to_lowercase().contains("alert"),
        "the server saw the reason, not a bare close: {theirs_saw} (ours: {ours_refused})"
    );
}
