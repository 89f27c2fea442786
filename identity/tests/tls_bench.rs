//! Handshakes per second per core with the mesh configs (ECDSA P-256
//! leaves, ring), client and server in one thread over memory, each side's
//! CPU time measured apart. Run in release:
//! `cargo test --release -p anymesh-identity --test tls_bench -- --ignored --nocapture`.

mod tls_pki;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anymesh_identity::tls::{client_config, peer, ALPN_H2};
use anymesh_identity::Identity;
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, HandshakeKind, ServerConfig, ServerConnection};
use tls_pki::Ca;

/// One handshake; returns the server's and the client's CPU time.
fn handshake(
    server: &Arc<ServerConfig>,
    client: &Arc<ClientConfig>,
) -> (Duration, Duration, HandshakeKind) {
    let sni = ServerName::try_from("reviews.shop.routing.invalid").expect("sni");
    let mut s_time = Duration::ZERO;
    let mut c_time = Duration::ZERO;
    let t = Instant::now();
    let mut c = ClientConnection::new(client.clone(), sni).expect("client");
    c_time += t.elapsed();
    let t = Instant::now();
    let mut s = ServerConnection::new(server.clone()).expect("server");
    s_time += t.elapsed();
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        let mut moved = false;
        let t = Instant::now();
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).expect("client write");
        }
        c_time += t.elapsed();
        if !buf.is_empty() {
            moved = true;
            let t = Instant::now();
            let mut rd = &buf[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).expect("server read");
            }
            s.process_new_packets().expect("server handshake");
            s_time += t.elapsed();
        }
        let t = Instant::now();
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).expect("server write");
        }
        s_time += t.elapsed();
        if !buf.is_empty() {
            moved = true;
            let t = Instant::now();
            let mut rd = &buf[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).expect("client read");
            }
            c.process_new_packets().expect("client handshake");
            c_time += t.elapsed();
        }
        if !moved {
            break;
        }
    }
    assert!(!c.is_handshaking() && !s.is_handshaking());
    assert!(peer(&s).is_ok());
    (s_time, c_time, c.handshake_kind().expect("kind"))
}

/// The CPU time this thread has run (Linux: /proc/thread-self/schedstat).
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Measures `n` handshakes, the client config of each taken in turn from
/// `clients` (after 200 to warm up).
fn run(name: &str, server: &Arc<ServerConfig>, clients: &[Arc<ClientConfig>], want: HandshakeKind) {
    let n = 3000u32;
    let mut clients = clients.iter().cycle();
    let mut next = || clients.next().expect("a client config");
    for _ in 0..200 {
        handshake(server, next());
    }
    let (mut s_total, mut c_total) = (Duration::ZERO, Duration::ZERO);
    let cpu_start = thread_cpu();
    for _ in 0..n {
        let (s, c, kind) = handshake(server, next());
        assert_eq!(kind, want, "{name}");
        s_total += s;
        c_total += c;
    }
    // On a shared machine the wall-clock sums include time the thread was
    // not running: scale them to the thread's CPU time, keeping their ratio.
    if let (Some(start), Some(end)) = (cpu_start, thread_cpu()) {
        let cpu = end.saturating_sub(start).as_secs_f64();
        let wall = (s_total + c_total).as_secs_f64();
        if cpu > 0.0 && wall > cpu {
            s_total = s_total.mul_f64(cpu / wall);
            c_total = c_total.mul_f64(cpu / wall);
        }
    }
    let per_sec = |d: Duration| f64::from(n) / d.as_secs_f64();
    println!(
        "{name}: server {:.0} handshakes/s/core ({:.1} µs each), client {:.0}/s/core ({:.1} µs), both ends on one core {:.0}/s",
        per_sec(s_total),
        s_total.as_secs_f64() * 1e6 / f64::from(n),
        per_sec(c_total),
        c_total.as_secs_f64() * 1e6 / f64::from(n),
        per_sec(s_total + c_total),
    );
}

#[test]
#[ignore = "a measurement: run in release with --ignored --nocapture"]
fn handshakes_per_second_per_core() {
    let ca = Ca::new("cluster.local");
    let server = Identity::new();
    server
        .install(ca.svid("shop", "reviews").creds(&[&ca]))
        .expect("install");
    let client = Identity::new();
    client
        .install(ca.svid("shop", "product").creds(&[&ca]))
        .expect("install");
    let server = server.tls().expect("tls").server.clone();
    let resuming = client.tls().expect("tls").client_h2.clone();
    assert_eq!(resuming.alpn_protocols, [ALPN_H2.to_vec()]);
    let mut full = (*resuming).clone();
    full.resumption = Resumption::disabled();
    let full = Arc::new(full);
    run(
        "full (TLS 1.3, ECDSA P-256, mutual), a known client certificate",
        &server,
        &[full],
        HandshakeKind::Full,
    );
    // A new client certificate each time: the server's verifier has not
    // seen the chain (first contact with each peer after its rotation).
    let fresh: Vec<_> = (0..3200)
        .map(|i| {
            let creds = ca.svid("shop", &format!("client-{i}")).creds(&[&ca]);
            client_config(&creds, &[ALPN_H2]).expect("client")
        })
        .collect();
    run(
        "full (TLS 1.3, ECDSA P-256, mutual), a new client certificate each time",
        &server,
        &fresh,
        HandshakeKind::Full,
    );
    run(
        "resumed (TLS 1.3 ticket)",
        &server,
        &[resuming],
        HandshakeKind::Resumed,
    );
}
