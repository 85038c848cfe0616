"""Builds fake kubepods hierarchies (systemd or cgroupfs driver) in a temporary directory."""

from __future__ import annotations

from pathlib import Path

from headroom.agent.podcgroups import Driver, relative_path

# The files the agent and engine look at in a pod-level cgroup.
_POD_FILES = {
    "memory.high": "max\n",
    "memory.max": "max\n",
    "memory.current": "0\n",
    "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
    "memory.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
                       "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    "memory.stat": "anon 0\nfile 0\n",
    "memory.reclaim": "",
    "cgroup.procs": "",
}


def make_kubepods(root: Path, driver: Driver) -> Path:
    """The kubepods parents (and the root's controller list), without pods."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    if driver is Driver.SYSTEMD:
        top = root / "kubepods.slice"
        for tier in ("burstable", "besteffort"):
            (top / f"kubepods-{tier}.slice").mkdir(parents=True, exist_ok=True)
    else:
        top = root / "kubepods"
        for tier in ("burstable", "besteffort"):
            (top / tier).mkdir(parents=True, exist_ok=True)
    for d in [top, *top.iterdir()]:
        (d / "memory.high").write_text("max\n")
    return top


def make_pod(root: Path, driver: Driver, uid: str, qos: str, memory_high: str = "max") -> Path:
    """A pod-level cgroup directory with the memory files the agent reads."""
    path = root / relative_path(uid, qos, driver)
    path.mkdir(parents=True, exist_ok=True)
    for name, content in _POD_FILES.items():
        (path / name).write_text(content)
    (path / "memory.high").write_text(f"{memory_high}\n")
    return path
