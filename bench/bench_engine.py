"""Benchmark of the reclaim engine on real kernels, in the QEMU test guest (one boot per
kernel); prints Markdown tables. Not a test.

    .venv/bin/python bench/bench_engine.py                    # 6.1 and 6.12, 5 repetitions
    .venv/bin/python bench/bench_engine.py --kernels 6.12 --reps 3 --counts 10,100

(a) **Page cache at memory.high**, three arms in one guest, `--reps` times in rotating
    order, medians: the kernel alone; headroom's engine; a naive reclaimer that looks
    at every cgroup once per second and writes memory.reclaim for the whole excess
    above the same target (bench/naive_reclaimer.py). Each arm is one run of
    bench/pagecache_compare.py's run_arm() (a fresh cgroup, caches dropped, a sparse
    file streamed through it, PSI / memory.events / memory.peak / per-read latency,
    file refaults).
(a') **A hot set beside the stream**: the same three arms, with a second process in
    the cgroup re-reading a hot file of `--hot-mib` (default 80 MiB, 62% of memory.high)
    while 5 x memory.high are streamed once: file refaults (workingset_refault_file)
    and the hot set's passes per second, medians.
(b) **Idle overhead**: N real cgroups managed by one engine (memory.high 64 MiB, none
    near its watermark); the engine's CPU (this process's CPU less its sleeping main
    thread) over `--idle-seconds`, at N = `--counts`.
(c) **Watermark to first reclaim write**, with the same N cgroups: a forked worker in
    one cgroup at a time, idle at 50% of memory.high (64 MiB), reads 36 MiB of a sparse
    file in 64 KiB chunks as fast as it can (past memory.high if nothing reclaimed),
    recording CLOCK_MONOTONIC and memory.peak after each chunk. The engine runs over a
    CgroupRoot whose Cgroup.reclaim() records CLOCK_MONOTONIC just before each
    memory.reclaim write. Reported per trial: first write after the burst began; when
    usage reached the 95% watermark (if it did) and the first write after that
    crossing; memory.events `high` during the trial. `--trials`
    cgroups per N, one trial each.

Guest time under TCG is emulated and slow (CPU-bound work is roughly 10-50x slower than
native, more when the host is busy): compare arms within one run, not with other
machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

CHECKOUT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(CHECKOUT / "tests" / "vm"))
sys.path.insert(0, str(CHECKOUT / "bench"))
import guest_support  # noqa: E402
import pagecache_compare as pc  # noqa: E402

MiB = 1 << 20
ARMS = ("kernel", "engine", "naive")
CHUNK = 64 << 10
SCALE_HIGH = 64 * MiB
MAX_DELAY = 30.0   # s: a burst without a reclaim write by then counts as missed
BURST = 36 * MiB   # from 50% of memory.high: past memory.high if nothing reclaims


# ---------------------------------------------------------------- (a) page cache arms

def _reclaimer(arm: str, root: Any, cpu_budget: float | None) -> Any:
    from headroom.engine import ReclaimEngine
    from naive_reclaimer import NaiveReclaimer

    if arm == "engine":
        return ReclaimEngine(root, cpu_budget_cores=cpu_budget)
    return NaiveReclaimer(root) if arm == "naive" else None


def _arm_summary(r: Any) -> dict[str, float]:
    eng = r.engine or {}
    return {"psi_some_s": r.psi_some_us / 1e6, "psi_full_s": r.psi_full_us / 1e6,
            "high_events": r.high_events, "p50_ms": r.latency_us["p50"] / 1000,
            "p99_ms": r.latency_us["p99"] / 1000, "peak_mib": r.peak_bytes / MiB,
            "high_mib": r.memory_high / MiB, "reclaimed_mib": eng.get("reclaimed_bytes", 0) / MiB,
            "reclaim_cpu_s": eng.get("reclaim_cpu_s", 0.0),
            "reclaimer_cpu_s": eng.get("engine_cpu_s", 0.0), "duration_s": r.duration_s,
            "refault_file": r.refault_file, "hot_passes": r.hot_passes,
            "hot_passes_per_s": r.hot_passes_per_s}


def pagecache_arms(opts: pc.Options, reps: int) -> dict[str, list[dict[str, float]]]:
    from headroom.cgroup import CgroupRoot

    root = CgroupRoot(opts.cgroup_root)
    guest_support.require_cgroup2(root.path)
    pc.prepare_file(opts.file, opts.file_mib, opts.sparse)
    if opts.hot_mib:
        pc.prepare_file(opts.hot_file, opts.hot_mib, opts.sparse)
    runs: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    for rep in range(reps):
        for arm in ARMS[rep % 3:] + ARMS[:rep % 3]:   # rotate: no arm always runs first
            pc.progress(f"repetition {rep + 1}/{reps}, arm {arm}")
            reclaimer = _reclaimer(arm, root, opts.cpu_budget_cores)
            if reclaimer is not None:
                reclaimer.start()
            try:
                runs[arm].append(_arm_summary(pc.run_arm(arm, opts, root, reclaimer)))
            finally:
                if reclaimer is not None:
                    reclaimer.stop(restore=True)
    return runs


# ---------------------------------------------------------------- (b), (c) at N cgroups

def _timed_root(path: Path, writes: list[tuple[Path, float]]) -> Any:
    """A CgroupRoot whose cgroups record (path, CLOCK_MONOTONIC) before every
    memory.reclaim write: the engine's own first write, timed where it happens."""
    from headroom.cgroup import Cgroup, CgroupRoot

    class TimedCgroup(Cgroup):
        def reclaim(self, nbytes: int, swappiness: int | None = None) -> None:
            writes.append((self.path, time.monotonic()))
            super().reclaim(nbytes, swappiness)

    class TimedRoot(CgroupRoot):
        def _make(self, p: Path) -> Cgroup:
            return TimedCgroup(self, p)

    return TimedRoot(path)


