"""A plan write the real API server refuses (422) costs only the policy that caused it
(issue 13 item 2), against kube-apiserver and its CEL rules, not a model of them.

The operator checks every entry against the plan contract before writing, so a 422
needs a server stricter than the operator knows: here the installed NodeReclaimPlan CRD
gets one more rule on each pod entry (memoryHigh at most 1 TiB, as a newer CRD or a
cluster's own rule could say). A hostile tenant's policy asks for 2 TiB (within the
contract: below 2^63, page aligned), so the server refuses the node's plan and names
the entry (`spec.pods[i]`). The operator must find that policy from the field path,
mark it Valid=False (PlanRejected, the server's message), leave its pods out and keep
writing the plan for everyone else: a bystander tenant's pods on the same node get
their memory.high (through the real agent on a fake cgroup tree), a new value, a new
pod, and their originals back when the bystander's policy goes, all while the hostile
policy exists.
"""

from __future__ import annotations

import copy
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
from components import Processes
from controlplane import ApiError, ControlPlane, wait_until
from fake_cgroup_tree import FakeTree
from fake_kubepods import make_kubepods, make_pod, pod_rel
from headroom.nodeagent.podcgroups import Driver

ROOT = pathlib.Path(__file__).resolve().parents[2]
NODE = "rej-node"
HOSTILE, BYSTANDER = "tenant-hostile", "tenant-bystander"
MI = 1 << 20
CAP = 1 << 40
PLANS = "/apis/headroom.dev/v1alpha1/nodereclaimplans"
CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/nodereclaimplans.headroom.dev"
CAP_RULE = {"rule": f"self.memoryHigh <= {CAP}",
            "message": "memoryHigh above this cluster's cap of 1 TiB"}


def _policies(ns: str) -> str:
    return f"/apis/headroom.dev/v1alpha1/namespaces/{ns}/memoryreclaimpolicies"


def _policy(name: str, app: str, size: str) -> dict[str, Any]:
    return {"apiVersion": "headroom.dev/v1alpha1", "kind": "MemoryReclaimPolicy",
            "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": app}}, "memoryHigh": {"bytes": size}}}


def _pod(name: str, app: str, limit: str | None) -> dict[str, Any]:
    resources: dict[str, Any] = {"requests": {"memory": "64Mi"}}
    if limit:
        resources["limits"] = {"memory": limit}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": app}},
            "spec": {"nodeSelector": {"kubernetes.io/hostname": NODE},
                     "containers": [{"name": "c", "image": "app", "resources": resources}]}}


def _condition(cp: ControlPlane, ns: str, name: str, kind: str) -> dict[str, Any]:
    status = cp.admin.get(f"{_policies(ns)}/{name}").get("status") or {}
    return next((c for c in status.get("conditions") or () if c.get("type") == kind), {})


