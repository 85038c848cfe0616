"""Hostile cgroup trees on a real cgroup2 tree (issue 13 item 5): the cluster agent
(ClusterAgent and the engine, in this process, on the guest's cgroupfs, no API server)
given a plan whose pod A sits in a tree made odd, beside a bystander pod B.

The fake-tree versions (tests/unit/test_hostile_trees.py) can build what cgroupfs never
holds; here the kernel's own tree is used, so first the facts: cgroupfs refuses a
symlink and a regular file in a cgroup directory (so a symlinked pod dir or a pod dir
replaced by a file cannot appear under a real --cgroup-root). Then what can happen on a
real node: a uid under two QoS classes, a pod cgroup removed between the agent's check
and its write, a pod cgroup without memory.high (its parent does not delegate the memory
controller), a memory.high the kernel refuses to open for writing (mode 0444, an agent
without CAP_DAC_OVERRIDE). In each case the pod ends with a clear reason, B gets its value, and no
memory file of any cgroup but B's changes (every kubepods-level cgroup, A's own and a
sibling of kubepods are compared before and after).
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import uuid
from collections.abc import Iterator
from typing import Any

import guest_support
import pytest
from headroom.cgroup import CgroupRoot
from headroom.engine import ReclaimEngine
from headroom.engine.metrics import AgentMetrics
from headroom.nodeagent.agent import ClusterAgent
from headroom.nodeagent.events import EventRecorder
from headroom.nodeagent.planstate import StateStore
from headroom.nodeagent.podcgroups import make_resolver
from headroom.nodeagent.status import StatusSchedule

CGROUP = guest_support.CGROUP_ROOT
MI = 1 << 20
KUBEPODS = "kubepods.slice"
BURSTABLE = f"{KUBEPODS}/kubepods-burstable.slice"
BESTEFFORT = f"{KUBEPODS}/kubepods-besteffort.slice"
MEMORY_FILES = ("memory.high", "memory.max", "memory.low", "memory.min", "memory.swap.max")


def _uid() -> str:
    return str(uuid.uuid4())


def pod_dir(qos: str, uid: str) -> pathlib.Path:
    tier = "burstable" if qos == "Burstable" else "besteffort"
    return CGROUP / f"{KUBEPODS}/kubepods-{tier}.slice/kubepods-{tier}-pod" \
                    f"{uid.replace('-', '_')}.slice"


def entry(uid: str, qos: str = "Burstable", high: int = 256 * MI) -> dict[str, Any]:
    return {"uid": uid, "namespace": "shop", "name": f"web-{uid[:4]}", "qosClass": qos,
            "memoryHigh": high, "policy": {"kind": "MemoryReclaimPolicy", "name": "web"},
            "reclaim": {"mode": "Watermark", "headroomPercent": 5, "targetPercent": 10,
                        "stepBytes": 16 * MI, "maxBytesPerSecond": 512 * MI}}


def plan(*pods: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "node-1", "uid": "plan-uid", "generation": 1},
            "spec": {"nodeName": "node-1", "pods": list(pods)}}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Agent:
    """The agent's logic on the real tree; time is the test's (no threads)."""

    def __init__(self, state: pathlib.Path) -> None:
        self.clock = Clock()
        root = CgroupRoot(CGROUP)
        self.engine = ReclaimEngine(root, cpu_budget_cores=0.5, workers=0, clock=self.clock,
                                    state_dir=state)
        self.agent = ClusterAgent(
            engine=self.engine, root=root, resolver=make_resolver(root.path, "systemd", "/"),
            store=StateStore(state), node="node-1", default_cpu_budget=0.5,
            write_status=lambda s: None,
            events=EventRecorder(lambda ns, body: None, "node-1", clock=self.clock),
            metrics=AgentMetrics(), schedule=StatusSchedule(30, 300, rand=lambda: 0.0),
            clock=self.clock)

    def advance(self, seconds: float) -> None:
        self.clock.t += seconds
        self.engine.tick(self.clock.t)
        self.agent.tick()

    def pod_status(self, uid: str) -> dict[str, Any]:
        return next(p for p in self.agent.status()["pods"] if p["uid"] == uid)

    def stop(self) -> None:
        self.engine.stop(restore=True)


def mkcg(path: pathlib.Path, delegate: bool = True) -> pathlib.Path:
    guest_support.require_cgroup2(path.parent)
    path.mkdir(exist_ok=True)
    if delegate:
        (path / "cgroup.subtree_control").write_text("+memory")
    return path


def memory_files(skip: tuple[pathlib.Path, ...]) -> dict[str, str]:
    """Every memory file of every cgroup under kubepods and of the guard sibling."""
    out = {}
    for d in [CGROUP / KUBEPODS, *sorted((CGROUP / KUBEPODS).rglob("*")), CGROUP / "hostile-x"]:
        if not d.is_dir() or d in skip:
            continue
        for name in MEMORY_FILES:
            f = d / name
            if f.exists():
                out[f"{d.relative_to(CGROUP)}/{name}"] = f.read_text()
    return out


@pytest.fixture
def tree(cgroup_root: pathlib.Path, tmp_path: pathlib.Path) -> Iterator[dict[str, Any]]:
    """kubepods (burstable delegating memory, besteffort not), a sibling outside it with
    memory.high set, the bystander B (owner's memory.high 300 MiB) and the agent."""
    made = [mkcg(CGROUP / KUBEPODS), mkcg(CGROUP / BURSTABLE),
            mkcg(CGROUP / BESTEFFORT, delegate=False)]
    outside = mkcg(CGROUP / "hostile-x", delegate=False)
    (outside / "memory.high").write_text(str(200 * MI))
    b = _uid()
    bdir = mkcg(pod_dir("Burstable", b), delegate=False)
    (bdir / "memory.high").write_text(str(300 * MI))
    agent = Agent(tmp_path / "state")
    world = {"agent": agent, "b": b, "bdir": bdir, "extra": []}
    try:
        yield world
    finally:
        agent.stop()
        assert (bdir / "memory.high").read_text().strip() == str(300 * MI)   # restored
        for d in [*world["extra"], bdir, *reversed(made), outside]:
            if d.is_dir() and (d / "memory.high").exists():
                guest_support.remove_cgroup(d)
            elif d.is_dir():       # no memory controller here (nor processes): rmdir
                assert CGROUP in d.parents
                d.rmdir()


def check(world: dict[str, Any], a: str, reasons: tuple[str, ...], before: dict[str, str],
          words: tuple[str, ...] = ()) -> dict[str, Any]:
    agent: Agent = world["agent"]
    st = agent.pod_status(a)
    assert st["applied"] is False and st["reason"] in reasons, st
    for w in words:
        assert w in st["lastError"], st
    assert agent.pod_status(world["b"])["reason"] == "Applied"
    assert (world["bdir"] / "memory.high").read_text().strip() == str(256 * MI)
    assert memory_files((world["bdir"],)) == before
    print(f"pod A: {st['reason']}: {st['lastError']}")
    return st


def test_cgroupfs_refuses_symlinks_and_regular_files(tree: dict[str, Any]) -> None:
    parent = CGROUP / BURSTABLE
    link = parent / f"kubepods-burstable-pod{_uid().replace('-', '_')}.slice"
    with pytest.raises(OSError) as e:
        os.symlink(CGROUP / KUBEPODS, link)
    assert e.value.errno in (errno.EPERM, errno.EACCES, errno.EINVAL), e.value
    with pytest.raises(OSError) as e2:
        (parent / "a-file").write_text("not a cgroup\n")
    assert e2.value.errno in (errno.EPERM, errno.EACCES, errno.EINVAL), e2.value
    assert not link.is_symlink() and not (parent / "a-file").exists()
    print(f"cgroupfs: symlink {errno.errorcode[e.value.errno]}, regular file "
          f"{errno.errorcode[e2.value.errno]}")


def test_uid_under_two_qos_classes_is_written_nowhere(tree: dict[str, Any]) -> None:
    a = _uid()
    burst = mkcg(pod_dir("Burstable", a), delegate=False)
    (burst / "memory.high").write_text(str(400 * MI))
    best = mkcg(pod_dir("BestEffort", a), delegate=False)
    tree["extra"] += [burst, best]
    before = memory_files((tree["bdir"],))
    tree["agent"].agent.set_plan(plan(entry(a), entry(tree["b"])))
    tree["agent"].advance(5)
    check(tree, a, ("AmbiguousCgroup",), before, ("BestEffort",))
    assert (burst / "memory.high").read_text().strip() == str(400 * MI)


def test_cgroup_removed_between_check_and_write(tree: dict[str, Any]) -> None:
    a = _uid()
    adir = mkcg(pod_dir("Burstable", a), delegate=False)
    agent: Agent = tree["agent"]
    real = agent.agent.resolver

    class Racing:
        def find(self, uid: str, qos: str) -> pathlib.Path:
            path = real.find(uid, qos)
            if uid == a and path.is_dir():
                guest_support.remove_cgroup(path)      # the pod ends right after the check
            return path

        def current_driver(self) -> Any:
            return real.current_driver()

    agent.agent.resolver = Racing()   # type: ignore[assignment]
    before = memory_files((tree["bdir"], adir))
    agent.agent.set_plan(plan(entry(a), entry(tree["b"])))
    agent.advance(5)
    check(tree, a, ("CgroupNotFound",), before)
    assert not adir.exists()                            # nothing was created


def test_pod_cgroup_without_memory_high(tree: dict[str, Any]) -> None:
    """BestEffort's slice does not delegate memory: its pods have no memory.high."""
    a = _uid()
    adir = mkcg(pod_dir("BestEffort", a), delegate=False)
    tree["extra"].append(adir)
    assert not (adir / "memory.high").exists()
    before = memory_files((tree["bdir"],))
    tree["agent"].agent.set_plan(plan(entry(a, "BestEffort"), entry(tree["b"])))
    tree["agent"].advance(5)
    tree["agent"].advance(40)                           # past the engine's retry interval
    check(tree, a, ("Error", "CgroupNotFound"), before, ("memory.",))
    assert not (adir / "memory.high").exists()


def _drop_capabilities() -> None:
    """Give up every capability (root keeps uid 0, so only DAC_OVERRIDE's loss matters):
    the way a memory.high made read-only can refuse a root agent's write."""
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    header = Header(0x20080522, 0)                      # _LINUX_CAPABILITY_VERSION_3
    if libc.capset(ctypes.byref(header), (Data * 2)()) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def test_memory_high_not_writable(tree: dict[str, Any]) -> None:
    """A's memory.high is mode 0444 and the agent (a forked child) holds no capability:
    the kernel refuses its write with EACCES, A ends with that reason, B is enforced."""
    a = _uid()
    adir = mkcg(pod_dir("Burstable", a), delegate=False)
    tree["extra"].append(adir)
    (adir / "memory.high").write_text(str(400 * MI))
    (adir / "memory.high").chmod(0o444)
    before = memory_files((tree["bdir"],))
    agent: Agent = tree["agent"]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:                                        # the agent, without privileges
        code = 1
        try:
            os.close(read_end)
            _drop_capabilities()
            agent.agent.set_plan(plan(entry(a), entry(tree["b"])))
            agent.advance(5)
            result = {"a": agent.pod_status(a), "b": agent.pod_status(tree["b"]),
                      "bHigh": (tree["bdir"] / "memory.high").read_text().strip(),
                      "after": memory_files((tree["bdir"],))}
            agent.stop()                                # B gets its original back
            os.write(write_end, json.dumps(result).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as f:
        got = json.loads(f.read() or "{}")
    assert os.waitpid(pid, 0)[1] == 0, got
    st = got["a"]
    assert st["applied"] is False and st["reason"] == "Error", st
    assert "memory.high" in st["lastError"] and "EACCES" in st["lastError"], st
    assert got["b"]["reason"] == "Applied" and got["bHigh"] == str(256 * MI), got
    assert got["after"] == before
    assert (adir / "memory.high").read_text().strip() == str(400 * MI)
    print(f"pod A: {st['reason']}: {st['lastError']}")
