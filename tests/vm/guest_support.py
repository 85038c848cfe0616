"""Helpers for code that runs inside the QEMU test guest: the safety check that a
directory is a real cgroup2 tree, making and removing child cgroups, zram swap, and
latency summaries for the workloads.

Every write under a cgroup directory goes through `require_cgroup2` first: on the
development hosts /sys/fs/cgroup is a tmpfs where writes "succeed" and do harm.
Stdlib only; used by tests/vm/guest/ and tests/vm/workloads/.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP2_SUPER_MAGIC = 0x63677270
SCRATCH = Path("/mnt/scratch")  # the guest's ext4 disk (tests/vm/guest_init.sh)
ZRAM = Path("/sys/block/zram0")


class NotACgroup(RuntimeError):
    """Refusing to write: the directory is not on a cgroup2 filesystem."""


def fs_magic(path: Path) -> int:
    """f_type of statfs(2) for path (Python's os.statvfs does not expose it)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on x86_64
    if libc.statfs(os.fsencode(path), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(path))
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def cgroup2_problem(path: Path) -> str | None:
    """Why path is not a cgroup2 directory with the memory controller, or None."""
    try:
        magic = fs_magic(path)
    except OSError as e:
        return f"{path}: {e.strerror}"
    if magic != CGROUP2_SUPER_MAGIC:
        return f"{path} is not on a cgroup2 filesystem (statfs type {magic:#x})"
    controllers = (path / "cgroup.controllers").read_text().split()
    if "memory" not in controllers:
        return f"{path}: no memory controller in cgroup.controllers ({' '.join(controllers)})"
    return None


def guest_problem(environ: Mapping[str, str] = os.environ,
                  root: Path = CGROUP_ROOT) -> str | None:
    """Why this is not the test guest (None if it is). Reads only: the environment
    first, then statfs and cgroup.controllers of the root."""
    if environ.get("HEADROOM_IN_GUEST") != "1":
        return ("runs only inside the QEMU test guest (HEADROOM_IN_GUEST=1): "
                "see scripts/vm-run and tests/vm/test_real_kernel.py")
    return cgroup2_problem(root)


def require_cgroup2(path: Path) -> None:
    problem = cgroup2_problem(path)
    if problem:
        raise NotACgroup(problem)


def join_cgroup(path: Path, pid: int = 0) -> None:
    """Move pid (default: this process) into the cgroup directory path."""
    require_cgroup2(path)
    (path / "cgroup.procs").write_text(f"{pid or os.getpid()}\n")


def create_cgroup(parent: Path, name: str) -> Path:
    """A new child cgroup (the memory controller is on in the guest's root)."""
    require_cgroup2(parent)
    path = parent / name
    path.mkdir()
    return path


def remove_cgroup(path: Path, timeout: float = 30) -> None:
    """Kill everything in the cgroup and its children, then remove them."""
    if not path.exists():
        return
    require_cgroup2(path)
    for child in sorted((p for p in path.iterdir() if p.is_dir()), reverse=True):
        remove_cgroup(child, timeout)
    (path / "cgroup.kill").write_text("1\n")
    deadline = time.monotonic() + timeout
    while True:
        try:
            path.rmdir()
            return
        except OSError as e:  # EBUSY until the killed tasks are gone
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def swap_devices() -> list[str]:
    lines = Path("/proc/swaps").read_text().splitlines()[1:]
    return [line.split()[0] for line in lines]


def enable_zram_swap(size_bytes: int) -> None:
    """Turn on /dev/zram0 as swap (no-op if it already is)."""
    if "/dev/zram0" in swap_devices():
        return
    (ZRAM / "disksize").write_text(f"{size_bytes}\n")
    subprocess.run(["mkswap", "/dev/zram0"], check=True, capture_output=True)
    subprocess.run(["swapon", "/dev/zram0"], check=True, capture_output=True)


def disable_zram_swap() -> None:
    """Turn zram swap off and free the device."""
    if "/dev/zram0" in swap_devices():
        subprocess.run(["swapoff", "/dev/zram0"], check=True, capture_output=True)
    (ZRAM / "reset").write_text("1\n")


def measured_twice(measure: Callable[[], T], misses: Callable[[T], list[str]]
                   ) -> tuple[T, list[str], int]:
    """A comparison whose bounds depend on the emulated guest's speed: measured once
    more, in the same boot, when the first run misses a bound (a host that starves the
    guest's CPUs for a few seconds can do that). Returns the last result, the bounds it
    missed (empty: held) and the number of runs; every run's misses are printed."""
    result = measure()
    missed = misses(result)
    if not missed:
        return result, missed, 1
    print(f"first run missed {', '.join(missed)}: measuring once more", flush=True)
    result = measure()
    return result, misses(result), 2


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of already sorted values."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * p // 100))  # ceil without floats drifting
    return sorted_values[int(min(rank, len(sorted_values))) - 1]


def latency_summary(latencies_ns: Sequence[int]) -> dict[str, float | int]:
    """ops, p50/p99/max/mean in microseconds of per-operation latencies."""
    values = sorted(latencies_ns)
    n = len(values)
    return {
        "ops": n,
        "p50_us": percentile(values, 50) / 1000,
        "p99_us": percentile(values, 99) / 1000,
        "max_us": (values[-1] / 1000) if n else 0.0,
        "mean_us": (sum(values) / n / 1000) if n else 0.0,
    }


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """Bytes of a size such as 4096, 64K, 512M or 1G (binary units, optional 'iB')."""
    s = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = s[-1:] if s[-1:] in _UNITS else ""
    number = s[: len(s) - len(unit)]
    if not number.isdigit():
        raise ValueError(f"not a size: {text!r} (examples: 4096, 64K, 512M, 1G)")
    return int(number) * _UNITS[unit]
