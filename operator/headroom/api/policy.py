"""Typed MemoryReclaimPolicy / ClusterMemoryReclaimPolicy parsed from raw dicts.

``parse_policy`` checks everything the CRD schema and its CEL rules check (the
operator must not trust that a server enforced them) plus what only the
operator can judge: selector syntax, quantity values and minimums. A failure
is a ``PolicyError`` with a condition reason and a message naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from headroom.api import syntax
from headroom.api.plan import (
    DEFAULT_HEADROOM_PERCENT,
    DEFAULT_MAX_BYTES_PER_SECOND,
    DEFAULT_PRESSURE_TARGET_BASIS_POINTS,
    DEFAULT_STEP_BYTES,
    DEFAULT_TARGET_PERCENT,
    MAX_BASIS_POINTS,
    MAX_BYTES,
    MAX_CPU_BUDGET_CORES,
    MIN_CPU_BUDGET_CORES,
    MIN_MEMORY_HIGH,
)
from headroom.api.pod import PodMemory
from headroom.api.quantity import PAGE_SIZE, QuantityError, page_align_down, parse, parse_bytes
from headroom.api.selector import (
    LabelSelector,
    SelectorError,
    compile_selector,
    dropped_null_labels,
)

NAMESPACED_KIND = "MemoryReclaimPolicy"
CLUSTER_KIND = "ClusterMemoryReclaimPolicy"
MODES = ("Watermark", "Pressure", "Off")
# Bounds and defaults shared with the plan: headroom/api/plan.py.
INT32_MAX = 2**31 - 1


class PolicyError(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, order=True)
class PolicyRef:
    """Identity of a policy. ``namespace`` is "" for ClusterMemoryReclaimPolicy."""

    kind: str
    namespace: str
    name: str

    def to_dict(self) -> dict[str, str]:
        """The ``policy`` field of a plan pod entry (no namespace key for cluster policies)."""
        if self.namespace:
            return {"kind": self.kind, "namespace": self.namespace, "name": self.name}
        return {"kind": self.kind, "name": self.name}


@dataclass(frozen=True)
class MemoryHigh:
    """Exactly one of the three forms is set."""

    bytes: int | None = None
    limit_percent: int | None = None
    throttling_percent: int | None = None

    def for_pod(self, mem: PodMemory) -> tuple[int | None, str, str]:
        """(bytes, "", "") or (None, reason, message) when the pod must be skipped."""
        if self.bytes is not None:
            value = self.bytes if mem.limit is None else min(self.bytes, mem.limit)
        elif mem.limit is None:
            form = "limitPercent" if self.limit_percent is not None else "throttlingPercent"
            return None, "NoMemoryLimit", f"memoryHigh.{form} needs a pod memory limit"
        elif self.limit_percent is not None:
            value = mem.limit * self.limit_percent // 100       # integers: exact
        else:
            assert self.throttling_percent is not None
            request = min(mem.request, mem.limit)
            value = request + self.throttling_percent * (mem.limit - request) // 100
        value = page_align_down(value)
        if value < MIN_MEMORY_HIGH:
            return None, "BelowMinimum", (
                f"resolved memory.high {value} bytes is below the minimum {MIN_MEMORY_HIGH}")
        return value, "", ""


@dataclass(frozen=True)
class ReclaimSpec:
    mode: str = "Watermark"
    headroom_percent: int = DEFAULT_HEADROOM_PERCENT
    target_percent: int = DEFAULT_TARGET_PERCENT
    step_bytes: int = DEFAULT_STEP_BYTES
    max_bytes_per_second: int = DEFAULT_MAX_BYTES_PER_SECOND
    node_cpu_budget: float | None = None     # cores
    swappiness: int | None = None
    pressure_target_basis_points: int = DEFAULT_PRESSURE_TARGET_BASIS_POINTS
    livelock_guard: bool = True

    def to_plan(self) -> dict[str, Any]:
        """The ``reclaim`` block of a plan pod entry (fixed key order)."""
        out: dict[str, Any] = {
            "mode": self.mode,
            "headroomPercent": self.headroom_percent,
            "targetPercent": self.target_percent,
            "stepBytes": self.step_bytes,
            "maxBytesPerSecond": self.max_bytes_per_second,
        }
        if self.swappiness is not None:
            out["swappiness"] = self.swappiness
        out["pressureTargetBasisPoints"] = self.pressure_target_basis_points
        # Every field the plan CRD defaults is written: what the server stores is then
        # exactly what the operator computed, and a restarted operator rewrites nothing.
        out["livelockGuard"] = self.livelock_guard
        return out


@dataclass(frozen=True)
class Policy:
    ref: PolicyRef
    generation: int | None
    selector: LabelSelector
    namespace_selector: LabelSelector | None   # cluster policies only
    memory_high: MemoryHigh
    reclaim: ReclaimSpec
    priority: int
    dry_run: bool

    @property
    def is_cluster(self) -> bool:
        return self.ref.kind == CLUSTER_KIND

    def precedence(self) -> tuple[int, int]:
        """Sorts first = wins: higher priority, then namespaced before cluster."""
        return (-self.priority, 1 if self.is_cluster else 0)


def policy_ref(obj: Mapping[str, Any], kind: str) -> PolicyRef:
    meta = obj.get("metadata") or {}
    ns = "" if kind == CLUSTER_KIND else str(meta.get("namespace") or "")
    return PolicyRef(kind, ns, str(meta.get("name") or ""))


def _integer(spec: Mapping[str, Any], key: str, field: str, default: int | None,
             lo: int, hi: int) -> int:
    """An integer field in [lo, hi]: no floats (API conventions), no bools."""
    v = spec.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        raise PolicyError("InvalidSpec", f"{field} must be an integer, got {v!r}")
    if not lo <= v <= hi:
        raise PolicyError("InvalidSpec", f"{field} must be in [{lo}, {hi}], got {v}")
    return v


def _bytes(spec: Mapping[str, Any], key: str, field: str, default: int, minimum: int) -> int:
    """A byte quantity within the plan's bounds, page aligned down (>= minimum after)."""
    if key not in spec:
        return default
    v = spec[key]
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise PolicyError("InvalidQuantity", f"{field} must be an integer or a quantity "
                          f"string, got {v!r}")
    if isinstance(v, str) and not syntax.is_bytes_quantity(v):
        raise PolicyError("InvalidQuantity", f"{field}: Invalid value: {_short(v)}: "
                          f"{syntax.BYTES_MESSAGE}")
    try:
        n = parse_bytes(v)
    except QuantityError as e:
        raise PolicyError("InvalidQuantity", f"{field}: {e}") from None
    if not minimum <= n <= MAX_BYTES:
        raise PolicyError("InvalidQuantity", f"{field} must be between {minimum} and "
                          f"{MAX_BYTES} bytes, got {_short(v)}")
    return page_align_down(n)


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _cpu(raw: Any, field: str) -> float:
    """nodeCpuBudget: 1m .. MAX_CPU_BUDGET_CORES, millicore grain."""
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise PolicyError("InvalidQuantity", f"{field} must be an integer or a quantity "
                          f"string such as 500m, got {_short(raw)}")
    if isinstance(raw, str) and not syntax.is_cpu_quantity(raw):
        raise PolicyError("InvalidQuantity", f"{field}: Invalid value: {_short(raw)}: "
                          f"{syntax.CPU_MESSAGE}")
    try:
        cores = float(parse(raw))
    except QuantityError as e:
        raise PolicyError("InvalidQuantity", f"{field}: {e}") from None
    if not MIN_CPU_BUDGET_CORES <= cores <= MAX_CPU_BUDGET_CORES:
        raise PolicyError("InvalidQuantity", f"{field}: Invalid value: {_short(raw)}: "
                          f"{syntax.CPU_MESSAGE}")
    return cores


