"""The operator's reconciler, incremental rounds against full rounds, in process, 10k-150k pods.

    .venv/bin/python bench/bench_reconciler.py [--size 10000:500 --size 50000:2000
        --size 150000:5000] [--policies 1000] [--events 300] [--full-runs 2] [--profile]

What runs is `headroom.controller.reconciler.Reconciler` itself, on informer caches
(`ObjectCache` with change tracking, fed slimmed objects by bench_incremental's seeded
generator: 1,000 policies, pods as the API server returns them) and an in-process
fake API server that applies its writes and echoes them into the caches. Each size
runs in its own subprocess (so resident memory is that size's alone). Measured (CPU:
process_time of the whole round, i.e. applying the change feed, deciding, and the
write calls into the fake server) for the incremental reconciler and, in the same
process, for a full round (`resync=0`: decide() over the snapshot of all caches):

* cold start (no plans: every plan and status written) and restart (a new reconciler,
  plans and statuses in place: 0 writes expected);
* pod event: one pod relabelled, deleted or created, then a round (p50, p99);
* policy change: a new priority-10 cluster policy selecting 1%, 10%, 100% of the pods,
  then deleted;
* rolling update of 1,000 pods of one app: 10 rounds of 100 replacements; plan writes
  per round against the nodes affected (the goal: one write per affected node);
* resident memory (VmRSS) after the caches are filled, after the cold start (caches +
  incremental state, gc.freeze done), and the peak (VmHWM) including a full round.

`--profile` prints cProfile's top functions (own time) over the pod events, and by
cumulative time over the round that adds the 1% policy.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import pstats
import random
import statistics
import sys
import time
from typing import Any

from bench_incremental import (
    APPS,
    World,
    full_pod,
    pct,
    pod_events,
    rss,
    run_sizes,
    shard_policy,
)
from headroom.controller import reconciler as reconciler_mod
from headroom.controller.informer import ObjectCache, slim_plan, slim_pod
from headroom.controller.reconciler import Reconciler, Snapshot
from headroom.controller.resolve import PolicyRef

KINDS = ("policies", "cluster_policies", "pods", "namespaces", "nodes", "plans")


class FakeServer:
    """Plans and statuses with resourceVersions; every write echoed into the caches."""

    def __init__(self, caches: dict[str, ObjectCache]) -> None:
        self.caches = caches
        self.rv = 10_000_000
        self.plans: dict[str, dict[str, Any]] = {}
        self.plan_writes = 0
        self.status_writes = 0
        self.nodes_written: set[str] = set()

    def _next(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _store(self, node: str, spec: dict[str, Any], type_: str) -> dict[str, Any]:
        obj = {"metadata": {"name": node, "resourceVersion": self._next()}, "spec": spec}
        self.plans[node] = obj
        self.plan_writes += 1
        self.nodes_written.add(node)
        self.caches["plans"].apply(type_, slim_plan(obj))
        return obj

    async def create_plan(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._store(body["metadata"]["name"], body["spec"], "ADDED")

    async def replace_plan_spec(self, node: str, spec: dict[str, Any]) -> dict[str, Any]:
        return self._store(node, spec, "MODIFIED")

    async def delete_plan(self, node: str) -> dict[str, Any]:
        obj = self.plans.pop(node)
        self.plan_writes += 1
        self.caches["plans"].apply("DELETED", obj)
        return {"metadata": {"name": node, "resourceVersion": self._next()}}

    async def patch_policy_status(self, ref: PolicyRef, status: dict[str, Any]
                                  ) -> dict[str, Any]:
        kind = "policies" if ref.namespace else "cluster_policies"
        cache = self.caches[kind]
        obj = cache._objects[(ref.namespace, ref.name)]
        new = {**obj, "status": status,
               "metadata": {**obj["metadata"], "resourceVersion": self._next()}}
        self.status_writes += 1
        cache.apply("MODIFIED", new)
        return new

    async def post_event(self, obj: dict[str, Any], type_: str, reason: str,
                         message: str) -> None:
        return None


class Cluster:
    def __init__(self, world: World) -> None:
        self.world = world
        self.caches = world.caches
        for name in KINDS:           # tracked, as the operator's informers run them
            old = self.caches.get(name)
            cache = self.caches[name] = ObjectCache(track=True)
            if old is not None:
                cache.replace(old.values())
        self.server = FakeServer(self.caches)

    def snapshot(self) -> Snapshot:
        c = self.caches
        return Snapshot(policies=c["policies"].values(),
                        cluster_policies=c["cluster_policies"].values(),
                        pods=c["pods"].values(), namespaces=c["namespaces"].values(),
                        nodes=c["nodes"].values(),
                        plans={p["metadata"]["name"]: p for p in c["plans"].values()})

    def take_changes(self) -> list[Any]:
        return [(name, key, obj) for name, cache in self.caches.items()
                for key, obj in cache.take_changes()]

    def reconciler(self, resync: float) -> Reconciler:
        return Reconciler(self.server, self.snapshot,  # type: ignore[arg-type]
                          changes=self.take_changes, resync=resync)


async def _inline(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


# The reconciler's CPU work runs inline here (not in asyncio's worker threads), so that
# cProfile sees it and thread start-up is not billed to a round; one loop for all rounds.
reconciler_mod.asyncio.to_thread = _inline  # type: ignore[assignment]
LOOP = asyncio.new_event_loop()


def cpu_round(rec: Reconciler) -> float:
    t0 = time.process_time()
    LOOP.run_until_complete(rec.reconcile())
    return time.process_time() - t0


def run_one(pods: int, nodes: int, policies: int, events: int, full_runs: int,
            profile: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"pods": pods, "nodes": nodes, "policies": policies}
    gc.collect()
    out["rss_interpreter"] = rss()["VmRSS"]
    cluster = Cluster(World(pods, nodes, policies))
    gc.collect()
    out["rss_caches"] = rss()["VmRSS"]
    server = cluster.server

    rec = cluster.reconciler(resync=1e9)
    cluster.take_changes()          # the listing itself is the cold start's snapshot
    t0 = time.monotonic()
    out["cold_inc"] = cpu_round(rec)
    out["cold_inc_wall"] = time.monotonic() - t0
    out["cold_inc_writes"] = server.plan_writes
    out["cold_inc_status_writes"] = server.status_writes
    out["echo_round"] = cpu_round(rec)        # the echoes of those writes
    gc.collect()
    out["rss_incremental"] = rss()["VmRSS"]

    before = server.plan_writes, server.status_writes
    again = cluster.reconciler(resync=1e9)
    out["restart_inc"] = cpu_round(again)
    out["restart_inc_writes"] = server.plan_writes - before[0]
    out["restart_inc_status_writes"] = server.status_writes - before[1]
    del again
    gc.collect()

    full = cluster.reconciler(resync=0)
    before = server.plan_writes, server.status_writes
    fulls = [cpu_round(full) for _ in range(max(1, full_runs))]
    out["full_round"] = statistics.median(fulls)
    out["restart_full_writes"] = server.plan_writes - before[0]
    out["rss_peak"] = rss()["VmHWM"]

    # pod events, one round each
    times = []
    prof = cProfile.Profile() if profile else None
    for type_, kind, obj in pod_events(cluster.world, events):
        cluster.caches[kind].apply(type_, obj)
        if prof:
            prof.enable()
        times.append(cpu_round(rec))
        if prof:
            prof.disable()
    out["pod_event_p50"] = pct(times, 0.5)
    out["pod_event_p99"] = pct(times, 0.99)
    before = server.plan_writes
    out["full_after_events"] = cpu_round(full)
    out["full_after_events_writes"] = server.plan_writes - before   # 0: same decisions

    for frac in (0.01, 0.1, 1.0):
        pol = shard_policy(frac)
        pol = {**pol, "metadata": {**pol["metadata"], "resourceVersion": "2"}}
        cluster.caches["cluster_policies"].apply("ADDED", pol)
        pprof = cProfile.Profile() if profile and frac == 0.01 else None
        if pprof:
            pprof.enable()
        t_add = cpu_round(rec)
        if pprof:
            pprof.disable()
            print("--- the 1% policy's add round, by cumulative time:", file=sys.stderr)
            pstats.Stats(pprof, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
        t_echo = cpu_round(rec)                 # its status coming back
        cluster.caches["cluster_policies"].apply("DELETED", pol)
        t_del = cpu_round(rec)
        out[f"policy_{frac}"] = {"add": t_add, "echo": t_echo, "delete": t_del}
        cpu_round(rec)

    rng = random.Random(11)
    old = [k for k, p in sorted(cluster.caches["pods"]._objects.items())
           if p["metadata"]["labels"]["app"] == "app-0"][:1000]
    windows = []
    for w in range(0, len(old), 100):
        affected: set[str] = set()
        for k in old[w:w + 100]:
            pod = cluster.caches["pods"]._objects[k]
            i = cluster.world.next_id
            cluster.world.next_id += 1
            new = slim_pod(full_pod(rng, i, nodes, app="app-0"))
            cluster.caches["pods"].apply("DELETED", pod)
            cluster.caches["pods"].apply("ADDED", new)
            affected |= {pod["spec"]["nodeName"], new["spec"]["nodeName"]}
        server.nodes_written = set()
        before = server.plan_writes
        t = cpu_round(rec)
        windows.append({"cpu": t, "writes": server.plan_writes - before,
                        "affected_nodes": len(affected),
                        "outside": len(server.nodes_written - affected)})
        cpu_round(rec)                           # echoes
    out["rolling"] = windows
    before = server.plan_writes
    out["full_after_rollout"] = cpu_round(full)
    out["full_after_rollout_writes"] = server.plan_writes - before
    out["rss_end"] = rss()["VmRSS"]
    out["rss_peak_end"] = rss()["VmHWM"]
    out["apps"] = APPS
    if prof:
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(15)
    return out


def fmt_ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1e3:.1f}"


def report(rows: list[dict[str, Any]]) -> None:
    mib = 1 << 20
    print("CPU (process_time) of whole reconciler rounds, ms; *full* = a round with "
          "resync=0 (decide() over all caches); ratio = full / incremental.\n")
    print("| pods | nodes | full round | pod event p50 | p99 | ratio (p50) | policy 1% add "
          "/ delete | 10% add | 100% add | ratio (1% add) | plan writes by full rounds "
          "after events / rollout |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        full = r["full_round"]
        p1, p10, p100 = r["policy_0.01"], r["policy_0.1"], r["policy_1.0"]
        print(f"| {r['pods']} | {r['nodes']} | {fmt_ms(full)} | {fmt_ms(r['pod_event_p50'])} "
              f"| {fmt_ms(r['pod_event_p99'])} | {full / max(r['pod_event_p50'], 1e-6):.0f}x "
              f"| {fmt_ms(p1['add'])} / {fmt_ms(p1['delete'])} | {fmt_ms(p10['add'])} "
              f"| {fmt_ms(p100['add'])} | {full / max(p1['add'], 1e-6):.0f}x "
              f"| {r['full_after_events_writes']} / {r['full_after_rollout_writes']} |")
    print("\nRolling update (10 rounds of 100 pod replacements), cold start, restart:\n")
    print("| pods | nodes | rollout CPU, 10 rounds (s) | full x 10 (s) | ratio | plan writes "
          "/ affected nodes per round (writes outside them) | cold start CPU (s) [wall] "
          "| plan + status writes | full round (s) | restart CPU (s) | restart writes |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        roll = r["rolling"]
        inc_total = sum(w["cpu"] for w in roll)
        full_total = r["full_round"] * len(roll)
        writes = ", ".join(f"{w['writes']}/{w['affected_nodes']} ({w['outside']})"
                           for w in roll[:3])
        print(f"| {r['pods']} | {r['nodes']} | {inc_total:.3f} | {full_total:.1f} "
              f"| {full_total / inc_total:.0f}x | {writes}, ... "
              f"| {r['cold_inc']:.2f} [{r['cold_inc_wall']:.2f}] "
              f"| {r['cold_inc_writes']} + {r['cold_inc_status_writes']} "
              f"| {r['full_round']:.2f} | {r['restart_inc']:.2f} "
              f"| {r['restart_inc_writes']} + {r['restart_inc_status_writes']} |")
    print("\nResident memory (MiB):\n")
    print("| pods | nodes | interpreter | + caches | + incremental state | peak (with a full "
          "round) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['pods']} | {r['nodes']} | {r['rss_interpreter'] / mib:.0f} "
              f"| {r['rss_caches'] / mib:.0f} | {r['rss_incremental'] / mib:.0f} "
              f"| {r['rss_peak_end'] / mib:.0f} |")


def main() -> int:
    return run_sizes(__doc__, __file__, run_one, report, events=300, full_runs=2)


if __name__ == "__main__":
    sys.exit(main())
