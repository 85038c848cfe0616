"""Kubepods hierarchies of either kubelet cgroup driver on the shared fake cgroup tree
(conftest.FakeTree)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from headroom.agent.podcgroups import Driver, relative_path

PARENTS = {
    Driver.SYSTEMD: ("kubepods.slice", "kubepods.slice/kubepods-burstable.slice",
                     "kubepods.slice/kubepods-besteffort.slice"),
    Driver.CGROUPFS: ("kubepods", "kubepods/burstable", "kubepods/besteffort"),
}


def make_kubepods(tree: Any, driver: Driver) -> list[str]:
    """The kubepods parents (with memory files, to prove they are never written)."""
    for rel in PARENTS[driver]:
        tree.add(rel)
    return list(PARENTS[driver])


def pod_rel(driver: Driver, uid: str, qos: str) -> str:
    return str(relative_path(uid, qos, driver))


def make_pod(tree: Any, driver: Driver, uid: str, qos: str, *, high: int | None = None,
             current: int = 0) -> Path:
    """A pod-level cgroup directory with the memory files the agent reads."""
    path: Path = tree.add(pod_rel(driver, uid, qos), high=high, current=current)
    return path
