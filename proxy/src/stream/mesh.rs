//! Mutual TLS between mesh proxies, with the record layer in the connection's
//! own buffers.
//!
//! rustls makes the handshake (its unbuffered API, driven here over the
//! socket), checks the peer, issues and keeps session tickets, and derives
//! new traffic secrets on a key update ([`KernelConnection`], the interface
//! rustls offers for kernel TLS). Once the handshake is done, this module
//! seals and opens the TLS 1.3 records itself, with ring's AEADs: a write
//! seals the caller's bytes straight into the connection's write buffer, and
//! a read opens a record in place in its read buffer. That removes rustls's
//! per-record buffers, copies and allocations from the request path.
//!
//! Only TLS 1.3 is spoken (the mesh configs offer nothing else), so a record
//! is `header(5) || AEAD(plaintext || content type || zero padding)`, with the
//! header as additional data and the nonce the static IV XOR the record's
//! sequence number (RFC 8446 §5.2–5.3). After the handshake a record carries
//! application data, an alert (close_notify ends the stream, any other alert
//! fails it) or handshake messages: NewSessionTicket (kept by the client for
//! resumption) and KeyUpdate (the receiving keys change at once; if the peer
//! asks, this side answers with its own KeyUpdate and changes its sending
//! keys). This side updates its own sending keys well before AES-GCM's
//! confidentiality limit (RFC 8446 §5.5).
//!
//! The TLS 1.3 record rules this layer enforces are tested against rustls's
//! own buffered connections as peer (`tests.rs`): both directions, every
//! split of the bytes in the socket, key updates either way, tickets and
//! resumption, close_notify, and damaged or hostile records.

use std::future::poll_fn;
use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::pki_types::ServerName;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncodeTlsData, InsufficientSizeError, UnbufferedStatus,
};
use rustls::{ClientConfig, CommonState, ConnectionTrafficSecrets, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// The largest plaintext of one record (RFC 8446 §5.1).
const MAX_PLAINTEXT: usize = 16 * 1024;
/// The largest body of a protected record (§5.2): plaintext, content type,
/// padding and tag.
const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
const HEADER: usize = 5;
const TAG: usize = 16;
/// Records sealed by one write call at most (64 KiB of plaintext), so a
/// large write takes few system calls and the write buffer stays bounded.
const RECORDS_PER_WRITE: usize = 4;
/// What the read buffer asks the socket for at least.
const READ_CHUNK: usize = 8 * 1024;
/// Handshake bytes held at most while the handshake runs (a ClientHello is
/// refused above 16 KiB by the inbound listener before it gets here; a
/// certificate chain fits easily).
const MAX_HANDSHAKE_BUFFER: usize = 64 * 1024;
/// Post-handshake handshake messages held at most while incomplete.
const MAX_POST_HANDSHAKE: usize = 64 * 1024;
/// Records sent under one AES-GCM key before this side updates it: half of
/// RFC 8446 §5.5's limit of 2^24.5 full records.
const AES_GCM_RECORDS: u64 = 1 << 23;

const CT_ALERT: u8 = 21;
const CT_HANDSHAKE: u8 = 22;
const CT_APPLICATION_DATA: u8 = 23;
const HS_NEW_SESSION_TICKET: u8 = 4;
const HS_KEY_UPDATE: u8 = 24;

/// A mesh mTLS connection past its handshake, either side.
pub(crate) struct MeshTls {
    tcp: TcpStream,
    rx: Rx,
    tx: Tx,
    kernel: Kernel,
    /// Handshake messages received after the handshake, not yet whole.
    post_handshake: Vec<u8>,
}

enum Kernel {
    Server(KernelConnection<ServerConnectionData>),
    Client(KernelConnection<ClientConnectionData>),
}

impl Kernel {
    fn update_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Kernel::Server(k) => k.update_tx_secret(),
            Kernel::Client(k) => k.update_tx_secret(),
        }
    }

    fn update_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Kernel::Server(k) => k.update_rx_secret(),
            Kernel::Client(k) => k.update_rx_secret(),
        }
    }
}

/// One direction's key, IV and record sequence number.
struct Keys {
    key: LessSafeKey,
    iv: [u8; NONCE_LEN],
    seq: u64,
    /// Records this key may protect before it must be updated.
    limit: u64,
}

