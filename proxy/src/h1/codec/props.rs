//! Properties of the codec over generated input. A proxy reads whatever the
//! network hands it, in pieces of any size: every head and chunked body must
//! be read the same whole or cut anywhere, never panic on hostile bytes, and
//! come out as it went in. `PROPTEST_CASES=N` runs more cases than the
//! default 256.

use super::*;
use anymesh_testkit::bytes::{cut, damage, Edit};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

// ---------------------------------------------------------------- helpers

/// A chunked body fed to one decoder piece by piece: the data it gave, the
/// bytes it consumed, and whether it finished (or the error that stopped it).
#[derive(Debug, PartialEq)]
struct Decoded {
    data: Vec<u8>,
    consumed: usize,
    outcome: Result<bool, ChunkError>,
}

fn decode_pieces(pieces: &[&[u8]]) -> Decoded {
    let mut decoder = ChunkedDecoder::new();
    let mut data = Vec::new();
    let mut consumed = 0;
    for piece in pieces {
        match decoder.decode(piece, |d| data.extend_from_slice(d)) {
            Ok(n) => {
                consumed += n;
                if decoder.is_done() {
                    break;
                }
                assert_eq!(
                    n,
                    piece.len(),
                    "a decoder that is not done takes every byte"
                );
            }
            Err(e) => {
                return Decoded {
                    data,
                    consumed,
                    outcome: Err(e),
                }
            }
        }
    }
    Decoded {
        data,
        consumed,
        outcome: Ok(decoder.is_done()),
    }
}

/// Bytes that matter to the parsers, more often than chance would pick them.
fn edit_byte() -> impl Strategy<Value = u8> {
    prop_oneof![select(b"\r\n \t:;,0aF\"\x00\x7f\x80".to_vec()), any::<u8>(),]
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    vec((any::<usize>(), any::<u8>(), edit_byte()), 0..4)
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    vec(any::<usize>(), 0..8)
}

