"""Page cache streamed through a cgroup at memory.high: the kernel alone, then headroom.

The in-guest driver shared by `scripts/demo`, the real-kernel tests
(tests/vm/guest/test_engine_real.py) and the benchmark. It needs a real cgroup v2
root and drops the page cache between arms, so it runs in the QEMU test guest:

    tests/vm/qemu_guest.py --kernel 6.1 -- python bench/pagecache_compare.py --out R.json

For each arm (`kernel`, then `engine`) it creates a fresh cgroup with memory.high,
drops caches, starts a sampler of memory.current (every --sample-ms) and a workload
process inside the cgroup that reads a file sequentially (--passes times, in
--chunk-kib reads, each read timed). The `engine` arm runs headroom's ReclaimEngine
in this process (outside the cgroup, as the node agent runs outside the pod) with the
default Watermark settings. Results (PSI some/full, memory.events, peak usage,
latency percentiles, the memory.current series, the engine's counters) are written
as JSON; bench/compare_report.py turns them into the table and the plot.

The workload is tests/vm/workloads/pagecache_stream.py; cgroups are made and removed
with tests/vm/guest_support.py (which checks for a real cgroup2 tree before any write).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(CHECKOUT / "tests" / "vm"))
import guest_support  # noqa: E402

STREAM = CHECKOUT / "tests" / "vm" / "workloads" / "pagecache_stream.py"
MiB = 1 << 20
ARMS = ("kernel", "engine")
CGROUP_PREFIX = "hr-pagecache-"
_T0 = time.monotonic()


def progress(msg: str) -> None:
    """One progress line on stderr, with seconds since the driver started."""
    print(f"[{time.monotonic() - _T0:6.1f} s] guest: {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Options:
    file: Path = Path("/mnt/scratch/pagecache-stream.dat")
    file_mib: int = 1024
    sparse: bool = True   # a hole reads as zeroed page cache, without disk I/O
    passes: int = 2
    high_mib: int = 256
    chunk_kib: int = 256
    sample_ms: float = 10.0
    cgroup_root: Path = Path("/sys/fs/cgroup")
    cpu_budget_cores: float | None = 0.5
    hot_mib: int = 0      # > 0: a second process re-reads a hot file of this size meanwhile
    hot_file: Path = Path("/mnt/scratch/pagecache-hot.dat")
    pin_hot: bool = False  # the hot reader alone on one CPU, all else on another: its
                           # throughput then shows what memory does to it, not the CPU
                           # the unthrottled stream and the engine take (docs/engine.md)


@dataclass
class ArmResult:
    name: str
    memory_high: int
    duration_s: float = 0.0
    psi_some_us: int = 0
    psi_full_us: int = 0
    events: dict[str, int] = field(default_factory=dict)      # memory.events deltas
    peak_bytes: int = 0               # memory.peak when the kernel has it, else sampled
    peak_sampled_bytes: int = 0
    latency_us: dict[str, float] = field(default_factory=dict)  # p50, p99, max, mean
    reads: int = 0
    bytes_read: int = 0
    workload_cpu_s: float = 0.0
    direct_scan: int = 0              # memory.stat pgscan_direct delta (ours + the engine's)
    refault_file: int = 0             # memory.stat workingset_refault_file delta (pages)
    refault_anon: int = 0             # memory.stat workingset_refault_anon delta (pages)
    hot_passes: int = 0               # hot-set workload: passes over the hot file during
    hot_window_s: float = 0.0         # the stream (this long)
    # (s since start, memory.current bytes, memory.events "high" count since start,
    #  memory.stat inactive_file, active_file, workingset_refault_file since start)
    samples: list[tuple[float, ...]] = field(default_factory=list)
    engine: dict[str, Any] | None = None

    @property
    def high_events(self) -> int:
        return self.events.get("high", 0)

    @property
    def hot_passes_per_s(self) -> float:
        return self.hot_passes / self.hot_window_s if self.hot_window_s > 0 else 0.0


def deltas(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items()}


# ---------------------------------------------------------------- guest set-up

def prepare_file(path: Path, mib: int, sparse: bool) -> None:
    """A `mib` MiB file on the scratch disk (ext4). Sparse: created at once, and reading
    it fills page cache with zeroed pages without disk I/O, so the workload's only stalls
    are memory stalls. Written: real data (writing it costs about a minute under TCG)."""
    size = mib * MiB
    if path.exists() and path.stat().st_size == size and (
            (path.stat().st_blocks == 0) == sparse):
        return
    if sparse:
        path.unlink(missing_ok=True)
        with open(path, "wb") as fh:
            fh.truncate(size)
        return
    progress(f"writing the {mib} MiB file {path}")
    block = bytes(range(256)) * (MiB // 256)
    with open(path, "wb") as fh:
        for _ in range(mib):
            fh.write(block)
        fh.flush()
        os.fsync(fh.fileno())


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


class Sampler(threading.Thread):
    """memory.current, the memory.events `high` count and, with `stat`, the LRU sizes and
    file refaults of memory.stat every `interval` seconds."""

    def __init__(self, cg: Any, interval: float, stat: bool = False) -> None:
        super().__init__(name="sampler", daemon=True)
        self.cg, self.interval, self.stat = cg, interval, stat
        self.samples: list[tuple[float, ...]] = []
        self.cpu_s = 0.0
        self._halt = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        from headroom.cgroup import CgroupError
        high0 = self.cg.read_events().get("high", 0)
        refault0 = self.cg.read_stat().get("workingset_refault_file", 0)
        while not self._halt.is_set():
            try:
                sample: tuple[float, ...] = (round(time.monotonic() - self.t0, 4),
                                             self.cg.read_current(),
                                             self.cg.read_events().get("high", 0) - high0)
                if self.stat:
                    st = self.cg.read_stat()
                    sample += (st.get("inactive_file", 0), st.get("active_file", 0),
                               st.get("workingset_refault_file", 0) - refault0)
                self.samples.append(sample)
            except CgroupError:
                break
            self._halt.wait(self.interval)
        self.cpu_s = time.thread_time()

    def stop(self) -> None:
        self._halt.set()
        self.join()


def fresh_cgroup(root: Any, name: str) -> Any:
    """An empty child cgroup of the (verified) root, recreated if it exists."""
    guest_support.remove_cgroup(root.path / name)
    return root.cgroup(guest_support.create_cgroup(root.path, name))


def _cpu(who: int = resource.RUSAGE_SELF) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def run_arm(name: str, opts: Options, root: Any, engine: Any = None,
            hot_cpu: int | None = None) -> ArmResult:
    """One run of the workload in a fresh cgroup at memory.high; with `engine` (a
    started ReclaimEngine) managing that cgroup when given; the hot reader pinned to
    `hot_cpu` when given."""
    from headroom.engine import ReclaimSettings, Target

    high = opts.high_mib * MiB
    cg = fresh_cgroup(root, CGROUP_PREFIX + name)
    result = ArmResult(name=name, memory_high=high)
    key = cg.rel
    if engine is None:
        cg.write_high(high)
    else:
        engine.set_targets([Target(key=key, path=cg.path, memory_high=high,
                                   settings=ReclaimSettings())])
    if cg.read_high() != high:
        raise RuntimeError(f"{cg.path}: memory.high is {cg.read_high()}, expected {high}")
    drop_caches()
    hot = _start_hot(opts, cg, hot_cpu) if opts.hot_mib else None
    events0, stat0 = cg.read_events(), cg.read_stat()
    psi0 = cg.read_pressure()
    sampler = Sampler(cg, opts.sample_ms / 1000, stat=opts.hot_mib > 0)
    cpu0, main_cpu0, child_cpu0 = _cpu(), time.thread_time(), _cpu(resource.RUSAGE_CHILDREN)
    sampler.start()
    progress(f"{name} arm: streaming {opts.passes} x {opts.file_mib} MiB through "
             f"{cg.rel} at memory.high {opts.high_mib} MiB"
             + (", headroom's engine reclaiming" if engine else ", the kernel alone"))
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(STREAM), "--file", str(opts.file), "--size", f"{opts.file_mib}M",
         "--block", f"{opts.chunk_kib}K", "--passes", str(opts.passes), "--cgroup", str(cg.path)],
        capture_output=True, text=True, check=False)
    t1 = time.monotonic()
    result.duration_s = round(t1 - t0, 3)
    sampler.stop()
    if hot is not None:
        result.hot_passes, result.hot_window_s = _stop_hot(hot, t0, t1)
    if proc.returncode != 0:
        raise RuntimeError(f"workload failed ({proc.returncode}): {proc.stderr.strip()}")
    out = json.loads(proc.stdout)
    psi1 = cg.read_pressure()
    result.psi_some_us = psi1.some.total_us - psi0.some.total_us
    result.psi_full_us = (psi1.full.total_us - psi0.full.total_us
                          if psi1.full and psi0.full else 0)
    result.events = deltas(events0, cg.read_events())
    stat = deltas(stat0, cg.read_stat())
    result.direct_scan = stat.get("pgscan_direct", 0)
    result.refault_file = stat.get("workingset_refault_file", 0)
    result.refault_anon = stat.get("workingset_refault_anon", 0)
    result.samples = sampler.samples
    result.peak_sampled_bytes = max((s[1] for s in sampler.samples), default=0)
    peak_file = cg.file("memory.peak")
    result.peak_bytes = (int(peak_file.read_text()) if peak_file.exists()
                         else result.peak_sampled_bytes)
    result.latency_us = {k: out[f"{k}_us"] for k in ("p50", "p99", "max", "mean")}
    result.reads, result.bytes_read = out["ops"], out["bytes"]
    result.workload_cpu_s = round(_cpu(resource.RUSAGE_CHILDREN) - child_cpu0, 3)
    if engine is not None:
        st = engine.snapshot()[key]
        engine.set_targets([])   # memory.high back to what it was ("max": a fresh cgroup)
        # the engine's whole CPU: this process less the sampler and this (waiting) thread
        engine_cpu = (_cpu() - cpu0 - sampler.cpu_s - (time.thread_time() - main_cpu0))
        result.engine = {
            "reclaimed_bytes": st.reclaimed_bytes,
            "reclaim_cpu_s": round(st.reclaim_cpu_seconds, 4),
            "engine_cpu_s": round(max(engine_cpu, st.reclaim_cpu_seconds), 4),
            "reclaim_writes": st.reclaim_writes,
            "eagain_count": st.eagain_count,
            "budget_deferrals": st.budget_deferrals,
            "high_events_seen": st.high_events,
            "last_error": st.last_error,
            "reason": st.reason,
        }
    guest_support.remove_cgroup(cg.path)
    progress(f"{name} arm done in {result.duration_s:.1f} s: high events "
             f"{result.high_events}, PSI some {result.psi_some_us / 1e6:.3f} s, "
             f"file refaults {result.refault_file}, "
             + (f"hot passes {result.hot_passes} ({result.hot_passes_per_s:.2f}/s), "
                if opts.hot_mib else "") +
             f"p99 read {result.latency_us['p99'] / 1000:.2f} ms"
             + (f", engine reclaimed {result.engine['reclaimed_bytes'] / MiB:.0f} MiB"
                if result.engine else ""))
    return result


class _Hot:
    def __init__(self, proc: subprocess.Popen[str], stop: Path) -> None:
        self.proc, self.stop = proc, stop


def _start_hot(opts: Options, cg: Any, hot_cpu: int | None) -> _Hot:
    """The hot-set reader in the cgroup, re-reading its file; returns once its first
    pass (the cold read) is done, so the measured window starts with a warm cache."""
    ready, stop = opts.hot_file.with_suffix(".ready"), opts.hot_file.with_suffix(".stop")
    ready.unlink(missing_ok=True)
    stop.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, str(STREAM), "--file", str(opts.hot_file), "--size",
         f"{opts.hot_mib}M", "--block", f"{opts.chunk_kib}K", "--until-file", str(stop),
         "--ready-file", str(ready), "--cgroup", str(cg.path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if hot_cpu is not None:
        os.sched_setaffinity(proc.pid, {hot_cpu})
    while not ready.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"hot reader failed: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    return _Hot(proc, stop)


def _stop_hot(hot: _Hot, t0: float, t1: float) -> tuple[int, float]:
    """Stop the hot reader; (its passes completed within [t0, t1], t1 - t0)."""
    hot.stop.touch()
    out, err = hot.proc.communicate(timeout=600)
    if hot.proc.returncode != 0:
        raise RuntimeError(f"hot reader failed ({hot.proc.returncode}): {err.strip()}")
    ends = json.loads(out)["pass_ends"][1:]   # the first pass was the cold read
    return sum(1 for e in ends if t0 <= e <= t1), round(t1 - t0, 3)


def compare(opts: Options, arms: tuple[str, ...] = ARMS) -> dict[str, Any]:
    """Every arm in order, in this guest; the JSON-ready result document."""
    from headroom.cgroup import CgroupRoot
    from headroom.engine import ReclaimEngine

    root = CgroupRoot(opts.cgroup_root)   # refuses anything but a real cgroup2 mount
    if root.fake:
        raise RuntimeError(f"{opts.cgroup_root} is not a real cgroup2 root")
    guest_support.require_cgroup2(root.path)
    prepare_file(opts.file, opts.file_mib, opts.sparse)
    if opts.hot_mib:
        prepare_file(opts.hot_file, opts.hot_mib, opts.sparse)
    doc: dict[str, Any] = {"kernel": platform.release(), "options": _jsonable(asdict(opts)),
                           "arms": [], "capabilities": None}
    every = os.sched_getaffinity(0)
    hot_cpu = None
    if opts.pin_hot and opts.hot_mib:
        if len(every) < 2:
            raise RuntimeError("pin_hot needs two CPUs")
        hot_cpu = max(every)
        os.sched_setaffinity(0, every - {hot_cpu})   # this thread, the engine's, the stream
    try:
        for name in arms:
            if name == "engine":
                engine = ReclaimEngine(root, cpu_budget_cores=opts.cpu_budget_cores)
                engine.start()
                try:
                    result = run_arm(name, opts, root, engine, hot_cpu)
                    doc["capabilities"] = asdict(engine.capabilities)
                finally:
                    engine.stop(restore=True)
            else:
                result = run_arm(name, opts, root, hot_cpu=hot_cpu)
            arm = asdict(result)
            arm["high_events"] = result.high_events
            doc["arms"].append(arm)
    finally:
        os.sched_setaffinity(0, every)
    return doc


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--arms", default=",".join(ARMS), help="comma-separated, in order")
    p.add_argument("--file", type=Path, default=Options.file)
    p.add_argument("--file-mib", type=int, default=Options.file_mib)
    p.add_argument("--written", action="store_true",
                   help="stream a file of written data (disk reads) instead of a sparse one")
    p.add_argument("--passes", type=int, default=Options.passes)
    p.add_argument("--high-mib", type=int, default=Options.high_mib)
    p.add_argument("--chunk-kib", type=int, default=Options.chunk_kib)
    p.add_argument("--sample-ms", type=float, default=Options.sample_ms)
    p.add_argument("--cpu-budget", type=float, default=Options.cpu_budget_cores)
    p.add_argument("--hot-mib", type=int, default=0,
                   help="also re-read a hot file of this size in the cgroup meanwhile")
    a = p.parse_args(argv)
    if os.environ.get("HEADROOM_IN_GUEST") != "1":
        print("pagecache_compare: drops caches and makes cgroups: run it in the test guest "
              "(tests/vm/qemu_guest.py) or ./scripts/demo", file=sys.stderr)
        return 2
    arms = tuple(x for x in a.arms.split(",") if x)
    if not arms or any(x not in ARMS for x in arms):
        p.error(f"--arms: choose from {', '.join(ARMS)}")
    opts = Options(file=a.file, file_mib=a.file_mib, sparse=not a.written, passes=a.passes,
                   high_mib=a.high_mib, chunk_kib=a.chunk_kib, sample_ms=a.sample_ms,
                   cpu_budget_cores=a.cpu_budget, hot_mib=a.hot_mib)
    doc = compare(opts, arms)
    text = json.dumps(doc)
    if a.out:
        a.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
