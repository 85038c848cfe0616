"""The operator's reads (controller/informer.py): the cache rules, and list + watch
against the emulator (pagination, events, 410 Gone, stop)."""

from __future__ import annotations

import threading
from typing import Any

import kubernetes
from api_helpers import Cluster, node, pod, wait_for
from headroom.controller.informer import KINDS, Informer, ObjectCache, is_newer
from headroom.controller.kubeclient import load_configuration


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
