"""Pure reclaim decisions."""

import itertools
from pathlib import Path

import pytest
from headroom.engine import decisions as d

MiB = 1 << 20
T = d.Tuning()


class TestWatermark:
    def test_levels(self):
        start, target = d.watermark_levels(1000 * MiB, 5, 10)
        assert start == 950 * MiB and target == 900 * MiB
        assert start % d.PAGE_SIZE == 0 and target % d.PAGE_SIZE == 0

    def test_below_start_does_nothing(self):
        assert d.watermark_step(949 * MiB, 950 * MiB, 900 * MiB, 16 * MiB, False) == (0, False)

    def test_at_start_reclaims_one_bounded_step(self):
        want, active = d.watermark_step(950 * MiB, 950 * MiB, 900 * MiB, 16 * MiB, False)
        assert (want, active) == (16 * MiB, True)

    def test_last_step_is_the_remainder_page_aligned(self):
        want, active = d.watermark_step(905 * MiB + 100, 950 * MiB, 900 * MiB, 16 * MiB, True)
        assert active and want == d.page_up(5 * MiB + 100)

    def test_episode_continues_below_start_until_target(self):
        assert d.watermark_step(930 * MiB, 950 * MiB, 900 * MiB, 16 * MiB, True)[0] == 16 * MiB
        assert d.watermark_step(900 * MiB, 950 * MiB, 900 * MiB, 16 * MiB, True) == (0, False)


class TestInterval:
    def test_at_or_above_watermark_is_min(self):
        assert d.next_check_interval(950 * MiB, 950 * MiB, 0, T) == T.min_interval

    def test_idle_and_far_is_max(self):
        assert d.next_check_interval(100 * MiB, 950 * MiB, 0, T) == T.max_interval

    def test_shrinks_as_growth_rises(self):
        slow = d.next_check_interval(800 * MiB, 950 * MiB, 100 * MiB, T)
        fast = d.next_check_interval(800 * MiB, 950 * MiB, 1000 * MiB, T)
        faster = d.next_check_interval(800 * MiB, 950 * MiB, 10000 * MiB, T)
        assert T.max_interval > slow > fast > faster >= T.min_interval

    def test_wakes_before_the_watermark_is_reached(self):
        rate = 300 * MiB
        interval = d.next_check_interval(800 * MiB, 950 * MiB, rate, T)
        assert 800 * MiB + rate * interval < 950 * MiB

    def test_shrinks_as_distance_shrinks(self):
        far = d.next_check_interval(700 * MiB, 950 * MiB, 500 * MiB, T)
        near = d.next_check_interval(940 * MiB, 950 * MiB, 500 * MiB, T)
        assert near < far

    def test_a_static_cgroup_is_looked_at_once_per_max_interval(self):
        # even just below its watermark: page cache sits there for good
        assert d.next_check_interval(949 * MiB, 950 * MiB, 0, T) == T.max_interval

    def test_growth_floor_bounds_sleep_near_watermark_when_idle(self):
        floored = d.Tuning(growth_floor=64 * MiB)
        near = d.next_check_interval(949 * MiB, 950 * MiB, 0, floored)
        assert near < floored.max_interval

    def test_growth_ewma_follows_and_decays(self):
        rate, inst = d.growth(0, 0, 100 * MiB, 1.0, halflife=1.0)
        assert inst == 100 * MiB and rate == pytest.approx(50 * MiB)
        rate2, _ = d.growth(rate, 100 * MiB, 100 * MiB, 1.0, halflife=1.0)
        assert rate2 == pytest.approx(25 * MiB)
        assert d.growth(rate, 0, 5, 0.0, 1.0) == (rate, rate)


class TestBackoff:
    def test_grows_exponentially_and_caps(self):
        waits = [d.eagain_backoff(n, T) for n in range(1, 12)]
        assert waits[0] == T.eagain_backoff_base
        assert all(b >= a for a, b in itertools.pairwise(waits))
        assert waits[1] == 2 * waits[0]
        assert waits[-1] == T.eagain_backoff_max

    def test_never_zero(self):
        assert d.eagain_backoff(0, T) > 0


