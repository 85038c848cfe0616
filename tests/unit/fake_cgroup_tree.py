"""A cgroup-v2-shaped directory tree in a tmp dir (the unit tests' `cgroup_tree`
fixture, and the API tier's fake kubepods trees): cgroup.controllers at the root;
memory.current/high/max/stat/events/events.local/pressure/reclaim in every cgroup
made with `add`. Importable by name from both tiers (unlike a conftest)."""

from __future__ import annotations

import os
import pathlib
import shutil

EVENT_KEYS = ("low", "high", "max", "oom", "oom_kill", "oom_group_kill")


def _pressure_text(some_us: int = 0, full_us: int = 0) -> str:
    return (f"some avg10=0.00 avg60=0.00 avg300=0.00 total={some_us}\n"
            f"full avg10=0.00 avg60=0.00 avg300=0.00 total={full_us}\n")


def _events_text(events: dict[str, int]) -> str:
    return "".join(f"{k} {events.get(k, 0)}\n" for k in EVENT_KEYS)


class FakeTree:
    """A cgroup-v2-shaped directory tree in a tmp dir."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
        (root / "cgroup.subtree_control").write_text("memory\n")
        for name in ("memory.stat", "memory.pressure"):
            (root / name).write_text("")
        (root / "memory.pressure").write_text(_pressure_text())

    def path(self, rel: str) -> pathlib.Path:
        return self.root / rel

    def add(self, rel: str, *, current: int = 0, high: int | None = None,
            max: int | None = None, reclaim_file: bool = True) -> pathlib.Path:
        d = self.path(rel)
        d.mkdir(parents=True, exist_ok=True)
        files = {
            "cgroup.controllers": "memory\n",
            "memory.current": f"{current}\n",
            "memory.high": "max\n" if high is None else f"{high}\n",
            "memory.max": "max\n" if max is None else f"{max}\n",
            "memory.stat": f"anon 0\nfile {current}\npgscan_direct 0\npgsteal_direct 0\n",
            "memory.events": _events_text({}),
            "memory.events.local": _events_text({}),
            "memory.pressure": _pressure_text(),
        }
        if reclaim_file:
            files["memory.reclaim"] = ""
        for name, text in files.items():
            (d / name).write_text(text)
        return d

    def remove(self, rel: str) -> None:
        shutil.rmtree(self.path(rel))

    def read(self, rel: str, name: str) -> str:
        return self.path(rel).joinpath(name).read_text()

    def write(self, rel: str, name: str, text: str) -> None:
        # Overwrite in place rather than truncate-to-zero: ext4 flushes a file that was
        # truncated to zero and rewritten on close (auto_da_alloc), ~2 ms per write.
        data = text.encode()
        fd = os.open(self.path(rel) / name, os.O_WRONLY)
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
        finally:
            os.close(fd)

    def current(self, rel: str) -> int:
        return int(self.read(rel, "memory.current"))

    def high(self, rel: str) -> str:
        return self.read(rel, "memory.high").strip()

    def events(self, rel: str) -> dict[str, int]:
        return {k: int(v) for k, v in (ln.split() for ln in self.read(rel, "memory.events")
                                       .splitlines())}

    def set_events(self, rel: str, **counts: int) -> None:
        ev = self.events(rel)
        ev.update(counts)
        self.write(rel, "memory.events", _events_text(ev))

    def set_pressure(self, rel: str, some_us: int, full_us: int = 0) -> None:
        self.write(rel, "memory.pressure", _pressure_text(some_us, full_us))

    def some_us(self, rel: str) -> int:
        first = self.read(rel, "memory.pressure").splitlines()[0]
        return int(first.rsplit("total=", 1)[1])

    def contents(self) -> dict[str, tuple[bytes, int]]:
        """Every file's bytes and mtime: compare before/after to prove nothing was written."""
        return {str(p.relative_to(self.root)): (p.read_bytes(), p.stat().st_mtime_ns)
                for p in sorted(self.root.rglob("*")) if p.is_file()}
