"""ReclaimEngine behaviour on the fake kernel, driven deterministically (fake clock,
writes inline); one threaded smoke test at the end."""

from __future__ import annotations

import json
import threading
import time

import pytest
from headroom.cgroup import Cgroup
from headroom.engine import ReclaimEngine, ReclaimSettings, Target
from headroom.engine import engine as engine_mod
from headroom.engine.decisions import PAGE_SIZE as PAGE

MiB = 1 << 20
HIGH = 256 * MiB


class Sim:
    """An engine on a fake clock; `run` advances time in small steps, letting the
    workload grow between steps, and delivers wake-ups like the scheduler thread."""

    def __init__(self, kernel, **kw):
        self.kernel, self.now = kernel, 0.0
        kw.setdefault("cpu_budget_cores", None)
        self.engine = ReclaimEngine(kernel, workers=0, clock=lambda: self.now, **kw)

    def target(self, rel, high=HIGH, **settings):
        dry = settings.pop("dry_run", False)
        return Target(key=rel, path=self.kernel.tree.path(rel), memory_high=high,
                      settings=ReclaimSettings(**settings), dry_run=dry)

    def step(self, dt=0.0):
        self.now += dt
        self.engine.poll_wakeups(0)
        self.engine.tick(self.now)

    def run(self, seconds, grow=None, dt=0.005, max_usage=None):
        """grow: {rel: bytes/s}. Returns the peak memory.current seen per grown cgroup."""
        peak = dict.fromkeys(grow or {}, 0)
        end = self.now + seconds
        while self.now < end:
            for rel, rate in (grow or {}).items():
                self.kernel.grow(rel, int(rate * dt))
                peak[rel] = max(peak[rel], self.kernel.tree.current(rel))
            self.step(dt)
        return peak

    def stats(self, key):
        return self.engine.snapshot()[key]


@pytest.fixture
def sim(fake_kernel):
    s = Sim(fake_kernel)
    yield s
    s.engine.stop(restore=False)


def test_keeps_a_growing_cgroup_below_memory_high(sim, fake_kernel):
    fake_kernel.tree.add("web", current=100 * MiB)
    sim.engine.set_targets([sim.target("web")])
    assert fake_kernel.tree.high("web") == str(HIGH)
    # A cold burst from far below may touch memory.high once before the first timed
    # check (a 1 s idle interval); that high event wakes the engine at once.
    sim.run(2.0, grow={"web": 200 * MiB})
    cold = fake_kernel.tree.events("web")["high"]
    assert cold <= 1
    # Once the growth rate is known, usage never reaches memory.high again.
    peak = sim.run(8.0, grow={"web": 200 * MiB})
    st = sim.stats("web")
    assert fake_kernel.tree.events("web")["high"] == cold, "usage reached memory.high"
    assert peak["web"] < HIGH
    assert st.high_events == cold and st.applied and st.reason == "Applied"
    # everything grown beyond the start was reclaimed, and accounted
    assert st.reclaimed_bytes >= 8.0 * 200 * MiB - 64 * MiB
    assert st.reclaim_writes >= st.reclaimed_bytes // (16 * MiB)
    assert st.reclaim_cpu_seconds > 0
    assert all(n <= 16 * MiB for _, n, _ in fake_kernel.reclaim_calls)



def test_reclaimed_bytes_count_what_the_kernel_freed_beyond_the_request(sim, fake_kernel):
    # the kernel frees whole batches and may free more than asked in one write
    fake_kernel.tree.add("web", current=250 * MiB)
    fake_kernel.overshoot["web"] = 4 * MiB
    sim.engine.set_targets([sim.target("web")])   # its capability probe writes once too
    start, probes = fake_kernel.tree.current("web"), len(fake_kernel.reclaim_calls)
    sim.run(0.5)
    asked = sum(n for _, n, _ in fake_kernel.reclaim_calls[probes:])
    freed = start - fake_kernel.tree.current("web")
    assert 0 < asked < freed
    assert sim.stats("web").reclaimed_bytes == freed



