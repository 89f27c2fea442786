//! Mesh proxy metadata as registries carry it: string values under
//! documented keys (Consul service meta, Eureka instance metadata, Marathon
//! labels, Kubernetes annotations), checked the same way by every adapter.
//!
//! A value that marks an endpoint as proxied but cannot be used (a port that
//! is not 1..=65535, a name or SPIFFE ID that could not be an identity) is an
//! error, never ignored: an endpoint whose registry says a proxy fronts it
//! must not quietly be reached in plaintext. The adapters refuse such an
//! endpoint and report why.

use std::fmt;

/// The keys under which a registry's metadata names a mesh proxy's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshKeys {
    /// The proxy's inbound port.
    pub port: &'static str,
    /// The namespace of the identity the proxy presents.
    pub namespace: &'static str,
    /// The service account of the identity the proxy presents.
    pub service_account: &'static str,
    /// A whole SPIFFE ID the proxy presents.
    pub spiffe_id: &'static str,
}

/// A mesh proxy's fields read from metadata, each checked; `None` where the
/// metadata does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshFields {
    pub port: Option<u16>,
    pub namespace: Option<String>,
    pub service_account: Option<String>,
    pub spiffe_id: Option<String>,
}

/// A metadata value that cannot be used: which key, its value, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshValueError {
    pub key: String,
    pub value: String,
    pub reason: &'static str,
}

impl fmt::Display for MeshValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}: {}", self.key, self.value, self.reason)
    }
}

impl std::error::Error for MeshValueError {}

impl MeshKeys {
    /// Reads the four keys through `get`: `Ok(None)` when none is present
    /// (the endpoint has no mesh proxy as far as these keys go), else the
    /// checked fields, or the first value that cannot be used.
    pub fn read<'a>(
        &self,
        get: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Option<MeshFields>, MeshValueError> {
        let (port, namespace, service_account, spiffe_id) = (
            get(self.port),
            get(self.namespace),
            get(self.service_account),
            get(self.spiffe_id),
        );
        if port.is_none() && namespace.is_none() && service_account.is_none() && spiffe_id.is_none()
        {
            return Ok(None);
        }
        let err = |key: &str, value: &str, reason| MeshValueError {
            key: key.to_string(),
            value: value.to_string(),
            reason,
        };
        let name = |key: &str, v: Option<&str>| {
            v.map(|v| {
                check_mesh_name(v)
                    .map(|()| v.to_string())
                    .map_err(|r| err(key, v, r))
            })
            .transpose()
        };
        Ok(Some(MeshFields {
            port: port
                .map(|v| mesh_port(v).map_err(|r| err(self.port, v, r)))
                .transpose()?,
            namespace: name(self.namespace, namespace)?,
            service_account: name(self.service_account, service_account)?,
            spiffe_id: spiffe_id
                .map(|v| {
                    check_spiffe_id(v)
                        .map(|()| v.to_string())
                        .map_err(|r| err(self.spiffe_id, v, r))
                })
                .transpose()?,
        }))
    }
}

/// A proxy port written as a string: decimal digits only, 1..=65535.
pub fn mesh_port(value: &str) -> Result<u16, &'static str> {
    const WHY: &str = "not a port number 1..=65535";
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WHY);
    }
    match value.parse::<u16>() {
        Ok(0) | Err(_) => Err(WHY),
        Ok(n) => Ok(n),
    }
}

/// A namespace or service account: it becomes one segment of the SPIFFE ID
/// `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`, so it is
/// what a SPIFFE path segment may be: letters, digits, `.`, `-` and `_`, not
/// empty, not `.` or `..`, at most 253 bytes (a Kubernetes name's limit).
pub fn check_mesh_name(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("must not be empty");
    }
    if value.len() > 253 {
        return Err("longer than 253 bytes");
    }
    if value == "." || value == ".." {
        return Err("must not be '.' or '..'");
    }
    if !value.bytes().all(segment_byte) {
        return Err("may hold only letters, digits, '.', '-' and '_'");
    }
    Ok(())
}

