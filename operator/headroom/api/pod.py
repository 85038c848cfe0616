"""What headroom needs to know about a Pod: is it active, its memory request/limit, QoS class.

Memory request and limit are the *effective pod* values the kubelet uses for
the pod cgroup (memory.max), computed from the raw Pod JSON:

* pod-level ``spec.resources`` (PodLevelResources) wins where set;
* otherwise, per resource, ``max(sum(app) + sum(sidecars), max over regular init
  containers of (its own + sidecars declared before it))`` where a sidecar is an
  init container with ``restartPolicy: Always`` (it keeps running next to the
  app containers, KEP-753);
* ``spec.overhead`` (RuntimeClass) is added;
* a container request that is not set defaults to its limit (API-server
  defaulting; done here too so objects that skipped defaulting agree);
* the pod has a memory limit only if *every* container (app, init, sidecar)
  declares one: otherwise the kubelet leaves the pod cgroup's memory.max at
  "max", and so do we (limit None).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING
from functools import lru_cache
from typing import Any

from headroom.api.quantity import QuantityError, parse

TERMINAL_PHASES = ("Succeeded", "Failed")
QOS_CLASSES = ("Guaranteed", "Burstable", "BestEffort")


@dataclass(frozen=True)
class PodMemory:
    request: int        # bytes; 0 when nothing is requested
    limit: int | None   # bytes; None: the pod has no memory limit


@lru_cache(maxsize=4096)
def _to_int(value: str, milli: bool) -> int:
    # Cached: a cluster has few distinct quantity strings and parsing is slow.
    d = parse(value) * 1000 if milli else parse(value)
    return int(d.to_integral_value(rounding=ROUND_CEILING))


def _is_map(x: Any) -> bool:
    return type(x) is dict or isinstance(x, Mapping)   # the exact-type test is the fast path


def amount(resources: Any, kind: str, resource: str) -> int | None:
    """``resources[kind][resource]`` as an integer (CPU in milli-units), None if unset."""
    if not resources or not _is_map(resources):
        return None
    section = resources.get(kind)
    if not section or not _is_map(section) or resource not in section:
        return None
    raw = section[resource]
    if isinstance(raw, bool):
        return None
    try:
        return _to_int(str(raw), resource == "cpu")
    except QuantityError:
        return None


def _container_request(c: Mapping[str, Any], resource: str) -> int | None:
    res = c.get("resources")
    req = amount(res, "requests", resource)
    return req if req is not None else amount(res, "limits", resource)


def _container_limit(c: Mapping[str, Any], resource: str) -> int | None:
    return amount(c.get("resources"), "limits", resource)


def _effective(spec: Mapping[str, Any], get: Callable[[Mapping[str, Any]], int | None],
               missing_is_unlimited: bool) -> int | None:
    """Kubelet's pod total of one resource over app, sidecar and init containers."""
    app = 0
    sidecars = 0
    init_peak = 0
    for c in spec.get("containers") or []:
        a = get(c)
        if a is None:
            if missing_is_unlimited:
                return None
            a = 0
        app += a
    for c in spec.get("initContainers") or []:
        a = get(c)
        if a is None:
            if missing_is_unlimited:
                return None
            a = 0
        if c.get("restartPolicy") == "Always":
            app += a
            sidecars += a
            init_peak = max(init_peak, sidecars)
        else:
            init_peak = max(init_peak, a + sidecars)
    return max(app, init_peak)


def pod_memory(pod: Mapping[str, Any]) -> PodMemory:
    spec = pod.get("spec") or {}
    overhead = amount({"o": spec.get("overhead")}, "o", "memory") or 0
    pod_res = spec.get("resources")
    limit = amount(pod_res, "limits", "memory")
    if limit is None:
        limit = _effective(spec, lambda c: _container_limit(c, "memory"), True)
    request = amount(pod_res, "requests", "memory")
    if request is None:
        request = _effective(spec, lambda c: _container_request(c, "memory"), False) or 0
        if request == 0 and amount(pod_res, "limits", "memory") is not None:
            request = limit or 0   # pod-level limit only: request defaults to it
    return PodMemory(request + overhead, None if limit is None else limit + overhead)


def qos_class(pod: Mapping[str, Any]) -> str:
    """status.qosClass when the API server has set it, else computed as Kubernetes does."""
    status = pod.get("status") or {}
    if status.get("qosClass") in QOS_CLASSES:
        return str(status["qosClass"])
    spec = pod.get("spec") or {}
    pod_res = spec.get("resources")
    if pod_res and _is_map(pod_res) and (pod_res.get("requests") or pod_res.get("limits")):
        scopes: list[Any] = [pod_res]
    else:
        containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
        scopes = [c.get("resources") for c in containers]
    any_set = False
    guaranteed = True
    for res in scopes:
        for r in ("cpu", "memory"):
            lim = amount(res, "limits", r)
            req = amount(res, "requests", r)
            if lim or req:
                any_set = True
            if lim is None or (req is not None and req != lim):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def resource_key(pod: Mapping[str, Any]) -> str | None:
    """A string equal for pods whose memory and QoS class must be equal (pods of one
    workload share it), so callers can cache; None when the pod is not plain JSON."""
    spec = pod.get("spec") or {}
    try:
        return json.dumps((
            spec.get("resources"), spec.get("overhead"), (pod.get("status") or {}).get("qosClass"),
            [(c.get("resources"), c.get("restartPolicy")) for c in spec.get("containers") or ()],
            [(c.get("resources"), c.get("restartPolicy"))
             for c in spec.get("initContainers") or ()],
        ), sort_keys=True)
    except (TypeError, AttributeError, ValueError):
        return None


def is_active(pod: Mapping[str, Any]) -> bool:
    """Scheduled, not finished, not being deleted: a pod whose cgroup exists or soon will."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    return (bool(spec.get("nodeName")) and status.get("phase") not in TERMINAL_PHASES
            and not meta.get("deletionTimestamp"))