def test_an_episode_ends_in_the_lower_half_of_the_band_not_chasing_the_inflow(sim,
                                                                             fake_kernel):
    # a stream charges 1 MiB while each write runs: reclaiming "down to the target"
    # would chase it in 1 MiB writes, one after the other, for as long as it streams
    fake_kernel.tree.add("web", current=250 * MiB)
    fake_kernel.inflow["web"] = 1 * MiB
    sim.engine.set_targets([sim.target("web")])
    probes = len(fake_kernel.reclaim_calls)
    sim.run(0.5)
    writes = [n for _, n, _ in fake_kernel.reclaim_calls[probes:]]
    assert writes == [16 * MiB]                      # 250 - 16 + 1 = 235 MiB: done
    assert fake_kernel.tree.current("web") <= int(HIGH * 0.925)

def test_without_engine_the_same_workload_hits_memory_high(fake_kernel):
    """Control for the test above: the fake kernel does count high events."""
    fake_kernel.tree.add("web", current=100 * MiB, high=HIGH)
    for _ in range(200):
        fake_kernel.grow("web", 1 * MiB)
    assert fake_kernel.tree.events("web")["high"] > 0


def test_idle_cgroup_costs_few_checks(sim, fake_kernel):
    fake_kernel.tree.add("idle", current=10 * MiB)
    sim.engine.set_targets([sim.target("idle")])
    reads = []
    orig = type(sim.engine._states["idle"].cg).read_current

    def counting(self):
        reads.append(1)
        return orig(self)

    type(sim.engine._states["idle"].cg).read_current = counting
    try:
        sim.run(10.0)
    finally:
        type(sim.engine._states["idle"].cg).read_current = orig
    assert len(reads) <= 12  # about one check per max_interval (1 s)
    assert fake_kernel.reclaim_calls == [] or all(n == 4096 for _, n, _ in
                                                  fake_kernel.reclaim_calls)


def test_restores_exact_original_memory_high_on_removal(sim, fake_kernel):
    fake_kernel.tree.add("a")  # memory.high "max"
    fake_kernel.tree.add("b")
    fake_kernel.tree.write("b", "memory.high", f"{300 * MiB}\n")
    sim.engine.set_targets([sim.target("a"), sim.target("b")])
    assert fake_kernel.tree.high("a") == fake_kernel.tree.high("b") == str(HIGH)
    assert sim.engine.originals() == {"a": None, "b": 300 * MiB}
    assert sim.stats("b").original_memory_high == 300 * MiB
    sim.engine.set_targets([sim.target("b")])
    assert fake_kernel.tree.high("a") == "max"
    assert fake_kernel.tree.high("b") == str(HIGH)
    assert list(sim.engine.snapshot()) == ["b"]
    sim.engine.stop(restore=True)
    assert fake_kernel.tree.high("b") == str(300 * MiB)


def test_stop_without_restore_keeps_memory_high(sim, fake_kernel):
    fake_kernel.tree.add("a")
    sim.engine.set_targets([sim.target("a")])
    sim.engine.stop(restore=False)
    assert fake_kernel.tree.high("a") == str(HIGH)


def test_saved_originals_win_over_what_is_found(fake_kernel, tmp_path):
    fake_kernel.tree.add("a", high=HIGH)  # our own write from an earlier run
    # saved by an earlier agent version (format 1: no path, no record of our writes)
    (tmp_path / "originals.json").write_text(
        json.dumps({"version": 1, "originals": {"a": None, "gone-pod": 5 * MiB}}))
    sim = Sim(fake_kernel, state_dir=tmp_path)
    assert sim.engine.originals() == {"a": None, "gone-pod": 5 * MiB}
    sim.engine.set_targets([sim.target("a", high=128 * MiB)])
    assert sim.engine.originals() == {"a": None}   # the key not taken over is dropped
    sim.engine.stop(restore=True)
    assert fake_kernel.tree.high("a") == "max"
    assert sim.engine.originals() == {}


def test_update_memory_high_keeps_original_and_none_restores(sim, fake_kernel):
    fake_kernel.tree.add("a")
    sim.engine.set_targets([sim.target("a")])
    sim.engine.set_targets([sim.target("a", high=128 * MiB)])
    assert fake_kernel.tree.high("a") == str(128 * MiB)
    assert sim.engine.originals() == {"a": None}
    sim.engine.set_targets([sim.target("a", high=None)])
    assert fake_kernel.tree.high("a") == "max"


def test_counters_survive_a_settings_update(sim, fake_kernel):
    fake_kernel.tree.add("a", current=250 * MiB)
    sim.engine.set_targets([sim.target("a")])
    sim.run(0.5)
    before = sim.stats("a").reclaimed_bytes
    assert before > 0
    sim.engine.set_targets([sim.target("a", step_bytes=8 * MiB)])
    assert sim.stats("a").reclaimed_bytes == before


