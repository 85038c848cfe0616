"""Every metric and label that the chart's PrometheusRule and Grafana dashboard name is
exported by a running agent (cluster mode, a real process, against the emulator and a
fake kubepods tree) or operator (the real operator against the emulator): both are
scraped here, and the rules and the dashboard are read as `helm template` renders them."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "chart"))
from api_helpers import Cluster, node, pod, policy, wait_for
from chart_render import CHART, render
from helm_fetch import ensure_helm
from test_agent_plan_watch import HEADROOM, SYSTEMD_A, A, Env, plan_pod

# Labels Prometheus adds to every scraped series (target labels, the chart's node
# relabeling); with honorLabels the agent's own namespace/pod win where it sets them.
TARGET_LABELS = {"job", "instance", "namespace", "pod", "node", "service", "endpoint",
                 "container"}
# Series Prometheus makes itself.
SYNTHETIC = {"up": set()}
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "rate", "irate", "increase", "delta", "by",
    "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
    "histogram_quantile", "time", "absent", "topk", "bottomk", "clamp_min", "clamp_max",
    "max_over_time", "min_over_time", "avg_over_time", "label_replace", "vector", "scalar",
}

Series = dict[str, set[str]]   # metric name -> label names seen on its samples


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> Series:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: Series = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def names_in(expr: str) -> tuple[dict[str, set[str]], set[str]]:
    """(metric -> labels matched in its own {...}, labels of by/on/... clauses)."""
    expr = expr.replace("$__rate_interval", "5m")
    metrics: dict[str, set[str]] = {}
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\{([^}]*)\}", expr):
        labels = set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", m.group(2)))
        if m.group(1):
            metrics.setdefault(m.group(1), set()).update(labels)
    clause_labels: set[str] = set()
    for m in re.finditer(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)",
                         expr):
        clause_labels.update(x.strip() for x in m.group(1).split(",") if x.strip())
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", bare)
    for word in re.findall(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)", bare):
        if word not in PROMQL_WORDS and not re.fullmatch(r"\d+[smhd]?", word):
            metrics.setdefault(word, set())
    return metrics, clause_labels


def test_names_in_reads_promql() -> None:
    metrics, clauses = names_in(
        'sum by (namespace, pod) (rate(a_total{result="error", kind=~"p.*"}[5m])) > 0 '
        "and on (node) b == 0")
    assert metrics == {"a_total": {"result", "kind"}, "b": set()}
    assert clauses == {"namespace", "pod", "node"}


def queries(helm: Path) -> dict[str, str]:
    """Every PromQL expression the chart ships: alert rules and dashboard panels."""
    out: dict[str, str] = {}
    docs = render(helm, {"metrics.prometheusRule.enabled": "true"})
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            out[f"alert {r['alert']}"] = r["expr"]
    dashboard = json.loads((CHART / "dashboards" / "headroom.json").read_text())
    for panel in dashboard["panels"]:
        for t in panel["targets"]:
            out[f"panel {panel['title']!r} {t['refId']}"] = t["expr"]
    return out


@pytest.fixture
def agent_series(tmp_path: Path) -> Iterator[Series]:
    env = Env(tmp_path)
    env.api_up()
    port = free_port()
    log = (tmp_path / "agent.log").open("w")
    proc = subprocess.Popen(
        [str(HEADROOM), "agent", "--node-name", "node-1", "--cgroup-root", str(env.tree.root),
         "--state-dir", str(tmp_path / "state"), "--metrics-port", str(port),
         "--metrics-address", "127.0.0.1", "--status-interval", "0.5"],
        env={**os.environ, "KUBECONFIG": str(env.kubeconfig),
             "HEADROOM_ALLOW_FAKE_CGROUP_ROOT": "1"},
        stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        env.tree.add(SYSTEMD_A, current=100 << 20)
        env.store.create(env.plans, "", {
            "apiVersion": "headroom.dev/v1alpha1", "kind": "NodeReclaimPlan",
            "metadata": {"name": "node-1"},
            "spec": {"nodeName": "node-1", "pods": [plan_pod(A, "web-0", "Burstable")]}})

        def ready() -> Series | None:
            try:
                got = scrape(port)
            except OSError:
                return None
            return got if "headroom_status_writes_total" in got and any(
                "pod" in labels for name, labels in got.items()
                if name == "headroom_memory_high_bytes") else None
        yield wait_for(ready, what="the agent's per-pod series and a status write")
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        env.api_down()


@pytest.fixture
def operator_series(cluster: Cluster) -> Iterator[Series]:
    from headroom.controller.handlers import OperatorOptions
    from headroom.controller.main import operate

    stop, ready = threading.Event(), threading.Event()
    servers: list[Any] = []
    options = OperatorOptions(kubeconfig=str(cluster.kubeconfig), debounce=0.1, max_delay=1.0)
    # an agent whose Lease expired long ago, so that the liveness series are exported
    cluster.create({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": "headroom-agent-node-9", "namespace": "default",
                                 "labels": {"app.kubernetes.io/name": "headroom",
                                            "app.kubernetes.io/component": "agent",
                                            "headroom.dev/node": "node-9"}},
                    "spec": {"holderIdentity": "agent-9", "leaseDurationSeconds": 40,
                             "renewTime": "2020-01-01T00:00:00.000000Z"}})
    thread = threading.Thread(target=lambda: asyncio.run(operate(
        options, stop_flag=stop, ready_flag=ready, metrics_port=-1,
        http_address="127.0.0.1", servers=servers, agent_namespace="default")), daemon=True)
    thread.start()
    try:
        assert ready.wait(30)
        port = next(s for s in servers if s is not None).server_port
        cluster.apply([node("node-1"), pod("web-0", "node-1", {"app": "web"})])
        cluster.apply(policy("web", {"app": "web"}, {"limitPercent": 50}))
        yield wait_for(lambda: (got := scrape(port)).get(
            "headroom_operator_round_duration_seconds_bucket") and got, what="a round")
    finally:
        stop.set()
        thread.join(30)


def test_every_rule_and_panel_names_exported_metrics_and_labels(
    agent_series: Series, operator_series: Series,
) -> None:
    helm = ensure_helm()
    exported: Series = {**SYNTHETIC}
    for series in (agent_series, operator_series):
        for name, labels in series.items():
            exported.setdefault(name, set()).update(labels)
    assert "headroom_build_info" in agent_series and "headroom_build_info" in operator_series
    assert any(n.startswith("process_") for n in agent_series)
    assert not [n for n in exported if n.endswith("_created")]
    problems = []
    all_queries = queries(helm)
    assert len(all_queries) >= 20
    for where, expr in all_queries.items():
        metrics, clause_labels = names_in(expr)
        assert metrics, f"{where}: no metric found in {expr!r}"
        for name, labels in metrics.items():
            if name not in exported:
                problems.append(f"{where}: {name} is not exported")
                continue
            for label in labels - exported[name] - TARGET_LABELS:
                problems.append(f"{where}: {name} has no label {label}")
        known = set().union(*(exported.get(n, set()) for n in metrics)) | TARGET_LABELS
        for label in clause_labels - known - {"le"}:
            problems.append(f"{where}: no metric in it has the label {label}")
        if "le" in clause_labels and not any(n.endswith("_bucket") for n in metrics):
            problems.append(f"{where}: groups by le without a histogram")
    assert not problems, "\n".join(problems)


def test_the_checker_catches_a_misnamed_metric(agent_series: Series) -> None:
    metrics, _ = names_in("sum(rate(headroom_reclaimed_bytes[5m]))")   # no _total
    assert "headroom_reclaimed_bytes" in metrics
    assert "headroom_reclaimed_bytes" not in agent_series
    assert "headroom_reclaimed_bytes_total" in agent_series


def test_rules_render_as_yaml_with_alert_labels(tmp_path: Path) -> None:
    helm = ensure_helm()
    docs = render(helm, {"metrics.prometheusRule.enabled": "true",
                         "metrics.prometheusRule.alertLabels.team": "platform",
                         "metrics.prometheusRule.livelockRelief": "true"})
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    rules = rule["spec"]["groups"][0]["rules"]
    assert {r["alert"] for r in rules} >= {
        "HeadroomAgentDown", "HeadroomReclaimFallingBehind", "HeadroomLivelockReliefActive",
        "HeadroomPlanWriteFailures", "HeadroomAgentLeaseExpired"}
    assert all(r["labels"]["team"] == "platform" for r in rules)
    assert yaml.safe_dump(rule)
