//! An HTTP/2 client that closes its side of the connection (TCP FIN) while
//! a response waits for flow-control window it can no longer give: the
//! stalled stream ends at once, and its upstream response is dropped (the
//! upstream connection closes), instead of both waiting for the keep-alive
//! PING about a minute later.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::*;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const CANCEL: u32 = 0x8;

/// An HTTP/1.1 upstream whose responses have a body of 100 MB, written as
/// fast as the proxy takes it; counts the connections that ended.
async fn endless_upstream() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let ended = Arc::new(AtomicUsize::new(0));
    let count = ended.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 100000000\r\n\r\n";
                let chunk = vec![b'z'; 16 * 1024];
                let mut wrote = tcp.write_all(answer).await;
                while wrote.is_ok() {
                    wrote = tcp.write_all(&chunk).await;
                }
                count.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (port, ended)
}

fn frame(out: &mut BytesMut, ty: u8, flags: u8, id: u32, payload: &[u8]) {
    out.put_uint(payload.len() as u64, 3);
    out.put_u8(ty);
    out.put_u8(flags);
    out.put_u32(id);
    out.extend_from_slice(payload);
}

/// The next frame's type, stream and first four payload bytes; `None` at
/// the end of the connection.
async fn next_frame(tcp: &mut TcpStream, buf: &mut BytesMut) -> Option<(u8, u32, u32)> {
    loop {
        if buf.len() >= 9 {
            let len = (buf[0] as usize) << 16 | (buf[1] as usize) << 8 | buf[2] as usize;
            if buf.len() >= 9 + len {
                let (ty, id) = (buf[3], u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]));
                let mut first = [0u8; 4];
                let n = len.min(4);
                first[..n].copy_from_slice(&buf[9..9 + n]);
                buf.advance(9 + len);
                return Some((ty, id, u32::from_be_bytes(first)));
            }
        }
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read_buf(buf))
            .await
            .expect("the server answers (or closes) within 5 s");
        if read.unwrap_or(0) == 0 {
            return None;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_client_ends_stalled_streams_and_their_upstream_responses() {
    let (port, ended) = endless_upstream().await;
    let services = "services:\n  - name: big\n    ports: [{name: http, port: 80, protocol: http}]\n    endpoints: [{address: 127.0.0.1, port: PORT}]\n"
        .replace("PORT", &port.to_string());
    let mesh = TestMesh::start(&services, "").await;

    let mut tcp = TcpStream::connect(mesh.proxy()).await.expect("connect");
    let mut out = BytesMut::new();
    out.extend_from_slice(PREFACE);
    // SETTINGS_INITIAL_WINDOW_SIZE 0: the response's head goes out, its body cannot.
    frame(&mut out, SETTINGS, 0, 0, &[0, 4, 0, 0, 0, 0]);
    let mut block = Vec::new();
    for (n, v) in [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "big"),
        (":path", "/"),
    ] {
        block.push(0);
        block.push(n.len() as u8);
        block.extend_from_slice(n.as_bytes());
        block.push(v.len() as u8);
        block.extend_from_slice(v.as_bytes());
    }
    frame(&mut out, HEADERS, 0x4 | 0x1, 1, &block);
    tcp.write_all(&out).await.expect("request");
    let mut buf = BytesMut::new();
    loop {
        let (ty, id, _) = next_frame(&mut tcp, &mut buf).await.expect("a response");
        if (ty, id) == (HEADERS, 1) {
            break;
        }
    }
    assert_eq!(
        ended.load(Ordering::SeqCst),
        0,
        "the upstream response is running"
    );

    tcp.shutdown().await.expect("half-close");
    let mut reset = None;
    while let Some((ty, id, code)) = next_frame(&mut tcp, &mut buf).await {
        if (ty, id) == (RST_STREAM, 1) {
            reset = Some(code);
        }
    }
    assert_eq!(reset, Some(CANCEL), "the stalled stream is reset");
    eventually("the upstream response is dropped", || {
        let n = ended.load(Ordering::SeqCst);
        async move { (n == 1).then_some(()) }
    })
    .await;
}