def test_vanished_cgroup_is_dropped_without_error(sim, fake_kernel):
    fake_kernel.tree.add("a", current=10 * MiB)
    fake_kernel.tree.add("b", current=10 * MiB)
    sim.engine.set_targets([sim.target("a"), sim.target("b")])
    assert len(fake_kernel.open_watches()) == 4
    fake_kernel.tree.remove("a")
    sim.run(2.0)
    st = sim.stats("a")
    assert not st.applied and st.reason == "CgroupNotFound" and "memory" in st.last_error
    assert sim.stats("b").applied
    assert {w.rel for w in fake_kernel.open_watches()} == {"b"}
    sim.engine.set_targets([sim.target("b")])  # releasing a vanished one: nothing to restore
    sim.engine.stop(restore=True)
    assert fake_kernel.tree.high("b") == "max"


def test_cgroup_vanishing_during_reclaim(sim, fake_kernel, monkeypatch):
    fake_kernel.tree.add("a", current=250 * MiB)
    sim.engine.set_targets([sim.target("a")])

    def vanish(cg, nbytes, swappiness):
        fake_kernel.tree.remove("a")
        raise engine_mod.CgroupGone(cg.file("memory.reclaim"), "gone")

    monkeypatch.setattr(fake_kernel, "simulate_reclaim", vanish)
    sim.run(0.1)
    assert sim.stats("a").reason == "CgroupNotFound"


def test_missing_cgroup_is_reported_and_retried(sim, fake_kernel):
    sim.engine.set_targets([sim.target("later")])
    assert sim.stats("later").reason == "CgroupNotFound"
    fake_kernel.tree.add("later")
    sim.engine.set_targets([sim.target("later")])
    assert sim.stats("later").reason == "Applied"
    assert fake_kernel.tree.high("later") == str(HIGH)


def test_dry_run_writes_nothing(fake_kernel):
    tree = fake_kernel.tree
    tree.add("a", current=250 * MiB)
    tree.add("b", current=10 * MiB)
    before = tree.contents()
    sim = Sim(fake_kernel, dry_run=True)
    sim.engine.set_targets([sim.target("a"), sim.target("b")])
    sim.run(3.0)
    st = sim.stats("a")
    assert st.reason == "DryRun" and st.dry_run_bytes > 0 and st.reclaimed_bytes == 0
    sim.engine.stop(restore=True)
    assert tree.contents() == before
    assert fake_kernel.reclaim_calls == []
    assert sim.engine.capabilities.swappiness_key is None  # not probed: probing writes


def test_per_target_dry_run(sim, fake_kernel):
    fake_kernel.tree.add("a", current=250 * MiB)
    before = fake_kernel.tree.contents()
    sim.engine.set_targets([sim.target("a", dry_run=True)])
    sim.run(1.0)
    assert fake_kernel.tree.contents() == before


def test_eagain_backs_off_exponentially_and_recovers(sim, fake_kernel):
    fake_kernel.tree.add("anon", current=250 * MiB)
    fake_kernel.floor["anon"] = 250 * MiB  # nothing reclaimable (anon memory, no swap)
    sim.engine.set_targets([sim.target("anon")])
    fake_kernel.reclaim_calls.clear()  # the capability probe
    sim.run(20.0)
    st = sim.stats("anon")
    calls = len(fake_kernel.reclaim_calls)
    # 0.1 + 0.2 + 0.4 + ... capped at 5 s: about 8 attempts in 20 s, never a spin
    assert 3 <= calls <= 12
    assert st.eagain_count == calls and "EAGAIN" in st.last_error
    fake_kernel.floor["anon"] = 0
    sim.run(6.0)
    st = sim.stats("anon")
    # down into the lower half of the band (the episode ends there): 230.4-236.8 MiB
    assert st.last_error is None and fake_kernel.tree.current("anon") <= 236.8 * MiB


def test_partial_reclaim_counts_what_memory_current_says(sim, fake_kernel):
    fake_kernel.tree.add("a", current=250 * MiB)
    fake_kernel.floor["a"] = 245 * MiB
    sim.engine.set_targets([sim.target("a")])
    before = fake_kernel.tree.current("a")
    sim.step(0.0)
    st = sim.stats("a")
    assert st.eagain_count == 1 and st.reclaimed_bytes == before - 245 * MiB


