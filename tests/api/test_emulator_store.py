"""The emulator's server-side semantics, driven directly on its store."""

from __future__ import annotations

import copy

import pytest
from api_helpers import Cluster, node, pod, policy
from kube_selectors import SelectorError, compile_selectors
from kube_store import ApiError


def _crd_plan(name: str, owner: dict) -> dict:
    return {"apiVersion": "headroom.dev/v1alpha1", "kind": "NodeReclaimPlan",
            "metadata": {"name": name, "ownerReferences": [
                {"apiVersion": "v1", "kind": "Node", "name": owner["metadata"]["name"],
                 "uid": owner["metadata"]["uid"]}]},
            "spec": {"nodeName": name, "pods": []}}


def test_server_sets_metadata_and_generation_follows_spec_only(cluster: Cluster) -> None:
    p = cluster.create(policy("web", {"app": "web"}, {"bytes": "1Gi"}))
    meta = p["metadata"]
    assert meta["uid"] and meta["resourceVersion"] and meta["creationTimestamp"]
    assert meta["generation"] == 1
    rt = cluster.rtype("memoryreclaimpolicies")
    labelled = cluster.store.patch(rt, "default", "web", "merge",
                                   {"metadata": {"labels": {"a": "b"}}})
    assert labelled["metadata"]["generation"] == 1
    assert int(labelled["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    status = cluster.store.patch(rt, "default", "web", "merge", {"status": {"matchedPods": 3}},
                                 subresource="status")
    assert status["metadata"]["generation"] == 1 and status["status"]["matchedPods"] == 3
    changed = cluster.store.patch(rt, "default", "web", "merge", {"spec": {"priority": 5}})
    assert changed["metadata"]["generation"] == 2


def test_noop_write_changes_nothing(cluster: Cluster) -> None:
    created = cluster.create(node("n1"))
    rt = cluster.rtype("nodes")
    again = cluster.store.patch(rt, "", "n1", "merge", {"metadata": {"labels": None}})
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert cluster.store.writes[-1].changed is False


def test_failed_json_patch_test_is_422(cluster: Cluster) -> None:
    cluster.create(node("n1"))
    with pytest.raises(ApiError) as e:
        cluster.store.patch(cluster.rtype("nodes"), "", "n1", "json",
                            [{"op": "test", "path": "/metadata/resourceVersion", "value": "0"},
                             {"op": "add", "path": "/metadata/finalizers", "value": ["x"]}])
    assert e.value.code == 422


def test_strategic_merge_merges_containers_by_name_and_finalizers_as_set(
        cluster: Cluster) -> None:
    obj = pod("p", "n1", {"app": "a"})
    obj["spec"]["containers"].append({"name": "side", "image": "x"})
    obj["metadata"]["finalizers"] = ["a"]
    cluster.create(obj)
    out = cluster.store.patch(cluster.rtype("pods"), "default", "p", "strategic",
                              {"metadata": {"finalizers": ["b"]},
                               "spec": {"containers": [{"name": "side", "image": "y"}]}})
    assert [c["image"] for c in out["spec"]["containers"]] == ["busybox", "y"]
    assert out["metadata"]["finalizers"] == ["a", "b"]
    out = cluster.store.patch(cluster.rtype("pods"), "default", "p", "strategic",
                              {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}})
    assert [c["name"] for c in out["spec"]["containers"]] == ["app"]


def test_strategic_merge_on_custom_resource_is_415(cluster: Cluster) -> None:
    cluster.create(policy("web", {"app": "web"}, {"bytes": "1Gi"}))
    with pytest.raises(ApiError) as e:
        cluster.store.patch(cluster.rtype("memoryreclaimpolicies"), "default", "web",
                            "strategic", {"spec": {"priority": 1}})
    assert e.value.code == 415


def test_put_with_stale_resource_version_is_409(cluster: Cluster) -> None:
    created = cluster.create(node("n1"))
    rt = cluster.rtype("nodes")
    cluster.store.patch(rt, "", "n1", "merge", {"metadata": {"labels": {"a": "1"}}})
    stale = copy.deepcopy(created)
    stale["metadata"]["labels"] = {"a": "2"}
    with pytest.raises(ApiError) as e:
        cluster.store.update(rt, "", "n1", stale)
    assert e.value.code == 409
    fresh = cluster.get("nodes", "n1")
    assert fresh is not None
    fresh["metadata"]["labels"] = {"a": "2"}
    assert cluster.store.update(rt, "", "n1", fresh)["metadata"]["labels"] == {"a": "2"}


def test_status_subresource_is_separate_from_the_main_resource(cluster: Cluster) -> None:
    body = policy("web", {"app": "web"}, {"bytes": "1Gi"})
    body["status"] = {"matchedPods": 9}
    created = cluster.create(body)
    assert "status" not in created          # status is dropped on create
    rt = cluster.rtype("memoryreclaimpolicies")
    cluster.store.patch(rt, "default", "web", "merge", {"status": {"matchedPods": 1}},
                        subresource="status")
    main = cluster.store.patch(rt, "default", "web", "merge",
                               {"status": {"matchedPods": 2}, "spec": {"priority": 3}})
    assert main["status"]["matchedPods"] == 1 and main["spec"]["priority"] == 3
    status = cluster.store.patch(rt, "default", "web", "merge",
                                 {"status": {"matchedPods": 4}, "spec": {"priority": 7}},
                                 subresource="status")
    assert status["status"]["matchedPods"] == 4 and status["spec"]["priority"] == 3


