"""What the engine is asked to do (Target, ReclaimSettings) and what it reports (TargetStats).

No engine logic here: nodeagent and standalone build Targets, metrics and status read
TargetStats, and the engine's modules import this one (never the other way round).
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from headroom.engine import modes
from headroom.engine.decisions import PAGE_SIZE

# TargetStats.reason values
APPLIED = "Applied"
DRY_RUN = "DryRun"
NOT_FOUND = "CgroupNotFound"
ERROR = "Error"
LOWERING = "Lowering"   # memory.high waits for background reclaim before it is lowered
UNRECLAIMABLE = "Unreclaimable"   # livelock guard: memory.high raised above the plan's value


@dataclass(frozen=True)
class ReclaimSettings:
    mode: str = "Watermark"
    headroom_percent: float = 5.0
    target_percent: float = 10.0
    step_bytes: int = 16 << 20
    max_bytes_per_second: int = 512 << 20
    swappiness: int | None = None
    pressure_target_percent: float = 0.1
    livelock_guard: bool = True     # raise memory.high toward memory.max when reclaim is stuck

    def problems(self) -> list[tuple[str, str]]:
        """(field, message) for every invalid value; empty when valid."""
        out = []
        if self.mode not in modes.names():
            out.append(("mode", f"must be one of {', '.join(modes.names())}, not {self.mode!r}"))
        if not 0 < self.headroom_percent < 100:
            out.append(("headroom_percent", "must be > 0 and < 100"))
        if not 0 < self.target_percent < 100:
            out.append(("target_percent", "must be > 0 and < 100"))
        elif self.target_percent <= self.headroom_percent:
            out.append(("target_percent", "must be greater than headroom_percent"))
        if self.step_bytes < PAGE_SIZE:
            out.append(("step_bytes", f"must be at least one page ({PAGE_SIZE})"))
        if self.max_bytes_per_second < PAGE_SIZE:
            out.append(("max_bytes_per_second", f"must be at least {PAGE_SIZE}"))
        if self.swappiness is not None and not 0 <= self.swappiness <= 200:
            out.append(("swappiness", "must be 0..200"))
        if not self.pressure_target_percent > 0:
            out.append(("pressure_target_percent", "must be > 0"))
        return out


@dataclass(frozen=True)
class Target:
    key: str
    path: pathlib.Path
    memory_high: int | None
    settings: ReclaimSettings = field(default_factory=ReclaimSettings)
    labels: Mapping[str, str] = field(default_factory=dict)
    dry_run: bool = False


@dataclass
class TargetStats:
    """Counters of one target since the engine took it over (see docs/architecture.md)."""

    applied: bool = False
    reason: str = "Pending"
    memory_high: int | None = None           # applied (dry run, Lowering: intended) memory.high
    original_memory_high: int | None = None  # what was there before; None = "max"
    usage_bytes: int = 0
    reclaimed_bytes: int = 0
    reclaim_cpu_seconds: float = 0.0
    reclaim_writes: int = 0
    eagain_count: int = 0
    reclaim_errors: int = 0                  # memory.reclaim writes that failed otherwise
    high_events: int = 0                     # memory.events "high" delta since takeover
    psi_some_seconds: float = 0.0            # memory.pressure some total delta since takeover
    last_error: str | None = None
    lateness_seconds: float = 0.0            # how late the last scheduled check ran
    drift_corrections: int = 0               # memory.high found changed by others, put back
    dry_run_bytes: int = 0                   # what a dry run would have reclaimed
    budget_deferrals: int = 0                # checks that waited for the node CPU budget
    relieved_high: int | None = None         # livelock guard: memory.high in effect above
                                             # the plan's (None: not relieved)
    relief_raises: int = 0                   # livelock guard: times memory.high was raised
    working_set_bytes: int | None = None     # Pressure mode: lowest usage of the last
                                             # Tuning.working_set_window s of probing; None
                                             # before one window has passed (or other modes)


class LatenessHistogram:
    """How late scheduled checks ran, over all targets: cumulative bucket counts in the
    Prometheus sense (upper bounds in seconds), updated by the engine thread, read at
    scrape time (a torn read shows one check more or less, never a wrong shape)."""

    BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self) -> None:
        self.counts = [0] * (len(self.BOUNDS) + 1)   # the last: above every bound
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(self.BOUNDS):
            if seconds <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, n in zip((*map(str, self.BOUNDS), "+Inf"), self.counts, strict=True):
            running += n
            out.append((bound, float(running)))
        return out
