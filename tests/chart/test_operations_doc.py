"""docs/operations.md documents every metric the agent exposes, and no other."""

from __future__ import annotations

import re
from pathlib import Path

from headroom.cgroup import Capabilities
from headroom.engine import TargetStats
from headroom.engine.metrics import AgentMetrics, TargetSample
from headroom.engine.targets import LatenessHistogram

ROOT = Path(__file__).resolve().parents[2]


def exposed_metric_names() -> set[str]:
    """Names in the agent's /metrics text, with one pod and probed capabilities."""
    metrics = AgentMetrics()
    stats = TargetStats(applied=True, reason="Applied", memory_high=1 << 28, usage_bytes=1,
                        relieved_high=1 << 29, working_set_bytes=1)   # every optional series
    sample = TargetSample("uid-1", {"namespace": "default", "pod": "web-0"}, stats)
    hist = LatenessHistogram()
    hist.observe(0.01)
    metrics.watch(lambda: [sample], lambda: Capabilities(True, False, True), lambda: hist)
    metrics.status_writes.labels(result="ok").inc()
    metrics.events.labels(reason="MemoryHighReached").inc()
    names = set()
    for line in metrics.text().splitlines():
        if line and not line.startswith("#"):
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
            assert name
            names.add(re.sub(r"_(bucket|count|sum)$", "", name.group(0)))
    # process_* are prometheus_client's standard process metrics, documented as a group
    assert not [n for n in names if n.endswith("_created")]
    return {n for n in names if not n.startswith("process_")}


def documented_metric_names() -> set[str]:
    doc = (ROOT / "docs" / "operations.md").read_text()
    section = doc.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(headroom_[a-z_]+)`", section, re.MULTILINE))


def test_every_exposed_metric_is_documented_and_nothing_else() -> None:
    exposed = exposed_metric_names()
    assert len(exposed) >= 10
    documented = {n for n in documented_metric_names() if not n.startswith("headroom_operator_")}
    assert exposed - documented == set(), "undocumented metrics"
    assert documented - exposed == set(), "documented metrics the agent does not expose"


def test_every_operator_metric_is_documented_and_nothing_else() -> None:
    from types import SimpleNamespace

    from headroom.controller.agentleases import AgentLeaseCollector
    from headroom.controller.metrics import OperatorMetrics

    metrics = OperatorMetrics()
    informer = SimpleNamespace(synced=True)
    plan = {"spec": {"pods": [{"uid": "u", "policy": {"kind": "MemoryReclaimPolicy",
                                                       "namespace": "d", "name": "p"}}]},
            "status": {"pods": [{"uid": "u", "reclaimedBytes": 4096}]}}
    metrics.watch(SimpleNamespace(informers=SimpleNamespace(
        caches={"pods": [], "plans": {"n": plan}}, informers=[informer])))
    dead = {"metadata": {"name": "headroom-agent-n", "labels": {"headroom.dev/node": "n"}},
            "spec": {"renewTime": "2020-01-01T00:00:00.000000Z", "leaseDurationSeconds": 40}}
    metrics.registry.register(AgentLeaseCollector(lambda: [dead]))
    names = set()
    for line in metrics.text().splitlines():
        if line and not line.startswith("#"):
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
            assert name
            names.add(re.sub(r"_(bucket|count|sum)$", "", name.group(0)))
    exposed = {n for n in names if n.startswith("headroom_operator_")}
    assert len(exposed) >= 5
    documented = {n for n in documented_metric_names() if n.startswith("headroom_operator_")}
    assert exposed == documented
