#!/usr/bin/env python3
"""The resilience benchmarks of issue 20 (docs/performance.md, "Resilience").

    bench/resilience chaos     # one of three upstreams killed under steady load: anymesh and Envoy
    bench/resilience ewma      # one slow upstream of three: ROUND_ROBIN, LEAST_REQUEST, PEAK_EWMA
    bench/resilience overhead  # resilience configured, nothing failing, against plain: one anymesh, ABBA

`chaos`: three upstream processes (bench/upstream.py) behind anymesh and
behind Envoy, each configured the same way (retries: 2 on
connect-failure,refused-stream to another host; outlier detection: 5
consecutive 5xx, interval 1 s, base ejection 30 s, max ejection 100 %), oha
at a fixed rate for --seconds, one upstream killed (SIGKILL) at --kill-at.
Per proxy: the requests that failed (non-2xx or errors), latency quantiles,
the time from the kill to the ejection as each proxy's admin counters show it
(polled every 50 ms: Envoy's `outlier_detection.ejections_enforced_total`,
anymesh's `anymesh_outlier_ejections_total`; for anymesh also its `endpoint
ejected` log line's timestamp), and the connects the dead endpoint's port
refused after the kill and when the last one was (the TCP AttemptFails
counter of the run's own network namespace, read every 5 ms: as root the
run re-executes itself under `unshare --net`).

`ewma`: three upstreams, one answering after --slow-ms, two after --fast-ms;
oha at fixed concurrency for --seconds per balancer, one fresh anymesh per
balancer; p50/p90/p99 and each upstream's share.

`overhead`: one anymesh process serving `web` (no routing files: the
service's default route) and `web-resilient` (retries, connection-pool
limits, outlier detection and a retry budget) over the same two nginx ports;
wrk (32 connections) in ABBA blocks; throughput and CPU per request.

Each prints a table and writes the raw figures as JSON (--out, default
bench/results/resilience-<mode>-<UTC time>.json). Python 3.11 standard
library only; the tools are bench/run.py's (oha, wrk, nginx, Envoy 1.40 from
target/bench-tools). It measures target/release/anymesh unless --anymesh
says otherwise; it never builds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

sys.dont_write_bytecode = True  # no __pycache__ left in bench/
sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as R  # noqa: E402  (the harness's processes, tools and parsers)

UPSTREAM_PY = R.BENCH / "upstream.py"
HOST = "web"
NETNS_ENV = "ANYMESH_BENCH_OWN_NETNS"  # set in the re-executed child that runs in its own network namespace


def pct(a: float, b: float) -> str:
    """The change from b to a, in percent.

    >>> pct(103.0, 100.0), pct(97.5, 100.0), pct(1.0, 0.0)
    ('+3.0 %', '-2.5 %', '-')
    """
    return f"{(a - b) * 100 / b:+.1f} %" if b else "-"


def ms(us: float | None) -> str:
    """Microseconds shown as milliseconds.

    >>> ms(2345.6), ms(None)
    ('2.35', '-')
    """
    return "-" if us is None else f"{us / 1000:.2f}"


def first_after(samples: list[tuple[float, float]], t0: float, base: float) -> float | None:
    """The first sample time at or after `t0` whose value exceeds `base`,
    relative to `t0` (None when it never does).

    >>> round(first_after([(0.9, 0), (1.05, 0), (1.10, 1), (1.2, 1)], 1.0, 0), 3)
    0.1
    >>> first_after([(1.1, 0)], 1.0, 0) is None
    True
    """
    for t, v in samples:
        if t >= t0 and v > base:
            return t - t0
    return None


def iso_to_epoch(ts: str) -> float:
    """tracing's RFC 3339 timestamp (UTC) as Unix seconds.

    >>> iso_to_epoch("2026-12-07T20:01:02.500000Z") - iso_to_epoch("2026-12-07T20:01:00Z")
    2.5
    """
    ts = ts.rstrip("Z")
    frac = 0.0
    if "." in ts:
        ts, f = ts.split(".", 1)
        frac = float("0." + f)
    return dt.datetime.fromisoformat(ts).replace(tzinfo=dt.timezone.utc).timestamp() + frac


# --------------------------------------------------------------------------
# upstreams


class Upstreams:
    """bench/upstream.py processes, one per endpoint."""

    def __init__(self, tmp: Path, delays_ms: list[float]):
        self.ports = R.free_ports(len(delays_ms))
        self.procs = []
        for i, (port, delay) in enumerate(zip(self.ports, delays_ms)):
            logp = tmp / f"upstream-{i}.log"
            self.procs.append(R.PROCS.start([sys.executable, str(UPSTREAM_PY), "--port", str(port),
                                             "--delay-ms", str(delay)], logp))
        srv = R.Server("upstreams", None, 0, 0, None)
        srv.wait_listening(self.ports)

    def counts(self) -> list[int | None]:
        out = []
        for port in self.ports:
            try:
                out.append(int(R.http_get(port, "x", "/__count")[1]))
            except (OSError, ValueError):
                out.append(None)
        return out

    def kill(self, i: int) -> None:
        os.killpg(self.procs[i].pid, signal.SIGKILL)

    def stop(self) -> None:
        for p in self.procs:
            R.PROCS.stop(p)


# --------------------------------------------------------------------------
# proxies


def services_yaml(name: str, ports: list[int]) -> str:
    eps = "\n".join(f"      - {{address: 127.0.0.1, port: {p}, id: {name}-{i}}}" for i, p in enumerate(ports))
    return f"""services:
  - name: {name}
    ports: [{{name: http, port: 80, protocol: http}}]
    endpoints:
{eps}
"""


def start_anymesh(binary: str, d: Path, routes: str | None, log_filter: str = "warn",
                  services: str = "", extra: str = "") -> R.Server:
    out, admin = R.free_ports(2)
    d.mkdir(parents=True, exist_ok=True)
    (d / "services.yaml").write_text(services)
    conf = f"""listeners:
  outbound: 127.0.0.1:{out}
  admin: 127.0.0.1:{admin}
