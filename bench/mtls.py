#!/usr/bin/env python3
"""The sidecar-pair benchmark of issue 21 (docs/performance.md, "Security (mutual TLS)").

    bench/mtls              # 4 rounds: wrk 5 s, oha 5 s at 1,000 and 5,000 req/s, new connections 5 s
    bench/mtls --quick      # smoke run: 1 round, 1 s per cell (CI-sized, about 25 s)
    bench/mtls --callgrind  # instead: instructions per request of each anymesh side, telemetry off and on
    bench/mtls --help       # every option

client -> proxy A -> proxy B -> app, side by side in one run:

- `anymesh-plain`: A's file registry lists the app's endpoint as B's
  inbound listener (127.0.0.1:<B inbound>) with no mesh metadata, so A
  speaks plaintext HTTP/1.1 to B, whose inbound listener (PERMISSIVE, the
  default without a PeerAuthentication) routes a plaintext connection to
  its workload's first port, the app. B is configured exactly as in
  `anymesh-mtls` (identity and all).
- `anymesh-mtls`: A's registry lists the app's endpoint (127.0.0.1:<app>)
  with `mesh: {port: <B inbound>, service_account: b}`: auto mTLS (ALPN
  `anymesh-http/1.1`, HTTP/1.1 inside), B's identity checked against
  `spiffe://cluster.local/ns/default/sa/b`.
- `envoy-mtls`: two Envoys (`--concurrency 1`), A with an
  UpstreamTlsContext presenting A's certificate and checking B's URI SAN
  (as Istio configures a sidecar's outbound cluster), B with a
  DownstreamTlsContext requiring a client certificate from the same CA,
  forwarding to the app. They use the very certificates the anymesh pair
  got from the CA.
- `anymesh-mtls-telemetry` (issue 22): the `anymesh-mtls` pair plus
  `telemetry:` in both proxies' anymesh.yaml: an access log in Istio's TEXT
  format to a file in the run's temp dir (a/access.log, b/access.log) and
  1 % tracing to the harness's Zipkin sink. Istio's standard metrics
  (`istio_requests_total` and the histograms, both sides) cannot be turned
  off: they are in `anymesh-mtls` too, so this pair's cost over
  `anymesh-mtls` is the access log's and the tracer's.
- `envoy-mtls-telemetry`: the `envoy-mtls` pair plus, in both Envoys' HTTP
  connection managers, Envoy's file access logger with Istio's TEXT format
  string (ISTIO_TEXT_FORMAT) and Envoy's Zipkin tracer (HTTP_JSON to
  /api/v2/spans, random sampling 1 %, 128-bit trace ids) to the same kind of
  sink; listeners marked OUTBOUND (A) and INBOUND (B) as Istio marks them.
  Envoy's own stats are always on (in `envoy-mtls` too); Istio's stats
  filter (istio_requests_total) is not part of Envoy's release, so this pair
  does less metrics work than an Istio sidecar does.
- `direct`: the load tool straight to the app (the reference for the added
  latency).

The Zipkin sink (ZipkinSink, one per telemetry pair) is a threaded
http.server in the harness process answering 202 to POST /api/v2/spans and
counting the spans by kind. After the rounds the harness checks that each
telemetry pair wrote access-log lines on both sides and that spans arrived
(waiting up to 12 s for the exporters' 5 s batch timers); the counts, with
anymesh's own access-log and span counters (dropped lines would make the
access log look cheaper than it is), are in the JSON's "telemetry_check".
--no-telemetry leaves the two telemetry pairs out.

The certificates come from the real path: `anymesh ca init`, one
`anymesh ca token` per identity (`spiffe://cluster.local/ns/default/sa/a`
and `.../sa/b`), `anymesh ca serve` on loopback; every anymesh proxy has
`identity: {ca: ...}` and joins with its token; Envoy reads the key and
chain the anymesh proxies persisted (state_dir/svid.pem, split in two).

Per round, in a rotated order (bench/run.py's Williams square): wrk -t1
-c32 (throughput, CPU per request of A and of B from /proc schedstat, RSS of
each sampled every 100 ms) and oha at fixed rates (-c32,
--latency-correction: p50/p99, added = the pair's minus direct's in the same
round). Then, per mTLS pair, full handshakes against B's listener: client
processes (Python's ssl, A's certificate, ALPN `anymesh-http/1.1`, the
server name `inbound-<app port>.anymesh`, a new connection and no session
resumption per request: GET with `Connection: close`), counting completed
exchanges and B's CPU time: handshakes per second per core = handshakes /
B's CPU seconds. The app is bench/run.py's fixed nginx upstream (64-byte
body). Every proxy has one worker thread.

Prints a markdown table (medians over rounds; ratios) and writes the raw
figures as JSON (--out, default bench/results/mtls-<UTC time>.json).
Python 3.11 standard library only; the tools are bench/run.py's (wrk, oha,
nginx, Envoy 1.40 from target/bench-tools). It measures
target/release/anymesh unless --anymesh says otherwise; it never builds.
The exit status is non-zero only when something fails to start, dies, or a
tool fails; never because of the numbers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

sys.dont_write_bytecode = True  # no __pycache__ left in bench/
sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as R  # noqa: E402  (the harness's processes, tools and parsers)

HOST = "web"
TRUST_DOMAIN = "cluster.local"
PAIRS = ["anymesh-plain", "anymesh-mtls", "envoy-mtls"]
TELEMETRY_PAIRS = ["anymesh-mtls-telemetry", "envoy-mtls-telemetry"]
CONTENDERS = ["direct"] + PAIRS
ALPN_H1 = "anymesh-http/1.1"
# Istio's EnvoyTextLogFormat (pilot/pkg/model/telemetry_logging.go), its
# default for meshConfig.accessLogEncoding TEXT; anymesh's `format: text`
# writes the same fields (telemetry/src/access_log/format.rs).
ISTIO_TEXT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
    '%RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% '
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" '
    '"%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% '
    '%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n')


def spiffe(sa: str) -> str:
    """Istio's identity of service account `sa` in namespace default.

    >>> spiffe("b")
    'spiffe://cluster.local/ns/default/sa/b'
    """
    return f"spiffe://{TRUST_DOMAIN}/ns/default/sa/{sa}"


def split_pem(text: str) -> tuple[str, str]:
    """(certificates, private key) of a PEM file holding both, in order.

    >>> c, k = split_pem("-----BEGIN PRIVATE KEY-----\\nk\\n-----END PRIVATE KEY-----\\n"
    ...                  "-----BEGIN CERTIFICATE-----\\nc\\n-----END CERTIFICATE-----\\n")
    >>> c.splitlines()[1], k.splitlines()[1]
    ('c', 'k')
    """
    certs, keys = [], []
    block: list[str] = []
    for line in text.splitlines():
        if line.startswith("-----BEGIN "):
            block = [line]
        elif block:
            block.append(line)
            if line.startswith("-----END "):
                (keys if "PRIVATE KEY" in block[0] else certs).append("\n".join(block) + "\n")
                block = []
    if not certs or not keys:
        raise R.BenchError("a PEM file without both a certificate and a private key")
    return "".join(certs), "".join(keys)


def pct(a: float, b: float) -> str:
    """The change from b to a, in percent.

    >>> pct(103.0, 100.0), pct(1.0, 0.0)
    ('+3.0 %', '-')
    """
    return f"{(a - b) * 100 / b:+.1f} %" if b else "-"


def med(xs: list) -> float | None:
    """The median of the values that are not None.

    >>> med([3, None, 1, 2]), med([None])
    (2, None)
    """
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(v: float | None, digits: int = 0) -> str:
    """A number for the table.

    >>> fmt(12345.678), fmt(1.234, 2), fmt(None)
    ('12,346', '1.23', '-')
    """
    return "-" if v is None else f"{v:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, None when either is missing or b is 0.

    >>> ratio(5.0, 2.0), ratio(1.0, 0.0), ratio(None, 1.0)
    (2.5, None, None)
    """
    return a / b if a is not None and b else None


# --------------------------------------------------------------------------
# the CA


