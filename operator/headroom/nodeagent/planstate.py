"""The agent's on-disk state (a hostPath directory): the last plan, so that it keeps
enforcing across restarts and while the API server is away.

``plan.json``: ``{"version": 1, "plan": {"metadata": {...}, "spec": {...}}}``, replaced
atomically (headroom.durable): a crash leaves either the old or the new content. The
original memory.high values live in the same directory, in ``originals.json``, written
by the engine itself before its first write to a cgroup (headroom.engine.originals).

Nothing read back is trusted: a file that cannot be read or parsed, has another format
version or the wrong shape is moved aside to ``<name>.corrupt`` (kept for a person to
look at; one log line, and ``on_set_aside`` counts it in a metric) and the agent starts
as if it were absent: from the API server's plan. Loading never raises: an agent that
exits on its own files would crash-loop on them until someone deletes them by hand.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from headroom.durable import atomic_write_json, set_aside

FORMAT_VERSION = 1
PLAN_FILE = "plan.json"


log = logging.getLogger("headroom.planstate")


def plan_essentials(plan: Mapping[str, Any]) -> dict[str, Any]:
    """What of a NodeReclaimPlan object is worth keeping: name, generation,
    resourceVersion and spec (status is the agent's own output)."""
    meta = plan.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    spec = plan.get("spec")
    return {
        "metadata": {k: meta[k] for k in ("name", "generation", "resourceVersion") if k in meta},
        "spec": spec if isinstance(spec, Mapping) else {},   # (found by the property tests)
    }


class StateStore:
    def __init__(self, directory: str | Path,
                 on_set_aside: Callable[[str], Any] | None = None) -> None:
        self.dir = Path(directory)
        self.on_set_aside = on_set_aside   # called with the file name (a metric)

    def set_aside(self, name: str, problem: str) -> None:
        """Keep the bad file for a person to look at; the agent goes on without it."""
        set_aside(self.dir / name, problem, self.on_set_aside)

    def _load(self, name: str, key: str) -> Any | None:
        path = self.dir / name
        try:
            raw = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as e:
            # unreadable (a directory, no permission, EIO) or not JSON (a torn write by
            # some other tool, garbage, nesting beyond the parser's limit)
            self.set_aside(name, f"unreadable: {getattr(e, 'strerror', None) or e}")
            return None
        if not isinstance(raw, dict) or type(raw.get("version")) is not int \
                or raw["version"] != FORMAT_VERSION:
            version = raw.get("version") if isinstance(raw, dict) else None
            self.set_aside(name, f"unknown format (version {version!r}, expected "
                                  f"{FORMAT_VERSION})")
            return None
        if raw.get(key) is None:
            self.set_aside(name, f"no {key!r} in the file")
            return None
        return raw[key]

    def load_plan(self) -> dict[str, Any] | None:
        """The saved plan essentials, or None. Entries are not checked here: the agent
        checks each one as it checks the API's (a bad entry spoils only itself)."""
        plan = self._load(PLAN_FILE, "plan")
        if plan is None:
            return None
        if (not isinstance(plan, dict) or not isinstance(plan.get("spec", {}), dict)
                or not isinstance(plan.get("metadata", {}), dict)):
            self.set_aside(PLAN_FILE, "plan is not an object with spec and metadata objects")
            return None
        return plan

    def save_plan(self, plan: Mapping[str, Any] | None) -> None:
        """Save the plan; None (the plan was deleted) saves an empty plan, which is
        what the agent must keep enforcing: nothing."""
        essentials = plan_essentials(plan) if plan is not None else {"metadata": {}, "spec": {}}
        atomic_write_json(self.dir / PLAN_FILE, {"version": FORMAT_VERSION, "plan": essentials})
