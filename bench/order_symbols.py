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

    bench/order-symbols                          # build, run, write link/symbol-order.txt
    bench/order-symbols --check [BIN]            # is the list still BIN's? (exit 1 when stale)
    bench/order-symbols --check --no-profile [BIN]   # only: how much of the list BIN still has

--check runs the same workload under callgrind as writing the list does (about
a minute) and fails when less than 90 % of the functions the binary ran are
listed, or less than 90 % of the listed functions are still in the binary;
`--no-profile` only counts the latter (nm, a second). Without a BIN it checks
target/release/anymesh as it is (no build). CI runs `bench/order-symbols
--check` after the benchmark's smoke run (scripts/test), so the list cannot go
stale silently: a function the list misses is laid out elsewhere, and a listed
function the binary no longer has is skipped by the linker; either only costs
memory (idle RSS), never correctness.
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

MIN_SHARE = 0.90  # --check: the least share of each side (see the module doc)

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


def check(binary: str, profile: bool) -> int:
    """Exit status 0 when link/symbol-order.txt still fits `binary`, 1 when
    it is stale (or missing)."""
    cov = bench.symbol_order_coverage(binary)
    if not cov or not cov["listed"]:
        print(f"{ORDER_FILE} is missing or empty, or nm failed")
        return 1
    found, listed = cov["found"], cov["listed"]
    print(f"{found} of {listed} listed functions ({100 * found / listed:.1f} %) are in {binary}")
    stale = found < MIN_SHARE * listed
    if profile:
        ran = profiled_functions(binary)
        covered = len(ran & set(bench.listed_symbols()))
        print(f"{covered} of the {len(ran)} functions it ran while starting and serving requests "
              f"({100 * covered / max(len(ran), 1):.1f} %) are listed")
        stale = stale or covered < MIN_SHARE * len(ran)
    if stale:
        print(f"{ORDER_FILE.relative_to(bench.REPO)} is stale (under {MIN_SHARE:.0%}): write it again with "
              f"bench/order-symbols and commit it")
        return 1
    print(f"{ORDER_FILE.relative_to(bench.REPO)} is up to date (at least {MIN_SHARE:.0%} both ways)")
    return 0


def ensure_valgrind() -> None:
    if not shutil.which("valgrind"):
        bench.apt_install(["valgrind"])


def profiled_functions(binary: str) -> set[str]:
    """The functions of `binary` that ran (under callgrind) while it started
    with the benchmark's configuration, served HTTP/1.1 and HTTP/2 requests
    through both services and the admin endpoints, and stopped gracefully."""
    ensure_valgrind()
    tools = bench.ensure_tools(system_only=True)  # nginx and h2load
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
        return executed_functions(profile, binary) & bench.binary_symbols(binary)
    finally:
        bench.PROCS.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def generate(binary: str) -> int:
    names = profiled_functions(binary)
    if len(names) < 500:
        print(f"only {len(names)} functions found in the profile: not writing {ORDER_FILE}", file=sys.stderr)
        return 1
    ORDER_FILE.parent.mkdir(exist_ok=True)
    ORDER_FILE.write_text(HEADER + "".join(f"{n}\n" for n in sorted(names)))
    print(f"wrote {len(names)} functions to {ORDER_FILE}")
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench/order-symbols", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 when the list is stale for BIN (see below)")
    p.add_argument("--no-profile", action="store_true",
                   help="with --check: only count the listed functions BIN still has (no callgrind run)")
    p.add_argument("binary", nargs="?",
                   help="the anymesh binary (default: target/release/anymesh, built first unless --check)")
    a = p.parse_args(argv)
    if a.binary:
        binary = a.binary
    else:
        binary = bench.build_anymesh(argparse.Namespace(anymesh=None, no_build=a.check))
    binary = os.path.realpath(binary)
    try:
        return check(binary, profile=not a.no_profile) if a.check else generate(binary)
    except (bench.BenchError, subprocess.CalledProcessError) as e:
        print(f"failed: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
