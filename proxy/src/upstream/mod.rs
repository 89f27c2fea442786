//! The upstream client: the one place where connections to endpoints are
//! made, pooled and checked out ([`pool`]), where an attempt is sent and its
//! response head read ([`h1`]), and where a failed attempt is judged safe to
//! send again ([`may_resend`]). Transport security for upstream connections
//! (mesh mTLS, TLS origination: [`tls`]) wraps the stream where
//! [`pool::Pool`] connects.

pub(crate) mod h1;
pub(crate) mod held;
pub(crate) mod pool;
pub(crate) mod raw_body;
pub(crate) mod tls;
pub(crate) mod upload;

use crate::error::{ProxyError, Retry};

/// What is known of one attempt when it fails.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt {
    /// The connection came from the idle list (the upstream may have closed it meanwhile).
    pub reused: bool,
    /// The request can be written again as it was: its body (if any) is
    /// buffered in full, and its method is idempotent.
    pub replayable: bool,
    /// Attempts made so far, this one included.
    pub count: u32,
}

/// Whether a failed attempt is sent again on a new connection to the same
/// endpoint: only keep-alive races qualify, a reused connection the
/// upstream had closed before answering anything, for a replayable
/// request, once. Retry policies (VirtualService `retries`) decide above
/// this, in the forwarding layer, and may pick another endpoint.
pub(crate) fn may_resend(e: &ProxyError, attempt: &Attempt) -> bool {
    match e.retry() {
        // A connect failure is never on a reused connection; a write that
        // failed on one is the same race as a close before answering.
        Retry::IfReused | Retry::Unsent => {
            attempt.reused && attempt.replayable && attempt.count == 1
        }
        Retry::No => false,
    }
}

/// A request that may be sent again when a reused connection turns out
/// closed (RFC 9110 §9.2.2: idempotent methods).
pub(crate) fn idempotent(method: &http::Method) -> bool {
    use http::Method;
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn only_a_reused_connection_closed_before_answering_or_writing_is_resent_once() {
        let closed = ProxyError::upstream_closed("closed").with_retry(Retry::IfReused);
        let first = Attempt {
            reused: true,
            replayable: true,
            count: 1,
        };
        assert!(may_resend(&closed, &first));
        assert!(!may_resend(&closed, &Attempt { count: 2, ..first }));
        assert!(!may_resend(
            &closed,
            &Attempt {
                reused: false,
                ..first
            }
        ));
        assert!(!may_resend(
            &closed,
            &Attempt {
                replayable: false,
                ..first
            }
        ));
        let answered = ProxyError::new(ErrorKind::UpstreamProtocol, "bad");
        assert!(!may_resend(&answered, &first));
        // A connect failure is on a fresh connection: not resent here (the
        // retry policy may send it to another endpoint).
        let connect = ProxyError::new(ErrorKind::UpstreamConnect, "refused");
        let fresh = Attempt {
            reused: false,
            ..first
        };
        assert!(!may_resend(&connect, &fresh));
        // Writing the request failed on a reused connection: the same race.
        let unwritten = ProxyError::upstream_closed("broken pipe").with_retry(Retry::Unsent);
        assert!(!unwritten.sent());
        assert!(may_resend(&unwritten, &first));
        assert!(!may_resend(&unwritten, &fresh));
    }
}
