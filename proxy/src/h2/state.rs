//! A connection's state, apart from its I/O: what was read is handled here
//! frame by frame, and what is to be sent is written to `wbuf`.
//!
//! The frame handlers live with their concern: stream states in
//! [`super::streams`], windows in [`super::flow`], responses in
//! [`super::send`]; this file holds the state, the frame loop, and the
//! connection-level frames (SETTINGS, PING, GOAWAY).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use futures_util::future::Abortable;
use futures_util::stream::FuturesUnordered;

use super::body::ConnSignal;
use super::frame::*;
use super::handoff::{AnswerFuture, Handler};
use super::hpack;
use super::limits::{
    CONN_WINDOW, DEFAULT_WINDOW, KEEPALIVE, KEEPALIVE_TIMEOUT, MAX_HEADER_LIST, MAX_STREAMS,
    MAX_WINDOW, RECENT_RESETS, RESET_ALLOWANCE, STREAM_WINDOW,
};
use super::stream::{Continuation, Stream};
use crate::h1::bufs;
use crate::service::Peer;

pub(super) struct State {
    pub(super) peer: Peer,
    pub(super) handler: Arc<Handler>,
    pub(super) rbuf: BytesMut,
    pub(super) wbuf: BytesMut,
    /// The preface was received.
    preface: bool,
    /// The client's first SETTINGS was received.
    settings: bool,
    pub(super) decoder: hpack::Decoder,
    /// A header block waiting for CONTINUATION frames.
    pub(super) continuation: Option<Continuation>,
    pub(super) streams: HashMap<u32, Stream, foldhash::fast::RandomState>,
    pub(super) replies: FuturesUnordered<Abortable<AnswerFuture>>,
    /// Streams whose response body is being sent.
    pub(super) sending: Vec<u32>,
    /// The highest stream the client opened.
    pub(super) last_id: u32,
    pub(super) recent_resets: [u32; RECENT_RESETS],
    pub(super) recent_at: usize,
    pub(super) signal: Arc<ConnSignal>,
    /// How much the client may still send on the connection, and what was
    /// read that was not credited back yet.
    pub(super) recv_window: i64,
    pub(super) recv_credit: u32,
    /// Some credit changed since WINDOW_UPDATEs were last considered.
    pub(super) credit_dirty: bool,
    /// How much this side may still send on the connection.
    pub(super) send_window: i64,
    /// The client's SETTINGS_INITIAL_WINDOW_SIZE and SETTINGS_MAX_FRAME_SIZE.
    pub(super) peer_window: i64,
    pub(super) peer_max_frame: usize,
    /// The client changed its decoder's table size: the next header block
    /// starts with a size update.
    pub(super) table_update: bool,
    /// GOAWAY was sent: no new streams are served.
    pub(super) going_away: bool,
    /// The client sent GOAWAY: it is closing the connection.
    pub(super) peer_going_away: bool,
    /// A connection error was sent: write what is buffered, then close.
    pub(super) failed: bool,
    /// The client closed its side of the TCP connection.
    pub(super) read_closed: bool,
    /// Streams reset by the client before their response, and streams completed.
    pub(super) resets: u64,
    pub(super) completed: u64,
    /// Frames since the last keep-alive check, and a PING is unanswered.
    frames_seen: bool,
    ping_out: bool,
    /// Scratch space for one header block.
    pub(super) block: BytesMut,
}

impl State {
    pub(super) fn new(prefix: &[u8], peer: Peer, handler: Arc<Handler>) -> Self {
        let mut rbuf = bufs::take();
        rbuf.extend_from_slice(prefix);
        let mut wbuf = bufs::take();
        // This server's SETTINGS, then the connection window raised to CONN_WINDOW.
        let settings = [
            (SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS as u32),
            (SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW),
            (SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST as u32),
        ];
        frame_head(&mut wbuf, settings.len() * 6, SETTINGS, 0, 0);
        for (id, value) in settings {
            wbuf.put_u16(id);
            wbuf.put_u32(value);
        }
        window_update(&mut wbuf, 0, CONN_WINDOW - DEFAULT_WINDOW as u32);
        Self {
            peer,
            handler,
            rbuf,
            wbuf,
            preface: false,
            settings: false,
            decoder: hpack::Decoder::default(),
            continuation: None,
            streams: HashMap::default(),
            replies: FuturesUnordered::new(),
            sending: Vec::new(),
            last_id: 0,
            recent_resets: [0; RECENT_RESETS],
            recent_at: 0,
            signal: Arc::default(),
            recv_window: CONN_WINDOW as i64,
            recv_credit: 0,
            credit_dirty: false,
            send_window: DEFAULT_WINDOW,
            peer_window: DEFAULT_WINDOW,
            peer_max_frame: MAX_FRAME,
            table_update: false,
            going_away: false,
            peer_going_away: false,
            failed: false,
            read_closed: false,
            resets: 0,
            completed: 0,
            frames_seen: false,
            ping_out: false,
            block: BytesMut::new(),
        }
    }

