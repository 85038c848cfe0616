"""Ownership of memory.high: one state machine per cgroup, one write site, the originals.

Per cgroup (HighState), driven by the engine under its lock:

    found ──take──> written (Applied) ──drift──> written again (or Lowering)
      │               ^    │  ^
      │               │    │  └─ usage well below ── relieved (Unreclaimable) <─┐
      │               │    │      (via Lowering)        │ stuck again: raise ───┘
      │               │    └──stuck at memory.high──────┘
      │               │    └──release / stop / target without memory.high──> restored
      └──> Lowering ──┘  (a lower value waits for background reclaim, or its deadline)

* found: memory.high before the engine's first write; recorded durably in the
  OriginalsJournal (originals.py) before anything is written. A value saved by an
  earlier run wins over what is found (that may be the engine's own earlier write).
* written: the last value the engine wrote (None: nothing of the engine's is there).
* Lowering: writing a memory.high below usage makes the writer reclaim synchronously
  and throttles the workload, so a lower value waits (lowering_to) until the watermark
  reclaim got usage under it, or until its deadline; then a worker writes it.
* relieved (livelock guard): reclaim makes no progress while usage sits at memory.high
  (EAGAIN, the kernel throttling: memory.events `high` or PSI `full` rising), e.g. anon
  memory without swap. memory.high is raised in bounded steps toward memory.max, so the
  workload runs at kernel speed up to its real limit, and comes back to the plan's value
  once usage is well below that (decisions.relief_*).
* restore: the original goes back, only if the engine had written its own.

`MemoryHighOwner.write` is the only code that writes memory.high.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from headroom.cgroup import Capabilities, Cgroup, CgroupError, CgroupGone, CgroupRoot, UnsafePath
from headroom.engine import decisions as d
from headroom.engine import modes
from headroom.engine.originals import OriginalsJournal, Saved
from headroom.engine.targets import APPLIED, DRY_RUN, LOWERING, UNRECLAIMABLE
from headroom.logs import event

if TYPE_CHECKING:
    from headroom.engine.state import CgroupState

log = logging.getLogger("headroom.engine")


@dataclass
class HighState:
    has_original: bool = False
    original: int | None = None
    written: int | None = None               # last value we wrote (None: we have not written)
    limit: int | None = None                 # the limit the watermark is computed from
    lowering_to: int | None = None           # memory.high to write once usage is below its
    lowering_deadline: float = 0.0           # watermark; written anyway from this time on
    # livelock guard
    plan: int | None = None                  # the target's memory.high, page aligned
    relieved: int | None = None              # raised memory.high in effect (None: not relieved)
    relieved_at: float = 0.0                 # time of the last raise
    seen_events: int = 0                     # memory.events high at the last look
    seen_full_us: int = 0                    # memory.pressure full total at the last look


def _full_us(cg: Cgroup) -> int:
    full = cg.read_pressure().full
    return 0 if full is None else full.total_us


def limit_of(cg: Cgroup) -> int | None:
    """The limit a target without its own memory.high is kept under: memory.high, else
    memory.max; None when neither is set."""
    high = cg.read_high()
    return high if high is not None else cg.read_max()


class MemoryHighOwner:
    def __init__(self, journal: OriginalsJournal, tuning: d.Tuning,
                 probe: Callable[[Cgroup], None], capabilities: Callable[[], Capabilities],
                 clock: Callable[[], float], adopt_leftovers: bool = True) -> None:
        self.journal = journal
        self.tuning = tuning
        self._probe = probe
        self._caps = capabilities
        self._clock = clock
        self._adopt_leftovers = adopt_leftovers   # False in an engine-wide dry run

    # --- the write site ----------------------------------------------------------------

    def write(self, key: str, cg: Cgroup, value: int | None, *, ours: bool = True) -> None:
        """The one place memory.high is written. `ours`: a value of the engine's own,
        journaled before the write (a crash right after must not lose the original)."""
        if ours:
            assert value is not None
            self.journal.add_ours(key, str(cg.path), value)
        cg.write_high(value)

    def _apply(self, st: CgroupState, value: int) -> None:
        assert st.cg is not None
        self.write(st.key, st.cg, value)
        st.high.written = value

    # --- taking over -------------------------------------------------------------------

    def take(self, st: CgroupState, prev: CgroupState | None, dry: bool, usage: int) -> None:
        """A target taken over (or re-taken with `prev`'s memory.high state): record the
        original, then write memory.high, start lowering it, or restore it."""
        assert st.cg is not None
        hs, t = st.high, st.target
        if prev is not None:
            hs.has_original, hs.original = prev.high.has_original, prev.high.original
            hs.written = prev.high.written
            hs.seen_events, hs.seen_full_us = prev.high.seen_events, prev.high.seen_full_us
        else:
            hs.seen_events, hs.seen_full_us = st.events_base, _full_us(st.cg)
        if not hs.has_original and (saved := self.journal.get(st.key)) is not None:
            # first takeover, or a retry of one that failed before reading memory.high
            hs.has_original, hs.original = True, saved.original
            found = st.cg.read_high()
            if self._adopt_leftovers and found is not None and found in saved.ours:
                hs.written = found   # left by an earlier run of ours: ours to restore
        hs.plan = None if t.memory_high is None else d.page_down(t.memory_high)
        if dry or t.memory_high is None:
            self.restore(st)
        elif (prev is not None and prev.high.relieved is not None and prev.high.plan == hs.plan
              and t.settings.livelock_guard):
            # new settings, same memory.high: still relieved, and still stuck for all we know
            hs.relieved, hs.relieved_at = prev.high.relieved, prev.high.relieved_at
        else:
            if prev is not None and prev.high.lowering_to is not None:
                hs.lowering_deadline = prev.high.lowering_deadline   # the bound stays
            self.set(st, t.memory_high, usage)
        hs.limit = ((hs.relieved or t.memory_high) if t.memory_high is not None
                    else limit_of(st.cg))
        st.stats.memory_high = t.memory_high
        st.stats.applied, st.stats.reason = ((False, LOWERING) if hs.lowering_to is not None
                                             else (False, UNRECLAIMABLE) if hs.relieved
                                             else (True, DRY_RUN if dry else APPLIED))
        st.stats.relieved_high = hs.relieved
        st.stats.original_memory_high = hs.original

    def set(self, st: CgroupState, value: int, usage: int) -> None:
        """Make memory.high `value`, now or, when that is below (or close to) usage, once
        the background reclaim got usage under it (check_lowering)."""
        assert st.cg is not None
        hs = st.high
        found = st.cg.read_high()
        if not hs.has_original:
            # write-ahead: on disk before the first write, even if that waits (Lowering)
            self.journal.record(st.key, Saved(found, str(st.cg.path)))
            hs.original, hs.has_original = found, True
        elif self.journal.get(st.key) is None:
            self.journal.record(st.key, Saved(hs.original, str(st.cg.path)))
        value = d.page_down(value)
        if hs.written != value or found != value:
            self._write_or_lower(st, value, found, usage, self._clock())

    def _must_lower(self, st: CgroupState, usage: int, found: int | None, value: int) -> bool:
        s = st.target.settings
        return d.lowering_needed(usage, found, value, modes.get(s.mode).lowering_headroom(s))

    def _write_or_lower(self, st: CgroupState, value: int, found: int | None, usage: int,
                        now: float) -> None:
        assert st.cg is not None
        hs = st.high
        if not self._must_lower(st, usage, found, value):
            self._apply(st, value)
            return
        self._probe(st.cg)   # whether memory.reclaim exists decides how long to wait
        if hs.lowering_to is None and hs.lowering_deadline <= now:
            wait = self.tuning.lowering_deadline if self._caps().memory_reclaim else 0.0
            hs.lowering_deadline = now + wait
        hs.lowering_to = value
        st.stats.applied, st.stats.reason = False, LOWERING
        event(log, "memory_high_lowering", key=st.key, memory_high=value, found=found,
              usage_bytes=usage, deadline_seconds=max(0.0, hs.lowering_deadline - now))

    # --- at each check -------------------------------------------------------------------

    def check_lowering(self, st: CgroupState, usage: int, now: float) -> int | None:
        """A pending lower memory.high: written here once usage is under its watermark
        (the kernel then has nothing to reclaim). Past the deadline, returns the value for
        the engine to write on a worker, whatever the usage (the kernel reclaims the rest
        there); None otherwise."""
        assert st.cg is not None and st.high.lowering_to is not None
        value = st.high.lowering_to
        if not self._must_lower(st, usage, st.cg.read_high(), value):
            self._apply(st, value)
            self._lowered(st, forced=False)
            return None
        if now < st.high.lowering_deadline:
            return None   # the watermark reclaim keeps bringing usage down
        event(log, "memory_high_lowering_deadline", logging.WARNING, key=st.key,
              memory_high=value, usage_bytes=usage)
        return value

    def finish_forced(self, st: CgroupState, value: int, ok: bool, error: str | None,
                      now: float) -> float:
        """A lowering written past its deadline (by a worker) finished; returns when the
        cgroup is to be checked next."""
        hs = st.high
        if ok:
            hs.written = value
            if hs.lowering_to == value:   # not superseded by a newer value meanwhile
                self._lowered(st, forced=True)
            return now
        # the write failed (rare: not EAGAIN, which memory.high never answers): still
        # pending, tried again after the longest back-off
        hs.lowering_deadline = now + self.tuning.eagain_backoff_max
        st.stats.last_error = error
        event(log, "memory_high_write_failed", logging.WARNING, key=st.key, error=error,
              retry_seconds=self.tuning.eagain_backoff_max)
        return hs.lowering_deadline

    def _lowered(self, st: CgroupState, forced: bool) -> None:
        st.high.lowering_to = None
        st.stats.applied, st.stats.reason = True, APPLIED
        event(log, "memory_high_lowered", key=st.key, memory_high=st.high.written,
              forced=forced)

    def check_drift(self, st: CgroupState, usage: int, now: float) -> None:
        """Every stats interval: memory.high changed by someone else is put back (as a
        lowering when usage followed it up); a target without its own memory.high
        follows the limit it finds."""
        assert st.cg is not None
        hs = st.high
        if hs.written is None:
            if st.target.memory_high is None:
                hs.limit = limit_of(st.cg)
            return
        if hs.lowering_to is not None:
            return   # memory.high is not ours yet: nothing drifted
        found = st.cg.read_high()
        if found != hs.written:
            event(log, "memory_high_drift", logging.WARNING, key=st.key, found=found,
                  expected=hs.written)
            st.stats.drift_corrections += 1
            self._write_or_lower(st, hs.written, found, usage, now)

    # --- livelock guard -------------------------------------------------------------------

    def after_failed_reclaim(self, st: CgroupState, usage: int, now: float) -> bool:
        """A reclaim write freed less than asked. Raise memory.high one step when the
        cgroup is stuck at it (decisions.relief_stuck); True when raised."""
        assert st.cg is not None
        hs, s = st.high, st.target.settings
        if (not s.livelock_guard or hs.plan is None or hs.written is None
                or hs.lowering_to is not None):
            return False
        events = st.cg.read_events().get("high", 0)
        full = _full_us(st.cg)
        rise, stall = events - hs.seen_events, full - hs.seen_full_us
        hs.seen_events, hs.seen_full_us = events, full
        current = hs.written
        if not d.relief_stuck(usage, current, True, rise, stall, s.headroom_percent):
            return False
        ceiling = d.relief_ceiling(hs.plan, st.cg.read_max(), self.tuning.relief_unbounded_factor)
        value = d.relief_raise(current, hs.plan, ceiling, self.tuning.relief_steps)
        if value is None:
            return False   # at memory.max: the kernel's own limit applies, as without us
        self._apply(st, value)
        hs.relieved, hs.relieved_at, hs.limit = value, now, value
        st.stats.applied, st.stats.reason = False, UNRECLAIMABLE
        st.stats.relieved_high = value
        st.stats.relief_raises += 1
        event(log, "memory_high_relieved", logging.WARNING, key=st.key, memory_high=value,
              plan_memory_high=hs.plan, ceiling=ceiling, usage_bytes=usage,
              high_events=rise, full_stall_us=stall)
        return True

    def check_relief(self, st: CgroupState, usage: int, now: float) -> None:
        """At each check while relieved: back to the plan's value, through the ordinary
        Lowering path, once usage is well below it (decisions.relief_over)."""
        hs, s = st.high, st.target.settings
        if hs.relieved is None or hs.plan is None:
            return
        if not d.relief_over(usage, hs.plan, s.headroom_percent, s.target_percent,
                             now - hs.relieved_at, self.tuning.relief_hold):
            return
        assert st.cg is not None
        event(log, "memory_high_relief_over", key=st.key, memory_high=hs.plan,
              relieved=hs.relieved, usage_bytes=usage)
        hs.relieved, hs.limit = None, hs.plan
        st.stats.relieved_high = None
        st.stats.applied, st.stats.reason = True, APPLIED
        self._write_or_lower(st, hs.plan, st.cg.read_high(), usage, now)

    # --- letting go ----------------------------------------------------------------------

    def restore(self, st: CgroupState) -> None:
        """Ours no longer wanted: put the original back (only if we had written ours)."""
        assert st.cg is not None
        hs = st.high
        if hs.written is not None and hs.has_original:
            self.write(st.key, st.cg, hs.original, ours=False)
        hs.written, hs.relieved = None, None
        self.journal.forget(st.key)

    def release(self, st: CgroupState) -> None:
        """The target leaves (or the engine stops): restore, and log what happened. A
        restore that fails for another reason than a vanished cgroup keeps the journal
        entry (a later run, or `headroom agent --restore-all`, tries again)."""
        if st.cg is None:
            return
        wrote = st.high.written is not None
        try:
            self.restore(st)
        except CgroupGone:
            self.journal.forget(st.key)
            return
        except (CgroupError, OSError) as e:
            event(log, "restore_failed", logging.ERROR, key=st.key, error=str(e))
            return
        if wrote:
            event(log, "memory_high_restored", key=st.key, path=str(st.cg.path),
                  memory_high=st.high.original)

    def gone(self, st: CgroupState) -> None:
        """The cgroup vanished: nothing left to restore."""
        st.high.written = None
        try:
            self.journal.forget(st.key)
        except OSError as e:
            event(log, "state_write_failed", logging.ERROR, key=st.key, error=str(e))

    def release_saved(self, root: CgroupRoot, keep: Iterable[str]) -> list[tuple[str, str]]:
        """Originals saved by an earlier run for keys not in `keep` (released while no
        agent ran, or never taken over again): put back where memory.high still holds a
        value of ours, then forgotten. Returns (key, outcome) pairs."""
        keep = set(keep)
        out: list[tuple[str, str]] = []
        for key, saved in sorted(self.journal.entries().items()):
            if key in keep:
                continue
            outcome = "forgotten"
            try:
                if saved.path is not None and self._adopt_leftovers:
                    cg = root.cgroup(saved.path)
                    found = cg.read_high()
                    if found is not None and found in saved.ours:
                        self.write(key, cg, saved.original, ours=False)
                        outcome = "restored"
                        event(log, "memory_high_restored", key=key, path=saved.path,
                              memory_high=saved.original, saved_by_earlier_run=True)
                    else:
                        outcome = "not ours"
                self.journal.forget(key)
            except (CgroupGone, UnsafePath):
                self.journal.forget(key)
                outcome = "gone"
            except (CgroupError, OSError) as e:
                event(log, "restore_failed", logging.ERROR, key=key, path=saved.path,
                      error=str(e))
                outcome = "failed"
            out.append((key, outcome))
        return out


def restore_saved(root: CgroupRoot, state_dir: str, dry_run: bool = False
                  ) -> list[tuple[str, str]]:
    """Every original saved in `state_dir` put back where memory.high still holds a value
    the engine wrote (`headroom agent --restore-all`; no agent may be running). Entries
    restored, not ours, or of vanished cgroups leave the file; failed ones stay. With
    `dry_run`, nothing is written: outcomes say what would happen."""
    journal = OriginalsJournal(state_dir)
    if dry_run:
        out = []
        for key, saved in sorted(journal.entries().items()):
            try:
                found = (root.cgroup(saved.path).read_high() if saved.path is not None
                         else None)
                ours = saved.path is not None and found is not None and found in saved.ours
                out.append((key, "would restore" if ours else "not ours"))
            except CgroupError:
                out.append((key, "gone"))
        return out
    owner = MemoryHighOwner(journal, d.Tuning(), lambda cg: None, Capabilities, time.monotonic)
    return owner.release_saved(root, ())
