"""Benchmark resolve() at cluster scale: 10,000 pods, 1,000 policies, 500 nodes.

    .venv/bin/python bench/bench_resolve.py [--runs 7]

Scenarios (all seeded, so every run resolves the same input):
* namespaced:  100 namespaces x 100 pods; 950 MemoryReclaimPolicies (9-10 per
  namespace, label selectors over 10 apps, all three memoryHigh forms) and 50
  ClusterMemoryReclaimPolicies selecting namespaces by label.
* overlapping: 1,000 ClusterMemoryReclaimPolicies over all namespaces, in 10
  priority levels, each selecting 1 of 20 apps: every pod is selected by ~50
  policies, with many equal-precedence conflicts (a worst case).
Prints median and min wall time and median CPU time of resolve() and of json.dumps of
all plans (what the operator does to compare plans).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from headroom.controller.resolve import resolve

N_PODS, N_POLICIES, N_NODES, N_NS = 10_000, 1_000, 500, 100


def make_pods(rng: random.Random, apps: int) -> list[dict[str, Any]]:
    pods = []
    for i in range(N_PODS):
        ns = f"ns-{i % N_NS}"
        app = f"app-{rng.randrange(apps)}"
        mem = rng.choice(["256Mi", "512Mi", "1Gi", "2Gi", "4Gi"])
        containers = [{"name": "main", "resources": {
            "requests": {"cpu": "100m", "memory": mem},
            "limits": {"memory": mem} if rng.random() < 0.9 else {}}}]
        init = []
        if rng.random() < 0.3:
            init.append({"name": "proxy", "restartPolicy": "Always", "resources": {
                "requests": {"memory": "64Mi"}, "limits": {"memory": "128Mi"}}})
        pods.append({
            "metadata": {"name": f"pod-{i}", "namespace": ns, "uid": f"uid-{i:06d}",
                         "labels": {"app": app, "tier": rng.choice(["front", "back"]),
                                    "pod-template-hash": f"{rng.randrange(1 << 32):08x}"}},
            "spec": {"nodeName": f"node-{rng.randrange(N_NODES):03d}",
                     "containers": containers, "initContainers": init},
            "status": {"phase": "Running"},
        })
    return pods


def memory_high(i: int) -> dict[str, Any]:
    return [{"limitPercent": 90}, {"throttlingPercent": 80}, {"bytes": "1536Mi"}][i % 3]


def namespaced(rng: random.Random) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    pods = make_pods(rng, apps=10)
    namespaces = [{"metadata": {"name": f"ns-{n}", "labels": {"env": ["prod", "dev"][n % 2]}}}
                  for n in range(N_NS)]
    policies = []
    for i in range(N_POLICIES - 50):
        sel: dict[str, Any] = {"matchLabels": {"app": f"app-{i // N_NS % 10}"}}
        if i % 4 == 0:
            sel["matchExpressions"] = [{"key": "tier", "operator": "In", "values": ["front"]}]
        policies.append({"metadata": {"name": f"p-{i}", "namespace": f"ns-{i % N_NS}"},
                         "spec": {"selector": sel, "memoryHigh": memory_high(i),
                                  "reclaim": {"nodeCpuBudget": "500m"}, "priority": i % 3}})
    cluster = [{"metadata": {"name": f"c-{i}"},
                "spec": {"namespaceSelector": {"matchLabels": {"env": ["prod", "dev"][i % 2]}},
                         "selector": {"matchLabels": {"tier": "back"}},
                         "memoryHigh": memory_high(i), "priority": -1}} for i in range(50)]
    return policies, cluster, pods, namespaces


def overlapping(rng: random.Random) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    pods = make_pods(rng, apps=20)
    namespaces = [{"metadata": {"name": f"ns-{n}"}} for n in range(N_NS)]
    cluster = [{"metadata": {"name": f"c-{i:04d}"},
                "spec": {"namespaceSelector": {},
                         "selector": {"matchLabels": {"app": f"app-{i % 20}"}},
                         "memoryHigh": memory_high(i), "priority": i % 10}}
               for i in range(N_POLICIES)]
    return [], cluster, pods, namespaces


def timed(fn: Callable[[], Any], runs: int) -> tuple[list[float], list[float], Any]:
    """Wall and CPU seconds of each run (CPU time is steadier on a shared machine)."""
    wall, cpu, result = [], [], None
    for _ in range(runs):
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return wall, cpu, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    nodes = [{"metadata": {"name": f"node-{n:03d}"}} for n in range(N_NODES)]
    print(f"{'scenario':<12} {'step':<11} {'wall median ms':>15} {'wall min ms':>12} "
          f"{'cpu median ms':>14} {'planned':>8} {'skipped':>8} {'conflicting':>12}")
    for name, build in (("namespaced", namespaced), ("overlapping", overlapping)):
        policies, cluster, pods, namespaces = build(random.Random(1))
        wall, cpu, res = timed(lambda p=policies, c=cluster, q=pods, n=namespaces:
                           resolve(p, c, q, n, nodes), args.runs)
        planned = sum(len(p["pods"]) for p in res.plans.values())
        skipped = sum(len(r.skipped) for r in res.policies.values())
        conflicting = sum(1 for r in res.policies.values() if r.conflicts)
        d_wall, d_cpu, _ = timed(lambda r=res: json.dumps(r.plans, separators=(",", ":")),
                                 args.runs)
        for step, w, c in (("resolve", wall, cpu), ("json.dumps", d_wall, d_cpu)):
            print(f"{name:<12} {step:<11} {statistics.median(w) * 1e3:>15.1f} "
                  f"{min(w) * 1e3:>12.1f} {statistics.median(c) * 1e3:>14.1f} {planned:>8} "
                  f"{skipped:>8} {conflicting:>12}")


if __name__ == "__main__":
    main()
