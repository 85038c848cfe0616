"""Pressure mode (Senpai / TMO style): probe reclaim while the PSI "some" share stays
below its target (decisions.pressure_share, decisions.pressure_step); the watermark
guard of Watermark mode applies as well."""

from __future__ import annotations

from headroom.engine import decisions as d
from headroom.engine.modes.base import Check, register
from headroom.engine.modes.watermark import Watermark


class Pressure(Watermark):
    name = "Pressure"

    def want(self, c: Check) -> tuple[int, float]:
        want, interval = super().want(c)
        return max(want, self._probe(c)), min(interval, c.tuning.pressure_interval)

    @staticmethod
    def _probe(c: Check) -> int:
        """One probe per sampling period, sized from the PSI share since the previous one."""
        st, tn = c.st, c.tuning
        assert st.cg is not None
        prev = st.pressure_sample
        # a check due at the period's end counts even when it came up to a batch quantum
        # early (decisions.batched_due moves it by half of one)
        if prev is not None and c.now - prev[0] < tn.pressure_interval - tn.batch_quantum:
            return 0
        total = st.cg.read_pressure().some.total_us
        st.pressure_sample = (c.now, total)
        if st.pressure_since is None:
            st.pressure_since = c.now
        st.usage_window = d.settled_usage(st.usage_window, c.now, c.usage,
                                          tn.working_set_window)
        if c.now - st.pressure_since >= tn.working_set_window:
            st.stats.working_set_bytes = st.usage_window[0][1]
        if prev is None:
            return 0
        share = d.pressure_share(prev[1], total, c.now - prev[0])
        s = st.target.settings
        return d.pressure_step(c.usage, share, s.pressure_target_percent, s.step_bytes,
                               tn.pressure_probe_fraction)


PRESSURE = register(Pressure())
