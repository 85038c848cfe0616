"""Plan status writes per minute from N node agents, simulated over the pure StatusSchedule.

    .venv/bin/python bench/bench_status_rate.py [--nodes 5000] [--pods-per-node 110]
        [--minutes 20] [--tick 10]

Each agent is the real `headroom.nodeagent.status.StatusSchedule` (defaults: at most
one write per 30 s, heartbeat every 300 s minus 0-20% jitter) fed a status of
`--pods-per-node` pod entries whose counters (usage, bytes reclaimed) move at every
tick; a *significant* change (a pod added or removed: the plan changed) arrives at
each node as a Poisson process of the scenario's rate. Every agent calls `due()`
each `--tick` seconds, as the agent's loop does after each engine turn. All agents
start at t=0 (a DaemonSet rolled out at once: the worst case for bursts). Reported:
writes per minute over the minutes after the first heartbeat period (median, max),
the largest number of writes in any 10 s, and the design bound nodes x 60 / 30 s.
"""

from __future__ import annotations

import argparse
import random
import statistics
from typing import Any

from headroom.nodeagent.status import StatusSchedule


def pods(node: int, n: int, generation: int) -> list[dict[str, Any]]:
    return [{"uid": f"{node}-{generation}-{i}", "namespace": "ns", "name": f"p{i}",
             "applied": True, "reason": "Applied", "memoryHigh": 1 << 29,
             "usageBytes": 0, "reclaimedBytes": 0, "reclaimCpuSeconds": 0.0,
             "highEvents": 0, "lastError": ""} for i in range(n)]


def simulate(nodes: int, per_node: int, minutes: float, tick: float,
             changes_per_node_minute: float, seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    schedules = [StatusSchedule(rand=random.Random(seed * 7919 + n).random)
                 for n in range(nodes)]
    generation = [0] * nodes
    statuses = [{"agentVersion": "x", "plannedPods": per_node, "pods": pods(n, per_node, 0)}
                for n in range(nodes)]
    p_change = changes_per_node_minute * tick / 60.0    # per tick (small: Poisson-like)
    writes_at: list[float] = []
    t = 0.0
    end = minutes * 60
    while t < end:
        for n in range(nodes):
            status = statuses[n]
            if p_change and rng.random() < p_change:
                generation[n] += 1    # a pod replaced: a new uid in the list
                entries = list(status["pods"])
                entries[rng.randrange(per_node)] = pods(n, 1, generation[n])[0]
                status = statuses[n] = {**status, "pods": entries}
            # counters moved: the same significant part, a different status
            status["pods"][0]["usageBytes"] = int(t)
            sched = schedules[n]
            if sched.due(t, status):
                sched.attempted(t, status, True)
                writes_at.append(t)
        t += tick
    warm = StatusSchedule().heartbeat_interval
    per_minute = [0] * int(minutes)
    per_10s: dict[int, int] = {}
    for w in writes_at:
        if int(w // 60) < len(per_minute):
            per_minute[int(w // 60)] += 1
        per_10s[int(w // 10)] = per_10s.get(int(w // 10), 0) + 1
    steady = per_minute[int(warm // 60) + 1:]
    steady_10s = [c for k, c in per_10s.items() if k * 10 >= warm + 60]
    return {"mean": statistics.mean(steady), "max": max(steady),
            "max_10s_steady": max(steady_10s or [0]), "max_10s_start": max(per_10s.values()),
            "total": len(writes_at)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=5000)
    ap.add_argument("--pods-per-node", type=int, default=110)
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--tick", type=float, default=10.0)
    args = ap.parse_args()
    bound = args.nodes * 60 / StatusSchedule().min_interval
    print(f"{args.nodes} agents, {args.pods_per_node} pods each, {args.minutes:.0f} min "
          f"simulated, due() every {args.tick:.0f} s; design bound {bound:.0f} writes/min\n")
    print("| scenario | plan changes per node per minute | writes/min (mean) | max minute | "
          "max in 10 s (steady) | max in 10 s (start, all agents at once) |")
    print("|---|---|---|---|---|---|")
    for label, rate in (("quiet (counters only)", 0.0),
                        ("rolling update, 1,000 pods/min cluster-wide", 2000 / args.nodes),
                        ("heavy churn, every node changes every 20 s", 3.0)):
        r = simulate(args.nodes, args.pods_per_node, args.minutes, args.tick, rate)
        print(f"| {label} | {rate:.2f} | {r['mean']:.0f} | {r['max']} "
              f"| {r['max_10s_steady']} | {r['max_10s_start']} |")


if __name__ == "__main__":
    main()
