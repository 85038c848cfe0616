"""The plan watch against an in-process fake API server: list, watch, 410, outages."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fake_planapi import FakePlanAPI, wait_until
from headroom.nodeagent.planwatch import PlanWatcher, backoff_delay, plan_identity

SPEC = {"nodeName": "node-1", "pods": []}


class Received:
    def __init__(self) -> None:
        self.plans: list[dict[str, Any] | None] = []
        self.lock = threading.Lock()

    def __call__(self, plan: dict[str, Any] | None) -> None:
        with self.lock:
            self.plans.append(plan)

    def specs(self) -> list[Any]:
        with self.lock:
            return [p["spec"] if p else None for p in self.plans]


@pytest.fixture
def api() -> Iterator[FakePlanAPI]:
    fake = FakePlanAPI().start()
    yield fake
    fake.close()


def watcher(api: FakePlanAPI, received: Received) -> PlanWatcher:
    w = PlanWatcher(api.custom_objects_api(), "node-1", received,
                    watch_timeout_seconds=1, backoff=lambda attempt: 0.02)
    w.start()
    return w


def test_initial_list_then_changes_then_delete(api: FakePlanAPI) -> None:
    api.put_plan("node-1", SPEC)
    got = Received()
    w = watcher(api, got)
    try:
        assert wait_until(lambda: got.specs() == [SPEC])
        spec2 = {"nodeName": "node-1", "pods": [{"uid": "a"}]}
        api.put_plan("node-1", spec2)
        assert wait_until(lambda: got.specs() == [SPEC, spec2])
        api.delete_plan("node-1")
        assert wait_until(lambda: got.specs() == [SPEC, spec2, None])
    finally:
        w.stop()


def test_no_plan_yet_is_delivered_as_none_then_creation(api: FakePlanAPI) -> None:
    got = Received()
    w = watcher(api, got)
    try:
        assert wait_until(lambda: got.specs() == [None])
        api.put_plan("node-1", SPEC)
        assert wait_until(lambda: got.specs() == [None, SPEC])
    finally:
        w.stop()


def test_only_own_plan_and_field_selector_sent(api: FakePlanAPI) -> None:
    got = Received()
    w = watcher(api, got)
    try:
        assert wait_until(lambda: len(got.plans) == 1)
        api.put_plan("node-2", {"nodeName": "node-2"})
        api.put_plan("node-1", SPEC)
        assert wait_until(lambda: got.specs() == [None, SPEC])
    finally:
        w.stop()
    assert all("fieldSelector=metadata.name%3Dnode-1" in path for _, path in api.requests)
    assert got.specs() == [None, SPEC]


def test_status_only_updates_are_not_passed_on(api: FakePlanAPI) -> None:
    api.put_plan("node-1", SPEC)
    got = Received()
    w = watcher(api, got)
    try:
        assert wait_until(lambda: len(got.plans) == 1)
        co = api.custom_objects_api()
        for i in range(3):
            co.patch_cluster_custom_object_status(
                "headroom.dev", "v1alpha1", "nodereclaimplans", "node-1",
                {"status": {"heartbeat": str(i)}})
        rv_after = str(api.rv)
        assert wait_until(lambda: w.resource_version == rv_after)
    finally:
        w.stop()
    assert len(got.plans) == 1


def test_watch_resumes_from_last_version_without_relisting(api: FakePlanAPI) -> None:
    api.put_plan("node-1", SPEC)
    got = Received()
    w = watcher(api, got)
    try:
        assert wait_until(lambda: len(got.plans) == 1)
        # several watch requests end (max_watch_seconds) and are resumed
        assert wait_until(lambda: sum("watch=true" in p for _, p in api.requests) >= 3)
        assert w.relists == 1
    finally:
        w.stop()


def test_gone_relists_and_catches_up(api: FakePlanAPI) -> None:
    api.put_plan("node-1", SPEC)
    got = Received()
    w = watcher(api, got)
    try:
        assert wait_until(lambda: len(got.plans) == 1)
        api.max_watch_seconds = 0.05
        spec2 = {"nodeName": "node-1", "pods": [{"uid": "b"}]}
        with api.lock:  # a change the watch will not see as an event ...
            api.plans["node-1"]["spec"] = spec2
            api.rv += 1
        api.compact()   # ... because history is gone: the next watch gets 410
        assert wait_until(lambda: got.specs() == [SPEC, spec2])
        assert w.relists >= 2
    finally:
        w.stop()


def test_bookmarks_move_the_resource_version(api: FakePlanAPI) -> None:
    api.put_plan("node-1", SPEC)
    got = Received()
    w = watcher(api, got)
    try:
        assert wait_until(lambda: len(got.plans) == 1)
        api.bookmark()
        rv = str(api.rv)
        assert wait_until(lambda: w.resource_version == rv)
    finally:
        w.stop()


def test_outage_backs_off_then_reconnects_and_reconciles(api: FakePlanAPI) -> None:
    api.put_plan("node-1", SPEC)
    got = Received()
    w = watcher(api, got)
    try:
        assert wait_until(lambda: w.connected)
        api.fail_with = 503
        assert wait_until(lambda: not w.connected and w.failures >= 2)
        assert "503" in w.last_error
        spec2 = {"nodeName": "node-1", "pods": [{"uid": "c"}]}
        api.put_plan("node-1", spec2)   # changed while the agent could not see it
        api.fail_with = None
        assert wait_until(lambda: got.specs() == [SPEC, spec2])
        assert wait_until(lambda: w.connected and w.failures == 0)
    finally:
        w.stop()


def test_unreachable_server_is_retried_not_fatal() -> None:
    from kubernetes import client
    cfg = client.Configuration(host="http://127.0.0.1:9")  # discard port: refused
    got = Received()
    w = PlanWatcher(client.CustomObjectsApi(client.ApiClient(cfg)), "node-1", got,
                    connect_timeout_seconds=0.5, backoff=lambda attempt: 0.01)
    w.start()
    try:
        assert wait_until(lambda: w.failures >= 3)
        assert not w.connected and got.plans == []
    finally:
        w.stop()


def test_backoff_grows_is_capped_and_jittered() -> None:
    assert backoff_delay(0, rand=lambda: 1.0) == 0.5
    assert backoff_delay(3, rand=lambda: 1.0) == 4.0
    assert backoff_delay(100, rand=lambda: 1.0) == 30.0
    assert backoff_delay(100, rand=lambda: 0.0) == 15.0


def test_plan_identity_ignores_status_and_resource_version() -> None:
    a = {"metadata": {"uid": "u", "resourceVersion": "1"}, "spec": {"x": 1}, "status": {}}
    b = {"metadata": {"uid": "u", "resourceVersion": "2"}, "spec": {"x": 1},
         "status": {"heartbeat": "now"}}
    c = {"metadata": {"uid": "v"}, "spec": {"x": 1}}
    assert plan_identity(a) == plan_identity(b) != plan_identity(c)
    assert plan_identity(None) != plan_identity({"metadata": {}, "spec": {}})