registries:
  - {{name: file, type: file, path: services.yaml}}
{extra}"""
    if routes:
        (d / "routes.yaml").write_text(routes)
        conf += "routing: [routes.yaml]\n"
    (d / "anymesh.yaml").write_text(conf)
    env = dict(os.environ, ANYMESH_LOG=log_filter, ANYMESH_LOG_FORMAT="json")
    env.pop("ANYMESH_WORKERS", None)
    log_path = d / "stderr.log"
    p = R.PROCS.start([binary, "proxy", "-c", str(d / "anymesh.yaml"), "--workers", "1"], log_path,
                      env=env, cwd=d)
    srv = R.Server("anymesh", p, out, out, log_path, admin_port=admin)
    srv.wait_listening([admin, out])
    deadline = time.monotonic() + 20
    while True:
        srv.check_alive("at start")
        try:
            if R.http_get(admin, "localhost", "/ready")[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise R.BenchError(f"anymesh not ready after 20s:\n{R.log_tail(log_path)}")
        time.sleep(0.05)
    return srv


def wait_ok(srv: R.Server, host: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        srv.check_alive("at start")
        try:
            st, body = R.http_get(srv.h1_port, host)
            if st == 200:
                return
        except OSError as e:
            st, body = 0, str(e)
        if time.monotonic() > deadline:
            raise R.BenchError(f"{srv.name}: GET / (Host: {host}) answers {st} {body[:200]!r}; "
                               f"its log ends:\n{R.log_tail(srv.log_path)}")
        time.sleep(0.05)


def chaos_routes(retry_on: str) -> str:
    """anymesh's configuration of the chaos scenario, in Istio's YAML."""
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {HOST}}}
spec:
  hosts: [{HOST}]
  http:
    - route: [{{destination: {{host: {HOST}}}}}]
      retries: {{attempts: 2, retryOn: "{retry_on}"}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {HOST}}}
spec:
  host: {HOST}
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 5
      interval: 1s
      baseEjectionTime: 30s
      maxEjectionPercent: 100
"""


