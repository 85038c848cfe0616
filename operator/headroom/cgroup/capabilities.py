"""Kernel capabilities, probed by trying on a real cgroup (never from the kernel version)."""

from __future__ import annotations

from dataclasses import dataclass

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
    """All three; with write=False (dry run) only what reading can tell."""
    reclaim = probe_memory_reclaim(cg)
    if not write:
        return Capabilities(memory_reclaim=reclaim)
    return Capabilities(
        memory_reclaim=reclaim,
        swappiness_key=probe_swappiness_key(cg) if reclaim else False,
        psi=probe_psi_trigger(cg),
    )