impl Keys {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> io::Result<Self> {
        let (alg, key, iv, limit) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => {
                (&aead::AES_128_GCM, key, iv, AES_GCM_RECORDS)
            }
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => {
                (&aead::AES_256_GCM, key, iv, AES_GCM_RECORDS)
            }
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&aead::CHACHA20_POLY1305, key, iv, u64::MAX)
            }
            _ => {
                return Err(invalid(
                    "the negotiated cipher suite is not one of TLS 1.3's AEADs",
                ))
            }
        };
        let key = UnboundKey::new(alg, key.as_ref())
            .map_err(|_| invalid("the negotiated traffic key has the wrong length"))?;
        let iv: [u8; NONCE_LEN] = iv
            .as_ref()
            .try_into()
            .map_err(|_| invalid("the negotiated IV has the wrong length"))?;
        Ok(Self {
            key: LessSafeKey::new(key),
            iv,
            seq,
            limit,
        })
    }

    /// The nonce of the next record; counts it.
    fn next_nonce(&mut self) -> io::Result<Nonce> {
        let mut nonce = self.iv;
        for (n, s) in nonce[NONCE_LEN - 8..]
            .iter_mut()
            .zip(self.seq.to_be_bytes())
        {
            *n ^= s;
        }
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or_else(|| invalid("the TLS record sequence number would wrap"))?;
        Ok(Nonce::assume_unique_for_key(nonce))
    }
}

/// The receiving direction: ciphertext as read, opened in place.
struct Rx {
    keys: Keys,
    /// Bytes read from the socket; `buf[start..]` is not opened yet.
    buf: Vec<u8>,
    start: usize,
    /// Opened application data not yet given to the reader.
    plain: Range<usize>,
    /// close_notify arrived, or the socket ended at a record boundary.
    eof: bool,
    /// A record failed: every later read fails too.
    failed: bool,
}

/// The sending direction: records sealed into `buf`, `buf[sent..]` not yet
/// taken by the socket.
struct Tx {
    keys: Keys,
    buf: Vec<u8>,
    sent: usize,
    closed: bool,
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// rustls's errors travel as the source of an `InvalidData` I/O error, so
/// that `PeerError::from_io` can read the reason.
fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// What the handshake driver needs from either side's connection.
trait Handshaking:
    std::ops::Deref<Target = rustls::unbuffered::UnbufferedConnectionCommon<Self::Data>>
{
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
}

impl Handshaking for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
}

impl Handshaking for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
}

/// Accepts a mesh mTLS connection whose first bytes (the ClientHello, read
/// by the listener's sniffing) are `first`. `inspect` reads the finished
/// handshake (ALPN, the peer's certificate) before rustls hands the keys
/// over.
pub(crate) async fn accept<T>(
    mut tcp: TcpStream,
    first: &[u8],
    config: Arc<ServerConfig>,
    inspect: impl FnOnce(&CommonState) -> T,
) -> io::Result<(MeshTls, T)> {
    let mut conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    let mut rx = Vec::with_capacity(first.len().max(READ_CHUNK));
    rx.extend_from_slice(first);
    let mut early = Vec::new();
    handshake(&mut tcp, &mut conn, &mut rx, &mut early).await?;
    let seen = inspect(&conn);
    let (secrets, kernel) = conn.dangerous_into_kernel_connection().map_err(tls_error)?;
    let tls = MeshTls::new(tcp, secrets, Kernel::Server(kernel), rx, early)?;
    Ok((tls, seen))
}

/// Connects mesh mTLS over `tcp` to `name`; `inspect` reads the finished
/// handshake (secure naming checks the peer there) and may refuse it.
pub(crate) async fn connect<T>(
    mut tcp: TcpStream,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    inspect: impl FnOnce(&CommonState) -> T,
) -> io::Result<(MeshTls, T)> {
    let mut conn = UnbufferedClientConnection::new(config, name).map_err(tls_error)?;
    let mut rx = Vec::with_capacity(READ_CHUNK);
    let mut early = Vec::new();
    handshake(&mut tcp, &mut conn, &mut rx, &mut early).await?;
    let seen = inspect(&conn);
    let (secrets, kernel) = conn.dangerous_into_kernel_connection().map_err(tls_error)?;
    let tls = MeshTls::new(tcp, secrets, Kernel::Client(kernel), rx, early)?;
    Ok((tls, seen))
}

