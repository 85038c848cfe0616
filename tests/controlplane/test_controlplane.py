"""The control plane itself: real authentication and authorization, the scheduler
and the simulated nodes, the garbage collector, ValidatingAdmissionPolicy."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
from controlplane import ApiError, Client, ControlPlane, wait_until

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                         {"name": "app", "image": "busybox",
                          "resources": {"requests": {"memory": "64Mi"},
                                        "limits": {"memory": "128Mi"}}}]}}}}


def test_versions_are_the_pinned_sources(control_plane: ControlPlane) -> None:
    version = control_plane.admin.get("/version")
    assert version["gitVersion"].startswith("v1.37."), version
    assert control_plane.procs["etcd"].poll() is None


def test_authentication_is_real(control_plane: ControlPlane, tmp_path: pathlib.Path) -> None:
    anonymous = Client(control_plane.url, control_plane.pki.ca)
    with pytest.raises(ApiError) as denied:
        anonymous.get("/api/v1/namespaces")
    assert denied.value.status == 403          # anonymous is authenticated as nobody
    assert "system:anonymous" in str(denied.value)

    stranger = Client(control_plane.url, control_plane.pki.ca,
                      cert=control_plane.client_cert("stranger", "stranger"))
    with pytest.raises(ApiError) as denied:
        stranger.get("/api/v1/namespaces")
    assert denied.value.status == 403 and '"stranger"' in str(denied.value)

    forged = Client(control_plane.url, control_plane.pki.ca, token="not.a.jwt")
    with pytest.raises(ApiError) as unauthorized:
        forged.get("/api/v1/namespaces")
    assert unauthorized.value.status == 401


def test_service_account_tokens_and_rbac(control_plane: ControlPlane) -> None:
    ns = control_plane.namespace("cp-rbac")
    admin = control_plane.admin
    admin.post(f"/api/v1/namespaces/{ns}/serviceaccounts",
               {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}})
    sa = control_plane.as_token(control_plane.token(ns, "reader"))
    review = sa.post("/apis/authentication.k8s.io/v1/selfsubjectreviews",
                     {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    assert review["status"]["userInfo"]["username"] == f"system:serviceaccount:{ns}:reader"
    with pytest.raises(ApiError) as denied:
        sa.get(f"/api/v1/namespaces/{ns}/configmaps")
    assert denied.value.status == 403

    admin.post(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles", {
        "metadata": {"name": "cm-reader"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]})
    admin.post(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings", {
        "metadata": {"name": "cm-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "cm-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}]})
    wait_until(lambda: sa.get(f"/api/v1/namespaces/{ns}/configmaps"), 10, "RBAC grant")
    with pytest.raises(ApiError) as still_denied:
        sa.get("/api/v1/namespaces/default/configmaps")     # a Role grants one namespace
    assert still_denied.value.status == 403


def test_scheduler_places_pods_on_simulated_nodes(control_plane: ControlPlane) -> None:
    ns = control_plane.namespace("cp-sched")
    for name in ("sched-a", "sched-b"):
        control_plane.nodes.add(name, memory="1Gi")
    control_plane.admin.post(f"/apis/apps/v1/namespaces/{ns}/deployments",
                             _deployment("web", 4))

    def running() -> list[dict[str, Any]]:
        pods = control_plane.admin.get(f"/api/v1/namespaces/{ns}/pods")["items"]
        ok = [p for p in pods if p["status"].get("phase") == "Running"]
        return ok if len(ok) == 4 else []

    pods = wait_until(running, 60, "4 pods Running")
    # the scheduler spread them (the default PodTopologySpread); nobody set nodeName
    assert {p["spec"]["nodeName"] for p in pods} == {"sched-a", "sched-b"}
    deployment = wait_until(lambda: (d := control_plane.admin.get(
        f"/apis/apps/v1/namespaces/{ns}/deployments/web"))["status"].get("readyReplicas") == 4
        and d, 30, "deployment ready")
    assert deployment["status"]["availableReplicas"] == 4

    # a node that cannot hold it: the scheduler leaves the pod Pending, Unschedulable
    control_plane.admin.post(f"/api/v1/namespaces/{ns}/pods", {
        "metadata": {"name": "huge"}, "spec": {"containers": [{
            "name": "app", "image": "busybox", "resources": {"requests": {"memory": "2Gi"}}}]}})
    cond = wait_until(lambda: next((c for c in control_plane.admin.get(
        f"/api/v1/namespaces/{ns}/pods/huge")["status"].get("conditions") or ()
        if c["type"] == "PodScheduled"), None), 30, "the scheduler's verdict on huge")
    assert (cond["status"], cond["reason"]) == ("False", "Unschedulable")

    control_plane.admin.delete(f"/apis/apps/v1/namespaces/{ns}/deployments/web")
    wait_until(lambda: not [p for p in control_plane.admin.get(
        f"/api/v1/namespaces/{ns}/pods")["items"] if p["metadata"]["name"] != "huge"],
        60, "the deployment's pods gone (garbage collector, simulated kubelet)")


def test_garbage_collector_removes_plans_of_a_deleted_node(control_plane: ControlPlane
                                                           ) -> None:
    control_plane.install_crds(ROOT / "crds")
    node = control_plane.nodes.add("gc-node")
    plan = control_plane.admin.post("/apis/headroom.dev/v1alpha1/nodereclaimplans", {
        "apiVersion": "headroom.dev/v1alpha1", "kind": "NodeReclaimPlan",
        "metadata": {"name": "gc-node", "ownerReferences": [{
            "apiVersion": "v1", "kind": "Node", "name": "gc-node",
            "uid": node["metadata"]["uid"]}]},
        "spec": {"nodeName": "gc-node", "pods": []}})
    assert plan["metadata"]["ownerReferences"][0]["kind"] == "Node"
    control_plane.nodes.delete("gc-node")

    def plan_gone() -> bool:
        try:
            control_plane.admin.get("/apis/headroom.dev/v1alpha1/nodereclaimplans/gc-node")
        except ApiError as exc:
            return exc.status == 404
        return False

    wait_until(plan_gone, 60, "the garbage collector deleting the plan")


def test_validating_admission_policy_is_enforced(control_plane: ControlPlane) -> None:
    ns = control_plane.namespace("cp-vap")
    admin = control_plane.admin
    admin.post("/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies", {
        "metadata": {"name": "cp-test-no-big-configmaps"},
        "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [{
            "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
            "resources": ["configmaps"]}]},
            "validations": [{"expression": "size(object.data) < 2",
                             "message": "too many keys"}]}})
    admin.post("/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings", {
        "metadata": {"name": "cp-test-no-big-configmaps"},
        "spec": {"policyName": "cp-test-no-big-configmaps", "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {
                     "kubernetes.io/metadata.name": ns}}}}})
    big = {"metadata": {"name": "big"}, "data": {"a": "1", "b": "2"}}

    def denied() -> bool:
        try:
            admin.post(f"/api/v1/namespaces/{ns}/configmaps", big)
        except ApiError as exc:
            return exc.status == 422 and "too many keys" in str(exc)
        admin.delete(f"/api/v1/namespaces/{ns}/configmaps/big")
        return False

    wait_until(denied, 30, "the policy denying")   # policies take effect asynchronously
    admin.post(f"/api/v1/namespaces/{ns}/configmaps",
               {"metadata": {"name": "small"}, "data": {"a": "1"}})
