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

import itertools
import json
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import guest_support
from headroom.cgroup import CgroupRoot
from headroom.engine import ReclaimEngine, ReclaimSettings, Target

MiB = 1 << 20
PLAN, MAX, SIZE = 128 * MiB, 320 * MiB, 224 * MiB
SAMPLE = 0.25
_attempts = itertools.count()


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


def _measure(make_cgroup, scratch_dir: Path, workloads_dir: Path) -> dict[str, Any]:
    """Both arms, headroom first (its completion time sets the kernel-alone window)."""
    kernel, attempt = platform.release(), next(_attempts)
    cg = _prepare(make_cgroup, f"guard{attempt}")
    eng = ReclaimEngine(CgroupRoot(cg.parent), cpu_budget_cores=0.5)
    eng.start()
    try:
        eng.set_targets([Target("anon", cg, PLAN, ReclaimSettings())])
        assert _limit(cg) == PLAN
        events0, stall0 = _high_events(cg), _stall_us(cg)
        timeline, done, proc = _run(cg, workloads_dir, scratch_dir / f"ready-guard{attempt}",
                                    180.0, stop_when_done=True)
        guard_seconds = timeline[-1]["t"]
        during = eng.snapshot()["anon"]
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
    cg2 = _prepare(make_cgroup, f"alone{attempt}")
    (cg2 / "memory.high").write_text(f"{PLAN}\n")
    window = max(30.0, 3 * guard_seconds)
    events0, stall0 = _high_events(cg2), _stall_us(cg2)
    k_timeline, k_done, k_proc = _run(cg2, workloads_dir, scratch_dir / f"ready-alone{attempt}",
                                      window, stop_when_done=False)
    k_events = _high_events(cg2) - events0
    k_stall = [(b - a) / 1e6 for a, b in zip(stall0, _stall_us(cg2), strict=True)]
    k_proc.kill()
    k_proc.wait()
    print("LIVELOCK_TIMELINE " + json.dumps({"kernel": kernel, "arm": "kernel alone",
                                             "completed": k_done, "timeline": k_timeline,
                                             "high_events": k_events,
                                             "psi_some_full_s": k_stall}))
    m = {"done": done, "guard_seconds": guard_seconds, "guard_events": guard_events,
         "guard_stall": guard_stall, "highest": max(s["high_mib"] for s in timeline),
         "back": back, "during": during, "after": after, "k_done": k_done,
         "window": window, "k_usage": k_timeline[-1]["usage_mib"], "k_events": k_events,
         "k_stall": k_stall, "k_last_third": k_timeline[2 * len(k_timeline) // 3:]}
    m["summary"] = (
        f"{kernel}: headroom completed={done} in {guard_seconds:.1f}s, high events "
        f"{guard_events}, PSI some/full {guard_stall[0]:.1f}/{guard_stall[1]:.1f}s, "
        f"raises {during.relief_raises}, highest memory.high {m['highest']} MiB, back to "
        f"{back // MiB} MiB; kernel alone completed={k_done} in {window:.0f}s (usage "
        f"{m['k_usage']} MiB), high events {k_events}, PSI some/full "
        f"{k_stall[0]:.1f}/{k_stall[1]:.1f}s")
    print(m["summary"])
    return m


def _misses(m: dict[str, Any]) -> list[str]:
    """The bounds that depend on the guest's speed."""
    bounds = {
        # the kernel alone: throttled at memory.high, its allocation not done in three
        # times the time headroom needed, its high events still rising in the last third
        "kernel alone throttled": not m["k_done"] and m["k_usage"] < SIZE // MiB
        and sum(s["high_events_per_s"] for s in m["k_last_third"]) > 0,
        "allocation completed": m["done"],
        # Throttling is measured by the stall (PSI); the high events only have to be
        # fewer: how many the guard's few raises take depends on the machine's speed
        # (measured 25 against 255 on 6.1, with 0.1 s against 24 s of stall)
        "fewer high events": m["guard_events"] < m["k_events"],
        "stall under a quarter": m["guard_stall"][0] < m["k_stall"][0] / 4,
        "plan's value back": m["back"] == PLAN,
    }
    return [name for name, ok in bounds.items() if not ok]


def test_guard_lets_an_unreclaimable_allocation_complete(make_cgroup, scratch_dir: Path,
                                                        workloads_dir: Path) -> None:
    m, missed, _ = guest_support.measured_twice(
        lambda: _measure(make_cgroup, scratch_dir, workloads_dir), _misses)
    summary = m["summary"]
    assert not missed, f"{', '.join(missed)}: missed in both runs\n{summary}"
    # headroom reported it, never above memory.max, and left through the ordinary path
    during, after = m["during"], m["after"]
    assert during.relief_raises >= 1 and during.reason == "Unreclaimable", summary
    assert m["highest"] <= MAX // MiB, summary
    assert after.reason == "Applied" and after.relieved_high is None, summary