def test_generate_name(cluster: Cluster) -> None:
    ev = cluster.store.create(cluster.rtype("events"), "default", {
        "metadata": {"generateName": "web."}, "reason": "X", "message": "m",
        "involvedObject": {"kind": "Pod", "name": "web"}})
    assert ev["metadata"]["name"].startswith("web.") and len(ev["metadata"]["name"]) == 9


def test_finalizers_hold_deletion_until_removed(cluster: Cluster) -> None:
    body = node("n1")
    body["metadata"]["finalizers"] = ["example.com/keep"]
    cluster.create(body)
    rt = cluster.rtype("nodes")
    pending = cluster.store.delete(rt, "", "n1")
    assert pending["metadata"]["deletionTimestamp"]
    assert cluster.get("nodes", "n1") is not None
    cluster.store.patch(rt, "", "n1", "merge", {"metadata": {"finalizers": None}})
    assert cluster.get("nodes", "n1") is None


def test_deleting_a_node_collects_the_objects_it_owns(cluster: Cluster) -> None:
    owner = cluster.create(node("n1"))
    cluster.create(node("n2"))
    cluster.create(_crd_plan("n1", owner))
    cluster.store.delete(cluster.rtype("nodes"), "", "n1")
    assert cluster.get("nodereclaimplans", "n1") is None
    assert cluster.get("nodes", "n2") is not None


def test_deleting_a_namespace_deletes_its_content(cluster: Cluster) -> None:
    cluster.store.create(cluster.rtype("namespaces"), "", {"metadata": {"name": "team"}})
    cluster.create(pod("p", "n1", {}, namespace="team"))
    cluster.store.delete(cluster.rtype("namespaces"), "", "team")
    assert cluster.get("pods", "p", "team") is None
    assert cluster.get("namespaces", "team") is None
    with pytest.raises(ApiError) as e:
        cluster.create(pod("q", "n1", {}, namespace="team"))
    assert e.value.code == 404


def test_schema_rejects_an_invalid_policy_with_a_clear_message(cluster: Cluster) -> None:
    bad = policy("bad", {"app": "x"}, {"bytes": "1Gi", "limitPercent": 50})
    with pytest.raises(ApiError) as e:
        cluster.create(bad)
    assert e.value.code == 422
    assert "exactly one of" in e.value.message
    wrong_type = policy("bad", {"app": "x"}, {"limitPercent": "lots"})
    with pytest.raises(ApiError) as e:
        cluster.create(wrong_type)
    assert e.value.code == 422 and "spec.memoryHigh.limitPercent" in e.value.message


def test_schema_prunes_or_rejects_unknown_fields(cluster: Cluster) -> None:
    body = policy("web", {"app": "web"}, {"bytes": "1Gi"}, colour="blue")
    with pytest.raises(ApiError) as e:
        cluster.store.create(cluster.rtype("memoryreclaimpolicies"), "default", body,
                             strict="Strict")
    assert e.value.code == 400 and 'unknown field "spec.colour"' in e.value.message
    created = cluster.create(body)
    assert "colour" not in created["spec"]


def test_selectors() -> None:
    obj = {"metadata": {"name": "a", "namespace": "ns", "labels": {"app": "web", "t": "1"}},
           "spec": {"nodeName": "n1"}}
    assert compile_selectors("app=web,t in (1,2)", "spec.nodeName=n1", "pods")(obj)
    assert not compile_selectors("app!=web", None, "pods")(obj)
    assert compile_selectors("!missing,app", "metadata.name!=b", "pods")(obj)
    assert not compile_selectors("t notin (1)", None, "pods")(obj)
    with pytest.raises(SelectorError):
        compile_selectors(None, "spec.nodeName=n1", "namespaces")


def test_list_filters_and_reports_resource_version(cluster: Cluster) -> None:
    cluster.create(pod("a", "n1", {"app": "web"}))
    cluster.create(pod("b", "n2", {"app": "db"}))
    items, rv = cluster.store.list(cluster.rtype("pods"), None,
                                   compile_selectors("app=web", None, "pods"))
    assert [i["metadata"]["name"] for i in items] == ["a"] and rv == cluster.store.rv
    items, _ = cluster.store.list(cluster.rtype("pods"), None,
                                  compile_selectors(None, "spec.nodeName=n2", "pods"))
    assert [i["metadata"]["name"] for i in items] == ["b"]


def test_pod_status_gets_phase_and_qos_class(cluster: Cluster) -> None:
    created = cluster.create(pod("g", "n1", {}, limit="1Gi"))
    assert created["status"] == {"phase": "Pending", "qosClass": "Burstable"}
    best = pod("b", "n1", {})
    best["spec"]["containers"][0]["resources"] = {}
    assert cluster.create(best)["status"]["qosClass"] == "BestEffort"


def test_server_side_apply_creates_and_drops_fields_no_longer_applied(
        cluster: Cluster) -> None:
    rt = cluster.rtype("memoryreclaimpolicies")
    config = policy("web", {"app": "web"}, {"bytes": "1Gi"}, priority=4)
    created = cluster.store.patch(rt, "default", "web", "apply", config, field_manager="me")
    assert created["spec"]["priority"] == 4
    del config["spec"]["priority"]
    again = cluster.store.patch(rt, "default", "web", "apply", config, field_manager="me")
    assert again["spec"]["priority"] == 0     # dropped, then the schema default filled in
    assert again["spec"]["reclaim"]["stepBytes"] == "16Mi"   # defaults of a nested {}
    with pytest.raises(ApiError) as e:
        cluster.store.patch(rt, "default", "web", "apply", config)
    assert e.value.code == 400
