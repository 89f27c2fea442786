//! [`Prometheus`]: a real Prometheus (Debian's `prometheus` package) scraping
//! given targets, for tests that check metrics the way users read them.
//!
//! It listens on a free `127.0.0.1` port, scrapes every target's
//! `/stats/prometheus` (Istio's path) each second and keeps its data in a
//! temporary directory; it is killed and the directory removed on drop.
//! Queries go through the HTTP API (`/api/v1/query`).
//!
//! When the binary is missing the test is skipped with a message, unless `CI`
//! is set: there it must be installed (`scripts/test` installs it), and its
//! absence fails the test.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use anymesh_testkit::wait::Poll;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// How long Prometheus may take to report ready after it was started.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// How often Prometheus scrapes its targets.
pub(crate) const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// The Debian package that provides the binary.
const PACKAGE: &str = "prometheus";

/// Attempts at starting, each on a newly chosen port (another process may take
/// the port between choosing it and Prometheus binding it).
const ATTEMPTS: usize = 3;

/// One series of a query result: its labels (with `__name__` when the result
/// keeps it) and its value (NaN and infinities included, as Prometheus sends
/// them).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) value: f64,
}

/// A running Prometheus; stopped and its data removed on drop.
#[derive(Debug)]
pub(crate) struct Prometheus {
    addr: SocketAddr,
    targets: usize,
    child: Child,
    dir: tempfile::TempDir,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (at `/stats/prometheus`, every
    /// [`SCRAPE_INTERVAL`]) and waits until it is ready. `None` when the
    /// binary is not installed and `CI` is not set (the test is skipped, and
    /// says so); panics when it is missing in CI or does not start.
    pub(crate) async fn start(targets: &[SocketAddr]) -> Option<Self> {
        let Some(binary) = binary() else {
            if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
                panic!(
                    "prometheus is not installed, and CI is set: install the Debian package \
                     `{PACKAGE}` (scripts/test installs it when missing)"
                );
            }
            eprintln!(
                "SKIPPED: prometheus is not installed (Debian package `{PACKAGE}`; scripts/test \
                 installs it); this test runs a real Prometheus"
            );
            return None;
        };
        let mut last = String::new();
        for _ in 0..ATTEMPTS {
            match Self::launch(&binary, targets).await {
                Ok(p) => return Some(p),
                Err(Launch::PortTaken(log)) => last = log,
                Err(Launch::Failed(e)) => panic!("cannot start prometheus: {e:#}"),
            }
        }
        panic!("prometheus found its port taken {ATTEMPTS} times; last log:\n{last}");
    }

