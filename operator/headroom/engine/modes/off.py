"""Off mode: memory.high only. Reclaim runs only to bring usage under a memory.high that
waits to be lowered (and then by the watermark rule); a lower value waits only while
writing it would make the kernel reclaim, i.e. while usage is at or above it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from headroom.engine.modes.base import Check, Mode, register
from headroom.engine.modes.watermark import WATERMARK

if TYPE_CHECKING:
    from headroom.engine.targets import ReclaimSettings


class Off(Mode):
    name = "Off"
    reclaims = False

    def want(self, c: Check) -> tuple[int, float]:
        if c.st.high.lowering_to is None:
            return 0, c.tuning.max_interval
        return WATERMARK.want(c)

    def lowering_headroom(self, s: ReclaimSettings) -> float:
        return 0.0


OFF = register(Off())
