//! The X.509 messages of the SPIFFE Workload API
//! (`proto/spiffe/workload/workload.proto` of the SPIFFE specification),
//! written as prost derives so no `protoc` is needed. Field numbers and
//! types are the specification's; the client side uses the `spiffe`
//! crate's separately generated messages, so the two meet on the wire.

use std::collections::HashMap;

/// `X509SVIDRequest`: no parameters.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509SvidRequest {}

/// `X509SVIDResponse`: the workload's SVIDs, CRLs and federated bundles.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509SvidResponse {
    /// One entry per SVID the workload is entitled to.
    #[prost(message, repeated, tag = "1")]
    pub svids: Vec<X509Svid>,
    /// DER certificate revocation lists.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub crl: Vec<Vec<u8>>,
    /// DER bundles of foreign trust domains, keyed by trust domain ID.
    #[prost(map = "string, bytes", tag = "3")]
    pub federated_bundles: HashMap<String, Vec<u8>>,
}

/// `X509SVID`: one SVID, its key and its trust domain's bundle.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509Svid {
    /// The SVID's SPIFFE ID.
    #[prost(string, tag = "1")]
    pub spiffe_id: String,
    /// DER certificates, leaf first, concatenated.
    #[prost(bytes = "vec", tag = "2")]
    pub x509_svid: Vec<u8>,
    /// DER PKCS#8 private key.
    #[prost(bytes = "vec", tag = "3")]
    pub x509_svid_key: Vec<u8>,
    /// DER CA certificates of the trust domain, concatenated.
    #[prost(bytes = "vec", tag = "4")]
    pub bundle: Vec<u8>,
    /// The operator's label for this SVID when there are several.
    #[prost(string, tag = "5")]
    pub hint: String,
}

/// `X509BundlesRequest`: no parameters.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509BundlesRequest {}

/// `X509BundlesResponse`: the bundles the workload trusts.
#[derive(Clone, PartialEq, prost::Message)]
pub struct X509BundlesResponse {
    /// DER certificate revocation lists.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub crl: Vec<Vec<u8>>,
    /// DER bundles keyed by trust domain ID (`spiffe://<trust domain>`).
    #[prost(map = "string, bytes", tag = "2")]
    pub bundles: HashMap<String, Vec<u8>>,
}
