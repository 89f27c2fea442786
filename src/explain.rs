//! `anymesh explain`: every endpoint of one service, where it came from, its
//! labels and why it is or is not eligible in each of the service's clusters,
//! with each cluster's resilience policies.
//!
//! Offline (the default) it loads like `anymesh routes` (registries read
//! once, etcd not contacted) and prints [`anymesh_core::explain`]'s text or
//! JSON: configuration only, so no health verdicts or counters. With
//! `--live` it asks the running proxy's admin listener (`GET
//! /explain?host=`), which adds each endpoint's verdict from every health
//! source and each cluster's counters.
//!
//! Both say, for every eligible endpoint, whether the proxy speaks mutual TLS
//! to it, to which address, the identity expected and why, in the trust
//! domain of anymesh.yaml `mesh.trust_domain` ([`local_proxy`]), and what
//! the proxy's own identity and certificate are: offline, read from the
//! files of an `identity.files` source; live, the certificate in force.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anymesh_core::explain::{explain as explain_host, Certificate, ExplainError, LocalProxy};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::inspect;
use crate::settings::{IdentitySource, Settings};

const EXIT_CONFIG: u8 = 64;
/// The configuration loaded but has no such service.
const EXIT_NOT_FOUND: u8 = 1;
/// The running proxy could not be reached (sysexits' EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: u8 = 69;
/// How long `--live` waits for the admin listener.
const LIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// `anymesh explain -c anymesh.yaml --host H [--json] [--live]`.
pub async fn run(config: &Path, host: &str, json: bool, live: bool) -> ExitCode {
    if live {
        return run_live(config, host, json).await;
    }
    let settings = match Settings::load(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("anymesh: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let loaded = match inspect::load(config, inspect::Live::Skip).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("anymesh: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for e in &loaded.errors {
        eprintln!("error: {e}");
    }
    for s in loaded.snapshot.sources.iter().filter(|s| !s.synced) {
        eprintln!(
            "note: registry {} is not read by `anymesh explain`; \
             `anymesh explain --live` shows the running proxy's view",
            s.source
        );
    }
    let mut proxy = local_proxy(&settings);
    proxy.certificate = offline_certificate(&settings, SystemTime::now());
    let mut x = match explain_host(&loaded.snapshot, &loaded.table, host, &proxy) {
        Ok(x) => x,
        Err(e @ ExplainError::InvalidHost { .. }) => {
            eprintln!("anymesh: --host: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(e @ ExplainError::NoService { .. }) => {
            eprintln!("anymesh: {e}");
            return ExitCode::from(EXIT_NOT_FOUND);
        }
    };
    x.set_default_retry_budget(&settings.retry_budget);
    if json {
        match serde_json::to_string_pretty(&x) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("anymesh: cannot encode the explanation: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", x.render(SystemTime::now()));
    }
    ExitCode::SUCCESS
}

/// The proxy as anymesh.yaml describes it: the trust domain, its own
/// identity (the first workload's) and where its certificate comes from.
/// The certificate itself is left [`Certificate::Unknown`] (or
/// [`Certificate::NotConfigured`]) for the caller to fill in.
pub fn local_proxy(settings: &Settings) -> LocalProxy {
    let source = settings.identity.as_ref().map(|source| match source {
        IdentitySource::Files {
            cert,
            key,
            bundle,
            reload_interval,
        } => format!(
            "files (identity.files): cert {}, key {}, bundle {}, reloaded every {}s",
            cert.display(),
            key.display(),
            bundle.display(),
            reload_interval.as_secs()
        ),
        IdentitySource::Ca { url, state_dir, .. } => format!(
            "anymesh ca at {url} (identity.ca){}",
            state_dir
                .as_ref()
                .map(|d| format!(", kept in {}", d.display()))
                .unwrap_or_default()
        ),
        IdentitySource::WorkloadApi { socket, .. } => format!(
            "the SPIFFE Workload API at {} (identity.workload_api)",
            socket.as_deref().unwrap_or("$SPIFFE_ENDPOINT_SOCKET")
        ),
    });
    LocalProxy {
        trust_domain: settings.mesh.trust_domain.clone(),
        identity: settings.own_identity().map(|id| id.as_str().to_string()),
        certificate: if source.is_some() {
            Certificate::Unknown
        } else {
            Certificate::NotConfigured
        },
        certificate_source: source,
    }
}

/// Offline: the certificate of an `identity.files` source, read from its
/// files as the proxy would read them; other sources are known only to the
/// running proxy.
fn offline_certificate(settings: &Settings, now: SystemTime) -> Certificate {
    let Some(source) = &settings.identity else {
        return Certificate::NotConfigured;
    };
    let IdentitySource::Files {
        cert, key, bundle, ..
    } = source
    else {
        return Certificate::Unknown;
    };
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let creds = (|| {
        let (c, k, b) = (read(cert)?, read(key)?, read(bundle)?);
        anymesh_identity::Credentials::from_pem(&c, &k, &b).map_err(|e| e.to_string())
    })();
    match creds {
        Ok(c) => Certificate::Held {
            identity: c.id.as_str().to_string(),
            not_before: c.not_before,
            not_after: c.not_after,
            valid_now: c.not_before <= now && !c.expired_at(now),
            last_error: None,
        },
        Err(error) => Certificate::Unreadable { error },
    }
}

/// `--live`: the running proxy's own explanation, as text or JSON.
async fn run_live(config: &Path, host: &str, json: bool) -> ExitCode {
    let settings = match Settings::load(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("anymesh: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let admin = reachable(settings.listeners.admin);
    let format = if json { "json" } else { "text" };
    let path = format!("/explain?host={}&format={format}", query_escape(host));
    let (status, body) = match tokio::time::timeout(LIVE_TIMEOUT, get(admin, &path)).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return unreachable(admin, &e.to_string()),
        Err(_) => return unreachable(admin, &format!("no answer in {}s", LIVE_TIMEOUT.as_secs())),
    };
    match status {
        StatusCode::OK => {
            print!("{body}");
            if !body.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        StatusCode::BAD_REQUEST => {
            eprint!("anymesh: --host: {body}");
            ExitCode::from(EXIT_CONFIG)
        }
        StatusCode::NOT_FOUND => {
            eprint!("anymesh: {body}");
            ExitCode::from(EXIT_NOT_FOUND)
        }
        other => {
            eprint!("anymesh: the proxy at {admin} answered {other}: {body}");
            ExitCode::FAILURE
        }
    }
}

fn unreachable(admin: SocketAddr, why: &str) -> ExitCode {
    eprintln!(
        "anymesh: cannot reach the running proxy's admin listener at {admin} ({why}); \
         without --live, explain shows the configured policies only"
    );
    ExitCode::from(EXIT_UNAVAILABLE)
}

/// The admin address to connect to: a wildcard listen address means loopback.
fn reachable(mut addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(Ipv4Addr::LOCALHOST.into()),
        IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(Ipv6Addr::LOCALHOST.into()),
        _ => {}
    }
    addr
}

/// Percent-encodes everything but unreserved characters.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One HTTP/1.1 `GET` on a fresh connection; the status and the body.
async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(StatusCode, String)> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let req = Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Empty::<bytes::Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    driver.abort();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_escaped_and_wildcards_reached_on_loopback() {
        assert_eq!(
            query_escape("reviews.default:9080"),
            "reviews.default%3A9080"
        );
        assert_eq!(query_escape("a b&c"), "a%20b%26c");
        let any: SocketAddr = "0.0.0.0:15000".parse().unwrap();
        assert_eq!(reachable(any).to_string(), "127.0.0.1:15000");
        let any6: SocketAddr = "[::]:15000".parse().unwrap();
        assert_eq!(reachable(any6).to_string(), "[::1]:15000");
        let set: SocketAddr = "10.1.2.3:15000".parse().unwrap();
        assert_eq!(reachable(set), set);
    }
}
