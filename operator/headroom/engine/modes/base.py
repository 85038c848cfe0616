"""The interface of a reclaim mode and the registry of modes by name.

A mode says how much to reclaim at one check and when to look again; the engine does
the rest (budgets, back-off, writes, memory.high). A new mode is a new file in this
package with a `register(...)`d instance, imported in `__init__.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from headroom.engine.decisions import Tuning
    from headroom.engine.state import CgroupState
    from headroom.engine.targets import ReclaimSettings


@dataclass(frozen=True)
class Check:
    """One check of one cgroup, as a mode sees it."""

    st: CgroupState
    usage: int
    now: float
    tuning: Tuning
    dry: bool
    classic_lru: bool   # the kernel's LRU (capabilities.probe_classic_lru)


class Mode:
    name: ClassVar[str]
    reclaims: ClassVar[bool] = True    # False: memory.reclaim only to lower memory.high
                                       # (no capability probe, no PSI/events watches)

    def want(self, c: Check) -> tuple[int, float]:
        """(bytes to reclaim now, seconds until the next check)."""
        raise NotImplementedError

    def reclaimed(self, st: CgroupState, usage_after: int, tuning: Tuning) -> None:
        """A reclaim write succeeded and usage is now `usage_after`."""

    def lowering_headroom(self, s: ReclaimSettings) -> float:
        """A lower memory.high waits while usage is at or above value × (1 − this %)."""
        return s.headroom_percent


_REGISTRY: dict[str, Mode] = {}


def register(mode: Mode) -> Mode:
    _REGISTRY[mode.name] = mode
    return mode


def get(name: str) -> Mode:
    return _REGISTRY[name]


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)