class Worker:
    """A forked child inside one cgroup, reading its own region of a sparse file on
    command. Forked while this process has one thread (before the engine starts)."""

    _open: ClassVar[set[int]] = set()   # parent-side pipe ends of live workers

    def __init__(self, cg: Path, file: Path, offset: int) -> None:
        assert threading.active_count() == 1, "fork only while single-threaded"
        cmd_r, cmd_w = os.pipe()
        res_r, res_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns
            # other workers' pipe ends: held open here, their children would never see EOF
            for fd in (cmd_w, res_r, *Worker._open):
                os.close(fd)
            code = 0
            try:
                _worker_loop(cg, file, offset, os.fdopen(cmd_r), os.fdopen(res_w, "w"))
            except BaseException:
                traceback.print_exc()
                code = 1
            os._exit(code)
        os.close(cmd_r)
        os.close(res_w)
        Worker._open |= {cmd_w, res_r}
        self.cmd, self.res = os.fdopen(cmd_w, "w"), os.fdopen(res_r)

    def call(self, op: str, arg: int) -> Any:
        self.cmd.write(json.dumps([op, arg]) + "\n")
        self.cmd.flush()
        line = self.res.readline()
        if not line:
            raise RuntimeError(f"worker {self.pid} died")
        return json.loads(line)

    def close(self) -> None:
        Worker._open -= {self.cmd.fileno(), self.res.fileno()}
        self.cmd.close()
        os.waitpid(self.pid, 0)
        self.res.close()


def _worker_loop(cg_path: Path, file: Path, offset: int, cmd: Any, res: Any) -> None:
    from headroom.cgroup import CgroupRoot

    guest_support.join_cgroup(cg_path)
    cg = CgroupRoot(cg_path.parent).cgroup(cg_path)
    fd = os.open(file, os.O_RDONLY)
    buf, pos = bytearray(CHUNK), offset
    for line in cmd:
        op, arg = json.loads(line)
        if op == "fill":       # charge `arg` bytes of page cache, then idle
            while pos - offset < arg:
                pos += os.preadv(fd, [buf], pos)
            reply: Any = None
        else:
            # "burst": read `arg` bytes as fast as possible; memory.peak after each chunk
            # (peak, not current: the engine may reclaim between two looks)
            t_begin, samples, end = time.monotonic(), [], pos + arg
            while pos < end:
                pos += os.preadv(fd, [buf], pos)
                samples.append((time.monotonic(), int(cg.file("memory.peak").read_text())))
            reply = {"t_begin": t_begin, "samples": samples}
        res.write(json.dumps(reply) + "\n")
        res.flush()


