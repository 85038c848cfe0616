"""Kubepods hierarchies of either kubelet cgroup driver, under any kubelet cgroup root, on
the shared fake cgroup tree (fake_cgroup_tree.FakeTree)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from headroom.nodeagent.podcgroups import Driver, Layout, relative_path

# kubelet cgroup roots as components: the default "/" and kind's "/kubelet"
DEFAULT_ROOT: tuple[str, ...] = ()
KIND_ROOT: tuple[str, ...] = ("kubelet",)

# Written out rather than computed, so that they check the module's naming.
PARENTS = {
    Driver.SYSTEMD: ("kubepods.slice", "kubepods.slice/kubepods-burstable.slice",
                     "kubepods.slice/kubepods-besteffort.slice"),
    Driver.CGROUPFS: ("kubepods", "kubepods/burstable", "kubepods/besteffort"),
}
KIND_PARENTS = {
    Driver.SYSTEMD: ("kubelet.slice", "kubelet.slice/kubelet-kubepods.slice",
                     "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice",
                     "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice"),
    Driver.CGROUPFS: ("kubelet", "kubelet/kubepods", "kubelet/kubepods/burstable",
                      "kubelet/kubepods/besteffort"),
}


def parents(driver: Driver, kubelet_root: tuple[str, ...] = DEFAULT_ROOT) -> tuple[str, ...]:
    """Every directory above the pod level: the kubelet root's and the kubepods ones."""
    if kubelet_root == DEFAULT_ROOT:
        return PARENTS[driver]
    if kubelet_root == KIND_ROOT:
        return KIND_PARENTS[driver]
    layout = Layout(driver, kubelet_root)
    names = (*kubelet_root, "kubepods")
    out = [str(layout.path_of(names[:i])) for i in range(1, len(names) + 1)]
    out += [str(layout.path_of((*names, tier))) for tier in ("burstable", "besteffort")]
    return tuple(out)


def make_kubepods(tree: Any, driver: Driver,
                  kubelet_root: tuple[str, ...] = DEFAULT_ROOT) -> list[str]:
    """The parents (with memory files, to prove they are never written)."""
    for rel in parents(driver, kubelet_root):
        tree.add(rel)
    return list(parents(driver, kubelet_root))


def pod_rel(driver: Driver, uid: str, qos: str,
            kubelet_root: tuple[str, ...] = DEFAULT_ROOT) -> str:
    return str(relative_path(uid, qos, driver, kubelet_root))


def make_pod(tree: Any, driver: Driver, uid: str, qos: str, *, high: int | None = None,
             current: int = 0, kubelet_root: tuple[str, ...] = DEFAULT_ROOT) -> Path:
    """A pod-level cgroup directory with the memory files the agent reads."""
    path: Path = tree.add(pod_rel(driver, uid, qos, kubelet_root), high=high, current=current)
    return path