def test_rate_limit_bounds_bytes_per_second(sim, fake_kernel):
    fake_kernel.tree.add("a", current=200 * MiB)
    sim.engine.set_targets([sim.target("a", max_bytes_per_second=32 * MiB)])
    sim.run(5.0, grow={"a": 100 * MiB}, dt=0.02)
    assert sim.stats("a").reclaimed_bytes <= 32 * MiB * 6


def test_cpu_budget_bounds_reclaim_cpu(fake_kernel, monkeypatch):
    cpu = [0.0]

    def expensive(cg, nbytes, swappiness):
        cpu[0] += 0.05  # each write "costs" 50 ms of CPU
        current = fake_kernel.tree.current(cg.rel)
        fake_kernel.tree.write(cg.rel, "memory.current", f"{current - nbytes}\n")

    monkeypatch.setattr(engine_mod.time, "thread_time", lambda: cpu[0])
    monkeypatch.setattr(fake_kernel, "simulate_reclaim", expensive)
    fake_kernel.tree.add("a", current=200 * MiB)
    fake_kernel.tree.add("b", current=200 * MiB)
    sim = Sim(fake_kernel, cpu_budget_cores=0.1)
    sim.engine.set_targets([sim.target("a"), sim.target("b")])
    sim.run(10.0, grow={"a": 400 * MiB, "b": 400 * MiB}, dt=0.02)
    snap = sim.engine.snapshot()
    spent = sum(s.reclaim_cpu_seconds for s in snap.values())
    assert spent <= 0.1 * 10 + 0.1 + 2 * 0.05 + 1e-9
    assert sum(s.budget_deferrals for s in snap.values()) > 0


def test_lateness_is_recorded(sim, fake_kernel):
    fake_kernel.tree.add("a", current=10 * MiB)
    sim.engine.set_targets([sim.target("a")])
    sim.step(0.0)
    due = sim.engine._queue.due_of("a")
    sim.step(due + 0.25)
    assert sim.stats("a").lateness_seconds == pytest.approx(0.25)


@pytest.mark.parametrize("kind", ["psi", "events"])
def test_wakeup_checks_at_once(sim, fake_kernel, kind):
    fake_kernel.tree.add("a", current=10 * MiB)
    sim.engine.set_targets([sim.target("a")])
    sim.step(0.0)  # first check: idle and far below the watermark -> next in ~1 s
    fake_kernel.reclaim_calls.clear()
    fake_kernel.tree.write("a", "memory.current", f"{250 * MiB}\n")
    sim.step(0.05)
    assert fake_kernel.reclaim_calls == []  # the timer alone would not look yet
    if kind == "events":
        fake_kernel.tree.set_events("a", high=3)
    fake_kernel.fire("a", kind)
    sim.step(0.0)
    assert fake_kernel.reclaim_calls, "the wake-up did not trigger a check"
    if kind == "events":
        assert sim.stats("a").high_events == 3


def test_off_mode_only_sets_memory_high(sim, fake_kernel):
    fake_kernel.tree.add("a", current=250 * MiB)
    sim.engine.set_targets([sim.target("a", mode="Off")])
    sim.run(2.0)
    assert fake_kernel.tree.high("a") == str(HIGH)
    assert fake_kernel.reclaim_calls == []
    assert fake_kernel.open_watches() == []


def test_pressure_mode_probes_when_calm_and_backs_off_under_pressure(sim, fake_kernel):
    tree = fake_kernel.tree
    tree.add("p", current=100 * MiB)
    sim.engine.set_targets([sim.target("p", high=None, mode="Pressure",
                                       pressure_target_percent=1.0)])
    fake_kernel.reclaim_calls.clear()
    sim.run(4.5)  # no stall at all: probes of 1% of usage per 2 s sample
    calm = len(fake_kernel.reclaim_calls)
    assert calm >= 1 and tree.current("p") < 100 * MiB
    fake_kernel.reclaim_calls.clear()
    for _ in range(5):  # 10% stall: far above the 1% target
        tree.set_pressure("p", tree.some_us("p") + 200_000)
        sim.run(2.0)
    assert fake_kernel.reclaim_calls == []


