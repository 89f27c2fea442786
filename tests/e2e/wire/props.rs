//! Generated HTTP/1.1 exchanges through the outbound listener, written in
//! pieces of any size on both sides: pipelined requests with sized and
//! chunked bodies from the client, responses of every framing from the
//! upstream. Whatever the cuts, each request reaches the upstream and each
//! response the client as sent, hop-by-hop fields left out.
//!
//! Each property runs `PROPTEST_CASES` cases (default 64: every case is a
//! real connection through the proxy; see `harness::run`).

use std::collections::VecDeque;

use anymesh_testkit::bytes::{damage, Edit};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use super::*;

fn token() -> impl Strategy<Value = String> {
    let tchar = select(b"!#$%&'*+-.^_`|~0123456789abcxyzABCXYZ".to_vec());
    vec(tchar, 1..10).prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// A field with a generated name (none the proxy treats specially) and value.
fn end_to_end_field() -> impl Strategy<Value = (String, String)> {
    let value = vec(0x21u8..0x7f, 0..12).prop_map(|b| String::from_utf8_lossy(&b).into_owned());
    (token().prop_map(|t| format!("x-{t}")), value)
}

/// A hop-by-hop field: one of the fixed names, or one `Connection` names.
fn hop_field() -> impl Strategy<Value = String> {
    prop_oneof![
        select(vec![
            "Keep-Alive",
            "Proxy-Connection",
            "TE",
            "proxy-authorization"
        ])
        .prop_map(String::from),
        token().prop_map(|t| format!("hop-{t}")),
    ]
}

/// A chunked body: chunks of generated sizes with optional extensions, and
/// an optional trailer field.
fn chunked(body: &[u8], sizes: &[usize], ext: bool, trailer: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = body;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let n = (sizes.next().copied().unwrap_or(1) % rest.len()) + 1;
        out.extend_from_slice(format!("{n:X}").as_bytes());
        if ext {
            out.extend_from_slice(b";name=\"v\"");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(b"0\r\n");
    if trailer {
        out.extend_from_slice(b"x-trailer: t\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[derive(Debug, Clone)]
enum Framing {
    /// No framing field.
    None,
    Length,
    Chunked {
        sizes: Vec<usize>,
        ext: bool,
        trailer: bool,
    },
}

fn framing() -> impl Strategy<Value = Framing> {
    prop_oneof![
        Just(Framing::None),
        Just(Framing::Length),
        (vec(0usize..64, 1..4), any::<bool>(), any::<bool>()).prop_map(|(sizes, ext, trailer)| {
            Framing::Chunked {
                sizes,
                ext,
                trailer,
            }
        }),
    ]
}

// ------------------------------------------------------------- requests

#[derive(Debug, Clone)]
struct Req {
    method: String,
    target: String,
    fields: Vec<(String, String)>,
    hop: Vec<String>,
    framing: Framing,
    body: Vec<u8>,
}

fn request() -> impl Strategy<Value = Req> {
    let method = select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "PURGE"]);
    let target = vec(select(b"abcXYZ09-._~!$&'()*+,;=:@/?%".to_vec()), 0..20)
        .prop_map(|b| format!("/{}", String::from_utf8_lossy(&b)));
    (
        method,
        target,
        vec(end_to_end_field(), 0..6),
        vec(hop_field(), 0..3),
        framing(),
        vec(any::<u8>(), 0..300),
    )
        .prop_map(|(method, target, fields, hop, framing, body)| Req {
            method: method.to_string(),
            target,
            fields,
            hop,
            // A body needs a framing field; an empty chunked body is left out.
            body: match framing {
                Framing::None => Vec::new(),
                Framing::Chunked { .. } if body.is_empty() => vec![b'x'],
                _ => body,
            },
            framing,
        })
}

impl Req {
    fn encode(&self) -> Vec<u8> {
        let start = format!("{} {} HTTP/1.1\r\nHost: web", self.method, self.target);
        message(
            &start,
            &self.fields,
            &self.hop,
            &[],
            &self.framing,
            &self.body,
        )
    }
}

/// A message as sent: the start line, the end-to-end fields, the hop-by-hop
/// ones (those named `hop-…` listed in `Connection`, after `options`), the
/// framing field and the body.
fn message(
    start: &str,
    fields: &[(String, String)],
    hop: &[String],
    options: &[&str],
    framing: &Framing,
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!("{start}\r\n");
    for (n, v) in fields {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    for h in hop {
        head.push_str(&format!("{h}: 1\r\n"));
    }
    let connection: Vec<&str> = options
        .iter()
        .copied()
        .chain(
            hop.iter()
                .map(String::as_str)
                .filter(|h| h.starts_with("hop-")),
        )
        .collect();
    if !connection.is_empty() {
        head.push_str(&format!("Connection: {}\r\n", connection.join(", ")));
    }
    let mut out = head.into_bytes();
    match framing {
        Framing::None => {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(body);
        }
        Framing::Length => {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            out.extend_from_slice(body);
        }
        Framing::Chunked {
            sizes,
            ext,
            trailer,
        } => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            out.extend_from_slice(&chunked(body, sizes, *ext, *trailer));
        }
    }
    out
}

async fn check_requests(mesh: &TestMesh, (reqs, cuts): (Vec<Req>, Vec<usize>)) {
    let mut c = RawClient::connect(mesh).await;
    let bytes: Vec<u8> = reqs.iter().flat_map(Req::encode).collect();
    write_in_pieces(&mut c.stream, &bytes, &cuts)
        .await
        .expect("write the requests");
    for req in &reqs {
        let resp = c.response(false).await;
        assert_eq!(resp.status, 200, "{req:?}: {resp:?}");
        assert_eq!(
            resp.header("x-seen-path"),
            Some(req.target.as_str()),
            "{req:?}"
        );
        let seen: Vec<&str> = resp
            .header("x-seen-headers")
            .unwrap_or("")
            .split(',')
            .collect();
        for (n, _) in &req.fields {
            assert!(
                seen.contains(&n.to_ascii_lowercase().as_str()),
                "{n} missing: {req:?} {seen:?}"
            );
        }
        for h in &req.hop {
            assert!(
                !seen.contains(&h.to_ascii_lowercase().as_str()),
                "hop-by-hop {h} forwarded: {seen:?}"
            );
        }
        let expected: &[u8] = if req.body.is_empty() {
            b"echo\n"
        } else {
            &req.body
        };
        assert_eq!(resp.body, expected, "{req:?}");
    }
}

/// Pipelined requests of every framing, written in pieces, each reach the
/// upstream with their fields and body intact and are answered in order.
#[test]
fn pipelined_requests_in_pieces_arrive_intact() {
    run(
        async { echo_mesh().await },
        (vec(request(), 1..4), vec(any::<usize>(), 0..12)),
        async |(mesh, _ups), case| check_requests(mesh, case).await,
    );
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let byte = prop_oneof![select(b"\r\n :;,0aF\x00".to_vec()), any::<u8>()];
    vec((any::<usize>(), any::<u8>(), byte), 1..4)
}

/// Reads until the proxy closes the connection (the client has closed its
/// side): the whole responses that arrived, and the last one if it was cut
/// short.
async fn read_to_close(c: &mut RawClient) -> (Vec<Wire>, Option<Wire>) {
    while c.fill().await {}
    let mut whole = Vec::new();
    while !c.buf.is_empty() {
        match c.try_response(false).await {
            Ok(wire) => whole.push(wire),
            Err(cut) => return (whole, Some(cut)),
        }
    }
    (whole, None)
}

async fn check_damaged(
    (mesh, ups): &(TestMesh, Vec<anymesh::upstream::Upstream>),
    (reqs, edits, cuts): (Vec<Req>, Vec<Edit>, Vec<usize>),
) {
    let panics = listener_panics();
    let before = ups[0].received();
    let bytes = damage(reqs.iter().flat_map(Req::encode).collect(), &edits);
    let mut c = RawClient::connect(mesh).await;
    // The proxy may close first (a refused request): writing can fail then.
    if write_in_pieces(&mut c.stream, &bytes, &cuts).await.is_ok() {
        let _ = c.stream.shutdown().await;
    }
    let (whole, cut) = read_to_close(&mut c).await;
    if let Some(cut) = &cut {
        // The upstream echoes a body as it streams: when that body turns out
        // malformed or cut short by the client's close, the client
        // connection is cut and the answer left unfinished, so that it
        // cannot pass for a whole one. The proxy's own answers are whole.
        assert_eq!(
            (cut.status, cut.header("x-upstream")),
            (200, Some("echo")),
            "only a streamed echo is cut short: {cut:?}"
        );
    }
    let answered = whole.len() + usize::from(cut.is_some());
    // The mesh still serves, and over whatever upstream connection it
    // reuses the answer is this request's own.
    let mut fresh = RawClient::connect(mesh).await;
    fresh
        .send(b"GET /after HTTP/1.1\r\nHost: web\r\n\r\n")
        .await;
    let after = fresh.response(false).await;
    assert_eq!(
        (after.status, after.header("x-seen-path")),
        (200, Some("/after")),
        "{after:?}"
    );
    // Every request that reached the upstream was one the proxy answered (or
    // the last, cut short by the client's close), plus the one above: none
    // was smuggled inside another's body.
    assert_eq!(
        panics.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a listener thread panicked"
    );
    let reached = ups[0].received() - before;
    assert!(
        reached <= answered + 2,
        "{reached} requests reached the upstream, {answered} answered: {:?}",
        String::from_utf8_lossy(&bytes)
    );
}

/// Damaged request streams (bytes replaced, inserted or deleted anywhere):
/// every answer is a whole response, no request reaches the upstream that
/// the proxy did not frame as one, and the mesh keeps serving.
#[test]
fn damaged_requests_are_answered_or_refused_never_smuggled() {
    run(
        async { echo_mesh().await },
        (vec(request(), 1..4), edits(), vec(any::<usize>(), 0..12)),
        async |m, case| check_damaged(m, case).await,
    );
}

// ------------------------------------------------------------ responses

#[derive(Debug, Clone)]
struct Resp {
    /// An interim `103 Early Hints` first (the proxy does not pass it on).
    interim: bool,
    status: u16,
    fields: Vec<(String, String)>,
    hop: Vec<String>,
    framing: Framing,
    body: Vec<u8>,
    /// The upstream closes the connection after this response.
    close: bool,
    cuts: Vec<usize>,
}

fn response() -> impl Strategy<Value = Resp> {
    (
        any::<bool>(),
        select(vec![200u16, 201, 204, 304, 404, 500, 503]),
        vec(end_to_end_field(), 0..6),
        vec(hop_field(), 0..3),
        framing(),
        vec(any::<u8>(), 0..300),
        any::<bool>(),
        vec(any::<usize>(), 0..8),
    )
        .prop_map(
            |(interim, status, fields, hop, framing, body, close, cuts)| {
                let bodiless = status == 204 || status == 304;
                Resp {
                    interim,
                    status,
                    fields,
                    hop,
                    body: match framing {
                        _ if bodiless => Vec::new(),
                        Framing::Chunked { .. } if body.is_empty() => vec![b'x'],
                        _ => body,
                    },
                    // Without a framing field the body ends with the connection.
                    close: close || matches!(framing, Framing::None) && !bodiless,
                    framing: if bodiless { Framing::None } else { framing },
                    cuts,
                }
            },
        )
}

impl Resp {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.interim {
            out.extend_from_slice(
                b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n",
            );
        }
        let start = format!("HTTP/1.1 {} Whatever", self.status);
        let options: &[&str] = if self.close { &["close"] } else { &[] };
        out.extend(message(
            &start,
            &self.fields,
            &self.hop,
            options,
            &self.framing,
            &self.body,
        ));
        out
    }
}

/// An upstream that answers each request head with the next queued
/// response, written in its pieces.
async fn queued() -> (Scripted, Arc<Mutex<VecDeque<Resp>>>) {
    let queue: Arc<Mutex<VecDeque<Resp>>> = Arc::default();
    let next = queue.clone();
    let up = Scripted::spawn_with(move |_| match next.lock().pop_front() {
        Some(r) => Answer {
            bytes: r.encode(),
            cuts: r.cuts,
            close: r.close,
        },
        None => Answer {
            bytes: b"HTTP/1.1 599 Unexpected\r\ncontent-length: 0\r\n\r\n".to_vec(),
            cuts: Vec::new(),
            close: true,
        },
    })
    .await;
    (up, queue)
}

async fn check_responses(
    (mesh, queue): &(TestMesh, Arc<Mutex<VecDeque<Resp>>>),
    (resps, pipelined): (Vec<Resp>, bool),
) {
    queue.lock().extend(resps.iter().cloned());
    let mut c = RawClient::connect(mesh).await;
    let request = b"GET /x HTTP/1.1\r\nHost: raw\r\n\r\n";
    if pipelined {
        c.send(&request.repeat(resps.len())).await;
    }
    for resp in &resps {
        if !pipelined {
            c.send(request).await;
        }
        let got = c.response(false).await;
        assert_eq!(got.status, resp.status, "{resp:?}: {got:?}");
        let generated: Vec<(String, String)> = resp
            .fields
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .collect();
        // The fields the proxy adds of its own are not compared.
        let passed: Vec<(String, String)> = got
            .headers
            .iter()
            .filter(|(n, _)| generated.iter().any(|(g, _)| g == n))
            .cloned()
            .collect();
        assert_eq!(passed, generated, "{resp:?}");
        for h in &resp.hop {
            assert!(
                got.header(&h.to_ascii_lowercase()).is_none(),
                "hop-by-hop {h} passed on: {got:?}"
            );
        }
        assert_eq!(got.body, resp.body, "{resp:?}");
    }
    assert!(queue.lock().is_empty(), "every response was asked for");
}

/// Responses of every framing, written by the upstream in pieces, reach the
/// client whole and in order, on one client connection that stays open.
#[test]
fn responses_in_pieces_reach_the_client_intact() {
    run(
        async {
            let (up, queue) = queued().await;
            let mesh = TestMesh::start(&up.services(), "").await;
            // The upstream serves for as long as its listener task runs.
            drop(up);
            (mesh, queue)
        },
        (vec(response(), 1..4), any::<bool>()),
        async |m, case| check_responses(m, case).await,
    );
}
