"""The agent's on-disk state (a hostPath directory): the last plan and the original
memory.high values it found, so that it keeps enforcing across restarts and while the API
server is away, and can restore pods that left the plan in the meantime.

Two JSON files, each replaced atomically (write a temp file in the same directory, fsync,
rename, fsync the directory): a crash leaves either the old or the new content, never a
torn file.

* ``plan.json``: ``{"version": 1, "plan": {"metadata": {...}, "spec": {...}}}``
* ``originals.json``: ``{"version": 1, "originals": {"<pod uid>": <bytes> | null}}``
  (null = ``max``)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from headroom.logs import event

FORMAT_VERSION = 1
PLAN_FILE = "plan.json"
ORIGINALS_FILE = "originals.json"

log = logging.getLogger("headroom.planstate")


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


def plan_essentials(plan: Mapping[str, Any]) -> dict[str, Any]:
    """What of a NodeReclaimPlan object is worth keeping: name, generation,
    resourceVersion and spec (status is the agent's own output)."""
    meta = plan.get("metadata") or {}
    return {
        "metadata": {k: meta[k] for k in ("name", "generation", "resourceVersion") if k in meta},
        "spec": plan.get("spec") or {},
    }


class StateStore:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    def _load(self, name: str, key: str) -> Any | None:
        path = self.dir / name
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            # Keep the bad file for a person to look at; start as if it were absent.
            event(log, "state_file_unreadable", logging.ERROR, path=str(path), error=str(e),
                  moved_to=str(path) + ".corrupt")
            with contextlib.suppress(OSError):
                os.replace(path, path.with_name(path.name + ".corrupt"))
            return None
        if not isinstance(raw, dict) or raw.get("version") != FORMAT_VERSION:
            event(log, "state_file_unknown_format", logging.ERROR, path=str(path))
            return None
        return raw.get(key)

    def load_plan(self) -> dict[str, Any] | None:
        plan = self._load(PLAN_FILE, "plan")
        return plan if isinstance(plan, dict) else None

    def save_plan(self, plan: Mapping[str, Any] | None) -> None:
        """Save the plan; None (the plan was deleted) saves an empty plan, which is
        what the agent must keep enforcing: nothing."""
        essentials = plan_essentials(plan) if plan is not None else {"metadata": {}, "spec": {}}
        atomic_write_json(self.dir / PLAN_FILE, {"version": FORMAT_VERSION, "plan": essentials})

    def load_originals(self) -> dict[str, int | None]:
        raw = self._load(ORIGINALS_FILE, "originals")
        if not isinstance(raw, dict):
            return {}
        return {
            str(k): (int(v) if v is not None else None)
            for k, v in raw.items()
            if v is None or isinstance(v, int)
        }

    def save_originals(self, originals: Mapping[str, int | None]) -> None:
        atomic_write_json(
            self.dir / ORIGINALS_FILE,
            {"version": FORMAT_VERSION, "originals": dict(originals)},
        )
