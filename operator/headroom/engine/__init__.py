"""The reclaim engine: per-cgroup memory.high ownership and background reclaim (no Kubernetes).

    engine      threads, schedule, budgets (ReclaimEngine)
    targets     Target, ReclaimSettings, TargetStats: what callers pass and read
    modes/      Watermark, Pressure, Off: how much to reclaim at a check
    decisions   the control law, pure functions
    memoryhigh  every memory.high write, the per-cgroup state machine, the originals
    originals   the originals journal in the state dir
    wakeups     epoll over PSI triggers and memory.events, self-pipe
    state       the per-cgroup record; scheduler: the due-time heap; metrics: Prometheus
"""

from headroom.engine.engine import ReclaimEngine, Tuning
from headroom.engine.targets import ReclaimSettings, Target, TargetStats

__all__ = ["ReclaimEngine", "ReclaimSettings", "Target", "TargetStats", "Tuning"]