/// Drives rustls through the handshake: what it encodes is sent, what the
/// socket brings is given to it, until it may send application data.
/// Application data that arrived with the handshake's last flight is moved
/// to `early`; a partial record after it stays in `rx`.
async fn handshake<C: Handshaking + std::ops::DerefMut>(
    tcp: &mut TcpStream,
    conn: &mut C,
    rx: &mut Vec<u8>,
    early: &mut Vec<u8>,
) -> io::Result<()> {
    let mut out = Vec::new();
    loop {
        let UnbufferedStatus { discard, state } = conn.process(rx);
        let mut read = false;
        let mut done = false;
        let mut transmit = false;
        let state = match state {
            Ok(state) => state,
            Err(e) => {
                send_alert(tcp, conn).await;
                return Err(tls_error(e));
            }
        };
        match state {
            ConnectionState::EncodeTlsData(mut e) => encode(&mut e, &mut out)?,
            ConnectionState::TransmitTlsData(t) => {
                // Sent below, before rustls is asked for anything else.
                t.done();
                transmit = true;
            }
            ConnectionState::BlockedHandshake => read = true,
            ConnectionState::WriteTraffic(_) => done = true,
            ConnectionState::ReadTraffic(mut r) => {
                while let Some(record) = r.next_record() {
                    let record = record.map_err(tls_error)?;
                    if early.len() + record.payload.len() > MAX_HANDSHAKE_BUFFER {
                        return Err(invalid("too much application data with the TLS handshake"));
                    }
                    early.extend_from_slice(record.payload);
                }
            }
            ConnectionState::PeerClosed | ConnectionState::Closed => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the TLS session during the handshake",
                ))
            }
            other => {
                return Err(invalid(format!(
                    "unexpected TLS state in the handshake: {other:?}"
                )))
            }
        }
        rx.drain(..discard);
        if !out.is_empty() && (transmit || read || done) {
            tcp.write_all(&out).await?;
            out.clear();
        }
        if done {
            return Ok(());
        }
        if read {
            if rx.len() >= MAX_HANDSHAKE_BUFFER {
                return Err(invalid(
                    "the TLS handshake sent more than 64 KiB without progress",
                ));
            }
            rx.reserve(READ_CHUNK);
            let n = tokio::io::AsyncReadExt::read_buf(tcp, rx).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                ));
            }
        }
    }
}

/// After a handshake error rustls has queued an alert saying why (a bad
/// certificate, an unknown CA...): it goes to the peer, best effort, so
/// the peer's logs name the reason rather than a closed connection.
async fn send_alert<C: Handshaking + std::ops::DerefMut>(tcp: &mut TcpStream, conn: &mut C) {
    let mut out = Vec::new();
    if let Ok(ConnectionState::EncodeTlsData(mut e)) = conn.process(&mut []).state {
        if encode(&mut e, &mut out).is_ok() {
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(1), tcp.write_all(&out)).await;
        }
    }
}

/// Encodes one handshake record rustls has for the peer at the end of `out`.
fn encode<Data>(e: &mut EncodeTlsData<'_, Data>, out: &mut Vec<u8>) -> io::Result<()> {
    let at = out.len();
    let mut room = 2048;
    loop {
        out.resize(at + room, 0);
        match e.encode(&mut out[at..]) {
            Ok(n) => {
                out.truncate(at + n);
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
                room = required_size;
            }
            Err(other) => {
                out.truncate(at);
                return Err(invalid(format!("TLS handshake record: {other}")));
            }
        }
    }
}

impl MeshTls {
    fn new(
        tcp: TcpStream,
        secrets: rustls::ExtractedSecrets,
        kernel: Kernel,
        rx: Vec<u8>,
        early: Vec<u8>,
    ) -> io::Result<Self> {
        let mut tls = Self {
            tcp,
            rx: Rx {
                keys: Keys::new(secrets.rx)?,
                buf: rx,
                start: 0,
                plain: 0..0,
                eof: false,
                failed: false,
            },
            tx: Tx {
                keys: Keys::new(secrets.tx)?,
                buf: Vec::new(),
                sent: 0,
                closed: false,
            },
            kernel,
            post_handshake: Vec::new(),
        };
        if !early.is_empty() {
            // Rare: data that came in the handshake's last flight goes in
            // front of what follows, as plaintext already opened.
            let rest = std::mem::take(&mut tls.rx.buf);
            tls.rx.buf = early;
            tls.rx.plain = 0..tls.rx.buf.len();
            tls.rx.start = tls.rx.buf.len();
            tls.rx.buf.extend_from_slice(&rest);
        }
        Ok(tls)
    }

