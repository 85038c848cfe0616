"""Livelock guard on a real kernel (issue 9 item 2), one boot, kernel alone vs headroom.

No swap; one process allocates and touches 224 MiB of anonymous memory in a cgroup with
memory.high 128 MiB and memory.max 320 MiB. The kernel alone throttles it at memory.high
(its `high` events keep rising, the allocation does not complete). With the engine's
guard the allocation completes, then the process frees its memory and the plan's
memory.high is back. Asserts compare counters within this boot, never durations. The
timeline of both runs (usage, memory.high, high events per second) is printed as one
JSON line each, for docs/benchmarks.md.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from headroom.cgroup import CgroupRoot
from headroom.engine import ReclaimEngine, ReclaimSettings, Target

MiB = 1 << 20
PLAN, MAX, SIZE = 128 * MiB, 320 * MiB, 224 * MiB
SAMPLE = 0.25


def _read(cg: Path, name: str) -> str:
    return (cg / name).read_text()


def _high_events(cg: Path) -> int:
    return int(dict(ln.split() for ln in _read(cg, "memory.events").splitlines())["high"])


def _stall_us(cg: Path) -> tuple[int, int]:
    """memory.pressure (some, full) totals."""
    out = {}
    for ln in _read(cg, "memory.pressure").splitlines():
        kind, *fields = ln.split()
        out[kind] = int(dict(f.split("=") for f in fields)["total"])
    return out["some"], out.get("full", 0)


def _limit(cg: Path) -> int:
    text = _read(cg, "memory.high").strip()
    return -1 if text == "max" else int(text)


def _prepare(make_cgroup, name: str) -> Path:
    cg = make_cgroup(name)
    (cg / "memory.swap.max").write_text("0\n")   # no swap, whatever the guest has
    (cg / "memory.max").write_text(f"{MAX}\n")
    return cg


def _run(cg: Path, workloads_dir: Path, ready: Path, seconds: float,
         stop_when_done: bool) -> tuple[list[dict], bool, subprocess.Popen]:
    """Start the allocation, sample for up to `seconds`; (timeline, completed, proc)."""
    proc = subprocess.Popen([sys.executable, workloads_dir / "anon_alloc.py", "--size",
                             f"{SIZE // MiB}M", "--hot", "1M", "--rounds", "1",
                             "--ready-file", ready, "--hold", "3", "--cgroup", cg],
                            stdout=subprocess.DEVNULL)
    t0, prev_events, prev_t = time.monotonic(), _high_events(cg), 0.0
    timeline: list[dict] = []
    while (t := time.monotonic() - t0) < seconds:
        events = _high_events(cg)
        timeline.append({"t": round(t, 2), "usage_mib": int(_read(cg, "memory.current")) // MiB,
                         "high_mib": _limit(cg) // MiB if _limit(cg) >= 0 else "max",
                         "high_events_per_s": round((events - prev_events) / max(t - prev_t,
                                                                                 1e-3))})
        prev_events, prev_t = events, t
        if stop_when_done and ready.exists():
            break
        time.sleep(SAMPLE)
    return timeline, ready.exists(), proc


def test_guard_lets_an_unreclaimable_allocation_complete(make_cgroup, scratch_dir: Path,
                                                        workloads_dir: Path) -> None:
    kernel = platform.release()
    # --- with headroom first: its completion time sets the kernel-alone window ---------
    cg = _prepare(make_cgroup, "guard")
    eng = ReclaimEngine(CgroupRoot(cg.parent), cpu_budget_cores=0.5)
    eng.start()
    try:
        eng.set_targets([Target("anon", cg, PLAN, ReclaimSettings())])
        assert _limit(cg) == PLAN
        events0, stall0 = _high_events(cg), _stall_us(cg)
        timeline, done, proc = _run(cg, workloads_dir, scratch_dir / "ready-guard", 180.0,
                                    stop_when_done=True)
        guard_seconds = timeline[-1]["t"]
        during = eng.snapshot()["anon"]
        highest = max(s["high_mib"] for s in timeline)
        guard_events = _high_events(cg) - events0
        guard_stall = [(b - a) / 1e6 for a, b in zip(stall0, _stall_us(cg), strict=True)]
        proc.wait(timeout=120)             # --hold 3, then it exits and frees its memory
        deadline = time.monotonic() + 120
        while _limit(cg) != PLAN and time.monotonic() < deadline:
            time.sleep(0.25)
        back = _limit(cg)
        after = eng.snapshot()["anon"]
    finally:
        eng.stop(restore=True)
    print("LIVELOCK_TIMELINE " + json.dumps({"kernel": kernel, "arm": "headroom",
                                             "completed": done, "timeline": timeline,
                                             "high_events": guard_events,
                                             "psi_some_full_s": guard_stall}))
    # --- the kernel alone, same cgroup settings, a window three times as long ----------
    cg2 = _prepare(make_cgroup, "alone")
    (cg2 / "memory.high").write_text(f"{PLAN}\n")
    window = max(30.0, 3 * guard_seconds)
    events0, stall0 = _high_events(cg2), _stall_us(cg2)
    k_timeline, k_done, k_proc = _run(cg2, workloads_dir, scratch_dir / "ready-alone",
                                      window, stop_when_done=False)
    k_events = _high_events(cg2) - events0
    k_stall = [(b - a) / 1e6 for a, b in zip(stall0, _stall_us(cg2), strict=True)]
    k_proc.kill()
    k_proc.wait()
    print("LIVELOCK_TIMELINE " + json.dumps({"kernel": kernel, "arm": "kernel alone",
                                             "completed": k_done, "timeline": k_timeline,
                                             "high_events": k_events,
                                             "psi_some_full_s": k_stall}))
    k_usage = k_timeline[-1]["usage_mib"]
    summary = (f"{kernel}: headroom completed={done} in {guard_seconds:.1f}s, high events "
               f"{guard_events}, PSI some/full {guard_stall[0]:.1f}/{guard_stall[1]:.1f}s, "
               f"raises {during.relief_raises}, highest memory.high {highest} MiB, back to "
               f"{back // MiB} MiB; kernel alone completed={k_done} in {window:.0f}s (usage "
               f"{k_usage} MiB), high events {k_events}, PSI some/full "
               f"{k_stall[0]:.1f}/{k_stall[1]:.1f}s")
    print(summary)
    # the kernel alone: throttled at memory.high, its allocation not done in three times
    # the time headroom needed, its high events still rising in the last third
    assert not k_done and k_usage < SIZE // MiB, summary
    last_third = k_timeline[2 * len(k_timeline) // 3:]
    assert sum(s["high_events_per_s"] for s in last_third) > 0, summary
    # headroom: the allocation completed, memory.high never above memory.max, reported;
    # far fewer high events and less stall than the kernel alone
    assert done, summary
    assert during.relief_raises >= 1 and during.reason == "Unreclaimable", summary
    assert highest <= MAX // MiB, summary
    # Throttling is measured by the stall (PSI); the high events only have to be fewer:
    # how many the guard's few raises take depends on the machine's speed (measured
    # 25 against 255 on 6.1, with 0.1 s against 24 s of stall)
    assert guard_events < k_events, summary
    assert guard_stall[0] < k_stall[0] / 4, summary
    # then usage fell and the plan's value is back, through the ordinary path
    assert back == PLAN, summary
    assert after.reason == "Applied" and after.relieved_high is None, summary
