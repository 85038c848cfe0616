"""The guest's page-cache workload in write mode (tests/vm/workloads/pagecache_stream.py),
run on the host without a cgroup."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "vm" / "workloads" / "pagecache_stream.py"


def test_write_mode_writes_the_whole_file_in_blocks(tmp_path: Path) -> None:
    target = tmp_path / "w.dat"
    target.write_bytes(b"x" * (9 << 20))          # longer than asked: truncated first
    out = subprocess.run([sys.executable, SCRIPT, "--write", "--file", target, "--size",
                          "5M", "--block", "2M", "--fsync-every", "3M"],
                         capture_output=True, text=True, check=True).stdout
    doc = json.loads(out)
    assert doc["workload"] == "pagecache_write" and doc["bytes"] == 5 << 20
    assert doc["ops"] == 3                          # 2 + 2 + 1 MiB
    assert target.stat().st_size == 5 << 20
