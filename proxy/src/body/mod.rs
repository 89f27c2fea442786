//! The bodies that cross the boundary between the transports and the
//! forwarding layer: the request body a transport hands over
//! ([`request::RequestBody`]) and the response body it gets back
//! ([`response::ProxyBody`]).

pub(crate) mod end;
pub(crate) mod request;
pub(crate) mod response;

pub(crate) use response::ProxyBody;
