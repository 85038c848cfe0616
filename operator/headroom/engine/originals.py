"""The original memory.high of every cgroup the engine owns, kept durably in a state
directory (write-ahead: on disk, fsync'd, before the engine's first write to the cgroup).

One file, ``<state dir>/originals.json``, replaced atomically (headroom.durable)::

    {"version": 2,
     "originals": {"<key>": {"path": "/sys/fs/cgroup/.../pod<uid>.slice",
                             "original": 314572800,       # bytes; null = "max"
                             "ours": [268435456]}}}       # values the engine wrote

``ours`` holds the last (at most two) values the engine wrote or was about to write:
after a crash, memory.high holds one of them or the original. A value found in ``ours``
is the engine's own, so it is put back to ``original`` on release; any other value was
set by someone else since and is left alone. Version 1 files (``{"<key>": bytes|null}``,
written by earlier agents) are read as originals without path and ``ours``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headroom.durable import atomic_write_json, set_aside

FILE = "originals.json"
VERSION = 2
OURS_KEPT = 2

log = logging.getLogger("headroom.engine")


@dataclass(frozen=True)
class Saved:
    original: int | None                 # None = "max"
    path: str | None = None              # absolute cgroup directory (None: unknown, v1)
    ours: tuple[int, ...] = ()           # what the engine wrote there, newest last


class OriginalsJournal:
    """Thread-safe. `directory=None` keeps everything in memory only (dry run, tests).
    `record`/`add_ours`/`forget` return once the file is on disk; they raise OSError when
    it cannot be written, and the caller must then not write memory.high."""

    def __init__(self, directory: str | os.PathLike[str] | None,
                 on_set_aside: Callable[[str], Any] | None = None) -> None:
        self.path = None if directory is None else Path(directory) / FILE
        self._lock = threading.Lock()
        self._entries: dict[str, Saved] = ({} if self.path is None
                                           else read(self.path, on_set_aside))

    def get(self, key: str) -> Saved | None:
        with self._lock:
            return self._entries.get(key)

    def entries(self) -> dict[str, Saved]:
        with self._lock:
            return dict(self._entries)

    def record(self, key: str, saved: Saved) -> None:
        with self._lock:
            if self._entries.get(key) == saved:
                return
            new = {**self._entries, key: saved}
            self._flush(new)
            self._entries = new

    def add_ours(self, key: str, path: str, value: int) -> None:
        """Before the engine writes `value`: remember it as the engine's own."""
        with self._lock:
            old = self._entries.get(key)
            if old is None:
                raise KeyError(f"no original recorded for {key!r}")
            if value in old.ours and old.path == path:
                return
            ours = (*tuple(v for v in old.ours if v != value)[-(OURS_KEPT - 1):], value)
            new = {**self._entries, key: Saved(old.original, path, ours)}
            self._flush(new)
            self._entries = new

    def forget(self, key: str) -> None:
        with self._lock:
            if key not in self._entries:
                return
            new = {k: v for k, v in self._entries.items() if k != key}
            self._flush(new)
            self._entries = new

    def _flush(self, entries: Mapping[str, Saved]) -> None:
        if self.path is not None:
            _write(self.path, entries)


INT64_MAX = 2**63 - 1
PAGE_SIZE = 4096      # what the kernel reads back is page aligned (4 KiB on every arch we run)


def _int_or_none(v: Any) -> int | None:
    """None ("max") or bytes as the kernel reads memory.high back: page aligned, int64."""
    if v is None:
        return None
    if (isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= INT64_MAX
            or v % PAGE_SIZE):
        raise ValueError(f"not null or page-aligned bytes within int64: {v!r}")
    return v


def _entry(raw: Any, version: int) -> Saved:
    if version == 1:
        return Saved(_int_or_none(raw))
    if not isinstance(raw, dict):
        raise ValueError(f"not an object: {raw!r}")
    path = raw.get("path")
    if path is not None and not isinstance(path, str):
        raise ValueError(f"path is not a string: {path!r}")
    ours = raw.get("ours") or []
    if not isinstance(ours, list):
        raise ValueError(f"ours is not a list: {ours!r}")
    return Saved(_int_or_none(raw.get("original")), path,
                 tuple(v for v in (_int_or_none(x) for x in ours) if v is not None))


def read(path: Path, on_set_aside: Callable[[str], Any] | None = None) -> dict[str, Saved]:
    """The saved originals; {} when there are none. Never raises: a file that cannot be
    read or parsed, or has another format or shape, is set aside; entries that cannot be
    used are dropped one by one (the file is copied aside and the valid ones are
    written back)."""
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as e:
        set_aside(path, f"unreadable: {getattr(e, 'strerror', None) or e}", on_set_aside)
        return {}
    version = raw.get("version") if isinstance(raw, dict) else None
    originals = raw.get("originals") if isinstance(raw, dict) else None
    if type(version) is not int or version not in (1, VERSION) \
            or not isinstance(originals, dict):
        set_aside(path, f"unknown format (version {version!r}) or originals not an object",
                  on_set_aside)
        return {}
    out: dict[str, Saved] = {}
    bad: list[str] = []
    for key, value in originals.items():
        try:
            out[str(key)] = _entry(value, version)
        except ValueError:
            bad.append(str(key))
    if bad:
        set_aside(path, f"{len(bad)} unusable original(s): {', '.join(sorted(bad)[:5])}",
                  on_set_aside, copy=True)
        with contextlib.suppress(OSError):
            _write(path, out)
    return out


def _write(path: Path, entries: Mapping[str, Saved]) -> None:
    atomic_write_json(path, {"version": VERSION, "originals": {
        k: {"path": v.path, "original": v.original, "ours": list(v.ours)}
        for k, v in entries.items()}})
