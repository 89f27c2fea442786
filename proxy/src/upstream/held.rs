//! What a forwarded request holds until its response ends: the endpoint's
//! in-flight count (least-request and peak-EWMA balancers read it), the
//! cluster's connection-pool admission (circuit breakers) and its place in
//! the retry budget's count of active requests. Dropping it ends all three.

use super::pool::StreamSlot;
use crate::balance::InFlight;
use crate::resilience::breaker::Admitted;
use crate::resilience::budget::RequestGuard;

/// Held by the response body (or the HTTP/1.1 relay) until the exchange ends.
pub(crate) struct Held {
    pub(crate) in_flight: InFlight,
    /// `None` until the request was admitted (or when no limit applies).
    pub(crate) admitted: Option<Admitted>,
    /// Counts the request as active in its cluster's retry budget.
    pub(crate) _budget: RequestGuard,
    /// Its stream on an HTTP/2 connection, under `maxConcurrentStreams`.
    pub(crate) stream: Option<StreamSlot>,
}

impl Held {
    /// A request counted in flight to its endpoint and active in its budget.
    pub(crate) fn new(in_flight: InFlight, request: RequestGuard) -> Self {
        Self {
            in_flight,
            admitted: None,
            _budget: request,
            stream: None,
        }
    }
}
