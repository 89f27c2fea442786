//! Generated frame sequences against the whole connection, over a duplex:
//! any frames (well-formed or not, on any streams, with any flags), written
//! in pieces of any size, with a client that reads its answers or does not.
//! The connection never panics, its buffers, streams and windows stay
//! within their bounds after every poll, and it ends once the client is gone.
//!
//! `PROPTEST_CASES=N` runs N cases (64 by default: each case is a connection).

use std::future::poll_fn;
use std::sync::Arc;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestRunner};

use super::super::conn::Conn;
use super::super::handoff::Handler;
use super::super::limits::{CONN_WINDOW, MAX_HEADER_BLOCK, MAX_STREAMS, STREAM_WINDOW, WRITE_HIGH};
use super::*;

/// One generated frame: its type, flags, stream and payload.
#[derive(Clone, Debug)]
struct Gen {
    ty: u8,
    flags: u8,
    id: Id,
    payload: Vec<u8>,
}

/// A frame's stream, mostly relative to the streams opened before it, so
/// that sequences get past the first check and reach the stream states.
#[derive(Clone, Copy, Debug)]
enum Id {
    /// The next stream id the client may open.
    New,
    /// The stream opened last.
    Latest,
    Fixed(u32),
}

fn request_block() -> impl Strategy<Value = Vec<u8>> {
    // Mostly valid fields; now and then one that makes the request malformed.
    let extra = vec(
        prop_oneof![
            4 => "[a-z0-9]{0,12}".prop_map(|v| ("x-a", v)),
            1 => "[0-9]{1,3}".prop_map(|v| ("content-length", v)),
            1 => Just(("te", "trailers".to_string())),
            1 => "[a-z]=[a-z]{0,5}".prop_map(|v| ("cookie", v)),
            1 => "[a-z ]{0,4}".prop_map(|v| ("te", v)),
        ],
        0..3,
    );
    let method = prop_oneof![6 => Just("GET"), 3 => Just("POST"), 1 => Just("CONNECT")];
    (method, proptest::bool::weighted(0.1), extra).prop_map(|(method, no_scheme, extra)| {
        let mut fields: Vec<(&str, String)> =
            GET.iter().map(|(n, v)| (*n, v.to_string())).collect();
        fields[0].1 = method.to_string();
        if no_scheme {
            fields.retain(|(n, _)| *n != ":scheme");
        }
        fields.extend(extra);
        let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
        block(&fields)
    })
}

fn settings_payload() -> impl Strategy<Value = Vec<u8>> {
    let pair = prop_oneof![
        Just(SETTINGS_HEADER_TABLE_SIZE).prop_flat_map(|k| (Just(k), 0u32..10_000)),
        Just(SETTINGS_ENABLE_PUSH).prop_flat_map(|k| (Just(k), 0u32..2)),
        Just(SETTINGS_MAX_CONCURRENT_STREAMS).prop_flat_map(|k| (Just(k), any::<u32>())),
        Just(SETTINGS_INITIAL_WINDOW_SIZE).prop_flat_map(|k| (
            Just(k),
            prop_oneof![0u32..100, 100u32..100_000, Just((1 << 31) - 1)]
        )),
        Just(SETTINGS_MAX_FRAME_SIZE).prop_flat_map(|k| (Just(k), 16_384u32..=16_777_215)),
        Just(SETTINGS_MAX_HEADER_LIST_SIZE).prop_flat_map(|k| (Just(k), any::<u32>())),
        (7u16..=u16::MAX, any::<u32>()),
    ];
    prop_oneof![
        20 => vec(pair, 0..4).prop_map(|s| s
            .into_iter()
            .flat_map(|(k, v)| {
                let mut e = k.to_be_bytes().to_vec();
                e.extend_from_slice(&v.to_be_bytes());
                e
            })
            .collect()),
        1 => vec(any::<u8>(), 0..14),
    ]
}

fn payload(ty: u8) -> BoxedStrategy<Vec<u8>> {
    let bytes = |n: usize| vec(any::<u8>(), 0..n).boxed();
    match ty {
        HEADERS | CONTINUATION => prop_oneof![
            12 => request_block(),
            1 => request_block().prop_map(|mut b| {
                b.truncate(b.len() / 2);
                b
            }),
            1 => bytes(40),
        ]
        .boxed(),
        SETTINGS => settings_payload().boxed(),
        WINDOW_UPDATE | RST_STREAM => prop_oneof![
            6 => (1u32..100_000).prop_map(|v| v.to_be_bytes().to_vec()),
            1 => any::<u32>().prop_map(|v| v.to_be_bytes().to_vec()),
            1 => bytes(6),
        ]
        .boxed(),
        PING => prop_oneof![6 => vec(any::<u8>(), 8..=8), 1 => bytes(10)].boxed(),
        PRIORITY => prop_oneof![6 => vec(any::<u8>(), 5..=5), 1 => bytes(7)].boxed(),
        GOAWAY => bytes(12),
        DATA => prop_oneof![
            8 => bytes(64),
            1 => (0usize..20_000).prop_map(|n| vec![b'd'; n]),
        ]
        .boxed(),
        _ => bytes(24),
    }
}