def test_pressure_mode_samples_once_per_period(sim, fake_kernel):
    """A calm cgroup is probed at every sample: the next check never comes before the
    period has passed (a check just short of it would skip a whole period)."""
    fake_kernel.tree.add("p", current=1000 * MiB)
    sim.engine.set_targets([sim.target("p", high=None, mode="Pressure",
                                       pressure_target_percent=1.0)])
    fake_kernel.reclaim_calls.clear()
    period = sim.engine.tuning.pressure_interval
    sim.run(10 * period + period / 4)
    assert len(fake_kernel.reclaim_calls) >= 10


def test_swappiness_passed_when_supported(sim, fake_kernel):
    fake_kernel.tree.add("a", current=250 * MiB)
    sim.engine.set_targets([sim.target("a", swappiness=10)])
    sim.step(0.0)
    assert sim.engine.capabilities.swappiness_key is True
    assert fake_kernel.reclaim_calls[-1][2] == 10


def test_swappiness_dropped_when_kernel_rejects_it(sim, fake_kernel):
    fake_kernel.swappiness_supported = False
    fake_kernel.tree.add("a", current=250 * MiB)
    sim.engine.set_targets([sim.target("a", swappiness=10)])
    sim.run(0.2)
    assert sim.engine.capabilities.swappiness_key is False
    assert sim.stats("a").reclaimed_bytes > 0
    assert fake_kernel.reclaim_calls[-1][2] is None


def test_limit_from_memory_max_when_memory_high_not_given(sim, fake_kernel):
    fake_kernel.tree.add("a", current=250 * MiB, max=HIGH)
    before = fake_kernel.tree.high("a")
    sim.engine.set_targets([sim.target("a", high=None)])
    sim.run(0.5)
    assert fake_kernel.tree.high("a") == before
    assert fake_kernel.tree.current("a") <= int(HIGH * 0.925) + 4096   # the band's lower half


def test_memory_high_drift_is_put_back(sim, fake_kernel):
    fake_kernel.tree.add("a", current=10 * MiB)
    sim.engine.set_targets([sim.target("a")])
    fake_kernel.tree.write("a", "memory.high", "max\n")
    sim.run(6.0)
    assert fake_kernel.tree.high("a") == str(HIGH)
    assert sim.stats("a").drift_corrections == 1


def test_invalid_settings_rejected(sim, fake_kernel):
    fake_kernel.tree.add("a")
    with pytest.raises(ValueError, match="target_percent"):
        sim.engine.set_targets([sim.target("a", headroom_percent=10, target_percent=5)])
    assert fake_kernel.tree.high("a") == "max"


# ---- lowering memory.high below usage: background reclaim first, never in the caller ----

DEADLINE = engine_mod.Tuning().lowering_deadline
START = int(HIGH * 0.95)   # the watermark start of HIGH with the default 5% headroom


@pytest.fixture
def high_writes(monkeypatch):
    """Every memory.high write: (cgroup rel, value, memory.current then, thread name)."""
    writes = []
    real = Cgroup.write_high

    def recording(cg, value):
        writes.append((cg.rel, value, cg.read_current(), threading.current_thread().name))
        real(cg, value)

    monkeypatch.setattr(Cgroup, "write_high", recording)
    return writes


def test_lowering_below_usage_waits_for_background_reclaim(sim, fake_kernel, high_writes):
    fake_kernel.tree.add("web", current=300 * MiB)   # memory.high "max"
    sim.engine.set_targets([sim.target("web")])
    # set_targets neither wrote memory.high nor reclaimed (beyond the one-page probe)
    assert fake_kernel.tree.high("web") == "max" and high_writes == []
    assert [n for _, n, _ in fake_kernel.reclaim_calls] == [PAGE]
    st = sim.stats("web")
    assert (st.applied, st.reason, st.memory_high) == (False, "Lowering", HIGH)
    assert sim.engine.originals() == {"web": None}
    sim.run(1.0)
    assert [(rel, value) for rel, value, _, _ in high_writes] == [("web", HIGH)]
    assert high_writes[0][2] < START, "memory.high written while usage was above its watermark"
    st = sim.stats("web")
    assert (st.applied, st.reason) == (True, "Applied")
    assert all(n <= 16 * MiB for _, n, _ in fake_kernel.reclaim_calls)
    assert st.reclaimed_bytes >= 300 * MiB - START
    assert fake_kernel.tree.current("web") <= int(HIGH * 0.925) + PAGE   # the lower half


