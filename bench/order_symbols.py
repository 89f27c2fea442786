#!/usr/bin/env python3
"""Writes link/symbol-order.txt: the functions anymesh runs while starting and
serving requests, which build.rs has the linker place together at the front of
the release binary's code (see build.rs and docs/performance.md, "Idle RSS").

The list comes from a real run under valgrind's callgrind: the benchmark's
fixed upstream (nginx) and anymesh with the benchmark's configuration (file
registry, a VirtualService with a header match and a weighted split); then
HTTP/1.1 and HTTP/2 requests through both services, the admin endpoints, and a
graceful stop. Every function of the binary that executed is listed, sorted by
name so that a regenerated list diffs cleanly.

    bench/order-symbols                  # build, run, write link/symbol-order.txt
    bench/order-symbols --check [BIN]    # how much of the list BIN still has

Run it again after large changes (new dependencies, a new compiler): a listed
function the binary no longer has is skipped by the linker, so a stale list
only costs memory.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (the harness: its servers, tools and process handling)

ORDER_FILE = bench.SYMBOL_ORDER
HEADER = """\
# Functions anymesh runs while starting and serving requests, placed together
# at the front of the release binary's code by build.rs (LLD's
# --symbol-ordering-file). Written by bench/order-symbols; do not edit by hand.
"""


def executed_functions(callgrind_out: Path, binary: str) -> set[str]:
    """Every function of `binary` named in a callgrind profile written with
    --compress-strings=no --demangle=no."""
    names: set[str] = set()
    obj = None
    real = os.path.realpath(binary)
    for line in callgrind_out.read_text(errors="replace").splitlines():
        if line.startswith("ob="):
            obj = os.path.realpath(line[3:].strip())
        elif line.startswith("fn=") and obj == real:
            name = re.sub(r"'\d+$", "", line[3:].strip())  # callgrind's recursion marks
            names.add(name)
    return names


def check(binary: str) -> int:
    cov = bench.symbol_order_coverage(binary)
    if not cov or not cov["listed"]:
        print(f"{ORDER_FILE} is missing or empty, or nm failed")
        return 1
    found, listed = cov["found"], cov["listed"]
    print(f"{found} of {listed} listed functions ({100 * found / listed:.0f} %) are in {binary}")
    return 0


def generate(binary: str) -> int:
    if not shutil.which("valgrind"):
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "valgrind"]):
            subprocess.run(sudo + cmd, env=env, stdin=subprocess.DEVNULL, check=True)
    tools = bench.ensure_tools()
    tmp = Path(tempfile.mkdtemp(prefix="anymesh-order-"))
    os.chmod(tmp, 0o755)
    profile = tmp / "callgrind.out"
    # start_anymesh runs `ctx.anymesh_bin proxy ...`: make that anymesh under callgrind
    wrapper = tmp / "anymesh-under-callgrind"
    wrapper.write_text(f"""#!/bin/sh
exec valgrind --tool=callgrind --compress-strings=no --compress-pos=no --demangle=no \\
    --callgrind-out-file='{profile}' '{binary}' "$@"
""")
    wrapper.chmod(0o755)
    args = argparse.Namespace(idle_conns=0)
    ctx = bench.Ctx(args, tmp, tools, str(wrapper))
    try:
        upstream = bench.start_upstream(ctx)
        srv = bench.start_anymesh(ctx, 1)  # also GETs both services over HTTP/1.1
        for host in (bench.HOST, bench.HOST_ROUTED):
            for mode in (["-m", "2"], ["--h1"]):  # HTTP/2 with 2 streams per connection; HTTP/1.1
                bench.run_tool([tools["h2load"], *mode, "-n", "200", "-c", "4",
                                "-H", f":authority: {host}", f"http://127.0.0.1:{srv.h1_port}/"],
                               120, "h2load")
        for path in ("/ready", "/metrics"):
            bench.http_get(srv.admin_port, "localhost", path, timeout=30)
        bench.PROCS.stop(srv.proc, timeout=60)  # a graceful stop writes the profile
        bench.PROCS.stop(upstream.proc)
        names = executed_functions(profile, binary) & bench.binary_symbols(binary)
    finally:
        bench.PROCS.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    if len(names) < 500:
        print(f"only {len(names)} functions found in the profile: not writing {ORDER_FILE}", file=sys.stderr)
        return 1
    ORDER_FILE.parent.mkdir(exist_ok=True)
    ORDER_FILE.write_text(HEADER + "".join(f"{n}\n" for n in sorted(names)))
    print(f"wrote {len(names)} functions to {ORDER_FILE}")
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only report how much of the list BIN has")
    p.add_argument("binary", nargs="?", help="the anymesh binary (default: build target/release/anymesh)")
    a = p.parse_args(argv)
    if a.binary:
        binary = a.binary
    else:
        binary = bench.build_anymesh(argparse.Namespace(anymesh=None, no_build=a.check))
    binary = os.path.realpath(binary)
    try:
        return check(binary) if a.check else generate(binary)
    except (bench.BenchError, subprocess.CalledProcessError) as e:
        print(f"failed: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
