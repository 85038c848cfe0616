"""The reclaim engine: one scheduler for many cgroups (contract in docs/architecture.md).

Threads: one scheduler thread waits in epoll on every PSI trigger and
memory.events fd plus a self-pipe, with a timeout to the earliest due check.
A check (read memory.current, decide) is cheap and runs on the scheduler
thread. A memory.reclaim write runs reclaim in the writer's context and can
block, so writes go to a small worker pool: a slow cgroup occupies one worker
while the scheduler keeps checking the others. A cgroup never has two writes
in flight. `workers=0` runs writes inline, which with `tick(now)` makes the
engine fully deterministic for tests.

memory.high is never lowered below usage by a write: that would make the
writer reclaim synchronously (and the workload throttle). A lower value waits
("Lowering") while the ordinary watermark reclaim, on the workers and within
the budgets, brings usage under the new value's watermark; then it is written,
or after `Tuning.lowering_deadline` anyway, on a worker.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import pathlib
import resource
import select
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from headroom.cgroup import (
    Capabilities,
    Cgroup,
    CgroupError,
    CgroupGone,
    CgroupRoot,
    PartialReclaim,
    UnsupportedKey,
    Watch,
)
from headroom.cgroup import capabilities as caps_probe
from headroom.engine import decisions as d
from headroom.engine.scheduler import DueQueue
from headroom.engine.state import (
    APPLIED,
    DRY_RUN,
    ERROR,
    LOWERING,
    NOT_FOUND,
    CgroupState,
    TargetStats,
)
from headroom.logs import event

__all__ = ["MODES", "ReclaimEngine", "ReclaimSettings", "Target", "TargetStats", "Tuning"]

Tuning = d.Tuning
MODES = ("Watermark", "Pressure", "Off")
log = logging.getLogger("headroom.engine")


@dataclass(frozen=True)
class ReclaimSettings:
    mode: str = "Watermark"
    headroom_percent: float = 5.0
    target_percent: float = 10.0
    step_bytes: int = 16 << 20
    max_bytes_per_second: int = 512 << 20
    swappiness: int | None = None
    pressure_target_percent: float = 0.1

    def problems(self) -> list[tuple[str, str]]:
        """(field, message) for every invalid value; empty when valid."""
        out = []
        if self.mode not in MODES:
            out.append(("mode", f"must be one of {', '.join(MODES)}, not {self.mode!r}"))
        if not 0 < self.headroom_percent < 100:
            out.append(("headroom_percent", "must be > 0 and < 100"))
        if not 0 < self.target_percent < 100:
            out.append(("target_percent", "must be > 0 and < 100"))
        elif self.target_percent <= self.headroom_percent:
            out.append(("target_percent", "must be greater than headroom_percent"))
        if self.step_bytes < d.PAGE_SIZE:
            out.append(("step_bytes", f"must be at least one page ({d.PAGE_SIZE})"))
        if self.max_bytes_per_second < d.PAGE_SIZE:
            out.append(("max_bytes_per_second", f"must be at least {d.PAGE_SIZE}"))
        if self.swappiness is not None and not 0 <= self.swappiness <= 200:
            out.append(("swappiness", "must be 0..200"))
        if not self.pressure_target_percent > 0:
            out.append(("pressure_target_percent", "must be > 0"))
        return out


@dataclass(frozen=True)
class Target:
    key: str
    path: pathlib.Path
    memory_high: int | None
    settings: ReclaimSettings = field(default_factory=ReclaimSettings)
    labels: Mapping[str, str] = field(default_factory=dict)
    dry_run: bool = False


@dataclass(frozen=True)
class _Job:
    key: str
    generation: int
    cg: Cgroup
    nbytes: int
    swappiness: int | None
    usage_before: int
    high: int | None = None   # set: write this memory.high (a lowering past its deadline)


@dataclass(frozen=True)
class _Result:
    job: _Job
    outcome: str          # "ok" | "eagain" | "gone" | "error"
    cpu_seconds: float
    usage_after: int | None
    error: str | None = None
    swappiness_rejected: bool = False


def _run_job(job: _Job) -> _Result:
    """One memory.reclaim (or memory.high) write, timed with the writing thread's CPU
    clock: the kernel reclaims in the writer's context, so this is the reclaim's CPU cost."""
    t0 = time.thread_time()
    outcome, error, rejected = "ok", None, False
    try:
        if job.high is not None:
            job.cg.write_high(job.high)
        else:
            try:
                job.cg.reclaim(job.nbytes, job.swappiness)
            except UnsupportedKey:
                if job.swappiness is None:
                    raise
                rejected = True
                job.cg.reclaim(job.nbytes, None)
    except PartialReclaim as e:
        outcome, error = "eagain", str(e)
    except CgroupGone as e:
        outcome, error = "gone", str(e)
    except CgroupError as e:
        outcome, error = "error", str(e)
    cpu = time.thread_time() - t0
    after = None
    if outcome != "gone":
        with contextlib.suppress(CgroupError):
            after = job.cg.read_current()
    return _Result(job, outcome, cpu, after, error, rejected)


class ReclaimEngine:
    """Applies memory.high and keeps each target below its watermark (see module doc)."""

    def __init__(self, cgroup_root: str | os.PathLike[str] | CgroupRoot,
                 cpu_budget_cores: float | None = 0.5, dry_run: bool = False, *,
                 allow_fake_root: bool = False, workers: int = 4,
                 tuning: d.Tuning | None = None, clock: Callable[[], float] = time.monotonic):
        self.root = (cgroup_root if isinstance(cgroup_root, CgroupRoot)
                     else CgroupRoot(cgroup_root, allow_fake=allow_fake_root))
        self.dry_run = dry_run
        self.tuning = tuning or d.Tuning()
        self._clock = clock
        self._lock = threading.RLock()           # guards everything below
        self._targets_lock = threading.Lock()    # serialises set_targets / stop
        self._states: dict[str, CgroupState] = {}
        self._queue = DueQueue()
        self._caps = Capabilities()
        self._loaded_originals: dict[str, int | None] = {}
        self._generation = 0
        self._cpu_budget: float | None = None
        self._cpu_bucket = d.Bucket(0.0, 0.0)
        self.set_cpu_budget(cpu_budget_cores)
        self._done: collections.deque[_Result] = collections.deque()
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        self._epoll = select.epoll()
        self._fd_watch: dict[int, tuple[str, Watch]] = {}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        _raise_fd_limit()

    # --- public API --------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        return self._caps

    def set_cpu_budget(self, cores: float | None) -> None:
        """Node-wide reclaim CPU (cores, i.e. CPU seconds per wall second); None: unlimited."""
        if cores is not None and cores <= 0:
            raise ValueError(f"cpu budget must be > 0 cores, not {cores}")
        with self._lock:
            self._cpu_budget = cores
            full = 0.0 if cores is None else cores * self.tuning.budget_burst_seconds
            self._cpu_bucket = d.Bucket(full, self._clock())

    def start(self) -> None:
        if self._thread is not None:
            return
        if self._workers > 0:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="headroom-reclaim")
        self._thread = threading.Thread(target=self._loop, name="headroom-engine", daemon=True)
        self._thread.start()

    def stop(self, restore: bool = True) -> None:
        """Stop the threads (waiting for writes in flight), then put back every memory.high
        this engine changed when `restore`. Idempotent."""
        if self._closed:
            return
        self._stopping = True
        self._wake()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._lock:
            while self._done:  # account writes that finished during shutdown
                self._finish(self._done.popleft(), self._clock())
        with self._targets_lock:
            for st in list(self._states.values()):
                self._remove(st, restore=restore)
        self._closed = True
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._epoll.close()

    def set_targets(self, targets: Iterable[Target]) -> None:
        """The full desired set. New keys are taken over, changed ones updated, missing
        ones released (memory.high restored). Targets whose cgroup was missing or
        unusable are retried. Never waits for reclaim: a memory.high below (or close
        to) usage is left to the engine's threads (reason Lowering, module doc)."""
        desired: dict[str, Target] = {}
        for t in targets:
            if t.key in desired:
                raise ValueError(f"duplicate target key {t.key!r}")
            problems = t.settings.problems()
            if problems:
                raise ValueError(f"target {t.key!r}: " + "; ".join(f"{f} {m}"
                                                                   for f, m in problems))
            desired[t.key] = t
        with self._targets_lock:
            with self._lock:
                current = dict(self._states)
            for key, st in current.items():
                if key not in desired:
                    self._remove(st, restore=True)
            for key, t in desired.items():
                st = current.get(key)
                if st is None:
                    self._add(t, None)
                elif st.failed or st.target != t:
                    self._remove(st, restore=st.target.path != t.path)
                    self._add(t, st if st.target.path == t.path else None)

    def snapshot(self) -> dict[str, TargetStats]:
        with self._lock:
            return {k: replace(st.stats) for k, st in self._states.items()}

    def originals(self) -> dict[str, int | None]:
        """memory.high values found before our first write (None = "max"), by key;
        includes loaded ones whose key has not been taken over again yet."""
        with self._lock:
            out = dict(self._loaded_originals)
            out.update({k: st.original for k, st in self._states.items() if st.has_original})
            return out

    def load_originals(self, originals: Mapping[str, int | None]) -> None:
        """Originals saved by a previous run; used instead of reading memory.high (which
        then holds our own earlier write) when these keys are taken over."""
        with self._lock:
            self._loaded_originals.update(originals)

    def tick(self, now: float | None = None) -> float | None:
        """Run every check due at `now`; returns the next due time. The scheduler thread
        calls this; tests drive it directly with a fake clock and workers=0."""
        now = self._clock() if now is None else now
        with self._lock:
            while self._done:
                self._finish(self._done.popleft(), now)
            jobs = [job for key, due in self._queue.pop_due(now)
                    if (job := self._check(key, due, now)) is not None]
        for job in jobs:
            if self._pool is None:
                result = _run_job(job)
                with self._lock:
                    self._finish(result, now)
            else:
                future = self._pool.submit(_run_job, job)
                future.add_done_callback(lambda f, job=job: self._job_done(job, f))
        with self._lock:
            return self._queue.next_due()

    def poll_wakeups(self, timeout: float) -> None:
        """Wait up to `timeout` s for PSI triggers / memory.events changes; make the woken
        cgroups due now."""
        try:
            ready = self._epoll.poll(max(timeout, 0.0))
        except InterruptedError:
            return
        now = self._clock()
        for fd, _ in ready:
            if fd == self._wake_r:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 4096)
                continue
            with self._lock:
                entry = self._fd_watch.get(fd)
                if entry is None:
                    continue
                key, watch = entry
                st = self._states.get(key)
                try:
                    events = watch.acknowledge()
                except CgroupGone:
                    if st is not None:
                        self._mark_gone(st, "memory.events vanished")
                    continue
                except CgroupError:
                    continue
                if st is None:
                    continue
                if events is not None and "high" in events:
                    st.stats.high_events = events["high"] - st.events_base
                # at most one woken check per min_interval, even if an fd stays ready
                self._queue.schedule_earlier(key, max(now, st.last_time + self.tuning.min_interval))

    # --- the loop ----------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping:
            try:
                with self._lock:
                    nxt = self._queue.next_due()
                timeout = self.tuning.max_interval if nxt is None else nxt - self._clock()
                self.poll_wakeups(min(timeout, self.tuning.max_interval))
                if not self._stopping:
                    self.tick()
            except Exception:  # the engine must outlive any single bug; never spin on it
                event(log, "engine_error", logging.ERROR, exc_info=True)
                time.sleep(self.tuning.max_interval)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def _job_done(self, job: _Job, future: Future[_Result]) -> None:
        exc = future.exception()
        if exc is not None:  # a bug, not a kernel answer: account it as an error, back off
            event(log, "engine_error", logging.ERROR, key=job.key, error=repr(exc))
        self._done.append(future.result() if exc is None
                          else _Result(job, "error", 0.0, None, repr(exc)))
        self._wake()

    # --- one check -----------------------------------------------------------------

    def _check(self, key: str, due: float, now: float) -> _Job | None:
        st = self._states.get(key)
        if st is None or st.cg is None or st.in_flight or st.failed:
            return None
        st.stats.lateness_seconds = max(0.0, now - due)
        try:
            job = self._decide(st, now)
            if job is None:
                self._keep_deadline(st, now)
            return job
        except CgroupGone as e:
            self._mark_gone(st, str(e))
        except CgroupError as e:
            st.stats.last_error = str(e)
            self._queue.schedule(key, now + self.tuning.max_interval)
        return None

    def _decide(self, st: CgroupState, now: float) -> _Job | None:
        """Read, decide, and either schedule the next check or return a reclaim job."""
        assert st.cg is not None
        key, t, s, tn = st.key, st.target, st.target.settings, self.tuning
        usage = st.cg.read_current()
        if now - st.last_stats >= tn.stats_interval:
            self._refresh_stats(st, usage, now)
        st.stats.usage_bytes = usage
        if st.last_usage is None:
            st.last_usage, st.last_time = usage, now
        elif now - st.last_time >= tn.min_interval:
            st.rate, st.inst_rate = d.growth(st.rate, st.last_usage, usage, now - st.last_time,
                                             tn.growth_halflife)
            st.last_usage, st.last_time = usage, now
        if st.lowering_to is not None:
            job = self._lowering_check(st, usage, now)
            if job is not None:
                return job
        if s.mode == "Off" and st.lowering_to is None:  # Off reclaims only to lower
            self._queue.schedule(key, now + tn.max_interval)
            return None

        want, interval = 0, tn.max_interval
        high = st.effective_high
        if high is not None:
            start, target = d.rate_aware_levels(high, s.headroom_percent, s.target_percent,
                                                st.rate, tn.reaction_lead)
            was_active = st.active
            want, st.active = d.watermark_step(usage, start, target, s.step_bytes, st.active)
            interval = d.next_check_interval(usage, start, max(st.rate, st.inst_rate), tn)
            if st.active and not was_active and self._dry(t):
                event(log, "dry_run_reclaim", key=key, usage_bytes=usage, memory_high=high,
                      would_reclaim_bytes=usage - target)
        if s.mode == "Pressure":
            want = max(want, self._pressure_want(st, usage, now))
            interval = min(interval, tn.pressure_interval)
        if self._caps.memory_reclaim is False:
            want = 0   # kernel < 5.19: memory.high only (its ENOENT would read as "gone")
        if want == 0:
            self._queue.schedule(key, now + interval)
            return None
        if self._dry(t):
            st.stats.dry_run_bytes += want
            self._queue.schedule(key, now + max(interval, tn.max_interval))
            return None
        if st.backoff_until > now:
            self._queue.schedule(key, st.backoff_until)
            return None
        self._cpu_bucket, wait = d.budget_wait(self._cpu_bucket, now, self._cpu_budget,
                                               tn.budget_burst_seconds)
        if wait > 0:
            st.stats.budget_deferrals += 1
            self._queue.schedule(key, now + wait)
            return None
        granted, st.bytes_bucket, wait = d.take_bytes(st.bytes_bucket, want, now,
                                                      s.max_bytes_per_second)
        if granted == 0:
            self._queue.schedule(key, now + wait)
            return None
        st.in_flight = True
        swappiness = s.swappiness if self._caps.swappiness_key is not False else None
        return _Job(key, st.generation, st.cg, granted, swappiness, usage)

    def _lowering_check(self, st: CgroupState, usage: int, now: float) -> _Job | None:
        """A pending lower memory.high: written here once usage is under its watermark
        (the kernel then has nothing to reclaim); past the deadline a job writes it
        whatever the usage, on a worker, and the kernel reclaims the rest there."""
        assert st.cg is not None and st.lowering_to is not None
        value = st.lowering_to
        if not self._must_lower(st, usage, st.cg.read_high(), value):
            st.cg.write_high(value)
            st.written_high = value
            self._lowered(st, forced=False)
            return None
        if now < st.lowering_deadline:
            return None   # the watermark reclaim below keeps bringing usage down
        event(log, "memory_high_lowering_deadline", logging.WARNING, key=st.key,
              memory_high=value, usage_bytes=usage)
        st.in_flight = True
        return _Job(st.key, st.generation, st.cg, 0, None, usage, high=value)

    def _lowered(self, st: CgroupState, forced: bool) -> None:
        st.lowering_to = None
        st.stats.applied, st.stats.reason = True, APPLIED
        event(log, "memory_high_lowered", key=st.key, memory_high=st.written_high,
              forced=forced)

    def _pressure_want(self, st: CgroupState, usage: int, now: float) -> int:
        """Pressure mode: one probe per sampling period, sized from the PSI share since the
        previous sample."""
        assert st.cg is not None
        s, tn = st.target.settings, self.tuning
        prev = st.pressure_sample
        if prev is not None and now - prev[0] < tn.pressure_interval:
            return 0
        total = st.cg.read_pressure().some.total_us
        st.pressure_sample = (now, total)
        if prev is None:
            return 0
        share = d.pressure_share(prev[1], total, now - prev[0])
        return d.pressure_step(usage, share, s.pressure_target_percent, s.step_bytes,
                               tn.pressure_probe_fraction)

    def _refresh_stats(self, st: CgroupState, usage: int, now: float) -> None:
        """Slow-changing readings: high events, PSI total, and memory.high drift."""
        assert st.cg is not None
        st.last_stats = now
        st.stats.high_events = st.cg.read_events().get("high", 0) - st.events_base
        st.stats.psi_some_seconds = (st.cg.read_pressure().some.total_us - st.psi_base_us) / 1e6
        if st.written_high is None:
            if st.target.memory_high is None:
                st.effective_high = _limit_of(st.cg)
            return
        if st.lowering_to is not None:
            return   # memory.high is not ours yet: nothing drifted
        found = st.cg.read_high()
        if found != st.written_high:
            event(log, "memory_high_drift", logging.WARNING, key=st.key, found=found,
                  expected=st.written_high)
            st.stats.drift_corrections += 1
            # raised meanwhile and usage followed: putting ours back is a lowering too
            self._write_or_lower(st, st.written_high, found, usage, now)

    def _keep_deadline(self, st: CgroupState, now: float) -> None:
        """A pending lowering is looked at again by its deadline at the latest, whatever
        back-off or bucket delayed the next check."""
        if st.lowering_to is None or st.failed or st.in_flight:
            return
        cap = max(st.lowering_deadline, now + self.tuning.min_interval)
        due = self._queue.due_of(st.key)
        if due is None or due > cap:
            self._queue.schedule(st.key, cap)

    def _finish(self, r: _Result, now: float) -> None:
        """Account a finished write and schedule the cgroup's next check."""
        self._cpu_bucket = d.charge(self._cpu_bucket, r.cpu_seconds)
        job = r.job
        st = self._states.get(job.key)
        if st is None or st.generation != job.generation:
            return
        st.in_flight = False
        if job.high is not None:
            self._finish_high_write(st, r, now)
        else:
            self._finish_reclaim(st, r, now)
        self._keep_deadline(st, now)

    def _finish_reclaim(self, st: CgroupState, r: _Result, now: float) -> None:
        job = r.job
        stats = st.stats
        stats.reclaim_writes += 1
        stats.reclaim_cpu_seconds += r.cpu_seconds
        if r.swappiness_rejected and self._caps.swappiness_key is not False:
            self._caps = replace(self._caps, swappiness_key=False)
            event(log, "swappiness_unsupported", logging.WARNING, key=job.key)
        if r.outcome == "gone":
            self._mark_gone(st, r.error or "gone")
            return
        if r.usage_after is not None:
            st.last_usage, st.last_time = r.usage_after, now
            stats.usage_bytes = r.usage_after
        if r.outcome == "ok":
            # Success means the kernel freed at least what was asked.
            stats.reclaimed_bytes += job.nbytes
            if st.active and r.usage_after is not None and st.effective_high is not None:
                s = st.target.settings
                _, target = d.rate_aware_levels(st.effective_high, s.headroom_percent,
                                                s.target_percent, st.rate,
                                                self.tuning.reaction_lead)
                st.active = r.usage_after > target  # episode over once down at the target
            if st.consecutive_failures:
                event(log, "reclaim_recovered", key=job.key, after_failures=st.consecutive_failures)
            st.consecutive_failures = 0
            stats.last_error = None
            self._queue.schedule(job.key, now)
            return
        # EAGAIN: the kernel does not say how much it freed; memory.current tells.
        if r.outcome == "eagain":
            stats.eagain_count += 1
            if r.usage_after is not None:
                stats.reclaimed_bytes += max(0, min(job.nbytes, job.usage_before - r.usage_after))
        st.consecutive_failures += 1
        backoff = d.eagain_backoff(st.consecutive_failures, self.tuning)
        st.backoff_until = now + backoff
        st.active = False
        stats.last_error = r.error
        if st.consecutive_failures == 1 or backoff >= self.tuning.eagain_backoff_max:
            # the first failure of a streak, then once per capped back-off period
            event(log, "reclaim_failed", logging.WARNING, key=job.key, outcome=r.outcome,
                  error=r.error, consecutive=st.consecutive_failures, backoff_seconds=backoff)
        self._queue.schedule(job.key, st.backoff_until)

    def _finish_high_write(self, st: CgroupState, r: _Result, now: float) -> None:
        """Account a lowering written past its deadline: the kernel reclaimed in our
        worker, so its CPU and the usage it took count as reclaim."""
        job, stats = r.job, st.stats
        stats.reclaim_cpu_seconds += r.cpu_seconds
        if r.outcome == "gone":
            self._mark_gone(st, r.error or "gone")
            return
        if r.usage_after is not None:
            st.last_usage, st.last_time = r.usage_after, now
            stats.usage_bytes = r.usage_after
            stats.reclaimed_bytes += max(0, job.usage_before - r.usage_after)
        if r.outcome == "ok":
            st.written_high = job.high
            if st.lowering_to == job.high:   # not superseded by a newer value meanwhile
                self._lowered(st, forced=True)
            self._queue.schedule(job.key, now)
            return
        # the write failed (rare: not EAGAIN, which memory.high never answers): still
        # pending, tried again after the longest back-off
        st.lowering_deadline = now + self.tuning.eagain_backoff_max
        stats.last_error = r.error
        event(log, "memory_high_write_failed", logging.WARNING, key=job.key, error=r.error,
              retry_seconds=self.tuning.eagain_backoff_max)
        self._queue.schedule(job.key, st.lowering_deadline)

    # --- taking over and releasing ---------------------------------------------------

    def _dry(self, t: Target) -> bool:
        return self.dry_run or t.dry_run

    def _add(self, t: Target, prev: CgroupState | None) -> None:
        """Take a target over (or re-take it, keeping `prev`'s counters and original)."""
        if prev is not None and not prev.failed:
            # same cgroup, new settings: a write in flight still belongs to it
            st = CgroupState(key=t.key, cg=None, generation=prev.generation, target=t,
                             in_flight=prev.in_flight)
        else:
            self._generation += 1
            st = CgroupState(key=t.key, cg=None, generation=self._generation, target=t)
        if prev is not None:
            st.stats = prev.stats
            st.has_original, st.original = prev.has_original, prev.original
            st.written_high = prev.written_high
            st.events_base, st.psi_base_us = prev.events_base, prev.psi_base_us
        elif t.key in self._loaded_originals:
            st.has_original, st.original = True, self._loaded_originals[t.key]
        dry = self._dry(t)
        try:
            st.cg = self.root.cgroup(t.path)
            if prev is None or prev.failed:
                st.events_base = st.cg.read_events().get("high", 0)
                st.psi_base_us = st.cg.read_pressure().some.total_us
            usage = st.cg.read_current()
            st.stats.usage_bytes = usage
            if not dry and t.settings.mode != "Off":
                self._probe(st.cg)
            if dry or t.memory_high is None:
                self._restore_high(st)
            else:
                if prev is not None and prev.lowering_to is not None:
                    st.lowering_deadline = prev.lowering_deadline   # the bound stays
                self._set_high(st, t.memory_high, usage)
            st.effective_high = (t.memory_high if t.memory_high is not None
                                 else _limit_of(st.cg))
            st.stats.memory_high = t.memory_high
            st.stats.applied, st.stats.reason = ((False, LOWERING) if st.lowering_to is not None
                                                 else (True, DRY_RUN if dry else APPLIED))
            st.stats.last_error = None
            if t.settings.mode != "Off":
                st.watches = self._open_watches(st.cg, dry)
        except CgroupGone as e:
            st.failed = True
            st.stats.applied, st.stats.reason, st.stats.last_error = False, NOT_FOUND, str(e)
            event(log, "cgroup_not_found", logging.WARNING, key=t.key, path=str(t.path))
        except CgroupError as e:
            st.failed = True
            st.stats.applied, st.stats.reason, st.stats.last_error = False, ERROR, str(e)
            event(log, "target_error", logging.ERROR, key=t.key, path=str(t.path), error=str(e))
        if st.failed:
            _close_all(st.watches)
            st.watches = []
        st.stats.original_memory_high = st.original
        if prev is None:  # a full one-second burst allowance to start with
            st.bytes_bucket = d.Bucket(float(t.settings.max_bytes_per_second), self._clock())
        else:
            st.bytes_bucket = prev.bytes_bucket
        with self._lock:
            self._states[t.key] = st
            self._loaded_originals.pop(t.key, None)
            for w in st.watches:
                self._fd_watch[w.fileno()] = (t.key, w)
                self._epoll.register(w.fileno(), w.poll_events)
            if not st.failed:
                self._queue.schedule(t.key, self._clock())
        if not st.failed:
            event(log, "target_added", key=t.key, path=str(t.path), mode=t.settings.mode,
                  memory_high=t.memory_high, original_memory_high=st.original, dry_run=dry,
                  watches=len(st.watches))
        self._wake()

    def _restore_high(self, st: CgroupState) -> None:
        """Ours no longer wanted: put the original memory.high back."""
        assert st.cg is not None
        if st.written_high is not None and st.has_original:
            st.cg.write_high(st.original)
        st.written_high = None

    def _set_high(self, st: CgroupState, value: int, usage: int) -> None:
        """Make memory.high `value`, now or, when that is below (or close to) usage, once
        the background reclaim got usage under it (see _lowering_check)."""
        assert st.cg is not None
        found = st.cg.read_high()
        if not st.has_original:
            st.original, st.has_original = found, True  # before the first write
        value = d.page_down(value)
        if st.written_high != value or found != value:
            self._write_or_lower(st, value, found, usage, self._clock())

    @staticmethod
    def _must_lower(st: CgroupState, usage: int, found: int | None, value: int) -> bool:
        """Modes that reclaim keep usage under the watermark anyway, so they wait for it;
        Off waits only while the write itself would make the kernel reclaim."""
        s = st.target.settings
        return d.lowering_needed(usage, found, value,
                                 0.0 if s.mode == "Off" else s.headroom_percent)

    def _write_or_lower(self, st: CgroupState, value: int, found: int | None, usage: int,
                        now: float) -> None:
        assert st.cg is not None
        if not self._must_lower(st, usage, found, value):
            st.cg.write_high(value)
            st.written_high = value
            return
        self._probe(st.cg)   # whether memory.reclaim exists decides how long to wait
        if st.lowering_to is None and st.lowering_deadline <= now:
            wait = self.tuning.lowering_deadline if self._caps.memory_reclaim else 0.0
            st.lowering_deadline = now + wait
        st.lowering_to = value
        st.stats.applied, st.stats.reason = False, LOWERING
        event(log, "memory_high_lowering", key=st.key, memory_high=value, found=found,
              usage_bytes=usage, deadline_seconds=max(0.0, st.lowering_deadline - now))

    def _probe(self, cg: Cgroup) -> None:
        """Probe kernel capabilities once, by trying on the first cgroup that reclaims."""
        if self._caps.swappiness_key is not None:
            return
        found = caps_probe.probe(cg, write=True)
        with self._lock:
            self._caps = found
        event(log, "capabilities", memory_reclaim=self._caps.memory_reclaim,
              swappiness_key=self._caps.swappiness_key, psi=self._caps.psi)

    def _open_watches(self, cg: Cgroup, dry: bool) -> list[Watch]:
        """memory.events change notification always (it only reads); a PSI trigger only
        when writing is allowed and triggers work. A refused watch is not an error: the
        timer still checks the cgroup."""
        watches: list[Watch] = []
        with contextlib.suppress(UnsupportedKey):
            watches.append(cg.events_watch())
        if not dry and self._caps.psi:
            try:
                watches.append(cg.psi_trigger(self.tuning.psi_stall_us, self.tuning.psi_window_us))
            except CgroupGone:
                _close_all(watches)
                raise
            except CgroupError as e:
                event(log, "psi_trigger_failed", logging.WARNING, path=str(cg.path), error=str(e))
        return watches

    def _unregister(self, st: CgroupState) -> None:
        for w in st.watches:
            fd = w.fileno()
            if self._fd_watch.pop(fd, None) is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._epoll.unregister(fd)
        _close_all(st.watches)
        st.watches = []

    def _mark_gone(self, st: CgroupState, why: str) -> None:
        """The cgroup vanished: stop watching and checking it; keep its stats."""
        self._unregister(st)
        self._queue.cancel(st.key)
        st.failed, st.in_flight = True, False
        st.written_high = None  # nothing left to restore
        st.stats.applied, st.stats.reason, st.stats.last_error = False, NOT_FOUND, why
        event(log, "cgroup_vanished", logging.WARNING, key=st.key, error=why)

    def _remove(self, st: CgroupState, restore: bool) -> None:
        with self._lock:
            self._states.pop(st.key, None)
            self._queue.cancel(st.key)
            self._unregister(st)
        if not restore or st.cg is None or st.written_high is None:
            return
        try:
            self._restore_high(st)
            event(log, "memory_high_restored", key=st.key, path=str(st.cg.path),
                  memory_high=st.original)
        except CgroupGone:
            pass
        except CgroupError as e:
            event(log, "restore_failed", logging.ERROR, key=st.key, error=str(e))


def _limit_of(cg: Cgroup) -> int | None:
    """The limit a target without its own memory.high is kept under: memory.high, else
    memory.max; None when neither is set."""
    high = cg.read_high()
    return high if high is not None else cg.read_max()


def _close_all(watches: list[Watch]) -> None:
    for w in watches:
        with contextlib.suppress(OSError):
            w.close()


def _raise_fd_limit() -> None:
    """Two fds per cgroup (PSI trigger, memory.events): lift the soft limit to the hard one."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
