//! Connection-pool limits (circuit breakers) of one cluster in this proxy,
//! with Envoy's semantics as Istio configures them (DestinationRule
//! `connectionPool`; unset means unlimited):
//!
//! - HTTP/1.1 upstreams: `tcp.maxConnections` bounds connections, so
//!   requests in flight (one per connection). A request finding them all
//!   busy waits, first come first served, in a queue of at most
//!   `http.http1MaxPendingRequests`; beyond it, it overflows.
//! - `http.http2MaxRequests` bounds requests in flight (waiting ones
//!   included) for either protocol; beyond it a request overflows at once.
//!   For HTTP/2 upstreams it is the only bound on requests (their streams
//!   share connections).
//! - `http.maxRetries` bounds retries in flight.
//!
//! An overflow is never queued or retried: the caller answers 503 with
//! `x-envoy-overloaded` and the [`Overflow`]'s reason. An admitted request
//! holds its slot for all its attempts until its [`Admitted`] drops (when
//! the response ends); a retry takes a [`RetryPermit`] besides.
//!
//! With no limit configured, admission is free: no atomics, no clone.

// Called by the forwarding layer once it is wired in (issue 20); until then
// only the tests use it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};

use anymesh_core::routes::ConnectionPool;

use slots::{Enqueued, Slots, Ticket};

mod slots;
#[cfg(test)]
mod tests;

/// The limits of one cluster; cheap to check when there are none.
pub(crate) struct Limits(Option<Arc<Inner>>);

struct Inner {
    /// HTTP/1.1 with `maxConnections`: one slot per connection.
    connections: Option<Slots>,
    /// Requests allowed to wait for a connection (`u64::MAX`: unbounded).
    max_pending: u64,
    /// `http2MaxRequests` (`u64::MAX`: unbounded).
    max_requests: u64,
    /// Requests admitted or waiting, counted only when bounded.
    requests: AtomicU64,
    /// `maxRetries` (`u64::MAX`: unbounded).
    max_retries: u64,
    retries: AtomicU64,
    /// Requests that found every connection busy and waited.
    waited: AtomicU64,
    /// Refusals, per [`Overflow`] (by its index).
    overflows: [AtomicU64; 4],
}

/// The limit that refused a request or a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// Every connection is busy and no request may wait (a pending limit
    /// of 0, or no connection allowed at all; Istio's configuration, where
    /// 0 means unset, never says so).
    MaxConnections,
    /// Every connection is busy and the pending queue is full.
    Pending,
    /// `http2MaxRequests` requests are in flight.
    Http2MaxRequests,
    /// `maxRetries` retries are in flight.
    MaxRetries,
}

impl Overflow {
    /// Every limit, in the order of [`Limits::overflows`]' index.
    pub(crate) const ALL: [Overflow; 4] = [
        Overflow::MaxConnections,
        Overflow::Pending,
        Overflow::Http2MaxRequests,
        Overflow::MaxRetries,
    ];

    /// The limit's name in a local reply's reason and in metrics.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Overflow::MaxConnections => "max_connections",
            Overflow::Pending => "pending",
            Overflow::Http2MaxRequests => "http2_max_requests",
            Overflow::MaxRetries => "max_retries",
        }
    }

    /// The DestinationRule field that set the limit.
    pub(crate) fn field(self) -> &'static str {
        match self {
            Overflow::MaxConnections => "connectionPool.tcp.maxConnections",
            Overflow::Pending => "connectionPool.http.http1MaxPendingRequests",
            Overflow::Http2MaxRequests => "connectionPool.http.http2MaxRequests",
            Overflow::MaxRetries => "connectionPool.http.maxRetries",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} reached", self.field())
    }
}

fn bound(limit: Option<u32>) -> u64 {
    limit.map_or(u64::MAX, u64::from)
}

impl Limits {
    /// The limits of a cluster whose upstream connections speak HTTP/2
    /// (`h2`) or HTTP/1.1.
    pub(crate) fn new(pool: &ConnectionPool, h2: bool) -> Self {
        let connections = match pool.max_connections {
            Some(n) if !h2 => Some(Slots::new(n)),
            _ => None,
        };
        let inner = Inner {
            connections,
            // With no connection at all, waiting would never end.
            max_pending: match pool.max_connections {
                Some(0) if !h2 => 0,
                _ => bound(pool.http1_max_pending_requests),
            },
            max_requests: bound(pool.http2_max_requests),
            requests: AtomicU64::new(0),
            max_retries: bound(pool.max_retries),
            retries: AtomicU64::new(0),
            waited: AtomicU64::new(0),
            overflows: Default::default(),
        };
        let limited = inner.limits_requests() || inner.max_retries != u64::MAX;
        Self(limited.then(|| Arc::new(inner)))
    }