def _memory_high(raw: Any) -> MemoryHigh:
    if not isinstance(raw, Mapping):
        raise PolicyError("InvalidSpec", "spec.memoryHigh is required")
    forms = [k for k in ("bytes", "limitPercent", "throttlingPercent")
             if raw.get(k) is not None]
    if len(forms) != 1:
        raise PolicyError("InvalidSpec", "spec.memoryHigh needs exactly one of bytes, "
                          f"limitPercent, throttlingPercent (got {', '.join(forms) or 'none'})")
    if forms[0] == "bytes":
        return MemoryHigh(bytes=_bytes(raw, "bytes", "spec.memoryHigh.bytes", 0,
                                       MIN_MEMORY_HIGH))
    if forms[0] == "limitPercent":
        return MemoryHigh(limit_percent=_integer(raw, "limitPercent",
                                                 "spec.memoryHigh.limitPercent", None, 1, 100))
    return MemoryHigh(throttling_percent=_integer(raw, "throttlingPercent",
                                                  "spec.memoryHigh.throttlingPercent", None,
                                                  1, 100))


def _reclaim(raw: Any) -> ReclaimSpec:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise PolicyError("InvalidSpec", "spec.reclaim must be an object")
    mode = raw.get("mode", "Watermark")
    if mode is False:  # YAML 1.1 reads an unquoted Off as false
        raise PolicyError("InvalidSpec", 'spec.reclaim.mode is false: write "Off" in quotes')
    if mode not in MODES:
        raise PolicyError("InvalidSpec", f"spec.reclaim.mode must be one of {', '.join(MODES)}")
    f = "spec.reclaim."
    headroom = _integer(raw, "headroomPercent", f + "headroomPercent",
                        DEFAULT_HEADROOM_PERCENT, 1, 99)
    target = _integer(raw, "targetPercent", f + "targetPercent", DEFAULT_TARGET_PERCENT, 1, 99)
    if not headroom < target < 100:
        raise PolicyError("InvalidSpec", "spec.reclaim: need headroomPercent < targetPercent "
                          f"< 100, got {headroom} and {target}")
    budget: float | None = None
    if raw.get("nodeCpuBudget") is not None:
        budget = _cpu(raw["nodeCpuBudget"], f + "nodeCpuBudget")
    guard = raw.get("livelockGuard", True)
    if not isinstance(guard, bool):
        raise PolicyError("InvalidSpec", f"{f}livelockGuard must be a boolean, got {guard!r}")
    swappiness = None
    if raw.get("swappiness") is not None:
        swappiness = _integer(raw, "swappiness", f + "swappiness", None, 0, 200)
    return ReclaimSpec(
        mode=mode,
        headroom_percent=headroom,
        target_percent=target,
        step_bytes=_bytes(raw, "stepBytes", f + "stepBytes", DEFAULT_STEP_BYTES, PAGE_SIZE),
        max_bytes_per_second=_bytes(raw, "maxBytesPerSecond", f + "maxBytesPerSecond",
                                    DEFAULT_MAX_BYTES_PER_SECOND, PAGE_SIZE),
        node_cpu_budget=budget,
        swappiness=swappiness,
        pressure_target_basis_points=_integer(
            raw, "pressureTargetBasisPoints", f + "pressureTargetBasisPoints",
            DEFAULT_PRESSURE_TARGET_BASIS_POINTS, 1, MAX_BASIS_POINTS),
        livelock_guard=guard,
    )


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _dropped_null_labels(obj: Mapping[str, Any], spec: Mapping[str, Any], kind: str) -> list[str]:
    """A null label value that client-side kubectl apply removed before the server saw it
    (the CRD refuses it when it arrives): found in the last-applied annotation."""
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    if not isinstance(raw, str):
        return []
    try:
        applied = json.loads(raw)
    except ValueError:
        return []
    applied_spec = applied.get("spec") if isinstance(applied, Mapping) else None
    if not isinstance(applied_spec, Mapping):
        return []
    fields = ["selector"] + (["namespaceSelector"] if kind == CLUSTER_KIND else [])
    return [msg for f in fields
            for msg in dropped_null_labels(applied_spec.get(f), spec.get(f), f"spec.{f}")]