class TestRateLimit:
    def test_grants_up_to_tokens_then_waits(self):
        rate = 100 * MiB
        b = d.Bucket(float(rate), 0.0)
        granted, b, wait = d.take_bytes(b, 64 * MiB, 0.0, rate)
        assert granted == 64 * MiB and wait == 0
        granted, b, wait = d.take_bytes(b, 64 * MiB, 0.0, rate)
        assert granted == 36 * MiB
        granted, b, wait = d.take_bytes(b, 64 * MiB, 0.0, rate)
        assert granted == 0 and wait == pytest.approx(0.64)

    def test_refills_over_time_up_to_one_second(self):
        rate = 10 * MiB
        b = d.Bucket(0.0, 0.0)
        granted, b, _ = d.take_bytes(b, 100 * MiB, 0.5, rate)
        assert granted == 5 * MiB
        granted, b, _ = d.take_bytes(b, 100 * MiB, 100.0, rate)
        assert granted == 10 * MiB

    def test_total_over_time_respects_rate(self):
        rate = 32 * MiB
        b, now, total = d.Bucket(0.0, 0.0), 0.0, 0
        while now < 10.0:
            granted, b, wait = d.take_bytes(b, 16 * MiB, now, rate)
            total += granted
            now += wait if granted == 0 else 0.001
        assert total <= rate * (10.0 + 1)


class TestCpuBudget:
    def test_unlimited(self):
        assert d.budget_wait(d.Bucket(-5.0, 0.0), 0.0, None, 1.0)[1] == 0

    def test_debt_must_be_repaid(self):
        b, wait = d.budget_wait(d.Bucket(0.5, 0.0), 0.0, 0.5, 1.0)
        assert wait == 0
        b = d.charge(b, 0.75)  # one write cost more than the bucket held
        b, wait = d.budget_wait(b, 0.0, 0.5, 1.0)
        assert wait == pytest.approx(0.5)  # 0.25 CPU-s of debt at 0.5 cores
        b, wait = d.budget_wait(b, 0.6, 0.5, 1.0)
        assert wait == 0

    def test_long_run_spend_is_bounded_by_budget(self):
        cores, b, now, spent = 0.25, d.Bucket(0.25, 0.0), 0.0, 0.0
        while now < 100:
            b, wait = d.budget_wait(b, now, cores, 1.0)
            if wait:
                now += wait
                continue
            b = d.charge(b, 0.01)
            spent += 0.01
            now += 0.001
        assert spent <= cores * 100 + 0.25 + 0.01


class TestPressure:
    def test_share(self):
        assert d.pressure_share(1_000_000, 1_500_000, 2.0) == pytest.approx(0.25)
        assert d.pressure_share(5, 3, 1.0) == 0

    def test_step_shrinks_as_pressure_nears_target(self):
        big = d.pressure_step(1000 * MiB, 0.0, 0.1, 64 * MiB, 0.01)
        small = d.pressure_step(1000 * MiB, 0.0009, 0.1, 64 * MiB, 0.01)
        assert big == d.page_down(10 * MiB) and 0 < small < big

    def test_backs_off_at_or_above_target(self):
        assert d.pressure_step(1000 * MiB, 0.001, 0.1, 64 * MiB, 0.01) == 0
        assert d.pressure_step(1000 * MiB, 0.5, 0.1, 64 * MiB, 0.01) == 0

    def test_bounded_by_step(self):
        assert d.pressure_step(100000 * MiB, 0.0, 0.1, 16 * MiB, 0.01) == 16 * MiB


class TestLowering:
    def test_raising_or_keeping_never_waits(self):
        assert not d.lowering_needed(900 * MiB, 800 * MiB, 800 * MiB, 5)
        assert not d.lowering_needed(900 * MiB, 800 * MiB, 1000 * MiB, 5)

    def test_lowering_below_usage_waits(self):
        assert d.lowering_needed(900 * MiB, None, 800 * MiB, 5)
        assert d.lowering_needed(900 * MiB, 1000 * MiB, 800 * MiB, 5)

    def test_close_to_usage_waits_until_below_the_watermark_start(self):
        assert d.lowering_needed(760 * MiB, None, 800 * MiB, 5)       # start is 760 MiB
        assert not d.lowering_needed(760 * MiB - d.PAGE_SIZE, None, 800 * MiB, 5)

    def test_zero_margin_waits_only_while_the_write_would_reclaim(self):
        assert d.lowering_needed(800 * MiB, None, 800 * MiB, 0)
        assert not d.lowering_needed(800 * MiB - d.PAGE_SIZE, None, 800 * MiB, 0)


