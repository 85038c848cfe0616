"""The benchmark's third arm: a reclaimer that looks at every cgroup once per second.

This is what periodic node agents do: every `period` seconds, read memory.current of
each managed cgroup and, when it is above the same target headroom's engine reclaims
down to (memory.high x (1 - targetPercent)), write memory.reclaim for the whole excess
in one go. Same duck-typed surface as ReclaimEngine where bench/pagecache_compare.py's
run_arm() uses it (start, set_targets, snapshot, stop, capabilities), so the arms
share one measurement path. It writes memory.high itself and restores what it found.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

from headroom.cgroup import Capabilities, Cgroup, CgroupError, CgroupRoot, PartialReclaim
from headroom.engine import Target
from headroom.engine.decisions import watermark_levels
from headroom.engine.targets import APPLIED, TargetStats


@dataclass
class _Managed:
    target: Target
    cg: Cgroup
    original: int | None
    stats: TargetStats


class NaiveReclaimer:
    def __init__(self, root: CgroupRoot, period: float = 1.0) -> None:
        self.root, self.period = root, period
        self.capabilities = Capabilities()
        self._managed: dict[str, _Managed] = {}
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="naive-reclaimer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def set_targets(self, targets: Iterable[Target]) -> None:
        desired = {t.key: t for t in targets}
        with self._lock:
            for key in [k for k in self._managed if k not in desired]:
                m = self._managed.pop(key)
                m.cg.write_high(m.original)
            for key, t in desired.items():
                if key not in self._managed:
                    cg = self.root.cgroup(t.path)
                    m = _Managed(t, cg, cg.read_high(), TargetStats(applied=True, reason=APPLIED,
                                                                    memory_high=t.memory_high))
                    cg.write_high(t.memory_high)
                    self._managed[key] = m

    def snapshot(self) -> dict[str, TargetStats]:
        with self._lock:
            return {k: replace(m.stats) for k, m in self._managed.items()}

    def stop(self, restore: bool = True) -> None:
        self._halt.set()
        if self._thread.is_alive():
            self._thread.join()
        if restore:
            self.set_targets([])

    def _loop(self) -> None:
        while not self._halt.wait(self.period):
            with self._lock:
                managed = list(self._managed.values())
            for m in managed:
                self._check(m)

    def _check(self, m: _Managed) -> None:
        s, high = m.target.settings, m.target.memory_high
        if high is None:
            return
        _, target = watermark_levels(high, s.headroom_percent, s.target_percent)
        try:
            usage = m.cg.read_current()
            excess = usage - target
            if excess <= 0:
                return
            t0 = time.thread_time()
            try:
                m.cg.reclaim(excess)
                m.stats.reclaimed_bytes += excess
            except PartialReclaim as e:
                m.stats.eagain_count += 1
                m.stats.last_error = str(e)
                m.stats.reclaimed_bytes += max(0, min(excess, usage - m.cg.read_current()))
            m.stats.reclaim_cpu_seconds += time.thread_time() - t0
            m.stats.reclaim_writes += 1
        except CgroupError as e:
            m.stats.last_error = str(e)
