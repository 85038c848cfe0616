"""The operator's reads (controller/informer.py): the cache rules, list + watch against
the emulator (pagination, events, 410 Gone, stop), and slim pods resolving like full ones."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import kubernetes
from api_helpers import Cluster, node, pod, wait_for
from headroom.controller.informer import KINDS, Informer, ObjectCache, is_newer, slim_pod
from headroom.controller.kubeclient import load_configuration
from headroom.controller.plans import active_pod_nodes
from headroom.controller.resolve import resolve


def _obj(name: str, rv: str, namespace: str = "default", **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": rv,
                         "labels": labels}}


def test_resource_versions_compare_as_numbers_when_they_are() -> None:
    assert is_newer("10", "9") and not is_newer("9", "10") and not is_newer("7", "7")
    assert is_newer("b", "a") and is_newer("a", "b") and not is_newer("a", "a")


def test_cache_ignores_events_that_bring_nothing_newer() -> None:
    cache = ObjectCache()
    assert cache.apply("ADDED", _obj("a", "5"))
    assert not cache.apply("ADDED", _obj("a", "5"))            # the same, again
    assert not cache.apply("MODIFIED", _obj("a", "4", x="1"))   # older: a late duplicate
    assert cache.apply("MODIFIED", _obj("a", "6", x="2"))
    assert cache.values()[0]["metadata"]["labels"] == {"x": "2"}
    assert cache.apply("DELETED", _obj("a", "7"))
    assert not cache.apply("DELETED", _obj("a", "7"))
    assert cache.values() == []


def test_relist_reports_a_change_only_when_something_differs() -> None:
    cache = ObjectCache()
    assert cache.replace([_obj("b", "2"), _obj("a", "1", namespace="other")])
    assert not cache.replace([_obj("a", "1", namespace="other"), _obj("b", "2")])
    assert [o["metadata"]["name"] for o in cache.values()] == ["b", "a"]   # by namespace
    assert cache.replace([_obj("b", "3"), _obj("a", "1", namespace="other")])
    assert cache.replace([_obj("b", "3")])                                 # one gone


def test_informer_lists_in_pages_follows_the_watch_and_relists_after_410(
        cluster: Cluster) -> None:
    cluster.apply([node("node-1")])
    for i in range(5):
        cluster.create(pod(f"p-{i}", "node-1", {"app": "a"}))
    api = kubernetes.client.ApiClient(load_configuration(str(cluster.kubeconfig)))
    cache, synced = ObjectCache(), threading.Event()
    changes: list[int] = []
    pods_kind = next(k for k in KINDS if k.name == "pods")
    informer = Informer(api, pods_kind, cache, lambda: changes.append(1), synced.set,
                        page_size=2, watch_timeout=5)
    informer.start()
    try:
        assert synced.wait(20), "not synced"
        assert sorted(o["metadata"]["name"] for o in cache.values()) == \
            [f"p-{i}" for i in range(5)]                       # all three pages
        cluster.kubectl("label", "pod", "p-1", "app=b", "--overwrite")
        wait_for(lambda: next(o for o in cache.values() if o["metadata"]["name"] == "p-1")
                 ["metadata"]["labels"]["app"] == "b", what="label change in the cache")
        cluster.kubectl("delete", "pod", "p-2")
        wait_for(lambda: len(cache) == 4, what="deletion in the cache")

        # 410 Gone: list again; an unchanged cluster pokes no one
        before = len(changes)
        cluster.emu.expire_watches()
        wait_for(lambda: informer.lists == 2, what="relist after 410")
        assert len(changes) == before
        cluster.kubectl("delete", "pod", "p-3")
        wait_for(lambda: len(cache) == 3, what="watching again after the relist")
        assert len(changes) == before + 1
    finally:
        informer.stop()
    assert not informer._thread.is_alive()


def _rich_pod(name: str, node: str, app: str, **spec: Any) -> dict[str, Any]:
    """A pod as a real API server returns it: mostly fields resolve() never reads."""
    base = pod(name, node, {"app": app}, limit="1Gi", request="256Mi")
    base["metadata"].update(
        uid=str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
        resourceVersion="7", annotations={"kubectl.kubernetes.io/last-applied": "{...}"},
        managedFields=[{"manager": "kubelet", "fieldsV1": {"f:status": {}}}],
        ownerReferences=[{"kind": "ReplicaSet", "name": "rs", "uid": "u"}])
    base["spec"]["containers"][0].update(env=[{"name": "A", "value": "1"}],
                                         volumeMounts=[{"name": "v", "mountPath": "/v"}])
    base["spec"].update(volumes=[{"name": "v", "emptyDir": {}}], tolerations=[], **spec)
    base["status"] = {"phase": "Running", "qosClass": "Burstable", "podIP": "10.0.0.1",
                      "containerStatuses": [{"name": "app", "ready": True}]}
    return base


def test_slim_pods_resolve_exactly_like_full_pods() -> None:
    sidecar = {"name": "proxy", "image": "x", "restartPolicy": "Always",
               "resources": {"limits": {"memory": "128Mi"}}}
    pods = [_rich_pod("a", "n1", "web"),
            _rich_pod("b", "n1", "web", initContainers=[sidecar],
                      overhead={"memory": "64Mi"}),
            _rich_pod("c", "n2", "web", resources={"limits": {"memory": "2Gi"}}),
            _rich_pod("d", "n2", "db"),
            _rich_pod("e", "n2", "web")]
    pods[3]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    pods[4]["status"]["phase"] = "Succeeded"
    policies = [{"metadata": {"name": p, "namespace": "default", "generation": 1},
                 "spec": {"selector": {"matchLabels": {"app": app}}, "memoryHigh": high}}
                for p, app, high in (("web", "web", {"throttlingPercent": 50}),
                                     ("db", "db", {"limitPercent": 80}))]
    namespaces = [{"metadata": {"name": "default", "labels": {"tier": "gold"}}}]
    nodes = [{"metadata": {"name": n}} for n in ("n1", "n2")]
    slim = [slim_pod(p) for p in pods]
    full_res = resolve(policies, [], pods, namespaces, nodes)
    slim_res = resolve(policies, [], slim, namespaces, nodes)
    assert full_res.plans == slim_res.plans
    assert full_res.policies == slim_res.policies
    assert active_pod_nodes(pods) == active_pod_nodes(slim)
    assert len(full_res.plans["n1"]["pods"]) == 2     # the fixture means something
    assert "managedFields" not in slim[0]["metadata"] and "env" not in \
        slim[0]["spec"]["containers"][0]
