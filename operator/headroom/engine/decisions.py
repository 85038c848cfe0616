"""Pure reclaim decisions: no I/O and no clock. The engine passes readings and `now` in.

Units: bytes, seconds, and PSI totals in microseconds. Every byte amount handed
to memory.reclaim is a whole number of pages and at least one page.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MiB = 1 << 20


@dataclass(frozen=True)
class Tuning:
    """Engine constants (not part of the policy API); see docs/engine.md for the why."""

    min_interval: float = 0.01      # fastest re-check of a cgroup at or above its watermark
    max_interval: float = 1.0       # an idle cgroup is still checked this often
    wake_fraction: float = 0.5      # re-check after this share of the predicted time to it
    batch_min_interval: float = 0.5  # checks this far apart or more ...
    batch_quantum: float = 0.1       # ... fall on a grid this fine (batched_due)
    growth_floor: float = 0.0       # bytes/s assumed even for a cgroup that looks idle. 0: a
                                    # static cgroup is looked at once per max_interval, even
                                    # just below its watermark (where page cache sits for good);
                                    # a burst is caught by the next look (its rate then moves
                                    # the watermark down) or, faster than that, by the
                                    # memory.events wake-up at memory.high (was 64 MiB/s:
                                    # 100 checks/s per such cgroup, docs/benchmarks.md)
    growth_halflife: float = 2.0    # seconds; EWMA of the usage growth rate
    eagain_backoff_base: float = 0.1
    eagain_backoff_max: float = 5.0
    pressure_interval: float = 2.0  # Pressure mode: PSI sampling period
    pressure_probe_fraction: float = 0.01  # Pressure mode: reclaim at most 1% of usage per sample
    working_set_window: float = 60.0  # Pressure mode: the working-set estimate is the lowest
                                      # usage over this many seconds of probing
    stats_interval: float = 5.0     # how often memory.events / memory.pressure are re-read
    psi_stall_us: int = 20_000      # PSI trigger: 20 ms of "some" stall ...
    psi_window_us: int = 1_000_000  # ... within 1 s wakes the cgroup at once
    budget_burst_seconds: float = 1.0  # CPU budget bucket depth, in seconds of budget
    lowering_deadline: float = 10.0    # a memory.high lowered below usage is written after
                                       # at most this long of background reclaim, reclaimed or not
    relief_steps: int = 4           # livelock guard: memory.high reaches its ceiling in this
                                    # many raises (a few seconds of throttling at most)
    relief_unbounded_factor: float = 2.0  # ceiling when memory.max is "max": this × the plan's
    relief_hold: float = 5.0        # the plan's value comes back no sooner after the last raise
    ws_interval: float = 0.5        # memory.stat (LRU sizes, refaults) re-read this often
                                    # while usage is in the reclaim band and moving ...
    ws_rest_interval: float = 10.0  # ... and this often while it stands still (ws_read_due)
    ws_still_bytes: int = 1 * MiB   # usage within this of the last reading stands still
    ws_halflife: float = 60.0       # seconds; the working-set floor forgets this slowly
    ws_refault_pages: int = 16      # refaults per memory.stat reading that show reclaim took
                                    # pages the workload reads back


def page_down(n: float) -> int:
    n = int(n)
    return n - n % PAGE_SIZE


def page_up(n: float) -> int:
    return math.ceil(n / PAGE_SIZE) * PAGE_SIZE


# --- Watermark mode ----------------------------------------------------------------


def watermark_start(high: int, headroom_percent: float) -> int:
    """Usage at which reclaim starts below `high`."""
    return page_down(high * (1 - headroom_percent / 100))


def watermark_levels(high: int, headroom_percent: float, target_percent: float) -> tuple[int, int]:
    """(start, target): reclaim starts when usage reaches `start` and goes down to `target`."""
    start = watermark_start(high, headroom_percent)
    target = page_down(high * (1 - target_percent / 100))
    return start, min(target, start)


@dataclass(frozen=True)
class WorkingSet:
    """What the engine knows of a cgroup's working set (from memory.stat)."""

    floor: float = 0.0    # bytes: reclaim does not go below this (refaults seen)
    active: int = 0       # the active LRU lists at the last reading
    stamp: float = 0.0    # when it was last updated
    refaults: int = -1    # workingset_refault_file + _anon then (-1: not read yet)
    usage: int = -1       # memory.current then