def _high_events(cg: Path) -> int:
    return int(dict(line.split() for line in (cg / "memory.events").read_text().splitlines())
               ["high"])


def _process_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def scale_run(cgroup_root: Path, n: int, trials: int, idle_seconds: float,
              scratch: Path) -> dict[str, Any]:
    from headroom.engine import ReclaimEngine, ReclaimSettings, Target
    from headroom.engine.decisions import watermark_levels

    guest_support.require_cgroup2(cgroup_root)
    parent = cgroup_root / "hr-bench-scale"
    guest_support.remove_cgroup(parent)
    guest_support.create_cgroup(cgroup_root, parent.name)
    (parent / "cgroup.subtree_control").write_text("+memory")
    cgs = [guest_support.create_cgroup(parent, f"cg{i:03d}") for i in range(n)]
    k = min(trials, n)
    file = scratch / "bench-scale.dat"
    with open(file, "wb") as fh:
        fh.truncate(k * 2 * SCALE_HIGH)     # sparse: page cache without disk I/O
    workers = [Worker(cgs[i], file, i * 2 * SCALE_HIGH) for i in range(k)]
    settings = ReclaimSettings()
    start, _ = watermark_levels(SCALE_HIGH, settings.headroom_percent, settings.target_percent)
    writes: list[tuple[Path, float]] = []
    engine = None
    try:
        for w in workers:
            w.call("fill", SCALE_HIGH // 2)
        engine = ReclaimEngine(_timed_root(cgroup_root, writes))
        engine.start()
        t0 = time.monotonic()
        engine.set_targets([Target(key=cg.name, path=cg, memory_high=SCALE_HIGH,
                                   settings=settings) for cg in cgs])
        takeover_s = time.monotonic() - t0
        time.sleep(3)                        # first checks, capability probe, watches
        pc.progress(f"{n} cgroups managed (takeover {takeover_s:.2f} s); idle "
                    f"{idle_seconds:.0f} s")
        cpu0, main0, w0 = _process_cpu(), time.thread_time(), time.monotonic()
        time.sleep(idle_seconds)
        idle_cpu = (_process_cpu() - cpu0) - (time.thread_time() - main0)
        wall = time.monotonic() - w0
        trials = []
        for i, w in enumerate(workers):
            events0 = _high_events(cgs[i])
            burst = w.call("burst", BURST)
            t_begin = burst["t_begin"]
            first, deadline = None, time.monotonic() + MAX_DELAY
            while first is None and time.monotonic() < deadline:
                first = min((t for p, t in list(writes) if p == cgs[i] and t >= t_begin),
                            default=None)
                time.sleep(0.05)
            samples = burst["samples"]
            cross = next((t for t, peak in samples if peak >= start), None)
            trials.append({"first_write": None if first is None else first - t_begin,
                           "crossing": None if cross is None else cross - t_begin,
                           "burst_s": samples[-1][0] - t_begin,
                           "high_events": _high_events(cgs[i]) - events0})
            time.sleep(0.5)                  # the episode ends; the next cgroup is quiet
        delays = [t["first_write"] for t in trials if t["first_write"] is not None]
        pc.progress(f"{n} cgroups: idle CPU {idle_cpu / wall * 1000:.1f} ms/s, burst start "
                    f"to first write median {_median(delays) * 1000:.0f} ms, max "
                    f"{max(delays, default=0) * 1000:.0f} ms; {trials}")
        return {"cgroups": n, "takeover_s": takeover_s, "idle_cpu_s": idle_cpu,
                "idle_wall_s": wall, "static_start": start, "trials": trials}
    finally:
        if engine is not None:
            engine.stop(restore=True)
        for w in workers:
            w.close()
        guest_support.remove_cgroup(parent)
        file.unlink()


BETWEEN_HIGH = 4 * MiB   # (b2): 500 x 3.7 MiB of page cache fits the 3 GiB guest


def between_run(cgroup_root: Path, n: int, idle_seconds: float, scratch: Path) -> dict[str, Any]:
    """(b2) in the guest: N cgroups whose page cache sits between target and watermark
    (charged by a forked child that joins each in turn and reads its region of a sparse
    file, then leaves), idle; the engine's CPU and its checks per cgroup per second."""
    from headroom.cgroup import CgroupRoot
    from headroom.engine import ReclaimEngine, ReclaimSettings, Target

    guest_support.require_cgroup2(cgroup_root)
    parent = cgroup_root / "hr-bench-between"
    guest_support.remove_cgroup(parent)
    guest_support.create_cgroup(cgroup_root, parent.name)
    (parent / "cgroup.subtree_control").write_text("+memory")
    cgs = [guest_support.create_cgroup(parent, f"cg{i:03d}") for i in range(n)]
    level = between_level(BETWEEN_HIGH)
    file = scratch / "bench-between.dat"
    with open(file, "wb") as fh:
        fh.truncate(n * BETWEEN_HIGH)
    assert threading.active_count() == 1, "fork only while single-threaded"
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fd, buf = os.open(file, os.O_RDONLY), bytearray(CHUNK)
            for i, cg in enumerate(cgs):
                guest_support.join_cgroup(cg)
                pos = i * BETWEEN_HIGH
                while pos < i * BETWEEN_HIGH + level:
                    pos += os.preadv(fd, [buf[:min(CHUNK, i * BETWEEN_HIGH + level - pos)]],
                                     pos)
            guest_support.join_cgroup(cgroup_root)
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert status == 0, "filler failed"
    usages = [int((cg / "memory.current").read_text()) for cg in cgs]
    counts: dict[str, int] = {}
    engine = ReclaimEngine(_counting_root(CgroupRoot(cgroup_root), counts))
    try:
        engine.start()
        t0 = time.monotonic()
        engine.set_targets([Target(key=cg.name, path=cg, memory_high=BETWEEN_HIGH,
                                   settings=ReclaimSettings()) for cg in cgs])
        takeover_s = time.monotonic() - t0
        time.sleep(3)
        c0 = counts.get("checks", 0)
        cpu0, main0, w0 = _process_cpu(), time.thread_time(), time.monotonic()
        time.sleep(idle_seconds)
        idle_cpu = (_process_cpu() - cpu0) - (time.thread_time() - main0)
        wall = time.monotonic() - w0
        checks = counts.get("checks", 0) - c0
        writes = sum(st.reclaim_writes for st in engine.snapshot().values())
        pc.progress(f"{n} cgroups between target and watermark: idle CPU "
                    f"{idle_cpu / wall * 1000:.1f} ms/s, {checks / wall / n:.1f} checks/cgroup/s")
        return {"cgroups": n, "takeover_s": takeover_s, "idle_cpu_s": idle_cpu,
                "idle_wall_s": wall, "checks": checks, "reclaim_writes": writes,
                "memory_high": BETWEEN_HIGH, "level": level,
                "usage_median": statistics.median(usages)}
    finally:
        engine.stop(restore=True)
        guest_support.remove_cgroup(parent)
        file.unlink()


def between_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| managed cgroups | memory.high MiB | usage MiB (median) | takeover s | "
             "idle engine CPU ms/s | per 100 cgroups ms/s | checks per cgroup per s | "
             "reclaim writes |", "|---|---|---|---|---|---|---|---|"]
    for s in rows:
        per_s = s["idle_cpu_s"] / s["idle_wall_s"] * 1000
        lines.append(f"| {s['cgroups']} | {s['memory_high'] / MiB:g} | "
                     f"{s['usage_median'] / MiB:.2f} | {s['takeover_s']:.2f} | {per_s:.1f} | "
                     f"{per_s * 100 / s['cgroups']:.1f} | "
                     f"{s['checks'] / s['idle_wall_s'] / s['cgroups']:.1f} | "
                     f"{s['reclaim_writes']} |")
    return "\n".join(lines)