def start_envoy(binary: str, d: Path, ports: list[int], retry_on: str) -> R.Server:
    """Envoy configured as Istio configures it for chaos_routes(): the
    route's retry policy with the previous-hosts predicate (and Istio's
    host_selection_retry_max_attempts 5), the cluster's outlier detection
    with Istio's enforcement settings (consecutive 5xx enforced, gateway
    failures and success rate not)."""
    port, admin = R.free_ports(2)
    d.mkdir(parents=True, exist_ok=True)
    eps = "\n".join(f"              - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, "
                    f"port_value: {p}}}}}}}" for p in ports)
    conf = d / "envoy.yaml"
    conf.write_text(f"""admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
    - name: chaos
      address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: chaos
                codec_type: AUTO
                route_config:
                  name: chaos
                  virtual_hosts:
                    - name: web
                      domains: ["*"]
                      routes:
                        - match: {{prefix: "/"}}
                          route:
                            cluster: web
                            retry_policy:
                              retry_on: "{retry_on}"
                              num_retries: 2
                              retry_host_predicate:
                                - name: envoy.retry_host_predicates.previous_hosts
                                  typed_config:
                                    "@type": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate
                              host_selection_retry_max_attempts: 5
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: web
      type: STATIC
      connect_timeout: 5s
      lb_policy: ROUND_ROBIN
      outlier_detection:
        consecutive_5xx: 5
        enforcing_consecutive_5xx: 100
        enforcing_consecutive_gateway_failure: 0
        enforcing_success_rate: 0
        interval: 1s
        base_ejection_time: 30s
        max_ejection_percent: 100
      load_assignment:
        cluster_name: web
        endpoints:
          - lb_endpoints:
{eps}
""")
    log_path = d / "stderr.log"
    p = R.PROCS.start([binary, "-c", str(conf), "--concurrency", "1", "--disable-hot-restart",
                       "--log-level", "warn"], log_path, cwd=d)
    srv = R.Server("envoy", p, port, port, log_path, admin_port=admin)
    srv.wait_listening([admin, port], timeout=30.0)
    return srv


def admin_text(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1.0) as r:
        return r.read().decode("utf-8", "replace")


class CounterPoller(threading.Thread):
    """The proxy's ejection counter, read from its admin port every `every`
    seconds: (monotonic time of the answer, value) pairs. Envoy:
    `cluster.web.outlier_detection.ejections_enforced_total` in /stats;
    anymesh: `anymesh_outlier_ejections_total` of the dead endpoint in
    /metrics."""

    def __init__(self, proxy: str, admin: int, dead_port: int, every: float = 0.05):
        super().__init__(daemon=True)
        self.admin, self.every = admin, every
        if proxy == "envoy":
            self.path = "/stats?filter=outlier_detection.ejections_enforced_total"
            self.rx = re.compile(r"^cluster\.web\.outlier_detection\.ejections_enforced_total: (\d+)$", re.M)
        else:
            self.path = "/metrics"
            self.rx = re.compile(r'^anymesh_outlier_ejections_total\{[^}]*endpoint="127\.0\.0\.1:'
                                 rf'{dead_port}"[^}}]*\}} (\d+)', re.M)
        self.samples: list[tuple[float, float]] = []
        self.stop_ev = threading.Event()

    def run(self) -> None:
        while not self.stop_ev.is_set():
            try:
                text = admin_text(self.admin, self.path)
                t = time.monotonic()
                m = self.rx.search(text)
                self.samples.append((t, float(m.group(1)) if m else 0.0))
            except OSError:
                pass
            self.stop_ev.wait(self.every)

    def ejection_after(self, t0: float) -> float | None:
        """Seconds from `t0` to the first answer showing one more ejection."""
        base = next((v for t, v in reversed(self.samples) if t < t0), 0.0)
        return first_after(self.samples, t0, base)


