//! Frames (RFC 9113, 4 and 6): types, flags, settings, error codes, and the
//! nine-byte frame head, read and written.

use bytes::{BufMut, BytesMut};

/// The client connection preface (RFC 9113, 3.4).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The length of a frame head.
pub(super) const HEAD_LEN: usize = 9;

// Frame types.
pub(super) const DATA: u8 = 0x0;
pub(super) const HEADERS: u8 = 0x1;
pub(super) const PRIORITY: u8 = 0x2;
pub(super) const RST_STREAM: u8 = 0x3;
pub(super) const SETTINGS: u8 = 0x4;
pub(super) const PUSH_PROMISE: u8 = 0x5;
pub(super) const PING: u8 = 0x6;
pub(super) const GOAWAY: u8 = 0x7;
pub(super) const WINDOW_UPDATE: u8 = 0x8;
pub(super) const CONTINUATION: u8 = 0x9;

// Flags.
pub(super) const END_STREAM: u8 = 0x1;
pub(super) const ACK: u8 = 0x1;
pub(super) const END_HEADERS: u8 = 0x4;
pub(super) const PADDED: u8 = 0x8;
pub(super) const PRIORITY_FLAG: u8 = 0x20;

// Settings.
pub(super) const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub(super) const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub(super) const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub(super) const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub(super) const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
pub(super) const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// The largest frame payload this server accepts (the protocol's default,
/// which it does not raise).
pub(super) const MAX_FRAME: usize = 16_384;

/// Error codes (RFC 9113, 7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Code {
    NoError = 0x0,
    Protocol = 0x1,
    Internal = 0x2,
    FlowControl = 0x3,
    StreamClosed = 0x5,
    FrameSize = 0x6,
    RefusedStream = 0x7,
    Cancel = 0x8,
    Compression = 0x9,
    EnhanceYourCalm = 0xb,
}

/// A connection error: GOAWAY with the code and the reason as debug data, then close.
#[derive(Debug)]
pub(super) struct ConnError(pub(super) Code, pub(super) &'static str);

/// A frame head (RFC 9113, 4.1).
#[derive(Clone, Copy, Debug)]
pub(super) struct Head {
    pub(super) len: usize,
    pub(super) ty: u8,
    pub(super) flags: u8,
    /// The stream id, its reserved bit cleared.
    pub(super) id: u32,
}

impl Head {
    /// Reads the head at the start of `buf`, which holds at least [`HEAD_LEN`] bytes.
    #[inline]
    pub(super) fn read(buf: &[u8; HEAD_LEN]) -> Self {
        Self {
            len: (buf[0] as usize) << 16 | (buf[1] as usize) << 8 | buf[2] as usize,
            ty: buf[3],
            flags: buf[4],
            id: u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff,
        }
    }
}

/// The part of a payload that is not padding (PADDED flag).
pub(super) fn unpadded(flags: u8, payload: &[u8]) -> Result<std::ops::Range<usize>, ConnError> {
    if flags & PADDED == 0 {
        return Ok(0..payload.len());
    }
    let Some(&pad) = payload.first() else {
        return Err(ConnError(
            Code::FrameSize,
            "padded frame without its pad length",
        ));
    };
    let pad = pad as usize;
    if pad + 1 > payload.len() {
        return Err(ConnError(Code::Protocol, "padding longer than the frame"));
    }
    Ok(1..payload.len() - pad)
}

/// A 31-bit value at the start of a payload of at least 4 bytes (a stream
/// dependency, a window increment), its reserved bit cleared.
pub(super) fn u31(payload: &[u8]) -> u32 {
    u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff
}

pub(super) fn frame_head(out: &mut BytesMut, len: usize, ty: u8, flags: u8, id: u32) {
    out.put_uint(len as u64, 3);
    out.put_u8(ty);
    out.put_u8(flags);
    out.put_u32(id);
}

pub(super) fn rst_stream(out: &mut BytesMut, id: u32, code: Code) {
    frame_head(out, 4, RST_STREAM, 0, id);
    out.put_u32(code as u32);
}

pub(super) fn window_update(out: &mut BytesMut, id: u32, inc: u32) {
    frame_head(out, 4, WINDOW_UPDATE, 0, id);
    out.put_u32(inc);
}
