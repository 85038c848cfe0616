"""Kernel capabilities, probed by trying on a real cgroup (never from the kernel version)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from headroom.cgroup.cgroup import Cgroup
from headroom.cgroup.errors import CgroupError, CgroupGone, PartialReclaim, UnsupportedKey
from headroom.cgroup.fs import PAGE_SIZE

# What a probe trigger asks for; the kernel accepts windows of 500 ms .. 10 s.
PROBE_PSI_STALL_US = 100_000
PROBE_PSI_WINDOW_US = 1_000_000


@dataclass(frozen=True)
class Capabilities:
    """None: not probed (yet), e.g. in dry-run mode where nothing is written."""

    memory_reclaim: bool | None = None
    swappiness_key: bool | None = None
    psi: bool | None = None
    classic_lru: bool | None = None   # False: multi-gen LRU (its own aging, no
                                      # active/inactive balance to respect)


LRU_GEN_SWITCH = Path("/sys/kernel/mm/lru_gen/enabled")


def classic_lru_switch(switch: Path = LRU_GEN_SWITCH) -> bool:
    """Whether the kernel reclaims with the classic active/inactive LRU: no multi-gen LRU
    built in (no switch), or built in and switched off (bit 0 of its `enabled` mask)."""
    try:
        return not int(switch.read_text().strip(), 0) & 1
    except (OSError, ValueError):
        return True


def probe_classic_lru(cg: Cgroup) -> bool:
    """classic_lru_switch of this kernel; a fake tree is taken as classic (its memory.stat
    is whatever the test wrote)."""
    return True if cg.root.fake else classic_lru_switch()


def probe_memory_reclaim(cg: Cgroup) -> bool:
    return cg.file("memory.reclaim").exists()


def probe_swappiness_key(cg: Cgroup, swappiness: int = 60) -> bool:
    """Reclaim one page with `swappiness=`: EINVAL means the key is unknown.
    EAGAIN still proves the key was parsed (parsing precedes reclaim)."""
    try:
        cg.reclaim(PAGE_SIZE, swappiness=swappiness)
    except PartialReclaim:
        return True
    except UnsupportedKey:
        return False
    return True


def probe_psi_trigger(cg: Cgroup) -> bool:
    """Register and drop a PSI trigger. CgroupGone propagates (try another cgroup)."""
    try:
        cg.psi_trigger(PROBE_PSI_STALL_US, PROBE_PSI_WINDOW_US).close()
    except CgroupGone:
        raise
    except CgroupError:  # EINVAL, EOPNOTSUPP, EPERM, ...: triggers do not work here
        return False
    return True


def probe(cg: Cgroup, *, write: bool) -> Capabilities:
    """All of them; with write=False (dry run) only what reading can tell."""
    reclaim = probe_memory_reclaim(cg)
    classic = probe_classic_lru(cg)
    if not write:
        return Capabilities(memory_reclaim=reclaim, classic_lru=classic)
    return Capabilities(
        memory_reclaim=reclaim, classic_lru=classic,
        swappiness_key=probe_swappiness_key(cg) if reclaim else False,
        psi=probe_psi_trigger(cg),
    )
