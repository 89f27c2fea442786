//! Stream states (RFC 9113, 5.1) and the frames that change them: HEADERS
//! and CONTINUATION open a stream or end its request with trailers, DATA
//! carries its body, RST_STREAM and PRIORITY. A stream is idle above
//! `last_id`; open or half-closed while it is in `streams`; closed otherwise.

use bytes::{Bytes, BytesMut};
use futures_util::future::{AbortHandle, Abortable};
use http::StatusCode;

use super::body::{Inbox, RecvBody};
use super::frame::*;
use super::handoff;
use super::limits::{MAX_HEADER_BLOCK, MAX_HEADER_LIST, MAX_STREAMS, RECENT_RESETS, STREAM_WINDOW};
use super::request::Fields;
use super::state::State;
use super::stream::{Continuation, Out, Stream};

impl State {
    pub(super) fn is_idle(&self, id: u32) -> bool {
        id > self.last_id
    }

    /// Closes a stream with RST_STREAM.
    pub(super) fn reset(&mut self, id: u32, code: Code) {
        self.count_reset(id);
        self.refuse(id, code);
        self.remove(id);
    }

    /// Counts a stream ended before its response began: its upstream request
    /// was started for nothing (rapid reset, and resets the client provokes).
    fn count_reset(&mut self, id: u32) {
        if self
            .streams
            .get(&id)
            .is_some_and(|s| matches!(s.out, Out::Waiting))
        {
            self.resets += 1;
        }
    }

    /// Sends RST_STREAM, and remembers the stream so that frames the client
    /// sent before it saw the reset are ignored.
    pub(super) fn refuse(&mut self, id: u32, code: Code) {
        rst_stream(&mut self.wbuf, id, code);
        self.recent_resets[self.recent_at] = id;
        self.recent_at = (self.recent_at + 1) % RECENT_RESETS;
    }

    /// Forgets a stream: its request stops, its queued request body is credited back.
    pub(super) fn remove(&mut self, id: u32) {
        let Some(s) = self.streams.remove(&id) else {
            return;
        };
        s.abort.abort();
        if let Some(inbox) = &s.inbox {
            self.recv_credit += inbox.close() as u32;
            self.credit_dirty = true;
        }
        // Its id may stay in `sending` a while: pumping a stream that is gone ends there.
    }

    fn recently_reset(&self, id: u32) -> bool {
        self.recent_resets.contains(&id)
    }

    pub(super) fn on_data(&mut self, id: u32, flags: u8, payload: &[u8]) -> Result<(), ConnError> {
        if id == 0 {
            return Err(ConnError(Code::Protocol, "DATA on stream 0"));
        }
        let len = payload.len() as i64;
        if len > self.recv_window {
            return Err(ConnError(
                Code::FlowControl,
                "DATA beyond the connection window",
            ));
        }
        self.recv_window -= len;
        let data = &payload[unpadded(flags, payload)?];
        let pad = len as u32 - data.len() as u32;
        let end = flags & END_STREAM != 0;
        let Some(s) = self.streams.get_mut(&id) else {
            self.recv_credit += len as u32;
            if self.is_idle(id) {
                return Err(ConnError(Code::Protocol, "DATA on an idle stream"));
            }
            if !self.recently_reset(id) {
                rst_stream(&mut self.wbuf, id, Code::StreamClosed);
            }
            return Ok(());
        };
        if s.remote_done {
            self.recv_credit += len as u32;
            self.reset(id, Code::StreamClosed);
            return Ok(());
        }
        if len > s.recv_window {
            self.recv_credit += len as u32;
            self.reset(id, Code::FlowControl);
            return Ok(());
        }
        s.recv_window -= len;
        s.received += data.len() as u64;
        let wrong_length = s
            .expect_len
            .is_some_and(|n| s.received > n || (end && s.received != n));
        if wrong_length {
            self.recv_credit += len as u32;
            self.reset(id, Code::Protocol);
            return Ok(());
        }
        // Padding is credited back at once; data once the reader took it.
        self.recv_credit += pad;
        s.recv_credit += pad;
        let data_len = data.len() as u32;
        // Copied out of the read buffer: a slice would keep the whole buffer
        // alive, and a client sending tiny frames could pin far more memory
        // than its window.
        let delivered = match &s.inbox {
            Some(inbox) => inbox.push(Bytes::copy_from_slice(data), end),
            None => false,
        };
        if !delivered {
            self.recv_credit += data_len;
            s.recv_credit += data_len;
        }
        if end {
            // The inbox stays until the stream closes: what the reader takes
            // is still credited to the connection.
            s.remote_done = true;
        }
        self.credit_dirty = true;
        Ok(())
    }

    pub(super) fn on_headers(
        &mut self,
        id: u32,
        flags: u8,
        payload: &[u8],
    ) -> Result<(), ConnError> {
        if id == 0 || id % 2 == 0 {
            return Err(ConnError(Code::Protocol, "HEADERS on an invalid stream id"));
        }
        let mut frag = &payload[unpadded(flags, payload)?];
        let mut reject = None;
        if flags & PRIORITY_FLAG != 0 {
            let Some((prio, rest)) = frag.split_first_chunk::<5>() else {
                return Err(ConnError(
                    Code::FrameSize,
                    "HEADERS too short for its priority",
                ));
            };
            if u31(prio) == id {
                // Still decoded, so the table stays in step; the stream is reset.
                reject = Some(Code::Protocol);
            }
            frag = rest;
        }
        let end_stream = flags & END_STREAM != 0;
        if flags & END_HEADERS == 0 {
            if frag.len() > MAX_HEADER_BLOCK {
                return Err(ConnError(Code::EnhanceYourCalm, "header block too large"));
            }
            self.continuation = Some(Continuation {
                id,
                end_stream,
                reject,
                block: BytesMut::from(frag),
            });
            return Ok(());
        }
        self.decode_block(id, end_stream, frag, reject)
    }