def test_lowering_is_written_at_the_deadline_when_reclaim_cannot_get_there(
        sim, fake_kernel, high_writes):
    fake_kernel.tree.add("anon", current=300 * MiB)
    fake_kernel.floor["anon"] = 300 * MiB   # nothing reclaimable
    sim.engine.set_targets([sim.target("anon")])
    sim.run(DEADLINE - 0.5)
    st = sim.stats("anon")
    assert fake_kernel.tree.high("anon") == "max" and high_writes == []
    assert st.reason == "Lowering" and st.eagain_count > 0
    # the EAGAIN back-off would next look at ~11.3 s; the deadline is kept anyway
    sim.run(0.6)
    assert [(rel, value) for rel, value, _, _ in high_writes] == [("anon", HIGH)]
    st = sim.stats("anon")
    assert (st.applied, st.reason) == (True, "Applied")
    sim.run(6.0)   # and it stays written: no drift, no second write
    assert len(high_writes) == 1 and sim.stats("anon").drift_corrections == 0


def test_update_while_lowering_keeps_the_deadline(sim, fake_kernel, high_writes):
    fake_kernel.tree.add("anon", current=300 * MiB)
    fake_kernel.floor["anon"] = 300 * MiB
    sim.engine.set_targets([sim.target("anon")])
    sim.run(DEADLINE / 2)
    sim.engine.set_targets([sim.target("anon", high=200 * MiB)])
    assert sim.stats("anon").reason == "Lowering"
    sim.run(DEADLINE / 2 + 0.1)
    assert [(rel, value) for rel, value, _, _ in high_writes] == [("anon", 200 * MiB)]


def test_raising_memory_high_is_written_at_once(sim, fake_kernel):
    fake_kernel.tree.add("a", current=300 * MiB, high=200 * MiB)
    sim.engine.set_targets([sim.target("a")])
    assert fake_kernel.tree.high("a") == str(HIGH)
    assert sim.stats("a").reason == "Applied"


def test_target_removed_while_lowering_is_left_as_found(sim, fake_kernel, high_writes):
    fake_kernel.tree.add("a", current=300 * MiB)
    fake_kernel.floor["a"] = 300 * MiB
    sim.engine.set_targets([sim.target("a")])
    sim.run(1.0)
    sim.engine.set_targets([])
    sim.run(DEADLINE)
    assert fake_kernel.tree.high("a") == "max" and high_writes == []


def test_off_mode_reclaims_only_what_lowering_needs(sim, fake_kernel, high_writes):
    fake_kernel.tree.add("a", current=300 * MiB)
    sim.engine.set_targets([sim.target("a", mode="Off")])
    assert fake_kernel.tree.high("a") == "max" and sim.stats("a").reason == "Lowering"
    sim.run(2.0)
    assert [(rel, value) for rel, value, _, _ in high_writes] == [("a", HIGH)]
    assert high_writes[0][2] < HIGH
    # no watermark episode in Off mode: at most one step below memory.high
    assert HIGH - 16 * MiB <= fake_kernel.tree.current("a") < HIGH
    calls = len(fake_kernel.reclaim_calls)
    sim.run(3.0)
    assert len(fake_kernel.reclaim_calls) == calls


def test_without_memory_reclaim_the_lowering_is_written_by_the_engine(
        sim, fake_kernel, high_writes):
    fake_kernel.tree.add("old", current=300 * MiB, reclaim_file=False)   # kernel < 5.19
    sim.engine.set_targets([sim.target("old")])
    assert sim.engine.capabilities.memory_reclaim is False
    assert fake_kernel.tree.high("old") == "max" and sim.stats("old").reason == "Lowering"
    sim.step(0.0)   # at once, but by the engine (a worker when it has them), not set_targets
    assert fake_kernel.tree.high("old") == str(HIGH)
    assert sim.stats("old").reason == "Applied"
    assert fake_kernel.reclaim_calls == []


def test_without_memory_reclaim_memory_high_is_kept_and_restored(sim, fake_kernel):
    """Kernels < 5.19: memory.high only; no reclaim write (ENOENT) makes it look gone."""
    fake_kernel.tree.add("old", current=200 * MiB, reclaim_file=False)
    sim.engine.set_targets([sim.target("old")])
    sim.run(2.0, grow={"old": 100 * MiB})
    st = sim.stats("old")
    assert (st.applied, st.reason, st.reclaim_writes) == (True, "Applied", 0)
    assert fake_kernel.tree.high("old") == str(HIGH)
    sim.engine.stop(restore=True)
    assert fake_kernel.tree.high("old") == "max"


