"""A cgroup root and the cgroup directories under it: typed readers and writers."""

from __future__ import annotations

import os
import pathlib

from headroom.cgroup import fs
from headroom.cgroup.errors import CgroupError, UnsafePath, UnsupportedKey
from headroom.cgroup.parse import Pressure, parse_flat_keyed, parse_limit, parse_pressure
from headroom.cgroup.watch import EventsWatch, PsiTrigger, Watch

# Files read on every check or stats refresh: kept open and re-read with pread.
_KEPT_OPEN = frozenset({"memory.current", "memory.high", "memory.max", "memory.events",
                        "memory.pressure"})


class Cgroup:
    """One cgroup directory. Methods raise the typed errors of headroom.cgroup.errors.

    The files read often are opened on first use and kept open (fs.KeptOpen) until
    `close()` or until this object goes away; a removed cgroup's open file answers
    ENODEV, which reads as CgroupGone like a failed open."""

    def __init__(self, root: CgroupRoot, path: pathlib.Path):
        self.root = root
        self.path = path
        self.is_root = path == root.path
        self._open: dict[str, fs.KeptOpen] = {}

    def close(self) -> None:
        """Close the kept-open files (they are reopened if read again)."""
        files, self._open = self._open, {}
        for f in files.values():
            f.close()

    def __repr__(self) -> str:
        return f"Cgroup({str(self.path)!r})"

    @property
    def rel(self) -> str:
        """Path relative to the root ("." for the root itself)."""
        return str(self.path.relative_to(self.root.path))

    def file(self, name: str) -> pathlib.Path:
        return self.path / name

    def exists(self) -> bool:
        return self.path.is_dir()

    def _read(self, name: str) -> str:
        if name not in _KEPT_OPEN:
            return fs.read_text(self.file(name))
        return self._kept(name).read().decode()

    def _kept(self, name: str) -> fs.KeptOpen:
        f = self._open.get(name)
        if f is None:
            f = self._open[name] = fs.KeptOpen(self.file(name), self.root.fake)
        return f

    def _read_parsed(self, name: str, parser):  # type: ignore[no-untyped-def]
        text = self._read(name)
        try:
            return parser(text)
        except (ValueError, KeyError) as e:
            raise CgroupError(self.file(name), f"cannot parse {text[:80]!r}: {e}") from e

    def _write(self, name: str, data: str) -> None:
        if self.is_root:
            raise UnsafePath(self.file(name), "refusing to write a file of the cgroup root")
        fs.write_text(self.file(name), data)

    # --- readers ---------------------------------------------------------
    def read_current(self) -> int:
        # the hot path of every check: int() of the bytes, no decode or strip
        data = self._kept("memory.current").read(64)
        try:
            return int(data)
        except ValueError as e:
            raise CgroupError(self.file("memory.current"),
                              f"cannot parse {data[:80]!r}: {e}") from e

    def read_high(self) -> int | None:
        return self._read_parsed("memory.high", parse_limit)

    def read_max(self) -> int | None:
        return self._read_parsed("memory.max", parse_limit)

    def read_stat(self) -> dict[str, int]:
        return self._read_parsed("memory.stat", parse_flat_keyed)

    def read_events(self, local: bool = False) -> dict[str, int]:
        return self._read_parsed("memory.events.local" if local else "memory.events",
                                 parse_flat_keyed)

    def read_pressure(self) -> Pressure:
        return self._read_parsed("memory.pressure", parse_pressure)

    # --- writers ---------------------------------------------------------
    def write_high(self, value: int | None) -> None:
        """memory.high: bytes (rounded down to a page) or None for "max"."""
        if value is None:
            self._write("memory.high", "max")
        else:
            if value < 0:
                raise ValueError(f"memory.high must be >= 0, not {value}")
            self._write("memory.high", str(value - value % fs.PAGE_SIZE))

    def reclaim(self, nbytes: int, swappiness: int | None = None) -> None:
        """Write memory.reclaim. PartialReclaim (EAGAIN) when less than asked was freed;
        UnsupportedKey (EINVAL) when the kernel does not know `swappiness=`."""
        if nbytes <= 0:
            raise ValueError(f"reclaim amount must be > 0, not {nbytes}")
        data = str(nbytes) if swappiness is None else f"{nbytes} swappiness={swappiness}"
        self._write("memory.reclaim", data)

    # --- notifications ---------------------------------------------------
    def psi_trigger(self, stall_us: int, window_us: int) -> Watch:
        if self.root.fake:
            raise UnsupportedKey(self.file("memory.pressure"),
                                 "PSI triggers need a real cgroup2 file system")
        return PsiTrigger(self.file("memory.pressure"), stall_us, window_us)

    def events_watch(self) -> Watch:
        if self.root.fake:
            raise UnsupportedKey(self.file("memory.events"),
                                 "change notification needs a real cgroup2 file system")
        return EventsWatch(self.file("memory.events"))


class CgroupRoot:
    """A verified cgroup v2 mount (or an explicitly allowed fake tree).

    `allow_fake=True` (or env HEADROOM_ALLOW_FAKE_CGROUP_ROOT=1) accepts a plain
    directory for unit tests; a non-cgroup2 /sys/fs/cgroup is refused anyway.
    """

    def __init__(self, path: str | os.PathLike[str], *, allow_fake: bool = False):
        self.path = pathlib.Path(os.path.realpath(path))
        self.fake = fs.check_root(self.path, allow_fake)

    def __repr__(self) -> str:
        return f"CgroupRoot({str(self.path)!r}{', fake' if self.fake else ''})"

    def cgroup(self, path: str | os.PathLike[str]) -> Cgroup:
        """A cgroup by absolute path or path relative to the root; must lie inside the root."""
        return self._make(fs.resolve_inside(self.path, path))

    def _make(self, path: pathlib.Path) -> Cgroup:
        """Factory hook: a test double of the kernel overrides this."""
        return Cgroup(self, path)

    def glob(self, pattern: str) -> list[Cgroup]:
        """Cgroup directories matching a glob relative to the root (never the root itself)."""
        if pathlib.PurePath(pattern).is_absolute() or ".." in pathlib.PurePath(pattern).parts:
            raise UnsafePath(pattern, "glob must be relative to the cgroup root, without '..'")
        out = []
        for p in sorted(self.path.glob(pattern)):
            if p.is_dir() and not p.is_symlink():
                try:
                    cg = self.cgroup(p)
                except UnsafePath:
                    continue
                if not cg.is_root:
                    out.append(cg)
        return out