    async fn launch(binary: &Path, targets: &[SocketAddr]) -> Result<Self, Launch> {
        let dir = tempfile::tempdir()
            .context("a temporary directory")
            .map_err(Launch::Failed)?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, config_yaml(targets))
            .context("writing prometheus.yml")
            .map_err(Launch::Failed)?;
        let addr = free_port().map_err(Launch::Failed)?;
        let log_path = dir.path().join("prometheus.log");
        let log = File::create(&log_path)
            .context("creating the log")
            .map_err(Launch::Failed)?;
        let log2 = log
            .try_clone()
            .context("the log for stderr")
            .map_err(Launch::Failed)?;
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))
            .map_err(Launch::Failed)?;
        let mut prom = Self {
            addr,
            targets: targets.len(),
            child,
            dir,
            client: Client::builder(TokioExecutor::new()).build_http(),
        };
        prom.wait_ready(&log_path).await?;
        Ok(prom)
    }

    /// Polls `/-/ready` until it answers 200; fails when the process exits or
    /// the deadline passes, with its log.
    async fn wait_ready(&mut self, log_path: &Path) -> Result<(), Launch> {
        let deadline = tokio::time::Instant::now() + READY_DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(log_path).unwrap_or_default();
                if log.contains("address already in use") {
                    return Err(Launch::PortTaken(log));
                }
                return Err(Launch::Failed(anyhow!(
                    "prometheus exited during startup ({status}); its log:\n{log}"
                )));
            }
            if let Ok((200, _)) = self.get("/-/ready").await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let log = std::fs::read_to_string(log_path).unwrap_or_default();
                return Err(Launch::Failed(anyhow!(
                    "prometheus was not ready within {READY_DEADLINE:?}; its log:\n{log}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Where its HTTP API listens.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its log so far (for failure messages).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Evaluates the PromQL `query` at the current time. A vector result gives
    /// one sample per series, a scalar one sample without labels; an error
    /// (a bad query, an HTTP failure) says what Prometheus said.
    pub(crate) async fn query(&self, query: &str) -> anyhow::Result<Vec<Sample>> {
        let (status, body) = self
            .get(&format!("/api/v1/query?query={}", percent_encode(query)))
            .await?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .with_context(|| format!("HTTP {status}: {}", String::from_utf8_lossy(&body)))?;
        if v["status"] != "success" {
            bail!(
                "{}: {} (HTTP {status})",
                v["errorType"].as_str().unwrap_or("error"),
                v["error"].as_str().unwrap_or("no error message")
            );
        }
        let data = &v["data"];
        let result = &data["result"];
        match data["resultType"].as_str() {
            Some("vector") => result
                .as_array()
                .ok_or_else(|| anyhow!("a vector result that is not an array: {result}"))?
                .iter()
                .map(|s| {
                    let labels = s["metric"]
                        .as_object()
                        .ok_or_else(|| anyhow!("a sample without labels: {s}"))?
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect();
                    Ok(Sample {
                        labels,
                        value: sample_value(&s["value"])?,
                    })
                })
                .collect(),
            Some("scalar") => Ok(vec![Sample {
                labels: BTreeMap::new(),
                value: sample_value(result)?,
            }]),
            other => bail!("a {other:?} result, not an instant vector or scalar: {data}"),
        }
    }

    /// Polls `query` until it returns at least one series and returns them;
    /// panics after `deadline` with the last outcome.
    pub(crate) async fn wait_for_series(&self, query: &str, deadline: Duration) -> Vec<Sample> {
        Poll::new()
            .deadline(deadline)
            .every(Duration::from_millis(100))
            .until_async(&format!("series from {query}"), || async {
                match self.query(query).await {
                    Ok(samples) if !samples.is_empty() => Ok(samples),
                    Ok(_) => Err("no series yet".to_owned()),
                    Err(e) => Err(format!("{e:#}")),
                }
            })
            .await
    }

    /// Waits until every target has been scraped successfully `scrapes` times
    /// (two scrapes give every counter a rate).
    pub(crate) async fn wait_for_scrapes(&self, scrapes: usize, deadline: Duration) {
        // `up` is 1 per successful scrape: its sum over time counts them.
        let query = format!(
            "count(sum_over_time(up[1h]) >= {scrapes}) == {}",
            self.targets
        );
        Poll::new()
            .deadline(deadline)
            .every(Duration::from_millis(100))
            .until_async(&format!("{scrapes} scrapes of each target"), || async {
                match self.query(&query).await {
                    Ok(s) if !s.is_empty() => Ok(()),
                    Ok(_) => Err(self
                        .query("up")
                        .await
                        .map(|up| format!("up: {up:?}"))
                        .unwrap_or_else(|e| format!("{e:#}"))),
                    Err(e) => Err(format!("{e:#}")),
                }
            })
            .await
    }

    async fn get(&self, path_and_query: &str) -> anyhow::Result<(u16, Bytes)> {
        let uri = format!("http://{}{path_and_query}", self.addr);
        let req = http::Request::get(&uri)
            .body(Full::new(Bytes::new()))
            .with_context(|| format!("a request to {uri}"))?;
        let resp = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
            .await
            .with_context(|| format!("GET {uri} timed out"))?
            .with_context(|| format!("GET {uri}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .with_context(|| format!("reading the answer to GET {uri}"))?
            .to_bytes();
        Ok((status, body))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Launch {
    PortTaken(String),
    Failed(anyhow::Error),
}

/// The binary: `prometheus` on `PATH`, else Debian's `/usr/bin/prometheus`.
fn binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("prometheus"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let debian = PathBuf::from("/usr/bin/prometheus");
        debian.is_file().then_some(debian)
    })
}

/// A loopback address with a port free right now.
fn free_port() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    l.local_addr().context("the bound address")
}

/// The configuration: one job scraping `targets` at Istio's path.
fn config_yaml(targets: &[SocketAddr]) -> String {
    let secs = SCRAPE_INTERVAL.as_secs();
    let list = targets
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "global:\n  scrape_interval: {secs}s\n  scrape_timeout: {secs}s\n  evaluation_interval: {secs}s\n\
         scrape_configs:\n  - job_name: anymesh\n    metrics_path: /stats/prometheus\n    \
         static_configs:\n      - targets: [{list}]\n"
    )
}

/// A sample's `[time, "value"]` pair's value (`"NaN"`, `"+Inf"` included).
fn sample_value(pair: &serde_json::Value) -> anyhow::Result<f64> {
    let text = pair[1]
        .as_str()
        .ok_or_else(|| anyhow!("a sample value that is not [time, \"value\"]: {pair}"))?;
    text.parse::<f64>()
        .with_context(|| format!("a sample value {text:?}"))
}

/// `s` percent-encoded for a URL query (every byte but the unreserved ones:
/// RFC 3986 section 2.3). Written here because the test crate's dependencies
/// have no URL encoder.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_promql_for_a_query_string() {
        assert_eq!(
            percent_encode(r#"sum(rate(x{a=~"b|c"}[1m])) / 2"#),
            "sum%28rate%28x%7Ba%3D~%22b%7Cc%22%7D%5B1m%5D%29%29%20%2F%202"
        );
    }

    #[test]
    fn the_config_scrapes_istios_path_every_second() {
        let targets: Vec<SocketAddr> = vec![
            "127.0.0.1:1".parse().expect("addr"),
            "[::1]:2".parse().expect("addr"),
        ];
        let yaml = config_yaml(&targets);
        assert!(yaml.contains("scrape_interval: 1s"), "{yaml}");
        assert!(yaml.contains("metrics_path: /stats/prometheus"), "{yaml}");
        assert!(
            yaml.contains("targets: ['127.0.0.1:1', '[::1]:2']"),
            "{yaml}"
        );
    }

    #[test]
    fn reads_special_values() {
        let v = |s: &str| sample_value(&serde_json::json!([1.0, s])).expect("a value");
        assert!(v("NaN").is_nan());
        assert_eq!(v("+Inf"), f64::INFINITY);
        assert_eq!(v("-Inf"), f64::NEG_INFINITY);
        assert_eq!(v("0.25"), 0.25);
        assert!(sample_value(&serde_json::json!([1.0, 2])).is_err());
    }
}
