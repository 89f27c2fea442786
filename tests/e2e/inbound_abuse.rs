//! The inbound listener under abuse: slowloris clients in plaintext and
//! TLS, a flood of half-open TLS handshakes, oversized and broken
//! ClientHellos, the connection limit and the HTTP/2 abuse limits, each
//! while a legitimate mesh peer keeps being served; and the memory a
//! half-open handshake costs.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anymesh::mesh::Mesh;
use anymesh::settings::Settings;
use anymesh::upstream::Upstream;
use anymesh_identity::Credentials;
use anymesh_proxy::inbound::{server_name_for_port, InboundStats};
use bytes::{Buf, BufMut, BytesMut};
use http::StatusCode;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::harness::*;
use crate::mtls::pki::{identity_files, Root};

/// The mesh's own ALPN protocols.
const ALPN_H2: &[u8] = b"anymesh-h2";

/// The proxy in front of the application (workload `b`), its `inbound:`
/// keys given (the listen address added).
async fn server_side(root: &Root, app: &Upstream, inbound: &str, routes: &str) -> TestMesh {
    let dir = tempfile::tempdir().expect("temp dir");
    root.write_svid(&dir.path().join("id"), "default", "b", false);
    write(&dir.path().join("services.yaml"), "services: []\n");
    write(&dir.path().join("routes.yaml"), routes);
    let yaml = format!(
        "listeners: {{outbound: 127.0.0.1:0, admin: 127.0.0.1:0}}\n\
         registries: [{{name: file, type: file, path: services.yaml, poll_interval: 200ms}}]\n\
         routing: [routes.yaml]\nrouting_reload_interval: 100ms\n{}\
         workloads:\n  - {{name: b, namespace: default, service_account: b, labels: {{app: b}}, ports: [{{port: {}, protocol: http}}]}}\n\
         inbound: {{listen: 127.0.0.1:0, {inbound}}}\n",
        identity_files(&dir.path().join("id")),
        app.addr.port()
    );
    launch(dir, &yaml).await
}

/// A caller's proxy (workload `a`) whose registry says the application is
/// fronted by `server`.
async fn client_side(root: &Root, app: &Upstream, server: &TestMesh) -> TestMesh {
    let dir = tempfile::tempdir().expect("temp dir");
    root.write_svid(&dir.path().join("id"), "default", "a", false);
    write(
        &dir.path().join("services.yaml"),
        &format!(
            "services:\n  - name: reviews\n    ports: [{{name: http, port: 80, protocol: http}}]\n    endpoints:\n      - {{address: 127.0.0.1, port: {}, id: app, mesh: {{port: {}, service_account: b}}}}\n",
            app.addr.port(),
            inbound(server).port()
        ),
    );
    write(&dir.path().join("routes.yaml"), "");
    let yaml = format!(
        "listeners: {{outbound: 127.0.0.1:0, admin: 127.0.0.1:0}}\n\
         registries: [{{name: file, type: file, path: services.yaml, poll_interval: 200ms}}]\n\
         routing: [routes.yaml]\nrouting_reload_interval: 100ms\n{}",
        identity_files(&dir.path().join("id"))
    );
    launch(dir, &yaml).await
}

async fn launch(dir: tempfile::TempDir, yaml: &str) -> TestMesh {
    let file = dir.path().join("anymesh.yaml");
    write(&file, yaml);
    let settings = Settings::load(&file).expect("settings");
    let mesh = Mesh::start(settings).await.expect("mesh starts");
    let client = Client::builder(TokioExecutor::new()).build_http();
    let t = TestMesh { mesh, dir, client };
    eventually("/ready", || async {
        (t.admin("/ready").await.0 == StatusCode::OK).then_some(())
    })
    .await;
    t
}

fn inbound(server: &TestMesh) -> SocketAddr {
    server
        .mesh
        .inbound
        .expect("the server side has an inbound listener")
}

fn stats(server: &TestMesh) -> &InboundStats {
    &server.mesh.inbound_state.as_ref().expect("inbound").stats
}

