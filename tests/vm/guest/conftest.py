"""Tests in this directory run only inside the QEMU test guest, on a real kernel.

On any other machine they are collected and skipped: the check (HEADROOM_IN_GUEST=1,
then /sys/fs/cgroup is cgroup2fs with the memory controller) runs at collection,
before any fixture or test can touch a cgroup file. tests/vm/test_real_kernel.py
boots one guest per kernel that runs `pytest tests/vm/guest` (docs/testing.md).

Fixtures for guest tests: cgroup_root, make_cgroup, scratch_dir, zram_swap,
workloads_dir.
"""

from __future__ import annotations

import itertools
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

VM_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(VM_DIR))
import guest_support  # noqa: E402

HERE = Path(__file__).resolve().parent
GUEST_PROBLEM = guest_support.guest_problem()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items: touch only the ones in this directory.
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.vm)
            if GUEST_PROBLEM:
                item.add_marker(pytest.mark.skip(reason=GUEST_PROBLEM))


@pytest.fixture(scope="session")
def cgroup_root() -> Path:
    """The guest's cgroup2 root, with +memory in cgroup.subtree_control."""
    guest_support.require_cgroup2(guest_support.CGROUP_ROOT)
    return guest_support.CGROUP_ROOT


_serial = itertools.count()


@pytest.fixture
def make_cgroup(cgroup_root: Path) -> Iterator[Callable[[str], Path]]:
    """make_cgroup("name") -> a new child cgroup of the root, killed and removed after
    the test (the name gets a unique prefix)."""
    made: list[Path] = []

    def make(name: str = "cg") -> Path:
        path = guest_support.create_cgroup(cgroup_root, f"t{next(_serial)}-{name}")
        made.append(path)
        return path

    yield make
    for path in reversed(made):
        guest_support.remove_cgroup(path)


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """A fresh directory on the guest's ext4 scratch disk (real page cache, unlike 9p)."""
    path = Path(tempfile.mkdtemp(dir=guest_support.SCRATCH))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def zram_swap() -> Iterator[int]:
    """zram swap (1 GiB) for the duration of the test; yields its size in bytes.
    Without this fixture the guest has no swap at all."""
    size = 1 << 30
    guest_support.enable_zram_swap(size)
    yield size
    guest_support.disable_zram_swap()


@pytest.fixture(scope="session")
def workloads_dir() -> Path:
    """tests/vm/workloads: run its programs with sys.executable."""
    return VM_DIR / "workloads"
