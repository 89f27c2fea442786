//! Distributed tracing: propagation, sampling, spans and their exporters.
