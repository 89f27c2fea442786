//! [`ConsulConfig`]: where the agent is, how to reach it, what to read.
//!
//! Deserializable so the binary reads it from `anymesh.yaml`; durations use
//! Go syntax (`5m`, `250ms`) like the rest of the configuration.

use std::path::PathBuf;
use std::time::Duration;

use anymesh_core::config::GoDuration;
use anymesh_core::SourceId;
use serde::Deserialize;

use crate::error::ConsulError;

/// How to reach Consul and which services to follow.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct ConsulConfig {
    /// The agent's HTTP(S) address (`http://127.0.0.1:8500`).
    #[serde(default = "default_address")]
    pub address: String,
    /// Datacenters to read; each is its own source. Empty: the agent's own.
    #[serde(default)]
    pub datacenters: Vec<String>,
    /// Consul service names always followed, whatever the routing references.
    #[serde(default)]
    pub services: Vec<String>,
    /// Follow every service in the catalog (one long-poll each).
    #[serde(default)]
    pub watch_all: bool,
    /// A file holding the ACL token (trailing newline ignored; re-read at every resync).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The name of an environment variable holding the ACL token.
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// `default`, `consistent` or `stale` reads.
    #[serde(default)]
    pub consistency: Consistency,
    /// Consul Enterprise namespace (`ns`), passed through when set.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Consul Enterprise admin partition, passed through when set.
    #[serde(default)]
    pub partition: Option<String>,
    /// Route to instances whose worst check is `warning` too.
    #[serde(default)]
    pub include_warning: bool,
    /// Which address to dial: the service's (default, falling back to the
    /// node's) or a tagged one.
    #[serde(default)]
    pub address_from: AddressFrom,
    /// The `wait` of blocking queries (Consul caps it at 10m).
    #[serde(default = "default_wait")]
    pub wait: GoDuration,
    /// How long a request may take beyond its `wait`.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: GoDuration,
    /// The least time between the starts of two queries of one watch.
    #[serde(default = "default_min_query_interval")]
    pub min_query_interval: GoDuration,
    /// Random delay added before each query, up to this.
    #[serde(default = "default_jitter")]
    pub jitter: GoDuration,
    #[serde(default)]
    pub backoff: BackoffConfig,
}

/// TLS towards the agent. Without `ca_file` the system roots are used.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// Consul's read consistency modes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    #[default]
    Default,
    Consistent,
    Stale,
}

/// Where an endpoint's address comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressFrom {
    /// `Service.Address`, else `Node.Address`.
    #[default]
    Service,
    Lan,
    Wan,
    LanIpv4,
    LanIpv6,
    WanIpv4,
    WanIpv6,
}

impl AddressFrom {
    /// The `TaggedAddresses` key, for a tagged choice.
    pub fn tag(self) -> Option<&'static str> {
        Some(match self {
            AddressFrom::Service => return None,
            AddressFrom::Lan => "lan",
            AddressFrom::Wan => "wan",
            AddressFrom::LanIpv4 => "lan_ipv4",
            AddressFrom::LanIpv6 => "lan_ipv6",
            AddressFrom::WanIpv4 => "wan_ipv4",
            AddressFrom::WanIpv6 => "wan_ipv6",
        })
    }
}

/// The `backoff:` block; the first delay defaults to 200 ms.
pub type BackoffConfig = anymesh_core::backoff::BackoffConfig<200>;

fn default_address() -> String {
    "http://127.0.0.1:8500".into()
}
fn default_wait() -> GoDuration {
    GoDuration(Duration::from_secs(300))
}
fn default_request_timeout() -> GoDuration {
    GoDuration(Duration::from_secs(10))
}
fn default_min_query_interval() -> GoDuration {
    GoDuration(Duration::from_millis(500))
}
fn default_jitter() -> GoDuration {
    GoDuration(Duration::from_millis(100))
}

/// Consul's cap on `wait`.
pub const MAX_WAIT: Duration = Duration::from_secs(600);

