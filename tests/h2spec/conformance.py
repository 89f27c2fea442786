#!/usr/bin/env python3
"""HTTP/2 conformance cases in h2spec's classes, run against a listener.

An independent implementation drives the server: frames are written and
read with `hyperframe`, header blocks encoded and decoded with `hpack`
(Huffman-coded, indexed: the server's decoder must follow), and plain
exchanges run through the `h2` package's client state machine. Malformed
frames are written byte by byte.

Usage: conformance.py HOST:PORT [CASE-SUBSTRING]

Prints one JSON object per case: {"case", "expected", "got", "ok"}.
`expected` lists the answers RFC 9113 (and RFC 7541) allow; where the RFC
lets a server answer a stream error with a connection error, both are listed.
The upstream behind host `web` answers GET with its name, echoes bodies,
and waits `x-delay-ms` before answering.
"""

import json
import socket
import struct
import sys
import time

import h2.config
import h2.connection
import h2.events
import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
TIMEOUT = 3.0
(DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY,
 WINDOW_UPDATE, CONTINUATION) = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
CODES = {
    0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR",
    0x3: "FLOW_CONTROL_ERROR", 0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED",
    0x6: "FRAME_SIZE_ERROR", 0x7: "REFUSED_STREAM", 0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR", 0xa: "CONNECT_ERROR", 0xb: "ENHANCE_YOUR_CALM",
    0xc: "INADEQUATE_SECURITY", 0xd: "HTTP_1_1_REQUIRED",
}
PROBE = b"probe!!!"
GET = [(":method", "GET"), (":scheme", "http"), (":authority", "web"), (":path", "/")]
SLOW = GET + [("x-delay-ms", "3000")]
POST = [(":method", "POST"), (":scheme", "http"), (":authority", "web"), (":path", "/echo")]

# The test upstream answers at once and echoes a body as it streams: a request
# with a body asks it to hold its answer (x-delay-ms), so that no response head
# can overtake what is malformed in the body's frames.
HOLD = [("x-delay-ms", "1000")]


def raw(ty, flags, sid, payload=b""):
    """A frame, byte by byte (any length, type, flags)."""
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", ty, flags, sid) + payload


def literal(fields):
    """A header block of literals without indexing or Huffman coding (names
    as given, uppercase included)."""
    out = bytearray()
    for name, value in fields:
        out.append(0)
        for s in (name.encode(), value.encode()):
            assert len(s) < 127
            out.append(len(s))
            out += s
    return bytes(out)


def code(frame):
    return CODES.get(frame.error_code, hex(frame.error_code))