def tcp_attempt_fails() -> int:
    """The network namespace's count of connects that failed (a refused SYN
    among them): Tcp AttemptFails in /proc/net/snmp.

    >>> isinstance(tcp_attempt_fails(), int)
    True
    """
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("AttemptFails")])


class ConnectFailPoller(threading.Thread):
    """tcp_attempt_fails() every `every` seconds: (monotonic time, value).
    In a network namespace of the run's own (chaos runs in one when root),
    after the kill these are the connects refused by the dead endpoint's
    port, whichever proxy made them."""

    def __init__(self, every: float = 0.005):
        super().__init__(daemon=True)
        self.every, self.samples = every, []
        self.stop_ev = threading.Event()

    def run(self) -> None:
        while not self.stop_ev.is_set():
            self.samples.append((time.monotonic(), tcp_attempt_fails()))
            self.stop_ev.wait(self.every)

    def after(self, t0: float) -> tuple[int, float | None]:
        """Increase after `t0`, and the time (from `t0`) of the last sample
        that saw it grow.

        >>> p = ConnectFailPoller(); p.samples = [(0.5, 2), (1.01, 2), (1.03, 5), (1.05, 7), (1.07, 7)]
        >>> n, t = p.after(1.0); n, round(t, 3)
        (5, 0.05)
        """
        base = next((v for t, v in reversed(self.samples) if t < t0), 0)
        last, prev = None, base
        for t, v in self.samples:
            if t >= t0 and v > prev:
                last, prev = t - t0, v
        return prev - base, last


def anymesh_log_events(log_path: Path, dead_port: int) -> dict:
    """From anymesh's JSON log: when the dead endpoint was ejected (Unix
    times)."""
    ejected = []
    dead = f"127.0.0.1:{dead_port}"
    for line in log_path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        msg = ev.get("message", "")
        if msg == "endpoint ejected" and ev.get("endpoint") == dead:
            ejected.append(iso_to_epoch(ev["timestamp"]))
    return {"ejected": ejected}


def oha_cmd(tools: dict, port: int, seconds: float, conns: int, rate: int | None) -> list[str]:
    cmd = [tools["oha"], "--no-tui", "--output-format", "json", "-z", f"{seconds}s", "-c", str(conns),
           "--worker-threads", "1", "-H", f"Host: {HOST}"]
    if rate:
        cmd += ["-q", str(rate), "--latency-correction"]
    return cmd + [f"http://127.0.0.1:{port}/"]


def oha_summary(r: dict) -> dict:
    lat = r["latency_us"]
    return {"rps": round(r["rps"], 1), "ok": r["served"], "failed": r["error_count"],
            "status": r["status"], "errors": r["errors"],
            "p50_us": lat.get("p50"), "p90_us": lat.get("p90"), "p95_us": lat.get("p95"), "p99_us": lat.get("p99"),
            "p999_us": lat.get("p99.9"), "max_us": (r["summary"].get("slowest") or 0) * 1e6}


# --------------------------------------------------------------------------
# chaos


