"""Incremental resolution against the full recomputation, in process, at 10k-150k pods.

    .venv/bin/python bench/bench_incremental.py [--size 10000:500 --size 50000:2000
        --size 150000:5000] [--policies 1000] [--events 1000] [--full-runs 3] [--profile]

Each size (pods:nodes) runs in its own subprocess (so resident memory is that size's
alone). The cluster comes from a seeded generator: pods as the API server returns
them (managedFields, annotations, env, status conditions), slimmed as the informer
caches keep them; namespaces, nodes and 1,000 policies (950 namespaced over 10 apps in
100 namespaces, 50 cluster policies by namespace label), like bench_resolve.py.
Per size, each measurement is also made for the full recomputation (resolve() over
everything, then canonical JSON of every plan to compare with what the server
has: the operator's round before incremental resolution), in the same process:

* pod event: one pod relabelled (moves between policies), deleted or created; CPU of
  applying it plus building and comparing the plans of the nodes it dirtied (p50, p99);
* policy change: a new priority-10 cluster policy selecting 1%, 10% or 100% of the pods
  (label `shard`), then deleted again (CPU of each, plus its plan comparisons);
* rolling update of 1,000 pods of one app: 10 debounce windows of 100 pods replaced
  (old deleted, new created on another node); CPU until all plans reflect it and plan
  writes per window (the goal: one per affected node per window);
* cold start (every object applied, every plan built) and restart (the same with the
  plans already on the server: writes must be 0);
* resident memory (VmRSS) with the caches alone, with the incremental state, and the
  peak (VmHWM) during a full resolve().

`--profile` runs cProfile over the pod events and the 1% policy change and prints the
top functions by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pathlib
import pstats
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]

from headroom.controller.incremental import IncrementalResolver  # noqa: E402
from headroom.controller.informer import ObjectCache, slim_pod  # noqa: E402
from headroom.controller.plans import canonical  # noqa: E402
from headroom.controller.resolve import resolve  # noqa: E402

N_NS, APPS, SHARDS = 100, 10, 100


def rss() -> dict[str, int]:
    out = {}
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) * 1024
    return out


def full_pod(rng: random.Random, i: int, nodes: int, app: str | None = None,
             name: str | None = None) -> dict[str, Any]:
    """A pod roughly as the API server lists it (what the informer slims)."""
    ns = f"ns-{i % N_NS}"
    app = app or f"app-{rng.randrange(APPS)}"
    mem = rng.choice(["256Mi", "512Mi", "1Gi", "2Gi", "4Gi"])
    name = name or f"{app}-{i:06d}"
    containers = [{"name": "main", "image": "registry.example/app:1.2.3",
                   "env": [{"name": f"VAR_{k}", "value": "x" * 20} for k in range(5)],
                   "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                   "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                   "resources": {"requests": {"cpu": "100m", "memory": mem},
                                 "limits": {"memory": mem} if rng.random() < 0.9 else {}}}]
    init = []
    if rng.random() < 0.3:
        init.append({"name": "proxy", "restartPolicy": "Always", "image": "proxy:1",
                     "resources": {"requests": {"memory": "64Mi"},
                                   "limits": {"memory": "128Mi"}}})
    return {
        "metadata": {"name": name, "namespace": ns, "uid": f"uid-{i:07d}-{rng.random():.6f}",
                     "resourceVersion": str(1000 + i), "creationTimestamp": "2026-01-01T00:00:00Z",
                     "generateName": f"{app}-",
                     "labels": {"app": app, "tier": rng.choice(["front", "back"]),
                                "shard": f"s-{i % SHARDS}",
                                "pod-template-hash": f"{rng.randrange(1 << 32):08x}"},
                     "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                          "name": f"{app}-abc", "uid": "rs-uid"}],
                     "managedFields": [{"manager": "kube-controller-manager",
                                        "operation": "Update", "fieldsV1": {"f:spec": {}}}]},
        "spec": {"nodeName": f"node-{rng.randrange(nodes):04d}", "containers": containers,
                 "initContainers": init, "volumes": [{"name": "data", "emptyDir": {}}],
                 "serviceAccountName": "default", "restartPolicy": "Always"},
        "status": {"phase": "Running", "qosClass": "Burstable", "podIP": "10.0.0.1",
                   "conditions": [{"type": "Ready", "status": "True"}],
                   "containerStatuses": [{"name": "main", "ready": True, "restartCount": 0}]},
    }


def memory_high(i: int) -> dict[str, Any]:
    return [{"limitPercent": 90}, {"throttlingPercent": 80}, {"bytes": "1536Mi"}][i % 3]


def make_policies(n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    cluster_n = min(50, n // 20)
    policies = []
    for i in range(n - cluster_n):
        sel: dict[str, Any] = {"matchLabels": {"app": f"app-{i // N_NS % APPS}"}}
        if i % 4 == 0:
            sel["matchExpressions"] = [{"key": "tier", "operator": "In", "values": ["front"]}]
        policies.append({"metadata": {"name": f"p-{i}", "namespace": f"ns-{i % N_NS}",
                                      "resourceVersion": "1", "generation": 1},
                         "spec": {"selector": sel, "memoryHigh": memory_high(i),
                                  "reclaim": {"nodeCpuBudget": "500m"}, "priority": i % 3}})
    cluster = [{"metadata": {"name": f"c-{i}", "resourceVersion": "1", "generation": 1},
                "spec": {"namespaceSelector": {"matchLabels": {"env": ["prod", "dev"][i % 2]}},
                         "selector": {"matchLabels": {"tier": "back"}},
                         "memoryHigh": memory_high(i), "priority": -1}}
               for i in range(cluster_n)]
    return policies, cluster


def shard_policy(fraction: float) -> dict[str, Any]:
    shards = round(SHARDS * fraction)
    sel: dict[str, Any] = {} if shards >= SHARDS else {"matchExpressions": [
        {"key": "shard", "operator": "In", "values": [f"s-{s}" for s in range(shards)]}]}
    return {"metadata": {"name": f"bench-{shards}", "resourceVersion": "1", "generation": 1},
            "spec": {"namespaceSelector": {}, "selector": sel,
                     "memoryHigh": {"bytes": "300Mi"}, "priority": 10}}


class World:
    """The informer caches (slimmed objects) plus, per kind, the event helpers."""

    def __init__(self, pods: int, nodes: int, policies: int, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.n_nodes = nodes
        self.caches = {k: ObjectCache() for k in ("policies", "cluster_policies", "pods",
                                                  "namespaces", "nodes")}
        self.caches["nodes"].replace({"metadata": {"name": f"node-{n:04d}", "uid": f"n-{n}",
                                                   "resourceVersion": "1"}}
                                     for n in range(nodes))
        self.caches["namespaces"].replace(
            {"metadata": {"name": f"ns-{n}", "resourceVersion": "1",
                          "labels": {"env": ["prod", "dev"][n % 2],
                                     "kubernetes.io/metadata.name": f"ns-{n}"}}}
            for n in range(N_NS))
        self.caches["pods"].replace(slim_pod(full_pod(self.rng, i, nodes)) for i in range(pods))
        pol, cl = make_policies(policies)
        self.caches["policies"].replace(pol)
        self.caches["cluster_policies"].replace(cl)
        self.next_id = pods

    def values(self, kind: str) -> list[dict[str, Any]]:
        return self.caches[kind].values()

    def full(self) -> Any:
        return resolve(self.values("policies"), self.values("cluster_policies"),
                       self.values("pods"), self.values("namespaces"), self.values("nodes"))

    def feed(self, inc: IncrementalResolver) -> None:
        for kind in ("nodes", "namespaces", "policies", "cluster_policies", "pods"):
            for obj in self.values(kind):
                inc.apply(kind, "ADDED", obj)


class Operator:
    """What a round costs after the events are applied: each dirty node's plan built and
    compared with the server's (dict equality), each dirty policy's report built (timed
    apart: `report_cpu`, it grows with the policy's pods, not with the event)."""

    def __init__(self, inc: IncrementalResolver) -> None:
        self.inc = inc
        self.server: dict[str, dict[str, Any]] = {}      # node -> spec on the server
        self.writes = 0
        self.report_cpu: list[float] = []

    def round(self, reports: bool = True) -> int:
        nodes, policies = self.inc.take_dirty()
        writes = 0
        for node in nodes:
            spec = self.inc.plan(node)
            if self.server.get(node) != spec:
                writes += 1
                if spec is None:
                    del self.server[node]
                else:
                    self.server[node] = spec
        if reports:
            t0 = time.process_time()
            for ref in policies:
                self.inc.report(ref)
            self.report_cpu.append(time.process_time() - t0)
        self.writes += writes
        return writes


def full_round(world: World, server: dict[str, str]) -> int:
    """Today's round: resolve() over everything, canonical JSON of every plan, compare."""
    res = world.full()
    writes = 0
    for node, spec in res.plans.items():
        text = canonical(spec)
        if server.get(node) != text:
            server[node] = text
            writes += 1
    return writes


def same(server: dict[str, str], op: Operator) -> bool:
    return server.keys() == op.server.keys() and all(
        canonical(spec) == server[n] for n, spec in op.server.items())


def cpu(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.process_time()
    out = fn()
    return time.process_time() - t0, out


def pod_events(world: World, n: int) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """n pod events: relabels (app changes), deletions and creations, seeded."""
    rng = random.Random(7)
    keys = sorted(world.caches["pods"]._objects)
    for _ in range(n):
        r = rng.random()
        key = keys[rng.randrange(len(keys))]
        pod = world.caches["pods"]._objects.get(key)
        if pod is None or r < 0.2:
            i = world.next_id
            world.next_id += 1
            new = slim_pod(full_pod(rng, i, world.n_nodes))
            keys.append((new["metadata"]["namespace"], new["metadata"]["name"]))
            yield "ADDED", "pods", new
        elif r < 0.4:
            yield "DELETED", "pods", pod
        else:
            meta = {**pod["metadata"], "labels": {**pod["metadata"]["labels"],
                                                  "app": f"app-{rng.randrange(APPS)}"},
                    "resourceVersion": str(int(pod["metadata"]["resourceVersion"]) + 1)}
            yield "MODIFIED", "pods", {**pod, "metadata": meta}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run_one(pods: int, nodes: int, policies: int, events: int, full_runs: int,
            profile: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"pods": pods, "nodes": nodes, "policies": policies}
    gc.collect()
    base = rss()["VmRSS"]
    world = World(pods, nodes, policies)
    gc.collect()
    out["rss_caches"] = rss()["VmRSS"]
    out["rss_interpreter"] = base

    # cold start: incremental
    inc = IncrementalResolver()
    op = Operator(inc)
    out["cold_inc"], _ = cpu(lambda: (world.feed(inc), op.round()))
    out["cold_inc_writes"] = op.writes
    gc.collect()
    out["rss_incremental"] = rss()["VmRSS"]
    # restart: a fresh resolver, the plans already on the server
    inc2 = IncrementalResolver()
    op2 = Operator(inc2)
    op2.server = dict(op.server)

    def restart() -> None:
        world.feed(inc2)
        op2.round()
    out["restart_inc"], _ = cpu(restart)
    out["restart_inc_writes"] = op2.writes
    op2.inc = inc2 = IncrementalResolver()    # free the second state
    gc.collect()
    # what the operator does once its caches are listed: the long-lived objects leave
    # the cyclic collector's generations (otherwise each full collection walks them all)
    gc.freeze()

    # full recomputation: cold start and restart (the same round twice)
    server: dict[str, str] = {}
    full_times, full_writes = [], []
    for _ in range(max(2, full_runs)):
        t, w = cpu(lambda: full_round(world, server))
        full_times.append(t)
        full_writes.append(w)
    out["full_round"] = statistics.median(full_times)
    out["cold_full"] = full_times[0]
    out["cold_full_writes"] = full_writes[0]
    out["restart_full_writes"] = full_writes[1]     # plans already on the "server"
    out["rss_peak"] = rss()["VmHWM"]
    assert same(server, op), "incremental plans differ from resolve()"

    # pod events
    def apply_events() -> list[float]:
        times = []
        for type_, kind, obj in pod_events(world, events):
            t0 = time.process_time()
            world.caches[kind].apply(type_, obj)
            inc.apply(kind, type_, obj)
            op.round(reports=False)
            times.append(time.process_time() - t0)
            op.round()
        return times
    prof = cProfile.Profile() if profile else None
    if prof:
        prof.enable()
    times = apply_events()
    if prof:
        prof.disable()
    out["pod_event_p50"] = pct(times, 0.5)
    out["pod_event_p99"] = pct(times, 0.99)
    out["pod_event_max"] = max(times)
    out["pod_event_reports_p50"] = pct(op.report_cpu[-len(times):], 0.5)
    if full_runs:
        full_times = [cpu(lambda: full_round(world, server))[0] for _ in range(full_runs)]
        out["full_round_after_events"] = statistics.median(full_times)
    assert same(server, op), "incremental plans differ from resolve() after pod events"

    # policy changes
    for frac in (0.01, 0.1, 1.0):
        pol = shard_policy(frac)
        if prof and frac == 0.01:
            prof.enable()
        t_add, _ = cpu(lambda p=pol: (inc.apply("cluster_policies", "ADDED", p), op.round()))
        t_del, _ = cpu(lambda p=pol: (inc.apply("cluster_policies", "DELETED", p), op.round()))
        if prof and frac == 0.01:
            prof.disable()
        matched = None
        world.caches["cluster_policies"].apply("ADDED", pol)
        res = world.full() if frac == 0.01 else None
        if res is not None:
            matched = next(r.matched_pods for ref, r in res.policies.items()
                           if ref.name == pol["metadata"]["name"])
        world.caches["cluster_policies"].apply("DELETED", pol)
        out[f"policy_{frac}"] = {"add": t_add, "delete": t_del, "matched_1pct": matched}

    # rolling update: 1,000 pods of app-0 replaced in 10 windows of 100
    rng = random.Random(11)
    old = [k for k, p in sorted(world.caches["pods"]._objects.items())
           if p["metadata"]["labels"]["app"] == "app-0"][:1000]
    windows = []
    full_windows = []
    for w in range(0, len(old), 100):
        batch = old[w:w + 100]
        evs: list[tuple[str, dict[str, Any]]] = []
        for k in batch:
            pod = world.caches["pods"]._objects[k]
            i = world.next_id
            world.next_id += 1
            evs.append(("DELETED", pod))
            evs.append(("ADDED", slim_pod(full_pod(rng, i, world.n_nodes, app="app-0"))))
        affected: set[str] = set()
        for _, pod in evs:
            affected.add(pod["spec"]["nodeName"])

        def window(evs: list[tuple[str, dict[str, Any]]] = evs) -> int:
            for type_, pod in evs:
                inc.apply("pods", type_, pod)
            return op.round()
        for type_, pod in evs:
            world.caches["pods"].apply(type_, pod)
        t, writes = cpu(window)
        windows.append({"cpu": t, "writes": writes, "affected_nodes": len(affected)})
        if full_runs and w < 300:     # the full round per window: a few samples suffice
            full_windows.append(cpu(lambda: full_round(world, server))[0])
    out["rolling"] = windows
    out["rolling_full_window"] = statistics.median(full_windows) if full_windows else None
    if full_runs:
        full_round(world, server)
        assert same(server, op), "incremental plans differ from resolve() after rollout"
    gc.collect()
    out["rss_end"] = rss()["VmRSS"]
    out["rss_peak_end"] = rss()["VmHWM"]
    if prof:
        stats = pstats.Stats(prof, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(18)
    return out


def fmt_ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:.2f}"


def report(rows: list[dict[str, Any]]) -> None:
    mib = 1 << 20
    print("CPU time (process_time), ms. *full* = resolve() over everything + canonical JSON "
          "of every plan (the round before); ratio = full / incremental.\n")
    print("| pods | nodes | full round | pod event p50 | p99 | max | ratio (p50) "
          "| policy 1% add / delete | 10% add | 100% add | ratio (1% add) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        full = r["full_round_after_events"] if "full_round_after_events" in r else r["full_round"]
        p1, p10, p100 = r["policy_0.01"], r["policy_0.1"], r["policy_1.0"]
        print(f"| {r['pods']} | {r['nodes']} | {fmt_ms(full)} | {fmt_ms(r['pod_event_p50'])} "
              f"| {fmt_ms(r['pod_event_p99'])} | {fmt_ms(r['pod_event_max'])} "
              f"| {full / max(r['pod_event_p50'], 1e-6):.0f}x "
              f"| {fmt_ms(p1['add'])} / {fmt_ms(p1['delete'])} ({p1['matched_1pct']} pods) "
              f"| {fmt_ms(p10['add'])} | {fmt_ms(p100['add'])} "
              f"| {full / max(p1['add'], 1e-6):.0f}x |")
    print("\nRolling update of 1,000 pods (10 windows of 100 replacements), cold start, "
          "restart (CPU s), plan writes:\n")
    print("| pods | nodes | rollout CPU, incremental (s) | full, per window (s) | ratio "
          "| plan writes / affected nodes per window | cold start incr. (s) | full (s) "
          "| restart writes incr. / full |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        roll = r["rolling"]
        inc_total = sum(w["cpu"] for w in roll)
        full_w = r["rolling_full_window"]
        full_total = None if full_w is None else full_w * len(roll)
        writes = ", ".join(f"{w['writes']}/{w['affected_nodes']}" for w in roll[:3])
        ratio = "-" if full_total is None else f"{full_total / inc_total:.0f}x"
        print(f"| {r['pods']} | {r['nodes']} | {inc_total:.3f} "
              f"| {'-' if full_w is None else f'{full_w:.2f}'} | {ratio} | {writes}, ... "
              f"| {r['cold_inc']:.2f} | {r['cold_full']:.2f} "
              f"| {r['restart_inc_writes']} / {r['restart_full_writes']} |")
    print("\nResident memory (MiB): interpreter + imports; + informer caches (slimmed "
          "objects); + incremental state; peak during a full resolve():\n")
    print("| pods | nodes | interpreter | caches | caches + incremental | peak with resolve() |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['pods']} | {r['nodes']} | {r['rss_interpreter'] / mib:.0f} "
              f"| {r['rss_caches'] / mib:.0f} | {r['rss_incremental'] / mib:.0f} "
              f"| {r['rss_peak'] / mib:.0f} |")


def run_sizes(doc: str | None, script: str, run_one: Any, report: Any, *, events: int,
              full_runs: int) -> int:
    """The shared command line of the size-sweep benchmarks: each --size pods:nodes runs
    in a fresh interpreter (`script --one`, so sizes do not share a heap), then `report`."""
    ap = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    ap.add_argument("--size", action="append", help="pods:nodes (repeatable)")
    ap.add_argument("--policies", type=int, default=1000)
    ap.add_argument("--events", type=int, default=events)
    ap.add_argument("--full-runs", type=int, default=full_runs)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        pods, nodes = map(int, args.one.split(":"))
        print(json.dumps(run_one(pods, nodes, args.policies, args.events, args.full_runs,
                                 args.profile)))
        return 0
    rows = []
    for size in args.size or ["10000:500", "50000:2000", "150000:5000"]:
        cmd = [sys.executable, script, "--one", size, "--policies", str(args.policies),
               "--events", str(args.events), "--full-runs", str(args.full_runs)]
        if args.profile:
            cmd.append("--profile")
        t0 = time.monotonic()
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        sys.stderr.write(done.stderr)
        rows.append(json.loads(done.stdout))
        print(f"done: {size} in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    report(rows)
    return 0


def main() -> int:
    return run_sizes(__doc__, __file__, run_one, report, events=1000, full_runs=3)


if __name__ == "__main__":
    sys.exit(main())
