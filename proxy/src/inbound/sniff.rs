//! What a connection to the inbound listener opens with: plaintext, mesh
//! mutual TLS (a ClientHello offering anymesh's ALPN), or other TLS. The
//! bytes read to tell are kept, to be put back in front of whatever serves
//! the connection.

use bytes::{BufMut, BytesMut};
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
        // Never more than the largest ClientHello: a connection in its
        // opening costs at most that much buffer.
        let want = MAX_CLIENT_HELLO.saturating_sub(buf.len()).clamp(1, 4096);
        buf.reserve(want);
        match tcp.read_buf(&mut (&mut *buf).limit(want)).await {
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
    match records(buf) {
        // A ClientHello announcing more than the limit is refused at once,
        // before its bytes are waited for.
        Records::TooLarge => return Err(SniffError::TooLarge),
        // Parsed only once a record is whole: a client trickling its
        // ClientHello a byte at a time does not cost a parse per byte.
        Records::Partial if buf.len() < MAX_CLIENT_HELLO => return Ok(None),
        Records::Partial | Records::Whole | Records::NotTls => {}
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

/// The largest TLS record a ClientHello may come in (a plaintext record).
const MAX_RECORD: usize = 16 * 1024;

/// What the TLS record headers at the start of a buffer say.
#[derive(Debug, PartialEq, Eq)]
enum Records {
    /// Every record in the buffer is whole.
    Whole,
    /// The last record has more to come.
    Partial,
    /// The first handshake message is a ClientHello longer than
    /// [`MAX_CLIENT_HELLO`] in all.
    TooLarge,
    /// A record header no TLS client sends (rustls says what it is).
    NotTls,
}

fn records(buf: &[u8]) -> Records {
    // The handshake message header: type 1 (ClientHello), a 24-bit length.
    if let [0x16, _, _, _, _, 1, a, b, c, ..] = *buf {
        let len = u32::from_be_bytes([0, a, b, c]) as usize;
        // With its own header, in records of at most MAX_RECORD bytes.
        let message = 4 + len;
        if 5 * message.div_ceil(MAX_RECORD) + message > MAX_CLIENT_HELLO {
            return Records::TooLarge;
        }
    }
    let mut rest = buf;
    while !rest.is_empty() {
        let [0x16, 3, _, hi, lo, ..] = *rest else {
            if rest.len() < 5 && rest[0] == 0x16 {
                return Records::Partial;
            }
            return Records::NotTls;
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len > MAX_RECORD {
            return Records::NotTls;
        }
        let Some(next) = rest.get(5 + len..) else {
            return Records::Partial;
        };
        rest = next;
    }
    Records::Whole
}

pub use anymesh_identity::tls::server_name_for_port;

/// The local workload port a mesh peer's server name is for.
/// Besides anymesh's own form, Istio's (`outbound_.<port>_.<subset>_.<host>`,
/// what a DestinationRule ISTIO_MUTUAL without `sni` makes Envoy send) is
/// read too.
pub(crate) fn port_of_server_name(sni: &str) -> Option<u16> {
    if let Some(rest) = sni.strip_prefix("outbound_.") {
        return rest.split_once("_.")?.0.parse().ok();
    }
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
        assert_eq!(
            port_of_server_name("outbound_.9080_.v1_.reviews.default.svc.cluster.local"),
            Some(9080)
        );
        assert_eq!(port_of_server_name("outbound_.x_._.reviews"), None);
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
        assert!(matches!(
            classify(&b),
            Err(SniffError::TooLarge) | Ok(Some(Opening::OtherTls))
        ));
    }

    #[test]
    fn a_client_hello_announcing_more_than_the_limit_is_refused_before_its_bytes() {
        // A record of 16 KiB whose ClientHello says it is 64 KiB long.
        let b = [0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0xff, 0xff];
        assert_eq!(classify(&b), Err(SniffError::TooLarge));
        // One that fits a record is waited for.
        let b = [0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x3f, 0xfc];
        assert_eq!(records(&b), Records::Partial);
        assert_eq!(classify(&b), Ok(None));
    }

    #[test]
    fn records_are_whole_only_at_a_record_boundary() {
        assert_eq!(records(&[0x16, 0x03]), Records::Partial);
        assert_eq!(
            records(&[0x16, 0x03, 0x01, 0x00, 0x02, 0xaa]),
            Records::Partial
        );
        assert_eq!(
            records(&[0x16, 0x03, 0x01, 0x00, 0x01, 0xaa]),
            Records::Whole
        );
        assert_eq!(
            records(&[0x16, 0x03, 0x01, 0x00, 0x01, 0xaa, 0x16]),
            Records::Partial
        );
        // A record longer than TLS allows, or not TLS 1.x: rustls decides.
        assert_eq!(records(&[0x16, 0x03, 0x01, 0x40, 0x01]), Records::NotTls);
        assert_eq!(records(&[0x16, 0xff, 0xff, 0x00, 0x01]), Records::NotTls);
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
        for cut in 1..hello.len() {
            assert_eq!(classify(&hello[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[tokio::test]
    async fn sniffing_reads_no_more_than_the_largest_client_hello() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut tcp = TcpStream::connect(addr).await.expect("connect");
            // A multi-record ClientHello within the limit, then 40 KiB more.
            let mut b = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x3f, 0xfc];
            b.resize(b.len() + 40 * 1024, 0x16);
            let _ = tcp.write_all(&b).await;
            tcp
        });
        let (mut tcp, _) = listener.accept().await.expect("accept");
        let mut buf = BytesMut::new();
        let r = sniff(&mut tcp, &mut buf).await;
        assert!(
            matches!(r, Err(SniffError::TooLarge) | Ok(Opening::OtherTls)),
            "{r:?}"
        );
        assert!(buf.len() <= MAX_CLIENT_HELLO, "{}", buf.len());
        assert!(buf.capacity() <= 2 * MAX_CLIENT_HELLO, "{}", buf.capacity());
        drop(client);
    }

    #[test]
    fn other_tls_is_not_the_mesh() {
        let hello = client_hello(&[b"h2", b"http/1.1"], "example.com");
        assert_eq!(classify(&hello), Ok(Some(Opening::OtherTls)));
        let hello = client_hello(&[], "example.com");
        assert_eq!(classify(&hello), Ok(Some(Opening::OtherTls)));
    }
}