fn frame_gen() -> impl Strategy<Value = Gen> {
    let ty = prop_oneof![
        10 => Just(HEADERS),
        8 => Just(DATA),
        4 => Just(WINDOW_UPDATE),
        1 => Just(CONTINUATION),
        2 => Just(SETTINGS),
        2 => Just(RST_STREAM),
        2 => Just(PING),
        2 => Just(PRIORITY),
        1 => Just(GOAWAY),
        1 => Just(PUSH_PROMISE),
        2 => 10u8..=255,
    ];
    let flags = prop_oneof![
        12 => select(vec![END_HEADERS, END_STREAM | END_HEADERS]),
        2 => select(vec![0, END_STREAM]),
        1 => any::<u8>(),
    ];
    (ty, flags).prop_flat_map(|(ty, flags)| {
        let id = match ty {
            // Frames of the connection: on stream 0, mostly.
            SETTINGS | PING | GOAWAY => prop_oneof![
                8 => Just(Id::Fixed(0)),
                1 => any::<u32>().prop_map(Id::Fixed),
            ]
            .boxed(),
            _ => prop_oneof![
                4 => Just(Id::New),
                6 => Just(Id::Latest),
                1 => (0u32..12).prop_map(Id::Fixed),
                1 => any::<u32>().prop_map(Id::Fixed),
            ]
            .boxed(),
        };
        (id, payload(ty)).prop_map(move |(id, payload)| Gen {
            ty,
            flags,
            id,
            payload,
        })
    })
}

/// A frame a well-behaved client might send: a request, some body, window,
/// PING, SETTINGS, PRIORITY or RST_STREAM on the streams it opened. Stream
/// errors still happen (DATA after END_STREAM, a body against its
/// `content-length`); connection errors seldom.
fn benign_gen() -> impl Strategy<Value = Gen> {
    let end = || select(vec![0, END_STREAM]);
    let gen = |ty: u8, flags: BoxedStrategy<u8>, id: Id, payload: BoxedStrategy<Vec<u8>>| {
        (flags, payload).prop_map(move |(flags, payload)| Gen {
            ty,
            flags,
            id,
            payload,
        })
    };
    prop_oneof![
        6 => gen(HEADERS, end().prop_map(|f| f | END_HEADERS).boxed(), Id::New, request_block().boxed()),
        6 => gen(DATA, end().boxed(), Id::Latest, vec(any::<u8>(), 0..3000).boxed()),
        3 => gen(WINDOW_UPDATE, Just(0).boxed(), Id::Latest,
            (1u32..100_000).prop_map(|v| v.to_be_bytes().to_vec()).boxed()),
        2 => gen(WINDOW_UPDATE, Just(0).boxed(), Id::Fixed(0),
            (1u32..100_000).prop_map(|v| v.to_be_bytes().to_vec()).boxed()),
        1 => gen(PING, Just(0).boxed(), Id::Fixed(0), vec(any::<u8>(), 8..=8).boxed()),
        1 => gen(SETTINGS, Just(0).boxed(), Id::Fixed(0), settings_payload().boxed()),
        1 => gen(PRIORITY, Just(0).boxed(), Id::Latest, vec(any::<u8>(), 5..=5).boxed()),
        1 => gen(RST_STREAM, Just(0).boxed(), Id::Latest, vec(any::<u8>(), 4..=4).boxed()),
        1 => gen(0x20, any::<u8>().boxed(), Id::Latest, vec(any::<u8>(), 0..20).boxed()),
    ]
}

#[derive(Clone, Debug)]
struct Case {
    /// The SETTINGS that follows the preface (usually well-formed).
    settings: Gen,
    frames: Vec<Gen>,
    /// Sizes of the pieces the bytes are written in.
    pieces: Vec<usize>,
    /// The client reads what the server sends.
    reads: bool,
}