def test_drift_above_usage_is_put_back_by_lowering(sim, fake_kernel, high_writes):
    fake_kernel.tree.add("a", current=100 * MiB)
    sim.engine.set_targets([sim.target("a")])
    high_writes.clear()
    # someone raises memory.high, and usage follows into unreclaimable memory
    fake_kernel.tree.write("a", "memory.high", "max\n")
    fake_kernel.tree.write("a", "memory.current", f"{300 * MiB}\n")
    fake_kernel.floor["a"] = 300 * MiB
    sim.run(6.0)   # the drift check (every 5 s) found it
    st = sim.stats("a")
    assert st.drift_corrections == 1 and st.reason == "Lowering"
    assert fake_kernel.tree.high("a") == "max" and high_writes == []
    fake_kernel.floor["a"] = 0   # reclaimable again: the next attempts get it down
    sim.run(6.0)
    assert [(rel, value) for rel, value, _, _ in high_writes] == [("a", HIGH)]
    assert high_writes[0][2] < START
    assert sim.stats("a").reason == "Applied"


def test_threaded_lowering_is_never_written_by_the_caller(fake_kernel, high_writes):
    """Real threads and clock; asserts outcomes only, never timings."""
    fake_kernel.tree.add("web", current=300 * MiB)
    eng = ReclaimEngine(fake_kernel, cpu_budget_cores=1.0, workers=2)
    eng.start()
    try:
        eng.set_targets([Target("web", fake_kernel.tree.path("web"), HIGH)])
        deadline = time.monotonic() + 60
        while eng.snapshot()["web"].reason != "Applied" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert eng.snapshot()["web"].reason == "Applied"
    finally:
        eng.stop(restore=False)
    assert [(rel, value) for rel, value, _, _ in high_writes] == [("web", HIGH)]
    _, _, usage, thread = high_writes[0]
    assert usage < START and thread != threading.current_thread().name


def test_threaded_engine_reclaims_and_restores(fake_kernel):
    """Real threads and clock; asserts outcomes only, never timings."""
    fake_kernel.tree.add("web", current=200 * MiB)
    eng = ReclaimEngine(fake_kernel, cpu_budget_cores=1.0, workers=2)
    eng.set_targets([Target("web", fake_kernel.tree.path("web"), HIGH)])
    eng.start()
    stop = threading.Event()

    def workload():
        while not stop.is_set():
            fake_kernel.grow("web", 1 * MiB)
            time.sleep(0.002)

    t = threading.Thread(target=workload)
    t.start()
    try:
        deadline = time.monotonic() + 30
        while eng.snapshot()["web"].reclaimed_bytes == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        t.join()
        eng.stop(restore=True)
    assert eng.snapshot() == {}
    assert fake_kernel.tree.high("web") == "max"
    assert fake_kernel.reclaim_calls
    assert fake_kernel.open_watches() == []


def _open_fds() -> int:
    import os
    return len(os.listdir("/proc/self/fd"))


def test_released_and_vanished_targets_close_their_kept_open_files(cgroup_tree):
    """Kept-open files (memory.current, .high, .events, .pressure) are closed when a
    target is released or its cgroup vanishes, not when the collector gets to them:
    at 500 pods a node's fd limit is near, and pods come and go."""
    import gc

    from headroom.cgroup import CgroupRoot
    gc.disable()   # what the collector would do is exactly what must not be needed
    try:
        paths = [cgroup_tree.add(f"cg{i}", current=10 * MiB) for i in range(20)]
        now = [0.0]
        engine = ReclaimEngine(CgroupRoot(cgroup_tree.root, allow_fake=True), workers=0,
                               clock=lambda: now[0], cpu_budget_cores=None)
        base = _open_fds()
        engine.set_targets([Target(key=p.name, path=p, memory_high=HIGH,
                                   settings=ReclaimSettings()) for p in paths])
        for _ in range(3):
            now[0] += 1.0
            engine.tick(now[0])
        held = _open_fds() - base
        assert held >= 2 * len(paths)      # memory.current and memory.high at least
        cgroup_tree.remove("cg0")
        now[0] += 1.0
        engine.tick(now[0])
        assert not engine.snapshot()["cg0"].applied
        assert _open_fds() - base <= held - 2
        engine.set_targets([])
        assert _open_fds() == base
        engine.stop(restore=True)
    finally:
        gc.enable()
