//! Compiled security policy: Istio's `security.istio.io` resources
//! (PeerAuthentication, AuthorizationPolicy, RequestAuthentication) and
//! DestinationRule `trafficPolicy.tls`, in the form the proxy evaluates.

pub mod jwt;
