"""The standalone agent's YAML file: parsed and fully validated before anything is touched.

Format (docs/engine.md, examples/standalone/headroom.yaml):

    nodeCpuBudget: 500m        # node-wide reclaim CPU, cores (quantity); default --cpu-budget
    rescanInterval: 10         # seconds between glob re-scans
    summaryInterval: 60        # seconds between summary log lines; 0: none
    cgroups:
    - cgroup: "workload.slice/*.service"   # glob relative to the cgroup root
      memoryHigh: 256Mi        # bytes/quantity, or "90%" of the cgroup's memory.max;
                               # omitted: leave memory.high alone and keep usage under it
      dryRun: false
      reclaim: {mode: Watermark, headroomPercent: 5, targetPercent: 10, stepBytes: 16Mi,
                maxBytesPerSecond: 512Mi, swappiness: 60, pressureTargetBasisPoints: 10}

The names and types are the policy API's (docs/api.md); the reclaim block is parsed by
the policy's own parser.
"""

from __future__ import annotations

import math
import os
import pathlib
from dataclasses import dataclass
from typing import Any

import yaml

from headroom.api.plan import (
    ENTRY_BOUNDS,
    MAX_CPU_BUDGET_CORES,
    MIN_CPU_BUDGET_CORES,
    MIN_MEMORY_HIGH,
)
from headroom.api.policy import PolicyError
from headroom.api.policy import _reclaim as parse_reclaim_block
from headroom.api.quantity import QuantityError, page_align_down, parse_bytes, parse_cpu
from headroom.engine import ReclaimSettings

TOP_KEYS = ("nodeCpuBudget", "rescanInterval", "summaryInterval", "cgroups")
ENTRY_KEYS = ("cgroup", "memoryHigh", "dryRun", "reclaim")
RECLAIM_KEYS = ("mode", "headroomPercent", "targetPercent", "stepBytes", "maxBytesPerSecond",
                "swappiness", "pressureTargetBasisPoints", "livelockGuard")
DEFAULT_RESCAN_SECONDS = 10.0
DEFAULT_SUMMARY_SECONDS = 60.0


class ConfigError(ValueError):
    """One message naming the file, the entry (index and glob) and the field."""

    def __init__(self, file: str | os.PathLike[str], field: str, problem: str,
                 index: int | None = None, glob: str | None = None):
        where = ""
        if index is not None:
            where = f"cgroups[{index}]" + (f" (cgroup {glob!r})" if glob else "") + ": "
        super().__init__(f"{os.fspath(file)}: {where}{field}: {problem}")


