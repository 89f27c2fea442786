//! Read buffers lent per exchange from a per-thread free list, so an idle
//! keep-alive connection holds no buffer at all.

use std::cell::RefCell;

use bytes::BytesMut;

/// Size of a fresh buffer; a head or a body piece is read into it.
pub(crate) const BUF_SIZE: usize = 8 * 1024;
/// Buffers kept per worker thread for reuse: enough for the exchanges one
/// thread has in flight at once (HTTP/2 connections run many each).
const KEEP: usize = 256;

thread_local! {
    static FREE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A buffer with at least [`BUF_SIZE`] bytes of room.
pub(crate) fn take() -> BytesMut {
    FREE.with_borrow_mut(|free| free.pop())
        .unwrap_or_else(|| BytesMut::with_capacity(BUF_SIZE))
}

/// Returns a buffer for reuse. One still shared with frozen slices (a head
/// whose fields are alive) or grown large is simply dropped.
pub(crate) fn give(mut buf: BytesMut) {
    buf.clear();
    if buf.capacity() > 8 * BUF_SIZE || !buf.try_reclaim(BUF_SIZE) {
        return;
    }
    FREE.with_borrow_mut(|free| {
        if free.len() < KEEP {
            free.push(buf);
        }
    });
}
