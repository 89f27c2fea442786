//! The bodies that cross the boundary between the transports and the
//! forwarding layer: the request body a transport hands over
//! ([`request::RequestBody`]) and the response body it gets back
//! ([`response::ProxyBody`]).

pub(crate) mod request;
pub(crate) mod response;

pub use crate::error::{BodyError, BodyTimeout};
pub use request::RequestBody;
pub use response::ProxyBody;