@dataclass(frozen=True)
class Entry:
    index: int
    glob: str
    memory_high: int | None          # bytes
    memory_high_percent: int | None  # of memory.max, 1-100 as the CRD's limitPercent
    settings: ReclaimSettings
    dry_run: bool

    def resolve_high(self, memory_max: int | None) -> tuple[int | None, str]:
        """(memory.high bytes or None, why not) for a cgroup with this memory.max."""
        if self.memory_high_percent is None:
            return self.memory_high, ""
        if memory_max is None:
            return None, f'memoryHigh "{self.memory_high_percent}%" needs a memory.max limit'
        high = page_align_down(memory_max * self.memory_high_percent // 100)
        if high < MIN_MEMORY_HIGH:
            return None, (f'memoryHigh "{self.memory_high_percent}%" of memory.max '
                          f"{memory_max} is below {MIN_MEMORY_HIGH} bytes")
        return high, ""


@dataclass(frozen=True)
class Config:
    path: pathlib.Path
    entries: tuple[Entry, ...]
    cpu_budget: float | None
    rescan_interval: float
    summary_interval: float


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate; raises ConfigError (never touches any cgroup)."""
    p = pathlib.Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except OSError as e:
        raise ConfigError(p, "file", e.strerror or str(e)) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(p, "yaml", f"{problem}{at}") from None
    return parse(raw, p)


def parse(raw: Any, path: pathlib.Path) -> Config:
    if not isinstance(raw, dict):
        raise ConfigError(path, "top level", "must be a mapping with a 'cgroups' list")
    _no_unknown_keys(raw, TOP_KEYS, path, "top level")
    cpu = None
    if raw.get("nodeCpuBudget") is not None:
        key = "nodeCpuBudget"
        if isinstance(raw[key], bool):
            raise ConfigError(path, key, f"must be a CPU quantity, got {raw[key]!r}")
        try:
            cpu = parse_cpu(raw[key])
        except (QuantityError, OverflowError, ValueError) as e:
            raise ConfigError(path, key, str(e)) from None
        if not cpu > 0:
            raise ConfigError(path, key, f"must be > 0 cores, got {raw[key]!r}")
        # the plan contract's bounds: the same node budget a cluster could ask for
        if not MIN_CPU_BUDGET_CORES <= cpu <= MAX_CPU_BUDGET_CORES:
            raise ConfigError(path, key, f"must be between {MIN_CPU_BUDGET_CORES:g} and "
                              f"{MAX_CPU_BUDGET_CORES} cores, got {raw[key]!r}")
    rescan = _seconds(raw, "rescanInterval", DEFAULT_RESCAN_SECONDS, path, minimum=0.1)
    summary = _seconds(raw, "summaryInterval", DEFAULT_SUMMARY_SECONDS, path, minimum=0.0)
    entries_raw = raw.get("cgroups")
    if not isinstance(entries_raw, list) or not entries_raw:
        raise ConfigError(path, "cgroups", "must be a non-empty list of entries")
    entries = tuple(_entry(i, e, path) for i, e in enumerate(entries_raw))
    return Config(path, entries, cpu, rescan, summary)


def _no_unknown_keys(d: dict[str, Any], allowed: tuple[str, ...], path: pathlib.Path,
                     where: str, index: int | None = None, glob: str | None = None) -> None:
    for key in d:
        if key not in allowed:
            raise ConfigError(path, f"{where}.{key}" if where != "top level" else str(key),
                              f"unknown field (allowed: {', '.join(allowed)})", index, glob)


def _seconds(raw: dict[str, Any], key: str, default: float, path: pathlib.Path,
             minimum: float) -> float:
    v = raw.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
            or v < minimum:
        raise ConfigError(path, key, f"must be a number of seconds >= {minimum:g}, got {v!r}")
    return float(v)


def _entry(index: int, e: Any, path: pathlib.Path) -> Entry:
    if not isinstance(e, dict):
        raise ConfigError(path, "entry", "must be a mapping with a 'cgroup' glob", index)
    glob = e.get("cgroup")
    if not isinstance(glob, str) or not glob.strip():
        raise ConfigError(path, "cgroup", "required: a glob relative to the cgroup root", index)
    _no_unknown_keys(e, ENTRY_KEYS, path, "entry", index, glob)
    pure = pathlib.PurePosixPath(glob)
    if pure.is_absolute() or ".." in pure.parts or glob.strip() in (".", "./"):
        raise ConfigError(path, "cgroup", "must be relative to the cgroup root, without '..', "
                          "and not the root itself", index, glob)

    def fail(field: str, problem: str) -> ConfigError:
        return ConfigError(path, field, problem, index, glob)

    high, percent = None, None
    raw_high = e.get("memoryHigh")
    if isinstance(raw_high, str) and raw_high.strip().endswith("%"):
        digits = raw_high.strip()[:-1].strip()
        # Whole percent, as the CRD's limitPercent (Kubernetes API conventions: no floats).
        if not (digits.isascii() and digits.isdigit()):
            raise fail("memoryHigh", f"not a whole percentage such as \"90%\": {raw_high!r}")
        percent = int(digits)
        if not 1 <= percent <= 100:
            raise fail("memoryHigh", f"percent of memory.max must be in [1, 100], got {raw_high}")
    elif raw_high is not None:
        if isinstance(raw_high, bool):
            raise fail("memoryHigh", f"must be bytes or a quantity, got {raw_high!r}")
        try:
            high = parse_bytes(raw_high)
        except (QuantityError, OverflowError, ValueError) as err:
            raise fail("memoryHigh", f"{err} (bytes, a quantity such as 256Mi, or a "
                                     'percentage of memory.max such as "90%")') from None
        if high < 1 << 20:
            raise fail("memoryHigh", f"must be at least 1Mi, got {raw_high!r}")
        high = page_align_down(high)
        why = ENTRY_BOUNDS["memoryHigh"].problem(high)   # the plan contract: within int64
        if why:
            raise fail("memoryHigh", f"{why} (bytes, from {raw_high!r})")
    dry = e.get("dryRun", False)
    if not isinstance(dry, bool):
        raise fail("dryRun", f"must be true or false, got {dry!r}")
    reclaim = e.get("reclaim")
    if reclaim is not None and not isinstance(reclaim, dict):
        raise fail("reclaim", "must be a mapping")
    if reclaim:
        _no_unknown_keys(reclaim, RECLAIM_KEYS, path, "reclaim", index, glob)
    for name in ("stepBytes", "maxBytesPerSecond"):   # a quantity of Infinity, 1e999
        if reclaim and reclaim.get(name) is not None:
            try:
                parse_bytes(reclaim[name])
            except (OverflowError, ValueError) as err:
                raise fail(f"reclaim.{name}", f"not a byte quantity: {err}") from None
    try:
        spec = parse_reclaim_block(reclaim)  # the policy API's own validation
    except PolicyError as err:
        field, _, problem = err.message.removeprefix("spec.").partition(" ")
        raise fail(field.rstrip(":"), problem) from None
    except (OverflowError, ValueError) as err:   # e.g. a quantity of Infinity
        raise fail("reclaim", str(err)) from None
    # ... and the plan contract's bounds on what comes out (the same the agent applies
    # to a cluster's plan): nothing past int64, no nan, no bool taken for a number
    for name, value in (("stepBytes", page_align_down(spec.step_bytes)),
                        ("maxBytesPerSecond", page_align_down(spec.max_bytes_per_second)),
                        ("headroomPercent", spec.headroom_percent),
                        ("targetPercent", spec.target_percent),
                        ("swappiness", spec.swappiness),
                        ("pressureTargetBasisPoints", spec.pressure_target_basis_points)):
        raw_value = (reclaim or {}).get(name)
        if value is None:
            continue
        why = (f"must be an integer, got {raw_value!r}" if isinstance(raw_value, bool)
               else ENTRY_BOUNDS[f"reclaim.{name}"].problem(value))
        if why:
            raise fail(f"reclaim.{name}", why)
    settings = ReclaimSettings(
        mode=spec.mode, headroom_percent=float(spec.headroom_percent),
        target_percent=float(spec.target_percent),
        step_bytes=page_align_down(spec.step_bytes),
        max_bytes_per_second=page_align_down(spec.max_bytes_per_second),
        swappiness=spec.swappiness,
        pressure_target_percent=spec.pressure_target_basis_points / 100,
        livelock_guard=spec.livelock_guard)
    return Entry(index, glob.strip(), high, percent, settings, dry)