/// A token (RFC 9110 §5.6.2) of 1 to 12 characters.
fn token() -> impl Strategy<Value = String> {
    let tchar = select(
        b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".to_vec(),
    );
    vec(tchar, 1..12).prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// A field value: visible characters with single spaces inside, none at the ends.
fn field_value() -> impl Strategy<Value = String> {
    vec(vec(0x21u8..0x7f, 1..8), 0..4).prop_map(|words| {
        words
            .iter()
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// Optional whitespace around a field value.
fn ows() -> impl Strategy<Value = &'static str> {
    select(vec!["", " ", "\t", "  ", " \t"])
}

/// Names the parsers treat specially; generated fields avoid them.
fn is_special(name: &str) -> bool {
    [
        "content-length",
        "transfer-encoding",
        "connection",
        "expect",
        "host",
    ]
    .iter()
    .any(|s| name.eq_ignore_ascii_case(s))
        || is_hop_by_hop(name.as_bytes())
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    value: String,
    before: &'static str,
    after: &'static str,
}

impl Field {
    fn line(&self) -> String {
        format!(
            "{}:{}{}{}\r\n",
            self.name, self.before, self.value, self.after
        )
    }
}

fn plain_field() -> impl Strategy<Value = Field> {
    (token(), field_value(), ows(), ows())
        .prop_filter("special names are generated on purpose", |(n, ..)| {
            !is_special(n)
        })
        .prop_map(|(name, value, before, after)| Field {
            name,
            value,
            before,
            after,
        })
}

fn field(name: &str, value: String) -> Field {
    Field {
        name: name.to_string(),
        value,
        before: " ",
        after: "",
    }
}

/// `name` in a random mix of upper and lower case.
fn any_case(name: &'static str) -> impl Strategy<Value = String> {
    vec(any::<bool>(), name.len()).prop_map(move |upper| {
        name.chars()
            .zip(upper)
            .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
            .collect()
    })
}

// ---------------------------------------------------------- chunked bodies

/// A chunked body as a sender may write it: chunks of any size with sizes in
/// either case and with leading zeros, extensions, a trailer section.
#[derive(Debug, Clone)]
struct Chunked {
    chunks: Vec<(Vec<u8>, u8, bool, Vec<u8>)>,
    last_zeros: u8,
    trailers: Vec<Field>,
}

fn chunked() -> impl Strategy<Value = Chunked> {
    let ext_byte = prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff];
    let ext = vec(ext_byte, 0..12);
    let chunk = (vec(any::<u8>(), 1..40), 0u8..3, any::<bool>(), ext);
    (vec(chunk, 0..6), 0u8..3, vec(plain_field(), 0..3)).prop_map(
        |(chunks, last_zeros, trailers)| Chunked {
            chunks,
            last_zeros,
            trailers,
        },
    )
}

impl Chunked {
    fn body(&self) -> Vec<u8> {
        self.chunks.iter().flat_map(|c| c.0.clone()).collect()
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (data, zeros, upper, ext) in &self.chunks {
            out.extend(std::iter::repeat_n(b'0', usize::from(*zeros)));
            let size = if *upper {
                format!("{:X}", data.len())
            } else {
                format!("{:x}", data.len())
            };
            out.extend_from_slice(size.as_bytes());
            if !ext.is_empty() {
                out.push(b';');
                out.extend_from_slice(ext);
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend(std::iter::repeat_n(b'0', usize::from(self.last_zeros) + 1));
        out.extend_from_slice(b"\r\n");
        for t in &self.trailers {
            out.extend_from_slice(t.line().as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

proptest! {
    /// A chunked body comes out whole however it is cut, and what follows it
    /// (the next message) is left unread.
    #[test]
    fn chunked_bodies_decode_whole_however_cut(
        body in chunked(),
        next in vec(any::<u8>(), 0..16),
        cuts in cuts(),
    ) {
        let encoded = body.encode();
        let mut input = encoded.clone();
        input.extend_from_slice(&next);
        let decoded = decode_pieces(&cut(&input, &cuts));
        prop_assert_eq!(decoded, Decoded { data: body.body(), consumed: encoded.len(), outcome: Ok(true) });
    }

    /// What the proxy itself writes with `write_chunk` and `LAST_CHUNK` reads back.
    #[test]
    fn written_chunks_read_back(
        pieces in vec(vec(any::<u8>(), 0..300), 0..5),
        cuts in cuts(),
    ) {
        let mut out = BytesMut::new();
        for p in &pieces {
            write_chunk(&mut out, p);
        }
        out.extend_from_slice(LAST_CHUNK);
        let decoded = decode_pieces(&cut(&out, &cuts));
        prop_assert_eq!(decoded, Decoded { data: pieces.concat(), consumed: out.len(), outcome: Ok(true) });
    }

    /// Damaged or hostile chunked bytes: the decoder never panics, and a cut
    /// changes nothing: the same data, the same end, the same error.
    #[test]
    fn chunked_decoding_does_not_depend_on_cuts(
        input in prop_oneof![
            (chunked(), edits()).prop_map(|(c, e)| damage(c.encode(), &e)),
            vec(select(b"0123456789abcdefABCDEFxz;= \t\r\n".to_vec()), 0..64),
            vec(any::<u8>(), 0..64),
        ],
        cuts in cuts(),
    ) {
        let whole = decode_pieces(&[&input]);
        let pieces = decode_pieces(&cut(&input, &cuts));
        if whole.outcome.is_err() {
            // Where the error struck depends on the cut; what it is and the
            // data before it do not.
            prop_assert_eq!(&pieces.outcome, &whole.outcome);
            prop_assert_eq!(&pieces.data, &whole.data);
        } else {
            prop_assert_eq!(pieces, whole);
        }
    }
}

// ------------------------------------------------------------ request heads

#[derive(Debug, Clone)]
enum ReqFraming {
    None,
    /// The length, written as this many repeats in one field (`5, 5`).
    Length(u64, usize),
    /// `Transfer-Encoding: chunked`, name and value in this case.
    Chunked(String, String),
}

#[derive(Debug, Clone)]
struct ReqModel {
    method: String,
    target: String,
    http10: bool,
    fields: Vec<Field>,
    framing: ReqFraming,
    /// `Connection` tokens, if the field is sent.
    connection: Option<Vec<&'static str>>,
    /// Where the framing and `Connection` fields go among the others.
    at: (usize, usize),
}

fn target() -> impl Strategy<Value = String> {
    let c = select(b"abcxyzABCXYZ0189-._~!$&'()*+,;=:@/?%".to_vec());
    vec(c, 0..24).prop_map(|b| format!("/{}", String::from_utf8_lossy(&b)))
}

fn request_model() -> impl Strategy<Value = ReqModel> {
    let method = prop_oneof![
        select(vec![
            "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"
        ])
        .prop_map(String::from),
        token().prop_map(|t| t.to_ascii_uppercase()),
    ];
    let framing = prop_oneof![
        Just(ReqFraming::None),
        (0u64..1_000_000, 1usize..3).prop_map(|(n, r)| ReqFraming::Length(n, r)),
        (any_case("transfer-encoding"), any_case("chunked"))
            .prop_map(|(n, v)| ReqFraming::Chunked(n, v)),
    ];
    let connection = proptest::option::of(vec(
        select(vec![
            "close",
            "keep-alive",
            "Upgrade",
            "x-hop",
            "CLOSE",
            "Keep-Alive",
        ]),
        1..3,
    ));
    (
        method,
        target(),
        any::<bool>(),
        vec(plain_field(), 0..10),
        framing,
        connection,
        (any::<usize>(), any::<usize>()),
    )
        .prop_map(
            |(method, target, http10, fields, framing, connection, at)| {
                // HTTP/1.0 has no transfer codings: send it as HTTP/1.1 then.
                let http10 = http10 && !matches!(framing, ReqFraming::Chunked(..));
                ReqModel {
                    method,
                    target,
                    http10,
                    fields,
                    framing,
                    connection,
                    at,
                }
            },
        )
}

impl ReqModel {
    /// Every field line in the order sent, framing and `Connection` included.
    fn all_fields(&self) -> Vec<Field> {
        let mut all = self.fields.clone();
        let special = match &self.framing {
            ReqFraming::None => None,
            ReqFraming::Length(n, r) => {
                Some(field("Content-Length", vec![n.to_string(); *r].join(", ")))
            }
            ReqFraming::Chunked(name, value) => Some(field(name, value.clone())),
        };
        if let Some(f) = special {
            all.insert(self.at.0 % (all.len() + 1), f);
        }
        if let Some(tokens) = &self.connection {
            all.insert(
                self.at.1 % (all.len() + 1),
                field("Connection", tokens.join(", ")),
            );
        }
        all
    }

    fn encode(&self) -> Vec<u8> {
        let version = if self.http10 { "1.0" } else { "1.1" };
        let mut s = format!("{} {} HTTP/{version}\r\n", self.method, self.target);
        for f in self.all_fields() {
            s.push_str(&f.line());
        }
        s.push_str("\r\n");
        s.into_bytes()
    }

    fn framing(&self) -> Framing {
        match self.framing {
            ReqFraming::None => Framing::None,
            ReqFraming::Length(n, _) => Framing::Length(n),
            ReqFraming::Chunked(..) => Framing::Chunked,
        }
    }

    fn keep_alive(&self) -> bool {
        let tokens = self.connection.clone().unwrap_or_default();
        let has = |t: &str| tokens.iter().any(|x| x.eq_ignore_ascii_case(t));
        !has("close") && (!self.http10 || has("keep-alive"))
    }

    /// The fields a parsed head keeps (framing fields go), lower-cased names.
    fn kept(&self) -> Vec<(String, String)> {
        self.all_fields()
            .into_iter()
            .filter(|f| {
                !f.name.eq_ignore_ascii_case("content-length")
                    && !f.name.eq_ignore_ascii_case("transfer-encoding")
            })
            .map(|f| (f.name.to_ascii_lowercase(), f.value))
            .collect()
    }
}

/// The fields of a header map, per name in the order they were added.
fn by_name(fields: impl IntoIterator<Item = (String, String)>) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (n, v) in fields {
        match out.iter_mut().find(|(m, _)| *m == n) {
            Some((_, vs)) => vs.push(v),
            None => out.push((n, vec![v])),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn map_fields(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// What a parse of a head gave, comparable across cuts.
#[derive(Debug, PartialEq)]
enum Parsed {
    Partial,
    /// The head's length and its framing.
    Head(usize, Framing),
    Error(HeadError),
}

fn parse_req_bytes(bytes: &[u8]) -> Parsed {
    match parse_request(&mut BytesMut::from(bytes)) {
        Ok(None) => Parsed::Partial,
        Ok(Some(h)) => Parsed::Head(h.raw.len(), h.framing),
        Err(e) => Parsed::Error(e),
    }
}

fn parse_resp_bytes(bytes: &[u8], head_request: bool) -> Parsed {
    match parse_response(&mut BytesMut::from(bytes), head_request) {
        Ok(None) => Parsed::Partial,
        Ok(Some(h)) => Parsed::Head(h.raw.len(), h.framing),
        Err(e) => Parsed::Error(e),
    }
}

/// A head read as its bytes arrive: each prefix is incomplete until the head
/// is whole, or the error the whole head has.
fn prefixes_agree(
    bytes: &[u8],
    cuts: &[usize],
    parse: impl Fn(&[u8]) -> Parsed,
) -> Result<(), TestCaseError> {
    let whole = parse(bytes);
    for c in cuts {
        let k = c % (bytes.len() + 1);
        let prefix = parse(&bytes[..k]);
        match &whole {
            Parsed::Head(len, _) if k >= *len => prop_assert_eq!(&prefix, &whole, "cut at {}", k),
            Parsed::Head(..) | Parsed::Partial => {
                prop_assert_eq!(&prefix, &Parsed::Partial, "cut at {}", k)
            }
            Parsed::Error(_) => prop_assert!(
                prefix == Parsed::Partial || prefix == whole,
                "cut at {}: {:?}, whole: {:?}",
                k,
                prefix,
                whole
            ),
        }
    }
    Ok(())
}

proptest! {
    /// A request head with any fields, in any case and spacing, reads back as
    /// sent; what follows it stays in the buffer; written on upstream it reads
    /// back the same again.
    #[test]
    fn request_heads_read_back_as_sent(model in request_model(), next in vec(any::<u8>(), 0..16)) {
        let encoded = model.encode();
        let mut buf = BytesMut::from(&encoded[..]);
        buf.extend_from_slice(&next);
        let head = parse_request(&mut buf);
        let head = match head {
            Ok(Some(h)) => h,
            other => return Err(TestCaseError::fail(format!("{other:?} for {:?}", String::from_utf8_lossy(&encoded)))),
        };
        prop_assert_eq!(&buf[..], &next[..]);
        prop_assert_eq!(&head.raw[..], &encoded[..]);
        prop_assert_eq!(head.parts.method.as_str(), model.method.as_str());
        prop_assert_eq!(head.parts.uri.to_string(), model.target.clone());
        let version = if model.http10 { Version::HTTP_10 } else { Version::HTTP_11 };
        prop_assert_eq!(head.parts.version, version);
        prop_assert_eq!(head.framing, model.framing());
        prop_assert_eq!(head.keep_alive, model.keep_alive());
        prop_assert!(!head.expect_continue);
        prop_assert_eq!(by_name(map_fields(&head.parts.headers)), by_name(model.kept()));

        // Written on to an upstream, it reads back the same (as HTTP/1.1).
        let mut out = BytesMut::new();
        write_request_head(&mut out, &head.parts, head.framing);
        let again = parse_request(&mut out);
        let again = match again {
            Ok(Some(h)) => h,
            other => return Err(TestCaseError::fail(format!("{other:?} reading back what was written"))),
        };
        prop_assert!(out.is_empty());
        prop_assert_eq!(&again.parts.method, &head.parts.method);
        prop_assert_eq!(&again.parts.uri, &head.parts.uri);
        prop_assert_eq!(again.parts.version, Version::HTTP_11);
        prop_assert_eq!(again.framing, head.framing);
        prop_assert_eq!(by_name(map_fields(&again.parts.headers)), by_name(map_fields(&head.parts.headers)));
    }

    /// A request head read as it arrives, byte range by byte range, is read
    /// as it is whole: valid, damaged or hostile.
    #[test]
    fn request_heads_read_the_same_in_pieces(
        bytes in prop_oneof![
            request_model().prop_map(|m| m.encode()),
            (request_model(), edits()).prop_map(|(m, e)| damage(m.encode(), &e)),
            vec(any::<u8>(), 0..64),
        ],
        cuts in vec(any::<usize>(), 1..8),
    ) {
        prefixes_agree(&bytes, &cuts, parse_req_bytes)?;
    }
}

// ----------------------------------------------------------- response heads

#[derive(Debug, Clone)]
enum RespFraming {
    /// No framing field: the body runs until the connection closes.
    Close,
    Length(u64),
    Chunked,
    /// A coding other than chunked, last: read until close.
    Gzip,
}

#[derive(Debug, Clone)]
struct RespModel {
    status: u16,
    http10: bool,
    head_request: bool,
    /// Plain fields and hop-by-hop ones, mixed.
    fields: Vec<Field>,
    framing: RespFraming,
    /// Names the `Connection` field lists besides its own tokens.
    named: Vec<String>,
    at: (usize, usize),
}

fn hop_field() -> impl Strategy<Value = Field> {
    let name = prop_oneof![
        any_case("keep-alive"),
        any_case("te"),
        any_case("trailer"),
        any_case("upgrade"),
        any_case("proxy-connection"),
        any_case("proxy-authenticate"),
        any_case("proxy-authorization"),
    ];
    (name, field_value()).prop_map(|(name, value)| field(&name, value))
}

fn response_model() -> impl Strategy<Value = RespModel> {
    let status = select(vec![
        100u16, 103, 200, 201, 204, 206, 301, 304, 404, 500, 503,
    ]);
    let framing = prop_oneof![
        Just(RespFraming::Close),
        (0u64..1_000_000).prop_map(RespFraming::Length),
        Just(RespFraming::Chunked),
        Just(RespFraming::Gzip),
    ];
    let fields = vec(prop_oneof![4 => plain_field(), 1 => hop_field()], 0..12);
    (
        status,
        any::<bool>(),
        any::<bool>(),
        fields,
        framing,
        vec(token(), 0..3),
        (any::<usize>(), any::<usize>()),
    )
        .prop_map(
            |(status, http10, head_request, fields, framing, named, at)| RespModel {
                status,
                http10,
                head_request,
                fields,
                framing,
                named,
                at,
            },
        )
}

impl RespModel {
    fn bodiless(&self) -> bool {
        self.head_request || self.status < 200 || self.status == 204 || self.status == 304
    }

    fn all_fields(&self) -> Vec<Field> {
        let mut all = self.fields.clone();
        let special = match self.framing {
            RespFraming::Close => None,
            RespFraming::Length(n) => Some(field("Content-Length", n.to_string())),
            RespFraming::Chunked => Some(field("Transfer-Encoding", "chunked".into())),
            RespFraming::Gzip => Some(field("Transfer-Encoding", "gzip".into())),
        };
        if let Some(f) = special {
            all.insert(self.at.0 % (all.len() + 1), f);
        }
        if !self.named.is_empty() {
            all.insert(
                self.at.1 % (all.len() + 1),
                field("Connection", self.named.join(", ")),
            );
        }
        all
    }

    fn encode(&self) -> Vec<u8> {
        let version = if self.http10 { "1.0" } else { "1.1" };
        let mut s = format!("HTTP/{version} {} Whatever\r\n", self.status);
        for f in self.all_fields() {
            s.push_str(&f.line());
        }
        s.push_str("\r\n");
        s.into_bytes()
    }

    fn framing(&self) -> Framing {
        if self.bodiless() {
            return Framing::None;
        }
        match self.framing {
            RespFraming::Length(n) => Framing::Length(n),
            RespFraming::Chunked => Framing::Chunked,
            RespFraming::Close | RespFraming::Gzip => Framing::Close,
        }
    }

    /// The fields passed on to the client, names as sent: no hop-by-hop
    /// field, none the `Connection` field names, no framing field except the
    /// `Content-Length` of a HEAD or 304 response.
    fn passed_on(&self) -> Vec<(String, String)> {
        let named = |n: &str| self.named.iter().any(|t| t.eq_ignore_ascii_case(n));
        let cl_kept = self.bodiless() && self.status >= 200 && self.status != 204;
        self.all_fields()
            .into_iter()
            .filter(|f| {
                let n = f.name.as_str();
                !is_hop_by_hop(n.as_bytes())
                    && !named(n)
                    && (!n.eq_ignore_ascii_case("content-length") || cl_kept)
            })
            .map(|f| (f.name, f.value))
            .collect()
    }
}

/// The status and fields of a response head (names as sent).
fn read_response_head(bytes: &[u8]) -> Result<(u16, Vec<(String, String)>), String> {
    let mut fields = [httparse::EMPTY_HEADER; 256];
    let mut resp = httparse::Response::new(&mut fields);
    match resp.parse(bytes) {
        Ok(httparse::Status::Complete(n)) if n == bytes.len() => {}
        other => {
            return Err(format!(
                "{other:?} for {:?}",
                String::from_utf8_lossy(bytes)
            ))
        }
    }
    let fields = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    Ok((resp.code.unwrap_or_default(), fields))
}

fn header_ops() -> impl Strategy<Value = HeaderOps> {
    // A few names, so that operations meet each other and the received fields.
    let name = select(vec![
        "x-a",
        "x-b",
        "X-A",
        "content-length",
        "connection",
        "server",
    ])
    .prop_map(|n| HeaderName::from_bytes(n.as_bytes()).expect("valid name"));
    let value = select(vec!["1", "2", "three"]).prop_map(HeaderValue::from_static);
    let pairs = vec((name.clone(), value), 0..3);
    (pairs.clone(), pairs, vec(name, 0..2)).prop_map(|(set, add, remove)| HeaderOps {
        set,
        add,
        remove,
    })
}

proptest! {
    /// A response head is read as sent, and the head written on to the
    /// client carries every end-to-end field as received, in order, and no
    /// hop-by-hop one; with header operations the fields come out as
    /// `HeaderOps::apply` (the path of responses that hyper carries) leaves
    /// them.
    #[test]
    fn response_heads_pass_on_end_to_end_fields(
        model in response_model(),
        ops in vec(header_ops(), 0..3),
        next in vec(any::<u8>(), 0..16),
    ) {
        let encoded = model.encode();
        let mut buf = BytesMut::from(&encoded[..]);
        buf.extend_from_slice(&next);
        let head = match parse_response(&mut buf, model.head_request) {
            Ok(Some(h)) => h,
            other => return Err(TestCaseError::fail(format!("{other:?} for {:?}", String::from_utf8_lossy(&encoded)))),
        };
        prop_assert_eq!(&buf[..], &next[..]);
        prop_assert_eq!(head.status.as_u16(), model.status);
        prop_assert_eq!(head.framing, model.framing());

        // Without operations: the received lines, hop-by-hop ones left out.
        let mut out = BytesMut::new();
        write_proxied_response_head(&mut out, &head, &[], None, head.framing, false);
        let (status, fields) = read_response_head(&out).map_err(TestCaseError::fail)?;
        prop_assert_eq!(status, model.status);
        let mut expected = model.passed_on();
        match head.framing {
            Framing::Length(n) => expected.push(("content-length".into(), n.to_string())),
            Framing::Chunked => expected.push(("transfer-encoding".into(), "chunked".into())),
            Framing::None | Framing::Close => {}
        }
        prop_assert_eq!(&fields, &expected);

        // With operations: as applying them to a header map of those fields.
        let refs: Vec<&HeaderOps> = ops.iter().collect();
        let mut emitted = Vec::new();
        proxied_fields(&head, &refs, None, |n, v| {
            emitted.push((String::from_utf8_lossy(n).to_ascii_lowercase(), String::from_utf8_lossy(v).into_owned()));
        });
        let mut map = HeaderMap::new();
        for (n, v) in model.passed_on() {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).expect("generated name"),
                HeaderValue::from_str(&v).expect("generated value"),
            );
        }
        for o in &ops {
            o.apply(&mut map);
        }
        // `apply` may name framing or hop-by-hop fields; those are the
        // proxy's own to write and never go out as operations set them.
        let applied = map_fields(&map).into_iter().filter(|(n, _)| {
            n != "content-length" && !is_hop_by_hop(n.as_bytes())
        });
        let kept_cl = |(n, _): &(String, String)| n != "content-length";
        prop_assert_eq!(
            by_name(emitted.iter().filter(|f| kept_cl(f)).cloned()),
            by_name(applied)
        );
    }

    /// A response head read as it arrives is read as it is whole.
    #[test]
    fn response_heads_read_the_same_in_pieces(
        (bytes, head_request) in prop_oneof![
            response_model().prop_map(|m| (m.encode(), m.head_request)),
            (response_model(), edits()).prop_map(|(m, e)| (damage(m.encode(), &e), m.head_request)),
            (vec(any::<u8>(), 0..64), any::<bool>()),
        ],
        cuts in vec(any::<usize>(), 1..8),
    ) {
        prefixes_agree(&bytes, &cuts, |b| parse_resp_bytes(b, head_request))?;
    }
}