def lru_keep(active: int, active_file: int, lru_file: int) -> int:
    """Usage below which reclaim takes from the working set before any refault shows it:
    the active lists plus the inactive file pages the kernel keeps beside them. Its
    classic LRU deactivates active file pages (the hot set) as soon as inactive_file ×
    ratio < active_file, ratio = isqrt(10 × GiB of file LRU), 1 under 1 GiB (mm/vmscan.c
    inactive_is_low), so a target below this makes memory.reclaim evict the hot set
    (measured on 6.1: thousands of refaults in the ~2 s before refaults lift the floor)."""
    ratio = max(1, math.isqrt(10 * (lru_file >> 30)))
    return active + active_file // ratio


def working_set_update(ws: WorkingSet, now: float, usage: int, inactive: int, keep: int,
                       refaults: int, tuning: Tuning) -> WorkingSet:
    """After one memory.stat reading: the active LRU lists (usage less the inactive
    ones: what the workload touched more than once), and a floor, at least `keep`
    (lru_keep on the classic LRU, 0 on the multi-gen one). When pages came back from
    eviction (refaults) since the previous reading, the floor is the whole usage then
    (reclaim went deeper than the workload's re-use allows); above the active lists it
    decays with `ws_halflife`, so a working set that shrank is reclaimed again later."""
    active = max(0, usage - inactive)
    excess = max(0.0, ws.floor - active)
    floor = min(ws.floor, active + excess * 0.5 ** (max(0.0, now - ws.stamp)
                                                    / tuning.ws_halflife))
    if ws.refaults >= 0 and refaults - ws.refaults > tuning.ws_refault_pages:
        floor = max(floor, float(usage))
    return WorkingSet(max(floor, float(keep)), active, now, refaults, usage)


def ws_read_due(ws: WorkingSet, now: float, usage: int, tuning: Tuning) -> bool:
    """Whether memory.stat is worth reading again (in the reclaim band): every
    ws_interval while usage moves, every ws_rest_interval while it stands still. Page
    cache at rest between target and watermark (where a pod that once read more than
    its memory.high stays for good) is not reclaimed, so its LRU split and refaults
    hardly move, and the floor only matters once reclaim starts, which moves usage;
    each reading is a third of such a check's CPU (docs/benchmarks.md)."""
    age = now - ws.stamp
    if age < tuning.ws_interval:
        return False
    return (ws.usage < 0 or abs(usage - ws.usage) >= tuning.ws_still_bytes
            or age >= tuning.ws_rest_interval)


def working_set_read(ws: WorkingSet, now: float, usage: int, stat: Mapping[str, int],
                     classic_lru: bool, tuning: Tuning) -> WorkingSet:
    """working_set_update from one memory.stat reading (which has `inactive_file`)."""
    inactive_file, active_file = stat["inactive_file"], stat.get("active_file", 0)
    inactive = inactive_file + stat.get("inactive_anon", 0)
    keep = (lru_keep(max(0, usage - inactive), active_file, inactive_file + active_file)
            if classic_lru else 0)
    refaults = stat.get("workingset_refault_file", 0) + stat.get("workingset_refault_anon", 0)
    return working_set_update(ws, now, usage, inactive, keep, refaults, tuning)


def floor_levels(high: int, headroom_percent: float, target_percent: float,
                 floor: float) -> tuple[int, int]:
    """The Watermark levels (start, target): watermark_levels, lifted by the refault
    `floor`. Reclaim never goes below the working set: a floor above the static target
    raises the target up to just below half the headroom (97.5% of high at 5%) and start
    with it, so usage stays near the top, where the kernel alone would hold it, and only
    what comes in above the floor (the stream) is reclaimed.

    The levels never move down, not even for fast growth: usage held low, whatever the
    reason, is what makes the kernel reclaim the working set (measured, docs/engine.md)."""
    start, target = watermark_levels(high, headroom_percent, target_percent)
    floor_t = page_up(floor)
    if floor_t <= target:
        return start, target
    upper = max(watermark_start(high, headroom_percent / 2), start)
    new_target = min(floor_t, upper - PAGE_SIZE)
    return min(upper, new_target + (start - target)), new_target


