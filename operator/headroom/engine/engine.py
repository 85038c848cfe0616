"""The reclaim engine: one scheduler for many cgroups (contract in docs/architecture.md).

Parts: this module holds the threads, the schedule and the budgets; `wakeups` the epoll
plumbing; `modes/` how much each mode reclaims (pure rules in `decisions`);
`memoryhigh` every memory.high write and the originals; `state` the per-cgroup record.

Threads: one scheduler thread waits in epoll on every PSI trigger and memory.events fd
plus a self-pipe, with a timeout to the earliest due check. A check (read
memory.current, decide) is cheap and runs on the scheduler thread. A memory.reclaim
write runs reclaim in the writer's context and can block, so writes go to a small
worker pool: a slow cgroup occupies one worker while the scheduler keeps checking the
others. A cgroup never has two writes in flight. `workers=0` runs writes inline, which
with `tick(now)` makes the engine fully deterministic for tests.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

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
from headroom.engine import modes
from headroom.engine.memoryhigh import MemoryHighOwner
from headroom.engine.originals import OriginalsJournal
from headroom.engine.scheduler import DueQueue
from headroom.engine.state import CgroupState
from headroom.engine.targets import (
    ERROR,
    NOT_FOUND,
    LatenessHistogram,
    ReclaimSettings,
    Target,
    TargetStats,
)
from headroom.engine.wakeups import Wakeups, close_all
from headroom.logs import event

__all__ = ["ReclaimEngine", "ReclaimSettings", "Target", "TargetStats", "Tuning"]

Tuning = d.Tuning
log = logging.getLogger("headroom.engine")


@dataclass(frozen=True)
class _Job:
    key: str
    generation: int
    cg: Cgroup
    nbytes: int
    swappiness: int | None
    usage_before: int
    high: int | None = None   # set: write this memory.high (a lowering past its deadline)
    write_high: Callable[[], None] | None = None


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
        if job.write_high is not None:
            job.write_high()
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
    except (CgroupError, OSError) as e:
        outcome, error = "error", str(e)
    cpu = time.thread_time() - t0
    after = None
    if outcome != "gone":
        with contextlib.suppress(CgroupError):
            after = job.cg.read_current()
    return _Result(job, outcome, cpu, after, error, rejected)


class ReclaimEngine:
    """Applies memory.high and keeps each target below its watermark (see module doc).

    `state_dir`: where the originals are kept durably (originals.py); None keeps them in
    memory only, so a crash loses them (tests, tools). `on_state_set_aside(file name)` is
    called when a saved file was unusable and moved aside (a metric)."""

    def __init__(self, cgroup_root: str | os.PathLike[str] | CgroupRoot,
                 cpu_budget_cores: float | None = 0.5, dry_run: bool = False, *,
                 state_dir: str | os.PathLike[str] | None = None,
                 on_state_set_aside: Callable[[str], Any] | None = None,
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
        # a dry run writes nothing, its state dir included
        journal = OriginalsJournal(None if dry_run else state_dir, on_state_set_aside)
        self._high = MemoryHighOwner(journal,
                                     self.tuning, self._probe, lambda: self._caps, clock,
                                     adopt_leftovers=not dry_run)
        self._released_saved = False
        self._generation = 0
        self._cpu_budget: float | None = None
        self.lateness_histogram = LatenessHistogram()   # every check, for /metrics
        self._cpu_bucket = d.Bucket(0.0, 0.0)
        self.set_cpu_budget(cpu_budget_cores)
        self._done: collections.deque[_Result] = collections.deque()
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._loop_at: float | None = None    # monotonic time of the loop's last turn
        self._stopping = False
        self._closed = False
        self._wakeups = Wakeups()

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

    def loop_age(self) -> float | None:
        """Seconds since the scheduler loop last turned (it turns at least every
        tuning.max_interval); None before start or after stop. For health checks."""
        at, thread = self._loop_at, self._thread
        if at is None or thread is None or not thread.is_alive():
            return None
        return max(0.0, time.monotonic() - at)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._loop_at = time.monotonic()
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
        self._wakeups.wake()
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
        self._wakeups.close()

    def set_targets(self, targets: Iterable[Target]) -> None:
        """The full desired set. New keys are taken over, changed ones updated, missing
        ones released (memory.high restored). Targets whose cgroup was missing or
        unusable are retried. Never waits for reclaim: a memory.high below (or close
        to) usage is left to the engine's threads (reason Lowering, docs/engine.md).
        Originals saved by an earlier run for keys not wanted now are restored on the
        first call (memoryhigh.release_saved)."""
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
            if not self._released_saved:
                self._released_saved = True
                self._high.release_saved(self.root, desired)

    def snapshot(self) -> dict[str, TargetStats]:
        with self._lock:
            return {k: replace(st.stats) for k, st in self._states.items()}

    def originals(self) -> dict[str, int | None]:
        """memory.high values found before our first write (None = "max"), by key, as
        kept in the state dir: includes saved ones not taken over (again) yet."""
        return {k: v.original for k, v in self._high.journal.entries().items()}

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
        fired = self._wakeups.poll(timeout)
        now = self._clock()
        with self._lock:
            for key, watch in fired:
                self._woken(key, watch, now)

    # --- the loop ----------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping:
            self._loop_at = time.monotonic()
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

    def _woken(self, key: str, watch: Watch, now: float) -> None:
        st = self._states.get(key)
        try:
            events = watch.acknowledge()
        except CgroupGone:
            if st is not None:
                self._mark_gone(st, "memory.events vanished")
            return
        except CgroupError:
            return
        if st is None:
            return
        if events is not None and "high" in events:
            st.stats.high_events = events["high"] - st.events_base
        # at most one woken check per min_interval, even if an fd stays ready
        self._queue.schedule_earlier(key, max(now, st.last_time + self.tuning.min_interval))

    def _job_done(self, job: _Job, future: Future[_Result]) -> None:
        exc = future.exception()
        if exc is not None:  # a bug, not a kernel answer: account it as an error, back off
            event(log, "engine_error", logging.ERROR, key=job.key, error=repr(exc))
        self._done.append(future.result() if exc is None
                          else _Result(job, "error", 0.0, None, repr(exc)))
        self._wakeups.wake()

    # --- one check -----------------------------------------------------------------

    def _check(self, key: str, due: float, now: float) -> _Job | None:
        st = self._states.get(key)
        if st is None or st.cg is None or st.in_flight or st.failed:
            return None
        st.stats.lateness_seconds = max(0.0, now - due)
        self.lateness_histogram.observe(st.stats.lateness_seconds)
        try:
            job = self._decide(st, now)
            if job is None:
                self._keep_deadline(st, now)
            return job
        except CgroupGone as e:
            self._mark_gone(st, str(e))
        except (CgroupError, OSError) as e:
            st.stats.last_error = str(e)
            self._queue.schedule(key, now + self.tuning.max_interval)
        return None

    def _decide(self, st: CgroupState, now: float) -> _Job | None:
        """Read, decide, and either schedule the next check or return a write job."""
        assert st.cg is not None
        key, s, tn = st.key, st.target.settings, self.tuning
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
        if st.high.lowering_to is not None:
            value = self._high.check_lowering(st, usage, now)
            if value is not None:
                st.in_flight = True
                return _Job(key, st.generation, st.cg, 0, None, usage, high=value,
                            write_high=lambda cg=st.cg: self._high.write(key, cg, value))

        self._high.check_relief(st, usage, now)
        dry = self._dry(st.target)
        want, interval = modes.get(s.mode).want(
            modes.Check(st, usage, now, tn, dry, self._caps.classic_lru is not False))
        if self._caps.memory_reclaim is False:
            want = 0   # kernel < 5.19: memory.high only (its ENOENT would read as "gone")
        if want == 0:
            self._queue.schedule(key, d.batched_due(now, interval, tn))
            return None
        if dry:
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

    def _refresh_stats(self, st: CgroupState, usage: int, now: float) -> None:
        """Slow-changing readings: high events, PSI total, and memory.high drift."""
        assert st.cg is not None
        st.last_stats = now
        st.stats.high_events = st.cg.read_events().get("high", 0) - st.events_base
        st.stats.psi_some_seconds = (st.cg.read_pressure().some.total_us - st.psi_base_us) / 1e6
        self._high.check_drift(st, usage, now)

    def _keep_deadline(self, st: CgroupState, now: float) -> None:
        """A pending lowering is looked at again by its deadline at the latest, whatever
        back-off or bucket delayed the next check."""
        if st.high.lowering_to is None or st.failed or st.in_flight:
            return
        cap = max(st.high.lowering_deadline, now + self.tuning.min_interval)
        due = self._queue.due_of(st.key)
        if due is None or due > cap:
            self._queue.schedule(st.key, cap)

    # --- a finished write ------------------------------------------------------------

    def _finish(self, r: _Result, now: float) -> None:
        """Account a finished write and schedule the cgroup's next check."""
        self._cpu_bucket = d.charge(self._cpu_bucket, r.cpu_seconds)
        job = r.job
        st = self._states.get(job.key)
        if st is None or st.generation != job.generation:
            return
        st.in_flight = False
        stats = st.stats
        # a forced memory.high write is reclaim too: the kernel reclaimed in our worker
        stats.reclaim_cpu_seconds += r.cpu_seconds
        if job.high is None:
            stats.reclaim_writes += 1
            if r.swappiness_rejected and self._caps.swappiness_key is not False:
                self._caps = replace(self._caps, swappiness_key=False)
                event(log, "swappiness_unsupported", logging.WARNING, key=job.key)
        if r.outcome == "gone":
            self._mark_gone(st, r.error or "gone")
            return
        if r.usage_after is not None:
            st.last_usage, st.last_time = r.usage_after, now
            stats.usage_bytes = r.usage_after
        if job.high is not None:
            if r.usage_after is not None:
                stats.reclaimed_bytes += max(0, job.usage_before - r.usage_after)
            due = self._high.finish_forced(st, job.high, r.outcome == "ok", r.error, now)
            self._queue.schedule(job.key, due)
        elif r.outcome == "ok":
            self._reclaimed(st, r, now)
        else:
            self._reclaim_failed(st, r, now)
        self._keep_deadline(st, now)

    def _reclaimed(self, st: CgroupState, r: _Result, now: float) -> None:
        # Success means the kernel freed at least what was asked; it may free more in one
        # write (whole batches), which the drop in usage shows as a lower bound.
        dropped = r.job.usage_before - r.usage_after if r.usage_after is not None else 0
        st.stats.reclaimed_bytes += max(r.job.nbytes, dropped)
        if r.usage_after is not None:
            modes.get(st.target.settings.mode).reclaimed(st, r.usage_after, self.tuning)
        if st.consecutive_failures:
            event(log, "reclaim_recovered", key=st.key, after_failures=st.consecutive_failures)
        st.consecutive_failures = 0
        st.stats.last_error = None
        self._queue.schedule(st.key, now)

    def _reclaim_failed(self, st: CgroupState, r: _Result, now: float) -> None:
        job, stats = r.job, st.stats
        # EAGAIN: the kernel does not say how much it freed; memory.current tells.
        if r.outcome == "error":
            stats.reclaim_errors += 1
        if r.outcome == "eagain":
            stats.eagain_count += 1
            if r.usage_after is not None:
                stats.reclaimed_bytes += max(0, min(job.nbytes, job.usage_before - r.usage_after))
        if (r.outcome == "eagain" and r.usage_after is not None
                and self._relieve(st, r.usage_after, now)):
            return
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

    def _relieve(self, st: CgroupState, usage: int, now: float) -> bool:
        """Livelock guard (memoryhigh.after_failed_reclaim): memory.high raised one step;
        the limit changed, so the back-off starts over and the next check comes at once."""
        try:
            if not self._high.after_failed_reclaim(st, usage, now):
                return False
        except CgroupGone as e:
            self._mark_gone(st, str(e))
            return True
        except (CgroupError, OSError) as e:
            st.stats.last_error = str(e)
            return False
        st.consecutive_failures, st.backoff_until, st.active = 0, now, False
        self._queue.schedule(st.key, now)
        return True

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
            st.events_base, st.psi_base_us = prev.events_base, prev.psi_base_us
        dry = self._dry(t)
        mode = modes.get(t.settings.mode)
        try:
            st.cg = self.root.cgroup(t.path)
            if prev is None or prev.failed:
                st.events_base = st.cg.read_events().get("high", 0)
                st.psi_base_us = st.cg.read_pressure().some.total_us
            usage = st.cg.read_current()
            st.stats.usage_bytes = usage
            if not dry and mode.reclaims:
                self._probe(st.cg)
            self._high.take(st, prev, dry, usage)
            st.stats.last_error = None
            if mode.reclaims:
                st.watches = self._open_watches(st.cg, dry)
        except CgroupGone as e:
            st.failed = True
            st.stats.applied, st.stats.reason, st.stats.last_error = False, NOT_FOUND, str(e)
            event(log, "cgroup_not_found", logging.WARNING, key=t.key, path=str(t.path))
        except (CgroupError, OSError) as e:   # OSError: the state dir could not be written
            st.failed = True
            st.stats.applied, st.stats.reason, st.stats.last_error = False, ERROR, str(e)
            event(log, "target_error", logging.ERROR, key=t.key, path=str(t.path), error=str(e))
        if st.failed:
            close_all(st.watches)
            st.watches = []
        st.stats.original_memory_high = st.high.original
        if prev is None:  # a full one-second burst allowance to start with
            st.bytes_bucket = d.Bucket(float(t.settings.max_bytes_per_second), self._clock())
        else:
            st.bytes_bucket = prev.bytes_bucket
        with self._lock:
            self._states[t.key] = st
            self._wakeups.add(t.key, st.watches)
            if not st.failed:
                self._queue.schedule(t.key, self._clock())
        if not st.failed:
            event(log, "target_added", key=t.key, path=str(t.path), mode=t.settings.mode,
                  memory_high=t.memory_high, original_memory_high=st.high.original,
                  dry_run=dry, watches=len(st.watches))
        self._wakeups.wake()

    def _probe(self, cg: Cgroup) -> None:
        """Probe kernel capabilities once, by trying on the first cgroup that reclaims."""
        if self._caps.swappiness_key is not None:
            return
        found = caps_probe.probe(cg, write=True)
        with self._lock:
            self._caps = found
        event(log, "capabilities", memory_reclaim=self._caps.memory_reclaim,
              swappiness_key=self._caps.swappiness_key, psi=self._caps.psi,
              classic_lru=self._caps.classic_lru)

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
                close_all(watches)
                raise
            except CgroupError as e:
                event(log, "psi_trigger_failed", logging.WARNING, path=str(cg.path), error=str(e))
        return watches

    def _unregister(self, st: CgroupState) -> None:
        self._wakeups.remove(st.watches)
        st.watches = []

    @staticmethod
    def _close(st: CgroupState) -> None:
        """Its kept-open files closed now, not whenever the collector finds them: 500
        pods hold ~3,000 fds, and a node's pods come and go."""
        if st.cg is not None:
            st.cg.close()

    def _mark_gone(self, st: CgroupState, why: str) -> None:
        """The cgroup vanished: stop watching and checking it; keep its stats."""
        self._unregister(st)
        self._queue.cancel(st.key)
        st.failed, st.in_flight = True, False
        self._high.gone(st)
        st.stats.applied, st.stats.reason, st.stats.last_error = False, NOT_FOUND, why
        self._close(st)
        event(log, "cgroup_vanished", logging.WARNING, key=st.key, error=why)

    def _remove(self, st: CgroupState, restore: bool) -> None:
        with self._lock:
            self._states.pop(st.key, None)
            self._queue.cancel(st.key)
            self._unregister(st)
        if restore:
            self._high.release(st)
        self._close(st)
