"""The chart installed for real: `helm install charts/headroom --wait` into the real
control plane, then the operator and one agent per simulated node as local
processes with the tokens their pods would get, and RBAC plus the chart's
ValidatingAdmissionPolicy enforced by the real API server.

What `--wait` means here: the DaemonSet and the Deployment were admitted, the
scheduler placed a pod of each on the simulated nodes (nodeSelector, tolerations
and resource requests fit) and the simulated kubelet reported them Running and
Ready. The containers themselves do not run (there is no kubelet and no image):
the same commands run as local processes instead, each with a TokenRequest token
of the pod's ServiceAccount bound to that very pod. The agents' tokens therefore
carry their node's name, which is what the chart's admission policy checks.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from components import VENV_BIN, Processes, pod_kubeconfig
from controlplane import ApiError, Client, ControlPlane, wait_until
from fake_cgroup_tree import FakeTree
from fake_kubepods import make_kubepods, make_pod, pod_rel
from headroom.nodeagent.podcgroups import Driver
from helm_fetch import ensure_helm

ROOT = pathlib.Path(__file__).resolve().parents[2]

NAMESPACE = "headroom-system"
RELEASE = "headroom"
NODES = ("hr-node-1", "hr-node-2")
APPS = "app-ns"
MI = 1 << 20
PLANS = "/apis/headroom.dev/v1alpha1/nodereclaimplans"
HIGH_90 = 1024 * MI * 90 // 100 // 4096 * 4096     # examples/policy-limit-percent.yaml


@dataclass
class Installed:
    cp: ControlPlane
    dir: pathlib.Path
    procs: Processes
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)     # chart pods by node/"op"
    kubeconfigs: dict[str, pathlib.Path] = field(default_factory=dict)
    trees: dict[str, FakeTree] = field(default_factory=dict)
    rel: dict[str, str] = field(default_factory=dict)                 # app pod -> cgroup dir

    def kubectl(self, *args: str, kubeconfig: pathlib.Path | None = None) -> str:
        proc = subprocess.run([str(VENV_BIN / "kubectl"), "--kubeconfig",
                               str(kubeconfig or self.cp.kubeconfig), *args],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"kubectl {' '.join(args)}:\n{proc.stderr}"
        return proc.stdout

    def client(self, who: str) -> Client:
        """The API as the operator ("op") or a node's agent, with its pod's token."""
        token = self.kubeconfigs[who].read_text().split("token: ", 1)[1].split()[0]
        return self.cp.as_token(token)


def _app_pod(name: str, node: str, labels: dict[str, str], request: str | None = "256Mi"
             ) -> dict[str, Any]:
    resources: dict[str, Any] = {"limits": {"memory": "1Gi"}}
    if request:
        resources["requests"] = {"memory": request}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels},
            "spec": {"nodeSelector": {"kubernetes.io/hostname": node},
                     "containers": [{"name": "app", "image": "app", "resources": resources}]}}


@pytest.fixture(scope="module")
def installed(control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[Installed]:
    cp = control_plane
    inst = Installed(cp, tmp_path_factory.mktemp("chart"), Processes(tmp_path_factory.mktemp(
        "chart-procs")))
    for node in NODES:
        cp.nodes.add(node)
    # the chart installs its CRDs itself (server-side apply): none made by earlier tests
    # of the session (the API tier creates them plainly) may own their fields
    cp.remove_crds(ROOT / "crds")
    helm = ensure_helm()
    proc = subprocess.run([str(helm), "install", RELEASE, str(ROOT / "charts" / "headroom"),
                           "--namespace", NAMESPACE, "--create-namespace", "--wait",
                           "--timeout", "5m", "--kubeconfig", str(cp.kubeconfig)],
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, f"helm install:\n{proc.stdout}{proc.stderr}"
    pods = cp.admin.get(f"/api/v1/namespaces/{NAMESPACE}/pods")["items"]
    for p in pods:
        component = p["metadata"]["labels"]["app.kubernetes.io/component"]
        assert p["status"]["phase"] == "Running", p["metadata"]["name"]
        if component == "operator":
            inst.pods["op"] = p
        elif p["spec"]["nodeName"] in NODES:
            inst.pods[p["spec"]["nodeName"]] = p
    assert set(inst.pods) == {"op", *NODES}, sorted(inst.pods)
    for who, p in inst.pods.items():
        inst.kubeconfigs[who] = pod_kubeconfig(cp, p, f"{RELEASE}-{who}")
    try:
        yield inst
    finally:
        inst.procs.stop_all()
        for name in inst.procs.procs:
            print(f"---- {name} (tail) ----\n{inst.procs.log(name)[-3000:]}")
        subprocess.run([str(helm), "uninstall", RELEASE, "--namespace", NAMESPACE, "--wait",
                        "--kubeconfig", str(cp.kubeconfig)], capture_output=True, timeout=200)
        for node in NODES:
            cp.nodes.delete(node)


@pytest.fixture(scope="module")
def running(installed: Installed) -> Installed:
    """The example policy enforced: operator and agents running, app pods on both nodes."""
    inst, cp = installed, installed.cp
    cp.namespace(APPS)
    apps = [_app_pod("web-0", NODES[0], {"app": "web"}),
            _app_pod("web-1", NODES[1], {"app": "web"}),
            _app_pod("db-0", NODES[0], {"app": "db"})]
    for manifest in apps:
        cp.admin.post(f"/api/v1/namespaces/{APPS}/pods", manifest)
    for node in NODES:
        tree = inst.trees[node] = FakeTree(inst.dir / f"cgroup-{node}")
        make_kubepods(tree, Driver.CGROUPFS)
    for manifest in apps:
        name = manifest["metadata"]["name"]
        p = wait_until(lambda n=name: (p := cp.admin.get(
            f"/api/v1/namespaces/{APPS}/pods/{n}"))["spec"].get("nodeName") and p, 60,
            f"{name} scheduled")
        uid, qos = p["metadata"]["uid"], p["status"]["qosClass"]
        inst.rel[name] = pod_rel(Driver.CGROUPFS, uid, qos)
        make_pod(inst.trees[p["spec"]["nodeName"]], Driver.CGROUPFS, uid, qos, current=100 * MI)
    # the policy as the README applies it (into namespace default): make it select APPS
    policy = json.loads(inst.kubectl("create", "--dry-run=client", "-o", "json", "-f",
                                     str(ROOT / "examples" / "policy-limit-percent.yaml")))
    policy["metadata"]["namespace"] = APPS
    cp.admin.post(f"/apis/headroom.dev/v1alpha1/namespaces/{APPS}/memoryreclaimpolicies",
                  policy)
    inst.procs.operator(inst.kubeconfigs["op"])
    for node in NODES:
        inst.procs.agent(inst.kubeconfigs[node], node, inst.trees[node].root)
    for name, node in (("web-0", NODES[0]), ("web-1", NODES[1])):
        wait_until(lambda n=name, nd=node: inst.trees[nd].high(inst.rel[n]) == str(HIGH_90),
                   60, f"memory.high of {name} (operator plan -> agent)")
    return inst


def _denied(call: Any) -> ApiError:
    with pytest.raises(ApiError) as err:
        call()
    return err.value


def test_helm_install_wait_placed_the_workloads(installed: Installed) -> None:
    ds = installed.cp.admin.get(f"/apis/apps/v1/namespaces/{NAMESPACE}/daemonsets")["items"]
    assert len(ds) == 1
    status = ds[0]["status"]
    assert status["numberReady"] == status["desiredNumberScheduled"] >= len(NODES)
    vap = installed.cp.admin.get(
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/"
        f"{RELEASE}-agent-own-plan")
    # the real server type-checked the policy's CEL against the CRD's schema
    wait_until(lambda: (v := installed.cp.admin.get(
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/"
        f"{RELEASE}-agent-own-plan")).get("status", {}).get("typeChecking") is not None
        and v, 60, "type checking of the agent policy")
    checked = installed.cp.admin.get(
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/"
        f"{RELEASE}-agent-own-plan")["status"]
    assert not checked["typeChecking"].get("expressionWarnings"), checked
    assert vap["spec"]["failurePolicy"] == "Fail"


def test_operator_and_agents_enforce_the_example(running: Installed) -> None:
    inst = running
    assert inst.trees[NODES[0]].high(inst.rel["db-0"]) == "max"
    for node in NODES:
        plan = wait_until(lambda n=node: (p := inst.cp.admin.get(f"{PLANS}/{n}")).get(
            "status", {}).get("appliedPods") == 1 and p, 60, f"agent status of {node}")
        assert plan["metadata"]["ownerReferences"][0]["kind"] == "Node"
    # wait for both columns: MATCHED is written a round before ENFORCED is
    table = wait_until(lambda: (out := inst.kubectl("get", "mrp", "-A")).split(
        "\n")[1].split()[2:4] == ["2", "2"] and out, 60, "policy status: 2 matched, 2 enforced")
    header, row = table.splitlines()[:2]
    assert header.split()[:5] == ["NAMESPACE", "NAME", "MATCHED", "ENFORCED", "MODE"], header
    assert row.split()[:4] == [APPS, "web", "2", "2"], row
    explain = inst.kubectl("explain", "memoryreclaimpolicy.spec.memoryHigh")
    assert "limitPercent" in explain and "KIND:" in explain and "MemoryReclaimPolicy" in explain


def test_an_agent_may_write_only_its_own_plan_status(running: Installed) -> None:
    mine, neighbour = NODES
    agent = running.client(mine)
    dry = "?dryRun=All"
    agent.merge_patch(f"{PLANS}/{mine}/status{dry}", {"status": {}})       # allowed
    err = _denied(lambda: agent.merge_patch(f"{PLANS}/{neighbour}/status{dry}", {"status": {}}))
    assert err.status == 403
    assert f"only change the NodeReclaimPlan of its own node, not {neighbour}" in str(err)
    err = _denied(lambda: agent.merge_patch(f"{PLANS}/{mine}{dry}", {"spec": {"pods": []}}))
    assert err.status == 403 and "cannot patch" in str(err)               # RBAC: no spec
    # the same ServiceAccount's token not bound to a pod names no node: refused too
    unbound = running.cp.as_token(running.cp.token(NAMESPACE, f"{RELEASE}-agent"))
    err = _denied(lambda: unbound.merge_patch(f"{PLANS}/{mine}/status{dry}", {"status": {}}))
    assert err.status == 403 and "own node" in str(err)


def test_agent_reads_are_not_confined_to_its_node(running: Installed) -> None:
    """The exposure docs/operations.md describes: RBAC cannot tell one agent from
    another (one ServiceAccount for the DaemonSet) and admission never sees reads,
    so an agent can list every node's plan. The agent itself only asks for its own
    (fieldSelector metadata.name=<node>)."""
    agent = running.client(NODES[0])
    names = {p["metadata"]["name"] for p in agent.get(PLANS)["items"]}
    assert set(NODES) <= names
    log = running.procs.log(f"agent-{NODES[0]}")
    assert "Traceback" not in log, log[-3000:]


def test_no_component_reads_secrets_or_touches_workloads(running: Installed) -> None:
    for who in ("op", *NODES):
        api = running.client(who)
        for path in ("/api/v1/secrets", f"/api/v1/namespaces/{NAMESPACE}/secrets",
                     f"/api/v1/namespaces/{APPS}/secrets"):
            assert _denied(lambda a=api, p=path: a.get(p)).status == 403
        assert _denied(lambda a=api: a.delete(
            f"/api/v1/namespaces/{APPS}/pods/web-0?dryRun=All")).status == 403
        assert _denied(lambda a=api: a.merge_patch(
            f"/api/v1/nodes/{NODES[0]}?dryRun=All", {"metadata": {"labels": {"x": "y"}}})
        ).status == 403


def test_the_operator_can_do_its_job_and_nothing_more(running: Installed) -> None:
    op = running.client("op")
    # its job: read the inputs, own the plans, write policy status
    assert op.get("/api/v1/pods")["items"]
    op.get(f"{PLANS}/{NODES[0]}")
    op.merge_patch(f"/apis/headroom.dev/v1alpha1/namespaces/{APPS}/memoryreclaimpolicies/"
                   "web/status?dryRun=All", {"status": {}})
    # nothing more: no policy spec, no plan status (the agents'), no pods
    assert _denied(lambda: op.merge_patch(
        f"/apis/headroom.dev/v1alpha1/namespaces/{APPS}/memoryreclaimpolicies/web?dryRun=All",
        {"spec": {"memoryHigh": {"limitPercent": 10}}})).status == 403
    assert _denied(lambda: op.merge_patch(f"{PLANS}/{NODES[0]}/status?dryRun=All",
                                          {"status": {}})).status == 403
    assert _denied(lambda: op.post(f"/api/v1/namespaces/{APPS}/pods?dryRun=All",
                                   _app_pod("x", NODES[0], {}))).status == 403
    assert _denied(lambda: op.get(f"/api/v1/namespaces/{NAMESPACE}/configmaps")).status == 403


def test_node_deleted_its_plan_goes(running: Installed) -> None:
    """Last in this module: the plan of a deleted node is removed by the garbage
    collector (owner reference), the other node's plan is untouched."""
    cp = running.cp
    gone, kept = NODES[1], NODES[0]
    running.procs.stop(f"agent-{gone}")
    cp.nodes.delete(gone)

    def plan_gone() -> bool:
        try:
            cp.admin.get(f"{PLANS}/{gone}")
        except ApiError as exc:
            return exc.status == 404
        return False

    wait_until(plan_gone, 90, f"the plan of {gone} deleted")
    assert cp.admin.get(f"{PLANS}/{kept}")["spec"]["pods"]
    cp.nodes.add(gone)          # the fixture's teardown deletes it again
