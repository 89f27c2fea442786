//! Host names as config writes them: exact (`reviews`, `reviews.prod.svc`),
//! wildcard (`*.example.com`) or everything (`*`).

use crate::model::Hostname;

/// A parsed `hosts[]` / `host` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `*`: every host.
    Any,
    /// `*.example.com`, stored as `.example.com`: any name ending in it (any depth).
    Suffix(String),
    Exact(Hostname),
}

impl HostPattern {
    /// Parses and normalises (lower-case, no trailing dot). The error says why.
    pub fn parse(host: &str) -> Result<Self, String> {
        if host == "*" {
            return Ok(HostPattern::Any);
        }
        if let Some(rest) = host.strip_prefix("*.") {
            return Hostname::new(rest)
                .map(|h| HostPattern::Suffix(format!(".{h}")))
                .map_err(|e| e.reason.to_string());
        }
        if host.contains(':') {
            return Err("a port is not allowed here".into());
        }
        if host.contains('*') {
            return Err("'*' is only allowed as the whole first label (`*.example.com`)".into());
        }
        Hostname::new(host)
            .map(HostPattern::Exact)
            .map_err(|e| e.reason.to_string())
    }

    /// Whether a concrete name (a service hostname or alias) matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Suffix(s) => name.len() > s.len() && name.ends_with(s.as_str()),
            HostPattern::Exact(h) => h.as_str() == name,
        }
    }

    pub fn is_wildcard(&self) -> bool {
        !matches!(self, HostPattern::Exact(_))
    }

    /// Orders patterns that match the same name, most specific first: an
    /// exact name, then wildcards by suffix length (longest first), `*` last.
    pub fn rank(&self) -> (u8, usize) {
        match self {
            HostPattern::Exact(_) => (0, 0),
            HostPattern::Suffix(s) => (1, usize::MAX - s.len()),
            HostPattern::Any => (2, 0),
        }
    }
}

/// Whether two hosts as written may name the same service without a catalog
/// to resolve them: equal, a wildcard covering the other, or a short name
/// that the other extends (`reviews` and `reviews.prod.svc.cluster.local`).
pub(crate) fn may_be_same(a: &str, b: &str) -> bool {
    let (Ok(pa), Ok(pb)) = (HostPattern::parse(a), HostPattern::parse(b)) else {
        return false;
    };
    match (&pa, &pb) {
        (HostPattern::Exact(x), HostPattern::Exact(y)) => {
            let (x, y) = (x.as_str(), y.as_str());
            x == y
                || y.strip_prefix(x).is_some_and(|r| r.starts_with('.'))
                || x.strip_prefix(y).is_some_and(|r| r.starts_with('.'))
        }
        (HostPattern::Exact(x), p) | (p, HostPattern::Exact(x)) => p.matches(x.as_str()),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let any = HostPattern::parse("*").unwrap();
        assert!(any.matches("x"));
        let w = HostPattern::parse("*.Example.com").unwrap();
        assert!(w.matches("a.example.com"));
        assert!(w.matches("a.b.example.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("aexample.com"));
        assert_eq!(
            HostPattern::parse("reviews:9080").unwrap_err(),
            "a port is not allowed here"
        );
        assert!(HostPattern::parse("a.*.com").is_err());
        assert!(HostPattern::parse("a b").is_err());
        assert!(HostPattern::parse("Reviews.").unwrap().matches("reviews"));
        let rank = |h| HostPattern::parse(h).unwrap().rank();
        assert!(rank("a.b.c") < rank("*.b.c"));
        assert!(rank("*.b.c") < rank("*.c"));
        assert!(rank("*.c") < rank("*"));
    }

    #[test]
    fn same_service_guess() {
        assert!(may_be_same("reviews", "reviews"));
        assert!(may_be_same("reviews", "reviews.prod.svc.cluster.local"));
        assert!(may_be_same("*.prod.svc", "reviews.prod.svc"));
        assert!(!may_be_same("reviews", "ratings"));
        assert!(!may_be_same("reviews", "reviewsx.prod"));
    }
}