class TestWorkingSetFloor:
    """Reclaim stops at the working set (issue 9)."""

    def test_reading_keeps_the_active_lists(self):
        ws = d.working_set_update(d.WorkingSet(), 1.0, 200 * MiB, 30 * MiB, 0, 0, T)
        assert ws.active == 170 * MiB and ws.floor == 0 and ws.refaults == 0

    def test_refaults_raise_the_floor_to_usage_and_it_decays_to_the_active_lists(self):
        ws = d.working_set_update(d.WorkingSet(), 0.0, 150 * MiB, 100 * MiB, 0, 1000, T)
        few = d.working_set_update(ws, 0.2, 150 * MiB, 100 * MiB, 0,
                                   1000 + T.ws_refault_pages, T)
        assert few.floor == 0
        many = d.working_set_update(few, 0.4, 150 * MiB, 100 * MiB, 0,
                                    1001 + 2 * T.ws_refault_pages, T)
        assert many.floor == 150 * MiB
        later = d.working_set_update(many, 0.4 + T.ws_halflife, 150 * MiB, 100 * MiB, 0,
                                     1001 + 2 * T.ws_refault_pages, T)
        assert later.floor == pytest.approx(100 * MiB)     # 50 active + half of the 100 over

    def test_first_reading_is_only_a_baseline_for_refaults(self):
        ws = d.working_set_update(d.WorkingSet(), 0.0, 150 * MiB, 100 * MiB, 0, 10**6, T)
        assert ws.floor == 0

    def test_the_floor_is_at_least_what_the_lru_keeps(self):
        ws = d.working_set_update(d.WorkingSet(), 0.0, 150 * MiB, 100 * MiB, 120 * MiB, 10**6, T)
        assert ws.floor == 120 * MiB           # before any refault
        later = d.working_set_update(ws, 1000.0, 150 * MiB, 100 * MiB, 0, 10**6, T)
        assert later.floor < 50 * MiB + d.PAGE_SIZE   # keep gone: decays to the active lists

    def test_memory_stat_is_read_often_while_usage_moves_and_seldom_while_it_rests(self):
        ws = d.working_set_update(d.WorkingSet(), 0.0, 150 * MiB, 100 * MiB, 0, 0, T)
        assert ws.usage == 150 * MiB
        assert not d.ws_read_due(ws, T.ws_interval / 2, 170 * MiB, T)       # too soon
        assert d.ws_read_due(ws, T.ws_interval, 150 * MiB + T.ws_still_bytes, T)
        assert d.ws_read_due(ws, T.ws_interval, 150 * MiB - T.ws_still_bytes, T)
        still = 150 * MiB + T.ws_still_bytes - d.PAGE_SIZE
        assert not d.ws_read_due(ws, T.ws_rest_interval - 0.01, still, T)
        assert d.ws_read_due(ws, T.ws_rest_interval, still, T)
        assert d.ws_read_due(d.WorkingSet(), T.ws_interval, 0, T)   # never read: due

    @pytest.mark.parametrize("active,active_file,lru_file,keep", [
        (80 * MiB, 80 * MiB, 120 * MiB, 160 * MiB),      # < 1 GiB of file LRU: ratio 1
        (30 * MiB, 10 * MiB, 100 * MiB, 40 * MiB),
        (0, 0, 0, 0),
        (4 << 30, 4 << 30, 5 << 30, (4 << 30) + (4 << 30) // 7),   # isqrt(50) = 7
    ])
    def test_lru_keep_is_the_active_lists_and_the_inactive_share_the_kernel_keeps(
            self, active, active_file, lru_file, keep):
        assert d.lru_keep(active, active_file, lru_file) == keep

    @pytest.mark.parametrize("floor", [0, 100 * MiB, 230 * MiB])
    def test_a_floor_up_to_the_static_target_keeps_the_static_levels(self, floor):
        assert d.floor_levels(256 * MiB, 5, 10, floor) == d.watermark_levels(256 * MiB, 5, 10)

    def test_floor_above_the_static_target_keeps_usage_near_the_top(self):
        upper = d.watermark_start(256 * MiB, 2.5)
        start, target = d.floor_levels(256 * MiB, 5, 10, 240 * MiB)
        assert (start, target) == (upper, 240 * MiB)
        start, target = d.floor_levels(256 * MiB, 5, 10, 255 * MiB)
        assert (start, target) == (upper, upper - d.PAGE_SIZE)   # never a band at high

    @pytest.mark.parametrize("high,floor", list(itertools.product(
        [64 * MiB, 256 * MiB, 4096 * MiB], [0, 10 * MiB, 100 * MiB, 200 * MiB, 1e10])))
    def test_levels_ordered_and_never_below_the_static_ones(self, high, floor):
        start, target = d.floor_levels(high, 5, 10, floor)
        s0, t0 = d.watermark_levels(high, 5, 10)
        upper = max(d.watermark_start(high, 2.5), s0)
        assert 0 <= target < start <= upper
        assert t0 <= target and s0 <= start
        assert target >= min(d.page_up(floor), upper - d.PAGE_SIZE)


# --- replay of usage traces recorded in the QEMU guest (tests/unit/traces/) ---------------

TRACES = Path(__file__).parent / "traces"


def _trace(name: str) -> list[dict[str, float]]:
    lines = [x for x in (TRACES / name).read_text().splitlines() if not x.startswith("#")]
    keys = lines[0].split(",")
    return [dict(zip(keys, map(float, x.split(",")), strict=True)) for x in lines[1:]]


Levels = tuple[int, int]


def _replay(rows: list[dict[str, float]], high: int, classic_lru: bool
            ) -> list[tuple[dict[str, float], Levels, Levels]]:
    """Per sample: (row, the static levels, the working-set law's levels), with the
    floor updated from the trace as the engine would."""
    ws, out = d.WorkingSet(), []
    static = d.watermark_levels(high, 5, 10)
    for r in rows:
        usage = int(r["usage"])
        if usage >= static[1]:
            stat = {k: int(r[k]) for k in ("inactive_file", "active_file")}
            stat["workingset_refault_file"] = int(r["refault_file"])
            ws = d.working_set_read(ws, r["t_s"], usage, stat, classic_lru, T)
        out.append((r, static, d.floor_levels(high, 5, 10, ws.floor)))
    return out


@pytest.mark.parametrize("trace", ["hotset160-6.12-kernel-alone.csv"])
def test_replay_without_refaults_is_todays_law(trace):
    """6.12 (multi-gen LRU) alone kept its 160 MiB hot set (no refaults), active below the
    static target: the law is unchanged."""
    rows = _replay(_trace(trace), 256 * MiB, classic_lru=False)
    assert all(old == new for _, old, new in rows)


@pytest.mark.parametrize("trace", ["hotset160-6.1-oldlaw-engine.csv",
                                   "hotset160-6.1-kernel-alone.csv"])
def test_replay_refaults_lift_the_target_and_never_lower_it(trace):
    """The engine before this law (and 6.1's own reclaim) let the hot file be refaulted:
    from the first reading that shows refaults, the target rises to the usage then
    (at most half the headroom below high), and no level is ever below today's."""
    high = 256 * MiB
    upper = d.watermark_start(high, 2.5)
    rows = _replay(_trace(trace), high, classic_lru=True)
    assert all(new[0] >= old[0] and new[1] >= old[1] for _, old, new in rows)
    prev = None
    lifted = 0
    for r, old, new in rows:
        if prev is not None and r["refault_file"] - prev["refault_file"] > T.ws_refault_pages \
                and r["usage"] >= old[1]:
            assert new[1] >= min(d.page_up(r["usage"]), upper - d.PAGE_SIZE)
            lifted += 1
        prev = r
    assert lifted >= 2


@pytest.mark.parametrize("trace", ["hotset160-6.1-oldlaw-engine.csv",
                                   "hotset160-6.1-kernel-alone.csv"])
def test_replay_classic_lru_lifts_the_target_before_the_first_refault(trace):
    """6.1's classic LRU with a 160 MiB hot set on its active list: keeping the inactive
    file list as long as the active one needs more than memory.high, so the target is at
    the top from the first reading in the band, before any refault shows up."""
    high = 256 * MiB
    upper = d.watermark_start(high, 2.5)
    rows = _replay(_trace(trace), high, classic_lru=True)
    first = next((r, new) for r, old, new in rows
                 if r["usage"] >= old[1] and r["active_file"] >= 150 * MiB)
    assert first[1] == (upper, upper - d.PAGE_SIZE), first


class TestBatchedDue:
    """Long intervals end on a shared grid: fewer scheduler wake-ups; a check moves by at
    most half a quantum, so periods neither grow nor shrink on average."""

    @pytest.mark.parametrize("now,interval", [(100.03, 1.0), (7.0, 0.5), (3.99, 0.77),
                                              (0.0, 5.0), (0.3, 2.0), (2.0049, 2.0)])
    def test_long_intervals_land_on_the_nearest_grid_point(self, now, interval):
        due = d.batched_due(now, interval, T)
        assert abs(due - (now + interval)) <= T.batch_quantum / 2 + 1e-9
        grid = due / T.batch_quantum
        assert abs(grid - round(grid)) < 1e-6

    def test_short_intervals_are_exact(self):
        assert d.batched_due(10.013, 0.02, T) == pytest.approx(10.033)
        assert d.batched_due(10.013, T.batch_min_interval - 0.01, T) == pytest.approx(
            10.013 + T.batch_min_interval - 0.01)

    def test_cgroups_at_rest_share_wake_ups(self):
        dues = {d.batched_due(10.0 + i / 100, 1.0, T) for i in range(100)}
        assert len(dues) <= 11

    def test_late_checks_do_not_stretch_the_period(self):
        now, dues = 0.0, []
        for _ in range(50):        # each check runs 4 ms after it was due
            now = d.batched_due(now, 1.0, T) + 0.004
            dues.append(now)
        assert dues[-1] < 50 * 1.0 + 0.1