def lowering_needed(usage: int, current_high: int | None, new_high: int,
                    headroom_percent: float) -> bool:
    """Whether memory.high must not be written as `new_high` yet: writing a memory.high
    below usage makes the *writer* reclaim synchronously (and the workload throttle), so
    a value lower than the one in effect (`current_high`, None = max) waits until usage
    is below its watermark start; raising or keeping it never waits."""
    if current_high is not None and new_high >= current_high:
        return False
    return usage >= watermark_start(new_high, headroom_percent)


def watermark_step(usage: int, start: int, target: int, step_bytes: int,
                   active: bool) -> tuple[int, bool]:
    """Bytes to reclaim now, and whether a reclaim episode is running.

    An episode begins when usage reaches `start` and continues, one bounded step
    at a time, until usage is at or below `target` (hysteresis: no flapping
    around a single threshold)."""
    active = active or usage >= start
    if not active or usage <= target:
        return 0, False
    return max(PAGE_SIZE, page_up(min(step_bytes, usage - target))), True


def episode_continues(usage_after: int, start: int, target: int) -> bool:
    """After a successful write: whether the episode goes on. It ends once usage is in
    the lower half of the band: what came in while the write ran (a fast stream refills
    it at once) must not keep the episode going in writes of that size (measured in the
    guest: 1,088 writes of 0.7 MiB for a 1 GiB stream, most of the engine's CPU)."""
    return usage_after > target + (start - target) // 2


def growth(prev_rate: float, prev_usage: int, usage: int, dt: float,
           halflife: float) -> tuple[float, float]:
    """(EWMA, instantaneous) usage growth in bytes/s over the last `dt` seconds."""
    if dt <= 0:
        return prev_rate, prev_rate
    inst = (usage - prev_usage) / dt
    alpha = 1 - 0.5 ** (dt / halflife)
    return prev_rate + alpha * (inst - prev_rate), inst


def next_check_interval(usage: int, start: int, rate: float, tuning: Tuning) -> float:
    """Seconds until the next check: a share of the time usage needs to reach the
    watermark at the larger of its growth rate and a floor rate, within
    [min_interval, max_interval]."""
    if usage >= start:
        return tuning.min_interval
    bound = max(rate, tuning.growth_floor)
    if bound <= 0:
        return tuning.max_interval
    eta = (start - usage) / bound
    return min(tuning.max_interval, max(tuning.min_interval, tuning.wake_fraction * eta))


def batched_due(now: float, interval: float, tuning: Tuning) -> float:
    """When to check next, `interval` from now: a long interval (batch_min_interval or
    more) ends on the nearest point of the batch grid, so cgroups at rest share the
    scheduler's wake-ups instead of waking it once each (natively a wake-up costs more
    than the check it runs). Nearest, not up or down: a check always runs a little late,
    so rounding up would add a quantum to every period and rounding down cut it short;
    a check moves by at most half a quantum, and a mode's period (Pressure's sample)
    allows for that (modes/pressure.py)."""
    due = now + interval
    if interval < tuning.batch_min_interval:
        return due
    return max(now + tuning.min_interval,
               round(due / tuning.batch_quantum) * tuning.batch_quantum)


def eagain_backoff(consecutive: int, tuning: Tuning) -> float:
    """Wait after the n-th EAGAIN in a row: exponential, capped; never zero (never spin)."""
    exp = min(max(consecutive, 1) - 1, 30)
    return min(tuning.eagain_backoff_max, tuning.eagain_backoff_base * (2 ** exp))


# --- Token buckets: bytes/s per cgroup, CPU seconds/s per node --------------------------


@dataclass(frozen=True)
class Bucket:
    tokens: float
    stamp: float


def refill(b: Bucket, now: float, rate: float, capacity: float) -> Bucket:
    return Bucket(min(capacity, b.tokens + max(0.0, now - b.stamp) * rate), max(now, b.stamp))


def take_bytes(b: Bucket, want: int, now: float, rate: float) -> tuple[int, Bucket, float]:
    """(granted bytes, bucket after, seconds to wait if nothing was granted).

    The bucket holds at most one second of `rate` (and at least one page). Less
    than asked may be granted; nothing below one page."""
    capacity = max(float(rate), float(PAGE_SIZE))
    b = refill(b, now, rate, capacity)
    granted = page_down(min(want, b.tokens))
    if granted >= PAGE_SIZE:
        return granted, Bucket(b.tokens - granted, b.stamp), 0.0
    need = min(float(want), capacity) - b.tokens
    return 0, b, max(need / rate, 0.001)