def chaos_one(args, tools: dict, tmp: Path, proxy: str) -> dict:
    d = tmp / proxy
    d.mkdir()
    ups = Upstreams(d, [args.upstream_delay_ms] * 3)
    victim = 2
    try:
        if proxy == "anymesh":
            # the ejection is logged at info
            filt = "warn,anymesh_proxy::balance=info"
            srv = start_anymesh(args.anymesh, d / "proxy", chaos_routes(args.retry_on), filt,
                                services_yaml(HOST, ups.ports))
        else:
            srv = start_envoy(tools["envoy"], d / "proxy", ups.ports, args.retry_on)
        wait_ok(srv, HOST)
        poller = CounterPoller(proxy, srv.admin_port, ups.ports[victim])
        refused = ConnectFailPoller()
        refused.start()
        cmd = oha_cmd(tools, srv.h1_port, args.seconds, args.conns, args.rate)
        load = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        t_start = time.monotonic()
        poller.start()
        time.sleep(max(0.0, t_start + args.kill_at - time.monotonic()))
        before = ups.counts()
        t_kill, wall_kill = time.monotonic(), time.time()
        ups.kill(victim)
        out, err = load.communicate(timeout=args.seconds + 60)
        poller.stop_ev.set()
        poller.join()
        refused.stop_ev.set()
        refused.join()
        n_refused, last_refused = refused.after(t_kill)
        if load.returncode != 0:
            raise R.BenchError(f"oha failed ({load.returncode}): {err[-2000:]}")
        srv.check_alive("after the run")
        after = ups.counts()
        # the proxy's own counters after the run, non-zero ones (to explain failures)
        path = "/metrics" if proxy == "anymesh" else "/stats?filter=^cluster\\.web\\."
        try:
            counters = [ln for ln in admin_text(srv.admin_port, path).splitlines()
                        if ln and not ln.startswith("#") and not re.search(r"[ :]0(\.0)?$", ln)]
        except OSError as e:
            counters = [f"unreadable: {e}"]
        res = {"proxy": proxy, "load": oha_summary(R.parse_oha(out)), "kill_at_s": round(t_kill - t_start, 3),
               "upstream_requests_before_kill": before, "upstream_requests_after": after,
               "refused_connects": n_refused, "last_refused_connect_s": last_refused,
               "own_netns": os.environ.get(NETNS_ENV) == "1"}
        res["ejection_polled_s"] = poller.ejection_after(t_kill)
        res["ejections_polled"] = poller.samples[-1][1] if poller.samples else None
        if proxy == "anymesh":
            ev = anymesh_log_events(srv.log_path, ups.ports[victim])
            ej = [t - wall_kill for t in ev["ejected"] if t >= wall_kill - 0.5]
            res["ejection_logged_s"] = ej[0] if ej else None
        res["counters"] = counters
        return res
    finally:
        ups.stop()
        for p in list(R.PROCS.live):
            R.PROCS.stop(p)


def render_chaos(rs: list[dict], args) -> str:
    head = (f"One of three upstreams (answering after {args.upstream_delay_ms:g} ms) killed (SIGKILL) at "
            f"t={args.kill_at:g} s of {args.seconds:g} s, "
            f"oha at {args.rate} req/s over {args.conns} connections; retries 2 on `{args.retry_on}` to "
            f"another host; outlier detection 5 consecutive 5xx, interval 1 s, base ejection 30 s, max 100 %.\n")
    lines = [head, "| | " + " | ".join(r["proxy"] for r in rs) + " |", "|---|" + "--:|" * len(rs)]

    def row(name, f):
        lines.append(f"| {name} | " + " | ".join(f(r) for r in rs) + " |")
    row("requests", lambda r: f"{r['load']['ok'] + r['load']['failed']:,}")
    row("failed (non-2xx or error)", lambda r: f"{r['load']['failed']}")
    row("kill → ejection seen in the admin counters, polled every 50 ms (ms)",
        lambda r: "-" if r["ejection_polled_s"] is None else f"{r['ejection_polled_s'] * 1000:.0f}")
    row("kill → ejection, the log line's timestamp (ms)",
        lambda r: "-" if r.get("ejection_logged_s") is None else f"{r['ejection_logged_s'] * 1000:.0f}")
    row("connects refused by the dead endpoint", lambda r: f"{r['refused_connects']:.0f}")
    row("kill → the last refused connect (ms)",
        lambda r: "-" if r["last_refused_connect_s"] is None else f"{r['last_refused_connect_s'] * 1000:.0f}")
    row("p50 (ms)", lambda r: ms(r["load"]["p50_us"]))
    row("p99 (ms)", lambda r: ms(r["load"]["p99_us"]))
    row("p99.9 (ms)", lambda r: ms(r["load"]["p99_us"] if r["load"]["p999_us"] is None else r["load"]["p999_us"]))
    row("max (ms)", lambda r: ms(r["load"]["max_us"]))
    return "\n".join(lines)