impl ConsulConfig {
    /// Defaults for everything but the address.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            datacenters: Vec::new(),
            services: Vec::new(),
            watch_all: false,
            token_file: None,
            token_env: None,
            tls: None,
            consistency: Consistency::Default,
            namespace: None,
            partition: None,
            include_warning: false,
            address_from: AddressFrom::Service,
            wait: default_wait(),
            request_timeout: default_request_timeout(),
            min_query_interval: default_min_query_interval(),
            jitter: default_jitter(),
            backoff: BackoffConfig::default(),
        }
    }

    /// The sources this registry makes: one per datacenter, named
    /// `<name>/<dc>` when there are several, else `<name>`.
    pub fn sources(&self, name: &str) -> Vec<(SourceId, Option<String>)> {
        match self.datacenters.as_slice() {
            [] => vec![(SourceId::new(name), None)],
            [dc] => vec![(SourceId::new(name), Some(dc.clone()))],
            dcs => dcs
                .iter()
                .map(|dc| (SourceId::new(format!("{name}/{dc}")), Some(dc.clone())))
                .collect(),
        }
    }

    /// Checks what can be checked without the network or files.
    pub fn validate(&self) -> Result<(), ConsulError> {
        let bad = |message: String| Err(ConsulError::Config { message });
        match reqwest::Url::parse(&self.address) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            Ok(u) => {
                return bad(format!(
                    "`address` must be http or https, got {}",
                    u.scheme()
                ))
            }
            Err(e) => return bad(format!("`address` {:?} is not a URL: {e}", self.address)),
        }
        if anymesh_support::has_credentials(&self.address) {
            return bad(
                "`address` carries credentials in the URL; use `token_file` or `token_env` \
                 so they are never logged"
                    .into(),
            );
        }
        if self.token_file.is_some() && self.token_env.is_some() {
            return bad("set at most one of `token_file` and `token_env`".into());
        }
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return bad("`tls.cert_file` and `tls.key_file` go together".into());
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for dc in &self.datacenters {
            if dc.is_empty() || !seen.insert(dc) {
                return bad(format!("`datacenters`: {dc:?} is empty or listed twice"));
            }
        }
        if self.wait.0 < Duration::from_secs(1) || self.wait.0 > MAX_WAIT {
            return bad("`wait` must be between 1s and 10m".into());
        }
        if self.request_timeout.0.is_zero() {
            return bad("`request_timeout` must be above 0".into());
        }
        if let Err(why) = self.backoff.check() {
            return bad(why.into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_yaml_with_defaults() {
        let c: ConsulConfig = serde_yaml_ng::from_str(
            "address: https://consul:8501\ndatacenters: [dc1, dc2]\nservices: [web]\n\
             token_env: CONSUL_TOKEN\nconsistency: stale\naddress_from: wan_ipv6\n\
             tls: {ca_file: ca.pem}\nwait: 30s\n",
        )
        .unwrap();
        assert_eq!(c.consistency, Consistency::Stale);
        assert_eq!(c.address_from.tag(), Some("wan_ipv6"));
        assert_eq!(c.wait.0, Duration::from_secs(30));
        assert_eq!(c.min_query_interval.0, Duration::from_millis(500));
        c.validate().unwrap();
        let names: Vec<String> = c
            .sources("consul")
            .iter()
            .map(|(s, _)| s.to_string())
            .collect();
        assert_eq!(names, ["consul/dc1", "consul/dc2"]);
        let one = ConsulConfig::new("http://a:8500");
        assert_eq!(one.sources("c")[0].0.as_str(), "c");
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        let e = serde_yaml_ng::from_str::<ConsulConfig>("token: abc\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `token`"), "{e}");
        let mut c = ConsulConfig::new("ftp://x");
        assert!(c.validate().unwrap_err().to_string().contains("http"));
        c.address = "http://x:8500".into();
        c.wait = GoDuration(Duration::from_secs(3600));
        assert!(c.validate().unwrap_err().to_string().contains("`wait`"));
        c.wait = default_wait();
        c.token_file = Some("t".into());
        c.token_env = Some("T".into());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("at most one"));
    }

    #[test]
    fn rejects_credentials_in_the_address_without_echoing_them() {
        let c = ConsulConfig::new("http://user:s3cret@consul:8500");
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("credentials") && !e.contains("s3cret"), "{e}");
    }
}
