//! Access logs: Envoy's default text format and Istio's JSON format.