# --------------------------------------------------------------------------
# peak EWMA


def ewma_routes(policy: str) -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {HOST}}}
spec:
  host: {HOST}
  trafficPolicy:
    loadBalancer: {{simple: {policy}}}
"""


def ewma_one(args, tools: dict, tmp: Path, policy: str) -> dict:
    d = tmp / policy.lower()
    d.mkdir()
    delays = [args.fast_ms, args.fast_ms, args.slow_ms]
    ups = Upstreams(d, delays)
    try:
        srv = start_anymesh(args.anymesh, d / "proxy", ewma_routes(policy), "warn", services_yaml(HOST, ups.ports))
        wait_ok(srv, HOST)
        if args.warmup > 0:
            # the balancer's estimates start from Linkerd's default (30 ms) and
            # follow lower samples with a 10 s time constant: measure the steady state
            R.run_tool(oha_cmd(tools, srv.h1_port, args.warmup, args.conns, None), args.warmup + 60,
                       f"oha warm-up through anymesh ({policy})")
        before = ups.counts()
        out = R.run_tool(oha_cmd(tools, srv.h1_port, args.seconds, args.conns, None), args.seconds + 60,
                         f"oha through anymesh ({policy})")
        srv.check_alive("after the run")
        after = ups.counts()
        served = [(a or 0) - (b or 0) for a, b in zip(after, before)]
        total = sum(served) or 1
        return {"policy": policy, "delays_ms": delays, "load": oha_summary(R.parse_oha(out)),
                "upstream_requests": served, "slow_share": round(served[2] / total, 4)}
    finally:
        ups.stop()
        for p in list(R.PROCS.live):
            R.PROCS.stop(p)


def render_ewma(rs: list[dict], args) -> str:
    lines = [f"Three upstreams answering after {args.fast_ms:g}, {args.fast_ms:g} and {args.slow_ms:g} ms; "
             f"oha, {args.conns} connections (closed loop), {args.seconds:g} s per balancer after "
             f"{args.warmup:g} s of warm-up, a fresh anymesh (one worker thread) per balancer.\n",
             "| balancer | req/s | p50 (ms) | p90 (ms) | p95 (ms) | p99 (ms) | p99.9 (ms) "
             "| share to the slow endpoint | failed |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rs:
        ld = r["load"]
        lines.append(f"| {r['policy']} | {ld['rps']:,.0f} | {ms(ld['p50_us'])} | {ms(ld['p90_us'])} | "
                     f"{ms(ld.get('p95_us'))} | {ms(ld['p99_us'])} | {ms(ld['p999_us'])} | "
                     f"{r['slow_share'] * 100:.1f} % | {ld['failed']} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# overhead, side by side


RESILIENT = "web-resilient"


def overhead_routes() -> str:
    return f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {RESILIENT}}}
spec:
  hosts: [{RESILIENT}]
  http:
    - route: [{{destination: {{host: {RESILIENT}}}}}]
      retries: {{attempts: 2, perTryTimeout: 1s, retryOn: "5xx,connect-failure"}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {RESILIENT}}}
spec:
  host: {RESILIENT}
  trafficPolicy:
    connectionPool:
      tcp: {{maxConnections: 1000}}
      http: {{http1MaxPendingRequests: 1000, http2MaxRequests: 1000, maxRetries: 100}}
    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}}
    retryBudget: {{percent: 20, minRetryConcurrency: 3}}
"""


