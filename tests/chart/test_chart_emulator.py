"""The rendered chart applied with kubectl into the API-server emulator
(tests/api/emulator.py), then the operator started with the very command line
and environment of the chart's Deployment, against that API server: it must
answer the liveness probe the chart configures and turn the example policy into
a NodeReclaimPlan.

The emulator serves core and CRD kinds; the kinds only the chart needs (apps,
rbac, admissionregistration, Service) are registered here as plain stored types.
It enforces no RBAC and runs no admission policies, so those objects are only
stored and read back, not exercised.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chart_render import ROOT, Doc, container, env_of, one, run_helm, template_args

sys.path.insert(0, str(ROOT / "tests" / "api"))
from emulator import EmulatorThread, write_kubeconfig
from kube_store import Store
from kube_types import ResourceType

NAMESPACE = "headroom-system"
# Built-in kinds the chart creates that the emulator does not serve by itself.
CHART_KINDS = [
    ("apps", "deployments", "Deployment", True, ("deploy",)),
    ("apps", "daemonsets", "DaemonSet", True, ("ds",)),
    ("", "services", "Service", True, ("svc",)),
    ("rbac.authorization.k8s.io", "clusterroles", "ClusterRole", False, ()),
    ("rbac.authorization.k8s.io", "clusterrolebindings", "ClusterRoleBinding", False, ()),
    ("rbac.authorization.k8s.io", "roles", "Role", True, ()),
    ("rbac.authorization.k8s.io", "rolebindings", "RoleBinding", True, ()),
    ("admissionregistration.k8s.io", "validatingadmissionpolicies",
     "ValidatingAdmissionPolicy", False, ()),
    ("admissionregistration.k8s.io", "validatingadmissionpolicybindings",
     "ValidatingAdmissionPolicyBinding", False, ()),
]
NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
WEB_POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "web-0", "namespace": "default", "labels": {"app": "web"}},
    "spec": {"nodeName": "node-1", "containers": [{
        "name": "web", "image": "web",
        "resources": {"requests": {"memory": "256Mi"}, "limits": {"memory": "1Gi"}}}]},
}
EXPECTED_HIGH = (1 << 30) * 90 // 100 // 4096 * 4096   # examples/policy-limit-percent.yaml


def chart_store() -> Store:
    store = Store()
    for group, plural, kind, namespaced, short in CHART_KINDS:
        store._register(ResourceType(group, "v1", plural, kind, namespaced,
                                     singular=kind.lower(), short_names=short, merge_keys={}))
    return store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, AssertionError):
            last = probe()
            if last:
                return last
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}; last: {last}")


class Cluster:
    def __init__(self, emu: EmulatorThread, kubeconfig: Path, tmp: Path) -> None:
        self.emu, self.tmp = emu, tmp
        self.env = dict(os.environ, KUBECONFIG=str(kubeconfig))
        self.kubectl_bin = str(Path(sys.executable).parent / "kubectl")

    def kubectl(self, *args: str) -> str:
        proc = subprocess.run([self.kubectl_bin, *args], env=self.env, capture_output=True,
                              text=True, timeout=60, check=False)
        assert proc.returncode == 0, f"kubectl {' '.join(args)}:\n{proc.stdout}{proc.stderr}"
        return proc.stdout

    def apply(self, docs: list[Doc]) -> str:
        path = self.tmp / f"apply-{time.monotonic_ns()}.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        return self.kubectl("apply", "-f", str(path))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with EmulatorThread(store=chart_store()) as emu:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", emu.url)
        yield Cluster(emu, kubeconfig, tmp_path)


@pytest.fixture
def rendered(helm: Path) -> list[Doc]:
    proc = run_helm(helm, *template_args(namespace=NAMESPACE, include_crds=True))
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def test_kubectl_applies_the_rendered_chart(cluster: Cluster, rendered: list[Doc]) -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    out = cluster.apply([namespace, *rendered])
    assert out.count(" created") == len(rendered) + 1, out
    # idempotent, as `helm upgrade` / a second apply expects
    again = cluster.apply([namespace, *rendered])
    assert " created" not in again and " configured" not in again, again
    # the CRDs from the chart are served: the examples apply as they are
    assert "created" in cluster.kubectl("apply", "-f", str(ROOT / "examples"))
    names = cluster.kubectl("get", "nodereclaimplans,memoryreclaimpolicies", "-A", "-o", "name")
    assert "memoryreclaimpolicy.headroom.dev/web" in names
    ds = cluster.kubectl("get", "daemonset", "-n", NAMESPACE, "-o", "name")
    assert ds.strip() == f"daemonset.apps/{one(rendered, 'DaemonSet')['metadata']['name']}"


def operator_command(deployment: Doc, health_port: int) -> tuple[list[str], dict[str, str]]:
    """The Deployment's container as a local process: its args and env, with the
    health endpoint moved to a free loopback port."""
    c = container(deployment)
    env = {k: v if isinstance(v, str) else NAMESPACE for k, v in env_of(c).items()}
    assert env["HEADROOM_HEALTH_PORT"] == str(c["ports"][0]["containerPort"])
    env.update(HEADROOM_HEALTH_PORT=str(health_port), HEADROOM_HTTP_ADDRESS="127.0.0.1")
    return [str(Path(sys.executable).parent / "headroom"), *c["args"]], env


def test_operator_runs_from_the_chart_and_writes_plans(
    cluster: Cluster, rendered: list[Doc], tmp_path: Path,
) -> None:
    try:
        import headroom.controller.main  # noqa: F401
    except ImportError:
        pytest.skip("headroom.controller.main does not exist yet: the operator is not built")
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    cluster.apply([namespace, *rendered, WEB_POD])
    store = cluster.emu.store   # a Node's status is the kubelet's to write: set it directly
    store.create(store.type_for("", "v1", "nodes"), "", NODE)
    deployment = one(rendered, "Deployment")
    port = free_port()
    cmd, env = operator_command(deployment, port)
    log = (tmp_path / "operator.log").open("w")
    proc = subprocess.Popen(cmd, env={**cluster.env, **env}, stdout=log,
                            stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        probe = container(deployment)["livenessProbe"]["httpGet"]

        def healthy() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{probe['path']}",
                                        timeout=2) as r:
                return bool(r.status == 200)

        wait_for("the operator's liveness endpoint", healthy)
        ready_path = container(deployment)["readinessProbe"]["httpGet"]["path"]

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}",
                                            timeout=2) as r:
                    return bool(r.status == 200)
            except urllib.error.HTTPError:
                return False

        wait_for("the operator's readiness endpoint", ready)
        cluster.kubectl("apply", "-f", str(ROOT / "examples" / "policy-limit-percent.yaml"))

        def planned() -> int | None:
            plan = yaml.safe_load(cluster.kubectl("get", "nodereclaimplan", "node-1",
                                                  "-o", "yaml"))
            pods = plan.get("spec", {}).get("pods", [])
            return pods[0]["memoryHigh"] if pods else None

        assert wait_for("the plan of node-1", planned) == EXPECTED_HIGH
        assert proc.poll() is None, "the operator exited"
    except BaseException:
        print((tmp_path / "operator.log").read_text()[-5000:])
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    if proc.returncode not in (0, -15):
        pytest.fail((tmp_path / "operator.log").read_text()[-3000:])
