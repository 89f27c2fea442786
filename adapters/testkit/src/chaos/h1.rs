//! The HTTP/1.1 side of [`ChaosUpstream`](super::ChaosUpstream): a small
//! server of its own (request heads, bodies by length or chunked, keep-alive)
//! so each [`Behaviour`] lands exactly on the wire: a reset after part of the
//! body, a close after the request was read, silence.

use std::io;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{Behaviour, Shared, ANNOUNCED_LENGTH, PARTIAL_BODY, RESET_PAUSE};

/// What the upstream needs from a request head.
struct Head {
    method: String,
    path: String,
    close: bool,
}

/// The largest head read.
const MAX_HEAD: usize = 64 * 1024;

pub(super) async fn serve(mut io: BufReader<TcpStream>, shared: &Shared) -> io::Result<()> {
    while let Some(head) = read_request(&mut io).await? {
        let Some(behaviour) = shared.arrived(&head.method, &head.path) else {
            let status = shared.health_status();
            write_h1(&mut io, status, &[], b"health\n", head.close).await?;
            if head.close {
                return Ok(());
            }
            continue;
        };
        let echo = [
            ("x-upstream", shared.name.as_str()),
            ("x-seen-method", head.method.as_str()),
            ("x-seen-path", head.path.as_str()),
        ];
        let body = shared.name.as_bytes();
        match behaviour {
            Behaviour::Normal => write_h1(&mut io, 200, &echo, body, head.close).await?,
            Behaviour::Status(s) => write_h1(&mut io, s, &echo, body, head.close).await?,
            Behaviour::Slow(d) => {
                tokio::time::sleep(d).await;
                write_h1(&mut io, 200, &echo, body, head.close).await?;
            }
            Behaviour::GrpcStatus(code) => {
                let code = code.to_string();
                let grpc = [
                    ("x-upstream", shared.name.as_str()),
                    ("content-type", "application/grpc"),
                    ("grpc-status", code.as_str()),
                ];
                write_h1(&mut io, 200, &grpc, b"", head.close).await?;
            }
            Behaviour::Hang => {
                // Until the peer goes away (or the upstream is killed).
                let mut scratch = [0u8; 1024];
                while io.read(&mut scratch).await? > 0 {}
                return Ok(());
            }
            Behaviour::CloseBeforeResponse => return Ok(()),
            Behaviour::ResetMidResponse => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {ANNOUNCED_LENGTH}\r\nx-upstream: {}\r\n\r\n",
                    shared.name
                );
                io.write_all(head.as_bytes()).await?;
                io.write_all(&[b'x'; PARTIAL_BODY]).await?;
                io.flush().await?;
                tokio::time::sleep(RESET_PAUSE).await;
                // Closing with a zero linger sends RST instead of FIN.
                io.get_ref().set_zero_linger()?;
                return Ok(());
            }
        }
        if head.close {
            return Ok(());
        }
    }
    Ok(())
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// Reads one request (head and body, the body discarded); `None` at a clean
/// end of the connection.
async fn read_request(io: &mut BufReader<TcpStream>) -> io::Result<Option<Head>> {
    let mut raw = Vec::new();
    loop {
        let start = raw.len();
        if io.read_until(b'\n', &mut raw).await? == 0 {
            return if raw.is_empty() {
                Ok(None)
            } else {
                Err(invalid("connection closed inside a request head"))
            };
        }
        if raw.len() > MAX_HEAD {
            return Err(invalid("request head too long"));
        }
        let line = &raw[start..];
        if line == b"\r\n" || line == b"\n" {
            if start == 0 {
                // An empty line before the request line is ignored (RFC 9112 2.2).
                raw.clear();
                continue;
            }
            break;
        }
    }
    let text = std::str::from_utf8(&raw).map_err(|_| invalid("head is not UTF-8"))?;
    let mut lines = text.lines();
    let mut parts = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("malformed request line"));
    };
    let mut close = version == "HTTP/1.0";
    let mut length = 0usize;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = value.parse().map_err(|_| invalid("bad content-length"))?;
            }
            "transfer-encoding" => chunked = value.to_ascii_lowercase().ends_with("chunked"),
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.contains("close") {
                    close = true;
                } else if v.contains("keep-alive") {
                    close = false;
                }
            }
            _ => {}
        }
    }
    if chunked {
        discard_chunked(io).await?;
    } else {
        discard(io, length).await?;
    }
    Ok(Some(Head {
        method: method.to_string(),
        path: path.to_string(),
        close,
    }))
}

async fn discard(io: &mut BufReader<TcpStream>, n: usize) -> io::Result<()> {
    let copied = tokio::io::copy(&mut (&mut *io).take(n as u64), &mut tokio::io::sink()).await?;
    if copied < n as u64 {
        return Err(invalid("connection closed inside a request body"));
    }
    Ok(())
}

async fn discard_chunked(io: &mut BufReader<TcpStream>) -> io::Result<()> {
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await? == 0 {
            return Err(invalid("connection closed inside a chunked body"));
        }
        let size = line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size.trim(), 16).map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            // Trailers, up to the empty line.
            loop {
                line.clear();
                if io.read_line(&mut line).await? == 0 || line.trim().is_empty() {
                    return Ok(());
                }
            }
        }
        discard(io, size + 2).await?;
    }
}

async fn write_h1(
    io: &mut BufReader<TcpStream>,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    close: bool,
) -> io::Result<()> {
    let reason = hyper::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown");
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    io.write_all(head.as_bytes()).await?;
    io.write_all(body).await?;
    io.flush().await
}