def overhead(args, tools: dict, tmp: Path) -> dict:
    rargs = SimpleNamespace(idle_conns=0, quiet_wait=args.quiet_wait, max_foreign=0.25, retries=1)
    ctx = R.Ctx(rargs, tmp, tools, args.anymesh)
    upstream = R.start_upstream(ctx)
    a, b = ctx.up_h1
    services = services_yaml(HOST, [a, b]) + services_yaml(RESILIENT, [a, b]).split("services:\n", 1)[1]
    srv = start_anymesh(args.anymesh, tmp / "anymesh", overhead_routes(), "warn", services)
    for h in (HOST, RESILIENT):
        R.verify_h1(srv, h)
    cell = {"id": "overhead", "tool": "wrk", "conns": args.conns}
    keep = ("rps", "served", "errors", "cpu_us_per_req", "foreign_share", "wall_s")
    blocks = []
    for blk in range(args.blocks):
        order = ["plain", "resilient", "resilient", "plain"] if blk % 2 == 0 else \
            ["resilient", "plain", "plain", "resilient"]
        block: dict = {"order": order, "plain": [], "resilient": []}
        for key in order:
            host = RESILIENT if key == "resilient" else HOST
            rec = R.measured_run(ctx, cell, srv, host, [srv, upstream], upstream, args.seconds)
            block[key].append({k: rec[k] for k in keep if k in rec})
            R.log(f"  block {blk + 1} {key:<9} {rec['rps']:,.0f} req/s, "
                  f"{rec.get('cpu_us_per_req', 0):.2f} µs CPU/req, foreign {rec['foreign_share']:.0%}")
        blocks.append(block)
    return {"seconds": args.seconds, "conns": args.conns, "blocks": blocks}


def overhead_ratios(res: dict, key: str) -> list[float]:
    """Per block: the resilient runs' mean of `key` over the plain runs' mean.

    >>> overhead_ratios({"blocks": [{"plain": [{"x": 100}, {"x": 100}],
    ...                              "resilient": [{"x": 99}, {"x": 97}]}]}, "x")
    [0.98]
    """
    out = []
    for b in res["blocks"]:
        p = statistics.mean(r[key] for r in b["plain"])
        q = statistics.mean(r[key] for r in b["resilient"])
        out.append(round(q / p, 4))
    return out


def render_overhead(res: dict) -> str:
    rps = overhead_ratios(res, "rps")
    cpu = overhead_ratios(res, "cpu_us_per_req")

    def med_of(key, which):
        return statistics.median(r[key] for b in res["blocks"] for r in b[which])
    lines = [f"One anymesh process (1 worker), wrk -c{res['conns']} for {res['seconds']} s per run, "
             f"{len(res['blocks'])} ABBA blocks; `web`: the service's default route; `{RESILIENT}`: retries, "
             f"connection-pool limits, outlier detection, retry budget.\n",
             "| | plain | resilient | resilient / plain, per block |", "|---|--:|--:|---|",
             f"| req/s (median) | {med_of('rps', 'plain'):,.0f} | {med_of('rps', 'resilient'):,.0f} | "
             f"{', '.join(f'{x:.3f}' for x in rps)} |",
             f"| CPU µs / request (median) | {med_of('cpu_us_per_req', 'plain'):.2f} | "
             f"{med_of('cpu_us_per_req', 'resilient'):.2f} | {', '.join(f'{x:.3f}' for x in cpu)} |"]
    return "\n".join(lines)


# --------------------------------------------------------------------------


