//! The value matchers of AuthorizationPolicy, with Istio's meanings:
//! strings with `*` at one end (or `*` alone), CIDR blocks, URI path
//! templates, globs, and the path normalization applied before matching.

use std::borrow::Cow;
use std::net::IpAddr;

use regex::Regex;

/// Istio's string match: `*` alone (any non-empty value), `prefix*`,
/// `*suffix`, or exact. A `*` elsewhere is a literal character, as in Istio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StrPattern {
    Any,
    Prefix(Box<str>),
    Suffix(Box<str>),
    Exact(Box<str>),
}

impl StrPattern {
    pub(crate) fn parse(v: &str) -> Self {
        if v == "*" {
            StrPattern::Any
        } else if let Some(s) = v.strip_prefix('*') {
            StrPattern::Suffix(s.into())
        } else if let Some(p) = v.strip_suffix('*') {
            StrPattern::Prefix(p.into())
        } else {
            StrPattern::Exact(v.into())
        }
    }

    /// The same pattern, lower-cased (for case-insensitive matching).
    pub(crate) fn lowercase(self) -> Self {
        match self {
            StrPattern::Any => StrPattern::Any,
            StrPattern::Prefix(p) => StrPattern::Prefix(p.to_ascii_lowercase().into()),
            StrPattern::Suffix(s) => StrPattern::Suffix(s.to_ascii_lowercase().into()),
            StrPattern::Exact(e) => StrPattern::Exact(e.to_ascii_lowercase().into()),
        }
    }

    pub(crate) fn matches(&self, s: &str) -> bool {
        match self {
            StrPattern::Any => !s.is_empty(),
            StrPattern::Prefix(p) => s.starts_with(&**p),
            StrPattern::Suffix(x) => s.ends_with(&**x),
            StrPattern::Exact(e) => s == &**e,
        }
    }

    /// Case-insensitive match; the pattern must have been [`lowercase`]d.
    ///
    /// [`lowercase`]: StrPattern::lowercase
    pub(crate) fn matches_ignore_case(&self, s: &str) -> bool {
        let b = s.as_bytes();
        match self {
            StrPattern::Any => !s.is_empty(),
            StrPattern::Prefix(p) => {
                b.len() >= p.len() && b[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            }
            StrPattern::Suffix(x) => {
                b.len() >= x.len() && b[b.len() - x.len()..].eq_ignore_ascii_case(x.as_bytes())
            }
            StrPattern::Exact(e) => s.eq_ignore_ascii_case(e),
        }
    }
}

/// A glob where each `*` matches any run of characters (namespaces, trust
/// domains).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob(Box<str>);

impl Glob {
    pub(crate) fn new(pattern: &str) -> Self {
        Glob(pattern.into())
    }

    pub(crate) fn matches(&self, s: &str) -> bool {
        let mut parts = self.0.split('*');
        let Some(first) = parts.next() else {
            return s.is_empty();
        };
        let Some(mut rest) = s.strip_prefix(first) else {
            return false;
        };
        let parts: Vec<&str> = parts.collect();
        let Some((last, middle)) = parts.split_last() else {
            return rest.is_empty(); // no `*` at all: exact
        };
        for part in middle {
            match rest.find(part) {
                Some(i) => rest = &rest[i + part.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last)
    }
}

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// Parses a CIDR block or a single address (as Go's `netip`: host bits
    /// may be set; they are ignored).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        match s.split_once('/') {
            Some((a, l)) => {
                let addr: IpAddr = a
                    .parse()
                    .map_err(|_| format!("bad CIDR range {s:?}: invalid address {a:?}"))?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                let len = Some(l)
                    .filter(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|l| l.parse::<u8>().ok())
                    .filter(|l| *l <= max)
                    .ok_or_else(|| {
                        format!("bad CIDR range {s:?}: prefix length must be 0..={max}")
                    })?;
                Ok(Cidr { addr, len })
            }
            None => {
                let addr: IpAddr = s.parse().map_err(|_| format!("bad IP address {s:?}"))?;
                let len = if addr.is_ipv4() { 32 } else { 128 };
                Ok(Cidr { addr, len })
            }
        }
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as
    /// its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn bits(ip: IpAddr) -> (u128, u8) {
            match ip.to_canonical() {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        }
        let (net, width) = bits(self.addr);
        let (host, host_width) = bits(ip);
        if width != host_width {
            return false;
        }
        let len = u32::from(self.len.min(width));
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        };
        net & mask == host & mask
    }
}

