"""Per-cgroup state of the engine: one mutable record per target, touched only under the
engine's lock. memory.high bookkeeping is its own record (memoryhigh.HighState)."""

from __future__ import annotations

from dataclasses import dataclass, field

from headroom.cgroup import Cgroup, Watch
from headroom.engine.decisions import Bucket, WorkingSet
from headroom.engine.memoryhigh import HighState
from headroom.engine.targets import Target, TargetStats


@dataclass
class CgroupState:
    key: str
    cg: Cgroup | None
    generation: int                          # distinguishes re-takeovers of the same key
    target: Target
    stats: TargetStats = field(default_factory=TargetStats)
    high: HighState = field(default_factory=HighState)
    watches: list[Watch] = field(default_factory=list)
    failed: bool = False                     # cgroup missing or unusable: retried on set_targets
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
    pressure_since: float | None = None       # first PSI sample of Pressure mode
    usage_window: tuple[tuple[float, int], ...] = ()   # decisions.settled_usage
    consecutive_failures: int = 0
    backoff_until: float = 0.0
    bytes_bucket: Bucket = field(default_factory=lambda: Bucket(0.0, 0.0))
    ws: WorkingSet = field(default_factory=WorkingSet)   # working-set floor (memory.stat)
