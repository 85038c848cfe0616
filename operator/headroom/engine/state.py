"""Per-cgroup state of the engine: what it reports (TargetStats) and what it remembers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from headroom.cgroup import Cgroup, Watch
from headroom.engine.decisions import Bucket

if TYPE_CHECKING:
    from headroom.engine.engine import Target

# TargetStats.reason values
APPLIED = "Applied"
DRY_RUN = "DryRun"
NOT_FOUND = "CgroupNotFound"
ERROR = "Error"
LOWERING = "Lowering"   # memory.high waits for background reclaim before it is lowered


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
    high_events: int = 0                     # memory.events "high" delta since takeover
    psi_some_seconds: float = 0.0            # memory.pressure some total delta since takeover
    last_error: str | None = None
    lateness_seconds: float = 0.0            # how late the last scheduled check ran
    drift_corrections: int = 0               # memory.high found changed by others, put back
    dry_run_bytes: int = 0                   # what a dry run would have reclaimed
    budget_deferrals: int = 0                # checks that waited for the node CPU budget


@dataclass
class CgroupState:
    """Mutable engine-side record of one target; only the engine touches it, under its lock."""

    key: str
    cg: Cgroup | None
    generation: int                          # distinguishes re-takeovers of the same key
    target: Target
    stats: TargetStats = field(default_factory=TargetStats)
    watches: list[Watch] = field(default_factory=list)
    failed: bool = False                     # cgroup missing or unusable: retried on set_targets
    # memory.high bookkeeping
    has_original: bool = False
    original: int | None = None
    written_high: int | None = None          # last value we wrote (None: we have not written)
    effective_high: int | None = None        # the limit the watermark is computed from
    lowering_to: int | None = None           # memory.high to write once usage is below its
    lowering_deadline: float = 0.0           # watermark; written anyway from this time on
    # baselines at takeover
    events_base: int = 0
    psi_base_us: int = 0
    # scheduling and decisions
    in_flight: bool = False
    active: bool = False                     # a Watermark reclaim episode is running
    rate: float = 0.0                        # EWMA growth, bytes/s
    inst_rate: float = 0.0
    last_usage: int | None = None
    last_time: float = 0.0
    last_stats: float = float("-inf")
    pressure_sample: tuple[float, int] | None = None
    consecutive_failures: int = 0
    backoff_until: float = 0.0
    bytes_bucket: Bucket = field(default_factory=lambda: Bucket(0.0, 0.0))