fn case() -> impl Strategy<Value = Case> {
    let settings = prop_oneof![
        20 => settings_payload().prop_map(|payload| Gen {
            ty: SETTINGS,
            flags: 0,
            id: Id::Fixed(0),
            payload
        }),
        1 => frame_gen(),
    ];
    // Mostly a well-formed request first, and short sequences: a long one
    // nearly always holds a connection error, and what comes after is not
    // read.
    let first = proptest::option::weighted(
        0.8,
        (
            request_block(),
            select(vec![END_HEADERS, END_STREAM | END_HEADERS]),
        )
            .prop_map(|(payload, flags)| Gen {
                ty: HEADERS,
                flags,
                id: Id::New,
                payload,
            }),
    );
    let frames = (
        first,
        prop_oneof![
            3 => vec(benign_gen(), 0..40),
            2 => vec(frame_gen(), 0..8),
            1 => vec(frame_gen(), 8..40),
        ],
    )
        .prop_map(|(first, rest)| first.into_iter().chain(rest).collect());
    (
        settings,
        frames,
        vec(
            prop_oneof![1usize..16, 16usize..4096, 4096usize..40_000],
            1..8,
        ),
        prop_oneof![4 => Just(true), 1 => Just(false)],
    )
        .prop_map(|(settings, frames, pieces, reads)| Case {
            settings,
            frames,
            pieces,
            reads,
        })
}

/// The bounds a connection's state keeps after every poll, however the
/// client behaves: what it buffers, the streams it keeps, and the request
/// body it accepts (no more than the windows it gave).
fn check_bounds(st: &State) {
    assert!(
        st.rbuf.capacity() <= 128 * 1024,
        "read buffer of {}",
        st.rbuf.capacity()
    );
    assert!(
        st.wbuf.len() <= WRITE_HIGH + 256 * 1024,
        "{} bytes of output held",
        st.wbuf.len()
    );
    assert!(st.streams.len() <= MAX_STREAMS);
    assert!(st.sending.len() <= 2 * MAX_STREAMS);
    if let Some(c) = &st.continuation {
        assert!(c.held() <= MAX_HEADER_BLOCK);
    }
    assert!(
        (0..=CONN_WINDOW as i64).contains(&st.recv_window),
        "connection receive window {}",
        st.recv_window
    );
    for s in st.streams.values() {
        assert!(
            (0..=STREAM_WINDOW as i64).contains(&s.recv_window),
            "stream receive window {}",
            s.recv_window
        );
    }
}

fn bytes_of(case: &Case) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.extend_from_slice(PREFACE);
    let mut latest: u32 = 1;
    for f in std::iter::once(&case.settings).chain(&case.frames) {
        let id = match f.id {
            Id::New if f.ty == HEADERS => {
                latest += 2;
                latest - 2
            }
            Id::New | Id::Latest => latest.saturating_sub(2).max(1),
            Id::Fixed(id) => id,
        };
        frame(&mut out, f.ty, f.flags, id, &f.payload);
    }
    out.to_vec()
}

async fn run_case(handler: &Arc<Handler>, case: &Case) {
    let (client, server_io) = tokio::io::duplex(16 * 1024);
    let mut conn = Conn {
        io: server_io,
        st: State::new(&[], peer(), handler.clone()),
    };
    let server = poll_fn(|cx| {
        let r = conn.poll(cx);
        check_bounds(&conn.st);
        r
    });
    let (mut rd, mut wr) = tokio::io::split(client);
    let bytes = bytes_of(case);
    let reads = case.reads;
    let client = async move {
        let reading = async {
            if reads {
                let mut sink = Vec::new();
                let _ = rd.read_to_end(&mut sink).await;
            }
        };
        let writing = async {
            let mut rest = &bytes[..];
            for &n in case.pieces.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (piece, tail) = rest.split_at(n.min(rest.len()));
                rest = tail;
                // A client that does not read may find the server not
                // reading either: it gives up after a while (paused time).
                let wrote = tokio::time::timeout(Duration::from_secs(5), wr.write_all(piece)).await;
                if !matches!(wrote, Ok(Ok(()))) {
                    return;
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), wr.shutdown()).await;
        };
        tokio::join!(reading, writing);
        drop((rd, wr));
    };
    // The client writes, half-closes, reads or not, and goes away; the
    // connection must end.
    let ended = tokio::time::timeout(Duration::from_secs(600), async {
        tokio::join!(server, client);
    })
    .await;
    assert!(
        ended.is_ok(),
        "the connection did not end once the client was gone"
    );
}

/// Cases: `PROPTEST_CASES`, or 64.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64)
}

#[test]
fn any_frames_in_any_pieces_never_panic_and_keep_the_connection_bounded() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let handler = rt.block_on(async { super::test_handler() });
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    };
    let result = TestRunner::new(config).run(&case(), |case| {
        rt.block_on(run_case(&handler, &case));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
