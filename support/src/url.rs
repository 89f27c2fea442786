//! The checks a registry URL from the configuration must pass.
//!
//! Credentials in a URL (`http://user:password@host`) end up wherever the URL
//! is shown: logs, status messages, `anymesh check` output. Adapters refuse
//! them and take secrets from a file or an environment variable instead
//! ([`SecretSource`](crate::SecretSource)).

use std::fmt;

/// Why a registry URL is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UrlProblem {
    /// The scheme is missing or is not `http` or `https`.
    NotHttp,
    /// The authority (between `scheme://` and the path) is empty.
    NoHost,
    /// The authority carries a user or password (`user:password@host`).
    Credentials,
}

impl fmt::Display for UrlProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UrlProblem::NotHttp => "is not an http(s) URL",
            UrlProblem::NoHost => "has no host",
            UrlProblem::Credentials => "carries credentials in the URL",
        })
    }
}

/// The authority of `url`: after `scheme://` (or from the start when there is
/// no scheme, as in etcd's `host:port`) up to the path, query or fragment.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    &rest[..end]
}

/// Whether `url` carries a user or password (`user:password@host`). Works
/// with and without a scheme; an `@` in the path, query or fragment does not
/// count.
pub fn has_credentials(url: &str) -> bool {
    authority(url).contains('@')
}

/// Checks that `url` is `http://` or `https://`, names a host, and carries no
/// credentials (see [`has_credentials`]).
pub fn check_http_url(url: &str) -> Result<(), UrlProblem> {
    match url.split_once("://") {
        Some(("http" | "https", _)) => {}
        _ => return Err(UrlProblem::NotHttp),
    }
    let authority = authority(url);
    if authority.contains('@') {
        return Err(UrlProblem::Credentials);
    }
    if authority.is_empty() {
        return Err(UrlProblem::NoHost);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_credentials_in_the_authority_only() {
        for url in [
            "http://user:pw@host:8500",
            "https://user@host/",
            "user:pw@host:2379",
            "http://:pw@host?x=1",
        ] {
            assert!(has_credentials(url), "{url}");
        }
        for url in [
            "http://host:8500",
            "host:2379",
            "http://host/v2/apps?owner=a@b",
            "http://host/a@b",
            "http://host#a@b",
            "",
        ] {
            assert!(!has_credentials(url), "{url}");
        }
    }

    #[test]
    fn checks_scheme_host_and_credentials() {
        assert_eq!(check_http_url("http://m:8080"), Ok(()));
        assert_eq!(check_http_url("https://eureka/eureka/v2"), Ok(()));
        assert_eq!(check_http_url("ftp://m"), Err(UrlProblem::NotHttp));
        assert_eq!(check_http_url("m:8080"), Err(UrlProblem::NotHttp));
        assert_eq!(check_http_url("http:///path"), Err(UrlProblem::NoHost));
        assert_eq!(check_http_url("http://"), Err(UrlProblem::NoHost));
        assert_eq!(
            check_http_url("http://u:secret@m"),
            Err(UrlProblem::Credentials)
        );
        assert_eq!(check_http_url("http://@m"), Err(UrlProblem::Credentials));
    }

    #[test]
    fn problems_read_as_the_end_of_a_sentence() {
        assert_eq!(
            UrlProblem::Credentials.to_string(),
            "carries credentials in the URL"
        );
    }
}
