"""`headroom agent` (cluster mode, a real process) against the API-server emulator and a
fake systemd kubepods tree: plan watch, memory.high in the right pod directories, status
written back at a bounded rate, enforcement and drift correction while the API server is
down, reconciliation when it returns, restore on SIGTERM."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).parent))

from api_helpers import wait_for
from emulator import EmulatorThread, write_kubeconfig
from fake_cgroup_tree import FakeTree
from fake_kubepods import make_kubepods
from headroom.nodeagent.podcgroups import Driver
from kube_store import Store

ROOT = pathlib.Path(__file__).resolve().parents[2]
HEADROOM = pathlib.Path(sys.executable).parent / "headroom"
A = "aaaaaaaa-0000-4000-8000-000000000001"
B = "bbbbbbbb-0000-4000-8000-000000000002"
MiB = 1 << 20
SYSTEMD_A = ("kubepods.slice/kubepods-burstable.slice/"
             f"kubepods-burstable-pod{A.replace('-', '_')}.slice")
SYSTEMD_B = f"kubepods.slice/kubepods-pod{B.replace('-', '_')}.slice"


def plan_pod(uid: str, name: str, qos: str) -> dict[str, Any]:
    return {"uid": uid, "namespace": "default", "name": name, "qosClass": qos,
            "memoryHigh": 256 * MiB, "policy": {"kind": "MemoryReclaimPolicy", "name": "web",
                                                "namespace": "default"},
            "reclaim": {"mode": "Watermark", "headroomPercent": 5, "targetPercent": 10,
                        "stepBytes": 16 * MiB, "maxBytesPerSecond": 512 * MiB}}


class Env:
    def __init__(self, tmp: pathlib.Path) -> None:
        self.store = Store()
        self.store.load(doc for f in sorted((ROOT / "crds").glob("*.yaml"))
                        for doc in yaml.safe_load_all(f.read_text()) if doc)
        self.plans = next(t for t in self.store.types.values() if t.plural == "nodereclaimplans")
        self.tree = FakeTree(tmp / "cgroup")
        make_kubepods(self.tree, Driver.SYSTEMD)
        self.tmp = tmp
        self.emu: EmulatorThread | None = None
        self.port = 0
        self.kubeconfig = tmp / "kubeconfig"

    def api_up(self) -> None:
        self.emu = EmulatorThread(self.port, self.store).__enter__()
        self.port = self.emu.port
        write_kubeconfig(self.kubeconfig, self.emu.url)

    def api_down(self) -> None:
        if self.emu is not None:
            self.emu.__exit__(None, None, None)
            self.emu = None

    def plan(self) -> dict[str, Any]:
        return self.store.get(self.plans, "", "node-1")

    def status(self) -> dict[str, Any]:
        return self.plan().get("status") or {}

    def pod_reason(self, uid: str) -> str | None:
        return next((p["reason"] for p in self.status().get("pods", []) if p["uid"] == uid),
                    None)

    def status_writes(self) -> int:
        return sum(1 for w in self.store.writes
                   if w.plural == "nodereclaimplans" and w.subresource == "status")


@pytest.fixture
def env(tmp_path: pathlib.Path) -> Iterator[Env]:
    e = Env(tmp_path)
    e.api_up()
    yield e
    e.api_down()


@pytest.fixture
def agent(env: Env) -> Iterator[subprocess.Popen[str]]:
    log = (env.tmp / "agent.log").open("w")
    proc = subprocess.Popen(
        [str(HEADROOM), "agent", "--node-name", "node-1", "--cgroup-root", str(env.tree.root),
         "--state-dir", str(env.tmp / "state"), "--metrics-port", "0",
         "--status-interval", "0.5", "--heartbeat-interval", "600"],
        env={**os.environ, "KUBECONFIG": str(env.kubeconfig),
             "HEADROOM_ALLOW_FAKE_CGROUP_ROOT": "1"},
        stdout=log, stderr=subprocess.STDOUT, text=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    log.close()


@pytest.mark.slow
def test_agent_process_against_the_emulator(env: Env, agent: subprocess.Popen[str]) -> None:
    tree = env.tree
    tree.add(SYSTEMD_A, current=100 * MiB)
    env.store.create(env.plans, "", {
        "apiVersion": "headroom.dev/v1alpha1", "kind": "NodeReclaimPlan",
        "metadata": {"name": "node-1"},
        "spec": {"nodeName": "node-1", "pods": [plan_pod(A, "web-0", "Burstable"),
                                                plan_pod(B, "db-0", "Guaranteed")]}})

    # the plan reaches the pod directory; the missing pod is reported, not fatal
    wait_for(lambda: tree.high(SYSTEMD_A) == str(256 * MiB), what="memory.high of pod A")
    wait_for(lambda: env.pod_reason(B) == "CgroupNotFound", what="B reported CgroupNotFound")
    assert env.status()["cgroupDriver"] == "systemd"
    assert env.status()["observedGeneration"] == env.plan()["metadata"]["generation"]
    for parent in ("kubepods.slice", "kubepods.slice/kubepods-burstable.slice"):
        assert tree.high(parent) == "max"

    # the pod starts: taken over on a later tick
    tree.add(SYSTEMD_B, current=10 * MiB)
    wait_for(lambda: env.pod_reason(B) == "Applied", what="B applied")
    assert tree.high(SYSTEMD_B) == str(256 * MiB)
    assert env.status()["appliedPods"] == 2

    # nothing changes but counters: no more status writes (heartbeat is 10 minutes away)
    writes = env.status_writes()
    tree.write(SYSTEMD_A, "memory.current", f"{120 * MiB}\n")
    time.sleep(3)
    assert env.status_writes() - writes <= 1

    # the API server goes away; the agent keeps enforcing and corrects drift
    env.api_down()
    tree.write(SYSTEMD_A, "memory.high", "max\n")
    wait_for(lambda: tree.high(SYSTEMD_A) == str(256 * MiB), what="drift put back, API down")
    # the plan changes while the agent cannot see it: A leaves
    with env.store.lock:
        env.store.patch(env.plans, "", "node-1", "merge",
                        {"spec": {"pods": [plan_pod(B, "db-0", "Guaranteed")]}})
    time.sleep(1)
    assert tree.high(SYSTEMD_A) == str(256 * MiB)   # still the last plan it saw

    # back: the agent reconciles (A gets its original back) and reports
    env.api_up()
    wait_for(lambda: tree.high(SYSTEMD_A) == "max", what="A restored after reconnect")
    wait_for(lambda: env.status().get("plannedPods") == 1, what="status after reconnect")
    assert tree.high(SYSTEMD_B) == str(256 * MiB)

    # SIGTERM: every pod gets its original back, the process exits cleanly
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(30) == 0
    assert tree.high(SYSTEMD_B) == "max"
    log = (env.tmp / "agent.log").read_text().splitlines()
    assert any('"msg": "memory_high_drift"' in line for line in log)
    assert all(line.startswith("{") for line in log if line.strip())
