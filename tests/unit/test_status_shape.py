"""Policy and plan status shapes (issue 12, item 3): metav1.Condition conditions, a
bounded policy status without counters, bytes reclaimed per policy as a metric."""

from __future__ import annotations

import pathlib
import re
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from headroom.controller.metrics import OperatorMetrics
from headroom.controller.resolve import NAMESPACED_KIND, PolicyRef, PolicyReport
from headroom.controller.status import (
    MAX_NODES_LISTED,
    policy_status,
    reclaimed_by_policy,
)
from headroom.nodeagent.status import plan_conditions

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOW, LATER = "2026-12-02T01:00:00Z", "2026-12-02T01:05:00Z"
WEB = {"kind": NAMESPACED_KIND, "namespace": "default", "name": "web"}


def condition_schema(crd_file: str) -> dict[str, Any]:
    crd = yaml.safe_load((ROOT / "crds" / crd_file).read_text())
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    return status["properties"]["conditions"]["items"]


def assert_metav1(cond: dict[str, Any], schema: dict[str, Any]) -> None:
    """Every required field of metav1.Condition present and within the CRD's bounds."""
    assert set(schema["required"]) == {"type", "status", "lastTransitionTime", "reason",
                                       "message"}
    assert set(schema["required"]) <= set(cond), cond
    props = schema["properties"]
    assert re.fullmatch(props["type"]["pattern"], cond["type"])
    assert re.fullmatch(props["reason"]["pattern"], cond["reason"])
    assert cond["status"] in props["status"]["enum"]
    assert len(cond["message"]) <= props["message"]["maxLength"]
    assert cond.get("observedGeneration", 0) >= 0


def entries(nodes: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    return {node: [{"uid": f"{node}-{i}", "memoryHigh": 4096, "policy": WEB}
                   for i in range(n)] for node, n in nodes.items()}


def test_policy_status_lists_at_most_ten_nodes_most_behind_first() -> None:
    nodes = {f"n{i:03}": 1 + i % 3 for i in range(500)}
    ents = entries(nodes)
    # every pod of the first 495 nodes applied: the last 5 are behind
    outcomes = {(node, e["uid"]): {"applied": True, "memoryHigh": 4096}
                for node, es in ents.items() if node < "n495" for e in es}
    report = PolicyReport(PolicyRef(NAMESPACED_KIND, "default", "web"), generation=2,
                          matched_pods=sum(nodes.values()))
    st = policy_status(report, ents, outcomes, None, NOW)
    assert st["nodeCount"] == 500 and len(st["nodes"]) == MAX_NODES_LISTED
    listed = {n["node"] for n in st["nodes"]}
    assert {f"n{i}" for i in range(495, 500)} <= listed          # the ones behind
    assert [n["node"] for n in st["nodes"]] == sorted(listed)    # stable order
    assert "reclaimedBytes" not in st
    assert all(set(n) == {"node", "pods", "enforced"} for n in st["nodes"])
    assert st["enforcedPods"] == sum(n for k, n in nodes.items() if k < "n495")
    schema = condition_schema("memoryreclaimpolicies.yaml")
    for cond in st["conditions"]:
        assert_metav1(cond, schema)
    # bytes reclaimed moving does not change the status (nothing to write)
    more = {k: {**v, "reclaimedBytes": 1 << 30} for k, v in outcomes.items()}
    assert policy_status(report, ents, more, st, LATER) == st


def test_invalid_policy_conditions_keep_the_metav1_shape() -> None:
    report = PolicyReport(PolicyRef(NAMESPACED_KIND, "default", "web"), generation=1,
                          valid=False, reason="InvalidSpec", message="x" * 40000)
    st = policy_status(report, {}, {}, None, NOW)
    schema = condition_schema("memoryreclaimpolicies.yaml")
    for cond in st["conditions"]:
        assert_metav1(cond, schema)
    assert {c["type"]: c["reason"] for c in st["conditions"]}["Valid"] == "InvalidSpec"


def plans_with_status() -> dict[str, dict[str, Any]]:
    other = {"kind": "ClusterMemoryReclaimPolicy", "name": "all"}
    return {
        "n1": {"spec": {"pods": [{"uid": "a", "policy": WEB}, {"uid": "b", "policy": other}]},
               "status": {"pods": [{"uid": "a", "reclaimedBytes": 4096},
                                   {"uid": "b", "reclaimedBytes": 100},
                                   {"uid": "gone", "reclaimedBytes": 7}]}},
        "n2": {"spec": {"pods": [{"uid": "c", "policy": WEB}]},
               "status": {"pods": [{"uid": "c", "reclaimedBytes": 8192},
                                   {"uid": "c2", "reclaimedBytes": True}]}},
        "n3": {"spec": {"pods": [{"uid": "d", "policy": WEB}]}},   # no status yet
    }


def test_reclaimed_bytes_per_policy_is_a_metric() -> None:
    got = reclaimed_by_policy(plans_with_status().values())
    assert sorted(got.values()) == [100, 4096 + 8192]
    metrics = OperatorMetrics()
    caches = {"plans": plans_with_status()}
    metrics.watch(SimpleNamespace(informers=SimpleNamespace(caches=caches, informers=[])))
    text = metrics.text()
    name = "headroom_operator_policy_reclaimed_bytes"
    assert (name + '{kind="MemoryReclaimPolicy",namespace="default",policy="web"} 12288.0'
            ) in text
    assert (name + '{kind="ClusterMemoryReclaimPolicy",namespace="",policy="all"} 100.0'
            ) in text


def pod(applied: bool, reason: str) -> dict[str, Any]:
    return {"uid": reason, "applied": applied, "reason": reason}


@pytest.mark.parametrize(("pods", "caps", "ready", "reason", "available"), [
    ([], {"memoryReclaim": True}, "True", "NoPods", "True"),
    ([pod(True, "Applied"), pod(True, "DryRun")], {"memoryReclaim": True}, "True", "Applied",
     "True"),
    ([pod(True, "Applied"), pod(False, "CgroupNotFound"), pod(False, "InvalidSpec")],
     {"memoryReclaim": False}, "False", "PodsNotApplied", "False"),
])
def test_plan_conditions(pods: list[dict[str, Any]], caps: dict[str, bool], ready: str,
                         reason: str, available: str) -> None:
    status = {"observedGeneration": 4, "pods": pods, "capabilities": caps}
    conds = plan_conditions(status, [], NOW)
    by_type = {c["type"]: c for c in conds}
    assert (by_type["Ready"]["status"], by_type["Ready"]["reason"]) == (ready, reason)
    assert by_type["ReclaimAvailable"]["status"] == available
    schema = condition_schema("nodereclaimplans.yaml")
    for cond in conds:
        assert_metav1(cond, schema)
        assert cond["observedGeneration"] == 4
    if reason == "PodsNotApplied":
        assert "1/3 pods applied" in by_type["Ready"]["message"]
        assert "CgroupNotFound 1" in by_type["Ready"]["message"]
    # unchanged status: the transition time stays, so the status body stays byte-equal
    assert plan_conditions(status, conds, LATER) == conds
    flipped = plan_conditions({**status, "pods": []}, conds, LATER)
    assert {c["type"]: c["lastTransitionTime"] for c in flipped}["Ready"] == \
        (NOW if ready == "True" else LATER)