fn load(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Two proxies with the application behind the second, the first having
/// served one request over mutual TLS (so its connection is pooled).
struct Pair {
    app: Upstream,
    root: Root,
    a: TestMesh,
    b: TestMesh,
}

async fn pair(inbound: &str) -> Pair {
    let root = Root::new("cluster.local");
    let app = anymesh::upstream::spawn("app").await.expect("app");
    let b = server_side(&root, &app, inbound, "").await;
    let a = client_side(&root, &app, &b).await;
    let (status, who, body) = a.get("reviews", "/", &[]).await;
    assert_eq!((status, who.as_str()), (StatusCode::OK, "app"), "{body}");
    assert_eq!(load(&stats(&b).mtls), 1);
    Pair { app, root, a, b }
}

/// A legitimate peer's steady requests through proxy A until `stop`: how
/// many were sent and the failures.
fn steady_load(
    a: &Arc<TestMesh>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> JoinHandle<(usize, Vec<String>)> {
    let a = a.clone();
    tokio::spawn(async move {
        let (mut sent, mut failed) = (0, Vec::new());
        while !*stop.borrow() {
            let (status, _, body) = a.get("reviews", "/", &[]).await;
            sent += 1;
            if status != StatusCode::OK {
                failed.push(format!("{status}: {body}"));
            }
        }
        (sent, failed)
    })
}

/// Reads until the server closes the connection; false when `within` passes first.
async fn closed_within<S: AsyncRead + Unpin>(s: &mut S, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// The mesh peer credentials `a` as a client config offering `alpn`.
fn client_config(root: &Root, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let dir = tempfile::tempdir().expect("temp dir");
    root.write_svid(dir.path(), "default", "a", false);
    let read = |f: &str| std::fs::read(dir.path().join(f)).expect("pem");
    let creds = Credentials::from_pem(&read("cert.pem"), &read("key.pem"), &read("bundle.pem"))
        .expect("credentials");
    anymesh_identity::tls::client_config(&creds, &[alpn]).expect("client config")
}

/// A mesh ClientHello for the application's port, as a rustls client sends it.
fn client_hello(config: &Arc<rustls::ClientConfig>, port: u16) -> Vec<u8> {
    let name = rustls::pki_types::ServerName::try_from(server_name_for_port(port)).expect("name");
    let mut conn = rustls::ClientConnection::new(config.clone(), name).expect("client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("hello");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_slowloris_is_closed_at_the_header_read_timeout_while_peers_are_served() {
    let p = pair("handshake_timeout: 500ms, header_read_timeout: 500ms").await;
    let a = Arc::new(p.a);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let load_task = steady_load(&a, stop);

    // A request head that would take 10 s at a byte every 100 ms.
    let head = format!(
        "GET / HTTP/1.1\r\nhost: reviews\r\nx-slow: {}\r\n\r\n",
        "s".repeat(60)
    );
    let mut tcp = TcpStream::connect(inbound(&p.b)).await.expect("connect");
    let start = Instant::now();
    let (mut rd, mut wr) = tcp.split();
    let trickle = async {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        for byte in head.bytes() {
            tick.tick().await;
            if wr.write_all(&[byte]).await.is_err() {
                break;
            }
        }
    };
    let closed = tokio::select! {
        c = closed_within(&mut rd, Duration::from_secs(5)) => c,
        () = trickle => false,
    };
    let took = start.elapsed();
    assert!(closed, "the slowloris connection was closed");
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "closed after {took:?}, the header-read timeout is 500 ms"
    );
    assert_eq!(
        load(&stats(&p.b).plaintext),
        1,
        "served as plaintext until the timeout"
    );

    let _ = stop_tx.send(true);
    let (sent, failed) = load_task.await.expect("load");
    assert!(sent > 0);
    assert!(
        failed.is_empty(),
        "{} of {sent} peer requests failed: {failed:?}",
        failed.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_slowloris_is_closed_at_the_handshake_timeout() {
    let p = pair("handshake_timeout: 500ms, header_read_timeout: 500ms").await;
    let hello = client_hello(&client_config(&p.root, ALPN_H2), p.app.addr.port());
    let before = load(&stats(&p.b).refused_slow);

    // Part of a ClientHello, then nothing.
    let mut tcp = TcpStream::connect(inbound(&p.b)).await.expect("connect");
    let start = Instant::now();
    tcp.write_all(&hello[..hello.len() / 2])
        .await
        .expect("write");
    assert!(
        closed_within(&mut tcp, Duration::from_secs(5)).await,
        "closed"
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(3),
        "closed after {took:?}, the handshake timeout is 500 ms"
    );
    counted(&stats(&p.b).refused_slow, before + 1).await;

    // A whole ClientHello and then nothing: the same deadline.
    let mut tcp = TcpStream::connect(inbound(&p.b)).await.expect("connect");
    let start = Instant::now();
    tcp.write_all(&hello).await.expect("write");
    assert!(
        closed_within(&mut tcp, Duration::from_secs(5)).await,
        "closed"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(450),
        "{:?}",
        start.elapsed()
    );
    counted(&stats(&p.b).refused_slow, before + 2).await;
    let (status, _, body) = p.a.get("reviews", "/", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Opens `n` connections that each send a mesh ClientHello and never
/// finish the handshake; waits until the server answered each (its
/// handshake state exists) or refused it.
async fn half_open_flood(server: &TestMesh, hellos: &[Vec<u8>]) -> Vec<TcpStream> {
    let addr = inbound(server);
    let mut flood = Vec::with_capacity(hellos.len());
    for hello in hellos {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        // A connection refused at accept may be reset while written to.
        let _ = tcp.write_all(hello).await;
        flood.push(tcp);
    }
    for tcp in &mut flood {
        // The ServerHello (or the end of a refused connection).
        let mut b = [0u8; 1];
        tokio::time::timeout(DEADLINE, tcp.read(&mut b))
            .await
            .expect("the server answers every ClientHello")
            .ok();
    }
    flood
}

/// Every flood connection is closed by the server within `within`.
async fn all_closed(flood: &mut [TcpStream], within: Duration) {
    let deadline = Instant::now() + within;
    for (i, tcp) in flood.iter_mut().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            closed_within(tcp, left).await,
            "flood connection {i} still open"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_half_open_handshakes_starves_no_peer_and_is_closed_at_the_deadline() {
    // 64 connections at most, half of them in their opening.
    let p = pair("handshake_timeout: 2s, header_read_timeout: 500ms, max_connections: 64").await;
    let a = Arc::new(p.a);
    let config = client_config(&p.root, ALPN_H2);
    let port = p.app.addr.port();
    let hellos: Vec<_> = (0..200).map(|_| client_hello(&config, port)).collect();
    let (limit, slow) = (
        load(&stats(&p.b).refused_limit),
        load(&stats(&p.b).refused_slow),
    );

    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let load_task = steady_load(&a, stop);
    let started = Instant::now();
    let mut flood = half_open_flood(&p.b, &hellos).await;
    all_closed(&mut flood, DEADLINE).await;
    let took = started.elapsed();
    let _ = stop_tx.send(true);
    let (sent, failed) = load_task.await.expect("load");
    assert!(sent > 0);
    assert!(
        failed.is_empty(),
        "{} of {sent} peer requests failed: {failed:?}",
        failed.len()
    );

    // 32 held until the deadline, the rest refused at accept.
    eventually("every flood connection counted", || async {
        let s = stats(&p.b);
        (load(&s.refused_limit) - limit + load(&s.refused_slow) - slow >= 200).then_some(())
    })
    .await;
    let refused_limit = load(&stats(&p.b).refused_limit) - limit;
    let refused_slow = load(&stats(&p.b).refused_slow) - slow;
    assert_eq!(
        refused_limit + refused_slow,
        200,
        "{refused_limit} at accept, {refused_slow} at the deadline"
    );
    assert!(
        (1..=32).contains(&refused_slow),
        "{refused_slow} held at most half the limit"
    );
    println!("flood of 200: {refused_limit} refused at accept, {refused_slow} closed at the deadline, all closed after {took:?}; {sent} peer requests served meanwhile");

    // After it, a new peer is served.
    let c = client_side(&p.root, &p.app, &p.b).await;
    let (status, _, body) = c.get("reviews", "/", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_client_hellos_are_closed_and_broken_ones_passed_through() {
    let p = pair("handshake_timeout: 5s, header_read_timeout: 500ms").await;
    let slow = load(&stats(&p.b).refused_slow);

    // A record of 16 KiB whose ClientHello announces 64 KiB, and 40 KiB of it.
    let mut tcp = TcpStream::connect(inbound(&p.b)).await.expect("connect");
    let start = Instant::now();
    let mut big = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0xff, 0xff];
    big.resize(big.len() + 40 * 1024, 0x41);
    let _ = tcp.write_all(&big).await;
    assert!(
        closed_within(&mut tcp, Duration::from_secs(3)).await,
        "closed"
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "at once, not at the 5 s deadline"
    );
    counted(&stats(&p.b).refused_slow, slow + 1).await;

    // A ClientHello that fits a 16 KiB record but goes on in another.
    let mut tcp = TcpStream::connect(inbound(&p.b)).await.expect("connect");
    let mut long = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x3f, 0xfc];
    long.resize(long.len() + 40 * 1024, 0x16);
    let _ = tcp.write_all(&long).await;
    assert!(
        closed_within(&mut tcp, Duration::from_secs(3)).await,
        "closed"
    );

    // Garbage after the handshake record type: not the mesh's TLS, passed
    // through to the application (PERMISSIVE), which sees it as a bad request.
    let passthrough = load(&stats(&p.b).passthrough);
    let mut tcp = TcpStream::connect(inbound(&p.b)).await.expect("connect");
    tcp.write_all(&[
        0x16, 0xff, 0xff, 0x00, 0x01, 0x00, b'\r', b'\n', b'\r', b'\n',
    ])
    .await
    .expect("write");
    let _ = tcp.shutdown().await;
    assert!(
        closed_within(&mut tcp, Duration::from_secs(3)).await,
        "closed"
    );
    assert_eq!(load(&stats(&p.b).passthrough), passthrough + 1);

    // Under STRICT the same garbage is refused.
    write(&p.b.path("routes.yaml"), STRICT);
    let refused = load(&stats(&p.b).refused_plaintext);
    eventually("STRICT in force", || async {
        let mut tcp = TcpStream::connect(inbound(&p.b)).await.expect("connect");
        let _ = tcp.write_all(&[0x16, 0xff, 0xff, 0x00, 0x01, 0x00]).await;
        closed_within(&mut tcp, Duration::from_secs(3)).await;
        (load(&stats(&p.b).refused_plaintext) > refused).then_some(())
    })
    .await;
    // And the mesh peer is served throughout.
    let (status, _, body) = p.a.get("reviews", "/", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

const STRICT: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\nspec:\n  mtls: {mode: STRICT}\n";

/// A plaintext keep-alive connection that has had one answer.
async fn plaintext_holder(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nhost: reviews\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut b = [0u8; 1024];
        let n = tokio::time::timeout(DEADLINE, tcp.read(&mut b))
            .await
            .expect("answered in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before answering: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&b[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    tcp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_past_the_limit_is_closed_at_once_and_peers_are_served_after() {
    let p = pair("handshake_timeout: 5s, header_read_timeout: 5s, max_connections: 4").await;
    let addr = inbound(&p.b);
    // A's pooled mTLS connection holds one; three plaintext ones the rest.
    let mut holders = Vec::new();
    for _ in 0..3 {
        holders.push(plaintext_holder(addr).await);
    }
    let limit = load(&stats(&p.b).refused_limit);
    let mut extra = TcpStream::connect(addr).await.expect("connect");
    let start = Instant::now();
    assert!(
        closed_within(&mut extra, Duration::from_secs(2)).await,
        "closed at once"
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "not at the 5 s deadline"
    );
    assert_eq!(load(&stats(&p.b).refused_limit), limit + 1);
    let (status, _, body) = p.a.get("reviews", "/", &[]).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the pooled peer is still served: {body}"
    );

    drop(holders);
    eventually("a new connection served once the holders left", || async {
        let mut tcp = TcpStream::connect(addr).await.ok()?;
        tcp.write_all(b"GET / HTTP/1.1\r\nhost: reviews\r\nconnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut got))
            .await
            .ok()?
            .ok()?;
        got.starts_with(b"HTTP/1.1 200").then_some(())
    })
    .await;
}

/// The process's resident set size in KiB (`VmRSS` of /proc/self/status).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Set in the child process that measures alone.
const MEASURE: &str = "ANYMESH_INBOUND_ABUSE_MEASURE";

/// The resident memory of half-open handshakes, measured in a process of
/// its own (other tests share this one's heap).
#[test]
fn half_open_handshakes_cost_bounded_memory() {
    if std::env::var_os(MEASURE).is_none() {
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "inbound_abuse::half_open_handshakes_cost_bounded_memory",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(MEASURE, "1")
            .output()
            .expect("the measuring process runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        print!("{stdout}");
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("1 passed"), "the measurement ran: {stdout}");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(measure_half_open_flood());
}

async fn measure_half_open_flood() {
    const N: usize = 200;
    let p = pair("handshake_timeout: 3s, header_read_timeout: 500ms").await;
    let config = client_config(&p.root, ALPN_H2);
    let port = p.app.addr.port();
    let first: Vec<_> = (0..N).map(|_| client_hello(&config, port)).collect();
    let again: Vec<_> = (0..N).map(|_| client_hello(&config, port)).collect();
    // From cold: the runtimes' and the allocator's first growth counted too.
    let cold = rss_kib();
    let mut flood = half_open_flood(&p.b, &first).await;
    let during_cold = rss_kib();
    all_closed(&mut flood, DEADLINE).await;
    drop(flood);
    counted(&stats(&p.b).refused_slow, N as u64).await;
    // Again: what the allocator kept from the first is reused.
    let cold_growth = during_cold.saturating_sub(cold);
    let before = rss_kib();
    let mut flood = half_open_flood(&p.b, &again).await;
    let during = rss_kib();
    let warm_growth = during.saturating_sub(before);
    println!(
        "RSS with {N} half-open handshakes: {cold} -> {during_cold} KiB from cold ({} bytes each), \
         {before} -> {during} KiB once warm ({} bytes each)",
        cold_growth * 1024 / N as u64,
        warm_growth * 1024 / N as u64
    );
    for growth in [cold_growth, warm_growth] {
        assert!(
            growth * 1024 / (N as u64) < 64 * 1024,
            "{growth} KiB for {N} half-open handshakes"
        );
    }
    let (status, _, body) = p.a.get("reviews", "/", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    all_closed(&mut flood, DEADLINE).await;
    counted(&stats(&p.b).refused_slow, 2 * N as u64).await;
}

/// Waits until `c` reaches `want` (a connection is counted as its task
/// ends, which may be just after the client saw it closed), and checks it
/// goes no further.
async fn counted(c: &std::sync::atomic::AtomicU64, want: u64) {
    eventually("counted", || async { (load(c) >= want).then_some(()) }).await;
    assert_eq!(load(c), want);
}

/// HTTP/2 frames over an mTLS connection, written by hand.
async fn send_frame<W: AsyncWrite + Unpin>(w: &mut W, ty: u8, flags: u8, id: u32, payload: &[u8]) {
    let mut f = Vec::with_capacity(9 + payload.len());
    f.put_uint(payload.len() as u64, 3);
    f.put_u8(ty);
    f.put_u8(flags);
    f.put_u32(id);
    f.extend_from_slice(payload);
    // The server may have closed already.
    let _ = w.write_all(&f).await;
}

/// Reads frames to the end of the connection: the last GOAWAY's code.
async fn goaway_code<R: AsyncRead + Unpin>(r: &mut R) -> Option<u32> {
    let mut buf = BytesMut::new();
    let mut code = None;
    loop {
        while buf.len() >= 9 {
            let len = (buf[0] as usize) << 16 | (buf[1] as usize) << 8 | buf[2] as usize;
            if buf.len() < 9 + len {
                break;
            }
            let ty = buf[3];
            buf.advance(9);
            let payload = buf.split_to(len);
            if ty == 7 && payload.len() >= 8 {
                code = Some(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ]));
            }
        }
        let n = tokio::time::timeout(DEADLINE, r.read_buf(&mut buf))
            .await
            .expect("the server answers in time")
            .unwrap_or(0);
        if n == 0 {
            return code;
        }
    }
}

/// A header block of literals without indexing or Huffman coding (short strings).
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in fields {
        b.push(0);
        for s in [n, v] {
            b.push(s.len() as u8);
            b.extend_from_slice(s.as_bytes());
        }
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rapid_reset_over_mutual_tls_closes_the_connection() {
    let p = pair("handshake_timeout: 2s, header_read_timeout: 500ms").await;
    let config = client_config(&p.root, ALPN_H2);
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = rustls::pki_types::ServerName::try_from(server_name_for_port(p.app.addr.port()))
        .expect("name");
    let tcp = TcpStream::connect(inbound(&p.b)).await.expect("connect");
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("mesh mTLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(ALPN_H2));
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .expect("preface");
    send_frame(&mut tls, 4, 0, 0, &[]).await;
    let head = block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "reviews"),
        (":path", "/slow"),
        ("x-delay-ms", "5000"),
    ]);
    let mut id = 1;
    for _ in 0..1000 {
        send_frame(&mut tls, 1, 0x5, id, &head).await;
        send_frame(&mut tls, 3, 0, id, &8u32.to_be_bytes()).await;
        id += 2;
    }
    let _ = tls.flush().await;
    assert_eq!(goaway_code(&mut tls).await, Some(0xb), "ENHANCE_YOUR_CALM");
    let (status, _, body) = p.a.get("reviews", "/", &[]).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the other peer is still served: {body}"
    );
}
