//! Failure handling on the request path: retry decisions and backoff
//! ([`retry`]), retry budgets ([`budget`]), connection-pool limits
//! (circuit breakers, [`breaker`]), the per-cluster state that keeps them
//! across route-table swaps ([`runtime`]), and passive health (outlier
//! detection, [`outlier`]). Each is a state machine tested on its own; the
//! forwarding layer calls them at its hooks ([`crate::hooks`]).

pub(crate) mod breaker;
pub(crate) mod budget;
pub(crate) mod outlier;
pub(crate) mod retry;
pub(crate) mod runtime;
