"""End to end, every part its own process: the API server (the emulator and,
unless HEADROOM_CONTROLPLANE=0, also the real kube-apiserver on etcd, tests/controlplane),
`headroom operator` and `headroom agent` (cluster mode, on a fake cgroupfs kubepods
tree), driven with kubectl as a user would.

apply Node + Pods -> apply examples/policy-limit-percent.yaml -> memory.high in the
right pod directories, plan status written by the agent, policy Enforced -> the API
server is killed (SIGKILL): the agent keeps enforcing (puts back a memory.high changed by hand)
-> the API server comes back on the same port and state: agent and operator reconnect
-> kubectl delete of the policy: every memory.high is restored exactly.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from api_helpers import BACKENDS, CRDS, ROOT, VENV_BIN, kubectl_binary, pod, wait_for
from fake_cgroup_tree import FakeTree
from fake_kubepods import make_kubepods, make_pod, pod_rel
from headroom.nodeagent.podcgroups import Driver

MI = 1 << 20
PAGE = 4096
POLICY = ROOT / "examples" / "policy-limit-percent.yaml"   # app=web, limitPercent 90
NODE = "node-1"


class Procs:
    """The processes of one test, each logging to its own file; all ended at teardown."""

    def __init__(self, tmp: pathlib.Path, real: Any = None) -> None:
        self.tmp = tmp
        self.real = real          # a RealCluster, or None: the emulator as a process
        self.kubeconfig = real.kubeconfig if real else tmp / "kubeconfig"
        self.state = tmp / "etcd.json"
        self.port = 0
        self.emulator: subprocess.Popen[bytes] | None = None
        self.others: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str, cmd: list[str], **env: str) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{name}.log").open("ab")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "KUBECONFIG": str(self.kubeconfig), **env})
        log.close()
        return proc

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start_server(self) -> None:
        """On the port it had before, on the state it had before (the emulator's file,
        the real server's etcd)."""
        if self.real:     # the session's server: started unless it is running
            if self.real.cp.procs["kube-apiserver"].poll() is not None:
                self.real.cp.start_apiserver()
            return
        before = self.log("emulator").count("listening on")
        self.emulator = self.spawn("emulator", [
            sys.executable, str(ROOT / "tests/api/emulator.py"), "--port", str(self.port),
            "--kubeconfig", str(self.kubeconfig), "--crds", str(CRDS),
            "--state", str(self.state)])
        line = wait_for(lambda: self.emulator is not None and self.emulator.poll() is None
                        and self.log("emulator").count("listening on") > before
                        and self.log("emulator").rsplit("listening on ", 1)[1],
                        what="the emulator listening")
        self.port = int(line.split()[0].rsplit(":", 1)[1])

    def kill_server(self) -> None:
        if self.real:
            self.real.cp.stop_apiserver(kill=True)     # etcd is all that survives
            return
        assert self.emulator is not None
        self.emulator.kill()            # no goodbye: the state file is all that survives
        self.emulator.wait(10)

    def start(self, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        proc = self.spawn(name, [str(VENV_BIN / "headroom"), *args], **env)
        self.others.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in [*self.others, *([self.emulator] if self.emulator else [])]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.others, *([self.emulator] if self.emulator else [])]:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def kubectl(self, *args: str, input: str | None = None) -> str:
        proc = subprocess.run([kubectl_binary(), "--kubeconfig", str(self.kubeconfig), *args],
                              input=input, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
        return proc.stdout

    def get(self, *args: str) -> dict[str, Any]:
        return json.loads(self.kubectl("get", *args, "-o", "json"))

    def apply(self, docs: list[dict[str, Any]]) -> None:
        if self.real:          # a Node there is the simulated kubelet's (real_cluster.py)
            self.real.apply(docs)
        else:
            self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


@pytest.fixture(params=BACKENDS)
def procs(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Procs]:
    real = request.getfixturevalue("real_cluster") if request.param == "real" else None
    p = Procs(tmp_path, real)
    yield p
    p.stop_all()
    if real:
        p.start_server()                     # a failed test must not leave it down
    for name in ("emulator", "operator", "agent"):
        print(f"---- {name} log (tail) ----\n{p.log(name)[-3000:]}")


def _guaranteed(name: str, memory: str) -> dict[str, Any]:
    manifest = pod(name, NODE, {"app": "web"}, limit=memory)
    manifest["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "100m"
    return manifest


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    conditions = (obj.get("status") or {}).get("conditions") or ()
    return next((c for c in conditions if c["type"] == type_), {})


def _plan_status_pods(procs: Procs) -> dict[str, dict[str, Any]]:
    plan = procs.get("nodereclaimplan", NODE)
    return {p["name"]: p for p in (plan.get("status") or {}).get("pods") or ()}


@pytest.mark.slow
def test_kubectl_to_cgroup_files_and_back(procs: Procs, tmp_path: pathlib.Path) -> None:
    procs.start_server()
    procs.apply([
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}},
        pod("web-0", NODE, {"app": "web"}, limit="1Gi", request="256Mi"),   # Burstable
        _guaranteed("web-1", "512Mi"),                                       # Guaranteed
        pod("db-0", NODE, {"app": "db"}, limit="1Gi", request="256Mi"),     # not selected
    ])
    pods = {p["metadata"]["name"]: p for p in procs.get("pods")["items"]}
    assert pods["web-1"]["status"]["qosClass"] == "Guaranteed"

    # the node's kubepods tree (cgroupfs driver), with the uids the API server assigned
    tree = FakeTree(tmp_path / "cgroup")
    parents = make_kubepods(tree, Driver.CGROUPFS)
    original = {"web-0": "max", "web-1": str(800 * MI), "db-0": "max"}
    rel = {}
    for name, p in pods.items():
        rel[name] = pod_rel(Driver.CGROUPFS, p["metadata"]["uid"], p["status"]["qosClass"])
        high = None if original[name] == "max" else int(original[name])
        make_pod(tree, Driver.CGROUPFS, p["metadata"]["uid"], p["status"]["qosClass"],
                 high=high, current=100 * MI)
    assert rel["web-1"].startswith("kubepods/pod")          # Guaranteed: no QoS sub-tree

    procs.start("operator", "operator", "--debounce", "0.1", "--max-delay", "1")
    agent = procs.start("agent", "agent", "--node-name", NODE, "--cgroup-root", str(tree.root),
                        "--state-dir", str(tmp_path / "agent-state"), "--metrics-port", "0",
                        "--status-interval", "0.5", HEADROOM_ALLOW_FAKE_CGROUP_ROOT="1")
    procs.kubectl("apply", "-f", str(POLICY))

    # memory.high = 90% of the limit, page aligned, in exactly the selected pods' dirs
    expected = {"web-0": 1024 * MI * 90 // 100 // PAGE * PAGE,
                "web-1": 512 * MI * 90 // 100 // PAGE * PAGE}
    for name, value in expected.items():
        wait_for(lambda n=name, v=value: tree.high(rel[n]) == str(v), timeout=30,
                 what=f"memory.high of {name}")
    assert tree.high(rel["db-0"]) == "max"
    assert all(tree.high(parent) == "max" for parent in parents)

    # the agent writes the plan's status; the operator aggregates it into the policy
    applied = wait_for(lambda: (s := _plan_status_pods(procs)) and all(
        s.get(n, {}).get("applied") for n in expected) and s, what="plan status: applied")
    assert {n: applied[n]["memoryHigh"] for n in expected} == expected
    plan_status = procs.get("nodereclaimplan", NODE)["status"]
    assert (plan_status["plannedPods"], plan_status["appliedPods"]) == (2, 2)
    policy = wait_for(lambda: (p := procs.get("memoryreclaimpolicy", "web"))
                      and (p.get("status") or {}).get("enforcedPods") == 2 and p,
                      what="policy status: 2 enforced")
    assert _condition(policy, "Ready")["status"] == "True"
    assert _condition(policy, "Ready")["reason"] == "Enforced"
    assert policy["status"]["matchedPods"] == 2

    # the API server goes away; the agent keeps enforcing, including against drift
    procs.kill_server()
    tree.write(rel["web-0"], "memory.high", "max\n")
    wait_for(lambda: tree.high(rel["web-0"]) == str(expected["web-0"]), timeout=30,
             what="drift put back while the API server is down")
    assert agent.poll() is None

    # back on the same port and state: the agent reconnects and reports the drift
    procs.start_server()
    wait_for(lambda: _plan_status_pods(procs).get("web-0", {}).get("driftCorrections"),
             timeout=45, what="agent reconnected and reported the drift correction")

    # the policy goes: the operator (reconnected too) empties the plan, the agent
    # restores every memory.high exactly as it found it
    procs.kubectl("delete", "-f", str(POLICY))
    for name in expected:
        wait_for(lambda n=name: tree.high(rel[n]) == original[n], timeout=30,
                 what=f"original memory.high of {name} restored")
    assert procs.get("nodereclaimplan", NODE)["spec"]["pods"] == []
    assert tree.high(rel["db-0"]) == "max"
    assert agent.poll() is None
