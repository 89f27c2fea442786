#!/usr/bin/env python3
"""A small HTTP/1.1 upstream for the resilience benchmarks (bench/resilience):
one process per endpoint, so one can be killed, and an optional fixed delay
before every answer, so one can be slow.

    python3 bench/upstream.py --port 8001 [--delay-ms 20] [--name a]

Keep-alive, requests without bodies (a Content-Length body is read and
dropped), a fixed 64-byte answer after `--delay-ms`. `GET /__count` answers
the number of requests served so far (not counted itself), so the harness
can tell how the proxy shared the load. Python 3.11 standard library only;
asyncio with one protocol object per connection.

>>> heads(b"GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\nGET /__count HTTP/1.1\\r\\n\\r\\nGE")
(['/', '/__count'], b'GE')
>>> heads(b"POST /x HTTP/1.1\\r\\ncontent-length: 3\\r\\n\\r\\nabcGET")
(['/x'], b'GET')
"""

from __future__ import annotations

import argparse
import asyncio
import re

BODY = b"anymesh bench: the fixed upstream answers this 64-byte body. ok\n"
CL = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
SERVED = 0


def heads(buf: bytes) -> tuple[list[str], bytes]:
    """The paths of the complete requests at the start of `buf`, and what is
    left (an incomplete request). Bodies with a Content-Length are skipped."""
    out = []
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return out, buf
        head = buf[:end]
        m = CL.search(head)
        n = int(m.group(1)) if m else 0
        if len(buf) < end + 4 + n:
            return out, buf
        line = head.split(b"\r\n", 1)[0].split(b" ")
        out.append(line[1].decode("latin-1") if len(line) > 1 else "/")
        buf = buf[end + 4 + n:]


def answer(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


class Conn(asyncio.Protocol):
    def __init__(self, delay: float) -> None:
        self.delay, self.buf, self.tr = delay, b"", None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport) -> None:
        self.tr = transport

    def data_received(self, data: bytes) -> None:
        global SERVED
        reqs, self.buf = heads(self.buf + data)
        for path in reqs:
            if path == "/__count":
                self.tr.write(answer(f"{SERVED}\n".encode()))
                continue
            SERVED += 1
            if self.delay > 0:
                # every answer of a connection waits the same delay: order kept
                self.loop.call_later(self.delay, self.send)
            else:
                self.tr.write(answer(BODY))

    def send(self) -> None:
        if not self.tr.is_closing():
            self.tr.write(answer(BODY))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--name", default="")
    a = ap.parse_args()
    loop = asyncio.get_running_loop()
    srv = await loop.create_server(lambda: Conn(a.delay_ms / 1000), "127.0.0.1", a.port, backlog=1024)
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
