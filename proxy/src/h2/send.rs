//! Responses out: a stream's answer becomes its head, then its body goes out
//! as DATA frames as far as the client's windows allow, then trailers.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BufMut;
use http::StatusCode;
use http_body::Body as _;

use super::encode::{encode_fields, write_block};
use super::frame::{frame_head, Code, DATA, END_STREAM};
use super::handoff::{self, Answer};
use super::hpack;
use super::limits::WRITE_HIGH;
use super::state::State;
use super::stream::Out;

/// What one poll of a stream's response body did.
enum Pump {
    /// The stream's response is complete (or the stream is gone).
    Done,
    /// Wrote something; the body waits for more data or window.
    Wrote,
    Idle,
}

impl State {
    /// Starts a header block; the first after the client changed its table
    /// size says the table is empty (size 0: this encoder keeps none).
    fn start_block(&mut self) {
        self.block.clear();
        if std::mem::take(&mut self.table_update) {
            self.block.put_u8(0x20);
        }
    }

    /// Answers a request this connection refuses, without serving it.
    pub(super) fn local_reply(&mut self, id: u32, status: StatusCode, end_stream: bool) {
        self.start_block();
        hpack::encode_status(&mut self.block, status);
        write_block(&mut self.wbuf, id, &self.block, true, self.peer_max_frame);
        if !end_stream {
            // The body is not wanted.
            self.refuse(id, Code::NoError);
        }
    }

    /// A stream's answer is ready: its head goes out, and as much of its body as may.
    pub(super) fn respond(&mut self, id: u32, answer: Answer, cx: &mut Context<'_>) {
        if !self.streams.contains_key(&id) {
            return;
        }
        self.start_block();
        let body = handoff::head(answer, &mut self.block);
        let end = body.is_end_stream();
        write_block(&mut self.wbuf, id, &self.block, end, self.peer_max_frame);
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if end {
            self.completed += 1;
            self.local_done(id);
            return;
        }
        s.out = Out::Body {
            body,
            pending: None,
        };
        self.sending.push(id);
        if let Pump::Done = self.pump(id, cx) {
            self.sending.pop();
        }
    }

    /// This side ended the stream: it closes, unless the client is still
    /// sending a body nobody needs now, which RST_STREAM (NO_ERROR) stops.
    fn local_done(&mut self, id: u32) {
        let remote_done = self.streams.get(&id).is_none_or(|s| s.remote_done);
        if !remote_done {
            self.refuse(id, Code::NoError);
        }
        self.remove(id);
    }

    /// Stream `id` has response data that the windows do not let out.
    pub(super) fn stalled(&self, id: u32) -> bool {
        self.streams.get(&id).is_some_and(|s| match &s.out {
            Out::Body {
                pending: Some(_), ..
            } => s.send_window.min(self.send_window) <= 0,
            _ => false,
        })
    }

    /// Polls the bodies being sent.
    pub(super) fn poll_bodies(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        let mut i = 0;
        while i < self.sending.len() {
            // Without connection window a body can still end or send
            // trailers, and streams that are gone leave the list.
            if self.wbuf.len() >= WRITE_HIGH {
                break;
            }
            let id = self.sending[i];
            match self.pump(id, cx) {
                Pump::Done => {
                    self.sending.swap_remove(i);
                    progress = true;
                }
                Pump::Wrote => {
                    progress = true;
                    i += 1;
                }
                Pump::Idle => i += 1,
            }
        }
        progress
    }

    /// Sends what one stream's body has, as far as the windows allow.
    fn pump(&mut self, id: u32, cx: &mut Context<'_>) -> Pump {
        let mut wrote = false;
        loop {
            let Some(s) = self.streams.get_mut(&id) else {
                return Pump::Done;
            };
            let Out::Body { body, pending } = &mut s.out else {
                return Pump::Done;
            };
            if let Some(mut data) = pending.take() {
                let room = s
                    .send_window
                    .min(self.send_window)
                    .min(self.peer_max_frame as i64);
                if room <= 0 {
                    *pending = Some(data);
                    if self.read_closed {
                        // Stalled for good: the client can send no WINDOW_UPDATE.
                        self.reset(id, Code::Cancel);
                        return Pump::Done;
                    }
                    return if wrote { Pump::Wrote } else { Pump::Idle };
                }
                let n = (room as usize).min(data.len());
                let chunk = data.split_to(n);
                let last = data.is_empty() && body.is_end_stream();
                frame_head(
                    &mut self.wbuf,
                    n,
                    DATA,
                    if last { END_STREAM } else { 0 },
                    id,
                );
                self.wbuf.extend_from_slice(&chunk);
                s.send_window -= n as i64;
                self.send_window -= n as i64;
                wrote = true;
                if last {
                    self.completed += 1;
                    self.local_done(id);
                    return Pump::Done;
                }
                if !data.is_empty() {
                    *pending = Some(data);
                    continue;
                }
            }
            if self.wbuf.len() >= WRITE_HIGH {
                return Pump::Wrote;
            }
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending => return if wrote { Pump::Wrote } else { Pump::Idle },
                Poll::Ready(None) => {
                    frame_head(&mut self.wbuf, 0, DATA, END_STREAM, id);
                    self.completed += 1;
                    self.local_done(id);
                    return Pump::Done;
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if !data.is_empty() {
                            *pending = Some(data);
                        }
                    }
                    Err(frame) => {
                        let fields = frame.into_trailers().unwrap_or_default();
                        self.start_block();
                        encode_fields(&mut self.block, &fields);
                        write_block(&mut self.wbuf, id, &self.block, true, self.peer_max_frame);
                        self.completed += 1;
                        self.local_done(id);
                        return Pump::Done;
                    }
                },
                Poll::Ready(Some(Err(e))) => {
                    tracing::debug!(peer = %self.peer, stream = id, error = %e, "response body failed");
                    self.reset(id, Code::Internal);
                    return Pump::Done;
                }
            }
        }
    }
}
