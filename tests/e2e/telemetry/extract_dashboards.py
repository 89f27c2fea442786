#!/usr/bin/env python3
"""Copies the PromQL of Istio's Grafana dashboards into istio_dashboards.json.

Usage: extract_dashboards.py ISTIO_CHECKOUT > istio_dashboards.json

ISTIO_CHECKOUT is a git clone of https://github.com/istio/istio; the
dashboards are read from manifests/addons/dashboards at its HEAD, and the
commit is recorded. Only the queries are copied (one entry per panel target
with an `expr`), with the row and panel titles, the target's refId and legend;
the variables' meanings (the "variables" block) are kept from the existing
istio_dashboards.json next to this script, since they are ours.
"""
import json
import os
import subprocess
import sys

DASHBOARDS = [
    # (file, grafana.com id, generated from)
    ("istio-mesh-dashboard.gen.json", 7639, "istio-mesh.libsonnet"),
    ("istio-service-dashboard.json", 7636, None),
    ("istio-workload-dashboard.json", 7630, None),
]
DIR = "manifests/addons/dashboards"


def git(repo, *args):
    return subprocess.run(["git", "-C", repo, *args], check=True,
                          capture_output=True, text=True).stdout


def queries(panels, row=None):
    for p in panels:
        if p.get("type") == "row":
            yield from queries(p.get("panels", []), p.get("title"))
            continue
        for t in p.get("targets") or []:
            if "expr" in t:
                yield {
                    "row": row,
                    "panel": p.get("title"),
                    "ref": t.get("refId"),
                    "legend": t.get("legendFormat"),
                    "expr": t["expr"],
                }


def main():
    repo = sys.argv[1]
    commit = git(repo, "rev-parse", "HEAD").strip()
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "istio_dashboards.json")) as f:
        variables = json.load(f)["variables"]
    out = {
        "origin": {
            "repository": "https://github.com/istio/istio",
            "commit": commit,
            "path": DIR,
            "copied_by": "tests/e2e/telemetry/extract_dashboards.py",
        },
        "variables": variables,
        "dashboards": [],
    }
    for name, gid, generated_from in DASHBOARDS:
        d = json.loads(git(repo, "show", f"HEAD:{DIR}/{name}"))
        out["dashboards"].append({
            "title": d["title"],
            "grafana_com_id": gid,
            "file": f"{DIR}/{name}",
            "generated_from": generated_from and f"{DIR}/{generated_from}",
            "queries": list(queries(d["panels"])),
        })
    json.dump(out, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
