"""bench/compare_report.py: the demo's table and plot from a pagecache_compare result."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import compare_report

MiB = 1 << 20


def _arm(name: str, high_events: int, engine: dict | None) -> dict:
    return {"name": name, "memory_high": 256 * MiB, "duration_s": 10.0,
            "psi_some_us": 1_500_000 if engine is None else 0, "psi_full_us": 1_200_000,
            "high_events": high_events, "peak_bytes": 258 * MiB, "bytes_read": 1024 * MiB,
            "latency_us": {"p50": 2500.0, "p99": 81_000.0, "max": 500_000.0, "mean": 3.0},
            "workload_cpu_s": 9.5, "engine": engine,
            "samples": [[0.0, 0, 0], [0.5, 2 * MiB, 0], [1.0, 250 * MiB, high_events]]}


DOC = {"kernel": "6.1.0-test", "options": {"passes": 2, "file_mib": 1024},
       "arms": [_arm("kernel", 2712, None),
                _arm("engine", 0, {"reclaimed_bytes": 1500 * MiB, "reclaim_cpu_s": 3.25,
                                   "reclaim_writes": 120, "engine_cpu_s": 5.5})]}


def test_table_puts_both_arms_side_by_side() -> None:
    text = compare_report.table(DOC)
    lines = text.splitlines()
    assert "Linux 6.1.0-test: 2 x 1024 MiB" in lines[0] and "256 MiB" in lines[0]
    assert "kernel alone" in lines[2] and "headroom engine" in lines[2]
    row = {line.split("  ")[0].strip(): line.split() for line in lines[4:]}
    assert row["memory.events high"][-2:] == ["2,712", "0"]
    assert row["workload stall, PSI some"][-4:] == ["1.500", "s", "0.000", "s"]
    assert row["read latency p99"][-2:] == ["81.0", "ms"]
    assert "1,500 MiB" in text and "3.25 s (120 writes)" in text
    assert "100.8% of high" in text
    # the kernel-alone column has no engine numbers
    assert row["bytes reclaimed by the engine"][-3:] == ["-", "1,500", "MiB"]


def test_plot_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "demo.png"
    compare_report.plot(DOC, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