/// Istio's `{*}` and `{**}` URI template operators.
pub(crate) const MATCH_ONE: &str = "{*}";
pub(crate) const MATCH_ANY: &str = "{**}";

/// A path pattern: a string pattern, or a URI template with `{*}` / `{**}`.
#[derive(Debug, Clone)]
pub(crate) enum PathPattern {
    Plain(StrPattern),
    Template(Regex),
}

/// RFC 3986 `pchar` without `%`-escapes spelled out (Envoy's template
/// literal and glob alphabet).
const PCHAR: &str = r"[a-zA-Z0-9\-._~%!$&'()+,;:@=]";

impl PathPattern {
    /// Parses a path; a template is checked as Istio checks it.
    pub(crate) fn parse(path: &str) -> Result<PathPattern, String> {
        if !path.contains(MATCH_ONE) && !path.contains(MATCH_ANY) {
            if path.contains(['{', '}']) {
                return Err(format!(
                    "invalid path {path:?}: '{{' or '}}' outside a supported template operator \
                     ({MATCH_ONE} or {MATCH_ANY})"
                ));
            }
            return Ok(PathPattern::Plain(StrPattern::parse(path)));
        }
        let mut re = String::from("^");
        let mut seen_any = false;
        let segments: Vec<&str> = path.split('/').collect();
        let last = segments.len() - 1;
        for (i, seg) in segments.iter().enumerate() {
            if i > 0 {
                // `{**}/` at the end: the slash may be followed by anything
                // (Istio's example: `/foo/{**}/` matches `/foo/bar/baz.txt`).
                if i == last && seg.is_empty() && segments[i - 1] == MATCH_ANY {
                    re.push_str(&format!("/(?:{PCHAR}|/)*"));
                    continue;
                }
                re.push('/');
            }
            match *seg {
                MATCH_ONE | MATCH_ANY if seen_any => {
                    return Err(format!(
                        "invalid path template {path:?}: {MATCH_ANY} must be the last operator"
                    ))
                }
                MATCH_ONE => re.push_str(&format!("{PCHAR}+")),
                MATCH_ANY => {
                    seen_any = true;
                    re.push_str(&format!("(?:{PCHAR}|/)*"));
                }
                literal => {
                    if literal.contains(['{', '}', '*']) {
                        return Err(format!(
                            "invalid path template {path:?}: segment {literal:?} has characters \
                             other than one {MATCH_ONE} or {MATCH_ANY} operator"
                        ));
                    }
                    if !literal.is_empty()
                        && !literal
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-._~%!$&'()+,;:@=".contains(c))
                    {
                        return Err(format!(
                            "invalid path template {path:?}: segment {literal:?} is not a valid \
                             path literal"
                        ));
                    }
                    re.push_str(&regex::escape(literal));
                }
            }
        }
        re.push('$');
        Regex::new(&re)
            .map(PathPattern::Template)
            .map_err(|e| format!("invalid path template {path:?}: {e}"))
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Plain(p) => p.matches(path),
            PathPattern::Template(re) => re.is_match(path),
        }
    }
}

/// The path as AuthorizationPolicy compares it, following Istio's default
/// normalization (`BASE`, Envoy's `normalize_path`): the query and fragment
/// are cut off, `%`-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`)
/// are decoded and other escapes upper-cased, and `.` / `..` segments are
/// removed (RFC 3986 §5.2.4). Slashes are not merged and backslashes are
/// kept, as with `BASE`. Borrows when nothing changes.
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let needs_decode = path.contains('%');
    let needs_dots = path.split('/').any(|s| s == "." || s == "..");
    if !needs_decode && !needs_dots {
        return Cow::Borrowed(path);
    }
    let decoded = if needs_decode {
        decode_unreserved(path)
    } else {
        path.to_string()
    };
    Cow::Owned(remove_dot_segments(&decoded))
}

fn decode_unreserved(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                let c = (h * 16 + l) as u8;
                if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                    out.push(c as char);
                } else {
                    out.push('%');
                    out.push((b[i + 1] as char).to_ascii_uppercase());
                    out.push((b[i + 2] as char).to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
        }
        // Copy one whole character (the path may hold raw UTF-8).
        let ch_len = path[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&path[i..i + ch_len]);
        i += ch_len;
    }
    out
}

