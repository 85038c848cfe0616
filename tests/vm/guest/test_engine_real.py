"""The reclaim engine on a real kernel (run inside the QEMU guest, issue 2 item 6 a-e).

Counts and ratios only, never durations: guest timing is emulated (TCG) and noisy.
Wall-clock time appears only as an upper bound's input (how many back-off periods
could have passed), where a slower machine can only make the count smaller.
"""

from __future__ import annotations

import errno
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import guest_support
import pytest
from headroom.cgroup import CgroupRoot
from headroom.cgroup import capabilities as caps
from headroom.engine import ReclaimEngine, ReclaimSettings, Target, TargetStats, decisions

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
import pagecache_compare

MiB = 1 << 20


@pytest.fixture
def engine(cgroup_root: Path) -> Iterator[ReclaimEngine]:
    eng = ReclaimEngine(CgroupRoot(cgroup_root), cpu_budget_cores=0.5)
    eng.start()
    yield eng
    eng.stop(restore=True)


def _high_text(cg: Path) -> str:
    return (cg / "memory.high").read_text().strip()


def _wait_for(what: str, cond: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _stats(eng: ReclaimEngine, key: str) -> TargetStats:
    return eng.snapshot()[key]


# --- (a) page cache through memory.high = 256M: the engine keeps the workload off it --

def _stream_summary(doc: dict) -> str:
    kernel, eng = doc["arms"]
    return (f"{doc['kernel']}: kernel alone high={kernel['high_events']} "
            f"psi_some={kernel['psi_some_us']}us; engine high={eng['high_events']} "
            f"psi_some={eng['psi_some_us']}us engine={eng['engine']}")


def _stream_misses(doc: dict) -> list[str]:
    """The bounds of (a) that depend on how fast the guest runs, missed in `doc`."""
    kernel, eng = doc["arms"]
    print(_stream_summary(doc))
    bounds = {"high events": eng["high_events"] <= 0.01 * kernel["high_events"],
              "PSI some": eng["psi_some_us"] <= 0.05 * kernel["psi_some_us"]}
    return [name for name, ok in bounds.items() if not ok]


def test_pagecache_stream_engine_vs_kernel_alone(scratch_dir: Path) -> None:
    """Same guest, kernel-alone arm first, then the engine arm (caches dropped between):
    with the engine, `high` events at most 1% and PSI some at most 5% of kernel alone."""
    opts = pagecache_compare.Options(file=scratch_dir / "stream.dat", file_mib=1024,
                                     passes=1, high_mib=256, sample_ms=50)
    doc, missed, _ = guest_support.measured_twice(lambda: pagecache_compare.compare(opts),
                                                  _stream_misses)
    kernel, eng = doc["arms"]
    summary = _stream_summary(doc)
    assert (kernel["name"], eng["name"]) == ("kernel", "engine")
    # The kernel-alone arm must really be throttled, or the comparison says nothing.
    assert kernel["high_events"] >= 100, summary
    assert kernel["psi_some_us"] > 0, summary
    assert kernel["bytes_read"] == eng["bytes_read"] == 1024 * MiB
    assert not missed, f"{', '.join(missed)} over the bound in both runs\n{summary}"
    st = eng["engine"]
    assert st["reason"] == "Applied" and st["last_error"] is None, summary
    # 1 GiB streamed through 256M, 0 high events: the engine freed the stream. It counts
    # the bytes it asked for, and the kernel may free more per write (measured on 6.1:
    # 533 MiB asked where about 768 had to go), so the bound is a quarter of the stream.
    assert st["reclaimed_bytes"] >= 256 * MiB, summary
    assert st["reclaim_cpu_s"] > 0 and st["reclaim_writes"] > 0, summary


# --- (a') a hot set re-read beside the stream: the engine keeps it (issue 9) -------------

PAIRS = 3   # kernel-alone and engine arms alternate this many times in the boot
# Open on 6.1 (issue 9): the pinned hot reader once got 75% of the kernel-alone passes/s
# at 56 MiB with no refaults in either arm (since decisions.lru_keep: 86-106% in three
# boots, 80 MiB 94-130%); a miss in both runs xfails with the numbers.
KNOWN_OPEN = {"6.1": {"hot-set throughput"}}


def _hot_summary(doc: dict) -> str:
    return "\n".join(
        f"{doc['kernel']} {a['name']}: high={a['high_events']} psi_some={a['psi_some_us']}us "
        f"refault_file={a['refault_file']} hot_passes={a['hot_passes']} in "
        f"{a['hot_window_s']}s" for a in doc["arms"])


def _hot_bounds(doc: dict) -> dict[str, bool]:
    """The bounds on the medians of the kernel-alone and the engine arms."""
    kernel = [a for a in doc["arms"] if a["name"] == "kernel"]
    eng = [a for a in doc["arms"] if a["name"] == "engine"]

    def med(arms: list[dict], key: str) -> float:
        return statistics.median(a[key] for a in arms)

    def pps(arms: list[dict]) -> float:
        return statistics.median(a["hot_passes"] / a["hot_window_s"] for a in arms)

    return {"high events": med(eng, "high_events") <= 0.01 * med(kernel, "high_events"),
            "PSI some": med(eng, "psi_some_us") <= 0.05 * med(kernel, "psi_some_us"),
            "file refaults": med(eng, "refault_file")
            <= 1.25 * med(kernel, "refault_file") + 512,
            "hot-set throughput": pps(eng) >= 0.9 * pps(kernel)}


@pytest.mark.parametrize("high_mib,hot_mib", [(128, 80), (128, 56)])
def test_hot_set_beside_a_stream_stays_cached(scratch_dir: Path, high_mib: int,
                                              hot_mib: int) -> None:
    """One cgroup: a process re-reads a hot file (62% or 44% of memory.high) while another
    streams 10 x memory.high once (with 5 x, the one crossing at the stream's start, before
    the engine's next look, was 5% of the kernel-alone PSI on 6.12). Kernel alone and
    engine arms alternate, three pairs in one boot; on the medians: the stall bounds of
    (a), no more file refaults than the kernel alone (1.25x plus 512 pages of slack), and
    as many hot passes per second (within 10%, the kernel-alone arms' own spread).
    Either kernel now and then refaults the hot file in one run, with or without the
    engine (6.1 alone: 4,315 and 19,273 pages where its other runs had 7-20): one pair
    decides nothing, and a miss is measured once more. The hot reader has a CPU of its
    own (pin_hot): unthrottled, the stream and the engine take CPU that the throttled
    stream of the kernel-alone arm left to it, and that is not what this compares."""
    opts = pagecache_compare.Options(file=scratch_dir / "stream.dat", file_mib=10 * high_mib,
                                     passes=1, high_mib=high_mib, sample_ms=100,
                                     hot_mib=hot_mib, hot_file=scratch_dir / "hot.dat",
                                     pin_hot=True)
    series = ".".join(platform.release().split(".")[:2])
    known = KNOWN_OPEN.get(series, set())

    def strict_misses(doc: dict) -> list[str]:
        print(_hot_summary(doc))
        return [n for n, ok in _hot_bounds(doc).items() if not ok and n not in known]

    doc, missed, _ = guest_support.measured_twice(
        lambda: pagecache_compare.compare(opts, pagecache_compare.ARMS * PAIRS), strict_misses)
    summary = _hot_summary(doc) + f"\nengine={doc['arms'][-1]['engine']}"
    kernel = [a for a in doc["arms"] if a["name"] == "kernel"]
    assert all(a["high_events"] >= 100 and a["psi_some_us"] > 0 for a in kernel), summary
    assert all(a["hot_passes"] >= 1 for a in doc["arms"]), summary
    assert not missed, f"{', '.join(missed)} over the bound (medians), twice\n{summary}"
    open_misses = [n for n, ok in _hot_bounds(doc).items() if not ok]
    if open_misses:
        pytest.xfail(f"{series}: {', '.join(open_misses)} over the bound (medians; issue 9, "
                     f"open)\n{summary}")


# --- (a'') anonymous memory with a cold part, zram swap: the cold part goes, the hot stays

def _anon_arm(cg: Path, workloads_dir: Path, ready: Path, engine: ReclaimEngine | None
              ) -> dict[str, int]:
    """Fill 192 MiB through memory.high 128 MiB, then 40 rounds over its first 32 MiB;
    the cgroup's counters over the whole run."""
    root, high = CgroupRoot(cg.parent), 128 * MiB
    if engine is None:
        root.cgroup(cg).write_high(high)
    else:
        engine.set_targets([Target("anon-cold", cg, high, ReclaimSettings())])
    c = root.cgroup(cg)
    events0, stat0, psi0 = c.read_events()["high"], c.read_stat(), c.read_pressure()
    proc = subprocess.run([sys.executable, workloads_dir / "anon_alloc.py", "--size", "192M",
                           "--hot", "32M", "--rounds", "40", "--ready-file", ready,
                           "--cgroup", cg], capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    stat = c.read_stat()   # counters: they outlive the workload
    out = {"high": c.read_events()["high"] - events0,
           "psi_some_us": c.read_pressure().some.total_us - psi0.some.total_us,
           "refault_anon": stat["workingset_refault_anon"] - stat0["workingset_refault_anon"]}
    if engine is not None:
        st = _stats(engine, "anon-cold")
        out["reclaimed_mib"] = st.reclaimed_bytes // MiB
        engine.set_targets([])
    return out


def test_anon_cold_part_goes_to_zram_not_the_hot_part(make_cgroup, scratch_dir: Path,
                                                      workloads_dir: Path, zram_swap: int,
                                                      engine: ReclaimEngine) -> None:
    """Kernel alone first, then the engine, same boot: at most 1% of the kernel-alone
    `high` events, and anon refaults (hot pages read back from zram) no more than the
    kernel alone's (1.25x plus 512 pages)."""
    kernel = _anon_arm(make_cgroup("anon-alone"), workloads_dir, scratch_dir / "r1", None)
    eng = _anon_arm(make_cgroup("anon-engine"), workloads_dir, scratch_dir / "r2", engine)
    summary = f"{platform.release()}: kernel alone {kernel}; engine {eng}"
    print(summary)
    # the kernel alone really was throttled (measured on 6.12: 48 high events; both arms
    # refault the hot part once, 8,449 pages: it was written first and swapped in the fill)
    assert kernel["high"] >= 20, summary
    bounds = {"high events": eng["high"] <= 0.01 * kernel["high"],
              "anon refaults": eng["refault_anon"] <= 1.25 * kernel["refault_anon"] + 512}
    missed = [name for name, ok in bounds.items() if not ok]
    if missed:   # issue 9, open: under TCG zram compression is slower than the fill
        # (docs/engine.md, "Anonymous memory into zram"); numbers in the CI log
        pytest.xfail(f"{', '.join(missed)} over the bound\n{summary}")


# --- (a''') several cgroups busy at once, of different kinds ----------------------------

BUSY_HIGH = 128 * MiB


def _busy_node(cgs: dict[str, Path], scratch: Path, workloads: Path,
               engine: ReclaimEngine | None) -> dict[str, dict[str, int]]:
    """At once, each in its own cgroup at memory.high 128 MiB: a read stream (640 MiB),
    a write stream (640 MiB of dirty page cache, fsync every 16 MiB) and anon memory
    with a cold part (192 MiB filled, then 40 rounds over its first 32 MiB; zram). Each
    cgroup's `high` events and PSI some over the run."""
    root = CgroupRoot(next(iter(cgs.values())).parent)
    if engine is None:
        for cg in cgs.values():
            root.cgroup(cg).write_high(BUSY_HIGH)
    else:
        engine.set_targets([Target(name, cg, BUSY_HIGH, ReclaimSettings())
                            for name, cg in cgs.items()])
    stream = [sys.executable, workloads / "pagecache_stream.py", "--size", "640M",
              "--block", "256K"]
    cmds = {"reads": [*stream, "--file", scratch / "reads.dat"],
            "writes": [*stream, "--write", "--fsync-every", "16M", "--file",
                       scratch / "writes.dat"],
            "anon": [sys.executable, workloads / "anon_alloc.py", "--size", "192M", "--hot",
                     "32M", "--rounds", "40"]}
    cg = {name: root.cgroup(path) for name, path in cgs.items()}
    before = {n: (c.read_events()["high"], c.read_pressure().some.total_us)
              for n, c in cg.items()}
    procs = {n: subprocess.Popen([*cmd, "--cgroup", cgs[n]], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for n, cmd in cmds.items()}
    for n, proc in procs.items():
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"{n}: {err}"
    out = {n: {"high": c.read_events()["high"] - before[n][0],
               "psi_some_us": c.read_pressure().some.total_us - before[n][1]}
           for n, c in cg.items()}
    if engine is not None:
        for n in cgs:
            out[n]["reclaimed_mib"] = _stats(engine, n).reclaimed_bytes // MiB
        engine.set_targets([])
    return out


def test_several_busy_cgroups_at_once(make_cgroup, scratch_dir: Path, workloads_dir: Path,
                                      zram_swap: int, engine: ReclaimEngine) -> None:
    """Reads, writes with fsync and anon + zram in three cgroups at once, kernel alone
    first, then one engine for all three, same boot: for each cgroup, at most 1% of its
    kernel-alone `high` events and 5% of its PSI."""
    pagecache_compare.prepare_file(scratch_dir / "reads.dat", 640, True)
    names = ("reads", "writes", "anon")
    kernel = _busy_node({n: make_cgroup(f"busy-alone-{n}") for n in names}, scratch_dir,
                        workloads_dir, None)
    pagecache_compare.drop_caches()
    eng = _busy_node({n: make_cgroup(f"busy-engine-{n}") for n in names}, scratch_dir,
                     workloads_dir, engine)
    summary = f"{platform.release()}: kernel alone {kernel}; engine {eng}"
    print(summary)
    assert all(kernel[n]["high"] >= 20 for n in names), summary   # all were throttled
    missed = [f"{n} {what}" for n in names for what, ok in (
        ("high events", eng[n]["high"] <= 0.01 * kernel[n]["high"]),
        ("PSI some", eng[n]["psi_some_us"] <= 0.05 * kernel[n]["psi_some_us"])) if not ok]
    if missed:   # issue 9, open: numbers in the CI log, not yet a bound that holds
        pytest.xfail(f"{', '.join(missed)} over the bound\n{summary}")


# --- (b) memory.high written and restored exactly ---------------------------------------

def test_memory_high_written_and_restored_exactly(make_cgroup, engine: ReclaimEngine) -> None:
    numbered, unlimited = make_cgroup("numbered"), make_cgroup("unlimited")
    CgroupRoot(numbered.parent).cgroup(numbered).write_high(300 * MiB)
    assert _high_text(numbered) == str(300 * MiB)
    assert _high_text(unlimited) == "max"
    odd = 200 * MiB + 123   # not page aligned: written rounded down to a page
    settings = ReclaimSettings()
    engine.set_targets([Target("numbered", numbered, 256 * MiB, settings),
                        Target("unlimited", unlimited, odd, settings)])
    assert _high_text(numbered) == str(256 * MiB)
    assert _high_text(unlimited) == str(decisions.page_down(odd))
    snap = engine.snapshot()
    assert snap["numbered"].original_memory_high == 300 * MiB
    assert snap["unlimited"].original_memory_high is None
    assert snap["numbered"].applied and snap["unlimited"].applied

    engine.set_targets([Target("unlimited", unlimited, odd, settings)])  # release one
    assert _high_text(numbered) == str(300 * MiB)
    assert _high_text(unlimited) == str(decisions.page_down(odd))
    engine.stop(restore=True)                                            # and the other
    assert _high_text(unlimited) == "max"
    assert _high_text(numbered) == str(300 * MiB)


# --- (c) unreclaimable anonymous memory without swap --------------------------------------

def test_unreclaimable_anon_memory_reports_and_backs_off(make_cgroup, scratch_dir: Path,
                                                         workloads_dir: Path,
                                                         engine: ReclaimEngine) -> None:
    cg = make_cgroup("anon")
    (cg / "memory.swap.max").write_text("0\n")   # no swap for this cgroup, whatever the guest has
    ready = scratch_dir / "ready"
    proc = subprocess.Popen([sys.executable, workloads_dir / "anon_alloc.py", "--size", "96M",
                             "--hot", "1M", "--rounds", "1", "--ready-file", ready,
                             "--hold", "600", "--cgroup", cg], stdout=subprocess.DEVNULL)
    try:
        _wait_for("anon_alloc to fill its memory",
                  lambda: ready.exists() or proc.poll() is not None)
        assert proc.poll() is None, "anon_alloc exited early"
        root = CgroupRoot(cg.parent)
        usage = root.cgroup(cg).read_current()
        # memory.high just above usage: usage sits over the watermark (95%), under high
        high = decisions.page_up(usage / 0.97)
        root.cgroup(cg).write_high(high)
        t0 = time.monotonic()
        engine.set_targets([Target("anon", cg, high, ReclaimSettings())])
        _wait_for("three EAGAINs in a row", lambda: _stats(engine, "anon").eagain_count >= 3)
        first, t1 = _stats(engine, "anon"), time.monotonic()
        time.sleep(3.0)
        last, t2 = _stats(engine, "anon"), time.monotonic()
    finally:
        proc.kill()
        proc.wait()
    summary = f"first={first}\nlast={last}"
    # reported: counted, and the last error names the file; still managed
    assert last.eagain_count >= 3, summary
    assert last.last_error is not None and "memory.reclaim" in last.last_error, summary
    assert last.applied and last.reason == "Applied", summary
    assert _high_text(cg) == str(high)
    # backs off: after 3 failures in a row every wait is >= eagain_backoff(3) (0.4 s), so
    # the window [t1, t2] holds at most this many writes (fewer on a slower machine)
    min_wait = decisions.eagain_backoff(3, engine.tuning)
    writes = last.reclaim_writes - first.reclaim_writes
    assert writes <= (t2 - t1) / min_wait + 1, summary
    # failing writes are not retried more often than they fail
    assert last.reclaim_writes - last.eagain_count <= first.reclaim_writes, summary
    # bounded CPU: a small share of one core since takeover, and little per write
    assert last.reclaim_cpu_seconds <= 0.1 * (t2 - t0), summary
    assert last.reclaim_cpu_seconds / last.reclaim_writes <= 0.5, summary


# --- (d) a cgroup removed while managed --------------------------------------------------

def test_cgroup_removed_while_reclaiming_is_dropped(make_cgroup, scratch_dir: Path,
                                                    workloads_dir: Path,
                                                    engine: ReclaimEngine,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    doomed, stays = make_cgroup("doomed"), make_cgroup("stays")
    data = scratch_dir / "data"
    with open(data, "wb") as fh:   # sparse: reads fill page cache without disk I/O
        fh.truncate(128 * MiB)
    settings = ReclaimSettings()
    targets = [Target("doomed", doomed, 32 * MiB, settings),
               Target("stays", stays, 64 * MiB, settings)]
    caplog.set_level(logging.WARNING, logger="headroom")
    engine.set_targets(targets)
    proc = subprocess.Popen([sys.executable, workloads_dir / "pagecache_stream.py", "--file",
                             data, "--size", "128M", "--block", "256K", "--duration", "600",
                             "--cgroup", doomed], stdout=subprocess.DEVNULL)
    try:
        _wait_for("the engine to reclaim in the doomed cgroup",
                  lambda: _stats(engine, "doomed").reclaim_writes >= 3 or proc.poll() is not None)
        assert proc.poll() is None, "pagecache_stream exited early"
    finally:
        guest_support.remove_cgroup(doomed)   # kills the workload, removes the cgroup
        proc.wait()
    assert not doomed.exists()
    _wait_for("the engine to drop the removed cgroup",
              lambda: _stats(engine, "doomed").reason == "CgroupNotFound", timeout=60)
    engine.set_targets(targets)   # still configured: retried, still not found, no error
    snap = engine.snapshot()
    assert snap["doomed"].reason == "CgroupNotFound" and not snap["doomed"].applied
    assert snap["stays"].reason == "Applied" and snap["stays"].applied
    assert _high_text(stays) == str(64 * MiB)
    engine.set_targets([targets[1]])
    engine.stop(restore=True)
    assert _high_text(stays) == "max"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


# --- (e) the swappiness key, probed by trying --------------------------------------------

def _direct_write_accepts_swappiness(cg: Path) -> bool:
    fd = os.open(cg / "memory.reclaim", os.O_WRONLY)
    try:
        os.write(fd, f"{1 << 20} swappiness=60".encode())
    except OSError as e:
        if e.errno == errno.EINVAL:
            return False
        assert e.errno == errno.EAGAIN, e   # parsed, then nothing to reclaim
    finally:
        os.close(fd)
    return True


def test_swappiness_key_probe_matches_the_kernel(make_cgroup, engine: ReclaimEngine) -> None:
    cg = make_cgroup("swappiness")
    direct = _direct_write_accepts_swappiness(cg)
    assert caps.probe_swappiness_key(CgroupRoot(cg.parent).cgroup(cg)) is direct
    engine.set_targets([Target("s", cg, 64 * MiB, ReclaimSettings(swappiness=60))])
    assert engine.capabilities.swappiness_key is direct
    assert engine.capabilities.memory_reclaim is True and engine.capabilities.psi is True
    series = ".".join(platform.release().split(".")[:2])
    expected = {"6.1": False, "6.12": True}.get(series)
    if expected is not None:   # the two kernels the guest boots (docs: DESIGN kernel facts)
        assert direct is expected, platform.release()