    /// No limits at all.
    #[cfg(test)]
    pub(crate) fn unlimited() -> Self {
        Self(None)
    }

    /// Admits a request, after waiting for a connection if it must; an
    /// error names the limit that refused it (counted). Dropping the
    /// future while it waits gives up its place.
    ///
    /// Decided at once unless the request has to wait; only a waiting
    /// request allocates (its place in the queue).
    pub(crate) fn admit(&self) -> Admission {
        match &self.0 {
            Some(inner) if inner.limits_requests() => Inner::admit(inner),
            _ => Admission::ready(Ok(Admitted(None))),
        }
    }

    /// Takes a retry slot; an error (counted) when `maxRetries` are in flight.
    pub(crate) fn admit_retry(&self) -> Result<RetryPermit, Overflow> {
        let Some(inner) = self.0.as_ref().filter(|i| i.max_retries != u64::MAX) else {
            return Ok(RetryPermit(None));
        };
        if !take(&inner.retries, inner.max_retries) {
            return Err(inner.refuse(Overflow::MaxRetries));
        }
        Ok(RetryPermit(Some(Arc::clone(inner))))
    }

    /// Refusals by `limit` so far.
    pub(crate) fn overflows(&self, limit: Overflow) -> u64 {
        self.read(|i| {
            i.overflows
                .get(limit.index())
                .map_or(0, |c| c.load(Relaxed))
        })
    }

    /// Requests that found every connection busy and waited (Envoy's
    /// `upstream_cx_overflow`).
    pub(crate) fn waited(&self) -> u64 {
        self.read(|i| i.waited.load(Relaxed))
    }

    /// Requests waiting for a connection now.
    pub(crate) fn pending(&self) -> u64 {
        self.read(|i| i.connections.as_ref().map_or(0, Slots::waiting))
    }

    /// Retries in flight now (counted only under `maxRetries`).
    pub(crate) fn retries_in_flight(&self) -> u64 {
        self.read(|i| i.retries.load(Relaxed))
    }

    /// Whether no limit is configured.
    pub(crate) fn is_unlimited(&self) -> bool {
        self.0.is_none()
    }

    fn read(&self, f: impl Fn(&Inner) -> u64) -> u64 {
        self.0.as_deref().map_or(0, f)
    }
}

/// Adds one to `counter` unless it is at `max`.
fn take(counter: &AtomicU64, max: u64) -> bool {
    if counter.fetch_add(1, Relaxed) < max {
        return true;
    }
    counter.fetch_sub(1, Relaxed);
    false
}

impl Inner {
    fn limits_requests(&self) -> bool {
        self.connections.is_some() || self.max_requests != u64::MAX
    }

    fn refuse(&self, limit: Overflow) -> Overflow {
        if let Some(c) = self.overflows.get(limit.index()) {
            c.fetch_add(1, Relaxed);
        }
        limit
    }

    fn admit(this: &Arc<Self>) -> Admission {
        let Some(counted) = Decrement::take_bounded(&this.requests, this.max_requests) else {
            return Admission::ready(Err(this.refuse(Overflow::Http2MaxRequests)));
        };
        if let Some(connections) = &this.connections {
            if !connections.try_take() {
                match connections.enqueue(this.max_pending) {
                    Enqueued::Taken => {}
                    Enqueued::Full => {
                        let limit = match this.max_pending {
                            0 => Overflow::MaxConnections,
                            _ => Overflow::Pending,
                        };
                        return Admission::ready(Err(this.refuse(limit)));
                    }
                    Enqueued::Waiting(ticket) => {
                        this.waited.fetch_add(1, Relaxed);
                        counted.keep();
                        let waiter = Waiter {
                            inner: Arc::clone(this),
                            ticket,
                            done: false,
                        };
                        return Admission(State::Waiting(Box::new(waiter)));
                    }
                }
            }
        }
        counted.keep();
        Admission::ready(Ok(Admitted(Some(Arc::clone(this)))))
    }
}

