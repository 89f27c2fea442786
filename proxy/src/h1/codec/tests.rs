use super::*;

fn req(raw: &str) -> Result<Option<RequestHead>, HeadError> {
    let mut buf = BytesMut::from(raw.as_bytes());
    parse_request(&mut buf)
}

fn framing(raw: &str) -> Result<Framing, HeadError> {
    req(raw).map(|h| h.expect("complete head").framing)
}

#[test]
fn parses_a_request_head_and_leaves_the_rest() {
    let mut buf = BytesMut::from(
        &b"GET /a?b=1 HTTP/1.1\r\nHost: web\r\nX-Two: a\r\nx-two: b\r\n\r\nGET /next HTTP/1.1\r\n"
            [..],
    );
    let head = parse_request(&mut buf).unwrap().unwrap();
    assert_eq!(head.parts.method, Method::GET);
    assert_eq!(head.parts.uri, "/a?b=1");
    assert_eq!(head.parts.version, Version::HTTP_11);
    assert_eq!(head.parts.headers["host"], "web");
    assert_eq!(head.parts.headers.get_all("x-two").iter().count(), 2);
    assert_eq!(head.framing, Framing::None);
    assert!(head.keep_alive);
    assert!(!head.expect_continue);
    assert_eq!(&buf[..], b"GET /next HTTP/1.1\r\n");
    assert!(head.raw.starts_with(b"GET /a?b=1") && head.raw.ends_with(b"\r\n\r\n"));
    // The rest is not a whole head yet.
    assert!(parse_request(&mut buf).unwrap().is_none());
}