class Conn:
    def __init__(self, addr, settings=None, handshake=True):
        self.sock = socket.create_connection(addr, timeout=TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.block = bytearray()
        if handshake:
            self.send(PREFACE + SettingsFrame(0, settings=settings or {}).serialize())
            self.expect(lambda f: isinstance(f, SettingsFrame) and "ACK" not in f.flags)
            self.send(SettingsFrame(0, flags=["ACK"]).serialize())
            self.expect(lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags)

    def close(self):
        self.sock.close()

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            pass  # closed by the server: what it sent is still read

    def headers(self, sid, fields, end_stream=True, end_headers=True, encoded=None):
        flags = (["END_STREAM"] if end_stream else []) + (["END_HEADERS"] if end_headers else [])
        block = encoded if encoded is not None else self.enc.encode(fields)
        self.send(HeadersFrame(sid, data=block, flags=flags).serialize())

    def frame(self, deadline):
        """The next frame, None once the server closed, "timeout" after the deadline."""
        while True:
            if len(self.buf) >= 9:
                f, length = Frame.parse_frame_header(memoryview(bytes(self.buf[:9])))
                if len(self.buf) >= 9 + length:
                    f.parse_body(memoryview(bytes(self.buf[9:9 + length])))
                    del self.buf[:9 + length]
                    return f
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return "timeout"
            except OSError:
                return None
            if not data:
                return None
            self.buf += data

    def expect(self, pred):
        deadline = time.monotonic() + TIMEOUT
        while True:
            f = self.frame(deadline)
            if f is None or f == "timeout":
                raise RuntimeError(f"handshake: {f or 'closed'}")
            if pred(f):
                return f

    def status(self, f):
        """The :status of a response HEADERS (blocks in one frame)."""
        headers = dict(self.dec.decode(bytes(f.data)))
        return headers.get(":status", "?")

    def outcome(self, sid=None, probe=True, data=False):
        """What the server does next: a connection error (and whether it then
        closes), a stream error, a response (`:status`, with `data` its DATA
        frames' sizes), or nothing, which a PING answered shows."""
        if probe:
            self.send(PingFrame(0, opaque_data=PROBE).serialize())
        deadline = time.monotonic() + TIMEOUT
        sizes = []
        status = None
        while True:
            f = self.frame(deadline)
            if f is None:
                return "closed"
            if f == "timeout":
                return status or "no answer"
            if isinstance(f, GoAwayFrame):
                rest = time.monotonic() + 2
                while True:
                    g = self.frame(rest)
                    if g is None:
                        return f"GOAWAY({code(f)})"
                    if g == "timeout":
                        return f"GOAWAY({code(f)}), left open"
            if isinstance(f, RstStreamFrame):
                return f"RST_STREAM({code(f)})"
            if isinstance(f, HeadersFrame) and (sid is None or f.stream_id == sid):
                status = f":status {self.status(f)}"
                if not data or "END_STREAM" in f.flags:
                    return status
            if isinstance(f, DataFrame) and data and f.stream_id == sid:
                sizes.append(len(f.data))
                if "END_STREAM" in f.flags or len(sizes) == data:
                    return f"{status}, DATA {sizes}"
            if isinstance(f, PingFrame) and "ACK" in f.flags and f.opaque_data == PROBE:
                if status is None:
                    return "PING ACK"


CASES = []


def case(section, name, *expected):
    def register(fn):
        CASES.append((f"{section} {name}", list(expected), fn))
        return fn
    return register


def conn_error(code):
    return f"GOAWAY({code})"


def stream_or_conn(code):
    return (f"RST_STREAM({code})", f"GOAWAY({code})")


# 3.4/3.5 Starting HTTP/2, the connection preface

@case("3.4", "an invalid connection preface", conn_error("PROTOCOL_ERROR"), "closed")
def _(addr):
    c = Conn(addr, handshake=False)
    c.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
    return c.outcome(probe=False)


@case("3.4", "a first frame other than SETTINGS", conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr, handshake=False)
    c.send(PREFACE + PingFrame(0, opaque_data=b"12345678").serialize())
    return c.outcome(probe=False)


@case("3.4", "the h2 client: GET served", ":status 200")
def _(addr):
    return h2_exchange(addr, "GET", b"")


@case("3.4", "the h2 client: a POST body echoed", ":status 200, 70000 bytes echoed")
def _(addr):
    return h2_exchange(addr, "POST", bytes(range(256)) * 273 + b"x" * 112)


def h2_exchange(addr, method, body):
    """One exchange through the h2 package's client state machine."""
    sock = socket.create_connection(addr, timeout=TIMEOUT)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    sid = conn.get_next_available_stream_id()
    path = "/echo" if body else "/"
    conn.send_headers(sid, [(":method", method), (":scheme", "http"),
                            (":authority", "web"), (":path", path)], end_stream=not body)
    sent = 0
    status, got, done = None, bytearray(), False
    deadline = time.monotonic() + 10
    while not done and time.monotonic() < deadline:
        while sent < len(body):
            room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            if room <= 0:
                break
            piece = body[sent:sent + room]
            sent += len(piece)
            conn.send_data(sid, piece, end_stream=sent == len(body))
        sock.sendall(conn.data_to_send())
        data = sock.recv(65536)
        if not data:
            break
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                status = dict(ev.headers)[b":status"].decode()
            elif isinstance(ev, h2.events.DataReceived):
                got += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            elif isinstance(ev, h2.events.StreamEnded):
                done = True
            elif isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                return f"{type(ev).__name__} {ev.error_code!r}"
    sock.sendall(conn.data_to_send())
    sock.close()
    if not done:
        return f"incomplete: :status {status}, {len(got)} bytes"
    if body:
        return f":status {status}, {len(got)} bytes echoed" if bytes(got) == body else "body differs"
    return f":status {status}"


# 4.1 Frame format

@case("4.1", "a frame of an unknown type is ignored", "PING ACK")
def _(addr):
    c = Conn(addr)
    c.send(raw(0x20, 0xff, 0, b"whatever"))
    return c.outcome()


@case("4.1", "undefined flags on PING are ignored", "PING ACK")
def _(addr):
    c = Conn(addr)
    c.send(raw(PING, 0xfe, 0, PROBE))
    return c.outcome(probe=False)


@case("4.1", "the reserved bit of a stream id is ignored", ":status 200")
def _(addr):
    c = Conn(addr)
    c.send(raw(HEADERS, END_STREAM | END_HEADERS, 0x8000_0001, c.enc.encode(GET)))
    return c.outcome(sid=1, probe=False)


# 4.2 Frame size

@case("4.2", "DATA larger than SETTINGS_MAX_FRAME_SIZE", *stream_or_conn("FRAME_SIZE_ERROR"))
def _(addr):
    c = Conn(addr)
    c.headers(1, POST + HOLD, end_stream=False)
    c.send(raw(DATA, END_STREAM, 1, b"x" * 16_385))
    return c.outcome()


@case("4.2", "HEADERS larger than SETTINGS_MAX_FRAME_SIZE", conn_error("FRAME_SIZE_ERROR"))
def _(addr):
    c = Conn(addr)
    block = c.enc.encode(GET + [("x-big", "b" * 16_400)], huffman=False)
    c.send(raw(HEADERS, END_STREAM | END_HEADERS, 1, block))
    return c.outcome()


@case("4.2", "a frame of an unknown type larger than the maximum", conn_error("FRAME_SIZE_ERROR"))
def _(addr):
    c = Conn(addr)
    c.send(raw(0x20, 0, 0, b"x" * 16_385))
    return c.outcome()


# 4.3 Header compression (RFC 7541 cases as h2spec's hpack section has them)

def compression_case(name, block):
    @case("4.3", name, conn_error("COMPRESSION_ERROR"))
    def _(addr):
        c = Conn(addr)
        c.send(raw(HEADERS, END_STREAM | END_HEADERS, 1, block))
        return c.outcome()


compression_case("a literal without its length", b"\x40")
compression_case("index 0", literal(GET) + b"\x80")
compression_case("an index beyond the static and dynamic tables", literal(GET) + b"\xbe")
compression_case("an index far beyond the tables", literal(GET) + b"\xff\x80\x01")
compression_case("a table size update above SETTINGS_HEADER_TABLE_SIZE", b"\x3f\xe2\x1f" + literal(GET))
compression_case("a table size update after a field", literal(GET) + b"\x20")
# "x-h: " then a value of one byte Huffman-coded: 0xff = 8 bits of padding.
compression_case("Huffman padding longer than 7 bits", literal(GET) + b"\x00\x03x-h\x81\xff")
# "a" is 00011 (5 bits); padding of zeros instead of the EOS prefix (ones).
compression_case("Huffman padding that is not the EOS prefix", literal(GET) + b"\x00\x03x-h\x81\x18")
# The EOS symbol (30 ones) inside a string.
compression_case("the Huffman EOS symbol in a string", literal(GET) + b"\x00\x03x-h\x84\xff\xff\xff\xff")
compression_case("a string longer than the block", literal(GET) + b"\x00\x03x-h\x7f\x10ab")


@case("4.3", "a header block interrupted by another frame", conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    block = c.enc.encode(GET)
    c.send(raw(HEADERS, END_STREAM, 1, block[:2]))
    c.send(PriorityFrame(1, depends_on=0, stream_weight=16).serialize())
    c.send(raw(CONTINUATION, END_HEADERS, 1, block[2:]))
    return c.outcome()


# 5.1 Stream states

@case("5.1", "idle: DATA", conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.send(DataFrame(1, data=b"x", flags=["END_STREAM"]).serialize())
    return c.outcome()


@case("5.1", "idle: RST_STREAM", conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.send(RstStreamFrame(1, error_code=8).serialize())
    return c.outcome()


@case("5.1", "idle: WINDOW_UPDATE", conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.send(WindowUpdateFrame(1, window_increment=100).serialize())
    return c.outcome()


@case("5.1", "idle: CONTINUATION", conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.send(raw(CONTINUATION, END_HEADERS, 1, c.enc.encode(GET)))
    return c.outcome()


@case("5.1", "idle: PRIORITY is allowed", "PING ACK")
def _(addr):
    c = Conn(addr)
    c.send(PriorityFrame(3, depends_on=0, stream_weight=16).serialize())
    return c.outcome()


@case("5.1", "half-closed (remote): DATA", *stream_or_conn("STREAM_CLOSED"))
def _(addr):
    c = Conn(addr)
    c.headers(1, SLOW)
    c.send(DataFrame(1, data=b"x").serialize())
    return c.outcome()


@case("5.1", "half-closed (remote): HEADERS", *stream_or_conn("STREAM_CLOSED"))
def _(addr):
    c = Conn(addr)
    c.headers(1, SLOW)
    c.headers(1, [("x-trailer", "1")])
    return c.outcome()


@case("5.1", "half-closed (remote): CONTINUATION",
      *stream_or_conn("STREAM_CLOSED"), conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.headers(1, SLOW)
    c.send(raw(CONTINUATION, END_HEADERS, 1, c.enc.encode([("x-a", "1")])))
    return c.outcome()


@case("5.1", "closed by the client's RST_STREAM: DATA", *stream_or_conn("STREAM_CLOSED"))
def _(addr):
    c = Conn(addr)
    c.headers(1, POST, end_stream=False)
    c.send(RstStreamFrame(1, error_code=8).serialize())
    c.send(DataFrame(1, data=b"x").serialize())
    return c.outcome()


# RFC 9113 5.1 asks STREAM_CLOSED after a RST_STREAM, 5.1.1 PROTOCOL_ERROR for
# a stream id not above every one used; this server answers the latter.
@case("5.1", "closed by the client's RST_STREAM: HEADERS",
      *stream_or_conn("STREAM_CLOSED"), conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.headers(1, POST, end_stream=False)
    c.send(RstStreamFrame(1, error_code=8).serialize())
    c.headers(1, GET)
    return c.outcome()


@case("5.1", "closed by the client's RST_STREAM: CONTINUATION",
      *stream_or_conn("STREAM_CLOSED"), conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.headers(1, POST, end_stream=False)
    c.send(RstStreamFrame(1, error_code=8).serialize())
    c.send(raw(CONTINUATION, END_HEADERS, 1, c.enc.encode([("x-a", "1")])))
    return c.outcome()


@case("5.1", "closed: DATA", *stream_or_conn("STREAM_CLOSED"))
def _(addr):
    c = Conn(addr)
    c.headers(1, GET)
    c.outcome(sid=1, probe=False, data=1)
    c.send(DataFrame(1, data=b"x").serialize())
    return c.outcome()


@case("5.1", "closed: HEADERS (a stream id already used, 5.1.1)", conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.headers(1, GET)
    c.outcome(sid=1, probe=False, data=1)
    c.headers(1, GET)
    return c.outcome()


@case("5.1", "closed: WINDOW_UPDATE is allowed", "PING ACK")
def _(addr):
    c = Conn(addr)
    c.headers(1, GET)
    c.outcome(sid=1, probe=False, data=1)
    c.send(WindowUpdateFrame(1, window_increment=1).serialize())
    return c.outcome()


@case("5.1.1", "an even stream id", conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.headers(2, GET)
    return c.outcome()


@case("5.1.1", "a stream id lower than one used", conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.headers(5, GET)
    c.headers(3, GET)
    return c.outcome(sid=99)


# 5.3 Priority

@case("5.3.1", "PRIORITY on an idle stream depending on itself", *stream_or_conn("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.send(PriorityFrame(1, depends_on=1, stream_weight=16).serialize())
    return c.outcome()


@case("5.3.1", "HEADERS depending on its own stream", *stream_or_conn("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.send(HeadersFrame(1, data=c.enc.encode(GET), depends_on=1, stream_weight=16,
                        flags=["END_STREAM", "END_HEADERS", "PRIORITY"]).serialize())
    return c.outcome()


@case("5.3.1", "PRIORITY on an open stream depending on itself", *stream_or_conn("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.headers(1, SLOW)
    c.send(PriorityFrame(1, depends_on=1, stream_weight=16).serialize())
    return c.outcome()


# 5.5 Extending HTTP/2

@case("5.5", "an unknown frame in the middle of a header block", conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    block = c.enc.encode(GET)
    c.send(raw(HEADERS, END_STREAM, 1, block))
    c.send(raw(0x20, 0, 0, b"x"))
    c.send(raw(CONTINUATION, END_HEADERS, 1, b""))
    return c.outcome()


# 6.1 DATA

@case("6.1", "DATA on stream 0", conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.send(raw(DATA, END_STREAM, 0, b"x"))
    return c.outcome()


@case("6.1", "DATA with a pad length beyond the frame", conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.headers(1, POST + HOLD, end_stream=False)
    c.send(raw(DATA, END_STREAM | PADDED, 1, b"\x06abc"))
    return c.outcome()


@case("6.1", "padded DATA is echoed without its padding", ":status 200, DATA [3]")
def _(addr):
    c = Conn(addr)
    c.headers(1, POST + [("content-length", "3")], end_stream=False)
    c.send(raw(DATA, END_STREAM | PADDED, 1, b"\x04abc\0\0\0\0"))
    return c.outcome(sid=1, probe=False, data=1)


# 6.2 HEADERS

@case("6.2", "HEADERS on stream 0", conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.send(raw(HEADERS, END_STREAM | END_HEADERS, 0, c.enc.encode(GET)))
    return c.outcome()


@case("6.2", "HEADERS with a pad length beyond the frame", conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    block = c.enc.encode(GET)
    c.send(raw(HEADERS, END_STREAM | END_HEADERS | PADDED, 1, bytes([len(block) + 1]) + block))
    return c.outcome()


@case("6.2", "HEADERS without END_HEADERS, then PRIORITY", conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.headers(1, GET, end_headers=False)
    c.send(PriorityFrame(1, depends_on=0, stream_weight=16).serialize())
    return c.outcome()


@case("6.2", "HEADERS without END_HEADERS, then CONTINUATION on another stream",
      conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.headers(1, GET, end_headers=False)
    c.send(raw(CONTINUATION, END_HEADERS, 3, b""))
    return c.outcome()


# 6.3 PRIORITY

@case("6.3", "PRIORITY on stream 0", conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.send(raw(PRIORITY, 0, 0, b"\0\0\0\x01\x10"))
    return c.outcome()


@case("6.3", "PRIORITY of 4 bytes on an idle stream", *stream_or_conn("FRAME_SIZE_ERROR"))
def _(addr):
    c = Conn(addr)
    c.send(raw(PRIORITY, 0, 1, b"\0\0\0\x03"))
    return c.outcome()


@case("6.3", "PRIORITY of 6 bytes on an open stream", *stream_or_conn("FRAME_SIZE_ERROR"))
def _(addr):
    c = Conn(addr)
    c.headers(1, SLOW)
    c.send(raw(PRIORITY, 0, 1, b"\0\0\0\x03\x10\x00"))
    return c.outcome()


# 6.4 RST_STREAM

@case("6.4", "RST_STREAM on stream 0", conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.send(raw(RST_STREAM, 0, 0, b"\0\0\0\x08"))
    return c.outcome()


@case("6.4", "RST_STREAM of 3 bytes", conn_error("FRAME_SIZE_ERROR"))
def _(addr):
    c = Conn(addr)
    c.headers(1, SLOW)
    c.send(raw(RST_STREAM, 0, 1, b"\0\0\x08"))
    return c.outcome()


@case("6.4", "RST_STREAM ends an open stream", "PING ACK")
def _(addr):
    c = Conn(addr)
    c.headers(1, SLOW)
    c.send(RstStreamFrame(1, error_code=8).serialize())
    return c.outcome()


# 6.5 SETTINGS

def settings_case(name, payload, expected, flags=0, sid=0):
    @case("6.5", name, expected)
    def _(addr):
        c = Conn(addr)
        c.send(raw(SETTINGS, flags, sid, payload))
        return c.outcome()


settings_case("SETTINGS ACK with a payload", b"\0\x01\0\0\x10\0", conn_error("FRAME_SIZE_ERROR"), flags=ACK)
settings_case("SETTINGS on a stream", b"", conn_error("PROTOCOL_ERROR"), sid=1)
settings_case("SETTINGS of 3 bytes", b"\0\x01\0", conn_error("FRAME_SIZE_ERROR"))
settings_case("SETTINGS_ENABLE_PUSH of 2", b"\0\x02\0\0\0\x02", conn_error("PROTOCOL_ERROR"))
settings_case("SETTINGS_INITIAL_WINDOW_SIZE of 2^31", b"\0\x04\x80\0\0\0", conn_error("FLOW_CONTROL_ERROR"))
settings_case("SETTINGS_MAX_FRAME_SIZE of 16383", b"\0\x05\0\0\x3f\xff", conn_error("PROTOCOL_ERROR"))
settings_case("SETTINGS_MAX_FRAME_SIZE of 2^24", b"\0\x05\x01\0\0\0", conn_error("PROTOCOL_ERROR"))


@case("6.5.2", "an unknown setting is ignored and acknowledged", "SETTINGS ACK")
def _(addr):
    c = Conn(addr)
    c.send(raw(SETTINGS, 0, 0, b"\0\xff\0\0\0\x01"))
    f = c.expect(lambda f: isinstance(f, (SettingsFrame, GoAwayFrame)))
    return "SETTINGS ACK" if isinstance(f, SettingsFrame) and "ACK" in f.flags else repr(f)


@case("6.5.3", "SETTINGS is acknowledged", "SETTINGS ACK")
def _(addr):
    c = Conn(addr)
    c.send(SettingsFrame(0, settings={SettingsFrame.MAX_CONCURRENT_STREAMS: 10}).serialize())
    f = c.expect(lambda f: isinstance(f, (SettingsFrame, GoAwayFrame)))
    return "SETTINGS ACK" if isinstance(f, SettingsFrame) and "ACK" in f.flags else repr(f)


@case("6.5.3", "SETTINGS_HEADER_TABLE_SIZE of 0: the next block starts with a size update",
      "size update, :status 200")
def _(addr):
    c = Conn(addr)
    c.send(SettingsFrame(0, settings={SettingsFrame.HEADER_TABLE_SIZE: 0}).serialize())
    c.expect(lambda f: isinstance(f, SettingsFrame) and "ACK" in f.flags)
    c.headers(1, GET)
    f = c.expect(lambda f: isinstance(f, HeadersFrame))
    first = bytes(f.data)[:1]
    c.dec.header_table_size = 0
    return ("size update, " if first and first[0] & 0xe0 == 0x20 else "no size update, ") + \
        f":status {c.status(f)}"


# 6.7 PING

@case("6.7", "PING is answered with the same data", "PING ACK")
def _(addr):
    c = Conn(addr)
    return c.outcome()


@case("6.7", "a PING ACK is not answered", "PING ACK")
def _(addr):
    c = Conn(addr)
    c.send(raw(PING, ACK, 0, b"notprobe"))
    return c.outcome()


@case("6.7", "PING on a stream", conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.send(raw(PING, 0, 1, b"12345678"))
    return c.outcome()


@case("6.7", "PING of 7 bytes", conn_error("FRAME_SIZE_ERROR"))
def _(addr):
    c = Conn(addr)
    c.send(raw(PING, 0, 0, b"1234567"))
    return c.outcome(probe=False)


# 6.8 GOAWAY

@case("6.8", "GOAWAY on a stream", conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.send(raw(GOAWAY, 0, 1, b"\0\0\0\0\0\0\0\0"))
    return c.outcome()


@case("6.8", "GOAWAY of 7 bytes", conn_error("FRAME_SIZE_ERROR"))
def _(addr):
    c = Conn(addr)
    c.send(raw(GOAWAY, 0, 0, b"\0\0\0\0\0\0\0"))
    return c.outcome()


@case("6.8", "the client's GOAWAY: running streams finish, then the connection closes",
      ":status 200, closed")
def _(addr):
    c = Conn(addr)
    c.headers(1, GET + [("x-delay-ms", "200")])
    c.send(GoAwayFrame(0, last_stream_id=0, error_code=0).serialize())
    got = c.outcome(sid=1, probe=False, data=1)
    return f"{got.split(',')[0]}, {c.outcome(probe=False)}"


# 6.9 WINDOW_UPDATE and flow control

@case("6.9", "WINDOW_UPDATE of 0 on the connection", conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.send(raw(WINDOW_UPDATE, 0, 0, b"\0\0\0\0"))
    return c.outcome()


@case("6.9", "WINDOW_UPDATE of 0 on an open stream", *stream_or_conn("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.headers(1, SLOW)
    c.send(raw(WINDOW_UPDATE, 0, 1, b"\0\0\0\0"))
    return c.outcome()


@case("6.9", "WINDOW_UPDATE of 3 bytes", conn_error("FRAME_SIZE_ERROR"))
def _(addr):
    c = Conn(addr)
    c.send(raw(WINDOW_UPDATE, 0, 0, b"\0\0\x01"))
    return c.outcome()


@case("6.9.1", "the connection window pushed above 2^31-1", conn_error("FLOW_CONTROL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.send(WindowUpdateFrame(0, window_increment=2**31 - 1).serialize())
    return c.outcome()


@case("6.9.1", "a stream window pushed above 2^31-1", *stream_or_conn("FLOW_CONTROL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.headers(1, SLOW)
    c.send(WindowUpdateFrame(1, window_increment=2**31 - 1).serialize())
    return c.outcome()


@case("6.9.1", "a stream window of 1: DATA frames of 1 byte", ":status 200, DATA [1]")
def _(addr):
    c = Conn(addr, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 1})
    c.headers(1, GET)
    return c.outcome(sid=1, probe=False, data=1)


@case("6.9.2", "SETTINGS_INITIAL_WINDOW_SIZE raised after HEADERS: DATA follows",
      ":status 200, DATA [2]")
def _(addr):
    c = Conn(addr, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 0})
    c.headers(1, GET)
    c.expect(lambda f: isinstance(f, HeadersFrame))
    c.send(SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 2}).serialize())
    got = c.outcome(sid=1, probe=False, data=1)
    return ":status 200, " + got.split(", ", 1)[-1]


@case("6.9.2", "a window made negative by SETTINGS: DATA once it is positive again",
      "DATA [3], then DATA [2]")
def _(addr):
    c = Conn(addr, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 3})
    c.headers(1, POST + [("content-length", "10")], end_stream=False)
    c.send(DataFrame(1, data=b"0123456789", flags=["END_STREAM"]).serialize())
    first = c.expect(lambda f: isinstance(f, DataFrame))
    # The stream's window goes from 0 to -2, then to 2.
    c.send(SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 1}).serialize())
    c.send(WindowUpdateFrame(1, window_increment=4).serialize())
    second = c.expect(lambda f: isinstance(f, DataFrame))
    return f"DATA [{len(first.data)}], then DATA [{len(second.data)}]"


@case("6.9.2", "SETTINGS_INITIAL_WINDOW_SIZE pushing a stream window above 2^31-1",
      conn_error("FLOW_CONTROL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.headers(1, SLOW)
    c.send(WindowUpdateFrame(1, window_increment=2**31 - 1 - 65_535).serialize())
    c.send(SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 65_536}).serialize())
    return c.outcome()


# 6.10 CONTINUATION

@case("6.10", "a header block in HEADERS and two CONTINUATION frames", ":status 200")
def _(addr):
    c = Conn(addr)
    block = c.enc.encode(GET + [("x-long", "v" * 50)])
    c.send(raw(HEADERS, END_STREAM, 1, block[:5]))
    c.send(raw(CONTINUATION, 0, 1, block[5:20]))
    c.send(raw(CONTINUATION, END_HEADERS, 1, block[20:]))
    return c.outcome(sid=1, probe=False)


@case("6.10", "CONTINUATION after HEADERS with END_HEADERS", conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.headers(1, SLOW)
    c.send(raw(CONTINUATION, END_HEADERS, 1, c.enc.encode([("x-a", "1")])))
    return c.outcome()


@case("6.10", "CONTINUATION after CONTINUATION with END_HEADERS", conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    block = c.enc.encode(SLOW)
    c.send(raw(HEADERS, END_STREAM, 1, block))
    c.send(raw(CONTINUATION, END_HEADERS, 1, b""))
    c.send(raw(CONTINUATION, END_HEADERS, 1, b""))
    return c.outcome()


@case("6.10", "DATA where CONTINUATION is due", conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.headers(1, POST, end_stream=False, end_headers=False)
    c.send(DataFrame(1, data=b"x").serialize())
    return c.outcome()


@case("6.10", "CONTINUATION missing: a new HEADERS instead", conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.headers(1, GET, end_headers=False)
    c.headers(3, GET)
    return c.outcome()


@case("6.10", "CONTINUATION on stream 0", conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.headers(1, GET, end_headers=False)
    c.send(raw(CONTINUATION, END_HEADERS, 0, b""))
    return c.outcome()


@case("6.10", "a CONTINUATION flood", conn_error("ENHANCE_YOUR_CALM"), conn_error("PROTOCOL_ERROR"))
def _(addr):
    c = Conn(addr)
    c.send(raw(HEADERS, END_STREAM, 1, literal(GET)))
    filler = literal([("x-f", "f" * 100)]) * 150
    for _ in range(12):
        c.send(raw(CONTINUATION, 0, 1, filler))
    return c.outcome(probe=False)


# 8.1 HTTP message exchanges: malformed requests are stream errors




def malformed_case(section, name, fields, trailers=None, data=None, raw_block=False):
    if data is not None and not raw_block:
        fields = fields + HOLD

    @case(section, name, "RST_STREAM(PROTOCOL_ERROR)")
    def _(addr):
        c = Conn(addr)
        block = literal(fields) if raw_block else c.enc.encode(fields)
        end = trailers is None and data is None
        c.headers(1, None, end_stream=end, encoded=block)
        if data is not None:
            c.send(DataFrame(1, data=data, flags=[] if trailers else ["END_STREAM"]).serialize())
        if trailers is not None:
            c.headers(1, None, encoded=literal(trailers))
        return c.outcome()


malformed_case("8.2", "an uppercase field name", GET + [("X-Upper", "1")], raw_block=True)
malformed_case("8.2.1", "a field value with a leading space", GET + [("x-pad", " v")], raw_block=True)
malformed_case("8.2.1", "a field value with a trailing tab", GET + [("x-pad", "v\t")], raw_block=True)
malformed_case("8.2.2", "a connection-specific field", GET + [("connection", "keep-alive")])
malformed_case("8.2.2", "TE other than trailers", GET + [("te", "gzip")])
malformed_case("8.3", "a pseudo-header after a regular field", GET[:3] + [("accept", "*/*"), (":path", "/")])
malformed_case("8.3", "an unknown pseudo-header", GET + [(":foo", "bar")])
malformed_case("8.3", "a response pseudo-header in a request", GET + [(":status", "200")])
malformed_case("8.3", "a pseudo-header in trailers", POST, trailers=[(":path", "/x")], data=b"x")
malformed_case("8.3.1", "no :method", GET[1:])
malformed_case("8.3.1", "no :scheme", [GET[0]] + GET[2:])
malformed_case("8.3.1", "no :path", GET[:3])
malformed_case("8.3.1", "an empty :path", GET[:3] + [(":path", "")])
malformed_case("8.3.1", "a repeated :path", GET + [(":path", "/")])
malformed_case("8.1.1", "DATA longer than content-length", POST + [("content-length", "1")], data=b"abc")
malformed_case("8.1.1", "DATA shorter than content-length", POST + [("content-length", "9")], data=b"abc")


@case("8.1", "trailers without END_STREAM", "RST_STREAM(PROTOCOL_ERROR)")
def _(addr):
    c = Conn(addr)
    c.headers(1, POST + HOLD, end_stream=False)
    c.send(DataFrame(1, data=b"x").serialize())
    c.headers(1, [("x-trailer", "1")], end_stream=False)
    return c.outcome()


@case("8.1", "a body with trailers is echoed", ":status 200, DATA [3]")
def _(addr):
    c = Conn(addr)
    c.headers(1, POST, end_stream=False)
    c.send(DataFrame(1, data=b"abc").serialize())
    c.headers(1, [("x-trailer", "1")])
    return c.outcome(sid=1, probe=False, data=1)


def main():
    host, _, port = sys.argv[1].rpartition(":")
    addr = (host, int(port))
    only = sys.argv[2] if len(sys.argv) > 2 else ""
    for name, expected, fn in CASES:
        if only not in name:
            continue
        try:
            got = fn(addr)
        except Exception as e:  # a broken case is a failed case, named
            got = f"error: {type(e).__name__}: {e}"
        print(json.dumps({"case": name, "expected": expected, "got": got,
                          "ok": got in expected}), flush=True)


if __name__ == "__main__":
    main()