    pub(super) fn on_continuation(
        &mut self,
        id: u32,
        flags: u8,
        payload: &[u8],
    ) -> Result<(), ConnError> {
        let Some(mut c) = self.continuation.take() else {
            return Err(ConnError(Code::Protocol, "CONTINUATION without HEADERS"));
        };
        if c.block.len() + payload.len() > MAX_HEADER_BLOCK {
            return Err(ConnError(Code::EnhanceYourCalm, "header block too large"));
        }
        c.block.extend_from_slice(payload);
        if flags & END_HEADERS == 0 {
            self.continuation = Some(c);
            return Ok(());
        }
        self.decode_block(id, c.end_stream, &c.block, c.reject)
    }

    /// Decodes a complete header block: a new request, or a request's trailers.
    /// `reject` resets the stream instead of serving it.
    fn decode_block(
        &mut self,
        id: u32,
        end_stream: bool,
        block: &[u8],
        reject: Option<Code>,
    ) -> Result<(), ConnError> {
        let mut fields = Fields::default();
        self.decoder
            .decode(block, |f| fields.add(f))
            .map_err(|e| ConnError(Code::Compression, e.0))?;
        if !self.is_idle(id) {
            return self.trailers(id, end_stream, fields);
        }
        self.last_id = id;
        if self.going_away {
            // Sent after our GOAWAY: not served, and the client knows it.
            return Ok(());
        }
        if let Some(code) = reject {
            self.refuse(id, code);
            return Ok(());
        }
        if self.streams.len() >= MAX_STREAMS {
            self.refuse(id, Code::RefusedStream);
            return Ok(());
        }
        if fields.size > MAX_HEADER_LIST {
            self.local_reply(id, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, end_stream);
            return Ok(());
        }
        let (req, expect_len) = match fields.request() {
            Ok(r) => r,
            Err(why) => {
                tracing::debug!(peer = %self.peer, stream = id, why, "malformed HTTP/2 request");
                self.refuse(id, Code::Protocol);
                return Ok(());
            }
        };
        if end_stream && expect_len.is_some_and(|n| n != 0) {
            self.refuse(id, Code::Protocol);
            return Ok(());
        }
        let inbox = (!end_stream).then(|| Inbox::new(self.signal.clone()));
        let body = inbox
            .as_ref()
            .map(|inbox| RecvBody::new(inbox.clone(), expect_len));
        let answer = handoff::start(&self.handler, id, req, self.peer.clone(), body);
        let (abort, registration) = AbortHandle::new_pair();
        self.replies.push(Abortable::new(answer, registration));
        self.streams.insert(
            id,
            Stream {
                inbox,
                remote_done: end_stream,
                recv_window: STREAM_WINDOW as i64,
                recv_credit: 0,
                expect_len,
                received: 0,
                send_window: self.peer_window,
                out: Out::Waiting,
                abort,
            },
        );
        Ok(())
    }

    /// A header block on a stream that is not idle: the trailers of an open
    /// stream; anything else on a used id is an error. Frames on streams this
    /// side reset lately are ignored (the client may not have seen the reset).
    fn trailers(&mut self, id: u32, end_stream: bool, fields: Fields) -> Result<(), ConnError> {
        let Some(s) = self.streams.get_mut(&id) else {
            if self.recently_reset(id) {
                return Ok(());
            }
            // Not trailers: an attempt to open a stream whose id is not
            // above every id the client used (RFC 9113, 5.1.1).
            return Err(ConnError(
                Code::Protocol,
                "HEADERS on a stream id already used",
            ));
        };
        if s.remote_done {
            self.reset(id, Code::StreamClosed);
            return Ok(());
        }
        if !end_stream
            || fields.pseudo_seen
            || fields.malformed.is_some()
            || fields.size > MAX_HEADER_LIST
        {
            self.reset(id, Code::Protocol);
            return Ok(());
        }
        s.remote_done = true;
        if s.expect_len.is_some_and(|n| n != s.received) {
            self.reset(id, Code::Protocol);
            return Ok(());
        }
        if let Some(inbox) = &s.inbox {
            inbox.trailers(fields.headers);
        }
        Ok(())
    }

    pub(super) fn on_priority(&mut self, id: u32, payload: &[u8]) -> Result<(), ConnError> {
        if id == 0 {
            return Err(ConnError(Code::Protocol, "PRIORITY on stream 0"));
        }
        if payload.len() != 5 {
            if self.is_idle(id) {
                // No RST_STREAM may name an idle stream.
                return Err(ConnError(Code::FrameSize, "PRIORITY not 5 bytes"));
            }
            self.reset(id, Code::FrameSize);
            return Ok(());
        }
        if u31(payload) == id {
            if self.is_idle(id) {
                return Err(ConnError(Code::Protocol, "PRIORITY depending on itself"));
            }
            self.reset(id, Code::Protocol);
        }
        // Priorities are otherwise ignored (RFC 9113 deprecates them).
        Ok(())
    }

    pub(super) fn on_reset(&mut self, id: u32, payload: &[u8]) -> Result<(), ConnError> {
        if payload.len() != 4 {
            return Err(ConnError(Code::FrameSize, "RST_STREAM not 4 bytes"));
        }
        if id == 0 || self.is_idle(id) {
            return Err(ConnError(
                Code::Protocol,
                "RST_STREAM on stream 0 or an idle stream",
            ));
        }
        self.count_reset(id);
        self.remove(id);
        Ok(())
    }
}