    /// Test hook: update the sending key after `records` more records.
    #[cfg(test)]
    pub(crate) fn update_key_after(&mut self, records: u64) {
        self.tx.keys.limit = self.tx.keys.seq + records;
    }

    /// Whether a read would return at once (bytes or the end) without
    /// touching the socket.
    pub(crate) fn has_plaintext(&self) -> bool {
        !self.rx.plain.is_empty() || self.rx.eof
    }

    /// Pushes sealed records out until none is left.
    pub(crate) fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.tx.sent < self.tx.buf.len() {
            match Pin::new(&mut self.tcp).poll_write(cx, &self.tx.buf[self.tx.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.tx.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.tx.buf.clear();
        self.tx.sent = 0;
        if self.tx.buf.capacity() > 4 * (MAX_PLAINTEXT + HEADER + TAG + 1) {
            self.tx.buf.shrink_to(MAX_PLAINTEXT + HEADER + TAG + 1);
        }
        Poll::Ready(Ok(()))
    }

    /// Seals one record of content type `ct` holding `parts`' bytes (at most
    /// [`MAX_PLAINTEXT`] in all) at the end of the write buffer, then
    /// updates the sending key if it has protected enough records.
    fn seal(&mut self, ct: u8, parts: &[&[u8]]) -> io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        debug_assert!(len <= MAX_PLAINTEXT);
        let body = len + 1 + TAG;
        let at = self.tx.buf.len();
        self.tx.buf.reserve(HEADER + body);
        let header = [CT_APPLICATION_DATA, 3, 3, (body >> 8) as u8, body as u8];
        self.tx.buf.extend_from_slice(&header);
        for p in parts {
            self.tx.buf.extend_from_slice(p);
        }
        self.tx.buf.push(ct);
        let nonce = self.tx.keys.next_nonce()?;
        let tag = self
            .tx
            .keys
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(header), &mut self.tx.buf[at + HEADER..])
            .map_err(|_| invalid("sealing a TLS record failed"))?;
        self.tx.buf.extend_from_slice(tag.as_ref());
        if self.tx.keys.seq >= self.tx.keys.limit {
            self.update_tx_key()?;
        }
        Ok(())
    }

    /// Sends KeyUpdate (under the old key) and switches to the next key.
    fn update_tx_key(&mut self) -> io::Result<()> {
        // update_not_requested: the peer updates its own keys on its own.
        let msg = [HS_KEY_UPDATE, 0, 0, 1, 0];
        // Seal under the old key without recursing into another update.
        let limit = std::mem::replace(&mut self.tx.keys.limit, u64::MAX);
        let sealed = self.seal(CT_HANDSHAKE, &[&msg]);
        self.tx.keys.limit = limit;
        sealed?;
        self.tx.keys = Keys::new(self.kernel.update_tx().map_err(tls_error)?)?;
        Ok(())
    }

    /// Seals up to [`RECORDS_PER_WRITE`] records of application data from
    /// `bufs`, gathering the slices so that small ones share a record;
    /// returns how many bytes were taken.
    fn seal_data(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut taken = 0;
        let mut slices = bufs.iter().map(|b| &**b).filter(|b| !b.is_empty());
        let mut pending: Option<&[u8]> = slices.next();
        for _ in 0..RECORDS_PER_WRITE {
            let mut parts: smallvec::SmallVec<[&[u8]; 8]> = smallvec::SmallVec::new();
            let mut room = MAX_PLAINTEXT;
            while room > 0 {
                let Some(s) = pending else { break };
                if s.len() <= room {
                    parts.push(s);
                    room -= s.len();
                    pending = slices.next();
                } else {
                    parts.push(&s[..room]);
                    pending = Some(&s[room..]);
                    room = 0;
                }
            }
            if parts.is_empty() {
                break;
            }
            self.seal(CT_APPLICATION_DATA, &parts)?;
            taken += MAX_PLAINTEXT - room;
            if pending.is_none() {
                break;
            }
        }
        Ok(taken)
    }

