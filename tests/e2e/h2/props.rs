//! Generated HTTP/2 traffic from a real client (hyper's) through the
//! listener's own HTTP/2 server: concurrent streams with bodies of any size
//! sent in frames of any size, under flow-control windows and frame sizes the
//! client picks, to HTTP/1.1 and HTTP/2 upstreams. Every body comes back
//! whole on its own stream.

use futures_util::future::join_all;
use http_body_util::{Either, Empty};
use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
struct Settings {
    stream_window: u32,
    connection_window: u32,
    max_frame: u32,
}

fn settings() -> impl Strategy<Value = Settings> {
    (
        // Tiny windows now and then: a DATA frame of a few bytes at a time.
        prop_oneof![1 => 1u32..100, 4 => 100u32..70_000],
        65_535u32..1_000_000,
        prop_oneof![Just(16_384u32), 16_384u32..100_000],
    )
        .prop_map(|(stream_window, connection_window, max_frame)| Settings {
            stream_window,
            connection_window,
            max_frame,
        })
}

#[derive(Debug, Clone)]
struct Stream {
    /// To the HTTP/2 upstream (`grpc` port) rather than the HTTP/1.1 one.
    h2_upstream: bool,
    /// `None`: a GET without a body.
    body: Option<(u8, Vec<usize>)>,
}

impl Stream {
    /// The body: each piece's bytes follow from `seed` and their position.
    fn pieces(&self) -> Vec<Bytes> {
        let Some((seed, sizes)) = &self.body else {
            return Vec::new();
        };
        let mut at = 0usize;
        sizes
            .iter()
            .map(|&n| {
                let piece: Vec<u8> = (at..at + n)
                    .map(|i| (i as u8).wrapping_mul(7).wrapping_add(*seed))
                    .collect();
                at += n;
                Bytes::from(piece)
            })
            .collect()
    }
}

fn stream() -> impl Strategy<Value = Stream> {
    let body = proptest::option::weighted(
        0.8,
        (
            any::<u8>(),
            vec(prop_oneof![0usize..10, 10usize..10_000], 0..6),
        ),
    );
    (any::<bool>(), body).prop_map(|(h2_upstream, body)| Stream { h2_upstream, body })
}

async fn check_streams(mesh: &TestMesh, (s, streams): (Settings, Vec<Stream>)) {
    let tcp = TcpStream::connect(mesh.proxy()).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(s.stream_window)
        .initial_connection_window_size(s.connection_window)
        .max_frame_size(s.max_frame)
        .adaptive_window(false)
        .handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    let driving = tokio::spawn(conn);
    let exchanges = streams.iter().enumerate().map(|(i, st)| {
        let mut sender = sender.clone();
        async move {
            let host = if st.h2_upstream { "grpcish" } else { "plain" };
            let pieces = st.pieces();
            let frames: Vec<Result<BodyFrame<Bytes>, std::convert::Infallible>> = pieces
                .iter()
                .cloned()
                .map(|p| Ok(BodyFrame::data(p)))
                .collect();
            // A GET's stream ends with its head; a POST's body is a stream,
            // even an empty one.
            let (method, body) = match st.body {
                None => ("GET", Either::Right(Empty::new())),
                Some(_) => (
                    "POST",
                    Either::Left(StreamBody::new(futures_util::stream::iter(frames))),
                ),
            };
            let req = http::Request::builder()
                .method(method)
                .uri(format!("http://{host}/p{i}"))
                .body(body)
                .expect("request");
            let resp = tokio::time::timeout(Duration::from_secs(20), sender.send_request(req))
                .await
                .expect("answered in time")
                .expect("a response");
            assert_eq!(resp.status(), StatusCode::OK, "{st:?}");
            // The answer is this stream's own.
            let path = resp.headers().get("x-seen-path").cloned();
            assert_eq!(
                path.as_ref().and_then(|p| p.to_str().ok()),
                Some(format!("/p{i}").as_str()),
                "{st:?}"
            );
            let version = resp.headers().get("x-seen-version").cloned();
            let has_body = resp.headers().get("x-seen-headers").cloned();
            let body = tokio::time::timeout(Duration::from_secs(20), resp.into_body().collect())
                .await
                .expect("the body in time")
                .expect("the body")
                .to_bytes();
            let sent = pieces.concat();
            // The echo answers a request that has no body with its name. An
            // empty body may reach it as none (its DATA frame arrived with
            // the head) or as an empty one (echoed: nothing).
            let expected: &[u8] = match &st.body {
                None => b"echo\n",
                Some(_) if sent.is_empty() && body.is_empty() => b"",
                Some(_) if sent.is_empty() => b"echo\n",
                Some(_) => &sent,
            };
            assert!(
                body[..] == *expected,
                "{st:?}: {} bytes came back, {} expected; upstream saw {version:?}, {has_body:?}",
                body.len(),
                expected.len()
            );
        }
    });
    join_all(exchanges).await;
    drop(sender);
    let _ = driving.await;
}

/// Concurrent streams of every size under any windows and frame sizes the
/// client picks: each body comes back whole, to either kind of upstream.
#[test]
fn concurrent_streams_under_any_windows_come_back_whole() {
    run(
        plain_and_grpcish_mesh(),
        (settings(), vec(stream(), 1..8)),
        async |(mesh, _ups), case| check_streams(mesh, case).await,
    );
}