@pytest.fixture
def stricter_plan_crd(control_plane: ControlPlane) -> Iterator[None]:
    """The plan CRD with CAP_RULE on each pod entry, for this test only."""
    cp = control_plane
    cp.install_crds(ROOT / "crds")
    original = cp.admin.get(CRD)
    crd = copy.deepcopy(original)
    items = (crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
             ["properties"]["pods"]["items"])
    items.setdefault("x-kubernetes-validations", []).append(CAP_RULE)
    cp.admin.request("PUT", CRD, crd)

    def refused() -> bool:      # the new rule is in force once a dry run hits it
        try:
            cp.admin.request("POST", f"{PLANS}?dryRun=All", {
                "apiVersion": "headroom.dev/v1alpha1", "kind": "NodeReclaimPlan",
                "metadata": {"name": "probe"},
                "spec": {"nodeName": "probe", "pods": [{
                    "uid": "u", "namespace": "n", "name": "p", "qosClass": "Burstable",
                    "memoryHigh": 2 * CAP, "policy": {"kind": "MemoryReclaimPolicy",
                                                      "namespace": "n", "name": "p"},
                    "reclaim": {"mode": "Off"}}]}})
        except ApiError as e:
            return e.status == 422 and "cap of 1 TiB" in str(e.body)
        return False

    wait_until(refused, 60, "the stricter plan CRD in force")
    try:
        yield
    finally:
        current = cp.admin.get(CRD)
        original["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        cp.admin.request("PUT", CRD, original)


def test_a_plan_the_server_refuses_quarantines_only_the_hostile_policy(
        control_plane: ControlPlane, stricter_plan_crd: None,
        tmp_path: pathlib.Path) -> None:
    cp = control_plane
    procs = Processes(tmp_path)
    cp.nodes.add(NODE)
    for ns in (HOSTILE, BYSTANDER):
        cp.namespace(ns)
    tree = FakeTree(tmp_path / "cgroup")
    make_kubepods(tree, Driver.CGROUPFS)
    rel: dict[str, str] = {}

    def add_pod(ns: str, name: str, app: str, limit: str | None) -> str:
        cp.admin.post(f"/api/v1/namespaces/{ns}/pods", _pod(name, app, limit))
        p = wait_until(lambda: (p := cp.admin.get(f"/api/v1/namespaces/{ns}/pods/{name}"))
                       ["status"].get("qosClass") and p["spec"].get("nodeName") and p, 60,
                       f"{name} scheduled")
        rel[name] = pod_rel(Driver.CGROUPFS, p["metadata"]["uid"], p["status"]["qosClass"])
        make_pod(tree, Driver.CGROUPFS, p["metadata"]["uid"], p["status"]["qosClass"],
                 high=512 * MI, current=32 * MI)     # the owner's memory.high: 512 MiB
        return str(p["metadata"]["uid"])

    def highs(*names: str) -> list[str]:
        return [tree.high(rel[n]) for n in names]

    def plan_uids() -> set[str]:
        try:
            plan = cp.admin.get(f"{PLANS}/{NODE}")
        except ApiError:
            return set()
        return {e["uid"] for e in plan["spec"].get("pods") or ()}

    try:
        add_pod(BYSTANDER, "b-0", "web", "1Gi")
        add_pod(BYSTANDER, "b-1", "web", "1Gi")
        hostile_uid = add_pod(HOSTILE, "h-0", "evil", None)   # no limit: 2Ti is not capped
        procs.operator(cp.kubeconfig)
        procs.agent(cp.kubeconfig, NODE, tree.root)

        cp.admin.post(_policies(BYSTANDER), _policy("web", "web", "256Mi"))
        wait_until(lambda: highs("b-0", "b-1") == [str(256 * MI)] * 2, 90,
                   "the bystander's memory.high (operator -> plan -> agent)")

        cp.admin.post(_policies(HOSTILE), _policy("evil", "evil", "2Ti"))
        valid = wait_until(lambda: (c := _condition(cp, HOSTILE, "evil", "Valid")).get(
            "status") == "False" and c, 90, "the hostile policy marked Valid=False")
        assert valid["reason"] == "PlanRejected", valid
        assert "cap of 1 TiB" in valid["message"] and "h-0" in valid["message"], valid
        assert "refused because of policy" in procs.log("operator")
        assert hostile_uid not in plan_uids()
        assert tree.high(rel["h-0"]) == str(512 * MI)     # never written

        # the bystander's policy goes on working while the hostile one exists
        web = cp.admin.get(f"{_policies(BYSTANDER)}/web")
        web["spec"]["memoryHigh"]["bytes"] = "128Mi"
        cp.admin.request("PUT", f"{_policies(BYSTANDER)}/web", web)
        add_pod(BYSTANDER, "b-2", "web", "1Gi")
        wait_until(lambda: highs("b-0", "b-1", "b-2") == [str(128 * MI)] * 3, 90,
                   "the bystander's new memory.high and new pod, hostile policy present")
        assert _condition(cp, BYSTANDER, "web", "Valid").get("status") == "True"
        assert _condition(cp, HOSTILE, "evil", "Valid").get("status") == "False"

        cp.admin.delete(f"{_policies(BYSTANDER)}/web")
        wait_until(lambda: highs("b-0", "b-1", "b-2") == [str(512 * MI)] * 3, 90,
                   "the bystander's originals restored, hostile policy present")
        assert hostile_uid not in plan_uids()
        assert tree.high(rel["h-0"]) == str(512 * MI)
    finally:
        procs.stop_all()
        for name in procs.procs:
            print(f"---- {name} (tail) ----\n{procs.log(name)[-3000:]}")
        for ns in (HOSTILE, BYSTANDER):
            cp.admin.request("DELETE", f"/api/v1/namespaces/{ns}")
        cp.nodes.delete(NODE)
