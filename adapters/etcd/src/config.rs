//! [`EtcdConfig`]: where the registry is and how to reach it.
//!
//! Deserializable so the binary can read it from `anymesh.yaml`; durations
//! use Go syntax (`5s`, `250ms`) like the rest of the configuration.

use std::path::PathBuf;
use std::time::Duration;

use anymesh_core::config::GoDuration;
use serde::Deserialize;

use crate::error::EtcdError;

/// How to reach etcd and which keys to read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct EtcdConfig {
    /// Client URLs (`http://10.0.0.1:2379`, `https://etcd-0:2379`).
    pub endpoints: Vec<String>,
    /// The directory of services: keys are `<prefix><service>/<instance>`.
    /// A trailing `/` is added when missing.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The port of endpoints-format values whose `Addr` has none.
    #[serde(default)]
    pub default_port: Option<u16>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// How long establishing a connection may take.
    #[serde(default = "default_dial_timeout")]
    pub dial_timeout: GoDuration,
    /// How long one request (a list, creating a watch) may take.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: GoDuration,
    /// HTTP/2 keep-alive ping interval; a dead connection is noticed within
    /// this plus `request_timeout` even when no event flows.
    #[serde(default = "default_keepalive")]
    pub keepalive: GoDuration,
    #[serde(default)]
    pub backoff: BackoffConfig,
}

/// TLS towards etcd. Without a CA file the system roots are not used: give
/// the CA that signed etcd's certificate.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct TlsConfig {
    /// PEM file of the CA that signed etcd's server certificate.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for etcd's `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// The name to check etcd's certificate against, when not the URL's host.
    pub server_name: Option<String>,
}

/// etcd user/password authentication. Only where the password is kept is
/// configured; it is read at every connect (so a rotated file is picked up)
/// and never logged.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct AuthConfig {
    pub user: String,
    /// A file holding the password (a trailing newline is ignored).
    pub password_file: Option<PathBuf>,
    /// The name of an environment variable holding the password.
    pub password_env: Option<String>,
}

/// The `backoff:` block; the first delay defaults to 100 ms.
pub type BackoffConfig = anymesh_core::backoff::BackoffConfig<100>;

fn default_prefix() -> String {
    "services/".into()
}
fn default_dial_timeout() -> GoDuration {
    GoDuration(Duration::from_secs(5))
}
fn default_request_timeout() -> GoDuration {
    GoDuration(Duration::from_secs(10))
}
fn default_keepalive() -> GoDuration {
    GoDuration(Duration::from_secs(10))
}

impl EtcdConfig {
    /// A configuration with defaults for everything but the endpoints.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: default_prefix(),
            default_port: None,
            tls: None,
            auth: None,
            dial_timeout: default_dial_timeout(),
            request_timeout: default_request_timeout(),
            keepalive: default_keepalive(),
            backoff: BackoffConfig::default(),
        }
    }

    /// Sets the key prefix.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Checks what can be checked without touching the network or files.
    pub fn validate(&self) -> Result<(), EtcdError> {
        let bad = |message: &str| {
            Err(EtcdError::Config {
                message: message.to_string(),
            })
        };
        if self.endpoints.is_empty() {
            return bad("`endpoints` must list at least one etcd URL");
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            if anymesh_support::has_credentials(e) {
                return Err(EtcdError::Config {
                    message: format!(
                        "`endpoints[{i}]` carries credentials in the URL; use `auth` (with \
                         `password_file` or `password_env`) so they are never logged"
                    ),
                });
            }
        }
        if let Some(auth) = &self.auth {
            if auth.user.is_empty() {
                return bad("`auth.user` must not be empty");
            }
            if auth.password_file.is_some() == auth.password_env.is_some() {
                return bad("`auth` needs exactly one of `password_file` and `password_env`");
            }
        }
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return bad("`tls.cert_file` and `tls.key_file` go together");
            }
        }
        if let Err(why) = self.backoff.check() {
            return bad(why);
        }
        for (name, d) in [
            ("dial_timeout", self.dial_timeout),
            ("request_timeout", self.request_timeout),
            ("keepalive", self.keepalive),
        ] {
            if d.0.is_zero() {
                return Err(EtcdError::Config {
                    message: format!("`{name}` must be above 0"),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_yaml_with_defaults() {
        let c: EtcdConfig = serde_yaml_ng::from_str(
            "endpoints: [http://127.0.0.1:2379]\nprefix: foo/bar\nrequest_timeout: 2s\n\
             auth: {user: mesh, password_env: ETCD_PASSWORD}\nbackoff: {max: 5s}\n",
        )
        .unwrap();
        assert_eq!(c.prefix, "foo/bar");
        assert_eq!(c.request_timeout.0, Duration::from_secs(2));
        assert_eq!(c.dial_timeout.0, Duration::from_secs(5));
        assert_eq!(c.backoff.initial.0, Duration::from_millis(100));
        assert_eq!(c.backoff.max.0, Duration::from_secs(5));
        c.validate().unwrap();
    }

    #[test]
    fn rejects_unknown_fields_and_bad_combinations() {
        let e = serde_yaml_ng::from_str::<EtcdConfig>("endpoints: [a]\npassword: x\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `password`"), "{e}");
        let mut c = EtcdConfig::new(["http://a:2379"]);
        c.auth = Some(AuthConfig {
            user: "u".into(),
            password_file: Some("/p".into()),
            password_env: Some("P".into()),
        });
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("exactly one"));
        let c = EtcdConfig::new(Vec::<String>::new());
        assert!(c.validate().is_err());
    }

    #[test]
    fn rejects_credentials_in_an_endpoint_without_echoing_them() {
        let c = EtcdConfig::new(["http://127.0.0.1:2379", "root:s3cret@10.0.0.1:2379"]);
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("`endpoints[1]`") && e.contains("credentials") && !e.contains("s3cret"),
            "{e}"
        );
    }
}
