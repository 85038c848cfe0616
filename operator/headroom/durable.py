"""Durable small files for the agent's state directory: a JSON document replaced
atomically (temp file in the same directory, fsync, rename, fsync of the directory), so
a crash at any moment leaves either the old or the new content, never a torn file; and a
file found unusable is set aside (kept for a person, never read again)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from headroom.logs import event

log = logging.getLogger("headroom.state")
SET_ASIDE_SUFFIX = ".corrupt"


def atomic_write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, sort_keys=True, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def set_aside(path: Path, problem: str, on_set_aside: Callable[[str], Any] | None,
              copy: bool = False) -> None:
    """Keep a bad file for a person to look at (moved, or copied when the valid part is
    kept in place); one log line, and the hook counts it in a metric."""
    aside = path.with_name(path.name + SET_ASIDE_SUFFIX)
    try:
        if copy:
            shutil.copyfile(path, aside)
        else:
            os.replace(path, aside)
        moved: str | None = str(aside)
    except OSError as e:
        moved = None
        problem = f"{problem}; could not move it aside: {e.strerror or e}"
    event(log, "state_file_set_aside", logging.ERROR, path=str(path), error=problem,
          moved_to=moved)
    if on_set_aside is not None:
        with contextlib.suppress(Exception):
            on_set_aside(path.name)