def _counting_root(root: Any, counts: dict[str, int]) -> Any:
    """The root, with every memory.current read counted: one per engine check."""
    from headroom.cgroup import Cgroup

    make = root._make

    def counted(p: Path) -> Cgroup:
        cg = make(p)
        read = cg.read_current

        def read_current() -> int:
            counts["checks"] = counts.get("checks", 0) + 1
            return read()
        cg.read_current = read_current  # type: ignore[method-assign]
        return cg
    root._make = counted
    return root


def between_level(high: int) -> int:
    """Usage midway between the default target (90%) and watermark (95%): where a pod
    sits for good once its page cache reached the watermark (page cache never shrinks)."""
    from headroom.engine import ReclaimSettings
    from headroom.engine.decisions import watermark_levels

    s = ReclaimSettings()
    start, target = watermark_levels(high, s.headroom_percent, s.target_percent)
    return (start + target) // 2 // 4096 * 4096


def native_idle(n: int, seconds: float, high: int, between: bool = False) -> dict[str, Any]:
    """(b) on the host, natively: the same engine over a fake cgroup tree (plain files
    in a tmp dir, no PSI triggers or events watches), to scale the guest's TCG figures.
    `between`: every cgroup's usage sits between target and watermark (else 0)."""
    import tempfile

    from headroom.cgroup import CgroupRoot
    from headroom.engine import ReclaimEngine, ReclaimSettings, Target

    sys.path.insert(0, str(CHECKOUT / "tests" / "unit"))
    from fake_cgroup_tree import FakeTree

    with tempfile.TemporaryDirectory() as tmp:
        tree = FakeTree(Path(tmp) / "cgroup")
        usage = between_level(high) if between else 0
        paths = [tree.add(f"cg{i:03d}", current=usage) for i in range(n)]
        counts: dict[str, int] = {}
        engine = ReclaimEngine(_counting_root(CgroupRoot(tree.root, allow_fake=True), counts))
        engine.start()
        try:
            engine.set_targets([Target(key=p.name, path=p, memory_high=high,
                                       settings=ReclaimSettings()) for p in paths])
            time.sleep(2)
            c0 = counts.get("checks", 0)
            cpu0, main0, w0 = _process_cpu(), time.thread_time(), time.monotonic()
            time.sleep(seconds)
            cpu = (_process_cpu() - cpu0) - (time.thread_time() - main0)
            return {"cgroups": n, "memory_high_mib": high / MiB, "idle_cpu_s": cpu,
                    "idle_wall_s": time.monotonic() - w0, "between": between,
                    "checks": counts.get("checks", 0) - c0}
        finally:
            engine.stop(restore=True)


