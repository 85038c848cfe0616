"""Fixtures shared by the unit tests: a fake cgroup v2 tree and a fake "kernel".

`cgroup_tree` is a temporary directory shaped like a cgroup v2 mount
(cgroup.controllers at the root; memory.current/high/max/stat/events/
events.local/pressure/reclaim in every cgroup made with `add`). The real file
layer (headroom.cgroup) reads and writes it as it would /sys/fs/cgroup.

`fake_kernel` is a `CgroupRoot` over that tree whose cgroups behave like the
kernel where plain files cannot:
* writing memory.reclaim lowers memory.current down to a per-cgroup floor of
  unreclaimable memory, raising PartialReclaim (EAGAIN) when it falls short;
* `grow(rel, n)` charges memory: above memory.high it counts a `high` event,
  adds PSI stall time and clamps usage at memory.high (the workload throttled);
* PSI triggers and memory.events watches are pipes; `fire(rel)` wakes them;
* `swappiness_supported = False` makes `swappiness=` fail with EINVAL.

    def test_x(fake_kernel):
        fake_kernel.tree.add("a", current=100 << 20, high=None)
        fake_kernel.grow("a", 1 << 20)
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import select
import shutil
import tempfile
import threading
from collections.abc import Iterator

import pytest
from fake_cgroup_tree import FakeTree
from headroom.cgroup import Cgroup, CgroupGone, CgroupRoot, PartialReclaim, UnsupportedKey


class PipeWatch:
    """Stands in for a PSI trigger / memory.events fd: readable when fired."""

    poll_events = select.EPOLLIN

    def __init__(self, kernel: FakeKernel, rel: str, kind: str):
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self.kernel, self.rel, self.kind = kernel, rel, kind
        self.closed = False

    def fileno(self) -> int:
        return self._r

    def fire(self) -> None:
        os.write(self._w, b"x")

    def acknowledge(self) -> dict[str, int] | None:
        with contextlib.suppress(BlockingIOError):
            os.read(self._r, 4096)
        if self.kind == "events":
            try:
                return self.kernel.tree.events(self.rel)
            except FileNotFoundError as e:
                raise CgroupGone(self.rel, "gone") from e
        return None

    def close(self) -> None:
        if not self.closed:
            os.close(self._r)
            os.close(self._w)
            self.closed = True


class FakeCgroup(Cgroup):
    root: FakeKernel

    def reclaim(self, nbytes: int, swappiness: int | None = None) -> None:
        super().reclaim(nbytes, swappiness)  # the real write (validates, raises CgroupGone)
        self.root.simulate_reclaim(self, nbytes, swappiness)

    def psi_trigger(self, stall_us: int, window_us: int) -> PipeWatch:
        if not self.exists():
            raise CgroupGone(self.file("memory.pressure"), "gone")
        return self.root.new_watch(self.rel, "psi")

    def events_watch(self) -> PipeWatch:
        if not self.exists():
            raise CgroupGone(self.file("memory.events"), "gone")
        return self.root.new_watch(self.rel, "events")


class FakeKernel(CgroupRoot):
    """The kernel side of memory.reclaim / memory.high, simulated on a FakeTree."""

    def __init__(self, tree: FakeTree):
        super().__init__(tree.root, allow_fake=True)
        self.tree = tree
        self.swappiness_supported = True
        self.floor: dict[str, int] = {}  # rel -> unreclaimable bytes
        self.overshoot: dict[str, int] = {}  # rel -> bytes freed per write beyond those asked
        self.inflow: dict[str, int] = {}     # rel -> bytes the workload charges during a write
        self.reclaim_calls: list[tuple[str, int, int | None]] = []
        self.watches: list[PipeWatch] = []
        self.lock = threading.Lock()

    def _make(self, path: pathlib.Path) -> FakeCgroup:
        return FakeCgroup(self, path)

    def new_watch(self, rel: str, kind: str) -> PipeWatch:
        w = PipeWatch(self, rel, kind)
        self.watches.append(w)
        return w

    def simulate_reclaim(self, cg: Cgroup, nbytes: int, swappiness: int | None) -> None:
        rel = cg.rel
        with self.lock:
            self.reclaim_calls.append((rel, nbytes, swappiness))
            if swappiness is not None and not self.swappiness_supported:
                raise UnsupportedKey(cg.file("memory.reclaim"), "write failed (EINVAL)")
            current = self.tree.current(rel)
            freed = max(0, min(nbytes + self.overshoot.get(rel, 0),
                               current - self.floor.get(rel, 0)))
            self.tree.write(rel, "memory.current",
                            f"{current - freed + self.inflow.get(rel, 0)}\n")
        if freed < nbytes:
            raise PartialReclaim(cg.file("memory.reclaim"), "write failed (EAGAIN)")

    def grow(self, rel: str, nbytes: int) -> None:
        """The workload charges nbytes; over memory.high it is throttled (a high event)."""
        with self.lock:
            current = self.tree.current(rel) + nbytes
            high = self.tree.high(rel)
            over = high != "max" and current > int(high)
            if over:
                current = int(high)
                self.tree.set_events(rel, high=self.tree.events(rel)["high"] + 1)
                self.tree.set_pressure(rel, self.tree.some_us(rel) + 1000)
            self.tree.write(rel, "memory.current", f"{current}\n")
        if over:
            self.fire(rel, "events")  # the kernel notifies memory.events pollers

    def fire(self, rel: str, kind: str | None = None) -> None:
        for w in self.watches:
            if w.rel == rel and not w.closed and kind in (None, w.kind):
                w.fire()

    def open_watches(self) -> list[PipeWatch]:
        return [w for w in self.watches if not w.closed]


@pytest.fixture
def cgroup_tree(tmp_path: pathlib.Path) -> Iterator[FakeTree]:
    # tmpfs when there is one: closer to kernfs (no journal) and much faster to rewrite
    shm = pathlib.Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        base = pathlib.Path(tempfile.mkdtemp(prefix="headroom-cgroup-", dir=shm))
        yield FakeTree(base / "cgroup")
        shutil.rmtree(base, ignore_errors=True)
    else:
        yield FakeTree(tmp_path / "cgroup")


@pytest.fixture
def fake_kernel(cgroup_tree: FakeTree) -> FakeKernel:
    return FakeKernel(cgroup_tree)
