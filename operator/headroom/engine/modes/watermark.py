"""Watermark mode: reclaim from a start level below memory.high down to a target level
(decisions.floor_levels, decisions.watermark_step), never below the working set that
memory.stat shows (decisions.working_set_update)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from headroom.engine import decisions as d
from headroom.engine.modes.base import Check, Mode, register
from headroom.logs import event

if TYPE_CHECKING:
    from headroom.engine.state import CgroupState

log = logging.getLogger("headroom.engine")


class Watermark(Mode):
    name = "Watermark"

    def levels(self, st: CgroupState, high: int) -> tuple[int, int]:
        s = st.target.settings
        # a lower memory.high waiting for reclaim: the working set has to shrink
        floor = 0.0 if st.high.lowering_to is not None else st.ws.floor
        return d.floor_levels(high, s.headroom_percent, s.target_percent, floor)

    def observe(self, st: CgroupState, high: int, usage: int, now: float,
                tuning: d.Tuning, classic_lru: bool) -> None:
        """While usage is in the reclaim band, read memory.stat (d.ws_read_due) for the
        working-set floor reclaim stops at."""
        s = st.target.settings
        _, target = d.watermark_levels(high, s.headroom_percent, s.target_percent)
        if st.cg is None or usage < target or not d.ws_read_due(st.ws, now, usage, tuning):
            return
        stat = st.cg.read_stat()
        if "inactive_file" not in stat:   # no LRU sizes (not a kernel's memory.stat): no
            st.ws = replace(st.ws, stamp=now, usage=usage)   # floor, read as seldom
            return
        st.ws = d.working_set_read(st.ws, now, usage, stat, classic_lru, tuning)

    def want(self, c: Check) -> tuple[int, float]:
        st, tn = c.st, c.tuning
        high = st.high.limit
        if high is None:
            return 0, tn.max_interval
        self.observe(st, high, c.usage, c.now, tn, c.classic_lru)
        start, target = self.levels(st, high)
        was_active = st.active
        want, st.active = d.watermark_step(c.usage, start, target,
                                           st.target.settings.step_bytes, st.active)
        interval = d.next_check_interval(c.usage, start, max(st.rate, st.inst_rate), tn)
        if st.active and not was_active and c.dry:
            event(log, "dry_run_reclaim", key=st.key, usage_bytes=c.usage, memory_high=high,
                  would_reclaim_bytes=c.usage - target)
        return want, interval

    def reclaimed(self, st: CgroupState, usage_after: int, tuning: d.Tuning) -> None:
        if st.active and st.high.limit is not None:
            start, target = self.levels(st, st.high.limit)
            st.active = d.episode_continues(usage_after, start, target)


WATERMARK = register(Watermark())
