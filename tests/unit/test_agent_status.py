"""Plan status: content built from engine stats, and the write schedule's rate bounds."""

from __future__ import annotations

from dataclasses import dataclass, replace

from headroom.nodeagent.status import (
    PodEntry,
    PodProblem,
    StatusSchedule,
    build_status,
    rfc3339,
    significant_part,
)

A = PodEntry("aaaaaaaa-0000-4000-8000-000000000001", "default", "web-0")
B = PodEntry("bbbbbbbb-0000-4000-8000-000000000002", "default", "web-1")
CAPS = {"memoryReclaim": True, "swappinessKey": False, "psi": True}


@dataclass(frozen=True)
class Stats:
    applied: bool = True
    reason: str = "Applied"
    memory_high: int | None = 256 << 20
    usage_bytes: int = 100
    reclaimed_bytes: int = 0
    reclaim_cpu_seconds: float = 0.0
    high_events: int = 0
    last_error: str | None = None
    drift_corrections: int = 0


def status(snapshot: dict[str, Stats], problems: dict[str, PodProblem] | None = None) -> dict:
    return build_status(generation=3, pods=[B, A], snapshot=snapshot, problems=problems or {},
                        capabilities=CAPS, driver="systemd", agent_version="0.1.0")


def test_status_content_per_contract() -> None:
    s = status({A.uid: Stats(usage_bytes=250_000_000, reclaimed_bytes=123,
                             reclaim_cpu_seconds=0.4219, high_events=2,
                             drift_corrections=1)},
               {B.uid: PodProblem("CgroupNotFound", "no such dir")})
    assert s["observedGeneration"] == 3
    assert s["cgroupDriver"] == "systemd"
    assert s["capabilities"] == CAPS
    assert (s["plannedPods"], s["appliedPods"]) == (2, 1)
    assert [p["uid"] for p in s["pods"]] == [A.uid, B.uid]   # sorted, stable
    assert s["pods"][0] == {
        "uid": A.uid, "namespace": "default", "name": "web-0", "applied": True,
        "reason": "Applied", "memoryHigh": 256 << 20, "usageBytes": 250_000_000,
        "reclaimedBytes": 123, "reclaimCpuSeconds": 0.422, "highEvents": 2, "lastError": "",
        "driftCorrections": 1,
    }
    assert s["pods"][1] == {"uid": B.uid, "namespace": "default", "name": "web-1",
                            "applied": False, "reason": "CgroupNotFound",
                            "lastError": "no such dir"}
    assert "heartbeat" not in s


def test_pod_without_stats_or_problem_is_pending() -> None:
    s = status({})
    assert {p["reason"] for p in s["pods"]} == {"Pending"}
    assert s["appliedPods"] == 0


def test_counters_are_not_significant_but_high_events_are() -> None:
    base = status({A.uid: Stats()})
    busy = status({A.uid: Stats(usage_bytes=999, reclaimed_bytes=5, reclaim_cpu_seconds=1)})
    stalled = status({A.uid: Stats(high_events=1)})
    assert significant_part(base) == significant_part(busy)
    assert significant_part(base) != significant_part(stalled)


def test_first_status_is_written_at_once() -> None:
    sched = StatusSchedule(30, 300, rand=lambda: 0.0)
    assert sched.due(0.0, status({}))


def test_significant_change_waits_for_the_minimum_interval() -> None:
    sched = StatusSchedule(30, 300, rand=lambda: 0.0)
    s0 = status({})
    sched.attempted(0.0, s0, ok=True)
    s1 = status({A.uid: Stats()})
    assert not sched.due(10.0, s1)
    assert sched.due(30.0, s1)


def test_unchanged_status_is_written_only_as_heartbeat() -> None:
    sched = StatusSchedule(30, 300, jitter=0.2, rand=lambda: 1.0)  # heartbeat after 240 s
    sched.attempted(0.0, status({A.uid: Stats()}), ok=True)
    moving = status({A.uid: Stats(usage_bytes=12345)})
    assert not sched.due(239.0, moving)
    assert sched.due(240.0, moving)


def test_failed_write_is_retried_after_the_minimum_interval() -> None:
    sched = StatusSchedule(30, 300, rand=lambda: 0.0)
    s = status({})
    sched.attempted(0.0, s, ok=False)
    assert not sched.due(29.0, s)
    assert sched.due(30.0, s)


def test_writes_per_minute_over_a_simulated_hour() -> None:
    """Counters move every 5 s and a pod's state flips now and then: the schedule keeps
    writes near the heartbeat rate and never above 2 per minute."""
    import itertools
    import random
    rng = random.Random(7)
    sched = StatusSchedule(30, 300, rand=rng.random)
    writes = []
    stats = Stats()
    for tick in range(0, 3600, 5):
        stats = replace(stats, usage_bytes=rng.randrange(1 << 30),
                        reclaimed_bytes=stats.reclaimed_bytes + 4096)
        if tick in (600, 605, 610, 1800):   # a burst of real changes, then one more
            stats = replace(stats, high_events=stats.high_events + 1)
        s = status({A.uid: stats})
        if sched.due(float(tick), s):
            sched.attempted(float(tick), s, ok=True)
            writes.append(tick)
    gaps = [b - a for a, b in itertools.pairwise(writes)]
    assert min(gaps) >= 30
    per_minute = len(writes) / 60
    assert 0.2 <= per_minute <= 0.35, writes   # ~13-21 writes in the hour
    # the burst at 600-610 s produced at most two writes in that minute
    assert sum(1 for t in writes if 600 <= t < 660) <= 2


def test_always_changing_status_is_capped_at_two_per_minute() -> None:
    sched = StatusSchedule(30, 300, rand=lambda: 0.5)
    writes = 0
    for tick in range(0, 600):
        s = status({A.uid: Stats(high_events=tick)})
        if sched.due(float(tick), s):
            sched.attempted(float(tick), s, ok=True)
            writes += 1
    assert writes == 20   # 600 s / 30 s


def test_rfc3339() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
