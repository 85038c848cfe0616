"""Kubernetes Events on pods: incident detection and per-pod, per-reason rate limiting."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from fake_planapi import FakePlanAPI
from headroom.nodeagent.events import (
    EventRecorder,
    Incident,
    PodRef,
    RateLimiter,
    find_incidents,
    kubernetes_poster,
)
from kubernetes import client

POD = PodRef("aaaaaaaa-0000-4000-8000-000000000001", "shop", "web-0")
OTHER = PodRef("bbbbbbbb-0000-4000-8000-000000000002", "shop", "web-1")


@dataclass(frozen=True)
class Stats:
    high_events: int = 0
    last_error: str | None = None
    memory_high: int | None = 256 << 20
    usage_bytes: int = 250 << 20
    drift_corrections: int = 0
    eagain_count: int = 0


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_high_events_growth_is_an_incident() -> None:
    got = find_incidents({POD.uid: Stats(high_events=1)}, {POD.uid: Stats(high_events=4)},
                         {POD.uid: POD})
    assert [i.reason for i in got] == ["MemoryHighReached"]
    assert "3 time(s)" in got[0].message and "256Mi" in got[0].message


def test_no_change_no_incident() -> None:
    s = {POD.uid: Stats(high_events=4, last_error="EBUSY", drift_corrections=1)}
    assert find_incidents(s, s, {POD.uid: POD}) == []


def test_new_error_and_drift_are_incidents() -> None:
    got = find_incidents({POD.uid: Stats()},
                         {POD.uid: Stats(last_error="memory.reclaim: EIO", drift_corrections=2)},
                         {POD.uid: POD})
    assert [i.reason for i in got] == ["ReclaimFailed", "MemoryHighDrift"]
    assert "EIO" in got[0].message and "2 time(s)" in got[1].message


def test_eagain_is_not_a_reclaim_failure() -> None:
    got = find_incidents({POD.uid: Stats()},
                         {POD.uid: Stats(last_error="write failed (EAGAIN)", eagain_count=1)},
                         {POD.uid: POD})
    assert got == []


def test_pod_seen_first_counts_from_takeover_and_unknown_keys_are_ignored() -> None:
    got = find_incidents({}, {POD.uid: Stats(high_events=2), "not-a-pod": Stats(high_events=9)},
                         {POD.uid: POD})
    assert [(i.pod, i.reason) for i in got] == [(POD, "MemoryHighReached")]


def test_rate_limit_per_pod_and_reason() -> None:
    clock = Clock()
    posted: list[tuple[str, dict[str, Any]]] = []
    rec = EventRecorder(lambda ns, body: posted.append((ns, body)), "node-1",
                        min_interval=600, clock=clock, wall=lambda: 0.0)
    high = Incident(POD, "MemoryHighReached", "over")
    assert rec.record(high)
    assert not rec.record(high)                  # same pod, same reason: held back
    assert not rec.record(high)
    assert rec.record(Incident(POD, "ReclaimFailed", "err"))      # other reason
    assert rec.record(Incident(OTHER, "MemoryHighReached", "over"))  # other pod
    clock.t += 600
    assert rec.record(high)
    assert len(posted) == 4
    last = posted[-1][1]
    assert last["count"] == 3 and "2 similar event(s)" in last["message"]


def test_failed_post_is_carried_into_the_next_event() -> None:
    clock = Clock()
    calls = []

    def post(ns: str, body: dict[str, Any]) -> None:
        calls.append(body)
        if len(calls) == 1:
            raise OSError("connection refused")

    rec = EventRecorder(post, "node-1", min_interval=60, clock=clock)
    assert not rec.record(Incident(POD, "ReclaimFailed", "x"))
    clock.t += 60
    assert rec.record(Incident(POD, "ReclaimFailed", "x"))
    assert calls[-1]["count"] == 2


def test_limiter_forgets_pods_that_left() -> None:
    lim = RateLimiter(600, Clock())
    lim.allow((POD.uid, "R"))
    lim.allow((POD.uid, "R"))
    lim.forget_except([OTHER.uid])
    assert lim.allow((POD.uid, "R"))
    assert lim.suppressed == {}


@pytest.fixture
def api() -> Iterator[FakePlanAPI]:
    fake = FakePlanAPI().start()
    yield fake
    fake.close()


def test_event_object_posted_to_the_api(api: FakePlanAPI) -> None:
    post = kubernetes_poster(client.CoreV1Api(api.api_client()))
    rec = EventRecorder(post, "node-1", wall=lambda: 0.0)
    assert rec.record(Incident(POD, "MemoryHighReached", "went over"))
    assert api.requests[-1] == ("POST", "/api/v1/namespaces/shop/events")
    ev = api.events[0]
    assert ev["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "namespace": "shop",
                                    "name": "web-0", "uid": POD.uid}
    assert (ev["reason"], ev["type"], ev["count"]) == ("MemoryHighReached", "Warning", 1)
    assert ev["source"] == {"component": "headroom-agent", "host": "node-1"}
    assert ev["metadata"]["generateName"] == "web-0."
    # (the client may re-render the timestamp; it must stay the same instant)
    assert datetime.fromisoformat(ev["firstTimestamp"]) == datetime.fromtimestamp(0, UTC)
