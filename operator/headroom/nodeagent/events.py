"""Kubernetes Events on Pods for what a person must see, rate-limited per pod and reason.

Incidents are found by comparing two engine snapshots (pure ``find_incidents``):

* ``MemoryHighReached``: the pod went over memory.high (memory.events ``high`` grew)
  although the agent reclaims for it: a stall the agent failed to prevent;
* ``ReclaimFailed``: the engine reports a new error for the pod (EAGAIN, a partial
  reclaim, is not one);
* ``MemoryHighDrift``: something else changed the pod's memory.high; the agent put its
  value back.
* ``Unreclaimable``: reclaim could not keep the pod under memory.high (e.g. anonymous
  memory without swap) and the kernel was throttling it: the livelock guard raised
  memory.high toward memory.max; the plan's value comes back once usage has fallen.

``EventRecorder`` posts at most one Event per (pod, reason) per ``min_interval`` (default
10 minutes); what it held back is counted into the next Event's message and ``count``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from headroom.logs import event
from headroom.nodeagent.status import rfc3339

log = logging.getLogger("headroom.events")

COMPONENT = "headroom-agent"


@dataclass(frozen=True)
class PodRef:
    uid: str
    namespace: str
    name: str


@dataclass(frozen=True)
class Incident:
    pod: PodRef
    reason: str
    message: str
    type: str = "Warning"


def _mib(n: int | None) -> str:
    return "max" if n is None else f"{n / (1 << 20):.0f}Mi"


def find_incidents(prev: Mapping[str, Any], cur: Mapping[str, Any],
                   pods: Mapping[str, PodRef]) -> list[Incident]:
    """Incidents between two snapshots (engine key = pod uid). Pods seen for the first
    time only count what happened since the agent took them over (stats start at 0)."""
    out: list[Incident] = []
    for uid, stats in sorted(cur.items()):
        pod = pods.get(uid)
        if pod is None:
            continue
        before = prev.get(uid)
        high_before = before.high_events if before is not None else 0
        if stats.high_events > high_before:
            n = stats.high_events - high_before
            out.append(Incident(pod, "MemoryHighReached",
                                f"went over memory.high {_mib(stats.memory_high)} {n} time(s) "
                                f"despite background reclaim (usage {_mib(stats.usage_bytes)}); "
                                "the pod was throttled"))
        # A new error, unless it is EAGAIN (partial reclaim, normal; stalls that follow
        # from it show up as MemoryHighReached).
        err = stats.last_error or ""
        eagain = stats.eagain_count > (before.eagain_count if before is not None else 0)
        if err and not eagain and err != ((before.last_error or "") if before else ""):
            out.append(Incident(pod, "ReclaimFailed", f"headroom agent: {err}"))
        raises = getattr(stats, "relief_raises", 0) - (getattr(before, "relief_raises", 0)
                                                       if before is not None else 0)
        if raises > 0:
            out.append(Incident(pod, "Unreclaimable",
                                f"memory.high raised to {_mib(stats.relieved_high)} (plan "
                                f"{_mib(stats.memory_high)}, usage {_mib(stats.usage_bytes)}): "
                                "reclaim made no progress while the kernel throttled the pod "
                                "at memory.high (anonymous memory without swap?); it runs up "
                                "to its memory limit until usage falls"))
        drift = stats.drift_corrections - (before.drift_corrections if before is not None else 0)
        if drift > 0:
            out.append(Incident(pod, "MemoryHighDrift",
                                f"memory.high was changed by something else {drift} time(s); "
                                f"put back to {_mib(stats.memory_high)}"))
    return out


class RateLimiter:
    """At most one pass per key per interval; counts what it held back."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self.suppressed: dict[tuple[str, str], int] = {}

    def allow(self, key: tuple[str, str]) -> bool:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self.suppressed[key] = self.suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        return True

    def take_suppressed(self, key: tuple[str, str]) -> int:
        return self.suppressed.pop(key, 0)

    def forget_except(self, uids: Iterable[str]) -> None:
        """Drop state of pods that left, so memory stays bounded."""
        keep = set(uids)
        self._last = {k: v for k, v in self._last.items() if k[0] in keep}
        self.suppressed = {k: v for k, v in self.suppressed.items() if k[0] in keep}


def event_body(incident: Incident, node: str, count: int, now: float) -> dict[str, Any]:
    pod = incident.pod
    ts = rfc3339(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{pod.name}.", "namespace": pod.namespace},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": pod.namespace,
                           "name": pod.name, "uid": pod.uid},
        "reason": incident.reason,
        "message": incident.message,
        "type": incident.type,
        "count": count,
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "source": {"component": COMPONENT, "host": node},
        "reportingComponent": "headroom.dev/agent",
        "reportingInstance": node,
    }


class EventRecorder:
    def __init__(self, post: Callable[[str, dict[str, Any]], Any], node: str, *,
                 min_interval: float = 600.0, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 on_posted: Callable[[str], None] | None = None) -> None:
        """``post(namespace, body)`` creates the Event (CoreV1Api.create_namespaced_event)."""
        self.post = post
        self.node = node
        self.limiter = RateLimiter(min_interval, clock)
        self.wall = wall
        self.on_posted = on_posted

    def record(self, incident: Incident) -> bool:
        key = (incident.pod.uid, incident.reason)
        if not self.limiter.allow(key):
            return False
        held_back = self.limiter.take_suppressed(key)
        msg = incident.message
        if held_back:
            msg += f" ({held_back} similar event(s) not posted in the last interval)"
        body = event_body(Incident(incident.pod, incident.reason, msg, incident.type),
                          self.node, 1 + held_back, self.wall())
        try:
            self.post(incident.pod.namespace, body)
        except Exception as e:   # the API may be away; the next incident will try again
            event(log, "event_post_failed", logging.WARNING, reason=incident.reason,
                  namespace=incident.pod.namespace, pod=incident.pod.name, error=repr(e))
            self.limiter.suppressed[key] = held_back + 1   # carried into the next Event
            return False
        if self.on_posted is not None:
            self.on_posted(incident.reason)
        return True


def kubernetes_poster(core_api: Any, timeout: float = 10.0) -> Callable[[str, dict[str, Any]],
                                                                         Any]:
    def post(namespace: str, body: dict[str, Any]) -> Any:
        return core_api.create_namespaced_event(namespace, body, _request_timeout=timeout)
    return post
