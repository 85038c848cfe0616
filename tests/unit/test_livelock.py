"""Livelock guard (issue 9 item 2): memory.high raised in bounded steps toward memory.max
when reclaim cannot defend it, and back to the plan's value once usage fell."""

from __future__ import annotations

import itertools

import pytest
from headroom.engine import ReclaimEngine, ReclaimSettings, Target
from headroom.engine import decisions as d

MiB = 1 << 20
PLAN = 128 * MiB
MAX = 320 * MiB


class Sim:
    def __init__(self, kernel):
        self.kernel, self.now = kernel, 0.0
        self.engine = ReclaimEngine(kernel, cpu_budget_cores=None, workers=0,
                                    clock=lambda: self.now)

    def target(self, guard=True):
        return Target("anon", self.kernel.tree.path("anon"), PLAN,
                      ReclaimSettings(livelock_guard=guard))

    def run(self, seconds, grow=0, until=None, dt=0.01):
        """Grow by `grow` bytes/s up to `until` (anon: nothing reclaimable)."""
        highs = []
        end = self.now + seconds
        while self.now < end:
            if grow and (until is None or self.kernel.tree.current("anon") < until):
                self.kernel.grow("anon", int(grow * dt))
                self.kernel.floor["anon"] = self.kernel.tree.current("anon")
            self.now += dt
            self.engine.poll_wakeups(0)
            self.engine.tick(self.now)
            highs.append(self.kernel.tree.high("anon"))
        return highs


@pytest.fixture
def sim(fake_kernel):
    s = Sim(fake_kernel)
    yield s
    s.engine.stop(restore=False)


def _stuck_allocation(sim, fake_kernel, guard, memory_max=MAX):
    fake_kernel.tree.add("anon", current=16 * MiB, max=memory_max)
    fake_kernel.floor["anon"] = 16 * MiB
    sim.engine.set_targets([sim.target(guard)])
    return sim.run(6.0, grow=64 * MiB, until=224 * MiB)


def test_without_the_guard_the_allocation_stays_throttled(sim, fake_kernel):
    _stuck_allocation(sim, fake_kernel, guard=False)
    assert fake_kernel.tree.current("anon") <= PLAN
    assert fake_kernel.tree.events("anon")["high"] > 100
    assert fake_kernel.tree.high("anon") == str(PLAN)


def test_guard_raises_in_steps_to_kernel_speed_and_comes_back(sim, fake_kernel):
    highs = _stuck_allocation(sim, fake_kernel, guard=True)
    assert fake_kernel.tree.current("anon") >= 224 * MiB       # the allocation completed
    values = sorted({int(h) for h in highs})
    assert values[0] == PLAN and max(values) <= MAX             # never above memory.max
    assert all(b - a <= (MAX - PLAN) // 4 + 4096 for a, b in itertools.pairwise(values))
    st = sim.engine.snapshot()["anon"]
    assert (st.applied, st.reason, st.memory_high) == (False, "Unreclaimable", PLAN)
    assert st.relieved_high == int(fake_kernel.tree.high("anon")) > PLAN
    assert 1 <= st.relief_raises <= 4
    # the workload frees its memory: the plan's value is back, written once usage is
    # well below it (never below usage), not before the hold time
    fake_kernel.floor["anon"] = 0
    fake_kernel.tree.write("anon", "memory.current", f"{200 * MiB}\n")
    sim.run(1.0)
    assert fake_kernel.tree.high("anon") != str(PLAN)          # still above the plan's value
    fake_kernel.tree.write("anon", "memory.current", f"{20 * MiB}\n")
    sim.run(d.Tuning().relief_hold + 1.0)
    assert fake_kernel.tree.high("anon") == str(PLAN)
    st = sim.engine.snapshot()["anon"]
    assert (st.applied, st.reason, st.relieved_high) == (True, "Applied", None)


def test_memory_max_unset_bounds_the_guard_at_twice_the_plan(sim, fake_kernel):
    fake_kernel.tree.add("anon", current=16 * MiB)     # memory.max "max"
    sim.engine.set_targets([sim.target()])
    sim.run(10.0, grow=64 * MiB, until=400 * MiB)
    assert int(fake_kernel.tree.high("anon")) == 2 * PLAN
    assert fake_kernel.tree.current("anon") == 2 * PLAN       # throttled there, as the doc says


def test_relieved_value_is_restored_to_the_original_on_release(sim, fake_kernel):
    _stuck_allocation(sim, fake_kernel, guard=True)
    assert fake_kernel.tree.high("anon") != str(PLAN)
    sim.engine.set_targets([])
    assert fake_kernel.tree.high("anon") == "max"


def test_settings_update_keeps_the_relief(sim, fake_kernel):
    _stuck_allocation(sim, fake_kernel, guard=True)
    relieved = fake_kernel.tree.high("anon")
    sim.engine.set_targets([Target("anon", fake_kernel.tree.path("anon"), PLAN,
                                   ReclaimSettings(step_bytes=8 * MiB))])
    assert fake_kernel.tree.high("anon") == relieved
    assert sim.engine.snapshot()["anon"].reason == "Unreclaimable"


# --- the pure rules ------------------------------------------------------------------


def test_ceiling_is_memory_max_or_a_multiple_of_the_plan():
    assert d.relief_ceiling(PLAN, MAX, 2.0) == MAX
    assert d.relief_ceiling(PLAN, None, 2.0) == 2 * PLAN
    assert d.relief_ceiling(PLAN, 64 * MiB, 2.0) == PLAN      # never below the plan's value


@pytest.mark.parametrize(("usage", "failed", "events", "full", "stuck"), [
    (PLAN, True, 3, 0, True),
    (PLAN, True, 0, 5000, True),          # PSI full alone is throttling too
    (PLAN, True, 0, 0, False),            # not throttled: nothing to relieve
    (PLAN, False, 9, 0, False),           # reclaim worked
    (PLAN // 2, True, 9, 0, False),       # far below memory.high
])
def test_stuck_needs_failed_reclaim_at_high_and_throttling(usage, failed, events, full, stuck):
    assert d.relief_stuck(usage, PLAN, failed, events, full, 5.0) is stuck


def test_raise_is_bounded_steps_to_the_ceiling():
    steps = [PLAN]
    while (nxt := d.relief_raise(steps[-1], PLAN, MAX, 4)) is not None:
        steps.append(nxt)
    assert steps == [PLAN, 176 * MiB, 224 * MiB, 272 * MiB, MAX]


def test_over_needs_usage_well_below_and_the_hold_time():
    target = d.watermark_levels(PLAN, 5, 10)[1]
    assert d.relief_over(target, PLAN, 5, 10, 6.0, 5.0)
    assert not d.relief_over(target + 4096, PLAN, 5, 10, 6.0, 5.0)
    assert not d.relief_over(0, PLAN, 5, 10, 4.0, 5.0)