# ---------------------------------------------------------------- tables

def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def _p99(values: Sequence[float]) -> float:
    return guest_support.percentile(sorted(values), 99)


PAGECACHE_COLUMNS = (  # (heading, key, format)
    ("PSI some s", "psi_some_s", "{:.3f}"), ("PSI full s", "psi_full_s", "{:.3f}"),
    ("high events", "high_events", "{:.0f}"), ("read p50 ms", "p50_ms", "{:.2f}"),
    ("read p99 ms", "p99_ms", "{:.2f}"), ("peak MiB", "peak_mib", "{:.1f}"),
    ("reclaimed MiB", "reclaimed_mib", "{:.0f}"), ("reclaim writes CPU s", "reclaim_cpu_s",
                                                   "{:.2f}"),
    ("reclaimer CPU s", "reclaimer_cpu_s", "{:.2f}"), ("run s", "duration_s", "{:.1f}"),
    ("file refaults", "refault_file", "{:.0f}"))
HOT_COLUMNS = (("hot-set passes", "hot_passes", "{:.0f}"),
               ("hot-set passes/s", "hot_passes_per_s", "{:.3f}"))


def pagecache_table(runs: dict[str, list[dict[str, float]]], hot: bool = False) -> str:
    high = next((r["high_mib"] for rs in runs.values() for r in rs), 0)
    columns = PAGECACHE_COLUMNS + (HOT_COLUMNS if hot else ())
    head = ["arm (medians)", *(h for h, _, _ in columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, rs in runs.items():
        cells = [fmt.format(_median([r.get(key, 0) for r in rs])) for _, key, fmt in columns]
        lines.append(f"| {arm} ({len(rs)} runs) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nmemory.high {high:.0f} MiB in every arm."


def scale_table(scale: list[dict[str, Any]]) -> str:
    lines = ["| managed cgroups | takeover s | idle engine CPU ms/s | per 100 cgroups ms/s | "
             "trials | burst s (median) | first write after burst start, median / p99 ms | "
             "trials reaching the 95% watermark | first write after that crossing, "
             "median / max ms | trials with high events | no write within 30 s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in scale:
        per_s = s["idle_cpu_s"] / s["idle_wall_s"] * 1000
        tr = s["trials"]
        first = [t["first_write"] * 1000 for t in tr if t["first_write"] is not None]
        after = [(t["first_write"] - t["crossing"]) * 1000 for t in tr
                 if t["first_write"] is not None and t["crossing"] is not None]
        lines.append(
            f"| {s['cgroups']} | {s['takeover_s']:.2f} | {per_s:.1f} | "
            f"{per_s * 100 / s['cgroups']:.1f} | {len(tr)} | "
            f"{_median([t['burst_s'] for t in tr]):.2f} | "
            f"{_median(first):.0f} / {_p99(first):.0f} | "
            f"{sum(t['crossing'] is not None for t in tr)} | "
            f"{_median(after):.0f} / {max(after, default=0):.0f} | "
            f"{sum(t['high_events'] > 0 for t in tr)} | {len(tr) - len(first)} |")
    return "\n".join(lines)


def native_table(native: list[dict[str, Any]]) -> str:
    lines = ["| managed cgroups | memory.high MiB | usage | idle engine CPU ms/s | "
             "per 100 cgroups ms/s | checks per cgroup per s | CPU per check us |",
             "|---|---|---|---|---|---|---|"]
    for s in native:
        per_s = s["idle_cpu_s"] / s["idle_wall_s"] * 1000
        checks = s.get("checks")
        rate = "" if checks is None else f"{checks / s['idle_wall_s'] / s['cgroups']:.2f}"
        per_check = ("" if not checks else f"{s['idle_cpu_s'] / checks * 1e6:.0f}")
        lines.append(f"| {s['cgroups']} | {s['memory_high_mib']:g} | "
                     f"{'between target and watermark' if s.get('between') else 'idle, 0'} | "
                     f"{per_s:.2f} | {per_s * 100 / s['cgroups']:.2f} | {rate} | {per_check} |")
    return "\n".join(lines)


def report(doc: dict[str, Any]) -> str:
    return (f"### Kernel {doc['kernel']}\n\n(a) page cache streamed at memory.high "
            f"({doc['reps']} repetitions):\n\n{pagecache_table(doc['pagecache'])}\n\n"
            + (f"(a') the same with a hot {doc['options'].get('hot_mib')} MiB file re-read "
               f"beside the stream:\n\n{pagecache_table(doc['hotset'], hot=True)}\n\n"
               if doc.get("hotset") else "") +
            f"(b) idle overhead and (c) watermark-to-first-write delay:\n\n"
            f"{scale_table(doc['scale'])}\n\n(b2) idle between target and watermark:\n\n"
            f"{between_table(doc.get('between', []))}\n")


# ---------------------------------------------------------------- entry points

def in_guest(a: argparse.Namespace) -> int:
    if os.environ.get("HEADROOM_IN_GUEST") != "1":
        print("bench_engine --in-guest makes cgroups and drops caches: only in the QEMU "
              "guest", file=sys.stderr)
        return 2
    opts = pc.Options(file_mib=a.file_mib, passes=a.passes, high_mib=a.high_mib)
    doc: dict[str, Any] = {"kernel": platform.release(), "reps": a.reps,
                           "options": {k: str(v) for k, v in vars(a).items()}}
    doc["pagecache"] = pagecache_arms(opts, a.reps)   # its threads are joined: fork is safe
    if a.hot_mib:
        doc["hotset"] = pagecache_arms(replace(opts, hot_mib=a.hot_mib,
                                               file_mib=5 * a.high_mib), a.reps)
    doc["scale"], doc["between"] = [], []
    a.out.write_text(json.dumps(doc))                 # kept if a scale run fails
    for n in a.between_counts:
        doc["between"].append(between_run(opts.cgroup_root, n, a.idle_seconds,
                                          opts.file.parent))
        a.out.write_text(json.dumps(doc))
    for n in a.counts:
        doc["scale"].append(scale_run(opts.cgroup_root, n, a.trials, a.idle_seconds,
                                      opts.file.parent))
        a.out.write_text(json.dumps(doc))
    return 0


def on_host(a: argparse.Namespace) -> int:
    import qemu_guest

    argv = ["--reps", str(a.reps), "--counts", ",".join(map(str, a.counts)),
            "--between-counts", ",".join(map(str, a.between_counts)),
            "--trials", str(a.trials), "--idle-seconds", str(a.idle_seconds),
            "--file-mib", str(a.file_mib), "--passes", str(a.passes),
            "--high-mib", str(a.high_mib), "--hot-mib", str(a.hot_mib)]
    docs = []
    for kernel in ([] if a.native_only else a.kernels):
        with qemu_guest.shared_tmpdir() as tmp:
            out = tmp / "result.json"
            result = qemu_guest.run(
                kernel, [sys.executable, str(Path(__file__).resolve()), "--in-guest",
                         "--out", str(out), *argv], timeout=a.timeout, memory_mb=3072,
                stream=True)
            if result.rc != 0:
                print(f"bench_engine: the guest run on {kernel} failed (exit {result.rc})"
                      + ("; its partial results follow" if out.exists() else ""),
                      file=sys.stderr)
            if out.exists():
                docs.append(json.loads(out.read_text()))
    native = [native_idle(n, a.idle_seconds, high, between)
              for between, high in ((False, SCALE_HIGH), (False, 1 << 30), (True, SCALE_HIGH))
              for n in a.counts]
    if a.save:
        a.save.write_text(json.dumps({"guest": docs, "native": native}, indent=1))
    for doc in docs:
        print(report(doc))
    print("(b) natively on the host, the same engine over a fake cgroup tree (tmp files; "
          f"no PSI triggers or events watches):\n\n{native_table(native)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kernels", type=lambda s: s.split(","), default=["6.1", "6.12"])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--counts", type=lambda s: [int(x) for x in s.split(",") if x],
                   default=[10, 100, 500])
    p.add_argument("--between-counts", type=lambda s: [int(x) for x in s.split(",") if x],
                   default=[10, 100, 500], help="(b2) cgroup counts; empty: skip")
    p.add_argument("--native-only", action="store_true", help="only (b') on the host")
    p.add_argument("--trials", type=int, default=10, help="delay trials per cgroup count")
    p.add_argument("--idle-seconds", type=float, default=10)
    p.add_argument("--file-mib", type=int, default=512)
    p.add_argument("--passes", type=int, default=1)
    p.add_argument("--high-mib", type=int, default=128)
    p.add_argument("--hot-mib", type=int, default=80,
                   help="(a') hot file re-read beside a stream of 5 x memory.high (0: skip)")
    p.add_argument("--timeout", type=float, default=3600, help="per guest boot, seconds")
    p.add_argument("--save", type=Path, help="host: also write the raw results (JSON) here")
    p.add_argument("--in-guest", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.in_guest:
        return in_guest(a)
    return on_host(a)


if __name__ == "__main__":
    sys.exit(main())
