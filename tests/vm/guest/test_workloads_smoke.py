"""The workload programs run in a cgroup, charge it, and report what they did."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path


def _stat(cgroup: Path) -> dict[str, int]:
    lines = (cgroup / "memory.stat").read_text().splitlines()
    return {k: int(v) for k, v in (line.split() for line in lines)}


def test_pagecache_stream_charges_its_cgroup(make_cgroup, scratch_dir: Path,
                                             workloads_dir: Path) -> None:
    cg = make_cgroup("stream")
    data = scratch_dir / "data"
    prep = subprocess.run([sys.executable, workloads_dir / "pagecache_stream.py", "--file", data,
                           "--size", "16M", "--prepare-only"],
                          capture_output=True, text=True, check=True)
    assert json.loads(prep.stdout)["created"] is True
    out = subprocess.run([sys.executable, workloads_dir / "pagecache_stream.py", "--file", data,
                          "--size", "16M", "--block", "1M", "--passes", "2", "--cgroup", cg],
                         capture_output=True, text=True, check=True)
    summary = json.loads(out.stdout)
    assert summary["ops"] == 32
    assert summary["bytes"] == 32 << 20
    assert 0 < summary["p50_us"] <= summary["p99_us"] <= summary["max_us"]
    # The reads (after dropping the file's pages) were charged to the workload's cgroup.
    assert _stat(cg)["file"] >= 8 << 20


def test_anon_alloc_memory_goes_to_zram_on_reclaim(make_cgroup, zram_swap: int,
                                                   scratch_dir: Path,
                                                   workloads_dir: Path) -> None:
    cg = make_cgroup("anon")
    ready = scratch_dir / "ready"
    proc = subprocess.Popen([sys.executable, workloads_dir / "anon_alloc.py", "--size", "64M",
                             "--hot", "8M", "--rounds", "2", "--ready-file", ready,
                             "--hold", "600", "--cgroup", cg],
                            stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not ready.exists():
            assert proc.poll() is None, "anon_alloc exited early"
            assert time.monotonic() < deadline, "anon_alloc did not fill its memory"
            time.sleep(0.1)
        assert _stat(cg)["anon"] >= 64 << 20
        with contextlib.suppress(BlockingIOError):  # EAGAIN: less than asked, still some
            (cg / "memory.reclaim").write_text(str(32 << 20))
        assert int((cg / "memory.swap.current").read_text()) > 0
    finally:
        proc.kill()
        proc.wait()