/// A SPIFFE ID as the SPIFFE ID specification allows it (the rules
/// `anymesh-identity`'s `SpiffeId::parse` applies): `spiffe://`, a lower-case
/// trust domain of letters, digits, `.`, `-`, `_`, and a path of non-empty
/// segments that are not `.` or `..`; at most 2048 bytes.
pub fn check_spiffe_id(value: &str) -> Result<(), &'static str> {
    if value.len() > 2048 {
        return Err("longer than 2048 bytes");
    }
    let Some(rest) = value.strip_prefix("spiffe://") else {
        return Err("does not start with spiffe://");
    };
    let (td, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
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
    if path.is_empty() {
        // A workload ID names a workload, not only its trust domain.
        return Err("no path after the trust domain");
    }
    for seg in path.split('/') {
        if seg.is_empty() {
            return Err("empty path segment");
        }
        if seg == "." || seg == ".." {
            return Err("path segment '.' or '..'");
        }
        if !seg.bytes().all(segment_byte) {
            return Err("path segments may hold only letters, digits, '.', '-' and '_'");
        }
    }
    Ok(())
}

fn segment_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: MeshKeys = MeshKeys {
        port: "p",
        namespace: "ns",
        service_account: "sa",
        spiffe_id: "id",
    };

    fn read(pairs: &[(&'static str, &'static str)]) -> Result<Option<MeshFields>, MeshValueError> {
        KEYS.read(|k| pairs.iter().find(|(key, _)| *key == k).map(|(_, v)| *v))
    }

    #[test]
    fn no_key_means_no_proxy_and_any_key_marks_one() {
        assert_eq!(read(&[("other", "x")]), Ok(None));
        assert_eq!(
            read(&[("ns", "shop")]),
            Ok(Some(MeshFields {
                namespace: Some("shop".into()),
                ..MeshFields::default()
            }))
        );
        assert_eq!(
            read(&[("p", "15001"), ("sa", "reviews"), ("id", "spiffe://td/x")]),
            Ok(Some(MeshFields {
                port: Some(15001),
                namespace: None,
                service_account: Some("reviews".into()),
                spiffe_id: Some("spiffe://td/x".into()),
            }))
        );
    }

    #[test]
    fn unusable_values_name_the_key_and_the_reason() {
        for (pairs, shown) in [
            (&[("p", "0")][..], r#"p "0": not a port number 1..=65535"#),
            (&[("p", "65536")], r#"p "65536": not a port number"#),
            (&[("p", "-1")], r#"p "-1": not a port number"#),
            (&[("p", " 80")], r#"p " 80": not a port number"#),
            (&[("p", "")], r#"p "": not a port number"#),
            (&[("ns", "")], r#"ns "": must not be empty"#),
            (&[("ns", "a/b")], r#"ns "a/b": may hold only"#),
            (&[("sa", "..")], r#"sa "..": must not be"#),
            (
                &[("id", "td/ns/x")],
                r#"id "td/ns/x": does not start with spiffe://"#,
            ),
            (&[("id", "spiffe://TD/x")], "trust domain may hold"),
            (&[("id", "spiffe://td")], "no path after the trust domain"),
            (&[("id", "spiffe://td/a//b")], "empty path segment"),
        ] {
            let e = read(pairs).expect_err(shown);
            assert!(e.to_string().contains(shown), "{e} / {shown}");
        }
    }

    #[test]
    fn ports_are_plain_decimal() {
        assert_eq!(mesh_port("15006"), Ok(15006));
        assert_eq!(mesh_port("65535"), Ok(65535));
        assert_eq!(mesh_port("1"), Ok(1));
        assert!(mesh_port("+80").is_err());
        assert!(mesh_port("80.0").is_err());
        assert!(mesh_port("0x50").is_err());
    }
}