def parse_policy(obj: Mapping[str, Any], kind: str) -> Policy:
    """A raw policy object -> Policy. Raises PolicyError(reason, message)."""
    ref = policy_ref(obj, kind)
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise PolicyError("InvalidSpec", "spec is required")
    try:
        selector = compile_selector(spec.get("selector"), "spec.selector")
        ns_selector = (compile_selector(spec.get("namespaceSelector"), "spec.namespaceSelector")
                       if kind == CLUSTER_KIND else None)
    except SelectorError as e:
        raise PolicyError("InvalidSelector", str(e)) from None
    dropped = _dropped_null_labels(obj, spec, kind)
    if dropped:
        raise PolicyError("InvalidSelector", dropped[0])
    generation = (obj.get("metadata") or {}).get("generation")
    dry_run = spec.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise PolicyError("InvalidSpec", f"spec.dryRun must be a boolean, got {dry_run!r}")
    return Policy(
        ref=ref,
        generation=generation if isinstance(generation, int) else None,
        selector=selector,
        namespace_selector=ns_selector,
        memory_high=_memory_high(spec.get("memoryHigh")),
        reclaim=_reclaim(spec.get("reclaim")),
        priority=_integer(spec, "priority", "spec.priority", 0, -INT32_MAX - 1, INT32_MAX),
        dry_run=dry_run,
    )
