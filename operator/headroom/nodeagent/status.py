"""NodeReclaimPlan status: what the agent reports, and when it writes it.

Building the status is pure (``build_status``). Writing is governed by ``StatusSchedule``
so that thousands of agents cannot flood the API server:

* at most one write per ``min_interval`` (``--status-interval``, default 30 s), failed
  attempts included;
* a *significant* change (pods added or removed, applied/reason/error/memory.high,
  capabilities, driver, observed generation, new ``high`` events or drift corrections)
  is written as soon as the minimum interval allows;
* counters that move all the time (usage, bytes reclaimed, reclaim CPU) alone never
  trigger a write: they ride along with the next significant change or the heartbeat,
  written every ``heartbeat_interval`` (``--heartbeat-interval``, default 300 s) minus a
  random 0-20% so that agents restarted together spread out.

Writes per node: steady state 60 / (300 s × 0.9 mean) ≈ 0.22 per minute (≈ 1,100 per
minute, 19 per second, for 5,000 nodes); never more than 60 / 30 s = 2 per minute.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

# Per-pod fields that change continuously and so are not a reason to write by themselves.
COUNTER_FIELDS = ("usageBytes", "reclaimedBytes", "reclaimCpuSeconds", "workingSetBytes")
HEARTBEAT_FIELD = "heartbeat"


class StatsLike(Protocol):
    """The fields of engine.TargetStats the status uses."""

    applied: bool
    reason: str
    memory_high: int | None
    usage_bytes: int
    reclaimed_bytes: int
    reclaim_cpu_seconds: float
    high_events: int
    last_error: str | None
    drift_corrections: int
    working_set_bytes: int | None


@dataclass(frozen=True)
class PodEntry:
    """The plan-spec fields of a pod the status repeats."""

    uid: str
    namespace: str
    name: str


@dataclass(frozen=True)
class PodProblem:
    """Why a planned pod was not handed to the engine (CgroupNotFound, InvalidUid, ...)."""

    reason: str
    message: str


def binary_quantity(n: int) -> str:
    """Bytes as a Kubernetes quantity for people (kubectl get): 137Mi, 1.5Gi."""
    for unit, shift in (("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)):
        if n >= 1 << shift:
            value = n / (1 << shift)
            return f"{value:.0f}{unit}" if value >= 100 else f"{value:.3g}{unit}"
    return str(n)


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_status(pod: PodEntry, stats: StatsLike | None,
               problem: PodProblem | None) -> dict[str, Any]:
    out: dict[str, Any] = {"uid": pod.uid, "namespace": pod.namespace, "name": pod.name}
    if stats is None:
        problem = problem or PodProblem("Pending", "not yet taken over by the engine")
        out.update(applied=False, reason=problem.reason, lastError=problem.message)
        return out
    out.update(
        applied=bool(stats.applied),
        reason=stats.reason,
        usageBytes=int(stats.usage_bytes),
        reclaimedBytes=int(stats.reclaimed_bytes),
        reclaimCpuSeconds=round(float(stats.reclaim_cpu_seconds), 3),
        highEvents=int(stats.high_events),
        lastError=stats.last_error or "",
    )
    if stats.memory_high is not None:
        out["memoryHigh"] = int(stats.memory_high)
    relieved = getattr(stats, "relieved_high", None)
    if relieved is not None:
        out["relievedMemoryHigh"] = int(relieved)
    ws = getattr(stats, "working_set_bytes", None)
    if ws is not None:
        out["workingSetBytes"] = int(ws)
    if stats.drift_corrections:
        out["driftCorrections"] = int(stats.drift_corrections)
    return out


def build_status(
    *,
    generation: int | None,
    pods: Iterable[PodEntry],
    snapshot: Mapping[str, StatsLike],
    problems: Mapping[str, PodProblem],
    capabilities: Mapping[str, bool],
    driver: str | None,
    agent_version: str,
) -> dict[str, Any]:
    """The status body, without heartbeat (added when written). Pods sorted by uid."""
    per_pod = [
        pod_status(p, snapshot.get(p.uid), problems.get(p.uid))
        for p in sorted(pods, key=lambda p: p.uid)
    ]
    status: dict[str, Any] = {
        "agentVersion": agent_version,
        "capabilities": dict(capabilities),
        "plannedPods": len(per_pod),
        "appliedPods": sum(1 for p in per_pod if p["applied"]),
        "pods": per_pod,
    }
    estimates = [p["workingSetBytes"] for p in per_pod if "workingSetBytes" in p]
    if estimates:
        status["workingSet"] = binary_quantity(sum(estimates))
    if generation is not None:
        status["observedGeneration"] = generation
    if driver:
        status["cgroupDriver"] = driver
    return status


def _condition(type_: str, ok: bool, reason: str, message: str, generation: int | None,
               previous: Mapping[str, Mapping[str, Any]], now: str) -> dict[str, Any]:
    """A metav1.Condition; lastTransitionTime kept while the status stays the same, so an
    unchanged plan status stays byte-equal (and is not a reason to write)."""
    status = "True" if ok else "False"
    before = previous.get(type_) or {}
    since = before.get("lastTransitionTime") if before.get("status") == status else None
    cond: dict[str, Any] = {"type": type_, "status": status, "reason": reason,
                            "message": message, "lastTransitionTime": since or now}
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def plan_conditions(status: Mapping[str, Any], previous: Any, now: str) -> list[dict[str, Any]]:
    """The plan's conditions, from the status body build_status made:

    * ``Ready``: every planned pod is applied (or reported, in dry-run); False with the
      reasons of the pods that are not (``PodsNotApplied``), True ``NoPods`` for none.
    * ``ReclaimAvailable``: the kernel has memory.reclaim (Linux 5.19+); False
      ``NoMemoryReclaim`` where the agent can only set memory.high.

    Whether the agent itself is alive is its Lease (nodeagent/lease.py), not a condition:
    a dead agent cannot say so."""
    prev = {c.get("type"): c for c in previous or () if isinstance(c, Mapping)}
    gen = status.get("observedGeneration")
    pods = status.get("pods") or []
    waiting = [p for p in pods if not p.get("applied")]
    if not pods:
        ready = (True, "NoPods", "no pod in the plan")
    elif not waiting:
        ready = (True, "Applied", f"{len(pods)}/{len(pods)} pods applied")
    else:
        reasons: dict[str, int] = {}
        for p in waiting:
            reasons[str(p.get("reason") or "Pending")] = \
                reasons.get(str(p.get("reason") or "Pending"), 0) + 1
        why = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items()))
        ready = (False, "PodsNotApplied",
                 f"{len(pods) - len(waiting)}/{len(pods)} pods applied; not applied: {why}")
    caps = status.get("capabilities") or {}
    reclaim = caps.get("memoryReclaim")
    available = (True, "MemoryReclaim", "memory.reclaim is available") if reclaim else \
        (False, "NoMemoryReclaim", "the kernel has no memory.reclaim (Linux 5.19+): "
         "memory.high is set, nothing is reclaimed in the background")
    return [_condition("Ready", *ready, gen, prev, now),
            _condition("ReclaimAvailable", *available, gen, prev, now)]


def significant_part(status: Mapping[str, Any]) -> dict[str, Any]:
    """The status without heartbeat and continuously moving counters."""
    out = {k: v for k, v in status.items()
           if k not in ("pods", HEARTBEAT_FIELD, "workingSet")}
    out["pods"] = [
        {k: v for k, v in p.items() if k not in COUNTER_FIELDS}
        for p in status.get("pods", [])
    ]
    return out


class StatusSchedule:
    """Decides when a status is worth writing. Times are seconds on any monotonic clock."""

    def __init__(self, min_interval: float = 30.0, heartbeat_interval: float = 300.0,
                 jitter: float = 0.2, rand: Callable[[], float] = random.random) -> None:
        self.min_interval = min_interval
        self.heartbeat_interval = max(heartbeat_interval, min_interval)
        self.jitter = jitter
        self.rand = rand
        self.last_attempt: float | None = None
        self.next_heartbeat = 0.0
        self.written: dict[str, Any] | None = None   # significant part of the last write

    def due(self, now: float, status: Mapping[str, Any]) -> bool:
        if self.last_attempt is not None and now - self.last_attempt < self.min_interval:
            return False
        if self.written is None or significant_part(status) != self.written:
            return True
        return now >= self.next_heartbeat

    def attempted(self, now: float, status: Mapping[str, Any], ok: bool) -> None:
        self.last_attempt = now
        if ok:
            self.written = significant_part(status)
            spread = 1.0 - self.jitter * self.rand()
            self.next_heartbeat = now + self.heartbeat_interval * spread

    def forget(self) -> None:
        """The plan object was replaced: write the next status without waiting for change."""
        self.written = None