fn remove_dot_segments(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(usize::from(absolute)).collect();
    let n = segments.len();
    let mut trailing = false;
    for (i, seg) in segments.into_iter().enumerate() {
        trailing = false;
        match seg {
            "." => trailing = i + 1 == n,
            ".." => {
                out.pop();
                trailing = i + 1 == n;
            }
            s => out.push(s),
        }
    }
    let mut joined = out.join("/");
    if trailing && !(absolute && joined.is_empty()) {
        joined.push('/');
    }
    if absolute {
        joined.insert(0, '/');
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_patterns() {
        let p = StrPattern::parse;
        assert!(p("*").matches("x") && !p("*").matches(""));
        assert!(p("/api/*").matches("/api/v1") && !p("/api/*").matches("/apiv1"));
        assert!(p("*.jpg").matches("/a.jpg") && !p("*.jpg").matches("/a.png"));
        assert!(p("a*b").matches("a*b") && !p("a*b").matches("axb"));
        let host = StrPattern::parse("*.Example.com").lowercase();
        assert!(host.matches_ignore_case("API.example.COM"));
        assert!(!host.matches_ignore_case("example.com"));
    }

    #[test]
    fn globs() {
        assert!(Glob::new("*").matches("anything"));
        assert!(Glob::new("prod-*").matches("prod-eu"));
        assert!(Glob::new("*-test").matches("ns-test") && !Glob::new("*-test").matches("test"));
        assert!(Glob::new("a*c*e").matches("abcde") && !Glob::new("a*c*e").matches("abde"));
        assert!(Glob::new("foo").matches("foo") && !Glob::new("foo").matches("foox"));
    }

    #[test]
    fn cidrs() {
        let c = |s| Cidr::parse(s).expect(s);
        assert!(c("10.0.0.0/8").contains("10.1.2.3".parse().expect("ip")));
        assert!(!c("10.0.0.0/8").contains("11.1.2.3".parse().expect("ip")));
        assert!(c("10.1.2.3/16").contains("10.1.9.9".parse().expect("ip")));
        assert!(c("1.2.3.4").contains("::ffff:1.2.3.4".parse().expect("ip")));
        assert!(!c("1.2.3.4").contains("1.2.3.5".parse().expect("ip")));
        assert!(c("2001:db8::/32").contains("2001:db8:1::1".parse().expect("ip")));
        assert!(!c("2001:db8::/32").contains("10.0.0.1".parse().expect("ip")));
        assert!(c("0.0.0.0/0").contains("8.8.8.8".parse().expect("ip")));
        for bad in ["10.0.0.0/33", "10.0.0/8", "banana", "::/129", "1.2.3.4/"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_templates_as_istio_documents_them() {
        let t = |s| PathPattern::parse(s).expect(s);
        assert!(t("/foo/{*}").matches("/foo/bar"));
        assert!(!t("/foo/{*}").matches("/foo/bar/baz"));
        let any = t("/foo/{**}/");
        for ok in ["/foo/bar/", "/foo/bar/baz.txt", "/foo//"] {
            assert!(any.matches(ok), "{ok}");
        }
        assert!(!any.matches("/foo/bar"));
        let mixed = t("/foo/{*}/bar/{**}");
        assert!(mixed.matches("/foo/buzz/bar/") && mixed.matches("/foo/buzz/bar/baz"));
        for bad in [
            "/*/baz/{*}",
            "/**/baz/{*}",
            "/{**}/foo/{*}",
            "/foo/{*}.txt",
            "/a/{x}",
        ] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn normalizes_paths() {
        assert!(matches!(normalize_path("/a/b"), Cow::Borrowed("/a/b")));
        assert_eq!(normalize_path("/a/b?x=1#f"), "/a/b");
        assert_eq!(normalize_path("/a/./b/../c"), "/a/c");
        assert_eq!(normalize_path("/%61dmin/%2f"), "/admin/%2F");
        assert_eq!(normalize_path("/public/../admin"), "/admin");
        assert_eq!(normalize_path("/a/.."), "/");
        assert_eq!(normalize_path("/../../x"), "/x");
        assert_eq!(normalize_path("/a//b"), "/a//b");
    }
}
