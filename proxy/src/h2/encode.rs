//! Response heads and trailers as header blocks, and header blocks as frames.

use bytes::BytesMut;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use super::frame::{frame_head, CONTINUATION, END_HEADERS, END_STREAM, HEADERS};
use super::hpack;
use crate::h1::codec::{self, Framing, ResponseHead};
use crate::hop::is_connection_specific;
use anymesh_core::routes::HeaderOps;

/// Writes a header block as HEADERS, plus CONTINUATION frames when it is
/// larger than the client's frame size.
pub(super) fn write_block(
    out: &mut BytesMut,
    id: u32,
    block: &[u8],
    end_stream: bool,
    max_frame: usize,
) {
    let mut chunks = block.chunks(max_frame).peekable();
    let first = chunks.next().unwrap_or(&[]);
    let end_flag = if end_stream { END_STREAM } else { 0 };
    let headers_end = if chunks.peek().is_none() {
        END_HEADERS
    } else {
        0
    };
    frame_head(out, first.len(), HEADERS, end_flag | headers_end, id);
    out.extend_from_slice(first);
    while let Some(c) = chunks.next() {
        let flag = if chunks.peek().is_none() {
            END_HEADERS
        } else {
            0
        };
        frame_head(out, c.len(), CONTINUATION, flag, id);
        out.extend_from_slice(c);
    }
}

/// Encodes the head of an HTTP/1.1 upstream's response for an HTTP/2
/// client, from the received bytes: the fields the client gets
/// ([`codec::proxied_fields`]), names lowercased, and the body's length.
pub(crate) fn encode_proxied_head(
    head: &ResponseHead,
    ops: &[&HeaderOps],
    extra: Option<(&HeaderName, &HeaderValue)>,
) -> BytesMut {
    let mut block = BytesMut::with_capacity(256);
    hpack::encode_status(&mut block, head.status);
    codec::proxied_fields(head, ops, extra, |name, value| {
        hpack::encode_received_field(&mut block, name, value);
    });
    if let Framing::Length(n) = head.framing {
        let mut digits = [0u8; 20];
        hpack::encode_field(&mut block, b"content-length", decimal(n, &mut digits));
    }
    block
}

/// `n` in decimal, written at the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Encodes response fields or trailers.
pub(super) fn encode_fields(block: &mut BytesMut, fields: &HeaderMap) {
    for (name, value) in fields {
        if is_connection_specific(name.as_str().as_bytes()) {
            continue;
        }
        hpack::encode_field(block, name.as_str().as_bytes(), value.as_bytes());
    }
}