def parse_args(argv: list[str]):
    ap = argparse.ArgumentParser(prog="bench/resilience", description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["chaos", "ewma", "overhead"])
    ap.add_argument("--anymesh", default=str(R.cargo_target_dir() / "release" / "anymesh"),
                    help="the anymesh binary (default: target/release/anymesh)")
    ap.add_argument("--seconds", type=float, default=None, help="per run (chaos 10, ewma 10, overhead 5)")
    ap.add_argument("--conns", type=int, default=None, help="connections (chaos 16, ewma 16, overhead 32)")
    ap.add_argument("--rate", type=int, default=500, help="chaos: requests per second (oha -q)")
    ap.add_argument("--kill-at", type=float, default=3.0, help="chaos: seconds into the load")
    ap.add_argument("--retry-on", default="connect-failure,refused-stream", help="chaos: both proxies' retry-on")
    ap.add_argument("--proxies", default="anymesh,envoy", help="chaos: which, in order")
    ap.add_argument("--upstream-delay-ms", type=float, default=0.0,
                    help="chaos: every upstream answers after this delay (requests in flight at the kill)")
    ap.add_argument("--shared-netns", action="store_true",
                    help="chaos: stay in the machine's network namespace (as root it runs in one of its own, "
                         "so the refused-connect counts are the run's alone)")
    ap.add_argument("--fast-ms", type=float, default=2.0, help="ewma: the two fast upstreams' delay")
    ap.add_argument("--slow-ms", type=float, default=20.0, help="ewma: the slow upstream's delay")
    ap.add_argument("--warmup", type=float, default=20.0, help="ewma: seconds of load before measuring")
    ap.add_argument("--policies", default="ROUND_ROBIN,LEAST_REQUEST,PEAK_EWMA", help="ewma: in order")
    ap.add_argument("--blocks", type=int, default=2, help="overhead: ABBA blocks")
    ap.add_argument("--quiet-wait", type=float, default=10.0,
                    help="overhead: seconds to wait for a quiet machine before each run")
    ap.add_argument("--out", default=None, help="JSON output path")
    a = ap.parse_args(argv)
    defaults = {"chaos": (10.0, 16), "ewma": (10.0, 16), "overhead": (5.0, 32)}[a.mode]
    a.seconds = a.seconds if a.seconds is not None else defaults[0]
    a.conns = a.conns if a.conns is not None else defaults[1]
    if a.mode == "overhead":
        a.seconds = int(a.seconds)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    a.out = a.out or str(R.BENCH / "results" / f"resilience-{a.mode}-{stamp}.json")
    return a


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if not Path(args.anymesh).exists():
        R.log(f"no anymesh binary at {args.anymesh} (build it with cargo build --release, or give --anymesh)")
        return 2

    if args.mode == "chaos" and os.geteuid() == 0 and not args.shared_netns and os.environ.get(NETNS_ENV) != "1":
        # A network namespace of its own: its TCP counters see only this run's
        # connects (other work on the machine makes and refuses connections too).
        env = dict(os.environ, **{NETNS_ENV: "1"})
        cmd = ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
               sys.executable, str(Path(__file__).resolve()), *argv]
        return subprocess.run(cmd, env=env).returncode

    def body(tmp: Path, result: dict) -> None:
        tools = R.ensure_tools()
        result["tools"] = {k: v for k, v in R.tool_versions(tools).items() if k in ("oha", "envoy", "wrk", "nginx")}
        if args.mode == "chaos":
            rs = []
            for p in args.proxies.split(","):
                R.log(f"chaos through {p}")
                rs.append(chaos_one(args, tools, tmp, p))
            result["runs"] = rs
            table = render_chaos(rs, args)
        elif args.mode == "ewma":
            rs = []
            for pol in args.policies.split(","):
                R.log(f"one slow upstream, {pol}")
                rs.append(ewma_one(args, tools, tmp, pol))
            result["runs"] = rs
            table = render_ewma(rs, args)
        else:
            result["overhead"] = overhead(args, tools, tmp)
            table = render_overhead(result["overhead"])
        result["table_markdown"] = table
        print(table, flush=True)

    return R.side_run(f"anymesh-resilience-{args.mode}-", args, {"mode": args.mode}, body)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