class Ca:
    """`anymesh ca` in a state directory, serving on loopback."""

    def __init__(self, binary: str, d: Path):
        self.binary, self.dir = binary, d / "ca"
        self.port = R.free_ports(1)[0]
        self.url = f"https://127.0.0.1:{self.port}"
        self.bundle = d / "ca-bundle.pem"
        self.cli(["init", "--dir", str(self.dir), "--trust-domain", TRUST_DOMAIN])
        self.bundle.write_text(self.cli(["bundle", "--dir", str(self.dir)]))
        log_path = d / "ca.log"
        p = R.PROCS.start([binary, "ca", "serve", "--dir", str(self.dir), "--listen", f"127.0.0.1:{self.port}",
                           "--san", "127.0.0.1"], log_path)
        self.srv = R.Server("anymesh ca", p, self.port, self.port, log_path)
        self.srv.wait_listening([self.port])

    def cli(self, args: list[str]) -> str:
        r = subprocess.run([self.binary, "ca", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise R.BenchError(f"anymesh ca {args[0]} failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout

    def token(self, sa: str, path: Path) -> None:
        path.write_text(self.cli(["token", "--dir", str(self.dir), "--identity", spiffe(sa), "--ttl", "1h"]).strip()
                        + "\n")
        os.chmod(path, 0o600)


# --------------------------------------------------------------------------
# the Zipkin sink


def count_spans(body: bytes) -> dict[str, int] | None:
    """Spans by kind in a Zipkin v2 JSON body; None when it is not a list of
    spans.

    >>> count_spans(b'[{"traceId": "1", "kind": "CLIENT"}, {"kind": "SERVER"}, {"kind": "CLIENT"}]')
    {'CLIENT': 2, 'SERVER': 1}
    >>> count_spans(b'{"x": 1}'), count_spans(b'not json'), count_spans(b'[1]')
    (None, None, None)
    """
    try:
        spans = json.loads(body)
    except ValueError:
        return None
    if not isinstance(spans, list) or not all(isinstance(x, dict) for x in spans):
        return None
    out: dict[str, int] = {}
    for x in spans:
        k = str(x.get("kind", "none"))
        out[k] = out.get(k, 0) + 1
    return out


def read_chunked(f, limit: int = 64 << 20) -> bytes:
    """An HTTP/1.1 chunked body from a binary file, trailers skipped; what
    came before a malformed chunk or past `limit` bytes.

    >>> import io
    >>> read_chunked(io.BytesIO(b"3\\r\\nabc\\r\\n2;x=y\\r\\nde\\r\\n0\\r\\n\\r\\n"))
    b'abcde'
    >>> read_chunked(io.BytesIO(b"zz\\r\\n"))
    b''
    """
    body = b""
    while True:
        try:
            n = int(f.readline(1024).split(b";", 1)[0].strip(), 16)
        except ValueError:
            return body
        if n == 0:
            break
        if len(body) + n > limit:
            return body
        body += f.read(n)
        f.readline(16)
    while f.readline(8192).strip():  # trailers, up to the empty line
        pass
    return body


class ZipkinSink:
    """A Zipkin v2 collector that only counts: 202 to POST /api/v2/spans
    (404 elsewhere, 400 to a body that is not a list of spans), on a
    loopback port, in threads of the harness process."""

    def __init__(self, name: str):
        import http.server

        sink = self
        self.name, self.spans, self.posts, self.bad = name, {}, 0, 0
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 (http.server's name)
                if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
                    body = read_chunked(self.rfile)  # Envoy's Zipkin reporter
                else:
                    n = int(self.headers.get("content-length") or 0)
                    body = self.rfile.read(n) if 0 < n <= 64 << 20 else b""
                counts = count_spans(body) if self.path.split("?")[0] == "/api/v2/spans" else None
                with sink.lock:
                    if counts is None:
                        sink.bad += 1
                    else:
                        sink.posts += 1
                        for k, v in counts.items():
                            sink.spans[k] = sink.spans.get(k, 0) + v
                code = 202 if counts is not None else (404 if not self.path.startswith("/api/v2/spans") else 400)
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True, name=f"zipkin {name}").start()

    def counts(self) -> dict:
        with self.lock:
            return {"posts": self.posts, "bad_posts": self.bad, "spans": dict(self.spans),
                    "spans_total": sum(self.spans.values())}


# --------------------------------------------------------------------------
# the proxies


class Pair:
    """Proxy A (the client's) and proxy B (the app's)."""

    def __init__(self, name: str, a: R.Server, b: R.Server, b_inbound: int, sink: ZipkinSink | None = None,
                 access_logs: tuple[Path, ...] = ()):
        self.name, self.a, self.b, self.b_inbound = name, a, b, b_inbound
        self.sink, self.access_logs = sink, access_logs
        self.traced = sink is not None

    @property
    def port(self) -> int:
        return self.a.h1_port

    def servers(self) -> list[R.Server]:
        return [self.a, self.b]

    def check_alive(self, when: str) -> None:
        for s in self.servers():
            s.check_alive(when)


class Direct:
    """The load tool straight to the app."""

    def __init__(self, app_port: int):
        self.name, self.port = "direct", app_port

    def servers(self) -> list[R.Server]:
        return []

    def check_alive(self, when: str) -> None:
        pass


def start_anymesh(binary: str, d: Path, name: str, services: str, extra: str, wrap: list[str] = ()) -> R.Server:
    out, admin = R.free_ports(2)
    d.mkdir(parents=True)
    (d / "services.yaml").write_text(services)
    (d / "anymesh.yaml").write_text(f"""listeners:
  outbound: 127.0.0.1:{out}
  admin: 127.0.0.1:{admin}
registries:
  - {{name: file, type: file, path: services.yaml}}
{extra}""")
    env = dict(os.environ, ANYMESH_LOG="warn")
    env.pop("ANYMESH_WORKERS", None)
    log_path = d / "stderr.log"
    p = R.PROCS.start([*wrap, binary, "proxy", "-c", str(d / "anymesh.yaml"), "--workers", "1"], log_path, env=env,
                      cwd=d)
    srv = R.Server(name, p, out, out, log_path, admin_port=admin)
    srv.wait_listening([admin, out], timeout=120.0 if wrap else 20.0)
    return srv


def identity_yaml(ca: Ca, d: Path, sa: str) -> str:
    d.mkdir(parents=True, exist_ok=True)
    ca.token(sa, d / f"join-token-{sa}")
    return f"""identity:
  ca:
    url: {ca.url}
    bundle: {ca.bundle}
    token_file: {d / f'join-token-{sa}'}
    state_dir: {d / f'identity-{sa}'}
"""


TELEMETRY_PARTS = ("access_log", "tracing")


def telemetry_yaml(d: Path, sink: ZipkinSink | None, parts: tuple[str, ...] = TELEMETRY_PARTS) -> str:
    """anymesh.yaml's telemetry key of a side in directory `d`: Istio's TEXT
    access log to d/access.log, 1 % tracing (Istio's default) to `sink`
    (`parts`: which of the two).

    >>> print(telemetry_yaml(Path("/t"), SimpleNamespace(url="http://127.0.0.1:9"), ("tracing",)), end="")
    telemetry:
      tracing: {sampling: 1, zipkin: 'http://127.0.0.1:9'}
    """
    if sink is None:
        return ""
    return "telemetry:\n" + "".join(
        {"access_log": f"  access_log: {{path: {d / 'access.log'}, format: text}}\n",
         "tracing": f"  tracing: {{sampling: 1, zipkin: '{sink.url}'}}\n"}[x] for x in parts)


def start_anymesh_pair(binary: str, tmp: Path, ca: Ca, app_port: int, mtls: bool, wrap: dict | None = None,
                       tag: str = "", sink: ZipkinSink | None = None,
                       parts: tuple[str, ...] = TELEMETRY_PARTS) -> Pair:
    """The pair; `wrap` puts a command (valgrind) in front of side "a" or
    "b"; with `sink`, access logs and tracing on both sides (mtls only)."""
    wrap = wrap or {}
    name = ("anymesh-mtls" if mtls else "anymesh-plain") + ("-telemetry" if sink else "")
    d = tmp / (name + tag)
    inbound = R.free_ports(1)[0]
    b = start_anymesh(binary, d / "b", f"{name} B", "services: []\n", identity_yaml(ca, d, "b")
                      + telemetry_yaml(d / "b", sink, parts) + f"""workloads:
  - name: b
    namespace: default
    service_account: b
    labels: {{app: b}}
    ports: [{{port: {app_port}, protocol: http}}]
inbound:
  listen: 127.0.0.1:{inbound}
""", wrap.get("b", []))
    b.wait_listening([inbound], timeout=120.0)
    if mtls:
        ep = f"{{address: 127.0.0.1, port: {app_port}, id: app, mesh: {{port: {inbound}, service_account: b}}}}"
    else:
        ep = f"{{address: 127.0.0.1, port: {inbound}, id: app-via-b}}"
    services = f"""services:
  - name: {HOST}
    ports: [{{name: http, port: 80, protocol: http}}]
    endpoints:
      - {ep}
"""
    a = start_anymesh(binary, d / "a", f"{name} A", services,
                      identity_yaml(ca, d, "a") + telemetry_yaml(d / "a", sink, parts), wrap.get("a", []))
    logs = (d / "a" / "access.log", d / "b" / "access.log") if sink and "access_log" in parts else ()
    pair = Pair(name, a, b, inbound, sink, logs)
    pair.traced = sink is not None and "tracing" in parts
    wait_answering(pair, 120.0 if wrap else 30.0)
    return pair


def envoy_tls_files(tmp: Path, mtls_pair_dir: Path) -> dict[str, Path]:
    """The anymesh mTLS pair's persisted SVIDs, as Envoy's separate chain and
    key files."""
    out = {}
    for sa in ("a", "b"):
        svid = mtls_pair_dir / f"identity-{sa}" / "svid.pem"
        if not svid.exists():
            raise R.BenchError(f"{svid} missing: the anymesh proxy did not persist its certificate")
        certs, key = split_pem(svid.read_text())
        (tmp / f"envoy-{sa}-chain.pem").write_text(certs)
        (tmp / f"envoy-{sa}-key.pem").write_text(key)
        os.chmod(tmp / f"envoy-{sa}-key.pem", 0o600)
        out[f"{sa}_chain"], out[f"{sa}_key"] = tmp / f"envoy-{sa}-chain.pem", tmp / f"envoy-{sa}-key.pem"
    return out


HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
FILE_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
ZIPKIN = "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig"


def envoy_telemetry(log_path: Path, sink: ZipkinSink) -> tuple[str, str]:
    """(the HTTP connection manager's access_log and tracing, the Zipkin
    collector's cluster): Istio's TEXT access log to a file and Istio's
    Zipkin settings (HTTP_JSON, 128-bit ids, 1 % random sampling)."""
    hcm = f"""                access_log:
                  - name: envoy.access_loggers.file
                    typed_config:
                      "@type": {FILE_LOG}
                      path: {log_path}
                      log_format:
                        text_format_source: {{inline_string: {json.dumps(ISTIO_TEXT_FORMAT)}}}
                tracing:
                  random_sampling: {{value: 1}}
                  provider:
                    name: envoy.tracers.zipkin
                    typed_config:
                      "@type": {ZIPKIN}
                      collector_cluster: zipkin
                      collector_endpoint: /api/v2/spans
                      collector_endpoint_version: HTTP_JSON
                      trace_id_128bit: true
                      shared_span_context: false
"""
    cluster = f"""    - name: zipkin
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: zipkin
        endpoints:
          - lb_endpoints:
              - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {sink.port}}}}}}}
"""
    return hcm, cluster


def envoy_yaml(listen: int, listener_tls: str, cluster_port: int, cluster_tls: str, hcm_extra: str = "",
               clusters_extra: str = "", direction: str = "") -> str:
    return f"""static_resources:
  listeners:
    - name: pair
      address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
{f"      traffic_direction: {direction}{chr(10)}" if direction else ""}      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": {HCM}
                stat_prefix: pair
                codec_type: AUTO
                route_config:
                  name: pair
                  virtual_hosts:
                    - name: web
                      domains: ["*"]
                      routes:
                        - match: {{prefix: "/"}}
                          route: {{cluster: next}}
{hcm_extra}                http_filters:
                  - name: envoy.filters.http.router
                    typed_config: {{"@type": {ROUTER}}}
{listener_tls}  clusters:
    - name: next
      type: STATIC
      connect_timeout: 5s
      load_assignment:
        cluster_name: next
        endpoints:
          - lb_endpoints:
              - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {cluster_port}}}}}}}
{cluster_tls}{clusters_extra}"""


def start_envoy(envoy: str, d: Path, name: str, conf: str, port: int) -> R.Server:
    d.mkdir(parents=True)
    (d / "envoy.yaml").write_text(conf)
    log_path = d / "stderr.log"
    # the node's cluster is the Zipkin spans' service name
    p = R.PROCS.start([envoy, "-c", str(d / "envoy.yaml"), "--concurrency", "1", "--disable-hot-restart",
                       "--log-level", "warn", "--service-cluster", name.replace(" ", "-"),
                       "--service-node", name.replace(" ", "-")], log_path, cwd=d)
    srv = R.Server(name, p, port, port, log_path)
    srv.wait_listening([port], timeout=30.0)
    return srv


def start_envoy_pair(envoy: str, tmp: Path, ca: Ca, files: dict[str, Path], app_port: int,
                     sink: ZipkinSink | None = None) -> Pair:
    """The Envoy pair; with `sink`, access logs and Zipkin tracing on both."""
    name = "envoy-mtls" + ("-telemetry" if sink else "")
    d = tmp / name
    a_port, b_port = R.free_ports(2)
    # B: TLS required, a client certificate from the mesh's CA required
    # (Istio's inbound STRICT filter chain, without Istio's ALPN matching)
    b_tls = f"""          transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": {DOWNSTREAM_TLS}
              require_client_certificate: true
              common_tls_context:
                tls_certificates:
                  - certificate_chain: {{filename: {files['b_chain']}}}
                    private_key: {{filename: {files['b_key']}}}
                validation_context:
                  trusted_ca: {{filename: {ca.bundle}}}
"""
    # A: TLS origination with A's certificate, B's identity checked (secure
    # naming: Istio's match_typed_subject_alt_names on the URI SAN)
    a_tls = f"""      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": {UPSTREAM_TLS}
          sni: inbound-{app_port}.anymesh
          common_tls_context:
            tls_certificates:
              - certificate_chain: {{filename: {files['a_chain']}}}
                private_key: {{filename: {files['a_key']}}}
            validation_context:
              trusted_ca: {{filename: {ca.bundle}}}
              match_typed_subject_alt_names:
                - san_type: URI
                  matcher: {{exact: "{spiffe('b')}"}}
"""
    tel: dict[str, tuple[str, str, str]] = {"a": ("", "", ""), "b": ("", "", "")}
    logs: tuple[Path, ...] = ()
    if sink:
        logs = (d / "a" / "access.log", d / "b" / "access.log")
        tel = {"a": (*envoy_telemetry(logs[0], sink), "OUTBOUND"), "b": (*envoy_telemetry(logs[1], sink), "INBOUND")}
    b = start_envoy(envoy, d / "b", f"{name} B", envoy_yaml(b_port, b_tls, app_port, "", *tel["b"]), b_port)
    a = start_envoy(envoy, d / "a", f"{name} A", envoy_yaml(a_port, "", b_port, a_tls, *tel["a"]), a_port)
    pair = Pair(name, a, b, b_port, sink, logs)
    wait_answering(pair)
    return pair


def wait_answering(pair: Pair, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        pair.check_alive("at start")
        try:
            st, body = R.http_get(pair.port, HOST)
            if st == 200 and body == R.BODY:
                return
        except OSError as e:
            st, body = 0, str(e)
        if time.monotonic() > deadline:
            raise R.BenchError(f"{pair.name}: GET / (Host: {HOST}) answers {st} {body[:200]!r}; the logs end:\n"
                               + "\n".join(R.log_tail(s.log_path) for s in pair.servers()))
        time.sleep(0.1)


def inbound_counts(srv: R.Server) -> dict[str, float]:
    """anymesh_inbound_connections_total by result, from B's /metrics."""
    out: dict[str, float] = {}
    try:
        text = R.http_get(srv.admin_port, "localhost", "/metrics")[1]
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith("anymesh_inbound_connections_total{"):
            key = line.split('result="', 1)[1].split('"', 1)[0]
            out[key] = float(line.rsplit(" ", 1)[1])
    return out


def count_lines(path: Path) -> int:
    """The newlines in a file (0 when it does not exist)."""
    try:
        with open(path, "rb") as f:
            return sum(buf.count(b"\n") for buf in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def telemetry_counters(srv: R.Server) -> dict[str, float]:
    """anymesh's own access-log and tracer counters, from its /metrics."""
    if not srv.admin_port:
        return {}
    try:
        return parse_counters(R.http_get(srv.admin_port, "localhost", "/metrics")[1])
    except OSError:
        return {}


def parse_counters(text: str) -> dict[str, float]:
    """The access-log and tracer lines of a /metrics text.

    >>> parse_counters('# HELP x\\nanymesh_access_log_lines_total{result="written"} 12\\nistio_build 1\\n'
    ...                'anymesh_trace_spans_total{result="dropped"} 0')
    {'anymesh_access_log_lines_total{result="written"}': 12.0, 'anymesh_trace_spans_total{result="dropped"}': 0.0}
    """
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("anymesh_access_log_", "anymesh_trace_")):
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                continue
    return out


def telemetry_check(pairs: list[Pair], served: dict[str, int], wait_s: float = 12.0) -> dict:
    """Each telemetry pair's access-log lines (A, B) and the spans its sink
    received, polled until both sides logged and spans arrived (the
    exporters send a batch every 5 s at the latest) or `wait_s` passed;
    raises when a pair still has neither."""
    deadline = time.monotonic() + wait_s
    while True:
        out = {}
        for p in pairs:
            lines = [count_lines(f) for f in p.access_logs]
            out[p.name] = {"requests_served_in_measured_runs": served.get(p.name, 0),
                           "access_log_lines": dict(zip(("a", "b"), lines)), "sink": p.sink.counts(),
                           "anymesh_counters": {side: telemetry_counters(s) for side, s in
                                                (("a", p.a), ("b", p.b)) if s.admin_port}}
        ok = all(all(v["access_log_lines"].values()) and (v["sink"]["spans_total"] or not p.traced)
                 for p, v in zip(pairs, out.values()))
        if ok or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for name, v in out.items():
        n = v["requests_served_in_measured_runs"]
        v["spans_per_request"] = round(v["sink"]["spans_total"] / n, 5) if n else None
        lines = v["access_log_lines"]
        R.log(f"  telemetry  {name:<22} access-log lines A {lines.get('a', 0):,} "
              f"B {lines.get('b', 0):,}, {v['sink']['spans_total']:,} spans "
              f"({v['spans_per_request'] or 0:.4f} per request served; 1 % sampling, 2 sides: 0.02)")
    if not ok:
        raise R.BenchError(f"a telemetry pair logged or traced nothing: {json.dumps(out)}")
    return out


# --------------------------------------------------------------------------
# measuring


def rss_anon_kb(pids: list[int]) -> tuple[int, int]:
    """(VmRSS, RssAnon) summed, KiB: RssAnon leaves out the mapped
    binary's pages (file-backed, shared by every process of one binary)."""
    rss = anon = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                    elif line.startswith("RssAnon:"):
                        anon += int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
    return rss, anon


class RssPeak(threading.Thread):
    """The largest VmRSS and RssAnon of each server, sampled every 100 ms."""

    def __init__(self, servers: list[R.Server]):
        super().__init__(daemon=True)
        self.servers = servers
        self.peak = {s.name: 0 for s in servers}
        self.peak_anon = {s.name: 0 for s in servers}
        self.stop_ev = threading.Event()

    def run(self) -> None:
        while True:
            for s in self.servers:
                rss, anon = rss_anon_kb(s.pids())
                self.peak[s.name] = max(self.peak[s.name], rss)
                self.peak_anon[s.name] = max(self.peak_anon[s.name], anon)
            if self.stop_ev.wait(0.1):
                return


def load_cmd(tools: dict, cell: dict, port: int, seconds: float) -> tuple[list[str], str]:
    url = f"http://127.0.0.1:{port}/"
    if cell["tool"] == "wrk":
        return [tools["wrk"], "-t1", f"-c{cell['conns']}", f"-d{int(seconds)}s", "--timeout", "5s",
                "-s", str(R.WRK_LUA), "-H", f"Host: {HOST}", url], "wrk"
    return [tools["oha"], "--no-tui", "--output-format", "json", "--latency-correction", "-q", str(cell["rate"]),
            "-z", f"{seconds}s", "-c", str(cell["conns"]), "--worker-threads", "1", "-H", f"Host: {HOST}",
            url], "oha"


def proc_cpu(pids: list[int]) -> tuple[float, float]:
    """(seconds on CPU from schedstat, utime + stime seconds from stat)."""
    return R.sched_counts(pids)["run_ns"] / 1e9, R.cpu_ticks(pids) / R.CLK_TCK


def wait_quiet(args, servers: list[R.Server]) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < args.quiet_wait:
        if R.foreign_share_now(servers) <= args.max_foreign:
            break
    return round(time.monotonic() - t0, 2)


def run_cell(args, tools: dict, cell: dict, c, everyone: list[R.Server]) -> dict:
    """One load-tool run against a contender: the tool's figures, each
    proxy's CPU time and peak RSS, and the CPU other processes took."""
    waited = wait_quiet(args, everyone)
    cmd, tool = load_cmd(tools, cell, c.port, cell["seconds"])
    servers = c.servers()
    pids = {s.name: s.pids() for s in servers}
    ours = [p for s in everyone for p in s.pids()]
    cpu0 = {n: proc_cpu(p) for n, p in pids.items()}
    busy0, own0, ours0 = R.system_busy_ticks(), R.own_and_children_cpu_s(), R.cpu_ticks(ours)
    rss = RssPeak(servers)
    rss.start()
    w0 = time.monotonic()
    try:
        out = R.run_tool(cmd, cell["seconds"] + 60, f"{tool} against {c.name} ({cell['id']})")
    finally:
        rss.stop_ev.set()
        rss.join()
    wall = time.monotonic() - w0
    cpu1 = {n: proc_cpu(p) for n, p in pids.items()}
    busy1, own1, ours1 = R.system_busy_ticks(), R.own_and_children_cpu_s(), R.cpu_ticks(ours)
    c.check_alive(f"during {cell['id']}")
    r = R.PARSERS[tool](out)
    if r["served"] == 0:
        raise R.BenchError(f"{c.name} served no successful response in {cell['id']}: {r}")
    foreign = (busy1 - busy0 - (ours1 - ours0)) / R.CLK_TCK - (own1 - own0)
    rec: dict = {"rps": r["rps"], "served": r["served"], "errors": r["error_count"], "wall_s": round(wall, 3),
                 "quiet_wait_s": waited,
                 "foreign_share": round(max(foreign, 0.0) / (wall * (os.cpu_count() or 1)), 4)}
    if tool == "oha":
        lat = r["latency_us"]
        rec["p50_us"], rec["p99_us"] = lat.get("p50"), lat.get("p99")
    else:
        rec["p50_us"], rec["p99_us"] = r.get("latency_us", {}).get("p50"), r.get("latency_us", {}).get("p99")
    proxies = {}
    for s in servers:
        (s0, t0), (s1, t1) = cpu0[s.name], cpu1[s.name]
        run_s, ticks_s = s1 - s0, t1 - t0
        cpu_s = run_s if run_s > 0 else ticks_s
        proxies[s.name] = {"cpu_s": round(cpu_s, 4), "cpu_ticks_s": round(ticks_s, 3),
                           "cpu_us_per_req": round(cpu_s / r["served"] * 1e6, 3), "rss_max_kb": rss.peak[s.name],
                           "rss_anon_max_kb": rss.peak_anon[s.name]}
    if proxies:
        rec["proxies"] = proxies
        rec["cpu_us_per_req"] = round(sum(p["cpu_us_per_req"] for p in proxies.values()), 3)
        rec["rss_max_kb"] = sum(p["rss_max_kb"] for p in proxies.values())
        rec["rss_anon_max_kb"] = sum(p["rss_anon_max_kb"] for p in proxies.values())
    return rec


def cells_for(args) -> list[dict]:
    return [{"id": "h1_c32", "tool": "wrk", "conns": 32, "seconds": args.seconds}] + [
        {"id": f"rate_{q}", "tool": "oha", "rate": q, "conns": 32, "seconds": args.seconds} for q in args.rates]


# --------------------------------------------------------------------------
# full handshakes


def read_response(s) -> bytes:
    """An HTTP/1.1 response with a Content-Length, read to its end (the
    client then closes: no wait for the server's close)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def handshake_client(argv: list[str]) -> int:
    """One client process of the handshake measurement: new connections for
    `seconds`, each a full handshake (no session resumption), one GET with
    `Connection: close`, read to the end of its body. Prints its counts as JSON."""
    port, seconds, chain, key, bundle, sni = int(argv[0]), float(argv[1]), argv[2], argv[3], argv[4], argv[5]
    alpn = argv[6] if len(argv) > 6 else ""
    resume = len(argv) > 7 and argv[7] == "resume"  # offer the last session's ticket
    ctx = None
    if chain != "-":  # "-": plaintext connections (the reference)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False  # SPIFFE certificates carry a URI SAN, no host name
        ctx.load_verify_locations(bundle)
        ctx.load_cert_chain(chain, key)
        if alpn:
            ctx.set_alpn_protocols([alpn])
    req = f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
    ok = bad = reused = 0
    version = alpn_got = session = None
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                # as both proxies' own upstream connections (without it the
                # request can wait behind the handshake's last flight for
                # the peer's delayed ACK: 40 ms)
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if ctx is None:
                    raw.sendall(req)
                    data = read_response(raw)
                else:
                    with ctx.wrap_socket(raw, server_hostname=sni, session=session if resume else None) as s:
                        if version is None:
                            version, alpn_got = s.version(), s.selected_alpn_protocol()
                        s.sendall(req)
                        data = read_response(s)
                        reused += s.session_reused
                        if resume and s.session is not None and not s.session_reused:
                            session = s.session  # TLS 1.3: known once the tickets arrived
            if data.startswith(b"HTTP/1.1 200"):
                ok += 1
            else:
                bad += 1
        except (OSError, ssl.SSLError):
            bad += 1
    print(json.dumps({"ok": ok, "failed": bad, "reused": reused, "tls_version": version, "alpn": alpn_got}))
    return 0


def handshakes(args, tmp: Path, pair: Pair, files: dict[str, Path], ca: Ca, app_port: int,
               everyone: list[R.Server], resume: bool = False) -> dict:
    """Full mTLS handshakes against B's listener from --hs-clients processes
    (for anymesh-plain: new plaintext connections, the reference)."""
    waited = wait_quiet(args, everyone)
    alpn = ALPN_H1 if pair.name.startswith("anymesh") else ""
    tls = pair.name != "anymesh-plain"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--handshake-client", str(pair.b_inbound),
           str(args.hs_seconds), str(files["a_chain"]) if tls else "-", str(files["a_key"]), str(ca.bundle),
           f"inbound-{app_port}.anymesh", alpn, "resume" if resume else "full"]
    pids = pair.b.pids()
    before = inbound_counts(pair.b) if pair.b.admin_port else {}
    (s0, t0) = proc_cpu(pids)
    w0 = time.monotonic()
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True) for _ in range(args.hs_clients)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=args.hs_seconds + 60)
        if p.returncode != 0:
            raise R.BenchError(f"handshake client failed ({p.returncode}): {err[-2000:]}")
        outs.append(json.loads(out))
    wall = time.monotonic() - w0
    (s1, t1) = proc_cpu(pids)
    pair.check_alive("during the handshakes")
    after = inbound_counts(pair.b) if pair.b.admin_port else {}
    ok = sum(o["ok"] for o in outs)
    cpu_s = (s1 - s0) if s1 > s0 else (t1 - t0)
    rec = {"clients": args.hs_clients, "wall_s": round(wall, 3), "ok": ok, "failed": sum(o["failed"] for o in outs),
           "resumed": sum(o["reused"] for o in outs),
           "tls_version": outs[0]["tls_version"], "alpn": outs[0]["alpn"], "b_cpu_s": round(cpu_s, 4),
           "b_cpu_ticks_s": round(t1 - t0, 3), "quiet_wait_s": waited,
           "per_s_wall": round(ok / wall, 1) if wall else None,
           "per_s_per_core": round(ok / cpu_s, 1) if cpu_s > 0 else None,
           "b_cpu_us_per_handshake": round(cpu_s / ok * 1e6, 2) if ok else None}
    if before or after:
        rec["inbound_connections"] = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    if ok == 0:
        raise R.BenchError(f"{pair.name}: no handshake succeeded: {rec}")
    return rec


# --------------------------------------------------------------------------
# instruction counts


CG_GROUPS = [("ring: AEAD (AES-GCM, ChaCha20-Poly1305)", ("aes", "gcm", "chacha", "poly1305", "gfmul", "ghash")),
             ("ring: other", ("ring::", "ring_core")),
             ("rustls, tokio-rustls", ("rustls",)),
             ("anymesh telemetry: access log", ("anymesh_telemetry::access_log",)),
             ("anymesh telemetry: tracing", ("anymesh_telemetry::trace",)),
             ("anymesh telemetry: other", ("anymesh_telemetry",)),
             ("reqwest (span export)", ("reqwest",)),
             ("core::fmt (write!, Display)", ("core::fmt", "write_fmt")),
             ("anymesh (incl. stream.rs)", ("anymesh",)),
             ("tokio / mio", ("tokio::", "mio::", "tokio<")),
             ("malloc / free", ("malloc", "free", "realloc", "_int_", "tcache", "calloc")),
             ("memcpy / memmove / memset", ("memcpy", "memmove", "memset"))]


def cg_group(fn: str) -> str:
    """The group of a callgrind function name.

    >>> cg_group("rustls::conn::ConnectionCommon<T>::process_new_packets"), cg_group("__memcpy_avx_unaligned")
    ('rustls, tokio-rustls', 'memcpy / memmove / memset')
    >>> cg_group("ring_core_0_17_14__aes_hw_ctr32_encrypt_blocks"), cg_group("?")
    ('ring: AEAD (AES-GCM, ChaCha20-Poly1305)', 'other')
    >>> cg_group("anymesh_telemetry::access_log::format::write_text"), cg_group("anymesh_proxy::h1::serve")
    ('anymesh telemetry: access log', 'anymesh (incl. stream.rs)')
    """
    low = fn.lower()
    for name, keys in CG_GROUPS:
        if any(k in low for k in keys):
            return name
    return "other"


def cg_profile(path: Path) -> tuple[int, dict[str, int]]:
    """(program total, instructions by group) of a callgrind output file."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", str(path)],
                         capture_output=True, text=True).stdout
    total, groups = 0, {}
    for line in out.splitlines():
        parts = line.split()
        if not parts or not parts[0].replace(",", "").isdigit():
            continue
        n = int(parts[0].replace(",", ""))
        if "PROGRAM TOTALS" in line:
            total = n
            continue
        if total and n >= total * 0.9:
            # the threads' entry frames (clone, start_thread, thread_start),
            # which callgrind_annotate 3.19 lists at (nearly) 100 % after a
            # mid-run zero and dump: not self cost, and with more threads
            # than the worker (the access log's writer) not quite 100 %
            continue
        # "N (pct%)  file:function [object]"
        fn = line.split("%)", 1)[1].strip() if "%)" in line else " ".join(parts[1:])
        fn = fn.rsplit(" [", 1)[0]
        fn = fn.split(":", 1)[1] if ":" in fn.split(" ")[0] else fn
        g = cg_group(fn)
        groups[g] = groups.get(g, 0) + n
    return total, groups


def callgrind(args, tools: dict, tmp: Path, ca: Ca, app: int) -> dict:
    """Instructions per request of each side of the anymesh pairs (plaintext,
    mTLS and, unless --no-telemetry, mTLS with access logs and 1 % tracing)
    under callgrind (user space, every thread: the access log's writer and
    the span exporter included; the syscalls are the same in both, counted
    with strace: 4 per request per proxy), h2load --h1 -c8 after a warm-up."""
    res: dict = {}
    sink = ZipkinSink("callgrind") if args.telemetry else None
    variants = [(False, None), (True, None)] + ([(True, sink)] if sink else [])
    for mtls, tel in variants:
        for side in ("a", "b"):
            i = len(res)
            out = tmp / f"cg-{i}.out"
            wrap = {side: ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]}
            pair = start_anymesh_pair(args.anymesh, tmp, ca, app, mtls, wrap, tag=f"-cg{i}", sink=tel,
                                      parts=args.telemetry_parts)
            srv = pair.a if side == "a" else pair.b
            load = [tools["h2load"], "--h1", "-c", "8", "-H", f":authority: {HOST}", f"http://127.0.0.1:{pair.port}/"]
            R.run_tool(load[:1] + ["-n", "1000"] + load[1:], 300, "h2load warm-up")
            subprocess.run(["callgrind_control", "-z", str(srv.proc.pid)], capture_output=True, check=True)
            r = R.parse_h2load(R.run_tool(load[:1] + ["-n", str(args.cg_requests)] + load[1:], 600, "h2load"))
            subprocess.run(["callgrind_control", "-d", str(srv.proc.pid)], capture_output=True, check=True)
            dumps = sorted(tmp.glob(f"cg-{i}.out.*"))
            if not dumps or r["succeeded"] != args.cg_requests:
                raise R.BenchError(f"callgrind run {pair.name} {side}: {r}, dumps {dumps}")
            total, groups = cg_profile(dumps[-1])
            key = f"{pair.name} {side.upper()}"
            res[key] = {"requests": args.cg_requests, "instructions": total,
                        "per_request": round(total / args.cg_requests),
                        "groups_per_request": {g: round(n / args.cg_requests) for g, n in
                                               sorted(groups.items(), key=lambda x: -x[1])}}
            if tel and pair.access_logs:
                res[key]["access_log_lines"] = count_lines(pair.access_logs[0 if side == "a" else 1])
            R.log(f"  callgrind {key}: {res[key]['per_request']:,} instructions per request")
            for s in pair.servers():
                R.PROCS.stop(s.proc)
    return res


def render_callgrind(res: dict) -> str:
    groups = sorted({g for r in res.values() for g in r["groups_per_request"]})
    cols = list(res)
    lines = ["Instructions per request (callgrind, user space, one side at a time under valgrind; "
             "h2load --h1 -c8):\n", "| | " + " | ".join(cols) + " |", "|---|" + "--:|" * len(cols),
             "| **total** | " + " | ".join(f"**{res[c]['per_request']:,}**" for c in cols) + " |"]
    for g in groups:
        lines.append(f"| {g} | " + " | ".join(f"{res[c]['groups_per_request'].get(g, 0):,}" for c in cols) + " |")
    for side in ("A", "B"):
        p, m = res.get(f"anymesh-plain {side}"), res.get(f"anymesh-mtls {side}")
        if p and m:
            lines.append(f"\nmTLS over plaintext, {side}: {pct(m['per_request'], p['per_request'])}")
        t = res.get(f"anymesh-mtls-telemetry {side}")
        if m and t:
            lines.append(f"\naccess log + 1 % tracing over mTLS (metrics in both), {side}: "
                         f"{t['per_request'] - m['per_request']:+,} instructions per request "
                         f"({pct(t['per_request'], m['per_request'])})")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# the table


def summarize(rounds: list[dict], hs: dict, resumed: dict | None = None) -> dict:
    s: dict = {}
    for c in [c for c in rounds[0] if c != "order"]:
        row: dict = {}
        for cell in rounds[0][c]:
            recs = [r[c][cell] for r in rounds]
            row[cell] = {k: med([x.get(k) for x in recs]) for k in ("rps", "p50_us", "p99_us", "cpu_us_per_req",
                                                                  "rss_max_kb", "rss_anon_max_kb")}
            if c != "direct":
                names = list(recs[0].get("proxies", {}))
                for side, n in zip(("a", "b"), names):
                    row[cell][f"cpu_us_per_req_{side}"] = med([x["proxies"][n]["cpu_us_per_req"] for x in recs])
                    row[cell][f"rss_max_kb_{side}"] = med([x["proxies"][n]["rss_max_kb"] for x in recs])
                if cell.startswith("rate_"):
                    for q in ("p50_us", "p99_us"):
                        row[cell][f"added_{q}"] = med([
                            r[c][cell][q] - r["direct"][cell][q] for r in rounds
                            if r[c][cell][q] is not None and r["direct"][cell][q] is not None])
        s[c] = row
    s["handshakes"] = {p: med([h["per_s_per_core"] for h in hs.get(p, [])]) for p in hs}
    s["handshake_cpu_us"] = {p: med([h["b_cpu_us_per_handshake"] for h in hs.get(p, [])]) for p in hs}
    s["handshake_wall"] = {p: med([h["per_s_wall"] for h in hs.get(p, [])]) for p in hs}
    resumed = resumed or {}
    s["resumed"] = {p: med([h["per_s_per_core"] for h in resumed[p]]) for p in resumed}
    s["resumed_cpu_us"] = {p: med([h["b_cpu_us_per_handshake"] for h in resumed[p]]) for p in resumed}
    # per round: mTLS over plaintext, anymesh over Envoy (paired in the round)
    pr = {"mtls_over_plain_cpu": [], "am_over_envoy_rps": [], "am_over_envoy_cpu": []}
    for r in rounds:
        am, pl, ev = r["anymesh-mtls"]["h1_c32"], r["anymesh-plain"]["h1_c32"], r["envoy-mtls"]["h1_c32"]
        pr["mtls_over_plain_cpu"].append(ratio(am["cpu_us_per_req"], pl["cpu_us_per_req"]))
        pr["am_over_envoy_rps"].append(ratio(am["rps"], ev["rps"]))
        pr["am_over_envoy_cpu"].append(ratio(am["cpu_us_per_req"], ev["cpu_us_per_req"]))
    if "anymesh-mtls-telemetry" in rounds[0]:
        # telemetry on over off, per round (the cost), and the two telemetry pairs
        for k in ("am_tel_over_off", "envoy_tel_over_off", "am_tel_over_envoy_tel"):
            for m in ("rps", "cpu", "cpu_a", "cpu_b"):
                pr[f"{k}_{m}"] = []
        for r in rounds:
            am, amt = r["anymesh-mtls"]["h1_c32"], r["anymesh-mtls-telemetry"]["h1_c32"]
            ev, evt = r["envoy-mtls"]["h1_c32"], r["envoy-mtls-telemetry"]["h1_c32"]
            for k, (x, y) in {"am_tel_over_off": (amt, am), "envoy_tel_over_off": (evt, ev),
                              "am_tel_over_envoy_tel": (amt, evt)}.items():
                pr[f"{k}_rps"].append(ratio(x["rps"], y["rps"]))
                pr[f"{k}_cpu"].append(ratio(x["cpu_us_per_req"], y["cpu_us_per_req"]))
                for side, i in (("a", 0), ("b", 1)):
                    pr[f"{k}_cpu_{side}"].append(ratio(list(x["proxies"].values())[i]["cpu_us_per_req"],
                                                       list(y["proxies"].values())[i]["cpu_us_per_req"]))
    s["paired"] = {k: [round(x, 3) for x in v if x is not None] for k, v in pr.items()}
    return s


def render(result: dict) -> str:
    s, args = result["summary"], result["args"]
    rates = args["rates"]
    cols = PAIRS
    lines = [f"Sidecar pair client → A → B → app (nginx, 64-byte body), HTTP/1.1, 1 worker per proxy; "
             f"wrk -c32 and oha -c32 at fixed rates, {args['seconds']:g} s per run, {len(result['rounds'])} round(s), "
             f"medians. CPU and RSS: proxy A + proxy B.\n",
             "| | " + " | ".join(cols) + " | mTLS / plain (anymesh) | anymesh mTLS / Envoy mTLS |",
             "|---|" + "--:|" * (len(cols) + 2)]

    def row(label, cell, key, digits=0, direct=False):
        vals = [s[c][cell].get(key) for c in cols]
        am, pl, ev = vals[1], vals[0], vals[2]
        r1, r2 = ratio(am, pl), ratio(am, ev)
        lines.append(f"| {label} | " + " | ".join(fmt(v, digits) for v in vals)
                     + f" | {fmt(r1, 3)} | {fmt(r2, 3)} |")

    row("req/s (wrk -c32)", "h1_c32", "rps")
    row("CPU µs / request, A + B", "h1_c32", "cpu_us_per_req", 2)
    row("CPU µs / request, A", "h1_c32", "cpu_us_per_req_a", 2)
    row("CPU µs / request, B", "h1_c32", "cpu_us_per_req_b", 2)
    row("RSS MB peak, A + B", "h1_c32", "rss_max_kb_mb", 1)
    row("RSS MB peak, A", "h1_c32", "rss_max_kb_a_mb", 1)
    row("RSS MB peak, B", "h1_c32", "rss_max_kb_b_mb", 1)
    row("anonymous RSS MB peak (RssAnon), A + B", "h1_c32", "rss_anon_max_kb_mb", 1)
    for q in rates:
        row(f"added p50 µs at {q:,} req/s", f"rate_{q}", "added_p50_us")
        row(f"added p99 µs at {q:,} req/s", f"rate_{q}", "added_p99_us")
        row(f"CPU µs / request at {q:,} req/s, A + B", f"rate_{q}", "cpu_us_per_req", 2)
    hs = s["handshakes"]
    lines.append(f"| new connections / s / core of B (full mTLS handshake + 1 request; plain: TCP + 1 request) | "
                 f"{fmt(hs.get('anymesh-plain'))} | {fmt(hs.get('anymesh-mtls'))} | {fmt(hs.get('envoy-mtls'))} | "
                 f"{fmt(ratio(hs.get('anymesh-mtls'), hs.get('anymesh-plain')), 3)} | "
                 f"{fmt(ratio(hs.get('anymesh-mtls'), hs.get('envoy-mtls')), 3)} |")
    hc = s["handshake_cpu_us"]
    lines.append(f"| B's CPU µs per new connection (+ 1 request) | {fmt(hc.get('anymesh-plain'), 1)} | "
                 f"{fmt(hc.get('anymesh-mtls'), 1)} | {fmt(hc.get('envoy-mtls'), 1)} | "
                 f"{fmt(ratio(hc.get('anymesh-mtls'), hc.get('anymesh-plain')), 3)} | "
                 f"{fmt(ratio(hc.get('anymesh-mtls'), hc.get('envoy-mtls')), 3)} |")
    if s.get("resumed"):
        rs, rc = s["resumed"], s["resumed_cpu_us"]
        am, ev = rs.get("anymesh-mtls"), rs.get("envoy-mtls")
        lines.append(f"| resumed mTLS connections / s / core of B (+ 1 request) | | {fmt(am)} | {fmt(ev)} | | "
                     f"{fmt(ratio(am, ev), 3)} |")
        am, ev = rc.get("anymesh-mtls"), rc.get("envoy-mtls")
        lines.append(f"| B's CPU µs per resumed connection | | {fmt(am, 1)} | {fmt(ev, 1)} | | "
                     f"{fmt(ratio(am, ev), 3)} |")
    d = s["direct"]
    lines.append("")
    lines.append("direct (no proxy): " + ", ".join(
        [f"{fmt(d['h1_c32']['rps'])} req/s"]
        + [f"p50/p99 {fmt(d[f'rate_{q}']['p50_us'])}/{fmt(d[f'rate_{q}']['p99_us'])} µs at {q:,} req/s"
           for q in rates]))
    p = s["paired"]
    lines.append("paired per round (h1_c32): anymesh mTLS/plain CPU per request "
                 f"{p['mtls_over_plain_cpu']}; anymesh mTLS/Envoy mTLS req/s {p['am_over_envoy_rps']}, "
                 f"CPU per request {p['am_over_envoy_cpu']}")
    return "\n".join(lines)


def render_telemetry(result: dict) -> str:
    """The telemetry table: both mTLS pairs with telemetry off and on."""
    s, args = result["summary"], result["args"]
    cols = ["anymesh-mtls", "anymesh-mtls-telemetry", "envoy-mtls", "envoy-mtls-telemetry"]
    lines = ["Telemetry (issue 22): anymesh-mtls has Istio's standard metrics on both sides (always on); "
             "-telemetry adds access logs (Istio's TEXT format, to files) and 1 % Zipkin tracing on both sides. "
             "envoy-mtls has Envoy's stats; -telemetry adds Envoy's file access log (Istio's format) and its "
             "Zipkin tracer at 1 %.\n",
             "| | " + " | ".join(cols) + " | anymesh on / off | Envoy on / off | anymesh on / Envoy on |",
             "|---|" + "--:|" * (len(cols) + 3)]

    def row(label, cell, key, digits=0):
        vals = [s[c][cell].get(key) for c in cols]
        rs = [ratio(vals[1], vals[0]), ratio(vals[3], vals[2]), ratio(vals[1], vals[3])]
        lines.append(f"| {label} | " + " | ".join(fmt(v, digits) for v in vals) + " | "
                     + " | ".join(fmt(x, 3) for x in rs) + " |")

    row("req/s (wrk -c32)", "h1_c32", "rps")
    row("CPU µs / request, A + B", "h1_c32", "cpu_us_per_req", 2)
    row("CPU µs / request, A", "h1_c32", "cpu_us_per_req_a", 2)
    row("CPU µs / request, B", "h1_c32", "cpu_us_per_req_b", 2)
    for q in args["rates"]:
        row(f"CPU µs / request at {q:,} req/s, A + B", f"rate_{q}", "cpu_us_per_req", 2)
        row(f"added p50 µs at {q:,} req/s", f"rate_{q}", "added_p50_us")
        row(f"added p99 µs at {q:,} req/s", f"rate_{q}", "added_p99_us")
    row("RSS MB peak, A + B", "h1_c32", "rss_max_kb_mb", 1)
    row("anonymous RSS MB peak (RssAnon), A + B", "h1_c32", "rss_anon_max_kb_mb", 1)
    p = s["paired"]
    lines.append("")
    lines.append("paired per round (h1_c32), on / off: anymesh req/s "
                 f"{p['am_tel_over_off_rps']}, CPU per request {p['am_tel_over_off_cpu']} "
                 f"(A {p['am_tel_over_off_cpu_a']}, B {p['am_tel_over_off_cpu_b']}); Envoy req/s "
                 f"{p['envoy_tel_over_off_rps']}, CPU per request {p['envoy_tel_over_off_cpu']}; "
                 f"anymesh on / Envoy on: req/s {p['am_tel_over_envoy_tel_rps']}, "
                 f"CPU per request {p['am_tel_over_envoy_tel_cpu']}")
    for name, v in result.get("telemetry_check", {}).items():
        lines.append(f"{name}: access-log lines A {v['access_log_lines'].get('a', 0):,} / "
                     f"B {v['access_log_lines'].get('b', 0):,}, "
                     f"{v['sink']['spans_total']:,} spans received, "
                     f"{v['requests_served_in_measured_runs']:,} requests in the measured runs")
    return "\n".join(lines)


def add_mb(s: dict) -> None:
    for c in [c for c in s if c in PAIRS + TELEMETRY_PAIRS]:
        for cell in s[c].values():
            for k in ("rss_max_kb", "rss_max_kb_a", "rss_max_kb_b", "rss_anon_max_kb"):
                if cell.get(k) is not None:
                    cell[f"{k}_mb"] = cell[k] / 1024


# --------------------------------------------------------------------------


def parse_args(argv: list[str]):
    ap = argparse.ArgumentParser(prog="bench/mtls", description=__doc__.split("\n\n")[0])
    ap.add_argument("--anymesh", default=str(R.cargo_target_dir() / "release" / "anymesh"),
                    help="the anymesh binary (default: target/release/anymesh)")
    ap.add_argument("--quick", action="store_true", help="1 round, 1 s per cell, 1 s of handshakes, no quiet wait")
    ap.add_argument("--rounds", type=int, default=4,
                    help="rounds (4: every contender once in every position of the rotated order)")
    ap.add_argument("--seconds", type=float, default=5.0, help="per load run")
    ap.add_argument("--rates", default="1000,5000", help="oha's fixed rates (req/s)")
    ap.add_argument("--hs-seconds", type=float, default=5.0, help="handshake measurement length")
    ap.add_argument("--hs-clients", type=int, default=2, help="handshake client processes")
    ap.add_argument("--resume", action="store_true",
                    help="also: new connections that resume the previous session (TLS 1.3 tickets)")
    ap.add_argument("--quiet-wait", type=float, default=10.0,
                    help="seconds to wait for other processes to use < --max-foreign of the CPUs before a run")
    ap.add_argument("--max-foreign", type=float, default=0.25)
    ap.add_argument("--no-telemetry", dest="telemetry", action="store_false",
                    help="leave out anymesh-mtls-telemetry and envoy-mtls-telemetry (and, with --callgrind, the "
                         "telemetry variant)")
    ap.add_argument("--telemetry-parts", default="access_log,tracing",
                    help="what anymesh-mtls-telemetry turns on: access_log, tracing or both (to price each alone)")
    ap.add_argument("--callgrind", action="store_true",
                    help="instead: instructions per request of each side of the anymesh pairs under callgrind")
    ap.add_argument("--cg-requests", type=int, default=4000, help="--callgrind: requests counted")
    ap.add_argument("--out", default=None, help="JSON output path")
    a = ap.parse_args(argv)
    if a.quick:
        a.rounds, a.seconds, a.hs_seconds, a.quiet_wait = 1, 1.0, 1.0, 0.0
    a.rates = [int(x) for x in str(a.rates).split(",") if x]
    a.anymesh = os.path.abspath(a.anymesh)  # the proxies run in their own directories
    a.telemetry_parts = tuple(x for x in str(a.telemetry_parts).split(",") if x)
    if not a.telemetry_parts or any(x not in TELEMETRY_PARTS for x in a.telemetry_parts):
        ap.error(f"--telemetry-parts: one or both of {', '.join(TELEMETRY_PARTS)}")
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    a.out = a.out or str(R.BENCH / "results" / f"mtls{'-callgrind' if a.callgrind else ''}-{stamp}.json")
    return a


def main(argv: list[str]) -> int:
    if argv[:1] == ["--handshake-client"]:
        return handshake_client(argv[1:])
    args = parse_args(argv)
    if not Path(args.anymesh).exists():
        R.log(f"no anymesh binary at {args.anymesh} (build it with cargo build --release, or give --anymesh)")
        return 2

    def body(tmp: Path, result: dict) -> None:
        tools = R.ensure_tools()
        result["tools"] = {k: v for k, v in R.tool_versions(tools).items() if k in ("oha", "envoy", "wrk", "nginx")}
        ctx = R.Ctx(SimpleNamespace(idle_conns=0), tmp, tools, args.anymesh)
        upstream = R.start_upstream(ctx)
        app = ctx.up_h1[0]
        R.log("the CA (anymesh ca init, token, serve)")
        ca = Ca(args.anymesh, tmp)
        if args.callgrind:
            result["callgrind"] = callgrind(args, tools, tmp, ca, app)
            table = render_callgrind(result["callgrind"])
            result["table_markdown"] = table
            print(table, flush=True)
            return
        R.log("the anymesh pairs")
        plain = start_anymesh_pair(args.anymesh, tmp, ca, app, mtls=False)
        mtls = start_anymesh_pair(args.anymesh, tmp, ca, app, mtls=True)
        files = envoy_tls_files(tmp, tmp / "anymesh-mtls")
        R.log("the Envoy pair")
        envoy = start_envoy_pair(tools["envoy"], tmp, ca, files, app)
        contenders = {"direct": Direct(app), "anymesh-plain": plain, "anymesh-mtls": mtls, "envoy-mtls": envoy}
        if args.telemetry:
            R.log("the telemetry pairs (access logs, 1 % tracing to the Zipkin sinks)")
            contenders["anymesh-mtls-telemetry"] = start_anymesh_pair(
                args.anymesh, tmp, ca, app, mtls=True, sink=ZipkinSink("anymesh-mtls-telemetry"),
                parts=args.telemetry_parts)
            contenders["envoy-mtls-telemetry"] = start_envoy_pair(
                tools["envoy"], tmp, ca, files, app, sink=ZipkinSink("envoy-mtls-telemetry"))
        names = list(contenders)
        # the pairs are what they claim: B's inbound counts by kind
        result["inbound_check"] = {"anymesh-plain": inbound_counts(plain.b), "anymesh-mtls": inbound_counts(mtls.b)}
        if not result["inbound_check"]["anymesh-mtls"].get("mtls"):
            raise R.BenchError(f"anymesh-mtls B counted no mTLS connection: {result['inbound_check']}")
        if not result["inbound_check"]["anymesh-plain"].get("plaintext"):
            raise R.BenchError(f"anymesh-plain B counted no plaintext connection: {result['inbound_check']}")
        everyone = [upstream, ca.srv] + [s for p in contenders.values() for s in p.servers()]
        rounds = []
        for rnd in range(args.rounds):
            order = R.round_order(rnd, names)
            R.log(f"round {rnd + 1}/{args.rounds}: {', '.join(order)}")
            rec: dict = {"order": order}
            for cell in cells_for(args):
                for name in order:
                    r = run_cell(args, tools, cell, contenders[name], everyone)
                    rec.setdefault(name, {})[cell["id"]] = r
                    R.log(f"  {cell['id']:<10} {name:<22} {r['rps']:>9,.0f} req/s"
                          + (f", {r['cpu_us_per_req']:.2f} µs CPU/req (A+B)" if "cpu_us_per_req" in r else "")
                          + (f", p99 {r['p99_us']:.0f} µs" if r.get("p99_us") and cell["tool"] == "oha" else ""))
            rounds.append(rec)
        result["rounds"] = rounds
        tel_pairs = [contenders[n] for n in TELEMETRY_PAIRS if n in contenders]
        if tel_pairs:
            served = {n: sum(cell["served"] for r in rounds for cell in r[n].values()) for n in TELEMETRY_PAIRS
                      if n in contenders}
            result["telemetry_check"] = telemetry_check(tel_pairs, served)
        hs: dict = {}
        for rnd in range(args.rounds):
            for p in ((mtls, envoy, plain) if rnd % 2 == 0 else (plain, envoy, mtls)):
                h = handshakes(args, tmp, p, files, ca, app, everyone)
                hs.setdefault(p.name, []).append(h)
                R.log(f"  new conns  {p.name:<13} {h['ok']:,} in {h['wall_s']:.1f} s, "
                      f"{h['per_s_per_core']:,.0f} per s per core of B ({h['tls_version']}, ALPN {h['alpn']})")
        result["handshakes"] = hs
        if args.resume:
            rs: dict = {}
            for rnd in range(args.rounds):
                for p in ((mtls, envoy) if rnd % 2 == 0 else (envoy, mtls)):
                    h = handshakes(args, tmp, p, files, ca, app, everyone, resume=True)
                    rs.setdefault(p.name, []).append(h)
                    R.log(f"  resumed    {p.name:<13} {h['ok']:,} ({h['resumed']:,} resumed) in {h['wall_s']:.1f} s, "
                          f"{h['per_s_per_core']:,.0f} per s per core of B")
            result["resumed"] = rs
        result["summary"] = summarize(rounds, hs, result.get("resumed", {}))
        add_mb(result["summary"])
        table = render(result)
        if tel_pairs:
            table += "\n\n" + render_telemetry(result)
        result["table_markdown"] = table
        print(table, flush=True)

    return R.side_run("anymesh-mtls-", args, {}, body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
