"""Prometheus metrics: names, labels and values in the text exposition format."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from headroom.cgroup import Capabilities
from headroom.engine.metrics import AgentMetrics
from prometheus_client.parser import text_string_to_metric_families

UID = "aaaaaaaa-0000-4000-8000-000000000001"


@dataclass(frozen=True)
class Stats:
    applied: bool = True
    reason: str = "Applied"
    memory_high: int | None = 256 << 20
    usage_bytes: int = 200 << 20
    reclaimed_bytes: int = 1 << 30
    reclaim_cpu_seconds: float = 0.25
    reclaim_writes: int = 64
    eagain_count: int = 3
    high_events: int = 2
    psi_some_seconds: float = 0.5
    lateness_seconds: float = 0.004
    drift_corrections: int = 5
    last_error: str | None = None


class FakeEngine:
    def __init__(self) -> None:
        self.stats = {UID: Stats(), "system.slice/batch": Stats(applied=False, reason="Error",
                                                                 memory_high=None)}
        self.capabilities = Capabilities(memory_reclaim=True, swappiness_key=False, psi=None)

    def snapshot(self) -> dict[str, Stats]:
        return dict(self.stats)


LABELS = {UID: {"namespace": "shop", "pod": "web-0"}}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metrics() -> tuple[AgentMetrics, FakeEngine]:
    m = AgentMetrics()
    engine = FakeEngine()
    m.watch_engine(engine, labels_of=lambda key: LABELS.get(key, {}))
    return m, engine


def test_per_pod_series_with_namespace_pod_and_target_labels() -> None:
    m, _ = metrics()
    got = samples(m.text())
    pod = frozenset({"namespace": "shop", "pod": "web-0", "uid": UID}.items())
    assert got[("headroom_reclaimed_bytes_total", pod)] == float(1 << 30)
    assert got[("headroom_reclaim_cpu_seconds_total", pod)] == 0.25
    assert got[("headroom_reclaim_writes_total", pod | {("result", "ok")})] == 61
    assert got[("headroom_reclaim_writes_total", pod | {("result", "eagain")})] == 3
    assert got[("headroom_reclaim_writes_total", pod | {("result", "error")})] == 0
    assert not any(name == "headroom_reclaim_eagain_total" for name, _ in got)
    assert got[("headroom_memory_high_bytes", pod)] == float(256 << 20)
    assert got[("headroom_memory_usage_bytes", pod)] == float(200 << 20)
    assert got[("headroom_memory_high_events_total", pod)] == 2
    assert got[("headroom_memory_pressure_waiting_seconds_total", pod)] == 0.5
    assert got[("headroom_engine_lateness_seconds", pod)] == 0.004
    assert got[("headroom_memory_high_drift_corrections_total", pod)] == 5
    assert got[("headroom_target_applied", pod | {("reason", "Applied")})] == 1


def test_standalone_targets_have_empty_pod_labels_and_no_memory_high_when_unset() -> None:
    m, _ = metrics()
    got = samples(m.text())
    other = frozenset({"namespace": "", "pod": "", "uid": "system.slice/batch"}.items())
    assert got[("headroom_target_applied", other | {("reason", "Error")})] == 0
    assert ("headroom_memory_high_bytes", other) not in got
    assert got[("headroom_memory_usage_bytes", other)] == float(200 << 20)


def test_series_of_a_removed_target_disappear() -> None:
    m, engine = metrics()
    del engine.stats[UID]
    assert "web-0" not in m.text()


def test_counter_types_and_help_text() -> None:
    m, _ = metrics()
    text = m.text()
    assert "# TYPE headroom_reclaimed_bytes_total counter" in text
    assert "# TYPE headroom_memory_usage_bytes gauge" in text
    assert "# HELP headroom_memory_high_events_total" in text


def test_capabilities_probed_are_exported_unprobed_are_not() -> None:
    m, _ = metrics()
    got = samples(m.text())
    assert got[("headroom_capability", frozenset({("capability", "memory_reclaim")}))] == 1
    assert got[("headroom_capability", frozenset({("capability", "swappiness_key")}))] == 0
    assert ("headroom_capability", frozenset({("capability", "psi")})) not in got


def test_agent_counters() -> None:
    m, _ = metrics()
    m.status_writes.labels(result="ok").inc()
    m.status_writes.labels(result="error").inc(2)
    m.events.labels(reason="MemoryHighReached").inc()
    m.plan_watch_connected.set(1)
    got = samples(m.text())
    assert got[("headroom_status_writes_total", frozenset({("result", "error")}))] == 2
    assert got[("headroom_events_total", frozenset({("reason", "MemoryHighReached")}))] == 1
    assert got[("headroom_plan_watch_connected", frozenset())] == 1


def test_http_endpoint_on_loopback() -> None:
    m, _ = metrics()
    server = m.serve(-1, "127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics",
                                    timeout=5) as r:
            body = r.read().decode()
        assert 'headroom_reclaimed_bytes_total{namespace="shop",pod="web-0"' in body
    finally:
        server.shutdown()
        server.server_close()


def test_port_zero_disables_the_endpoint() -> None:
    assert AgentMetrics().serve(0) is None


def test_check_lateness_is_a_histogram_over_all_checks() -> None:
    from headroom.engine.targets import LatenessHistogram
    m, engine = metrics()
    engine.lateness_histogram = LatenessHistogram()
    for late in (0.0, 0.003, 0.02, 0.02, 3.0, 60.0):
        engine.lateness_histogram.observe(late)
    got = samples(m.text())
    bucket = "headroom_engine_check_lateness_seconds_bucket"
    assert got[(bucket, frozenset({("le", "0.005")}))] == 2
    assert got[(bucket, frozenset({("le", "0.025")}))] == 4
    assert got[(bucket, frozenset({("le", "5.0")}))] == 5
    assert got[(bucket, frozenset({("le", "+Inf")}))] == 6
    assert got[("headroom_engine_check_lateness_seconds_count", frozenset())] == 6
    assert abs(got[("headroom_engine_check_lateness_seconds_sum", frozenset())] - 63.043) < 1e-9
