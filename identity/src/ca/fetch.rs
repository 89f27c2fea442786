//! One HTTPS request to the CA: TLS with the trust bundle (and the current
//! certificate as the client certificate, for renewal), HTTP/1.1, a JSON
//! body each way, bounded in time and size.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::{wire, CaError};

/// The longest a request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest answer accepted.
const MAX_ANSWER: usize = 1024 * 1024;

/// The CA's base URL, checked.
#[derive(Debug, Clone)]
pub(crate) struct CaUrl {
    text: String,
    host: String,
    port: u16,
    prefix: String,
}

impl CaUrl {
    /// Parses `https://host[:port][/prefix]`.
    pub(crate) fn parse(url: &str) -> Result<Self, CaError> {
        let bad = |why: &str| CaError::Invalid(format!("CA URL {url:?}: {why}"));
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("must start with https://"));
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if uri.query().is_some() {
            return Err(bad("no query allowed"));
        }
        Ok(Self {
            text: url.trim_end_matches('/').to_string(),
            host,
            port: uri.port_u16().unwrap_or(443),
            prefix: uri.path().trim_end_matches('/').to_string(),
        })
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }
}

/// Sends `body` (or nothing, for GET) to `path` and decodes the answer.
pub(crate) async fn call<T: serde::de::DeserializeOwned>(
    url: &CaUrl,
    roots: &[CertificateDer<'static>],
    client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<T, CaError> {
    match tokio::time::timeout(
        REQUEST_TIMEOUT,
        call_inner(url, roots, client_cert, method, path, body),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(unreachable(url, "no answer in time")),
    }
}

fn unreachable(url: &CaUrl, detail: impl std::fmt::Display) -> CaError {
    CaError::Unreachable {
        url: url.text.clone(),
        detail: detail.to_string(),
    }
}

async fn call_inner<T: serde::de::DeserializeOwned>(
    url: &CaUrl,
    roots: &[CertificateDer<'static>],
    client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<T, CaError> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store);
    let mut config = match client_cert {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(url.host.clone())
        .map_err(|_| CaError::Invalid(format!("CA URL {}: bad host name", url.text)))?;
    let tcp = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| unreachable(url, format!("connect: {e}")))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| unreachable(url, format!("tls: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| unreachable(url, format!("http: {e}")))?;
    let conn = tokio::spawn(conn);
    let authority = if url.port == 443 {
        url.host.clone()
    } else {
        format!("{}:{}", url.host, url.port)
    };
    let req = Request::builder()
        .method(method)
        .uri(format!("{}{path}", url.prefix))
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| CaError::Invalid(format!("request: {e}")))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| unreachable(url, format!("http: {e}")))?;
    let status = resp.status();
    let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| unreachable(url, format!("reading the answer: {e}")))?
        .to_bytes();
    conn.abort();
    if status != StatusCode::OK {
        let reason = serde_json::from_slice::<wire::Failure>(&bytes)
            .map(|f| f.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        return Err(if status.is_client_error() {
            CaError::Refused(format!("{} ({status})", reason))
        } else {
            unreachable(url, format!("{status}: {reason}"))
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| unreachable(url, format!("answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_urls_are_https_with_a_host() {
        let url = CaUrl::parse("https://ca.mesh.internal:15012/").expect("valid");
        assert_eq!(
            (url.host.as_str(), url.port, url.prefix.as_str()),
            ("ca.mesh.internal", 15012, "")
        );
        let url = CaUrl::parse("https://[::1]/ca").expect("valid");
        assert_eq!(
            (url.host.as_str(), url.port, url.prefix.as_str()),
            ("::1", 443, "/ca")
        );
        for bad in [
            "http://ca:15012",
            "ca:15012",
            "https://ca/?x=1",
            "not a url",
        ] {
            assert!(CaUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
