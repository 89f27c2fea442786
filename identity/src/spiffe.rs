//! SPIFFE IDs (`spiffe://<trust domain>/<path>`), checked as the SPIFFE ID
//! specification requires.

use std::fmt;
use std::sync::Arc;

/// Why a string is not a SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SPIFFE ID {id:?}: {reason}")]
pub struct SpiffeIdError {
    pub id: String,
    pub reason: &'static str,
}

/// A SPIFFE ID. Istio's workload form is
/// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    uri: Arc<str>,
    /// Where the path starts in `uri` (the end of the trust domain).
    path_at: usize,
}

const SCHEME: &str = "spiffe://";

impl SpiffeId {
    /// Parses and checks a SPIFFE ID: lower-case trust domain of letters,
    /// digits, `.`, `-`, `_`; a path of non-empty segments of letters,
    /// digits, `.`, `-`, `_` (not `.` or `..`); no query, fragment, port
    /// or user info; at most 2048 bytes.
    pub fn parse(id: &str) -> Result<Self, SpiffeIdError> {
        let bad = |reason| SpiffeIdError {
            id: id.to_string(),
            reason,
        };
        if id.len() > 2048 {
            return Err(bad("longer than 2048 bytes"));
        }
        let rest = id
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("does not start with spiffe://"))?;
        let (td, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        check_trust_domain(td).map_err(bad)?;
        if !path.is_empty() {
            for seg in path[1..].split('/') {
                if seg.is_empty() {
                    return Err(bad("empty path segment"));
                }
                if seg == "." || seg == ".." {
                    return Err(bad("path segment '.' or '..'"));
                }
                if !seg.bytes().all(|b| {
                    b.is_ascii_lowercase()
                        || b.is_ascii_uppercase()
                        || b.is_ascii_digit()
                        || matches!(b, b'.' | b'-' | b'_')
                }) {
                    return Err(bad(
                        "path segments may hold only letters, digits, '.', '-' and '_'",
                    ));
                }
            }
        }
        Ok(Self {
            uri: Arc::from(id),
            path_at: SCHEME.len() + td.len(),
        })
    }

    /// `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`.
    pub fn for_account(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        Self::parse(&format!(
            "{SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}"
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.uri
    }

    pub fn trust_domain(&self) -> &str {
        &self.uri[SCHEME.len()..self.path_at]
    }

    /// The path, with its leading `/` (empty for a trust domain's own ID).
    pub fn path(&self) -> &str {
        &self.uri[self.path_at..]
    }

    /// The namespace of an ID in Istio's workload form.
    pub fn namespace(&self) -> Option<&str> {
        self.account().map(|(ns, _)| ns)
    }

    /// The service account of an ID in Istio's workload form.
    pub fn service_account(&self) -> Option<&str> {
        self.account().map(|(_, sa)| sa)
    }

    fn account(&self) -> Option<(&str, &str)> {
        let mut segs = self.path().strip_prefix('/')?.split('/');
        match (
            segs.next(),
            segs.next(),
            segs.next(),
            segs.next(),
            segs.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Some((ns, sa)),
            _ => None,
        }
    }

    /// The principal AuthorizationPolicy matches: the ID without `spiffe://`.
    pub fn principal(&self) -> &str {
        &self.uri[SCHEME.len()..]
    }
}

/// Checks a trust domain name.
pub(crate) fn check_trust_domain(td: &str) -> Result<(), &'static str> {
    if td.is_empty() {
        return Err("empty trust domain");
    }
    if td.len() > 255 {
        return Err("trust domain longer than 255 bytes");
    }
    if !td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err("trust domain may hold only lower-case letters, digits, '.', '-' and '_'");
    }
    Ok(())
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_form_parses_into_its_parts() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/reviews").expect("valid");
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.path(), "/ns/shop/sa/reviews");
        assert_eq!(id.namespace(), Some("shop"));
        assert_eq!(id.service_account(), Some("reviews"));
        assert_eq!(id.principal(), "cluster.local/ns/shop/sa/reviews");
        assert_eq!(
            SpiffeId::for_account("cluster.local", "shop", "reviews").expect("valid"),
            id
        );
        let other = SpiffeId::parse("spiffe://td/workload/x").expect("valid");
        assert_eq!(other.namespace(), None);
    }

    #[test]
    fn malformed_ids_are_refused_with_the_reason() {
        for (id, why) in [
            ("http://td/x", "does not start with spiffe://"),
            ("spiffe:///x", "empty trust domain"),
            ("spiffe://TD/x", "trust domain may hold"),
            ("spiffe://td:443/x", "trust domain may hold"),
            ("spiffe://td//x", "empty path segment"),
            ("spiffe://td/x/", "empty path segment"),
            ("spiffe://td/../x", "path segment '.' or '..'"),
            ("spiffe://td/x?y", "path segments may hold"),
            ("spiffe://td/x#y", "path segments may hold"),
        ] {
            let err = SpiffeId::parse(id).expect_err(id);
            assert!(err.reason.starts_with(why), "{id}: {}", err.reason);
        }
    }
}