#[test]
fn absolute_form_and_asterisk_targets() {
    let head = req("GET http://web:81/x HTTP/1.1\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(head.parts.uri.authority().unwrap(), "web:81");
    let head = req("OPTIONS * HTTP/1.1\r\nHost: web\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(head.parts.uri, "*");
}

#[test]
fn keep_alive_follows_version_and_connection() {
    let ka = |raw: &str| req(raw).unwrap().unwrap().keep_alive;
    assert!(ka("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(!ka(
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    ));
    assert!(!ka(
        "GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n"
    ));
    assert!(!ka("GET / HTTP/1.0\r\nHost: a\r\n\r\n"));
    assert!(ka(
        "GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"
    ));
}

#[test]
fn framing_of_requests() {
    assert_eq!(
        framing("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
        Ok(Framing::Length(5))
    );
    // A list of equal values, or repeated equal fields, is one length.
    assert_eq!(
        framing("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n"),
        Ok(Framing::Length(5))
    );
    assert_eq!(
        framing("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"),
        Ok(Framing::Chunked)
    );
    let head = req("POST / HTTP/1.1\r\nContent-Length: 5\r\nX: y\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(head.parts.headers.get("content-length").is_none());
    assert!(head.parts.headers.get("x").is_some());
}

/// Each of these could make two parsers disagree on where the body ends.
#[test]
fn ambiguous_request_framing_is_refused() {
    let cases: &[(&str, StatusCode)] = &[
        (
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\n",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            StatusCode::NOT_IMPLEMENTED,
        ),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            StatusCode::NOT_IMPLEMENTED,
        ),
        // Whitespace before the colon, obsolete line folding, NUL in a value.
        (
            "POST / HTTP/1.1\r\nContent-Length : 5\r\n\r\n",
            StatusCode::BAD_REQUEST,
        ),
        (
            "GET / HTTP/1.1\r\nX: a\r\n b\r\nHost: web\r\n\r\n",
            StatusCode::BAD_REQUEST,
        ),
        ("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", StatusCode::BAD_REQUEST),
        ("GET / HTTP/2.0\r\n\r\n", StatusCode::BAD_REQUEST),
        ("GET  / HTTP/1.1\r\n\r\n", StatusCode::BAD_REQUEST),
        (
            "GET / HTTP/1.1\r\nExpect: magic\r\n\r\n",
            StatusCode::EXPECTATION_FAILED,
        ),
    ];
    for (raw, status) in cases {
        match req(raw) {
            Err(e) => assert_eq!(e.status(), *status, "{raw:?}: {e}"),
            Ok(h) => panic!("{raw:?} accepted: {h:?}"),
        }
    }
}

#[test]
fn head_limits() {
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
    assert_eq!(req(&big).unwrap_err(), HeadError::TooLarge);
    let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
    let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
    assert_eq!(req(&raw).unwrap_err(), HeadError::TooManyHeaders);
}

#[test]
fn expect_continue_only_in_http_11() {
    let raw = "POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n";
    assert!(req(raw).unwrap().unwrap().expect_continue);
    let raw = "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n";
    assert!(!req(raw).unwrap().unwrap().expect_continue);
}

fn resp(raw: &str, head_request: bool) -> ResponseHead {
    let mut buf = BytesMut::from(raw.as_bytes());
    parse_response(&mut buf, head_request)
        .unwrap()
        .expect("complete head")
}

#[test]
fn framing_of_responses() {
    let r = resp("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", false);
    assert_eq!(r.framing, Framing::Length(3));
    assert!(r.keep_alive);
    assert!(r.header("content-length").is_none());

    // HEAD and 304: no body, Content-Length passed on; 204: dropped.
    let r = resp("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true);
    assert_eq!(r.framing, Framing::None);
    assert_eq!(r.header("content-length"), Some(&b"3"[..]));
    let r = resp(
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n",
        false,
    );
    assert_eq!(r.framing, Framing::None);
    assert_eq!(r.header("content-length"), Some(&b"3"[..]));
    let r = resp(
        "HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
        false,
    );
    assert_eq!(r.framing, Framing::None);
    assert!(r.header("content-length").is_none());

    let r = resp(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        false,
    );
    assert_eq!(r.framing, Framing::Chunked);
    assert!(r.keep_alive);
    assert!(r.header("transfer-encoding").is_none());
    // Transfer-Encoding wins over Content-Length, and the connection is not reused.
    let r = resp(
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        false,
    );
    assert_eq!(r.framing, Framing::Chunked);
    assert!(!r.keep_alive);
    // No length: the body runs to the close.
    let r = resp("HTTP/1.1 200 OK\r\n\r\n", false);
    assert_eq!(r.framing, Framing::Close);
    assert!(!r.keep_alive);
    let r = resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false);
    assert_eq!(r.framing, Framing::Close);

    let r = resp("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false);
    assert!(!r.keep_alive);
    let r = resp(
        "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
        false,
    );
    assert!(r.keep_alive);
    let r = resp("HTTP/1.1 100 Continue\r\n\r\n", false);
    assert!(r.status.is_informational());
    assert_eq!(r.framing, Framing::None);
}

#[test]
fn bad_response_heads_are_errors() {
    for raw in [
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTX/1.1 200 OK\r\n\r\n",
    ] {
        let mut buf = BytesMut::from(raw.as_bytes());
        assert!(parse_response(&mut buf, false).is_err(), "{raw:?}");
    }
}

#[test]
fn writes_heads() {
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = Method::POST;
    parts.uri = "/x?y".parse().unwrap();
    parts
        .headers
        .insert("host", HeaderValue::from_static("web"));
    let mut out = BytesMut::new();
    write_request_head(&mut out, &parts, Framing::Length(3));
    assert_eq!(
        &out[..],
        b"POST /x?y HTTP/1.1\r\nhost: web\r\ncontent-length: 3\r\n\r\n"
    );
    let mut out = BytesMut::new();
    write_response_head(
        &mut out,
        StatusCode::NOT_FOUND,
        &HeaderMap::new(),
        Framing::Chunked,
        true,
    );
    assert_eq!(
        &out[..],
        b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    let mut out = BytesMut::new();
    write_chunk(&mut out, b"hello world, this is 31 bytes!!");
    assert_eq!(&out[..], b"1f\r\nhello world, this is 31 bytes!!\r\n");
}

fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
    let mut d = ChunkedDecoder::new();
    let mut data = Vec::new();
    let used = d.decode(input, |b| data.extend_from_slice(b))?;
    Ok((data, used, d.is_done()))
}

#[test]
fn decodes_chunked_bodies() {
    let body = b"5\r\nhello\r\n6;name=\"v\"\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nGET /";
    let (data, used, done) = decode_all(body).unwrap();
    assert_eq!(data, b"hello world");
    assert!(done);
    // Stops at the end of the body: the pipelined request stays.
    assert_eq!(&body[used..], b"GET /");

    // Fed one byte at a time, the result is the same.
    let mut d = ChunkedDecoder::new();
    let mut data = Vec::new();
    for b in body.iter().take(used) {
        assert!(!d.is_done());
        let n = d
            .decode(std::slice::from_ref(b), |x| data.extend_from_slice(x))
            .unwrap();
        assert_eq!(n, 1);
    }
    assert!(d.is_done());
    assert_eq!(data, b"hello world");

    let (data, _, done) = decode_all(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap();
    assert_eq!(data, b"0123456789");
    assert!(done);
    let (_, _, done) = decode_all(b"5\r\nhel").unwrap();
    assert!(!done);
}

#[test]
fn malformed_chunked_bodies_are_refused() {
    for bad in [
        &b"5\nhello\r\n0\r\n\r\n"[..],
        b"5\r\nhelloX\r\n0\r\n\r\n",
        b"5\r\nhello\n0\r\n\r\n",
        b"\r\n",
        b"-5\r\nhello\r\n",
        b"0x5\r\nhello\r\n",
        b"11111111111111111\r\n",
        b"0\r\n\n",
        b"0\r\nX: 1\n\r\n",
        b"5;a\nhello\r\n",
        b"5;a\x01\r\nhello\r\n",
    ] {
        assert!(
            decode_all(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let long_ext = format!("1;{}\r\n", "a".repeat(MAX_CHUNK_META + 1));
    assert!(decode_all(long_ext.as_bytes()).is_err());
}

#[test]
fn proxied_response_heads_drop_hop_by_hop_fields_and_apply_operations() {
    let raw = "HTTP/1.1 200 OK\r\nServer: up\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Drop: a\r\nX-Set: old\r\nX-Keep: Mixed Case\r\nContent-Length: 2\r\n\r\nok";
    let head = resp(raw, false);
    let name = |n: &'static str| HeaderName::from_static(n);
    let value = |v: &'static str| HeaderValue::from_static(v);
    let target = HeaderOps {
        set: vec![(name("x-set"), value("target"))],
        add: vec![(name("x-added"), value("1"))],
        remove: vec![],
    };
    let route = HeaderOps {
        set: vec![(name("x-set"), value("route"))],
        add: vec![],
        remove: vec![name("x-drop"), name("x-added")],
    };
    let cookie = (name("set-cookie"), value("c=1"));
    let mut out = BytesMut::new();
    write_proxied_response_head(
        &mut out,
        &head,
        &[&target, &route],
        Some((&cookie.0, &cookie.1)),
        Framing::Length(2),
        false,
    );
    assert_eq!(
        String::from_utf8_lossy(&out),
        "HTTP/1.1 200 OK\r\nServer: up\r\nX-Keep: Mixed Case\r\nx-set: route\r\nset-cookie: c=1\r\ncontent-length: 2\r\n\r\n"
    );
}

/// Without header operations the kept fields are copied in runs of received
/// lines; read back, they are exactly the fields `proxied_fields` passes on.
#[test]
fn unchanged_fields_are_copied_as_received_lines() {
    let heads = [
        // Connection between kept fields: two runs.
        "HTTP/1.1 200 OK\r\nServer: up\r\nDate: x\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nETag: \"e\"\r\nContent-Length: 2\r\n\r\n",
        // Bare LF endings, no space after the colon, trailing blanks.
        "HTTP/1.1 200 OK\nA:1\nB:  two  \r\nC: 3 \t\r\nKeep-Alive: t\r\nD: 4\nContent-Length: 2\n\n",
        // Nothing kept.
        "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
        // Empty values; a field `Connection` names as `close` goes too.
        "HTTP/1.1 200 OK\r\nX-Empty:\r\nX-Blank: \r\nClose: x\r\nConnection: close\r\nX-End:\r\nContent-Length: 2\r\n\r\n",
        // Content-Length of a HEAD response passes unchanged; last field kept.
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 7\r\nX-Last: z\r\n\r\n",
    ];
    for raw in heads {
        let head = resp(raw, raw.contains("Content-Length: 7"));
        let mut expected = Vec::new();
        proxied_fields(&head, &[], None, |n, v| {
            expected.push((n.to_vec(), v.to_vec()))
        });
        let mut out = BytesMut::new();
        write_proxied_response_head(&mut out, &head, &[], None, Framing::None, false);
        assert!(out.ends_with(b"\r\n\r\n"), "{raw:?}: {out:?}");
        let mut fields = [httparse::EMPTY_HEADER; 16];
        let mut back = httparse::Response::new(&mut fields);
        assert!(back.parse(&out).unwrap().is_complete(), "{raw:?}: {out:?}");
        let got: Vec<_> = back
            .headers
            .iter()
            .map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec()))
            .collect();
        assert_eq!(got, expected, "{raw:?}: {out:?}");
        assert!(
            !got.iter().any(|(n, _)| n.eq_ignore_ascii_case(b"close")),
            "a field Connection names stays: {out:?}"
        );
        assert!(
            !out.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
            "bare LF in {out:?}"
        );
    }
}

#[test]
fn the_fixed_hop_by_hop_list_is_matched_in_any_case() {
    const HOP_BY_HOP: [&[u8]; 9] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    ];
    for name in HOP_BY_HOP {
        assert!(is_hop_by_hop(name), "{name:?}");
        assert!(is_hop_by_hop(&name.to_ascii_uppercase()), "{name:?}");
    }
    for name in [
        "t",
        "tee",
        "content-length",
        "server",
        "connections",
        "proxy-authorizatio",
    ] {
        assert!(!is_hop_by_hop(name.as_bytes()), "{name}");
    }
}