    /// The connection has nothing more to do once what is buffered is written.
    pub(super) fn finished(&self) -> bool {
        self.failed
            || (self.streams.is_empty()
                && (self.going_away || self.peer_going_away || self.read_closed))
    }

    /// The client closed its side of the connection. Nothing more can
    /// arrive: request bodies still arriving end with an error, and responses
    /// waiting for window end too, since no WINDOW_UPDATE can come.
    pub(super) fn on_read_closed(&mut self) {
        self.read_closed = true;
        self.end_remote_bodies();
        let mut i = 0;
        while i < self.sending.len() {
            let id = self.sending[i];
            if self.stalled(id) {
                self.reset(id, Code::Cancel);
                self.sending.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    /// The client can send nothing more: bodies still arriving end with an error.
    fn end_remote_bodies(&mut self) {
        for s in self.streams.values_mut() {
            if !s.remote_done {
                s.remote_done = true;
                if let Some(inbox) = &s.inbox {
                    self.recv_credit += inbox.close() as u32;
                }
            }
        }
    }

    /// Stops everything after a connection error: streams end, nothing more is read.
    pub(super) fn fail(&mut self) {
        self.failed = true;
        for (_, s) in self.streams.drain() {
            s.abort.abort();
            if let Some(inbox) = &s.inbox {
                inbox.close();
            }
        }
        self.sending.clear();
    }

    /// Sends GOAWAY: streams above the last one opened will not be served.
    pub(super) fn go_away(&mut self, code: Code, why: &str) {
        if self.going_away && code == Code::NoError {
            return;
        }
        self.going_away = true;
        frame_head(&mut self.wbuf, 8 + why.len(), GOAWAY, 0, 0);
        self.wbuf.put_u32(self.last_id);
        self.wbuf.put_u32(code as u32);
        self.wbuf.extend_from_slice(why.as_bytes());
    }

    /// A keep-alive tick: when the next is due, or `None` when the client is gone.
    pub(super) fn keepalive(&mut self) -> Option<Duration> {
        if std::mem::take(&mut self.frames_seen) {
            self.ping_out = false;
            return Some(KEEPALIVE);
        }
        if self.ping_out {
            return None;
        }
        self.ping_out = true;
        frame_head(&mut self.wbuf, 8, PING, 0, 0);
        self.wbuf.put_u64(0x616e_796d_6573_6821);
        Some(KEEPALIVE_TIMEOUT)
    }

    /// Handles the complete frames in the read buffer.
    pub(super) fn on_input(&mut self) -> Result<(), ConnError> {
        // Taken out while frames are handled, so handlers can borrow payloads from it.
        let mut rbuf = std::mem::take(&mut self.rbuf);
        let r = self.frames(&mut rbuf);
        self.rbuf = rbuf;
        r
    }

    fn frames(&mut self, rbuf: &mut BytesMut) -> Result<(), ConnError> {
        if !self.preface {
            let n = rbuf.len().min(PREFACE.len());
            if rbuf[..n] != PREFACE[..n] {
                return Err(ConnError(Code::Protocol, "invalid connection preface"));
            }
            if n < PREFACE.len() {
                return Ok(());
            }
            rbuf.advance(PREFACE.len());
            self.preface = true;
        }
        while let Some(head) = rbuf.first_chunk::<HEAD_LEN>() {
            if self.failed {
                break;
            }
            let Head { len, ty, flags, id } = Head::read(head);
            if len > MAX_FRAME {
                return Err(ConnError(
                    Code::FrameSize,
                    "frame larger than SETTINGS_MAX_FRAME_SIZE",
                ));
            }
            if rbuf.len() < HEAD_LEN + len {
                break;
            }
            self.frames_seen = true;
            if !self.settings && ty != SETTINGS {
                return Err(ConnError(
                    Code::Protocol,
                    "the first frame must be SETTINGS",
                ));
            }
            if let Some(c) = &self.continuation {
                if ty != CONTINUATION || id != c.id {
                    return Err(ConnError(Code::Protocol, "expected CONTINUATION"));
                }
            }
            let payload = &rbuf[HEAD_LEN..HEAD_LEN + len];
            match ty {
                DATA => self.on_data(id, flags, payload)?,
                HEADERS => self.on_headers(id, flags, payload)?,
                PRIORITY => self.on_priority(id, payload)?,
                RST_STREAM => self.on_reset(id, payload)?,
                SETTINGS => self.on_settings(id, flags, payload)?,
                PUSH_PROMISE => {
                    return Err(ConnError(Code::Protocol, "PUSH_PROMISE from a client"))
                }
                PING => self.on_ping(id, flags, payload)?,
                GOAWAY => self.on_goaway(id, payload)?,
                WINDOW_UPDATE => self.on_window_update(id, payload)?,
                CONTINUATION => self.on_continuation(id, flags, payload)?,
                // Unknown frame types are ignored (RFC 9113, 4.1).
                _ => {}
            }
            rbuf.advance(HEAD_LEN + len);
            if self.resets > RESET_ALLOWANCE && self.resets > self.completed {
                return Err(ConnError(Code::EnhanceYourCalm, "too many streams reset"));
            }
        }
        Ok(())
    }

    fn on_settings(&mut self, id: u32, flags: u8, payload: &[u8]) -> Result<(), ConnError> {
        if id != 0 {
            return Err(ConnError(Code::Protocol, "SETTINGS on a stream"));
        }
        if flags & ACK != 0 {
            if !payload.is_empty() {
                return Err(ConnError(Code::FrameSize, "SETTINGS ACK with a payload"));
            }
            if !self.settings {
                return Err(ConnError(
                    Code::Protocol,
                    "the first frame must be SETTINGS",
                ));
            }
            return Ok(());
        }
        if payload.len() % 6 != 0 {
            return Err(ConnError(
                Code::FrameSize,
                "SETTINGS not a multiple of 6 bytes",
            ));
        }
        self.settings = true;
        let mut window = None;
        for s in payload.chunks_exact(6) {
            let key = u16::from_be_bytes([s[0], s[1]]);
            let value = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
            match key {
                SETTINGS_HEADER_TABLE_SIZE => self.table_update = true,
                SETTINGS_ENABLE_PUSH if value > 1 => {
                    return Err(ConnError(Code::Protocol, "SETTINGS_ENABLE_PUSH above 1"))
                }
                SETTINGS_INITIAL_WINDOW_SIZE => {
                    if value as i64 > MAX_WINDOW {
                        return Err(ConnError(
                            Code::FlowControl,
                            "SETTINGS_INITIAL_WINDOW_SIZE too large",
                        ));
                    }
                    // Applied once per frame, whatever the frame repeats.
                    window = Some(value as i64);
                }
                SETTINGS_MAX_FRAME_SIZE => {
                    if !(16_384..=16_777_215).contains(&value) {
                        return Err(ConnError(
                            Code::Protocol,
                            "SETTINGS_MAX_FRAME_SIZE out of range",
                        ));
                    }
                    self.peer_max_frame = value as usize;
                }
                // Concurrent streams and header list size concern pushes and
                // what this side sends; unknown settings are ignored.
                _ => {}
            }
        }
        if let Some(value) = window {
            self.set_peer_window(value)?;
        }
        frame_head(&mut self.wbuf, 0, SETTINGS, ACK, 0);
        Ok(())
    }

    fn on_ping(&mut self, id: u32, flags: u8, payload: &[u8]) -> Result<(), ConnError> {
        if id != 0 {
            return Err(ConnError(Code::Protocol, "PING on a stream"));
        }
        if payload.len() != 8 {
            return Err(ConnError(Code::FrameSize, "PING not 8 bytes"));
        }
        if flags & ACK == 0 {
            frame_head(&mut self.wbuf, 8, PING, ACK, 0);
            self.wbuf.extend_from_slice(payload);
        }
        Ok(())
    }

    fn on_goaway(&mut self, id: u32, payload: &[u8]) -> Result<(), ConnError> {
        if id != 0 {
            return Err(ConnError(Code::Protocol, "GOAWAY on a stream"));
        }
        if payload.len() < 8 {
            return Err(ConnError(Code::FrameSize, "GOAWAY shorter than 8 bytes"));
        }
        // It concerns streams this side would open (none); the
        // connection closes once its streams are done.
        self.peer_going_away = true;
        Ok(())
    }
}

impl Drop for State {
    /// However the connection ends, request bodies still arriving end with
    /// an error, so whoever reads them stops waiting.
    fn drop(&mut self) {
        for s in self.streams.values() {
            if let Some(inbox) = &s.inbox {
                inbox.close();
            }
        }
    }
}
