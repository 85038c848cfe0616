"""The operator's /healthz, /readyz and /metrics, served by the real operator against the
emulator."""

from __future__ import annotations

import asyncio
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from api_helpers import Cluster, node, pod, policy, wait_for
from prometheus_client.parser import text_string_to_metric_families


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


@pytest.fixture
def endpoints(cluster: Cluster) -> Iterator[dict[str, int]]:
    from headroom.controller.handlers import OperatorOptions
    from headroom.controller.main import operate

    stop, ready = threading.Event(), threading.Event()
    servers: list[Any] = []
    options = OperatorOptions(kubeconfig=str(cluster.kubeconfig), debounce=0.1, max_delay=1.0)
    thread = threading.Thread(target=lambda: asyncio.run(operate(
        options, stop_flag=stop, ready_flag=ready, health_port=-1, metrics_port=-1,
        http_address="127.0.0.1", servers=servers)), name="operator", daemon=True)
    thread.start()
    assert ready.wait(30), "operator did not start"
    health, metrics = servers
    yield {"health": health.server_port, "metrics": metrics.server_port}
    stop.set()
    thread.join(30)
    assert not thread.is_alive()


def test_health_readiness_and_metrics(cluster: Cluster, endpoints: dict[str, int]) -> None:
    status, body = get(endpoints["health"], "/healthz")
    assert status == 200 and "ok reconciler" in body, body
    wait_for(lambda: get(endpoints["health"], "/readyz")[0] == 200, what="operator ready")
    assert "ok first round: done" in get(endpoints["health"], "/readyz")[1]
    assert get(endpoints["health"], "/nothing")[0] == 404

    cluster.apply([node("node-1"), pod("web-0", "node-1", {"app": "web"})])
    cluster.apply(policy("web", {"app": "web"}, {"limitPercent": 50}))
    wait_for(lambda: cluster.get("nodereclaimplans", "node-1") is not None, what="plan")

    def plan_writes() -> float:
        text = get(endpoints["metrics"], "/metrics")[1]
        return samples(text).get(("headroom_operator_writes_total",
                                  (("kind", "plan"), ("result", "ok"))), 0.0)
    wait_for(lambda: plan_writes() >= 1, what="plan write counted")

    status, text = get(endpoints["metrics"], "/metrics")
    assert status == 200
    got = samples(text)
    names = {name for name, _ in got}
    assert "headroom_operator_round_duration_seconds_count" in names
    assert got[("headroom_operator_rounds_total", (("result", "ok"),))] >= 1
    assert got[("headroom_operator_caches_synced", ())] == 1
    assert got[("headroom_operator_cache_objects", (("kind", "pods"),))] == 1
    assert any(n == "headroom_build_info" for n in names)
    assert any(n.startswith("process_") for n in names)
    assert not [n for n in names if n.endswith("_created")]
