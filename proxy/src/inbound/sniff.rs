//! What a connection to the inbound listener opens with: plaintext, mesh
//! mutual TLS (a ClientHello offering anymesh's ALPN), or other TLS. The
//! bytes read to tell are kept, to be put back in front of whatever serves
//! the connection.

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The ALPN protocols that mark mesh mutual TLS.
pub(crate) use anymesh_identity::tls::{ALPN_H1, ALPN_H2};

/// The largest ClientHello read before the connection is refused: a
/// ClientHello with every extension a real client sends fits in a few KiB
/// (post-quantum key shares included); a TLS record holds at most 16 KiB.
pub(crate) const MAX_CLIENT_HELLO: usize = 16 * 1024 + 5;

/// How a connection opens.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opening {
    /// Not TLS: HTTP (or TCP) in the clear.
    Plain,
    /// A ClientHello offering anymesh's ALPN; `sni` is the server name it asked for.
    Mesh { sni: Option<String> },
    /// TLS that is not the mesh's (an application's own TLS).
    OtherTls,
}

/// Why a connection was refused while its opening was read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SniffError {
    #[error("closed before sending anything")]
    Closed,
    #[error("ClientHello larger than {MAX_CLIENT_HELLO} bytes")]
    TooLarge,
    #[error("reading: {0}")]
    Io(String),
}

/// Reads the opening of a connection into `buf` (at least one byte; for
/// TLS the whole ClientHello) and says what it is.
pub(crate) async fn sniff(tcp: &mut TcpStream, buf: &mut BytesMut) -> Result<Opening, SniffError> {
    loop {
        if let Some(o) = classify(buf)? {
            return Ok(o);
        }
        buf.reserve(4096);
        match tcp.read_buf(buf).await {
            Ok(0) if buf.is_empty() => return Err(SniffError::Closed),
            // The client closed mid-ClientHello: nothing to serve.
            Ok(0) => return Err(SniffError::Closed),
            Ok(_) => {}
            Err(e) => return Err(SniffError::Io(e.to_string())),
        }
    }
}

/// What `buf` opens with, or `None` when more bytes are needed.
pub(crate) fn classify(buf: &[u8]) -> Result<Option<Opening>, SniffError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    // A TLS handshake record.
    if first != 0x16 {
        return Ok(Some(Opening::Plain));
    }
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = buf;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) => break,
            Ok(_) => {}
            // Its buffer is full: a ClientHello that large is refused below.
            Err(_) => break,
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => {
            let hello = accepted.client_hello();
            let mesh = hello
                .alpn()
                .is_some_and(|mut a| a.any(|p| p == ALPN_H2 || p == ALPN_H1));
            if mesh {
                let sni = hello.server_name().map(str::to_string);
                Ok(Some(Opening::Mesh { sni }))
            } else {
                Ok(Some(Opening::OtherTls))
            }
        }
        Ok(None) if buf.len() >= MAX_CLIENT_HELLO => Err(SniffError::TooLarge),
        Ok(None) => Ok(None),
        // Not a ClientHello rustls accepts: not the mesh's; the application
        // (or nobody) decides.
        Err(_) => Ok(Some(Opening::OtherTls)),
    }
}

/// The TLS server name a mesh peer sends for local workload port `port`.
pub fn server_name_for_port(port: u16) -> String {
    format!("inbound-{port}.anymesh")
}

/// The local workload port a mesh peer's server name is for.
pub(crate) fn port_of_server_name(sni: &str) -> Option<u16> {
    sni.strip_prefix("inbound-")?
        .strip_suffix(".anymesh")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_carry_the_port() {
        assert_eq!(server_name_for_port(9080), "inbound-9080.anymesh");
        assert_eq!(port_of_server_name("inbound-9080.anymesh"), Some(9080));
        assert_eq!(port_of_server_name("inbound-99999.anymesh"), None);
        assert_eq!(port_of_server_name("reviews.default.svc"), None);
    }

    #[test]
    fn plaintext_is_told_from_the_first_byte() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Ok(Some(Opening::Plain)));
        assert_eq!(classify(b"PRI * HTTP/2.0"), Ok(Some(Opening::Plain)));
        assert_eq!(classify(b""), Ok(None));
    }

    #[test]
    fn a_partial_client_hello_asks_for_more_and_an_endless_one_is_refused() {
        // A handshake record header announcing 16 KiB, and a little of it.
        let mut b = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x3f, 0xfc];
        assert_eq!(classify(&b), Ok(None));
        b.resize(MAX_CLIENT_HELLO, 0);
        assert!(matches!(classify(&b), Err(SniffError::TooLarge) | Ok(Some(Opening::OtherTls))));
    }

    #[test]
    fn garbage_after_the_record_type_is_not_mesh_tls() {
        let b = [0x16, 0xff, 0xff, 0x00, 0x01, 0x00];
        assert_eq!(classify(&b), Ok(Some(Opening::OtherTls)));
    }
}

#[cfg(test)]
mod hello_tests {
    use super::*;
    use std::sync::Arc;

    /// The ClientHello a rustls client sends with these ALPN protocols.
    fn client_hello(alpn: &[&[u8]], sni: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from(sni.to_string()).expect("name");
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("conn");
        let mut out = Vec::new();
        conn.write_tls(&mut out).expect("hello");
        out
    }

    #[test]
    fn a_client_hello_with_the_mesh_alpn_is_mesh_tls_with_its_server_name() {
        let hello = client_hello(&[ALPN_H2, ALPN_H1], "inbound-9080.anymesh");
        assert_eq!(
            classify(&hello),
            Ok(Some(Opening::Mesh {
                sni: Some("inbound-9080.anymesh".into())
            }))
        );
        // Cut anywhere, it asks for the rest.
        for cut in [1, 5, hello.len() / 2, hello.len() - 1] {
            assert_eq!(classify(&hello[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn other_tls_is_not_the_mesh() {
        let hello = client_hello(&[b"h2", b"http/1.1"], "example.com");
        assert_eq!(classify(&hello), Ok(Some(Opening::OtherTls)));
        let hello = client_hello(&[], "example.com");
        assert_eq!(classify(&hello), Ok(Some(Opening::OtherTls)));
    }
}
