//! Flow control (RFC 9113, 5.2 and 6.9), both ways.
//!
//! Receiving: DATA takes from the connection's and the stream's receive
//! windows; what the request body's reader consumes is credited back, and
//! WINDOW_UPDATE goes out once half a window was consumed. Sending: response
//! DATA takes from the client's windows, which its WINDOW_UPDATE frames and
//! SETTINGS_INITIAL_WINDOW_SIZE change.

use super::frame::{u31, window_update, Code, ConnError};
use super::limits::{CONN_WINDOW, MAX_WINDOW, STREAM_WINDOW};
use super::state::State;

impl State {
    pub(super) fn on_window_update(&mut self, id: u32, payload: &[u8]) -> Result<(), ConnError> {
        if payload.len() != 4 {
            return Err(ConnError(Code::FrameSize, "WINDOW_UPDATE not 4 bytes"));
        }
        let inc = u31(payload) as i64;
        if id == 0 {
            if inc == 0 {
                return Err(ConnError(Code::Protocol, "WINDOW_UPDATE of 0"));
            }
            self.send_window += inc;
            if self.send_window > MAX_WINDOW {
                return Err(ConnError(
                    Code::FlowControl,
                    "connection window above 2^31-1",
                ));
            }
            return Ok(());
        }
        if self.is_idle(id) {
            return Err(ConnError(Code::Protocol, "WINDOW_UPDATE on an idle stream"));
        }
        let Some(s) = self.streams.get_mut(&id) else {
            return Ok(());
        };
        if inc == 0 {
            self.reset(id, Code::Protocol);
            return Ok(());
        }
        s.send_window += inc;
        if s.send_window > MAX_WINDOW {
            self.reset(id, Code::FlowControl);
        }
        Ok(())
    }

    /// The client's SETTINGS_INITIAL_WINDOW_SIZE changed: every stream's
    /// send window moves by the difference.
    pub(super) fn set_peer_window(&mut self, value: i64) -> Result<(), ConnError> {
        let delta = value - self.peer_window;
        self.peer_window = value;
        for s in self.streams.values_mut() {
            s.send_window += delta;
            if s.send_window > MAX_WINDOW {
                return Err(ConnError(Code::FlowControl, "a stream window above 2^31-1"));
            }
        }
        Ok(())
    }

    /// Takes what readers consumed of request bodies, for WINDOW_UPDATE.
    pub(super) fn credit_bodies(&mut self) {
        for s in self.streams.values_mut() {
            let Some(inbox) = &s.inbox else { continue };
            let (n, gone) = inbox.credit();
            s.recv_credit += n as u32;
            self.recv_credit += n as u32;
            if gone {
                s.inbox = None;
            }
        }
        self.credit_dirty = true;
    }

    /// Sends WINDOW_UPDATE where half a window was consumed.
    pub(super) fn send_credit(&mut self) {
        if std::mem::take(&mut self.credit_dirty) {
            for (&id, s) in self.streams.iter_mut() {
                let due = s.recv_credit > 0
                    && s.recv_credit as i64 >= s.recv_window.min(STREAM_WINDOW as i64 / 2);
                if due && !s.remote_done {
                    window_update(&mut self.wbuf, id, s.recv_credit);
                    s.recv_window += s.recv_credit as i64;
                    s.recv_credit = 0;
                }
            }
        }
        // Half a window consumed, or the window ran low: slow readers on
        // some streams must not hold the whole connection's window.
        if self.recv_credit > 0
            && self.recv_credit as i64 >= self.recv_window.min(CONN_WINDOW as i64 / 2)
        {
            window_update(&mut self.wbuf, 0, self.recv_credit);
            self.recv_window += self.recv_credit as i64;
            self.recv_credit = 0;
        }
    }
}
