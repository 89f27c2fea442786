//! [`EurekaConfig`]: which Eureka servers to read and how.
//!
//! Deserializable so the binary can read it from `anymesh.yaml`; durations
//! use Go syntax (`30s`, `250ms`) like the rest of the configuration.

use std::path::PathBuf;
use std::time::Duration;

use anymesh_core::config::GoDuration;
use anymesh_support::{check_http_url, UrlProblem};
use serde::Deserialize;

use crate::decode::Status;
use crate::error::EurekaError;

/// How to reach Eureka and how its instances become endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct EurekaConfig {
    /// Service URLs, tried in order (`http://eureka-1:8761/eureka`, or
    /// `http://host:8080/eureka/v2` for Netflix's own server). The adapter
    /// stays on the server that answers and moves on to the next one when it
    /// fails.
    pub servers: Vec<String>,
    /// How often `/apps/delta` is polled after a full fetch (Netflix's
    /// `registryFetchIntervalSeconds`).
    #[serde(default = "default_refresh_interval")]
    pub refresh_interval: GoDuration,
    /// Which instance field is the endpoint's address.
    #[serde(default)]
    pub address: AddressField,
    /// Which of the instance's ports receives traffic.
    #[serde(default)]
    pub port: PortChoice,
    /// Instance statuses that receive traffic; the others are reported
    /// (with their status) but not used.
    #[serde(default = "default_eligible")]
    pub eligible_statuses: Vec<Status>,
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// How long one request may take, connection included.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: GoDuration,
    #[serde(default)]
    pub backoff: BackoffConfig,
}

/// The instance field used as the endpoint address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressField {
    /// `ipAddr` (the default; Spring's `preferIpAddress`).
    #[default]
    IpAddr,
    /// `hostName` (a `:port` suffix some old servers add is removed).
    HostName,
}

/// The instance port used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortChoice {
    /// `port` (plain HTTP; the default).
    #[default]
    Port,
    /// `securePort`.
    SecurePort,
}

/// HTTP basic authentication. Only where the password is kept is
/// configured; it is read at every request (a rotated file is picked up)
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

/// The `backoff:` block; the first delay defaults to 500 ms.
pub type BackoffConfig = anymesh_core::backoff::BackoffConfig<500>;

fn default_refresh_interval() -> GoDuration {
    GoDuration(Duration::from_secs(30))
}
fn default_eligible() -> Vec<Status> {
    vec![Status::Up]
}
fn default_request_timeout() -> GoDuration {
    GoDuration(Duration::from_secs(10))
}

impl EurekaConfig {
    /// A configuration with defaults for everything but the servers.
    pub fn new(servers: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            servers: servers.into_iter().map(Into::into).collect(),
            refresh_interval: default_refresh_interval(),
            address: AddressField::default(),
            port: PortChoice::default(),
            eligible_statuses: default_eligible(),
            auth: None,
            request_timeout: default_request_timeout(),
            backoff: BackoffConfig::default(),
        }
    }

    /// Checks what can be checked without touching the network or files.
    pub fn validate(&self) -> Result<(), EurekaError> {
        let bad = |message: String| Err(EurekaError::Config { message });
        if self.servers.is_empty() {
            return bad("`servers` must list at least one Eureka service URL".into());
        }
        for (i, s) in self.servers.iter().enumerate() {
            match check_http_url(s) {
                Ok(()) => {}
                Err(UrlProblem::Credentials) => {
                    return bad(format!(
                        "`servers[{i}]` carries credentials in the URL; use `auth` (with \
                         `password_file` or `password_env`) so they are never logged"
                    ))
                }
                Err(problem) => return bad(format!("`servers[{i}]` {s:?} {problem}")),
            }
        }
        if self.eligible_statuses.is_empty() {
            return bad("`eligible_statuses` must name at least one status".into());
        }
        if let Some(auth) = &self.auth {
            if auth.user.is_empty() {
                return bad("`auth.user` must not be empty".into());
            }
            if auth.password_file.is_some() == auth.password_env.is_some() {
                return bad(
                    "`auth` needs exactly one of `password_file` and `password_env`".into(),
                );
            }
        }
        if let Err(why) = self.backoff.check() {
            return bad(why.into());
        }
        for (name, d) in [
            ("refresh_interval", self.refresh_interval),
            ("request_timeout", self.request_timeout),
        ] {
            if d.0.is_zero() {
                return bad(format!("`{name}` must be above 0"));
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
        let c: EurekaConfig = serde_yaml_ng::from_str(
            "servers: [http://127.0.0.1:8761/eureka, http://127.0.0.2:8761/eureka/]\n\
             refresh_interval: 5s\naddress: host_name\neligible_statuses: [UP, STARTING]\n\
             auth: {user: mesh, password_env: EUREKA_PASSWORD}\n",
        )
        .unwrap();
        assert_eq!(c.servers.len(), 2);
        assert_eq!(c.refresh_interval.0, Duration::from_secs(5));
        assert_eq!(c.address, AddressField::HostName);
        assert_eq!(c.port, PortChoice::Port);
        assert_eq!(c.eligible_statuses, vec![Status::Up, Status::Starting]);
        assert_eq!(c.request_timeout.0, Duration::from_secs(10));
        c.validate().unwrap();
        let d: EurekaConfig = serde_yaml_ng::from_str("servers: [http://e:8761/eureka]\n").unwrap();
        assert_eq!(d.refresh_interval.0, Duration::from_secs(30));
        assert_eq!(d.eligible_statuses, vec![Status::Up]);
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        let e = serde_yaml_ng::from_str::<EurekaConfig>("servers: [a]\npassword: x\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `password`"), "{e}");
        let e = serde_yaml_ng::from_str::<EurekaConfig>("servers: [a]\neligible_statuses: [UPP]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("UPP"), "{e}");
        let msg = |c: &EurekaConfig| c.validate().unwrap_err().to_string();
        assert!(msg(&EurekaConfig::new(Vec::<String>::new())).contains("at least one"));
        assert!(msg(&EurekaConfig::new(["eureka:8761"])).contains("not an http(s) URL"));
        let e = msg(&EurekaConfig::new(["http://u:secret@e:8761/eureka"]));
        assert!(e.contains("credentials") && !e.contains("secret"), "{e}");
        let mut c = EurekaConfig::new(["http://e:8761/eureka"]);
        c.auth = Some(AuthConfig {
            user: "u".into(),
            password_file: None,
            password_env: None,
        });
        assert!(msg(&c).contains("exactly one"));
    }
}
