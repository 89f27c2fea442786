//! The HTTP side: one reqwest client per (re)sync, blocking queries with
//! `index` and `wait`, the `X-Consul-Index` answer, the ACL token header,
//! TLS, datacenter, consistency mode, namespace and partition.

use std::time::Duration;

use anymesh_support::{SecretError, SecretSource};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::Url;

use crate::api::{self, CatalogServices, ServiceEntry};
use crate::config::{Consistency, ConsulConfig};
use crate::error::ConsulError;

/// The header carrying the ACL token.
pub const TOKEN_HEADER: &str = "X-Consul-Token";
/// The header carrying a blocking query's index.
pub const INDEX_HEADER: &str = "X-Consul-Index";

/// An answer and the index it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<T> {
    pub index: u64,
    pub body: T,
}

/// Talks to one agent for one datacenter. Its `Debug` never shows the token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    datacenter: Option<String>,
    consistency: Consistency,
    namespace: Option<String>,
    partition: Option<String>,
    wait: Duration,
    request_timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("datacenter", &self.datacenter)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Builds a client, reading the token and TLS files now (so a rotated
    /// file is picked up at the next resync).
    pub async fn build(
        config: &ConsulConfig,
        datacenter: Option<String>,
    ) -> Result<Client, ConsulError> {
        let base = Url::parse(&config.address).map_err(|e| ConsulError::Config {
            message: format!("`address` {:?} is not a URL: {e}", config.address),
        })?;
        let mut headers = HeaderMap::new();
        if let Some(token) = token(config).await? {
            let mut value = HeaderValue::from_str(&token).map_err(|_| ConsulError::Config {
                message: "the ACL token has characters a header cannot carry".into(),
            })?;
            value.set_sensitive(true);
            headers.insert(TOKEN_HEADER, value);
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(config.request_timeout.0)
            .pool_idle_timeout(Duration::from_secs(90));
        if let Some(tls) = &config.tls {
            if let Some(ca) = &tls.ca_file {
                let pem = read("the consul CA file", ca).await?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    ConsulError::ReadFile {
                        what: "the consul CA file",
                        path: ca.clone(),
                        message: e.to_string(),
                    }
                })?;
                builder = builder.tls_built_in_root_certs(false);
                for cert in certs {
                    builder = builder.add_root_certificate(cert);
                }
            }
            if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
                let mut pem = read("the consul client certificate", cert).await?;
                pem.push(b'\n');
                pem.extend(read("the consul client key", key).await?);
                let id = reqwest::Identity::from_pem(&pem).map_err(|e| ConsulError::ReadFile {
                    what: "the consul client certificate and key",
                    path: cert.clone(),
                    message: e.to_string(),
                })?;
                builder = builder.identity(id);
            }
        }
        let http = builder.build().map_err(|source| ConsulError::Request {
            what: "building the HTTP client".into(),
            url: config.address.clone(),
            source,
        })?;
        Ok(Client {
            http,
            base,
            datacenter,
            consistency: config.consistency,
            namespace: config.namespace.clone(),
            partition: config.partition.clone(),
            wait: config.wait.0,
            request_timeout: config.request_timeout.0,
        })
    }

    /// `GET /v1/catalog/services`, blocking while the index is `index` (0: at once).
    pub async fn catalog_services(
        &self,
        index: u64,
    ) -> Result<Answer<CatalogServices>, ConsulError> {
        let url = self.url(&["catalog", "services"], index);
        let (idx, bytes) = self.get("listing the consul catalog", &url).await?;
        let body = api::catalog_services(&bytes)
            .map_err(|e| decode_error("listing the consul catalog", &url, e))?;
        Ok(Answer { index: idx, body })
    }

    /// `GET /v1/health/service/<name>`, blocking while the index is `index`.
    pub async fn health_service(
        &self,
        name: &str,
        index: u64,
    ) -> Result<Answer<Vec<ServiceEntry>>, ConsulError> {
        let url = self.url(&["health", "service", name], index);
        let what = format!("reading the instances of consul service {name:?}");
        let (idx, bytes) = self.get(&what, &url).await?;
        let body = api::health_service(&bytes).map_err(|e| decode_error(&what, &url, e))?;
        Ok(Answer { index: idx, body })
    }

    fn url(&self, segments: &[&str], index: u64) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("v1").extend(segments);
        }
        {
            let mut q = url.query_pairs_mut();
            if index > 0 {
                q.append_pair("index", &index.to_string());
                q.append_pair("wait", &format!("{}ms", self.wait.as_millis()));
            }
            if let Some(dc) = &self.datacenter {
                q.append_pair("dc", dc);
            }
            match self.consistency {
                Consistency::Default => {}
                Consistency::Consistent => {
                    q.append_key_only("consistent");
                }
                Consistency::Stale => {
                    q.append_key_only("stale");
                }
            }
            if let Some(ns) = &self.namespace {
                q.append_pair("ns", ns);
            }
            if let Some(p) = &self.partition {
                q.append_pair("partition", p);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        url
    }

    /// Sends one GET; a blocking one may take `wait` plus Consul's jitter
    /// (`wait/16`) plus the request timeout.
    async fn get(&self, what: &str, url: &Url) -> Result<(u64, Vec<u8>), ConsulError> {
        let blocking = url.query_pairs().any(|(k, _)| k == "index");
        let timeout = if blocking {
            self.wait + self.wait / 16 + self.request_timeout
        } else {
            self.request_timeout
        };
        let failed = |source| ConsulError::Request {
            what: what.to_string(),
            url: redact(url),
            source,
        };
        let resp = self
            .http
            .get(url.clone())
            .timeout(timeout)
            .send()
            .await
            .map_err(failed)?;
        let status = resp.status();
        let index = resp
            .headers()
            .get(INDEX_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let bytes = resp.bytes().await.map_err(failed)?;
        if !status.is_success() {
            let body = String::from_utf8_lossy(&bytes);
            let body: String = body.trim().chars().take(200).collect();
            return Err(ConsulError::Status {
                what: what.to_string(),
                url: redact(url),
                status: status.as_u16(),
                body,
            });
        }
        let Some(index) = index else {
            return Err(ConsulError::Decode {
                what: what.to_string(),
                url: redact(url),
                message: format!("no valid {INDEX_HEADER} header"),
            });
        };
        Ok((index, bytes.to_vec()))
    }
}

/// The URL without its query (which never holds the token, but stays short).
fn redact(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

fn decode_error(what: &str, url: &Url, e: serde_json::Error) -> ConsulError {
    ConsulError::Decode {
        what: what.to_string(),
        url: redact(url),
        message: e.to_string(),
    }
}

async fn read(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ConsulError> {
    tokio::fs::read(path)
        .await
        .map_err(|e| ConsulError::ReadFile {
            what,
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// The ACL token, from its file or environment variable (trimmed by
/// [`anymesh_support::trim_secret`]); an empty one is no token. Never logged.
async fn token(config: &ConsulConfig) -> Result<Option<String>, ConsulError> {
    let source =
        SecretSource::from_options(config.token_file.as_deref(), config.token_env.as_deref());
    let Some(source) = source else {
        return Ok(None);
    };
    match source.read() {
        Ok(token) => Ok(Some(token).filter(|t| !t.is_empty())),
        Err(SecretError::ReadFile { path, source }) => Err(ConsulError::ReadFile {
            what: "the consul token file",
            path,
            message: source.to_string(),
        }),
        Err(SecretError::EnvNotSet { name }) => Err(ConsulError::TokenEnv { name }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn builds_query_urls() {
        let mut c = ConsulConfig::new("http://127.0.0.1:8500/");
        c.consistency = Consistency::Stale;
        c.namespace = Some("team-a".into());
        c.partition = Some("p1".into());
        c.wait = anymesh_core::config::GoDuration(Duration::from_secs(30));
        let client = Client::build(&c, Some("dc2".into())).await.unwrap();
        let u = client.url(&["health", "service", "web api"], 7);
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:8500/v1/health/service/web%20api?index=7&wait=30000ms&dc=dc2&stale&ns=team-a&partition=p1"
        );
        let c = ConsulConfig::new("http://127.0.0.1:8500");
        let client = Client::build(&c, None).await.unwrap();
        assert_eq!(
            client.url(&["catalog", "services"], 0).as_str(),
            "http://127.0.0.1:8500/v1/catalog/services"
        );
    }

    #[tokio::test]
    async fn token_comes_from_a_file_and_is_not_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cr3t-token\n").unwrap();
        let mut c = ConsulConfig::new("http://127.0.0.1:8500");
        c.token_file = Some(file);
        assert_eq!(token(&c).await.unwrap().as_deref(), Some("s3cr3t-token"));
        let client = Client::build(&c, None).await.unwrap();
        assert!(!format!("{client:?}").contains("s3cr3t"));
        c.token_file = None;
        c.token_env = Some("ANYMESH_TEST_SURELY_UNSET_TOKEN".into());
        let e = Client::build(&c, None).await.unwrap_err().to_string();
        assert!(e.contains("ANYMESH_TEST_SURELY_UNSET_TOKEN"), "{e}");
    }
}