def budget_wait(b: Bucket, now: float, cores: float | None,
                burst_seconds: float) -> tuple[Bucket, float]:
    """Node CPU budget: (bucket after refill, seconds to wait before reclaiming again).

    Reclaim CPU is charged after each write (it is measured, not predicted), so
    the bucket may go into debt; nobody reclaims until the debt is repaid."""
    if cores is None:
        return b, 0.0
    b = refill(b, now, cores, cores * burst_seconds)
    return b, (0.0 if b.tokens > 0 else max(-b.tokens / cores, 0.001))


def charge(b: Bucket, cpu_seconds: float) -> Bucket:
    return Bucket(b.tokens - cpu_seconds, b.stamp)


# --- Pressure mode (Senpai / TMO style) ---------------------------------------------


def pressure_share(prev_total_us: int, total_us: int, dt: float) -> float:
    """Share of wall time (0..1) some task of the cgroup was stalled on memory."""
    if dt <= 0:
        return 0.0
    return max(0, total_us - prev_total_us) / 1e6 / dt


def pressure_step(usage: int, share: float, target_percent: float, step_bytes: int,
                  probe_fraction: float) -> int:
    """Probe reclaim, sized by how far the stall share is below its target; none at or
    above the target (the cgroup is at its working set: back off)."""
    target = target_percent / 100
    if target <= 0 or share >= target:
        return 0
    want = usage * probe_fraction * (1 - share / target)
    if want < PAGE_SIZE:
        return 0
    return page_down(min(step_bytes, want))


# --- Livelock guard: relieve memory.high that reclaim cannot defend ---------------------


def relief_ceiling(plan_high: int, memory_max: int | None, unbounded_factor: float) -> int:
    """Highest memory.high the guard may write: memory.max (the kernel's own limit: the
    pod then runs as it would without memory.high), or, when memory.max is "max",
    `unbounded_factor` × the plan's value."""
    if memory_max is not None:
        return max(plan_high, page_down(memory_max))
    return max(plan_high, page_down(plan_high * unbounded_factor))


def relief_stuck(usage: int, high: int, reclaim_failed: bool, high_events_rise: int,
                 full_stall_rise_us: int, headroom_percent: float) -> bool:
    """No progress at memory.high: reclaim freed less than asked (EAGAIN) while usage is
    at the watermark start of the memory.high in effect, and the kernel is throttling
    the cgroup (memory.events `high` or PSI `full` rose since the last look)."""
    return (reclaim_failed and usage >= watermark_start(high, headroom_percent)
            and (high_events_rise > 0 or full_stall_rise_us > 0))


def relief_raise(current_high: int, plan_high: int, ceiling: int, steps: int) -> int | None:
    """The next memory.high: one step of (ceiling - plan) / steps above the current one,
    at most the ceiling; None when already there."""
    if current_high >= ceiling:
        return None
    step = max(PAGE_SIZE, page_up((ceiling - plan_high) / max(steps, 1)))
    return min(ceiling, current_high + step)


def relief_over(usage: int, plan_high: int, headroom_percent: float, target_percent: float,
                since_raise: float, hold: float) -> bool:
    """The plan's memory.high can come back: usage is well below it (at or under its
    watermark target, so writing it reclaims nothing) and the last raise was at least
    `hold` seconds ago."""
    return since_raise >= hold and usage <= watermark_levels(plan_high, headroom_percent,
                                                             target_percent)[1]


def settled_usage(window: tuple[tuple[float, int], ...], now: float, usage: int,
                  seconds: float) -> tuple[tuple[float, int], ...]:
    """Pressure mode's working-set estimate: the lowest usage of the last `seconds`.

    The probes keep taking memory until the stall share reaches its target or nothing
    more is reclaimable, so the troughs of usage are what the pod needs at that
    pressure; older troughs age out, so the estimate rises when the working set grows.
    `window` holds (time, usage) with usage strictly increasing (a sliding-window
    minimum): the estimate is window[0][1] after the call."""
    kept = [(t, u) for t, u in window if t > now - seconds and u < usage]
    return (*kept, (now, usage))