    fn poll_write_vectored(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // What is still buffered goes first: the buffer holds one write's
        // records at most.
        std::task::ready!(self.poll_send(cx))?;
        if self.tx.closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after the TLS session was closed",
            )));
        }
        let n = self.seal_data(bufs)?;
        // Out at once what the socket takes; the rest goes with the next
        // write, flush or read.
        if let Poll::Ready(Err(e)) = self.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.tx.closed {
            std::task::ready!(self.poll_send(cx))?;
            // close_notify, a warning-level alert.
            self.seal(CT_ALERT, &[&[1, 0]])?;
            self.tx.closed = true;
        }
        std::task::ready!(self.poll_send(cx))?;
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    /// Makes opened application data available, or the end: opens the
    /// records already read, reading from the socket when none is whole.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Whoever waits for the peer pushes out what is still buffered
        // first: the peer may be waiting for it.
        if self.tx.sent < self.tx.buf.len() {
            if let Poll::Ready(Err(e)) = self.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
        }
        loop {
            if self.has_plaintext() {
                return Poll::Ready(Ok(()));
            }
            if self.rx.failed {
                return Poll::Ready(Err(invalid("the TLS session failed earlier")));
            }
            match self.open_next() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    self.rx.failed = true;
                    return Poll::Ready(Err(e));
                }
            }
            std::task::ready!(self.poll_read_socket(cx))?;
        }
    }

    /// Reads what the socket has into the read buffer; at the end of the
    /// stream, a record boundary is the end and a partial record an error.
    fn poll_read_socket(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let rx = &mut self.rx;
        if rx.start > 0 {
            // Everything before `start` is consumed (no plaintext is
            // pending when the socket is read).
            rx.buf.drain(..rx.start);
            rx.start = 0;
            rx.plain = 0..0;
        }
        let need = if rx.buf.len() >= HEADER {
            HEADER + usize::from(u16::from_be_bytes([rx.buf[3], rx.buf[4]]))
        } else {
            HEADER
        };
        let want = need.max(rx.buf.len() + READ_CHUNK);
        if rx.buf.capacity() < want {
            rx.buf.reserve(want - rx.buf.len());
        }
        let n = loop {
            std::task::ready!(self.tcp.poll_read_ready(cx))?;
            match self.tcp.try_read_buf(&mut rx.buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        };
        if n == 0 {
            if rx.buf.is_empty() {
                rx.eof = true;
            } else {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection inside a TLS record",
                )));
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Opens the next whole record in the read buffer, if there is one
    /// (`Ok(false)`: more bytes are needed). Application data becomes
    /// `plain`; alerts and handshake messages are acted on.
    fn open_next(&mut self) -> io::Result<bool> {
        let rx = &mut self.rx;
        let avail = &rx.buf[rx.start..];
        if avail.len() < HEADER {
            return Ok(false);
        }
        let header: [u8; HEADER] = [avail[0], avail[1], avail[2], avail[3], avail[4]];
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if header[0] != CT_APPLICATION_DATA {
            return Err(invalid(format!(
                "a TLS record of content type {} arrived after the handshake (TLS 1.3 protects every record)",
                header[0]
            )));
        }
        if header[1] != 3 || header[2] != 3 {
            return Err(invalid(format!(
                "a TLS record with version {}.{} (TLS 1.3 records say 3.3)",
                header[1], header[2]
            )));
        }
        if len > MAX_CIPHERTEXT {
            return Err(invalid(format!(
                "record overflow: a TLS record of {len} bytes (at most {MAX_CIPHERTEXT})"
            )));
        }
        if len < TAG + 1 {
            return Err(invalid(format!("a TLS record of {len} bytes is too short")));
        }
        if avail.len() < HEADER + len {
            return Ok(false);
        }
        let body = rx.start + HEADER..rx.start + HEADER + len;
        rx.start = body.end;
        let nonce = rx.keys.next_nonce()?;
        let opened = rx
            .keys
            .key
            .open_in_place(nonce, Aad::from(header), &mut rx.buf[body.clone()])
            .map_err(|_| invalid("bad record MAC: a TLS record failed to decrypt"))?;
        // The content type is the last byte that is not padding.
        let Some(typed) = opened.iter().rposition(|&b| b != 0) else {
            return Err(invalid("a TLS record with no content type (all padding)"));
        };
        let ct = opened[typed];
        let plain = body.start..body.start + typed;
        match ct {
            CT_APPLICATION_DATA => {
                if plain.is_empty() {
                    return Ok(true);
                }
                if !self.post_handshake.is_empty() {
                    return Err(invalid(
                        "application data inside a fragmented handshake message",
                    ));
                }
                rx.plain = plain;
                Ok(true)
            }
            CT_ALERT => self.alert(plain),
            CT_HANDSHAKE => self.handshake_message(plain),
            other => Err(invalid(format!(
                "unexpected TLS message of content type {other} after the handshake"
            ))),
        }
    }

    fn alert(&mut self, body: Range<usize>) -> io::Result<bool> {
        let alert = &self.rx.buf[body];
        match alert {
            // close_notify: the peer sends no more.
            [_, 0] => {
                self.rx.eof = true;
                Ok(true)
            }
            // user_canceled is followed by close_notify.
            [_, 90] => Ok(true),
            [_, desc] => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                format!("the peer sent TLS alert {desc}"),
            )),
            _ => Err(invalid("a malformed TLS alert")),
        }
    }

    fn handshake_message(&mut self, body: Range<usize>) -> io::Result<bool> {
        if self.post_handshake.len() + body.len() > MAX_POST_HANDSHAKE {
            return Err(invalid("a post-handshake TLS message over 64 KiB"));
        }
        self.post_handshake.extend_from_slice(&self.rx.buf[body]);
        loop {
            let msg = &self.post_handshake;
            if msg.len() < 4 {
                return Ok(true);
            }
            let len = u32::from_be_bytes([0, msg[1], msg[2], msg[3]]) as usize;
            if msg.len() < 4 + len {
                return Ok(true);
            }
            let typ = msg[0];
            let payload = msg[4..4 + len].to_vec();
            self.post_handshake.drain(..4 + len);
            match (typ, &mut self.kernel) {
                (HS_NEW_SESSION_TICKET, Kernel::Client(k)) => {
                    k.handle_new_session_ticket(&payload).map_err(tls_error)?;
                }
                (HS_KEY_UPDATE, _) => {
                    let requested = match payload[..] {
                        [0] => false,
                        [1] => true,
                        _ => return Err(invalid("a malformed TLS KeyUpdate")),
                    };
                    if !self.post_handshake.is_empty() {
                        return Err(invalid("a TLS KeyUpdate not at the end of its record"));
                    }
                    self.rx.keys = Keys::new(self.kernel.update_rx().map_err(tls_error)?)?;
                    if requested && !self.tx.closed {
                        self.update_tx_key()?;
                    }
                }
                (typ, _) => {
                    return Err(invalid(format!(
                        "unexpected TLS handshake message {typ} after the handshake"
                    )))
                }
            }
        }
    }

    /// Copies opened application data into `out`.
    fn take_plain(&mut self, out: &mut ReadBuf<'_>) {
        let rx = &mut self.rx;
        let n = rx.plain.len().min(out.remaining());
        out.put_slice(&rx.buf[rx.plain.start..rx.plain.start + n]);
        rx.plain.start += n;
        if rx.plain.is_empty() && rx.start == rx.buf.len() {
            rx.buf.clear();
            rx.start = 0;
            rx.plain = 0..0;
        }
    }

    pub(crate) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_fill(cx))?;
        self.take_plain(out);
        Poll::Ready(Ok(()))
    }

    /// Waits until a read would return something.
    pub(crate) async fn readable(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_fill(cx)).await
    }
}

impl AsyncRead for MeshTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        MeshTls::poll_read(self.get_mut(), cx, buf)
    }
}

impl AsyncWrite for MeshTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        MeshTls::poll_write_vectored(self.get_mut(), cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        MeshTls::poll_write_vectored(self.get_mut(), cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        MeshTls::poll_shutdown(self.get_mut(), cx)
    }
}

#[cfg(test)]
mod tests;