/// A request waiting for a connection; counted as one of the requests
/// (when they are bounded) until it is admitted or gives up.
struct Waiter {
    inner: Arc<Inner>,
    ticket: Ticket,
    done: bool,
}

impl Waiter {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Admitted, Overflow>> {
        let handed = std::task::ready!(self.ticket.poll_handed(cx));
        self.done = true;
        if !handed {
            // The queue dropped its place without a slot: cannot happen
            // while the limits live; refused rather than admitted unbounded.
            self.release_request();
            return Poll::Ready(Err(self.inner.refuse(Overflow::Pending)));
        }
        Poll::Ready(Ok(Admitted(Some(Arc::clone(&self.inner)))))
    }

    fn release_request(&self) {
        if self.inner.max_requests != u64::MAX {
            self.inner.requests.fetch_sub(1, Relaxed);
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Gave up waiting: out of the queue (or the slot handed over
        // meanwhile passes on), and no longer one of the requests.
        if let Some(connections) = &self.inner.connections {
            connections.leave(&self.ticket);
        }
        self.release_request();
    }
}

/// The admission of a request ([`Limits::admit`]): ready at once unless the
/// request waits for a connection.
#[must_use = "a future does nothing unless awaited"]
pub(crate) struct Admission(State);

enum State {
    Ready(Result<Admitted, Overflow>),
    Waiting(Box<Waiter>),
    Done,
}

impl Admission {
    fn ready(result: Result<Admitted, Overflow>) -> Self {
        Self(State::Ready(result))
    }
}

impl Future for Admission {
    type Output = Result<Admitted, Overflow>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match std::mem::replace(&mut self.0, State::Done) {
            State::Ready(result) => Poll::Ready(result),
            State::Waiting(mut waiting) => match waiting.poll(cx) {
                Poll::Ready(result) => Poll::Ready(result),
                Poll::Pending => {
                    self.0 = State::Waiting(waiting);
                    Poll::Pending
                }
            },
            // A broken invariant of the caller: futures are not polled
            // after they complete.
            State::Done => panic!("admission polled after it completed"),
        }
    }
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.0 {
            State::Ready(_) => "ready",
            State::Waiting(_) => "waiting",
            State::Done => "done",
        };
        f.debug_tuple("Admission").field(&state).finish()
    }
}

/// A request count taken during admission, given back on drop unless kept.
struct Decrement<'a>(Option<&'a AtomicU64>);

impl<'a> Decrement<'a> {
    /// Takes one of `counter` when it is below `max`; nothing is counted
    /// without a bound (`u64::MAX`).
    fn take_bounded(counter: &'a AtomicU64, max: u64) -> Option<Self> {
        match max {
            u64::MAX => Some(Self(None)),
            _ => take(counter, max).then(|| Self(Some(counter))),
        }
    }

    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.0 {
            c.fetch_sub(1, Relaxed);
        }
    }
}

/// An admitted request: its connection slot and request count are given
/// back when it drops (hold it until the response ends).
#[must_use = "the request's slot is given back when this drops"]
pub(crate) struct Admitted(Option<Arc<Inner>>);

/// A retry in flight under `maxRetries`, until it drops.
#[must_use = "the retry's slot is given back when this drops"]
pub(crate) struct RetryPermit(Option<Arc<Inner>>);

impl Drop for Admitted {
    fn drop(&mut self) {
        let Some(inner) = &self.0 else { return };
        if let Some(connections) = &inner.connections {
            connections.release();
        }
        if inner.max_requests != u64::MAX {
            inner.requests.fetch_sub(1, Relaxed);
        }
    }
}

impl Drop for RetryPermit {
    fn drop(&mut self) {
        if let Some(inner) = &self.0 {
            inner.retries.fetch_sub(1, Relaxed);
        }
    }
}

impl fmt::Debug for Admitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Admitted"
        } else {
            "Admitted(unlimited)"
        })
    }
}

impl fmt::Debug for RetryPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RetryPermit")
    }
}

impl fmt::Debug for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(inner) = &self.0 else {
            return f.write_str("Limits(unlimited)");
        };
        let shown = |n: u64| (n != u64::MAX).then_some(n);
        f.debug_struct("Limits")
            .field(
                "connections_free",
                &inner.connections.as_ref().map(Slots::free),
            )
            .field("max_pending", &shown(inner.max_pending))
            .field("max_requests", &shown(inner.max_requests))
            .field("max_retries", &shown(inner.max_retries))
            .field("pending", &self.pending())
            .finish()
    }
}
